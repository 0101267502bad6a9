"""k-diffusion-style DDIM samplers on any array backend, computed by ddim_core.

from ddim_kdiffusion import get_sigmas_ddim, sample_ddim
sigmas = get_sigmas_ddim(model.inner_model.alphas_cumprod, 50, spacing="trailing")
x = sample_ddim(model, x * sigmas[0], sigmas, eta=0.0)
"""

from .reversible import (
    sample_bdia,
    sample_bdia_inverse,
    sample_belm,
    sample_belm_inverse,
    sample_edict,
    sample_edict_inverse,
)
from .samplers import get_sigmas_ddim, register, sample_ddim, sample_ddim_inverse

__all__ = [
    "get_sigmas_ddim",
    "register",
    "sample_bdia",
    "sample_bdia_inverse",
    "sample_belm",
    "sample_belm_inverse",
    "sample_ddim",
    "sample_ddim_inverse",
    "sample_edict",
    "sample_edict_inverse",
]
