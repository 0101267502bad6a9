"""Public step functions: validate, resolve the namespace, look up coefficients, run the kernels.

    plan = make_plan(DDIMConfig(), 50)
    for t in plan.timesteps:
        x = step(plan, model(x, t), t, x).prev_sample

`timestep` is a Python int (coefficients are Python floats from the host table: no device work),
or an integer array of shape () or (batch,) (coefficients gathered on the sample's device).
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Any, NamedTuple

import numpy as np

from . import backends, kernels, plugins
from .backends import Array, Namespace
from .config import DDIMConfig, check_nonnegative
from .plans import Plan
from .schedules import Schedule, as_schedule


class StepOutput(NamedTuple):
    """Result of one step; field names follow diffusers' DDIMSchedulerOutput."""

    prev_sample: Array
    pred_original_sample: Array


def step(
    plan: Plan,
    model_output: Array,
    timestep: Any,
    sample: Array,
    *,
    eta: float = 0.0,
    noise: Array | None = None,
    use_clipped_model_output: bool = False,
    out: tuple[Array, Array] | None = None,
) -> StepOutput:
    """One forward DDIM step x_t -> x_prev, eq. (12), with the plan's t_prev.

    eta scales sigma_t (eq. 16): 0 is deterministic DDIM, 1 is DDPM-like. With eta > 0 the
    caller supplies `noise`, a standard normal array shaped like `sample`.
    `out=(x_prev, x0_pred)`: arrays to write the results into (fused kernels only: torch,
    NumPy with numba, CuPy; scalar timestep, no thresholding; they must not overlap inputs).
    """
    eta = _check_eta(eta)
    if eta > 0.0 and noise is None:
        raise ValueError(f"eta={eta} > 0 needs a `noise` array (standard normal, like sample)")
    noise = noise if eta > 0.0 else None
    return _run(
        plan, model_output, timestep, sample, noise, eta, use_clipped_model_output, False, out
    )


def inverse_step(
    plan: Plan,
    model_output: Array,
    timestep: Any,
    sample: Array,
    *,
    out: tuple[Array, Array] | None = None,
) -> StepOutput:
    """One DDIM inversion step from the level of t_prev up to `timestep` (deterministic).

    As in diffusers' DDIMInverseScheduler and null-text inversion, `model_output` is the model
    evaluated at the destination `timestep` on the source `sample`. `prev_sample` is the noisier
    result. Without clipping, `inverse_step(step(x))` returns x given the same model output.
    """
    return _run(plan, model_output, timestep, sample, None, 0.0, False, True, out)


def add_noise(
    schedule_of: DDIMConfig | Schedule | Plan, original_samples: Array, noise: Array, timesteps: Any
) -> Array:
    """The forward process q(x_t | x_0): sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise."""
    xp = _arrays(original_samples=original_samples, noise=noise)
    sched = as_schedule(schedule_of)
    sqrt_ab, sqrt_1m_ab = _coefficients(
        ("noise", sched), sched, timesteps, original_samples, xp, None
    )
    x0, eps = backends.to_work_dtype(xp, original_samples, noise)
    return backends.cast(xp, sqrt_ab * x0 + sqrt_1m_ab * eps, original_samples.dtype)


def get_velocity(
    schedule_of: DDIMConfig | Schedule | Plan, sample: Array, noise: Array, timesteps: Any
) -> Array:
    """The v-prediction target v = sqrt(abar_t) noise - sqrt(1 - abar_t) x_0 (Salimans & Ho)."""
    xp = _arrays(sample=sample, noise=noise)
    sched = as_schedule(schedule_of)
    sqrt_ab, sqrt_1m_ab = _coefficients(("noise", sched), sched, timesteps, sample, xp, None)
    x0, eps = backends.to_work_dtype(xp, sample, noise)
    return backends.cast(xp, sqrt_ab * eps - sqrt_1m_ab * x0, sample.dtype)


def _run(
    plan: Plan,
    model_output: Array,
    timestep: Any,
    sample: Array,
    noise: Array | None,
    eta: float,
    use_clipped: bool,
    inverse: bool,
    out: tuple[Array, Array] | None,
) -> StepOutput:
    if not isinstance(plan, Plan):
        raise TypeError(f"plan must be a Plan from make_plan(), got {type(plan).__name__}")
    if not isinstance(use_clipped, bool):
        raise TypeError(f"use_clipped_model_output must be a bool, got {use_clipped!r}")
    xp = _step_arrays(model_output, sample, noise)
    key = ("inverse" if inverse else "forward", plan, eta)
    scalar_t = isinstance(timestep, numbers.Integral) and not isinstance(timestep, bool)
    if scalar_t and not plan.config.thresholding:
        fused = _fused(key, plan, int(timestep), sample, model_output, noise, use_clipped, out)
        if fused is not None:
            return fused
    if out is not None:
        raise TypeError(
            "out= needs a fused kernel (torch, NumPy with numba, CuPy; float32/float64, a Python "
            "int timestep, no thresholding, C-contiguous non-overlapping buffers)"
        )
    c = _coefficients(key, plan.schedule, timestep, sample, xp, plan)
    x_t, m, z = backends.to_work_dtype(xp, sample, model_output, noise)
    x_b, x0 = kernels.ddim_update(x_t, m, c, plan.config, z, use_clipped, xp=xp)
    return StepOutput(backends.cast(xp, x_b, sample.dtype), backends.cast(xp, x0, sample.dtype))


def _fused(
    key: tuple[Any, ...],
    plan: Plan,
    t: int,
    sample: Array,
    model_output: Array,
    noise: Array | None,
    use_clipped: bool,
    out: tuple[Array, Array] | None,
) -> StepOutput | None:
    """The step by a plugin's fused kernel, or None where none applies (then the reference)."""
    if backends.compiling():  # torch.compile fuses the reference itself
        return None
    kernel = plugins.step_kernel(sample)
    if kernel is None or model_output.dtype != sample.dtype:
        return None
    if noise is not None and noise.dtype != sample.dtype:
        return None
    row_key = (key, t, use_clipped)
    found = _FUSED_ROWS.get(row_key)
    if found is None:  # first use of this (plan, eta, t): validate and keep the row
        config = plan.config
        clip = config.clip_sample_range if config.clip_sample else None
        row = list(_host_row(key, t, (clip is not None, use_clipped)))
        if len(_FUSED_ROWS) > 65536:
            _FUSED_ROWS.clear()
        found = _FUSED_ROWS[row_key] = (row, clip)
    result = kernel(sample, model_output, noise, found[0], found[1], out)
    return None if result is None else StepOutput._make(result)


# (kind, plan, eta), t, use_clipped -> (linear-form row, clip range): the fused path's
# coefficients, validated once per plan and timestep
_FUSED_ROWS: dict[tuple[Any, ...], tuple[list[float], float | None]] = {}


@functools.lru_cache(maxsize=256)
def _linear_table(key: tuple[Any, ...], clipped: bool, use_clipped: bool) -> np.ndarray:
    plan: Plan = key[1]
    table = kernels.linear_form(
        _host_table(key)[0], plan.config.prediction_type, clipped, use_clipped
    )
    table.setflags(write=False)
    return table


def _step_arrays(model_output: Array, sample: Array, noise: Array | None) -> Namespace:
    """`_arrays` for a step, with a quick path for NumPy/torch arrays of one dtype and shape."""
    xp = backends.fast_namespace(sample, model_output, noise)
    if xp is not None:
        dtype, shape = sample.dtype, sample.shape
        if (
            backends.REAL_FLOATING.get(type(sample), {}).get(dtype)
            and model_output.dtype == dtype
            and model_output.shape == shape
            and (noise is None or (noise.dtype == dtype and noise.shape == shape))
        ):
            return xp
    return _arrays(model_output=model_output, sample=sample, noise=noise)


def _arrays(**arrays: Array | None) -> Namespace:
    """Resolve the namespace and check dtypes and shapes against the first array."""
    xp = backends.namespace(**arrays)
    (first_name, first), *rest = [(n, a) for n, a in arrays.items() if a is not None]
    for name, a in [(first_name, first), *rest]:
        if not backends.is_real_floating(xp, a):
            raise TypeError(f"{name} must be a real floating-point array, got dtype {a.dtype}")
    for name, a in rest:
        if a.shape != first.shape and tuple(a.shape) != tuple(first.shape):
            raise ValueError(
                f"{name} has shape {tuple(a.shape)} but {first_name} has shape "
                f"{tuple(first.shape)}; they must be equal"
            )
    return xp


def _check_eta(eta: Any) -> float:
    if type(eta) is float and 0.0 <= eta < math.inf:  # the common case, checked quickly
        return eta
    return check_nonnegative("eta", eta)


# --- coefficients ------------------------------------------------------------------------------


def _coefficients(
    key: tuple[Any, ...], sched: Schedule, timestep: Any, sample: Array, xp: Namespace, plan: Any
) -> list[Any]:
    """The columns of the host table `key` at `timestep`: floats, or arrays on sample's device."""
    if isinstance(timestep, numbers.Integral) and not isinstance(timestep, bool):
        return list(_host_row(key, int(timestep)))
    table, reasons = _host_table(key)
    T = sched.num_train_timesteps
    t_arr = _check_timestep_array(timestep, sample, xp)
    if backends.is_host_numpy(t_arr):  # free to read: check every value
        values = np.asarray(t_arr).reshape(-1)
        bad = values[(values < 0) | (values >= T)]
        if bad.size:
            _check_range("timestep", int(bad[0]), T)
        _check_row(reasons, values.tolist())
    elif plan is not None:  # device values cannot be read: check the plan's own timesteps
        _check_row(reasons, list(plan.timesteps))
    dtype = backends.work_dtype(xp, sample.dtype)
    rows = xp.take(
        _device_table(key, xp, backends.device(sample), dtype), xp.reshape(t_arr, (-1,)), axis=0
    )
    return [
        backends.broadcast_to_sample(rows[:, k], sample.ndim, xp) for k in range(table.shape[1])
    ]


def _host_row(
    key: tuple[Any, ...], t: int, linear: tuple[bool, bool] | None = None
) -> tuple[float, ...]:
    """Row t of the step table `key` (or of its linear form for (clipped, use_clipped)) as
    Python floats, after checking that t is in range and the step can be taken."""
    kind, of, *eta = key
    return _host_row_of(kind, of.uid, *eta, t=t, linear=linear)


@backends.host_constant  # plain arguments: torch.compile runs it eagerly, keeps the result
def _host_row_of(
    kind: str, uid: int, *eta: float, t: int, linear: tuple[bool, bool] | None
) -> tuple[float, ...]:
    key = (kind, backends.registered(uid), *eta)
    table, reasons = _host_table(key)
    _check_range("timestep", t, table.shape[0])
    _check_row(reasons, [t])
    rows = table if linear is None else _linear_table(key, *linear)
    return tuple(rows[t].tolist())


def _check_range(name: str, t: int, T: int) -> None:
    if not 0 <= t < T:
        raise ValueError(f"{name}={t} is outside [0, num_train_timesteps={T})")


def _check_row(reasons: dict[int, str], timesteps: list[int]) -> None:
    for t in timesteps:
        if t in reasons:
            raise ValueError(f"cannot step at timestep {t}: {reasons[t]}")


def _check_timestep_array(timestep: Any, sample: Array, xp: Namespace) -> Array:
    try:
        backends.namespace(sample=sample, timestep=timestep)
    except TypeError:
        raise TypeError(
            "timestep must be a Python int or an integer array of the sample's library, got "
            f"{type(timestep).__name__}"
        ) from None
    if not xp.isdtype(timestep.dtype, "integral"):
        raise TypeError(f"timestep array must have an integer dtype, got {timestep.dtype}")
    batch = sample.shape[0] if sample.ndim else 1
    if timestep.ndim > 1 or (timestep.ndim == 1 and timestep.shape[0] not in (1, batch)):
        raise ValueError(
            f"timestep array has shape {tuple(timestep.shape)}; expected () or ({batch},), one "
            "timestep per batch element"
        )
    return timestep


@functools.lru_cache(maxsize=256)
def _host_table(key: tuple[Any, ...]) -> tuple[np.ndarray, dict[int, str]]:
    """Coefficient table (one row per training timestep) and the rows that cannot be used."""
    kind = key[0]
    if kind == "noise":
        ab = key[1].alphas_cumprod
        table = np.stack([np.sqrt(ab), np.sqrt(1.0 - ab)], axis=1)
        table.setflags(write=False)
        return table, {}
    _, plan, eta = key
    sched: Schedule = plan.schedule
    t = np.arange(sched.num_train_timesteps)
    prev = sched.levels(plan.prev_table())
    here = sched.alphas_cumprod
    a, b = (prev, here) if kind == "inverse" else (here, prev)
    table, direction_sq = kernels.transfer_coefficients(a, b, eta)
    table.setflags(write=False)
    reasons = {}
    for i in t.tolist():
        reason = kernels.invalid_reason(
            float(a[i]), float(direction_sq[i]), plan.config.prediction_type, eta
        )
        if reason is not None:
            reasons[i] = reason
    return table, reasons


@backends.device_cache
def _device_table(key: tuple[Any, ...], xp: Namespace, device: Any, dtype: Any) -> Array:
    return backends.from_host(_host_table(key)[0], xp, device=device, dtype=dtype)
