"""The mindone adapter's ddim_core plugin. Light: mindone is imported only on register()."""

from __future__ import annotations

from ddim_core.hookspecs import Adapter, hookimpl


@hookimpl
def ddim_core_adapter() -> Adapter:
    return Adapter(
        name="mindone",
        host="mindone",
        provides=("ddim_mindone.DDIMScheduler", "ddim_mindone.DDIMInverseScheduler"),
        register="ddim_mindone.schedulers:register",
    )
