"""Disentanglement metrics: MIG, DCI, the FactorVAE score, the β-VAE score and SAP.

Each metric scores a representation r(x) (for a VAE, `lambda x: model.encode(x).mean()`)
against a dataset with known factors of variation (a *ground truth*, such as
`vae_zoo.data.dsprites.DSprites`): any object with

- `factor_sizes`: the number of values of each of the K factors;
- `sample_factors(num, random_state)`: int `[num, K]` factor indices;
- `render(factors)`: the observations of those factors, what `representation_fn` takes.

`representation_fn` maps a batch of observations to codes `[B, D]` (a numpy array or a
tensor). Every metric takes `random_state` (an int or a `np.random.Generator`) and is a
deterministic function of it (given a deterministic `representation_fn`). Scores near
1 mean disentangled; 0 (or chance, for the two classifier scores) means not.

The estimators need a regressor or a classifier; disentanglement_lib (Locatello et al.
2019, arXiv:1811.12359) uses scikit-learn's. These are small numpy ones
(`vae_zoo.estimators`), documented in each metric with how they differ, so figures are
close to but not identical with disentanglement_lib's.

Example:

```python
from vae_zoo import disentanglement
from vae_zoo.data.dsprites import DSprites

encode = lambda x: model.encode(x).mean()
scores = disentanglement.evaluate_all(encode, DSprites(), random_state=0)
# {"mig": ..., "dci_disentanglement": ..., "factor_vae_eval_accuracy": ..., ...}
```
"""

from __future__ import annotations

import numpy as np

from vae_zoo.estimators import (
    dci_from_importance,
    discrete_mutual_info,
    discretize,
    lasso,
    softmax_regression,
    standardize,
    threshold_accuracy,
)

# ---------------------------------------------------------------- Sampling


def _rng(random_state):
    return random_state if isinstance(random_state, np.random.Generator) \
        else np.random.default_rng(random_state)


def encode_factors(representation_fn, ground_truth, factors, batch_size=64):
    """Codes float64 `[N, D]` of the observations of `factors` (int `[N, K]`), rendered
    and encoded `batch_size` at a time."""
    codes = [np.asarray(representation_fn(ground_truth.render(factors[i:i + batch_size])))
             for i in range(0, len(factors), batch_size)]
    return np.concatenate(codes).reshape(len(factors), -1).astype(np.float64)


def sample_codes(representation_fn, ground_truth, num, random_state, batch_size=64):
    """`num` factor vectors drawn from the ground truth and their codes:
    `(codes float64 [num, D], factors int64 [num, K])`."""
    factors = np.asarray(ground_truth.sample_factors(num, _rng(random_state)), np.int64)
    return encode_factors(representation_fn, ground_truth, factors, batch_size), factors


# ---------------------------------------------------------------- MIG


def mig(representation_fn, ground_truth, random_state=0, num_train=10_000, batch_size=64,
        num_bins=20):
    """Mutual Information Gap (Chen et al. 2018, arXiv:1802.04942).

    For each factor v_k, the gap between the two largest mutual informations
    I(z_d; v_k) over the code dimensions, divided by the entropy H(v_k); averaged over
    the factors. As in disentanglement_lib, z is the code of `num_train` sampled
    points, each dimension discretized into `num_bins` equal-width bins, and the
    mutual information is that of the empirical contingency tables. A factor with more
    values than `num_bins` cannot reach 1 even when a code dimension copies it.

    Args:
        representation_fn: observations `[B, ...]` → codes `[B, D]`.
        ground_truth: `factor_sizes`, `sample_factors`, `render` (module docstring).
        random_state: int or `np.random.Generator`.
        num_train: points sampled.
        batch_size: observations per call of `representation_fn`.
        num_bins: bins per code dimension.

    Returns:
        `{"mig": float in [0, 1], "mig_per_factor": list of K floats}`.
    """
    codes, factors = sample_codes(representation_fn, ground_truth, num_train, random_state,
                                  batch_size)
    binned = discretize(codes, num_bins)
    gaps = []
    for k in range(factors.shape[1]):
        entropy = discrete_mutual_info(factors[:, k], factors[:, k])
        info = sorted((discrete_mutual_info(binned[:, d], factors[:, k])
                       for d in range(binned.shape[1])), reverse=True) + [0.0]
        gaps.append((info[0] - info[1]) / entropy if entropy > 0 else 0.0)
    return {"mig": float(np.mean(gaps)), "mig_per_factor": [float(g) for g in gaps]}


# ---------------------------------------------------------------- DCI


def dci(representation_fn, ground_truth, random_state=0, num_train=10_000, num_test=5_000,
        batch_size=64, alpha=None):
    """DCI disentanglement, completeness and informativeness (Eastwood & Williams,
    "A Framework for the Quantitative Evaluation of Disentangled Representations",
    ICLR 2018), with lasso regressors (the paper's linear variant).

    Codes and factor indices are standardized on the training points; for each factor
    a lasso (`lasso`, penalty `alpha`) predicts it from all code dimensions; the
    importance R_dk is |w_dk|. The penalty defaults to 4/√num_train, four standard
    deviations of the correlation of independent variables over the training points:
    below it, chance correlations of an uninformative code would survive as small
    weights, and D and C, which only see how weights are spread, would score them. Informativeness is the mean over factors of the R²
    (1 − mean squared error / variance) of those predictions, on the training and on
    held-out points (higher is better; the paper reports the error, 1 − R²).

    Differences from disentanglement_lib: it fits gradient-boosted trees (one
    classifier per factor) and takes their feature importances, and reports
    informativeness as classification accuracy. The linear importances here see only
    what a code encodes linearly (a factor encoded by sin and cos in two dimensions,
    like an orientation, is partly missed), and a categorical factor is regressed on
    its index like an ordered one.

    Args:
        representation_fn, ground_truth, random_state, batch_size: as in `mig`.
        num_train, num_test: points to fit the regressors and to test them.
        alpha: the lasso penalty on standardized data (default 4/√num_train).

    Returns:
        `{"dci_disentanglement", "dci_completeness", "dci_informativeness_train",
        "dci_informativeness_test"}`, floats; `"dci_importance"`, R as a list of D lists.
    """
    rng = _rng(random_state)
    codes_train, factors_train = sample_codes(representation_fn, ground_truth, num_train,
                                              rng, batch_size)
    codes_test, factors_test = sample_codes(representation_fn, ground_truth, num_test, rng,
                                            batch_size)
    x_train, x_test = standardize(codes_train, codes_test)
    y_train, y_test = standardize(factors_train.astype(np.float64),
                                   factors_test.astype(np.float64))
    alpha = 4 / np.sqrt(num_train) if alpha is None else alpha
    importance = np.zeros((x_train.shape[1], y_train.shape[1]))
    r2_train, r2_test = [], []
    for k in range(y_train.shape[1]):
        w = lasso(x_train, y_train[:, k], alpha)
        importance[:, k] = np.abs(w)
        r2_train.append(1 - np.mean((y_train[:, k] - x_train @ w) ** 2))
        r2_test.append(1 - np.mean((y_test[:, k] - x_test @ w) ** 2) / max(y_test[:, k].var(), 1e-12))
    disentanglement, completeness = dci_from_importance(importance)
    return {
        "dci_disentanglement": disentanglement,
        "dci_completeness": completeness,
        "dci_informativeness_train": float(np.mean(r2_train)),
        "dci_informativeness_test": float(np.mean(r2_test)),
        "dci_importance": importance.tolist(),
    }


# ---------------------------------------------------------------- FactorVAE score


def _factor_vae_votes(representation_fn, ground_truth, num_votes, rng, batch_size,
                      scale, active):
    """Votes `[D, K]`: for each, a factor k fixed across a batch; the vote goes to the
    active dimension of least variance (divided by its global variance)."""
    sizes = ground_truth.factor_sizes
    votes = np.zeros((len(scale), len(sizes)), np.int64)
    for _ in range(num_votes):
        k = int(rng.integers(len(sizes)))
        factors = np.asarray(ground_truth.sample_factors(batch_size, rng), np.int64)
        factors[:, k] = factors[0, k]
        codes = encode_factors(representation_fn, ground_truth, factors, batch_size)
        variances = np.var(codes, axis=0, ddof=1) / scale
        dims = np.flatnonzero(active)
        votes[dims[np.argmin(variances[dims])], k] += 1
    return votes


def factor_vae_score(representation_fn, ground_truth, random_state=0, batch_size=64,
                     num_train=10_000, num_eval=5_000, num_variance_estimate=10_000,
                     prune_threshold=0.05):
    """The FactorVAE score (Kim & Mnih, "Disentangling by Factorising",
    arXiv:1802.05983).

    Each vote fixes one factor k (drawn uniformly) across `batch_size` sampled points,
    divides each code dimension's variance over the batch by its variance over the data
    (estimated from `num_variance_estimate` points), and votes (d, k) for the dimension
    d of least variance. Dimensions whose standard deviation over the data is below
    `prune_threshold` (collapsed) never get votes. The classifier is the majority vote:
    dimension d predicts the factor it got most training votes for; the score is its
    accuracy on `num_train` training and `num_eval` fresh votes. The settings are those
    of disentanglement_lib's study (batch 64, 10,000 and 5,000 votes, its
    `prune_dims.threshold = 0.05` on the standard deviation, an absolute threshold meant
    for VAE codes of unit scale); a representation with no active dimension scores 0.

    Args:
        representation_fn, ground_truth, random_state: as in `mig`.
        batch_size: points per vote (all encoded in one call).
        num_train, num_eval: training and evaluation votes.
        num_variance_estimate: points for the global variances.
        prune_threshold: least standard deviation over the data of an active dimension.

    Returns:
        `{"factor_vae_train_accuracy", "factor_vae_eval_accuracy", "factor_vae_active_dims"}`.
    """
    rng = _rng(random_state)
    codes, _ = sample_codes(representation_fn, ground_truth, num_variance_estimate, rng,
                            batch_size)
    scale = np.var(codes, axis=0, ddof=1)
    active = np.sqrt(scale) >= prune_threshold
    if not active.any():
        return {"factor_vae_train_accuracy": 0.0, "factor_vae_eval_accuracy": 0.0,
                "factor_vae_active_dims": 0}
    train = _factor_vae_votes(representation_fn, ground_truth, num_train, rng, batch_size,
                              scale, active)
    evaluation = _factor_vae_votes(representation_fn, ground_truth, num_eval, rng,
                                   batch_size, scale, active)
    predicted = np.argmax(train, axis=1)  # [D]: each dimension's majority factor
    rows = np.arange(len(predicted))
    return {
        "factor_vae_train_accuracy": float(train[rows, predicted].sum() / train.sum()),
        "factor_vae_eval_accuracy": float(evaluation[rows, predicted].sum() / evaluation.sum()),
        "factor_vae_active_dims": int(active.sum()),
    }


# ---------------------------------------------------------------- β-VAE score


def _beta_vae_points(representation_fn, ground_truth, num_points, rng, batch_size):
    """`num_points` training points: features mean_l |r(x1_l) − r(x2_l)| over
    `batch_size` pairs sharing one factor k (drawn uniformly); labels k."""
    sizes = ground_truth.factor_sizes
    features, labels = [], rng.integers(len(sizes), size=num_points)
    for k in labels:
        first = np.asarray(ground_truth.sample_factors(batch_size, rng), np.int64)
        second = np.asarray(ground_truth.sample_factors(batch_size, rng), np.int64)
        second[:, k] = first[:, k]
        codes = encode_factors(representation_fn, ground_truth,
                               np.concatenate([first, second]), 2 * batch_size)
        features.append(np.mean(np.abs(codes[:batch_size] - codes[batch_size:]), axis=0))
    return np.array(features), labels


def beta_vae_score(representation_fn, ground_truth, random_state=0, batch_size=64,
                   num_train=10_000, num_eval=5_000):
    """The β-VAE score (Higgins et al., "β-VAE: Learning Basic Visual Concepts with a
    Constrained Variational Framework", ICLR 2017).

    Each point fixes one factor k (drawn uniformly) in `batch_size` pairs of otherwise
    independent samples; its feature is the mean absolute difference of the pairs'
    codes, its label k. A linear classifier (`softmax_regression` on features
    standardized with the training points) predicts k; the score is its accuracy on
    `num_train` training and `num_eval` fresh points; chance is 1/K.

    Differences from disentanglement_lib: it fits scikit-learn's LogisticRegression
    (L2 penalty C = 1, lbfgs) on unstandardized features; here the features are
    standardized and the penalty is 1e-3 × N, so the score does not depend on the
    codes' scale.

    Args:
        representation_fn, ground_truth, random_state: as in `mig`.
        batch_size: pairs per point.
        num_train, num_eval: training and evaluation points.

    Returns:
        `{"beta_vae_train_accuracy", "beta_vae_eval_accuracy"}`.
    """
    rng = _rng(random_state)
    x_train, y_train = _beta_vae_points(representation_fn, ground_truth, num_train, rng,
                                        batch_size)
    x_eval, y_eval = _beta_vae_points(representation_fn, ground_truth, num_eval, rng,
                                      batch_size)
    x_train, x_eval = standardize(x_train, x_eval)
    num_classes = len(ground_truth.factor_sizes)
    w, b = softmax_regression(x_train, y_train, num_classes)
    accuracy = lambda x, y: float(np.mean(np.argmax(x @ w + b, axis=1) == y))  # noqa: E731
    return {"beta_vae_train_accuracy": accuracy(x_train, y_train),
            "beta_vae_eval_accuracy": accuracy(x_eval, y_eval)}


# ---------------------------------------------------------------- SAP


def sap(representation_fn, ground_truth, random_state=0, num_train=10_000, num_test=5_000,
        batch_size=64, continuous_factors=False):
    """The Separated Attribute Predictability score (Kumar et al., "Variational
    Inference of Disentangled Latent Concepts from Unlabeled Observations",
    arXiv:1711.00848).

    A score matrix S `[D, K]` says how well code dimension d alone predicts factor k;
    SAP is the mean over factors of the gap between the two largest S_dk. With
    `continuous_factors`, S_dk is the R² of a linear regression of the factor on the
    dimension (its squared correlation, on the training points); otherwise the
    chance-corrected test accuracy of a nearest-class-mean threshold classifier
    (`_threshold_accuracy`). A constant dimension scores 0.

    Differences from disentanglement_lib (discrete factors): it fits a one-vs-rest
    linear SVM (LinearSVC, C = 0.01, balanced class weights) to the one dimension and
    scores its plain accuracy. On a single dimension each class's score is a line in
    the same number, and a middle value of a factor cannot be told from the values on
    both sides of it by one such line, so the SVM seldom predicts middle values: even a
    code equal to the factor scores far below 1 on a factor of many values (0.62 and
    0.38 for 5 and 8 equally likely values, where the threshold classifier here scores
    about 1; tested against scikit-learn). The classifier here cuts between neighbouring
    class means, so a perfect code scores 1 on every factor, and its chance correction
    puts a dimension that says nothing of the factor at 0.

    Args:
        representation_fn, ground_truth, random_state, batch_size: as in `mig`.
        num_train, num_test: points to fit the predictors and to test them.
        continuous_factors: R² of a regression instead of a classifier's accuracy.

    Returns:
        `{"sap": float in [0, 1], "sap_matrix": S as a list of D lists}`.
    """
    rng = _rng(random_state)
    codes_train, factors_train = sample_codes(representation_fn, ground_truth, num_train,
                                              rng, batch_size)
    codes_test, factors_test = sample_codes(representation_fn, ground_truth, num_test, rng,
                                            batch_size)
    dims, num_factors = codes_train.shape[1], factors_train.shape[1]
    scores = np.zeros((dims, num_factors))
    for d in range(dims):
        if codes_train[:, d].std() == 0:
            continue
        for k in range(num_factors):
            if continuous_factors:
                if factors_train[:, k].std() > 0:
                    scores[d, k] = np.corrcoef(codes_train[:, d], factors_train[:, k])[0, 1] ** 2
            else:
                scores[d, k] = threshold_accuracy(codes_train[:, d], factors_train[:, k],
                                                   codes_test[:, d], factors_test[:, k])
    top = np.sort(scores, axis=0)[::-1]
    gaps = top[0] - (top[1] if dims > 1 else 0.0)
    return {"sap": float(np.mean(gaps)), "sap_matrix": scores.tolist()}


# ---------------------------------------------------------------- All five

# The headline figure of each metric.
HEADLINE = {"mig": "mig", "dci": "dci_disentanglement", "factor_vae": "factor_vae_eval_accuracy",
            "beta_vae": "beta_vae_eval_accuracy", "sap": "sap"}
METRICS = {"mig": mig, "dci": dci, "factor_vae": factor_vae_score,
           "beta_vae": beta_vae_score, "sap": sap}


def evaluate_all(representation_fn, ground_truth, random_state=0, num_points=10_000,
                 num_votes=10_000, batch_size=64):
    """The five metrics at one budget: `num_points` sampled points for MIG, DCI and SAP
    (DCI and SAP test on half as many more), `num_votes` training votes / points for the
    FactorVAE and β-VAE scores (half as many to evaluate). Each metric draws from its
    own generator, spawned from `random_state`.

    Returns:
        A dict of floats: every scalar the five metrics return (the headline figures
        are `HEADLINE`'s); the matrices are left out.
    """
    seeds = np.random.SeedSequence(random_state if isinstance(random_state, int) else
                                   _rng(random_state).integers(2**32)).spawn(len(METRICS))
    generators = dict(zip(METRICS, map(np.random.default_rng, seeds)))
    common = dict(batch_size=batch_size)
    results = {}
    results.update(mig(representation_fn, ground_truth, generators["mig"],
                       num_train=num_points, **common))
    results.update(dci(representation_fn, ground_truth, generators["dci"],
                       num_train=num_points, num_test=max(1, num_points // 2), **common))
    results.update(factor_vae_score(representation_fn, ground_truth, generators["factor_vae"],
                                    num_train=num_votes, num_eval=max(1, num_votes // 2),
                                    num_variance_estimate=num_points, **common))
    results.update(beta_vae_score(representation_fn, ground_truth, generators["beta_vae"],
                                  num_train=num_votes, num_eval=max(1, num_votes // 2),
                                  **common))
    results.update(sap(representation_fn, ground_truth, generators["sap"],
                       num_train=num_points, num_test=max(1, num_points // 2), **common))
    return {name: value for name, value in results.items() if not isinstance(value, list)}
