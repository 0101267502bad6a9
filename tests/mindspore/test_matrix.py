"""The main suite's backend-matrix tests, run unchanged with `backend` = MindSpore (CPU).

Each test builds its references in NumPy float64 and runs only the function under test on
MindSpore tensors (conftest.MindSporeBackend). test_schedule_tables_in_any_namespace asks
array-api-compat for the namespace, which does not know MindSpore: its MindSpore form is in
test_backend.py.
"""

from __future__ import annotations

from test_sampling import test_backends_agree_with_numpy
from test_steps import (
    test_add_noise_and_velocity,
    test_inverse_step_matches_reference,
    test_outputs_keep_device,
    test_per_sample_timesteps_gather_rows,
    test_step_matches_reference,
    test_zero_d_timestep_array_equals_int,
)

__all__ = [
    "test_add_noise_and_velocity",
    "test_backends_agree_with_numpy",
    "test_inverse_step_matches_reference",
    "test_outputs_keep_device",
    "test_per_sample_timesteps_gather_rows",
    "test_step_matches_reference",
    "test_zero_d_timestep_array_equals_int",
]
