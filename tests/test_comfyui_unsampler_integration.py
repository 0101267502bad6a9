"""The Unsampler, Resampler and reversible sampler nodes inside a real ComfyUI (runs when
COMFYUI_PATH points to a checkout; see tests/test_comfyui_integration.py for the set-up, whose
fixtures and analytic model these tests share)."""

from __future__ import annotations

from typing import Any

import pytest
from test_comfyui_integration import (  # noqa: F401  (comfy is a fixture)
    _advanced,
    _cond,
    _flow_model,
    _model,
    _node,
    _schedule,
    comfy,
    needs_comfyui,
)

NEW_NODES = (
    "DDIMCoreUnsampler",
    "DDIMCoreResampler",
    "DDIMCoreEDICTSampler",
    "DDIMCoreBDIASampler",
    "DDIMCoreBELMSampler",
)


def _unsample(
    comfy: Any,  # noqa: F811
    model: Any,
    x: Any,
    method: str,
    end_at_step: int = 0,
    *,
    steps: int = 20,
    cfg: float = 3.0,
) -> Any:
    """The Unsampler on x: a latent's samples, or a whole LATENT dict."""
    return _node(
        comfy,
        "DDIMCoreUnsampler",
        model=model,
        steps=steps,
        end_at_step=end_at_step,
        cfg=cfg,
        method=method,
        spacing="trailing",
        positive=_cond(),
        negative=_cond(),
        latent_image=x if isinstance(x, dict) else {"samples": x},
        fixed_point_iters=8,
        tol=1e-6,
    )


def _resample(comfy: Any, model: Any, latent: Any) -> Any:  # noqa: F811
    """The Resampler on the Unsampler's LATENT (cfg 3, `_unsample`'s default)."""
    return _node(
        comfy,
        "DDIMCoreResampler",
        model=model,
        cfg=3.0,
        positive=_cond(),
        negative=_cond(),
        latent=latent,
    )


@needs_comfyui
def test_the_nodes_load_as_v3_nodes_with_tooltips(comfy) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    from comfy_api.latest import io

    for node_id in NEW_NODES:
        node = comfy.nodes.NODE_CLASS_MAPPINGS[node_id]
        assert issubclass(node, io.ComfyNode)
        schema = node.GET_SCHEMA()
        assert all(i.tooltip for i in schema.inputs), node_id
    schema = comfy.nodes.NODE_CLASS_MAPPINGS["DDIMCoreUnsampler"].GET_SCHEMA()
    defaults = {i.id: getattr(i, "default", None) for i in schema.inputs}
    assert defaults["method"] == "ddim_exact" and defaults["end_at_step"] == 0


@needs_comfyui
@pytest.mark.parametrize(
    ("method", "bound"), [("ddim_exact", 1e-5), ("edict", 1e-5), ("bdia", 1e-5), ("belm", 1e-5)]
)
def test_unsampler_then_resampler_returns_the_latent(comfy, method: str, bound: float) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    model = _model(comfy)
    x0 = model.model.diffusion_model.latent(8, seed=5)
    noised = _unsample(comfy, model, x0, method)
    back = _resample(comfy, model, noised)
    assert "ddim_core_inversion" not in back
    assert float((back["samples"] - x0).abs().max()) <= bound


@needs_comfyui
@pytest.mark.parametrize("method", ["ddim_exact", "edict", "bdia", "belm"])
def test_a_half_precision_latent_returns_too(comfy, method: str) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """A bfloat16 latent: the Unsampler's LATENT is float32 (ComfyUI's samplers step a half
    latent in float32; DDIM inversion stepped it in bfloat16), and the Resampler starts from
    it as it is (it rounded it to the input's bfloat16): back by 2.5e-6 (ddim_exact) and to
    the last bit (reversible), where they missed by 3.1e-2, 9.4e-2, 3.1e-2, 5.5e-2."""
    import torch

    model = _model(comfy)
    x0 = model.model.diffusion_model.latent(8, seed=5).bfloat16()
    noised = _unsample(comfy, model, x0, method)
    assert noised["samples"].dtype == torch.float32
    back = _resample(comfy, model, noised)["samples"]
    assert float((back - x0.float()).abs().max()) <= 1e-5


@needs_comfyui
@pytest.mark.parametrize("method", ["ddim_exact", "bdia"])
def test_a_noise_mask_keeps_the_latent_outside_it(comfy, method: str) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """With SetLatentNoiseMask's mask, Unsampler -> Resampler gives the latent back: inside
    the mask by the round trip, outside it because ComfyUI keeps the input there."""
    import torch

    model = _model(comfy)
    x0 = model.model.diffusion_model.latent(4, seed=5)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :] = 1.0  # the top half is unsampled and resampled
    latent = {"samples": x0, "noise_mask": mask}
    noised = _unsample(comfy, model, latent, method)
    back = _resample(comfy, model, noised)["samples"]
    assert float((back[..., :2, :] - x0[..., :2, :]).abs().max()) <= 1e-5
    assert torch.equal(back[..., 2:, :], x0[..., 2:, :])


@needs_comfyui
def test_plain_unsampling_does_not_return(comfy) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    model = _model(comfy)
    x0 = model.model.diffusion_model.latent(8, seed=6)
    noised = _unsample(comfy, model, x0, "ddim_plain")
    back = _resample(comfy, model, noised)
    assert float((back["samples"] - x0).abs().max()) > 1e-2


@needs_comfyui
def test_exact_unsampling_returns_through_comfyuis_own_sampler_nodes(comfy) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """ddim_exact's latent sampled back by SamplerCustomAdvanced with the DDIM Sampler on the
    same schedule (DisableNoise): from step 0, and from end_at_step = 5 over the last 15."""
    model = _model(comfy)
    x0 = model.model.diffusion_model.latent(8, seed=7)
    down = _schedule(comfy, model, 20)
    off = comfy.custom.DisableNoise().get_noise()[0]
    ddim = _node(comfy, "DDIMCoreSampler", eta=0.0, s_noise=1.0)
    for start in (0, 5):
        noised = _unsample(comfy, model, x0, "ddim_exact", end_at_step=start)
        back = _advanced(comfy, model, off, ddim, down[start:], noised["samples"])
        assert float((back - x0).abs().max()) <= 1e-5, start


@needs_comfyui
def test_reversible_sampler_nodes_sample(comfy) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    import torch

    model = _model(comfy)
    down = _schedule(comfy, model, 20)
    noise = comfy.custom.RandomNoise().get_noise(3)[0]
    empty = torch.zeros(1, 4, 4, 4)
    ddim = _advanced(
        comfy, model, noise, _node(comfy, "DDIMCoreSampler", eta=0.0, s_noise=1.0), down, empty
    )
    for node_id, inputs in (("DDIMCoreBDIASampler", {"gamma": 1.0}), ("DDIMCoreBELMSampler", {})):
        out = _advanced(comfy, model, noise, _node(comfy, node_id, **inputs), down, empty)
        assert float((out - ddim).abs().max()) < 0.5, node_id
    edict = _advanced(
        comfy, model, noise, _node(comfy, "DDIMCoreEDICTSampler", p=0.93), down, empty
    )
    assert bool(torch.isfinite(edict).all())


@needs_comfyui
def test_reversible_sampler_nodes_take_the_simple_schedulers_repeats(comfy) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """BasicScheduler's simple at 500 steps, denoise 0.3 repeats sigmas (euler takes them as
    zero-length steps): the EDICT / BDIA / BELM Sampler nodes sample over them as over the
    list without repeats (they raised 'needs distinct sigmas')."""
    import torch

    model = _model(comfy)
    sigmas = comfy.custom.BasicScheduler().get_sigmas(model, "simple", 500, 0.3)[0]
    distinct = torch.unique_consecutive(sigmas)
    assert len(distinct) < len(sigmas)
    noise = comfy.custom.RandomNoise().get_noise(3)[0]
    x = model.model.diffusion_model.latent(4, seed=4)
    for node_id, inputs in (
        ("DDIMCoreEDICTSampler", {"p": 0.93}),
        ("DDIMCoreBDIASampler", {"gamma": 1.0}),
        ("DDIMCoreBELMSampler", {}),
    ):
        sampler = _node(comfy, node_id, **inputs)
        out = _advanced(comfy, model, noise, sampler, sigmas, x)
        assert torch.equal(out, _advanced(comfy, model, noise, sampler, distinct, x)), node_id


@needs_comfyui
@pytest.mark.parametrize("denoise", [1.0, 0.5])
def test_reversible_samplers_keep_the_latent_outside_a_noise_mask(comfy, denoise: float) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """Inpainting with SetLatentNoiseMask in SamplerCustom: ComfyUI's samplers (euler, the
    DDIM Sampler) leave the latent as is where the mask is 0, and so do the EDICT / BDIA /
    BELM Sampler nodes now (EDICT kept noise there, 11.7 max abs at denoise 1 and 1.1 at
    0.5; BDIA 1e-5, BELM 1e-7); inside the mask they sample as without one."""
    import torch

    model = _model(comfy)
    x0 = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(0)) * 0.5
    mask = torch.zeros(2, 1, 4, 4)
    mask[:, :, :2] = 1.0
    sigmas = comfy.custom.BasicScheduler().get_sigmas(model, "normal", 10, denoise)[0]

    def custom(sampler: Any, latent: Any) -> Any:
        args = (model, True, 3, 1.0, _cond(), _cond(), sampler, sigmas, latent)
        return comfy.custom.SamplerCustom().sample(*args)[0]["samples"]

    for node_id, inputs in (
        ("DDIMCoreEDICTSampler", {"p": 0.93}),
        ("DDIMCoreBDIASampler", {"gamma": 1.0}),
        ("DDIMCoreBELMSampler", {}),
    ):
        sampler = _node(comfy, node_id, **inputs)
        out = custom(sampler, {"samples": x0, "noise_mask": mask})
        assert torch.equal(out[:, :, 2:], x0[:, :, 2:]), node_id
    euler = custom(comfy.samplers.sampler_object("euler"), {"samples": x0, "noise_mask": mask})
    assert torch.equal(euler[:, :, 2:], x0[:, :, 2:])


@needs_comfyui
def test_resampler_refuses_a_latent_resized_after_unsampling(comfy) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """ComfyUI's LatentUpscale and RepeatLatentBatch copy the Unsampler's state beside samples
    of another shape: the Resampler names both shapes (it was a broadcasting RuntimeError from
    ComfyUI's model_sampling)."""
    model = _model(comfy)
    noised = _unsample(comfy, model, model.model.diffusion_model.latent(8, seed=5), "bdia")
    for changed in (
        comfy.nodes.LatentUpscale().upscale(noised, "nearest-exact", 128, 128, "disabled")[0],
        comfy.nodes.RepeatLatentBatch().repeat(noised, 2)[0],
    ):
        with pytest.raises(ValueError, match=r"Unsampler \(ddim-core\) inverted .*1, 4, 8, 8"):
            _resample(comfy, model, changed)


@needs_comfyui
def test_ksampleradvanced_returns_the_latent_where_simple_is_trailing(comfy) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """The stock KSamplerAdvanced (ddim_core, simple, add_noise off, start_at_step =
    end_at_step) samples ddim_exact's latent back where steps divide 1000; at 30 steps simple
    rounds its timesteps down where trailing rounds them, and the round trip misses."""
    model = _model(comfy)
    x0 = model.model.diffusion_model.latent(8, seed=7)
    misses = {}
    for steps in (20, 30):
        noised = _unsample(comfy, model, x0, "ddim_exact", end_at_step=5, steps=steps)
        back = comfy.nodes.KSamplerAdvanced().sample(
            model, "disable", 0, steps, 3.0, "ddim_core", "simple", _cond(), _cond(), noised,
            5, 10000, "disable",
        )[0]["samples"]  # fmt: skip
        misses[steps] = float((back - x0).abs().max())
    assert misses[20] <= 1e-5 < 1e-4 < misses[30]


@needs_comfyui
def test_unsampler_on_a_rectified_flow_model(comfy) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """On a FLOW model end_at_step 0 climbs to sigma 1, where ComfyUI's LATENT is x / (1 - 1):
    a clear error (it returned NaN); from end_at_step 1 the round trip is exact."""
    import torch

    model = _flow_model(comfy)
    x0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.5
    with pytest.raises(ValueError, match=r"end_at_step=0 climbs to sigma 1, .*rectified-flow"):
        _unsample(comfy, model, x0, "ddim_exact")
    for method in ("ddim_exact", "bdia"):
        noised = _unsample(comfy, model, x0, method, end_at_step=1)
        back = _resample(comfy, model, noised)
        assert float((back["samples"] - x0).abs().max()) <= 1e-5, method


@needs_comfyui
@pytest.mark.parametrize("method", ["ddim_exact", "ddim_plain", "edict", "bdia", "belm"])
@pytest.mark.parametrize("edge", [1.0, 0.5])
def test_unsampler_keeps_its_input_outside_a_noise_mask(comfy, method: str, edge: float) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """ComfyUI's own samplers leave the latent as is where SetLatentNoiseMask's mask is 0;
    the Unsampler's LATENT had it moved there (by 2.1 to 5.6), and SamplerCustom with the DDIM
    Sampler on the same schedule, given that LATENT, kept the moved values. Now both keep the
    input there, and the Resampler still returns the whole latent (row 2 at 0.5: a soft
    edge, as ComfyUI's bilinear mask resizing makes; ddim_exact's float32 solve misses by
    9e-5 there, as it did before; ddim_plain is inexact)."""
    import torch

    model = _model(comfy)
    x0 = model.model.diffusion_model.latent(4, seed=5)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :], mask[..., 2, :] = 1.0, edge
    noised = _unsample(comfy, model, {"samples": x0, "noise_mask": mask}, method)
    assert torch.equal(noised["samples"][..., 3:, :], x0[..., 3:, :])
    back = _resample(comfy, model, noised)["samples"]
    assert torch.equal(back[..., 3:, :], x0[..., 3:, :])
    ddim = _node(comfy, "DDIMCoreSampler", eta=0.0, s_noise=1.0)
    args = (model, False, 0, 3.0, _cond(), _cond(), ddim, _schedule(comfy, model, 20), noised)
    custom = comfy.custom.SamplerCustom().sample(*args)[0]["samples"]
    assert torch.equal(custom[..., 3:, :], x0[..., 3:, :])
    if method in ("edict", "bdia", "belm") or (method, edge) == ("ddim_exact", 1.0):
        assert float((back - x0).abs().max()) <= 1e-5
    if (method, edge) == ("ddim_exact", 1.0):
        assert float((custom - x0).abs().max()) <= 1e-5


@needs_comfyui
@pytest.mark.parametrize("method", ["ddim_exact", "bdia"])
def test_flow_unsampler_keeps_its_input_outside_a_noise_mask(comfy, method: str) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """On a FLOW model ComfyUI divides a sampler's result by 1 - sigmas[-1]; the Unsampler's
    LATENT outside SetLatentNoiseMask's mask was the input times 1 / (1 - sigma_top) (12 at
    12 steps, end_at_step 1), and SamplerCustom with the DDIM Sampler on the same schedule,
    given that LATENT, kept it there (off by 17). Now both keep the input there, as the DDIM
    Inversion Sampler and ComfyUI's euler over FlipSigmas do, and the Resampler still returns
    the whole latent (a batch of 2, a mask per sample)."""
    import torch

    model = _flow_model(comfy)
    x0 = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(0)) * 0.5
    mask = torch.zeros(2, 1, 4, 4)
    mask[0, :, :2, :], mask[1, :, :, 1:] = 1.0, 1.0
    outside = mask.expand_as(x0) == 0
    latent = {"samples": x0, "noise_mask": mask}
    noised = _unsample(comfy, model, latent, method, end_at_step=1, steps=12, cfg=1.0)
    assert float((noised["samples"] - x0)[outside].abs().max()) <= 1e-6
    back = _resample(comfy, model, noised)["samples"]
    assert float((back - x0).abs().max()) <= 1e-5
    if method == "ddim_exact":
        down = _schedule(comfy, model, 12)
        ddim = _node(comfy, "DDIMCoreSampler", eta=0.0, s_noise=1.0)
        args = (model, False, 0, 1.0, _cond(), _cond(), ddim, down[1:], noised)
        custom = comfy.custom.SamplerCustom().sample(*args)[0]["samples"]
        assert float((custom - x0).abs().max()) <= 1e-5
