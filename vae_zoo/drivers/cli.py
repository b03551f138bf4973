"""`vae-zoo`: train, sample and evaluate from the command line.

    vae-zoo train [RECIPE] [--set section.key=value ...] [--output DIR] [--overwrite]
                  [--quiet] [--resume | --restart]
                  [--strategy auto|one_device|mirrored|multi_worker]
    vae-zoo tune [RECIPE] [--set section.key=value ...] [--output DIR] [--overwrite]
                 [--top 3] [--quiet] [--strategy auto|one_device|mirrored]
    vae-zoo sample RUN_OR_MODEL_OR_EXPORT [-n 64] [--label K] [--seed 0] [--output PNG]
    vae-zoo evaluate RUN_OR_MODEL [--samples 1000] [--examples 1000] [--seed 0]
                     [--output JSON]
    vae-zoo export RUN_OR_MODEL --name NAME [--version N] [--root saved_models]
    vae-zoo recipes
    vae-zoo list

`vae-zoo` alone prints the usage and exits with status 2, as argparse does for a
missing argument. `--help`, `recipes` (each packaged recipe with the first sentence of
its opening comment) and `list` (the registered families, likelihoods, posteriors,
priors and datasets) answer at once: only the commands that need TensorFlow import it.

Bad input (unknown recipe key, wrong type, missing file, corrupt model, a Keras model
that is not a vae_zoo VAE) and the machine's faults (an unwritable or full folder) print
one line `vae-zoo: error: ...` and exit with status 2; `VAE_ZOO_DEBUG=1` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from vae_zoo._quiet import import_tensorflow

EXIT_USAGE = 2
EVALUATION_FILE_RULE = (
    "Without --output the JSON goes beside the model: evaluation.json for a run folder "
    "or a model.keras file, <stem>-evaluation.json for another .keras file. A model "
    "that ships with vae_zoo (in its installed package or in the source checkout it "
    "runs from, run folders excepted) is evaluated without writing anything unless "
    "--output is given."
)
# `vae_zoo.distribute.STRATEGIES`, named here so that building the parser imports no
# TensorFlow (a test keeps the two equal).
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")
# Commands that need neither TensorFlow nor the models.
LIGHT_COMMANDS = ("recipes",)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own usage errors: also one line, status 2
        self.exit(EXIT_USAGE, f"vae-zoo: error: {message}\n")


def _recipe_arguments(parser, recipe_help, output_help, overwrite_help):
    """The arguments `train` and `tune` share: recipe, overrides, output folder."""
    parser.add_argument("recipe", nargs="?", default=None, help=recipe_help)
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE", help="override a recipe value (repeatable)")
    parser.add_argument("--output", help=output_help)
    parser.add_argument("--overwrite", action="store_true", help=overwrite_help)


def _parser():
    parser = _Parser(prog="vae-zoo", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="train a recipe and write a run folder")
    _recipe_arguments(
        train, "recipe name (see `vae-zoo recipes`) or .toml path; default mnist_dense",
        "run folder (default runs/<recipe>-<timestamp>)", "replace an existing run folder",
    )
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    kept = train.add_mutually_exclusive_group()
    kept.add_argument("--resume", action="store_true",
                      help="continue a kept checkpoint although training-only keys changed "
                           "(epochs, learning rate, annealing, evaluate, output)")
    kept.add_argument("--restart", action="store_true",
                      help="discard a kept checkpoint and start afresh")
    train.add_argument("--strategy", choices=STRATEGIES, default=None,
                       help="distribution strategy (sets train.strategy; default: the recipe's, auto)")

    tune = sub.add_parser("tune", help="search a recipe's [tune] space with keras-tuner")
    _recipe_arguments(
        tune, "recipe with a [tune] section; default tune_mnist_dense",
        "tuning folder (default runs/tune-<recipe>-<timestamp>)",
        "replace an existing tuning folder (distributed chief: start afresh)",
    )
    tune.add_argument("--top", type=int, default=3, help="best trials to print")
    tune.add_argument("--quiet", action="store_true", help="no progress bars")
    tune.add_argument("--strategy", choices=STRATEGIES[:3], default=None,
                      help="strategy of each trial (sets train.strategy)")

    sample = sub.add_parser("sample", help="write a PNG grid of prior samples")
    sample.add_argument("model", help="run folder, .keras file or exported SavedModel folder")
    sample.add_argument("-n", "--num", type=int, default=64, help="number of samples")
    sample.add_argument("--label", type=int, default=None,
                        help="class label, for a conditional model (default: one row per class)")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--output", help="PNG path (default: samples-<seed>.png beside the model)")

    evaluate = sub.add_parser(
        "evaluate", help="test ELBO and importance-weighted log-likelihood",
        epilog=EVALUATION_FILE_RULE,
    )
    evaluate.add_argument("model", help="run folder or .keras file")
    evaluate.add_argument("--samples", type=int, default=1000, help="importance samples K")
    evaluate.add_argument("--examples", type=int, default=1000, help="test examples")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--output", help="JSON path (default: beside the model, see below)")

    export = sub.add_parser("export", help="write a versioned SavedModel for TF Serving")
    export.add_argument("model", help="run folder or .keras file")
    export.add_argument("--name", required=True, help="model name: writes ROOT/NAME/VERSION/")
    export.add_argument("--version", type=int, default=None,
                        help="integer version (default: the next free one); never replaced")
    export.add_argument("--root", default="saved_models",
                        help="folder holding one base folder per model name (default saved_models)")

    sub.add_parser("recipes", help="list the packaged recipes, one line each")
    sub.add_parser("list", help="list the model families, likelihoods, posteriors, priors "
                                "and datasets a recipe can name")
    return parser


def _cmd_train(args):
    from vae_zoo.drivers import recipes, runs

    overrides = args.overrides + ([f"train.strategy={args.strategy}"] if args.strategy else [])
    recipe = recipes.load(args.recipe or recipes.DEFAULT_RECIPE, overrides)
    _print_strategy(recipe)
    output = runs.train(recipe, args.output, overwrite=args.overwrite,
                        verbose=0 if args.quiet else 1, resume=args.resume, restart=args.restart)
    if output is None:  # a multi-worker run's other workers
        print("worker done; the chief wrote the run folder")
        return
    print(f"run folder: {output}")
    metrics = json.loads((output / "metrics.json").read_text())
    for key in ("elbo", "log_likelihood", "bits_per_dim"):
        if key in metrics:
            print(f"  test {key}: {metrics[key]:.3f}")


def _cmd_sample(args):
    from vae_zoo import plots
    from vae_zoo.drivers import runs

    if args.num < 1:
        raise ValueError(f"-n must be >= 1, got {args.num}")
    from vae_zoo.drivers import export

    exported = export.find_export(args.model)
    if exported is not None:  # a SavedModel from `vae-zoo export`: no .keras needed
        return _sample_export(args, exported)
    present = export.versions(args.model) if Path(args.model).is_dir() else []
    if present and not (Path(args.model) / "model.keras").exists():
        raise FileNotFoundError(
            f"no saved_model.pb in {Path(args.model) / str(present[-1])} (incomplete or corrupt export)"
        )
    path = runs.resolve_model_path(args.model)
    model = runs.load_model(path)
    if not plots.is_image_shape(model.data_shape):
        raise ValueError(f"model input shape {model.data_shape} is not an image; nothing to draw")
    if args.label is not None and not model.conditional:
        raise ValueError(
            f"--label needs a conditional model; {path} holds a {type(model).__name__}"
        )
    images, columns, row_labels = plots.sample_rows(model, args.num, label=args.label, seed=args.seed)
    tag = "" if args.label is None else f"label{args.label}-"
    output = Path(args.output) if args.output else path.parent / f"samples-{tag}{args.seed}.png"
    _write_replacing(output, lambda partial: _save_samples(images, partial, columns, row_labels,
                                                           args.label))
    print(f"wrote {output}")


def _save_samples(images, path, columns, row_labels, label):
    """A sample grid: rows labelled with their classes, or titled with the one asked for."""
    from vae_zoo import plots

    title = None if label is None else f"class {label}"
    plots.save_grid(images, path, columns, row_labels=row_labels, title=title)


def _write_replacing(path, write):
    """Write `path` by `write(partial)` of a temporary file beside it renamed into place:
    a failed write (a full disk) leaves the file that was there as it was."""
    path = Path(path)
    partial = path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")
    try:
        write(partial)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _eval_data(model_path, model, examples, seed):
    """Test `(x, y, dataset name)` for a model: its run's recipe when there is one, else
    mnist_sample. y holds the labels of a conditional model, else None."""
    import numpy as np

    from vae_zoo import data
    from vae_zoo.drivers import recipes

    recipe_file = model_path.parent / "recipe.json"
    if recipe_file.is_file():
        recipe = recipes.validate(json.loads(recipe_file.read_text()))
    else:
        # the embedded digits as they are if the likelihood takes grey levels (k/255),
        # else binarized
        grey = np.float32([128 / 255])
        binarize = "none" if model.likelihood.support_problem(grey) is None else "static"
        recipe = recipes.validate({"data": {"binarize": binarize}, "model": {"family": "dense", "latent_dim": 1}})
    if recipes.input_shape(recipe) != tuple(model.data_shape):
        raise ValueError(
            f"model input shape {tuple(model.data_shape)} does not match dataset "
            f"{recipe.data.dataset!r} {recipes.input_shape(recipe)}"
        )
    _, test = recipes.build_datasets(recipe, with_labels=model.conditional)
    x, y = data.first_examples(test, examples)
    return x, y, recipe.data.dataset


def _shipped_folders() -> list[Path]:
    """The folders of vae_zoo itself: the package, and the source checkout it runs
    from (the folder above the package, when that holds pyproject.toml)."""
    package = Path(__file__).resolve().parents[1]
    checkout = package.parent
    return [package] + ([checkout] if (checkout / "pyproject.toml").is_file() else [])


def evaluation_path(model_path) -> Path | None:
    """Where `vae-zoo evaluate` writes its JSON without --output, None for nowhere
    (`EVALUATION_FILE_RULE`). `model_path` is a `.keras` file (a run folder's
    `model.keras`)."""
    model_path = Path(model_path)
    folder = model_path.parent
    name = "evaluation.json" if model_path.name == "model.keras" else f"{model_path.stem}-evaluation.json"
    in_run = (folder / "recipe.json").is_file()
    if not in_run and any(folder.resolve().is_relative_to(f) for f in _shipped_folders()):
        return None
    return folder / name


def _cmd_evaluate(args):
    from vae_zoo import evaluate
    from vae_zoo.drivers import runs

    if args.samples < 1 or args.examples < 1:
        raise ValueError("--samples and --examples must be >= 1")
    path = runs.resolve_model_path(args.model)
    model = runs.load_model(path)
    x, y, dataset = _eval_data(path, model, args.examples, args.seed)
    result = {"model": str(path), "dataset": dataset,
              **evaluate.summarize(model, x, num_samples=args.samples, seed=args.seed, y=y,
                                   verbose=1)}
    width = max(len(k) for k in result)
    for key, value in result.items():
        shown = f"{value:.4f}" if isinstance(value, float) else value
        print(f"{key:<{width}}  {shown}")
    output = Path(args.output) if args.output else evaluation_path(path)
    if output is None:
        print(f"nothing written: {path} ships with vae_zoo; give --output FILE to keep these figures")
        return
    text = json.dumps(result, indent=2) + "\n"
    _write_replacing(output, lambda partial: partial.write_text(text))
    print(f"wrote {output}")


def _sample_export(args, folder):
    from vae_zoo import plots
    from vae_zoo.drivers import export

    images, columns = export.sample_grid(folder, args.num, label=args.label, seed=args.seed)
    # columns are given only for one row per class
    row_labels = None if columns is None else plots.class_labels(len(images) // columns)
    tag = "" if args.label is None else f"label{args.label}-"
    default = f"samples-{folder.parent.name}-{folder.name}-{tag}{args.seed}.png"
    output = Path(args.output) if args.output else Path(default)  # not inside the export
    _write_replacing(output, lambda partial: _save_samples(images, partial, columns, row_labels,
                                                           args.label))
    print(f"wrote {output}")


def _cmd_export(args):
    from vae_zoo.drivers import export, runs

    if not args.name or Path(args.name).name != args.name or args.name in (".", ".."):
        raise ValueError(f"--name must be a plain folder name, got {args.name!r}")
    root = Path(args.root)
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"--root {root} is not a folder")
    model = runs.load_model(args.model)
    target = export.export_for_serving(model, Path(args.root) / args.name, version=args.version,
                                       progress=True)
    print(f"exported {target}")


def recipe_description(name) -> str:
    """The first line of a packaged recipe's opening comment ("" if it has none)."""
    import importlib.resources

    text = (importlib.resources.files("vae_zoo.recipe_files") / f"{name}.toml").read_text(
        encoding="utf-8")
    first = text.lstrip().splitlines()[0] if text.strip() else ""
    return first[1:].strip() if first.startswith("#") else ""


def _cmd_recipes(args):
    from vae_zoo.drivers import recipes

    names = recipes.available()
    width = max(map(len, names), default=0)
    for name in names:
        print(f"{name:<{width}}  {recipe_description(name)}".rstrip())


def _cmd_list(args):
    from vae_zoo import data
    from vae_zoo.heads import LIKELIHOODS, POSTERIORS, PRIORS
    from vae_zoo.models import MODELS
    from vae_zoo.schedules import SCHEDULES

    rows = {
        "families (model.family)": MODELS.names(),
        "likelihoods (model.likelihood)": LIKELIHOODS.names(),
        "posteriors (model.posterior)": POSTERIORS.names(),
        "priors (model.prior)": PRIORS.names(),
        "datasets (data.dataset)": list(data.names()),
        "annealing (annealing.schedule)": SCHEDULES.names(),
    }
    for title, names in rows.items():
        print(f"{title}:\n  " + ", ".join(names))


def _print_strategy(recipe):
    from vae_zoo.training import distribute

    strategy = distribute.strategy_for(recipe.train.strategy)
    replicas = distribute.num_replicas(strategy)
    if replicas > 1:
        per_replica = recipe.data.batch_size
        print(f"strategy: {distribute.describe(strategy)}; global batch "
              f"{per_replica * replicas} ({per_replica} per replica)", flush=True)


def _cmd_tune(args):
    from vae_zoo.drivers import recipes, tuning

    if args.top < 1:
        raise ValueError(f"--top must be >= 1, got {args.top}")
    overrides = args.overrides + ([f"train.strategy={args.strategy}"] if args.strategy else [])
    recipe = recipes.load(args.recipe or "tune_mnist_dense", overrides)
    _print_strategy(recipe)
    result = tuning.search(recipe, args.output, overwrite=args.overwrite,
                           verbose=0 if args.quiet else 1, top=args.top)
    if result["role"] == "worker":
        ran = ", ".join(r["trial_id"] for r in result["reported"]) or "none"
        print(f"worker done: ran trials {ran}; the chief writes the results")
        return
    completed = sum(t["status"] == "COMPLETED" for t in result["trials"])
    print(f"tuning folder: {result['output']} ({completed} of {len(result['trials'])} trials completed)")
    if not result["best"]:
        raise RuntimeError("no trial completed; see the messages above")
    print(f"best trials by {result['objective']} (higher is better):")
    for rank, trial in enumerate(result["best"], 1):
        print(f"  {rank}. trial {trial['trial_id']}: {result['objective']} = {trial['score']:.3f}  "
              + " ".join(trial["overrides"]))
    print(f"best model: {result['model']}")
    if result["export"]:
        print(f"exported for TF Serving: {result['export']}")
    words = [args.recipe or "tune_mnist_dense"]
    latest = {o.split("=", 1)[0]: o for o in args.overrides + result["best"][0]["overrides"]}
    for override in latest.values():
        words += ["--set", override]
    print("train the best: vae-zoo train " + " ".join(shlex.quote(w) for w in words))


COMMANDS = {"train": _cmd_train, "sample": _cmd_sample, "evaluate": _cmd_evaluate,
            "recipes": _cmd_recipes, "export": _cmd_export, "tune": _cmd_tune,
            "list": _cmd_list}


def _faults() -> tuple:
    """The exceptions that are bad input or the machine's state (a missing, unwritable or
    full folder), not a bug: each becomes one line (`_one_line`)."""
    if "tensorflow" not in sys.modules:  # a light command: no TensorFlow error to catch
        return (ValueError, OSError, RuntimeError)
    import tensorflow as tf

    return (ValueError, OSError, RuntimeError, tf.errors.ResourceExhaustedError,
            tf.errors.PermissionDeniedError)


def _one_line(error) -> str:
    """A fault's message on one line (`runs.describe_error`)."""
    from vae_zoo.drivers import runs

    return runs.describe_error(error)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _parser()
    if not argv:  # argparse's way with a missing argument: the usage, status 2
        parser.print_usage(sys.stderr)
        print("vae-zoo: error: give a command; vae-zoo --help describes them", file=sys.stderr)
        return EXIT_USAGE
    args = parser.parse_args(argv)
    if args.command not in LIGHT_COMMANDS:
        # Under TF_CONFIG the MultiWorkerMirroredStrategy must exist before the devices
        # initialize ("Collective ops must be configured at program startup").
        import_tensorflow(init_devices=not os.environ.get("TF_CONFIG"))
        import vae_zoo.models  # noqa: F401  (registers the models with Keras)
    try:
        COMMANDS[args.command](args)
        sys.stdout.flush()
    except BrokenPipeError:  # `vae-zoo recipes | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except _faults() as error:
        if os.environ.get("VAE_ZOO_DEBUG"):
            raise
        print(f"vae-zoo: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
