"""The tests' helpers: ddim_core.testing's backend matrix, tolerances and assertions under the
names the tests use, and what concerns only ddim_core's own code paths (`reference_path`).

Each Backend makes arrays from NumPy float64 references and `to_numpy` reads results back, so
that only the function under test runs on the backend ("backend isolation"). torch's `meta`
device has no values: any host read raises, which proves the code never syncs; `assert_close`
checks its results for shape and device only, and every test that runs on it runs the same
computation on the backends with values, where the values are compared.

The NumPy float64 reference of DDIM is `ddim_core.testing.reference`, the Hypothesis
strategies `ddim_core.testing.strategies`; parity fixtures against diffusers and k-diffusion
live in tests/parity.py.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import numpy as np

import ddim_core as dc
from ddim_core.testing.assertions import TOLERANCE, assert_array_close, rel
from ddim_core.testing.backends import BACKENDS, Backend, runnable, to_numpy
from ddim_core.testing.pytest_plugin import backend_params

__all__ = [
    "BACKENDS",
    "SD",
    "TOLERANCE",
    "Backend",
    "assert_close",
    "backend_params",
    "make_rng",
    "reference_path",
    "rel",
    "run_on_jax_cpu_devices",
    "runnable",
    "to_numpy",
]

# Stable Diffusion's scheduler_config.json (SD 1.x / 2.x), as the inversion and reversible
# tests and tests/reversible_report.py take it
SD = dc.DDIMConfig(
    beta_schedule="scaled_linear",
    beta_start=0.00085,
    beta_end=0.012,
    steps_offset=1,
    set_alpha_to_one=False,
    clip_sample=False,
)


def assert_close(
    backend: Backend, actual: Any, expected: np.ndarray, dtype: str, *, scale: float = 1.0
) -> None:
    """rel(actual, expected) <= TOLERANCE[dtype] * scale, and actual finite; on torch's meta
    device (no values) the shape and device only."""
    if not backend.has_values:
        assert tuple(actual.shape) == np.shape(expected)
        assert str(backend.device_of(actual)) == "meta"
        return
    assert_array_close(actual, expected, dtype, scale=scale)


def make_rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


FUSED_PLUGINS = ("numba", "torch-fused", "cupy-fused")


@contextlib.contextmanager
def blocked(*names: str) -> Iterator[None]:
    """Plugins `names` blocked (besides those already blocked) through the public
    DDIM_CORE_BLOCK_PLUGINS switch, on a fresh plugin manager, then restored."""
    from ddim_core import plugins

    saved = os.environ.get(plugins.BLOCK_ENV)
    os.environ[plugins.BLOCK_ENV] = ",".join(filter(None, [saved, *names]))
    plugins.manager.cache_clear()
    try:
        yield
    finally:
        if saved is None:
            del os.environ[plugins.BLOCK_ENV]
        else:
            os.environ[plugins.BLOCK_ENV] = saved
        plugins.manager.cache_clear()


def reference_path() -> contextlib.AbstractContextManager[None]:
    """Run ddim_core's reference array-API step: the fused-kernel plugins blocked."""
    return blocked(*FUSED_PLUGINS)


def run_on_jax_cpu_devices(code: str, devices: int) -> None:
    """Run `code` (dedented) in a fresh Python on `devices` JAX CPU devices and assert that
    it exits 0 having printed only "ok" (its stderr's tail is the failure message). A fresh
    process, because XLA_FLAGS is read once, when jax starts."""
    flags = os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}"
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"},
        check=False,
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def assert_defines_every_name_of(ours: type, theirs: type) -> None:
    """`ours` subclasses `theirs` (a host library's scheduler, for pipelines' isinstance
    checks) and every name `theirs` defines itself (methods, properties, `order`,
    `_compatibles`, ...) is defined by a class before it in ours' MRO, so no attribute lookup
    reaches its scheduler code."""
    assert issubclass(ours, theirs) and isinstance(ours(), theirs)
    mro = ours.__mro__
    before = mro[: mro.index(theirs)]
    own = vars(theirs)
    assert {"__init__", "step", "set_timesteps", "order"} <= set(own)  # the listing is real
    missing = [name for name in own if not any(name in vars(cls) for cls in before)]
    assert not missing, missing
