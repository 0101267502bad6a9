"""The `ddim-core check` reports in docs/testing.md: `python tests/docs_reports.py` runs the
check on each target and writes its Markdown report between the page's markers;
tests/test_conformance.py checks that the page holds what the check prints now.

A report sits between `<!-- ddim-core check TARGET -->` and `<!-- end of report -->`.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "docs" / "testing.md"
TARGETS = (
    "diffusers:DDIMScheduler",
    "diffusers:DDIMInverseScheduler",
    "ddim_diffusers:DDIMScheduler",
    "ddim_diffusers:DDIMInverseScheduler",
)
_BLOCK = re.compile(r"(<!-- ddim-core check (\S+) -->)(.*?)(<!-- end of report -->)", re.S)


def blocks(text: str) -> dict[str, str]:
    """The reports in the page's text, by target."""
    return {m.group(2): m.group(3).strip() for m in _BLOCK.finditer(text)}


def report(target: str) -> str:
    """What `ddim-core check TARGET --format markdown` prints."""
    from ddim_core.testing.conformance import check

    return check(target).text("markdown")


def update(path: Path = PAGE) -> list[str]:
    """Rewrite every report in the page with the check's output now; the targets written."""
    text = path.read_text(encoding="utf-8")
    done = []

    def fill(match: re.Match[str]) -> str:
        done.append(match.group(2))
        return f"{match.group(1)}\n\n{report(match.group(2))}\n\n{match.group(4)}"

    path.write_text(_BLOCK.sub(fill, text), encoding="utf-8")
    return done


if __name__ == "__main__":
    written = update(Path(sys.argv[1]) if len(sys.argv) > 1 else PAGE)
    print(f"wrote the reports of {', '.join(written)}")
