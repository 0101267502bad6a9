"""No step, plan lookup or loop reads an array value back to the host.

Proof by construction: torch's `meta` device has no values (any read raises), and
torch.compile(fullgraph=True) and jax.jit fail on a host read or a graph break.
"""

from __future__ import annotations

import numpy as np
import pytest

import ddim_core as dc

torch = pytest.importorskip("torch")
CONFIG = dc.DDIMConfig(clip_sample=True, timestep_spacing="trailing")
MODEL = dc.GaussianMixture.create([[0.5] * 4, [-0.5] * 4], [0.4, 0.6], CONFIG)


def test_step_and_loops_on_meta_tensors() -> None:
    plan = dc.make_plan(CONFIG, 10)
    x = torch.empty(2, 4, device="meta")
    for t in (
        plan.timesteps[0],
        torch.tensor(plan.timesteps[0], device="meta"),
        torch.tensor([999, 899], device="meta"),
    ):
        out = dc.step(plan, x, t, x, eta=1.0, noise=x)
        assert out.prev_sample.device.type == "meta"
        assert dc.inverse_step(plan, x, t, x).prev_sample.device.type == "meta"
    gen = torch.Generator().manual_seed(0)
    y = dc.sample(MODEL, x, CONFIG, 10, eta=1.0, generator=gen)
    z = dc.invert(MODEL, y, CONFIG, 10, fixed_point_iters=3)
    assert y.device.type == z.device.type == "meta"
    with pytest.raises(RuntimeError, match="meta"):  # tol needs a host read: meta forbids it
        dc.invert(MODEL, y, CONFIG, 10, fixed_point_iters=3, tol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_compile_fullgraph_step_and_loop(dtype: torch.dtype) -> None:
    x = torch.randn(2, 4, dtype=dtype, generator=torch.Generator().manual_seed(0))
    plan = dc.make_plan(CONFIG, 10)

    def loop(x):  # type: ignore[no-untyped-def]
        return dc.sample(MODEL, x, CONFIG, 10)

    def one(x, m):  # type: ignore[no-untyped-def]
        return dc.step(plan, m, 899, x, use_clipped_model_output=True)

    compiled = torch.compile(loop, fullgraph=True)
    np.testing.assert_allclose(compiled(x).numpy(), loop(x).numpy(), rtol=1e-5, atol=1e-6)
    m = torch.randn_like(x)
    got = torch.compile(one, fullgraph=True)(x, m)
    for a, b in zip(got, one(x, m), strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def test_jax_jit_loops() -> None:
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    x = jax.numpy.asarray(np.random.default_rng(0).standard_normal((3, 4)))
    sampled = jax.jit(lambda x: dc.sample(MODEL, x, CONFIG, 10))(x)
    eager = dc.sample(MODEL, x, CONFIG, 10)
    np.testing.assert_allclose(np.asarray(sampled), np.asarray(eager), rtol=1e-9, atol=1e-12)
    inverted = jax.jit(lambda x: dc.invert(MODEL, x, CONFIG, 10, fixed_point_iters=3))(eager)
    assert inverted.shape == x.shape
    key = jax.random.key(0)
    noisy = jax.jit(lambda x, k: dc.sample(MODEL, x, CONFIG, 10, eta=1.0, generator=k))(x, key)
    assert bool(jax.numpy.isfinite(noisy).all())
