"""Tests for `vae_zoo.callbacks` and `vae_zoo.schedules`: β schedules by hand, as a
model's `beta`, and `KLAnnealing` during `fit`."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from vae_zoo import callbacks
from vae_zoo.models import DenseVAE
from vae_zoo.schedules import SCHEDULES, BetaSchedule

pytestmark = pytest.mark.numerics  # rerun on other CPUs' code paths (.ci/run)


def test_registered_schedules():
    """The four documented schedules are registered by name."""
    assert {"linear", "sigmoid", "cyclical", "constant"} <= set(SCHEDULES.names())


@pytest.mark.parametrize(
    "step, expected", [(0, 0.5), (2.5, 1.0), (5, 1.5), (10, 2.5), (11, 2.5), (1000, 2.5)]
)
def test_linear_schedule(step, expected):
    """Linear: beta_min + (beta_max − beta_min) · min(1, step / warmup)."""
    beta = SCHEDULES.get("linear")(step, beta_min=0.5, beta_max=2.5, warmup_steps=10)
    assert beta == pytest.approx(expected)


def test_sigmoid_schedule():
    """Sigmoid: exactly beta_min at 0, midpoint at warmup/2, exactly beta_max at warmup."""
    fn = SCHEDULES.get("sigmoid")
    options = dict(beta_min=0.0, beta_max=2.0, warmup_steps=100, steepness=10.0)
    logistic = lambda t: 1.0 / (1.0 + math.exp(-t))  # noqa: E731
    low, high = logistic(-5.0), logistic(5.0)
    assert fn(0, **options) == pytest.approx(0.0, abs=1e-12)
    assert fn(50, **options) == pytest.approx(1.0)
    assert fn(100, **options) == pytest.approx(2.0)
    assert fn(25, **options) == pytest.approx(2.0 * (logistic(-2.5) - low) / (high - low))
    values = [fn(step, **options) for step in range(0, 201, 5)]
    assert all(a <= b for a, b in zip(values, values[1:]))
    assert fn(200, **options) == fn(100, **options)  # flat after the warm-up


@pytest.mark.parametrize(
    "step, expected",
    [
        (0, 0.0), (6.25, 0.5), (12.5, 1.0), (20, 1.0), (24, 1.0),  # cycle 1
        (25, 0.0), (31.25, 0.5), (40, 1.0),  # cycle 2 restarts at 25
        (50, 0.0), (75, 0.0), (81.25, 0.5), (99, 1.0),
    ],
)
def test_cyclical_schedule_fu_et_al(step, expected):
    """Cyclical (Fu et al. 2019), T=100, M=4, R=0.5: period 25, rise over 12.5 steps, flat."""
    beta = SCHEDULES.get("cyclical")(
        step, beta_min=0.0, beta_max=1.0, total_steps=100, cycles=4, ratio=0.5
    )
    assert beta == pytest.approx(expected)


def test_cyclical_schedule_with_beta_min():
    """Cyclical with beta_min > 0 starts each cycle at beta_min."""
    fn = SCHEDULES.get("cyclical")
    options = dict(beta_min=0.2, beta_max=1.0, total_steps=100, cycles=4, ratio=0.5)
    assert fn(0, **options) == pytest.approx(0.2)
    assert fn(25, **options) == pytest.approx(0.2)
    assert fn(6.25, **options) == pytest.approx(0.6)


def _fu_et_al(t, total, cycles, ratio):
    """Fu et al. 2019, eq. 6, for t = 1, 2, ...: τ = mod(t − 1, ⌈T/M⌉) / (T/M), β = f(τ)
    = τ/R while τ <= R, else 1."""
    tau = ((t - 1) % math.ceil(total / cycles)) / (total / cycles)
    return min(tau / ratio, 1.0)


@pytest.mark.parametrize("total, cycles", [(10, 4), (100, 4), (7, 3), (12, 5)])
def test_cyclical_periods_are_whole_steps_as_in_fu_et_al(total, cycles):
    """When M does not divide T, each period is ⌈T/M⌉ steps (the last one shorter)."""
    schedule = BetaSchedule("cyclical", beta_max=1.0, total_steps=total, cycles=cycles,
                            ratio=0.5)
    got = [schedule(step) for step in range(total)]
    np.testing.assert_allclose(got, [_fu_et_al(t, total, cycles, 0.5) for t in range(1, total + 1)],
                               rtol=1e-12, atol=1e-12)
    restarts = [step for step in range(total) if got[step] == 0.0]
    assert restarts == list(range(0, total, math.ceil(total / cycles)))


def test_cyclical_schedule_needs_the_length_of_the_run():
    with pytest.raises(ValueError, match=r"^the cyclical schedule needs total_steps .* of at "
                                         r"least cycles = 4, got 0$"):
        BetaSchedule("cyclical")
    with pytest.raises(ValueError, match="got 3$"):
        BetaSchedule("cyclical", total_steps=3, cycles=4)
    assert BetaSchedule("cyclical", total_steps=4, cycles=4)(0) == 0.0


@pytest.mark.parametrize("schedule", ["linear", "sigmoid"])
def test_no_warmup_means_beta_max_from_the_first_step(schedule):
    beta = BetaSchedule(schedule, beta_min=0.25, beta_max=2.0, warmup_steps=0)
    assert [beta(step) for step in (0, 1, 50)] == [2.0, 2.0, 2.0]
    assert float(beta(tf.constant(0, tf.int64))) == 2.0  # the compiled step's path too


def test_constant_schedule():
    """Constant: beta_max at every step."""
    fn = SCHEDULES.get("constant")
    assert [fn(s, beta_min=0.0, beta_max=0.7, warmup_steps=5) for s in (0, 3, 100)] == [0.7] * 3


# --------------------------------------------------------------------------- #
# KLAnnealing during fit
# --------------------------------------------------------------------------- #


class BetaRecorder(keras.callbacks.Callback):
    """Records model.beta after every training step."""

    def __init__(self):
        super().__init__()
        self.betas = []

    def on_train_batch_end(self, batch, logs=None):
        self.betas.append(float(self.model.beta.numpy()))


def _tiny_model(beta=1.0, steps_per_execution=1):
    # One step per call, so batch hooks (and β updates) run at every step; the plain
    # step (XLA is covered by the parametrized equivalence test below).
    keras.utils.set_random_seed(0)
    model = DenseVAE(input_shape=(6,), latent_dim=3, hidden_units=(8,), beta=beta, seed=0)
    model.compile(optimizer="adam", steps_per_execution=steps_per_execution, jit_compile=False)
    return model


X = (np.random.default_rng(0).random((16, 6)) < 0.5).astype(np.float32)  # 4 steps at batch 4


def test_kl_annealing_linear_over_two_epochs():
    """Linear warm-up over 1 epoch (4 steps): β changes every step, continues across epochs,
    and the history has the epoch-mean "beta" and the epoch-end "beta_end"."""
    model, recorder = _tiny_model(), BetaRecorder()
    annealing = callbacks.KLAnnealing("linear", beta_max=2.0, warmup_epochs=1)
    history = model.fit(X, epochs=2, batch_size=4, verbose=0, callbacks=[annealing, recorder])
    expected = [0.0, 0.5, 1.0, 1.5, 2.0, 2.0, 2.0, 2.0]  # β(step) = 2 · min(1, step / 4)
    np.testing.assert_allclose(recorder.betas, expected, rtol=1e-6)
    np.testing.assert_allclose(history.history["beta"], [0.75, 2.0], rtol=1e-6)
    np.testing.assert_allclose(history.history["beta_end"], [1.5, 2.0], rtol=1e-6)


@pytest.mark.slow
def test_kl_annealing_with_several_steps_per_execution_changes_beta_every_step():
    """With 2 steps per call the hooks run per call, but each step reads its own β."""
    model, recorder = _tiny_model(steps_per_execution=2), BetaRecorder()
    annealing = callbacks.KLAnnealing("linear", beta_max=2.0, warmup_epochs=1)
    history = model.fit(X, epochs=2, batch_size=4, verbose=0, callbacks=[annealing, recorder])
    np.testing.assert_allclose(recorder.betas, [0.5, 1.5, 2.0, 2.0], rtol=1e-6)  # calls' last steps
    # The epoch mean of the β the steps used: (0 + 0.5 + 1 + 1.5) / 4, as with one step per call.
    np.testing.assert_allclose(history.history["beta"], [0.75, 2.0], rtol=1e-6)
    np.testing.assert_allclose(history.history["beta_end"], [1.5, 2.0], rtol=1e-6)


def test_kl_annealing_counts_the_steps_of_a_short_last_execution():
    """4 steps per epoch at 3 per call: calls run steps 0-2 and 3, and epoch 2 starts at
    global step 4 (not 6, the end of the second call's nominal range)."""
    model, recorder = _tiny_model(steps_per_execution=3), BetaRecorder()
    annealing = callbacks.KLAnnealing("linear", beta_max=2.0, warmup_epochs=2)
    model.fit(X, epochs=2, batch_size=4, verbose=0, callbacks=[annealing, recorder])
    np.testing.assert_allclose(recorder.betas, [0.5, 0.75, 1.5, 1.75], rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("schedule, options, jit_compile", [
    ("linear", dict(warmup_steps=6), False),
    ("linear", dict(warmup_steps=6), True),
    ("sigmoid", dict(warmup_epochs=1.5), True),
    ("cyclical", dict(cycles=3), False),
])
def test_kl_annealing_trains_the_same_at_any_steps_per_execution(schedule, options, jit_compile):
    """The in-graph schedule is exact: 8 steps at 3 per call give the weights of 8 calls
    of one step (the seeds advance the same way), compiled or not."""
    weights = []
    for spe in (1, 3):
        keras.utils.set_random_seed(0)
        model = DenseVAE(input_shape=(6,), latent_dim=3, hidden_units=(8,), seed=0)
        model.compile(optimizer="adam", steps_per_execution=spe, jit_compile=jit_compile)
        annealing = callbacks.KLAnnealing(schedule, beta_max=2.0, **options)
        history = model.fit(X, epochs=2, batch_size=4, verbose=0, shuffle=False,
                            callbacks=[annealing])
        weights.append([w.numpy() for w in model.weights] + [history.history["beta"]])
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_a_later_fit_without_kl_annealing_keeps_beta():
    """The schedule leaves the compiled step when its fit ends."""
    model = _tiny_model(steps_per_execution=2)
    model.fit(X, epochs=1, batch_size=4, verbose=0,
              callbacks=[callbacks.KLAnnealing("linear", beta_max=2.0, warmup_steps=100)])
    assert model.beta_schedule is None
    model.beta.assign(0.3)
    history = model.fit(X, epochs=1, batch_size=4, verbose=0)
    np.testing.assert_allclose(history.history["beta"], [0.3], rtol=1e-6)
    assert float(model.beta.numpy()) == pytest.approx(0.3)


@pytest.mark.slow
def test_a_fit_that_fails_keeps_the_schedule_until_it_is_set_back():
    """Keras runs no callback when fit raises: the annealing schedule stays on the
    model (documented) until `set_beta_schedule(None)`."""
    class Boom(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise RuntimeError("boom")

    model = _tiny_model(steps_per_execution=2)
    annealing = callbacks.KLAnnealing("linear", beta_max=2.0, warmup_steps=100)
    with pytest.raises(RuntimeError, match="boom"):
        model.fit(X, epochs=2, batch_size=4, verbose=0, callbacks=[annealing, Boom()])
    assert model.beta_schedule is not None
    model.set_beta_schedule(None)
    model.beta.assign(0.3)
    model.fit(X, epochs=1, batch_size=4, verbose=0)
    assert float(model.beta.numpy()) == pytest.approx(0.3)


@pytest.mark.parametrize("steps_per_execution", [1, 3])
def test_a_beta_schedule_as_the_models_beta_anneals_every_step(steps_per_execution):
    """`beta=BetaSchedule(...)`: β follows the optimizer's step inside the compiled step,
    at any steps per call, with no callback; it is saved with the model."""
    keras.utils.set_random_seed(0)
    schedule = BetaSchedule("linear", beta_max=2.0, warmup_steps=4)
    model = DenseVAE(input_shape=(6,), latent_dim=3, hidden_units=(8,), beta=schedule, seed=0)
    model.compile(optimizer="adam", steps_per_execution=steps_per_execution)
    assert float(model.beta.numpy()) == 0.0 and model.initial_beta == 0.0
    history = model.fit(X, epochs=2, batch_size=4, verbose=0)
    np.testing.assert_allclose(history.history["beta"], [0.75, 2.0], rtol=1e-6)
    clone = DenseVAE.from_config(model.get_config())
    assert clone.beta_schedule.get_config() == schedule.get_config()


def test_beta_schedule_matches_the_registered_formula():
    schedule = BetaSchedule("sigmoid", beta_min=0.1, beta_max=3.0, warmup_steps=50)
    fn = SCHEDULES.get("sigmoid")
    options = dict(beta_min=0.1, beta_max=3.0, warmup_steps=50)
    for step in (0, 10, 25, 49, 50, 80):
        assert schedule(step) == fn(step, **options)
        assert float(schedule(tf.constant(step, tf.int64))) == pytest.approx(fn(step, **options))
    with pytest.raises(ValueError):
        BetaSchedule("linear", beta_min=2.0, beta_max=1.0)


def test_schedules_accept_tensor_steps():
    """In the compiled step the schedule gets the optimizer's counter as a tensor."""
    options = dict(beta_min=0.0, beta_max=1.0, warmup_steps=10, total_steps=40, cycles=2, ratio=0.5)
    steps = tf.constant([0, 3, 10, 25], tf.int64)
    for name in ("constant", "linear", "sigmoid", "cyclical"):
        fn = SCHEDULES.get(name)
        values = fn(steps, **options)
        assert tf.is_tensor(values) and values.shape == (4,)
        np.testing.assert_allclose(values.numpy(), [fn(int(s), **options) for s in steps], rtol=1e-12)


def test_kl_annealing_cyclical_uses_model_beta_as_peak():
    """Cyclical over 2 epochs × 4 steps, 2 cycles, ratio 0.5; beta_max defaults to the model's β."""
    model, recorder = _tiny_model(beta=3.0), BetaRecorder()
    annealing = callbacks.KLAnnealing("cyclical", cycles=2, ratio=0.5)
    history = model.fit(X, epochs=2, batch_size=4, verbose=0, callbacks=[annealing, recorder])
    expected = [0.0, 1.5, 3.0, 3.0] * 2  # period 4: rises over 2 steps, flat, then resets
    np.testing.assert_allclose(recorder.betas, expected, rtol=1e-6)
    np.testing.assert_allclose(history.history["beta_end"], [3.0, 3.0], rtol=1e-6)


@pytest.mark.slow
def test_kl_annealing_continues_across_fit_calls():
    """The global step carries over to a second fit: no restart of the warm-up."""
    model, recorder = _tiny_model(), BetaRecorder()
    annealing = callbacks.KLAnnealing("linear", beta_max=1.0, warmup_steps=8)
    model.fit(X, epochs=1, batch_size=4, verbose=0, callbacks=[annealing, recorder])
    model.fit(X, epochs=1, batch_size=4, verbose=0, callbacks=[annealing, recorder])
    np.testing.assert_allclose(recorder.betas, np.arange(8) / 8, rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(warmup_steps=10, warmup_epochs=2),
        dict(beta_min=-0.1),
        dict(beta_min=0.5, beta_max=0.2),
        dict(schedule="cyclical", cycles=0),
        dict(schedule="cyclical", ratio=0.0),
        dict(schedule="cyclical", ratio=1.5),
        dict(schedule="linaer"),
    ],
)
def test_kl_annealing_invalid_arguments(kwargs):
    """Both warm-ups, negative or inverted β bounds, bad cycles/ratio, unknown names: ValueError."""
    with pytest.raises(ValueError):
        callbacks.KLAnnealing(**kwargs)


@pytest.mark.filterwarnings("ignore:Your input ran out of data")
def test_kl_annealing_warmup_epochs_with_unknown_cardinality():
    """warmup_epochs on a dataset of unknown length is refused; warmup_steps works."""
    model, recorder = _tiny_model(), BetaRecorder()
    ds = tf.data.Dataset.from_tensor_slices(X).filter(lambda x: True).batch(4)  # 4 steps, unknown
    annealing = callbacks.KLAnnealing("linear", beta_max=2.0, warmup_epochs=1)
    with pytest.raises(ValueError, match="steps per epoch"):
        model.fit(ds, epochs=2, verbose=0, shuffle=False, callbacks=[annealing])
    annealing = callbacks.KLAnnealing("linear", beta_max=2.0, warmup_steps=4)
    model.fit(ds, epochs=2, verbose=0, shuffle=False, callbacks=[annealing, recorder])
    np.testing.assert_allclose(recorder.betas, [0.0, 0.5, 1.0, 1.5, 2.0, 2.0, 2.0, 2.0])
