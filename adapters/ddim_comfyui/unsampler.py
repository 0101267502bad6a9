"""The Unsampler without ComfyUI: invert a clean latent up a DDIM schedule, exactly by default,
and sample it back; the samplers that invert exactly by construction as SAMPLER functions.

For users of ComfyUI_Noise's "Unsampler" (model, steps, end_at_step, cfg, sampler, positive,
negative, latent_image): ComfyUI runs our function as a KSAMPLER with its CFG-guided denoiser,
`model(x, sigma, **extra_args)` on VE latents (as in `ddim_kdiffusion`). `unsample` climbs
the DDIM plan's sigmas from 0 up to the level where a sampler starting at step `end_at_step`
begins (0: all the way to sigma_max), by

- "ddim_exact" (default): DDIM inversion solved exactly per step (1 + fixed_point_iters model
  calls per step, fewer with tol), so DDIM sampling from the result (KSamplerAdvanced with
  ddim_core, start_at_step = end_at_step, add_noise off) returns the latent;
- "ddim_plain": plain DDIM inversion (one call per step; sampling does not return);
- "edict", "bdia", "belm": `ddim_core.reversible`; their second array travels in the latent
  dict (`STATE_KEY`), and `resample` (the Resampler node) samples the state back exactly.

Everything here runs without ComfyUI and is tested in CI; `nodes` wraps it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ddim_kdiffusion import reversible as kr
from ddim_kdiffusion import sample_ddim, sample_ddim_inverse

from ddim_core.reversible import State

METHODS = ("ddim_exact", "ddim_plain", "edict", "bdia", "belm")
REVERSIBLE = ("edict", "bdia", "belm")
STATE_KEY = "ddim_core_inversion"  # what a latent dict carries from the Unsampler
EXACT_ITERS = 8
EXACT_TOL = 1e-6

Denoiser = Callable[..., Any]


def inversion_sigmas(sigmas: Any, end_at_step: int) -> Any:
    """The ascending sigmas an Unsampler climbs: a sampling schedule's (descending, ending at
    0) from its end up to step `end_at_step`'s level, at least one step.

    Parameters
    ----------
    sigmas : array
        A sampling schedule's sigmas, descending.
    end_at_step : int
        The step a sampler will start at (0: all the way up to sigma_max).

    Returns
    -------
    array
        Ascending sigmas.

    Examples
    --------
    >>> import numpy as np
    >>> inversion_sigmas(np.array([3.0, 2.0, 1.0, 0.0]), 1)
    array([0., 1., 2.])
    """
    steps = len(sigmas) - 1
    start = min(max(int(end_at_step), 0), steps - 1)
    return sigmas[start:].flip(0) if hasattr(sigmas, "flip") else sigmas[start:][::-1]


def unsample(
    model: Denoiser,
    x: Any,
    sigmas: Any,
    method: str = "ddim_exact",
    extra_args: dict[str, Any] | None = None,
    callback: Callable[[dict[str, Any]], Any] | None = None,
    disable: bool | None = None,
    fixed_point_iters: int = EXACT_ITERS,
    tol: float | None = EXACT_TOL,
) -> tuple[Any, dict[str, Any]]:
    """(noised latent, what resampling needs) for a clean VE latent x over ascending sigmas.

    The dict holds the method, the sigmas (descending, for sampling back) and, for the
    reversible methods, the state's second array and its samples' dtype.

    Parameters
    ----------
    model : callable
        ComfyUI's CFG-guided denoiser, ``model(x, sigma, **extra_args) -> x0``.
    x : array
        The clean latent (VE at sigma 0).
    sigmas : array
        Ascending (`inversion_sigmas`).
    method : str, default "ddim_exact"
        One of METHODS.
    extra_args, callback, disable
        ComfyUI's sampler arguments, forwarded.
    fixed_point_iters : int, default EXACT_ITERS
        Refinements per step of "ddim_exact".
    tol : float, optional
        Its residual tolerance.

    Returns
    -------
    tuple
        (the latent at the top sigma, the dict `resample` needs).

    Examples
    --------
    >>> import numpy as np
    >>> def denoiser(x, sigma, **extra_args):
    ...     return x / (1.0 + sigma[:, None] ** 2)
    >>> sigmas = np.array([2.0, 1.0, 0.5, 0.0])
    >>> z, info = unsample(denoiser, np.ones((1, 2)), sigmas[::-1].copy(), disable=True)
    >>> bool(np.abs(resample(denoiser, z, info, disable=True) - 1.0).max() < 1e-6)
    True
    """
    method = _check_method(method)
    args = extra_args or {}
    info: dict[str, Any] = {"method": method, "sigmas": _flip(sigmas)}
    if method in REVERSIBLE:
        invert = getattr(kr, f"sample_{method}_inverse")
        state = invert(model, x, sigmas, args, callback, disable)
        info |= {"partner": state[1], "dtype": state.dtype}
        return state[0], info
    iters = fixed_point_iters if method == "ddim_exact" else 0
    z = sample_ddim_inverse(
        model, x, sigmas, args, callback, disable, iters, tol if iters else None
    )
    return z, info


def resample(
    model: Denoiser,
    x: Any,
    info: dict[str, Any],
    extra_args: dict[str, Any] | None = None,
    callback: Callable[[dict[str, Any]], Any] | None = None,
    disable: bool | None = None,
) -> Any:
    """The clean latent back from an unsampled one and its `info`: DDIM for the DDIM methods,
    the method's own sampler from the state for the reversible ones.

    Parameters
    ----------
    model : callable
        The same denoiser as `unsample`'s.
    x : array
        The unsampled latent.
    info : dict
        What `unsample` returned with it.
    extra_args, callback, disable
        ComfyUI's sampler arguments, forwarded.

    Returns
    -------
    array
        The clean latent.

    Examples
    --------
    >>> import numpy as np
    >>> def denoiser(x, sigma, **extra_args):
    ...     return x / (1.0 + sigma[:, None] ** 2)
    >>> sigmas = np.array([2.0, 1.0, 0.5, 0.0])
    >>> z, info = unsample(denoiser, np.ones((1, 2)), sigmas[::-1].copy(), "bdia", disable=True)
    >>> bool(np.abs(resample(denoiser, z, info, disable=True) - 1.0).max() < 1e-12)
    True
    """
    method, sigmas, args = _check_method(info["method"]), info["sigmas"], extra_args or {}
    if method in REVERSIBLE:
        state = State(x, info["partner"], info["dtype"])
        return getattr(kr, f"sample_{method}")(model, state, sigmas, args, callback, disable)
    return sample_ddim(model, x, sigmas, args, callback, disable)


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"method={method!r}: choose one of {METHODS}")
    return method


def _flip(sigmas: Any) -> Any:
    return sigmas.flip(0) if hasattr(sigmas, "flip") else sigmas[::-1]


# --- the reversible samplers as SAMPLER functions (ComfyUI's k-diffusion signature) ----------


def sample_edict_core(
    model: Denoiser,
    x: Any,
    sigmas: Any,
    extra_args: dict[str, Any] | None = None,
    callback: Callable[[dict[str, Any]], Any] | None = None,
    disable: bool | None = None,
    p: float = 0.93,
) -> Any:
    """EDICT from x_T (both sequences start at x): a different discretisation than DDIM.

    Parameters
    ----------
    model : callable
        ComfyUI's denoiser, ``model(x, sigma, **extra_args) -> x0``.
    x : array
        x_T (VE latents).
    sigmas : array
        Descending.
    extra_args, callback, disable
        ComfyUI's sampler arguments, forwarded.
    p : float, default 0.93
        EDICT's mixing weight.

    Returns
    -------
    array
        x_0.

    Examples
    --------
    >>> import numpy as np
    >>> def denoiser(x, sigma, **extra_args):
    ...     return x / (1.0 + sigma[:, None] ** 2)
    >>> sigmas = np.array([2.0, 1.0, 0.5, 0.0])
    >>> sample_edict_core(denoiser, np.ones((1, 2)) * 2.0, sigmas, disable=True).shape
    (1, 2)
    """
    return kr.sample_edict(model, x, sigmas, extra_args, callback, disable, p=p)


def sample_bdia_core(
    model: Denoiser,
    x: Any,
    sigmas: Any,
    extra_args: dict[str, Any] | None = None,
    callback: Callable[[dict[str, Any]], Any] | None = None,
    disable: bool | None = None,
    gamma: float = 1.0,
) -> Any:
    """BDIA-DDIM from x_T (the first step DDIM's).

    Parameters
    ----------
    model : callable
        ComfyUI's denoiser, ``model(x, sigma, **extra_args) -> x0``.
    x : array
        x_T (VE latents).
    sigmas : array
        Descending.
    extra_args, callback, disable
        ComfyUI's sampler arguments, forwarded.
    gamma : float, default 1.0
        BDIA's gamma.

    Returns
    -------
    array
        x_0.

    Examples
    --------
    >>> import numpy as np
    >>> def denoiser(x, sigma, **extra_args):
    ...     return x / (1.0 + sigma[:, None] ** 2)
    >>> sigmas = np.array([2.0, 1.0, 0.5, 0.0])
    >>> sample_bdia_core(denoiser, np.ones((1, 2)) * 2.0, sigmas, disable=True).shape
    (1, 2)
    """
    return kr.sample_bdia(model, x, sigmas, extra_args, callback, disable, gamma=gamma)


def sample_belm_core(
    model: Denoiser,
    x: Any,
    sigmas: Any,
    extra_args: dict[str, Any] | None = None,
    callback: Callable[[dict[str, Any]], Any] | None = None,
    disable: bool | None = None,
) -> Any:
    """O-BELM from x_T (the first step DDIM's).

    Parameters
    ----------
    model : callable
        ComfyUI's denoiser, ``model(x, sigma, **extra_args) -> x0``.
    x : array
        x_T (VE latents).
    sigmas : array
        Descending.
    extra_args, callback, disable
        ComfyUI's sampler arguments, forwarded.

    Returns
    -------
    array
        x_0.

    Examples
    --------
    >>> import numpy as np
    >>> def denoiser(x, sigma, **extra_args):
    ...     return x / (1.0 + sigma[:, None] ** 2)
    >>> sigmas = np.array([2.0, 1.0, 0.5, 0.0])
    >>> sample_belm_core(denoiser, np.ones((1, 2)) * 2.0, sigmas, disable=True).shape
    (1, 2)
    """
    return kr.sample_belm(model, x, sigmas, extra_args, callback, disable)
