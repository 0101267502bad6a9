"""The numba step kernel: one parallel pass over memory (imported only when numba is installed
and a CPU step asks for it). One compiled loop per (clip, noise) case, so that no branch sits in
the loop; compiled once per dtype and cached on disk (numba's cache=True)."""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

_jit = numba.njit(parallel=True, cache=True, nogil=True)


@numba.njit(inline="always")
def _clip(a, r):  # type: ignore[no-untyped-def]
    """Clip to [-r, r], keeping NaN (comparisons with NaN are false)."""
    return -r if a < -r else (r if a > r else a)


@_jit
def _plain(x, m, prev, x0, ax, am, k0, kx, km):  # type: ignore[no-untyped-def]
    for i in numba.prange(x.shape[0]):
        a = ax * x[i] + am * m[i]
        x0[i] = a
        prev[i] = k0 * a + kx * x[i] + km * m[i]


@_jit
def _clipped(x, m, prev, x0, ax, am, k0, kx, km, r):  # type: ignore[no-untyped-def]
    for i in numba.prange(x.shape[0]):
        a = _clip(ax * x[i] + am * m[i], r)
        x0[i] = a
        prev[i] = k0 * a + kx * x[i] + km * m[i]


@_jit
def _plain_noise(x, m, z, prev, x0, ax, am, k0, kx, km, sigma):  # type: ignore[no-untyped-def]
    for i in numba.prange(x.shape[0]):
        a = ax * x[i] + am * m[i]
        x0[i] = a
        prev[i] = k0 * a + kx * x[i] + km * m[i] + sigma * z[i]


@_jit
def _clipped_noise(x, m, z, prev, x0, ax, am, k0, kx, km, sigma, r):  # type: ignore[no-untyped-def]
    for i in numba.prange(x.shape[0]):
        a = _clip(ax * x[i] + am * m[i], r)
        x0[i] = a
        prev[i] = k0 * a + kx * x[i] + km * m[i] + sigma * z[i]


def step(x: Any, m: Any, z: Any, c: list[float], clip: float | None, out: Any) -> Any:
    """One fused pass over C-contiguous NumPy arrays (anything else: None, the reference runs).
    Coefficients stay float64; each output element is rounded once to the array's dtype."""
    arrays = (x, m) if z is None else (x, m, z)
    if not all(a.flags.c_contiguous for a in arrays):
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


def run(x: Any, m: Any, z: Any, c: list[float], clip: float | None, prev: Any, x0: Any) -> None:
    """The pass itself, on C-contiguous arrays of one shape, outputs not overlapping inputs."""
    ax, am, k0, kx, km, sigma = c
    flat = (x.reshape(-1), m.reshape(-1))
    outs = (prev.reshape(-1), x0.reshape(-1))
    if z is None and clip is None:
        _plain(*flat, *outs, ax, am, k0, kx, km)
    elif z is None:
        _clipped(*flat, *outs, ax, am, k0, kx, km, clip)
    elif clip is None:
        _plain_noise(*flat, z.reshape(-1), *outs, ax, am, k0, kx, km, sigma)
    else:
        _clipped_noise(*flat, z.reshape(-1), *outs, ax, am, k0, kx, km, sigma, clip)
