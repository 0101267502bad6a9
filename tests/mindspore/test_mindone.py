"""ddim_mindone against mindone.diffusers 0.5's DDIMScheduler and DDIMInverseScheduler.

Parity (mindone_report.py runs the comparisons; README.md and docs/mindspore.md quote its
figures, from benchmarks/results/mindspore.json, and test_figures_are_the_pages_figures
re-measures them):
- float32 within 1e-5 relative (both on their own float32 tables: mindone computes its table
  in float32 on the device, ddim_core in float64 on the host);
- float16 within a few ulps of mindone's float16 result;
- float64 on shared tables: both schedulers given the same float64 alphas_cumprod, <= 1e-10;
- eta > 0 with NumPy Generators of the same seed (mindone draws its noise from them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mindone_report
import mindspore
import numpy as np
import pytest
from ddim_mindone import DDIMInverseScheduler, DDIMScheduler, DDIMSchedulerOutput, register
from helpers import assert_defines_every_name_of
from mindone.diffusers import DDIMInverseScheduler as TheirInverse
from mindone.diffusers import DDIMScheduler as TheirScheduler
from mindone_report import CASES, SD, SHAPE, loop, model_outputs, pair, tensor

# --- parity ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("case", "eta"), mindone_report.ETA_CASES)
def test_float32_steps_agree_with_mindone(case: str, eta: float) -> None:
    assert mindone_report.float32_error(case, eta) <= 1e-5


def test_zero_terminal_snr_with_eta_1_stays_finite_where_mindone_gives_nan() -> None:
    """At eta = 1, 1 - abar_prev - sigma^2 is 0 in exact arithmetic; mindone's float32 rounds it
    below 0 and takes its square root (NaN from the first step); ddim_core clamps that rounding
    (coefficients.DIRECTION_ROUNDING)."""
    theirs, mine = pair(CASES["trailing-v-zero-snr"], 10)
    x_T = tensor(np.random.default_rng(1).standard_normal(SHAPE), mindspore.float32)
    outputs = model_outputs(10)
    a = loop(mine, x_T, outputs, mindspore.float32, eta=1.0, seed=5)
    b = loop(theirs, x_T, outputs, mindspore.float32, eta=1.0, seed=5)
    assert all(np.isfinite(v).all() for v in a)
    assert np.isnan(b[0]).any()


def test_eta_noise_is_drawn_in_the_samples_dtype_as_mindones() -> None:
    """A float16 model output on a float32 sample: mindone draws the eta noise in the sample's
    dtype (float32), diffusers in the model output's; ours takes mindone's, so the noise is not
    rounded to float16 on the way."""
    mine = DDIMScheduler(clip_sample=False)
    mine.set_timesteps(10)
    t = mine.timesteps[0]
    x = tensor(np.random.default_rng(1).standard_normal(SHAPE), mindspore.float32)
    output = (x * 0.1).astype(mindspore.float16)
    got = mine.step(output, t, x, eta=1.0, generator=np.random.default_rng(5))[0]
    noise = tensor(np.random.default_rng(5).standard_normal(SHAPE), mindspore.float32)
    expected = mine.step(output, t, x, eta=1.0, variance_noise=noise)[0]
    assert got.dtype == mindspore.float32
    assert np.array_equal(got.asnumpy(), expected.asnumpy())


@pytest.mark.parametrize("case", mindone_report.FLOAT16_CASES)
def test_float16_steps_are_within_a_few_ulps_of_mindone(case: str) -> None:
    """One step from the same float16 inputs: ddim_core computes in float32 and rounds once
    (within 1 ulp of the exact float64 result); mindone computes in float16 (a few ulps at
    the sample's scale from ours)."""
    own_ulps, scale_ulps = mindone_report.float16_ulps(case)
    assert own_ulps <= 1.0 and scale_ulps <= 4


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_float64_on_shared_tables_agrees_to_1e10(case: str, eta: float) -> None:
    assert mindone_report.float64_error(case, eta) <= 1e-10


@pytest.mark.parametrize("case", mindone_report.INVERSE_CASES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_inverse_scheduler_agrees_with_mindone(case: str, dtype: str) -> None:
    err = mindone_report.inverse_error(case, dtype)
    assert err <= (1e-5 if dtype == "float32" else 1e-10)


def test_in_a_mindone_pipeline() -> None:
    """mindone's DDIMPipeline with `pipe.scheduler = DDIMScheduler.from_config(...)`: the same
    image as with mindone's scheduler (mindone_report.pipeline_difference)."""
    err, pipe = mindone_report.pipeline_difference()
    assert isinstance(pipe.scheduler, DDIMScheduler)
    assert err <= 1e-5


def test_figures_are_the_pages_figures() -> None:
    """README.md and docs/mindspore.md quoted these figures with no script behind them; a fresh
    `mindone_report.measure()` gives each as the pages write it, and so does the committed run
    (benchmarks/results/mindspore.json, which tests/test_figures.py checks in the main
    environment). The pages say "bit for bit" of float64: those are exactly 0."""
    import test_figures

    fresh = mindone_report.measure()
    committed = json.loads(Path(mindone_report.RESULTS).read_text())["figures"]
    assert committed.keys() == fresh.keys()
    test_figures.check("mindspore", fresh)
    test_figures.check("mindspore", committed)
    assert fresh["float64"] == fresh["inverse_float64"] == 0.0


def test_add_noise_agrees_with_mindone() -> None:
    theirs, mine = pair(SD, 10)
    rng = np.random.default_rng(9)
    x0, noise = (tensor(rng.standard_normal(SHAPE), mindspore.float32) for _ in range(2))
    t = mindspore.tensor(np.array([999, 10], dtype=np.int64))
    a = mine.add_noise(x0, noise, t).asnumpy()
    b = theirs.add_noise(x0, noise, t).asnumpy()
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("timesteps", [[-1, 900], [900, 1000]])
def test_timesteps_out_of_range_raise_where_mindone_wraps_or_fails_in_a_kernel(
    timesteps: list[int],
) -> None:
    """A CPU timestep tensor is checked on the host: -1 is not row 999, 1000 no Gather error."""
    _, mine = pair(SD, 10)
    x = tensor(np.zeros(SHAPE), mindspore.float32)
    t = mindspore.tensor(np.array(timesteps, dtype=np.int64))
    with pytest.raises(ValueError, match=r"is outside \[0, num_train_timesteps=1000\)"):
        mine.add_noise(x, x, t)
    with pytest.raises(ValueError, match=r"is outside \[0, num_train_timesteps=1000\)"):
        mine.step(x, t, x)


# --- the API ---------------------------------------------------------------------------------


def test_drop_in_api() -> None:
    theirs = TheirScheduler(**SD)
    mine = DDIMScheduler.from_config(theirs.config)
    assert isinstance(mine, DDIMScheduler) and mine.config.steps_offset == 1
    # the default prev_timestep is not written into the config (loads into mindone's classes)
    assert "prev_timestep" not in mine.config
    mine.set_timesteps(5)
    assert isinstance(mine.timesteps, mindspore.Tensor) and mine.timesteps.dtype == mindspore.int64
    assert mine.alphas_cumprod.dtype == mindspore.float32
    assert isinstance(mine.final_alpha_cumprod, mindspore.Tensor)
    x = tensor(np.zeros(SHAPE), mindspore.float32)
    out = mine.step(x, mine.timesteps[0], x)
    assert isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], mindspore.Tensor)
    full = mine.step(x, int(mine.timesteps[1]), x, return_dict=True)
    assert isinstance(full, DDIMSchedulerOutput) and full.pred_original_sample is not None
    assert mine.scale_model_input(x, 3) is x and len(mine) == 1000 and mine.order == 1
    assert "DDIMScheduler" in {c.__name__ for c in mine.compatibles}
    mine.set_timesteps(timesteps=[901, 501, 1])
    assert mine.timesteps.asnumpy().tolist() == [901, 501, 1]
    with pytest.raises(ValueError, match="set_timesteps"):
        DDIMScheduler().step(x, 1, x)


@pytest.mark.parametrize(
    ("ours", "theirs"), [(DDIMScheduler, TheirScheduler), (DDIMInverseScheduler, TheirInverse)]
)
def test_subclass_of_mindones_class_running_none_of_its_code(ours: Any, theirs: Any) -> None:
    """Ours subclass mindone's classes, so pipelines that test `isinstance(scheduler,
    DDIMScheduler)` (LEdits++, Bria) take them for one; every name mindone's class defines
    itself (methods, `order`, `_compatibles`, `ignore_for_config`, ...) is defined by a class
    before it in ours' MRO, so no attribute lookup reaches mindone's scheduler code."""
    assert_defines_every_name_of(ours, theirs)


def test_ledits_pp_takes_ours_for_a_ddim_scheduler() -> None:
    """mindone's LEdits++ dispatches on `isinstance(scheduler, DDIMScheduler)`: its
    constructor replaces any other scheduler with DPMSolverMultistepScheduler, and its
    `compute_noise` (the edit-friendly inversion's noise) raised NotImplementedError for ours.
    On ours it now reads our tables and `_get_variance`, matching mindone's scheduler."""
    from mindone.diffusers.pipelines.ledits_pp import pipeline_leditspp_stable_diffusion as ledits

    theirs, mine = pair(SD, 10)
    none = dict.fromkeys(["vae", "text_encoder", "tokenizer", "unet", "safety_checker"])
    pipe = ledits.LEditsPPPipelineStableDiffusion(
        **none, scheduler=mine, feature_extractor=None, requires_safety_checker=False
    )
    assert pipe.scheduler is mine  # not replaced by a DPMSolverMultistepScheduler
    rng = np.random.default_rng(4)
    latents, prev_latents, noise_pred = (
        tensor(rng.standard_normal(SHAPE), mindspore.float32) for _ in range(3)
    )
    for t in (mine.timesteps[0], mine.timesteps[-1]):
        got, want = (
            ledits.compute_noise(s, prev_latents, latents, t, noise_pred, 1.0)
            for s in (mine, theirs)
        )
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a.asnumpy(), b.asnumpy(), rtol=1e-5, atol=1e-5)


def test_swapping_in_and_back_out_through_configs(tmp_path: Any) -> None:
    mine = DDIMScheduler.from_config(TheirScheduler(**SD).config, timestep_spacing="trailing")
    mine.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "scheduler_config.json").read_text())
    assert saved["_class_name"] == "DDIMScheduler" and saved["timestep_spacing"] == "trailing"
    again = DDIMScheduler.from_pretrained(tmp_path)

    def options(scheduler: Any) -> dict[str, Any]:
        return {k: v for k, v in scheduler.config.items() if not k.startswith("_")}

    assert options(again) == options(mine)
    back = TheirScheduler.from_config(mine.config)  # mindone ignores our extra option
    assert back.config.timestep_spacing == "trailing"
    inverse = DDIMInverseScheduler.from_config(mine.config)
    assert inverse.config.timestep_spacing == "trailing"


def test_config_rewritten_after_construction_is_followed() -> None:
    """mindone's StableDiffusionPipeline.__init__ rewrites an old config (steps_offset=1,
    clip_sample=False) through `_internal_dict`, which mindone's scheduler reads when it runs;
    ours kept the constructor's options."""
    from mindone.diffusers.configuration_utils import FrozenDict

    x = mindspore.tensor(np.full((1, 2), 3.0, dtype=np.float32))
    results = []
    for cls in (DDIMScheduler, TheirScheduler):
        scheduler = cls()
        for key, value in (("steps_offset", 1), ("clip_sample", False)):
            new_config = dict(scheduler.config)
            new_config[key] = value
            scheduler._internal_dict = FrozenDict(new_config)
        scheduler.set_timesteps(5)
        x0 = scheduler.step(x * 0, scheduler.timesteps[0], x)[1].asnumpy()
        results.append((scheduler.timesteps.asnumpy().tolist(), x0))
    (ours_ts, ours_x0), (theirs_ts, theirs_x0) = results
    assert ours_ts == theirs_ts == [801, 601, 401, 201, 1]
    assert np.allclose(ours_x0, theirs_x0, rtol=1e-5) and ours_x0.max() > 1.0


def test_register_into_mindone() -> None:
    import mindone.diffusers as md

    assert register() == ["DDIMCoreScheduler", "DDIMCoreInverseScheduler"]
    register()
    assert md.DDIMCoreScheduler is DDIMScheduler
    assert md.schedulers.DDIMCoreInverseScheduler is DDIMInverseScheduler
    assert md.PNDMScheduler._compatibles.count("DDIMCoreScheduler") == 1
    # as ddim_diffusers.register(): ours is compatible with itself and mindone's DDIMScheduler
    # (mindone's lookup by name in its module found only its own class called DDIMScheduler)
    for scheduler in (DDIMScheduler(), TheirScheduler(), md.PNDMScheduler()):
        assert scheduler.compatibles.count(DDIMScheduler) == 1, type(scheduler)
    assert TheirScheduler in DDIMScheduler().compatibles
    from ddim_core import plugins

    assert plugins.register_adapters("mindone") == ["mindone"]


def test_a_saved_pipeline_reloads_with_our_scheduler(tmp_path: Any) -> None:
    """mindone's DiffusionPipeline.save_pretrained records our scheduler as
    ["ddim_mindone.schedulers", "DDIMScheduler"], and from_pretrained, looking in that module
    for a base class it knows, found none: "cannot be loaded as it does not seem to have any
    of the loading methods". The classes are recorded under the package, which exports
    mindone's SchedulerMixin (as ddim_diffusers does for diffusers). DDPMPipeline keeps the
    scheduler it is given (DDIMPipeline converts it to mindone's class)."""
    from mindone.diffusers import DDPMPipeline

    pipe = DDPMPipeline(unet=None, scheduler=TheirScheduler())
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["scheduler"] == ["ddim_mindone", "DDIMScheduler"]
    loaded = DDPMPipeline.from_pretrained(tmp_path, unet=None).scheduler
    assert type(loaded) is DDIMScheduler and loaded.config.timestep_spacing == "trailing"
