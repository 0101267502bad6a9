"""Bad input gets a ValueError/TypeError naming the argument, the value and what is allowed."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
from helpers import TOLERANCE, rel

import ddim_core as dc
from ddim_core.testing import reference

PLAN = dc.make_plan(dc.DDIMConfig(), 10)
X = np.zeros((2, 3, 4, 4))


def test_integer_sample() -> None:
    with pytest.raises(
        TypeError, match="sample must be a real floating-point array, got dtype int64"
    ):
        dc.step(PLAN, X, 901 - 1, X.astype(np.int64))


def test_shape_mismatch() -> None:
    with pytest.raises(ValueError, match=r"sample has shape \(2, 3, 4, 4\) but model_output has"):
        dc.step(PLAN, X[:1], 900, X)


def test_noise_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="noise has shape"):
        dc.step(PLAN, X, 900, X, eta=1.0, noise=X[0])


def test_two_libraries() -> None:
    torch = pytest.importorskip("torch")
    with pytest.raises(
        TypeError, match="sample is a torch array but model_output is a numpy array"
    ):
        dc.step(PLAN, X, 900, torch.zeros(X.shape, dtype=torch.float64))


def test_two_devices() -> None:
    xs = pytest.importorskip("array_api_strict")
    a = xs.asarray(X.tolist(), device=xs.Device("device1"))
    b = xs.asarray(X.tolist(), device=xs.Device("device2"))
    with pytest.raises(ValueError, match=r"sample is on device .*device2.* but model_output is on"):
        dc.step(PLAN, a, 900, b)


def test_not_an_array() -> None:
    with pytest.raises(TypeError, match=r"model_output must be an array .* got list"):
        dc.step(PLAN, [0.0], 900, X)


@pytest.mark.parametrize(
    ("eta", "error"), [(-0.1, ValueError), (float("nan"), ValueError), ("1", TypeError)]
)
def test_bad_eta(eta, error) -> None:
    with pytest.raises(error, match="eta"):
        dc.step(PLAN, X, 900, X, eta=eta, noise=X)


def test_an_integer_too_large_for_a_float_is_a_value_error() -> None:
    """eta=10**400 (and invert's tol=10**400) was OverflowError: int too large to convert to
    float, from inside the check; it is the ValueError for a number that is not finite."""
    with pytest.raises(ValueError, match=r"eta=1000.* must be a finite number"):
        dc.step(PLAN, X, 900, X, eta=10**400, noise=X)
    with pytest.raises(ValueError, match=r"tol=1000.* must be a finite number"):
        dc.invert(lambda x, t: x, X, dc.DDIMConfig(), 10, fixed_point_iters=1, tol=10**400)


def test_eta_without_noise() -> None:
    with pytest.raises(ValueError, match=r"eta=0\.5 > 0 needs a `noise` array"):
        dc.step(PLAN, X, 900, X, eta=0.5)


def test_eta_too_large_is_not_a_silent_nan() -> None:
    with pytest.raises(ValueError, match=r"eta=3\.0 makes 1 - alpha_bar_prev - sigma_t"):
        dc.step(PLAN, X, 900, X, eta=3.0, noise=X)


def test_eta_past_float_range_squared_is_the_value_error_without_a_warning() -> None:
    """eta=1e200 squares past float64's range: RuntimeWarning: overflow encountered in square
    (an exception where warnings are errors) came before the ValueError saying eta is too
    large; now only the ValueError."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"eta=1e\+200 makes 1 - alpha_bar_prev - sigma_t"):
            dc.step(PLAN, X, 900, X, eta=1e200, noise=X)


@pytest.mark.parametrize("t", [-1, 1000])
def test_timestep_out_of_range(t) -> None:
    with pytest.raises(
        ValueError, match=rf"timestep={t} is outside \[0, num_train_timesteps=1000\)"
    ):
        dc.step(PLAN, X, t, X)


def test_timestep_array_out_of_range_on_host() -> None:
    with pytest.raises(ValueError, match="timestep=1000 is outside"):
        dc.step(PLAN, X, np.array([900, 1000]), X)


def test_array_api_strict_timestep_array_is_checked() -> None:
    """array-api-strict timestep arrays (NumPy underneath, on its CPU device: free to read)
    were not checked: [1000, 5] was IndexError: index 1000 is out of bounds from its take, and
    an inverse step with sample prediction from the clean level gave inf without a word, where
    a NumPy array gets the ValueError. They are now read and checked as NumPy's are."""
    strict = pytest.importorskip("array_api_strict")
    x = strict.ones((2, 3))
    with pytest.raises(ValueError, match=r"timestep=1000 is outside \[0, num_train_timesteps"):
        dc.step(PLAN, x, strict.asarray([1000, 5]), x)
    with pytest.raises(ValueError, match=r"timesteps=1000 is outside \[0, num_train_timesteps"):
        dc.add_noise(PLAN, x, x, strict.asarray([1000, 5]))
    plan = dc.make_plan(dc.DDIMConfig(prediction_type="sample"), 10)
    first = plan.inverse_timesteps[0]
    with pytest.raises(ValueError, match="cannot recover the noise"):
        dc.inverse_step(plan, x, strict.asarray([first, first + 1]), x)


def test_timestep_array_dtype_and_shape() -> None:
    with pytest.raises(TypeError, match="timestep array must have an integer dtype"):
        dc.step(PLAN, X, np.array([900.0, 800.0]), X)
    with pytest.raises(ValueError, match=r"expected \(\) or \(2,\)"):
        dc.step(PLAN, X, np.array([900, 800, 700]), X)
    with pytest.raises(TypeError, match="timestep must be a Python int or an integer array"):
        dc.step(PLAN, X, "900", X)


def test_an_empty_timestep_array_says_what_empties_it() -> None:
    """Stable Diffusion's img2img pipeline at a strength too low for its steps (0.1 of 4)
    cuts its plan to nothing and hands add_noise an empty timesteps array (diffusers' own
    scheduler returns an empty batch): the error said only 'has shape (0,); expected () or
    (1,)', not what leaves a pipeline no timestep."""
    x = np.zeros((1, 4))
    with pytest.raises(ValueError, match=r"shape \(0,\); .*strength too low for its steps"):
        dc.add_noise(dc.DDIMConfig(), x, x, np.zeros(0, dtype=np.int64))
    with pytest.raises(ValueError, match=r"shape \(0, 1\); expected \(\) or \(2,\), one ti"):
        dc.step(PLAN, X, np.zeros((0, 1), dtype=np.int64), X)  # no strength there


@pytest.mark.parametrize("adapter", [False, True])
@pytest.mark.parametrize(
    ("fn", "x0"), [("add_noise", "original_samples"), ("get_velocity", "sample")]
)
def test_add_noise_and_get_velocity_name_timesteps_and_their_x0(
    fn: str, x0: str, adapter: bool
) -> None:
    """add_noise(config, original_samples, noise, timesteps) and get_velocity(config, sample,
    noise, timesteps), and the diffusers scheduler's methods of those arguments, said
    'timestep must be ...', 'timestep=1000 is outside ...' and, for timesteps on another
    device than original_samples, 'timestep is on device meta but sample is on ...': names
    of step's arguments, not theirs."""
    torch = pytest.importorskip("torch")
    da = pytest.importorskip("dask.array")
    if adapter:
        from ddim_diffusers import DDIMScheduler

        call = getattr(DDIMScheduler(), fn)
    else:
        call = functools.partial(getattr(dc, fn), dc.DDIMConfig())
    x = torch.zeros((2, 3))
    cases = [
        (None, TypeError, r"^timesteps must be "),
        (1.5, TypeError, r"^timesteps must be "),
        (torch.tensor([9.0, 8.0]), TypeError, r"^timesteps (array )?must have an integer dtype"),
        (torch.tensor([9, 8, 7]), ValueError, r"^timesteps array has shape \(3,\)"),
        (1000, ValueError, r"^timesteps=1000 is outside \[0, num_train_timesteps=1000\)"),
        (torch.tensor([5, -1]), ValueError, r"^timesteps=-1 is outside \[0, num_train_"),
        (
            torch.tensor([9, 8], device="meta"),
            ValueError,
            rf"^timesteps is on .*meta.* {x0} (is )?on",
        ),
    ]
    for timesteps, error, match in cases:
        with pytest.raises(error, match=match):
            call(x, x, timesteps)
    if not adapter:  # another library than x_0's (the adapter brings it over)
        with pytest.raises(TypeError, match=rf"^timesteps must be .* of {x0}'s array library"):
            call(x, x, np.array([9, 8]))
    lazy = da.from_array(np.zeros((2, 3)), chunks=1)  # checked where Dask computes
    with pytest.raises(ValueError, match=r"^timesteps has a value outside \[0, num_train_"):
        call(lazy, lazy, da.from_array(np.array([9, 1000]), chunks=1)).compute()


def test_plan_type() -> None:
    with pytest.raises(TypeError, match="plan must be a Plan"):
        dc.step(dc.DDIMConfig(), X, 900, X)  # type: ignore[arg-type]


def test_zero_snr_terminal_step_with_epsilon() -> None:
    config = dc.DDIMConfig(rescale_betas_zero_snr=True)  # leading: first step is 900, allowed
    plan = dc.make_plan(config, 10)
    with pytest.raises(ValueError, match="cannot step at timestep 999: alpha_bar = 0"):
        dc.step(plan, X, 999, X)
    with pytest.raises(ValueError, match="cannot step at timestep 999"):
        dc.step(plan, X, np.array([900, 999]), X)


def test_no_nan_from_finite_input_at_eta_one() -> None:
    """diffusers' float32 step gives NaN here (zero SNR, first step, eta = 1); ours does not."""
    config = dc.DDIMConfig(
        rescale_betas_zero_snr=True,
        timestep_spacing="trailing",
        prediction_type="sample",
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
    )
    plan = dc.make_plan(config, 10)
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    out = dc.step(plan, x, 999, x, eta=1.0, noise=x)
    assert np.isfinite(out.prev_sample).all()
    x64 = x.astype(np.float64)
    expected = reference.step(plan, x64, 999, x64, eta=1.0, noise=x64)
    assert rel(out.prev_sample, expected[0]) <= TOLERANCE["float32"]


def test_schedule_argument_type() -> None:
    with pytest.raises(TypeError, match="expected a DDIMConfig, Schedule or Plan"):
        dc.add_noise("linear", X, X, 5)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [3, "linear", None, PLAN])
def test_schedule_of_a_non_config(value) -> None:
    # dc.schedule(3) raised AttributeError: 'int' object has no attribute 'num_train_timesteps'
    with pytest.raises(TypeError, match=r"config must be a DDIMConfig, got "):
        dc.schedule(value)


def test_sample_progress_must_be_a_bool() -> None:
    model = lambda x, t: x  # noqa: E731
    for loop in (dc.sample, dc.invert):
        with pytest.raises(TypeError, match=r"progress must be True or False, got .yes."):
            loop(model, X, dc.DDIMConfig(), 3, progress="yes")


def test_check_finite_must_be_a_bool_or_none() -> None:
    # check_finite="no" was truthy: it turned the check on
    with pytest.raises(TypeError, match="check_finite must be True, False or None, got 'no'"):
        dc.sample(lambda x, t: x, X, dc.DDIMConfig(), 3, check_finite="no")


def test_table_dtype_a_device_lacks_names_the_dtype() -> None:
    """alphas_cumprod on array-api-strict's no_float64 device with the default float64 said
    "device=... is not a device of array_api_strict": the device is one; the dtype is not one
    it has. The message now names both, and the library's reason."""
    xs = pytest.importorskip("array_api_strict")
    device = xs.Device("no_float64")
    with pytest.raises(ValueError, match=r"dtype=array_api_strict\.float64") as info:
        dc.alphas_cumprod(dc.DDIMConfig(), xp=xs, device=device)
    assert "is not a device of" not in str(info.value)
    assert "does not support" in str(info.value)  # array-api-strict's own reason
    with pytest.raises(ValueError, match="device='nope'"):
        dc.betas(dc.DDIMConfig(), device="nope")


def test_a_dask_array_of_unknown_shape_is_named() -> None:
    """Dask arrays whose chunk sizes are unknown (after boolean indexing) have NaN in their
    shape: step said 'model_output has shape (nan, 3) but sample has shape (nan, 3); they must be
    equal', the same array twice (and dc.add_noise, dc.sample) went on to array-api-compat's
    clip and its TypeError "'float' object cannot be interpreted as an integer". Now a
    ValueError names the argument and the way out (compute_chunk_sizes)."""
    da = pytest.importorskip("dask.array")
    plan = dc.make_plan(dc.DDIMConfig(), 10)
    base = da.from_array(np.full((4, 3), 0.5), chunks=2)
    x = base[base[:, 0] > 0]
    match = r"(sample|model_output) has shape \(nan, 3\) with unknown sizes.*compute_chunk_sizes"
    with pytest.raises(ValueError, match=match):
        dc.step(plan, x * 0.5, 500, x)
    with pytest.raises(ValueError, match=match):
        dc.inverse_step(plan, x, 500, x)
    with pytest.raises(ValueError, match=r"original_samples has shape \(nan, 3\) with unknown"):
        dc.add_noise(plan, x, x, 500)
    with pytest.raises(ValueError, match=r"x has shape \(nan, 3\) with unknown sizes"):
        dc.sample(lambda x, t: 0.1 * x, x, plan.config, 3)
    known = x.compute_chunk_sizes()
    assert dc.step(plan, known * 0.5, 500, known).prev_sample.compute().shape == (4, 3)


def test_a_dask_timestep_array_of_unknown_size_is_named() -> None:
    """Per-sample Dask timesteps of unknown size (after boolean indexing) said 'timestep array
    has shape (nan,); expected () or (4,)', not what is unknown nor the way out, where an
    unknown sample's shape names compute_chunk_sizes."""
    da = pytest.importorskip("dask.array")
    plan = dc.make_plan(dc.DDIMConfig(), 10)
    x = da.from_array(np.full((4, 3), 0.5), chunks=2)
    ts = da.from_array(np.array([500, 400, 300, 200]), chunks=2)
    unknown = ts[ts > 0]
    match = r"{} has shape \(nan,\) with unknown sizes.*compute_chunk_sizes"
    with pytest.raises(ValueError, match=match.format("timestep")):
        dc.step(plan, x * 0.5, unknown, x)
    with pytest.raises(ValueError, match=match.format("timesteps")):  # add_noise's argument
        dc.add_noise(plan, x, x, unknown)
    got = dc.step(plan, x * 0.5, unknown.compute_chunk_sizes(), x).prev_sample.compute()
    assert np.array_equal(got, dc.step(plan, x * 0.5, ts, x).prev_sample.compute())


def test_a_dask_array_of_unknown_shape_is_named_by_guidance_and_slerp() -> None:
    """Dask arrays whose chunk sizes are unknown (after boolean indexing): rescale_noise_cfg
    and guided's cfg of two such arrays said 'noise_guided has shape (nan, 3) but noise_cond
    has shape (nan, 3); they must be equal', the same shape twice and no way out, and slerp
    failed inside Dask's full ('Can not perform automatic rechunking with unknown (nan) chunk
    sizes', a backend traceback). They name the argument and compute_chunk_sizes, as step
    does; rescale of one array with itself (one shape object) still builds its graph."""
    da = pytest.importorskip("dask.array")
    from ddim_core.guidance import cfg

    base = da.from_array(np.full((4, 3), 0.5), chunks=2)
    x, y = base[base[:, 0] > 0], base[base[:, 1] > 0]
    with pytest.raises(ValueError, match=r"noise_guided has shape \(nan, 3\) with unknown sizes"):
        dc.rescale_noise_cfg(x, y, 0.5)
    with pytest.raises(ValueError, match=r"uncond has shape \(nan, 3\) with unknown sizes"):
        cfg(x, y, 7.5)
    for a, b in [(x, x), (x, y)]:
        with pytest.raises(ValueError, match=r"x_a has shape \(nan, 3\) with unknown.*chunk_sizes"):
            dc.slerp(a, b, 0.5)
    assert dc.rescale_noise_cfg(x, x, 0.5).compute().shape == (4, 3)
    known = x.compute_chunk_sizes()
    assert dc.slerp(known, known, 0.5).compute().shape == (4, 3)
