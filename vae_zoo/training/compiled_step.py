"""The XLA-compiled training and test steps, compiled for one batch size only.

XLA compiles a function once per input shape, at its first call with that shape. A
dataset whose size is not a multiple of the batch size ends every epoch on a smaller
batch, so Keras' `jit_compile=True` step is compiled twice per `fit` (and the test
step twice per validation), the second time in the middle of the first epoch.
`OneBatchSizeXla` runs the step compiled by XLA at the first batch size it sees, and
the same step as a plain graph at any other size: the one short batch per epoch costs
a plain step, not a compilation. The step is traced once, as one plain `tf.function`
that both branches call; the XLA branch calls it through a `jit_compile=True` wrapper
(XLA compiles what a compiled function calls).
"""

from __future__ import annotations

import tensorflow as tf


class OneBatchSizeXla:
    """`step(data)` by XLA at one batch size (the first seen), as a plain graph at others.

    Call it inside a `tf.function` (Keras' train or test function, built without XLA):
    a `tf.cond` on the batch's size picks `compiled` (`plain` under
    `tf.function(jit_compile=True)`) or `plain` (`step` as a `tf.function`). The size and the two step
    counts (`compiled_steps`, `plain_steps`) are variables of this object, not of a
    model, so no weights file or checkpoint sees them.

    Args:
        step: `fn(data) -> dict of tensors`, the same structure from both branches.
        batch_size_of: `fn(data) -> int32 scalar`, the batch's number of examples.
    """

    def __init__(self, step, batch_size_of):
        self.step = step
        self.batch_size_of = batch_size_of
        # Traced once: the plain function's graph, called by both branches; XLA
        # compiles the compiled branch's call of it.
        self.plain = tf.function(step, reduce_retracing=True, autograph=False)
        self.compiled = tf.function(lambda data: self.plain(data), jit_compile=True,
                                    reduce_retracing=True, autograph=False)
        self.size = tf.Variable(-1, dtype=tf.int32, trainable=False, name="xla_batch_size")
        self.compiled_steps = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.plain_steps = tf.Variable(0, dtype=tf.int64, trainable=False)

    def __call__(self, data):
        n = tf.cast(self.batch_size_of(data), tf.int32)
        self.size.assign(tf.where(self.size < 0, n, self.size))

        def compiled():
            self.compiled_steps.assign_add(1)
            return self.compiled(data)

        def plain():
            self.plain_steps.assign_add(1)
            return self.plain(data)

        return tf.cond(tf.equal(n, self.size), compiled, plain)
