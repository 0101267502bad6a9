"""Parity with the installed diffusers (0.42): tables, timesteps, step, add_noise, get_velocity
(the latter two also through the ddim_diffusers adapter). Fixtures: tests/parity.py.

Tolerances:
- float64: both sides use diffusers' float32 tables cast to float64 (the step maths is compared,
  not the tables): max |ours - diffusers| <= 1e-10.
- float32: both sides use diffusers' float32 tables, diffusers computing in float32 and ours
  casting its float64 coefficients to float32 where they meet the sample:
  |ours - diffusers| <= 1e-5 * (1 + |diffusers|), elementwise.
  The tables themselves are compared in test_tables_match_to_float32_precision. Step outputs
  from independent tables differ by more than 1e-5 near t = 0: diffusers' float32 alpha_bar
  carries up to ~3e-4 relative error in 1 - alpha_bar there (alpha_bar ~ 0.9998), amplified by
  1 / sqrt(1 - alpha_bar) for sample prediction; ours is exact to float64 (see test_steps).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from helpers import TOLERANCE, rel

import ddim_core as dc
from ddim_core.testing import reference

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
import ddim_diffusers as dd  # noqa: E402
from parity import (  # noqa: E402
    SCHEDULES,
    SHAPE,
    STEPS,
    assert_parity,
    cases,
    diffusers_config,
    diffusers_scheduler,
    plan_on_their_table,
    share_tables,
)


def ref_inverse(plan: dc.Plan, out: np.ndarray, t: int, x: np.ndarray):
    """The float64 reference of an inverse step, as a torch tensor (diffusers' float64 maths)."""
    return torch.from_numpy(
        reference.inverse_step(plan, out.astype(np.float64), t, x.astype(np.float64))[0]
    )


@pytest.mark.parametrize("precision", ["float64", "float32"])
@pytest.mark.parametrize("config", list(cases()))
def test_step_parity(config: dc.DDIMConfig, precision: str) -> None:
    float64 = precision == "float64"
    dtype = np.float64 if float64 else np.float32
    scheduler = diffusers_scheduler(config, float64)
    exact = diffusers_scheduler(config, True)
    plan = plan_on_their_table(config, scheduler)
    assert list(plan.timesteps) == scheduler.timesteps.tolist()
    rng = np.random.default_rng(0)
    for t in plan.timesteps:
        x, out, noise = (rng.standard_normal(SHAPE).astype(dtype) for _ in range(3))
        for eta, clipped in ((0.0, False), (0.5, True), (1.0, False)):
            ours = dc.step(plan, out, t, x, eta=eta, noise=noise, use_clipped_model_output=clipped)
            args = [torch.from_numpy(a) for a in (out, x, noise)]

            def run(s, o, x_t, z, eta=eta, clipped=clipped, t=t):
                return s.step(
                    o, t, x_t, eta=eta, use_clipped_model_output=clipped, variance_noise=z
                )

            theirs = run(scheduler, *args)
            theirs64 = None if float64 else run(exact, *(a.double() for a in args))
            for name in ("prev_sample", "pred_original_sample"):
                assert_parity(
                    getattr(ours, name),
                    getattr(theirs, name),
                    None if float64 else getattr(theirs64, name),
                )


@pytest.mark.parametrize("precision", ["float64", "float32"])
@pytest.mark.parametrize("pred", ["epsilon", "sample"])
def test_thresholding_at_ratio_zero_steps_like_diffusers(pred: str, precision: str) -> None:
    """dynamic_thresholding_ratio=0 (s from the smallest |x_0| of each sample, clamped to
    [1, sample_max_value]) was refused, ratios had to be in (0, 1]; diffusers takes it."""
    float64 = precision == "float64"
    dtype = np.float64 if float64 else np.float32
    config = dc.DDIMConfig(
        thresholding=True,
        dynamic_thresholding_ratio=0.0,
        sample_max_value=1.5,
        prediction_type=pred,
        prev_timestep="stride",
    )
    scheduler = diffusers_scheduler(config, float64)
    exact = diffusers_scheduler(config, True)
    plan = plan_on_their_table(config, scheduler)
    rng = np.random.default_rng(0)
    for t in plan.timesteps:
        x, out = (3.0 * rng.standard_normal(SHAPE).astype(dtype) for _ in range(2))
        if pred == "sample":  # every |x_0| > 1: the quantile 0 sets s, not the clamp to 1
            out = np.sign(out) * (1.2 + 0.1 * np.abs(out))
        ours = dc.step(plan, out, t, x)
        args = [torch.from_numpy(a) for a in (out, x)]
        theirs = scheduler.step(args[0], t, args[1])
        theirs64 = None if float64 else exact.step(args[0].double(), t, args[1].double())
        for name in ("prev_sample", "pred_original_sample"):
            assert_parity(
                getattr(ours, name),
                getattr(theirs, name),
                None if float64 else getattr(theirs64, name),
            )


@pytest.mark.parametrize("precision", ["float64", "float32"])
@pytest.mark.parametrize("sched", list(SCHEDULES))
@pytest.mark.parametrize("spacing", ["leading", "trailing"])
@pytest.mark.parametrize("pred", ["epsilon", "sample", "v_prediction"])
def test_inverse_step_parity(sched: str, spacing: str, pred: str, precision: str) -> None:
    float64 = precision == "float64"
    dtype = np.float64 if float64 else np.float32
    config = dc.DDIMConfig(
        **SCHEDULES[sched],
        timestep_spacing=spacing,
        prediction_type=pred,
        set_alpha_to_one=False,
        clip_sample=False,
        prev_timestep="stride",
    )
    inv = diffusers.DDIMInverseScheduler(
        **{
            k: v
            for k, v in diffusers_config(config).items()
            if k not in ("thresholding", "dynamic_thresholding_ratio", "sample_max_value")
        }
    )
    inv.set_timesteps(STEPS)
    plan = dc.make_plan(config, STEPS) if pred != "epsilon" or sched != "zero_snr" else None
    if plan is None:
        pytest.skip("zero-SNR epsilon plans are rejected")
    if float64:
        inv.alphas_cumprod = inv.alphas_cumprod.double()
        inv.initial_alpha_cumprod = inv.initial_alpha_cumprod.double()
    sched_ = dc.Schedule.from_alphas_cumprod(inv.alphas_cumprod.numpy(), set_alpha_to_one=False)
    plan = dc.Plan(plan.config, sched_, plan.timesteps, plan.prev_timesteps)
    assert list(plan.inverse_timesteps) == inv.timesteps.tolist()
    rng = np.random.default_rng(1)
    for t in plan.inverse_timesteps:
        x, out = (rng.standard_normal(SHAPE).astype(dtype) for _ in range(2))
        ours = dc.inverse_step(plan, out, t, x)
        theirs = inv.step(torch.from_numpy(out), t, torch.from_numpy(x))
        theirs64 = None if float64 else ref_inverse(plan, out, t, x)
        assert_parity(ours.prev_sample, theirs.prev_sample, theirs64)


@pytest.mark.parametrize("sched", list(SCHEDULES))
def test_tables_match_to_float32_precision(sched: str) -> None:
    """Ours (float64) against diffusers' float32 tables, within the rounding bound of theirs.

    diffusers builds alpha_bar as a T-term float32 cumulative product, whose error bound is
    T * u relative (u = 2^-24; 6e-5 for T = 1000); zero-SNR betas are 1 - alpha_bar[t] /
    alpha_bar[t-1] of such values, so their absolute error is bounded by 2 T u (1 - beta).
    Measured maxima: alpha_bar 3.6e-7 (linear) to 3.8e-5 (zero SNR) relative; betas 1.1e-7
    relative (linear) to 7.1e-6 absolute (zero SNR).
    """
    config = dc.DDIMConfig(**SCHEDULES[sched])
    theirs = diffusers.DDIMScheduler(**diffusers_config(config))
    ours = dc.schedule(config)
    u, T = 2.0**-24, config.num_train_timesteps
    ab, ab32 = ours.alphas_cumprod, theirs.alphas_cumprod.double().numpy()
    assert np.all(np.abs(ab - ab32) <= T * u * ab32 + u)
    b, b32 = ours.betas, theirs.betas.double().numpy()
    assert np.all(np.abs(b - b32) <= 2 * T * u * (1 - b32) + 2 * u * b32)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("offset", [0, 1])
def test_timesteps_match_for_every_step_count(spacing: str, offset: int) -> None:
    config = dc.DDIMConfig(timestep_spacing=spacing, steps_offset=offset)
    scheduler = diffusers.DDIMScheduler(**diffusers_config(config))
    differing = []
    for n in range(1, config.num_train_timesteps + 1):
        try:
            ours = dc.spaced_timesteps(config, n)
        except ValueError:
            assert offset and spacing == "leading"  # offset pushes t past T - 1
            continue
        scheduler.set_timesteps(n)
        theirs = scheduler.timesteps.tolist()
        if list(ours) != theirs:
            differing.append(n)
            # diffusers' float arange gives n + 1 trailing timesteps, the last -1
            assert spacing == "trailing" and theirs[:-1] == list(ours) and theirs[-1] == -1
    if spacing == "trailing":
        assert len(differing) == 62
    else:
        assert not differing


@pytest.mark.parametrize("precision", ["float64", "float32"])
@pytest.mark.parametrize("sched", list(SCHEDULES))
def test_add_noise_and_velocity_parity(sched: str, precision: str) -> None:
    """The core's functions on diffusers' table, and the ddim_diffusers adapter's methods on
    torch tensors: on diffusers' table in float64, on its own (exact) table in float32, as a
    user gets it."""
    float64 = precision == "float64"
    dtype = np.float64 if float64 else np.float32
    config = dc.DDIMConfig(**SCHEDULES[sched])
    scheduler = diffusers.DDIMScheduler(**diffusers_config(config))
    schedule = dc.Schedule.from_alphas_cumprod(scheduler.alphas_cumprod.numpy())
    rng = np.random.default_rng(2)
    ts = np.array([0, 1, 10, 500, 999])
    x0, noise = (rng.standard_normal((len(ts), 3, 8, 8)).astype(dtype) for _ in range(2))
    args = torch.from_numpy(x0), torch.from_numpy(noise), torch.from_numpy(ts)
    exact = diffusers.DDIMScheduler(**diffusers_config(config))
    exact.alphas_cumprod = exact.alphas_cumprod.double()
    args64 = args[0].double(), args[1].double(), args[2]
    adapter = dd.DDIMScheduler(**diffusers_config(config))
    if float64:
        share_tables(adapter, diffusers.DDIMScheduler(**diffusers_config(config)))
    for ours_fn, name in ((dc.add_noise, "add_noise"), (dc.get_velocity, "get_velocity")):
        ours = ours_fn(schedule, x0, noise, ts)
        theirs = getattr(scheduler, name)(*args)
        assert_parity(ours, theirs, None if float64 else getattr(exact, name)(*args64))
        mine = getattr(adapter, name)(*args)
        assert isinstance(mine, torch.Tensor) and mine.dtype == args[0].dtype
        if float64:
            assert_parity(mine, theirs)
        else:
            assert rel(mine, theirs) <= TOLERANCE["float32"]


def test_config_round_trips_through_diffusers(tmp_path) -> None:
    config = dc.DDIMConfig(
        **SCHEDULES["zero_snr"],
        timestep_spacing="trailing",
        prediction_type="v_prediction",
        steps_offset=1,
    )
    theirs = diffusers.DDIMScheduler.from_config(diffusers_config(config))
    theirs.save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # _class_name and _diffusers_version are not "unknown"
        back = dc.DDIMConfig.from_file(tmp_path / "scheduler_config.json")
    assert back == config
    config.to_json(tmp_path / "ours.json")
    again = diffusers.DDIMScheduler.from_config(
        diffusers.DDIMScheduler.load_config(tmp_path / "ours.json")
    )
    assert dc.DDIMConfig.from_dict({**again.config, "prev_timestep": "plan"}) == config
