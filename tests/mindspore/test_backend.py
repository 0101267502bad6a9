"""The MindSpore backend plugin: its array namespace, exact float64, bfloat16, noise, devices.

Every test reads its results back (`asnumpy`), which also surfaces the error of a MindSpore
kernel that failed asynchronously.
"""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import nullcontext

import mindspore
import numpy as np
import pytest
from conftest import MindSporeBackend
from hypothesis import given
from hypothesis import strategies as st

import ddim_core as dc
from ddim_core import _mindspore as xp
from ddim_core import backends, guidance, plugins
from ddim_core import functional as F
from ddim_core.testing import reference as ref

MS = MindSporeBackend()
FLOATS = ["float64", "float32", "float16", "bfloat16"]
MIXTURE_CONFIG = dc.DDIMConfig(clip_sample=False)
MIXTURE = dc.GaussianMixture.create([[-2.0, 0.0], [2.0, 0.5]], [0.3, 0.5], MIXTURE_CONFIG)


def read(x: object) -> np.ndarray:
    return MS.to_numpy(x)


# --- the plugin ----------------------------------------------------------------------------


def test_sample_on_a_mindspore_tensor_returns_a_mindspore_tensor() -> None:
    x_T = np.random.default_rng(0).standard_normal((4, 2))
    got = dc.sample(MIXTURE, MS.array(x_T), MIXTURE_CONFIG, 10)
    assert isinstance(got, mindspore.Tensor) and got.dtype == mindspore.float64
    expected = dc.sample(MIXTURE, x_T, MIXTURE_CONFIG, 10)
    np.testing.assert_allclose(read(got), expected, rtol=1e-13, atol=1e-13)


def test_the_namespace_comes_from_the_mindspore_entry_point() -> None:
    rows = {row["name"]: row for row in plugins.describe()}
    assert rows["mindspore"]["hooks"] == ["ddim_core_array_namespace", "ddim_core_standard_normal"]
    assert rows["mindspore"]["distribution"].startswith("ddim-core ")
    assert backends.namespace(x=MS.array([1.0])) is xp


def test_loading_the_plugins_imports_no_mindspore() -> None:
    code = (
        "import sys, json\n"
        "import ddim_core\n"
        "from ddim_core import plugins\n"
        "plugins.describe()\n"
        "print(json.dumps([m for m in ('mindspore', 'mindone') if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_mixing_libraries_is_a_clear_error() -> None:
    plan = dc.make_plan(dc.DDIMConfig(), 10)
    with pytest.raises(TypeError, match=r"numpy array but model_output is a ddim_core\._mindspore"):
        dc.step(plan, MS.array(np.zeros(3)), 999, np.zeros(3))


# --- float64 exactness ------------------------------------------------------------------------


def test_mindspore_rounds_python_floats_and_the_core_does_not_let_it() -> None:
    """The trap: a Python float times a float64 tensor is rounded to float32 first."""
    c = 0.1234567890123456789
    x = MS.array(np.linspace(-1, 1, 7))
    assert np.abs(read(x * c) - read(x) * c).max() > 1e-10  # MindSpore's own behaviour
    (exact,) = backends.exact_scalars(xp, (c,), x)
    assert np.abs(read(x * exact) - read(x) * c).max() == 0.0
    x32 = MS.array(np.linspace(-1, 1, 7), "float32")
    assert backends.exact_scalars(xp, (c,), x32) == (c,)  # float32: nothing to do


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("threshold", [False, True])
def test_float64_steps_equal_numpy_to_the_last_bits(prediction: str, threshold: bool) -> None:
    config = dc.DDIMConfig(
        prediction_type=prediction,
        thresholding=threshold,
        sample_max_value=1.7,
        set_alpha_to_one=False,
        timestep_spacing="trailing",
    )
    plan = dc.make_plan(config, 7)
    rng = np.random.default_rng(1)
    x, out, noise = (rng.standard_normal((2, 3, 8)) * 2 for _ in range(3))
    for t in plan.timesteps:
        expected = dc.step(plan, out, t, x, eta=0.6, noise=noise)
        got = dc.step(plan, MS.array(out), t, MS.array(x), eta=0.6, noise=MS.array(noise))
        for g, e in zip(got, expected, strict=True):
            np.testing.assert_allclose(read(g), e, rtol=2e-15, atol=2e-15)
    for t in plan.inverse_timesteps[1:]:
        expected = dc.inverse_step(plan, out, t, x)
        got = dc.inverse_step(plan, MS.array(out), t, MS.array(x))
        np.testing.assert_allclose(read(got[0]), expected[0], rtol=2e-15, atol=2e-15)


@given(
    spacing=st.sampled_from(["leading", "trailing", "linspace"]),
    prediction=st.sampled_from(["epsilon", "v_prediction", "sample"]),
    clip=st.booleans(),
    steps=st.integers(1, 50),
    index=st.integers(0, 49),
    eta=st.sampled_from([0.0, 0.3, 1.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_float64_agrees_with_the_reference(spacing, prediction, clip, steps, index, eta, seed):  # type: ignore[no-untyped-def]
    config = dc.DDIMConfig(timestep_spacing=spacing, prediction_type=prediction, clip_sample=clip)
    plan = dc.make_plan(config, steps)
    t = plan.timesteps[index % steps]
    if prediction == "sample" and plan.schedule.alpha_bar(t) == 1.0:
        return
    rng = np.random.default_rng(seed)
    x, out, noise = (rng.standard_normal((3, 2, 4)) for _ in range(3))
    expected = ref.step(plan, out, t, x, eta=eta, noise=noise)
    got = dc.step(plan, MS.array(out), t, MS.array(x), eta=eta, noise=MS.array(noise))
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(read(g), e, rtol=1e-10, atol=1e-10)


def test_exact_inversion_round_trips_in_float64() -> None:
    x0 = MS.array(MIXTURE.sample_data(8, np.random.default_rng(2)))
    z = dc.invert(MIXTURE, x0, MIXTURE_CONFIG, 8, fixed_point_iters=20, tol=1e-12)
    back = dc.sample(MIXTURE, z, MIXTURE_CONFIG, 8)
    assert np.abs(read(back) - read(x0)).max() <= 1e-9


@pytest.mark.parametrize("method", ["edict", "bdia", "belm"])
def test_reversible_samplers_in_float64_equal_numpy_and_return_exactly(method: str) -> None:
    """The compensated states' host constants reach float64 tensors exactly (MindSpore rounds
    Python floats to float32 there: EDICT's state was 1.2e-5 off NumPy's, its round trip 2e-12)."""
    from ddim_core import reversible

    model = dc.guided(MIXTURE, MIXTURE.component(0), 7.5)
    x0 = MIXTURE.sample_data(8, np.random.default_rng(3))
    invert, sample = (
        getattr(reversible, f"invert_{method}"),
        getattr(reversible, f"sample_{method}"),
    )
    state = invert(model, MS.array(x0), MIXTURE_CONFIG, 20)
    expected = invert(model, x0, MIXTURE_CONFIG, 20)
    for got, want in zip(state, expected, strict=True):
        np.testing.assert_allclose(read(got), want, rtol=0, atol=1e-12)
    assert np.array_equal(read(sample(model, state, MIXTURE_CONFIG, 20)), x0)


def test_exact_inversion_with_refinements_equals_numpy() -> None:
    """The solver's host constants reach float64 tensors exactly (rounded to float32, as
    MindSpore rounds Python floats, the inversion is 4.8e-7 off NumPy here; it was 1.2e-8 at
    N = 20). N = 50: at guidance 3 and N = 20 some of these points have no inverse (the
    residual stops at a nonzero minimum, docs/inversion-methods.md), where the solver's least
    squares is near singular and amplifies the two libraries' last-bit differences by up to
    1 / sqrt(eps): 1.9e-10 at a point the iteration left at 119, an agreement that depended on
    which iterates the warm start happened to produce."""
    model = dc.guided(MIXTURE, MIXTURE.component(0), 3.0)
    x0 = MIXTURE.sample_data(8, np.random.default_rng(4))
    got = dc.invert(model, MS.array(x0), MIXTURE_CONFIG, 50, fixed_point_iters=2)
    want = dc.invert(model, x0, MIXTURE_CONFIG, 50, fixed_point_iters=2)
    np.testing.assert_allclose(read(got), want, rtol=0, atol=1e-12)


def test_schedule_tables_in_the_mindspore_namespace() -> None:
    cfg = dc.DDIMConfig(beta_schedule="squaredcos_cap_v2")
    for dtype in ("float64", "float32"):
        like = MS.array(np.zeros(2), dtype)
        ab = dc.alphas_cumprod(cfg, xp=xp, device=like.device, dtype=like.dtype)
        assert ab.dtype == like.dtype and ab.device == like.device
        np.testing.assert_array_equal(read(ab), dc.schedule(cfg).alphas_cumprod.astype(dtype))
        again = dc.alphas_cumprod(cfg, xp=xp, device=like.device, dtype=like.dtype)
        np.testing.assert_array_equal(read(again), read(ab))  # a copy: the cache is not handed out


# --- half precision ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_loops_run_and_keep_the_dtype(dtype: str) -> None:
    x_T = np.random.default_rng(3).standard_normal((8, 2))
    expected = dc.sample(MIXTURE, x_T, MIXTURE_CONFIG, 10)
    got = dc.sample(MIXTURE, MS.array(x_T, dtype), MIXTURE_CONFIG, 10)
    assert got.dtype == getattr(mindspore, dtype)
    tol = 2e-2 if dtype == "bfloat16" else 3e-3
    np.testing.assert_allclose(read(got), expected, atol=tol * 4)
    inv = dc.invert(MIXTURE, MS.array(expected, dtype), MIXTURE_CONFIG, 10)
    assert inv.dtype == getattr(mindspore, dtype) and np.isfinite(read(inv)).all()


def test_float16_fixed_point_inversion() -> None:
    x0 = MIXTURE.sample_data(8, np.random.default_rng(4))
    z = dc.invert(MIXTURE, MS.array(x0, "float16"), MIXTURE_CONFIG, 10, fixed_point_iters=5)
    assert z.dtype == mindspore.float16 and np.isfinite(read(z)).all()


def test_bfloat16_exact_inversion_runs_and_round_trips() -> None:
    """docs/mindspore.md: exact inversion of bfloat16 tensors runs on the CPU (float32 inside)."""
    x0 = MS.array(MIXTURE.sample_data(8, np.random.default_rng(4)), "bfloat16")
    z = dc.invert(MIXTURE, x0, MIXTURE_CONFIG, 10, fixed_point_iters=20, tol=1e-3)
    assert z.dtype == mindspore.bfloat16
    back = dc.sample(MIXTURE, z, MIXTURE_CONFIG, 10)
    np.testing.assert_allclose(read(back), read(x0), atol=0.05)


def test_functional_loop_equals_imperative_on_mindspore() -> None:
    x = MS.array(np.random.default_rng(5).standard_normal((4, 2)))
    for inverse in (False, True):
        scheduler = F.Scheduler(MIXTURE_CONFIG, 8, inverse=inverse)
        state, got = F.init(scheduler, like=x), x
        for _ in range(8):
            state, got = F.step(scheduler, state, MIXTURE(got, F.timestep(state)), got)
        loop = dc.invert if inverse else dc.sample
        np.testing.assert_allclose(read(got), read(loop(MIXTURE, x, MIXTURE_CONFIG, 8)), 1e-12)


def test_kdiffusion_samplers_run_on_mindspore() -> None:
    from ddim_kdiffusion import get_sigmas_ddim, sample_ddim

    cfg = dc.DDIMConfig(clip_sample=False)
    sigmas = get_sigmas_ddim(cfg, 10, xp=np)
    ab = dc.schedule(cfg).alphas_cumprod

    def denoiser(x, sigma):  # type: ignore[no-untyped-def]
        # the analytic model in k-diffusion's convention (VE x, sigma in, denoised out)
        sigma = read(sigma) if isinstance(sigma, mindspore.Tensor) else sigma
        level = 1.0 / (1.0 + float(sigma[0]) ** 2)
        t = int(np.abs(ab - level).argmin())
        xv = x * float(np.sqrt(level))
        eps = MIXTURE(xv, t)
        return (xv - float(np.sqrt(1 - level)) * eps) / float(np.sqrt(level))

    x = np.random.default_rng(6).standard_normal((4, 2)) * sigmas[0]
    expected = sample_ddim(denoiser, x, sigmas, disable=True)
    got = sample_ddim(denoiser, MS.array(x, "float32"), MS.array(sigmas, "float32"), disable=True)
    np.testing.assert_allclose(read(got), expected, rtol=1e-4, atol=1e-4)


# --- the namespace, function by function ----------------------------------------------------


def _data(dtype: str) -> tuple[np.ndarray, object]:
    host = np.linspace(-2.5, 2.5, 24).reshape(2, 3, 4)
    if dtype == "float16":
        host = host.astype(np.float16).astype(np.float64)
    x = MS.array(host, dtype)
    return (read(x), x)


UNARY = {
    "sqrt": (lambda v: np.sqrt(np.abs(v)), lambda x: xp.sqrt(xp.abs(x))),
    "exp": (np.exp, xp.exp),
    "log": (lambda v: np.log(np.abs(v) + 1), lambda x: xp.log(xp.abs(x) + 1)),
    "cos": (np.cos, xp.cos),
    "abs": (np.abs, xp.abs),
    "clip": (lambda v: np.clip(v, -1.25, 0.5), lambda x: xp.clip(x, -1.25, 0.5)),
    "maximum": (lambda v: np.maximum(v, 0.75), lambda x: xp.maximum(x, 0.75)),
    "minimum": (lambda v: np.minimum(0.75, v), lambda x: xp.minimum(0.75, x)),
    "where": (lambda v: np.where(v > 0, v, 2 * v), lambda x: xp.where(x > 0, x, 2 * x)),
    "sum": (lambda v: v.sum(axis=-1), lambda x: xp.sum(x, axis=-1)),
    "sum-all": (lambda v: v.sum(), lambda x: xp.sum(x)),
    "max": (lambda v: v.max(axis=(1, 2)), lambda x: xp.max(x, axis=(1, 2))),
    "max-keepdims": (lambda v: v.max(1, keepdims=True), lambda x: xp.max(x, axis=1, keepdims=True)),
    "sort": (lambda v: np.sort(np.cos(7 * v), -1), lambda x: xp.sort(xp.cos(7 * x), axis=-1)),
    "cumulative_prod": (lambda v: np.cumprod(v, 2), lambda x: xp.cumulative_prod(x, axis=2)),
    "take": (lambda v: v[:, [2, 0]], lambda x: xp.take(x, MS.int_array([2, 0]), axis=1)),
    "reshape": (lambda v: v.reshape(6, -1), lambda x: xp.reshape(x, (6, -1))),
    "concat": (lambda v: np.concatenate([v, v], 1), lambda x: xp.concat([x, x], axis=1)),
    "stack": (lambda v: np.stack([v, 2 * v], 1), lambda x: xp.stack([x, 2 * x], axis=1)),
    "stack-last": (lambda v: np.stack([v, v], -1), lambda x: xp.stack([x, x], axis=-1)),
    "astype": (lambda v: v, lambda x: xp.astype(xp.astype(x, xp.float64), x.dtype)),
    "isfinite": (np.isfinite, xp.isfinite),
    "all": (lambda v: np.all(v > -3), lambda x: xp.all(x > -3)),
    "std": (lambda v: v.std(axis=-1), lambda x: xp.std(x, axis=-1)),
    "atan2": (lambda v: np.arctan2(v, 1.5 - v), lambda x: xp.atan2(x, xp.subtract(1.5, x))),
    "getitem": (lambda v: v[..., 1], lambda x: x[..., 1]),
}


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", list(UNARY))
def test_every_namespace_function_on_every_dtype(name: str, dtype: str) -> None:
    """Each function the core calls, with a read right after it: no kernel is missing on the
    CPU (bfloat16 goes through float32), and results keep the input's dtype."""
    if name in ("all", "where") and dtype == "bfloat16":
        pytest.skip("MindSpore's CPU has no bfloat16 comparison kernel (operators are its own)")
    host, x = _data(dtype)
    expected, fn = UNARY[name]
    got = fn(x)
    want = expected(host)
    if got.dtype != mindspore.bool_:
        assert got.dtype == x.dtype
    tol = {"float64": 1e-15, "float32": 1e-6, "float16": 2e-3, "bfloat16": 2e-2}[dtype]
    np.testing.assert_allclose(read(got), want, rtol=tol, atol=tol)


@pytest.mark.parametrize(
    "options",
    [{}, {"axis": 1}, {"axis": (1, 2), "keepdims": True}, {"axis": -1, "correction": 1}],
)
def test_std_and_var_agree_with_numpy_in_float64(options: dict) -> None:
    """The array API's std / var: axis (int or tuple), keepdims, correction (NumPy's ddof)."""
    host = np.random.default_rng(8).standard_normal((2, 3, 4)) * 3 + 1
    numpy_options = {("ddof" if k == "correction" else k): v for k, v in options.items()}
    for name in ("std", "var"):
        got = getattr(xp, name)(MS.array(host), **options)
        want = getattr(np, name)(host, **numpy_options)
        assert got.shape == want.shape
        np.testing.assert_allclose(read(got), want, rtol=1e-14, atol=0)


def test_atan2_takes_python_scalars_and_keeps_float64() -> None:
    y = np.array([1.0, -1.0, 0.0, 1e-300])
    got = xp.atan2(MS.array(y), -0.5)
    assert got.dtype == xp.float64
    np.testing.assert_allclose(read(got), np.arctan2(y, -0.5), rtol=1e-15, atol=0)


SCALAR_OPERATIONS = [
    "add",
    "multiply",
    "divide",
    "pow",
    "maximum",
    "less",
    "equal",
    "where",
    "clip",
]


@pytest.mark.parametrize(
    ("name", "dtype", "scalar"),
    [
        *[
            (name, dtype, 0.5)
            for name in SCALAR_OPERATIONS
            for dtype in ["int64", "int32", "uint8", "bool"]
            if (name, dtype) != ("clip", "bool")  # (the array API clips numeric arrays only)
        ],
        *[(name, "bool", 2) for name in ["add", "multiply", "less", "equal"]],
    ],
)
def test_a_python_scalar_is_not_truncated_to_an_integer_tensors_dtype(
    name: str, dtype: str, scalar: float
) -> None:
    """A Python float met an integer (or bool) tensor as a 0-d tensor of the tensor's dtype:
    multiply(t, 0.5) was 0, divide(t, 0.5) a division by 0 (inf), less(t, 0.5) compared with 0
    (and an int met a bool tensor as True). It is a float (an int) now, as MindSpore's own
    `t * 0.5`, NumPy and torch take it."""
    values = np.array([0, 1, 2, 3]).astype(dtype)
    args = {
        "where": lambda a, above: (above, a, scalar),
        "clip": lambda a, above: (a, scalar, 2.5),
    }.get(name, lambda a, above: (a, scalar))
    numpy_function = np.power if name == "pow" else getattr(np, name)  # (NumPy 1.x: no np.pow)
    want = numpy_function(*args(values, values > 1))
    got = getattr(xp, name)(*args(xp.asarray(values), xp.asarray(values > 1))).asnumpy()
    assert got.dtype.kind == want.dtype.kind, (got, want)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_slerp_and_guidance_rescale_equal_numpy() -> None:
    """ddim_core.slerp (atan2), cfg and rescale_noise_cfg (std) run on MindSpore tensors, as
    exact in float64 as NumPy (w and phi are not rounded to float32), and so does
    ddim_diffusers' inversion with guidance_rescale."""
    rng = np.random.default_rng(9)
    a, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 4))
    got = dc.slerp(MS.array(a), MS.array(b), 0.3)
    np.testing.assert_allclose(read(got), dc.slerp(a, b, 0.3), rtol=1e-13, atol=1e-13)
    got = guidance.cfg(MS.array(a), MS.array(b), 7.3)
    np.testing.assert_allclose(read(got), guidance.cfg(a, b, 7.3), rtol=1e-14, atol=1e-14)
    got = dc.rescale_noise_cfg(MS.array(a), MS.array(b), 0.7)
    np.testing.assert_allclose(read(got), dc.rescale_noise_cfg(a, b, 0.7), rtol=1e-13, atol=1e-13)

    import types

    import ddim_diffusers as dd

    def unet(x: object, t: object, encoder_hidden_states: object) -> object:
        bias = encoder_hidden_states.reshape(-1, 1, 1, 1)  # type: ignore[attr-defined]
        return types.SimpleNamespace(sample=x / 10 + bias)  # (not 0.1: see above)

    pipe = types.SimpleNamespace(unet=unet, scheduler=dd.DDIMScheduler(clip_sample=False))
    cond, uncond = np.full((1, 1, 1), 0.2), np.zeros((1, 1, 1))
    x_0 = rng.standard_normal((2, 1, 2, 2))
    options = dict(guidance_scale=3.0, guidance_rescale=0.7, num_inference_steps=5)
    want = dd.invert_latents(pipe, x_0, prompt_embeds=cond, negative_prompt_embeds=uncond,
                             **options)  # fmt: skip
    got = dd.invert_latents(pipe, MS.array(x_0), prompt_embeds=MS.array(cond),
                            negative_prompt_embeds=MS.array(uncond), **options)  # fmt: skip
    np.testing.assert_allclose(read(got), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("timesteps", [[-1, 900], [900, 1000]])
def test_timesteps_out_of_range_raise_as_on_numpy(timesteps: list[int]) -> None:
    """A CPU tensor's timesteps are read on the host for free and checked there: a negative
    one does not wrap to row 999, 1000 is not a Gather error."""
    t = MS.int_array(timesteps)
    assert backends.host_integers(t) == timesteps
    bad = min(timesteps) if min(timesteps) < 0 else max(timesteps)
    message = rf"^{{}}={bad} is outside \[0, num_train_timesteps=1000\)"
    x, m = MS.array(np.zeros((2, 3))), MS.array(np.ones((2, 3)))
    with pytest.raises(ValueError, match=message.format("timesteps")):  # add_noise's argument
        dc.add_noise(MIXTURE_CONFIG, x, m, t)
    with pytest.raises(ValueError, match=message.format("timestep")):
        dc.step(dc.make_plan(MIXTURE_CONFIG, 10), m, t, x)


def test_sort_keeps_float64_values() -> None:
    """ops.sort rounds float64 to float32 on the CPU; the namespace sorts with ops.topk."""
    rng = np.random.default_rng(7)
    a = 1 + rng.permutation(64).reshape(2, 32) * 1e-12
    np.testing.assert_array_equal(read(xp.sort(MS.array(a), axis=-1)), np.sort(a, -1))
    np.testing.assert_array_equal(read(xp.argsort(MS.array(a), axis=-1)), np.argsort(a, -1))


def test_clip_bounds_are_exact_in_float64() -> None:
    x = MS.array(np.array([0.5, -0.5, 0.1]))
    np.testing.assert_array_equal(read(xp.clip(x, -1 / 3, 1 / 3)), [1 / 3, -1 / 3, 0.1])


def test_creation_functions() -> None:
    assert xp.asarray(1.5).dtype == xp.float32  # MindSpore's default floating dtype
    assert xp.asarray([1, 2]).dtype == xp.int64
    assert xp.asarray(np.array([1.0])).dtype == xp.float64
    assert xp.asarray(np.zeros(3), dtype=xp.bfloat16).dtype == xp.bfloat16
    np.testing.assert_array_equal(
        read(xp.linspace(0, 1, 5, dtype=xp.float64)), np.linspace(0, 1, 5)
    )
    np.testing.assert_array_equal(read(xp.arange(4, dtype=xp.float64)), np.arange(4.0))
    np.testing.assert_array_equal(read(xp.full((2,), np.inf, dtype=xp.float64)), [np.inf, np.inf])
    assert xp.ones((2, 3), dtype=xp.float16).shape == (2, 3)
    x = MS.array([1.0, 2.0])
    assert xp.asarray(x) is x and xp.asarray(x, copy=True) is not x
    with pytest.raises(ValueError, match="copy=False"):
        xp.asarray([1.0], copy=False)
    with pytest.raises(TypeError, match="cannot convert str"):
        xp.asarray("abc")


@pytest.mark.parametrize(
    ("args", "kwargs", "want"),
    [
        ((10,), {"step": 3}, [0, 3, 6, 9]),
        ((2.0,), {"step": 0.5}, [0.0, 0.5, 1.0, 1.5]),
        ((5,), {"step": -1}, []),
        ((1, 7, 2), {}, [1, 3, 5]),
    ],
)
def test_arange_takes_its_step_without_a_stop(args: tuple, kwargs: dict, want: list) -> None:
    """xp.arange(10, step=3) gave 0..9: without `stop` the step was dropped (np.arange(start)),
    where the array API (and NumPy's np.arange(0, 10, 3)) gives [0, 3, 6, 9]."""
    np.testing.assert_array_equal(read(xp.arange(*args, **kwargs)), want)


def test_dtype_helpers() -> None:
    assert xp.isdtype(xp.bfloat16, "real floating") and not xp.isdtype(xp.int64, "real floating")
    assert xp.isdtype(xp.int32, ("bool", "integral")) and xp.isdtype(xp.bool, "bool")
    assert xp.finfo(xp.float16).bits == 16 and xp.finfo(xp.bfloat16).eps == 2.0**-7
    assert xp.finfo(xp.float64).eps == np.finfo(np.float64).eps
    assert xp.iinfo(xp.int64).max == 2**63 - 1
    with pytest.raises(TypeError):
        xp.finfo(xp.int64)
    with pytest.raises(ValueError, match="unknown dtype kind"):
        xp.isdtype(xp.float32, "real")


def test_devices() -> None:
    x = MS.array([1.0])
    assert backends.device(x) == "CPU"
    assert xp.asarray([1.0], device="CPU").device == "CPU"
    assert xp.asarray([1.0], device="CPU:0").device == "CPU"  # a device id is accepted
    assert xp.to_device(x, "CPU") is x
    with pytest.raises(ValueError, match="unknown MindSpore device 'cuda'"):
        xp.asarray([1.0], device="cuda")


def test_errors_are_raised_where_the_call_is() -> None:
    """Checks on the host before any kernel runs, rather than at a later read."""
    x = MS.array(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="cannot reshape"):
        xp.reshape(x, (4, 2))
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        xp.sum(x, axis=2)
    with pytest.raises(TypeError, match="integer dtype"):
        xp.take(x, MS.array([0.0]), axis=0)
    with pytest.raises(TypeError, match="must be a MindSpore tensor"):
        xp.sqrt(np.zeros(2))


def test_take_never_clamps_an_index() -> None:
    """mindspore.numpy.take clamps out-of-range indices; ops.gather reports them (at the read:
    MindSpore checks the values when the kernel runs)."""
    table = MS.array(np.arange(5.0))
    with pytest.raises(Exception, match="input_indices"):
        read(xp.take(table, MS.int_array([7]), axis=0))


@pytest.mark.parametrize("dtype", ["int8", "int16", "uint8", "uint16", "uint32", "uint64"])
def test_take_and_per_sample_timesteps_of_every_integer_dtype(dtype: str) -> None:
    """The CPU's Gather takes int32 / int64 indices only: int8 and unsigned indices were a
    kernel TypeError from deep inside MindSpore (add_noise with uint8 timesteps)."""
    table = MS.array(np.arange(200.0))
    got = xp.take(table, mindspore.tensor([120, 3], getattr(mindspore, dtype)), axis=0)
    np.testing.assert_array_equal(read(got), [120.0, 3.0])
    t = mindspore.tensor([120, 7], getattr(mindspore, dtype))
    x, noise = MS.array(np.ones((2, 3))), MS.array(np.full((2, 3), 0.5))
    want = dc.add_noise(MIXTURE_CONFIG, x, noise, MS.int_array([120, 7]))
    np.testing.assert_array_equal(read(dc.add_noise(MIXTURE_CONFIG, x, noise, t)), read(want))


NAN_CASES = {
    "clip": (lambda v: np.clip(v, -1.0, 1.0), lambda x: xp.clip(x, -1.0, 1.0)),
    "clip-arrays": (
        lambda v: np.clip(v, -np.ones(5), np.ones(5)),
        lambda x: xp.clip(x, xp.full_like(x, -1.0), xp.full_like(x, 1.0)),
    ),
    "maximum": (lambda v: np.maximum(v, 0.0), lambda x: xp.maximum(x, 0.0)),
    "minimum": (lambda v: np.minimum(0.0, v), lambda x: xp.minimum(0.0, x)),
    "sort": (np.sort, xp.sort),
    "sign": (np.sign, xp.sign),
    "max": (np.max, xp.max),
    "min": (np.min, xp.min),
    "max-axis": (
        lambda v: np.max(v, axis=0, keepdims=True),
        lambda x: xp.max(x, axis=0, keepdims=True),
    ),
}


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", list(NAN_CASES))
def test_nan_propagates_and_sorts_last_as_on_numpy(name: str, dtype: str) -> None:
    """MindSpore's clamp, maximum and minimum returned the bound for NaN (clip(NaN, -1, 1) was
    -1), and ops.topk left NaN anywhere in a sort (the non-NaN values unsorted around it)."""
    host = np.array([3.0, np.nan, -2.0, 0.5, np.inf])
    expected, fn = NAN_CASES[name]
    got = fn(MS.array(host, dtype))
    assert got.dtype == getattr(mindspore, dtype)
    np.testing.assert_array_equal(read(got), expected(host))


@pytest.mark.parametrize("inverse", [False, True])
def test_out_buffers_are_the_documented_type_error(inverse: bool) -> None:
    """step / inverse_step with MindSpore out= buffers raised AttributeError ('Tensor' object
    has no attribute 'element_size') from the buffers' overlap check, where the docstring
    says out= where no fused kernel applies is a TypeError (MindSpore has none)."""
    plan = dc.make_plan(MIXTURE_CONFIG, 10)
    x = MS.array(np.ones((2, 3)), "float32")
    out = (MS.array(np.zeros((2, 3)), "float32"), MS.array(np.zeros((2, 3)), "float32"))
    with pytest.raises(TypeError, match="out= needs a fused kernel"):
        (dc.inverse_step if inverse else dc.step)(plan, 0.1 * x, 900, x, out=out)
    with pytest.raises(ValueError, match=r"out\[0\] shares memory with sample"):
        (dc.inverse_step if inverse else dc.step)(plan, 0.1 * x, 900, x, out=(x, out[1]))


@pytest.mark.parametrize("dtype", ["float64", "bfloat16"])
@pytest.mark.parametrize("name", ["sum", "prod", "mean", "max", "min", "all", "any"])
def test_a_reduction_over_no_axis_reduces_nothing(name: str, dtype: str) -> None:
    """xp.sum(x, axis=()) (axes = tuple(range(1, x.ndim)) of a 1-D batch) was the sum of
    every element, a scalar: MindSpore's reductions take () for all axes, where the array API
    and NumPy reduce none (x itself, its shape kept)."""
    host = np.array([[1.5, np.nan, 0.0], [-2.0, 3.0, 4.0]])
    got = getattr(xp, name)(MS.array(host, dtype), axis=())
    np.testing.assert_array_equal(read(got), getattr(np, name)(host, axis=()))


@pytest.mark.parametrize("dtype", ["float64", "float32", "bfloat16"])
@pytest.mark.parametrize("name", ["sum", "prod", "mean", "all", "any", "var", "std"])
@pytest.mark.parametrize("keepdims", [False, True])
def test_a_reduction_over_zero_elements_is_its_identity(
    name: str, dtype: str, keepdims: bool
) -> None:
    """MindSpore's CPU reductions over an empty axis returned uninitialized memory (sum
    4.7e-310, prod [1, 0], any True, mean and var +-inf): the array API's and NumPy's are sum
    0, prod 1, any False, all True, and NaN for mean, var and std."""
    host = np.zeros((2, 0, 3))
    x = MS.array(host, dtype)
    with (
        np.errstate(invalid="ignore", divide="ignore"),
        pytest.warns() if name in ("mean", "var", "std") else nullcontext(),
    ):
        want = getattr(np, name)(host, axis=1, keepdims=keepdims)
    got = getattr(xp, name)(x, axis=1, keepdims=keepdims)
    assert tuple(got.shape) == want.shape
    np.testing.assert_array_equal(read(got), want)


@pytest.mark.parametrize("shape", [(2, 0), (0, 3)])
@pytest.mark.parametrize(
    "name", ["sort", "argsort", "cumulative_sum", "cumulative_prod", "cumulative_sum-initial"]
)
def test_sorts_and_scans_of_an_empty_tensor_are_empty_as_on_numpy(name: str, shape: tuple) -> None:
    """sort / argsort along an empty axis raised ops.topk's 'For TopK, the check range left
    must be smaller than right number' ValueError and cumulative_sum the CPU's 'Launch kernel
    failed, name:Default/CumSum-op0' RuntimeError, where NumPy gives empty results (and
    include_initial its initial value)."""
    host = np.zeros(shape)
    fn, _, initial = name.partition("-")
    kwargs = {"include_initial": True} if initial else {}
    got = getattr(xp, fn)(MS.array(host), axis=1, **kwargs)
    want = {
        "sort": lambda: np.sort(host, axis=1),
        "argsort": lambda: np.argsort(host, axis=1),
        "cumulative_sum": lambda: np.cumsum(host, axis=1),
        "cumulative_prod": lambda: np.cumprod(host, axis=1),
    }[fn]()
    if initial:  # (NumPy 1.x has no cumulative_sum)
        want = np.concatenate([np.zeros((shape[0], 1)), want], axis=1)
    assert tuple(got.shape) == want.shape
    np.testing.assert_array_equal(read(got), want)


@pytest.mark.parametrize("initial", [False, True])
@pytest.mark.parametrize("name", ["cumulative_sum", "cumulative_prod"])
def test_a_scan_of_an_empty_tensor_checks_its_axis(name: str, initial: bool) -> None:
    """An empty tensor is its own scan, but an axis out of range is still named, as for a
    tensor with elements (NumPy: AxisError): the empty one returned itself for axis=5, or
    with include_initial raised IndexError ('list assignment index out of range')."""
    for host in (np.zeros((2, 0)), np.zeros((2, 2))):
        with pytest.raises(ValueError, match="axis 5 is out of range for a 2-d tensor"):
            getattr(xp, name)(MS.array(host), axis=5, include_initial=initial)


@pytest.mark.parametrize("name", ["max", "min"])
def test_max_or_min_of_zero_elements_is_a_value_error(name: str) -> None:
    """As NumPy's (zero-size array to reduction operation ... which has no identity), where
    MindSpore's kernels returned uninitialized memory."""
    with pytest.raises(ValueError, match=f"{name} of zero elements has no value"):
        getattr(xp, name)(MS.array(np.zeros((2, 0))), axis=1)


def test_exact_inversion_of_a_model_failing_on_one_entry_is_nan_as_on_numpy() -> None:
    """The max reduction skipped a NaN that did not come first (max([1, NaN, 2]) was 2), so
    exact inversion measured a finite residual for a sample whose model output held a NaN:
    that sample came back finite (a point no call validated) where NumPy's is NaN, and the
    ToleranceWarning named another step and a finite residual."""
    mixture = dc.GaussianMixture.create([[-2.0, 0.0, 1.0], [2.0, 0.5, 0.0]], [0.3, 0.5],
                                        MIXTURE_CONFIG)  # fmt: skip
    failed = np.zeros((3, 3))
    failed[0, 1] = np.nan  # sample 0's second entry, from timestep 500 on

    def model(x: object, t: int) -> object:
        out = mixture(x, t)
        if t < 500:
            return out
        return out + (failed if isinstance(x, np.ndarray) else MS.array(failed))

    x0 = mixture.sample_data(3, np.random.default_rng(0))
    options = {"fixed_point_iters": 4, "tol": 1e-6, "check_finite": False}
    with pytest.warns(dc.implicit.ToleranceWarning) as want_warning:
        want = dc.invert(model, x0, MIXTURE_CONFIG, 10, **options)
    with pytest.warns(dc.implicit.ToleranceWarning) as got_warning:
        got = dc.invert(model, MS.array(x0), MIXTURE_CONFIG, 10, **options)
    assert np.isnan(want[0]).all()
    np.testing.assert_allclose(read(got), want, rtol=1e-12, atol=1e-12)
    assert str(got_warning[0].message) == str(want_warning[0].message)


@pytest.mark.parametrize("options", [{}, {"thresholding": True}, {"prediction_type": "sample"}])
def test_a_nan_model_output_stays_nan_as_on_numpy(options: dict) -> None:
    """With clip_sample (the default) or thresholding, a NaN in the model's output gave a
    finite x0 (the clip bound) on MindSpore, and with thresholding a finite sample where
    NumPy's is NaN: a model failure hidden."""
    plan = dc.make_plan(dc.DDIMConfig(**options), 10)
    x = np.random.default_rng(3).standard_normal((2, 1, 8, 8))
    out = x.copy()
    out[0, 0, 3, 3] = np.nan
    want = dc.step(plan, out, 900, x)
    got = dc.step(plan, MS.array(out), 900, MS.array(x))
    np.testing.assert_array_equal(read(got.pred_original_sample), want.pred_original_sample)
    np.testing.assert_array_equal(read(got.prev_sample), want.prev_sample)


# --- noise ------------------------------------------------------------------------------------


def _like(dtype: str = "float32") -> object:
    return MS.array(np.zeros((3, 2, 2)), dtype)


@pytest.mark.parametrize("dtype", FLOATS)
def test_numpy_generator_noise_matches_mindones_randn(dtype: str) -> None:
    """mindone's randn_tensor: ms.tensor(generator.standard_normal(shape), dtype=dtype)."""
    like = _like(dtype)
    z = plugins.standard_normal(np.random.default_rng(8), (3, 2, 2), like=like)
    host = np.random.default_rng(8).standard_normal((3, 2, 2))
    if dtype == "bfloat16":
        expected = mindspore.tensor(host.astype(np.float32)).astype(mindspore.bfloat16)
    else:
        expected = mindspore.tensor(host, dtype=like.dtype)
    assert z.dtype == like.dtype
    np.testing.assert_array_equal(read(z), read(expected))


def test_a_list_of_numpy_generators_draws_one_row_each() -> None:
    gens = [np.random.default_rng(s) for s in (1, 2, 3)]
    z = plugins.standard_normal(gens, (3, 2, 2), like=_like("float64"))
    rows = [np.random.default_rng(s).standard_normal((1, 2, 2)) for s in (1, 2, 3)]
    np.testing.assert_array_equal(read(z), np.concatenate(rows))
    with pytest.raises(TypeError, match="cannot draw noise"):
        plugins.standard_normal(gens[:2], (3, 2, 2), like=_like())


def test_mindspore_generator_is_reproducible_and_advances() -> None:
    g = mindspore.Generator()
    g.manual_seed(11)
    a, b = (read(plugins.standard_normal(g, (3, 2, 2), like=_like())) for _ in range(2))
    g.manual_seed(11)
    again = read(plugins.standard_normal(g, (3, 2, 2), like=_like()))
    np.testing.assert_array_equal(a, again)
    assert not np.array_equal(a, b)
    assert abs(a.mean()) < 1.5 and 0.2 < a.std() < 3


@pytest.mark.parametrize("gen", ["own", "default"])
def test_consecutive_mindspore_generator_draws_are_not_shifted_copies(gen: str) -> None:
    """A loop's steps draw one after another: step k + 1's noise must not be step k's moved by
    a few elements (a Philox counter advanced by 1 is the same stream 4 numbers on)."""
    g = mindspore.Generator() if gen == "own" else None
    (g or mindspore).manual_seed(3)
    like = _like()
    a, b = (read(plugins.standard_normal(g, (3, 2, 2), like=like)).ravel() for _ in range(2))
    for shift in range(1, a.size):
        assert not np.array_equal(a[shift:], b[: a.size - shift]), shift
    assert not np.isin(b, a).any()


def test_no_generator_draws_from_mindsporess_default_generator() -> None:
    mindspore.manual_seed(12)
    a = read(plugins.standard_normal(None, (3, 2, 2), like=_like()))
    mindspore.manual_seed(12)
    b = read(plugins.standard_normal(None, (3, 2, 2), like=_like()))
    np.testing.assert_array_equal(a, b)


def test_sampling_with_eta_and_a_mindspore_generator() -> None:
    x_T = MS.array(np.random.default_rng(9).standard_normal((4, 2)))
    a = dc.sample(MIXTURE, x_T, MIXTURE_CONFIG, 6, eta=1.0, generator=mindspore.Generator())
    b = dc.sample(MIXTURE, x_T, MIXTURE_CONFIG, 6, eta=1.0, generator=mindspore.Generator())
    np.testing.assert_array_equal(read(a), read(b))  # both seeded 0
    with_np = dc.sample(
        MIXTURE, x_T, MIXTURE_CONFIG, 6, eta=1.0, generator=np.random.default_rng(1)
    )
    on_numpy = dc.sample(
        MIXTURE, read(x_T), MIXTURE_CONFIG, 6, eta=1.0, generator=np.random.default_rng(1)
    )
    np.testing.assert_allclose(read(with_np), on_numpy, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("name", ["sum", "prod", "cumulative_sum", "cumulative_prod"])
def test_an_explicit_dtype_is_kept_on_bfloat16(name: str) -> None:
    """dtype= names the result's dtype; bfloat16 input (computed in float32) is no exception."""
    x = xp.asarray(np.array([1.5, 2.0, 0.25]), dtype=xp.bfloat16)
    got = getattr(xp, name)(x, dtype=xp.float32)
    assert got.dtype == xp.float32
    expected = {"sum": 3.75, "prod": 0.75, "cumulative_sum": [1.5, 3.5, 3.75],
                "cumulative_prod": [1.5, 3.0, 0.75]}[name]  # fmt: skip
    np.testing.assert_array_equal(read(got), expected)


@pytest.mark.parametrize("generator", [42, [mindspore.Generator()] * 2])
def test_a_generator_that_cannot_draw_names_what_mindspore_takes(generator: object) -> None:
    """The error lists MindSpore's generators (an int, or a list of 2 for a batch of 3)."""
    with pytest.raises(TypeError, match=r"mindspore\.Generator.*\(MindSpore samples\)"):
        plugins.standard_normal(generator, (3, 2, 2), like=_like())


@pytest.mark.parametrize("axis", [2, -3, (0, 5)])
def test_squeeze_with_an_axis_out_of_range_is_a_value_error(axis: object) -> None:
    with pytest.raises(ValueError, match="out of range for a 2-d tensor"):
        xp.squeeze(xp.ones((1, 1)), axis)
