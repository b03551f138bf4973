"""Encoder and decoder bodies: plain Keras layers, no distributions.

A body maps an input to a parameter tensor of a given shape (`params_shape`, asked of
the head that will read it). Bodies end with that projection so a head only reshapes
and constrains.
"""

from __future__ import annotations

import math

import keras


def mlp_encoder(hidden_units, params_shape, activation="relu", name="encoder"):
    """MLP body `[B, *input_shape] -> [B, *params_shape]` (input flattened first)."""
    layers = [keras.layers.Flatten()]
    layers += [keras.layers.Dense(int(u), activation=activation) for u in hidden_units]
    layers += [
        keras.layers.Dense(math.prod(params_shape)),
        keras.layers.Reshape(tuple(params_shape)),
    ]
    return keras.Sequential(layers, name=name)


def mlp_decoder(hidden_units, params_shape, activation="relu", name="decoder"):
    """MLP body `[B, latent_dim] -> [B, *params_shape]`; list `hidden_units` input-side first."""
    layers = [keras.layers.Dense(int(u), activation=activation) for u in hidden_units]
    layers += [
        keras.layers.Dense(math.prod(params_shape)),
        keras.layers.Reshape(tuple(params_shape)),
    ]
    return keras.Sequential(layers, name=name)
