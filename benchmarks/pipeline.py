"""The call pattern of a diffusers pipeline, timed: what users get.

A pipeline calls `scheduler.step(noise_pred, t, latents)` for `t in scheduler.timesteps` (0-d
int64 tensors) with diffusers' default config (clip_sample on). One loop of 50 steps with a
fixed model output, per-step microseconds (median over repeats): `ddim_diffusers`'s
DDIMScheduler against diffusers' own, eager and with its `step` under torch.compile (compile
time reported apart), at eta 0 and at eta 1 with a torch.Generator; the memory floor of one
step (read x_t and the model output, write two outputs) and one normal draw, in the same run.
At eta 1 the same repeats also time our eta 0 loop: "noise cost / draw" is (eta 1 step - eta 0
step) / one normal draw, the noise's whole cost in draws (1.00: the draw and nothing else), and
our eta 0 loop with a draw of the latent's size before each step: "after a draw" is the same
ratio against that eta 0 step (its loop less one draw), which starts with its caches as an
eta 1 step's pass finds them, the draw's milliseconds after the last step. At eta 0 (CPU) they
also time our loop with numba's pass skipped: "call" is what a step costs around the pass.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from typing import Any

from . import tables

SHAPES = [(1, 4, 64, 64), (8, 4, 128, 128), (16, 4, 128, 128)]
SMOKE_SHAPES = [(1, 4, 8, 8)]
STEPS = 50


def _loop(
    scheduler: Any,
    step: Callable[..., Any],
    out: Any,
    x: Any,
    eta: float,
    gen: Any,
    before: Callable[[], Any] = lambda: None,
) -> Any:
    kwargs = {"eta": eta, "generator": gen} if eta else {}
    for t in scheduler.timesteps:
        before()
        x = step(out, t, x, **kwargs).prev_sample
    return x


def _without_pass(fn: Callable[[], Any]) -> Any:
    """fn() with numba's pass skipped (its outputs left as they were): the per-step cost of
    the call around the pass (checks, timestep, buffers, dispatch, the output object)."""
    try:
        from ddim_core import _numba
    except ImportError:  # no numba: no pass to skip
        return fn()
    saved, guard = _numba._pass, _numba._guard
    _numba._pass = lambda *args: None
    # The stall guard decides these steps as the shipped one but records them in a copy: a
    # skipped pass taken for a serial step (during a back-off) set a serial best 100x too
    # fast, and every later parallel step at its size stalled against it.
    _numba._guard = copy.copy(guard)
    _numba._guard.serial_ns, _numba._guard.loaded = dict(guard.serial_ns), set(guard.loaded)
    try:
        return fn()
    finally:
        _numba._pass, _numba._guard = saved, guard


def _median_us_per_step(fn: Callable[[], Any], repeats: int, sync: Callable[[], Any]) -> float:
    fn()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter_ns()
        fn()
        sync()
        times.append((time.perf_counter_ns() - t0) / STEPS / 1e3)
    return statistics.median(times)


def bench(
    shape: tuple[int, ...], eta: float, repeats: int, compiled: bool, device: str = "cpu"
) -> dict[str, Any]:
    import ddim_diffusers
    import diffusers
    import torch

    ours, theirs = ddim_diffusers.DDIMScheduler(), diffusers.DDIMScheduler()
    for s in (ours, theirs):
        s.set_timesteps(STEPS, device=device)
    g = torch.Generator().manual_seed(0)
    x, out = (torch.randn(shape, generator=g).to(device) for _ in range(2))
    gen = torch.Generator(device).manual_seed(1)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    fns: dict[str, Callable[[], Any]] = {
        "ddim_diffusers": lambda: _loop(ours, ours.step, out, x, eta, gen),
        "diffusers": lambda: _loop(theirs, theirs.step, out, x, eta, gen),
    }
    if eta:  # what the noise adds, against eta 0 in the same repeats (machine noise alike)
        fns["ddim_diffusers eta 0"] = lambda: _loop(ours, ours.step, out, x, 0.0, gen)

        def draw() -> Any:
            return torch.randn(shape, generator=gen, device=device)

        fns["ddim_diffusers eta 0 after a draw"] = lambda: _loop(
            ours, ours.step, out, x, 0.0, gen, before=draw
        )
    elif device == "cpu":  # everything but numba's pass: what the call costs around it
        fns["ddim_diffusers call"] = lambda: _without_pass(
            lambda: _loop(ours, ours.step, out, x, eta, gen)
        )
    result: dict[str, Any] = {"shape": shape, "eta": eta}
    if compiled:
        step = torch.compile(theirs.step)
        t0 = time.perf_counter()
        _loop(theirs, step, out, x, eta, gen)
        result["compile_s"] = time.perf_counter() - t0
        fns["diffusers compiled"] = lambda: _loop(theirs, step, out, x, eta, gen)
    o1, o2 = torch.empty_like(x), torch.empty_like(x)
    fns["floor"] = lambda: [(o1.copy_(x), o2.copy_(out)) for _ in range(STEPS)]
    fns["normal draw"] = lambda: [
        torch.randn(shape, generator=gen, device=device) for _ in range(STEPS)
    ]
    names = list(fns)
    samples: dict[str, list[float]] = {n: [] for n in names}
    for fn in fns.values():
        fn()
    for _ in range(repeats):  # interleaved: machine noise hits all alike
        for n in names:
            samples[n].append(_median_us_per_step(fns[n], 1, sync))
    result["us"] = {n: statistics.median(v) for n, v in samples.items()}
    result["device"] = device
    return result


def run(
    smoke: bool, repeats: int, compiled: bool = True, device: str = "cpu"
) -> list[dict[str, Any]]:
    import torch

    torch.set_grad_enabled(False)
    rows = []
    for shape in SMOKE_SHAPES if smoke else SHAPES:
        for eta in (0.0, 1.0):
            rows.append(bench(shape, eta, repeats, compiled and not smoke, device))
            us = rows[-1]["us"]
            print(
                f"pipeline {shape} eta={eta}: {us['ddim_diffusers']:.1f} us/step "
                f"(diffusers {us['diffusers']:.1f})",
                flush=True,
            )
    return rows


def _call_after(scheduler: Any, out: Any, x: Any, before: Callable[[], Any]) -> float:
    """Median microseconds of the pipeline step with numba's pass skipped, timed per step right
    after an untimed `before()` (which may take a step with its pass)."""

    def timed(t: Any) -> float:
        t0 = time.perf_counter_ns()
        scheduler.step(out, t, x)
        return (time.perf_counter_ns() - t0) / 1e3

    times = []
    for t in scheduler.timesteps:
        before()
        times.append(_without_pass(lambda t=t: timed(t)))
    return float(statistics.median(times))


def bench_call(shape: tuple[int, ...], repeats: int) -> dict[str, Any] | None:
    """What the Python around the pass costs inside a loop, and why: the pipeline step with
    numba's pass skipped ("call", eta 0, torch CPU), timed per step alone and right after each
    of: a single-threaded NumPy copy of the step's bytes (x_t and the model output into two
    buffers: the caches as a pass leaves them, no threads), torch's own parallel `copy_` of
    the same bytes, and our step with its pass (numba's parallel loop), no model call.
    Microseconds: the median over repeats of each repeat's median step; None without numba."""
    try:
        from ddim_core import _numba  # noqa: F401 (the pass to skip)
    except ImportError:
        return None
    import ddim_diffusers
    import numpy as np
    import torch

    ours = ddim_diffusers.DDIMScheduler()
    ours.set_timesteps(STEPS)
    g = torch.Generator().manual_seed(0)
    x, out = (torch.randn(shape, generator=g) for _ in range(2))
    o1, o2 = torch.empty_like(x), torch.empty_like(x)
    views = [a.numpy() for a in (x, out, o1, o2)]

    def serial_copy() -> None:
        np.copyto(views[2], views[0])
        np.copyto(views[3], views[1])

    before: dict[str, Callable[[], Any]] = {
        "alone": lambda: None,
        "after a serial copy": serial_copy,
        "after a parallel copy": lambda: (o1.copy_(x), o2.copy_(out)),
        "after a pass": lambda: ours.step(out, ours.timesteps[0], x),
    }
    samples: dict[str, list[float]] = {n: [] for n in before}
    for fn in before.values():
        _call_after(ours, out, x, fn)
    for _ in range(repeats):  # interleaved, as in `bench`
        for n, fn in before.items():
            samples[n].append(_call_after(ours, out, x, fn))
    return {"shape": shape, "us": {n: statistics.median(v) for n, v in samples.items()}}


def run_call(smoke: bool, repeats: int) -> list[dict[str, Any]]:
    """`bench_call` over the shapes (torch CPU, eta 0); no rows without numba."""
    import torch

    torch.set_grad_enabled(False)
    rows = [bench_call(shape, repeats) for shape in (SMOKE_SHAPES if smoke else SHAPES)]
    return [r for r in rows if r is not None]


def markdown_call(rows: list[dict[str, Any]]) -> str:
    """The `bench_call` rows as a markdown table (`tables.pipeline_call_table`, one decimal)."""
    return tables.pipeline_call_table({"pipeline_call": rows}, digits=1) + "\n"


HALF_SHAPES = [(1, 4, 64, 64), (1, 4, 128, 128)]  # SD 1.x and SDXL latents
HALF_DTYPES = ["float16", "bfloat16"]


def bench_half(shape: tuple[int, ...], dtype: str, eta: float, repeats: int) -> dict[str, Any]:
    """The call pattern of `bench` in half precision (latents and model output in `dtype`, as
    a pipeline run in float16 / bfloat16 gives them; eta 1: a torch.Generator's noise in that
    dtype on both sides): ddim_diffusers against diffusers eager, per step, interleaved."""
    import ddim_diffusers
    import diffusers
    import torch

    ours, theirs = ddim_diffusers.DDIMScheduler(), diffusers.DDIMScheduler()
    for s in (ours, theirs):
        s.set_timesteps(STEPS)
    g = torch.Generator().manual_seed(0)
    x, out = (torch.randn(shape, generator=g).to(getattr(torch, dtype)) for _ in range(2))
    gen = torch.Generator().manual_seed(1)
    fns = {
        "ddim_diffusers": lambda: _loop(ours, ours.step, out, x, eta, gen),
        "diffusers": lambda: _loop(theirs, theirs.step, out, x, eta, gen),
    }
    samples: dict[str, list[float]] = {n: [] for n in fns}
    for fn in fns.values():
        fn()
    for _ in range(repeats):
        for n, fn in fns.items():
            samples[n].append(_median_us_per_step(fn, 1, lambda: None))
    us = {n: statistics.median(v) for n, v in samples.items()}
    return {"shape": shape, "dtype": dtype, "eta": eta, "us": us}


def run_half(smoke: bool, repeats: int) -> list[dict[str, Any]]:
    """`bench_half` over the half-precision shapes and dtypes, eta 0 and 1 (torch CPU)."""
    import torch

    torch.set_grad_enabled(False)
    rows = []
    for shape in SMOKE_SHAPES if smoke else HALF_SHAPES:
        for dtype in HALF_DTYPES:
            for eta in (0.0, 1.0):
                rows.append(bench_half(shape, dtype, eta, repeats))
                us = rows[-1]["us"]
                print(
                    f"pipeline {shape} {dtype} eta={eta}: {us['ddim_diffusers']:.1f} us/step "
                    f"(diffusers {us['diffusers']:.1f})",
                    flush=True,
                )
    return rows


def markdown_half(rows: list[dict[str, Any]]) -> str:
    """The `bench_half` rows as a markdown table (the README's, `tables.pipeline_half_table`)."""
    return tables.pipeline_half_table({"pipeline_half": rows}) + "\n"


def bench_model(shape: tuple[int, ...], repeats: int) -> dict[str, Any]:
    """The loop with a model call before each step, as in a pipeline: a 3x3 convolution stands
    in for the UNet (its output a fresh tensor each step, the caches holding the model's work,
    not the last step's). Per-step microseconds of the step alone (the model untimed), the median
    over repeats of each repeat's median step: ddim_diffusers, diffusers eager and the floor (the
    step's memory: copies of the latent and the model output after the same call), eta 0."""
    import ddim_diffusers
    import diffusers
    import torch

    ours, theirs = ddim_diffusers.DDIMScheduler(), diffusers.DDIMScheduler()
    for s in (ours, theirs):
        s.set_timesteps(STEPS)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g)
    weight = 0.1 * torch.randn(shape[1], shape[1], 3, 3, generator=g)
    o1, o2 = torch.empty_like(x), torch.empty_like(x)

    def floor(eps: Any, t: Any, lat: Any) -> Any:
        o1.copy_(lat)
        o2.copy_(eps)
        return lat

    steps: dict[str, Callable[[Any, Any, Any], Any]] = {
        "ddim_diffusers": lambda eps, t, lat: ours.step(eps, t, lat).prev_sample,
        "diffusers": lambda eps, t, lat: theirs.step(eps, t, lat).prev_sample,
        "floor": floor,
    }

    def loop(step: Callable[[Any, Any, Any], Any]) -> float:
        lat, times = x, []
        for t in ours.timesteps:
            eps = torch.nn.functional.conv2d(lat, weight, padding=1)
            t0 = time.perf_counter_ns()
            lat = step(eps, t, lat)
            times.append((time.perf_counter_ns() - t0) / 1e3)
        return statistics.median(times)

    samples: dict[str, list[float]] = {n: [] for n in steps}
    for step in steps.values():
        loop(step)
    for _ in range(repeats):  # interleaved, as in `bench`
        for n, step in steps.items():
            samples[n].append(loop(step))
    return {"shape": shape, "us": {n: statistics.median(v) for n, v in samples.items()}}


def run_model(smoke: bool, repeats: int) -> list[dict[str, Any]]:
    """`bench_model` over the shapes (torch CPU, eta 0)."""
    import torch

    torch.set_grad_enabled(False)
    rows = [bench_model(shape, repeats) for shape in (SMOKE_SHAPES if smoke else SHAPES)]
    for r in rows:
        us = r["us"]
        print(
            f"pipeline with a model {r['shape']}: {us['ddim_diffusers']:.1f} us/step "
            f"(diffusers {us['diffusers']:.1f})",
            flush=True,
        )
    return rows


def markdown_model(rows: list[dict[str, Any]]) -> str:
    """The `bench_model` rows as a markdown table (`tables.pipeline_model_table`, one decimal)."""
    return tables.pipeline_model_table({"pipeline_model": rows}, digits=1) + "\n"


def markdown(rows: list[dict[str, Any]]) -> str:
    """The `bench` rows as a markdown table (`tables.pipeline_table`, one decimal, with the
    time of one normal draw)."""
    return tables.pipeline_table({"pipeline": rows}, digits=1, draw_column=True) + "\n"
