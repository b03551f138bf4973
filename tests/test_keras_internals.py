"""The Keras and TensorFlow internals `vae_zoo.training.keras_internals` relies on still
behave as relied on: each test fails, by name, when an upgrade changes one."""

import tensorflow as tf

from conftest import binary_data, tiny_dense
from vae_zoo.training import keras_internals

X = binary_data(16)


def _compiled():
    model = tiny_dense()
    model.compile(optimizer="adam", steps_per_execution=1, jit_compile=False)
    return model


def test_fit_calls_maybe_symbolic_build_which_can_be_skipped():
    model = _compiled()
    calls = []
    original = model._maybe_symbolic_build

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    object.__setattr__(model, "_maybe_symbolic_build", counting)
    model.fit(X, batch_size=4, epochs=1, verbose=0)
    assert calls
    keras_internals.skip_first_batch_build(model)
    model.fit(X, batch_size=4, epochs=1, verbose=0)  # still trains without it
    assert len(calls) == 1


def test_in_multi_worker_mode_of_single_process_strategies():
    assert keras_internals.in_multi_worker_mode(tf.distribute.get_strategy()) is False
