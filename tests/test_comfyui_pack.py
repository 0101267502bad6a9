"""The ComfyUI node pack without ComfyUI: sampler functions, schedule, schemas, install command,
and the V1 node layer against a stand-in `comfy` package. The real-ComfyUI run is
tests/test_comfyui_integration.py (needs COMFYUI_PATH)."""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import subprocess
import sys
import types
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ddim_core as dc
from ddim_core.cli import main
from ddim_core.config import TIMESTEP_SPACINGS

torch = pytest.importorskip("torch")
from ddim_comfyui import core, install, unsampler  # noqa: E402
from ddim_kdiffusion import get_sigmas_ddim  # noqa: E402

CONFIG = dc.DDIMConfig(clip_sample=False, timestep_spacing="trailing")
INSTALLED = any(ep.name == "comfyui" for ep in importlib.metadata.entry_points(group="ddim_core"))
needs_install = pytest.mark.skipif(not INSTALLED, reason="ddim-core's entry points not installed")


class ComfyStyleDenoiser:
    """Like ComfyUI's KSamplerX0Inpaint: `denoise_mask` is a required argument; returns x0
    from VE latents, using the exact epsilon of a Gaussian mixture."""

    def __init__(self) -> None:
        self.gm = dc.GaussianMixture.create([[0.5] * 4, [-0.5] * 4], [0.4, 0.6], CONFIG)
        ab = dc.schedule(CONFIG).alphas_cumprod
        self.log_sigmas = np.log(np.sqrt((1 - ab) / ab))
        self.masks: list[object] = []

    def __call__(self, x, sigma, denoise_mask, model_options={}, seed=None):  # type: ignore[no-untyped-def]  # noqa: B006
        self.masks.append(denoise_mask)
        t = int(np.abs(np.log(float(sigma[0])) - self.log_sigmas).argmin())
        c_in = 1 / (1 + sigma[:, None] ** 2) ** 0.5
        return x - sigma[:, None] * self.gm(x * c_in, t)


def test_sampler_forwards_extra_args_and_equals_the_core_loop() -> None:
    model = ComfyStyleDenoiser()
    sigmas_t = get_sigmas_ddim(CONFIG, 10, dtype=torch.float64)
    noise = torch.randn(3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mask = object()
    steps: list[int] = []
    out = core.sample_ddim_core(
        model,
        noise * (1 + sigmas_t[0] ** 2) ** 0.5,  # ComfyUI's noise_scaling at max denoise
        sigmas_t,
        extra_args={"denoise_mask": mask, "model_options": {}, "seed": 3},
        callback=lambda d: steps.append(d["i"]),
        disable=True,
    )
    expected = dc.sample(model.gm, noise, CONFIG, 10)
    assert float((out - expected).abs().max()) <= 1e-9
    assert model.masks == [mask] * 10 and steps == list(range(10))
    with pytest.raises(TypeError, match="denoise_mask"):
        core.sample_ddim_core(model, noise, sigmas_t, disable=True)


def test_inverse_sampler_takes_either_order_and_inverts_exactly_by_default() -> None:
    model = ComfyStyleDenoiser()
    down = get_sigmas_ddim(CONFIG, 10, dtype=torch.float64)
    x0 = torch.randn(3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    args = {"denoise_mask": None}
    up = core.run_node("DDIMCoreFlipSigmas", sigmas=down)
    assert float(up[0]) == 0.0 and torch.equal(up, down.flip(0))
    a = core.sample_ddim_core_inverse(model, x0, up, extra_args=args, disable=True)
    b = core.sample_ddim_core_inverse(model, x0, down, extra_args=args, disable=True)
    assert torch.equal(a, b)
    defaults = {p.name: p.default for p in _node("DDIMCoreInversionSampler").inputs}
    assert defaults == {"fixed_point_iters": core.INVERSION_ITERS, "tol": core.INVERSION_TOL}
    fn, options = core.run_node("DDIMCoreInversionSampler", **defaults)
    for sampler in (functools.partial(fn, **options), core.sample_ddim_core_inverse):
        calls = len(model.masks)
        z = sampler(model, x0, up, extra_args=args, disable=True)
        calls = len(model.masks) - calls
        back = core.sample_ddim_core(model, z, down, extra_args=args, disable=True)
        assert float((back - x0).abs().max()) <= 1e-5
        assert 10 < calls <= 10 * (core.INVERSION_ITERS + 2)
    comfy_flip = up.clone()
    comfy_flip[0] = 0.0001  # ComfyUI's FlipSigmas: its Euler steps cannot start at 0
    z = core.sample_ddim_core_inverse(model, x0, comfy_flip, extra_args=args, disable=True)
    assert torch.equal(z, a) and float(comfy_flip[0]) == 0.0001  # the input is left as is
    plain = core.sample_ddim_core_inverse(model, x0, up, args, None, True, fixed_point_iters=0)
    back = core.sample_ddim_core(model, plain, down, extra_args=args, disable=True)
    assert float((back - x0).abs().max()) > 1e-2


def test_inverse_sampler_keeps_the_latent_outside_a_noise_mask() -> None:
    """With SetLatentNoiseMask's mask ComfyUI's denoiser (KSamplerX0Inpaint) shows the model
    the latent outside the mask and returns it there as x0, so its samplers leave the latent
    as is there (euler over FlipSigmas does). The inversion moved it (by 4.1 on the real
    ComfyUI test bed): its steps start from the sample scaled to the next level, not from x.
    Sampling back then kept the moved values outside (they are its input latent)."""
    inner = ComfyStyleDenoiser()

    def masked(latent):  # type: ignore[no-untyped-def]
        def model(x, sigma, denoise_mask, model_options={}, seed=None):  # type: ignore[no-untyped-def]  # noqa: B006
            keep = 1.0 - denoise_mask
            out = inner(x * denoise_mask + latent * keep, sigma, None)
            return out * denoise_mask + latent * keep

        return model

    down = get_sigmas_ddim(CONFIG, 10, dtype=torch.float64)
    x0 = torch.randn(3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0]]).expand(3, 4)
    args = {"denoise_mask": mask}
    for iters in (core.INVERSION_ITERS, 0):
        z = core.sample_ddim_core_inverse(
            masked(x0), x0, down.flip(0), args, None, True, fixed_point_iters=iters
        )
        assert torch.equal(z[:, 2:], x0[:, 2:]), iters
    back = core.sample_ddim_core(masked(z), z, down, extra_args=args, disable=True)
    assert torch.equal(back[:, 2:], x0[:, 2:])


def test_inverse_sampler_takes_numpy_sigmas_in_either_order() -> None:
    """Any array library, as ddim_kdiffusion.sample_ddim_inverse: descending NumPy sigmas were
    an AttributeError ('numpy.ndarray' object has no attribute 'flip')."""
    down = get_sigmas_ddim(CONFIG, 10, xp=np)
    x0 = np.random.default_rng(1).standard_normal((3, 4))

    def model(x, sigma, **extra_args):  # type: ignore[no-untyped-def]
        return 0.5 * x / (1.0 + sigma[:, None] ** 2)

    up = core.run_node("DDIMCoreFlipSigmas", sigmas=down)
    assert np.array_equal(up, down[::-1])
    a = core.sample_ddim_core_inverse(model, x0, up, disable=True)
    assert np.array_equal(core.sample_ddim_core_inverse(model, x0, down, disable=True), a)


def test_eta_noise_comes_from_comfyuis_seed() -> None:
    """ComfyUI passes its seed in extra_args["seed"] (DisableNoise: 0) and its ancestral
    samplers draw one torch.randn like x per step from a generator on x's device seeded with
    it. Ours draw the same, so runs repeat and eta = 1 equals euler_ancestral's maths."""
    model = ComfyStyleDenoiser()
    sigmas = get_sigmas_ddim(CONFIG, 10, dtype=torch.float64)
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def run(seed: int | None, **kw: object) -> torch.Tensor:
        extra = {"denoise_mask": None, "seed": seed}
        return core.sample_ddim_core(model, x * 10, sigmas, extra, None, True, 1.0, **kw)

    first = run(5)
    torch.manual_seed(1)  # the global generator plays no part
    assert torch.equal(run(5), first) and not torch.equal(run(6), first)
    gen = torch.Generator().manual_seed(5)
    draws = lambda s, s_next: torch.randn(x.size(), generator=gen, dtype=x.dtype)  # noqa: E731
    assert torch.equal(run(None, noise_sampler=draws), first)
    torch.manual_seed(2)
    unseeded = run(None)
    torch.manual_seed(2)
    assert torch.equal(run(None), unseeded)  # no seed: torch's global generator, as ComfyUI
    assert core.seeded_noise_sampler(np.zeros((1, 2)), 5) is None


def test_eta_above_0_is_refused_on_rectified_flow_models(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """ComfyUI's denoiser wraps the model whose model_sampling is a CONST for rectified-flow
    models (SD3, Flux); DDIM's stochastic step is not theirs, so eta > 0 is an error there,
    as is inverting up to sigma 1 (ComfyUI's LATENT x / (1 - sigma): NaN before)."""
    CONST = type("CONST", (), {})
    monkeypatch.setitem(sys.modules, "comfy.model_sampling", types.SimpleNamespace(CONST=CONST))
    flow = types.SimpleNamespace(
        model_sampling=CONST(), model_type=types.SimpleNamespace(name="FLOW")
    )
    model = ComfyStyleDenoiser()
    model.inner_model = types.SimpleNamespace(inner_model=flow)  # type: ignore[attr-defined]
    sigmas = get_sigmas_ddim(CONFIG, 10, dtype=torch.float64)
    x = torch.ones(3, 4, dtype=torch.float64)
    extra = {"denoise_mask": None, "seed": 0}
    with pytest.raises(
        ValueError, match=r"eta=0\.3 > 0 .*\(model_type FLOW.*eta 0.*euler_ancestral"
    ):
        core.sample_ddim_core(model, x, sigmas, extra, None, True, 0.3)
    assert torch.isfinite(core.sample_ddim_core(model, x, sigmas, extra, None, True, 0.0)).all()
    up = torch.linspace(0.0, 1.0, 11, dtype=torch.float64)  # a flow schedule's, up to pure noise
    with pytest.raises(ValueError, match=r"climb to 1, pure noise .*SplitSigmas"):
        core.sample_ddim_core_inverse(model, x, up, extra, None, True)
    assert torch.isfinite(core.sample_ddim_core_inverse(model, x, up[:-1], extra, None, True)).all()
    flow.model_sampling = object()  # an EPS / V model: any eta
    assert torch.isfinite(core.sample_ddim_core_inverse(model, x, up, extra, None, True)).all()
    assert torch.isfinite(core.sample_ddim_core(model, x, sigmas, extra, None, True, 0.3)).all()


def test_a_wrapper_chain_that_loops_back_ends(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A model whose `inner_model` chain comes back to itself (a wrapper that wraps itself):
    the model walks end after a few wrappers, where the rectified-flow check looped forever."""
    CONST = type("CONST", (), {})
    monkeypatch.setitem(sys.modules, "comfy.model_sampling", types.SimpleNamespace(CONST=CONST))
    loop = types.SimpleNamespace()
    loop.inner_model = types.SimpleNamespace(inner_model=loop)
    assert core._rectified_flow_type(loop) is None
    assert not core.computes_in_half(loop)
    flow = types.SimpleNamespace(model_sampling=CONST())  # found within the walk
    assert core._rectified_flow_type(types.SimpleNamespace(inner_model=flow)) == "?"


def test_inverse_sampler_on_a_flow_model_takes_descending_and_flipsigmas_lists(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """On a rectified-flow model ComfyUI hands a sampler x = (1 - sigmas[0]) x0 (no noise)
    and divides its result by 1 - sigmas[-1]. A stock scheduler's descending list and
    FlipSigmas' (0.0001 for 0) give the ascending list's latent: they gave x0 scaled by
    1 - sigma_max (a round trip off by 1.7) and by 1 - 1e-4."""
    CONST = type("CONST", (), {})
    monkeypatch.setitem(sys.modules, "comfy.model_sampling", types.SimpleNamespace(CONST=CONST))
    flow = types.SimpleNamespace(model_sampling=CONST())
    model = ComfyStyleDenoiser()
    model.inner_model = types.SimpleNamespace(inner_model=flow)  # type: ignore[attr-defined]
    x0 = torch.randn(3, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    up = torch.linspace(0.0, 0.9, 10, dtype=torch.float64)

    def comfy_run(sigmas: torch.Tensor) -> torch.Tensor:  # KSAMPLER.sample, CONST, no noise
        x = (1 - sigmas[0]) * x0
        extra = {"denoise_mask": None}
        z = core.sample_ddim_core_inverse(model, x, sigmas, extra, None, True, 3, 0.0)
        return z / (1 - sigmas[-1])

    want = comfy_run(up)
    comfy_flip = up.clone()
    comfy_flip[0] = 0.0001
    for sigmas in (up.flip(0), comfy_flip):
        assert float((comfy_run(sigmas) - want).abs().max()) <= 1e-9 * float(want.abs().max())


class FakeModel:
    def __init__(self, model_sampling: object) -> None:
        self.model_sampling = model_sampling

    def get_model_object(self, name: str) -> object:
        assert name == "model_sampling"
        return self.model_sampling


def test_schedule_node_uses_the_models_own_sigmas() -> None:
    ab = dc.schedule(
        dc.DDIMConfig(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    )
    sigmas = torch.tensor(np.sqrt((1 - ab.alphas_cumprod) / ab.alphas_cumprod), dtype=torch.float32)
    model = FakeModel(types.SimpleNamespace(sigmas=sigmas))
    out = core.run_node(
        "DDIMCoreSchedule", model=model, steps=10, spacing="leading", steps_offset=1, denoise=1.0
    )
    assert out.dtype == torch.float32 and out.shape == (11,) and float(out[-1]) == 0.0
    timesteps = dc.make_plan(dc.DDIMConfig(steps_offset=1), 10).timesteps  # 901, 801, ..., 1
    assert torch.equal(out[:-1], sigmas[list(timesteps)])
    half = core.run_node(
        "DDIMCoreSchedule", model=model, steps=5, spacing="trailing", steps_offset=0, denoise=0.5
    )
    full = core.run_node(
        "DDIMCoreSchedule", model=model, steps=10, spacing="trailing", steps_offset=0, denoise=1.0
    )
    assert torch.equal(half, full[-6:])
    empty = core.run_node(
        "DDIMCoreSchedule", model=model, steps=5, spacing="trailing", steps_offset=0, denoise=0.0
    )
    assert empty.shape == (0,)
    with pytest.raises(ValueError, match="discrete noise schedule"):
        core.ddim_sigmas(FakeModel(object()), 10, "trailing", 0, 1.0)


def test_schedule_caps_its_plan_at_the_training_timesteps() -> None:
    """Like ComfyUI's ddim_uniform: more steps than the model's 1000 training timesteps, or
    steps / denoise above them, give the 1000-step plan (all of it, or its last steps)."""
    ab = dc.schedule(dc.DDIMConfig()).alphas_cumprod
    sigmas = torch.tensor(np.sqrt((1 - ab) / ab), dtype=torch.float32)
    model = FakeModel(types.SimpleNamespace(sigmas=sigmas))

    def schedule(steps: int, denoise: float) -> torch.Tensor:
        return core.run_node(
            "DDIMCoreSchedule",
            model=model,
            steps=steps,
            spacing="trailing",
            steps_offset=0,
            denoise=denoise,
        )

    full = schedule(1000, 1.0)
    assert full.shape == (1001,)
    assert torch.equal(schedule(1001, 1.0), full) and torch.equal(schedule(10000, 1.0), full)
    assert torch.equal(schedule(20, 0.01), full[-21:])  # int(20 / 0.01) = 2000 steps
    assert torch.equal(schedule(20, 0.02), full[-21:])  # exactly 1000


@pytest.mark.parametrize("spacing", ["leading", "quadratic"])
def test_schedule_cap_leaves_room_for_the_steps_offset(spacing: str) -> None:
    """Leading and quadratic spacing add steps_offset (`ddim_core.plans.spaced_timesteps`);
    with steps_offset 1 (the tooltip's advice for SD 1.x) at steps / denoise of 1000 or more:
    the 999-step plan, whose last timestep is 999 (the 1000-step plan's would be 1000, past
    the table: it raised, naming a steps_offset the user had not changed; quadratic's at 20
    steps and denoise 0.01 too, until the cap left it room as leading's)."""
    ab = dc.schedule(dc.DDIMConfig()).alphas_cumprod
    model = FakeModel(types.SimpleNamespace(sigmas=torch.tensor(np.sqrt((1 - ab) / ab))))
    full = core.ddim_sigmas(model, 999, spacing, 1, 1.0)
    assert full.shape == (1000,) and float(full[0]) == pytest.approx(
        float(model.model_sampling.sigmas[999])
    )
    assert torch.equal(core.ddim_sigmas(model, 1000, spacing, 1, 1.0), full)
    assert torch.equal(core.ddim_sigmas(model, 20, spacing, 1, 0.01), full[-21:])
    with pytest.raises(ValueError, match="steps_offset=999"):  # a plan of 1 step is not 20
        core.ddim_sigmas(model, 20, spacing, 999, 1.0)
    tooltip = next(p for p in _node("DDIMCoreSchedule").inputs if p.name == "steps_offset").tooltip
    assert spacing in tooltip


def _node(node_id: str) -> core.NodeSpec:
    return next(n for n in core.NODES if n.node_id == node_id)


def test_node_schemas_as_data() -> None:
    ids = [n.node_id for n in core.NODES]
    assert len(set(ids)) == 4
    for node in core.NODES:
        assert node.category.startswith("sampling/custom_sampling/")
        assert node.output in ("SAMPLER", "SIGMAS") and node.description
        for p in node.inputs:
            assert p.kind in ("INT", "FLOAT", "COMBO", "MODEL", "SIGMAS")
            assert len(p.tooltip) > 20, f"{node.node_id}.{p.name} has no tooltip"
            if p.kind in ("INT", "FLOAT"):
                assert p.min <= p.default <= p.max
                steps = p.default / p.step  # a widget shows (and steps by) multiples of step
                assert abs(steps - round(steps)) < 1e-9, f"{p.name}: {p.default} / {p.step}"
    iters = next(
        p for p in _node("DDIMCoreInversionSampler").inputs if p.name == "fixed_point_iters"
    )
    assert "fixed_point_iters + 1" in iters.tooltip  # the call cost
    spacing = next(p for n in core.NODES for p in n.inputs if p.name == "spacing")
    assert spacing.options == TIMESTEP_SPACINGS
    assert all(option in spacing.tooltip for option in TIMESTEP_SPACINGS), spacing.tooltip
    fn, options = core.run_node("DDIMCoreSampler", eta=0.5, s_noise=0.9)
    assert fn is core.sample_ddim_core and options == {"eta": 0.5, "s_noise": 0.9}
    with pytest.raises(ValueError, match="unknown node"):
        core.run_node("Nope")


def _fake_comfyui(root: Path) -> Path:
    (root / "comfy").mkdir(parents=True)
    (root / "comfy" / "samplers.py").write_text("")
    (root / "nodes.py").write_text("")
    (root / "custom_nodes").mkdir()
    return root


def test_install_and_uninstall_on_a_fake_checkout(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    root = _fake_comfyui(tmp_path / "ComfyUI")
    assert install.main(["install", str(root)]) == 0
    shim = root / "custom_nodes" / install.SHIM_DIR / "__init__.py"
    assert "from ddim_comfyui.nodes import load" in shim.read_text()
    assert install.main(["install", str(root)]) == 0  # refresh
    assert install.main(["uninstall", str(root)]) == 0
    assert not shim.parent.exists()
    assert "nothing to remove" not in capsys.readouterr().out
    assert install.main(["uninstall", str(root)]) == 0
    assert "nothing to remove" in capsys.readouterr().out


def test_uninstall_leaves_what_install_did_not_write(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """A file or folder someone put in the shim folder stays, and so does the shim (it was
    removed with them); Python's __pycache__ goes with the shim."""
    root = _fake_comfyui(tmp_path / "ComfyUI")
    shim = install.install(root)
    (shim / "__pycache__").mkdir()
    (shim / "__pycache__" / "__init__.cpython-311.pyc").write_bytes(b"")
    (shim / "workflows").mkdir()
    (shim / "workflows" / "mine.json").write_text("{}")
    assert install.main(["uninstall", str(root)]) == 1
    err = capsys.readouterr().err
    assert "python -m ddim_comfyui uninstall: error: " in err and "also holds ['workflows']" in err
    assert (shim / "workflows" / "mine.json").read_text() == "{}"
    assert (shim / "__init__.py").is_file()
    (shim / "workflows" / "mine.json").unlink()
    (shim / "workflows").rmdir()
    assert install.main(["uninstall", str(root)]) == 0
    assert not shim.exists()


def test_install_refuses_what_is_not_comfyui(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """Not a ComfyUI checkout: a bad argument (status 2); a shim folder this command did not
    write: it cannot do it (status 1)."""
    assert install.main(["install", str(tmp_path)]) == 2
    assert "python -m ddim_comfyui install: error: " in capsys.readouterr().err
    assert install.main(["uninstall", str(tmp_path)]) == 2
    assert "is not a ComfyUI checkout" in capsys.readouterr().err
    root = _fake_comfyui(tmp_path / "ComfyUI")
    foreign = root / "custom_nodes" / install.SHIM_DIR
    foreign.mkdir()
    (foreign / "__init__.py").write_text("# someone else's\n")
    assert install.main(["uninstall", str(root)]) == 1
    assert foreign.exists()
    assert install.main(["install", str(root)]) == 1
    assert "was not written by `ddim-core comfyui install`; left as is" in capsys.readouterr().err
    assert (foreign / "__init__.py").read_text() == "# someone else's\n"
    (foreign / "__init__.py").unlink()
    assert install.main(["install", str(root)]) == 1  # an empty folder of that name
    assert list(foreign.iterdir()) == []
    foreign.rmdir()
    foreign.write_text("a file\n")
    assert install.main(["install", str(root)]) == 1
    assert install.main(["uninstall", str(root)]) == 1
    assert foreign.read_text() == "a file\n"


def test_install_reports_odd_checkouts_in_one_line(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """custom_nodes a file (not a checkout: exit status 2), a shim folder that is a link to an
    installed one, or whose __init__.py is not UTF-8 (refused: 1): one line, never a
    traceback."""
    root = _fake_comfyui(tmp_path / "ComfyUI")
    (root / "custom_nodes").rmdir()
    (root / "custom_nodes").write_text("")
    assert install.main(["install", str(root)]) == 2
    assert "is not a ComfyUI checkout" in capsys.readouterr().err
    other = _fake_comfyui(tmp_path / "Other")
    linked = _fake_comfyui(tmp_path / "Linked")
    shim = install.install(other)
    (linked / "custom_nodes" / install.SHIM_DIR).symlink_to(shim)
    for action in ("uninstall", "install"):
        assert install.main([action, str(linked)]) == 1
        assert "was not written by" in capsys.readouterr().err
    assert (shim / "__init__.py").is_file()
    (shim / "__init__.py").write_bytes(b"\xff\xfe\x00bad")
    for action in ("install", "uninstall"):
        assert install.main([action, str(other)]) == 1
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and "was not written by" in err[0]


@pytest.mark.parametrize("action", ["install", "uninstall"])
def test_install_errors_read_as_the_other_commands(
    action: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`PROG ACTION: error: ...`, one line on stderr, as `ddim-core check` and `ddim-core
    demo` print theirs: status 2 for a bad argument, 1 when it cannot be done. They read
    `ddim-core comfyui install: COMFYUI_DIR=...` (no "error:"), status 2 for both."""
    prog = "ddim-core comfyui"
    root = _fake_comfyui(tmp_path / "ComfyUI")
    shim = root / "custom_nodes" / install.SHIM_DIR
    if action == "uninstall":
        install.install(root)

    def refused(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(shim))

    cases = [
        ([action, str(tmp_path / "nothing")], 2, "is not a ComfyUI checkout"),
        ([action, str(root)], 1, f"[Errno 13] Permission denied: {str(shim)!r}"),
    ]
    for argv, status, message in cases:
        with monkeypatch.context() as patch:
            if status == 1:  # the file system refuses (as root, chmod would not)
                patch.setattr(Path, "mkdir", refused)
                patch.setattr(install.shutil, "rmtree", refused)
            assert install.main(argv, prog=prog) == status
        out = capsys.readouterr()
        lines = out.err.splitlines()
        assert out.out == "" and len(lines) == 1, out
        assert lines[0].startswith(f"{prog} {action}: error: ") and message in lines[0]
    assert shim.exists() == (action == "uninstall")  # nothing written, nothing removed


def test_python_m_ddim_comfyui_installs_and_uninstalls(tmp_path: Path) -> None:
    root = _fake_comfyui(tmp_path / "ComfyUI")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "ddim_comfyui", *args]
        return subprocess.run(command, capture_output=True, text=True, check=False)

    out = run("install", str(root))
    assert out.returncode == 0, out.stderr
    assert "restart ComfyUI" in out.stdout
    assert (root / "custom_nodes" / install.SHIM_DIR / "__init__.py").is_file()
    out = run("uninstall", str(root))
    assert out.returncode == 0 and "removed" in out.stdout
    assert not (root / "custom_nodes" / install.SHIM_DIR).exists()
    out = run("install", str(tmp_path))
    assert out.returncode == 2 and "is not a ComfyUI checkout" in out.stderr
    assert run("reinstall", str(root)).returncode == 2  # argparse: invalid choice


@needs_install
def test_ddim_core_comfyui_runs_the_node_packs_command(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """`ddim-core comfyui install|uninstall DIR`: the comfyui adapter's command, with the
    messages and exit statuses of `python -m ddim_comfyui` under the name `ddim-core comfyui`."""
    root = _fake_comfyui(tmp_path / "ComfyUI")
    assert main(["comfyui", "install", str(root)]) == 0
    assert (root / "custom_nodes" / install.SHIM_DIR / "__init__.py").is_file()
    assert main(["comfyui", "uninstall", str(root)]) == 0
    assert "removed" in capsys.readouterr().out
    assert main(["comfyui", "install", str(tmp_path)]) == 2
    assert "ddim-core comfyui install: error: COMFYUI_DIR=" in capsys.readouterr().err


@pytest.fixture
def fake_comfy(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """A stand-in `comfy` package with what nodes.py uses, and no `comfy_api` (so V1)."""

    class KSAMPLER:
        def __init__(self, sampler_function, extra_options={}, inpaint_options={}):  # type: ignore[no-untyped-def]  # noqa: B006
            self.sampler_function, self.extra_options = sampler_function, extra_options

    names = ["euler"]
    samplers = types.ModuleType("comfy.samplers")
    samplers.KSAMPLER = KSAMPLER  # type: ignore[attr-defined]
    samplers.KSAMPLER_NAMES = list(names)  # type: ignore[attr-defined]
    samplers.SAMPLER_NAMES = [*names, "ddim"]  # type: ignore[attr-defined]
    samplers.KSampler = types.SimpleNamespace(SAMPLERS=samplers.SAMPLER_NAMES)  # type: ignore[attr-defined]
    k_sampling = types.ModuleType("comfy.k_diffusion.sampling")
    comfy, k_diffusion = types.ModuleType("comfy"), types.ModuleType("comfy.k_diffusion")
    comfy.samplers, comfy.k_diffusion = samplers, k_diffusion  # type: ignore[attr-defined]
    k_diffusion.sampling = k_sampling  # type: ignore[attr-defined]
    modules = {
        "comfy": comfy,
        "comfy.samplers": samplers,
        "comfy.k_diffusion": k_diffusion,
        "comfy.k_diffusion.sampling": k_sampling,
        "comfy_api": None,  # import fails: a ComfyUI without the V3 API
    }
    # a real ComfyUI loaded earlier in the run leaves its V3 submodules importable: hide them too
    modules.update(dict.fromkeys(n for n in list(sys.modules) if n.startswith("comfy_api.")))
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delitem(sys.modules, "ddim_comfyui.nodes", raising=False)
    nodes = importlib.import_module("ddim_comfyui.nodes")
    yield types.SimpleNamespace(nodes=nodes, samplers=samplers, k_sampling=k_sampling)
    sys.modules.pop("ddim_comfyui.nodes", None)


def test_v1_nodes_and_sampler_list_registration(fake_comfy) -> None:  # type: ignore[no-untyped-def]
    exported = fake_comfy.nodes.load()
    assert set(exported) == {"NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"}
    assert "comfy_entrypoint" not in exported
    classes = exported["NODE_CLASS_MAPPINGS"]
    assert list(classes) == [n.node_id for n in (*core.NODES, *unsampler.NODES)]
    unsampler_cls = classes["DDIMCoreUnsampler"]
    assert unsampler_cls.RETURN_TYPES == ("LATENT",)
    assert unsampler_cls.INPUT_TYPES()["required"]["positive"][0] == "CONDITIONING"
    sampler_cls = classes["DDIMCoreSampler"]
    spec = sampler_cls.INPUT_TYPES()["required"]
    eta = next(p for p in _node("DDIMCoreSampler").inputs if p.name == "eta")
    assert spec["eta"] == (
        "FLOAT",
        {
            "default": 0.0,
            "min": 0.0,
            "max": 1.0,
            "step": 0.01,
            "round": False,
            "tooltip": eta.tooltip,
        },
    )
    assert sampler_cls.RETURN_TYPES == ("SAMPLER",)
    assert sampler_cls.CATEGORY == "sampling/custom_sampling/samplers"
    (sampler,) = getattr(sampler_cls(), sampler_cls.FUNCTION)(eta=0.3, s_noise=1.0)
    assert isinstance(sampler, fake_comfy.samplers.KSAMPLER)
    assert sampler.sampler_function is core.sample_ddim_core
    schedule = classes["DDIMCoreSchedule"].INPUT_TYPES()["required"]
    tips = {p.name: p.tooltip for p in _node("DDIMCoreSchedule").inputs}
    assert schedule["spacing"] == (
        list(TIMESTEP_SPACINGS),
        {"default": "trailing", "tooltip": tips["spacing"]},
    )
    assert schedule["model"] == ("MODEL", {"tooltip": tips["model"]})
    for node_class in classes.values():
        for value in node_class.INPUT_TYPES()["required"].values():
            assert value[1]["tooltip"]
    for names in (fake_comfy.samplers.KSAMPLER_NAMES, fake_comfy.samplers.KSampler.SAMPLERS):
        assert names[-1] == "ddim_core" and "ddim_core_inverse" not in names  # adds noise first
    fake_comfy.nodes.register()  # idempotent
    assert fake_comfy.samplers.SAMPLER_NAMES.count("ddim_core") == 1
    assert fake_comfy.k_sampling.sample_ddim_core is core.sample_ddim_core
    assert not hasattr(fake_comfy.k_sampling, "sample_ddim_core_inverse")


def test_schedule_at_denoise_0_is_empty_float32_on_the_cpu_too() -> None:
    """denoise 0 returned an empty tensor in the table's dtype on its device (float64 here),
    where the docstring and ComfyUI's BasicScheduler give float32 on the CPU."""
    ab = dc.schedule(dc.DDIMConfig()).alphas_cumprod
    model = FakeModel(types.SimpleNamespace(sigmas=torch.tensor(np.sqrt((1 - ab) / ab))))
    for denoise in (0.0, 1.0):
        out = core.ddim_sigmas(model, 10, "trailing", 0, denoise)
        assert (out.dtype, out.device.type) == (torch.float32, "cpu")


@pytest.mark.parametrize("eta", [None, "0.5"])
def test_sampler_refuses_an_eta_that_is_not_a_number_by_name(eta: object) -> None:
    """It raised "'>' not supported between instances of 'NoneType' and 'int'" before
    sample_ddim's own check, naming no argument."""
    sigmas = torch.tensor([1.0, 0.0])
    with pytest.raises(TypeError, match=r"eta must be a real number"):
        core.sample_ddim_core(lambda x, s: 0 * x, torch.ones(1, 2), sigmas, eta=eta, disable=True)  # type: ignore[arg-type]


def _recording(answer: torch.dtype | None) -> tuple[list[tuple[torch.dtype, torch.dtype]], object]:
    """A denoiser of N(0, 1) data answering in `answer` (None: x's dtype), recording the dtypes
    of the x and sigma it is given."""
    given: list[tuple[torch.dtype, torch.dtype]] = []

    def model(x: torch.Tensor, sigma: torch.Tensor, **extra_args: object) -> torch.Tensor:
        given.append((x.dtype, sigma.dtype))
        out = x.float() / (1 + sigma.float()[:, None] ** 2)
        return out.to(x.dtype if answer is None else answer)

    return given, model


@pytest.mark.parametrize("latent", [torch.float16, torch.bfloat16, torch.float32])
def test_samplers_step_a_latent_in_comfyuis_dtype(latent: torch.dtype) -> None:
    """ComfyUI's euler gives x + d * dt: the latent promoted with the model's denoised and the
    sigmas. With a float32 model (as ComfyUI's) a half latent is float32 from step 1 on; here
    from the start (the same values: the model and the callback see it in float32). A float32
    latent is as before, to the last bit. (They stayed in half precision at every step.)"""
    sigmas = get_sigmas_ddim(CONFIG, 5)
    x = (torch.randn(2, 4, generator=torch.Generator().manual_seed(0)) * sigmas[0]).to(latent)
    after = torch.promote_types(latent, torch.float32)
    for function, up in ((core.sample_ddim_core, False), (core.sample_ddim_core_inverse, True)):
        for options in ({}, {"eta": 1.0}) if not up else ({}, {"fixed_point_iters": 0}):
            given, model = _recording(torch.float32)
            reported: list[torch.dtype] = []
            out = function(
                model,
                x,
                core.flip_sigmas(sigmas) if up else sigmas,
                {"seed": 1},
                lambda d, reported=reported: reported.append(d["x"].dtype),
                True,
                **options,
            )
            assert out.dtype == after, (function.__name__, options)
            assert reported == [after] * 5
            assert {g[0] for g in given} == {after}
    if latent == torch.float32:  # as ddim_kdiffusion's own samplers, unwrapped
        _, model = _recording(torch.float32)
        ref = core.sample_ddim(model, x, sigmas, disable=True)
        assert torch.equal(core.sample_ddim_core(model, x, sigmas, disable=True), ref)
        up = core.flip_sigmas(sigmas)
        iters, tol = core.INVERSION_ITERS, core.INVERSION_TOL
        ref = core.sample_ddim_inverse(model, x, up, None, None, True, iters, tol)
        assert torch.equal(core.sample_ddim_core_inverse(model, x, up, disable=True), ref)


def test_a_half_latent_steps_in_the_sigmas_dtype_promoted_to_float32() -> None:
    """Whatever the model answers in: float32 over float32 or half sigmas, float64 over
    float64 sigmas; a single sigma (no step) returns the latent as given."""
    sigmas = get_sigmas_ddim(CONFIG, 5)
    x = (torch.randn(2, 4, generator=torch.Generator().manual_seed(0)) * sigmas[0]).bfloat16()
    for given_sigmas, expected in (
        (sigmas.bfloat16(), torch.float32),
        (sigmas, torch.float32),
        (sigmas.double(), torch.float64),
    ):
        given, model = _recording(None)
        out = core.sample_ddim_core(model, x, given_sigmas, disable=True)
        assert out.dtype == expected and len(given) == 5
        assert {g[0] for g in given} == {expected}
    assert core.sample_ddim_core(model, x, sigmas[:1], disable=True).dtype == torch.bfloat16


class HalfUNetDenoiser(ComfyStyleDenoiser):
    """ComfyStyleDenoiser on a float32 latent with its UNet in `dtype` (as BaseModel.get_dtype
    reports it, under an `inner_model`): the c_in-scaled input rounded to it, and an eps that
    carries up to an ulp of rounding that changes with any input (a network's accumulated
    rounding), deterministic in the input. Counts its calls."""

    def __init__(self, dtype: Any) -> None:
        super().__init__()
        self.dtype, self.calls = dtype, 0
        self.inner_model = types.SimpleNamespace(get_dtype=lambda: dtype, manual_cast_dtype=None)

    def __call__(self, x, sigma, denoise_mask, model_options={}, seed=None):  # type: ignore[no-untyped-def]  # noqa: B006
        self.calls += 1
        t = int(np.abs(np.log(float(sigma[0])) - self.log_sigmas).argmin())
        c_in = 1 / (1 + sigma[:, None] ** 2) ** 0.5
        xc = (x * c_in).to(torch.float16)
        eps = self.gm(xc.double(), t)
        digest = hashlib.blake2b(xc.numpy().tobytes(), digest_size=8).digest()
        ulp = torch.exp2(torch.floor(torch.log2(eps.abs() + 1e-30)) - 10)
        rng = np.random.default_rng(int.from_bytes(digest, "little"))
        eps = (eps + torch.from_numpy(rng.uniform(-0.5, 0.5, tuple(eps.shape))) * ulp).half()
        return x - sigma[:, None] * eps.float()


def test_inverse_sampler_stops_a_half_precision_models_stalled_steps() -> None:
    """The DDIM Inversion Sampler's defaults (8 refinements, tol 1e-6) on a float16 model with
    float32 latents: the model's rounding keeps every step's residual near 1e-3, so every step
    spent all 9 model calls and the run warned "all used". The sampler now reads the model's
    dtype and stops a step whose residual has stalled: a few calls a step, the warning says
    it stalled (a larger tol helps, more refinements do not). The same model reported as
    float32 keeps every refinement, as before."""
    from ddim_core.implicit import ToleranceWarning

    up = get_sigmas_ddim(CONFIG, 10, dtype=torch.float32).flip(0)
    x0 = torch.randn(64, 4, generator=torch.Generator().manual_seed(2)) * 0.5
    fn, options = core.run_node(
        "DDIMCoreInversionSampler", fixed_point_iters=core.INVERSION_ITERS, tol=core.INVERSION_TOL
    )
    calls = {}
    for dtype in (torch.float16, torch.float32):
        model = HalfUNetDenoiser(dtype)
        with pytest.warns(ToleranceWarning) as caught:
            fn(model, x0, up, extra_args={"denoise_mask": None}, disable=True, **options)
        calls[dtype] = model.calls / 10
        assert ("stalled: its residual stopped" in str(caught[0].message)) == (
            dtype == torch.float16
        )
    assert calls[torch.float32] == core.INVERSION_ITERS + 1
    assert calls[torch.float16] <= 6


def test_inverse_sampler_warns_once_per_run_when_a_step_ends_above_tol() -> None:
    """The DDIM Inversion Sampler's steps that run out of refinements above tol are reported
    once per run (not per step) as a ToleranceWarning; tol 0 (every refinement) checks
    nothing and warns nothing."""
    from ddim_core.implicit import ToleranceWarning

    model = ComfyStyleDenoiser()
    up = get_sigmas_ddim(CONFIG, 10, dtype=torch.float64).flip(0)
    x0 = torch.randn(3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    args = {"denoise_mask": None}
    fn, options = core.run_node("DDIMCoreInversionSampler", fixed_point_iters=2, tol=1e-300)
    with pytest.warns(ToleranceWarning, match="fixed_point_iters=2") as caught:
        fn(model, x0, up, extra_args=args, disable=True, **options)
    assert len(caught) == 1 and "10 of 10 steps" in str(caught[0].message)
    fn, options = core.run_node("DDIMCoreInversionSampler", fixed_point_iters=2, tol=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fn(model, x0, up, extra_args=args, disable=True, **options)
