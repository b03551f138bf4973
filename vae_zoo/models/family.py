"""`Family`: the base of the registered model families, thin constructors over `VAE`.

A family declares its own constructor arguments only; the arguments every family
shares are `VAE`'s, taken as `**kwargs`, and the configuration is captured from the
constructor's arguments, so no family restates either. Its five parts come from
`compose`: a registered body (`vae_zoo.bodies`) and the heads and prior, each named by
a spec.
"""

from __future__ import annotations

import functools
import inspect

import numpy as np

from vae_zoo import bodies, heads
from vae_zoo.models.base import VAE
from vae_zoo.models.config_values import deserialize_config_value, serialize_config_value

# The bodies of a latent vector: the choices of families that take `body=` with the flat
# options of each (`body_of`).
VECTOR_BODIES = ("dense", "conv")


def check_latent_dim(latent_dim, minimum=1, why=""):
    """`latent_dim` as an int >= `minimum`; a one-line ValueError otherwise."""
    latent_dim = int(latent_dim)
    if latent_dim < minimum:
        raise ValueError(f"latent_dim must be >= {minimum}{why}, got {latent_dim}")
    return latent_dim


def body_of(name, arguments, choices=VECTOR_BODIES):
    """The body `name` (one of `choices`) with its options taken from a family's
    constructor `arguments` (its `locals()`: `hidden_units`, `filters`, ...)."""
    if name not in choices:
        raise ValueError(f"body must be one of {choices}, got {name!r}")
    return bodies.from_arguments(name, arguments)


def compose(input_shape, latent_shape, body, posterior, likelihood, prior):
    """The five parts of a model over z of `latent_shape`, as `VAE`'s keyword arguments.

    The posterior and likelihood heads and the prior are built from their specs (a
    name, `{"name": ..., **options}` or an instance); the body (a spec or a `Body`)
    builds the encoder and decoder for the parameter shapes the heads ask for. The
    input shape is checked against the body.
    """
    input_shape = bodies.check_input_shape(input_shape)
    body = bodies.BODIES.build(body)
    body.check(input_shape)
    posterior = heads.POSTERIORS.build(posterior)
    likelihood = heads.LIKELIHOODS.build(likelihood)
    prior = heads.PRIORS.build(prior, latent_shape=tuple(latent_shape))
    return dict(
        encoder=body.encoder(input_shape, posterior.params_shape(latent_shape)),
        decoder=body.decoder(input_shape, latent_shape, likelihood.params_shape(input_shape)),
        posterior=posterior, likelihood=likelihood, prior=prior, input_shape=input_shape,
    )

# The arguments of `VAE` every family takes as they are (its `**kwargs`), and the Keras
# layer arguments (`name`, ...) that `get_config` records on its own.
SHARED_ARGUMENTS = ("beta", "analytic_kl", "objective", "num_samples", "seed")
_KERAS_ARGUMENTS = ("name", "trainable", "dtype")


def _plain(value):
    """A constructor argument as config data: lists as tuples, NumPy scalars as Python."""
    if isinstance(value, list):
        return tuple(_plain(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _capturing(cls, init):
    """Wrap a family's `__init__` so the instance records its arguments as its config.

    Only the class being built records (not the families its constructor delegates
    to), after its constructor has run.
    """
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        outermost = type(self).__init__ is wrapper
        if outermost:
            unexpected = set(kwargs) - set(signature.parameters) - set(cls.shared_arguments) \
                - set(_KERAS_ARGUMENTS)
            if unexpected:
                raise TypeError(f"{cls.__name__} got an unexpected argument {sorted(unexpected)[0]!r}")
        init(self, *args, **kwargs)
        if outermost:
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            config = dict(cls.shared_defaults())
            for name, value in bound.arguments.items():
                kind = signature.parameters[name].kind
                if kind is inspect.Parameter.VAR_KEYWORD:
                    config.update(value)
                elif name != "self" and kind is not inspect.Parameter.VAR_POSITIONAL:
                    config[name] = value
            config = {key: _plain(value) for key, value in config.items()
                      if key not in _KERAS_ARGUMENTS}
            object.__setattr__(self, "family_config", config)

    return wrapper


class Family(VAE):
    """Base of the registered families (`DenseVAE`, `ConvVAE`, ...).

    A family builds the five parts from a few constructor arguments and passes them to
    `VAE`, with the shared arguments it takes as `**kwargs` (`shared_arguments`; a
    family with a fixed objective takes fewer):

    - beta: float >= 0, or a `vae_zoo.schedules.BetaSchedule` (see `VAE`);
    - analytic_kl: the closed-form KL when TFP registers one;
    - objective, num_samples: a name or spec of
      `vae_zoo.models.training_objectives.OBJECTIVES` ("elbo", "iwae" with K =
      num_samples, "beta_tc", ...);
    - seed: int or None, seeds the model's noise;
    - and Keras' layer arguments (name, ...).

    Its configuration is captured from its constructor's arguments (`family_config`,
    defaults filled in): `get_config` echoes them and `from_config` is `cls(**config)`,
    so a recipe, a `.keras` file and a SavedModel describe the same model.
    """

    shared_arguments = SHARED_ARGUMENTS
    # Small constructor arguments that build a working model of the family (8×8×1
    # images); the shared family tests build every registered family from them.
    example_arguments: dict = {}
    family_config: dict

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _capturing(cls, cls.__dict__["__init__"])

    @classmethod
    def shared_defaults(cls) -> dict:
        """The shared arguments this family takes, with `VAE`'s defaults."""
        parameters = inspect.signature(VAE.__init__).parameters
        return {name: parameters[name].default for name in cls.shared_arguments}

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable,
                **{key: serialize_config_value(value) for key, value in self.family_config.items()}}

    @classmethod
    def from_config(cls, config):
        return cls(**{key: deserialize_config_value(value) for key, value in config.items()})
