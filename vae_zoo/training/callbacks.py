"""Keras callbacks for VAE training.

- `KLAnnealing` (`vae_zoo.training.annealing`, reachable here) schedules β, the weight
  of the KL term, every training step: start low so the model learns to use z, then
  raise it so prior samples become good (docs/theory.md, "KL annealing"), with a
  `vae_zoo.schedules.BetaSchedule`.
- `CollapseDiagnostics` measures KL per dimension and active units on held-out data
  each epoch and names the failure mode of docs/theory.md when one appears.
- `ImageGrids` writes prior samples, reconstructions and latent interpolations each
  epoch, as PNG files and to TensorBoard.
- `IWLogLikelihood` adds the importance-weighted log-likelihood of held-out data to
  the epoch logs (an objective for keras-tuner).
- `StopOnNaN` stops training at the first non-finite loss or weight, raising
  `TrainingDiverged`.
- `ProgressBar`: Keras' progress bar, which never counts past the epoch's steps under
  `steps_per_execution`; `EpochCSVLogger`: Keras' CSV log with epochs counted from 1.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from vae_zoo import evaluate, plots
from vae_zoo.training.annealing import KLAnnealing  # noqa: F401  (reachable here)
from vae_zoo.training.checkpointing import TrainingDiverged, check_finite


class CollapseDiagnostics(keras.callbacks.Callback):
    """Logs KL per dimension and active units each epoch and names failure modes.

    On held-out data `x` (a few hundred examples suffice) it runs
    `vae_zoo.evaluate.diagnose` and adds to the epoch logs (so to the history and the
    CSV log): `active_units`, `kl_heldout` and `marginal_kl` (KL from the aggregate
    posterior's Gaussian fit to the prior, per active dimension). When a failure mode
    persists for `patience` epochs in a row (or is present when training ends) it
    prints one line, on a line of its own, naming it and its remedy:

    - "posterior collapse" (KL near zero, few active units): lower β;
    - "uncompressed code" (q(z|x) far from p(z), prior samples poor): raise β.

    A mode seen for fewer epochs is a phase many runs pass through (a discrete VAE
    starts with no active units and recovers within a few epochs), and an epoch whose
    KL is not finite names no mode (that is divergence, which `StopOnNaN` reports).

    Every epoch's figures, with the KL per dimension, are kept in `records`; the
    epochs at which a mode was found are in `diagnoses` as `(epoch, mode)`, those at
    which one was announced in `announced`.

    Args:
        x: held-out data `[N, *input_shape]`; y: labels for conditional models.
        every: run every this many epochs.
        log_dir: if given, KL per dimension goes to TensorBoard as a histogram.
        verbose: print the diagnosis lines.
        patience: diagnosed runs of epochs (every `every`) before a mode is announced.
        **thresholds: passed to `vae_zoo.evaluate.diagnose`.
    """

    def __init__(self, x, y=None, every=1, log_dir=None, verbose=1, patience=3, **thresholds):
        super().__init__()
        self.x, self.y = x, y
        self.every = int(every)
        self.log_dir = log_dir
        self.verbose = verbose
        self.patience = int(patience)
        self.thresholds = thresholds
        self.records, self.diagnoses, self.announced = [], [], []
        self._said = None  # the announced mode while it lasts without a break
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        result = evaluate.diagnose(self.model, self.x, y=self.y, **self.thresholds)
        if not np.isfinite(result["kl"]):
            result["mode"] = None  # divergence, not a failure mode of a working model
        self.records.append({"epoch": epoch + 1, **result})
        if logs is not None:
            logs["active_units"] = float(result["active_units"])
            logs["kl_heldout"] = result["kl"]
            logs["marginal_kl"] = result["marginal_kl_per_dim"]
        if self.log_dir and result["kl_per_dim"] is not None:
            if self._writer is None:
                self._writer = tf.summary.create_file_writer(str(Path(self.log_dir) / "diagnostics"))
            with self._writer.as_default():
                tf.summary.histogram("kl_per_dim", result["kl_per_dim"], step=epoch + 1)
                tf.summary.scalar("active_units", result["active_units"], step=epoch + 1)
        if result["mode"]:
            self.diagnoses.append((epoch + 1, result["mode"]))
        if result["mode"] != self._said:
            self._said = None  # it went away (or changed): say it again if it comes back
        recent = [r["mode"] for r in self.records[-self.patience:]]
        if len(recent) == self.patience and len(set(recent)) == 1:
            self._announce(self.records[-1])

    def _announce(self, record):
        """Print a mode once while it lasts."""
        mode = record["mode"]
        if not mode or mode == self._said:
            return
        self._said = mode
        self.announced.append((record["epoch"], mode))
        if self.verbose:
            # own line: the progress bar's line is still open at on_epoch_end
            print(
                f"\nvae_zoo diagnostics, epoch {record['epoch']}: {mode} "
                f"(KL {record['kl']:.2f} nats, {record['active_units']}/"
                f"{record['latent_dim']} active units, aggregate-posterior KL "
                f"{record['marginal_kl_per_dim']:.2f} nats/dim): " + evaluate.REMEDIES[mode],
                flush=True,
            )

    def on_train_end(self, logs=None):
        if self.records:
            self._announce(self.records[-1])  # a mode present at the end is worth saying
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class ProgressBar(keras.callbacks.ProgbarLogger):
    """Keras' progress bar (`keras.callbacks.ProgbarLogger`), which never counts past
    the epoch's number of steps.

    With `compile(steps_per_execution=N)` Keras calls the batch hooks once every N
    steps with the index of the call's last step, also for an epoch's last call, which
    runs fewer: at 40 steps an epoch and N = 32 its own bar shows `64/40` and a
    negative ETA before `40/40`. This one stops the count at the epoch's steps. Given
    to `fit` among the callbacks, it takes the place of Keras' own; it follows `fit`'s
    `verbose` like that one.
    """

    def _within(self, batch):
        return batch if not self.target else min(batch, self.target - 1)

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(self._within(batch), logs)

    def on_test_batch_end(self, batch, logs=None):
        super().on_test_batch_end(self._within(batch), logs)

    def on_predict_batch_end(self, batch, logs=None):
        super().on_predict_batch_end(self._within(batch), logs)


class EpochCSVLogger(keras.callbacks.CSVLogger):
    """Keras' `CSVLogger` with epochs numbered from 1, as the progress bar, the
    per-epoch image files and the checkpoints count them."""

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch + 1, logs)


class ImageGrids(keras.callbacks.Callback):
    """Per-epoch PNG grids of prior samples, reconstructions and latent interpolations.

    Files `epoch_001_samples.png` (one labelled row per class for a class-conditional
    model), `epoch_001_reconstructions.png` (each row of inputs followed by its
    reconstructions, labelled) and `epoch_001_interpolations.png` (each row walks
    linearly between the posterior means of two inputs) go to `output_dir`, drawn like
    a run's final pictures (`vae_zoo.plots.save_grid`) with the epoch in the title; the
    same images go to TensorBoard under `log_dir/images` when `log_dir` is given.

    Args:
        x: a few inputs `[N, H, W, C]` (2 ≤ N ≤ `plots.RECONSTRUCTED`, more are cut) to
            reconstruct and interpolate between (at most 8 pairs).
        y: their labels, for conditional models.
        output_dir, log_dir: where to write (either may be None).
        every: every this many epochs; num_samples: prior samples per grid;
        steps: interpolation points per row; seed: fixed prior draws across epochs.
    """

    def __init__(self, x, y=None, output_dir=None, log_dir=None, every=1, num_samples=64,
                 steps=8, seed=0):
        super().__init__()
        self.x = np.asarray(x, dtype=np.float32)[:plots.RECONSTRUCTED]
        self.y = None if y is None else np.asarray(y)[:plots.RECONSTRUCTED]
        self.output_dir = Path(output_dir) if output_dir else None
        self.log_dir = log_dir
        self.every, self.num_samples, self.steps, self.seed = int(every), num_samples, steps, seed
        self._writer = None
        self._layout = (None, None)  # the samples' columns and row labels (grids())

    def grids(self):
        """{"samples", "reconstructions", "interpolations"}: `[N, H, W, C]` arrays in [0, 1]."""
        model, y = self.model, self.y if self.model.conditional else None
        self._layout = (None, None)
        if y is not None and getattr(model, "num_classes", None) is None:  # vector conditions
            samples = model.sample(self.num_samples, y=np.resize(y, self.num_samples), seed=self.seed)
        else:  # as the run's samples.png: one row per class for class labels
            samples, *self._layout = plots.sample_rows(model, self.num_samples, seed=self.seed)
        pairs = min(len(self.x) // 2, 8)
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
        grids = self.grids()
        pairs, columns = plots.interleave_rows(self.x, grids["reconstructions"])
        columns_of_samples, row_labels = self._layout
        images = {
            "samples": plots.tile(grids["samples"], columns_of_samples),
            "reconstructions": plots.tile(pairs, columns),
            "interpolations": plots.tile(grids["interpolations"], self.steps),
        }
        if self.output_dir is not None:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            name = f"epoch_{epoch + 1:03d}_{{}}.png"
            plots.save_grid(grids["samples"], self.output_dir / name.format("samples"),
                            columns_of_samples, row_labels=row_labels,
                            title=f"prior samples, epoch {epoch + 1}")
            plots.save_reconstructions(self.x, grids["reconstructions"],
                                       self.output_dir / name.format("reconstructions"),
                                       title=f"epoch {epoch + 1}")
            plots.save_grid(grids["interpolations"], self.output_dir / name.format("interpolations"),
                            self.steps, title=f"interpolations, epoch {epoch + 1}")
        if self.log_dir:
            if self._writer is None:
                self._writer = tf.summary.create_file_writer(str(Path(self.log_dir) / "images"))
            with self._writer.as_default():
                for kind, grid in images.items():
                    tf.summary.image(kind, grid[None], step=epoch + 1)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class IWLogLikelihood(keras.callbacks.Callback):
    """Adds the importance-weighted log-likelihood of held-out data to the epoch logs.

    At the end of every epoch, `logs[name]` = mean over `x` of
    `vae_zoo.evaluate.log_likelihood(model, x, num_samples)` (nats), so keras-tuner can
    use it as an objective and the history records it.

    Args:
        x: held-out data `[N, *input_shape]`; y: its conditioning for conditional models.
        num_samples: K, importance samples per example.
        seed: int, the same K samples every epoch.
        name: the log key.
    """

    def __init__(self, x, y=None, num_samples=100, seed=0, name="val_log_likelihood"):
        super().__init__()
        self.x, self.y = x, y
        self.num_samples, self.seed, self.name = int(num_samples), int(seed), name

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            ll = evaluate.log_likelihood(self.model, self.x, num_samples=self.num_samples,
                                         seed=self.seed, y=self.y)
            logs[self.name] = float(np.mean(ll))


class StopOnNaN(keras.callbacks.Callback):
    """Stops `fit` the moment training diverges, raising `TrainingDiverged`.

    At the first batch hook whose loss is NaN or infinite (with `steps_per_execution`
    N, hooks come every N steps), and at the end of every epoch whose weights or
    optimizer slots are not all finite (ReLU can hide NaN weights from the loss). The
    error is raised at once: no validation runs for that epoch and no callback after
    this one sees the batch or epoch, so put it first and no later checkpoint,
    diagnostic or picture is made from diverged weights. The exception's `epoch` and
    `batch` are 1-based, as the progress bar counts.
    """

    def __init__(self):
        super().__init__()
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            raise TrainingDiverged(self._epoch + 1, batch + 1, f"loss is {float(loss)}")

    def on_epoch_end(self, epoch, logs=None):
        check_finite(self.model, epoch + 1)
