"""What a user installs: the wheel and the sdist built from this tree (`python -m build`).

The wheel carries LICENSE and a py.typed marker in every import package; its metadata has the
license, classifiers, keywords and project URLs, and the version is ddim_core.__version__ (the
one source). The sdist leaves the tests out (they need the repository: README, docs/, the
pinned test environment). `all` installs every extra but cupy (it needs CUDA).
"""

from __future__ import annotations

import email
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import tomllib

import ddim_core

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ddim_core", "ddim_diffusers", "ddim_kdiffusion", "ddim_comfyui", "ddim_mindone")


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("build")
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(  # the sdist, then the wheel from it (as pip builds from PyPI): a stale
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],  # build/ in this
        check=True,  # tree (an older in-tree build's modules) cannot reach the wheel
        capture_output=True,
    )
    return out


def test_wheel_modules_are_this_trees(dist: Path) -> None:
    """Every module in the wheel is a file of this tree (no module of an older build)."""
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        modules = [n for n in archive.namelist() if n.endswith(".py")]
    assert modules
    stale = [n for n in modules if not (ROOT / n).exists() and not (ROOT / "adapters" / n).exists()]
    assert stale == []


def test_wheel_carries_license_and_py_typed(dist: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    for package in PACKAGES:
        assert f"{package}/py.typed" in names
    assert not any(n.startswith("tests/") for n in names)


def test_wheel_metadata(dist: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as z:
        meta_name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.message_from_bytes(z.read(meta_name))
    assert meta["Version"] == ddim_core.__version__
    assert meta["License-Expression"] == "Apache-2.0"
    assert "Typing :: Typed" in meta.get_all("Classifier")
    assert "ddim" in meta["Keywords"].split(",")
    urls = meta.get_all("Project-URL")
    assert any(u.startswith("Homepage, https://github.com/ddim-core/ddim-core") for u in urls)
    license_text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text  # the full text


def test_sdist_builds_the_package_and_leaves_the_tests_out(dist: Path) -> None:
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = archive.getnames()
    top = names[0].split("/")[0]
    assert f"{top}/LICENSE" in names and f"{top}/pyproject.toml" in names
    assert f"{top}/ddim_core/py.typed" in names
    assert not any("/tests/" in n for n in names)


def test_version_has_one_source() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"]
    assert project["project"]["dynamic"] == ["version"]
    attr = project["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "ddim_core.__version__"


def test_all_extra_has_every_extra_that_installs_here() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    (spec,) = extras["all"]
    included = set(spec.partition("[")[2].rstrip("]").split(","))
    # cupy needs CUDA; mindspore, mindone and kdiffusion need NumPy 1.x (their own environment)
    assert included == set(extras) - {"all", "cupy"} - NUMPY1_EXTRAS


# Extras whose libraries need NumPy 1.x: mindone pins numpy<2, MindSpore 2.10's wheels are built
# against NumPy 1.x, and k-diffusion 0.1.1 needs dctorch, whose every release pins numpy<2.
NUMPY1_EXTRAS = {"mindspore", "mindone", "kdiffusion"}


def test_all_extra_leaves_out_the_extras_that_need_numpy_1() -> None:
    """jax 0.5 on needs NumPy 2: with kdiffusion in `all`, `pip install 'ddim-core[all]'`
    backtracked through dctorch, clean-fid, accelerate and jaxlib releases (86 MB each) for
    more than 15 minutes without finishing."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    (spec,) = extras["all"]
    included = set(spec.partition("[")[2].rstrip("]").split(","))
    assert "jax" in included
    assert included & NUMPY1_EXTRAS == set()


def test_extras_that_install_mindspore_pin_numpy_1() -> None:
    """mindspore 2.10.0 allows any numpy>=1.25 but its wheels are built against NumPy 1.x:
    `pip install "ddim-core[mindspore]"` (docs/mindspore.md) into a fresh environment brought
    NumPy 2.4.6, and MindSpore's first operation (`Tensor * 0.1`) raised SystemError
    ("numpy.core.multiarray failed to import")."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    for extra, specs in extras.items():
        names = {re.split(r"[\s<>=!~;\[]", s, maxsplit=1)[0]: s for s in specs}
        if "mindspore" in names:
            assert names.get("numpy", "").replace(" ", "") == "numpy<2", extra


def test_distributed_extra_installs_what_the_dataset_commands_use() -> None:
    # `ddim-core invert-dataset` / `sample-dataset` show a tqdm bar unless --quiet: the extra
    # the README names for them must bring tqdm, or the documented command ends in an error
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    names = {re.split(r"[\s<>=!~;\[]", spec, maxsplit=1)[0] for spec in extras["distributed"]}
    assert {"distributed", "zarr", "tqdm"} <= names


# the distribution that provides each host module a documented command imports
HOST_DISTRIBUTIONS = {"diffusers": "diffusers", "k_diffusion": "k-diffusion"}


def _sh_blocks(page: Path) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", page.read_text(encoding="utf-8"), re.S)


def test_install_lines_before_a_check_install_its_target() -> None:
    """A block that says `pip install 'ddim-core[EXTRAS]'` and then `ddim-core check
    module:attr` installs the library of `module`: the README's and docs/testing.md's
    `pip install 'ddim-core[testing]'` + `ddim-core check diffusers:DDIMScheduler`, run as
    written, ended in "cannot import 'diffusers'" (the testing extra has no diffusers)."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]

    def installed(names: str) -> set[str]:
        out: set[str] = set()
        for extra in names.split(","):
            for spec in extras[extra.strip()]:
                name = re.split(r"[\s<>=!~;\[]", spec, maxsplit=1)[0]
                out |= (
                    installed(spec.partition("[")[2].rstrip("]")) if name == "ddim-core" else {name}
                )
        return out

    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    checked = 0
    for page in pages:
        for block in _sh_blocks(page):
            install = re.search(r"pip install '?\"?ddim-core\[([\w,-]+)\]", block)
            for module in re.findall(r"^ddim-core check (\w+)[.:]", block, re.M):
                if install is None or module.startswith("ddim_"):
                    continue
                checked += 1
                need = HOST_DISTRIBUTIONS.get(module, module)
                assert need in installed(install[1]), (
                    f"{page.name}: `pip install 'ddim-core[{install[1]}]'` then "
                    f"`ddim-core check {module}:...`, but those extras do not install {need}"
                )
    assert checked >= 2  # the README's and docs/testing.md's
