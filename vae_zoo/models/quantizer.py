"""The codebook of a VQ-VAE: `VectorQuantizer`, a layer of K code vectors learned by
exponential moving averages of the encoder outputs assigned to each (`vae_zoo.models.vqvae`).
"""

from __future__ import annotations

import keras
import tensorflow as tf


def squared_distances(z_e, codebook):
    """‖z_e − e_k‖² for every vector of `z_e` `[..., D]` and code e_k of `codebook`
    `[K, D]`: `[..., K]`."""
    cross = tf.einsum("...d,kd->...k", z_e, codebook)
    return (tf.reduce_sum(tf.square(z_e), -1, keepdims=True) - 2.0 * cross
            + tf.reduce_sum(tf.square(codebook), -1))



@keras.saving.register_keras_serializable(package="vae_zoo")
class VectorQuantizer(keras.layers.Layer):
    """A codebook of K vectors in R^D, learned by exponential moving averages.

    State, non-trainable variables saved with the model: `codebook` e `[K, D]`,
    `cluster_size` N `[K]` and `embedding_sum` m `[K, D]`. One `update` with the batch's
    encoder outputs z_i and their codes k_i does, with decay γ and smoothing ε
    (van den Oord et al. 2017, appendix A.1; Razavi et al. 2019, eq. 5–6 and the Laplace
    smoothing of their implementation):

        n_k = #{i: k_i = k},           s_k = Σ_{i: k_i = k} z_i
        N_k ← γ N_k + (1 − γ) n_k,     m_k ← γ m_k + (1 − γ) s_k
        Ñ_k = (N_k + ε) / (Σ_j N_j + K ε) · Σ_j N_j
        e_k = m_k / Ñ_k

    N starts at 1 and m at the initial codebook, so a code no batch has used stays
    (up to the smoothing) where it started instead of collapsing to 0. With
    `dead_code_threshold` > 0, every code whose N_k falls below it after an update is
    restarted at a random encoder output of the batch (m_k = z_i, N_k = 1), as in
    Dhariwal et al. 2020 (arXiv:2005.00341). Under a `tf.distribute` strategy n and s
    are summed over the replicas first, so every replica applies the same update.

    Args:
        num_embeddings: K >= 2, codes in the codebook.
        embedding_dim: D >= 1, size of each code vector.
        decay: γ in [0, 1).
        epsilon: ε > 0, Laplace smoothing of the counts.
        dead_code_threshold: float >= 0; 0 never restarts a code.
        seed: int or None, seeds the initial codebook (N(0, 1) entries).

    Example:
    ```python
    quantizer = VectorQuantizer(64, 16)
    quantizer.build()
    codes = quantizer.nearest(z_e)                        # [B, h, w] int32
    z_q = quantizer.embed(tf.one_hot(codes, 64))          # [B, h, w, 16]
    quantizer.update(z_e, tf.one_hot(codes, 64))          # one EMA step
    ```
    """

    def __init__(self, num_embeddings, embedding_dim, decay=0.99, epsilon=1e-5,
                 dead_code_threshold=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.num_embeddings = int(num_embeddings)
        self.embedding_dim = int(embedding_dim)
        self.decay = float(decay)
        self.epsilon = float(epsilon)
        self.dead_code_threshold = float(dead_code_threshold)
        self.seed = seed

    def build(self, input_shape=None):
        if self.built:
            return
        shape = (self.num_embeddings, self.embedding_dim)
        state = dict(trainable=False, dtype="float32", autocast=False, aggregation="mean")
        self.codebook = self.add_weight(
            name="codebook", shape=shape,
            initializer=keras.initializers.RandomNormal(stddev=1.0, seed=self.seed), **state,
        )
        self.cluster_size = self.add_weight(
            name="cluster_size", shape=shape[:1], initializer="ones", **state
        )
        self.embedding_sum = self.add_weight(
            name="embedding_sum", shape=shape, initializer="zeros", **state
        )
        self.embedding_sum.assign(self.codebook)  # e = m / N with N = 1
        self.built = True

    def nearest(self, z_e, codebook=None):
        """The code of each vector of `z_e` `[..., D]`: int32 `[...]` (argmin distance)."""
        codebook = self.codebook if codebook is None else codebook
        distances = squared_distances(z_e, tf.convert_to_tensor(codebook))
        return tf.argmin(distances, axis=-1, output_type=tf.int32)

    def embed(self, one_hot, codebook=None):
        """`one_hot` `[..., K]` (or any weights over the codes) → Σ_k w_k e_k `[..., D]`."""
        codebook = self.codebook if codebook is None else codebook
        return tf.einsum("...k,kd->...d", one_hot, tf.convert_to_tensor(codebook))

    def update(self, z_e, one_hot, seed=None):
        """One EMA step (class docstring) from encoder outputs `z_e` `[..., D]` and their
        one-hot codes `[..., K]`; `seed` (a `[2]` stateless seed) picks restarts."""
        flat_z = tf.reshape(tf.stop_gradient(z_e), [-1, self.embedding_dim])  # [M, D]
        flat_codes = tf.reshape(tf.stop_gradient(one_hot), [-1, self.num_embeddings])
        counts = tf.reduce_sum(flat_codes, 0)  # n_k, [K]
        sums = tf.matmul(flat_codes, flat_z, transpose_a=True)  # s_k, [K, D]
        replica = tf.distribute.get_replica_context()
        if replica is not None and replica.num_replicas_in_sync > 1:
            counts, sums = replica.all_reduce(tf.distribute.ReduceOp.SUM, [counts, sums])
        decay = self.decay
        size = decay * self.cluster_size + (1.0 - decay) * counts
        total = decay * self.embedding_sum + (1.0 - decay) * sums
        if self.dead_code_threshold > 0:
            size, total = self._restart_dead_codes(size, total, flat_z, seed)
        self.cluster_size.assign(size)
        self.embedding_sum.assign(total)
        self.codebook.assign(total / self.smoothed_sizes(size)[:, None])

    def smoothed_sizes(self, size):
        """Ñ_k = (N_k + ε) / (Σ N + K ε) · Σ N: counts never 0, same total."""
        n = tf.reduce_sum(size)
        return (size + self.epsilon) / (n + self.num_embeddings * self.epsilon) * n

    def _restart_dead_codes(self, size, total, flat_z, seed):
        dead = size < self.dead_code_threshold  # [K]
        picks = tf.random.stateless_uniform(
            [self.num_embeddings], seed, maxval=tf.shape(flat_z)[0], dtype=tf.int32
        )
        restart = tf.gather(flat_z, picks)  # [K, D]
        return (tf.where(dead, 1.0, size), tf.where(dead[:, None], restart, total))

    def get_config(self):
        return {
            **super().get_config(),
            "num_embeddings": self.num_embeddings,
            "embedding_dim": self.embedding_dim,
            "decay": self.decay,
            "epsilon": self.epsilon,
            "dead_code_threshold": self.dead_code_threshold,
            "seed": self.seed,
        }
