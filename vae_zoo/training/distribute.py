"""Distribution strategies: one device, all local GPUs, or several workers.

`strategy_for(name)` picks a `tf.distribute.Strategy`; `vae_zoo.runs.train`, `vae-zoo
train` and `vae_zoo.tuning` all go through it, so the CLI and the Python API distribute the
same way:

- `"one_device"`: TensorFlow's default strategy (one device: the first GPU if any, else
  the CPU); exactly what plain `model.fit` does.
- `"mirrored"`: `tf.distribute.MirroredStrategy` over every local GPU (over the logical
  CPU devices when there is no GPU, which is how the tests run it); one replica each.
- `"multi_worker"`: `tf.distribute.MultiWorkerMirroredStrategy`, configured from the
  `TF_CONFIG` environment variable (the cluster and this process's task); every worker
  runs the same program.
- `"auto"` (the default): `"multi_worker"` when `TF_CONFIG` is set, else `"mirrored"`
  when more than one GPU is visible, else `"one_device"`.

Under any of them, build and compile the model in `strategy.scope()`, batch the data by
the *global* batch (`global_batch_size`: per-replica batch × replicas; a recipe's
`data.batch_size` is per replica) and let `fit` split each global batch over the
replicas. `shard` sets the auto-shard policy that keeps that split exact across
workers: every worker reads the same pipeline (same seeds), and each global batch is
cut into one piece per replica, so the replicas together see exactly the batches a
single process would.

Example:
```python
strategy = vae_zoo.distribute.strategy_for("auto")
with strategy.scope():
    model = DenseVAE(input_shape=(28, 28, 1), latent_dim=32)
    model.compile(optimizer="adam")
batch = vae_zoo.distribute.global_batch_size(128, strategy)      # 128 × replicas
train = vae_zoo.distribute.shard(data.load("mnist_sample", batch_size=batch, seed=0))
model.fit(train, epochs=30)
```
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from vae_zoo.training import keras_internals

# The strategy names a recipe's `train.strategy` and `--strategy` take.
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")

# One strategy object per kind and process: TensorFlow cannot always create a second
# MirroredStrategy, and never a second MultiWorkerMirroredStrategy, in one process.
_CACHE: dict = {}


def tf_config() -> dict | None:
    """The parsed `TF_CONFIG` environment variable, or None when it is unset or empty.

    Raises:
        ValueError: TF_CONFIG is not JSON, or has no `cluster` with at least one task.
    """
    text = os.environ.get("TF_CONFIG", "").strip()
    if not text:
        return None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON: {error}") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not any(cluster.values()):
        raise ValueError('TF_CONFIG needs a "cluster" listing the workers, e.g. '
                         '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                         '"task": {"type": "worker", "index": 0}}')
    task = config.get("task")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise ValueError('TF_CONFIG needs a "task" naming this process, e.g. '
                         '{"type": "worker", "index": 0}')
    return config


def local_devices() -> list[str]:
    """The devices a MirroredStrategy mirrors over: every GPU, else every logical CPU."""
    gpus = tf.config.list_logical_devices("GPU")
    return [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]


def resolve(name: str = "auto") -> str:
    """The concrete kind `name` stands for: "auto" becomes "multi_worker" (TF_CONFIG
    set), "mirrored" (several GPUs) or "one_device"; other names are returned as is."""
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {name!r}")
    if name != "auto":
        return name
    if tf_config() is not None:
        return "multi_worker"
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return "mirrored"
    return "one_device"


def strategy_for(name: str = "auto") -> tf.distribute.Strategy:
    """The `tf.distribute.Strategy` for a strategy name (a recipe's `train.strategy`).

    The same object is returned for the same kind within a process ("one_device" is
    whatever `tf.distribute.get_strategy()` gives: call it outside other strategies'
    scopes). A MultiWorkerMirroredStrategy must be the first strategy a process
    creates: make it before running any other TensorFlow op.

    Raises:
        ValueError: an unknown name, or "multi_worker" without a TF_CONFIG.
    """
    kind = resolve(name)
    if kind == "one_device":
        # Outside any scope this is TensorFlow's default strategy: no distribution.
        return tf.distribute.get_strategy()
    if kind in _CACHE:
        return _CACHE[kind]
    if kind == "mirrored":
        strategy = tf.distribute.MirroredStrategy(local_devices())
    else:
        if tf_config() is None:
            raise ValueError(
                "strategy 'multi_worker' needs the TF_CONFIG environment variable "
                "(the cluster's workers and this process's task; see README, Multi-worker)"
            )
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    _CACHE[kind] = strategy
    return strategy


def num_replicas(strategy=None) -> int:
    """Replicas in sync: devices over all workers (1 for the default strategy)."""
    return int((strategy or tf.distribute.get_strategy()).num_replicas_in_sync)


def global_batch_size(per_replica: int, strategy=None) -> int:
    """Examples per training step over all replicas: `per_replica` × replicas."""
    return int(per_replica) * num_replicas(strategy)


def shard(dataset, policy=tf.data.experimental.AutoShardPolicy.DATA):
    """`dataset` with the auto-shard policy `fit` uses when it distributes it.

    DATA (the default here) keeps the input pipeline whole on every worker and gives
    each replica its own slice of every global batch. It is the right policy for this
    package's pipelines: in-memory data has no files to split; FILE sharding of a TFDS
    split would give each worker its own files, so the batches would differ from one
    process's (and a split with fewer files than workers fails); and the seeded
    shuffling and binarization are the same on every worker, so together the replicas
    see exactly the batches one process would.
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = policy
    return dataset.with_options(options)


def is_multi_worker(strategy=None) -> bool:
    """Whether `strategy` spans several workers (a MultiWorkerMirroredStrategy with a
    cluster of more than one task)."""
    strategy = strategy or tf.distribute.get_strategy()
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and (
        keras_internals.in_multi_worker_mode(strategy)
    )


def prepare_model(model, strategy=None):
    """Adapt a model compiled in `strategy.scope()` to `fit` under it; returns the model.

    Needed under several replicas only (one replica: the model is unchanged), to work
    around Keras 3.15 failures there:

    - Before the first step Keras averages the first batch over the replicas to build
      the model symbolically, which fails on a first global batch that does not split
      evenly over the replicas (e.g. 7 examples on 2: "Inputs to operation AddN ...
      must have the same size") and, under several workers, on `(x, y)` batches
      (conditional families). vae_zoo models create their variables in `__init__`, so
      only the optimizer needs building: it is built here and that step skipped
      (`keras_internals.skip_first_batch_build`).
    - Under several workers, Keras averages each step's metrics with
      `strategy.reduce("MEAN", value, axis=0)`, which fails on scalars ("Invalid
      reduction dimension 0 for input with 0 dimensions", tensorflow/tensorflow#72388).
      The model's steps then return `[1]` vectors (`VAE.step_logs_as_vectors`), which
      that reduction averages back to scalars. Epoch logs are unchanged: Keras reads
      them from the metrics, summed over every replica.

    The changes live on this instance only and are not saved with it.
    """
    strategy = strategy or model.distribute_strategy
    if num_replicas(strategy) < 2 and not is_multi_worker(strategy):
        return model
    if not model.built:
        raise ValueError("prepare_model needs a built model (vae_zoo models build in __init__)")
    if is_multi_worker(strategy):
        model.step_logs_as_vectors = True
    if model.optimizer is not None and not model.optimizer.built:
        with strategy.scope():
            model.optimizer.build(model.trainable_variables)
    keras_internals.skip_first_batch_build(model)
    return model


def task(strategy=None) -> tuple[str | None, int | None]:
    """This worker's `(task type, task index)`; `(None, None)` outside multi-worker."""
    resolver = getattr(strategy or tf.distribute.get_strategy(), "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return None, None
    return resolver.task_type, int(resolver.task_id or 0)


def is_chief(strategy=None) -> bool:
    """Whether this process writes outputs: the "chief" task, else worker 0, else the
    only process (the chief writes run folders; other workers write to temporary ones)."""
    return bool((strategy or tf.distribute.get_strategy()).extended.should_checkpoint)


def from_chief(values, strategy=None) -> list[int]:
    """The chief's `values` (a list of ints) on every worker of a cluster.

    A collective: every worker must call it at the same point of the program (the
    others' `values` are ignored, only their length counts). Outside multi-worker it
    returns `values` as they are.
    """
    strategy = strategy or tf.distribute.get_strategy()
    values = [int(v) for v in values]
    if not is_multi_worker(strategy):
        return values
    row = tf.constant([[int(is_chief(strategy)), *values]], tf.int64)
    rows = strategy.gather(strategy.run(lambda: tf.identity(row)), axis=0).numpy()
    return [int(v) for v in rows[rows[:, 0] == 1][0, 1:]]


def describe(strategy=None) -> str:
    """One line naming a strategy, its replicas and (multi-worker) this task."""
    strategy = strategy or tf.distribute.get_strategy()
    replicas = num_replicas(strategy)
    name = type(strategy).__name__.lstrip("_")
    if name == "DefaultDistributionStrategy":
        return "one device (no distribution)"
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        name = "MultiWorkerMirroredStrategy"  # its class is CollectiveAllReduceStrategy
    text = f"{name}, {replicas} replica{'s' if replicas != 1 else ''}"
    task_type, task_id = task(strategy)
    if task_type is not None:
        text += f", this process is {task_type} {task_id}"
    elif hasattr(strategy.extended, "worker_devices"):
        devices = strategy.extended.worker_devices
        text += " on " + ", ".join(d.split("/device:")[-1] for d in devices)
    return text
