"""ddim-core: one numerically exact DDIM scheduler for every array backend.

The core is pure functions over arrays, written against the Python array API standard:

    import ddim_core as dc
    plan = dc.make_plan(dc.DDIMConfig(timestep_spacing="trailing"), 50)
    for t in plan.timesteps:
        x = dc.step(plan, model(x, t), t, x).prev_sample
"""

from . import (
    functional,
    plugins,  # noqa: F401  (installs the plugins' array-namespace fallback into backends)
    reversible,
)
from .analytic import GaussianMixture, guided
from .config import DDIMConfig
from .guidance import rescale_noise_cfg
from .interpolation import slerp
from .plans import FINAL, Plan, make_plan, spaced_timesteps
from .sampling import StepInfo, invert, sample
from .schedules import Schedule, alphas_cumprod, betas, schedule
from .steps import StepOutput, add_noise, get_velocity, inverse_step, step

__version__ = "0.1.0"

__all__ = [
    "FINAL",
    "DDIMConfig",
    "GaussianMixture",
    "Plan",
    "Schedule",
    "StepInfo",
    "StepOutput",
    "add_noise",
    "alphas_cumprod",
    "betas",
    "functional",
    "get_velocity",
    "guided",
    "inverse_step",
    "invert",
    "make_plan",
    "rescale_noise_cfg",
    "reversible",
    "sample",
    "schedule",
    "slerp",
    "spaced_timesteps",
    "step",
]
