"""The command line: `ddim-core demo` (table and plot), `plot-schedule`, and the adapters'
commands reached through the plugins (`ddim-core comfyui ...`: tests/test_comfyui_pack.py)."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

from ddim_core import cli, plugins
from ddim_core.hookspecs import Adapter, hookimpl

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_demo_table() -> None:
    table, results = cli.demo([10, 50], points=60)
    rows = [line.split() for line in table.splitlines() if line.strip()[:1].isdigit()]
    assert [int(r[0]) for r in rows] == [10, 50]
    assert results["sample_error"][1] < results["sample_error"][0]
    assert max(results["exact"]) <= 1e-5 < min(results["plain"])


def test_demo_reports_a_short_round_trip_in_its_table_not_a_warning(capfd) -> None:  # type: ignore[no-untyped-def]
    """At 5 steps exact inversion cannot reach the demo's tol: its row says so (the exact
    trip column); the ToleranceWarning the loop issues is not printed above it as well."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, results = cli.demo([5], points=30)
    assert results["exact"][0] > 1e-3
    assert cli.main(["demo", "--steps", "5", "--points", "30"]) == 0
    assert "Warning" not in capfd.readouterr().err


def _valid_png(path) -> bool:
    data = path.read_bytes()
    return data.startswith(PNG_SIGNATURE) and len(data) > 1000


def test_demo_plot(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "demo.png"
    assert cli.main(["demo", "--steps", "5", "10", "--points", "40", "--plot", str(out)]) == 0
    assert _valid_png(out)


def test_plot_schedule(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "schedule.png"
    args = ["plot-schedule", str(out), "--beta-schedule", "scaled_linear", "--zero-snr"]
    assert cli.main([*args, "--spacing", "trailing", "--steps", "20"]) == 0
    assert _valid_png(out)


def test_module_entry_point() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ddim_core", "demo", "--steps", "5", "--points", "30"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "exact trip" in out.stdout


@pytest.mark.parametrize("argv", [["plugins"], ["demo", "--steps", "3", "5", "--points", "5"]])
def test_a_reader_that_stops_early_gets_no_traceback(argv) -> None:  # type: ignore[no-untyped-def]
    """`ddim-core plugins | head -1`: the reader gone, the next write raised BrokenPipeError
    and the command ended with its traceback on stderr."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ddim_core", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader goes before anything is written
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait() == 1
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


@pytest.fixture
def fresh() -> object:
    """A new plugin manager for the test, and another one after it."""
    plugins.manager.cache_clear()
    yield plugins.manager()
    plugins.manager.cache_clear()


def test_an_adapters_command_is_reached_through_the_plugins(fresh, capsys) -> None:  # type: ignore[no-untyped-def]
    """`ddim-core NAME ARGS...` runs the command of the adapter NAME: the core names no
    adapter package, it finds the command as a plugin's `Adapter.command`."""
    calls = []

    def command(args: list[str], prog: str) -> int:
        calls.append((args, prog))
        return 3

    class Plugin:
        @hookimpl
        def ddim_core_adapter(self) -> Adapter:
            return Adapter("fake", "json", ("fake.x",), lambda: None, command=command)

    fresh.register(Plugin(), name="fake")
    assert cli.main(["fake", "install", "--flag", "DIR"]) == 3
    assert calls == [(["install", "--flag", "DIR"], "ddim-core fake")]
    assert cli.main(["plugins"]) == 0
    assert "provides fake.x; command: ddim-core fake" in capsys.readouterr().out
    assert cli.main(["nope", "x"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'nope'" in err and "fake" in err and len(calls) == 1


@pytest.fixture
def comfyui_blocked(monkeypatch) -> object:  # type: ignore[no-untyped-def]
    """A plugin manager built with DDIM_CORE_BLOCK_PLUGINS=comfyui, and a new one after it."""
    monkeypatch.setenv(plugins.BLOCK_ENV, "comfyui")
    plugins.manager.cache_clear()
    yield plugins.manager()
    plugins.manager.cache_clear()


def test_the_command_of_a_blocked_plugin_is_said_to_be_blocked(comfyui_blocked, capsys) -> None:  # type: ignore[no-untyped-def]
    """With DDIM_CORE_BLOCK_PLUGINS=comfyui (keeping ComfyUI's nodes off), `ddim-core comfyui
    uninstall DIR` said only "unknown command 'comfyui' ... from adapters: none", not why."""
    assert cli.main(["comfyui", "uninstall", "ComfyUI"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "unknown command 'comfyui'" in err[0], err
    assert "(DDIM_CORE_BLOCK_PLUGINS blocks comfyui; see `ddim-core plugins`)" in err[0], err


@pytest.mark.parametrize("name", ["plugins", "demo", "invert-dataset"])
def test_an_adapters_command_named_as_a_built_in_one_breaks_nothing(fresh, capsys, name) -> None:  # type: ignore[no-untyped-def]
    """A third party's Adapter with a command, named as one of ddim-core's own commands
    ("plugins", "demo", "invert-dataset"): building the parser added a second subcommand of
    that name, so `ddim-core plugins` (where an author looks to see what went wrong), `ddim-core
    --help` and `ddim-core demo` all ended in argparse's traceback 'ArgumentError: argument
    COMMAND: conflicting subparser: plugins'. The built-in command runs (as the dispatch
    already chose), and `ddim-core plugins` says the adapter's command cannot be reached."""

    class Plugin:
        @hookimpl
        def ddim_core_adapter(self) -> Adapter:
            return Adapter(name, "json", ("x",), lambda: None, command=lambda a, p: 7)

    fresh.register(Plugin(), name="clash")
    assert cli.main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert f"command: none ({name!r} is ddim-core's own command)" in out
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0 and "plugins" in capsys.readouterr().out
    assert name not in cli._adapter_commands()


def test_an_adapter_named_as_another_plugins_is_reported_and_shown_unused(fresh, capsys) -> None:  # type: ignore[no-untyped-def]
    """A third party's Adapter named "diffusers" (a fork of the built-in one) with a command:
    plugins.adapters() kept the built-in's without a word, so register_adapters("diffusers")
    ran the built-in, `ddim-core diffusers` said 'unknown command', and `ddim-core plugins`
    listed the fork's line as 'command: ddim-core diffusers'. The first registered adapter of
    a name is used (a built-in before a third party's, as for entry-point names); another of
    that name is reported with a PluginWarning, and the listing says it is not used."""

    class Fork:
        @hookimpl
        def ddim_core_adapter(self) -> Adapter:
            return Adapter("diffusers", "json", ("fork",), lambda: None, lambda a, p: 5)

    fresh.register(Fork(), name="fork")
    left_out = "plugin 'fork': its adapter 'diffusers' is left out, plugin 'diffusers'"
    with pytest.warns(plugins.PluginWarning, match=left_out):
        assert plugins.adapters()["diffusers"].host == "diffusers"
    with pytest.warns(plugins.PluginWarning, match="adapter 'diffusers'"):
        assert cli.main(["plugins"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "provides fork" in x)
    assert "command: ddim-core diffusers" not in line and "not used" in line, line


def test_an_adapters_command_returning_nothing_succeeds_and_a_non_status_is_named(fresh) -> None:  # type: ignore[no-untyped-def]
    """An adapter's command that returned None after running (a `main(argv)` with no return,
    which `sys.exit` takes for 0) made `ddim-core NAME` end in int()'s TypeError ("int()
    argument must be ... not 'NoneType'"), naming no adapter; None is now status 0, as for
    sys.exit, and another answer a TypeError naming the adapter and what it returned."""
    answers = [None, "done", 2.5]

    class Plugin:
        @hookimpl
        def ddim_core_adapter(self) -> Adapter:
            return Adapter("fake", "json", (), lambda: None, command=lambda a, p: answers[0])

    fresh.register(Plugin(), name="fake")
    assert cli.main(["fake", "x"]) == 0
    for answer in answers[1:]:
        answers[0] = answer
        message = f"adapter 'fake': command returned {type(answer).__name__} "
        with pytest.raises(TypeError, match=message):
            cli.main(["fake", "x"])


# --- bad arguments, --version, help, plots, plugins ------------------------------------------

BAD = [
    (["demo", "--steps", "0"], "argument --steps"),
    (["demo", "--steps", "x"], "argument --steps"),
    (["demo", "--steps", "5", "10", "5"], "argument --steps: 5 given more than once"),
    (["demo", "--points", "0"], "argument --points"),
    (["demo", "--seed", "-1"], "argument --seed"),
    (["demo", "--plot", "out.nosuchformat"], "argument --plot"),
    (["demo", "--plot", "/no/such/folder/out.png"], "argument --plot"),
    (["plot-schedule", "out.png", "--beta-schedule", "cosine"], "argument --beta-schedule"),
    (["plot-schedule", "out.png", "--config", "missing.json"], "argument --config"),
    (["plot-schedule", "out.png", "--steps", "5000"], "argument --steps"),
    (["plot-schedule", "out"], "argument FILE.png"),
    (["demo", "--bogus"], "--bogus"),
    ([], "COMMAND"),
    (["--bogus"], "unrecognized arguments: --bogus"),  # not "required: COMMAND"
    # the commands with parsers of their own: one line too, not argparse's usage block
    (["check"], "TARGET"),
    (["check", "x:y", "--kind", "nope"], "argument --kind"),
    (["invert-dataset", "x.npy", "z.zarr", "--steps", "abc"], "argument --steps"),
    (["sample-dataset", "x.npy", "z.zarr"], "--steps"),
    (["invert-dataset", "x.npy", "z.zarr", "--steps", "5", "--config", "missing.json"], "--config"),
    (["sample-dataset", "x.npy", "z.zarr", "--steps", "5", "--config", "."], "--config"),
]


@pytest.mark.parametrize("argv,names", BAD, ids=[" ".join(a) or "nothing" for a, _ in BAD])
def test_a_bad_argument_is_one_line_naming_it(argv, names, tmp_path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    out = capsys.readouterr()
    assert out.out == ""
    lines = out.err.splitlines()
    assert len(lines) == 1 and names in lines[0] and "error:" in lines[0]


@pytest.mark.parametrize(
    "argv,prog",
    [
        (["demo", "--stepss", "5"], "ddim-core demo"),
        (["plot-schedule", "a.png", "b.png"], "ddim-core plot-schedule"),
        (["plugins", "extra"], "ddim-core plugins"),
        (["--bogus", "plugins"], "ddim-core"),  # before the command: ddim-core's own
        # before a command with a parser of its own (a KeyError traceback before)
        (["-v", "check", "diffusers:DDIMScheduler"], "ddim-core"),
        (["-v", "comfyui", "install", "ComfyUI"], "ddim-core"),
        (["-v", "invert-dataset", "x.npy", "z.zarr"], "ddim-core"),
    ],
)
def test_an_unrecognized_argument_points_to_the_help_that_lists_the_options(
    argv, prog, capsys
) -> None:  # type: ignore[no-untyped-def]
    """`ddim-core demo --stepss 5` said 'ddim-core: error: unrecognized arguments: --stepss 5
    (see ddim-core --help)', whose help lists the commands, not demo's options: every other
    bad argument of a command is reported under the command's name."""
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    err = capsys.readouterr().err.splitlines()
    assert exit_.value.code == 2 and len(err) == 1, err
    assert err[0].startswith(f"{prog}: error: unrecognized arguments: "), err
    assert err[0].endswith(f"(see {prog} --help)"), err
    if argv[0] == "-v":  # only the options before the command, not the command's arguments
        assert err[0] == f"{prog}: error: unrecognized arguments: -v (see {prog} --help)", err


def test_a_config_that_cannot_be_read_or_conflicts(tmp_path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "wrong.json").write_text('{"beta_schedule": "cosine"}')
    (tmp_path / "good.json").write_text('{"beta_schedule": "scaled_linear"}')
    (tmp_path / "empty").mkdir()
    cases = [
        (["--config", "bad.json"], "argument --config: 'bad.json': bad.json is not valid JSON"),
        (["--config", "wrong.json"], "argument --config:"),
        (["--config", "good.json", "--spacing", "trailing"], "argument --spacing: not allowed"),
        (["--config", "good.json", "--zero-snr"], "argument --zero-snr: not allowed"),
        (["--config", "missing.json"], "argument --config: no such file: 'missing.json'"),
        # a folder that exists: not 'no such file', but which files it lacks
        (["--config", "empty"], "empty is a folder without a scheduler config: neither"),
    ]
    for extra, message in cases:
        with pytest.raises(SystemExit) as exit_:
            cli.main(["plot-schedule", "out.png", *extra])
        err = capsys.readouterr().err.splitlines()
        assert exit_.value.code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out.png").exists()
    assert cli.main(["plot-schedule", "out.png", "--config", "good.json"]) == 0


def test_the_command_line_prints_no_traceback_for_bad_arguments() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ddim_core", "demo", "--steps", "0"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        # a folder where the image would go
        ("d.png", "'d.png' is a folder"),
        # under a file that exists: it said "folder '.../notes.txt' does not exist"
        ("notes.txt/a.png", "'{tmp}/notes.txt' is not a folder"),
    ],
)
def test_an_image_path_that_cannot_be_written_is_refused_up_front(  # type: ignore[no-untyped-def]
    tmp_path, monkeypatch, capsys, path, problem
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.png").mkdir()
    (tmp_path / "notes.txt").write_text("")
    for argv, option in (
        (["demo", "--steps", "2", "--plot", path], "argument --plot"),
        (["plot-schedule", path], "argument FILE.png"),
    ):
        with pytest.raises(SystemExit) as exit_:
            cli.main(argv)
        out = capsys.readouterr()
        assert exit_.value.code == 2 and out.out == "" and out.err.count("\n") == 1
        assert f"{option}: {problem.format(tmp=tmp_path)}" in out.err, out.err


def test_help_lists_every_command(capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    listed = {line.split()[0] for line in lines if line.startswith(" " * 4) and line.strip()}
    assert listed >= {*cli.COMMANDS, *cli.DATASET_COMMANDS, "comfyui"}


def test_version(capsys) -> None:  # type: ignore[no-untyped-def]
    import ddim_core

    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"ddim-core {ddim_core.__version__}"


def test_every_option_has_help_text() -> None:
    parser = cli._parser()
    for name, sub in parser.commands.items():
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, f"ddim-core {name} {action.option_strings or action.dest}"
    for action in parser._actions:
        assert action.help, action.option_strings


@pytest.mark.parametrize("command", ["check", "invert-dataset", "sample-dataset", "comfyui"])
def test_every_option_of_a_delegated_command_has_help_text(monkeypatch, command: str) -> None:  # type: ignore[no-untyped-def]
    """The commands that parse their own arguments (`check`, the dataset commands, the
    adapters') were outside the test above: `ddim-core check --help` listed `--format` and the
    dataset commands SOURCE and TARGET with no text (README: every option has help text)."""
    from ddim_core import _arguments

    if command == "check":
        pytest.importorskip("hypothesis")
    parsers = []

    def capture(self, args=None, namespace=None):  # type: ignore[no-untyped-def]
        parsers.append(self)
        raise SystemExit(0)

    monkeypatch.setattr(_arguments.ArgumentParser, "parse_args", capture)
    with pytest.raises(SystemExit):
        cli.main([command])
    (parser,) = parsers
    for action in parser._actions:
        if action.dest != "help":
            assert action.help, f"ddim-core {command} {action.option_strings or action.dest}"


def test_plot_checks_matplotlib_before_computing(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    real = cli.importlib.util.find_spec
    monkeypatch.setattr(
        cli.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "matplotlib" else real(name, *a),
    )
    monkeypatch.setattr(cli, "demo", lambda *a, **k: pytest.fail("computed before checking"))
    with pytest.raises(SystemExit) as exit_:
        cli.main(["demo", "--plot", "out.png"])
    assert exit_.value.code == 2
    assert "needs matplotlib" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["demo", "plot-schedule"])
def test_an_image_format_matplotlib_cannot_write_here_is_found_before_computing(
    command, tmp_path, monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    """`ddim-core demo --plot demo.pgf` (a format matplotlib lists) on a machine without TeX
    computed the whole demo, then ended in a traceback from matplotlib's pgf backend:
    RuntimeError: 'xelatex' not found; plot-schedule the same."""
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))  # no TeX system to be found
    monkeypatch.setattr(cli, "demo", lambda *a, **k: pytest.fail("computed before checking"))
    monkeypatch.setattr(cli, "make_plan", lambda *a, **k: pytest.fail("planned before checking"))
    option = {"demo": "--plot", "plot-schedule": "FILE.png"}[command]
    argv = ["demo", "--plot", "out.pgf"] if command == "demo" else ["plot-schedule", "out.pgf"]
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1, err
    assert f"argument {option}: matplotlib cannot write 'out.pgf': " in err
    assert "latex" in err and not (tmp_path / "out.pgf").exists()


def test_the_plot_leaves_out_the_reference_s_zero_sampling_error(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """`ddim-core demo --steps 500 1000 --plot demo.png`: the 1000-step row's sampling error is
    0 (it is the reference), which the log axes drew as a line plunging to the axis' floor just
    right of the 500-step point, as if the error vanished there."""
    figure = pytest.importorskip("matplotlib.figure")
    drawn = []
    monkeypatch.setattr(figure.Figure, "savefig", lambda fig, *a, **k: drawn.append(fig))
    _, results = cli.demo([500, 1000], points=3)
    assert results["sample_error"][1] == 0.0
    cli.plot_demo(results, "demo.png")
    (line,) = [
        line
        for ax in drawn[0].axes
        for line in ax.get_lines()
        if line.get_label() == "sampling error vs 1000 steps"
    ]
    y = np.asarray(line.get_ydata(), dtype=float)
    assert y[0] == results["sample_error"][0] and np.isnan(y[1]), y


def test_the_plot_draws_its_lines_in_order_of_steps(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """`ddim-core demo --steps 20 5 10 --plot demo.png` drew each line of "error against
    steps" through the points in the order given (20, 5, 10), zigzagging back and forth across
    the log axis; each point stays its step count's."""
    figure = pytest.importorskip("matplotlib.figure")
    drawn = []
    monkeypatch.setattr(figure.Figure, "savefig", lambda fig, *a, **k: drawn.append(fig))
    _, results = cli.demo([20, 5, 10], points=3)
    cli.plot_demo(results, "demo.png")
    lines = {line.get_label(): line for ax in drawn[0].axes for line in ax.get_lines()}
    expected = {
        "sampling error vs 1000 steps": results["sample_error"],
        "plain inversion round trip": results["plain"],
        "exact inversion round trip": np.maximum(results["exact"], 1e-17),
    }
    for label, values in expected.items():
        x, y = (np.asarray(v, dtype=float) for v in lines[label].get_data())
        assert list(x) == [5.0, 10.0, 20.0], (label, x)
        assert list(y) == [values[1], values[2], values[0]], (label, y)


def test_demo_prints_each_row_as_it_is_computed() -> None:
    lines: list[str] = []
    cli.demo([5, 10], points=20, echo=lines.append)
    assert lines[0].startswith("DDIM on a 2-D mixture")
    assert [line.split()[0] for line in lines[1:]] == ["5", "10"]


def test_plugins_show_whether_their_libraries_import(fresh, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    imported = set(sys.modules)

    class Plugin:
        requires = ("no_such_library_here",)

        @hookimpl
        def ddim_core_step_kernel(self, sample):  # type: ignore[no-untyped-def]
            return None

    fresh.register(Plugin(), name="needs-missing")
    assert cli.main(["plugins"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("needs-missing"))
    assert "no_such_library_here: not installed" in row
    assert "numpy: importable" in out
    for name in ("cupy", "jax", "torch", "numba"):  # checked, never imported
        if name not in imported:
            assert name not in sys.modules


def test_an_image_that_cannot_be_written_is_one_line(tmp_path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    """An image path whose folder exists but which cannot be written (here a name longer than
    the file system allows) ended in a traceback from PIL's open, exit status 1, and left the
    figure open in pyplot."""
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    name = "a" * 300 + ".png"
    for argv, option in (
        (["demo", "--steps", "2", "--points", "3", "--plot", name], "argument --plot"),
        (["plot-schedule", name], "argument FILE.png"),
    ):
        with pytest.raises(SystemExit) as exit_:
            cli.main(argv)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.count("\n") == 1, err
        assert f"{option}: cannot write {name!r}" in err
    import matplotlib.pyplot as plt

    assert plt.get_fignums() == []  # plot_demo and plot_schedule closed their figures


def test_demo_checks_points_and_seed_before_any_work(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """demo(points=0) failed after the 1000-step reference with NumPy's 'zero-size array to
    reduction operation maximum', points=-1 or 2.5 and seed=-1 with NumPy's own errors."""
    monkeypatch.setattr(cli, "sample", lambda *a, **k: pytest.fail("computed before checking"))
    for kw, error, message in (
        ({"points": 0}, ValueError, "points must be >= 1, got 0"),
        ({"points": 2.5}, TypeError, r"points must be an integer, got 2\.5"),
        ({"seed": -1}, ValueError, "seed must be >= 0, got -1"),
    ):
        with pytest.raises(error, match=message):
            cli.demo([2], **kw)


def test_demo_refuses_a_step_count_given_twice(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """`ddim-core demo --steps 5 5` printed the same row twice, and demo([5, 5]) returned one
    sample set for two rows (results["samples"] is keyed by step count)."""
    monkeypatch.setattr(cli, "sample", lambda *a, **k: pytest.fail("computed before checking"))
    with pytest.raises(ValueError, match=r"steps must be distinct .* got 5 more than once"):
        cli.demo([5, 10, 5])


def test_demo_takes_steps_once_and_refuses_none(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """demo(steps) read `steps` twice: an iterator (a generator of step counts) was used up by
    the checks and gave a table with no rows, silently; steps=[] computed the 1000-step
    reference for an empty table (plot_demo then failed inside matplotlib), and steps=5 was
    "'int' object is not iterable"."""
    _, results = cli.demo(iter([2, 3]), points=5)
    assert results["steps"] == [2.0, 3.0] and list(results["samples"]) == [2, 3]
    monkeypatch.setattr(cli, "sample", lambda *a, **k: pytest.fail("computed before checking"))
    with pytest.raises(ValueError, match=r"steps must name at least one step count, got \[\]"):
        cli.demo([])
    with pytest.raises(TypeError, match="steps must be a sequence of step counts, got int"):
        cli.demo(5)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"steps": [10, 0]}, ValueError, r"steps must be in \[1, 1000\], got 0"),
        ({"steps": [1001]}, ValueError, r"steps must be in \[1, 1000\], got 1001"),
        ({"steps": [2.0]}, TypeError, r"steps must be an integer, got 2\.0"),
        ({"steps": "10"}, TypeError, "steps must be a sequence of step counts, got str"),
        ({"spacing": "Trailing"}, ValueError, r"spacing must be one of \('leading', .*'Trailing'"),
        ({"spacing": None}, TypeError, r"spacing must be one of \('leading', .*None"),
    ],
)
def test_demo_names_its_own_arguments(monkeypatch, kwargs, error, message) -> None:  # type: ignore[no-untyped-def]
    """demo(steps=[0]) said 'num_inference_steps must be in [1, 1000], got 0' and
    demo(spacing="Trailing") 'timestep_spacing=...', the names of make_plan's and DDIMConfig's
    arguments, not demo's; steps="10" was 'num_inference_steps must be an integer, got '1''."""
    monkeypatch.setattr(cli, "sample", lambda *a, **k: pytest.fail("computed before checking"))
    with pytest.raises(error, match=f"^{message}"):
        cli.demo(**{"steps": [5], **kwargs})


def test_the_command_line_page_names_every_command() -> None:
    # docs/cli.md is where a user looks a command up: each one `ddim-core --help` lists
    from pathlib import Path

    page = (Path(__file__).resolve().parent.parent / "docs" / "cli.md").read_text("utf-8")
    commands = (*cli.COMMANDS, *cli.DATASET_COMMANDS, *cli._adapter_commands())
    assert [name for name in commands if f"ddim-core {name}" not in page] == []


def test_the_readme_quotes_the_line_a_bad_argument_prints(capsys) -> None:  # type: ignore[no-untyped-def]
    """README quoted `ddim-core demo --steps 0`'s error without the "(see ddim-core demo
    --help)" that ends the line the command prints."""
    from pathlib import Path

    readme = " ".join((Path(__file__).parent.parent / "README.md").read_text().split())
    quoted = readme.split("(`ddim-core demo --steps 0`: `", 1)[1].split("`)", 1)[0]
    with pytest.raises(SystemExit) as exit_:
        cli.main(["demo", "--steps", "0"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == quoted
