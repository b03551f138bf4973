"""Input pipelines: named datasets, your own data and in-memory arrays as batched
`tf.data.Dataset`s.

- `sources`: the registry of named datasets (`DATASETS`, `DatasetEntry`), any TFDS
  name, and `load`, `load_arrays`, `load_embedded_mnist`;
- `own`: image folders and .npz/.npy files (their rules: keys, labels, splits);
- `dsprites`: the synthetic dSprites (`"dsprites_synthetic"`), drawn by code from its
  five factors, and the factor sampler and renderer disentanglement metrics need;
- `pipeline`: `make_dataset` and the shared batching, scaling and binarization.
"""

from vae_zoo.data.pipeline import (
    BINARIZE_MODES,
    CACHE_BUDGET_MB,
    PREFETCH_BATCHES,
    first_examples,
    make_dataset,
    static_binarize,
)
from vae_zoo.data.sources import (
    DatasetEntry,
    UnknownDataset,
    entry,
    has_labels,
    input_shape_of,
    load,
    load_arrays,
    load_embedded_mnist,
    names,
    register,
)

DATASETS = names()

__all__ = [
    "BINARIZE_MODES", "CACHE_BUDGET_MB", "DATASETS", "PREFETCH_BATCHES", "DatasetEntry",
    "UnknownDataset", "entry", "first_examples",
    "has_labels",
    "input_shape_of", "load", "load_arrays", "load_embedded_mnist", "make_dataset", "names",
    "register", "static_binarize",
]
