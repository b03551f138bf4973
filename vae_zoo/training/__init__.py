"""Training: the fast path, Keras callbacks, distribution strategies and crash-safe
checkpoints.

- `fast_path`: how Keras runs the base model's step (XLA compiled for one batch size in
  `compiled_step`, several steps per call, in-memory arrays in `arrays`): the base
  model's parent class, below the models (it imports none);
- `callbacks`: KL annealing (`annealing`), collapse diagnostics, image grids, IW
  log-likelihood, NaN stop (also `vae_zoo.callbacks`);
- `distribute`: strategies and global batches (also `vae_zoo.distribute`);
- `checkpointing`: atomic files and model checkpoints;
- `keras_internals`: every private Keras/TensorFlow API vae_zoo uses, in one place.

The rest of training imports the core (models, objectives, evaluate, plots) and never
the drivers.
"""
