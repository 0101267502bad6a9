"""Benchmarks: `python -m benchmarks [--smoke] [--out DIR]` (see benchmarks/run.py)."""

from __future__ import annotations

import argparse
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
