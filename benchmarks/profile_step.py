"""Where a training step's time goes: matmuls, the rest of the step, the input and Keras loop.

For the dense benchmark architecture (the `mnist_dense` recipe: 784-512-256, latent 32,
Bernoulli, batch 128, Adam), median milliseconds per training step of four nested
measurements, each in one process on the same data:

1. `matmuls`: only the step's matrix products (the 6 forward products at batch 128,
   and for the backward pass each layer's weight gradient aᵀg and, except the first
   layer, its input gradient gWᵀ), TensorFlow's matmul kernel, 50 steps per call;
   `matmul_flops` is their FLOP count and `matmul_gflops` their rate;
2. `xla_step_loop`: `model.train_step` on one fixed batch, XLA-compiled, 50 steps per
   call in a `tf.while_loop`: the whole step without an input pipeline or Python;
3. `fit`: `model.fit` with the recipe's defaults (XLA, steps_per_execution) on the
   recipe's tf.data pipeline (dynamic binarization, shuffling), per step;
4. `fit_plain`: `model.fit` with one plain `tf.function` step per batch
   (`jit_compile=False, steps_per_execution=1`);

and `data_resident`: the input pipeline inside the compiled loop, a candidate of the
performance issue: the embedded sample's grey digits held by the compiled function,
each step gathering its batch by an in-graph permutation (one per epoch) and binarizing
it there (XLA-compiled with the step), an epoch's full batches in one call; compare
with (3), which does the same work in tf.data (its partial last batch included);

and, inside (2), `adam_update`: the optimizer's update alone (`optimizer.apply` on
fixed gradients, XLA, 50 per call), against its memory traffic (7 float32 per
parameter: θ, g, m, v read, θ, m, v written) at the bandwidth of an in-place update
measured in the same run (`machine.memory_bandwidth_gbs`).

So (2) − (1) is the element-wise work, the sampling, the likelihood, the KL and the
Adam update; (3) − (2) is the input pipeline and Keras' loop (the most a data-resident
loop inside the compiled function could save); (4) − (3) is what the fast path saves.
`benchmarks/README.md` records a run.

Run (about 1 minute):  python benchmarks/profile_step.py

A table goes to stderr; one JSON line goes to stdout.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from machine import ADAM_BYTES_PER_PARAMETER, environment, memory_bandwidth_gbs  # noqa: E402
from vae_zoo import data, recipes  # noqa: E402

BATCH = 128
STEPS = 50
ENCODER = (784, 512, 256, 64)  # the last layer gives μ and σ of a 32-d z
DECODER = (32, 256, 512, 784)


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def timed(fn, *args, repeats=7):
    fn(*args)  # trace / compile
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn(*args)
        if hasattr(result, "numpy"):
            result.numpy()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def matmul_ms():
    layers = list(zip(ENCODER, ENCODER[1:])) + list(zip(DECODER, DECODER[1:]))
    weights = [tf.random.stateless_normal(shape, seed=[i, 0]) * 0.01
               for i, shape in enumerate(layers)]
    x = tf.random.stateless_normal((BATCH, ENCODER[0]), seed=[9, 9])
    z = tf.random.stateless_normal((BATCH, DECODER[0]), seed=[8, 8])

    # Plain graph: XLA would rewrite sum(AᵀG) as (Σ rows A)ᵀ(Σ rows G) and skip work.
    @tf.function(jit_compile=False)
    def products(x, z):
        total = tf.zeros(())
        for _ in range(STEPS):
            for inputs, chain in ((x, weights[:3]), (z, weights[3:])):
                activations = [inputs]
                for w in chain:
                    activations.append(tf.linalg.matmul(activations[-1], w))
                grad = activations[-1]
                for i in reversed(range(len(chain))):
                    weight_grad = tf.linalg.matmul(activations[i], grad, transpose_a=True)
                    total += tf.reduce_sum(weight_grad)
                    if i:
                        grad = tf.linalg.matmul(grad, chain[i], transpose_b=True)
            x = x + 1e-9 * total  # dependencies between steps: no step is computed once
            z = z + 1e-9 * total
        return total

    return timed(products, x, z) / STEPS * 1000


def matmul_flops():
    """FLOPs of the products `matmul_ms` times, per step."""
    layers = list(zip(ENCODER, ENCODER[1:])) + list(zip(DECODER, DECODER[1:]))
    forward = sum(2 * BATCH * a * b for a, b in layers)
    input_grads = sum(2 * BATCH * a * b for a, b in layers[1:3] + layers[4:])
    return 2 * forward + input_grads  # forward, weight gradients, input gradients


def build(overrides=()):
    keras.utils.set_random_seed(0)
    recipe = recipes.load("mnist_dense", list(overrides))
    model = recipes.compile_model(recipes.build_model(recipe), recipe)
    train, _ = recipes.build_datasets(recipe)
    return model, train


def xla_step_loop_ms():
    model, train = build()
    batch = next(iter(train))
    step = tf.function(model.train_step, jit_compile=True)

    @tf.function
    def loop(batch):
        for _ in tf.range(STEPS):
            logs = step(batch)
        return logs["loss"]

    return timed(loop, batch) / STEPS * 1000


def data_resident_ms():
    model, _ = build()
    images = tf.constant(data.load_embedded_mnist()["x_train"][..., None] / 255.0, tf.float32)
    count = int(images.shape[0])
    steps = count // BATCH

    @tf.function(jit_compile=True)
    def step(order, index, seed):
        batch = tf.gather(images, tf.slice(order, [index * BATCH], [BATCH]))
        binary = tf.cast(tf.random.stateless_uniform(tf.shape(batch), seed) < batch, tf.float32)
        return model.train_step(binary)["loss"]

    @tf.function
    def epoch(seed):
        order = tf.argsort(tf.random.stateless_uniform([count], tf.stack([seed, 0])))
        loss = tf.zeros(())
        for i in tf.range(steps):
            loss = step(order, i, tf.stack([seed, i + 1]))
        return loss

    return timed(epoch, tf.constant(1)) / steps * 1000


def adam_update_ms():
    model, _ = build()
    variables = model.trainable_variables
    model.optimizer.build(variables)
    gradients = [tf.fill(v.shape, 1e-6) for v in variables]
    apply = tf.function(lambda: model.optimizer.apply(gradients, variables), jit_compile=True)

    @tf.function
    def loop():
        for _ in tf.range(STEPS):
            apply()
        return tf.convert_to_tensor(model.optimizer.iterations)

    parameters = sum(int(tf.size(v)) for v in variables)
    return timed(loop) / STEPS * 1000, parameters


def fit_ms(overrides=()):
    model, train = build(overrides)
    steps = int(train.cardinality())
    model.fit(train, epochs=1, verbose=0)  # trace / compile
    seconds = []
    for _ in range(5):
        start = time.perf_counter()
        model.fit(train, epochs=1, verbose=0)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds) / steps * 1000


def main():
    warnings.filterwarnings("ignore", message=r"`shuffle=True` was passed")
    figures = {
        "matmuls": matmul_ms(),
        "xla_step_loop": xla_step_loop_ms(),
        "fit": fit_ms(),
        "fit_plain": fit_ms(["train.jit_compile=false", "train.steps_per_execution=1"]),
        "data_resident": data_resident_ms(),
    }
    figures["adam_update"], parameters = adam_update_ms()
    bandwidth = memory_bandwidth_gbs()
    traffic = ADAM_BYTES_PER_PARAMETER * parameters  # bytes per step
    traffic_ms = traffic / (bandwidth * 1e9) * 1000
    for name, ms in figures.items():
        log(f"{name:>14}: {ms:6.2f} ms per step ({BATCH / ms * 1000:8,.0f} examples/s)")
    gflops = matmul_flops() / figures["matmuls"] / 1e6
    log(f"matmuls: {matmul_flops() / 1e6:.0f} MFLOP per step at {gflops:.0f} GFLOP/s")
    log(f"adam_update: {parameters:,} parameters, {traffic / 1e6:.1f} MB of memory "
        f"traffic per step, {traffic_ms:.2f} ms at {bandwidth:.1f} GB/s")
    print(json.dumps({
        "benchmark": "profile_step",
        "batch_size": BATCH,
        "ms_per_step": {k: round(v, 3) for k, v in figures.items()},
        "matmul_flops": matmul_flops(),
        "matmul_gflops": round(gflops, 1),
        "parameters": parameters,
        "memory_bandwidth_gbs": round(bandwidth, 1),
        "adam_traffic_ms": round(traffic_ms, 3),
        **environment(),
    }), flush=True)


if __name__ == "__main__":
    main()
