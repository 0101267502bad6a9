"""The command line: `ddim-core demo` (table and plot), `plot-schedule`, and the adapters'
commands reached through the plugins (`ddim-core comfyui ...`: tests/test_comfyui_pack.py)."""

from __future__ import annotations

import subprocess
import sys

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
