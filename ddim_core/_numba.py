"""The numba step kernel: one pass over memory (imported only when numba is installed and a CPU
step asks for it).

float64 samples: the pass computes a `coefficients.FusedRow` in float64 in the reference path's
order, so a float64 step equals the reference bit for bit. float32 samples: the pass computes
in float32 (as the reference does) with the row folded into multipliers (`folded`: no
division, eq. (12)'s weights applied to x_t, the model output and x0_pred directly), a loop
LLVM vectorises: 3.5 us at 1x4x64x64 where the float64 loop takes 12 us, about the time of
copying two arrays (the serial pass alone). Within 1.8 ulps of the summed terms on
tests/test_fused.py's cases (the reference path: 2.1; the test allows 8).
Compiled once per dtype for a serial and a parallel loop and cached on disk (numba's
cache=True). The parallel loop runs only where the work pays for the threads (`PARALLEL_MIN`
elements, measured by benchmarks/threads.py) and with at most as many threads as this process
may run on (its CPU affinity on Linux; elsewhere the machine's CPUs), one parallel step at a
time, and backs off to the serial loop for a while after two (`STALLS`) parallel steps in a
row that stalled (a busy machine: see BACKOFF_RATIO).
"""

from __future__ import annotations

import math
import os
import threading
import time
import types
from typing import Any

import numba
import numpy as np

# Elements per step from which the parallel loop may run (benchmarks/threads.py, float32, the
# loops alone on out= buffers, 2-core machine, quiet: serial / parallel 32 / 29 us at
# 1x4x128x128 (65,536 elements), 88 / 66 at 4x4x128x128, 301 / 153 at 16x, 868 / 504 at
# 32x; smaller steps lose to the threads' start-up; benchmarks/results/threads.md, whose runs
# put the 10 % gain at 65,536 to 524,288 elements on this shared machine). Beside busy
# processes a parallel loop waits a whole scheduler time slice (8 ms) for its worker: 8,000 us
# where serial takes 161 at 8x4x128x128. Hence the guard below.
PARALLEL_MIN = 1 << 16


def _cpus() -> int:
    """The CPUs this process may run on: its affinity where the OS tells it (Linux; macOS and
    Windows have no os.sched_getaffinity), else the machine's."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)


THREADS = max(1, min(numba.config.NUMBA_NUM_THREADS, _cpus()))  # type: ignore[attr-defined]
# The parallel loop's guard: STALLS parallel steps in a row slower than BACKOFF_RATIO x the
# serial loop's best time per element at their size (a stall: a worker thread waiting for a
# CPU) send the steps of the next seconds to the serial loop (BACKOFF_S, doubled after each
# back-off in a row up to BACKOFF_MAX_S), then the parallel loop is tried again. One slow step
# alone is not a busy machine: the first step after other work (a pipeline's UNet, torch ops
# whose threads still spin) pays for cold caches and waking threads, 2-7x a warm step
# (benchmarks/pipeline.py; with one such step enough, its 8x4x128x128 rows backed off to the
# serial loop for good, at 1.4x the parallel step's time). Stalls cost 10-300x the serial step
# (a scheduler time slice), a parallel step that pays 0.5-0.8x warm, and up to about 4.5x the
# serial best where it runs from memory while that best ran from cache: at 16x4x128x128 in the
# pipeline benchmark, 626-933 us against a serial best of 216 us, which at a ratio of 3 sent
# its steps to the serial loop for good (487 us a step, where the parallel loop takes 190 us).
# So the ratio tells them apart. (The load average cannot tell: it counts this process's own
# worker threads, which spin after each parallel step.)
BACKOFF_RATIO = 8.0
STALLS = 2
BACKOFF_S = 1.0
BACKOFF_MAX_S = 64.0


class _Guard:
    """The guard's state, one per process."""

    def __init__(self) -> None:
        # per `_size_class`: the serial loop's best ns/element at that size (a step whose
        # arrays fit in cache runs up to 2x faster per element than one from memory: against
        # that, a large cache-cold parallel step looked like a stall)
        self.serial_ns: dict[tuple[int, int], float] = {}
        self.backoff_until = 0.0  # perf_counter time until which steps run serially
        self.backoff_s = BACKOFF_S  # the next back-off
        self.stalls = 0  # parallel steps in a row that stalled
        self.loaded: set[tuple[bool, int]] = set()  # (parallel, itemsize) of loops run once


_guard = _Guard()
# One parallel step at a time: steps from other threads meanwhile run serially (their threads
# are the parallelism; and numba's workqueue layer must not be entered concurrently).
_PARALLEL = threading.Lock()


def _serial_after_fork() -> None:
    # A forked child may not start OpenMP threads its parent ran (numba's omp layer terminates
    # the process: "fork() called from a process already using GNU OpenMP"): serial for good.
    _guard.backoff_until = math.inf


if hasattr(os, "register_at_fork"):  # (not on Windows, which has no fork)
    os.register_at_fork(after_in_child=_serial_after_fork)


def _size_class(n: int, itemsize: int) -> tuple[int, int]:
    """Steps of one dtype within a factor of two in size, compared with each other."""
    return (itemsize, n.bit_length())


def _choose(n: int, itemsize: int, now: float) -> bool:
    """Whether a step of n elements runs the parallel loop (holding _PARALLEL if so): once the
    serial loop's time at its size is known, and not while backing off."""
    if n < PARALLEL_MIN or THREADS < 2 or now < _guard.backoff_until:
        return False
    known = _size_class(n, itemsize) in _guard.serial_ns
    return known and _PARALLEL.acquire(blocking=False)


def _observe(parallel: bool, n: int, itemsize: int, elapsed: float) -> None:
    """Record a step's time (perf_counter seconds): the serial best, or a stall. A loop's first
    step (it loads the loop and starts the threads) is not counted."""
    if (parallel, itemsize) not in _guard.loaded:
        _guard.loaded.add((parallel, itemsize))
        return
    per = elapsed * 1e9 / n
    size = _size_class(n, itemsize)
    serial = _guard.serial_ns.get(size, math.inf)
    if not parallel:
        _guard.serial_ns[size] = min(per, serial)
    elif per > BACKOFF_RATIO * serial:
        _guard.stalls += 1
        if _guard.stalls >= STALLS:
            _guard.backoff_until = time.perf_counter() + _guard.backoff_s
            _guard.backoff_s = min(2.0 * _guard.backoff_s, BACKOFF_MAX_S)
            _guard.stalls = 0
    else:
        _guard.backoff_s = BACKOFF_S
        _guard.stalls = 0


def _step_loop(x, m, z, prev, x0, c, clip, r, noise, reclip):  # type: ignore[no-untyped-def]
    # A weight of 0 leaves its term out, as the reference's `kernels.affine` does (0 * inf is
    # NaN; 0 * x - b * u can turn u's -0.0 into 0.0).
    x0_x, x0_m, x0_div, eps_x, eps_m, eps_div, sb, d, sigma = c
    for i in numba.prange(x.shape[0]):
        xi = np.float64(x[i])
        mi = np.float64(m[i])
        a = (x0_x * xi - x0_m * mi if x0_x != 0.0 else -x0_m * mi) / x0_div
        if clip:  # keeps NaN (comparisons with NaN are false), as the reference's clip does
            a = -r if a < -r else (r if a > r else a)
        u = a if reclip else mi
        e = (eps_x * xi - eps_m * u if eps_x != 0.0 else -eps_m * u) / eps_div
        b = sb * a + d * e
        if noise:
            b = b + sigma * np.float64(z[i])
        x0[i] = a
        prev[i] = b


def _folded_loop(x, m, z, prev, x0, k, r, noise, reclip):  # type: ignore[no-untyped-def]
    # x0 = ax x - am m, clipped to [-r, r] (r = inf: no clip); x_b = ca x0 + cx x + cm m
    # (+ s z). Comparisons with NaN are false, so NaN stays NaN, as in the reference's clip.
    # A multiplier of 0 (eq. (9)'s structural zeros) leaves its term out, as the reference
    # does: 0 * inf would be NaN.
    ax, am, ca, cx, cm, s = k[0], k[1], k[2], k[3], k[4], k[5]
    lo = -r
    for i in numba.prange(x.shape[0]):
        xi = x[i]
        mi = m[i]
        a = ax * xi - am * mi if ax != 0 else -am * mi
        a = lo if a < lo else a
        a = r if a > r else a
        b = ca * a + cx * xi if cx != 0 else ca * a
        if not reclip:  # eps_pred from the model output (else from the clipped x0_pred)
            b = b + cm * mi
        if noise:
            b = b + s * z[i]
        x0[i] = a
        prev[i] = b


def _named(fn: Any, name: str) -> Any:
    """`fn` under another name. numba's disk cache keys a function by its name, line and
    bytecode, not by `parallel`: one function compiled both ways loads whichever loop was cached
    first for both (the parallel loop ran serial code, or the serial loop parallel code)."""
    copy = types.FunctionType(fn.__code__, fn.__globals__, name)
    copy.__qualname__ = name
    return copy


_step_serial = numba.njit(cache=True, nogil=True)(_named(_step_loop, "_step_serial"))
_step_parallel = numba.njit(cache=True, nogil=True, parallel=True)(
    _named(_step_loop, "_step_parallel")
)
_folded_serial = numba.njit(cache=True, nogil=True)(_named(_folded_loop, "_folded_serial"))
_folded_parallel = numba.njit(cache=True, nogil=True, parallel=True)(
    _named(_folded_loop, "_folded_parallel")
)


def folded(c: Any) -> np.ndarray:
    """A FusedRow of Python floats as float32 multipliers (ax, am, ca, cx, cm, s), computed in
    float64 and rounded once:

        x0_pred = ax x_t - am m                    (then clipped)
        x_b     = ca x0_pred + cx x_t + cm m + s z

    with eq. (12)'s eps_pred weights distributed over x_t and u (the model output m, or the
    clipped x0_pred when `c.eps_from_x0`).

    Examples
    --------
    >>> from ddim_core.coefficients import Row, fused_form
    >>> folded(fused_form(Row(0.6, 0.8, 0.5, 0.25, 0.0), "epsilon", False)).tolist()
    [1.6666666269302368, 1.3333333730697632, 0.5, 0.0, 0.25, 0.0]
    """
    found = _FOLDED.get(id(c))  # rows are cached objects: found by identity, not hashed
    if found is not None and found[0] is c:
        return found[1]
    if len(_FOLDED) >= 4096:
        _FOLDED.clear()
    _FOLDED[id(c)] = found = (c, _fold(c))  # c kept: its id is not reused while cached
    return found[1]


_FOLDED: dict[int, tuple[Any, np.ndarray]] = {}


def _fold(c: Any) -> np.ndarray:
    x0_x, x0_m, x0_div, eps_x, eps_m, eps_div, sb, d, sigma = c[:9]
    k = d / eps_div
    ca, cm = (sb - k * eps_m, 0.0) if c.eps_from_x0 else (sb, -k * eps_m)
    values = (x0_x / x0_div, x0_m / x0_div, ca, k * eps_x, cm, sigma)
    return np.array(values, dtype=np.float32)


def step(x: Any, m: Any, z: Any, c: Any, clip: float | None, out: Any) -> Any:
    """One fused pass over C-contiguous NumPy arrays with a FusedRow of Python floats
    (anything else: None, the reference runs)."""
    arrays = (x, m) if z is None else (x, m, z)
    if not all(a.flags.c_contiguous and type(a) in FLAT for a in arrays):
        return None
    if not isinstance(c.x0_x, float):
        return None
    if out is None:
        prev, x0 = np.empty_like(x), np.empty_like(x)
    else:
        prev, x0 = out
        if not all(
            o.flags.c_contiguous and type(o) in FLAT and o.dtype == x.dtype and o.shape == x.shape
            for o in out
        ):
            return None
        if any(np.may_share_memory(o, a) for o in out for a in arrays):
            return None
    zf = None if z is None else z.ravel()
    run(x.ravel(), m.ravel(), zf, c, clip, prev.ravel(), x0.ravel())
    return prev, x0


# The array types the pass takes: numba types no MaskedArray, and a matrix stays 2-d raveled
FLAT = (np.ndarray, np.memmap)


def run(x: Any, m: Any, z: Any, c: Any, clip: float | None, prev: Any, x0: Any) -> None:
    """The pass itself, on flat C-contiguous arrays of one length and dtype, outputs not
    overlapping inputs."""
    n, itemsize = x.shape[0], x.itemsize
    start = time.perf_counter()
    parallel = _choose(n, itemsize, start)
    callers = THREADS  # this thread's numba count before the step
    try:
        if parallel and (_num_threads() != THREADS or _num_threads is numba.get_num_threads):
            callers = _use_threads()
        _pass(x, m, z, c, clip, prev, x0, parallel)
    finally:
        if parallel:
            if callers != THREADS:  # given back: the caller's own numba code runs with it
                numba.set_num_threads(callers)
            _PARALLEL.release()
    if n >= PARALLEL_MIN:  # the sizes the guard decides for (an empty batch has no rate)
        _observe(parallel, n, itemsize, time.perf_counter() - start)


def _use_threads() -> int:
    """numba's thread count on this thread (numba's count is per thread) set to THREADS where
    it differs (set_num_threads took 1-4 us a step); the count it had is returned, for `run`
    to give back. numba.get_num_threads takes two locks first (to start numba's threads);
    once it has run, numba's C getter is asked directly where this numba has one (about
    0.15 us against 1)."""
    global _num_threads
    callers: int = _num_threads()
    if callers != THREADS:
        numba.set_num_threads(THREADS)
    if _num_threads is numba.get_num_threads:  # once: numba's threads run from here on
        _num_threads = getattr(numba.np.ufunc.parallel, "_get_num_threads", _num_threads)
    return callers


_num_threads: Any = numba.get_num_threads


def _pass(
    x: Any, m: Any, z: Any, c: Any, clip: float | None, prev: Any, x0: Any, parallel: bool
) -> None:
    noise = z is not None
    z = z if noise else x
    if x.dtype == np.float32:
        loop32 = _folded_parallel if parallel else _folded_serial
        loop32(x, m, z, prev, x0, folded(c), _limit32(clip), noise, c.eps_from_x0)
    else:
        loop = _step_parallel if parallel else _step_serial
        limit = 0.0 if clip is None else float(clip)
        loop(x, m, z, prev, x0, c[:9], clip is not None, limit, noise, bool(c.eps_from_x0))


def _limit32(clip: float | None) -> Any:
    """The clip limit as the reference applies it to float32 (rounded; no clip: inf)."""
    found = _LIMITS.get(clip)
    if found is None:
        if len(_LIMITS) >= 64:
            _LIMITS.clear()
        found = _LIMITS[clip] = np.float32(np.inf if clip is None else clip)
    return found


_LIMITS: dict[float | None, Any] = {}
