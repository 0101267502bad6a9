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
