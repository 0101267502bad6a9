"""ddim_kdiffusion against the installed k-diffusion 0.1.1.post1 and diffusers.

Tolerances: float64 <= 1e-9 relative (1 + |theirs|); float32 <= 1e-5 relative.
The model is the exact epsilon predictor of a Gaussian mixture (ddim_core.analytic), wrapped in
k-diffusion's own `DiscreteEpsDDPMDenoiser(..., quantize=True)`.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from helpers import TOLERANCE, rel

import ddim_core as dc

torch = pytest.importorskip("torch")
if importlib.util.find_spec("k_diffusion") is None:  # never imports its heavy __init__
    pytest.skip("k-diffusion is not installed", allow_module_level=True)
import kdiffusion_loader  # noqa: E402
from parity import KD_CONFIG as CONFIG  # noqa: E402
from parity import kdiffusion_denoiser, kdiffusion_x_T  # noqa: E402

K_SAMPLING, _ = kdiffusion_loader.load()
import ddim_kdiffusion as dk  # noqa: E402

LIMIT = {torch.float64: 1e-9, torch.float32: TOLERANCE["float32"]}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("n", [10, 50])
def test_eta_zero_is_sample_euler(dtype: torch.dtype, spacing: str, n: int) -> None:
    model, _, table = kdiffusion_denoiser(dtype)
    sigmas = dk.get_sigmas_ddim(table, n, spacing=spacing)
    x = kdiffusion_x_T(sigmas, dtype)
    ours = dk.sample_ddim(model, x, sigmas, disable=True)
    theirs = K_SAMPLING.sample_euler(model, x, sigmas, disable=True)
    assert ours.dtype == dtype
    assert rel(ours, theirs) <= LIMIT[dtype]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("eta", [0.3, 1.0])
def test_eta_positive_is_sample_euler_ancestral_given_the_same_noise(
    dtype: torch.dtype, eta: float
) -> None:
    model, _, table = kdiffusion_denoiser(dtype)
    sigmas = dk.get_sigmas_ddim(table, 20, spacing="trailing")
    x = kdiffusion_x_T(sigmas, dtype)
    outs = []
    for sampler in (dk.sample_ddim, K_SAMPLING.sample_euler_ancestral):
        gen = torch.Generator().manual_seed(5)

        def noise(sigma, sigma_next, gen=gen):  # type: ignore[no-untyped-def]
            return torch.randn(x.shape, generator=gen, dtype=dtype)

        outs.append(
            sampler(model, x, sigmas, disable=True, eta=eta, s_noise=0.9, noise_sampler=noise)
        )
    assert rel(outs[0], outs[1]) <= LIMIT[dtype]


def test_equals_diffusers_ddim_scheduler_on_the_same_timesteps() -> None:
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.DDIMScheduler(clip_sample=False, timestep_spacing="leading")
    sched.alphas_cumprod = sched.alphas_cumprod.double()
    sched.final_alpha_cumprod = sched.final_alpha_cumprod.double()
    sched.set_timesteps(25)
    model, gm, _ = kdiffusion_denoiser(torch.float64, sched.alphas_cumprod)
    sigmas = dk.get_sigmas_ddim(sched.alphas_cumprod, 25, spacing="leading")
    x = kdiffusion_x_T(sigmas, torch.float64)
    ours = dk.sample_ddim(model, x, sigmas, disable=True)
    x_vp = x / (1 + sigmas[0] ** 2) ** 0.5
    for t in sched.timesteps:
        x_vp = sched.step(gm(x_vp, int(t)), t, x_vp).prev_sample
    assert rel(ours, x_vp) <= 1e-9


def test_inverse_equals_diffusers_ddim_inverse_scheduler() -> None:
    diffusers = pytest.importorskip("diffusers")
    inv = diffusers.DDIMInverseScheduler(clip_sample=False)
    inv.alphas_cumprod = inv.alphas_cumprod.double()
    inv.initial_alpha_cumprod = inv.initial_alpha_cumprod.double()
    inv.set_timesteps(25)
    model, gm, _ = kdiffusion_denoiser(torch.float64, inv.alphas_cumprod)
    sigmas = dk.get_sigmas_ddim(inv.alphas_cumprod, 25).flip(0)  # 0, then ascending
    assert float(sigmas[0]) == 0.0
    x0 = torch.randn(6, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ours = dk.sample_ddim_inverse(model, x0, sigmas, disable=True)
    assert bool(torch.isfinite(ours).all())
    x_vp = x0
    for t in inv.timesteps:
        x_vp = inv.step(gm(x_vp, int(t)), t, x_vp).prev_sample
    assert rel(ours / (1 + sigmas[-1] ** 2) ** 0.5, x_vp) <= 1e-9


def test_exact_inversion_round_trips_on_numpy_without_torch_arrays() -> None:
    schedule = dc.schedule(CONFIG)
    gm = dc.GaussianMixture.create(
        [[-2.0, 0.0], [2.0, 0.0]], [0.3, 0.3], CONFIG.replace(prediction_type="sample")
    )
    table_sigmas = np.sqrt((1 - schedule.alphas_cumprod) / schedule.alphas_cumprod)

    def denoiser(x: np.ndarray, sigma: np.ndarray) -> np.ndarray:
        t = np.abs(np.log(sigma)[:, None] - np.log(table_sigmas)[None, :]).argmin(axis=1)
        ab = schedule.alphas_cumprod[t][:, None]
        return gm(x * np.sqrt(ab), t)  # x0 prediction on the VP sample

    sigmas = dk.get_sigmas_ddim(CONFIG, 20, spacing="trailing")
    x0 = dk.sample_ddim(
        denoiser,
        np.random.default_rng(0).standard_normal((50, 2)) * sigmas[0],
        sigmas,
        disable=True,
    )
    up = sigmas[::-1].copy()
    plain = dk.sample_ddim_inverse(denoiser, x0, up, disable=True)
    exact = dk.sample_ddim_inverse(denoiser, x0, up, disable=True, fixed_point_iters=30, tol=1e-10)
    back_plain = dk.sample_ddim(denoiser, plain, sigmas, disable=True)
    back_exact = dk.sample_ddim(denoiser, exact, sigmas, disable=True)
    assert isinstance(exact, np.ndarray)
    assert np.abs(back_exact - x0).max() <= 1e-5 < np.abs(back_plain - x0).max()


def test_sigmas_of_a_plan() -> None:
    plan = dc.make_plan(CONFIG.replace(timestep_spacing="trailing", set_alpha_to_one=False), 5)
    sigmas = dk.get_sigmas_ddim(CONFIG, 5, spacing="trailing", set_alpha_to_one=False)
    ab = plan.schedule.alphas_cumprod
    expected = [np.sqrt((1 - ab[t]) / ab[t]) for t in (*plan.timesteps, 0)]
    np.testing.assert_allclose(sigmas, expected, rtol=1e-15)
    table = torch.from_numpy(ab).float()
    as_torch = dk.get_sigmas_ddim(table, 5, spacing="trailing")
    assert as_torch.dtype == torch.float32 and float(as_torch[-1]) == 0.0
    ab32 = table.double().numpy()  # the float32 table's own values
    on_table = [np.sqrt((1 - ab32[t]) / ab32[t]) for t in plan.timesteps]
    assert rel(as_torch[:-1], np.array(on_table)) <= TOLERANCE["float32"]


def test_callback_and_progress() -> None:
    model, _, table = kdiffusion_denoiser(torch.float64)
    sigmas = dk.get_sigmas_ddim(table, 4)
    seen: list[dict] = []
    dk.sample_ddim(
        model, kdiffusion_x_T(sigmas, torch.float64), sigmas, callback=seen.append, disable=True
    )
    assert [d["i"] for d in seen] == [0, 1, 2, 3]
    assert set(seen[0]) == {"x", "i", "sigma", "sigma_hat", "denoised"}
    assert torch.equal(seen[1]["sigma"], sigmas[1])


def test_register_adds_the_samplers_to_k_diffusion_sampling() -> None:
    from ddim_core import plugins

    assert plugins.register_adapters("k-diffusion") == ["k-diffusion"]
    assert K_SAMPLING.sample_ddim is dk.sample_ddim
    assert K_SAMPLING.sample_ddim_inverse is dk.sample_ddim_inverse


@pytest.mark.parametrize(
    ("sigmas", "kwargs", "match"),
    [
        ([1.0, 2.0], {}, "strictly descending"),
        ([1.0], {}, "at least 2"),
        ([1.0, -0.5], {}, "finite and >= 0"),
        ([1.0, 1.0, 0.0], {}, "strictly descending"),
    ],
)
def test_bad_sigmas(sigmas: list[float], kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=f"sigmas.*{match}"):
        dk.sample_ddim(lambda x, s: x, np.zeros((1, 2)), np.asarray(sigmas), **kwargs)


def test_bad_inverse_arguments() -> None:
    up = np.asarray([0.0, 1.0])
    with pytest.raises(ValueError, match="strictly ascending"):
        dk.sample_ddim_inverse(lambda x, s: x, np.zeros((1, 2)), up[::-1].copy())
    with pytest.raises(ValueError, match="fixed_point_iters must be >= 0, got -1"):
        dk.sample_ddim_inverse(lambda x, s: x, np.zeros((1, 2)), up, fixed_point_iters=-1)
    with pytest.raises(TypeError, match="eta > 0 needs noise_sampler"):
        dk.sample_ddim(lambda x, s: x, np.zeros((1, 2)), np.asarray([1.0, 0.5]), eta=1.0)
