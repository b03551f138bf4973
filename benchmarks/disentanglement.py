"""Disentanglement of VAEs trained on the synthetic dSprites: MIG, DCI, FactorVAE, β-VAE, SAP.

Trains each model of `MODELS` from the `dsprites_conv` recipe (ConvVAE, four 4×4 convs
32-32-64-64 with stride 2, dense 256, latent 10, Bernoulli likelihood, Adam 5e-4,
batch 64) for the same number of steps on the synthetic dSprites (`dsprites_synthetic`,
drawn by code; the recipe's 50,000 training images, reshuffled each pass), then scores its posterior means E_q[z|x] with the five
metrics of `vae_zoo.disentanglement` (`evaluate_all`) and reports them beside the test
ELBO and KL of 1,000 test images:

- vae: the ELBO (β = 1);
- beta_vae: β = 4 (Higgins et al. 2017);
- beta_tc_vae: β-TC-VAE with β = 6 on the total correlation (Chen et al. 2018);
- factor_vae: FactorVAE with γ = 10 and a 6×1000 discriminator, the same conv body
  (Kim & Mnih 2018).

A model is one entry of `MODELS`: a name and the recipe overrides that make it (as
`vae-zoo train --set` takes them), or a function of the validated recipe returning an
uncompiled model; `--only` picks some.

Run:
    python benchmarks/disentanglement.py                       # 3,000 steps each
    python benchmarks/disentanglement.py --steps 300 --num-points 2000 --num-votes 500
    python benchmarks/disentanglement.py --set model.latent_dim=6 --only beta_vae

Prints a table to stderr and one JSON line to stdout.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import vae_zoo  # noqa: E402
from machine import environment  # noqa: E402
from vae_zoo import data, disentanglement, recipes  # noqa: E402
from vae_zoo.data import dsprites  # noqa: E402

RECIPE = "dsprites_conv"
# name → recipe overrides ("section.key=value", as --set), or a function of the
# validated recipe returning an uncompiled model.
MODELS = {
    "vae": ["model.beta=1.0"],
    "beta_vae": ["model.beta=4.0"],
    "beta_tc_vae": ["model.objective={name = 'beta_tc', beta = 6.0, dataset_size = 50000}"],
    "factor_vae": ["model.family='factor'", "model.body='conv'", "model.gamma=10.0"],
}
COLUMNS = ("mig", "dci_disentanglement", "dci_completeness", "dci_informativeness_test",
           "factor_vae_eval_accuracy", "beta_vae_eval_accuracy", "sap")


def build(name, overrides):
    """The validated recipe of model `name` (its `MODELS` overrides after `overrides`)
    and the model, compiled as the recipe says."""
    entry = MODELS[name]
    recipe = recipes.load(RECIPE, list(overrides) + (entry if isinstance(entry, list) else []))
    keras.utils.set_random_seed(recipe["train"]["seed"])
    model = recipes.build_model(recipe) if isinstance(entry, list) else entry(recipe)
    return recipe, recipes.compile_model(model, recipe)


def representation(model):
    """x `[B, H, W, C]` → the posterior mean E_q[z|x] `[B, latent_dim]`, compiled."""
    encode = tf.function(lambda x: model.encode(x).mean(), autograph=False,
                         input_signature=[tf.TensorSpec((None, *model.data_shape), tf.float32)])
    return lambda x: encode(tf.constant(x, tf.float32)).numpy()


def run(name, steps, overrides=(), num_points=10_000, num_votes=2_000, test_examples=1000):
    """Train model `name` for `steps` steps and score it: a dict of figures."""
    recipe, model = build(name, overrides)
    d = recipe["data"]
    train = data.load(d["dataset"], d["train_split"], batch_size=d["batch_size"], shuffle=True,
                      binarize=d["binarize"], seed=d["seed"], image_size=d["image_size"],
                      repeat=True)
    start = time.perf_counter()
    model.fit(train, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)
    train_seconds = time.perf_counter() - start
    x_test, _ = data.load_arrays(d["dataset"], f"{d['test_split']}[:{test_examples}]",
                                 d["image_size"])
    terms = {key: float(np.mean(value)) for key, value in model.elbo(x_test, seed=0).items()}
    ground_truth = dsprites.DSprites(image_size=recipe_image_size(recipe))
    start = time.perf_counter()
    scores = disentanglement.evaluate_all(representation(model), ground_truth,
                                          random_state=recipe["train"]["seed"],
                                          num_points=num_points, num_votes=num_votes)
    return {
        "model": name,
        "beta": recipe["model"]["beta"],
        "steps": steps,
        "test_elbo": round(terms["elbo"], 2),
        "test_kl": round(terms["kl"], 2),
        **{key: round(value, 4) for key, value in scores.items()},
        "train_seconds": round(train_seconds, 1),
        "metric_seconds": round(time.perf_counter() - start, 1),
    }


def recipe_image_size(recipe):
    return data.input_shape_of(recipe["data"]["dataset"], recipe["data"]["image_size"])[0]


def table(results):
    header = f"{'model':>12} {'ELBO':>9} {'KL':>7} " + " ".join(
        f"{column.replace('_eval_accuracy', '').replace('dci_', ''):>15}" for column in COLUMNS)
    rows = [f"{r['model']:>12} {r['test_elbo']:9.2f} {r['test_kl']:7.2f} "
            + " ".join(f"{r[column]:15.3f}" for column in COLUMNS) for r in results]
    return "\n".join([header, *rows])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3000, help="training steps per model")
    parser.add_argument("--only", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE",
                        help=f"override a value of the {RECIPE} recipe for every model")
    parser.add_argument("--num-points", type=int, default=10_000,
                        help="points for MIG, DCI and SAP (and the FactorVAE variances)")
    parser.add_argument("--num-votes", type=int, default=2_000,
                        help="training votes (FactorVAE) and points (β-VAE), each of 64")
    parser.add_argument("--test-examples", type=int, default=1000)
    args = parser.parse_args(argv)
    for flag in ("steps", "num_points", "num_votes", "test_examples"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1")

    results = []
    for name in args.only:
        results.append(run(name, args.steps, args.overrides, args.num_points, args.num_votes,
                           args.test_examples))
        r = results[-1]
        print(f"{name}: {args.steps} steps in {r['train_seconds']} s, metrics in "
              f"{r['metric_seconds']} s", file=sys.stderr, flush=True)
    print(table(results), file=sys.stderr)
    print(json.dumps({
        "benchmark": "disentanglement",
        "recipe": RECIPE,
        "overrides": args.overrides,
        "data": "dsprites_synthetic (seed 0), the recipe's training split; metrics on fresh "
                "draws from the whole grid",
        "steps": args.steps,
        "num_points": args.num_points,
        "num_votes": args.num_votes,
        "results": results,
        "vae_zoo": vae_zoo.__version__,
        **environment(),
    }))


if __name__ == "__main__":
    main()
