"""Write the TF Serving REST request/response examples of README.md from a real test image.

    python saved_models/rest_example.py [--export saved_models/mnist_dense/1] [--output saved_models/examples]

The request is built from the first test digit of the embedded MNIST sample, rounded
to {0, 1} (the model was trained on binarized digits). The response is what the
exported SavedModel returns for it, computed here with `tf.saved_model.load` and the
same signatures TF Serving calls, written in TF Serving's REST response format: row
format (`instances` → `predictions`, the output name omitted when there is only one)
and columnar format (`inputs` → `outputs`). Floats are written with the shortest
decimal that reads back as the same float32.

Files written:
- `encode_request.json` / `encode_response.json`: `encode`, row format;
- `log_likelihood_request.json` / `log_likelihood_response.json`: `log_likelihood`
  (K = 1000 importance samples, seed 0), columnar format (it has scalar inputs).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _floats(array):
    """Nested lists of float32 values as Python floats with float32's shortest repr."""
    array = np.asarray(array, np.float32)
    if array.ndim == 0:
        return float(np.format_float_positional(array[()], unique=True, trim="0"))
    return [_floats(a) for a in array]


def test_image():
    from vae_zoo import data

    x, y = data.load_arrays("mnist_sample", "test")
    return x[0].round(), int(y[0])  # [28, 28, 1] in {0, 1}, its digit


def build(export_dir):
    """`{name: (request, response)}` for the README examples."""
    import tensorflow as tf

    image, _ = test_image()
    signatures = tf.saved_model.load(str(export_dir)).signatures
    examples = {}

    request = {"signature_name": "encode", "instances": [{"x": _floats(image)}]}
    out = signatures["encode"](x=tf.constant(image[None]))
    response = {"predictions": [{key: _floats(out[key][0]) for key in sorted(out)}]}
    examples["encode"] = (request, response)

    request = {"signature_name": "log_likelihood",
               "inputs": {"x": [_floats(image)], "num_samples": 1000, "seed": 0}}
    out = signatures["log_likelihood"](
        x=tf.constant(image[None]), num_samples=tf.constant(1000), seed=tf.constant(0)
    )
    response = {"outputs": _floats(out["log_likelihood"])}  # one output: name omitted
    examples["log_likelihood"] = (request, response)
    return examples


def _dump(payload):
    """JSON with one image row per line (readable, and diffs stay small)."""
    text = json.dumps(payload, separators=(",", ":"))
    return text.replace("]],[[", "]],\n[[") + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--export", default=str(HERE / "mnist_dense" / "1"))
    parser.add_argument("--output", default=str(HERE / "examples"))
    args = parser.parse_args(argv)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    for name, (request, response) in build(args.export).items():
        (output / f"{name}_request.json").write_text(_dump(request))
        (output / f"{name}_response.json").write_text(json.dumps(response) + "\n")
        print(f"wrote {output / name}_request.json, {name}_response.json")


if __name__ == "__main__":
    main()
