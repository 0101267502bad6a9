"""Inversion under classifier-free guidance: round trip, model calls per step, wall time.

    .venv/bin/python -m benchmarks.inversion            # full table (a few minutes on 2 cores)
    .venv/bin/python -m benchmarks.inversion --smoke    # seconds (CI), into a temporary dir

The test bed of issue 14: three Gaussians in 2-D (std 0.3, means 4 apart), the conditional
model one of them, guided by `ddim_core.guided(uncond, cond, w)`, Stable Diffusion's schedule
(scaled_linear 0.00085..0.012, steps_offset 1, set_alpha_to_one False, leading spacing); 200
points, torch CPU tensors in each dtype. Two kinds of x_0: "samples" the guided sampler itself
produced in that dtype (an exact DDIM inverse exists), and "real" draws of the conditioned
component cast to the dtype. For each method, guidance w, dtype and step count N: the round
trip max |sample(invert(x_0)) - x_0| (each method's own sampler), model calls per inverse step
and the wall time of the inversion. Baselines: plain DDIM inversion and ddim-core 0.1's
Anderson solver (`baseline_anderson`). Writes inversion.md and inversion.json into --out
(default benchmarks/results).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import ddim_core as dc
from ddim_core import reversible
from ddim_core.analytic import GaussianMixture
from ddim_core.sampling import StepInfo

from . import baseline_anderson, out_dir

SD = dc.DDIMConfig(
    beta_schedule="scaled_linear",
    beta_start=0.00085,
    beta_end=0.012,
    steps_offset=1,
    set_alpha_to_one=False,
    clip_sample=False,
)
MIXTURE = GaussianMixture.create([[-2.0, 0.0], [2.0, 0.0], [0.0, 3.5]], [0.3, 0.3, 0.3], SD)
GUIDANCE = (1.0, 3.0, 7.5)
DTYPES = ("float64", "float32", "float16", "bfloat16")
STEPS = (10, 20, 50)
POINTS = 200
# tol of the adaptive rows: about 4 ulps of the data's scale in each dtype
TOL = {"float64": 1e-11, "float32": 2e-6, "float16": 4e-3, "bfloat16": 3e-2}
EPS = {"float64": 2.0**-52, "float32": 2.0**-23, "float16": 2.0**-10, "bfloat16": 2.0**-7}

Invert = Callable[..., Any]


def _tol_options(options: dict[str, Any], dtype: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The options but tol, and tol: True is the dtype's TOL, a number is itself."""
    kept = {k: v for k, v in options.items() if k != "tol"}
    tol = options.get("tol")
    if not tol:
        return kept, {}
    return kept, {"tol": TOL[dtype] if tol is True else tol}


def _ddim(invert: Invert, **options: Any) -> tuple[Invert, Invert]:
    def run(model: Any, x0: Any, n: int, callback: Any, dtype: str) -> Any:
        kept, extra = _tol_options(options, dtype)
        return invert(model, x0, SD, n, callback=callback, **kept, **extra)

    def back(model: Any, z: Any, n: int) -> Any:
        return dc.sample(model, z, SD, n)

    return run, back


def _per_image(invert: Invert, **options: Any) -> tuple[Invert, Invert]:
    """Each point inverted alone (a batch of one, as an editing session inverts one image):
    the row's calls per step are the mean over the points, its error the max. Run only on the
    float64 target cells (real data, N = 50); elsewhere the runner skips it."""

    def run(model: Any, x0: Any, n: int, callback: Any, dtype: str) -> Any:
        import torch

        kept, extra = _tol_options(options, dtype)
        out = []
        for j in range(x0.shape[0]):
            infos: list[StepInfo] = []
            out.append(invert(model, x0[j : j + 1], SD, n, callback=infos.append, **kept, **extra))
            calls = sum(i.model_calls for i in infos)
            callback(StepInfo(0, 0, out[-1], out[-1], calls / x0.shape[0]))  # type: ignore[arg-type]
        return torch.cat(out)

    def back(model: Any, z: Any, n: int) -> Any:
        return dc.sample(model, z, SD, n)

    return run, back


PER_IMAGE = "exact k=30, tol, per image"
# tol at the target's own bound: what a user asking for a 1e-9 round trip sets, not fitted
PER_IMAGE_BOUND = "exact k=30, tol 1e-9, per image"
PER_IMAGE_CELLS = {("real", "float64", 50)}


def _reversible(name: str, **options: Any) -> tuple[Invert, Invert]:
    invert = getattr(reversible, f"invert_{name}")
    sample = getattr(reversible, f"sample_{name}")

    def run(model: Any, x0: Any, n: int, callback: Any, dtype: str) -> Any:
        return invert(model, x0, SD, n, callback=callback, **options)

    def back(model: Any, state: Any, n: int) -> Any:
        return sample(model, state, SD, n)

    return run, back


METHODS: dict[str, tuple[Invert, Invert]] = {
    "plain DDIM inversion": _ddim(dc.invert),
    "Anderson 0.1 (k=20, tol)": _ddim(baseline_anderson.invert, fixed_point_iters=20, tol=True),
    "exact k=1": _ddim(dc.invert, fixed_point_iters=1),
    "exact k=2": _ddim(dc.invert, fixed_point_iters=2),
    "exact k=30, tol": _ddim(dc.invert, fixed_point_iters=30, tol=True),
    PER_IMAGE: _per_image(dc.invert, fixed_point_iters=30, tol=True),
    PER_IMAGE_BOUND: _per_image(dc.invert, fixed_point_iters=30, tol=1e-9),
    "EDICT": _reversible("edict"),
    "BDIA": _reversible("bdia"),
    "BELM": _reversible("belm"),
    "EDICT, float64 arithmetic": _reversible("edict", precision="float64"),
    "BDIA, float64 arithmetic": _reversible("bdia", precision="float64"),
}
SMOKE_METHODS = ("plain DDIM inversion", "Anderson 0.1 (k=20, tol)", "exact k=1", "BDIA")


def data(kind: str, w: float, n: int, dtype: str, points: int) -> Any:
    """x_0 in a torch dtype: guided samples (made in that dtype) or real data."""
    import torch

    torch_dtype = getattr(torch, dtype)
    rng = np.random.default_rng(int(10 * w) + n)
    if kind == "real":
        return torch.from_numpy(MIXTURE.component(0).sample_data(points, rng)).to(torch_dtype)
    x_T = torch.from_numpy(rng.standard_normal((points, 2))).to(torch_dtype)
    return dc.sample(dc.guided(MIXTURE, MIXTURE.component(0), w), x_T, SD, n)


def run_one(method: str, kind: str, w: float, n: int, dtype: str, points: int) -> dict[str, Any]:
    import warnings

    invert, back = METHODS[method]
    model = dc.guided(MIXTURE, MIXTURE.component(0), w)
    x0 = data(kind, w, n, dtype, points)
    infos: list[StepInfo] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        state = invert(model, x0, n, infos.append, dtype)
        elapsed = time.perf_counter() - start
        x1 = back(model, state, n)
    error = float((x1.double() - x0.double()).abs().max())
    scale = float(x0.double().abs().max())
    ulp = 2.0 ** np.floor(np.log2(scale)) * EPS[dtype]
    return {
        "method": method,
        "data": kind,
        "guidance": w,
        "steps": n,
        "dtype": dtype,
        "error": error,
        "ulps": error / ulp,
        "calls_per_step": sum(i.model_calls for i in infos) / n,
        "ms": 1e3 * elapsed,
        "warnings": sorted({str(c.category.__name__) for c in caught}),
        "finite": bool(np.isfinite(error)),
    }


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, each with the rows that decide it."""

    def pick(**where: Any) -> list[dict[str, Any]]:
        return [r for r in rows if all(r[k] == v for k, v in where.items())]

    out = []

    def target(
        name: str, found: list[dict[str, Any]], ok: Callable[[dict[str, Any]], bool]
    ) -> None:
        if found:
            out.append({"target": name, "rows": found, "ok": ok, "met": all(ok(r) for r in found)})

    for method in ("exact k=1", "exact k=2", "exact k=30, tol", PER_IMAGE, PER_IMAGE_BOUND):
        target(
            f"float64, real data, w = 1 and 3, N = 50: <= 1e-9 at <= 3 calls/step ({method})",
            [
                r
                for r in pick(method=method, data="real", dtype="float64", steps=50)
                if r["guidance"] in (1.0, 3.0)
            ],
            lambda r: r["error"] <= 1e-9 and r["calls_per_step"] <= 3,
        )
        target(
            f"float64, guided samples, w = 1 and 3, N = 50: <= 1e-9 at <= 3 calls/step ({method})",
            [
                r
                for r in pick(method=method, data="samples", dtype="float64", steps=50)
                if r["guidance"] in (1.0, 3.0)
            ],
            lambda r: r["error"] <= 1e-9 and r["calls_per_step"] <= 3,
        )
        target(
            f"float32, guided samples, w = 3 and 7.5, N = 20 and 50: <= 1e-5 at <= 3 calls/step "
            f"({method})",
            [
                r
                for r in pick(method=method, data="samples", dtype="float32")
                if r["guidance"] in (3.0, 7.5) and r["steps"] in (20, 50)
            ],
            lambda r: r["error"] <= 1e-5 and r["calls_per_step"] <= 3,
        )
        target(
            f"float16/bfloat16, guided samples, where float32 holds: <= 4 ulps ({method})",
            [
                r
                for r in rows
                if r["method"] == method
                and r["data"] == "samples"
                and r["dtype"] in ("float16", "bfloat16")
                and r["guidance"] in (3.0, 7.5)
                and r["steps"] in (20, 50)
            ],
            lambda r: r["ulps"] <= 4,
        )
    for method, bound64 in (("EDICT", 1e-12), ("BDIA", 1e-12), ("BELM", 1e-12)):
        calls = 2 if method == "EDICT" else 1
        target(
            f"{method}, w = 7.5, N = 20, real data: float64 <= 1e-12 at {calls} calls/step",
            pick(method=method, data="real", dtype="float64", guidance=7.5, steps=20),
            lambda r, b=bound64, c=calls: r["error"] <= b and r["calls_per_step"] == c,
        )
        for name in (method, f"{method}, float64 arithmetic"):
            target(
                f"{name}, w = 7.5, N = 20, real data: float32 <= 1e-5",
                pick(method=name, data="real", dtype="float32", guidance=7.5, steps=20),
                lambda r: r["error"] <= 1e-5,
            )
    target(
        "never a NaN from the solver (every row finite)",
        [r for r in rows if r["method"] != "plain DDIM inversion"],
        lambda r: r["finite"],
    )
    return out


def _measured(target: dict[str, Any]) -> str:
    """The deciding row of a target: the one that misses it, else the worst (by ulps for
    half precision, else by error), and the most calls per step among its rows."""
    found = target["rows"]
    failing = [r for r in found if not target["ok"](r)]
    half = all(r["dtype"] in ("float16", "bfloat16") for r in found)
    worst = max(failing or found, key=lambda r: r["ulps"] if half else r["error"])
    calls = max(r["calls_per_step"] for r in found)
    size = f"{worst['ulps']:.1f} ulps" if half else f"{worst['error']:.1e}"
    where = f"w {worst['guidance']:g}, N {worst['steps']}, {worst['dtype']}"
    return f"{'failing' if failing else 'worst'}: {size} ({where}); up to {calls:.2f} calls/step"


SUMMARY_METHODS = (
    "plain DDIM inversion",
    "Anderson 0.1 (k=20, tol)",
    "exact k=1",
    "exact k=2",
    "exact k=30, tol",
)


def summary(rows: list[dict[str, Any]]) -> list[str]:
    """The README's table: guided samples at N = 20 and 50, w = 3 and 7.5, then the
    reversible samplers on real data at w = 7.5, N = 20."""
    keyed = {(r["data"], r["method"], r["guidance"], r["steps"], r["dtype"]): r for r in rows}
    dtypes = ("float64", "float32", "float16", "bfloat16")
    out = [
        "| x_0 | method | w | N | " + " | ".join(dtypes) + " |",
        "| --- | --- | ---: | ---: |" + " ---: |" * len(dtypes),
    ]

    def line(kind: str, method: str, w: float, n: int) -> None:
        found = [keyed.get((kind, method, w, n, d)) for d in dtypes]
        if any(found):
            cells = [
                "" if r is None else f"{r['error']:.1e} @ {r['calls_per_step']:.2f}" for r in found
            ]
            out.append(f"| {kind} | {method} | {w:g} | {n} | " + " | ".join(cells) + " |")

    for method in SUMMARY_METHODS:
        for n in (20, 50):
            for w in (3.0, 7.5):
                line("samples", method, w, n)
    for method in ("exact k=2", "exact k=30, tol", PER_IMAGE, PER_IMAGE_BOUND):
        for w in (1.0, 3.0):
            line("real", method, w, 50)
    for method in METHODS:
        if method not in (*SUMMARY_METHODS, PER_IMAGE, PER_IMAGE_BOUND):
            line("real", method, 7.5, 20)
    return out


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# Inversion under guidance (`python -m benchmarks.inversion`)",
        "",
        f"{meta['points']} points of the 2-D three-Gaussian test bed, Stable Diffusion's "
        f"schedule, torch {meta['torch']} CPU ({meta['machine']}). Each cell: round-trip max "
        "abs error / model calls per inverse step / inversion wall time in ms (one run; this "
        "machine is shared, compare times within a row). "
        "*samples*: x_0 made by the guided sampler in that dtype; *real*: draws of the "
        "conditioned component. *per image*: each point inverted alone (a batch of one, "
        "as editing inverts one image; float64 real data at N = 50 only): its calls per step "
        "are the mean over the points, where a batch pays on every step for its slowest "
        "point. Adaptive rows stop at tol = "
        + ", ".join(f"{d} {t:g}" for d, t in TOL.items())
        + " (the *tol 1e-9* row: 1e-9, the float64 target's bound).",
        "",
    ]
    lines += ["## Summary (round trip @ model calls per step)", "", *summary(rows), ""]
    dtypes = [d for d in DTYPES if any(r["dtype"] == d for r in rows)]
    for kind in ("samples", "real"):
        lines += [f"## x_0: {kind}", ""]
        lines.append("| method | w | N | " + " | ".join(dtypes) + " |")
        lines.append("| --- | ---: | ---: |" + " ---: |" * len(dtypes))
        keyed = {
            (r["method"], r["guidance"], r["steps"], r["dtype"]): r
            for r in rows
            if r["data"] == kind
        }
        for method in METHODS:
            for w in GUIDANCE:
                for n in STEPS:
                    cells = []
                    for d in dtypes:
                        r = keyed.get((method, w, n, d))
                        cells.append(
                            ""
                            if r is None
                            else f"{r['error']:.1e} / {r['calls_per_step']:.2f} / {r['ms']:.0f}"
                        )
                    if any(cells):
                        lines.append(f"| {method} | {w:g} | {n} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Targets", "", "| target | met | measured |", "| --- | --- | --- |"]
    for t in targets(rows):
        lines.append(f"| {t['target']} | {'yes' if t['met'] else 'no'} | {_measured(t)} |")
    warned = sorted({(r["method"], w) for r in rows for w in r["warnings"]})
    lines += [
        "",
        "Warnings raised during inversion: "
        + (", ".join(f"{m}: {w}" for m, w in warned) or "none")
        + ".",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.inversion", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--smoke", action="store_true", help="a few cases (CI)")
    parser.add_argument("--out", default=None, help="directory for inversion.md / .json")
    args = parser.parse_args(argv)
    if args.out is None:
        default = Path(__file__).parent / "results"
        out = Path(tempfile.mkdtemp(prefix="ddim-inversion-")) if args.smoke else default
    else:
        out = Path(args.out)
    out = out_dir(parser, out)  # before the minutes of the run
    import torch

    torch.set_grad_enabled(False)
    methods = SMOKE_METHODS if args.smoke else tuple(METHODS)
    points = 16 if args.smoke else POINTS
    grid = (
        [(3.0, 20, "float32")]
        if args.smoke
        else [(w, n, d) for w in GUIDANCE for n in STEPS for d in DTYPES]
    )
    rows = []
    for kind in ("samples", "real"):
        for w, n, dtype in grid:
            for method in methods:
                per_image = method in (PER_IMAGE, PER_IMAGE_BOUND)
                if per_image and (kind, dtype, n) not in PER_IMAGE_CELLS:
                    continue
                rows.append(run_one(method, kind, w, n, dtype, points))
                r = rows[-1]
                print(
                    f"{kind} w={w:g} N={n} {dtype} {method}: {r['error']:.1e} "
                    f"{r['calls_per_step']:.2f} calls/step {r['ms']:.0f} ms",
                    flush=True,
                )
    meta = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "numpy": np.__version__,
        "points": points,
        "smoke": args.smoke,
    }
    (out / "inversion.md").write_text(markdown(rows, meta))
    decided = [{"target": t["target"], "met": t["met"]} for t in targets(rows)]
    payload = {"meta": meta, "rows": rows, "targets": decided}
    (out / "inversion.json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
    print(f"wrote {out / 'inversion.md'} and {out / 'inversion.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
