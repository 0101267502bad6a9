"""MkDocs hooks of the ddim-core site: what the build computes instead of pasting.

- Figures: drawn from the code at every build (SVG, never committed): the noise schedules and
  their SNR, the timesteps of each spacing, the round-trip error of plain and exact inversion
  against steps (the demo's computation), and the speed ratios in
  `benchmarks/results/results.json`.
- Generated blocks: a page line `<!-- generated: NAME -->` is replaced by the table NAME
  (the benchmark tables from results.json, DDIMConfig's options from their declarations).
- Navigation: docs/mindspore.md joins the guides once it exists.
- The API reference must list every public name: after the build, every public module-level
  function, class and constant of ddim_core and the adapters (found statically by griffe)
  must have its anchor in the built API pages, else the build fails.
"""

from __future__ import annotations

import io
import logging
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

log = logging.getLogger("mkdocs.hooks.ddim_core")

PACKAGES = ("ddim_core", "ddim_diffusers", "ddim_kdiffusion", "ddim_comfyui", "ddim_mindone")
GENERATED = re.compile(r"^<!-- generated: ([\w-]+) -->$", re.MULTILINE)


# --- navigation ----------------------------------------------------------------------------


def on_config(config: Any) -> Any:
    """Put the source tree on sys.path (as mkdocstrings reads it; mkdocs restores sys.path
    after loading this file), and add the mindone / MindSpore guide to the nav's guides when
    docs/mindspore.md exists."""
    for path in (ROOT / "adapters", ROOT):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    if (Path(config["docs_dir"]) / "mindspore.md").exists():
        for section in config["nav"]:
            guides = section.get("Guides") if isinstance(section, dict) else None
            if guides is not None and not any("mindspore.md" in str(g) for g in guides):
                at = next(i for i, g in enumerate(guides) if "comfyui" in str(g)) + 1
                guides.insert(at, {"mindone / MindSpore": "mindspore.md"})
    return config


# --- figures -------------------------------------------------------------------------------


def on_files(files: Any, config: Any) -> Any:
    """Draw every figure and add it to the site as figures/NAME.svg."""
    from mkdocs.structure.files import File

    for name, draw in FIGURES.items():
        svg = _svg(draw)
        files.append(File.generated(config, f"figures/{name}.svg", content=svg))
    return files


def _svg(draw: Any) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "ddim-core"  # the same SVG from the same data
    fig = draw(plt)
    out = io.StringIO()
    fig.savefig(out, format="svg", metadata={"Date": None})
    plt.close(fig)
    return out.getvalue()


def draw_schedules(plt: Any) -> Any:
    """alpha_bar_t and the SNR of each beta schedule, and of scaled_linear rescaled to zero
    terminal SNR."""
    import numpy as np

    import ddim_core as dc

    configs = {
        "linear": dc.DDIMConfig(),
        "scaled_linear (Stable Diffusion)": dc.DDIMConfig(
            beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012
        ),
        "squaredcos_cap_v2 (cosine)": dc.DDIMConfig(beta_schedule="squaredcos_cap_v2"),
        "scaled_linear, zero terminal SNR": dc.DDIMConfig(
            beta_schedule="scaled_linear",
            beta_start=0.00085,
            beta_end=0.012,
            rescale_betas_zero_snr=True,
            prediction_type="v_prediction",
        ),
    }
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True)
    for label, config in configs.items():
        ab = dc.alphas_cumprod(config)
        t = np.arange(ab.shape[0])
        top.plot(t, ab, label=label)
        with np.errstate(divide="ignore"):
            snr = ab / (1.0 - ab)
        bottom.semilogy(t, np.where(snr > 0, snr, np.nan), label=label)
    top.set(ylabel="alpha_bar_t", title="Noise schedules (T = 1000)")
    top.legend(fontsize=8)
    bottom.set(xlabel="timestep t", ylabel="SNR = alpha_bar / (1 - alpha_bar)")
    bottom.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def draw_spacings(plt: Any) -> Any:
    """The timesteps each spacing visits for N = 10 of T = 1000, and where t_prev lands."""
    import ddim_core as dc

    fig, ax = plt.subplots(figsize=(8, 2.8))
    spacings = ("leading", "trailing", "linspace")
    for row, spacing in enumerate(spacings):
        plan = dc.make_plan(dc.DDIMConfig(timestep_spacing=spacing), 10)
        ax.plot(plan.timesteps, [row] * len(plan.timesteps), "o", label=spacing)
        for t in (plan.timesteps[0], plan.timesteps[-1]):
            ax.annotate(str(t), (t, row), textcoords="offset points", xytext=(0, 7), ha="center")
    ax.set(
        yticks=range(len(spacings)),
        yticklabels=spacings,
        xlabel="timestep t",
        xlim=(-30, 1030),
        ylim=(-0.6, len(spacings) - 0.3),
        title="Timesteps of a 10-step plan (T = 1000)",
    )
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def draw_roundtrip(plt: Any) -> Any:
    """The demo's computation: sampling error and round-trip errors against steps."""
    import numpy as np

    from ddim_core import cli

    _, results = cli.demo([10, 20, 50, 100], points=100)
    steps = results["steps"]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.loglog(steps, results["sample_error"], "o-", label="sampling error vs 1000 steps")
    ax.loglog(steps, results["plain"], "s-", label="plain inversion: max |sample(invert(x)) - x|")
    exact = np.maximum(results["exact"], 1e-17)
    ax.loglog(steps, exact, "^-", label="exact inversion (fixed_point_iters=30, tol=1e-9)")
    ax.set(
        xlabel="steps N",
        ylabel="max abs error",
        title="2-D Gaussian mixture, exact denoiser, float64 (ddim-core demo)",
    )
    ax.set_xticks(steps, [str(int(s)) for s in steps])
    ax.tick_params(axis="x", which="minor", labelbottom=False)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def draw_speed(plt: Any) -> Any:
    """ddim-core's step time over diffusers' per shape (forward, clip off), from results.json."""
    import numpy as np

    from benchmarks import tables

    data = tables.load()
    fig, ax = plt.subplots(figsize=(8, 4.2))
    rows = [r for r in data["steps"] if r["direction"] == "forward" and not r["clip"]]
    shapes = list(dict.fromkeys("x".join(map(str, r["shape"])) for r in rows))
    series = [(lib, eta) for lib in ("torch", "numpy") for eta in (0.0, 1.0)]
    width = 0.8 / len(series)
    for k, (lib, eta) in enumerate(series):
        ratio = {
            "x".join(map(str, r["shape"])): r["ratios"]["ddim-core/diffusers"]
            for r in rows
            if r["library"] == lib and r["eta"] == eta
        }
        x = np.arange(len(shapes)) + (k - (len(series) - 1) / 2) * width
        ax.bar(x, [ratio[s] for s in shapes], width, label=f"{lib}, eta {eta:g}")
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks(np.arange(len(shapes)), shapes)
    ax.set(
        xlabel="sample shape",
        ylabel="ddim-core time / diffusers time",
        title="One DDIM step, float32, forward, clip off (lower is faster)",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


FIGURES = {
    "schedules": draw_schedules,
    "spacings": draw_spacings,
    "roundtrip": draw_roundtrip,
    "speed": draw_speed,
}


# --- generated blocks ----------------------------------------------------------------------


def _options_table() -> str:
    import ddim_core as dc

    lines = ["| option | default | meaning |", "| --- | --- | --- |"]
    for name, default, doc in dc.DDIMConfig.options():
        lines.append(f"| `{name}` | `{default!r}` | {doc.replace('|', '&#124;')} |")
    return "\n".join(lines)


def _generated(name: str) -> str:
    from benchmarks import tables

    makers = {
        "benchmark-meta": lambda: tables.meta_line(tables.load()),
        "benchmark-readme": lambda: tables.readme_table(tables.load()),
        "benchmark-steps": lambda: tables.steps_table(tables.load()),
        "benchmark-loops": lambda: tables.loops_table(tables.load()),
        "benchmark-pipeline": lambda: tables.pipeline_table(tables.load()),
        "benchmark-pipeline-model": lambda: tables.pipeline_model_table(tables.load()),
        "benchmark-pipeline-call": lambda: tables.pipeline_call_table(tables.load()),
        "config-options": _options_table,
    }
    if name not in makers:
        raise KeyError(f"unknown generated block {name!r}; known: {sorted(makers)}")
    return makers[name]()


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace each `<!-- generated: NAME -->` line by the block NAME."""
    return GENERATED.sub(lambda m: _generated(m.group(1)), markdown)


# --- the API reference lists every public name ----------------------------------------------


def public_names() -> list[str]:
    """Dotted paths of every public module-level function, class and constant of the
    packages (found statically, so no host framework is imported), and of the public methods
    a public class takes from a private base of ours (ddim_diffusers' SchedulerCore), which
    have no entry of their own elsewhere."""
    import griffe

    names: list[str] = []
    for package in PACKAGES:
        root = griffe.load(package, search_paths=[str(ROOT), str(ROOT / "adapters")])
        stack = [root]
        while stack:
            module = stack.pop()
            for name, member in module.members.items():
                if name.startswith("_") or member.is_alias:
                    continue
                if member.is_module:
                    stack.append(member)
                elif module is not root:
                    names.append(member.path)
                    if member.is_class:
                        names += _privately_inherited(member)
    return sorted(names)


def _privately_inherited(cls: Any) -> list[str]:
    """The public methods and properties `cls` inherits from a class in a private module or
    a private class of ours; not from `._base`, the stand-ins for the host's own classes."""
    names = []
    for name, alias in cls.inherited_members.items():
        owner = alias.target.parent.path
        private = any(part.startswith("_") for part in owner.split("."))
        if name.startswith("_") or not private or "._base." in owner + ".":
            continue
        if alias.target.is_function:
            names.append(f"{cls.path}.{name}")
    return names


def on_post_build(config: Any) -> None:
    """Fail the build when a public name has no entry in the built API reference."""
    site = Path(config["site_dir"]) / "api"
    html = "".join(p.read_text(encoding="utf-8") for p in site.rglob("*.html"))
    missing = [name for name in public_names() if f'id="{name}"' not in html]
    if missing:
        log.warning("the API reference lacks these public names: %s", ", ".join(missing))
