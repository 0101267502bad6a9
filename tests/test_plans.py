"""Timestep plans: spacings, offsets, custom lists, the inverse mirror (examples and properties)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ddim_core as dc
from ddim_core.backends import registered
from ddim_core.testing import strategies as dst


def test_leading_plan_example() -> None:
    plan = dc.make_plan(dc.DDIMConfig(steps_offset=1), 10)
    assert plan.timesteps == (901, 801, 701, 601, 501, 401, 301, 201, 101, 1)
    assert plan.prev_timesteps == (801, 701, 601, 501, 401, 301, 201, 101, 1, dc.FINAL)


def test_trailing_plan_takes_prev_from_the_plan() -> None:
    plan = dc.make_plan(dc.DDIMConfig(timestep_spacing="trailing"), 3)
    assert plan.timesteps == (999, 666, 332)
    assert plan.prev_timesteps == (666, 332, dc.FINAL)
    stride = dc.make_plan(plan.config.replace(prev_timestep="stride"), 3)
    assert stride.prev_timesteps == (666, 333, dc.FINAL)  # diffusers' 999 - 333 rule


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_plan_and_stride_rules_step_alike_exactly_where_they_agree(spacing: str) -> None:
    """The two prev_timestep rules visit the same timesteps; a step is the same bit for bit
    where they name the same t_prev and differs where they do not; leading: always the same."""
    rng = np.random.default_rng(3)
    for n in (1, 7, 10, 50, 61, 250, 1000):
        plan = dc.make_plan(dc.DDIMConfig(timestep_spacing=spacing, clip_sample=False), n)
        stride = dc.make_plan(plan.config.replace(prev_timestep="stride"), n)
        assert plan.timesteps == stride.timesteps
        agree = [a == b for a, b in zip(plan.prev_timesteps, stride.prev_timesteps, strict=True)]
        if spacing == "leading":
            assert all(agree)
        for t, same in zip(plan.timesteps, agree, strict=True):
            x, out = rng.standard_normal((2, 4))
            a, b = dc.step(plan, out, t, x), dc.step(stride, out, t, x)
            assert np.array_equal(a.prev_sample, b.prev_sample) == same, (n, t)


def test_inverse_plan_mirrors_forward() -> None:
    plan = dc.make_plan(dc.DDIMConfig(timestep_spacing="linspace"), 4)
    assert plan.inverse_timesteps == (0, 333, 666, 999)
    assert plan.inverse_pairs == ((dc.FINAL, 0), (0, 333), (333, 666), (666, 999))


def test_custom_timesteps_and_off_plan_prev() -> None:
    plan = dc.make_plan(dc.DDIMConfig(), timesteps=[950, 500, 20])
    assert plan.pairs == ((950, 500), (500, 20), (20, dc.FINAL))
    assert plan.prev_timestep(700) == 500  # off the plan: the next plan timestep below
    assert plan.prev_timestep(10) == dc.FINAL


@pytest.mark.parametrize("rule", ["plan", "stride"])
@pytest.mark.parametrize(
    ("t", "error", "match"),
    [
        (1000, ValueError, r"t must be in \[0, 999\], got 1000"),
        (-5, ValueError, r"t must be in \[0, 999\], got -5"),
        (2.5, TypeError, "t must be an integer, got 2.5"),
        (None, TypeError, "t must be an integer, got None"),
    ],
)
def test_prev_timestep_of_a_timestep_outside_the_model_is_refused(rule, t, error, match) -> None:  # type: ignore[no-untyped-def]
    """Plan.prev_timestep answered t = 5000 with 900 (4900 by the stride rule) and 2.5 with 0,
    and None with a '<' comparison TypeError from bisect."""
    plan = dc.make_plan(dc.DDIMConfig(prev_timestep=rule), 10)
    with pytest.raises(error, match=match):
        plan.prev_timestep(t)
    assert plan.prev_timestep(np.int64(905)) == (900 if rule == "plan" else 805)


def test_plans_are_cached() -> None:
    c = dc.DDIMConfig()
    assert dc.make_plan(c, 25) is dc.make_plan(c, 25)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_inference_steps": 0}, ValueError, r"must be in \[1, 1000\], got 0"),
        ({"num_inference_steps": 1001}, ValueError, "num_inference_steps must be in .*, got 1001"),
        ({"num_inference_steps": 2.5}, TypeError, "num_inference_steps must be an integer"),
        ({}, ValueError, "exactly one of"),
        ({"num_inference_steps": 5, "timesteps": [3, 2]}, ValueError, "exactly one of"),
        ({"timesteps": [10, 10, 5]}, ValueError, "strictly decreasing"),
        ({"timesteps": [5, 10]}, ValueError, "strictly decreasing"),
        ({"timesteps": [1000, 5]}, ValueError, r"\[0, 1000\); got 1000"),
        ({"timesteps": [5, -1]}, ValueError, "got -1"),
        ({"timesteps": [5.0, 1]}, TypeError, "timesteps must be an integer, got 5.0"),
        ({"timesteps": []}, ValueError, "empty"),
    ],
)
def test_bad_plans_are_named(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        dc.make_plan(dc.DDIMConfig(), **kwargs)


def test_steps_offset_past_the_end_is_rejected() -> None:
    with pytest.raises(ValueError, match="steps_offset=1 moves the first timestep to 1000"):
        dc.make_plan(dc.DDIMConfig(steps_offset=1), 1000)


@pytest.mark.parametrize("spacing", ["leading", "quadratic"])
@pytest.mark.parametrize("offset", [2**63 - 100, 2**63, 10**30])
def test_a_steps_offset_past_int64_is_rejected_not_wrapped(spacing: str, offset: int) -> None:
    """Added in int64, such an offset wrapped round to a negative first timestep (a plan
    (-9223372036854775408, 9223372036854775708) taken without a word) or overflowed in NumPy."""
    config = dc.DDIMConfig(steps_offset=offset, timestep_spacing=spacing)
    with pytest.raises(ValueError, match=f"steps_offset={offset} moves the first timestep"):
        dc.make_plan(config, 2)


@pytest.mark.parametrize(
    ("T", "n", "offset"), [(1000, 10, 0), (1000, 16, 1), (100, 60, 3), (5, 1, 0)]
)
def test_reference_plan_of_the_quadratic_spacing_is_quadratic(T: int, n: int, offset: int) -> None:
    """ddim_core.testing.reference took every spacing but leading and trailing for linspace: a
    quadratic config gave linspace timesteps (999, 888, ..., 0), silently."""
    from ddim_core.testing import reference

    config = dc.DDIMConfig(num_train_timesteps=T, timestep_spacing="quadratic", steps_offset=offset)
    assert reference.make_plan(config, n).pairs == dc.make_plan(config, n).pairs


def test_zero_snr_epsilon_first_step_is_rejected() -> None:
    config = dc.DDIMConfig(rescale_betas_zero_snr=True, timestep_spacing="trailing")
    with pytest.raises(ValueError, match="cannot step at timestep 999: alpha_bar = 0 there"):
        dc.make_plan(config, 10)
    dc.make_plan(config.replace(prediction_type="v_prediction"), 10)


def test_a_plan_whose_first_step_cannot_be_taken_is_left_to_the_step_on_request() -> None:
    """check_first_step=False (what diffusers' schedulers need: img2img enters below 999, an
    inverse never steps down from it): the same cached plan, and the step at 999 alone is
    refused, with the plan check's message; the steps below it are taken."""
    config = dc.DDIMConfig(rescale_betas_zero_snr=True, timestep_spacing="trailing")
    plan = dc.make_plan(config, 4, check_first_step=False)
    assert plan.timesteps == (999, 749, 499, 249)
    assert dc.make_plan(config, 4, check_first_step=False) is plan
    v = config.replace(prediction_type="v_prediction")
    assert dc.make_plan(v, 4, check_first_step=False) is dc.make_plan(v, 4)
    x = np.full((1, 2), 0.5)
    with pytest.raises(ValueError, match="cannot step at timestep 999: alpha_bar = 0 there"):
        dc.step(plan, x, 999, x)
    assert np.isfinite(dc.step(plan, x, 749, x).prev_sample).all()
    eps = np.full((1, 2), 0.3)  # the step up to 999 (alpha_bar 0 there): x_999 = eps
    np.testing.assert_array_equal(dc.inverse_step(plan, eps, 999, x).prev_sample, eps)
    with pytest.raises(TypeError, match="check_first_step must be"):
        dc.make_plan(config, 4, check_first_step="no")  # type: ignore[arg-type]


configs = dst.configs(
    "num_train_timesteps",
    "timestep_spacing",
    "steps_offset",
    "prev_timestep",
    "beta_schedule",
    "rescale_betas_zero_snr",
    prediction_type="v_prediction",
)


@given(config=configs, data=st.data())
def test_plan_properties(config: dc.DDIMConfig, data: st.DataObject) -> None:
    T = config.num_train_timesteps
    n = data.draw(st.integers(1, T))
    try:
        plan = dc.make_plan(config, n)
    except ValueError as e:
        assert "steps_offset" in str(e)
        return
    ts = plan.timesteps
    assert len(ts) == n
    assert all(0 <= t < T for t in ts)
    assert all(a > b for a, b in itertools.pairwise(ts))
    if config.prev_timestep == "plan":
        assert plan.prev_timesteps == (*ts[1:], dc.FINAL)
    assert all(prev < t for t, prev in plan.pairs)
    assert plan.inverse_pairs == tuple((b, a) for a, b in reversed(plan.pairs))
    assert [plan.prev_timestep(t) for t in ts] == list(plan.prev_timesteps)


@given(config=configs)
def test_alpha_bar_in_unit_interval_and_decreasing(config: dc.DDIMConfig) -> None:
    ab = dc.schedule(config).alphas_cumprod
    assert ab[0] <= 1.0 and ab[-1] >= 0.0
    assert (ab[1:] < ab[:-1]).all()
    assert (ab[:-1] > 0).all()
    if not config.rescale_betas_zero_snr:
        assert ab[-1] > 0


def test_zero_snr_rescale_of_a_schedule_that_underflows_stays_finite() -> None:
    """betas near 1 drive alpha_bar to exactly 0 before the last step; rescaling then divided
    0 by 0 (NaN betas, NaN samples from every step). Past the underflow alpha_bar stays 0:
    beta = 1, as the schedule without rescaling has it."""
    config = dc.DDIMConfig(
        beta_start=0.1,
        beta_end=0.999999,
        rescale_betas_zero_snr=True,
        prediction_type="v_prediction",
        timestep_spacing="trailing",
    )
    sched = dc.schedule(config)
    plain = dc.schedule(config.replace(rescale_betas_zero_snr=False))
    assert np.isfinite(sched.betas).all() and np.isfinite(sched.alphas_cumprod).all()
    zero = plain.alphas_cumprod == 0.0
    assert zero.any() and (sched.alphas_cumprod[zero] == 0.0).all()
    assert (sched.betas[1:][zero[:-1]] == 1.0).all()
    plan = dc.make_plan(config, 10)
    x = np.ones((1, 3))
    for t in plan.timesteps:
        x = dc.step(plan, np.zeros_like(x), t, x).prev_sample
    assert np.isfinite(x).all()


@pytest.mark.parametrize(
    "options",
    [
        {"trained_betas": (0.5, 1e-17), "num_train_timesteps": 2},
        {"beta_start": 1e-17, "beta_end": 1e-17, "num_train_timesteps": 10},
    ],
)
def test_zero_snr_rescale_of_a_flat_schedule_is_refused(options) -> None:  # type: ignore[no-untyped-def]
    """alpha_bar_0 == alpha_bar_{T-1}: Algorithm 1 divides by their difference (NaN tables)."""
    config = dc.DDIMConfig(rescale_betas_zero_snr=True, prediction_type="v_prediction", **options)
    with pytest.raises(ValueError, match="rescale_betas_zero_snr=True needs alpha_bar"):
        dc.schedule(config)


def test_an_unpickled_plan_in_another_process_steps_with_its_own_rows(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Plans reach their tables through a process-unique uid; an unpickled plan takes a new
    one (the pickled number is another plan's in the loading process: a 10-step plan read
    there stepped with a 50-step plan's rows)."""
    import pickle
    import subprocess
    import sys

    plan = dc.make_plan(dc.DDIMConfig(), 10)
    path = tmp_path / "plan.pkl"
    path.write_bytes(pickle.dumps(plan))
    code = (
        "import pickle, sys, numpy as np, ddim_core as dc\n"
        "other = dc.make_plan(dc.DDIMConfig(), 50)\n"
        "plan = pickle.loads(open(sys.argv[1], 'rb').read())\n"
        "x, m = np.ones((1, 2)), np.zeros((1, 2))\n"
        "print(repr(float(dc.step(plan, m, plan.timesteps[0], x)[0][0, 0])))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
    )
    want = float(dc.step(plan, np.zeros((1, 2)), plan.timesteps[0], np.ones((1, 2)))[0][0, 0])
    assert float(run.stdout) == want
    copied = pickle.loads(pickle.dumps(plan))
    assert copied.uid != plan.uid and copied.timesteps == plan.timesteps
    assert registered(copied.uid) is copied and registered(plan.uid) is plan


def test_where_the_stride_rule_leaves_the_trailing_and_linspace_plans() -> None:
    """What README and docs/accuracy.md say of diffusers' stride rule: it leaves the plan for
    trailing spacing exactly where N does not divide T, and for linspace at every N from 2 to
    T - 1, dividing or not (10 steps: 999 -> 899, where the plan goes to 888)."""
    T = 1000
    for spacing, leaves in (
        ("trailing", lambda n: T % n != 0),
        ("linspace", lambda n: 1 < n < T),
    ):
        config = dc.DDIMConfig(timestep_spacing=spacing)
        for n in range(1, T + 1):
            plan = dc.make_plan(config, n)
            stride = dc.make_plan(config.replace(prev_timestep="stride"), n)
            assert (plan.pairs != stride.pairs) == leaves(n), (spacing, n)
    linspace = dc.DDIMConfig(timestep_spacing="linspace")
    assert dc.make_plan(linspace, 10).pairs[0] == (999, 888)
    assert dc.make_plan(linspace.replace(prev_timestep="stride"), 10).pairs[0] == (999, 899)


def test_leading_rules_agree_except_where_the_stride_reaches_the_offset() -> None:
    """What README and docs/accuracy.md say of the two t_prev rules with leading spacing:
    they agree for every N unless T // N <= steps_offset, where only the last step differs
    (the stride rule to steps_offset - T // N, the plan to the final level), at the same
    level (alpha_bar_0, set_alpha_to_one=False) only where the stride lands on t = 0."""
    for offset in (0, 1, 2, 5):
        config = dc.DDIMConfig(steps_offset=offset, set_alpha_to_one=False)
        for n in range(1, 1001):
            try:
                plan = dc.make_plan(config, n)
            except ValueError:  # leading with an offset cannot take every N
                continue
            stride = dc.make_plan(config.replace(prev_timestep="stride"), n)
            if 1000 // n > offset:
                assert plan.prev_timesteps == stride.prev_timesteps, n
            else:
                assert plan.prev_timesteps[:-1] == stride.prev_timesteps[:-1], n
                assert (plan.prev_timesteps[-1], stride.prev_timesteps[-1]) == (
                    -1,
                    offset - 1000 // n,
                ), n
                levels = [p.schedule.alpha_bar(p.prev_timesteps[-1]) for p in (plan, stride)]
                assert (levels[0] == levels[1]) == (1000 // n == offset), (offset, n)


@pytest.mark.parametrize(
    ("t", "error", "match"),
    [
        (1000, ValueError, r"t must be in \[-1, 999\], got 1000"),
        (-2, ValueError, r"t must be in \[-1, 999\], got -2"),
        (2.5, TypeError, "t must be an integer, got 2.5"),
    ],
)
def test_schedule_alpha_bar_outside_the_table_is_refused(t, error, match) -> None:  # type: ignore[no-untyped-def]
    """Schedule.alpha_bar(1000) and (2.5) were NumPy IndexErrors, (-2) the final level."""
    sched = dc.schedule(dc.DDIMConfig())
    with pytest.raises(error, match=match):
        sched.alpha_bar(t)
    assert (sched.alpha_bar(-1), sched.alpha_bar(np.int64(999))) == (1.0, sched.alphas_cumprod[-1])


@pytest.mark.parametrize(
    ("timesteps", "error", "match"),
    [
        ([0, 1000], ValueError, r"timesteps must be in \[-1, 999\], got 1000"),
        ([-7], ValueError, r"timesteps must be in \[-1, 999\], got -7"),
        ([1001], ValueError, r"timesteps must be in \[-1, 999\], got 1001"),
        ([1.5], TypeError, "timesteps must be integers, got dtype float64"),
        ([True], TypeError, "timesteps must be integers, got dtype bool"),
    ],
)
def test_schedule_levels_outside_the_table_are_refused(timesteps, error, match) -> None:  # type: ignore[no-untyped-def]
    """Schedule.levels as Schedule.alpha_bar: t = 1000 and t = -7 gave the final level 1.0
    without a word, 1001 and 1.5 NumPy IndexErrors, True alpha_bar_1."""
    sched = dc.schedule(dc.DDIMConfig())
    with pytest.raises(error, match=match):
        sched.levels(np.array(timesteps))
    found = sched.levels(np.array([[-1, 0], [999, 5]]))
    assert found.dtype == np.float64
    assert found.tolist() == [[1.0, sched.alpha_bar(0)], [sched.alpha_bar(999), sched.alpha_bar(5)]]


def test_schedule_from_a_table_that_reaches_zero_has_finite_betas() -> None:
    """A zero terminal SNR table ending in two zeros gave beta = 0 / 0 = NaN (and a warning)."""
    with np.errstate(all="raise"):
        sched = dc.Schedule.from_alphas_cumprod([0.9, 0.5, 0.0, 0.0])
    assert sched.betas.tolist() == pytest.approx([0.1, 1 - 0.5 / 0.9, 1.0, 1.0])


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((1000, 0), ValueError, r"num_inference_steps must be in \[1, 1000\], got 0"),
        ((10, 20), ValueError, r"num_inference_steps must be in \[1, 10\], got 20"),
        ((0, 1), ValueError, "T must be >= 1, got 0"),
        ((10.5, 3), TypeError, "T must be an integer, got 10.5"),
    ],
)
def test_quadratic_timesteps_outside_its_domain_is_refused(args, error, match) -> None:  # type: ignore[no-untyped-def]
    """quadratic_timesteps(1000, 0) was [], (10, 20) timesteps up to 19 of a 10-step model,
    (10.5, 3) floats [0.0, 2.0, 8.0]."""
    from ddim_core.plans import quadratic_timesteps

    with pytest.raises(error, match=match):
        quadratic_timesteps(*args)


@pytest.mark.parametrize("config", [None, {"timestep_spacing": "trailing"}])
def test_spaced_timesteps_of_something_not_a_config_is_refused(config) -> None:  # type: ignore[no-untyped-def]
    """spaced_timesteps(None, 4) was AttributeError: 'NoneType' object has no attribute
    'num_train_timesteps' (a dict of options the same)."""
    with pytest.raises(
        TypeError, match=f"config must be a DDIMConfig, got {type(config).__name__}"
    ):
        dc.spaced_timesteps(config, 4)


def test_schedule_from_a_table_is_read_only_like_a_configs() -> None:
    """Schedule.from_alphas_cumprod handed out writable tables (a config's are read-only):
    a write into them changed `alpha_bar` and `add_noise` but not the cached
    `dc.alphas_cumprod(schedule)`, so the two disagreed from then on."""
    sched = dc.Schedule.from_alphas_cumprod([0.9, 0.5, 0.1])
    assert dc.alphas_cumprod(sched).tolist() == [0.9, 0.5, 0.1]
    for table in (sched.alphas_cumprod, sched.betas):
        assert not table.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            table[0] = 0.2
    assert sched.alpha_bar(0) == float(dc.alphas_cumprod(sched)[0]) == 0.9


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_stride_rule_takes_only_its_own_spacings_timesteps(spacing: str) -> None:
    """prev_timestep="stride" with custom timesteps took t - T // N between them: timesteps
    [900, 500, 100] stepped 900 -> 567, then the model at 500 on a sample at level 567
    (Align Your Steps' [999, 845, ...]: 999 -> 899), silently. The stride is diffusers' rule
    for its own spacings: those timesteps (functional.Scheduler passes them) still take it."""
    config = dc.DDIMConfig(timestep_spacing=spacing, prev_timestep="stride")
    for custom in ([900, 500, 100], [999, 845, 730, 587, 443, 310, 193, 116, 53, 13]):
        with pytest.raises(ValueError, match=r'prev_timestep="stride".*prev_timestep="plan"'):
            dc.make_plan(config, timesteps=custom)
        assert dc.make_plan(config.replace(prev_timestep="plan"), timesteps=custom).timesteps
    for n in (1, 3, 10, 61):
        spaced = dc.make_plan(config, n)
        assert dc.make_plan(config, timesteps=spaced.timesteps).pairs == spaced.pairs
    # where every stride lands on the next timestep, the two rules are one
    assert dc.make_plan(config, timesteps=[998, 665, 332]).prev_timesteps == (665, 332, -1)


def test_schedule_from_a_torch_table_of_any_kind() -> None:
    """Schedule.from_alphas_cumprod takes 'another library's table', but a torch table that
    requires grad was torch's RuntimeError "Can't call numpy() on Tensor that requires grad",
    a bfloat16 one "TypeError: Got unsupported ScalarType BFloat16"."""
    torch = pytest.importorskip("torch")
    ab = dc.alphas_cumprod(dc.DDIMConfig())
    given = torch.tensor(ab, requires_grad=True)
    assert np.array_equal(dc.Schedule.from_alphas_cumprod(given).alphas_cumprod, ab)
    half = torch.tensor(ab, dtype=torch.bfloat16)
    assert np.array_equal(
        dc.Schedule.from_alphas_cumprod(half).alphas_cumprod, half.float().numpy().astype(float)
    )


@pytest.mark.parametrize(
    ("table", "match"),
    [
        (np.full((10, 100), 0.5), r"alphas_cumprod must be 1-D, got shape \(10, 100\)"),
        (0.5, r"alphas_cumprod must be 1-D, got shape \(\)"),
        ([[0.9, 0.8], [0.7]], "alphas_cumprod must be a 1-D table of numbers: "),
        ([0.9, "a"], "alphas_cumprod must be a 1-D table of numbers: "),
    ],
)
def test_schedule_from_a_table_that_is_not_one_is_refused(table, match) -> None:  # type: ignore[no-untyped-def]
    """A (10, 100) table was read as 1000 timesteps and a number as a 1-step table, without a
    word; a ragged list or a string in it was NumPy's ValueError, naming no argument."""
    with pytest.raises(ValueError, match=match):
        dc.Schedule.from_alphas_cumprod(table)


@pytest.mark.parametrize("flag", [1, "no", None])
def test_schedule_from_a_table_refuses_a_set_alpha_to_one_that_is_not_a_bool(flag) -> None:  # type: ignore[no-untyped-def]
    """set_alpha_to_one="no" (or 1, None) was taken by truth value: "no" gave the final
    level 1, as True does."""
    with pytest.raises(TypeError, match=f"set_alpha_to_one must be True or False, got {flag!r}"):
        dc.Schedule.from_alphas_cumprod([0.9, 0.5], set_alpha_to_one=flag)


def test_custom_timesteps_as_a_tensor_or_an_unordered_collection() -> None:
    """diffusers' `scheduler.timesteps` (an int64 tensor) as custom timesteps was refused with
    'timesteps must be an integer, got tensor(900)'; a dict or set passed, its iteration order
    taken as the plan's."""
    torch = pytest.importorskip("torch")
    config = dc.DDIMConfig()
    want = dc.make_plan(config, timesteps=[900, 500, 100])
    got = dc.make_plan(config, timesteps=torch.tensor([900, 500, 100]))
    assert got.timesteps == want.timesteps and got.prev_timesteps == want.prev_timesteps
    with pytest.raises(TypeError, match=r"timesteps must be an integer, got np.float32\(900.0\)"):
        dc.make_plan(config, timesteps=torch.tensor([900.0, 500.0]))
    for unordered in ({900: 0, 500: 0}, {900, 500}, frozenset({900, 500})):
        with pytest.raises(TypeError, match="timesteps must be a sequence of integers"):
            dc.make_plan(config, timesteps=unordered)


def test_custom_timesteps_traced_by_jax_jit_are_a_clear_error() -> None:
    """A plan is configuration read on the host: custom timesteps traced by jax.jit failed
    inside JAX with TracerArrayConversionError (from `np.asarray` of the tracer) instead of
    naming the argument and what to do."""
    jax = pytest.importorskip("jax")
    ts = jax.numpy.asarray([999, 500])
    config = dc.DDIMConfig()
    with pytest.raises(TypeError, match=r"timesteps are traced by jax\.jit.*static"):
        jax.jit(lambda ts: dc.make_plan(config, timesteps=ts).num_inference_steps)(ts)
    assert dc.make_plan(config, timesteps=ts).timesteps == (999, 500)  # concrete: read


def test_configuration_the_host_cannot_read_names_its_argument() -> None:
    """Custom timesteps or a table on torch's meta device (shapes, no values) raised torch's
    NotImplementedError 'Cannot copy out of meta tensor; no data!' from inside the host read,
    and one on an array-api-strict device other than its CPU a RuntimeError, naming neither
    the argument nor its device."""
    torch = pytest.importorskip("torch")
    strict = pytest.importorskip("array_api_strict")
    config = dc.DDIMConfig()
    device1 = strict.Device("device1")
    for timesteps, device in (
        (torch.tensor([999, 500], device="meta"), "'meta'"),
        (strict.asarray([999, 500], device=device1), r"\"array_api_strict\.Device\('device1'\)\""),
    ):
        with pytest.raises(ValueError, match=f"timesteps is on device {device}, whose values the"):
            dc.make_plan(config, timesteps=timesteps)
    table = torch.tensor([0.9, 0.5], device="meta")
    with pytest.raises(
        ValueError, match="alphas_cumprod must be a 1-D table of numbers: it is on device 'meta'"
    ):
        dc.Schedule.from_alphas_cumprod(table)
    # trained_betas on the meta device: torch's RuntimeError 'Tensor.item() cannot be called
    # on meta tensors', from reading the betas one by one
    with pytest.raises(ValueError, match="trained_betas is on device 'meta', whose values the"):
        dc.DDIMConfig(trained_betas=torch.full((1000,), 0.01, device="meta"))


def test_a_level_that_underflowed_to_0_is_not_blamed_on_zero_snr() -> None:
    """Linear betas to 0.9 over 10000 train timesteps (no beta of 1) take alpha_bar to 0.0 in
    float64 from timestep 5555: epsilon steps from there (the plan's first-step check, a step,
    an inverse step leaving such a level) blamed 'zero terminal SNR:
    rescale_betas_zero_snr=True, or a last trained beta of 1', neither of which the config
    has. They say the level underflowed; a zero-SNR config keeps its message."""
    config = dc.DDIMConfig(num_train_timesteps=10_000, beta_end=0.9)
    assert float(dc.schedule(config).alphas_cumprod[5555]) == 0.0
    underflow = r"alpha_bar = 0 there \(alpha_bar underflowed to 0 in float64: the schedule's "
    with pytest.raises(ValueError, match="cannot step at timestep 9000: " + underflow):
        dc.make_plan(config, 10)
    plan = dc.make_plan(config, 10, check_first_step=False)
    x = np.zeros((1, 2))
    with pytest.raises(ValueError, match=underflow):
        dc.step(plan, x, 9000, x)
    with pytest.raises(ValueError, match=r"at t_prev = 7000, the level .*underflowed to 0"):
        dc.inverse_step(plan, x, 8000, x)
    zero_snr = dc.DDIMConfig(rescale_betas_zero_snr=True, timestep_spacing="trailing")
    with pytest.raises(ValueError, match=r"\(zero terminal SNR: rescale_betas_zero_snr=True"):
        dc.make_plan(zero_snr, 10)


ZERO_SNR_V = dc.DDIMConfig(
    rescale_betas_zero_snr=True, timestep_spacing="trailing", prediction_type="v_prediction"
)


def _as_trained_betas(config: dc.DDIMConfig) -> dc.DDIMConfig:
    """The same schedule given as trained_betas (rescale_betas_zero_snr off)."""
    betas = tuple(dc.schedule(config).betas.tolist())
    return config.replace(rescale_betas_zero_snr=False, trained_betas=betas)


def test_a_zero_snr_table_given_as_trained_betas_is_the_same_scheduler() -> None:
    """rescale_betas_zero_snr=True ends its betas with 1.0; the same betas given as
    trained_betas were refused (each beta had to be in (0, 1)), where diffusers takes them."""
    given = _as_trained_betas(ZERO_SNR_V)
    assert given.trained_betas is not None and given.trained_betas[-1] == 1.0
    ours, theirs = dc.schedule(given), dc.schedule(ZERO_SNR_V)
    assert np.array_equal(ours.alphas_cumprod, theirs.alphas_cumprod)
    assert ours.final_alpha_cumprod == theirs.final_alpha_cumprod
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((2, 3))
    for eta in (0.0, 1.0):
        a, b = dc.make_plan(given, 10), dc.make_plan(ZERO_SNR_V, 10)
        assert a.pairs == b.pairs
        x = y = rng.standard_normal((2, 3))
        for t in a.timesteps:
            out, z = 0.3 * x - 0.1, rng.standard_normal(x.shape)
            x = dc.step(a, out, t, x, eta=eta, noise=z).prev_sample
            y = dc.step(b, out, t, y, eta=eta, noise=z).prev_sample
            assert np.array_equal(x, y)
    x = y = x0
    for t in a.inverse_timesteps:
        x = dc.inverse_step(a, 0.3 * x, t, x).prev_sample
        y = dc.inverse_step(b, 0.3 * y, t, y).prev_sample
        assert np.array_equal(x, y)
    for config in (ZERO_SNR_V, given):  # epsilon cannot leave alpha_bar = 0: the same error
        with pytest.raises(ValueError, match="cannot step at timestep 999: alpha_bar = 0 there"):
            dc.make_plan(config.replace(prediction_type="epsilon"), 10)


@pytest.mark.parametrize(
    ("betas", "match"),
    [
        ((1.0, 0.5), r"trained_betas\[0\]=1.0: only the last beta may be 1"),
        ((0.5, 1.0, 1.0), r"trained_betas\[1\]=1.0: only the last beta may be 1"),
        ((0.5, 0.0), r"trained_betas\[1\]=0.0"),
        ((0.5, 1.5), r"trained_betas\[1\]=1.5"),
        ((0.5, -0.1), r"trained_betas\[1\]=-0.1"),
        ((0.5, float("nan")), r"trained_betas\[1\]=nan"),
    ],
)
def test_trained_betas_of_one_before_the_last_are_refused(betas, match) -> None:  # type: ignore[no-untyped-def]
    """A beta of 1 before the last makes every later level alpha_bar = 0 (several levels of
    zero SNR, which no model is trained on); betas outside (0, 1] are not probabilities."""
    with pytest.raises(ValueError, match=match):
        dc.DDIMConfig(num_train_timesteps=len(betas), trained_betas=betas)
