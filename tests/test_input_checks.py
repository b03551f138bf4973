"""Bad conditions and bad data are refused on every path with a one-line message:
class labels (eager API, `vae_zoo.evaluate`, Keras' fit/evaluate/predict with arrays
and datasets, XLA or not, graphs), condition vectors, and the graph-side support checks
of the likelihood heads. (The serving signatures: `tests/test_export.py`.)"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import binary_data
from vae_zoo import evaluate, heads
from vae_zoo.heads.base import check_assertions, failed_check, first_failure
from vae_zoo.models import ConditionalGaussianPrior, ConditionalVAE

X = binary_data(4, (4, 4, 1))
GOOD = np.array([0, 1, 2, 0])
# (labels for the 4 examples of X, the one-line message)
BAD_LABELS = [
    (np.array([0, 1, 12, 2]), r"labels must lie in \[0, 3\), got label 12"),
    (np.array([0, -1, 2, 2]), r"labels must lie in \[0, 3\), got label -1"),
    (np.array([0, 1, 2.5, 2]), r"labels must be integers, got 2.5"),
    (np.array([0, np.nan, 1, 2]), r"labels must be integers, got nan"),
    (np.array([0, 1, 2**32 + 1, 2], np.int64), r"labels must lie in \[0, 3\), got label 4294967297"),
    (np.array(["0", "1", "2", "0"]), r"labels must be integer class numbers, got dtype <U1"),
    (np.array([0]), r"1 labels for 4 examples"),
]


def tiny_cvae(**kwargs):
    kwargs.setdefault("num_classes", 3)
    return ConditionalVAE((4, 4, 1), 2, hidden_units=(8,), seed=0, **kwargs)


def one_line(message):
    return rf"^{message}$"


@pytest.mark.parametrize("labels, message", BAD_LABELS)
def test_bad_labels_in_the_eager_api(labels, message):
    model = tiny_cvae()
    z = np.zeros((4, 2), np.float32)
    calls = [
        lambda: model.encode(X, labels),
        lambda: model.decode(z, labels),
        lambda: model.reconstruct(X, labels),
        lambda: model.anomaly_score(X, labels, num_samples=2),
        lambda: evaluate.elbo(model, X, y=labels),
        lambda: evaluate.log_likelihood(model, X, 2, y=labels),
        lambda: evaluate.posterior_statistics(model, X, y=labels),
        lambda: evaluate.summarize(model, X, 2, y=labels),
    ]
    if len(labels) == 4:
        calls.append(lambda: model.sample(4, y=labels))
    for call in calls:
        with pytest.raises(ValueError, match=one_line(message)):
            call()


def test_missing_labels_are_one_line_errors():
    model = tiny_cvae()
    for routine in (evaluate.elbo, evaluate.log_likelihood, evaluate.posterior_statistics):
        with pytest.raises(ValueError, match=one_line("ConditionalVAE needs class labels y, one per example")):
            routine(model, X)
    vectors = ConditionalVAE((6,), 2, condition_dim=3, hidden_units=(8,), seed=0)
    with pytest.raises(ValueError, match=one_line(r"ConditionalVAE needs condition vectors y \[B, 3\]")):
        evaluate.elbo(vectors, binary_data(2))


def test_label_out_of_range_names_any_label_that_is_not_a_class_number():
    model = tiny_cvae()
    assert evaluate.label_out_of_range(model, [0, 1, 2]) is None
    assert np.isnan(evaluate.label_out_of_range(model, [0, np.nan]))
    assert evaluate.label_out_of_range(model, [0, 2.5]) == 2.5
    assert evaluate.label_out_of_range(model, np.array([2**32 + 1], np.int64)) == 2**32 + 1


def test_condition_vectors_must_be_finite_and_one_per_example():
    model = ConditionalVAE((6,), 2, condition_dim=3, hidden_units=(8,), seed=0)
    x, c = binary_data(2), np.zeros((2, 3), np.float32)
    c[1, 2] = np.nan
    with pytest.raises(ValueError, match=one_line("condition vectors must be finite, got nan")):
        model.encode(x, c)
    with pytest.raises(ValueError, match=one_line("1 conditions for 2 examples")):
        model.encode(x, c[:1])
    with pytest.raises(ValueError, match=one_line("labels must be finite, got inf")):
        tiny_cvae().encode(X, np.full((4, 3), np.inf, np.float32))  # one-hot rows


@pytest.mark.xla
def test_graph_checks_run_whatever_the_models_xla_setting():
    """In a plain graph the checks are assertions, also for a model compiled with XLA
    (its steps are checked before they run); under XLA they are dropped, and the
    function still compiles."""
    model = tiny_cvae()
    model.compile(optimizer="adam")  # jit_compile=True
    graph = tf.function(model.elbo)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[labels must be integers, got\] \[nan\]"):
        graph(X, tf.constant([0, np.nan, 1, 2]))
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        graph(X, tf.constant([0, 1, 2**32 + 1, 2], tf.int64))
    assert failed_check(caught.value) == "labels must lie in [0, 3), got label 4294967297"
    dynamic = tf.function(model.encode, input_signature=[
        tf.TensorSpec([None, 4, 4, 1]), tf.TensorSpec([None], tf.int32)])
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        dynamic(X, tf.constant([0, 1]))
    assert failed_check(caught.value) == "2 labels for 4 examples"
    xla = tf.function(lambda x, y: model.elbo(x, y, seed=[0, 0])["elbo"], jit_compile=True)
    assert np.isfinite(xla(X, tf.constant(GOOD))).all()  # compiles: no string ops


@pytest.mark.parametrize("feed, jit_compile", [
    ("arrays", True), ("validation_arrays", True),  # checked before fit starts
    ("dataset", True), ("dataset", False), ("validation_dataset", True),  # in the pipeline
])
def test_fit_refuses_bad_labels(feed, jit_compile):
    model = tiny_cvae()
    model.compile(optimizer="adam", jit_compile=jit_compile)
    bad = np.array([0, 1, 12, 2])
    good_data = tf.data.Dataset.from_tensor_slices((X, GOOD)).batch(2)
    bad_data = tf.data.Dataset.from_tensor_slices((X, bad)).batch(2)
    fits = {
        "arrays": lambda: model.fit(X, bad, batch_size=2, verbose=0),
        "dataset": lambda: model.fit(bad_data, verbose=0),
        "validation_arrays": lambda: model.fit(good_data, validation_data=(X, bad), verbose=0),
        "validation_dataset": lambda: model.fit(good_data, validation_data=bad_data, verbose=0),
    }
    with pytest.raises(ValueError, match=one_line(r"labels must lie in \[0, 3\), got label 12")):
        fits[feed]()


def test_evaluate_and_predict_refuse_bad_labels():
    model = tiny_cvae()
    model.compile(optimizer="adam")
    bad = np.array([0, 1, 2.5, 2])
    message = one_line("labels must be integers, got 2.5")
    with pytest.raises(ValueError, match=message):
        model.evaluate(X, bad, verbose=0)
    with pytest.raises(ValueError, match=message):
        model.predict((X, bad), verbose=0)
    with pytest.raises(ValueError, match=message):
        model.predict(tf.data.Dataset.from_tensor_slices((X, bad)).batch(2), verbose=0)
    with pytest.raises(ValueError, match=one_line("ConditionalVAE trains on .* got no y.*")):
        model.fit(tf.data.Dataset.from_tensor_slices(X).batch(2), verbose=0)
    assert model.predict((X, GOOD), verbose=0).shape == X.shape


def test_conditional_prior_takes_condition_vectors():
    prior = ConditionalGaussianPrior((2,), hidden_units=(4,))
    with pytest.raises(ValueError, match=r"takes float condition vectors \[B, k\] \(one-hot labels\), got int32"):
        prior.distribution(tf.constant([1, 2]))


@pytest.mark.parametrize("name", ["bernoulli", "categorical_256", "discretized_logistic_mixture",
                                  "gaussian"])
def test_support_check_in_a_graph_matches_support_problem(name):
    """The graph-side support check fails exactly where `support_problem` does, with the
    same message (values in full), under `tf.function`."""
    head = heads.LIKELIHOODS.build(name)
    x = np.array([[0.0, 1.0, 3 / 255, 0.5 / 255]], np.float32)

    @tf.function
    def checked(x):
        check = head.support_check(x, name="data")
        with tf.control_dependencies(check_assertions([check] if check else [])):
            return tf.identity(x)

    for data in (x[:, :2], x[:, 2:3], x):
        problem = head.support_problem(data)
        if problem is None:
            checked(data)
            continue
        with pytest.raises(tf.errors.InvalidArgumentError) as caught:
            checked(data)
        count = problem.split(", got ")[-1].split()[0]
        expected = f"data lies outside the support of the likelihood: {head.support}, got {count} values like"
        assert failed_check(caught.value).startswith(expected)
        assert first_failure([head.support_check(data, name="data")]).startswith(expected)
