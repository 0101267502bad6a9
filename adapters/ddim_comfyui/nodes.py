"""The thin ComfyUI layer: node classes built from `core.NODES` and `unsampler.NODES` with the
V3 API (`comfy_api.latest`) where the running ComfyUI has it, else the V1 mappings; never both.
The LATENT nodes (Unsampler, Resampler) run their sampler functions through `_guide`.

Imported only inside ComfyUI (by the shim folder `ddim-core comfyui install` writes).
"""

from __future__ import annotations

from typing import Any

import comfy.samplers as samplers
from comfy.k_diffusion import sampling as k_sampling

from . import unsampler
from .core import KSAMPLER_NAMES, NODES, NodeSpec, Param, sample_ddim_core

try:
    from comfy_api.latest import ComfyExtension, io

    HAVE_V3 = True
except ImportError:  # a ComfyUI before the V3 node API
    HAVE_V3 = False


def register() -> list[str]:
    """Offer "ddim_core" in ComfyUI's built-in sampler list (the stock KSampler's menu).

    `comfy.samplers.ksampler(name)` finds it as `comfy.k_diffusion.sampling.sample_ddim_core`.
    Inversion is not offered there: the stock KSampler adds noise first. Idempotent.

    Returns
    -------
    list of str
        The sampler names added.

    Examples
    --------
    >>> register()  # doctest: +SKIP
    ['ddim_core']
    """
    k_sampling.sample_ddim_core = sample_ddim_core
    lists = [samplers.KSAMPLER_NAMES, samplers.SAMPLER_NAMES, samplers.KSampler.SAMPLERS]
    for names in lists:
        for name in KSAMPLER_NAMES:
            if name not in names:
                names.append(name)
    return list(KSAMPLER_NAMES)


ALL_NODES = (*NODES, *unsampler.NODES)


def _guide(
    model: Any,
    positive: Any,
    negative: Any,
    cfg: float,
    latent: dict[str, Any],
    function: Any,
    sigmas: Any,
    start: Any = None,
) -> Any:
    """Run `function` (a sampler function) as SamplerCustom runs a SAMPLER: ComfyUI's CFG on
    the model, the latent's noise mask, a preview callback; no noise is added. The sampler
    starts at the latent's samples, or at `start` (samples as a node returns them) if given;
    outside the noise mask ComfyUI keeps the latent's samples."""
    import comfy.sample
    import comfy.utils
    import latent_preview
    import torch

    samples = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
    noise = torch.zeros(samples.size(), dtype=samples.dtype, layout=samples.layout, device="cpu")
    callback = latent_preview.prepare_callback(model, sigmas.shape[-1] - 1)
    if start is not None:
        function = _starting_at(
            model, comfy.sample.fix_empty_latent_channels(model, start), function
        )
    return comfy.sample.sample_custom(
        model,
        noise,
        cfg,
        samplers.KSAMPLER(function),
        sigmas,
        positive,
        negative,
        samples,
        noise_mask=latent.get("noise_mask"),
        callback=callback,
        disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED,
        seed=0,
    )


def _starting_at(model: Any, start: Any, function: Any) -> Any:
    """`function` from `start` rather than from the x ComfyUI made of the latent image: `start`
    taken into the model's latent space and scaled to the first sigma as ComfyUI scales a
    latent image (with no noise)."""

    def run(m: Any, x: Any, sigmas: Any, *args: Any, **kwargs: Any) -> Any:
        # in start's own dtype, as ComfyUI's samplers take a LATENT (x has the latent's it
        # was given in place of start: a half one would round start, the Unsampler's float32)
        image = model.model.process_latent_in(start.to(x.device))
        scaling = model.get_model_object("model_sampling").noise_scaling
        zeros = image.new_zeros(x.shape)
        return function(m, scaling(sigmas[0], zeros, image), sigmas, *args, **kwargs)

    return run


def _result(spec: NodeSpec, inputs: dict[str, Any]) -> Any:
    extra = {"guide": _guide} if spec.output == "LATENT" else {}
    out = spec.run(**inputs, **extra)
    if spec.output == "SAMPLER":
        function, options = out
        return samplers.KSAMPLER(function, extra_options=options)
    return out


# --- V3 ---------------------------------------------------------------------------------------


def _v3_input(p: Param) -> Any:
    if p.kind == "MODEL":
        return io.Model.Input(p.name, tooltip=p.tooltip)
    if p.kind == "SIGMAS":
        return io.Sigmas.Input(p.name, tooltip=p.tooltip)
    if p.kind == "CONDITIONING":
        return io.Conditioning.Input(p.name, tooltip=p.tooltip)
    if p.kind == "LATENT":
        return io.Latent.Input(p.name, tooltip=p.tooltip)
    if p.kind == "COMBO":
        return io.Combo.Input(p.name, options=list(p.options), default=p.default, tooltip=p.tooltip)
    number = io.Int if p.kind == "INT" else io.Float
    extra = {} if p.kind == "INT" else {"round": False}
    return number.Input(
        p.name,
        default=p.default,
        min=p.min,
        max=p.max,
        step=p.step,
        tooltip=p.tooltip,
        **extra,
    )


def _v3_node(spec: NodeSpec) -> type:
    outputs = {"SAMPLER": io.Sampler, "SIGMAS": io.Sigmas, "LATENT": io.Latent}
    output = outputs[spec.output].Output()

    def define_schema(cls: type, /) -> Any:
        return io.Schema(
            node_id=spec.node_id,
            display_name=spec.display_name,
            category=spec.category,
            description=spec.description,
            inputs=[_v3_input(p) for p in spec.inputs],
            outputs=[output],
        )

    def execute(cls: type, /, **inputs: Any) -> Any:
        return io.NodeOutput(_result(spec, inputs))

    body = {"define_schema": classmethod(define_schema), "execute": classmethod(execute)}
    return type(spec.node_id, (io.ComfyNode,), body)


# --- V1 ---------------------------------------------------------------------------------------


def _v1_input(p: Param) -> tuple[Any, ...]:
    if p.kind in ("MODEL", "SIGMAS", "CONDITIONING", "LATENT"):
        return (p.kind, {"tooltip": p.tooltip})
    if p.kind == "COMBO":
        return (list(p.options), {"default": p.default, "tooltip": p.tooltip})
    opts = {"default": p.default, "min": p.min, "max": p.max, "step": p.step}
    if p.kind == "FLOAT":
        opts["round"] = False
    opts["tooltip"] = p.tooltip
    return (p.kind, opts)


def _v1_node(spec: NodeSpec) -> type:
    def input_types(cls: type, /) -> dict[str, Any]:
        return {"required": {p.name: _v1_input(p) for p in spec.inputs}}

    def run(self: Any, /, **inputs: Any) -> tuple[Any]:
        return (_result(spec, inputs),)

    body = {
        "INPUT_TYPES": classmethod(input_types),
        "RETURN_TYPES": (spec.output,),
        "FUNCTION": "run",
        "CATEGORY": spec.category,
        "DESCRIPTION": spec.description,
        "run": run,
    }
    return type(spec.node_id, (), body)


def load() -> dict[str, Any]:
    """The names a custom-node module exports: `comfy_entrypoint` (V3) or the V1 mappings.

    Also calls `register`. The shim folder `ddim-core comfyui install` writes does
    ``globals().update(load())``.

    Returns
    -------
    dict
        ``{"comfy_entrypoint": ...}`` with ComfyUI's V3 API, else ``NODE_CLASS_MAPPINGS`` and
        ``NODE_DISPLAY_NAME_MAPPINGS``.

    Examples
    --------
    >>> sorted(load())  # doctest: +SKIP
    ['comfy_entrypoint']
    """
    register()
    if HAVE_V3:
        node_list = [_v3_node(spec) for spec in ALL_NODES]

        class DDIMCoreExtension(ComfyExtension):  # type: ignore[misc]
            async def get_node_list(self) -> list[type]:
                return node_list

        async def comfy_entrypoint() -> Any:
            return DDIMCoreExtension()

        return {"comfy_entrypoint": comfy_entrypoint}
    return {
        "NODE_CLASS_MAPPINGS": {spec.node_id: _v1_node(spec) for spec in ALL_NODES},
        "NODE_DISPLAY_NAME_MAPPINGS": {spec.node_id: spec.display_name for spec in ALL_NODES},
    }
