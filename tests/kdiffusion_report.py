"""Print the k-diffusion adapter's parity figures (README, docs/accuracy.md; checked by
tests/test_figures.py): `.venv/bin/python tests/kdiffusion_report.py`.

The same comparisons as tests/test_kdiffusion_adapter.py (which asserts the bounds), reporting
the largest relative difference |ours - theirs| / (1 + |theirs|) of each.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import ddim_kdiffusion as dk
import kdiffusion_loader
from helpers import rel
from parity import kdiffusion_denoiser, kdiffusion_x_T


def measure() -> dict[str, float]:
    """Largest relative differences: `euler64`, `ancestral64`, `euler32`, `ancestral32`."""
    k_sampling, _ = kdiffusion_loader.load()
    out = {}
    for dtype in (torch.float64, torch.float32):
        euler = ancestral = 0.0
        for spacing in ("leading", "trailing", "linspace"):
            for n in (10, 50):
                model, _, table = kdiffusion_denoiser(dtype)
                sigmas = dk.get_sigmas_ddim(table, n, spacing=spacing)
                x = kdiffusion_x_T(sigmas, dtype)
                ours = dk.sample_ddim(model, x, sigmas, disable=True)
                theirs = k_sampling.sample_euler(model, x, sigmas, disable=True)
                euler = max(euler, rel(ours, theirs))
                for eta in (0.3, 1.0):
                    outs = []
                    for sampler in (dk.sample_ddim, k_sampling.sample_euler_ancestral):
                        gen = torch.Generator().manual_seed(5)

                        def noise(s, s_next, gen=gen, shape=x.shape, dtype=dtype):  # type: ignore[no-untyped-def]
                            return torch.randn(shape, generator=gen, dtype=dtype)

                        outs.append(
                            sampler(model, x, sigmas, disable=True, eta=eta, noise_sampler=noise)
                        )
                    ancestral = max(ancestral, rel(outs[0], outs[1]))
        bits = 64 if dtype == torch.float64 else 32
        out[f"euler{bits}"], out[f"ancestral{bits}"] = euler, ancestral
    return out


def main() -> None:
    f = measure()
    for bits in (64, 32):
        print(
            f"float{bits}: sample_ddim(eta=0) vs sample_euler: {f[f'euler{bits}']:.2e}; "
            f"eta 0.3/1 vs sample_euler_ancestral: {f[f'ancestral{bits}']:.2e}"
        )


if __name__ == "__main__":
    main()
