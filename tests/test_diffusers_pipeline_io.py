"""Saved pipelines and configs round-trip: a pipeline saved with our scheduler reloads with our
class, config and images after a plain `import ddim_diffusers`; our scheduler_config.json loads
into diffusers' own classes without a warning; register() reaches classes imported later;
DDIMInverseScheduler takes diffusers' deprecated kwargs as diffusers does."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
import ddim_diffusers as dd  # noqa: E402


def _unet():  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    return diffusers.UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    ).eval()


def _images(pipe) -> np.ndarray:  # type: ignore[no-untyped-def]
    pipe.set_progress_bar_config(disable=True)
    out = pipe(
        batch_size=1,
        generator=torch.Generator().manual_seed(0),
        num_inference_steps=5,
        output_type="np",
    )
    return np.asarray(out.images)


@pytest.mark.parametrize("rule", ["plan", "stride"])
def test_saved_pipeline_reloads_with_our_class_in_a_fresh_process(tmp_path: Path, rule) -> None:
    # DDPMPipeline keeps the scheduler it is given (DDIMPipeline converts to its own class)
    scheduler = dd.DDIMScheduler(timestep_spacing="trailing", prev_timestep=rule)
    pipe = diffusers.DDPMPipeline(unet=_unet(), scheduler=scheduler)
    expected = _images(pipe)
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["scheduler"] == ["ddim_diffusers", "DDIMScheduler"]
    np.save(tmp_path / "expected.npy", expected)
    scheduler.set_timesteps(5)
    x, m = torch.randn(2, 1, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    torch.save(
        {"x": x, "m": m, "prev": scheduler.step(m, scheduler.timesteps[1], x)[0]},
        tmp_path / "step.pt",
    )
    code = textwrap.dedent(f"""
        import numpy as np, torch
        import ddim_diffusers
        from diffusers import DiffusionPipeline
        pipe = DiffusionPipeline.from_pretrained({str(tmp_path)!r})
        s = pipe.scheduler
        assert type(s) is ddim_diffusers.DDIMScheduler, type(s)
        assert s.config.timestep_spacing == "trailing"
        assert s.config.get("prev_timestep", "plan") == {rule!r}  # "plan": not written
        pipe.set_progress_bar_config(disable=True)
        out = pipe(batch_size=1, generator=torch.Generator().manual_seed(0),
                   num_inference_steps=5, output_type="np")
        # the UNet itself differs by ~6e-7 across a save/load round trip (float32 CPU
        # kernels); the scheduler must not add to it: its step is compared bit for bit
        got, want = np.asarray(out.images), np.load({str(tmp_path / "expected.npy")!r})
        assert np.abs(got - want).max() <= 1e-4, np.abs(got - want).max()
        saved = torch.load({str(tmp_path / "step.pt")!r})
        s.set_timesteps(5)
        assert torch.equal(s.step(saved["m"], s.timesteps[1], saved["x"])[0], saved["prev"])
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_ddim_pipeline_runs_diffusers_class_unless_ours_is_assigned() -> None:
    """What docs/guides/diffusers.md says: DDIMPipeline's constructor turns the scheduler it is
    given into diffusers' own DDIMScheduler (from_config), so ours goes in by assignment after
    construction; DDPMPipeline keeps the scheduler it is given."""
    ours = dd.DDIMScheduler(timestep_spacing="trailing")
    pipe = diffusers.DDIMPipeline(unet=_unet(), scheduler=ours)
    assert type(pipe.scheduler) is diffusers.DDIMScheduler
    pipe.scheduler = ours
    assert pipe.scheduler is ours
    assert diffusers.DDPMPipeline(unet=_unet(), scheduler=ours).scheduler is ours


@pytest.mark.parametrize("ours", [dd.DDIMScheduler, dd.DDIMInverseScheduler])
def test_our_config_loads_into_diffusers_without_warnings(tmp_path: Path, ours, caplog) -> None:
    ours(timestep_spacing="trailing", clip_sample=False).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "scheduler_config.json").read_text())
    assert "prev_timestep" not in saved and "kwargs" not in saved
    assert "_use_default_values" not in saved
    theirs_cls = getattr(diffusers, ours.__name__)
    with caplog.at_level(logging.WARNING, logger="diffusers"):
        theirs = theirs_cls.from_pretrained(tmp_path)
        back = ours.from_config(theirs.config)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert theirs.config.timestep_spacing == back.config.timestep_spacing == "trailing"
    stride = ours(prev_timestep="stride")
    stride.save_pretrained(tmp_path / "stride")
    assert ours.from_pretrained(tmp_path / "stride").config["prev_timestep"] == "stride"


def test_inverse_scheduler_takes_deprecated_kwargs_as_diffusers_does() -> None:
    with pytest.warns(FutureWarning, match="set_alpha_to_zero"):
        s = dd.DDIMInverseScheduler.from_config(
            dd.DDIMInverseScheduler().config, set_alpha_to_zero=False
        )
    # as diffusers: set_alpha_to_zero=False means set_alpha_to_one=False, the level before the
    # first step is alpha_bar_0 (diffusers' config keeps set_alpha_to_one's default)
    assert float(s.initial_alpha_cumprod) == float(s.alphas_cumprod[0]) < 1.0
    assert "kwargs" not in s.config and "set_alpha_to_zero" not in s.config


def test_register_reaches_scheduler_classes_imported_later() -> None:
    code = textwrap.dedent("""
        import sys
        import diffusers, ddim_diffusers
        ddim_diffusers.register()
        assert "diffusers.schedulers.scheduling_heun_discrete" not in sys.modules
        from diffusers import HeunDiscreteScheduler
        assert ddim_diffusers.DDIMScheduler in HeunDiscreteScheduler().compatibles
        assert ddim_diffusers.DDIMScheduler in diffusers.DDIMScheduler().compatibles
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
