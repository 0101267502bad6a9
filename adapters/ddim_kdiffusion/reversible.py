"""k-diffusion-style samplers that invert exactly: EDICT, BDIA and BELM over sigma lists.

    state = sample_bdia_inverse(model, x0, sigmas.flip(0))   # ascending: 0 .. sigma_max
    x0_again = sample_bdia(model, state, sigmas)               # descending; == x0

k-diffusion's conventions: `model(x, sigma * s_in, **extra_args)` returns the denoised x0 from
VE latents, callback dicts (x, i, sigma, sigma_hat, denoised), tqdm's `disable`, no autograd
graph (torch tensors run under torch.no_grad()). The maths is `ddim_core.reversible`'s: the
sigma list becomes a plan over its own levels (abar = 1 / (1 + sigma^2), one timestep per
level) and the denoiser an eps model, so the adapter only translates. `sample_*` take a plain
x_T (x * sigma_max) or the state an inverse returned (a tuple of VE latents, which remembers
its dtype); the inverses return that state.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

import ddim_core as dc
from ddim_core import backends, reversible
from ddim_core.sampling import StepInfo

from .samplers import _check_call, _denoised, _levels

Array = Any
Denoiser = Callable[..., Array]
Callback = Callable[[dict[str, Any]], Any] | None


def sample_edict(
    model: Denoiser,
    x: Array,
    sigmas: Array,
    extra_args: dict[str, Any] | None = None,
    callback: Callback = None,
    disable: bool | None = None,
    p: float = 0.93,
    precision: str | None = None,
) -> Array:
    """EDICT (Wallace et al. 2023) over descending sigmas; 2 model calls per step.

    Parameters
    ----------
    model : callable
        k-diffusion's denoiser, ``model(x, sigma * s_in, **extra_args) -> x0``.
    x : array or tuple
        x_T (VE latents, e.g. noise * sigma_max), or the state an inverse returned.
    sigmas : array
        Descending distinct sigmas (ending in 0 or the smallest level); a state's own,
        flipped. One sigma makes no step (x is returned).
    extra_args : dict, optional
        Passed to the model.
    callback : callable, optional
        Called with k-diffusion's dict (x, i, sigma, sigma_hat, denoised) per step; sigma is
        an element of `sigmas`.
    disable : bool, optional
        Disable the progress bar.
    p : float, default 0.93
        EDICT's mixing weight.
    precision : {None, "float32", "float64"}, optional
        The arithmetic dtype (`ddim_core.reversible`).

    Returns
    -------
    array
        x_0 (VE latents at the last sigma).

    Raises
    ------
    ValueError
        A repeated sigma, two sigmas too far apart for one step, or a state made by another
        method, parameter or sigma list.
    TypeError
        A model or callback that is not callable, extra_args not a mapping, x not floating.

    Examples
    --------
    >>> import numpy as np
    >>> sigmas = np.array([2.0, 1.0, 0.5, 0.0])
    >>> def denoiser(x, sigma):
    ...     return x / (1.0 + sigma[:, None] ** 2)
    >>> x0 = np.array([[0.3, -0.2]])
    >>> state = sample_edict_inverse(denoiser, x0, sigmas[::-1].copy(), disable=True)
    >>> bool(np.abs(sample_edict(denoiser, state, sigmas, disable=True) - x0).max() < 1e-12)
    True
    """
    return _sample("edict", model, x, sigmas, extra_args, callback, disable, precision, p=p)


def sample_edict_inverse(
    model: Denoiser,
    x: Array,
    sigmas: Array,
    extra_args: dict[str, Any] | None = None,
    callback: Callback = None,
    disable: bool | None = None,
    p: float = 0.93,
    precision: str | None = None,
) -> reversible.State | Array:
    """EDICT inversion over ascending sigmas: the state (x_T, y_T) for `sample_edict`.

    Parameters
    ----------
    model : callable
        k-diffusion's denoiser, ``model(x, sigma * s_in, **extra_args) -> x0``.
    x : array
        The clean latent (at the first sigma).
    sigmas : array
        Ascending distinct sigmas (e.g. `get_sigmas_ddim(...)` reversed). One sigma makes no
        step (x itself is returned).
    extra_args : dict, optional
        Passed to the model.
    callback : callable, optional
        Called with k-diffusion's dict (x, i, sigma, sigma_hat, denoised) per step; sigma is
        an element of `sigmas`.
    disable : bool, optional
        Disable the progress bar.
    p : float, default 0.93
        EDICT's mixing weight.
    precision : {None, "float32", "float64"}, optional
        The arithmetic dtype; the state is returned in it.

    Returns
    -------
    ddim_core.reversible.State
        (x_T, y_T) in VE latents, for the matching sampler (x itself for one sigma).

    Raises
    ------
    ValueError
        A repeated sigma, two sigmas too far apart for one step, or sigmas that are not
        ascending.
    TypeError
        A model or callback that is not callable, extra_args not a mapping, x not floating.

    Examples
    --------
    >>> import numpy as np
    >>> def denoiser(x, sigma):
    ...     return x / (1.0 + sigma[:, None] ** 2)
    >>> up = np.array([0.0, 0.5, 1.0])
    >>> state = sample_edict_inverse(denoiser, np.ones((1, 2)), up, disable=True)
    >>> len(state)
    2
    """
    return _invert("edict", model, x, sigmas, extra_args, callback, disable, precision, p=p)


def sample_bdia(
    model: Denoiser,
    x: Array,
    sigmas: Array,
    extra_args: dict[str, Any] | None = None,
    callback: Callback = None,
    disable: bool | None = None,
    gamma: float = 1.0,
    precision: str | None = None,
) -> Array:
    """BDIA-DDIM (Zhang et al. 2023) over descending sigmas; 1 model call per step.

    Parameters
    ----------
    model : callable
        k-diffusion's denoiser, ``model(x, sigma * s_in, **extra_args) -> x0``.
    x : array or tuple
        x_T (VE latents, e.g. noise * sigma_max), or the state an inverse returned.
    sigmas : array
        Descending distinct sigmas (ending in 0 or the smallest level); a state's own,
        flipped. One sigma makes no step (x is returned).
    extra_args : dict, optional
        Passed to the model.
    callback : callable, optional
        Called with k-diffusion's dict (x, i, sigma, sigma_hat, denoised) per step; sigma is
        an element of `sigmas`.
    disable : bool, optional
        Disable the progress bar.
    gamma : float, default 1.0
        BDIA's gamma.
    precision : {None, "float32", "float64"}, optional
        The arithmetic dtype (`ddim_core.reversible`).

    Returns
    -------
    array
        x_0 (VE latents at the last sigma).

    Raises
    ------
    ValueError
        A repeated sigma, two sigmas too far apart for one step, or a state made by another
        method, parameter or sigma list.
    TypeError
        A model or callback that is not callable, extra_args not a mapping, x not floating.

    Examples
    --------
    >>> import numpy as np
    >>> sigmas = np.array([2.0, 1.0, 0.5, 0.0])
    >>> def denoiser(x, sigma):
    ...     return x / (1.0 + sigma[:, None] ** 2)
    >>> x0 = np.array([[0.3, -0.2]])
    >>> state = sample_bdia_inverse(denoiser, x0, sigmas[::-1].copy(), disable=True)
    >>> bool(np.abs(sample_bdia(denoiser, state, sigmas, disable=True) - x0).max() < 1e-12)
    True
    """
    return _sample("bdia", model, x, sigmas, extra_args, callback, disable, precision, gamma=gamma)


def sample_bdia_inverse(
    model: Denoiser,
    x: Array,
    sigmas: Array,
    extra_args: dict[str, Any] | None = None,
    callback: Callback = None,
    disable: bool | None = None,
    gamma: float = 1.0,
    precision: str | None = None,
) -> reversible.State | Array:
    """BDIA inversion over ascending sigmas: the state (x_T, x at the next sigma).

    Parameters
    ----------
    model : callable
        k-diffusion's denoiser, ``model(x, sigma * s_in, **extra_args) -> x0``.
    x : array
        The clean latent (at the first sigma).
    sigmas : array
        Ascending distinct sigmas (e.g. `get_sigmas_ddim(...)` reversed). One sigma makes no
        step (x itself is returned).
    extra_args : dict, optional
        Passed to the model.
    callback : callable, optional
        Called with k-diffusion's dict (x, i, sigma, sigma_hat, denoised) per step; sigma is
        an element of `sigmas`.
    disable : bool, optional
        Disable the progress bar.
    gamma : float, default 1.0
        BDIA's gamma.
    precision : {None, "float32", "float64"}, optional
        The arithmetic dtype; the state is returned in it.

    Returns
    -------
    ddim_core.reversible.State
        (x_T, x at the next sigma) in VE latents, for the matching sampler (x itself for
        one sigma).

    Raises
    ------
    ValueError
        A repeated sigma, two sigmas too far apart for one step, or sigmas that are not
        ascending.
    TypeError
        A model or callback that is not callable, extra_args not a mapping, x not floating.

    Examples
    --------
    >>> import numpy as np
    >>> def denoiser(x, sigma):
    ...     return x / (1.0 + sigma[:, None] ** 2)
    >>> up = np.array([0.0, 0.5, 1.0])
    >>> state = sample_bdia_inverse(denoiser, np.ones((1, 2)), up, disable=True)
    >>> len(state)
    2
    """
    return _invert("bdia", model, x, sigmas, extra_args, callback, disable, precision, gamma=gamma)


def sample_belm(
    model: Denoiser,
    x: Array,
    sigmas: Array,
    extra_args: dict[str, Any] | None = None,
    callback: Callback = None,
    disable: bool | None = None,
    precision: str | None = None,
) -> Array:
    """O-BELM (Wang et al. 2024) over descending sigmas; 1 model call per step.

    Parameters
    ----------
    model : callable
        k-diffusion's denoiser, ``model(x, sigma * s_in, **extra_args) -> x0``.
    x : array or tuple
        x_T (VE latents, e.g. noise * sigma_max), or the state an inverse returned.
    sigmas : array
        Descending distinct sigmas (ending in 0 or the smallest level); a state's own,
        flipped. One sigma makes no step (x is returned).
    extra_args : dict, optional
        Passed to the model.
    callback : callable, optional
        Called with k-diffusion's dict (x, i, sigma, sigma_hat, denoised) per step; sigma is
        an element of `sigmas`.
    disable : bool, optional
        Disable the progress bar.
    precision : {None, "float32", "float64"}, optional
        The arithmetic dtype (`ddim_core.reversible`).

    Returns
    -------
    array
        x_0 (VE latents at the last sigma).

    Raises
    ------
    ValueError
        A repeated sigma, two sigmas too far apart for one step, or a state made by another
        method, parameter or sigma list.
    TypeError
        A model or callback that is not callable, extra_args not a mapping, x not floating.

    Examples
    --------
    >>> import numpy as np
    >>> sigmas = np.array([2.0, 1.0, 0.5, 0.0])
    >>> def denoiser(x, sigma):
    ...     return x / (1.0 + sigma[:, None] ** 2)
    >>> x0 = np.array([[0.3, -0.2]])
    >>> state = sample_belm_inverse(denoiser, x0, sigmas[::-1].copy(), disable=True)
    >>> bool(np.abs(sample_belm(denoiser, state, sigmas, disable=True) - x0).max() < 1e-12)
    True
    """
    return _sample("belm", model, x, sigmas, extra_args, callback, disable, precision)


def sample_belm_inverse(
    model: Denoiser,
    x: Array,
    sigmas: Array,
    extra_args: dict[str, Any] | None = None,
    callback: Callback = None,
    disable: bool | None = None,
    precision: str | None = None,
) -> reversible.State | Array:
    """O-BELM inversion over ascending sigmas: the state (x_T, x at the next sigma).

    Parameters
    ----------
    model : callable
        k-diffusion's denoiser, ``model(x, sigma * s_in, **extra_args) -> x0``.
    x : array
        The clean latent (at the first sigma).
    sigmas : array
        Ascending distinct sigmas (e.g. `get_sigmas_ddim(...)` reversed). One sigma makes no
        step (x itself is returned).
    extra_args : dict, optional
        Passed to the model.
    callback : callable, optional
        Called with k-diffusion's dict (x, i, sigma, sigma_hat, denoised) per step; sigma is
        an element of `sigmas`.
    disable : bool, optional
        Disable the progress bar.
    precision : {None, "float32", "float64"}, optional
        The arithmetic dtype; the state is returned in it.

    Returns
    -------
    ddim_core.reversible.State
        (x_T, x at the next sigma) in VE latents, for the matching sampler (x itself for
        one sigma).

    Raises
    ------
    ValueError
        A repeated sigma, two sigmas too far apart for one step, or sigmas that are not
        ascending.
    TypeError
        A model or callback that is not callable, extra_args not a mapping, x not floating.

    Examples
    --------
    >>> import numpy as np
    >>> def denoiser(x, sigma):
    ...     return x / (1.0 + sigma[:, None] ** 2)
    >>> up = np.array([0.0, 0.5, 1.0])
    >>> state = sample_belm_inverse(denoiser, np.ones((1, 2)), up, disable=True)
    >>> len(state)
    2
    """
    return _invert("belm", model, x, sigmas, extra_args, callback, disable, precision)


# --- translation -----------------------------------------------------------------------------


class _Levels:
    """A descending sigma list as a ddim_core plan: level k (sigma_k) is timestep N - k of a
    schedule whose alpha_bar table holds the levels (index 0: the final level when it is not
    clean); the final level is abar = 1 (set_alpha_to_one) when the last sigma is 0."""

    def __init__(self, sigmas: list[float]) -> None:
        self.sigmas = sigmas
        n = len(sigmas) - 1
        ab = 1.0 / (1.0 + np.asarray(sigmas) ** 2)
        clean = sigmas[-1] == 0.0
        table = ab[:-1][::-1] if clean else ab[::-1]  # ascending t: the least noisy first
        self.config = _config(tuple(table.tolist()), clean)
        first = len(table) - 1
        self.timesteps = tuple(range(first, first - n, -1))
        self.scales = np.sqrt(ab).tolist()  # VP = VE * sqrt(abar), per level

    def plan(self) -> dc.Plan:
        return dc.make_plan(self.config, timesteps=self.timesteps)

    def level(self, t: int) -> int:
        """The level index of timestep t."""
        return self.timesteps[0] - t


@functools.lru_cache(maxsize=64)
def _config(table: tuple[float, ...], clean: bool) -> dc.DDIMConfig:
    ab = np.asarray(table)
    betas = 1.0 - ab / np.concatenate([[1.0], ab[:-1]])
    return dc.DDIMConfig(
        num_train_timesteps=len(table),
        trained_betas=tuple(betas.tolist()),
        set_alpha_to_one=clean,
        clip_sample=False,
        prediction_type="epsilon",
    )


def _eps_model(
    model: Denoiser, levels: _Levels, extra_args: dict[str, Any], x_like: Array, dtype: Any
) -> Callable[[Array, int], Array]:
    """The denoiser as ddim_core's eps model on VP samples: eps = (x_ve - D(x_ve, sigma)) /
    sigma at the timestep's level; sigma * s_in in the samples' dtype, as the latents. eps is
    formed in the work dtype (float32 for half precision, as `sample_ddim`'s steps), from
    the VE point the model sees rounded to the samples' dtype."""
    xp = backends.namespace(x=x_like)
    s_in = xp.ones((x_like.shape[0],), dtype=dtype, device=backends.device(x_like))

    def eps(x_vp: Array, t: int) -> Array:
        k = levels.level(t)
        sigma = levels.sigmas[k]
        (x_w,) = backends.to_work_dtype(xp, x_vp)
        x_ve = x_w / levels.scales[k]
        seen = backends.cast(xp, x_ve, x_vp.dtype)
        denoised = _denoised(model, seen, s_in * sigma, extra_args)  # shaped like x, checked
        (denoised_w,) = backends.to_work_dtype(xp, denoised)
        return (x_ve - denoised_w) / sigma

    return eps


def _report(
    levels: _Levels, callback: Callback, inverse: bool, start: Array, sigmas: Array
) -> Callable[[StepInfo], Any] | None:
    """k-diffusion's callback dict from a StepInfo, as its samplers call it before each
    update: x the step's input (VE; `start` for the first step reported), sigma its level when
    sampling (sigmas[i]), the level reached when inverting (as `sample_ddim_inverse`), an
    element of the caller's `sigmas` as k-diffusion's (not a Python float); denoised the
    model's x0 of the step."""
    if callback is None:
        return None
    n = len(levels.sigmas) - 1
    current = [start]

    def report(info: StepInfo) -> None:
        reached = min(levels.level(info.timestep) if inverse else info.step_index + 1, n)
        sigma = sigmas[n - reached if inverse else info.step_index]  # inverting: ascending
        callback(
            {
                "x": current[0],
                "i": info.step_index,
                "sigma": sigma,
                "sigma_hat": sigma,
                "denoised": info.pred_original_sample,
            }
        )
        current[0] = info.sample / levels.scales[reached]

    return report


def _sample(
    name: str,
    model: Denoiser,
    x: Array,
    sigmas: Array,
    extra_args: dict[str, Any] | None,
    callback: Callback,
    disable: bool | None,
    precision: str | None,
    **options: Any,
) -> Array:
    state_given, given = isinstance(x, tuple), None
    if state_given and len(x) != 2:
        raise ValueError(f"sample_{name}: a state is a pair of arrays, got {len(x)} items")
    if state_given:
        for j, array in enumerate(x):
            if array is None:
                raise TypeError(f"sample_{name}: x[{j}] must be an array, got None")
        backends.namespace(**{"x[0]": x[0], "x[1]": x[1]})  # one library
        # as the core refuses it: scaling into VP would cast the second to the first's dtype
        reversible._check_state_arrays(x[0], x[1], f"sample_{name}: ")
    extra = _check_call(model, x[0] if state_given else x, extra_args, callback)
    descending = _stepped(sigmas, name, ascending=False)
    if len(descending) < 2:
        if state_given:
            raise ValueError(f"sample_{name}: a state needs at least 2 sigmas, got {len(sigmas)}")
        return x  # no step, as k-diffusion's samplers
    levels = _Levels(descending)
    if state_given:
        first, second = x
        second_scale = levels.scales[0 if name == "edict" else 1]
        dtype = getattr(x, "dtype", first.dtype)
        lo, origin = getattr(x, "lo", None), _core_origin(name, x, levels, options)
        kept = reversible.State(first, second, dtype, lo, origin)  # sample_* checks the origin
        vp = x.vp if isinstance(x, _State) else None  # the inverse's own, as returned
        if vp is not None and not _unwritten(
            x, vp.scaled(levels.scales[0], second_scale, divide=True)
        ):
            vp = None  # its arrays were written since: start from them as they are
        if vp is None:
            state: Any = kept.scaled(levels.scales[0], second_scale)  # compensated
        else:
            state = reversible.State(vp[0], vp[1], vp.dtype, vp.lo, origin)
            given = x.given
        like, start = first, (first if name == "edict" else second)
        start = backends.cast(backends.namespace(x=start), start, dtype)  # as later steps' x
    else:
        state, like, dtype, start = x * levels.scales[0], x, x.dtype, x
    sample = getattr(reversible, f"sample_{name}")
    with backends.no_grad(like):  # as k-diffusion's samplers: no autograd graph
        x0 = sample(
            _eps_model(model, levels, extra, like, dtype),
            state,
            levels.config,
            timesteps=levels.timesteps,
            callback=_report(levels, callback, False, start, sigmas),
            progress=_shows_progress(disable),
            precision=precision,
            **options,
        )
        return _to_ve(x0, levels.scales[-1], given)


def _invert(
    name: str,
    model: Denoiser,
    x: Array,
    sigmas: Array,
    extra_args: dict[str, Any] | None,
    callback: Callback,
    disable: bool | None,
    precision: str | None,
    **options: Any,
) -> reversible.State | Array:
    extra = _check_call(model, x, extra_args, callback)
    ascending = _stepped(sigmas, name, ascending=True)
    if len(ascending) < 2:
        return x  # no step: sample_* over the same sigma returns x too
    levels = _Levels(ascending[::-1])
    invert = getattr(reversible, f"invert_{name}")
    with backends.no_grad(x):  # as k-diffusion's samplers: no autograd graph
        x_vp, given = x * levels.scales[-1], None
        if levels.scales[-1] != 1.0:  # x * scale rounds: keep x to return it exactly
            given = (backends.namespace(x=x).asarray(x, copy=True), x_vp)
        state: reversible.State = invert(
            _eps_model(model, levels, extra, x, x.dtype),
            x_vp,
            levels.config,
            timesteps=levels.timesteps,
            callback=_report(levels, callback, True, x, sigmas),
            progress=_shows_progress(disable),
            precision=precision,
            **options,
        )
        second_scale = levels.scales[0 if name == "edict" else 1]
        ve = state.scaled(levels.scales[0], second_scale, divide=True)  # compensated
    option = None if state.origin is None else state.origin[2]
    origin = (name, _key(levels.sigmas), option, levels.config)
    return _State(ve[0], ve[1], ve.dtype, ve.lo, origin, vp=state, given=given)


def _to_ve(x0: Array, scale: float, given: tuple[Array, Array] | None) -> Array:
    """x_0 from VP to VE latents: x0 / scale, or the inverse's x_0 where the core returned
    the VP x_0 the inverse started from (`given`: the two). x * scale rounds, several x to
    one VP value (the scale is below 1), so dividing missed x_0 by an ulp in a few percent of
    the words, in every dtype; only scale 1 (sigma 0 at x_0) is exact."""
    ve = x0 / scale
    if given is None or given[1].shape != x0.shape or given[1].dtype != x0.dtype:
        return ve
    xp = backends.namespace(x=x0)
    return xp.where(x0 == given[1], given[0], ve)  # elementwise: no host read


def resumed(state: reversible.State, inverse_state: Any) -> reversible.State:
    """`state`, rebuilt from the arrays an inverse returned (ComfyUI's Resampler rebuilds it
    from a LATENT), with that inverse's own VP state, which `sample_*` resume from while the
    arrays are still the inverse's: scaled back from the arrays alone, BDIA's round trip misses
    x_0 by tens of ulps under guidance. The inverse's x_0 comes along too, returned where the
    core lands on it: over sigmas starting above 0, x_0 scaled to VP and back missed it by an
    ulp.

    Parameters
    ----------
    state : ddim_core.reversible.State
        The state to sample from.
    inverse_state : object
        What `sample_*_inverse` returned (anything else: `state` as it is).

    Returns
    -------
    ddim_core.reversible.State

    Examples
    --------
    >>> import numpy as np, ddim_core as dc
    >>> from ddim_kdiffusion import get_sigmas_ddim
    >>> sigmas = get_sigmas_ddim(dc.DDIMConfig(clip_sample=False), 5, xp=np)
    >>> def denoiser(x, sigma):
    ...     return 0.5 * x / (1.0 + sigma[:, None] ** 2)
    >>> x0 = np.ones((1, 2))
    >>> inverse = sample_bdia_inverse(denoiser, x0, sigmas[::-1].copy(), disable=True)
    >>> rebuilt = dc.reversible.State(inverse[0].copy(), inverse[1], inverse.dtype, inverse.lo)
    >>> bool(np.array_equal(sample_bdia(denoiser, resumed(rebuilt, inverse), sigmas), x0))
    True
    """
    vp = getattr(inverse_state, "vp", None)
    if vp is None:
        return state
    given = getattr(inverse_state, "given", None)
    return _State(state[0], state[1], state.dtype, state.lo, state.origin, vp=vp, given=given)


def _unwritten(given: reversible.State, ve: reversible.State) -> bool:
    """Whether the inverse's VE arrays are as `ve`, scaled again from its VP state, gives them:
    an in-place edit since (a user's, ComfyUI's noise mask) is then taken, not the kept state.
    Under jax.jit nothing can be read: the arrays are taken (jitted loops are not exact to the
    bit anyway, docs/inversion-methods.md)."""
    if (given.lo is None) != (ve.lo is None) or backends.jax_traced(given[0]):
        return False
    pairs = [(given[0], ve[0]), (given[1], ve[1]), *zip(given.lo or (), ve.lo or (), strict=True)]
    xp = backends.namespace(x=given[0])
    return all(bool(xp.all(a == b)) for a, b in pairs)  # a host read, once per loop


class _State(reversible.State):
    """The inverses' state: the VE arrays (and low words), and `vp`, the core's state they
    were scaled from, which `sample_*` resume from. Scaled back, the VE state reproduces it
    only to about 2^-2p of its size, and BDIA's states hold many words exactly halfway between
    two floats (hi + lo a rounding tie), where that error moves hi by an ulp and the model
    sees another input than the inverse saw: the round trip missed x_0 by tens of ulps under
    guidance, in float32 and float64. `given`: the inverse's x_0 (a copy) and the VP x_0 it
    started the core from, for sigma lists whose first sigma is not 0 (`_to_ve`)."""

    vp: reversible.State | None
    given: tuple[Array, Array] | None

    def __new__(
        cls,
        first: Array,
        second: Array,
        dtype: Any,
        lo: tuple[Array, Array] | None = None,
        origin: Any = None,
        vp: reversible.State | None = None,
        given: tuple[Array, Array] | None = None,
    ) -> _State:
        state: _State = super().__new__(cls, first, second, dtype, lo, origin)  # type: ignore[assignment]
        state.vp, state.given = vp, given
        backends.register_pytree(_State, _flatten, _unflatten)  # jax imported since
        return state

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle (and copy) with the core's state and the inverse's x_0."""
        args = (self[0], self[1], self.dtype, self.lo, self.origin, self.vp, self.given)
        return (_State, args)


def _flatten(state: _State) -> tuple[tuple[Any, ...], tuple[Any, Any]]:
    return (state[0], state[1], state.lo, state.vp, state.given), (state.dtype, state.origin)


def _unflatten(aux: tuple[Any, Any], children: Any) -> _State:
    """A _State of `children` as they are: jax passes tracers or placeholders, not arrays to
    check (so not through State's checks)."""
    state: _State = tuple.__new__(_State, (children[0], children[1]))
    state.dtype, state.origin = aux
    state.lo, state.vp, state.given = children[2], children[3], children[4]
    return state


# As the core's State (a registration does not cover subclasses: unregistered, jax.device_put
# refused the inverses' states and jax.jit stacked them into one array): the arrays, low words,
# the core's state and the inverse's x_0 are the leaves; dtype and origin static.
backends.register_pytree(_State, _flatten, _unflatten)


def _stepped(sigmas: Array, name: str, *, ascending: bool) -> list[float]:
    """`_levels` as distinct noise levels in float64, abar = 1 / (1 + sigma^2): a repeated
    sigma (a zero-length step) has no place in a two-step reversible sampler, and neither has
    a positive sigma whose abar rounds to 1 (below about 1.5e-8: the clean level, or two
    sigmas that are one level)."""
    levels = _levels(sigmas, ascending=ascending)
    ab = (1.0 / (1.0 + np.asarray(levels) ** 2)).tolist()
    where = f"sample_{name}{'_inverse' if ascending else ''}"
    for i, (s, a) in enumerate(zip(levels, ab, strict=True)):
        if s > 0 and a == 1.0:
            raise ValueError(
                f"{where}: sigmas[{i}] = {s} is alpha_bar = 1 / (1 + sigma^2) = 1 in float64, "
                "the clean level; use 0 (or a sigma above 1.5e-8)"
            )
        if i and ab[i - 1] == a:
            raise ValueError(
                f"{where} needs distinct sigmas, got sigmas[{i - 1}] = {levels[i - 1]} and "
                f"sigmas[{i}] = {s}, one level in float64; drop the repeat"
            )
        if i and 1.0 - min(a, ab[i - 1]) / max(a, ab[i - 1]) == 1.0:
            raise ValueError(
                f"{where}: sigmas[{i - 1}] = {levels[i - 1]} and sigmas[{i}] = {s} are too far "
                "apart for one step: the ratio of their alpha_bar = 1 / (1 + sigma^2) rounds "
                "the step's beta to 1 in float64 (it needs a ratio above about 1e-16); put "
                "levels between them"
            )
    return levels


# The adapter's states name the sigma list in their origin (method, key, option), where the
# core's name timesteps: the key is the levels' float64 bits, as the core's Origin holds ints.
# Every sigma list of one length maps to the same timesteps, so the core alone cannot tell a
# state made over other sigmas of that length.


def _key(sigmas: list[float]) -> tuple[int, ...]:
    """The descending levels as exact ints (their float64 bit patterns)."""
    return tuple(np.asarray(sigmas, dtype=np.float64).view(np.int64).tolist())


def _core_origin(
    name: str, state: tuple[Array, Array], levels: _Levels, options: dict[str, Any]
) -> Any:
    """The core's origin for a state given to sample_<name> over `levels` with `options` (p
    or gamma), once it is checked, in this module's terms, to be the state of
    sample_<name>_inverse over those sigmas with that option; None for a state without an
    origin. (The core's own check would name invert_* and the levels' timesteps.)"""
    origin = getattr(state, "origin", None) if isinstance(state, reversible.State) else None
    if origin is None:
        return None
    method, key, made = origin[:3]
    if reversible._names_timesteps(origin):
        raise ValueError(
            f"sample_{name} got a state made by ddim_core.reversible.invert_{method} over "
            f"timesteps {tuple(key)}, not by sample_{name}_inverse over sigmas (its arrays are "
            f"VP samples, not VE latents): sample it with ddim_core.reversible.sample_{method}"
        )
    if tuple(key) != _key(levels.sigmas):
        given = np.asarray(key, dtype=np.int64).view(np.float64)[::-1].tolist()
        raise ValueError(
            f"sample_{name} got a state made by sample_{method}_inverse over other sigmas "
            f"{given}; it returns to x_0 only over those sigmas, flipped, not over "
            f"{levels.sigmas}"
        )
    option = {"edict": "p", "bdia": "gamma"}.get(method)
    own = "" if option is None else f"{option}={made}"
    if method != name:
        raise ValueError(
            f"sample_{name} got a state made by sample_{method}_inverse"
            f"{own and ' with ' + own}; it returns to x_0 only with sample_{method}"
            f"{own and f'({own})'}"
        )
    if option is not None:
        check = reversible._check_p if option == "p" else reversible._check_gamma
        if check(options[option]) != made:
            raise ValueError(
                f"sample_{name} got a state made by sample_{method}_inverse with {own}; it "
                f"returns to x_0 only with sample_{method}({own}), not "
                f"{option}={options[option]}"
            )
    return method, levels.timesteps, made, levels.config  # the core checks the config


def _shows_progress(disable: bool | None) -> bool:
    """tqdm's reading of k-diffusion's `disable` (None: a bar on a terminal only; no tqdm, no
    bar)."""
    if disable or importlib.util.find_spec("tqdm") is None:
        return False
    return disable is False or sys.stderr.isatty()
