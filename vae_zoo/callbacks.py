"""Keras callbacks for VAE training.

- `KLAnnealing` schedules β, the weight of the KL term, every training step: start low
  so the model learns to use z, then raise it so prior samples become good (THEORY.md,
  "Failure modes and β"). The schedules are plain functions of the global step in
  `SCHEDULES`, so a recipe names one by string.
- `CollapseDiagnostics` measures KL per dimension and active units on held-out data
  each epoch and names the failure mode of THEORY.md when one appears.
- `ImageGrids` writes prior samples, reconstructions and latent interpolations each
  epoch, as PNG files and to TensorBoard.
"""

from __future__ import annotations

import functools
import math
import numbers
import operator
import types
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from vae_zoo.registry import Registry

SCHEDULES = Registry("annealing schedule")


def _logistic(t):
    return 1.0 / (1.0 + math.exp(-t))


# The few operations the schedules use, for Python floats (the callback's per-call
# value, no TensorFlow dispatch) and for tensors (the compiled step's counter).
_PYTHON_OPS = types.SimpleNamespace(minimum=min, maximum=max, sigmoid=_logistic, mod=operator.mod)
_TENSOR_OPS = types.SimpleNamespace(
    minimum=tf.minimum,
    maximum=tf.maximum,
    sigmoid=lambda t: tf.sigmoid(tf.cast(t, tf.float64)),  # also of Python constants
    mod=tf.math.floormod,
)


def _schedule(fn):
    """Registers `fn(step, ops, **options)`, written once with the operations in `ops`.

    Called with a Python number the schedule returns a Python float; with a tensor (the
    optimizer's step counter inside the compiled training step) a float64 tensor.
    """

    @functools.wraps(fn)
    def schedule(step, **options):
        if isinstance(step, numbers.Real):  # also NumPy scalars
            return float(fn(float(step), _PYTHON_OPS, **options))
        return fn(tf.cast(step, tf.float64), _TENSOR_OPS, **options)

    return SCHEDULES.register(fn.__name__)(schedule)


@_schedule
def constant(step, ops, *, beta_max, **_):
    """β = beta_max throughout."""
    return beta_max + 0.0 * step  # step's shape: a float, or a tensor like the counter


@_schedule
def linear(step, ops, *, beta_min, beta_max, warmup_steps, **_):
    """β rises linearly from beta_min to beta_max over warmup_steps, then stays."""
    fraction = ops.minimum(step / max(warmup_steps, 1), 1.0)
    return beta_min + (beta_max - beta_min) * fraction


@_schedule
def sigmoid(step, ops, *, beta_min, beta_max, warmup_steps, steepness=10.0, **_):
    """β follows a logistic curve centred at warmup_steps / 2.

    The curve is rescaled so that β is exactly beta_min at step 0 and exactly beta_max
    from warmup_steps on; `steepness` sets how sharp the rise in the middle is.
    """
    fraction = ops.minimum(step / max(warmup_steps, 1), 1.0)
    # The same sigmoid at both ends, so β is exactly beta_min / beta_max there.
    low, high = ops.sigmoid(-steepness / 2), ops.sigmoid(steepness / 2)
    s = (ops.sigmoid(steepness * (fraction - 0.5)) - low) / (high - low)
    return beta_min + (beta_max - beta_min) * ops.minimum(ops.maximum(s, 0.0), 1.0)


@_schedule
def cyclical(step, ops, *, beta_min, beta_max, total_steps, cycles=4, ratio=0.5, **_):
    """Cyclical annealing (Fu et al. 2019, arXiv:1903.10145).

    Training is split into `cycles` equal periods; in each, β rises linearly from
    beta_min to beta_max over the first `ratio` of the period and then stays at beta_max.
    """
    period = max(total_steps / cycles, 1.0)
    position = ops.mod(step, period) / period
    return beta_min + (beta_max - beta_min) * ops.minimum(position / ratio, 1.0)


class KLAnnealing(keras.callbacks.Callback):
    """Sets `model.beta` at every training step from a schedule of the global step.

    The global step counts every batch since this callback's first `fit` (so the
    schedule continues across epochs and across `fit` calls). β is logged per epoch as
    the "beta" metric of the model (mean over the epoch's steps) and here as "beta_end"
    (β at epoch end).

    With `compile(steps_per_execution=N > 1)` (the default fast path runs 32 steps per
    call) Keras calls the batch hooks once per N steps, so the schedule goes into the
    compiled step instead: each step reads β from the optimizer's step counter, exactly
    as with one step per call. The model's training function is retraced for such a
    `fit`, and `VAE.fit` takes the schedule out again when it returns.

    Args:
        schedule: "linear", "sigmoid", "cyclical" or "constant".
        beta_max: final (peak) β; default: the model's initial β.
        beta_min: β at step 0 (the bottom of each cycle for "cyclical").
        warmup_steps / warmup_epochs: length of the warm-up (linear and sigmoid); give
            one of them. Epochs are converted with the number of steps per epoch.
        cycles, ratio: cyclical schedule parameters (M and R of Fu et al.).
        total_steps: length of the whole run for "cyclical" (default: epochs × steps
            per epoch, from `fit`).
        steepness: sigmoid slope in the middle of the warm-up.

    Epoch-based settings need the number of steps per epoch: when `fit` cannot know it
    (a dataset of unknown length), give `warmup_steps` / `total_steps`, or pass
    `steps_per_epoch` to `fit`; otherwise `fit` stops with a ValueError.

    Example:
    ```python
    model.fit(ds, epochs=30, callbacks=[KLAnnealing("linear", warmup_epochs=10)])
    ```
    """

    def __init__(
        self,
        schedule="linear",
        beta_max=None,
        beta_min=0.0,
        warmup_steps=None,
        warmup_epochs=None,
        cycles=4,
        ratio=0.5,
        total_steps=None,
        steepness=10.0,
    ):
        super().__init__()
        self.schedule_fn = SCHEDULES.get(schedule)
        self.schedule = schedule
        if warmup_steps is not None and warmup_epochs is not None:
            raise ValueError("give warmup_steps or warmup_epochs, not both")
        if beta_min < 0 or (beta_max is not None and beta_max < beta_min):
            raise ValueError(f"need 0 <= beta_min <= beta_max, got {beta_min}, {beta_max}")
        if cycles < 1 or not 0 < ratio <= 1:
            raise ValueError(f"need cycles >= 1 and 0 < ratio <= 1, got {cycles}, {ratio}")
        self.beta_max = beta_max
        self.beta_min = float(beta_min)
        self.warmup_steps = warmup_steps
        self.warmup_epochs = warmup_epochs
        self.cycles = int(cycles)
        self.ratio = float(ratio)
        self.total_steps = total_steps
        self.steepness = float(steepness)
        self.epoch_start = 0  # global step at the start of the current epoch
        self.steps_in_epoch = 0
        self._options = None
        # optimizer.iterations − global step, read by the compiled step (in-graph β)
        self._step_offset = tf.Variable(0, dtype=tf.int64, trainable=False)

    def _steps_per_epoch(self, what):
        steps = self.params.get("steps")
        if not steps:
            raise ValueError(
                f"KLAnnealing: {what} needs the number of steps per epoch, which this "
                "dataset does not declare; give warmup_steps/total_steps or "
                "fit(steps_per_epoch=...)"
            )
        return steps

    def on_train_begin(self, logs=None):
        epochs = self.params.get("epochs") or 1
        warmup = self.warmup_steps
        if warmup is None and self.schedule in ("linear", "sigmoid"):
            epochs_of_warmup = self.warmup_epochs if self.warmup_epochs is not None else epochs / 2
            warmup = epochs_of_warmup * self._steps_per_epoch("warmup_epochs")
        total = self.total_steps
        if total is None and self.schedule == "cyclical":
            total = epochs * self._steps_per_epoch("the cyclical schedule")
        beta_max = self.beta_max
        if beta_max is None:
            beta_max = getattr(self.model, "initial_beta", 1.0)
        self._options = dict(
            beta_min=self.beta_min,
            beta_max=float(beta_max),
            warmup_steps=float(warmup or 0),
            total_steps=float(total or 0),
            cycles=self.cycles,
            ratio=self.ratio,
            steepness=self.steepness,
        )
        if (getattr(self.model, "steps_per_execution", 1) or 1) > 1 and hasattr(
            self.model, "beta_schedule"
        ):
            self.model.beta_schedule = self.graph_value
            self.model.make_train_function(force=True)  # trace with this schedule

    def value(self, step):
        """β at global step `step` (after `on_train_begin`)."""
        return float(self.schedule_fn(step, **self._options))

    def graph_value(self, iterations):
        """β (float32 tensor) for the step the optimizer's counter `iterations` is at."""
        step = tf.cast(iterations, tf.int64) - self._step_offset
        return tf.cast(self.schedule_fn(step, **self._options), tf.float32)

    def on_epoch_begin(self, epoch, logs=None):
        self.steps_in_epoch = 0
        self._iterations_at_epoch_begin = self._iterations()
        if epoch and not self.epoch_start and self.params.get("steps"):
            # fit resumed at `epoch` (BackupAndRestore): continue the schedule there
            self.epoch_start = epoch * self.params["steps"]
        if self._iterations_at_epoch_begin is not None:
            self._step_offset.assign(self._iterations_at_epoch_begin - self.epoch_start)

    def _iterations(self):
        optimizer = getattr(self.model, "optimizer", None)
        return None if optimizer is None else int(optimizer.iterations.numpy())

    def on_train_batch_begin(self, batch, logs=None):
        # `batch` is the epoch's step index (the first step of the execution when
        # compile(steps_per_execution=N) runs several steps per call).
        self.model.beta.assign(self.value(self.epoch_start + batch))

    def on_train_batch_end(self, batch, logs=None):
        self.steps_in_epoch = batch + 1

    def on_epoch_end(self, epoch, logs=None):
        # With several steps per execution the last batch index Keras reports can pass
        # the epoch's end (it is the first step + N − 1): count the optimizer's steps.
        iterations = self._iterations()
        if iterations is not None and self._iterations_at_epoch_begin is not None:
            self.steps_in_epoch = iterations - self._iterations_at_epoch_begin
        self.epoch_start += self.steps_in_epoch
        if logs is not None:
            logs["beta_end"] = float(self.model.beta.numpy())


class CollapseDiagnostics(keras.callbacks.Callback):
    """Logs KL per dimension and active units each epoch and names failure modes.

    On held-out data `x` (a few hundred examples suffice) it runs
    `vae_zoo.evaluate.diagnose` and adds to the epoch logs (so to the history and the
    CSV log): `active_units`, `kl_heldout` and `marginal_kl` (KL from the aggregate
    posterior's Gaussian fit to the prior, per active dimension). When a failure mode
    appears (or changes) it prints one line naming it and its remedy:

    - "posterior collapse" (KL near zero, few active units): lower β;
    - "uncompressed code" (q(z|x) far from p(z), prior samples poor): raise β.

    Every epoch's figures, with the KL per dimension, are kept in `records`; the
    epochs at which a mode was found are in `diagnoses` as `(epoch, mode)`.

    Args:
        x: held-out data `[N, *input_shape]`; y: labels for conditional models.
        every: run every this many epochs.
        log_dir: if given, KL per dimension goes to TensorBoard as a histogram.
        verbose: print the diagnosis lines.
        **thresholds: passed to `vae_zoo.evaluate.diagnose`.
    """

    def __init__(self, x, y=None, every=1, log_dir=None, verbose=1, **thresholds):
        super().__init__()
        self.x, self.y = x, y
        self.every = int(every)
        self.log_dir = log_dir
        self.verbose = verbose
        self.thresholds = thresholds
        self.records, self.diagnoses = [], []
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        from vae_zoo import evaluate

        result = evaluate.diagnose(self.model, self.x, y=self.y, **self.thresholds)
        self.records.append({"epoch": epoch + 1, **result})
        if logs is not None:
            logs["active_units"] = float(result["active_units"])
            logs["kl_heldout"] = result["kl"]
            logs["marginal_kl"] = result["marginal_kl_per_dim"]
        if self.log_dir and result["kl_per_dim"] is not None:
            import tensorflow as tf

            if self._writer is None:
                self._writer = tf.summary.create_file_writer(str(Path(self.log_dir) / "diagnostics"))
            with self._writer.as_default():
                tf.summary.histogram("kl_per_dim", result["kl_per_dim"], step=epoch + 1)
                tf.summary.scalar("active_units", result["active_units"], step=epoch + 1)
        previous = self.records[-2]["mode"] if len(self.records) > 1 else None
        if result["mode"]:
            self.diagnoses.append((epoch + 1, result["mode"]))
            if self.verbose and result["mode"] != previous:  # say it once, not every epoch
                print(
                    f"vae_zoo diagnostics, epoch {epoch + 1}: {result['mode']} "
                    f"(KL {result['kl']:.2f} nats, {result['active_units']}/"
                    f"{result['latent_dim']} active units, aggregate-posterior KL "
                    f"{result['marginal_kl_per_dim']:.2f} nats/dim): "
                    + evaluate.REMEDIES[result["mode"]]
                )

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class ImageGrids(keras.callbacks.Callback):
    """Per-epoch PNG grids of prior samples, reconstructions and latent interpolations.

    Files `epoch_001_samples.png`, `epoch_001_reconstructions.png` (each row of inputs
    followed by its reconstructions) and `epoch_001_interpolations.png` (each row walks
    linearly between the posterior means of two inputs) go to `output_dir`; the same
    images go to TensorBoard under `log_dir/images` when `log_dir` is given.

    Args:
        x: a few inputs `[N, H, W, C]` (N ≥ 2) to reconstruct and interpolate between.
        y: their labels, for conditional models (samples then cycle through them).
        output_dir, log_dir: where to write (either may be None).
        every: every this many epochs; num_samples: prior samples per grid;
        steps: interpolation points per row; seed: fixed prior draws across epochs.
    """

    def __init__(self, x, y=None, output_dir=None, log_dir=None, every=1, num_samples=64,
                 steps=8, seed=0):
        super().__init__()
        self.x = np.asarray(x, dtype=np.float32)[:16]
        self.y = None if y is None else np.asarray(y)[:16]
        self.output_dir = Path(output_dir) if output_dir else None
        self.log_dir = log_dir
        self.every, self.num_samples, self.steps, self.seed = int(every), num_samples, steps, seed
        self._writer = None

    def grids(self):
        """{"samples", "reconstructions", "interpolations"}: `[N, H, W, C]` arrays in [0, 1]."""
        model, y = self.model, self.y if self.model.conditional else None
        if y is not None:
            samples = model.sample(self.num_samples, y=np.resize(y, self.num_samples), seed=self.seed)
        else:
            samples = model.sample(self.num_samples, seed=self.seed)
        pairs = len(self.x) // 2
        z = np.asarray(model.encode(self.x, y).mean())
        t = np.linspace(0.0, 1.0, self.steps).reshape((1, -1) + (1,) * (z.ndim - 1))
        path = z[0 : 2 * pairs : 2, None] * (1 - t) + z[1 : 2 * pairs : 2, None] * t
        flat = path.reshape((-1,) + z.shape[1:]).astype(np.float32)  # [pairs * steps, ...]
        y_path = None if y is None else np.repeat(y[0 : 2 * pairs : 2], self.steps)
        return {
            "samples": np.asarray(samples),
            "reconstructions": np.asarray(model.reconstruct(self.x, y)),
            "interpolations": np.asarray(model.decode(flat, y_path).mean()),
        }

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        from vae_zoo import plots

        grids = self.grids()
        images = {
            "samples": plots.tile(grids["samples"]),
            "reconstructions": plots.tile(*plots.interleave_rows(self.x, grids["reconstructions"])),
            "interpolations": plots.tile(grids["interpolations"], self.steps),
        }
        if self.output_dir is not None:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            for kind, grid in images.items():
                plots.save_array(grid, self.output_dir / f"epoch_{epoch + 1:03d}_{kind}.png")
        if self.log_dir:
            import tensorflow as tf

            if self._writer is None:
                self._writer = tf.summary.create_file_writer(str(Path(self.log_dir) / "images"))
            with self._writer.as_default():
                for kind, grid in images.items():
                    tf.summary.image(kind, grid[None], step=epoch + 1)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
