"""Samplers that invert exactly by construction (`ddim_core.reversible`): EDICT, BDIA, BELM.
Round trips over method, guidance, step count, dtype and backend on the guided test bed; how
their samples differ from DDIM's against the exact ODE of one Gaussian; loop conventions."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from helpers import SD, Backend, to_numpy
from hypothesis import given, settings
from hypothesis import strategies as st

import ddim_core as dc
from ddim_core import reversible as R
from ddim_core.analytic import GaussianMixture, guided
from ddim_core.sampling import StepInfo

MIXTURE = GaussianMixture.create([[-2.0, 0.0], [2.0, 0.0], [0.0, 3.5]], [0.3, 0.3, 0.3], SD)
COND = MIXTURE.component(0)
METHODS = {
    "edict": (R.invert_edict, R.sample_edict, 2),
    "bdia": (R.invert_bdia, R.sample_bdia, 1),
    "belm": (R.invert_belm, R.sample_belm, 1),
}
BACKENDS = [
    Backend("numpy", "numpy"),
    Backend("torch", "torch"),
    Backend("jax", "jax"),
    Backend("array_api_strict", "array_api_strict"),
]
ULP = {"float64": 2.0**-52, "float32": 2.0**-23, "float16": 2.0**-10, "bfloat16": 2.0**-7}


def real_data(n: int = 64, seed: int = 0) -> np.ndarray:
    return COND.sample_data(n, np.random.default_rng(seed))


def round_trip(method: str, model, x0, n: int, callback=None, **options):
    """(state, sample(invert(x0))); `callback` sees the inversion."""
    invert, sample, _ = METHODS[method]
    state = invert(model, x0, SD, n, callback=callback, **options)
    options.pop("precision", None)
    return state, sample(model, state, SD, n, **options)


@settings(max_examples=32)
@given(
    method=st.sampled_from(sorted(METHODS)),
    scale=st.sampled_from([1.0, 3.0, 7.5]),
    n=st.integers(10, 30),
    dtype=st.sampled_from(["float64", "float32", "float16", "bfloat16"]),
    precision=st.sampled_from([None, "float64"]),
    backend=st.sampled_from(BACKENDS),
)
def test_round_trip_to_the_last_bit(method, scale, n, dtype, precision, backend):
    """The states in compensated arithmetic (in the samples' working dtype by default, or in
    float64): the model runs in the samples' dtype and sees the same inputs both ways, and
    sampling returns x_0 within one ulp of its scale in every dtype, float64 included
    (measured: bit for bit)."""
    if not backend.supports(dtype) or (precision == "float64" and not backend.supports(precision)):
        return
    x0 = backend.array(real_data(8, seed=n), dtype)
    model = guided(MIXTURE, COND, scale)
    state, back = round_trip(method, model, x0, n, precision=precision)
    assert state.dtype == x0.dtype and back.dtype == x0.dtype
    assert state.lo is not None and state.lo[0].dtype == state[0].dtype
    x0_np = to_numpy(x0)
    ulp = 2.0 ** np.floor(np.log2(np.abs(x0_np).max())) * ULP[dtype]
    assert np.abs(to_numpy(back) - x0_np).max() <= ulp


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_guidance_7_5_twenty_steps_targets(method: str, dtype: str) -> None:
    """Targets: guidance 7.5, N = 20, real data: <= 1e-12 in float64 and <= 1e-5 in float32,
    at 2 (EDICT) and 1 (BDIA, BELM) calls per step, with the default precision, on the
    benchmark's 200 points (this data). Plain float64 state updates reached 3.5e-12 to
    5.4e-12 and float32 ones 3.5e-4 to 8.6e-4 (the guided model amplifying the updates'
    rounding); compensated updates return x_0 bit for bit (bounded here by one ulp)."""
    x0 = real_data(200, seed=95).astype(dtype)  # the benchmark's real data, w = 7.5, N = 20
    infos: list[StepInfo] = []
    _, back = round_trip(method, guided(MIXTURE, COND, 7.5), x0, 20, callback=infos.append)
    assert back.dtype == x0.dtype
    error = np.abs(back - x0).max()
    assert error <= (1e-12 if dtype == "float64" else 1e-5)
    assert error <= 2.0 ** np.floor(np.log2(np.abs(x0).max())) * ULP[dtype]
    assert sum(i.model_calls for i in infos) == 20 * METHODS[method][2]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_float32_with_float64_arithmetic_is_exact(method: str) -> None:
    """precision="float64" (the model still in float32): the round trip is exact too."""
    x0 = real_data(64).astype(np.float32)
    _, exact = round_trip(method, guided(MIXTURE, COND, 7.5), x0, 20, precision="float64")
    assert exact.dtype == np.float32
    np.testing.assert_array_equal(exact, x0)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_the_low_words_carry_the_exactness(method: str) -> None:
    """The State's low words are what makes the trip exact under guidance: a plain tuple of
    its arrays (low words dropped) starts one rounding off, and the guided sampler amplifies
    that; the State itself returns x_0 bit for bit."""
    x0 = real_data(200, seed=95).astype(np.float32)
    model = guided(MIXTURE, COND, 7.5)
    invert, sample, _ = METHODS[method]
    state = invert(model, x0, SD, 20)
    np.testing.assert_array_equal(sample(model, state, SD, 20), x0)
    assert np.abs(sample(model, tuple(state), SD, 20) - x0).max() > 0.0


def test_samples_against_the_exact_ode_of_one_gaussian() -> None:
    """How their samples differ from DDIM's: distance to the exact flow map of one Gaussian
    (SD schedule, from the first timestep to alpha_bar_0). DDIM is first order; BELM (second
    order) and BDIA are closer at N >= 20; EDICT's mixing makes it worse than DDIM at coarse
    steps (its x - y mode grows by p^2 a (1 - b eps') per step where a = sqrt(abar_prev /
    abar) is large) and slightly better from N = 50 on."""
    gauss = GaussianMixture.create([[1.5, -0.5]], [0.5], SD)
    x_T = np.random.default_rng(0).standard_normal((64, 2))
    errors = {}
    for n in (20, 50):
        first = dc.make_plan(SD, n).timesteps[0]
        exact = gauss.ode_solution(
            x_T, gauss.schedule.alpha_bar(first), gauss.schedule.final_alpha_cumprod
        )
        samples = {
            "ddim": dc.sample(gauss, x_T, SD, n),
            "edict": R.sample_edict(gauss, x_T, SD, n),
            "bdia": R.sample_bdia(gauss, x_T, SD, n),
            "belm": R.sample_belm(gauss, x_T, SD, n),
        }
        errors[n] = {k: float(np.abs(v - exact).max()) for k, v in samples.items()}
    for n in (20, 50):
        e = errors[n]
        assert e["belm"] < e["bdia"] < e["ddim"], e
    assert errors[20]["edict"] > errors[20]["ddim"]
    assert errors[50]["edict"] < errors[50]["ddim"]
    assert errors[50]["belm"] < 0.1 * errors[50]["ddim"]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_sampling_from_a_plain_x_T_and_the_state(method: str) -> None:
    invert, sample, calls = METHODS[method]
    x_T = np.random.default_rng(1).standard_normal((8, 2))
    infos: list[StepInfo] = []
    x0 = sample(COND, x_T, SD, 10, callback=infos.append)
    assert [i.step_index for i in infos] == list(range(10))
    assert sum(i.model_calls for i in infos) == 10 * calls
    state = invert(COND, x0, SD, 10)
    assert isinstance(state, tuple) and len(state) == 2 and state.dtype == np.float64
    np.testing.assert_allclose(sample(COND, tuple(state), SD, 10), x0, atol=1e-12)


def test_bdia_inverts_with_clipping_and_any_gamma() -> None:
    """BDIA steps with `steps.step`, so clip_sample works; gamma < 1 divides by gamma, which
    amplifies rounding in the inverted x_T (by up to (1 / gamma)^N), but the trip holds."""
    config = dc.DDIMConfig(timestep_spacing="trailing")  # clip_sample=True
    gauss = GaussianMixture.create([[0.5, -0.5]], [0.5], config)
    x0 = gauss.sample_data(16, np.random.default_rng(2))
    for gamma in (1.0, 0.5):
        state = R.invert_bdia(gauss, x0, config, 20, gamma=gamma)
        back = R.sample_bdia(gauss, state, config, 20, gamma=gamma)
        assert np.abs(back - x0).max() <= 1e-10


def test_loops_read_nothing_on_meta_tensors() -> None:
    torch = pytest.importorskip("torch")
    x = torch.empty(4, 2, device="meta")
    for method, (invert, sample, _) in METHODS.items():
        state = invert(COND, x, SD, 5, precision="float32")
        assert all(s.device.type == "meta" for s in state), method
        assert sample(COND, state, SD, 5).device.type == "meta"


def test_progress_bar(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("tqdm")
    x_T = np.random.default_rng(3).standard_normal((4, 2))
    R.sample_edict(COND, R.invert_edict(COND, x_T, SD, 5, progress=True), SD, 5, progress=True)
    R.invert_bdia(COND, x_T, SD, 5, progress=True)
    err = capsys.readouterr().err
    assert "EDICT: 100%" in err and "EDICT inversion: 100%" in err and "BDIA inversion" in err


@pytest.mark.parametrize("method", sorted(METHODS))
def test_the_progress_bar_counts_every_step_taken(
    method: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """BDIA's and BELM's first step (plain DDIM inversion of x_0; DDIM's step from a plain
    x_T) runs before their loop, and the bar left it out: 'BDIA inversion: 4/4' for 5 steps
    and 5 model calls (EDICT's said 5/5). A state skips that step: the bar counts what runs."""
    pytest.importorskip("tqdm")
    invert, sample, _ = METHODS[method]
    x = real_data(4)
    state = invert(COND, x, SD, 5)
    for run, steps in (
        (lambda: invert(COND, x, SD, 5, progress=True), 5),
        (lambda: sample(COND, x, SD, 5, progress=True), 5),
        (lambda: sample(COND, state, SD, 5, progress=True), 5 if method == "edict" else 4),
    ):
        capsys.readouterr()
        run()
        last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
        assert "100%" in last and f" {steps}/{steps} " in last, last


def test_bad_options() -> None:
    x = np.zeros((2, 2))
    clipped = SD.replace(clip_sample=True)
    with pytest.raises(ValueError, match="EDICT inverts exactly only with DDIM's linear step"):
        R.invert_edict(COND, x, clipped, 5)
    with pytest.raises(ValueError, match="BELM inverts exactly only"):
        R.sample_belm(COND, x, SD.replace(thresholding=True), 5)
    with pytest.raises(ValueError, match=r"gamma=0 must be in \(0, 1\]"):
        R.invert_bdia(COND, x, SD, 5, gamma=0)
    with pytest.raises(ValueError, match=r"p=1.5 must be in \(0, 1\]"):
        R.sample_edict(COND, x, SD, 5, p=1.5)
    with pytest.raises(ValueError, match="precision='float16'"):
        R.invert_belm(COND, x, SD, 5, precision="float16")
    with pytest.raises(ValueError, match="a state is a pair of arrays, got 3"):
        R.sample_bdia(COND, (x, x, x), SD, 5)
    zero_snr = dc.DDIMConfig(
        rescale_betas_zero_snr=True,
        timestep_spacing="trailing",
        prediction_type="v_prediction",
        clip_sample=False,
    )
    with pytest.raises(ValueError, match="BELM needs alpha_bar > 0"):
        R.invert_belm(COND, x, zero_snr, 5)


@pytest.mark.parametrize("method", ["edict", "belm"])
def test_a_start_where_alpha_bar_underflowed_is_not_blamed_on_zero_snr(method: str) -> None:
    """Linear betas to 0.9 over 10000 train timesteps (no beta of 1) take alpha_bar to 0.0 in
    float64 from timestep 5555; EDICT or BELM starting there blamed 'zero terminal SNR:
    rescale_betas_zero_snr=True, or a last trained beta of 1', neither of which the config
    has (v prediction: the plan's own check passes it)."""
    invert, _, _ = METHODS[method]
    config = dc.DDIMConfig(
        num_train_timesteps=10_000,
        beta_end=0.9,
        prediction_type="v_prediction",
        clip_sample=False,
    )
    x = np.zeros((1, 2))
    with pytest.raises(ValueError, match=r"at timestep 9000, where alpha_bar = 0 \(alpha_bar "):
        invert(COND, x, config, 10)


@pytest.mark.parametrize("method", ["edict", "belm"])
def test_a_zero_snr_start_names_the_timestep_and_the_ways_out(method: str) -> None:
    """A zero-SNR plan for EDICT or BELM said only 'needs alpha_bar > 0 at every timestep (no
    zero-SNR end)': not which timestep, what makes it zero, nor what to do. The message names
    the plan's first timestep, the option, and the ways out (a plan starting below it, or
    BDIA, which steps from there: the round trip below)."""
    invert, sample, _ = METHODS[method]
    config = dc.DDIMConfig(
        rescale_betas_zero_snr=True,
        timestep_spacing="trailing",
        prediction_type="v_prediction",
        clip_sample=False,
    )
    gauss = GaussianMixture.create([[0.5, -0.5]], [0.3], config)
    x0 = gauss.sample_data(4, np.random.default_rng(0))
    for run in (
        lambda: invert(gauss, x0, config, 10),
        lambda: sample(gauss, x0, config, timesteps=[999, 500, 0]),
    ):
        with pytest.raises(ValueError) as caught:
            run()
        message = str(caught.value)
        assert "the plan starts at timestep 999, where alpha_bar = 0" in message, message
        assert "rescale_betas_zero_snr=True" in message and "timestep_spacing='leading'" in message
        assert "BDIA" in message
    state = R.invert_bdia(gauss, x0, config, 10)  # the way out the message names
    np.testing.assert_array_equal(R.sample_bdia(gauss, state, config, 10), x0)


def test_state_pickles_with_its_dtype_and_low_words() -> None:
    import pickle

    x0 = real_data(8).astype(np.float32)
    state = R.invert_bdia(guided(MIXTURE, COND, 3.0), x0, SD, 10)
    again = pickle.loads(pickle.dumps(state))
    assert again.dtype == state.dtype and again.lo is not None
    np.testing.assert_array_equal(again.lo[0], state.lo[0])
    np.testing.assert_array_equal(R.sample_bdia(guided(MIXTURE, COND, 3.0), again, SD, 10), x0)


def test_state_scaled_refuses_bad_factors() -> None:
    """A zero or NaN factor gave a NaN state without a word, a string was read as a number."""
    state = R.State(np.array([0.7]), np.array([0.3]), np.float64)
    with pytest.raises(ValueError, match=r"first=0\.0 must be a nonzero factor"):
        state.scaled(0.0, 1.0, divide=True)
    with pytest.raises(ValueError, match="second=nan must be a finite number"):
        state.scaled(1.0, float("nan"))
    for bad in ("2", True):
        with pytest.raises(TypeError, match="first must be a real number"):
            state.scaled(bad, 1.0)
    np.testing.assert_array_equal(state.scaled(np.float32(2.0), 1.0)[0], [1.4])


def test_mismatched_states_are_refused() -> None:
    """A state from another method, plan or parameter, or two arrays that do not pair, is an
    error naming what made it, not an x_0 far from the data (BDIA's state through EDICT's
    sampler gave 7.8e2 for data of scale 2); a deep copy is the same state."""
    import copy
    import pickle

    x0 = real_data(4)
    bdia = R.invert_bdia(COND, x0, SD, 5, gamma=0.5)
    assert bdia.origin == ("bdia", dc.make_plan(SD, 5).timesteps, 0.5, SD)
    assert pickle.loads(pickle.dumps(bdia)).origin == bdia.origin
    with pytest.raises(ValueError, match="sample_edict got a state made by invert_bdia"):
        R.sample_edict(COND, bdia, SD, 5)
    with pytest.raises(ValueError, match=r"with gamma=0.5.*with gamma=1.0"):
        R.sample_bdia(COND, bdia, SD, 5)
    with pytest.raises(ValueError, match=r"timesteps \(801, 601, 401, 201, 1\).*timesteps \(901"):
        R.sample_bdia(COND, bdia, SD, 10, gamma=0.5)
    edict = R.invert_edict(COND, x0, SD, 5, p=0.9)
    with pytest.raises(ValueError, match=r"with p=0.9; .* with p=0.93"):
        R.sample_edict(COND, edict, SD, 5)
    with pytest.raises(ValueError, match="made by invert_edict"):
        R.sample_belm(COND, edict.scaled(1.0, 1.0), SD, 5)
    np.testing.assert_array_equal(R.sample_bdia(COND, bdia, SD, 5, gamma=0.5), x0)
    np.testing.assert_array_equal(R.sample_bdia(COND, copy.deepcopy(bdia), SD, 5, gamma=0.5), x0)
    with pytest.raises(ValueError, match=r"share one shape and dtype, got \(4, 2\) float64 and"):
        R.sample_bdia(COND, (x0, x0[:2]), SD, 5)
    with pytest.raises(ValueError, match="share one shape and dtype"):
        R.sample_belm(COND, (x0, x0.astype(np.float32)), SD, 5)
    with pytest.raises(TypeError, match=r"dtype must be a real floating dtype .* got 'float32'"):
        R.sample_belm(COND, x0, SD, 5, dtype="float32")


@pytest.mark.parametrize("method", sorted(METHODS))
def test_bad_arrays_are_named_by_their_argument(method: str) -> None:
    """The checks named every array "x" (the plain loops' argument), and a state with a None
    in it was an AttributeError from inside the loop."""
    invert, sample, _ = METHODS[method]
    x = np.zeros((2, 2))
    with pytest.raises(TypeError, match="x_0 must be a real floating-point array, got dtype"):
        invert(COND, np.zeros((2, 2), dtype=np.int64), SD, 5)
    with pytest.raises(TypeError, match="x_0 must be an array"):
        invert(COND, [[0.0, 0.0]], SD, 5)
    with pytest.raises(TypeError, match="state must be an array"):
        sample(COND, [x, x], SD, 5)
    with pytest.raises(TypeError, match=r"state\[1\] must be an array, got None"):
        sample(COND, (x, None), SD, 5)
    with pytest.raises(TypeError, match=r"state\[1\] must be an array .* got list"):
        sample(COND, (x, x.tolist()), SD, 5)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_non_finite_input_is_named_by_its_argument(method: str) -> None:
    """A NaN in x_0 or in the state was named "x, the loop's input" (the plain loops'
    argument), and a State's own array "the sample at step 1", as if the loop had made it:
    each is named as the caller passed it; a sample the loop made keeps its step."""
    invert, sample, _ = METHODS[method]
    x = np.zeros((2, 2))
    x[1, 0] = np.nan
    state = invert(COND, np.zeros((2, 2)), SD, 5)
    given = r"{}, the loop's input, contains NaN or Inf"
    with np.errstate(invalid="ignore"):  # (the mixture's own softmax of a NaN)
        with pytest.raises(ValueError, match=given.format("x_0")):
            invert(COND, x, SD, 5)
        with pytest.raises(ValueError, match=given.format("state")):
            sample(COND, x, SD, 5)
        with pytest.raises(ValueError, match=given.format(r"state\[1\]")):
            sample(COND, R.State(state[0], x, state.dtype, None, state.origin), SD, 5)
        with pytest.raises(ValueError, match=given.format(r"state\[1\]")):
            sample(COND, (state[0], x), SD, 5)
        with pytest.raises(ValueError, match=r"the sample at step [012] contains NaN or Inf"):
            sample(COND, (x, state[1]), SD, 5)  # state[0] reaches the model mixed in


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize(
    "change",
    [{"beta_end": 0.014}, {"prediction_type": "v_prediction"}, {"rescale_betas_zero_snr": True}],
)
def test_a_state_is_refused_under_another_config(method: str, change: dict) -> None:
    """Another config over the same timesteps has other levels or another step: sampling the
    state under it landed far from x_0 without a sign. It is an error naming both configs; an
    equal config returns x_0."""
    invert, sample, _ = METHODS[method]
    x0 = real_data(4)
    state = invert(COND, x0, SD, 5)
    other = SD.replace(**change)
    assert dc.make_plan(other, 5).timesteps == dc.make_plan(SD, 5).timesteps
    with pytest.raises(ValueError, match=rf"invert_{method} under DDIMConfig\(.*got config="):
        sample(COND, state, other, 5)
    np.testing.assert_array_equal(sample(COND, state, SD.replace(), 5), x0)


def test_float64_precision_where_the_library_makes_float32_of_it() -> None:
    """JAX without x64 turns float64 requests into float32 (with a warning): precision="float64"
    would silently be float32 arithmetic, so it is refused, naming the fix."""
    jax = pytest.importorskip("jax")
    x0 = jax.numpy.ones((2, 2), dtype=jax.numpy.float32)
    with jax.enable_x64(False), pytest.raises(ValueError, match="enable jax_enable_x64"):
        R.invert_bdia(guided(MIXTURE, COND, 3.0), x0, SD, 5, precision="float64")


@pytest.mark.parametrize("spacing", ["leading", "linspace"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_last_step_that_does_not_move(method: str, spacing: str) -> None:
    """set_alpha_to_one=False with a plan ending at t = 0: the last step goes from alpha_bar_0
    to alpha_bar_0 and does not move. BELM's weight of z_{k-1} is (h / H)^2 = 0 there, so
    invert_belm divided by zero and returned NaN; now z_{N-1} = x_0 (what that step gives) and
    the inversion starts one step earlier."""
    config = dc.DDIMConfig(clip_sample=False, set_alpha_to_one=False, timestep_spacing=spacing)
    mixture = GaussianMixture.create([[-2.0, 0.0], [2.0, 0.0]], [0.3, 0.3], config)
    model = guided(mixture, mixture.component(0), 3.0)
    x0 = real_data(16)
    invert, sample, _ = METHODS[method]
    for n in (1, 2, 10):
        state = invert(model, x0, config, n)
        assert all(np.isfinite(a).all() for a in state)
        assert np.array_equal(sample(model, state, config, n), x0)


def test_a_states_low_words_are_checked_where_it_is_made() -> None:
    """A State rebuilt by hand with a bad `lo` (one word, None, a list, another shape) failed
    deep in the loop: an IndexError, an AttributeError, NumPy's broadcast error. It is an
    error naming `lo` at construction; a good rebuild returns x_0."""
    x0 = real_data(4)
    state = R.invert_bdia(COND, x0, SD, 5)
    first, second, lo = state[0], state[1], state.lo
    bad = [
        ((lo[0],), ValueError, "lo must be None or a pair of arrays .* got a tuple of 1"),
        ((None, lo[1]), TypeError, r"lo\[0\] must be an array, got None"),
        ((lo[0], lo[1].tolist()), TypeError, r"lo\[1\] must be an array .* got list"),
        ((lo[0], lo[1][:, :1].repeat(3, 1)), ValueError, r"lo\[1\] has shape \(4, 3\)"),
        ((lo[0], torch_or_numpy(lo[1])), TypeError, r"state\[1\] is a numpy array but lo\[1\]"),
    ]
    for low, error, message in bad:
        with pytest.raises(error, match=message):
            R.State(first, second, state.dtype, low, state.origin)
    rebuilt = R.State(first.copy(), second.copy(), state.dtype, list(lo), state.origin)
    np.testing.assert_array_equal(R.sample_bdia(COND, rebuilt, SD, 5), x0)


def torch_or_numpy(array: np.ndarray):  # type: ignore[no-untyped-def]
    """`array` in another library than NumPy (torch, else array-api-strict)."""
    try:
        import torch
    except ImportError:
        import array_api_strict

        return array_api_strict.asarray(array)
    return torch.from_numpy(array)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_state_is_sampled_in_the_arithmetic_that_made_it(method: str) -> None:
    """Sampling a state in another precision than its inverse's steps with coefficients
    rounded to another dtype: at guidance 7.5 it landed 7e-5 to 5e-4 from the float32 x_0
    (either way, float32 -> float64 or back), without a sign. It is an error naming both; the
    state's own precision, given or not, returns x_0."""
    invert, sample, _ = METHODS[method]
    x0 = real_data(16).astype(np.float32)
    model = guided(MIXTURE, COND, 7.5)
    for made, other in (("float32", "float64"), ("float64", "float32")):
        state = invert(model, x0, SD, 20, precision=made)
        with pytest.raises(ValueError, match=rf"precision='{other}': .* made in {made} arithm"):
            sample(model, state, SD, 20, precision=other)
        for same in (None, made):
            np.testing.assert_array_equal(sample(model, state, SD, 20, precision=same), x0)
    # a plain tuple (no origin) is the caller's to sample as asked
    state = invert(model, x0, SD, 20)
    assert sample(model, tuple(state), SD, 20, precision="float64").dtype == np.float32


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_state_is_sampled_in_the_samples_dtype_that_made_it(method: str) -> None:
    """sample_*(..., dtype=) other than a made state's own called the model in that dtype,
    on other inputs than the inverse's: at guidance 7.5 it landed 4e-4 to 7e-4 from the
    float32 x_0 in float64 and 4.6 to 19 in float16, without a sign (a user asking for x_0
    in float64). It is an error naming both; the state's own dtype, given or not, returns x_0."""
    invert, sample, _ = METHODS[method]
    x0 = real_data(16).astype(np.float32)
    model = guided(MIXTURE, COND, 7.5)
    state = invert(model, x0, SD, 20)
    for other in (np.float64, np.float16):
        with pytest.raises(ValueError, match=r"dtype=<class 'numpy.float(64|16)'>: .* in float32"):
            sample(model, state, SD, 20, dtype=other)
    for same in (None, np.float32, x0.dtype):
        np.testing.assert_array_equal(sample(model, state, SD, 20, dtype=same), x0)
    # a plain tuple (no origin) is the caller's to sample as asked
    assert sample(model, tuple(state), SD, 20, dtype=np.float64).dtype == np.float64


@pytest.mark.parametrize("method", ["bdia", "belm"])
def test_sample_prediction_with_alpha_to_one_is_refused_as_the_docstring_says(method: str) -> None:
    """invert_bdia's docstring said any z_{N-1} would do, yet sample prediction with
    set_alpha_to_one=True failed in the plain DDIM inversion that makes z_{N-1}, with
    inverse_step's message (no word of BDIA / BELM). Any z_{N-1} would give an exact round
    trip, but z_0 is a noise latent only from the plain inversion's, which starts at
    alpha_bar = 1 there (noise 0 / 0): the refusal is kept, documented and named."""
    config = dc.DDIMConfig(
        clip_sample=False,
        timestep_spacing="trailing",
        prediction_type="sample",
        set_alpha_to_one=True,
    )
    model = dc.GaussianMixture.create([[1.0]], [0.5], config)
    invert = getattr(R, f"invert_{method}")
    with pytest.raises(ValueError, match=rf"{method.upper()} inversion .* set_alpha_to_one=False"):
        invert(model, np.array([[0.5]]), config, 10)
    invert(model, np.array([[0.5]]), config.replace(set_alpha_to_one=False), 10)  # taken


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_precision_narrower_than_the_data_is_refused_by_name(method: str) -> None:
    """precision="float32" on float64 data rounded x_0 to float32 on the way in: the round
    trip came back 7e-8 relative off x_0, without a word, from samplers that promise x_0 bit
    for bit. It is a ValueError naming the argument, both dtypes and the ways out; float32 and
    half-precision data (whose working dtype is float32) still take it, and so does a state
    made in float32 for float64 samples (its arrays are float32 already)."""
    invert, sample, _ = METHODS[method]
    x0 = real_data(8)
    message = r"precision='float32' is narrower than x_0's float64"
    with pytest.raises(ValueError, match=message):
        invert(COND, x0, SD, 5, precision="float32")
    with pytest.raises(ValueError, match=r"precision='float32' is narrower than x_T's float64"):
        sample(COND, x0, SD, 5, precision="float32")
    with pytest.raises(ValueError, match=r"precision='float32' is narrower than state's float64"):
        sample(COND, (x0, x0), SD, 5, precision="float32")
    for dtype in (np.float32, np.float16):
        state = invert(COND, x0.astype(dtype), SD, 5, precision="float32")
        np.testing.assert_array_equal(sample(COND, state, SD, 5), x0.astype(dtype))
    narrow = invert(COND, x0.astype(np.float32), SD, 5)
    wide = R.State(narrow[0], narrow[1], np.float64, narrow.lo)
    assert sample(COND, wide, SD, 5, precision="float32").dtype == np.float64


def test_a_state_passes_through_jax_jit_whole() -> None:
    """State is a tuple subclass: unregistered, jax.jit stacked it into one (2, ...) array,
    dropping the low words, the samples' dtype and the origin without a word (sample_* then
    took it for a plain x_T). It is a pytree node now (registered once jax is imported): the
    arrays are leaves, the rest static."""
    jax = pytest.importorskip("jax")
    x0 = jax.numpy.asarray(real_data(8), dtype=jax.numpy.float32)
    state = R.invert_bdia(COND, x0, SD, 5)
    assert len(jax.tree_util.tree_leaves(state)) == 4
    same = jax.jit(lambda s: s)(state)
    assert isinstance(same, R.State) and same.dtype == state.dtype
    assert same.origin == state.origin and same.lo is not None
    for a, b in zip((*same, *same.lo), (*state, *state.lo), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    plain = R.State(state[0], state[1], state.dtype)  # no low words: two leaves
    assert jax.tree_util.tree_map(lambda a: a, plain).lo is None


def test_jitted_reversible_loops_round_trip_close_to_the_eager_ones() -> None:
    """BDIA under jax.jit, state in and out: the round trip and the state agree with the
    eager loop's to about float32's precision, not bit for bit (XLA rounds the compensated
    products differently; docs/inversion-methods.md): measured 0.0 and 4e-7 here."""
    jax = pytest.importorskip("jax")
    x0 = jax.numpy.asarray(real_data(8), dtype=jax.numpy.float32)
    eager = R.invert_bdia(COND, x0, SD, 5)
    state = jax.jit(lambda x: R.invert_bdia(COND, x, SD, 5))(x0)
    back = jax.jit(lambda s: R.sample_bdia(COND, s, SD, 5))(state)
    assert isinstance(state, R.State) and state.origin == eager.origin
    assert float(np.abs(np.asarray(back) - np.asarray(x0)).max()) <= 1e-5
    assert float(np.abs(np.asarray(state[0]) - np.asarray(eager[0])).max()) <= 1e-5


def test_state_registers_lazily_never_importing_jax() -> None:
    """Importing ddim_core imports no jax; a State made after jax is imported is a pytree."""
    pytest.importorskip("jax")
    code = (
        "import sys, numpy as np, ddim_core\n"
        "assert 'jax' not in sys.modules\n"
        "import jax\n"
        "s = ddim_core.reversible.State(np.zeros(2), np.ones(2), np.float64)\n"
        "assert len(jax.tree_util.tree_leaves(s)) == 2\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_state_scaled_of_half_arrays_works_in_float32(dtype: str) -> None:
    """State.scaled of a state holding the data's half arrays (State(a, b, float16), or a
    plain tuple the k-diffusion adapter wraps) raised 'bits must be 32 or 64 ... got 16' from
    the compensated products (NaN low words in float16 before): it works in float32, the
    arithmetic dtype of half data, as the same arrays in float32 scale."""
    torch = pytest.importorskip("torch")
    half = getattr(torch, dtype)
    a, b = torch.tensor([0.7, -3.1], dtype=half), torch.tensor([0.3, 2.5], dtype=half)
    got = R.State(a, b, half).scaled(1 / 3, 7.0)
    want = R.State(a.float(), b.float(), half).scaled(1 / 3, 7.0)
    assert got.dtype == half and got.lo is not None
    for x, y in zip((*got, *got.lo), (*want, *want.lo), strict=True):
        assert x.dtype == torch.float32 and torch.equal(x, y)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_progress_bar_advances_with_the_steps(method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bar of every loop moves as its steps run: sample_bdia and sample_belm listed the
    bar's items up front, which ran it to 100% before the first model call."""
    tqdm_auto = pytest.importorskip("tqdm.auto")
    events: list[str] = []

    def bar(items, desc, **counts):  # type: ignore[no-untyped-def]
        for item in items:
            events.append("bar")
            yield item

    def model(x, t):  # type: ignore[no-untyped-def]
        events.append("model")
        return COND(x, t)

    monkeypatch.setattr(tqdm_auto, "tqdm", bar)
    invert, sample, _ = METHODS[method]
    x_0 = real_data(4)
    state = invert(COND, x_0, SD, 5)
    for run in (
        lambda: invert(model, x_0, SD, 5, progress=True),
        lambda: sample(model, state, SD, 5, progress=True),
    ):
        events.clear()
        run()
        first, last = events.index("bar"), len(events) - 1 - events[::-1].index("bar")
        assert "model" in events[first:last], events  # steps run between the bar's items


@pytest.mark.parametrize("option", ["p", "gamma"])
def test_a_negative_p_or_gamma_names_the_interval(option: str) -> None:
    """p=-0.5 was refused as 'must be a finite number >= 0', where 0 is refused too: the
    message names (0, 1], as for 0 and 1.5."""
    invert = R.invert_edict if option == "p" else R.invert_bdia
    with pytest.raises(ValueError, match=rf"{option}=-0.5 must be in \(0, 1\]"):
        invert(COND, np.zeros((2, 2)), SD, 5, **{option: -0.5})


@pytest.mark.parametrize("loop", [dc.sample, dc.invert])
def test_a_state_given_to_the_one_step_loops_names_the_samplers_that_take_it(loop) -> None:
    """dc.sample / dc.invert given a two-step sampler's State (a tuple of two arrays) said only
    "x must be an array (numpy, torch, ...), got State", not where a State goes."""
    x_0 = np.zeros((1, 2))
    state = R.invert_bdia(lambda x, t: 0 * x, x_0, SD, 4)
    with pytest.raises(TypeError, match=r"got a State of 2 items; .*reversible\.sample_edict"):
        loop(lambda x, t: 0 * x, state, SD, 4)
    with pytest.raises(TypeError, match=r"x_0 must be an array .*got a tuple of 2 items"):
        R.invert_belm(lambda x, t: 0 * x, (x_0, x_0), SD, 4)  # a pair where x_0 goes
