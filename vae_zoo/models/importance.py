"""Importance sampling: a model's log importance weights and what is built on them.

`ImportanceSampling` is a parent of `vae_zoo.models.base.VAE`. For K draws
z_k ~ q(z|x) the log weights log p(x|z_k) + log p(z_k) − log q(z_k|x) give the
importance-weighted bounds of the objectives (`vae_zoo.models.training_objectives`),
`vae_zoo.evaluate.log_likelihood` and `anomaly_score`. A family whose K draws are not
K samples of q(z|x) (one point of a quantized code, a ladder's joint draw) overrides
`importance_terms`; one whose log-densities come in parts, `score_latents`.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from vae_zoo import objectives


def _log_weights(terms):
    """log p(x|z_k) + log p(z_k) − log q(z_k|x) from `importance_terms`' dict."""
    return terms["log_likelihood"] + terms["log_prior"] - terms["log_posterior"]


class ImportanceSampling:
    """The importance-weighted scoring of a model with `encode`, `decode`, `prior_for`,
    `likelihood`, `draw_seed` and `data_shape`."""

    def log_importance_weights(self, x, num_samples, y=None, seed=None):
        """log p(x|z_k) + log p(z_k) − log q(z_k|x) for K samples z_k ~ q: `[K, B]`."""
        return _log_weights(self.importance_terms(x, num_samples, y, seed))

    def importance_weights_of(self, x, y=None):
        """`fn(k, seed) -> [k, B]`: `log_importance_weights(x, k, y, seed)` for one batch
        x, chunk after chunk of draws (an importance-weighted bound's loop), with
        q(z|x) computed once, not once per chunk. Same draws, same numbers.

        A family that overrides `importance_terms` gets its `log_importance_weights`,
        x encoded with every chunk.
        """
        if type(self).importance_terms is not ImportanceSampling.importance_terms:
            return lambda k, seed: self.log_importance_weights(x, k, y, seed)
        x = tf.convert_to_tensor(x, tf.float32)
        q = self.encode(x, y)

        def log_weights(num_samples, seed):
            z = q.sample(num_samples, seed=self.draw_seed(seed))
            return _log_weights(self.score_latents(x, q, z, y))

        return log_weights

    def importance_terms(self, x, num_samples, y=None, seed=None):
        """The parts of the log importance weights for K reparameterized z_k ~ q(z|x).

        Returns:
            dict of `[K, B]` tensors: "log_likelihood" log p(x|z_k), "log_prior"
            log p(z_k) and "log_posterior" log q(z_k|x).
        """
        seed = self.draw_seed(seed)
        x = tf.convert_to_tensor(x, tf.float32)
        q = self.encode(x, y)
        return self.score_latents(x, q, q.sample(num_samples, seed=seed), y)

    def score_latents(self, x, q, z, y=None):
        """The parts of the log importance weights at given samples z `[K, B, ...]` of q.

        Returns:
            dict of `[K, B]` tensors, as `importance_terms`.
        """
        return {
            "log_likelihood": self.log_likelihood_of_draws(x, z, y),
            "log_prior": self.prior_for(q, y).log_prob(z),
            "log_posterior": q.log_prob(z),
        }

    def log_likelihood_of_draws(self, x, z, y=None):
        """log p(x|z_k) `[K, B]` for draws z `[K, B, *latent_shape]`: the K draws decoded
        as one batch of K·B (the conditions repeated as the draws are)."""
        num_samples = z.shape[0] if z.shape[0] is not None else tf.shape(z)[0]
        flat_z = tf.reshape(z, tf.concat([[-1], tf.shape(z)[2:]], 0))  # [K*B, *latent_shape]
        tiled_y = None
        if y is not None:
            y = tf.convert_to_tensor(y)
            tiled_y = tf.tile(y, [num_samples] + [1] * (y.shape.rank - 1))
        return self.likelihood.log_prob_of_draws(self.decode(flat_z, tiled_y), x, num_samples)

    @property
    def likelihood_params_per_example(self) -> int:
        """Likelihood parameters the decoder outputs per example (256 per pixel for a
        256-way categorical): what bounds the memory of a chunk of importance samples."""
        return math.prod(self.likelihood.params_shape(self.data_shape))

    def anomaly_score(self, x, y=None, num_samples=1000, seed=0):
        """−log p(x) per example (importance-weighted, `num_samples` samples): `[B]` numpy.

        Higher means less likely under the model. The bound of
        `vae_zoo.evaluate.log_likelihood`, without its input checks.
        """
        return -objectives.iw_log_likelihood(
            self.log_importance_weights, np.asarray(x, np.float32), int(num_samples),
            self.likelihood_params_per_example, y=y, seed=seed,
            batch_bound=objectives.batch_bound_of(self.importance_weights_of),
        )
