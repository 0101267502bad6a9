"""Public step functions: check the inputs, look up coefficients, dispatch to a kernel.

    plan = make_plan(DDIMConfig(), 50)
    for t in plan.timesteps:
        x = step(plan, model(x, t), t, x).prev_sample

`timestep` is a Python int (coefficients are Python floats from the host table: no device work),
or an integer array of shape () or (batch,) (coefficients gathered on the sample's device).
Every coefficient comes from `coefficients`; the maths of a step is `kernels.ddim_update`, or a
plugin's fused kernel computing `coefficients.fused_form` of the same row.
"""

from __future__ import annotations

import functools
import math
import numbers
import operator
from typing import Any, NamedTuple

from . import backends, coefficients, kernels, plugins
from .backends import Array, Namespace
from .coefficients import StepKey
from .config import DDIMConfig, check_bool, check_nonnegative
from .plans import Plan
from .schedules import Schedule, as_schedule


class StepOutput(NamedTuple):
    """Result of one step; field names follow diffusers' `DDIMSchedulerOutput`.

    Attributes
    ----------
    prev_sample : array
        x_prev: the sample after the step (for inversion: the noisier sample).
    pred_original_sample : array
        x0_pred, the predicted clean sample of eq. (9) (after clipping or thresholding).

    Examples
    --------
    >>> import numpy as np, ddim_core as dc
    >>> plan = dc.make_plan(dc.DDIMConfig(), 10)
    >>> out = dc.step(plan, np.zeros(3), plan.timesteps[0], np.ones(3))
    >>> out.prev_sample.shape, out.pred_original_sample.shape
    ((3,), (3,))
    """

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
    """One forward DDIM step x_t -> x_prev, eq. (12), to the plan's t_prev.

    Parameters
    ----------
    plan : Plan
        From `make_plan`: the config and, for each timestep, the level the step moves to.
    model_output : array
        The model's output at (sample, timestep), in the config's prediction type
        (epsilon, sample or v), same shape, library and device as `sample`.
    timestep : int or integer array
        A Python int (coefficients are Python floats read from the host table: no device
        work, no sync), or an integer array of shape () or (batch,) in the sample's library,
        one timestep per batch element (coefficients gathered on the sample's device).
    sample : array
        x_t, any array-API array (NumPy, torch, JAX, CuPy, Dask, array-api-strict), real
        floating dtype. The outputs keep its library, device and dtype.
    eta : float, default 0.0
        Scales sigma_t of eq. (16): 0 is deterministic DDIM, 1 is DDPM-like.
    noise : array, optional
        Standard normal noise shaped like `sample`; required when eta > 0.
    use_clipped_model_output : bool, default False
        Re-derive eps_pred from the clipped x0_pred (diffusers' option of the same name).
    out : tuple of two arrays, optional
        Buffers to write (x_prev, x0_pred) into; only fused kernels take them (torch, NumPy
        with numba, CuPy; a Python int timestep, on torch also a timestep array; no
        thresholding, no overlap with the inputs, model_output and noise in the sample's dtype,
        no input or buffer that autograd records).
        Under torch.func's vmap, jvp and functionalize the buffers are written with copies of
        fresh results (memory there is unknown: only the same tensor counts as overlapping);
        under vmap they must be batched like the inputs. Inside a
        torch.autograd.forward_ad.dual_level too (the copies carry the tangents).

    Returns
    -------
    StepOutput
        ``(prev_sample, pred_original_sample)``.

    Raises
    ------
    TypeError
        Arrays of different libraries, a non-floating dtype, a timestep that is neither an int
        nor an integer array, or `out` where no fused kernel applies.
    ValueError
        eta > 0 without `noise`, shapes that differ, a timestep outside
        [0, num_train_timesteps), or a step that cannot be taken there (epsilon prediction at
        a zero-SNR level; eta so large that 1 - alpha_bar_prev - sigma_t^2 < 0).

    Notes
    -----
    ``torch.compile(step)`` (and `inverse_step`) compiles one graph per plan and kind of
    timestep (int, 0-d or (batch,) tensor), so past torch's recompile limit (8) of them use
    `ddim_core.functional`. There an int timestep is gathered on the device like a tensor one
    (one graph for every timestep of the plan); an eta other than 0 that changes between
    calls is not supported. Results equal the eager reference step (fused kernels are not
    traced: they agree within rounding).

    Examples
    --------
    >>> import numpy as np, ddim_core as dc
    >>> plan = dc.make_plan(dc.DDIMConfig(timestep_spacing="trailing"), 10)
    >>> x = np.random.default_rng(0).standard_normal((2, 3))
    >>> for t in plan.timesteps:
    ...     eps = 0.5 * x                      # a stand-in for model(x, t)
    ...     x = dc.step(plan, eps, t, x).prev_sample
    >>> x.shape, x.dtype
    ((2, 3), dtype('float64'))
    """
    if out is None and type(eta) is float and (eta == 0.0 or noise is not None):
        z = noise if eta else None
        done = _seen_step(
            plan, False, use_clipped_model_output, model_output, timestep, sample, eta, z
        )
        if done is not None:
            return done
    eta = check_eta(eta)
    if eta > 0.0 and noise is None:
        raise ValueError(f"eta={eta} > 0 needs a `noise` array (standard normal, like sample)")
    key = StepKey(_check_plan(plan), eta, False)
    use_clipped = check_bool("use_clipped_model_output", use_clipped_model_output)
    return _dispatch(key, model_output, timestep, sample, noise if eta else None, use_clipped, out)


def inverse_step(
    plan: Plan,
    model_output: Array,
    timestep: Any,
    sample: Array,
    *,
    out: tuple[Array, Array] | None = None,
) -> StepOutput:
    """One DDIM inversion step from the level of t_prev up to `timestep` (deterministic).

    As in diffusers' `DDIMInverseScheduler` and null-text inversion, `model_output` is the
    model evaluated at the destination `timestep` on the source `sample`. Without clipping,
    `inverse_step` undoes `step` given the same epsilon or sample prediction; not the same
    v-prediction, which each reads against the sample it is applied to, at its level (x_t
    forward, the source here, as diffusers does).

    Parameters
    ----------
    plan : Plan
        The plan whose mirrored pairs are walked (`plan.inverse_timesteps` in order).
    model_output : array
        The model's output at (sample, timestep), in the config's prediction type.
    timestep : int or integer array
        The destination timestep (see `step` for the two forms).
    sample : array
        The less noisy sample at the level of the plan timestep below `timestep`.
    out : tuple of two arrays, optional
        Buffers for (x_next, x0_pred), as in `step`.

    Returns
    -------
    StepOutput
        ``prev_sample`` is the noisier sample.

    Raises
    ------
    TypeError, ValueError
        As `step`.

    Examples
    --------
    >>> import numpy as np, ddim_core as dc
    >>> plan = dc.make_plan(dc.DDIMConfig(clip_sample=False), 10)
    >>> x0, eps = np.ones(4), np.full(4, 0.1)
    >>> t = plan.inverse_timesteps[0]
    >>> x1 = dc.inverse_step(plan, eps, t, x0).prev_sample
    >>> np.allclose(dc.step(plan, eps, t, x1).prev_sample, x0)  # the same output undoes it
    True
    """
    if out is None:
        done = _seen_step(plan, True, False, model_output, timestep, sample, 0.0, None)
        if done is not None:
            return done
    key = StepKey(_check_plan(plan), 0.0, True)
    return _dispatch(key, model_output, timestep, sample, None, False, out)


def add_noise(
    schedule_of: DDIMConfig | Schedule | Plan, original_samples: Array, noise: Array, timesteps: Any
) -> Array:
    """The forward process q(x_t | x_0): sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) noise.

    Parameters
    ----------
    schedule_of : DDIMConfig, Schedule or Plan
        Where the alpha_bar table comes from.
    original_samples : array
        x_0.
    noise : array
        Standard normal noise, same shape, library and device.
    timesteps : int or integer array
        One timestep, or one per batch element (shape () or (batch,)).

    Returns
    -------
    array
        x_t, in the dtype of `original_samples`.

    Raises
    ------
    TypeError, ValueError
        As `step`, and for a timestep outside [0, num_train_timesteps).

    Examples
    --------
    >>> import numpy as np, ddim_core as dc
    >>> config = dc.DDIMConfig()
    >>> x_t = dc.add_noise(config, np.ones(3), np.zeros(3), 999)
    >>> np.allclose(x_t, np.sqrt(dc.alphas_cumprod(config)[999]))
    True
    """
    _require(original_samples=original_samples, noise=noise)
    xp = _arrays(original_samples=original_samples, noise=noise)
    sqrt_ab, sqrt_1m_ab = _noise_coefficients(
        schedule_of, timesteps, original_samples, xp, "original_samples"
    )
    x0, eps = backends.to_work_dtype(xp, original_samples, noise)
    sqrt_ab, sqrt_1m_ab = backends.exact_scalars(xp, (sqrt_ab, sqrt_1m_ab), x0)
    return backends.cast(xp, sqrt_ab * x0 + sqrt_1m_ab * eps, original_samples.dtype)


def get_velocity(
    schedule_of: DDIMConfig | Schedule | Plan, sample: Array, noise: Array, timesteps: Any
) -> Array:
    """The v-prediction target v = sqrt(alpha_bar_t) noise - sqrt(1 - alpha_bar_t) x_0
    (Salimans & Ho 2022).

    Parameters
    ----------
    schedule_of : DDIMConfig, Schedule or Plan
        Where the alpha_bar table comes from.
    sample : array
        x_0.
    noise : array
        The noise, same shape, library and device.
    timesteps : int or integer array
        One timestep, or one per batch element.

    Returns
    -------
    array
        v, in the dtype of `sample`.

    Raises
    ------
    TypeError, ValueError
        As `add_noise`.

    Examples
    --------
    >>> import numpy as np, ddim_core as dc
    >>> v = dc.get_velocity(dc.DDIMConfig(), np.zeros(2), np.ones(2), 0)
    >>> np.allclose(v, np.sqrt(dc.alphas_cumprod(dc.DDIMConfig())[0]))
    True
    """
    _require(sample=sample, noise=noise)
    xp = _arrays(sample=sample, noise=noise)
    sqrt_ab, sqrt_1m_ab = _noise_coefficients(schedule_of, timesteps, sample, xp, "sample")
    x0, eps = backends.to_work_dtype(xp, sample, noise)
    sqrt_ab, sqrt_1m_ab = backends.exact_scalars(xp, (sqrt_ab, sqrt_1m_ab), x0)
    return backends.cast(xp, sqrt_ab * eps - sqrt_1m_ab * x0, sample.dtype)


def check_eta(eta: Any) -> float:
    """eta as a float: a finite number >= 0.

    Parameters
    ----------
    eta : real number
        The value to check.

    Returns
    -------
    float

    Raises
    ------
    TypeError
        Not a real number (bool included).
    ValueError
        Negative, NaN or infinite.

    Examples
    --------
    >>> check_eta(1)
    1.0
    """
    if type(eta) is float and 0.0 <= eta < math.inf:  # the common case, checked quickly
        return eta
    return check_nonnegative("eta", eta)


def _dispatch(
    key: StepKey,
    model_output: Array,
    timestep: Any,
    sample: Array,
    noise: Array | None,
    use_clipped: bool,
    out: tuple[Array, Array] | None,
) -> StepOutput:
    """A plugin's fused kernel where one applies, else the reference array-API step.

    A timestep the host can read for free (a Python int; a NumPy or CPU torch array holding
    one value) takes its row as Python floats; other timestep arrays (on an accelerator, or
    one per sample) take rows gathered on the sample's device, with no host read.
    """
    if sample is None or model_output is None:
        _require(sample=sample, model_output=model_output)
    xp = _step_arrays(model_output, sample, noise)
    if out is not None:
        _check_out(out, xp, sample, model_output, noise)
    config = key.plan.config
    t, t_arr = _timestep(key, timestep, sample, xp)
    fusable = not config.thresholding and not backends.compiling()  # compile fuses the reference
    kernel = (
        plugins.step_kernel(sample)
        if fusable and _same_dtype(sample, model_output, noise)
        else None
    )
    if kernel is not None:
        clip = _clip_range(config, xp, sample) if config.clip_sample else None
        arrays = (model_output, sample, noise)
        fused = _fused(kernel, key, (t, t_arr), arrays, use_clipped, clip, out, xp)
        if fused is not None:
            done = _kernel_output(kernel, fused)
            _check_kernel_arrays(kernel, done, sample)  # here, not in `_seen_step`: once a kind
            if t is not None and out is None:
                _remember(key, use_clipped, sample, t, clip)
            return done
    if out is not None:
        raise TypeError(
            "out= needs a fused kernel (torch; CuPy; NumPy with numba, its inputs and buffers "
            "C-contiguous and a Python-int timestep; float32/float64, no thresholding, buffers "
            "that do not overlap the inputs)"
        )
    return _reference(key, model_output, (t, t_arr), sample, noise, use_clipped, xp)


def _reference(
    key: StepKey,
    model_output: Array,
    timestep: tuple[int | None, Any],
    sample: Array,
    noise: Array | None,
    use_clipped: bool,
    xp: Namespace,
) -> StepOutput:
    """The reference array-API step (`kernels.ddim_update`) of checked arrays: with the row of
    an int timestep, or rows gathered on the device for a timestep array."""
    t, t_arr = timestep
    row = coefficients.row(key, t) if t is not None else coefficients.gather(key, t_arr, sample, xp)
    x_t, m, z = backends.to_work_dtype(xp, sample, model_output, noise)
    x_b, x0 = kernels.ddim_update(x_t, m, row, key.plan.config, z, use_clipped, xp=xp)
    return StepOutput(backends.cast(xp, x_b, sample.dtype), backends.cast(xp, x0, sample.dtype))


# The steps `_dispatch` has taken on a fused kernel with a Python-int timestep, no out=: per
# (plan, inverse, use_clipped, array type, dtype, eta) the FusedRow of each timestep seen (so
# checked) and the clip limit. A pipeline's steps are all of this kind (eta > 0: with the
# noise it drew): `_seen_step` takes them again with only the checks that depend on the arrays.
_SEEN: dict[tuple[Any, ...], tuple[dict[int, coefficients.FusedRow], float | None]] = {}
_SEEN_MAX = 256  # signatures kept (a few per plan in use), cleared when full


def _remember(key: StepKey, use_clipped: bool, sample: Array, t: int, clip: float | None) -> None:
    """Record a fused step of `_dispatch` that `_seen_step` may take from now on."""
    if type(key.plan) is not Plan or type(use_clipped) is not bool:
        return
    if type(sample) not in backends.SAME_DEVICE:  # not NumPy or torch: no cheap device check
        return
    signature = (key.plan, key.inverse, use_clipped, type(sample), sample.dtype, key.eta)
    found = _SEEN.get(signature)
    if found is None:
        if len(_SEEN) >= _SEEN_MAX:
            _SEEN.clear()
        found = _SEEN[signature] = ({}, clip)
    found[0][t] = coefficients.fused_row(key, t, use_clipped)


def _seen_step(
    plan: Any,
    inverse: bool,
    use_clipped: Any,
    model_output: Any,
    t: Any,
    sample: Any,
    eta: float,
    noise: Any,
) -> StepOutput | None:
    """A step of a kind `_dispatch` has already taken on a fused kernel (`_remember`): the same
    kernel on the same row, after the checks that depend on the arrays (one type, dtype, shape
    and device; not compiling), which `_dispatch` would repeat. None for anything else: then
    `_dispatch` checks everything and says what is wrong. The pipeline's step costs the kernel
    and about 2 us here, where `_dispatch` takes 5 (benchmarks/pipeline.py). `noise` is None
    at eta 0; at eta > 0 it must be given (else None here, and `_dispatch` says so)."""
    if backends.compiling():  # torch.compile fuses the reference (and traces no `type(t)`)
        return None
    kind = type(sample)
    if type(t) is not int or type(model_output) is not kind or type(plan) is not Plan:
        return None
    same_device = backends.SAME_DEVICE.get(kind)  # NumPy or torch (else never remembered)
    if same_device is None or type(use_clipped) is not bool:
        return None
    dtype = sample.dtype
    try:
        found = _SEEN.get((plan, inverse, use_clipped, kind, dtype, eta))
    except TypeError:  # an unhashable dtype
        return None
    if found is None or (noise is None) != (eta == 0.0):
        return None
    rows, clip = found
    c = rows.get(t)
    if (
        c is None
        or model_output.dtype != dtype
        or model_output.shape != sample.shape
        or not (noise is None or _like(noise, kind, dtype, sample.shape))
        or not same_device(sample, (model_output, noise))
    ):
        return None
    kernel = plugins.step_kernel(sample)  # the current one (plugins may have changed)
    if kernel is None:
        return None
    fused = kernel(sample, model_output, noise, c, clip, None)
    if fused is not None:
        return _kernel_output(kernel, fused)
    xp = backends.namespace(sample=sample)  # declined: the reference, as `_dispatch` runs it
    key = StepKey(plan, eta, inverse)
    return _reference(key, model_output, (t, None), sample, noise, use_clipped, xp)


def _like(a: Any, kind: Any, dtype: Any, shape: Any) -> bool:
    """Whether `a` is an array of type `kind`, `dtype` and `shape` (a seen step's noise)."""
    return type(a) is kind and a.dtype == dtype and a.shape == shape


def _kernel_output(kernel: Any, fused: Any) -> StepOutput:
    """A kernel's (x_prev, x0_pred), any tuple or list of two, as a StepOutput."""
    if not (isinstance(fused, (tuple, list)) and len(fused) == 2):  # not `tuple | list`: a
        # union object is built on every call, once per step here
        _wrong_kernel_result(kernel, fused)
    return tuple.__new__(StepOutput, fused)


def _check_kernel_arrays(kernel: Any, done: StepOutput, sample: Array) -> None:
    """A kernel's (x_prev, x0_pred) are arrays of the sample's library, shape and dtype (the
    hook's promise): else a TypeError naming the kernel, not a wrong, broadcast sample later."""
    kind = type(sample)
    for name, a in zip(("x_prev", "x0_pred"), done, strict=True):
        if not (isinstance(a, kind) or isinstance(sample, type(a))):
            _wrong_kernel_result(kernel, done, f"{name} a {type(a).__name__} for a {kind.__name__}")
        if tuple(a.shape) != tuple(sample.shape) or a.dtype != sample.dtype:
            got = f"{tuple(a.shape)} {a.dtype}"
            _wrong_kernel_result(
                kernel, done, f"{name} {got} for {tuple(sample.shape)} {sample.dtype}"
            )


def _wrong_kernel_result(kernel: Any, result: Any, why: str = "") -> None:
    """Raise the TypeError for a plugin kernel that returned neither a pair nor None."""
    name = f"{getattr(kernel, '__module__', '?')}.{getattr(kernel, '__qualname__', kernel)}"
    got = why or f"{type(result).__name__} {result!r:.80}"
    raise TypeError(
        f"the fused step kernel {name} (a ddim_core_step_kernel plugin's) returned {got}; a "
        "kernel returns (x_prev, x0_pred) of the sample's library, shape and dtype, or None"
    )


def _fused(
    kernel: Any,
    key: StepKey,
    timestep: tuple[int | None, Any],
    arrays: tuple[Array, Array, Array | None],
    use_clipped: bool,
    clip: float | None,
    out: tuple[Array, Array] | None,
    xp: Namespace,
) -> Any:
    """(x_prev, x0_pred), or None where the kernel declines: the kernel's step from a row of
    host floats, or for a timestep array from its device-table form (`kernel.gather`: the row
    read in the kernel's own pass) where it has one, else from rows gathered on the device."""
    t, t_arr = timestep
    model_output, sample, noise = arrays
    if t is not None:
        c = coefficients.fused_row(key, t, use_clipped)
        return kernel(sample, model_output, noise, c, clip, out)
    gather = getattr(kernel, "gather", None)
    if gather is not None:
        where = backends.device(sample)
        table = coefficients.fused_device_table(key, use_clipped, xp, where, xp.float64)
        return gather(sample, model_output, noise, table, t_arr, use_clipped, clip, out)
    c = coefficients.fused_gather(key, t_arr, use_clipped, sample, xp)
    return kernel(sample, model_output, noise, c, clip, out)


def _check_out(out: Any, xp: Namespace, sample: Array, *inputs: Array | None) -> None:
    """`out=(x_prev, x0_pred)`: two writable arrays of the sample's library, device, shape
    and dtype that share no memory with the inputs or each other (else a kernel would write
    outside a buffer, or read what it has overwritten); model_output and noise in the
    sample's dtype (a fused kernel takes one)."""
    if not isinstance(out, tuple | list) or len(out) != 2:
        raise TypeError(
            f"out must be a pair (x_prev, x0_pred) of arrays, got {type(out).__name__}"
            + (f" of length {len(out)}" if isinstance(out, tuple | list) else "")
        )
    for input_name, a in (("sample", sample), ("model_output", inputs[0]), ("noise", inputs[1])):
        if backends.records_gradient(a):  # torch's out= ops raise deep inside the kernel
            raise ValueError(
                f"out= cannot record gradients: {input_name} requires grad; call without out= "
                "(or under torch.no_grad())"
            )
        if a is not None and a.dtype != sample.dtype:  # the fused kernels take one dtype
            raise TypeError(
                f"out= needs {input_name} in the sample's dtype {sample.dtype}, got {a.dtype}"
            )
    for name, buf in zip(("out[0]", "out[1]"), out, strict=True):
        if buf is None:  # `namespace` skips None: it would fail later on `buf.shape`
            raise TypeError(f"{name} must be an array, got None")
        try:
            backends.namespace(sample=sample, **{name.replace("[", "_").rstrip("]"): buf})
        except (TypeError, ValueError) as e:
            raise TypeError(f"{name}: {e}") from None
        if tuple(buf.shape) != tuple(sample.shape) or buf.dtype != sample.dtype:
            raise ValueError(
                f"{name} has shape {tuple(buf.shape)} and dtype {buf.dtype}; it must match the "
                f"sample: shape {tuple(sample.shape)}, dtype {sample.dtype}"
            )
        if not backends.writable(buf):
            raise ValueError(f"{name} is read-only; out= buffers must be writable")
        if backends.inference_outside(buf):  # the eager kernel's writes would raise in torch
            raise ValueError(
                f"{name} is an inference tensor, which torch does not write outside "
                "torch.inference_mode(); pass another buffer or step inside the mode"
            )
        if backends.records_gradient(buf):  # numba's views would write it unseen by autograd
            raise ValueError(
                f"out= cannot record gradients: {name} requires grad; pass a buffer that does "
                "not (or call under torch.no_grad())"
            )
        for other_name, other in (
            ("sample", sample),
            ("model_output", inputs[0]),
            ("noise", inputs[1]),
        ):
            if other is not None and backends.overlaps(buf, other):
                raise ValueError(f"{name} shares memory with {other_name}; use a separate buffer")
    if backends.overlaps(out[0], out[1]):
        raise ValueError("out[0] and out[1] share memory; use two separate buffers")


def _timestep(key: StepKey, timestep: Any, sample: Array, xp: Namespace) -> tuple[int | None, Any]:
    """(t, None) for a timestep the host reads for free (checked), else (None, the array),
    checked where it can be read: device values cannot be read without a sync, so then the
    plan's own timesteps are checked instead."""
    if isinstance(timestep, int) and not isinstance(timestep, bool):
        if backends.compiling():
            return None, _traced_int(key, timestep, sample, xp)
        return int(timestep), None
    if (
        getattr(timestep, "ndim", None) == 0
        and backends.fast_namespace(sample, timestep) is xp
        and backends.is_kind(xp, timestep, "integral")
    ):  # the pipeline's 0-d timestep on the sample's device: read as an int where that is free
        value = backends.host_int(timestep)
        if value is not None:
            return value, None  # checked as an int is (coefficients.row)
    if isinstance(timestep, numbers.Integral) and not isinstance(timestep, bool):
        return int(timestep), None
    t_arr = _timestep_array(timestep, sample, xp)
    values = backends.host_integers(t_arr)
    if values is None:  # on a device or traced: checked there, asynchronously, where it can be
        size, invalid = _invalid_rows(key)
        t_arr = backends.check_range_on_device(t_arr, size, _range("timestep", size))
        return None, backends.check_excluded_on_device(t_arr, *_excluded(invalid))
    found = coefficients.table(key)
    coefficients.check_timesteps(found, values)
    if values and all(v == values[0] for v in values):
        return values[0], None
    return None, t_arr


def _range(name: str, size: int) -> str:
    """The message of a device check that every value of `name` is in [0, size)."""
    return f"{name} has a value outside [0, num_train_timesteps={size})"


def _traced_int(key: StepKey, t: int, sample: Array, xp: Namespace) -> Array:
    """An int timestep while torch.compile traces, checked as `coefficients.check_timesteps`
    checks it, as a 0-d array on the sample's device whose row `_reference` gathers there.

    An int that changed between calls of the compiled function is symbolic: the host table
    cannot be read at it, and making it a constant would compile one graph per timestep (past
    torch's recompile limit in a loop). The comparisons below only guard on their outcome, so
    one graph serves every valid timestep of the plan."""
    size, invalid = _invalid_rows(key)
    if not 0 <= t < size:  # (the message reads t: operator.index makes it a constant)
        raise ValueError(f"timestep={operator.index(t)} is outside [0, num_train_timesteps={size})")
    for row, reason in invalid:
        if t == row:
            raise ValueError(f"cannot step at timestep {row}: {reason}")
    return xp.full((), t, dtype=xp.int64, device=backends.device(sample))  # (asarray: a guard on t)


def _invalid_rows(key: StepKey) -> tuple[int, tuple[tuple[int, str], ...]]:
    """`coefficients.invalid_rows` of the key: its table's length and unusable rows."""
    if backends.compiling():
        return coefficients.invalid_rows(*coefficients.traced_key(key))
    return _host_invalid_rows(key)


@functools.lru_cache(maxsize=256)
def _host_invalid_rows(key: StepKey) -> tuple[int, tuple[tuple[int, str], ...]]:
    return coefficients.invalid_rows(key.plan.uid, key.eta, key.inverse)


@functools.lru_cache(maxsize=256)
def _excluded(invalid: tuple[tuple[int, str], ...]) -> tuple[tuple[int, ...], str]:
    """The timesteps of a plan where no step can be taken, and the device check's message that
    none is given: once per plan, not at every step."""
    if not invalid:
        return (), ""
    rows = tuple(row for row, _ in invalid)
    if len(rows) == 1:
        return rows, f"cannot step at timestep {rows[0]}: {invalid[0][1]}"
    listed = ", ".join(map(str, rows[:5])) + (", ..." if len(rows) > 5 else "")
    return rows, f"cannot step at timesteps {listed} (at {rows[0]}: {invalid[0][1]})"


def _noise_coefficients(
    schedule_of: DDIMConfig | Schedule | Plan,
    timesteps: Any,
    sample: Array,
    xp: Namespace,
    sample_name: str,
) -> tuple[Any, ...] | list[Array]:
    """The coefficients of add_noise / get_velocity at `timesteps`; errors name `timesteps`
    and `sample` as `sample_name`, the arguments the caller wrote."""
    sched = as_schedule(schedule_of)
    if isinstance(timesteps, numbers.Integral) and not isinstance(timesteps, bool):
        return coefficients.noise_row(sched, int(timesteps), "timesteps")
    t_arr = _timestep_array(timesteps, sample, xp, "timesteps", sample_name)
    values = backends.host_integers(t_arr)
    if values is None:
        size = coefficients.noise_size(sched)
        t_arr = backends.check_range_on_device(t_arr, size, _range("timesteps", size))
    else:
        coefficients.check_timesteps(
            coefficients.Table(coefficients.noise_table(sched), {}), values, "timesteps"
        )
        if values and all(v == values[0] for v in values):
            return coefficients.noise_row(sched, values[0], "timesteps")
    return coefficients.noise_gather(sched, t_arr, sample, xp)


def _timestep_array(
    timestep: Any, sample: Array, xp: Namespace, name: str = "timestep", sample_name: str = "sample"
) -> Array:
    """`timestep` checked as an integer array of `sample`'s library and device, of shape () or
    (batch,); errors name them `name` and `sample_name`, as the caller wrote them."""
    try:
        if timestep is None:
            raise TypeError
        backends.namespace(**{sample_name: sample, name: timestep})
    except TypeError:
        raise TypeError(
            f"{name} must be a Python int or an integer array of {sample_name}'s array library, "
            f"got {type(timestep).__name__}"
        ) from None
    if not backends.is_kind(xp, timestep, "integral"):
        raise TypeError(f"{name} array must have an integer dtype, got {timestep.dtype}")
    batch = sample.shape[0] if sample.ndim else 1
    backends.check_known_shape(name, timestep)  # (Dask's NaN: no batch to compare)
    if timestep.ndim > 1 or (timestep.ndim == 1 and timestep.shape[0] not in (1, batch)):
        # an empty one: a pipeline's plan cut to nothing (img2img's strength x steps < 1)
        empty = tuple(timestep.shape) == (0,)
        hint = "; an img2img strength too low for its steps leaves none" if empty else ""
        raise ValueError(
            f"{name} array has shape {tuple(timestep.shape)}; expected () or ({batch},), one "
            f"timestep per batch element{hint}"
        )
    return timestep


def _check_plan(plan: Any) -> Plan:
    if not isinstance(plan, Plan):
        raise TypeError(f"plan must be a Plan from make_plan(), got {type(plan).__name__}")
    return plan


def _same_dtype(sample: Array, model_output: Array, noise: Array | None) -> bool:
    dtype = sample.dtype
    return model_output.dtype == dtype and (noise is None or noise.dtype == dtype)


def _step_arrays(model_output: Array, sample: Array, noise: Array | None) -> Namespace:
    """`_arrays` for a step, with a quick path for NumPy/torch arrays of one dtype and shape."""
    xp = backends.fast_namespace(sample, model_output, noise)
    if xp is not None:
        dtype, shape = sample.dtype, sample.shape
        if (
            model_output.dtype == dtype
            and backends.is_real_floating(xp, sample)
            and model_output.shape == shape
            and (noise is None or (noise.dtype == dtype and noise.shape == shape))
        ):
            return xp
    return _arrays(model_output=model_output, sample=sample, noise=noise)


def checked_arrays(sample: Array, model_output: Array, noise: Array | None = None) -> Namespace:
    """The namespace of a step's arrays, checked: sample and model_output given, one library
    and device, real floating dtypes, equal shapes (TypeError / ValueError naming them).

    Parameters
    ----------
    sample, model_output : array
    noise : array, optional

    Returns
    -------
    namespace

    Raises
    ------
    TypeError
        None, another library, or a dtype that is not real floating.
    ValueError
        Another device or shape.

    Examples
    --------
    >>> import numpy as np
    >>> checked_arrays(np.zeros((1, 3)), np.zeros((2, 3)))
    Traceback (most recent call last):
    ValueError: model_output has shape (2, 3) but sample has shape (1, 3); they must be equal
    """
    _require(sample=sample, model_output=model_output)
    return _arrays(sample=sample, model_output=model_output, noise=noise)


def _clip_range(config: DDIMConfig, xp: Namespace, sample: Array) -> float:
    """clip_sample_range, at most the largest value of the dtype x0_pred is clipped in (1e300
    stays a no-op): the sample's, float32 for half precision (`backends.work_dtype`), as
    `kernels.clip` takes it in the reference, not float16's 65504."""
    key = (config.clip_sample_range, sample.dtype)
    try:
        found = _CLIP_RANGES.get(key)
    except TypeError:  # an unhashable dtype
        return _dtype_limit(config.clip_sample_range, xp, sample.dtype)
    if found is None:
        found = _dtype_limit(config.clip_sample_range, xp, sample.dtype)
        if len(_CLIP_RANGES) > 1024:
            _CLIP_RANGES.clear()
        _CLIP_RANGES[key] = found
    return found


_CLIP_RANGES: dict[tuple[float, Any], float] = {}  # (range, dtype): range within the dtype


def _dtype_limit(limit: float, xp: Namespace, dtype: Any) -> float:
    """`limit`, at most the largest value of `dtype`'s work dtype."""
    return min(limit, float(xp.finfo(backends.work_dtype(xp, dtype)).max))


def _require(**arrays: Array | None) -> None:
    for name, a in arrays.items():
        if a is None:
            raise TypeError(f"{name} must be an array, got None")


def _arrays(**arrays: Array | None) -> Namespace:
    """Resolve the namespace and check dtypes and shapes against the first array."""
    xp = backends.namespace(**arrays)
    (first_name, first), *rest = [(n, a) for n, a in arrays.items() if a is not None]
    for name, a in [(first_name, first), *rest]:
        if not backends.is_real_floating(xp, a):
            raise TypeError(f"{name} must be a real floating-point array, got dtype {a.dtype}")
        backends.check_known_shape(name, a)
    for name, a in rest:
        if a.shape != first.shape and tuple(a.shape) != tuple(first.shape):
            raise ValueError(
                f"{name} has shape {tuple(a.shape)} but {first_name} has shape "
                f"{tuple(first.shape)}; they must be equal"
            )
    return xp
