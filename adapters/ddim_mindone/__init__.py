"""Drop-in replacements for mindone.diffusers' DDIMScheduler and DDIMInverseScheduler (the
diffusers API on MindSpore tensors), computed by ddim_core:

    from ddim_mindone import DDIMScheduler
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)

As mindone's own: `step` returns a tuple by default, `set_timesteps(num_inference_steps)`
takes no device, tables and `timesteps` are MindSpore tensors, noise comes from a NumPy
Generator (or a mindspore.Generator). With mindone installed the classes subclass its
DDIMScheduler and DDIMInverseScheduler (pipelines that test `isinstance` take them for those),
defining every name those define; without it, ddim_diffusers' small stand-ins. The names load
lazily (PEP 562), so the plugin module `ddim_mindone.plugin` imports neither.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "HAVE_MINDONE": "._compat",
    # the base class DiffusionPipeline.from_pretrained looks for in a component's library
    "SchedulerMixin": "._compat",
    "DDIMScheduler": ".schedulers",
    "DDIMInverseScheduler": ".schedulers",
    "DDIMSchedulerOutput": ".schedulers",
    "register": ".schedulers",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
