"""diffusers' base classes when diffusers is installed, our stand-ins (`_base`) when it is not.

The schedulers subclass diffusers' DDIMScheduler / DDIMInverseScheduler themselves, so that
pipelines that test `isinstance(scheduler, DDIMScheduler)` (LEdits++, Bria) take ours for
one; every name those classes define is defined again by ours (tests/test_diffusers_adapter.py
checks it), so none of diffusers' scheduler code runs on our state.

With diffusers, `step` returns a `DDIMSchedulerOutput` by default, as diffusers does; without
it, a tuple, as `mindone.diffusers` does.
"""

from __future__ import annotations

try:
    from diffusers.configuration_utils import ConfigMixin, register_to_config
    from diffusers.schedulers.scheduling_ddim import DDIMScheduler as DDIMSchedulerBase
    from diffusers.schedulers.scheduling_ddim_inverse import (
        DDIMInverseScheduler as DDIMInverseSchedulerBase,
    )
    from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin
    from diffusers.utils.outputs import BaseOutput

    HAVE_DIFFUSERS = True
    COMPATIBLES = [e.name for e in KarrasDiffusionSchedulers]
except ImportError:
    from ._base import (  # type: ignore[assignment]
        BaseOutput,
        ConfigMixin,
        DDIMInverseSchedulerBase,
        DDIMSchedulerBase,
        SchedulerMixin,
        register_to_config,
    )

    HAVE_DIFFUSERS = False
    COMPATIBLES = []

RETURN_DICT = HAVE_DIFFUSERS

__all__ = [
    "COMPATIBLES",
    "HAVE_DIFFUSERS",
    "RETURN_DICT",
    "BaseOutput",
    "ConfigMixin",
    "DDIMInverseSchedulerBase",
    "DDIMSchedulerBase",
    "SchedulerMixin",
    "register_to_config",
]
