"""The MindSpore test environment (`make test-mindspore`; pytest runs with
--confcutdir=tests/mindspore, so the main suite's conftest is not loaded).

`backend` here is MindSpore on the CPU: the main suite's backend-matrix tests, imported by
test_matrix.py, run against it unchanged. The main suite's helpers and reference modules are
imported from tests/. MindSpore runs synchronously here (see below).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import mindspore
import numpy as np
import pytest
from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: helpers, reference

# Synchronous execution: a failing kernel raises at its call, and on a small busy CPU it is
# far faster than MindSpore's asynchronous pipeline (test_async.py runs that mode too).
mindspore.runtime.launch_blocking()

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=30,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

DTYPES = {
    "float64": mindspore.float64,
    "float32": mindspore.float32,
    "float16": mindspore.float16,
    "bfloat16": mindspore.bfloat16,
    "int64": mindspore.int64,
}


class MindSporeBackend:
    """The main suite's Backend interface (tests/helpers.py) for MindSpore tensors."""

    name = module = "mindspore"
    device = None
    has_values = True

    def __str__(self) -> str:
        return self.name

    @property
    def lib(self) -> Any:
        return mindspore

    def supports(self, dtype: str) -> bool:
        return dtype in DTYPES

    def array(self, values: Any, dtype: str = "float64") -> Any:
        """A tensor holding `values` (NumPy float64 or int64) converted to `dtype`."""
        values = np.asarray(values)
        if dtype == "bfloat16":  # NumPy has no bfloat16: through float32
            return mindspore.tensor(values.astype(np.float32)).astype(mindspore.bfloat16)
        return mindspore.tensor(values.astype(dtype), dtype=DTYPES[dtype])

    def int_array(self, values: Any) -> Any:
        return self.array(np.asarray(values, dtype=np.int64), "int64")

    def to_numpy(self, x: Any) -> np.ndarray:
        """Values as NumPy float64 (a read: it also surfaces any asynchronous error)."""
        if x.dtype == mindspore.bfloat16:
            x = x.astype(mindspore.float32)
        return np.asarray(x.asnumpy(), dtype=np.float64)

    def device_of(self, x: Any) -> Any:
        return x.device


@pytest.fixture
def backend() -> MindSporeBackend:
    return MindSporeBackend()
