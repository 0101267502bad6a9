"""The mindone adapter's ddim_core plugin. Light: mindone is imported only on register()."""

from __future__ import annotations

from ddim_core.hookspecs import Adapter, hookimpl


@hookimpl
def ddim_core_adapter() -> Adapter:
    """The `ddim_core_adapter` hook: describes the mindone adapter (host `mindone`).

    Returns
    -------
    Adapter

    Examples
    --------
    >>> ddim_core_adapter().host
    'mindone'
    """
    return Adapter(
        name="mindone",
        host="mindone",
        provides=("ddim_mindone.DDIMScheduler", "ddim_mindone.DDIMInverseScheduler"),
        register="ddim_mindone.schedulers:register",
    )
