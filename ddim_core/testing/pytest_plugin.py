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
import sys
from collections.abc import Callable
from typing import Any

import pytest

from .backends import BACKENDS, Backend


def backend_params(*, module: str | None = None) -> list[Any]:
    """BACKENDS (or those of one library) as pytest params, each marked to skip where it
    cannot run (library missing, no GPU).

    Parameters
    ----------
    module : str, optional
        Only the backends of this library (a `Backend.module`, e.g. "torch"). Default: all.

    Returns
    -------
    list of pytest.param
        One param per backend, its id the backend's name; a backend that requires a GPU is
        marked skipif, decided when this is called.

    Examples
    --------
    >>> [p.id for p in backend_params(module="array_api_strict")]
    ['array_api_strict', 'array_api_strict:device1', 'array_api_strict:no_float64']

    In a test module, for a test that takes its own backend argument:

    >>> from ddim_core.testing.backends import to_numpy
    >>> @pytest.mark.parametrize("b", backend_params(module="numpy"))
    ... def test_zeros(b):
    ...     assert to_numpy(b.array([0.0], "float32")).tolist() == [0.0]
    >>> test_zeros(BACKENDS[0])  # what pytest runs for the "numpy" param
    """
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
def pytest_configure(config: pytest.Config | None) -> None:
    """Register the Hypothesis profiles `ddim-core-ci` and `ddim-core-dev` (pytest calls this
    hook once, before collecting) where the run asks for a profile (`--hypothesis-profile`)
    or has imported Hypothesis already (a conftest); nothing else: a run that does not use
    Hypothesis does not import it (nor ddim_core's strategies) for them.

    Parameters
    ----------
    config : pytest.Config or None
        pytest's config: its `--hypothesis-profile` option is read (None: register).

    Examples
    --------
    >>> from hypothesis import settings
    >>> pytest_configure(None)
    >>> settings.get_profile("ddim-core-ci").max_examples
    30
    """
    if importlib.util.find_spec("hypothesis") is None:
        return
    asked = config is None or config.getoption("hypothesis_profile", None) is not None
    if not asked and "hypothesis" not in sys.modules:  # this plugin loads in every pytest run
        return
    from hypothesis import settings

    from .strategies import CI, DEV

    settings.register_profile("ddim-core-ci", CI)
    settings.register_profile("ddim-core-dev", DEV)


@pytest.fixture(params=[pytest.param(b, id=b.name) for b in BACKENDS])
def backend(request: pytest.FixtureRequest) -> Backend:
    """One backend of the matrix (skips where it cannot run: library missing, no GPU).

    Parameters
    ----------
    request : pytest.FixtureRequest
        pytest's request; its `param` is the backend (one of BACKENDS).

    Returns
    -------
    Backend
        The backend, when it can run here.

    Raises
    ------
    pytest.skip.Exception
        If it cannot (the library is missing, or the GPU it needs is absent): the test skips.

    Examples
    --------
    A test that takes `backend` runs once per backend of the matrix:

    >>> from ddim_core.testing.backends import to_numpy
    >>> def test_round_trip(backend):
    ...     assert to_numpy(backend.array([1.5], "float32")).tolist() == [1.5]
    >>> test_round_trip(BACKENDS[0])  # what pytest passes for the "numpy" param
    """
    b: Backend = request.param
    reason = b.unavailable()
    if reason is not None:
        pytest.skip(reason)
    return b


@pytest.fixture
def xp(backend: Backend) -> Any:
    """The array namespace of `backend` (array-API compatible: array-api-compat's wrapper for
    NumPy, torch, Dask, CuPy; the library itself for JAX and array-api-strict).

    Parameters
    ----------
    backend : Backend
        The `backend` fixture's value.

    Returns
    -------
    module
        The namespace its arrays belong to.

    Examples
    --------
    A test asks for `xp` and `device` to make arrays on each backend:

    >>> def test_sum(xp, device):
    ...     x = xp.asarray([1.0, 2.0], device=device)
    ...     assert float(xp.sum(x)) == 3.0
    >>> numpy = BACKENDS[0]  # what the fixtures give for the "numpy" backend:
    >>> xp.__wrapped__(numpy).__name__
    'array_api_compat.numpy'
    >>> test_sum(xp.__wrapped__(numpy), device.__wrapped__(numpy))
    """
    from ddim_core import backends

    return backends.namespace(x=backend.array([0.0], "float32"))


@pytest.fixture
def device(backend: Backend) -> Any:
    """The device `backend` makes its arrays on.

    Parameters
    ----------
    backend : Backend
        The `backend` fixture's value.

    Returns
    -------
    object
        The device of an array the backend makes (that library's device object).

    Examples
    --------
    >>> device.__wrapped__(BACKENDS[0])  # the "numpy" backend
    'cpu'
    """
    return backend.device_of(backend.array([0.0], "float32"))


@pytest.fixture
def reference_scheduler() -> Callable[..., Any]:
    """`reference_scheduler(**options)`: a `ReferenceScheduler` (diffusers' DDIMScheduler API,
    exact DDIM in NumPy float64); `reference_scheduler(inverse=True, ...)` the inverse one.

    Returns
    -------
    callable
        `make(inverse=False, **options)`: a new `ReferenceScheduler`, or with inverse=True a
        `ReferenceInverseScheduler`, constructed with `options` (DDIMConfig's fields).

    Examples
    --------
    >>> def test_trailing(reference_scheduler):
    ...     s = reference_scheduler(timestep_spacing="trailing")
    ...     s.set_timesteps(5)
    ...     assert s.timesteps.tolist() == [999, 799, 599, 399, 199]
    >>> test_trailing(reference_scheduler.__wrapped__())  # what pytest passes
    """
    from .reference import ReferenceInverseScheduler, ReferenceScheduler

    def make(inverse: bool = False, **options: Any) -> Any:
        cls = ReferenceInverseScheduler if inverse else ReferenceScheduler
        return cls(**options)

    return make
