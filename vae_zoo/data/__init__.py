"""Input pipelines: named datasets and in-memory arrays as batched `tf.data.Dataset`s.

- `sources`: the registry of named datasets (`DATASETS`, `DatasetEntry`) and `load`,
  `load_arrays`, `load_embedded_mnist`;
- `pipeline`: `make_dataset` and the shared batching, scaling and binarization.
"""

from vae_zoo.data.pipeline import (
    BINARIZE_MODES,
    PREFETCH_BATCHES,
    first_examples,
    make_dataset,
    static_binarize,
)
from vae_zoo.data.sources import (
    DatasetEntry,
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
    "BINARIZE_MODES", "DATASETS", "PREFETCH_BATCHES", "DatasetEntry", "entry", "first_examples",
    "has_labels",
    "input_shape_of", "load", "load_arrays", "load_embedded_mnist", "make_dataset", "names",
    "register", "static_binarize",
]
