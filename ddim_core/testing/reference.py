"""NumPy float64 reference of DDIM (Song, Meng & Ermon 2021), written from the paper's equations.

Independent of ddim_core's step code: the only thing taken from ddim_core is the float64
alpha_bar table of a config (`ddim_core.schedule`, checked against diffusers' by the project's
tests); another table can be given (`make_plan(..., schedule=...)`).

    plan = reference.make_plan(config, 10)
    for t in plan.timesteps:
        x, x0 = reference.step(plan, model(x, t), t, x)

Functions take any plan with `.config`, `.schedule` (alphas_cumprod, final_alpha_cumprod) and
`.prev_timestep(t)`: this module's `Plan` or ddim_core's. Arrays are NumPy float64.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import math
import threading
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any, NamedTuple

import numpy as np

from ddim_core.config import DDIMConfig
from ddim_core.schedules import Schedule
from ddim_core.schedules import schedule as config_schedule

__all__ = [
    "FINAL",
    "SCHEDULES",
    "Plan",
    "ReferenceInverseScheduler",
    "ReferenceScheduler",
    "StepOutput",
    "config_schedule",
    "inverse_step",
    "invert",
    "kdiffusion_invert",
    "kdiffusion_sample",
    "level",
    "magnitude",
    "make_plan",
    "per_sample",
    "process_x0",
    "sample",
    "schedule_from_table",
    "sigma",
    "sigmas",
    "spaced_timesteps",
    "step",
    "threshold",
    "transfer",
    "x0_eps",
]

FINAL = -1  # t_prev of the last step: the clean level past t = 0

# The schedules of real models, as DDIMConfig options: DDPM's linear, Stable Diffusion's
# scaled_linear, the cosine schedule, and zero terminal SNR (Lin et al. 2023) on SD's betas.
SCHEDULES: dict[str, dict[str, Any]] = {
    "linear": {},
    "scaled_linear": {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
    "squaredcos_cap_v2": {"beta_schedule": "squaredcos_cap_v2"},
    "zero_snr": {
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "rescale_betas_zero_snr": True,
    },
}

Model = Callable[[np.ndarray, Any], np.ndarray]


# --- timesteps and plans ---------------------------------------------------------------------


def spaced_timesteps(config: DDIMConfig, n: int) -> tuple[int, ...]:
    """The n timesteps of config's spacing, descending (Lin et al. 2023, table 2), as diffusers'
    `set_timesteps` computes them (a float `arange` for "trailing"), without the spurious last
    -1 that diffusers' trailing spacing gives for 62 of 1000 step counts; "quadratic" (not in
    diffusers) as the DDIM paper's appendix D.2 writes it.

    Parameters
    ----------
    config : DDIMConfig
        Its num_train_timesteps T, timestep_spacing and steps_offset are used.
    n : int
        The number of inference steps, in [1, T].

    Returns
    -------
    tuple of int
        The n timesteps, descending.

    Raises
    ------
    ValueError
        Where no plan exists: n is not an integer in [1, T], or steps_offset moves a
        timestep past T - 1.

    Examples
    --------
    >>> spaced_timesteps(DDIMConfig(), 5)
    (800, 600, 400, 200, 0)
    >>> spaced_timesteps(DDIMConfig(timestep_spacing="trailing"), 5)
    (999, 799, 599, 399, 199)
    >>> spaced_timesteps(DDIMConfig(), 0)
    Traceback (most recent call last):
    ...
    ValueError: num_inference_steps must be an integer in [1, 1000], got 0
    """
    T = config.num_train_timesteps
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or not 1 <= n <= T:
        raise ValueError(f"num_inference_steps must be an integer in [1, {T}], got {n!r}")
    if config.timestep_spacing == "leading":
        ts = [k * (T // n) + config.steps_offset for k in reversed(range(n))]
    elif config.timestep_spacing == "trailing":
        ts = (np.round(np.arange(T, 0, -T / n)).astype(np.int64) - 1)[:n].tolist()
    elif config.timestep_spacing == "quadratic":
        ts = [tau + config.steps_offset for tau in reversed(_quadratic(T, n))]
    else:  # linspace
        ts = np.linspace(0, T - 1, n).round()[::-1].astype(np.int64).tolist()
    if ts[0] >= T:
        raise ValueError(f"steps_offset={config.steps_offset} moves timestep {ts[0]} past T - 1")
    return tuple(int(t) for t in ts)


def _quadratic(T: int, n: int) -> list[int]:
    """Song et al. 2021, appendix D.2: tau_k = floor(0.8 T k^2 / (n - 1)^2), ascending, exact in
    rationals; a tau not above its predecessor taken one past it (ddim_core's documented rule)."""
    c = Fraction(4 * T, 5 * (n - 1) ** 2) if n > 1 else Fraction(0)
    taus: list[int] = []
    for k in range(n):
        tau = math.floor(c * k * k)
        taus.append(tau if not taus or tau > taus[-1] else taus[-1] + 1)
    return taus


@dataclasses.dataclass(frozen=True)
class Plan:
    """The timesteps of one run and the level each step moves to (t_prev; FINAL = -1 is the
    clean level: alpha_bar 1 with set_alpha_to_one, else alpha_bar_0).

    Examples
    --------
    >>> plan = make_plan(DDIMConfig(), 4)
    >>> plan.num_inference_steps, plan.pairs
    (4, ((750, 500), (500, 250), (250, 0), (0, -1)))
    >>> plan.inverse_pairs[0]
    (-1, 0)
    """

    config: DDIMConfig
    schedule: Schedule
    timesteps: tuple[int, ...]
    prev_timesteps: tuple[int, ...]

    @property
    def num_inference_steps(self) -> int:
        """The number of steps: how many timesteps the plan has."""
        return len(self.timesteps)

    @property
    def pairs(self) -> tuple[tuple[int, int], ...]:
        """(t, t_prev) of each forward step, in sampling order."""
        return tuple(zip(self.timesteps, self.prev_timesteps, strict=True))

    @property
    def inverse_timesteps(self) -> tuple[int, ...]:
        """The destination of each inverse step, ascending: the forward plan mirrored."""
        return self.timesteps[::-1]

    @property
    def inverse_pairs(self) -> tuple[tuple[int, int], ...]:
        """(source, destination) of each inverse step: the forward pairs mirrored."""
        return tuple((prev, t) for t, prev in reversed(self.pairs))

    def prev_timestep(self, t: int) -> int:
        """Where a forward step from t lands: the next plan timestep below t (FINAL past the
        last), or with config.prev_timestep == "stride" diffusers' t - T // N.

        Parameters
        ----------
        t : int
            The timestep the step starts from (a plan timestep, or any other).

        Returns
        -------
        int
            The timestep it lands on, FINAL (-1) past the last.

        Examples
        --------
        >>> plan = make_plan(DDIMConfig(), 4)
        >>> plan.prev_timestep(750), plan.prev_timestep(600), plan.prev_timestep(0)
        (500, 500, -1)
        """
        if self.config.prev_timestep == "stride":
            return max(t - self.config.num_train_timesteps // self.num_inference_steps, FINAL)
        ascending = self.inverse_timesteps
        i = bisect.bisect_left(ascending, t)
        return ascending[i - 1] if i > 0 else FINAL


def make_plan(
    config: DDIMConfig,
    n: int | None = None,
    *,
    timesteps: Sequence[int] | None = None,
    schedule: Schedule | None = None,
) -> Plan:
    """The plan of n steps of config's spacing (or of custom descending `timesteps`), on
    config's float64 table or on `schedule`.

    Parameters
    ----------
    config : DDIMConfig
        The options: the spacing, and the table unless `schedule` is given.
    n : int, optional
        The number of steps of config's spacing (`spaced_timesteps`).
    timesteps : sequence of int, optional
        Custom timesteps, descending, instead of `n`.
    schedule : Schedule, optional
        The alpha_bar table to step on (default: config's, `ddim_core.schedule`).

    Returns
    -------
    Plan
        The timesteps and each step's t_prev.

    Raises
    ------
    ValueError
        If both or neither of `n` and `timesteps` are given, or no plan of `n` steps exists
        (`spaced_timesteps`).

    Examples
    --------
    >>> make_plan(DDIMConfig(), timesteps=[900, 500, 100]).pairs
    ((900, 500), (500, 100), (100, -1))
    >>> make_plan(DDIMConfig(), 10, timesteps=[900])
    Traceback (most recent call last):
    ...
    ValueError: give exactly one of n and timesteps
    """
    if (n is None) == (timesteps is None):
        raise ValueError("give exactly one of n and timesteps")
    if timesteps is None:
        assert n is not None
        ts = spaced_timesteps(config, n)
    else:
        ts = tuple(int(t) for t in timesteps)
    table = config_schedule(config) if schedule is None else schedule
    plan = Plan(config, table, ts, ())
    return dataclasses.replace(plan, prev_timesteps=tuple(plan.prev_timestep(t) for t in ts))


def level(plan: Any, t: int) -> float:
    """alpha_bar_t of the plan's table; t < 0 is the final (clean) level.

    Parameters
    ----------
    plan : Plan or ddim_core.Plan
        The plan whose `schedule` is read.
    t : int
        The timestep; negative (FINAL) for the level past the last step.

    Returns
    -------
    float
        alpha_bar_t.

    Examples
    --------
    >>> plan = make_plan(DDIMConfig(), 4)
    >>> level(plan, 0), level(plan, FINAL)
    (0.9999, 1.0)
    >>> level(make_plan(DDIMConfig(set_alpha_to_one=False), 4), FINAL)
    0.9999
    """
    s = plan.schedule
    return float(s.final_alpha_cumprod) if t < 0 else float(s.alphas_cumprod[t])


def schedule_from_table(alphas_cumprod: Any, final_alpha_cumprod: float) -> Schedule:
    """A Schedule on a given alpha_bar table (e.g. another library's), read in float64.

    Parameters
    ----------
    alphas_cumprod : array_like
        The alpha_bar table, one value per training timestep.
    final_alpha_cumprod : float
        alpha_bar past the last step.

    Returns
    -------
    Schedule
        The table, with the betas it implies.

    Examples
    --------
    >>> schedule_from_table([0.9, 0.45], 1.0).betas
    array([0.1, 0.5])
    """
    ab = np.asarray(alphas_cumprod, dtype=np.float64).reshape(-1)
    betas = 1.0 - ab / np.concatenate([[1.0], ab[:-1]])
    return Schedule(betas=betas, alphas_cumprod=ab, final_alpha_cumprod=float(final_alpha_cumprod))


# --- one step ----------------------------------------------------------------------------------


def x0_eps(x: np.ndarray, out: np.ndarray, ab: float, prediction: str) -> tuple[Any, Any]:
    """Eq. (9): (x0_pred, eps_pred) from the model output at level ab.

    Parameters
    ----------
    x : numpy.ndarray
        The sample at level ab.
    out : numpy.ndarray
        The model output on it.
    ab : float
        alpha_bar of the sample's level.
    prediction : str
        What the model predicts: "epsilon", "sample" or "v_prediction".

    Returns
    -------
    tuple of (numpy.ndarray, numpy.ndarray)
        x0_pred and eps_pred.

    Examples
    --------
    >>> x0_eps(np.array([1.0]), np.array([0.0]), 0.25, "epsilon")
    (array([2.]), array([0.]))
    """
    if prediction == "epsilon":
        return (x - np.sqrt(1 - ab) * out) / np.sqrt(ab), out
    if prediction == "sample":
        return out, (x - np.sqrt(ab) * out) / np.sqrt(1 - ab)
    return np.sqrt(ab) * x - np.sqrt(1 - ab) * out, np.sqrt(ab) * out + np.sqrt(1 - ab) * x


def threshold(x0: np.ndarray, ratio: float, max_value: float) -> np.ndarray:
    """Dynamic thresholding (Saharia et al. 2022), per batch element.

    Parameters
    ----------
    x0 : numpy.ndarray
        x0_pred, batch first (0-d: a single sample, as the core takes it).
    ratio : float
        The quantile of |x0| each element's threshold s is taken at.
    max_value : float
        The largest s (the smallest is 1).

    Returns
    -------
    numpy.ndarray
        x0 clipped to [-s, s] and divided by s.

    Examples
    --------
    >>> threshold(np.array([[0.5, 3.0]]), 1.0, 2.0)
    array([[0.25, 1.  ]])
    """
    flat = x0.reshape(x0.shape[0] if x0.ndim else 1, -1)
    s = np.quantile(np.abs(flat), ratio, axis=1, method="linear")
    s = np.minimum(np.maximum(s, 1.0), max_value)[:, None]
    out: np.ndarray = (np.clip(flat, -s, s) / s).reshape(x0.shape)
    return out


def process_x0(config: Any, x0: np.ndarray) -> np.ndarray:
    """The config's thresholding, else its clip_sample, else nothing. `config` may be a plan.

    Parameters
    ----------
    config : DDIMConfig or Plan
        The options (a plan's `config`).
    x0 : numpy.ndarray
        x0_pred.

    Returns
    -------
    numpy.ndarray
        x0_pred thresholded, clipped, or as it is.

    Examples
    --------
    >>> process_x0(DDIMConfig(), np.array([-3.0, 0.5]))
    array([-1. ,  0.5])
    """
    cfg = getattr(config, "config", config)
    if cfg.thresholding:
        return threshold(x0, cfg.dynamic_thresholding_ratio, cfg.sample_max_value)
    if cfg.clip_sample:
        clipped: np.ndarray = np.clip(x0, -cfg.clip_sample_range, cfg.clip_sample_range)
        return clipped
    return x0


def sigma(ab_from: float, ab_to: float, eta: float) -> float:
    """Eq. (16): eta * sqrt((1 - ab_to) / (1 - ab_from)) * sqrt(1 - ab_from / ab_to).

    Parameters
    ----------
    ab_from, ab_to : float
        alpha_bar of the step's source and destination levels.
    eta : float
        The step's eta (0: deterministic DDIM, 1: DDPM's posterior variance).

    Returns
    -------
    float
        The standard deviation of the noise the step adds.

    Examples
    --------
    >>> round(sigma(0.5, 0.8, 1.0) ** 2, 12), sigma(0.5, 0.8, 0.0)
    (0.15, 0.0)
    """
    if eta == 0:
        return 0.0
    return float(eta * np.sqrt((1 - ab_to) / (1 - ab_from) * (1 - ab_from / ab_to)))


def transfer(
    config: DDIMConfig,
    out: np.ndarray,
    ab_from: float,
    ab_to: float,
    x: np.ndarray,
    *,
    eta: float = 0.0,
    noise: np.ndarray | None = None,
    use_clipped: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Eq. (12) from level ab_from to ab_to: (x_to, x0_pred).

    Parameters
    ----------
    config : DDIMConfig
        prediction_type, and the clipping or thresholding of x0_pred (`process_x0`).
    out : numpy.ndarray
        The model output on `x`.
    ab_from, ab_to : float
        alpha_bar of the source and destination levels.
    x : numpy.ndarray
        The sample at ab_from.
    eta : float
        The step's eta (`sigma`).
    noise : numpy.ndarray, optional
        The standard normal draw, needed when the step's sigma is above 0.
    use_clipped : bool
        Recompute eps_pred from the processed x0_pred (diffusers' use_clipped_model_output).

    Returns
    -------
    tuple of (numpy.ndarray, numpy.ndarray)
        x_to, the sample at ab_to, and x0_pred.

    Raises
    ------
    ValueError
        If eta gives a sigma above 0 and `noise` is None.

    Examples
    --------
    A model predicting no noise moves x0_pred = x / sqrt(ab_from) to the clean level:

    >>> transfer(DDIMConfig(clip_sample=False), np.zeros(2), 0.25, 1.0, np.ones(2))
    (array([2., 2.]), array([2., 2.]))
    >>> transfer(DDIMConfig(), np.zeros(2), 0.25, 0.5, np.ones(2), eta=1.0)
    Traceback (most recent call last):
    ...
    ValueError: eta=1.0 > 0 needs noise
    """
    x0, eps = x0_eps(x, out, ab_from, config.prediction_type)
    x0 = process_x0(config, x0)
    if use_clipped:
        eps = (x - np.sqrt(ab_from) * x0) / np.sqrt(1 - ab_from)
    s = sigma(ab_from, ab_to, eta)
    x_to = np.sqrt(ab_to) * x0 + np.sqrt(max(1 - ab_to - s**2, 0.0)) * eps
    if s > 0:
        if noise is None:
            raise ValueError(f"eta={eta} > 0 needs noise")
        x_to = x_to + s * noise
    return x_to, x0


def step(
    plan: Any,
    out: np.ndarray,
    t: int,
    x: np.ndarray,
    eta: float = 0.0,
    noise: np.ndarray | None = None,
    use_clipped: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """A forward step from t to the plan's t_prev, eq. (12) with sigma from eq. (16):
    (x_prev, x0_pred).

    Parameters
    ----------
    plan : Plan or ddim_core.Plan
        The plan: config, table and t_prev.
    out : numpy.ndarray
        The model output at t on `x`.
    t : int
        The timestep the step starts from.
    x : numpy.ndarray
        The sample at t.
    eta : float
        The step's eta.
    noise : numpy.ndarray, optional
        The standard normal draw, needed when eta > 0.
    use_clipped : bool
        Recompute eps_pred from the processed x0_pred.

    Returns
    -------
    tuple of (numpy.ndarray, numpy.ndarray)
        x_prev, the sample at the plan's t_prev, and x0_pred.

    Examples
    --------
    >>> plan = make_plan(DDIMConfig(clip_sample=False), 4)
    >>> x_prev, x0 = step(plan, np.zeros(3), 0, np.ones(3))
    >>> np.allclose(x_prev, 1 / np.sqrt(level(plan, 0))), np.array_equal(x_prev, x0)
    (True, True)
    """
    ab_t, ab_prev = level(plan, t), level(plan, plan.prev_timestep(t))
    return transfer(
        plan.config, out, ab_t, ab_prev, x, eta=eta, noise=noise, use_clipped=use_clipped
    )


def inverse_step(plan: Any, out: np.ndarray, t: int, x: np.ndarray) -> tuple[Any, Any]:
    """From the level of prev_timestep(t) up to t, the model evaluated at t on the source
    sample (diffusers' and null-text inversion's convention): (x_t, x0_pred).

    Parameters
    ----------
    plan : Plan or ddim_core.Plan
        The plan: config, table and t_prev.
    out : numpy.ndarray
        The model output at t on `x`.
    t : int
        The timestep the step goes up to.
    x : numpy.ndarray
        The sample at the plan's prev_timestep(t).

    Returns
    -------
    tuple of (numpy.ndarray, numpy.ndarray)
        x_t and x0_pred.

    Examples
    --------
    With the same model output, an inverse step undoes a forward step:

    >>> plan = make_plan(DDIMConfig(clip_sample=False), 4)
    >>> x, out = np.array([0.3, -1.2]), np.array([0.5, 0.1])
    >>> x_prev = step(plan, out, 500, x)[0]
    >>> np.allclose(inverse_step(plan, out, 500, x_prev)[0], x)
    True
    """
    return transfer(plan.config, out, level(plan, plan.prev_timestep(t)), level(plan, t), x)


def per_sample(
    plan: Any,
    out: np.ndarray,
    timesteps: Sequence[int],
    x: np.ndarray,
    eta: float = 0.0,
    noise: np.ndarray | None = None,
    inverse: bool = False,
    use_clipped: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """`step` (or `inverse_step`) of sample i from timesteps[i], stacked: a step with an array
    of per-sample timesteps.

    Parameters
    ----------
    plan : Plan or ddim_core.Plan
        The plan.
    out : numpy.ndarray
        The model outputs, batch first.
    timesteps : sequence of int
        One timestep per sample.
    x : numpy.ndarray
        The samples, batch first.
    eta : float
        The steps' eta (forward steps).
    noise : numpy.ndarray, optional
        The standard normal draws, batch first, needed when eta > 0.
    inverse : bool
        Take inverse steps (`inverse_step`; eta, noise and use_clipped are not used).
    use_clipped : bool
        Recompute eps_pred from the processed x0_pred (forward steps).

    Returns
    -------
    tuple of (numpy.ndarray, numpy.ndarray)
        The stacked x_prev (or x_t) and x0_pred.

    Examples
    --------
    >>> plan = make_plan(DDIMConfig(), 4)
    >>> x, out = np.ones((2, 3)), np.full((2, 3), 0.5)
    >>> both = per_sample(plan, out, [750, 250], x)[0]
    >>> np.array_equal(both[1:], step(plan, out[1:], 250, x[1:])[0])
    True
    """
    rows = []
    for i, t in enumerate(timesteps):
        if inverse:
            rows.append(inverse_step(plan, out[i : i + 1], t, x[i : i + 1]))
        else:
            z = None if noise is None else noise[i : i + 1]
            one = step(plan, out[i : i + 1], t, x[i : i + 1], eta, z, use_clipped=use_clipped)
            rows.append(one)
    x_prev, x0 = (np.concatenate(parts) for parts in zip(*rows, strict=True))
    return x_prev, x0


def magnitude(
    config: DDIMConfig,
    out: np.ndarray,
    ab_from: float,
    ab_to: float,
    x: np.ndarray,
    *,
    eta: float = 0.0,
    noise: np.ndarray | None = None,
    use_clipped: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The size of the terms `transfer` adds up, elementwise, for x_to and x0_pred: the same
    formulas on absolute values with every difference made a sum. Rounding in any correct
    implementation is a few units of its dtype's precision times this, so tolerances scale
    with it (a result that cancels to nearly 0 is not held to a bound it cannot meet).

    Parameters
    ----------
    config : DDIMConfig
        prediction_type and the clipping or thresholding of x0_pred.
    out : numpy.ndarray
        The model output on `x`.
    ab_from, ab_to : float
        alpha_bar of the source and destination levels.
    x : numpy.ndarray
        The sample at ab_from.
    eta : float
        The step's eta.
    noise : numpy.ndarray, optional
        The standard normal draw (its size is added when the step's sigma is above 0).
    use_clipped : bool
        Whether eps_pred is recomputed from the processed x0_pred.

    Returns
    -------
    tuple of (numpy.ndarray, numpy.ndarray)
        The sizes of x_to and x0_pred, elementwise.

    Examples
    --------
    Terms of size 1 that cancel to x0_pred = 0:

    >>> config = DDIMConfig(clip_sample=False)
    >>> x, out = np.full(1, np.sqrt(0.5)), np.ones(1)
    >>> transfer(config, out, 0.5, 1.0, x)[1], magnitude(config, out, 0.5, 1.0, x)[1]
    (array([0.]), array([2.]))
    """
    a, b = np.abs(np.asarray(x, dtype=np.float64)), np.abs(np.asarray(out, dtype=np.float64))
    s0, s1 = np.sqrt(ab_from), np.sqrt(1 - ab_from)
    kind = config.prediction_type
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "epsilon":
            x0, eps = (a + s1 * b) / s0, b
        elif kind == "sample":
            x0, eps = b, (a + s0 * b) / s1
        else:
            x0, eps = s0 * a + s1 * b, s0 * b + s1 * a
        if config.thresholding or config.clip_sample:
            v = x0_eps(np.asarray(x, np.float64), np.asarray(out, np.float64), ab_from, kind)[0]
            x0 = _clipped_size(config, v, x0)
        if use_clipped:
            eps = (a + s0 * x0) / s1
    s = sigma(ab_from, ab_to, eta)
    total = np.sqrt(ab_to) * x0 + np.sqrt(max(1 - ab_to - s**2, 0.0)) * eps
    if s > 0 and noise is not None:
        total = total + s * np.abs(noise)
    return np.asarray(total), np.asarray(x0)


# Any dtype's rounding of a value whose terms have size 1, at most: the largest TOLERANCE
# (bfloat16's; ddim_core.testing.assertions)
_ROUNDING = 2e-2


def _clipped_size(config: DDIMConfig, v: np.ndarray, size: np.ndarray) -> np.ndarray:
    """The size of x0_pred after the config's clip or thresholding, from its exact value `v`
    and its `size` before. A clip passes rounding through (it moves no two values further
    apart), except where v is beyond the range by more than any dtype's rounding of it
    (`_ROUNDING`): the computed value is beyond too, and the result the range's end exactly,
    so there the size is that end. (Capped at the end everywhere, float32 terms of size 400
    cancelling to x0_pred = 0.501, off by 1.7e-5 through rounding alone, were held to 1.5e-5.)
    Thresholding divides by s, its batch element's quantile clipped to [1, sample_max_value]:
    the quantile rounds by at most the element's largest size, which reaches the result in
    proportion to |v| / s."""
    if not config.thresholding:
        return _through_clip(v, size, config.clip_sample_range)
    batch = v.shape[0] if v.ndim else 1  # 0-d: a single sample, as in `threshold`
    flat_v, flat = v.reshape(batch, -1), size.reshape(batch, -1)
    q = np.quantile(np.abs(flat_v), config.dynamic_thresholding_ratio, axis=1, method="linear")
    s = np.clip(q, 1.0, config.sample_max_value)[:, None]
    q_size = flat.max(axis=1, keepdims=True)
    s_size = np.where(np.abs(q[:, None] - s) > _ROUNDING * q_size, 0.0, q_size)  # s exact
    scaled = _through_clip(flat_v / s, (flat + np.abs(flat_v) / s * s_size) / s, 1.0)
    return scaled.reshape(size.shape)


def _through_clip(v: np.ndarray, size: np.ndarray, r: float) -> np.ndarray:
    """The size of clip(v, -r, r)'s rounding (`_clipped_size`)."""
    return np.where(np.abs(v) - r > _ROUNDING * size, r, size)


# --- loops -------------------------------------------------------------------------------------


def sample(
    model: Model,
    x_T: np.ndarray,
    plan: Any,
    *,
    eta: float = 0.0,
    noise: Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """DDIM sampling along the plan: x = step(plan, model(x, t), t, x) for each t; with eta > 0
    noise[i] is the standard normal draw of step i.

    Parameters
    ----------
    model : callable
        model(x, t), the model output at timestep t on x.
    x_T : numpy.ndarray
        The starting noise, at the plan's first timestep.
    plan : Plan or ddim_core.Plan
        The plan.
    eta : float
        Each step's eta.
    noise : sequence of numpy.ndarray, optional
        One standard normal draw per step, needed when eta > 0.

    Returns
    -------
    numpy.ndarray
        The sample at the final level.

    Examples
    --------
    A model predicting no noise scales x_T to the clean level, 1 / sqrt(alpha_bar_T):

    >>> plan = make_plan(DDIMConfig(clip_sample=False), 10)
    >>> x_0 = sample(lambda x, t: np.zeros_like(x), np.ones(2), plan)
    >>> np.allclose(x_0, 1 / np.sqrt(level(plan, plan.timesteps[0])))
    True
    """
    x = np.asarray(x_T, dtype=np.float64)
    for i, t in enumerate(plan.timesteps):
        z = None if noise is None else noise[i]
        x = step(plan, np.asarray(model(x, t), dtype=np.float64), t, x, eta=eta, noise=z)[0]
    return x


def invert(model: Model, x_0: np.ndarray, plan: Any) -> np.ndarray:
    """Plain DDIM inversion along the mirrored plan, the model at the destination timestep.

    Parameters
    ----------
    model : callable
        model(x, t), the model output at timestep t on x.
    x_0 : numpy.ndarray
        The clean sample, at the final level.
    plan : Plan or ddim_core.Plan
        The forward plan (inverted along `inverse_timesteps`).

    Returns
    -------
    numpy.ndarray
        The sample at the plan's first timestep.

    Examples
    --------
    With a model whose output does not depend on x, inversion undoes sampling:

    >>> plan = make_plan(DDIMConfig(clip_sample=False), 10)
    >>> model = lambda x, t: np.full_like(x, 0.1)
    >>> x_T = np.array([0.5, -1.0])
    >>> np.allclose(invert(model, sample(model, x_T, plan), plan), x_T)
    True
    """
    x = np.asarray(x_0, dtype=np.float64)
    for t in plan.inverse_timesteps:
        x = inverse_step(plan, np.asarray(model(x, t), dtype=np.float64), t, x)[0]
    return x


def sigmas(plan: Any) -> np.ndarray:
    """k-diffusion's sigmas of a plan, sqrt((1 - abar) / abar) at each timestep, then the final
    level (0 with set_alpha_to_one).

    Parameters
    ----------
    plan : Plan or ddim_core.Plan
        The plan.

    Returns
    -------
    numpy.ndarray
        num_inference_steps + 1 sigmas, descending.

    Examples
    --------
    >>> sigmas(make_plan(DDIMConfig(), 2))
    array([3.44296711, 0.0100005 , 0.        ])
    """
    ab = np.array([*(level(plan, t) for t in plan.timesteps), level(plan, FINAL)])
    return np.asarray(np.sqrt((1.0 - ab) / ab))


_DENOISED = DDIMConfig(prediction_type="sample", clip_sample=False)
_EPSILON = DDIMConfig(prediction_type="epsilon", clip_sample=False)

KModel = Callable[[np.ndarray, np.ndarray], np.ndarray]


def kdiffusion_sample(
    model: KModel,
    x: np.ndarray,
    sigmas: Sequence[float] | np.ndarray,
    *,
    eta: float = 0.0,
    noise: Sequence[np.ndarray | None] | None = None,
) -> np.ndarray:
    """DDIM down descending `sigmas` in k-diffusion's variance-exploding form: x_k =
    x / sqrt(abar), sigma = sqrt((1 - abar) / abar), `model(x_k, sigma * ones(batch))` the
    denoised x_0. With eta > 0 noise[i] is step i's draw (steps into sigma 0 take none). A
    repeated sigma is a zero-length step.

    Parameters
    ----------
    model : callable
        model(x, sigma), the denoised x_0 at the batch's sigmas.
    x : numpy.ndarray
        The sample at sigmas[0], batch first, in k-diffusion's scale.
    sigmas : sequence of float
        The levels, descending.
    eta : float
        Each step's eta.
    noise : sequence of numpy.ndarray or None, optional
        One standard normal draw per step, needed when eta > 0 (not for a step into 0).

    Returns
    -------
    numpy.ndarray
        The sample at sigmas[-1].

    Examples
    --------
    A model denoising to 0 scales x by each step's ratio of sigmas:

    >>> kdiffusion_sample(lambda x, s: np.zeros_like(x), np.ones((1, 2)), [2.0, 1.0])
    array([[0.5, 0.5]])
    """
    x = np.asarray(x, dtype=np.float64)
    ones = np.ones(x.shape[0])
    for i, (a, b) in enumerate(itertools.pairwise(float(s) for s in sigmas)):
        if a == b:
            continue
        ab_a, ab_b = 1.0 / (1.0 + a * a), 1.0 / (1.0 + b * b)
        denoised = np.asarray(model(x, a * ones), dtype=np.float64)
        z = None if noise is None or b == 0 else noise[i]
        x_vp = transfer(_DENOISED, denoised, ab_a, ab_b, x * np.sqrt(ab_a), eta=eta, noise=z)[0]
        x = x_vp / np.sqrt(ab_b)
    return x


def kdiffusion_invert(
    model: KModel, x: np.ndarray, sigmas: Sequence[float] | np.ndarray
) -> np.ndarray:
    """Plain DDIM inversion up ascending `sigmas` in k-diffusion's form: the model at the
    destination level on the source sample (scaled to that level), as diffusers' inverse
    scheduler evaluates it.

    Parameters
    ----------
    model : callable
        model(x, sigma), the denoised x_0 at the batch's sigmas.
    x : numpy.ndarray
        The sample at sigmas[0], batch first, in k-diffusion's scale.
    sigmas : sequence of float
        The levels, ascending.

    Returns
    -------
    numpy.ndarray
        The sample at sigmas[-1].

    Examples
    --------
    >>> zero = lambda x, s: np.zeros_like(x)
    >>> kdiffusion_invert(zero, np.ones((1, 2)), [1.0, 1.0])  # a zero-length step
    array([[1., 1.]])
    >>> kdiffusion_invert(zero, np.ones((1, 2)), [1.0, 2.0]).round(4)
    array([[1.7906, 1.7906]])
    """
    x = np.asarray(x, dtype=np.float64)
    ones = np.ones(x.shape[0])
    for a, b in itertools.pairwise(float(s) for s in sigmas):
        if a == b:
            continue
        ab_a, ab_b = 1.0 / (1.0 + a * a), 1.0 / (1.0 + b * b)
        y = x * np.sqrt(ab_a) / np.sqrt(ab_b)  # the source sample at the destination's scale
        eps = (y - np.asarray(model(y, b * ones), dtype=np.float64)) / b
        x = transfer(_EPSILON, eps, ab_a, ab_b, x * np.sqrt(ab_a))[0] / np.sqrt(ab_b)
    return x


# --- diffusers' API on the reference ---------------------------------------------------------


class _State(NamedTuple):
    """What set_timesteps sets, per thread."""

    num_inference_steps: int | None
    timesteps: np.ndarray
    plan: Plan | None


class StepOutput(NamedTuple):
    """diffusers' DDIMSchedulerOutput fields.

    Examples
    --------
    >>> StepOutput(np.ones(1), np.zeros(1)).prev_sample
    array([1.])
    """

    prev_sample: np.ndarray
    pred_original_sample: np.ndarray


class ReferenceScheduler:
    """diffusers' `DDIMScheduler` API computed by this module: NumPy float64, t_prev from the
    plan, a thread-safe shared instance (each thread steps on the plan it set). Assigning
    `alphas_cumprod` makes it step on that table. Checks itself conformant:
    `ddim-core check ddim_core.testing.reference:ReferenceScheduler`.

    Parameters
    ----------
    num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas, clip_sample, \
set_alpha_to_one, steps_offset, prediction_type, thresholding, dynamic_thresholding_ratio, \
clip_sample_range, sample_max_value, timestep_spacing, rescale_betas_zero_snr
        diffusers' DDIMScheduler options, with its defaults (see `ddim_core.DDIMConfig`).

    Examples
    --------
    >>> import numpy as np
    >>> scheduler = ReferenceScheduler(timestep_spacing="trailing")
    >>> scheduler.set_timesteps(10)
    >>> scheduler.timesteps[:3]
    array([999, 899, 799])
    >>> x = np.ones((1, 4))
    >>> scheduler.step(np.zeros((1, 4)), 999, x).prev_sample.shape
    (1, 4)
    """

    order = 1
    init_noise_sigma = 1.0
    _inverse = False

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: Any = None,
        clip_sample: bool = True,
        set_alpha_to_one: bool = True,
        steps_offset: int = 0,
        prediction_type: str = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        clip_sample_range: float = 1.0,
        sample_max_value: float = 1.0,
        timestep_spacing: str = "leading",
        rescale_betas_zero_snr: bool = False,
    ) -> None:
        options = dict(locals())
        del options["self"]
        if trained_betas is not None:
            options["trained_betas"] = tuple(np.asarray(trained_betas, dtype=np.float64).tolist())
        self.config = DDIMConfig(**options)
        s = config_schedule(self.config)
        self.alphas_cumprod: Any = s.alphas_cumprod  # read-only; assign a table to change it
        self._boundary = np.float64(s.final_alpha_cumprod)
        self._local = threading.local()
        every = np.arange(self.config.num_train_timesteps, dtype=np.int64)
        self._last = _State(None, every if self._inverse else every[::-1], None)

    @property
    def final_alpha_cumprod(self) -> Any:
        """alpha_bar past the last step (1 with set_alpha_to_one, else alpha_bar_0)."""
        return self._boundary

    @final_alpha_cumprod.setter
    def final_alpha_cumprod(self, value: Any) -> None:
        self._boundary = np.float64(value)

    def _state(self) -> _State:
        state: _State = getattr(self._local, "state", self._last)
        return state

    @property
    def num_inference_steps(self) -> int | None:
        """The number of steps set by this thread (else the last set), or None before any."""
        return self._state().num_inference_steps

    @property
    def timesteps(self) -> np.ndarray:
        """The plan's timesteps in run order (int64), every training timestep before any."""
        return self._state().timesteps

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: Any = None,
        timesteps: Sequence[int] | None = None,
    ) -> None:
        """The plan of num_inference_steps steps, or of custom `timesteps` (run order).

        Parameters
        ----------
        num_inference_steps : int, optional
            The number of steps (when `timesteps` is not given).
        device : any
            Ignored (NumPy, on the host); taken for diffusers' signature.
        timesteps : sequence of int, optional
            Custom timesteps, in run order.
        """
        custom = None if timesteps is None else [int(t) for t in timesteps]
        if custom is not None and self._inverse:
            custom = custom[::-1]
        plan = make_plan(self.config, num_inference_steps, timesteps=custom)
        order = plan.inverse_timesteps if self._inverse else plan.timesteps
        state = _State(plan.num_inference_steps, np.asarray(order, dtype=np.int64), plan)
        self._last = self._local.state = state

    def _plan(self) -> Plan:
        """The plan set by this thread (else the last one set), on the current table."""
        plan = self._state().plan
        if plan is None:
            raise ValueError("call set_timesteps first")
        s = plan.schedule
        if s.alphas_cumprod is not self.alphas_cumprod or s.final_alpha_cumprod != self._boundary:
            table = np.asarray(self.alphas_cumprod, dtype=np.float64)
            ab = schedule_from_table(table, float(self._boundary))
            ab = dataclasses.replace(ab, alphas_cumprod=self.alphas_cumprod)
            plan = dataclasses.replace(plan, schedule=ab)
        return plan

    def step(
        self,
        model_output: Any,
        timestep: Any,
        sample: Any,
        eta: float = 0.0,
        use_clipped_model_output: bool = False,
        generator: Any = None,
        variance_noise: Any = None,
        return_dict: bool = True,
    ) -> Any:
        """One forward step (eta > 0: `variance_noise` or a draw from a NumPy `generator`).

        Parameters
        ----------
        model_output, timestep, sample
            The model's output at `timestep` (an int, or one per sample) on `sample`.
        eta : float
            The step's eta (0: deterministic DDIM).
        use_clipped_model_output : bool
            Recompute the model output from the clipped x_0 (diffusers' option).
        generator : numpy.random.Generator or numpy.random.RandomState, optional
            Where noise is drawn when eta > 0 and no `variance_noise` is given (another
            library's generator, torch's, is a TypeError: pass its draw as variance_noise).
        variance_noise : array_like, optional
            The noise to add when eta > 0.
        return_dict : bool
            Whether to return a StepOutput rather than a tuple.

        Returns
        -------
        StepOutput or tuple
            prev_sample and pred_original_sample, in the sample's floating dtype.

        Raises
        ------
        TypeError
            If eta > 0 draws noise from a `generator` that is not NumPy's (a Generator or a
            RandomState).
        """
        plan = self._plan()
        out, x = np.asarray(model_output, np.float64), np.asarray(sample, np.float64)
        noise = None
        if eta > 0:
            if variance_noise is not None:
                noise = np.asarray(variance_noise, np.float64)
            else:
                rng = generator if generator is not None else np.random.default_rng()
                if not isinstance(rng, np.random.Generator | np.random.RandomState):
                    raise TypeError(
                        "generator must be a numpy.random.Generator or RandomState (the "
                        "reference draws its noise in NumPy), got "
                        f"{type(rng).__module__}.{type(rng).__qualname__}; "
                        "or pass the noise as variance_noise"
                    )
                noise = rng.standard_normal(x.shape)
        result = self._apply(plan, out, timestep, x, eta, noise, bool(use_clipped_model_output))
        return _output(result, sample, return_dict)

    def _apply(
        self,
        plan: Plan,
        out: np.ndarray,
        timestep: Any,
        x: np.ndarray,
        eta: float,
        noise: np.ndarray | None,
        use_clipped: bool,
    ) -> tuple[np.ndarray, np.ndarray]:
        ts = np.asarray(timestep).reshape(-1)
        if ts.size > 1:
            return per_sample(
                plan, out, ts.tolist(), x, eta=eta, noise=noise, use_clipped=use_clipped
            )
        t = int(ts[0])
        if self._inverse:
            return inverse_step(plan, out, t, x)
        return step(plan, out, t, x, eta=eta, noise=noise, use_clipped=use_clipped)


class ReferenceInverseScheduler(ReferenceScheduler):
    """diffusers' `DDIMInverseScheduler` API on the reference: the mirrored plan, each step from
    the forward plan's t_prev up to t with the model evaluated at t.

    Examples
    --------
    >>> import numpy as np
    >>> scheduler = ReferenceInverseScheduler(timestep_spacing="trailing")
    >>> scheduler.set_timesteps(10)
    >>> scheduler.timesteps[:3]
    array([ 99, 199, 299])
    >>> scheduler.step(np.zeros((1, 4)), 99, np.ones((1, 4))).prev_sample.shape
    (1, 4)
    """

    _inverse = True

    @property
    def initial_alpha_cumprod(self) -> Any:
        """alpha_bar before the first inverse step (the forward scheduler's final one)."""
        return self._boundary

    @initial_alpha_cumprod.setter
    def initial_alpha_cumprod(self, value: Any) -> None:
        self._boundary = np.float64(value)

    def step(  # type: ignore[override]
        self, model_output: Any, timestep: Any, sample: Any, return_dict: bool = True
    ) -> Any:
        """One inverse step up to `timestep`.

        Parameters
        ----------
        model_output, timestep, sample
            The model's output at `timestep` (an int, or one per sample) on `sample`.
        return_dict : bool
            Whether to return a StepOutput rather than a tuple.

        Returns
        -------
        StepOutput or tuple
            prev_sample (the sample at `timestep`) and pred_original_sample.
        """
        plan = self._plan()
        out, x = np.asarray(model_output, np.float64), np.asarray(sample, np.float64)
        ts = np.asarray(timestep).reshape(-1)
        if ts.size > 1:
            result = per_sample(plan, out, ts.tolist(), x, inverse=True)
        else:
            result = inverse_step(plan, out, int(ts[0]), x)
        return _output(result, sample, return_dict)


def _output(result: tuple[np.ndarray, np.ndarray], sample: Any, return_dict: bool) -> Any:
    """The float64 results rounded once to the sample's floating dtype (ml_dtypes' bfloat16,
    JAX's, included: NumPy's kind "V"), else float64."""
    dtype = np.asarray(sample).dtype
    floating = dtype.kind == "f" or dtype.name == "bfloat16"
    prev, x0 = (np.asarray(a, dtype=dtype if floating else np.float64) for a in result)
    return StepOutput(prev, x0) if return_dict else (prev, x0)
