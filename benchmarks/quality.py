"""Test log-likelihood of the dense benchmark VAE under several objectives and priors.

Trains the dense benchmark architecture (784-512-256 encoder, latent 32, mirrored
decoder, Bernoulli likelihood, batch 128, Adam 1e-3, 30 epochs) on the embedded MNIST
sample (5,000 training digits), statically binarized with a fixed seed, and reports for
each configuration the test importance-weighted log-likelihood (K = 1000) and the test
ELBO on the 1,000 test digits (binarized with the same fixed generator):

- vanilla: the ELBO with one reparameterized sample;
- iwae_k5, iwae_k50: the importance-weighted bound with K = 5 and K = 50;
- mixture_prior: a learned mixture of 10 Gaussians as p(z);
- kl_annealing: the ELBO with β rising linearly from 0 to 1 over the first 10 epochs;
- iwae_k50_annealed: both, the K = 50 importance-weighted bound with the same β warm-up
  (β weighs log p(z) − log q(z|x) inside each importance weight);
- vamp_prior: the VampPrior (Tomczak & Welling 2018), p(z) the mixture of q(z|u_k) over
  500 learned pseudo-inputs (the mnist_vamp recipe's model);
- iaf: an inverse autoregressive flow posterior (Kingma et al. 2016), two steps of a
  MADE of 320-320 units with a context of 32 (the mnist_iaf recipe's model);
- hierarchical: the 2-layer Ladder VAE, z1 32 / z2 16, the same 512-256 trunk and
  128-unit ladder steps (the mnist_hierarchical recipe's model);
- vamp_prior_annealed, iaf_annealed, hierarchical_annealed: the same three with the KL
  warm-up of kl_annealing, as their recipes train them; their gain is also reported
  over kl_annealing, the vanilla model with the same warm-up.

All configurations see the same data in the same order (tf.data reshuffled every epoch
from one seed) and train for the same number of epochs.

Run:
    python benchmarks/quality.py               # all configurations, about 15 minutes on 2 cores
    python benchmarks/quality.py --seeds 0 1 2    # three runs of each, with mean/min/max
    python benchmarks/quality.py --epochs 2 --only vanilla iwae_k5   # a quick look

Prints a table to stderr and one JSON line to stdout.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # machine.py

import keras  # noqa: E402
import numpy as np  # noqa: E402

import vae_zoo  # noqa: E402
from vae_zoo import data, evaluate  # noqa: E402
from vae_zoo.training.callbacks import KLAnnealing  # noqa: E402
from vae_zoo.models import DenseVAE  # noqa: E402
from vae_zoo.models.hierarchical import HierarchicalVAE  # noqa: E402
from machine import environment  # noqa: E402

VAMP = {"prior": {"name": "vamp", "num_components": 500}}
IAF = {"posterior": {"name": "iaf", "num_steps": 2, "hidden_units": [320, 320],
                     "context_size": 32}}
HIERARCHICAL = {"family": HierarchicalVAE, "latent_dims": (32, 16), "ladder_units": (128,)}
CONFIGS = {
    "vanilla": {},
    "iwae_k5": {"objective": "iwae", "num_samples": 5},
    "iwae_k50": {"objective": "iwae", "num_samples": 50},
    "mixture_prior": {"prior": {"name": "mixture_of_gaussians", "num_components": 10}},
    "kl_annealing": {},
    "iwae_k50_annealed": {"objective": "iwae", "num_samples": 50},
    "vamp_prior": VAMP,
    "iaf": IAF,
    "hierarchical": HIERARCHICAL,
    "vamp_prior_annealed": VAMP,
    "iaf_annealed": IAF,
    "hierarchical_annealed": HIERARCHICAL,
}
# β rises linearly from 0 over 10 epochs
ANNEALED = ("kl_annealing", "iwae_k50_annealed", "vamp_prior_annealed", "iaf_annealed",
            "hierarchical_annealed")


def binarized_mnist(seed=0):
    """The embedded MNIST sample, statically binarized: float32 {0, 1} [N, 28, 28, 1]."""
    arrays = data.load_embedded_mnist()
    rng = np.random.default_rng(seed)
    draw = lambda x: (rng.random(x.shape) < x / 255.0).astype("float32")[..., None]  # noqa: E731
    return draw(arrays["x_train"]), draw(arrays["x_test"])


def run(name, x_train, x_test, epochs, eval_samples, seed, train_eval=0):
    """Train configuration `name` and score it on the test digits (and, with
    `train_eval` > 0, on the first `train_eval` training digits: the generalization
    gap)."""
    keras.utils.set_random_seed(seed)
    config = dict(CONFIGS[name])
    family = config.pop("family", DenseVAE)
    if family is DenseVAE:
        config["latent_dim"] = 32
    model = family((28, 28, 1), hidden_units=(512, 256), seed=seed, **config)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    callbacks = [KLAnnealing("linear", warmup_epochs=min(10, epochs))] if name in ANNEALED else []
    train = data.make_dataset(x_train, batch_size=128, shuffle=True, seed=seed)
    start = time.perf_counter()
    model.fit(train, epochs=epochs, verbose=0, callbacks=callbacks, shuffle=False)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    summary = evaluate.summarize(model, x_test, num_samples=eval_samples, seed=seed)
    result = {
        "config": name,
        "test_log_likelihood": round(summary["log_likelihood"], 2),
        "test_elbo": round(summary["elbo"], 2),
        "test_kl": round(summary["kl"], 2),
        "active_units": summary["active_units"],
        "train_seconds": round(train_seconds, 1),
        "eval_seconds": round(time.perf_counter() - start, 1),
    }
    if train_eval:
        seen = evaluate.summarize(model, x_train[:train_eval], num_samples=eval_samples,
                                  seed=seed)
        gap = seen["log_likelihood"] - summary["log_likelihood"]
        result.update(train_log_likelihood=round(seen["log_likelihood"], 2),
                      train_elbo=round(seen["elbo"], 2), generalization_gap=round(gap, 2))
    return result


def summarize_seeds(results):
    """Per configuration over the seeds: mean, min and max test IW log-likelihood and
    gain over vanilla (the gain is taken seed by seed, against that seed's vanilla)."""
    by_seed = {}
    for r in results:
        by_seed.setdefault(r["seed"], {})[r["config"]] = r
    summary = {}
    for name in dict.fromkeys(r["config"] for r in results):
        runs = [seed_results[name] for seed_results in by_seed.values() if name in seed_results]
        values = [r["test_log_likelihood"] for r in runs]
        gains = [r["gain_over_vanilla"] for r in runs if "gain_over_vanilla" in r]
        annealed_gains = [r["gain_over_kl_annealing"] for r in runs
                          if "gain_over_kl_annealing" in r]
        summary[name] = {
            "seeds": [r["seed"] for r in runs],
            "mean_log_likelihood": round(sum(values) / len(values), 2),
            "min_log_likelihood": min(values),
            "max_log_likelihood": max(values),
        }
        if gains:
            summary[name].update(mean_gain=round(sum(gains) / len(gains), 2),
                                 min_gain=min(gains), max_gain=max(gains))
        if annealed_gains:
            summary[name].update(
                mean_gain_over_kl_annealing=round(sum(annealed_gains) / len(annealed_gains), 2),
                min_gain_over_kl_annealing=min(annealed_gains),
                max_gain_over_kl_annealing=max(annealed_gains))
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--eval-samples", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="one run of every configuration per seed (binarization, "
                             "initialization, data order and noise)")
    parser.add_argument("--only", nargs="+", choices=list(CONFIGS), default=list(CONFIGS),
                        help="the configurations to run (vanilla, and kl_annealing for the "
                             "annealed ones, give the gains)")
    parser.add_argument("--train-eval", type=int, default=0, metavar="N",
                        help="also score the first N training digits (IW log p(x), ELBO) "
                             "and report the train − test gap")
    parser.add_argument("--limit", type=int, default=None,
                        help="use only the first N train and N test digits (a smoke run)")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be >= 1")
    if args.train_eval < 0:
        parser.error("--train-eval must be >= 0")

    results = []
    for seed in args.seeds:
        x_train, x_test = binarized_mnist(seed)
        x_train, x_test = x_train[: args.limit], x_test[: args.limit]
        seed_results = []
        for name in args.only:
            r = dict(run(name, x_train, x_test, args.epochs, args.eval_samples, seed,
                         args.train_eval), seed=seed)
            seed_results.append(r)
            print(f"seed {seed}  {name:>21}  IW log p(x) {r['test_log_likelihood']:8.2f}  "
                  f"ELBO {r['test_elbo']:8.2f}  KL {r['test_kl']:6.2f}  "
                  f"active {r['active_units']:2d}  train {r['train_seconds']:6.1f} s"
                  + (f"  train IW log p(x) {r['train_log_likelihood']:8.2f}"
                     if "train_log_likelihood" in r else ""),
                  file=sys.stderr, flush=True)
        by_name = {r["config"]: r for r in seed_results}
        for r in seed_results:
            for baseline in ("vanilla", "kl_annealing"):
                if baseline in by_name and (baseline == "vanilla" or r["config"] in ANNEALED):
                    r[f"gain_over_{baseline}"] = round(
                        r["test_log_likelihood"] - by_name[baseline]["test_log_likelihood"], 2)
        results += seed_results
    summary = summarize_seeds(results)
    if len(args.seeds) > 1:
        for name, s in summary.items():
            gain = (f"  gain over vanilla {s['mean_gain']:+.2f} (from {s['min_gain']:+.2f} "
                    f"to {s['max_gain']:+.2f})") if "mean_gain" in s else ""
            if "mean_gain_over_kl_annealing" in s:
                gain += (f", over kl_annealing {s['mean_gain_over_kl_annealing']:+.2f} (from "
                         f"{s['min_gain_over_kl_annealing']:+.2f} to "
                         f"{s['max_gain_over_kl_annealing']:+.2f})")
            print(f"mean of {len(s['seeds'])} seeds  {name:>21}  IW log p(x) "
                  f"{s['mean_log_likelihood']:8.2f}{gain}", file=sys.stderr)
    print(json.dumps({
        "benchmark": "quality",
        "model": "dense_784-512-256_z32_bernoulli",
        "data": "mnist_sample statically binarized (numpy default_rng(seed), train then test)",
        "epochs": args.epochs,
        "batch_size": 128,
        "train_examples": int(len(x_train)),
        "eval_samples": args.eval_samples,
        "train_eval_examples": args.train_eval,
        "test_examples": int(len(x_test)),
        "seeds": args.seeds,
        "results": results,
        "summary": summary,
        "vae_zoo": vae_zoo.__version__,
        "keras": keras.__version__,
        **environment(),
    }))


if __name__ == "__main__":
    main()
