"""A model's constructor arguments as config data and back (`get_config`, `from_config`)."""

from __future__ import annotations

import keras

from vae_zoo.models import training_objectives
from vae_zoo.schedules import BetaSchedule


def serialize_config_value(value):
    """A config value as JSON-able data: a `BetaSchedule` serialized, an objective as
    its spec `{"name": ..., **options}`, the rest as given."""
    if isinstance(value, BetaSchedule):
        return keras.saving.serialize_keras_object(value)
    if isinstance(value, training_objectives.Objective):
        return value.get_config()
    return value


def deserialize_config_value(obj):
    """A config value back: serialized Keras objects (a `BetaSchedule`) rebuilt."""
    if isinstance(obj, dict) and "class_name" in obj:
        return keras.saving.deserialize_keras_object(obj)
    return obj
