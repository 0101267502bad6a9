"""Functional init/step: equals the imperative loops; runs under jax.jit + lax.scan and
torch.compile(fullgraph=True); runs on torch's meta device (no host reads)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import reference_path

import ddim_core as dc
from ddim_core import functional as F
from ddim_core.analytic import GaussianMixture

CONFIG = dc.DDIMConfig(clip_sample=False, timestep_spacing="trailing")
MODEL = GaussianMixture.create([[-2.0, 0.0], [2.0, 0.0]], [0.3, 0.3], CONFIG)
X_T = np.random.default_rng(0).standard_normal((8, 2))


def _loop(state, x, model, n, config=CONFIG):
    for _ in range(n):
        state, x = F.step(state, x, model(x, F.timestep(state)), config=config)
    return x


@pytest.mark.parametrize(
    "config", [CONFIG, CONFIG.replace(thresholding=True, sample_max_value=3.0)]
)
def test_functional_equals_imperative(config: dc.DDIMConfig) -> None:
    """Bit for bit against the reference path (the fused kernels: tests/test_fused.py)."""
    model = GaussianMixture.create([[-2.0, 0.0], [2.0, 0.0]], [0.3, 0.3], config)
    with reference_path():
        expected = dc.sample(model, X_T, config, 10)
        inverted = dc.invert(model, expected, config, 10)
    got = _loop(F.init(config, 10, like=X_T), X_T, model, 10, config)
    assert np.array_equal(got, expected)
    inv = _loop(F.init(config, 10, like=X_T, inverse=True), expected, model, 10, config)
    assert np.array_equal(inv, inverted)


def test_jax_jit_scan_equals_eager() -> None:
    jax = pytest.importorskip("jax")
    jnp = jax.numpy

    @jax.jit
    def run(x):
        def body(carry, _):
            state, x = carry
            state, x = F.step(state, x, MODEL(x, F.timestep(state)), config=CONFIG)
            return (state, x), None

        (_, x), _ = jax.lax.scan(body, (F.init(CONFIG, 10, like=x), x), None, length=10)
        return x

    expected = dc.sample(MODEL, X_T, CONFIG, 10)
    np.testing.assert_allclose(np.asarray(run(jnp.asarray(X_T))), expected, rtol=0, atol=1e-12)


def _torch_model(x, t):
    return 0.5 * x * (1 + t.to(x.dtype) / 1000)


def test_torch_compile_fullgraph_equals_eager() -> None:
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(X_T)
    state = F.init(CONFIG, 3, like=x)
    eager = _loop(state, x, _torch_model, 3)
    compiled = torch.compile(lambda s, x: _loop(s, x, _torch_model, 3), fullgraph=True)(state, x)
    assert torch.equal(compiled, eager)


def test_meta_device_loop_never_reads_values() -> None:
    torch = pytest.importorskip("torch")
    x = torch.empty((4, 3, 8, 8), device="meta", dtype=torch.float16)
    state = F.init(CONFIG.replace(thresholding=True), 5, like=x)
    out = _loop(state, x, _torch_model, 5, CONFIG.replace(thresholding=True))
    assert out.device.type == "meta" and out.dtype == torch.float16 and out.shape == x.shape
