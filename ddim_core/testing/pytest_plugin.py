"""pytest plugin of ddim-core (entry point `pytest11`, loaded wherever ddim-core is installed):

- `backend`: parametrized over the backend matrix (`backends.BACKENDS`): NumPy,
  array-api-strict (default device, `device1`, `no_float64`), torch (CPU, `meta`, CUDA), JAX,
  Dask, CuPy; a library that is not installed, or a GPU that is absent, skips.
- `xp`, `device`: the backend's array namespace and device, for `xp.asarray(..., device=device)`.
- `reference_scheduler`: a factory of `reference.ReferenceScheduler` (diffusers' API, NumPy
  float64 exact DDIM): `reference_scheduler(timestep_spacing="trailing")`.
- Hypothesis profiles `ddim-core-ci` (derandomized, 30 examples, no deadline) and
  `ddim-core-dev` (200 random examples): `pytest --hypothesis-profile=ddim-core-ci`.

Nothing here imports Hypothesis or an array library before a test asks for it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import pytest

from .backends import BACKENDS, Backend


def backend_params(*, module: str | None = None) -> list[Any]:
    """BACKENDS (or those of one library) as pytest params, each marked to skip where it
    cannot run (library missing, no GPU)."""
    params = []
    for b in BACKENDS:
        if module is not None and b.module != module:
            continue
        marks = []
        if b.requires is not None:  # decided now: a GPU does not come and go
            reason = b.unavailable()
            marks.append(pytest.mark.skipif(reason is not None, reason=reason or ""))
        params.append(pytest.param(b, id=b.name, marks=marks))
    return params


@pytest.hookimpl(tryfirst=True)  # before Hypothesis' plugin loads --hypothesis-profile
def pytest_configure(config: pytest.Config) -> None:
    if importlib.util.find_spec("hypothesis") is None:
        return
    from hypothesis import settings

    from .strategies import CI, DEV

    settings.register_profile("ddim-core-ci", CI)
    settings.register_profile("ddim-core-dev", DEV)


@pytest.fixture(params=[pytest.param(b, id=b.name) for b in BACKENDS])
def backend(request: pytest.FixtureRequest) -> Backend:
    """One backend of the matrix (skips where it cannot run: library missing, no GPU)."""
    b: Backend = request.param
    reason = b.unavailable()
    if reason is not None:
        pytest.skip(reason)
    return b


@pytest.fixture
def xp(backend: Backend) -> Any:
    """The array namespace of `backend` (array-API compatible: array-api-compat's wrapper for
    NumPy, torch, Dask, CuPy; the library itself for JAX and array-api-strict)."""
    from ddim_core import backends

    return backends.namespace(x=backend.array([0.0], "float32"))


@pytest.fixture
def device(backend: Backend) -> Any:
    """The device `backend` makes its arrays on."""
    return backend.device_of(backend.array([0.0], "float32"))


@pytest.fixture
def reference_scheduler() -> Callable[..., Any]:
    """`reference_scheduler(**options)`: a `ReferenceScheduler` (diffusers' DDIMScheduler API,
    exact DDIM in NumPy float64); `reference_scheduler(inverse=True, ...)` the inverse one."""
    from .reference import ReferenceInverseScheduler, ReferenceScheduler

    def make(inverse: bool = False, **options: Any) -> Any:
        cls = ReferenceInverseScheduler if inverse else ReferenceScheduler
        return cls(**options)

    return make
