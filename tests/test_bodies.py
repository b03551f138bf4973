"""Encoder and decoder bodies as registered parts: specs with configs, validated once,
building layers of the shapes the heads ask for."""

import numpy as np
import pytest

from vae_zoo import bodies
from vae_zoo.bodies import BODIES

SPECS = [
    {"name": "dense", "hidden_units": (8, 4)},
    {"name": "conv", "filters": (4, 6), "kernel_sizes": (3, 3), "strides": (2, 2),
     "dense_units": (5,)},
    {"name": "fully_conv", "filters": (4, 6), "kernel_sizes": (3, 3), "strides": (2, 1)},
]


def test_the_bodies_are_registered():
    assert {"dense", "conv", "fully_conv"} <= set(BODIES.names())


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec["name"])
def test_a_body_is_a_spec_whose_config_builds_it_again(spec):
    body = BODIES.build(spec)
    config = body.get_config()
    assert {key: config[key] for key in spec} == spec
    assert BODIES.build(config).get_config() == config


@pytest.mark.parametrize("spec, latent_shape, params_shape, decoded", [
    (SPECS[0], (3,), (3, 2), (8, 8, 1, 1)),
    (SPECS[1], (3,), (3, 2), (8, 8, 1, 2)),
    (SPECS[2], (4, 4, 3), (4, 4, 6), (8, 8, 1, 2)),  # a latent map: total stride 2
], ids=["dense", "conv", "fully_conv"])
def test_layers_of_the_shapes_the_heads_ask_for(spec, latent_shape, params_shape, decoded):
    body = BODIES.build(spec)
    x = np.zeros((2, 8, 8, 1), "float32")
    assert tuple(body.encoder((8, 8, 1), params_shape)(x).shape) == (2, *params_shape)
    z = np.zeros((2, *latent_shape), "float32")
    assert tuple(body.decoder((8, 8, 1), latent_shape, decoded)(z).shape) == (2, *decoded)


def test_the_dense_decoder_flattens_a_latent_that_is_not_a_vector():
    decoder = BODIES.build(SPECS[0]).decoder((8, 8, 1), (2, 3), (8, 8, 1, 1))
    assert tuple(decoder(np.zeros((5, 2, 3), "float32")).shape) == (5, 8, 8, 1, 1)


def test_the_trunk_is_the_encoder_without_its_projection():
    body = BODIES.build(SPECS[1])
    trunk, encoder = body.trunk((8, 8, 1)), body.encoder((8, 8, 1), (3, 2))
    assert [type(layer) for layer in encoder.layers[:len(trunk.layers)]] == [
        type(layer) for layer in trunk.layers]
    assert tuple(trunk(np.zeros((2, 8, 8, 1), "float32")).shape) == (2, 5)


@pytest.mark.parametrize("spec, error, message", [
    ({"name": "dense", "units": (8,)}, TypeError,
     r"^body 'dense' got an unexpected option 'units'; it takes hidden_units, activation$"),
    ({"name": "dense", "hidden_units": (8, 0)}, ValueError,
     r"^hidden_units must list sizes, each >= 1, got \(8, 0\)$"),
    ({"name": "convv"}, ValueError, r"^unknown body 'convv' \(did you mean 'conv'\?\)"),
])
def test_bad_options_are_one_line_errors(spec, error, message):
    with pytest.raises(error, match=message):
        BODIES.build(spec)


def test_a_body_says_which_input_shapes_it_cannot_take():
    with pytest.raises(ValueError, match=r"^image size 9x8 is not divisible by the total stride 4"):
        BODIES.build(SPECS[1]).check((9, 8, 1))
    with pytest.raises(ValueError, match=r"^input_shape must be \(height, width, channels\)"):
        BODIES.build(SPECS[2]).check((64,))
    BODIES.build(SPECS[0]).check((64,))  # any shape


def test_a_family_takes_its_body_options_from_its_arguments():
    body = bodies.from_arguments("conv", {"filters": [3], "kernel_sizes": (5,), "strides": (1,),
                                          "hidden_units": (7,), "latent_dim": 2})
    assert body.get_config() == {"name": "conv", "filters": (3,), "kernel_sizes": (5,),
                                 "strides": (1,), "dense_units": (256,), "activation": "relu"}
