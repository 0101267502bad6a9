"""The ComfyUI node pack's ddim_core plugin (comfy is imported only on register())."""

from __future__ import annotations

from ddim_core.hookspecs import Adapter, hookimpl


@hookimpl
def ddim_core_adapter() -> Adapter:
    """The `ddim_core_adapter` hook: describes the ComfyUI adapter (host `comfy`).

    Returns
    -------
    Adapter

    Examples
    --------
    >>> ddim_core_adapter().host
    'comfy'
    """
    return Adapter(
        name="comfyui",
        host="comfy",
        provides=(
            "nodes: DDIM Sampler, DDIM Inversion Sampler, DDIM Schedule, Flip to Inversion Sigmas, "
            "EDICT / BDIA / BELM Sampler, Unsampler, Resampler",
            "KSampler sampler: ddim_core",
        ),
        register="ddim_comfyui.nodes:register",
        command="ddim_comfyui.install:main",  # ddim-core comfyui install|uninstall COMFYUI_DIR
    )
