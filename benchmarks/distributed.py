"""Dataset inversion on dask.distributed against the single-process loop.

    .venv/bin/python -m benchmarks.distributed [--smoke] [--repeats 3] [--out DIR]

Two workloads, the analytic Gaussian mixture as the model (`ddim_core.distributed`'s
default), float32, 20 steps of plain DDIM inversion, trailing spacing:

    points   400,000 2-D points in chunks of 20,000
    latents  256 latents of 4x64x64 in chunks of 8

For each, the best of `--repeats` runs of:
- loop: `ddim_core.invert` over the same chunks in a new process, arrays in memory;
- in process: `run_chunk` for every chunk in that process, no Dask: the loop plus reading the
  chunk from Zarr, hashing it, writing the result and the record (interleaved with the loop);
- 1 worker / 2 workers: `invert_dataset` on a `local_cluster` of that many worker processes
  (one thread each), started and warmed up (imports, the model built) before the timing;
- rerun: the same call again with every chunk done (what checking a chunk costs);
all of it twice: with glibc's malloc as it comes, and told to keep freed memory mapped
(TUNED_MALLOC), which takes page faults out of the comparison. Per-chunk overhead = (time with
1 worker - loop time) / chunks. The loops run in new processes because glibc's malloc adapts
to what a process did before: after one big allocation, the latents loop runs 5x faster in the
same process. Writes distributed.md and distributed.json into --out (default: a temporary
directory).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import ddim_core as dc
from ddim_core import distributed

from . import out_dir, positive_int

CONFIG = dc.DDIMConfig(timestep_spacing="trailing", clip_sample=False)
WORKLOADS = {
    "points": {"item": (2,), "items": 400_000, "chunk": 20_000},
    "latents": {"item": (4, 64, 64), "items": 256, "chunk": 8},
}
SMOKE = {
    "points": {"item": (2,), "items": 64, "chunk": 16},
    "latents": {"item": (4, 8, 8), "items": 8, "chunk": 2},
}


def _source(root: Path, name: str, spec: dict[str, Any]) -> tuple[Path, np.ndarray]:
    import zarr

    x = np.random.default_rng(0).standard_normal((spec["items"], *spec["item"]))
    x = x.astype(np.float32)
    path = root / f"{name}.zarr"
    array = zarr.create_array(
        store=str(path), shape=x.shape, chunks=(spec["chunk"], *spec["item"]), dtype="float32"
    )
    array[...] = x
    return path, x


def _loop(x: np.ndarray, chunk: int, steps: int) -> float:
    model = distributed.analytic_model(CONFIG)
    dc.invert(model, x[:chunk], CONFIG, steps)  # warm: tables, kernels
    start = time.perf_counter()
    for a in range(0, len(x), chunk):
        dc.invert(model, x[a : a + chunk], CONFIG, steps)
    return time.perf_counter() - start


def _in_process(source: Path, root: Path, chunk: int, steps: int) -> float:
    target = root / "in-process.zarr"
    shutil.rmtree(target, ignore_errors=True)
    job = distributed.prepare("invert", None, source, target, CONFIG, steps, chunk=chunk)
    start = time.perf_counter()
    for c in range(job.chunks):
        distributed.run_chunk(job, c)
    return time.perf_counter() - start


def _on_cluster(
    client: Any, source: Path, root: Path, chunk: int, steps: int, repeats: int
) -> dict[str, Any]:
    runs, reruns = [], []
    for r in range(repeats):
        target = root / f"cluster-{r}.zarr"
        shutil.rmtree(target, ignore_errors=True)
        report = distributed.invert_dataset(
            None, source, target, CONFIG, steps, client=client, chunk=chunk
        )
        assert report.computed == report.chunks, report
        runs.append(report)
        again = distributed.invert_dataset(
            None, source, target, CONFIG, steps, client=client, chunk=chunk
        )
        assert again.computed == 0, again
        reruns.append(again.seconds)
        shutil.rmtree(target, ignore_errors=True)
    best = min(runs, key=lambda rep: rep.seconds)
    return {
        "seconds": best.seconds,
        "items_per_s": best.items_per_second,
        "retries": best.retries,
        "rerun_s": min(reruns),
        "model_calls_per_step": best.model_calls_per_step,
    }


# glibc kept from returning freed memory to the system: big temporaries stay mapped
TUNED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(1 << 25), "MALLOC_TRIM_THRESHOLD_": str(1 << 28)}


def _local(name: str, smoke: bool, repeats: int) -> dict[str, float]:
    """loop and in-process times of one workload, in this (fresh) process."""
    spec = (SMOKE if smoke else WORKLOADS)[name]
    steps = 3 if smoke else 20
    root = Path(tempfile.mkdtemp(prefix="ddim-dist-bench-"))
    try:
        source, x = _source(root, name, spec)
        loops, local = [], []
        for _ in range(repeats):  # interleaved: machine noise hits both alike
            loops.append(_loop(x, spec["chunk"], steps))
            local.append(_in_process(source, root, spec["chunk"], steps))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"loop_s": min(loops), "in_process_s": min(local)}


def _local_in_subprocess(
    name: str, smoke: bool, repeats: int, env: dict[str, str] | None = None
) -> dict[str, float]:
    """`_local` in a new process, whose allocator starts as fresh as a new worker's."""
    args = [sys.executable, "-m", "benchmarks.distributed", "--local", name, "--repeats"]
    args += [str(repeats), *(["--smoke"] if smoke else [])]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    done = subprocess.run(
        args,
        capture_output=True,
        text=True,
        check=True,
        env={**clean, **(env or {})},
        cwd=Path(__file__).parent.parent,
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run(smoke: bool, repeats: int, out: Path) -> dict[str, Any]:
    from distributed import Client

    workloads = SMOKE if smoke else WORKLOADS
    steps = 3 if smoke else 20
    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    for name, spec in workloads.items():
        row: dict[str, Any] = {
            "workload": name,
            "item": "x".join(map(str, spec["item"])),
            "items": spec["items"],
            "chunk": spec["chunk"],
            "chunks": -(-spec["items"] // spec["chunk"]),
            "steps": steps,
        }
        for malloc, env in (("default", None), ("tuned", TUNED_MALLOC)):
            row[malloc] = {**_local_in_subprocess(name, smoke, repeats, env), "workers": {}}
        rows.append(row)
    root = Path(tempfile.mkdtemp(prefix="ddim-dist-bench-"))
    try:
        sources = {name: _source(root, name, spec)[0] for name, spec in workloads.items()}
        # default first: a nanny leaves its workers' environment in this process's
        for malloc, environ in (("default", None), ("tuned", TUNED_MALLOC)):
            for n_workers in (1, 2):
                cluster = distributed.local_cluster(
                    n_workers, environ=environ, silence_logs=logging.ERROR
                )
                with cluster, Client(cluster) as client:
                    for row in rows:
                        source = sources[row["workload"]]
                        warm = root / "warm.zarr"  # imports, numba kernels, the model: once
                        distributed.invert_dataset(
                            None, source, warm, CONFIG, steps, client=client, chunk=row["chunk"]
                        )
                        shutil.rmtree(warm)
                        row[malloc]["workers"][n_workers] = _on_cluster(
                            client, source, root, row["chunk"], steps, repeats
                        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for row in rows:
        for part in (row["default"], row["tuned"]):
            one, two = part["workers"][1], part["workers"][2]
            part["loop_items_per_s"] = row["items"] / part["loop_s"]
            part["in_process_items_per_s"] = row["items"] / part["in_process_s"]
            part["loop_ms_per_chunk"] = 1e3 * part["loop_s"] / row["chunks"]
            part["overhead_ms_per_chunk"] = 1e3 * (one["seconds"] - part["loop_s"]) / row["chunks"]
            part["io_ms_per_chunk"] = 1e3 * (part["in_process_s"] - part["loop_s"]) / row["chunks"]
            part["rerun_ms_per_chunk"] = 1e3 * two["rerun_s"] / row["chunks"]
            part["speedup_2_workers"] = two["items_per_s"] / one["items_per_s"]
    meta = {**_meta(smoke, repeats), "load_before": load_before, "load_after": os.getloadavg()}
    data = {"meta": meta, "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "distributed.json").write_text(json.dumps(data, indent=2) + "\n")
    (out / "distributed.md").write_text(_markdown(data))
    return data


def _meta(smoke: bool, repeats: int) -> dict[str, Any]:
    import dask
    import zarr

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "?"
    return {
        "smoke": smoke,
        "repeats": repeats,
        "commit": commit,
        "date": time.strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "dask": dask.__version__,
        "zarr": zarr.__version__,
        "model": distributed.DEFAULT_MODEL,
        "config": "trailing spacing, clip_sample off, float32, plain DDIM inversion",
        "steps": 3 if smoke else 20,
    }


def _markdown(data: dict[str, Any]) -> str:
    meta = data["meta"]
    load = "load average (1, 5, 15 min) {} before, {} after".format(
        *(", ".join(f"{v:.1f}" for v in meta[k]) for k in ("load_before", "load_after"))
    )
    lines = [
        "# Dataset inversion on dask.distributed (`python -m benchmarks.distributed`)",
        "",
        f"Commit {meta['commit']}, {meta['date']}, {meta['cpus']} cores ({load}), Python "
        f"{meta['python']}, NumPy {meta['numpy']}, dask {meta['dask']}, zarr {meta['zarr']}; "
        f"best of {meta['repeats']}. Model: the analytic Gaussian mixture; "
        f"{meta['config']}." + (" SMOKE RUN: tiny sizes, not a measurement." * meta["smoke"]),
        "",
        "| workload | items | chunk | chunks | malloc | loop items/s | in process items/s "
        "| 1 worker items/s | 2 workers items/s | 2 / 1 workers | loop ms/chunk | overhead "
        "ms/chunk (1 worker - loop) | I/O + records ms/chunk (in process - loop) | rerun, all "
        "done, ms/chunk |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: |",
    ]
    for r in data["rows"]:
        for malloc in ("tuned", "default"):
            p = r[malloc]
            one, two = p["workers"][1], p["workers"][2]
            lines.append(
                f"| {r['workload']} ({r['item']}) | {r['items']} | {r['chunk']} | {r['chunks']} "
                f"| {malloc} | {p['loop_items_per_s']:.4g} | {p['in_process_items_per_s']:.4g} | "
                f"{one['items_per_s']:.4g} | {two['items_per_s']:.4g} | "
                f"{p['speedup_2_workers']:.2f} | {p['loop_ms_per_chunk']:.1f} | "
                f"{p['overhead_ms_per_chunk']:.1f} | {p['io_ms_per_chunk']:.1f} | "
                f"{p['rerun_ms_per_chunk']:.1f} |"
            )
    lines += [
        "",
        f"{meta['steps']} steps. *loop*: `ddim_core.invert` over the same chunks in a new "
        "process, arrays in memory. *in process*: `run_chunk` for each chunk in that process, "
        "without Dask (the loop plus Zarr reads and writes, hashing, the record), interleaved "
        "with the loop. *1 / 2 workers*: `invert_dataset` on a warm `local_cluster` of that "
        "many processes (one thread each); items/s over the run's wall time, cluster start "
        "excluded. *rerun*: the same call with every chunk done (2 workers). *malloc tuned*: "
        f"{', '.join(f'{k}={v}' for k, v in TUNED_MALLOC.items())} in the environment of the "
        "loop's process and of the workers (glibc keeps freed memory mapped, so the analytic "
        "model's big temporaries stop costing page faults, and times stop depending on what "
        "the process allocated before); *default*: glibc's own rules (what `local_cluster` "
        "gives). The machine is a shared 2-core VM: 2 workers share its cores with the "
        "scheduler and with other work, and single figures move by up to 2x between runs; "
        "compare within a row.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat")
    parser.add_argument("--repeats", type=positive_int, default=3)
    parser.add_argument("--out", type=Path, help="where to write (default: a temporary dir)")
    parser.add_argument("--local", choices=sorted(WORKLOADS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.local:  # one workload's in-process timings, as JSON (run by _local_in_subprocess)
        print(json.dumps(_local(args.local, args.smoke, 1 if args.smoke else args.repeats)))
        return 0
    out = out_dir(parser, args.out or Path(tempfile.mkdtemp(prefix="ddim-dist-results-")))
    data = run(args.smoke, 1 if args.smoke else args.repeats, out)
    print(_markdown(data))
    print(f"wrote {out / 'distributed.md'} and {out / 'distributed.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
