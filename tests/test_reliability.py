"""Reliability: hostile input gets a clear error or a correct finite result, never a crash, a
silent NaN, a wrong result or a write outside a buffer.

Three parts: the reproductions of issue 13 (each a test), out= buffers with guard bytes after
them, and Hypothesis over every entry point with hostile arguments drawn from one pool,
asserting "a TypeError/ValueError naming the argument, or the NumPy float64 reference's
result". The number of hostile cases each entry point tries is its `max_examples` (derandomized
in CI), listed in HOSTILE_CASES.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import ddim_core as dc
from ddim_core import backends, builtins, functional
from ddim_core.testing import reference

torch = pytest.importorskip("torch")

CONFIG = dc.DDIMConfig()
PLAN = dc.make_plan(CONFIG, 10)
ZERO_SNR = dc.DDIMConfig(rescale_betas_zero_snr=True, timestep_spacing="trailing")


def _clear(exc: BaseException, *names: str) -> None:
    """A TypeError/ValueError whose message names one of `names`."""
    assert isinstance(exc, TypeError | ValueError), repr(exc)
    text = str(exc)
    assert any(n in text for n in names), f"{text!r} names none of {names}"


# --- memory safety ------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _numba_at_every_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """out= runs the fused kernels, numba included, at these small sizes."""
    monkeypatch.setattr(builtins, "NUMBA_MIN_ELEMENTS", 0)


def _guarded(lib: str, n: int, guard: int = 64) -> tuple[Any, Any]:
    """A buffer of n elements with `guard` sentinel elements after it: (whole, view)."""
    if lib == "numpy":
        whole = np.full(n + guard, 7.0, dtype=np.float32)
    else:
        whole = torch.full((n + guard,), 7.0, dtype=torch.float32)
    return whole, whole[:n]


@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_out_buffers_never_write_past_their_end(lib: str) -> None:
    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    m = np.random.default_rng(1).standard_normal((4, 8)).astype(np.float32)
    if lib == "torch":
        x, m = torch.from_numpy(x), torch.from_numpy(m)
    (w1, v1), (w2, v2) = _guarded(lib, 32), _guarded(lib, 32)
    got = dc.step(PLAN, m, 900, x, out=(v1.reshape(4, 8), v2.reshape(4, 8)))
    want = reference.step(PLAN, np.asarray(m, np.float64), 900, np.asarray(x, np.float64))
    np.testing.assert_allclose(np.asarray(got.prev_sample), want[0], rtol=1e-5, atol=1e-5)
    for whole in (w1, w2):
        assert np.all(np.asarray(whole[32:]) == 7.0)  # the guard bytes are untouched
    # wrong shapes, one tensor, other dtypes, other libraries, overlaps, read-only: refused
    bad: list[tuple[Any, ...]] = [
        (v1[:4], v2[:4]),  # too small (was a SIGSEGV)
        (w1, w2),  # too large
    ]
    for out in bad:
        with pytest.raises(ValueError, match=r"out\[0\] has shape"):
            dc.step(PLAN, m, 900, x, out=out)
    with pytest.raises(TypeError, match="out must be a pair"):
        dc.step(PLAN, m, 900, x, out=v1[:32].reshape(4, 8))  # one array (was unpacked)
    assert np.all(np.asarray(w1[32:]) == 7.0)


def test_out_buffer_issue_reproductions() -> None:
    x = torch.ones(64, 64)
    with pytest.raises(ValueError, match=r"out\[0\] has shape \(4,\)"):
        dc.step(PLAN, x, 900, x, out=(torch.empty(4), torch.empty(4)))
    g = torch.full((12,), 7.0)
    x3 = torch.ones(2, 3)
    with pytest.raises(TypeError, match="out must be a pair"):
        dc.step(PLAN, x3, 900, x3, out=g[:6].reshape(2, 3))
    assert torch.all(g == 7.0)
    with pytest.raises(ValueError, match="dtype"):
        dc.step(PLAN, x3, 900, x3, out=(torch.empty(2, 3, dtype=torch.float64),) * 2)
    big = torch.empty(4, 6)
    with pytest.raises(ValueError, match="shares memory with sample"):
        dc.step(PLAN, x3, 900, big[:2, :3], out=(big[1:3, 2:5], torch.empty(2, 3)))
    with pytest.raises(ValueError, match=r"out\[0\] and out\[1\] share memory"):
        buf = torch.empty(2, 3)
        dc.step(PLAN, x3, 900, x3.clone(), out=(buf, buf))
    xn = np.ones((2, 3))
    with pytest.raises(TypeError, match=r"out\[0\]: .* torch"):
        dc.step(PLAN, xn, 900, xn, out=(torch.empty(2, 3), torch.empty(2, 3)))
    ro = np.empty((2, 3))
    ro.setflags(write=False)
    with pytest.raises(ValueError, match="read-only"):
        dc.step(PLAN, xn, 900, xn, out=(ro, np.empty((2, 3))))


# --- silently wrong results -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.tensor([-1, 900]),
        lambda: torch.tensor(-5),
        lambda: np.array([1000, 900]),
        pytest.param(lambda: pytest.importorskip("jax.numpy").asarray([1000, 900]), id="jax"),
    ],
)
def test_timestep_arrays_out_of_range_are_errors(make) -> None:  # type: ignore[no-untyped-def]
    t = make()
    lib = type(t).__module__.split(".")[0]
    if lib == "torch":
        x = torch.ones(2, 3)
    elif lib == "numpy":
        x = np.ones((2, 3))
    else:
        x = pytest.importorskip("jax.numpy").ones((2, 3))
    with pytest.raises(ValueError, match="outside"):
        dc.step(PLAN, x, t, x)


def test_dask_timestep_out_of_range_fails_at_compute() -> None:
    da = pytest.importorskip("dask.array")
    x = da.ones((2, 3))
    lazy = dc.step(PLAN, x, da.from_array(np.array([1000, 900])), x).prev_sample
    with pytest.raises(ValueError, match="outside"):
        lazy.compute()


def test_device_timestep_arrays_are_checked_per_step_not_per_plan() -> None:
    """inverse_step with prediction_type="sample" cannot step up to the plan's first timestep
    (from the clean level); a timestep array the host cannot read (Dask, JAX under jit, a GPU
    tensor) refused every step for it, the valid ones too. Now the valid steps are taken and
    the invalid one fails where the array is checked (at compute for Dask)."""
    da = pytest.importorskip("dask.array")
    config = dc.DDIMConfig(prediction_type="sample", clip_sample=False)
    plan = dc.make_plan(config, 10)
    x, m = np.ones((2, 3)), np.full((2, 3), 0.5)
    t = plan.inverse_timesteps[3]
    want = dc.inverse_step(plan, m, t, x).prev_sample
    dm, dx = da.from_array(m), da.from_array(x)
    lazy = dc.inverse_step(plan, dm, da.from_array(np.array([t, t])), dx)
    np.testing.assert_allclose(lazy.prev_sample.compute(), want)
    bad = dc.inverse_step(plan, dm, da.from_array(np.array([t, 0])), dx)
    with pytest.raises(ValueError, match="cannot step at timestep 0: alpha_bar = 1"):
        bad.prev_sample.compute()
    with pytest.raises(RuntimeError, match="cannot step at timestep 0"):  # torch's device assert
        backends.check_excluded_on_device(torch.tensor([t, 0]), (0,), "cannot step at timestep 0")
    jax, jnp = pytest.importorskip("jax"), pytest.importorskip("jax.numpy")
    jitted = jax.jit(lambda m, t, x: dc.inverse_step(plan, m, t, x).prev_sample)
    np.testing.assert_allclose(jitted(jnp.asarray(m), jnp.asarray(t), jnp.asarray(x)), want)


def test_zero_snr_refusal_is_not_bypassed_by_arrays() -> None:
    plan = dc.make_plan(ZERO_SNR.replace(prediction_type="v_prediction"), 10)
    eps_plan = dc.Plan(ZERO_SNR, plan.schedule, plan.timesteps, plan.prev_timesteps)
    x = torch.ones(2, 3)
    with pytest.raises(ValueError, match="zero terminal SNR"):
        dc.step(eps_plan, x, torch.tensor([999, 900]), x)


def test_zero_d_sample_with_an_array_timestep_keeps_its_shape() -> None:
    x = np.ones(())
    for t in (np.array(900), np.array([900])):
        got = dc.step(PLAN, x, t, x)
        assert got.prev_sample.shape == () and np.isfinite(got.prev_sample)


def test_configs_that_could_only_give_nan_are_refused() -> None:
    with pytest.raises(ValueError, match="num_train_timesteps >= 2"):
        dc.DDIMConfig(num_train_timesteps=1, rescale_betas_zero_snr=True)
    for n in (10**12, 2**63, 10**30):
        with pytest.raises(ValueError, match="num_train_timesteps must be in"):
            dc.DDIMConfig(num_train_timesteps=n)
    for dtype in (np.int64, np.bool_, np.complex128):
        with pytest.raises(TypeError, match="real floating dtype"):
            dc.betas(CONFIG, dtype=dtype)
    with pytest.raises(TypeError, match="xp must be"):
        dc.alphas_cumprod(CONFIG, xp="numpy")
    with pytest.raises(ValueError, match="device='cuda'"):
        dc.betas(CONFIG, device="cuda")


def test_config_text_and_files_are_unambiguous_and_bounded(tmp_path) -> None:  # type: ignore[no-untyped-def]
    for text in ("[1, 2]", "123", "null", "", '"other/dir"'):
        with pytest.raises(ValueError, match="from_json text"):
            dc.DDIMConfig.from_json(text)
    assert dc.DDIMConfig.from_json('\ufeff{"steps_offset": 1}').steps_offset == 1
    with pytest.raises(ValueError, match="nests deeper"):
        dc.DDIMConfig.from_json('{"a":' * 100_000)
    with pytest.raises(ValueError, match="integer of 5000 digits"):
        dc.DDIMConfig.from_json('{"steps_offset": ' + "9" * 5000 + "}")
    with pytest.raises(TypeError, match="use from_file"):
        dc.DDIMConfig.from_json(tmp_path / "scheduler_config.json")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="trained_betas"):
        dc.DDIMConfig(num_train_timesteps=2, trained_betas=[[0.1], [0.2]])  # type: ignore[list-item]


def test_loop_and_model_arguments_are_checked() -> None:
    x = np.zeros((3, 2))
    gm = dc.GaussianMixture.create([[0.0, 0.0]], [1.0], CONFIG)
    cases: list[tuple[Any, str]] = [
        (lambda: dc.sample(lambda y, t: None, x, CONFIG, 5), "model output"),
        (lambda: dc.sample(gm, x, CONFIG, 5, eta="1"), "eta"),  # type: ignore[arg-type]
        (lambda: dc.sample(gm, x, CONFIG, 5, eta=1.0, noise=[x]), "noise"),
        (lambda: dc.invert(gm, x, CONFIG, 5, history=1.5), "history"),  # type: ignore[arg-type]
        (lambda: dc.sample(gm, x, CONFIG, 5, callback=5), "callback"),  # type: ignore[arg-type]
        (lambda: dc.step(PLAN, None, 900, x), "model_output"),
        (lambda: dc.step(PLAN, x, 900, None), "sample"),
        (lambda: gm(x, -1), "t=-1"),
        (lambda: gm(x, True), "t must be"),
        (lambda: gm(x, 1000), "t=1000"),
        (lambda: gm(np.zeros(2), 5), "x must be"),
        (lambda: gm(x.astype(int), 5), "x must be"),
        (lambda: dc.GaussianMixture.create([[1e308]], [1.0], CONFIG), "means"),
        (lambda: dc.GaussianMixture.create([[0.0]], [1.0], CONFIG, [1e308]), "weights"),
        (lambda: dc.GaussianMixture.create([[0.0], [1.0, 2.0]], [1, 1], CONFIG), "means"),
    ]
    for call, name in cases:
        with pytest.raises((TypeError, ValueError)) as info:
            call()
        _clear(info.value, name)


@pytest.mark.parametrize(
    ("stds", "weights", "message"),
    [
        ([0.3, 0.0], None, r"stds must be > 0, got \[0\.3, 0\.0\]"),
        ([0.3, -0.3], None, r"stds must be > 0, got \[0\.3, -0\.3\]"),
        ([0.3, 0.3], [1.0, 0.0], r"weights must be > 0, got \[1\.0, 0\.0\]"),
        ([0.3, 0.3], [1.0], r"weights must be K = 2 numbers, got \[1\.0\]"),
        ([0.3], None, r"means must be \(K, D\) and stds K numbers; got means of shape \(2, 1\)"),
    ],
)
def test_a_mixture_s_bad_parameter_is_named_with_its_values(stds, weights, message) -> None:
    """A zero or negative std was 'means must be (K, D) and stds K positive numbers; got means
    of shape (2, 1) and stds of shape (2,)': shapes that agree, and not the value at fault."""
    with pytest.raises(ValueError, match=f"^{message}"):
        dc.GaussianMixture.create([[-2.0], [2.0]], stds, CONFIG, weights)


def test_functional_cannot_be_mismatched() -> None:
    s = functional.Scheduler(CONFIG, 5)
    x = np.zeros((1, 3))
    state = functional.init(s, like=x)
    for eta, error in (
        (math.nan, ValueError),
        (-1.0, ValueError),
        ("1", TypeError),
        (True, TypeError),
    ):
        with pytest.raises(error, match="eta"):
            functional.Scheduler(CONFIG, 5, eta=eta)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="model_output has shape"):
        functional.step(s, state, np.zeros((2, 3)), x)
    with pytest.raises(TypeError, match="real floating"):
        functional.step(s, state, x, np.zeros((1, 3), dtype=int))


def test_kdiffusion_hostile_sigmas_and_outputs() -> None:
    import ddim_kdiffusion as dk

    x = np.ones((2, 3))
    gm_like = lambda y, s: 0.5 * y  # noqa: E731
    with pytest.raises(ValueError, match="overflows"):
        dk.sample_ddim(gm_like, x, np.array([1e200, 1e160, 0.0]), disable=True)
    with pytest.raises(ValueError, match="shaped like x"):
        dk.sample_ddim(lambda y, s: np.zeros((1, 3)), x, np.array([1.0, 0.5, 0.0]), disable=True)
    with pytest.raises(TypeError, match="extra_args"):
        dk.sample_ddim(gm_like, x, np.array([1.0, 0.0]), extra_args=[1], disable=True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="zero terminal SNR"):
        dk.get_sigmas_ddim(ZERO_SNR.replace(prediction_type="v_prediction"), 10, xp=np)
    increasing = np.linspace(0.1, 0.9, 100)
    with pytest.raises(ValueError, match="must not increase"):
        dk.get_sigmas_ddim(increasing, 10)
    with pytest.raises(ValueError, match="1-D table"):
        dk.get_sigmas_ddim(np.ones((10, 10)) * 0.5, 5)


# --- Hypothesis: every entry point, hostile arguments from one pool ------------------------------

HOSTILE = st.sampled_from(
    [
        None,
        True,
        "1",
        b"x",
        math.nan,
        math.inf,
        -math.inf,
        -1,
        -1.5,
        10**30,
        1e300,
        2**63,
        [],
        [1, 2],
        {},
        object(),
        np.array([]),
        np.zeros((0, 3)),
        np.ones((2, 3), dtype=np.int64),
        np.ones((2, 3), dtype=np.complex128),
        np.full((2, 3), np.nan),
        np.ones((5, 7)),
        torch.ones(2, 3),
        np.array(True),
    ]
)
GOOD_X = np.random.default_rng(0).standard_normal((2, 3))
GOOD_M = np.random.default_rng(1).standard_normal((2, 3))
HOSTILE_CASES = {}  # entry point -> examples tried (recorded for the closing note)


def _hostile_test(name: str, examples: int = 60):  # type: ignore[no-untyped-def]
    HOSTILE_CASES[name] = examples
    return settings(max_examples=examples, deadline=None)


@_hostile_test("step")
@given(
    arg=st.sampled_from(["model_output", "timestep", "sample", "eta", "noise", "out"]),
    value=HOSTILE,
)
@example(arg="noise", value=np.full((2, 3), np.nan))  # the dev profile's: NaN where exact is
def test_step_hostile(arg: str, value: Any) -> None:
    kwargs: dict[str, Any] = {
        "model_output": GOOD_M,
        "timestep": 900,
        "sample": GOOD_X,
        "eta": 0.5,
        "noise": GOOD_M,
    }
    kwargs[arg] = value
    try:
        got = dc.step(
            PLAN,
            kwargs["model_output"],
            kwargs["timestep"],
            kwargs["sample"],
            eta=kwargs["eta"],
            noise=kwargs["noise"],
            out=kwargs.get("out"),
        )
    except (TypeError, ValueError) as e:
        _clear(e, arg, "eta", "noise", "timestep", "out", "sample", "model_output")
        return
    # accepted: then it must be the reference's result (NaN where the reference's is: NaN
    # noise at eta > 0), where the sample and model output are finite
    x, m = np.asarray(kwargs["sample"]), np.asarray(kwargs["model_output"])
    t, eta = int(np.asarray(kwargs["timestep"]).reshape(-1)[0]), float(kwargs["eta"])
    want = reference.step(PLAN, m, t, x, eta=eta, noise=np.asarray(kwargs["noise"]))
    ok = np.isfinite(x).all() and np.isfinite(m).all()
    got_prev = np.asarray(got.prev_sample)
    assert not ok or np.allclose(got_prev, want[0], rtol=1e-6, atol=1e-9, equal_nan=True)


@_hostile_test("inverse_step / add_noise / get_velocity")
@given(
    fn=st.sampled_from(["inverse_step", "add_noise", "get_velocity"]),
    arg=st.sampled_from(["a", "t", "b"]),
    value=HOSTILE,
)
def test_other_steps_hostile(fn: str, arg: str, value: Any) -> None:
    a, t, b = GOOD_M, 900, GOOD_X
    a, t, b = (value if arg == k else v for k, v in (("a", a), ("t", t), ("b", b)))
    try:
        if fn == "inverse_step":
            got = dc.inverse_step(PLAN, a, t, b).prev_sample
            want = reference.inverse_step(PLAN, np.asarray(a), 900, np.asarray(b))[0]
        else:
            got = getattr(dc, fn)(CONFIG, a, b, t)
            ab = PLAN.schedule.alpha_bar(900)
            x0, eps = np.asarray(a), np.asarray(b)
            if fn == "add_noise":
                want = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * eps
            else:
                want = math.sqrt(ab) * eps - math.sqrt(1 - ab) * x0
    except (TypeError, ValueError) as e:
        _clear(e, "timestep", "sample", "model_output", "noise", "original_samples", "shape")
        return
    assert np.asarray(t).reshape(-1)[0] == 900  # only a valid timestep can be accepted
    if np.isfinite(np.asarray(a)).all() and np.isfinite(np.asarray(b)).all():
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-9)


@_hostile_test("DDIMConfig / make_plan / betas")
@given(
    option=st.sampled_from(
        [f.name for f in dc.DDIMConfig.__dataclass_fields__.values()]
        + ["num_inference_steps", "timesteps", "dtype", "xp", "device"]
    ),
    value=HOSTILE,
)
def test_config_and_plan_hostile(option: str, value: Any) -> None:
    try:
        if option == "num_inference_steps":
            plan = dc.make_plan(CONFIG, value)
            assert 1 <= plan.num_inference_steps <= 1000
        elif option == "timesteps":
            plan = dc.make_plan(CONFIG, timesteps=value)
            assert all(0 <= t < 1000 for t in plan.timesteps)
        elif option in ("dtype", "xp", "device"):
            table = dc.betas(CONFIG, **{option: value})
            assert np.all(np.isfinite(np.asarray(table)))
        else:
            config = dc.DDIMConfig(**{option: value})
            assert np.all(np.isfinite(config.replace().to_dict()["beta_end"]))
    except (TypeError, ValueError) as e:
        _clear(e, option, "timesteps", "steps", "xp", "dtype", "device")


@_hostile_test("GaussianMixture")
@given(arg=st.sampled_from(["x", "t"]), value=HOSTILE)
def test_analytic_model_hostile(arg: str, value: Any) -> None:
    gm = dc.GaussianMixture.create([[0.0, 0.0, 1.0]], [1.0], CONFIG)
    x, t = (value, 500) if arg == "x" else (GOOD_X, value)
    try:
        out = gm(x, t)
    except (TypeError, ValueError) as e:
        _clear(e, arg, "array")
        return
    assert np.all(np.isfinite(np.asarray(out))) or not np.isfinite(np.asarray(x)).all()


@_hostile_test("functional.step")
@given(arg=st.sampled_from(["model_output", "sample", "noise"]), value=HOSTILE)
def test_functional_hostile(arg: str, value: Any) -> None:
    s = functional.Scheduler(CONFIG, 5, eta=0.5)
    state = functional.init(s, like=GOOD_X)
    kwargs = {"model_output": GOOD_M, "sample": GOOD_X, "noise": GOOD_M, arg: value}
    try:
        _, got = functional.step(
            s, state, kwargs["model_output"], kwargs["sample"], noise=kwargs["noise"]
        )
    except (TypeError, ValueError) as e:
        _clear(e, arg, "noise", "sample", "model_output")
        return
    t = s.timesteps[0]
    want = reference.step(
        PLAN.__class__(CONFIG, PLAN.schedule, s.timesteps, (*s.timesteps[1:], dc.FINAL)),
        np.asarray(kwargs["model_output"]),
        t,
        np.asarray(kwargs["sample"]),
        eta=0.5,
        noise=np.asarray(kwargs["noise"]),
    )[0]
    if np.isfinite(np.asarray(kwargs[arg], dtype=float)).all():
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-9)


@_hostile_test("ddim_kdiffusion.sample_ddim / get_sigmas_ddim")
@given(arg=st.sampled_from(["sigmas", "x", "eta", "extra_args", "n"]), value=HOSTILE)
def test_kdiffusion_hostile(arg: str, value: Any) -> None:
    import ddim_kdiffusion as dk

    try:
        if arg == "n":
            sig = dk.get_sigmas_ddim(CONFIG, value, xp=np)
            assert np.all(np.isfinite(sig))
            return
        kwargs: dict[str, Any] = {
            "sigmas": np.array([2.0, 1.0, 0.0]),
            "x": GOOD_X * 2,
            "eta": 0.0,
            "extra_args": None,
        }
        kwargs[arg] = value
        out = dk.sample_ddim(
            lambda y, s: 0.5 * y,
            kwargs["x"],
            kwargs["sigmas"],
            extra_args=kwargs["extra_args"],
            eta=kwargs["eta"],
            disable=True,
            noise_sampler=lambda s, s2: np.zeros_like(GOOD_X),
        )
    except (TypeError, ValueError) as e:
        _clear(e, arg, "sigma", "num_inference_steps", "noise", "model", "x")
        return
    x_in = np.asarray(kwargs["x"])
    assert np.all(np.isfinite(np.asarray(out))) or not np.isfinite(x_in).all()


def test_hostile_case_counts_are_recorded() -> None:
    assert sum(HOSTILE_CASES.values()) >= 300 and len(HOSTILE_CASES) == 6


def test_diffusers_adapter_takes_no_coerced_input(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    import ddim_diffusers as dd

    x = torch.ones(2, 3)
    s = dd.DDIMScheduler()
    s.set_timesteps(10)
    for t in (900.7, "900", True, torch.tensor(900.0)):
        with pytest.raises(TypeError, match="timestep"):
            s.step(x, t, x)
    with pytest.raises(ValueError, match="outside"):
        s.step(x, torch.tensor(-5), x)
    for ts in ([900.7, 500.2], [True, False], "ab"):
        with pytest.raises(TypeError, match="timesteps"):
            s.set_timesteps(timesteps=ts)
    s.set_timesteps(timesteps=torch.tensor([900, 500]))
    assert s.timesteps.tolist() == [900, 500]
    assert len(dd.DDIMScheduler(num_train_timesteps=1).betas) == 1  # was a negative-stride error
    with pytest.raises(TypeError, match="trained_betas"):
        dd.DDIMScheduler(trained_betas="abc")
    with pytest.raises(ValueError, match="trained_betas must be 1-D"):
        dd.DDIMScheduler(num_train_timesteps=2, trained_betas=[[0.1], [0.2]])
    s.set_timesteps(10, device="meta")
    with pytest.raises(ValueError, match="set_timesteps\\(device="):  # a meta copy: unreadable
        s.step(x, s.timesteps.clone()[0], x)
    # an entry of the table set_timesteps built is known on the host, wherever the table lives
    assert torch.equal(s.step(x, s.timesteps[0], x).prev_sample, s.step(x, 900, x).prev_sample)
    # a scheduler_config.json holding a JSON string naming another directory is not followed
    other = tmp_path / "other"
    dd.DDIMScheduler(timestep_spacing="trailing").save_pretrained(other)
    (tmp_path / "scheduler_config.json").write_text(json.dumps(str(other)))
    with pytest.raises(ValueError, match="must hold a JSON object"):
        dd.DDIMScheduler.from_pretrained(tmp_path)


@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_empty_batches_and_huge_clip_ranges(lib: str) -> None:
    make = (lambda *s: np.zeros(s)) if lib == "numpy" else (lambda *s: torch.zeros(*s))
    for config in (
        dc.DDIMConfig(thresholding=True),
        dc.DDIMConfig(),
        dc.DDIMConfig(clip_sample=False),
    ):
        plan = dc.make_plan(config, 10)
        x = make(0, 3)
        assert tuple(dc.step(plan, x, 900, x).prev_sample.shape) == (0, 3)
        assert tuple(dc.sample(lambda y, t: y, x, config, 5).shape) == (0, 3)
    huge = dc.make_plan(dc.DDIMConfig(clip_sample_range=1e300), 10)
    x = make(2, 3) + 1
    x = x.astype(np.float32) if lib == "numpy" else x.float()
    got = dc.step(huge, x, 900, x).prev_sample
    want = reference.step(huge, np.ones((2, 3)), 900, np.ones((2, 3)))[0]
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)
