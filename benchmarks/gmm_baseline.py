"""Test log-likelihood of the Gaussian-mixture baseline on the embedded MNIST sample.

What it measures
----------------
`vae_zoo.models.GaussianMixture` (EM, exact log-density) is fitted to the 5000 training
images of `vae_zoo.data.load_embedded_mnist()` (flattened to 784-d) and scored on the
1000 test images, for the default configurations

    K = 10 diagonal, K = 50 diagonal, K = 1 full, K = 10 full     (reg_covar 1e-6)

Full covariance with K = 50 is skipped: about 100 training images per component in 784
dimensions make every Σ_k singular up to the ridge (each component would only memorise
its images), and one EM iteration would cost ~12 s on 2 cores (5x the K = 10 cost).
Already at K = 10 (~500 images per component < 784) the full model overfits; the train
column shows it.

Data: each image is binarized once, like the VAE quality figures,

    rng = np.random.default_rng(0)
    v_train = rng.random(x_train.shape) < x_train / 255     # then, same rng:
    v_test  = rng.random(x_test.shape)  < x_test / 255

(`--data grey` keeps the 8-bit values v in {0..255} instead). Note that `vae-zoo train`
binarizes its own test split with a different draw (`data.load(..., "static",
seed=data.seed + 1)`): same 1000 digits, other Bernoulli pixels, so figures agree only
up to that sampling noise (the VAE's IW bound on both test sets shows how much).

What the numbers mean (read this before comparing with a VAE)
-------------------------------------------------------------
A Gaussian mixture is a density on R^784; a Bernoulli VAE assigns a probability *mass*
to each binary image. The two are not comparable as they stand: fitted directly to
binary pixels, a GMM gives the pixels that are 0 in every training image a variance of
`reg_covar`, and each such pixel adds ½ log(1 / (2π reg_covar)) ≈ +6 nats to log p(x),
so the "log-likelihood" is large, positive and meaningless (it diverges as reg_covar → 0).

So the data are uniformly dequantized (Theis et al. 2016, "A note on the evaluation of
generative models"): with L levels (L = 2 binarized, 256 grey) and u ~ U[0, 1)^D,

    y = (v + u) / L  ∈ [0, 1)^D.

The GMM is fitted to one fixed draw of y on the training images. It then defines a
discrete model of v, the mass of each bin:

    P(v) = ∫_{bin(v)} p(y) dy,    bin(v) = [v/L, (v+1)/L)^D,   volume L^-D,

a (sub-normalized: mass outside [0, 1)^D is lost) probability mass function on the same
binary (or 8-bit) images a Bernoulli (or 256-way) VAE models. Its log is what can be
compared with the VAE's importance-weighted bound on log p(x), in nats per image. Per
configuration the JSON gives, means over the 1000 test images:

- `test_dequantized`: E_u[log p(y)] − D log L, S draws of u per image. A lower bound on
  log P(v) by Jensen (the analogue of a VAE's ELBO).
- `test_iw_bound`: log (1/S) Σ_s p(y_s) − D log L over the same S draws: the
  importance-weighted bound with proposal U(bin), tighter, → log P(v) as S → ∞ (the
  analogue of `vae_zoo.evaluate.log_likelihood`).
- `test_binned_exact` (diagonal only): log P(v) exactly, as a diagonal Gaussian's bin
  mass factorizes: Σ_k α_k Π_d [Φ(b_kd) − Φ(a_kd)]. For full covariance it is a
  784-d Gaussian box probability and is not computed (null).
- `test_log_likelihood`: the exact value when there is one, otherwise the IW bound;
  `test_log_likelihood_is` says which. `bits_per_dim` converts it.
- `train_dequantized`: the final EM objective, mean log p(y) − D log L on the one
  training draw of u. Not a bound on anything: the mixture was fitted to those very u,
  and a full-covariance mixture with fewer images per component than dimensions fits
  the noise itself (it can exceed 0). The train/test gap is the overfitting.

The test figures are log-*masses* of the images (≤ 0 nats), so they can be set beside
the default DenseVAE's IW bound (about −105 nats on binarized test digits, README): the
GMM's are exact or lower bounds for an exact discrete model, the VAE's a lower bound.
Note the GMM is fitted by maximum likelihood on the dequantized densities, not on
P(v): it is the honest baseline the theory describes, not the best discrete model a
mixture could give (a mixture of Bernoullis would be that).

How to run
----------
    cd /work/main && python benchmarks/gmm_baseline.py          # ~1 min on 2 cores
    # options: --data {binarized,grey} --samples S (default 50) --seed 0

A table goes to stderr; exactly one JSON line goes to stdout.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before tensorflow is imported

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # machine.py

import numpy as np  # noqa: E402

import vae_zoo  # noqa: E402,F401  (quiet TensorFlow start-up)
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402

from vae_zoo import data, objectives  # noqa: E402
from vae_zoo.models import GaussianMixture  # noqa: E402
from machine import environment  # noqa: E402

CONFIGS = [
    dict(num_components=10, covariance_type="diagonal", max_iter=200),
    dict(num_components=50, covariance_type="diagonal", max_iter=200),
    dict(num_components=1, covariance_type="full", max_iter=1),
    dict(num_components=10, covariance_type="full", max_iter=20),
]
SKIPPED = [
    dict(
        num_components=50,
        covariance_type="full",
        reason="~100 training images per component in 784-d: every Sigma_k is singular "
        "up to reg_covar, and one EM iteration would take ~12 s on 2 cores",
    )
]
LEVELS = {"binarized": 2, "grey": 256}


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Gaussian-mixture baseline on MNIST.")
    parser.add_argument("--data", choices=sorted(LEVELS), default="binarized")
    parser.add_argument(
        "--samples", type=int, default=50,
        help="dequantization draws u per test image (default 50)",
    )
    parser.add_argument("--seed", type=int, default=0, help="EM initialization seed")
    parser.add_argument("--reg-covar", type=float, default=1e-6)
    args = parser.parse_args(argv)
    if args.samples < 1:
        parser.error("--samples must be >= 1")
    return args


def load_levels(kind):
    """Integer levels v `[N, 784]` for train and test: binary {0, 1} or grey {0..255}."""
    mnist = data.load_embedded_mnist()
    x_train, x_test = mnist["x_train"], mnist["x_test"]  # uint8 [N, 28, 28]
    if kind == "binarized":
        rng = np.random.default_rng(0)
        x_train = rng.random(x_train.shape) < x_train / 255.0
        x_test = rng.random(x_test.shape) < x_test / 255.0
    v_train = x_train.reshape(len(x_train), -1).astype(np.float64)
    v_test = x_test.reshape(len(x_test), -1).astype(np.float64)
    return v_train, v_test


def dequantize(v, levels, rng):
    """y = (v + u) / L, u ~ U[0, 1)^D: one point of the bin of v, uniformly."""
    return (v + rng.random(v.shape)) / levels


def binned_log_prob(gmm, v, levels, batch=100):
    """Exact log P(v) = log Σ_k α_k Π_d ∫_{v_d/L}^{(v_d+1)/L} N(y; μ_kd, σ²_kd) dy, `[N]`.

    Diagonal mixtures only. The per-pixel bin masses depend only on (level, d, k), so
    they are tabulated once (`[L, D, K]`) and gathered. log(Φ(b) − Φ(a)) is a
    difference of log-CDFs, taken on the upper tail (Φ(−a) − Φ(−b)) where a > 0 so that
    neither tail loses precision.
    """
    std_normal = tfp.distributions.Normal(np.float64(0.0), np.float64(1.0))
    dims = v.shape[1]
    mu = tf.constant(gmm.means.T)[None]  # [1, D, K]
    sd = tf.sqrt(tf.constant(gmm.covariances.T))[None]  # [1, D, K]
    edges = tf.range(levels + 1, dtype=tf.float64)[:, None, None] / levels  # [L + 1, 1, 1]
    z = (edges - mu) / sd  # [L + 1, D, K]
    a, b = z[:-1], z[1:]  # bin edges of each level, [L, D, K]
    upper = a > 0
    log_mass = tfp.math.log_sub_exp(
        std_normal.log_cdf(tf.where(upper, -a, b)), std_normal.log_cdf(tf.where(upper, -b, a))
    )  # log ∫_bin N(y; μ_kd, σ²_kd) dy, [L, D, K]
    table = tf.reshape(log_mass, [levels * dims, -1])  # row l * D + d
    log_alpha = tf.math.log(tf.constant(gmm.weights))  # [K]
    out = []
    for start in range(0, len(v), batch):
        rows = v[start : start + batch].astype(np.int64) * dims + np.arange(dims)  # [n, D]
        log_joint = log_alpha + tf.reduce_sum(tf.gather(table, rows), axis=1)  # [n, K]
        out.append(tf.reduce_logsumexp(log_joint, axis=-1).numpy())
    return np.concatenate(out)


def evaluate(gmm, v_test, levels, samples, seed):
    """Dequantized (Jensen) and IW bounds on log P(v), and the exact value if diagonal."""
    dims = v_test.shape[1]
    offset = -dims * math.log(levels)  # log of the bin volume L^-D
    rng = np.random.default_rng(seed)  # the same u draws for every configuration
    log_p = np.stack(
        [gmm.log_prob(dequantize(v_test, levels, rng)) + offset for _ in range(samples)]
    )  # [S, N]
    iw = tf.reduce_logsumexp(log_p, axis=0).numpy() - math.log(samples)  # [N]
    result = {
        "test_dequantized": float(log_p.mean()),
        "test_iw_bound": float(iw.mean()),
        "test_binned_exact": None,
    }
    if gmm.covariance_type == "diagonal":
        result["test_binned_exact"] = float(binned_log_prob(gmm, v_test, levels).mean())
        result["test_log_likelihood"] = result["test_binned_exact"]
        result["test_log_likelihood_is"] = "exact log P(v) of the binned mixture"
    else:
        result["test_log_likelihood"] = result["test_iw_bound"]
        result["test_log_likelihood_is"] = f"lower bound (IW over S={samples} dequantizations)"
    result["bits_per_dim"] = float(objectives.bits_per_dim(result["test_log_likelihood"], dims))
    return result


def main(argv=None):
    args = parse_args(argv)
    levels = LEVELS[args.data]
    v_train, v_test = load_levels(args.data)
    dims = v_train.shape[1]
    y_train = dequantize(v_train, levels, np.random.default_rng(1))
    offset = -dims * math.log(levels)
    log(f"data: {args.data} MNIST sample, train {v_train.shape}, test {v_test.shape}, "
        f"L = {levels}, S = {args.samples}")
    log(f"{'model':<16}{'iters':>6}{'conv':>6}{'fit s':>7}{'train':>10}{'deq.':>10}"
        f"{'IW':>10}{'exact':>10}")

    results = []
    for config in CONFIGS:
        gmm = GaussianMixture(reg_covar=args.reg_covar, seed=args.seed, **config)
        start = time.perf_counter()
        gmm.fit(y_train)
        fit_seconds = time.perf_counter() - start
        start = time.perf_counter()
        scores = evaluate(gmm, v_test, levels, args.samples, seed=2)
        row = {
            **config,
            "reg_covar": args.reg_covar,
            "n_iter": gmm.n_iter,
            "converged": gmm.converged,
            "num_parameters": gmm.num_parameters(),
            "train_dequantized": gmm.log_likelihood_history[-1] + offset,
            **scores,
            "fit_seconds": round(fit_seconds, 2),
            "eval_seconds": round(time.perf_counter() - start, 2),
        }
        results.append(row)
        exact = row["test_binned_exact"]
        log(f"{config['covariance_type'] + ' K=' + str(config['num_components']):<16}"
            f"{row['n_iter']:>6}{str(row['converged']):>6}{fit_seconds:>7.1f}"
            f"{row['train_dequantized']:>10.2f}{row['test_dequantized']:>10.2f}"
            f"{row['test_iw_bound']:>10.2f}{'-' if exact is None else f'{exact:.2f}':>10}")

    print(json.dumps({
        "benchmark": "gmm_baseline",
        "data": f"mnist_sample {args.data}" + (
            " (np.random.default_rng(0), train then test)" if args.data == "binarized" else ""
        ),
        "units": "nats per test image: log-mass of the image under the binned mixture "
        "(bounds or exact), comparable with a VAE's IW log-likelihood on the same data",
        "levels": levels,
        "dequantization": f"y = (v + u) / {levels}, u ~ U[0,1)^{dims}; "
        f"log P(v) >= E_u log p(y) - {dims} log {levels}",
        "train_examples": len(v_train),
        "test_examples": len(v_test),
        "dequantization_samples": args.samples,
        "results": results,
        "skipped": SKIPPED,
        "tensorflow": tf.__version__,
        "cpu_count": os.cpu_count(),
        **environment(),
    }))


if __name__ == "__main__":
    main()
