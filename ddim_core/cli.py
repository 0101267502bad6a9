"""`ddim-core` command line: `demo`, `plot-schedule`, `plugins`, `check`, and the adapters' own
commands, e.g. `ddim-core comfyui install|uninstall COMFYUI_DIR` (the ComfyUI node pack's)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from .analytic import GaussianMixture
from .config import TIMESTEP_SPACINGS, DDIMConfig
from .plans import make_plan
from .sampling import StepInfo, invert, sample

# Narrow, well separated components: plain inversion fails near the boundaries between them.
MEANS = [[-2.0, 0.0], [2.0, 0.0], [0.0, 3.5]]
STDS = [0.3, 0.3, 0.3]


def demo(
    steps: Sequence[int], spacing: str = "trailing", points: int = 300, seed: int = 0
) -> tuple[str, dict[str, Any]]:
    """Sample a 2-D Gaussian mixture with DDIM, then invert the samples plainly and exactly."""
    config = DDIMConfig(timestep_spacing=spacing, clip_sample=False)
    model = GaussianMixture.create(MEANS, STDS, config)
    rng = np.random.default_rng(seed)
    x_T = rng.standard_normal((points, 2))
    reference = sample(model, x_T, config, config.num_train_timesteps)  # the converged flow map
    rows: list[str] = []
    results: dict[str, Any] = {
        "steps": [],
        "samples": {},
        "sample_error": [],
        "plain": [],
        "exact": [],
    }
    for n in steps:
        start = time.perf_counter()
        x_0 = sample(model, x_T, config, n)
        plain = np.abs(sample(model, invert(model, x_0, config, n), config, n) - x_0).max()
        infos: list[StepInfo] = []
        z = invert(model, x_0, config, n, fixed_point_iters=20, tol=1e-9, callback=infos.append)
        exact = np.abs(sample(model, z, config, n) - x_0).max()
        elapsed = time.perf_counter() - start
        calls = np.mean([i.model_calls for i in infos])
        err = float(np.abs(x_0 - reference).max())
        rows.append(
            f"{n:>5}  {err:12.2e}  {plain:10.2e}  {exact:10.2e}  {calls:10.2f}  {elapsed:7.2f}"
        )
        for key, value in (("steps", n), ("sample_error", err), ("plain", plain), ("exact", exact)):
            results[key].append(float(value))
        results["samples"][n] = x_0
    header = (
        f"DDIM on a 2-D mixture of {len(STDS)} Gaussians (std 0.3, means 4 apart) with its exact "
        f"denoiser; {points} points, {spacing} spacing, float64.\n"
        "sample error: max |x_0 - x_0 at 1000 steps| (first order: ~1/N).\n"
        "round trip: max |sample(invert(x_0)) - x_0|, plain DDIM inversion and exact "
        "(Anderson fixed point); calls: model calls per exact inverse step.\n\n"
        f"{'steps':>5}  {'sample error':>12}  {'plain trip':>10}  {'exact trip':>10}  "
        f"{'calls/step':>10}  {'time s':>7}"
    )
    return header + "\n" + "\n".join(rows), results


def plot_demo(results: dict[str, Any], path: str) -> None:
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.5))
    for n, x in results["samples"].items():
        left.scatter(x[:, 0], x[:, 1], s=4, label=f"{n} steps")
    left.set(title="DDIM samples", aspect="equal")
    left.legend(markerscale=3)
    steps = results["steps"]
    right.loglog(steps, results["sample_error"], "o-", label="sampling error")
    right.loglog(steps, results["plain"], "s-", label="plain inversion round trip")
    right.loglog(
        steps, np.maximum(results["exact"], 1e-17), "^-", label="exact inversion round trip"
    )
    right.set(xlabel="steps", ylabel="max abs error", title="error against steps")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_schedule(config: DDIMConfig, num_inference_steps: int, path: str) -> None:
    """alpha_bar, SNR (log scale) and the timesteps a plan visits, to PNG."""
    plt = _pyplot()
    plan = make_plan(config, num_inference_steps)
    ab = plan.schedule.alphas_cumprod
    t = np.arange(ab.shape[0])
    with np.errstate(divide="ignore"):
        snr = ab / (1.0 - ab)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    top.plot(t, ab, label="alpha_bar")
    top.plot(plan.timesteps, ab[list(plan.timesteps)], "o", ms=3, label="plan timesteps")
    top.set(
        ylabel="alpha_bar",
        title=f"{config.beta_schedule}, {config.timestep_spacing}, "
        f"{num_inference_steps} steps" + (", zero SNR" if config.rescale_betas_zero_snr else ""),
    )
    top.legend()
    bottom.semilogy(t, np.where(snr > 0, snr, np.nan), label="SNR = alpha_bar / (1 - alpha_bar)")
    bottom.set(xlabel="timestep t", ylabel="SNR")
    bottom.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("plotting needs matplotlib: pip install 'ddim-core[plot]'") from None
    return plt


def plugins_table() -> str:
    """The registered plugins, their hooks, and each adapter's host status."""
    from . import plugins

    rows = plugins.describe()
    width = max([len(r["name"]) for r in rows] + [6])
    dist_width = max([len(r["distribution"]) for r in rows] + [12])
    lines = [f"{'plugin':<{width}}  {'distribution':<{dist_width}}  hooks"]
    for r in rows:
        hooks = ", ".join(r["hooks"]) or "-"
        lines.append(f"{r['name']:<{width}}  {r['distribution']:<{dist_width}}  {hooks}")
    lines.append("\nadapters:")
    for r in rows:
        if r["adapter"] is not None:
            status = "importable" if r["host_importable"] else "not installed"
            provides = ", ".join(r["adapter"].provides)
            command = f"; command: ddim-core {r['adapter'].name}" if r["adapter"].command else ""
            lines.append(
                f"  {r['adapter'].name:<{width}}  host {r['adapter'].host}: {status}; "
                f"provides {provides}{command}"
            )
    blocked = ", ".join(plugins.blocked()) or "none"
    lines.append(f"\nblocked by {plugins.BLOCK_ENV}: {blocked}")
    return "\n".join(lines)


COMMANDS = ("demo", "plot-schedule", "plugins", "check")  # any other names an adapter


def adapter_command(name: str, args: list[str]) -> int:
    """`ddim-core NAME ARGS...`: the command line of the adapter NAME (its `command`, found
    through the plugins, so the core imports no adapter)."""
    from . import plugins

    commands = {a.name: a for a in plugins.adapters().values() if a.command is not None}
    if name not in commands:
        print(
            f"ddim-core: error: unknown command {name!r}; commands: {', '.join(COMMANDS)}; "
            f"from adapters: {', '.join(sorted(commands)) or 'none'} (see `ddim-core plugins`)",
            file=sys.stderr,
        )
        return 2
    return commands[name].run_command(args, prog=f"ddim-core {name}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "check":  # the conformance suite (needs Hypothesis): its own parser
        from .testing.conformance import main as check

        return check(argv[1:])
    if argv and argv[0] not in COMMANDS and not argv[0].startswith("-"):
        return adapter_command(argv[0], argv[1:])
    parser = argparse.ArgumentParser(prog="ddim-core", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="sample and invert a 2-D Gaussian mixture (NumPy)")
    p.add_argument("--steps", type=int, nargs="+", default=[10, 20, 50, 100, 200])
    p.add_argument("--spacing", default="trailing", choices=TIMESTEP_SPACINGS)
    p.add_argument("--points", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", metavar="FILE.png", help="draw samples and errors to a PNG")
    q = sub.add_parser("plot-schedule", help="alpha_bar, SNR and plan timesteps to a PNG")
    q.add_argument("output", metavar="FILE.png")
    q.add_argument("--config", help="a scheduler_config.json to read")
    q.add_argument("--beta-schedule", default="linear")
    q.add_argument("--spacing", default="leading", choices=TIMESTEP_SPACINGS)
    q.add_argument("--zero-snr", action="store_true", help="rescale_betas_zero_snr")
    q.add_argument("--steps", type=int, default=50)
    sub.add_parser("plugins", help="list plugins, their hooks, adapter hosts and commands")
    sub.add_parser("check", help="check a scheduler or sampler (module:attr) against exact DDIM")
    args = parser.parse_args(argv)
    if args.command == "plugins":
        print(plugins_table())
    elif args.command == "demo":
        table, results = demo(args.steps, args.spacing, args.points, args.seed)
        print(table)
        if args.plot:
            plot_demo(results, args.plot)
            print(f"\nwrote {args.plot}")
    else:
        if args.config:
            config = DDIMConfig.from_json(args.config)
        else:
            config = DDIMConfig(
                beta_schedule=args.beta_schedule,
                timestep_spacing=args.spacing,
                rescale_betas_zero_snr=args.zero_snr,
                prediction_type="v_prediction" if args.zero_snr else "epsilon",
            )
        plot_schedule(config, args.steps, args.output)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
