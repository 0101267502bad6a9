"""Parity with the installed diffusers (0.42): tables, timesteps, step, add_noise, get_velocity.

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

import itertools
import warnings

import numpy as np
import pytest

import ddim_core as dc

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

SCHEDULES = {
    "linear": {},
    "scaled_linear": {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
    "squaredcos_cap_v2": {"beta_schedule": "squaredcos_cap_v2"},
    "zero_snr": {
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "rescale_betas_zero_snr": True,
    },
}
PROCESSING = {
    "none": {"clip_sample": False},
    "clip": {"clip_sample": True},
    "clip-2": {"clip_sample": True, "clip_sample_range": 2.0},
    "threshold": {"thresholding": True, "sample_max_value": 1.5, "clip_sample": False},
}
SHAPE = (2, 3, 8, 8)
STEPS = 10


def ref_inverse(plan: dc.Plan, out: np.ndarray, t: int, x: np.ndarray):
    """The float64 reference of an inverse step, as a torch tensor (diffusers' float64 maths)."""
    import reference

    return torch.from_numpy(
        reference.inverse_step(plan, out.astype(np.float64), t, x.astype(np.float64))[0]
    )


def diffusers_config(config: dc.DDIMConfig) -> dict:
    out = config.to_dict()
    del out["prev_timestep"]
    return out


def cases():
    for sched, spacing, pred, proc, one, offset in itertools.product(
        SCHEDULES,
        ("leading", "trailing", "linspace"),
        ("epsilon", "sample", "v_prediction"),
        PROCESSING,
        (True, False),
        (0, 1),
    ):
        if sched == "zero_snr" and pred == "epsilon" and spacing != "leading":
            continue  # alpha_bar = 0 at the first step: rejected (tested in test_errors)
        yield pytest.param(
            dc.DDIMConfig(
                **SCHEDULES[sched],
                **PROCESSING[proc],
                timestep_spacing=spacing,
                prediction_type=pred,
                set_alpha_to_one=one,
                steps_offset=offset,
                prev_timestep="stride",
            ),
            id=f"{sched}-{spacing}-{pred}-{proc}-one{int(one)}-off{offset}",
        )


def _scheduler(config: dc.DDIMConfig, float64: bool):
    s = diffusers.DDIMScheduler(**diffusers_config(config))
    s.set_timesteps(STEPS)
    if float64:
        s.alphas_cumprod = s.alphas_cumprod.double()
        s.final_alpha_cumprod = s.final_alpha_cumprod.double()
    return s


def _plan(config: dc.DDIMConfig, scheduler) -> dc.Plan:
    """Our plan on diffusers' (float32-computed) alpha_bar table."""
    plan = dc.make_plan(config, STEPS)
    sched = dc.Schedule.from_alphas_cumprod(
        scheduler.alphas_cumprod.double().numpy(), set_alpha_to_one=config.set_alpha_to_one
    )
    assert sched.final_alpha_cumprod == float(scheduler.final_alpha_cumprod)
    return dc.Plan(plan.config, sched, plan.timesteps, plan.prev_timesteps)


def _check(ours, theirs, theirs64=None) -> None:
    """float64: |ours - theirs| <= 1e-10. float32 (theirs64 given): within float32 rounding.

    In float32, ours must be within 1e-5 * (1 + |.|) of diffusers' float64 result on the same
    table, and of diffusers' float32 result up to diffusers' own float32 error |d32 - d64|:
    diffusers computes 1 - alpha_bar_prev - sigma^2 in float32, which cancels near t = 0 (up to
    1.3e-4 relative error, and NaN at eta = 1 on zero-SNR first steps), where ours, with float64
    coefficients, stays at 5.8e-7 (figures: tests/parity_report.py).
    The first assertion is the strong one: ours is float32-accurate everywhere.
    """
    ours = np.asarray(ours, dtype=np.float64)
    d = theirs.double().numpy()
    if theirs64 is None:
        assert np.abs(ours - d).max() <= 1e-10, np.abs(ours - d).max()
        return
    d64 = theirs64.numpy()
    assert np.all(np.abs(ours - d64) <= 1e-5 * (1 + np.abs(d64)))
    # diffusers' float32 step returns NaN at eta = 1 on the first step of a zero-SNR trailing
    # schedule (sqrt of 1 - alpha_bar_prev - sigma^2 rounded below 0); ours is finite there.
    own_error = np.nan_to_num(np.abs(d - d64), nan=np.inf)
    d = np.nan_to_num(d)
    assert np.all(np.abs(ours - d) <= 1e-5 * (1 + np.abs(d)) + own_error)


@pytest.mark.parametrize("precision", ["float64", "float32"])
@pytest.mark.parametrize("config", list(cases()))
def test_step_parity(config: dc.DDIMConfig, precision: str) -> None:
    float64 = precision == "float64"
    dtype = np.float64 if float64 else np.float32
    scheduler = _scheduler(config, float64)
    exact = _scheduler(config, True)
    plan = _plan(config, scheduler)
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
                _check(
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
        _check(ours.prev_sample, theirs.prev_sample, theirs64)


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
    float64 = precision == "float64"
    dtype = np.float64 if float64 else np.float32
    config = dc.DDIMConfig(**SCHEDULES[sched])
    scheduler = diffusers.DDIMScheduler(**diffusers_config(config))
    schedule = dc.Schedule.from_alphas_cumprod(scheduler.alphas_cumprod.numpy())
    rng = np.random.default_rng(2)
    x0, noise = (rng.standard_normal((4, 3, 8, 8)).astype(dtype) for _ in range(2))
    ts = np.array([0, 1, 500, 999])
    args = torch.from_numpy(x0), torch.from_numpy(noise), torch.from_numpy(ts)
    exact = diffusers.DDIMScheduler(**diffusers_config(config))
    exact.alphas_cumprod = exact.alphas_cumprod.double()
    args64 = args[0].double(), args[1].double(), args[2]
    for ours_fn, name in ((dc.add_noise, "add_noise"), (dc.get_velocity, "get_velocity")):
        ours = ours_fn(schedule, x0, noise, ts)
        theirs = getattr(scheduler, name)(*args)
        _check(ours, theirs, None if float64 else getattr(exact, name)(*args64))


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_plan_rule_equals_stride_rule_where_they_agree(spacing: str) -> None:
    rng = np.random.default_rng(3)
    for n in (1, 7, 10, 50, 61, 250, 1000):
        plan = dc.make_plan(dc.DDIMConfig(timestep_spacing=spacing, clip_sample=False), n)
        stride = dc.make_plan(plan.config.replace(prev_timestep="stride"), n)
        assert plan.timesteps == stride.timesteps
        agree = [a == b for a, b in zip(plan.prev_timesteps, stride.prev_timesteps, strict=True)]
        if spacing == "leading":
            assert all(agree)
        for t, same in zip(plan.timesteps, agree, strict=True):
            if same:
                x, out = rng.standard_normal((2, 4))
                a, b = dc.step(plan, out, t, x), dc.step(stride, out, t, x)
                assert np.array_equal(a.prev_sample, b.prev_sample)


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
        back = dc.DDIMConfig.from_json(tmp_path / "scheduler_config.json")
    assert back == config
    config.to_json(tmp_path / "ours.json")
    again = diffusers.DDIMScheduler.from_config(
        diffusers.DDIMScheduler.load_config(tmp_path / "ours.json")
    )
    assert dc.DDIMConfig.from_dict({**again.config, "prev_timestep": "plan"}) == config
