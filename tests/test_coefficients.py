"""The coefficients module: tables against the paper's formulas, rows against tables, eq. (9)'s
weights against the textbook formulas, the fused form against the reference step."""

from __future__ import annotations

import numpy as np
import pytest

import ddim_core as dc
from ddim_core import backends, coefficients, kernels
from ddim_core.coefficients import FusedRow, Row, StepKey

CONFIGS = [
    dc.DDIMConfig(),
    dc.DDIMConfig(
        prediction_type="v_prediction", rescale_betas_zero_snr=True, timestep_spacing="trailing"
    ),
    dc.DDIMConfig(prediction_type="sample", set_alpha_to_one=False, timestep_spacing="linspace"),
]


def _textbook_x0_eps(x, m, sa, s1, prediction_type):
    """Eq. (9) as ddim-core 0.1 and diffusers write it."""
    if prediction_type == "epsilon":
        return (x - s1 * m) / sa, m
    if prediction_type == "sample":
        return m, (x - sa * m) / s1
    return sa * x - s1 * m, sa * m + s1 * x


def _apply_fused_row(c, x, m, clip, z):
    """FusedRow's docstring, term by term, in NumPy float64 (what the kernels compute)."""
    x0 = (c.x0_x * x - c.x0_m * m) / c.x0_div
    if clip is not None:
        x0 = np.clip(x0, -clip, clip)
    eps = (c.eps_x * x - c.eps_m * (x0 if c.eps_from_x0 else m)) / c.eps_div
    x_b = c.sqrt_ab_to * x0 + c.direction * eps
    return (x_b if z is None else x_b + c.sigma * z), x0


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_eq9_weights_are_the_textbook_formulas(prediction_type) -> None:
    """kernels.eq9 applied by kernels.affine equals eq. (9) as written, bit for bit."""
    rng = np.random.default_rng(0)
    x, m = rng.standard_normal((2, 1000)) * 3
    for ab in (1e-6, 0.3, 0.999):
        sa, s1 = float(np.sqrt(ab)), float(np.sqrt(1 - ab))
        got = kernels.predict_x0_eps(x, m, sa, s1, prediction_type)
        want = _textbook_x0_eps(x, m, sa, s1, prediction_type)
        assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.prediction_type)
@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("clip", [None, 1.5])
def test_fused_form_equals_the_reference_step(config, eta, inverse, clip) -> None:
    """The FusedRow, applied as its docstring says, equals kernels.ddim_update bit for bit."""
    config = config.replace(clip_sample=clip is not None, clip_sample_range=clip or 1.0)
    plan = dc.make_plan(config, 20)
    key = StepKey(plan, 0.0 if inverse else eta, inverse)
    found = coefficients.table(key)
    rng = np.random.default_rng(1)
    x, m, z = rng.standard_normal((3, 64)) * 2
    z = z if key.eta else None
    for t in [t for t in plan.timesteps if t not in found.invalid]:
        for use_clipped in (False, True) if clip and not inverse else (False,):
            row = coefficients.row(key, t)
            want = kernels.ddim_update(x, m, row, config, z, use_clipped, xp=backends.HOST_XP)
            got = _apply_fused_row(coefficients.fused_row(key, t, use_clipped), x, m, clip, z)
            assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True)), t


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


def test_row_gather_and_fused_row_agree() -> None:
    plan = dc.make_plan(dc.DDIMConfig(), 10)
    key = StepKey(plan, 1.0, False)
    rows = coefficients.gather(key, np.array(plan.timesteps), np.zeros((10, 3)), backends.HOST_XP)
    for k, t in enumerate(plan.timesteps):
        row = coefficients.row(key, t)
        assert isinstance(row, Row) and all(type(v) is float for v in row)
        assert tuple(float(col[k, 0]) for col in rows) == tuple(row)
        fused = coefficients.fused_row(key, t, False)
        assert isinstance(fused, FusedRow) and fused.sigma == row.sigma
        assert fused.sqrt_ab_to == row.sqrt_ab_to and fused.x0_div == row.sqrt_ab_from


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


def test_an_inverse_step_from_the_clean_level_names_that_level() -> None:
    """Inverting a sample-prediction model with set_alpha_to_one=True said "cannot step at
    timestep 0: alpha_bar = 1 there (the clean level)", where alpha_bar_0 = 0.9999: the level
    at 1 is t_prev = -1's, which the step leaves, and set_alpha_to_one=False moves it."""
    config = dc.DDIMConfig(prediction_type="sample")
    plan = dc.make_plan(config, 10)
    first = plan.inverse_timesteps[0]
    message = (
        rf"cannot step at timestep {first}: alpha_bar = 1 at t_prev = -1, the level the step up "
        r"to it leaves \(the clean level\), where prediction_type='sample' cannot recover the "
        r"noise .*; set_alpha_to_one=False makes that level alpha_bar_0 instead"
    )
    with pytest.raises(ValueError, match=message):
        dc.inverse_step(plan, np.zeros(2), first, np.zeros(2))
    fixed = dc.make_plan(config.replace(set_alpha_to_one=False), 10)
    assert np.isfinite(dc.inverse_step(fixed, np.ones(2), first, np.ones(2)).prev_sample).all()
    zero_snr = dc.make_plan(dc.DDIMConfig(rescale_betas_zero_snr=True), 10)  # forward: unchanged
    with pytest.raises(ValueError, match=r"cannot step at timestep 999: alpha_bar = 0 there"):
        coefficients.row(StepKey(zero_snr, 0.0, False), 999)
