"""`python -m ddim_comfyui install|uninstall COMFYUI_DIR`, also reached as `ddim-core comfyui
install|uninstall COMFYUI_DIR` (the adapter's `command`): the shim folder in custom_nodes/.

ComfyUI does not scan entry points; it imports each folder of `custom_nodes/`. The shim is a
one-file package that imports the pip-installed `ddim_comfyui` (so it must be installed in the
Python environment ComfyUI runs in). Its folder name is not an importable module name, so it
can never shadow the real package.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

SHIM_DIR = "ddim-core-comfyui"
WRITTEN = ("__init__.py", "__pycache__")  # all a shim folder holds: install's file, its bytecode
MARKER = "# ddim-core-comfyui shim (written by `ddim-core comfyui install`)"
SHIM = f'''{MARKER}
"""ddim-core's ComfyUI node pack; the nodes live in the pip-installed package ddim_comfyui.
Remove with `ddim-core comfyui uninstall <this ComfyUI>`."""
from ddim_comfyui.nodes import load as _load

globals().update(_load())
'''


def _checkout(comfyui_dir: str | os.PathLike[str]) -> Path:
    root = Path(comfyui_dir)
    files = [root / "comfy" / "samplers.py", root / "nodes.py"]
    if not (all(p.is_file() for p in files) and (root / "custom_nodes").is_dir()):
        raise ValueError(
            f"COMFYUI_DIR={str(comfyui_dir)!r} is not a ComfyUI checkout: expected "
            "comfy/samplers.py, nodes.py and a custom_nodes/ folder in it"
        )
    return root


def install(comfyui_dir: str | os.PathLike[str]) -> Path:
    """Write (or refresh) the shim folder custom_nodes/ddim-core-comfyui. A same-named
    folder this command did not write is left as is.

    Parameters
    ----------
    comfyui_dir : str or path-like
        A ComfyUI checkout.

    Returns
    -------
    pathlib.Path
        The shim folder.

    Raises
    ------
    ValueError
        `comfyui_dir` is not a ComfyUI checkout, or the folder was not written by `install`.

    Examples
    --------
    >>> from pathlib import Path
    >>> for part in ("comfy", "custom_nodes"):
    ...     Path("ComfyUI", part).mkdir(parents=True, exist_ok=True)
    >>> for part in ("comfy/samplers.py", "nodes.py"):
    ...     Path("ComfyUI", part).touch()
    >>> install("ComfyUI").name
    'ddim-core-comfyui'
    >>> uninstall("ComfyUI").name
    'ddim-core-comfyui'
    """
    target = _checkout(comfyui_dir) / "custom_nodes" / SHIM_DIR
    if target.exists() or target.is_symlink():
        _check_ours(target)
    target.mkdir(exist_ok=True)
    (target / "__init__.py").write_text(SHIM, encoding="utf-8")
    return target


def uninstall(comfyui_dir: str | os.PathLike[str]) -> Path | None:
    """Remove the shim folder (only one this command wrote, holding only its __init__.py and
    Python's __pycache__: anything else in it was put there by someone else).

    Parameters
    ----------
    comfyui_dir : str or path-like
        A ComfyUI checkout.

    Returns
    -------
    pathlib.Path or None
        The folder removed, or None if there was none.

    Raises
    ------
    ValueError
        Not a ComfyUI checkout, the folder was not written by `install`, or it holds more.

    Examples
    --------
    >>> uninstall("not-comfyui")  # doctest: +SKIP
    Traceback (most recent call last):
    ValueError: COMFYUI_DIR='not-comfyui' is not a ComfyUI checkout: ...
    """
    target = _checkout(comfyui_dir) / "custom_nodes" / SHIM_DIR
    if not (target.exists() or target.is_symlink()):
        return None
    _check_ours(target)
    others = sorted(p.name for p in target.iterdir() if p.name not in WRITTEN)
    if others:
        raise ValueError(
            f"{target} also holds {others}, which `ddim-core comfyui install` did not write; "
            "left as is (move them out, then uninstall again)"
        )
    shutil.rmtree(target)
    return target


def _check_ours(target: Path) -> None:
    """Raise ValueError unless `target` is a shim folder written by `install` (a folder, not
    a link to one, whose __init__.py starts with MARKER)."""
    init = target / "__init__.py"
    ours = not target.is_symlink() and target.is_dir() and init.is_file()
    if not ours or not init.read_bytes().startswith(MARKER.encode()):
        raise ValueError(f"{target} was not written by `ddim-core comfyui install`; left as is")


def main(argv: Sequence[str] | None = None, prog: str = "python -m ddim_comfyui") -> int:
    """The command line: `python -m ddim_comfyui install|uninstall COMFYUI_DIR`.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments (default: sys.argv[1:]).
    prog : str
        The program name for messages.

    Returns
    -------
    int
        The exit status, as for the other `ddim-core` commands (one line on stderr, `PROG
        ACTION: error: ...`, before a status other than 0): 0 when done; 2 for a bad argument
        (COMFYUI_DIR is not a ComfyUI checkout); 1 when the command cannot do it: the shim
        folder was not written by this command or holds more, or the file system refuses.

    Examples
    --------
    >>> main(["install", "/no/such/ComfyUI"])
    2
    """
    from ddim_core.cli import ArgumentParser  # a bad argument: one line, exit status 2

    parser = ArgumentParser(
        prog=prog, description="Add or remove the ComfyUI node pack's shim folder."
    )
    parser.add_argument(
        "action",
        choices=["install", "uninstall"],
        help="write custom_nodes/ddim-core-comfyui, or remove it",
    )
    parser.add_argument("comfyui_dir", metavar="COMFYUI_DIR", help="a ComfyUI checkout")
    args = parser.parse_args(argv)
    name = f"{prog} {args.action}"
    try:
        _checkout(args.comfyui_dir)
    except ValueError as e:  # a bad argument
        return _error(name, e, 2)
    except OSError as e:  # e.g. COMFYUI_DIR cannot be read
        return _error(name, e, 1)
    try:
        done = (
            install(args.comfyui_dir) if args.action == "install" else uninstall(args.comfyui_dir)
        )
    except (ValueError, OSError) as e:  # a folder it did not write; custom_nodes/ not writable
        return _error(name, e, 1)
    if args.action == "install":
        print(f"wrote {done}; restart ComfyUI to load the DDIM nodes")
    else:
        print(f"removed {done}" if done else "nothing to remove")
    return 0


def _error(prog: str, error: Exception, status: int) -> int:
    """Print `error` as the other commands do (one line on stderr) and return `status`."""
    print(f"{prog}: error: {error}", file=sys.stderr)
    return status
