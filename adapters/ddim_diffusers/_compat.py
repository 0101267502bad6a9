"""diffusers' base classes when diffusers is installed, our stand-ins (`_base`) when it is not.

With diffusers, `step` returns a `DDIMSchedulerOutput` by default, as diffusers does; without
it, a tuple, as `mindone.diffusers` does.
"""

from __future__ import annotations

try:
    from diffusers.configuration_utils import ConfigMixin, register_to_config
    from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin
    from diffusers.utils.outputs import BaseOutput

    HAVE_DIFFUSERS = True
    COMPATIBLES = [e.name for e in KarrasDiffusionSchedulers]
except ImportError:
    from ._base import BaseOutput, ConfigMixin, SchedulerMixin, register_to_config  # type: ignore[assignment]

    HAVE_DIFFUSERS = False
    COMPATIBLES = []

RETURN_DICT = HAVE_DIFFUSERS

__all__ = [
    "COMPATIBLES",
    "HAVE_DIFFUSERS",
    "RETURN_DICT",
    "BaseOutput",
    "ConfigMixin",
    "SchedulerMixin",
    "register_to_config",
]
