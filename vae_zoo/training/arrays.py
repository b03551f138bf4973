"""In-memory arrays given to `fit` as a fixed `tf.data` pipeline.

Keras feeds NumPy arrays (and eager tensors) to `fit` through a pipeline it tunes at run
time (a parallel map and a prefetch buffer sized by tf.data's autotuner). With the
compiled multi-step training function, an epoch after the first then sometimes stalls
for seconds on a busy CPU: measured on 2 cores, 3,000 digits, batch 128, one run in
three had a second epoch of 4 to 18 s against 0.5 to 1 s for the others, and none of
them with the pipeline below (`benchmarks/train_throughput.py` measures both).

`fit_arguments` replaces such arrays by the same batches from a pipeline without the
autotuner: one permutation of the example indices per epoch (like Keras' `shuffle=True`),
a gather of each batch from the arrays held once in memory, and a prefetch of two
batches. Everything else `fit` takes is passed on unchanged; inputs this does not cover
(sample or class weights, `steps_per_epoch`, `shuffle="batch"`, datasets, generators)
go to Keras as given. A dataset's `shuffle` is set to False, which Keras ignores
anyway, so that it does not warn about it.

A `tf.data.Dataset` given to `fit` (training or validation) whose options leave
autotuning unset gets it turned off when no GPU or TPU is visible: the training step
then runs on the same CPU cores as tf.data's autotuner, and the autotuner's threads
slowed it. Measured on 2 cores, 3,000 digits, `shuffle`, `batch(128)`,
`prefetch(AUTOTUNE)`, 12 epochs, three runs each: 12,104 / 13,846 / 15,282 examples/s
with autotuning, 15,808 / 16,495 / 16,585 without, and the largest epoch 1.35–1.55×
the median against 1.10–1.18×. A dataset whose `options().autotune.enabled` is set
(True or False) keeps it.
"""

from __future__ import annotations

import inspect
import math

import keras
import numpy as np
import tensorflow as tf

from vae_zoo.positions import positions

# Keras' default batch size for arrays.
DEFAULT_BATCH_SIZE = 32
PREFETCH_BATCHES = 2


def _is_array(value) -> bool:
    return isinstance(value, np.ndarray) or (tf.is_tensor(value) and hasattr(value, "numpy"))


def _as_tensor(array):
    """An array as a tensor; floating point as the Keras float type (Keras casts too)."""
    array = tf.convert_to_tensor(array)
    if array.dtype.is_floating:
        array = tf.cast(array, keras.config.floatx())
    return array


def array_dataset(arrays, batch_size, shuffle):
    """Batches of `arrays` (a tuple of arrays with the same first dimension).

    Args:
        arrays: tuple of one array `(x,)` or two `(x, y)`.
        batch_size: int >= 1; the last batch holds the remainder.
        shuffle: a new random order of the examples every epoch.

    Returns:
        A `tf.data.Dataset` of `x` batches (or `(x, y)` batches), one epoch per
        iteration, with a known number of batches.
    """
    tensors = tuple(_as_tensor(a) for a in arrays)
    counts = [int(t.shape[0]) if t.shape.rank else None for t in tensors]
    if None in counts or len(set(counts)) > 1:
        raise ValueError(f"x and y must have the same number of examples, got "
                         f"{' and '.join(str(c) for c in counts)}")
    count = counts[0]
    batch_size = int(batch_size)
    batches = positions(count, shuffle=shuffle).batch(batch_size)
    # The arrays enter the pipeline once, as one element repeated beside the batches.
    held = tf.data.Dataset.from_tensors(tensors).repeat()

    def gather(indices, data):
        batch = tuple(tf.gather(t, indices) for t in data)
        return batch if len(batch) > 1 else batch[0]

    dataset = tf.data.Dataset.zip((batches, held)).map(gather)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(math.ceil(count / batch_size)))
    options = tf.data.Options()
    options.autotune.enabled = False
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.prefetch(PREFETCH_BATCHES).with_options(options)


def _arrays_of(data):
    """`(x,)` or `(x, y)` when `data` is an array or a tuple of one or two arrays, else None."""
    if _is_array(data):
        return (data,)
    if isinstance(data, (tuple, list)) and 1 <= len(data) <= 2 and all(map(_is_array, data)):
        return tuple(data)
    return None


def _runs_on_cpu() -> bool:
    return not (tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))


def without_autotuning_on_cpu(dataset):
    """`dataset` with tf.data autotuning off, if it leaves it unset and the step runs on
    the CPU; anything else unchanged."""
    if not isinstance(dataset, tf.data.Dataset) or dataset.options().autotune.enabled is not None:
        return dataset
    if not _runs_on_cpu():
        return dataset
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def fit_arguments(args, kwargs) -> dict:
    """The arguments of `keras.Model.fit(*args, **kwargs)` by name, with in-memory
    training and validation arrays replaced by `array_dataset`s and datasets passed
    through `without_autotuning_on_cpu`."""
    given = inspect.signature(keras.Model.fit).bind(None, *args, **kwargs).arguments
    given.pop("self")
    x, y = given.get("x"), given.get("y")
    if isinstance(x, tf.data.Dataset):
        given["x"] = without_autotuning_on_cpu(x)
        if given.get("shuffle", True) is True:
            # Keras ignores `shuffle` for a dataset but warns when it is left at True.
            given["shuffle"] = False
    if "validation_data" in given:
        given["validation_data"] = without_autotuning_on_cpu(given["validation_data"])
    arrays = _arrays_of((x,) if y is None else (x, y)) if _is_array(x) else None
    if (arrays is None or given.get("sample_weight") is not None
            or given.get("class_weight") is not None or given.get("steps_per_epoch") is not None
            or given.get("shuffle", True) not in (True, False)):
        return dict(given)
    batch_size = given.pop("batch_size", None) or DEFAULT_BATCH_SIZE
    split = float(given.pop("validation_split", 0.0) or 0.0)
    if split and given.get("validation_data") is None:
        # As Keras splits: the last fraction of the examples, before any shuffling.
        count = int(arrays[0].shape[0])
        at = int(math.floor(count * (1.0 - split)))
        if at in (0, count):
            raise ValueError(f"validation_split={split} leaves no training or no validation "
                             f"examples out of {count}")
        given["validation_data"] = tuple(a[at:] for a in arrays)
        arrays = tuple(a[:at] for a in arrays)
    validation = _arrays_of(given.get("validation_data"))
    if validation is not None:
        given["validation_data"] = array_dataset(
            validation, given.pop("validation_batch_size", None) or batch_size, shuffle=False)
    given["x"] = array_dataset(arrays, batch_size, shuffle=bool(given.get("shuffle", True)))
    given["shuffle"] = False  # done by the pipeline
    given.pop("y", None)
    return dict(given)
