"""Benchmarks: `python -m benchmarks [--smoke] [--out DIR]` (see benchmarks/run.py)."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path


def positive_int(text: str) -> int:
    """argparse type of `--repeats`: a whole number, at least 1 (0 or fewer repeats have no
    median)."""
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def out_dir(parser: argparse.ArgumentParser, path: Path) -> Path:
    """`path` made a directory before anything is measured: an `--out` that cannot be one is
    an error at once, not after minutes of timings."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        parser.error(f"--out {str(path)!r} cannot be a directory: {exc.strerror}")
    return path


def require(parser: argparse.ArgumentParser, modules: tuple[str, ...], extras: str) -> None:
    """A usage error naming what is missing of `modules` (and the extras that install them)
    before anything is measured, not a traceback part-way through the run."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        parser.error(
            f"needs {', '.join(missing)}, which cannot be imported here "
            f"(pip install 'ddim-core[{extras}]')"
        )
