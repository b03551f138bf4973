"""Export a VAE as a TensorFlow SavedModel for TF Serving: signatures, versioned folders.

`export_for_serving(model, base_dir)` writes `base_dir/<version>/`, the layout
`tensorflow_model_server --model_base_path=base_dir` watches (it serves the highest
integer version). The SavedModel is written by `keras.export.ExportArchive` into a
hidden staging folder in `base_dir` and renamed to its version number only when
complete, so a crash never leaves a half-written version (TF Serving ignores names that
are not integers) and an existing version is never touched.

Distributions do not cross the SavedModel boundary: every signature takes and returns
tensors, each input with a fixed shape (a leading batch dimension of None for data) and
dtype. With `x` float32 `[B, *input_shape]`, `z` float32 `[B, *latent_shape]`:

- `encode(x)` → `mean`, `stddev` of q(z|x), `[B, *latent_shape]` each;
- `decode(z)` → `mean` of p(x|z) `[B, *input_shape]` and the likelihood's own
  parameters (`LIKELIHOOD_PARAMETERS`);
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
error for that request only: shapes (`tf.ensure_shape`), the condition's batch size,
label range, and `1 <= num_samples <= max_samples`. A wrong dtype is refused before
the graph runs.

`assets.extra/vae_zoo.json` (an extra file TF Serving ignores) records the family,
config, shapes and signatures; `find_export` and `sample_grid` read it so that
`vae-zoo sample saved_models/<name>` works without the `.keras` file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import time
import uuid
from pathlib import Path

import numpy as np

SIGNATURES = ("reconstruct", "encode", "decode", "sample", "log_likelihood")
DEFAULT_SIGNATURE = "reconstruct"  # `serving_default` is this signature
METADATA_PATH = Path("assets.extra") / "vae_zoo.json"
STAGING_PREFIX = ".export-"
DEFAULT_MAX_SAMPLES = 10_000
# What `decode` returns beside `mean`, per likelihood head (each `[B, *input_shape]`,
# with a trailing axis of K components or 256 classes where the table says so).
LIKELIHOOD_PARAMETERS = {
    "bernoulli": ("logits",),
    "gaussian": ("loc", "scale"),
    "gaussian_learned_scale": ("loc", "scale"),
    "gaussian_per_pixel": ("loc", "scale"),
    "categorical_256": ("logits",),  # [..., 256] over the values k/255
    "discretized_logistic_mixture": ("logits", "loc", "scale"),  # [..., K] each
}


# ---------------------------------------------------------------------- versions


def versions(base_dir) -> list[int]:
    """The version numbers present in `base_dir` (folders named by an integer), sorted."""
    base_dir = Path(base_dir)
    if not base_dir.is_dir():
        return []
    return sorted(int(p.name) for p in base_dir.iterdir() if p.is_dir() and p.name.isdigit())


def next_version(base_dir) -> int:
    """One more than the highest version in `base_dir` (1 for none)."""
    present = versions(base_dir)
    return present[-1] + 1 if present else 1


def _check_version(version) -> int:
    if isinstance(version, bool) or not isinstance(version, (int, np.integer)) or version < 1:
        raise ValueError(f"version must be a positive integer, got {version!r}")
    return int(version)


def find_export(path) -> Path | None:
    """The SavedModel version folder `path` names, or None if it names none.

    `path` is a version folder (holding `saved_model.pb`) or a model's base folder,
    whose highest version is taken, as TF Serving does.
    """
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return path
    present = versions(path)
    if present and (path / str(present[-1]) / "saved_model.pb").is_file():
        return path / str(present[-1])
    return None


def metadata(export_dir) -> dict:
    """The `assets.extra/vae_zoo.json` record of an export."""
    file = Path(export_dir) / METADATA_PATH
    if not file.is_file():
        raise ValueError(f"{export_dir} is a SavedModel but not a vae_zoo export (no {METADATA_PATH})")
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except ValueError:
        raise ValueError(f"cannot read {file}: not valid JSON (corrupt export)") from None


def load_saved_model(export_dir):
    """`tf.saved_model.load`, with a one-line error for a corrupt or unreadable one."""
    import tensorflow as tf

    try:
        return tf.saved_model.load(str(export_dir))
    except Exception as error:  # DecodeError, OSError, NotFoundError, ...
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"cannot load SavedModel {export_dir}: {first}") from None


def sample_grid(export_dir, n, label=None, seed=0):
    """Prior samples from an export's `sample` signature, as `vae-zoo sample` draws them.

    `export_dir` is a version folder or a model's base folder (its highest version).
    Like `vae_zoo.runs.sample_grid`, but from the SavedModel alone (no `.keras` file):
    n samples; n samples of `label`; or, for a class-conditional model without
    `label`, one row of `max(1, n // num_classes)` per class (every row drawn with the
    same seed).

    Returns:
        `(images [N, *input_shape] numpy, columns or None)`.
    """
    import tensorflow as tf

    from vae_zoo import plots

    found = find_export(export_dir)
    if found is None:
        raise FileNotFoundError(f"no SavedModel at {export_dir}")
    export_dir = found
    info = metadata(export_dir)
    if not plots.is_image_shape(info["input_shape"]):
        raise ValueError(
            f"model input shape {tuple(info['input_shape'])} is not an image; nothing to draw"
        )
    condition = info["condition"]
    if label is not None and condition is None:
        raise ValueError(f"--label needs a conditional model; {export_dir} holds a {info['family']} model")
    if condition is not None and condition["name"] != "label":
        raise ValueError(
            f"{export_dir} is conditioned on vectors, not class labels; call its sample "
            "signature with a condition"
        )
    if n > info["max_samples"]:
        raise ValueError(f"this export draws at most {info['max_samples']} samples, got {n}")
    if condition is not None and label is not None and not 0 <= label < condition["size"]:
        raise ValueError(f"labels must lie in [0, {condition['size']}), got label {label}")
    sample = load_saved_model(export_dir).signatures["sample"]

    def draw(count, **y):
        out = sample(num_samples=tf.constant(count, tf.int32), seed=tf.constant(seed, tf.int32), **y)
        return out["samples"].numpy()

    if condition is None:
        return draw(n), None
    if label is not None:
        return draw(n, label=tf.constant(label, tf.int32)), None
    per_class = max(1, n // condition["size"])
    rows = [draw(per_class, label=tf.constant(k, tf.int32)) for k in range(condition["size"])]
    return np.concatenate(rows), per_class


# ---------------------------------------------------------------------- signatures


def _condition_kind(model):
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


def likelihood_parameters(p):
    """The parameters of a likelihood p(x|z), each with the batch shape `[B, ...]`.

    Named as in TFP (Bernoulli `logits`, Normal `loc` and `scale`, ...). Parameters
    shared by the batch (a fixed or learned scale) are broadcast to it, so every output
    of a signature has the same leading batch dimension (TF Serving's row format needs
    that); constants that are not per element (the 256 outcomes of `categorical_256`)
    are left out.
    """
    import tensorflow as tf
    import tensorflow_probability as tfp

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
    return found


def _checked(t, spec):
    """`t` with its shape checked at run time (graph inputs are fed without a check)."""
    import tensorflow as tf

    return tf.ensure_shape(t, spec.shape, name=f"check_{spec.name}")


def _with_checks(value, checks):
    import tensorflow as tf

    with tf.control_dependencies(checks):
        return tf.identity(value)


def _checked_count(n, max_samples):
    import tensorflow as tf

    message = f"num_samples must be between 1 and {max_samples}"
    return _with_checks(n, [
        tf.debugging.assert_greater_equal(n, 1, message=message),
        tf.debugging.assert_less_equal(n, max_samples, message=message),
    ])


def _same_batch(y, x, name):
    import tensorflow as tf

    return _with_checks(y, [tf.debugging.assert_equal(
        tf.shape(y)[0], tf.shape(x)[0],
        message=f"{name} must have one row per example (the same batch size as the data)",
    )])


def _endpoints(model, max_samples):
    """`[(name, fn, input_signature)]` for every signature, `reconstruct` first."""
    import tensorflow as tf

    from vae_zoo import evaluate

    x_spec = tf.TensorSpec((None, *model.data_shape), tf.float32, name="x")
    z_spec = tf.TensorSpec((None, *model.latent_shape), tf.float32, name="z")
    count_spec = tf.TensorSpec((), tf.int32, name="num_samples")
    seed_spec = tf.TensorSpec((), tf.int32, name="seed")
    kind = _condition_kind(model)
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

    def data(x, condition, spec=x_spec):
        x = _checked(x, spec)
        if not condition:
            return x, None
        return x, _same_batch(_checked(condition[0], batch_y[0]), x, batch_y[0].name)

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
        return {"mean": p.mean(), **likelihood_parameters(p)}

    def sample(num_samples, seed, *condition):
        n = _checked_count(num_samples, max_samples)
        seed_pair = tf.stack([seed, 0])  # as `model.sample(n, seed=int)` draws
        if not condition:
            return {"samples": model.sample(n, seed=seed_pair)}
        y = _checked(condition[0], one_y[0])
        return {"samples": model.sample(n, y=y, seed=seed_pair)}

    elements = math.prod(model.likelihood.params_shape(model.data_shape))

    def log_likelihood(x, num_samples, seed, *condition):
        # `evaluate.log_likelihood(model, x, num_samples, seed=seed)` for one batch (up
        # to 100 examples: the same chunks and seeds), in a loop over chunks of
        # importance samples, so memory is bounded whatever num_samples is.
        x, y = data(x, condition)
        k = _checked_count(num_samples, max_samples)
        batch = tf.shape(x)[0]
        chunk = tf.minimum(
            tf.maximum(1, evaluate.DEFAULT_MAX_ELEMENTS // (tf.maximum(batch, 1) * elements)), k
        )

        def body(i, running):
            size = tf.minimum(chunk, k - i * chunk)
            weights = model.log_importance_weights(x, size, y=y, seed=tf.stack([seed, i]))
            total = tf.reduce_logsumexp(tf.stack([running, tf.reduce_logsumexp(weights, 0)]), 0)
            return i + 1, total

        _, total = tf.while_loop(
            lambda i, _: i * chunk < k,
            body,
            (tf.constant(0), tf.fill([batch], tf.constant(-np.inf, tf.float32))),
        )
        log_k = tf.cast(tf.math.log(tf.cast(k, tf.float64)), tf.float32)
        return {"log_likelihood": total - log_k}  # [B]

    return [
        ("reconstruct", reconstruct, [x_spec, *batch_y]),
        ("encode", encode, [x_spec, *batch_y]),
        ("decode", decode, [z_spec, *batch_y]),
        ("sample", sample, [count_spec, seed_spec, *one_y]),
        ("log_likelihood", log_likelihood, [x_spec, count_spec, seed_spec, *batch_y]),
    ]


@contextlib.contextmanager
def _graph_assertions(model):
    """Trace with `jit_compile` off: label-range assertions are kept (XLA drops them)."""
    previous = getattr(model, "jit_compile", False)
    model.jit_compile = False
    try:
        yield
    finally:
        model.jit_compile = previous


def serving_archive(model, max_samples=DEFAULT_MAX_SAMPLES):
    """A `keras.export.ExportArchive` holding the model's serving signatures.

    `write_out(path)` on it writes the SavedModel (`serving_default` is the first
    endpoint, `reconstruct`); `export_for_serving` does that with versioned folders and
    an atomic rename.
    """
    return _archive(model, int(max_samples))[0]


def _archive(model, max_samples):
    """`(archive, {name: (tf.function, input_signature)})`."""
    import keras

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


def _metadata(model, functions, max_samples):
    import keras
    import tensorflow as tf

    kind = _condition_kind(model)
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


# ---------------------------------------------------------------------- writing


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _remove_stale_staging(base_dir):
    """Delete staging folders left by exports whose process died (a hard crash)."""
    for path in base_dir.glob(f"{STAGING_PREFIX}*"):
        pid = path.name[len(STAGING_PREFIX):].split("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _fsync_tree(root):
    """Flush every file of `root` to disk, so the renamed version is complete on disk."""
    for folder, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _publish(staging, base_dir, version):
    """Rename `staging` to its version folder; never replaces an existing version."""
    number = next_version(base_dir) if version is None else version
    while True:
        target = base_dir / str(number)
        if not target.exists():
            try:
                os.rename(staging, target)  # fails if another export made a non-empty target
            except OSError as error:
                if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
            else:
                _fsync_folder(base_dir)  # make the rename itself durable
                return target
        if version is not None:
            raise FileExistsError(f"version {target} already exists; versions are never replaced")
        number += 1  # raced with another export: take the next number


def _fsync_folder(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def export_for_serving(model, base_dir, version=None, max_samples=DEFAULT_MAX_SAMPLES,
                       verbose=False) -> Path:
    """Write the model as SavedModel version `base_dir/<version>/` for TF Serving.

    Args:
        model: a `vae_zoo.models.VAE` (any family).
        base_dir: the model's base folder (`saved_models/<name>`), what
            `tensorflow_model_server --model_base_path` points to; created if missing.
        version: positive int; default the next free one (highest present + 1).
        max_samples: the largest `num_samples` the `sample` and `log_likelihood`
            signatures accept (bounds a request's memory and time).
        verbose: let Keras print the endpoints it wrote.

    Returns:
        The version folder's path.

    Raises:
        FileExistsError: `version` already exists (it is left untouched).
        ValueError: a bad version or a model that cannot be exported.
    """
    base_dir = Path(base_dir)
    if version is not None:
        version = _check_version(version)
        if (base_dir / str(version)).exists():
            raise FileExistsError(
                f"version {base_dir / str(version)} already exists; versions are never replaced"
            )
    max_samples = int(max_samples)
    if max_samples < 1:
        raise ValueError(f"max_samples must be >= 1, got {max_samples}")
    base_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(base_dir)
    staging = base_dir / f"{STAGING_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with _graph_assertions(model):
            archive, functions = _archive(model, max_samples)
            archive.write_out(str(staging), verbose=verbose)
            record = _metadata(model, functions, max_samples)
        (staging / METADATA_PATH).parent.mkdir(parents=True, exist_ok=True)
        (staging / METADATA_PATH).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        _fsync_tree(staging)
        return _publish(staging, base_dir, version)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
