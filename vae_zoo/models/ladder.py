"""The parts of the Ladder VAE (`vae_zoo.models.hierarchical`): the chain of Gaussians
over every layer's latents, the precision-weighted merge, the generative prior and the
bottom-up encoder.

`GaussianChain` is a distribution over `concat(z_1, ..., z_L)` (bottom first) defined
by its top layer and a conditional per layer below it: ancestral samples, exact joint
log-densities. `LadderPrior` is the generative model's p(z_L) Π_{l<L} p(z_l | z_{l+1});
the posterior is a `GaussianChain` whose conditionals merge the bottom-up Gaussians of
`LadderEncoder` with the prior's at the same parent (Sønderby et al. 2016, eqs. 17–19).
"""

from __future__ import annotations

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from vae_zoo import networks
from vae_zoo.distributions import PhiloxNormal
from vae_zoo.heads.posteriors import DiagonalGaussianPosterior
from vae_zoo.heads.priors import Prior

tfd = tfp.distributions


# ---------------------------------------------------------------------- distributions


def precision_weighted_merge(bottom_up, prior):
    """The Ladder VAE's merge of two diagonal Gaussians over the same variables.

    N(μ, σ²) with σ⁻² = σ_a⁻² + σ_b⁻² and μ = σ² (μ_a σ_a⁻² + μ_b σ_b⁻²): the
    normalized product of the two densities (Sønderby et al. 2016, eq. 19).

    Args:
        bottom_up: `Independent(Normal)` N(μ̂, σ̂²), batch `[B]`, event `[d]`.
        prior: `Independent(Normal)` N(μ_p, σ_p²), batch `[..., B]` (broadcasts with
            `bottom_up`), event `[d]`.

    Returns:
        `Independent(Normal)`, batch the broadcast of both, event `[d]`.
    """
    loc_a, scale_a = bottom_up.distribution.loc, bottom_up.distribution.scale
    loc_b, scale_b = prior.distribution.loc, prior.distribution.scale
    precision_a, precision_b = tf.math.reciprocal(scale_a**2), tf.math.reciprocal(scale_b**2)
    precision = precision_a + precision_b
    loc = (loc_a * precision_a + loc_b * precision_b) / precision
    return tfd.Independent(PhiloxNormal(loc, tf.math.rsqrt(precision)), reinterpreted_batch_ndims=1)


class GaussianChain(tfd.Distribution):
    """A Markov chain of vector latents, top-down, as one distribution over their
    concatenation: p(z) = p_top(z_L) · Π_{l<L} N(z_l; μ_l(z_{l+1}), diag σ_l(z_{l+1})²).

    z is `concat(z_1, ..., z_L)` (bottom first) with blocks of sizes `latent_dims`.
    Samples are ancestral (z_L first, each layer drawn given the one above;
    reparameterized when `top` is) and `log_prob` is the exact joint log-density, the
    sum of the layers' `layer_log_probs`. `mean()` and `stddev()` follow the mean path:
    z_L = E[z_L], then each layer's conditional mean (and standard deviation) given its
    parent's mean-path value; they are the exact moments for the top layer only.

    Args:
        top: the distribution of z_L: batch `batch_shape`, event `[d_L]`.
        conditional: `fn(i, parent) -> Independent(Normal)`, the distribution of block i
            (0 = z_1) given block i + 1 `[..., d_{i+1}]`: batch `parent.shape[:-1]`
            broadcast with `batch_shape`, event `[d_i]`.
        latent_dims: tuple of ints, `(d_1, ..., d_L)`.

    Batch shape that of `top`; event shape `[d_1 + ... + d_L]`.
    """

    def __init__(self, top, conditional, latent_dims, name="GaussianChain"):
        parameters = dict(locals())
        self.top = top
        self.conditional = conditional
        self.latent_dims = tuple(int(d) for d in latent_dims)
        super().__init__(
            dtype=tf.float32,
            reparameterization_type=top.reparameterization_type,
            validate_args=False,
            allow_nan_stats=True,
            parameters=parameters,
            name=name,
        )

    def _batch_shape(self):
        return self.top.batch_shape

    def _batch_shape_tensor(self):
        return self.top.batch_shape_tensor()

    def _event_shape(self):
        return tf.TensorShape([sum(self.latent_dims)])

    def _event_shape_tensor(self):
        return tf.constant([sum(self.latent_dims)], tf.int32)

    def split(self, z):
        """`[..., D]` → the blocks `[z_1, ..., z_L]`, each `[..., d_l]`."""
        return tf.split(z, self.latent_dims, axis=-1)

    def layers(self, z):
        """The layers' distributions at the parents in z: `[p(z_1|z_2), ..., p(z_L)]`."""
        blocks = self.split(z)
        below = [self.conditional(i, blocks[i + 1]) for i in range(len(self.latent_dims) - 1)]
        return below + [self.top]

    def layer_log_probs(self, z):
        """`[log p(z_1|z_2), ..., log p(z_L)]` at z `[..., D]`, each `[...]`."""
        return [layer.log_prob(block) for layer, block in zip(self.layers(z), self.split(z))]

    def _log_prob(self, z):
        return tf.add_n(self.layer_log_probs(z))

    def _sample_n(self, n, seed=None):
        seeds = tfp.random.split_seed(seed, n=len(self.latent_dims), salt="GaussianChain")
        z = self.top.sample(n, seed=seeds[-1])  # [n, *batch, d_L]
        blocks = [z]
        for i in reversed(range(len(self.latent_dims) - 1)):
            z = self.conditional(i, z).sample(seed=seeds[i])  # [n, *batch, d_i]
            blocks.insert(0, z)
        return tf.concat(blocks, axis=-1)

    def _mean_path(self):
        """The mean path and, per layer, its distribution along it (bottom first)."""
        z = self.top.mean()
        path, layers = [z], [self.top]
        for i in reversed(range(len(self.latent_dims) - 1)):
            layer = self.conditional(i, z)
            z = layer.mean()
            path.insert(0, z)
            layers.insert(0, layer)
        return path, layers

    def _mean(self):
        return tf.concat(self._mean_path()[0], axis=-1)

    def _stddev(self):
        return tf.concat([layer.stddev() for layer in self._mean_path()[1]], axis=-1)


# ---------------------------------------------------------------------- layers


class LadderPrior(Prior):
    """The generative prior p(z_L) Π_{l<L} p(z_l | z_{l+1}) over `concat(z_1..z_L)`.

    p(z_L) is `top` (a flat prior of `vae_zoo.heads.PRIORS`); each p(z_l | z_{l+1}) is
    a diagonal Gaussian whose μ and σ (softplus + floor) an MLP computes from z_{l+1}
    (`top_down[l − 1]`, widths `ladder_units`). `distribution()` is a `GaussianChain`:
    batch `[]`, event `[d_1 + ... + d_L]`. The posterior shares `conditional`.

    Args:
        latent_dims: tuple of ints `(d_1, ..., d_L)`, bottom first.
        top: a `Prior` layer over `(d_L,)`.
        ladder_units: sequence of ints, hidden widths of each top-down MLP.
        activation: their hidden activation.
    """

    def __init__(self, latent_dims, top, ladder_units, activation="relu", **kwargs):
        super().__init__((sum(latent_dims),), **kwargs)
        self.latent_dims = tuple(latent_dims)
        self.top = top
        self.gaussian = DiagonalGaussianPosterior()
        self.top_down = [
            networks.mlp_decoder(ladder_units, self.gaussian.params_shape((d,)), activation,
                                 name=f"top_down_{i + 1}")
            for i, d in enumerate(self.latent_dims[:-1])
        ]

    def build(self, input_shape=None):
        self.top.build(None)
        for i, network in enumerate(self.top_down):
            network.build((None, self.latent_dims[i + 1]))
        self.built = True

    def conditional(self, i, parent):
        """p(z_{i+1} | z_{i+2} = parent), parent `[..., d_{i+2}]`: batch `[...]`, event
        `[d_{i+1}]` (0-based i: block i of the concatenated z)."""
        parent = tf.convert_to_tensor(parent, tf.float32)
        flat = tf.reshape(parent, [-1, self.latent_dims[i + 1]])
        normal = self.gaussian(self.top_down[i](flat)).distribution  # [N, d_i]
        shape = tf.concat([tf.shape(parent)[:-1], [self.latent_dims[i]]], 0)
        return tfd.Independent(
            PhiloxNormal(tf.reshape(normal.loc, shape), tf.reshape(normal.scale, shape)),
            reinterpreted_batch_ndims=1,
        )

    def distribution(self, condition=None, latent_shape=None):
        return GaussianChain(self.top.distribution(), self.conditional, self.latent_dims)


class LadderEncoder(keras.layers.Layer):
    """The bottom-up path: x → `[params_1, ..., params_L]`, params_l `[B, 2 d_l]`.

    d_1 = `trunk(x)`, d_l = `steps[l − 2](d_{l−1})`; params_l = `projections[l − 1](d_l)`
    (μ̂_l and the raw σ̂_l of the bottom-up Gaussian, read by a diagonal-Gaussian head).
    """

    def __init__(self, trunk, steps, projections, **kwargs):
        super().__init__(**kwargs)
        self.trunk = trunk
        self.steps = list(steps)
        self.projections = list(projections)

    def build(self, input_shape):
        shape = tuple(input_shape)
        self.trunk.build(shape)
        shape = self.trunk.compute_output_shape(shape)
        for i, projection in enumerate(self.projections):
            if i:
                self.steps[i - 1].build(shape)
                shape = self.steps[i - 1].compute_output_shape(shape)
            projection.build(shape)
        self.built = True

    def call(self, x):
        features = self.trunk(x)
        params = []
        for i, projection in enumerate(self.projections):
            if i:
                features = self.steps[i - 1](features)
            params.append(projection(features))
        return params


def dense_stack(units, activation, name):
    """`Dense(u)` for u in `units`, as one named Sequential."""
    return keras.Sequential(networks.dense_layers(units, activation), name=name)
