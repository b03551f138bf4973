"""Shared test helpers: tiny models and data, eager/compiled checks.

Tests marked `slow` (subprocesses, notebooks, multi-device and end-to-end runs) run in
README's test command with the rest; `pytest -m "not slow"` leaves them out for a
quick edit loop. Models compiled with the default `jit_compile="auto"` get the plain
step unless the test is marked `xla` (see `_plain_step_unless_marked_xla`).
`family_case.py` holds the shared checks every model family passes.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Two pytest workers share the machine's cores: one TensorFlow thread each (and in the
# processes they start) instead of pools sized to every core, which oversubscribe them.
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _plain_step_unless_marked_xla(request, monkeypatch):
    """`compile(jit_compile="auto")` gives the plain step, except in tests marked `xla`.

    XLA's compilation is most of what a tiny model's `fit` costs: it took about 40 % of
    the CPU time of the family test files (test_models, test_conditional, ...). The
    compiled step is tested where it is the point: test_fast_path (XLA against the
    plain step), the shared checks of every family (test_matrix), the families' own
    default-path tests and the trace counts of test_arrays, all marked `xla`.
    Processes the tests start keep the package's default.
    """
    if request.node.get_closest_marker("xla") is None:
        from vae_zoo.training.fast_path import FastPath

        monkeypatch.setattr(FastPath, "default_jit_compile", False)


def binary_data(n=16, shape=(6,), seed=0):
    """Random {0, 1} float32 data `[n, *shape]` with some structure (two prototypes)."""
    rng = np.random.default_rng(seed)
    prototypes = rng.random((2,) + tuple(shape)) > 0.5
    which = rng.integers(0, 2, n)
    flips = rng.random((n,) + tuple(shape)) < 0.1
    return (prototypes[which] ^ flips).astype("float32")


def tiny_dense(input_shape=(6,), latent_dim=2, hidden_units=(8,), **kwargs):
    from vae_zoo.models import DenseVAE

    kwargs.setdefault("seed", 0)
    return DenseVAE(input_shape=input_shape, latent_dim=latent_dim, hidden_units=hidden_units, **kwargs)


def assert_same_outputs(a, b, x, atol=1e-6):
    """Two models give identical encoder and decoder means on x."""
    z = a.encode(x).mean()
    np.testing.assert_allclose(a.encode(x).mean(), b.encode(x).mean(), atol=atol)
    np.testing.assert_allclose(a.encode(x).stddev(), b.encode(x).stddev(), atol=atol)
    np.testing.assert_allclose(a.decode(z).mean(), b.decode(z).mean(), atol=atol)


def xla_compiled(graph_def):
    """Names of what a GraphDef's function library compiles with XLA (`jit_compile`):
    functions marked `_XlaMustCompile`, and call nodes so marked."""
    functions = graph_def.library.function
    return ([f.signature.name for f in functions if f.attr["_XlaMustCompile"].b]
            + [node.name for f in functions for node in f.node_def
               if node.attr["_XlaMustCompile"].b])


# The longest modules (measured with --durations on 2 cores), started first in this
# order; then the other modules with `slow` tests, then the rest.
LONGEST_MODULES = ("test_faults", "test_tuning", "test_multiworker_resume", "test_notebooks",
                   "test_export", "test_multiworker", "test_distribute", "test_benchmarks",
                   "test_own_data", "test_cli")


def pytest_collection_modifyitems(config, items):
    """Each module's tests together, the longest modules first (`LONGEST_MODULES`),
    then the other modules with tests marked `slow` (stable order otherwise): README's
    command hands whole modules to the workers (`--dist loadscope
    --no-loadscope-reorder`), so a module's fixtures are built once, the long
    subprocess modules start early, and the short ones fill the end of the run."""
    slow_modules = {item.module.__name__ for item in items
                    if item.get_closest_marker("slow") is not None}

    def rank(item):
        name = item.module.__name__
        if name in LONGEST_MODULES:
            return LONGEST_MODULES.index(name)
        return len(LONGEST_MODULES) + (name not in slow_modules)

    items.sort(key=rank)
