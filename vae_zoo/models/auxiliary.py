"""Auxiliary parts: layers a family trains beside the VAE with their own optimizer and
loss (FactorVAE's discriminator), through the base model's one `train_step`.

`AuxiliaryParts` is a parent of `vae_zoo.models.base.VAE`; a family returns its parts
from `auxiliary_parts` and makes their optimizers in `make_auxiliary_optimizer`, and
its objective returns each part's per-example loss as `"<name>_loss"`.
"""

from __future__ import annotations

import tensorflow as tf


def mean_over_global_batch(per_example):
    """Σ over the replica's examples / global batch size.

    Under a `tf.distribute` strategy Keras sums the replicas' gradients, so each
    replica's loss must be its share of the global mean, not its own mean.
    """
    total = tf.reduce_sum(per_example)
    count = tf.cast(tf.shape(per_example)[0], per_example.dtype)
    replica = tf.distribute.get_replica_context()
    if replica is not None and replica.num_replicas_in_sync > 1:
        count = replica.all_reduce(tf.distribute.ReduceOp.SUM, count)
    return total / count


class AuxiliaryParts:
    """The hooks of auxiliary parts, and the optimizers' building and updates."""

    def auxiliary_parts(self):
        """Layers trained by their own optimizer, not the main one: `{name: layer}`.

        None here. For each part a family returns, the objective's terms include the
        per-example loss `"<name>_loss"` (`[B]`), `compile` creates the optimizer
        `make_auxiliary_optimizer(name)` in the model's strategy scope and builds it
        (the attribute `<name>_optimizer`, so `.keras` files, weight files and
        `tf.train.Checkpoint` keep its state), and `train_step`, after the main
        update, minimizes the loss's mean over the global batch with it over the
        part's trainable variables only. The main optimizer trains the other
        variables (`main_variables`), so the main loss never moves a part.
        """
        return {}

    def make_auxiliary_optimizer(self, name):
        """A new optimizer for the auxiliary part `name` (called by `compile`)."""
        raise NotImplementedError(f"{type(self).__name__} has no auxiliary part {name!r}")

    def auxiliary_optimizers(self):
        """`{name: optimizer}` of the auxiliary parts (None before `compile`)."""
        return {name: getattr(self, f"{name}_optimizer", None) for name in self.auxiliary_parts()}

    def main_variables(self):
        """The trainable variables the main optimizer trains: all but the parts'."""
        parts = self.auxiliary_parts().values()
        auxiliary = {id(v) for part in parts for v in part.trainable_variables}
        return [v for v in self.trainable_variables if id(v) not in auxiliary]

    def build_optimizers(self):
        """Build the main optimizer on `main_variables` and make and build each part's."""
        parts = self.auxiliary_parts()
        with self.distribute_strategy.scope():
            # Built here, not in the first trace of the training step: a step that
            # creates the optimizer's slots is traced a second time (tf.function
            # retraces a function that created variables). Keras would also build
            # the main optimizer on every trainable variable, parts' included.
            if (self.built or parts) and not self.optimizer.built:
                self.optimizer.build(self.main_variables())
            for name, part in parts.items():
                optimizer = self.make_auxiliary_optimizer(name)
                optimizer.build(part.trainable_variables)
                setattr(self, f"{name}_optimizer", optimizer)

    def auxiliary_losses(self, terms):
        """`{name: scaled mean loss}` of each part, inside the step's gradient tape."""
        optimizers = self.auxiliary_optimizers()
        return {name: optimizers[name].scale_loss(mean_over_global_batch(terms[f"{name}_loss"]))
                for name in self.auxiliary_parts()}

    def apply_auxiliary(self, tape, losses):
        """One update of each part on its own loss (after the main update)."""
        optimizers = self.auxiliary_optimizers()
        for name, part in self.auxiliary_parts().items():
            variables = part.trainable_variables
            optimizers[name].apply(tape.gradient(losses[name], variables), variables)
