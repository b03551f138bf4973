"""Drivers: everything that turns a recipe or a command into files.

- `recipes` (with `schema`): TOML recipes validated once into a plain dict, and the
  builders of data, model and optimizer from it;
- `runs`: train a recipe into a run folder, resumably;
- `tuning` (with `hypermodel`): keras-tuner searches over a recipe;
- `export` (with `signatures`): TF-Serving SavedModels;
- `cli`: the `vae-zoo` command.

Drivers import the core, `data` and `training`; nothing below imports a driver.
"""
