"""Hypothesis strategies for DDIM: configs (every option; valid combinations, and invalid ones
for error tests), plans, timesteps, step inputs per backend, dtype and device, and Gaussian
mixture problems; `CI`, the bounded and derandomized settings. Needs Hypothesis
(`pip install 'ddim-core[testing]'`).

    from hypothesis import given
    from ddim_core.testing import strategies as dst

    @given(plan=dst.plans(dst.configs("timestep_spacing", clip_sample=False)), data=st.data())
    def test_my_step(plan, data): ...
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from hypothesis import HealthCheck, assume, settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

import ddim_core as dc
from ddim_core.config import (
    BETA_SCHEDULES,
    DIFFUSERS_SPACINGS,
    PREDICTION_TYPES,
    PREV_TIMESTEP_RULES,
)

from .backends import BACKENDS, FLOAT_DTYPES, Backend, round_to, runnable

# Bounded and derandomized: the same examples on every run, for CI (profile "ddim-core-ci").
CI = settings(
    derandomize=True,
    max_examples=30,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors],
)
DEV = settings(max_examples=200, deadline=None)  # profile "ddim-core-dev": more, random


def _or_default(name: str, values: SearchStrategy[Any]) -> SearchStrategy[Any]:
    """The option's default or `values`: counterexamples shrink to the default."""
    default = next(f.default for f in dataclasses.fields(dc.DDIMConfig) if f.name == name)
    return st.one_of(st.just(default), values)


# One strategy per option, over realistic valid values (the checks accept more), each
# shrinking to the default (the first of a sampled_from is the default).
OPTIONS: dict[str, SearchStrategy[Any]] = {
    "num_train_timesteps": _or_default("num_train_timesteps", st.integers(2, 2000)),
    "beta_start": _or_default("beta_start", st.floats(1e-5, 2e-3)),
    "beta_end": _or_default("beta_end", st.floats(5e-3, 4e-2)),
    "beta_schedule": st.sampled_from(BETA_SCHEDULES),
    "trained_betas": st.none(),  # drawn with num_train_timesteps: see `configs`
    "clip_sample": st.booleans(),
    "set_alpha_to_one": st.booleans(),
    "steps_offset": st.integers(0, 1),
    "prediction_type": st.sampled_from(PREDICTION_TYPES),
    "thresholding": st.booleans(),
    "dynamic_thresholding_ratio": _or_default("dynamic_thresholding_ratio", st.floats(0.0, 1.0)),
    "clip_sample_range": _or_default("clip_sample_range", st.floats(0.5, 4.0)),
    "sample_max_value": _or_default("sample_max_value", st.floats(1.0, 4.0)),
    # diffusers' spacings: the toolkit checks against diffusers' semantics (ddim_core's own
    # "quadratic" is tested in its tests)
    "timestep_spacing": st.sampled_from(DIFFUSERS_SPACINGS),
    "rescale_betas_zero_snr": st.booleans(),
    "prev_timestep": st.sampled_from(PREV_TIMESTEP_RULES),
}
ORDER = tuple(f.name for f in dataclasses.fields(dc.DDIMConfig))


def configs(*vary: str, **fixed: Any) -> SearchStrategy[dc.DDIMConfig]:
    """DDIMConfigs varying the options named in `vary` (all options when none are named; the
    rest keep their defaults), with `fixed` options set to a value or drawn from a strategy.

    Valid combinations: trained_betas (drawn for 1 config in 5, half of them ending in a
    beta of 1: zero terminal SNR) have num_train_timesteps values; zero SNR (rescaled or
    such a table) draws sample or v prediction (epsilon cannot take the first step of a
    trailing plan there) unless prediction_type is fixed.

    Parameters
    ----------
    *vary : str
        Names of the DDIMConfig options to draw; none: every option not in `fixed`.
    **fixed : Any
        Options set to a value, or drawn from a strategy when the value is one.

    Returns
    -------
    SearchStrategy of DDIMConfig
        The configs; each drawn option shrinks to its default.

    Raises
    ------
    ValueError
        If `vary` or `fixed` names an option DDIMConfig does not have.

    Examples
    --------
    >>> from hypothesis import given
    >>> @CI
    ... @given(configs("clip_sample", "beta_schedule", prediction_type="v_prediction"))
    ... def check(config):
    ...     assert config.prediction_type == "v_prediction"
    ...     assert config.num_train_timesteps == 1000  # not varied: the default
    >>> check()
    >>> configs("clip_samples")
    Traceback (most recent call last):
    ...
    ValueError: unknown options ['clip_samples']; options: [...]
    """
    unknown = sorted((set(vary) | set(fixed)) - set(ORDER))
    if unknown:  # a misspelt fixed option would be dropped, and the option vary
        raise ValueError(f"unknown options {unknown}; options: {list(ORDER)}")
    names = set(vary or (set(ORDER) - set(fixed)))
    return _configs(frozenset(names), tuple(fixed.items()))


def all_configs() -> SearchStrategy[dc.DDIMConfig]:
    """`configs()`: every option varies.

    Returns
    -------
    SearchStrategy of DDIMConfig
        Configs drawing every option (valid combinations, see `configs`).

    Examples
    --------
    >>> all_configs()
    _configs(vary=frozenset({...}), fixed=())
    """
    return configs()


@st.composite
def _configs(
    draw: st.DrawFn, vary: frozenset[str], fixed: tuple[tuple[str, Any], ...]
) -> dc.DDIMConfig:
    given = dict(fixed)
    options: dict[str, Any] = {}
    for name in ORDER:
        if name in given:
            value = given[name]
            options[name] = draw(value) if isinstance(value, SearchStrategy) else value
        elif name in vary and name != "trained_betas":
            options[name] = draw(OPTIONS[name], label=name)
    if options.get("rescale_betas_zero_snr"):
        options["num_train_timesteps"] = max(options.get("num_train_timesteps", 1000), 2)
    custom = "trained_betas" in vary and "trained_betas" not in given
    if custom and draw(st.integers(0, 4), label="trained_betas?") == 4:
        options["trained_betas"] = draw(betas(options.get("num_train_timesteps", 1000)))
    table = options.get("trained_betas")
    zero_snr = options.get("rescale_betas_zero_snr") or (table is not None and table[-1] == 1.0)
    if zero_snr and "prediction_type" in vary and "prediction_type" not in given:
        options["prediction_type"] = draw(st.sampled_from(["v_prediction", "sample"]))
    return dc.DDIMConfig(**options)


def betas(n: int) -> SearchStrategy[tuple[float, ...]]:
    """n betas in (0, 1): a linear ramp with seeded jitter (a custom table, trained_betas);
    for half the tables of n >= 2 the last beta is 1 instead (zero terminal SNR:
    alpha_bar_{T-1} = 0, as rescale_betas_zero_snr makes, which DDIMConfig takes in the last
    place only).

    Parameters
    ----------
    n : int
        How many betas: the config's num_train_timesteps.

    Returns
    -------
    SearchStrategy of tuple of float
        Tables of `n` betas, each in (0, 1) but the last, in (0, 1]; shrinking to a table
        without a 1.

    Examples
    --------
    >>> from hypothesis import given
    >>> @CI
    ... @given(betas(5))
    ... def check(table):
    ...     assert len(table) == 5 and all(0 < b < 1 for b in table[:-1]) and 0 < table[-1] <= 1
    >>> check()
    """

    def build(low: float, high: float, seed: int, zero_terminal: bool) -> tuple[float, ...]:
        ramp = np.linspace(low, high, n)
        jitter = 1.0 + 0.2 * (np.random.default_rng(seed).random(n) - 0.5)
        table = (ramp * jitter).tolist()
        return tuple([*table[:-1], 1.0] if zero_terminal else table)

    zero_terminal = st.booleans() if n >= 2 else st.just(False)  # (1,): no level above 0
    ranges = (st.floats(1e-5, 1e-3), st.floats(5e-3, 3e-2))
    return st.builds(build, *ranges, st.integers(0, 2**16), zero_terminal)


@dataclasses.dataclass(frozen=True)
class InvalidConfig:
    """Options DDIMConfig must reject, the error it must raise and the option it must name.

    Examples
    --------
    >>> bad = InvalidConfig({"steps_offset": -1}, ValueError, "steps_offset")
    >>> try:
    ...     dc.DDIMConfig(**bad.options)
    ... except bad.error as e:
    ...     print(bad.option in str(e))
    True
    """

    options: dict[str, Any]
    error: type[Exception]
    option: str


_NAN, _INF = math.nan, math.inf
# (option, bad value, error): one per rule each option's check enforces.
INVALID: tuple[tuple[str, Any, type[Exception]], ...] = (
    ("num_train_timesteps", 0, ValueError),
    ("num_train_timesteps", -5, ValueError),
    ("num_train_timesteps", 2.5, TypeError),
    ("num_train_timesteps", True, TypeError),
    ("num_train_timesteps", "1000", TypeError),
    ("beta_start", 0.0, ValueError),
    ("beta_start", 1.0, ValueError),
    ("beta_start", -0.1, ValueError),
    ("beta_start", _NAN, ValueError),
    ("beta_start", "0.1", TypeError),
    ("beta_end", 1.5, ValueError),
    ("beta_end", _INF, ValueError),
    ("beta_end", True, TypeError),
    ("beta_schedule", "cosine", ValueError),
    ("beta_schedule", 3, TypeError),
    ("trained_betas", (), ValueError),
    ("trained_betas", (0.5, 1.5), ValueError),
    ("trained_betas", (0.0, 0.1), ValueError),
    ("trained_betas", "abc", TypeError),
    ("trained_betas", 0.5, TypeError),
    ("trained_betas", (0.01, 0.02, 0.03), ValueError),  # not num_train_timesteps values
    ("clip_sample", 1, TypeError),
    ("clip_sample", "yes", TypeError),
    ("set_alpha_to_one", None, TypeError),
    ("steps_offset", -1, ValueError),
    ("steps_offset", 0.5, TypeError),
    ("prediction_type", "x0", ValueError),
    ("prediction_type", None, TypeError),
    ("thresholding", "no", TypeError),
    ("dynamic_thresholding_ratio", -0.1, ValueError),
    ("dynamic_thresholding_ratio", 1.5, ValueError),
    ("clip_sample_range", 0.0, ValueError),
    ("clip_sample_range", -1.0, ValueError),
    ("sample_max_value", 0.0, ValueError),
    ("sample_max_value", _NAN, ValueError),
    ("timestep_spacing", "middle", ValueError),
    ("rescale_betas_zero_snr", 0, TypeError),
    ("prev_timestep", "diffusers", ValueError),
)


def invalid_configs() -> SearchStrategy[InvalidConfig]:
    """A valid config's options with one option made invalid (`INVALID`): for error tests,
    `pytest.raises(bad.error, match=bad.option): DDIMConfig(**bad.options)`.

    Returns
    -------
    SearchStrategy of InvalidConfig
        Each with the full options of a drawn valid config, one of them replaced by a value
        of `INVALID`, and the error and option name DDIMConfig must report.

    Examples
    --------
    >>> from hypothesis import given
    >>> @CI
    ... @given(invalid_configs())
    ... def check(bad):
    ...     try:
    ...         dc.DDIMConfig(**bad.options)
    ...     except bad.error as e:
    ...         assert bad.option in str(e)
    ...     else:
    ...         raise AssertionError(f"{bad.option} accepted")
    >>> check()
    """

    def spoil(config: dc.DDIMConfig, bad: tuple[str, Any, type[Exception]]) -> InvalidConfig:
        options = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
        name, value, error = bad
        if name == "trained_betas" and value == (0.01, 0.02, 0.03):
            options["num_train_timesteps"] = 1000
        options[name] = value
        return InvalidConfig(options, error, name)

    return st.builds(spoil, configs(), st.sampled_from(INVALID))


def plans(
    configs: SearchStrategy[dc.DDIMConfig] | None = None,
    steps: SearchStrategy[int] | None = None,
) -> SearchStrategy[dc.Plan]:
    """ddim_core plans of drawn configs (default: every option) and step counts (default:
    1 .. num_train_timesteps); combinations without a plan (steps_offset past T - 1, zero SNR
    with epsilon prediction at the first step) are rejected.

    Parameters
    ----------
    configs : SearchStrategy of DDIMConfig, optional
        The configs to plan for; default `all_configs()`.
    steps : SearchStrategy of int, optional
        The number of inference steps (capped at the config's num_train_timesteps);
        default: 1 .. num_train_timesteps.

    Returns
    -------
    SearchStrategy of ddim_core.Plan
        The plans.

    Examples
    --------
    >>> from hypothesis import given
    >>> @CI
    ... @given(plans(configs("timestep_spacing"), steps=st.integers(1, 10)))
    ... def check(plan):
    ...     assert len(plan.timesteps) == plan.num_inference_steps <= 10
    >>> check()
    """
    return _plans(all_configs() if configs is None else configs, steps)


@st.composite
def _plans(
    draw: st.DrawFn, configs: SearchStrategy[dc.DDIMConfig], steps: SearchStrategy[int] | None
) -> dc.Plan:
    config = draw(configs)
    n = draw(st.integers(1, config.num_train_timesteps) if steps is None else steps, label="steps")
    try:
        return dc.make_plan(config, min(n, config.num_train_timesteps))
    except ValueError:
        assume(False)
        raise  # unreachable


def timesteps(plan: Any, *, off_plan: bool = False) -> SearchStrategy[int]:
    """A timestep of the plan; with off_plan any t in [0, T) (per-sample timesteps may fall
    between plan timesteps).

    Parameters
    ----------
    plan : ddim_core.Plan or reference.Plan
        The plan (anything with `timesteps` and `config`).
    off_plan : bool
        Draw any training timestep, not only the plan's.

    Returns
    -------
    SearchStrategy of int
        The timesteps; on the plan they shrink to its first (the noisiest).

    Examples
    --------
    >>> plan = dc.make_plan(dc.DDIMConfig(), 5)
    >>> timesteps(plan)
    sampled_from((800, 600, 400, 200, 0))
    >>> timesteps(plan, off_plan=True)
    integers(min_value=0, max_value=999)
    """
    if off_plan:
        return st.integers(0, plan.config.num_train_timesteps - 1)
    return st.sampled_from(plan.timesteps)


def per_sample_timesteps(plan: Any, batch: int) -> SearchStrategy[list[int]]:
    """`batch` timesteps of the plan, one per sample (repeats allowed).

    Parameters
    ----------
    plan : ddim_core.Plan or reference.Plan
        The plan (anything with `timesteps`).
    batch : int
        The batch size: how many timesteps.

    Returns
    -------
    SearchStrategy of list of int
        Lists of `batch` timesteps of the plan.

    Examples
    --------
    >>> from hypothesis import given
    >>> plan = dc.make_plan(dc.DDIMConfig(), 5)
    >>> @CI
    ... @given(per_sample_timesteps(plan, 3))
    ... def check(ts):
    ...     assert len(ts) == 3 and set(ts) <= {800, 600, 400, 200, 0}
    >>> check()
    """
    return st.lists(st.sampled_from(plan.timesteps), min_size=batch, max_size=batch)


def etas() -> SearchStrategy[float]:
    """eta in [0, 1]: 0 (DDIM), 1 (DDPM-like) and values between.

    Returns
    -------
    SearchStrategy of float
        The etas, shrinking to 0.

    Examples
    --------
    >>> etas()
    one_of(sampled_from([0.0, 1.0]), floats(min_value=0.0, max_value=1.0))
    """
    return st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, 1.0))


def backends(
    dtype: str = "float64", exclude: Sequence[str] = (), only: Sequence[str] | None = None
) -> SearchStrategy[Backend]:
    """A backend of the matrix (library and device) that runs here and holds `dtype`; `only`
    (names) limits the choice, and the libraries imported, to those.

    Parameters
    ----------
    dtype : str
        The dtype the backends must hold.
    exclude : sequence of str
        Backend names to leave out.
    only : sequence of str, optional
        Backend names to choose among (default: all of BACKENDS).

    Returns
    -------
    SearchStrategy of Backend
        The runnable backends, in BACKENDS' order.

    Raises
    ------
    ValueError
        If `exclude` or `only` names an unknown backend, or no backend runs `dtype` here.

    Examples
    --------
    >>> backends(only=["numpy"])
    just(Backend(name='numpy', module='numpy', device=None, requires=None))
    >>> backends(only=["nummpy"])
    Traceback (most recent call last):
    ...
    ValueError: unknown backends ['nummpy']; backends: numpy, ...
    """
    known = [b.name for b in BACKENDS]
    unknown = sorted(set(exclude).union(only or ()) - set(known))
    if unknown:  # else a misspelt name reads as "no backend runs here"
        raise ValueError(f"unknown backends {unknown}; backends: {', '.join(known)}")
    found = runnable(dtype=dtype, exclude=exclude, only=only)
    if not found:
        raise ValueError(f"no backend runs {dtype} here")
    return st.sampled_from(found)


def dtypes(backend: Backend) -> SearchStrategy[str]:
    """A floating dtype the backend holds.

    Parameters
    ----------
    backend : Backend
        The backend.

    Returns
    -------
    SearchStrategy of str
        Names of the FLOAT_DTYPES it supports.

    Examples
    --------
    >>> from .backends import backend
    >>> dtypes(backend("numpy"))
    sampled_from(['float64', 'float32', 'float16'])
    """
    return st.sampled_from([d for d in FLOAT_DTYPES if backend.supports(d)])


@dataclasses.dataclass(frozen=True)
class StepInputs:
    """A step's sample, model output and noise as NumPy float64 values already rounded to
    `dtype` (what the reference takes), and the backend that holds them (`arrays()`).

    Examples
    --------
    >>> from .backends import backend
    >>> inputs = StepInputs(backend("numpy"), "float32", *np.ones((3, 2)))
    >>> [a.dtype.name for a in inputs.arrays()]
    ['float32', 'float32', 'float32']
    """

    backend: Backend
    dtype: str
    sample: np.ndarray
    model_output: np.ndarray
    noise: np.ndarray

    def arrays(self) -> tuple[Any, Any, Any]:
        """(sample, model_output, noise) as arrays of the backend, in `dtype`, on its device.

        Returns
        -------
        tuple of three arrays
            The sample, model output and noise, converted by `Backend.array`.
        """
        make = self.backend.array
        return (
            make(self.sample, self.dtype),
            make(self.model_output, self.dtype),
            make(self.noise, self.dtype),
        )


def step_inputs(
    shape: tuple[int, ...] = (2, 3, 4, 4),
    *,
    backends: SearchStrategy[Backend] | None = None,
    dtypes: SearchStrategy[str] | None = None,
    scales: Sequence[float] = (1.0,),
) -> SearchStrategy[StepInputs]:
    """Standard normal sample, model output and noise of `shape` times a drawn scale, on a drawn
    backend (default: every runnable one) in a dtype it holds (default: any).

    Parameters
    ----------
    shape : tuple of int
        The arrays' shape.
    backends : SearchStrategy of Backend, optional
        The backends; default `backends(dtype="float32")` (every runnable one).
    dtypes : SearchStrategy of str, optional
        The dtypes; default any the drawn backend holds (draws it does not hold are
        rejected).
    scales : sequence of float
        The factors the standard normal values are drawn times.

    Returns
    -------
    SearchStrategy of StepInputs
        The inputs, their values rounded to the drawn dtype.

    Examples
    --------
    >>> from hypothesis import given
    >>> @CI
    ... @given(step_inputs((2, 3), backends=backends(only=["numpy"]), scales=(1.0, 10.0)))
    ... def check(inputs):
    ...     sample, model_output, noise = inputs.arrays()
    ...     assert sample.shape == (2, 3) and sample.dtype.name == inputs.dtype
    >>> check()
    """
    return _step_inputs(shape, backends, dtypes, tuple(scales))


@st.composite
def _step_inputs(
    draw: st.DrawFn,
    shape: tuple[int, ...],
    backend_strategy: SearchStrategy[Backend] | None,
    dtype_strategy: SearchStrategy[str] | None,
    scales: tuple[float, ...],
) -> StepInputs:
    if backend_strategy is None:
        backend_strategy = backends(dtype="float32")
    backend = draw(backend_strategy, label="backend")
    dtype = draw(dtypes(backend) if dtype_strategy is None else dtype_strategy, label="dtype")
    assume(backend.supports(dtype))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1), label="seed"))
    scale = draw(st.sampled_from(scales), label="scale")
    x, m, z = (round_to(scale * rng.standard_normal(shape), dtype) for _ in range(3))
    return StepInputs(backend, dtype, x, m, z)


@st.composite
def problems(draw: st.DrawFn, max_components: int = 3) -> tuple[dc.GaussianMixture, dc.DDIMConfig]:
    """A random Gaussian mixture (1 .. max_components components, std >= 0.3, 1 to 3
    dimensions) with its exact denoiser as the model, and a config (no clipping) it predicts
    in; sample prediction ends at alpha_bar_0.

    Parameters
    ----------
    max_components : int
        The most mixture components drawn (Hypothesis passes `draw` itself).

    Returns
    -------
    SearchStrategy of tuple of (GaussianMixture, DDIMConfig)
        The mixtures, each with the config its denoiser predicts in.

    Examples
    --------
    >>> from hypothesis import given
    >>> @CI
    ... @given(problems(max_components=2))
    ... def check(problem):
    ...     mixture, config = problem
    ...     assert not config.clip_sample and mixture.prediction_type == config.prediction_type
    ...     assert 1 <= len(mixture.means) <= 2
    >>> check()
    """
    prediction = draw(st.sampled_from(PREDICTION_TYPES))
    config = dc.DDIMConfig(
        beta_schedule=draw(st.sampled_from(BETA_SCHEDULES)),
        timestep_spacing=draw(st.sampled_from(DIFFUSERS_SPACINGS)),
        prediction_type=prediction,
        set_alpha_to_one=prediction != "sample",
        clip_sample=False,
    )
    k = draw(st.integers(1, max_components))
    dim = draw(st.integers(1, 3))
    coords = st.floats(-3.0, 3.0, allow_nan=False)
    means = draw(st.lists(st.lists(coords, min_size=dim, max_size=dim), min_size=k, max_size=k))
    stds = draw(st.lists(st.floats(0.3, 1.0), min_size=k, max_size=k))
    return dc.GaussianMixture.create(means, stds, config), config
