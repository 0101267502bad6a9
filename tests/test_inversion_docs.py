"""The examples of docs/inversion-methods.md run as written (each block on its own), and print
what the page says they print."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

PAGE = Path(__file__).parent.parent / "docs" / "inversion-methods.md"


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), re.S)


def run(block: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, str(PAGE), "exec"), {})
    return out.getvalue()


def test_every_example_runs_and_prints_what_the_page_says() -> None:
    found = blocks()
    assert len(found) == 4
    outputs = [run(block) for block in found]
    plain = float(outputs[0].split()[-1])
    assert 0.05 < plain < 0.2  # "~0.1"
    exact, calls = outputs[1].splitlines()
    assert float(exact.split()[-1]) <= 2e-6 and calls == "[3, 3, 3]"
    bdia, edict = outputs[2].splitlines()
    assert float(bdia.split()[-1]) == 0.0 and edict.endswith("0.0 float32")
    assert outputs[3].strip() == "(800, 632, 483, 355, 246, 158, 88, 39, 9, 0)"
