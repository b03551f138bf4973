"""In-memory arrays to `fit`: the fixed pipeline of `vae_zoo.training.arrays`."""

import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import binary_data, tiny_dense
from vae_zoo.training import arrays


def _batches(dataset):
    return [tf.nest.map_structure(np.asarray, batch) for batch in dataset]


def test_batches_are_keras_batches_without_shuffling():
    x = np.arange(10 * 3, dtype="float64").reshape(10, 3)
    y = np.arange(10)
    batches = _batches(arrays.array_dataset((x, y), 4, shuffle=False))
    assert [len(b[0]) for b in batches] == [4, 4, 2]  # the remainder last
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), x)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y)
    assert batches[0][0].dtype == np.float32 and batches[0][1].dtype == y.dtype


def test_every_epoch_is_a_new_permutation_of_all_examples_also_under_a_global_seed():
    x = np.arange(50, dtype="float32")[:, None]

    def three_epochs():
        keras.utils.set_random_seed(3)
        dataset = arrays.array_dataset((x,), 8, shuffle=True)
        assert dataset.cardinality() == 7
        return [np.concatenate(_batches(dataset))[:, 0] for _ in range(3)]

    epochs = three_epochs()
    for order in epochs:
        np.testing.assert_array_equal(np.sort(order), x[:, 0])  # each example once
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
    np.testing.assert_array_equal(three_epochs(), epochs)  # the seed reproduces them


def _recorded_fit(model, *args, **kwargs):
    """`fit` with the pipeline's datasets it hands to Keras recorded."""
    seen = {}
    original = keras.Model.fit

    def spy(self, **given):
        seen.update(given)
        return original(self, **given)

    spy.__signature__ = inspect.signature(original)
    keras.Model.fit = spy
    try:
        model.fit(*args, **kwargs)
    finally:
        keras.Model.fit = original
    return seen


def test_fit_on_arrays_uses_the_pipeline_and_splits_validation_like_keras():
    x = binary_data(20)
    model = tiny_dense(input_shape=x.shape[1:])
    model.compile(optimizer="adam", jit_compile=False, steps_per_execution=1)
    seen = _recorded_fit(model, x, batch_size=8, epochs=1, verbose=0, validation_split=0.25)
    assert isinstance(seen["x"], tf.data.Dataset) and "batch_size" not in seen
    assert seen["x"].cardinality() == 2  # 15 training examples in batches of 8
    validation = np.concatenate(_batches(seen["validation_data"]))
    np.testing.assert_array_equal(validation, x[15:])  # the last quarter, unshuffled
    assert {"loss", "val_loss"} <= set(model.history.history)


def test_weighted_or_stepped_fits_go_to_keras_as_given():
    x = binary_data(8)
    model = tiny_dense(input_shape=x.shape[1:])
    model.compile(optimizer="adam", jit_compile=False, steps_per_execution=1)
    seen = _recorded_fit(model, x, batch_size=4, verbose=0, sample_weight=np.ones(8))
    assert seen["x"] is x and seen["batch_size"] == 4


def test_datasets_lose_autotuning_on_cpu_unless_their_options_set_it(monkeypatch):
    """tf.data's autotuner competes with a CPU step for the cores: `fit` turns it off on
    a training or validation dataset that leaves it unset, keeps an explicit choice, and
    leaves every dataset alone when a GPU is visible."""
    x = binary_data(8)
    model = tiny_dense(input_shape=x.shape[1:])
    model.compile(optimizer="adam", jit_compile=False, steps_per_execution=1)
    unset = tf.data.Dataset.from_tensor_slices(x).batch(4).prefetch(tf.data.AUTOTUNE)
    explicit = tf.data.Options()
    explicit.autotune.enabled = True
    kept = unset.with_options(explicit)
    seen = _recorded_fit(model, unset, validation_data=unset, epochs=1, verbose=0)
    assert seen["x"].options().autotune.enabled is False
    assert seen["validation_data"].options().autotune.enabled is False
    np.testing.assert_array_equal(np.concatenate(_batches(seen["x"])), x)
    seen = _recorded_fit(model, kept, validation_data=kept, epochs=1, verbose=0)
    assert seen["x"].options().autotune.enabled is True
    assert seen["validation_data"].options().autotune.enabled is True
    monkeypatch.setattr(arrays, "_runs_on_cpu", lambda: False)
    assert arrays.without_autotuning_on_cpu(unset) is unset


def test_validation_split_leaving_nothing_is_one_line_error():
    model = tiny_dense()
    model.compile(optimizer="adam", jit_compile=False, steps_per_execution=1)
    with pytest.raises(ValueError, match=r"^validation_split=0.99 leaves no training or no "
                                         r"validation examples out of 16$"):
        model.fit(binary_data(16), validation_split=0.99, verbose=0)


@pytest.mark.xla
def test_the_compiled_step_is_traced_in_the_first_epochs_only():
    """Numpy input with a partial last batch and more steps per call than steps per
    epoch (the case of the second-epoch stall): the training step is traced in the
    first epoch and never again."""
    traces = []

    class Counting(type(tiny_dense())):
        def train_step(self, data):
            traces.append(1)  # Python runs this only while tracing
            return super().train_step(data)

    x = binary_data(70)
    model = Counting(input_shape=x.shape[1:], latent_dim=2, hidden_units=(8,), seed=0)
    model.compile(optimizer="adam")  # defaults: XLA, 32 steps per call
    per_epoch = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            per_epoch.append(len(traces))

    model.fit(x, batch_size=16, epochs=4, verbose=0, callbacks=[Record()])  # 5 steps, last 6
    assert per_epoch[0] >= 1 and per_epoch[1:] == [per_epoch[0]] * 3


def test_arrays_of_different_lengths_are_one_line_error():
    model = tiny_dense()
    model.compile(optimizer="adam", jit_compile=False, steps_per_execution=1)
    with pytest.raises(ValueError, match=r"^x and y must have the same number of examples, "
                                         r"got 16 and 5$"):
        model.fit(binary_data(16), np.zeros(5), verbose=0)
