"""Inversion through a diffusers UNet under classifier-free guidance (`ddim_diffusers.inversion`):
a small random-weight UNet2DConditionModel (no download) with prompt embeddings, Stable
Diffusion's scheduler config; every method's round trip, calls per step, guidance as diffusers'
pipelines compute it."""

from __future__ import annotations

import types
import warnings
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
import ddim_diffusers as dd  # noqa: E402

import ddim_core as dc  # noqa: E402
from ddim_core import reversible  # noqa: E402

SD_SCHEDULER = {  # Stable Diffusion 1.x's scheduler_config.json (a PNDMScheduler's keys)
    "_class_name": "PNDMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}


class Pipe:
    """What the helpers read of a pipeline: `.unet` and `.scheduler`."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.unet = diffusers.UNet2DConditionModel(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            layers_per_block=1,
            block_out_channels=(8, 16),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=8,
            attention_head_dim=2,
            norm_num_groups=4,
        ).eval()
        with torch.no_grad():  # a tame random model: small outputs, so exact inverses exist
            self.unet.conv_out.weight.mul_(0.1)
            self.unet.conv_out.bias.mul_(0.1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.scheduler = diffusers.PNDMScheduler.from_config(SD_SCHEDULER)


PIPE = Pipe()
GEN = torch.Generator().manual_seed(1)
COND = torch.randn(1, 5, 8, generator=GEN)
UNCOND = torch.randn(1, 5, 8, generator=GEN)
LATENTS = torch.randn(2, 4, 8, 8, generator=GEN) * 0.5
GUIDED = {"prompt_embeds": COND, "negative_prompt_embeds": UNCOND, "guidance_scale": 7.5}


def test_the_schedule_is_the_pipelines() -> None:
    config = dd.ddim_config(PIPE.scheduler)
    assert (config.beta_schedule, config.steps_offset, config.set_alpha_to_one) == (
        "scaled_linear",
        1,
        False,
    )
    assert dd.ddim_config(dd.DDIMScheduler(timestep_spacing="trailing")).timestep_spacing == (
        "trailing"
    )


def test_the_schedule_follows_an_option_written_on_the_config() -> None:
    """`scheduler.config.timestep_spacing = "trailing"` (LEdits++'s invert() writes the
    spacing so on the pipeline's scheduler) changes the attribute alone, which diffusers'
    scheduler reads: it visits trailing timesteps. ddim_config read the config's items, so
    inversion and sampling went on leading timesteps, not the pipeline's."""
    theirs = diffusers.DDIMScheduler.from_config(SD_SCHEDULER)
    theirs.config.timestep_spacing = "trailing"
    theirs.set_timesteps(4)
    config = dd.ddim_config(theirs)
    assert config.timestep_spacing == "trailing"
    assert dc.make_plan(config, 4).timesteps == tuple(theirs.timesteps.tolist())
    assert dd.ddim_config(dict(theirs.config)).timestep_spacing == "leading"  # a mapping: items


@torch.no_grad()
def test_guidance_is_the_pipelines() -> None:
    """uncond + w (cond - uncond), the halves of one 2B batch, and the rescale."""
    model = dd.guided_unet(PIPE.unet, COND, UNCOND, 7.5, guidance_rescale=0.7)
    x = LATENTS
    cond = PIPE.unet(x, 500, encoder_hidden_states=COND.expand(2, 5, 8)).sample
    uncond = PIPE.unet(x, 500, encoder_hidden_states=UNCOND.expand(2, 5, 8)).sample
    guided = uncond + 7.5 * (cond - uncond)
    expected = dc.rescale_noise_cfg(guided, cond, 0.7)
    torch.testing.assert_close(model(x, 500), expected, rtol=1e-4, atol=1e-5)
    plain = dd.guided_unet(PIPE.unet, COND, None, 7.5)(x, 500)
    torch.testing.assert_close(plain, cond, rtol=1e-5, atol=1e-6)
    for scale in (1.0, 0.5, 0.0):  # diffusers' pipelines guide only above 1
        unguided = dd.guided_unet(PIPE.unet, COND, UNCOND, scale)(x, 500)
        torch.testing.assert_close(unguided, cond, rtol=1e-5, atol=1e-6)


@torch.no_grad()
@pytest.mark.parametrize(
    ("method", "options", "calls", "bound"),
    [
        ("plain", {}, [1] * 10, 0.4),  # measured 4.3e-1: plain inversion does not return
        ("exact", {"fixed_point_iters": 2}, [3] * 10, 1e-1),  # 8.2e-2
        ("exact", {"fixed_point_iters": 20, "tol": 1e-6}, None, 3e-5),  # 7.3e-6
        ("edict", {}, [2] * 10, 5e-6),  # 1.2e-6
        ("bdia", {}, [1] * 10, 5e-6),  # 8.9e-7
        ("belm", {}, [1] * 10, 5e-6),  # 9.5e-7
        ("bdia", {"precision": "float64"}, [1] * 10, 0.0),
        ("edict", {"precision": "float64"}, [2] * 10, 0.0),
    ],
)
def test_round_trips_through_the_unet(method, options, calls, bound) -> None:
    """Guidance 3, 10 steps, float32. A random UNet is harder to invert than a trained
    denoiser at high noise: exact DDIM inversion needs up to 21 calls in the last steps."""
    guided = {**GUIDED, "guidance_scale": 3.0}
    infos: list[dc.StepInfo] = []
    noise = dd.invert_latents(
        PIPE,
        LATENTS,
        num_inference_steps=10,
        method=method,
        callback=infos.append,
        **options,
        **guided,
    )
    back = dd.sample_latents(PIPE, noise, num_inference_steps=10, method=method, **guided)
    assert back.dtype == LATENTS.dtype and back.shape == LATENTS.shape
    if calls is not None:
        assert [i.model_calls for i in infos] == calls
    error = float((back - LATENTS).abs().max())
    if method == "plain":
        assert error > 1e-2
    else:
        assert error <= bound, error


def test_bad_method_and_embeddings() -> None:
    with pytest.raises(ValueError, match="method='ddpm'"):
        dd.invert_latents(PIPE, LATENTS, method="ddpm", **GUIDED)
    model = dd.guided_unet(PIPE.unet, torch.zeros(3, 5, 8))
    with pytest.raises(ValueError, match="prompt_embeds has batch 3; expected 1 or the batch"):
        model(LATENTS, 10)
    with pytest.raises(ValueError, match="guidance_scale=nan must be a finite number"):
        dd.guided_unet(PIPE.unet, COND, UNCOND, float("nan"))
    with pytest.raises(ValueError, match=r"guidance_rescale=1.5 must be in \[0, 1\]"):
        dd.invert_latents(PIPE, LATENTS, **{**GUIDED, "guidance_rescale": 1.5})
    for method, options in (("bdia", {"fixed_point_iters": 3}), ("plain", {"tol": 1e-6})):
        with pytest.raises(ValueError, match=f"method={method!r} takes neither"):
            dd.invert_latents(PIPE, LATENTS, method=method, **options, **GUIDED)


def test_embeddings_are_checked_before_the_unet_runs() -> None:
    """None, another library than the latents' (the UNet's), a batch that fits neither 1 nor
    the latents: errors naming the argument, before any UNet call."""
    calls: list[object] = []
    pipe = types.SimpleNamespace(unet=lambda *a, **k: calls.append(a), scheduler=PIPE.scheduler)
    none = {**GUIDED, "prompt_embeds": None}
    for fn in (dd.invert_latents, dd.sample_latents):
        with pytest.raises(TypeError, match="prompt_embeds=None: pass the conditional"):
            fn(pipe, LATENTS, num_inference_steps=3, **none)
    with pytest.raises(TypeError, match="prompt_embeds=None"):
        dd.guided_unet(pipe.unet, None)
    with pytest.raises(TypeError, match="prompt_embeds is a torch array but latents is a numpy"):
        dd.invert_latents(pipe, LATENTS.numpy(), num_inference_steps=3, **GUIDED)
    numpy_state = reversible.State(LATENTS.numpy(), LATENTS.numpy(), np.float32)
    with pytest.raises(TypeError, match="prompt_embeds is a torch array but noise is a numpy"):
        dd.sample_latents(pipe, numpy_state, method="bdia", num_inference_steps=2, **GUIDED)
    state = reversible.invert_bdia(lambda x, t: 0.1 * x, LATENTS, dd.ddim_config(PIPE.scheduler), 2)
    for method in ("exact", "plain"):  # was "x must be an array ..., got State" from the loop
        with pytest.raises(ValueError, match=f"state of invert_bdia, which method='{method}'"):
            dd.sample_latents(pipe, state, method=method, num_inference_steps=2, **GUIDED)
    bad = {**GUIDED, "negative_prompt_embeds": torch.zeros(3, 5, 8)}
    message = "negative_prompt_embeds has batch 3; expected 1 or the batch of latents, 2"
    with pytest.raises(ValueError, match=message):
        dd.invert_latents(pipe, LATENTS, num_inference_steps=3, **bad)
    with pytest.raises(ValueError, match="negative_prompt_embeds has batch 3"):
        dd.guided_unet(pipe.unet, COND, torch.zeros(3, 5, 8))(LATENTS, 10)
    with pytest.raises(ValueError, match="prompt_embeds is a 0-d array"):
        dd.guided_unet(pipe.unet, torch.tensor(1.0))
    assert not calls


@pytest.mark.parametrize(
    ("negative", "message"),
    [
        (torch.zeros(1, 7, 8), r"shape \(1, 7, 8\) but prompt_embeds has shape \(1, 5, 8\)"),
        (torch.zeros(1, 5, 6), r"shape \(1, 5, 6\) but prompt_embeds has shape \(1, 5, 8\)"),
        (torch.zeros(1, 5, 8, dtype=torch.float64), "dtype torch.float64 but prompt_embeds"),
    ],
)
def test_embeddings_that_cannot_be_batched_together_are_named(negative, message) -> None:  # type: ignore[no-untyped-def]
    """uncond and cond go into one 2B batch: other token counts or widths (a negative prompt
    encoded to another length) were a RuntimeError from torch.concat at the first UNet call,
    another dtype one from inside the UNet; diffusers' pipelines refuse both shapes with a
    ValueError. Now a ValueError naming both arguments, before any UNet call."""
    calls: list[object] = []
    pipe = types.SimpleNamespace(unet=lambda *a, **k: calls.append(a), scheduler=PIPE.scheduler)
    cond = torch.zeros(1, 5, 8)
    with pytest.raises(ValueError, match=f"negative_prompt_embeds has {message}"):
        dd.guided_unet(pipe.unet, cond, negative, 7.5)
    for fn in (dd.invert_latents, dd.sample_latents):
        with pytest.raises(ValueError, match=f"negative_prompt_embeds has {message}"):
            fn(pipe, LATENTS, prompt_embeds=cond, negative_prompt_embeds=negative)
    assert not calls


POOLED = {"text_embeds": torch.zeros(1, 8), "time_ids": torch.zeros(1, 6)}


@pytest.mark.parametrize(
    ("added", "negative", "error", "message"),
    [
        (POOLED, None, ValueError, "added_cond_kwargs under guidance needs negative_added"),
        (None, POOLED, ValueError, "negative_added_cond_kwargs given without added_cond"),
        ([1], POOLED, TypeError, "added_cond_kwargs must be a mapping of names to arrays"),
        (POOLED, {"text_embeds": torch.zeros(1, 8)}, ValueError, r"has keys \['text_embeds'\]"),
        (
            POOLED,
            {**POOLED, "time_ids": torch.zeros(1, 5)},
            ValueError,
            r"negative_added_cond_kwargs\['time_ids'\] has shape \(1, 5\) but",
        ),
        (
            {**POOLED, "time_ids": np.zeros((1, 6))},
            POOLED,
            TypeError,
            r"added_cond_kwargs\['time_ids'\] is a numpy array but prompt_embeds is a torch",
        ),
        ({**POOLED, "time_ids": None}, POOLED, TypeError, r"\['time_ids'\] must be an array"),
        ({**POOLED, "time_ids": torch.tensor(1.0)}, POOLED, ValueError, "is a 0-d array"),
        (
            {**POOLED, "time_ids": torch.zeros(3, 6)},
            POOLED,
            ValueError,
            r"added_cond_kwargs\['time_ids'\] has batch 3; expected 1 or the batch of",
        ),
    ],
)
def test_added_conditioning_is_checked_before_the_unet_runs(added, negative, error, message):  # type: ignore[no-untyped-def]
    """SDXL's added conditioning (added_cond_kwargs / negative_added_cond_kwargs): under
    guidance both, of the same keys and shapes past the batch axis, arrays of the UNet's
    library with a batch that fits: errors naming the argument and key before any UNet call."""
    calls: list[object] = []
    pipe = types.SimpleNamespace(unet=lambda *a, **k: calls.append(a), scheduler=PIPE.scheduler)
    options = {"added_cond_kwargs": added, "negative_added_cond_kwargs": negative}
    for fn in (dd.invert_latents, dd.sample_latents):
        with pytest.raises(error, match=message):
            fn(pipe, LATENTS, num_inference_steps=2, **GUIDED, **options)
    assert not calls


@torch.no_grad()
def test_added_conditioning_without_guidance_goes_with_the_prompt() -> None:
    """Unguided (no negative embeddings, or guidance_scale <= 1), the prompt's added
    conditioning goes to the UNet batched to the latents' and the negative's is not read."""
    seen: list[dict[str, object]] = []

    def unet(x, t, encoder_hidden_states, added_cond_kwargs):  # type: ignore[no-untyped-def]
        seen.append(added_cond_kwargs)
        return types.SimpleNamespace(sample=0 * x + added_cond_kwargs["text_embeds"].sum())

    for scale, negative in ((7.5, None), (1.0, UNCOND)):
        dd.guided_unet(unet, COND, negative, scale, 0.0, POOLED, {"other": None})(LATENTS, 10)
        assert {k: tuple(v.shape) for k, v in seen[-1].items()} == {  # type: ignore[union-attr]
            "text_embeds": (2, 8),
            "time_ids": (2, 6),
        }


def test_latents_none_is_named() -> None:
    """latents=None (or noise=None: an unset variable) was an AttributeError ('NoneType' object
    has no attribute 'ndim') from the batch check."""
    for fn, name in ((dd.invert_latents, "latents"), (dd.sample_latents, "noise")):
        with pytest.raises(TypeError, match=f"{name} must be an array of the UNet's library"):
            fn(PIPE, None, num_inference_steps=2, **GUIDED)


def test_tol_without_refinements_is_an_error() -> None:
    """method="exact", fixed_point_iters=0, tol=1e-6 dropped tol silently (plain inversion, no
    residual checked), where ddim_core.invert refuses the pair."""
    with pytest.raises(ValueError, match="tol=1e-06 needs fixed_point_iters >= 1, got 0"):
        dd.invert_latents(
            PIPE, LATENTS, num_inference_steps=2, fixed_point_iters=0, tol=1e-6, **GUIDED
        )


def test_tolerance_warning_names_the_callers_line() -> None:
    """invert_latents' ToleranceWarning was attributed to ddim_diffusers/inversion.py (the line
    calling ddim_core.invert), not to the user's call as ddim_core.invert's and
    sample_ddim_inverse's are: a filter by module missed it, and the report pointed into the
    library."""
    with torch.no_grad(), pytest.warns(dc.implicit.ToleranceWarning) as caught:
        dd.invert_latents(
            PIPE, LATENTS, num_inference_steps=2, fixed_point_iters=1, tol=1e-12, **GUIDED
        )
    assert len(caught) == 1 and caught[0].filename == __file__, caught[0].filename


@pytest.mark.parametrize("method", ["exact", "plain", "bdia"])
def test_inversion_builds_no_autograd_graph_like_the_pipelines(method: str) -> None:
    """invert_latents and sample_latents called outside torch.no_grad() (a UNet whose
    parameters require grad, as a loaded pipeline's do) returned tensors carrying an autograd
    graph of every UNet call of the loop (the activations kept alive: out of memory at Stable
    Diffusion's size), and with tol torch warned 'Converting a tensor with requires_grad=True
    to a scalar' at each residual read; diffusers' pipelines (and their invert methods) run
    under torch.no_grad()."""
    assert any(p.requires_grad for p in PIPE.unet.parameters())
    options = {"fixed_point_iters": 2, "tol": 1e-12} if method == "exact" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", dc.implicit.ToleranceWarning)
        noise = dd.invert_latents(
            PIPE, LATENTS, num_inference_steps=2, method=method, **options, **GUIDED
        )
        back = dd.sample_latents(PIPE, noise, num_inference_steps=2, method=method, **GUIDED)
    parts = [*noise, back] if isinstance(noise, reversible.State) else [noise, back]
    for part in parts:
        if isinstance(part, torch.Tensor):
            assert not part.requires_grad and part.grad_fn is None
    assert torch.is_grad_enabled()


@torch.no_grad()
@pytest.mark.parametrize("method", ["exact", "bdia"])
def test_custom_timesteps_take_the_place_of_the_step_count(method: str) -> None:
    """invert_latents(pipe, latents, timesteps=[...]) (a custom plan, as a pipeline's
    `timesteps=` argument) raised 'give exactly one of num_inference_steps and timesteps': the
    step count defaulted to 50, so the user had to pass num_inference_steps=None as well. The
    plan is now the timesteps' (and both given is still refused)."""
    plan = dc.make_plan(dd.ddim_config(PIPE.scheduler), 3)
    custom = list(plan.timesteps)
    noise = dd.invert_latents(PIPE, LATENTS, method=method, timesteps=custom, **GUIDED)
    back = dd.sample_latents(PIPE, noise, method=method, timesteps=custom, **GUIDED)
    by_count = dd.invert_latents(PIPE, LATENTS, method=method, num_inference_steps=3, **GUIDED)
    for a, b in zip(reversible_parts(noise), reversible_parts(by_count), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(
        back, dd.sample_latents(PIPE, by_count, num_inference_steps=3, method=method, **GUIDED)
    )
    with pytest.raises(ValueError, match="exactly one of num_inference_steps and timesteps"):
        dd.invert_latents(PIPE, LATENTS, num_inference_steps=3, timesteps=custom, **GUIDED)


def reversible_parts(result: Any) -> list[Any]:
    """A reversible method's state as its arrays, or x_T alone."""
    return list(result) if isinstance(result, reversible.State) else [result]


def test_latents_that_require_grad_keep_the_graph_they_ask_for() -> None:
    """invert_latents / sample_latents run under torch.no_grad() as the pipelines do, but a
    caller optimising through them (noise optimisation: noise that requires grad) asked for
    the graph: 42ddd83 dropped it, so backward() failed with torch's 'element 0 of tensors
    does not require grad' far from the cause."""
    noise = LATENTS.clone().requires_grad_(True)
    back = dd.sample_latents(PIPE, noise, num_inference_steps=2, method="plain", **GUIDED)
    back.square().sum().backward()
    assert noise.grad is not None and bool(noise.grad.abs().sum() > 0)
    latents = LATENTS.clone().requires_grad_(True)
    z = dd.invert_latents(PIPE, latents, num_inference_steps=2, method="plain", **GUIDED)
    assert z.requires_grad and z.grad_fn is not None
