"""`ddim-core check`: what it finds in diffusers 0.42, that ddim-core's own classes (and the
reference, and the k-diffusion samplers) conform, that a step off by a relative 1e-4 fails,
and that docs/testing.md holds the reports the check prints."""

from __future__ import annotations

import functools
import itertools
import os
import subprocess
import sys
from typing import Any
from unittest import mock

import numpy as np
import pytest

from ddim_core import cli
from ddim_core.testing import reference
from ddim_core.testing.conformance import AREAS, Report, check, main
from ddim_core.testing.reference import ReferenceInverseScheduler, ReferenceScheduler
from ddim_core.testing.targets import guess_kind

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
import ddim_diffusers as dd  # noqa: E402
from ddim_diffusers.schedulers import DDIMSchedulerOutput  # noqa: E402


class OffByARelative1e4(dd.DDIMScheduler):
    """ddim-core's drop-in scheduler with prev_sample scaled by 1 + 1e-4."""

    def step(  # type: ignore[override]
        self,
        model_output: Any,
        timestep: Any,
        sample: Any,
        eta: float = 0.0,
        use_clipped_model_output: bool = False,
        generator: Any = None,
        variance_noise: Any = None,
        return_dict: bool = True,
    ) -> Any:
        out = super().step(
            model_output,
            timestep,
            sample,
            eta,
            use_clipped_model_output,
            generator,
            variance_noise,
            return_dict=True,
        )
        prev = out.prev_sample * (1 + 1e-4)
        if return_dict:
            return DDIMSchedulerOutput(prev, out.pred_original_sample)
        return prev, out.pred_original_sample


@functools.cache
def report(target: str) -> Report:
    return check(target)


def verdicts(r: Report) -> dict[str, str]:
    return {f.area: f.verdict for f in r.findings}


def detail(r: Report, area: str) -> str:
    return next(f.detail for f in r.findings if f.area == area)


def test_a_step_off_by_a_relative_1e4_fails() -> None:
    r = check(OffByARelative1e4, areas=["step values: epsilon", "eta noise"])
    assert verdicts(r) == {"step values: epsilon": "FAIL", "eta noise": "FAIL"}
    assert "(relative 0.0001)" in detail(r, "step values: epsilon")
    assert not r.conformant


def test_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    """`ddim-core check` exits 0 when conformant, 1 when not, 2 for a bad target."""
    spec = f"{__name__}:OffByARelative1e4"
    assert cli.main(["check", spec, "--area", "step values: sample"]) == 1
    out = capsys.readouterr().out
    assert (
        "step values: sample  FAIL" in out
        and "conformant: no (1 area fails: step values: sample)" in out
    )
    assert cli.main(["check", "ddim_diffusers:DDIMScheduler", "--area", "step values: sample"]) == 0
    assert "conformant: yes" in capsys.readouterr().out
    assert cli.main(["check", "ddim_diffusers:Nope"]) == 2
    assert "has no attribute 'Nope'" in capsys.readouterr().err
    assert cli.main(["check", "no_colon"]) == 2
    assert "module:attr" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["x:y", "--area", "no such area"])


class RaisingStep(ReferenceScheduler):
    """The reference scheduler, except that step raises."""

    def step(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")


def sample_raising(model: Any, x: Any, sigmas: Any) -> Any:
    raise RuntimeError("boom")


def test_a_target_that_raises_fails_the_areas_it_raises_in() -> None:
    """The areas that run the target outside Hypothesis (NaN/Inf, thread safety) report its
    exception as a FAIL, as the others do; the rest of the report is still made."""
    areas = ["NaN/Inf", "thread safety"]
    for target in (RaisingStep, sample_raising):
        r = check(target, backend="numpy", areas=areas)
        assert verdicts(r) == dict.fromkeys(areas, "FAIL"), r.text()
        assert all("RuntimeError: boom" in f.detail for f in r.findings)


def test_the_kind_is_guessed_from_the_name_not_from_a_missing_eta() -> None:
    """A forward scheduler whose step takes no eta (Euler) is no inverse scheduler."""
    assert guess_kind(diffusers.EulerDiscreteScheduler) == "scheduler"
    assert guess_kind(diffusers.DDIMInverseScheduler) == "inverse"
    assert guess_kind(ReferenceInverseScheduler) == "inverse"
    # "invert" names are inverting samplers too (reference.kdiffusion_invert was a "sampler")
    assert guess_kind(reference.kdiffusion_invert) == "inverse-sampler"
    assert guess_kind(reference.kdiffusion_sample) == "sampler"
    assert guess_kind(dd.DDIMScheduler) == "scheduler"


class OutStep(ReferenceScheduler):
    """The reference scheduler with an out= argument: the results written into the buffers
    (or, `ignores`, out= taken and left unwritten; `differs`, written off by one ulp)."""

    ignores = differs = False

    def step(self, *args: Any, out: Any = None, **kwargs: Any) -> Any:
        kwargs["return_dict"] = False
        prev, x0 = super().step(*args, **kwargs)
        if out is None or self.ignores:
            return prev, x0
        out[0][...] = np.nextafter(prev, np.inf) if self.differs else prev
        out[1][...] = x0
        return out[0], out[1]


class OutIgnored(OutStep):
    ignores = True


class OutDiffers(OutStep):
    differs = True


def test_out_buffers_are_checked_where_step_takes_out() -> None:
    """`ddim-core check` never passed out= to a step that takes it: a step that ignored its
    buffers, or computed other values with them, passed. Now the area "out= buffers" compares
    each step with and without out= and reads the buffers; n/a where step takes no out=."""
    area = ["out= buffers"]
    (good,) = check(OutStep, backend="numpy", areas=area).findings
    assert good.verdict == "pass", good.detail
    (ignored,) = check(OutIgnored, backend="numpy", areas=area).findings
    assert ignored.verdict == "FAIL" and "out[0] (prev_sample)" in ignored.detail
    (differs,) = check(OutDiffers, backend="numpy", areas=area).findings
    assert (
        differs.verdict == "FAIL" and "the prev_sample returned with out= is not" in differs.detail
    )
    (plain,) = check(ReferenceScheduler, backend="numpy", areas=area).findings
    assert (plain.verdict, plain.detail) == ("n/a", "step takes no out=")


class WritesIntoItsInput(ReferenceScheduler):
    """The reference scheduler, except that step writes its result into `into` (an input)."""

    into = "sample"

    def step(self, model_output: Any, timestep: Any, sample: Any, **kwargs: Any) -> Any:
        kwargs["return_dict"] = False
        prev, x0 = super().step(model_output, timestep, sample, **kwargs)
        given = {"sample": sample, "model_output": model_output}[self.into]
        np.asarray(given)[...] = prev  # a view of a CPU tensor too
        return prev.copy(), x0.copy()


class WritesIntoItsModelOutput(WritesIntoItsInput):
    into = "model_output"


def test_a_step_that_writes_into_its_inputs_fails() -> None:
    """A step that overwrote the caller's sample or model_output (in place) passed every value
    area: the suite compared its results on inputs it never read back; the only area to fail
    was thread safety (its loops share the first sample), a wrong diagnosis. Now the value
    areas read the inputs back after each step and name the one changed."""
    area = ["step values: epsilon"]
    for cls, name in ((WritesIntoItsInput, "sample"), (WritesIntoItsModelOutput, "model_output")):
        for backend in ("numpy", "torch"):
            (found,) = check(cls, backend=backend, areas=area).findings
            assert found.verdict == "FAIL", (cls, backend, found)
            assert f"writes into its {name} (in place)" in found.detail, found.detail
    (plain,) = check(ReferenceScheduler, backend="torch", areas=area).findings
    assert plain.verdict == "pass", plain.detail


class ListTimesteps(ReferenceScheduler):
    """A scheduler whose `timesteps` is a Python list."""

    @property
    def timesteps(self) -> Any:
        return [int(t) for t in super().timesteps]


class JaxTimesteps(ReferenceScheduler):
    """A JAX port: its `timesteps` is a JAX array (whose type lives in jaxlib)."""

    @property
    def timesteps(self) -> Any:
        import jax.numpy as jnp

        return jnp.asarray(super().timesteps)


def test_the_backend_is_guessed_from_jax_or_list_timesteps() -> None:
    """A JAX array's type lives in jaxlib, a list's in builtins: both were taken for array
    libraries of those names, and the check crashed (no `asarray` in them)."""
    from ddim_core.testing.targets import wrap

    pytest.importorskip("jax")
    assert wrap(JaxTimesteps).backend.name == "jax"
    assert wrap(ListTimesteps).backend.name == "torch"  # the default: torch is installed
    r = check(ListTimesteps, areas=["timesteps", "step values: epsilon"])
    assert r.conformant, r.text()
    # host syncs: the check crashed ('list' object has no attribute 'device'); now the area
    # runs (and fails: the NumPy reference reads the meta tensors back to the host)
    (syncs,) = check(ListTimesteps, areas=["host syncs"]).findings
    assert syncs.verdict == "FAIL" and "reads a value back to the host" in syncs.detail


def test_a_backend_without_float64_leaves_the_value_areas_unsupported() -> None:
    """JAX without x64 cannot make float64 arrays: the areas that need them say so, where
    the check crashed with a traceback (backends.Unavailable) before."""
    pytest.importorskip("jax")
    env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
    target = "ddim_core.testing.reference:ReferenceScheduler"
    area = ["--area", "step values: epsilon", "--area", "timesteps"]
    command = [sys.executable, "-m", "ddim_core", "check", target, "--backend", "jax", *area]
    out = subprocess.run(command, capture_output=True, text=True, env=env)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    assert "step values: epsilon  unsupported  jax has no float64" in out.stdout


BAD_TARGETS = [
    (["ddim_diffusers:DDIMScheduler", "--backend", "foo"], "backend 'foo' cannot run here"),
    (  # a package that exists, a module of it that does not (a typo in a plugin's module)
        ["ddim_kdiffusion:sample_ddim", "--backend", "numpy.nope"],
        "backend 'numpy.nope' cannot run here (numpy.nope is not installed)",
    ),
    (["ddim_kdiffusion:sample_ddim", "--kind", "scheduler"], "is not a scheduler class"),
    (["ddim_diffusers:DDIMScheduler", "--kind", "sampler"], "needs a sampler function"),
    (["raises_on_import:X"], "cannot import 'raises_on_import': RuntimeError: no"),
    (["bad_syntax:X"], "cannot import 'bad_syntax': SyntaxError"),
    (  # a scheduler instance, as a pipeline holds one: its repr is its config, many lines
        ["an_instance:scheduler"],
        "an instance of ddim_diffusers.DDIMScheduler, not a scheduler class: name the class "
        "(ddim_diffusers:DDIMScheduler)",
    ),
    (["an_instance:scheduler", "--kind", "inverse"], "an instance of ddim_diffusers"),
    (["an_instance:scheduler", "--kind", "sampler"], "an instance of ddim_diffusers"),
]


@pytest.mark.parametrize("args,message", BAD_TARGETS, ids=[" ".join(a) for a, _ in BAD_TARGETS])
def test_a_target_that_cannot_be_checked_is_one_line_and_exit_2(
    args: list[str], message: str, tmp_path: Any, monkeypatch: Any, capsys: Any
) -> None:
    (tmp_path / "raises_on_import.py").write_text("raise RuntimeError('no')\n")
    (tmp_path / "bad_syntax.py").write_text("def f(:\n")
    (tmp_path / "an_instance.py").write_text(
        "from ddim_diffusers import DDIMScheduler\nscheduler = DDIMScheduler()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert cli.main(["check", *args, "--area", "timesteps"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err.count("\n") == 1 and message in out.err, out.err


def test_the_reference_scheduler_conforms_in_the_value_areas() -> None:
    chosen = ["step values: v_prediction", "clipping and thresholding", "per-sample timesteps"]
    r = check("ddim_core.testing.reference:ReferenceScheduler", areas=chosen)
    assert r.backend == "numpy" and r.conformant, r.text()


@pytest.mark.slow
def test_diffusers_scheduler_divergences() -> None:
    r = report("diffusers:DDIMScheduler")
    assert {a for a, v in verdicts(r).items() if v == "FAIL"} == {
        "timesteps",
        "previous timestep",
        "dtypes",
        "NaN/Inf",
        "host syncs",
        "thread safety",
    }, r.text()
    assert verdicts(r)["per-sample timesteps"] == "unsupported"
    assert all(
        verdicts(r)[f"step values: {p}"] == "pass" for p in ("epsilon", "sample", "v_prediction")
    )
    # the 62 trailing step counts with a spurious -1
    assert "N=61: 62 timesteps, not 61: [-1] not in the plan" in detail(r, "timesteps")
    assert "trailing steps_offset=0: 62" in detail(r, "timesteps")
    # the stride rule: trailing when N does not divide T, and linspace
    prev = detail(r, "previous timestep")
    assert (
        "trailing, N=3: the step from t=666 goes to t=333; the plan's next timestep is 332" in prev
    )
    assert "linspace, N=2" in prev
    # float32 tables up to 3.8e-5 off; NaN at eta = 1 on a zero-SNR trailing schedule
    assert "float32 alphas_cumprod off by up to 3.8e-05" in detail(r, "dtypes")
    nan = detail(r, "NaN/Inf")
    assert (
        "rescale_betas_zero_snr=True" in nan
        and "trailing" in nan
        and "eta=1.0, float32: NaN" in nan
    )


@pytest.mark.slow
def test_diffusers_inverse_scheduler_does_not_mirror_the_forward_plan() -> None:
    r = report("diffusers:DDIMInverseScheduler")
    failing = {a for a, v in verdicts(r).items() if v == "FAIL"}
    assert {"previous timestep", "inverse mirror", "timesteps"} <= failing, r.text()
    assert "trailing, N=3: the inverse step to t=666 starts from t=333's level" in detail(
        r, "previous timestep"
    )
    assert "sampling after inverting returns x_0 off by" in detail(r, "inverse mirror")
    assert "linspace" in detail(r, "timesteps")  # not taken: reported, not failed


@pytest.mark.slow
@pytest.mark.parametrize(
    "target",
    [
        "ddim_diffusers:DDIMScheduler",
        "ddim_diffusers:DDIMInverseScheduler",
        "ddim_core.testing.reference:ReferenceScheduler",
        "ddim_core.testing.reference:ReferenceInverseScheduler",
        "ddim_kdiffusion:sample_ddim",
        "ddim_kdiffusion:sample_ddim_inverse",
    ],
)
def test_ddim_core_conforms(target: str) -> None:
    r = report(target)
    assert r.conformant, r.text()
    assert [f.area for f in r.findings] == list(AREAS)
    assert "FAIL" not in r.text()


@pytest.mark.slow
def test_a_step_off_by_a_relative_1e4_fails_the_whole_check() -> None:
    r = check(OffByARelative1e4)
    failing = {a for a, v in verdicts(r).items() if v == "FAIL"}
    assert {f"step values: {p}" for p in ("epsilon", "sample", "v_prediction")} <= failing
    assert {"clipping and thresholding", "eta noise", "dtypes"} <= failing


@pytest.mark.slow
def test_kdiffusion_euler_is_ddim() -> None:
    """k-diffusion's sample_euler is DDIM with eta = 0 and sample_euler_ancestral DDIM with eta
    given the same noise (DESIGN.md), when sigmas are taken at the DDIM timesteps."""
    import kdiffusion_loader

    sampling, _ = kdiffusion_loader.load()
    euler = check(sampling.sample_euler, areas=["step values: sample"])
    ancestral = check(sampling.sample_euler_ancestral, areas=["step values: sample", "eta noise"])
    assert euler.conformant and ancestral.conformant, euler.text() + ancestral.text()


@pytest.mark.slow
def test_the_docs_page_holds_the_reports_the_check_prints() -> None:
    """docs/testing.md's reports are `ddim-core check TARGET --format markdown` now; rewrite
    them with `python tests/docs_reports.py`."""
    import docs_reports

    found = docs_reports.blocks(docs_reports.PAGE.read_text(encoding="utf-8"))
    assert sorted(found) == sorted(docs_reports.TARGETS)
    for target in docs_reports.TARGETS:
        assert found[target] == report(target).text("markdown"), (
            f"docs/testing.md's report of {target} is out of date: run python tests/docs_reports.py"
        )


def test_a_target_in_the_current_directory_is_found_as_python_m_finds_it(
    tmp_path: Any, monkeypatch: Any, capsys: Any
) -> None:
    """The `ddim-core` console script's sys.path starts at its bin directory, not the current
    one: `ddim-core check my_scheduler:Mine` next to my_scheduler.py said "cannot import
    'my_scheduler'" (exit 2) where `python -m ddim_core check` found it."""
    (tmp_path / "my_ddim_scheduler.py").write_text(
        "from ddim_core.testing.reference import ReferenceScheduler as Mine\n"
    )
    monkeypatch.chdir(tmp_path)
    script_path = [p for p in sys.path if p not in ("", os.getcwd())]
    monkeypatch.setattr(sys, "path", script_path)
    try:
        args = ["check", "my_ddim_scheduler:Mine", "--area", "timesteps"]
        assert cli.main(args) == 0, capsys.readouterr().err
    finally:
        sys.modules.pop("my_ddim_scheduler", None)
    assert "timesteps  pass" in capsys.readouterr().out
    assert sys.path == script_path  # the directory is taken for the check only


def test_the_check_runs_as_a_command() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "ddim_core",
            "check",
            "ddim_diffusers:DDIMScheduler",
            "--area",
            "timesteps",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "timesteps  pass" in out.stdout


def test_the_command_leaves_no_hypothesis_folder_in_the_current_directory(tmp_path: Any) -> None:
    """Hypothesis caches the constants of the local modules it finds (the `ddim-core` script,
    an editable install) under its home directory, `.hypothesis/` in the current directory
    by default: `ddim-core check` run in a user's project left a `.hypothesis/` folder there
    (34 files), although the check keeps no example database."""
    env = {k: v for k, v in os.environ.items() if k != "HYPOTHESIS_STORAGE_DIRECTORY"}
    command = [sys.executable, "-m", "ddim_core", "check"]
    command += ["ddim_core.testing.reference:ReferenceScheduler", "--area", "timesteps"]
    out = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert "timesteps  pass" in out.stdout
    assert list(tmp_path.iterdir()) == []


def test_a_sampler_on_array_api_strict_arrays_is_checked() -> None:
    """The check's Gaussian denoiser called sigma.reshape, which array-api-strict arrays do
    not have: every value area of any sampler failed there, the sampler's fault or not."""
    pytest.importorskip("array_api_strict")
    r = check(
        "ddim_kdiffusion:sample_ddim", backend="array_api_strict", areas=["step values: sample"]
    )
    assert r.conformant, r.text()


class ShortOnMeta(ReferenceScheduler):
    """Steps meta tensors without reading them, but returns one sample of the batch."""

    def step(self, model_output: Any, timestep: Any, sample: Any, **kwargs: Any) -> Any:
        return sample[:1], None


class OffMeta(ReferenceScheduler):
    """Returns a CPU tensor for a sample on the meta device."""

    def step(self, model_output: Any, timestep: Any, sample: Any, **kwargs: Any) -> Any:
        return torch.zeros(sample.shape), None


def test_host_syncs_fails_a_step_of_another_shape_or_device() -> None:
    """host syncs raised Divergence outside any search: `check` (and `ddim-core check`)
    ended in a traceback where the area should FAIL."""
    short = check(ShortOnMeta, backend="torch", areas=["host syncs"])
    assert verdicts(short) == {"host syncs": "FAIL"}, short.text()
    assert "shape (1, 3, 4, 4) for an input of shape (2, 3, 4, 4)" in detail(short, "host syncs")
    off = check(OffMeta, backend="torch", areas=["host syncs"])
    assert verdicts(off) == {"host syncs": "FAIL"}, off.text()
    assert "returns a tensor on cpu" in detail(off, "host syncs")


class ReturnsNothing(ReferenceScheduler):
    """Forgets to return its step."""

    def step(self, *args: Any, **kwargs: Any) -> Any:
        super().step(*args, **kwargs)


class FlatInverse(ReferenceInverseScheduler):
    """Returns its steps flattened."""

    def step(self, model_output: Any, timestep: Any, sample: Any, **kwargs: Any) -> Any:
        prev, _ = super().step(model_output, timestep, sample, return_dict=False)
        return prev.reshape(-1), None


class NoTimesteps(ReferenceScheduler):
    """set_timesteps sets none."""

    timesteps = None

    def set_timesteps(self, num_inference_steps: int, device: Any = None) -> None:
        pass


def sample_nothing(model: Any, x: Any, sigmas: Any) -> Any:
    reference.kdiffusion_sample(model, x, sigmas)  # forgets to return


def invert_flat(model: Any, x: Any, sigmas: Any) -> Any:
    return reference.kdiffusion_invert(model, x, sigmas).reshape(-1)


def test_a_result_that_is_no_array_of_the_inputs_shape_fails() -> None:
    """A step or loop returning None (or timesteps left None) made `check` raise
    AttributeError, TypeError or IndexError from the areas that read the result as an array,
    and pass the value areas (None was not compared); a flattened result raised ValueError in
    inverse mirror. Each is now a FAIL of every area that runs the target, naming it."""
    cases: list[tuple[Any, list[str], str]] = [
        (
            ReturnsNothing,
            ["previous timestep", "step values: epsilon", "dtypes", "NaN/Inf", "thread safety"],
            "step returns NoneType as prev_sample, not an array",
        ),
        (
            FlatInverse,
            ["previous timestep", "inverse mirror", "per-sample timesteps"],
            "step returns prev_sample of shape (",
        ),
        (
            NoTimesteps,
            ["step values: sample", "dtypes", "NaN/Inf", "per-sample timesteps"],
            "timesteps after set_timesteps are no integers (NoneType",
        ),
        (sample_nothing, ["step values: sample", "dtypes", "NaN/Inf"], "returns NoneType as x"),
        (invert_flat, ["step values: sample", "inverse mirror"], "returns x of shape (96,)"),
    ]
    for target, areas, message in cases:
        r = check(target, backend="numpy", areas=areas)
        assert verdicts(r) == dict.fromkeys(areas, "FAIL"), r.text()
        assert all(message in f.detail for f in r.findings), r.text()


class NoVarianceNoise(ReferenceScheduler):
    """A step without eta and variance_noise (deterministic DDIM only)."""

    def step(  # type: ignore[override]
        self, model_output: Any, timestep: Any, sample: Any, return_dict: bool = True
    ) -> Any:
        return super().step(model_output, timestep, sample, return_dict=return_dict)


def test_nan_inf_checks_eta_0_without_variance_noise() -> None:
    """The first eta = 1 step raised Unsupported out of the whole sweep: the area read
    unsupported and the eta 0 steps were never checked."""
    r = check(NoVarianceNoise, areas=["NaN/Inf"])
    assert verdicts(r) == {"NaN/Inf": "pass"}, r.text()
    steps = int(detail(r, "NaN/Inf").split()[0])
    full = int(detail(check(ReferenceScheduler, areas=["NaN/Inf"]), "NaN/Inf").split()[0])
    assert 2 * steps == full  # every eta 0 step of the sweep
    assert "(not taken: eta=1.0: step takes no variance_noise)" in detail(r, "NaN/Inf")


def sample_euler(model: Any, x: Any, sigmas: Any) -> Any:
    """Euler (DDIM at eta 0) in any dtype; NumPy promotes float16 x by float32 sigmas."""
    for i in range(len(sigmas) - 1):
        d = (x - model(x, sigmas[i : i + 1])) / sigmas[i]
        x = x + d * (sigmas[i + 1] - sigmas[i])
    return x


def test_a_half_precision_loop_may_return_its_sigmas_float32() -> None:
    """dtypes gives half-precision loops float32 sigmas (as ComfyUI and k-diffusion's
    get_sigmas_* do) and failed a sampler returning float32 there; k-diffusion's own Euler,
    Heun and LMS do (their to_d divides by sigma as a 4-d float32 tensor). float64 still
    fails."""
    r = check(sample_euler, backend="numpy", areas=["dtypes"])
    assert verdicts(r) == {"dtypes": "pass"}, r.text()

    def sample_euler_float64(model: Any, x: Any, sigmas: Any) -> Any:
        return sample_euler(model, x, sigmas).astype(np.float64)

    r = check(sample_euler_float64, backend="numpy", areas=["dtypes"])
    assert verdicts(r) == {"dtypes": "FAIL"}, r.text()
    assert "a float16 loop (sigmas float32) returns float64" in detail(r, "dtypes")


@pytest.mark.slow
def test_kdiffusion_samplers_pass_dtypes() -> None:
    """k-diffusion's sample_euler returns float32 for a float16 x and float32 sigmas."""
    import kdiffusion_loader

    sampling, _ = kdiffusion_loader.load()
    r = check(sampling.sample_euler, backend="torch", areas=["dtypes"])
    assert r.conformant, r.text()


class FinalLevelIgnoresSetAlphaToOne(ReferenceScheduler):
    """final_alpha_cumprod alpha_bar_0 whatever set_alpha_to_one says, and steps on it: every
    step agrees with its own table, whose last level is wrong."""

    def __init__(
        self,
        beta_schedule: str = "linear",
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        rescale_betas_zero_snr: bool = False,
        set_alpha_to_one: bool = True,
    ) -> None:
        super().__init__(
            beta_schedule=beta_schedule,
            beta_start=beta_start,
            beta_end=beta_end,
            rescale_betas_zero_snr=rescale_betas_zero_snr,
            set_alpha_to_one=set_alpha_to_one,
        )
        self.final_alpha_cumprod = self.alphas_cumprod[0]


class FinalLevelAlwaysOne(FinalLevelIgnoresSetAlphaToOne):
    """final_alpha_cumprod 1 even with set_alpha_to_one=False."""

    def __init__(self, set_alpha_to_one: bool = True) -> None:
        super().__init__(set_alpha_to_one=set_alpha_to_one)
        self.final_alpha_cumprod = 1.0


class InverseInitialLevelIgnoresSetAlphaToOne(ReferenceInverseScheduler):
    """initial_alpha_cumprod alpha_bar_0 whatever set_alpha_to_one says."""

    def __init__(self, set_alpha_to_one: bool = True) -> None:
        super().__init__(set_alpha_to_one=set_alpha_to_one)
        self.initial_alpha_cumprod = self.alphas_cumprod[0]


def test_dtypes_checks_the_level_past_the_last_step() -> None:
    """The value areas step on the target's own table, its final (inverse: initial) level
    included, and the table check read alphas_cumprod only: a final_alpha_cumprod that
    ignores set_alpha_to_one passed every value area, and dtypes only where its random
    steps happened on the last one, as a float32 error."""
    cases = [
        (FinalLevelIgnoresSetAlphaToOne, "final_alpha_cumprod = 0.9999 with set_alpha_to_one=True"),
        (FinalLevelAlwaysOne, "final_alpha_cumprod = 1 with set_alpha_to_one=False"),
        (
            InverseInitialLevelIgnoresSetAlphaToOne,
            "initial_alpha_cumprod = 0.9999 with set_alpha_to_one=True",
        ),
    ]
    for target, message in cases:
        r = check(target, backend="numpy", areas=["dtypes"])
        assert verdicts(r) == {"dtypes": "FAIL"}, r.text()
        assert message in detail(r, "dtypes"), r.text()
    for target in (ReferenceScheduler, ReferenceInverseScheduler):
        r = check(target, backend="numpy", areas=["dtypes"])
        assert verdicts(r) == {"dtypes": "pass"}, r.text()


class IgnoresTrainedBetas(ReferenceScheduler):
    """Steps on the named schedule's table whatever trained_betas says."""

    def __init__(
        self,
        beta_schedule: str = "linear",
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        rescale_betas_zero_snr: bool = False,
        trained_betas: Any = None,
    ) -> None:
        super().__init__(
            beta_schedule=beta_schedule,
            beta_start=beta_start,
            beta_end=beta_end,
            rescale_betas_zero_snr=rescale_betas_zero_snr,
        )


class FixedLinearRange(IgnoresTrainedBetas):
    """A linear schedule from 0.0001 to 0.02 whatever beta_start and beta_end say."""

    def __init__(
        self,
        beta_schedule: str = "linear",
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        rescale_betas_zero_snr: bool = False,
    ) -> None:
        if beta_schedule == "linear":
            beta_start, beta_end = 0.0001, 0.02
        super().__init__(beta_schedule, beta_start, beta_end, rescale_betas_zero_snr)


def test_dtypes_checks_tables_of_other_betas() -> None:
    """The value areas step on the target's own table, and the table check read the four
    named schedules only: a table that ignores trained_betas, or a linear one that ignores
    beta_start and beta_end, was seen only where dtypes' random steps drew such a config."""
    cases = [
        (IgnoresTrainedBetas, "(trained_betas: alphas_cumprod["),
        (FixedLinearRange, "(linear, beta_start=0.0005, beta_end=0.03: alphas_cumprod["),
    ]
    for target, message in cases:
        r = check(target, backend="numpy", areas=["dtypes"])
        assert verdicts(r) == {"dtypes": "FAIL"}, r.text()
        assert message in detail(r, "dtypes"), r.text()


class HalfTables(ReferenceScheduler):
    """Its tables and final level rounded to float16: each within 1 ulp of exact in float16.
    It steps on the exact tables (its steps on float16 ones are off, as they must be)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.alphas_cumprod = np.asarray(self.alphas_cumprod, dtype=np.float16)
        self.final_alpha_cumprod = np.float16(self.final_alpha_cumprod)

    def _plan(self) -> reference.Plan:
        plan = self._state().plan
        assert plan is not None
        return plan


class HalfTablesIgnoringTrainedBetas(IgnoresTrainedBetas):
    def __init__(self, trained_betas: Any = None) -> None:
        super().__init__(trained_betas=trained_betas)
        self.alphas_cumprod = np.asarray(self.alphas_cumprod, dtype=np.float16)


def test_half_precision_tables_are_held_to_their_own_ulp() -> None:
    """dtypes holds tables and the final level to 1 ulp of exact in their dtype (the docs), but
    picked float32's ulp by '"32" in dtype' and float64's for anything else: a float16 table
    rounded once from exact failed ('float16 alphas_cumprod off by up to 0.00059 relative',
    within float16's ulp there), and its final level would have next. A float16 table built
    from the wrong betas still fails."""
    r = check(HalfTables, backend="numpy", areas=["dtypes"])
    assert verdicts(r) == {"dtypes": "pass"}, r.text()
    r = check(HalfTablesIgnoringTrainedBetas, backend="numpy", areas=["dtypes"])
    assert verdicts(r) == {"dtypes": "FAIL"}, r.text()
    assert "float16 alphas_cumprod off by" in detail(r, "dtypes"), r.text()
    assert "(trained_betas: alphas_cumprod[" in detail(r, "dtypes"), r.text()


def test_a_step_that_raises_is_named_with_its_config_and_step() -> None:
    """NaN/Inf reported a step that raised as 'step raises RuntimeError: boom' with no config,
    step or dtype, and the value areas as the drawn example (config, steps, seed, pick) with
    no timestep: the user could not tell which step of which plan raised."""
    areas = ["previous timestep", "NaN/Inf", "step values: epsilon"]
    r = check(RaisingStep, backend="numpy", areas=areas)
    assert detail(r, "previous timestep").startswith(
        "step raises RuntimeError: boom at DDIMConfig(), 1 step, step 0 -> -1, eta=0.0, float64"
    ), r.text()
    assert detail(r, "NaN/Inf").startswith(
        "step raises RuntimeError: boom at DDIMConfig(clip_sample=False), 1 step, "
        "step 0 -> -1, eta=0.0, float32"
    ), r.text()
    assert ", 1 step, step 0 -> -1, eta=0.0, float64 (" in detail(r, "step values: epsilon"), (
        r.text()
    )


class RejectsLinspace(ReferenceScheduler):
    """The reference scheduler, except that set_timesteps takes no linspace spacing (as
    diffusers' inverse scheduler does)."""

    def set_timesteps(self, num_inference_steps: Any = None, *args: Any, **kwargs: Any) -> None:
        if self.config.timestep_spacing == "linspace":
            raise ValueError("linspace is not supported")
        super().set_timesteps(num_inference_steps, *args, **kwargs)


def test_a_spacing_set_timesteps_rejects_is_left_out_of_the_random_configs() -> None:
    """A scheduler whose set_timesteps raises for linspace (right on leading and trailing)
    failed the timesteps area: the sweep left linspace out ("not taken"), then the random
    configs drew it and reported `set_timesteps(1) raises ValueError`, where the docs say
    inputs the target rejects are skipped, not failed."""
    (found,) = check(RejectsLinspace, backend="numpy", areas=["timesteps"]).findings
    assert found.verdict == "pass", found.detail
    assert "not taken: linspace: ValueError: linspace is not supported" in found.detail


class CastsOutputs(ReferenceScheduler):
    """The reference scheduler, except that step returns `which` result in float32 (x0:
    pred_original_sample) whatever the input's dtype."""

    which = "x0"

    def step(self, model_output: Any, timestep: Any, sample: Any, **kwargs: Any) -> Any:
        kwargs["return_dict"] = False
        prev, x0 = super().step(model_output, timestep, sample, **kwargs)
        if self.which == "x0":
            return prev, x0.astype(np.float32)
        return prev.astype(np.float32), x0


class CastsPrevSample(CastsOutputs):
    which = "prev"


def test_a_step_returning_another_dtype_is_named() -> None:
    """A float32 step whose pred_original_sample came back float64 passed every area (the
    dtypes area read prev_sample's dtype only); a float64 step returning float32 failed the
    value areas as `off by 2.9e-08 ... float64`, never naming the dtype. Each step of the
    value and dtypes areas now checks both results keep the input's dtype."""
    area = ["step values: epsilon", "dtypes"]
    x0 = {f.area: f for f in check(CastsOutputs, backend="numpy", areas=area).findings}
    assert x0["dtypes"].verdict == "FAIL", x0["dtypes"].detail
    assert "a float16 step returns pred_original_sample float32" in x0["dtypes"].detail
    assert x0["step values: epsilon"].verdict == "FAIL"
    assert (
        "a float64 step returns pred_original_sample float32" in x0["step values: epsilon"].detail
    )
    (prev,) = check(CastsPrevSample, backend="numpy", areas=area[:1]).findings
    assert prev.verdict == "FAIL" and "a float64 step returns prev_sample float32" in prev.detail


class IgnoresUseClipped(ReferenceScheduler):
    """The reference scheduler, except that step ignores use_clipped_model_output."""

    def step(  # type: ignore[override]
        self,
        model_output: Any,
        timestep: Any,
        sample: Any,
        eta: float = 0.0,
        use_clipped_model_output: bool = False,
        generator: Any = None,
        variance_noise: Any = None,
        return_dict: bool = True,
    ) -> Any:
        return super().step(
            model_output, timestep, sample, eta, False, generator, variance_noise, return_dict
        )


def test_a_counterexample_names_use_clipped_model_output() -> None:
    """The clipping area's counterexample for a step that ignores use_clipped_model_output
    named the config, step and eta but not use_clipped_model_output=True, the one input that
    made it differ: the message could not be reproduced from."""
    (found,) = check(
        IgnoresUseClipped, backend="numpy", areas=["clipping and thresholding"]
    ).findings
    assert found.verdict == "FAIL", found.detail
    assert "use_clipped_model_output=True" in found.detail, found.detail


def _signed_quantile_threshold(x0: np.ndarray, ratio: float, max_value: float) -> np.ndarray:
    """reference.threshold with s the quantile of x_0 rather than of |x_0|."""
    flat = x0.reshape(x0.shape[0], -1)
    s = np.minimum(np.maximum(np.quantile(flat, ratio, axis=1), 1.0), max_value)[:, None]
    out: np.ndarray = (np.clip(flat, -s, s) / s).reshape(x0.shape)
    return out


class SignedQuantile(ReferenceScheduler):
    """A port without trained_betas, rescale_betas_zero_snr and squaredcos_cap_v2, whose
    dynamic thresholding takes its s as the quantile of x_0, not of |x_0|."""

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        clip_sample: bool = True,
        clip_sample_range: float = 1.0,
        set_alpha_to_one: bool = True,
        steps_offset: int = 0,
        prediction_type: str = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        sample_max_value: float = 1.0,
        timestep_spacing: str = "leading",
    ) -> None:
        if beta_schedule not in ("linear", "scaled_linear"):
            raise NotImplementedError(beta_schedule)
        super().__init__(
            num_train_timesteps=num_train_timesteps,
            beta_start=beta_start,
            beta_end=beta_end,
            beta_schedule=beta_schedule,
            clip_sample=clip_sample,
            clip_sample_range=clip_sample_range,
            set_alpha_to_one=set_alpha_to_one,
            steps_offset=steps_offset,
            prediction_type=prediction_type,
            thresholding=thresholding,
            dynamic_thresholding_ratio=dynamic_thresholding_ratio,
            sample_max_value=sample_max_value,
            timestep_spacing=timestep_spacing,
        )

    def step(self, *args: Any, **kwargs: Any) -> Any:
        with mock.patch.object(reference, "threshold", _signed_quantile_threshold):
            return super().step(*args, **kwargs)


def test_thresholding_is_checked_where_table_options_are_not_taken() -> None:
    """The clipping area drew clip_sample and thresholding configs from one strategy: for a
    class that takes no table options, most thresholding draws were skipped (their schedule
    not taken) and 1 of its 40 examples thresholded, so a quantile of x_0 rather than |x_0|
    passed. Each kind now has its own examples."""
    (found,) = check(SignedQuantile, backend="numpy", areas=["clipping and thresholding"]).findings
    assert found.verdict == "FAIL", found.detail
    assert "thresholding=True" in found.detail, found.detail


class NoThresholding(ReferenceScheduler):
    """The reference scheduler, refusing thresholding (a port that has not written it)."""

    def __init__(self, *args: Any, thresholding: bool = False, **kwargs: Any) -> None:
        if thresholding:
            raise NotImplementedError("thresholding")
        super().__init__(*args, **kwargs)


def test_a_pass_says_which_kind_was_not_taken() -> None:
    """Since clip and thresholding got their own examples, a class refusing every
    thresholding draw passed the area as 'clip_sample and thresholding, float64', claiming
    thresholding it never ran: the kind not taken is now said."""
    (found,) = check(NoThresholding, backend="numpy", areas=["clipping and thresholding"]).findings
    assert found.verdict == "pass", found.detail
    assert found.detail.endswith("(thresholding: not taken)"), found.detail


class HalfwayTimesteps(ReferenceScheduler):
    """The reference scheduler, its timesteps float64 and half a step up (900.5, 800.5, ...)."""

    @property
    def timesteps(self) -> np.ndarray:
        return super().timesteps + 0.5


def test_timesteps_that_are_not_integers_fail() -> None:
    """The timesteps area read a scheduler's timesteps cast to int64: 900.5 as 900, so a
    scheduler whose timesteps were all half a step off passed it."""
    (found,) = check(HalfwayTimesteps, backend="numpy", areas=["timesteps"]).findings
    assert found.verdict == "FAIL", found.detail
    assert "is not an integer" in found.detail, found.detail


class HalfSkipsClipping(ReferenceScheduler):
    """The reference scheduler, except that a float16 step neither clips nor thresholds (a
    half-precision path that forgets them)."""

    def step(self, model_output: Any, timestep: Any, sample: Any, **kwargs: Any) -> Any:
        if np.asarray(sample).dtype != np.float16:
            return super().step(model_output, timestep, sample, **kwargs)
        options = {k: v for k, v in vars(self.config).items() if k != "prev_timestep"}
        plain = ReferenceScheduler(**{**options, "clip_sample": False, "thresholding": False})
        plain.set_timesteps(self.num_inference_steps)
        return plain.step(model_output, timestep, sample, **kwargs)


def test_dtypes_steps_clip_and_threshold() -> None:
    """A step whose float16 path skipped clip_sample and thresholding passed every area: the
    value areas (which clip) step in float64 only, and the dtypes area's float16 steps were
    all clip_sample=False. The dtypes area now draws clip_sample and thresholding."""
    (found,) = check(HalfSkipsClipping, backend="numpy", areas=["dtypes"]).findings
    assert found.verdict == "FAIL", found.detail
    assert "float16" in found.detail and "float32" not in found.detail, found.detail


class TorchFloat64Table(ReferenceScheduler):
    """Its linear tables torch's float64 product of torch's float64 linspace (diffusers'
    recipe, in float64): a few float64 ulps from NumPy's, from linspace's other rounding.
    Zero-SNR configs keep the reference table (their rescale is another recipe)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        c = self.config
        if c.beta_schedule == "linear" and c.trained_betas is None and not c.rescale_betas_zero_snr:
            betas = torch.linspace(
                c.beta_start, c.beta_end, c.num_train_timesteps, dtype=torch.float64
            )
            self.alphas_cumprod = torch.cumprod(1.0 - betas, 0).numpy()


class Float32BetasTable(ReferenceScheduler):
    """Its float64 table the product of betas rounded to float32: about 1e-7 relative off."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        betas = reference.config_schedule(self.config).betas.astype(np.float32)
        self.alphas_cumprod = np.cumprod(1.0 - betas.astype(np.float64))


def test_a_float64_table_rounded_another_way_passes() -> None:
    """A scheduler building its table as diffusers does, in float64 (torch.linspace,
    torch.cumprod) failed dtypes: 'float64 alphas_cumprod off by up to 7.9e-16 relative (...
    = 5.17572249e-05, exact 5.17572249e-05)': 3.5 float64 ulps from NumPy's linspace and
    product, which 'exact' is, 1000 x under the float64 step tolerance. float64 tables are now
    held to TOLERANCE['float64'] relative (others to 1 ulp); one from float32 betas fails."""
    r = check(TorchFloat64Table, backend="numpy", areas=["dtypes"])
    assert verdicts(r) == {"dtypes": "pass"}, r.text()
    r = check(Float32BetasTable, backend="numpy", areas=["dtypes"])
    assert verdicts(r) == {"dtypes": "FAIL"}, r.text()
    assert "float64 alphas_cumprod off by" in detail(r, "dtypes"), r.text()


class PassesItsOptionsOn(ReferenceScheduler):
    """A subclass that passes its options and step's on as **kwargs, and halves eta (a bug
    only the eta areas can see)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)

    def step(self, model_output: Any, timestep: Any, sample: Any, **kwargs: Any) -> Any:
        kwargs["eta"] = kwargs.get("eta", 0.0) / 2
        return super().step(model_output, timestep, sample, **kwargs)


class PassesStepOptionsToAStepWithoutThem(ReferenceScheduler):
    """step(..., **kwargs) passed on to a step that takes no eta nor variance_noise."""

    def step(self, model_output: Any, timestep: Any, sample: Any, **kwargs: Any) -> Any:
        return self._plain(model_output, timestep, sample, **kwargs)

    def _plain(
        self, model_output: Any, timestep: Any, sample: Any, return_dict: bool = True
    ) -> Any:
        return super().step(model_output, timestep, sample, return_dict=return_dict)


def test_a_class_taking_kwargs_is_given_its_options() -> None:
    """A scheduler whose __init__ or step takes **kwargs (a subclass passing them on) was
    reported conformant with nothing checked: every config with an option changed was 'takes
    no clip_sample' (unsupported), and eta 'step takes no variance_noise'. A **kwargs takes
    what the base class's method takes; a TypeError naming a step option passed on is
    unsupported, not a failure."""
    areas = ["step values: epsilon", "clipping and thresholding", "eta noise"]
    r = check(PassesItsOptionsOn, backend="numpy", areas=areas)
    assert verdicts(r) == {
        "step values: epsilon": "pass",
        "clipping and thresholding": "pass",
        "eta noise": "FAIL",
    }, r.text()
    assert "(random configs" not in detail(r, "step values: epsilon")  # not 'takes none of'
    areas = ["eta noise", "NaN/Inf"]
    r = check(PassesStepOptionsToAStepWithoutThem, backend="numpy", areas=areas)
    assert verdicts(r) == {"eta noise": "unsupported", "NaN/Inf": "pass"}, r.text()
    assert "not taken: eta=1.0: step takes no eta" in detail(r, "NaN/Inf")


def test_a_step_returning_another_library_is_named_as_such() -> None:
    """A step given torch tensors that returns NumPy arrays of the same dtype failed dtypes
    with 'a float32 step returns float32': the dtypes were compared as strings, torch.float32
    against float32, and the message named two equal dtypes. It names the two libraries."""
    r = check(ReferenceScheduler, backend="torch", areas=["dtypes"])
    assert verdicts(r) == {"dtypes": "FAIL"}, r.text()
    found = detail(r, "dtypes")
    assert "a float32 step of a torch.Tensor returns a numpy.ndarray (float32)" in found, found
    assert "a float32 step returns float32" not in found, found


def _sample_with_eta(model: Any, x: Any, sigmas: Any, eta: float = 0.0, noise_sampler: Any = None):
    """A NumPy k-diffusion-style DDIM sampler taking eta and noise_sampler."""
    draws = [noise_sampler(a, b) for a, b in itertools.pairwise(sigmas)] if eta else None
    return reference.kdiffusion_sample(model, x, sigmas, eta=eta, noise=draws)


def sample_passing_kwargs_on(model: Any, x: Any, sigmas: Any, **kwargs: Any) -> Any:
    return _sample_with_eta(model, x, sigmas, **kwargs)


def sample_passing_a_wrong_eta_on(model: Any, x: Any, sigmas: Any, **kwargs: Any) -> Any:
    if kwargs.get("eta"):
        kwargs["eta"] = kwargs["eta"] / 2
    return _sample_with_eta(model, x, sigmas, **kwargs)


def sample_passing_kwargs_to_a_sampler_without_eta(model: Any, x: Any, sigmas: Any, **kwargs: Any):
    return reference.kdiffusion_sample(model, x, sigmas, **kwargs)


def test_a_sampler_taking_kwargs_is_given_eta() -> None:
    """A sampler fn(model, x, sigmas, **kwargs) passing them on to one that takes eta and
    noise_sampler was reported 'eta noise: unsupported (takes no eta and noise_sampler)' and
    'conformant: yes', eta never run, however wrong its eta steps. Its **kwargs is given eta
    and noise_sampler; a TypeError naming one is unsupported, not a failure."""
    areas = ["eta noise", "NaN/Inf"]
    r = check(sample_passing_kwargs_on, backend="numpy", areas=areas)
    assert verdicts(r) == {"eta noise": "pass", "NaN/Inf": "pass"}, r.text()
    assert "not taken" not in detail(r, "NaN/Inf"), r.text()
    r = check(sample_passing_a_wrong_eta_on, backend="numpy", areas=["eta noise"])
    assert verdicts(r) == {"eta noise": "FAIL"}, r.text()
    r = check(sample_passing_kwargs_to_a_sampler_without_eta, backend="numpy", areas=areas)
    assert verdicts(r) == {"eta noise": "unsupported", "NaN/Inf": "pass"}, r.text()
    assert "not taken: eta=1.0: takes no eta and noise_sampler" in detail(r, "NaN/Inf"), r.text()
