"""ddim_core.testing, the toolkit users property-test their own schedulers with: strategies,
the NumPy float64 reference, the magnitude-scaled assertions and the pytest plugin."""

from __future__ import annotations

import dataclasses
import re
import textwrap

import numpy as np
import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st

import ddim_core as dc
from ddim_core.testing import (
    BACKENDS,
    TINY,
    TOLERANCE,
    Backend,
    assert_array_close,
    assert_inverse_step_close,
    assert_step_close,
    assert_timesteps_equal,
    reference,
    tolerance,
)
from ddim_core.testing import strategies as dst
from ddim_core.testing.backends import dtype_name, round_to, to_numpy


def test_every_option_has_a_strategy_and_an_invalid_value() -> None:
    names = [f.name for f in dataclasses.fields(dc.DDIMConfig)]
    assert sorted(dst.OPTIONS) == sorted(names)
    assert {name for name, _, _ in dst.INVALID} == set(names)


@given(config=dst.configs(), data=st.data())
def test_configs_are_valid_combinations(config: dc.DDIMConfig, data: st.DataObject) -> None:
    """Every drawn config makes plans, except where steps_offset pushes past T - 1."""
    n = data.draw(st.integers(1, config.num_train_timesteps))
    try:
        plan = dc.make_plan(config, n)
    except ValueError as e:
        assert "steps_offset" in str(e)
        return
    assert plan.num_inference_steps == n
    if config.trained_betas is not None:
        assert len(config.trained_betas) == config.num_train_timesteps


def test_configs_draw_zero_terminal_snr_tables_and_ratios_below_one_half() -> None:
    """DDIMConfig takes a trained_betas table whose last beta is 1 (zero terminal SNR) and a
    dynamic_thresholding_ratio anywhere in [0, 1], but configs() drew neither: its tables had
    every beta in (0, 1), its ratios were in [0.5, 1]. Both are drawn now, a zero-terminal
    table with a prediction type that can step at alpha_bar = 0 (as rescale_betas_zero_snr)."""
    search = settings(dst.CI, max_examples=300)

    def zero_terminal(config: dc.DDIMConfig) -> bool:
        return config.trained_betas is not None and config.trained_betas[-1] == 1.0

    table = find(dst.configs(), zero_terminal, settings=search)
    assert table.prediction_type in ("v_prediction", "sample")
    assert dc.schedule(table).alphas_cumprod[-1] == 0.0
    low = find(dst.configs(), lambda c: c.dynamic_thresholding_ratio < 0.5, settings=search)
    assert 0.0 <= low.dynamic_thresholding_ratio < 0.5


def test_configs_vary_only_what_is_named() -> None:
    @given(dst.configs("timestep_spacing", clip_sample=False, steps_offset=st.just(1)))
    def check(config: dc.DDIMConfig) -> None:
        assert config.replace(timestep_spacing="leading") == dc.DDIMConfig(
            clip_sample=False, steps_offset=1
        )

    check()
    with pytest.raises(ValueError, match="unknown options"):
        dst.configs("num_steps")
    with pytest.raises(ValueError, match=r"unknown options \['clip_sampel'\]"):
        dst.configs(clip_sampel=False)  # a misspelt fixed option was dropped: it varied


@given(bad=dst.invalid_configs())
def test_invalid_configs_are_rejected_naming_the_option(bad: dst.InvalidConfig) -> None:
    with pytest.raises(bad.error, match=bad.option):
        dc.DDIMConfig(**bad.options)


@given(plan=dst.plans(steps=st.integers(1, 100)), data=st.data())
def test_the_reference_steps_as_ddim_core_does(plan: dc.Plan, data: st.DataObject) -> None:
    """Two independent codings of eq. (12) agree to float64 precision, plan rule or stride."""
    t = data.draw(dst.timesteps(plan))
    prediction = plan.config.prediction_type
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    x, out, z = rng.standard_normal((3, 2, 3, 4))
    eta = data.draw(dst.etas())
    got = dc.step(plan, out, t, x, eta=eta, noise=z)
    assert_step_close(got, plan, out, t, x, eta=eta, noise=z)
    own = reference.make_plan(plan.config, plan.num_inference_steps)
    assert_step_close(got, own, out, t, x, eta=eta, noise=z)
    if prediction != "sample" or plan.schedule.alpha_bar(plan.prev_timestep(t)) < 1:
        inv = dc.inverse_step(plan, out, t, x)
        assert_inverse_step_close(inv, plan, out, t, x)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("offset", [0, 1])
def test_reference_timesteps_are_ddim_cores_for_every_step_count(spacing: str, offset: int) -> None:
    config = dc.DDIMConfig(timestep_spacing=spacing, steps_offset=offset)
    for n in range(1, 1001):
        try:
            want = dc.spaced_timesteps(config, n)
        except ValueError:
            with pytest.raises(ValueError):
                reference.spaced_timesteps(config, n)
            continue
        assert reference.spaced_timesteps(config, n) == want
        if n % 37 == 1:
            assert (
                reference.make_plan(config, n).prev_timesteps
                == dc.make_plan(config, n).prev_timesteps
            )
            assert_timesteps_equal(np.asarray(want), config, n)
            assert_timesteps_equal(list(want)[::-1], config, n, inverse=True)


def test_timestep_failures_name_the_index() -> None:
    config = dc.DDIMConfig(timestep_spacing="trailing")
    have = [*reference.spaced_timesteps(config, 61), -1]  # diffusers' spurious entry
    with pytest.raises(
        AssertionError, match=r"61 steps: timesteps\[61\] is -1, the plan has nothing"
    ):
        assert_timesteps_equal(have, config, 61)


@given(inputs=dst.step_inputs(scales=(1.0, 1e-3, 1e3)), data=st.data())
def test_ddim_core_passes_its_own_assertions_on_every_backend_and_dtype(
    inputs: dst.StepInputs, data: st.DataObject
) -> None:
    config = data.draw(dst.configs("timestep_spacing", "prediction_type", "thresholding"))
    plan = dc.make_plan(config, 10)
    t = data.draw(dst.timesteps(plan))
    eta = data.draw(dst.etas())
    x, m, z = inputs.arrays()
    got = dc.step(plan, m, t, x, eta=eta, noise=z)
    assert str(got.prev_sample.dtype) == str(x.dtype)
    assert_step_close(got, plan, m, t, x, eta=eta, noise=z)


def test_a_failure_names_config_timestep_element_and_size() -> None:
    config = dc.DDIMConfig(timestep_spacing="trailing", clip_sample=False)
    plan = dc.make_plan(config, 10)
    x, m = np.random.default_rng(0).standard_normal((2, 2, 4)).astype(np.float32)
    good = dc.step(plan, m, 899, x)
    assert_step_close(good, plan, m, 899, x)
    off = good.prev_sample.copy()
    off[1, 2] *= 1 + 1e-4
    with pytest.raises(AssertionError) as info:
        assert_step_close(off, plan, m, 899, x)
    message = str(info.value)
    for part in (
        "prev_sample[1, 2] = ",
        "off by ",
        "relative 0.0001",
        "x the tolerance",
        "DDIMConfig(clip_sample=False, timestep_spacing='trailing'), 10 steps, step 899 -> 799",
        "float32",
    ):
        assert part in message, message


def test_backends_of_unknown_names_are_named_in_the_error() -> None:
    """A misspelt backend said "no backend runs float64 here", as if none were installed."""
    with pytest.raises(ValueError, match=r"unknown backends \['pytorch'\]; backends: numpy, "):
        dst.backends(only=["numpy", "pytorch"])
    with pytest.raises(ValueError, match=r"unknown backends \['jaxx'\]"):
        dst.backends(exclude=["jaxx"])
    dst.backends(only=["numpy"])


def test_per_sample_timesteps_are_one_per_batch_element() -> None:
    """Timesteps that are neither one nor one per sample are an error, not a partial check:
    with 3 timesteps for a batch of 2 the third compared empty arrays (a pass), with 2 for a
    batch of 3 the third sample was never compared."""
    plan = reference.make_plan(dc.DDIMConfig(clip_sample=False), 10)
    x, m = np.random.default_rng(0).standard_normal((2, 3, 2, 4))
    good = reference.per_sample(plan, m, [899, 799, 699], x)
    assert_step_close(good, plan, m, [899, 799, 699], x)
    for wrong, rows in (([899, 799], 3), ([899, 799, 699, 599], 3)):
        with pytest.raises(ValueError, match=f"{len(wrong)} timesteps for a batch of {rows}"):
            assert_step_close(good, plan, m, wrong, x)


def test_timesteps_outside_the_training_range_are_named() -> None:
    """A timestep outside [0, num_train_timesteps) is a ValueError naming it: 1000 was NumPy's
    IndexError, and -1 read the table's last level (a check against the wrong step)."""
    plan = reference.make_plan(dc.DDIMConfig(clip_sample=False), 10)
    x, m = np.random.default_rng(0).standard_normal((2, 2, 3))
    good = reference.per_sample(plan, m, [899, 799], x)
    for wrong in (1000, -1, [899, 1000]):
        with pytest.raises(ValueError, match=r"timestep: \[(1000|-1)\] outside \[0, 1000\)"):
            assert_step_close(good, plan, m, wrong, x)


def test_per_sample_steps_on_the_meta_device_compare_shapes() -> None:
    """On torch's meta device each sample's row is compared by shape, as a whole batch is:
    the whole batch was compared with one sample's shape, a failure for any correct step."""
    torch = pytest.importorskip("torch")
    plan = reference.make_plan(dc.DDIMConfig(clip_sample=False), 10)
    x, m = np.random.default_rng(0).standard_normal((2, 2, 2, 4))
    meta = torch.empty((2, 2, 4), device="meta")
    assert_step_close((meta, meta), plan, m, [899, 799], x)
    with pytest.raises(AssertionError, match="shape"):
        assert_step_close((meta[:, :1], meta), plan, m, [899, 799], x)


def test_tolerances_scale_with_dtype_and_magnitude() -> None:
    assert tolerance("float32") == tolerance(np.float32) == TOLERANCE["float32"] == 1e-5
    assert dtype_name(np.dtype("float16")) == "float16"
    # |got - exact| <= tol * (|exact| + magnitude): a result that cancels to ~0 may be off by
    # rounding of its terms, no more
    assert_array_close(np.array([1e-6 + 5e-6]), np.array([1e-6]), "float32", magnitude=1.0)
    with pytest.raises(AssertionError, match="x the tolerance"):
        assert_array_close(np.array([1e-6 + 5e-6]), np.array([1e-6]), "float32", magnitude=0.1)
    with pytest.raises(AssertionError, match="not finite"):
        assert_array_close(np.array([np.nan, 1.0]), np.array([0.0, 1.0]), "float64")


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_subnormal_results_are_held_to_the_dtypes_spacing(dtype: str) -> None:
    """Under the smallest normal number a dtype's spacing is fixed (2**-24 for float16): the
    exact value correctly rounded passes, whatever the magnitude (a bound relative to 1.7e-6
    in float16 asked for less than half that spacing: the dev profile's counterexample, a
    float16 step at scale 1e-3), and a few spacings off still fails."""
    tiny = np.finfo(dtype).tiny
    spacing = tiny * np.finfo(dtype).eps
    exact = np.array([1.6902615e-06 / 6.103515625e-05, -0.3, 0.0049]) * tiny
    got = exact.astype(dtype)
    assert np.abs(got - exact).max() > 0.3 * spacing  # rounding shows
    for magnitude in (0.0, 3.6e-6 / 6.103515625e-05 * tiny):
        assert_array_close(got, exact, magnitude=magnitude)
    off = np.array(got, dtype=np.float64)  # its last element 4x the bound off
    off[-1] += 4 * TOLERANCE[dtype] * tiny
    with pytest.raises(AssertionError, match="x the tolerance"):
        assert_array_close(off.astype(dtype), exact, dtype, magnitude=0.0)
    for name in ("float16", "float32", "float64"):
        assert TINY[name] == np.finfo(name).tiny
    assert TINY["bfloat16"] == TINY["float32"]  # float32's exponent range


@pytest.mark.parametrize("thresholding", [False, True])
def test_a_clip_passes_the_rounding_of_large_terms_through(thresholding: bool) -> None:
    """float32 terms of size ~1e3 cancelling to an x0_pred inside the clip range round by
    ~1e-5 of 1 (the dev profile's counterexample: off by 1.7e-5, held to 1.5e-5 while the
    size was capped at the range's end); where x0_pred is far beyond the range it is the
    range's end exactly, and held to that: 1e-4 off fails."""
    config = dc.DDIMConfig(timestep_spacing="trailing", thresholding=thresholding)
    plan = dc.make_plan(config, 10)
    ab = reference.level(plan, 99)
    rng = np.random.default_rng(3)
    m = rng.standard_normal((4, 3, 8, 8)) * 1e3
    u = rng.uniform(-0.9, 0.9, m.shape)
    u[:, 0] *= 100  # a channel far beyond the range (any dtype's rounding of it): clipped
    x = (np.sqrt(1 - ab) * m + np.sqrt(ab) * u).astype(np.float32)
    m = m.astype(np.float32)
    got = dc.step(plan, m, 99, x)
    assert_step_close(got, plan, m, 99, x)
    clipped = np.abs(reference.step(plan, m, 99, x)[1]) == 1.0
    assert clipped.sum() > 100
    off = got.pred_original_sample + np.where(clipped, np.float32(1e-4), np.float32(0.0))
    with pytest.raises(AssertionError, match="pred_original_sample"):
        assert_step_close((got.prev_sample, off), plan, m, 99, x)


@pytest.mark.parametrize(
    ("got", "exact"),
    [(1.0, np.nan), (1.0, np.inf), (np.nan, np.inf), (-np.inf, np.inf), (np.inf, np.nan)],
)
def test_a_non_finite_exact_value_is_matched_only_by_itself(got: float, exact: float) -> None:
    """NaN matches NaN and +/-Inf the same Inf; anything else there fails (it passed)."""
    assert_array_close(np.array([2.0, exact]), np.array([2.0, exact]), "float64")
    with pytest.raises(AssertionError, match=r"value\[1\] = .* where exact DDIM gives"):
        assert_array_close(np.array([2.0, got]), np.array([2.0, exact]), "float64")


def test_magnitude_bounds_the_rounding_of_float32_steps() -> None:
    """A float32 computation of eq. (12) with exact coefficients stays within a few ulp of the
    magnitude, far inside TOLERANCE["float32"] times it."""
    rng = np.random.default_rng(1)
    config = dc.DDIMConfig(prediction_type="sample", clip_sample=False)
    for ab_from, ab_to in ((0.01, 0.3), (0.9999, 1.0), (0.5, 0.6)):
        x, m = (round_to(rng.standard_normal(64), "float32") for _ in range(2))
        exact, _ = reference.transfer(config, m, ab_from, ab_to, x)
        size, _ = reference.magnitude(config, m, ab_from, ab_to, x)
        x32, m32 = x.astype(np.float32), m.astype(np.float32)
        eps = (x32 - np.float32(np.sqrt(ab_from)) * m32) / np.float32(np.sqrt(1 - ab_from))
        got = np.float32(np.sqrt(ab_to)) * m32 + np.float32(np.sqrt(1 - ab_to)) * eps
        assert np.all(np.abs(got - exact) <= 8 * 2.0**-24 * (np.abs(exact) + size))


def test_the_reference_scheduler_has_diffusers_api(reference_scheduler) -> None:  # type: ignore[no-untyped-def]
    s = reference_scheduler(timestep_spacing="trailing", clip_sample=False)
    s.set_timesteps(3)
    assert s.timesteps.tolist() == [999, 666, 332]
    x = np.ones((1, 4))
    out = s.step(0.5 * x, 666, x)
    plan = dc.make_plan(dc.DDIMConfig(timestep_spacing="trailing", clip_sample=False), 3)
    assert np.array_equal(out.prev_sample, reference.step(plan, 0.5 * x, 666, x)[0])
    inverse = reference_scheduler(inverse=True, timestep_spacing="trailing", clip_sample=False)
    inverse.set_timesteps(3)
    assert inverse.timesteps.tolist() == [332, 666, 999]
    back = inverse.step(0.5 * x, 666, out.prev_sample).prev_sample
    np.testing.assert_allclose(back, x, rtol=1e-12)


def test_the_reference_scheduler_clips_per_sample_timesteps_as_int_ones() -> None:
    """use_clipped_model_output applies to an array of per-sample timesteps too (it was
    dropped there), as in ddim_core.step and the reference's int-timestep path."""
    s = reference.ReferenceScheduler(clip_sample=True, clip_sample_range=0.5)
    s.set_timesteps(10)
    plan = dc.make_plan(dc.DDIMConfig(clip_sample=True, clip_sample_range=0.5), 10)
    x, out = 3 * np.random.default_rng(0).standard_normal((2, 2, 4))
    ts = np.array([int(s.timesteps[0]), int(s.timesteps[3])])
    got = s.step(out, ts, x, use_clipped_model_output=True).prev_sample
    one = [
        s.step(out[i : i + 1], int(t), x[i : i + 1], use_clipped_model_output=True)
        for i, t in enumerate(ts)
    ]
    np.testing.assert_array_equal(got, np.concatenate([o.prev_sample for o in one]))
    core = dc.step(plan, out, ts, x, use_clipped_model_output=True).prev_sample
    np.testing.assert_allclose(got, core, rtol=1e-12, atol=1e-12)
    unclipped = s.step(out, ts, x).prev_sample
    assert np.abs(got - unclipped).max() > 0.1


def test_xp_and_device_fixtures(backend: Backend, xp, device) -> None:  # type: ignore[no-untyped-def]
    """`xp.asarray(..., device=device)` makes arrays of the backend, where it makes them."""
    a = xp.asarray([1.0, 2.0], device=device)
    assert str(backend.device_of(a)) == str(device)
    assert type(a) is type(backend.array([1.0, 2.0], "float32"))
    if backend.has_values:
        np.testing.assert_array_equal(to_numpy(a), [1.0, 2.0])


def test_the_page_says_which_backends_hold_no_values_or_no_float64() -> None:
    """docs/testing.md listed the `backend` fixture's matrix and said `xp.asarray(values,
    device=device)`, so a user's test written from it (float64 values, checked with
    assert_step_close) failed on torch:meta (no values) and array_api_strict:no_float64 (no
    float64), with nothing on the page saying how to tell them. The page now names
    `backend.has_values` and `backend.supports("float64")`, which say it."""
    from pathlib import Path

    page = Path(__file__).parents[1] / "docs" / "testing.md"
    section = " ".join(page.read_text(encoding="utf-8").split("## The pytest plugin")[1].split())
    assert "`backend.has_values` is False" in section
    assert '`backend.supports("float64")` is False' in section
    by_name = {b.name: b for b in BACKENDS}
    assert not by_name["torch:meta"].has_values
    assert all(b.has_values for b in BACKENDS if b.name != "torch:meta")
    strict = by_name["array_api_strict:no_float64"]
    assert not strict.supports("float64") and strict.supports("float32")
    if strict.unavailable() is None:
        assert strict.array([1.0], "float32").shape == (1,)


def test_the_plugin_serves_a_users_test_suite(pytester: pytest.Pytester) -> None:
    """A user's tests get the fixtures and the bounded profile from the plugin alone."""
    pytester.makepyfile(
        textwrap.dedent(
            """
            import numpy as np
            import ddim_core as dc
            from hypothesis import given, settings
            from ddim_core.testing import assert_step_close
            from ddim_core.testing import strategies as dst

            def test_profile():
                assert settings().derandomize and settings().max_examples == 30

            def test_reference_scheduler(reference_scheduler):
                s = reference_scheduler(clip_sample=False)
                s.set_timesteps(10)
                x = np.ones((2, 3))
                plan = (dc.DDIMConfig(clip_sample=False), 10)
                assert_step_close(s.step(x, 900, x), plan, x, 900, x)

            def test_backend(backend, xp, device):
                x = backend.array([1.0, -1.0], "float32")
                assert xp.abs(x).shape == (2,)

            @given(plan=dst.plans(dst.configs("timestep_spacing", clip_sample=False)))
            def test_plans(plan):
                assert len(plan.timesteps) == plan.num_inference_steps
            """
        )
    )
    result = pytester.runpytest_subprocess(
        "-p", "ddim_core.testing.pytest_plugin", "--hypothesis-profile=ddim-core-ci", "-q"
    )
    here = [b for b in BACKENDS if b.unavailable() is None]
    result.assert_outcomes(passed=3 + len(here), skipped=len(BACKENDS) - len(here))


def test_the_checkers_gaussian_denoiser_does_not_warn_on_half_precision_levels() -> None:
    """`ddim-core check ddim_kdiffusion:sample_ddim --backend numpy` printed "RuntimeWarning:
    overflow encountered in multiply" from sampler_areas.gaussian_denoiser: float16 sigmas
    above 256 square past float16's largest value, so a user could take the checker's own
    warning for one of their sampler. The denoiser now gives the same value without it; a
    warning of the caller's own arithmetic still shows."""
    import warnings

    from ddim_kdiffusion import sample_ddim

    from ddim_core.testing import sampler_areas
    from ddim_core.testing.targets import wrap

    model = sampler_areas.gaussian_denoiser(1.0, 1.0)
    x, sigma = np.full((1, 2), 3000.0, np.float16), np.array([2576.0], np.float16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert model(x, sigma).tolist() == [[1.0, 1.0]]  # s^2 / (s^2 + sigma^2) is 0 here
        found = sampler_areas.dtypes(wrap(sample_ddim, backend_name="numpy"))
    assert found.verdict == "pass", found.detail
    with pytest.warns(RuntimeWarning, match="overflow"):
        model(x, sigma) * x * x  # the caller's overflow is the caller's to see


def test_a_result_in_another_dtype_than_its_sample_fails() -> None:
    """A float32 step returning float16 results (off by a relative 5e-4, 50 x float32's
    tolerance) passed assert_step_close: the tolerance is the result's dtype's, float16's. A
    result of the sample's library in another dtype now fails, naming both dtypes; `dtype=`
    still compares results with inputs given in float64."""
    config = dc.DDIMConfig(timestep_spacing="trailing", clip_sample=False)
    plan = reference.make_plan(config, 10)
    x, m = np.random.default_rng(0).standard_normal((2, 2, 4)).astype(np.float32)
    prev, x0 = reference.step(plan, m.astype(np.float64), 899, x.astype(np.float64))
    half = ((prev * (1 + 5e-4)).astype(np.float16), x0.astype(np.float16))
    with pytest.raises(AssertionError, match="prev_sample is float16, the sample float32"):
        assert_step_close(half, plan, m, 899, x)
    with pytest.raises(AssertionError, match="pred_original_sample is float64, the sample"):
        assert_step_close((prev.astype(np.float32), x0), plan, m, 899, x)
    assert_step_close((prev.astype(np.float32), x0.astype(np.float32)), plan, m, 899, x)
    assert_step_close(prev.astype(np.float32), plan, m, 899, x.astype(np.float64), dtype="float32")


def test_the_plugin_imports_no_hypothesis_in_a_run_that_does_not_use_it(
    pytester: pytest.Pytester,
) -> None:
    """The plugin (loaded by every pytest run once ddim-core is installed) imported Hypothesis
    and ddim_core.testing.strategies in pytest_configure of every run, to register its
    profiles: a project that uses neither paid for the imports on each start (and Hypothesis'
    own plugin, which stays idle while Hypothesis is not imported, then ran its hooks),
    where the plugin says nothing imports Hypothesis before a test asks for it. The profiles
    are now registered where a run asks for one (--hypothesis-profile) or has imported
    Hypothesis already."""
    pytester.makepyfile(
        test_plain="""
        import sys

        def test_nothing_imported():
            assert "hypothesis" not in sys.modules
            assert "ddim_core.testing.strategies" not in sys.modules
        """
    )
    result = pytester.runpytest_subprocess("-p", "ddim_core.testing.pytest_plugin", "-q")
    result.assert_outcomes(passed=1)


def test_the_reference_thresholds_a_0d_sample_as_one_sample() -> None:
    """A 0-d sample with thresholding=True, which dc.step takes as a single sample
    (kernels.threshold), was an IndexError from reference.threshold's `x0.shape[0]`, so
    reference.step and ReferenceScheduler failed on what the core steps; assert_step_close
    failed on any 0-d sample (`m[:]` of a 0-d array), and with thresholding in
    reference.magnitude too."""
    plan = dc.make_plan(dc.DDIMConfig(thresholding=True, sample_max_value=1.5), 10)
    x, m = np.asarray(0.5), np.asarray(3.0)
    prev, x0 = reference.step(plan, m, 900, x)
    one = reference.step(plan, m.reshape(1), 900, x.reshape(1))
    assert (prev.shape, x0.shape) == ((), ())
    np.testing.assert_array_equal(prev, one[0][0])
    np.testing.assert_array_equal(x0, one[1][0])
    assert_step_close(dc.step(plan, m, 900, x), plan, m, 900, x)


def test_the_reference_scheduler_keeps_a_bfloat16_sample_s_dtype() -> None:
    """A bfloat16 sample of JAX (or ml_dtypes), NumPy's dtype kind "V", came back float64 from
    ReferenceScheduler and ReferenceInverseScheduler, so `ddim-core check` of the reference
    with --backend jax (JAX_ENABLE_X64=1) failed dtypes: 'a bfloat16 step returns float64'."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = np.asarray([[0.5, -1.25]], dtype=ml_dtypes.bfloat16)
    for cls in (reference.ReferenceScheduler, reference.ReferenceInverseScheduler):
        scheduler = cls(clip_sample=False)
        scheduler.set_timesteps(10)
        t = int(scheduler.timesteps[0])
        prev, x0 = scheduler.step(x, t, x, return_dict=False)
        assert (prev.dtype, x0.dtype) == (x.dtype, x.dtype), cls
        plan = reference.make_plan(scheduler.config, 10)
        exact = (reference.inverse_step if scheduler._inverse else reference.step)(
            plan, x.astype(np.float64), t, x.astype(np.float64)
        )[0]
        np.testing.assert_array_equal(prev, exact.astype(ml_dtypes.bfloat16))


def test_a_failure_against_an_exact_zero_says_relative_inf() -> None:
    """A value off an exact 0 was reported 'relative 1e+297' (its error over 1e-300): it is
    'relative inf'; against a nonzero exact value the relative error is as before."""
    with pytest.raises(AssertionError, match=r"off by 0\.001 \(relative inf\), 100 x"):
        assert_array_close(np.float32([1e-3]), [0.0])
    with pytest.raises(AssertionError, match=r"off by 0\.5 \(relative 0\.25\)"):
        assert_array_close(np.float32([2.5]), [2.0])


def test_a_config_given_as_the_plan_is_named() -> None:
    """assert_step_close(got, config, ...), the config without its step count, was
    "AttributeError: 'DDIMConfig' object has no attribute 'config'" from inside: a TypeError
    now names plan and what it takes."""
    config = dc.DDIMConfig(clip_sample=False)
    x, m = np.ones((1, 4)), np.full((1, 4), 0.5)
    got = dc.step(dc.make_plan(config, 10), m, 900, x)
    with pytest.raises(TypeError, match=r"plan must be .* got DDIMConfig; pass \(config, num"):
        assert_step_close(got, config, m, 900, x)
    assert_step_close(got, (config, 10), m, 900, x)


def test_timesteps_that_are_not_integers_are_named() -> None:
    """Float timesteps were cast to int64 before the comparison: 900.5 read as 900, so a
    scheduler feeding its model 900.5 (a linspace spacing that forgot to round) passed. A
    fractional timestep fails, named; integral floats (900.0) pass as before."""
    config = dc.DDIMConfig()
    exact = [900.0, 800.0, 700.0, 600.0, 500.0, 400.0, 300.0, 200.0, 100.0, 0.0]
    assert_timesteps_equal(np.array(exact), config, 10)
    with pytest.raises(AssertionError, match=r"timesteps\[1\] = 800\.5 is not an integer"):
        assert_timesteps_equal(np.array([900.0, 800.5, *exact[2:]]), config, 10)


def test_a_failure_prints_the_two_values_apart() -> None:
    """A float64 value off by a relative 5e-9 (float32 sigmas inside a float64 sampler) was
    reported 'x[0] = 2.3252633 but exact DDIM gives 2.3252633': eight digits, the same for
    both. The values are printed with the digits that tell them apart; eight where they do."""
    exact = 2.32526331234
    with pytest.raises(AssertionError) as e:
        assert_array_close(np.array([exact * (1 + 5e-9)]), [exact], what="x")
    found = re.match(r"x\[0\] = (\S+) but exact DDIM gives (\S+):", str(e.value))
    assert found is not None, str(e.value)
    got, want = found.groups()
    assert got != want and float(want) == pytest.approx(exact, rel=1e-10), str(e.value)
    with pytest.raises(AssertionError, match=r"= 2\.5 but exact DDIM gives 2: off by 0\.5"):
        assert_array_close(np.float32([2.5]), [2.0])


def test_the_reference_scheduler_names_a_generator_it_cannot_draw_from() -> None:
    """step(..., eta=1, generator=torch.Generator()), as a diffusers pipeline calls it, was an
    AttributeError ('torch._C.Generator' object has no attribute 'standard_normal'): it is a
    TypeError naming the argument and what to pass instead; a NumPy generator draws."""
    torch = pytest.importorskip("torch")
    scheduler = reference.ReferenceScheduler()
    scheduler.set_timesteps(10)
    x = np.ones((1, 4))
    with pytest.raises(
        TypeError, match=r"generator must be a numpy\.random\.Generator or RandomState .* got torch"
    ):
        scheduler.step(x, 900, x, eta=1.0, generator=torch.Generator())
    a = scheduler.step(x, 900, x, eta=1.0, generator=np.random.default_rng(0)).prev_sample
    b = scheduler.step(x, 900, x, eta=1.0, generator=np.random.default_rng(0)).prev_sample
    np.testing.assert_array_equal(a, b)


def test_the_reference_scheduler_draws_from_a_numpy_random_state() -> None:
    """step(..., eta=1, generator=np.random.RandomState(0)), NumPy's legacy generator, drew
    its noise (it has standard_normal) until the generator check took only
    numpy.random.Generator: then a TypeError. It draws, as the same seed's standard_normal."""
    scheduler = reference.ReferenceScheduler()
    scheduler.set_timesteps(10)
    x = np.ones((1, 4))
    got = scheduler.step(x, 900, x, eta=1.0, generator=np.random.RandomState(0)).prev_sample
    noise = np.random.RandomState(0).standard_normal(x.shape)
    want = scheduler.step(x, 900, x, eta=1.0, variance_noise=noise).prev_sample
    np.testing.assert_array_equal(got, want)
