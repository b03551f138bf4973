"""What every benchmark reports about the machine: versions, the CPU model and its vector
ISA, the settings that change the numerics' code path, CPUs, date, the float32 matmul
peak and the memory bandwidth."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

# The vector-ISA flags of /proc/cpuinfo that decide which code XLA and oneDNN run.
VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl",
                "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")
# The settings that cap or switch those code paths (tests/test_portability.py).
NUMERICS_SETTINGS = ("XLA_FLAGS", "ONEDNN_MAX_CPU_ISA", "TF_ENABLE_ONEDNN_OPTS")


def cpu(cpuinfo="/proc/cpuinfo") -> dict:
    """The CPU's model name, its widest vector ISA ("AVX-512", "AVX2", "AVX", "SSE4.2")
    and the vector flags it has, from `cpuinfo` (Linux); the platform's processor name
    and no flags elsewhere."""
    model, flags, fields = platform.processor() or platform.machine(), set(), {}
    path = Path(cpuinfo)
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            fields.setdefault(key, value)
            if key == "flags":
                flags = set(value.split())
                break  # the first CPU's; every core of a machine has the same
        model = fields.get("model name") or model
    widest = next((name for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"),
                                           ("avx", "AVX"), ("sse4_2", "SSE4.2"))
                   if flag in flags), "unknown")
    return {"cpu_model": model, "cpu_isa": widest,
            # a virtual machine's model name may be only "AMD EPYC": family and model tell
            "cpu_family_model": (f"{fields['cpu family']}/{fields['model']}"
                                 if "cpu family" in fields and "model" in fields else None),
            "cpu_flags": [flag for flag in VECTOR_FLAGS if flag in flags]}


def environment() -> dict:
    """Versions, the CPU (`cpu`), the numerics settings in force, CPU count and date, for
    the JSON line of a benchmark."""
    import keras
    import tensorflow as tf

    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        **cpu(),
        "numerics_settings": {name: os.environ[name] for name in NUMERICS_SETTINGS
                              if name in os.environ},
        "cpu_count": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"),
    }


def describe(env) -> str:
    """One line naming the machine of `environment()`, for a benchmark's table."""
    family = f", family/model {env['cpu_family_model']}" if env.get("cpu_family_model") else ""
    return (f"{env['cpu_model']} ({env['cpu_isa']}{family}), {env['cpu_count']} CPUs, "
            f"TensorFlow {env['tensorflow']}, Keras {env['keras']}, {env['date']}")


# Memory traffic of one Adam update per parameter: θ, g, m, v read; θ, m, v written;
# float32.
ADAM_BYTES_PER_PARAMETER = 7 * 4


def best_seconds(fn, *args, trials=5):
    """The shortest of `trials` timed calls of `fn(*args)` (its result fetched), after
    one untimed call (tracing, compilation)."""
    import tensorflow as tf

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
    import tensorflow as tf

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
    import tensorflow as tf

    size = megabytes * (1 << 20) // 4
    variable = tf.Variable(tf.zeros((size,)))
    x = tf.random.stateless_normal((size,), seed=[5, 6])
    update = tf.function(lambda: variable.assign_add(x)[0])
    return 3 * size * 4 / best_seconds(update, trials=trials) / 1e9
