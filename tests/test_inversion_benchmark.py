"""The inversion benchmark runs (smoke mode: a few cases), so it never rots; its targets are
decided from the rows. Timings are reported, never asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
ROOT = Path(__file__).parent.parent


def test_smoke_run_writes_the_table_and_decides_targets(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "benchmarks.inversion", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    data = json.loads((tmp_path / "inversion.json").read_text())
    assert data["meta"]["smoke"] is True
    methods = {r["method"] for r in data["rows"]}
    assert {"plain DDIM inversion", "Anderson 0.1 (k=20, tol)", "exact k=1", "BDIA"} <= methods
    for r in data["rows"]:
        assert r["finite"] and r["calls_per_step"] >= 1 and r["ms"] > 0
    exact = [r for r in data["rows"] if r["method"] == "exact k=1" and r["data"] == "samples"]
    assert exact and all(r["calls_per_step"] == 2 for r in exact)
    table = (tmp_path / "inversion.md").read_text()
    assert "| exact k=1 | 3 | 20 |" in table and "## Targets" in table


def test_committed_results_hold_the_full_grid() -> None:
    data = json.loads((ROOT / "benchmarks" / "results" / "inversion.json").read_text())
    rows = data["rows"]
    assert {r["dtype"] for r in rows} == {"float64", "float32", "float16", "bfloat16"}
    assert {r["guidance"] for r in rows} == {1.0, 3.0, 7.5}
    assert {r["steps"] for r in rows} == {10, 20, 50}
    assert all(r["finite"] for r in rows)


def test_readme_table_is_the_committed_results() -> None:
    """The README's table (after `<!-- figures: inversion -->`) is benchmarks/results'
    summary, as `python -m benchmarks.inversion` writes it."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.inversion import summary

    data = json.loads((ROOT / "benchmarks" / "results" / "inversion.json").read_text())
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- figures: inversion -->\n", 1)[1].split("\n\n", 1)[0]
    assert block == "\n".join(summary(data["rows"]))
