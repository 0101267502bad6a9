"""The CuPy step kernel: one ElementwiseKernel (imported only for CuPy samples).

It computes a `coefficients.FusedRow` in float64 in the reference path's order, like the numba
kernel. Rows gathered on the device (array timesteps) are not taken: the reference runs then.
"""

from __future__ import annotations

from typing import Any

import cupy

_KERNEL = cupy.ElementwiseKernel(
    "T x, T m, T z, float64 x0_x, float64 x0_m, float64 x0_div, float64 eps_x, float64 eps_m, "
    "float64 eps_div, float64 sb, float64 d, float64 sigma, float64 r, bool clip, bool noise, "
    "bool reclip",
    "T prev, T x0",
    """
    double xi = (double)x, mi = (double)m;
    double a = (x0_x * xi - x0_m * mi) / x0_div;
    if (clip) a = a < -r ? -r : (a > r ? r : a);  // keeps NaN, as the reference does
    double e = (eps_x * xi - eps_m * (reclip ? a : mi)) / eps_div;
    double b = sb * a + d * e;
    if (noise) b = b + sigma * (double)z;
    x0 = (T)a;
    prev = (T)b;
    """,
    "ddim_core_step",
)


def step(x: Any, m: Any, z: Any, c: Any, clip: float | None, out: Any) -> Any:
    """One pass on the GPU; `out` buffers must not overlap the inputs (else None)."""
    if not isinstance(c.x0_x, float):
        return None
    if out is not None and any(
        cupy.shares_memory(o, a) for o in out for a in (x, m, z) if a is not None
    ):
        return None
    prev, x0 = (cupy.empty_like(x), cupy.empty_like(x)) if out is None else out
    flags = (clip or 0.0, clip is not None, z is not None, c.eps_from_x0)
    _KERNEL(x, m, x if z is None else z, *c[:9], *flags, prev, x0)
    return prev, x0
