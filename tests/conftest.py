"""Hypothesis profiles and the backend fixture (the matrix itself: helpers.BACKENDS)."""

from __future__ import annotations

import importlib.util
import os

import pytest
from helpers import Backend, backend_params
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=30,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors],
)
settings.register_profile("dev", max_examples=200, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

if importlib.util.find_spec("jax") is not None:
    import jax

    jax.config.update("jax_enable_x64", True)


@pytest.fixture(params=backend_params())
def backend(request: pytest.FixtureRequest) -> Backend:
    b: Backend = request.param
    b.lib  # skips when the library is not installed
    return b
