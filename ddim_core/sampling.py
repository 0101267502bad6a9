"""Whole loops: `sample` runs the forward plan, `invert` the mirrored inverse plan.

`model(x, t)` returns the model output in the config's prediction type; `t` is a Python int.
Plain DDIM inversion evaluates the model at the destination timestep on the source sample, so
sampling from its result does not return the input. `invert(..., fixed_point_iters=k)` solves
each inverse step implicitly, find x_t with step(x_t) = x_source (`ddim_core.implicit`: a warm
start, then k Anderson refinements), so that sampling maps the result back onto the input.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from . import backends, coefficients, implicit, plugins
from .backends import Array, Namespace
from .coefficients import StepKey
from .config import DDIMConfig, check_bool, check_int, check_real
from .plans import make_plan
from .steps import check_eta, inverse_step, step

Model = Callable[[Array, Any], Array]


class StepInfo(NamedTuple):
    """What a loop reports to `callback` after each step.

    Attributes
    ----------
    step_index : int
        0 for the first step.
    timestep : int
        The step's timestep (inversion: its destination).
    sample : array
        The sample after the step.
    pred_original_sample : array
        x0_pred of the step. Exact inversion: that of the best iterate a model call measured,
        whose residual `residual` is; `sample` may be one refinement past it, which no call
        measured (taken only where the iteration still improved: `ddim_core.implicit`).
    model_calls : int
        Model calls the step made (exact inversion: one plus the solver's).
    residual : float or None
        Exact inversion: max |step(x_t) - x_source| of that measured iterate when it was read
        to the host, else None (with `tol`, where the step stopped on a predicted residual,
        the prediction).

    Examples
    --------
    >>> import numpy as np, ddim_core as dc
    >>> infos = []
    >>> x = dc.sample(lambda x, t: 0.5 * x, np.ones(2), dc.DDIMConfig(), 3, callback=infos.append)
    >>> [(i.step_index, i.timestep) for i in infos]
    [(0, 666), (1, 333), (2, 0)]
    """

    step_index: int
    timestep: int
    sample: Array  # the sample after the step
    pred_original_sample: Array
    model_calls: int = 1
    residual: float | None = None  # exact inversion: max |step(x_t) - x_source| (when read)


def sample(
    model: Model,
    x: Array,
    config: DDIMConfig,
    num_inference_steps: int | None = None,
    *,
    eta: float = 0.0,
    noise: Callable[[int, int], Array] | Sequence[Array] | None = None,
    generator: Any = None,
    timesteps: Sequence[int] | None = None,
    callback: Callable[[StepInfo], Any] | None = None,
    progress: bool = False,
    check_finite: bool | None = None,
) -> Array:
    """DDIM sampling (Song et al. 2021, eq. 12) from x = x_T down to x_0.

    Parameters
    ----------
    model : callable
        ``model(x, t) -> array``: the model output in the config's prediction type, for a
        sample `x` and a Python int timestep `t`; same shape, library and device as `x`.
    x : array
        x_T, e.g. standard normal noise (any array-API library).
    config : DDIMConfig
        The scheduler options.
    num_inference_steps : int, optional
        N; give this or `timesteps`.
    eta : float, default 0.0
        0 is deterministic DDIM; > 0 adds noise (needs `noise` or `generator`).
    noise : callable or sequence of arrays, optional
        The noise of step i: ``noise(i, t)`` or ``noise[i]`` (not with `generator`).
    generator : optional
        Draws the noise through the backend plugins (not with `noise`): a
        ``numpy.random.Generator`` (any library: drawn on the host, moved to the sample's
        device), a ``torch.Generator``, a JAX PRNG key (folded with i), a
        ``cupy.random.Generator``.
    timesteps : sequence of int, optional
        A custom plan, strictly decreasing.
    callback : callable, optional
        Called with a `StepInfo` after each step.
    progress : bool, default False
        Show a tqdm progress bar (the `progress` extra).
    check_finite : bool, optional
        Read one flag per step to stop at a model output with NaN or Inf. None (default)
        checks host NumPy arrays only, where the read is free, so that device loops never
        wait on the device.

    Returns
    -------
    array
        x_0, in the library, device and dtype of `x`.

    Raises
    ------
    TypeError
        `model` is not callable, or returns an array of another library.
    ValueError
        eta > 0 without noise; both `noise` and `generator`; a model output of the wrong shape
        or with NaN/Inf (named as the input's where the sample the model was given has them
        too); a bad plan; check_finite=True under jax.jit (a host read).

    Examples
    --------
    >>> import numpy as np, ddim_core as dc
    >>> config = dc.DDIMConfig(timestep_spacing="trailing", clip_sample=False)
    >>> model = dc.GaussianMixture.create([[0.0, 0.0]], [0.5], config)  # exact denoiser
    >>> x_T = np.random.default_rng(0).standard_normal((100, 2))
    >>> x_0 = dc.sample(model, x_T, config, 20)
    >>> bool(0.3 < x_0.std() < 0.7)
    True
    """
    plan = make_plan(config, num_inference_steps, timesteps=timesteps)
    _check_loop(model, x, callback)
    eta = check_eta(eta)
    if eta > 0 and noise is None and generator is None:
        raise ValueError(f"eta={eta} > 0 needs `noise` or `generator`")
    if noise is not None and generator is not None:  # one would be ignored, silently
        raise ValueError(
            "pass `noise` or `generator`, not both: the steps' noise comes from one of them "
            f"(got noise={type(noise).__name__} and generator={type(generator).__name__})"
        )
    if eta > 0 and noise is not None and not callable(noise):
        _check_noise_list(noise, plan.num_inference_steps)
    xp = backends.namespace(x=x)
    for i, t in enumerate(_progress(plan.timesteps, progress, "DDIM")):
        out = _call(model, x, t, i, xp, check_finite)
        z = _noise(noise, generator, i, t, x) if eta > 0 else None
        x, x0 = step(plan, out, t, x, eta=eta, noise=z)
        x = backends.materialize(x)
        if callback is not None:
            callback(StepInfo(i, t, x, x0))
    return x


def invert(
    model: Model,
    x: Array,
    config: DDIMConfig,
    num_inference_steps: int | None = None,
    *,
    fixed_point_iters: int = 0,
    tol: float | None = None,
    eta: float = 0.0,
    timesteps: Sequence[int] | None = None,
    callback: Callable[[StepInfo], Any] | None = None,
    progress: bool = False,
    check_finite: bool | None = None,
    history: int = 3,
    stall: bool | None = None,
) -> Array:
    """DDIM inversion from x = x_0 up to x_T along the mirrored plan.

    Plain inversion (``fixed_point_iters=0``) evaluates the model at the destination timestep
    on the source sample: one model call per step, and sampling from the result does not
    return exactly to `x`. With ``fixed_point_iters=k`` each step is solved implicitly, so that
    the forward step maps the result back onto its source (`ddim_core.implicit`): the step
    itself, taken from a warm start extrapolated from the previous steps (at the first step:
    plain inversion), then k refinements, each one further model call that measures the latest
    iterate and refines it by an Anderson update over the last `history` iterates. So
    1 + k model calls per step, and k = 1 already refines; the returned k-th refinement is the
    one iterate no call measured, kept where the iteration was still improving (else the best
    measured iterate). With `tol` the max residual |step(x_t) - x_source| of each measured
    iterate is read on the host (the only host read) and the step stops at the first iterate
    within tol, or one call sooner where the next refinement is predicted within tol (its
    last residual times the slowest rate of decrease the step has shown), returning the
    refinement wherever it is predicted within tol.

    Parameters
    ----------
    model : callable
        ``model(x, t) -> array`` as in `sample`.
    x : array
        x_0, the sample to invert. Its first axis is the batch: with fixed_point_iters, each
        batch element is solved on its own (its own Anderson update and residual), so a
        single sample is shaped (1, ...) (a (D,) array is D one-value samples, each solved
        alone).
    config : DDIMConfig
        The scheduler options.
    num_inference_steps : int, optional
        N; give this or `timesteps`.
    fixed_point_iters : int, default 0
        Refinements per step after the plain step (0: plain inversion); 1 + k model calls.
    tol : float, optional
        Stop a step at the first measured iterate whose residual is <= tol, or at the next
        refinement where it is predicted <= tol (one host read per iterate, only when given).
        Only with fixed_point_iters >= 1: there is nothing to stop in plain inversion. A step
        that uses every refinement and ends above tol returns its last refinement where the
        residual was still falling (no call measures it), else its best measured iterate,
        and the loop warns (below) with the best measured residual.
    eta : float, default 0.0
        Must be 0: inversion is deterministic.
    timesteps : sequence of int, optional
        A custom plan, strictly decreasing (walked backwards).
    callback : callable, optional
        Called with a `StepInfo` (model calls, residual) after each step.
    progress : bool, default False
        Show a tqdm progress bar.
    check_finite : bool, optional
        As in `sample` (the model's first call of a step; the solver's own iterates are not
        checked).
    history : int, default 3
        Past iterates the Anderson update combines with the newest (its secant
        differences), at least 1.
    stall : bool, optional
        With tol, also stop a step whose residual has stalled above tol
        (`ddim_core.implicit.solve_step`): the rounding of a half-precision sample floors it
        above a float32 tol. None (default): on for float16 / bfloat16 `x` (20 steps, tol
        1e-6, 8 refinements: 105 model calls instead of 166, tests/test_inversion_methods.py),
        off otherwise (a float32 step that has stalled may still converge).

    Returns
    -------
    array
        x_T, in the library, device and dtype of `x`.

    Raises
    ------
    ValueError
        eta != 0, fixed_point_iters < 0, history < 1, tol <= 0 or not finite, a tol with
        fixed_point_iters=0, a tol under jax.jit (a host read), or as `sample`.
    TypeError
        A tol that is not a real number (True included), a fixed_point_iters or history that
        is not an integer, a stall neither a bool nor None, or as `sample`.

    Warns
    -----
    ddim_core.implicit.ToleranceWarning
        With `tol`: once per call, when a step used every refinement and its residual is still
        above tol (e.g. few steps under strong guidance), naming the worst step, its timestep,
        residual and model calls; the callback's `StepInfo.residual` has every step's. Without
        `tol` nothing is compared (and nothing read), so nothing is warned.

    Examples
    --------
    >>> import numpy as np, ddim_core as dc
    >>> config = dc.DDIMConfig(timestep_spacing="trailing", clip_sample=False)
    >>> model = dc.GaussianMixture.create([[-2.0, 0.0], [2.0, 0.0]], [0.3, 0.3], config)
    >>> x_0 = dc.sample(model, np.random.default_rng(0).standard_normal((50, 2)), config, 20)
    >>> z = dc.invert(model, x_0, config, 20, fixed_point_iters=20, tol=1e-10)
    >>> bool(np.abs(dc.sample(model, z, config, 20) - x_0).max() < 1e-6)
    True
    """
    plan = make_plan(config, num_inference_steps, timesteps=timesteps)
    _check_loop(model, x, callback)
    if check_eta(eta) != 0:
        raise ValueError(f"eta={eta}: inversion is deterministic, eta must be 0")
    iters = check_tol_used(check_fixed_point(fixed_point_iters, tol), tol)
    history = check_int("history", history, low=1)
    xp = backends.namespace(x=x)
    stall = implicit.resolve_stall(stall, x, xp=xp)
    trail = implicit.Trail()
    short = implicit.Shortfalls(tol, iters)
    for i, t in enumerate(_progress(plan.inverse_timesteps, progress, "DDIM inversion")):
        if iters:
            counter = itertools.count()

            def forward(y: Array, t: int = t, i: int = i, n: Any = counter) -> tuple[Array, Array]:
                check = check_finite if next(n) == 0 else False  # the solver's own iterates: no
                return step(plan, _call(model, y, t, i, xp, check), t, y)

            row = _inverse_row(plan, t)
            c = implicit.vp_preconditioner(row)
            frame = implicit.frame(row)
            solved = implicit.solve_step(
                forward, x, frame, iters, tol, trail, c=c, history=history, stall=stall
            )
            y, x0, calls, residual, trail = solved
            short.record(i, f"timestep {t}", calls, residual)
        else:
            y, x0 = inverse_step(plan, _call(model, x, t, i, xp, check_finite), t, x)
            calls, residual = 1, None
        x = backends.materialize(y)
        if callback is not None:
            callback(StepInfo(i, t, x, x0, calls, residual))
    short.warn(stacklevel=2)
    return x


def _inverse_row(plan: Any, t: int) -> coefficients.Row:
    """The inverse step's Row up to `t`, read off the forward step from `t` (eta = 0: the
    same two levels, swapped). Exact inversion only ever takes the forward step, so only its
    validity counts: prediction_type='sample' cannot take plain inversion's step from
    alpha_bar = 1, but the forward step down to there is fine."""
    f = coefficients.row(StepKey(plan, 0.0, False), t)
    return coefficients.Row(f.sqrt_ab_to, f.direction, f.sqrt_ab_from, f.sqrt_1m_ab_from, 0.0)


def check_tol_used(iters: int, tol: Any) -> int:
    """`iters`, after checking that a given `tol` has refinements to stop: `invert`'s tol
    with fixed_point_iters=0 would do nothing, silently.

    Parameters
    ----------
    iters : int
        fixed_point_iters, as `check_fixed_point` returns it.
    tol : float or None
        The tolerance given (checked by `check_fixed_point`).

    Returns
    -------
    int
        `iters`.

    Raises
    ------
    ValueError
        A tol with iters == 0.

    Examples
    --------
    >>> check_tol_used(3, 1e-6), check_tol_used(0, None)
    (3, 0)
    >>> check_tol_used(0, 1e-6)
    Traceback (most recent call last):
    ValueError: tol=1e-06 needs fixed_point_iters >= 1, got 0: ...
    """
    if tol is not None and iters == 0:
        raise ValueError(
            f"tol={tol!r} needs fixed_point_iters >= 1, got 0: tol stops a step's refinements "
            "and plain inversion makes none; give fixed_point_iters >= 1, or tol=None"
        )
    return iters


def check_fixed_point(fixed_point_iters: Any, tol: Any) -> int:
    """Validate the exact-inversion options: a number of refinements (an integer >= 0) and a
    tolerance > 0 or None.

    Parameters
    ----------
    fixed_point_iters : int
        Refinements per step; must be an integer >= 0.
    tol : float or None
        Must be a finite real number > 0 (not a bool), or None.

    Returns
    -------
    int
        `fixed_point_iters` as an int.

    Raises
    ------
    TypeError, ValueError
        Naming the bad option: a tol that is not a real number (True, a string) is a
        TypeError; one <= 0, NaN or infinite a ValueError.

    Examples
    --------
    >>> check_fixed_point(10, 1e-6)
    10
    """
    iters = check_int("fixed_point_iters", fixed_point_iters, low=0)
    # check_real: True is no tolerance, and inf stops every step at its first iterate
    if tol is not None and check_real("tol", tol) <= 0:
        raise ValueError(f"tol={tol!r} must be a number > 0 (or None)")
    return iters


def _check_loop(model: Any, x: Any, callback: Any, name: str = "x") -> None:
    """The arguments every loop takes: a callable model and callback, an array x (the
    argument `name`)."""
    if not callable(model):
        raise TypeError(f"model must be callable as model(x, t), got {type(model).__name__}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable with a StepInfo, got {callback!r}")
    if x is None:
        raise TypeError(f"{name} must be an array (the starting sample), got None")
    if isinstance(x, tuple):  # a State, or a pair, where one array goes
        raise TypeError(
            f"{name} must be an array (the starting sample), got a {type(x).__name__} of "
            f"{len(x)} items; a two-step sampler's state (ddim_core.reversible.State, a pair "
            "of arrays) is sampled by the ddim_core.reversible.sample_edict / sample_bdia / "
            "sample_belm of the method that made it"
        )
    xp = backends.namespace(**{name: x})
    if not backends.is_real_floating(xp, x):
        raise TypeError(f"{name} must be a real floating-point array, got dtype {x.dtype}")
    backends.check_known_shape(name, x)


def _check_noise_list(noise: Any, n: int) -> None:
    try:
        size = len(noise)
    except TypeError:
        raise TypeError(
            f"noise must be a sequence of {n} arrays or a callable noise(i, t), got "
            f"{type(noise).__name__}"
        ) from None
    if size < n:
        raise ValueError(f"noise has {size} arrays but the plan takes {n} steps; give one per step")


def _call(
    model: Model,
    x: Array,
    t: int,
    i: int,
    xp: Namespace,
    check_finite: bool | None,
    given: str | None = None,
) -> Array:
    """model(x, t), checked: same library, device, shape and a floating dtype; finite values.
    `given` names x where it is not finite (default: the loop's input x at step 0, else the
    sample at step i)."""
    out = model(x, t)
    where = f"model output at step {i} (timestep {t})"
    if out is None:
        raise TypeError(f"{where} is None; the model must return an array shaped like x")
    try:
        backends.namespace(x=x, model_output=out)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{where}: {e}") from None
    if tuple(out.shape) != tuple(x.shape) or not backends.is_real_floating(xp, out):
        raise ValueError(
            f"{where} has shape {tuple(out.shape)} and dtype {out.dtype}; expected shape "
            f"{tuple(x.shape)} and a floating dtype"
        )
    if check_finite is None:
        check_finite = backends.is_host_numpy(out)
    elif not isinstance(check_finite, bool):
        raise TypeError(f"check_finite must be True, False or None, got {check_finite!r}")
    elif check_finite and backends.jax_traced(out):
        raise ValueError(
            "check_finite=True reads a flag on the host at every step, which jax.jit cannot "
            "trace; pass check_finite=None or False under jit (and check the result after)"
        )
    if check_finite and not bool(xp.all(xp.isfinite(out))):
        if not bool(xp.all(xp.isfinite(x))):  # (read only here: the error's cause)
            if given is None:
                given = "x, the loop's input," if i == 0 else f"the sample at step {i}"
            raise ValueError(
                f"{given} contains NaN or Inf (timestep {t}), which the model's output "
                "carries; the loop needs a finite sample"
            )
        raise ValueError(f"{where} contains NaN or Inf")
    return out


def _noise(noise: Any, generator: Any, i: int, t: int, x: Array) -> Array:
    if noise is not None:
        return noise(i, t) if callable(noise) else noise[i]
    return plugins.standard_normal(generator, tuple(x.shape), like=x, draw=i)


def _progress(items: Sequence[int], enabled: bool, desc: str, done: int = 0) -> Iterable[int]:
    """`items` through a tqdm bar when enabled; `done` steps already taken before it (the
    reversible two-step samplers' first step) are counted in it as done."""
    if not check_bool("progress", enabled):
        return items
    try:
        from tqdm.auto import tqdm
    except ImportError:
        raise ImportError("progress=True needs tqdm: pip install 'ddim-core[progress]'") from None
    if done:
        counted: Iterable[int] = tqdm(items, desc=desc, initial=done, total=len(items) + done)
        return counted
    bar: Iterable[int] = tqdm(items, desc=desc)
    return bar
