"""Dataset-scale loops on dask.distributed (ddim_core.distributed): a LocalCluster of two worker
processes, one of them killed mid-run; results equal the single-process loop on the same
chunks bit for bit; reruns compute only chunks not done or made from something else; bad
inputs fail before any work with errors that say what is wrong."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("distributed")
zarr = pytest.importorskip("zarr")

import ddim_core as dc  # noqa: E402
from ddim_core import cli, distributed  # noqa: E402
from ddim_core.distributed import (  # noqa: E402
    METHODS,
    analytic_model,
    done_records,
    invert_dataset,
    local_cluster,
    sample_dataset,
)

CONFIG = dc.DDIMConfig(timestep_spacing="trailing", clip_sample=False)
RUN_TIMEOUT_S = 120  # a run that hangs fails the test instead of the suite
MODEL_ID = "analytic-mixture"


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    from distributed import Client

    cluster = local_cluster(2, silence_logs=logging.ERROR)
    with cluster, Client(cluster, timeout="60s") as c:
        c.wait_for_workers(2, timeout=60)
        yield c


def within_timeout(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        return pool.submit(fn, *args, **kwargs).result(timeout=RUN_TIMEOUT_S)
    finally:
        pool.shutdown(wait=False)


def chunked(loop: Callable[..., np.ndarray], x: np.ndarray, chunk: int) -> np.ndarray:
    """The single-process loop over the same chunks: loop(chunk_index, items)."""
    return np.concatenate(
        [loop(c, x[a : a + chunk]) for c, a in enumerate(range(0, len(x), chunk))]
    )


def result(target: Path) -> np.ndarray:
    return np.asarray(zarr.open_group(store=str(target), mode="r")["result"][...])


# --- a model that kills its worker -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DyingFactory:
    """factory(config): the analytic model, which kills its worker process (SIGKILL) at its
    `after`-th call; only once per test (the first worker to create `marker`), never in the
    test process."""

    marker: str
    after: int
    test_pid: int

    def __call__(self, config: dc.DDIMConfig) -> Callable[[Any, Any], Any]:
        model = analytic_model(config)
        calls = iter(range(1, 1 << 30))
        lock = threading.Lock()

        def dying(x: Any, t: Any) -> Any:
            with lock:
                n = next(calls)
            if n == self.after and os.getpid() != self.test_pid:
                try:
                    os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                except FileExistsError:
                    pass
                else:
                    os.kill(os.getpid(), signal.SIGKILL)
            return model(x, t)

        return dying


def test_a_killed_worker_costs_only_its_chunks_and_reruns_compute_only_what_changed(
    client: Any, tmp_path: Path
) -> None:
    """One of two worker processes is SIGKILLed in the middle of a chunk: the run completes,
    equal to the single-process loop chunk by chunk; reruns compute exactly the chunks whose
    record is lost or whose input, config or loop options changed."""
    x = np.random.default_rng(0).standard_normal((96, 2))
    source, target = tmp_path / "x.npy", tmp_path / "z.zarr"
    np.save(source, x)
    chunk, steps = 8, 10  # 12 chunks of 10 model calls: a worker dies in its second chunk
    dying = DyingFactory(str(tmp_path / "killed"), after=15, test_pid=os.getpid())
    model = analytic_model(CONFIG)

    def run(factory: Any = None, config: dc.DDIMConfig = CONFIG, **options: Any) -> Any:
        return within_timeout(
            invert_dataset,
            factory,
            source,
            target,
            config,
            steps,
            client=client,
            chunk=chunk,
            model_id=MODEL_ID,
            **options,
        )

    report = run(dying)
    assert (tmp_path / "killed").exists(), "no worker was killed"
    expected = chunked(lambda c, xs: dc.invert(model, xs, CONFIG, steps), x, chunk)
    assert np.array_equal(result(target), expected)  # bit for bit
    assert (report.chunks, report.computed, report.skipped) == (12, 12, 0)
    # the chunk running on the dead worker (and one queued behind it) ran again elsewhere
    assert report.retries in (1, 2)
    assert report.model_calls_per_step == 1.0 and report.items_per_second > 0

    rerun = run()  # the plain analytic factory under the same model identity
    assert (rerun.computed, rerun.skipped, rerun.retries, rerun.model_loads) == (0, 12, 0, 0)
    assert np.array_equal(result(target), expected)

    # a lost record and a changed input: exactly those two chunks again
    done = zarr.open_group(store=str(target), mode="r+")["done"]
    done[3] = np.zeros(done.shape[1], dtype=np.uint8)
    x[40:48] += 1.0  # chunk 5
    np.save(source, x)
    again = run()
    assert (again.computed, again.skipped) == (2, 10)
    expected = chunked(lambda c, xs: dc.invert(model, xs, CONFIG, steps), x, chunk)
    assert np.array_equal(result(target), expected)

    # a changed config, or a changed option of the loop, recomputes everything
    leading = CONFIG.replace(timestep_spacing="leading")
    assert run(config=leading).computed == 12
    assert np.array_equal(
        result(target),
        chunked(lambda c, xs: dc.invert(analytic_model(leading), xs, leading, steps), x, chunk),
    )
    exact = run(config=leading, fixed_point_iters=2)
    # the step itself, then one call per refinement
    assert exact.computed == 12 and exact.model_calls_per_step == 3.0
    records = done_records(target)
    assert len(records) == 12
    assert all(r is not None and r["options"]["fixed_point_iters"] == 2 for r in records)
    assert records[0]["config"]["timestep_spacing"] == "leading"
    assert records[0]["model"] == MODEL_ID and records[0]["steps"] == steps
    assert run(config=leading, fixed_point_iters=2).computed == 0


def test_sampling_seeds_noise_from_the_chunk_index(client: Any, tmp_path: Path) -> None:
    """Zarr in, Zarr out, 4x8x8 float32 items, eta > 0: chunk c's noise comes from
    default_rng((seed, c)), whichever worker runs it."""
    x_T = np.random.default_rng(1).standard_normal((40, 4, 8, 8)).astype(np.float32)
    source, target = tmp_path / "noise.zarr", tmp_path / "samples.zarr"
    zarr.create_array(store=str(source), shape=x_T.shape, chunks=(10, 4, 8, 8), dtype="float32")
    zarr.open_array(store=str(source), mode="r+")[...] = x_T
    model = analytic_model(CONFIG)

    def run(seed: int) -> Any:
        return within_timeout(
            sample_dataset,
            None,
            source,
            target,
            CONFIG,
            8,
            client=client,
            chunk=16,
            seed=seed,
            eta=0.5,
        )

    def expected(seed: int) -> np.ndarray:
        def loop(c: int, xs: np.ndarray) -> np.ndarray:
            g = np.random.default_rng((seed, c))
            return dc.sample(model, xs, CONFIG, 8, eta=0.5, generator=g)

        return chunked(loop, x_T, 16)

    report = run(7)
    assert (report.chunks, report.computed, report.items) == (3, 3, 40)
    assert report.model_calls_per_step == 1.0
    out = result(target)
    assert out.dtype == np.float32 and np.array_equal(out, expected(7))
    assert run(7).computed == 0
    assert run(8).computed == 3  # another seed is another noise
    assert np.array_equal(result(target), expected(8))


def test_command_line(client: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x = np.random.default_rng(2).standard_normal((30, 2)).astype(np.float32)
    source, target = tmp_path / "x.npy", tmp_path / "z.zarr"
    np.save(source, x)
    config = tmp_path / "scheduler_config.json"
    CONFIG.to_json(config)
    args = [str(source), str(target), "--steps", "6", "--chunk", "10", "--config", str(config)]
    address = ["--scheduler", client.scheduler.address]
    exact = ["--tol", "1e-6", "--fixed-point-iters", "3"]
    assert within_timeout(cli.main, ["invert-dataset", *args, *address, *exact]) == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith("invert-dataset: 3 chunks (30 items), 3 computed, 0 skipped")
    model = analytic_model(CONFIG)
    expected = chunked(
        lambda c, xs: dc.invert(model, xs, CONFIG, 6, fixed_point_iters=3, tol=1e-6), x, 10
    )
    assert np.array_equal(result(target), expected)
    out = tmp_path / "samples.zarr"
    sample = [str(target), str(out), "--steps", "6", "--chunk", "10", "--config", str(config)]
    assert within_timeout(cli.main, ["sample-dataset", *sample, *address, "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    back = chunked(lambda c, z: dc.sample(model, z, CONFIG, 6), expected, 10)
    assert np.array_equal(result(out), back)

    # errors: one line, exit status 2, before any cluster is started
    rc = cli.main(["invert-dataset", str(tmp_path / "missing.npy"), str(target), "--steps", "5"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "does not exist" in err
    rc = cli.main(["sample-dataset", *sample, "--resources", "GPU"])
    assert rc == 2 and "--resources 'GPU' must be NAME=VALUE" in capsys.readouterr().err
    for option, says in [
        ("chunk=3", "--chunk"),
        ("seed=1", "--seed"),
        ('model_id="m"', "--model-id"),
    ]:
        rc = cli.main(["sample-dataset", *sample, "--option", option])
        err = capsys.readouterr().err
        assert rc == 2 and f"loop option {option.split('=')[0]}= " in err and says in err, err


@pytest.mark.parametrize("option", ["history=abc", "method=exact", "tol=1e-"])
def test_option_value_that_is_not_json_says_so(option: str, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """`--option history=abc` (the help says NAME=JSON) ended with `--option 'history=abc':
    Expecting value: line 1 column 1 (char 0)`, json's words, which do not say that the value
    must be JSON nor how to write a string in it. The line now says both."""
    source = tmp_path / "x.npy"
    np.save(source, np.zeros((2, 2)))
    args = [str(source), str(tmp_path / "out.zarr"), "--steps", "5", "--option", option]
    rc = cli.main(["invert-dataset", *args, "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert f"--option {option!r}: the value must be JSON" in err, err
    assert "quoted" in err, err


# --- errors during the run: one clear line ---------------------------------------------------


def failing_factory(config: dc.DDIMConfig) -> Any:
    """A model factory whose weights are missing (on the workers: a "module:function")."""
    raise RuntimeError("weights not found")


def failing_model(config: dc.DDIMConfig) -> Any:
    def model(x: Any, t: Any) -> Any:
        raise RuntimeError("CUDA out of memory")

    return model


def test_a_failing_factory_or_model_is_one_line_and_status_1(
    client: Any, tmp_path: Path, npy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [str(npy), str(tmp_path / "z.zarr"), "--steps", "3", "--quiet"]
    address = ["--scheduler", client.scheduler.address]
    for factory, says in [
        (
            "failing_factory",
            "RuntimeError: model factory test_distributed:failing_factory "
            "failed: RuntimeError('weights not found')",
        ),
        ("failing_model", "RuntimeError: CUDA out of memory"),
    ]:
        model = ["--model", f"{__name__}:{factory}"]
        assert within_timeout(cli.main, ["invert-dataset", *args, *address, *model]) == 1
        assert capsys.readouterr().err == f"ddim-core invert-dataset: error: {says}\n"
    with pytest.raises(RuntimeError, match=r"model factory .*failing_factory#.* failed") as caught:
        invert_dataset(failing_factory, npy, tmp_path / "api.zarr", CONFIG, 3, client=client)
    assert "weights not found" in str(caught.value)


def test_the_command_s_own_cluster_logs_no_worker_traceback(tmp_path: Path, npy: Path) -> None:
    here = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here.parent), str(here)])}
    command = [sys.executable, "-m", "ddim_core", "invert-dataset", str(npy)]
    command += [str(tmp_path / "z.zarr"), "--steps", "3", "--workers", "1", "--quiet"]
    command += ["--model", "test_distributed:failing_factory"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "ddim-core invert-dataset: error: RuntimeError: model factory "
        "test_distributed:failing_factory failed: RuntimeError('weights not found')"
    ]


# The LocalCluster's nanny waits, once it has said so, until the test has sent SIGINT: the
# interrupt lands while the cluster's constructor runs, however slow the machine.
HELD_START = """
import asyncio, os, sys
from distributed.nanny import Nanny
from ddim_core.cli import main

starting, sent = sys.argv[1:3]
start_unsafe = Nanny.start_unsafe

async def held_start(self):
    open(starting, "w").close()
    while not os.path.exists(sent):
        await asyncio.sleep(0.01)
    return await start_unsafe(self)

Nanny.start_unsafe = held_start
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a subprocess is POSIX")
def test_ctrl_c_while_the_cluster_starts_is_one_line_and_status_130(
    tmp_path: Path, npy: Path
) -> None:
    """SIGINT while the command's LocalCluster was starting left it half started (its
    worker in Status.init): after "interrupted" and status 130, distributed's atexit hook
    printed a traceback ending in AssertionError: Status.init."""
    here = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here.parent), str(here)])}
    starting, sent = tmp_path / "starting", tmp_path / "sent"
    command = [sys.executable, "-c", HELD_START, str(starting), str(sent), "invert-dataset"]
    command += [str(npy), str(tmp_path / "z.zarr"), "--steps", "3", "--workers", "1", "--quiet"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while not starting.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert starting.exists(), "the cluster never started"
        process.send_signal(signal.SIGINT)
        sent.touch()
        _, err = process.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        process.kill()
    assert "Traceback" not in err, err
    assert err.splitlines() == [
        "ddim-core invert-dataset: interrupted; the chunks done are kept: run the same "
        "command again to go on"
    ]
    assert process.returncode == 130


@pytest.mark.skipif(
    signal.getsignal(signal.SIGINT) is not signal.default_int_handler,
    reason="SIGINT has a handler of its own here",
)
def test_an_interrupt_held_while_starting_closes_what_started() -> None:
    """Ctrl-C during `start` comes after it, as KeyboardInterrupt, with what started closed;
    also when `start` failed of it (a worker process killed by the same Ctrl-C)."""
    closed: list[str] = []

    class Cluster:
        def close(self) -> None:
            closed.append("cluster")

    def start() -> Cluster:
        signal.raise_signal(signal.SIGINT)
        closed.append("started")
        return Cluster()

    def failing(interrupted: bool = True) -> Cluster:
        if interrupted:
            signal.raise_signal(signal.SIGINT)
        raise RuntimeError("Nanny failed to start.")

    with pytest.raises(KeyboardInterrupt):
        distributed._start_uninterrupted(start)
    assert closed == ["started", "cluster"]
    with pytest.raises(KeyboardInterrupt):
        distributed._start_uninterrupted(failing)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert isinstance(distributed._start_uninterrupted(Cluster), Cluster)
    with pytest.raises(RuntimeError, match="Nanny"):  # no Ctrl-C: the failure itself
        distributed._start_uninterrupted(lambda: failing(interrupted=False))


def test_a_model_in_the_current_directory_is_found_as_python_m_finds_it(
    tmp_path: Path, npy: Path
) -> None:
    """The `ddim-core` console script's sys.path starts at its bin directory, not the current
    one: `ddim-core invert-dataset ... --model my_models:load` next to my_models.py said
    "cannot import 'my_models'" (exit 2) where `python -m ddim_core` found it (as `ddim-core
    check` does). The command's own workers find it too."""
    bin_dir, here = tmp_path / "bin", tmp_path / "work"
    bin_dir.mkdir()
    here.mkdir()
    (bin_dir / "ddim-core").write_text(  # what pip writes for [project.scripts]
        "import sys\nfrom ddim_core.cli import main\n"
        "if __name__ == '__main__':\n    sys.exit(main())\n"
    )
    (here / "my_ddim_models.py").write_text(
        "from ddim_core.distributed import analytic_model as load\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    command = [sys.executable, str(bin_dir / "ddim-core"), "invert-dataset", str(npy), "z.zarr"]
    command += ["--steps", "3", "--workers", "1", "--quiet", "--model", "my_ddim_models:load"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=here, timeout=120)
    assert (done.returncode, done.stderr) == (0, "")
    assert np.isfinite(result(here / "z.zarr")).all()


def test_nan_in_the_source_is_blamed_on_the_source(client: Any, tmp_path: Path) -> None:
    from ddim_core.distributed import prepare, run_chunk

    x = np.random.default_rng(3).standard_normal((8, 2))
    x[5, 1] = np.nan
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(ValueError, match=r"source .*x\.npy has NaN or Inf in item 5; fix"):
        within_timeout(
            invert_dataset,
            None,
            tmp_path / "x.npy",
            tmp_path / "z.zarr",
            CONFIG,
            3,
            client=client,
            chunk=4,
        )
    # a target half done (chunk 1 not yet): its result is NaN there, and the error says why
    np.save(tmp_path / "ok.npy", np.nan_to_num(x))
    run_chunk(
        prepare("invert", None, tmp_path / "ok.npy", tmp_path / "h.zarr", CONFIG, 3, chunk=4), 0
    )
    job = prepare("sample", None, tmp_path / "h.zarr", tmp_path / "s.zarr", CONFIG, 3, chunk=4)
    run_chunk(job, 0)
    with pytest.raises(ValueError, match=r"item 4 .*earlier run's result is NaN where its chunks"):
        run_chunk(job, 1)
    # check_finite=False gives the model the items anyway, as in a single-process loop
    report = within_timeout(
        invert_dataset,
        None,
        tmp_path / "x.npy",
        tmp_path / "z.zarr",
        CONFIG,
        3,
        client=client,
        chunk=4,
        check_finite=False,
    )
    assert report.computed == 2 and np.isnan(result(tmp_path / "z.zarr")[4:]).any()


# --- bad inputs: clear errors before any work --------------------------------------------------


@pytest.fixture
def npy(tmp_path: Path) -> Path:
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((10, 2)))
    return path


def _invert(source: Any, target: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("client", "tcp://127.0.0.1:1")  # never reached: errors come first
    factory, config, n = (
        kwargs.pop("factory", None),
        kwargs.pop("config", CONFIG),
        kwargs.pop("n", 5),
    )
    return invert_dataset(factory, source, target, config, n, **kwargs)


class Unpicklable:
    def __init__(self) -> None:
        self.lock = threading.Lock()

    def __call__(self, config: dc.DDIMConfig) -> Any:
        return analytic_model(config)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"config": {"timestep_spacing": "trailing"}}, TypeError, "config must be a DDIMConfig"),
        ({"n": 0}, ValueError, r"^n must be in \[1, 1000\], got 0$"),
        ({"n": 2.5}, TypeError, "^n must be an integer, got 2.5$"),
        ({"n": None}, ValueError, "give exactly one of n and the loop option timesteps"),
        ({"chunk": 0}, ValueError, "chunk must be >= 1"),
        ({"chunk": 2.5}, TypeError, "chunk must be an integer"),
        ({"workers": 0}, ValueError, "workers must be >= 1"),
        ({"worker_timeout": 0}, ValueError, "worker_timeout=0 must be a number of seconds > 0"),
        ({"worker_timeout": "5s"}, TypeError, "worker_timeout must be a real number"),
        ({"method": "nope"}, ValueError, "unknown invert method 'nope'; known: ddim"),
        ({"callback": print}, TypeError, "callback= is not supported for datasets"),
        ({"progres": True}, TypeError, "bad loop options"),
        ({"fixed_point_iters": 2, "tol": -1.0}, ValueError, "tol=-1.0 must be a number > 0"),
        # NaN and Inf: JSON's "Out of range float values are not JSON compliant" named none
        ({"tol": float("inf")}, ValueError, "loop option tol=inf cannot be recorded"),
        ({"eta": float("nan")}, ValueError, "loop option eta=nan cannot be recorded"),
        ({"factory": "no_colon"}, ValueError, "must be 'module:function'"),
        ({"factory": "no_such_module_17:load"}, ImportError, "cannot import 'no_such_module_17'"),
        ({"factory": "ddim_core:no_such_factory"}, ImportError, "has no 'no_such_factory'"),
        ({"factory": 42}, TypeError, "model_factory must be"),
        ({"factory": Unpicklable()}, TypeError, "cannot be pickled"),
        ({"client": 3.5}, TypeError, "client must be a distributed.Client"),
        # the run's own arguments, not loop options (`--option seed=1` on the command line):
        # a Python "got multiple values for keyword argument" before
        ({"seed": 1}, TypeError, "seed= is not an option of an inversion"),
        # resources Dask cannot meet: a ValueError from dict() or a run that waits forever
        ({"resources": "GPU"}, TypeError, "resources must be a mapping of name to amount"),
        ({"resources": {1: 1}}, TypeError, "resources names must be strings, got 1"),
        ({"resources": {"GPU": "x"}}, TypeError, r"resources\['GPU'\] must be a real number"),
        ({"resources": {"GPU": -1}}, ValueError, r"resources\['GPU'\]=-1 must be a finite"),
    ],
)
def test_bad_arguments(npy: Path, kwargs: dict[str, Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        _invert(npy, npy.parent / "out.zarr", **kwargs)
    assert not (npy.parent / "out.zarr").exists()  # nothing was written


@pytest.mark.parametrize(
    ("missing", "progress", "match"),
    [
        (("distributed",), False, "needs dask.distributed and zarr"),
        (("tqdm", "tqdm.auto"), True, "progress=True needs tqdm"),
    ],
)
def test_a_missing_library_fails_before_any_work(
    npy: Path, monkeypatch: pytest.MonkeyPatch, missing: tuple[str, ...], progress: bool, match: str
) -> None:
    # before: the target group was written (and, for tqdm, a local cluster started) first
    for name in missing:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=match):
        _invert(npy, npy.parent / "out.zarr", client=None, progress=progress)
    assert not (npy.parent / "out.zarr").exists()


def test_bad_sources_and_targets(tmp_path: Path, npy: Path) -> None:
    out = tmp_path / "out.zarr"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _invert(tmp_path / "missing.npy", out)
    np.save(tmp_path / "ints.npy", np.zeros((4, 2), dtype=np.int64))
    with pytest.raises(TypeError, match="dtype int64; expected floating point"):
        _invert(tmp_path / "ints.npy", out)
    np.save(tmp_path / "scalar.npy", np.float64(1.0))
    with pytest.raises(ValueError, match="items go on a first axis"):
        _invert(tmp_path / "scalar.npy", out)
    zarr.open_group(store=str(tmp_path / "group.zarr"), mode="w").create_array(
        "x", shape=(4, 2), dtype="float64"
    )
    with pytest.raises(ValueError, match="give the array inside it as GROUP/NAME"):
        _invert(tmp_path / "group.zarr", out)
    with pytest.raises(ValueError, match="is or holds the source"):
        _invert(tmp_path / "group.zarr" / "x", tmp_path / "group.zarr" / "x")
    with pytest.raises(ValueError, match=r"is or holds the source \(.*group\.zarr/x\)"):
        _invert(tmp_path / "group.zarr" / "x", tmp_path / "group.zarr")
    # an earlier run's target as both source and target: it would overwrite its own input
    from ddim_core.distributed import prepare

    prepare("invert", None, npy, tmp_path / "noise.zarr", CONFIG, 5)
    with pytest.raises(ValueError, match=r"is or holds the source \(.*noise\.zarr/result\)"):
        _invert(tmp_path / "noise.zarr", tmp_path / "noise.zarr")
    with pytest.raises(ValueError, match="ddim-core did not write"):
        _invert(npy, tmp_path / "group.zarr")
    with pytest.raises(TypeError, match="noise= is not supported"):
        sample_dataset(None, npy, out, CONFIG, 5, noise=[np.zeros((10, 2))])


def test_a_target_of_another_layout_is_refused(client: Any, tmp_path: Path, npy: Path) -> None:
    target = tmp_path / "z.zarr"
    within_timeout(invert_dataset, None, npy, target, CONFIG, 3, client=client, chunk=5)
    with pytest.raises(ValueError, match=r"holds invert results for 10 items .* chunks of 5"):
        invert_dataset(None, npy, target, CONFIG, 3, client=client, chunk=4)
    with pytest.raises(ValueError, match="holds invert results"):
        sample_dataset(None, npy, target, CONFIG, 3, client=client, chunk=5)


def test_a_target_of_another_chunk_says_which_chunk_goes_on_with_it(
    tmp_path: Path, npy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A rerun of an interrupted `--chunk 5` run without --chunk (the default chunk is
    another) was told only "Choose another target, or delete this one to start again": the
    way to keep the chunks done, the first run's chunk, went unsaid. When only the chunk
    differs the error now names it, for Python and the command line; a target of another
    layout is refused as before."""
    from ddim_core.distributed import prepare, run_chunk

    target = tmp_path / "z.zarr"
    job = prepare("invert", None, npy, target, CONFIG, 3, chunk=5)
    run_chunk(job, 0)  # interrupted after its first chunk
    with pytest.raises(ValueError, match=r"chunks of 10\. To go on with it, pass chunk=5 "):
        prepare("invert", None, npy, target, CONFIG, 3)
    argv = [str(npy), str(target), "--steps", "3", "--quiet"]
    assert distributed.command("invert-dataset", argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pass chunk=5 (command line: --chunk 5)" in err, err
    again = prepare("invert", None, npy, target, CONFIG, 3, chunk=5)
    assert [run_chunk(again, c).computed for c in range(again.chunks)] == [False, True]
    with pytest.raises(ValueError, match="Choose another target, or delete") as refused:
        prepare("sample", None, npy, target, CONFIG, 3)
    assert "pass chunk" not in str(refused.value)


@pytest.mark.parametrize("stop_at", ["result", "done"])
def test_a_target_stopped_while_it_was_created_is_finished_by_a_rerun(
    tmp_path: Path, npy: Path, monkeypatch: pytest.MonkeyPatch, stop_at: str
) -> None:
    """Ctrl-C (or a full disk) while the first run created its target, after the group but
    before its record: every rerun said "target ... is a Zarr group that ddim-core did not
    write; choose another target" about the command's own target."""
    from ddim_core.distributed import prepare, run_chunk

    create = zarr.Group.create_array

    def stopped(self: Any, name: str, **kwargs: Any) -> Any:
        if name == stop_at:
            raise KeyboardInterrupt
        return create(self, name, **kwargs)

    target = tmp_path / "z.zarr"
    monkeypatch.setattr(zarr.Group, "create_array", stopped)
    with pytest.raises(KeyboardInterrupt):
        prepare("invert", None, npy, target, CONFIG, 3, chunk=5)
    monkeypatch.undo()
    job = prepare("invert", None, npy, target, CONFIG, 3, chunk=5)
    assert done_records(target) == [None, None]
    for c in range(2):
        run_chunk(job, c)
    expected = dc.invert(analytic_model(CONFIG), np.load(npy), CONFIG, 3)
    assert np.array_equal(result(target), expected)


def test_methods_plug_in_by_name(client: Any, tmp_path: Path, npy: Path) -> None:
    """A method registered by name runs with its own defaults recorded (issue 14's solvers
    register here, or ride on `method=` of ddim_core.invert once it takes one)."""
    assert METHODS["invert"]["ddim"] == "ddim_core.sampling:invert"
    target = tmp_path / "z.zarr"
    report = within_timeout(
        invert_dataset,
        None,
        npy,
        target,
        CONFIG,
        4,
        client=client,
        method=f"{__name__}:twice_inverted",
    )
    assert report.computed == 1 and report.model_calls_per_step == 2.0
    assert done_records(target)[0]["options"] == {"scale": 1.0}


def twice_inverted(model: Any, x: Any, config: Any, n: Any, *, scale: float = 1.0) -> Any:
    """A method for the test: plain inversion, twice."""
    return dc.invert(model, dc.invert(model, x, config, n), config, n) * scale


def first_item_inverted(model: Any, x: Any, config: Any, n: Any) -> Any:
    """A method for the test that returns fewer items than it is given."""
    return dc.invert(model, x, config, n)[:1]


@pytest.mark.parametrize(
    "method",
    [f"{__name__}:first_item_inverted", "ddim_core.reversible:invert_bdia"],
)
def test_a_result_not_shaped_like_its_chunk_is_refused(
    tmp_path: Path, npy: Path, method: str
) -> None:
    """A method returning one item for a chunk of five had it broadcast into all five rows of
    the result, silently, and the chunk recorded done; a reversible sampler's state (a pair)
    failed with NumPy's 'could not broadcast input array from shape (2,2,2) into shape
    (5,2)', naming neither the method nor what it must return."""
    from ddim_core.distributed import prepare, run_chunk

    target = tmp_path / "z.zarr"
    job = prepare("invert", None, npy, target, CONFIG, 3, chunk=5, method=method)
    with pytest.raises(ValueError, match=r"returned shape \((1|2, 5), 2\) for chunk 0 of shape"):
        run_chunk(job, 0)
    assert done_records(target) == [None, None]


def test_importing_pulls_in_neither_dask_nor_zarr() -> None:
    code = (
        "import sys, json, ddim_core, ddim_core.cli, ddim_core.distributed\n"
        "print(json.dumps([m for m in ('dask', 'distributed', 'zarr') if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_each_worker_builds_a_model_once_per_config() -> None:
    """The per-process cache: one build per (model id, config); another config replaces it."""
    from ddim_core import distributed

    built: list[dc.DDIMConfig] = []

    def factory(config: dc.DDIMConfig) -> Any:
        built.append(config)
        return analytic_model(config)

    leading = CONFIG.replace(timestep_spacing="leading")
    first, fresh = distributed.worker_model(factory, "cache-test", CONFIG)
    assert fresh and distributed.worker_model(factory, "cache-test", CONFIG) == (first, False)
    assert distributed.worker_model(factory, "cache-test", leading)[1]
    assert distributed.worker_model(factory, "cache-test", CONFIG)[1]  # replaced, built again
    assert built == [CONFIG, leading, CONFIG]
    with pytest.raises(TypeError, match="returned int, not a model"):
        distributed.worker_model(lambda config: 3, "cache-test-bad", CONFIG)


def test_the_committed_benchmark_page_is_its_json() -> None:
    """benchmarks/results/distributed.md is what distributed.json renders to, and the
    benchmark's in-process part runs (the clusters are exercised by the tests above)."""
    root = Path(__file__).parent.parent
    sys.path.insert(0, str(root))
    try:
        from benchmarks import distributed as bench
    finally:
        sys.path.remove(str(root))
    results = root / "benchmarks" / "results"
    data = json.loads((results / "distributed.json").read_text())
    data["rows"] = [
        {
            **r,
            **{
                m: {**r[m], "workers": {int(k): v for k, v in r[m]["workers"].items()}}
                for m in ("default", "tuned")
            },
        }
        for r in data["rows"]
    ]
    assert bench._markdown(data) == (results / "distributed.md").read_text()
    timings = bench._local("points", smoke=True, repeats=1)
    assert timings["loop_s"] > 0 and timings["in_process_s"] > 0


def test_without_a_client_a_local_cluster_is_started_and_closed(
    tmp_path: Path, npy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = within_timeout(
        invert_dataset, None, npy, tmp_path / "z.zarr", CONFIG, 3, workers=1, progress=True
    )
    assert (report.workers, report.computed, report.model_loads) == (1, 1, 1)
    out, err = capsys.readouterr()
    assert out.strip() == report.summary() and "1 model load on 1 worker" in out
    assert "invert-dataset: 100%" in err  # the bar


def test_waiting_for_workers_that_never_come_times_out(npy: Path) -> None:
    """workers=K with a client waited for K workers without limit: a scheduler with no
    workers hung the run forever. Now it waits worker_timeout seconds, then a TimeoutError
    names both."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as cluster,
        Client(cluster) as empty,
        pytest.raises(TimeoutError, match=r"workers=1 .* worker_timeout=0.5 s"),
    ):
        within_timeout(
            _invert, npy, npy.parent / "out.zarr", client=empty, workers=1, worker_timeout=0.5
        )


@pytest.mark.parametrize(("given", "timeout"), [("none", None), ("None", None), ("90", 90.0)])
def test_the_command_line_can_say_no_worker_timeout(
    monkeypatch: pytest.MonkeyPatch, npy: Path, given: str, timeout: float | None
) -> None:
    """worker_timeout=None (no limit) had no command-line form: --worker-timeout took floats
    only. "none" now says it; anything else that is not a number is one line, exit 2."""
    seen: list[Any] = []
    monkeypatch.setattr(distributed, "_run", lambda *a, **kw: seen.append(kw["worker_timeout"]))
    argv = ["invert-dataset", str(npy), str(npy.parent / "out.zarr"), "--steps", "5"]
    assert cli.main([*argv, "--worker-timeout", given]) == 0
    assert seen == [timeout]


def test_a_worker_timeout_that_is_not_a_number_is_one_line(
    npy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["invert-dataset", str(npy), str(npy.parent / "out.zarr"), "--steps", "5"]
    with pytest.raises(SystemExit) as exit_:
        cli.main([*argv, "--worker-timeout", "forever"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "--worker-timeout" in err and "'forever' is not a number of seconds or 'none'" in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("fails", ["Client", "wait_for_workers"])
def test_what_the_client_context_opened_is_closed_when_opening_fails(
    monkeypatch: pytest.MonkeyPatch, fails: str
) -> None:
    """A `with` whose __enter__ raises calls no __exit__: the LocalCluster the run had just
    started (or the connection it had made) stayed open when the Client or the wait for
    workers failed (an interrupt while waiting, a scheduler that refuses)."""
    from ddim_core import distributed

    closed: list[str] = []

    class Thing:
        def __init__(self, name: str) -> None:
            self.name = name

        def close(self) -> None:
            closed.append(self.name)

        def wait_for_workers(self, n: int, timeout: float | None) -> None:
            raise KeyboardInterrupt

    def client(target: Any) -> Any:
        if fails == "Client":
            raise OSError("refused")
        return Thing("client")

    fake = type("FakeDask", (), {"Client": staticmethod(client)})
    monkeypatch.setattr(distributed, "_dask", lambda: fake)
    monkeypatch.setattr(distributed, "local_cluster", lambda *a, **k: Thing("cluster"))
    if fails == "Client":
        with pytest.raises(OSError, match="refused"), distributed._client(None, 1, {}):
            pass
        assert closed == ["cluster"]
    else:
        with pytest.raises(KeyboardInterrupt), distributed._client("tcp://scheduler:8786", 2, {}):
            pass
        assert closed == ["client"]


@pytest.mark.parametrize(
    ("kind", "options"),
    [("invert", {"n": np.int64(3)}), ("sample", {"n": 3, "seed": np.int64(2)})],
)
def test_numpy_integers_are_recorded_as_integers(
    tmp_path: Path, npy: Path, kind: str, options: dict[str, Any]
) -> None:
    """n=np.int64(3) (dc.invert takes it) or prepare(seed=np.int64(2)) reached the target's
    attributes as NumPy integers: Zarr's "Object of type int64 is not JSON serializable",
    after the result arrays were created, so that every later run called the target one
    "ddim-core did not write"."""
    from ddim_core.distributed import prepare, run_chunk

    target = tmp_path / "z.zarr"
    n, seed = options["n"], options.get("seed")
    job = prepare(kind, None, npy, target, CONFIG, n, chunk=5, seed=seed)
    assert type(job.n) is int and (seed is None or type(job.seed) is int)
    assert run_chunk(job, 0).computed
    plain = prepare(kind, None, npy, target, CONFIG, int(n), chunk=5, seed=seed and int(seed))
    assert plain.run_digest == job.run_digest and not run_chunk(plain, 0).computed


def test_prepare_refuses_a_negative_seed(npy: Path) -> None:
    """prepare(seed=-1) was accepted, and every chunk then failed inside NumPy's
    default_rng((-1, c))."""
    from ddim_core.distributed import prepare

    with pytest.raises(ValueError, match="seed must be >= 0, got -1"):
        prepare("sample", None, npy, npy.parent / "out.zarr", CONFIG, 3, seed=-1)
    assert not (npy.parent / "out.zarr").exists()


@pytest.mark.parametrize(
    ("kind", "options", "message"),
    [
        ("sample", {"eta": -1.0}, r"eta=-1.0 must be a finite number >= 0"),
        ("invert", {"eta": 1.0}, r"eta=1.0: inversion is deterministic, eta must be 0"),
        ("invert", {"history": 0}, r"history must be >= 1, got 0"),
    ],
)
def test_prepare_refuses_bad_ddim_loop_options(
    npy: Path, kind: str, options: dict[str, Any], message: str
) -> None:
    """`sample-dataset --eta -1`, `invert-dataset --option eta=1` or `--option history=0`
    passed prepare, which created the target and recorded the run; the cluster was started and
    each chunk then failed on a worker (docs/distributed.md: a bad option fails before any
    cluster is started)."""
    from ddim_core.distributed import prepare

    target = npy.parent / "out.zarr"
    with pytest.raises(ValueError, match=message):
        prepare(kind, None, npy, target, CONFIG, 3, **options)
    assert not target.exists()


def test_resources_without_a_cluster_that_declares_them_are_refused(npy: Path) -> None:
    """resources={"GPU": 1} with no client: the run's own local_cluster declares no
    resources, so Dask never scheduled a chunk and the run waited forever (CLI: --resources
    without --scheduler)."""
    with pytest.raises(ValueError, match=r"resources=\{'GPU': 1\} .* own local_cluster"):
        within_timeout(
            _invert, npy, npy.parent / "out.zarr", client=None, workers=1, resources={"GPU": 1}
        )
    assert not (npy.parent / "out.zarr").exists()


def test_a_zarr_source_rewritten_between_runs_is_read_as_it_is_now(tmp_path: Path) -> None:
    """A worker kept its Zarr source handle (metadata included) for every later run of the same
    path and layout: a source written again (here as Zarr format 2, or with other chunks) was
    read through the old metadata, i.e. the fill value 0 where the keys changed (a silent
    wrong result), or a reshape error from deep in Zarr where the chunks did."""
    from ddim_core.distributed import prepare, run_chunk

    source = tmp_path / "x.zarr"
    model = analytic_model(CONFIG)
    for i, (chunks, zarr_format) in enumerate([((4, 2), 3), ((4, 2), 2), ((3, 2), 3)]):
        x = np.random.default_rng(i).standard_normal((8, 2))
        options = {"chunks": chunks, "zarr_format": zarr_format, "overwrite": True}
        zarr.create_array(store=str(source), shape=x.shape, dtype=x.dtype, **options)[...] = x
        target = tmp_path / f"z{i}.zarr"
        job = prepare("invert", None, source, target, CONFIG, 3, chunk=4)
        for c in range(job.chunks):
            run_chunk(job, c)
        assert np.array_equal(
            result(target), chunked(lambda c, xs: dc.invert(model, xs, CONFIG, 3), x, 4)
        )


@pytest.mark.parametrize(
    ("workers", "error", "match"),
    [
        (0, ValueError, "workers must be >= 1, got 0"),
        (-1, ValueError, "workers must be >= 1, got -1"),
        (2.5, TypeError, "workers must be an integer, got 2.5"),
        ("2", TypeError, "workers must be an integer, got '2'"),
    ],
)
def test_local_cluster_refuses_a_bad_number_of_workers(
    workers: Any, error: type, match: str
) -> None:
    """local_cluster(0) started one worker per core (0 read as "default"), -1 a cluster of
    no workers (a run on it waits forever), 2.5 or "2" a KeyError('comm') from Dask."""
    with pytest.raises(error, match=match):
        local_cluster(workers, processes=False).close()


@pytest.mark.parametrize(
    ("name", "function", "error", "match"),
    [
        ("x", dc.invert, TypeError, r"function must be 'module:function' .*, got <function"),
        (3, "ddim_core.sampling:invert", TypeError, "name must be a non-empty string, got 3"),
        ("", "ddim_core.sampling:invert", TypeError, "name must be a non-empty string, got ''"),
    ],
)
def test_register_method_refuses_what_method_cannot_name(
    name: Any, function: Any, error: type, match: str
) -> None:
    """register_method("invert", "x", dc.invert) raised AttributeError('function' object has
    no attribute 'partition'); a name no `method=` can give (3, "") was registered."""
    from ddim_core.distributed import register_method

    before = dict(METHODS["invert"])
    with pytest.raises(error, match=match):
        register_method("invert", name, function)
    assert METHODS["invert"] == before


def tenth(config: dc.DDIMConfig) -> Any:
    """A model factory whose model takes empty batches too."""
    return lambda x, t: 0.1 * x


@pytest.mark.parametrize(
    ("index", "error", "match"),
    [
        (-1, ValueError, r"index must be in \[0, 2\], got -1"),
        (3, ValueError, r"index must be in \[0, 2\], got 3"),
        (1.0, TypeError, "index must be an integer, got 1.0"),
    ],
)
def test_run_chunk_refuses_an_index_out_of_range(
    tmp_path: Path, npy: Path, index: Any, error: type, match: str
) -> None:
    """run_chunk(job, -1) ran the loop on the empty items [-4:0] and wrote its record into the
    last chunk's row: done_records then called chunk 2 done, its result all NaN. 3 and 1.0
    were Zarr's BoundsCheckError and a slice TypeError."""
    from ddim_core.distributed import prepare, run_chunk

    job = prepare("invert", tenth, npy, tmp_path / "z.zarr", CONFIG, 3, chunk=4)
    with pytest.raises(error, match=match):
        run_chunk(job, index)
    assert done_records(tmp_path / "z.zarr") == [None, None, None]


SCRIPT = """
import sys

import ddim_core as dc
from ddim_core.distributed import analytic_model, prepare, run_chunk


class Model:  # defined in the script: cloudpickle sends it by value
    def __init__(self, config):
        self.inner = analytic_model(config)

    def __call__(self, x, t):
        return self.inner(x, t)


def factory(config):
    assert config.prediction_type in {"epsilon", "v_prediction", "sample"}  # a set constant
    return Model(config)


job = prepare("invert", factory, sys.argv[1], sys.argv[2], dc.DDIMConfig(), 3, chunk=5)
print(job.model_id, run_chunk(job, 0).computed)
"""


def test_a_script_s_factory_is_the_same_model_in_every_process(tmp_path: Path, npy: Path) -> None:
    """A factory defined in the user's script (as the docs' own Model class is) was named in
    the records by a hash of its cloudpickle, which holds a class id drawn anew in each
    process, and a set in the order of the process's hash seed: a rerun of the same script
    found no chunk done and computed them all again."""
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    target = tmp_path / "out.zarr"

    def run(hash_seed: str) -> list[str]:
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        args = [sys.executable, str(script), str(npy), str(target)]
        done = subprocess.run(args, capture_output=True, text=True, env=env, check=True)
        return done.stdout.split()

    first, again = run("1"), run("2")
    assert first[1] == "True" and again == [first[0], "False"]  # same model, chunk 0 done


def test_a_target_of_another_format_is_refused_as_such(tmp_path: Path, npy: Path) -> None:
    """A target written by another version (another FORMAT) was refused with the same layout
    on both sides ('holds invert results for 10 items ...; this run makes invert results for
    10 items ...'), or a KeyError when its layout had other fields."""
    from ddim_core.distributed import prepare

    target = tmp_path / "out.zarr"
    prepare("invert", None, npy, target, CONFIG, 3, chunk=5)
    group = zarr.open_group(target, mode="r+")
    meta = group.attrs["ddim_core"]
    for layout in ({**meta["layout"], "format": 2}, {"format": 2, "items": 10}):
        group.attrs["ddim_core"] = {**meta, "layout": layout}
        with pytest.raises(ValueError, match=r"another version of ddim-core \(format 2; this"):
            prepare("invert", None, npy, target, CONFIG, 3, chunk=5)


def test_the_command_line_names_steps(tmp_path: Path, npy: Path, capsys: Any) -> None:
    """--steps 0 said 'num_inference_steps must be in [1, 1000], got 0', a name the command
    line does not have."""
    out = tmp_path / "out.zarr"
    assert distributed.command("invert-dataset", [str(npy), str(out), "--steps", "0"]) == 2
    assert capsys.readouterr().err == (
        "ddim-core invert-dataset: error: --steps must be in [1, 1000], got 0\n"
    )


def test_prepare_refuses_tol_without_refinements(npy: Path) -> None:
    """invert's tol with fixed_point_iters=0 is an error (it would stop nothing): refused before
    the target is created, as the other loop options are."""
    from ddim_core.distributed import prepare

    target = npy.parent / "out.zarr"
    with pytest.raises(ValueError, match=r"tol=1e-06 needs fixed_point_iters >= 1"):
        prepare("invert", None, npy, target, CONFIG, 3, tol=1e-6)
    assert not target.exists()


def test_a_missing_progress_bar_names_quiet(
    tmp_path: Path, npy: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without tqdm the command said "progress=True needs tqdm", the Python argument, where a
    user of the command passes --quiet; now it says both, as a usage error, before any work."""
    for name in ("tqdm", "tqdm.auto"):
        monkeypatch.setitem(sys.modules, name, None)
    out = tmp_path / "out.zarr"
    with pytest.raises(SystemExit) as exc:
        distributed.command("invert-dataset", [str(npy), str(out), "--steps", "3"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pass --quiet" in err and "[progress]" in err, err
    assert not out.exists()


def test_without_the_distributed_extra_the_command_names_it_first(
    tmp_path: Path, npy: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With only `pip install ddim-core` (no dask.distributed, zarr or tqdm), `ddim-core
    invert-dataset a.npy b.zarr --steps 5` said "the progress bar needs tqdm: pip install
    'ddim-core[progress]'": installing that only led to the next error. The extra the command
    needs, `distributed` (which brings tqdm too), is named first."""
    for name in ("distributed", "tqdm", "tqdm.auto"):
        monkeypatch.setitem(sys.modules, name, None)
    out = tmp_path / "out.zarr"
    status = distributed.command("invert-dataset", [str(npy), str(out), "--steps", "3"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and "ddim-core[distributed]" in err, err
    assert not out.exists()


@pytest.mark.parametrize(
    "kind,given",
    [
        ("sample", ["--option", "eta=1", "--eta", "0"]),
        ("invert", ["--fixed-point-iters", "3", "--option", "fixed_point_iters=5"]),
        ("invert", ["--option", "tol=1e-3", "--tol", "1e-6", "--fixed-point-iters", "3"]),
    ],
)
def test_an_option_given_twice_is_refused(
    tmp_path: Path, npy: Path, capsys: Any, kind: str, given: list[str]
) -> None:
    """`--option eta=1 --eta 0` ran with eta 0: the named flag replaced the --option value
    without a word (the record said eta 0, the user asked for 1 too)."""
    out = tmp_path / "out.zarr"
    argv = [str(npy), str(out), "--steps", "3", "--quiet", *given]
    assert distributed.command(f"{kind}-dataset", argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "both given; give one" in err, err
    assert not out.exists()


def test_a_folder_that_is_no_zarr_group_is_not_written_into(tmp_path: Path, npy: Path) -> None:
    """A target naming an existing folder of other files (a typo, `~/data`) was made a Zarr
    group in place: zarr.json, result/ and done/ written among the user's files (with a
    ZarrUserWarning per file), where a target is "a Zarr group, created when missing". An
    empty folder (made beforehand) is still a target."""
    from ddim_core.distributed import prepare

    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"data is a folder that is not a Zarr group .*notes\.txt"):
        prepare("invert", None, npy, folder, CONFIG, 3)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    (tmp_path / "empty").mkdir()
    assert prepare("invert", None, npy, tmp_path / "empty", CONFIG, 3).chunks == 1


def wrong_shape_model(config: dc.DDIMConfig) -> Any:
    """A model with a broadcasting bug: NumPy raises ValueError in it on the worker."""

    def model(x: Any, t: Any) -> Any:
        return x + np.zeros(3)

    return model


def test_a_model_s_value_error_is_a_failed_run_status_1(
    client: Any, tmp_path: Path, npy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A model raising ValueError on a worker (a NumPy broadcasting bug, the loop's "model
    output contains NaN") exited with status 2, bad input, and no error type, where the docs
    say a model that raises on a worker is a failed run, status 1. A source with NaN found
    by the run stays status 2, and names the command line's way past it."""
    args = [str(npy), str(tmp_path / "z.zarr"), "--steps", "3", "--quiet"]
    args += ["--scheduler", client.scheduler.address]
    model = ["--model", f"{__name__}:wrong_shape_model"]
    assert within_timeout(cli.main, ["invert-dataset", *args, *model]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ddim-core invert-dataset: error: ValueError: operands could not be")
    assert len(err.splitlines()) == 1, err
    bad = np.load(npy)
    bad[3, 0] = np.inf
    np.save(tmp_path / "bad.npy", bad)
    args = [str(tmp_path / "bad.npy"), str(tmp_path / "b.zarr"), *args[2:]]
    assert within_timeout(cli.main, ["invert-dataset", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ddim-core invert-dataset: error: source ") and "item 3" in err, err
    # the way past it, as the command line takes it (check_finite=False is Python's)
    assert "--option check_finite=false" in err, err
    past = [*args[:1], str(tmp_path / "p.zarr"), *args[2:], "--option", "check_finite=false"]
    assert within_timeout(cli.main, ["invert-dataset", *past]) == 0


@pytest.mark.parametrize(
    ("kind", "options"),
    [("invert", {"check_finite": 0}), ("sample", {"check_finite": "no"}), ("invert", {"stall": 1})],
)
def test_prepare_refuses_flags_that_are_not_bools(
    npy: Path, kind: str, options: dict[str, Any]
) -> None:
    """`--option check_finite=0` (JSON 0, not false) passed prepare, which created the target;
    the cluster was started and every chunk then failed on a worker with the loop's
    TypeError, where a bad option fails before any cluster is started."""
    from ddim_core.distributed import prepare

    target = npy.parent / "out.zarr"
    ((name, value),) = options.items()
    with pytest.raises(TypeError, match=f"{name} must be True, False or None, got {value!r}"):
        prepare(kind, None, npy, target, CONFIG, 3, **options)
    assert not target.exists()


def test_the_command_line_runs_a_list_of_timesteps(
    client: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--option timesteps=[999,500,1]` (the help: "--option NAME=JSON, another loop option";
    the Python call takes n or timesteps) was refused whatever the user did: --steps was
    required, and --steps with timesteps is "give exactly one of n and the loop option
    timesteps, got n=10". --steps may now be left out for timesteps; both are one line."""
    x = np.random.default_rng(3).standard_normal((6, 2))
    source, target = tmp_path / "x.npy", tmp_path / "z.zarr"
    np.save(source, x)
    timesteps = [999, 500, 1]
    argv = [str(source), str(target), "--chunk", "3", "--quiet"]
    address = ["--scheduler", client.scheduler.address]
    option = ["--option", "timesteps=[999, 500, 1]"]
    assert within_timeout(cli.main, ["invert-dataset", *argv, *address, *option]) == 0
    model = analytic_model(dc.DDIMConfig())
    expected = chunked(
        lambda c, xs: dc.invert(model, xs, dc.DDIMConfig(), timesteps=timesteps), x, 3
    )
    assert np.array_equal(result(target), expected)
    assert [r["steps"] for r in done_records(target)] == [None, None]
    for given, says in [(["--steps", "3", *option], "both given"), ([], "required: --steps")]:
        with pytest.raises(SystemExit) as exit_:
            distributed.command("sample-dataset", [*argv, *given])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.count("\n") == 1 and says in err, err


@pytest.mark.parametrize("kind", ["numpy", "torch", "range"])
def test_timesteps_as_the_loops_take_them(kind: str, tmp_path: Path) -> None:
    """timesteps=np.array([999, 500, 1]), a tensor (a diffusers scheduler's `timesteps`) or a
    range, which ddim_core.invert takes, was refused by the dataset runs ("loop options must
    be plain data ... (ndarray) is not JSON data"): the record was made of the value as
    given. It is now recorded, and sent to the workers, as its list of ints: the same record
    as the list's, and the result the single-process loop's on the same value."""
    x = np.random.default_rng(5).standard_normal((5, 2))
    source, target = tmp_path / "x.npy", tmp_path / "z.zarr"
    np.save(source, x)
    timesteps: Any = {
        "numpy": lambda: np.array([999, 500, 1]),
        "torch": lambda: pytest.importorskip("torch").tensor([999, 500, 1]),
        "range": lambda: range(999, 0, -499),
    }[kind]()
    job = distributed.prepare("invert", None, source, target, CONFIG, chunk=3, timesteps=timesteps)
    assert [distributed.run_chunk(job, c).computed for c in range(job.chunks)] == [True, True]
    assert job.options["timesteps"] == [int(t) for t in timesteps]
    model = analytic_model(CONFIG)
    expected = chunked(lambda c, xs: dc.invert(model, xs, CONFIG, timesteps=timesteps), x, 3)
    assert np.array_equal(result(target), expected)
    again = distributed.prepare(
        "invert", None, source, target, CONFIG, chunk=3, timesteps=[int(t) for t in timesteps]
    )
    assert again.run_digest == job.run_digest
    assert [distributed.run_chunk(again, c).computed for c in range(again.chunks)] == [False] * 2


class _DiesAfterWriting:
    """A Zarr array whose writes land, then kill the task (a worker killed between a chunk's
    result and its record)."""

    def __init__(self, array: Any) -> None:
        self.array = array

    def __getitem__(self, key: Any) -> Any:
        return self.array[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self.array[key] = value
        raise KeyboardInterrupt("killed after the result was written")


def test_a_chunk_killed_after_its_result_is_not_done_from_its_old_inputs(
    tmp_path: Path, npy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk done from config A, recomputed from config B and killed between the result
    write and the record, kept A's record over B's result: a rerun with A skipped it ("done")
    and the target held B's numbers where done_records said A (the docs: "a chunk is either
    done or not"). Its record is now cleared before its result is replaced."""
    from ddim_core.distributed import prepare, run_chunk

    x = np.random.default_rng(4).standard_normal((10, 2))
    np.save(npy, x)
    target = tmp_path / "out.zarr"
    other = dc.DDIMConfig(timestep_spacing="leading", clip_sample=False)
    first = prepare("invert", None, npy, target, CONFIG, 5, chunk=5)
    assert [run_chunk(first, c).computed for c in range(2)] == [True, True]
    second = prepare("invert", None, npy, target, other, 5, chunk=5)
    arrays = distributed._arrays

    def dying(job: Any) -> Any:
        source, out, done = arrays(job)
        return source, _DiesAfterWriting(out), done

    monkeypatch.setattr(distributed, "_arrays", dying)
    with pytest.raises(KeyboardInterrupt):
        run_chunk(second, 0)
    monkeypatch.undo()
    model = analytic_model(CONFIG)
    assert not np.array_equal(result(target)[:5], dc.invert(model, x[:5], CONFIG, 5))
    assert done_records(target)[0] is None  # B's numbers, not A's: not done
    again = prepare("invert", None, npy, target, CONFIG, 5, chunk=5)
    assert [run_chunk(again, c).computed for c in range(2)] == [True, False]
    expected = chunked(lambda c, xs: dc.invert(model, xs, CONFIG, 5), x, 5)
    assert np.array_equal(result(target), expected)


def test_an_integer_float_option_is_the_same_record(tmp_path: Path, npy: Path) -> None:
    """`eta=0` (or `--option eta=0`, JSON's int) after a run with the default eta 0.0 (or
    `--eta 0`) recomputed every chunk: the records held 0 and 0.0, two options where the loop
    runs one (the config's numbers are recorded as floats already). Options annotated float
    record their ints as floats."""
    from ddim_core.distributed import prepare, run_chunk

    target = tmp_path / "out.zarr"
    job = prepare("sample", None, npy, target, CONFIG, 5, chunk=5, seed=0)
    assert [run_chunk(job, c).computed for c in range(2)] == [True, True]
    for options in ({"eta": 0}, {"eta": 0.0}, {}):
        job = prepare("sample", None, npy, target, CONFIG, 5, chunk=5, seed=0, **options)
        assert [run_chunk(job, c).computed for c in range(2)] == [False, False], options
    assert all(r is not None and r["options"]["eta"] == 0.0 for r in done_records(target))
    invert = tmp_path / "invert.zarr"
    exact = {"fixed_point_iters": 2, "tol": 1.0}
    job = prepare("invert", None, npy, invert, CONFIG, 5, chunk=5, **exact)
    assert [run_chunk(job, c).computed for c in range(2)] == [True, True]
    job = prepare("invert", None, npy, invert, CONFIG, 5, chunk=5, **{**exact, "tol": 1})
    assert [run_chunk(job, c).computed for c in range(2)] == [False, False]
    assert job.options["tol"] == 1 and type(job.options["tol"]) is int  # passed on as given


SEEN_WRITABLE: list[bool] = []  # what from_numpy_model's asarray was given


def from_numpy_model(config: dc.DDIMConfig) -> Any:
    """The docs' recipe on the CPU: asarray brings each chunk to torch with torch.from_numpy."""
    torch = pytest.importorskip("torch")
    model = analytic_model(config)

    class Model:
        def asarray(self, x: np.ndarray) -> Any:
            SEEN_WRITABLE.append(x.flags.writeable)
            return torch.from_numpy(x)

        def __call__(self, x: Any, t: Any) -> Any:
            return model(x, t)

    return Model()


def test_a_npy_source_s_items_reach_the_model_writable(tmp_path: Path, npy: Path) -> None:
    """From a .npy source, the model's asarray got the file's pages, mapped read-only:
    torch.from_numpy (the docs' recipe) warned "The given NumPy array is not writable ...
    writing to this tensor will result in undefined behavior" (once per worker process),
    where a Zarr source's items were a fresh array. They are now a copy, as from Zarr."""
    from ddim_core.distributed import prepare, run_chunk

    pytest.importorskip("torch")
    x = np.random.default_rng(5).standard_normal((10, 2)).astype(np.float32)
    np.save(npy, x)
    factory = f"{__name__}:from_numpy_model"
    job = prepare("invert", factory, npy, tmp_path / "out.zarr", CONFIG, 5, chunk=5)
    SEEN_WRITABLE.clear()
    assert [run_chunk(job, c).computed for c in range(2)] == [True, True]
    assert SEEN_WRITABLE == [True, True]
    model = from_numpy_model(CONFIG)
    expected = chunked(
        lambda c, xs: dc.invert(model, model.asarray(xs.copy()), CONFIG, 5).numpy(), x, 5
    )
    assert np.array_equal(result(tmp_path / "out.zarr"), expected)
    assert np.array_equal(np.load(npy), x)  # the source untouched


def test_done_records_of_what_is_no_target_says_so(tmp_path: Path, npy: Path) -> None:
    """done_records(TARGET/result), the array the docs read the results from, said zarr's
    "An array already exists in store file:///.../result at path ." (a ContainsArrayError, for
    a read); a .npy file "No group found in store". Both now say that the target is no Zarr
    group, and a missing target that it does not exist."""
    from ddim_core.distributed import prepare

    target = tmp_path / "out.zarr"
    prepare("invert", None, npy, target, CONFIG, 5, chunk=5)
    assert done_records(target) == [None, None]
    for wrong in (target / "result", npy):
        with pytest.raises(ValueError, match=r"^target .* is not a Zarr group \(a Zarr array"):
            done_records(wrong)
    with pytest.raises(FileNotFoundError, match=r"^target .*missing.zarr does not exist$"):
        done_records(tmp_path / "missing.zarr")


def test_done_records_without_zarr_names_the_install(
    tmp_path: Path, npy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """done_records with zarr missing raised 'target ... is not a Zarr group': the ImportError
    of zarr's import, caught with zarr's own errors, in place of the documented ImportError."""
    from ddim_core.distributed import prepare

    target = tmp_path / "out.zarr"
    prepare("invert", None, npy, target, CONFIG, 5, chunk=5)
    monkeypatch.setitem(sys.modules, "zarr", None)
    with pytest.raises(ImportError, match=r"pip install 'ddim-core\[distributed\]'"):
        done_records(target)


def _python(code: str) -> subprocess.CompletedProcess[str]:
    """`python -c code` in a fresh process on this one's import path (nothing imported yet)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )


def test_local_cluster_works_before_distributed_is_imported() -> None:
    """`from ddim_core.distributed import local_cluster; local_cluster(1).close()` in a new
    process (distributed not imported yet) failed with KeyError: 'distributed': the cluster's
    dask.config.set of distributed.nanny.pre-spawn-environ, made before distributed loaded its
    config defaults, took them away again on exit, and the cluster read them as it closed."""
    code = (
        "import sys; from ddim_core.distributed import local_cluster; "
        "assert 'distributed' not in sys.modules; "
        "cluster = local_cluster(1, processes=False); cluster.close(); "
        "import dask; print(dask.config.get('distributed.scheduler.allowed-failures'))"
    )
    out = _python(code)
    assert out.returncode == 0 and "KeyError" not in out.stderr, out.stderr
    assert out.stdout.split() == ["3"], out.stdout


@pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2, reason="needs 2 cores"
)
def test_the_default_cluster_counts_the_cores_this_process_may_run_on() -> None:
    """local_cluster() (a run without a client) started os.cpu_count() workers, the machine's
    cores: in a SLURM job given 4 cores of a 64-core node, 64 worker processes, each building
    the model. It now starts one per core the process may run on (Dask's CPU_COUNT: affinity
    and cgroup quota), here one, pinned to a single core."""
    code = (
        "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
        "from ddim_core.distributed import local_cluster; "
        "cluster = local_cluster(processes=False); print(len(cluster.workers)); cluster.close()"
    )
    out = _python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1"], out.stdout
