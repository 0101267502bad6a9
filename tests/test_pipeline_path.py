"""The call pattern of a diffusers pipeline reaches the fused kernels: `t` taken from
`scheduler.timesteps` (a 0-d int64 tensor), clip_sample on, eta 0 and 1, inverse steps and
add_noise; accelerator-style (unreadable) timesteps take device-gathered rows, with no host
read, and equal the reference path."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from helpers import reference_path

import ddim_core as dc
from ddim_core import builtins, plugins, steps
from ddim_core.hookspecs import hookimpl

torch = pytest.importorskip("torch")
pytest.importorskip("numba")

CONFIG = dc.DDIMConfig(clip_sample=True, timestep_spacing="trailing")
PLAN = dc.make_plan(CONFIG, 20)


@pytest.fixture(autouse=True)
def _numba_at_every_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests use small arrays; the numba kernel must run on them too (by default it
    leaves steps below builtins.NUMBA_MIN_ELEMENTS to the reference path). Each starts with no
    step seen: plans are cached, so an earlier test's steps of the same plan would be."""
    monkeypatch.setattr(builtins, "NUMBA_MIN_ELEMENTS", 0)
    monkeypatch.setattr(steps, "_SEEN", {})


class _CountFusedSteps:
    """A hook wrapper around the step kernels the plugins offer: counts the fused steps taken
    (a kernel call that does not decline)."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    @hookimpl(wrapper=True)
    def ddim_core_step_kernel(self, sample):  # type: ignore[no-untyped-def]
        kernel = yield
        if kernel is None:
            return None

        def counting(*args):  # type: ignore[no-untyped-def]
            out = kernel(*args)
            if out is not None:
                self.calls.append(1)
            return out

        return counting


@pytest.fixture
def fused_calls() -> Iterator[list[int]]:
    plugins.manager.cache_clear()
    counter = _CountFusedSteps()
    plugins.manager().register(counter, name="count-fused-steps")
    yield counter.calls
    plugins.manager.cache_clear()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tensor_timesteps_take_the_fused_path(dtype, fused_calls: list[int]) -> None:
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
    assert len(fused_calls) == 8 * len(timesteps)  # every step above ran the fused pass
    assert torch.equal(
        dc.add_noise(CONFIG, x, z, timesteps[3]), dc.add_noise(CONFIG, x, z, int(timesteps[3]))
    )


def test_per_sample_and_device_rows_equal_the_reference() -> None:
    """Distinct per-sample timesteps (CPU) and unreadable timesteps (meta) take rows gathered
    on the device into the eager kernel; values within the reference's tolerance, no read."""

    g = torch.Generator().manual_seed(1)
    x, m, z = (torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64) for _ in range(3))
    t = torch.tensor([PLAN.timesteps[0], PLAN.timesteps[7]])
    for kw in ({}, {"eta": 1.0, "noise": z, "use_clipped_model_output": True}):
        got = dc.step(PLAN, m, t, x, **kw)
        with reference_path():
            want = dc.step(PLAN, m, t, x, **kw)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-13, atol=1e-13)
    meta = [a.to("meta") for a in (x, m, z)]  # the last CPU step above, with no values
    out = dc.step(PLAN, meta[1], t.to("meta"), meta[0], **{**kw, "noise": meta[2]})
    for a, b in zip(out, got, strict=True):
        assert a.device.type == "meta" and a.shape == b.shape and a.dtype == b.dtype
    kernel = plugins.step_kernel(meta[0])
    assert kernel is not None  # the meta step above went through it, reading nothing


def test_a_timestep_array_out_of_range_on_the_host_is_an_error() -> None:
    x = torch.zeros(2, 3)
    for bad in (torch.tensor(1000), torch.tensor([-1, 900])):
        with pytest.raises(ValueError, match="outside"):
            dc.step(PLAN, x, bad, x)


def test_small_numpy_steps_never_import_numba() -> None:
    """A first step pays no numba start-up (~1 s) where the kernel would save microseconds."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np, ddim_core as dc\n"
        "p = dc.make_plan(dc.DDIMConfig(), 10)\n"
        "x = np.ones((300, 2))\n"
        "dc.sample(lambda x, t: 0.1 * x, x, dc.DDIMConfig(), 10)\n"
        "dc.step(p, x, 900, x)\n"
        "assert 'numba' not in sys.modules\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "ok", done.stderr[-2000:]


@pytest.mark.parametrize("inverse", [False, True])
def test_pipeline_timesteps_on_a_device_are_known_on_the_host(inverse: bool) -> None:
    """`for t in scheduler.timesteps: scheduler.step(out, t, x)` on an accelerator: each t is
    a view into the table set_timesteps built, so its value is the host's (no device read,
    the fused path with host coefficients). Anything else (a copy, a slice, the table changed
    in place) stays a device array. `meta` stands in for a device whose values cannot be read."""
    ddim_diffusers = pytest.importorskip("ddim_diffusers")
    cls = ddim_diffusers.DDIMInverseScheduler if inverse else ddim_diffusers.DDIMScheduler
    scheduler = cls(clip_sample=True)
    scheduler.set_timesteps(10, device="meta")
    x = torch.empty(1, 4, 8, 8, device="meta")
    plan = dc.make_plan(dc.DDIMConfig(clip_sample=True), 10)
    want = list(plan.inverse_timesteps if inverse else plan.timesteps)
    assert [scheduler._timestep_for(t, x) for t in scheduler.timesteps] == want
    assert [scheduler._timestep_for(scheduler.timesteps[i], x) for i in range(10)] == want
    for t in scheduler.timesteps:  # the whole loop runs on meta tensors: nothing is read
        x = scheduler.step(torch.empty_like(x), t, x).prev_sample
    assert x.device.type == "meta"
    for other in (scheduler.timesteps.clone()[0], scheduler.timesteps[1:2]):
        assert isinstance(scheduler._timestep_for(other, x), torch.Tensor)
    scheduler.timesteps.add_(0)  # changed in place: its values are no longer the host's
    assert isinstance(scheduler._timestep_for(scheduler.timesteps[0], x), torch.Tensor)


def test_pipeline_timesteps_on_the_cpu_are_read_as_they_are() -> None:
    """On the CPU a timestep is read where it is (free): a write torch's version counter does
    not see (through a NumPy view, or `.data`) is taken as it is."""
    ddim_diffusers = pytest.importorskip("ddim_diffusers")
    scheduler = ddim_diffusers.DDIMScheduler()
    scheduler.set_timesteps(10)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    scheduler.timesteps.numpy()[0] = 500
    scheduler.timesteps.data[1] = 400
    for i, t in enumerate((500, 400)):
        got = scheduler.step(0.1 * x, scheduler.timesteps[i], x).prev_sample
        assert torch.equal(got, scheduler.step(0.1 * x, t, x).prev_sample)


def test_pipeline_timesteps_built_in_inference_mode_step() -> None:
    """A table built under torch.inference_mode tracks no version: its entries stay arrays
    (read on the host where that is free) and the loop gives the int loop's result."""
    ddim_diffusers = pytest.importorskip("ddim_diffusers")
    reference, scheduler = ddim_diffusers.DDIMScheduler(), ddim_diffusers.DDIMScheduler()
    reference.set_timesteps(10)
    want = got = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    for t in reference.timesteps.tolist():
        want = reference.step(0.1 * want, t, want).prev_sample
    with torch.inference_mode():
        scheduler.set_timesteps(10)
        assert scheduler._state().built is None
        for t in scheduler.timesteps:
            got = scheduler.step(0.1 * got, t, got).prev_sample
    assert torch.equal(got, want)


@pytest.mark.parametrize("dtype", [torch.int16, torch.uint8, torch.int32])
def test_narrow_integer_timestep_arrays_on_a_device_gather_their_rows(dtype) -> None:  # type: ignore[no-untyped-def]
    """torch's index_select takes int32/int64 indices only: narrower integer timesteps are
    widened first (they raised from inside torch). `meta` stands in for a GPU."""
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.tensor([PLAN.timesteps[-3], PLAN.timesteps[-2]], dtype=dtype)  # (uint8: < 256)
    out = dc.step(PLAN, x.to("meta"), t.to("meta"), x.to("meta"))
    assert out[0].shape == x.shape and out[0].device.type == "meta"
    noisy = dc.add_noise(PLAN, x.to("meta"), x.to("meta"), t.to("meta"))
    assert noisy.shape == x.shape


# --- the steps `_dispatch` has taken, taken again (steps._seen_step) -------------------------


def _outcome(call) -> tuple[Any, ...]:  # type: ignore[no-untyped-def]
    """What a step call gives: its outputs as NumPy arrays, or its error's type and message."""
    try:
        out = call()
    except (TypeError, ValueError) as e:
        return (type(e), str(e))
    return tuple(np.asarray(a.detach() if isinstance(a, torch.Tensor) else a) for a in out)


def _same(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    if len(a) != len(b) or any(isinstance(v, type) for v in a) != any(
        isinstance(v, type) for v in b
    ):
        return False
    return all(
        (np.array_equal(u, v, equal_nan=True) and u.dtype == v.dtype)
        if isinstance(u, np.ndarray)
        else u == v
        for u, v in zip(a, b, strict=True)
    )


ONE = dc.make_plan(dc.DDIMConfig(steps_offset=1), 10)  # leading: its last timestep is 1
CONFIGS = [
    CONFIG,
    dc.DDIMConfig(clip_sample=False),
    dc.DDIMConfig(prediction_type="v_prediction", timestep_spacing="trailing"),
    dc.DDIMConfig(prediction_type="sample", clip_sample_range=0.5, set_alpha_to_one=False),
]


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("library", ["numpy", "torch"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_steps_taken_again_skip_dispatch_and_equal_it(
    config: dc.DDIMConfig, library: str, dtype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step of a kind `_dispatch` has taken on a fused kernel (Python-int timestep, no out=)
    is taken again without it: the same kernel on the same row, bit for bit, forward and
    inverse, with and without use_clipped_model_output, at eta 0 and (with noise) 0.5 and 1."""
    plan = dc.make_plan(config, 10)
    g = np.random.default_rng(0)
    x, m, z = (g.standard_normal((2, 4, 8, 8)).astype(dtype) for _ in range(3))
    if library == "torch":
        x, m, z = torch.from_numpy(x), torch.from_numpy(m), torch.from_numpy(z)
    calls = []
    dispatch = steps._dispatch
    monkeypatch.setattr(steps, "_dispatch", lambda *a: calls.append(1) or dispatch(*a))

    def loop() -> list[Any]:
        outs = []
        for t in plan.timesteps:
            for clipped in (False, True):
                outs.append(dc.step(plan, m, t, x, use_clipped_model_output=clipped))
                for eta in (0.5, 1.0):
                    call = dc.step(
                        plan, m, t, x, eta=eta, noise=z, use_clipped_model_output=clipped
                    )
                    outs.append(call)
            outs.append(dc.inverse_step(plan, m, t, x))
        return outs

    first = loop()
    assert len(calls) == 7 * len(plan.timesteps)
    again = loop()
    assert len(calls) == 7 * len(plan.timesteps)  # none the second time
    for a, b in zip(first, again, strict=True):
        assert _same(_outcome(lambda a=a: a), _outcome(lambda b=b: b))


def test_steps_taken_again_check_what_dispatch_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Once a kind of step has been taken (`_seen_step` knows its plan, array type and dtype),
    every other call gives exactly what `_dispatch` alone gives: the same outputs, or the same
    error. A bool timestep is not timestep 1, a use_clipped_model_output of 1 is not True, a
    plan timestep's row is not another timestep's, and a kernel blocked since is not used."""
    g = torch.Generator().manual_seed(3)
    x, m, z = (torch.randn(2, 4, 8, 8, generator=g) for _ in range(3))
    t0 = PLAN.timesteps[2]
    calls = [
        lambda: dc.step(PLAN, m, t0, x, eta=1.0, noise=z),
        lambda: dc.step(PLAN, m, t0, x, eta=1.0),  # no noise
        lambda: dc.step(PLAN, m, t0, x, eta=0.0, noise=z),  # noise unused at eta 0
        lambda: dc.step(PLAN, m, t0, x, eta=0.5, noise=z),  # an eta never seen
        lambda: dc.step(PLAN, m, t0, x, eta=1.0, noise=z.double()),
        lambda: dc.step(PLAN, m, t0, x, eta=1.0, noise=z[:1]),
        lambda: dc.step(PLAN, m, t0, x, eta=1.0, noise=z.numpy()),
        lambda: dc.step(PLAN, m, t0, x, eta=1.0, noise=z.transpose(2, 3)),
        lambda: dc.step(PLAN, m, t0, x, eta=1.0, noise=z.to("meta")),
        lambda: dc.step(PLAN, m, t0, x, eta=1.0, noise=None),
        lambda: dc.step(PLAN, m, t0, x, eta=float("inf"), noise=z),
        lambda: dc.step(PLAN, m, 1, x, eta=1.0, noise=z),
        lambda: dc.step(PLAN, m, t0, x),
        lambda: dc.step(PLAN, m.double(), t0, x),
        lambda: dc.step(PLAN, m[:1], t0, x),
        lambda: dc.step(PLAN, m.numpy(), t0, x),
        lambda: dc.step(PLAN, m, True, x),
        lambda: dc.step(PLAN, m, 1, x),
        lambda: dc.step(PLAN, m, 3, x),
        lambda: dc.step(PLAN, m, 1000, x),
        lambda: dc.step(PLAN, m, np.int64(t0), x),
        lambda: dc.step(PLAN, m, t0, x, use_clipped_model_output=1),
        lambda: dc.step(PLAN, m, t0, x, use_clipped_model_output=np.bool_(True)),
        lambda: dc.step(PLAN, m, t0, x, eta=0),
        lambda: dc.step(PLAN, m, t0, x, eta=-0.0),
        lambda: dc.step(PLAN, m, t0, x, eta=float("nan")),
        lambda: dc.step(PLAN, m, t0, x.transpose(2, 3)),
        lambda: dc.step(PLAN, m, t0, x.requires_grad_(False).clone().requires_grad_(True)),
        lambda: dc.step(PLAN, m, t0, None),
        lambda: dc.step(PLAN, None, t0, x),
        lambda: dc.step(dc.make_plan(CONFIG, 20), m, t0, x),  # a plan never seen
        lambda: dc.step(PLAN.timesteps, m, t0, x),
        lambda: dc.inverse_step(PLAN, m, t0, x),
        lambda: dc.inverse_step(PLAN, m, True, x),
        lambda: dc.step(ONE, m, True, x),  # not timestep 1, whose row is seen
        lambda: dc.step(ONE, m, 1, x, use_clipped_model_output=1),
    ]
    for plan in (PLAN, ONE):  # every row of these plans' steps seen
        for t in plan.timesteps:
            dc.step(plan, m, t, x)
            dc.step(plan, m, t, x, eta=1.0, noise=z)
            dc.step(plan, m, t, x, use_clipped_model_output=True)
            dc.inverse_step(plan, m, t, x)
    taken = [_outcome(call) for call in calls]
    monkeypatch.setattr(steps, "_seen_step", lambda *a: None)  # `_dispatch` alone
    alone = [_outcome(call) for call in calls]
    assert all(_same(a, b) for a, b in zip(taken, alone, strict=True))
    monkeypatch.undo()
    fused = dc.step(PLAN, m, t0, x).prev_sample
    with reference_path():  # the fused kernels blocked since: the kind seen is not fused
        got = dc.step(PLAN, m, t0, x).prev_sample
        want = dc.step(dc.make_plan(CONFIG, 20), m, t0, x).prev_sample  # a plan never seen
    assert torch.equal(got, want) and not torch.equal(fused, want)


def test_steps_taken_again_take_a_pair_of_any_tuple_type() -> None:
    """A plugin kernel's pair may be any tuple or list of two (a NamedTuple, a StepOutput), as
    `_dispatch` takes it: a step taken again gives the same, not the wrong-result TypeError."""
    Pair = collections.namedtuple("Pair", "prev x0")

    class Kernel:
        @hookimpl(tryfirst=True)
        def ddim_core_step_kernel(self, sample):  # type: ignore[no-untyped-def]
            def kernel(x, m, z, c, clip, out):  # type: ignore[no-untyped-def]
                return Pair(x + 1.0, x - 1.0)

            return kernel if isinstance(sample, np.ndarray) else None

    plugins.manager.cache_clear()
    plugins.manager().register(Kernel(), name="namedtuple-kernel")
    try:
        plan = dc.make_plan(dc.DDIMConfig(clip_sample=False), 7)
        x, m = np.random.default_rng(0).standard_normal((2, 2, 4))
        outs = [dc.step(plan, m, plan.timesteps[1], x) for _ in range(3)]
    finally:
        plugins.manager.cache_clear()
    for out in outs:
        assert type(out) is dc.StepOutput
        assert np.array_equal(out.prev_sample, x + 1.0) and np.array_equal(out[1], x - 1.0)
