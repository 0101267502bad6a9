"""The benchmark suite runs (smoke mode: tiny shapes, few repeats), so it never rots.
Timings are reported, never asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow
pytest.importorskip("torch")
pytest.importorskip("diffusers")
ROOT = Path(__file__).parent.parent


def test_smoke_run_writes_markdown_and_json(tmp_path: Path) -> None:
    pytest.importorskip("numba")
    subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["meta"]["smoke"] is True
    rows = data["steps"]
    assert {r["library"] for r in rows} == {"torch", "numpy"}
    assert {r["direction"] for r in rows} == {"forward", "inverse"}
    for r in rows:
        assert r["times_us"]["floor"] > 0 and r["times_us"]["ddim-core"] > 0
        assert "ddim-core/floor" in r["ratios"] and "ddim-core/diffusers" in r["ratios"]
    assert {lp["library"] for lp in data["loops"]} == {"torch", "numpy"}
    table = (tmp_path / "results.md").read_text()
    assert "| torch | 1x4x8x8 | for | 0 | off |" in table
    assert "50-step loop" in table
    pipe = data["pipeline"]
    assert {r["eta"] for r in pipe} == {0.0, 1.0}
    for r in pipe:
        assert {"ddim_diffusers", "diffusers", "floor", "normal draw"} <= set(r["us"])
        # eta 1 rows time our eta 0 loop in the same repeats: the noise's cost in draws
        assert ("ddim_diffusers eta 0" in r["us"]) == (r["eta"] > 0)
    assert "| 1x4x8x8 | 0 |" in table and "pipeline call pattern" in table
    (with_model,) = data["pipeline_model"]
    assert {"ddim_diffusers", "diffusers", "floor"} == set(with_model["us"])
    assert "a model call before each step" in table
    (call,) = data["pipeline_call"]  # the Python around the pass, after what might slow it
    names = {"alone", "after a serial copy", "after a parallel copy", "after a pass"}
    assert names == set(call["us"]) and all(v > 0 for v in call["us"].values())
    assert "The Python around the pass inside a loop" in table
    half = data["pipeline_half"]
    assert {(r["dtype"], r["eta"]) for r in half} == {
        (d, e) for d in ("float16", "bfloat16") for e in (0.0, 1.0)
    }
    assert all({"ddim_diffusers", "diffusers"} == set(r["us"]) for r in half)
    assert "| 1x4x8x8 | bfloat16 | 1 |" in table and "half precision" in table


def test_smoke_run_never_overwrites_the_committed_results(tmp_path: Path) -> None:
    pytest.importorskip("numba")
    committed = ROOT / "benchmarks" / "results" / "results.json"
    before = committed.read_bytes() if committed.exists() else None
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},  # its temporary directory goes there,
    )  # not into the machine's /tmp for good
    assert (committed.read_bytes() if committed.exists() else None) == before
    written = Path(done.stdout.strip().splitlines()[-1].split(" and ")[-1])
    assert (
        written.name == "results.json" and written.exists() and written.parent != committed.parent
    )
    assert written.parent.parent == tmp_path


@pytest.mark.parametrize("missing", ["torch", "diffusers", "numba"])
def test_a_missing_dependency_is_named_before_any_timing(
    missing: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """Without numba (an optional extra) `python -m benchmarks` timed every torch row (minutes
    in a full run) and then died in a TypeError at the first NumPy row's out= step, writing
    nothing; without diffusers or torch, a ModuleNotFoundError traceback. Now a usage error
    names what is missing and the extras that install it, before anything is timed."""
    from benchmarks import run

    def timed(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("timings started")

    monkeypatch.setattr(run, "bench_step", timed)
    monkeypatch.setitem(sys.modules, missing, None)  # not importable
    with pytest.raises(SystemExit) as exc:
        run.main(["--smoke", "--out", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"needs {missing}, which cannot be imported here" in err
    assert "pip install 'ddim-core[diffusers,numba]'" in err


@pytest.mark.parametrize("missing", ["cupy", "diffusers"])
def test_the_gpu_benchmark_names_a_missing_dependency_before_any_timing(
    missing: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """`python -m benchmarks.gpu` (what run.sh runs; its docstring gives the command) on a
    machine without CuPy timed the whole pipeline table and the torch steps (minutes), then
    died in ModuleNotFoundError at the first CuPy step, writing nothing. It names what is
    missing first, as `python -m benchmarks` does."""
    import importlib

    from benchmarks import pipeline

    gpu = importlib.import_module("benchmarks.gpu.__main__")

    def timed(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("timings started")

    monkeypatch.setattr(pipeline, "run", timed)
    monkeypatch.setattr(gpu, "fused_step", timed)
    monkeypatch.setitem(sys.modules, missing, None)  # not importable
    monkeypatch.setattr(sys, "argv", ["python -m benchmarks.gpu", "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as exc:
        gpu.main()
    assert exc.value.code == 2
    err = capsys.readouterr().err
    needs = err.split("error: needs ", 1)[1].split(", which cannot be imported here")[0]
    assert missing in needs.split(", ")  # (with cupy where this machine has none)
    assert "pip install 'ddim-core[diffusers,cupy]'" in err


def test_noise_cost_is_what_eta_1_adds_in_draws() -> None:
    from benchmarks import tables

    us = {"ddim_diffusers": 330.0, "ddim_diffusers eta 0": 100.0, "normal draw": 200.0}
    assert tables.noise_cost(us) == "1.15"
    assert tables.noise_cost({"ddim_diffusers": 100.0, "normal draw": 200.0}) == "-"
    # not timed (runs before it, eta 0): "-"
    assert tables.noise_cost(us, after_a_draw=True) == "-"
    # after a draw: against that loop's step less one draw (310 - 200 = 110 us; 220 above)
    us["ddim_diffusers eta 0 after a draw"] = 310.0
    assert tables.noise_cost(us, after_a_draw=True) == "1.10"


def test_the_kernel_column_is_empty_where_the_step_takes_no_kernel() -> None:
    """The *kernel* column timed numba's kernel declining a NumPy step under
    NUMBA_MIN_ELEMENTS without out= (it returns None at once; the step runs the reference
    path): 0.1 us at 1x4x8x8, against 12.8 for the step, as if the fused pass were free and
    all the rest fixed cost. Such a step has no kernel time; the tables print "-"."""
    pytest.importorskip("numba")
    import dataclasses

    from benchmarks import run, tables

    small = run.bench_step("numpy", (1, 4, 8, 8), "forward", 0.0, False, 1, 0.001)
    big = run.bench_step("numpy", (1, 4, 64, 64), "forward", 0.0, False, 1, 0.001)
    assert "kernel" not in small.times_us and "kernel/floor" not in small.ratios()
    assert big.times_us["kernel"] > 0 and "kernel/floor" in big.ratios()
    rows = [dataclasses.asdict(r) | {"ratios": r.ratios()} for r in (small, big)]
    docs = tables.steps_table({"steps": rows}).splitlines()[2:]
    meta = {"machine": "m", "torch": "t", "numpy": "n", "diffusers": "d", "repeats": 1}
    md = [line for line in run.markdown([small, big], [], meta).splitlines() if "| numpy |" in line]
    for small_line, big_line in (docs, md):
        assert small_line.split(" | ")[7] == "-"  # library, shape, dir, eta, clip, core, out=
        assert float(big_line.split(" | ")[7]) > 0


def test_threads_cases_take_turns_each_in_its_setting() -> None:
    """benchmarks.threads times its cases in turns within each repeat (a busy machine's share
    of the CPUs drifts over seconds), starting one case later each repeat (none always follows
    the same one), each step run only inside its own setting, and reports one median per
    case."""
    pytest.importorskip("numba")
    import contextlib

    from benchmarks import threads

    log: list[str] = []
    inside: list[str] = []

    def setting(name: str) -> Any:
        @contextlib.contextmanager
        def enter() -> Any:
            inside.append(name)
            log.append(name)
            yield
            inside.pop()

        return enter

    def step(name: str) -> Any:
        def fn() -> None:
            assert inside == [name]

        return fn

    cases = {n: (step(n), setting(n)) for n in ("a", "b", "c")}
    medians = threads._in_turns(cases, repeats=4, budget_s=0.001)
    assert list(medians) == ["a", "b", "c"] and all(v >= 0.0 for v in medians.values())
    sizing, turns = log[:3], [log[i : i + 3] for i in range(3, len(log), 3)]
    assert sizing == ["a", "b", "c"]  # sized once each, then in turns, rotating
    assert turns == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]


def test_forced_loops_leave_the_shipped_steps_guard_alone() -> None:
    """The serial and parallel cases, timed in turns with the step as shipped, recorded their
    steps in the stall guard the shipped step decides by: forced parallel steps stalling
    beside busy processes sent the shipped step to the serial loop (a back-off of up to 64 s)
    without its own stalls and retries, flattering it."""
    pytest.importorskip("numba")
    import copy

    from benchmarks import threads
    from ddim_core import _numba

    shipped = _numba._guard
    before = copy.deepcopy(vars(shipped))
    n = _numba.PARALLEL_MIN
    for parallel in (False, True):
        with threads._forced(parallel):
            for _ in range(3):  # a serial best, then parallel steps 1 s each: stalls
                _numba._observe(False, n, 4, 1e-6)
                _numba._observe(parallel, n, 4, 1.0)
    assert _numba._guard is shipped and vars(shipped) == before


def test_skipped_passes_leave_the_shipped_steps_guard_alone(monkeypatch: Any) -> None:
    """The "call" timings (numba's pass skipped) recorded their steps in the stall guard: a
    skipped step taken serially (during a back-off, beside busy processes) set the serial best
    at its size some 100x too fast, and from then on every real parallel step there counted as
    a stall, the guard backing off again and again (up to 64 s a time) for the rest of the
    run: the columns timed after it ("after a pass", the half-precision rows) ran the serial
    loop. The skipped steps now record in a copy of the guard."""
    pytest.importorskip("numba")
    torch = pytest.importorskip("torch")
    import copy
    import math
    import time

    import ddim_diffusers

    from benchmarks import pipeline
    from ddim_core import _numba

    guard = _numba._Guard()
    monkeypatch.setattr(_numba, "_guard", guard)
    shape = (1, 4, 128, 128)  # a size the guard decides for
    assert math.prod(shape) >= _numba.PARALLEL_MIN
    scheduler = ddim_diffusers.DDIMScheduler()
    scheduler.set_timesteps(10)
    x, out = torch.randn(shape), torch.randn(shape)
    for t in scheduler.timesteps[:3]:  # the loop loaded, a serial best
        scheduler.step(out, t, x)
    guard.backoff_until = time.perf_counter() + 600.0  # a back-off: serial steps
    before = copy.deepcopy(vars(guard))
    for t in scheduler.timesteps:
        pipeline._without_pass(lambda t=t: scheduler.step(out, t, x))
    assert _numba._guard is guard and vars(guard) == before


@pytest.mark.parametrize("module", ["run", "threads", "gpu", "inversion", "distributed"])
@pytest.mark.parametrize("bad", [["--repeats", "0"], ["--repeats", "-1"], ["--out", "FILE"]])
def test_bad_repeats_or_out_are_refused_before_any_timing(
    module: str, bad: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """`--repeats 0` ran the default number of repeats (`python -m benchmarks`) or died in
    ZeroDivisionError / StatisticsError (benchmarks.distributed: ValueError from min() in a
    child process, a CalledProcessError here), `--repeats -1` in StatisticsError, and an
    `--out` that cannot be a directory failed with a traceback after all the timings
    (minutes; benchmarks.inversion and .distributed too). Now each is a usage error naming
    the option, before anything is timed."""
    import importlib

    from benchmarks import pipeline

    if module == "inversion" and bad[0] == "--repeats":
        pytest.skip("benchmarks.inversion has no --repeats")
    if module == "distributed":
        pytest.importorskip("distributed")
    mod = importlib.import_module(f"benchmarks.{module}" + (".__main__" if module == "gpu" else ""))

    def timed(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("timings started")

    for name in ("bench_step", "measure", "run_one", "run"):
        if hasattr(mod, name):
            monkeypatch.setattr(mod, name, timed)
    monkeypatch.setattr(pipeline, "run", timed)
    (tmp_path / "FILE").write_text("")
    argv = [a.replace("FILE", str(tmp_path / "FILE")) for a in bad]
    if module == "gpu":  # --out is required there; main() reads sys.argv
        argv = ["--out", str(tmp_path / "out"), *argv]
        monkeypatch.setattr(sys, "argv", ["python -m benchmarks.gpu", *argv])
    with pytest.raises(SystemExit) as exc:
        mod.main() if module == "gpu" else mod.main(["--smoke", *argv] if module == "run" else argv)
    assert exc.value.code == 2
    assert bad[0] in capsys.readouterr().err
