"""The array API namespace of MindSpore tensors (imported only when a MindSpore tensor meets
ddim_core: the `mindspore` plugin of `builtins` resolves it through `ddim_core_array_namespace`).

MindSpore has no `__array_namespace__` and array-api-compat does not know it, so this module
is the namespace: every function ddim_core, its loops, the analytic model and the adapters call
(and the creation, elementwise and reduction functions around them), written on `mindspore.ops`
kernels that exist on the CPU. What it takes care of:
- Python scalars: MindSpore rounds a Python float to float32 when it meets a float64 tensor;
  here scalars become 0-d tensors of the array's dtype first, so float64 stays exact (the
  core does the same for its coefficients: `rounds_python_floats` below); a float met by an
  integer tensor becomes a float32 one, as MindSpore promotes it (not truncated);
- bfloat16: the CPU has kernels only to cast, reshape, slice, concatenate and for + - * /;
  every other function computes in float32 and casts back (on every device, so results do
  not depend on where they ran);
- creation from NumPy, lists and scalars goes through NumPy (`mindspore.numpy.asarray`
  rejects NumPy arrays) and then onto the device: "CPU", "Ascend" or "GPU" (an optional ":N"
  is ignored: MindSpore places work on its configured device id);
- `take` uses `ops.gather`, which raises for out-of-range indices (`mindspore.numpy.take`
  clamps them silently);
- NaN: `clip`, `maximum` and `minimum` propagate it (MindSpore's kernels can return the
  bound), so do `sign` (`ops.sign(NaN)` is 0) and the reductions `max` and `min`
  (`ops.amax` and `ops.amin` skip a NaN that does not come first), and `sort` puts it
  last, as NumPy does (`ops.topk` leaves it anywhere).
- reductions: axis=() reduces nothing, and a reduction over zero elements is its identity
  (max and min: a ValueError), where MindSpore's take () for all axes and its CPU kernels
  return uninitialized memory for zero elements.
MindSpore runs operations asynchronously: the error of a failed kernel surfaces at the next
read of a result. Functions here check what they can on the host (dtypes, shapes, axes)
before launching anything, so their errors are raised where they are called.
"""

from __future__ import annotations

import builtins
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import mindspore
import numpy as np
from mindspore import ops

Tensor = Any  # mindspore.Tensor, for annotations (MindSpore ships no type information)
_TENSOR = mindspore.Tensor

# The core hands this namespace its coefficients as 0-d tensors on float64 samples, since
# MindSpore rounds Python floats to float32 in arithmetic with float64 tensors.
rounds_python_floats = True

bool = mindspore.bool_
int8, int16, int32, int64 = mindspore.int8, mindspore.int16, mindspore.int32, mindspore.int64
uint8, uint16, uint32, uint64 = (
    mindspore.uint8,
    mindspore.uint16,
    mindspore.uint32,
    mindspore.uint64,
)
float16, bfloat16 = mindspore.float16, mindspore.bfloat16
float32, float64 = mindspore.float32, mindspore.float64

e, pi, inf, nan = math.e, math.pi, math.inf, math.nan
newaxis = None

_REAL_FLOATING = (float16, bfloat16, float32, float64)
_SIGNED = (int8, int16, int32, int64)
_UNSIGNED = (uint8, uint16, uint32, uint64)
_KINDS: dict[str, tuple[Any, ...]] = {
    "bool": (bool,),
    "signed integer": _SIGNED,
    "unsigned integer": _UNSIGNED,
    "integral": _SIGNED + _UNSIGNED,
    "real floating": _REAL_FLOATING,
    "complex floating": (mindspore.complex64, mindspore.complex128),
}
_KINDS["numeric"] = _KINDS["integral"] + _REAL_FLOATING + _KINDS["complex floating"]
_NUMPY = {
    bool: np.bool_,
    int8: np.int8,
    int16: np.int16,
    int32: np.int32,
    int64: np.int64,
    uint8: np.uint8,
    uint16: np.uint16,
    uint32: np.uint32,
    uint64: np.uint64,
    float16: np.float16,
    float32: np.float32,
    float64: np.float64,
}


# --- data types ------------------------------------------------------------------------------


def isdtype(dtype: Any, kind: Any) -> builtins.bool:
    """Whether `dtype` is of `kind`: a dtype, a kind name, or a tuple of them."""
    if isinstance(kind, tuple):
        return builtins.any(isdtype(dtype, k) for k in kind)
    if isinstance(kind, str):
        if kind not in _KINDS:
            raise ValueError(f"unknown dtype kind {kind!r}; expected one of {sorted(_KINDS)}")
        return dtype in _KINDS[kind]
    return builtins.bool(dtype == kind)


class finfo_object(NamedTuple):
    bits: int
    eps: float
    max: float
    min: float
    smallest_normal: float
    dtype: Any


class iinfo_object(NamedTuple):
    bits: int
    max: int
    min: int
    dtype: Any


def finfo(type: Any) -> finfo_object:
    """Machine limits of a floating dtype (or of an array's dtype)."""
    dtype = getattr(type, "dtype", type)
    if dtype == bfloat16:
        return finfo_object(16, 2.0**-7, 3.3895313892515355e38, -3.3895313892515355e38,
                            2.0**-126, dtype)  # fmt: skip
    if dtype not in (float16, float32, float64):
        raise TypeError(f"finfo needs a floating dtype, got {dtype}")
    info = np.finfo(_NUMPY[dtype])
    return finfo_object(
        info.bits, float(info.eps), float(info.max), float(info.min),
        float(info.smallest_normal), dtype,
    )  # fmt: skip


def iinfo(type: Any) -> iinfo_object:
    dtype = getattr(type, "dtype", type)
    if not isdtype(dtype, "integral"):
        raise TypeError(f"iinfo needs an integer dtype, got {dtype}")
    info = np.iinfo(_NUMPY[dtype])
    return iinfo_object(info.bits, int(info.max), int(info.min), dtype)


# --- devices and creation --------------------------------------------------------------------


def _target(device: Any) -> str | None:
    """The MindSpore device name of a device string ("CPU", "Ascend:0" -> "Ascend")."""
    if device is None:
        return None
    name = str(device).partition(":")[0]
    if name not in ("CPU", "Ascend", "GPU"):
        raise ValueError(f"unknown MindSpore device {device!r}; expected 'CPU', 'Ascend' or 'GPU'")
    return name


def device_of(x: Tensor) -> str:
    return str(x.device)


def to_device(x: Tensor, device: Any, /, *, stream: Any = None) -> Tensor:
    target = _target(device)
    if target is None or target == _target(x.device):
        return x
    return x.move_to(target)


def asarray(
    obj: Any, /, *, dtype: Any = None, device: Any = None, copy: builtins.bool | None = None
) -> Tensor:
    """A tensor from a tensor, a NumPy array, a Python scalar or a (nested) sequence.

    Without `dtype`, Python floats become float32 (MindSpore's default floating dtype), ints
    int64 and bools bool; NumPy arrays keep their dtype. Values go through NumPy, then MindSpore's
    cast: a float64 array converted to float16 is rounded through float32, as MindSpore rounds
    it (twice: 1 ulp off `ndarray.astype` for a few values in 10^5; the same float16 numbers as
    mindone's `randn_tensor` gives).
    """
    if isinstance(obj, _TENSOR):
        x = obj if dtype is None or obj.dtype == dtype else obj.astype(dtype)
        if copy and x is obj:
            x = obj.copy()
        return to_device(x, device)
    if copy is False:
        raise ValueError("copy=False: MindSpore cannot share memory with a non-tensor input")
    host = np.asarray(obj)
    if dtype is None and not isinstance(obj, np.ndarray | np.generic) and host.dtype.kind == "f":
        dtype = float32
    if host.dtype == object or host.dtype.kind not in "biuf":
        raise TypeError(f"cannot convert {type(obj).__name__} to a MindSpore tensor")
    if dtype is None:
        x = mindspore.tensor(host)
    elif dtype == bfloat16:  # NumPy has no bfloat16: float32 on the host, cast on the device
        x = mindspore.tensor(host.astype(np.float32)).astype(bfloat16)
    else:
        x = mindspore.tensor(host, dtype=dtype)
    return to_device(x, device)


def _host_filled(shape: Any, value: Any, dtype: Any, device: Any) -> Tensor:
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if dtype is None:
        dtype = float32 if isinstance(value, float) else (bool if value is True or value is False
                                                          else int64)  # fmt: skip
    host_dtype = np.float32 if dtype == bfloat16 else _NUMPY[dtype]
    return asarray(np.full(shape, value, dtype=host_dtype), dtype=dtype, device=device)


def full(shape: Any, fill_value: Any, *, dtype: Any = None, device: Any = None) -> Tensor:
    return _host_filled(shape, fill_value, dtype, device)


def zeros(shape: Any, *, dtype: Any = None, device: Any = None) -> Tensor:
    return _host_filled(shape, 0.0, float32 if dtype is None else dtype, device)


def ones(shape: Any, *, dtype: Any = None, device: Any = None) -> Tensor:
    return _host_filled(shape, 1.0, float32 if dtype is None else dtype, device)


def empty(shape: Any, *, dtype: Any = None, device: Any = None) -> Tensor:
    return zeros(shape, dtype=dtype, device=device)


def full_like(x: Tensor, /, fill_value: Any, *, dtype: Any = None, device: Any = None) -> Tensor:
    return full(x.shape, fill_value, dtype=dtype or x.dtype, device=device or x.device)


def zeros_like(x: Tensor, /, *, dtype: Any = None, device: Any = None) -> Tensor:
    return full_like(x, 0, dtype=dtype, device=device)


def ones_like(x: Tensor, /, *, dtype: Any = None, device: Any = None) -> Tensor:
    return full_like(x, 1, dtype=dtype, device=device)


def empty_like(x: Tensor, /, *, dtype: Any = None, device: Any = None) -> Tensor:
    return zeros_like(x, dtype=dtype, device=device)


def arange(
    start: Any, /, stop: Any = None, step: Any = 1, *, dtype: Any = None, device: Any = None
) -> Tensor:
    # stop None: `start` is the stop, and `step` still applies (the array API's arange)
    host = np.arange(start, stop, step) if stop is not None else np.arange(0, start, step)
    if dtype is None and host.dtype.kind == "f":
        dtype = float32
    return asarray(host, dtype=dtype, device=device)


def linspace(
    start: Any,
    stop: Any,
    /,
    num: int,
    *,
    dtype: Any = None,
    device: Any = None,
    endpoint: builtins.bool = True,
) -> Tensor:
    """Computed in float64 on the host (NumPy's values), then converted."""
    host = np.linspace(start, stop, num, endpoint=endpoint)
    return asarray(host, dtype=float32 if dtype is None else dtype, device=device)


def eye(
    n_rows: int, n_cols: int | None = None, /, *, k: int = 0, dtype: Any = None, device: Any = None
) -> Tensor:
    return asarray(np.eye(n_rows, n_cols, k), dtype=float32 if dtype is None else dtype,
                   device=device)  # fmt: skip


# --- helpers: scalars, bfloat16 -----------------------------------------------------------------


def _operand(value: Any, like: Tensor) -> Any:
    """A Python scalar as a 0-d tensor of like's dtype on its device (exact for float64); a
    float met by an integer or bool tensor as a float32 one (an int met by a bool tensor: an
    int64 one), which the operation promotes to, as MindSpore's own `t * 0.5`, NumPy and torch
    do: of like's dtype it was truncated (multiply(t, 0.5) was 0)."""
    if isinstance(value, _TENSOR):
        return value
    host = np.asarray(value)
    dtype = like.dtype
    if host.dtype.kind == "f" and not isdtype(dtype, "real floating"):
        dtype = float32
    elif host.dtype.kind in "iu" and dtype == bool:
        dtype = int64
    return asarray(host, dtype=dtype, device=like.device)


def _pair(x1: Any, x2: Any) -> tuple[Tensor, Tensor]:
    if not isinstance(x1, _TENSOR):
        if not isinstance(x2, _TENSOR):
            raise TypeError("at least one argument must be a MindSpore tensor")
        return _operand(x1, x2), x2
    return x1, _operand(x2, x1)


def _check_tensor(x: Any, name: str = "x") -> Tensor:
    if not isinstance(x, _TENSOR):
        raise TypeError(f"{name} must be a MindSpore tensor, got {type(x).__name__}")
    return x


def _via_float32(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """Run `fn` in float32 on bfloat16 tensors (the CPU has no bfloat16 kernels for it) and
    cast a floating result back to bfloat16, unless the call named its result's dtype."""

    @functools.wraps(fn)
    def wrapped(x: Any, *args: Any, **kwargs: Any) -> Tensor:
        _check_tensor(x)
        if x.dtype != bfloat16:
            return fn(x, *args, **kwargs)
        args = tuple(a.astype(float32) if isinstance(a, _TENSOR) and a.dtype == bfloat16 else a
                     for a in args)  # fmt: skip
        result = fn(x.astype(float32), *args, **kwargs)
        if result.dtype != float32 or kwargs.get("dtype") is not None:
            return result
        return result.astype(bfloat16)

    return wrapped


def _axis(axis: Any, ndim: int) -> Any:
    """Check an axis (or tuple) on the host, so a wrong one raises here, not later."""
    axes = axis if isinstance(axis, tuple) else (axis,)
    for a in axes:
        if a is not None and not -builtins.max(ndim, 1) <= a < builtins.max(ndim, 1):
            raise ValueError(f"axis {a} is out of range for a {ndim}-d tensor")
    return axis


# --- manipulation ----------------------------------------------------------------------------


def astype(x: Tensor, dtype: Any, /, *, copy: builtins.bool = True, device: Any = None) -> Tensor:
    _check_tensor(x)
    y = x.astype(dtype) if x.dtype != dtype else (x.copy() if copy else x)
    return to_device(y, device)


def reshape(x: Tensor, /, shape: Sequence[int], *, copy: builtins.bool | None = None) -> Tensor:
    _check_tensor(x)
    shape = tuple(int(s) for s in shape)
    known = math.prod(s for s in shape if s != -1)
    size = math.prod(x.shape)
    if (
        shape.count(-1) > 1
        or (-1 in shape and (known == 0 or size % known))
        or (-1 not in shape and known != size)
    ):
        raise ValueError(f"cannot reshape a tensor of shape {tuple(x.shape)} to {shape}")
    return ops.reshape(x, shape)


def concat(arrays: Sequence[Tensor], /, *, axis: int | None = 0) -> Tensor:
    arrays = [_check_tensor(a, "arrays") for a in arrays]
    if axis is None:
        return ops.cat([ops.reshape(a, (-1,)) for a in arrays], 0)
    return ops.cat(arrays, _axis(axis, arrays[0].ndim))


def stack(arrays: Sequence[Tensor], /, *, axis: int = 0) -> Tensor:
    arrays = [_check_tensor(a, "arrays") for a in arrays]
    if builtins.any(a.dtype == bfloat16 for a in arrays):  # the CPU has no bfloat16 Stack
        return ops.cat([ops.expand_dims(a, axis) for a in arrays], axis)
    return ops.stack(arrays, axis)


def expand_dims(x: Tensor, /, *, axis: int = 0) -> Tensor:
    _check_tensor(x)
    return ops.expand_dims(x, axis)


def squeeze(x: Tensor, /, axis: int | tuple[int, ...]) -> Tensor:
    _check_tensor(x)
    axes = _axis(axis, x.ndim) if isinstance(axis, tuple) else (_axis(axis, x.ndim),)
    if builtins.any(x.shape[a] != 1 for a in axes):
        raise ValueError(f"cannot squeeze axis {axis} of shape {tuple(x.shape)}")
    shape = [s for i, s in enumerate(x.shape) if i not in {a % x.ndim for a in axes}]
    return ops.reshape(x, tuple(shape))


def broadcast_to(x: Tensor, /, shape: Sequence[int]) -> Tensor:
    _check_tensor(x)
    return ops.broadcast_to(x, tuple(shape))


@_via_float32
def take(x: Tensor, indices: Tensor, /, *, axis: int | None = None) -> Tensor:
    """Elements along `axis` (ops.gather: out-of-range indices raise, never clamp)."""
    indices = _check_tensor(indices, "indices")
    if not isdtype(indices.dtype, "integral"):
        raise TypeError(f"indices must have an integer dtype, got {indices.dtype}")
    if indices.dtype not in (int16, int32, int64):  # the CPU's Gather takes no other index dtype
        indices = indices.astype(int64)
    if axis is None:
        if x.ndim != 1:
            raise ValueError("take needs axis= for a tensor of more than one dimension")
        axis = 0
    return ops.gather(x, indices, _axis(axis, x.ndim))


# --- elementwise -----------------------------------------------------------------------------


@_via_float32
def sqrt(x: Tensor, /) -> Tensor:
    return ops.sqrt(x)


@_via_float32
def exp(x: Tensor, /) -> Tensor:
    return ops.exp(x)


@_via_float32
def log(x: Tensor, /) -> Tensor:
    return ops.log(x)


@_via_float32
def cos(x: Tensor, /) -> Tensor:
    return ops.cos(x)


@_via_float32
def sin(x: Tensor, /) -> Tensor:
    return ops.sin(x)


@_via_float32
def abs(x: Tensor, /) -> Tensor:
    return ops.abs(x)


@_via_float32
def square(x: Tensor, /) -> Tensor:
    return x * x


@_via_float32
def isfinite(x: Tensor, /) -> Tensor:
    return ops.isfinite(x)


@_via_float32
def isnan(x: Tensor, /) -> Tensor:
    return ops.isnan(x)


@_via_float32
def isinf(x: Tensor, /) -> Tensor:
    return ops.isinf(x)


@_via_float32
def sign(x: Tensor, /) -> Tensor:
    return _keep_nan(x, ops.sign(x))  # ops.sign(NaN) is 0


def negative(x: Tensor, /) -> Tensor:
    return -_check_tensor(x)


def _binary(name: str, op: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Any, Any], Tensor]:
    def fn(x1: Any, x2: Any, /) -> Tensor:
        a, b = _pair(x1, x2)
        if bfloat16 in (a.dtype, b.dtype):
            result = op(a.astype(float32) if a.dtype == bfloat16 else a,
                        b.astype(float32) if b.dtype == bfloat16 else b)  # fmt: skip
            return result.astype(bfloat16) if result.dtype == float32 else result
        return op(a, b)

    fn.__name__ = fn.__qualname__ = name
    return fn


def _keep_nan(x: Tensor, result: Tensor) -> Tensor:
    """`result` with NaN where `x` is NaN: MindSpore's clamp, maximum and minimum can return
    the other operand (clip(NaN, -1, 1) is -1), where the array API propagates NaN."""
    if not isdtype(x.dtype, "real floating"):
        return result
    return ops.where(ops.isnan(x), x, result)


def _nan_propagating(op: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Tensor, Tensor], Tensor]:
    return lambda a, b: _keep_nan(b, _keep_nan(a, op(a, b)))


add = _binary("add", lambda a, b: a + b)
subtract = _binary("subtract", lambda a, b: a - b)
multiply = _binary("multiply", lambda a, b: a * b)
divide = _binary("divide", lambda a, b: a / b)
pow = _binary("pow", ops.pow)
atan2 = _binary("atan2", ops.atan2)
maximum = _binary("maximum", _nan_propagating(ops.maximum))
minimum = _binary("minimum", _nan_propagating(ops.minimum))
less = _binary("less", ops.less)
less_equal = _binary("less_equal", ops.less_equal)
greater = _binary("greater", ops.greater)
greater_equal = _binary("greater_equal", ops.greater_equal)
equal = _binary("equal", ops.equal)
not_equal = _binary("not_equal", ops.not_equal)


def logical_and(x1: Tensor, x2: Tensor, /) -> Tensor:
    return ops.logical_and(x1, x2)


def logical_or(x1: Tensor, x2: Tensor, /) -> Tensor:
    return ops.logical_or(x1, x2)


def logical_not(x: Tensor, /) -> Tensor:
    return ops.logical_not(x)


def clip(x: Tensor, /, min: Any = None, max: Any = None) -> Tensor:
    """Clip to [min, max]; Python bounds become 0-d tensors of x's dtype (exact)."""
    _check_tensor(x)
    if min is None and max is None:
        return x
    work = x.astype(float32) if x.dtype == bfloat16 else x
    low = None if min is None else _operand(min, work)
    high = None if max is None else _operand(max, work)
    result = _keep_nan(work, ops.clamp(work, low, high))
    return result.astype(bfloat16) if x.dtype == bfloat16 else result


def where(condition: Tensor, x1: Any, x2: Any, /) -> Tensor:
    _check_tensor(condition, "condition")
    a, b = _pair(x1, x2)
    if bfloat16 in (a.dtype, b.dtype):
        return ops.where(condition, a.astype(float32), b.astype(float32)).astype(bfloat16)
    return ops.where(condition, a, b)


# --- reductions, sorting, scans ------------------------------------------------------------------


def _reduce(op: Callable[..., Tensor], x: Tensor, axis: Any, keepdims: builtins.bool) -> Tensor:
    """`op` over `axis` (checked on the host). axis=() reduces nothing, as the array API's
    reductions (x itself), where MindSpore's take () for every axis (sum(x, axis=()) was a
    scalar). A reduction over zero elements is its identity (sum 0, prod 1, all True, any
    False; mean NaN), and max or min a ValueError, as NumPy's: MindSpore's CPU kernels
    return uninitialized memory there (any of nothing was True)."""
    if isinstance(axis, tuple) and not axis:
        return x
    axes = range(x.ndim) if axis is None else (axis if isinstance(axis, tuple) else (axis,))
    reduced = {a % builtins.max(x.ndim, 1) for a in _axis(tuple(axes), x.ndim)}
    if x.ndim and math.prod(x.shape[a] for a in reduced) == 0:
        if op not in _EMPTY:  # ops.amax, ops.amin
            raise ValueError(
                f"{op.__name__.removeprefix('a')} of zero elements has no value (axis {axis} "
                f"of a tensor of shape {tuple(x.shape)})"
            )
        value, kind = _EMPTY[op]
        dtype = (bool if kind == "bool" else int64 if isdtype(x.dtype, ("bool", "integral"))
                 and kind == "sum" else x.dtype)  # fmt: skip
        shape = [
            1 if i in reduced else n for i, n in enumerate(x.shape) if keepdims or i not in reduced
        ]
        return full(tuple(shape), value, dtype=dtype, device=x.device)
    return op(x, _axis(axis, x.ndim), keepdims)


# what a reduction over zero elements gives (the array API's; NumPy's), and its dtype's kind
_EMPTY = {
    ops.sum: (0, "sum"),
    ops.prod: (1, "sum"),
    ops.mean: (math.nan, "mean"),
    ops.all: (True, "bool"),
    ops.any: (False, "bool"),
}


@_via_float32
def sum(
    x: Tensor, /, *, axis: Any = None, dtype: Any = None, keepdims: builtins.bool = False
) -> Tensor:
    result = _reduce(ops.sum, x, axis, keepdims)
    return result if dtype is None else result.astype(dtype)


@_via_float32
def prod(
    x: Tensor, /, *, axis: Any = None, dtype: Any = None, keepdims: builtins.bool = False
) -> Tensor:
    result = _reduce(ops.prod, x, axis, keepdims)
    return result if dtype is None else result.astype(dtype)


@_via_float32
def mean(x: Tensor, /, *, axis: Any = None, keepdims: builtins.bool = False) -> Tensor:
    return _reduce(ops.mean, x, axis, keepdims)


@_via_float32
def var(
    x: Tensor, /, *, axis: Any = None, correction: float = 0.0, keepdims: builtins.bool = False
) -> Tensor:
    """The variance over `axis`: the mean squared deviation with N - correction in the
    denominator (N: the number of elements reduced), as the array API's `var`."""
    axes = tuple(range(x.ndim)) if axis is None else (axis if isinstance(axis, tuple) else (axis,))
    _axis(axes, x.ndim)
    if not axes:  # nothing reduced: each element is its own mean
        return x - x
    deviation = x - _reduce(ops.mean, x, axes, True)
    n = math.prod(x.shape[a] for a in axes)
    return _reduce(ops.sum, deviation * deviation, axes, keepdims) / _operand(n - correction, x)


@_via_float32
def std(
    x: Tensor, /, *, axis: Any = None, correction: float = 0.0, keepdims: builtins.bool = False
) -> Tensor:
    """The standard deviation over `axis`: the square root of `var`."""
    return ops.sqrt(var(x, axis=axis, correction=correction, keepdims=keepdims))


@_via_float32
def max(x: Tensor, /, *, axis: Any = None, keepdims: builtins.bool = False) -> Tensor:
    return _nan_reduced(x, _reduce(ops.amax, x, axis, keepdims), axis, keepdims)


@_via_float32
def min(x: Tensor, /, *, axis: Any = None, keepdims: builtins.bool = False) -> Tensor:
    return _nan_reduced(x, _reduce(ops.amin, x, axis, keepdims), axis, keepdims)


def _nan_reduced(x: Tensor, result: Tensor, axis: Any, keepdims: builtins.bool) -> Tensor:
    """`result` of a max or min reduction, NaN where the elements reduced hold a NaN: ops.amax
    and ops.amin return NaN only when it comes first (max([1, NaN, 2]) is 2)."""
    if not isdtype(x.dtype, "real floating"):
        return result
    nan = _reduce(ops.any, ops.isnan(x), axis, keepdims)
    return ops.where(nan, _operand(math.nan, result), result)


def all(x: Tensor, /, *, axis: Any = None, keepdims: builtins.bool = False) -> Tensor:
    _check_tensor(x)
    return _reduce(ops.all, x if x.dtype == bool else not_equal(x, 0), axis, keepdims)


def any(x: Tensor, /, *, axis: Any = None, keepdims: builtins.bool = False) -> Tensor:
    _check_tensor(x)
    return _reduce(ops.any, x if x.dtype == bool else not_equal(x, 0), axis, keepdims)


@_via_float32
def sort(
    x: Tensor, /, *, axis: int = -1, descending: builtins.bool = False, stable: builtins.bool = True
) -> Tensor:
    """Sorted values, by ops.topk over the whole axis: ops.sort rounds float64 values to
    float32 on the CPU, and mint.sort has no CPU kernel."""
    return _sorted(x, axis, descending)[0]


@_via_float32
def argsort(
    x: Tensor, /, *, axis: int = -1, descending: builtins.bool = False, stable: builtins.bool = True
) -> Tensor:
    return _sorted(x, axis, descending)[1].astype(int64)


def _sorted(x: Tensor, axis: int, descending: builtins.bool) -> tuple[Tensor, Tensor]:
    _axis(axis, x.ndim)
    if x.ndim == 0 or 0 in x.shape:  # (ops.topk raises for an empty axis)
        return x, zeros(tuple(x.shape), dtype=int64, device=x.device)
    n = x.shape[axis]
    if not isdtype(x.dtype, "real floating"):
        return ops.topk(x, n, dim=axis, largest=descending, sorted=True)  # type: ignore[no-any-return]
    # topk does not order NaN: sort it as inf, then put NaN back at the places of the largest
    # values (after inf ascending, first descending: NumPy's and torch's order)
    nan = ops.isnan(x)
    values, indices = ops.topk(ops.where(nan, _operand(math.inf, x), x), n, dim=axis,
                               largest=descending, sorted=True)  # fmt: skip
    count = ops.sum(nan.astype(int64), axis, True)
    shape = [1] * x.ndim
    shape[axis] = n
    rank = ops.reshape(asarray(np.arange(n), device=x.device), tuple(shape))
    largest = rank < count if descending else rank >= n - count
    return ops.where(largest, _operand(math.nan, x), values), indices


@_via_float32
def cumulative_sum(
    x: Tensor,
    /,
    *,
    axis: int | None = None,
    dtype: Any = None,
    include_initial: builtins.bool = False,
) -> Tensor:
    return _scan(x, ops.cumsum, 0, axis, dtype, include_initial)


@_via_float32
def cumulative_prod(
    x: Tensor,
    /,
    *,
    axis: int | None = None,
    dtype: Any = None,
    include_initial: builtins.bool = False,
) -> Tensor:
    return _scan(x, ops.cumprod, 1, axis, dtype, include_initial)


def _scan(
    x: Tensor, op: Callable[..., Tensor], initial: int, axis: Any, dtype: Any, include: Any
) -> Tensor:
    if axis is None:
        if x.ndim != 1:
            raise ValueError("axis= is required for a tensor of more than one dimension")
        axis = 0
    _axis(axis, x.ndim)  # (an empty tensor's too)
    # an empty tensor is its own scan (the CPU's CumSum fails on one)
    result = x if 0 in x.shape else op(x, axis)
    if include:
        shape = list(x.shape)
        shape[axis] = 1
        result = ops.cat([full(tuple(shape), initial, dtype=x.dtype, device=x.device), result],
                         axis)  # fmt: skip
    return result if dtype is None else result.astype(dtype)


__all__ = [name for name in dir() if not name.startswith("_") and name not in (
    "annotations", "functools", "math", "mindspore", "np", "ops", "Callable", "Sequence", "Any",
    "NamedTuple", "Tensor", "builtins",
)]  # fmt: skip
