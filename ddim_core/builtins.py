"""Built-in backend plugins: standard normal noise from each library's own generator.

Registered through ddim-core's own `ddim_core` entry points (see pyproject.toml), as a third
party's plugin would be. No framework is imported here: a generator of a library can only
exist once that library is imported, so each plugin looks it up in `sys.modules`.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from . import backends
from .hookspecs import hookimpl


class NumpyNoise:
    """numpy.random.Generator / RandomState: drawn in float64 on the host, then moved to the
    sample's library, device and dtype (so it serves every backend, reproducibly)."""

    @hookimpl
    def ddim_core_standard_normal(
        self, generator: Any, shape: tuple[int, ...], like: Any, draw: int
    ) -> Any:
        if not isinstance(generator, np.random.Generator | np.random.RandomState):
            return None
        values = generator.standard_normal(shape)
        xp = backends.namespace(like=like)
        return backends.from_host(values, xp, device=backends.device(like), dtype=like.dtype)


class TorchNoise:
    """torch.Generator, or one per batch element, as diffusers' `randn_tensor` draws: on the
    generator's device (a CPU generator for a GPU sample draws on the CPU), in the sample's
    dtype, then moved to the sample's device. None draws from torch's global generator."""

    @hookimpl
    def ddim_core_standard_normal(
        self, generator: Any, shape: tuple[int, ...], like: Any, draw: int
    ) -> Any:
        torch = sys.modules.get("torch")
        if torch is None or not isinstance(like, torch.Tensor):
            return None
        if generator is None:
            return torch.randn(shape, device=like.device, dtype=like.dtype)
        gens = generator if isinstance(generator, list | tuple) else [generator]
        if not all(isinstance(g, torch.Generator) for g in gens):
            return None
        if len(gens) != 1 and (not shape or len(gens) != shape[0]):
            return None  # a list needs one generator per batch element
        rows = (1, *shape[1:]) if len(gens) > 1 else shape
        parts = [self._draw(torch, g, rows, like) for g in gens]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)

    @staticmethod
    def _draw(torch: Any, generator: Any, shape: tuple[int, ...], like: Any) -> Any:
        device = generator.device if generator.device.type != like.device.type else like.device
        z = torch.randn(shape, generator=generator, device=device, dtype=like.dtype)
        return z.to(like.device)


class JaxNoise:
    """A JAX PRNG key (typed or raw uint32): `jax.random.normal(fold_in(key, draw))`, so every
    draw of a loop is distinct and the whole loop stays a pure function of the key."""

    @hookimpl
    def ddim_core_standard_normal(
        self, generator: Any, shape: tuple[int, ...], like: Any, draw: int
    ) -> Any:
        jax = sys.modules.get("jax")
        if jax is None or not isinstance(generator, jax.Array) or not isinstance(like, jax.Array):
            return None
        typed = jax.dtypes.issubdtype(generator.dtype, jax.dtypes.prng_key)
        raw = generator.dtype == np.uint32 and generator.shape == (2,)
        if not (typed or raw):
            return None
        return jax.random.normal(jax.random.fold_in(generator, draw), shape, dtype=like.dtype)


class CupyNoise:
    """cupy.random.Generator / RandomState, drawn on the sample's GPU in its dtype (float32 or
    float64; half precision is drawn in float32 and cast)."""

    @hookimpl
    def ddim_core_standard_normal(
        self, generator: Any, shape: tuple[int, ...], like: Any, draw: int
    ) -> Any:
        cupy = sys.modules.get("cupy")
        if cupy is None or not isinstance(like, cupy.ndarray):
            return None
        if not isinstance(generator, cupy.random.Generator | cupy.random.RandomState):
            return None
        dtype = like.dtype if like.dtype in (cupy.float32, cupy.float64) else cupy.float32
        with like.device:
            return generator.standard_normal(shape, dtype=dtype).astype(like.dtype, copy=False)


numpy = NumpyNoise()
torch = TorchNoise()
jax = JaxNoise()
cupy = CupyNoise()
