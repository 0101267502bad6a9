"""ddim_core.backends through the public steps: out= buffers and inputs the array layer must
judge before a fused kernel writes (torch's own errors come from deep inside a kernel)."""

from __future__ import annotations

import pytest
from helpers import run_on_jax_cpu_devices

import ddim_core as dc
from ddim_core import backends

PLAN = dc.make_plan(dc.DDIMConfig(), 10)


def test_a_torch_broadcast_view_is_not_a_writable_out_buffer() -> None:
    """torch's expand() gives a view whose elements share memory (stride 0), as NumPy's
    broadcast_to does; `writable` said True, so out= reached the kernel and torch's
    RuntimeError 'more than one element of the written-to tensor refers to a single memory
    location' came from inside ddim_core.builtins."""
    torch = pytest.importorskip("torch")
    x = torch.ones(2, 3)
    assert not backends.writable(torch.empty(3).expand(2, 3))
    assert backends.writable(torch.empty(3, 2).T) and backends.writable(torch.empty(1, 3))
    assert backends.writable(torch.empty(3).expand(1, 3))  # stride 0 on a size-1 axis: fine
    assert backends.writable(torch.empty(3).expand(0, 2, 3))  # empty: nothing is shared
    with pytest.raises(ValueError, match=r"out\[0\] is read-only"):
        dc.step(PLAN, x * 0.5, 500, x, out=(torch.empty(3).expand(2, 3), torch.empty(2, 3)))


def test_out_with_torch_inputs_that_record_gradients_says_so() -> None:
    """torch's out= operations cannot record gradients: with a sample requiring grad, out= was
    torch's RuntimeError 'mul(): functions with out=... arguments don't support automatic
    differentiation' from inside ddim_core.builtins. Now a ValueError names the argument; under
    torch.no_grad() (nothing recorded) out= is written as before."""
    torch = pytest.importorskip("torch")
    x = torch.ones(2, 3, requires_grad=True)
    out = (torch.empty(2, 3), torch.empty(2, 3))
    with pytest.raises(ValueError, match="out= cannot record gradients: sample requires grad"):
        dc.step(PLAN, torch.ones(2, 3), 500, x, out=out)
    with pytest.raises(ValueError, match="model_output requires grad"):
        dc.step(PLAN, x * 0.5, 500, torch.ones(2, 3), out=out)
    with torch.no_grad():
        got = dc.step(PLAN, x * 0.5, 500, x, out=out)
    assert got.prev_sample is out[0]
    assert torch.allclose(out[0], dc.step(PLAN, x * 0.5, 500, x).prev_sample)


@pytest.mark.parametrize("contiguous", [True, False], ids=["numba", "eager"])
def test_an_out_buffer_that_records_gradients_is_refused(contiguous: bool) -> None:
    """An out= buffer requiring grad (grad mode on): the numba pass wrote it through NumPy
    views, which autograd does not see (no version bump), so a graph that had saved it gave
    gradients of the new values, silently; the eager kernel raised torch's 'mul(): functions
    with out=... arguments don't support automatic differentiation' from inside
    ddim_core.builtins. Now a ValueError names the buffer; under torch.no_grad() it is written
    as torch writes it."""
    torch = pytest.importorskip("torch")
    n = 1 << 15  # numba's size (builtins.NUMBA_MIN_ELEMENTS does not apply with out=)
    x = torch.ones(2, n) if contiguous else torch.ones(n, 2).T
    buf = torch.zeros(2, n, requires_grad=True)
    with pytest.raises(ValueError, match=r"out= cannot record gradients: out\[0\] requires grad"):
        dc.step(PLAN, x * 0.5, 500, x, out=(buf, torch.empty(2, n)))
    assert buf._version == 0 and not buf.detach().any()  # not written
    with pytest.raises(ValueError, match=r"out\[1\] requires grad"):
        dc.step(PLAN, x * 0.5, 500, x, out=(torch.empty(2, n), buf[:]))
    with torch.no_grad():
        got = dc.step(PLAN, x * 0.5, 500, x, out=(buf, torch.empty(2, n)))
    assert got.prev_sample is buf
    assert torch.equal(buf.detach(), dc.step(PLAN, x * 0.5, 500, x).prev_sample)


@pytest.mark.parametrize("contiguous", [True, False], ids=["numba", "eager"])
def test_an_inference_tensor_is_no_out_buffer_outside_inference_mode(contiguous: bool) -> None:
    """torch refuses writes into a tensor made under torch.inference_mode once outside it: the
    eager kernel raised 'Inplace update to inference tensor outside InferenceMode is not
    allowed' from inside ddim_core.builtins (the numba pass wrote it through NumPy views). Now
    a ValueError names the buffer in both; inside inference mode it is written. (`writable`
    stays True: a schedule table made in the mode may be written inside it later.)"""
    torch = pytest.importorskip("torch")
    n = 1 << 15
    x = torch.ones(2, n) if contiguous else torch.ones(n, 2).T
    with torch.inference_mode():
        out = (torch.empty(2, n), torch.empty(2, n))
    assert backends.inference_outside(out[0]) and backends.writable(out[0])
    with pytest.raises(ValueError, match=r"out\[0\] is an inference tensor"):
        dc.step(PLAN, x * 0.5, 500, x, out=out)
    with torch.inference_mode():
        assert not backends.inference_outside(out[0])
        got = dc.step(PLAN, x * 0.5, 500, x, out=out)
    assert got.prev_sample is out[0]


def test_out_buffers_on_the_meta_device() -> None:
    """Meta tensors have no memory: every data pointer is 0, so `overlaps` (and the torch
    kernel's alias check) took any two for sharing memory, and out= on 'meta' (shape-only dry
    runs) raised 'out[0] shares memory with sample'. Only the same tensor overlaps now."""
    torch = pytest.importorskip("torch")
    x = torch.ones(2, 3, device="meta")
    out = (torch.empty(2, 3, device="meta"), torch.empty(2, 3, device="meta"))
    assert not backends.overlaps(out[0], x) and backends.overlaps(x, x)
    got = dc.step(PLAN, x * 0.5, 500, x, out=out)
    assert got.prev_sample is out[0] and got.pred_original_sample is out[1]
    with pytest.raises(ValueError, match=r"out\[0\] shares memory with sample"):
        dc.step(PLAN, x * 0.5, 500, x, out=(x, out[1]))


def test_contiguous_torch_buffers_take_the_fast_overlap_check() -> None:
    """`overlaps` runs at every out= step for each buffer against the sample, model output,
    noise and the other buffer (seven calls). The MindSpore fix (c71ee2e) probed every array
    for data_ptr, stride and element_size (three hasattr) before the torch branch, so
    contiguous torch tensors, the common case meant to be cheap, paid them too: about 5 us
    of a 32 us torch out= step at 1x4x8x8. Torch tensors take no probe; strided ones still
    get their reach, and an array with a data pointer but no element size (MindSpore's)
    overlaps only itself."""
    import sys
    import types

    torch = pytest.importorskip("torch")
    probes: list[object] = []

    def profile(frame: object, event: str, arg: object) -> None:
        if event == "c_call" and arg is hasattr:
            probes.append(arg)

    a, b = torch.zeros(2, 8), torch.zeros(2, 8)
    sys.setprofile(profile)
    try:
        shared = backends.overlaps(a, a[1:]), backends.overlaps(a, b)
    finally:
        sys.setprofile(None)
    assert shared == (True, False) and not probes
    assert backends.overlaps(a.T, a[1]) and not backends.overlaps(a[0, ::2], a[1, ::2])
    like = types.SimpleNamespace(data_ptr=lambda: 8, stride=lambda: (1,), shape=(2,))
    assert not backends.overlaps(like, types.SimpleNamespace(**vars(like)))


def test_jax_jit_with_a_concrete_array_beside_traced_ones() -> None:
    """Under jax.jit a traced array has no device (None) while an array closed over has one:
    `namespace` compared them and raised 'timestep is on device None but sample is on
    CpuDevice(id=0); move them to one device' for arrays that are on one device."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    x = jnp.linspace(-1.0, 1.0, 6).reshape(2, 3)
    m = 0.5 * x
    t = jnp.asarray([901, 801])
    want = dc.step(PLAN, m, t, x).prev_sample
    got = jax.jit(lambda t: dc.step(PLAN, m, t, x).prev_sample)(t)  # x, m: constants
    assert jnp.allclose(got, want)
    got = jax.jit(lambda x: dc.step(PLAN, m, t, x).prev_sample)(x)  # m, t: constants
    assert jnp.allclose(got, want)
    got = jax.jit(lambda x: dc.add_noise(PLAN, x, m, t))(x)
    assert jnp.allclose(got, dc.add_noise(PLAN, x, m, t))


def test_jax_jit_negative_timestep_gathers_nan_not_the_last_level() -> None:
    """Under jax.jit timesteps cannot be read, and one out of range gathers NaN (documented:
    `check_range_on_device`). A negative one wrapped instead: t = -1 silently stepped from
    timestep 999, add_noise noised at 999."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    x = jnp.ones((2, 3))
    step = jax.jit(lambda t: dc.step(PLAN, 0.5 * x, t, x).prev_sample)
    got = step(jnp.asarray([-1, 901]))
    assert bool(jnp.isnan(got[0]).all()) and not bool(jnp.isnan(got[1]).any())
    noised = jax.jit(lambda t: dc.add_noise(PLAN, x, x, t))(jnp.asarray([-1, 5]))
    assert bool(jnp.isnan(noised[0]).all()) and not bool(jnp.isnan(noised[1]).any())


def test_torch_func_vmap_over_per_sample_timesteps_as_jax_vmap() -> None:
    """torch.func.vmap of a step, add_noise or get_velocity over (timestep, sample) pairs, as
    jax.vmap takes them: the 0-d batched timestep was read with .item() ("We don't support vmap
    over calling .item()"), and a timestep array hit torch's device assert, which has no
    batching rule ("Batching rule not implemented for aten::_assert_async.msg"). Each pair now
    equals the batched call; a timestep out of range, or where no step can be taken, gathers
    NaN for its own sample (as under jax.vmap and jax.jit, documented), never another row."""
    torch = pytest.importorskip("torch")
    vmap = torch.func.vmap
    x = torch.linspace(-1.0, 1.0, 12, dtype=torch.float64).reshape(3, 4)
    t = torch.tensor([900, 501, 0])
    config = dc.DDIMConfig()
    for fn in (
        lambda t, x: dc.step(PLAN, 0.5 * x, t, x).prev_sample,
        lambda t, x: dc.inverse_step(PLAN, 0.5 * x, t, x).prev_sample,
        lambda t, x: dc.add_noise(config, x, 0.5 * x, t),
        lambda t, x: dc.get_velocity(config, x, 0.5 * x, t),
    ):
        want = fn(t, x)
        assert torch.equal(vmap(fn)(t, x), want)
        for i in range(3):  # a 0-d timestep, read as an int where it is not batched
            assert torch.equal(vmap(fn, in_dims=(None, 0))(t[i], x), fn(t[i], x))
        got = vmap(fn)(torch.tensor([1000, -1, 0]), x)
        assert bool(got[:2].isnan().all()) and torch.equal(got[2], want[2])
    plan = dc.make_plan(dc.DDIMConfig(rescale_betas_zero_snr=True), timesteps=[998, 500, 0])
    got = vmap(lambda t, x: dc.step(plan, 0.5 * x, t, x).prev_sample)(
        t.new_tensor([999, 998, 0]), x
    )
    assert bool(got[0].isnan().all()) and not bool(got[1:].isnan().any())


@pytest.mark.parametrize("dtype", ["int32", "uint16"])
def test_jax_jit_timestep_where_no_step_can_be_taken_gives_nan(dtype: str) -> None:
    """Under jax.jit a timestep where no step can be taken (epsilon prediction at a zero-SNR
    level) cannot be refused, and is documented to give NaN (README). It stepped with the
    row's numbers instead: x0_pred = inf, clipped to 1 by the default clip_sample, so a
    finite, wrong sample came back that no NaN check after the loop could find. Such a
    timestep now gathers NaN, as one out of range does; the other samples are unchanged."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    plan = dc.make_plan(dc.DDIMConfig(rescale_betas_zero_snr=True), 10)  # epsilon, clipped
    x = jnp.ones((2, 3))
    step = jax.jit(lambda t: dc.step(plan, 0.5 * x, t, x))
    got = step(jnp.asarray([999, 901], dtype=dtype))
    for a, b in zip(got, dc.step(plan, 0.5 * x[1:], 901, x[1:]), strict=True):
        assert bool(jnp.isnan(a[0]).all()), a
        assert bool(jnp.array_equal(a[1:], b))
    assert bool(jnp.isnan(step(jnp.asarray(999, dtype=dtype)).prev_sample).all())


@pytest.mark.parametrize("dtype", ["int64", "uint8"])
def test_unread_timesteps_out_of_range_or_excluded_gather_nan_not_another_row(dtype: str) -> None:
    """Timestep arrays on a device with no check (array-api-strict's devices other than its
    CPU stand for accelerators, as CuPy's GPU does) are not read. There t = -1 took the
    table's last row (stepped from T - 1, add_noise noised at T - 1: silently), t = T raised
    NumPy's IndexError, and a timestep where no step can be taken stepped to a finite, wrong
    sample. Each gathers NaN now, as under jax.jit; the other samples are unchanged."""
    xs = pytest.importorskip("array_api_strict")
    np = pytest.importorskip("numpy")
    device, cpu = xs.Device("device1"), xs.Device("CPU_DEVICE")
    config = dc.DDIMConfig(num_train_timesteps=200)  # every timestep below fits in uint8
    plan = dc.make_plan(config, 10)
    zero_snr = dc.make_plan(config.replace(rescale_betas_zero_snr=True), 10)  # epsilon
    x, host = xs.asarray(np.ones((2, 3)), device=device), np.ones((1, 3))
    bad = [(plan, 200), (plan, 255), (zero_snr, 199)] + [(plan, -1)] * (dtype == "int64")
    for p, t in bad:
        t_arr = xs.asarray(np.array([t, 101], dtype=dtype), device=device)
        got = dc.step(p, 0.5 * x, t_arr, x)
        for a, b in zip(got, dc.step(p, 0.5 * host, 101, host), strict=True):
            a = np.from_dlpack(xs.asarray(a, device=cpu))
            assert np.isnan(a[0]).all(), (t, a)
            np.testing.assert_array_equal(a[1:], b)
    t_arr = xs.asarray(np.array([255 if dtype == "uint8" else -1, 5], dtype=dtype), device=device)
    noised = np.from_dlpack(xs.asarray(dc.add_noise(plan, x, x, t_arr), device=cpu))
    assert np.isnan(noised[0]).all() and not np.isnan(noised[1]).any()


def test_timesteps_read_on_the_host_gather_without_the_nan_guard(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Timestep arrays the host reads for free (array-api-strict's CPU, standing for
    MindSpore's CPU too) are checked there, but a per-sample step took take_rows' guard for
    unread ones (five more array operations: 96 us against take's 5 us for array-api-strict,
    a fifth of its step). They gather with take again, as before that guard."""
    xs = pytest.importorskip("array_api_strict")
    np = pytest.importorskip("numpy")

    def guarded(*args: object) -> None:
        raise AssertionError("_take_or_nan on timesteps the host has checked")

    monkeypatch.setattr(backends, "_take_or_nan", guarded)
    plan = dc.make_plan(dc.DDIMConfig(), 10)
    x, host = xs.asarray(np.ones((2, 3))), np.ones((2, 3))
    t = xs.asarray(np.array([901, 801]))
    want = dc.step(plan, 0.5 * host, np.array([901, 801]), host)
    for a, b in zip(dc.step(plan, 0.5 * x, t, x), want, strict=True):
        np.testing.assert_array_equal(np.from_dlpack(a), b)
    dc.add_noise(plan, x, x, t)


def test_jax_schedule_table_follows_x64_switched_on_later() -> None:
    """JAX without x64 makes float32 of a float64 request. `alphas_cumprod(xp=jnp)` cached that
    table under the float64 it was asked for, so after `jax_enable_x64` was switched on the
    same call returned the float32 table (float32 rounding of a float64 table, silently)."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    config = dc.DDIMConfig(beta_end=0.0191)  # a schedule no other test has cached
    with jax.enable_x64(False), pytest.warns(UserWarning, match="float64"):
        assert dc.alphas_cumprod(config, xp=jnp).dtype == jnp.float32
    with jax.enable_x64(True):
        table = dc.alphas_cumprod(config, xp=jnp)
        assert table.dtype == jnp.float64
        assert (table == jnp.asarray(dc.alphas_cumprod(config))).all()
        assert dc.betas(config, xp=jnp, dtype=jnp.float64).dtype == jnp.float64


def test_jax_sample_sharded_over_devices() -> None:
    """A sample split over three devices (its batch axis sharded): tables and constants were
    put on `device(sample)`, its sharding, which splits axis 0 of arrays of any shape, so a
    per-sample step, add_noise and GaussianMixture raised IndivisibleError from inside JAX
    (the (1000, 5) table over 3 devices) and functional.init a ValueError about
    with_sharding_constraint (its 0-d index). They now go where the sample's devices each
    hold a whole copy. Three CPU devices need a fresh process (XLA_FLAGS is read when jax
    starts)."""
    pytest.importorskip("jax")
    code = """
        import jax, jax.numpy as jnp, numpy as np
        import ddim_core as dc
        from ddim_core import functional as F
        from jax.sharding import Mesh, NamedSharding, PartitionSpec
        assert len(jax.devices()) == 3, jax.devices()
        split = NamedSharding(Mesh(np.array(jax.devices()), ("b",)), PartitionSpec("b"))
        config = dc.DDIMConfig(timestep_spacing="trailing", thresholding=True)
        plan = dc.make_plan(config, 4)
        x_host = np.linspace(-1.0, 1.0, 18, dtype=np.float32).reshape(6, 3)
        t_host = np.array([999, 749, 499, 249, 999, 749])
        x, t = jax.device_put(x_host, split), jax.device_put(t_host, split)

        def same(got, want):
            assert got.sharding == x.sharding, (got.sharding, x.sharding)
            np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-6)

        want = dc.step(plan, 0.5 * x_host, t_host, x_host).prev_sample
        same(dc.step(plan, 0.5 * x, t, x).prev_sample, want)
        same(dc.add_noise(config, x, x, t), dc.add_noise(config, x_host, x_host, t_host))
        scheduler = F.Scheduler(config, 4)
        state = F.init(scheduler, like=x)
        assert int(F.timestep(state)) == 999
        state, y = F.step(scheduler, state, 0.5 * x, x)
        same(y, dc.step(plan, 0.5 * x_host, 999, x_host).prev_sample)
        model = dc.GaussianMixture.create([[0.0, 0.0, 0.0]], [0.5], config)
        same(model(x, t), model(x_host, t_host))
        print("ok")
    """
    run_on_jax_cpu_devices(code, devices=3)


@pytest.mark.parametrize("dtype", ["int32", "uint8"])
def test_unread_timesteps_on_a_device_without_64_bit_integers(dtype: str) -> None:
    """array-api-strict's `no_x64` device has neither float64 nor int64 (as devices without
    64-bit types): a float32 sample there stepped from a Python int, but a timestep array
    (int32, or any other integer dtype) raised array-api-strict's 'Device ... does not support
    dtype=int64' from inside take_rows' NaN guard (and the check for excluded timesteps), which
    cast the indices to int64. A signed 32-bit dtype holds -1 and every row: the steps gather
    as on `device1`, NaN where no step can be taken."""
    xs = pytest.importorskip("array_api_strict")
    np = pytest.importorskip("numpy")
    device, cpu = xs.Device("no_x64"), xs.Device("CPU_DEVICE")
    config = dc.DDIMConfig(num_train_timesteps=200)  # every timestep below fits in uint8
    plan = dc.make_plan(config, 10)
    zero_snr = dc.make_plan(config.replace(rescale_betas_zero_snr=True), 10)  # epsilon
    x = xs.asarray(np.ones((2, 3), dtype=np.float32), device=device)
    host = np.ones((1, 3), dtype=np.float32)
    bad = [(dc.step, plan, 200), (dc.step, plan, 255), (dc.step, zero_snr, 199)]
    bad += [(dc.inverse_step, plan, 200), (dc.inverse_step, plan, 255)]  # (199: a step)
    for step, p, t in bad:
        t_arr = xs.asarray(np.array([t, 101], dtype=dtype), device=device)
        got, want = step(p, 0.5 * x, t_arr, x), step(p, 0.5 * host, 101, host)
        for a, b in zip(got, want, strict=True):
            assert a.dtype == xs.float32 and a.device == device
            a = np.from_dlpack(xs.asarray(a, device=cpu))
            assert np.isnan(a[0]).all(), (t, a)
            np.testing.assert_array_equal(a[1:], b)
    t_arr = xs.asarray(np.array([255, 5], dtype=dtype), device=device)
    for got, want in [
        (dc.add_noise(plan, x, x, t_arr), dc.add_noise(plan, host, host, 5)),
        (dc.get_velocity(plan, x, x, t_arr), dc.get_velocity(plan, host, host, 5)),
    ]:
        got = np.from_dlpack(xs.asarray(got, device=cpu))
        assert np.isnan(got[0]).all()
        np.testing.assert_array_equal(got[1:], want)


def test_jax_uncommitted_arrays_beside_a_sample_on_another_device() -> None:
    """A sample committed to a second device (jax.device_put(x, devices[1])) beside arrays made
    without device= (jnp.asarray timesteps, jnp.ones model outputs or noise, alpha), which JAX
    computes on the committed array's device: each was refused with 'timestep is on device
    CpuDevice(id=0) but sample is on CpuDevice(id=1); move them to one device' (in sample and
    invert, every model whose output is made fresh). An uncommitted array is placed nowhere
    (device() None, as a traced one); the results are on the sample's device and equal the
    one-device results, and two committed devices are still refused. Two CPU devices need a
    fresh process (XLA_FLAGS is read when jax starts)."""
    pytest.importorskip("jax")
    code = """
        import jax, jax.numpy as jnp, numpy as np
        import ddim_core as dc
        d0, d1 = jax.devices()
        config = dc.DDIMConfig(clip_sample=False)
        plan = dc.make_plan(config, 10)
        x_host = np.linspace(-1.0, 1.0, 6, dtype=np.float32).reshape(2, 3)
        x, t_host = jax.device_put(x_host, d1), np.array([901, 801])
        loose, t = jnp.asarray(0.5 * x_host), jnp.asarray(t_host)  # uncommitted

        def same(got, want):
            assert got.devices() == {d1}, got.devices()
            np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-6)

        want = dc.step(plan, 0.5 * x_host, t_host, x_host, eta=1.0, noise=0.5 * x_host)
        got = dc.step(plan, loose, t, x, eta=1.0, noise=loose)
        same(got.prev_sample, want.prev_sample)
        want = dc.inverse_step(plan, 0.5 * x_host, t_host, x_host).prev_sample
        same(dc.inverse_step(plan, loose, t, x).prev_sample, want)
        same(dc.add_noise(config, x, loose, t), dc.add_noise(config, x_host, 0.5 * x_host, t_host))
        want = dc.get_velocity(config, x_host, 0.5 * x_host, t_host)
        same(dc.get_velocity(config, x, loose, t), want)
        want = dc.slerp(x_host, 0.5 * x_host + 1.0, np.array([0.25, 0.5], np.float32))
        got = dc.slerp(x, loose + 1.0, jnp.asarray([0.25, 0.5], dtype=jnp.float32))
        same(got, want)
        same(dc.rescale_noise_cfg(x, loose, 0.7), dc.rescale_noise_cfg(x_host, 0.5 * x_host, 0.7))
        model = lambda x, t: jnp.full((2, 3), 0.1, dtype=jnp.float32)  # made fresh: uncommitted
        one = jnp.asarray(x_host)  # the same on one device
        same(dc.sample(model, x, config, 5), np.asarray(dc.sample(model, one, config, 5)))
        same(dc.invert(model, x, config, 5), np.asarray(dc.invert(model, one, config, 5)))
        try:
            dc.step(plan, jax.device_put(0.5 * x_host, d0), 901, x)
        except ValueError as e:
            assert "move them to one device" in str(e), e
        else:
            raise AssertionError("two committed devices were taken")
        print("ok")
    """
    run_on_jax_cpu_devices(code, 2)
