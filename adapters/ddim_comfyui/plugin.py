"""The ComfyUI node pack's ddim_core plugin (comfy is imported only on register())."""

from __future__ import annotations

from ddim_core.hookspecs import Adapter, hookimpl


def _register() -> list[str]:
    from .nodes import register

    return register()


@hookimpl
def ddim_core_adapter() -> Adapter:
    return Adapter(
        name="comfyui",
        host="comfy",
        provides=(
            "nodes: DDIM Sampler, DDIM Inversion Sampler, DDIM Schedule, Flip to Inversion Sigmas",
            "KSampler samplers: ddim_core, ddim_core_inverse",
        ),
        register=_register,
    )
