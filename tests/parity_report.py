"""Print the parity figures quoted in the README and docs/accuracy.md:
`.venv/bin/python tests/parity_report.py` (tests/test_figures.py checks the quoted ones).

Runs the forward-step cases of test_parity_diffusers.test_step_parity (stride rule, 10 steps,
eta 0 and 1; the fixtures of tests/parity.py) and reports the largest differences; the tests
assert the bounds.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import parity
from helpers import rel

import ddim_core as dc


def measure() -> dict[str, float]:
    """The figures: cases, float64 max abs difference, float32 max relative errors (ours and
    diffusers' own, against diffusers' float64 maths), and diffusers' float32 NaN cases."""
    worst64 = worst32 = own = 0.0
    cases = nans = 0
    for sched, spacing, pred, proc in itertools.product(
        parity.SCHEDULES,
        ("leading", "trailing", "linspace"),
        ("epsilon", "sample", "v_prediction"),
        parity.PROCESSING,
    ):
        if sched == "zero_snr" and pred == "epsilon" and spacing != "leading":
            continue
        config = dc.DDIMConfig(
            **parity.SCHEDULES[sched],
            **parity.PROCESSING[proc],
            timestep_spacing=spacing,
            prediction_type=pred,
            prev_timestep="stride",
        )
        s32, s64 = (
            parity.diffusers_scheduler(config, False),
            parity.diffusers_scheduler(config, True),
        )
        plan = parity.plan_on_their_table(config, s32)
        rng = np.random.default_rng(0)
        for t in plan.timesteps:
            x, out, z = (rng.standard_normal(parity.SHAPE) for _ in range(3))
            f32 = [a.astype(np.float32) for a in (x, out, z)]
            for eta in (0.0, 1.0):
                d64 = _run(s64, out, t, x, z, eta).numpy()
                d32 = _run(s32, f32[1], t, f32[0], f32[2], eta).double().numpy()
                ours64 = dc.step(plan, out, t, x, eta=eta, noise=z).prev_sample
                ours32 = dc.step(plan, f32[1], t, f32[0], eta=eta, noise=f32[2]).prev_sample
                worst64 = max(worst64, float(np.abs(ours64 - d64).max()))
                worst32 = max(worst32, rel(ours32, d64))
                finite = np.isfinite(d32)  # diffusers' float32 NaNs are counted apart
                nans += int(not finite.all())
                own = max(own, rel(d32[finite], d64[finite]))
                cases += 1
    return {
        "cases": cases,
        "float64": worst64,
        "float32_ours": worst32,
        "float32_diffusers": own,
        "nans": nans,
    }


def main() -> None:
    f = measure()
    print(f"{f['cases']} forward step cases")
    print(f"float64, same table: max |ours - diffusers| = {f['float64']:.2e}")
    print(
        f"float32: max relative error vs diffusers' float64 maths: ours "
        f"{f['float32_ours']:.2e}, diffusers' float32 {f['float32_diffusers']:.2e} (plus "
        f"{f['nans']} cases where diffusers' float32 gave NaN)"
    )


def _run(scheduler, out, t, x, z, eta):
    args = (torch.from_numpy(a) for a in (out, x, z))
    out_t, x_t, z_t = args
    return scheduler.step(out_t, t, x_t, eta=eta, variance_noise=z_t).prev_sample


if __name__ == "__main__":
    main()
