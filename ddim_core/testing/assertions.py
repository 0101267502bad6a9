"""Assertions against exact DDIM whose tolerances scale with the dtype and with the magnitude of
what a step adds up, and whose failures say which config, timestep and element, and by how
much.

    assert_step_close(my_scheduler.step(m, t, x), plan, m, t, x)   # arrays of any backend

The bound is elementwise: |got - exact| <= TOLERANCE[dtype] * scale * (|exact| + magnitude),
and never below TOLERANCE[dtype] * scale * TINY[dtype]: under the dtype's smallest normal
number its spacing stops shrinking (subnormals), so a bound relative to a smaller value would
reject the exact result correctly rounded. `assert_array_close` takes magnitude 1 by default,
i.e. max |got - exact| / (1 + |exact|); the step assertions take the magnitude of the step's
terms (`reference.magnitude`), so a result that cancels to nearly 0 is held to what its inputs
allow, and nothing looser.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from ddim_core.config import DDIMConfig

from . import reference
from .backends import dtype_name, to_numpy

# Largest error per unit of magnitude, per dtype: float64 ~ 4500 ulp, float32 ~ 84 ulp,
# float16 ~ 2 ulp, bfloat16 ~ 2.5 ulp (half precision is computed in float32, then rounded).
TOLERANCE: dict[str, float] = {
    "float64": 1e-12,
    "float32": 1e-5,
    "float16": 2e-3,
    "bfloat16": 2e-2,
}


# Each dtype's smallest normal number (finfo.tiny): below it the spacing is TINY * eps, so
# TOLERANCE * TINY allows as many ulps there as TOLERANCE does relative to larger values.
TINY: dict[str, float] = {
    "float64": 2.0**-1022,
    "float32": 2.0**-126,
    "float16": 2.0**-14,
    "bfloat16": 2.0**-126,
}


def tolerance(dtype: Any) -> float:
    """TOLERANCE of a dtype given by name or as any library's dtype object.

    Parameters
    ----------
    dtype : str or dtype
        A floating dtype: its name ("float32") or any library's dtype object.

    Returns
    -------
    float
        The largest error allowed per unit of magnitude.

    Raises
    ------
    ValueError
        If the dtype is not one of TOLERANCE's floating dtypes.

    Examples
    --------
    >>> import numpy as np
    >>> tolerance(np.float32), tolerance("float64")
    (1e-05, 1e-12)
    """
    name = dtype_name(dtype)
    if name not in TOLERANCE:
        raise ValueError(f"no tolerance for dtype {name!r}; floating dtypes: {list(TOLERANCE)}")
    return TOLERANCE[name]


def rel(ours: Any, theirs: Any) -> float:
    """The largest relative difference max |ours - theirs| / (1 + |theirs|), elementwise, of two
    arrays of any backend of the same shape (float64). NaN when either holds a NaN, so that
    `rel(...) <= limit` fails.

    Parameters
    ----------
    ours, theirs : array
        Arrays of any backend, of the same shape.

    Returns
    -------
    float
        The largest relative difference (0.0 for empty arrays).

    Examples
    --------
    >>> import numpy as np
    >>> rel(np.array([1.0, 3.0]), np.array([1.0, 2.0]))
    0.3333333333333333
    """
    a, b = to_numpy(ours), to_numpy(theirs)
    assert a.shape == b.shape, f"shapes differ: {a.shape} and {b.shape}"
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / (1.0 + np.abs(b))))


def describe(config: DDIMConfig) -> str:
    """A config as its non-default options: DDIMConfig(timestep_spacing='trailing', ...).

    Parameters
    ----------
    config : DDIMConfig
        The config.

    Returns
    -------
    str
        Its non-default options, as a constructor call.

    Examples
    --------
    >>> describe(DDIMConfig(timestep_spacing="trailing"))
    "DDIMConfig(timestep_spacing='trailing')"
    """
    parts = []
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if value == field.default:
            continue
        if field.name == "trained_betas":
            parts.append(f"trained_betas=<{len(value)} values>")
        else:
            parts.append(f"{field.name}={value!r}")
    return f"DDIMConfig({', '.join(parts)})"


def n_steps(n: int) -> str:
    """ "1 step", "10 steps".

    Parameters
    ----------
    n : int
        A number of steps.

    Returns
    -------
    str
        The number and the noun.

    Examples
    --------
    >>> n_steps(1), n_steps(10)
    ('1 step', '10 steps')
    """
    return f"{n} step" if n == 1 else f"{n} steps"


def _is_meta(x: Any) -> bool:
    return bool(getattr(x, "is_meta", False))


def assert_array_close(
    actual: Any,
    expected: Any,
    dtype: Any = None,
    *,
    scale: float = 1.0,
    magnitude: Any = 1.0,
    what: str = "value",
    context: str = "",
) -> None:
    """|actual - expected| <= tolerance(dtype) * scale * max(|expected| + magnitude, TINY[dtype])
    elementwise, actual finite wherever expected is, and the same NaN, +Inf or -Inf wherever
    expected is not. dtype: actual's unless given. On torch's meta device (no values) the shape
    only. A failure names the worst element and the margin.

    Parameters
    ----------
    actual : array
        The values to check, of any backend.
    expected : array_like
        The exact values (float64), of actual's shape.
    dtype : str or dtype, optional
        The dtype whose tolerance applies; actual's by default.
    scale : float
        A factor on the tolerance.
    magnitude : float or array_like
        The size of the terms that add up to `expected`, elementwise or one for all.
    what : str
        The name of the values in a failure's message.
    context : str
        What a failure's message adds in parentheses (config, step, ...).

    Raises
    ------
    AssertionError
        If a shape differs, or an element is off by more than its bound or has not the
        expected's NaN/Inf.

    Examples
    --------
    >>> import numpy as np
    >>> assert_array_close(np.float32([1.0, 2.0]), [1.0, 2.0 + 1e-6])  # within 1e-5 * (2 + 1)
    >>> exact = 1.6902615e-06  # under float16's smallest normal: its spacing is 2**-24
    >>> assert_array_close(np.float16([exact]), [exact], magnitude=3.6e-6)  # rounded: passes
    """
    shape = tuple(getattr(actual, "shape", np.shape(actual)))
    where = f" ({context})" if context else ""
    assert shape == np.shape(expected), f"{what}: shape {shape}, expected {np.shape(expected)}"
    if _is_meta(actual):
        return
    got, want = to_numpy(actual), np.asarray(to_numpy(expected), dtype=np.float64)
    name = dtype_name(dtype if dtype is not None else getattr(actual, "dtype", "float64"))
    tol = tolerance(name) * scale
    size = np.abs(want) + np.broadcast_to(np.asarray(magnitude, np.float64), want.shape)
    bound = tol * np.maximum(size, TINY[name])  # subnormal results: the dtype's fixed spacing
    finite = np.isfinite(want)
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    bad = np.where(finite, ~np.isfinite(got), ~same)
    if bad.any():
        i = tuple(int(k) for k in np.unravel_index(int(np.argmax(bad)), bad.shape))
        raise AssertionError(
            f"{what}{list(i)} = {got[i]} where exact DDIM gives {want[i]:.8g}; "
            f"{int(bad.sum())} of {bad.size} elements not finite where exact DDIM is, or "
            f"not its NaN/Inf{where}"
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        err = np.where(finite, np.abs(got - want), 0.0)
        ratio = np.where(bound > 0, err / bound, np.where(err > 0, np.inf, 0.0))
    if ratio.size and float(ratio.max()) > 1.0:
        i = tuple(int(k) for k in np.unravel_index(int(np.argmax(ratio)), ratio.shape))
        relative = err[i] / abs(want[i]) if want[i] else np.inf
        # eight digits, or as many as tell the two apart (a float64 off by a relative 1e-9)
        digits = int(min(17, max(8, 2 - np.floor(np.log10(relative))))) if relative else 8
        raise AssertionError(
            f"{what}{list(i)} = {got[i]:.{digits}g} but exact DDIM gives "
            f"{want[i]:.{digits}g}: off by {err[i]:.2g} (relative {relative:.2g}), "
            f"{ratio[i]:.3g} x the tolerance {bound[i]:.2g}{where}"
        )


def assert_step_close(
    got: Any,
    plan: Any,
    model_output: Any,
    timestep: Any,
    sample: Any,
    *,
    eta: float = 0.0,
    noise: Any = None,
    use_clipped_model_output: bool = False,
    inverse: bool = False,
    dtype: Any = None,
    scale: float = 1.0,
) -> None:
    """A step's result (prev_sample, or a (prev_sample, pred_original_sample) pair or output
    object) equals exact DDIM's step of the same inputs, arrays of any backend, within
    tolerance(dtype) * scale * (|exact| + magnitude of the step's terms), never below
    tolerance(dtype) * scale * TINY[dtype] (`assert_array_close`).

    `plan`: a `reference.Plan` or `ddim_core.Plan` (its t_prev and table are used), or a
    `(config, num_inference_steps)` pair. `timestep`: an int, or one per sample (another
    count, or one outside [0, num_train_timesteps), is a ValueError).

    Parameters
    ----------
    got : array, tuple or output object
        The step's result: prev_sample, (prev_sample, pred_original_sample), or an object
        with those attributes.
    plan : reference.Plan, ddim_core.Plan or tuple
        The plan stepped on, or `(config, num_inference_steps)`.
    model_output, timestep, sample : array or int
        The step's inputs.
    eta : float
        The step's eta.
    noise : array, optional
        The noise the step added when eta > 0.
    use_clipped_model_output : bool
        As the step's option of that name.
    inverse : bool
        Whether the step is an inverse step (`assert_inverse_step_close`).
    dtype : str or dtype, optional
        The dtype whose tolerance applies; prev_sample's by default, which must then be the
        sample's where both are arrays of one library (give `dtype` to compare a result with
        inputs given in another dtype, e.g. NumPy float64 values).
    scale : float
        A factor on the tolerance.

    Raises
    ------
    TypeError
        If `plan` is none of a plan and a (config, num_inference_steps) pair (a config
        alone).
    ValueError
        If a timestep is outside [0, num_train_timesteps), or there are neither one nor one
        per sample.
    AssertionError
        If prev_sample or pred_original_sample differs from exact DDIM's beyond the bound,
        or (no `dtype` given) is of another dtype than the sample of its library.

    Examples
    --------
    >>> import numpy as np
    >>> import ddim_core as dc
    >>> plan = dc.make_plan(dc.DDIMConfig(), 10)
    >>> x, m = np.ones((1, 4), np.float32), np.full((1, 4), 0.5, np.float32)
    >>> t = int(plan.timesteps[0])
    >>> assert_step_close(dc.step(plan, m, t, x), plan, m, t, x)
    """
    if isinstance(plan, tuple):
        plan = reference.make_plan(*plan)
    if not (hasattr(plan, "config") and hasattr(plan, "prev_timestep")):
        raise TypeError(
            "plan must be a reference.Plan, a ddim_core.Plan or a (config, "
            f"num_inference_steps) pair, got {type(plan).__name__}"
            + ("; pass (config, num_inference_steps)" if isinstance(plan, DDIMConfig) else "")
        )
    prev, x0 = _outputs(got)
    if dtype is None:
        _keeps_dtype(sample, (("prev_sample", prev), ("pred_original_sample", x0)))
    dtype = dtype if dtype is not None else getattr(prev, "dtype", "float64")
    x, m = to_numpy(sample), to_numpy(model_output)
    z = None if noise is None or eta == 0 or inverse else to_numpy(noise)
    ts = [int(t) for t in np.asarray(to_numpy(timestep, np.int64)).reshape(-1)]
    steps = plan.config.num_train_timesteps
    outside = [t for t in ts if not 0 <= t < steps]
    if outside:  # else NumPy's IndexError, or a negative index read from the table's end
        raise ValueError(f"timestep: {outside} outside [0, {steps}) (num_train_timesteps)")
    if len(ts) == 1:
        rows: list[Any] = [(..., ts[0])]  # `...`, not `:`, indexes a 0-d sample too
    elif len(ts) != len(x):  # rows past the batch would compare empty arrays, or none
        raise ValueError(
            f"timestep: {len(ts)} timesteps for a batch of {len(x)}; give one, or one per sample"
        )
    else:
        rows = [(slice(i, i + 1), t) for i, t in enumerate(ts)]
        prev, x0 = (a if a is None or _is_meta(a) else to_numpy(a, None) for a in (prev, x0))
    for i, t in rows:
        src, dst = (plan.prev_timestep(t), t) if inverse else (t, plan.prev_timestep(t))
        a, b = reference.level(plan, src), reference.level(plan, dst)
        kw: dict[str, Any] = {"eta": 0.0 if inverse else eta, "noise": None}
        kw["use_clipped"] = use_clipped_model_output
        kw["noise"] = None if z is None else z[i]
        want, want_x0 = reference.transfer(plan.config, m[i], a, b, x[i], **kw)
        size, size_x0 = reference.magnitude(plan.config, m[i], a, b, x[i], **kw)
        context = (
            f"{describe(plan.config)}, {n_steps(plan.num_inference_steps)}, "
            f"{'inverse step' if inverse else 'step'} {src} -> {dst}, eta={eta}, "
            + ("use_clipped_model_output=True, " if use_clipped_model_output else "")
            + f"{dtype_name(dtype)}, shape {tuple(x.shape)}"
            + (f", sample {i.start}" if len(ts) > 1 else "")
        )
        for name, value, exact, size_ in (
            ("prev_sample", prev, want, size),
            ("pred_original_sample", x0, want_x0, size_x0),
        ):
            if value is None:
                continue
            part = value if len(ts) == 1 else value[i]  # a meta row: its shape
            assert_array_close(
                part, exact, dtype, scale=scale, magnitude=size_, what=name, context=context
            )


def assert_inverse_step_close(
    got: Any, plan: Any, model_output: Any, timestep: Any, sample: Any, **kwargs: Any
) -> None:
    """`assert_step_close` of an inverse step: from the level of the plan's t_prev of
    `timestep` up to `timestep`, the model evaluated at `timestep` on the source sample.

    Parameters
    ----------
    got, plan, model_output, timestep, sample
        As `assert_step_close`'s.
    **kwargs
        `assert_step_close`'s keyword arguments (eta does not apply: inversion is eta = 0).

    Examples
    --------
    >>> import numpy as np
    >>> import ddim_core as dc
    >>> plan = dc.make_plan(dc.DDIMConfig(), 10)
    >>> x, m = np.ones((1, 4), np.float32), np.full((1, 4), 0.5, np.float32)
    >>> t = int(plan.timesteps[-1])
    >>> assert_inverse_step_close(dc.inverse_step(plan, m, t, x), plan, m, t, x)
    """
    assert_step_close(got, plan, model_output, timestep, sample, inverse=True, **kwargs)


def assert_timesteps_equal(
    got: Sequence[int] | Any, config: DDIMConfig, n: int, *, inverse: bool = False
) -> None:
    """The timesteps a scheduler visits for n steps of `config` are exact DDIM's plan (the
    forward plan mirrored for inversion); a failure names the first differing index.

    Parameters
    ----------
    got : sequence of int or array
        The timesteps the scheduler visits.
    config : DDIMConfig
        The scheduler's config.
    n : int
        The number of inference steps.
    inverse : bool
        Whether `got` is an inverse scheduler's (ascending) timesteps.

    Raises
    ------
    AssertionError
        If the timesteps differ from the plan's, naming the first index that does.

    Examples
    --------
    >>> import ddim_core as dc
    >>> config = dc.DDIMConfig(timestep_spacing="trailing")
    >>> assert_timesteps_equal([999, 899, 799, 699, 599, 499, 399, 299, 199, 99], config, 10)
    """
    want = list(reference.spaced_timesteps(config, n))
    want = want[::-1] if inverse else want
    try:
        have = timestep_ints(got)
    except ValueError as e:
        raise AssertionError(
            f"{describe(config)}, {n_steps(n)}{' (inverse)' if inverse else ''}: {e}"
        ) from None
    if have == want:
        return
    i = next((k for k, (a, b) in enumerate(zip(have, want, strict=False)) if a != b), None)
    i = min(len(have), len(want)) if i is None else i
    shown = "nothing" if i >= len(have) else str(have[i])
    expect = "nothing" if i >= len(want) else str(want[i])
    raise AssertionError(
        f"{describe(config)}, {n_steps(n)}{' (inverse)' if inverse else ''}: timesteps[{i}] is "
        f"{shown}, the plan has {expect} ({len(have)} timesteps, the plan {len(want)})"
    )


def timestep_ints(got: Sequence[int] | Any) -> list[int]:
    """Timesteps of any backend as Python ints, refusing fractional ones (a cast would read
    900.5 as 900).

    Parameters
    ----------
    got : sequence of int or array
        The timesteps, of any backend, integers or floats holding integers.

    Returns
    -------
    list of int
        The timesteps, flattened.

    Raises
    ------
    ValueError
        If a timestep is not an integer (fractional, NaN or infinite), naming the first.

    Examples
    --------
    >>> timestep_ints(np.array([900.0, 800.0]))
    [900, 800]
    >>> timestep_ints([900, 800.5])
    Traceback (most recent call last):
    ...
    ValueError: timesteps[1] = 800.5 is not an integer
    """
    values = np.asarray(to_numpy(got, None)).reshape(-1)
    if values.dtype.kind not in "iub":
        exact = values.astype(np.float64)
        whole = np.isfinite(exact) & (exact == np.round(exact))
        if not whole.all():
            i = int(np.argmin(whole))
            raise ValueError(f"timesteps[{i}] = {exact[i]:g} is not an integer")
    return [int(t) for t in values.astype(np.int64)]


def _keeps_dtype(sample: Any, results: Sequence[tuple[str, Any]]) -> None:
    """A result of the sample's library in another dtype fails: the default tolerance, the
    result's own dtype's, would hold a float32 step returning float16 to float16's."""
    want = getattr(sample, "dtype", None)
    for name, value in results:
        if want is None or value is None or not hasattr(value, "dtype"):
            continue
        if type(value).__module__.partition(".")[0] != type(sample).__module__.partition(".")[0]:
            continue  # e.g. NumPy float64 inputs of a torch step: no dtype to compare
        if dtype_name(value.dtype) != dtype_name(want):
            raise AssertionError(
                f"{name} is {dtype_name(value.dtype)}, the sample {dtype_name(want)}: a step "
                "returns its input's dtype (dtype= compares a result with inputs of another)"
            )


def _outputs(got: Any) -> tuple[Any, Any]:
    if hasattr(got, "prev_sample"):
        return got.prev_sample, getattr(got, "pred_original_sample", None)
    if isinstance(got, tuple | list):
        return got[0], (got[1] if len(got) > 1 else None)
    return got, None
