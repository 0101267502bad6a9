"""The tables the README and the docs quote, rendered from `benchmarks/results/results.json`.

Only reads the JSON (no ddim_core, no torch), so the docs build can import it. The README's
table is checked against `readme_table` by tests/test_figures.py; the docs' performance page
is filled in by the docs build (docs/hooks.py) from `steps_table` and `loops_table`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "results.json"


def load(path: str | Path = RESULTS) -> dict[str, Any]:
    """The benchmark results: ``meta``, ``steps`` (one row per case) and ``loops``."""
    data: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
    return data


def _shape(row: dict[str, Any]) -> str:
    return "x".join(str(n) for n in row["shape"])


def readme_table(data: dict[str, Any]) -> str:
    """Forward steps without clipping, eta 0 and 1: the README's summary table."""
    lines = [
        "| library | shape | step | ddim-core | out= | diffusers | floor | core / diffusers "
        "| core / floor | out= / floor | extra memory (core) |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in data["steps"]:
        if r["direction"] != "forward" or r["clip"]:
            continue
        t, q = r["times_us"], r["ratios"]
        mib = r["peak_extra_bytes"]["ddim-core"] / 2**20
        lines.append(
            f"| {r['library']} | {_shape(r)} | eta {r['eta']:g} | {t['ddim-core']:.0f} | "
            f"{t['ddim-core out=']:.0f} | {t['diffusers']:.0f} | {t['floor']:.0f} | "
            f"{q['ddim-core/diffusers']:.2f} | {q['ddim-core/floor']:.2f} | "
            f"{q['ddim-core out=/floor']:.2f} | {mib:.2f} MiB |"
        )
    return "\n".join(lines)


def steps_table(data: dict[str, Any]) -> str:
    """Every measured step: both directions, eta, clipping, every implementation ("-" in
    *kernel* where the step takes no fused kernel)."""
    lines = [
        "| library | shape | direction | eta | clip | ddim-core | out= | kernel | adapter "
        "| diffusers | floor | core / diffusers | core / floor |",
        "| --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in data["steps"]:
        t, q = r["times_us"], r["ratios"]
        lines.append(
            f"| {r['library']} | {_shape(r)} | {r['direction']} | {r['eta']:g} | "
            f"{'on' if r['clip'] else 'off'} | {t['ddim-core']:.1f} | {t['ddim-core out=']:.1f} | "
            f"{_us(t.get('kernel'), 1)} | {t['adapter']:.1f} | {t['diffusers']:.1f} | "
            f"{t['floor']:.1f} | "
            f"{q['ddim-core/diffusers']:.2f} | {q['ddim-core/floor']:.2f} |"
        )
    return "\n".join(lines)


def loops_table(data: dict[str, Any]) -> str:
    """The 50-step loops with a trivial model, in milliseconds per loop."""
    lines = [
        "| library | shape | ddim-core (ms) | diffusers (ms) | ratio |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for lp in data["loops"]:
        lines.append(
            f"| {lp['library']} | {_shape(lp)} | {lp['ddim-core']:.1f} | {lp['diffusers']:.1f} | "
            f"{lp['ddim-core'] / lp['diffusers']:.2f} |"
        )
    return "\n".join(lines)


def meta_line(data: dict[str, Any]) -> str:
    """Where and how the results were measured, in one sentence."""
    m = data["meta"]
    return (
        f"Measured on {m['machine']} with torch {m['torch']}, NumPy {m['numpy']} and diffusers "
        f"{m['diffusers']}; float32, median of {m['repeats']} interleaved repeats, "
        "microseconds per step."
    )


def noise_cost(us: dict[str, float], after_a_draw: bool = False) -> str:
    """(eta 1 step - eta 0 step) / one normal draw, all from the same repeats; "-" at eta 0 (or
    where the run did not time it). `after_a_draw`: against the eta 0 step that follows a
    draw (that loop's step less one draw), whose caches are as cold as eta 1's pass finds them.
    """
    eta0 = us.get("ddim_diffusers eta 0 after a draw" if after_a_draw else "ddim_diffusers eta 0")
    if eta0 is None:
        return "-"
    draw = us["normal draw"]
    eta0 = eta0 - draw if after_a_draw else eta0
    return f"{(us['ddim_diffusers'] - eta0) / draw:.2f}"


def _us(value: float | None, digits: int) -> str:
    """A time in microseconds, "-" where the run did not take it."""
    return "-" if value is None else f"{value:.{digits}f}"


def pipeline_table(data: dict[str, Any], digits: int = 0, draw_column: bool = False) -> str:
    """The pipeline call pattern (diffusers' default config, clip on; `t` from
    `scheduler.timesteps`): ddim_diffusers against diffusers eager and compiled, per step;
    "call": ddim_diffusers with numba's pass skipped (what the step costs around it); the
    noise's cost in draws against eta 0, and against eta 0 after a draw (`noise_cost`).
    `digits`: decimals of the times (the README 0, results.md 1); `draw_column`: the time of
    one normal draw too (results.md)."""
    draw = " | normal draw" if draw_column else ""
    lines = [
        "| shape | eta | ddim_diffusers | call | diffusers | diffusers compiled | floor"
        f"{draw} | ours / diffusers | ours / compiled | ours / floor | noise cost / draw "
        "| after a draw | compile s |",
        "| --- | --- |" + " ---: |" * (12 if draw_column else 11),
    ]
    for r in data.get("pipeline", []):
        us = r["us"]
        ours, comp = us["ddim_diffusers"], us.get("diffusers compiled")
        times = [ours, us.get("ddim_diffusers call"), us["diffusers"], comp, us["floor"]]
        times += [us["normal draw"]] if draw_column else []
        lines.append(
            f"| {_shape(r)} | {r['eta']:g} | "
            + "".join(f"{_us(t, digits)} | " for t in times)
            + f"{ours / us['diffusers']:.2f} | {'-' if comp is None else f'{ours / comp:.2f}'} | "
            f"{ours / us['floor']:.2f} | {noise_cost(us)} | {noise_cost(us, after_a_draw=True)} | "
            f"{r.get('compile_s', float('nan')):.1f} |"
        )
    return "\n".join(lines)


def pipeline_model_table(data: dict[str, Any], digits: int = 0) -> str:
    """The pipeline call pattern with a model call before each step (`pipeline.bench_model`):
    the step alone, ddim_diffusers against diffusers eager and the floor (`digits`: decimals
    of the times)."""
    lines = [
        "| shape | ddim_diffusers | diffusers | floor | ours / diffusers | ours / floor |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in data.get("pipeline_model", []):
        us = r["us"]
        ours = us["ddim_diffusers"]
        times = (ours, us["diffusers"], us["floor"])
        lines.append(
            f"| {_shape(r)} | "
            + "".join(f"{_us(t, digits)} | " for t in times)
            + f"{ours / us['diffusers']:.2f} | {ours / us['floor']:.2f} |"
        )
    return "\n".join(lines)


def pipeline_call_table(data: dict[str, Any], digits: int = 0) -> str:
    """The Python around the pass inside a loop (`pipeline.bench_call`): the pipeline step with
    numba's pass skipped, alone and right after a single-threaded copy of the step's bytes,
    torch's parallel copy of them and our step with its pass (`digits`: decimals of the
    times)."""
    names = ("alone", "after a serial copy", "after a parallel copy", "after a pass")
    lines = [
        "| shape | call alone | after a serial copy | after a parallel copy | after a pass "
        "| serial copy / alone | parallel copy / alone | pass / alone |",
        "| --- |" + " ---: |" * 7,
    ]
    for r in data.get("pipeline_call", []):
        us = r["us"]
        times = [us[n] for n in names]
        lines.append(
            f"| {_shape(r)} | "
            + "".join(f"{_us(t, digits)} | " for t in times)
            + " | ".join(f"{t / times[0]:.2f}" for t in times[1:])
            + " |"
        )
    return "\n".join(lines)


def pipeline_half_table(data: dict[str, Any]) -> str:
    """The pipeline call pattern in float16 / bfloat16 (`pipeline.bench_half`): ddim_diffusers
    against diffusers eager, per step."""
    lines = [
        "| shape | dtype | eta | ddim_diffusers | diffusers | ours / diffusers |",
        "| --- | --- | --- | ---: | ---: | ---: |",
    ]
    for r in data.get("pipeline_half", []):
        us = r["us"]
        ours = us["ddim_diffusers"]
        lines.append(
            f"| {_shape(r)} | {r['dtype']} | {r['eta']:g} | {ours:.0f} | "
            f"{us['diffusers']:.0f} | {ours / us['diffusers']:.2f} |"
        )
    return "\n".join(lines)
