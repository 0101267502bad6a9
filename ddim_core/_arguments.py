"""The command line's argument parser (`ddim_core.cli` and the dataset commands of
`ddim_core.distributed` share it; a module of its own so that neither imports the other)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from typing import NoReturn


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with a bad argument reported as one line on stderr (exit status 2).

    `commands` holds the subcommands' parsers by name, so that a check made after parsing
    reports its error under the subcommand's name.

    Examples
    --------
    >>> parser = ArgumentParser(prog="demo")
    >>> _ = parser.add_argument("--n", type=int)
    >>> parser.parse_args(["--n", "x"])  # doctest: +SKIP
    demo: error: argument --n: invalid int value: 'x' (see demo --help)
    """

    commands: dict[str, ArgumentParser]

    def error(self, message: str) -> NoReturn:
        """Print `message` as one line naming the program, then exit with status 2.

        Parameters
        ----------
        message : str
            argparse's message (it names the argument).
        """
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


@contextlib.contextmanager
def current_directory_importable() -> Iterator[None]:
    """Modules in the current directory importable meanwhile, as `python -m` finds them: a
    console script's sys.path starts at its own bin directory (a command's `module:name`
    arguments name the user's modules).

    Examples
    --------
    >>> import os, sys
    >>> with current_directory_importable():
    ...     os.getcwd() in sys.path or "" in sys.path
    True
    """
    here = os.getcwd()
    added = "" not in sys.path and here not in sys.path
    if added:
        sys.path.insert(0, here)
    try:
        yield
    finally:
        if added:
            sys.path.remove(here)
