"""`python -m benchmarks.gpu --out DIR`: what benchmarks/gpu/run.sh runs on a GPU machine."""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import ddim_core as dc
from benchmarks import out_dir, pipeline, positive_int, require

SHAPES = [(1, 4, 64, 64), (1, 4, 128, 128), (16, 4, 128, 128)]
CALLS = 100  # dc.step calls timed between two synchronisations (the pipeline: its loop)
REPEATS = 9  # run.sh's: the median of that many


def fused_step(library: str, shape: tuple[int, ...], repeats: int) -> dict[str, Any]:
    """One step (clip on, eta 0) by ddim-core with an int and with a device timestep, and the
    floor (read two arrays, write two) on the same device."""
    plan = dc.make_plan(dc.DDIMConfig(), 50)
    if library == "cupy":
        import cupy as lib

        x, m = (lib.random.standard_normal(shape, dtype=lib.float32) for _ in range(2))
        t_dev = lib.asarray(plan.timesteps[10])
        sync = lib.cuda.Device().synchronize
    else:
        import torch as lib

        x, m = (lib.randn(shape, device="cuda") for _ in range(2))
        t_dev = lib.tensor(plan.timesteps[10], device="cuda")
        sync = lib.cuda.synchronize
    o1, o2 = lib.empty_like(x), lib.empty_like(x)
    t = plan.timesteps[10]
    fns = {
        "int t": lambda: dc.step(plan, m, t, x),
        "device t": lambda: dc.step(plan, m, t_dev, x),
        "floor": lambda: (o1.__setitem__(..., x), o2.__setitem__(..., m)),
    }
    us: dict[str, float] = {}
    for name, fn in fns.items():
        fn()
        times = []
        for _ in range(repeats):
            sync()
            t0 = time.perf_counter_ns()
            for _ in range(CALLS):
                fn()
            sync()
            times.append((time.perf_counter_ns() - t0) / CALLS / 1e3)
        us[name] = statistics.median(times)
    return {"library": library, "shape": shape, "us": us}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu")
    parser.add_argument("--out", required=True)
    parser.add_argument("--repeats", type=positive_int, default=REPEATS)
    args = parser.parse_args()
    out = out_dir(parser, Path(args.out))
    require(parser, ("torch", "cupy", "diffusers"), "diffusers,cupy")  # before minutes of timings
    rows = pipeline.run(False, args.repeats, device="cuda")
    steps = [fused_step(lib, s, args.repeats) for lib in ("torch", "cupy") for s in SHAPES]
    lines = ["Pipeline call pattern on CUDA tensors:", "", pipeline.markdown(rows), ""]
    lines += [
        "| library | shape | int t | device t | floor |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for r in steps:
        us = r["us"]
        lines.append(
            f"| {r['library']} | {'x'.join(map(str, r['shape']))} | {us['int t']:.1f} | "
            f"{us['device t']:.1f} | {us['floor']:.1f} |"
        )
    (out / "gpu.md").write_text("\n".join(lines) + "\n")
    (out / "gpu.json").write_text(json.dumps({"pipeline": rows, "steps": steps}, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
