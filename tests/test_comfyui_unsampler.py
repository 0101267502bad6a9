"""The Unsampler without ComfyUI (`ddim_comfyui.unsampler`): a clean latent inverted up a DDIM
schedule and sampled back, by every method, with ComfyUI's sampler signature and a guided
denoiser on VE latents; where end_at_step stops; the reversible SAMPLER functions."""

from __future__ import annotations

import re
import sys
import types

import numpy as np
import pytest
from ddim_comfyui import unsampler as U
from ddim_kdiffusion import get_sigmas_ddim, sample_ddim

import ddim_core as dc

torch = pytest.importorskip("torch")
CONFIG = dc.DDIMConfig(
    beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False
)
MIXTURE = dc.GaussianMixture.create(
    [[-1.0, 0.5, 0.0, 0.2], [1.0, -0.5, 0.3, 0.0]], [0.4, 0.4], CONFIG
)
GUIDED = dc.guided(MIXTURE, MIXTURE.component(0), 3.0)
TABLE = torch.from_numpy(MIXTURE.schedule.alphas_cumprod)


def denoiser(x: torch.Tensor, sigma: torch.Tensor, **extra_args) -> torch.Tensor:
    """A CFG-guided denoiser as ComfyUI's samplers see it (x0 from VE latents); checks that
    extra_args (ComfyUI's denoise_mask, seed) arrive untouched."""
    assert extra_args == {"denoise_mask": None, "seed": 7}
    s = float(sigma[0])
    ab = 1.0 / (1.0 + s * s)
    t = int(torch.argmin((TABLE - ab).abs()))
    return x - s * GUIDED(x * ab**0.5, t)


SIGMAS = torch.from_numpy(get_sigmas_ddim(CONFIG, 20, spacing="trailing", xp=np))
EXTRA = {"denoise_mask": None, "seed": 7}
LATENT = torch.from_numpy(MIXTURE.component(0).sample_data(6, np.random.default_rng(0)))


@pytest.mark.parametrize(
    ("method", "bound"), [("ddim_exact", 1e-6), ("edict", 1e-10), ("bdia", 1e-10), ("belm", 1e-10)]
)
def test_unsample_then_resample_returns_the_latent(method: str, bound: float) -> None:
    up = U.inversion_sigmas(SIGMAS, 0)
    assert float(up[0]) == 0.0 and float(up[-1]) == float(SIGMAS[0])
    noised, info = U.unsample(denoiser, LATENT, up, method, EXTRA, disable=True)
    assert torch.equal(info["sigmas"], SIGMAS)
    back = U.resample(denoiser, noised, info, EXTRA, disable=True)
    assert float((back - LATENT).abs().max()) <= bound


def test_exact_by_default_and_plain_on_request() -> None:
    up = U.inversion_sigmas(SIGMAS, 0)
    exact, _ = U.unsample(denoiser, LATENT, up, extra_args=EXTRA, disable=True)
    plain, _ = U.unsample(denoiser, LATENT, up, "ddim_plain", EXTRA, disable=True)

    def err(z: torch.Tensor) -> float:
        return float((sample_ddim(denoiser, z, SIGMAS, EXTRA, disable=True) - LATENT).abs().max())

    assert err(exact) <= 1e-6 < 1e-2 < err(plain)


def test_end_at_step_stops_where_a_sampler_starts() -> None:
    """end_at_step = 5: the latent is noised to the level of sampling step 5, so sampling the
    last 15 steps (KSamplerAdvanced start_at_step=5, add_noise off) returns it."""
    up = U.inversion_sigmas(SIGMAS, 5)
    assert len(up) == 16 and float(up[-1]) == float(SIGMAS[5])
    noised, _ = U.unsample(denoiser, LATENT, up, extra_args=EXTRA, disable=True)
    back = sample_ddim(denoiser, noised, SIGMAS[5:], EXTRA, disable=True)
    assert float((back - LATENT).abs().max()) <= 1e-6
    assert len(U.inversion_sigmas(SIGMAS, 99)) == 2  # at least one step


def test_reversible_sampler_functions_sample_from_noise() -> None:
    """BDIA and BELM land near DDIM's sample; EDICT's mixing diverges at these coarse steps
    (docs/inversion-methods.md), but stays finite."""
    x_T = (
        torch.randn(6, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        * SIGMAS[0]
    )
    ddim = sample_ddim(denoiser, x_T, SIGMAS, EXTRA, disable=True)
    for fn in (U.sample_bdia_core, U.sample_belm_core):
        out = fn(denoiser, x_T, SIGMAS, EXTRA, disable=True)
        assert out.shape == x_T.shape and float((out - ddim).abs().max()) < 0.5
    assert bool(
        torch.isfinite(U.sample_edict_core(denoiser, x_T, SIGMAS, EXTRA, disable=True)).all()
    )


@pytest.mark.parametrize("name", ["edict", "bdia", "belm"])
def test_reversible_sampler_functions_take_repeated_sigmas(name: str) -> None:
    """A repeated sigma (ComfyUI's simple scheduler at many steps and low denoise) is a
    zero-length step, the identity, as in ComfyUI's samplers: the result is the list's without
    the repeat, and the callback's last index is the given list's last step (it was
    ValueError 'needs distinct sigmas')."""
    fn = getattr(U, f"sample_{name}_core")
    repeated = torch.cat([SIGMAS[:3], SIGMAS[2:3], SIGMAS[2:3], SIGMAS[3:]])
    x_T = torch.randn(6, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    steps: list[int] = []
    out = fn(denoiser, x_T * SIGMAS[0], repeated, EXTRA, lambda d: steps.append(d["i"]), True)
    assert torch.equal(out, fn(denoiser, x_T * SIGMAS[0], SIGMAS, EXTRA, disable=True))
    assert steps[-1] == len(repeated) - 2 and steps == sorted(steps)


def test_bad_method() -> None:
    with pytest.raises(ValueError, match="method='euler'"):
        U.unsample(denoiser, LATENT, SIGMAS.flip(0), "euler")


@pytest.mark.parametrize("shape", [(2, 4, 8, 8), (1, 4, 16, 16)])
def test_resampler_refuses_a_resized_or_rebatched_latent(shape: tuple[int, ...]) -> None:
    """LatentUpscale or RepeatLatentBatch keep the Unsampler's state beside samples of another
    shape: a clear error, not a broadcasting error from inside ComfyUI's sampling."""
    info = {"method": "ddim_exact", "sigmas": SIGMAS, "clean": torch.zeros(1, 4, 8, 8)}
    latent = {"samples": torch.zeros(shape), U.STATE_KEY: info}

    def guide(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("not reached")

    with pytest.raises(ValueError, match=rf"shape {re.escape(str(shape))}.* \(1, 4, 8, 8\)"):
        U.run_resampler(None, 1.0, [], [], latent, guide=guide)


def test_resampler_model_tooltip_says_it_samples() -> None:
    (spec,) = [n for n in U.NODES if n.node_id == "DDIMCoreResampler"]
    (model,) = [p for p in spec.inputs if p.name == "model"]
    assert "sample back" in model.tooltip and "invert" not in model.tooltip


def test_end_at_step_tooltip_says_when_ksampleradvanced_shares_the_schedule() -> None:
    """KSamplerAdvanced's simple scheduler is trailing spacing only where steps divide 1000
    (tests/test_comfyui_unsampler_integration.py measures both cases)."""
    (spec,) = [n for n in U.NODES if n.node_id == "DDIMCoreUnsampler"]
    (end,) = [p for p in spec.inputs if p.name == "end_at_step"]
    assert "simple scheduler" in end.tooltip and "divide 1000" in end.tooltip


def test_unsampler_refuses_pure_noise_on_rectified_flow_models(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """On SD3 / Flux (model_sampling CONST) end_at_step 0 climbs to sigma 1, where ComfyUI's
    LATENT x / (1 - sigma) is infinite: it returned NaN; now a clear error before any model
    call. end_at_step 1 stops below 1 and runs, as does an EPS model with the same table."""
    CONST = type("CONST", (), {"sigmas": torch.arange(1, 1001, dtype=torch.float32) / 1000})
    monkeypatch.setitem(sys.modules, "comfy.model_sampling", types.SimpleNamespace(CONST=CONST))
    sampling = CONST()
    model = types.SimpleNamespace(get_model_object=lambda name: sampling)
    tops = []

    def guide(model, positive, negative, cfg, latent, function, sigmas):  # type: ignore[no-untyped-def]
        tops.append(float(sigmas[-1]))
        return latent["samples"]

    def unsampler(end_at_step: int) -> dict:  # type: ignore[type-arg]
        latent = {"samples": torch.zeros(1, 4, 2, 2)}
        args = (model, 20, end_at_step, 1.0, "ddim_exact", "trailing", [], [], latent, 8, 1e-6)
        return U.run_unsampler(*args, guide=guide)

    with pytest.raises(ValueError, match=r"end_at_step=0 climbs to sigma 1, .*end_at_step >= 1"):
        unsampler(0)
    assert tops == []
    unsampler(1)
    sampling = types.SimpleNamespace(sigmas=CONST.sigmas)  # not CONST
    unsampler(0)
    assert tops == [pytest.approx(0.95), 1.0]


def test_unsampler_on_rectified_flow_at_one_step_names_steps(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """steps 1 has only the step from pure noise, whatever end_at_step (kept below steps): the
    error said "end_at_step=1 climbs to sigma 1 ... use end_at_step >= 1" to a user who had
    set end_at_step 1. It now says steps 1 cannot stop below 1 and to use steps >= 2."""
    CONST = type("CONST", (), {"sigmas": torch.arange(1, 1001, dtype=torch.float32) / 1000})
    monkeypatch.setitem(sys.modules, "comfy.model_sampling", types.SimpleNamespace(CONST=CONST))
    sampling = CONST()
    model = types.SimpleNamespace(get_model_object=lambda name: sampling)

    def guide(model, positive, negative, cfg, latent, function, sigmas):  # type: ignore[no-untyped-def]
        raise AssertionError("no model call")

    latent = {"samples": torch.zeros(1, 4, 2, 2)}
    for end_at_step in (0, 1, 5):
        args = (model, 1, end_at_step, 1.0, "ddim_exact", "trailing", [], [], latent, 8, 1e-6)
        with pytest.raises(ValueError, match=r"steps=1 .*sigma 1, .*steps >= 2") as info:
            U.run_unsampler(*args, guide=guide)
        assert "use end_at_step >= 1" not in str(info.value)


def test_unsampler_takes_the_schedule_nodes_steps_offset() -> None:
    """The DDIM Schedule node has steps_offset and the Unsampler had not: its schedule was
    always steps_offset 0, so a leading schedule with offset 1 (SD 1.x) could not be matched.
    Now the input is the schedule node's own (tooltip, default, range), last among the
    Unsampler's inputs (saved workflows keep widget values in order), and reaches the sigmas."""
    from ddim_comfyui import core

    (unsampler,) = [n for n in U.NODES if n.node_id == "DDIMCoreUnsampler"]
    (schedule,) = [n for n in core.NODES if n.node_id == "DDIMCoreSchedule"]
    (offset,) = [p for p in schedule.inputs if p.name == "steps_offset"]
    assert unsampler.inputs[-1] == offset and offset.default == 0
    sampling = types.SimpleNamespace(sigmas=((1 - TABLE) / TABLE).sqrt())
    model = types.SimpleNamespace(get_model_object=lambda name: sampling)
    climbed = []

    def guide(model, positive, negative, cfg, latent, function, sigmas):  # type: ignore[no-untyped-def]
        climbed.append(sigmas)
        return latent["samples"]

    latent = {"samples": torch.zeros(1, 4, 2, 2)}
    for steps_offset in (0, 1):
        args = (model, 20, 0, 1.0, "ddim_exact", "leading", [], [], latent, 8, 1e-6, steps_offset)
        U.run_unsampler(*args, guide=guide)
        want = core.ddim_sigmas(model, 20, "leading", steps_offset, 1.0).flip(0)
        torch.testing.assert_close(climbed[-1], want, rtol=0, atol=0)
    assert not torch.equal(climbed[0], climbed[1])


def _inpainting(latent: torch.Tensor) -> object:
    """ComfyUI's denoiser with SetLatentNoiseMask's mask (KSamplerX0Inpaint): the model sees
    `latent` outside the mask, and returns it there as x0."""

    def model(x, sigma, denoise_mask, seed=None):  # type: ignore[no-untyped-def]
        keep = 1.0 - denoise_mask
        out = denoiser(x * denoise_mask + latent * keep, sigma, denoise_mask=None, seed=seed)
        return out * denoise_mask + latent * keep

    return model


@pytest.mark.parametrize(
    ("method", "bound"),
    [
        ("ddim_exact", 1e-6),
        ("ddim_plain", None),
        ("edict", 1e-10),
        ("bdia", 1e-10),
        ("belm", 1e-10),
    ],
)
@pytest.mark.parametrize("edge", [1.0, 0.5])
def test_unsample_keeps_the_latent_outside_a_noise_mask(
    method: str, bound: float | None, edge: float
) -> None:
    """Outside SetLatentNoiseMask's mask ComfyUI's samplers leave the latent as is (its
    denoiser returns it there as x0); the Unsampler moved it (by 2.1 to 5.6 on the real
    ComfyUI test bed), and a DDIM sampler given its LATENT kept the moved values there (they
    are its latent image). Now the output keeps the latent where the mask is 0, and the
    Resampler still returns the whole latent (the reversible states go with the moved values,
    which the Unsampler keeps for it), also with a soft mask edge (column 1 at 0.5: ComfyUI
    resizes masks bilinearly)."""
    mask = torch.tensor([[1.0, edge, 0.0, 0.0]], dtype=torch.float64)
    args = {"denoise_mask": mask, "seed": 7}
    up = U.inversion_sigmas(SIGMAS, 0)
    noised, info = U.unsample(_inpainting(LATENT), LATENT, up, method, args, disable=True)
    assert torch.equal(noised[:, 2:], LATENT[:, 2:])
    back = U.resample(_inpainting(LATENT), noised, info, args, disable=True)
    assert torch.equal(back[:, 2:], LATENT[:, 2:])
    ddim = sample_ddim(_inpainting(noised), noised, SIGMAS, args, disable=True)  # its LATENT's
    assert torch.equal(ddim[:, 2:], LATENT[:, 2:])
    if bound is None:  # ddim_plain does not return
        return
    assert float((back - LATENT).abs().max()) <= bound
    if method == "ddim_exact" and edge == 1.0:  # a soft edge shows the model noised there
        assert float((ddim - LATENT).abs().max()) <= bound


def test_the_guide_says_which_nodes_run_node_runs() -> None:
    """docs/guides/comfyui.md said `core.run_node` computes what a node does, but it runs
    only the four nodes of `core.NODES`: the EDICT/BDIA/BELM Samplers, Unsampler and
    Resampler (`unsampler.NODES`) are unknown to it. The guide now says which nodes it runs
    and where the other five are."""
    from pathlib import Path

    from ddim_comfyui import core

    for spec in U.NODES:
        with pytest.raises(ValueError, match="unknown node"):
            core.run_node(spec.node_id)
    guide = Path(__file__).parents[1] / "docs" / "guides" / "comfyui.md"
    section = guide.read_text(encoding="utf-8").split("## Without ComfyUI")[1]
    prose = " ".join(section.split("```")[0].split())
    words = {4: "four", 5: "five"}
    assert f"runs the {words[len(core.NODES)]} nodes of `core.NODES`" in prose
    assert f"The other {words[len(U.NODES)]} are `unsampler.NODES`" in prose


def test_the_guides_node_table_names_every_input() -> None:
    """docs/guides/comfyui.md's node table left the Unsampler's steps_offset out (the README
    lists it): a reader wiring the node from the guide met an input the page does not name.
    Every input a node declares is named in its row."""
    from pathlib import Path

    from ddim_comfyui import core

    guide = Path(__file__).parents[1] / "docs" / "guides" / "comfyui.md"
    rows = {
        cells[0].strip(" *"): cells[2]
        for line in guide.read_text(encoding="utf-8").splitlines()
        if line.startswith("| **")
        for cells in [line.strip("|").split("|")]
    }
    for spec in (*core.NODES, *U.NODES):
        assert spec.display_name in rows, spec.display_name
        missing = [
            i.name
            for i in spec.inputs
            if not re.search(rf"\b{re.escape(i.name)}\b", rows[spec.display_name])
        ]
        assert not missing, f"{spec.display_name}: {missing} not in the guide's table"


@pytest.mark.parametrize("method", U.REVERSIBLE)
def test_resample_returns_the_latent_to_the_last_bit_under_guidance(method: str) -> None:
    """resample rebuilt the reversible state from the LATENT's arrays, scaled back to VP only
    to about 2^-2p: BDIA's states hold rounding ties, where that moved the model's input by an
    ulp, and the round trip missed x_0 (2.4e-14 here in float64, guided Gaussian mixture).
    It now resumes from the inverse's own state while the latent is the one returned."""
    config = dc.DDIMConfig(clip_sample=False, timestep_spacing="trailing")
    mixture = dc.GaussianMixture.create([[-1.0, 0.5], [1.0, -0.5]], [0.4, 0.4], config)
    guided = dc.guided(mixture, mixture.component(0), 3.0)
    table = mixture.schedule.alphas_cumprod

    def denoiser(x, sigma, **extra_args):  # type: ignore[no-untyped-def]
        ab = 1.0 / (1.0 + float(sigma[0]) ** 2)
        t = int(np.argmin(np.abs(table - ab)))
        return x - float(sigma[0]) * guided(x * np.sqrt(ab), t)

    sigmas = get_sigmas_ddim(config, 10, xp=np)
    x0 = mixture.component(0).sample_data(64, np.random.default_rng(1))
    z, info = U.unsample(denoiser, x0, sigmas[::-1].copy(), method, disable=True)
    assert np.array_equal(U.resample(denoiser, z.copy(), info, disable=True), x0)


def test_the_guide_says_which_ksampleradvanced_schedule_returns_the_latent() -> None:
    """docs/guides/comfyui.md said KSamplerAdvanced with the DDIM Sampler "on the same
    schedule" returns ddim_exact's latent, but KSamplerAdvanced takes a scheduler, not the
    DDIM Schedule: only `simple` with steps that divide 1000 is the Unsampler's trailing
    schedule (the end_at_step tooltip and the README say so; at 30 steps the round trip
    misses, tests/test_comfyui_unsampler_integration.py). The guide now names them."""
    from pathlib import Path

    guide = Path(__file__).parents[1] / "docs" / "guides" / "comfyui.md"
    text = " ".join(guide.read_text(encoding="utf-8").split())
    claim = text.split("`ddim_exact` solves each DDIM inversion step")[1].split("`ddim_plain`")[0]
    assert "KSamplerAdvanced" in claim
    assert "`simple` scheduler" in claim and "divide 1000" in claim


def test_end_at_step_at_or_past_steps_is_documented() -> None:
    """end_at_step >= steps climbs one step (as ComfyUI_Noise's Unsampler: at least one
    step), but KSamplerAdvanced with start_at_step = steps returns its latent as is, so the
    documented round trip (start_at_step = end_at_step) missed by 0.30 at 20 steps with
    end_at_step 20, where the tooltip said the Unsampler stops "at the level where sampling
    starts at this step". The tooltip and the guide now say what it does there."""
    from pathlib import Path

    (spec,) = [n for n in U.NODES if n.node_id == "DDIMCoreUnsampler"]
    (end,) = [p for p in spec.inputs if p.name == "end_at_step"]
    assert len(U.inversion_sigmas(SIGMAS, len(SIGMAS) - 1)) == 2  # one step at steps
    assert "steps or more: one step" in end.tooltip and "below steps" in end.tooltip
    guide = Path(__file__).parents[1] / "docs" / "guides" / "comfyui.md"
    text = " ".join(guide.read_text(encoding="utf-8").split())
    assert "returns the latent for an end_at_step below steps" in text
