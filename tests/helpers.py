"""The one helpers module of the tests: the backend matrix (`BACKENDS`, with its skip/xfail marks),
tolerances, relative error, to-NumPy and the reference path.

Each Backend makes arrays from NumPy float64 references and `to_numpy` reads results back, so
that only the function under test runs on the backend ("backend isolation"). torch's `meta`
device has no values: any host read raises, which proves the code never syncs; `assert_close`
checks its results for shape and device only, and every test that runs on it runs the same
computation on the backends with values, where the values are compared.

The parity fixtures against diffusers and k-diffusion live in tests/parity.py; the independent
NumPy reference of DDIM in tests/reference.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import os
import sys
from collections.abc import Collection, Iterator
from typing import Any

import numpy as np
import pytest


@dataclasses.dataclass(frozen=True)
class Backend:
    """An array library (module), optionally a device of it, and the pytest marks (skip, xfail)
    that every test parametrized over it carries."""

    name: str
    module: str
    device: str | None = None
    marks: tuple[Any, ...] = dataclasses.field(default=(), compare=False)

    def __str__(self) -> str:
        return self.name

    @property
    def lib(self) -> Any:
        return pytest.importorskip(self.module)

    @property
    def has_values(self) -> bool:
        return self.device != "meta"

    def supports(self, dtype: str) -> bool:
        if dtype == "bfloat16":
            return self.module in ("torch", "jax")
        if dtype == "float64":
            return self.device != "no_float64"
        if dtype == "float16":
            return self.module != "array_api_strict"  # the standard has no float16
        return True

    def _dtype(self, dtype: str) -> Any:
        if self.module == "jax":
            return getattr(self.lib.numpy, dtype)
        return getattr(self.lib, dtype)

    def array(self, values: Any, dtype: str = "float64") -> Any:
        """A backend array holding `values` (NumPy float64 or int64) converted to `dtype`."""
        values = np.asarray(values)
        if not self.supports(dtype):
            pytest.skip(f"{self.name} has no {dtype}")
        lib = self.lib
        if self.module == "torch":
            t = lib.from_numpy(values.copy())
            return t.to(device=self.device or "cpu", dtype=self._dtype(dtype))
        if self.module == "jax":
            host = values.astype(np.float64 if dtype == "bfloat16" else dtype)
            return lib.numpy.asarray(host, dtype=self._dtype(dtype))
        if self.module == "dask.array":
            chunks = (1, *values.shape[1:]) if values.ndim else ()
            return lib.from_array(values.astype(dtype), chunks=chunks)
        if self.module == "array_api_strict":
            device = lib.Device(self.device) if self.device else None
            return lib.asarray(values.tolist(), dtype=self._dtype(dtype), device=device)
        if self.module == "cupy":
            return lib.asarray(values.astype(dtype))
        return values.astype(dtype)

    def int_array(self, values: Any) -> Any:
        return self.array(np.asarray(values, dtype=np.int64), "int64")

    def device_of(self, x: Any) -> Any:
        import array_api_compat

        return array_api_compat.device(x)


def _gpu_available() -> bool:
    if importlib.util.find_spec("cupy") is None:
        return False
    try:
        import cupy

        return bool(cupy.cuda.runtime.getDeviceCount())
    except Exception:
        return False


def _torch_cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


NEEDS_GPU = pytest.mark.skipif(not _gpu_available(), reason="cupy needs a CUDA GPU")
NEEDS_TORCH_CUDA = pytest.mark.skipif(not _torch_cuda_available(), reason="no CUDA for torch")

BACKENDS = [
    Backend("numpy", "numpy"),
    Backend("array_api_strict", "array_api_strict"),
    Backend("array_api_strict:device1", "array_api_strict", "device1"),
    Backend("array_api_strict:no_float64", "array_api_strict", "no_float64"),
    Backend("torch", "torch"),
    Backend("torch:meta", "torch", "meta"),
    Backend("torch:cuda", "torch", "cuda", marks=(NEEDS_TORCH_CUDA,)),
    Backend("jax", "jax"),
    Backend("dask", "dask.array"),
    Backend("cupy", "cupy", marks=(NEEDS_GPU,)),
]


def backend_params(*, module: str | None = None) -> list[Any]:
    """BACKENDS (or those of one library) as pytest params carrying their marks."""
    return [
        pytest.param(b, id=b.name, marks=b.marks)
        for b in BACKENDS
        if module is None or b.module == module
    ]


def runnable(*, dtype: str = "float64", exclude: Collection[str] = ()) -> list[Backend]:
    """The BACKENDS to draw from with Hypothesis' `st.sampled_from`, which cannot skip or xfail
    a single example: those whose library imports here, that carry no skip/xfail mark that
    applies here, that hold values (not torch:meta) and support `dtype`, minus `exclude`
    (names)."""
    out = []
    for b in BACKENDS:
        if b.name in exclude or not b.has_values or not b.supports(dtype):
            continue
        if any(_applies(mark) for mark in b.marks):
            continue
        try:
            importlib.import_module(b.module)
        except ImportError:
            continue
        out.append(b)
    return out


def _applies(mark: Any) -> bool:
    if mark.name in ("skip", "xfail"):
        return not mark.args or bool(mark.args[0])
    if mark.name == "skipif":
        return bool(mark.args[0])
    return False


# --- values ----------------------------------------------------------------------------------

TOLERANCE: dict[str, float] = {
    "float64": 1e-12,
    "float32": 1e-5,
    "float16": 2e-3,
    "bfloat16": 2e-2,
}


def to_numpy(x: Any, dtype: Any = np.float64) -> np.ndarray:
    """The values of an array of any backend (NumPy, torch incl. autograd and GPU tensors, JAX,
    Dask, CuPy, array-api-strict on any device) as a NumPy array in `dtype`: float64, the
    reference dtype, unless given; None keeps the array's dtype (torch's bfloat16, which NumPy
    lacks, becomes float32). torch's meta tensors have no values: reading one raises."""
    import array_api_compat as compat

    if compat.is_torch_array(x):
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        x = x.resolve_conj().numpy()
    elif compat.is_dask_array(x):
        x = x.compute()
    elif compat.is_cupy_array(x):
        x = x.get()
    elif type(x).__module__.startswith("array_api_strict"):
        strict = sys.modules["array_api_strict"]
        x = x.to_device(strict.Device())
    out = np.asarray(x)
    return out if dtype is None else out.astype(dtype)


def rel(ours: Any, theirs: Any) -> float:
    """The largest relative difference max |ours - theirs| / (1 + |theirs|), elementwise, of two
    arrays of any backend (read with `to_numpy`, in float64) of the same shape. NaN when either
    holds a NaN, so that `rel(...) <= limit` fails."""
    a, b = to_numpy(ours), to_numpy(theirs)
    assert a.shape == b.shape, f"shapes differ: {a.shape} and {b.shape}"
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / (1.0 + np.abs(b))))


def assert_close(
    backend: Backend, actual: Any, expected: np.ndarray, dtype: str, *, scale: float = 1.0
) -> None:
    """rel(actual, expected) <= TOLERANCE[dtype] * scale, and actual finite; on torch's meta
    device (no values) the shape and device only."""
    assert tuple(actual.shape) == np.shape(expected)
    if not backend.has_values:
        assert str(backend.device_of(actual)) == "meta"
        return
    got = to_numpy(actual)
    tol = TOLERANCE[dtype] * scale
    assert np.all(np.isfinite(got)), "non-finite values"
    err = rel(got, expected)
    assert err <= tol, f"max relative error {err:.3g} > {tol:.3g}"


def make_rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --- the reference path ----------------------------------------------------------------------

FUSED_PLUGINS = ("numba", "torch-fused", "cupy-fused")


@contextlib.contextmanager
def reference_path() -> Iterator[None]:
    """Run ddim_core's reference array-API step: the fused-kernel plugins blocked (through the
    public DDIM_CORE_BLOCK_PLUGINS switch, on a fresh plugin manager), then restored."""
    from ddim_core import plugins

    saved = os.environ.get(plugins.BLOCK_ENV)
    os.environ[plugins.BLOCK_ENV] = ",".join(filter(None, [saved, *FUSED_PLUGINS]))
    plugins.manager.cache_clear()
    try:
        yield
    finally:
        if saved is None:
            del os.environ[plugins.BLOCK_ENV]
        else:
            os.environ[plugins.BLOCK_ENV] = saved
        plugins.manager.cache_clear()
