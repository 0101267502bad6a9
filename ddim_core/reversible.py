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

Precision: the states are carried in compensated arithmetic (`ddim_core.compensated`: each
array as hi + lo, about twice the working precision) in the samples' working dtype (float32
for half precision), or in `precision` ("float32" or "float64", where the backend has it).
The model is called on hi, in the samples' dtype. The updates are affine, so the inverse
reproduces every state to about 2^-2p, its hi bit for bit: the model sees the same inputs both
ways and the guided model's Jacobian never gets to amplify the updates' rounding. `invert_*`
returns the state as a `State` (hi arrays, with the low words in `State.lo`), which remembers
the samples' dtype; `sample_*` returns x_0 in it. At guidance 7.5, 20 steps, real data: x_0
back bit for bit in float64, float32, float16 and bfloat16 (`benchmarks/inversion.py`), where
a single rounding of the state (float64 rounded to float32) moves the sample about 1e-3
(`tests/reversible_report.py`, quoted in docs/inversion-methods.md). A plain tuple of the
arrays (low words dropped) starts one rounding off, which the guided sampler amplifies. Not
without limits (docs/inversion-methods.md measures them): BDIA at a small gamma and EDICT over
many steps grow the state past what it carries, and BELM's float32 round trip can miss a few
entries (``precision="float64"`` keeps them). The cost: a few dozen elementwise operations per
update instead of a handful (no model call, no host read); so the default needs no float64,
which some devices lack. A `precision` narrower than the arrays' own working dtype ("float32"
for float64 data) is a ValueError: it would round x_0 (or x_T, or the state) to it on the way
in, about 6e-8 relative, and the round trip would miss x_0 by that.

Under `jax.jit`: `State` is a JAX pytree node (the core never imports jax: registered at this
module's import or a State's making once jax is imported, so import jax before making a State
to jit), so a State passes into and out of a jitted function whole, and the loops run
traced. But XLA rounds the compensated products differently from eager execution, so a jitted
round trip, or a state made under jit and sampled eagerly (or the reverse), is exact only to
about the working precision (`tests/reversible_report.py` measures it, docs/inversion-methods.md
quotes it), and EDICT's compile time grows fast with the steps. For x_0 to the last bit, run
these loops eagerly and jit the model.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from . import backends, coefficients, kernels
from . import compensated as cw
from .backends import Array, Namespace
from .coefficients import Row, StepKey
from .config import DDIMConfig, check_real
from .plans import FINAL, Plan, make_plan
from .sampling import Model, StepInfo, _call, _check_loop, _progress
from .steps import inverse_step, step

Callback = Callable[[StepInfo], Any] | None
Origin = tuple[str, tuple[int, ...], float | None, DDIMConfig]


class State(tuple):  # type: ignore[type-arg]
    """What sampling needs to return exactly to x_0: a pair of arrays (EDICT's two sequences,
    or two consecutive samples), in the arithmetic dtype; `dtype`, the samples' dtype (the
    model is called in it and x_0 is returned in it); and `lo`, the low words of the two
    arrays (the state in compensated arithmetic is first + lo[0], second + lo[1]; see
    `ddim_core.compensated`), or None; and `origin`, what made it (method, timesteps, p or
    gamma) when `invert_*` did, or None: `sample_*` refuse a state made by another method,
    plan or parameter, which would return something else than x_0 without a sign.

    Raises
    ------
    TypeError, ValueError
        A `lo` that is not None or a pair of arrays of the state's library and shapes.

    Examples
    --------
    >>> import numpy as np
    >>> state = State(np.zeros(2), np.ones(2), np.float32)
    >>> len(state), state.dtype, state.lo
    (2, <class 'numpy.float32'>, None)
    """

    dtype: Any
    lo: tuple[Array, Array] | None
    origin: Origin | None

    def __new__(
        cls,
        first: Array,
        second: Array,
        dtype: Any,
        lo: tuple[Array, Array] | None = None,
        origin: Origin | None = None,
    ) -> State:
        backends.register_pytree(State, _flatten, _unflatten)  # jax imported since
        state = super().__new__(cls, (first, second))
        state.dtype = dtype
        state.lo = None if lo is None else _check_low_words(lo, first, second)
        state.origin = origin
        return state

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle (and copy) with the dtype, the low words and the origin."""
        return (State, (self[0], self[1], self.dtype, self.lo, self.origin))

    def scaled(self, first: float, second: float, *, divide: bool = False) -> State:
        """The state with its arrays times (or divided by) host constants, in compensated
        arithmetic: dividing by the factors a scaling used returns the same state, low words
        included, to about 2^-2p.

        Parameters
        ----------
        first, second : float
            The factors of the two arrays (nonzero).
        divide : bool, default False
            Divide by the factors instead.

        Returns
        -------
        State
            Its arrays (and low words) in the arithmetic dtype: float32 for half-precision
            arrays, whose `dtype` it keeps.

        Raises
        ------
        TypeError
            A factor that is not a real number.
        ValueError
            A factor that is zero, NaN or infinite.

        Examples
        --------
        >>> import numpy as np
        >>> state = State(np.array([0.7]), np.array([0.3]), np.float64)
        >>> there = state.scaled(1 / 3, 1.0)
        >>> float(there.lo[0][0]) != 0.0   # 0.7 fl(1/3) needs more than one float
        True
        >>> back = there.scaled(1 / 3, 1.0, divide=True)
        >>> back[0].tolist(), abs(float(back.lo[0][0])) < 1e-30
        ([0.7], True)
        """
        for name, factor in (("first", first), ("second", second)):
            if check_real(name, factor) == 0.0:
                raise ValueError(f"{name}={factor!r} must be a nonzero factor")
        xp = backends.namespace(first=self[0], second=self[1])
        work = backends.work_dtype(xp, self[0].dtype)  # half arrays (a plain tuple): float32
        k = _constants(xp, work)
        lo = (None, None) if self.lo is None else self.lo
        wide = [
            [None if a is None else backends.cast(xp, a, work) for a in hi_lo]
            for hi_lo in zip(self, lo, strict=True)
        ]
        pairs = [
            _materialized(cw.divide(pair, k(f), xp) if divide else cw.scale(k(f), pair, xp))
            for f, pair in zip(
                (first, second), (cw.Pair.of(hi, xp, low) for hi, low in wide), strict=True
            )
        ]
        lows = (pairs[0].lo, pairs[1].lo)
        return State(pairs[0].hi, pairs[1].hi, self.dtype, lows, self.origin)


def _flatten(state: State) -> tuple[tuple[Array, ...], tuple[Any, bool, Origin | None]]:
    lo = () if state.lo is None else tuple(state.lo)
    return (state[0], state[1], *lo), (state.dtype, state.lo is not None, state.origin)


def _unflatten(aux: tuple[Any, bool, Origin | None], leaves: Sequence[Any]) -> State:
    """A State of `leaves` as they are: jax passes tracers, or placeholders, not arrays to
    check (so not through State's checks)."""
    dtype, has_lo, origin = aux
    state = tuple.__new__(State, (leaves[0], leaves[1]))
    state.dtype, state.origin = dtype, origin
    state.lo = (leaves[2], leaves[3]) if has_lo else None
    return state


# A State passes into and out of jax.jit whole, its arrays, the low words included, the leaves;
# dtype, whether it has low words, and origin static (unregistered, jax.jit stacked it into one
# array, dropping the low words, dtype and origin).
backends.register_pytree(State, _flatten, _unflatten)


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
        EDICT's mixing weight, in (0, 1]: the inverse's (`invert_edict` says how many steps
        float32 data takes at a given p).
    timesteps : sequence of int, optional
        A custom plan, strictly decreasing.
    callback : callable, optional
        Called with a `StepInfo` after each step (model_calls per step).
    progress : bool, default False
        Show a tqdm progress bar.
    check_finite : bool, optional
        As in `ddim_core.sample`.
    precision : {None, "float32", "float64"}, optional
        The arithmetic dtype (default: the state's; a state `invert_*` made only in its own);
        not narrower than the arrays' own (float32 would round float64 arrays).
    dtype : dtype, optional
        The samples' dtype: the model is called in it and x_0 returned in it (default: the
        State's, else the arrays'; a state `invert_*` made only in its own).

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
    _check_loop(model, _pair(state)[0], callback, "state")
    _check_linear(plan, "EDICT")
    _check_origin(state, ("edict", plan.timesteps, mix, config), "sample_edict")
    x, y, xp, work, dtype = _state_pairs(state, precision, dtype)
    k = _constants(xp, work)
    p_, q_ = k(mix), k(1.0 - mix)
    for i, t in enumerate(_progress(plan.timesteps, progress, "EDICT")):
        c = _forward_row(plan, t)
        a, b = (k(v) for v in _linear(c))
        given = _given(state, 1) if i == 0 else None
        eps_y, x0 = _eps(model, y.hi, t, i, c, plan, xp, check_finite, dtype, given)
        x_mid = cw.combine([(a, x), (b, eps_y)], xp)
        eps_x, _ = _eps(model, x_mid.hi, t, i, c, plan, xp, check_finite, dtype)
        y_mid = cw.combine([(a, y), (b, eps_x)], xp)
        x = cw.combine([(p_, x_mid), (q_, y_mid)], xp)
        y = cw.combine([(p_, y_mid), (q_, x)], xp)
        _report(callback, i, t, x.hi, x0, 2, xp, dtype)
    return backends.cast(xp, x.hi, dtype)


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
        EDICT's mixing weight, in (0, 1]. The inverse divides x - y by about p^2 a step, so
        x_T - y_T grows with the steps, and once that passes what the compensated state
        carries (about twice the working precision's bits) the round trip misses x_0 with no
        error: float32 data at p = 0.93 after a hundred or more steps. For many steps raise
        p, or for float32 data pass ``precision="float64"``; docs/inversion-methods.md quotes
        `tests/reversible_report.py`'s measurements.
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
        returned in it. Not narrower than x_0's own (float32 would round float64 data).

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
    _check_loop(model, x_0, callback, "x_0")
    _check_linear(plan, "EDICT")
    xp = backends.namespace(x_0=x_0)
    work, dtype = _dtypes(xp, x_0.dtype, precision, None, "x_0")
    k = _constants(xp, work)
    p_, minus_q = k(mix), k(-(1.0 - mix))
    one = k(1.0)
    x = y = cw.Pair.of(backends.cast(xp, x_0, work), xp)
    for i, t in enumerate(_progress(plan.inverse_timesteps, progress, "EDICT inversion")):
        c = _forward_row(plan, t)
        a, b = (k(v) for v in _linear(c))
        minus_b = k(-b.value)
        y_mid = cw.divide(cw.combine([(one, y), (minus_q, x)], xp), p_, xp)
        x_mid = cw.divide(cw.combine([(one, x), (minus_q, y_mid)], xp), p_, xp)
        given = _given() if i == 0 else None  # x_mid: x_0 unmixed
        eps_x, x0 = _eps(model, x_mid.hi, t, i, c, plan, xp, check_finite, dtype, given)
        y = _materialized(cw.divide(cw.combine([(one, y_mid), (minus_b, eps_x)], xp), a, xp))
        eps_y, _ = _eps(model, y.hi, t, i, c, plan, xp, check_finite, dtype)
        x = _materialized(cw.divide(cw.combine([(one, x_mid), (minus_b, eps_y)], xp), a, xp))
        _report(callback, i, t, x.hi, x0, 2, xp, dtype)
    return State(x.hi, y.hi, dtype, (x.lo, y.lo), ("edict", plan.timesteps, mix, config))


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
        BDIA's gamma, in (0, 1]. Keep it near 1: the inverse's x_T grows like
        (1 / gamma)^N, and once that passes what the compensated state carries (about 2p
        bits) the round trip misses x_0 with no error (float16 data: x_T past float16's
        range, whatever the precision). With a small gamma take fewer steps, or for float32
        data ``precision="float64"``; docs/inversion-methods.md quotes
        `tests/reversible_report.py`'s measurements.
    timesteps : sequence of int, optional
        A custom plan, strictly decreasing.
    callback : callable, optional
        Called with a `StepInfo` after each step (model_calls per step).
    progress : bool, default False
        Show a tqdm progress bar.
    check_finite : bool, optional
        As in `ddim_core.sample`.
    precision : {None, "float32", "float64"}, optional
        The arithmetic dtype (default: the state's; a state `invert_*` made only in its own);
        not narrower than the arrays' own (float32 would round float64 arrays).
    dtype : dtype, optional
        The samples' dtype: the model is called in it and x_0 returned in it (default: the
        State's, else the arrays'; a state `invert_*` made only in its own).

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
    _check_loop(model, _pair(state)[0], callback, "state")
    _check_origin(state, ("bdia", plan.timesteps, g, config), "sample_bdia")
    z_prev, z, xp, work, dtype = _start(
        model, state, plan, callback, check_finite, precision, dtype
    )
    k = _constants(xp, work)
    g_, minus_g, one = k(g), k(-g), k(1.0)
    for i, t in _steps(plan, progress, "BDIA", int(not isinstance(state, tuple))):
        given = _given(state, 1) if i == 1 and isinstance(state, tuple) else None
        out = _evaluate(model, z.hi, t, i, xp, check_finite, dtype, given)
        forward, x0 = step(plan, out, t, z.hi)
        back = inverse_step(plan, out, plan.timesteps[i - 1], z.hi).prev_sample
        z_prev, z = z, cw.combine([(g_, z_prev), (one, forward), (minus_g, back)], xp)
        _report(callback, i, t, z.hi, x0, 1, xp, dtype)
    return backends.cast(xp, z.hi, dtype)


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
    """BDIA inversion: z_{N-1} by plain DDIM inversion of x_0, then `sample_bdia`'s step
    solved for z_{k-1}:

        z_{k-1} = (z_{k+1} - phi_{k->k+1}(z_k) + gamma phi_{k->k-1}(z_k)) / gamma.

    Returns (z_0, z_1) = (x_T, x_{T-1}); 1 model call per step. Division by gamma amplifies
    rounding in z_0 (by up to (1 / gamma)^N); sampling damps it back. The round trip would be
    exact from any z_{N-1} (each step solved back is undone by sampling), but z_{N-1} is what
    makes z_0 a noise latent, so it is the plain inversion's: with sample prediction and
    set_alpha_to_one=True that starts at alpha_bar = 1, where the noise is 0 / 0, and is
    refused (`_invert_two_step`).

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
        BDIA's gamma, in (0, 1]. Keep it near 1: the inverse's x_T grows like
        (1 / gamma)^N, and once that passes what the compensated state carries (about 2p
        bits) the round trip misses x_0 with no error (float16 data: x_T past float16's
        range, whatever the precision). With a small gamma take fewer steps, or for float32
        data ``precision="float64"``; docs/inversion-methods.md quotes
        `tests/reversible_report.py`'s measurements.
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
        returned in it. Not narrower than x_0's own (float32 would round float64 data).

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
    _check_loop(model, x_0, callback, "x_0")

    def update(
        z_next: cw.Pair, z: cw.Pair, out: Array, i: int, t: int, k: Constants, xp: Namespace
    ) -> tuple[cw.Pair, Array]:
        forward, x0 = step(plan, out, t, z.hi)
        back = inverse_step(plan, out, plan.timesteps[i - 1], z.hi).prev_sample
        one = k(1.0)
        rest = cw.combine([(one, z_next), (k(-1.0), forward), (k(g), back)], xp)
        return cw.divide(rest, k(g), xp), x0

    origin = ("bdia", plan.timesteps, g, config)
    return _invert_two_step(
        model, x_0, plan, update, progress, callback, check_finite, origin, precision
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
        The arithmetic dtype (default: the state's; a state `invert_*` made only in its own);
        not narrower than the arrays' own (float32 would round float64 arrays).
    dtype : dtype, optional
        The samples' dtype: the model is called in it and x_0 returned in it (default: the
        State's, else the arrays'; a state `invert_*` made only in its own).

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
    _check_loop(model, _pair(state)[0], callback, "state")
    _check_linear(plan, "BELM")
    _check_origin(state, ("belm", plan.timesteps, None, config), "sample_belm")
    z_prev, z, xp, work, dtype = _start(
        model, state, plan, callback, check_finite, precision, dtype
    )
    k = _constants(xp, work)
    for i, t in _steps(plan, progress, "BELM", int(not isinstance(state, tuple))):
        c = _forward_row(plan, t)
        given = _given(state, 1) if i == 1 and isinstance(state, tuple) else None
        eps, x0 = _eps(model, z.hi, t, i, c, plan, xp, check_finite, dtype, given)
        a, b, e = (k(v) for v in _belm_weights(plan, i))
        z_prev, z = z, cw.combine([(a, z_prev), (b, z), (e, eps)], xp)
        _report(callback, i, t, z.hi, x0, 1, xp, dtype)
    return backends.cast(xp, z.hi, dtype)


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
    Where the last step does not move (set_alpha_to_one=False and a plan ending at t = 0:
    h = 0), it gives z_N = z_{N-1}: z_{N-1} = x_0, the plain inversion starts a step earlier,
    and the loop makes one call (and one callback) fewer. As `invert_bdia`, sample prediction
    with set_alpha_to_one=True is refused: the plain inversion would start at alpha_bar = 1.

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
        returned in it. Not narrower than x_0's own (float32 would round float64 data).

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
    _check_loop(model, x_0, callback, "x_0")
    _check_linear(plan, "BELM")

    def update(
        z_next: cw.Pair, z: cw.Pair, out: Array, i: int, t: int, k: Constants, xp: Namespace
    ) -> tuple[cw.Pair, Array]:
        c = _forward_row(plan, t)
        x0, eps = kernels.predict_x0_eps(
            z.hi, out, c.sqrt_ab_from, c.sqrt_1m_ab_from, plan.config.prediction_type
        )
        a, b, e = _belm_weights(plan, i)
        rest = cw.combine([(k(1.0), z_next), (k(-b), z), (k(-e), eps)], xp)
        return cw.divide(rest, k(a), xp), x0

    origin = ("belm", plan.timesteps, None, config)
    # a last step that does not move (alpha_bar_0 to alpha_bar_0: set_alpha_to_one=False, a
    # plan ending at t = 0) has weight (h / H)^2 = 0 on z_{N-2}: it fixes z_{N-1} = x_0 instead
    n = plan.num_inference_steps
    still = int(n > 1 and _level(plan, n) == _level(plan, n - 1))
    return _invert_two_step(
        model, x_0, plan, update, progress, callback, check_finite, origin, precision, still
    )


def _belm(plan: Plan, i: int) -> tuple[float, float, float]:
    """O-BELM's weights (a, b, c) of step i >= 1 in VE coordinates: with u = sigma - sigma_i,
    exact for z = 1, u, u^2 (a + b = 1, a H + c = -h, a H^2 = h^2)."""
    s_prev, s, s_next = (_sigma(plan, j) for j in (i - 1, i, i + 1))
    h, big_h = s - s_next, s_prev - s
    a = (h / big_h) ** 2
    return a, 1.0 - a, -h * (h + big_h) / big_h


def _belm_weights(plan: Plan, i: int) -> tuple[float, float, float]:
    """`sample_belm`'s step on the samples themselves, z_{k+1} = A z_{k-1} + B z_k + E eps:
    O-BELM's VE weights times the levels' scales."""
    (a, b, e), (s_prev, s, s_next) = _belm(plan, i), _scales(plan, i)
    return s_next * a / s_prev, s_next * b / s, s_next * e


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
    update: Callable[..., tuple[cw.Pair, Array]],
    progress: bool,
    callback: Callback,
    check_finite: bool | None,
    origin: Origin,
    precision: str | None,
    still: int = 0,
) -> State:
    """Invert a two-step sampler: z_{N-1} by plain DDIM inversion of z_N = x_0, then
    z_{k-1} = update(z_{k+1}, z_k, model(z_k, L_k), ...) for k = N-1 .. 1 (step index i = k),
    the states compensated pairs (the model and `update`'s transfers see z_k's hi). With
    `still` = 1 the last step does not move (z_{N-1} = z_N = x_0, no model call): the same
    from N - 1."""
    name = origin[0].upper()
    n = plan.num_inference_steps - still
    if plan.config.prediction_type == "sample" and _level(plan, n) == 1.0:
        raise ValueError(
            f"{name} inversion takes z_{{N-1}} from plain DDIM inversion of x_0, which with "
            "prediction_type='sample' and set_alpha_to_one=True starts at alpha_bar = 1 (the "
            "clean level), where the noise is 0 / 0; pass set_alpha_to_one=False (the last "
            "level is then alpha_bar_0)"
        )
    xp = backends.namespace(x_0=x_0)
    work, dtype = _dtypes(xp, x_0.dtype, precision, None, "x_0")
    k = _constants(xp, work)
    z_next = cw.Pair.of(backends.cast(xp, x_0, work), xp)
    last = plan.timesteps[n - 1]
    out = _evaluate(model, z_next.hi, last, 0, xp, check_finite, dtype, _given())
    first, x0 = inverse_step(plan, out, last, z_next.hi)
    z = cw.Pair.of(backends.materialize(first), xp)
    _report(callback, 0, last, z.hi, x0, 1, xp, dtype)
    rest = _progress(list(range(n - 1, 0, -1)), progress, f"{name} inversion", done=1)
    for j, i in enumerate(rest):
        t = plan.timesteps[i]
        out = _evaluate(model, z.hi, t, j + 1, xp, check_finite, dtype)
        z_prev, x0 = update(z_next, z, out, i, t, k, xp)
        z_next, z = z, _materialized(z_prev)
        _report(callback, j + 1, plan.timesteps[i - 1], z.hi, x0, 1, xp, dtype)
    return State(z.hi, z_next.hi, dtype, (z.lo, z_next.lo), origin)


def _start(
    model: Model,
    state: State | tuple[Array, Array] | Array,
    plan: Plan,
    callback: Callback,
    check_finite: bool | None,
    precision: str | None,
    dtype: Any,
) -> tuple[cw.Pair, cw.Pair, Namespace, Any, Any]:
    """(z_0, z_1) as compensated pairs in the work dtype, the namespace, the work dtype and
    the samples' dtype, to start a two-step sampler at k = 1: the state's pair, or x_T and one
    DDIM step from it."""
    if isinstance(state, tuple):
        z_prev, z, xp, work, dtype = _state_pairs(state, precision, dtype)
        return z_prev, z, xp, work, dtype
    xp = backends.namespace(x_T=state)
    work, dtype = _dtypes(xp, state.dtype, precision, dtype, "x_T")
    t = plan.timesteps[0]
    z_prev = backends.cast(xp, state, work)
    out = _evaluate(model, z_prev, t, 0, xp, check_finite, dtype, _given(state))
    z, x0 = step(plan, out, t, z_prev)
    _report(callback, 0, t, z, x0, 1, xp, dtype)
    return cw.Pair.of(z_prev, xp), cw.Pair.of(backends.materialize(z), xp), xp, work, dtype


def _state_pairs(
    state: State | tuple[Array, Array] | Array, precision: str | None, dtype: Any
) -> tuple[cw.Pair, cw.Pair, Namespace, Any, Any]:
    """A state (or one x_T for both) as two compensated pairs in the work dtype (a State's low
    words included), the namespace, the work dtype and the samples' dtype."""
    first, second = _pair(state)
    xp = backends.namespace(**{"state[0]": first, "state[1]": second})
    _check_state_arrays(first, second)
    work, dtype = _dtypes(xp, second.dtype, precision, _samples_dtype(state, dtype))
    made = isinstance(state, State) and state.origin is not None
    if made and work != second.dtype:  # its steps' coefficients rounded to another dtype
        raise ValueError(
            f"precision={precision!r}: the state was made in {second.dtype} arithmetic, and "
            "sampled in another it lands away from x_0 (by 1e-4 under guidance); pass "
            "precision=None (the state's own)"
        )
    if made and isinstance(state, State) and dtype != state.dtype:  # the model sees other x
        raise ValueError(
            f"dtype={dtype!r}: the state was made calling the model in {state.dtype}, and with "
            "the model called in another dtype it lands away from x_0 (far in half precision); "
            "pass dtype=None (the state's own) and cast x_0 afterwards"
        )
    _check_narrowing(
        xp, second.dtype, work, precision, "state" if isinstance(state, tuple) else "x_T"
    )
    lo = getattr(state, "lo", None) if isinstance(state, State) else None
    pairs = [
        cw.Pair.of(
            backends.cast(xp, hi, work), xp, None if lo is None else backends.cast(xp, lo[j], work)
        )
        for j, hi in enumerate((first, second))
    ]
    return pairs[0], pairs[1], xp, work, dtype


def _check_state_arrays(first: Array, second: Array, who: str = "") -> None:
    """A state's two arrays share one shape and dtype (`who`, the caller's name, starts the
    message): a pair of mixed dtypes would be cast to one and land away from x_0."""
    if tuple(first.shape) != tuple(second.shape) or first.dtype != second.dtype:
        raise ValueError(
            f"{who}a state's two arrays must share one shape and dtype, got "
            f"{tuple(first.shape)} {first.dtype} and {tuple(second.shape)} {second.dtype}"
        )


Constants = Callable[[float], cw.Constant]


def _constants(xp: Namespace, work: Any) -> Constants:
    """Host constants rounded to the work dtype and split (`compensated.Constant`)."""
    width = cw.bits(xp, work)
    return lambda value: cw.Constant.of(value, width)


def _check_low_words(lo: Any, first: Array, second: Array) -> tuple[Array, Array]:
    """A State's `lo` as a pair of arrays of its arrays' library and shapes: one rebuilt by
    hand (after moving the arrays, or editing the batch) failed deep in the loop, as an
    IndexError, an AttributeError or a broadcast error."""
    if not isinstance(lo, tuple | list) or len(lo) != 2:
        size = f" of {len(lo)}" if isinstance(lo, tuple | list) else ""
        raise ValueError(
            f"lo must be None or a pair of arrays (the low words of the state's two arrays), "
            f"got a {type(lo).__name__}{size}"
        )
    for j, (low, high) in enumerate(zip(lo, (first, second), strict=True)):
        if low is None:
            raise TypeError(f"lo[{j}] must be an array, got None")
        backends.namespace(**{f"lo[{j}]": low, f"state[{j}]": high})
        if high is not None and tuple(low.shape) != tuple(high.shape):
            raise ValueError(
                f"lo[{j}] has shape {tuple(low.shape)}, state[{j}] {tuple(high.shape)}: the "
                "low words must be shaped like their array"
            )
    return lo[0], lo[1]


def _materialized(pair: cw.Pair) -> cw.Pair:
    return cw.Pair(backends.materialize(pair.hi), backends.materialize(pair.lo))


def _steps(plan: Plan, progress: bool, name: str, done: int) -> Iterable[tuple[int, int]]:
    """(step index, timestep) of the steps after the first, through the bar: not listed up
    front, which would run the bar to its end before the first step. `done`: 1 where the
    first step was taken (from a plain x_T, `_start`), counted in the bar; 0 from a state."""
    pairs = list(enumerate(plan.timesteps))[1:]
    return _progress(pairs, progress, name, done)  # type: ignore[arg-type,return-value]


def _evaluate(
    model: Model,
    x: Array,
    t: int,
    i: int,
    xp: Namespace,
    check_finite: bool | None,
    dtype: Any,
    given: str | None = None,
) -> Array:
    """The model at (x, t), called with x in the samples' dtype, its output in x's (work)
    dtype. `given` names x where it is not finite: the caller's argument (`_given`), else
    None, a sample the loop made."""
    named = f"the sample at step {i}" if given is None else given
    out = _call(model, backends.cast(xp, x, dtype), t, i, xp, check_finite, named)
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
    given: str | None = None,
) -> tuple[Array, Array]:
    """(eps, x0_pred) of the model at (x, t), eq. (9), in x's (work) dtype."""
    out = _evaluate(model, x, t, i, xp, check_finite, dtype, given)
    x0, eps = kernels.predict_x0_eps(
        x, out, c.sqrt_ab_from, c.sqrt_1m_ab_from, plan.config.prediction_type
    )
    return eps, x0


def _given(state: Any = None, j: int = 0) -> str:
    """How a non-finite model input that is the caller's own argument is named: x_0 of
    `invert_*` (no `state`), or the `state` of `sample_*` (`state[j]` of a pair)."""
    name = "x_0" if state is None else f"state[{j}]" if isinstance(state, tuple) else "state"
    return f"{name}, the loop's input,"


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


def _dtypes(
    xp: Namespace, given: Any, precision: str | None, dtype: Any, name: str | None = None
) -> tuple[Any, Any]:
    """(arithmetic dtype, samples' dtype): the samples' dtype is `dtype` or the input's; the
    arithmetic runs in `precision` ("float32" or "float64") when given, else in the input's
    working dtype (float32 for half precision). With `name` (the input's), a precision
    narrower than that working dtype is refused (`_check_narrowing`)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: choose one of {PRECISIONS}")
    samples = given if dtype is None else dtype
    try:
        floating = xp.isdtype(samples, "real floating")
    except (TypeError, ValueError):
        floating = False
    if not floating:
        raise TypeError(
            f"dtype must be a real floating dtype of the arrays' library, got {samples!r}"
        )
    work = getattr(xp, precision) if precision else backends.work_dtype(xp, given)
    if precision == "float64" and not _has_float64(xp):
        raise ValueError(
            "precision='float64': this array library makes float32 of float64 here (JAX: "
            "enable jax_enable_x64); use precision=None for the compensated default"
        )
    if name is not None:
        _check_narrowing(xp, given, work, precision, name)
    return work, samples


def _check_narrowing(
    xp: Namespace, given: Any, work: Any, precision: str | None, name: str
) -> None:
    """A `precision` narrower than the input's working dtype would round the input to it on
    the way in (float64 data in float32: x_0 back only to about 6e-8 relative), against the
    samplers' promise of x_0 to the last bit: refused, with the ways out."""
    own = backends.work_dtype(xp, given)
    if precision is None or cw.bits(xp, work) >= cw.bits(xp, own):
        return
    raise ValueError(
        f"precision={precision!r} is narrower than {name}'s {given} arithmetic: it would round "
        f"{name} to {precision} (about {float(xp.finfo(work).eps) / 2:.0e} relative) and the "
        f"round trip would miss x_0 by that; pass precision=None (the arrays' own) or a wider "
        f"one, or give {name} in {precision}"
    )


def _has_float64(xp: Namespace) -> bool:
    """Whether float64 arrays are float64 (JAX without x64 makes float32 of them, warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bool(xp.asarray(0.0, dtype=xp.float64).dtype == xp.float64)


def _samples_dtype(state: State | Array, dtype: Any) -> Any:
    """The dtype the model is called in: `dtype` if given, else a State's own."""
    return getattr(state, "dtype", None) if dtype is None and isinstance(state, State) else dtype


def _pair(state: State | tuple[Array, Array] | Array) -> tuple[Array, Array]:
    if isinstance(state, tuple):
        if len(state) != 2:
            raise ValueError(f"a state is a pair of arrays, got {len(state)} items")
        for j, array in enumerate(state):
            if array is None:
                raise TypeError(f"state[{j}] must be an array, got None")
        return state[0], state[1]
    return state, state


def _plan(config: DDIMConfig, n: int | None, timesteps: Sequence[int] | None) -> Plan:
    return make_plan(config, n, timesteps=timesteps)


def _check_p(p: Any) -> float:
    value = check_real("p", p)  # a real, finite number; then the interval, negatives too
    if not 0.0 < value <= 1.0:
        raise ValueError(f"p={p} must be in (0, 1]")
    return value


def _check_gamma(gamma: Any) -> float:
    value = check_real("gamma", gamma)  # as p: negatives get the interval
    if not 0.0 < value <= 1.0:
        raise ValueError(f"gamma={gamma} must be in (0, 1] (gamma = 0 is DDIM, not invertible)")
    return value


def _check_origin(state: Any, expected: Origin, where: str) -> None:
    """A State made by `invert_*` must come from the same method, plan, parameter and config
    (the config sets the levels and the step: another one lands elsewhere)."""
    origin = getattr(state, "origin", None) if isinstance(state, State) else None
    if origin is None:
        return
    method, timesteps, option, config = origin
    if not _names_timesteps(origin):  # its plan is no timesteps: an adapter's key, unreadable
        raise ValueError(
            f"{where} got a state made over a sigma list (ddim_kdiffusion.reversible's "
            f"sample_{method}_inverse, in VE latents), not by invert_{method}; sample it with "
            f"that module's sample_{method} over the same sigmas, flipped"
        )
    if (method, tuple(timesteps), option) != (expected[0], tuple(expected[1]), expected[2]):
        raise ValueError(
            f"{where} got a state made by invert_{method} over timesteps {tuple(timesteps)}"
            f"{_option(method, option)}; it returns to x_0 only with invert_{expected[0]}'s "
            f"own plan and parameter: timesteps {tuple(expected[1])}"
            f"{_option(expected[0], expected[2])}"
        )
    if config != expected[3]:
        raise ValueError(
            f"{where} got a state made by invert_{method} under {config!r}; it returns to x_0 "
            f"only under that config, got config={expected[3]!r}"
        )


def _names_timesteps(origin: Origin) -> bool:
    """Whether an origin's plan is timesteps of its config (`invert_*`'s), not another key
    (the k-diffusion adapter's holds its sigmas' float64 bits, each far above any timestep).

    Examples
    --------
    >>> import ddim_core as dc
    >>> _names_timesteps(("bdia", (801, 1), 1.0, dc.DDIMConfig()))
    True
    """
    timesteps, config = origin[1], origin[3]
    return all(0 <= t < config.num_train_timesteps for t in timesteps)


def _option(method: str, value: float | None) -> str:
    name = {"edict": "p", "bdia": "gamma"}.get(method)
    return "" if name is None else f" with {name}={value}"


def _check_linear(plan: Plan, name: str) -> None:
    """EDICT and BELM step with the model's eps: no clipping, and abar > 0 everywhere."""
    config = plan.config
    if config.clip_sample or config.thresholding:
        raise ValueError(
            f"{name} inverts exactly only with DDIM's linear step: set clip_sample=False and "
            "thresholding=False"
        )
    first = plan.timesteps[0]
    if plan.schedule.alpha_bar(first) <= 0.0:
        cause = kernels.zero_level_cause(float(plan.schedule.betas[first]))
        raise ValueError(
            f"{name} needs alpha_bar > 0 at every timestep, but the plan starts at timestep "
            f"{first}, where alpha_bar = 0 ({cause}), and {name}'s step divides by "
            "sqrt(alpha_bar): start the plan below it (timestep_spacing='leading', or "
            "timesteps=), or use BDIA (invert_bdia / sample_bdia), which steps from there"
        )
