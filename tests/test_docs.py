"""Documentation that cannot rot: every code block of README.md and docs/ runs, every public
function and class has a NumPy-style docstring whose examples run, and every public module has
its page in the API reference (the docs build then checks every public name's entry).

Code blocks: ```python blocks run, each in a fresh namespace (self-contained), the blocks of
one page in one subprocess, in a temporary folder; ```sh blocks run with bash there, with this
environment's `python` and `ddim-core` first on PATH. A block preceded by
`<!-- snippet: skip REASON -->` is not run (the reason is reported); a block importing a host
that cannot be installed here (ComfyUI, MindSpore) is skipped naming it, and so is a shell
block that installs packages or builds an environment (pip, uv, conda, apt-get, make).
Output (```text) is not code.
"""

from __future__ import annotations

import ast
import doctest
import importlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
FENCE = re.compile(
    r"(?:^<!-- snippet: (?P<directive>[^>]*?) -->\n)?"
    r"^```(?P<lang>\w*)[^\n]*\n(?P<code>.*?)^```\s*$",
    re.MULTILINE | re.DOTALL,
)
RUN_LANGS = {"python", "sh", "bash"}
# Shell lines that install packages or build environments never run in the tests.
INSTALLS = re.compile(r"^\s*(?:\S*pip3?|uv|conda|apt-get|make)\b.*", re.MULTILINE)
# Hosts no test environment can install (ComfyUI is not on PyPI; mindone needs its own venv).
UNINSTALLABLE = {"comfy", "comfy_api", "mindspore", "mindone"}
PACKAGES = {"ddim_core": ROOT / "ddim_core"} | {
    p.name: p for p in sorted((ROOT / "adapters").iterdir()) if (p / "__init__.py").exists()
}


def blocks(page: Path) -> list[tuple[int, str, str, str | None]]:
    """(line, language, code, skip reason or None) of every fenced block of a page."""
    text = page.read_text(encoding="utf-8")
    out = []
    for m in FENCE.finditer(text):
        line = text.count("\n", 0, m.start("code")) + 1
        directive = m.group("directive") or ""
        skip = directive.removeprefix("skip").strip() if directive.startswith("skip") else None
        out.append((line, m.group("lang"), m.group("code"), skip))
    return out


def _installed(top: str) -> bool:
    """Whether the package is installed: tests/ is on sys.path under pytest, and its
    tests/mindspore folder (no __init__.py) would pass for a `mindspore` namespace package."""
    spec = importlib.util.find_spec(top)
    if spec is None:
        return False
    here = Path(__file__).parent.resolve()
    locations = [Path(p).resolve() for p in (spec.submodule_search_locations or [])]
    return not (
        spec.origin is None and locations and all(p.is_relative_to(here) for p in locations)
    )


def _missing_host(code: str) -> str | None:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module]
        for name in names:
            top = name.split(".")[0]
            if top in UNINSTALLABLE and not _installed(top):
                return top
    return None


# A python block that warns (a RuntimeWarning such as ddim_core's ToleranceWarning, a
# UserWarning) shows a reader following the page what the page does not: it fails; a block
# that means to show a warning catches it (docs/inversion.md).
RUNNER = r"""
import os, subprocess, sys, traceback, warnings
blocks = {blocks!r}
failed = 0
for line, lang, code in blocks:
    where = f"{page}:{{line}}"
    if lang == "python":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", RuntimeWarning)
                warnings.simplefilter("error", UserWarning)
                exec(compile(code, where, "exec"), {{"__name__": "__main__"}})
        except BaseException:
            failed += 1
            print(f"FAILED {{where}}", flush=True)
            traceback.print_exc()
    else:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", code])
        if done.returncode:
            failed += 1
            print(f"FAILED {{where}}: exit status {{done.returncode}}", flush=True)
sys.exit(1 if failed else 0)
"""


def test_diffusers_guide_register_example_prints_true(tmp_path: Path) -> None:
    # the example illustrates what the prose says register() does: each line it prints is True
    pytest.importorskip("diffusers")
    page = ROOT / "docs" / "guides" / "diffusers.md"
    (code,) = [c for _, lang, c, _ in blocks(page) if lang == "python" and ".register()" in c]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "adapters")])}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["True"] * code.count("print("), done.stdout


def test_readme_plugins_output_is_what_the_command_prints() -> None:
    """README's `$ ddim-core plugins` block lacked the mindspore and mindone plugins, the
    mindone adapter and the comfyui adapter's command: each line must be the command's, up to
    whether a library is installed here (and so the column widths)."""
    from ddim_core.cli import plugins_table

    def lines(text: str) -> list[str]:
        text = re.sub(r"\b(importable|not installed)\b", "?", text)
        return [" ".join(line.split()) for line in text.strip().splitlines()]

    (code,) = [c for _, lang, c, _ in blocks(ROOT / "README.md") if "$ ddim-core plugins" in c]
    assert lines(code.removeprefix("$ ddim-core plugins\n")) == lines(plugins_table())


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_code_blocks_run(page: Path, tmp_path: Path) -> None:
    runnable, skipped = [], []
    for line, lang, code, skip in blocks(page):
        if lang not in RUN_LANGS:
            continue
        host = _missing_host(code) if lang == "python" else None
        installs = lang != "python" and INSTALLS.search(code) is not None
        if skip is not None or host is not None or installs:
            reason = skip or (
                f"needs {host}, which cannot be installed here"
                if host
                else "installs packages or builds an environment"
            )
            assert reason, f"{page}:{line}: a skipped block must say why"
            skipped.append(f"{page.name}:{line}: {reason}")
            continue
        runnable.append((line, lang, code))
    if not runnable:
        pytest.skip("; ".join(skipped) or "no code blocks")
    script = tmp_path / "run_blocks.py"
    rel = page.relative_to(ROOT)
    script.write_text(RUNNER.format(blocks=runnable, page=rel), encoding="utf-8")
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "MPLBACKEND": "Agg",
        "PYTHONPATH": os.pathsep.join(
            [str(ROOT), str(ROOT / "adapters"), os.environ.get("PYTHONPATH", "")]
        ),
    }
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, f"{rel}:\n{done.stdout[-6000:]}\n{done.stderr[-6000:]}"


def test_skipped_blocks_say_why() -> None:
    for page in PAGES:
        for line, _, _, skip in blocks(page):
            assert skip is None or skip.strip(), f"{page}:{line}: `snippet: skip` needs a reason"


# --- docstrings -------------------------------------------------------------------------------


def public_modules() -> list[tuple[str, Path]]:
    """(dotted name, file) of every public module of ddim_core and the adapters, and of their
    public subpackages (ddim_core.testing)."""
    out = []
    folders = [(package, folder) for package, folder in PACKAGES.items()]
    while folders:
        package, folder = folders.pop(0)
        for path in sorted(folder.glob("*.py")):
            if path.stem == "__main__" or (path.stem.startswith("_") and path.stem != "__init__"):
                continue
            out.append((package if path.stem == "__init__" else f"{package}.{path.stem}", path))
        for sub in sorted(folder.iterdir()):
            if (sub / "__init__.py").exists() and not sub.name.startswith("_"):
                folders.append((f"{package}.{sub.name}", sub))
    return out


MODULES = public_modules()


def _sections(doc: str) -> set[str]:
    return set(re.findall(r"^\s*(\w[\w ]*)\n\s*-{3,}\s*$", doc, re.MULTILINE))


def _raises(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Whether the function's own body (not nested functions) has a raise statement."""
    stack: list[ast.AST] = list(fn.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Raise) and node.exc is not None:
            return True
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            stack.extend(ast.iter_child_nodes(node))
    return False


def _params(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    a = fn.args
    names = [x.arg for x in [*a.posonlyargs, *a.args, *a.kwonlyargs]]
    names += [f"*{a.vararg.arg}"] if a.vararg else []
    names += [f"**{a.kwarg.arg}"] if a.kwarg else []
    return [n for n in names if n not in ("self", "cls")]


def _returns_value(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    r = fn.returns
    return not (r is None or (isinstance(r, ast.Constant) and r.value is None)) and not (
        isinstance(r, ast.Name) and r.id in ("None", "NoReturn")
    )


def _problems(fn: ast.FunctionDef | ast.AsyncFunctionDef, doc: str, example: bool) -> list[str]:
    found = _sections(doc)
    decorators = {ast.unparse(d) for d in fn.decorator_list}
    if "property" in decorators or any(d.endswith(".setter") for d in decorators):
        return []
    need = []
    if _params(fn):
        need.append("Parameters")
    if _returns_value(fn):
        need.append("Returns" if "Yields" not in found else "Yields")
    if _raises(fn):
        need.append("Raises")
    if example:
        need.append("Examples")
    return [s for s in need if s not in found]


def docstring_problems(path: Path) -> list[str]:
    """What the NumPy-style docstrings of a module's public functions and classes lack.

    Module-level functions: Parameters (if they take any), Returns (if they return a value),
    Raises (if their body raises), Examples. Classes: Examples; their public methods:
    Parameters, Returns and Raises as functions (properties: a docstring).
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    problems = []
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef | ast.ClassDef) or node.name.startswith("_"):
            continue
        doc = ast.get_docstring(node) or ""
        if not doc:
            problems.append(f"{node.name}: no docstring")
            continue
        if isinstance(node, ast.FunctionDef):
            problems += [f"{node.name}: no {s}" for s in _problems(node, doc, True)]
            continue
        if "Examples" not in _sections(doc):
            problems.append(f"{node.name}: no Examples")
        problems += _method_problems(node)
    return problems


def _method_problems(node: ast.ClassDef) -> list[str]:
    """What the docstrings of a class's public methods lack (properties: a docstring)."""
    problems = []
    for member in node.body:
        setter = any(
            ast.unparse(d).endswith(".setter") for d in getattr(member, "decorator_list", [])
        )
        if isinstance(member, ast.FunctionDef) and not member.name.startswith("_") and not setter:
            mdoc = ast.get_docstring(member) or ""
            if not mdoc:
                problems.append(f"{node.name}.{member.name}: no docstring")
                continue
            missing = _problems(member, mdoc, False)
            problems += [f"{node.name}.{member.name}: no {s}" for s in missing]
    return problems


# Modules of ddim_core.testing whose public helpers (area runners, strategies, the reference's
# functions) still lack sections; their exported names are checked by
# test_exported_names_have_full_docstrings. Remove a module from here once it passes.
SECTIONS_TO_DO: set[str] = set()


@pytest.mark.parametrize("module,path", MODULES, ids=[m for m, _ in MODULES])
def test_docstrings_numpy_style(module: str, path: Path) -> None:
    problems = docstring_problems(path)
    if module in SECTIONS_TO_DO:
        assert problems, f"{module} is complete now: remove it from SECTIONS_TO_DO"
        pytest.xfail(f"{len(problems)} docstring sections to write: {problems[:3]} ...")
    assert problems == []


DOCTEST_MODULES = [m for m, _ in MODULES if m != "ddim_comfyui.nodes"]  # imports comfy


class _PackageFinder(doctest.DocTestFinder):
    """doctest's finder, also taking the classes a module defines under its package's name
    (ddim_diffusers' schedulers set `__module__ = "ddim_diffusers"` for saved pipelines)."""

    def _from_module(self, module, obj):  # type: ignore[no-untyped-def]
        owner = getattr(obj, "__module__", None)
        if isinstance(obj, type) and owner and module.__name__.startswith(owner + "."):
            return getattr(module, obj.__name__, None) is obj
        return super()._from_module(module, obj)  # type: ignore[misc]


@pytest.mark.parametrize("module", DOCTEST_MODULES)
def test_docstring_examples_run(module: str, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    mod = importlib.import_module(module)
    finder = _PackageFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(mod, module, globs=dict(vars(mod))):
        if test.examples and test.name.split(".")[-1].startswith("_") is False:
            runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0


def test_api_reference_has_a_page_for_every_public_module() -> None:
    pages = "".join(p.read_text(encoding="utf-8") for p in (ROOT / "docs" / "api").glob("*.md"))
    documented = set(re.findall(r"^::: ([\w.]+)", pages, re.MULTILINE))
    # packages (their __init__) are listed by test_api_reference_lists_every_exported_name
    wanted = {m for m, path in MODULES if path.name != "__init__.py"}
    assert sorted(wanted - documented) == []


def test_block_extraction(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "text\n```python\nx = 1\n```\n<!-- snippet: skip needs a GPU -->\n```sh\nnvidia-smi\n```\n"
        "```text\noutput\n```\n",
        encoding="utf-8",
    )
    assert blocks(page) == [
        (3, "python", "x = 1\n", None),
        (7, "sh", "nvidia-smi\n", "needs a GPU"),
        (10, "text", "output\n", None),
    ]


def test_install_commands_never_run() -> None:
    assert INSTALLS.search("pip install 'ddim-core[plot]'")
    assert INSTALLS.search("ddim-core plugins\n.venv/bin/pip install x")
    assert INSTALLS.search("make demo")
    assert not INSTALLS.search("ddim-core demo --steps 5\necho make")


# --- every name a package exports (`__all__`) --------------------------------------------------

# The page of the API reference that lists each exporting package's names.
EXPORT_PAGES = {
    "ddim_core": "ddim_core.md",
    "ddim_core.testing": "testing.md",
    "ddim_diffusers": "adapters.md",
    "ddim_kdiffusion": "adapters.md",
    "ddim_mindone": "adapters.md",
}


def _package_file(package: str) -> Path:
    top, *rest = package.split(".")
    return PACKAGES[top].joinpath(*rest, "__init__.py")


def exports(package: str) -> dict[str, str | None]:
    """Each name of a package's `__all__` and the module that defines it (None: a submodule),
    read statically: `from .mod import name` lines, and the name-to-module dicts
    (`_EXPORTS`, `_NAMES`) behind the lazy packages' `__getattr__`."""
    tree = ast.parse(_package_file(package).read_text(encoding="utf-8"))
    source: dict[str, str | None] = {}
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            for alias in node.names:
                name = alias.asname or alias.name
                source[name] = f"{package}.{node.module}" if node.module else None
        target = node.targets[0] if isinstance(node, ast.Assign) else None
        if isinstance(target, ast.Name) and isinstance(node, ast.Assign):
            value = ast.literal_eval(node.value) if target.id != "__all__" else None
            if target.id in ("_EXPORTS", "_NAMES"):
                source |= {k: f"{package}.{v.lstrip('.')}" for k, v in value.items()}
            elif target.id == "_SUBMODULES":
                source |= dict.fromkeys(value)
    mod = importlib.import_module(package)
    names = list(mod.__all__)
    return {name: source.get(name) for name in names}


EXPORTING = sorted(EXPORT_PAGES)


def _defined_in(module: str) -> Path:
    top, *rest = module.split(".")
    return PACKAGES[top].joinpath(*rest[:-1], rest[-1] + ".py") if rest else _package_file(top)


@pytest.mark.parametrize("package", EXPORTING)
def test_exported_names_have_full_docstrings(package: str) -> None:
    # what `docstring_problems` asks of public modules, asked of every exported function and
    # class wherever it is defined (a private module, a subpackage) and however it loads
    problems = []
    for name, module in exports(package).items():
        if module is None:
            continue
        path = _defined_in(module)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if not any(
            isinstance(n, ast.FunctionDef | ast.ClassDef) and n.name == name for n in tree.body
        ):
            continue  # a constant, or a host library's class re-exported as is
        problems += [
            f"{module}.{p}" for p in docstring_problems(path) if re.match(rf"{name}[.:]", p)
        ]
        problems += _inherited_problems(getattr(importlib.import_module(package), name))
    assert problems == []


def _inherited_problems(obj: object) -> list[str]:
    """What the public methods a class takes from our private base classes (ddim_diffusers'
    SchedulerCore: set_timesteps, add_noise, ...) lack; their class docstrings are private."""
    if not isinstance(obj, type):
        return []
    problems = []
    for base in obj.__mro__[1:]:
        module = base.__module__
        private = any(part.startswith("_") for part in [*module.split("."), base.__name__])
        if module.split(".")[0] not in PACKAGES or not private or module.endswith("._base"):
            continue  # ._base: stand-ins for the host's own classes when it is not installed
        tree = ast.parse(Path(sys.modules[module].__file__ or "").read_text(encoding="utf-8"))
        (node,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == base.__name__]
        problems += [f"{module}.{p}" for p in _method_problems(node)]
    return problems


@pytest.mark.parametrize("package", EXPORTING)
def test_api_reference_lists_every_exported_name(package: str) -> None:
    # the package's page names each of its exports, so `from package import name` is findable
    page = (ROOT / "docs" / "api" / EXPORT_PAGES[package]).read_text(encoding="utf-8")
    missing = [
        n for n in exports(package) if f"`{n}`" not in page and f"`{package}.{n}`" not in page
    ]
    assert missing == []
