"""The Unsampler without ComfyUI: invert a clean latent up a DDIM schedule, exactly by default,
and sample it back; the samplers that invert exactly by construction as SAMPLER functions.

For users of ComfyUI_Noise's "Unsampler" (model, steps, end_at_step, cfg, sampler, positive,
negative, latent_image): ComfyUI runs our function as a KSAMPLER with its CFG-guided denoiser,
`model(x, sigma, **extra_args)` on VE latents (as in `ddim_kdiffusion`). `unsample` climbs
the DDIM plan's sigmas from 0 up to the level where a sampler starting at step `end_at_step`
begins (0: all the way to sigma_max), by

- "ddim_exact" (default): DDIM inversion solved exactly per step (1 + fixed_point_iters model
  calls per step, fewer with tol), so DDIM sampling from the result on the same schedule
  returns the latent: the DDIM Schedule from step end_at_step (SplitSigmas) in
  SamplerCustomAdvanced with DisableNoise, or KSamplerAdvanced with ddim_core, add_noise off,
  start_at_step = end_at_step and the simple scheduler, which is trailing spacing only where
  steps divide 1000 (elsewhere, 30 steps for one, its timesteps are not the inversion's and the
  round trip misses by far more than the exact inversion's tolerance);
- "ddim_plain": plain DDIM inversion (one call per step; sampling does not return);
- "edict", "bdia", "belm": `ddim_core.reversible`; their second array travels in the latent
  dict (`STATE_KEY`), and `resample` (the Resampler node) samples the state back exactly.

Everything here runs without ComfyUI and is tested in CI; `nodes` wraps it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from ddim_kdiffusion import reversible as kr
from ddim_kdiffusion import sample_ddim, sample_ddim_inverse

from ddim_core import backends
from ddim_core.reversible import State

from .core import (
    _flow_rescaled,
    _rectified_flow_type,
    computes_in_half,
    masked,
    stepped_as_comfyui,
)

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
    reversible methods, the state's second array, its samples' dtype and the inverse's state
    (`resample` resumes from it while the latent is the one returned: to the last bit).

    Outside a latent noise mask (``extra_args["denoise_mask"]``) the latent is returned as
    given (z * mask + x * (1 - mask), as the DDIM Inversion Sampler's; on a rectified-flow
    model x at the top sigma's scale, (1 - sigmas[-1]) / (1 - sigmas[0]) times x, which
    ComfyUI divides by 1 - sigmas[-1]), as ComfyUI's samplers leave it where the mask is 0
    (its denoiser returns it there as x0), where inversion's steps move it; so a DDIM sampler
    given the result as its latent keeps it there too (near
    a soft mask edge that path is inexact: ComfyUI's model sees the result's samples there,
    not x). The reversible states go with the values the inversion reached, and DDIM needs
    them at a soft edge, so the dict also holds those ("unmasked") and the result ("shown"),
    from which `resample` returns exactly by every method.

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
        info |= {"partner": state[1], "dtype": state.dtype, "lo": state.lo}  # lo: exactness
        info["state"] = state  # (its VP state: the Resampler's round trip to the last bit)
        z = state[0]
    else:
        iters = fixed_point_iters if method == "ddim_exact" else 0
        x = stepped_as_comfyui(x, sigmas)  # a half latent: float32, as ComfyUI's samplers
        z = sample_ddim_inverse(
            model,
            x,
            sigmas,
            args,
            callback,
            disable,
            iters,
            tol if iters else None,
            stall=computes_in_half(model),  # a float16 / bfloat16 model's floor
        )
    mask = args.get("denoise_mask")
    if mask is None:
        return z, info
    if _rectified_flow_type(model) is not None and len(sigmas) >= 2:
        # ComfyUI divides the result by 1 - sigmas[-1]: x as it holds one at the top level
        x = _flow_rescaled(x, float(sigmas[0]), float(sigmas[-1]))
    shown = masked(z, x, mask)  # as the DDIM Inversion Sampler keeps it
    return shown, info | {"unmasked": z, "shown": shown}


def resample(
    model: Denoiser,
    x: Any,
    info: dict[str, Any],
    extra_args: dict[str, Any] | None = None,
    callback: Callable[[dict[str, Any]], Any] | None = None,
    disable: bool | None = None,
) -> Any:
    """The clean latent back from an unsampled one and its `info`: DDIM for the DDIM methods,
    the method's own sampler from the state for the reversible ones. Under a noise mask both
    start from where the inversion reached (`unsample` returned the latent outside the mask
    in its place), with x's changes since added.

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
    if "shown" in info:  # from where the inversion reached, with x's changes since added
        x = info["unmasked"] + (x - info["shown"])
    if method in REVERSIBLE:
        state = kr.resumed(
            State(x, info["partner"], info["dtype"], info.get("lo")), info.get("state")
        )
        return getattr(kr, f"sample_{method}")(model, state, sigmas, args, callback, disable)

    x = stepped_as_comfyui(x, sigmas)  # a half latent: float32, as ComfyUI's samplers
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
        Descending; a repeated sigma (a zero-length step) is skipped, as the identity.
    extra_args, callback, disable
        ComfyUI's sampler arguments, forwarded. Sigmas ending at 0 with a noise mask
        (``extra_args["denoise_mask"]``): ComfyUI's latent image (``model.latent_image``)
        where the mask is 0, as its samplers leave it.
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
    sigmas, callback = _distinct(sigmas, callback)
    z = kr.sample_edict(model, x, sigmas, extra_args, callback, disable, p=p)
    return _latent_outside_mask(model, z, sigmas, extra_args)


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
        Descending; a repeated sigma (a zero-length step) is skipped, as the identity.
    extra_args, callback, disable
        ComfyUI's sampler arguments, forwarded. Sigmas ending at 0 with a noise mask
        (``extra_args["denoise_mask"]``): ComfyUI's latent image (``model.latent_image``)
        where the mask is 0, as its samplers leave it.
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
    sigmas, callback = _distinct(sigmas, callback)
    z = kr.sample_bdia(model, x, sigmas, extra_args, callback, disable, gamma=gamma)
    return _latent_outside_mask(model, z, sigmas, extra_args)


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
        Descending; a repeated sigma (a zero-length step) is skipped, as the identity.
    extra_args, callback, disable
        ComfyUI's sampler arguments, forwarded. Sigmas ending at 0 with a noise mask
        (``extra_args["denoise_mask"]``): ComfyUI's latent image (``model.latent_image``)
        where the mask is 0, as its samplers leave it.

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
    sigmas, callback = _distinct(sigmas, callback)
    z = kr.sample_belm(model, x, sigmas, extra_args, callback, disable)
    return _latent_outside_mask(model, z, sigmas, extra_args)


def _latent_outside_mask(model: Any, z: Any, sigmas: Any, extra_args: Any) -> Any:
    """z with ComfyUI's latent image where its noise mask is 0 (blended at soft edges), for a
    sampler that ends at sigma 0, as ComfyUI's samplers end there: its denoiser (`model`, which
    holds the latent as `latent_image`) returns the latent there as x0, and their last step
    lands on x0. The reversible samplers' two coupled sequences do not (EDICT kept noise
    there: 11.7 max abs at 10 steps from sigma 14.6). Anything else is z as given."""
    mask = (extra_args or {}).get("denoise_mask")
    latent = getattr(model, "latent_image", None)
    if mask is None or latent is None or len(sigmas) < 2 or float(sigmas[-1]) != 0.0:
        return z
    return masked(z, latent, mask)


def _distinct(sigmas: Any, callback: Any) -> tuple[Any, Any]:
    """The sigmas without repeats, and the callback with each step's index in the given list.

    A repeated sigma is a zero-length step, the identity in ComfyUI's samplers (its simple
    scheduler makes them at many steps and low denoise); the two-step reversible samplers
    have no such step, so it is dropped, and the step leaving the level reports the last
    index of the run (so ComfyUI's progress ends at its total).
    """
    levels = backends.to_host(sigmas, name="sigmas").tolist()  # one read, as the samplers' own
    keep = [i for i, s in enumerate(levels) if i == 0 or s != levels[i - 1]]
    if len(keep) == len(levels):
        return sigmas, callback
    kept = sigmas[keep]
    if callback is None:
        return kept, None

    def report(d: dict[str, Any]) -> Any:
        return callback({**d, "i": keep[d["i"] + 1] - 1})

    return kept, report


# --- the nodes, as data (nodes.py builds ComfyUI's classes and gives `guide`) -----------------

# guide(model, positive, negative, cfg, latent, function, sigmas, start=None): `function` run
# from latent["samples"] (or `start`) with latent["samples"] kept outside a noise mask
Guide = Callable[..., Any]


def run_unsampler(
    model: Any,
    steps: int,
    end_at_step: int,
    cfg: float,
    method: str,
    spacing: str,
    positive: Any,
    negative: Any,
    latent_image: dict[str, Any],
    fixed_point_iters: int,
    tol: float,
    steps_offset: int = 0,
    *,
    guide: Guide,
) -> dict[str, Any]:
    """The Unsampler node: the latent noised up the model's DDIM schedule to `end_at_step`'s
    level by `unsample` under classifier-free guidance, what resampling needs kept in the
    latent dict (`STATE_KEY`).

    Parameters
    ----------
    model : ModelPatcher
        ComfyUI's MODEL (its discrete schedule: `core.ddim_sigmas`).
    steps, end_at_step : int
        The DDIM schedule's steps, and the step a sampler will start at (0: to sigma_max).
    cfg : float
        Classifier-free guidance scale.
    method : str
        One of METHODS ("ddim_exact" by default in the node).
    spacing : str
        The schedule's timestep spacing.
    positive, negative : CONDITIONING
        As in KSampler.
    latent_image : LATENT
        The latent dict (its "samples" and optional "noise_mask").
    fixed_point_iters : int
        Refinements per step of "ddim_exact".
    tol : float
        Its tolerance (0: every refinement).
    steps_offset : int, default 0
        The schedule's steps_offset (leading and quadratic spacing only), as the DDIM
        Schedule node's.
    guide : callable
        Runs a sampler function under ComfyUI's CFG (given by `ddim_comfyui.nodes`).

    Returns
    -------
    dict
        The LATENT: the noised "samples" (the input's where a noise mask is 0, as ComfyUI's
        samplers leave them: `unsample`) and `STATE_KEY` (with the input's samples, "clean",
        which a noise mask keeps when resampling).

    Raises
    ------
    ValueError
        A rectified-flow model climbed to sigma 1 (see `_check_below_pure_noise`).

    Examples
    --------
    >>> run_unsampler.__name__  # it runs inside ComfyUI, given `guide` by nodes.py
    'run_unsampler'
    """
    from .core import ddim_sigmas

    sigmas = ddim_sigmas(model, steps, spacing, steps_offset, 1.0)
    up = inversion_sigmas(sigmas, end_at_step)
    _check_below_pure_noise(model, float(up[-1]), steps, end_at_step)
    info: dict[str, Any] = {}

    def function(
        m: Denoiser,
        x: Any,
        s: Any,
        extra_args: Any = None,
        callback: Any = None,
        disable: Any = None,
    ) -> Any:
        z, found = unsample(
            m, x, s, method, extra_args, callback, disable, fixed_point_iters, tol or None
        )
        info.update(found)
        return z

    samples = guide(model, positive, negative, cfg, latent_image, function, up)
    info["clean"] = latent_image["samples"]
    return {**latent_image, "samples": samples, STATE_KEY: info}


def _check_below_pure_noise(model: Any, sigma: float, steps: int, end_at_step: int) -> None:
    """Refuse to climb to sigma 1 on a rectified-flow model (model_sampling CONST: SD3, Flux):
    ComfyUI hands the result on as x / (1 - sigma) (CONST.inverse_noise_scaling), which is
    infinite there, and every later node would see NaN. One step goes there whatever
    end_at_step (`inversion_sigmas` keeps one step), so the advice names steps then."""
    const = getattr(sys.modules.get("comfy.model_sampling"), "CONST", None)
    if const is None or sigma < 1.0:
        return
    if isinstance(model.get_model_object("model_sampling"), const):
        what, fix = (
            (f"end_at_step={end_at_step}", "use end_at_step >= 1")
            if steps > 1
            else (f"steps={steps} (its one step)", "use steps >= 2 and end_at_step >= 1")
        )
        raise ValueError(
            f"Unsampler: {what} climbs to sigma {sigma:g}, pure noise on a rectified-flow "
            "model (SD3, Flux), which ComfyUI's LATENT (x / (1 - sigma)) cannot hold; " + fix
        )


def run_resampler(
    model: Any, cfg: float, positive: Any, negative: Any, latent: dict[str, Any], *, guide: Guide
) -> dict[str, Any]:
    """The Resampler node: the Unsampler's latent sampled back by the same method (DDIM for
    the DDIM methods), the same schedule, under the given guidance. Outside a noise mask the
    Unsampler's input is kept (the model sees it there, as it did while unsampling).

    Parameters
    ----------
    model : ModelPatcher
        ComfyUI's MODEL.
    cfg : float
        Classifier-free guidance scale (the Unsampler's, for the latent back).
    positive, negative : CONDITIONING
        As in KSampler.
    latent : LATENT
        The Unsampler's output.
    guide : callable
        Runs a sampler function under ComfyUI's CFG (given by `ddim_comfyui.nodes`).

    Returns
    -------
    dict
        The LATENT back.

    Raises
    ------
    ValueError
        A latent that did not come from the Unsampler, or whose samples changed batch size or
        size since (LatentUpscale, RepeatLatentBatch and the like keep the Unsampler's state).

    Examples
    --------
    >>> run_resampler.__name__  # it runs inside ComfyUI, given `guide` by nodes.py
    'run_resampler'
    """
    info = latent.get(STATE_KEY)
    if not isinstance(info, dict) or not {"method", "clean"} <= info.keys():
        raise ValueError("the Resampler takes the latent an Unsampler (ddim-core) returned")
    _check_same_size(latent["samples"], info["clean"])

    def function(
        m: Denoiser,
        x: Any,
        s: Any,
        extra_args: Any = None,
        callback: Any = None,
        disable: Any = None,
    ) -> Any:
        return resample(m, x, info, extra_args, callback, disable)

    kept = {**latent, "samples": info["clean"]}
    samples = guide(
        model, positive, negative, cfg, kept, function, info["sigmas"], start=latent["samples"]
    )
    out = {k: v for k, v in latent.items() if k != STATE_KEY}
    return {**out, "samples": samples}


def _check_same_size(samples: Any, clean: Any) -> None:
    """Refuse samples of another batch size or width and height than the Unsampler's input."""
    got, want = tuple(samples.shape), tuple(clean.shape)
    if got[:1] + got[2:] != want[:1] + want[2:]:
        raise ValueError(
            f"the Resampler's latent has samples of shape {got}, but the Unsampler (ddim-core) "
            f"inverted a latent of shape {want}; resample it before resizing or rebatching"
        )


def _edict_sampler(p: float) -> tuple[Any, dict[str, Any]]:
    return sample_edict_core, {"p": p}


def _bdia_sampler(gamma: float) -> tuple[Any, dict[str, Any]]:
    return sample_bdia_core, {"gamma": gamma}


def _belm_sampler() -> tuple[Any, dict[str, Any]]:
    return sample_belm_core, {}


def _nodes() -> tuple[Any, ...]:
    from ddim_core.config import TIMESTEP_SPACINGS

    from .core import CATEGORY, STEPS_OFFSET, NodeSpec, Param

    model = Param("model", "MODEL", tooltip="The model to invert with (its own schedule).")
    positive = Param("positive", "CONDITIONING", tooltip="The prompt's conditioning.")
    negative = Param("negative", "CONDITIONING", tooltip="The negative prompt's conditioning.")
    cfg = Param("cfg", "FLOAT", 1.0, 0.0, 100.0, 0.1, tooltip="Classifier-free guidance scale.")
    return (
        NodeSpec(
            "DDIMCoreEDICTSampler",
            "EDICT Sampler (ddim-core)",
            f"{CATEGORY}/samplers",
            (
                Param(
                    "p",
                    "FLOAT",
                    0.93,
                    0.5,
                    1.0,
                    0.01,
                    tooltip="EDICT's mixing weight (0.93 in the paper).",
                ),
            ),
            "SAMPLER",
            "EDICT (Wallace et al. 2023) from noise: two coupled sequences, 2 model calls per "
            "step; exactly invertible (Unsampler with method edict).",
            _edict_sampler,
        ),
        NodeSpec(
            "DDIMCoreBDIASampler",
            "BDIA Sampler (ddim-core)",
            f"{CATEGORY}/samplers",
            (
                Param(
                    "gamma",
                    "FLOAT",
                    1.0,
                    0.01,
                    1.0,
                    0.01,
                    tooltip="BDIA's gamma (1: the most accurate, and stable to invert).",
                ),
            ),
            "SAMPLER",
            "BDIA-DDIM (Zhang et al. 2023) from noise: 1 model call per step; exactly "
            "invertible (Unsampler with method bdia).",
            _bdia_sampler,
        ),
        NodeSpec(
            "DDIMCoreBELMSampler",
            "BELM Sampler (ddim-core)",
            f"{CATEGORY}/samplers",
            (),
            "SAMPLER",
            "O-BELM (Wang et al. 2024) from noise: second order, 1 model call per step; exactly "
            "invertible (Unsampler with method belm).",
            _belm_sampler,
        ),
        NodeSpec(
            "DDIMCoreUnsampler",
            "Unsampler (ddim-core)",
            f"{CATEGORY}/inversion",
            (
                model,
                Param(
                    "steps",
                    "INT",
                    20,
                    1,
                    10000,
                    1,
                    tooltip="Steps of the DDIM schedule; at most the model's training "
                    "timesteps (1000 for SD): more run that many, as DDIM Schedule's.",
                ),
                Param(
                    "end_at_step",
                    "INT",
                    0,
                    0,
                    10000,
                    1,
                    tooltip="Stop noising at the level where sampling starts at this step "
                    "(KSamplerAdvanced's start_at_step; its simple scheduler is trailing "
                    "spacing only where steps divide 1000); 0: all the way to pure noise; "
                    "steps or more: one step, as ComfyUI_Noise's (a sampler starting at step "
                    "steps leaves that latent as is: use end_at_step below steps).",
                ),
                cfg,
                Param(
                    "method",
                    "COMBO",
                    "ddim_exact",
                    options=METHODS,
                    tooltip="ddim_exact: DDIM inversion solved exactly, DDIM sampling returns "
                    "the latent; ddim_plain: one model call per step, inexact; edict, bdia, "
                    "belm: exact by construction, sample back with the Resampler.",
                ),
                Param(
                    "spacing",
                    "COMBO",
                    "trailing",
                    options=TIMESTEP_SPACINGS,
                    tooltip="The DDIM schedule's timestep spacing (as DDIM Schedule's).",
                ),
                positive,
                negative,
                Param("latent_image", "LATENT", tooltip="The clean latent to invert."),
                Param(
                    "fixed_point_iters",
                    "INT",
                    EXACT_ITERS,
                    0,
                    100,
                    1,
                    tooltip="ddim_exact: refinements per step (at most this + 1 model calls "
                    "per step).",
                ),
                Param(
                    "tol",
                    "FLOAT",
                    EXACT_TOL,
                    0.0,
                    1.0,
                    1e-6,
                    tooltip="ddim_exact: stop refining a step once its error is at most tol.",
                ),
                STEPS_OFFSET,  # last: saved workflows keep their widget values in order
            ),
            "LATENT",
            "Invert a latent to the noise a sampler turns back into it (as ComfyUI_Noise's "
            "Unsampler, exact by default). Sample it back with the Resampler, or for "
            "ddim_exact with any DDIM sampler on the same schedule.",
            run_unsampler,
        ),
        NodeSpec(
            "DDIMCoreResampler",
            "Resampler (ddim-core)",
            f"{CATEGORY}/inversion",
            (
                Param("model", "MODEL", tooltip="The model to sample back with (the Unsampler's)."),
                cfg,
                positive,
                negative,
                Param("latent", "LATENT", tooltip="The Unsampler's output."),
            ),
            "LATENT",
            "Sample an Unsampler's latent back by the method and schedule it was inverted with "
            "(edit the conditioning to edit the image).",
            run_resampler,
        ),
    )


NODES = _nodes()
