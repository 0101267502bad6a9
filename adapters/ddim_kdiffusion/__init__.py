"""k-diffusion-style DDIM samplers on any array backend, computed by ddim_core.

from ddim_kdiffusion import get_sigmas_ddim, sample_ddim
sigmas = get_sigmas_ddim(model.inner_model.alphas_cumprod, 50, spacing="trailing")
x = sample_ddim(model, x * sigmas[0], sigmas, eta=0.0)
"""

from .samplers import get_sigmas_ddim, register, sample_ddim, sample_ddim_inverse

__all__ = ["get_sigmas_ddim", "register", "sample_ddim", "sample_ddim_inverse"]
