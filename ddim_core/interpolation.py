"""Spherical linear interpolation of latents (Shoemake 1985), as the DDIM paper interpolates
x_T between two samples (Song et al. 2021, sec. 5.3, eq. 67):

    x(alpha) = sin((1 - alpha) theta) / sin(theta) x_a + sin(alpha theta) / sin(theta) x_b,
    theta = arccos(<x_a, x_b> / (|x_a| |x_b|)),

per batch element, over every axis but the first; theta is computed as
2 atan2(|u_a - u_b|, |u_a + u_b|) of the unit vectors, which is accurate at every angle.
Gaussian latents keep their norm (about sqrt(D)) along the arc, where linear interpolation
would shrink it. On any backend, no host read.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from . import backends
from .backends import Array
from .config import check_real


def slerp(x_a: Array, x_b: Array, alpha: Any) -> Array:
    """x_a at alpha = 0, x_b at alpha = 1, along the great circle between them (per sample).

    `alpha` is a number or an array of shape () or (batch,) in the samples' library. Where the
    two samples are parallel (theta = 0) the result is the linear interpolation (the limit of
    the arc); exactly opposite samples (theta = pi) and a zero sample have no single great
    circle and give their linear interpolation too (and its derivative, under autograd). Half
    precision is computed in float32. Samples of shape (D,) are one batch element.

    Parameters
    ----------
    x_a, x_b : array
        Samples of one shape, library, device and real floating dtype.
    alpha : float or array
        0 gives x_a, 1 gives x_b; an array of shape () or (batch,) interpolates per sample.

    Returns
    -------
    array
        In x_a's library, device and dtype.

    Raises
    ------
    ValueError
        Shapes that differ or are unknown (Dask's NaN sizes), an alpha array of another shape
        or device, or a NaN or infinite alpha number (alpha arrays are not read on the host).
    TypeError
        A sample that is None, dtypes that differ or are not real floating, or an alpha of
        another kind (an alpha array must be real floating or integer).

    Examples
    --------
    >>> import numpy as np
    >>> slerp(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]), 0.5).round(4)
    array([[0.7071, 0.7071]])
    """
    xp = backends.namespace(x_a=x_a, x_b=x_b)
    for name, x in (("x_a", x_a), ("x_b", x_b)):
        if x is None:  # namespace() skips None: a loader or model that returned nothing
            raise TypeError(f"{name} must be a real floating array, got None")
        backends.check_known_shape(name, x)  # (Dask: its batch size makes the alphas)
    if tuple(x_a.shape) != tuple(x_b.shape):
        raise ValueError(
            f"x_a has shape {tuple(x_a.shape)} but x_b has shape {tuple(x_b.shape)}; they must "
            "be equal"
        )
    if not backends.is_real_floating(xp, x_a) or x_a.dtype != x_b.dtype:
        raise TypeError(
            f"x_a and x_b must share one real floating dtype, got {x_a.dtype}, {x_b.dtype}"
        )
    work = backends.work_dtype(xp, x_a.dtype)
    a, b = backends.cast(xp, x_a, work), backends.cast(xp, x_b, work)
    one = x_a.ndim <= 1
    if one:
        a, b = xp.reshape(a, (1, -1)), xp.reshape(b, (1, -1))
    t = _alpha(alpha, a, xp)
    rows = (a.shape[0], math.prod(a.shape[1:]))  # not -1: an empty batch has no such size
    flat_a, flat_b = xp.reshape(a, rows), xp.reshape(b, rows)
    u_a, u_b = _unit(flat_a, xp), _unit(flat_b, xp)
    d, s = _norm(u_a - u_b, xp), _norm(u_a + u_b, xp)
    s = xp.where((d > 0) | (s > 0), s, xp.ones_like(s))  # atan2(0, 0) has no derivative
    theta = 2.0 * xp.atan2(d, s)
    arc = (theta > 0) & (theta < math.pi) & (_norm(u_a, xp) > 0) & (_norm(u_b, xp) > 0)
    sin = xp.sin(xp.where(arc, theta, xp.ones_like(theta)))
    w_a = xp.where(arc, xp.sin((1.0 - t) * theta) / sin, 1.0 - t)
    w_b = xp.where(arc, xp.sin(t * theta) / sin, t)
    out = backends.broadcast_to_sample(w_a, a.ndim, xp) * a
    out = out + backends.broadcast_to_sample(w_b, a.ndim, xp) * b
    if one:
        out = xp.reshape(out, x_a.shape)
    return backends.cast(xp, out, x_a.dtype)


def _norm(x: Array, xp: Any) -> Array:
    """|x| of each row of a (batch, D) array of entries at most about 1: shape (batch,). A zero
    row's derivative is 0: sqrt's is infinite at 0, and where() would pass 0 * inf = NaN back
    from a branch it did not take (parallel, opposite or zero samples, under autograd)."""
    squares = xp.sum(x * x, axis=1)
    nonzero = squares > 0
    root = xp.sqrt(xp.where(nonzero, squares, xp.ones_like(squares)))
    return xp.where(nonzero, root, xp.zeros_like(squares))


def _unit(x: Array, xp: Any) -> Array:
    """x / |x| per row; a zero row stays zero. Each row is first divided by its largest |entry|,
    so that the squares neither overflow (float32 above about 1e19) nor underflow to zero."""
    if x.shape[1] == 0:
        return x
    big = xp.max(xp.abs(x), axis=1, keepdims=True)
    x = x / xp.where(big > 0, big, xp.ones_like(big))
    n = xp.reshape(_norm(x, xp), (-1, 1))
    return x / xp.where(n > 0, n, xp.ones_like(n))


def _alpha(alpha: Any, like: Array, xp: Any) -> Array:
    """alpha as a (batch,) array in the work dtype on like's device."""
    batch = like.shape[0]
    if isinstance(alpha, numbers.Real) and not isinstance(alpha, bool):  # NumPy scalars too
        t = check_real("alpha", alpha)  # an int past float's range too
        return xp.full((batch,), t, dtype=like.dtype, device=backends.device(like))
    try:
        if alpha is None:  # namespace() skips None
            raise TypeError
        backends.namespace(x_a=like, alpha=alpha)  # (a device mismatch names x_a)
    except TypeError:
        raise TypeError(
            "alpha must be a number or an array of the samples' library, got "
            f"{type(alpha).__name__}"
        ) from None
    if not xp.isdtype(alpha.dtype, ("real floating", "integral")):
        raise TypeError(f"alpha must be real, got an array of dtype {alpha.dtype}")
    if alpha.ndim > 1 or (alpha.ndim == 1 and alpha.shape[0] not in (1, batch)):
        raise ValueError(f"alpha has shape {tuple(alpha.shape)}; expected () or ({batch},)")
    values = xp.astype(alpha, like.dtype)
    return xp.broadcast_to(xp.reshape(values, (-1,)), (batch,))
