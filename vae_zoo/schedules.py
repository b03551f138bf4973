"""β schedules: the weight of the KL term as a function of the optimizer's step.

Like `keras.optimizers.schedules.LearningRateSchedule` for a learning rate: give a
`BetaSchedule` as a model's `beta` and the one `train_step` sets β from
`optimizer.iterations` before every step, inside the compiled step. So it is exact at
any `steps_per_execution`, continues when a checkpoint (which holds the optimizer's
step) is restored, and is saved with the model (`get_config`).

The formulas are plain functions of the step in `SCHEDULES` ("constant", "linear",
"sigmoid", "cyclical"), written once over a few operations: called with a Python
number they return a Python float (no TensorFlow dispatch), with a tensor a float64
tensor. See docs/theory.md, "KL annealing".

`CapacitySchedule`, the KL target C of the controlled-capacity objective, is built the
same way (a linear rise of the step).

Example:
```python
beta = vae_zoo.schedules.BetaSchedule("linear", beta_max=1.0, warmup_steps=2000)
model = DenseVAE(input_shape=(28, 28, 1), latent_dim=16, beta=beta)
```
"""

from __future__ import annotations

import functools
import math
import numbers
import operator
import types

import keras
import tensorflow as tf

from vae_zoo.registry import Registry

SCHEDULES = Registry("annealing schedule")


def _logistic(t):
    return 1.0 / (1.0 + math.exp(-t))


# The few operations the schedules use, for Python floats and for tensors.
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


def _warmed_up(step, ops, warmup_steps):
    """The fraction of the warm-up done at `step`, in [0, 1]; 1 throughout when
    warmup_steps is 0 (no warm-up: β is beta_max from step 0)."""
    if warmup_steps <= 0:
        return 1.0 + 0.0 * step
    return ops.minimum(step / warmup_steps, 1.0)


@_schedule
def linear(step, ops, *, beta_min, beta_max, warmup_steps, **_):
    """β rises linearly from beta_min to beta_max over warmup_steps, then stays
    (warmup_steps 0: beta_max from step 0)."""
    return beta_min + (beta_max - beta_min) * _warmed_up(step, ops, warmup_steps)


@_schedule
def sigmoid(step, ops, *, beta_min, beta_max, warmup_steps, steepness=10.0, **_):
    """β follows a logistic curve centred at warmup_steps / 2.

    The curve is rescaled so that β is exactly beta_min at step 0 and exactly beta_max
    from warmup_steps on (warmup_steps 0: beta_max from step 0); `steepness` sets how
    sharp the rise in the middle is.
    """
    fraction = _warmed_up(step, ops, warmup_steps)
    # The same sigmoid at both ends, so β is exactly beta_min / beta_max there.
    low, high = ops.sigmoid(-steepness / 2), ops.sigmoid(steepness / 2)
    s = (ops.sigmoid(steepness * (fraction - 0.5)) - low) / (high - low)
    return beta_min + (beta_max - beta_min) * ops.minimum(ops.maximum(s, 0.0), 1.0)


@_schedule
def cyclical(step, ops, *, beta_min, beta_max, total_steps, cycles=4, ratio=0.5, **_):
    """Cyclical annealing (Fu et al. 2019, arXiv:1903.10145, their eq. 6).

    A run of T = total_steps steps is split into periods of ⌈T/M⌉ steps, M = `cycles`
    (the last one shorter when M does not divide T); in each, β rises linearly from
    beta_min to beta_max while τ = (step mod ⌈T/M⌉) / (T/M) is below `ratio` R, then
    stays at beta_max. Steps count from 0 (Fu et al.'s t − 1). Needs T >= M.
    """
    period = math.ceil(total_steps / cycles)
    position = ops.mod(step, period) / (total_steps / cycles)
    return beta_min + (beta_max - beta_min) * ops.minimum(position / ratio, 1.0)


def check_options(beta_min, beta_max, cycles=4, ratio=0.5):
    """ValueError unless 0 <= beta_min <= beta_max, cycles >= 1 and 0 < ratio <= 1."""
    if beta_min < 0 or (beta_max is not None and beta_max < beta_min):
        raise ValueError(f"need 0 <= beta_min <= beta_max, got {beta_min}, {beta_max}")
    if cycles < 1 or not 0 < ratio <= 1:
        raise ValueError(f"need cycles >= 1 and 0 < ratio <= 1, got {cycles}, {ratio}")


@keras.saving.register_keras_serializable(package="vae_zoo")
class BetaSchedule:
    """β(step) for a model's `beta`: one of `SCHEDULES` with its options.

    Args:
        schedule: "constant", "linear", "sigmoid" or "cyclical".
        beta_max: final (peak) β.
        beta_min: β at step 0 (the bottom of each cycle for "cyclical").
        warmup_steps: length of the rise (linear, sigmoid); 0: no rise, beta_max from
            step 0.
        total_steps: length of the whole run in steps (cyclical: required, at least
            `cycles`; periods of ⌈total_steps / cycles⌉ steps).
        cycles, ratio: cyclical schedule parameters (M and R of Fu et al.).
        steepness: sigmoid slope in the middle of the warm-up.

    `schedule(step)` takes the optimizer's step (a tensor inside the compiled step:
    float32 tensor out; a Python number: Python float out).
    """

    def __init__(self, schedule="linear", beta_max=1.0, beta_min=0.0, warmup_steps=0,
                 total_steps=0, cycles=4, ratio=0.5, steepness=10.0):
        self.fn = SCHEDULES.get(schedule)
        check_options(beta_min, beta_max, cycles, ratio)
        if warmup_steps < 0 or total_steps < 0:
            raise ValueError(f"need warmup_steps, total_steps >= 0, got {warmup_steps}, {total_steps}")
        if schedule == "cyclical" and total_steps < cycles:
            raise ValueError(
                f"the cyclical schedule needs total_steps (the run's length in steps) of at "
                f"least cycles = {cycles}, got {total_steps:g}")
        self.schedule = schedule
        self.options = dict(
            beta_min=float(beta_min), beta_max=float(beta_max),
            warmup_steps=float(warmup_steps), total_steps=float(total_steps),
            cycles=int(cycles), ratio=float(ratio), steepness=float(steepness),
        )

    def __call__(self, step):
        if isinstance(step, numbers.Real):
            return self.fn(step, **self.options)
        return tf.cast(self.fn(step, **self.options), tf.float32)

    @property
    def beta_max(self) -> float:
        return self.options["beta_max"]

    def get_config(self):
        return {"schedule": self.schedule, **self.options}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"BetaSchedule({self.get_config()})"


@keras.saving.register_keras_serializable(package="vae_zoo")
class CapacitySchedule:
    """C(step), the KL target of the controlled-capacity objective, in nats.

    Burgess et al. 2018 (arXiv:1804.03599) train on −log p(x|z) + γ |KL − C| with the
    capacity C raised linearly during training, so the code gains information
    gradually. Like `BetaSchedule` it is a function of the optimizer's step, read
    inside the compiled step, and saved with the model (through its objective).

    Args:
        capacity_max: C from `steps` on.
        capacity_min: C at step 0.
        steps: length of the linear rise (0: `capacity_max` from the start).

    `schedule(step)`: a Python float for a Python number, a float32 tensor for a tensor.

    Example:
    ```python
    capacity = vae_zoo.schedules.CapacitySchedule(capacity_max=25.0, steps=100_000)
    capacity(50_000)  # 12.5
    ```
    """

    def __init__(self, capacity_max=25.0, capacity_min=0.0, steps=100_000):
        if not 0 <= capacity_min <= capacity_max:
            raise ValueError("need 0 <= capacity_min <= capacity_max, got "
                             f"{capacity_min}, {capacity_max}")
        if steps < 0:
            raise ValueError(f"need steps >= 0, got {steps}")
        self.capacity_max, self.capacity_min = float(capacity_max), float(capacity_min)
        self.steps = int(steps)

    def __call__(self, step):
        if self.steps == 0:
            value = constant(step, beta_max=self.capacity_max)
        else:
            value = linear(step, beta_min=self.capacity_min, beta_max=self.capacity_max,
                           warmup_steps=self.steps)
        return value if isinstance(step, numbers.Real) else tf.cast(value, tf.float32)

    def get_config(self):
        return {"capacity_max": self.capacity_max, "capacity_min": self.capacity_min,
                "steps": self.steps}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"CapacitySchedule({self.get_config()})"
