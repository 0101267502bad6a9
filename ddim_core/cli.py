"""`ddim-core` command line: `demo`, `plot-schedule`, `plugins`, `check`, `invert-dataset`,
`sample-dataset`, and the adapters' own commands, e.g. `ddim-core comfyui install|uninstall
COMFYUI_DIR` (the ComfyUI node pack's).

A bad argument ends the command with one line naming it on stderr and exit status 2, never a
traceback; `--plot` and `plot-schedule` check that matplotlib is installed and writes the
image's format here (.pgf needs a TeX system) before computing anything.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import itertools
import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import Any

import numpy as np

from ._arguments import ArgumentParser as ArgumentParser  # public here: adapters use it
from .analytic import DEMO_MEANS, DEMO_STDS, GaussianMixture
from .config import BETA_SCHEDULES, TIMESTEP_SPACINGS, DDIMConfig, check_int
from .implicit import ToleranceWarning
from .plans import make_plan
from .sampling import StepInfo, invert, sample

MEANS, STDS = DEMO_MEANS, DEMO_STDS  # narrow, well separated: plain inversion fails between them
DEMO_STEPS = (10, 20, 50, 100, 200)
DEMO_COLUMNS = ("steps", "sample error", "plain trip", "exact trip", "calls/step", "time s")


def demo(
    steps: Sequence[int],
    spacing: str = "trailing",
    points: int = 300,
    seed: int = 0,
    *,
    echo: Callable[[str], Any] | None = None,
) -> tuple[str, dict[str, Any]]:
    """Sample a 2-D Gaussian mixture with DDIM, then invert the samples plainly and exactly.

    The model is the mixture's exact denoiser (`GaussianMixture`), so every error in the table
    is the sampler's own. For each step count N: the sampling error against the 1000-step
    result, the round trip `max |sample(invert(x_0)) - x_0|` of plain and of exact inversion
    (`fixed_point_iters=30, tol=1e-9`), and the model calls per exact inverse step.

    Parameters
    ----------
    steps : sequence of int
        Step counts N, at least one, each in [1, 1000], each once (one row per step count).
    spacing : {"trailing", "leading", "linspace", "quadratic"}
        The timestep spacing of the plans.
    points : int
        How many 2-D points to sample, at least 1.
    seed : int
        Seed of the NumPy generator that draws x_T, at least 0.
    echo : callable, optional
        Called with the header, then with each row as soon as it is computed (the command
        line passes `print`).

    Returns
    -------
    table : str
        The header and one row per step count.
    results : dict
        ``steps``, ``sample_error``, ``plain``, ``exact`` (lists, one value per step count)
        and ``samples`` (step count -> the (points, 2) samples).

    Raises
    ------
    ValueError
        No step count, a step count outside [1, 1000] or given twice, a bad spacing,
        points < 1 or seed < 0.
    TypeError
        `steps` not a sequence (a string included), a step count, `points` or `seed` that is
        not an integer, or a spacing that is not a string.

    Examples
    --------
    >>> table, results = demo([10, 20], points=20)
    >>> results["steps"]
    [10.0, 20.0]
    >>> results["exact"][0] < 1e-5 < results["plain"][0]
    True
    """
    points, seed = check_int("points", points, low=1), check_int("seed", seed, low=0)
    if spacing not in TIMESTEP_SPACINGS:
        error = ValueError if isinstance(spacing, str) else TypeError
        raise error(f"spacing must be one of {TIMESTEP_SPACINGS}, got {spacing!r}")
    try:
        if isinstance(steps, str | bytes):  # "10" would be the step counts 1 and 0
            raise TypeError
        steps = list(steps)  # read once: an iterator would be used up by the checks below
    except TypeError:
        raise TypeError(
            f"steps must be a sequence of step counts, got {type(steps).__name__}"
        ) from None
    if not steps:
        raise ValueError(f"steps must name at least one step count, got {steps}")
    config = DDIMConfig(timestep_spacing=spacing, clip_sample=False)
    for n in steps:  # every step count checked before any work
        make_plan(config, check_int("steps", n, low=1, high=config.num_train_timesteps))
    repeated = _repeated(steps)
    if repeated is not None:
        raise ValueError(
            f"steps must be distinct (one row each), got {repeated} more than once in {list(steps)}"
        )
    model = GaussianMixture.create(MEANS, STDS, config)
    rng = np.random.default_rng(seed)
    x_T = rng.standard_normal((points, 2))
    header = (
        f"DDIM on a 2-D mixture of {len(STDS)} Gaussians (std 0.3, means 4 apart) with its exact "
        f"denoiser; {points} points, {spacing} spacing, float64.\n"
        "sample error: max |x_0 - x_0 at 1000 steps| (first order: ~1/N).\n"
        "round trip: max |sample(invert(x_0)) - x_0|, plain DDIM inversion and exact "
        "(Anderson fixed point); calls: model calls per exact inverse step.\n\n"
        f"{DEMO_COLUMNS[0]:>5}  {DEMO_COLUMNS[1]:>12}  {DEMO_COLUMNS[2]:>10}  "
        f"{DEMO_COLUMNS[3]:>10}  {DEMO_COLUMNS[4]:>10}  {DEMO_COLUMNS[5]:>7}"
    )
    if echo is not None:
        echo(header)
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
        with warnings.catch_warnings():  # the row reports the round trip a shortfall leaves
            warnings.simplefilter("ignore", ToleranceWarning)
            z = invert(model, x_0, config, n, fixed_point_iters=30, tol=1e-9, callback=infos.append)
        exact = np.abs(sample(model, z, config, n) - x_0).max()
        elapsed = time.perf_counter() - start
        calls = np.mean([i.model_calls for i in infos])
        err = float(np.abs(x_0 - reference).max())
        rows.append(
            f"{n:>5}  {err:12.2e}  {plain:10.2e}  {exact:10.2e}  {calls:10.2f}  {elapsed:7.2f}"
        )
        if echo is not None:
            echo(rows[-1])
        for key, value in (("steps", n), ("sample_error", err), ("plain", plain), ("exact", exact)):
            results[key].append(float(value))
        results["samples"][n] = x_0
    return header + "\n" + "\n".join(rows), results


def _repeated(values: Sequence[int]) -> int | None:
    """The first value given a second time, or None."""
    seen: set[int] = set()
    for value in values:
        if value in seen:
            return value
        seen.add(value)
    return None


def plot_demo(results: dict[str, Any], path: str) -> None:
    """Draw the demo's samples (one panel per step count) and its errors against steps.

    Parameters
    ----------
    results : dict
        The second value `demo` returns.
    path : str
        The image file to write (PNG, SVG, PDF: any format matplotlib writes).

    Raises
    ------
    SystemExit
        matplotlib is not installed (the `plot` extra).

    Examples
    --------
    >>> _, results = demo([5, 10], points=20)
    >>> plot_demo(results, "demo.png")  # doctest: +SKIP
    """
    plt = _pyplot()
    samples = results["samples"]
    n = len(samples)
    fig = plt.figure(figsize=(max(3.0 * n, 9.0), 7.5))
    grid = fig.add_gridspec(2, n, height_ratios=(1.0, 1.1))
    colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, max(n, 2)))
    first = None
    for k, (steps, x) in enumerate(samples.items()):
        ax = fig.add_subplot(grid[0, k], sharex=first, sharey=first)
        first = first or ax
        ax.scatter(x[:, 0], x[:, 1], s=3, color=colors[k])
        ax.set(title=f"{steps} steps", xlabel="x[0]", aspect="equal")
        if k == 0:
            ax.set_ylabel("x[1]")
        else:
            ax.tick_params(labelleft=False)
    right = fig.add_subplot(grid[1, :])
    order = np.argsort(results["steps"])  # --steps 20 5 10: lines drawn left to right
    steps = np.asarray(results["steps"])[order]
    error = np.asarray(results["sample_error"])[order]  # 0 at 1000 steps (the reference): not
    error = np.where(error > 0, error, np.nan)  # drawn, where log axes would draw a line down
    right.loglog(steps, error, "o-", label="sampling error vs 1000 steps")
    right.loglog(
        steps, np.asarray(results["plain"])[order], "s-", label="plain inversion round trip"
    )
    exact = np.maximum(np.asarray(results["exact"])[order], 1e-17)
    right.loglog(steps, exact, "^-", label="exact inversion round trip")
    right.set(xlabel="steps N", ylabel="max abs error", title="error against steps")
    right.set_xticks(steps, [str(int(s)) for s in steps])
    right.tick_params(axis="x", which="minor", labelbottom=False)
    right.grid(True, which="major", alpha=0.3)
    right.legend()
    fig.suptitle("ddim-core demo: a 2-D Gaussian mixture sampled with DDIM")
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=120)
    finally:  # a path that cannot be written leaves no open figure behind
        plt.close(fig)


def plot_schedule(config: DDIMConfig, num_inference_steps: int, path: str) -> None:
    """Draw alpha_bar, the SNR (log scale) and the timesteps a plan visits.

    Parameters
    ----------
    config : DDIMConfig
        The schedule and spacing to draw.
    num_inference_steps : int
        N, the number of plan timesteps to mark.
    path : str
        The image file to write.

    Raises
    ------
    ValueError
        `num_inference_steps` outside [1, num_train_timesteps].
    SystemExit
        matplotlib is not installed (the `plot` extra).

    Examples
    --------
    >>> plot_schedule(DDIMConfig(timestep_spacing="trailing"), 20, "schedule.svg")  # doctest: +SKIP
    """
    plan = make_plan(config, num_inference_steps)
    plt = _pyplot()
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
    try:
        fig.savefig(path, dpi=120)
    finally:  # a path that cannot be written leaves no open figure behind
        plt.close(fig)


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("plotting needs matplotlib: pip install 'ddim-core[plot]'") from None
    return plt


def plugins_table() -> str:
    """The `ddim-core plugins` report.

    Each registered plugin with its distribution, the libraries it needs and whether they can
    be imported (found with `importlib.util.find_spec`, never imported) and its hooks; then
    each adapter's host and what it provides, and the plugins blocked by the environment.

    Returns
    -------
    str

    Examples
    --------
    >>> table = plugins_table()
    >>> "numpy: importable" in table, "blocked by DDIM_CORE_BLOCK_PLUGINS" in table
    (True, True)
    """
    from . import hookspecs, plugins

    rows = plugins.describe()
    needs = {
        r["name"]: ", ".join(
            f"{lib}: {'importable' if ok else 'not installed'}" for lib, ok in r["requires"].items()
        )
        or "-"
        for r in rows
    }
    width = max([len(r["name"]) for r in rows] + [6])
    dist_width = max([len(r["distribution"]) for r in rows] + [12])
    needs_width = max([len(v) for v in needs.values()] + [5])
    lines = [
        f"{'plugin':<{width}}  {'distribution':<{dist_width}}  {'needs':<{needs_width}}  hooks"
    ]
    for r in rows:
        hooks = ", ".join(r["hooks"]) or "-"
        lines.append(
            f"{r['name']:<{width}}  {r['distribution']:<{dist_width}}  "
            f"{needs[r['name']]:<{needs_width}}  {hooks}"
        )
    lines.append("\nadapters:")
    used: dict[str, str] = {}  # adapter name -> the plugin whose adapter is used
    for plugin, adapter in plugins.adapter_plugins():
        used.setdefault(adapter.name, plugin)
    for r in rows:
        if r["adapter"] is not None:
            status = "importable" if r["host_importable"] else "not installed"
            provides = ", ".join(r["adapter"].provides)
            name = r["adapter"].name
            command = f"; command: ddim-core {name}" if r["adapter"].command else ""
            if command and name in COMMANDS + DATASET_COMMANDS:  # the built-in runs
                command = f"; command: none ({name!r} is ddim-core's own command)"
            if used.get(name, r["name"]) != r["name"]:  # `plugins.adapters` says so too
                command = f"; not used: plugin {used[name]!r} has an adapter of that name"
            lines.append(
                f"  {r['adapter'].name:<{width}}  host {r['adapter'].host}: {status}; "
                f"provides {provides}{command}"
            )
    # a name no built-in or installed plugin has (a typo, a package's name for its plugin's)
    # blocks nothing here (it may still block one registered by hand later): said
    known = {*plugins.BUILTINS, *(ep.name for ep in entry_points(group=hookspecs.PROJECT))}
    names = [
        n if n in known else f"{n} (no built-in or installed plugin has this name)"
        for n in plugins.blocked()
    ]
    lines.append(f"\nblocked by {plugins.BLOCK_ENV}: {', '.join(names) or 'none'}")
    return "\n".join(lines)


COMMANDS = ("demo", "plot-schedule", "plugins", "check")  # any other names an adapter

# Dataset commands: their arguments are parsed in ddim_core.distributed (imported when used).
DATASET_COMMANDS = ("invert-dataset", "sample-dataset")


def dataset_command(name: str, args: list[str]) -> int:
    """`ddim-core invert-dataset|sample-dataset ...`: parsed and run by
    `ddim_core.distributed.command` (dask.distributed and zarr are imported only then).

    Parameters
    ----------
    name : str
        "invert-dataset" or "sample-dataset".
    args : list of str
        The arguments after it.

    Returns
    -------
    int
        The exit status: 0 when done, 2 after a one-line error.

    Examples
    --------
    >>> dataset_command("invert-dataset", ["--help"])  # doctest: +SKIP
    """
    from .distributed import command

    return command(name, args)


def adapter_command(name: str, args: list[str]) -> int:
    """`ddim-core NAME ARGS...`: the command line of the adapter NAME.

    The command is the adapter's `Adapter.command`, found through the plugins, so the core
    imports no adapter.

    Parameters
    ----------
    name : str
        The adapter's name.
    args : list of str
        The arguments after it.

    Returns
    -------
    int
        The command's exit status; 2 (after one line on stderr) for an unknown name (the
        line names the plugins `DDIM_CORE_BLOCK_PLUGINS` blocks, whose commands are unknown).

    Examples
    --------
    >>> adapter_command("no-such-adapter", [])
    2
    """
    from . import plugins

    commands = {a.name: a for a in plugins.adapters().values() if a.command is not None}
    if name not in commands:
        # a blocked plugin's command is unknown here: said, as the plugin may be the one
        blocked = plugins.blocked()
        hint = f"{plugins.BLOCK_ENV} blocks {', '.join(blocked)}; " if blocked else ""
        print(
            f"ddim-core: error: unknown command {name!r}; commands: "
            f"{', '.join(COMMANDS + DATASET_COMMANDS)}; "
            f"from adapters: {', '.join(sorted(commands)) or 'none'} "
            f"({hint}see `ddim-core plugins`)",
            file=sys.stderr,
        )
        return 2
    return commands[name].run_command(args, prog=f"ddim-core {name}")


def _int_range(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value

    return parse


def _image_path(text: str) -> str:
    folder = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(folder):
        exists = os.path.exists(folder)  # a file: not a folder that "does not exist"
        problem = f"{folder!r} is not a folder" if exists else f"folder {folder!r} does not exist"
        raise argparse.ArgumentTypeError(problem)
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is a folder; give an image file to write")
    if not os.path.splitext(text)[1]:
        raise argparse.ArgumentTypeError(f"{text!r} has no extension (.png, .svg, .pdf, ...)")
    return text


def _parser() -> ArgumentParser:
    from . import __version__

    parser = ArgumentParser(prog="ddim-core", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--version", action="version", version=f"ddim-core {__version__}", help="print the version"
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="one of the commands below"
    )
    p = sub.add_parser(
        "demo",
        help="sample and invert a 2-D Gaussian mixture (NumPy only)",
        description="Sample a 2-D Gaussian mixture with DDIM, then invert the samples plainly "
        "and exactly; one row per step count, printed as it is computed.",
    )
    p.add_argument(
        "--steps",
        type=_int_range(1, 1000),
        nargs="+",
        default=list(DEMO_STEPS),
        metavar="N",
        help="step counts to compare, each in [1, 1000] and given once (default: %(default)s)",
    )
    p.add_argument(
        "--spacing",
        default="trailing",
        choices=TIMESTEP_SPACINGS,
        help="timestep spacing of the plans (default: %(default)s)",
    )
    p.add_argument(
        "--points",
        type=_int_range(1),
        default=300,
        help="number of 2-D points to sample (default: %(default)s)",
    )
    p.add_argument(
        "--seed",
        type=_int_range(0),
        default=0,
        help="seed of the NumPy generator drawing x_T (default: %(default)s)",
    )
    p.add_argument(
        "--plot",
        metavar="FILE.png",
        type=_image_path,
        help="also draw the samples and the errors against steps to this image (needs "
        "matplotlib: pip install 'ddim-core[plot]')",
    )
    q = sub.add_parser(
        "plot-schedule",
        help="draw alpha_bar, the SNR and a plan's timesteps to an image",
        description="Draw alpha_bar, the SNR and the timesteps of a plan to an image. The "
        "schedule comes from --config, or from --beta-schedule, --spacing and --zero-snr "
        "(not both).",
    )
    q.add_argument("output", metavar="FILE.png", type=_image_path, help="the image to write")
    q.add_argument(
        "--config",
        metavar="JSON",
        help="a diffusers scheduler_config.json (or a folder with one) to draw (then "
        "--beta-schedule, --spacing and --zero-snr are not allowed)",
    )
    q.add_argument(
        "--beta-schedule",
        choices=BETA_SCHEDULES,
        help="beta schedule (default: linear)",
    )
    q.add_argument(
        "--spacing", choices=TIMESTEP_SPACINGS, help="timestep spacing (default: leading)"
    )
    q.add_argument(
        "--zero-snr",
        action="store_true",
        default=None,
        help="rescale the betas to zero terminal SNR (with v-prediction)",
    )
    q.add_argument(
        "--steps",
        type=_int_range(1),
        default=50,
        metavar="N",
        help="number of plan timesteps to mark, at most num_train_timesteps (default: %(default)s)",
    )
    parser.commands = {"demo": p, "plot-schedule": q}
    parser.commands["plugins"] = sub.add_parser(
        "plugins",
        help="list plugins, their hooks and whether their libraries can be imported",
        description="List the registered plugins, their hooks, the libraries they need and "
        "whether those can be imported (checked without importing them), and each adapter's "
        "host and command.",
    )
    # Parsed by their own parsers (main hands them their arguments): listed here for --help.
    sub.add_parser("check", help="property-test a scheduler or sampler against exact DDIM")
    sub.add_parser(
        "invert-dataset", help="DDIM-invert every item of a Zarr or .npy array, on dask.distributed"
    )
    sub.add_parser(
        "sample-dataset",
        help="DDIM-sample from every item of a Zarr or .npy array, on dask.distributed",
    )
    for name in _adapter_commands():
        sub.add_parser(name, help=f"the {name} adapter's command (see ddim-core {name} --help)")
    return parser


def _adapter_commands() -> list[str]:
    """The names of the adapters' commands (found through the plugins; nothing imported),
    less those named as ddim-core's own commands (the built-in runs: `_main`)."""
    from . import plugins

    own = COMMANDS + DATASET_COMMANDS
    adapters = plugins.adapters().values()
    return sorted(a.name for a in adapters if a.command is not None and a.name not in own)


def _schedule_config(args: argparse.Namespace, parser: ArgumentParser) -> DDIMConfig:
    """The config of `plot-schedule`: from --config, or from the other options (not both)."""
    if args.config is None:
        zero_snr = bool(args.zero_snr)
        return DDIMConfig(
            beta_schedule=args.beta_schedule or "linear",
            timestep_spacing=args.spacing or "leading",
            rescale_betas_zero_snr=zero_snr,
            prediction_type="v_prediction" if zero_snr else "epsilon",
        )
    given = [
        flag
        for flag, value in (
            ("--beta-schedule", args.beta_schedule),
            ("--spacing", args.spacing),
            ("--zero-snr", args.zero_snr),
        )
        if value is not None
    ]
    if given:
        parser.error(f"argument {given[0]}: not allowed with --config (the config sets it)")
    try:
        return DDIMConfig.from_file(os.fspath(args.config))
    except FileNotFoundError as e:  # without strerror: a folder holding no config (says so)
        parser.error(f"argument --config: {f'no such file: {args.config!r}' if e.strerror else e}")
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        parser.error(f"argument --config: cannot read {args.config!r}: {e}")
    except (TypeError, ValueError) as e:
        parser.error(f"argument --config: {args.config!r}: {e}")


def _need_matplotlib(parser: ArgumentParser, option: str, path: str) -> None:
    """Before any work: matplotlib is installed and writes images of `path`'s extension."""
    if importlib.util.find_spec("matplotlib") is None:
        parser.error(
            f"{option} needs matplotlib, which is not installed: pip install 'ddim-core[plot]'"
        )
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    extension = os.path.splitext(path)[1][1:].lower()
    if extension not in formats:
        parser.error(
            f"argument {option}: matplotlib cannot write {path!r}; use one of {sorted(formats)}"
        )
    # A format listed may still fail (.pgf without a TeX system, text.usetex without LaTeX):
    # a figure with text, written to memory, finds out before the work.
    from matplotlib.figure import Figure

    probe = Figure()
    probe.text(0.5, 0.5, "ddim-core")
    try:
        probe.savefig(io.BytesIO(), format=extension)
    except (RuntimeError, OSError, ValueError) as e:
        parser.error(
            f"argument {option}: matplotlib cannot write {path!r}: {' '.join(str(e).split())}"
        )


def _write_image(parser: ArgumentParser, option: str, path: str, draw: Callable[[], None]) -> None:
    """Run `draw`; a file its folder will not take (read-only, a name too long) is one line."""
    try:
        draw()
    except OSError as e:
        parser.error(f"argument {option}: cannot write {path!r}: {e.strerror or e}")


def _help_or_version(option: str) -> bool:
    """-h, or --help or --version as argparse reads them (a prefix such as --vers too)."""
    return option == "-h" or (
        len(option) > 2 and any(name.startswith(option) for name in ("--help", "--version"))
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `ddim-core` command line.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the program name (default: `sys.argv[1:]`). A first argument
        that is not a built-in command names an adapter's command (`ddim-core comfyui ...`).

    Returns
    -------
    int
        The exit status: 0 on success, 2 for a bad argument (after one line on stderr), 1
        when the reader of stdout went away (`ddim-core plugins | head -1`).

    Examples
    --------
    >>> main(["demo", "--steps", "5", "--points", "10"])  # doctest: +ELLIPSIS
    DDIM on a 2-D mixture ...
    0
    """
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except BrokenPipeError:  # the reader closed the pipe (| head -1): no traceback for that
        _silence_stdout()
        return 1


def _silence_stdout() -> None:
    """Point stdout at the null device: Python flushes it once more at exit, where the
    closed pipe would raise (and print) again."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # replaced (captured): nothing to flush to
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _main(argv: list[str]) -> int:
    if argv and argv[0] == "check":  # the conformance suite (needs Hypothesis): its own parser
        from .testing.conformance import main as check

        return check(argv[1:])
    if argv and argv[0] in DATASET_COMMANDS:
        return dataset_command(argv[0], argv[1:])
    if argv and argv[0] not in COMMANDS and not argv[0].startswith("-"):
        return adapter_command(argv[0], argv[1:])
    parser = _parser()
    if (
        argv
        and all(a[:1] == "-" and a != "--" for a in argv)
        and not any(map(_help_or_version, argv))
    ):
        # options alone: argparse would report the missing COMMAND, not the options it ignored
        parser.error(f"unrecognized arguments: {' '.join(argv)}")
    args, unknown = parser.parse_known_args(argv)
    if argv[0] != args.command:  # options before the command (ddim-core takes none there)
        before = itertools.takewhile(lambda a: a.startswith("-"), argv)
        parser.error(f"unrecognized arguments: {' '.join(before)}")
    sub = parser.commands[args.command]
    if unknown:  # after the command, the command's own: its help lists what it takes
        sub.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command == "plugins":
        print(plugins_table())
    elif args.command == "demo":
        repeated = _repeated(args.steps)
        if repeated is not None:
            sub.error(f"argument --steps: {repeated} given more than once (one row per step count)")
        if args.plot:
            _need_matplotlib(sub, "--plot", args.plot)
        _, results = demo(
            args.steps, args.spacing, args.points, args.seed, echo=lambda s: print(s, flush=True)
        )
        if args.plot:
            _write_image(sub, "--plot", args.plot, lambda: plot_demo(results, args.plot))
            print(f"\nwrote {args.plot}")
    else:
        _need_matplotlib(sub, "FILE.png", args.output)
        config = _schedule_config(args, sub)
        if args.steps > config.num_train_timesteps:
            sub.error(
                f"argument --steps: must be <= num_train_timesteps = "
                f"{config.num_train_timesteps}, got {args.steps}"
            )
        try:
            make_plan(config, args.steps)
        except ValueError as e:  # e.g. a first step at zero SNR with epsilon prediction
            sub.error(f"argument --steps: cannot plan {args.steps} steps of this schedule: {e}")
        output = args.output
        _write_image(sub, "FILE.png", output, lambda: plot_schedule(config, args.steps, output))
        print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
