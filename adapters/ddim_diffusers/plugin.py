"""The diffusers adapter's ddim_core plugin. Light: diffusers is imported only on register()."""

from __future__ import annotations

from ddim_core.hookspecs import Adapter, hookimpl


def _register() -> list[str]:
    from .schedulers import register

    return register()


@hookimpl
def ddim_core_adapter() -> Adapter:
    return Adapter(
        name="diffusers",
        host="diffusers",
        provides=("ddim_diffusers.DDIMScheduler", "ddim_diffusers.DDIMInverseScheduler"),
        register=_register,
    )
