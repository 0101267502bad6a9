"""The node pack inside a real ComfyUI (runs when COMFYUI_PATH points to a checkout).

Run it with a Python that has ComfyUI's requirements and ddim-core installed:
    COMFYUI_PATH=/path/to/ComfyUI python -m pytest tests/test_comfyui_integration.py
`ddim-core comfyui install` writes the shim into that checkout (removed again at the end);
ComfyUI's own loader loads it; the nodes' samplers run through comfy.samplers.KSAMPLER with
ComfyUI's own ModelSamplingDiscrete and an analytic model, against ddim_core.sample.
"""

from __future__ import annotations

import asyncio
import os
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import TOLERANCE, rel

import ddim_core as dc

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
pytestmark = pytest.mark.skipif(not COMFYUI_PATH, reason="set COMFYUI_PATH to a ComfyUI checkout")
# ComfyUI's default discrete schedule (SD 1.x): "linear" in sqrt space = diffusers' scaled_linear
CONFIG = dc.DDIMConfig(
    beta_schedule="scaled_linear",
    beta_start=0.00085,
    beta_end=0.012,
    clip_sample=False,
    timestep_spacing="trailing",
)


@pytest.fixture(scope="module")
def comfy() -> Iterator[types.SimpleNamespace]:
    from ddim_comfyui import install

    assert COMFYUI_PATH is not None
    sys.path.insert(0, COMFYUI_PATH)
    shim = install.install(COMFYUI_PATH)
    try:
        import comfy.cli_args
        import torch

        if not torch.cuda.is_available():
            comfy.cli_args.args.cpu = True  # ComfyUI's --cpu, before model_management loads
        import comfy.model_sampling
        import comfy.samplers
        import nodes

        loaded = asyncio.run(nodes.load_custom_node(str(shim), module_parent="custom_nodes"))
        yield types.SimpleNamespace(
            loaded=loaded, nodes=nodes, samplers=comfy.samplers, model_sampling=comfy.model_sampling
        )
    finally:
        install.uninstall(COMFYUI_PATH)
        sys.path.remove(COMFYUI_PATH)


class AnalyticModel:
    """What KSAMPLER.sample gets as model_wrap: `inner_model.model_sampling`, and a call that
    returns the denoised x0 (ComfyUI's EPS convention: x - sigma * eps(x * c_in, t))."""

    def __init__(self, comfy: types.SimpleNamespace) -> None:
        ms_mod = comfy.model_sampling

        class ModelSampling(ms_mod.ModelSamplingDiscrete, ms_mod.EPS):
            pass

        self.model_sampling = ModelSampling()
        self.inner_model = types.SimpleNamespace(model_sampling=self.model_sampling)
        self.gm = dc.GaussianMixture.create([[0.5] * 4, [-0.5] * 4], [0.4, 0.6], CONFIG)
        self.calls = 0

    def get_model_object(self, name: str) -> object:
        return getattr(self, name)

    def __call__(self, x, sigma, model_options=None, seed=None):  # type: ignore[no-untyped-def]
        self.calls += 1
        t = round(float(self.model_sampling.timestep(sigma)[0]))
        c_in = (1 + sigma[:, None] ** 2) ** -0.5
        eps = self.gm(x.double() * c_in.double(), t).to(x.dtype)
        return x - sigma[:, None] * eps


def _execute(comfy: types.SimpleNamespace, node_id: str, **inputs):  # type: ignore[no-untyped-def]
    node = comfy.nodes.NODE_CLASS_MAPPINGS[node_id]
    return node.execute(**inputs).args[0]


def _schedule(comfy: types.SimpleNamespace, model: AnalyticModel, steps: int):  # type: ignore[no-untyped-def]
    """The DDIM Schedule node: trailing spacing on the model's own sigmas."""
    return _execute(
        comfy,
        "DDIMCoreSchedule",
        model=model,
        steps=steps,
        spacing="trailing",
        steps_offset=0,
        denoise=1.0,
    )


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
        assert node.GET_SCHEMA().category.startswith("sampling/custom_sampling/")
    assert {"ddim_core", "ddim_core_inverse"} <= set(comfy.samplers.KSampler.SAMPLERS)


def test_ddim_sampler_and_schedule_through_comfy_samplers(comfy) -> None:  # type: ignore[no-untyped-def]
    import torch

    model = AnalyticModel(comfy)
    sigmas = _schedule(comfy, model, 10)
    noise = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    expected = dc.sample(model.gm, noise.double(), CONFIG, 10)
    steps: list[int] = []
    for sampler in (
        _execute(comfy, "DDIMCoreSampler", eta=0.0, s_noise=1.0),
        comfy.samplers.sampler_object("ddim_core"),  # the stock KSampler's lookup
    ):
        out = sampler.sample(
            model,
            sigmas,
            {},
            lambda i, den, x, total: steps.append(i),
            noise,
            latent_image=torch.zeros_like(noise),
            denoise_mask=None,
        )
        assert rel(out, expected) <= TOLERANCE["float32"]
    assert steps == list(range(10)) * 2


def test_inversion_round_trip_through_comfy_samplers(comfy) -> None:  # type: ignore[no-untyped-def]
    import torch

    model = AnalyticModel(comfy)
    down = _schedule(comfy, model, 10)
    up = _execute(comfy, "DDIMCoreFlipSigmas", sigmas=down)
    x0 = dc.sample(
        model.gm,
        torch.randn(3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64),
        CONFIG,
        10,
    ).float()
    inverse = _execute(comfy, "DDIMCoreInversionSampler", fixed_point_iters=20, tol=1e-6)
    zeros = torch.zeros_like(x0)
    z = inverse.sample(model, up, {}, None, zeros, latent_image=x0, denoise_mask=None)
    forward = _execute(comfy, "DDIMCoreSampler", eta=0.0, s_noise=1.0)
    # sampling starts from the inverted latent itself: no noise added (ComfyUI's add_noise off)
    back = forward.sample(model, down, {}, None, zeros, latent_image=z, denoise_mask=None)
    assert float((back - x0).abs().max()) <= 1e-4
    assert bool(torch.isfinite(z).all())


def test_install_refuses_the_checkouts_parent() -> None:
    from ddim_comfyui import install

    assert COMFYUI_PATH is not None
    with pytest.raises(ValueError, match="not a ComfyUI checkout"):
        install.install(Path(COMFYUI_PATH).parent)
