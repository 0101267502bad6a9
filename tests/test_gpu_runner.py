"""benchmarks/gpu/run.sh (`make test-gpu`), run on the CPU with a stand-in for the GPU
machine's Python: what it installs, where, and what it leaves behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="run.sh is a bash script")

# The GPU machine's Python, as run.sh calls it: the CUDA check passes, the requirement
# selection runs for real, pip records what it installs into --target, pytest exits with
# $FAKE_PYTEST_STATUS, the benchmark does nothing.
FAKE_PYTHON = f"""#!{sys.executable}
import os, sys
args = sys.argv[1:]
if args[:1] == ["-"]:
    os.execv(sys.executable, [sys.executable, "-"])
if args[:2] == ["-m", "pip"]:
    target = args[args.index("--target") + 1]
    with open(os.path.join(target, "installed.txt"), "w") as f:
        f.write(" ".join(args))
if args[:2] == ["-m", "pytest"]:
    sys.exit(int(os.environ["FAKE_PYTEST_STATUS"]))
if args[:1] == ["-c"] and "get_device_name" in args[1]:
    print("name")
    print("Fake GPU")
"""


def _checkout(tmp_path: Path) -> Path:
    """The files run.sh reads, in a throwaway tree (it writes .gpu-wheels/ and results/ there)."""
    repo = tmp_path / "repo"
    (repo / "benchmarks" / "gpu").mkdir(parents=True)
    (repo / "requirements").mkdir()
    shutil.copy(ROOT / "benchmarks" / "gpu" / "run.sh", repo / "benchmarks" / "gpu")
    shutil.copy(ROOT / "requirements" / "gpu.txt", repo / "requirements")
    (repo / ".gpu-wheels").mkdir()
    (repo / ".gpu-wheels" / "ddim_core-0.1.0-py3-none-any.whl").touch()
    python = tmp_path / "python"
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    return repo


@pytest.mark.parametrize("tests_status", [0, 1])
def test_run_sh_removes_its_install_directory(tmp_path: Path, tests_status: int) -> None:
    """The packages run.sh installs (diffusers and its dependencies: over 100 MB) go to a
    temporary directory, which was left in $TMPDIR after every run."""
    repo = _checkout(tmp_path)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = os.environ | {
        "PYTHON": str(tmp_path / "python"),
        "TMPDIR": str(tmp),
        "FAKE_PYTEST_STATUS": str(tests_status),
    }
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        ["bash", "benchmarks/gpu/run.sh"], cwd=repo, env=env, capture_output=True, text=True
    )
    assert done.returncode == tests_status, done.stderr
    assert "installed from .gpu-wheels: array-api-compat==" in done.stdout
    assert list(tmp.iterdir()) == []


def test_run_sh_names_the_device_without_nvidia_smi(tmp_path: Path) -> None:
    """Where nvidia-smi fails (or is missing), the committed device.csv was emptied (the
    redirect truncates it before `|| true`); torch names the device instead."""
    repo = _checkout(tmp_path)
    out = repo / "benchmarks" / "results" / "gpu"
    out.mkdir(parents=True)
    (out / "device.csv").write_text("name\nNVIDIA H100\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\nexit 9\n")
    smi.chmod(0o755)
    env = os.environ | {
        "PYTHON": str(tmp_path / "python"),
        "FAKE_PYTEST_STATUS": "0",
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    }
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        ["bash", "benchmarks/gpu/run.sh"], cwd=repo, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert (out / "device.csv").read_text() == "name\nFake GPU\n"


def test_run_sh_names_wheels_built_for_another_python(tmp_path: Path) -> None:
    """Wheels from `make gpu-wheels` for another CPython than the GPU machine's (GPU_PYVER,
    3.12 by default) failed pip's offline install as 'Could not find a version that
    satisfies the requirement PyYAML==6.0.3 (from versions: none)', which does not say why;
    and docs/performance.md ran `make gpu-wheels && make test-gpu` both on the offline GPU
    machine, where the download cannot run. run.sh names the wheels' Python and the make
    command before installing anything; abi3 wheels (any later CPython) are no mismatch, nor
    are wheels of what the machine has and run.sh leaves out."""
    import importlib.metadata as md

    repo = _checkout(tmp_path)
    wheels = repo / ".gpu-wheels"
    here = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    (wheels / "array_api_strict-2.6.1-cp38-abi3-manylinux_2_17_x86_64.whl").touch()
    (wheels / f"array_api_compat-1.16.0-{here}-{here}-manylinux_2_17_x86_64.whl").touch()
    md.version("packaging")  # the machine has it: run.sh installs no wheel of it
    (wheels / "packaging-26.3-cp39-cp39-manylinux_2_17_x86_64.whl").touch()
    env = os.environ | {"PYTHON": str(tmp_path / "python"), "FAKE_PYTEST_STATUS": "0"}
    env.pop("PYTHONPATH", None)
    run = ["bash", "benchmarks/gpu/run.sh"]
    done = subprocess.run(run, cwd=repo, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr  # this Python's and abi3 wheels: installed
    (wheels / "pluggy-1.7.0-cp39-cp39-manylinux_2_17_x86_64.whl").touch()  # always installed
    done = subprocess.run(run, cwd=repo, env=env, capture_output=True, text=True)
    assert done.returncode == 2
    assert f".gpu-wheels/ holds wheels for cp39, not for this Python ({here})" in done.stderr
    assert f"make gpu-wheels GPU_PYVER={here[2:]}" in done.stderr
    assert "installed from" not in done.stdout
    page = (ROOT / "docs" / "performance.md").read_text(encoding="utf-8")
    assert "make gpu-wheels && make test-gpu" not in page


def test_run_sh_takes_wheels_for_this_python_beside_another_pythons(tmp_path: Path) -> None:
    """run.sh's remedy for wheels of another CPython is `make gpu-wheels GPU_PYVER=...`,
    which downloads into .gpu-wheels/ beside the wheels already there: run.sh then still
    stopped, naming the old wheels and the command just run, where pip's offline install
    picks this Python's wheel of each project."""
    repo = _checkout(tmp_path)
    wheels = repo / ".gpu-wheels"
    here = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    (wheels / "pluggy-1.7.0-cp39-cp39-manylinux_2_17_x86_64.whl").touch()  # the first try
    (wheels / f"pluggy-1.7.0-{here}-{here}-manylinux_2_17_x86_64.whl").touch()  # the remedy
    env = os.environ | {"PYTHON": str(tmp_path / "python"), "FAKE_PYTEST_STATUS": "0"}
    env.pop("PYTHONPATH", None)
    run = ["bash", "benchmarks/gpu/run.sh"]
    done = subprocess.run(run, cwd=repo, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "pluggy==1.7.0" in done.stdout.split("installed from .gpu-wheels:")[1]


def test_the_gpu_page_says_how_the_run_times_a_step() -> None:
    """docs/performance.md said every GPU time is wall clock over 100 steps between
    synchronisations; the pipeline table's are over its 50-step loop
    (`benchmarks.pipeline.STEPS`), the dc.step table's over 100 calls."""
    sys.path.insert(0, str(ROOT))
    from benchmarks import pipeline
    from benchmarks.gpu import __main__ as gpu

    page = " ".join((ROOT / "docs" / "performance.md").read_text(encoding="utf-8").split())
    assert f"over a {pipeline.STEPS}-step loop (the pipeline call pattern)" in page
    assert f"or {gpu.CALLS} `dc.step` calls (one step), median of {gpu.REPEATS} repeats" in page
