"""ddim_diffusers' schedulers inside diffusers' Stable Diffusion pipelines, swapped in as users
do (`pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)`), against diffusers'
own classes swapped in the same way: StableDiffusionPipeline, Img2Img, Inpaint (4- and 9-channel
UNets), DiffEdit (its `inverse_scheduler` is a DDIMInverseScheduler), Panorama and SDXL; and
CycleDiffusion's own functions, which read the scheduler's tables and `_get_variance`.

The components are tiny random-weight models built here (32x32 images, 4 inference steps, as
diffusers' fast tests): no tokenizer or text encoder is downloaded, the prompts are given as
embeddings. Everything runs on the CPU in float32, seeded.

Tolerance (float32): each output must be within max(1e-5 * (1 + max|theirs|), 2 * sensitivity)
of diffusers'. 1e-5 * (1 + |ref|) is the float32 bound of the step parity tests
(tests/parity.py): our coefficients are float64 rounded at the sample, diffusers' come from
float32 arithmetic on a float32 cumulative product (docs/accuracy.md). The sensitivity is how
far diffusers' own output moves when every UNet output is scaled by 1 + 2**-20: the largest
relative gap between diffusers' float32 alpha_bar table and the correctly rounded one on Stable
Diffusion's schedule (9.5e-7, asserted below), so it covers pipelines that amplify rounding
(DiffEdit's inversion). The sensitivity is asserted to be small itself (<= 1e-3 * (1 +
max|theirs|)), so the bound cannot become vacuous; a wrong timestep, level, noise draw or
option gives differences of 1e-2 and more. Measured: at most 2.5e-6 of 1 + max|theirs|.
In float64, with both schedulers on diffusers' table (tests/parity.py's share_tables), the
outputs must agree to 1e-10 of 1 + max|theirs| (measured: at most 1e-14).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
pytest.importorskip("transformers")  # diffusers' Stable Diffusion pipelines import it
import ddim_diffusers as dd  # noqa: E402
from parity import share_tables  # noqa: E402

STEPS = 4
SIZE = 32  # pixels; the VAE halves it
EMBED = 8  # cross-attention width (the text embeddings' last axis)
# the relative perturbation of the UNet outputs that measures a pipeline's sensitivity
PERTURBATION = 2.0**-20
DTYPES = ["float32", "float64"]
# Stable Diffusion's scheduler_config.json (steps_offset given, as the checkpoints give it)
SD_CONFIG = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """One torch thread: on models this small, threads cost more than they give (2 cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- tiny components ---------------------------------------------------------------------


def _unet(in_channels: int = 4, sdxl: bool = False, time_cond_proj_dim: int | None = None) -> Any:
    torch.manual_seed(0)
    extra: dict[str, Any] = {"time_cond_proj_dim": time_cond_proj_dim}
    if sdxl:  # SDXL's added conditioning: pooled text embedding and 6 size/crop numbers
        extra |= {
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": 4,
            "projection_class_embeddings_input_dim": 6 * 4 + EMBED,
        }
    return diffusers.UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=SIZE // 2,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=EMBED,
        attention_head_dim=2,
        norm_num_groups=2,
        **extra,
    ).eval()


def _vae() -> Any:
    torch.manual_seed(0)
    return diffusers.AutoencoderKL(
        block_out_channels=(4, 8),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=2,
    ).eval()


@functools.cache
def _pipeline(name: str, dtype: str) -> Any:
    """The pipeline `name` in `dtype`, its scheduler diffusers' DDIMScheduler on SD_CONFIG."""
    scheduler = diffusers.DDIMScheduler(**SD_CONFIG)
    common = {"vae": _vae(), "scheduler": scheduler, "tokenizer": None, "text_encoder": None}
    sd = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    if name in ("sdxl", "sdxl-img2img"):
        cls = {
            "sdxl": diffusers.StableDiffusionXLPipeline,
            "sdxl-img2img": diffusers.StableDiffusionXLImg2ImgPipeline,
        }[name]
        pipe = cls(
            unet=_unet(sdxl=True),
            tokenizer_2=None,
            text_encoder_2=None,
            add_watermarker=False,
            **common,
        )
        if name == "sdxl-img2img":  # the 6 size numbers, not the aesthetic scores
            pipe.register_to_config(requires_aesthetics_score=False)
    elif name == "diffedit":
        inverse = diffusers.DDIMInverseScheduler.from_config(scheduler.config)
        pipe = diffusers.StableDiffusionDiffEditPipeline(
            unet=_unet(), inverse_scheduler=inverse, **common, **sd
        )
    else:
        cls = {
            "text2img": diffusers.StableDiffusionPipeline,
            "img2img": diffusers.StableDiffusionImg2ImgPipeline,
            "inpaint": diffusers.StableDiffusionInpaintPipeline,
            "inpaint9": diffusers.StableDiffusionInpaintPipeline,
            "panorama": diffusers.StableDiffusionPanoramaPipeline,
        }[name]
        pipe = cls(unet=_unet(9 if name == "inpaint9" else 4), **common, **sd)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(getattr(torch, dtype))


def _tensor(pipe: Any, *shape: int, seed: int) -> Any:
    """Standard normal numbers in the pipeline's dtype (SDXL does not cast embeddings)."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    return x.to(pipe.unet.dtype)


def _embeds(pipe: Any, seed: int = 10) -> dict[str, Any]:
    """A prompt's and a negative prompt's text embeddings (5 tokens)."""
    return {
        "prompt_embeds": _tensor(pipe, 1, 5, EMBED, seed=seed),
        "negative_prompt_embeds": _tensor(pipe, 1, 5, EMBED, seed=seed + 1),
    }


def _image(pipe: Any) -> Any:
    x = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(12))
    return x.to(pipe.unet.dtype)


def _mask() -> Any:
    mask = torch.zeros(1, 1, SIZE, SIZE)
    return mask.index_fill(2, torch.arange(SIZE // 4, 3 * SIZE // 4), 1.0)


# --- running a pipeline with a scheduler --------------------------------------------------


def _swap(pipe: Any, ours: bool, options: dict[str, Any]) -> None:
    """Swap the scheduler(s) in as a user does: the class's from_config of the pipeline's; in
    float64 both classes on diffusers' alpha_bar table (cast to float64)."""
    base = dict(diffusers.DDIMScheduler(**SD_CONFIG).config)
    theirs_options = {k: v for k, v in options.items() if k != "prev_timestep"}  # ours alone
    mine = dd.DDIMScheduler.from_config(base, **options)
    theirs = diffusers.DDIMScheduler.from_config(base, **theirs_options)
    pairs = [("scheduler", mine, theirs)]
    if hasattr(pipe, "inverse_scheduler"):
        pairs.append(
            (
                "inverse_scheduler",
                dd.DDIMInverseScheduler.from_config(mine.config),
                diffusers.DDIMInverseScheduler.from_config(theirs.config),
            )
        )
    for attribute, a, b in pairs:
        if pipe.unet.dtype == torch.float64:
            share_tables(a, b)
        setattr(pipe, attribute, a if ours else b)


@functools.cache
def _perturbing(unet: Any) -> list[bool]:
    """A switch that scales every output of `unet` by 1 + PERTURBATION while on."""
    switch = [False]

    def hook(module: Any, args: Any, output: Any) -> None:
        if switch[0]:
            output[0].mul_(1 + PERTURBATION)  # a tuple or a UNet2DConditionOutput

    unet.register_forward_hook(hook)
    return switch


def _outputs(
    name: str, dtype: str, call: Callable[[Any], Any], options: dict[str, Any]
) -> Iterator[np.ndarray]:
    """ours, theirs and (float32) theirs with perturbed UNet outputs, as float64 arrays."""
    pipe = _pipeline(name, dtype)
    switch = _perturbing(pipe.unet)
    runs = [(True, False), (False, False)] + [(False, True)] * (dtype == "float32")
    for ours, perturb in runs:
        _swap(pipe, ours, options)
        switch[0] = perturb
        try:
            with torch.no_grad():
                out = call(pipe)
        finally:
            switch[0] = False
        yield np.asarray(out, dtype=np.float64)


def assert_agree(name: str, dtype: str, call: Callable[[Any], Any], **options: Any) -> float:
    """Run `call(pipe)` with ours and with diffusers' scheduler(s); return the difference."""
    ours, theirs, *perturbed = _outputs(name, dtype, call, options)
    return _assert_close(f"{name} {dtype} {options}", ours, theirs, perturbed)


def _assert_close(label: str, ours: Any, theirs: Any, perturbed: list[Any]) -> float:
    """Our output against diffusers' (float64: `perturbed` empty) within the module's
    tolerance (module docstring); the difference."""
    assert ours.shape == theirs.shape and np.isfinite(theirs).all()
    scale = 1 + float(np.abs(theirs).max())
    difference = float(np.abs(ours - theirs).max())
    if not perturbed:  # float64, shared tables
        print(f"{label}: |ours - theirs| {difference:.1e}, scale {scale:.1f}")
        assert difference <= 1e-10 * scale, difference
        return difference
    sensitivity = float(np.abs(perturbed[0] - theirs).max())
    tolerance = max(1e-5 * scale, 2 * sensitivity)
    print(
        f"{label}: |ours - theirs| {difference:.1e}, scale {scale:.1f}, "
        f"sensitivity {sensitivity:.1e}, tolerance {tolerance:.1e}"
    )
    assert sensitivity <= 1e-3 * scale, sensitivity  # else the tolerance says little
    assert difference <= tolerance, (difference, sensitivity)
    return difference


def _generator(seed: int = 0) -> Any:
    return torch.Generator().manual_seed(seed)


def _latents(pipe: Any, **options: Any) -> Any:
    """The pipeline's latents for the test prompt embeddings at guidance 5 and eta 1, with the
    file's step count and generator, and `options`."""
    return pipe(
        **_embeds(pipe),
        num_inference_steps=STEPS,
        guidance_scale=5.0,
        eta=1.0,
        generator=_generator(),
        output_type="latent",
        **options,
    ).images


def test_perturbation_covers_diffusers_table_rounding() -> None:
    ours = dd.DDIMScheduler(**SD_CONFIG).alphas_cumprod.double()
    theirs = diffusers.DDIMScheduler(**SD_CONFIG).alphas_cumprod.double()
    gap = float(((theirs - ours).abs() / ours).max())
    assert 2**-21 < gap <= PERTURBATION  # measured 9.5e-7


# --- StableDiffusionPipeline ---------------------------------------------------------------


def _text2img(steps: int = STEPS, **kwargs: Any) -> Callable[[Any], Any]:
    output_type = kwargs.pop("output_type", "latent")
    images = kwargs.get("num_images_per_prompt", 1)

    def call(pipe: Any) -> Any:
        # several images: a list of generators, one per image (the step draws from each)
        generator = [_generator(i) for i in range(images)] if images > 1 else _generator()
        return pipe(
            **_embeds(pipe),
            height=SIZE,
            width=SIZE,
            num_inference_steps=steps,
            generator=generator,
            output_type=output_type,
            **kwargs,
        ).images

    return call


TEXT2IMG: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "eta0": ({"guidance_scale": 1.0}, {}),
    "eta1-generator": ({"eta": 1.0, "guidance_scale": 1.0}, {}),
    "guidance": ({"guidance_scale": 5.0, "eta": 0.5}, {}),
    "generator-list": ({"guidance_scale": 5.0, "eta": 1.0, "num_images_per_prompt": 2}, {}),
    "clip-sample": ({"guidance_scale": 5.0}, {"clip_sample": True}),
    "clip-sample-2": ({"guidance_scale": 5.0}, {"clip_sample": True, "clip_sample_range": 2.0}),
    "v-prediction": ({"guidance_scale": 5.0}, {"prediction_type": "v_prediction"}),
    "images-np": ({"guidance_scale": 5.0, "eta": 1.0, "output_type": "np"}, {}),
    "leading-zero-snr": (
        {"guidance_scale": 5.0, "guidance_rescale": 0.7},
        {"rescale_betas_zero_snr": True, "timestep_spacing": "leading"},
    ),
    "trailing-zero-snr-v": (
        {"guidance_scale": 5.0, "guidance_rescale": 0.7, "eta": 1.0},
        {
            "rescale_betas_zero_snr": True,
            "timestep_spacing": "trailing",
            "prediction_type": "v_prediction",
        },
    ),
    # 3 does not divide 1000: diffusers' t - T // N rule, which prev_timestep="stride" keeps
    "trailing-3-steps-stride": (
        {"guidance_scale": 5.0, "steps": 3},
        {"timestep_spacing": "trailing", "prev_timestep": "stride"},
    ),
    # linspace steps by (T - 1) / (N - 1), not T // N: diffusers' rule again (docs/accuracy.md)
    "linspace-stride": (
        {"guidance_scale": 5.0},
        {"timestep_spacing": "linspace", "prev_timestep": "stride"},
    ),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(TEXT2IMG))
def test_stable_diffusion(case: str, dtype: str) -> None:
    kwargs, options = TEXT2IMG[case]
    assert_agree("text2img", dtype, _text2img(**kwargs), **options)


def test_config_a_pipeline_rewrote_swaps_in_as_into_diffusers_class() -> None:
    """StableDiffusionPipeline.__init__ rewrites an old config in place (steps_offset=1,
    clip_sample=False) but leaves both in `_use_default_values`, so diffusers' from_config
    of it goes back to the defaults (steps_offset 0, clip_sample True): diffusers' behaviour,
    which ours must share, or the swap would change the timesteps."""
    old = diffusers.DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085)
    with pytest.warns(FutureWarning, match="steps_offset"):  # its "outdated config" warnings
        pipe = diffusers.StableDiffusionPipeline(
            vae=_vae(),
            text_encoder=None,
            tokenizer=None,
            unet=_unet(),
            scheduler=old,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    assert (pipe.scheduler.config.steps_offset, pipe.scheduler.config.clip_sample) == (1, False)
    found = []
    for cls in (dd.DDIMScheduler, diffusers.DDIMScheduler):
        swapped = cls.from_config(pipe.scheduler.config)
        swapped.set_timesteps(STEPS)
        config = swapped.config
        found.append((config.steps_offset, config.clip_sample, swapped.timesteps.tolist()))
    assert found[0] == found[1] == (0, True, [750, 500, 250, 0])


# --- Img2Img and Inpaint: timesteps sliced by strength, add_noise ----------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("strength", [0.3, 0.75])
def test_img2img(strength: float, dtype: str) -> None:
    def call(pipe: Any) -> Any:
        # strength 0.3: the last step of 4 alone; 0.75: the last 3
        return _latents(pipe, image=_image(pipe), strength=strength)

    assert_agree("img2img", dtype, call)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "strength"), [("inpaint", 1.0), ("inpaint9", 0.75)])
def test_inpaint(name: str, strength: float, dtype: str) -> None:
    """A 4-channel UNet: the known region is add_noise'd to each step's level; 9 channels:
    the mask and the masked image's latents go into the UNet."""

    def call(pipe: Any) -> Any:
        return _latents(
            pipe, image=_image(pipe), mask_image=_mask(), height=SIZE, width=SIZE, strength=strength
        )

    assert_agree(name, dtype, call)


# --- DiffEdit: DDIMInverseScheduler --------------------------------------------------------


def _diffedit_mask_and_inversion(pipe: Any) -> Any:
    """DiffEdit's mask (add_noise at the encoding strength) and inversion (inverse_scheduler,
    with its noise regularization)."""
    source, target = _embeds(pipe), _embeds(pipe, seed=20)
    mask = pipe.generate_mask(
        image=_image(pipe),
        source_prompt_embeds=source["prompt_embeds"],
        source_negative_prompt_embeds=source["negative_prompt_embeds"],
        target_prompt_embeds=target["prompt_embeds"],
        target_negative_prompt_embeds=target["negative_prompt_embeds"],
        num_maps_per_mask=2,
        num_inference_steps=STEPS,
        generator=_generator(),
        output_type="pt",
    )
    inverted = pipe.invert(
        **source,
        image=_image(pipe),
        inpaint_strength=0.75,
        num_inference_steps=STEPS,
        guidance_scale=5.0,
        num_reg_steps=1,
        num_auto_corr_rolls=2,
        generator=_generator(1),
    ).latents
    return torch.cat([torch.as_tensor(mask).flatten().to(inverted.dtype), inverted.flatten()])


def _diffedit_edit(pipe: Any) -> Any:
    """DiffEdit's edit, on a given mask and given inverted latents (one per timestep of
    inpaint_strength 0.75: 3 of 4), so that it is compared on the same inputs."""
    mask = _mask()[:, 0, ::2, ::2].to(pipe.unet.dtype)
    return pipe(
        **_embeds(pipe, seed=20),
        mask_image=mask,
        image_latents=_tensor(pipe, 1, 3, 4, SIZE // 2, SIZE // 2, seed=16),
        inpaint_strength=0.75,
        num_inference_steps=STEPS,
        guidance_scale=5.0,
        generator=_generator(2),
        output_type="latent",
    ).images


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stage", ["mask-and-inversion", "edit"])
def test_diffedit_inverse_scheduler(stage: str, dtype: str) -> None:
    call = _diffedit_mask_and_inversion if stage == "mask-and-inversion" else _diffedit_edit
    assert_agree("diffedit", dtype, call)


ZERO_SNR_EPSILON = {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing"}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["img2img", "diffedit-inversion", "diffedit-edit"])
def test_zero_snr_epsilon_where_no_step_goes_down_from_999(case: str, dtype: str) -> None:
    """A zero-SNR epsilon config (alpha_bar = 0 at 999): our set_timesteps refused the plan,
    whose first step cannot recover x_0, so img2img at strength 0.75 and DiffEdit (which enter
    below 999, and whose inversion steps up to 999) failed where diffusers' run."""
    if case == "img2img":
        name, call = "img2img", lambda pipe: _latents(pipe, image=_image(pipe), strength=0.75)
    else:
        stage = _diffedit_mask_and_inversion if case == "diffedit-inversion" else _diffedit_edit
        name, call = "diffedit", stage
    assert_agree(name, dtype, call, **ZERO_SNR_EPSILON)


# --- MultiDiffusion panorama: DDIMScheduler is its default --------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_panorama_saves_and_restores_the_scheduler_state_per_view(dtype: str) -> None:
    """StableDiffusionPanoramaPipeline keeps each view's scheduler state as
    `copy.deepcopy(scheduler.__dict__)` and restores it with `scheduler.__dict__.update(...)`
    around every step. A width of 592 pixels is two 64-wide latent windows (its `get_views`
    divides by 8 whatever the VAE's factor), so two views step on overlapping latents."""
    assert_agree("panorama", dtype, lambda pipe: _latents(pipe, height=SIZE, width=592))


# --- Stable Diffusion XL -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_stable_diffusion_xl(dtype: str) -> None:
    def call(pipe: Any) -> Any:
        pooled = {
            "pooled_prompt_embeds": _tensor(pipe, 1, EMBED, seed=13),
            "negative_pooled_prompt_embeds": _tensor(pipe, 1, EMBED, seed=14),
        }
        return _latents(pipe, **pooled, height=SIZE, width=SIZE, guidance_rescale=0.7)

    assert_agree("sdxl", dtype, call, timestep_spacing="trailing")


# --- CycleDiffusion's own functions: the scheduler internals published pipelines read -------


@pytest.mark.parametrize("dtype", DTYPES)
def test_cycle_diffusion_internals(dtype: str) -> None:
    """CycleDiffusionPipeline's posterior_sample and compute_noise read alphas_cumprod[t],
    final_alpha_cumprod, _get_variance(t, prev) and config.clip_sample with its tensor
    timesteps, and its loop steps with variance_noise; it needs a text encoder and tokenizer
    (prompts as strings), so its loop is run here without the UNet, as the pipeline runs it."""
    from diffusers.pipelines.deprecated.stable_diffusion_variants import pipeline_cycle_diffusion

    cd = pipeline_cycle_diffusion
    results = []
    for ours in (True, False):
        cls = dd.DDIMScheduler if ours else diffusers.DDIMScheduler
        scheduler = cls.from_config(dict(diffusers.DDIMScheduler(**SD_CONFIG).config))
        if dtype == "float64":
            share_tables(scheduler, diffusers.DDIMScheduler(**SD_CONFIG))
        scheduler.set_timesteps(STEPS)
        clean = _tensor(_pipeline("text2img", dtype), 1, 4, 8, 8, seed=30)
        latents = clean
        generator = _generator(3)
        for t in scheduler.timesteps:
            source = cd.posterior_sample(scheduler, latents, t, clean, generator, 0.1)
            noise_pred = 0.3 * source + 0.1  # a model
            noise = cd.compute_noise(scheduler, source, latents, t, noise_pred, 0.1)
            latents = scheduler.step(noise_pred, t, latents, eta=0.1, variance_noise=noise)[0]
        results.append(np.asarray(latents, dtype=np.float64))
    ours_out, theirs_out = results
    scale = 1 + float(np.abs(theirs_out).max())
    limit = 1e-10 if dtype == "float64" else 1e-5
    assert float(np.abs(ours_out - theirs_out).max()) <= limit * scale


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("start", [None, 0.5])
def test_stable_diffusion_xl_img2img(start: float | None, dtype: str) -> None:
    """strength 0.75 (timesteps sliced, add_noise), or the refiner's denoising_start = 0.5
    (the timesteps below the cutoff, on latents given as the image, no add_noise)."""

    def call(pipe: Any) -> Any:
        image = _tensor(pipe, 1, 4, SIZE // 2, SIZE // 2, seed=15) if start else _image(pipe)
        return _latents(
            pipe,
            pooled_prompt_embeds=_tensor(pipe, 1, EMBED, seed=13),
            negative_pooled_prompt_embeds=_tensor(pipe, 1, EMBED, seed=14),
            image=image,
            strength=0.75,
            denoising_start=start,
        )

    assert_agree("sdxl-img2img", dtype, call)


def _sdxl_conditioning(pipe: Any) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """SDXL's added conditioning of a prompt and its negative as the pipeline takes it (pooled
    embeddings, the size), as invert_latents / sample_latents take it (`added_cond_kwargs`,
    the time ids the pipeline makes of that size), and an x_T."""
    pooled, negative_pooled = (_tensor(pipe, 1, EMBED, seed=s) for s in (13, 14))
    time_ids = torch.tensor([[SIZE, SIZE, 0, 0, SIZE, SIZE]], dtype=torch.float64)
    pipeline_kwargs = {
        "pooled_prompt_embeds": pooled,
        "negative_pooled_prompt_embeds": negative_pooled,
        "height": SIZE,
        "width": SIZE,
    }
    added_kwargs = {
        "added_cond_kwargs": {"text_embeds": pooled, "time_ids": time_ids},
        "negative_added_cond_kwargs": {"text_embeds": negative_pooled, "time_ids": time_ids},
    }
    return pipeline_kwargs, added_kwargs, _tensor(pipe, 1, 4, SIZE // 2, SIZE // 2, seed=16)


def test_sdxl_latents_invert_and_sample_as_the_pipeline_runs_its_unet() -> None:
    """invert_latents / sample_latents through an SDXL UNet: its added conditioning (pooled
    embeddings and time ids, the negative prompt's first in the 2B batch) is taken as
    `added_cond_kwargs` / `negative_added_cond_kwargs`. Before, the helpers passed unknown
    keywords on to the loop (TypeError: unexpected keyword 'added_cond_kwargs'), and
    guided_unet handed them to the UNet unbatched. Sampling equals the pipeline's own latents
    (float64, eta 0, guidance 5 with rescale 0.7); BDIA inverts them and samples them back to
    the bit in float64."""
    pipe = _pipeline("sdxl", "float64")
    pipe.scheduler = dd.DDIMScheduler.from_config(diffusers.DDIMScheduler(**SD_CONFIG).config)
    pipeline_kwargs, added_kwargs, noise = _sdxl_conditioning(pipe)
    guidance = {**_embeds(pipe), "guidance_scale": 5.0, "guidance_rescale": 0.7}
    with torch.no_grad():
        theirs = pipe(
            **guidance,
            **pipeline_kwargs,
            num_inference_steps=STEPS,
            latents=noise,
            output_type="latent",
        ).images
        added = {**added_kwargs, "num_inference_steps": STEPS, **guidance}
        ours = dd.sample_latents(pipe, noise, method="plain", **added)
        _assert_close("sdxl sample_latents", ours.numpy(), theirs.numpy(), [])
        state = dd.invert_latents(pipe, theirs, method="bdia", **added)
        back = dd.sample_latents(pipe, state, method="bdia", **added)
    assert torch.equal(back, theirs)


@pytest.mark.parametrize("scale", [5.0, 1.0])
def test_latents_of_a_guidance_distilled_unet_are_the_pipelines(scale: float) -> None:
    """A guidance-distilled UNet (LCM-style: `time_cond_proj_dim` in its config) takes the
    guidance scale as an embedding of w - 1 (`timestep_cond`) and runs once, conditional
    alone: StableDiffusionPipeline turns classifier-free guidance off for it. Before,
    guided_unet ran it on the 2B batch and guided, and passed no `timestep_cond` (latents
    0.26 (scale 1) to 2.3 (scale 5) away from the pipeline's). sample_latents now gives the
    pipeline's latents (float64, within 1e-13, measured equal; eta 0, two latents from one
    prompt; the embedding of an odd width is zero padded), exact inversion gives the
    pipeline's noise back, and BDIA samples its state back to the bit."""
    unet = _unet(time_cond_proj_dim=7).to(torch.float64)
    pipe = diffusers.StableDiffusionPipeline(
        unet=unet,
        vae=_vae().to(torch.float64),
        scheduler=dd.DDIMScheduler(**SD_CONFIG),
        tokenizer=None,
        text_encoder=None,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    noise = _tensor(pipe, 2, 4, SIZE // 2, SIZE // 2, seed=16)
    embeds = {**_embeds(pipe), "guidance_scale": scale, "guidance_rescale": 0.7}
    with torch.no_grad():
        theirs = pipe(
            **embeds,
            num_images_per_prompt=2,
            num_inference_steps=STEPS,
            latents=noise,
            output_type="latent",
        ).images
        for method in ("plain", "exact"):
            ours = dd.sample_latents(
                pipe, noise, num_inference_steps=STEPS, method=method, **embeds
            )
            difference = float((ours - theirs).abs().max())
            assert difference <= 1e-13 * (1 + float(theirs.abs().max())), (method, difference)
        # a random UNet's fixed point contracts slowly: 30 refinements leave 7e-8
        z = dd.invert_latents(
            pipe, theirs, num_inference_steps=STEPS, fixed_point_iters=100, **embeds
        )
        assert float((z - noise).abs().max()) <= 1e-12  # the pipeline's noise (measured 2e-15)
        back = dd.sample_latents(pipe, z, num_inference_steps=STEPS, **embeds)
        assert float((back - theirs).abs().max()) <= 1e-12  # measured 9e-15
        state = dd.invert_latents(pipe, theirs, num_inference_steps=STEPS, method="bdia", **embeds)
        back = dd.sample_latents(pipe, state, num_inference_steps=STEPS, method="bdia", **embeds)
    assert torch.equal(back, theirs)


def test_sdxl_latents_of_a_guidance_distilled_unet_are_the_pipelines() -> None:
    """The same through StableDiffusionXLPipeline: the added conditioning of the prompt alone
    beside `timestep_cond` (before: 1.6 away from the pipeline's latents)."""
    pipe = diffusers.StableDiffusionXLPipeline(
        unet=_unet(sdxl=True, time_cond_proj_dim=8),
        vae=_vae(),
        scheduler=dd.DDIMScheduler(**SD_CONFIG),
        tokenizer=None,
        text_encoder=None,
        tokenizer_2=None,
        text_encoder_2=None,
        add_watermarker=False,
    ).to(torch.float64)
    pipe.set_progress_bar_config(disable=True)
    pipeline_kwargs, added_kwargs, noise = _sdxl_conditioning(pipe)
    embeds = {**_embeds(pipe), "guidance_scale": 5.0, "num_inference_steps": STEPS}
    with torch.no_grad():
        theirs = pipe(**embeds, **pipeline_kwargs, latents=noise, output_type="latent").images
        ours = dd.sample_latents(pipe, noise, method="plain", **added_kwargs, **embeds)
    difference = float((ours - theirs).abs().max())
    assert difference <= 1e-13 * (1 + float(theirs.abs().max())), difference


# --- LEdits++: pipelines that test isinstance(scheduler, DDIMScheduler) ----------------------


def _clip(directory: str) -> tuple[Any, Any]:
    """A tiny CLIP tokenizer (a 3-token vocabulary written to `directory`) and a random CLIP
    text encoder of width EMBED: LEdits++ encodes its empty negative prompt itself."""
    import json
    import os

    import transformers

    vocab, merges = os.path.join(directory, "vocab.json"), os.path.join(directory, "merges.txt")
    with open(vocab, "w", encoding="utf-8") as f:
        json.dump({"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2}, f)
    with open(merges, "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
    tokenizer = transformers.CLIPTokenizer(vocab, merges, model_max_length=5)
    torch.manual_seed(0)
    config = transformers.CLIPTextConfig(
        vocab_size=3,
        hidden_size=EMBED,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=5,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    return tokenizer, transformers.CLIPTextModel(config).eval()


@pytest.mark.parametrize("dtype", DTYPES)
def test_ledits_pp_keeps_ours_and_edits_like_diffusers(
    dtype: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """LEditsPPPipelineStableDiffusion replaces any scheduler that is not a diffusers
    DDIMScheduler (or DPMSolverMultistepScheduler) with DPMSolverMultistepScheduler at
    construction, and its compute_noise raises NotImplementedError for others: ours, a subclass
    of diffusers' class, is kept. `invert` (edit-friendly DDPM inversion through its own
    compute_noise_ddim: alphas_cumprod[t], final_alpha_cumprod, _get_variance, stride
    prev_timestep on "leading" spacing, set through a config attribute) then `__call__` with an
    editing embedding give diffusers' DDIMScheduler's latents, in the file's tolerances.

    diffusers 0.42's `invert` calls `add_noise(x0, noise, torch.Tensor([t]))`, a float32
    timestep, which diffusers' DDIMScheduler refuses (IndexError, as ours refuses it:
    TypeError); both schedulers here take it as the integer the pipeline means."""
    tokenizer, text_encoder = _clip(str(tmp_path_factory.mktemp("clip")))
    base = dict(diffusers.DDIMScheduler(**SD_CONFIG).config)
    reference = diffusers.DDIMScheduler(**SD_CONFIG)
    unet, vae = _unet(), _vae()
    switch = _perturbing(unet)
    image = torch.rand(1, 3, SIZE, SIZE, generator=_generator(12)).to(getattr(torch, dtype))
    edit = torch.randn(1, 5, EMBED, generator=_generator(3)).to(getattr(torch, dtype))

    def run(cls: Any, perturb: bool = False) -> np.ndarray:
        scheduler = cls.from_config(base)
        if dtype == "float64":
            share_tables(scheduler, reference)
        add_noise = type(scheduler).add_noise
        scheduler.add_noise = lambda x, noise, t: add_noise(scheduler, x, noise, t.long())
        pipe = diffusers.LEditsPPPipelineStableDiffusion(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        assert pipe.scheduler is scheduler  # kept, not replaced by DPMSolverMultistepScheduler
        pipe.set_progress_bar_config(disable=True)
        pipe.to(getattr(torch, dtype))
        switch[0] = perturb
        try:
            with torch.no_grad():
                pipe.invert(
                    image=image, num_inversion_steps=STEPS, skip=0.25, generator=_generator()
                )
                out = pipe(
                    editing_prompt_embeds=edit,
                    edit_guidance_scale=3.0,
                    use_intersect_mask=False,
                    generator=_generator(1),
                    output_type="latent",
                ).images
        finally:
            switch[0] = False
        return np.asarray(out, dtype=np.float64)

    ours, theirs = run(dd.DDIMScheduler), run(diffusers.DDIMScheduler)
    perturbed = [] if dtype == "float64" else [run(diffusers.DDIMScheduler, perturb=True)]
    _assert_close(f"ledits++ {dtype}", ours, theirs, perturbed)
