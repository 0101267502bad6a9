"""Shared test helpers: the backend matrix, tolerances, the reference path, to-NumPy.

Each Backend makes arrays from NumPy float64 references and reads results back, so that only
the function under test runs on the backend ("backend isolation"). torch's `meta` device has no
values: any host read raises, which proves the code never syncs; its results are checked for
shape, dtype and device only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest


@dataclasses.dataclass(frozen=True)
class Backend:
    name: str
    module: str
    device: str | None = None

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

    def to_numpy(self, x: Any) -> np.ndarray:
        """Values as a NumPy float64 array (the reference dtype)."""
        if self.module == "torch":
            return x.detach().to("cpu", dtype=self.lib.float64).numpy()
        if self.module == "dask.array":
            return np.asarray(x.compute(), dtype=np.float64)
        if self.module == "array_api_strict":
            return np.asarray(x.to_device(self.lib.Device()), dtype=np.float64)
        if self.module == "cupy":
            return np.asarray(x.get(), dtype=np.float64)
        return np.asarray(x, dtype=np.float64)

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


BACKENDS = [
    Backend("numpy", "numpy"),
    Backend("array_api_strict", "array_api_strict"),
    Backend("array_api_strict:device1", "array_api_strict", "device1"),
    Backend("array_api_strict:no_float64", "array_api_strict", "no_float64"),
    Backend("torch", "torch"),
    Backend("torch:meta", "torch", "meta"),
    Backend("jax", "jax"),
    Backend("dask", "dask.array"),
    Backend("cupy", "cupy"),
]


def backend_params() -> list[Any]:
    out = []
    for b in BACKENDS:
        marks = []
        if b.module == "cupy" and not _gpu_available():
            marks.append(pytest.mark.skip(reason="cupy needs a CUDA GPU"))
        out.append(pytest.param(b, id=b.name, marks=marks))
    return out


TOLERANCE: dict[str, float] = {
    "float64": 1e-12,
    "float32": 1e-5,
    "float16": 2e-3,
    "bfloat16": 2e-2,
}


def assert_close(
    backend: Backend, actual: Any, expected: np.ndarray, dtype: str, *, scale: float = 1.0
) -> None:
    """|actual - expected| <= tol * scale * (1 + |expected|), elementwise; meta: metadata only."""
    assert tuple(actual.shape) == expected.shape
    if not backend.has_values:
        assert str(backend.device_of(actual)) == "meta"
        return
    got = backend.to_numpy(actual)
    tol = TOLERANCE[dtype] * scale
    err = np.abs(got - expected) / (1.0 + np.abs(expected))
    assert np.all(np.isfinite(got)), "non-finite values"
    assert err.max() <= tol, f"max relative error {err.max():.3g} > {tol:.3g}"


def make_rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


@contextlib.contextmanager
def reference_path() -> Iterator[None]:
    """Run ddim_core's reference array-API step: the fused-kernel plugins blocked."""
    from ddim_core import plugins

    saved = os.environ.get(plugins.BLOCK_ENV)
    os.environ[plugins.BLOCK_ENV] = ",".join(
        filter(None, [saved, "numba", "torch-fused", "cupy-fused"])
    )
    plugins.manager.cache_clear()
    try:
        yield
    finally:
        if saved is None:
            del os.environ[plugins.BLOCK_ENV]
        else:
            os.environ[plugins.BLOCK_ENV] = saved
        plugins.manager.cache_clear()
