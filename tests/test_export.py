"""SavedModel export for TF Serving: every family, numbers in a fresh process, saved_model_cli,
bad requests, versions and atomicity, the CLI, the shipped model and the load test."""

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from conftest import xla_compiled
from vae_zoo import cli, evaluate, export
from vae_zoo.models import MODELS, ConditionalVAE, ConvVAE, DenseVAE, DiscreteVAE, FullyConvVAE

# Subprocesses, several devices or whole runs: out of the quick `-m "not slow"` loop.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "saved_models" / "mnist_dense"
BATCH = 4
K = 7  # importance samples: several chunks with the small chunk budget below
ALL_SIGNATURES = {"encode", "decode", "reconstruct", "sample", "log_likelihood", "serving_default"}


def tiny_models():
    """One small model per registered family, with a variety of heads and priors."""
    models = {
        "dense": DenseVAE((4, 4, 1), 2, hidden_units=(8,), posterior="full_covariance_gaussian", seed=0),
        "conv": ConvVAE((8, 8, 1), 3, filters=(4,), kernel_sizes=(3,), strides=(2,),
                        dense_units=(8,), likelihood="gaussian_learned_scale", seed=0),
        "fully_conv": FullyConvVAE((8, 8, 1), 2, filters=(4,), kernel_sizes=(3,), strides=(2,),
                                   prior="spatial_autoregressive", seed=0),
        "conditional": ConditionalVAE((4, 4, 1), 2, num_classes=3, hidden_units=(8,),
                                      prior={"name": "conditional_gaussian", "hidden_units": [4]},
                                      seed=0),
        "discrete": DiscreteVAE((6,), num_latents=2, num_categories=3, hidden_units=(8,), seed=0),
    }
    # Every other registered family, from its example arguments.
    return {**models, **{name: MODELS.get(name)(**MODELS.get(name).example_arguments, seed=0)
                         for name in MODELS.names() if name not in models}}


def inputs_for(model, rng):
    """Request inputs of every signature, as numpy arrays keyed `signature/input`."""
    x = (rng.random((BATCH, *model.data_shape)) < 0.5).astype(np.float32)
    y = rng.integers(0, 3, BATCH).astype(np.int32) if model.conditional else None
    z = np.asarray(model.encode(x, y).sample(seed=[1, 2]), np.float32)  # one-hot for discrete
    feeds = {"encode": {"x": x}, "decode": {"z": z}, "reconstruct": {"x": x},
             "serving_default": {"x": x},
             "sample": {"num_samples": np.int32(3), "seed": np.int32(5)},
             "log_likelihood": {"x": x, "num_samples": np.int32(K), "seed": np.int32(9)}}
    if y is not None:
        for name, feed in feeds.items():
            feed["label"] = np.int32(2) if name == "sample" else y
    return feeds


def in_memory(model, feeds):
    """What the exported signatures must return, from the Keras model itself."""
    y = feeds["encode"].get("label")
    x = feeds["encode"]["x"]
    q = model.encode(x, y)
    p = model.decode(feeds["decode"]["z"], y)
    inner = p.distribution
    params = {"logits": inner.logits} if hasattr(inner, "logits") else {
        "loc": inner.loc, "scale": np.broadcast_to(inner.scale, inner.loc.shape)}
    if model.conditional:
        samples = model.sample(3, y=2, seed=5)
    else:
        samples = model.sample(3, seed=5)
    reconstruction = model.reconstruct(x, y)
    return {
        "encode": {"mean": q.mean(), "stddev": q.stddev()},
        "decode": {"mean": p.mean(), **params},
        "reconstruct": {"reconstruction": reconstruction},
        "serving_default": {"reconstruction": reconstruction},
        "sample": {"samples": samples},
        "log_likelihood": {"log_likelihood": evaluate.log_likelihood(model, x, K, seed=9, y=y)},
    }


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """`{family: (model, version folder, feeds, expected outputs)}`."""
    root = tmp_path_factory.mktemp("exports")
    rng = np.random.default_rng(0)
    result = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(evaluate, "DEFAULT_MAX_ELEMENTS", 100)  # several chunks of samples
        for family, model in tiny_models().items():
            folder = export.export_for_serving(model, root / family)
            feeds = inputs_for(model, rng)
            result[family] = (model, folder, feeds, in_memory(model, feeds))
    return result


FRESH_PROCESS = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf

    feeds = np.load(sys.argv[1])
    folders = json.loads(sys.argv[2])
    out, specs, loaded_models = {}, {}, {}
    for family, folder in folders.items():
        loaded = loaded_models[family] = tf.saved_model.load(folder)
        specs[family] = {}
        for name, fn in loaded.signatures.items():
            inputs = {k.split("/")[2]: tf.constant(feeds[k]) for k in feeds.files
                      if k.startswith(f"{family}/{name}/")}
            for key, value in fn(**inputs).items():
                out[f"{family}/{name}/{key}"] = value.numpy()
            specs[family][name] = {
                "inputs": {k: [s.shape.as_list(), s.dtype.name]
                           for k, s in fn.structured_input_signature[1].items()},
                "outputs": {k: [s.shape.as_list(), s.dtype.name]
                            for k, s in fn.structured_outputs.items()},
            }
    np.savez(sys.argv[3], **out)
    print(json.dumps(specs))
""")


# Then, in the same process: requests every signature must refuse, one line each.
BAD_REQUESTS = textwrap.dedent("""
    def answer(fn, **inputs):
        try:
            fn(**{k: tf.constant(v) for k, v in inputs.items()})
        except tf.errors.InvalidArgumentError as error:
            lines = [line for line in str(error).splitlines() if "assertion failed: [" in line]
            return lines[0].split("assertion failed: [", 1)[1][:-1] if lines else str(error)
        return "ok"

    out = {}
    for family, folder in folders.items():
        info = json.load(open(folder + "/assets.extra/vae_zoo.json"))
        s = loaded_models[family].signatures
        x = np.zeros([4, *info["input_shape"]], np.float32)
        z = np.full([4, *info["latent_shape"]], np.inf, np.float32)
        nan = x.copy()
        nan.flat[5] = np.nan
        y = {"label": np.array([0, 1, 2, 0], np.int32)} if info["conditional"] else {}
        k = {"num_samples": np.int32(3), "seed": np.int32(0)}
        out[family] = {
            "reconstruct": answer(s["reconstruct"], x=nan, **y),
            "encode": answer(s["encode"], x=nan, **y),
            "decode": answer(s["decode"], z=z, **y),
            "log_likelihood": answer(s["log_likelihood"], x=nan, **k, **y),
            "grey": answer(s["log_likelihood"], x=x + 0.5, **k, **y),
            "good": answer(s["log_likelihood"], x=x, **k, **y),
        }
        if info["conditional"]:
            out[family].update(
                label=answer(s["encode"], x=x, label=np.array([0, 1, 2, 3], np.int32)),
                negative=answer(s["reconstruct"], x=x, label=np.array([0, -1, 2, 0], np.int32)),
                rows=answer(s["encode"], x=x, label=np.array([0, 1], np.int32)),
                sample=answer(s["sample"], num_samples=np.int32(2), seed=np.int32(0),
                              label=np.int32(3)),
            )
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def fresh(exported, tmp_path_factory):
    """Every signature of every export, called in a new Python process: its outputs,
    the signatures' specs, and its answers to the bad requests of `BAD_REQUESTS` (one
    process for all: each start of TensorFlow costs several seconds)."""
    work = tmp_path_factory.mktemp("fresh")
    feeds = {f"{family}/{name}/{key}": value for family, (_, _, f, _) in exported.items()
             for name, inputs in f.items() for key, value in inputs.items()}
    np.savez(work / "feeds.npz", **feeds)
    folders = {family: str(folder) for family, (_, folder, _, _) in exported.items()}
    script = work / "load.py"
    script.write_text(FRESH_PROCESS + BAD_REQUESTS)
    done = subprocess.run(
        [sys.executable, str(script), str(work / "feeds.npz"), json.dumps(folders), str(work / "out.npz")],
        capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    with np.load(work / "out.npz") as out:
        return {key: out[key] for key in out.files}, json.loads(lines[-2]), json.loads(lines[-1])


@pytest.mark.parametrize("family", MODELS.names())
def test_fresh_process_matches_in_memory_model(family, exported, fresh):
    _, _, _, expected = exported[family]
    outputs, _, _ = fresh
    assert {key.split("/")[1] for key in outputs if key.startswith(f"{family}/")} == ALL_SIGNATURES
    for name, values in expected.items():
        got = {key.split("/")[2] for key in outputs if key.startswith(f"{family}/{name}/")}
        assert got == set(values), (name, got)
        for key, value in values.items():
            np.testing.assert_allclose(
                outputs[f"{family}/{name}/{key}"], np.asarray(value), rtol=1e-5, atol=1e-5,
                err_msg=f"{family} {name} {key}",
            )


def test_signatures_have_fixed_specs_and_a_batch_dimension(exported, fresh):
    _, specs, _ = fresh
    for family, (model, _, _, _) in exported.items():
        signatures = specs[family]
        assert set(signatures) == ALL_SIGNATURES
        assert signatures["serving_default"] == signatures["reconstruct"]
        for name, spec in signatures.items():
            for key, (shape, dtype) in spec["inputs"].items():
                if key in ("num_samples", "seed") or (name == "sample" and key == "label"):
                    assert (shape, dtype) == ([], "int32"), (family, name, key)
                else:  # data: a leading batch dimension of None, the rest fixed
                    assert shape[0] is None and None not in shape[1:], (family, name, key)
            for key, (shape, dtype) in spec["outputs"].items():
                assert shape[0] is None and dtype == "float32", (family, name, key)
        data = [None, *model.data_shape]
        assert signatures["encode"]["inputs"]["x"] == [data, "float32"]
        assert signatures["decode"]["inputs"]["z"] == [[None, *model.latent_shape], "float32"]
        assert signatures["encode"]["outputs"]["mean"][0] == [None, *model.latent_shape]
        assert signatures["reconstruct"]["outputs"]["reconstruction"] == [data, "float32"]
        label = {"label": [[None], "int32"]} if model.conditional else {}
        assert signatures["encode"]["inputs"] == {"x": [data, "float32"], **label}
        assert set(signatures["log_likelihood"]["inputs"]) == {"x", "num_samples", "seed", *label}
        assert set(signatures["sample"]["inputs"]) == {"num_samples", "seed", *label}
    assert set(specs["conv"]["decode"]["outputs"]) == {"mean", "loc", "scale"}
    assert set(specs["dense"]["decode"]["outputs"]) == {"mean", "logits"}


def test_bad_requests_fail_in_the_exported_graph(exported, fresh):
    """In a fresh process (only what the SavedModel holds), every signature refuses
    non-finite x or z, `log_likelihood` data outside the likelihood's support, and
    labels that are not class numbers, one per example: an `InvalidArgumentError`
    naming the problem in one line."""
    _, _, answers = fresh
    for family, got in answers.items():
        assert got["reconstruct"] == got["encode"] == got["log_likelihood"] == \
            "x must be finite, got] [nan", family
        assert got["decode"] == "z must be finite, got] [inf", family
        assert got["good"] == "ok", family
        model = exported[family][0]
        if model.likelihood.support is not None:
            assert got["grey"].startswith("x lies outside the support of the likelihood: "
                                          f"{model.likelihood.support}, got] ["), family
    assert answers["dense"]["grey"] == (
        "x lies outside the support of the likelihood: a Bernoulli likelihood needs binary "
        "data (0 or 1), got] [64] [values like] [0.5")
    assert answers["conv"]["grey"] == "ok"  # a Gaussian takes any finite value
    conditional = answers["conditional"]
    assert conditional["label"] == conditional["sample"] == "labels must lie in [0, 3), got label] [3"
    assert conditional["negative"] == "labels must lie in [0, 3), got label] [-1"
    assert conditional["rows"] == "2] [labels for] [4] [examples"


def test_saved_model_cli_lists_every_signature(exported):
    runs = {
        family: subprocess.Popen(
            [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "show",
             "--dir", str(folder), "--all"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        # one start of TensorFlow: the conditional model's export has every kind of input
        # (the specs of every family's signatures are checked in a fresh process above)
        for family, (_, folder, _, _) in exported.items() if family == "conditional"
    }
    for family, process in runs.items():
        text, _ = process.communicate(timeout=120)
        assert process.returncode == 0
        for name in ALL_SIGNATURES:
            assert f"signature_def['{name}']" in text, (family, name)
        assert "inputs['num_samples'] tensor_info" in text and "outputs['log_likelihood']" in text
        assert "shape: (-1, 4, 4, 1)" in text  # x with a batch dimension of None
        assert ("inputs['label'] tensor_info" in text) == (family == "conditional")
        assert "Method name is: tensorflow/serving/predict" in text


def test_exports_hold_no_xla_compiled_function(exported):
    """TF Serving runs a SavedModel's XLA-compiled functions only when started with
    `--xla_cpu_compilation_enabled`: the signatures are plain TensorFlow ops, though
    `evaluate.log_likelihood` fuses the Bernoulli likelihood with XLA
    (`heads.fused_likelihoods`)."""
    from tensorflow.core.protobuf import saved_model_pb2

    for family, (model, folder, _, _) in exported.items():
        saved = saved_model_pb2.SavedModel.FromString((folder / "saved_model.pb").read_bytes())
        compiled = xla_compiled(saved.meta_graphs[0].graph_def)
        assert not compiled, (family, compiled[:3])


def test_metadata_records_the_model(exported):
    model, folder, _, _ = exported["conditional"]
    info = export.metadata(folder)
    assert info["family"] == "conditional" and info["condition"] == {"name": "label", "size": 3}
    assert info["input_shape"] == [4, 4, 1] and info["latent_shape"] == [2]
    assert info["config"] == json.loads(json.dumps(model.get_config()))
    assert set(info["signatures"]) == ALL_SIGNATURES
    assert info["signatures"]["sample"]["inputs"]["label"] == {"dtype": "int32", "shape": []}


def test_bad_requests_are_clear_errors(exported):
    _, folder, feeds, _ = exported["conditional"]
    signatures = tf.saved_model.load(str(folder)).signatures
    x, y = feeds["encode"]["x"], feeds["encode"]["label"]
    # A tensor of the wrong shape reaches the graph (as in TF Serving): the graph checks it.
    expected = r"Shape of tensor x \[4,5\] is not compatible with expected shape \[\?,4,4,1\]"
    with pytest.raises(tf.errors.InvalidArgumentError, match=expected):
        signatures["encode"](x=tf.zeros((4, 5)), label=tf.constant(y))
    # From numpy, Python's signature binding refuses it first.
    with pytest.raises(TypeError, match=r"Can not cast TensorSpec\(shape=\(4, 5\).*shape=\(None, 4, 4, 1\)"):
        signatures["encode"](x=np.zeros((4, 5), np.float32), label=y)
    with pytest.raises(tf.errors.InvalidArgumentError, match="float tensor but is a double"):
        signatures["encode"](x=tf.constant(x, tf.float64), label=tf.constant(y))
    with pytest.raises(TypeError, match="missing a required argument: 'label'"):
        signatures["reconstruct"](x=tf.constant(x))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"labels must lie in \[0, 3\)"):
        signatures["encode"](x=tf.constant(x), label=tf.constant([0, 1, 2, 3]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[2\] \[labels for\] \[4\] \[examples\]"):
        signatures["encode"](x=tf.constant(x), label=tf.constant([0, 1]))
    for n in (0, export.DEFAULT_MAX_SAMPLES + 1):
        with pytest.raises(tf.errors.InvalidArgumentError, match="num_samples must be between 1 and"):
            signatures["sample"](num_samples=tf.constant(n), seed=tf.constant(0), label=tf.constant(1))
    # The model still answers after the bad requests.
    assert signatures["encode"](x=tf.constant(x), label=tf.constant(y))["mean"].shape == (4, 2)


def test_model_conditioned_on_vectors(tmp_path):
    model = ConditionalVAE((6,), 2, condition_dim=3, hidden_units=(8,), seed=0)
    signatures = tf.saved_model.load(str(export.export_for_serving(model, tmp_path / "v"))).signatures
    assert signatures["encode"].structured_input_signature[1]["condition"].shape.as_list() == [None, 3]
    rng = np.random.default_rng(1)
    x = (rng.random((2, 6)) < 0.5).astype(np.float32)
    c = rng.random((2, 3)).astype(np.float32)
    out = signatures["encode"](x=tf.constant(x), condition=tf.constant(c))
    np.testing.assert_allclose(out["mean"], model.encode(x, c).mean(), atol=1e-6)
    samples = signatures["sample"](
        num_samples=tf.constant(2), seed=tf.constant(4), condition=tf.constant(c[0])
    )
    np.testing.assert_allclose(samples["samples"], model.sample(2, y=c[0], seed=4), atol=1e-6)


def test_likelihood_parameters_of_every_head():
    from vae_zoo import heads

    expected = {"bernoulli": {"logits": ()}, "gaussian": {"loc": (), "scale": ()},
                "gaussian_learned_scale": {"loc": (), "scale": ()},
                "gaussian_per_pixel": {"loc": (), "scale": ()},
                "categorical_256": {"logits": (256,)},
                "discretized_logistic_mixture": {"logits": (5,), "loc": (5,), "scale": (5,)}}
    assert set(expected) == set(heads.LIKELIHOODS.names())
    for name, shapes in expected.items():
        head = heads.LIKELIHOODS.build(name)
        p = head(tf.random.stateless_normal((3, *head.params_shape((2, 2, 1))), [0, 0]))
        params = export.likelihood_parameters(p, head.parameter_names)
        assert tuple(params) == head.parameter_names == tuple(expected[name])
        assert tuple(export.likelihood_parameters(p)) == head.parameter_names  # all of them
        assert {k: tuple(v.shape) for k, v in params.items()} == {
            k: (3, 2, 2, 1, *tail) for k, tail in shapes.items()}
        if name == "gaussian_learned_scale":  # one shared scale, broadcast to the batch
            np.testing.assert_allclose(params["scale"], np.full((3, 2, 2, 1), float(head.scale)))


def file_hashes(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


@pytest.fixture
def small():
    return DenseVAE((3,), 1, hidden_units=(4,), seed=0)


def test_versions_are_numbered_and_never_replaced(small, tmp_path, monkeypatch):
    base = tmp_path / "m"
    (base / "notes").mkdir(parents=True)  # not an integer: not a version
    assert export.export_for_serving(small, base) == base / "1"
    assert export.export_for_serving(small, base) == base / "2"
    before = file_hashes(base / "2")
    with pytest.raises(FileExistsError, match="already exists; versions are never replaced"):
        export.export_for_serving(small, base, version=2)
    assert file_hashes(base / "2") == before
    assert export.export_for_serving(small, base, version=7) == base / "7"
    assert export.next_version(base) == 8 and export.versions(base) == [1, 2, 7]
    assert export.find_export(base) == base / "7" and export.find_export(base / "2") == base / "2"
    for bad in (0, -1, "3", 1.5, True):
        with pytest.raises(ValueError, match="version must be a positive integer"):
            export.export_for_serving(small, base, version=bad)
    assert sorted(p.name for p in base.iterdir()) == ["1", "2", "7", "notes"]
    # Another export took the next number meanwhile: this one takes the one after.
    monkeypatch.setattr(export, "next_version", lambda base_dir: 2)
    assert export.export_for_serving(small, base) == base / "3"
    assert file_hashes(base / "2") == before


@pytest.mark.parametrize("crash_in", ["saved_model.save", "metadata"])
def test_crash_mid_export_leaves_no_version(crash_in, small, tmp_path, monkeypatch):
    base = tmp_path / "m"
    export.export_for_serving(small, base)
    before = file_hashes(base)

    def crash(*args, **kwargs):
        if crash_in == "saved_model.save":
            save(*args, **kwargs)  # a whole SavedModel written, then the crash
        raise RuntimeError("simulated crash")

    save = tf.saved_model.save
    if crash_in == "saved_model.save":
        monkeypatch.setattr(tf.saved_model, "save", crash)
    else:
        monkeypatch.setattr(export, "fsync_tree", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        export.export_for_serving(small, base)
    assert [p.name for p in base.iterdir()] == ["1"]  # no version 2, no staging left
    assert file_hashes(base) == before


HARD_CRASH = textwrap.dedent("""
    import os, sys
    from vae_zoo import export
    from vae_zoo.models import DenseVAE

    export.fsync_tree = lambda folder: os._exit(17)  # killed just before the rename
    export.export_for_serving(DenseVAE((3,), 1, hidden_units=(4,), seed=0), sys.argv[1])
""")


def test_killed_export_leaves_only_ignored_staging(small, tmp_path):
    base = tmp_path / "m"
    done = subprocess.run([sys.executable, "-c", HARD_CRASH, str(base)], capture_output=True,
                          timeout=120)
    assert done.returncode == 17, done.stderr.decode()[-2000:]
    leftovers = sorted(p.name for p in base.iterdir())  # the folder and its lock file
    assert len(leftovers) == 2 and leftovers[1] == leftovers[0] + ".lock"
    assert leftovers[0].startswith(export.STAGING_PREFIX)
    assert export.versions(base) == [] and export.find_export(base) is None  # TF Serving: no version
    assert export.export_for_serving(small, base) == base / "1"  # and the leftover is cleaned up
    assert [p.name for p in base.iterdir()] == ["1"]


def test_cli_export_and_sample(exported, tmp_path, capsys):
    model, _, _, _ = exported["conditional"]
    keras_file = tmp_path / "cvae.keras"
    model.save(keras_file)
    root = tmp_path / "served"
    assert cli.main(["export", str(keras_file), "--name", "cvae", "--root", str(root)]) == 0
    assert f"exported {root / 'cvae' / '1'}" in capsys.readouterr().out
    again = ["export", str(keras_file), "--name", "cvae", "--root", str(root), "--version", "1"]
    assert cli.main(again) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vae-zoo: error:") and "already exists" in err[0]
    assert cli.main(["export", str(keras_file), "--name", "../x", "--root", str(root)]) == 2
    assert "--name must be a plain folder name" in capsys.readouterr().err

    png = tmp_path / "threes.png"
    args = ["sample", str(root / "cvae"), "--label", "2", "-n", "4", "--output", str(png)]
    assert cli.main(args) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    images, columns = export.sample_grid(root / "cvae", 6, seed=0)  # one row per class
    assert images.shape == (6, 4, 4, 1) and columns == 2
    np.testing.assert_allclose(export.sample_grid(root / "cvae" / "1", 2, label=1, seed=3)[0],
                               model.sample(2, y=1, seed=3), atol=1e-5)
    assert cli.main(["sample", str(root / "cvae"), "--label", "5"]) == 2
    assert "labels must lie in [0, 3), got label 5" in capsys.readouterr().err


def test_shipped_model_serves_the_readme_example():
    folder = export.find_export(SHIPPED)
    assert folder == SHIPPED / "1"
    info = export.metadata(folder)
    assert info["family"] == "dense" and info["input_shape"] == [28, 28, 1]
    examples = ROOT / "saved_models" / "examples"
    signatures = tf.saved_model.load(str(folder)).signatures

    request = json.loads((examples / "encode_request.json").read_text())
    response = json.loads((examples / "encode_response.json").read_text())
    x = np.array([row["x"] for row in request["instances"]], np.float32)
    assert x.shape == (1, 28, 28, 1) and set(np.unique(x)) <= {0.0, 1.0}
    out = signatures[request["signature_name"]](x=tf.constant(x))
    # The JSON was computed on another CPU: float32 matmul kernels differ by instruction set.
    for key in ("mean", "stddev"):
        np.testing.assert_allclose(out[key][0], response["predictions"][0][key], rtol=1e-5, atol=1e-5)

    request = json.loads((examples / "log_likelihood_request.json").read_text())
    response = json.loads((examples / "log_likelihood_response.json").read_text())
    inputs = {k: tf.constant(v, tf.float32 if k == "x" else tf.int32) for k, v in request["inputs"].items()}
    out = signatures["log_likelihood"](**inputs)["log_likelihood"]
    np.testing.assert_allclose(out, response["outputs"], rtol=1e-5)


def test_shipped_model_samples_with_no_training(tmp_path):
    png = tmp_path / "shipped.png"
    assert cli.main(["sample", str(SHIPPED), "-n", "9", "--output", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import keras

    model = keras.models.load_model(ROOT / "saved_models" / "mnist_dense.keras")
    assert getattr(model, "optimizer", None) is None  # no optimizer state: stays small
    np.testing.assert_allclose(export.sample_grid(SHIPPED, 4, seed=1)[0], model.sample(4, seed=1),
                               atol=1e-5)
    total = sum(p.stat().st_size for p in (ROOT / "saved_models").rglob("*") if p.is_file())
    assert total < 5 * 2**20


def test_serving_load_benchmark_small(exported):
    spec = importlib.util.spec_from_file_location("serving_load", ROOT / "benchmarks" / "serving_load.py")
    serving_load = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serving_load)
    for family in ("conditional", "discrete"):
        result = serving_load.run(exported[family][1], threads=2, requests=5, batch=3, num_samples=4)
        assert result["requests"] == 10 and set(result["per_signature"]) == set(serving_load.MIX)
        assert result["errors"] == 0, result["error_examples"]
        assert result["mismatches"] == 0
        assert result["p99_ms"] >= result["p50_ms"] > 0


def test_export_removes_only_staging_no_live_process_holds(small, tmp_path):
    """Staging folders of other exports: one being written (its lock held, as by a
    process on another host of a shared filesystem) is kept; one whose writer died is
    removed, whatever PID its name shows (here a live, unrelated one)."""
    from vae_zoo.training.checkpointing import FileLock

    base = tmp_path / "m"
    live = base / f"{export.STAGING_PREFIX}1-live"
    dead = base / f"{export.STAGING_PREFIX}{os.getppid()}-dead"
    for folder in (live, dead):
        folder.mkdir(parents=True)
        (folder / "saved_model.pb").write_bytes(b"partial")
        folder.with_name(folder.name + ".lock").write_text("process 1 on otherhost")
    held = FileLock(live.with_name(live.name + ".lock"), "export").acquire()
    try:
        assert export.export_for_serving(small, base) == base / "1"
        assert live.is_dir() and not dead.exists()
    finally:
        held.release()
    assert sorted(p.name for p in base.iterdir()) == sorted(["1", live.name])
