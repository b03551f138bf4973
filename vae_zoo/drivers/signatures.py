"""The serving signatures of a VAE: tensors in, tensors out, every input checked.

Distributions do not cross the SavedModel boundary: every signature takes and returns
tensors, each input with a fixed shape (a leading batch dimension of None for data) and
dtype. With `x` float32 `[B, *input_shape]`, `z` float32 `[B, *latent_shape]`:

- `encode(x)` → `mean`, `stddev` of q(z|x), `[B, *latent_shape]` each;
- `decode(z)` → `mean` of p(x|z) `[B, *input_shape]` and the likelihood's own
  parameters (the head's `parameter_names`);
- `reconstruct(x)` → `reconstruction` `[B, *input_shape]`, `model.reconstruct(x)`;
- `sample(num_samples, seed)` (int32 scalars) → `samples` `[num_samples, *input_shape]`,
  `model.sample(num_samples, seed=seed)`;
- `log_likelihood(x, num_samples, seed)` → `log_likelihood` `[B]`, the importance-weighted
  bound of `evaluate.log_likelihood(model, x, num_samples, seed=seed)`;
- `serving_default`: the `reconstruct` signature.

Conditional models take their condition in every signature: `label` int32 `[B]` (class
labels; `[]` in `sample`, one label for all samples) or, for a model conditioned on
vectors, `condition` float32 `[B, condition_dim]` (`[condition_dim]` in `sample`).

Every input is checked inside the graph, so a bad request is an `INVALID_ARGUMENT`
error for that request only, whose message names the problem in one line
(`assertion failed: [labels must lie in [0, 10), got label] [12]`): shapes
(`tf.ensure_shape`), finite x, z and condition vectors, x in the likelihood's support
where a density is asked for (`log_likelihood`), labels that are class numbers, one
per example, and `1 <= num_samples <= max_samples`. The signatures are plain (not
XLA) graphs, so these assertions run. A wrong dtype is refused before the graph runs.
"""

from __future__ import annotations

import time

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from vae_zoo import objectives
from vae_zoo.heads.base import check_assertions, finite_check

DEFAULT_SIGNATURE = "reconstruct"  # `serving_default` is this signature


def condition_kind(model):
    """None, ("label", num_classes) or ("condition", condition_dim)."""
    if not model.conditional:
        return None
    if getattr(model, "num_classes", None):
        return "label", int(model.num_classes)
    if getattr(model, "condition_dim", None):
        return "condition", int(model.condition_dim)
    raise ValueError(
        f"cannot export conditional {type(model).__name__}: it has neither num_classes "
        "nor condition_dim"
    )


def likelihood_parameters(p, names=None):
    """The parameters of a likelihood p(x|z), each with the batch shape `[B, ...]`.

    `names` (a head's `parameter_names`) selects and orders them; default: all that
    qualify. Named as in TFP (Bernoulli `logits`, Normal `loc` and `scale`, ...). Parameters
    shared by the batch (a fixed or learned scale) are broadcast to it, so every output
    of a signature has the same leading batch dimension (TF Serving's row format needs
    that); constants that are not per element (the 256 outcomes of `categorical_256`)
    are left out.
    """
    dist = p
    while isinstance(dist, tfp.distributions.Independent):
        dist = dist.distribution
    batch_shape = dist.batch_shape_tensor()
    properties = type(dist).parameter_properties()
    found = {}
    for name, value in dist.parameters.items():
        prop = properties.get(name)
        if value is None or prop is None or not isinstance(prop.event_ndims, int):
            continue
        value = tf.cast(tf.convert_to_tensor(value), tf.float32)
        event = tf.shape(value)[tf.rank(value) - prop.event_ndims:]
        found[name] = tf.broadcast_to(value, tf.concat([batch_shape, event], 0))
        if value.shape.rank is not None:  # keep the static shape in the signature
            found[name].set_shape(dist.batch_shape.concatenate(
                value.shape[value.shape.rank - prop.event_ndims:]
            ))
    if names is None:
        return found
    return {name: found[name] for name in names}


def _checked(t, spec):
    """`t` with its shape checked at run time (graph inputs are fed without a check)."""
    return tf.ensure_shape(t, spec.shape, name=f"check_{spec.name}")


def _with_checks(value, checks):
    """`value`, passed on after the checks' assertions."""
    with tf.control_dependencies(check_assertions(checks)):
        return tf.identity(value)


def _count_check(n, max_samples):
    return (n < 1) | (n > max_samples), (f"num_samples must be between 1 and {max_samples}, got", n)


def _endpoints(model, max_samples):
    """`[(name, fn, input_signature)]` for every signature, `reconstruct` first."""
    x_spec = tf.TensorSpec((None, *model.data_shape), tf.float32, name="x")
    z_spec = tf.TensorSpec((None, *model.latent_shape), tf.float32, name="z")
    count_spec = tf.TensorSpec((), tf.int32, name="num_samples")
    seed_spec = tf.TensorSpec((), tf.int32, name="seed")
    kind = condition_kind(model)
    if kind is None:
        batch_y, one_y = [], []
    elif kind[0] == "label":
        batch_y = [tf.TensorSpec((None,), tf.int32, name="label")]
        one_y = [tf.TensorSpec((), tf.int32, name="label")]
    else:
        batch_y = [tf.TensorSpec((None, kind[1]), tf.float32, name="condition")]
        one_y = [tf.TensorSpec((kind[1],), tf.float32, name="condition")]

    # Each function takes the condition, if the model has one, as a last argument
    # (`*condition`: absent from an unconditional model's signatures).

    # The model checks the condition itself (labels are class numbers, one per example).

    def data(x, condition, spec=x_spec, checks=()):
        """The inputs x (or z) and y, shapes checked, x finite, and the `checks` passed."""
        x = _with_checks(_checked(x, spec), [finite_check(x, spec.name), *checks])
        return x, (_checked(condition[0], batch_y[0]) if condition else None)

    def reconstruct(x, *condition):
        x, y = data(x, condition)
        return {"reconstruction": model.reconstruct(x, y)}

    def encode(x, *condition):
        x, y = data(x, condition)
        q = model.encode(x, y)
        return {"mean": q.mean(), "stddev": q.stddev()}  # [B, *latent_shape] each

    def decode(z, *condition):
        z, y = data(z, condition, z_spec)
        p = model.decode(z, y)
        return {"mean": p.mean(), **likelihood_parameters(p, model.likelihood.parameter_names)}

    def sample(num_samples, seed, *condition):
        n = _with_checks(num_samples, [_count_check(num_samples, max_samples)])
        seed_pair = tf.stack([seed, 0])  # as `model.sample(n, seed=int)` draws
        if not condition:
            return {"samples": model.sample(n, seed=seed_pair)}
        y = _checked(condition[0], one_y[0])
        return {"samples": model.sample(n, y=y, seed=seed_pair)}

    elements = model.likelihood_params_per_example

    def log_likelihood(x, num_samples, seed, *condition):
        # `evaluate.log_likelihood(model, x, num_samples, seed=seed)` for one batch (up
        # to 100 examples: the same chunks and seeds), one chunk of importance samples
        # at a time, so memory is bounded whatever num_samples is.
        support = model.likelihood.support_check(x)  # a density is asked for: x in its support
        k = _with_checks(num_samples, [_count_check(num_samples, max_samples)])
        x, y = data(x, condition, checks=[support] if support else [])
        batch = tf.shape(x)[0]
        bound = objectives.chunked_iw_bound(
            model.importance_weights_of(x, y), batch, k,
            objectives.iw_chunk_size(batch, elements), seed,
        )
        return {"log_likelihood": bound}  # [B]

    return [
        ("reconstruct", reconstruct, [x_spec, *batch_y]),
        ("encode", encode, [x_spec, *batch_y]),
        ("decode", decode, [z_spec, *batch_y]),
        ("sample", sample, [count_spec, seed_spec, *one_y]),
        ("log_likelihood", log_likelihood, [x_spec, count_spec, seed_spec, *batch_y]),
    ]


def archive(model, max_samples):
    """`(archive, {name: (tf.function, input_signature)})`."""
    # No `archive.track(model)`: the endpoints' variables are tracked anyway, and with
    # the TensorFlow backend tracking the model stores every weight twice (once as the
    # Keras variable, once as its tf.Variable), doubling the SavedModel's size.
    archive = keras.export.ExportArchive()
    functions = {}
    for name, fn, signature in _endpoints(model, max_samples):
        functions[name] = (archive.add_endpoint(name, fn, input_signature=signature), signature)
    return archive, functions


def _describe(spec):
    return {"dtype": spec.dtype.name, "shape": [None if d is None else int(d) for d in spec.shape]}


def describe_export(model, functions, max_samples):
    kind = condition_kind(model)
    signatures = {}
    for name, (function, input_signature) in functions.items():
        outputs = function.get_concrete_function().structured_outputs  # traced already
        signatures[name] = {
            "inputs": {spec.name: _describe(spec) for spec in input_signature},
            "outputs": {key: _describe(tf.TensorSpec.from_tensor(t)) for key, t in outputs.items()},
        }
    signatures["serving_default"] = dict(signatures[DEFAULT_SIGNATURE], same_as=DEFAULT_SIGNATURE)
    return {
        "format": "vae_zoo.export/1",
        "family": getattr(type(model), "registry_name", None),
        "class": f"{type(model).__module__}.{type(model).__name__}",
        "config": model.get_config(),
        "input_shape": list(model.data_shape),
        "latent_shape": list(model.latent_shape),
        "conditional": bool(model.conditional),
        "condition": None if kind is None else {"name": kind[0], "size": kind[1]},
        "max_samples": max_samples,
        "signatures": signatures,
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }


