"""No step, plan lookup or loop reads an array value back to the host.

Proof by construction: torch's `meta` device has no values (any read raises), and
torch.compile(fullgraph=True) and jax.jit fail on a host read or a graph break. Every meta run
has a twin on CPU tensors (the same parametrized test) whose values are compared with NumPy;
compiled and jitted runs are compared with eager ones.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import (
    TOLERANCE,
    Backend,
    assert_close,
    backend_params,
    make_rng,
    reference_path,
    rel,
)

import ddim_core as dc
from ddim_core import functional as F
from ddim_core.testing import reference as ref

torch = pytest.importorskip("torch")
CONFIG = dc.DDIMConfig(clip_sample=True, timestep_spacing="trailing")
MODEL = dc.GaussianMixture.create([[0.5] * 4, [-0.5] * 4], [0.4, 0.6], CONFIG)
X, OUT, NOISE = (make_rng(seed).standard_normal((2, 4)) for seed in range(3))


@pytest.mark.parametrize("backend", backend_params(module="torch"))
def test_steps_and_loops_on_torch(backend: Backend) -> None:
    plan = dc.make_plan(CONFIG, 10)
    x, out, z = (backend.array(a) for a in (X, OUT, NOISE))
    t0 = plan.timesteps[0]
    for t, per_sample in (
        (t0, [t0, t0]),
        (backend.int_array(t0), [t0, t0]),
        (backend.int_array([999, 899]), [999, 899]),
    ):
        got = dc.step(plan, out, t, x, eta=1.0, noise=z)
        want = ref.per_sample(plan, OUT, per_sample, X, eta=1.0, noise=NOISE)
        for g, e in zip(got, want, strict=True):
            assert_close(backend, g, e, "float64")
        got = dc.inverse_step(plan, out, t, x)
        want = ref.per_sample(plan, OUT, per_sample, X, inverse=True)
        for g, e in zip(got, want, strict=True):
            assert_close(backend, g, e, "float64")

    # sample with a torch.Generator: the same draws as a noise list on NumPy
    y = dc.sample(MODEL, x, CONFIG, 10, eta=1.0, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    draws = [torch.randn(X.shape, generator=g, dtype=torch.float64).numpy() for _ in range(10)]
    y_np = dc.sample(MODEL, X, CONFIG, 10, eta=1.0, noise=draws)
    assert_close(backend, y, y_np, "float64")
    y = backend.array(y_np)
    inverted = dc.invert(MODEL, y, CONFIG, 10, fixed_point_iters=3)
    want = dc.invert(MODEL, y_np, CONFIG, 10, fixed_point_iters=3)
    assert_close(backend, inverted, want, "float64")
    if backend.has_values:
        solved = dc.invert(MODEL, y, CONFIG, 10, fixed_point_iters=3, tol=1e-6)
        want = dc.invert(MODEL, y_np, CONFIG, 10, fixed_point_iters=3, tol=1e-6)
        assert_close(backend, solved, want, "float64")
    else:
        with pytest.raises(RuntimeError, match="meta"):  # tol needs a host read
            dc.invert(MODEL, y, CONFIG, 10, fixed_point_iters=3, tol=1e-6)


def _model(x, t):  # type: ignore[no-untyped-def]
    """0.5 x (1 + t / 1000): uses t, a Python int or an integer array (torch or NumPy)."""
    return 0.5 * x * (1 + t / 1000)


@pytest.mark.parametrize("backend", backend_params(module="torch"))
def test_functional_loop_in_float16_on_torch(backend: Backend) -> None:
    """The functional loop (thresholding on) against NumPy's float64 imperative loop on the
    same float16 input: one float16 rounding of x per step."""
    config = CONFIG.replace(thresholding=True)
    x = backend.array(make_rng(4).standard_normal((4, 3, 8, 8)), "float16")
    scheduler = F.Scheduler(config, 5)
    state, got = F.init(scheduler, like=x), x
    for _ in range(5):
        state, got = F.step(scheduler, state, _model(got, F.timestep(state)), got)
    assert got.dtype == torch.float16
    x16 = make_rng(4).standard_normal((4, 3, 8, 8)).astype(np.float16).astype(np.float64)
    per_step = np.finfo(np.float16).eps / 2  # one rounding of x per step (measured: 1.4e-3)
    scale = 5 * per_step / TOLERANCE["float16"]
    assert_close(backend, got, dc.sample(_model, x16, config, 5), "float16", scale=scale)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_torch_compile_fullgraph_step_and_loop(dtype: str) -> None:
    x = torch.from_numpy(X).to(getattr(torch, dtype))
    m = torch.from_numpy(OUT).to(x.dtype)
    plan = dc.make_plan(CONFIG, 10)

    def loop(x):  # type: ignore[no-untyped-def]
        return dc.sample(MODEL, x, CONFIG, 10)

    def one(x, m):  # type: ignore[no-untyped-def]
        return dc.step(plan, m, 899, x, use_clipped_model_output=True)

    compiled = torch.compile(loop, fullgraph=True)
    assert rel(compiled(x), loop(x)) <= TOLERANCE[dtype]
    got = torch.compile(one, fullgraph=True)(x, m)
    for a, b in zip(got, one(x, m), strict=True):
        assert rel(a, b) <= TOLERANCE[dtype]


@pytest.mark.slow
@pytest.mark.parametrize("fullgraph", [False, True])
def test_torch_compile_of_step_itself_takes_each_plan(fullgraph: bool) -> None:
    """torch.compile(dc.step) and torch.compile(dc.inverse_step), given the plan as an
    argument: a second plan (another step count, another config) or a second int timestep
    made the plan's uid and the timestep symbolic at the recompile, and the host row lookup
    failed ('assume_constant_result argument conversion failed'); a tensor timestep failed at
    once (the plan's table traced: bisect). Now every call equals eager's reference step bit
    for bit (the same ops: backend aot_eager), and the loop reuses one graph per plan."""
    torch._dynamo.reset()
    x, m = torch.from_numpy(X), torch.from_numpy(OUT)
    other = CONFIG.replace(prediction_type="v_prediction", clip_sample_range=0.5)
    plans = [dc.make_plan(CONFIG, 10), dc.make_plan(CONFIG, 20), dc.make_plan(other, 10)]
    for fn in (dc.step, dc.inverse_step):
        compiled = torch.compile(fn, fullgraph=fullgraph, backend="aot_eager")
        for plan, arrays in zip([*plans, plans[0]], (2, 1, 0, 0), strict=True):
            ts = plan.timesteps if fn is dc.step else plan.inverse_timesteps
            timesteps = [ts[0], ts[1], ts[2], torch.tensor(ts[3]), torch.tensor(ts[4:6])]
            for t in timesteps[: 3 + arrays]:  # a graph per plan and kind: 7 of torch's 8
                got = compiled(plan, m, t, x)
                with reference_path():
                    want = fn(plan, m, t, x)
                for g, w in zip(got, want, strict=True):
                    assert torch.equal(g, w), (fn.__name__, plan, t)
    # the eager ValueError (under fullgraph, torch's Unsupported quotes it: no eager fallback)
    with pytest.raises((ValueError, torch._dynamo.exc.Unsupported), match="=1000 is outside"):
        torch.compile(dc.step, fullgraph=fullgraph, backend="aot_eager")(plans[0], m, 1000, x)


@pytest.mark.slow
def test_jax_jit_loops() -> None:
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    x = jax.numpy.asarray(X)
    sampled = jax.jit(lambda x: dc.sample(MODEL, x, CONFIG, 10))(x)
    eager = dc.sample(MODEL, x, CONFIG, 10)
    assert rel(sampled, eager) <= TOLERANCE["float64"]
    inverted = jax.jit(lambda x: dc.invert(MODEL, x, CONFIG, 10, fixed_point_iters=3))(eager)
    eager_inverted = dc.invert(MODEL, eager, CONFIG, 10, fixed_point_iters=3)
    assert rel(inverted, eager_inverted) <= TOLERANCE["float64"]
    key = jax.random.key(0)
    noisy = jax.jit(lambda x, k: dc.sample(MODEL, x, CONFIG, 10, eta=1.0, generator=k))(x, key)
    eager_noisy = dc.sample(MODEL, x, CONFIG, 10, eta=1.0, generator=key)
    assert rel(noisy, eager_noisy) <= TOLERANCE["float64"]
    assert rel(eager_noisy, eager) > 1e-3  # the key's noise was drawn


@pytest.mark.slow
def test_torch_compile_fullgraph_with_thresholding() -> None:
    """Dynamic thresholding compiles too (its clamp of s to [1, max] used array-api-compat's
    scalar promotion, which calls torch.result_type: a graph break)."""
    config = CONFIG.replace(thresholding=True)
    plan = dc.make_plan(config, 10)
    x = torch.from_numpy(X)
    m = torch.from_numpy(OUT)
    scheduler = F.Scheduler(config, 10)
    state = F.init(scheduler, like=x)

    def one(x, m):  # type: ignore[no-untyped-def]
        return dc.step(plan, m, 900, x).prev_sample

    def functional(state, m, x):  # type: ignore[no-untyped-def]
        return F.step(scheduler, state, m, x)[1]

    assert rel(torch.compile(one, fullgraph=True)(x, m), one(x, m)) <= TOLERANCE["float64"]
    compiled = torch.compile(functional, fullgraph=True)(state, m, x)
    assert rel(compiled, functional(state, m, x)) <= TOLERANCE["float64"]


@pytest.mark.slow
def test_torch_compile_fullgraph_add_noise_and_velocity_of_a_config() -> None:
    """add_noise / get_velocity given a DDIMConfig (their documented first argument, as a
    training step passes it) failed under torch.compile(fullgraph=True): Dynamo traced the
    function behind schedule()'s lru_cache, NumPy code it cannot trace ('Unsupported ndarray
    attribute access'), where a Plan or a Schedule compiled. The schedule is now a constant of
    the graph, and a timestep tensor is range-checked against its size read by uid."""
    torch._dynamo.reset()
    x, z = torch.from_numpy(X), torch.from_numpy(NOISE)
    for fn in (dc.add_noise, dc.get_velocity):
        for t in (torch.tensor([999, 5]), torch.tensor(500)):

            def noised(x, z, t, fn=fn):  # type: ignore[no-untyped-def]
                return fn(CONFIG, x, z, t)

            got = torch.compile(noised, fullgraph=True, backend="aot_eager")(x, z, t)
            assert torch.equal(got, noised(x, z, t)), (fn.__name__, t)
