"""The command line: `ddim-core demo` runs and reports convergence."""

from __future__ import annotations

import subprocess
import sys

from ddim_core import cli


def test_demo_table_converges() -> None:
    text = cli.demo([10, 100], "trailing", 400, 0)
    rows = [line.split() for line in text.splitlines() if line.strip()[:1].isdigit()]
    assert [int(r[0]) for r in rows] == [10, 100]
    std10, std100 = float(rows[0][2]), float(rows[1][2])
    assert abs(std100 - 0.5) < abs(std10 - 0.5)  # DDIM's discretization error shrinks with N
    assert float(rows[1][3]) < float(rows[0][3])  # and so does plain inversion's


def test_module_entry_point() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ddim_core", "demo", "--steps", "5", "--points", "50"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "round trip" in out.stdout
