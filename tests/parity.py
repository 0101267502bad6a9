"""Parity fixtures shared by the tests and reports against diffusers and k-diffusion
(test_parity_diffusers.py, test_diffusers_adapter.py, test_kdiffusion_adapter.py,
parity_report.py, kdiffusion_report.py): the config matrix, diffusers' schedulers on their own
tables, the parity check, and k-diffusion's wrapper around the analytic model.

torch, diffusers and k-diffusion are imported inside the functions that need them.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from helpers import TOLERANCE, to_numpy

import ddim_core as dc
from ddim_core.testing import reference

SCHEDULES = reference.SCHEDULES
PROCESSING: dict[str, dict[str, Any]] = {
    "none": {"clip_sample": False},
    "clip": {"clip_sample": True},
    "clip-2": {"clip_sample": True, "clip_sample_range": 2.0},
    "threshold": {"thresholding": True, "sample_max_value": 1.5, "clip_sample": False},
}
SHAPE = (2, 3, 8, 8)
STEPS = 10
FLOAT64_LIMIT = 1e-10  # |ours - diffusers| on the same float64 table


def diffusers_config(config: dc.DDIMConfig) -> dict[str, Any]:
    """The config as diffusers' keyword arguments (without ddim-core's `prev_timestep`)."""
    out = config.to_dict()
    del out["prev_timestep"]
    return out


def cases() -> Iterator[Any]:
    """Every schedule x spacing x prediction x processing x set_alpha_to_one x steps_offset,
    with diffusers' stride rule for t_prev, as pytest params."""
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


def diffusers_scheduler(config: dc.DDIMConfig, float64: bool) -> Any:
    """diffusers' DDIMScheduler set to STEPS; float64: its float32 tables cast to float64."""
    import diffusers

    s = diffusers.DDIMScheduler(**diffusers_config(config))
    s.set_timesteps(STEPS)
    if float64:
        s.alphas_cumprod = s.alphas_cumprod.double()
        s.final_alpha_cumprod = s.final_alpha_cumprod.double()
    return s


def plan_on_their_table(config: dc.DDIMConfig, scheduler: Any) -> dc.Plan:
    """Our plan on diffusers' (float32-computed) alpha_bar table."""
    plan = dc.make_plan(config, STEPS)
    sched = dc.Schedule.from_alphas_cumprod(
        scheduler.alphas_cumprod.double().numpy(), set_alpha_to_one=config.set_alpha_to_one
    )
    assert sched.final_alpha_cumprod == float(scheduler.final_alpha_cumprod)
    return dc.Plan(plan.config, sched, plan.timesteps, plan.prev_timesteps)


def share_tables(ours: Any, theirs: Any) -> None:
    """Both schedulers (diffusers API) on diffusers' float32 table cast to float64."""
    boundary = (
        "initial_alpha_cumprod"
        if hasattr(theirs, "initial_alpha_cumprod")
        else "final_alpha_cumprod"
    )
    theirs.alphas_cumprod = theirs.alphas_cumprod.double()
    setattr(theirs, boundary, getattr(theirs, boundary).double())
    ours.alphas_cumprod = theirs.alphas_cumprod
    setattr(ours, boundary, getattr(theirs, boundary))


def assert_parity(ours: Any, theirs: Any, theirs64: Any = None) -> None:
    """float64: |ours - theirs| <= 1e-10. float32 (theirs64 given): within float32 rounding.

    In float32, ours must be within 1e-5 * (1 + |.|) of diffusers' float64 result on the same
    table, and of diffusers' float32 result up to diffusers' own float32 error |d32 - d64|:
    diffusers computes 1 - alpha_bar_prev - sigma^2 in float32, which cancels near t = 0 (up to
    1.3e-4 relative error, and NaN at eta = 1 on zero-SNR first steps), where ours, with float64
    coefficients, stays at 5.8e-7 (figures: tests/parity_report.py).
    The first assertion is the strong one: ours is float32-accurate everywhere.
    """
    ours, d = to_numpy(ours), to_numpy(theirs)
    if theirs64 is None:
        assert np.abs(ours - d).max() <= FLOAT64_LIMIT, np.abs(ours - d).max()
        return
    tol = TOLERANCE["float32"]
    d64 = to_numpy(theirs64)
    assert np.all(np.abs(ours - d64) <= tol * (1 + np.abs(d64)))
    # diffusers' float32 step returns NaN at eta = 1 on the first step of a zero-SNR trailing
    # schedule (sqrt of 1 - alpha_bar_prev - sigma^2 rounded below 0); ours is finite there.
    own_error = np.nan_to_num(np.abs(d - d64), nan=np.inf)
    d = np.nan_to_num(d)
    assert np.all(np.abs(ours - d) <= tol * (1 + np.abs(d)) + own_error)


# --- k-diffusion -----------------------------------------------------------------------------

KD_CONFIG = dc.DDIMConfig(clip_sample=False)
KD_MEANS, KD_STDS = [[0.5] * 4, [-0.5] * 4], [0.4, 0.6]


def kdiffusion_denoiser(dtype: Any, table: Any = None) -> tuple[Any, dc.GaussianMixture, Any]:
    """k-diffusion's `DiscreteEpsDDPMDenoiser(..., quantize=True)` around the analytic epsilon
    model of a Gaussian mixture on the given alpha_bar table (default: KD_CONFIG's, in `dtype`);
    returns (denoiser, mixture, table)."""
    import kdiffusion_loader
    import torch

    _, external = kdiffusion_loader.load()
    if table is None:
        table = torch.from_numpy(dc.schedule(KD_CONFIG).alphas_cumprod).to(dtype)
    schedule = dc.Schedule.from_alphas_cumprod(table.double().numpy())
    gm = dc.GaussianMixture.create(KD_MEANS, KD_STDS, KD_CONFIG)
    gm = type(gm)(gm.means, gm.stds, gm.weights, schedule, "epsilon")
    return external.DiscreteEpsDDPMDenoiser(gm, table, quantize=True), gm, table


def kdiffusion_x_T(sigmas: Any, dtype: Any) -> Any:
    """A seeded (6, 4) starting latent at k-diffusion's scale sigmas[0]."""
    import torch

    return torch.randn(6, 4, generator=torch.Generator().manual_seed(0), dtype=dtype) * sigmas[0]
