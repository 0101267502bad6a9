"""Print the figures of docs/inversion.md's stall stop (checked by tests/test_figures.py):
`.venv/bin/python tests/stall_report.py`.

`ddim_core.invert` and `ddim_kdiffusion.sample_ddim_inverse` invert 256 float16 samples of a
two-Gaussian mixture (seed 5, trailing spacing, 20 steps, `fixed_point_iters=8`, tol 1e-6),
with every refinement spent (`stall=False`) and with the default stall stop (`stall=None`):
the model calls of each and the ratio of their round trips
(tests/test_inversion_methods.py::test_half_precision_samples_stop_stalled_steps_by_default
asserts the bounds the page states, through `run`).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

import ddim_core as dc
from ddim_core import implicit

LOOPS = ("invert", "sample_ddim_inverse")


def bed() -> tuple[Any, Any, Any, Any]:
    """(config, the mixture's model on torch tensors, its alpha_bar table, its 256 samples as
    a float64 array)."""
    config = dc.DDIMConfig(clip_sample=False, timestep_spacing="trailing")
    gm = dc.GaussianMixture.create([[-2.0, 0.0], [2.0, 0.0]], [0.3, 0.3], config)

    def model(x: Any, t: Any) -> Any:
        return gm(x.double(), t).to(x.dtype)

    return config, model, gm.schedule.alphas_cumprod, gm.sample_data(256, np.random.default_rng(5))


def run(loop: str, x: Any, stall: Any) -> tuple[Any, int, Any]:
    """(x_T, model calls, x_0 sampled back) of `loop` inverting the torch tensor x."""
    config, model, table, _ = bed()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", implicit.ToleranceWarning)
        if loop == "invert":
            infos: list[Any] = []
            kw = {"fixed_point_iters": 8, "tol": 1e-6, "callback": infos.append}
            z = dc.invert(model, x, config, 20, stall=stall, **kw)
            return z, sum(i.model_calls for i in infos), dc.sample(model, z, config, 20)
        import ddim_kdiffusion as dk

        calls = [0]

        def denoiser(x: Any, sigma: Any) -> Any:
            calls[0] += 1
            ab = 1.0 / (1.0 + float(sigma[0]) ** 2)
            t = int(np.argmin(np.abs(table - ab)))
            return x - float(sigma[0]) * model(x * math.sqrt(ab), t)

        sigmas = dk.get_sigmas_ddim(config, 20)
        kw = {"disable": True, "fixed_point_iters": 8, "tol": 1e-6, "stall": stall}
        z = dk.sample_ddim_inverse(denoiser, x, sigmas.flip(0), **kw)
        n = calls[0]
        return z, n, dk.sample_ddim(denoiser, z, sigmas, disable=True)


def measure() -> dict[str, float]:
    """`{loop}_calls_every`, `{loop}_calls_stall` and `{loop}_trip_ratio` (stall stop's round
    trip over every refinement's) for both loops, on float16 samples."""
    import torch

    half = torch.from_numpy(bed()[3]).half()
    out: dict[str, float] = {}
    for loop in LOOPS:
        (_, every, back0), (_, stall, back1) = run(loop, half, False), run(loop, half, None)
        trip0, trip1 = ((b.double() - half.double()).abs().max().item() for b in (back0, back1))
        out[f"{loop}_calls_every"], out[f"{loop}_calls_stall"] = every, stall
        out[f"{loop}_trip_ratio"] = trip1 / trip0
    return out


if __name__ == "__main__":
    for key, value in measure().items():
        print(f"{key}: {value:.3g}")
