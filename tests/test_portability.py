"""The settings that make one CPU run another CPU's numerics really change the code that
runs, and every benchmark names the CPU its figures come from.

TensorFlow's numerics differ between CPUs in two places: the code XLA generates (its
vector width: SSE, AVX2 or AVX-512) and the kernels TensorFlow runs outside XLA (its own
Eigen ones, or oneDNN's "custom operations", which TensorFlow turns on by itself only on
CPUs with AVX-512 VNNI, BF16 or AMX). `.ci/run` runs the `numerics` tests again with
XLA and oneDNN capped at AVX2 and oneDNN's operations on, and once with them off, so
that one machine covers both paths; these tests show each setting takes effect.
"""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _machine():
    spec = importlib.util.spec_from_file_location("machine", ROOT / "benchmarks" / "machine.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _python(code, tmp_path, **settings):
    """Runs `code` in a fresh Python with `settings` added to the environment (and the
    suite's own numerics settings removed); returns stdout + stderr."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("XLA_FLAGS", "ONEDNN_MAX_CPU_ISA", "TF_ENABLE_ONEDNN_OPTS")}
    env.update(TF_CPP_MIN_LOG_LEVEL="1", **settings)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout + done.stderr


XLA_PROGRAM = """
    import tensorflow as tf

    @tf.function(jit_compile=True)
    def f(x):
        return tf.nn.relu(x * 2.0 + 1.0)

    f(tf.ones([4096]))
"""


def _xla_registers(tmp_path, name, max_isa=None):
    """The vector registers the machine code XLA generated for a small fused op names:
    {"xmm", "ymm", "zmm"} ∩ what `objdump -d` shows."""
    dump = tmp_path / name
    flags = f"--xla_dump_to={dump}" + (f" --xla_cpu_max_isa={max_isa}" if max_isa else "")
    _python(XLA_PROGRAM, tmp_path, XLA_FLAGS=flags)
    objects = sorted(dump.glob("*.o"))
    assert objects, f"XLA dumped no object file in {dump}"
    listing = subprocess.run(["objdump", "-d", *map(str, objects)], capture_output=True,
                             text=True, check=True).stdout
    return set(re.findall(r"%([xyz]mm)\d+", listing))


@pytest.mark.slow
def test_xla_max_isa_caps_the_generated_code(tmp_path):
    assert shutil.which("objdump"), "objdump (binutils) reads XLA's machine code"
    if "avx2" in _machine().cpu()["cpu_flags"]:  # the probe sees wide registers where used
        assert "ymm" in _xla_registers(tmp_path, "native")
    assert not {"ymm", "zmm"} & _xla_registers(tmp_path, "sse", max_isa="SSE4_2")
    assert "zmm" not in _xla_registers(tmp_path, "avx2", max_isa="AVX2")


ONEDNN_PROGRAM = """
    import tensorflow as tf

    x = tf.random.stateless_normal([2, 8, 8, 3], seed=[1, 2])
    k = tf.random.stateless_normal([3, 3, 3, 4], seed=[3, 4])
    tf.function(lambda x: tf.nn.relu(tf.nn.conv2d(x, k, 1, "SAME")))(x)
"""


@pytest.mark.slow
def test_onednn_settings_switch_and_cap_the_kernels(tmp_path):
    """With oneDNN's operations on, a convolution runs as a oneDNN primitive, within the
    ISA cap; with them off, TensorFlow's own kernel runs it."""
    on = _python(ONEDNN_PROGRAM, tmp_path, ONEDNN_VERBOSE="1", TF_ENABLE_ONEDNN_OPTS="1",
                 ONEDNN_MAX_CPU_ISA="AVX2")
    convolutions = [line for line in on.splitlines()
                    if line.startswith("onednn_verbose") and ",exec," in line
                    and ",convolution," in line]
    assert convolutions, on[-2000:]
    isa = [line for line in on.splitlines() if ",info,cpu,isa:" in line]
    assert isa and "512" not in isa[0] and "AMX" not in isa[0], isa
    assert not any("avx512" in line or "amx" in line for line in convolutions)
    off = _python(ONEDNN_PROGRAM, tmp_path, ONEDNN_VERBOSE="1", TF_ENABLE_ONEDNN_OPTS="0")
    assert not [line for line in off.splitlines()
                if ",exec," in line and ",convolution," in line], off[-2000:]


AVX512_CPUINFO = """\
processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma avx512f avx512bw avx512vl avx512_vnni avx512_bf16

processor\t: 1
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu sse sse2
"""


def test_the_cpu_description_names_model_and_vector_isa(tmp_path):
    machine = _machine()
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(AVX512_CPUINFO)
    assert machine.cpu(cpuinfo) == {
        "cpu_model": "AMD EPYC 9R14 96-Core Processor", "cpu_isa": "AVX-512",
        "cpu_family_model": "25/17",
        "cpu_flags": ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl",
                      "avx512_vnni", "avx512_bf16"]}
    cpuinfo.write_text(AVX512_CPUINFO.replace(" avx512f avx512bw avx512vl avx512_vnni "
                                              "avx512_bf16", ""))
    assert machine.cpu(cpuinfo)["cpu_isa"] == "AVX2"
    here = machine.cpu()
    if Path("/proc/cpuinfo").is_file():
        assert here["cpu_isa"] != "unknown" and here["cpu_model"]


def test_every_benchmark_json_names_the_cpu():
    """Each benchmark that prints a JSON result puts `machine.environment()` in it (CPU
    model, vector ISA and flags, the numerics settings in force, versions, date)."""
    printing = [path for path in sorted((ROOT / "benchmarks").glob("*.py"))
                if "json.dumps(" in path.read_text() and path.name != "gpu_check.py"]
    assert len(printing) >= 10
    missing = [path.name for path in printing if "environment()" not in path.read_text()]
    assert not missing
    # Loaded by file (as the tests load them) a script finds machine.py beside it only
    # through its own sys.path entry, made before it imports machine.
    for path in printing:
        text = path.read_text()
        entry = text.find("\nsys.path.insert(0, ")  # its own folder, at the top level
        assert 0 <= entry < text.find("from machine import"), path.name
    machine = _machine()
    env = machine.environment()
    assert {"cpu_model", "cpu_isa", "cpu_flags", "numerics_settings", "tensorflow",
            "date"} <= set(env)
    assert env["cpu_model"] in machine.describe(env) and env["cpu_isa"] in machine.describe(env)


def test_the_minimum_versions_ci_installs_are_the_declared_lower_bounds():
    """`.ci/minimum-versions.txt` pins every dependency of pyproject.toml (the `dev` extra
    included) at its declared lower bound, so the quick tests `.ci/run` runs on them test
    the range users are promised."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.version import Version

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {}
    for line in project["dependencies"] + project["optional-dependencies"]["dev"]:
        requirement = Requirement(line)
        lower = [spec.version for spec in requirement.specifier if spec.operator == ">="]
        assert len(lower) == 1, f"{line}: one lower bound (>=) expected"
        declared[requirement.name.lower().replace("_", "-")] = lower[0]
    pinned = {}
    for line in (ROOT / ".ci" / "minimum-versions.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pinned[name.strip().lower().replace("_", "-")] = version.strip()
    assert set(pinned) == set(declared)
    for name, bound in declared.items():
        assert Version(pinned[name]) == Version(bound), (name, bound, pinned[name])
