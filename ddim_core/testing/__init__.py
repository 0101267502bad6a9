"""Property-test numeric equivalence with exact DDIM: the toolkit behind `ddim-core check`.

    from ddim_core.testing import reference, assert_step_close
    from ddim_core.testing import strategies as dst       # needs Hypothesis (extra `testing`)

- `reference`: NumPy float64 DDIM written from the paper's equations: timesteps and plans,
  a step, an inverse step, whole loops (also k-diffusion's sigma form), and `ReferenceScheduler`
  / `ReferenceInverseScheduler` with diffusers' API.
- `assertions`: `assert_step_close`, `assert_inverse_step_close`, `assert_timesteps_equal`,
  `assert_array_close`; tolerances scale with the dtype and with the magnitude of the terms a
  step adds up, and a failure names the config, timestep, element and size of the error.
- `backends`: the backend matrix (`BACKENDS`: NumPy, array-api-strict and its devices, torch
  CPU / meta / CUDA, JAX, Dask, CuPy), `runnable()`, `to_numpy()`, `round_to()`.
- `strategies`: Hypothesis strategies for configs (valid and invalid), plans, timesteps, step
  inputs per backend, dtype and device, and Gaussian-mixture problems; `CI`, the bounded,
  derandomized settings.
- `pytest_plugin` (entry point `pytest11`): fixtures `backend`, `xp`, `device`,
  `reference_scheduler`, and the Hypothesis profiles `ddim-core-ci` / `ddim-core-dev`.
- `conformance`: the suite `ddim-core check module:attr` runs against a diffusers-style
  scheduler class, a diffusers-style inverse scheduler or a k-diffusion-style sampler.

Importing this package imports neither Hypothesis nor pytest nor any array framework: each
submodule is loaded on first use, and only `strategies` needs Hypothesis.
"""

from __future__ import annotations

import importlib
from typing import Any

_SUBMODULES = ("assertions", "backends", "conformance", "reference", "strategies", "targets")
_NAMES = {
    "TINY": "assertions",
    "TOLERANCE": "assertions",
    "assert_array_close": "assertions",
    "assert_inverse_step_close": "assertions",
    "assert_step_close": "assertions",
    "assert_timesteps_equal": "assertions",
    "rel": "assertions",
    "tolerance": "assertions",
    "BACKENDS": "backends",
    "Backend": "backends",
    "round_to": "backends",
    "runnable": "backends",
    "to_numpy": "backends",
    "ReferenceInverseScheduler": "reference",
    "ReferenceScheduler": "reference",
    "check": "conformance",
}

__all__ = sorted([*_SUBMODULES, *_NAMES])


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _NAMES:
        return getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
