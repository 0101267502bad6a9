"""Timestep plans: which timesteps N inference steps visit, and where each step goes.

A plan is the descending list of timesteps t_0 > t_1 > ... > t_{N-1} and, for each, t_prev:
the next timestep of the plan, the last step going to the final level (-1: alpha_bar = 1 with
set_alpha_to_one, else alpha_bar_0). t_prev is read from the plan, never recomputed with a
stride, so that every spacing is exact. The inverse plan is the mirror image: it walks the same
pairs backwards, from t_prev up to t.

`prev_timestep="stride"` (the diffusers-compatibility rule) instead takes
t_prev = t - T // N, as diffusers' DDIMScheduler does; the two rules agree for "leading"
except where T // N <= steps_offset, whose last step the stride rule takes to
steps_offset - T // N >= 0 and the plan to the final level.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import itertools
from collections.abc import Mapping, Sequence, Set
from typing import Any

import numpy as np

from . import backends, kernels
from .config import DDIMConfig, check_bool, check_int
from .schedules import Schedule, schedule

FINAL = -1  # t_prev of the last step: the clean level past t = 0


@dataclasses.dataclass(frozen=True, eq=False)
class Plan(backends.Registered):
    """The timesteps of one sampling run and the level each step moves to.

    Made by `make_plan` (cached); frozen.

    Attributes
    ----------
    config : DDIMConfig
        The options the plan was made from.
    schedule : Schedule
        The host alpha_bar tables.
    timesteps : tuple of int
        t_0 > t_1 > ... > t_{N-1}, in sampling order.
    prev_timesteps : tuple of int
        For each timestep, where its forward step lands (`FINAL` = -1 for the clean level).

    Examples
    --------
    >>> import ddim_core as dc
    >>> plan = dc.make_plan(dc.DDIMConfig(timestep_spacing="trailing"), 3)
    >>> plan.pairs
    ((999, 666), (666, 332), (332, -1))
    >>> plan.inverse_pairs
    ((-1, 332), (332, 666), (666, 999))
    """

    config: DDIMConfig
    schedule: Schedule
    timesteps: tuple[int, ...]
    prev_timesteps: tuple[int, ...]

    def __repr__(self) -> str:
        ts, prev = self.timesteps, self.prev_timesteps
        return (
            f"Plan(N={len(ts)}, timesteps {ts[0]} -> {ts[-1]}, t_prev {prev[0]} -> {prev[-1]}, "
            f"T={self.schedule.num_train_timesteps}, {self.schedule.alphas_cumprod.dtype}, "
            f"{self.config!r})"
        )

    @property
    def num_inference_steps(self) -> int:
        """N, the number of steps."""
        return len(self.timesteps)

    @property
    def pairs(self) -> tuple[tuple[int, int], ...]:
        """(t, t_prev) for each forward step, in sampling order."""
        return tuple(zip(self.timesteps, self.prev_timesteps, strict=True))

    @property
    def inverse_timesteps(self) -> tuple[int, ...]:
        """The destination timestep of each inverse step, in inversion order (ascending)."""
        return self.timesteps[::-1]

    @property
    def inverse_pairs(self) -> tuple[tuple[int, int], ...]:
        """(t_source, t_destination) for each inverse step: the forward pairs mirrored."""
        return tuple((prev, t) for t, prev in reversed(self.pairs))

    def prev_timestep(self, t: int) -> int:
        """Where a forward step from `t` lands (`FINAL` = -1 for the clean level).

        For a timestep outside the plan, the "plan" rule takes the largest plan timestep below it,
        so per-sample timesteps between plan points stay well defined; the "stride" rule takes
        t - T // N as diffusers does.

        Parameters
        ----------
        t : int
            A timestep in [0, num_train_timesteps).

        Returns
        -------
        int

        Raises
        ------
        TypeError
            `t` is not an integer.
        ValueError
            `t` outside [0, num_train_timesteps).
        """
        T = self.schedule.num_train_timesteps
        return self._prev(check_int("t", t, low=0, high=T - 1))

    def _prev(self, t: int) -> int:
        if self.config.prev_timestep == "stride":
            prev = t - self.schedule.num_train_timesteps // self.num_inference_steps
            return max(prev, FINAL)
        ascending = self.inverse_timesteps
        i = bisect.bisect_left(ascending, t)
        return ascending[i - 1] if i > 0 else FINAL

    def prev_table(self) -> np.ndarray:
        """`prev_timestep(t)` for every t in [0, T).

        Returns
        -------
        numpy.ndarray
            Host int64, read-only.
        """
        return _prev_table(self)


def make_plan(
    config: DDIMConfig,
    num_inference_steps: int | None = None,
    *,
    timesteps: Sequence[int] | None = None,
    check_first_step: bool = True,
) -> Plan:
    """The plan for `num_inference_steps` steps of `config`'s spacing, or for custom `timesteps`.

    Plans are cached: the same arguments give the same Plan object.

    Parameters
    ----------
    config : DDIMConfig
        Spacing, steps_offset, prev_timestep rule and schedule.
    num_inference_steps : int, optional
        N in [1, num_train_timesteps].
    timesteps : sequence of int, optional
        Custom timesteps, strictly decreasing, in [0, num_train_timesteps): a list, tuple or
        1-D integer array of any library (a tensor is read to the host once).
    check_first_step : bool, default True
        Refuse a plan whose first step cannot be taken (epsilon prediction at a zero-SNR
        first timestep: x_0 is not recoverable there). False leaves that to the step, which
        refuses that timestep alone: for a plan entered below its first step (img2img) or
        walked backwards (inversion's steps up), as diffusers' schedulers take it.

    Returns
    -------
    Plan

    Raises
    ------
    TypeError
        `config` is not a DDIMConfig, `timesteps` is not a sequence (a mapping, a set, an
        array traced by jax.jit), or a timestep is not an integer.
    ValueError
        Neither or both of `num_inference_steps` and `timesteps`; out of range values; a first
        step that cannot be taken (epsilon prediction at alpha_bar = 0: zero terminal SNR, or a
        schedule whose alpha_bar underflowed to 0 in float64; unless
        `check_first_step` is False); custom timesteps
        with prev_timestep="stride" where a stride lands between them (other than the
        spacing's own timesteps, as diffusers does); `timesteps` on a device whose values
        the host cannot read (torch's meta device).

    Examples
    --------
    >>> import ddim_core as dc
    >>> dc.make_plan(dc.DDIMConfig(), 4).timesteps
    (750, 500, 250, 0)
    >>> dc.make_plan(dc.DDIMConfig(), timesteps=[900, 500, 100]).prev_timesteps
    (500, 100, -1)
    >>> zero_snr = dc.DDIMConfig(rescale_betas_zero_snr=True, timestep_spacing="trailing")
    >>> dc.make_plan(zero_snr, 4, check_first_step=False).timesteps  # img2img enters below 999
    (999, 749, 499, 249)
    """
    if not isinstance(config, DDIMConfig):
        raise TypeError(f"config must be a DDIMConfig, got {type(config).__name__}")
    # The options as plain values: torch.compile before 2.13 cannot hand a dataclass to a
    # host_constant function ("can't reconstruct arbitrary frozen dataclass instances").
    options = tuple(getattr(config, name) for name in _OPTIONS)
    check_first_step = check_bool("check_first_step", check_first_step)
    return _make_plan(options, num_inference_steps, timesteps, check_first_step)


_OPTIONS = tuple(f.name for f in dataclasses.fields(DDIMConfig))


@backends.host_constant
def _make_plan(
    options: tuple[Any, ...], n: int | None, timesteps: Sequence[int] | None, check_first: bool
) -> Plan:
    config = _config(options)
    if (n is None) == (timesteps is None):
        raise ValueError("give exactly one of num_inference_steps and timesteps")
    if timesteps is not None:
        custom = _custom_timesteps(timesteps, config.num_train_timesteps)
        _check_stride(config, custom)
        plan = _plan(config, None, custom)
    else:
        plan = _plan(config, _check_num_steps(n, config.num_train_timesteps), None)
    if check_first:
        _check_first_step(plan)
    return plan


@functools.lru_cache(maxsize=256)
def _config(options: tuple[Any, ...]) -> DDIMConfig:
    return DDIMConfig(**dict(zip(_OPTIONS, options, strict=True)))


@functools.lru_cache(maxsize=256)
def _plan(config: DDIMConfig, n: int | None, custom: tuple[int, ...] | None) -> Plan:
    ts = custom if custom is not None else spaced_timesteps(config, n or 0)
    sched = schedule(config)
    plan = Plan(config, sched, ts, ())
    prev = (
        tuple(plan._prev(t) for t in ts) if config.prev_timestep == "stride" else ((*ts[1:], FINAL))
    )
    return dataclasses.replace(plan, prev_timesteps=prev)


def spaced_timesteps(config: DDIMConfig, n: int) -> tuple[int, ...]:
    """diffusers' `set_timesteps` choice of n timesteps, descending (Lin et al. 2023, table 2),
    or the DDIM paper's "quadratic" one (`quadratic_timesteps`, not in diffusers).

    Matches diffusers 0.42 for every n, with one fix: for 62 of the 1000 step counts of a
    1000-step model (n = 61, 103, ...) diffusers' "trailing" float `arange` yields n + 1
    timesteps, the last one -1; that spurious entry is dropped here.

    Parameters
    ----------
    config : DDIMConfig
        Its `timestep_spacing`, `steps_offset` and `num_train_timesteps` are read.
    n : int
        The number of timesteps, in [1, num_train_timesteps].

    Returns
    -------
    tuple of int

    Raises
    ------
    TypeError
        `config` is not a DDIMConfig, or n is not an integer.
    ValueError
        n out of range, or a steps_offset that moves the first timestep past T - 1.

    Examples
    --------
    >>> import ddim_core as dc
    >>> [spaced_timesteps(dc.DDIMConfig(timestep_spacing=s), 4)
    ...  for s in ("leading", "trailing", "linspace")]
    [(750, 500, 250, 0), (999, 749, 499, 249), (999, 666, 333, 0)]
    """
    if not isinstance(config, DDIMConfig):
        raise TypeError(f"config must be a DDIMConfig, got {type(config).__name__}")
    T = config.num_train_timesteps
    _check_num_steps(n, T)
    if config.timestep_spacing == "linspace":
        ts = np.linspace(0, T - 1, n).round()[::-1].astype(np.int64)
    elif config.timestep_spacing == "leading":
        ts = (np.arange(n) * (T // n))[::-1].astype(np.int64)
    elif config.timestep_spacing == "quadratic":
        ts = np.array(quadratic_timesteps(T, n)[::-1], dtype=np.int64)
    else:  # trailing
        ts = (np.round(np.arange(T, 0, -T / n)).astype(np.int64) - 1)[:n]
    # The offset is added in Python ints: in int64 a large one wraps round below T.
    offset = config.steps_offset if config.timestep_spacing in ("leading", "quadratic") else 0
    out = tuple(int(t) + offset for t in ts)
    if out[0] >= T:
        raise ValueError(
            f"steps_offset={config.steps_offset} moves the first timestep to {out[0]}, past "
            f"num_train_timesteps - 1 = {T - 1}; use a smaller steps_offset or fewer steps"
        )
    return out


def quadratic_timesteps(T: int, n: int) -> list[int]:
    """The DDIM paper's quadratic selection (Song et al. 2021, appendix D.2), ascending:
    tau_k = floor(c k^2) with c such that the last is 0.8 T, c = 0.8 T / (n - 1)^2, computed in
    integers. Where floor(c k^2) does not exceed its predecessor (c (2k - 1) < 1, for
    n > sqrt(0.8 T) + 1) the timestep is moved up to predecessor + 1, so the plan stays strictly
    increasing; the paper's schedule otherwise.

    Parameters
    ----------
    T : int
        num_train_timesteps.
    n : int
        The number of timesteps, in [1, T].

    Returns
    -------
    list of int
        Ascending; `spaced_timesteps` adds steps_offset and reverses them.

    Raises
    ------
    TypeError
        T or n not an integer.
    ValueError
        T < 1, or n outside [1, T].

    Examples
    --------
    >>> quadratic_timesteps(1000, 10)
    [0, 9, 39, 88, 158, 246, 355, 483, 632, 800]
    """
    T = check_int("T", T, low=1)
    n = _check_num_steps(n, T)
    if n == 1:
        return [0]
    taus: list[int] = []
    for k in range(n):
        tau = (4 * T * k * k) // (5 * (n - 1) ** 2)
        taus.append(max(tau, taus[-1] + 1) if taus else tau)
    return taus


def _check_num_steps(n: Any, T: int) -> int:
    return check_int("num_inference_steps", n, low=1, high=T)


def _custom_timesteps(timesteps: Any, T: int) -> tuple[int, ...]:
    ts = tuple(check_int("timesteps", t) for t in _sequence(timesteps))
    if not ts:
        raise ValueError("timesteps must not be empty")
    out_of_range = [t for t in ts if not 0 <= t < T]
    if out_of_range:
        raise ValueError(f"timesteps must lie in [0, {T}); got {out_of_range[0]}")
    if any(a <= b for a, b in itertools.pairwise(ts)):
        raise ValueError(f"timesteps must be strictly decreasing, got {list(ts)}")
    return ts


def _check_stride(config: DDIMConfig, custom: tuple[int, ...]) -> None:
    """The stride t - T // N is diffusers' rule for its own spacings: of other timesteps, a step
    that lands between them leaves a level the next step does not start from."""
    if config.prev_timestep != "stride":
        return
    T, n = config.num_train_timesteps, len(custom)
    try:
        if custom == spaced_timesteps(config, n):
            return
    except ValueError:  # (an offset past T - 1: not its own timesteps)
        pass
    for t, after in zip(custom, (*custom[1:], FINAL), strict=True):
        if max(t - T // n, FINAL) != after:
            raise ValueError(
                f'prev_timestep="stride" takes t - num_train_timesteps // N, diffusers\' rule '
                f"for its own {config.timestep_spacing!r} timesteps; of the custom timesteps "
                f"{list(custom)} (N = {n}) the step from {t} would land on "
                f'{max(t - T // n, FINAL)}, not on {after}: use prev_timestep="plan"'
            )


def _sequence(timesteps: Any) -> Any:
    """Custom timesteps as a 1-D sequence (not yet checked as integers): a tensor of any
    library read to the host; a string, a mapping or a set (no order) refused."""
    if isinstance(timesteps, str | bytes | Mapping | Set) or not hasattr(timesteps, "__iter__"):
        raise TypeError(f"timesteps must be a sequence of integers, got {timesteps!r}")
    if backends.jax_traced(timesteps):
        raise TypeError(
            "timesteps are traced by jax.jit, but a plan is configuration read on the host: "
            "make it outside the jitted function, or pass timesteps as a static argument"
        )
    if hasattr(timesteps, "dtype") and not isinstance(timesteps, np.ndarray):
        # a tensor of any library (diffusers' scheduler.timesteps): configuration data, read once
        timesteps = backends.to_host(timesteps, dtype=None, name="timesteps")
    if getattr(timesteps, "ndim", 1) != 1:
        raise ValueError(f"timesteps must be 1-D, got shape {tuple(timesteps.shape)}")
    return timesteps


def _check_first_step(plan: Plan) -> None:
    """Refuse a plan whose first step cannot recover x_0 (zero SNR with epsilon prediction)."""
    problem = _first_step_problem(plan)
    if problem is not None:
        raise ValueError(problem)


@functools.lru_cache(maxsize=256)
def _first_step_problem(plan: Plan) -> str | None:
    """Why the plan's first step cannot be taken, or None: once per plan (make_plan runs the
    check at each call, a functional Scheduler's `plan` at each step)."""
    t, schedule = plan.timesteps[0], plan.schedule
    reason = kernels.unrecoverable(
        schedule.alpha_bar(t), plan.config.prediction_type, beta=float(schedule.betas[t])
    )
    return None if reason is None else f"cannot step at timestep {t}: {reason}"


@functools.lru_cache(maxsize=256)
def _prev_table(plan: Plan) -> np.ndarray:
    table = np.array([plan._prev(t) for t in range(plan.schedule.num_train_timesteps)])
    table.setflags(write=False)
    return table
