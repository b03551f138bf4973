"""The Keras and TensorFlow internals vae_zoo relies on, all in this one module.

Each use below is a private attribute or method of Keras 3.15 / TensorFlow 2.21 with
no public equivalent for what is needed. `tests/test_keras_internals.py` checks each
one's behaviour directly, so an upgrade that changes one fails there, by name, rather
than somewhere in a training run.

- `Model._maybe_symbolic_build`: `fit`'s first-batch build, skipped by
  `skip_first_batch_build` under several replicas (vae_zoo models build in
  `__init__`).
- `StrategyExtended._in_multi_worker_mode()`: whether a strategy spans workers
  (`in_multi_worker_mode`).
"""

from __future__ import annotations


def in_multi_worker_mode(strategy) -> bool:
    """Whether `strategy` is configured with a cluster of several workers."""
    return bool(strategy.extended._in_multi_worker_mode())


def skip_first_batch_build(model):
    """Make `fit` skip its symbolic first-batch build on this instance.

    Keras averages the first batch over the replicas to build the model, which fails
    on a batch that splits unevenly over the replicas and, under several workers, on
    `(x, y)` batches; vae_zoo models create their variables in `__init__`, so nothing
    is lost.
    """
    object.__setattr__(model, "_maybe_symbolic_build", lambda iterator=None, data_batch=None: None)
