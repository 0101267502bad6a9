"""ddim_kdiffusion against the installed k-diffusion 0.1.1.post1 and diffusers.

Tolerances: float64 <= 1e-9 relative (1 + |theirs|); float32 <= 1e-5 relative.
The model is the exact epsilon predictor of a Gaussian mixture (ddim_core.analytic), wrapped in
k-diffusion's own `DiscreteEpsDDPMDenoiser(..., quantize=True)`.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import re
import sys
from collections.abc import Callable
from typing import Any

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

    sigmas = dk.get_sigmas_ddim(CONFIG, 20, spacing="trailing", xp=np)
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
    sigmas = dk.get_sigmas_ddim(CONFIG, 5, spacing="trailing", set_alpha_to_one=False, xp=np)
    ab = plan.schedule.alphas_cumprod
    expected = [np.sqrt((1 - ab[t]) / ab[t]) for t in (*plan.timesteps, 0)]
    assert isinstance(sigmas, np.ndarray) and sigmas.dtype == np.float64
    np.testing.assert_allclose(sigmas, expected, rtol=1e-15)
    table = torch.from_numpy(ab).float()
    as_torch = dk.get_sigmas_ddim(table, 5, spacing="trailing")
    assert as_torch.dtype == torch.float32 and float(as_torch[-1]) == 0.0
    ab32 = table.double().numpy()  # the float32 table's own values
    on_table = [np.sqrt((1 - ab32[t]) / ab32[t]) for t in plan.timesteps]
    assert rel(as_torch[:-1], np.array(on_table)) <= TOLERANCE["float32"]


def test_sigmas_are_a_tensor_on_the_device_asked_for_like_k_diffusions() -> None:
    """A config gives what k-diffusion's get_sigmas_* give: a tensor in torch's default dtype
    on `device` (CPU by default); a table gives its own library, device and dtype."""
    theirs = K_SAMPLING.get_sigmas_karras(5, 0.03, 14.6)
    ours = dk.get_sigmas_ddim(CONFIG, 5)
    assert type(ours) is type(theirs) and (ours.dtype, ours.device) == (theirs.dtype, theirs.device)
    exact = dk.get_sigmas_ddim(CONFIG, 5, xp=np)
    assert torch.equal(ours, torch.from_numpy(exact).float())
    wide = dk.get_sigmas_ddim(CONFIG, 5, dtype=torch.float64)
    assert np.array_equal(wide.numpy(), exact)
    on_meta = dk.get_sigmas_ddim(CONFIG, 5, device="meta")
    assert on_meta.device.type == "meta" and on_meta.shape == (6,)
    table = torch.from_numpy(dc.schedule(CONFIG).alphas_cumprod)  # float64
    from_table = dk.get_sigmas_ddim(table, 5, device="meta")
    assert from_table.device.type == "meta" and from_table.dtype == torch.float64
    assert np.array_equal(dk.get_sigmas_ddim(table, 5, xp=np), exact)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without CUDA")
@pytest.mark.parametrize("dtype", [None, torch.float32])
def test_sigmas_on_a_device_torch_lacks_is_a_value_error_naming_it(dtype: Any) -> None:
    """`get_sigmas_ddim(config, n, device="cuda")` on a CPU-only torch ended in torch's
    `AssertionError: Torch not compiled with CUDA enabled` (from the probe of the default
    dtype), where the same call with dtype= gave the ValueError naming the device."""
    with pytest.raises(ValueError, match=r"device='cuda'.* is not supported by"):
        dk.get_sigmas_ddim(CONFIG, 5, device="cuda", dtype=dtype)


def _requires_grad_denoiser() -> tuple[torch.nn.Parameter, Callable[..., torch.Tensor]]:
    weight = torch.nn.Parameter(torch.tensor(0.9, dtype=torch.float64))
    return weight, lambda x, sigma: weight * x / (1 + sigma[:, None] ** 2)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_default_noise_is_k_diffusions_from_the_same_global_seed(layout: str) -> None:
    """Without a noise_sampler both draw from torch's global generator, k-diffusion with
    torch.randn_like(x), whose values follow x's memory layout: a channels_last latent (or any
    strided view) got other noise than sample_euler_ancestral from the same seed."""
    sigmas = dk.get_sigmas_ddim(CONFIG, 8, spacing="trailing", dtype=torch.float64)
    x = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    x = x * sigmas[0]

    def model(x: Any, sigma: Any) -> Any:
        return torch.tanh(x / (1 + sigma[:, None, None, None] ** 2).sqrt())

    outs = []
    for sampler in (dk.sample_ddim, K_SAMPLING.sample_euler_ancestral):
        torch.manual_seed(11)
        outs.append(sampler(model, x, sigmas, disable=True, eta=1.0, s_noise=0.8))
    assert rel(outs[0], outs[1]) <= LIMIT[torch.float64]


def _smooth_denoiser(x: Any, sigma: Any) -> Any:
    return torch.tanh(x / (1 + sigma[:, None] ** 2).sqrt()) * 0.8 + 0.1


@pytest.mark.parametrize("sigma_min", [1e-6, 1e-9])
def test_small_sigmas_keep_the_parity_with_k_diffusion(sigma_min: float) -> None:
    """1 - alpha_bar = 1 - 1 / (1 + sigma^2) cancels for small sigmas: with Karras sigmas down
    to 1e-6 sample_ddim was 1.7e-7 from sample_euler in float64 (1e-9 allowed), and below
    about 1e-8 (alpha_bar rounds to 1) it refused the step ('alpha_bar = 1 there'), where
    k-diffusion steps; plain inversion was 2e-6 (1e-6) and 2e-3 (1e-9) from its VE form."""
    sigmas = K_SAMPLING.get_sigmas_karras(30, sigma_min, 80.0).double()
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ours = dk.sample_ddim(_smooth_denoiser, x * sigmas[0], sigmas, disable=True)
    theirs = K_SAMPLING.sample_euler(_smooth_denoiser, x * sigmas[0], sigmas, disable=True)
    assert rel(ours, theirs) <= LIMIT[torch.float64]
    outs = []
    for sampler in (dk.sample_ddim, K_SAMPLING.sample_euler_ancestral):
        gen = torch.Generator().manual_seed(1)

        def noise(sigma, sigma_next, gen=gen):  # type: ignore[no-untyped-def]
            return torch.randn(x.shape, generator=gen, dtype=x.dtype)

        outs.append(
            sampler(
                _smooth_denoiser, x * sigmas[0], sigmas, disable=True, eta=1.0, noise_sampler=noise
            )
        )
    assert rel(outs[0], outs[1]) <= LIMIT[torch.float64]
    up = sigmas[:-1].flip(0)[:6]  # plain inversion: y - (s_b - s_a) eps at s_b on y
    expected = x
    for s_a, s_b in zip(up[:-1].tolist(), up[1:].tolist(), strict=True):
        y = expected * math.sqrt((1 + s_b**2) / (1 + s_a**2))
        eps = (y - _smooth_denoiser(y, torch.full((4,), s_b, dtype=x.dtype))) / s_b
        expected = expected + (s_b - s_a) * eps
    got = dk.sample_ddim_inverse(_smooth_denoiser, x, up, disable=True)
    assert rel(got, expected) <= LIMIT[torch.float64]


def test_samplers_build_no_autograd_graph_like_k_diffusions() -> None:
    """k-diffusion's samplers run under torch.no_grad(): a model with parameters that require
    grad gives an output without a graph (and no memory kept for one)."""
    _, model = _requires_grad_denoiser()
    sigmas = dk.get_sigmas_ddim(CONFIG, 5, dtype=torch.float64)
    x = torch.ones(2, 3, dtype=torch.float64) * sigmas[0]
    assert model(x, sigmas[:1].expand(2)).requires_grad  # outside the samplers: a graph
    theirs = K_SAMPLING.sample_euler(model, x, sigmas, disable=True)
    outs = [
        dk.sample_ddim(model, x, sigmas, disable=True),
        dk.sample_ddim(model, x, sigmas, disable=True, eta=1.0),
        dk.sample_ddim_inverse(model, x, sigmas.flip(0), disable=True),
        dk.sample_ddim_inverse(model, x, sigmas.flip(0), disable=True, fixed_point_iters=2),
    ]
    assert not theirs.requires_grad
    assert all(not out.requires_grad and out.grad_fn is None for out in outs)
    assert torch.is_grad_enabled()


def test_eta_above_one_is_sample_euler_ancestral_until_it_would_clamp() -> None:
    """The docs' claim for eta > 1: sample_euler_ancestral's numbers while no step's sigma_up
    exceeds sigma_next (200 fine steps at eta 1.1); where k-diffusion clamps it (eta 1.3
    over the same sigmas, or 1.2 over 20 coarse steps) DDIM is undefined, and sample_ddim
    refuses the step before any model call."""
    model, _, table = kdiffusion_denoiser(torch.float64)
    fine = dk.get_sigmas_ddim(table, 200, spacing="trailing")
    x = kdiffusion_x_T(fine, torch.float64)
    ours, theirs = _ours_and_ancestral(model, x, fine, 1.1, seed=7)
    assert rel(ours, theirs) <= LIMIT[x.dtype]
    coarse = dk.get_sigmas_ddim(table, 20, spacing="trailing")
    for sigmas, eta in ((fine, 1.3), (coarse, 1.2)):
        counted = _counting(model)
        with pytest.raises(ValueError, match=rf"cannot step from sigma .*eta={eta}"):
            dk.sample_ddim(counted, x, sigmas, disable=True, eta=eta)
        assert counted.calls == 0


def _ours_and_ancestral(model: Any, x: Any, sigmas: Any, eta: float, seed: int) -> list[Any]:
    """sample_ddim's and k-diffusion's sample_euler_ancestral's results at `eta`, each
    drawing its noise from a torch.Generator seeded alike."""
    outs = []
    for sampler in (dk.sample_ddim, K_SAMPLING.sample_euler_ancestral):
        gen = torch.Generator().manual_seed(seed)

        def noise(sigma, sigma_next, gen=gen):  # type: ignore[no-untyped-def]
            return torch.randn(x.shape, generator=gen, dtype=x.dtype)

        outs.append(sampler(model, x, sigmas, disable=True, eta=eta, noise_sampler=noise))
    return outs


def _counting(model: Callable[..., Any]) -> Any:
    def counted(*args: Any, **kwargs: Any) -> Any:
        counted.calls += 1  # type: ignore[attr-defined]
        return model(*args, **kwargs)

    counted.calls = 0  # type: ignore[attr-defined]
    return counted


def test_repeated_sigmas_are_zero_length_steps_as_in_k_diffusion() -> None:
    """A repeated sigma (ComfyUI's `simple` schedule at many steps and low denoise) is the
    identity: sample_euler and sample_euler_ancestral take it, and so do ours, with the same
    result as without the repeat and one model call per distinct level."""
    model, _, table = kdiffusion_denoiser(torch.float64)
    sigmas = dk.get_sigmas_ddim(table, 6, spacing="trailing")
    repeated = sigmas[[0, 1, 1, 2, 3, 3, 3, 4, 5, 6]]
    x = kdiffusion_x_T(sigmas, torch.float64)
    counted, seen = _counting(model), []
    ours = dk.sample_ddim(counted, x, repeated, disable=True, callback=seen.append)
    assert [d["i"] for d in seen] == list(range(9)) and counted.calls == 6
    assert torch.equal(ours, dk.sample_ddim(model, x, sigmas, disable=True))
    at_zero = sigmas[[0, 1, 2, 3, 4, 5, 6, 6]]  # (k-diffusion's Euler divides by 0 there)
    assert torch.equal(ours, dk.sample_ddim(model, x, at_zero, disable=True))
    assert rel(ours, K_SAMPLING.sample_euler(model, x, repeated, disable=True)) <= LIMIT[x.dtype]
    ours_1, theirs_1 = _ours_and_ancestral(model, x, repeated, 1.0, seed=3)
    assert rel(ours_1, theirs_1) <= LIMIT[x.dtype]  # one noise stream, read alike
    up = at_zero.flip(0)[[0, 1, 1, 2, 3, 4, 4, 5, 6, 7]]
    x0 = torch.randn(6, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for k in (0, 3):
        a = dk.sample_ddim_inverse(model, x0, up, disable=True, fixed_point_iters=k)
        b = dk.sample_ddim_inverse(model, x0, sigmas.flip(0), disable=True, fixed_point_iters=k)
        assert torch.equal(a, b)


@pytest.mark.parametrize("sampler", [dk.sample_ddim, dk.sample_ddim_inverse])
@pytest.mark.parametrize("levels", [[7.5], []])
def test_one_sigma_or_none_makes_no_step(sampler: Any, levels: list[float]) -> None:
    """What SplitSigmas gives at the last step; k-diffusion's samplers return x as is."""
    counted = _counting(lambda x, s: x)
    x = torch.ones(2, 3)
    sigmas = torch.tensor(levels)
    assert sampler(counted, x, sigmas, disable=True) is x and counted.calls == 0
    assert K_SAMPLING.sample_euler(counted, x, sigmas, disable=True) is x


def test_tol_means_what_it_means_in_core_invert() -> None:
    """The residual is measured on the VP sample, as ddim_core.invert measures it: the same
    fixed_point_iters and tol make the same model calls in both."""
    config = CONFIG.replace(timestep_spacing="trailing")
    model, gm, table = kdiffusion_denoiser(torch.float64)
    sigmas = dk.get_sigmas_ddim(table, 10, spacing="trailing")
    x0 = gm.sample_data(8, np.random.default_rng(2))
    for k, tol in ((1, None), (4, None), (20, 1e-4), (20, 1e-8)):
        infos: list[dc.StepInfo] = []
        dc.invert(gm, x0, config, 10, fixed_point_iters=k, tol=tol, callback=infos.append)
        counted = _counting(model)
        dk.sample_ddim_inverse(
            counted,
            torch.from_numpy(x0),
            sigmas.flip(0),
            disable=True,
            fixed_point_iters=k,
            tol=tol,
        )
        assert counted.calls == sum(i.model_calls for i in infos), (k, tol)


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


def test_the_docs_name_every_sampler_register_adds() -> None:
    """README.md said `register()` adds "the three functions" and the guide named three, where
    it adds the reversible samplers and their inverses too (nine names): each is named."""
    from pathlib import Path

    root = Path(__file__).parents[1]
    readme = root.joinpath("README.md").read_text(encoding="utf-8")
    guide = root.joinpath("docs", "guides", "k-diffusion.md").read_text(encoding="utf-8")
    says = {
        "README.md": readme.split("## k-diffusion")[1].split("\n## ")[0],
        "k-diffusion.md": guide.split("## Register with k-diffusion")[1],
    }
    names = dk.register()
    assert len(names) == 9
    for page, text in says.items():
        named = set(re.findall(r"\b(?:sample|get)_\w+", text))
        for name in names:  # "sample_edict / sample_bdia / sample_belm (and _inverse)"
            base = name.removesuffix("_inverse")
            assert name in named or (base in named and "_inverse" in text), (page, name)
        assert "the three functions" not in text, page


def test_register_where_k_diffusion_cannot_import_says_what_to_install(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """k-diffusion's package `__init__` imports its training modules (scikit-image,
    torchvision, clean-fid, ...), so where one is missing (a --no-deps install, which the guide
    recommended) `register()` ended in `ModuleNotFoundError: No module named 'skimage'` from
    inside k_diffusion/augmentation.py. It now says that register() needs k_diffusion
    importable, why it is not, and what to install; the samplers themselves need no
    k-diffusion."""
    package = tmp_path / "k_diffusion"
    package.mkdir()
    (package / "__init__.py").write_text("from . import augmentation, sampling\n")
    (package / "augmentation.py").write_text("import no_such_training_dependency\n")
    (package / "sampling.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "k_diffusion" or m.startswith("k_diffusion.")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(ImportError) as caught:
        dk.register()
    message = str(caught.value)
    assert "register() needs k_diffusion.sampling importable" in message, message
    assert "no_such_training_dependency" in message, message
    assert "pip install 'ddim-core[kdiffusion]'" in message, message
    assert "ddim_kdiffusion.sample_ddim" in message, message


@pytest.mark.parametrize(
    ("sigmas", "match"),
    [
        ([1.0, 2.0], r"descending \(sampling\), got sigmas\[0\] = 1.0 then sigmas\[1\] = 2.0"),
        ([1.0, -0.5], r"finite and >= 0, got sigmas\[1\] = -0.5"),
        ([3.0, float("nan"), 0.0], r"finite and >= 0, got sigmas\[1\] = nan"),
        ([[1.0, 0.0]], r"a 1-D array, got shape \(1, 2\)"),
    ],
)
def test_bad_sigmas(sigmas: list[float], match: str) -> None:
    with pytest.raises(ValueError, match=f"sigmas must be {match}"):
        dk.sample_ddim(lambda x, s: x, np.zeros((1, 2)), np.asarray(sigmas))


@pytest.mark.parametrize("sampler", [dk.sample_ddim, dk.sample_ddim_inverse])
@pytest.mark.parametrize("dtype", [np.complex128, np.bool_])
def test_sigmas_that_are_not_real_numbers_are_refused(sampler: Any, dtype: Any) -> None:
    """Complex sigmas were read as their real parts (a NumPy ComplexWarning, then a sample at
    other levels than asked), booleans as 1 and 0; x of those dtypes is refused already."""
    sigmas = np.asarray([0.0, 1.0 + 2.0j] if dtype is np.complex128 else [False, True], dtype)
    if sampler is dk.sample_ddim:
        sigmas = sigmas[::-1].copy()
    with pytest.raises(TypeError, match=f"sigmas must be real numbers, got dtype {sigmas.dtype}"):
        sampler(lambda x, s: x, np.zeros((1, 2)), sigmas, disable=True)


@pytest.mark.parametrize("sampler", [dk.sample_ddim, dk.sample_ddim_inverse, dk.sample_edict])
def test_sigmas_none_is_named(sampler: Any) -> None:
    """sigmas=None (an unset schedule) said "expected at least one array among ['sigmas']",
    where x=None says "x must be an array, got None"."""
    with pytest.raises(TypeError, match=r"^sigmas must be a 1-D array of noise levels, got None"):
        sampler(lambda x, s: x, np.zeros((1, 2)), None, disable=True)


def test_bad_inverse_arguments() -> None:
    up = np.asarray([0.0, 1.0])
    with pytest.raises(ValueError, match=r"ascending \(inversion\)"):
        dk.sample_ddim_inverse(lambda x, s: x, np.zeros((1, 2)), up[::-1].copy())
    with pytest.raises(ValueError, match="fixed_point_iters must be >= 0, got -1"):
        dk.sample_ddim_inverse(lambda x, s: x, np.zeros((1, 2)), up, fixed_point_iters=-1)
    with pytest.raises(ValueError, match=r"tol=1e-06 needs fixed_point_iters >= 1, got 0"):
        dk.sample_ddim_inverse(lambda x, s: x, np.zeros((1, 2)), up, tol=1e-6)  # as dc.invert
    with pytest.raises(TypeError, match="eta > 0 needs noise_sampler"):
        dk.sample_ddim(lambda x, s: x, np.zeros((1, 2)), np.asarray([1.0, 0.5]), eta=1.0)
    with pytest.raises(ImportError, match="pass xp=numpy"), pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "torch", None)
        dk.get_sigmas_ddim(CONFIG, 5)


def test_bfloat16_sigmas_and_tables_are_taken() -> None:
    """A model cast to bfloat16 has a bfloat16 alphas_cumprod and gives bfloat16 sigmas: they
    are read on the host through float32 (NumPy has no bfloat16; it raised a TypeError)."""
    table = torch.as_tensor(np.array(dc.schedule(CONFIG).alphas_cumprod)).to(torch.bfloat16)
    sigmas = dk.get_sigmas_ddim(table, 10)
    wide = dk.get_sigmas_ddim(table.float(), 10)
    assert sigmas.dtype == torch.bfloat16 and torch.equal(sigmas, wide.to(torch.bfloat16))
    x = torch.randn(1, 2, generator=torch.Generator().manual_seed(0)) * float(sigmas[0])

    def denoiser(x, sigma, **kwargs):  # type: ignore[no-untyped-def]
        return x / (1 + sigma.reshape(-1, 1) ** 2)

    got = dk.sample_ddim(denoiser, x.to(torch.bfloat16), sigmas, disable=True)
    want = dk.sample_ddim(denoiser, x.to(torch.bfloat16), sigmas.float(), disable=True)
    assert got.dtype == torch.bfloat16 and torch.equal(got, want)
    back = dk.sample_ddim_inverse(denoiser, got, sigmas.flip(0), disable=True)
    assert back.dtype == torch.bfloat16 and bool(torch.isfinite(back).all())


def test_a_dtype_that_is_not_real_floating_is_refused() -> None:
    """dtype=torch.int64 (or an integer table) truncated the sigmas to 17, 3, 0, ... without a
    word; a dtype of another library and an xp that is no library were its own errors."""
    config = dc.DDIMConfig()
    for dtype in (torch.int64, torch.bool, torch.complex64, np.float32):
        with pytest.raises(
            TypeError, match=rf"dtype must be a real floating dtype.*{re.escape(str(dtype))}"
        ):
            dk.get_sigmas_ddim(config, 4, dtype=dtype)
    with pytest.raises(TypeError, match=r"dtype must be a real floating dtype.*int64"):
        dk.get_sigmas_ddim(config, 4, xp=np, dtype=np.int64)
    with pytest.raises(TypeError, match="the alphas_cumprod table's dtype must be"):
        dk.get_sigmas_ddim(torch.tensor([1, 1, 0]), 2)
    with pytest.raises(TypeError, match=r"xp must be an array library.*got 3"):
        dk.get_sigmas_ddim(config, 4, xp=3)
    assert dk.get_sigmas_ddim(config, 4, xp=np, dtype="float32").dtype == np.float32


def test_a_table_or_sigmas_on_the_meta_device_are_named() -> None:
    """A table or sigmas on torch's meta device (shapes, no values) raised torch's
    NotImplementedError 'Cannot copy out of meta tensor; no data!' from inside the host read,
    naming neither the argument nor its device."""
    table = torch.linspace(0.99, 0.01, 1000, device="meta")
    with pytest.raises(ValueError, match="alphas_cumprod is on device 'meta', whose values"):
        dk.get_sigmas_ddim(table, 4)
    sigmas = torch.tensor([14.6, 1.0, 0.0], device="meta")
    x = torch.zeros(1, 2, device="meta")
    with pytest.raises(ValueError, match="sigmas is on device 'meta', whose values the host"):
        dk.sample_ddim(lambda x, sigma: x, x, sigmas, disable=True)


@pytest.mark.parametrize("sampler", [dk.sample_ddim, dk.sample_ddim_inverse])
def test_the_model_sees_sigmas_in_the_samples_dtype_on_numpy_too(sampler: Any) -> None:
    """k-diffusion's `sigmas[i] * s_in` is in the sample's dtype for torch (a 0-d sigma does
    not promote); NumPy promotes to the sigmas' dtype, so a float16 loop on float64 sigmas
    gave the model float64 sigmas and came back float64."""
    sigmas = dk.get_sigmas_ddim(CONFIG, 4, spacing="trailing", xp=np)[:-1]
    if sampler is dk.sample_ddim_inverse:
        sigmas = sigmas[::-1].copy()
    seen = []

    def model(x: Any, sigma: Any) -> Any:
        seen.append(sigma.dtype)
        return 0.5 * x / (1.0 + sigma[:, None] ** 2)

    x = np.ones((2, 3), dtype=np.float16)
    out = sampler(model, x, sigmas, disable=True)
    assert out.dtype == np.float16 and set(seen) == {np.dtype(np.float16)}


@pytest.mark.parametrize(
    ("x_dtype", "out_dtype", "noise_dtype"),
    [
        (torch.float16, torch.float32, torch.float16),  # a half x, a model answering in float32
        (torch.float32, torch.float64, torch.float32),
        (torch.float32, torch.float32, torch.float64),  # noise_sampler in another dtype
    ],
)
def test_samples_stay_in_xs_dtype_whatever_the_model_and_noise_dtypes(
    x_dtype: torch.dtype, out_dtype: torch.dtype, noise_dtype: torch.dtype
) -> None:
    """A model that answers a half x in float32 (or float32 in float64), or noise in another
    dtype, gave a float32 (float64) result from sample_ddim and plain sample_ddim_inverse,
    while the exact inverse, the reversible samplers and ddim_core's loops keep x's dtype."""
    sigmas = dk.get_sigmas_ddim(CONFIG, 5, spacing="trailing")

    def model(x: Any, sigma: Any) -> Any:
        return (0.5 * x / (1 + sigma[:, None] ** 2)).to(out_dtype)

    def noise(sigma: Any, sigma_next: Any) -> Any:
        return torch.zeros(2, 3, dtype=noise_dtype)

    x = torch.ones(2, 3, dtype=x_dtype)
    seen: list[torch.dtype] = []
    outs = [
        dk.sample_ddim(model, x * sigmas[0], sigmas, disable=True),
        dk.sample_ddim(model, x * sigmas[0], sigmas, disable=True, eta=1.0, noise_sampler=noise),
        dk.sample_ddim_inverse(model, x, sigmas.flip(0), disable=True),
        dk.sample_ddim_inverse(model, x, sigmas.flip(0), disable=True, fixed_point_iters=2),
        dk.sample_ddim(
            model, x, sigmas, disable=True, callback=lambda d: seen.append(d["x"].dtype)
        ),
    ]
    assert [out.dtype for out in outs] == [x_dtype] * len(outs)
    assert set(seen) == {x_dtype}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_sampling_steps_are_computed_in_float32_and_rounded_once(
    dtype: torch.dtype,
) -> None:
    """A sample_ddim step on a half x with a half model output ran its arithmetic in half
    precision (x times sqrt(abar), then the update): over a ulp from the exact step of the
    same inputs, where ddim_core computes half precision in float32 and rounds once."""
    sigmas = torch.tensor([14.6, 3.0, 1.0, 0.3, 0.03], dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(2, 4, 16, 16, generator=gen, dtype=torch.float64) * sigmas[0]).to(dtype)

    def model(x: Any, sigma: Any) -> Any:  # the same output for the half and exact runs
        return (x.double() * 0.1 + 0.2).to(dtype)

    for i in range(len(sigmas) - 1):
        pair = sigmas[i : i + 2]
        got = dk.sample_ddim(model, x, pair, disable=True)
        exact = dk.sample_ddim(lambda x, s: model(x, s).double(), x.double(), pair, disable=True)
        binade = torch.exp2(torch.floor(torch.log2(exact.abs().clamp(min=1e-30))))
        half_ulp = 0.5 * torch.finfo(dtype).eps * binade
        float32_error = 4 * 2.0**-24 * float(x.double().abs().max())  # where terms cancel
        assert bool(((got.double() - exact).abs() <= 1.01 * half_ulp + float32_error).all()), i
        x = got


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("answers_in", ["x's dtype", "float32"])
@pytest.mark.parametrize("k", [0, 4])
def test_half_precision_inversion_steps_are_computed_in_float32_and_rounded_once(
    dtype: torch.dtype, answers_in: str, k: int
) -> None:
    """A sample_ddim_inverse step on a half x formed its intermediates in half precision: the
    model's point x * sqrt(abar_s / abar_t) and eps = (y - denoised) / sigma (plain), and the
    target x * sqrt(abar_s) and the forward step (y - h eps) * sqrt(abar_s) the exact solve
    measures (k > 0): over a ulp from the exact step of the same inputs, where ddim_core
    computes half precision in float32 and rounds once.

    The model answers alike in the half and exact runs: plain, it predicts the same x0
    everywhere (the runs evaluate it at differently rounded points); exact, it is the denoiser
    of N(0, 1) data, y / (1 + sigma^2), at levels where that is a power of two (exact in every
    dtype), so the solver's preconditioner is exact and its half iterates settle."""
    if k == 0:
        sigmas = torch.tensor([0.0, 0.03, 0.3, 1.0, 3.0, 14.6], dtype=torch.float64)
    else:  # 1 + sigma^2 = 2, 4, 8, 64
        levels = [0.3, *(math.sqrt(2.0**j - 1) for j in (1, 2, 3, 6))]
        sigmas = torch.tensor(levels, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 16, 16, generator=gen, dtype=torch.float64).to(dtype)
    x0 = (torch.randn(2, 4, 16, 16, generator=gen, dtype=torch.float64) * 0.5).to(dtype)
    answer = dtype if answers_in == "x's dtype" else torch.float32

    for i in range(len(sigmas) - 1):
        pair = sigmas[i : i + 2]
        shrink = 2.0 ** -round(math.log2(1.0 + float(pair[1]) ** 2))  # the denoiser's factor

        def model(y: Any, sigma: Any, exact: bool = False, shrink: float = shrink) -> Any:
            out = x0.double() if k == 0 else y.double() * shrink
            return out if exact else out.to(answer)

        got = dk.sample_ddim_inverse(model, x, pair, disable=True, fixed_point_iters=k)
        exact = dk.sample_ddim_inverse(
            functools.partial(model, exact=True),
            x.double(),
            pair,
            disable=True,
            fixed_point_iters=k,
        )
        assert got.dtype == dtype
        binade = torch.exp2(torch.floor(torch.log2(exact.abs().clamp(min=1e-30))))
        half_ulp = 0.5 * torch.finfo(dtype).eps * binade
        size = max(float(x.double().abs().max()), float(exact.abs().max()))
        float32_error = 4 * 2.0**-24 * size  # where terms cancel
        assert bool(((got.double() - exact).abs() <= 1.01 * half_ulp + float32_error).all()), i
        x = got


def test_a_noise_sampler_that_is_not_callable_is_refused_by_name() -> None:
    """It raised "'int' object is not callable" from inside the loop."""
    with pytest.raises(TypeError, match=r"noise_sampler must be callable.*got 3"):
        dk.sample_ddim(
            lambda x, s: x, torch.ones(1, 2), torch.tensor([1.0, 0.0]), eta=1.0, noise_sampler=3
        )


@pytest.mark.parametrize("sampler", [dk.sample_ddim, dk.sample_ddim_inverse])
def test_sigmas_of_another_library_than_x_are_taken(sampler: Any) -> None:
    """The sigmas are read to the host once; the model's `sigma * s_in` is built from those
    levels (as the reversible samplers do), so JAX sigmas with a torch x gave "unsupported
    operand type(s) for *: 'ArrayImpl' and 'Tensor'" where NumPy sigmas worked."""
    jnp = pytest.importorskip("jax.numpy")
    sigmas = dk.get_sigmas_ddim(CONFIG, 4, spacing="trailing", dtype=torch.float64)
    if sampler is dk.sample_ddim_inverse:
        sigmas = sigmas.flip(0)
    seen: list[torch.Tensor] = []

    def model(x: Any, sigma: Any) -> Any:
        seen.append(sigma)
        return 0.5 * x / (1 + sigma[:, None] ** 2)

    x = torch.ones(2, 3)
    want = sampler(model, x, sigmas, disable=True)
    expected, seen[:] = list(seen), []
    got = sampler(model, x, jnp.asarray(sigmas.numpy()), disable=True)
    assert torch.equal(got, want)
    assert len(seen) == len(expected) and all(map(torch.equal, seen, expected))
    s_in = torch.ones(2)  # k-diffusion's sigmas[i] * s_in, bit for bit
    assert all(any(torch.equal(a, s * s_in) for s in sigmas) for a in seen)
    assert {a.dtype for a in seen} == {torch.float32}


@pytest.mark.parametrize(("index", "bad"), [(2, float("nan")), (0, 1.5), (3, -0.1)])
def test_a_table_value_outside_0_1_is_named(index: int, bad: float) -> None:
    """It said only "alphas_cumprod must be a non-empty table of values in [0, 1]"."""
    table = torch.tensor([0.99, 0.9, 0.5, 0.1], dtype=torch.float64)
    table[index] = bad
    match = rf"values in \[0, 1\], got alphas_cumprod\[{index}\] = {bad}"
    with pytest.raises(ValueError, match=match):
        dk.get_sigmas_ddim(table, 2)


def test_a_noise_sampler_that_returns_none_is_refused_not_skipped() -> None:
    """eta = 1 with a noise_sampler returning None sampled without noise (the eta = 1
    direction, no variance: a silently wrong sample); k-diffusion raises there too."""
    sigmas = torch.tensor([2.0, 1.0, 0.5, 0.0])
    with pytest.raises(TypeError, match=r"noise_sampler returned None"):
        dk.sample_ddim(
            lambda x, s: 0.5 * x, torch.ones(1, 2), sigmas, eta=1.0, noise_sampler=lambda a, b: None
        )


@pytest.mark.parametrize("sampler", [dk.sample_ddim, dk.sample_ddim_inverse])
def test_a_model_that_returns_none_is_named(sampler: Any) -> None:
    """It raised "AttributeError: 'NoneType' object has no attribute 'shape'"."""
    sigmas = torch.tensor([2.0, 1.0, 0.0])
    if sampler is dk.sample_ddim_inverse:
        sigmas = sigmas.flip(0)
    with pytest.raises(TypeError, match=r"the model returned None"):
        sampler(lambda x, s: None, torch.ones(1, 2), sigmas, disable=True)


@pytest.mark.parametrize(
    ("source", "options"),
    [
        ("config", {"device": "nope"}),
        ("table", {"device": "nope"}),
        ("config", {"xp": np, "device": "gpu"}),
        ("table", {"xp": np, "device": "gpu"}),
    ],
)
def test_a_device_the_library_lacks_is_named(source: str, options: dict[str, Any]) -> None:
    """device="nope" gave torch's RuntimeError 'Expected one of cpu, cuda, ... device type at
    start of device string: nope' (NumPy's ValueError "Unsupported device for NumPy: 'gpu'"),
    naming no argument, where dc.alphas_cumprod(..., device=) names it."""
    config = dc.DDIMConfig()
    first = config if source == "config" else torch.from_numpy(dc.schedule(config).alphas_cumprod)
    with pytest.raises(ValueError, match=rf"device={options['device']!r}.* is not supported"):
        dk.get_sigmas_ddim(first, 4, **options)


@pytest.mark.parametrize(("n", "error"), [(0, ValueError), (1001, ValueError), (2.5, TypeError)])
def test_a_bad_step_count_is_named_n(n: Any, error: type) -> None:
    """get_sigmas_ddim's step count is `n`: its errors said num_inference_steps, a name the
    caller never wrote."""
    with pytest.raises(error, match=r"^n must be"):
        dk.get_sigmas_ddim(dc.DDIMConfig(), n)


@pytest.mark.parametrize(
    ("spacing", "error", "match"),
    [
        ("Trailing", ValueError, r"^spacing='Trailing' is not supported; choose one of"),
        (1, TypeError, r"^spacing must be a string, one of"),
    ],
)
def test_a_bad_spacing_is_named_spacing(spacing: Any, error: type, match: str) -> None:
    """get_sigmas_ddim's spacing is `spacing`: its errors said timestep_spacing (the
    DDIMConfig option it sets), a name the caller never wrote."""
    for first in (dc.DDIMConfig(), torch.from_numpy(dc.alphas_cumprod(dc.DDIMConfig()))):
        with pytest.raises(error, match=match):
            dk.get_sigmas_ddim(first, 4, spacing=spacing)


@pytest.mark.parametrize("first", ["config dict", "scheduler", None])
def test_a_first_argument_that_is_no_config_or_table_says_what_to_pass(first: Any) -> None:
    """get_sigmas_ddim(scheduler.config, 50), a diffusers config dict, said "alphas_cumprod
    must be an array (numpy, torch, ...), got FrozenDict" (None: "expected at least one array
    among ['alphas_cumprod']"), naming neither the argument nor the DDIMConfig it takes."""
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.DDIMScheduler()
    given = {"config dict": scheduler.config, "scheduler": scheduler, None: None}[first]
    match = (
        rf"^alphas_cumprod_or_config must be a DDIMConfig or an alphas_cumprod array, got "
        rf"{type(given).__name__}: pass .*alphas_cumprod.*DDIMConfig\.from_dict"
    )
    with pytest.raises(TypeError, match=match):
        dk.get_sigmas_ddim(given, 10)
    if first == "config dict":  # what the message says to do
        sigmas = dk.get_sigmas_ddim(dc.DDIMConfig.from_dict(given), 10, xp=np)
        table = dk.get_sigmas_ddim(scheduler.alphas_cumprod.double(), 10)  # float32 values
        assert rel(table, sigmas) <= TOLERANCE["float32"]


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_a_zero_terminal_snr_config_is_named_as_k_diffusions_limit(prediction_type: str) -> None:
    """The sigmas do not depend on the prediction type, but from an epsilon config the core's
    plan check answered first: "prediction_type='epsilon' cannot recover x_0 ...; use
    'v_prediction' or 'sample'", advice that only led to this error (a VE sigma list cannot
    start at alpha_bar = 0 whatever the model predicts)."""
    config = dc.DDIMConfig(
        rescale_betas_zero_snr=True, timestep_spacing="trailing", prediction_type=prediction_type
    )
    with pytest.raises(
        ValueError,
        match=r"zero terminal SNR: rescale_betas_zero_snr=True, or a last trained beta of 1\), "
        "whose sigma is infinite",
    ):
        dk.get_sigmas_ddim(config, 10, xp=np)


def test_a_level_that_underflowed_to_0_is_not_named_zero_snr() -> None:
    """Linear betas to 0.9 over 10000 train timesteps (no beta of 1) take alpha_bar to 0.0 in
    float64 from timestep 5555: the sigmas' error named zero terminal SNR and told the user
    to drop rescale_betas_zero_snr, which the config does not set."""
    config = dc.DDIMConfig(num_train_timesteps=10_000, beta_end=0.9)
    with pytest.raises(ValueError, match=r"alpha_bar = 0 \(alpha_bar underflowed to 0 in float"):
        dk.get_sigmas_ddim(config, 10, xp=np)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.int64, torch.bool])
@pytest.mark.parametrize(
    ("sampler", "options"),
    [
        (dk.sample_ddim, {}),
        (dk.sample_ddim, {"eta": 1.0}),
        (dk.sample_ddim_inverse, {}),
        (dk.sample_ddim_inverse, {"fixed_point_iters": 2}),
    ],
)
def test_a_model_or_noise_that_is_not_real_floating_is_refused(
    dtype: torch.dtype, sampler: Any, options: dict[str, Any]
) -> None:
    """A model answering in complex64 (or int64, bool) was stepped with its imaginary part
    dropped (one ComplexWarning) or its integers taken as the denoised x, and so was a
    noise_sampler's noise, where the reversible samplers and ddim_core's loops refuse a model
    output that is not real floating."""
    sigmas = torch.tensor([2.0, 1.0, 0.5])
    if sampler is dk.sample_ddim_inverse:
        sigmas = sigmas.flip(0)
    x = torch.ones(2, 3)

    def noise(sigma: Any, sigma_next: Any) -> Any:
        return torch.zeros(2, 3)

    with pytest.raises(TypeError, match=rf"the model returned dtype {dtype}; .* real floating"):
        sampler(lambda x, s: x.to(dtype), x, sigmas, disable=True, **options)
    if "eta" in options:
        with pytest.raises(TypeError, match=rf"noise_sampler returned dtype {dtype}; .* real"):
            sampler(
                lambda x, s: 0.5 * x,
                x,
                sigmas,
                disable=True,
                noise_sampler=lambda a, b: noise(a, b).to(dtype),
                **options,
            )
        sampler(lambda x, s: 0.5 * x, x, sigmas, disable=True, noise_sampler=noise, **options)
