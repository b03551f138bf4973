"""Variance of encoder-gradient estimators: REINFORCE, Gumbel-softmax, Gaussian reparameterization.

What it measures
----------------
On one fixed batch (the first `--batch-size` = 128 digits of the embedded MNIST sample's
train split, statically binarized: `rng(0).random(x.shape) < x / 255`) and fixed
weights, the estimator of the gradient of the training objective (the mean over the
batch of the per-example loss, one z per example, exactly what one `train_step`
differentiates) is drawn `--draws` = 200 times with fresh noise (the reference below
`--reference-draws` = 100 times). Only the encoder's parameters (the gradient w.r.t. φ,
where the estimators differ) are recorded.

Estimators, all on `DiscreteVAE(num_latents=20, num_categories=10, hidden_units=(512,
256))` sharing one set of encoder/decoder weights, except the last:

- `reinforce_no_baseline`: score function (f − 0) ∇ log q, f = log p(x|z);
- `reinforce_moving_average`: f − b, b the model's running mean of f;
- `reinforce_learned_baseline`: b = running mean + MLP(x) (NVIL);
- `gumbel_softmax`: relaxed reparameterized sample at τ = 0.5 (biased);
- `local_expectation`: the reference, not a training option of the model. Unbiased
  and independent of the model's surrogate code: for each latent l, its C classes
  are summed over exactly while the other latents keep their sampled values,
  Σ_l Σ_c ∇_φ q_l(c|x) log p(x | z_{−l}, z_l = c) plus the analytic KL gradient
  (Titsias & Lázaro-Gredilla 2015, "Local expectation gradients"). It costs L·C =
  200 decoder passes per example, so it has a low variance per draw;
- `gaussian_reparameterization`: a `DenseVAE(latent_dim=20, hidden_units=(512, 256))`,
  20 Gaussian latents against 20 categoricals (its own weights, same warm-up).

Weights: `--warmup-steps` (300) Adam(1e-3) steps of Gumbel-softmax training on the 5,000
train digits (batch 128), so the decoder uses z (at initialisation f barely depends on
z and every estimator looks alike); the DenseVAE gets the same number of its own steps.
Then, with the encoder and decoder frozen, the REINFORCE model's baseline state is
fitted by `--baseline-steps` (300) training steps (Adam(3e-3)): the learned baseline
network by squared error, the running mean alongside. `--warmup-steps 0` measures at
initialisation. The REINFORCE draws use `compute_terms(training=False)` (the baseline
stays fixed during the draws).

How to run
----------
    cd /work/main && PYTHONPATH=/work/main python benchmarks/gradient_variance.py
    # options: --draws 200 --reference-draws 100 --batch-size 128 --warmup-steps 300
    #          --baseline-steps 300
    # about 40 s on 2 CPU cores

What the figures mean
---------------------
A table goes to stderr and exactly one JSON line to stdout. Per estimator, with g_n the
n-th flattened encoder gradient (N draws, P parameters) and ḡ their mean:

- `total_variance`: tr Cov(g) = Σ_p Var_n(g_np) (unbiased, ddof = 1), summed over all
  encoder parameters: the expected squared distance of one estimate from its mean;
- `mean_gradient_norm`: ‖ḡ‖, the norm of the mean gradient;
  `mean_gradient_norm_debiased`: sqrt(max(‖ḡ‖² − tr Cov / N, 0)), an estimate of
  ‖E g‖ with the noise that survives in ḡ removed (for the no-baseline estimator ‖ḡ‖
  is mostly noise);
- `snr`: signal-to-noise ratio ‖E g‖ / sqrt(tr Cov), i.e. how large the gradient is
  against the noise of one draw; higher is better. ‖E g‖ is the debiased norm; the
  unbiased discrete estimators share one E g (the exact ELBO gradient), so they all
  use the reference's precise estimate of it. Gumbel-softmax's is the norm of its
  own (biased) mean;
- `vs_reference` (unbiased discrete estimators): ‖ḡ − ḡ_ref‖ / noise with
  noise = sqrt(tr Cov / N + tr Cov_ref / N_ref): about 1 when both estimate the same
  gradient, a check of the model's REINFORCE surrogate at full scale;
- `gumbel_bias`: the Gumbel-softmax bias measured against the reference:
  `norm` = sqrt(max(‖ḡ_G − ḡ_ref‖² − noise², 0)), `noise` as above (the part of the
  difference sampling alone explains), `relative` = norm / ‖E g‖ and `cosine`
  between ḡ_G and ḡ_ref. `resolved` when ‖ḡ_G − ḡ_ref‖ > 2 · noise.
- `elbo`: the batch's mean ELBO (hard samples, 20 draws) at the benchmarked weights;
  `relaxed_objective` (Gumbel-softmax only): the relaxed objective it ascends instead.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # machine.py

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from vae_zoo import data  # noqa: E402
from vae_zoo.models import DenseVAE, DiscreteVAE  # noqa: E402
from machine import environment  # noqa: E402

NUM_LATENTS, NUM_CATEGORIES, HIDDEN = 20, 10, (512, 256)
# The unbiased, low-variance estimator the others are measured against.
REFERENCE = "local_expectation"


def binarized_mnist(seed=0):
    images = data.load_embedded_mnist()["x_train"].astype("float32")[..., None] / 255.0
    return (np.random.default_rng(seed).random(images.shape) < images).astype("float32")


def train(model, x, steps, learning_rate, seed=0):
    if steps <= 0:
        return
    ds = tf.data.Dataset.from_tensor_slices(x).shuffle(len(x), seed=seed).repeat().batch(128)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate))
    model.fit(ds, steps_per_epoch=steps, epochs=1, shuffle=False, verbose=0)


def encoder_gradient_fn(model, x, **compute_kwargs):
    """A compiled function drawing one flattened encoder-gradient estimate `[P]`."""
    variables = model.encoder.trainable_variables
    x = tf.constant(x)

    @tf.function
    def draw():
        with tf.GradientTape() as tape:
            terms = model.compute_terms((x,), **compute_kwargs)
            objective = tf.reduce_mean(terms.get("surrogate", terms["loss"]))
        return tf.concat([tf.reshape(g, [-1]) for g in tape.gradient(objective, variables)], 0)

    return draw


def local_expectation_gradient_fn(model, x):
    """Like `encoder_gradient_fn`, for the local-expectation estimator (see the top)."""
    variables = model.encoder.trainable_variables
    x = tf.constant(x)
    batch = x.shape[0]
    num_latents, num_categories = model.latent_shape
    classes = tf.eye(num_categories)[:, None, None, :]  # [C, 1, 1, C]
    tiled_x = tf.tile(x, [num_categories] + [1] * (x.shape.rank - 1))  # [C·B, ...]
    beta = float(model.beta.numpy())

    @tf.function
    def draw():
        with tf.GradientTape() as tape:
            params = model.encoder(x)  # [B, L, C]
            q = model.posterior(params)
            z = tf.stop_gradient(q.sample(seed=model.draw_seed()))  # [B, L, C]
            probs = tf.nn.softmax(params)
            expected = tf.zeros([batch])
            for l in range(num_latents):
                variants = tf.repeat(z[None], num_categories, 0)  # [C, B, L, C]
                row = tf.broadcast_to(classes, [num_categories, batch, 1, num_categories])
                variants = tf.concat([variants[:, :, :l], row, variants[:, :, l + 1:]], 2)
                flat = tf.reshape(variants, [-1, num_latents, num_categories])
                f = tf.reshape(model.decode(flat).log_prob(tiled_x), [num_categories, batch])
                expected += tf.reduce_sum(probs[:, l] * tf.stop_gradient(tf.transpose(f)), -1)
            kl = q.kl_divergence(model.prior_distribution())
            objective = tf.reduce_mean(-(expected - beta * kl))
        return tf.concat([tf.reshape(g, [-1]) for g in tape.gradient(objective, variables)], 0)

    return draw


def moments(draw, num_draws):
    """Mean `[P]` and tr Cov of `num_draws` draws, from float64 sums of deviations from the
    first draw (which deviates by 0), so large means do not cancel the variance away."""
    shift = draw().numpy().astype(np.float64)
    total = np.zeros_like(shift)
    squares = np.zeros_like(shift)
    for _ in range(num_draws - 1):
        d = draw().numpy().astype(np.float64) - shift
        total += d
        squares += d * d
    n = num_draws
    mean_d = total / n
    trace = float((squares - n * mean_d**2).sum() / (n - 1))
    return shift + mean_d, trace


def summarize(name, mean, trace, n, seconds, unbiased, elbo):
    norm = float(np.linalg.norm(mean))
    debiased = math.sqrt(max(norm**2 - trace / n, 0.0))
    return {
        "estimator": name,
        "unbiased": unbiased,
        "total_variance": trace,
        "mean_gradient_norm": norm,
        "mean_gradient_norm_debiased": debiased,
        "snr": debiased / math.sqrt(trace) if trace > 0 else float("inf"),
        "parameters": int(mean.size),
        "draws": n,
        "elbo": elbo,
        "seconds": round(seconds, 2),
    }


def batch_elbo(model, x):
    tiled = np.tile(x, (20, 1, 1, 1))
    return float(tf.reduce_mean(model.elbo(tiled, seed=0)["elbo"]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--warmup-steps", type=int, default=300)
    parser.add_argument("--baseline-steps", type=int, default=300)
    parser.add_argument("--reference-draws", type=int, default=100)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    keras.utils.set_random_seed(0)
    train_x = binarized_mnist(seed=0)
    batch = train_x[: args.batch_size]
    discrete = dict(input_shape=(28, 28, 1), num_latents=NUM_LATENTS,
                    num_categories=NUM_CATEGORIES, hidden_units=HIDDEN, seed=0)

    # Weights: Gumbel-softmax warm-up, shared by every discrete estimator.
    gumbel = DiscreteVAE(estimator="gumbel_softmax", temperature=0.5, **discrete)
    train(gumbel, train_x, args.warmup_steps, 1e-3)
    gaussian = DenseVAE((28, 28, 1), latent_dim=NUM_LATENTS, hidden_units=HIDDEN, seed=0)
    train(gaussian, train_x, args.warmup_steps, 1e-3)
    reinforce = {}
    for baseline in ("none", "moving_average", "learned"):
        model = DiscreteVAE(estimator="reinforce", baseline=baseline, **discrete)
        model.encoder.set_weights(gumbel.encoder.get_weights())
        model.decoder.set_weights(gumbel.decoder.get_weights())
        reinforce[baseline] = model
    learned = reinforce["learned"]
    learned.encoder.trainable = False
    learned.decoder.trainable = False
    train(learned, train_x, args.baseline_steps, 3e-3)
    learned.encoder.trainable = True  # back to what the gradient is taken of
    learned.decoder.trainable = True
    reinforce["moving_average"].baseline_average.assign(learned.baseline_average)
    reinforce["moving_average"].baseline_updates.assign(learned.baseline_updates)
    setup_seconds = time.perf_counter() - start

    def fn(model, **kwargs):
        return encoder_gradient_fn(model, batch, **kwargs)

    runs = [  # name, model, draw function, draws, unbiased
        ("reinforce_no_baseline", reinforce["none"], fn(reinforce["none"], training=False),
         args.draws, True),
        ("reinforce_moving_average", reinforce["moving_average"],
         fn(reinforce["moving_average"], training=False), args.draws, True),
        ("reinforce_learned_baseline", learned, fn(learned, training=False), args.draws, True),
        ("gumbel_softmax", gumbel, fn(gumbel, training=True), args.draws, False),
        (REFERENCE, gumbel, local_expectation_gradient_fn(gumbel, batch), args.reference_draws,
         True),
        ("gaussian_reparameterization", gaussian, fn(gaussian), args.draws, True),
    ]
    results, means = [], {}
    for name, model, draw, draws, unbiased in runs:
        t0 = time.perf_counter()
        mean, trace = moments(draw, draws)
        means[name] = (mean, trace, draws)
        results.append(summarize(name, mean, trace, draws, time.perf_counter() - t0,
                                 unbiased, batch_elbo(model, batch)))
        if name == "gumbel_softmax":
            tiled = np.tile(batch, (20, 1, 1, 1))
            surrogate = model.compute_terms((tiled,), training=True)["surrogate"]
            results[-1]["relaxed_objective"] = -float(tf.reduce_mean(surrogate))
    # The unbiased discrete estimators share one E g: their SNR uses the reference's
    # estimate of its norm, and their mean is compared with the reference's.
    reference = next(r for r in results if r["estimator"] == REFERENCE)
    ref_mean, ref_trace, ref_draws = means[REFERENCE]

    def noise_against_reference(name):
        _, trace, draws = means[name]
        return math.sqrt(trace / draws + ref_trace / ref_draws)

    for r in results:
        if r["estimator"].startswith("reinforce") or r["estimator"] == REFERENCE:
            r["snr"] = reference["mean_gradient_norm_debiased"] / math.sqrt(r["total_variance"])
        if r["estimator"].startswith("reinforce"):
            difference = np.linalg.norm(means[r["estimator"]][0] - ref_mean)
            r["vs_reference"] = float(difference / noise_against_reference(r["estimator"]))

    # Gumbel-softmax bias against the reference.
    g_mean = means["gumbel_softmax"][0]
    noise = noise_against_reference("gumbel_softmax")
    raw = float(np.linalg.norm(g_mean - ref_mean))
    bias_norm = math.sqrt(max(raw**2 - noise**2, 0.0))
    bias = {
        "reference": REFERENCE,
        "reference_draws": ref_draws,
        "norm": bias_norm,
        "raw_difference_norm": raw,
        "noise": noise,
        "relative": bias_norm / reference["mean_gradient_norm_debiased"]
        if reference["mean_gradient_norm_debiased"] > 0 else None,
        "cosine": float(g_mean @ ref_mean / (np.linalg.norm(g_mean) * np.linalg.norm(ref_mean))),
        "resolved": raw > 2 * noise,
    }

    header = (f"{'estimator':<28} {'draws':>5} {'total var':>11} {'|mean g|':>9} {'|E g|':>9} "
              f"{'SNR':>7} {'vs ref':>6} {'ELBO':>8}")
    print(header, file=sys.stderr)
    for r in results:
        versus = f"{r['vs_reference']:6.2f}" if "vs_reference" in r else f"{'':6}"
        print(f"{r['estimator']:<28} {r['draws']:5d} {r['total_variance']:11.4g} "
              f"{r['mean_gradient_norm']:9.4g} {r['mean_gradient_norm_debiased']:9.4g} "
              f"{r['snr']:7.3f} {versus} {r['elbo']:8.2f}", file=sys.stderr)
    relative = "n/a" if bias["relative"] is None else f"{bias['relative']:.2f}"
    print(f"gumbel_softmax bias vs {REFERENCE}: |bias| ≈ {bias['norm']:.4g} (|difference of "
          f"means| {bias['raw_difference_norm']:.4g}, noise {bias['noise']:.4g}, relative "
          f"{relative}, cosine {bias['cosine']:.3f}, resolved {bias['resolved']})",
          file=sys.stderr)

    print(json.dumps({
        "benchmark": "gradient_variance",
        "batch_size": args.batch_size,
        "draws": args.draws,
        "warmup_steps": args.warmup_steps,
        "baseline_steps": args.baseline_steps,
        "weights": "gumbel_softmax warm-up (DenseVAE: its own)" if args.warmup_steps else "init",
        "latents": f"{NUM_LATENTS}x{NUM_CATEGORIES} categorical vs {NUM_LATENTS} Gaussian",
        "temperature": 0.5,
        "results": results,
        "gumbel_bias": bias,
        "setup_seconds": round(setup_seconds, 1),
        "total_seconds": round(time.perf_counter() - start, 1),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "cpu_count": os.cpu_count(),
        **environment(),
    }))


if __name__ == "__main__":
    main()
