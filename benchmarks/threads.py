"""When the numba kernel's parallel loop pays, and what a busy machine does to it.

    .venv/bin/python -m benchmarks.threads [--busy 2] [--out DIR]

For step sizes from 1x4x8x8 to 32x4x128x128 (float32, clip on, eta 0): the median time of one
fused step with the serial loop and with the parallel loop (all the threads this process may
use, whatever the load: the stall guard off), both writing into `out=` buffers (the loops
alone), and of a step as shipped, fused and on the reference array-API path (the fused plugins
blocked), each allocating its outputs, the four in turns within each repeat; first on the
machine as it is, then beside `--busy`
CPU-bound processes. `_numba.PARALLEL_MIN` is chosen from the quiet run (the smallest size from
which parallel beats serial by 10 %); the busy run checks that the fused path is never slower
than the reference there.

Before timing, arrays of the largest size are allocated and freed once: glibc's malloc adapts
its mmap and trim thresholds to the largest block it has freed, and until then every step of
a few MB pays fresh page faults for its outputs (a process that has run a model has long since
adapted). Without this the first (quiet) run would pay them and the busy run not. Writes
threads.md / threads.json into --out (default: a temporary directory).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

import ddim_core as dc
from ddim_core import _numba, builtins, plugins

from . import out_dir, positive_int

SHAPES = [
    (1, 4, 8, 8),
    (1, 4, 64, 64),
    (1, 4, 128, 128),
    (4, 4, 128, 128),
    (8, 4, 128, 128),
    (16, 4, 128, 128),
    (32, 4, 128, 128),
]


def _spin(stop: Any) -> None:
    while not stop.is_set():
        sum(range(10000))


def _inner(fn: Callable[[], Any], repeats: int, budget_s: float) -> int:
    """Calls of `fn` per timed repeat for `repeats` repeats in about `budget_s` (after two
    warm-up calls)."""
    fn()
    fn()
    t0 = time.perf_counter()
    fn()
    return max(1, int(budget_s / repeats / max(time.perf_counter() - t0, 1e-7)))


def _us(fn: Callable[[], Any], inner: int) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(inner):
        fn()
    return (time.perf_counter_ns() - t0) / inner / 1e3


# a step to time and the setting it runs in (a context manager factory)
Case = tuple[Callable[[], Any], Callable[[], contextlib.AbstractContextManager[Any]]]


def _in_turns(cases: dict[str, Case], repeats: int, budget_s: float) -> dict[str, float]:
    """Median microseconds per call of each case's step, run in its setting, the cases taking
    turns within each repeat (about `budget_s` per case): beside busy processes this
    process's share of the CPUs drifts over seconds, and timed one after the other the cases
    would see different shares. The order rotates from repeat to repeat: a case that always
    ran right after the forced parallel loop would share the CPUs with its spinning workers."""
    inner = {}
    for name, (fn, setting) in cases.items():
        with setting():
            inner[name] = _inner(fn, repeats, budget_s)
    times: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for r in range(repeats):  # each repeat starts one case later: no case always follows
        for name in names[r % len(names) :] + names[: r % len(names)]:  # the same one
            fn, setting = cases[name]
            with setting():
                fn()  # untimed: a first step after a plugin change rebuilds the plugin manager
                times[name].append(_us(fn, inner[name]))
    return {name: statistics.median(v) for name, v in times.items()}


def settle_allocator() -> None:
    """Allocate and free outputs of the largest step, so that malloc's thresholds are those of
    a process that has handled such arrays (see the module docstring)."""
    for _ in range(2):
        blocks = [np.ones(SHAPES[-1], dtype=np.float32) for _ in range(4)]
        del blocks


def measure(repeats: int, budget_s: float) -> list[dict[str, Any]]:
    settle_allocator()
    config = dc.DDIMConfig(clip_sample=True)
    plan = dc.make_plan(config, 50)
    rows = []
    for shape in SHAPES:
        x, m = (np.random.default_rng(i).standard_normal(shape, dtype=np.float32) for i in (0, 1))

        def step(x: np.ndarray = x, m: np.ndarray = m) -> Any:
            return dc.step(plan, m, 500, x)

        out = (np.empty_like(x), np.empty_like(x))

        def step_out(x: np.ndarray = x, m: np.ndarray = m, out: Any = out) -> Any:
            return dc.step(plan, m, 500, x, out=out)

        times = _in_turns(
            {
                "serial": (step_out, lambda: _forced(False)),  # each loop forced, whatever the
                "parallel": (step_out, lambda: _forced(True)),  # load and the stall guard
                "fused": (step, contextlib.nullcontext),
                "reference": (step, _reference_path),
            },
            repeats,
            budget_s,
        )
        rows.append({"shape": shape, "elements": int(np.prod(shape)), **times})
        print("x".join(map(str, shape)), {k: round(v, 1) for k, v in times.items()}, flush=True)
    return rows


@contextlib.contextmanager
def _forced(parallel: bool) -> Iterator[None]:
    """numba's parallel (or serial) loop for every step meanwhile, recorded in a guard of its
    own: the shipped step's guard (timed in turns with these) sees only its own steps."""
    saved = _numba._choose, _numba._guard
    _numba._choose = lambda *args: parallel and _numba._PARALLEL.acquire()
    _numba._guard = _numba._Guard()
    try:
        yield
    finally:
        _numba._choose, _numba._guard = saved


class _reference_path:
    """The reference array-API step: ddim-core's fused plugins blocked (DDIM_CORE_BLOCK_PLUGINS)."""

    def __enter__(self) -> None:
        self.saved = os.environ.get(plugins.BLOCK_ENV)
        os.environ[plugins.BLOCK_ENV] = "numba,torch-fused,cupy-fused"
        plugins.manager.cache_clear()

    def __exit__(self, *exc: object) -> None:
        if self.saved is None:
            del os.environ[plugins.BLOCK_ENV]
        else:
            os.environ[plugins.BLOCK_ENV] = self.saved
        plugins.manager.cache_clear()


def suggested_threshold(rows: list[dict[str, Any]]) -> int | None:
    """The smallest size from which parallel beats serial by 10 % at every larger size."""
    best = None
    for r in reversed(rows):
        if r["parallel"] * 1.1 > r["serial"]:
            break
        best = r["elements"]
    return best


def markdown(quiet: list[dict[str, Any]], busy: list[dict[str, Any]], n_busy: int) -> str:
    lines = [
        f"numba kernel, float32, clip on, eta 0; {_numba.THREADS} threads for the parallel loop; "
        f"PARALLEL_MIN = {_numba.PARALLEL_MIN} elements; microseconds per step (median).",
        "",
        "| load | shape | serial (out=) | parallel (out=) | fused (as shipped) | reference "
        "| fused / reference |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for load, rows in (("quiet", quiet), (f"{n_busy} busy processes", busy)):
        for r in rows:
            lines.append(
                f"| {load} | {'x'.join(map(str, r['shape']))} | {r['serial']:.1f} | "
                f"{r['parallel']:.1f} | {r['fused']:.1f} | {r['reference']:.1f} | "
                f"{r['fused'] / r['reference']:.2f} |"
            )
    lines += [
        "",
        f"Steps under {builtins.NUMBA_MIN_ELEMENTS} elements run the reference path on both sides "
        "(numba is not even imported; the step as shipped first asks the numba plugin's kernel, "
        "which declines them): their ratio is that call and the machine's noise.",
        "",
        f"suggested PARALLEL_MIN from the quiet run: {suggested_threshold(quiet)}",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.threads", description=__doc__)
    parser.add_argument("--busy", type=int, default=2, help="CPU-bound processes beside the run")
    parser.add_argument("--repeats", type=positive_int, default=9)
    parser.add_argument("--out", default=None, help="directory (default: a temporary one)")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="ddim-threads-"))
    out = out_dir(parser, out)
    quiet = measure(args.repeats, 0.3)
    stop = multiprocessing.Event()
    spinners = [multiprocessing.Process(target=_spin, args=(stop,)) for _ in range(args.busy)]
    for p in spinners:
        p.start()
    try:
        busy = measure(args.repeats, 0.3)
    finally:
        stop.set()
        for p in spinners:
            p.join()
    text = markdown(quiet, busy, args.busy)
    (out / "threads.md").write_text(text)
    (out / "threads.json").write_text(json.dumps({"quiet": quiet, "busy": busy}, indent=1))
    print(text)
    print(f"wrote {out / 'threads.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
