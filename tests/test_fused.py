"""Fused step kernels (torch eager, numba, CuPy) equal the reference array-API path.

The kernels compute a `coefficients.FusedRow` in float64 in the reference's order of operations;
the reference rounds after every operation in the sample's dtype. Both must agree with the
float64 result on the same inputs to within 8 ulps of the size of the terms that are summed
(|x0_x x| + |x0_m m|, over |x0_div|, for x0, and likewise for x_prev): where
x0 = (x - s1 eps) / sqrt(abar) cancels (t near T), a tolerance relative to the result would not
hold for either. On float64 samples the kernels equal the reference bit for bit.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest
from helpers import blocked, reference_path, to_numpy

import ddim_core as dc
from ddim_core import builtins, coefficients, plugins


@pytest.fixture(autouse=True)
def _numba_at_every_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests use small arrays; the numba kernel must run on them too (by default it
    leaves steps below builtins.NUMBA_MIN_ELEMENTS to the reference path)."""
    monkeypatch.setattr(builtins, "NUMBA_MIN_ELEMENTS", 0)


def _libraries() -> list:  # type: ignore[type-arg]
    libs = [
        pytest.param(
            "numpy",
            marks=pytest.mark.skipif(
                __import__("importlib").util.find_spec("numba") is None,
                reason="numba not installed",
            ),
        )
    ]
    libs += ["torch", "torch-eager", "cupy"]  # torch: numba's pass on the CPU when installed
    return libs


def _arrays(library: str, dtype: str, shape: tuple[int, ...], n: int):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    host = [rng.standard_normal(shape).astype(dtype) * 2 for _ in range(n)]
    if library == "numpy":
        return host
    if library == "torch-eager":  # autograd inputs take the eager kernel (GPU's path too)
        torch = pytest.importorskip("torch")
        return [torch.from_numpy(a).requires_grad_() for a in host]
    mod = pytest.importorskip(library)
    if library == "cupy":
        try:
            return [mod.asarray(a) for a in host]
        except Exception as exc:
            pytest.skip(f"no GPU: {exc}")
    return [mod.from_numpy(a) for a in host]


CONFIGS = [
    dc.DDIMConfig(
        prediction_type=p, clip_sample=c, timestep_spacing="trailing", clip_sample_range=1.5
    )
    for p, c in itertools.product(("epsilon", "sample", "v_prediction"), (False, True))
]


@pytest.mark.parametrize("library", _libraries())
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(
    "config", CONFIGS, ids=lambda c: f"{c.prediction_type}-clip{int(c.clip_sample)}"
)
def test_fused_equals_reference(library: str, dtype: str, config: dc.DDIMConfig) -> None:
    plan = dc.make_plan(config, 10)
    x, m, z = _arrays(library, dtype, (2, 3, 5, 7), 3)
    assert plugins.step_kernel(x) is not None
    runs = []
    for t, eta, clipped in itertools.product(plan.timesteps, (0.0, 0.7), (False, True)):
        args = {"eta": eta, "noise": z, "use_clipped_model_output": clipped}
        # (sample prediction cannot invert from the clean level: tested in test_errors)
        invertible = not (config.prediction_type == "sample" and t == plan.timesteps[-1])
        runs.append((t, eta, clipped, args, invertible))

    def both(t, args, invertible):  # type: ignore[no-untyped-def]
        cases = [(False, dc.step(plan, m, t, x, **args))]
        return cases + ([(True, dc.inverse_step(plan, m, t, x))] if invertible else [])

    fused = [both(t, args, inv) for t, _, _, args, inv in runs]
    with reference_path():
        ref = [both(t, args, inv) for t, _, _, args, inv in runs]
    host = [to_numpy(a) for a in (x, m, z)]
    for (t, eta, clipped, _, _), got_cases, want_cases in zip(runs, fused, ref, strict=True):
        for (inverse, got), (_, want) in zip(got_cases, want_cases, strict=True):
            e, bounds = _exact_and_bounds(plan, t, host, eta, clipped, inverse, dtype)
            for a, b, e_k, bound in zip(got, want, e, bounds, strict=True):
                a, b = to_numpy(a, dtype=None), to_numpy(b, dtype=None)
                assert a.dtype == b.dtype == np.dtype(dtype)
                if dtype == "float64" and library != "torch-eager":
                    assert np.array_equal(a, b), (t, eta, clipped, inverse)
                assert np.all(np.abs(a - e_k) <= bound), (t, eta, clipped, inverse)
                assert np.all(np.abs(b - e_k) <= bound), (t, eta, clipped, inverse)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize(
    "config", CONFIGS, ids=lambda c: f"{c.prediction_type}-clip{int(c.clip_sample)}"
)
def test_half_precision_torch_steps_equal_the_reference_within_one_rounding(
    dtype: str, config: dc.DDIMConfig
) -> None:
    """float16 / bfloat16 CPU tensors take the float32 kernel on float32 copies, rounded once
    to the sample's dtype, as the reference (float32 work dtype) rounds once: the two differ
    by at most one unit in the last place of the dtype, both are within 8 of the exact
    result's summed terms, and out= buffers get the same numbers."""
    torch = pytest.importorskip("torch")
    plan = dc.make_plan(config, 10)
    half = getattr(torch, dtype)
    x, m, z = (torch.from_numpy(a).to(half) for a in _arrays("numpy", "float32", (2, 3, 5, 7), 3))
    assert plugins.step_kernel(x).func is builtins._torch_step_half
    eps = torch.finfo(half).eps
    tiny = torch.finfo(half).tiny * eps  # the smallest subnormal's spacing
    host = [a.double().numpy() for a in (x, m, z)]
    for t, eta, clipped in itertools.product(plan.timesteps, (0.0, 0.7), (False, True)):
        args = {"eta": eta, "noise": z, "use_clipped_model_output": clipped}
        got = dc.step(plan, m, t, x, **args)
        bufs = (torch.empty_like(x), torch.empty_like(x))
        into = dc.step(plan, m, t, x, out=bufs, **args)
        with reference_path():
            want = dc.step(plan, m, t, x, **args)
        exact, bounds = _exact_and_bounds(plan, t, host, eta, clipped, False, "float64")
        for a, a_out, b, e_k, bound in zip(got, into, want, exact, bounds, strict=True):
            assert a.dtype == b.dtype == half
            assert torch.equal(a, a_out)
            a64, b64 = a.double().numpy(), b.double().numpy()
            one = eps * np.maximum(np.abs(a64), np.abs(b64)) + tiny
            assert np.all(np.abs(a64 - b64) <= one), (t, eta, clipped)
            within = bound / np.finfo("float64").eps * eps + one  # 8 ulps of dtype, + rounding
            assert np.all(np.abs(a64 - e_k) <= within), (t, eta, clipped)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_clip_range_beyond_the_dtype_is_clipped_in_float32(dtype: str) -> None:
    """A clip_sample_range past float16's largest value (1e300, the docs' no-op) clipped the
    fused half-precision step's float32 x0_pred at 65504, where the reference clips in float32
    (`kernels.clip`): float16 x_t = 60000, eps = -60000 at t = 901 gave x_prev -58912 (x0_pred
    clipped to 65504), the reference +61088 (x0_pred inf once rounded to float16); an infinite
    model output gave a finite x0_pred. Both paths now give the reference's numbers."""
    torch = pytest.importorskip("torch")
    half = getattr(torch, dtype)
    plan = dc.make_plan(dc.DDIMConfig(clip_sample=True, clip_sample_range=1e300), 10)
    x = torch.tensor([1.0, 2.0, 60000.0, 3.0e38], dtype=half)
    m = torch.tensor([-float("inf"), 0.5, -60000.0, -3.0e38], dtype=half)
    for t in (901, 501):
        fused = dc.step(plan, m, t, x)
        into = dc.step(plan, m, t, x, out=(torch.empty_like(x), torch.empty_like(x)))
        with reference_path():
            ref = dc.step(plan, m, t, x)
        for a, a_out, b in zip(fused, into, ref, strict=True):
            assert torch.equal(a_out, a), (t, a_out, a)
            eps = torch.finfo(half).eps  # one rounding apart at most (inf equals inf only)
            torch.testing.assert_close(a, b, rtol=eps, atol=0.0, msg=lambda e, t=t: f"{t}: {e}")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_out_buffers_with_the_negative_bit_get_the_step_values(
    dtype: str,
) -> None:
    """An out= buffer with the negative bit (`torch._neg_view`) of a float16 sample was
    written with the opposite sign: torch's float32 -> float16 `copy_` into such a view drops
    the bit (torch 2.13 CPU). The kernel's float32 results are rounded to the sample's dtype
    before they are copied in, so every buffer gets the values of the step without out=."""
    torch = pytest.importorskip("torch")
    plan = dc.make_plan(CONFIGS[0], 10)
    half = getattr(torch, dtype)
    x, m = (torch.from_numpy(a).to(half) for a in _arrays("numpy", "float32", (2, 3, 5), 2))
    t = plan.timesteps[2]
    want = dc.step(plan, m, t, x)
    for which in (0, 1):
        bufs = [torch.empty_like(x), torch.empty_like(x)]
        bufs[which] = torch._neg_view(torch.empty_like(x))
        got = dc.step(plan, m, t, x, out=tuple(bufs))
        assert got[which] is bufs[which]
        assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True)), which


def test_half_precision_torch_steps_leave_autograd_and_other_devices_to_the_reference() -> None:
    """A half-precision input that requires grad, or one off the CPU (meta), is not copied to
    float32 by the kernel: the reference runs (gradients flow; a meta step stays meta)."""
    torch = pytest.importorskip("torch")
    plan = dc.make_plan(CONFIGS[1], 10)
    x, m = (torch.from_numpy(a).half() for a in _arrays("numpy", "float32", (2, 3), 2))
    t = plan.timesteps[3]
    half = functools.partial(builtins._torch_step_half, builtins._torch_step)
    assert half(x.to("meta"), m.to("meta"), None, None, 1.0, None) is None
    x.requires_grad_()
    assert half(x, m, None, None, 1.0, None) is None
    out = dc.step(plan, m, t, x)
    with reference_path():
        want = dc.step(plan, m, t, x)
    assert torch.equal(out.prev_sample, want.prev_sample)
    out.prev_sample.sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.float16
    meta = dc.step(plan, m.to("meta"), t, x.detach().to("meta"))
    assert meta.prev_sample.device.type == "meta" and meta.prev_sample.dtype == torch.float16


def _exact_and_bounds(plan, t, host, eta, clipped, inverse, dtype):  # type: ignore[no-untyped-def]
    """float64 results on the inputs, and 8 ulps (of dtype) of the summed terms' size."""
    x, m, z = host
    eta = 0.0 if inverse else eta
    noise = z if eta > 0 else None
    if inverse:
        exact = dc.inverse_step(plan, m, t, x)
    else:
        exact = dc.step(plan, m, t, x, eta=eta, noise=z, use_clipped_model_output=clipped)
    key = coefficients.StepKey(plan, eta, inverse)
    c = coefficients.fused_row(key, t, clipped and not inverse)
    size0 = (np.abs(c.x0_x * x) + np.abs(c.x0_m * m)) / abs(c.x0_div)
    u = np.abs(exact.pred_original_sample) if c.eps_from_x0 else np.abs(m)
    size_eps = (np.abs(c.eps_x * x) + np.abs(c.eps_m) * u) / abs(c.eps_div)
    size = abs(c.sqrt_ab_to) * size0 + abs(c.direction) * size_eps
    if noise is not None:
        size = size + np.abs(c.sigma * noise)
    ulp = np.finfo(dtype).eps
    return [exact.prev_sample, exact.pred_original_sample], [8 * ulp * size, 8 * ulp * size0]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_blocking_the_numba_plugin_keeps_numba_off_torch_steps(dtype: str) -> None:
    """DDIM_CORE_BLOCK_PLUGINS=numba blocked numba's plugin for NumPy, but torch-fused still
    ran numba's pass on CPU tensors (importing numba), where the plugin table says numba
    serves NumPy and torch CPU. With it blocked, CPU torch steps take the eager kernel."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("numba")
    x, m = (
        torch.from_numpy(a).to(getattr(torch, dtype))
        for a in _arrays("numpy", "float32", (2, 3), 2)
    )
    plan = dc.make_plan(dc.DDIMConfig(), 10)
    with reference_path():
        want = dc.step(plan, m, 500, x)
    with blocked("numba"):
        kernel = plugins.step_kernel(x)
        got = dc.step(plan, m, 500, x)
    assert getattr(kernel, "args", (kernel,))[0] is builtins._torch_step  # (half: a partial)
    assert torch.allclose(got.prev_sample, want.prev_sample, rtol=1e-2, atol=1e-6)
    assert getattr(plugins.step_kernel(x), "args", (None,))[0] is not builtins._torch_step


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
@pytest.mark.parametrize("pooled", [False, True], ids=["small", "pooled"])
def test_forward_mode_tangents_flow_through_the_torch_steps(dtype: str, pooled: bool) -> None:
    """Dual tensors of torch.autograd.forward_ad do not require grad, so numba's pass (and the
    half-precision float32 copies) took them and returned outputs without a tangent (None,
    where the reference has d x_prev / d x_t); with out= numba wrote no tangent and the eager
    kernel raised torch's NotImplementedError for mul_out. Now they take torch's ops (with
    out=, fresh results copied into the buffers, as under torch.func.jvp)."""
    torch = pytest.importorskip("torch")
    fw = torch.autograd.forward_ad
    plan = dc.make_plan(dc.DDIMConfig(clip_sample=False), 10)
    shape = (2, 4, 64, 64) if pooled else (2, 3)
    x, m, z, dx = (a.to(getattr(torch, dtype)) for a in _arrays("torch", "float32", shape, 4))
    t = plan.timesteps[3]

    def tangents():  # type: ignore[no-untyped-def]
        with fw.dual_level():
            out = dc.step(plan, m, t, fw.make_dual(x, dx), eta=0.5, noise=z)
            return [fw.unpack_dual(a) for a in out]

    got = tangents()
    with reference_path():
        want = tangents()
    for a, b in zip(got, want, strict=True):
        assert a.tangent is not None and b.tangent is not None
        assert torch.allclose(a.tangent.double(), b.tangent.double(), rtol=1e-2, atol=1e-5)
        assert torch.allclose(a.primal.double(), b.primal.double(), rtol=1e-2, atol=1e-5)
    with fw.dual_level():  # out= too: the buffers get the values and the tangents
        bufs = (torch.empty_like(x), torch.empty_like(x))
        out = dc.step(plan, m, t, fw.make_dual(x, dx), eta=0.5, noise=z, out=bufs)
        assert out.prev_sample is bufs[0] and out.pred_original_sample is bufs[1]
        for a, b in zip((fw.unpack_dual(a) for a in out), want, strict=True):
            assert a.tangent is not None
            assert torch.allclose(a.tangent.double(), b.tangent.double(), rtol=1e-2, atol=1e-5)
            assert torch.allclose(a.primal.double(), b.primal.double(), rtol=1e-2, atol=1e-5)


@pytest.mark.parametrize("library", [lib for lib in _libraries() if lib != "torch-eager"])
def test_out_buffers_are_written_and_returned(library: str) -> None:
    plan = dc.make_plan(dc.DDIMConfig(), 10)
    x, m, prev, x0 = _arrays(library, "float32", (1, 4, 8, 8), 4)
    got = dc.step(plan, m, 500, x, out=(prev, x0))
    assert got.prev_sample is prev and got.pred_original_sample is x0
    again = dc.step(plan, m, 500, x)
    assert np.allclose(to_numpy(prev), to_numpy(again.prev_sample), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="out\\[0\\] shares memory with sample"):
        dc.step(plan, m, 500, x, out=(x, x0))  # a kernel would read what it overwrote


def test_torch_out_buffers_take_a_timestep_per_sample() -> None:
    """torch's out= takes a timestep array as the docstring says (one timestep per sample,
    coefficients gathered on the device): the buffers hold the step without out=."""
    torch = pytest.importorskip("torch")
    plan = dc.make_plan(dc.DDIMConfig(), 10)
    x, m, prev, x0 = _arrays("torch", "float32", (2, 4, 8, 8), 4)
    t = torch.tensor([plan.timesteps[0], plan.timesteps[7]])
    got = dc.step(plan, m, t, x, out=(prev, x0))
    assert got.prev_sample is prev and got.pred_original_sample is x0
    for g, w in zip(got, dc.step(plan, m, t, x), strict=True):
        assert torch.equal(g, w)


@pytest.mark.parametrize("library", [lib for lib in _libraries() if lib != "torch-eager"])
def test_out_buffers_of_an_empty_batch(library: str) -> None:
    """An empty batch has no memory to share: every empty tensor's data pointer is 0, which
    the torch kernel's alias check took for the outputs sharing the inputs' memory, so
    out= raised 'out= needs a fused kernel' where the step without out= worked."""
    plan = dc.make_plan(dc.DDIMConfig(), 10)
    x, m, prev, x0 = _arrays(library, "float32", (0, 4, 8, 8), 4)
    got = dc.step(plan, m, 500, x, out=(prev, x0))
    assert got.prev_sample is prev and got.pred_original_sample is x0
    assert tuple(got.prev_sample.shape) == (0, 4, 8, 8)


@pytest.mark.parametrize("wrap", ["masked sample", "masked model_output", "masked noise", "matrix"])
def test_numba_leaves_numpy_subclasses_it_cannot_take_to_the_reference(wrap: str) -> None:
    """numba types no MaskedArray, and a matrix stays 2-d when raveled: such an input reached
    the numba pass (NumbaTypeError, TypingError from inside numba) where the reference takes
    it. They go to the reference now, with its numbers."""
    pytest.importorskip("numba")
    plan = dc.make_plan(dc.DDIMConfig(), 10)
    x, m, z = _arrays("numpy", "float64", (2, 6), 3)
    if wrap == "matrix":
        x, m, z = np.asmatrix(x), np.asmatrix(m), np.asmatrix(z)
    else:
        which = ["sample", "model_output", "noise"].index(wrap.split()[1])
        x, m, z = [np.ma.asarray(a) if i == which else a for i, a in enumerate((x, m, z))]
    got = dc.step(plan, m, 500, x, eta=0.5, noise=z)
    with reference_path():
        want = dc.step(plan, m, 500, x, eta=0.5, noise=z)
    for g, w in zip(got, want, strict=True):
        assert np.array_equal(np.asarray(g), np.asarray(w))


def test_out_needs_a_fused_kernel() -> None:
    strict = pytest.importorskip("array_api_strict")
    plan = dc.make_plan(dc.DDIMConfig(), 10)
    x = strict.zeros((2, 2))
    with pytest.raises(TypeError, match="out= needs a fused kernel"):
        dc.step(plan, x, 500, x, out=(strict.zeros((2, 2)), strict.zeros((2, 2))))


@pytest.mark.parametrize("case", ["transposed sample", "timestep per sample"])
def test_out_that_numba_declines_says_what_numpy_needs(case: str) -> None:
    """NumPy out= with a transposed sample (C-contiguous buffers) or a timestep per sample was
    told '... C-contiguous buffers that do not overlap the inputs': the buffers were fine; the
    numba kernel takes only C-contiguous inputs and a Python-int timestep. The message says so."""
    pytest.importorskip("numba")
    plan = dc.make_plan(dc.DDIMConfig(), 10)
    x = np.ones((3, 4))
    t: Any = plan.timesteps[1]
    if case == "transposed sample":
        x = np.ones((4, 3)).T
    else:
        t = np.array(plan.timesteps[:3])
    bufs = (np.empty((3, 4)), np.empty((3, 4)))
    need = "its inputs and buffers C-contiguous and a Python-int timestep"
    with pytest.raises(TypeError, match=need):
        dc.step(plan, np.zeros((3, 4)), t, x, out=bufs)


@pytest.mark.parametrize("which", [0, 1])
def test_out_with_none_for_a_buffer_names_it(which: int) -> None:
    """out=(buffer, None) (or (None, buffer)) was AttributeError: 'NoneType' object has no
    attribute 'shape' from deep in the out= checks; it is the TypeError naming out[i]."""
    plan = dc.make_plan(dc.DDIMConfig(), 10)
    x = np.zeros((2, 2))
    out: list[Any] = [np.empty_like(x), np.empty_like(x)]
    out[which] = None
    with pytest.raises(TypeError, match=rf"out\[{which}\] must be an array, got None"):
        dc.step(plan, x, 500, x, out=tuple(out))


@pytest.mark.parametrize("other", ["float16", "float64"])
def test_out_with_a_model_output_or_noise_of_another_dtype_names_it(other: str) -> None:
    """out= with a float32 sample and a float16 (or float64) model output or noise said
    'out= needs a fused kernel (...; float32/float64, ...)': the sample is float32, and the
    message named neither the argument nor its dtype. It now says which one differs."""
    plan = dc.make_plan(dc.DDIMConfig(), 10)
    x = np.zeros((2, 2), np.float32)
    out = (np.empty_like(x), np.empty_like(x))
    with pytest.raises(
        TypeError, match=f"out= needs model_output in the sample's dtype float32, got {other}"
    ):
        dc.step(plan, x.astype(other), 500, x, out=out)
    with pytest.raises(
        TypeError, match=f"out= needs noise in the sample's dtype float32, got {other}"
    ):
        dc.step(plan, x, 500, x, eta=1.0, noise=x.astype(other), out=out)


@pytest.mark.filterwarnings("error:Accessing the data pointer")  # of a FakeTensor: not asked
@pytest.mark.parametrize("transform", ["vmap", "jvp", "functionalize", "fake"])
def test_torch_tensors_without_memory_of_their_own_take_the_eager_kernel(transform: str) -> None:
    """torch.func's transforms and FakeTensorMode hand the step tensors with no memory at
    their data pointer (none, or 0): numba's pass raised from inside torch ('Cannot access
    data pointer of Tensor that doesn't have storage') or NumPy ('data is NULL'), where the
    reference step runs. The eager kernel takes them, with the reference's numbers."""
    torch = pytest.importorskip("torch")
    plan = dc.make_plan(dc.DDIMConfig(clip_sample=True), 10)
    x = torch.randn(3, 2, 4, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def f(xi: Any) -> Any:
        return dc.step(plan, 0.3 * xi, 500, xi).prev_sample

    with reference_path():
        ref = torch.stack([f(xi) for xi in x])
    if transform == "vmap":
        got = torch.func.vmap(f)(x)
    elif transform == "jvp":
        got = torch.stack([torch.func.jvp(f, (xi,), (torch.ones_like(xi),))[0] for xi in x])
    elif transform == "functionalize":
        got = torch.stack([torch.func.functionalize(f)(xi) for xi in x])
    else:
        from torch._subclasses.fake_tensor import FakeTensorMode

        first = x[0]
        with FakeTensorMode() as mode:
            fake = f(mode.from_tensor(first))
        assert fake.shape == x[0].shape and fake.dtype == x.dtype
        return
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)


@pytest.mark.filterwarnings("error:Accessing the data pointer")  # of a FakeTensor: not asked
@pytest.mark.parametrize("transform", ["vmap", "jvp", "functionalize", "fake"])
def test_out_buffers_of_torch_tensors_without_memory_of_their_own(transform: str) -> None:
    """step(..., out=) under torch.func's transforms: vmap raised from inside torch ('Cannot
    access data pointer of Tensor that doesn't have storage', the out= overlap check; past it,
    the eager kernel's torch.mul(out=) has no batching rule), functionalize said 'out[0]
    shares memory with sample' (every such tensor's data pointer is 0). Overlap is now
    unknown there, so only the same tensor aliases, and the eager kernel writes fresh results
    into the buffers: the reference's numbers, in the buffers."""
    torch = pytest.importorskip("torch")
    plan = dc.make_plan(dc.DDIMConfig(clip_sample=True), 10)
    gen = torch.Generator().manual_seed(0)
    x, z = (torch.randn(3, 2, 4, 8, 8, generator=gen, dtype=torch.float64) for _ in range(2))

    def f(xi: Any, zi: Any, prev: Any, x0: Any) -> Any:
        got = dc.step(plan, 0.3 * xi, 500, xi, eta=0.5, noise=zi, out=(prev, x0))
        assert got.prev_sample is prev and got.pred_original_sample is x0
        return prev, x0

    with reference_path():
        ref = [
            dc.step(plan, 0.3 * xi, 500, xi, eta=0.5, noise=zi) for xi, zi in zip(x, z, strict=True)
        ]
    want = [torch.stack([r[i] for r in ref]) for i in range(2)]
    bufs = (torch.empty_like(x), torch.empty_like(x))
    if transform == "vmap":
        got = torch.func.vmap(f)(x, z, *bufs)
    elif transform == "jvp":

        def g(xi: Any, zi: Any) -> Any:
            return f(xi, zi, torch.empty_like(xi), torch.empty_like(xi))

        pairs = [
            torch.func.jvp(g, (xi, zi), (torch.ones_like(xi), zi))[0]
            for xi, zi in zip(x, z, strict=True)
        ]
        got = [torch.stack([p[i] for p in pairs]) for i in range(2)]
    elif transform == "functionalize":
        pairs = [torch.func.functionalize(f)(*a) for a in zip(x, z, *bufs, strict=True)]
        got = [torch.stack([p[i] for p in pairs]) for i in range(2)]
    else:
        from torch._subclasses.fake_tensor import FakeTensorMode

        firsts = [a[0] for a in (x, z, *bufs)]
        with FakeTensorMode() as mode:
            fake = f(*(mode.from_tensor(a) for a in firsts))
        assert all(a.shape == x[0].shape and a.dtype == x.dtype for a in fake)
        return
    for g_, w in zip(got, want, strict=True):
        torch.testing.assert_close(g_, w, rtol=0, atol=1e-12)
    if transform != "jvp":
        for b, w in zip(bufs, want, strict=True):  # written through the transform
            torch.testing.assert_close(b, w, rtol=0, atol=1e-12)


def test_functional_views_are_not_read_as_memory() -> None:
    """Under torch.func.functionalize a view's data pointer is its offset from 0 (x[1]: 64),
    not an address: numba's pass took such inputs and out= buffers as memory there, and
    crashed the process (segfault; without out=, a large sample raised from torch's
    storage in the buffer pool after reading it). `backends.tensor_address` asks the storage:
    they take the eager kernel, with the step's numbers. Run in a child: the crash was one."""
    pytest.importorskip("torch")
    code = """
        import torch, ddim_core as dc
        plan = dc.make_plan(dc.DDIMConfig(), 10)
        x = torch.randn(4, 2, 4, dtype=torch.float64)
        b = torch.zeros(6, 2, 4, dtype=torch.float64)
        f = lambda xi, mi, p, q: dc.step(plan, mi, 500, xi, out=(p, q))
        got = torch.func.functionalize(f)(x[1], x[3], b[4], b[5])
        want = dc.step(plan, x[3], 500, x[1])
        for g, w, o in zip(got, want, (b[4], b[5])):
            torch.testing.assert_close(g, w, rtol=0, atol=1e-14)
            torch.testing.assert_close(o, w, rtol=0, atol=1e-14)
        big = torch.randn(4, 4, 64, 64, dtype=torch.float64)  # past NUMBA_MIN_ELEMENTS
        g = lambda xi, mi: dc.step(plan, mi, 500, xi).prev_sample
        got = torch.func.functionalize(g)(big[1], big[3])
        torch.testing.assert_close(got, g(big[1], big[3]), rtol=0, atol=1e-14)
        print("ok")
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


@pytest.mark.parametrize("contiguous", [True, False], ids=["numba", "eager"])
def test_torch_fused_allocates_only_its_outputs(contiguous: bool) -> None:
    torch = pytest.importorskip("torch")
    plan = dc.make_plan(dc.DDIMConfig(clip_sample=True), 10)
    x, m, z = (torch.randn(1, 4, 64, 64) for _ in range(3))
    if not contiguous:  # the eager kernels (also the GPU's path)
        x, m, z = (a.transpose(2, 3) for a in (x, m, z))
    dc.step(plan, m, 500, x, eta=1.0, noise=z)  # warm up caches
    with torch.profiler.profile(profile_memory=True) as prof:
        dc.step(plan, m, 500, x, eta=1.0, noise=z)
    # top-level ops' allocations; torch also wraps each Python-float coefficient in a 0-d
    # tensor (a few bytes, freed at once): every array-sized allocation is one of the outputs
    nbytes = x.numel() * x.element_size()
    big = [
        e.cpu_memory_usage
        for e in prof.events()
        if e.cpu_parent is None and e.cpu_memory_usage >= 1024
    ]
    assert big == [nbytes, nbytes]


@pytest.mark.parametrize("library", [lib for lib in _libraries() if lib != "torch-eager"])
def test_nan_propagates_through_clipping_like_the_reference(library: str) -> None:
    plan = dc.make_plan(dc.DDIMConfig(clip_sample=True), 10)
    x, m = _arrays(library, "float32", (1, 2, 3, 4), 2)
    x[0, 0, 0, 0] = float("nan")
    fused = dc.step(plan, m, 500, x)
    with reference_path():
        ref = dc.step(plan, m, 500, x)
    for a, b in zip(fused, ref, strict=True):
        np.testing.assert_array_equal(np.isnan(to_numpy(a)), np.isnan(to_numpy(b)))
        assert np.isnan(to_numpy(a)[0, 0, 0, 0])


@pytest.mark.parametrize(
    "library", [lib for lib in _libraries() if lib not in ("torch-eager", "cupy")]
)
def test_numba_computes_float32_in_float32_and_float64_in_float64(
    library: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """float32 samples take the folded float32 loop (vectorised), float64 samples the float64
    loop that equals the reference bit for bit; the tests above check both against it."""
    from ddim_core import _numba

    calls: list[str] = []
    for name in ("_step_serial", "_step_parallel", "_folded_serial", "_folded_parallel"):
        monkeypatch.setattr(_numba, name, lambda *args, name=name: calls.append(name))
    plan = dc.make_plan(dc.DDIMConfig(clip_sample=True), 10)
    for dtype, loop in (("float32", "_folded_serial"), ("float64", "_step_serial")):
        x, m = _arrays(library, dtype, (1, 4, 8, 8), 2)
        dc.step(plan, m, 500, x)
        assert calls == [loop]
        calls.clear()


def test_folded_multipliers_give_the_row() -> None:
    pytest.importorskip("numba")
    from ddim_core import _numba

    c = coefficients.fused_form(coefficients.Row(0.6, 0.8, 0.5, 0.25, 0.1), "epsilon", False)
    ax, am, ca, cx, cm, s = _numba.folded(c).tolist()
    # x0 = (x - 0.8 m) / 0.6; x_b = 0.5 x0 + 0.25 m + 0.1 z (eps_pred is m itself)
    assert np.allclose([ax, am, ca, cx, cm, s], [1 / 0.6, 0.8 / 0.6, 0.5, 0.0, 0.25, 0.1])
    c = coefficients.fused_form(coefficients.Row(0.6, 0.8, 0.5, 0.25, 0.1), "epsilon", True)
    reclip = _numba.folded(c).tolist()
    # eps from the clipped x0: (x - 0.6 x0) / 0.8, so x_b = (0.5 - 0.25 * 0.75) x0 + 0.3125 x
    assert np.allclose(reclip, [1 / 0.6, 0.8 / 0.6, 0.5 - 0.25 * 0.75, 0.3125, 0.0, 0.1])


@pytest.mark.parametrize("library", [lib for lib in _libraries() if lib != "torch-eager"])
@pytest.mark.parametrize("clipped", [False, True], ids=["eps", "reclip"])
def test_float32_clip_limit_and_non_finite_inputs_like_the_reference(
    library: str, clipped: bool
) -> None:
    """The clip limit is the reference's (1.1 rounded to float32, hit exactly); NaN stays NaN
    and an infinite model output gives what the reference gives (finite where eps_pred is
    re-derived from the clipped x0_pred)."""
    config = dc.DDIMConfig(clip_sample=True, clip_sample_range=1.1)
    plan = dc.make_plan(config, 10)
    x, m = _arrays(library, "float32", (2, 4, 8, 8), 2)
    x[0, 0, 0, 0] = float("nan")
    m[0, 0, 0, 1] = float("inf")
    m[1, 0, 0, 1] = -float("inf")
    fused = dc.step(plan, m, 500, x, use_clipped_model_output=clipped)
    with reference_path():
        ref = dc.step(plan, m, 500, x, use_clipped_model_output=clipped)
    for a, b in zip(fused, ref, strict=True):
        a, b = to_numpy(a, dtype=None), to_numpy(b, dtype=None)
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_array_equal(np.isfinite(a), np.isfinite(b))
    x0 = to_numpy(fused.pred_original_sample, dtype=None)
    assert np.nanmax(x0) == np.nanmax(to_numpy(ref.pred_original_sample, dtype=None))
    assert np.nanmax(x0) == np.float32(1.1) and np.nanmin(x0) == -np.float32(1.1)


@pytest.mark.parametrize(  # CuPy's kernel still multiplies by the zeros (not checked on a GPU)
    "library", [lib for lib in _libraries() if lib != "cupy"]
)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "sample"])
def test_a_weight_of_zero_leaves_out_its_term_like_the_reference(
    library: str, dtype: str, prediction_type: str
) -> None:
    """eq. (9)'s structural zero weights (epsilon: eps_pred is the model output; sample: x0_pred
    is) leave out their term, as the reference does: an infinite sample gives what the
    reference gives (inf, or finite after the clip), not 0 * inf = NaN; numba's float64 loop
    bit for bit (the sign of a zero included)."""
    for clip in (False, True):
        plan = dc.make_plan(dc.DDIMConfig(clip_sample=clip, prediction_type=prediction_type), 10)
        x, m = _arrays(library, dtype, (2, 4, 8, 8), 2)
        torch = sys.modules.get("torch")
        with torch.no_grad() if torch else contextlib.nullcontext():  # autograd leaves: eager
            x[0, 0, 0, 0], x[1, 0, 0, 0] = float("inf"), -float("inf")
            m[0, 0, 0, 1], x[0, 0, 0, 1] = -0.0, 3.0  # sample: x0_pred is -0.0 itself
        fused = dc.step(plan, m, 500, x)
        with reference_path():
            ref = dc.step(plan, m, 500, x)
        for a, b in zip(fused, ref, strict=True):
            a, b = to_numpy(a, dtype=None), to_numpy(b, dtype=None)
            np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
            np.testing.assert_array_equal(np.isfinite(a), np.isfinite(b))
            np.testing.assert_array_equal(np.signbit(a), np.signbit(b))
            if dtype == "float64" and library != "torch-eager":  # eager: folded weights
                np.testing.assert_array_equal(a, b)


_LOOP_KINDS = """
import sys
import warnings
import numpy as np
from ddim_core import _numba
warnings.simplefilter("ignore")  # numba: "Inspection disabled for cached code"
loops = [_numba._step_serial, _numba._folded_serial]
if sys.argv[1] == "parallel":
    loops = [_numba._step_parallel, _numba._folded_parallel]
for loop in loops:
    folded = "folded" in loop.py_func.__name__
    x = np.ones(8, dtype=np.float32 if folded else np.float64)
    args = (x, x, x, x.copy(), x.copy())
    if folded:
        extra = (np.ones(6, np.float32), np.float32(1), False, False)
    else:
        extra = ((1.0,) * 9, False, 0.0, False, False)
    loop(*args, *extra)
    hit = sum(loop.stats.cache_hits.values()) > 0
    parfor = "parfor" in "".join(loop.inspect_llvm().values())
    print(loop.py_func.__name__, "loaded" if hit else ("parallel" if parfor else "serial"))
"""


@pytest.mark.slow
def test_numba_disk_cache_keeps_serial_and_parallel_loops_apart(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """numba's disk cache keys a function by name, line and bytecode, not by `parallel`: with
    the serial loops cached first, a later process's parallel loops must compile their own
    parallel code (not load the serial code and run serially), and each loop then loads its own."""
    pytest.importorskip("numba")
    import os
    import subprocess
    import sys

    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}

    def run(kind: str) -> list[str]:
        done = subprocess.run(
            [sys.executable, "-c", _LOOP_KINDS, kind], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.split("\n")[:-1]

    assert run("serial") == ["_step_serial serial", "_folded_serial serial"]
    assert run("parallel") == ["_step_parallel parallel", "_folded_parallel parallel"]
    assert run("serial") == ["_step_serial loaded", "_folded_serial loaded"]
    assert run("parallel") == ["_step_parallel loaded", "_folded_parallel loaded"]


class _GuardClock:
    """The numba guard on a fake clock (`now`), fresh, with 2 threads."""

    def __init__(self, numba_module: Any) -> None:
        self.numba = numba_module
        self.now = 100.0

    def choose(self, n: int) -> bool:
        """Whether a float32 step of n elements would run the parallel loop now."""
        chosen = bool(self.numba._choose(n, 4, self.now))
        if chosen:
            self.numba._PARALLEL.release()
        return chosen


@pytest.fixture
def guard(monkeypatch: pytest.MonkeyPatch) -> _GuardClock:
    pytest.importorskip("numba")
    from ddim_core import _numba

    clock = _GuardClock(_numba)
    monkeypatch.setattr(_numba.time, "perf_counter", lambda: clock.now)
    monkeypatch.setattr(_numba, "THREADS", 2)
    monkeypatch.setattr(_numba, "_guard", _numba._Guard())
    return clock


def test_numba_parallel_loop_backs_off_after_a_stall(guard: _GuardClock) -> None:
    """Large steps take the parallel loop once the serial loop has a time per element, until
    STALLS parallel steps in a row stall (> BACKOFF_RATIO x serial): then the serial loop for
    BACKOFF_S, doubled per back-off in a row, reset by a parallel step that pays."""
    from ddim_core import _numba

    n = _numba.PARALLEL_MIN

    def choose() -> bool:
        return guard.choose(n)

    assert not _numba._choose(n - 1, 4, guard.now)
    _numba._observe(False, n, 4, 1.0)  # the serial loop's first step (loading it): not counted
    assert not choose()
    _numba._observe(False, n, 4, n * 1e-9)  # 1 ns per element
    assert choose()
    _numba._observe(True, n, 4, 1.0)  # the parallel loop's first step: not counted
    _numba._observe(True, n, 4, n * 0.6e-9)  # pays
    assert choose()
    _numba._observe(True, n, 4, n * 10e-9)  # one slow step (a cold first step): no back-off
    assert choose()
    _numba._observe(True, n, 4, n * 0.6e-9)  # pays: the count starts again
    _numba._observe(True, n, 4, n * 10e-9)
    assert choose()
    _numba._observe(True, n, 4, n * 10e-9)  # STALLS in a row: a stall
    assert not choose()
    guard.now += _numba.BACKOFF_S
    assert choose()
    for _ in range(_numba.STALLS):
        _numba._observe(True, n, 4, n * 10e-9)  # a stall again: twice as long
    guard.now += _numba.BACKOFF_S
    assert not choose()
    guard.now += _numba.BACKOFF_S
    assert choose()
    _numba._observe(True, n, 4, n * 0.6e-9)
    assert _numba._guard.backoff_s == _numba.BACKOFF_S


def test_numba_guard_lets_parallel_steps_from_memory_run(guard: _GuardClock) -> None:
    """A parallel step from memory, measured against a serial best that ran from cache, takes
    up to ~4.5x that best per element (16x4x128x128 in the pipeline benchmark: 626-933 us
    against 216 us); steps like that, however many in a row, are no stall (at a ratio of 3
    they sent the benchmark's steps to the serial loop for good, at 2.6x the parallel time).
    A stall (a worker waiting for a CPU: 10-300x) still backs off."""
    from ddim_core import _numba

    n = _numba.PARALLEL_MIN

    def choose() -> bool:
        return guard.choose(n)

    _numba._observe(False, n, 4, 1.0)  # loading the serial loop: not counted
    _numba._observe(False, n, 4, n * 1e-9)  # serial best: 1 ns per element
    _numba._observe(True, n, 4, 1.0)  # loading the parallel loop: not counted
    for _ in range(4 * _numba.STALLS):
        _numba._observe(True, n, 4, n * 4.5e-9)  # from memory
        assert choose()
    for _ in range(_numba.STALLS):
        _numba._observe(True, n, 4, n * 12e-9)  # a stall
    assert not choose()


def test_the_pages_say_how_many_stalls_the_guard_backs_off_after() -> None:
    """docs/performance.md and _numba's docstring said the serial loop runs 'after a parallel
    step that stalled', where the guard waits for STALLS (two) in a row, as the README says: one
    slow step alone is a cold first step, no busy machine (the test above)."""
    pytest.importorskip("numba")
    import re
    from pathlib import Path

    from ddim_core import _numba

    root = Path(__file__).resolve().parent.parent
    count = {2: "two", 3: "three", 4: "four"}[_numba.STALLS]
    said = f"after {count} parallel steps in a row that stalled"
    texts = {
        "README.md": (root / "README.md").read_text(encoding="utf-8"),
        "docs/performance.md": (root / "docs" / "performance.md").read_text(encoding="utf-8"),
        "ddim_core/_numba.py": _numba.__doc__ or "",
    }
    for name, text in texts.items():
        flat = re.sub(r"\(`\w+`\) ", "", " ".join(text.split()))  # "two (`STALLS`) steps"
        found = re.findall(r"after (?:a|\w+) parallel steps?(?: in a row)? that stalled", flat)
        assert found and set(found) == {said}, (name, found)


def test_numba_guard_compares_a_parallel_step_with_serial_steps_of_its_size(
    guard: _GuardClock,
) -> None:
    """A small step runs from cache up to 2x faster per element than a large one from
    memory (0.17 against 0.3 ns per element in the benchmark's float32 steps). Measured
    against a small step's serial time, a large cache-cold parallel step looked like a stall
    and sent a pipeline to the serial loop for good (the benchmark's 8x4x128x128 rows ran
    serially after its 1x4x64x64 rows). Each size class has its own serial time: a large step
    runs the parallel loop only once the serial loop has run at its size, and is a stall only
    against that."""
    from ddim_core import _numba

    small, large = _numba.PARALLEL_MIN, 8 * _numba.PARALLEL_MIN
    choose = guard.choose

    _numba._observe(False, small, 4, 1.0)  # loading
    _numba._observe(True, small, 4, 1.0)  # loading
    _numba._observe(False, small, 4, small * 0.1e-9)  # from cache: 0.1 ns per element
    assert choose(small) and not choose(large)  # no serial time at the large size yet
    _numba._observe(False, large, 4, large * 0.3e-9)  # from memory
    assert choose(large)
    _numba._observe(True, large, 4, large * 0.4e-9)  # cache-cold, slower than serial: no stall
    assert choose(large) and _numba._guard.backoff_s == _numba.BACKOFF_S
    for _ in range(_numba.STALLS):
        _numba._observe(True, large, 4, large * 10e-9)  # a real stall
    assert not choose(large) and not choose(small)


def test_numba_parallel_step_runs_with_its_threads_and_gives_the_count_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """numba's thread count is per thread: a count the caller lowered on this thread
    (numba.set_num_threads(1), for its own parallel functions) is raised to THREADS for the
    parallel loop (set only where it differs), and given back after it (it was left at
    THREADS: the caller's later numba code ran on every thread)."""
    numba = pytest.importorskip("numba")
    from ddim_core import _numba

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba runs one thread here")
    seen = []
    monkeypatch.setattr(_numba, "THREADS", 2)
    monkeypatch.setattr(_numba, "_choose", lambda *a: _numba._PARALLEL.acquire(blocking=False))
    monkeypatch.setattr(_numba, "_pass", lambda *a: seen.append(numba.get_num_threads()))
    x = np.zeros(8, np.float32)
    row = coefficients.fused_form(coefficients.Row(0.6, 0.8, 0.5, 0.25, 0.0), "epsilon", False)
    before = numba.get_num_threads()
    after = []
    try:
        for threads in (1, 2, 1):
            numba.set_num_threads(threads)
            _numba.run(x, x, None, row, None, x.copy(), x.copy())
            after.append(numba.get_num_threads())
    finally:
        numba.set_num_threads(before)
    assert seen == [2, 2, 2]
    assert after == [1, 2, 1]


_FORK_AFTER_PARALLEL = """
import multiprocessing
import numpy as np
import ddim_core as dc
from ddim_core import _numba
plan = dc.make_plan(dc.DDIMConfig(clip_sample=True), 50)
x = np.ones(_numba.PARALLEL_MIN, np.float32)
out = (np.empty_like(x), np.empty_like(x))
ran = []
_numba._observe = lambda parallel, *args: ran.append(parallel)
_numba._guard.serial_ns[_numba._size_class(x.size, 4)] = 1.0  # the parallel loop may run now
for _ in range(3):
    dc.step(plan, x, 500, x, out=out)
assert ran[-1], ran  # the parent ran the parallel loop (its threads started)


def child():
    dc.step(plan, x, 500, x, out=out)
    assert ran[-1] is False


process = multiprocessing.get_context("fork").Process(target=child)
process.start()
process.join(60)
print(process.exitcode)
"""


@pytest.mark.slow
def test_numba_forked_child_steps_serially() -> None:
    """After the parent ran the parallel loop, a forked child's step runs the serial loop
    (numba's OpenMP layer terminates a forked child that starts its threads)."""
    pytest.importorskip("numba")
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _FORK_AFTER_PARALLEL], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0"], done.stderr


_WITHOUT_AFFINITY = """
import os
import sys
import numba
import numpy as np
import ddim_core as dc
del os.sched_getaffinity  # as on macOS and Windows (imported above: random's fork hook)
if sys.argv[1] == "windows":
    del os.register_at_fork
plan = dc.make_plan(dc.DDIMConfig(clip_sample=True), 10)
x = np.linspace(-2.0, 2.0, 12).reshape(3, 4)
m = 0.5 * x[::-1].copy()
want = dc.step(plan, m, 500, x)  # the reference path (12 elements: numba left unimported)
got = dc.step(plan, m, 500, x, out=(np.empty_like(x), np.empty_like(x)))  # numba's pass
from ddim_core import _numba
assert _numba.THREADS == min(numba.config.NUMBA_NUM_THREADS, os.cpu_count()), _numba.THREADS
assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))
print("ok")
"""


@pytest.mark.parametrize("system", ["macos", "windows"])
def test_numba_kernel_loads_where_os_has_no_cpu_affinity(system: str) -> None:
    """ddim_core._numba read os.sched_getaffinity (Linux only) and called os.register_at_fork
    (not on Windows) when it was imported: on macOS and Windows the first NumPy step of 16,384
    elements or more (or any with out=), and every CPU torch step of that size, raised
    AttributeError: module 'os' has no attribute 'sched_getaffinity'. There the thread count
    is os.cpu_count()'s (numba's own default does the same), and no fork hook is registered
    where there is no fork."""
    pytest.importorskip("numba")
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_AFFINITY, system],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["ok"], done.stderr[-2000:]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cupy_device_timesteps_read_their_row_in_the_kernel(dtype: str) -> None:
    """A timestep array on the GPU (0-d, as pipelines pass, or one per sample) takes the
    kernel's device-table form: one launch, float64 results equal to the reference path's
    bit for bit, float32 within rounding; a timestep out of range gives NaN, never a
    wrapped row (CuPy's take wraps)."""
    cupy = pytest.importorskip("cupy")
    plan = dc.make_plan(CONFIGS[3], 10)  # sample prediction, clip on
    x, m, z = _arrays("cupy", dtype, (2, 3, 5, 7), 3)
    assert getattr(plugins.step_kernel(x), "gather", None) is not None
    ts = [cupy.asarray(plan.timesteps[2]), cupy.asarray([plan.timesteps[1], plan.timesteps[6]])]
    for t, kw in itertools.product(ts, ({}, {"eta": 0.7, "noise": z})):
        for clipped in (False, True):
            got = dc.step(plan, m, t, x, use_clipped_model_output=clipped, **kw)
            with reference_path():
                want = dc.step(plan, m, t, x, use_clipped_model_output=clipped, **kw)
            for a, b in zip(got, want, strict=True):
                a, b = to_numpy(a, dtype=None), to_numpy(b, dtype=None)
                if dtype == "float64":
                    assert np.array_equal(a, b)
                else:
                    np.testing.assert_allclose(a, b, rtol=2e-6, atol=2e-6)
    bad = cupy.asarray([plan.timesteps[1], 1000])
    prev, x0 = (to_numpy(a) for a in dc.step(plan, m, bad, x))
    assert np.isfinite(prev[0]).all() and np.isnan(prev[1]).all() and np.isnan(x0[1]).all()
