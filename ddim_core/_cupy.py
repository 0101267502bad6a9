"""The CuPy step kernels (imported only for CuPy samples): one ElementwiseKernel each.

Both compute a `coefficients.FusedRow` in float64 in the reference path's order, like the numba
kernel: `step` from a row of Python floats, `gather` from a timestep array on the GPU, reading
its row of the plan's float64 device table in the same pass (one launch, no host read).
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
    // __dmul_rn/__dadd_rn/__dsub_rn are never contracted into a fused multiply-add (nvcc
    // contracts a * b + c by default): each rounds once, as the reference path's operations do,
    // so float64 results equal the reference bit for bit.
    double xi = (double)x, mi = (double)m;
    double a = __dsub_rn(__dmul_rn(x0_x, xi), __dmul_rn(x0_m, mi)) / x0_div;
    if (clip) a = a < -r ? -r : (a > r ? r : a);  // keeps NaN, as the reference does
    double e = __dsub_rn(__dmul_rn(eps_x, xi), __dmul_rn(eps_m, reclip ? a : mi)) / eps_div;
    double b = __dadd_rn(__dmul_rn(sb, a), __dmul_rn(d, e));
    if (noise) b = __dadd_rn(b, __dmul_rn(sigma, (double)z));
    x0 = (T)a;
    prev = (T)b;
    """,
    "ddim_core_step",
)


_GATHER = cupy.ElementwiseKernel(
    "T x, T m, T z, raw float64 c, raw I t, int64 per, int64 size, float64 r, bool clip, "
    "bool noise, bool reclip",
    "T prev, T x0",
    """
    // element i belongs to sample i / per, whose timestep picks row ti of the (size, 9) table
    long long ti = (long long)t[i / per];
    double a, b;
    if (ti < 0 || ti >= size) {  // CuPy has no asynchronous error: NaN, never a wrapped row
        a = __longlong_as_double(0x7ff8000000000000LL);
        b = a;
    } else {
        long long k = ti * 9;
        double xi = (double)x, mi = (double)m;
        a = __dsub_rn(__dmul_rn(c[k], xi), __dmul_rn(c[k + 1], mi)) / c[k + 2];
        if (clip) a = a < -r ? -r : (a > r ? r : a);
        double e = __dsub_rn(__dmul_rn(c[k + 3], xi), __dmul_rn(c[k + 4], reclip ? a : mi))
            / c[k + 5];
        b = __dadd_rn(__dmul_rn(c[k + 6], a), __dmul_rn(c[k + 7], e));
        if (noise) b = __dadd_rn(b, __dmul_rn(c[k + 8], (double)z));
    }
    x0 = (T)a;
    prev = (T)b;
    """,
    "ddim_core_gather_step",
)


def step(x: Any, m: Any, z: Any, c: Any, clip: float | None, out: Any) -> Any:
    """One pass on the GPU from a row of Python floats; `out` buffers must not overlap the
    inputs (else None)."""
    if not isinstance(c.x0_x, float):
        return None
    buffers = _outputs(x, m, z, out)
    if buffers is None:
        return None
    flags = (clip or 0.0, clip is not None, z is not None, c.eps_from_x0)
    _KERNEL(x, m, x if z is None else z, *c[:9], *flags, *buffers)
    return buffers


def gather(
    x: Any, m: Any, z: Any, table: Any, t: Any, eps_from_x0: bool, clip: float | None, out: Any
) -> Any:
    """One pass on the GPU for a timestep array `t` (shape () or (batch,)) on the sample's
    device: each element's row is read from `table` ((T, 9) float64, the FusedRow columns of
    every timestep) in the same pass. A timestep outside [0, T) gives NaN."""
    buffers = _outputs(x, m, z, out)
    if buffers is None:
        return None
    per = max(x.size // max(t.size, 1), 1)
    flags = (clip or 0.0, clip is not None, z is not None, eps_from_x0)
    _GATHER(x, m, x if z is None else z, table, t, per, table.shape[0], *flags, *buffers)
    return buffers


step.gather = gather  # type: ignore[attr-defined]  # the kernel's device-table form


def _outputs(x: Any, m: Any, z: Any, out: Any) -> tuple[Any, Any] | None:
    """Fresh (x_prev, x0_pred) arrays, or `out` where it overlaps none of the inputs."""
    if out is None:
        return cupy.empty_like(x), cupy.empty_like(x)
    if any(cupy.shares_memory(o, a) for o in out for a in (x, m, z) if a is not None):
        return None
    return out[0], out[1]
