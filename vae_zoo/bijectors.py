"""Normalizing flows: TFP bijectors over a flat z `[..., d]` and the distribution they
make of a Gaussian.

- `FlowDistribution`: base N(μ, σ) pushed through f_T ∘ … ∘ f_1, with a `mean` and a
  `stddev` (which TFP leaves undefined for non-affine flows);
- `PlanarFlow`: f(z) = z + û h(wᵀz + b) (Rezende & Mohamed 2015, arXiv:1505.05770),
  with `planar_u_hat` keeping it invertible;
- `inverse_autoregressive_step`: one IAF step (Kingma et al. 2016, arXiv:1606.04934).

log q(z_T) = log N(z_0; μ, σ) − Σ_t log|det ∂f_t/∂z_{t−1}|. TFP's bijector cache makes
`log_prob` at the posterior's own samples reuse the z_0 and log-determinants of the
sampling pass (exact, one pass); at any other z the steps are inverted (IAF: d
sequential passes; planar: a scalar root per step). The heads that build these are
`vae_zoo.heads.flows`.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions
tfb = tfp.bijectors

# Bisection then Newton iterations of the planar inverse (float32 exact in practice).
PLANAR_BISECTIONS = 30
PLANAR_NEWTON_STEPS = 4


class FlowDistribution(tfd.TransformedDistribution):
    """`TransformedDistribution` of a base `Independent(Normal)` over flat z `[B, d]`,
    with a `mean` and `stddev` for non-affine flows (which TFP leaves undefined).

    - `mean()`: the flow applied to the base mean, f(μ) (the exact E[z] has no closed
      form; f(μ) is the image of the base's mode and mean), `[B, d]`;
    - `stddev()`: the delta-method (linearized) standard deviation at μ,
      sqrt(diag(J diag(σ²) Jᵀ)) with J = ∂f/∂z_0 at μ, `[B, d]`.

    Batch `[B]`, event `[d]`; `log_prob` and `sample` as `TransformedDistribution`.
    """

    def _mean(self, **kwargs):
        return self.bijector.forward(self.distribution.mean())

    def _stddev(self, **kwargs):
        z0 = self.distribution.mean()  # [B, d]
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(z0)
            z = self.bijector.forward(z0)
        # (a loop over the d outputs: pfor would retrace at every eager call)
        jacobian = tape.batch_jacobian(z, z0, experimental_use_pfor=False)  # [B, d, d]
        base = self.distribution.stddev()[..., tf.newaxis, :]  # [B, 1, d]
        return tf.sqrt(tf.reduce_sum(tf.square(jacobian * base), axis=-1))


class PlanarFlow(tfb.Bijector):
    """Planar flow f(z) = z + û tanh(wᵀz + b), invertible by construction.

    û = u + (m(wᵀu) − wᵀu) w / ‖w‖² with m(a) = −1 + softplus(a), so wᵀû > −1 and f
    is invertible (Rezende & Mohamed 2015, appendix A.1).
    log|det ∂f/∂z| = log(1 + (1 − tanh²(wᵀz + b)) wᵀû) (computed without cancellation
    near wᵀû = −1). The inverse solves the scalar
    equation wᵀy = α + wᵀû tanh(α + b) for α = wᵀz (increasing in α; bracketed by
    wᵀy ± |wᵀû|) by bisection then Newton steps, and returns z = y − û tanh(α + b).

    Args:
        u, w: `[B, d]`; b: `[B]` (any z `[..., B, d]` broadcasts against them).

    Reference: Rezende & Mohamed, "Variational Inference with Normalizing Flows",
    arXiv:1505.05770.
    """

    def __init__(self, u, w, b, validate_args=False, name="planar_flow"):
        parameters = dict(locals())
        with tf.name_scope(name) as name:
            self.u = tf.convert_to_tensor(u, tf.float32)
            self.w = tf.convert_to_tensor(w, tf.float32)
            self.b = tf.convert_to_tensor(b, tf.float32)
            self.u_hat = planar_u_hat(self.u, self.w)
            # wᵀû = −1 + softplus(wᵀu), kept as softplus(wᵀu) > 0 for a stable log|det|.
            self.softplus_w_dot_u = tf.math.softplus(tf.reduce_sum(self.w * self.u, axis=-1))
            self.w_dot_u_hat = self.softplus_w_dot_u - 1.0  # [B], > −1
            super().__init__(forward_min_event_ndims=1, validate_args=validate_args,
                             parameters=parameters, name=name)

    def _forward(self, z):
        a = tf.reduce_sum(self.w * z, axis=-1) + self.b
        return z + self.u_hat * tf.tanh(a)[..., tf.newaxis]

    def _log_det(self, a):
        # log(1 + (1 − t²) wᵀû) = log(t² + (1 − t²) softplus(wᵀu)): no cancellation
        # when wᵀû is near −1.
        t2 = tf.square(tf.tanh(a))
        return tf.math.log(t2 + (1.0 - t2) * self.softplus_w_dot_u)

    def _forward_log_det_jacobian(self, z):
        return self._log_det(tf.reduce_sum(self.w * z, axis=-1) + self.b)

    def _solve(self, y):
        """α = wᵀz for f(z) = y, `[..., B]`."""
        target = tf.reduce_sum(self.w * y, axis=-1)
        c, b = self.w_dot_u_hat, self.b
        low, high = target - tf.abs(c), target + tf.abs(c)
        for _ in range(PLANAR_BISECTIONS):
            middle = 0.5 * (low + high)
            above = middle + c * tf.tanh(middle + b) > target
            low, high = tf.where(above, low, middle), tf.where(above, middle, high)
        alpha = 0.5 * (low + high)
        for _ in range(PLANAR_NEWTON_STEPS):
            t = tf.tanh(alpha + b)
            alpha -= (alpha + c * t - target) / (1.0 + c * (1.0 - t * t))
        return alpha

    def _inverse(self, y):
        alpha = self._solve(y)
        return y - self.u_hat * tf.tanh(alpha + self.b)[..., tf.newaxis]

    def _inverse_log_det_jacobian(self, y):
        return -self._log_det(self._solve(y) + self.b)


def planar_u_hat(u, w):
    """û = u + (−1 + softplus(wᵀu) − wᵀu) w / ‖w‖², so that wᵀû = −1 + softplus(wᵀu) > −1."""
    w_dot_u = tf.reduce_sum(w * u, axis=-1, keepdims=True)
    norm = tf.reduce_sum(tf.square(w), axis=-1, keepdims=True)
    return u + tf.math.divide_no_nan(-1.0 + tf.math.softplus(w_dot_u) - w_dot_u, norm) * w


def inverse_autoregressive_step(mean_and_gate_fn):
    """One IAF step z = σ ⊙ z_0 + (1 − σ) ⊙ m, with (m, s) = `mean_and_gate_fn(z_0)`
    autoregressive in z_0 and σ = sigmoid(s) (Kingma et al. 2016, eq. 11-12).

    `tfb.Invert(tfb.MaskedAutoregressiveFlow(...))`: the forward (sampling) direction
    is one pass of `mean_and_gate_fn`, with log|det| = Σ_i log σ_i; the inverse (only
    for z that were not sampled by it) is MAF's d sequential passes, unrolled.

    Args:
        mean_and_gate_fn: `[..., d] -> [..., d, 2]` (m, s); output i may depend on
            inputs of lower degree only (a `vae_zoo.networks.MADE`).

    Reference: Kingma et al., "Improving Variational Inference with Inverse
    Autoregressive Flow", arXiv:1606.04934.
    """

    def gated_affine(y):
        # MAF's inverse at z_0 is this bijector's inverse: z_0 ↦ σ z_0 + (1 − σ) m.
        params = tf.cast(mean_and_gate_fn(y), tf.float32)
        m, s = params[..., 0], params[..., 1]
        affine = tfb.Chain([tfb.Shift(tf.sigmoid(-s) * m), tfb.Scale(log_scale=tf.math.log_sigmoid(s))])
        return tfb.Invert(affine)

    return tfb.Invert(tfb.MaskedAutoregressiveFlow(bijector_fn=gated_affine, unroll_loop=True))
