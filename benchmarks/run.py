"""Step and loop timings of ddim-core against diffusers, in one process, interleaved.

    .venv/bin/python -m benchmarks                 # full run (a few minutes on 2 cores)
    .venv/bin/python -m benchmarks --smoke         # seconds: what CI runs so this never rots

For every shape, eta in {0, 1}, clip on/off and direction (forward, inverse), on torch and
NumPy: the median time of one step by ddim-core (allocating its outputs, and with `out=`
buffers), by the ddim_diffusers adapter and by diffusers' DDIMScheduler, taking turns within
each repeat; the memory floor of the same step (a pass reading its inputs and writing its two
outputs into existing buffers: `copy_`/`copyto`) measured in the same run; every time's ratio
to diffusers and to the floor; the peak extra memory of one step; a 50-step loop with a
trivial model. Writes results.md and results.json into --out (default benchmarks/results).
Needs torch, diffusers and numba (pip install 'ddim-core[diffusers,numba]').
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import ddim_core as dc
from ddim_core import builtins, coefficients, plugins

from . import out_dir, pipeline, positive_int, require, tables

SHAPES = [(1, 4, 8, 8), (1, 4, 64, 64), (1, 4, 128, 128), (8, 4, 128, 128), (16, 4, 128, 128)]
SMOKE_SHAPES = [(1, 4, 8, 8), (1, 4, 64, 64)]
T = 500  # a mid-plan timestep


@dataclasses.dataclass
class Row:
    library: str
    shape: tuple[int, ...]
    direction: str
    eta: float
    clip: bool
    times_us: dict[str, float]  # median per step, by implementation
    peak_extra_bytes: dict[str, int]

    def ratios(self) -> dict[str, float]:
        floor = self.times_us["floor"]
        theirs = self.times_us.get("diffusers")
        out = {f"{k}/floor": v / floor for k, v in self.times_us.items() if k != "floor"}
        if theirs:
            out |= {
                f"{k}/diffusers": v / theirs
                for k, v in self.times_us.items()
                if k not in ("floor", "diffusers")
            }
        return out


def _timer(fns: dict[str, Callable[[], Any]], repeats: int, budget_s: float) -> dict[str, float]:
    """Median microseconds per call of each function, calling them in turn within each repeat
    (interleaved, so that machine noise hits all of them alike)."""
    for fn in fns.values():  # warm up: caches, numba compilation, allocator
        fn()
        fn()
    start = time.perf_counter()
    fns_list = list(fns.values())
    fns_list[0]()
    per_call = max(time.perf_counter() - start, 1e-7)
    inner = max(1, min(1000, int(budget_s / repeats / len(fns) / per_call)))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter_ns()
            for _ in range(inner):
                fn()
            samples[name].append((time.perf_counter_ns() - t0) / inner / 1e3)
    return {name: statistics.median(v) for name, v in samples.items()}


def _peak_numpy(fn: Callable[[], Any]) -> int:
    fn()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        result = fn()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    del result
    return int(peak)


def _peak_torch(fn: Callable[[], Any]) -> int:
    import torch

    fn()
    with torch.profiler.profile(profile_memory=True) as prof:
        fn()
    events = sorted(
        (e for e in prof.events() if e.cpu_memory_usage), key=lambda e: e.time_range.start
    )
    live = peak = 0
    for e in events:
        live += e.cpu_memory_usage
        peak = max(peak, live)
    return int(peak)


def bench_step(
    library: str,
    shape: tuple[int, ...],
    direction: str,
    eta: float,
    clip: bool,
    repeats: int,
    budget_s: float,
) -> Row:
    import torch

    config = dc.DDIMConfig(clip_sample=clip)
    plan = dc.make_plan(config, 50)
    rng = np.random.default_rng(0)
    host = [rng.standard_normal(shape).astype(np.float32) for _ in range(5)]
    gen = torch.Generator().manual_seed(0)
    theirs_cls = "DDIMScheduler" if direction == "forward" else "DDIMInverseScheduler"
    import ddim_diffusers
    import diffusers

    kwargs = {"clip_sample": clip}
    theirs = getattr(diffusers, theirs_cls)(**kwargs)
    adapter = getattr(ddim_diffusers, theirs_cls)(**kwargs)
    for s in (theirs, adapter):
        s.set_timesteps(50)
    t_x, t_m, t_z, t_o1, t_o2 = (torch.from_numpy(a) for a in host)
    if library == "torch":
        x, m, z, o1, o2 = t_x, t_m, t_z, t_o1, t_o2
        draw = lambda: torch.randn(shape, generator=gen)  # noqa: E731
        peak = _peak_torch
    else:
        x, m, z, o1, o2 = host
        np_gen = np.random.default_rng(1)
        draw = lambda: np_gen.standard_normal(shape, dtype=np.float32)  # noqa: E731
        peak = _peak_numpy
    fns: dict[str, Callable[[], Any]] = {}
    if direction == "forward":

        def ours():
            return dc.step(plan, m, T, x, eta=eta, noise=draw() if eta else None)

        def ours_out():
            return dc.step(plan, m, T, x, eta=eta, noise=draw() if eta else None, out=(o1, o2))

        fns["ddim-core"], fns["ddim-core out="] = ours, ours_out
        fns["diffusers"] = lambda: theirs.step(t_m, T, t_x, eta=eta, generator=gen)
        fns["adapter"] = lambda: adapter.step(t_m, T, t_x, eta=eta, generator=gen)
    else:
        fns["ddim-core"] = lambda: dc.inverse_step(plan, m, T, x)
        fns["ddim-core out="] = lambda: dc.inverse_step(plan, m, T, x, out=(o1, o2))
        fns["diffusers"] = lambda: theirs.step(t_m, T, t_x)
        fns["adapter"] = lambda: adapter.step(t_m, T, t_x)
    noisy = bool(eta) and direction == "forward"
    kernel = plugins.step_kernel(x)
    key = coefficients.StepKey(plan, eta if noisy else 0.0, direction != "forward")
    row = coefficients.fused_row(key, T, False)

    def kernel_step() -> Any:
        return kernel(x, m, z if noisy else None, row, 1.0 if clip else None, None)

    # only a kernel that takes the step: numba's leaves NumPy steps under NUMBA_MIN_ELEMENTS
    # without out= to the reference path (None at once, which is no kernel time)
    if kernel is not None and kernel_step() is not None:
        fns["kernel"] = kernel_step
    fns["floor"] = _floor(t_x, t_m, t_z if noisy else None, t_o1, t_o2)
    if eta and direction == "forward":
        fns["normal draw"] = draw
    times = _timer(fns, repeats, budget_s)
    peaks = {"ddim-core": peak(fns["ddim-core"])}
    if library == "torch":
        peaks["diffusers"] = _peak_torch(fns["diffusers"])
    return Row(library, shape, direction, eta, clip, times, peaks)


def _floor(x: Any, m: Any, z: Any, o1: Any, o2: Any) -> Callable[[], Any]:
    """Read the step's inputs once and write its two outputs once, into existing buffers:
    torch's copy_ / add (2 threads) on the benchmark's memory (NumPy rows share it), the
    fastest such pass in this process (np.copyto is single-threaded)."""
    import torch

    if z is None:
        return lambda: (o1.copy_(x), o2.copy_(m))
    return lambda: (torch.add(x, z, out=o1), o2.copy_(m))


def bench_loop(library: str, shape: tuple[int, ...], repeats: int) -> dict[str, float]:
    """50 steps with a trivial model (x * 0.1): whole-loop milliseconds."""
    import diffusers
    import torch

    config = dc.DDIMConfig()
    x_host = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    x = torch.from_numpy(x_host) if library == "torch" else x_host

    def model(x, t):  # type: ignore[no-untyped-def]
        return x * 0.1

    theirs = diffusers.DDIMScheduler()

    def diffusers_loop() -> Any:
        theirs.set_timesteps(50)
        y = torch.from_numpy(x_host)
        for t in theirs.timesteps:
            y = theirs.step(model(y, t), t, y).prev_sample
        return y

    fns = {"ddim-core": lambda: dc.sample(model, x, config, 50), "diffusers": diffusers_loop}
    return {k: v / 1e3 for k, v in _timer(fns, repeats, 0.5).items()}


PIPELINE_HEADER = (
    "The pipeline call pattern (`for t in scheduler.timesteps: scheduler.step(out, t, x)`, t a "
    "0-d int64 tensor, diffusers' default config: clip_sample on), torch CPU float32, "
    f"{pipeline.STEPS} steps, microseconds per step; eta 1 draws from a torch.Generator:\n\n"
)


MODEL_HEADER = (
    "The same loop with a model call before each step (a 3x3 convolution standing in for the "
    "UNet, untimed; its output a fresh tensor each step), eta 0: microseconds of the step alone, "
    "its caches holding the model's work as in a pipeline:\n\n"
)


CALL_HEADER = (
    "The Python around the pass inside a loop: the same step with numba's pass skipped, eta 0, "
    "timed per step alone and right after a single-threaded NumPy copy of the step's bytes, "
    "torch's parallel copy_ of them, and our step with its pass: microseconds per step:\n\n"
)


HALF_HEADER = (
    "The same call pattern in half precision (latents, model output and eta 1 noise in float16 "
    "or bfloat16, as a pipeline run in that dtype gives them), torch CPU, eta 0 and 1: "
    "microseconds per step:\n\n"
)


def markdown(rows: list[Row], loops: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"ddim-core benchmark: {meta['machine']}; torch {meta['torch']}, numpy {meta['numpy']}, "
        f"diffusers {meta['diffusers']}; float32, median of {meta['repeats']} interleaved "
        "repeats; times in microseconds per step.",
        "",
        "| library | shape | dir | eta | clip | ddim-core | out= | kernel | adapter | diffusers "
        "| floor | core/diffusers | core/floor | out=/floor | extra MiB core / diffusers |",
        "| --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: |",
    ]
    for r in rows:
        t, q = r.times_us, r.ratios()
        mib = {k: v / 2**20 for k, v in r.peak_extra_bytes.items()}
        lines.append(
            f"| {r.library} | {'x'.join(map(str, r.shape))} | {r.direction[:3]} | {r.eta:g} | "
            f"{'on' if r.clip else 'off'} | {t['ddim-core']:.1f} | {t['ddim-core out=']:.1f} | "
            f"{tables._us(t.get('kernel'), 1)} | {t['adapter']:.1f} | {t['diffusers']:.1f} | "
            f"{t['floor']:.1f} | {q['ddim-core/diffusers']:.2f} | {q['ddim-core/floor']:.2f} | "
            f"{q['ddim-core out=/floor']:.2f} | {mib['ddim-core']:.2f} / "
            f"{mib.get('diffusers', float('nan')):.2f} |"
        )
    lines += [
        "",
        "50-step loop, trivial model (ms per loop):",
        "",
        "| library | shape | ddim-core | diffusers | ratio |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for lp in loops:
        lines.append(
            f"| {lp['library']} | {'x'.join(map(str, lp['shape']))} | {lp['ddim-core']:.2f} | "
            f"{lp['diffusers']:.2f} | {lp['ddim-core'] / lp['diffusers']:.2f} |"
        )
    lines += [
        "",
        "kernel: the fused kernel alone on precomputed coefficients; ddim-core minus "
        "kernel is the fixed per-step cost of the public step (validation, coefficient "
        "lookup, dispatch); - where the step takes no kernel (numba leaves NumPy steps under "
        f"{builtins.NUMBA_MIN_ELEMENTS} elements to the reference path). out=: the step "
        "writing into given buffers. floor: one pass reading the inputs and writing two "
        "outputs into existing buffers (torch copy_, 2 threads, on the same memory). "
        "diffusers works on torch only: its column in NumPy rows is its torch time for the "
        "same shape. Normal draws (eta = 1): "
        + ", ".join(
            f"{'x'.join(map(str, r.shape))} {r.library} {r.times_us['normal draw']:.1f}"
            for r in rows
            if "normal draw" in r.times_us
        ),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, few repeats (CI)")
    parser.add_argument(
        "--out",
        default=None,
        help="directory for results.md / results.json (default: benchmarks/results, or a "
        "temporary directory with --smoke, so a smoke run never overwrites the committed results)",
    )
    parser.add_argument("--repeats", type=positive_int, default=None)
    args = parser.parse_args(argv)
    # the NumPy rows time out= and the fused kernel: numba's (without it the run failed there,
    # after every torch row)
    require(parser, ("torch", "diffusers", "numba"), "diffusers,numba")
    if args.out is None:
        default = Path(__file__).parent / "results"
        out = Path(tempfile.mkdtemp(prefix="ddim-bench-")) if args.smoke else default
    else:
        out = Path(args.out)
    out = out_dir(parser, out)
    import diffusers
    import torch

    torch.set_grad_enabled(False)
    repeats = args.repeats or (3 if args.smoke else 15)
    budget = 0.05 if args.smoke else 1.0
    shapes = SMOKE_SHAPES if args.smoke else SHAPES
    rows: list[Row] = []
    for library in ("torch", "numpy"):
        for shape in shapes:
            for direction in ("forward", "inverse"):
                for eta in (0.0, 1.0) if direction == "forward" else (0.0,):
                    for clip in (False, True):
                        rows.append(
                            bench_step(library, shape, direction, eta, clip, repeats, budget)
                        )
                        print(
                            f"{library} {shape} {direction} eta={eta} clip={clip}: "
                            f"{rows[-1].times_us['ddim-core']:.1f} us",
                            flush=True,
                        )
    pipeline_rows = pipeline.run(args.smoke, repeats)
    model_rows = pipeline.run_model(args.smoke, repeats)
    call_rows = pipeline.run_call(args.smoke, repeats)
    half_rows = pipeline.run_half(args.smoke, repeats)
    loop_shape = (1, 4, 8, 8) if args.smoke else (1, 4, 64, 64)
    loops = [
        {"library": lib, "shape": loop_shape, **bench_loop(lib, loop_shape, repeats)}
        for lib in ("torch", "numpy")
    ]
    meta = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "numpy": np.__version__,
        "diffusers": diffusers.__version__,
        "repeats": repeats,
        "smoke": args.smoke,
    }
    text = (
        PIPELINE_HEADER
        + pipeline.markdown(pipeline_rows)
        + "\n"
        + MODEL_HEADER
        + pipeline.markdown_model(model_rows)
        + "\n"
        + CALL_HEADER
        + pipeline.markdown_call(call_rows)
        + "\n"
        + HALF_HEADER
        + pipeline.markdown_half(half_rows)
        + "\n"
        + markdown(rows, loops, meta)
    )
    (out / "results.md").write_text(text)
    data = {
        "meta": meta,
        "pipeline": pipeline_rows,
        "pipeline_model": model_rows,
        "pipeline_call": call_rows,
        "pipeline_half": half_rows,
        "steps": [dataclasses.asdict(r) | {"ratios": r.ratios()} for r in rows],
        "loops": loops,
    }
    (out / "results.json").write_text(json.dumps(data, indent=1))
    print(text)
    print(f"wrote {out / 'results.md'} and {out / 'results.json'}")
    return 0
