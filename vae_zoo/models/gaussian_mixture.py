"""The shallow latent-variable baseline: a Gaussian mixture fitted by EM.

z is categorical over K components and p(x|z=k) = N(x; μ_k, Σ_k), so
p(x) = Σ_k α_k N(x; μ_k, Σ_k) is exact and cheap: a reference point for a VAE's
importance-weighted bound on log p(x) (`vae_zoo.evaluate.log_likelihood`) on the same
data. Notation follows docs/theory.md and Bishop, PRML §9.2.

(About 460 lines: one self-contained estimator, EM in log space for two covariance
types with its checks, saving and sampling; it shares nothing with the VAE classes.)
"""

from __future__ import annotations

import json
import math

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions

COVARIANCE_TYPES = ("full", "diagonal")
INITS = ("kmeans++", "random")
FORMAT = "vae_zoo.GaussianMixture/1"

# Elements of the largest [components, rows, D] intermediate (float64: 128 MB).
_MAX_ELEMENTS = 1 << 24
# Floor on N_k, so an empty component gives α_k ≈ 0 rather than 0/0 (as scikit-learn).
_MIN_COUNT = 10 * np.finfo(np.float64).eps
_LOG_2PI = math.log(2.0 * math.pi)


class GaussianMixture:
    """Gaussian mixture p(x) = Σ_k α_k N(x; μ_k, Σ_k), fitted by expectation-maximization.

    EM alternates two closed-form steps (Dempster, Laird & Rubin 1977; Bishop, PRML
    §9.2.2). The E step computes the responsibilities

        γ_ik = α_k N(x_i; μ_k, Σ_k) / Σ_j α_j N(x_i; μ_j, Σ_j)

    in log space with a log-sum-exp over components. With N_k = Σ_i γ_ik, the M step
    sets

        α_k = N_k / N,   μ_k = Σ_i γ_ik x_i / N_k,
        Σ_k = Σ_i γ_ik (x_i − μ_k)(x_i − μ_k)ᵀ / N_k + reg_covar · I

    (only the diagonal of Σ_k for `covariance_type="diagonal"`). At `reg_covar=0` no
    iteration can lower the training log-likelihood. The ridge keeps Σ_k invertible
    (pixels that never vary, or fewer points in a component than dimensions), but then
    the M step maximizes a ridge-penalized objective, so the likelihood may dip by an
    amount that grows with `reg_covar` relative to the data's variances: negligible at
    the default 1e-6 on data with variances above ~1e-3, a few 1e-4 nats at 0.05 on
    dequantized binary MNIST. With fewer points per component than dimensions (full
    covariance, N/K < D) Σ_k is singular up to the ridge: the fit overfits badly and
    `reg_covar` acts as the real variance there.

    This is deliberately not a `keras.Model`: the M step is the exact maximizer of the
    expected complete-data log-likelihood, so there is no loss to differentiate, no
    optimizer and no learning rate, and the constraints (α on the simplex, Σ_k positive
    definite) hold by construction instead of through reparameterizations. Parameters
    are numpy arrays; the computations are vectorized TensorFlow in float64. On
    784-dimensional data float32 is marginal at best: a log-density is a sum of 784
    terms totalling hundreds of nats, so its float32 rounding error is of order
    1e-5-1e-4 nats, the size of `tol`, which would make the convergence test and EM's
    monotonicity unreliable; and a full Σ_k mixing pixel variances of ~0.1 with a ridge
    of 1e-6 has a condition number up to ~1e5-1e6, which leaves float32 Cholesky
    factors with few or no correct digits. float64 costs ~4x float32's matmul time on a
    CPU. Inputs of any real dtype are cast to float64 (uint8 images are divided by
    255, as elsewhere in vae_zoo).

    Examples `[N, ...]` are flattened to `[N, D]`. The fitted density is over the
    flattened vector: `distribution()` has batch shape `[]` and event shape `[D]`. A
    density on continuous x is not a probability mass: on binary or 8-bit data compare
    it with a discrete model (a Bernoulli VAE) only after uniform dequantization (see
    `benchmarks/gmm_baseline.py`).

    Args:
        num_components: int >= 1, K.
        covariance_type: `"full"` (Σ_k any positive definite `[D, D]`, via its
            Cholesky factor) or `"diagonal"` (Σ_k = diag σ²_k).
        reg_covar: float >= 0 added to the diagonal of every Σ_k (both types).
        max_iter: int >= 1, most EM iterations.
        tol: float >= 0; stop when the mean training log-likelihood changes by less.
        init: `"kmeans++"` (centres by k-means++ seeding, Arthur & Vassilvitskii 2007)
            or `"random"` (K distinct training points); every point is assigned to its
            nearest centre and one M step gives the initial α, μ, Σ.
        seed: int or None, makes the initialization reproducible.

    Attributes (after `fit`):
        weights: α, `[K]`. means: μ, `[K, D]`. covariances: Σ, `[K, D, D]` (full) or
        the diagonals `[K, D]` (diagonal). data_shape: shape of one example.
        log_likelihood_history: mean training log p(x) after the initialization
        (entry 0) and after each EM iteration (entry t); non-decreasing.
        n_iter: EM iterations run. converged: whether the last change was below `tol`.

    Example:
    ```python
    gmm = GaussianMixture(10, covariance_type="diagonal", seed=0).fit(x_train)
    log_px = gmm.log_prob(x_test)        # [N] exact log p(x), nats
    gamma = gmm.responsibilities(x_test) # [N, K], rows sum to 1
    x_new = gmm.sample(16, seed=0)       # [16, *data_shape]
    p = gmm.distribution()               # tfd.MixtureSameFamily, batch [], event [D]
    gmm.save("gmm.npz"); same = GaussianMixture.load("gmm.npz")
    ```
    """

    def __init__(
        self,
        num_components,
        covariance_type="full",
        reg_covar=1e-6,
        max_iter=100,
        tol=1e-4,
        init="kmeans++",
        seed=None,
    ):
        if not _is_int(num_components):
            raise ValueError(f"num_components must be an integer, got {num_components!r}")
        if num_components < 1:
            raise ValueError(f"num_components must be >= 1, got {num_components}")
        if covariance_type not in COVARIANCE_TYPES:
            raise ValueError(
                f"covariance_type must be one of {COVARIANCE_TYPES}, got {covariance_type!r}"
            )
        if not (_is_real(reg_covar) and np.isfinite(reg_covar) and reg_covar >= 0):
            raise ValueError(f"reg_covar must be a finite number >= 0, got {reg_covar!r}")
        if not _is_int(max_iter) or max_iter < 1:
            raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
        if not (_is_real(tol) and np.isfinite(tol) and tol >= 0):
            raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        if seed is not None and not _is_int(seed):
            raise ValueError(f"seed must be an integer or None, got {seed!r}")
        self.num_components = int(num_components)
        self.covariance_type = covariance_type
        self.reg_covar = float(reg_covar)
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self.init = init
        self.seed = None if seed is None else int(seed)

        self.weights = None
        self.means = None
        self.covariances = None
        self.data_shape = None
        self.log_likelihood_history = []
        self.n_iter = 0
        self.converged = False
        self._scale = None  # tf: Cholesky factors [K, D, D] or standard deviations [K, D]

    def get_config(self):
        return {
            "num_components": self.num_components,
            "covariance_type": self.covariance_type,
            "reg_covar": self.reg_covar,
            "max_iter": self.max_iter,
            "tol": self.tol,
            "init": self.init,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"GaussianMixture({args})"

    # ------------------------------------------------------------------ fitting

    def fit(self, x):
        """Run EM on `x` `[N, ...]` (N >= num_components); returns self.

        On an error the mixture is left as it was before the call.
        """
        x, shape = self._check_inputs(x, fitting=True)
        n = x.shape[0]
        if n < self.num_components:
            raise ValueError(
                f"fit needs at least num_components={self.num_components} examples, got {n}"
            )
        before = dict(self.__dict__)
        try:
            self._run_em(tf.constant(x))  # [N, D]
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(before)
            raise
        self.data_shape = shape
        return self

    def _run_em(self, x):
        centres = self._initial_centres(x.numpy())  # [K, D]
        gamma = tf.one_hot(_nearest(x, tf.constant(centres)), self.num_components, dtype=tf.float64)
        self._m_step(x, gamma)
        log_px, log_gamma = self._e_step(x)
        history = [float(tf.reduce_mean(log_px))]
        converged = False
        for _ in range(self.max_iter):
            self._m_step(x, tf.exp(log_gamma))
            log_px, log_gamma = self._e_step(x)
            history.append(float(tf.reduce_mean(log_px)))
            if abs(history[-1] - history[-2]) < self.tol:
                converged = True
                break
        self.log_likelihood_history = history
        self.n_iter = len(history) - 1
        self.converged = converged

    def _initial_centres(self, x):
        """K centres `[K, D]`: k-means++ seeding or K distinct random training points."""
        rng = np.random.default_rng(self.seed)
        n, k = len(x), self.num_components
        if self.init == "random":
            return x[rng.choice(n, size=k, replace=False)]
        # k-means++: each new centre is drawn with probability ∝ squared distance to the
        # nearest centre chosen so far.
        index = [int(rng.integers(n))]
        d2 = np.sum((x - x[index[0]]) ** 2, axis=1)  # [N]
        for _ in range(1, k):
            total = d2.sum()
            i = int(rng.choice(n, p=d2 / total)) if total > 0 else int(rng.integers(n))
            index.append(i)
            d2 = np.minimum(d2, np.sum((x - x[i]) ** 2, axis=1))
        return x[index]

    def _m_step(self, x, gamma):
        """α, μ, Σ from responsibilities `gamma` `[N, K]` (docs/theory.md's M step)."""
        n, d = x.shape
        n_k = tf.reduce_sum(gamma, axis=0) + _MIN_COUNT  # [K]
        alpha = n_k / float(n)  # [K]
        mu = tf.matmul(gamma, x, transpose_a=True) / n_k[:, None]  # [K, D]
        if self.covariance_type == "full":
            blocks = []
            for ks in _blocks(self.num_components, max(1, _MAX_ELEMENTS // (n * d))):
                diff = x[None, :, :] - mu[ks, None, :]  # [k, N, D]
                weighted = diff * tf.transpose(gamma[:, ks])[:, :, None]  # γ_ik (x_i − μ_k)
                blocks.append(tf.matmul(weighted, diff, transpose_a=True))  # [k, D, D]
            sigma = tf.concat(blocks, axis=0) / n_k[:, None, None]
            sigma = 0.5 * (sigma + tf.linalg.matrix_transpose(sigma))  # exact symmetry
            sigma += self.reg_covar * tf.eye(d, dtype=tf.float64)  # [K, D, D]
        else:
            # Σ_i γ_ik (x_i − μ_k)² / N_k = E_γ[x²] − μ_k², on data centred by its mean so
            # the difference does not cancel.
            shift = tf.reduce_mean(x, axis=0)
            xc, muc = x - shift, mu - shift
            sigma = tf.matmul(gamma, tf.square(xc), transpose_a=True) / n_k[:, None]
            sigma = tf.maximum(sigma - tf.square(muc), 0.0) + self.reg_covar  # [K, D]
        self._set_parameters(alpha.numpy(), mu.numpy(), sigma.numpy())

    def _e_step(self, x):
        """log p(x_i) `[N]` and log γ_ik `[N, K]` under the current parameters."""
        log_joint = tf.math.log(tf.constant(self.weights)) + self._log_gaussians(x)  # [N, K]
        log_px = tf.reduce_logsumexp(log_joint, axis=1)  # [N]
        return log_px, log_joint - log_px[:, None]

    def _log_gaussians(self, x):
        """log N(x_i; μ_k, Σ_k) `[N, K]` for float64 `x` `[N, D]`."""
        n, d = x.shape
        mu = tf.constant(self.means)
        if self.covariance_type == "diagonal":
            # Σ_d (x_d − μ_kd)² / σ²_kd expanded into matmuls, around the mixture mean.
            shift = tf.reduce_sum(tf.constant(self.weights)[:, None] * mu, axis=0)
            xc, muc = x - shift, mu - shift
            precision = 1.0 / tf.square(self._scale)  # [K, D]
            maha = (
                tf.matmul(tf.square(xc), precision, transpose_b=True)
                - 2.0 * tf.matmul(xc, muc * precision, transpose_b=True)
                + tf.reduce_sum(tf.square(muc) * precision, axis=1)
            )  # [N, K]
            maha = tf.maximum(maha, 0.0)
            log_det = 2.0 * tf.reduce_sum(tf.math.log(self._scale), axis=1)  # [K]
        else:
            # ||L_k⁻¹ (x_i − μ_k)||² with Σ_k = L_k L_kᵀ, a few components at a time.
            rows = max(1, min(n, _MAX_ELEMENTS // d))
            parts = []
            for r in _blocks(n, rows):
                xr = x[r]
                cols = []
                for ks in _blocks(self.num_components, max(1, _MAX_ELEMENTS // (xr.shape[0] * d))):
                    diff = tf.transpose(xr[None, :, :] - mu[ks, None, :], [0, 2, 1])  # [k, D, n]
                    solved = tf.linalg.triangular_solve(self._scale[ks], diff, lower=True)
                    cols.append(tf.transpose(tf.reduce_sum(tf.square(solved), axis=1)))  # [n, k]
                parts.append(tf.concat(cols, axis=1))
            maha = tf.concat(parts, axis=0)  # [N, K]
            log_det = 2.0 * tf.reduce_sum(
                tf.math.log(tf.linalg.diag_part(self._scale)), axis=1
            )  # [K]
        return -0.5 * (d * _LOG_2PI + log_det + maha)

    def _set_parameters(self, weights, means, covariances):
        """Store α, μ, Σ (numpy) and the matching Cholesky factors / standard deviations."""
        covariances = np.asarray(covariances, np.float64)
        if self.covariance_type == "full":
            try:
                scale = tf.linalg.cholesky(tf.constant(covariances))
            except tf.errors.InvalidArgumentError:
                scale = None
            if scale is None or not np.all(np.isfinite(scale.numpy())):
                raise ValueError(
                    "a component covariance is not positive definite; increase reg_covar "
                    f"(now {self.reg_covar})"
                )
        else:
            if np.any(covariances <= 0):
                raise ValueError(
                    f"a component variance is zero; increase reg_covar (now {self.reg_covar})"
                )
            scale = tf.sqrt(tf.constant(covariances))
        self.weights = np.asarray(weights, np.float64)
        self.means = np.asarray(means, np.float64)
        self.covariances = covariances
        self._scale = scale

    # ---------------------------------------------------------------- inference

    def log_prob(self, x):
        """Exact log p(x) in nats for `x` `[N, ...]`: numpy float64 `[N]`."""
        log_px, _ = self._e_step(tf.constant(self._check_inputs(x)[0]))
        return log_px.numpy()

    def responsibilities(self, x):
        """Posterior p(z=k|x_i) = γ_ik for `x` `[N, ...]`: numpy `[N, K]`, rows sum to 1."""
        _, log_gamma = self._e_step(tf.constant(self._check_inputs(x)[0]))
        return tf.exp(log_gamma).numpy()

    def predict(self, x):
        """Most responsible component argmax_k γ_ik for `x` `[N, ...]`: numpy int `[N]`."""
        _, log_gamma = self._e_step(tf.constant(self._check_inputs(x)[0]))
        return tf.argmax(log_gamma, axis=1).numpy()

    def sample(self, n, seed=None):
        """`n` draws z ~ Categorical(α), x ~ N(μ_z, Σ_z): numpy `[n, *data_shape]`."""
        self._check_fitted()
        if not _is_int(n) or n < 1:
            raise ValueError(f"n must be an integer >= 1, got {n!r}")
        seed = None if seed is None else tf.constant([int(seed), 0], tf.int32)
        x = self.distribution().sample(int(n), seed=seed)  # [n, D]
        return x.numpy().reshape((int(n),) + tuple(self.data_shape))

    def bic(self, x):
        """BIC −2 Σ_i log p(x_i) + (number of parameters) · log N of `x`; lower is better."""
        log_px = self.log_prob(x)
        return float(-2.0 * log_px.sum() + self.num_parameters() * math.log(len(log_px)))

    def num_parameters(self):
        """Free parameters: K − 1 weights, K·D means, and K·D(D+1)/2 or K·D covariances."""
        self._check_fitted()
        k, d = self.means.shape
        cov = k * d * (d + 1) // 2 if self.covariance_type == "full" else k * d
        return (k - 1) + k * d + cov

    def distribution(self):
        """The fitted mixture as `tfd.MixtureSameFamily`: batch `[]`, event `[D]`, float64.

        Components are `tfd.MultivariateNormalTriL(μ_k, L_k)` (full) or
        `tfd.Independent(tfd.Normal(μ_k, σ_k), 1)` (diagonal).
        """
        self._check_fitted()
        mixture = tfd.Categorical(logits=tf.math.log(tf.constant(self.weights)))
        if self.covariance_type == "full":
            components = tfd.MultivariateNormalTriL(
                loc=tf.constant(self.means), scale_tril=self._scale
            )  # batch [K], event [D]
        else:
            components = tfd.Independent(
                tfd.Normal(loc=tf.constant(self.means), scale=self._scale),
                reinterpreted_batch_ndims=1,
            )  # batch [K], event [D]
        return tfd.MixtureSameFamily(mixture, components)

    # ---------------------------------------------------------------- save/load

    def save(self, path):
        """Write config, parameters and fit record to an `.npz` file at exactly `path`."""
        self._check_fitted()
        with open(path, "wb") as f:
            np.savez(
                f,
                format=np.array(FORMAT),
                config=np.array(json.dumps(self.get_config())),
                weights=self.weights,
                means=self.means,
                covariances=self.covariances,
                data_shape=np.array(self.data_shape, np.int64),
                log_likelihood_history=np.array(self.log_likelihood_history, np.float64),
                n_iter=np.array(self.n_iter),
                converged=np.array(self.converged),
            )

    @classmethod
    def load(cls, path):
        """Read a mixture written by `save`."""
        with np.load(path, allow_pickle=False) as npz:
            if "format" not in npz.files or str(npz["format"]) != FORMAT:
                raise ValueError(f"{path} is not a saved vae_zoo GaussianMixture")
            model = cls.from_config(json.loads(str(npz["config"])))
            model._set_parameters(npz["weights"], npz["means"], npz["covariances"])
            model.data_shape = tuple(int(s) for s in npz["data_shape"])
            model.log_likelihood_history = [float(v) for v in npz["log_likelihood_history"]]
            model.n_iter = int(npz["n_iter"])
            model.converged = bool(npz["converged"])
        return model

    # ----------------------------------------------------------------- checking

    def _check_fitted(self):
        if self.means is None:
            raise RuntimeError("GaussianMixture is not fitted; call fit(x) first")

    def _check_inputs(self, x, fitting=False):
        """`[N, ...]` array → (float64 numpy `[N, D]`, shape of one example); one-line errors."""
        if not fitting:
            self._check_fitted()
        x = np.asarray(x)
        if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)
                or x.dtype == np.bool_):
            raise ValueError(f"x must be real numbers, got dtype {x.dtype}")
        if x.ndim < 2:
            raise ValueError(
                f"x must have shape [N, ...] with one example per row, got shape {x.shape}"
            )
        if x.shape[0] == 0:
            raise ValueError("x has no examples")
        shape = tuple(int(s) for s in x.shape[1:])
        if x.dtype == np.uint8:
            x = x / 255.0
        x = x.reshape(x.shape[0], -1).astype(np.float64)
        if not np.all(np.isfinite(x)):
            raise ValueError("x contains NaN or infinite values")
        if not fitting and x.shape[1] != math.prod(self.data_shape):
            raise ValueError(
                f"x has examples of shape {shape} ({x.shape[1]} values); the mixture was "
                f"fitted on shape {self.data_shape} ({math.prod(self.data_shape)} values)"
            )
        return x, shape


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_real(value):
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _blocks(n, size):
    """Slices covering range(n) in steps of `size`."""
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def _nearest(x, centres):
    """Index of the nearest centre for each row of `x` `[N, D]`: `[N]`."""
    d2 = (
        tf.reduce_sum(tf.square(x), axis=1, keepdims=True)
        - 2.0 * tf.matmul(x, centres, transpose_b=True)
        + tf.reduce_sum(tf.square(centres), axis=1)
    )  # [N, K]
    return tf.argmin(d2, axis=1)
