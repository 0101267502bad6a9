"""Print the figures of docs/inversion-methods.md's reversible samplers (checked by
tests/test_figures.py): `.venv/bin/python tests/reversible_report.py`.

The table "How their samples differ from DDIM's": each sampler from the same 256 x_T (seed 0)
on Stable Diffusion's schedule, against the exact flow map of one Gaussian N((1.5, -0.5),
0.5^2 I) from the plan's first timestep to alpha_bar_0 (`GaussianMixture.ode_solution`): the
largest distance |x_0 - exact| of each (tests/test_reversible.py asserts the orderings the page
draws from them). On the benchmark's bed for the reversible samplers (guidance 7.5, N = 20, its
200 real points, `benchmarks/inversion.py`): the largest |x_T| BDIA's inverse gives at gamma =
0.5, how far sampling lands from the float32 x_0 from the float64 state rounded to float32, and
where a small gamma's growth of x_T outruns the compensated state (`measure_gamma`), and
where EDICT's x_T - y_T, growing with the steps, does (`measure_edict`); BELM's float32
round trip at 50 and 999 steps (`measure_belm`). Under
`jax.jit` (`measure_jit`, JAX only): the round trips of the docs' example mixture at guidance 3,
at 2 (EDICT) and 5 steps, which keeps the compiles to seconds.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from helpers import SD

import ddim_core as dc
from ddim_core import reversible
from ddim_core.analytic import GaussianMixture, guided

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


def measure_bed() -> dict[str, float]:
    """`bdia_half_x_T`: the largest |x_T| of BDIA's inverse at gamma = 0.5 (float64 data);
    `rounded_min`, `rounded_max`: the least and largest, over EDICT, BDIA and BELM, of the
    round trip's max |x_0 - sample(round(state))| for float32 data inverted in float64
    arithmetic, its state rounded to float32 (no low words)."""
    model, x_0 = _bed()
    state = reversible.invert_bdia(model, x_0, SD, 20, gamma=0.5)
    out = {"bdia_half_x_T": float(np.abs(state[0]).max())}
    x_0 = x_0.astype(np.float32)
    misses = []
    for name in ("edict", "bdia", "belm"):
        invert, sample = (getattr(reversible, f"{way}_{name}") for way in ("invert", "sample"))
        state = invert(model, x_0, SD, 20, precision="float64")
        rounded = (state[0].astype(np.float32), state[1].astype(np.float32))
        misses.append(float(np.abs(sample(model, rounded, SD, 20) - x_0).max()))
    out["rounded_min"], out["rounded_max"] = min(misses), max(misses)
    return out


def _bed() -> tuple[Any, np.ndarray]:
    """The benchmark's bed: guidance 7.5 for class 0 of three, its 200 real points (float64)."""
    mixture = GaussianMixture.create([[-2.0, 0.0], [2.0, 0.0], [0.0, 3.5]], [0.3] * 3, SD)
    model = guided(mixture, mixture.component(0), 7.5)
    return model, mixture.component(0).sample_data(200, np.random.default_rng(95))


def _bdia_trip(model: Any, x_0: np.ndarray, gamma: float, n: int) -> tuple[float, float]:
    """(largest |x_T|, largest |x_0 - sample_bdia(invert_bdia(x_0))|) at gamma over n steps."""
    state = reversible.invert_bdia(model, x_0, SD, n, gamma=gamma)
    back = reversible.sample_bdia(model, state, SD, n, gamma=gamma)
    return float(np.abs(state[0]).max()), float(np.abs(back - x_0).max())


def measure_gamma() -> dict[str, float]:
    """BDIA with a small gamma on the bed: x_T grows like (1 / gamma)^N and, once that passes
    what the compensated state carries, the round trip misses x_0. `gamma_<dtype>_<N>_x_T`,
    `gamma_<dtype>_<N>_miss`: float32 data at gamma = 0.5, float64 data at gamma = 0.1;
    `gamma_float16_fails`: the fewest steps at which inverting float16 data at gamma = 0.5
    fails (x_T past float16's largest, the model's output not finite)."""
    model, x_0 = _bed()
    out = {}
    for dtype, gamma, steps in (("float32", 0.5, (50, 70)), ("float64", 0.1, (40, 50))):
        for n in steps:
            x_T, miss = _bdia_trip(model, x_0.astype(dtype), gamma, n)
            out[f"gamma_{dtype}_{n}_x_T"], out[f"gamma_{dtype}_{n}_miss"] = x_T, miss
    half, n = x_0.astype(np.float16), 2
    with warnings.catch_warnings():  # the overflow this looks for
        warnings.simplefilter("ignore", RuntimeWarning)
        while np.isfinite(
            reversible.invert_bdia(model, half, SD, n, gamma=0.5, check_finite=False)[0]
        ).all():
            n += 1
    out["gamma_float16_fails"] = n
    return out


def measure_edict() -> dict[str, float]:
    """EDICT's inverse over many steps on the bed: undoing the mixing divides x - y by about
    p^2 a step, and once x_T - y_T passes what the compensated state carries the round trip
    misses x_0. `edict_<dtype>_<N>_x_T`, `edict_<dtype>_<N>_miss`: the largest |x_T - y_T| and
    |x_0 - sample_edict(invert_edict(x_0))| at p = 0.93 (float32 data at 100, 200 and 300
    steps, float64 data at 400); `edict_p97_300_x_T`, `edict_p97_300_miss`: float32 data at
    p = 0.97, 300 steps."""
    model, x_0 = _bed()
    out = {}
    for key, dtype, p, n in (
        ("float32_100", "float32", 0.93, 100),
        ("float32_200", "float32", 0.93, 200),
        ("float32_300", "float32", 0.93, 300),
        ("float64_400", "float64", 0.93, 400),
        ("p97_300", "float32", 0.97, 300),
    ):
        x = x_0.astype(dtype)
        state = reversible.invert_edict(model, x, SD, n, p=p)
        back = reversible.sample_edict(model, state, SD, n, p=p)
        out[f"edict_{key}_x_T"] = float(np.abs(state[0] - state[1]).max())
        out[f"edict_{key}_miss"] = float(np.abs(back - x).max())
    return out


def measure_belm() -> dict[str, float]:
    """BELM's round trip on the bed, float32 data, where it is not to the last bit:
    `belm_float32_<N>_miss`, the largest |x_0 - sample_belm(invert_belm(x_0))| at 50 and 999
    steps, and `belm_float32_<N>_entries`, how many entries miss; `belm_precision64_999_miss`,
    the same at 999 steps with ``precision="float64"``."""
    model, x_0 = _bed()
    x = x_0.astype(np.float32)
    out = {}
    for n, precision in ((50, None), (999, None), (999, "float64")):
        state = reversible.invert_belm(model, x, SD, n, precision=precision)
        miss = np.abs(reversible.sample_belm(model, state, SD, n) - x)
        key = f"belm_float32_{n}" if precision is None else f"belm_precision64_{n}"
        out[f"{key}_miss"] = float(miss.max())
        if precision is None:
            out[f"{key}_entries"] = float((miss > 0).sum())
    return out


def measure_jit() -> dict[str, float]:
    """Under `jax.jit`, float32, the docs' example (16 points, guidance 3): `<method>`, the
    round trip jitted both ways (EDICT at 2 steps, BDIA and BELM at 5); `eager`, the same
    eagerly (largest of the three); `mixed_min`, `mixed_max`: a state made under jit sampled
    eagerly, or the reverse, least and largest miss over the methods (keys `<name>`, marked
    `reversible_jit.<name>`)."""
    import jax
    import jax.numpy as jnp

    mixture = GaussianMixture.create([[-2.0, 0.0], [2.0, 0.0], [0.0, 3.5]], [0.3] * 3, SD)
    model = guided(mixture, mixture.component(0), 3.0)
    rng = np.random.default_rng(0)
    x_0 = jnp.asarray(mixture.component(0).sample_data(16, rng).astype(np.float32))
    out, eager, mixed = {}, [], []
    for name, n in (("edict", 2), ("bdia", 5), ("belm", 5)):
        invert, sample = (getattr(reversible, f"{way}_{name}") for way in ("invert", "sample"))

        def inv(x: Any, invert: Any = invert, n: int = n) -> Any:
            return invert(model, x, SD, n)

        def smp(s: Any, sample: Any = sample, n: int = n) -> Any:
            return sample(model, s, SD, n)

        state, jit_state = inv(x_0), jax.jit(inv)(x_0)

        def miss(x: Any) -> float:
            return float(jnp.abs(x - x_0).max())

        out[name] = miss(jax.jit(smp)(jit_state))
        eager.append(miss(smp(state)))
        mixed += [miss(smp(jit_state)), miss(jax.jit(smp)(state))]
    out["eager"], out["mixed_min"], out["mixed_max"] = (
        max(eager),
        min(mixed),
        max(mixed),
    )
    return out


def main() -> None:
    f = measure()
    print("| N | " + " | ".join(SAMPLERS) + " |")
    for n in STEPS:
        print(f"| {n} | " + " | ".join(f"{f[f'ode_{s}_{n}']:.1e}" for s in SAMPLERS) + " |")
    bed = measure_bed()
    print(f"BDIA gamma = 0.5, largest |x_T|: {bed['bdia_half_x_T']:.1e}")
    low, high = bed["rounded_min"], bed["rounded_max"]
    print(f"rounded float64 state: x_0 missed by {low:.1e} to {high:.1e}")
    for key, value in measure_gamma().items():
        print(f"BDIA {key}: {value:.1e}")
    for key, value in measure_edict().items():
        print(f"EDICT {key}: {value:.1e}")
    for key, value in measure_belm().items():
        print(f"BELM {key}: {value:.1e}")
    for key, value in measure_jit().items():
        print(f"jax.jit {key}: {value:.1e}")


if __name__ == "__main__":
    main()
