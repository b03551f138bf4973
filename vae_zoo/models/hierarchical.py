"""Hierarchical VAE: L stochastic layers, top-down inference with the Ladder VAE's
precision-weighted merge.

Generative model (z_1 next to x, z_L on top):

    p(x, z_1..z_L) = p(z_L) · Π_{l<L} p(z_l | z_{l+1}) · p(x | z_1)

with p(z_L) any flat prior of `vae_zoo.heads.PRIORS` and p(z_l | z_{l+1}) diagonal
Gaussians N(μ_p, σ_p²) computed by the top-down networks. Inference goes bottom-up
first (deterministic features d_1 = f(x), d_l = g_l(d_{l−1}), each projected to a
Gaussian N(μ̂_l, σ̂_l²)), then top-down along the generative path:

    q(z_L | x) = N(μ̂_L, σ̂_L²),
    q(z_l | z_{l+1}, x) = N(μ_q, σ_q²), σ_q⁻² = σ̂_l⁻² + σ_p⁻²,
                          μ_q = σ_q² (μ̂_l σ̂_l⁻² + μ_p σ_p⁻²),

the precision-weighted merge of the bottom-up Gaussian with the prior's conditional
p(z_l | z_{l+1}) at the same parent (Sønderby et al. 2016, eqs. 17–19): the posterior
and the generative model share the top-down path.

The latent z of the model is every layer concatenated, bottom first:
`z = concat(z_1, ..., z_L)`, `latent_shape = (d_1 + ... + d_L,)`. `encode(x)` and
`prior_distribution()` return a `GaussianChain` over that vector (ancestral samples,
exact joint log-densities); `decode(z)` reads only the block z_1. The chain, the merge,
the prior and the encoder are in `vae_zoo.models.ladder`.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from vae_zoo import bodies, heads
from vae_zoo.models.base import MODELS
from vae_zoo.models.family import Family, body_of
from vae_zoo.models.forward import Forward
from vae_zoo.models.ladder import (
    GaussianChain,
    LadderEncoder,
    LadderPrior,
    dense_stack,
    precision_weighted_merge,
)


@keras.saving.register_keras_serializable(package="vae_zoo")
@MODELS.register("hierarchical")
class HierarchicalVAE(Family):
    """Hierarchical VAE with L stochastic layers and top-down inference (Ladder VAE).

    p(x, z) = p(z_L) Π_{l<L} p(z_l | z_{l+1}) p(x | z_1); q(z | x) = q(z_L | x)
    Π_{l<L} q(z_l | z_{l+1}, x), where q(z_l | z_{l+1}, x) is the precision-weighted
    merge of a bottom-up Gaussian N(μ̂_l, σ̂_l²) computed from x with the generative
    conditional p(z_l | z_{l+1}) at the same sampled parent (module docstring;
    `precision_weighted_merge`). The generative and inference paths share the top-down
    networks.

    Latents: z = `concat(z_1, ..., z_L)`, bottom first; `latent_shape` is
    `(sum(latent_dims),)`. `encode(x)` is q(z|x) and `prior_distribution()` is p(z), both
    `GaussianChain`s (ancestral samples, exact joint log-densities; `mean()`/`stddev()`
    along the mean path). `decode(z)` is p(x | z_1), reading the first `latent_dims[0]`
    entries of z. `sample(n)` draws z_L ~ p(z_L), then each layer down, then E[x | z_1].

    The ELBO is exact over all layers: log p(x|z_1) − Σ_l KL_l, with z ~ q one joint
    sample and KL_l = KL(q(z_l | z_{l+1}, x) || p(z_l | z_{l+1})) in closed form at the
    sampled parent (the top layer's KL to p(z_L) analytic when TFP registers it, else
    Monte-Carlo; `analytic_kl=False`: Monte-Carlo for every layer). The importance
    weights are log p(x|z_1) + Σ_l log p(z_l | z_{l+1}) − Σ_l log q(z_l | ·) of K joint
    samples, so the importance-weighted objectives, `vae_zoo.evaluate.log_likelihood`
    and the serving signatures work as for every family. Training reports the KL of
    each layer as the metrics `kl_1` ... `kl_L` (a layer whose KL stays near 0 has
    collapsed; averaged over the K draws under an importance-weighted objective). The
    objectives that penalize the aggregate posterior through q's per-dimension moments
    ("beta_tc", "dip_vae_i", "dip_vae_ii") are refused: q is a chain of conditionals.

    Bodies: "dense" (the trunk x → d_1 is `Dense(h)` for h in `hidden_units`; the
    decoder z_1 → x mirrors it) or "conv" (strided convolutions then `Dense(u)` for u
    in `dense_units`; transposed convolutions back, as `ConvVAE`). The bottom-up steps
    d_{l−1} → d_l and the top-down networks z_{l+1} → p(z_l | z_{l+1}) are MLPs with
    widths `ladder_units`.

    Args:
        input_shape: tuple, one example's shape (`(H, W, C)` for the conv body).
        latent_dims: sequence of ints >= 1, `(d_1, ..., d_L)`, bottom (next to x) first;
            one entry is a plain VAE.
        body: "dense" or "conv".
        hidden_units: dense body: trunk widths (decoder reversed).
        filters, kernel_sizes, strides: conv body: one entry per convolution (decoder
            reversed; the total stride must divide H and W).
        dense_units: conv body: dense widths after the convolutions (decoder reversed).
        ladder_units: sequence of ints, at least one: the hidden widths of every
            bottom-up step and top-down network between layers.
        likelihood: name or spec of a p(x|z_1) head in `vae_zoo.heads.LIKELIHOODS`.
        prior: name or spec of the top prior p(z_L) in `vae_zoo.heads.PRIORS` (flat:
            "standard_normal", "mixture_of_gaussians").
        activation: hidden-layer activation (every network).
        **kwargs: the shared arguments (beta, analytic_kl, objective, num_samples,
            seed) and Keras layer arguments; see `Family`.

    Example:
    ```python
    model = HierarchicalVAE(input_shape=(28, 28, 1), latent_dims=(32, 16),
                            hidden_units=(512, 256), ladder_units=(128,))
    model.compile(optimizer="adam")
    model.fit(vae_zoo.data.load("mnist_sample"), epochs=5)   # metrics kl_1, kl_2
    q = model.encode(x)           # batch [B], event [48] = concat(z_1, z_2)
    x_new = model.sample(16)      # [16, 28, 28, 1], ancestral
    ```

    References: Sønderby et al., "Ladder Variational Autoencoders", arXiv:1602.02282
    (top-down inference, precision-weighted merge); Vahdat & Kautz, "NVAE: A Deep
    Hierarchical Variational Autoencoder", arXiv:2007.03898 (the residual alternative,
    not used here); Burda et al., arXiv:1509.00519 (importance weights).
    """

    # Small arguments that build a working model (the shared family tests use them).
    example_arguments = dict(input_shape=(8, 8, 1), latent_dims=(3, 2), hidden_units=(8,),
                             ladder_units=(8,))
    mean_field_posterior = False

    def __init__(
        self,
        input_shape,
        latent_dims=(32, 16),
        body="dense",
        hidden_units=(512, 256),
        filters=(32, 64),
        kernel_sizes=(3, 3),
        strides=(2, 2),
        dense_units=(256,),
        ladder_units=(128,),
        likelihood="bernoulli",
        prior="standard_normal",
        activation="relu",
        **kwargs,
    ):
        latent_dims = bodies.sizes("latent_dims", latent_dims, allow_empty=False)
        ladder_units = bodies.sizes("ladder_units", ladder_units, allow_empty=False)
        input_shape = bodies.check_input_shape(input_shape)
        trunk_body = body_of(body, locals())
        trunk_body.check(input_shape)
        self.latent_dims = latent_dims  # read by encode/decode, which the base build runs
        # Layers: the body's trunk and decoder around the ladder's own networks.
        posterior_head = heads.POSTERIORS.build("diagonal_gaussian")
        likelihood_head = heads.LIKELIHOODS.build(likelihood)
        prior_layer = LadderPrior(
            latent_dims, heads.PRIORS.build(prior, latent_shape=latent_dims[-1:]),
            ladder_units, activation,
        )
        encoder = LadderEncoder(
            trunk_body.trunk(input_shape),
            [dense_stack(ladder_units, activation, f"bottom_up_{i + 2}")
             for i in range(len(latent_dims) - 1)],
            [keras.layers.Dense(posterior_head.params_shape((d,))[0], name=f"bottom_up_params_{i + 1}")
             for i, d in enumerate(latent_dims)],
            name="encoder",
        )
        decoder = trunk_body.decoder(input_shape, latent_dims[:1],
                                     likelihood_head.params_shape(input_shape))
        super().__init__(encoder=encoder, decoder=decoder, posterior=posterior_head,
                         likelihood=likelihood_head, prior=prior_layer, input_shape=input_shape,
                         **kwargs)

    def build(self, input_shape=None):
        if self.built:
            return
        # The KL of each layer, beside the base model's metrics (before the model locks).
        self.trackers.extend(keras.metrics.Mean(name=f"kl_{i + 1}")
                             for i in range(len(self.latent_dims)))
        super().build(input_shape)

    # ------------------------------------------------------------------ public API

    def bottom_up(self, x):
        """The bottom-up Gaussians N(μ̂_l, σ̂_l²) of x, bottom first: batch `[B]`, event
        `[d_l]` each."""
        x = tf.convert_to_tensor(x, tf.float32)
        return [self.posterior(params) for params in self.encoder(x)]

    def posterior_layers(self, bottom_up, prior_layers):
        """`[q(z_1|z_2, x), ..., q(z_L|x)]` from the bottom-up Gaussians and the prior's
        layers at the same parents (`GaussianChain.layers`): the merge of each pair, and
        the top bottom-up Gaussian itself."""
        merged = [precision_weighted_merge(b, p) for b, p in zip(bottom_up[:-1], prior_layers[:-1])]
        return merged + [bottom_up[-1]]

    def encode(self, x, y=None):
        """q(z|x) over `concat(z_1..z_L)`: a `GaussianChain`, batch `[B]`, event `[D]`."""
        return self._posterior_chain(self.bottom_up(x))

    def _posterior_chain(self, bottom_up):
        def conditional(i, parent):  # q(z_{i+1} | z_{i+2}, x)
            return precision_weighted_merge(bottom_up[i], self.prior.conditional(i, parent))

        return GaussianChain(bottom_up[-1], conditional, self.latent_dims)

    def _joint_sample(self, x, sample_shape, seed):
        """q(z|x), z ~ q `[*sample_shape, B, D]` (the draw of `encode(x).sample(
        sample_shape, seed=seed)`), its blocks, and the layers of q and p at its parents
        (bottom first). The top-down networks run twice: for the draw and for p's
        layers."""
        bottom_up = self.bottom_up(x)
        q = self._posterior_chain(bottom_up)
        z = q.sample(sample_shape, seed=seed)
        p_layers = self.prior_distribution().layers(z)
        return q, z, q.split(z), self.posterior_layers(bottom_up, p_layers), p_layers

    def decode(self, z, y=None):
        """p(x|z_1) from z `[B, D]` (its first `latent_dims[0]` entries): batch `[B]`,
        event `input_shape`."""
        z = tf.convert_to_tensor(z, tf.float32)
        return self.likelihood(self.decoder(z[..., : self.latent_dims[0]]))

    def forward(self, x, y=None, seed=None, training=False):
        """One joint draw z ~ q(z|x); its layers `(q(z_l | z_{l+1}, x), p(z_l | z_{l+1}),
        z_l)` at the sampled parents, bottom first, so the KL term is Σ_l KL_l (closed
        form where TFP registers it) and the ELBO's terms include "kl_1" ... "kl_L"."""
        x = tf.convert_to_tensor(x, tf.float32)
        q, z, blocks, q_layers, p_layers = self._joint_sample(x, (), self.draw_seed(seed))
        likelihood = self.decode(z)
        return Forward(x=x, q=q, z=z, likelihood=likelihood,
                       reconstruction=likelihood.log_prob(x), prior=self.prior_distribution(),
                       layers=tuple(zip(q_layers, p_layers, blocks)),
                       analytic_kl=self.analytic_kl)

    def importance_terms(self, x, num_samples, y=None, seed=None):
        """`[K, B]` log p(x|z_1), Σ_l log p(z_l | z_{l+1}) and Σ_l log q(z_l | ·) of K
        joint draws z_k ~ q(z|x) (as `VAE.importance_terms`), and each layer's:
        "layer_log_prior" and "layer_log_posterior", lists of `[K, B]`, bottom first."""
        x = tf.convert_to_tensor(x, tf.float32)
        _, z, blocks, q_layers, p_layers = self._joint_sample(x, num_samples,
                                                              self.draw_seed(seed))
        return _with_sums(self.log_likelihood_of_draws(x, z),
                          [p.log_prob(b) for p, b in zip(p_layers, blocks)],
                          [q.log_prob(b) for q, b in zip(q_layers, blocks)])

    def score_latents(self, x, q, z, y=None):
        """`VAE.score_latents` at given joint draws z `[K, B, D]` of q, with each layer's
        log-densities (as `importance_terms`)."""
        return _with_sums(self.log_likelihood_of_draws(x, z),
                          self.prior_distribution().layer_log_probs(z), q.layer_log_probs(z))


def _with_sums(log_likelihood, layer_log_prior, layer_log_posterior):
    """The importance terms of a ladder: the layers' log-densities and their sums."""
    return {"log_likelihood": log_likelihood, "log_prior": tf.add_n(layer_log_prior),
            "log_posterior": tf.add_n(layer_log_posterior),
            "layer_log_prior": layer_log_prior, "layer_log_posterior": layer_log_posterior}
