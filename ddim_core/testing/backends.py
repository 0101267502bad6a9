"""The backend matrix: array libraries and devices a test runs on, each making arrays from NumPy
float64 references (`Backend.array`) and read back with `to_numpy`, so that only the function
under test runs on the backend ("backend isolation", as scipy tests).

torch's `meta` device has no values: any host read raises, which proves the code under test
never syncs; array-api-strict's `device1` and `no_float64` devices check device handling and
that no float64 array is made on a device without float64. Libraries are imported when a
backend is first used, never by importing this module.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import sys
from collections.abc import Collection
from typing import Any

import numpy as np

FLOAT_DTYPES = ("float64", "float32", "float16", "bfloat16")


class Unavailable(RuntimeError):
    """A backend (library, device or dtype) that cannot run here; under pytest a skip.

    Examples
    --------
    >>> raise Unavailable("cupy is not installed")
    Traceback (most recent call last):
    ...
    ddim_core.testing.backends.Unavailable: cupy is not installed
    """


def skip(reason: str) -> None:
    """pytest.skip under pytest (imported already), else raise Unavailable.

    Parameters
    ----------
    reason : str
        Why the test cannot run here.

    Raises
    ------
    Unavailable
        Outside pytest (under pytest, pytest's Skipped).

    Examples
    --------
    In a test or a strategy, where the backend cannot run (under pytest the test is
    skipped, elsewhere `Unavailable` says why)::

        if not cuda_available:
            skip("torch:cuda needs cuda")
    """
    pytest = sys.modules.get("pytest")
    if pytest is not None:
        pytest.skip(reason)
    raise Unavailable(reason)


@dataclasses.dataclass(frozen=True)
class Backend:
    """An array library (a module), optionally one of its devices, and what it needs to run
    beyond the library itself (`requires`: "cuda" for torch's CUDA device, "cupy-gpu").

    Examples
    --------
    >>> numpy = Backend("numpy", "numpy")
    >>> numpy.unavailable() is None, numpy.supports("bfloat16")
    (True, False)
    >>> numpy.array([1.0, 2.0], "float32")
    array([1., 2.], dtype=float32)
    """

    name: str
    module: str
    device: str | None = None
    requires: str | None = None

    def __str__(self) -> str:
        return self.name

    @property
    def lib(self) -> Any:
        """The library's module (skips, or raises Unavailable, when it is not installed)."""
        try:
            return importlib.import_module(self.module)
        except ImportError:
            skip(f"{self.module} is not installed")
            raise  # unreachable: skip() raises

    @property
    def has_values(self) -> bool:
        """False for torch's meta device, whose arrays have shapes but no values."""
        return self.device != "meta"

    def unavailable(self) -> str | None:
        """Why this backend cannot run here (library missing, no GPU), or None.

        Returns
        -------
        str or None
            The reason, or None when it runs here.
        """
        if importlib.util.find_spec(self.module.partition(".")[0]) is None:
            return f"{self.module} is not installed"
        if self.requires is not None and not _requirement_met(self.requires):
            return f"{self.name} needs {self.requires}"
        return None

    def supports(self, dtype: str) -> bool:
        """Whether arrays of `dtype` can be made here (bfloat16: torch and JAX; float16: not
        array-api-strict; float64: not on `no_float64`, and JAX only with x64 enabled).

        Parameters
        ----------
        dtype : str
            A floating dtype's name.

        Returns
        -------
        bool
            Whether this backend makes arrays of it.
        """
        if dtype == "bfloat16":
            return self.module in ("torch", "jax")
        if dtype == "float64":
            if self.module == "jax":
                return _jax_x64()
            return self.device != "no_float64"
        if dtype == "float16":
            return self.module != "array_api_strict"  # the standard has no float16
        return True

    def dtype(self, name: str) -> Any:
        """The library's dtype object called `name`.

        Parameters
        ----------
        name : str
            A dtype's name ("float32").

        Returns
        -------
        dtype
            The library's dtype object.
        """
        if self.module == "jax":
            return getattr(self.lib.numpy, name)
        return getattr(self.lib, name)

    def array(self, values: Any, dtype: str = "float64") -> Any:
        """A backend array holding `values` (NumPy float64 or int64) converted to `dtype`.

        Parameters
        ----------
        values : array_like
            The values, on the host.
        dtype : str
            The array's dtype's name.

        Returns
        -------
        array
            An array of this backend, on its device.
        """
        values = np.asarray(values)
        if not self.supports(dtype):
            skip(f"{self.name} has no {dtype}")
        lib = self.lib
        if self.module == "torch":
            t = lib.from_numpy(values.copy())
            return t.to(device=self.device or "cpu", dtype=self.dtype(dtype))
        if self.module == "jax":
            host = values.astype(np.float64 if dtype == "bfloat16" else dtype)
            return lib.numpy.asarray(host, dtype=self.dtype(dtype))
        if self.module == "dask.array":
            chunks = (1, *values.shape[1:]) if values.ndim else ()
            return lib.from_array(values.astype(dtype), chunks=chunks)
        if self.module == "array_api_strict":
            device = lib.Device(self.device) if self.device else None
            return lib.asarray(values.tolist(), dtype=self.dtype(dtype), device=device)
        if self.module in ("numpy", "cupy"):
            return lib.asarray(values.astype(dtype))
        # another library (e.g. MindSpore): its `tensor` or `asarray` of the NumPy values
        make = getattr(lib, "tensor", None) or lib.asarray
        return make(values.astype(dtype))

    def int_array(self, values: Any) -> Any:
        """An int64 backend array of `values`.

        Parameters
        ----------
        values : array_like
            Integer values, on the host.

        Returns
        -------
        array
            An int64 array of this backend, on its device.
        """
        return self.array(np.asarray(values, dtype=np.int64), "int64")

    def device_of(self, x: Any) -> Any:
        """The device of an array of this backend.

        Parameters
        ----------
        x : array
            An array of this backend.

        Returns
        -------
        device
            Its device, as the library names it.
        """
        from ddim_core import backends

        return backends.device(x)


BACKENDS = [
    Backend("numpy", "numpy"),
    Backend("array_api_strict", "array_api_strict"),
    Backend("array_api_strict:device1", "array_api_strict", "device1"),
    Backend("array_api_strict:no_float64", "array_api_strict", "no_float64"),
    Backend("torch", "torch"),
    Backend("torch:meta", "torch", "meta"),
    Backend("torch:cuda", "torch", "cuda", requires="cuda"),
    Backend("jax", "jax"),
    Backend("dask", "dask.array"),
    Backend("cupy", "cupy", requires="cupy-gpu"),
]


def backend(name: str) -> Backend:
    """The backend of the matrix called `name`, or a plain one for another library's module
    (e.g. "mindspore").

    Parameters
    ----------
    name : str
        A name from BACKENDS, or a library's module name.

    Returns
    -------
    Backend
        That backend.

    Examples
    --------
    >>> backend("torch:meta").device
    'meta'
    """
    for b in BACKENDS:
        if b.name == name:
            return b
    return Backend(name, name)


def runnable(
    *, dtype: str = "float64", exclude: Collection[str] = (), only: Collection[str] | None = None
) -> list[Backend]:
    """The BACKENDS to draw from with Hypothesis' `st.sampled_from` (which cannot skip a single
    example): those that run here, hold values (not torch:meta) and support `dtype`, minus
    `exclude` (names), among `only` (names) when given.

    Parameters
    ----------
    dtype : str
        The dtype the backends must support.
    exclude : collection of str
        Backend names to leave out.
    only : collection of str, optional
        Backend names to choose among.

    Returns
    -------
    list of Backend
        Those backends, in BACKENDS' order.

    Examples
    --------
    >>> [b.name for b in runnable(only=["numpy"])]
    ['numpy']
    """
    out = []
    for b in BACKENDS:
        if b.name in exclude or (only is not None and b.name not in only):
            continue
        if not b.has_values or b.unavailable() is not None:
            continue
        try:
            importlib.import_module(b.module)
        except ImportError:
            continue
        if b.supports(dtype):
            out.append(b)
    return out


@functools.cache
def _requirement_met(requirement: str) -> bool:
    try:
        if requirement == "cuda":
            import torch

            return bool(torch.cuda.is_available())
        if requirement == "cupy-gpu":
            import cupy

            return bool(cupy.cuda.runtime.getDeviceCount())
    except Exception:
        return False
    raise ValueError(f"unknown backend requirement {requirement!r}")


def _jax_x64() -> bool:
    jax = sys.modules.get("jax")
    if jax is None:
        return False  # JAX without x64 makes float32 of float64 requests
    return bool(jax.config.read("jax_enable_x64"))


# --- values ----------------------------------------------------------------------------------


def to_numpy(x: Any, dtype: Any = np.float64) -> np.ndarray:
    """The values of an array of any backend (NumPy, torch incl. autograd and GPU tensors, JAX,
    Dask, CuPy, array-api-strict on any device, MindSpore) as a NumPy array in `dtype`: float64,
    the reference dtype, unless given; None keeps the array's dtype (bfloat16, which NumPy
    lacks, becomes float32). torch's meta tensors have no values: reading one raises.

    Parameters
    ----------
    x : array
        An array of any backend.
    dtype : dtype or None
        The NumPy dtype of the result; None keeps the array's.

    Returns
    -------
    numpy.ndarray
        The values, on the host.

    Examples
    --------
    >>> import numpy as np
    >>> to_numpy(np.float32([0.5, 1.5]))
    array([0.5, 1.5])
    """
    module = type(x).__module__
    if module.startswith("torch"):
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        x = x.resolve_conj().numpy()
    elif module.startswith("dask"):
        x = x.compute()
    elif module.startswith("cupy"):
        x = x.get()
    elif module.startswith("array_api_strict"):
        strict = sys.modules["array_api_strict"]
        x = x.to_device(strict.Device())
    elif hasattr(x, "asnumpy"):  # MindSpore
        x = x.asnumpy()
    out = np.asarray(x)
    if dtype is None:
        return out.astype(np.float32) if "bfloat16" in str(out.dtype) else out
    return out.astype(dtype)


def round_to(values: Any, dtype: str) -> np.ndarray:
    """float64 `values` rounded to `dtype` and back to float64: what an array of that dtype
    holds, so that a reference computed from them does not count input rounding as error.

    Parameters
    ----------
    values : array_like
        float64 values.
    dtype : str
        A floating dtype's name (bfloat16 included).

    Returns
    -------
    numpy.ndarray
        The rounded values, as float64.

    Examples
    --------
    >>> round_to([0.1], "float16")
    array([0.09997559])
    """
    values = np.asarray(values, dtype=np.float64)
    if dtype == "bfloat16":
        try:
            import ml_dtypes
        except ImportError:
            import torch

            rounded: np.ndarray = torch.from_numpy(values).bfloat16().double().numpy()
            return rounded
        return np.asarray(values.astype(ml_dtypes.bfloat16), dtype=np.float64)
    return np.asarray(values.astype(dtype), dtype=np.float64)


def dtype_name(dtype: Any) -> str:
    """ "float32" for np.float32, torch.float32, jnp.float32, "float32", an array's dtype...

    Parameters
    ----------
    dtype : str, type or dtype
        Any library's dtype, scalar type or dtype name.

    Returns
    -------
    str
        Its lower-case name.

    Examples
    --------
    >>> import numpy as np
    >>> dtype_name(np.float32), dtype_name(np.dtype("float16")), dtype_name("bfloat16")
    ('float32', 'float16', 'bfloat16')
    """
    if isinstance(dtype, type):  # a scalar type: np.float32, jnp.float32
        dtype = np.dtype(dtype)
    name = str(getattr(dtype, "name", dtype)).rpartition(".")[2]
    return name.lower()  # MindSpore's Float32, BFloat16
