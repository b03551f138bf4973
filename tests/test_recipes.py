"""Recipes: every packaged recipe validates and builds; every mistake is one clear error."""

import json
import re
from pathlib import Path

import pytest

from vae_zoo import recipes
from vae_zoo.drivers.recipes import RecipeError


def test_packaged_recipes_validate_and_build():
    assert recipes.DEFAULT_RECIPE in recipes.available()
    for name in recipes.available():
        recipe = recipes.load(name)
        model = recipes.build_model(recipe)
        assert model.data_shape == recipes.input_shape(recipe)


def test_defaults_filled_and_overrides_parsed():
    recipe = recipes.load(
        "mnist_dense",
        [
            "model.latent_dim=4",
            "model.hidden_units=[16, 8]",
            "train.learning_rate=0.01",
            "data.binarize=none",  # bare word → string
            'model.likelihood={name = "gaussian", scale = 0.5}',
        ],
    )
    assert recipe["model"]["latent_dim"] == 4
    assert recipe["model"]["hidden_units"] == [16, 8]
    assert recipe["train"]["learning_rate"] == 0.01
    assert recipe["data"]["binarize"] == "none"
    assert recipe["evaluate"]["examples"] == 1000  # default
    model = recipes.build_model(recipe)
    assert model.latent_shape == (4,)
    assert model.likelihood.scale == 0.5


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.latnet_dim=3", r"unknown recipe key model\.latnet_dim \(did you mean 'latent_dim'\?\)"),
        ("trian.epochs=3", r"unknown recipe section \[trian\] \(did you mean 'train'\?\)"),
        ("train.epoch=3", r"train\.epoch \(did you mean 'epochs'\?\)"),
        ("train.epochs=abc", r"train\.epochs must be an integer, got str 'abc'"),
        ("train.epochs=0", r"train\.epochs must be >= 1"),
        ("train.epochs=true", r"train\.epochs must be an integer"),
        ("train.learning_rate=0", r"train\.learning_rate must be > 0"),
        ("model.beta=-1", r"model\.beta must be >= 0"),
        ("model.latent_dim=0", r"model\.latent_dim must be >= 1"),
        ("model.family=conv_nope", r"model\.family = 'conv_nope' is not one of"),
        ("model.likelihood=bernouli", r"model\.likelihood = 'bernouli' .*did you mean 'bernoulli'"),
        ("data.dataset=mnsit", r"data\.dataset = 'mnsit' is not one of.*did you mean 'mnist'"),
        ("data.binarize=always", r"data\.binarize = 'always' is not one of"),
        ("annealing.schedule=cosine", r"annealing\.schedule = 'cosine' is not one of"),
        ("latent_dim=3", r"not of the form section\.key=value"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(RecipeError, match=message):
        recipes.load("mnist_dense", [override])


@pytest.mark.parametrize(
    "recipe, override, message",
    [
        ("mnist_dense", "train.seed=-1", "train.seed must be >= 0, got -1"),
        ("mnist_dense", "data.seed=-1", "data.seed must be >= 0, got -1"),
        ("mnist_dense", "tune.seed=-1", "tune.seed must be >= 0, got -1"),
        ("mnist_dense", "train.seed=4294967296", "train.seed must be <= 4294967295, got 4294967296"),
        ("mnist_dense", "annealing.ratio=1.5", "annealing.ratio must be <= 1, got 1.5"),
        ("mnist_dense", "model.hidden_units=[64, -5]", "model.hidden_units[1] must be >= 1, got -5"),
        ("mnist_conv", "model.strides=[2, 0, 2]", "model.strides[1] must be >= 1, got 0"),
        ("mnist_dense", "model.num_samples=0", "model.num_samples must be >= 1, got 0"),
        ("mnist_discrete", "model.num_categories=1", "model.num_categories must be >= 2, got 1"),
        ("mnist_dense", "model.hidden_units=[256,128",
         "override 'model.hidden_units=[256,128': '[256,128' is not a valid TOML value "
         "(Unclosed array)"),
        ("mnist_dense", "model.likelihood={name = 'gaussian'",
         "override \"model.likelihood={name = 'gaussian'\": \"{name = 'gaussian'\" is not a "
         "valid TOML value (Unclosed inline table)"),
    ],
)
def test_out_of_range_values_are_refused_at_validation(recipe, override, message):
    """Values that passed validation and failed later (or never) without naming the key."""
    with pytest.raises(RecipeError, match=f"^{re.escape(message)}$"):
        recipes.load(recipe, [override])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["annealing.schedule=linear", "annealing.beta_min=5"],
         "annealing.beta_min = 5 must be <= model.beta = 1.0 (β anneals up from beta_min)"),
        (["annealing.schedule=cyclical", "model.beta=0.5", "annealing.beta_min=0.75"],
         "annealing.beta_min = 0.75 must be <= model.beta = 0.5 (β anneals up from beta_min)"),
        (["annealing.schedule=sigmoid", "annealing.beta_max=2", "annealing.beta_min=3"],
         "annealing.beta_min = 3 must be <= annealing.beta_max = 2 (β anneals up from beta_min)"),
        (["annealing.schedule=linear", "annealing.beta_min=1", "tune.beta=[0.5, 2.0]"],
         "annealing.beta_min = 1 must be <= the lowest tune.beta, 0.5 (β anneals up from beta_min)"),
    ],
)
def test_annealing_never_falls(overrides, message):
    with pytest.raises(RecipeError, match=f"^{re.escape(message)}$"):
        recipes.load("mnist_dense", overrides)


def test_annealing_from_beta_min_up_to_beta():
    from vae_zoo.schedules import BetaSchedule

    recipe = recipes.load("mnist_dense", ["annealing.schedule=linear", "annealing.beta_min=1",
                                          "annealing.warmup_epochs=1"])
    assert recipes.build_beta(recipe, steps_per_epoch=4)(0) == 1.0  # = model.beta: constant
    recipes.load("mnist_dense", ["annealing.schedule=none", "annealing.beta_min=5"])  # unused
    with pytest.raises(ValueError, match=r"^need 0 <= beta_min <= beta_max, got 5, 1$"):
        BetaSchedule("linear", beta_min=5, beta_max=1)


def test_recipe_arguments_are_packaged_names_or_toml_paths(tmp_path, monkeypatch):
    from vae_zoo import runs

    monkeypatch.chdir(tmp_path)
    Path("evil.toml").write_text("[model]\nfamily = 'dense'\nlatent_dim = 2\n")
    for argument in ("../../somewhere/evil", "./evil", str(tmp_path / "evil")):
        with pytest.raises(RecipeError, match=(
                f"^recipe {re.escape(argument)} is not a packaged recipe name; a path must "
                "name a .toml file$")):
            recipes.load(argument)
    with pytest.raises(RecipeError, match="^recipe not found: 'evil' .*mnist_dense"):
        recipes.load("evil")  # a file of that name in the current folder is no recipe
    for argument in ("evil.toml", "./evil.toml", tmp_path / "evil.toml"):
        recipe = recipes.load(argument)
        assert recipe["name"] == "evil"
        assert runs.default_output(recipe).parent == Path(runs.RUNS_DIR)


def test_a_recipe_file_that_is_not_utf8(tmp_path):
    latin = tmp_path / "latin.toml"
    latin.write_bytes("# café\n[model]\nfamily = 'dense'\nlatent_dim = 2\n".encode("latin-1"))
    message = f"recipe {latin} is not UTF-8 text (byte 5: invalid continuation byte)"
    with pytest.raises(RecipeError, match=f"^{re.escape(message)}$"):
        recipes.load(latin)


def test_bad_files(tmp_path):
    with pytest.raises(RecipeError, match="recipe file not found"):
        recipes.load(tmp_path / "missing.toml")
    with pytest.raises(RecipeError, match="recipe not found: 'nope'.*mnist_dense"):
        recipes.load("nope")
    broken = tmp_path / "broken.toml"
    broken.write_text("[model\nfamily = 'dense'")
    with pytest.raises(RecipeError, match="not valid TOML"):
        recipes.load(broken)
    no_family = tmp_path / "no_family.toml"
    no_family.write_text("[model]\nlatent_dim = 2\n")
    with pytest.raises(RecipeError, match="model.family must be set"):
        recipes.load(no_family)
    no_latent = tmp_path / "no_latent.toml"
    no_latent.write_text("[model]\nfamily = 'dense'\n")
    with pytest.raises(RecipeError, match="model.latent_dim must be set"):
        recipes.load(no_latent)


def test_annealing_section_builds_the_models_beta_schedule():
    """[annealing] becomes the model's BetaSchedule, epochs converted with the steps per
    epoch; no schedule (or no step count) keeps the constant [model] beta."""
    from vae_zoo.schedules import BetaSchedule

    recipe = recipes.load("mnist_dense", ["annealing.schedule=cyclical", "annealing.cycles=2",
                                          "train.epochs=3", "model.beta=0.5"])
    beta = recipes.build_beta(recipe, steps_per_epoch=10)
    assert isinstance(beta, BetaSchedule) and beta.schedule == "cyclical"
    assert beta.options["cycles"] == 2 and beta.options["total_steps"] == 30
    assert beta.beta_max == 0.5
    linear = recipes.build_beta(recipes.load("mnist_dense", ["annealing.warmup_epochs=2.5"]), 8)
    assert linear(0) == 0.0 and linear(10) == 0.5 and linear(20) == 1.0
    assert recipes.build_beta(recipes.load("mnist_dense", ["annealing.schedule=none"]), 10) == 1.0
    assert recipes.build_beta(recipe) == 0.5  # steps unknown
    model = recipes.build_model(recipe, steps_per_epoch=10)
    assert model.beta_schedule.get_config() == beta.get_config()


def test_conditional_recipe_gets_labelled_batches():
    recipe = recipes.load("mnist_cvae", ["data.batch_size=8"])
    assert recipes.is_conditional(recipe)
    train, test = recipes.build_datasets(recipe)
    for ds in (train, test):
        x, y = next(iter(ds))
        assert x.shape == (8, 28, 28, 1) and y.shape == (8,) and y.dtype == "int64"
    plain = recipes.load("mnist_dense", ["data.batch_size=8"])
    assert not recipes.is_conditional(plain)
    train, test = recipes.build_datasets(plain)
    assert next(iter(train)).shape == (8, 28, 28, 1)  # unconditional: no labels to train on
    x, y = next(iter(test))  # test labels, when the dataset has them, colour plots
    assert y.shape == (8,)
    x, y = next(iter(recipes.build_datasets(plain, with_labels=True)[0]))
    assert y.shape == (8,)


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.dataset=celeb_a", r"model\.family = 'conditional' needs class labels, and "
                                 r"data\.dataset = 'celeb_a' has none"),
        ("model.num_classes=1", r"model\.num_classes must be >= 2"),
        ("model.num_classes=ten", r"model\.num_classes must be an integer"),
        ("model.body=rnn", r"\[model\]: body must be one of"),
    ],
)
def test_bad_conditional_recipes(override, message):
    with pytest.raises(RecipeError, match=message):
        recipes.build_model(recipes.load("mnist_cvae", [override]))


# ------------------------------------------------------------------ the typed config


def test_a_recipe_is_a_frozen_typed_config_that_reads_as_its_mapping():
    import copy
    import dataclasses

    from vae_zoo.drivers import config
    from vae_zoo.drivers.schema import TUNABLE

    recipe = recipes.load("mnist_dense", ["train.epochs=3", "model.latent_dim=4"])
    assert isinstance(recipe, config.Recipe) and recipe.name == "mnist_dense"
    assert recipe.train.epochs == 3 and recipe["train"]["epochs"] == 3
    assert recipe.model.family == "dense" and recipe.model.arguments["latent_dim"] == 4
    assert recipe["model"]["latent_dim"] == 4 and "family" in recipe["model"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.train.epochs = 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.model.family = "conv"
    with pytest.raises(TypeError):
        recipe.model.arguments["latent_dim"] = 5
    # JSON (recipe.json) and back through the one validator: the same recipe.
    again = recipes.validate(json.loads(json.dumps(recipe.to_dict())))
    assert again == recipe and again.to_dict() == recipe.to_dict()
    assert copy.deepcopy(recipe) == recipe
    changed = recipe.replace(train=dataclasses.replace(recipe.train, epochs=7))
    assert changed.train.epochs == 7 and recipe.train.epochs == 3
    # The schema is the dataclasses: every section's keys with their Field.
    assert set(config.TuneConfig.schema()) >= set(TUNABLE)
    assert recipes.SCHEMA["data"]["batch_size"].check("data.batch_size", 8) == 8
