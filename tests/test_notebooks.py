"""The notebooks in notebooks/: each one runs top to bottom on its quick settings
(VAE_ZOO_NOTEBOOK_QUICK=1) in a kernel of this Python, and is committed without outputs."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

# Subprocesses, several devices or whole runs: out of the quick `-m "not slow"` loop.
pytestmark = pytest.mark.slow

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402
from jupyter_client.manager import KernelManager  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT = 300  # seconds per cell; the quick settings need a few
KERNEL = "vae_zoo_test"


def tracked_notebooks():
    """The notebooks git tracks (all of them when this is not a git checkout)."""
    try:
        listed = subprocess.run(["git", "ls-files", "*.ipynb"], cwd=NOTEBOOK_DIR,
                                capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return NOTEBOOKS
    return sorted(NOTEBOOK_DIR / name for name in listed) or NOTEBOOKS


@pytest.fixture(scope="module")
def kernel_specs(tmp_path_factory):
    """A kernel spec running ipykernel in *this* interpreter (sys.executable), so the
    notebooks import the vae_zoo under test whatever other Jupyter kernels exist."""
    root = tmp_path_factory.mktemp("kernels")
    spec = root / KERNEL
    spec.mkdir()
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "vae_zoo tests",
        "language": "python",
        "env": {"VAE_ZOO_NOTEBOOK_QUICK": "1", "TF_CPP_MIN_LOG_LEVEL": "2"},
    }))
    return KernelSpecManager(kernel_dirs=[str(root)], ensure_native_kernel=False)


def test_there_are_notebooks():
    assert [p.name for p in NOTEBOOKS] == [
        "01_quickstart.ipynb", "02_beta_and_collapse.ipynb",
        "03_conditional_and_conv.ipynb", "04_tune_export_serve.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, kernel_specs, tmp_path):
    nb = nbformat.read(path, as_version=4)
    # One more cell, to check where and how the kernel ran.
    nb.cells.append(nbformat.v4.new_code_cell(
        "import os, sys; print(sys.executable, os.getcwd(), os.environ['VAE_ZOO_NOTEBOOK_QUICK'], "
        "QUICK, sep='\\n')"))
    km = KernelManager(kernel_name=KERNEL, kernel_spec_manager=kernel_specs)
    client = nbclient.NotebookClient(
        nb, km=km, timeout=CELL_TIMEOUT, allow_errors=False,
        resources={"metadata": {"path": str(tmp_path)}},  # the kernel's working folder
    )
    start = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - start
    print(f"{path.name}: {elapsed:.1f} s")
    # The kernel was this interpreter, in tmp_path, on the quick settings.
    where = "".join(o.get("text", "") for o in nb.cells[-1].outputs).split("\n")
    assert where[:4] == [sys.executable, str(tmp_path), "1", "True"], where
    errors = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs
              if o.output_type == "error"]
    assert not errors
    figures = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs
               if "image/png" in o.get("data", {})]
    assert figures, "every notebook draws at least one figure"
    # Nothing written into the working folder (outputs go to temporary folders).
    assert not any(tmp_path.iterdir()), sorted(p.name for p in tmp_path.iterdir())


@pytest.mark.parametrize("path", tracked_notebooks(), ids=lambda p: p.stem)
def test_notebook_is_stripped(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(cell.outputs == [] for cell in code), (
        f"{path.name} has outputs: run python notebooks/strip_outputs.py")
    assert all(cell.execution_count is None for cell in code), (
        f"{path.name} has execution counts: run python notebooks/strip_outputs.py")
    # The layout every notebook follows: what it teaches, then the parameters cell.
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    parameters = next(cell for cell in code)
    assert 'os.environ.get("VAE_ZOO_NOTEBOOK_QUICK") == "1"' in parameters.source


def test_strip_outputs_script(tmp_path):
    """notebooks/strip_outputs.py clears what an execution leaves and --check notices it."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")])
    nb.cells[0].outputs = [nbformat.v4.new_output("execute_result", {"text/plain": "2"},
                                                  execution_count=1)]
    nb.cells[0].execution_count = 1
    nb.cells[0].metadata["execution"] = {"iopub.status.idle": "2026-01-01T00:00:00Z"}
    path = tmp_path / "run.ipynb"
    nbformat.write(nb, path)
    script = [sys.executable, str(NOTEBOOK_DIR / "strip_outputs.py")]
    assert subprocess.run(script + ["--check", str(path)], capture_output=True).returncode == 1
    assert subprocess.run(script + [str(path)], capture_output=True).returncode == 0
    assert subprocess.run(script + ["--check", str(path)], capture_output=True).returncode == 0
    cell = nbformat.read(path, as_version=4).cells[0]
    assert cell.outputs == [] and cell.execution_count is None and "execution" not in cell.metadata
