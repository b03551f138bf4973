"""The small numpy estimators the disentanglement metrics fit (`vae_zoo.disentanglement`).

disentanglement_lib uses scikit-learn's; these are written out so that the metrics
need numpy only, each documented with what it computes: equal-width binning and the
mutual information of discrete variables (MIG), the lasso and the entropies of an
importance matrix (DCI), multinomial logistic regression (the β-VAE score) and a
one-dimensional nearest-class-mean classifier (SAP).
"""

from __future__ import annotations

import numpy as np


def discretize(codes, num_bins=20):
    """Each column of `codes` `[N, D]` cut into `num_bins` equal-width bins over its
    range: int `[N, D]` bin numbers (as disentanglement_lib's histogram discretizer)."""
    codes = np.asarray(codes, np.float64)
    binned = np.zeros(codes.shape, np.int64)
    for d in range(codes.shape[1]):
        edges = np.histogram(codes[:, d], num_bins)[1]
        binned[:, d] = np.digitize(codes[:, d], edges[:-1])
    return binned


def discrete_mutual_info(a, b):
    """Mutual information in nats of two discrete variables observed together (int
    `[N]` each), from their contingency table: Σ p(a, b) log p(a, b) / (p(a) p(b))."""
    _, a = np.unique(a, return_inverse=True)
    _, b = np.unique(b, return_inverse=True)
    joint = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(joint, (a, b), 1)
    joint /= joint.sum()
    outer = joint.sum(axis=1, keepdims=True) * joint.sum(axis=0, keepdims=True)
    nonzero = joint > 0
    return float(np.sum(joint[nonzero] * np.log(joint[nonzero] / outer[nonzero])))


def standardize(train, *others):
    """Each array standardized with the mean and standard deviation of `train`'s columns
    (a constant column becomes 0)."""
    mean, std = train.mean(axis=0), train.std(axis=0)
    std = np.where(std > 0, std, np.inf)  # a constant column becomes 0
    return [(x - mean) / std for x in (train, *others)]


def lasso(x, y, alpha, iterations=1000, tolerance=1e-8):
    """Weights w `[D]` minimizing ||y − x w||² / (2N) + alpha ||w||₁, by cyclic
    coordinate descent on the Gram matrix (`x` `[N, D]` and `y` `[N]` centred)."""
    n, dims = x.shape
    gram, corr = x.T @ x / n, x.T @ y / n
    w = np.zeros(dims)
    for _ in range(iterations):
        largest = 0.0
        for d in range(dims):
            if gram[d, d] == 0:
                continue
            rho = corr[d] - gram[d] @ w + gram[d, d] * w[d]
            new = np.sign(rho) * max(abs(rho) - alpha, 0.0) / gram[d, d]
            largest = max(largest, abs(new - w[d]))
            w[d] = new
        if largest < tolerance:
            break
    return w


def softmax_regression(x, y, num_classes, l2=1e-3, iterations=500):
    """Multinomial logistic regression fitted by accelerated gradient descent on the
    mean cross-entropy + (l2/2)||W||² (intercept unpenalized). `x` `[N, D]` should be
    standardized; `y` int `[N]`. Returns `(W [D, C], b [C])`."""
    n, dims = x.shape
    onehot = np.eye(num_classes)[y]
    # Step 1/L, L the gradient's Lipschitz constant: ||[x 1]||₂² / N / 2 + l2.
    step = 1.0 / (np.linalg.norm(np.c_[x, np.ones(n)], 2) ** 2 / (2 * n) + l2)
    w, b = np.zeros((dims, num_classes)), np.zeros(num_classes)
    w_prev, b_prev = w, b
    for t in range(1, iterations + 1):
        momentum = (t - 1) / (t + 2)
        w_look, b_look = w + momentum * (w - w_prev), b + momentum * (b - b_prev)
        logits = x @ w_look + b_look
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        error = (probs - onehot) / n
        w_prev, b_prev = w, b
        w = w_look - step * (x.T @ error + l2 * w_look)
        b = b_look - step * error.sum(axis=0)
    return w, b


def threshold_accuracy(code_train, y_train, code_test, y_test):
    """Chance-corrected test accuracy of a 1-D classifier of y from one code dimension:
    each value of y is represented by its mean code on the training points, and a code
    is classified as the nearest mean (thresholds halfway between adjacent means).
    (accuracy − majority-class rate) / (1 − majority-class rate), at least 0."""
    classes, y_index = np.unique(y_train, return_inverse=True)
    means = np.bincount(y_index, code_train) / np.bincount(y_index)
    predicted = classes[np.argmin(np.abs(code_test[:, None] - means[None, :]), axis=1)]
    accuracy = np.mean(predicted == y_test)
    majority = np.mean(y_test == classes[np.argmax(np.bincount(y_index))])
    return max(0.0, (accuracy - majority) / (1 - majority)) if majority < 1 else 0.0


def _normalized_entropy(p, axis):
    """1 − entropy of the distributions along `axis` in base (their length); 1 when
    the length is 1."""
    size = p.shape[axis]
    if size < 2:
        return np.ones(p.shape[1 - axis])
    logs = np.log(np.where(p > 0, p, 1.0))
    return 1 + np.sum(p * logs, axis=axis) / np.log(size)


def dci_from_importance(importance):
    """Disentanglement and completeness of an importance matrix R `[D, K]` (R_dk ≥ 0,
    how much code d predicts factor k), Eastwood & Williams 2018.

    Disentanglement: Σ_d ρ_d (1 − H_K(P_d·)), P_dk = R_dk / Σ_k R_dk, weights
    ρ_d = Σ_k R_dk / Σ R; completeness: Σ_k ρ_k (1 − H_D(P̃_·k)), P̃_dk = R_dk / Σ_d R_dk,
    ρ_k = Σ_d R_dk / Σ R (the weighting of disentanglement_lib). Entropies in base K and
    D. Both 0 when R is all zero.
    """
    importance = np.abs(np.asarray(importance, np.float64))
    total = importance.sum()
    if total == 0:
        return 0.0, 0.0
    per_code = importance.sum(axis=1)
    per_factor = importance.sum(axis=0)
    codes_p = importance / np.where(per_code > 0, per_code, 1)[:, None]
    factors_p = importance / np.where(per_factor > 0, per_factor, 1)[None, :]
    disentanglement = np.sum(_normalized_entropy(codes_p, 1) * per_code / total)
    completeness = np.sum(_normalized_entropy(factors_p, 0) * per_factor / total)
    return float(disentanglement), float(completeness)
