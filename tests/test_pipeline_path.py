"""The call pattern of a diffusers pipeline reaches the fused kernels: `t` taken from
`scheduler.timesteps` (a 0-d int64 tensor), clip_sample on, eta 0 and 1, inverse steps and
add_noise; accelerator-style (unreadable) timesteps take device-gathered rows, with no host
read, and equal the reference path."""

from __future__ import annotations

import numpy as np
import pytest

import ddim_core as dc
from ddim_core import _numba, plugins

torch = pytest.importorskip("torch")
pytest.importorskip("numba")

CONFIG = dc.DDIMConfig(clip_sample=True, timestep_spacing="trailing")
PLAN = dc.make_plan(CONFIG, 20)


@pytest.fixture
def numba_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    run = _numba.run

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return run(*args, **kwargs)

    monkeypatch.setattr(_numba, "run", counting)
    return calls


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tensor_timesteps_take_the_fused_path(dtype, numba_calls: list[int]) -> None:
    g = torch.Generator().manual_seed(0)
    x, m, z = (torch.randn(2, 4, 8, 8, generator=g, dtype=dtype) for _ in range(3))
    timesteps = torch.tensor(PLAN.timesteps)
    for t in timesteps:  # 0-d int64 tensors, as pipelines pass them
        for eta, use_clipped in ((0.0, False), (1.0, True)):
            kw = {"eta": eta, "noise": z, "use_clipped_model_output": use_clipped}
            got = dc.step(PLAN, m, t, x, **kw)
            want = dc.step(PLAN, m, int(t), x, **kw)
            assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
        batch = t.expand(2)  # one timestep per sample, all equal: the same row
        assert torch.equal(dc.step(PLAN, m, batch, x).prev_sample, dc.step(PLAN, m, int(t), x)[0])
        inv = dc.inverse_step(PLAN, m, t, x)
        assert torch.equal(inv.prev_sample, dc.inverse_step(PLAN, m, int(t), x).prev_sample)
    assert len(numba_calls) == 8 * len(timesteps)  # every step above ran the fused pass
    assert torch.equal(
        dc.add_noise(CONFIG, x, z, timesteps[3]), dc.add_noise(CONFIG, x, z, int(timesteps[3]))
    )


def test_per_sample_and_device_rows_equal_the_reference() -> None:
    """Distinct per-sample timesteps (CPU) and unreadable timesteps (meta) take rows gathered
    on the device into the eager kernel; values within the reference's tolerance, no read."""
    from helpers import reference_path

    g = torch.Generator().manual_seed(1)
    x, m, z = (torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64) for _ in range(3))
    t = torch.tensor([PLAN.timesteps[0], PLAN.timesteps[7]])
    for kw in ({}, {"eta": 1.0, "noise": z, "use_clipped_model_output": True}):
        got = dc.step(PLAN, m, t, x, **kw)
        with reference_path():
            want = dc.step(PLAN, m, t, x, **kw)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-13, atol=1e-13)
    meta = [a.to("meta") for a in (x, m, z)]
    out = dc.step(PLAN, meta[1], t.to("meta"), meta[0], eta=1.0, noise=meta[2])
    assert out.prev_sample.device.type == "meta" and out.prev_sample.shape == x.shape
    kernel = plugins.step_kernel(meta[0])
    assert kernel is not None  # the meta step above went through it, reading nothing


def test_a_timestep_array_out_of_range_on_the_host_is_an_error() -> None:
    x = torch.zeros(2, 3)
    for bad in (torch.tensor(1000), torch.tensor([-1, 900])):
        with pytest.raises(ValueError, match="outside"):
            dc.step(PLAN, x, bad, x)
