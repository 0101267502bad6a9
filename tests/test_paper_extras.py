"""The DDIM paper's and the seeds' extras: the guided test bed and its exact ODE, guidance
rescale, spherical interpolation of x_T, and the quadratic timestep selection."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from helpers import Backend, assert_close, to_numpy
from hypothesis import given, settings
from hypothesis import strategies as st

import ddim_core as dc
from ddim_core.analytic import GaussianMixture, guided

CONFIG = dc.DDIMConfig(clip_sample=False, timestep_spacing="trailing")
UNCOND = GaussianMixture.create([[1.0, -1.0]], [0.8], CONFIG)
COND = GaussianMixture.create([[2.0, 0.5]], [0.3], CONFIG)


# --- the guided test bed -----------------------------------------------------------------


def test_guided_is_classifier_free_guidance_of_the_two_models() -> None:
    x = np.random.default_rng(0).standard_normal((5, 2))
    u, c = UNCOND(x, 500), COND(x, 500)
    np.testing.assert_allclose(guided(UNCOND, COND, 7.5)(x, 500), u + 7.5 * (c - u))
    np.testing.assert_array_equal(guided(UNCOND, COND, 1.0)(x, 500), c)
    rescaled = guided(UNCOND, COND, 7.5, rescale=0.7)(x, 500)
    np.testing.assert_allclose(rescaled, dc.rescale_noise_cfg(u + 7.5 * (c - u), c, 0.7))


@pytest.mark.parametrize("scale", [1.0, 3.0, 7.5])
def test_guided_ode_solution_is_the_limit_of_ddim(scale: float) -> None:
    """DDIM is first order: against the exact guided flow map its error halves as N doubles."""
    model = guided(UNCOND, COND, scale)
    x_T = np.random.default_rng(1).standard_normal((50, 2))
    exact = model.ode_solution(x_T, model.cond.schedule.alpha_bar(999))
    errors = [np.abs(dc.sample(model, x_T, CONFIG, n) - exact).max() for n in (50, 100, 200)]
    ratios = [a / b for a, b in itertools.pairwise(errors)]
    assert all(1.8 < r < 2.2 for r in ratios), (errors, ratios)


def test_guided_ode_of_equal_stds_is_a_single_gaussian_at_the_guided_mean() -> None:
    """With equal stds the guided eps is a Gaussian's eps at mean (1 - w) mu_u + w mu_c."""
    other = GaussianMixture.create([[0.0, 3.0]], [0.3], CONFIG)
    mean = -2.0 * COND.means[0] + 3.0 * other.means[0]
    shifted = GaussianMixture.create([mean], [0.3], CONFIG)
    x_T = np.random.default_rng(2).standard_normal((20, 2))
    ab = level(999)
    for ab_0 in (1.0, 0.9):
        np.testing.assert_allclose(
            guided(COND, other, 3.0).ode_solution(x_T, ab, ab_0),
            shifted.ode_solution(x_T, ab, ab_0),
            rtol=1e-13,
            atol=1e-13,
        )


def level(t: int) -> float:
    return COND.schedule.alpha_bar(t)


def test_ode_solution_composes_over_intermediate_levels() -> None:
    model = guided(UNCOND, COND, 3.0)
    x_T = np.random.default_rng(3).standard_normal((10, 2))
    ab_T, ab_mid = level(999), level(300)
    direct = model.ode_solution(x_T, ab_T)
    two = model.ode_solution(model.ode_solution(x_T, ab_T, ab_mid), ab_mid)
    np.testing.assert_allclose(two, direct, rtol=1e-12, atol=1e-12)


def test_ode_solution_only_where_known() -> None:
    mixture = GaussianMixture.create([[0.0], [2.0]], [0.3, 0.3], CONFIG)
    assert not guided(mixture, mixture.component(0), 3.0).exact
    assert not guided(UNCOND, COND, 3.0, rescale=0.5).exact
    with pytest.raises(ValueError, match="two single-Gaussian"):
        guided(mixture, mixture.component(0), 3.0).ode_solution(np.zeros((1, 1)), 0.5)
    with pytest.raises(ValueError, match=r"rescale=1.5 must be in \[0, 1\]"):
        guided(UNCOND, COND, 3.0, rescale=1.5)
    with pytest.raises(ValueError, match="scale=nan must be a finite number"):
        guided(UNCOND, COND, math.nan)
    with pytest.raises(TypeError, match="scale must be a real number, got '3'"):
        guided(UNCOND, COND, "3")
    # NumPy scalars are real numbers (np.float32 and np.int64 were refused, np.float64 not)
    for scale in (np.float32(7.5), np.int64(7)):
        model = guided(UNCOND, COND, scale)
        assert model.scale == float(scale) and type(model.scale) is float


# --- guidance rescale --------------------------------------------------------------------


def reference_rescale(guided_out: np.ndarray, cond: np.ndarray, phi: float) -> np.ndarray:
    """Lin et al. 2023, eq. 15-16, per sample over the non-batch axes."""
    axes = tuple(range(1, guided_out.ndim))
    std_c = cond.std(axis=axes, keepdims=True)
    std_g = guided_out.std(axis=axes, keepdims=True)
    return phi * guided_out * std_c / std_g + (1 - phi) * guided_out


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
def test_rescale_noise_cfg_on_every_backend(backend: Backend, dtype: str) -> None:
    rng = np.random.default_rng(4)
    g, c = rng.standard_normal((3, 4, 5)) * 3.0, rng.standard_normal((3, 4, 5))
    got = dc.rescale_noise_cfg(backend.array(g, dtype), backend.array(c, dtype), 0.7)
    inputs = [to_numpy(backend.array(a, dtype)) if backend.has_values else a for a in (g, c)]
    assert got.dtype == backend.array(g, dtype).dtype
    assert_close(backend, got, reference_rescale(*inputs, 0.7), dtype, scale=10.0)


def test_rescale_keeps_the_conditional_spread() -> None:
    rng = np.random.default_rng(5)
    g, c = rng.standard_normal((4, 16)) * 5.0 + 1.0, rng.standard_normal((4, 16))
    np.testing.assert_allclose(dc.rescale_noise_cfg(g, c, 1.0).std(axis=1), c.std(axis=1))
    assert dc.rescale_noise_cfg(g, c, 0.0) is g
    flat = np.ones((2, 8))  # zero spread: left as it is, not divided by zero
    np.testing.assert_array_equal(dc.rescale_noise_cfg(flat, c[:2, :8], 0.7), flat)
    with pytest.raises(ValueError, match="guidance_rescale=-1"):
        dc.rescale_noise_cfg(g, c, -1.0)
    with pytest.raises(ValueError, match="must be equal"):
        dc.rescale_noise_cfg(g, c[:, :8], 0.5)


@pytest.mark.parametrize("scale", [1e20, 1e-25])
def test_rescale_noise_cfg_of_huge_and_tiny_float32_is_finite_and_right(scale: float) -> None:
    """The squares in the std overflowed to inf above about 1e19 in float32 (a NaN output) and
    underflowed to 0 below about 1e-19 (the spread taken for zero): each sample is scaled by
    its largest |entry| first. Empty sample axes have nothing to rescale."""
    rng = np.random.default_rng(7)
    g = (rng.standard_normal((3, 4, 5)) * 3.0 * scale).astype(np.float32)
    c = (rng.standard_normal((3, 4, 5)) * scale).astype(np.float32)
    got = dc.rescale_noise_cfg(g, c, 0.7)
    assert got.dtype == np.float32 and np.isfinite(got).all()
    want = reference_rescale(g.astype(np.float64), c.astype(np.float64), 0.7)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    empty = np.ones((2, 0), dtype=np.float32)
    assert dc.rescale_noise_cfg(empty, empty, 0.7).shape == (2, 0)


def test_rescale_noise_cfg_keeps_a_nan_or_inf_output_nan(backend: Backend) -> None:
    """A NaN in the conditional output (a float16 UNet overflowing) came out of
    rescale_noise_cfg as finite numbers: its sample's std was taken for a zero spread
    (NaN > 0 is False), so the rescaled part was 0 and guidance_rescale=1 gave an all-zero
    prediction, no NaN left to see. The sample is NaN now, as diffusers' rescale_noise_cfg
    makes it (a NaN or inf in either output); the other samples are unchanged."""
    rng = np.random.default_rng(9)
    g, c = rng.standard_normal((3, 2, 4)) * 3.0, rng.standard_normal((3, 2, 4))
    want = reference_rescale(g, c, 1.0)
    for bad in (math.nan, math.inf, -math.inf):
        for which in ("guided", "cond"):
            g1, c1 = g.copy(), c.copy()
            (g1 if which == "guided" else c1)[0, 1, 2] = bad
            got = dc.rescale_noise_cfg(backend.array(g1), backend.array(c1), 1.0)
            if backend.has_values:
                out = to_numpy(got)
                assert np.isnan(out[0]).all(), (bad, which)
                np.testing.assert_allclose(out[1:], want[1:], rtol=1e-12)


def test_rescale_noise_cfg_keeps_a_nan_or_inf_output_nan_beside_a_zero_spread(
    backend: Backend,
) -> None:
    """A NaN or inf in the conditional output came out finite where the guided sample had no
    spread (all zeros, or one value per sample): the zero-spread rule left the guided sample
    as it was, where the docstring says a NaN or inf in either output makes its sample NaN (as
    diffusers' NaN / 0 does). The sample is NaN now; the others are left as they were."""
    for shape in ((3, 2, 4), (3, 1)):
        for bad in (math.nan, math.inf, -math.inf):
            for which in ("guided", "cond"):
                g, c = np.zeros(shape), np.ones(shape)
                g[1:] = 2.0
                (g if which == "guided" else c).reshape(3, -1)[0, -1] = bad
                got = dc.rescale_noise_cfg(backend.array(g), backend.array(c), 0.7)
                if backend.has_values:
                    out = to_numpy(got)
                    assert np.isnan(out[0]).all(), (shape, bad, which)
                    np.testing.assert_array_equal(out[1:], g[1:])


def test_rescale_gradient_is_finite_where_a_sample_has_no_spread() -> None:
    """Under jax.grad, rescale_noise_cfg of a sample with zero spread (a constant guided or
    conditional output: a zero-initialised output layer) gave NaN gradients for both
    arguments: jnp.std's sqrt has no derivative at 0, and where() passed 0 * inf back from
    the branch it did not take (torch's std backward gives 0 there). A guided sample with no
    spread is left as it is (derivative 1, none to the conditional one); a conditional one
    with no spread scales by 0 (its std's derivative taken as 0, as torch takes it). Other
    samples' gradients are unchanged, and the values too."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    g0, c0 = rng.standard_normal((3, 2, 4)) * 3.0, rng.standard_normal((3, 2, 4))
    g0[0], c0[1] = 0.5, -2.0  # no spread: the guided sample 0, the conditional sample 1
    g = torch.from_numpy(g0).requires_grad_()
    c = torch.from_numpy(c0).requires_grad_()
    got = dc.rescale_noise_cfg(g, c, 0.7)
    want = dc.rescale_noise_cfg(g0, c0, 0.7)
    np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-14)
    got.sum().backward()
    assert g.grad is not None and c.grad is not None
    assert bool(torch.isfinite(g.grad).all() and torch.isfinite(c.grad).all())
    torch.testing.assert_close(g.grad[0], torch.ones_like(g.grad[0]))
    torch.testing.assert_close(c.grad[0], torch.zeros_like(c.grad[0]))
    torch.testing.assert_close(g.grad[1], torch.full_like(g.grad[1], 0.3))
    torch.testing.assert_close(c.grad[1], torch.zeros_like(c.grad[1]))
    g2 = torch.from_numpy(g0[2:]).requires_grad_()
    c2 = torch.from_numpy(c0[2:]).requires_grad_()
    dc.rescale_noise_cfg(g2, c2, 0.7).sum().backward()
    torch.testing.assert_close(g.grad[2:], g2.grad)
    torch.testing.assert_close(c.grad[2:], c2.grad)
    jax = pytest.importorskip("jax")
    grads = jax.grad(lambda g, c: dc.rescale_noise_cfg(g, c, 0.7).sum(), argnums=(0, 1))
    for expected, got_jax in zip(
        (g.grad, c.grad), grads(g0.astype(np.float32), c0.astype(np.float32)), strict=True
    ):
        np.testing.assert_allclose(np.asarray(got_jax), expected.numpy(), rtol=1e-5, atol=1e-6)


def test_guidance_refuses_bad_scales_and_rescales() -> None:
    """A NaN scale or a rescale outside [0, 1] is an error naming the argument, never a
    silent NaN; integer outputs are a TypeError, not a backend's AttributeError."""
    g, c = np.ones((1, 4)), np.arange(4.0)[None]
    with pytest.raises(ValueError, match="scale=nan must be a finite number"):
        dc.guidance.cfg(g, c, math.nan)
    with pytest.raises(TypeError, match="scale must be a real number"):
        dc.guidance.cfg(g, c, np.array([2.0, 3.0]))
    # outputs that do not pair: a NumPy broadcast error, an integer sum, or (at scale 1) no
    # check at all, where they are now errors naming the arguments
    with pytest.raises(ValueError, match=r"uncond has shape \(1, 4\) but cond has shape \(4,\)"):
        dc.guidance.cfg(g, c[0], 7.5)
    for scale in (1.0, 7.5):
        with pytest.raises(TypeError, match="cond must be a real floating array, got dtype int"):
            dc.guidance.cfg(g, np.ones((1, 4), dtype=np.int64), scale)
    with pytest.raises(ValueError, match=r"guidance_rescale=1.5 must be in \[0, 1\]"):
        dc.rescale_noise_cfg(g, c, 1.5)
    with pytest.raises(TypeError, match="noise_guided must be a real floating array"):
        dc.rescale_noise_cfg(np.ones((1, 4), dtype=np.int64), c, 0.5)
    model = guided(UNCOND, COND, 3.0)
    broken = type(model)(UNCOND, COND, math.nan)  # Guided built directly, unchecked
    with pytest.raises(ValueError, match="scale=nan"):
        broken(np.zeros((1, UNCOND.dim)), 500)


def test_guidance_names_a_missing_output() -> None:
    """A model that returns None (a forgotten `return`) was an AttributeError on 'dtype' from
    inside cfg and rescale_noise_cfg; now a TypeError naming the output."""
    g = np.ones((1, 2))
    with pytest.raises(TypeError, match="uncond must be a real floating array, got None"):
        guided(lambda x, t: None, COND, 3.0)(np.zeros((1, COND.dim)), 500)
    with pytest.raises(TypeError, match="cond must be a real floating array, got None"):
        dc.guidance.cfg(g, None, 1.0)
    with pytest.raises(TypeError, match="noise_cond must be a real floating array, got None"):
        dc.rescale_noise_cfg(g, None, 0.5)


# --- slerp -------------------------------------------------------------------------------


def reference_slerp(a: np.ndarray, b: np.ndarray, alpha: float) -> np.ndarray:
    """Song et al. 2021, eq. 67, per row."""
    out = []
    for u, v in zip(a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1), strict=True):
        theta = math.acos(np.clip(u @ v / np.linalg.norm(u) / np.linalg.norm(v), -1, 1))
        w_a, w_b = math.sin((1 - alpha) * theta), math.sin(alpha * theta)
        out.append((w_a * u + w_b * v) / math.sin(theta))
    return np.reshape(out, a.shape)


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
def test_slerp_on_every_backend(backend: Backend, dtype: str) -> None:
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((3, 4, 8)), rng.standard_normal((3, 4, 8))
    x_a, x_b = backend.array(a, dtype), backend.array(b, dtype)
    got = dc.slerp(x_a, x_b, 0.3)
    assert got.dtype == x_a.dtype
    if backend.has_values:  # the reference from the inputs as the backend rounded them
        a, b = to_numpy(x_a), to_numpy(x_b)
    assert_close(backend, got, reference_slerp(a, b, 0.3), dtype, scale=10.0)


@settings(max_examples=30)
@given(
    alpha=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
    scale=st.floats(0.1, 10.0),
)
def test_slerp_walks_the_great_circle(alpha: float, seed: int, scale: float) -> None:
    """Endpoints at 0 and 1; the angle to x_a grows as alpha theta; equal norms are kept."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((2, 16))
    b = rng.standard_normal((2, 16))
    b = b / np.linalg.norm(b, axis=1, keepdims=True) * np.linalg.norm(a, axis=1, keepdims=True)
    a, b = a * scale, b * scale
    np.testing.assert_allclose(dc.slerp(a, b, 0.0), a, atol=1e-12 * scale)
    np.testing.assert_allclose(dc.slerp(a, b, 1.0), b, atol=1e-12 * scale)
    x = dc.slerp(a, b, alpha)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), np.linalg.norm(a, axis=1), rtol=1e-12)
    cos = lambda u, v: np.sum(u * v, axis=1) / np.linalg.norm(u, axis=1) / np.linalg.norm(v, axis=1)  # noqa: E731
    theta = np.arccos(np.clip(cos(a, b), -1, 1))
    np.testing.assert_allclose(np.arccos(np.clip(cos(a, x), -1, 1)), alpha * theta, atol=1e-7)


@pytest.mark.parametrize("scale", [1e20, 1e-25])
def test_slerp_of_huge_and_tiny_float32_is_finite_and_right(scale: float) -> None:
    """The squares in the norms overflowed to inf above about 1e19 in float32 and underflowed
    to 0 below about 1e-19: either way the samples were taken for zero and the result was the
    chord, not the arc. Each row is scaled by its largest |entry| first."""
    rng = np.random.default_rng(8)
    a = (rng.standard_normal((3, 4, 8)) * scale).astype(np.float32)
    b = (rng.standard_normal((3, 4, 8)) * scale).astype(np.float32)
    got = dc.slerp(a, b, 0.3)
    assert got.dtype == np.float32 and np.isfinite(got).all()
    want = reference_slerp(a.astype(np.float64), b.astype(np.float64), 0.3)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * scale)


def test_slerp_degenerate_pairs_and_arguments() -> None:
    a = np.array([[1.0, 2.0, 3.0]])
    np.testing.assert_allclose(dc.slerp(a, 2.0 * a, 0.5), 1.5 * a)  # parallel: the chord
    np.testing.assert_allclose(dc.slerp(a, -a, 0.25), 0.5 * a)  # opposite: the chord
    np.testing.assert_allclose(dc.slerp(a, np.zeros_like(a), 0.5), 0.5 * a)  # zero: the chord
    per_sample = dc.slerp(np.ones((2, 3)), -np.ones((2, 3)) + 0.1, np.array([0.0, 1.0]))
    np.testing.assert_allclose(per_sample, [[1.0] * 3, [-0.9] * 3])
    assert dc.slerp(a[0], a[0], 0.5).shape == (3,)
    with pytest.raises(ValueError, match="must be equal"):
        dc.slerp(a, np.ones((1, 2)), 0.5)
    with pytest.raises(ValueError, match=r"alpha has shape \(3,\)"):
        dc.slerp(np.ones((2, 3)), np.ones((2, 3)), np.zeros(3))
    with pytest.raises(TypeError, match="alpha must be a number or an array"):
        dc.slerp(a, a, "0.5")
    assert dc.slerp(np.ones((0, 2, 3)), np.ones((0, 2, 3)), 0.5).shape == (0, 2, 3)
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError, match=r"alpha=.* must be a finite number"):
            dc.slerp(a, a, bad)
    # a complex or boolean alpha array was cast to float: imaginary part dropped, True as 1
    for bad in (np.array([0.5 + 1j]), np.array(True)):
        with pytest.raises(
            TypeError, match=f"alpha must be real, got an array of dtype {bad.dtype}"
        ):
            dc.slerp(a, a, bad)
    np.testing.assert_array_equal(dc.slerp(a, -a, np.array([1])), -a)  # integers are real


def test_slerp_checks_numpy_scalar_and_none_alphas() -> None:
    """A NumPy float32 or float16 alpha (from np.linspace(..., dtype=np.float32)) was taken for
    an array and never checked: NaN or Inf gave a NaN result silently, where a float64 one
    (a float subclass) was refused; alpha=None was an AttributeError on 'dtype'."""
    a, b = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
    for bad in (np.float32("nan"), np.float16("inf"), np.float64("nan")):
        with pytest.raises(ValueError, match=r"alpha=.* must be a finite number"):
            dc.slerp(a, b, bad)
    with pytest.raises(TypeError, match=r"alpha must be a number or an array.*got NoneType"):
        dc.slerp(a, b, None)
    for alpha in (np.float32(0.5), np.int8(1)):
        np.testing.assert_allclose(dc.slerp(a, b, alpha), dc.slerp(a, b, float(alpha)))


def test_slerp_names_x_a_for_an_alpha_on_another_device() -> None:
    """An alpha tensor on another device than the samples (a CPU torch.linspace with CUDA
    latents) was refused as "alpha is on device ... but x is on ...": slerp has no argument
    x. The message names x_a."""
    torch = pytest.importorskip("torch")
    x = torch.ones((2, 3), device="meta")
    with pytest.raises(ValueError, match=r"alpha is on device .*cpu.* but x_a is on .*meta"):
        dc.slerp(x, x, torch.tensor([0.25, 0.75]))


def test_slerp_names_a_missing_sample_and_an_int_alpha_past_float() -> None:
    """slerp(x, None, ...) (a model or loader that returned nothing) was an AttributeError on
    'shape', and an int alpha past float's range (10**400) an OverflowError from
    math.isfinite, where cfg and the other host numbers give a TypeError / ValueError."""
    a = np.array([[1.0, 0.0]])
    with pytest.raises(TypeError, match="x_b must be a real floating array, got None"):
        dc.slerp(a, None, 0.5)
    with pytest.raises(TypeError, match="x_a must be a real floating array, got None"):
        dc.slerp(None, a, 0.5)
    with pytest.raises(ValueError, match=r"alpha=1000.* must be a finite number"):
        dc.slerp(a, a, 10**400)


def test_slerp_gradient_is_finite_where_it_falls_back_to_the_chord() -> None:
    """Under torch autograd, slerp of parallel or opposite samples (slerp(x, x, t): two equal
    seeds) or of two zero samples gave NaN gradients: sqrt and atan2 at 0 have no derivative,
    and where() passed 0 * inf back from the branch it did not take. The value there is the
    chord's, and so is its derivative (the arc differs from it only to second order in theta);
    the value itself is unchanged, bit for bit."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    base = torch.from_numpy(rng.standard_normal((2, 5)))
    for other in (base, -base, 2.0 * base, torch.zeros_like(base)):
        x_a = base.clone().requires_grad_()
        x_b = other.clone().requires_grad_()
        dc.slerp(x_a, x_b, 0.3).sum().backward()
        assert x_a.grad is not None and x_b.grad is not None
        torch.testing.assert_close(x_a.grad, torch.full_like(base, 0.7))
        torch.testing.assert_close(x_b.grad, torch.full_like(base, 0.3))
    zero = torch.zeros(2, 5, dtype=torch.float64, requires_grad=True)
    dc.slerp(zero, zero, 0.3).sum().backward()
    assert zero.grad is not None and bool(torch.isfinite(zero.grad).all())
    x_a, x_b = (torch.from_numpy(rng.standard_normal((3, 4))).requires_grad_() for _ in "ab")
    got = dc.slerp(x_a, x_b, 0.3)
    np.testing.assert_array_equal(
        got.detach().numpy(), dc.slerp(x_a.detach().numpy(), x_b.detach().numpy(), 0.3)
    )
    got.sum().backward()
    assert x_a.grad is not None and bool(torch.isfinite(x_a.grad).all())


# --- quadratic timesteps -----------------------------------------------------------------


def test_quadratic_spacing_is_the_papers() -> None:
    """Song et al. 2021, appendix D.2: tau_i = floor(c i^2), c such that the last is 0.8 T."""
    config = dc.DDIMConfig(timestep_spacing="quadratic")
    expected = [math.floor(800 * (i / 9) ** 2 + 1e-9) for i in range(10)][::-1]
    assert dc.make_plan(config, 10).timesteps == tuple(expected)
    assert expected[0] == 800 and expected[-3:] == [39, 9, 0]
    offset = dc.make_plan(config.replace(steps_offset=1), 10)
    assert offset.timesteps == tuple(t + 1 for t in expected)
    assert offset.prev_timesteps[-1] == dc.FINAL


def test_quadratic_spacing_is_strictly_decreasing_for_every_step_count() -> None:
    """Where floor(c i^2) repeats (N > sqrt(0.8 T) + 1) the timestep moves up by one."""
    for T in (10, 1000):
        config = dc.DDIMConfig(num_train_timesteps=T, timestep_spacing="quadratic")
        for n in range(1, T + 1):
            ts = dc.spaced_timesteps(config, n)
            assert len(ts) == n and all(a > b for a, b in itertools.pairwise(ts))
            assert ts[-1] == 0 and ts[0] < T
            if n - 1 <= math.isqrt(4 * T // 5):  # c >= 1: no floor repeats, the paper's values
                assert ts[0] == (4 * T * (n - 1) ** 2) // (5 * max(n - 1, 1) ** 2)


def test_quadratic_spacing_samples_to_first_order_and_inverts() -> None:
    """Against the exact flow map from its first timestep (0.8 T), DDIM on the quadratic plan
    is first order (measured 1.5e-1, 7.4e-2, 3.7e-2 at N = 10, 20, 40: about half the error
    of leading spacing from 999), and exact inversion closes the round trip."""
    config = CONFIG.replace(timestep_spacing="quadratic")
    model = GaussianMixture.create([[1.5]], [0.5], config)
    x_T = np.random.default_rng(7).standard_normal((20, 1))
    errors = []
    for n in (10, 20, 40):
        first = dc.make_plan(config, n).timesteps[0]
        exact = model.ode_solution(x_T, model.schedule.alpha_bar(first))
        errors.append(np.abs(dc.sample(model, x_T, config, n) - exact).max())
    assert all(1.9 < a / b < 2.1 for a, b in itertools.pairwise(errors)), errors
    x0 = dc.sample(model, x_T, config, 20)
    z = dc.invert(model, x0, config, 20, fixed_point_iters=4)
    np.testing.assert_allclose(dc.sample(model, z, config, 20), x0, atol=1e-12)


def test_quadratic_spacing_has_no_diffusers_stride() -> None:
    with pytest.raises(ValueError, match='diffusers, which has no timestep_spacing="quadratic"'):
        dc.DDIMConfig(timestep_spacing="quadratic", prev_timestep="stride")


def test_guided_ode_solution_refuses_levels_outside_0_1() -> None:
    """alpha_bar = 0 (a zero-SNR schedule's first level) was a ZeroDivisionError."""
    model = guided(UNCOND, COND, 3.0)
    for bad in (0.0, -0.5, 1.5, math.nan):
        with pytest.raises(ValueError, match=r"ab_T=.* must be in \(0, 1\]"):
            model.ode_solution(np.zeros((1, 2)), bad)
    with pytest.raises(ValueError, match=r"ab_0=0.0 must be in \(0, 1\]"):
        model.ode_solution(np.zeros((1, 2)), 0.5, 0.0)
    with pytest.raises(ValueError, match=r"ab_T=0.0 must be in \(0, 1\]"):
        COND.ode_solution(np.zeros((1, 2)), 0.0, 0.5)
    np.testing.assert_allclose(COND.ode_solution(np.zeros((1, 2)), 0.0), COND.means)
    for bad in (-0.5, 1.5, math.nan):  # to the data: "math domain error" or a silent NaN
        with pytest.raises(ValueError, match=r"ab_T=.* must be in \[0, 1\]"):
            COND.ode_solution(np.zeros((1, 2)), bad)


def test_component_index_is_checked_and_negative_counts_from_the_end() -> None:
    """component(-1) and component(K) were empty mixtures (K=0) that failed on their first call
    with NumPy's 'zero-size array to reduction operation'; component(True) was component 1."""
    mixture = GaussianMixture.create([[0.0], [2.0], [5.0]], [0.3, 0.3, 0.4], CONFIG)
    assert mixture.component(-1).means.tolist() == [[5.0]]
    assert mixture.component(-3).stds.tolist() == [0.3]
    assert mixture.component(np.int64(1)).means.tolist() == [[2.0]]
    for k in (3, -4):
        with pytest.raises(ValueError, match=rf"k must be in \[-3, 2\], got {k}"):
            mixture.component(k)
    for k in (True, 1.5, "0"):
        with pytest.raises(TypeError, match="k must be an integer"):
            mixture.component(k)  # type: ignore[arg-type]


def test_a_mixture_keeps_its_own_parameters() -> None:
    """create kept the caller's means array itself: writing to it afterwards changed
    `model.means` but not the model's output (its device copy was cached), so the two
    disagreed silently. The parameters are now private read-only copies."""
    means = np.array([[0.0], [3.0]])
    model = GaussianMixture.create(means, [0.5, 0.5], CONFIG)
    x = np.zeros((1, 1))
    before = model(x, 500)
    means[:] = 10.0
    assert model.means.tolist() == [[0.0], [3.0]]
    np.testing.assert_array_equal(model(x, 500), before)
    for array in (model.means, model.stds, model.weights, model.component(1).means):
        with pytest.raises(ValueError, match="read-only"):
            array[...] = 1.0


def test_sample_data_checks_its_arguments() -> None:
    """A seed for rng was an AttributeError ('int' object has no attribute 'choice'), n=-1
    NumPy's 'negative dimensions', n=2.5 a TypeError from inside rng.choice."""
    rng = np.random.default_rng(0)
    assert COND.sample_data(0, rng).shape == (0, 2)
    with pytest.raises(TypeError, match=r"rng must be a numpy.random.Generator.*got int"):
        COND.sample_data(3, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n must be >= 0, got -1"):
        COND.sample_data(-1, rng)
    with pytest.raises(TypeError, match=r"n must be an integer, got 2\.5"):
        COND.sample_data(2.5, rng)  # type: ignore[arg-type]


def test_a_timestep_array_of_another_batch_is_named() -> None:
    """Per-sample timesteps of another length than the batch were NumPy's 'operands could not
    be broadcast together with shapes (2,1,2) (3,1,2)' from inside the responsibilities."""
    x = np.zeros((2, 2))
    with pytest.raises(ValueError, match=r"t has shape \(3,\); expected \(\) or \(2,\)"):
        COND(x, np.array([1, 2, 3]))
    for t in (np.array([5]), np.array([5, 5]), np.array(5)):
        np.testing.assert_array_equal(COND(x, t), COND(x, 5))


def test_ode_solution_refuses_samples_of_another_dimension() -> None:
    """x_T of shape (n, 1) for a 2-D model was broadcast over both coordinates, a silent wrong
    result; (n, 3) was NumPy's 'operands could not be broadcast together'."""
    model = guided(UNCOND, COND, 3.0)
    for solve in (COND.ode_solution, model.ode_solution):
        for shape in ((4, 1), (4, 3), ()):
            for ab_0 in (1.0, 0.9):
                with pytest.raises(
                    ValueError, match=rf"x_T has shape \({shape[0] if shape else ''}"
                ):
                    solve(np.zeros(shape), 0.5, ab_0)
        assert solve(np.zeros(2), 0.5).shape == (2,)  # one sample of shape (D,)
        assert solve([[0.0, 0.0]], 0.5, 0.9).shape == (1, 2)
