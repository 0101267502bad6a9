"""Classifier-free guidance (Ho & Salimans 2022) and its rescale (Lin et al. 2023, sec. 3.4).

    out = uncond + scale * (cond - uncond)                         classifier-free guidance
    out = phi * out * std(cond) / std(out) + (1 - phi) * out       guidance rescale, phi in [0, 1]

std is taken over every axis but the batch axis, per sample. Both are linear-algebra on model
outputs of any prediction type and any backend; no host read.
"""

from __future__ import annotations

from . import backends
from .backends import Array, Namespace
from .config import check_nonnegative


def cfg(uncond: Array, cond: Array, scale: float) -> Array:
    """Classifier-free guidance: uncond + scale * (cond - uncond); scale 1 is `cond` itself."""
    return cond if scale == 1.0 else uncond + scale * (cond - uncond)


def rescale_noise_cfg(noise_guided: Array, noise_cond: Array, guidance_rescale: float) -> Array:
    """Guidance rescale (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are
    Flawed", sec. 3.4, eq. 15-16): scale the guided output to the per-sample standard deviation
    of the conditional one, then mix `guidance_rescale` of it with the rest of the guided output.

    The arguments of diffusers' pipelines' `rescale_noise_cfg`, on any backend. A guided output
    with zero spread (std 0) is left as it is rather than divided by zero. Half precision is
    computed in float32.
    """
    phi = check_nonnegative("guidance_rescale", guidance_rescale)
    xp = backends.namespace(noise_guided=noise_guided, noise_cond=noise_cond)
    if tuple(noise_guided.shape) != tuple(noise_cond.shape):
        raise ValueError(
            f"noise_guided has shape {tuple(noise_guided.shape)} but noise_cond has shape "
            f"{tuple(noise_cond.shape)}; they must be equal"
        )
    if noise_guided.ndim < 2:
        raise ValueError(
            f"model outputs must have a batch axis and at least one more, got shape "
            f"{tuple(noise_guided.shape)}"
        )
    if phi == 0.0:
        return noise_guided
    work = backends.work_dtype(xp, noise_guided.dtype)
    guided, cond = backends.cast(xp, noise_guided, work), backends.cast(xp, noise_cond, work)
    rescaled = guided * std_ratio(cond, guided, xp=xp)
    return backends.cast(xp, phi * rescaled + (1.0 - phi) * guided, noise_guided.dtype)


def std_ratio(a: Array, b: Array, *, xp: Namespace) -> Array:
    """std(a) / std(b) per sample (over every axis but the first, kept for broadcasting); 1
    where std(b) = 0. The ratio of population and of sample standard deviations is the same."""
    axes = tuple(range(1, a.ndim))
    std_a = xp.std(a, axis=axes, keepdims=True)
    std_b = xp.std(b, axis=axes, keepdims=True)
    spread = std_b > 0
    one = xp.ones_like(std_b)
    return xp.where(spread, std_a / xp.where(spread, std_b, one), one)
