"""`.keras` files written by an earlier release load, and compute what they computed then.

`tests/data/saved_by_0.1.0/` holds one small model of every family registered in
0.1.0 (its `example_arguments`, seed 0, one training step, saved with its optimizer),
written by that release's code, and its encoder means and decoder means at fixed
inputs (`<family>.npz`). A change to how families build their parts must keep every
one of them loading, with the same numbers.
"""

from pathlib import Path

import keras
import numpy as np
import pytest

import vae_zoo.models  # noqa: F401  (registers the families with Keras)

DATA = Path(__file__).parent / "data" / "saved_by_0.1.0"
FAMILIES = sorted(path.stem for path in DATA.glob("*.keras"))

pytestmark = pytest.mark.numerics  # rerun on other CPUs' code paths (.ci/run)


def test_every_family_of_0_1_0_has_a_file():
    assert FAMILIES == ["conditional", "conv", "dense", "discrete", "factor", "fully_conv",
                        "hierarchical", "vqvae"]


@pytest.mark.parametrize("family", FAMILIES)
def test_a_file_of_0_1_0_loads_and_computes_the_same(family):
    model = keras.models.load_model(DATA / f"{family}.keras")
    record = np.load(DATA / f"{family}.npz")
    y = {"y": record["y"]} if "y" in record else {}
    assert type(model).__name__ in {"ConditionalVAE", "ConvVAE", "DenseVAE", "DiscreteVAE",
                                    "FactorVAE", "FullyConvVAE", "HierarchicalVAE", "VQVAE"}
    assert int(model.optimizer.iterations.numpy()) == int(record["iterations"])
    q = model.encode(record["x"], **y)
    z = q.mode() if family == "vqvae" else q.mean()
    np.testing.assert_allclose(z, record["encode_mean"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.decode(record["encode_mean"], **y).mean(),
                               record["decode_mean"], rtol=1e-5, atol=1e-5)
