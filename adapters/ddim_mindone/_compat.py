"""mindone.diffusers' base classes when mindone is installed, ddim_diffusers' stand-ins when
it is not (the classes then still take and return MindSpore tensors)."""

from __future__ import annotations

try:
    from mindone.diffusers.configuration_utils import ConfigMixin, register_to_config
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
    "SchedulerMixin",
    "register_to_config",
]
