"""Posterior statistics, failure-mode diagnosis, image grids and the latent scatter."""

import keras
import numpy as np
import pytest

from conftest import binary_data, tiny_dense
from vae_zoo import data, evaluate, plots
from vae_zoo.training.callbacks import CollapseDiagnostics, ImageGrids
from vae_zoo.models import DenseVAE


@pytest.fixture(scope="module")
def mnist():
    """1,000 statically binarized training digits and 300 test digits, [N, 28, 28, 1]."""
    d = data.load_embedded_mnist()
    rng = np.random.default_rng(0)
    binarize = lambda x: (rng.random(x.shape) < x / 255.0).astype("float32")  # noqa: E731
    return binarize(d["x_train"][:1000, ..., None]), binarize(d["x_test"][:300, ..., None])


def _train(mnist, beta, epochs=6, callbacks=()):
    x_train, _ = mnist
    keras.utils.set_random_seed(0)
    model = DenseVAE((28, 28, 1), latent_dim=8, hidden_units=(128,), beta=beta, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(2e-3))
    history = model.fit(x_train, batch_size=50, epochs=epochs, verbose=0, callbacks=list(callbacks))
    return model, history


def test_posterior_statistics_match_numpy():
    """activity = Var_x E_q[z]; KL per dimension sums to the analytic KL."""
    model = tiny_dense(latent_dim=3)
    x = binary_data(20)
    stats = evaluate.posterior_statistics(model, x, batch_size=7)
    q = model.encode(x)
    np.testing.assert_allclose(stats["mean"], q.mean(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["activity"], np.var(q.mean().numpy(), axis=0), rtol=1e-4)
    assert stats["active_units"] == int((stats["activity"] > 0.01).sum())
    kl = model.elbo(x)["kl"].numpy().mean()
    np.testing.assert_allclose(stats["kl_per_dim"].sum(), kl, rtol=1e-5)
    summary = evaluate.summarize(model, x, num_samples=4)
    assert summary["latent_dim"] == 3 and len(summary["kl_per_dim"]) == 3


@pytest.mark.slow
def test_collapse_is_named(mnist, capsys):
    """β = 20 drives KL to zero: the callback names posterior collapse (lower β)."""
    _, x_test = mnist
    diagnostics = CollapseDiagnostics(x_test)
    _, history = _train(mnist, beta=20.0, callbacks=[diagnostics])
    assert diagnostics.diagnoses[-1][1] == evaluate.POSTERIOR_COLLAPSE
    assert diagnostics.records[-1]["kl"] < 0.5
    printed = [line for line in capsys.readouterr().out.splitlines() if "diagnostics" in line]
    assert len(printed) == 1 and "posterior collapse" in printed[0] and "lower beta" in printed[0]
    assert {"active_units", "kl_heldout", "marginal_kl"} <= set(history.history)


@pytest.mark.slow
def test_uncompressed_code_is_named(mnist):
    """β = 0 (an autoencoder with noise): q(z|x) drifts far from p(z): raise β."""
    _, x_test = mnist
    model, _ = _train(mnist, beta=0.0)
    result = evaluate.diagnose(model, x_test)
    assert result["mode"] == evaluate.UNCOMPRESSED_CODE, result
    assert result["active_units"] == 8


@pytest.mark.slow
def test_healthy_model_is_not_flagged(mnist):
    _, x_test = mnist
    model, _ = _train(mnist, beta=1.0)
    result = evaluate.diagnose(model, x_test)
    assert result["mode"] is None, result


def test_image_grids_and_scatter(tmp_path):
    model = tiny_dense(input_shape=(4, 4, 1), latent_dim=3)
    model.compile(optimizer="adam")
    x = binary_data(16, (4, 4, 1))
    grids = ImageGrids(x, output_dir=tmp_path / "grids", log_dir=tmp_path / "logs",
                       num_samples=9, steps=5)
    model.fit(x, batch_size=8, epochs=2, verbose=0, callbacks=[grids])
    for epoch in (1, 2):
        for kind in ("samples", "reconstructions", "interpolations"):
            png = tmp_path / "grids" / f"epoch_{epoch:03d}_{kind}.png"
            assert png.read_bytes()[:4] == b"\x89PNG"
    assert any((tmp_path / "logs" / "images").glob("events.out.tfevents*"))
    g = grids.grids()
    assert g["samples"].shape == (9, 4, 4, 1)
    assert g["interpolations"].shape == (8 * 5, 4, 4, 1)  # 8 pairs × 5 steps
    # The interpolation rows start and end at the reconstructions of the pair.
    recon = model.reconstruct(x).numpy()
    np.testing.assert_allclose(g["interpolations"][0], recon[0], atol=1e-5)
    np.testing.assert_allclose(g["interpolations"][4], recon[1], atol=1e-5)
    stats = evaluate.posterior_statistics(model, x)
    plots.save_latent_scatter(stats["mean"], np.arange(16) % 3, tmp_path / "scatter.png")
    assert (tmp_path / "scatter.png").stat().st_size > 1000


def test_pca_projection_matches_svd():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(50, 5)) * np.array([5.0, 3.0, 1.0, 0.5, 0.1])
    xy = plots.pca_2d(points)
    assert xy.shape == (50, 2)
    assert np.var(xy[:, 0]) > np.var(xy[:, 1]) > np.var(points[:, 2])


def test_plots_leave_the_matplotlib_backend_alone(tmp_path):
    """A notebook's inline backend survives writing PNGs (no pyplot, no matplotlib.use)."""
    import matplotlib

    matplotlib.use("svg")  # any backend the caller chose; not the file-only Agg default
    try:
        rng = np.random.default_rng(0)
        plots.save_grid(rng.random((4, 5, 5, 1)), tmp_path / "grid.png")
        plots.save_grid(rng.random((4, 5, 5, 3)), tmp_path / "rgb.png")
        plots.save_latent_scatter(rng.normal(size=(20, 4)), np.arange(20) % 3, tmp_path / "s.png")
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use("Agg")
    for name in ("grid.png", "rgb.png", "s.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


C, U = evaluate.POSTERIOR_COLLAPSE, evaluate.UNCOMPRESSED_CODE


@pytest.mark.parametrize(
    "modes, announced",
    [
        # a discrete VAE's first epoch: no active units, then it recovers: nothing said
        ([C, None, None, None], []),
        ([C, C, C, C], [(3, C)]),  # said once, when it has lasted 3 epochs
        ([None, None, U], [(3, U)]),  # present when training ends
        ([C, "nan", "nan"], []),  # a NaN KL (divergence) is not called collapse
    ],
    ids=["transient", "persisting", "at_the_end", "not_finite"],
)
def test_a_failure_mode_is_named_only_when_it_persists(modes, announced, monkeypatch, capsys):
    sequence = iter(modes)

    def diagnose(model, x, y=None, **thresholds):
        mode = next(sequence)
        nan = mode == "nan"
        return {"mode": C if nan else mode, "kl": float("nan") if nan else 0.01,
                "kl_per_dim": None, "active_units": 0, "latent_dim": 2,
                "marginal_kl_per_dim": 0.0}

    monkeypatch.setattr(evaluate, "diagnose", diagnose)
    model = tiny_dense()
    model.compile(optimizer="adam", jit_compile=False)
    watch = CollapseDiagnostics(binary_data(8))
    model.fit(binary_data(8), batch_size=8, epochs=len(modes), verbose=0, callbacks=[watch])
    assert watch.announced == announced
    printed = capsys.readouterr().out
    assert printed.count("vae_zoo diagnostics") == len(announced)
    assert all(f"\nvae_zoo diagnostics, epoch {e}: {m} " in printed for e, m in announced)
