"""Loops: sample / invert, exact inversion, the analytic mixture model."""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import Backend, assert_close

import ddim_core as dc
from ddim_core.analytic import GaussianMixture
from ddim_core.sampling import StepInfo, check_fixed_point, invert, sample

CONFIG = dc.DDIMConfig(clip_sample=False, timestep_spacing="trailing")
MIXTURE = GaussianMixture.create([[-2.0, 0.0], [2.0, 0.0], [0.0, 3.5]], [0.3, 0.3, 0.3], CONFIG)


def test_exact_inversion_round_trip_target() -> None:
    """N = 50, narrow well-separated mixture: exact <= 1e-5 with <= 8 calls per step."""
    x0 = sample(MIXTURE, np.random.default_rng(0).standard_normal((300, 2)), CONFIG, 50)
    plain = np.abs(sample(MIXTURE, invert(MIXTURE, x0, CONFIG, 50), CONFIG, 50) - x0).max()
    infos: list[StepInfo] = []
    z = invert(MIXTURE, x0, CONFIG, 50, fixed_point_iters=20, tol=1e-9, callback=infos.append)
    exact = np.abs(sample(MIXTURE, z, CONFIG, 50) - x0).max()
    calls = np.mean([i.model_calls for i in infos])
    assert plain > 0.5
    assert exact <= 1e-5
    assert calls <= 8
    assert all(i.residual is not None and i.residual <= 1e-7 for i in infos)


def test_one_refinement_beats_plain_inversion() -> None:
    """k = 1: the step taken from the warm start, then one refinement (two model calls per
    step). Measured: 5.0e-3 against plain inversion's 2.2 (N = 50). The warm start replaces
    plain inversion's point of evaluation, so at N = 10 on this narrow mixture, where the first
    inverse steps need ~20 refinements, one refinement is not better than plain inversion."""
    x0 = MIXTURE.sample_data(100, np.random.default_rng(1))
    plain = invert(MIXTURE, x0, CONFIG, 50)
    one = invert(MIXTURE, x0, CONFIG, 50, fixed_point_iters=1)
    err = lambda z: np.abs(sample(MIXTURE, z, CONFIG, 50) - x0).max()  # noqa: E731
    assert err(one) <= 1e-2 * err(plain)


@pytest.mark.parametrize("k", [1, 2, 5])
def test_fixed_point_iters_counts_refinements(k: int) -> None:
    """k refinements after the plain step: 1 + k model calls per step without tol (the step
    itself, then one per refinement); each more refinement improves (N = 50; measured 5.0e-3,
    9.3e-4, 6.0e-5, 7.4e-8, 9.0e-12 for k = 1..5)."""
    x0 = MIXTURE.sample_data(100, np.random.default_rng(1))
    infos: list[StepInfo] = []
    z = invert(MIXTURE, x0, CONFIG, 50, fixed_point_iters=k, callback=infos.append)
    assert [i.model_calls for i in infos] == [k + 1] * 50
    err = lambda z: np.abs(sample(MIXTURE, z, CONFIG, 50) - x0).max()  # noqa: E731
    fewer = invert(MIXTURE, x0, CONFIG, 50, fixed_point_iters=k - 1)
    assert err(z) < err(fewer)


def test_sampling_error_is_first_order() -> None:
    """Against the exact probability-flow solution for one Gaussian, error ~ 1/N."""
    config = dc.DDIMConfig(clip_sample=False, timestep_spacing="trailing")
    model = GaussianMixture.create([[1.5]], [0.5], config)
    x_T = np.random.default_rng(2).standard_normal((200, 1))
    exact = model.ode_solution(x_T, model.schedule.alpha_bar(999))
    errors = [np.abs(sample(model, x_T, config, n) - exact).max() for n in (25, 50, 100, 200)]
    ratios = [a / b for a, b in itertools.pairwise(errors)]
    assert all(1.7 < r < 2.3 for r in ratios), (errors, ratios)


@pytest.mark.parametrize("prediction", ["sample", "v_prediction"])
def test_exact_inversion_other_prediction_types(prediction: str) -> None:
    # plain inversion of sample prediction cannot start at alpha_bar = 1 (exact inversion can:
    # test_exact_inversion_of_sample_prediction_from_the_clean_level); end at alpha_bar_0 here
    config = CONFIG.replace(prediction_type=prediction, set_alpha_to_one=False)
    model = GaussianMixture.create([[-2.0, 0.0], [2.0, 0.0]], [0.3, 0.3], config)
    x0 = sample(model, np.random.default_rng(4).standard_normal((50, 2)), config, 30)
    z = invert(model, x0, config, 30, fixed_point_iters=30, tol=1e-10)
    assert np.abs(sample(model, z, config, 30) - x0).max() <= 1e-6


def test_backends_agree_with_numpy(backend: Backend) -> None:
    """The loops on every backend against the same loops on NumPy (torch:meta: shape and
    device, the loops having run without reading a value)."""
    x_T = np.random.default_rng(5).standard_normal((4, 2))
    expected = sample(MIXTURE, x_T, CONFIG, 5)
    got = sample(MIXTURE, backend.array(x_T), CONFIG, 5)
    assert_close(backend, got, expected, "float64", scale=1e3)
    inv = invert(MIXTURE, backend.array(expected), CONFIG, 5, fixed_point_iters=3)
    reference = invert(MIXTURE, expected, CONFIG, 5, fixed_point_iters=3)
    assert_close(backend, inv, reference, "float64", scale=1e3)


def test_eta_with_generator_and_noise_list_agree() -> None:
    x_T = np.random.default_rng(6).standard_normal((8, 2))
    rng = np.random.default_rng(7)
    noises = [rng.standard_normal((8, 2)) for _ in range(10)]
    a = sample(MIXTURE, x_T, CONFIG, 10, eta=1.0, generator=np.random.default_rng(7))
    b = sample(MIXTURE, x_T, CONFIG, 10, eta=1.0, noise=noises)
    assert np.array_equal(a, b)


@pytest.mark.parametrize("eta", [1.0, 0.0])
def test_noise_and_generator_together_are_refused(eta: float) -> None:
    """Both given, the noise list was used and the generator ignored without a word (eta 0
    too: neither is read there, and the call says two different things)."""
    x_T = np.random.default_rng(6).standard_normal((8, 2))
    noises = [np.zeros((8, 2))] * 10
    with pytest.raises(ValueError, match="pass `noise` or `generator`, not both"):
        sample(MIXTURE, x_T, CONFIG, 10, eta=eta, noise=noises, generator=np.random.default_rng(7))


def test_a_non_finite_input_is_named_as_the_input() -> None:
    """sample or invert given an x with an Inf (a bad latent, not a bad model) said "model
    output at step 0 (timestep 999) contains NaN or Inf", blaming the model for what it was
    given: the input is named where it is not finite (read only once the output is not)."""
    x = np.zeros((4, 2))
    x[1, 0] = np.inf
    given = r"x, the loop's input, contains NaN or Inf \(timestep {}\)"
    with np.errstate(invalid="ignore"):  # (the mixture's own softmax of an Inf)
        with pytest.raises(ValueError, match=given.format(999)):
            sample(MIXTURE, x, CONFIG, 5)
        with pytest.raises(ValueError, match=given.format(199)):
            invert(MIXTURE, x, CONFIG, 5, fixed_point_iters=2)
    with pytest.raises(ValueError, match=r"model output at step 0 \(timestep 999\) contains"):
        sample(lambda x, t: x * np.inf, np.ones((4, 2)), CONFIG, 5)  # the model's own


def test_bad_loop_input() -> None:
    x = np.zeros((4, 2))
    with pytest.raises(TypeError, match="model must be callable"):
        sample(None, x, CONFIG, 5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"model output at step 0 \(timestep 999\) has shape"):
        sample(lambda x, t: x[:1], x, CONFIG, 5)
    with pytest.raises(ValueError, match=r"model output at step 2 \(timestep 599\) contains NaN"):
        sample(lambda x, t: x * np.nan if t == 599 else x, x, CONFIG, 5)
    with pytest.raises(TypeError, match="model output at step 0"):
        sample(lambda x, t: [0.0], x, CONFIG, 5)
    with pytest.raises(ValueError, match="fixed_point_iters must be >= 0, got -1"):
        invert(MIXTURE, x, CONFIG, 5, fixed_point_iters=-1)
    with pytest.raises(ValueError, match="tol=0 must be a number > 0"):
        invert(MIXTURE, x, CONFIG, 5, fixed_point_iters=2, tol=0)
    with pytest.raises(ValueError, match=r"eta=0\.5: inversion is deterministic"):
        invert(MIXTURE, x, CONFIG, 5, eta=0.5)
    with pytest.raises(ValueError, match="needs `noise` or `generator`"):
        sample(MIXTURE, x, CONFIG, 5, eta=0.5)


def test_tol_is_a_finite_number() -> None:
    """tol=True was taken as tol=1.0 and tol=inf as no tolerance at all: each step stopped at
    its first iterate (20 refinements allowed, none made), 0.5 away from the input after
    sampling back, with no error."""
    x = MIXTURE.sample_data(4, np.random.default_rng(9))
    with pytest.raises(TypeError, match="tol must be a real number, got True"):
        invert(MIXTURE, x, CONFIG, 5, fixed_point_iters=20, tol=True)
    with pytest.raises(TypeError, match="tol must be a real number, got '1e-6'"):
        invert(MIXTURE, x, CONFIG, 5, fixed_point_iters=20, tol="1e-6")  # type: ignore[arg-type]
    for bad in (math.inf, math.nan):
        with pytest.raises(ValueError, match=f"tol={bad} must be a finite number"):
            invert(MIXTURE, x, CONFIG, 5, fixed_point_iters=20, tol=bad)
    assert check_fixed_point(3, np.float32(1e-6)) == 3


def test_tol_without_refinements_is_an_error() -> None:
    """invert(..., fixed_point_iters=0, tol=1e-6) ignored tol silently: tol stops a step's
    refinements, and 0 makes none (plain inversion, one model call per step). tol's default
    None tells the two apart; the combination is now a ValueError naming both."""
    x = MIXTURE.sample_data(4, np.random.default_rng(9))
    with pytest.raises(ValueError, match=r"tol=1e-06 needs fixed_point_iters >= 1, got 0"):
        invert(MIXTURE, x, CONFIG, 5, fixed_point_iters=0, tol=1e-6)
    with pytest.raises(ValueError, match="fixed_point_iters >= 1"):
        invert(MIXTURE, x, CONFIG, 5, tol=1e-6)  # fixed_point_iters' default is 0
    plain = invert(MIXTURE, x, CONFIG, 5, fixed_point_iters=0, tol=None)
    assert np.array_equal(plain, invert(MIXTURE, x, CONFIG, 5))


def test_progress_bar(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("tqdm")
    x_T = np.random.default_rng(8).standard_normal((4, 2))
    quiet = sample(MIXTURE, x_T, CONFIG, 5)
    shown = sample(MIXTURE, x_T, CONFIG, 5, progress=True)
    assert np.array_equal(quiet, shown)
    invert(MIXTURE, shown, CONFIG, 5, progress=True)
    err = capsys.readouterr().err
    assert "DDIM: 100%" in err and "DDIM inversion: 100%" in err and "5/5" in err


@pytest.mark.parametrize("shape", [(0, 2), (0,), (2, 0), ()])
@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_exact_inversion_of_empty_batches_and_single_values(shape, lib) -> None:  # type: ignore[no-untyped-def]
    """Exact inversion takes what plain inversion takes: an empty batch comes back empty (no
    model call), a 0-d sample is solved as one value and samples back to itself (they raised
    reshape and reduction errors from inside the backend)."""
    config = dc.DDIMConfig(clip_sample=False)
    mixture = GaussianMixture.create([[1.0]], [0.5], config)

    def model(x, t):  # type: ignore[no-untyped-def]
        return mixture(x.reshape(-1, 1), t).reshape(x.shape)

    if lib == "torch":
        torch = pytest.importorskip("torch")
        x = torch.full(shape, 0.3, dtype=torch.float64)
    else:
        x = np.full(shape, 0.3)
    infos: list[StepInfo] = []
    for kw in ({"fixed_point_iters": 2}, {"fixed_point_iters": 8, "tol": 1e-12}):
        z = dc.invert(model, x, config, 10, callback=infos.append, **kw)
        assert tuple(z.shape) == shape and z.dtype == x.dtype
        if 0 not in shape:
            back = dc.sample(model, z, config, 10)
            assert float(abs(back - x)) <= 1e-12
    assert all(info.model_calls == 0 for info in infos) == (0 in shape)


@pytest.mark.parametrize("spacing", ["trailing", "leading"])
def test_exact_inversion_of_sample_prediction_from_the_clean_level(spacing: str) -> None:
    """prediction_type='sample' with set_alpha_to_one=True: plain inversion cannot leave
    alpha_bar = 1 (no noise is recoverable there), but exact inversion only takes the forward
    step, which can. It raised plain inversion's 'cannot step at timestep 99' (the inverse
    row was read only for its levels)."""
    config = CONFIG.replace(prediction_type="sample", timestep_spacing=spacing)
    model = GaussianMixture.create([[-2.0, 0.0], [2.0, 0.0]], [0.3, 0.3], config)
    x0 = sample(model, np.random.default_rng(4).standard_normal((50, 2)), config, 30)
    z = invert(model, x0, config, 30, fixed_point_iters=30, tol=1e-10)
    assert np.abs(sample(model, z, config, 30) - x0).max() <= 1e-6
    with pytest.raises(ValueError, match="cannot step at timestep"):
        invert(model, x0, config, 30)  # plain inversion still cannot


def test_exact_inversion_refuses_one_step_from_clean_to_zero_snr() -> None:
    """One step from alpha_bar = 1 straight to alpha_bar = 0 (zero terminal SNR): the forward
    step returns the model's x0_pred, whose slope in x_T is cos(pi / 2) = 0, so it has no
    inverse. It raised ZeroDivisionError from implicit.vp_preconditioner."""
    config = CONFIG.replace(prediction_type="v_prediction", rescale_betas_zero_snr=True)
    model = GaussianMixture.create([[1.0, 0.0]], [0.5], config)
    x0 = np.zeros((2, 2))
    with pytest.raises(ValueError, match="alpha_bar = 1 straight to alpha_bar = 0"):
        invert(model, x0, config, 1, fixed_point_iters=3)
    z = invert(model, x0, config, 2, fixed_point_iters=30, tol=1e-12)  # two steps invert
    assert np.abs(sample(model, z, config, 2) - x0).max() <= 1e-9


@pytest.mark.parametrize(
    ("loop", "options", "name"),
    [
        ("sample", {"check_finite": True}, "check_finite=True"),
        ("invert", {"check_finite": True}, "check_finite=True"),
        ("invert", {"fixed_point_iters": 2, "tol": 1e-4}, "tol=0.0001"),
    ],
)
def test_host_reads_asked_for_under_jax_jit_are_a_clear_error(
    loop: str, options: dict[str, Any], name: str
) -> None:
    """A whole loop runs under jax.jit, but check_finite=True and tol read a value on the host
    at every step, which a trace cannot: they failed deep inside JAX with
    TracerBoolConversionError / ConcretizationTypeError instead of naming the option."""
    jax = pytest.importorskip("jax")
    config = dc.DDIMConfig(timestep_spacing="trailing", clip_sample=False)
    run = getattr(dc, loop)
    x = jax.numpy.ones((2, 3))
    with pytest.raises(ValueError, match=rf"{re.escape(name)}.*jax\.jit"):
        jax.jit(lambda x: run(lambda y, t: 0.5 * y, x, config, 3, **options))(x)
    # outside jit the same options read the host as documented
    assert run(lambda y, t: 0.5 * y, x, config, 3, **options).shape == (2, 3)


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_which_inverse_step_undoes_step_as_docs_inversion_says(prediction_type: str) -> None:
    """docs/inversion.md and inverse_step said the same model output undoes `step` without
    clipping: true for epsilon and sample, not for v_prediction, whose output is read against
    the sample it is applied to (x_t forward, the source backward, as diffusers'
    DDIMInverseScheduler reads it): 0.1 off at 10 steps. The page says so."""
    config = dc.DDIMConfig(clip_sample=False, prediction_type=prediction_type)
    plan = dc.make_plan(config, 10)
    x, out = np.random.default_rng(0).standard_normal((2, 3, 2))
    t = plan.timesteps[-2]
    back = dc.inverse_step(plan, out, t, dc.step(plan, out, t, x).prev_sample).prev_sample
    undone = bool(np.abs(back - x).max() < 1e-12)
    assert undone == (prediction_type != "v_prediction")
    page = (Path(__file__).parent.parent / "docs" / "inversion.md").read_text(encoding="utf-8")
    said = " ".join(page.split("## Step by step", 1)[1].split("```", 1)[0].split())
    assert "undoes `step` given the same model output" in said
    assert "not a v-prediction" in said
