"""Print the figures of docs/inversion-methods.md's table "How their samples differ from
DDIM's" (checked by tests/test_figures.py): `.venv/bin/python tests/reversible_report.py`.

Each sampler from the same 256 x_T (seed 0) on Stable Diffusion's schedule, against the exact
flow map of one Gaussian N((1.5, -0.5), 0.5^2 I) from the plan's first timestep to
alpha_bar_0 (`GaussianMixture.ode_solution`): the largest distance |x_0 - exact| of each.
tests/test_reversible.py asserts the orderings the page draws from them.
"""

from __future__ import annotations

import numpy as np

import ddim_core as dc
from ddim_core import reversible
from ddim_core.analytic import GaussianMixture

SD = dc.DDIMConfig(
    beta_schedule="scaled_linear",
    beta_start=0.00085,
    beta_end=0.012,
    steps_offset=1,
    set_alpha_to_one=False,
    clip_sample=False,
)
STEPS = (10, 20, 50, 100)
SAMPLERS = {
    "ddim": lambda model, x_T, n: dc.sample(model, x_T, SD, n),
    "edict": lambda model, x_T, n: reversible.sample_edict(model, x_T, SD, n),
    "bdia": lambda model, x_T, n: reversible.sample_bdia(model, x_T, SD, n),
    "bdia_half": lambda model, x_T, n: reversible.sample_bdia(model, x_T, SD, n, gamma=0.5),
    "belm": lambda model, x_T, n: reversible.sample_belm(model, x_T, SD, n),
}


def measure() -> dict[str, float]:
    """`ode_<sampler>_<N>`: the largest distance to the exact x_0, for the samplers ddim,
    edict (p = 0.93), bdia (gamma = 1), bdia_half (gamma = 0.5) and belm at each N."""
    gauss = GaussianMixture.create([[1.5, -0.5]], [0.5], SD)
    x_T = np.random.default_rng(0).standard_normal((256, 2))
    out = {}
    for n in STEPS:
        first = dc.make_plan(SD, n).timesteps[0]
        exact = gauss.ode_solution(
            x_T, gauss.schedule.alpha_bar(first), gauss.schedule.final_alpha_cumprod
        )
        for name, sample in SAMPLERS.items():
            out[f"ode_{name}_{n}"] = float(np.abs(sample(gauss, x_T, n) - exact).max())
    return out


def main() -> None:
    f = measure()
    print("| N | " + " | ".join(SAMPLERS) + " |")
    for n in STEPS:
        print(f"| {n} | " + " | ".join(f"{f[f'ode_{s}_{n}']:.1e}" for s in SAMPLERS) + " |")


if __name__ == "__main__":
    main()
