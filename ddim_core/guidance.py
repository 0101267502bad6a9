"""Classifier-free guidance (Ho & Salimans 2022) and its rescale (Lin et al. 2023, sec. 3.4).

    out = uncond + scale * (cond - uncond)                         classifier-free guidance
    out = phi * out * std(cond) / std(out) + (1 - phi) * out       guidance rescale, phi in [0, 1]

std is taken over every axis but the batch axis, per sample. Both are linear-algebra on model
outputs of any prediction type and any backend; no host read.
"""

from __future__ import annotations

import math
from typing import Any

from . import backends
from .backends import Array, Namespace
from .config import check_nonnegative, check_real


def cfg(uncond: Array, cond: Array, scale: float) -> Array:
    """Classifier-free guidance (Ho & Salimans 2022): uncond + scale * (cond - uncond).

    Parameters
    ----------
    uncond, cond : array
        The model's unconditional and conditional outputs (any prediction type, any backend).
    scale : float
        The guidance scale w; 1 returns `cond` itself.

    Returns
    -------
    array
        The guided output.

    Raises
    ------
    TypeError
        A `scale` that is not a real number (an array included: the scale is a host number),
        outputs of different libraries or not real floating.
    ValueError
        A NaN or infinite `scale`, or outputs of different shapes.

    Examples
    --------
    >>> import numpy as np
    >>> cfg(np.zeros(2), np.ones(2), 7.5)
    array([7.5, 7.5])
    """
    w = check_real("scale", scale)
    xp = backends.namespace(uncond=uncond, cond=cond)
    _check_outputs(xp, ("uncond", uncond), ("cond", cond))
    if w == 1.0:
        return cond
    (w_exact,) = backends.exact_scalars(xp, (w,), cond)
    return uncond + w_exact * (cond - uncond)


def _check_outputs(xp: Namespace, *named: tuple[str, Array]) -> None:
    """Two model outputs: real floating arrays of one shape."""
    for name, x in named:
        if x is None:  # namespace() skips None: a model that returned nothing
            raise TypeError(f"{name} must be a real floating array, got None")
        if not backends.is_real_floating(xp, x):
            raise TypeError(f"{name} must be a real floating array, got dtype {x.dtype}")
    (name_a, a), (name_b, b) = named
    if tuple(a.shape) != tuple(b.shape):
        for name, x in named:  # NaN (Dask's unknown size) is unequal to itself: say so
            backends.check_known_shape(name, x)
        raise ValueError(
            f"{name_a} has shape {tuple(a.shape)} but {name_b} has shape {tuple(b.shape)}; "
            "they must be equal"
        )


def rescale_noise_cfg(noise_guided: Array, noise_cond: Array, guidance_rescale: float) -> Array:
    """Guidance rescale (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are
    Flawed", sec. 3.4, eq. 15-16): scale the guided output to the per-sample standard deviation
    of the conditional one, then mix `guidance_rescale` of it with the rest of the guided output.

    The arguments of diffusers' pipelines' `rescale_noise_cfg`, on any backend. A guided output
    with zero spread (std 0) is left as it is rather than divided by zero; a NaN or infinite
    entry in either output makes its sample NaN, as in diffusers. Half precision is computed
    in float32.

    Parameters
    ----------
    noise_guided : array
        The guided output, shape (batch, ...).
    noise_cond : array
        The conditional output, same shape.
    guidance_rescale : float
        phi in [0, 1]: 0 returns `noise_guided` itself, 1 the fully rescaled output.

    Returns
    -------
    array
        In `noise_guided`'s library, device and dtype.

    Raises
    ------
    ValueError
        A `guidance_rescale` outside [0, 1] or non-finite, shapes that differ (or unknown
        sizes that cannot be compared: Dask's NaN), or no axis beyond the batch.
    TypeError
        Arrays of different libraries or not real floating, or a non-number
        `guidance_rescale`.

    Examples
    --------
    >>> import numpy as np
    >>> guided = np.array([[0.0, 4.0]])
    >>> cond = np.array([[0.0, 2.0]])
    >>> rescale_noise_cfg(guided, cond, 1.0)   # the conditional spread, std 1
    array([[0., 2.]])
    """
    phi = check_rescale("guidance_rescale", guidance_rescale)
    xp = backends.namespace(noise_guided=noise_guided, noise_cond=noise_cond)
    _check_outputs(xp, ("noise_guided", noise_guided), ("noise_cond", noise_cond))
    if noise_guided.ndim < 2:
        raise ValueError(
            f"model outputs must have a batch axis and at least one more, got shape "
            f"{tuple(noise_guided.shape)}"
        )
    if phi == 0.0 or math.prod(noise_guided.shape[1:]) == 0:  # nothing to rescale
        return noise_guided
    work = backends.work_dtype(xp, noise_guided.dtype)
    guided, cond = backends.cast(xp, noise_guided, work), backends.cast(xp, noise_cond, work)
    rescaled = guided * _std_ratio(cond, guided, xp=xp)
    phi_exact, keep = backends.exact_scalars(xp, (phi, 1.0 - phi), guided)
    return backends.cast(xp, phi_exact * rescaled + keep * guided, noise_guided.dtype)


def check_rescale(name: str, value: Any) -> float:
    """A guidance rescale phi: a real number in [0, 1] (Lin et al. 2023, eq. 16).

    Parameters
    ----------
    name : str
        The argument's name, for the error message.
    value : object
        The value to check.

    Returns
    -------
    float

    Raises
    ------
    TypeError
        Not a real number.
    ValueError
        Outside [0, 1], NaN or infinite.

    Examples
    --------
    >>> check_rescale("guidance_rescale", 0.7)
    0.7
    """
    phi = check_nonnegative(name, value)
    if phi > 1.0:
        raise ValueError(f"{name}={value!r} must be in [0, 1]")
    return phi


def _std_ratio(a: Array, b: Array, *, xp: Namespace) -> Array:
    """std(a) / std(b) per sample (over every axis but the first, kept for broadcasting); 1
    where std(b) = 0; NaN where either std is (a NaN or infinite entry), as std's own ratio,
    std(b) = 0 included.
    The ratio of population and of sample standard deviations is the same.
    Each sample is divided by its largest |entry| before the std, so that the squares neither
    overflow (float32 above about 1e19) nor underflow to zero; the scales come back as a ratio."""
    axes = tuple(range(1, a.ndim))
    big_a = _max_abs(a, axes, xp=xp)
    big_b = _max_abs(b, axes, xp=xp)
    std_a = _std(a / big_a, axes, xp=xp)
    std_b = _std(b / big_b, axes, xp=xp)
    spread = std_b != 0  # (not > 0: a NaN std is no zero spread)
    one = xp.ones_like(std_b)
    kept = xp.where(xp.isnan(std_a), std_a, one)  # a zero spread keeps a NaN of std(a)
    return xp.where(spread, std_a / xp.where(spread, std_b, one) * (big_a / big_b), kept)


def _std(x: Array, axes: tuple[int, ...], *, xp: Namespace) -> Array:
    """std over `axes` (kept) per sample, with derivative 0 for a sample with no spread:
    sqrt's is infinite at 0, and where() would pass 0 * inf = NaN back from the branch it did
    not take (jax.grad; torch's std takes 0 itself). Such a sample's std is taken of a ramp
    instead, and dropped; the others' are xp.std's own, bit for bit."""
    size = math.prod(x.shape[1:])
    if size < 2:  # one value per sample: no spread, nothing to differentiate (NaN stays NaN)
        return x * 0
    spread = xp.var(x, axis=axes, keepdims=True) != 0  # NaN (a NaN or inf entry) stays NaN
    ramp = xp.arange(size, dtype=x.dtype, device=backends.device(x))  # (uncommitted JAX: None)
    safe = xp.where(spread, x, xp.reshape(ramp, (1, *x.shape[1:])))
    std = xp.std(safe, axis=axes, keepdims=True)
    return xp.where(spread, std, xp.zeros_like(std))


def _max_abs(x: Array, axes: tuple[int, ...], *, xp: Namespace) -> Array:
    """max |x| per sample over `axes` (kept for broadcasting); 1 where it is 0."""
    big = xp.max(xp.abs(x), axis=axes, keepdims=True)
    return xp.where(big > 0, big, xp.ones_like(big))
