"""Hypothesis properties of the step maths across configs, timesteps and backends."""

from __future__ import annotations

import numpy as np
from helpers import Backend, runnable, to_numpy
from hypothesis import given
from hypothesis import strategies as st

import ddim_core as dc
from ddim_core.testing import reference as ref
from ddim_core.testing import strategies as dst

configs = dst.configs(
    "beta_schedule",
    "timestep_spacing",
    "prediction_type",
    "set_alpha_to_one",
    "prev_timestep",
    clip_sample=False,
)


def _draw(data: st.DataObject, config: dc.DDIMConfig) -> tuple[dc.Plan, int]:
    n = data.draw(st.integers(1, 200), label="steps")
    plan = dc.make_plan(config, n)
    t = data.draw(dst.timesteps(plan), label="t")
    return plan, t


@given(config=configs, data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_inverse_step_undoes_step(config: dc.DDIMConfig, data: st.DataObject, seed: int) -> None:
    """With eta = 0, no clipping and the same epsilon output, inversion returns x.

    (Only for epsilon prediction is eps_pred the model output itself, independent of the
    sample the step starts from, so that the two maps are exact inverses.)
    """
    plan, t = _draw(data, config.replace(prediction_type="epsilon"))
    rng = np.random.default_rng(seed)
    for dtype, tol in ((np.float64, 1e-9), (np.float32, 2e-3)):
        x, eps = (rng.standard_normal((2, 8)).astype(dtype) for _ in range(2))
        x_prev = dc.step(plan, eps, t, x).prev_sample
        back = dc.inverse_step(plan, eps, t, x_prev).prev_sample
        ab = plan.schedule.alpha_bar(t)
        scale = 1.0 / np.sqrt(ab)  # x0 = (x - sqrt(1-ab) eps) / sqrt(ab) amplifies rounding
        assert back.dtype == dtype
        assert np.abs(back - x).max() <= tol * scale * (1 + np.abs(x).max())


BACKENDS = runnable()  # helpers.BACKENDS that run here and hold values


@given(
    config=configs,
    data=st.data(),
    seed=st.integers(0, 2**32 - 1),
    eta=st.sampled_from([0.0, 0.3, 1.0]),
    backend=st.sampled_from(BACKENDS),
)
def test_every_backend_agrees_with_numpy(
    config: dc.DDIMConfig, data: st.DataObject, seed: int, eta: float, backend: Backend
) -> None:
    plan, t = _draw(data, config)
    rng = np.random.default_rng(seed)
    x, out, noise = (rng.standard_normal((3, 2, 4)) for _ in range(3))
    expected = ref.step(plan, out, t, x, eta=eta, noise=noise)
    got = dc.step(
        plan, backend.array(out), t, backend.array(x), eta=eta, noise=backend.array(noise)
    )
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(to_numpy(g), e, rtol=1e-10, atol=1e-10)
