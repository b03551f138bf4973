"""Flow posterior heads q(z|x): a diagonal Gaussian pushed through a normalizing flow.

z_0 ~ N(μ, diag σ²), z_T = f_T ∘ … ∘ f_1(z_0), and
log q(z_T|x) = log N(z_0; μ, σ) − Σ_t log|det ∂f_t/∂z_{t−1}|. Sampling is one pass;
`log_prob` at the posterior's own samples is exact in that same pass (TFP's bijector
cache, also inside `tf.function` and XLA), so the ELBO's Monte-Carlo KL and the
importance weights cost nothing more; `log_prob` at any other z inverts the flow
(`vae_zoo.distributions`). No KL has a closed form: the ELBO uses the Monte-Carlo
estimate (automatic in `objectives`).

Params of both heads (flat latents `(d,)`): `[B, 2d + extra]`, μ and s
(σ = softplus(s) + `scale_floor`) followed by what the flow reads from the encoder:
its context h (`iaf`) or its own parameters (`planar`). `params_shape((d,))` says how
many, so the encoder's last layer produces them like any head's parameters.

`q.mean()` is the flow applied to μ and `q.stddev()` its linearization at μ
(`FlowDistribution`): what `reconstruct`, the encode signature and the posterior
statistics use.
"""

from __future__ import annotations

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from vae_zoo import networks
from vae_zoo.bijectors import FlowDistribution, PlanarFlow, inverse_autoregressive_step
from vae_zoo.distributions import PhiloxNormal
from vae_zoo.heads.base import POSTERIORS, DistributionHead, as_float32

tfd = tfp.distributions
tfb = tfp.bijectors


class FlowPosterior(DistributionHead):
    """Base of the flow heads: `flow_params_size(d)` extra params and `flow(extra, d)`.

    Args:
        num_steps: int >= 1, flow steps T.
        scale_floor: float, lower bound on the base σ.
    """

    def __init__(self, num_steps=2, scale_floor=1e-4, **kwargs):
        super().__init__(**kwargs)
        if int(num_steps) < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        self.num_steps = int(num_steps)
        self.scale_floor = float(scale_floor)

    def flow_params_size(self, d) -> int:
        raise NotImplementedError

    def flow(self, extra, d):
        """The bijector f_T ∘ … ∘ f_1 from the extra params `[B, flow_params_size(d)]`."""
        raise NotImplementedError

    def params_shape(self, event_shape) -> tuple:
        event_shape = tuple(event_shape)
        if len(event_shape) != 1:
            raise ValueError(
                f"posterior {self.registry_name!r} needs a flat latent shape (d,), got "
                f"{event_shape}"
            )
        d = event_shape[0]
        return (2 * d + self.flow_params_size(d),)

    def latent_dim(self, num_params) -> int:
        for d in range(1, num_params // 2 + 1):
            if self.params_shape((d,))[0] == num_params:
                return d
        raise ValueError(f"posterior {self.registry_name!r} cannot read {num_params} params")

    def call(self, params):
        params = as_float32(params)
        if params.shape.rank != 2:
            raise ValueError(
                f"posterior {self.registry_name!r} needs flat params [B, n], got {params.shape}"
            )
        d = self.latent_dim(params.shape[-1])
        loc, raw_scale, extra = params[:, :d], params[:, d:2 * d], params[:, 2 * d:]
        base = tfd.Independent(
            PhiloxNormal(loc, tf.math.softplus(raw_scale) + self.scale_floor),
            reinterpreted_batch_ndims=1,
        )
        return FlowDistribution(base, self.flow(extra, d))  # batch [B], event [d]

    def get_config(self):
        return {**super().get_config(), "num_steps": self.num_steps,
                "scale_floor": self.scale_floor}


@keras.saving.register_keras_serializable(package="vae_zoo")
@POSTERIORS.register("iaf")
class IAFPosterior(FlowPosterior):
    """Inverse autoregressive flow q(z|x) (Kingma et al. 2016).

    The encoder outputs μ, s and a context h `[B, context_size]`; each of the
    `num_steps` steps is z_t = σ_t ⊙ z_{t−1} + (1 − σ_t) ⊙ m_t with
    (m_t, s_t) = MADE_t(z_{t−1}, h) autoregressive in z_{t−1} and σ_t = sigmoid(s_t),
    so log|det| = Σ_i log σ_t,i. Steps alternate the variable order (MADE degrees
    1..d, then d..1). The MADEs (`vae_zoo.networks.MADE`) are this head's weights;
    their output starts at m = 0, s = `gate_bias` (σ ≈ 0.88 for 2).

    Params `[B, 2d + context_size]`; batch `[B]`, event `[d]`.

    Args:
        num_steps: int >= 1, IAF steps.
        hidden_units: sequence of ints, each MADE's hidden widths.
        context_size: int >= 0, size of h (0: no context).
        gate_bias: float, the initial s.
        activation: MADE hidden activation.
        scale_floor: float, lower bound on the base σ.

    Example:
    ```python
    model = DenseVAE((28, 28, 1), 32, posterior={"name": "iaf", "num_steps": 2,
                                                  "hidden_units": [320, 320]})
    q = model.encode(x)                   # batch [B], event [32]
    z = q.sample(seed=[0, 0])             # one pass through the flow
    q.log_prob(z)                         # [B], exact, no inversion
    ```

    Reference: Kingma et al., "Improving Variational Inference with Inverse
    Autoregressive Flow", arXiv:1606.04934; MADE: Germain et al., arXiv:1502.03509.
    """

    def __init__(self, num_steps=2, hidden_units=(64,), context_size=16, gate_bias=2.0,
                 activation="elu", scale_floor=1e-4, **kwargs):
        super().__init__(num_steps, scale_floor, **kwargs)
        self.hidden_units = tuple(int(u) for u in hidden_units)
        if not self.hidden_units or min(self.hidden_units) < 1:
            raise ValueError(f"hidden_units must list widths >= 1, got {hidden_units}")
        if int(context_size) < 0:
            raise ValueError(f"context_size must be >= 0, got {context_size}")
        self.context_size = int(context_size)
        self.gate_bias = float(gate_bias)
        self.activation = activation
        self.mades = []

    def flow_params_size(self, d) -> int:
        return self.context_size

    def build(self, input_shape):
        d = self.latent_dim(int(input_shape[-1]))
        self.mades = [
            networks.MADE(d, self.hidden_units, 2, self.context_size, reverse=bool(t % 2),
                          activation=self.activation, output_bias=(0.0, self.gate_bias),
                          name=f"made_{t}")
            for t in range(self.num_steps)
        ]
        for made in self.mades:
            made.build((None, d))

    def flow(self, extra, d):
        context = extra if self.context_size else None
        steps = [inverse_autoregressive_step(lambda z, made=made: made(z, context))
                 for made in self.mades]
        return tfb.Chain(steps[::-1])  # Chain applies its last bijector first

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.hidden_units,
                "context_size": self.context_size, "gate_bias": self.gate_bias,
                "activation": self.activation}


@keras.saving.register_keras_serializable(package="vae_zoo")
@POSTERIORS.register("planar")
class PlanarPosterior(FlowPosterior):
    """Planar flow q(z|x) (Rezende & Mohamed 2015), amortized: the encoder outputs μ, s
    and every step's u, w `[d]` and b, so the head has no weights of its own.

    Each step is z_t = z_{t−1} + û_t tanh(w_tᵀ z_{t−1} + b_t), with û_t the
    projection of u_t that keeps it invertible (w_tᵀ û_t > −1,
    `vae_zoo.bijectors.PlanarFlow`).

    Params `[B, 2d + num_steps·(2d + 1)]`; batch `[B]`, event `[d]`.

    Args:
        num_steps: int >= 1, planar steps.
        scale_floor: float, lower bound on the base σ.

    Example:
    ```python
    model = ConvVAE.preset("mnist", posterior={"name": "planar", "num_steps": 8})
    ```

    Reference: Rezende & Mohamed, "Variational Inference with Normalizing Flows",
    arXiv:1505.05770.
    """

    def flow_params_size(self, d) -> int:
        return self.num_steps * (2 * d + 1)

    def flow(self, extra, d):
        steps = []
        for t in range(self.num_steps):
            step = extra[:, t * (2 * d + 1):(t + 1) * (2 * d + 1)]
            steps.append(PlanarFlow(step[:, :d], step[:, d:2 * d], step[:, 2 * d]))
        return tfb.Chain(steps[::-1])
