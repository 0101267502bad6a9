"""The conformance areas of a diffusers-style scheduler class (forward or inverse), each a
function of the wrapped target returning a `Finding`.

Value areas compare in float64 on the scheduler's own alpha_bar table, promoted to float64
(the maths of a step; its tables are the dtypes area's), at steps where the plan's t_prev and
diffusers' stride rule t - T // N agree, so that a wrong t_prev shows once, under previous
timestep. The reference is `reference`; tolerances are `assertions`'.
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from hypothesis import strategies as st

from ddim_core import kernels
from ddim_core.config import DDIMConfig

from . import reference
from .assertions import TOLERANCE, assert_step_close, describe, n_steps, rel
from .backends import dtype_name, to_numpy
from .strategies import configs, etas
from .suite import FAIL, NA, PASS, UNSUPPORTED, AllUnsupported, Divergence, Finding, search
from .suite import inputs as draw_inputs
from .targets import Crash, Malformed, Scheduler, Unsupported, describe_error

SHAPE = (2, 3, 4, 4)
SPACINGS = ("leading", "trailing", "linspace")
SCHEDULES = reference.SCHEDULES
# the tables dtypes reads: the value areas step on the target's own, so that only these show
# one built from the wrong options (betas of another range, trained_betas ignored)
TABLES: dict[str, dict[str, Any]] = {
    **SCHEDULES,
    "linear, beta_start=0.0005, beta_end=0.03": {"beta_start": 0.0005, "beta_end": 0.03},
    "T = 500": {"num_train_timesteps": 500},
    "trained_betas": {"trained_betas": tuple(np.geomspace(1e-4, 0.03, 1000).tolist())},
}
# what the value areas vary besides what each fixes
VARY = (
    "beta_schedule",
    "beta_start",
    "beta_end",
    "trained_betas",
    "num_train_timesteps",
    "set_alpha_to_one",
    "steps_offset",
    "timestep_spacing",
    "rescale_betas_zero_snr",
)


@dataclasses.dataclass(frozen=True)
class Setup:
    """A configured instance with its plan set, and exact DDIM's plan on its table.

    Made by `setup`: the value areas step `instance` from each of `steps` and compare the
    result with exact DDIM's step on `plan`.

    Attributes
    ----------
    instance : object
        The target's instance, set_timesteps(n) called on it (its tables promoted to float64
        for the value areas).
    plan : reference.Plan
        Exact DDIM's plan of n steps, on the instance's alpha_bar table (value areas) or on
        the config's exact one.
    steps : tuple of int
        The plan timesteps the value areas step from (inverting: up to): those `comparable`
        keeps.

    Examples
    --------
    >>> from ddim_core.testing.targets import wrap
    >>> s = setup(wrap(reference.ReferenceScheduler), DDIMConfig(), 4)
    >>> s.instance.timesteps
    array([750, 500, 250,   0])
    >>> s.plan.pairs
    ((750, 500), (500, 250), (250, 0), (0, -1))
    >>> s.steps
    (750, 500, 250, 0)
    """

    instance: Any
    plan: reference.Plan
    steps: tuple[int, ...]  # the timesteps the value areas step from (or up to, inverting)


def setup(target: Scheduler, config: DDIMConfig, n: int, *, own: bool = True) -> Setup:
    """Build and set_timesteps(n) the target; with `own` (the value areas) promote its tables
    to float64 and take exact DDIM on them, else (dtypes, out= buffers) on exact tables.
    Unsupported when it rejects them or when no step is comparable (see `comparable`).

    Parameters
    ----------
    target : Scheduler
        The wrapped scheduler class, forward or inverse.
    config : DDIMConfig
        The options the instance is made with.
    n : int
        The number of inference steps passed to set_timesteps.
    own : bool, optional
        True (the value areas): the instance's tables are promoted to float64
        (`Scheduler.promote`) and exact DDIM's plan is taken on its own alpha_bar table, so
        that a step's maths is compared, not its table's precision. False: the instance keeps
        its tables, the plan is on `config`'s exact float64 table. Default True.

    Returns
    -------
    Setup
        The instance, exact DDIM's plan and the steps to compare.

    Raises
    ------
    Unsupported
        If the target rejects `config` or set_timesteps(n) (`Scheduler.make`,
        `Scheduler.set_timesteps`), no exact plan of n steps exists (steps_offset moves a
        timestep past T - 1), or no step of the plan is comparable.

    Examples
    --------
    Linspace timesteps are no multiples of T // N: only the last step, to the clean level,
    goes where diffusers' stride rule goes. With zero terminal SNR, epsilon prediction cannot
    step from t = 999 (alpha_bar 0):

    >>> from ddim_core.testing.targets import wrap
    >>> target = wrap(reference.ReferenceScheduler)
    >>> setup(target, DDIMConfig(timestep_spacing="linspace"), 10).steps
    (0,)
    >>> zero_snr = DDIMConfig(**reference.SCHEDULES["zero_snr"], timestep_spacing="trailing")
    >>> setup(target, zero_snr, 10).steps
    (899, 799, 699, 599, 499, 399, 299, 199, 99)

    The one inverse step of a 1-step plan starts from the clean level (alpha_bar 1), where
    sample prediction cannot give the noise:

    >>> inverse = wrap(reference.ReferenceInverseScheduler)
    >>> setup(inverse, DDIMConfig(prediction_type="sample"), 1)
    Traceback (most recent call last):
    ...
    ddim_core.testing.targets.Unsupported: no comparable step
    """
    instance = target.make(config)
    target.set_timesteps(instance, n)
    if own:
        target.promote(instance)
    table = target.table(instance, config) if own else reference.config_schedule(config)
    try:
        plan = reference.make_plan(config, n, schedule=table)
    except ValueError as e:  # no exact plan (steps_offset past the end): nothing to compare
        raise Unsupported(str(e)) from None
    steps = comparable(plan, target.inverse)
    if not steps:
        raise Unsupported("no comparable step")
    return Setup(instance, plan, steps)


def stride_prev(plan: reference.Plan, t: int) -> int:
    """diffusers' t_prev: t - T // N (the clean level below 0).

    Parameters
    ----------
    plan : reference.Plan
        The plan: its T (num_train_timesteps) and N (num_inference_steps) are used.
    t : int
        The timestep a forward step starts from.

    Returns
    -------
    int
        t - T // N, or reference.FINAL (-1, the clean level) where that is lower.

    Examples
    --------
    >>> plan = reference.make_plan(DDIMConfig(timestep_spacing="linspace"), 10)
    >>> plan.timesteps[:3]
    (999, 888, 777)
    >>> stride_prev(plan, 999), plan.prev_timestep(999)
    (899, 888)
    >>> stride_prev(plan, 0)
    -1
    """
    return max(t - plan.config.num_train_timesteps // plan.num_inference_steps, reference.FINAL)


def comparable(plan: reference.Plan, inverse: bool) -> tuple[int, ...]:
    """Plan timesteps whose step both t_prev rules agree on and eq. (9) can take (not epsilon
    at alpha_bar 0, not sample prediction from alpha_bar 1).

    Parameters
    ----------
    plan : reference.Plan
        Exact DDIM's plan.
    inverse : bool
        Whether the steps are inverse ones: eq. (9) is then solved at the level of t_prev
        (where an inverse step starts), else at t's.

    Returns
    -------
    tuple of int
        The plan timesteps, in the plan's (descending) order, whose t_prev is also
        `stride_prev`'s, that are below T and whose source level `kernels.unrecoverable`
        accepts for the config's prediction type.

    Examples
    --------
    >>> comparable(reference.make_plan(DDIMConfig(), 4), inverse=False)
    (750, 500, 250, 0)
    >>> comparable(reference.make_plan(DDIMConfig(timestep_spacing="linspace"), 4), False)
    (0,)
    >>> plan = reference.make_plan(DDIMConfig(prediction_type="sample"), 4)
    >>> comparable(plan, inverse=True)  # the step up from the clean level is left out
    (750, 500, 250)
    """
    found = []
    for t, prev in plan.pairs:
        source = reference.level(plan, prev if inverse else t)
        if prev != stride_prev(plan, t) or t >= plan.config.num_train_timesteps:
            continue
        if kernels.unrecoverable(source, plan.config.prediction_type) is None:
            found.append(t)
    return tuple(found)


def step_matches(
    target: Scheduler,
    s: Setup,
    t: int,
    seed: int,
    *,
    dtype: str = "float64",
    scale: float = 1.0,
    eta: float = 0.0,
    use_clipped: bool = False,
) -> None:
    """One step of the target from t on seeded inputs equals exact DDIM's, and leaves its
    inputs as they were (Divergence).

    Parameters
    ----------
    target : Scheduler
        The wrapped scheduler class.
    s : Setup
        The instance and exact DDIM's plan (`setup`).
    t : int
        The timestep to step from (inverting: up to), one of `s.steps`.
    seed : int
        Seed of the sample, model output and noise (`suite.inputs`, shape SHAPE).
    dtype : str, optional
        The dtype the inputs are made in; the results are compared within its tolerance.
        Default "float64".
    scale : float, optional
        Factor of the standard normal inputs (3 sends x0_pred past the clipping range).
        Default 1.0.
    eta : float, optional
        DDIM's eta; when nonzero the noise is passed as variance_noise. Default 0.
    use_clipped : bool, optional
        Pass use_clipped_model_output=True. Default False.

    Raises
    ------
    Divergence
        If the step writes into one of its inputs, or its prev_sample or
        pred_original_sample differs from exact DDIM's by more than the tolerance
        (`assertions.assert_step_close`; the message names the config, the step, the element
        and the size of the error).
    Unsupported
        If the target's step takes no variance_noise (eta given) or
        use_clipped_model_output (`Scheduler.step`).
    Crash
        If the target's step raises.

    Examples
    --------
    >>> from ddim_core.testing.targets import wrap
    >>> target = wrap(reference.ReferenceScheduler)
    >>> step_matches(target, setup(target, DDIMConfig(), 10), 500, seed=0, eta=1.0)
    >>> class OffBy1e4(reference.ReferenceScheduler):
    ...     def step(self, *args, **kwargs):
    ...         prev, x0 = super().step(*args, **{**kwargs, "return_dict": False})
    ...         return prev * (1 + 1e-4), x0
    >>> off = wrap(OffBy1e4)
    >>> try:
    ...     step_matches(off, setup(off, DDIMConfig(), 10), 500, seed=0)
    ... except Divergence as e:
    ...     print(e)
    prev_sample[0, 2, 1, 3] = 1.3756918 but exact DDIM gives 1.3755542: off by 0.00014
    (relative 0.0001), 5e+07 x the tolerance 2.8e-12 (DDIMConfig(), 10 steps, step 500 -> 400,
    eta=0.0, float64, shape (2, 3, 4, 4))
    """
    x, m, z = draw_inputs(seed, SHAPE, dtype, scale)
    b = target.backend
    given = {"model_output": b.array(m, dtype), "sample": b.array(x, dtype)}
    if eta:
        given["variance_noise"] = b.array(z, dtype)
    before = {name: np.array(to_numpy(a), copy=True) for name, a in given.items()}
    try:
        got = target.step(
            s.instance,
            given["model_output"],
            t,
            given["sample"],
            eta=eta,
            noise=given.get("variance_noise"),
            use_clipped=use_clipped,
        )
    except Crash as e:  # the drawn example that `search` adds names no timestep
        raise _at(e, s.plan, t, target.inverse, eta, dtype) from e.__cause__
    for name, a in given.items():  # a caller reuses its arrays (a pipeline its latents)
        if not np.array_equal(to_numpy(a), before[name], equal_nan=True):
            raise Divergence(
                f"step writes into its {name} (in place): {describe(s.plan.config)}, "
                f"{n_steps(s.plan.num_inference_steps)}, step from t={t}, eta={eta}, {dtype}"
            )
    for name, result in zip(("prev_sample", "pred_original_sample"), got, strict=True):
        if result is not None and dtype_name(result.dtype) != dtype:  # else held to the tolerance
            raise Divergence(  # of its own dtype, or failed naming no dtype
                f"a {dtype} step returns {name} {dtype_name(result.dtype)}: "
                f"{describe(s.plan.config)}, {n_steps(s.plan.num_inference_steps)}, "
                f"step from t={t}, eta={eta}"
            )
    try:
        assert_step_close(
            got,
            s.plan,
            m,
            t,
            x,
            eta=eta,
            noise=z,
            use_clipped_model_output=use_clipped,
            inverse=target.inverse,
            dtype=dtype,
        )
    except AssertionError as e:
        raise Divergence(str(e)) from None


def _at(e: Crash, plan: reference.Plan, t: int, inverse: bool, eta: float, dtype: str) -> Crash:
    """`e` (a Crash, or a Malformed) naming the step it was raised at, as a divergence does."""
    src, dst = (plan.prev_timestep(t), t) if inverse else (t, plan.prev_timestep(t))
    where = (
        f"{describe(plan.config)}, {n_steps(plan.num_inference_steps)}, "
        f"{'inverse step' if inverse else 'step'} {src} -> {dst}, eta={eta}, {dtype}"
    )
    return type(e)(f"{e} at {where}")


def _value_cases(**fixed: Any) -> st.SearchStrategy[Any]:
    """(config, steps, seed, which step) for the value areas."""
    return st.tuples(
        configs(*VARY, **fixed),
        st.integers(1, 50),
        st.integers(0, 2**16),
        st.integers(0, 2**16),
    )


def _run(
    area: str,
    target: Scheduler,
    prop: Callable[[Any], None],
    strategy: st.SearchStrategy[Any],
    checked: str,
    examples: int = 40,
) -> Finding:
    try:
        found = search(prop, strategy, examples=examples)
    except AllUnsupported:
        return Finding(area, UNSUPPORTED, f"takes none of the inputs drawn ({checked})")
    return Finding(area, FAIL, found) if found else Finding(area, PASS, checked)


# --- timesteps ---------------------------------------------------------------------------------


def timesteps(target: Scheduler) -> Finding:
    """set_timesteps(N) for every N of a 1000-step model, every spacing, steps_offset 0 and 1,
    then random num_train_timesteps: the timesteps are exact DDIM's plan (mirrored to invert).

    A spacing and offset the target does not take (its constructor or set_timesteps(10)
    raises) is left out and named; set_timesteps raising for another N is a difference. The
    random configs are drawn only when the sweep finds no difference.

    Parameters
    ----------
    target : Scheduler
        The wrapped scheduler class, forward or inverse.

    Returns
    -------
    Finding
        Area "timesteps": pass (what was checked, and what was not taken); FAIL with the
        first difference found and, per spacing and offset, how many N in 1..1000 differ; or
        unsupported when the target takes none of the configs.

    Examples
    --------
    diffusers' trailing rule, round(arange(T, 0, -T / N)) - 1, gives 62 of the 1000 step
    counts an extra timestep, -1 (the reference scheduler passes: every N of every spacing,
    about ten seconds):

    >>> from ddim_core.testing.targets import wrap
    >>> class DiffusersTrailing:
    ...     def __init__(self, timestep_spacing="leading"):
    ...         if timestep_spacing != "trailing":
    ...             raise ValueError("trailing spacing only")
    ...     def set_timesteps(self, n):
    ...         self.timesteps = (np.round(np.arange(1000, 0, -1000 / n)) - 1).astype(int)
    ...     def step(self, model_output, timestep, sample):
    ...         raise NotImplementedError
    >>> found = timesteps(wrap(DiffusersTrailing, backend_name="numpy"))
    >>> print(found.verdict, found.detail)
    FAIL DDIMConfig(timestep_spacing='trailing'), N=61: 62 timesteps, not 61: [-1] not in the
    plan; step counts N in 1..1000 that differ: trailing steps_offset=0: 62 (not taken: ...)
    """
    area = "timesteps"
    failures: list[tuple[str, int, str]] = []  # (spacing, N, message)
    counted: dict[tuple[str, int], int] = {}
    skipped: list[str] = []
    rejected: set[tuple[str, int]] = set()  # left out of the random configs too
    for spacing, offset in itertools.product(SPACINGS, (0, 1)):
        config = DDIMConfig(timestep_spacing=spacing, steps_offset=offset)
        try:
            instance = target.make(config)
            target.set_timesteps(instance, 10)
        except Unsupported as e:
            skipped.append(f"{spacing}: {e}")
            rejected.add((spacing, offset))
            continue
        for n in range(1, config.num_train_timesteps + 1):
            message = _timesteps_differ(target, instance, config, n)
            if message is not None:
                counted[spacing, offset] = counted.get((spacing, offset), 0) + 1
                failures.append((spacing, n, message))
    note = f" (not taken: {'; '.join(sorted(set(skipped)))})" if skipped else ""
    if failures:
        spacing, n, message = failures[0]
        counts = ", ".join(
            f"{s} steps_offset={o}: {k}" for (s, o), k in sorted(counted.items(), key=str)
        )
        return Finding(
            area, FAIL, f"{message}; step counts N in 1..1000 that differ: {counts}{note}"
        )

    def prop(case: tuple[DDIMConfig, int]) -> None:
        config, n = case
        if (config.timestep_spacing, config.steps_offset) in rejected:
            raise Unsupported(f"takes no {config.timestep_spacing} spacing")
        instance = target.make(config)
        message = _timesteps_differ(target, instance, config, min(n, config.num_train_timesteps))
        if message is not None:
            raise Divergence(message)

    strategy = st.tuples(
        configs("num_train_timesteps", "timestep_spacing", "steps_offset"), st.integers(1, 2000)
    )
    checked = "every N of T = 1000, every spacing, steps_offset 0 and 1; random T" + note
    return _run(area, target, prop, strategy, checked)


def _timesteps_differ(target: Scheduler, instance: Any, config: DDIMConfig, n: int) -> str | None:
    try:
        want = list(reference.spaced_timesteps(config, n))
    except ValueError:
        return None  # no exact plan: nothing to compare
    try:
        have = target.set_timesteps(instance, n)
    except Unsupported as e:
        return f"{describe(config)}: set_timesteps({n}) raises {e}"
    want = want[::-1] if target.inverse else want
    if have == want:
        return None
    case = f"{describe(config)}, N={n}"
    extra = [t for t in have if t not in want]
    if len(have) != len(want) and extra:
        return f"{case}: {len(have)} timesteps, not {len(want)}: {extra} not in the plan"
    i = next((k for k, (a, b) in enumerate(zip(have, want, strict=False)) if a != b), None)
    i = min(len(have), len(want)) if i is None else i
    got = str(have[i]) if i < len(have) else "nothing"
    exact = str(want[i]) if i < len(want) else "nothing"
    return f"{case}: timesteps[{i}] = {got}, the plan has {exact} ({len(have)} timesteps)"


# --- previous timestep -------------------------------------------------------------------------


def previous_timestep(target: Scheduler) -> Finding:
    """Where each step of a whole plan goes (forward: its t_prev; inverse: the level it
    starts from), read off a probe step, for every spacing: the plan's next timestep.

    The probe: epsilon prediction, model output 0 and a sample of sqrt(alpha_bar) / 2 at the
    source level, so that the result names the level the target used. Up to 20 plans of 1 to
    1000 steps (steps_offset 0 or 1) per spacing; a spacing the target takes no config of is left
    out.

    Parameters
    ----------
    target : Scheduler
        The wrapped scheduler class, forward or inverse.

    Returns
    -------
    Finding
        Area "previous timestep": pass naming the spacings checked; FAIL with the first step
        that goes elsewhere per spacing; or unsupported when no spacing is taken.

    Examples
    --------
    diffusers' rule t_prev = t - T // N is the plan's next timestep for leading spacing only:

    >>> from ddim_core.testing.targets import wrap
    >>> class StridePrev(reference.ReferenceScheduler):  # takes no steps_offset
    ...     def __init__(self, timestep_spacing="leading"):
    ...         super().__init__(timestep_spacing=timestep_spacing)
    ...         self.config = self.config.replace(prev_timestep="stride")
    >>> found = previous_timestep(wrap(StridePrev))
    >>> print(found.verdict, found.detail)
    FAIL trailing, N=3: the step from t=666 goes to t=333; the plan's next timestep is 332;
    linspace, N=2: the step from t=999 goes to t=499; the plan's next timestep is 0
    """
    area = "previous timestep"
    found, checked = [], []
    for spacing in SPACINGS:
        strategy = st.tuples(st.just(spacing), st.integers(1, 1000), st.integers(0, 1))
        try:
            message = search(lambda case: _probe_plan(target, *case), strategy, examples=20)
        except AllUnsupported:
            continue
        checked.append(spacing)
        if message:
            found.append(message)
    if found:
        return Finding(area, FAIL, "; ".join(found))
    if not checked:
        return Finding(area, UNSUPPORTED, "takes no spacing")
    what = "starts from" if target.inverse else "goes to"
    return Finding(area, PASS, f"each step {what} the plan's next timestep ({', '.join(checked)})")


def _probe_plan(target: Scheduler, spacing: str, n: int, offset: int) -> None:
    """epsilon prediction, model output 0, sample sqrt(alpha_bar) / 2 at the source level:
    x0_pred = 1/2 exactly, and the step lands on sqrt(alpha_bar_dest) / 2, which names the
    level the target used (forward: its t_prev; inverse: its source level)."""
    config = DDIMConfig(timestep_spacing=spacing, steps_offset=offset)
    instance = target.make(config)
    ts = target.set_timesteps(instance, n)
    target.promote(instance)
    table = target.table(instance, config)
    try:
        plan = reference.make_plan(config, n, schedule=table)
    except ValueError as e:
        raise Unsupported(str(e)) from None
    levels = np.concatenate([table.alphas_cumprod, [table.final_alpha_cumprod]])
    zeros = target.backend.array(np.zeros((1, 2, 1, 1)))
    for t in plan.inverse_timesteps if target.inverse else plan.timesteps:
        if t not in ts:
            continue  # the timesteps area reports this
        prev = plan.prev_timestep(t)
        source = prev if target.inverse else t
        x = np.full((1, 2, 1, 1), 0.5 * np.sqrt(reference.level(plan, source)))
        try:
            out = to_numpy(target.step(instance, zeros, t, target.backend.array(x))[0])
        except Crash as e:
            raise _at(e, plan, t, target.inverse, 0.0, "float64") from e.__cause__
        if target.inverse:  # out = sqrt(ab_t) x / sqrt(ab_source')
            measured = reference.level(plan, t) * (x[0, 0, 0, 0] / out[0, 0, 0, 0]) ** 2
        else:  # out = sqrt(ab_prev') / 2
            measured = (2.0 * out[0, 0, 0, 0]) ** 2
        expected = reference.level(plan, prev)
        if abs(measured - expected) <= 1e-9 * max(expected, 1e-300):
            continue
        landed = int(np.argmin(np.abs(levels - measured)))
        landed = reference.FINAL if landed == len(levels) - 1 else landed
        if reference.level(plan, landed) == expected:
            continue  # two timesteps at one level (alpha_bar_0 and the final level)
        case = f"{spacing}, N={n}" + (f", steps_offset={offset}" if offset else "")
        if target.inverse:
            raise Divergence(
                f"{case}: the inverse step to t={t} starts from t={landed}'s level; "
                f"the forward plan steps {t} -> {prev}"
            )
        raise Divergence(
            f"{case}: the step from t={t} goes to t={landed}; the plan's next timestep is {prev}"
        )


# --- step values -------------------------------------------------------------------------------


def step_values(target: Scheduler, prediction: str) -> Finding:
    """float64 steps of random configs in one prediction type, eta 0, no clipping.

    Up to 40 configs (schedule, table options, spacing, offset), plans of 1 to 50 steps,
    one comparable step each on seeded inputs (`step_matches`), against exact DDIM on the
    target's own alpha_bar table.

    Parameters
    ----------
    target : Scheduler
        The wrapped scheduler class, forward or inverse.
    prediction : str
        The prediction type: "epsilon", "sample" or "v_prediction".

    Returns
    -------
    Finding
        Area "step values: <prediction>": pass; FAIL with the first divergence, shrunk; or
        unsupported when the target takes none of the configs drawn.

    Examples
    --------
    >>> from ddim_core.testing.targets import wrap
    >>> step_values(wrap(reference.ReferenceScheduler), "epsilon")
    Finding(area='step values: epsilon', verdict='pass', detail='random configs, float64')
    >>> class OffBy1e4(reference.ReferenceScheduler):
    ...     def step(self, *args, **kwargs):
    ...         prev, x0 = super().step(*args, **{**kwargs, "return_dict": False})
    ...         return prev * (1 + 1e-4), x0
    >>> found = step_values(wrap(OffBy1e4), "sample")
    >>> print(found.verdict, found.detail)
    FAIL prev_sample[...] = ... but exact DDIM gives ...: off by ... (relative 0.0001), ...
    """
    area = f"step values: {prediction}"

    def prop(case: tuple[DDIMConfig, int, int, int]) -> None:
        config, n, seed, pick = case
        s = setup(target, config, n)
        step_matches(target, s, s.steps[pick % len(s.steps)], seed)

    strategy = _value_cases(prediction_type=prediction, clip_sample=False)
    return _run(area, target, prop, strategy, "random configs, float64")


def clipping(target: Scheduler) -> Finding:
    """clip_sample (random ranges) and dynamic thresholding (random ratio and bound), inputs
    of scale 1 and 3, with use_clipped_model_output.

    Random configs of every prediction type, float64, one comparable step each
    (`step_matches`); use_clipped_model_output for forward schedulers only.

    Parameters
    ----------
    target : Scheduler
        The wrapped scheduler class, forward or inverse.

    Returns
    -------
    Finding
        Area "clipping and thresholding": pass; FAIL with the first divergence, shrunk; or
        unsupported when the target takes none of the configs drawn.

    Examples
    --------
    >>> from ddim_core.testing.targets import wrap
    >>> print(clipping(wrap(reference.ReferenceScheduler)).verdict)
    pass
    >>> clipping(wrap(reference.ReferenceInverseScheduler)).detail
    'clip_sample and thresholding, float64'
    """
    area = "clipping and thresholding"
    checked = "clip_sample and thresholding, float64"
    clip = {"clip_sample": st.just(True), "clip_sample_range": st.floats(0.5, 3)}
    thresholding = {
        "thresholding": st.just(True),
        "clip_sample": st.booleans(),
        "dynamic_thresholding_ratio": st.floats(0.5, 1.0),
        "sample_max_value": st.floats(1.0, 3.0),
    }

    def prop(case: Any) -> None:
        (config, n, seed, pick), options, scale, clipped = case
        s = setup(target, config.replace(**options), n)
        t = s.steps[pick % len(s.steps)]
        step_matches(target, s, t, seed, scale=scale, use_clipped=clipped and not target.inverse)

    # each kind its own examples: drawn from one strategy, the kind whose draws the target
    # skips more (options it does not take) could be left with one example of 40
    findings = [
        _run(
            area,
            target,
            prop,
            st.tuples(
                _value_cases(prediction_type=configs().map(lambda c: c.prediction_type)),
                st.fixed_dictionaries(options),
                st.sampled_from([1.0, 3.0]),
                st.booleans(),
            ),
            checked,
            examples=20,
        )
        for options in (clip, thresholding)
    ]
    failed = [f for f in findings if f.verdict == FAIL]
    if failed:
        return failed[0]
    if all(f.verdict == UNSUPPORTED for f in findings):
        return findings[0]
    # a kind whose every draw the target refused passed nothing: said, not claimed
    untaken = [
        kind
        for kind, f in zip(("clip_sample", "thresholding"), findings, strict=True)
        if f.verdict == UNSUPPORTED
    ]
    return Finding(area, PASS, checked + "".join(f" ({k}: not taken)" for k in untaken))


def eta_noise(target: Scheduler) -> Finding:
    """eta in (0, 1] with given noise (variance_noise), with and without
    use_clipped_model_output.

    Random configs of every prediction type, float64, one comparable step each
    (`step_matches`).

    Parameters
    ----------
    target : Scheduler
        The wrapped scheduler class.

    Returns
    -------
    Finding
        Area "eta noise": pass; FAIL with the first divergence, shrunk; n/a for an inverse
        scheduler; unsupported when step takes no variance_noise or the target takes none of
        the configs drawn.

    Examples
    --------
    >>> from ddim_core.testing.targets import wrap
    >>> eta_noise(wrap(reference.ReferenceScheduler))
    Finding(area='eta noise', verdict='pass', detail='eta in (0, 1], float64')
    >>> eta_noise(wrap(reference.ReferenceInverseScheduler))
    Finding(area='eta noise', verdict='n/a', detail='inversion is deterministic')
    >>> class NoNoise(reference.ReferenceScheduler):
    ...     def step(self, model_output, timestep, sample, return_dict=True):
    ...         return super().step(model_output, timestep, sample, return_dict=return_dict)
    >>> eta_noise(wrap(NoNoise))
    Finding(area='eta noise', verdict='unsupported', detail='step takes no variance_noise')
    """
    area = "eta noise"
    if target.inverse:
        return Finding(area, NA, "inversion is deterministic")
    if "variance_noise" not in target.step_params:
        return Finding(area, UNSUPPORTED, "step takes no variance_noise")

    def prop(case: Any) -> None:
        (config, n, seed, pick), eta, clipped = case
        s = setup(target, config, n)
        step_matches(target, s, s.steps[pick % len(s.steps)], seed, eta=eta, use_clipped=clipped)

    strategy = st.tuples(
        _value_cases(prediction_type=configs().map(lambda c: c.prediction_type)),
        etas().filter(lambda e: e > 0),
        st.booleans(),
    )
    return _run(area, target, prop, strategy, "eta in (0, 1], float64")


# --- inverse mirror ----------------------------------------------------------------------------


def inverse_mirror(target: Scheduler) -> Finding:
    """Invert with the target, then sample with exact DDIM along the forward plan, with a model
    whose output depends on t only (each inverse step is then the exact inverse of a forward
    step): x_0 comes back.

    Random configs (no clipping, no zero SNR) and plans of 1 to 50 steps, float64, on the
    target's own table; x_0 must come back within TOLERANCE["float64"] * N /
    sqrt(min alpha_bar), relative.

    Parameters
    ----------
    target : Scheduler
        The wrapped scheduler class.

    Returns
    -------
    Finding
        Area "inverse mirror": pass; FAIL with how far from x_0 the round trip lands,
        shrunk; n/a for a forward scheduler; unsupported when the target takes none of the
        configs drawn.

    Examples
    --------
    >>> from ddim_core.testing.targets import wrap
    >>> inverse_mirror(wrap(reference.ReferenceInverseScheduler)).verdict
    'pass'
    >>> inverse_mirror(wrap(reference.ReferenceScheduler)).detail
    'a forward scheduler (check its inverse class)'
    """
    area = "inverse mirror"
    if not target.inverse:
        return Finding(area, NA, "a forward scheduler (check its inverse class)")

    def prop(case: tuple[DDIMConfig, int, int]) -> None:
        config, n, seed = case
        instance = target.make(config)
        ts = target.set_timesteps(instance, n)
        target.promote(instance)
        try:
            plan = reference.make_plan(config, n, schedule=target.table(instance, config))
        except ValueError as e:
            raise Unsupported(str(e)) from None
        x0, _, _ = draw_inputs(seed, SHAPE)

        def eps(t: int) -> np.ndarray:
            return np.random.default_rng([seed, t + 1]).standard_normal(SHAPE)

        b = target.backend
        x = b.array(x0)
        for t in ts:
            x = target.step(instance, b.array(eps(t)), t, x)[0]
        back = reference.sample(lambda y, t: eps(t), to_numpy(x), plan)
        ab = min(reference.level(plan, t) for t in plan.timesteps)
        limit = TOLERANCE["float64"] * len(ts) / np.sqrt(ab)
        error = rel(back, x0)
        if not error <= limit:
            raise Divergence(
                f"{describe(config)}, N={n}: sampling after inverting returns x_0 off by "
                f"{error:.2g} (relative; tolerance {limit:.2g})"
            )

    # no zero SNR, rescaled or a trained table ending in beta = 1: inverting up to alpha_bar = 0
    # keeps nothing of x_0 to sample back to
    mirror_configs = configs(*VARY, clip_sample=False, rescale_betas_zero_snr=False).filter(
        lambda c: c.trained_betas is None or c.trained_betas[-1] < 1.0
    )
    strategy = st.tuples(mirror_configs, st.integers(1, 50), st.integers(0, 2**16))
    return _run(area, target, prop, strategy, "inverting then sampling returns x_0, float64")


# --- dtypes ------------------------------------------------------------------------------------


def dtypes(target: Scheduler) -> Finding:
    """alpha_bar tables within 1 ulp of exact in their own dtype (float64 ones within
    TOLERANCE["float64"] relative: exact is NumPy's product, a few ulps off); float32 (and float16,
    bfloat16 where the library has them) steps on the target's own tables against exact
    DDIM, in the input's dtype.

    The tables: `alphas_cumprod` of every schedule in SCHEDULES, of other betas (a linear
    range, T = 500, trained_betas: TABLES), and the level past the last
    step (`final_alpha_cumprod`; inverse: `initial_alpha_cumprod`) with set_alpha_to_one True
    and False, which the value areas take from the target. The steps: up to 15 random
    configs per dtype (clip_sample and thresholding drawn too), eta 0 or 1 (0 inverting),
    against exact DDIM on the config's exact table within the dtype's tolerance; a step must
    return the dtype it is given.

    Parameters
    ----------
    target : Scheduler
        The wrapped scheduler class, forward or inverse.

    Returns
    -------
    Finding
        Area "dtypes": pass naming the dtypes stepped in; or FAIL with the worst table entry
        and each dtype's first divergence, joined by "; ".

    Examples
    --------
    >>> from ddim_core.testing.targets import wrap
    >>> dtypes(wrap(reference.ReferenceScheduler))  # NumPy has no bfloat16
    Finding(area='dtypes', verdict='pass', detail='tables; float32, float16 steps')
    >>> class Float64Out(reference.ReferenceScheduler):
    ...     def step(self, *args, **kwargs):
    ...         prev, x0 = super().step(*args, **{**kwargs, "return_dict": False})
    ...         return prev.astype(np.float64), x0
    >>> print(dtypes(wrap(Float64Out)).detail)
    a float32 step returns float64; a float16 step returns float64
    """
    area = "dtypes"
    problems = []
    problems += [e for e in (_table_error(target), _boundary_error(target)) if e]
    halves = [d for d in ("float16", "bfloat16") if target.backend.supports(d)]
    for dtype in ("float32", *halves):

        def prop(case: Any, dtype: str = dtype) -> None:
            (config, n, seed, pick), eta = case
            s = setup(target, config, n, own=False)
            t = s.steps[pick % len(s.steps)]
            _same_dtype(target, s, t, dtype)
            step_matches(target, s, t, seed, dtype=dtype, eta=0.0 if target.inverse else eta)

        strategy = st.tuples(
            _value_cases(
                prediction_type=configs().map(lambda c: c.prediction_type),
                clip_sample=st.booleans(),
                thresholding=st.booleans(),
            ),
            st.sampled_from([0.0, 1.0]),
        )
        try:
            found = search(prop, strategy, examples=15)
        except AllUnsupported:
            continue
        if found:
            problems.append(found)
    if problems:
        return Finding(area, FAIL, "; ".join(problems))
    return Finding(area, PASS, f"tables; float32{''.join(', ' + d for d in halves)} steps")


def _same_dtype(target: Scheduler, s: Setup, t: int, dtype: str) -> None:
    b = target.backend
    x = b.array(np.zeros(SHAPE), dtype)
    out = target.step(s.instance, x, t, x)[0]
    if str(out.dtype) != str(x.dtype):
        if dtype_name(out.dtype) != dtype:
            raise Divergence(f"a {dtype} step returns {out.dtype}")
        given, got = (f"{type(a).__module__}.{type(a).__qualname__}" for a in (x, out))
        raise Divergence(f"a {dtype} step of a {given} returns a {got} ({out.dtype})")


def _table_error(target: Scheduler) -> str | None:
    """The worst alpha_bar table entry over the TABLES, when off by more than 1 ulp (float64:
    TOLERANCE["float64"] relative, the step's)."""
    worst: tuple[float, str, int, float, float, str] | None = None
    for name, options in TABLES.items():
        config = DDIMConfig(**options)
        try:
            instance = target.make(config)
        except Unsupported:
            continue
        values = getattr(instance, "alphas_cumprod", None)
        if values is None:
            return None
        dtype = str(getattr(values, "dtype", "float64")).rpartition(".")[2]
        have = to_numpy(values)
        exact = reference.config_schedule(config).alphas_cumprod
        if have.shape != exact.shape:
            return f"{name}: alphas_cumprod has {have.size} entries, T = {exact.size}"
        ulp = _ulp(exact, dtype)
        if dtype_name(dtype) == "float64":  # exact is NumPy's rounding: another linspace or
            ulp = np.maximum(ulp, TOLERANCE["float64"] * exact)  # product order differs by ulps
        error = np.abs(have - exact)
        if np.all(error <= ulp):
            continue
        relative = np.where(exact > 0, error / np.where(exact > 0, exact, 1.0), error)
        t = int(np.argmax(relative))
        if worst is None or relative[t] > worst[0]:
            worst = (float(relative[t]), name, t, float(have[t]), float(exact[t]), dtype)
    if worst is None:
        return None
    rel_error, name, t, have_t, exact_t, dtype = worst
    return (
        f"{dtype} alphas_cumprod off by up to {rel_error:.2g} relative ({name}: "
        f"alphas_cumprod[{t}] = {have_t:.9g}, exact {exact_t:.9g})"
    )


def _boundary_error(target: Scheduler) -> str | None:
    """The level past the last step (final_alpha_cumprod; inverse: initial_alpha_cumprod),
    set_alpha_to_one True and False, when off exact DDIM's by more than 1 ulp: the value
    areas step on the target's own level, so that a wrong one shows only here."""
    name = target.boundary_name
    for flag in (True, False):
        config = DDIMConfig(set_alpha_to_one=flag)
        try:
            instance = target.make(config)
        except Unsupported:
            continue
        value = getattr(instance, name, None)
        if value is None:
            return None
        have = float(to_numpy(value).reshape(-1)[0])
        exact = reference.config_schedule(config).final_alpha_cumprod
        # a level taken from a float32 table (alphas_cumprod[0]) is held to float32's ulp
        table = getattr(instance, "alphas_cumprod", None)
        dtype = f"{getattr(value, 'dtype', 'float64')} {getattr(table, 'dtype', '')}"
        ulp = float(_ulp(np.asarray([exact]), dtype)[0])
        if not abs(have - exact) <= ulp:
            return f"{name} = {have:.9g} with set_alpha_to_one={flag}, exact {exact:.9g}"
    return None


def _ulp(exact: np.ndarray, dtypes: str) -> np.ndarray:
    """1 ulp of each exact value in the coarsest dtype `dtypes` names (any library's spelling:
    "torch.float16", "Float32", "bfloat16"), float64's when it names none (a Python float)."""
    names = dtypes.lower()
    magnitude = np.abs(np.asarray(exact, dtype=np.float64))
    if "bfloat16" in names:  # float32's exponent range, 8 significant bits: 2^16 float32 ulps
        return np.spacing(magnitude.astype(np.float32)).astype(np.float64) * 2.0**16
    for bits, kind in (("16", np.float16), ("32", np.float32)):
        if f"float{bits}" in names:
            return np.spacing(magnitude.astype(kind)).astype(np.float64)
    return np.spacing(magnitude)


# --- NaN / Inf ---------------------------------------------------------------------------------


def nan_inf(target: Scheduler) -> Finding:
    """The first two and the last step of plans of 1 to 50 steps of every schedule (zero SNR
    included), spacing and prediction type, eta 0 and 1, float64 and float32: finite wherever
    exact DDIM is. Swept in order of the step count, so the first counterexample found is
    the one with the fewest steps.

    Configs the target does not take, or that have no exact plan, are skipped; the steps are
    the `comparable` ones, on seeded inputs.

    Parameters
    ----------
    target : Scheduler
        The wrapped scheduler class, forward or inverse (inverse steps at eta 0 only).

    Returns
    -------
    Finding
        Area "NaN/Inf": pass with the number of steps taken; or FAIL naming the first step
        with a NaN or Inf in prev_sample and how many of all the steps were not finite;
        either noting the steps not taken (eta 1 when step takes no variance_noise); or
        unsupported when no step is taken.

    Raises
    ------
    Crash
        If the target's step raises (`conformance.check` reports the area FAIL).

    Examples
    --------
    A scheduler taking clip_sample only (the linear schedule, leading spacing, epsilon
    prediction; the whole sweep of the reference scheduler takes about two seconds):

    >>> from ddim_core.testing.targets import wrap
    >>> class Narrow(reference.ReferenceScheduler):
    ...     def __init__(self, clip_sample=True):
    ...         super().__init__(clip_sample=clip_sample)
    >>> nan_inf(wrap(Narrow))
    Finding(area='NaN/Inf', verdict='pass', detail='588 steps finite')

    A step without variance_noise is checked at eta 0:

    >>> class NoNoise(Narrow):
    ...     def step(self, model_output, timestep, sample, return_dict=True):
    ...         return super().step(model_output, timestep, sample, return_dict=return_dict)
    >>> print(nan_inf(wrap(NoNoise)).detail)
    294 steps finite (not taken: eta=1.0: step takes no variance_noise)
    """
    area = "NaN/Inf"
    total, bad, first = 0, 0, None
    not_taken: set[str] = set()
    b = target.backend
    instances: dict[DDIMConfig, Any] = {}
    for n, options, spacing, prediction in itertools.product(
        range(1, 51), SCHEDULES.values(), SPACINGS, ("epsilon", "sample", "v_prediction")
    ):
        config = DDIMConfig(
            **options, timestep_spacing=spacing, prediction_type=prediction, clip_sample=False
        )
        try:
            if config not in instances:
                instances[config] = target.make(config)
            instance = instances[config]
            target.set_timesteps(instance, n)
            plan = reference.make_plan(config, n)
        except (Unsupported, ValueError):
            continue
        steps = comparable(plan, target.inverse)
        picked = sorted(set(steps[:2] + steps[-1:]), key=steps.index)
        etas = (0.0, 1.0) if not target.inverse else (0.0,)
        for t, dtype, eta in itertools.product(picked, ("float32", "float64"), etas):
            x, m, z = draw_inputs(t, SHAPE, dtype)
            noise = b.array(z, dtype) if eta else None
            try:
                out = target.step(
                    instance, b.array(m, dtype), t, b.array(x, dtype), eta=eta, noise=noise
                )
            except Unsupported as e:  # eta 1 without variance_noise: the eta 0 steps still run
                not_taken.add(f"eta={eta}: {e}")
                continue
            except Crash as e:
                raise _at(e, plan, t, target.inverse, eta, dtype) from e.__cause__
            total += 1
            values = to_numpy(out[0])
            if np.all(np.isfinite(values)):
                continue
            bad += 1
            if first is None:
                n_bad = int((~np.isfinite(values)).sum())
                kind = "NaN" if np.isnan(values).any() else "Inf"
                arrow = "inverse step" if target.inverse else "step"
                src, dst = (
                    (plan.prev_timestep(t), t) if target.inverse else (t, plan.prev_timestep(t))
                )
                first = (
                    f"{describe(config)}, {n_steps(n)}, {arrow} {src} -> {dst}, eta={eta}, "
                    f"{dtype}: {kind} in {n_bad} of {values.size} elements of prev_sample"
                )
    note = f" (not taken: {'; '.join(sorted(not_taken))})" if not_taken else ""
    if first:
        return Finding(area, FAIL, f"{first}; {bad} of {total} steps not finite{note}")
    if not total:
        return Finding(area, UNSUPPORTED, f"no step taken{note}")
    return Finding(area, PASS, f"{total} steps finite{note}")


# --- per-sample timesteps ----------------------------------------------------------------------


def per_sample_timesteps(target: Scheduler) -> Finding:
    """A step with an integer array of one timestep per batch element (each sample from its
    own t), against exact DDIM per sample.

    A first step with two timesteps on ones tells whether the target takes an array at all;
    then random configs of every prediction type, float64, each sample of the batch from a
    comparable step of its own.

    Parameters
    ----------
    target : Scheduler
        The wrapped scheduler class, forward or inverse.

    Returns
    -------
    Finding
        Area "per-sample timesteps": pass; FAIL naming the timesteps and the divergence,
        shrunk; or unsupported when step rejects an array of timesteps (with what it raised)
        or the target takes none of the configs drawn.

    Examples
    --------
    >>> from ddim_core.testing.targets import wrap
    >>> per_sample_timesteps(wrap(reference.ReferenceScheduler)).verdict
    'pass'
    >>> class OneTimestep(reference.ReferenceScheduler):
    ...     def step(self, model_output, timestep, sample, **kwargs):
    ...         return super().step(model_output, int(timestep), sample, **kwargs)
    >>> found = per_sample_timesteps(wrap(OneTimestep))
    >>> print(found.verdict, found.detail)
    unsupported step with an array of timesteps: TypeError: only 0-dimensional arrays can be
    converted to Python scalars
    """
    area = "per-sample timesteps"
    b = target.backend
    try:
        s = setup(target, DDIMConfig(clip_sample=False), 10)
        ts = b.int_array(list(s.steps[:2]))
        x = b.array(np.ones((2, 3, 4, 4)))
        target.step(s.instance, x, ts, x)
    except Malformed:
        raise  # it takes the array, and returns no step of it: a failure
    except (Crash, Unsupported) as e:
        cause = describe_error(e.__cause__) if e.__cause__ else str(e)
        return Finding(area, UNSUPPORTED, f"step with an array of timesteps: {cause}")

    def prop(case: Any) -> None:
        (config, n, seed, _), picks = case
        s = setup(target, config, n)
        chosen = [s.steps[p % len(s.steps)] for p in picks]
        x, m, _ = draw_inputs(seed, SHAPE)
        got = target.step(s.instance, b.array(m), b.int_array(chosen), b.array(x))
        try:
            assert_step_close(got, s.plan, m, np.asarray(chosen), x, inverse=target.inverse)
        except AssertionError as e:
            raise Divergence(f"timesteps {chosen}: {e}") from None

    strategy = st.tuples(
        _value_cases(prediction_type=configs().map(lambda c: c.prediction_type)),
        st.lists(st.integers(0, 2**16), min_size=SHAPE[0], max_size=SHAPE[0]),
    )
    return _run(area, target, prop, strategy, "one timestep per sample, float64")


# --- out= buffers ------------------------------------------------------------------------------


def out_buffers(target: Scheduler) -> Finding:
    """Where `step` takes out=: every step of 10-step plans (clipped or not; float32 and
    float64) with out= buffers equals the step without them, written into the buffers.

    Both the results returned and the buffers must equal, exactly, the step without out=
    (prev_sample, and pred_original_sample where the step returns one).

    Parameters
    ----------
    target : Scheduler
        The wrapped scheduler class, forward or inverse.

    Returns
    -------
    Finding
        Area "out= buffers": pass with the number of steps checked; FAIL naming the step and
        the result that differs, or what a step with out= raised; n/a when step takes no
        out=; unsupported when no config or dtype is taken.

    Raises
    ------
    Crash
        If the target's step without out= raises (`conformance.check` reports the area FAIL).

    Examples
    --------
    >>> from ddim_core.testing.targets import wrap
    >>> out_buffers(wrap(reference.ReferenceScheduler))
    Finding(area='out= buffers', verdict='n/a', detail='step takes no out=')
    >>> class OutStep(reference.ReferenceScheduler):
    ...     def step(self, *args, out=None, **kwargs):
    ...         prev, x0 = super().step(*args, **{**kwargs, "return_dict": False})
    ...         if out is not None:
    ...             out[0][...], out[1][...] = prev, x0
    ...             prev, x0 = out
    ...         return prev, x0
    >>> out_buffers(wrap(OutStep)).detail
    '40 steps with out= equal those without, in the buffers'
    """
    area = "out= buffers"
    if "out" not in target.step_params:
        return Finding(area, NA, "step takes no out=")
    b, checked = target.backend, 0
    for config, dtype in itertools.product(
        (DDIMConfig(clip_sample=False), DDIMConfig()), ("float32", "float64")
    ):
        if not b.supports(dtype):
            continue
        try:
            s = setup(target, config, 10, own=False)
        except Unsupported:
            continue
        x, m, _ = draw_inputs(checked, SHAPE)
        for t in s.steps:
            xb, mb = b.array(x, dtype), b.array(m, dtype)
            want = target.step(s.instance, mb, t, xb)
            buffers = (b.array(np.zeros(SHAPE), dtype), b.array(np.zeros(SHAPE), dtype))
            where = f"{describe(config)}, {dtype}, step from t={t}"
            try:
                got = target.step(s.instance, mb, t, xb, out=buffers)
            except Crash as e:
                return Finding(area, FAIL, f"{where} with out=: {e}")
            for name, i in (("prev_sample", 0), ("pred_original_sample", 1)):
                if want[i] is None:
                    continue
                expected = to_numpy(want[i])
                results = ((f"the {name} returned", got[i]), (f"out[{i}] ({name})", buffers[i]))
                for what, value in results:
                    if value is None or not np.array_equal(to_numpy(value), expected, True):
                        why = f"{what} with out= is not the {name} of the step without out="
                        return Finding(area, FAIL, f"{where}: {why}")
            checked += 1
    if not checked:
        return Finding(area, UNSUPPORTED, "no configuration taken")
    return Finding(area, PASS, f"{checked} steps with out= equal those without, in the buffers")


# --- host syncs --------------------------------------------------------------------------------


def host_syncs(target: Scheduler) -> Finding:
    """A 10-step loop on torch's meta device (no values: any read back to the host raises),
    timesteps from set_timesteps(device='meta') as a pipeline passes them, eta 0 and 1.

    Each step must return a tensor of the sample's shape on the meta device; eta 1 (forward
    schedulers only) passes the sample as its noise.

    Parameters
    ----------
    target : Scheduler
        The wrapped scheduler class, on the torch backend.

    Returns
    -------
    Finding
        Area "host syncs": pass; FAIL with what a step raised (a read back to the host), or
        when it returns a tensor off the meta device; n/a on any other backend than torch;
        unsupported when the default config or set_timesteps is not taken.

    Raises
    ------
    Malformed
        If a step returns no tensor of the sample's shape (`conformance.check` reports the
        area FAIL).

    Examples
    --------
    The reference scheduler computes in NumPy, so each step reads its tensors back:

    >>> from ddim_core.testing.targets import wrap
    >>> host_syncs(wrap(reference.ReferenceScheduler, backend_name="numpy")).verdict
    'n/a'
    >>> found = host_syncs(wrap(reference.ReferenceScheduler, backend_name="torch"))
    >>> print(found.verdict, found.detail)
    FAIL step(..., t, sample) with t from timesteps on the sample's device reads a value back
    to the host: TypeError: can't convert meta device type tensor to numpy. ...
    """
    area = "host syncs"
    if target.backend.module != "torch":
        return Finding(area, NA, f"needs torch tensors ({target.backend.name} arrays)")
    import torch

    meta = torch.device("meta")
    device = {"device": meta} if "device" in target.set_timesteps_params else {}
    for eta in (0.0, 1.0) if not target.inverse else (0.0,):
        try:
            instance = target.make(DDIMConfig())
            target.set_timesteps(instance, 10, **device)
        except Unsupported as e:
            return Finding(area, UNSUPPORTED, str(e))
        ts = getattr(instance, "timesteps", None)
        if not isinstance(ts, torch.Tensor):
            ts = target.timesteps(instance)  # a list of ints is stepped with its ints
        elif ts.device != meta:
            ts = ts.to(meta)
        x = torch.zeros(SHAPE, device=meta)
        try:
            for t in ts:
                out = target.step(instance, x, t, x, eta=eta, noise=x if eta else None)[0]
                if out.device != meta:  # the wrapper checks its shape
                    return Finding(
                        area,
                        FAIL,
                        (f"eta={eta}: " if eta else "")
                        + f"a step on the meta device returns a tensor on {out.device}",
                    )
                x = out
        except Malformed:
            raise  # no read back to the host: conformance.check reports it as it is
        except Crash as e:
            cause = describe_error(e.__cause__) if e.__cause__ else str(e)
            return Finding(
                area,
                FAIL,
                (f"eta={eta}: " if eta else "")
                + "step(..., t, sample) with t from timesteps on the sample's device reads a "
                f"value back to the host: {cause}",
            )
    return Finding(area, PASS, "a loop on torch's meta device")


# --- thread safety -----------------------------------------------------------------------------

THREADS = 8


def thread_safety(target: Scheduler) -> Finding:
    """One instance shared by threads, each calling set_timesteps(n) with its own n and
    running its loop, against the same loops run one after another.

    THREADS threads, plans of 4 to 25 steps, 3 rounds, the interpreter switching threads
    every microsecond so that races show in every run.

    Parameters
    ----------
    target : Scheduler
        The wrapped scheduler class, forward or inverse.

    Returns
    -------
    Finding
        Area "thread safety": pass; FAIL when a thread raises or gets another result than
        the serial loop; unsupported when the default config is not taken.

    Raises
    ------
    Crash
        If the target's step raises in the serial loops (`conformance.check` reports the
        area FAIL).

    Examples
    --------
    The reference scheduler keeps each thread's plan; one that keeps the last plan set by
    any thread steps other threads on it:

    >>> from ddim_core.testing.targets import wrap
    >>> thread_safety(wrap(reference.ReferenceScheduler)).detail
    '8 threads, each its own plan, 3 rounds'
    >>> class OnePlan(reference.ReferenceScheduler):
    ...     def _state(self):
    ...         return self._last
    >>> thread_safety(wrap(OnePlan)).verdict
    'FAIL'
    """
    area = "thread safety"
    b = target.backend
    steps = [4 + 3 * i for i in range(THREADS)]
    x0 = b.array(np.random.default_rng(0).standard_normal(SHAPE))

    def loop(instance: Any, n: int) -> np.ndarray:
        ts = target.set_timesteps(instance, n)
        x = x0
        for t in ts:
            out = b.array(0.1 * to_numpy(x) + 0.001 * t)
            x = target.step(instance, out, t, x)[0]
        return to_numpy(x)

    try:
        config = DDIMConfig(clip_sample=False)
        serial = [loop(target.make(config), n) for n in steps]
        shared = target.make(config)
    except Unsupported as e:
        return Finding(area, UNSUPPORTED, str(e))
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often: races show in every run
    try:
        for _ in range(3):
            results, errors = _in_threads(lambda i: loop(shared, steps[i]), THREADS)
            same = all(np.array_equal(a, s) for a, s in zip(results, serial, strict=True))
            if errors or not same:  # which, and how, varies from run to run: not reported
                return Finding(
                    area,
                    FAIL,
                    f"{THREADS} threads sharing one instance, each set_timesteps(n) with its "
                    "own n then n steps, get other results than the same loops run serially, "
                    "or raise",
                )
    finally:
        sys.setswitchinterval(interval)
    return Finding(area, PASS, f"{THREADS} threads, each its own plan, 3 rounds")


def _in_threads(fn: Callable[[int], Any], n: int) -> tuple[list[Any], list[BaseException]]:
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            barrier.wait()
            results[i] = fn(i)
        except BaseException as exc:
            errors.append(exc.__cause__ if isinstance(exc, Crash) and exc.__cause__ else exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return results, errors


def all_areas(target: Scheduler) -> list[Callable[[], Finding]]:
    """The areas in report order, each ready to run.

    Parameters
    ----------
    target : Scheduler
        The wrapped scheduler class, forward or inverse.

    Returns
    -------
    list of callable
        One function per name of `conformance.AREAS`, in that order, each returning the
        area's `Finding` when called.

    Examples
    --------
    >>> from ddim_core.testing.conformance import AREAS
    >>> from ddim_core.testing.targets import wrap
    >>> runs = all_areas(wrap(reference.ReferenceScheduler))
    >>> len(runs) == len(AREAS)
    True
    >>> runs[AREAS.index("out= buffers")]()
    Finding(area='out= buffers', verdict='n/a', detail='step takes no out=')
    """
    return [
        lambda: timesteps(target),
        lambda: previous_timestep(target),
        lambda: step_values(target, "epsilon"),
        lambda: step_values(target, "sample"),
        lambda: step_values(target, "v_prediction"),
        lambda: clipping(target),
        lambda: eta_noise(target),
        lambda: inverse_mirror(target),
        lambda: dtypes(target),
        lambda: nan_inf(target),
        lambda: per_sample_timesteps(target),
        lambda: out_buffers(target),
        lambda: host_syncs(target),
        lambda: thread_safety(target),
    ]
