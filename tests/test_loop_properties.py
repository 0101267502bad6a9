"""Hypothesis properties of the loops over random mixtures, step counts, spacings, prediction
types and backends: exact inversion round trips, plain inversion converges with N, the
functional loop equals the imperative one, and jax.jit equals eager."""

from __future__ import annotations

import numpy as np
from helpers import Backend, reference_path
from hypothesis import given, settings
from hypothesis import strategies as st

import ddim_core as dc
from ddim_core import functional as F
from ddim_core.analytic import GaussianMixture

# Dask runs the same code (tests/test_sampling.py) but pays ~1 ms per task: too slow to sweep.
BACKENDS = [
    Backend("numpy", "numpy"),
    Backend("torch", "torch"),
    Backend("jax", "jax"),
    Backend("array_api_strict", "array_api_strict"),
]


@st.composite
def problems(draw: st.DrawFn, max_components: int = 3) -> tuple[GaussianMixture, dc.DDIMConfig]:
    """A random mixture (std >= 0.3) and a config; sample prediction ends at alpha_bar_0."""
    prediction = draw(st.sampled_from(["epsilon", "sample", "v_prediction"]))
    config = dc.DDIMConfig(
        beta_schedule=draw(st.sampled_from(["linear", "scaled_linear", "squaredcos_cap_v2"])),
        timestep_spacing=draw(st.sampled_from(["leading", "trailing", "linspace"])),
        prediction_type=prediction,
        set_alpha_to_one=prediction != "sample",
        clip_sample=False,
    )
    k = draw(st.integers(1, max_components))
    dim = draw(st.integers(1, 3))
    coords = st.floats(-3.0, 3.0, allow_nan=False)
    means = draw(st.lists(st.lists(coords, min_size=dim, max_size=dim), min_size=k, max_size=k))
    stds = draw(st.lists(st.floats(0.3, 1.0), min_size=k, max_size=k))
    return GaussianMixture.create(means, stds, config), config


def _data(model: GaussianMixture, seed: int, n: int = 16) -> np.ndarray:
    return model.sample_data(n, np.random.default_rng(seed))


@settings(max_examples=20)
@given(
    problem=problems(),
    steps=st.integers(10, 40),
    seed=st.integers(0, 2**16),
    backend=st.sampled_from(BACKENDS),
)
def test_exact_inversion_round_trips(problem, steps: int, seed: int, backend: Backend) -> None:
    model, config = problem
    x0 = backend.array(_data(model, seed))
    z = dc.invert(model, x0, config, steps, fixed_point_iters=30, tol=1e-10)
    back = dc.sample(model, z, config, steps)
    assert np.abs(backend.to_numpy(back) - backend.to_numpy(x0)).max() <= 1e-5


@settings(max_examples=20)
@given(
    problem=problems(max_components=1),
    seed=st.integers(0, 2**16),
    backend=st.sampled_from(BACKENDS),
)
def test_plain_inversion_error_shrinks_as_steps_grow(problem, seed: int, backend: Backend) -> None:
    """For one Gaussian the plain round-trip error is a discretization error: it falls with N."""
    model, config = problem
    x0 = backend.array(_data(model, seed))

    def error(n: int) -> float:
        back = dc.sample(model, dc.invert(model, x0, config, n), config, n)
        return float(np.abs(backend.to_numpy(back) - backend.to_numpy(x0)).max())

    assert error(80) < error(10)


@settings(max_examples=20)
@given(
    problem=problems(),
    steps=st.integers(1, 30),
    seed=st.integers(0, 2**16),
    backend=st.sampled_from(BACKENDS),
    inverse=st.booleans(),
)
def test_functional_loop_equals_imperative(problem, steps, seed, backend, inverse) -> None:
    model, config = problem
    x = backend.array(_data(model, seed, 8))
    scheduler = F.Scheduler(config, steps, inverse=inverse)
    state, got = F.init(scheduler, like=x), x
    for _ in range(steps):
        state, got = F.step(scheduler, state, model(got, F.timestep(state)), got)
    loop = dc.invert if inverse else dc.sample
    with reference_path():  # bit for bit: the same maths as the reference path
        expected = loop(model, x, config, steps)
    np.testing.assert_array_equal(backend.to_numpy(got), backend.to_numpy(expected))


@settings(max_examples=10)
@given(problem=problems(), steps=st.integers(1, 20), seed=st.integers(0, 2**16))
def test_jax_jit_scan_equals_eager(problem, steps: int, seed: int) -> None:
    import jax

    model, config = problem
    x = jax.numpy.asarray(_data(model, seed, 8))

    scheduler = F.Scheduler(config, steps)

    def body(carry, _):
        state, y = carry
        return F.step(scheduler, state, model(y, F.timestep(state)), y), None

    run = jax.jit(
        lambda y: jax.lax.scan(body, (F.init(scheduler, like=y), y), None, length=steps)[0][1]
    )
    eager = dc.sample(model, x, config, steps)
    # XLA fuses and reorders float64 arithmetic: agreement is to rounding of the largest
    # intermediate, x0 ~ x / sqrt(alpha_bar) (sqrt(alpha_bar) >= 0.006), over the steps.
    np.testing.assert_allclose(np.asarray(run(x)), np.asarray(eager), rtol=1e-9, atol=1e-9)
