"""mindone.diffusers' base classes when mindone is installed, ddim_diffusers' stand-ins when
it is not (the classes then still take and return MindSpore tensors).

The schedulers subclass mindone's DDIMScheduler / DDIMInverseScheduler themselves, so that
pipelines that test `isinstance(scheduler, DDIMScheduler)` (LEdits++, Bria) take ours for one;
every name those classes define is defined again by ours (tests/mindspore/test_mindone.py
checks it), so none of mindone's scheduler code runs on our state.
"""

from __future__ import annotations

try:
    from mindone.diffusers.configuration_utils import ConfigMixin, register_to_config
    from mindone.diffusers.schedulers.scheduling_ddim import DDIMScheduler as DDIMSchedulerBase
    from mindone.diffusers.schedulers.scheduling_ddim_inverse import (
        DDIMInverseScheduler as DDIMInverseSchedulerBase,
    )
    from mindone.diffusers.schedulers.scheduling_utils import (
        KarrasDiffusionSchedulers,
        SchedulerMixin,
    )
    from mindone.diffusers.utils import BaseOutput

    HAVE_MINDONE = True
    COMPATIBLES = [e.name for e in KarrasDiffusionSchedulers]
except ImportError:
    from ddim_diffusers._base import (
        BaseOutput,
        ConfigMixin,
        DDIMInverseSchedulerBase,
        DDIMSchedulerBase,
        SchedulerMixin,
        register_to_config,
    )

    HAVE_MINDONE = False
    COMPATIBLES = []

__all__ = [
    "COMPATIBLES",
    "HAVE_MINDONE",
    "BaseOutput",
    "ConfigMixin",
    "DDIMInverseSchedulerBase",
    "DDIMSchedulerBase",
    "SchedulerMixin",
    "register_to_config",
]
