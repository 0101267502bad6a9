"""The one home of step coefficients: typed rows, their host tables, the fused form.

Every number a step multiplies by is computed here, on the host, in float64, once per plan
(eq. (9)'s weights come from `kernels.eq9`):

    step(plan, out, t, x)          -> row(key, t): a Row of Python floats (no device work)
    step(plan, out, t_array, x)    -> gather(key, t_array, like): the rows on x's device
    fused kernels                  -> fused_row(key, t, use_clipped): a FusedRow (floats), or
                                      fused_gather(...) on the device for array timesteps
    add_noise / get_velocity       -> noise_row(schedule, t) / noise_gather(...)

`table(key)` computes a whole table (one row per training timestep): alpha_bar_prev from the
plan, sigma_t by eq. (16), the direction weight of eq. (12), and which rows cannot be used.
Caches live beside the functions they serve, keyed by typed keys (`StepKey`, `LevelsKey`).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from . import backends, kernels
from .backends import Array, Namespace
from .plans import FINAL, Plan
from .schedules import Schedule

# 1 - abar_b - sigma^2 may round to a tiny negative number at eta = 1; below this it is an error.
DIRECTION_ROUNDING = 1e-12


class Row(NamedTuple):
    """The coefficients of one transfer from level alpha_bar_a to level alpha_bar_b, eq. (12).

    Python floats (scalar timestep) or arrays broadcasting against the sample (per-sample).

    Attributes
    ----------
    sqrt_ab_from : float or array
        sqrt(alpha_bar_a): eq. (9) at the level the step leaves.
    sqrt_1m_ab_from : float or array
        sqrt(1 - alpha_bar_a).
    sqrt_ab_to : float or array
        sqrt(alpha_bar_b): the weight of x0_pred.
    direction : float or array
        sqrt(1 - alpha_bar_b - sigma^2): the weight of eps_pred.
    sigma : float or array
        sigma_t of eq. (16), 0 for inversion: the weight of the noise.

    Examples
    --------
    >>> import ddim_core as dc
    >>> from ddim_core.coefficients import StepKey
    >>> key = StepKey(dc.make_plan(dc.DDIMConfig(), 10), 0.0, False)
    >>> r = row(key, 900)
    >>> round(r.sqrt_ab_to ** 2, 6) == round(dc.schedule(dc.DDIMConfig()).alpha_bar(800), 6)
    True
    """

    sqrt_ab_from: Any  # sqrt(abar_a): eq. (9) at the level the step leaves
    sqrt_1m_ab_from: Any  # sqrt(1 - abar_a)
    sqrt_ab_to: Any  # sqrt(abar_b): the weight of x0_pred
    direction: Any  # sqrt(1 - abar_b - sigma^2): the weight of eps_pred
    sigma: Any  # sigma_t of eq. (16), 0 for inversion: the weight of the noise


class FusedRow(NamedTuple):
    """A step as fused kernels compute it: eq. (9)'s weights and eq. (12)'s, applied in the
    reference path's order, so a kernel computing in float64 equals it bit for bit:

        x0_pred  = (x0_x * x_t - x0_m * model_output) / x0_div     (then clipped to [-r, r])
        eps_pred = (eps_x * x_t - eps_m * u) / eps_div             (u: model_output, or the
                                                                     clipped x0_pred when
                                                                     eps_from_x0)
        x_b      = sqrt_ab_to * x0_pred + direction * eps_pred + sigma * noise

    Python floats (scalar timestep) or arrays on the sample's device (`fused_gather`).

    Examples
    --------
    >>> r = fused_form(Row(0.6, 0.8, 1.0, 0.0, 0.0), "epsilon", False)
    >>> r.x0_x, r.x0_m, r.x0_div  # x0_pred = (x_t - 0.8 eps) / 0.6
    (1.0, 0.8, 0.6)
    >>> r.eps_x, r.eps_m, r.eps_div  # eps_pred = the model output itself
    (0.0, -1.0, 1.0)
    """

    x0_x: Any
    x0_m: Any
    x0_div: Any
    eps_x: Any
    eps_m: Any
    eps_div: Any
    sqrt_ab_to: Any
    direction: Any
    sigma: Any
    eps_from_x0: bool  # use_clipped_model_output: eps_pred re-derived from the clipped x0_pred


class StepKey(NamedTuple):
    """What the coefficients of a plan's steps depend on.

    Attributes
    ----------
    plan : Plan
        The plan.
    eta : float
        The eta of eq. (16).
    inverse : bool
        False: t -> t_prev (sampling); True: t_prev -> t (inversion).

    Examples
    --------
    >>> import ddim_core as dc
    >>> from ddim_core.coefficients import StepKey
    >>> key = StepKey(dc.make_plan(dc.DDIMConfig(), 10), 0.0, False)
    >>> table(key).values.shape
    (1000, 5)
    """

    plan: Plan
    eta: float
    inverse: bool  # False: t -> t_prev (sampling); True: t_prev -> t (inversion)


class LevelsKey(NamedTuple):
    """Transfers between given alpha_bar levels (k-diffusion sigma lists): row i goes from
    `alpha_bar_from[i]` to `alpha_bar_to[i]`.

    `one_minus_from` / `one_minus_to`, when given, are 1 - alpha_bar at the same levels,
    computed by the caller without cancellation (k-diffusion: sigma^2 / (1 + sigma^2)): for a
    level within a float64 rounding of 1 (sigma below about 1e-4), 1 - alpha_bar loses its
    digits, and below about 1e-8 it is 0.

    Examples
    --------
    >>> from ddim_core.coefficients import LevelsKey, table
    >>> table(LevelsKey((0.5,), (0.9,), 0.0, "epsilon")).values.shape
    (1, 5)
    """

    alpha_bar_from: tuple[float, ...]
    alpha_bar_to: tuple[float, ...]
    eta: float
    prediction_type: str
    one_minus_from: tuple[float, ...] | None = None
    one_minus_to: tuple[float, ...] | None = None


class Table(NamedTuple):
    """Host float64 rows (one `Row` per training timestep, read-only) and the rows that cannot
    be used, with the reason.

    Attributes
    ----------
    values : numpy.ndarray
        (rows, 5) float64, the fields of `Row` in order.
    invalid : mapping of int to str
        Row index -> why a step there cannot be taken.

    Examples
    --------
    >>> import ddim_core as dc
    >>> from ddim_core.coefficients import StepKey
    >>> key = StepKey(dc.make_plan(dc.DDIMConfig(), 10), 0.0, False)
    >>> found = table(key)
    >>> found.values.dtype, dict(found.invalid)
    (dtype('float64'), {})
    """

    values: np.ndarray
    invalid: Mapping[int, str]


@functools.lru_cache(maxsize=256)
def table(key: StepKey | LevelsKey) -> Table:
    """Every `Row` of a plan (indexed by timestep t), or of given level pairs, with validity.

    alpha_bar_prev comes from the plan's t_prev (never a stride), sigma_t from eq. (16), the
    direction weight from eq. (12). Cached per key.

    Parameters
    ----------
    key : StepKey or LevelsKey
        What the table is for.

    Returns
    -------
    Table

    Examples
    --------
    >>> import ddim_core as dc
    >>> from ddim_core.coefficients import StepKey
    >>> key = StepKey(dc.make_plan(dc.DDIMConfig(), 10), 0.0, False)
    >>> table(key) is table(key)
    True
    """
    if isinstance(key, StepKey):
        sched, plan = key.plan.schedule, key.plan
        alpha_bar_t = sched.alphas_cumprod
        alpha_bar_prev = sched.levels(plan.prev_table())  # the plan's t_prev, never a stride
        a, b = (alpha_bar_prev, alpha_bar_t) if key.inverse else (alpha_bar_t, alpha_bar_prev)
        prediction_type = plan.config.prediction_type
        a_c, b_c = 1.0 - a, 1.0 - b
        with np.errstate(divide="ignore", invalid="ignore"):
            variance = kernels.ddim_variance(a, b)
        cleaner = (a < b) & (a < 1.0)
    else:
        a, b = np.array(key.alpha_bar_from), np.array(key.alpha_bar_to)
        prediction_type = key.prediction_type
        a_c = 1.0 - a if key.one_minus_from is None else np.array(key.one_minus_from)
        b_c = 1.0 - b if key.one_minus_to is None else np.array(key.one_minus_to)
        # eq. (16), its 1 - a / b as (b - a) / b, the gap taken where it does not cancel: from
        # the complements near the clean level, from the levels themselves near pure noise
        gap = np.where(a_c < b, a_c - b_c, b - a)
        with np.errstate(divide="ignore", invalid="ignore"):
            variance = b_c / a_c * (gap / b)
        cleaner = a_c > b_c
    variance = np.where(cleaner, variance, 0.0)  # no noise when b is not cleaner
    sigma = key.eta * np.sqrt(variance)  # sigma_t, eq. (16)
    with np.errstate(over="ignore"):  # a huge eta: -inf, refused below as any negative value
        direction_sq = b_c - sigma**2
    direction = np.sqrt(np.where(direction_sq < 0.0, 0.0, direction_sq))
    values = np.stack([np.sqrt(a), np.sqrt(a_c), np.sqrt(b), direction, sigma], axis=1)
    values.setflags(write=False)
    invalid = {}
    for i in np.flatnonzero(direction_sq < -DIRECTION_ROUNDING).tolist():
        invalid[i] = (
            f"eta={key.eta} makes 1 - alpha_bar_prev - sigma_t^2 = {direction_sq[i]:.3g} < 0 "
            "(its square root would be NaN); use a smaller eta (eta <= 1 is always valid)"
        )
    # An inverse step's level a is its t_prev's, not that of the timestep it is indexed by.
    left = key.plan.prev_table() if isinstance(key, StepKey) and key.inverse else None
    betas = key.plan.schedule.betas if isinstance(key, StepKey) else None
    for level, at in ((0.0, a == 0.0), (1.0, a_c == 0.0)):
        for i in np.flatnonzero(at).tolist():
            t = i if left is None else int(left[i])  # (the final level, -1: its own)
            beta = None if betas is None or t < 0 else float(betas[t])  # (a level 0's cause)
            reason = kernels.unrecoverable(level, prediction_type, beta=beta)
            if reason is not None:
                invalid[i] = reason if left is None else _leaving(int(left[i]), level, reason)
    return Table(values, invalid)


def _leaving(t_prev: int, level: float, reason: str) -> str:
    """Why an inverse step cannot leave the level of `t_prev` (and, for the clean level of
    set_alpha_to_one=True, how to move it)."""
    why = reason.replace("there", f"at t_prev = {t_prev}, the level the step up to it leaves", 1)
    if t_prev == FINAL and level == 1.0:
        why += "; set_alpha_to_one=False makes that level alpha_bar_0 instead"
    return why


def row(key: StepKey, t: int) -> Row:
    """The `Row` of a step from timestep `t` (inverse: up to `t`) as Python floats.

    Parameters
    ----------
    key : StepKey
        The plan, eta and direction.
    t : int
        The timestep.

    Returns
    -------
    Row

    Raises
    ------
    ValueError
        t outside [0, num_train_timesteps), or a step that cannot be taken there
        (zero-SNR level with epsilon prediction, eta too large).

    Examples
    --------
    >>> import ddim_core as dc
    >>> from ddim_core.coefficients import StepKey
    >>> key = StepKey(dc.make_plan(dc.DDIMConfig(), 10), 0.0, False)
    >>> row(key, 900).sigma
    0.0
    """
    return Row(*_host_row(key.plan.uid, key.eta, key.inverse, t))


@backends.host_constant  # plain arguments: torch.compile runs it eagerly, keeps the floats
def _host_row(uid: int, eta: float, inverse: bool, t: int) -> tuple[float, ...]:
    found = table(StepKey(backends.registered(uid), eta, inverse))
    check_timesteps(found, [t])
    return tuple(found.values[t].tolist())


def check_timesteps(found: Table, timesteps: list[int], name: str = "timestep") -> None:
    """Check timesteps against a table.

    Parameters
    ----------
    found : Table
        The table.
    timesteps : list of int
        The timesteps to check.
    name : str
        The caller's argument they came from, for the message.

    Raises
    ------
    ValueError
        For the first timestep outside the table or in a row that cannot be used.

    Examples
    --------
    >>> import ddim_core as dc
    >>> from ddim_core.coefficients import StepKey
    >>> key = StepKey(dc.make_plan(dc.DDIMConfig(), 10), 0.0, False)
    >>> check_timesteps(table(key), [0, 999])
    """
    size = found.values.shape[0]
    for t in timesteps:
        if not 0 <= t < size:
            raise ValueError(f"{name}={t} is outside [0, num_train_timesteps={size})")
        if t in found.invalid:
            raise ValueError(f"cannot step at timestep {t}: {found.invalid[t]}")


def gather(key: StepKey, timesteps: Array, like: Array, xp: Namespace) -> Row:
    """The Rows of per-sample `timesteps`, gathered on the device from the plan's table.

    Not range-checked: the caller checks what it can read without a sync.

    Parameters
    ----------
    key : StepKey
        The plan, eta and direction.
    timesteps : array
        Integers on `like`'s device, shape () or (batch,).
    like : array
        The sample: its library, device and dtype; the rows broadcast against it.
    xp : array namespace
        The sample's namespace.

    Returns
    -------
    Row
        Arrays of shape (batch, 1, ..., 1).

    Examples
    --------
    >>> import numpy as np, array_api_compat.numpy as xp
    >>> import ddim_core as dc
    >>> from ddim_core.coefficients import StepKey
    >>> key = StepKey(dc.make_plan(dc.DDIMConfig(), 10), 0.0, False)
    >>> r = gather(key, np.array([900, 800]), np.zeros((2, 3)), xp)
    >>> r.sqrt_ab_to.shape
    (2, 1)
    """
    return Row(*_gather(key, timesteps, like, xp))


def noise_row(schedule: Schedule, t: int, name: str = "timestep") -> tuple[float, ...]:
    """(sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t)) of the forward process q(x_t | x_0).

    Parameters
    ----------
    schedule : Schedule
        The schedule.
    t : int
        The timestep.
    name : str
        The caller's argument `t` came from, for the message of a `t` outside the table.

    Returns
    -------
    tuple of float

    Examples
    --------
    >>> import ddim_core as dc
    >>> a, b = noise_row(dc.schedule(dc.DDIMConfig()), 500)
    >>> round(a * a + b * b, 12)
    1.0
    """
    return _host_noise_row(schedule.uid, t, name)


@backends.host_constant
def _host_noise_row(uid: int, t: int, name: str) -> tuple[float, ...]:
    values = noise_table(backends.registered(uid))
    check_timesteps(Table(values, {}), [t], name)
    return tuple(values[t].tolist())


def noise_size(schedule: Schedule) -> int:
    """The schedule's number of training timesteps, through its `uid`: torch.compile cannot
    read a table's shape off a Schedule that `schedule(config)` made while it traced (a
    constant of the graph).

    Parameters
    ----------
    schedule : Schedule
        The schedule.

    Returns
    -------
    int

    Examples
    --------
    >>> import ddim_core as dc
    >>> noise_size(dc.schedule(dc.DDIMConfig(num_train_timesteps=500)))
    500
    """
    return _host_noise_size(schedule.uid)


@backends.host_constant
def _host_noise_size(uid: int) -> int:
    return int(noise_table(backends.registered(uid)).shape[0])


def noise_gather(schedule: Schedule, timesteps: Array, like: Array, xp: Namespace) -> list[Array]:
    """`noise_row` for an integer array of timesteps, gathered on `like`'s device.

    Parameters
    ----------
    schedule : Schedule
        The schedule.
    timesteps : array
        Integers, shape () or (batch,).
    like : array
        The sample.
    xp : array namespace
        The sample's namespace.

    Returns
    -------
    list of array
        The two columns, shaped to broadcast against `like`.

    Examples
    --------
    >>> import numpy as np, array_api_compat.numpy as xp, ddim_core as dc
    >>> cols = noise_gather(dc.schedule(dc.DDIMConfig()), np.array([1, 2]), np.zeros((2, 3)), xp)
    >>> [c.shape for c in cols]
    [(2, 1), (2, 1)]
    """
    return _gather(schedule, timesteps, like, xp)


@functools.lru_cache(maxsize=64)
def noise_table(schedule: Schedule) -> np.ndarray:
    """Columns (sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t)) for every training timestep.

    Parameters
    ----------
    schedule : Schedule
        The schedule.

    Returns
    -------
    numpy.ndarray
        (T, 2) host float64, read-only, cached.

    Examples
    --------
    >>> import ddim_core as dc
    >>> noise_table(dc.schedule(dc.DDIMConfig())).shape
    (1000, 2)
    """
    ab = schedule.alphas_cumprod
    values = np.stack([np.sqrt(ab), np.sqrt(1.0 - ab)], axis=1)
    values.setflags(write=False)
    return values


def _gather(key: StepKey | Schedule, timesteps: Array, like: Array, xp: Namespace) -> list[Array]:
    dtype = backends.work_dtype(xp, like.dtype)
    if backends.compiling():  # the table built outside the trace: a constant of the graph
        values = _traced_table(key, xp, backends.device(like), dtype)
    else:
        values = device_table(key, xp, backends.device(like), dtype)
    rows = backends.take_rows(values, timesteps, xp)
    columns = [rows[:, k] for k in range(values.shape[1])]
    if like.ndim == 0:  # one row of shape (1,): a 0-d sample stays 0-d, as in `fused_gather`
        return [xp.reshape(col, ()) for col in columns]
    return [backends.broadcast_to_sample(col, like.ndim, xp) for col in columns]


@backends.device_cache
def device_table(key: StepKey | Schedule, xp: Namespace, device: Any, dtype: Any) -> Array:
    """A step table (`StepKey`) or noise table (`Schedule`) on a device, in `dtype`, cached.

    Parameters
    ----------
    key : StepKey or Schedule
        Which table.
    xp : array namespace
        The target library.
    device : object
        The target device.
    dtype : object
        The target dtype (cast on the host).

    Returns
    -------
    array

    Examples
    --------
    >>> import array_api_compat.numpy as xp
    >>> import ddim_core as dc
    >>> from ddim_core.coefficients import StepKey
    >>> key = StepKey(dc.make_plan(dc.DDIMConfig(), 10), 0.0, False)
    >>> device_table(key, xp, "cpu", xp.float32).dtype
    dtype('float32')
    """
    values = noise_table(key) if isinstance(key, Schedule) else table(key).values
    return backends.from_host(values, xp, device=device, dtype=dtype)


def traced_key(key: StepKey) -> tuple[int, float, bool]:
    """A StepKey as plain constants for a `backends.host_constant` function while
    torch.compile traces.

    There a plan passed to the compiled function whose uid changed between calls is a
    symbolic int, which such a function cannot take: `operator.index` makes it a constant
    again, guarded on its value (one graph per plan). A symbolic eta equal to 0 (the default,
    and every inversion) is made the constant 0.0 the same way; another symbolic eta stays
    symbolic, and torch.compile says so.

    Parameters
    ----------
    key : StepKey
        The plan, eta and direction.

    Returns
    -------
    tuple
        (the plan's uid, eta, inverse).

    Examples
    --------
    >>> import ddim_core as dc
    >>> plan = dc.make_plan(dc.DDIMConfig(), 10)
    >>> traced_key(StepKey(plan, 0.0, True)) == (plan.uid, 0.0, True)
    True
    """
    eta = 0.0 if key.eta == 0.0 else key.eta
    return operator.index(key.plan.uid), eta, key.inverse


@backends.host_constant
def invalid_rows(uid: int, eta: float, inverse: bool) -> tuple[int, tuple[tuple[int, str], ...]]:
    """The table length and its rows where no step can be taken, with the reason, as plain
    values (`table` of the registered plan `uid`): what a traced step checks a timestep
    against without the table, which torch.compile does not trace.

    Parameters
    ----------
    uid : int
        The plan's `uid`.
    eta : float
        The eta of eq. (16).
    inverse : bool
        The direction.

    Returns
    -------
    tuple
        (num_train_timesteps, ((row, reason), ...) in ascending row order).

    Examples
    --------
    >>> import ddim_core as dc
    >>> plan = dc.make_plan(dc.DDIMConfig(rescale_betas_zero_snr=True), 10)  # epsilon
    >>> size, rows = invalid_rows(plan.uid, 0.0, False)
    >>> size, [row for row, reason in rows]  # alpha_bar_999 = 0: x_0 cannot be recovered
    (1000, [999])
    """
    found = table(StepKey(backends.registered(uid), eta, inverse))
    return int(found.values.shape[0]), tuple(sorted(found.invalid.items()))


def _traced_table(key: StepKey | Schedule, xp: Namespace, device: Any, dtype: Any) -> Array:
    """`device_table` while torch.compile traces: made by a host_constant function of plain
    arguments, so that the table is a constant of the graph (its NumPy code is not traced)."""
    if isinstance(key, Schedule):
        return _host_device_table(operator.index(key.uid), None, False, xp, device, dtype)
    return _host_device_table(*traced_key(key), xp, device, dtype)


@backends.host_constant
def _host_device_table(
    uid: int, eta: float | None, inverse: bool, xp: Namespace, device: Any, dtype: Any
) -> Array:
    # Cached here (`device_cache` keeps nothing while compiling): torch registers the result
    # as a graph attribute named after this function, once per tensor object, so a graph that
    # gathers from one table at several steps must get the same tensor each time.
    cache_key = (uid, eta, inverse, xp.__name__, device, dtype)
    found = _TRACED_TABLES.get(cache_key)
    if found is None:
        owner = backends.registered(uid)  # a Schedule (eta None) or a Plan
        key = owner if eta is None else StepKey(owner, eta, inverse)
        values = noise_table(key) if isinstance(key, Schedule) else table(key).values
        found = backends.from_host(values, xp, device=device, dtype=dtype)
        if len(_TRACED_TABLES) >= 256:
            _TRACED_TABLES.clear()
        _TRACED_TABLES[cache_key] = found
    return found


_TRACED_TABLES: dict[tuple[Any, ...], Array] = {}


# --- the fused form, for fused kernels ----------------------------------------------------------


def fused_row(key: StepKey, t: int, use_clipped: bool) -> FusedRow:
    """The FusedRow of a step from `t` (checked like `row`), cached per plan and timestep.

    Parameters
    ----------
    key : StepKey
        The plan, eta and direction.
    t : int
        The timestep.
    use_clipped : bool
        use_clipped_model_output: eps_pred re-derived from the clipped x0_pred.

    Returns
    -------
    FusedRow
        Python floats.

    Raises
    ------
    ValueError
        As `row`: t outside [0, num_train_timesteps), or a step that cannot be taken there.

    Examples
    --------
    >>> import ddim_core as dc
    >>> key = StepKey(dc.make_plan(dc.DDIMConfig(), 10), 0.0, False)
    >>> fused = fused_row(key, 900, False)
    >>> fused == fused_form(row(key, 900), "epsilon", False), fused_row(key, 900, False) is fused
    (True, True)
    """
    found = _FUSED_ROWS.get((key, t, use_clipped))
    if found is None:
        found = fused_form(row(key, t), key.plan.config.prediction_type, use_clipped)
        if len(_FUSED_ROWS) > 65536:
            _FUSED_ROWS.clear()
        _FUSED_ROWS[(key, t, use_clipped)] = found
    return found


_FUSED_ROWS: dict[tuple[StepKey, int, bool], FusedRow] = {}


def fused_form(c: Row, prediction_type: str, use_clipped: bool) -> FusedRow:
    """A Row with eq. (9)'s weights (`kernels.eq9`): everything a fused kernel multiplies by.

    Parameters
    ----------
    c : Row
        The step's coefficients (floats, or host arrays with one entry per row).
    prediction_type : str
        "epsilon", "sample" or "v_prediction".
    use_clipped : bool
        Take eps_pred's weights from `kernels.eps_from_x0_weights` (applied to the clipped
        x0_pred) instead of eq. (9).

    Returns
    -------
    FusedRow

    Examples
    --------
    >>> fused_form(Row(0.6, 0.8, 1.0, 0.0, 0.0), "epsilon", True)[3:6]  # (x_t - 0.6 x0) / 0.8
    (1.0, 0.6, 0.8)
    """
    w_x0, w_eps = kernels.eq9(c.sqrt_ab_from, c.sqrt_1m_ab_from, prediction_type)
    if use_clipped:
        w_eps = kernels.eps_from_x0_weights(c.sqrt_ab_from, c.sqrt_1m_ab_from)
    return FusedRow(*w_x0, *w_eps, c.sqrt_ab_to, c.direction, c.sigma, use_clipped)


def fused_gather(
    key: StepKey, timesteps: Array, use_clipped: bool, like: Array, xp: Namespace
) -> FusedRow:
    """`fused_row` for an integer array of timesteps on like's device (0-d or (batch,)): the
    rows gathered on the device, shaped to broadcast against `like`; no host read.

    Not range-checked, like `gather`: the caller checks what it can read without a sync.

    Parameters
    ----------
    key : StepKey
        The plan, eta and direction.
    timesteps : array
        Integers on `like`'s device, shape () or (batch,).
    use_clipped : bool
        use_clipped_model_output.
    like : array
        The sample: its library, device and (work) dtype.
    xp : array namespace
        The sample's namespace.

    Returns
    -------
    FusedRow
        Nine arrays of shape (batch, 1, ..., 1) in like's work dtype, and `use_clipped`.

    Examples
    --------
    >>> import numpy as np, array_api_compat.numpy as xp
    >>> import ddim_core as dc
    >>> key = StepKey(dc.make_plan(dc.DDIMConfig(), 10), 0.0, False)
    >>> fused = fused_gather(key, np.array([900, 800]), False, np.zeros((2, 3)), xp)
    >>> fused.x0_div.shape, float(fused.x0_div[0, 0]) == fused_row(key, 900, False).x0_div
    ((2, 1), True)
    """
    dtype = backends.work_dtype(xp, like.dtype)
    values = fused_device_table(key, use_clipped, xp, backends.device(like), dtype)
    rows = backends.take_rows(values, timesteps, xp)
    rows = xp.reshape(rows, (rows.shape[0], 9, *([1] * max(like.ndim - 1, 0))))
    columns = [rows[:, k, ...] for k in range(9)]
    if like.ndim == 0:
        columns = [xp.reshape(col, ()) for col in columns]
    return FusedRow._make([*columns, use_clipped])


@backends.device_cache
def fused_device_table(
    key: StepKey, use_clipped: bool, xp: Namespace, device: Any, dtype: Any
) -> Array:
    """The first nine `FusedRow` fields of every timestep's row, as a (T, 9) array of `xp` on
    `device` in `dtype` (cached per plan, direction, eta, device and dtype): what
    `fused_gather` takes rows from, and what a kernel's device-table form reads itself.

    Parameters
    ----------
    key : StepKey
        The plan, eta and direction.
    use_clipped : bool
        use_clipped_model_output.
    xp : array namespace
    device : device of xp
    dtype : real floating dtype of xp

    Returns
    -------
    array
        Shape (num_train_timesteps, 9).

    Examples
    --------
    >>> import numpy as np
    >>> import ddim_core as dc
    >>> key = StepKey(dc.make_plan(dc.DDIMConfig(), 10), 0.0, False)
    >>> fused_device_table(key, False, np, "cpu", np.float64).shape
    (1000, 9)
    """
    columns = fused_form(Row(*table(key).values.T), key.plan.config.prediction_type, use_clipped)
    values = np.stack(np.broadcast_arrays(*columns[:9]), axis=1)
    return backends.from_host(values, xp, device=device, dtype=dtype)
