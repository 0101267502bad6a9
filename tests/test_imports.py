"""Importing ddim_core imports no array framework besides NumPy (einops/array-api-compat rule),
nor, for ddim_core.testing, Hypothesis or pytest; the import graph of ddim_core (its testing
subpackage included) has no cycle, no adapter and one array-api-compat importer."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import ddim_core

FRAMEWORKS = ["torch", "jax", "cupy", "dask", "array_api_strict", "tensorflow", "mlx", "diffusers"]


def test_import_pulls_in_no_framework() -> None:
    code = (
        "import sys, json, ddim_core, ddim_core.cli\n"
        f"print(json.dumps([m for m in {FRAMEWORKS!r} if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_the_testing_toolkit_imports_hypothesis_and_pytest_only_when_used() -> None:
    """ddim_core.testing and its modules that need neither (the reference, assertions, backend
    matrix, targets, the check's report) import no framework, Hypothesis or pytest."""
    modules = "reference, assertions, backends, targets, findings, conformance"
    code = (
        "import sys, json, ddim_core.testing\n"
        f"from ddim_core.testing import {modules}\n"
        f"print(json.dumps([m for m in {[*FRAMEWORKS, 'hypothesis', 'pytest']!r} "
        "if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_loading_every_plugin_pulls_in_no_framework() -> None:
    """The plugin manager loads all entry points (built-ins, the diffusers adapter's plugin)
    without importing a framework: hosts are imported only when an adapter registers."""
    code = (
        "import sys, json\n"
        "from ddim_core import plugins\n"
        "rows = plugins.describe()\n"
        f"print(json.dumps([m for m in {FRAMEWORKS!r} if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


# --- the import graph of ddim_core, read from the source -----------------------------------

CORE = Path(ddim_core.__file__).parent
ADAPTERS = {"ddim_diffusers", "ddim_kdiffusion", "ddim_comfyui"}


def _is_core_module(name: str) -> bool:
    """Whether `name` (ddim_core.x.y) is a module or package of ddim_core."""
    if not name.startswith("ddim_core."):
        return False
    relative = Path(*name.split(".")[1:])
    return (CORE / relative).with_suffix(".py").exists() or (
        CORE / relative / "__init__.py"
    ).exists()


def _imports(path: Path, package: str = "ddim_core") -> set[str]:
    """Every module `path` (a module of `package`) imports, at top level or inside functions,
    as absolute names (a `from package import name` counts as importing the submodule when
    there is one)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1]) if node.level else ""
            module = ".".join(filter(None, [base, node.module or ""]))
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                found.add(sub if _is_core_module(sub) else module)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None))
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            found.add(str(node.args[0].value))
    return found


def _graph() -> dict[str, set[str]]:
    graph = {}
    for path in sorted(CORE.rglob("*.py")):
        parts = ["ddim_core", *path.relative_to(CORE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        package = ".".join(parts if path.stem == "__init__" else parts[:-1])
        graph[".".join(parts)] = _imports(path, package)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle among the graph's own modules (as a path), or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        for other in sorted(graph[node] & graph.keys()):
            cycle = visit(other, [*path, node])
            if cycle:
                return cycle
        done.add(node)
        return None

    return next(filter(None, (visit(node, []) for node in graph)), None)


def test_no_import_cycle_inside_ddim_core() -> None:
    """No module imports, even lazily inside a function, a module that imports it back
    (each submodule implicitly loads the package first: `ddim_core/__init__` is not counted as
    imported by them, only a `from ddim_core import name` of a name that is no submodule)."""
    graph = _graph()
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_graph_covers_the_testing_subpackage() -> None:
    graph = _graph()
    assert "ddim_core.testing.conformance" in graph["ddim_core.cli"]
    assert "ddim_core.testing.reference" in graph["ddim_core.testing.assertions"]
    assert "ddim_core.config" in graph["ddim_core.testing.reference"]


def test_the_import_reader_sees_lazy_imports(tmp_path: Path) -> None:
    """Imports inside functions and import_module calls count, relative ones resolved."""
    source = tmp_path / "lazy.py"
    source.write_text(
        "def f():\n"
        "    from . import backends\n"
        "    from .plans import Plan\n"
        "    import importlib\n"
        "    return importlib.import_module('ddim_core.kernels')\n"
    )
    assert {"ddim_core.backends", "ddim_core.plans", "ddim_core.kernels"} <= _imports(source)


def test_the_cycle_check_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c", "numpy"}, "c": {"a"}, "d": {"a"}}
    assert _cycle(graph) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_core_imports_no_adapter_and_array_api_compat_in_one_module() -> None:
    graph = _graph()
    for module, imported in graph.items():
        tops = {name.partition(".")[0] for name in imported}
        assert not tops & ADAPTERS, f"{module} imports {sorted(tops & ADAPTERS)}"
        if module != "ddim_core.backends":
            assert "array_api_compat" not in tops, f"{module} imports array_api_compat"
    assert "array_api_compat" in {n.partition(".")[0] for n in graph["ddim_core.backends"]}


def test_the_mindone_schedulers_without_mindspore_name_the_extra() -> None:
    """ddim_mindone imports without MindSpore (its plugin and output class need none), but its
    schedulers make MindSpore tables: constructing one without MindSpore ended in "No module
    named 'mindspore'" raised from inside ddim_diffusers' setup. It is an ImportError naming
    the extra to install."""
    code = (
        "import sys\n"
        "sys.modules['mindspore'] = None  # not installed, wherever these tests run\n"
        "from ddim_mindone import DDIMInverseScheduler, DDIMScheduler\n"
        "for cls in (DDIMScheduler, DDIMInverseScheduler):\n"
        "    try:\n"
        "        cls()\n"
        "    except ImportError as e:\n"
        "        print(type(e).__name__, e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert len(lines) == 2, out.stdout + out.stderr
    for line in lines:
        assert line.startswith("ImportError ") and "pip install 'ddim-core[mindone]'" in line


def test_the_mindone_schedulers_without_mindone_stand_where_mindones_classes_would() -> None:
    """With mindone, ddim_mindone's classes subclass mindone's DDIMScheduler /
    DDIMInverseScheduler (tests/mindspore/test_mindone.py); without it, the stand-ins that
    ddim_diffusers' classes use without diffusers take those places in the MRO."""
    code = (
        "import sys\n"
        "sys.modules['mindone'] = None  # not installed, wherever these tests run\n"
        "from ddim_diffusers import _base\n"
        "import ddim_mindone as dm\n"
        "print(dm.HAVE_MINDONE, issubclass(dm.DDIMScheduler, _base.DDIMSchedulerBase),\n"
        "      issubclass(dm.DDIMInverseScheduler, _base.DDIMInverseSchedulerBase))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True", "True"], out.stdout + out.stderr
