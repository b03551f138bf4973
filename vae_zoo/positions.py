"""The order of a data set's examples on each pass, as a `tf.data.Dataset` of positions.

A utility below every layer: in-memory arrays given to `fit` (`vae_zoo.training.arrays`)
and the data layer's image folders and generated data sets gather their examples at
these positions.
"""

import tensorflow as tf


def positions(count, *, shuffle=False, seed=None):
    """A `tf.data.Dataset` of the int64 positions 0..count-1: in order, or (`shuffle`)
    in a fresh permutation on every pass, drawn from `seed` (8 bytes a position, where a
    shuffle buffer would hold whole examples or file names). A new seed at every pass
    (every epoch), reproducible under a global seed (`keras.utils.set_random_seed`): a
    plain random op here would repeat its first order every pass once a global seed is
    set."""
    if not (shuffle and count):
        return tf.data.Dataset.range(count)

    def permutation(pass_seed):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(count, dtype=tf.int64), seed=tf.stack([pass_seed, 0]))
        return tf.data.Dataset.from_tensor_slices(order)

    passes = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
    return passes.flat_map(permutation)
