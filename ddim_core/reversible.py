"""Samplers that invert exactly by construction: EDICT, BDIA and BELM.

DDIM's step x_{t-1} = F(x_t) cannot be undone without solving F(x_t) = x_{t-1} (`implicit`).
These samplers change the step so that its inverse is explicit: sampling from what `invert_*`
returns (the `state`) gives back x_0 up to rounding, at the method's own cost in model calls
per step, under any model (guided ones included). Their samples are not DDIM's: each is its own
discretisation of the probability-flow ODE (see each function, and docs/inversion-methods.md).

Notation along a plan of N steps: levels L_0 > L_1 > ... > L_N (the plan's timesteps, then
the final level), z_k the sample at L_k (z_0 = x_T, z_N = x_0); DDIM's transfer of z_k to level
L_j with the model evaluated at (z_k, L_k) is phi_{k->j}(z_k) (eq. 12: `steps.step` for
j = k + 1, `steps.inverse_step` for j = k - 1).

- EDICT (Wallace, Gokul & Naik 2023, eq. 14-15): two coupled sequences (x, y) with mixing p;
  2 model calls per step; state (x_T, y_T).
- BDIA (Zhang, Lewis & Kleijn 2023, BDIA-DDIM): z_{k+1} = gamma z_{k-1} + phi_{k->k+1}(z_k) -
  gamma phi_{k->k-1}(z_k), the first step plain DDIM; 1 call per step; state (z_0, z_1).
- BELM (Wang et al. 2024, O-BELM): the second-order explicit two-step form in VE coordinates
  (z / sqrt(abar), sigma), z_{k+1} = a z_{k-1} + b z_k + c eps(z_k); 1 call per step; state
  (z_0, z_1).

A state is a tuple of two arrays; `sample_*` also take a plain x_T (then the first step is
DDIM's). Loops follow `sampling`'s conventions (callback with `StepInfo`, progress bar,
check_finite); they are deterministic, so they take no noise. EDICT and BELM step with the
model's eps (eq. 9), so they refuse clip_sample and thresholding; BDIA steps with
`steps.step`, any option.

Precision: the arithmetic runs in the samples' working dtype (float32 for half precision), or
in `precision` ("float32" or "float64", where the backend has it). `invert_*` returns the state
in the arithmetic dtype as a `State`, which remembers the samples' dtype: the model is always
called in that dtype and `sample_*` returns x_0 in it. Rounding is amplified by the sampler
itself: a guided model's Jacobian is large near class boundaries, and at guidance 7.5, 20
steps, real data, float32 arithmetic returns within 3.5e-4 to 8.6e-4 of x_0 (half precision with
float32 arithmetic: up to 0.7). With precision="float64" the model still runs in the samples'
dtype and the round trip returns x_0 to the last bit in every dtype measured.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from . import backends, coefficients, kernels
from .backends import Array, Namespace
from .coefficients import Row, StepKey
from .config import DDIMConfig, check_nonnegative
from .plans import FINAL, Plan, make_plan
from .sampling import Model, StepInfo, _call, _check_loop, _progress
from .steps import inverse_step, step

Callback = Callable[[StepInfo], Any] | None


class State(tuple):  # type: ignore[type-arg]
    """What sampling needs to return exactly to x_0: a pair of arrays (EDICT's two sequences,
    or two consecutive samples), in the arithmetic dtype, and `dtype`, the samples' dtype (the
    model is called in it and x_0 is returned in it).

    Examples
    --------
    >>> import numpy as np
    >>> state = State(np.zeros(2), np.ones(2), np.float32)
    >>> len(state), state.dtype
    (2, <class 'numpy.float32'>)
    """

    dtype: Any

    def __new__(cls, first: Array, second: Array, dtype: Any) -> State:
        state = super().__new__(cls, (first, second))
        state.dtype = dtype
        return state


# --- EDICT ---------------------------------------------------------------------------------


def sample_edict(
    model: Model,
    state: State | tuple[Array, Array] | Array,
    config: DDIMConfig,
    num_inference_steps: int | None = None,
    *,
    p: float = 0.93,
    timesteps: Sequence[int] | None = None,
    callback: Callback = None,
    progress: bool = False,
    check_finite: bool | None = None,
    precision: str | None = None,
    dtype: Any = None,
) -> Array:
    """EDICT sampling (Wallace et al. 2023, eq. 14): with DDIM's linear step
    x_{t-1} = a_t x + b_t eps, two sequences updated in turn, each with the other's eps,
    then mixed with weight p:

        x' = a_t x + b_t eps(y, t),    y' = a_t y + b_t eps(x', t),
        x  = p x' + (1 - p) y',        y  = p y' + (1 - p) x.

    `state` is (x_T, y_T) from `invert_edict`, or one x_T for both. Returns x_0 (the x
    sequence). 2 model calls per step.

    Parameters
    ----------
    model : callable
        ``model(x, t) -> array`` in the config's prediction type (called in the samples'
        dtype).
    state : State, tuple of two arrays, or array
        What the inverse returned, or a plain x_T.
    config : DDIMConfig
        The scheduler options (the inverse's).
    num_inference_steps : int, optional
        N; give this or `timesteps`.
    p : float, default 0.93
        EDICT's mixing weight, in (0, 1].
    timesteps : sequence of int, optional
        A custom plan, strictly decreasing.
    callback : callable, optional
        Called with a `StepInfo` after each step (model_calls per step).
    progress : bool, default False
        Show a tqdm progress bar.
    check_finite : bool, optional
        As in `ddim_core.sample`.
    precision : {None, "float32", "float64"}, optional
        The arithmetic dtype (default: the state's).
    dtype : dtype, optional
        The samples' dtype: the model is called in it and x_0 returned in it (default: the
        State's, else the arrays').

    Returns
    -------
    array
        x_0.

    Examples
    --------
    >>> import numpy as np, ddim_core as dc
    >>> config = dc.DDIMConfig(clip_sample=False, timestep_spacing="trailing")
    >>> model = dc.GaussianMixture.create([[1.0]], [0.5], config)
    >>> x_0 = np.array([[0.5], [1.5]])
    >>> state = dc.reversible.invert_edict(model, x_0, config, 10)
    >>> bool(np.abs(dc.reversible.sample_edict(model, state, config, 10) - x_0).max() < 1e-12)
    True
    """
    plan, mix = _plan(config, num_inference_steps, timesteps), _check_p(p)
    x, y = _pair(state)
    _check_loop(model, x, callback)
    _check_linear(plan, "EDICT")
    xp = backends.namespace(x=x, y=y)
    work, dtype = _dtypes(xp, x.dtype, precision, _samples_dtype(state, dtype))
    x, y = backends.cast(xp, x, work), backends.cast(xp, y, work)
    for i, t in enumerate(_progress(plan.timesteps, progress, "EDICT")):
        c = _forward_row(plan, t)
        a, b = _linear(c)
        eps_y, x0 = _eps(model, y, t, i, c, plan, xp, check_finite, dtype)
        x_mid = a * x + b * eps_y
        eps_x, _ = _eps(model, x_mid, t, i, c, plan, xp, check_finite, dtype)
        y_mid = a * y + b * eps_x
        x = backends.materialize(mix * x_mid + (1.0 - mix) * y_mid)
        y = backends.materialize(mix * y_mid + (1.0 - mix) * x)
        _report(callback, i, t, x, x0, 2, xp, dtype)
    return backends.cast(xp, x, dtype)


def invert_edict(
    model: Model,
    x_0: Array,
    config: DDIMConfig,
    num_inference_steps: int | None = None,
    *,
    p: float = 0.93,
    timesteps: Sequence[int] | None = None,
    callback: Callback = None,
    progress: bool = False,
    check_finite: bool | None = None,
    precision: str | None = None,
) -> State:
    """EDICT inversion (Wallace et al. 2023, eq. 15): `sample_edict` run backwards, each
    operation undone in reverse order, from x = y = x_0:

        y' = (y - (1 - p) x) / p,      x' = (x - (1 - p) y') / p,
        y  = (y' - b_t eps(x', t)) / a_t,    x = (x' - b_t eps(y, t)) / a_t.

    Returns the state (x_T, y_T); `sample_edict` maps it back onto x_0. 2 calls per step.

    Parameters
    ----------
    model : callable
        ``model(x, t) -> array`` in the config's prediction type (called in x_0's dtype).
    x_0 : array
        The clean sample.
    config : DDIMConfig
        The scheduler options.
    num_inference_steps : int, optional
        N; give this or `timesteps`.
    p : float, default 0.93
        EDICT's mixing weight, in (0, 1].
    timesteps : sequence of int, optional
        A custom plan, strictly decreasing (walked backwards).
    callback : callable, optional
        Called with a `StepInfo` after each step (model_calls per step).
    progress : bool, default False
        Show a tqdm progress bar.
    check_finite : bool, optional
        As in `ddim_core.sample`.
    precision : {None, "float32", "float64"}, optional
        The arithmetic dtype (default: x_0's, float32 for half precision); the state is
        returned in it.

    Returns
    -------
    State
        (x_T, y_T), in the arithmetic dtype, remembering x_0's dtype.

    Examples
    --------
    >>> import numpy as np, ddim_core as dc
    >>> config = dc.DDIMConfig(clip_sample=False, timestep_spacing="trailing")
    >>> model = dc.GaussianMixture.create([[1.0]], [0.5], config)
    >>> x_0 = np.array([[0.5]], dtype=np.float32)
    >>> state = dc.reversible.invert_edict(model, x_0, config, 10, precision="float64")
    >>> state[0].dtype, state.dtype
    (dtype('float64'), dtype('float32'))
    """
    plan, mix = _plan(config, num_inference_steps, timesteps), _check_p(p)
    _check_loop(model, x_0, callback)
    _check_linear(plan, "EDICT")
    xp = backends.namespace(x_0=x_0)
    work, dtype = _dtypes(xp, x_0.dtype, precision, None)
    x = y = backends.cast(xp, x_0, work)
    for i, t in enumerate(_progress(plan.inverse_timesteps, progress, "EDICT inversion")):
        c = _forward_row(plan, t)
        a, b = _linear(c)
        y_mid = (y - (1.0 - mix) * x) / mix
        x_mid = (x - (1.0 - mix) * y_mid) / mix
        eps_x, x0 = _eps(model, x_mid, t, i, c, plan, xp, check_finite, dtype)
        y = backends.materialize((y_mid - b * eps_x) / a)
        eps_y, _ = _eps(model, y, t, i, c, plan, xp, check_finite, dtype)
        x = backends.materialize((x_mid - b * eps_y) / a)
        _report(callback, i, t, x, x0, 2, xp, dtype)
    return State(x, y, dtype)


# --- BDIA ----------------------------------------------------------------------------------


def sample_bdia(
    model: Model,
    state: State | tuple[Array, Array] | Array,
    config: DDIMConfig,
    num_inference_steps: int | None = None,
    *,
    gamma: float = 1.0,
    timesteps: Sequence[int] | None = None,
    callback: Callback = None,
    progress: bool = False,
    check_finite: bool | None = None,
    precision: str | None = None,
    dtype: Any = None,
) -> Array:
    """BDIA-DDIM sampling (Zhang et al. 2023): the integral from L_{k-1} to L_{k+1} taken as
    DDIM's transfers from z_k both ways, one model call at (z_k, L_k):

        z_{k+1} = gamma z_{k-1} + phi_{k->k+1}(z_k) - gamma phi_{k->k-1}(z_k),

    gamma in (0, 1] (gamma = 0 would be DDIM, which this cannot invert). From a state
    (z_0, z_1) of `invert_bdia` the first step is skipped; from a plain x_T it is DDIM's.
    1 model call per step; uses `steps.step` with all the config's options.

    Parameters
    ----------
    model : callable
        ``model(x, t) -> array`` in the config's prediction type (called in the samples'
        dtype).
    state : State, tuple of two arrays, or array
        What the inverse returned, or a plain x_T.
    config : DDIMConfig
        The scheduler options (the inverse's).
    num_inference_steps : int, optional
        N; give this or `timesteps`.
    gamma : float, default 1.0
        BDIA's gamma, in (0, 1].
    timesteps : sequence of int, optional
        A custom plan, strictly decreasing.
    callback : callable, optional
        Called with a `StepInfo` after each step (model_calls per step).
    progress : bool, default False
        Show a tqdm progress bar.
    check_finite : bool, optional
        As in `ddim_core.sample`.
    precision : {None, "float32", "float64"}, optional
        The arithmetic dtype (default: the state's).
    dtype : dtype, optional
        The samples' dtype: the model is called in it and x_0 returned in it (default: the
        State's, else the arrays').

    Returns
    -------
    array
        x_0.

    Examples
    --------
    >>> import numpy as np, ddim_core as dc
    >>> config = dc.DDIMConfig(clip_sample=False, timestep_spacing="trailing")
    >>> model = dc.GaussianMixture.create([[1.0]], [0.5], config)
    >>> x_0 = np.array([[0.5], [1.5]])
    >>> state = dc.reversible.invert_bdia(model, x_0, config, 10)
    >>> bool(np.abs(dc.reversible.sample_bdia(model, state, config, 10) - x_0).max() < 1e-12)
    True
    """
    plan, g = _plan(config, num_inference_steps, timesteps), _check_gamma(gamma)
    _check_loop(model, _pair(state)[0], callback)
    z_prev, z, xp, dtype = _start(model, state, plan, callback, check_finite, precision, dtype)
    for i, t in _steps(plan, progress, "BDIA"):
        out = _evaluate(model, z, t, i, xp, check_finite, dtype)
        forward, x0 = step(plan, out, t, z)
        back = inverse_step(plan, out, plan.timesteps[i - 1], z).prev_sample
        z_prev, z = z, backends.materialize(g * z_prev + forward - g * back)
        _report(callback, i, t, z, x0, 1, xp, dtype)
    return backends.cast(xp, z, dtype)


def invert_bdia(
    model: Model,
    x_0: Array,
    config: DDIMConfig,
    num_inference_steps: int | None = None,
    *,
    gamma: float = 1.0,
    timesteps: Sequence[int] | None = None,
    callback: Callback = None,
    progress: bool = False,
    check_finite: bool | None = None,
    precision: str | None = None,
) -> State:
    """BDIA inversion: z_{N-1} by plain DDIM inversion of x_0 (any value would do: sampling
    from the state reproduces it), then `sample_bdia`'s step solved for z_{k-1}:

        z_{k-1} = (z_{k+1} - phi_{k->k+1}(z_k) + gamma phi_{k->k-1}(z_k)) / gamma.

    Returns (z_0, z_1) = (x_T, x_{T-1}); 1 model call per step. Division by gamma amplifies
    rounding in z_0 (by up to (1 / gamma)^N); sampling damps it back.

    Parameters
    ----------
    model : callable
        ``model(x, t) -> array`` in the config's prediction type (called in x_0's dtype).
    x_0 : array
        The clean sample.
    config : DDIMConfig
        The scheduler options.
    num_inference_steps : int, optional
        N; give this or `timesteps`.
    gamma : float, default 1.0
        BDIA's gamma, in (0, 1].
    timesteps : sequence of int, optional
        A custom plan, strictly decreasing (walked backwards).
    callback : callable, optional
        Called with a `StepInfo` after each step (model_calls per step).
    progress : bool, default False
        Show a tqdm progress bar.
    check_finite : bool, optional
        As in `ddim_core.sample`.
    precision : {None, "float32", "float64"}, optional
        The arithmetic dtype (default: x_0's, float32 for half precision); the state is
        returned in it.

    Returns
    -------
    State
        (z_0, z_1) = (x_T, x at the next level), in the arithmetic dtype, remembering x_0's dtype.

    Examples
    --------
    >>> import numpy as np, ddim_core as dc
    >>> config = dc.DDIMConfig(clip_sample=False, timestep_spacing="trailing")
    >>> model = dc.GaussianMixture.create([[1.0]], [0.5], config)
    >>> x_0 = np.array([[0.5]], dtype=np.float32)
    >>> state = dc.reversible.invert_bdia(model, x_0, config, 10, precision="float64")
    >>> state[0].dtype, state.dtype
    (dtype('float64'), dtype('float32'))
    """
    plan, g = _plan(config, num_inference_steps, timesteps), _check_gamma(gamma)
    _check_loop(model, x_0, callback)

    def update(z_next: Array, z: Array, out: Array, i: int, t: int) -> tuple[Array, Array]:
        forward, x0 = step(plan, out, t, z)
        back = inverse_step(plan, out, plan.timesteps[i - 1], z).prev_sample
        return (z_next - forward + g * back) / g, x0

    return _invert_two_step(
        model, x_0, plan, update, progress, callback, check_finite, "BDIA", precision
    )


# --- BELM ----------------------------------------------------------------------------------


def sample_belm(
    model: Model,
    state: State | tuple[Array, Array] | Array,
    config: DDIMConfig,
    num_inference_steps: int | None = None,
    *,
    timesteps: Sequence[int] | None = None,
    callback: Callback = None,
    progress: bool = False,
    check_finite: bool | None = None,
    precision: str | None = None,
    dtype: Any = None,
) -> Array:
    """O-BELM sampling (Wang et al. 2024): in VE coordinates (z / sqrt(abar), sigma), the
    explicit two-step form exact for quadratics in sigma, with h = sigma_k - sigma_{k+1} and
    H = sigma_{k-1} - sigma_k:

        z_{k+1} = (h / H)^2 z_{k-1} + (1 - (h / H)^2) z_k - h (h + H) / H eps(z_k),

    the first step DDIM's. From a state (z_0, z_1) of `invert_belm` the first step is
    skipped. 1 model call per step. Needs abar > 0 at every timestep (no zero-SNR end).

    Parameters
    ----------
    model : callable
        ``model(x, t) -> array`` in the config's prediction type (called in the samples'
        dtype).
    state : State, tuple of two arrays, or array
        What the inverse returned, or a plain x_T.
    config : DDIMConfig
        The scheduler options (the inverse's).
    num_inference_steps : int, optional
        N; give this or `timesteps`.
    timesteps : sequence of int, optional
        A custom plan, strictly decreasing.
    callback : callable, optional
        Called with a `StepInfo` after each step (model_calls per step).
    progress : bool, default False
        Show a tqdm progress bar.
    check_finite : bool, optional
        As in `ddim_core.sample`.
    precision : {None, "float32", "float64"}, optional
        The arithmetic dtype (default: the state's).
    dtype : dtype, optional
        The samples' dtype: the model is called in it and x_0 returned in it (default: the
        State's, else the arrays').

    Returns
    -------
    array
        x_0.

    Examples
    --------
    >>> import numpy as np, ddim_core as dc
    >>> config = dc.DDIMConfig(clip_sample=False, timestep_spacing="trailing")
    >>> model = dc.GaussianMixture.create([[1.0]], [0.5], config)
    >>> x_0 = np.array([[0.5], [1.5]])
    >>> state = dc.reversible.invert_belm(model, x_0, config, 10)
    >>> bool(np.abs(dc.reversible.sample_belm(model, state, config, 10) - x_0).max() < 1e-12)
    True
    """
    plan = _plan(config, num_inference_steps, timesteps)
    _check_loop(model, _pair(state)[0], callback)
    _check_linear(plan, "BELM")
    z_prev, z, xp, dtype = _start(model, state, plan, callback, check_finite, precision, dtype)
    for i, t in _steps(plan, progress, "BELM"):
        c = _forward_row(plan, t)
        eps, x0 = _eps(model, z, t, i, c, plan, xp, check_finite, dtype)
        (a, b, e), (s_prev, s, s_next) = _belm(plan, i), _scales(plan, i)
        z_prev, z = z, backends.materialize(s_next * (a * z_prev / s_prev + b * z / s + e * eps))
        _report(callback, i, t, z, x0, 1, xp, dtype)
    return backends.cast(xp, z, dtype)


def invert_belm(
    model: Model,
    x_0: Array,
    config: DDIMConfig,
    num_inference_steps: int | None = None,
    *,
    timesteps: Sequence[int] | None = None,
    callback: Callback = None,
    progress: bool = False,
    check_finite: bool | None = None,
    precision: str | None = None,
) -> State:
    """O-BELM inversion: z_{N-1} by plain DDIM inversion of x_0, then `sample_belm`'s step
    solved for z_{k-1} (explicit: divide by (h / H)^2). Returns (z_0, z_1); 1 call per step.

    Parameters
    ----------
    model : callable
        ``model(x, t) -> array`` in the config's prediction type (called in x_0's dtype).
    x_0 : array
        The clean sample.
    config : DDIMConfig
        The scheduler options.
    num_inference_steps : int, optional
        N; give this or `timesteps`.
    timesteps : sequence of int, optional
        A custom plan, strictly decreasing (walked backwards).
    callback : callable, optional
        Called with a `StepInfo` after each step (model_calls per step).
    progress : bool, default False
        Show a tqdm progress bar.
    check_finite : bool, optional
        As in `ddim_core.sample`.
    precision : {None, "float32", "float64"}, optional
        The arithmetic dtype (default: x_0's, float32 for half precision); the state is
        returned in it.

    Returns
    -------
    State
        (z_0, z_1) = (x_T, x at the next level), in the arithmetic dtype, remembering x_0's dtype.

    Examples
    --------
    >>> import numpy as np, ddim_core as dc
    >>> config = dc.DDIMConfig(clip_sample=False, timestep_spacing="trailing")
    >>> model = dc.GaussianMixture.create([[1.0]], [0.5], config)
    >>> x_0 = np.array([[0.5]], dtype=np.float32)
    >>> state = dc.reversible.invert_belm(model, x_0, config, 10, precision="float64")
    >>> state[0].dtype, state.dtype
    (dtype('float64'), dtype('float32'))
    """
    plan = _plan(config, num_inference_steps, timesteps)
    _check_loop(model, x_0, callback)
    _check_linear(plan, "BELM")

    def update(z_next: Array, z: Array, out: Array, i: int, t: int) -> tuple[Array, Array]:
        c = _forward_row(plan, t)
        x0, eps = kernels.predict_x0_eps(
            z, out, c.sqrt_ab_from, c.sqrt_1m_ab_from, plan.config.prediction_type
        )
        (a, b, e), (s_prev, s, s_next) = _belm(plan, i), _scales(plan, i)
        return s_prev * (z_next / s_next - b * z / s - e * eps) / a, x0

    return _invert_two_step(
        model, x_0, plan, update, progress, callback, check_finite, "BELM", precision
    )


def _belm(plan: Plan, i: int) -> tuple[float, float, float]:
    """O-BELM's weights (a, b, c) of step i >= 1 in VE coordinates: with u = sigma - sigma_i,
    exact for z = 1, u, u^2 (a + b = 1, a H + c = -h, a H^2 = h^2)."""
    s_prev, s, s_next = (_sigma(plan, j) for j in (i - 1, i, i + 1))
    h, big_h = s - s_next, s_prev - s
    a = (h / big_h) ** 2
    return a, 1.0 - a, -h * (h + big_h) / big_h


def _sigma(plan: Plan, k: int) -> float:
    """VE sigma of level L_k, sqrt((1 - abar) / abar)."""
    ab = _level(plan, k)
    return math.sqrt((1.0 - ab) / ab)


def _scales(plan: Plan, i: int) -> tuple[float, float, float]:
    """sqrt(abar) of L_{i-1}, L_i, L_{i+1}: a sample divided by it is its VE form."""
    return tuple(math.sqrt(_level(plan, j)) for j in (i - 1, i, i + 1))  # type: ignore[return-value]


def _level(plan: Plan, k: int) -> float:
    t = plan.timesteps[k] if k < plan.num_inference_steps else FINAL
    return plan.schedule.alpha_bar(t)


# --- shared --------------------------------------------------------------------------------


def _invert_two_step(
    model: Model,
    x_0: Array,
    plan: Plan,
    update: Callable[[Array, Array, Array, int, int], tuple[Array, Array]],
    progress: bool,
    callback: Callback,
    check_finite: bool | None,
    name: str,
    precision: str | None,
) -> State:
    """Invert a two-step sampler: z_{N-1} by plain DDIM inversion of z_N = x_0, then
    z_{k-1} = update(z_{k+1}, z_k, model(z_k, L_k)) for k = N-1 .. 1 (step index i = k)."""
    xp = backends.namespace(x_0=x_0)
    work, dtype = _dtypes(xp, x_0.dtype, precision, None)
    n = plan.num_inference_steps
    z_next = backends.cast(xp, x_0, work)
    last = plan.timesteps[-1]
    out = _evaluate(model, z_next, last, 0, xp, check_finite, dtype)
    z, x0 = inverse_step(plan, out, last, z_next)
    _report(callback, 0, last, z, x0, 1, xp, dtype)
    for j, i in enumerate(_progress(list(range(n - 1, 0, -1)), progress, f"{name} inversion")):
        t = plan.timesteps[i]
        out = _evaluate(model, z, t, j + 1, xp, check_finite, dtype)
        z_prev, x0 = update(z_next, z, out, i, t)
        z_next, z = z, backends.materialize(z_prev)
        _report(callback, j + 1, plan.timesteps[i - 1], z, x0, 1, xp, dtype)
    return State(z, z_next, dtype)


def _start(
    model: Model,
    state: State | tuple[Array, Array] | Array,
    plan: Plan,
    callback: Callback,
    check_finite: bool | None,
    precision: str | None,
    dtype: Any,
) -> tuple[Array, Array, Namespace, Any]:
    """(z_0, z_1) in the work dtype, the namespace and the samples' dtype, to start a two-step
    sampler at k = 1: the state's pair, or x_T and one DDIM step from it."""
    if isinstance(state, tuple):
        z_prev, z = _pair(state)
        xp = backends.namespace(z_0=z_prev, z_1=z)
        work, dtype = _dtypes(xp, z.dtype, precision, _samples_dtype(state, dtype))
        return backends.cast(xp, z_prev, work), backends.cast(xp, z, work), xp, dtype
    xp = backends.namespace(x_T=state)
    work, dtype = _dtypes(xp, state.dtype, precision, dtype)
    t = plan.timesteps[0]
    z_prev = backends.cast(xp, state, work)
    z, x0 = step(plan, _evaluate(model, z_prev, t, 0, xp, check_finite, dtype), t, z_prev)
    _report(callback, 0, t, z, x0, 1, xp, dtype)
    return z_prev, z, xp, dtype


def _steps(plan: Plan, progress: bool, name: str) -> list[tuple[int, int]]:
    """(step index, timestep) of the steps after the first."""
    pairs = list(enumerate(plan.timesteps))[1:]
    return list(_progress(pairs, progress, name))  # type: ignore[arg-type]


def _evaluate(
    model: Model, x: Array, t: int, i: int, xp: Namespace, check_finite: bool | None, dtype: Any
) -> Array:
    """The model at (x, t), called with x in the samples' dtype, its output in x's (work)
    dtype."""
    out = _call(model, backends.cast(xp, x, dtype), t, i, xp, check_finite)
    return backends.cast(xp, out, x.dtype)


def _eps(
    model: Model,
    x: Array,
    t: int,
    i: int,
    c: Row,
    plan: Plan,
    xp: Namespace,
    check_finite: bool | None,
    dtype: Any,
) -> tuple[Array, Array]:
    """(eps, x0_pred) of the model at (x, t), eq. (9), in x's (work) dtype."""
    out = _evaluate(model, x, t, i, xp, check_finite, dtype)
    x0, eps = kernels.predict_x0_eps(
        x, out, c.sqrt_ab_from, c.sqrt_1m_ab_from, plan.config.prediction_type
    )
    return eps, x0


def _linear(c: Row) -> tuple[float, float]:
    """DDIM's step as x_prev = a x + b eps: a = sqrt(abar_prev / abar_t), b = sqrt(1 -
    abar_prev) - a sqrt(1 - abar_t)."""
    a = c.sqrt_ab_to / c.sqrt_ab_from
    return a, c.direction - a * c.sqrt_1m_ab_from


def _forward_row(plan: Plan, t: int) -> Row:
    return coefficients.row(StepKey(plan, 0.0, False), t)


def _report(
    callback: Callback, i: int, t: int, x: Array, x0: Array, calls: int, xp: Namespace, dtype: Any
) -> None:
    if callback is not None:
        callback(StepInfo(i, t, backends.cast(xp, x, dtype), backends.cast(xp, x0, dtype), calls))


PRECISIONS = (None, "float32", "float64")


def _dtypes(xp: Namespace, given: Any, precision: str | None, dtype: Any) -> tuple[Any, Any]:
    """(arithmetic dtype, samples' dtype): the samples' dtype is `dtype` or the input's; the
    arithmetic runs in `precision` ("float32" or "float64") when given, else in the input's
    working dtype (float32 for half precision)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: choose one of {PRECISIONS}")
    samples = given if dtype is None else dtype
    if not xp.isdtype(samples, "real floating"):
        raise TypeError(f"dtype must be a real floating dtype, got {samples}")
    work = getattr(xp, precision) if precision else backends.work_dtype(xp, given)
    return work, samples


def _samples_dtype(state: State | Array, dtype: Any) -> Any:
    """The dtype the model is called in: `dtype` if given, else a State's own."""
    return getattr(state, "dtype", None) if dtype is None and isinstance(state, State) else dtype


def _pair(state: State | tuple[Array, Array] | Array) -> tuple[Array, Array]:
    if isinstance(state, tuple):
        if len(state) != 2:
            raise ValueError(f"a state is a pair of arrays, got {len(state)} items")
        return state[0], state[1]
    return state, state


def _plan(config: DDIMConfig, n: int | None, timesteps: Sequence[int] | None) -> Plan:
    return make_plan(config, n, timesteps=timesteps)


def _check_p(p: Any) -> float:
    value = check_nonnegative("p", p)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"p={p} must be in (0, 1]")
    return value


def _check_gamma(gamma: Any) -> float:
    value = check_nonnegative("gamma", gamma)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"gamma={gamma} must be in (0, 1] (gamma = 0 is DDIM, not invertible)")
    return value


def _check_linear(plan: Plan, name: str) -> None:
    """EDICT and BELM step with the model's eps: no clipping, and abar > 0 everywhere."""
    config = plan.config
    if config.clip_sample or config.thresholding:
        raise ValueError(
            f"{name} inverts exactly only with DDIM's linear step: set clip_sample=False and "
            "thresholding=False"
        )
    if plan.schedule.alpha_bar(plan.timesteps[0]) <= 0.0:
        raise ValueError(f"{name} needs alpha_bar > 0 at every timestep (no zero-SNR end)")
