"""`vae-zoo`: train, sample and evaluate from the command line.

    vae-zoo train [RECIPE] [--set section.key=value ...] [--output DIR] [--overwrite]
    vae-zoo sample RUN_OR_MODEL [-n 64] [--label K] [--seed 0] [--output PNG]
    vae-zoo evaluate RUN_OR_MODEL [--samples K] [--examples N] [--output JSON]
    vae-zoo recipes

Bad input (unknown recipe key, wrong type, missing file, corrupt model) prints one
line `vae-zoo: error: ...` and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from vae_zoo._quiet import import_tensorflow

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own usage errors: also one line, status 2
        self.exit(EXIT_USAGE, f"vae-zoo: error: {message}\n")


def _parser():
    parser = _Parser(prog="vae-zoo", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="train a recipe and write a run folder")
    train.add_argument("recipe", nargs="?", default=None,
                       help="recipe name (see `vae-zoo recipes`) or .toml path; default mnist_dense")
    train.add_argument("--set", dest="overrides", action="append", default=[],
                       metavar="SECTION.KEY=VALUE", help="override a recipe value (repeatable)")
    train.add_argument("--output", help="run folder (default runs/<recipe>-<timestamp>)")
    train.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    train.add_argument("--quiet", action="store_true", help="no progress bar")

    sample = sub.add_parser("sample", help="write a PNG grid of prior samples")
    sample.add_argument("model", help="run folder or .keras file")
    sample.add_argument("-n", "--num", type=int, default=64, help="number of samples")
    sample.add_argument("--label", type=int, default=None,
                        help="class label, for a conditional model (default: one row per class)")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--output", help="PNG path (default: samples-<seed>.png beside the model)")

    evaluate = sub.add_parser("evaluate", help="test ELBO and importance-weighted log-likelihood")
    evaluate.add_argument("model", help="run folder or .keras file")
    evaluate.add_argument("--samples", type=int, default=1000, help="importance samples K")
    evaluate.add_argument("--examples", type=int, default=1000, help="test examples")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--output", help="JSON path (default: evaluation.json beside the model)")

    sub.add_parser("recipes", help="list the packaged recipes")
    return parser


def _cmd_train(args):
    from vae_zoo import recipes, runs

    recipe = recipes.load(args.recipe or recipes.DEFAULT_RECIPE, args.overrides)
    output = runs.train(recipe, args.output, overwrite=args.overwrite, verbose=0 if args.quiet else 1)
    print(f"run folder: {output}")
    metrics = json.loads((output / "metrics.json").read_text())
    for key in ("elbo", "log_likelihood", "bits_per_dim"):
        if key in metrics:
            print(f"  test {key}: {metrics[key]:.3f}")


def _cmd_sample(args):
    from vae_zoo import plots, runs

    if args.num < 1:
        raise ValueError(f"-n must be >= 1, got {args.num}")
    path = runs.resolve_model_path(args.model)
    model = runs.load_model(path)
    if not plots.is_image_shape(model.data_shape):
        raise ValueError(f"model input shape {model.data_shape} is not an image; nothing to draw")
    if args.label is not None and not model.conditional:
        raise ValueError(
            f"--label needs a conditional model; {path} holds a {type(model).__name__}"
        )
    images, columns = runs.sample_grid(model, args.num, label=args.label, seed=args.seed)
    tag = "" if args.label is None else f"label{args.label}-"
    output = Path(args.output) if args.output else path.parent / f"samples-{tag}{args.seed}.png"
    plots.save_grid(images, output, columns)
    print(f"wrote {output}")


def _eval_data(model_path, model, examples, seed):
    """Test `(x, y, dataset name)` for a model: its run's recipe when there is one, else
    mnist_sample. y holds the labels of a conditional model, else None."""
    from vae_zoo import heads, recipes, runs

    recipe_file = model_path.parent / "recipe.json"
    if recipe_file.is_file():
        recipe = recipes.validate(json.loads(recipe_file.read_text()))
    else:
        binarize = "static" if isinstance(model.likelihood, heads.BernoulliLikelihood) else "none"
        recipe = recipes.validate({"data": {"binarize": binarize}, "model": {"family": "dense", "latent_dim": 1}})
    if recipes.input_shape(recipe) != tuple(model.data_shape):
        raise ValueError(
            f"model input shape {tuple(model.data_shape)} does not match dataset "
            f"{recipe['data']['dataset']!r} {recipes.input_shape(recipe)}"
        )
    _, test = recipes.build_datasets(recipe, with_labels=model.conditional)
    x, y = runs.first_examples(test, examples)
    return x, y, recipe["data"]["dataset"]


def _cmd_evaluate(args):
    from vae_zoo import evaluate, runs

    if args.samples < 1 or args.examples < 1:
        raise ValueError("--samples and --examples must be >= 1")
    path = runs.resolve_model_path(args.model)
    model = runs.load_model(path)
    x, y, dataset = _eval_data(path, model, args.examples, args.seed)
    result = {"model": str(path), "dataset": dataset,
              **evaluate.summarize(model, x, num_samples=args.samples, seed=args.seed, y=y)}
    width = max(len(k) for k in result)
    for key, value in result.items():
        shown = f"{value:.4f}" if isinstance(value, float) else value
        print(f"{key:<{width}}  {shown}")
    output = Path(args.output) if args.output else path.parent / "evaluation.json"
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {output}")


def _cmd_recipes(args):
    from vae_zoo import recipes

    for name in recipes.available():
        print(name)


COMMANDS = {"train": _cmd_train, "sample": _cmd_sample, "evaluate": _cmd_evaluate,
            "recipes": _cmd_recipes}


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    import_tensorflow(init_devices=True)
    try:
        COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as error:
        if os.environ.get("VAE_ZOO_DEBUG"):
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"vae-zoo: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
