#!/usr/bin/env bash
# GPU checks: the CuPy and torch-CUDA tests and the benchmark, on a machine with an NVIDIA GPU.
#
#   make gpu-wheels      # here (with network): wheels of what a GPU box may lack -> .gpu-wheels/
#                        # for the GPU machine's Python: GPU_PYVER=312 (the default) is CPython 3.12
#   make test-gpu        # there (offline): installs them, runs the tests and the benchmark
#
# The GPU machine's Python is expected to have torch (CUDA), CuPy, JAX, pytest and hypothesis;
# array-api-compat, array-api-strict, pluggy, diffusers (and those of its dependencies it lacks) and
# ddim-core itself are installed from .gpu-wheels/ without touching the network. Results go to
# benchmarks/results/gpu/ (commit them).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
WHEELS=.gpu-wheels
OUT=benchmarks/results/gpu
[ -d "$WHEELS" ] || { echo "no $WHEELS/: run 'make gpu-wheels' on a machine with network" >&2; exit 2; }
"$PY" -c "import torch, cupy; assert torch.cuda.is_available(), 'torch sees no CUDA device'"
TARGET=$(mktemp -d)
trap 'rm -rf "$TARGET"' EXIT  # diffusers and its dependencies: over 100 MB
# The packages under test at their pins always; their dependencies only where the machine lacks
# them (a newer huggingface_hub shadowing the machine's own breaks its transformers and peft,
# which diffusers imports when they are there).
WANT=$(WHEELS="$WHEELS" "$PY" - <<'PYEOF'
import glob
import importlib.metadata as md
import os
import re
import sys

always = {"array-api-compat", "array-api-strict", "diffusers", "pluggy"}
want = {}
for line in open("requirements/gpu.txt"):
    req = line.split("#")[0].strip()
    if not req:
        continue
    name = re.split("[=<>!~ ]", req)[0].lower().replace("_", "-")
    try:
        md.version(name)
        have = True
    except md.PackageNotFoundError:
        have = False
    if name in always or not have:
        want[name] = req
# wheels of these built only for another CPython (make gpu-wheels' GPU_PYVER) would fail
# pip's offline install as "no matching distribution", which does not say why; a project with
# a wheel for this one as well (an earlier GPU_PYVER's left beside it) installs
here = f"cp{sys.version_info[0]}{sys.version_info[1]}"
fits, others = set(), {}
for path in glob.glob(os.path.join(os.environ["WHEELS"], "*.whl")):
    project, *_, python, abi, _platform = os.path.basename(path)[: -len(".whl")].split("-")
    project = re.sub(r"[-_.]+", "-", project).lower()
    tags = [t for t in python.split(".") if t.startswith("cp")]
    if project not in want:
        continue
    if not tags or abi == "abi3" or here in tags:  # abi3: any later CPython
        fits.add(project)
    else:
        others.setdefault(project, set()).update(tags)
other = set().union(*(tags for project, tags in others.items() if project not in fits))
if other:
    print(
        f"{os.environ['WHEELS']}/ holds wheels for {', '.join(sorted(other))}, not for this "
        f"Python ({here}): run 'make gpu-wheels GPU_PYVER={here[2:]}' on a machine with network",
        file=sys.stderr,
    )
    sys.exit(2)
print("\n".join(want.values()))
PYEOF
)
# shellcheck disable=SC2086  # one requirement per word
"$PY" -m pip install --quiet --no-index --no-deps --find-links "$WHEELS" --target "$TARGET" \
    $WANT "$WHEELS"/ddim_core-*.whl
echo "installed from $WHEELS:" $WANT
export PYTHONPATH="$PWD:$PWD/adapters:$TARGET${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
# the device, from nvidia-smi where there is one, else from torch (never an empty file)
if ! nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$TARGET/device.csv"
then
    "$PY" -c "import torch; print('name'); print(torch.cuda.get_device_name())" > "$TARGET/device.csv"
fi
mv "$TARGET/device.csv" "$OUT/device.csv"
"$PY" -c "import numba" 2>/dev/null \
    || echo "numba is not installed here: tests/test_pipeline_path.py skips itself" >&2
# the GPU backends of the matrix (cupy, torch:cuda) and the fused-kernel and no-sync tests
# (the benchmark runs whatever the tests say; the exit status is the tests', or the
# benchmark's where it fails)
status=0
"$PY" -m pytest -q -p no:cacheprovider -k "cupy or cuda or fused or no_sync or pipeline_path" \
    tests 2>&1 | tee "$OUT/tests.txt" || status=$?
"$PY" -m benchmarks.gpu --out "$OUT" 2>&1 | tee "$OUT/benchmark.txt"
exit "$status"
