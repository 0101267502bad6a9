"""The numba step kernel: one pass over memory (imported only when numba is installed and a CPU
step asks for it).

The pass computes a `coefficients.FusedRow` in float64 in the reference path's order, so a
float64 step equals the reference bit for bit. Compiled once per dtype for a serial and a
parallel loop and cached on disk (numba's cache=True). The parallel loop runs only where the
work pays for the threads (`PARALLEL_MIN` elements, measured by benchmarks/threads.py) and with
at most as many threads as this process may run on, so a busy machine is not oversubscribed.
"""

from __future__ import annotations

import os
from typing import Any

import numba
import numpy as np

# Elements per step from which the parallel loop runs. On this project's 2-core machines it
# never beat the serial loop by 10 % up to 32x4x128x128 (2M elements; benchmarks/threads.py):
# the pass is memory-bound, and beside busy processes the threads only contend. Larger steps,
# or machines with more cores and memory channels, may gain from it.
PARALLEL_MIN = 1 << 22
THREADS = max(1, min(numba.config.NUMBA_NUM_THREADS, len(os.sched_getaffinity(0))))  # type: ignore[attr-defined]


def _step_loop(x, m, z, prev, x0, c, clip, r, noise, reclip):  # type: ignore[no-untyped-def]
    x0_x, x0_m, x0_div, eps_x, eps_m, eps_div, sb, d, sigma = c
    for i in numba.prange(x.shape[0]):
        xi = np.float64(x[i])
        mi = np.float64(m[i])
        a = (x0_x * xi - x0_m * mi) / x0_div
        if clip:  # keeps NaN (comparisons with NaN are false), as the reference's clip does
            a = -r if a < -r else (r if a > r else a)
        u = a if reclip else mi
        e = (eps_x * xi - eps_m * u) / eps_div
        b = sb * a + d * e
        if noise:
            b = b + sigma * np.float64(z[i])
        x0[i] = a
        prev[i] = b


_serial = numba.njit(cache=True, nogil=True)(_step_loop)
_parallel = numba.njit(cache=True, nogil=True, parallel=True)(_step_loop)


def step(x: Any, m: Any, z: Any, c: Any, clip: float | None, out: Any) -> Any:
    """One fused pass over C-contiguous NumPy arrays with a FusedRow of Python floats
    (anything else: None, the reference runs)."""
    arrays = (x, m) if z is None else (x, m, z)
    if not all(a.flags.c_contiguous for a in arrays) or not isinstance(c.x0_x, float):
        return None
    if out is None:
        prev, x0 = np.empty_like(x), np.empty_like(x)
    else:
        prev, x0 = out
        if not all(o.flags.c_contiguous and o.dtype == x.dtype and o.shape == x.shape for o in out):
            return None
        if any(np.may_share_memory(o, a) for o in out for a in arrays):
            return None
    run(x, m, z, c, clip, prev, x0)
    return prev, x0


def run(x: Any, m: Any, z: Any, c: Any, clip: float | None, prev: Any, x0: Any) -> None:
    """The pass itself, on C-contiguous arrays of one shape, outputs not overlapping inputs."""
    flat = x.reshape(-1)
    noise = z is not None
    loop = _parallel if flat.shape[0] >= PARALLEL_MIN and THREADS > 1 else _serial
    if loop is _parallel:
        numba.set_num_threads(THREADS)
    loop(
        flat,
        m.reshape(-1),
        z.reshape(-1) if noise else flat,
        prev.reshape(-1),
        x0.reshape(-1),
        c[:9],
        clip is not None,
        0.0 if clip is None else float(clip),
        noise,
        bool(c.eps_from_x0),
    )
