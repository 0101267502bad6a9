"""The k-diffusion adapter's ddim_core plugin (k-diffusion is imported only on register())."""

from __future__ import annotations

from ddim_core.hookspecs import Adapter, hookimpl


@hookimpl
def ddim_core_adapter() -> Adapter:
    """The `ddim_core_adapter` hook: describes the k-diffusion adapter (host `k_diffusion`).

    Returns
    -------
    Adapter

    Examples
    --------
    >>> ddim_core_adapter().host
    'k_diffusion'
    """
    return Adapter(
        name="k-diffusion",
        host="k_diffusion",
        provides=(
            "ddim_kdiffusion.sample_ddim",
            "ddim_kdiffusion.sample_ddim_inverse",
            "ddim_kdiffusion.get_sigmas_ddim",
            "ddim_kdiffusion.sample_edict / sample_bdia / sample_belm (and _inverse)",
        ),
        register="ddim_kdiffusion.samplers:register",
    )
