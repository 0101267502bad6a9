"""step / inverse_step / add_noise / get_velocity on every backend against the NumPy reference."""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import pytest
from helpers import Backend, assert_close, make_rng, to_numpy

import ddim_core as dc
from ddim_core.testing import reference as ref

SHAPE = (3, 2, 4, 4)
CONFIGS = {
    "eps": dc.DDIMConfig(clip_sample=False),
    "eps-clip": dc.DDIMConfig(clip_sample=True, clip_sample_range=1.5),
    "v-threshold": dc.DDIMConfig(
        prediction_type="v_prediction", thresholding=True, sample_max_value=2.0
    ),
    "sample-trailing": dc.DDIMConfig(
        prediction_type="sample", timestep_spacing="trailing", clip_sample=False
    ),
    "zero-snr-v": dc.DDIMConfig(
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        timestep_spacing="trailing",
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
    ),
}


def inputs(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = make_rng(seed)
    return tuple(rng.standard_normal(SHAPE) for _ in range(3))  # type: ignore[return-value]


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_step_matches_reference(backend: Backend, name: str, dtype: str) -> None:
    plan = dc.make_plan(CONFIGS[name], 10)
    x, out, noise = inputs()
    eta = 0.7
    for t in (plan.timesteps[0], plan.timesteps[4], plan.timesteps[-1]):
        got = dc.step(
            plan,
            backend.array(out, dtype),
            t,
            backend.array(x, dtype),
            eta=eta,
            noise=backend.array(noise, dtype),
        )
        expected = _rounded_reference(plan, t, x, out, noise, eta, dtype)
        for g, e in zip(got, expected, strict=True):
            assert g.dtype == backend.array(x, dtype).dtype
            assert_close(backend, g, e, dtype, scale=_scale(plan, t))


def _rounded_reference(plan, t, x, out, noise, eta, dtype):
    """The reference on inputs rounded to `dtype`, so input rounding is not counted as error."""
    if dtype in ("float64", "float32"):
        cast = np.dtype(dtype)
        x, out, noise = (a.astype(cast).astype(np.float64) for a in (x, out, noise))
    elif dtype == "float16":
        x, out, noise = (a.astype(np.float16).astype(np.float64) for a in (x, out, noise))
    else:
        import ml_dtypes

        x, out, noise = (a.astype(ml_dtypes.bfloat16).astype(np.float64) for a in (x, out, noise))
    return ref.step(plan, out, t, x, eta=eta, noise=noise)


def _scale(plan: dc.Plan, t: int) -> float:
    """x0 = (x - sqrt(1-ab) eps) / sqrt(ab) amplifies rounding by 1/sqrt(ab) near pure noise."""
    ab = plan.schedule.alpha_bar(t)
    return 1.0 if ab == 0.0 else max(1.0, 1.0 / np.sqrt(ab))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_inverse_step_matches_reference(backend: Backend, name: str) -> None:
    plan = dc.make_plan(CONFIGS[name], 10)
    x, out, _ = inputs(1)
    timesteps = plan.inverse_timesteps
    if plan.config.prediction_type == "sample" and plan.config.set_alpha_to_one:
        with pytest.raises(ValueError, match="prediction_type='sample' cannot recover the noise"):
            dc.inverse_step(plan, backend.array(out), timesteps[0], backend.array(x))
        timesteps = timesteps[1:]
    for t in timesteps:
        expected = ref.inverse_step(plan, out, t, x)
        got = dc.inverse_step(plan, backend.array(out), t, backend.array(x))
        for g, e in zip(got, expected, strict=True):
            assert_close(backend, g, e, "float64")


@pytest.mark.parametrize("inverse", [False, True])
def test_per_sample_timesteps_gather_rows(backend: Backend, inverse: bool) -> None:
    plan = dc.make_plan(CONFIGS["eps-clip"], 20)
    x, out, noise = inputs(2)
    ts = [plan.timesteps[0], plan.timesteps[7], plan.timesteps[-1]]
    t_arr = backend.int_array(ts)
    if inverse:
        got = dc.inverse_step(plan, backend.array(out), t_arr, backend.array(x))
        expected = ref.per_sample(plan, out, ts, x, inverse=True)
    else:
        got = dc.step(
            plan, backend.array(out), t_arr, backend.array(x), eta=1.0, noise=backend.array(noise)
        )
        expected = ref.per_sample(plan, out, ts, x, eta=1.0, noise=noise)
    for g, e in zip(got, expected, strict=True):
        assert_close(backend, g, e, "float64")


def test_zero_d_timestep_array_equals_int(backend: Backend) -> None:
    plan = dc.make_plan(CONFIGS["v-threshold"], 10)
    x, out, _ = inputs(3)
    t = plan.timesteps[3]
    expected = ref.step(plan, out, t, x)
    got = dc.step(plan, backend.array(out), backend.int_array(t), backend.array(x))
    for g, e in zip(got, expected, strict=True):
        assert_close(backend, g, e, "float64")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_add_noise_and_velocity(backend: Backend, dtype: str) -> None:
    cfg = CONFIGS["zero-snr-v"]
    ab = dc.schedule(cfg).alphas_cumprod
    x0, eps, _ = inputs(4)
    ts = np.array([0, 500, 999])
    a = ab[ts].reshape(-1, 1, 1, 1)
    x0r, epsr = (v.astype(dtype).astype(np.float64) for v in (x0, eps))
    noisy = dc.add_noise(
        cfg, backend.array(x0, dtype), backend.array(eps, dtype), backend.int_array(ts)
    )
    assert_close(backend, noisy, np.sqrt(a) * x0r + np.sqrt(1 - a) * epsr, dtype)
    v = dc.get_velocity(cfg, backend.array(x0, dtype), backend.array(eps, dtype), 999)
    a999 = ab[999]
    assert_close(backend, v, np.sqrt(a999) * epsr - np.sqrt(1 - a999) * x0r, dtype)


def test_outputs_keep_device(backend: Backend) -> None:
    """Per-sample timesteps off the plan too (980 steps to the plan's 800)."""
    plan = dc.make_plan(CONFIGS["eps"], 5)
    x, out, _ = inputs()
    xb = backend.array(x, "float32")
    ts = [980, 600, 0]
    got = dc.step(plan, backend.array(out, "float32"), backend.int_array(ts), xb)
    for g in got:
        assert backend.device_of(g) == backend.device_of(xb)
        assert g.dtype == xb.dtype
    x32, out32 = (a.astype(np.float32).astype(np.float64) for a in (x, out))
    expected = ref.per_sample(plan, out32, ts, x32)
    for g, e in zip(got, expected, strict=True):
        assert_close(backend, g, e, "float32", scale=max(_scale(plan, t) for t in ts))


def test_schedule_tables_in_any_namespace(backend: Backend) -> None:
    import array_api_compat

    cfg = CONFIGS["eps"]
    xb = backend.array(np.zeros(2), "float32")
    xp = array_api_compat.array_namespace(xb)
    device = backend.device_of(xb)
    ab = dc.alphas_cumprod(cfg, xp=xp, device=device, dtype=xb.dtype)
    assert ab.dtype == xb.dtype and backend.device_of(ab) == device
    assert_close(backend, ab, dc.schedule(cfg).alphas_cumprod, "float32")
    assert_close(
        backend, dc.alphas_cumprod(cfg, xp=xp, device=device, dtype=xb.dtype), ab, "float32"
    )


def test_schedule_tables_handed_out_cannot_be_corrupted(backend: Backend) -> None:
    """The tables are cached per namespace, device and dtype; torch's was handed out as the
    cached tensor itself, so a user's in-place write changed every later call's table. Now a
    table is read-only (NumPy; JAX arrays are immutable) or a copy."""
    import array_api_compat

    cfg = CONFIGS["eps"]
    xb = backend.array(np.zeros(2), "float32")
    xp = array_api_compat.array_namespace(xb)
    device = backend.device_of(xb)
    for table in (dc.alphas_cumprod, dc.betas):
        got = table(cfg, xp=xp, device=device, dtype=xb.dtype)
        with contextlib.suppress(ValueError, TypeError):  # read-only (NumPy), immutable (JAX)
            got[0] = 5.0
        again = table(cfg, xp=xp, device=device, dtype=xb.dtype)
        want = getattr(dc.schedule(cfg), table.__name__)
        assert_close(backend, again, want, "float32")


def test_schedule_tables_without_device_follow_the_default_device() -> None:
    """device=None is the library's default device, which a context can change (torch's
    `with torch.device("meta")`): the table cached under None was handed out on whichever
    device the first call found, a meta tensor to later CPU calls and the reverse."""
    torch = pytest.importorskip("torch")
    cfg = dc.DDIMConfig(beta_end=0.0125)  # a schedule of its own: nothing cached yet
    with torch.device("meta"):
        assert dc.betas(cfg, xp=torch).device.type == "meta"
    assert dc.betas(cfg, xp=torch).device.type == "cpu"
    assert dc.alphas_cumprod(cfg, xp=torch).device.type == "cpu"
    with torch.device("meta"):
        assert dc.alphas_cumprod(cfg, xp=torch).device.type == "meta"


def test_device_tables_are_cached_for_unhashable_devices() -> None:
    """CuPy's Device defines == without a hash: tables on it are still built once (keyed by
    the device's type and id), not rebuilt and uploaded at every step."""
    from ddim_core import backends

    class Device:  # like cupy.cuda.Device
        __hash__ = None  # type: ignore[assignment]

        def __init__(self, index: int) -> None:
            self.id = index

        def __eq__(self, other: object) -> bool:
            return isinstance(other, Device) and other.id == self.id

    calls: list[int] = []

    @backends.device_cache
    def table(device: Device, sizes: tuple[int, ...] | list[int]) -> list[int]:
        calls.append(device.id)
        return [device.id] * len(sizes)

    assert table(Device(0), (1, 1)) is table(Device(0), (1, 1))
    assert table(Device(1), (1, 1)) == [1, 1] and calls == [0, 1]
    assert table(Device(0), [1, 1]) == [0, 0] and calls == [0, 1, 0]  # a list: uncached


def test_thresholding_of_a_1d_batch_is_per_element() -> None:
    """A 1-D sample is a batch of scalars (a timestep array of shape (n,) gives each its own
    step), but dynamic thresholding took the whole vector as one sample: one element's x0_pred
    depended on the others' (x0 [0.5, 4, -2, 1.5] became [0.17, 1, -0.67, 0.5], not the
    reference's [0.5, 1, -1, 1]). Each element is now thresholded on its own."""
    cfg = dc.DDIMConfig(
        prediction_type="sample", thresholding=True, sample_max_value=3.0, clip_sample=False
    )
    plan, rplan = dc.make_plan(cfg, 10), ref.make_plan(cfg, 10)
    x, m = np.array([0.5, 4.0, -2.0, 1.0]), np.array([0.5, 4.0, -2.0, 1.5])
    for t in (901, np.array([901, 801, 901, 901])):
        got = dc.step(plan, m, t, x)
        want = ref.per_sample(rplan, m, [901, 801, 901, 901] if np.ndim(t) else [t] * 4, x)
        np.testing.assert_allclose(got.pred_original_sample, want[1], rtol=1e-14)
        np.testing.assert_allclose(got.prev_sample, want[0], rtol=1e-14)


def test_zero_d_sample_with_a_device_timestep_stays_0d() -> None:
    """A 0-d sample with a timestep the host does not read (Dask, JAX under jit, a GPU
    tensor) took rows gathered as shape (1,): step, inverse_step, add_noise and get_velocity
    returned shape (1,) instead of (). The rows are now 0-d for a 0-d sample."""
    da = pytest.importorskip("dask.array")
    plan = dc.make_plan(CONFIGS["v-threshold"], 10)
    t = plan.timesteps[1]
    x, m = np.array(1.5), np.array(0.3)
    want = ref.step(plan, m.reshape(1), t, x.reshape(1))
    got = dc.step(plan, da.from_array(m), da.from_array(np.array(t)), da.from_array(x))
    assert [g.shape for g in got] == [(), ()]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g.compute(), w[0], rtol=1e-14)
    inv = dc.inverse_step(plan, da.from_array(m), da.from_array(np.array(t)), da.from_array(x))
    assert [g.shape for g in inv] == [(), ()]
    for f in (dc.add_noise, dc.get_velocity):
        assert f(plan, da.from_array(x), da.from_array(m), da.from_array(np.array(t))).shape == ()


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_thresholding_max_value_past_the_dtype_range(backend: Backend, dtype: str) -> None:
    """sample_max_value=1e300 (no cap) with a float32 or float16 sample: clamping s to it
    raised torch's 'value cannot be converted to type float without overflow' (NumPy: an
    overflow RuntimeWarning). It is now taken within the dtype's range, as clip_sample_range
    is: the cap is a no-op there."""
    cfg = dc.DDIMConfig(
        prediction_type="sample", thresholding=True, sample_max_value=1e300, clip_sample=False
    )
    plan = dc.make_plan(cfg, 10)
    x, out, _ = inputs(5)
    x, out = 4 * x, 4 * out
    t = plan.timesteps[3]
    x_r, out_r = (a.astype(dtype).astype(np.float64) for a in (x, out))
    expected = ref.step(plan, out_r, t, x_r)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = dc.step(plan, backend.array(out, dtype), t, backend.array(x, dtype))
    for g, e in zip(got, expected, strict=True):
        assert_close(backend, g, e, dtype)


def test_thresholding_max_value_below_one(backend: Backend) -> None:
    """sample_max_value < 1 (the config takes any value > 0): s is clamped to [1, max] in
    torch.clamp's order, so s = max_value (diffusers, the reference). array-api-strict's clip
    raised 'min must be less than or equal to max' (the array API leaves min > max
    unspecified); the bounds given to clip are now ordered."""
    cfg = dc.DDIMConfig(
        prediction_type="sample",
        thresholding=True,
        sample_max_value=0.5,
        dynamic_thresholding_ratio=0.5,
        clip_sample=False,
    )
    plan = dc.make_plan(cfg, 10)
    x, out, _ = inputs(6)
    t = plan.timesteps[3]
    expected = ref.step(plan, out, t, x)
    got = dc.step(plan, backend.array(out), t, backend.array(x))
    for g, e in zip(got, expected, strict=True):
        assert_close(backend, g, e, "float64")


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_thresholding_max_value_below_the_work_dtypes_normals_is_refused(
    backend: Backend, dtype: str
) -> None:
    """sample_max_value so small that it rounds to 0 in the dtype thresholding runs in
    (float32 for half precision) made s = 0 and x0_pred 0 / 0 = NaN, silently (as diffusers);
    a subnormal one did too where subnormals are flushed to zero (XLA on CPU: NaN from 1e-38
    down in float32). Now a ValueError naming the option, its value and the dtype's smallest
    normal, before any array work; the smallest normal itself thresholds to finite values."""
    from ddim_core import backends

    x, out, _ = inputs(7)
    x_b, out_b = backend.array(x, dtype), backend.array(out, dtype)
    xp = backends.namespace(x=x_b)
    work = backends.work_dtype(xp, x_b.dtype)
    tiny = float(xp.finfo(work).smallest_normal)
    cfg = dc.DDIMConfig(prediction_type="sample", thresholding=True, clip_sample=False)
    t = dc.make_plan(cfg, 10).timesteps[3]
    for value in (tiny / 4, 5e-324, tiny * (1 - 2**-20)):
        plan = dc.make_plan(cfg.replace(sample_max_value=value), 10)
        with pytest.raises(ValueError, match=rf"sample_max_value={value!r} .*{tiny!r}") as e:
            dc.step(plan, out_b, t, x_b)
        work_name = "float64" if dtype == "float64" else "float32"
        assert f"smallest normal number of {work_name}" in str(e.value)
    got = dc.step(dc.make_plan(cfg.replace(sample_max_value=tiny), 10), out_b, t, x_b)
    for a in got:
        assert not backend.has_values or np.isfinite(to_numpy(a)).all()


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("ratio", [0.0, 0.5, 0.995, 1.0])
def test_thresholding_of_an_infinite_x0_pred(backend: Backend, dtype: str, ratio: float) -> None:
    """x0_pred holding inf (a float16 model output that overflowed): the quantile took
    low + frac * (high - low) with both neighbours inf, inf - inf = NaN, and the whole sample
    became NaN (as diffusers', whose torch.quantile gives NaN whenever a neighbour is inf).
    An infinite quantile is now inf, so s = sample_max_value: infinities clip to +-1 and the
    rest is finite, the reference's values with inf taken as 1e30; where the quantile's
    neighbours are finite, the values are the reference's (and diffusers') as before."""
    cfg = dc.DDIMConfig(
        prediction_type="sample",
        thresholding=True,
        sample_max_value=3.0,
        dynamic_thresholding_ratio=ratio,
        clip_sample=False,
    )
    plan = dc.make_plan(cfg, 10)
    inf = np.inf
    out = np.array(
        [
            [[inf, inf], [inf, inf]],
            [[-inf, -inf], [-inf, -inf]],
            [[inf, -inf], [1.0, 2.0]],
            [[inf, 0.5], [1.0, 2.0]],
            [[inf, inf], [1.0, 2.0]],
            [[-inf, 0.5], [1.0, 2.0]],
        ]
    )
    x = np.ones_like(out)
    t = plan.timesteps[3]
    want = ref.threshold(np.where(np.isinf(out), np.sign(out) * 1e30, out), ratio, 3.0)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pred_epsilon is inf - inf: not what is checked
        got = dc.step(plan, backend.array(out, dtype), t, backend.array(x, dtype))
        assert_close(backend, got.pred_original_sample, want, dtype)  # lazy (Dask): read here


def test_quantile_with_infinite_order_statistics() -> None:
    """kernels.quantile on the extended reals (NaN from inf - inf before): equal infinite
    neighbours their value, a finite one below inf inf, -inf below a finite one -inf, a
    position on an order statistic below inf that statistic (0 * inf); -inf below inf, with
    nothing between them to choose, NaN, as torch.quantile and np.quantile."""
    import array_api_compat.numpy as xp

    from ddim_core import kernels

    inf = np.inf
    rows = np.array(
        [
            [1.0, 2.0, inf, inf],
            [-inf, -inf, 1.0, 2.0],
            [-inf, 1.0, 2.0, 3.0],
            [0.5, 1.0, 2.0, inf],
            [-inf, -inf, inf, inf],
            [1.0, 2.0, 3.0, 4.0],
        ]
    )
    with np.errstate(invalid="ignore"):
        got = {q: kernels.quantile(rows, q, xp=xp) for q in (0.0, 0.5, 2 / 3, 0.9, 1.0)}
    want = {
        0.0: [1.0, -inf, -inf, 0.5, -inf, 1.0],
        0.5: [inf, -inf, 1.5, 1.5, np.nan, 2.5],
        2 / 3: [inf, 1.0, 2.0, 2.0, inf, 3.0],
        0.9: [inf, 1.7, 2.7, inf, inf, 3.7],
        1.0: [inf, 2.0, 3.0, inf, inf, 4.0],
    }
    for q, w in want.items():
        np.testing.assert_allclose(got[q], w, rtol=1e-15, err_msg=str(q))  # inf, NaN: equal
    finite = rows[-1:]
    for q in (0.0, 0.3, 0.5, 0.995, 1.0):  # finite rows: np.quantile's values, as before
        np.testing.assert_allclose(
            kernels.quantile(finite, q, xp=xp), np.quantile(finite, q, axis=1), rtol=1e-15
        )
