"""Drop-in replacements for diffusers' DDIMScheduler and DDIMInverseScheduler, computed by
ddim_core. With diffusers installed they subclass its DDIMScheduler and DDIMInverseScheduler
(pipelines that test `isinstance` take them for those), defining every name those define;
without it (mindone-style hosts) they stand on a small base of our own and `step` returns a
tuple.

    from ddim_diffusers import DDIMScheduler
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)

The names load lazily (PEP 562), so the plugin module `ddim_diffusers.plugin`, loaded with
every ddim_core plugin, does not import diffusers or torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "HAVE_DIFFUSERS": "._compat",
    # the base class DiffusionPipeline.from_pretrained looks for in a component's library
    "SchedulerMixin": "._compat",
    "DDIMScheduler": ".schedulers",
    "DDIMInverseScheduler": ".schedulers",
    "DDIMSchedulerOutput": ".schedulers",
    "register": ".schedulers",
    # inversion through a pipeline's UNet under guidance
    "ddim_config": ".inversion",
    "guided_unet": ".inversion",
    "invert_latents": ".inversion",
    "sample_latents": ".inversion",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
