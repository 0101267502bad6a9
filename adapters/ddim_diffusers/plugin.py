"""The diffusers adapter's ddim_core plugin. Light: diffusers is imported only on register()."""

from __future__ import annotations

from ddim_core.hookspecs import Adapter, hookimpl


@hookimpl
def ddim_core_adapter() -> Adapter:
    """The `ddim_core_adapter` hook: describes the diffusers adapter (host `diffusers`).

    Returns
    -------
    Adapter

    Examples
    --------
    >>> ddim_core_adapter().host
    'diffusers'
    """
    return Adapter(
        name="diffusers",
        host="diffusers",
        provides=(
            "ddim_diffusers.DDIMScheduler",
            "ddim_diffusers.DDIMInverseScheduler",
            "ddim_diffusers.invert_latents",
            "ddim_diffusers.sample_latents",
        ),
        register="ddim_diffusers.schedulers:register",
    )
