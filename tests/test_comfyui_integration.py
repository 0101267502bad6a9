"""The node pack inside a real ComfyUI (runs when COMFYUI_PATH points to a checkout).

Run it with a Python that has ComfyUI's requirements and ddim-core installed:
    COMFYUI_PATH=/path/to/ComfyUI python -m pytest tests/test_comfyui_integration.py
`ddim-core comfyui install` writes the shim into that checkout unless one is there already
(and removes only the one it wrote, at the end); ComfyUI's own loader loads it. The graphs run
through ComfyUI's own nodes (SamplerCustomAdvanced, SamplerCustom, the stock KSampler,
DisableNoise, RandomNoise, BasicScheduler, SplitSigmas) on a real ModelPatcher whose diffusion
model is analytic: the exact eps of a Gaussian mixture at every latent pixel.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.machinery
import importlib.util
import os
import sys
import types
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import TOLERANCE, rel

import ddim_core as dc

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
needs_comfyui = pytest.mark.skipif(not COMFYUI_PATH, reason="set COMFYUI_PATH to a checkout")
# ComfyUI's default discrete schedule (SD 1.x): "linear" in sqrt space = diffusers' scaled_linear
CONFIG = dc.DDIMConfig(
    beta_schedule="scaled_linear",
    beta_start=0.00085,
    beta_end=0.012,
    clip_sample=False,
    timestep_spacing="trailing",
)
MEANS, STDS = [[0.5] * 4, [-0.5] * 4], [0.4, 0.6]


@contextlib.contextmanager
def shim_in(comfyui_dir: str | os.PathLike[str]) -> Iterator[Path]:
    """The pack's shim folder in a checkout: written by `install` unless one is there already,
    and removed afterwards only if written here (a user's own install stays)."""
    from ddim_comfyui import install

    existed = (Path(comfyui_dir) / "custom_nodes" / install.SHIM_DIR).exists()
    shim = install.install(comfyui_dir)  # refreshes our own, refuses a foreign folder
    try:
        yield shim
    finally:
        if not existed:
            install.uninstall(comfyui_dir)


@contextlib.contextmanager
def _torchvision_stub() -> Iterator[None]:
    """ComfyUI imports torchvision at the top of a few model modules these tests never build;
    PyPI's torchvision cannot be installed beside a CPU torch wheel. Where it is missing, an
    empty stand-in is importable while ComfyUI loads, and removed again afterwards."""
    if importlib.util.find_spec("torchvision") is not None:
        yield
        return
    names = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")
    stubs = {name: types.ModuleType(name) for name in names}
    for name, stub in stubs.items():
        stub.__spec__ = importlib.machinery.ModuleSpec(name, None)
    stubs["torchvision"].transforms = stubs["torchvision.transforms"]  # type: ignore[attr-defined]
    sys.modules.update(stubs)
    try:
        yield
    finally:
        for name in names:
            sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def comfy() -> Iterator[types.SimpleNamespace]:
    assert COMFYUI_PATH is not None
    sys.path.insert(0, COMFYUI_PATH)
    try:
        with shim_in(COMFYUI_PATH) as shim:
            with _torchvision_stub():
                import comfy.cli_args
                import torch

                if not torch.cuda.is_available():
                    comfy.cli_args.args.cpu = True  # ComfyUI's --cpu, before model_management
                import comfy.model_base
                import comfy.model_patcher
                import comfy.samplers
                import comfy.supported_models_base
                import comfy_extras.nodes_custom_sampler as custom
                import nodes

            loaded = asyncio.run(nodes.load_custom_node(str(shim), module_parent="custom_nodes"))
            yield types.SimpleNamespace(
                loaded=loaded,
                nodes=nodes,
                samplers=comfy.samplers,
                custom=custom,
                model_base=comfy.model_base,
                model_patcher=comfy.model_patcher,
                models_base=comfy.supported_models_base,
            )
    finally:
        sys.path.remove(COMFYUI_PATH)


class AnalyticUNet:
    """A diffusion model for ComfyUI's BaseModel: eps of a 4-D Gaussian mixture at each pixel
    (the channels), from ComfyUI's c_in-scaled input and timestep; counts its calls."""

    def __init__(self) -> None:
        import torch

        self.gm = dc.GaussianMixture.create(MEANS, STDS, CONFIG)
        self.calls = 0
        self.dtype = torch.float32  # what BaseModel.get_dtype reads
        self.network_like = False

    def __call__(self, xc, t, context=None, control=None, transformer_options=None, **kw):  # type: ignore[no-untyped-def]
        self.calls += 1
        b, c, h, w = xc.shape
        (step,) = {round(float(v)) for v in t}
        flat = xc.double().permute(0, 2, 3, 1).reshape(-1, c)
        eps = self.gm(flat, step).reshape(b, h, w, c).permute(0, 3, 1, 2)
        if self.network_like:  # a float16 network's error: an ulp that moves with its input
            import torch

            g = torch.Generator().manual_seed(zlib.crc32(xc.numpy().tobytes()))
            spacing = eps.to(xc.dtype).double().abs() * torch.finfo(xc.dtype).eps
            eps = eps + (torch.rand(eps.shape, generator=g, dtype=eps.dtype) - 0.5) * spacing
        return eps.to(xc.dtype)

    def latent(self, hw: int, seed: int) -> Any:
        """Clean data as a (1, 4, hw, hw) latent."""
        import torch

        data = self.gm.sample_data(hw * hw, np.random.default_rng(seed))
        return torch.from_numpy(data).float().reshape(1, hw, hw, 4).permute(0, 3, 1, 2)


def _model(comfy: types.SimpleNamespace) -> Any:
    """A ComfyUI ModelPatcher (EPS, SD 1.x discrete schedule) around an AnalyticUNet."""
    import torch

    cpu = torch.device("cpu")
    config = comfy.models_base.BASE({"disable_unet_model_creation": True})
    base = comfy.model_base.BaseModel(config, device=cpu)
    base.diffusion_model = AnalyticUNet()
    return comfy.model_patcher.ModelPatcher(base, load_device=cpu, offload_device=cpu)


def _cond() -> Any:
    import torch

    return [[torch.zeros(1, 1, 8), {}]]


def _node(comfy: types.SimpleNamespace, node_id: str, **inputs: Any) -> Any:
    """Run one of the pack's (V3) nodes as ComfyUI does; its single output."""
    return comfy.nodes.NODE_CLASS_MAPPINGS[node_id].execute(**inputs).args[0]


def _advanced(
    comfy: types.SimpleNamespace, model: Any, noise: Any, sampler: Any, sigmas: Any, x: Any
) -> Any:
    """SamplerCustomAdvanced with BasicGuider: the latent out."""
    guider = comfy.custom.BasicGuider().get_guider(model, _cond())[0]
    out = comfy.custom.SamplerCustomAdvanced().sample(
        noise, guider, sampler, sigmas, {"samples": x}
    )
    return out[0]["samples"]


def _schedule(comfy: types.SimpleNamespace, model: Any, steps: int) -> Any:
    """The DDIM Schedule node: trailing spacing on the model's own sigmas."""
    return _node(
        comfy,
        "DDIMCoreSchedule",
        model=model,
        steps=steps,
        spacing="trailing",
        steps_offset=0,
        denoise=1.0,
    )


def _round_trip(
    comfy: types.SimpleNamespace, model: Any, x0: Any, **options: Any
) -> tuple[float, int]:
    """DDIM Schedule (20 steps) -> DDIM Flip Sigmas -> DDIM Inversion Sampler (`options`) in
    SamplerCustomAdvanced with DisableNoise, then the DDIM Sampler at eta 0 back down: the
    round trip's max abs error and the model calls the inversion took."""
    unet = model.model.diffusion_model
    down = _schedule(comfy, model, 20)
    up = _node(comfy, "DDIMCoreFlipSigmas", sigmas=down)
    off = comfy.custom.DisableNoise().get_noise()[0]
    inverse = _node(comfy, "DDIMCoreInversionSampler", **options)
    unet.calls = 0
    z = _advanced(comfy, model, off, inverse, up, x0)
    calls = unet.calls
    forward = _node(comfy, "DDIMCoreSampler", eta=0.0, s_noise=1.0)
    back = _advanced(comfy, model, off, forward, down, z)
    return float((back - x0).abs().max()), calls


def _stock_ksamplers(
    comfy: types.SimpleNamespace, model: Any, x: Any
) -> tuple[dict[str, Any], dict[str, int]]:
    """The stock KSampler with euler and with ddim_core at `simple`, 500 steps, denoise 0.3
    (repeated sigmas): their latents out and model calls, by sampler name."""
    unet = model.model.diffusion_model
    outs, calls = {}, {}
    for name in ("euler", "ddim_core"):
        unet.calls = 0
        outs[name] = comfy.nodes.KSampler().sample(
            model, 7, 500, 1.0, name, "simple", _cond(), _cond(), {"samples": x}, denoise=0.3
        )[0]["samples"]
        calls[name] = unet.calls
    return outs, calls


@needs_comfyui
def test_pack_loads_with_comfyuis_loader_as_v3_nodes(comfy) -> None:  # type: ignore[no-untyped-def]
    assert comfy.loaded is True
    from comfy_api.latest import io

    for node_id in (
        "DDIMCoreSampler",
        "DDIMCoreInversionSampler",
        "DDIMCoreSchedule",
        "DDIMCoreFlipSigmas",
    ):
        node = comfy.nodes.NODE_CLASS_MAPPINGS[node_id]
        assert issubclass(node, io.ComfyNode)
        schema = node.GET_SCHEMA()
        assert schema.category.startswith("sampling/custom_sampling/")
        assert all(i.tooltip for i in schema.inputs), node_id
    assert "ddim_core" in comfy.samplers.KSampler.SAMPLERS
    assert "ddim_core_inverse" not in comfy.samplers.KSampler.SAMPLERS  # it adds noise first


@needs_comfyui
def test_ddim_sampler_and_schedule_equal_ddim_core(comfy) -> None:  # type: ignore[no-untyped-def]
    import torch

    model = _model(comfy)
    unet = model.model.diffusion_model
    sigmas = _schedule(comfy, model, 10)
    empty = torch.zeros(1, 4, 4, 4)
    noise = comfy.custom.RandomNoise().get_noise(3)[0]
    x_T = noise.generate_noise({"samples": empty})
    flat = x_T.double().permute(0, 2, 3, 1).reshape(-1, 4)
    expected = dc.sample(unet.gm, flat, CONFIG, 10).reshape(1, 4, 4, 4).permute(0, 3, 1, 2)
    for sampler in (
        _node(comfy, "DDIMCoreSampler", eta=0.0, s_noise=1.0),
        comfy.samplers.sampler_object("ddim_core"),  # the stock KSampler's lookup
    ):
        unet.calls = 0
        out = _advanced(comfy, model, noise, sampler, sigmas, empty)
        assert rel(out, expected) <= TOLERANCE["float32"]
        assert unet.calls == 10


@needs_comfyui
def test_eta_noise_comes_from_the_seed_like_euler_ancestral(comfy) -> None:  # type: ignore[no-untyped-def]
    """Identical runs with DisableNoise (seed 0) and with add_noise on, and DDIM at eta 1
    equal to euler_ancestral given the same seed."""
    model = _model(comfy)
    unet = model.model.diffusion_model
    sigmas = comfy.custom.BasicScheduler().get_sigmas(model, "normal", 20, 1.0)[0]
    x = unet.latent(8, seed=1)
    off = comfy.custom.DisableNoise().get_noise()[0]
    for eta in (0.5, 1.0):
        ddim = _node(comfy, "DDIMCoreSampler", eta=eta, s_noise=1.0)
        first = _advanced(comfy, model, off, ddim, sigmas, x)
        assert bool((_advanced(comfy, model, off, ddim, sigmas, x) == first).all())
        runs = [
            comfy.custom.SamplerCustom().sample(
                model, True, 42, 1.0, _cond(), _cond(), ddim, sigmas, {"samples": x}
            )[0]["samples"]
            for _ in range(2)
        ]
        assert bool((runs[0] == runs[1]).all())
    ddim = _node(comfy, "DDIMCoreSampler", eta=1.0, s_noise=1.0)
    ancestral = comfy.samplers.sampler_object("euler_ancestral")
    for noise in (off, comfy.custom.RandomNoise().get_noise(42)[0]):
        ours = _advanced(comfy, model, noise, ddim, sigmas, x)
        theirs = _advanced(comfy, model, noise, ancestral, sigmas, x)
        assert rel(ours, theirs) <= TOLERANCE["float32"]


class FlowNet:
    """A rectified-flow diffusion model (ComfyUI's FLOW: x = (1 - s) x0 + s eps, timestep
    s * 1000, output eps - x0): exact for N(0, 0.5^2) data at every latent value."""

    def __init__(self) -> None:
        import torch

        self.dtype = torch.float32

    def __call__(self, xc, t, **kw):  # type: ignore[no-untyped-def]
        s = (t.double() / 1000).reshape(-1, 1, 1, 1)
        x = xc.double()
        x0 = (1 - s) * 0.25 * x / ((1 - s) ** 2 * 0.25 + s**2)  # E[x0 | x]
        return ((x - x0) / s).to(xc.dtype)


def _flow_model(comfy: types.SimpleNamespace) -> Any:
    """A ComfyUI FLOW model (model_sampling CONST, as SD3 and Flux) around FlowNet, on the CPU."""
    import torch

    cpu = torch.device("cpu")
    config = comfy.models_base.BASE({"disable_unet_model_creation": True})
    flow = comfy.model_base.ModelType.FLOW
    base = comfy.model_base.BaseModel(config, model_type=flow, device=cpu)
    base.diffusion_model = FlowNet()
    return comfy.model_patcher.ModelPatcher(base, load_device=cpu, offload_device=cpu)


@needs_comfyui
def test_rectified_flow_models_take_eta_0_and_refuse_eta_above(comfy) -> None:  # type: ignore[no-untyped-def]
    """On a FLOW model (model_sampling CONST) DDIM at eta 0 equals euler; eta > 0 is a clear
    error (DDIM's stochastic step is not ComfyUI's RF euler_ancestral there)."""
    import torch

    model = _flow_model(comfy)
    sigmas = comfy.custom.BasicScheduler().get_sigmas(model, "simple", 20, 1.0)[0]
    noise = comfy.custom.RandomNoise().get_noise(42)[0]
    empty = torch.zeros(1, 4, 8, 8)
    ours = _advanced(
        comfy, model, noise, _node(comfy, "DDIMCoreSampler", eta=0.0, s_noise=1.0), sigmas, empty
    )
    theirs = _advanced(comfy, model, noise, comfy.samplers.sampler_object("euler"), sigmas, empty)
    assert rel(ours, theirs) <= TOLERANCE["float32"]
    ddim = _node(comfy, "DDIMCoreSampler", eta=0.5, s_noise=1.0)
    with pytest.raises(
        ValueError, match=r"eta=0\.5 > 0 .*\(model_type FLOW.*eta 0.*euler_ancestral"
    ):
        _advanced(comfy, model, noise, ddim, sigmas, empty)
    # inverting up to sigma 1: ComfyUI's LATENT x / (1 - 1) was NaN; below 1 it is exact
    off = comfy.custom.DisableNoise().get_noise()[0]
    inverse = _node(comfy, "DDIMCoreInversionSampler", fixed_point_iters=8, tol=1e-6)
    x0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.5
    with pytest.raises(ValueError, match=r"climb to 1, pure noise .*SplitSigmas"):
        _advanced(comfy, model, off, inverse, sigmas.flip(0), x0)
    low = comfy.custom.SplitSigmas().get_sigmas(sigmas, 1)[1]
    z = _advanced(comfy, model, off, inverse, low.flip(0), x0)
    ddim = _node(comfy, "DDIMCoreSampler", eta=0.0, s_noise=1.0)
    assert float((_advanced(comfy, model, off, ddim, low, z) - x0).abs().max()) <= 1e-5


def _flow_round_trip(comfy):  # type: ignore[no-untyped-def]
    """A FLOW model, the simple scheduler's 20 sigmas below sigma 1 (descending), DisableNoise,
    and the DDIM Inversion Sampler (exact, tol 1e-6) and DDIM Sampler (eta 0) that invert
    along them and sample back."""
    model = _flow_model(comfy)
    sigmas = comfy.custom.BasicScheduler().get_sigmas(model, "simple", 20, 1.0)[0]
    low = comfy.custom.SplitSigmas().get_sigmas(sigmas, 1)[1]
    off = comfy.custom.DisableNoise().get_noise()[0]
    inverse = _node(comfy, "DDIMCoreInversionSampler", fixed_point_iters=8, tol=1e-6)
    ddim = _node(comfy, "DDIMCoreSampler", eta=0.0, s_noise=1.0)
    return model, low, off, inverse, ddim


@needs_comfyui
def test_inversion_on_a_rectified_flow_model_takes_any_order(comfy) -> None:  # type: ignore[no-untyped-def]
    """A FLOW model's latent enters a sampler as (1 - sigmas[0]) x0 and leaves divided by
    1 - sigmas[-1]; the DDIM Inversion Sampler given a stock scheduler's descending sigmas
    or FlipSigmas' (0.0001 for 0) inverts as from the ascending ones (they missed the latent
    by 1.7 and 1.7e-4 in a round trip)."""
    import torch

    model, low, off, inverse, ddim = _flow_round_trip(comfy)
    x0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.5
    want = _advanced(comfy, model, off, inverse, low.flip(0), x0)
    for up in (low, comfy.custom.FlipSigmas().get_sigmas(low)[0]):
        z = _advanced(comfy, model, off, inverse, up, x0)
        assert rel(z, want) <= TOLERANCE["float32"]
        assert float((_advanced(comfy, model, off, ddim, low, z) - x0).abs().max()) <= 1e-5


@needs_comfyui
def test_a_half_flow_latent_inverts_exactly_from_ascending_sigmas(comfy) -> None:  # type: ignore[no-untyped-def]
    """docs/guides/comfyui.md: a bfloat16 latent on a FLOW model round-trips exactly from
    ascending sigmas (the pack's Flip, ComfyUI's FlipSigmas), while from a stock scheduler's
    descending ones ComfyUI rounds (1 - sigmas[0]) x0 to bfloat16 first: about 1e-2 off."""
    import torch

    model, low, off, inverse, ddim = _flow_round_trip(comfy)
    x0 = (torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.5).bfloat16()
    misses = {}
    for label, up in (
        ("flip", _node(comfy, "DDIMCoreFlipSigmas", sigmas=low)),
        ("FlipSigmas", comfy.custom.FlipSigmas().get_sigmas(low)[0]),
        ("descending", low),
    ):
        z = _advanced(comfy, model, off, inverse, up, x0)
        back = _advanced(comfy, model, off, ddim, low, z)
        misses[label] = float((back - x0.float()).abs().max())
    assert misses["flip"] <= 1e-5 and misses["FlipSigmas"] <= 1e-5, misses
    assert 1e-3 < misses["descending"] < 2e-2, misses


@needs_comfyui
def test_inversion_is_exact_by_default(comfy) -> None:  # type: ignore[no-untyped-def]
    """DDIM Schedule -> Flip -> DDIM Inversion Sampler with its defaults in
    SamplerCustomAdvanced (DisableNoise), then the DDIM Sampler back: the input again."""
    from ddim_comfyui import core

    model = _model(comfy)
    x0 = model.model.diffusion_model.latent(8, seed=3)
    schema = comfy.nodes.NODE_CLASS_MAPPINGS["DDIMCoreInversionSampler"].GET_SCHEMA()
    defaults = {i.id: i.default for i in schema.inputs}
    assert defaults == {"fixed_point_iters": core.INVERSION_ITERS, "tol": core.INVERSION_TOL}
    trips, calls = {}, {}
    for label, options in (
        ("exact", defaults),
        ("one refinement", {"fixed_point_iters": 1, "tol": 0.0}),
        ("plain", {"fixed_point_iters": 0, "tol": 0.0}),
    ):
        trips[label], calls[label] = _round_trip(comfy, model, x0, **options)
    assert trips["exact"] <= 1e-5 < 1e-2 < trips["one refinement"] < trips["plain"]
    assert calls["plain"] == 20 and calls["one refinement"] == 20 * 2
    assert 20 < calls["exact"] <= 20 * (core.INVERSION_ITERS + 1)


@needs_comfyui
def test_readme_figures(comfy) -> None:  # type: ignore[no-untyped-def]
    """The README's figures measured in ComfyUI, marked `comfyui.*` and checked as
    tests/test_figures.py checks the others (they were unmarked and those of an earlier
    inversion: 2.7e-6 in 104 model calls with the defaults, one refinement in 60, and a half
    precision model's 7.5e-4 in 183 calls, more than the 180 that 8 refinements allow)."""
    import torch
    from ddim_comfyui import core
    from test_figures import check

    from ddim_core.implicit import ToleranceWarning

    model = _model(comfy)
    unet = model.model.diffusion_model
    sigmas = comfy.custom.BasicScheduler().get_sigmas(model, "normal", 20, 1.0)[0]
    x = unet.latent(8, seed=1)
    off = comfy.custom.DisableNoise().get_noise()[0]
    seeded = comfy.custom.RandomNoise().get_noise(42)[0]
    ddim = _node(comfy, "DDIMCoreSampler", eta=1.0, s_noise=1.0)
    first, second = (_advanced(comfy, model, off, ddim, sigmas, x) for _ in range(2))
    ours = _advanced(comfy, model, seeded, ddim, sigmas, x)
    ancestral = comfy.samplers.sampler_object("euler_ancestral")
    theirs = _advanced(comfy, model, seeded, ancestral, sigmas, x)
    figures: dict[str, Any] = {
        "repeat": float((first - second).abs().max()),
        "ancestral": rel(ours, theirs),
        "ancestral_std": float(theirs.std()),
    }
    x0 = unet.latent(8, seed=3)
    defaults = {"fixed_point_iters": core.INVERSION_ITERS, "tol": core.INVERSION_TOL}
    for key, options in (
        ("exact", defaults),
        ("one", {"fixed_point_iters": 1, "tol": 0.0}),
        ("plain", {"fixed_point_iters": 0, "tol": 0.0}),
    ):
        figures[f"trip_{key}"], figures[f"calls_{key}"] = _round_trip(comfy, model, x0, **options)
    outs, calls = _stock_ksamplers(comfy, model, x0)
    figures["ksampler"] = float((outs["ddim_core"] - outs["euler"]).abs().max())
    figures["ksampler_calls"], figures["euler_calls"] = calls["ddim_core"], calls["euler"]
    big = unet.latent(64, seed=3)
    with warnings.catch_warnings():  # a step or two end above tol (float16: all of them)
        warnings.simplefilter("ignore", ToleranceWarning)
        figures["trip_64"], figures["calls_64"] = _round_trip(comfy, model, big, **defaults)
        unet.dtype = torch.float16  # ComfyUI runs the model in float16: its input and output
        figures["trip_half"], figures["calls_half"] = _round_trip(comfy, model, big, **defaults)
    check("comfyui", figures)


@needs_comfyui
def test_half_precision_figures(comfy) -> None:  # type: ignore[no-untyped-def]
    """docs/guides/comfyui.md's half-precision figures (markers `comfyui_half.*`): a bfloat16
    latent against its float32 run (the guide said 2.0e-3 at eta 0, where promoting it before
    the first step gives the float32 run itself, and 6.8e-3 at eta 1, 2.5e-6 for inversion),
    and a float16 model's inversion with and without the stall stop."""
    import torch
    from ddim_comfyui import core
    from test_figures import check

    from ddim_core.implicit import ToleranceWarning

    model = _model(comfy)
    unet = model.model.diffusion_model
    down = _schedule(comfy, model, 20)
    x_T = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5)) * float(down[0])
    figures: dict[str, Any] = {}
    for key, eta, theirs in (("eta0", 0.0, "euler"), ("eta1", 1.0, "ancestral")):
        _, half, full = _half_runs(
            comfy, model, _node(comfy, "DDIMCoreSampler", eta=eta, s_noise=1.0), down, x_T
        )
        figures[key] = float((half - full).abs().max())
        stock = comfy.samplers.sampler_object("euler" if eta == 0 else "euler_ancestral")
        _, half, full = _half_runs(comfy, model, stock, down, x_T)
        figures[theirs] = float((half - full).abs().max())
    x0 = unet.latent(8, seed=3)
    inverse = _node(comfy, "DDIMCoreInversionSampler", fixed_point_iters=8, tol=1e-6)
    _, z, _ = _half_runs(comfy, model, inverse, _node(comfy, "DDIMCoreFlipSigmas", sigmas=down), x0)
    off = comfy.custom.DisableNoise().get_noise()[0]
    forward = _node(comfy, "DDIMCoreSampler", eta=0.0, s_noise=1.0)
    back = _advanced(comfy, model, off, forward, down, z)
    figures["inversion"] = float((back - x0.bfloat16().float()).abs().max())
    unet.dtype = torch.float16  # as test_inversion_of_a_half_precision_model_stops_...
    unet.network_like = True
    defaults = {"fixed_point_iters": core.INVERSION_ITERS, "tol": core.INVERSION_TOL}
    with warnings.catch_warnings(), pytest.MonkeyPatch.context() as patch:
        warnings.simplefilter("ignore", ToleranceWarning)  # float16's floor is above tol
        figures["trip_stall"], figures["calls_stall"] = _round_trip(comfy, model, x0, **defaults)
        patch.setattr(core, "computes_in_half", lambda model: False)  # no stall stop
        figures["trip_every"], figures["calls_every"] = _round_trip(comfy, model, x0, **defaults)
    check("comfyui_half", figures)


@needs_comfyui
def test_inversion_of_a_half_precision_model_stops_where_its_residual_stalls(comfy) -> None:  # type: ignore[no-untyped-def]
    """A model ComfyUI runs in float16 (its input cast to float16, its output rounded there,
    the latents float32): the DDIM Inversion Sampler with its defaults stops refining steps
    whose residual has stalled at the model's rounding, with fewer model calls than every
    refinement takes and a round trip as good (measured: 102 calls for 20 steps against 180,
    round trip 1.4e-3 against 2.2e-3); the warning names the stall."""
    import torch
    from ddim_comfyui import core

    model = _model(comfy)
    unet = model.model.diffusion_model
    unet.dtype = torch.float16  # what BaseModel.get_dtype reads: apply_model casts to it
    unet.network_like = True  # a UNet's rounding: up to an ulp, changing with any input change
    assert core.computes_in_half(model.model)
    down = _schedule(comfy, model, 20)
    up = _node(comfy, "DDIMCoreFlipSigmas", sigmas=down)
    off = comfy.custom.DisableNoise().get_noise()[0]
    forward = _node(comfy, "DDIMCoreSampler", eta=0.0, s_noise=1.0)
    x0 = unet.latent(8, seed=3)
    inverse = _node(
        comfy,
        "DDIMCoreInversionSampler",
        fixed_point_iters=core.INVERSION_ITERS,
        tol=core.INVERSION_TOL,
    )
    trips, calls = {}, {}
    for label in ("default", "every refinement"):
        unet.calls = 0
        with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if label == "every refinement":  # the node as it was: no stall stop
                patch.setattr(core, "computes_in_half", lambda model: False)
            z = _advanced(comfy, model, off, inverse, up, x0)
        calls[label] = unet.calls
        back = _advanced(comfy, model, off, forward, down, z)
        trips[label] = float((back - x0).abs().max())
        (warning,) = caught  # every step ends above tol=1e-6: float16's floor is higher
        assert ("stalled" in str(warning.message)) == (label == "default")
    assert calls["default"] < calls["every refinement"]
    assert trips["default"] <= 1.5 * trips["every refinement"] + 1e-6


@needs_comfyui
def test_sigma_lists_comfyuis_samplers_accept(comfy) -> None:  # type: ignore[no-untyped-def]
    """Repeated sigmas (the stock KSampler's `simple` schedule at 500 steps, denoise 0.3), one
    sigma (SplitSigmas at the last step), and a NaN sigma's clear error."""
    import torch

    model = _model(comfy)
    unet = model.model.diffusion_model
    x = unet.latent(4, seed=4)
    outs, calls = _stock_ksamplers(comfy, model, x)
    sigmas = comfy.samplers.calculate_sigmas(
        model.get_model_object("model_sampling"), "simple", 1666
    )
    assert len(set(sigmas[-501:].tolist())) < 500  # repeats: zero-length steps
    assert float((outs["ddim_core"] - outs["euler"]).abs().max()) <= 1e-5
    assert calls["euler"] == 500 and calls["ddim_core"] < 500  # a repeat costs no call
    off = comfy.custom.DisableNoise().get_noise()[0]
    normal = comfy.custom.BasicScheduler().get_sigmas(model, "normal", 20, 1.0)[0]
    last = comfy.custom.SplitSigmas().get_sigmas(normal, 20)[1]
    assert last.shape == (1,)
    ddim = _node(comfy, "DDIMCoreSampler", eta=0.0, s_noise=1.0)
    unet.calls = 0
    assert torch.equal(_advanced(comfy, model, off, ddim, last, x), x) and unet.calls == 0
    broken = normal.clone()
    broken[3] = float("nan")
    with pytest.raises(ValueError, match=r"sigmas must be finite and >= 0, got sigmas\[3\] = nan"):
        _advanced(comfy, model, off, ddim, broken, x)


@needs_comfyui
def test_install_refuses_the_checkouts_parent() -> None:
    from ddim_comfyui import install

    assert COMFYUI_PATH is not None
    with pytest.raises(ValueError, match="not a ComfyUI checkout"):
        install.install(Path(COMFYUI_PATH).parent)


def test_shim_in_removes_only_the_shim_it_wrote(tmp_path: Path) -> None:
    """What the fixture above does to a checkout (runs without ComfyUI): a user's installed
    shim stays, and a foreign folder of that name is refused and kept."""
    from ddim_comfyui import install

    root = tmp_path / "ComfyUI"
    (root / "comfy").mkdir(parents=True)
    (root / "comfy" / "samplers.py").write_text("")
    (root / "nodes.py").write_text("")
    (root / "custom_nodes").mkdir()
    target = root / "custom_nodes" / install.SHIM_DIR
    with shim_in(root) as shim:
        assert shim == target and target.is_dir()
    assert not target.exists()
    install.install(root)  # the user's own
    with shim_in(root):
        pass
    assert (target / "__init__.py").is_file()
    install.uninstall(root)
    target.mkdir()
    (target / "__init__.py").write_text("# someone else's\n")
    with pytest.raises(ValueError, match="left as is"), shim_in(root):
        pass
    assert (target / "__init__.py").read_text() == "# someone else's\n"


@needs_comfyui
def test_inversion_with_comfyuis_own_flip_sigmas_is_exact(comfy) -> None:  # type: ignore[no-untyped-def]
    """ComfyUI's FlipSigmas starts at 0.0001 in place of 0; the DDIM Inversion Sampler counts
    that as the clean latent's 0, so sampling back down to 0 returns the latent (it was off by
    about 1e-4 times the noise: 1.4e-4 at the `simple` scheduler's 20 steps)."""
    model = _model(comfy)
    x0 = model.model.diffusion_model.latent(8, seed=3)
    off = comfy.custom.DisableNoise().get_noise()[0]
    down = comfy.custom.BasicScheduler().get_sigmas(model, "simple", 20, 1.0)[0]
    up = comfy.custom.FlipSigmas().get_sigmas(down)[0]
    assert float(up[0]) == pytest.approx(1e-4)
    inverse = _node(comfy, "DDIMCoreInversionSampler", fixed_point_iters=8, tol=1e-6)
    z = _advanced(comfy, model, off, inverse, up, x0)
    ddim = _node(comfy, "DDIMCoreSampler", eta=0.0, s_noise=1.0)
    assert float((_advanced(comfy, model, off, ddim, down, z) - x0).abs().max()) <= 1e-5


@needs_comfyui
def test_inversion_keeps_the_latent_outside_a_noise_mask(comfy) -> None:  # type: ignore[no-untyped-def]
    """SamplerCustom (add_noise off) with a latent noise mask: ComfyUI's euler over FlipSigmas
    leaves the latent as is outside the mask, and so does the DDIM Inversion Sampler now (it
    moved it by 4.1), so sampling back returns the whole latent."""
    import torch

    model = _model(comfy)
    x0 = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(0)) * 0.5
    mask = torch.zeros(2, 1, 4, 4)
    mask[..., :2, :] = 1.0
    down = _schedule(comfy, model, 10)
    inverse = _node(comfy, "DDIMCoreInversionSampler", fixed_point_iters=8, tol=1e-6)
    ddim = _node(comfy, "DDIMCoreSampler", eta=0.0, s_noise=1.0)

    def custom(sampler: Any, sigmas: Any, latent: Any) -> Any:
        args = (model, False, 0, 1.0, _cond(), _cond(), sampler, sigmas, latent)
        return comfy.custom.SamplerCustom().sample(*args)[0]

    z = custom(inverse, down.flip(0), {"samples": x0, "noise_mask": mask})
    assert torch.equal(z["samples"][..., 2:, :], x0[..., 2:, :])
    back = custom(ddim, down, z)["samples"]
    assert float((back - x0).abs().max()) <= 1e-5


class GuidedUNet(AnalyticUNet):
    """AnalyticUNet whose output moves with the conditioning (0.1 times the mean of its
    context), so that classifier-free guidance at cfg != 1 with two conds changes the result;
    any batch of timesteps (clamped to the mixture's 0 to 999)."""

    def __call__(self, xc, t, context=None, control=None, transformer_options=None, **kw):  # type: ignore[no-untyped-def]
        import torch

        b = xc.shape[0]
        steps = t.clamp(0, 999)  # an EDM model's timesteps are log sigmas
        eps = torch.cat(
            [
                super(GuidedUNet, self).__call__(xc[i : i + 1], steps[i : i + 1]).double()
                for i in range(b)
            ]
        )
        shift = context.double().mean(dim=(1, 2)).reshape(-1, 1, 1, 1)
        return (eps + 0.1 * shift).to(xc.dtype)


def _typed_model(comfy: types.SimpleNamespace, model_type: str, zsnr: bool = False) -> Any:
    """A ModelPatcher around a GuidedUNet with ComfyUI's model_sampling of `model_type`."""
    import torch

    cpu = torch.device("cpu")
    config = comfy.models_base.BASE({"disable_unet_model_creation": True})
    if zsnr:
        config.sampling_settings = {"zsnr": True}
    kind = getattr(comfy.model_base.ModelType, model_type)
    base = comfy.model_base.BaseModel(config, model_type=kind, device=cpu)
    base.diffusion_model = GuidedUNet()
    return comfy.model_patcher.ModelPatcher(base, load_device=cpu, offload_device=cpu)


def _conds(value: float) -> Any:
    import torch

    return [[torch.full((1, 1, 8), value), {}]]


@needs_comfyui
@pytest.mark.parametrize(
    ("model_type", "zsnr"),
    [("EPS", False), ("V_PREDICTION", False), ("V_PREDICTION", True), ("EDM", False)],
)
def test_ddim_core_equals_euler_and_euler_ancestral_on_every_model_sampling(  # type: ignore[no-untyped-def]
    comfy, model_type: str, zsnr: bool
) -> None:
    """DDIM at eta 0 is euler and at 0 < eta <= 1 euler_ancestral of the same eta and s_noise
    (SamplerEulerAncestral, the same seed) on EPS, V_PREDICTION (with zsnr: sigma_max 4519)
    and EDM models: a batch of 2 under cfg 5 with two conds."""
    import torch

    model = _typed_model(comfy, model_type, zsnr)
    x = torch.zeros(2, 4, 4, 4)
    pos, neg = _conds(1.0), _conds(-1.0)

    def ksampler(name: str) -> Any:
        args = (model, 11, 8, 5.0, name, "karras", pos, neg, {"samples": x})
        return comfy.nodes.KSampler().sample(*args, denoise=1.0)[0]["samples"]

    euler = ksampler("euler")
    assert rel(ksampler("ddim_core"), euler) <= TOLERANCE["float32"]
    sigmas = comfy.custom.BasicScheduler().get_sigmas(model, "normal", 8, 1.0)[0]
    for eta, s_noise in ((1.0, 1.0), (0.5, 0.7)):
        outs = []
        for sampler in (
            _node(comfy, "DDIMCoreSampler", eta=eta, s_noise=s_noise),
            comfy.custom.SamplerEulerAncestral().get_sampler(eta, s_noise)[0],
        ):
            args = (model, True, 42, 5.0, pos, neg, sampler, sigmas, {"samples": x})
            outs.append(comfy.custom.SamplerCustom().sample(*args)[0]["samples"])
        assert rel(*outs) <= TOLERANCE["float32"], (eta, s_noise)


@needs_comfyui
def test_stock_ksamplers_with_ddim_core_equal_euler_on_batches_and_masks(comfy) -> None:  # type: ignore[no-untyped-def]
    """The stock KSampler with ddim_core under every scheduler of comfy.samplers at denoise
    0.6, on a batch of 3 with a noise mask per sample, equals euler (and ComfyUI's own "ddim"
    without a mask); KSamplerAdvanced too, with start_at_step, end_at_step and
    return_with_leftover_noise; its progress bar counts every step."""
    import comfy.utils as comfy_utils  # `comfy` is the fixture here
    import torch

    model = _model(comfy)
    unet = model.model.diffusion_model
    x = torch.cat([unet.latent(4, seed=s) for s in (1, 2, 3)])
    mask = torch.zeros(3, 1, 4, 4)
    mask[0, :, :2], mask[1, :, :, 1:], mask[2] = 1.0, 1.0, 0.5
    for scheduler in comfy.samplers.SCHEDULER_NAMES:
        for latent in ({"samples": x}, {"samples": x, "noise_mask": mask}):
            outs = {
                name: comfy.nodes.KSampler().sample(
                    model, 7, 6, 1.0, name, scheduler, _cond(), _cond(), latent, denoise=0.6
                )[0]["samples"]
                for name in ("euler", "ddim_core", "ddim")
            }
            assert rel(outs["ddim_core"], outs["euler"]) <= TOLERANCE["float32"], scheduler
            if "noise_mask" not in latent:  # ComfyUI's ddim: euler, random noise in a mask
                assert rel(outs["ddim_core"], outs["ddim"]) <= TOLERANCE["float32"]
            else:
                assert torch.equal(outs["ddim_core"][0, :, 2:], x[0, :, 2:])
    steps = []
    update = comfy_utils.ProgressBar.update_absolute

    def counted(self: Any, value: Any, total: Any = None, preview: Any = None) -> Any:
        steps.append((value, total))
        return update(self, value, total, preview)

    for start, end, leftover in ((0, 6, "enable"), (4, 8, "enable"), (3, 10000, "disable")):
        for add_noise in ("enable", "disable"):
            outs = {}
            for name in ("euler", "ddim_core"):
                steps.clear()
                with pytest.MonkeyPatch.context() as mp:
                    mp.setattr(comfy_utils.ProgressBar, "update_absolute", counted)
                    outs[name] = comfy.nodes.KSamplerAdvanced().sample(
                        model, add_noise, 5, 10, 1.0, name, "normal", _cond(), _cond(),
                        {"samples": x}, start, end, leftover,
                    )[0]["samples"]  # fmt: skip
                n = min(end, 10) - start
                assert steps == [(i + 1, n) for i in range(n)], name
            assert rel(outs["ddim_core"], outs["euler"]) <= TOLERANCE["float32"], (start, end)


def _spied(comfy: types.SimpleNamespace, sampler: Any, seen: list[Any]) -> Any:
    """The SAMPLER with its function's dtypes recorded in `seen`: the latent each step starts
    from (the callback's x), then the function's result (before ComfyUI's float32 cast)."""
    function = sampler.sampler_function

    def run(model, x, sigmas, extra_args=None, callback=None, disable=None, **options):  # type: ignore[no-untyped-def]
        def report(d: dict[str, Any]) -> None:
            seen.append(d["x"].dtype)
            if callback is not None:
                callback(d)

        out = function(model, x, sigmas, extra_args, report, disable, **options)
        seen.append(out.dtype)
        return out

    return comfy.samplers.KSAMPLER(run, sampler.extra_options, sampler.inpaint_options)


def _half_runs(
    comfy: types.SimpleNamespace, model: Any, sampler: Any, sigmas: Any, x: Any
) -> tuple[list[Any], Any, Any]:
    """`sampler` from x in bfloat16 (its dtypes, its latent) and from the same values in
    float32 (the latent), in SamplerCustomAdvanced with DisableNoise (seed 0)."""
    import torch

    off = comfy.custom.DisableNoise().get_noise()[0]
    seen: list[Any] = []
    half = _advanced(comfy, model, off, _spied(comfy, sampler, seen), sigmas, x.bfloat16())
    full = _advanced(comfy, model, off, sampler, sigmas, x.bfloat16().to(torch.float32))
    return seen, half, full


@needs_comfyui
def test_half_precision_latents_step_in_comfyuis_dtype(comfy) -> None:  # type: ignore[no-untyped-def]
    """A bfloat16 latent: ComfyUI's euler and euler_ancestral step it in float32 from the first
    step on (x + d * dt promotes the latent with the model's float32 denoised and the float32
    sigmas), and so do the DDIM Sampler (eta 0 and 1) and the DDIM Inversion Sampler (as
    euler over the flipped sigmas): the same dtype at every step and out. Kept in bfloat16,
    ours missed its float32 run by 2.0e-2 (max abs; eta 1: 1.7e-2) where euler misses its
    own by 6.3e-3 (euler_ancestral 8.2e-3); promoted before the first step, by 0 (eta 1: 7.0e-3,
    its noise drawn in bfloat16 as euler_ancestral's), within 1e-2 of theirs (their model is
    given the sigmas in bfloat16, ours in float32). test_half_precision_figures: the guide's."""
    import torch

    model = _model(comfy)
    unet = model.model.diffusion_model
    down = _schedule(comfy, model, 20)
    up = _node(comfy, "DDIMCoreFlipSigmas", sigmas=down)
    x_T = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5)) * float(down[0])
    bf16, f32 = torch.bfloat16, torch.float32
    stepped = [bf16] + [f32] * 20  # x at each of the 20 steps, then the result
    ours_stepped = [f32] * 21  # the same values (bfloat16 ones are float32's), promoted first
    for eta, theirs in ((0.0, "euler"), (1.0, "euler_ancestral")):
        ours = _node(comfy, "DDIMCoreSampler", eta=eta, s_noise=1.0)
        seen, half, full = _half_runs(comfy, model, ours, down, x_T)
        seen_c, half_c, full_c = _half_runs(
            comfy, model, comfy.samplers.sampler_object(theirs), down, x_T
        )
        assert seen_c == stepped and seen == ours_stepped, (theirs, seen)
        ours_off = float((half - full).abs().max())
        theirs_off = float((half_c - full_c).abs().max())
        assert float((full - full_c).abs().max()) <= 1e-5  # float32: the same sampler
        assert ours_off <= theirs_off and ours_off <= 7e-3, (eta, ours_off, theirs_off)
        assert eta > 0 or ours_off == 0.0  # eta 0: the float32 run (eta 1 draws bfloat16 noise)
        assert float((half - half_c).abs().max()) <= 1e-2
    x0 = unet.latent(8, seed=3)
    inverse = _node(comfy, "DDIMCoreInversionSampler", fixed_point_iters=8, tol=1e-6)
    seen, z, z_full = _half_runs(comfy, model, inverse, up, x0)
    seen_c, _, _ = _half_runs(comfy, model, comfy.samplers.sampler_object("euler"), up, x0)
    assert seen_c == stepped and seen == ours_stepped, seen
    assert float((z - z_full).abs().max()) <= 1e-4  # was 0.95 in bfloat16 steps
    forward = _node(comfy, "DDIMCoreSampler", eta=0.0, s_noise=1.0)
    off = comfy.custom.DisableNoise().get_noise()[0]
    back = _advanced(comfy, model, off, forward, down, z)
    assert float((back - x0.bfloat16().float()).abs().max()) <= 1e-5  # was 3.0e-2
