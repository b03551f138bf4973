"""`KLAnnealing`: β, the weight of the KL term, scheduled every training step for one
`fit` (docs/theory.md, "KL annealing"), with epoch-based settings converted to steps.
Also reachable as `vae_zoo.training.callbacks.KLAnnealing`.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from vae_zoo.schedules import SCHEDULES, BetaSchedule, check_options


class KLAnnealing(keras.callbacks.Callback):
    """Anneals `model.beta` during `fit` with a `vae_zoo.schedules.BetaSchedule`.

    The callback form of a `BetaSchedule` given as the model's `beta`, for schedules
    set in epochs (converted with the number of steps per epoch that `fit` knows) or
    added to an existing model. The global step counts every batch since this
    callback's first `fit` (so the schedule continues across epochs and across `fit`
    calls, and from the resumed epoch when `fit` starts at `initial_epoch` or under
    `BackupAndRestore`). β is logged per epoch as the "beta" metric of the model (mean
    over the epoch's steps) and here as "beta_end" (β at epoch end).

    While its `fit` runs, the schedule is the model's `beta_schedule`, read by the
    compiled step from the optimizer's step counter: every step gets its own β at any
    `compile(steps_per_execution=N)`. At the end of the `fit` the model's own schedule
    (None for a constant β) is put back. A `fit` that raises keeps the annealing
    schedule on the model until the next `fit` with this callback ends or
    `model.set_beta_schedule(None)` is called.

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
        check_options(beta_min, beta_max, cycles, ratio)
        self.beta_max = beta_max
        self.beta_min = float(beta_min)
        self.warmup_steps = warmup_steps
        self.warmup_epochs = warmup_epochs
        self.cycles = int(cycles)
        self.ratio = float(ratio)
        self.total_steps = total_steps
        self.steepness = float(steepness)
        self.beta_schedule = None  # the BetaSchedule of the current fit
        self._previous = None  # the model's own schedule, put back when fit ends
        self._start = None  # optimizer step at this callback's global step 0
        # optimizer.iterations − global step, read by the compiled step
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
        self.beta_schedule = BetaSchedule(
            self.schedule, beta_max=float(beta_max), beta_min=self.beta_min,
            warmup_steps=float(warmup or 0), total_steps=float(total or 0),
            cycles=self.cycles, ratio=self.ratio, steepness=self.steepness,
        )
        self._previous = self.model.beta_schedule
        self.model.set_beta_schedule(self.graph_value)

    def on_train_end(self, logs=None):
        self.model.set_beta_schedule(self._previous)

    def value(self, step):
        """β at global step `step` (after `on_train_begin`)."""
        return float(self.beta_schedule(step))

    def graph_value(self, iterations):
        """β (float32 tensor) for the step the optimizer's counter `iterations` is at."""
        return self.beta_schedule(tf.cast(iterations, tf.int64) - self._step_offset)

    def _iterations(self):
        return int(self.model.optimizer.iterations.numpy())

    def on_epoch_begin(self, epoch, logs=None):
        if self._start is None:
            # Global step 0 is this callback's first step; a fit that starts at a later
            # epoch (initial_epoch, BackupAndRestore) has done epoch × steps already.
            done = epoch * self.params["steps"] if epoch and self.params.get("steps") else 0
            self._start = self._iterations() - done
            self._step_offset.assign(self._start)

    @property
    def epoch_start(self):
        """The global step at which the current epoch began (0 before the first fit)."""
        return 0 if self._start is None else self._iterations() - self._start

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["beta_end"] = float(self.model.beta.numpy())
