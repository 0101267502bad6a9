"""The CuPy step kernel: one ElementwiseKernel (imported only for CuPy samples)."""

from __future__ import annotations

from typing import Any

import cupy

_KERNEL = cupy.ElementwiseKernel(
    "T x, T m, T z, float64 ax, float64 am, float64 k0, float64 kx, float64 km, "
    "float64 sigma, float64 r, bool clip, bool noise",
    "T prev, T x0",
    """
    double a = ax * (double)x + am * (double)m;
    if (clip) a = a < -r ? -r : (a > r ? r : a);  // keeps NaN, as the reference does
    x0 = (T)a;
    double b = k0 * a + kx * (double)x + km * (double)m;
    if (noise) b += sigma * (double)z;
    prev = (T)b;
    """,
    "ddim_core_step",
)


def step(x: Any, m: Any, z: Any, c: list[float], clip: float | None, out: Any) -> Any:
    """One pass on the GPU; `out` buffers must not overlap the inputs (else None)."""
    if out is not None and any(
        cupy.shares_memory(o, a) for o in out for a in (x, m, z) if a is not None
    ):
        return None
    prev, x0 = (cupy.empty_like(x), cupy.empty_like(x)) if out is None else out
    _KERNEL(x, m, x if z is None else z, *c, clip or 0.0, clip is not None, z is not None, prev, x0)
    return prev, x0
