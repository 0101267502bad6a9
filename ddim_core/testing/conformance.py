"""`ddim-core check TARGET`: the conformance suite against exact DDIM, and its report.

    $ ddim-core check diffusers:DDIMScheduler
    $ ddim-core check my_package.schedulers:MyDDIM --format markdown

TARGET is `module:attr`: a diffusers-style scheduler class, a diffusers-style inverse
scheduler class, or a k-diffusion-style sampler function (see `targets`). Each area is a
property run over bounded, derandomized Hypothesis examples (the same every run) or an
exhaustive sweep; the report gives its verdict (pass, FAIL, unsupported, n/a) and the first
counterexample, shrunk. Exit status 0 when no area fails, 1 when one does, 2 for a TARGET
that cannot be loaded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .backends import Unavailable
from .findings import FAIL, UNSUPPORTED, Finding
from .targets import KINDS, Crash, Sampler, Scheduler, Unsupported, load, wrap

AREAS = (
    "timesteps",
    "previous timestep",
    "step values: epsilon",
    "step values: sample",
    "step values: v_prediction",
    "clipping and thresholding",
    "eta noise",
    "inverse mirror",
    "dtypes",
    "NaN/Inf",
    "per-sample timesteps",
    "out= buffers",
    "host syncs",
    "thread safety",
)


@dataclasses.dataclass(frozen=True)
class Report:
    """The findings of one target, in area order.

    Attributes
    ----------
    target : str
        The TARGET as given ("module:attr"), or the target's name when given as an object.
    name : str
        The target's qualified name.
    kind : str
        "scheduler", "inverse scheduler", "sampler" or "inverse sampler".
    backend : str
        The name of the backend whose arrays the target was given.
    findings : tuple of Finding
        One per area checked, in AREAS order.
    seconds : float
        How long the areas took.

    Examples
    --------
    >>> report = Report(
    ...     "my_package:MyDDIM", "my_package.MyDDIM", "scheduler", "numpy",
    ...     (Finding("timesteps", "pass", "30 configs"),
    ...      Finding("eta noise", FAIL, "the variance differs at t=999")),
    ...     seconds=1.5,
    ... )
    >>> report.conformant
    False
    >>> print(report.table())
    area       verdict  first counterexample (shrunk)
    timesteps  pass     30 configs
    eta noise  FAIL     the variance differs at t=999
    """

    target: str
    name: str
    kind: str
    backend: str
    findings: tuple[Finding, ...]
    seconds: float

    @property
    def conformant(self) -> bool:
        """Whether no area fails (unsupported and n/a areas do not count against it)."""
        return not any(f.verdict == FAIL for f in self.findings)

    def table(self, width: int = 100) -> str:
        """The findings as a plain-text table, details wrapped under their column.

        Parameters
        ----------
        width : int, optional
            The line width details are wrapped to (at least 30 characters are left for the
            detail column). Default 100.

        Returns
        -------
        str
            A header line and one row per finding: area, verdict, detail.
        """
        area_w = max(len(f.area) for f in self.findings)
        verdict_w = max(len("verdict"), *(len(f.verdict) for f in self.findings))
        indent = area_w + verdict_w + 4
        lines = [f"{'area':<{area_w}}  {'verdict':<{verdict_w}}  first counterexample (shrunk)"]
        for f in self.findings:
            wrapped = textwrap.wrap(f.detail, max(width - indent, 30)) or [""]
            lines.append(f"{f.area:<{area_w}}  {f.verdict:<{verdict_w}}  {wrapped[0]}".rstrip())
            lines.extend(" " * indent + rest for rest in wrapped[1:])
        return "\n".join(lines)

    def markdown(self) -> str:
        """The findings as a Markdown table.

        Returns
        -------
        str
            A header and one row per finding, FAIL verdicts in bold, "|" in details escaped.
        """
        rows = ["| area | verdict | first counterexample (shrunk) |", "| --- | --- | --- |"]
        for f in self.findings:
            detail = f.detail.replace("|", "\\|")
            verdict = f"**{f.verdict}**" if f.verdict == FAIL else f.verdict
            rows.append(f"| {f.area} | {verdict} | {detail} |")
        return "\n".join(rows)

    def summary(self) -> str:
        """The report's last line: conformant or not, and which areas fail.

        Returns
        -------
        str
            "conformant: yes (no area fails)", or "conformant: no (N areas fail: ...)" ("1
            area fails: ..." for one).
        """
        failed = [f.area for f in self.findings if f.verdict == FAIL]
        if not failed:
            return "conformant: yes (no area fails)"
        count = "1 area fails" if len(failed) == 1 else f"{len(failed)} areas fail"
        return f"conformant: no ({count}: {', '.join(failed)})"

    def text(self, fmt: str = "text") -> str:
        """The whole report, as `ddim-core check` prints it: the target, the table, the summary.

        Parameters
        ----------
        fmt : str, optional
            "markdown" for a Markdown table; anything else ("text", the default) for a
            plain-text one.

        Returns
        -------
        str
            The report.
        """
        head = (
            f"ddim-core check {self.target}\n"
            f"target: {self.name} ({self.kind}, {self.backend} arrays)"
        )
        if fmt == "markdown":
            head = (
                f"`ddim-core check {self.target}`: {self.name} ({self.kind}, {self.backend} arrays)"
            )
            return f"{head}\n\n{self.markdown()}\n\n{self.summary()}"
        return f"{head}\n\n{self.table()}\n\n{self.summary()}"


def check(
    target: Any,
    *,
    kind: str | None = None,
    backend: str | None = None,
    areas: Sequence[str] | None = None,
) -> Report:
    """Run the conformance suite against `target` ("module:attr", or the class or function
    itself); `areas`: only those (names from AREAS).

    Parameters
    ----------
    target : str or class or callable
        A diffusers-style scheduler class, inverse scheduler class or k-diffusion-style
        sampler, or "module:attr" naming one.
    kind : str, optional
        What the target is, when it cannot be guessed.
    backend : str, optional
        The name of the backend (in BACKENDS) to run on.
    areas : sequence of str, optional
        Only these areas (names from AREAS); all by default.

    Returns
    -------
    Report
        One finding per area: pass, fail (with why) or unsupported.

    Raises
    ------
    ValueError
        If an area is not in AREAS.

    Examples
    --------
    >>> report = check("ddim_core.testing.reference:ReferenceScheduler", areas=["timesteps"])
    >>> [(f.area, f.verdict) for f in report.findings]
    [('timesteps', 'pass')]
    """
    from . import areas as scheduler_areas
    from . import sampler_areas

    unknown = sorted(set(areas or ()) - set(AREAS))
    if unknown:
        raise ValueError(f"unknown areas {unknown}; areas: {', '.join(AREAS)}")
    obj = load(target) if isinstance(target, str) else target
    wrapped = wrap(obj, kind, backend)
    start = time.perf_counter()
    if isinstance(wrapped, Scheduler):
        runs = scheduler_areas.all_areas(wrapped)
        kind_name = "inverse scheduler" if wrapped.inverse else "scheduler"
    else:
        assert isinstance(wrapped, Sampler)
        runs = sampler_areas.all_areas(wrapped)
        kind_name = "inverse sampler" if wrapped.inverse else "sampler"
    findings = tuple(
        _run_area(name, run)
        for name, run in zip(AREAS, runs, strict=True)
        if name in (areas or AREAS)
    )
    spec = target if isinstance(target, str) else wrapped.name
    return Report(
        spec, wrapped.name, kind_name, wrapped.backend.name, findings, time.perf_counter() - start
    )


def _run_area(area: str, run: Callable[[], Finding]) -> Finding:
    """The area's finding; a target that raises where it must not or returns no array of its
    input's shape (Crash), or a counterexample found outside a Hypothesis search
    (Divergence), fails the area with its message; a backend that cannot make the area's
    arrays (JAX without x64: no float64) leaves it unsupported."""
    from .suite import Divergence  # Hypothesis: imported once the check runs

    try:
        return run()
    except (Crash, Divergence) as e:
        return Finding(area, FAIL, str(e))
    except (Unsupported, Unavailable) as e:
        return Finding(area, UNSUPPORTED, str(e))


@contextlib.contextmanager
def _scratch_hypothesis_home() -> Iterator[None]:
    """Hypothesis caches the constants of local modules under its home directory,
    `.hypothesis/` in the current directory unless told otherwise: the command keeps it in a
    temporary directory, so that it writes nothing where it is run."""
    from hypothesis import configuration

    with tempfile.TemporaryDirectory(prefix="ddim-core-check-") as home:
        configuration.set_hypothesis_home_dir(home)
        try:
            yield
        finally:  # back to HYPOTHESIS_STORAGE_DIRECTORY or the default
            configuration.set_hypothesis_home_dir(None)


def main(argv: Sequence[str] | None = None, prog: str = "ddim-core check") -> int:
    """The command line of `ddim-core check`: run the suite on TARGET and print the report.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments (TARGET, --kind, --backend, --format, --area); default sys.argv[1:].
    prog : str, optional
        The program name used in usage and error messages. Default "ddim-core check".

    Returns
    -------
    int
        The exit status: 0 when no area fails, 1 when one does, 2 when TARGET cannot be loaded
        or wrapped, or Hypothesis is not installed (the error goes to stderr).

    Examples
    --------
    >>> main(["ddim_core.testing.reference:ReferenceScheduler", "--area", "timesteps"])
    ddim-core check ddim_core.testing.reference:ReferenceScheduler
    target: ddim_core.testing.reference.ReferenceScheduler (scheduler, numpy arrays)
    <BLANKLINE>
    area       verdict  first counterexample (shrunk)
    timesteps  pass     every N of T = 1000, every spacing, steps_offset 0 and 1; random T
    <BLANKLINE>
    conformant: yes (no area fails)
    0
    """
    from .._arguments import ArgumentParser, current_directory_importable  # (one-line errors)

    parser = ArgumentParser(
        prog=prog,
        description="Check a DDIM scheduler or sampler against exact DDIM, area by area.",
    )
    parser.add_argument(
        "target", metavar="TARGET", help="module:attr, e.g. diffusers:DDIMScheduler"
    )
    parser.add_argument("--kind", choices=KINDS, help="what TARGET is (default: guessed from it)")
    parser.add_argument(
        "--backend",
        help="array library the target takes, a backend name such as torch or numpy "
        "(default: guessed from its timesteps; torch for samplers when installed)",
    )
    parser.add_argument(
        "--format",
        choices=("text", "markdown"),
        default="text",
        help="text: an aligned table; markdown: the table of docs/testing.md (default: text)",
    )
    parser.add_argument(
        "--area",
        action="append",
        choices=AREAS,
        metavar="AREA",
        help=f"check only this area (repeatable): {', '.join(AREAS)}",
    )
    args = parser.parse_args(argv)
    if importlib.util.find_spec("hypothesis") is None:
        print(f"{prog}: error: needs Hypothesis: pip install 'ddim-core[testing]'", file=sys.stderr)
        return 2
    try:
        # TARGET's module, as `python -m` finds it
        with current_directory_importable(), _scratch_hypothesis_home():
            report = check(args.target, kind=args.kind, backend=args.backend, areas=args.area)
    except (ImportError, ValueError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    print(report.text(args.format))
    return 0 if report.conformant else 1


if __name__ == "__main__":
    sys.exit(main())
