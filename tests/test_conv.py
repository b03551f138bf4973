"""The convolutional family: shapes, architecture, presets, training, saving, errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import family_case
from conftest import binary_data
from vae_zoo import data, recipes
from vae_zoo.models import MODELS, ConvVAE
from vae_zoo.models.conv import PRESETS


def tiny_conv(input_shape=(8, 8, 1), latent_dim=2, **kwargs):
    kwargs = {"filters": (2, 4), "kernel_sizes": (3, 3), "strides": (2, 2),
              "dense_units": (8,), "seed": 0, **kwargs}
    return ConvVAE(input_shape=input_shape, latent_dim=latent_dim, **kwargs)


def digits(n=4, size=8):
    """n embedded MNIST digits resized to size×size and binarized: `[n, size, size, 1]`."""
    x = data.load_embedded_mnist()["x_train"][:n, ..., None]
    x = tf.image.resize(x, (size, size), antialias=True).numpy() / 255.0
    return (np.random.default_rng(0).random(x.shape) < x).astype("float32")


def conv_layers(body):
    """(filters, kernel size, stride) of each (transposed) convolution of a body."""
    return [
        (layer.filters, layer.kernel_size[0], layer.strides[0])
        for layer in body.layers
        if isinstance(layer, keras.layers.Conv2D | keras.layers.Conv2DTranspose)
    ]


def dense_units(body):
    return [layer.units for layer in body.layers if isinstance(layer, keras.layers.Dense)]


@pytest.mark.parametrize("input_shape, likelihood", [((8, 8, 1), "bernoulli"),
                                                     ((8, 8, 3), "gaussian_learned_scale")])
def test_api_shapes(input_shape, likelihood):
    model = tiny_conv(input_shape, latent_dim=3, likelihood=likelihood)
    x = binary_data(5, input_shape)
    q = model.encode(x)
    assert q.batch_shape == [5] and q.event_shape == [3]
    p = model.decode(q.sample(seed=(0, 0)))
    assert p.batch_shape == [5] and p.event_shape == list(input_shape)
    assert all(v.shape == (5,) for v in model.elbo(x, seed=0).values())
    assert model.sample(7, seed=1).shape == (7,) + input_shape
    assert model.reconstruct(x).shape == (5,) + input_shape


def test_decoder_mirrors_encoder():
    model = tiny_conv(input_shape=(16, 8, 1), filters=(2, 4, 6), kernel_sizes=(5, 3, 1),
                      strides=(2, 2, 1), dense_units=(12, 8))
    assert conv_layers(model.encoder) == [(2, 5, 2), (4, 3, 2), (6, 1, 1)]
    assert dense_units(model.encoder) == [12, 8, 2 * 2]  # then μ, s of z
    assert dense_units(model.decoder) == [8, 12, 4 * 2 * 6]  # then the [4, 2, 6] map
    assert conv_layers(model.decoder) == [(4, 1, 1), (2, 3, 2), (1, 5, 2)]
    assert model.decode(np.zeros((1, 2), "float32")).event_shape == [16, 8, 1]


def test_celeba64_preset_is_the_course_architecture():
    """5×5 conv 32 /2 → 3×3 conv 64 /2 → 3×3 conv 128 /2 → dense 1024 → 256-d z; back."""
    model = ConvVAE.preset("celeba64")
    assert model.data_shape == (64, 64, 3) and model.latent_shape == (256,)
    assert conv_layers(model.encoder) == [(32, 5, 2), (64, 3, 2), (128, 3, 2)]
    assert dense_units(model.encoder) == [1024, 2 * 256]
    assert dense_units(model.decoder) == [1024, 8 * 8 * 128]
    assert conv_layers(model.decoder) == [(64, 3, 2), (32, 3, 2), (3, 5, 2)]
    assert model.decode(np.zeros((1, 256), "float32")).event_shape == [64, 64, 3]


def test_presets_and_their_recipes_agree():
    mnist = ConvVAE.preset("mnist", beta=0.5)
    assert mnist.data_shape == (28, 28, 1) and mnist.initial_beta == 0.5
    for preset, recipe_name in [("mnist", "mnist_conv"), ("celeba64", "celeba64_conv")]:
        recipe = recipes.load(recipe_name)
        model_args = {key: tuple(v) if isinstance(v, list) else v
                      for key, v in recipe["model"].items() if key != "family"}
        expected = {key: v for key, v in PRESETS[preset].items() if key != "input_shape"}
        assert recipe["model"]["family"] == "conv"
        assert model_args == expected
        assert recipes.input_shape(recipe) == PRESETS[preset]["input_shape"]
    with pytest.raises(ValueError, match="unknown ConvVAE preset"):
        ConvVAE.preset("imagenet")


def test_keras_round_trip(tmp_path):
    """A Gaussian conv model with β ≠ 1 through the shared round trips."""
    model = tiny_conv(likelihood={"name": "gaussian", "scale": 0.5}, beta=0.5)
    family_case.check_round_trips(model, family_case.example_inputs(model), tmp_path)
    assert MODELS.get("conv") is ConvVAE


@pytest.mark.slow
def test_overfit_one_batch_raises_elbo():
    model = tiny_conv()
    x = digits()
    before = float(np.mean(model.elbo(x, seed=0)["elbo"]))
    model.compile(optimizer=keras.optimizers.Adam(2e-2))
    model.fit(tf.data.Dataset.from_tensors(x).repeat(40), verbose=0)  # 40 steps, one trace
    after = float(np.mean(model.elbo(x, seed=0)["elbo"]))
    assert after > before + 10.0, (before, after)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"input_shape": (10, 10, 1)}, "10x10 is not divisible by the total stride 4"),
        ({"input_shape": (8, 8)}, "height, width, channels"),
        ({"kernel_sizes": (3,)}, "equally long"),
        ({"latent_dim": 0}, "latent_dim"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_conv(**kwargs)
