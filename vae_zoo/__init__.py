"""vae_zoo: variational autoencoders for Keras 3 with TensorFlow Probability distributions.

`import vae_zoo` registers every model, head and prior with Keras, so
`keras.models.load_model("model.keras")` needs no `custom_objects`.
"""

__version__ = "0.1.0"

from vae_zoo._quiet import import_tensorflow  # noqa: E402

import_tensorflow()

from vae_zoo import models  # noqa: E402,F401  (registers the serializable classes)
