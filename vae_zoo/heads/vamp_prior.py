"""The VampPrior: p(z) = (1/K) Σ_k q(z|u_k) over K learned pseudo-inputs u_k.

The prior is defined through the model's own encoder and posterior head, which heads
must not import: the model hands it its `encode` when it is built (`attach_encoder`,
called by `vae_zoo.models.VAE`), so any unconditional family (dense, conv, ...) takes
`prior={"name": "vamp", "num_components": 50}` and nothing else changes.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from vae_zoo.heads.priors import PRIORS, Prior

tfd = tfp.distributions


@keras.saving.register_keras_serializable(package="vae_zoo")
@PRIORS.register("vamp")
class VampPrior(Prior):
    """Variational mixture of posteriors prior p(z) = (1/K) Σ_k q(z|u_k).

    The K pseudo-inputs u_k have the shape of one example and are trained with the
    rest of the model; each component is the model's own posterior q(z|u_k) (encoder
    and posterior head, so their weights receive the prior's gradients too). The
    distribution is `MixtureSameFamily(Categorical(uniform), q(z|u))`: batch `[]`,
    event `latent_shape`; `log_prob(z)` = logsumexp_k log q(z|u_k) − log K. No KL to
    it has a closed form: the ELBO uses the Monte-Carlo estimate log q(z|x) − log p(z)
    (automatic in `objectives`), and importance weights score z_k under it.

    Pseudo-inputs stay in the data range: u = clip(r, low, high) of a free variable r
    (the hard-tanh onto [0, 1] of the authors' code; `input_range`, default the [0, 1]
    of `vae_zoo.data` images). Initialization: r ~ N(`init_mean`, `init_stddev`²) from
    `seed` (default 0.5 ± 0.05: mid-grey images with noise, inside the range so every
    pixel gets gradients), or from data with `initialize_from_data(x)`: the data mean
    plus N(0, noise²) noise.

    Args:
        latent_shape: tuple, the event shape of z (given by the family).
        num_components: int >= 1, K (the paper uses 500 on MNIST).
        init_mean, init_stddev: float, the normal the pseudo-inputs start from.
        input_range: (low, high) with low < high, the range the pseudo-inputs are
            clipped to, or None for unconstrained pseudo-inputs.
        seed: int, seeds the initial pseudo-inputs.

    Example:
    ```python
    model = DenseVAE((28, 28, 1), 32, prior={"name": "vamp", "num_components": 500})
    model.prior.initialize_from_data(x_train)       # optional: data mean + noise
    p = model.prior_distribution()                   # batch [], event [32]
    p.log_prob(model.encode(x).sample(seed=[0, 0]))  # [B]
    ```

    Reference: Tomczak & Welling, "VAE with a VampPrior", arXiv:1705.07120.
    """

    def __init__(self, latent_shape, num_components=500, init_mean=0.5, init_stddev=0.05,
                 input_range=(0.0, 1.0), seed=0, **kwargs):
        super().__init__(latent_shape, **kwargs)
        if int(num_components) < 1:
            raise ValueError(f"num_components must be >= 1, got {num_components}")
        if not init_stddev >= 0:
            raise ValueError(f"init_stddev must be >= 0, got {init_stddev}")
        if input_range is not None:
            if len(input_range) != 2 or not input_range[0] < input_range[1]:
                raise ValueError(f"input_range must be (low, high) with low < high, got {input_range}")
            input_range = (float(input_range[0]), float(input_range[1]))
        self.num_components = int(num_components)
        self.init_mean = float(init_mean)
        self.init_stddev = float(init_stddev)
        self.input_range = input_range
        self.seed = int(seed)
        self.example_shape = None
        self.encode_fn = None

    def attach_encoder(self, encode, input_shape, conditional=False):
        """Given by the model: `encode(x) -> q(z|x)` (batch `[B]`) and one example's shape."""
        if conditional:
            raise ValueError(
                "prior 'vamp' needs an unconditional model: its pseudo-inputs pass through "
                "the encoder alone, without a condition"
            )
        self.encode_fn = encode
        self.example_shape = tuple(int(d) for d in input_shape)

    def build(self, input_shape=None):
        if self.example_shape is None:
            raise ValueError("prior 'vamp' is built by its model (it needs the model's encoder)")
        self.raw_pseudo_inputs = self.add_weight(
            name="raw_pseudo_inputs",
            shape=(self.num_components,) + self.example_shape,  # [K, *input_shape]
            initializer=keras.initializers.RandomNormal(
                mean=self.init_mean, stddev=self.init_stddev, seed=self.seed
            ),
            dtype="float32",
            autocast=False,
        )

    def pseudo_inputs(self):
        """u_k, `[K, *input_shape]` float32, inside `input_range`."""
        raw = tf.convert_to_tensor(self.raw_pseudo_inputs)
        if self.input_range is None:
            return raw
        return tf.clip_by_value(raw, *self.input_range)

    def initialize_from_data(self, x, noise_stddev=0.01, seed=0):
        """Set the pseudo-inputs to the mean of the data `x` `[N, *input_shape]` plus
        N(0, noise_stddev²) noise (clipped to `input_range` when used)."""
        x = np.asarray(x, np.float32)
        if x.shape[1:] != self.example_shape:
            raise ValueError(f"x must be [N, *{self.example_shape}], got {x.shape}")
        noise = np.random.default_rng(seed).normal(
            0.0, noise_stddev, (self.num_components,) + self.example_shape
        )
        self.raw_pseudo_inputs.assign((x.mean(axis=0) + noise).astype(np.float32))

    def distribution(self, condition=None, latent_shape=None):
        if self.encode_fn is None:
            raise ValueError("prior 'vamp' is used through its model (it needs the model's encoder)")
        components = self.encode_fn(self.pseudo_inputs())  # batch [K], event latent_shape
        return tfd.MixtureSameFamily(
            mixture_distribution=tfd.Categorical(logits=tf.zeros([self.num_components])),
            components_distribution=components,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "num_components": self.num_components,
            "init_mean": self.init_mean,
            "init_stddev": self.init_stddev,
            "input_range": self.input_range,
            "seed": self.seed,
        }
