"""k-diffusion-style DDIM samplers, computed by ddim_core.

k-diffusion works in variance-exploding coordinates: x_k = x / sqrt(abar), sigma =
sqrt((1 - abar) / abar), and `model(x_k, sigma)` returns the denoised x0. One DDIM transfer
between two levels is the core's (a coefficients.Row at abar = 1 / (1 + sigma^2)),
applied to x_k * sqrt(abar) and scaled back. In these coordinates DDIM with eta = 0 is
k-diffusion's `sample_euler`, and with 0 < eta <= 1 its `sample_euler_ancestral` given the same
noise (the core's sigma_t / sqrt(abar_prev) is its sigma_up, the direction its sigma_down).

The sigma levels are read to the host once per loop (one sync at the start); steps are then
Python-float coefficients times arrays of any backend. Sigma lists are those k-diffusion's (and
ComfyUI's) samplers take: a repeated sigma is a zero-length step, the identity, and a list of
one sigma (or none) makes no step. For torch tensors the samplers run under torch.no_grad(), as
k-diffusion's do; torch is never imported here (a torch tensor means torch is loaded).
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

import ddim_core as dc
from ddim_core import backends, coefficients, implicit, kernels
from ddim_core.coefficients import LevelsKey, Row
from ddim_core.config import TIMESTEP_SPACINGS, _choice, check_int, check_nonnegative
from ddim_core.plugins import standard_normal
from ddim_core.sampling import check_fixed_point, check_tol_used

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
    """DDIM sampling (Song et al. 2021, eq. 12) down descending `sigmas`, with k-diffusion's
    sampler signature.

    A zero-length step (a repeated sigma) is the identity; its model output (which the
    callback gets) serves the next step, which starts from the same sample and level. With
    eta > 0 the noise of each step into a level > 0 is `noise_sampler(sigma, sigma_next) *
    s_noise` (default: torch's global generator for torch tensors, as k-diffusion does); a
    zero-length step draws its noise too and discards it, as k-diffusion's
    sample_euler_ancestral does, so both read one noise stream alike.

    Parameters
    ----------
    model : callable
        ``model(x, sigma * s_in, **extra_args)`` returning the denoised x_0 (k-diffusion's
        convention: VE latents x / sqrt(alpha_bar)).
    x : array
        The starting latent, x_T * sigmas[0] (any array library).
    sigmas : array
        Descending (repeats allowed), ending in 0 or the model's smallest sigma (e.g.
        `get_sigmas_ddim`).
    extra_args : dict, optional
        Passed to the model.
    callback : callable, optional
        Called with a dict ``x, i, sigma, sigma_hat, denoised`` per step.
    disable : bool, optional
        Disable the tqdm progress bar.
    eta : float, default 0.0
        0 equals k-diffusion's `sample_euler`; 0 < eta <= 1 its `sample_euler_ancestral`.
        Above 1 it equals `sample_euler_ancestral` as long as every step's sigma_up stays
        <= sigma_next; a step where k-diffusion clamps sigma_up to sigma_next (DDIM's
        variance would exceed 1 - alpha_bar_prev) is refused before the first model call.
    s_noise : float, default 1.0
        Scale of the added noise.
    noise_sampler : callable, optional
        ``noise_sampler(sigma, sigma_next) -> noise``; default (torch tensors):
        ``torch.randn_like(x)`` from torch's global generator, k-diffusion's default.

    Returns
    -------
    array
        The sample at the last sigma, in x's dtype (k-diffusion's own samplers take the
        dtype of a model or noise that answers in a wider one).

    Raises
    ------
    TypeError
        A model, callback or noise_sampler that is not callable, an x that is not real
        floating, sigmas that are not real numbers (complex or boolean), a model or
        noise_sampler output of another library or device, or not real floating, or
        eta > 0 without a noise_sampler for an x that is not a torch tensor.
    ValueError
        Sigmas that are not 1-D, finite, >= 0 and descending, eta / s_noise < 0, an eta > 1
        too large for a step (above), a 0-d x, or a model or noise_sampler output not
        shaped like x.

    Examples
    --------
    >>> import numpy as np, ddim_core as dc
    >>> config = dc.DDIMConfig(clip_sample=False)
    >>> sigmas = get_sigmas_ddim(config, 10, xp=np)
    >>> def denoiser(x, sigma):  # a model whose data is all zeros
    ...     return np.zeros_like(x)
    >>> x = sample_ddim(denoiser, np.ones((2, 3)) * sigmas[0], sigmas, disable=True)
    >>> float(np.abs(x).max())
    0.0
    """
    extra_args = _check_call(model, x, extra_args, callback)
    levels = _levels(sigmas, ascending=False)
    eta = check_nonnegative("eta", eta)
    s_noise = check_nonnegative("s_noise", s_noise)
    if noise_sampler is not None and not callable(noise_sampler):
        raise TypeError(
            "noise_sampler must be callable as noise_sampler(sigma, sigma_next) -> noise, "
            f"got {noise_sampler!r}"
        )
    if len(levels) < 2:
        return x  # no step
    if eta > 0 and noise_sampler is None:
        noise_sampler = _default_noise_sampler(x)
    rows = _coefficients(levels, eta, inverse=False)
    s_in = _ones_like_batch(x)
    denoised = None  # the model at (x, sigmas[i]), kept over a zero-length step
    with backends.no_grad(x):
        for i in _trange(len(levels) - 1, disable):
            if denoised is None:
                denoised = _denoised(model, x, s_in * levels[i], extra_args)
            _report(callback, x, i, sigmas[i], denoised)
            noise = None
            if eta > 0 and levels[i + 1] > 0:
                assert noise_sampler is not None
                noise = _checked_noise(noise_sampler(sigmas[i], sigmas[i + 1]), x) * s_noise
            if levels[i + 1] == levels[i]:
                continue  # zero-length: x, its level and so the model output stay
            x, denoised = _transfer(x, denoised, rows[i], _SAMPLE, noise), None
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
    *,
    stall: bool | None = None,
) -> Array:
    """DDIM inversion up ascending `sigmas` (may start at 0; repeats allowed).

    Plain inversion (fixed_point_iters = 0, one model call per step) evaluates the model at the
    destination level on the source sample, as diffusers' DDIMInverseScheduler does. With
    k > 0 each step is solved implicitly (find y whose forward DDIM step lands on the source)
    by `ddim_core.implicit`, as `ddim_core.invert` does: the step from a warm start, then k
    refinements, 1 + k model calls per step, fewer once the largest residual is <= tol. The
    residual is measured on the VP sample (x * sqrt(abar) = x / sqrt(1 + sigma^2)), as
    ddim_core.invert measures it, so a tol means the same in both. A zero-length step is the
    identity (one model call, for the callback). Half precision is computed in float32 and
    rounded once per step to x's dtype, which the model sees (the exact solve's iterates, each
    rounded once); the exact solve's residual is then measured in float32 against the
    unrounded target, where ddim_core.invert measures its forward step rounded to x's dtype.

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
        Refinements per step for the exact solve (1 + k model calls per step).
    tol : float, optional
        Stop a step's solve once its residual is <= tol; only with fixed_point_iters >= 1
        (as in `ddim_core.invert`).
    stall : bool, optional
        With tol, also stop a step whose residual has stalled above tol
        (`ddim_core.implicit.solve_step`): for a model computed in float16 / bfloat16, whose
        output's rounding keeps the residual above a float32 tol. None (default): on for a
        float16 / bfloat16 `x` (`ddim_core.implicit.resolve_stall`), off otherwise; pass True
        for a half-precision model stepping float32 latents (as the ComfyUI pack does).

    Returns
    -------
    array
        The latent at the last (largest) sigma, in x's dtype.

    Warns
    -----
    ddim_core.implicit.ToleranceWarning
        With `tol`, once per call, when a step used every refinement and ended above tol
        (as `ddim_core.invert`), naming the worst step's sigmas, residual and model calls.

    Examples
    --------
    >>> import numpy as np, ddim_core as dc
    >>> sigmas = get_sigmas_ddim(dc.DDIMConfig(), 10, xp=np)
    >>> def denoiser(x, sigma):
    ...     return 0.5 * x / (1.0 + sigma[:, None] ** 2)
    >>> x0 = np.ones((1, 2))
    >>> z = sample_ddim_inverse(denoiser, x0, sigmas[::-1].copy(), disable=True,
    ...                         fixed_point_iters=20, tol=1e-12)
    >>> back = sample_ddim(denoiser, z, sigmas, disable=True)
    >>> bool(np.abs(back - x0).max() < 1e-9)
    True
    """
    extra_args = _check_call(model, x, extra_args, callback)
    levels = _levels(sigmas, ascending=True)
    iters = check_tol_used(check_fixed_point(fixed_point_iters, tol), tol)
    if len(levels) < 2:
        return x  # no step
    rows = _coefficients(levels, 0.0, inverse=True)
    s_in = _ones_like_batch(x)
    trail = implicit.Trail()
    short = implicit.Shortfalls(tol, iters)
    xp = backends.namespace(x=x)
    stall = implicit.resolve_stall(stall, x, xp=xp)
    with backends.no_grad(x):
        for i in _trange(len(levels) - 1, disable):
            src, dst, c = levels[i], levels[i + 1], rows[i]
            sigma = sigmas[i + 1]
            if dst == src:  # zero-length: the identity
                _report(callback, x, i, sigma, _denoised(model, x, s_in * dst, extra_args))
                continue
            (x_w,) = backends.to_work_dtype(xp, x)  # half precision is computed in float32
            eps_at = functools.partial(_eps_at, model, s_in * dst, dst, extra_args)
            if not iters:
                # the model sees the source sample expressed at the destination level (rounded
                # to x's dtype); eps is formed from that point unrounded
                y = x_w * (c.sqrt_ab_from / c.sqrt_ab_to)
                eps, denoised = eps_at(backends.cast(xp, y, x.dtype), y)
                _report(callback, x, i, sigma, denoised)
                x = _transfer(x, eps, c, _INVERSE, None)
                continue
            # in VE coordinates the forward DDIM step dst -> src is y - (dst - src) eps(y); the
            # source and the residual in VP units (times s = sqrt(abar_src)), as ddim_core.invert,
            # both in the work dtype: the solve measures its iterates (in x's dtype) unrounded
            s = c.sqrt_ab_from

            def forward(
                y: Array, eps_at: Any = eps_at, h: float = dst - src, s: float = s
            ) -> tuple[Array, Array]:
                (y_w,) = backends.to_work_dtype(xp, y)
                eps, denoised = eps_at(y, y_w)
                return (y_w - h * eps) * s, denoised

            frame = implicit.Frame(1.0 / s, 1.0, src, dst, start=1.0 / c.sqrt_ab_to)
            solved = implicit.solve_step(
                forward, x_w * s, frame, iters, tol, trail, dtype=x.dtype, stall=stall
            )
            _report(callback, x, i, sigma, solved.x0)
            x, trail = solved.x_t, solved.trail
            short.record(i, f"sigma {src:.6g} -> {dst:.6g}", solved.calls, solved.residual)
    short.warn(stacklevel=2)
    return x


def get_sigmas_ddim(
    alphas_cumprod_or_config: Any,
    n: int,
    spacing: str | None = None,
    steps_offset: int | None = None,
    set_alpha_to_one: bool | None = None,
    *,
    device: Any = None,
    dtype: Any = None,
    xp: Any = None,
) -> Array:
    """The sigmas of an n-step DDIM plan, descending, then the final level.

    The final level is 0 with set_alpha_to_one, else sigma(alpha_bar_0), the model's smallest
    sigma; sigma = sqrt((1 - alpha_bar) / alpha_bar) at each plan timestep. Computed on the
    host in float64, converted once, and returned like k-diffusion's `get_sigmas_*`: an array
    on `device`.

    Parameters
    ----------
    alphas_cumprod_or_config : DDIMConfig or array
        An alphas_cumprod table (e.g. `model.inner_model.alphas_cumprod`; diffusers'
        defaults: leading, 0, True) or a config (its options are the defaults).
    n : int
        The number of steps.
    spacing : str, optional
        "leading", "trailing", "linspace" or "quadratic" (the DDIM paper's).
    steps_offset : int, optional
        Added to the leading and quadratic spacings' timesteps.
    set_alpha_to_one : bool, optional
        Whether the last sigma is 0.
    device, dtype : optional
        Where and in what dtype the result lives. From a table: the table's library, device
        and dtype by default. From a config: a torch tensor on torch's default device in its
        default dtype (float32).
    xp : module or array namespace, optional
        Another library, e.g. ``xp=numpy`` for a NumPy float64 array.

    Returns
    -------
    array
        n + 1 sigmas.

    Raises
    ------
    ValueError
        The plan starts at alpha_bar = 0 (zero terminal SNR), whose sigma is infinite; a
        table that is not 1-D, has fewer than 2 levels or increases with t; n outside
        [1, num_train_timesteps]; a spacing not listed above; a device the result's library
        does not have.
    TypeError
        A first argument that is neither a DDIMConfig nor an array (a config dict, a
        scheduler), a `dtype` (or, without one, a table's dtype) that is not real floating
        in the result's library, an `xp` that is not an array library, an n that is not an
        integer, or a spacing that is not a string.

    Examples
    --------
    >>> import numpy as np, ddim_core as dc
    >>> sigmas = get_sigmas_ddim(dc.DDIMConfig(), 4, spacing="trailing", xp=np)
    >>> sigmas.shape, float(sigmas[-1])
    ((5,), 0.0)
    """
    if isinstance(alphas_cumprod_or_config, dc.DDIMConfig):
        config, table = alphas_cumprod_or_config, None
    else:
        table = alphas_cumprod_or_config
        table_xp = _table_namespace(table)
        size = _check_table(backends.to_host(table, name="alphas_cumprod")).shape[0]
        config = dc.DDIMConfig(num_train_timesteps=size)
    if spacing is not None:  # checked as DDIMConfig checks it, under the name the caller wrote
        _choice(TIMESTEP_SPACINGS)("spacing", spacing)
    changes = {"timestep_spacing": spacing, "steps_offset": steps_offset}
    changes["set_alpha_to_one"] = set_alpha_to_one
    config = config.replace(**{k: v for k, v in changes.items() if v is not None})
    n = check_int("n", n, low=1, high=config.num_train_timesteps)  # named as the caller knows it
    # the sigmas need only the plan's timesteps and schedule: v_prediction has no level the
    # core's first-step check refuses, so zero terminal SNR reaches the VE check below
    plan = dc.make_plan(config.replace(prediction_type="v_prediction"), n)
    schedule = plan.schedule if table is None else _schedule_of(table, config)
    ab = np.array([*(schedule.alpha_bar(t) for t in plan.timesteps), schedule.final_alpha_cumprod])
    if np.any(ab <= 0.0):  # (the levels fall along the plan: its first is 0)
        cause = kernels.zero_level_cause(float(schedule.betas[plan.timesteps[0]]))
        raise ValueError(
            f"the plan starts at alpha_bar = 0 ({cause}), whose sigma is infinite: "
            "k-diffusion's VE samplers cannot start there; sample with ddim_core.sample, or "
            "use a schedule whose alpha_bar stays above 0"
        )
    host = np.sqrt((1.0 - ab) / ab)
    if table is not None and xp is None:
        device = backends.device(table) if device is None else device
        of_table, dtype = dtype is None, table.dtype if dtype is None else dtype
        return _converted(host, table_xp, device, dtype, of_table)
    out_xp = _result_namespace(xp)
    if dtype is None:  # the library's default floating dtype (on that device: it may lack one)
        try:
            dtype = out_xp.asarray(0.0, device=device).dtype
        except (ValueError, RuntimeError, AssertionError) as e:  # CPU-only torch: Assertion
            raise _device_error(out_xp, device, dtype, e) from None
    return _converted(host, out_xp, device, dtype)


def register() -> list[str]:
    """Add the samplers to `k_diffusion.sampling`, where code looks samplers up by name.

    Returns
    -------
    list of str
        The names added.

    Raises
    ------
    ImportError
        `k_diffusion.sampling` cannot be imported: k-diffusion is not installed, or its
        package `__init__`, which imports its training modules too, misses one of their
        dependencies (a --no-deps install).

    Examples
    --------
    >>> register()[:3]  # doctest: +SKIP
    ['sample_ddim', 'sample_ddim_inverse', 'get_sigmas_ddim']
    """
    try:
        import k_diffusion.sampling as sampling
    except ImportError as e:
        raise ImportError(
            f"register() needs k_diffusion.sampling importable, and importing it failed "
            f"({type(e).__name__}: {e}): k-diffusion's package imports its training modules "
            "too, so install it with its dependencies: pip install 'ddim-core[kdiffusion]'. "
            "The samplers need no k-diffusion: call ddim_kdiffusion.sample_ddim (and the "
            "others) directly"
        ) from e

    from . import reversible

    names = {
        "sample_ddim": sample_ddim,
        "sample_ddim_inverse": sample_ddim_inverse,
        "get_sigmas_ddim": get_sigmas_ddim,
    }
    for method in ("edict", "bdia", "belm"):  # samplers that invert exactly
        for name in (f"sample_{method}", f"sample_{method}_inverse"):
            names[name] = getattr(reversible, name)
    for name, fn in names.items():
        setattr(sampling, name, fn)
    return list(names)


# --- helpers ---------------------------------------------------------------------------------


MAX_SIGMA = 1e150  # alpha_bar = 1 / (1 + sigma^2) must be computable in float64


def _check_call(model: Any, x: Array, extra_args: Any, callback: Any) -> dict[str, Any]:
    """A sampler's arguments besides sigmas: callable model and callback, a real floating x
    with a batch axis, a mapping of extra_args (returned as a dict)."""
    if not callable(model):
        raise TypeError(f"model must be callable as model(x, sigma, **extra_args), got {model!r}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable with a dict, got {callback!r}")
    if extra_args is not None and not isinstance(extra_args, Mapping):
        raise TypeError(f"extra_args must be a mapping (a dict), got {type(extra_args).__name__}")
    if x is None:
        raise TypeError("x must be an array, got None")
    if not backends.is_real_floating(backends.namespace(x=x), x):
        raise TypeError(f"x must be a real floating-point array, got dtype {x.dtype}")
    if x.ndim == 0:
        raise ValueError(
            "x must have a batch axis (the model gets one sigma per batch element), got a 0-d array"
        )
    return {} if extra_args is None else dict(extra_args)


def _denoised(model: Callable[..., Array], x: Array, sigma: Array, extra: dict[str, Any]) -> Array:
    """model(x, sigma, **extra), checked: an array of x's library, device and shape, in a real
    floating dtype."""
    out = model(x, sigma, **extra)
    if out is None:  # namespace skips None
        raise TypeError("the model returned None; it must return the denoised x, shaped like x")
    try:
        xp = backends.namespace(x=x, denoised=out)
    except (TypeError, ValueError) as e:
        raise TypeError(f"the model's output: {e}") from None
    if not backends.is_real_floating(xp, out):  # a step would drop an imaginary part
        raise TypeError(
            f"the model returned dtype {out.dtype}; it must return the denoised x in a real "
            "floating dtype"
        )
    if tuple(out.shape) != tuple(x.shape):
        raise ValueError(
            f"the model returned shape {tuple(out.shape)} for x of shape {tuple(x.shape)}; "
            "it must return the denoised x, shaped like x"
        )
    return out


def _checked_noise(z: Array, x: Array) -> Array:
    """noise_sampler's output, checked: an array of x's library, device and shape, in a real
    floating dtype."""
    if z is None:  # namespace skips None: the step would silently go without noise
        raise TypeError("noise_sampler returned None; it must return noise shaped like x")
    try:
        xp = backends.namespace(x=x, noise=z)
    except (TypeError, ValueError) as e:
        raise TypeError(f"noise_sampler's output: {e}") from None
    if not backends.is_real_floating(xp, z):
        raise TypeError(
            f"noise_sampler returned dtype {z.dtype}; it must return noise in a real floating dtype"
        )
    if tuple(z.shape) != tuple(x.shape):
        raise ValueError(f"noise_sampler returned shape {tuple(z.shape)}; x has {tuple(x.shape)}")
    return z


def _levels(sigmas: Array, *, ascending: bool) -> list[float]:
    """The sigmas as host floats (one read), checked: real, 1-D, finite, >= 0, and descending for
    sampling or ascending for inversion, repeats allowed (zero-length steps)."""
    if sigmas is None:  # namespace skips None
        raise TypeError("sigmas must be a 1-D array of noise levels, got None")
    xp = backends.namespace(sigmas=sigmas)
    if not (backends.is_real_floating(xp, sigmas) or backends.is_kind(xp, sigmas, "integral")):
        # the host read would keep a complex sigma's real part and a boolean's 0 or 1
        raise TypeError(f"sigmas must be real numbers, got dtype {sigmas.dtype}")
    if sigmas.ndim != 1:
        raise ValueError(f"sigmas must be a 1-D array, got shape {tuple(sigmas.shape)}")
    levels = [float(s) for s in backends.to_host(sigmas, name="sigmas")]
    for i, s in enumerate(levels):
        if not (math.isfinite(s) and s >= 0):
            raise ValueError(f"sigmas must be finite and >= 0, got sigmas[{i}] = {s}")
        if s > MAX_SIGMA:
            raise ValueError(
                f"sigmas[{i}] = {s} is above {MAX_SIGMA:g}: 1 + sigma^2 overflows float64"
            )
    for i in range(len(levels) - 1):
        a, b = levels[i], levels[i + 1]
        if (a > b) if ascending else (a < b):
            order = "ascending (inversion)" if ascending else "descending (sampling)"
            raise ValueError(
                f"sigmas must be {order}, got sigmas[{i}] = {a} then sigmas[{i + 1}] = {b}"
            )
    return levels


def _coefficients(levels: list[float], eta: float, *, inverse: bool) -> list[Row]:
    """The core's Rows between consecutive sigma levels (host float64, computed and checked
    once per loop): abar = 1 / (1 + sigma^2), and 1 - abar = sigma^2 / (1 + sigma^2), exact
    where 1 - abar would cancel (small sigmas). Zero-length steps take no row (never checked)."""
    sq = np.asarray(levels) ** 2
    ab, one_minus = (1.0 / (1.0 + sq)).tolist(), (sq / (1.0 + sq)).tolist()
    kind = _INVERSE if inverse else _SAMPLE
    pairs = (tuple(ab[:-1]), tuple(ab[1:]), tuple(one_minus[:-1]), tuple(one_minus[1:]))
    found = coefficients.table(LevelsKey(*pairs[:2], eta, kind.prediction_type, *pairs[2:]))
    invalid = [i for i in found.invalid if levels[i] != levels[i + 1]]
    if invalid:
        i = min(invalid)
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
    back to VE (/ sqrt abar_b), in x's dtype (a model or noise in another dtype does not
    promote the sample, as in ddim_core's loops); half precision is computed in float32 and
    rounded once, as ddim_core's steps are."""
    xp = backends.namespace(x=x)
    x_w, m, z = backends.to_work_dtype(xp, x, model_output, noise)
    x_b, _ = kernels.ddim_update(x_w * c.sqrt_ab_from, m, c, kind, z, False, xp=xp)
    return backends.cast(xp, x_b / c.sqrt_ab_to, x.dtype)


def _report(
    callback: Callable[[dict[str, Any]], Any] | None,
    x: Array,
    i: int,
    sigma: Array,
    denoised: Array,
) -> None:
    """k-diffusion's callback dict (sigma_hat = sigma: no churn)."""
    if callback is not None:
        callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})


def _result_namespace(lib: Any) -> Any:
    """The array namespace of `lib` (a module or namespace with asarray); torch when None."""
    if lib is None:
        try:
            import torch as lib
        except ImportError:
            raise ImportError(
                "get_sigmas_ddim(config, ...) returns a torch tensor, as k-diffusion's "
                "get_sigmas_* do, and torch is not installed; pass xp=numpy for NumPy"
            ) from None
    if not callable(getattr(lib, "asarray", None)):
        raise TypeError(f"xp must be an array library (a module with asarray), got {lib!r}")
    return backends.namespace(xp=lib.asarray(0.0))


def _converted(host: np.ndarray, xp: Any, device: Any, dtype: Any, of_table: bool = False) -> Any:
    """The host sigmas in `xp` on `device`, in `dtype`, checked: a real floating dtype of
    `xp` (an integer dtype truncated the sigmas to 17, 3, 0, ...)."""
    where = "the alphas_cumprod table's dtype" if of_table else "dtype"
    try:
        out = backends.from_host(host, xp, device=device, dtype=dtype)
        floating = backends.is_real_floating(xp, out)
    except TypeError:  # not a dtype of xp's library
        floating = False
    except (ValueError, RuntimeError) as e:  # not a device of it (torch: RuntimeError)
        raise _device_error(xp, device, dtype, e) from None
    if not floating:
        raise TypeError(
            f"{where} must be a real floating dtype of {xp.__name__}, got {dtype!r}; "
            "pass dtype= (e.g. float32)"
        )
    return out


def _device_error(xp: Any, device: Any, dtype: Any, e: Exception) -> ValueError:
    """As ddim_core's tables say it: the library's own reason names a device or a dtype."""
    with_dtype = "" if dtype is None else f" with dtype={dtype!r}"
    return ValueError(f"device={device!r}{with_dtype} is not supported by {xp.__name__} ({e})")


def _eps_at(
    model: Callable[..., Array],
    sigma: Array,
    level: float,
    extra_args: dict[str, Any],
    y: Array,
    y_work: Array,
) -> tuple[Array, Array]:
    """(eps, denoised) of the model at noise level `level` (sigma: its batch array) on y.

    eps = (y_work - denoised) / level is formed in the work dtype (float32 for half precision,
    so a half step rounds once, at its end): `y_work` is y in it, or the point y was rounded
    from.
    """
    denoised = _denoised(model, y, sigma, extra_args)
    return (y_work - denoised) / level, denoised


def _ones_like_batch(x: Array) -> Array:
    """k-diffusion's `s_in`. The model gets `s_in * level` with the level a host float (the
    sigma read once): the values of `sigmas[i] * s_in`, in the sample's dtype on every library
    (NumPy would promote to the sigmas' dtype) and for sigmas of any library."""
    xp = backends.namespace(x=x)
    return xp.ones((x.shape[0],), dtype=x.dtype, device=backends.device(x))


def _default_noise_sampler(x: Array) -> Callable[[Array, Array], Array]:
    """k-diffusion's default: fresh standard normal noise like x from the global generator
    (torch tensors; other libraries need an explicit noise_sampler)."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        # torch.randn_like, as k-diffusion draws it: its values follow x's memory layout, so a
        # contiguous draw differs for a channels_last (or strided) x from the same seed
        return lambda sigma, sigma_next: torch.randn_like(x)

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


def _table_namespace(table: Any) -> Any:
    """The namespace of get_sigmas_ddim's table, or a TypeError saying what it takes (a config
    dict, a scheduler or a model wrapper are near misses)."""
    try:
        return backends.namespace(alphas_cumprod=table)
    except TypeError as e:
        raise TypeError(
            "alphas_cumprod_or_config must be a DDIMConfig or an alphas_cumprod array, got "
            f"{type(table).__name__}: pass a model's or scheduler's table (e.g. "
            "model.inner_model.alphas_cumprod) or, for a diffusers config dict, "
            "ddim_core.DDIMConfig.from_dict(scheduler.config)"
        ) from e


def _schedule_of(table: Array, config: dc.DDIMConfig) -> dc.Schedule:
    host = _check_table(backends.to_host(table, name="alphas_cumprod"))
    return dc.Schedule.from_alphas_cumprod(host, set_alpha_to_one=config.set_alpha_to_one)


def _check_table(host: np.ndarray) -> np.ndarray:
    """An alphas_cumprod table: 1-D, at least 2 levels, not increasing with t."""
    if host.ndim != 1 or host.size < 2:
        raise ValueError(
            f"alphas_cumprod must be a 1-D table of at least 2 levels, got shape {host.shape}"
        )
    if np.any(np.diff(host) > 0):
        i = int(np.flatnonzero(np.diff(host) > 0)[0])
        raise ValueError(
            f"alphas_cumprod must not increase with t, got {host[i]} then {host[i + 1]} at "
            f"t = {i}, {i + 1}"
        )
    return host
