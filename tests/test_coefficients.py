"""The coefficients module: tables against the paper's formulas, rows against tables, the fused
linear form derived from eq. (9) against the explicit formulas of ddim-core 0.1."""

from __future__ import annotations

import numpy as np
import pytest

import ddim_core as dc
from ddim_core import backends, coefficients
from ddim_core.coefficients import LinearRow, Row, StepKey

CONFIGS = [
    dc.DDIMConfig(),
    dc.DDIMConfig(
        prediction_type="v_prediction", rescale_betas_zero_snr=True, timestep_spacing="trailing"
    ),
    dc.DDIMConfig(prediction_type="sample", set_alpha_to_one=False, timestep_spacing="linspace"),
]


def _explicit_linear_form(c, prediction_type, clipped, use_clipped):
    """ddim-core 0.1's `kernels.linear_form`, written out: the formulas the derivation replaces."""
    sa, s1, sb, d, sigma = (np.asarray(v, dtype=np.float64) for v in c)
    one, zero = np.ones_like(sa), np.zeros_like(sa)
    with np.errstate(divide="ignore", invalid="ignore"):
        ax, am, ex, em = {
            "epsilon": (1.0 / sa, -s1 / sa, zero, one),
            "sample": (zero, one, 1.0 / s1, -sa / s1),
            "v_prediction": (sa, -s1, s1, sa),
        }[prediction_type]
        if clipped and use_clipped:
            k0, kx, km = sb - d * sa / s1, d / s1, zero
        elif clipped:
            k0, kx, km = sb, d * ex, d * em
        else:
            k0, kx, km = zero, sb * ax + d * ex, sb * am + d * em
    return np.stack(np.broadcast_arrays(ax, am, k0, kx, km, sigma), axis=1)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.prediction_type)
@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("clipped", [False, True])
def test_linear_form_is_the_explicit_one(config, eta, inverse, clipped) -> None:
    """Bit for bit where eq. (9)'s weights enter once; with use_clipped_model_output the
    derivation rounds d * (1 / s1) where 0.1 rounded d / s1: within 2 ulps of the terms."""
    key = StepKey(dc.make_plan(config, 20), 0.0 if inverse else eta, inverse)
    found = coefficients.table(key)
    usable = [t for t in range(found.values.shape[0]) if t not in found.invalid]
    for use_clipped in (False, True) if clipped and not inverse else (False,):
        explicit = _explicit_linear_form(
            found.values[usable].T, config.prediction_type, clipped, use_clipped
        )
        derived = np.array([coefficients.linear_row(key, t, clipped, use_clipped) for t in usable])
        if not use_clipped:
            assert np.array_equal(derived, explicit)
            continue
        # k0 = sb - d sa / s1 cancels: compare with the size of its terms
        sa, s1, sb, d = found.values[usable, :4].T
        scale = np.stack([np.abs(sb) + np.abs(d * sa / s1), np.abs(d / s1)], axis=1)
        assert np.all(np.abs(derived[:, 2:4] - explicit[:, 2:4]) <= 2 * np.spacing(scale))
        assert np.array_equal(derived[:, [0, 1, 4, 5]], explicit[:, [0, 1, 4, 5]])


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.prediction_type)
def test_table_is_the_paper(config) -> None:
    """Each Row against eq. (12) and (16) written from the paper, at the plan's t_prev."""
    plan = dc.make_plan(config, 13)
    for t in plan.timesteps[1:]:
        prev = plan.prev_timestep(t)
        a, b = plan.schedule.alpha_bar(t), plan.schedule.alpha_bar(prev)
        sigma = 0.5 * np.sqrt((1 - b) / (1 - a) * (1 - a / b))
        expected = Row(np.sqrt(a), np.sqrt(1 - a), np.sqrt(b), np.sqrt(1 - b - sigma**2), sigma)
        got = coefficients.row(StepKey(plan, 0.5, False), t)
        np.testing.assert_allclose(got, expected, rtol=1e-15, atol=0)
        inverse = coefficients.row(StepKey(plan, 0.0, True), t)
        assert inverse == Row(np.sqrt(b), np.sqrt(1 - b), np.sqrt(a), np.sqrt(1 - a), 0.0)


def test_row_gather_and_linear_row_agree() -> None:
    plan = dc.make_plan(dc.DDIMConfig(), 10)
    key = StepKey(plan, 1.0, False)
    rows = coefficients.gather(key, np.array(plan.timesteps), np.zeros((10, 3)), backends.HOST_XP)
    for k, t in enumerate(plan.timesteps):
        row = coefficients.row(key, t)
        assert isinstance(row, Row) and all(type(v) is float for v in row)
        assert tuple(float(col[k, 0]) for col in rows) == tuple(row)
        linear = coefficients.linear_row(key, t, False, False)
        assert isinstance(linear, LinearRow) and linear.noise == row.sigma


def test_unusable_rows_name_the_reason() -> None:
    zero_snr = dc.DDIMConfig(rescale_betas_zero_snr=True, timestep_spacing="trailing")
    v_plan = dc.make_plan(zero_snr.replace(prediction_type="v_prediction"), 10)
    eps_plan = dc.make_plan(zero_snr.replace(timestep_spacing="leading"), 10)  # starts at 900
    assert 999 in coefficients.table(StepKey(eps_plan, 0.0, False)).invalid
    assert 999 not in coefficients.table(StepKey(v_plan, 0.0, False)).invalid
    with pytest.raises(ValueError, match="zero terminal SNR"):
        coefficients.row(StepKey(eps_plan, 0.0, False), 999)
    with pytest.raises(ValueError, match="outside"):
        coefficients.row(StepKey(v_plan, 0.0, False), 1000)
    with pytest.raises(ValueError, match="use a smaller eta"):
        coefficients.row(StepKey(v_plan, 3.0, False), v_plan.timesteps[1])
