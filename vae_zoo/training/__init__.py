"""Training: Keras callbacks, distribution strategies and crash-safe checkpoints.

- `callbacks`: KL annealing, collapse diagnostics, image grids, IW log-likelihood,
  NaN stop (also `vae_zoo.callbacks`);
- `distribute`: strategies and global batches (also `vae_zoo.distribute`);
- `checkpointing`: atomic files and model checkpoints;
- `keras_internals`: every private Keras/TensorFlow API vae_zoo uses, in one place.

Training imports the core (models, objectives, evaluate, plots) and never the drivers.
"""
