"""k-diffusion-style DDIM samplers, computed by ddim_core.

k-diffusion works in variance-exploding coordinates: x_k = x / sqrt(abar), sigma =
sqrt((1 - abar) / abar), and `model(x_k, sigma)` returns the denoised x0. One DDIM transfer
between two levels is the core's (a coefficients.Row at abar = 1 / (1 + sigma^2)),
applied to x_k * sqrt(abar) and scaled back. In these coordinates DDIM with eta = 0 is
k-diffusion's `sample_euler`, and with 0 < eta <= 1 its `sample_euler_ancestral` given the same
noise (the core's sigma_t / sqrt(abar_prev) is its sigma_up, the direction its sigma_down).

The sigma levels are read to the host once per loop (one sync at the start); steps are then
Python-float coefficients times arrays of any backend.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np

import ddim_core as dc
from ddim_core import backends, coefficients, kernels
from ddim_core.coefficients import LevelsKey, Row
from ddim_core.config import check_nonnegative
from ddim_core.plugins import standard_normal
from ddim_core.sampling import check_fixed_point, solve_implicit

Array = Any


def sample_ddim(
    model: Callable[..., Array],
    x: Array,
    sigmas: Array,
    extra_args: dict[str, Any] | None = None,
    callback: Callable[[dict[str, Any]], Any] | None = None,
    disable: bool | None = None,
    eta: float = 0.0,
    s_noise: float = 1.0,
    noise_sampler: Callable[[Array, Array], Array] | None = None,
) -> Array:
    """DDIM sampling over descending `sigmas`, with k-diffusion's sampler signature.

    Parameters
    ----------
    model : callable
        ``model(x, sigma * s_in, **extra_args)`` returning the denoised x_0 (k-diffusion's
        convention: VE latents x / sqrt(alpha_bar)).
    x : array
        The starting latent, x_T * sigmas[0] (any array library).
    sigmas : array
        Descending, ending in 0 or the model's smallest sigma (e.g. `get_sigmas_ddim`).
    extra_args : dict, optional
        Passed to the model.
    callback : callable, optional
        Called with a dict ``x, i, sigma, sigma_hat, denoised`` per step.
    disable : bool, optional
        Disable the tqdm progress bar.
    eta : float, default 0.0
        0 equals k-diffusion's `sample_euler`; 0 < eta <= 1 its `sample_euler_ancestral`.
    s_noise : float, default 1.0
        Scale of the added noise.
    noise_sampler : callable, optional
        ``noise_sampler(sigma, sigma_next) -> noise``; default: torch's global generator.

    Returns
    -------
    array
        The sample at the last sigma.

    Examples
    --------
    >>> import numpy as np, ddim_core as dc
    >>> config = dc.DDIMConfig(clip_sample=False)
    >>> sigmas = get_sigmas_ddim(config, 10)
    >>> def denoiser(x, sigma):  # a model whose data is all zeros
    ...     return np.zeros_like(x)
    >>> x = sample_ddim(denoiser, np.ones((2, 3)) * sigmas[0], sigmas, disable=True)
    >>> float(np.abs(x).max())
    0.0
    """
    extra_args = {} if extra_args is None else extra_args
    levels = _levels(sigmas, ascending=False)
    eta = check_nonnegative("eta", eta)
    s_noise = check_nonnegative("s_noise", s_noise)
    if eta > 0 and noise_sampler is None:
        noise_sampler = _default_noise_sampler(x)
    rows = _coefficients(levels, eta, inverse=False)
    s_in = _ones_like_batch(x)
    for i in _trange(len(levels) - 1, disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback(
                {"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised}
            )
        c = rows[i]
        noise = None
        if eta > 0 and levels[i + 1] > 0:
            assert noise_sampler is not None
            noise = noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise
        x = _transfer(x, denoised, c, _SAMPLE, noise)
    return x


def sample_ddim_inverse(
    model: Callable[..., Array],
    x: Array,
    sigmas: Array,
    extra_args: dict[str, Any] | None = None,
    callback: Callable[[dict[str, Any]], Any] | None = None,
    disable: bool | None = None,
    fixed_point_iters: int = 0,
    tol: float | None = None,
) -> Array:
    """DDIM inversion over ascending `sigmas` (may start at 0).

    Plain inversion (``fixed_point_iters=0``) evaluates the model at the destination level on
    the source sample, as diffusers' DDIMInverseScheduler does. With k > 0 each step is solved
    implicitly (find y whose forward DDIM step lands on the source) with at most k more model
    calls, stopping once the largest residual is <= tol.

    Parameters
    ----------
    model : callable
        As in `sample_ddim`.
    x : array
        The clean latent.
    sigmas : array
        Ascending (e.g. `get_sigmas_ddim(...)` reversed).
    extra_args, callback, disable
        As in `sample_ddim`.
    fixed_point_iters : int, default 0
        Extra model calls per step for the exact solve.
    tol : float, optional
        Stop a step's solve below this residual.

    Returns
    -------
    array
        The latent at the last (largest) sigma.

    Examples
    --------
    >>> import numpy as np, ddim_core as dc
    >>> sigmas = get_sigmas_ddim(dc.DDIMConfig(), 10)
    >>> def denoiser(x, sigma):
    ...     return 0.5 * x / (1.0 + sigma[:, None] ** 2)
    >>> x0 = np.ones((1, 2))
    >>> z = sample_ddim_inverse(denoiser, x0, sigmas[::-1].copy(), disable=True,
    ...                         fixed_point_iters=20, tol=1e-12)
    >>> back = sample_ddim(denoiser, z, sigmas, disable=True)
    >>> bool(np.abs(back - x0).max() < 1e-9)
    True
    """
    extra_args = {} if extra_args is None else extra_args
    levels = _levels(sigmas, ascending=True)
    iters = check_fixed_point(fixed_point_iters, tol)
    rows = _coefficients(levels, 0.0, inverse=True)
    s_in = _ones_like_batch(x)
    for i in _trange(len(levels) - 1, disable):
        src, dst, c = levels[i], levels[i + 1], rows[i]
        eps_at = functools.partial(_eps_at, model, sigmas[i + 1] * s_in, dst, extra_args)
        # the model sees the source sample expressed at the destination level
        eps, denoised = eps_at(x * (c.sqrt_ab_from / c.sqrt_ab_to))
        if callback is not None:
            sigma = sigmas[i + 1]
            callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})
        y = _transfer(x, eps, c, _INVERSE, None)
        if iters:
            # in VE coordinates the forward DDIM step dst -> src is y - (dst - src) eps(y),
            # whose linear part is the identity (c = 1)
            def forward(y: Array, eps_at: Any = eps_at, step: float = dst - src) -> Array:
                return y - step * eps_at(y)[0]

            y = solve_implicit(forward, x, y, iters, tol)[0]
        x = y
    return x


def get_sigmas_ddim(
    alphas_cumprod_or_config: Any,
    n: int,
    spacing: str | None = None,
    steps_offset: int | None = None,
    set_alpha_to_one: bool | None = None,
) -> Array:
    """The sigmas of an n-step DDIM plan, descending, then the final level.

    The final level is 0 with set_alpha_to_one, else sigma(alpha_bar_0), the model's smallest
    sigma. sigma = sqrt((1 - alpha_bar) / alpha_bar) at each plan timestep.

    Parameters
    ----------
    alphas_cumprod_or_config : DDIMConfig or array
        A config (its options are the defaults) or an alphas_cumprod table (e.g.
        `model.inner_model.alphas_cumprod`; diffusers' defaults: leading, 0, True).
    n : int
        The number of steps.
    spacing : str, optional
        "leading", "trailing" or "linspace".
    steps_offset : int, optional
        Added to the leading spacing's timesteps.
    set_alpha_to_one : bool, optional
        Whether the last sigma is 0.

    Returns
    -------
    array
        n + 1 sigmas, in the table's library, device and dtype (NumPy float64 for a config).

    Examples
    --------
    >>> import ddim_core as dc
    >>> sigmas = get_sigmas_ddim(dc.DDIMConfig(), 4, spacing="trailing")
    >>> sigmas.shape, float(sigmas[-1])
    ((5,), 0.0)
    """
    if isinstance(alphas_cumprod_or_config, dc.DDIMConfig):
        config, table = alphas_cumprod_or_config, None
    else:
        table = alphas_cumprod_or_config
        xp = backends.namespace(alphas_cumprod=table)
        size = int(table.shape[0]) if table.ndim == 1 else -1
        config = dc.DDIMConfig(num_train_timesteps=max(size, 1))
    changes = {"timestep_spacing": spacing, "steps_offset": steps_offset}
    changes["set_alpha_to_one"] = set_alpha_to_one
    config = config.replace(**{k: v for k, v in changes.items() if v is not None})
    plan = dc.make_plan(config, n)
    schedule = plan.schedule if table is None else _schedule_of(table, config)
    ab = np.array([*(schedule.alpha_bar(t) for t in plan.timesteps), schedule.final_alpha_cumprod])
    host = np.sqrt((1.0 - ab) / ab)
    if table is None:
        return host
    return backends.from_host(host, xp, device=backends.device(table), dtype=table.dtype)


def register() -> list[str]:
    """Add the samplers to `k_diffusion.sampling`, where code looks samplers up by name.

    Returns
    -------
    list of str
        The names added.

    Examples
    --------
    >>> register()  # doctest: +SKIP
    ['sample_ddim', 'sample_ddim_inverse', 'get_sigmas_ddim']
    """
    import k_diffusion.sampling as sampling

    names = {
        "sample_ddim": sample_ddim,
        "sample_ddim_inverse": sample_ddim_inverse,
        "get_sigmas_ddim": get_sigmas_ddim,
    }
    for name, fn in names.items():
        setattr(sampling, name, fn)
    return list(names)


# --- helpers ---------------------------------------------------------------------------------


def _levels(sigmas: Array, *, ascending: bool) -> list[float]:
    """The sigmas as host floats (one read), checked: 1-D, >= 2, finite, >= 0, monotonic."""
    backends.namespace(sigmas=sigmas)
    if sigmas.ndim != 1 or sigmas.shape[0] < 2:
        raise ValueError(
            f"sigmas must be a 1-D array of at least 2 levels, got shape {tuple(sigmas.shape)}"
        )
    levels = [float(s) for s in backends.to_host(sigmas)]
    if not all(math.isfinite(s) and s >= 0 for s in levels):
        raise ValueError(f"sigmas must be finite and >= 0, got {levels}")
    pairs = list(itertools.pairwise(levels))
    ok = all(a < b for a, b in pairs) if ascending else all(a > b for a, b in pairs)
    if not ok:
        order = "ascending (inversion)" if ascending else "descending (sampling)"
        raise ValueError(f"sigmas must be strictly {order}, got {levels}")
    return levels


def _coefficients(levels: list[float], eta: float, *, inverse: bool) -> list[Row]:
    """The core's Rows between consecutive sigma levels (host float64, computed and checked
    once per loop): abar = 1 / (1 + sigma^2)."""
    ab = (1.0 / (1.0 + np.asarray(levels) ** 2)).tolist()
    kind = _INVERSE if inverse else _SAMPLE
    found = coefficients.table(LevelsKey(tuple(ab[:-1]), tuple(ab[1:]), eta, kind.prediction_type))
    if found.invalid:
        i = min(found.invalid)
        raise ValueError(
            f"cannot step from sigma {levels[i]} to {levels[i + 1]}: {found.invalid[i]}"
        )
    return [Row(*values) for values in found.values.tolist()]


# What the model output predicts in each direction, without clipping: the denoised x0 when
# sampling, eps (derived from the denoised) when inverting.
_SAMPLE = dc.DDIMConfig(prediction_type="sample", clip_sample=False)
_INVERSE = dc.DDIMConfig(prediction_type="epsilon", clip_sample=False)


def _transfer(x: Array, model_output: Array, c: Row, kind: dc.DDIMConfig, noise: Any) -> Array:
    """x_k at level a -> x_k at level b: to VP (x * sqrt abar_a), the core's DDIM update,
    back to VE (/ sqrt abar_b)."""
    xp = backends.namespace(x=x)
    x_b, _ = kernels.ddim_update(x * c.sqrt_ab_from, model_output, c, kind, noise, False, xp=xp)
    return x_b / c.sqrt_ab_to


def _eps_at(
    model: Callable[..., Array], sigma: Array, level: float, extra_args: dict[str, Any], y: Array
) -> tuple[Array, Array]:
    """(eps, denoised) of the model at noise level `level` (sigma: its batch array) on y."""
    denoised = model(y, sigma, **extra_args)
    return (y - denoised) / level, denoised


def _ones_like_batch(x: Array) -> Array:
    xp = backends.namespace(x=x)
    return xp.ones((x.shape[0],), dtype=x.dtype, device=backends.device(x))


def _default_noise_sampler(x: Array) -> Callable[[Array, Array], Array]:
    """k-diffusion's default: fresh standard normal noise like x from the global generator
    (torch tensors; other libraries need an explicit noise_sampler)."""

    def draw(sigma: Array, sigma_next: Array) -> Array:
        try:
            return standard_normal(None, tuple(x.shape), like=x)
        except TypeError:
            raise TypeError(
                "eta > 0 needs noise_sampler=(sigma, sigma_next) -> noise for a "
                f"{type(x).__module__}.{type(x).__qualname__} sample"
            ) from None

    return draw


def _trange(n: int, disable: bool | None) -> Any:
    if disable:
        return range(n)
    try:
        from tqdm.auto import trange
    except ImportError:
        return range(n)
    return trange(n, disable=disable)


def _schedule_of(table: Array, config: dc.DDIMConfig) -> dc.Schedule:
    return dc.Schedule.from_alphas_cumprod(
        backends.to_host(table), set_alpha_to_one=config.set_alpha_to_one
    )
