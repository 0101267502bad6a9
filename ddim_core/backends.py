"""Array namespaces, devices and dtypes, host/device transfers, and the host-side helpers
the step path relies on (object ids, host constants, device caches). The one module of
ddim_core that imports array-api-compat.

array-api-compat resolves NumPy, CuPy, PyTorch, JAX, Dask and array-api-strict without
importing any of them (it looks at `type(x)`), so importing ddim_core imports no framework.
Arrays it does not know go to one fallback resolver, which `plugins` installs when imported
(the `ddim_core_array_namespace` hook); this module imports nothing else of ddim_core.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import operator
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import array_api_compat
import array_api_compat.numpy
import numpy as np

Array = Any
Namespace = Any
R = TypeVar("R")
S = TypeVar("S", bound=tuple[Any, ...])

HOST_XP: Namespace = array_api_compat.numpy  # NumPy's array-API namespace: host tables


def namespace(**arrays: Array) -> Namespace:
    """The one array namespace of the named arrays (None values are skipped).

    Parameters
    ----------
    **arrays : array or None
        Arrays by argument name (the names appear in error messages).

    Returns
    -------
    namespace
        array-api-compat's namespace (or a plugin's, for arrays it does not know).

    Raises
    ------
    TypeError
        A value that is not an array, no array at all, or arrays of different libraries.
    ValueError
        Arrays on different devices.

    Examples
    --------
    >>> import numpy as np
    >>> namespace(sample=np.zeros(2), noise=None).__name__
    'array_api_compat.numpy'
    """
    values = [x for x in arrays.values() if x is not None]
    if values:
        xp = fast_namespace(*values)
        if xp is not None:
            return xp
    found: list[tuple[str, Array, Namespace]] = []
    for name, x in arrays.items():
        if x is None:
            continue
        found.append((name, x, _namespace_of(name, x)))
    if not found:
        raise TypeError(f"expected at least one array among {list(arrays)}")
    first_name, first, xp = found[0]
    for name, x, other in found[1:]:
        if other is not xp:
            raise TypeError(
                f"{name} is a {_library(other)} array but {first_name} is a {_library(xp)} "
                "array; pass arrays from one library"
            )
        where, first_where = device(x), device(first)
        if where != first_where and where is not None and first_where is not None:
            # (None: traced under jax.jit, on whichever device the computation runs)
            raise ValueError(
                f"{name} is on device {where!r} but {first_name} is on {first_where!r}; "
                "move them to one device"
            )
    return xp


_NAMESPACES: dict[type, Namespace] = {}  # array-api-compat's answer depends on the type only
# Types whose device check is cheap: NumPy (always the CPU) and torch (`.device` compares).
SAME_DEVICE: dict[type, Callable[[Array, tuple[Array | None, ...]], bool]] = {}


def fast_namespace(first: Array, *others: Array | None) -> Namespace | None:
    """`namespace` for arrays of one already-seen NumPy or torch type on one device (a dict
    lookup and a device compare), else None: then call `namespace` for the full checks.

    Parameters
    ----------
    first : array
    *others : array or None

    Returns
    -------
    namespace or None

    Examples
    --------
    >>> import numpy as np
    >>> _ = namespace(x=np.zeros(1))  # seen once
    >>> fast_namespace(np.zeros(1), None).__name__
    'array_api_compat.numpy'
    """
    kind = type(first)
    same_device = SAME_DEVICE.get(kind)
    if same_device is None:
        return None
    for x in others:
        if x is not None and type(x) is not kind:
            return None
    return _NAMESPACES[kind] if same_device(first, others) else None


def _torch_same_device(first: Array, others: tuple[Array | None, ...]) -> bool:
    if first.is_cpu:  # the common case, without making device objects
        for x in others:  # noqa: SIM110 (a loop, not all(...): this runs on every step)
            if x is not None and not x.is_cpu:
                return False
        return True
    device = first.device
    for x in others:  # noqa: SIM110 (a loop, not all(...): this runs on every step)
        if x is not None and x.device != device:
            return False
    return True


def _no_fallback(x: Array) -> Namespace | None:
    return None


_namespace_fallback: Callable[[Array], Namespace | None] = _no_fallback


def set_namespace_fallback(resolve: Callable[[Array], Namespace | None]) -> None:
    """Install the resolver `namespace` asks for an array array-api-compat does not know.

    `plugins` installs its `array_namespace` (the `ddim_core_array_namespace` hook) when
    imported; this module imports nothing else of ddim_core.

    Parameters
    ----------
    resolve : callable
        ``resolve(array) -> namespace or None``.

    Examples
    --------
    >>> import ddim_core.plugins
    >>> set_namespace_fallback(ddim_core.plugins.array_namespace)  # what plugins does
    """
    global _namespace_fallback
    _namespace_fallback = resolve


def _namespace_of(name: str, x: Array) -> Namespace:
    """array-api-compat's namespace of `x` (cached per type), else the one a plugin resolves."""
    xp = _NAMESPACES.get(type(x))
    if xp is not None:
        return xp
    try:
        xp = _NAMESPACES[type(x)] = array_api_compat.array_namespace(x)
    except TypeError:
        pass
    else:
        if type(x) is np.ndarray:
            SAME_DEVICE[np.ndarray] = lambda first, others: True  # always the CPU
        elif array_api_compat.is_torch_array(x):
            SAME_DEVICE[type(x)] = _torch_same_device
        return xp
    xp = _namespace_fallback(x)
    if xp is None:
        raise TypeError(
            f"{name} must be an array (numpy, torch, jax, cupy, dask, array-api-strict or one "
            f"a ddim_core plugin resolves), got {type(x).__name__}"
        )
    return xp


def _library(xp: Namespace) -> str:
    return str(xp.__name__).removeprefix("array_api_compat.")


def as_namespace(xp: Any) -> Namespace:
    """An array-API namespace from what a user passes as `xp=`: a compliant namespace (NumPy
    2, jax.numpy, array_api_strict, array_api_compat.*) or a library module whose arrays
    array-api-compat knows (torch, cupy, dask.array).

    Parameters
    ----------
    xp : namespace or module
        What the user passed; the namespace is that of ``xp.asarray(0)``.

    Returns
    -------
    namespace
        array-api-compat's namespace (or a plugin's) for that library.

    Raises
    ------
    TypeError
        `xp` has no callable `asarray` (a string, None, ...), or its arrays are none that
        array-api-compat or a plugin resolves.

    Examples
    --------
    >>> import numpy as np
    >>> import array_api_compat.numpy
    >>> as_namespace(np) is as_namespace(array_api_compat.numpy) is HOST_XP
    True
    >>> as_namespace("numpy")
    Traceback (most recent call last):
    TypeError: xp must be an array namespace or library module ...
    """
    if isinstance(xp, str) or not callable(getattr(xp, "asarray", None)):
        raise TypeError(
            f"xp must be an array namespace or library module (numpy, torch, jax.numpy, "
            f"cupy, dask.array, array_api_strict), got {xp!r}"
        )
    try:
        return _namespace_of("xp", xp.asarray(0))
    except Exception as e:
        raise TypeError(
            f"xp={getattr(xp, '__name__', xp)!r} is not an array namespace: {e}"
        ) from None


def device(x: Array) -> Any:
    """The device an array lives on (array-api-compat's portable accessor): where arrays made
    for it go. A JAX array over several devices gives the sharding that keeps a whole copy on
    each of them (its own splits axis 0, which a table or constant of another shape lacks). An
    uncommitted JAX array (made without ``device=``: ``jnp.ones``, ``jax.random.normal``)
    gives None, as a traced one does: JAX computes it where the committed arguments are, and
    arrays made for it stay uncommitted, as JAX's own results from it.

    Parameters
    ----------
    x : array

    Returns
    -------
    object

    Examples
    --------
    >>> import numpy as np
    >>> device(np.zeros(1))
    'cpu'
    """
    where = array_api_compat.device(x)
    jax = sys.modules.get("jax")
    if jax is not None and isinstance(where, jax.sharding.Sharding):  # several devices
        return _replicated(where)
    if jax is not None and uncommitted(x):  # JAX moves it to where the other arrays are
        return None
    return where


@functools.lru_cache(maxsize=64)
def _replicated(sharding: Any) -> Any:
    """The fully replicated sharding over the devices of a JAX `sharding` (equal for every
    split of one mesh, so that `namespace` sees arrays split differently as on one device)."""
    if sharding.is_fully_replicated:
        return sharding
    jax = sys.modules["jax"]
    mesh = getattr(sharding, "mesh", None)
    if not isinstance(mesh, jax.sharding.Mesh):  # another kind of sharding: its devices in order
        devices = sorted(sharding.device_set, key=lambda d: d.id)
        mesh = jax.sharding.Mesh(np.array(devices), ("devices",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def default_device(xp: Namespace) -> Any:
    """The device `xp` puts an array made without `device=` on: the library's default, which a
    context can change (torch's ``with torch.device(...)``, ``jax.default_device``), so a
    cache keyed on ``device=None`` keys on this instead. None while JAX traces.

    Parameters
    ----------
    xp : namespace

    Returns
    -------
    object

    Examples
    --------
    >>> default_device(HOST_XP)
    'cpu'
    """
    where = array_api_compat.device(xp.empty(0))  # (not device(): JAX's is uncommitted)
    jax = sys.modules.get("jax")
    if jax is not None and isinstance(where, jax.sharding.Sharding):
        return _replicated(where)
    return where


def is_host_numpy(x: Array) -> bool:
    """True for NumPy arrays: their values can be read without a device sync.

    Parameters
    ----------
    x : array

    Returns
    -------
    bool

    Examples
    --------
    >>> import numpy as np
    >>> is_host_numpy(np.zeros(1))
    True
    """
    return bool(array_api_compat.is_numpy_array(x))


def writable(x: Array) -> bool:
    """False for arrays known to be read-only (NumPy's writeable flag; JAX arrays) or that are
    broadcast views (a stride of 0 along an axis of more than one element: torch's `expand`,
    which torch cannot write into), True for any other array (an `out=` buffer is then
    written).

    Parameters
    ----------
    x : array

    Returns
    -------
    bool

    Examples
    --------
    >>> import numpy as np
    >>> x = np.zeros(2)
    >>> writable(x), writable(np.broadcast_to(x, (3, 2)))
    (True, False)
    """
    flags = getattr(x, "flags", None)
    if isinstance(x, np.ndarray) and flags is not None:
        return bool(flags.writeable)
    if array_api_compat.is_jax_array(x):
        return False
    stride = getattr(x, "stride", None)  # torch's strides (in elements); CuPy's, in bytes
    strides = stride() if callable(stride) else getattr(x, "strides", None)
    if not isinstance(strides, tuple) or 0 in tuple(x.shape):  # (empty: no element shared)
        return True
    return not any(n > 1 and st == 0 for n, st in zip(x.shape, strides, strict=False))


def check_known_shape(name: str, x: Array) -> None:
    """Raise where a dimension of `x` is unknown: None (the array API's unknown size) or NaN
    (Dask before its chunk sizes are computed), which no shape check or broadcast can take.

    Parameters
    ----------
    name : str
        The argument's name, for the message.
    x : array

    Raises
    ------
    ValueError
        A dimension is unknown.

    Examples
    --------
    >>> import numpy as np
    >>> check_known_shape("sample", np.zeros((2, 3)))
    """
    if any(n is None or (isinstance(n, float) and n != n) for n in x.shape):  # n != n: NaN
        raise ValueError(
            f"{name} has shape {tuple(x.shape)} with unknown sizes; compute them first "
            "(dask: x.compute_chunk_sizes())"
        )


def inference_outside(x: Array) -> bool:
    """True for a torch inference tensor (made under `torch.inference_mode`) outside inference
    mode, where torch refuses to write into it (an `out=` buffer cannot be written now; a table
    may still be written later, inside the mode, so `writable` stays True for it).

    Parameters
    ----------
    x : array

    Returns
    -------
    bool

    Examples
    --------
    >>> import numpy as np
    >>> inference_outside(np.zeros(1))
    False
    """
    torch = sys.modules.get("torch")  # (imported by the caller's arrays, if torch)
    if torch is None or not isinstance(x, torch.Tensor) or not x.is_inference():
        return False
    return not torch.is_inference_mode_enabled()


def records_gradient(x: Array) -> bool:
    """True for a torch tensor that autograd records (it requires grad, outside
    `torch.no_grad`): torch's out= operations cannot take one.

    Parameters
    ----------
    x : array or None

    Returns
    -------
    bool

    Examples
    --------
    >>> import numpy as np
    >>> records_gradient(np.zeros(1))
    False
    """
    torch = sys.modules.get("torch")  # (imported by the caller's arrays, if torch)
    if torch is None or not isinstance(x, torch.Tensor):
        return False
    return bool(x.requires_grad and torch.is_grad_enabled())


def no_grad(x: Array) -> Any:
    """`torch.no_grad()` for a torch tensor `x`, else a context that does nothing: a loop the
    adapters run without an autograd graph, as k-diffusion's samplers and diffusers' pipelines
    do (a model whose parameters require grad would otherwise keep every call's activations).

    Parameters
    ----------
    x : array
        The loop's sample.

    Returns
    -------
    context manager

    Examples
    --------
    >>> import numpy as np
    >>> with no_grad(np.zeros(1)):
    ...     pass
    """
    torch = sys.modules.get("torch")  # (imported by the caller's arrays, if torch)
    if torch is not None and isinstance(x, torch.Tensor):
        return torch.no_grad()
    return contextlib.nullcontext()


def forward_ad_active() -> bool:
    """True while a `torch.autograd.forward_ad.dual_level` is open: then torch tensors may
    carry tangents, which only torch's own ops propagate (dual tensors do not require grad:
    `records_gradient` says False), and torch's out= ops raise for them.

    Returns
    -------
    bool

    Examples
    --------
    >>> forward_ad_active()
    False
    """
    torch = sys.modules.get("torch")  # (imported by the caller's arrays, if torch)
    return torch is not None and torch.autograd.forward_ad._current_level >= 0


def overlaps(a: Array, b: Array) -> bool:
    """Whether two arrays may share memory (NumPy's bounds check; for torch, CuPy and other
    libraries exposing a data pointer, the byte ranges their strides can reach). Arrays of
    other libraries overlap only when they are the same object.

    Parameters
    ----------
    a, b : array
        Two arrays of one library.

    Returns
    -------
    bool
        False only when no element of `a` can share memory with one of `b`.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.zeros(4)
    >>> overlaps(x[:2], x[2:]), overlaps(x[:3], x[2:]), overlaps(x, np.zeros(4))
    (False, True, False)
    """
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return bool(np.may_share_memory(a, b))
    span_a, span_b = _byte_span(a), _byte_span(b)
    if span_a is None or span_b is None:
        return a is b
    return span_a[0] < span_b[1] and span_b[0] < span_a[1]


def _byte_span(x: Array) -> tuple[int, int] | None:
    """[first, last) byte addresses an array's elements occupy, or None when unknown."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        if x.layout != torch.strided or x.is_meta:
            return None  # sparse: no data pointer (its own storage, never a dense buffer's);
            # meta: no memory (every data pointer is 0)
        start = tensor_address(x)
        if start is None:
            return None
        if x.is_contiguous():  # the common case, cheaply (out= checks run every step)
            return (start, start + x.nbytes)
        torch_like = True
    else:
        # torch-like: data_ptr(), stride() in elements and element_size() (MindSpore's
        # tensors have the first two only: unknown, as any other library's)
        torch_like = all(hasattr(x, name) for name in ("data_ptr", "stride", "element_size"))
        if torch_like:
            start = x.data_ptr()
    if torch_like:
        if x.numel() == 0:
            return (0, 0)
        size = x.element_size()
        reach = sum((n - 1) * st for n, st in zip(x.shape, x.stride(), strict=True) if n)
        low = start + min(0, reach) * size
        return (low, start + max(0, reach) * size + size)
    data = getattr(x, "data", None)
    ptr = getattr(data, "ptr", None)  # CuPy
    if isinstance(ptr, int) and hasattr(x, "strides"):
        reach = sum((n - 1) * st for n, st in zip(x.shape, x.strides, strict=True) if n)
        return (ptr + min(0, reach), ptr + max(0, reach) + x.itemsize)
    return None


def tensor_address(t: Any) -> int | None:
    """The data pointer of a torch tensor whose elements are in memory there; None for one
    whose elements are not: torch.func's vmap and jvp (no storage), functionalize (an invalid
    storage, and a data pointer that is the view's offset from 0), FakeTensorMode, meta and
    wrapper subclasses (storage at address 0). Asks the storage, as torch's own data pointer
    cannot tell a functional view's offset from an address.

    Parameters
    ----------
    t : torch.Tensor

    Returns
    -------
    int or None

    Examples
    --------
    >>> import torch
    >>> x = torch.zeros(2)
    >>> tensor_address(x) == x.data_ptr(), tensor_address(torch.empty(0))
    (True, 0)
    >>> tensor_address(torch.zeros(2, device="meta")) is None
    True
    """
    if type(t) is not sys.modules["torch"].Tensor and hasattr(t, "fake_mode"):
        return None  # a FakeTensor: asking its data pointer warns (an error in later torch)
    try:
        base = t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):  # functionalize; vmap, jvp
        return None
    if base == 0 and t.numel():
        return None
    address: int = t.data_ptr()
    return address


def host_integers(x: Array) -> list[int] | None:
    """The values of an integer array the host reads for free: NumPy, a torch tensor on the
    CPU outside torch.compile and torch.func transforms, a concrete JAX array on the CPU, a
    MindSpore tensor on the CPU, an array-api-strict array on its CPU device. None for
    anything else: reading a device array waits for it, a lazy one computes it, a traced or
    batched one has none.

    Parameters
    ----------
    x : array
        An integer array of any shape.

    Returns
    -------
    list of int or None
        Its values, flattened in C order, or None when reading them is not free.

    Examples
    --------
    >>> import numpy as np
    >>> host_integers(np.array([[999, 979], [959, 939]]))
    [999, 979, 959, 939]
    """
    if isinstance(x, (np.ndarray, np.generic)):  # (a tuple: torch.compile traces it)
        return list(np.reshape(x, -1).tolist())
    if array_api_compat.is_torch_array(x) and x.device.type == "cpu" and not _transformed(x):
        return list(x.reshape(-1).tolist())
    jax_on_cpu = array_api_compat.is_jax_array(x) and not _tracing(x)
    if jax_on_cpu and all(d.platform == "cpu" for d in x.devices()):
        return list(np.asarray(x).reshape(-1).tolist())
    if _on_mindspore_cpu(x):
        return list(x.asnumpy().reshape(-1).tolist())
    if _on_strict_cpu(x):  # NumPy underneath; its other devices stand for accelerators
        return list(np.from_dlpack(x).reshape(-1).tolist())
    return None


def _transformed(x: Array) -> bool:
    """Whether a torch tensor has no values to read: traced by torch.compile, or wrapped by a
    torch.func transform (vmap's batched tensors have no storage; their .tolist() raises)."""
    if compiling():  # (first: Dynamo need not trace the functorch query)
        return True
    return _functorch_wrapped(x)


def _torch_device_op(x: Array) -> bool:
    """Whether x is a torch tensor that takes torch's device-side ops (the asynchronous
    assert, index_select): eager or compiled, not batched by a torch.func transform (no
    batching rule for the assert)."""
    return array_api_compat.is_torch_array(x) and (compiling() or not _functorch_wrapped(x))


def _functorch_wrapped(x: Array) -> bool:
    """Whether a torch tensor is wrapped by a torch.func transform outside torch.compile:
    vmap's batched tensors have no value to read and no batching rule for torch's device
    assert."""
    functorch = getattr(sys.modules["torch"]._C, "_functorch", None)
    wrapped = getattr(functorch, "is_functorch_wrapped_tensor", None)
    return wrapped is not None and bool(wrapped(x))


def _on_mindspore_cpu(x: Array) -> bool:
    """Whether x is a MindSpore tensor on the CPU (its devices: "CPU", "Ascend:0", "GPU:0")."""
    mindspore = sys.modules.get("mindspore")
    if mindspore is None or not isinstance(x, mindspore.Tensor):
        return False
    return str(x.device).partition(":")[0] == "CPU"


def _on_strict_cpu(x: Array) -> bool:
    """Whether x is an array-api-strict array on its CPU device."""
    strict = sys.modules.get("array_api_strict")
    if strict is None or not type(x).__module__.startswith("array_api_strict."):
        return False
    return bool(x.device == strict.Device())  # (its Array class is not exported)


def host_int(x: Array) -> int | None:
    """The value of a 0-d integer array the host reads for free (`host_integers` of one
    value, quickly: what a pipeline's `for t in scheduler.timesteps` gives), else None.

    Parameters
    ----------
    x : array
        A 0-d array whose dtype the caller has checked is integral.

    Returns
    -------
    int or None

    Examples
    --------
    >>> import numpy as np
    >>> host_int(np.array(981))
    981
    """
    if isinstance(x, np.ndarray):
        return int(x)
    if x.__class__.__module__ == "torch" and x.is_cpu and not compiling():
        try:
            return int(x.item())
        except RuntimeError:  # batched by torch.func.vmap: no value (host_integers: None)
            pass
    values = host_integers(x)
    return None if values is None else values[0]


def check_range_on_device(x: Array, size: int, message: str) -> Array:
    """x, with 0 <= x < size checked where x lives, without waiting for it: torch's
    asynchronous device assert (reported at the next synchronisation), a Dask check that runs
    with the graph. Other libraries (JAX under jit) and torch.func.vmap's batched tensors (the
    assert has no batching rule) have no such check: a value out of range there gathers NaN
    (`take_rows`) and is documented. Values the host reads for free are checked there instead
    (`host_integers`).

    Parameters
    ----------
    x : array
        Integer indices (timesteps).
    size : int
        The exclusive upper bound (the table length).
    message : str
        What the failed check says (torch's assert; Dask's ValueError, followed by the range).

    Returns
    -------
    array
        `x` itself (torch and the rest), or for Dask a lazy array that checks each block when
        computed.

    Examples
    --------
    >>> import numpy as np
    >>> t = np.array([999, 0])
    >>> check_range_on_device(t, 1000, "timestep out of range") is t
    True
    """
    if _torch_device_op(x):
        torch = sys.modules["torch"]
        ok = (x >= 0) & (x < size)
        torch._assert_async(ok if ok.ndim == 0 else ok.all(), message)  # (0-d: one launch less)
    elif array_api_compat.is_dask_array(x):
        lazy: Any = x  # (dask's own annotations do not know the block function's extras)
        return lazy.map_blocks(_check_block, size, message, dtype=x.dtype)
    return x


def check_excluded_on_device(x: Array, excluded: tuple[int, ...], message: str) -> Array:
    """x, with no element in `excluded` checked where x lives, without waiting for it, as
    `check_range_on_device` does (torch's asynchronous assert, a Dask check in the graph).
    Other libraries (JAX under jit, CuPy, array-api-strict's devices other than its CPU) and
    torch.func.vmap's batched tensors have none: there an excluded element becomes -1, which
    `take_rows` gathers as NaN (documented), where its row would step to a finite, wrong
    sample (x0_pred = inf, clipped).

    Parameters
    ----------
    x : array
        Integer indices (timesteps), already range-checked.
    excluded : tuple of int
        The values that are not allowed (rows where no step can be taken).
    message : str
        What the failed check says.

    Returns
    -------
    array
        `x` itself (NumPy, torch), for Dask a lazy array that checks each block when
        computed, for other libraries `x` (in a signed dtype) with -1 at the excluded elements.

    Examples
    --------
    >>> import numpy as np
    >>> t = np.array([999, 0])
    >>> check_excluded_on_device(t, (1,), "cannot step at timestep 1") is t
    True
    """
    if not excluded:
        return x
    if _torch_device_op(x):
        torch = sys.modules["torch"]
        hit = torch.isin(x, _torch_integers(excluded, x.device))
        torch._assert_async(~(hit if hit.ndim == 0 else hit.any()), message)
    elif array_api_compat.is_dask_array(x):
        lazy: Any = x
        return lazy.map_blocks(_check_excluded_block, excluded, message, dtype=x.dtype)
    elif array_api_compat.is_jax_array(x):
        jnp = sys.modules["jax"].numpy
        if not jnp.issubdtype(x.dtype, jnp.signedinteger):  # (an unsigned one cannot hold -1)
            x = x.astype(jnp.int64 if x.dtype.itemsize == 8 else jnp.int32)
        return jnp.where(jnp.isin(x, jnp.asarray(excluded)), -1, x)
    elif not is_host_numpy(x):  # no check (CuPy, array-api-strict's devices): NaN, as for JAX
        xp = namespace(timestep=x)
        x = _signed(x, xp)
        hit = functools.reduce(operator.or_, (x == row for row in excluded))
        return xp.where(hit, xp.full_like(x, -1), x)
    return x


def _check_excluded_block(block: np.ndarray, excluded: tuple[int, ...], message: str) -> np.ndarray:
    if block.size and np.isin(block, excluded).any():
        raise ValueError(message)
    return block


def take_rows(table: Array, indices: Array, xp: Namespace) -> Array:
    """`table[indices]` along axis 0 for checked, non-negative integer indices of any shape
    (flattened): torch's `index_select` directly, where array-api-compat's `take` adds three
    kernels to wrap negative indices (one launch each, per GPU step).

    Parameters
    ----------
    table : array
        At least one dimension.
    indices : array
        Integers in [0, table.shape[0]), already checked where they can be read (NumPy, Dask)
        or on the device (torch). Elsewhere (JAX under jit, torch.func.vmap, CuPy,
        array-api-strict's devices other than its CPU) unchecked: one out of range, a
        negative one included, gathers NaN.
    xp : namespace

    Returns
    -------
    array
        Shape (indices.size, *table.shape[1:]).

    Examples
    --------
    >>> import numpy as np
    >>> import array_api_compat.numpy as xp
    >>> take_rows(np.arange(6).reshape(3, 2), np.asarray(2), xp).tolist()
    [[4, 5]]
    """
    flat = xp.reshape(indices, (-1,))
    if array_api_compat.is_torch_array(table) and _torch_device_op(flat):
        torch = sys.modules["torch"]
        if flat.dtype not in (torch.int64, torch.int32):  # what index_select takes
            flat = flat.to(torch.int64)
        return torch.index_select(table, 0, flat)
    if array_api_compat.is_jax_array(flat):  # unread under jit: out of range gathers NaN, but
        flat = xp.where(flat < 0, table.shape[0], flat)  # take wraps a negative index
    elif not (is_host_numpy(flat) or is_lazy(flat) or _checked_on_host(flat)):
        return _take_or_nan(table, flat, xp)
    return xp.take(table, flat, axis=0)


def _checked_on_host(x: Array) -> bool:
    """Whether `host_integers` reads x (array-api-strict's CPU, MindSpore's CPU), so that its
    values were checked there: `_take_or_nan`'s five more operations a step are not needed."""
    return _on_mindspore_cpu(x) or _on_strict_cpu(x)


def _take_or_nan(table: Array, flat: Array, xp: Namespace) -> Array:
    """`take` of indices no check has read (CuPy, array-api-strict's devices other than its
    CPU, ...), with NaN rows for those outside [0, len(table)), where CuPy's take wraps them
    to another row and array-api-strict's raises from inside NumPy."""
    flat = _signed(flat, xp)
    valid = (flat >= 0) & (flat < table.shape[0])
    rows = xp.take(table, xp.where(valid, flat, xp.zeros_like(flat)), axis=0)
    valid = xp.reshape(valid, (-1, *([1] * (table.ndim - 1))))
    return xp.where(valid, rows, xp.full_like(rows, float("nan")))


def _signed(x: Array, xp: Namespace) -> Array:
    """Integer indices in a signed dtype that holds -1 and every table row (an unsigned or
    narrow one cannot compare with them): int32 or int64 as they are, unsigned 32/64-bit in
    int64, the rest in int32 (not int64: devices without 64-bit types, array-api-strict's
    `no_x64`, have no int64 to cast to)."""
    if x.dtype in (xp.int32, xp.int64):
        return x
    return xp.astype(x, xp.int64 if x.dtype in (xp.uint32, xp.uint64) else xp.int32)


def _check_block(block: np.ndarray, size: int, message: str) -> np.ndarray:
    if block.size and not (int(block.min()) >= 0 and int(block.max()) < size):
        raise ValueError(f"{message}: got {block.min()}..{block.max()}")
    return block


def materialize(x: Array) -> Array:
    """Evaluate a lazy (Dask) array once per loop step, so later reads do not replay the
    whole loop's graph; any other array is returned as it is.

    Parameters
    ----------
    x : array

    Returns
    -------
    array

    Examples
    --------
    >>> import numpy as np
    >>> x = np.zeros(1)
    >>> materialize(x) is x
    True
    """
    if array_api_compat.is_dask_array(x):
        return x.persist()  # type: ignore[no-untyped-call]
    return x


# per kind, array type, then dtype (one dict per library: torch.compile compares only torch
# dtypes)
_DTYPE_KINDS: dict[tuple[str, type], dict[Any, bool]] = {}


def is_real_floating(xp: Namespace, x: Array) -> bool:
    """Whether x's dtype is real floating (cached per array type and dtype).

    Parameters
    ----------
    xp : namespace
    x : array

    Returns
    -------
    bool

    Examples
    --------
    >>> import numpy as np
    >>> import array_api_compat.numpy as xp
    >>> is_real_floating(xp, np.zeros(1)), is_real_floating(xp, np.zeros(1, dtype=int))
    (True, False)
    """
    return is_kind(xp, x, "real floating")


def is_kind(xp: Namespace, x: Array, kind: str) -> bool:
    """`xp.isdtype(x.dtype, kind)`, cached per array type and dtype.

    Parameters
    ----------
    xp : namespace
    x : array
    kind : str
        A kind of `isdtype`: "real floating", "integral", ...

    Returns
    -------
    bool

    Examples
    --------
    >>> import numpy as np
    >>> import array_api_compat.numpy as xp
    >>> is_kind(xp, np.zeros(1, dtype=int), "integral")
    True
    """
    known = _DTYPE_KINDS.setdefault((kind, type(x)), {})
    try:
        return known[x.dtype]
    except (KeyError, TypeError):  # new dtype, or an unhashable one
        answer = bool(xp.isdtype(x.dtype, kind))
    with contextlib.suppress(TypeError):
        known[x.dtype] = answer
    return answer


def work_dtype(xp: Namespace, dtype: Any) -> Any:
    """The dtype the arithmetic runs in: half-precision inputs are computed in float32.

    Parameters
    ----------
    xp : namespace
    dtype : dtype

    Returns
    -------
    dtype

    Examples
    --------
    >>> import numpy as np
    >>> import array_api_compat.numpy as xp
    >>> work_dtype(xp, xp.float16)
    <class 'numpy.float32'>
    """
    return xp.float32 if xp.finfo(dtype).bits < 32 else dtype


def to_work_dtype(xp: Namespace, first: Array, *rest: Array | None) -> list[Array | None]:
    """Cast to the working dtype of `first` (float32 for half precision, else its own).

    Parameters
    ----------
    xp : namespace
    first : array
    *rest : array or None

    Returns
    -------
    list of array or None

    Examples
    --------
    >>> import numpy as np
    >>> import array_api_compat.numpy as xp
    >>> [a.dtype for a in to_work_dtype(xp, np.zeros(1, np.float16), np.zeros(1))]
    [dtype('float32'), dtype('float32')]
    """
    dtype = work_dtype(xp, first.dtype)
    return [a if a is None or a.dtype == dtype else xp.astype(a, dtype) for a in (first, *rest)]


def cast(xp: Namespace, x: Array, dtype: Any) -> Array:
    """`x` in `dtype`, without a copy when it already is.

    Parameters
    ----------
    xp : namespace
    x : array
    dtype : dtype

    Returns
    -------
    array

    Examples
    --------
    >>> import numpy as np
    >>> import array_api_compat.numpy as xp
    >>> x = np.zeros(1)
    >>> cast(xp, x, xp.float64) is x
    True
    """
    return x if x.dtype == dtype else xp.astype(x, dtype)


def exact_scalars(xp: Namespace, values: S, like: Array) -> S:
    """Host floats (a tuple or NamedTuple; other items pass through) as operands that lose
    nothing in arithmetic with `like`.

    The array API converts a Python float to the array's dtype, so the floats are returned as
    they are, except for a float64 `like` of a library that rounds Python floats to float32
    instead (its namespace says so with `rounds_python_floats = True`: MindSpore): then 0-d
    arrays of like's dtype on its device, made without reading anything back.

    Parameters
    ----------
    xp : namespace
        The namespace of `like`.
    values : tuple
        Host floats (a coefficient row); items that are not floats pass through.
    like : array
        The array the values will be combined with.

    Returns
    -------
    tuple
        Of the same type as `values` (a NamedTuple stays one).

    Examples
    --------
    >>> import numpy as np
    >>> exact_scalars(HOST_XP, (0.5, 2), np.zeros(1))  # NumPy keeps float64 operands exact
    (0.5, 2)
    """
    if not getattr(xp, "rounds_python_floats", False) or like.dtype != xp.float64:
        return values
    where = device(like)
    items = [
        xp.asarray(v, dtype=like.dtype, device=where) if isinstance(v, float) else v for v in values
    ]
    return values._make(items) if hasattr(values, "_make") else type(values)(items)


def traced_bounds(xp: Namespace, like: Array, *bounds: float) -> tuple[Any, ...]:
    """Host-float bounds for `xp.clip` of `like`: the floats themselves, or 0-d arrays of
    like's dtype on its device while torch.compile traces.

    There a config float that changed between calls of the compiled function is symbolic, and
    array-api-compat's torch clip runs `math.isnan` on scalar bounds, which Dynamo cannot
    trace under fullgraph; array bounds take torch.clamp's tensor form (the same values). The
    eager path keeps its floats: no array is made per step.

    Parameters
    ----------
    xp : namespace
        The namespace of `like`.
    like : array
        The array to be clipped.
    *bounds : float
        The bounds (host or, under torch.compile, symbolic floats).

    Returns
    -------
    tuple
        One bound per argument.

    Examples
    --------
    >>> import numpy as np
    >>> traced_bounds(HOST_XP, np.zeros(1), -1.0, 1.0)  # not tracing: the floats as given
    (-1.0, 1.0)
    """
    if not compiling():
        return bounds
    where = device(like)
    return tuple(xp.asarray(b, dtype=like.dtype, device=where) for b in bounds)


def from_host(values: np.ndarray, xp: Namespace, *, device: Any, dtype: Any) -> Array:
    """Move a host float64 table into `xp` on `device`, converted to `dtype` on the way.

    The cast happens on the host, so no float64 array is ever created on the device
    (array-api-strict's `no_float64` device and Apple MPS have none): float32/float64 through a
    host copy in that dtype, other dtypes (half precision) through Python floats.

    Parameters
    ----------
    values : numpy.ndarray
    xp : namespace
    device : object
        Keyword-only.
    dtype : dtype
        Keyword-only.

    Returns
    -------
    array

    Examples
    --------
    >>> import numpy as np
    >>> import array_api_compat.numpy as xp
    >>> from_host(np.ones(2), xp, device="cpu", dtype=xp.float32).dtype
    dtype('float32')
    """
    for host_dtype in (np.float32, np.float64):
        if dtype == getattr(xp, host_dtype.__name__):
            return xp.asarray(values.astype(host_dtype), dtype=dtype, device=device)
    return xp.asarray(values.tolist(), dtype=dtype, device=device)


def to_host(x: Any, dtype: Any = np.float64, *, name: str = "the array") -> np.ndarray:
    """A NumPy copy of configuration data (tables, sigma lists, timesteps) given as an array
    of any library or a sequence: an explicit host read, never made on the step path.

    Parameters
    ----------
    x : array or sequence
    dtype : numpy dtype, default float64
    name : str, default "the array"
        The caller's name for `x`, in the error for an array whose values the host cannot
        read.

    Returns
    -------
    numpy.ndarray

    Raises
    ------
    ValueError
        `x` is on a device whose values the host cannot read (torch's meta device, which
        holds shapes but no values; an array-api-strict device other than its CPU).

    Examples
    --------
    >>> to_host([1, 2]).dtype
    dtype('float64')
    >>> import torch
    >>> to_host(torch.zeros(2, device="meta"), name="alphas_cumprod")
    Traceback (most recent call last):
    ...
    ValueError: alphas_cumprod is on device 'meta', whose values the host cannot read (...
    """
    given = x
    try:
        if hasattr(x, "detach"):  # torch: leave autograd and the device
            x = x.detach().cpu()
            if str(x.dtype) == "torch.bfloat16":  # NumPy has no bfloat16: widen exactly
                x = x.float()
        elif type(x).__module__.partition(".")[0] == "cupy":  # (not any `get`: a pandas Series')
            x = x.get()
        return np.asarray(x, dtype=dtype)
    except (NotImplementedError, RuntimeError) as e:  # (bad values raise TypeError, ValueError)
        where = str(getattr(given, "device", "cpu"))
        if where == "cpu":  # (a library's own failure, not its device's)
            raise
        raise ValueError(
            f"{name} is on device {where!r}, whose values the host cannot read ({e}): pass "
            "it as a list, a NumPy array or an array on the CPU"
        ) from None


def broadcast_to_sample(coefficient: Array, ndim: int, xp: Namespace) -> Array:
    """Reshape per-sample coefficients of shape (B,) to (B, 1, ..., 1) for a sample of `ndim`.

    Parameters
    ----------
    coefficient : array
    ndim : int
    xp : namespace

    Returns
    -------
    array

    Examples
    --------
    >>> import numpy as np
    >>> import array_api_compat.numpy as xp
    >>> broadcast_to_sample(np.ones(2), 4, xp).shape
    (2, 1, 1, 1)
    """
    if coefficient.ndim == 0 or ndim <= 1:
        return coefficient
    return xp.reshape(coefficient, (coefficient.shape[0],) + (1,) * (ndim - 1))


_REGISTRY: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()
_UIDS = itertools.count()


def register(obj: Any) -> int:
    """A process-unique integer for a host object (plans, schedules), so that `host_constant`
    functions can take it as a plain int; `registered(uid)` returns the object while alive.

    Parameters
    ----------
    obj : object

    Returns
    -------
    int

    Examples
    --------
    >>> class Thing: pass
    >>> thing = Thing()
    >>> registered(register(thing)) is thing
    True
    """
    uid = next(_UIDS)
    _REGISTRY[uid] = obj
    return uid


def registered(uid: int) -> Any:
    """The object `register` gave `uid` to.

    Parameters
    ----------
    uid : int

    Returns
    -------
    object

    Raises
    ------
    KeyError
        The object is gone (weakly held).

    Examples
    --------
    >>> import ddim_core as dc
    >>> plan = dc.make_plan(dc.DDIMConfig(), 10)
    >>> registered(plan.uid) is plan
    True
    """
    return _REGISTRY[uid]


@dataclasses.dataclass(frozen=True, eq=False)
class Registered:
    """Base of frozen host-data classes (Schedule, Plan): a process-unique `uid`, registered on
    construction, through which `host_constant` functions reach the object.

    Examples
    --------
    >>> import ddim_core as dc
    >>> isinstance(dc.make_plan(dc.DDIMConfig(), 10), Registered)
    True
    """

    uid: int = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "uid", register(self))

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Unpickled or copied: a uid of its own. The pickled one belongs to another object (in
        # another process, whatever that process registered under that number).
        self.__dict__.update(state)
        object.__setattr__(self, "uid", register(self))


def host_constant(fn: Callable[..., R]) -> Callable[..., R]:
    """Mark a host-only function (Python and NumPy on host data, no array arguments) so that
    torch.compile runs it eagerly while tracing and keeps its result as a constant, instead of
    tracing its NumPy code into the graph. This sets the marker that
    `torch.compiler.assume_constant_result` sets, without importing torch. jax.jit needs
    nothing: it only traces array operations.

    Parameters
    ----------
    fn : callable

    Returns
    -------
    callable
        `fn` itself, marked.

    Examples
    --------
    >>> @host_constant
    ... def answer() -> int:
    ...     return 42
    >>> answer()
    42
    """
    fn._dynamo_marked_constant = True  # type: ignore[attr-defined]
    return fn


def compiling() -> bool:
    """True while torch.compile traces (torch already imported by the caller's arrays).

    Returns
    -------
    bool

    Examples
    --------
    >>> compiling()
    False
    """
    # Looked up per call: a getter bound to a module global on the first call would, where
    # that call comes inside torch.compile's first trace, leave the global's None as a guard
    # that fails at the next call (the whole compiled loop compiled twice)
    torch = sys.modules.get("torch")
    return torch is not None and bool(torch.compiler.is_compiling())


def device_cache(fn: Callable[..., R], maxsize: int = 256) -> Callable[..., R]:
    """Cache device arrays built from host data, per (namespace, device, dtype, ...) arguments.

    A result built while JAX traces (jit, scan) or torch.compile compiles is returned but not
    kept: cached, it would leak a tracer into later calls. A device object that is not hashable
    (CuPy's) is keyed by its type and integer `id`; other unhashable arguments skip the cache.

    Parameters
    ----------
    fn : callable
    maxsize : int, default 256

    Returns
    -------
    callable

    Examples
    --------
    >>> calls = []
    >>> @device_cache
    ... def table(n):
    ...     calls.append(n)
    ...     return [0] * n
    >>> table(3) is table(3), calls
    (True, [3])
    """
    cache: dict[Any, R] = {}

    @functools.wraps(fn)
    def cached(*args: Any) -> R:
        if compiling():  # nothing is kept while tracing; torch < 2.13 cannot trace the lookup
            return fn(*args)
        key: Any = args
        try:
            return cache[key]
        except KeyError:
            pass
        except TypeError:
            key = _device_key(args)
            if key is None:
                return fn(*args)
            if key in cache:
                return cache[key]
        result = fn(*args)
        if len(cache) < maxsize and not _tracing(result):
            cache[key] = result
        return result

    return cached


def _device_key(args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """`args` with each unhashable device object (CuPy's `Device` defines `==` but no hash)
    replaced by (type, id); None where another argument is unhashable."""
    key = []
    for a in args:
        try:
            hash(a)
        except TypeError:
            index = getattr(a, "id", None)
            if type(index) is not int:
                return None
            a = (type(a), index)
        key.append(a)
    return tuple(key)


def uncommitted(x: Array) -> bool:
    """True for a concrete JAX array that is not committed to a device (made without
    ``device=``, as ``jnp.ones`` or ``jax.random.normal`` make it); jax.jit takes committed
    and uncommitted arguments as different signatures. Nothing is imported here.

    Parameters
    ----------
    x : array

    Returns
    -------
    bool
        False for other libraries' arrays and for JAX tracers.

    Examples
    --------
    >>> import numpy as np
    >>> uncommitted(np.zeros(1))
    False
    """
    jax = sys.modules.get("jax")
    if jax is None or not isinstance(x, jax.Array) or isinstance(x, jax.core.Tracer):
        return False
    return not x.committed


def register_pytree(
    cls: type, flatten: Callable[[Any], Any], unflatten: Callable[[Any, Any], Any]
) -> bool:
    """Make `cls` a JAX pytree node, once, if jax is imported (never importing it): call it at
    import and wherever a `cls` is made, so one made after jax's import is registered before
    jax.jit can see it (once registered, a set lookup). A registration does not cover
    subclasses: each class registers itself.

    Parameters
    ----------
    cls : type
        The class.
    flatten, unflatten : callable
        ``jax.tree_util.register_pytree_node``'s: ``flatten(obj) -> (leaves, aux)`` and
        ``unflatten(aux, leaves) -> obj``.

    Returns
    -------
    bool
        Whether `cls` is registered (False: jax is not imported yet).

    Examples
    --------
    >>> class Pair(tuple):
    ...     pass
    >>> def flatten(p):
    ...     return tuple(p), None
    >>> register_pytree(Pair, flatten, lambda aux, leaves: Pair(leaves)) in (True, False)
    True
    """
    if cls in _PYTREES:
        return True
    jax = sys.modules.get("jax")
    if jax is None or not hasattr(jax, "tree_util"):  # (jax still importing)
        return False
    with _PYTREE_LOCK:
        if cls not in _PYTREES:
            jax.tree_util.register_pytree_node(cls, flatten, unflatten)
            _PYTREES.add(cls)
    return True


_PYTREES: set[type] = set()  # the classes register_pytree has made JAX pytree nodes
_PYTREE_LOCK = threading.Lock()


def made_dtype(xp: Namespace, dtype: Any) -> Any:
    """The dtype `xp` makes of a request for `dtype`: JAX without x64 makes float32 of float64
    (warning), and `jax_enable_x64` can be switched at any time, so a cache of arrays keys on
    this, not on the dtype asked for. Nothing is imported here.

    Parameters
    ----------
    xp : namespace
    dtype : dtype of `xp`

    Returns
    -------
    dtype
        `dtype` itself for other libraries.

    Examples
    --------
    >>> import numpy as np
    >>> import array_api_compat.numpy as xp
    >>> made_dtype(xp, xp.float64) is xp.float64
    True
    """
    jax = sys.modules.get("jax")
    if jax is None or not array_api_compat.is_jax_namespace(xp):
        return dtype
    return jax.dtypes.canonicalize_dtype(dtype)


def jax_traced(x: Array) -> bool:
    """True for an array that jax.jit (or lax.scan, ...) is tracing: it has no value to read
    on the host. Nothing is imported here.

    Parameters
    ----------
    x : array

    Returns
    -------
    bool

    Examples
    --------
    >>> import numpy as np
    >>> jax_traced(np.zeros(1))
    False
    """
    jax = sys.modules.get("jax")
    return jax is not None and isinstance(x, jax.core.Tracer)


def is_lazy(x: Array) -> bool:
    """True for a Dask array: its values exist only once its graph is computed.

    Parameters
    ----------
    x : array

    Returns
    -------
    bool

    Examples
    --------
    >>> import numpy as np
    >>> is_lazy(np.zeros(1))
    False
    """
    return bool(array_api_compat.is_dask_array(x))


def _tracing(result: Any) -> bool:
    """True while a JAX trace or a torch.compile trace builds `result` (framework already
    imported by the caller's arrays: nothing is imported here)."""
    first = result[0] if isinstance(result, tuple) else result
    return jax_traced(first) or compiling()


@device_cache  # uploaded once per device, not at every step
def _torch_integers(values: tuple[int, ...], device: Any) -> Array:
    return sys.modules["torch"].tensor(values, device=device)
