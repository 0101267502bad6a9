"""k-diffusion-style EDICT, BDIA and BELM (`ddim_kdiffusion.reversible`): the core's samplers
over a sigma list, in VE latents with a denoiser. Against the core on the same plan, exact
round trips, k-diffusion's callback; any array backend (NumPy here, torch where installed)."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
from ddim_kdiffusion import get_sigmas_ddim
from ddim_kdiffusion import reversible as kr

import ddim_core as dc
from ddim_core import reversible

CONFIG = dc.DDIMConfig(clip_sample=False, timestep_spacing="trailing")
MIXTURE = dc.GaussianMixture.create([[-1.0, 0.5], [1.0, -0.5]], [0.4, 0.4], CONFIG)
MODEL = dc.guided(MIXTURE, MIXTURE.component(0), 3.0)
METHODS = ("edict", "bdia", "belm")


def denoiser(x_ve: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """The guided eps model as k-diffusion's denoiser: D = x - sigma eps in VE latents."""
    s = float(sigma[0])
    ab = 1.0 / (1.0 + s * s)
    t = int(np.argmin(np.abs(MIXTURE.schedule.alphas_cumprod - ab)))  # the level's timestep
    eps = MODEL(x_ve * np.sqrt(ab), t)
    return x_ve - s * eps


def test_the_same_samples_as_the_core_on_the_plans_sigmas() -> None:
    sigmas = get_sigmas_ddim(CONFIG, 20, xp=np)
    x_T = np.random.default_rng(0).standard_normal((8, 2))
    for name in METHODS:
        ours = getattr(kr, f"sample_{name}")(denoiser, x_T * sigmas[0], sigmas, disable=True)
        core = getattr(reversible, f"sample_{name}")(
            MODEL, x_T * sigmas[0] / np.sqrt(1 + sigmas[0] ** 2), CONFIG, 20
        )
        np.testing.assert_allclose(ours, core, rtol=1e-9, atol=1e-9, err_msg=name)


@pytest.mark.parametrize("name", ["bdia", "belm"])
def test_sampling_callback_is_k_diffusions(name: str) -> None:
    """As k-diffusion's samplers: called before each update with the step's input x at
    sigmas[i] and the denoiser's output there (was: the output x at sigmas[i + 1])."""
    sigmas = get_sigmas_ddim(CONFIG, 10, xp=np)
    x_T = np.random.default_rng(2).standard_normal((4, 2)) * sigmas[0]
    seen: list[dict] = []
    getattr(kr, f"sample_{name}")(denoiser, x_T, sigmas, callback=seen.append, disable=True)
    assert [d["i"] for d in seen] == list(range(10))
    assert [d["sigma"] for d in seen] == sigmas[:-1].tolist()
    assert seen[0]["x"] is x_T
    for d in seen:
        sigma = np.full(4, d["sigma"])
        np.testing.assert_allclose(d["denoised"], denoiser(d["x"], sigma), rtol=1e-12, atol=1e-12)
    state = getattr(kr, f"sample_{name}_inverse")(denoiser, x_T / sigmas[0], sigmas[::-1].copy())
    seen.clear()
    getattr(kr, f"sample_{name}")(denoiser, state, sigmas, callback=seen.append, disable=True)
    assert [d["i"] for d in seen] == list(range(1, 10))  # step 0 is in the state
    assert seen[0]["x"] is state[1] and seen[0]["sigma"] == sigmas[1]


@pytest.mark.parametrize("name", METHODS)
def test_exact_round_trip_over_flipped_sigmas(name: str) -> None:
    sigmas = get_sigmas_ddim(CONFIG, 20, xp=np)
    x0 = MIXTURE.component(0).sample_data(8, np.random.default_rng(1))
    seen: list[dict] = []
    state = getattr(kr, f"sample_{name}_inverse")(
        denoiser, x0, sigmas[::-1].copy(), callback=seen.append, disable=True
    )
    assert [d["i"] for d in seen] == list(range(20))
    assert seen[-1]["sigma"] == sigmas[0] and set(seen[0]) == {
        "x",
        "i",
        "sigma",
        "sigma_hat",
        "denoised",
    }
    back = getattr(kr, f"sample_{name}")(denoiser, state, sigmas, disable=True)
    assert np.abs(back - x0).max() <= 1e-10


def test_float64_arithmetic_for_a_float32_model() -> None:
    torch = pytest.importorskip("torch")
    sigmas = torch.from_numpy(get_sigmas_ddim(CONFIG, 20, xp=np))

    def model(x, sigma):  # type: ignore[no-untyped-def]
        return torch.from_numpy(denoiser(x.double().numpy(), sigma.double().numpy())).float()

    x0 = torch.from_numpy(MIXTURE.component(0).sample_data(8, np.random.default_rng(2))).float()
    state = kr.sample_bdia_inverse(model, x0, sigmas.flip(0), disable=True, precision="float64")
    assert state[0].dtype == torch.float64 and state.dtype == torch.float32
    back = kr.sample_bdia(model, state, sigmas, disable=True)
    assert back.dtype == torch.float32
    assert torch.equal(back, x0)


@pytest.mark.parametrize("name", METHODS)
def test_float32_round_trip_with_the_default_precision(name: str) -> None:
    """The states in compensated float32 arithmetic, converted between VE and VP in it too:
    within 4 ulps of the data's scale (measured: bit for bit for EDICT and BELM, 1 ulp for
    BDIA, whose state words can sit on a rounding tie that the conversion moves)."""
    torch = pytest.importorskip("torch")
    sigmas = torch.from_numpy(get_sigmas_ddim(CONFIG, 20, xp=np))

    def model(x, sigma):  # type: ignore[no-untyped-def]
        return torch.from_numpy(denoiser(x.double().numpy(), sigma.double().numpy())).float()

    x0 = torch.from_numpy(MIXTURE.component(0).sample_data(64, np.random.default_rng(2))).float()
    state = getattr(kr, f"sample_{name}_inverse")(model, x0, sigmas.flip(0), disable=True)
    assert state[0].dtype == torch.float32 and state.lo is not None
    back = getattr(kr, f"sample_{name}")(model, state, sigmas, disable=True)
    ulp = 2.0 ** np.floor(np.log2(float(x0.abs().max()))) * 2.0**-23
    assert float((back - x0).abs().max()) <= 4 * ulp


@pytest.mark.parametrize("isatty", [False, True])
def test_progress_bar_as_k_diffusions_disable(
    isatty: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tqdm's reading of `disable`: True never, False always, None on a terminal only."""
    pytest.importorskip("tqdm")
    shown: list[bool] = []
    real = reversible.sample_bdia

    def spy(*args, progress, **kwargs):  # type: ignore[no-untyped-def]
        shown.append(progress)
        return real(*args, progress=False, **kwargs)

    monkeypatch.setattr(reversible, "sample_bdia", spy)
    monkeypatch.setattr("sys.stderr.isatty", lambda: isatty)
    sigmas = get_sigmas_ddim(CONFIG, 4, xp=np)
    x = np.ones((1, 2)) * sigmas[0]
    for disable in (True, False, None):
        kr.sample_bdia(denoiser, x, sigmas, disable=disable)
    assert shown == [False, True, isatty]


def test_a_state_from_another_method_or_sigma_list_is_refused() -> None:
    """The core's origin check reaches k-diffusion's samplers: a BDIA state into sample_edict,
    or over another sigma list, is a ValueError (it returned garbage silently)."""
    sigmas = get_sigmas_ddim(CONFIG, 6, xp=np)
    x0 = np.array([[0.3, -0.2]])
    state = kr.sample_bdia_inverse(denoiser, x0, sigmas[::-1].copy(), disable=True)
    with pytest.raises(ValueError, match=r"made by sample_bdia_inverse with gamma=1\.0; it"):
        kr.sample_edict(denoiser, state, sigmas, disable=True)
    with pytest.raises(ValueError, match="made by sample_bdia_inverse over other sigmas"):
        kr.sample_bdia(denoiser, state, get_sigmas_ddim(CONFIG, 7, xp=np), disable=True)
    assert np.array_equal(kr.sample_bdia(denoiser, state, sigmas, disable=True), x0)


@pytest.mark.parametrize("name", METHODS)
def test_a_state_over_other_sigmas_of_the_same_length_is_refused(name: str) -> None:
    """Every sigma list of one length became the same core timesteps, so a state made over
    the trailing list was taken over the leading one and returned garbage (x0 ~ 40 here)."""
    sigmas = get_sigmas_ddim(CONFIG, 6, xp=np)
    other = get_sigmas_ddim(CONFIG.replace(timestep_spacing="leading"), 6, xp=np)
    x0 = np.array([[0.3, -0.2]])
    state = getattr(kr, f"sample_{name}_inverse")(denoiser, x0, sigmas[::-1].copy())
    with pytest.raises(ValueError, match="over other sigmas"):
        getattr(kr, f"sample_{name}")(denoiser, state, other, disable=True)
    copied = copy.deepcopy(state)  # the origin travels with the state
    assert np.array_equal(getattr(kr, f"sample_{name}")(denoiser, copied, sigmas), x0)


@pytest.mark.parametrize("name", METHODS)
def test_one_sigma_is_no_step_and_a_repeat_is_refused(name: str) -> None:
    """As k-diffusion's samplers (ComfyUI's SplitSigmas at the end gives one sigma): x back,
    no model call; was `ValueError: timesteps must not be empty`. A repeated sigma is a
    zero-length step that no two-step sampler can take: a ValueError naming it (was one about
    trained_betas)."""
    sample, invert = getattr(kr, f"sample_{name}"), getattr(kr, f"sample_{name}_inverse")
    x = np.array([[0.3, -0.2]])

    def never(x, sigma):  # type: ignore[no-untyped-def]
        raise AssertionError("no step calls the model")

    for sigmas in (np.array([1.5]), np.array([0.0]), np.zeros(0)):
        assert sample(never, x, sigmas) is x and invert(never, x, sigmas) is x
    with pytest.raises(ValueError, match="a state needs at least 2 sigmas"):
        sample(never, (x, x), np.array([1.5]))
    with pytest.raises(ValueError, match=r"distinct sigmas, got sigmas\[1\] = 1.0 and sigmas\[2\]"):
        sample(denoiser, x, np.array([2.0, 1.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match=r"distinct sigmas, got sigmas\[0\] = 0.0 and sigmas\[1\]"):
        invert(denoiser, x, np.array([0.0, 0.0, 1.0]))
    # sigma 1e-9 is alpha_bar = 1 in float64, as sample_ddim says (was about trained_betas)
    for sigmas in ([2.0, 1.0, 1e-9, 0.0], [2.0, 1.0, 1e-9]):
        with pytest.raises(ValueError, match=r"sigmas\[2\] = 1e-09 is alpha_bar .* = 1"):
            sample(denoiser, x, np.array(sigmas))
        with pytest.raises(ValueError, match=r"sigmas\[\d\] = 1e-09 is alpha_bar .* = 1"):
            invert(denoiser, x, np.array(sigmas[::-1]))
    assert np.isfinite(sample(denoiser, x, np.array([2.0, 1.0, 1e-7, 0.0]))).all()


@pytest.mark.parametrize("name", METHODS)
def test_bad_arguments_are_named_as_sample_ddim_names_them(name: str) -> None:
    """model, callback, extra_args and x were passed on unchecked (`'int' object is not
    callable`, `argument after ** must be a mapping`, `tuple index out of range` for a 0-d
    x)."""
    sigmas = get_sigmas_ddim(CONFIG, 3, xp=np)
    x = np.ones((1, 2))
    for fn in (getattr(kr, f"sample_{name}"), getattr(kr, f"sample_{name}_inverse")):
        s = sigmas if fn.__name__ == f"sample_{name}" else sigmas[::-1].copy()
        with pytest.raises(TypeError, match="model must be callable"):
            fn(5, x, s)
        with pytest.raises(TypeError, match="callback must be callable"):
            fn(denoiser, x, s, callback=3)
        with pytest.raises(TypeError, match="extra_args must be a mapping"):
            fn(denoiser, x, s, extra_args=[1])
        with pytest.raises(TypeError, match="real floating-point"):
            fn(denoiser, np.ones((1, 2), dtype=np.int64), s)
        with pytest.raises(ValueError, match=r"x must have a batch axis.*got a 0-d array"):
            fn(denoiser, np.ones(()), s)  # was an IndexError from x.shape[0]
    with pytest.raises(ValueError, match="a state is a pair of arrays, got 3 items"):
        getattr(kr, f"sample_{name}")(denoiser, (x, x, x), sigmas)
    # a None in the state was an AttributeError, a list named the adapter's local "second"
    with pytest.raises(TypeError, match=rf"sample_{name}: x\[1\] must be an array, got None"):
        getattr(kr, f"sample_{name}")(denoiser, (x, None), sigmas)
    with pytest.raises(TypeError, match=r"x\[1\] must be an array .* got list"):
        getattr(kr, f"sample_{name}")(denoiser, (x, x.tolist()), sigmas)


@pytest.mark.parametrize("name", METHODS)
def test_callback_sigma_is_an_element_of_the_given_sigmas(name: str) -> None:
    """k-diffusion's callbacks get sigmas[i], an array (ComfyUI code calls `.item()` on it),
    as sample_ddim's do; these gave a Python float."""
    sigmas = get_sigmas_ddim(CONFIG, 4, xp=np)
    up = sigmas[::-1].copy()
    seen: list[dict] = []
    x0 = np.array([[0.3, -0.2]])
    state = getattr(kr, f"sample_{name}_inverse")(denoiser, x0, up, callback=seen.append)
    assert all(isinstance(d["sigma"], np.floating) for d in seen)
    assert [d["sigma"] for d in seen] == up[1:].tolist()
    seen.clear()
    getattr(kr, f"sample_{name}")(denoiser, state, sigmas, callback=seen.append)
    assert all(isinstance(d["sigma"], np.floating) for d in seen)
    assert all(d["sigma"] == sigmas[d["i"]] for d in seen)


@pytest.mark.parametrize("name", METHODS)
def test_callback_x_is_in_the_samples_dtype_from_a_state(name: str) -> None:
    """From a state (kept in the arithmetic dtype, float32 for float16 data), the first
    callback's x was that float32 array, the later ones float16."""
    torch = pytest.importorskip("torch")
    sigmas = torch.from_numpy(get_sigmas_ddim(CONFIG, 4, xp=np))

    def model(x, sigma):  # type: ignore[no-untyped-def]
        return torch.from_numpy(denoiser(x.double().numpy(), sigma.double().numpy())).to(x.dtype)

    x0 = torch.tensor([[0.3, -0.2]], dtype=torch.float16)
    state = getattr(kr, f"sample_{name}_inverse")(model, x0, sigmas.flip(0))
    seen: list[dict] = []
    getattr(kr, f"sample_{name}")(model, state, sigmas, callback=seen.append)
    assert {d["x"].dtype for d in seen} == {torch.float16}


@pytest.mark.parametrize("name", METHODS)
def test_a_jump_no_beta_can_hold_is_refused_by_name(name: str) -> None:
    """sigmas 1e9 -> 1: the alpha_bar ratio 2e-18 makes the step's beta 1 in float64, which
    no schedule holds (was a ValueError about trained_betas); 1e8 -> 1 still steps."""
    sample, invert = getattr(kr, f"sample_{name}"), getattr(kr, f"sample_{name}_inverse")
    x = np.array([[0.3, -0.2]])
    with pytest.raises(ValueError, match=r"sigmas\[0\] = 1000000000.0 and sigmas\[1\] = 1.0 are"):
        sample(denoiser, x * 1e9, np.array([1e9, 1.0, 0.0]))
    with pytest.raises(ValueError, match=r"sigmas\[1\] = 1.0 and sigmas\[2\] = 1000000000.0 are"):
        invert(denoiser, x, np.array([0.0, 1.0, 1e9]))
    assert np.isfinite(sample(denoiser, x * 1e8, np.array([1e8, 1.0, 0.0]))).all()


@pytest.mark.parametrize("name", METHODS)
def test_samplers_build_no_autograd_graph_like_k_diffusions(name: str) -> None:
    """k-diffusion's samplers run under torch.no_grad(), as sample_ddim does: a denoiser with
    parameters that require grad gave a state, low words and x_0 carrying a graph of every
    step (its memory kept alive, an OOM at real sizes)."""
    torch = pytest.importorskip("torch")
    weight = torch.nn.Parameter(torch.tensor(0.9, dtype=torch.float64))

    def model(x, sigma):  # type: ignore[no-untyped-def]
        return weight * x / (1 + sigma[:, None] ** 2)

    sigmas = torch.from_numpy(get_sigmas_ddim(CONFIG, 5, xp=np))
    x0 = torch.tensor([[0.3, -0.2], [0.1, 0.4]], dtype=torch.float64)
    sample, invert = getattr(kr, f"sample_{name}"), getattr(kr, f"sample_{name}_inverse")
    state = invert(model, x0, sigmas.flip(0), disable=True)
    assert state.lo is not None
    outs = [*state, *state.lo, sample(model, state, sigmas), sample(model, x0 * sigmas[0], sigmas)]
    assert all(not out.requires_grad and out.grad_fn is None for out in outs)
    assert torch.is_grad_enabled()


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("first", [slice(0, 1), 0])
def test_a_denoiser_answering_in_another_shape_is_refused(name: str, first: Any) -> None:
    """A denoised x of another shape that broadcasts against x (one batch element, or no
    batch axis) was taken silently, the whole batch stepped with it; sample_ddim refuses it."""
    sigmas = get_sigmas_ddim(CONFIG, 4, xp=np)
    x = np.array([[0.3, -0.2], [0.1, 0.4]])

    def model(x_ve, sigma):  # type: ignore[no-untyped-def]
        return denoiser(x_ve, sigma)[first]  # (1, 2) or (2,) for x of shape (2, 2)

    sample, invert = getattr(kr, f"sample_{name}"), getattr(kr, f"sample_{name}_inverse")
    with pytest.raises(ValueError, match=r"the model returned shape \((1, 2|2,)\)"):
        sample(model, x * sigmas[0], sigmas)
    with pytest.raises(ValueError, match=r"the model returned shape \((1, 2|2,)\)"):
        invert(model, x, sigmas[::-1].copy())


@pytest.mark.parametrize("name", ["bdia", "belm"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_eps_is_formed_in_float32(name: str, dtype: str) -> None:
    """The denoiser's eps = (x - denoised) / sigma was formed in half precision, so one step
    from a plain half x_T (DDIM's step) was several ulps from the exact step of the same
    inputs (2 to 4 times sample_ddim's error); formed in float32, the step rounds once, as
    sample_ddim's does. The levels' sqrt(abar) are powers of 2, so VE <-> VP is exact and the
    model sees the same x in the half and the exact run."""
    torch = pytest.importorskip("torch")
    half = getattr(torch, dtype)
    noise = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))

    def model(x, sigma, exact=False):  # type: ignore[no-untyped-def]
        out = (x.double() * 0.1 + 0.2).to(half)  # the same answer in both runs
        return out.double() if exact else out

    sample = getattr(kr, f"sample_{name}")
    for high, low in ((63.0, 15.0), (15.0, 3.0), (3.0, 0.0)):  # 1 + sigma^2 = 64, 16, 4, 1
        pair = torch.tensor([high, low], dtype=torch.float64).sqrt()
        x = (noise * pair[0]).to(half)
        got = sample(model, x, pair, disable=True)
        exact = sample(lambda y, s: model(y, s, exact=True), x.double(), pair, disable=True)
        assert got.dtype == half
        binade = torch.exp2(torch.floor(torch.log2(exact.abs().clamp(min=1e-30))))
        half_ulp = 0.5 * torch.finfo(half).eps * binade
        float32_error = 4 * 2.0**-24 * float(x.double().abs().max())  # where terms cancel
        assert bool(((got.double() - exact).abs() <= 1.01 * half_ulp + float32_error).all())


@pytest.mark.parametrize("name", METHODS)
def test_round_trip_is_bit_for_bit_where_the_state_sits_on_rounding_ties(name: str) -> None:
    """BDIA's states hold many words exactly halfway between two floats (hi + lo a rounding
    tie). sample_* scaled the VE state back to VP, which reproduces it only to about 2^-2p:
    at a tie hi moved by an ulp, the model saw another input than the inverse saw, and the
    round trip missed x_0 (here 2.4e-14 in float64, 8.9e-7 in float32, where the core is
    exact). They now resume from the inverse's own state, copies included."""
    torch = pytest.importorskip("torch")
    sigmas = get_sigmas_ddim(CONFIG, 10, xp=np)
    x0 = MIXTURE.component(0).sample_data(64, np.random.default_rng(1))
    sample, invert = getattr(kr, f"sample_{name}"), getattr(kr, f"sample_{name}_inverse")
    state = invert(denoiser, x0, sigmas[::-1].copy())
    assert np.array_equal(sample(denoiser, state, sigmas), x0)
    assert np.array_equal(sample(denoiser, copy.deepcopy(state), sigmas), x0)

    def model(x, sigma):  # type: ignore[no-untyped-def]
        return torch.from_numpy(denoiser(x.double().numpy(), sigma.double().numpy())).float()

    x32, down = torch.from_numpy(x0).float(), torch.from_numpy(sigmas)
    state32 = invert(model, x32, down.flip(0))
    assert torch.equal(sample(model, state32, down), x32)


@pytest.mark.parametrize("name", METHODS)
def test_an_inverse_state_written_in_place_is_sampled_as_written(name: str) -> None:
    """sample_* resumes from the inverse's own VP state only while the returned arrays are as
    the inverse returned them: an edit in place (here the first sample moved) is sampled from,
    as a state rebuilt from the edited arrays is, not ignored."""
    sigmas = get_sigmas_ddim(CONFIG, 10, xp=np)
    x0 = MIXTURE.component(0).sample_data(8, np.random.default_rng(2))
    sample, invert = getattr(kr, f"sample_{name}"), getattr(kr, f"sample_{name}_inverse")
    state = invert(denoiser, x0, sigmas[::-1].copy())
    state[0][0] += 0.25
    rebuilt = reversible.State(
        state[0].copy(), state[1].copy(), state.dtype, state.lo, state.origin
    )
    got = sample(denoiser, state, sigmas)
    assert np.array_equal(got, sample(denoiser, rebuilt, sigmas))
    assert not np.allclose(got[0], x0[0])


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
def test_round_trip_is_bit_for_bit_over_sigmas_ending_above_0(name: str, dtype: str) -> None:
    """Over a sigma list whose last sigma is not 0, x_0 is scaled into VP (x * sqrt(abar),
    which rounds, several x to one value) and back out by dividing: the round trip missed x_0
    by 1 ulp in 4.5% to 6.6% of the words, in every dtype, guided or not (the core's own VP
    round trip exact). The inverse keeps its x_0, returned where the core lands on the VP x_0
    it started from; copies and `resumed` states included."""
    torch = pytest.importorskip("torch")
    kind = getattr(torch, dtype)
    down = torch.from_numpy(get_sigmas_ddim(CONFIG, 10, xp=np))[:-1]  # ends at sigma 0.34
    x0 = torch.from_numpy(MIXTURE.component(0).sample_data(256, np.random.default_rng(1)))
    x0 = x0.to(kind)

    def model(x, sigma):  # type: ignore[no-untyped-def]
        return torch.from_numpy(denoiser(x.double().numpy(), sigma.double().numpy())).to(x.dtype)

    sample, invert = getattr(kr, f"sample_{name}"), getattr(kr, f"sample_{name}_inverse")
    state = invert(model, x0, down.flip(0), disable=True)
    rebuilt = reversible.State(state[0].clone(), state[1], state.dtype, state.lo, state.origin)
    for given in (state, copy.deepcopy(state), kr.resumed(rebuilt, state)):
        back = sample(model, given, down, disable=True)
        assert back.dtype == kind and torch.equal(back, x0)


def test_a_state_of_the_other_api_or_method_is_refused_in_its_own_terms() -> None:
    """A state of the core's invert_bdia (VP samples over timesteps) given to k-diffusion's
    sample_bdia was refused as made "by sample_bdia_inverse over other sigmas [9.83e-322,
    ...]" (its timesteps read as float64 bits); the adapter's state given to the core's
    sample_bdia as made "over timesteps (4639742292901765029, ...)" (the sigmas' bits); and a
    BDIA state given to k-diffusion's sample_edict, or another gamma, named invert_bdia and
    timesteps (4, 3, 2, 1, 0), which the caller never passed. Each names what made the state
    in the caller's terms and where it samples."""
    sigmas = get_sigmas_ddim(CONFIG, 5, xp=np)
    x0 = np.array([[0.3, -0.2]])
    core = reversible.invert_bdia(MODEL, x0, CONFIG, 5)
    message = (
        r"sample_bdia got a state made by ddim_core\.reversible\.invert_bdia over timesteps "
        r"\(999, 799, 599, 399, 199\), not by sample_bdia_inverse over sigmas"
    )
    with pytest.raises(ValueError, match=message):
        kr.sample_bdia(denoiser, core, sigmas, disable=True)
    ours = kr.sample_bdia_inverse(denoiser, x0, sigmas[::-1].copy(), disable=True)
    message = r"sample_bdia got a state made over a sigma list \(ddim_kdiffusion"
    with pytest.raises(ValueError, match=message):
        reversible.sample_bdia(MODEL, ours, CONFIG, 5)
    message = r"sample_edict got a state made by sample_bdia_inverse with gamma=1\.0; it returns"
    with pytest.raises(ValueError, match=message + r" to x_0 only with sample_bdia\(gamma=1\.0\)"):
        kr.sample_edict(denoiser, ours, sigmas, disable=True)
    with pytest.raises(ValueError, match=r"only with sample_bdia\(gamma=1\.0\), not gamma=0\.5"):
        kr.sample_bdia(denoiser, ours, sigmas, disable=True, gamma=0.5)
    with pytest.raises(ValueError, match=r"gamma=0 must be in \(0, 1\]"):
        kr.sample_bdia(denoiser, ours, sigmas, disable=True, gamma=0)
    assert np.array_equal(kr.sample_bdia(denoiser, ours, sigmas, disable=True), x0)
    assert np.array_equal(reversible.sample_bdia(MODEL, core, CONFIG, 5), x0)


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_a_plain_tuple_of_half_arrays_is_sampled_in_float32(name: str, dtype: str) -> None:
    """A state given as a plain tuple of the data's half arrays (low words dropped, as the
    core's samplers take it) was scaled into VP samples in half precision: compensated
    arithmetic there refused it ('bits must be 32 or 64 ... got 16', a name the caller never
    passed; before that float16 gave NaN silently). It is scaled in float32, as the core works
    on half data, so it samples as the same arrays held in float32 do."""
    torch = pytest.importorskip("torch")
    half = getattr(torch, dtype)
    sigmas = torch.tensor([14.6, 5.0, 1.5, 0.0], dtype=torch.float64)

    def model(x, sigma):  # type: ignore[no-untyped-def]
        return (x.float() * 0.1 / (1 + sigma.float() ** 2) ** 0.5).to(x.dtype)

    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(1, 2, 4, 4, generator=g).to(half) * 14.6 for _ in range(2))
    sample = getattr(kr, f"sample_{name}")
    got = sample(model, (a, b), sigmas, disable=True)
    wide = sample(model, reversible.State(a.float(), b.float(), half), sigmas, disable=True)
    assert got.dtype == half and bool(torch.isfinite(got).all())
    assert torch.equal(got, wide)


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("order", [(np.float32, np.float64), (np.float64, np.float32)])
def test_a_plain_tuple_of_two_dtypes_is_refused_as_the_core_refuses_it(
    name: str, order: tuple[Any, Any]
) -> None:
    """(float32, float64) arrays were scaled into the first array's dtype before the core's
    check ("a state's two arrays must share one shape and dtype") could see them: the float64
    array was rounded to float32 and sampled without a word (the other order widened the
    float32 one), where ddim_core.reversible.sample_* refuses the same tuple."""
    sigmas = get_sigmas_ddim(CONFIG, 4, xp=np)
    a, b = (np.full((1, 2), 3.0 + 1e-12, dtype) for dtype in order)
    match = r"a state's two arrays must share one shape and dtype"
    with pytest.raises(ValueError, match=match):
        reversible.sample_bdia(lambda x, t: x, (a, b), CONFIG, 4)  # the core, as a reference
    with pytest.raises(ValueError, match=f"sample_{name}: {match}"):  # the sampler's name first
        getattr(kr, f"sample_{name}")(denoiser, (a, b), sigmas, disable=True)


@pytest.mark.parametrize("name", METHODS)
def test_an_inverse_state_of_jax_arrays_passes_through_jax_whole(name: str) -> None:
    """The inverses return a subclass of the core's State, and JAX's pytree registration of
    State does not cover subclasses: jax.device_put(state) raised "... _State is not a valid
    JAX type", a jitted inverse raised it for its result, and a jitted sample_* got the state
    stacked into one (2, ...) array ("Incompatible shapes for broadcasting"), as the core's
    State was before it was registered. It is a pytree node too: its arrays, low words, the
    core's state and the inverse's x_0 are leaves; an eager round trip after device_put is
    exact to the bit, jitted BDIA and BELM loops to about float32's precision (as the core's,
    docs/inversion-methods.md; EDICT's coupled sequences amplify XLA's other roundings)."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    sigmas = get_sigmas_ddim(CONFIG, 4, xp=np)
    up = sigmas[::-1].copy()

    def model(x, sigma):  # type: ignore[no-untyped-def]
        return 0.5 * x / (1.0 + sigma[:, None] ** 2) + 0.1 * jnp.tanh(x)

    x0 = jnp.asarray(np.random.default_rng(0).standard_normal((3, 2)), dtype=jnp.float32)
    inverse = getattr(kr, f"sample_{name}_inverse")
    sample = getattr(kr, f"sample_{name}")
    state = inverse(model, x0, up, disable=True)
    moved = jax.device_put(state)
    assert type(moved) is type(state) and moved.dtype == state.dtype
    assert moved.origin == state.origin
    assert bool(jnp.all(sample(model, moved, sigmas, disable=True) == x0))
    traced = jax.jit(lambda x: inverse(model, x, up, disable=True))(x0)
    assert type(traced) is type(state) and traced.origin == state.origin
    back = jax.jit(lambda s: sample(model, s, sigmas, disable=True))(traced)
    assert back.shape == x0.shape and back.dtype == x0.dtype
    if name == "edict":  # its coupled sequences amplify XLA's other roundings (1e-4 here)
        assert bool(jnp.all(jnp.isfinite(back)))
    else:
        assert float(jnp.abs(back - x0).max()) <= 1e-5
