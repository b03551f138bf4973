"""What every speed benchmark reports about the machine: versions, CPUs, date, the
float32 matmul peak and the memory bandwidth."""

from __future__ import annotations

import os
import time

import keras
import tensorflow as tf


def environment() -> dict:
    """Versions, CPU count and date, for the JSON line of a benchmark."""
    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "cpu_count": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"),
    }


# Memory traffic of one Adam update per parameter: θ, g, m, v read; θ, m, v written;
# float32.
ADAM_BYTES_PER_PARAMETER = 7 * 4


def best_seconds(fn, *args, trials=5):
    """The shortest of `trials` timed calls of `fn(*args)` (its result fetched), after
    one untimed call (tracing, compilation)."""
    fn(*args)
    best = float("inf")
    for _ in range(trials):
        start = time.perf_counter()
        tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, fn(*args))
        best = min(best, time.perf_counter() - start)
    return best


def matmul_peak_gflops(n=1024, batch=8, trials=5):
    """The best float32 matmul rate: `batch` n×n products, TensorFlow's own kernel
    (oneDNN) and XLA's, best of `trials` timed runs each."""
    a = tf.random.stateless_normal((batch, n, n), seed=[1, 2])
    b = tf.random.stateless_normal((n, n), seed=[3, 4])
    best = min(
        best_seconds(tf.function(lambda a, b: tf.reduce_sum(tf.linalg.matmul(a, b)),
                                 jit_compile=jit), a, b, trials=trials)
        for jit in (False, True))
    return 2 * batch * n**3 / best / 1e9


def memory_bandwidth_gbs(megabytes=64, trials=10):
    """The best rate of an in-place update of a large float32 variable, `v += x` (v and
    x read, v written: as an optimizer updates its slots), in GB/s of memory traffic."""
    size = megabytes * (1 << 20) // 4
    variable = tf.Variable(tf.zeros((size,)))
    x = tf.random.stateless_normal((size,), seed=[5, 6])
    update = tf.function(lambda: variable.assign_add(x)[0])
    return 3 * size * 4 / best_seconds(update, trials=trials) / 1e9
