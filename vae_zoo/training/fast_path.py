"""The fast path: how Keras runs a vae_zoo model's one training step.

`FastPath` is the parent of the base model (`vae_zoo.models.base.VAE`), the one seam
between the model and Keras' loop. The model hands it its step (`_train_step(data)`,
`_test_step(data)`) and how to read a batch (`unpack_inputs`); `FastPath` decides how
Keras calls them:

- `compile`: XLA and `AUTO_STEPS_PER_EXECUTION` steps per call of the compiled function
  by default, which removes the per-step Python and dispatch overhead; the plain step
  and one step per call for a model built under a `tf.distribute` strategy (Keras
  turns XLA off there and Keras 3.15 fails with more steps per call);
- the train function: with XLA, the step compiled for one batch size
  (`compiled_step.OneBatchSizeXla`), so a short last batch runs the same step as a
  plain graph instead of a second compilation; the test function (`evaluate`, `fit`'s
  validation) always a plain graph, since XLA's compilation of the forward pass costs
  about a second per `fit` for no steady gain on CPU;
- `fit`: in-memory arrays through a fixed pipeline, datasets without tf.data's
  autotuner on the CPU (`arrays.fit_arguments`).

Under this layer's rules the fast path imports no model: it is below them.
"""

from __future__ import annotations

import inspect

import keras
import tensorflow as tf

from vae_zoo.training import arrays
from vae_zoo.training.compiled_step import OneBatchSizeXla

# Training steps per call of the compiled train function when `compile` is left at
# steps_per_execution="auto" (one tf.while_loop runs them; more gains little).
AUTO_STEPS_PER_EXECUTION = 32


class FastPath(keras.Model):
    """`keras.Model` with fast defaults for a model that defines `_train_step`,
    `_test_step`, `unpack_inputs` and `built_under_strategy`.

    `default_jit_compile` is what `compile(jit_compile="auto")` means off a strategy:
    True (XLA) unless set to False on the class, as the test suite does for tests that
    are not about the compiled step (XLA's compilation is most of a tiny model's `fit`).
    """

    default_jit_compile = True

    def compile(self, optimizer="rmsprop", *, jit_compile="auto", steps_per_execution="auto",
                **kwargs):
        """`keras.Model.compile` with fast defaults: XLA and several steps per call.

        Args:
            jit_compile: "auto" (default) compiles the step with XLA, also on CPU
                (where Keras' own "auto" would not: for these models the XLA step is
                faster there too, see `benchmarks/train_throughput.py`), except for a
                model built under a `tf.distribute` strategy, where Keras turns XLA
                off. True / False as in Keras.
            steps_per_execution: "auto" (default) runs `AUTO_STEPS_PER_EXECUTION`
                steps per call of the compiled function, or 1 under a `tf.distribute`
                strategy (Keras 3.15 fails there with more). An int as in Keras. With
                N > 1, callbacks' batch hooks run every N steps; a β schedule is read
                inside the compiled step, so it still changes β at every step.
            optimizer, **kwargs: as in `keras.Model.compile`.
        """
        distributed = self.built_under_strategy
        if jit_compile == "auto":
            jit_compile = self.default_jit_compile and not distributed
        if steps_per_execution == "auto":
            steps_per_execution = 1 if distributed else AUTO_STEPS_PER_EXECUTION
        super().compile(optimizer=optimizer, jit_compile=jit_compile,
                        steps_per_execution=steps_per_execution, **kwargs)

    def fit(self, *args, **kwargs):
        """`keras.Model.fit`, with in-memory arrays fed by a fixed pipeline.

        NumPy arrays (and eager tensors) for `x` (and `y`, and `validation_data` or
        `validation_split`) go through `vae_zoo.training.arrays.array_dataset`: the
        same batches, shuffled every epoch as Keras shuffles them, without the run-time
        tuned pipeline Keras builds for arrays, which stalls some epochs by seconds on
        a busy CPU. Everything else is Keras' `fit`.
        """
        return super().fit(**arrays.fit_arguments(args, kwargs))

    fit.__signature__ = inspect.signature(keras.Model.fit)  # what callers bind against

    def make_train_function(self, force=False):
        """Keras' train function; with `jit_compile`, its step is compiled by XLA for
        one batch size (`OneBatchSizeXla`)."""
        if self.train_function is not None and not force:
            return self.train_function
        return self._make_step_function("train", self._train_step, super().make_train_function)

    def make_test_function(self, force=False):
        """Keras' test function, always a plain graph."""
        if self.test_function is not None and not force:
            return self.test_function
        return self._make_step_function("test", self._test_step, super().make_test_function,
                                        compiled=False)

    def _make_step_function(self, kind, step, make, compiled=True):
        """Keras' `make` without XLA around a step that compiles itself when the model
        is compiled with XLA (and `compiled`)."""
        xla = bool(self.jit_compile) and not self.run_eagerly
        self.xla_steps()[kind] = OneBatchSizeXla(step, self._batch_size_of) if xla and compiled \
            else None
        if not xla:
            return make(force=True)
        self.jit_compile = False  # Keras' own function: the step inside is compiled
        try:
            return make(force=True)
        finally:
            self.jit_compile = True

    def xla_steps(self) -> dict:
        """`{"train": OneBatchSizeXla or None, "test": None}`, the steps the functions
        call; kept outside Keras' attribute tracking (the dispatcher's counters are not
        the model's weights)."""
        if "_xla_steps" not in vars(self):
            object.__setattr__(self, "_xla_steps", {})
        return vars(self)["_xla_steps"]

    def _batch_size_of(self, data):
        return tf.shape(self.unpack_inputs(data)[0])[0]

    def train_step(self, data):
        step = self.xla_steps().get("train")
        return step(data) if step is not None else self._train_step(data)

    def test_step(self, data):
        step = self.xla_steps().get("test")
        return step(data) if step is not None else self._test_step(data)
