"""The plugin system: entry-point loading, the hooks, broken plugins, blocking, the CLI.

Third-party plugins are real distributions: a wheel built here and pip-installed into a
temporary directory, then used from a subprocess with that directory on sys.path.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import inspect
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pluggy
import pytest
from helpers import Backend, run_on_jax_cpu_devices, to_numpy
from helpers import blocked as blocked_plugins

import ddim_core as dc
from ddim_core import backends, coefficients, hookspecs, plugins
from ddim_core.hookspecs import Adapter, hookimpl
from ddim_core.testing import reference

INSTALLED = any(
    ep.value.startswith("ddim_core.") for ep in importlib.metadata.entry_points(group="ddim_core")
)
needs_install = pytest.mark.skipif(not INSTALLED, reason="ddim-core's entry points not installed")

THIRD_PARTY = """
import numpy as np
import array_api_compat.numpy as xp_numpy
from ddim_core.hookspecs import Adapter, hookimpl

REGISTERED = []

class TinyArray:  # a type array-api-compat does not know
    pass

class HalfStepGenerator:  # noise = 0.5 * draw, to see which draw each step got
    pass

@hookimpl
def ddim_core_array_namespace(array):
    return xp_numpy if isinstance(array, TinyArray) else None

@hookimpl
def ddim_core_standard_normal(generator, shape, like, draw):
    if isinstance(generator, HalfStepGenerator):
        return np.full(shape, 0.5 * draw, dtype=like.dtype)
    return None

@hookimpl
def ddim_core_adapter():
    return Adapter("tiny", "json", ("tiny.sampler",), lambda: REGISTERED.append("tiny"))
"""

TYPO = """
from ddim_core.hookspecs import hookimpl

@hookimpl
def ddim_core_standard_normel(generator, shape, like, draw):  # misspelled: no such hook
    raise AssertionError("never called")

@hookimpl
def ddim_core_array_namespace(array):  # a real hook: not asked once the plugin is left out
    raise AssertionError("never called")
"""

PIP_INSTALL = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index"]
BROKEN = "raise RuntimeError('this plugin is broken on import')\n"


def _wheel(tmp: Path, name: str, source: str, entry_points: dict[str, str]) -> Path:
    """A minimal pure-Python wheel with one module and `ddim_core` entry points."""
    info = f"{name}-0.1.dist-info"
    files = {
        f"{name}.py": source,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
        f"{info}/entry_points.txt": "[ddim_core]\n"
        + "".join(f"{k} = {v}\n" for k, v in entry_points.items()),
    }
    record = []
    for path, text in files.items():
        digest = hashlib.sha256(text.encode()).digest()
        b64 = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        record.append(f"{path},sha256={b64},{len(text.encode())}")
    files[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    wheel = tmp / f"{name}-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
    return wheel


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with three third-party plugin distributions pip-installed into it: one
    working, one broken on import, one implementing a hook that does not exist."""
    tmp = tmp_path_factory.mktemp("plugins")
    target = tmp / "site"
    wheels = [
        _wheel(tmp, "ddim_tiny_plugin", THIRD_PARTY, {"tiny": "ddim_tiny_plugin"}),
        _wheel(tmp, "ddim_broken_plugin", BROKEN, {"broken": "ddim_broken_plugin"}),
        _wheel(tmp, "ddim_typo_plugin", TYPO, {"typo": "ddim_typo_plugin"}),
    ]
    subprocess.run(
        [*PIP_INSTALL, "--target", str(target), *map(str, wheels)],
        check=True,
    )
    return target


def _run(site: Path, code: str, **env: str) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-W", "always", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": path, **env},
        check=False,
    )


@pytest.fixture
def fresh() -> object:
    """A new plugin manager for the test, and another one after it."""
    plugins.manager.cache_clear()
    yield plugins.manager()
    plugins.manager.cache_clear()


# --- third-party and broken plugins (subprocess: a real installed distribution) --------------


def test_third_party_plugin_is_discovered_and_each_hook_used(site: Path) -> None:
    out = _run(
        site,
        """
        import json, warnings
        import numpy as np
        import ddim_core as dc
        from ddim_core import backends, plugins
        import ddim_tiny_plugin as tiny

        config = dc.DDIMConfig(clip_sample=False)
        model = dc.GaussianMixture.create([[0.0]], [1.0], config)
        x = np.random.default_rng(0).standard_normal((3, 1))
        with_plugin = dc.sample(model, x, config, 4, eta=1.0, generator=tiny.HalfStepGenerator())
        by_hand = dc.sample(model, x, config, 4, eta=1.0,
                            noise=[np.full((3, 1), 0.5 * i) for i in range(4)])
        registered = plugins.register_adapters("tiny")
        print(json.dumps({
            "names": [row["name"] for row in plugins.describe()],
            "same": bool(np.array_equal(with_plugin, by_hand)),
            "namespace": backends.namespace(x=tiny.TinyArray()).__name__,
            "adapter": list(plugins.adapters()["tiny"].provides),
            "registered": [registered, tiny.REGISTERED],
        }))
        """,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.splitlines()[-1])
    assert "tiny" in result["names"]
    assert result["same"]
    assert result["namespace"] == "array_api_compat.numpy"
    assert result["adapter"] == ["tiny.sampler"]
    assert result["registered"] == [["tiny"], ["tiny"]]


def test_broken_plugin_warns_by_name_and_the_rest_work(site: Path) -> None:
    out = _run(
        site,
        """
        import numpy as np
        import ddim_core as dc
        from ddim_core import plugins
        z = plugins.standard_normal(np.random.default_rng(0), (2, 3), like=np.zeros((2, 3)))
        print(sorted(row["name"] for row in plugins.describe()), z.shape)
        """,
    )
    assert out.returncode == 0, out.stderr
    assert "PluginWarning: ddim-core plugin 'broken' failed to load" in out.stderr
    assert "this plugin is broken on import" in out.stderr
    assert "'tiny'" in out.stdout and "'broken'" not in out.stdout
    assert "(2, 3)" in out.stdout


def test_a_plugin_implementing_an_unknown_hook_is_warned_about_and_left_out(site: Path) -> None:
    """check_pending() after loading: a misspelled hook name is reported naming the plugin,
    which is unregistered (its real hooks are not asked either); the others keep working."""
    out = _run(
        site,
        """
        import numpy as np
        from ddim_core import backends, plugins
        import ddim_tiny_plugin as tiny
        z = plugins.standard_normal(np.random.default_rng(0), (2, 3), like=np.zeros((2, 3)))
        print(sorted(row["name"] for row in plugins.describe()), z.shape)
        print(backends.namespace(x=tiny.TinyArray()).__name__)
        """,
    )
    assert out.returncode == 0, out.stderr
    assert "PluginWarning: ddim-core plugin 'typo' failed validation" in out.stderr
    assert "unknown hook 'ddim_core_standard_normel'" in out.stderr
    assert "raised in" not in out.stderr and "AssertionError" not in out.stderr
    assert "'typo'" not in out.stdout and "'tiny'" in out.stdout and "(2, 3)" in out.stdout
    assert "array_api_compat.numpy" in out.stdout


def test_environment_variable_blocks_named_plugins(site: Path) -> None:
    code = """
        from ddim_core import plugins
        print(sorted(row["name"] for row in plugins.describe()))
        """
    out = _run(site, code, DDIM_CORE_BLOCK_PLUGINS="broken, tiny,typo")
    assert out.returncode == 0, out.stderr
    assert "PluginWarning" not in out.stderr
    for name in ("'tiny'", "'broken'", "'typo'"):
        assert name not in out.stdout
    assert "'numpy'" in out.stdout


def test_cli_lists_plugins_hooks_and_hosts(site: Path) -> None:
    out = _run(site, "from ddim_core.cli import main; main(['plugins'])")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "tiny" in text and "ddim_tiny_plugin 0.1" in text
    assert "ddim_core_standard_normal" in text and "ddim_core_array_namespace" in text
    assert "host json: importable" in text and "provides tiny.sampler" in text
    assert "broken" not in text and "plugin 'broken' failed to load" in out.stderr
    blocked = _run(
        site, "from ddim_core.cli import main; main(['plugins'])", DDIM_CORE_BLOCK_PLUGINS="tiny"
    )
    assert "blocked by DDIM_CORE_BLOCK_PLUGINS: tiny" in blocked.stdout
    # a name no plugin has (the package's, not its plugin's) blocks nothing, and is said so
    typo = _run(
        site,
        "from ddim_core.cli import main; main(['plugins'])",
        DDIM_CORE_BLOCK_PLUGINS="ddim_tiny_plugin,numpy",
    )
    assert (
        "blocked by DDIM_CORE_BLOCK_PLUGINS: ddim_tiny_plugin (no built-in or installed plugin "
        "has this name), numpy" in typo.stdout
    ), typo.stdout


@needs_install
def test_builtins_and_adapters_come_from_ddim_cores_own_entry_points() -> None:
    eps = {ep.name: ep for ep in importlib.metadata.entry_points(group="ddim_core")}
    for name in (*plugins.BUILTINS, "diffusers", "k-diffusion", "comfyui"):
        assert eps[name].dist is not None and eps[name].dist.name == "ddim-core"
    rows = {row["name"]: row for row in plugins.describe()}
    assert rows["numpy"]["distribution"].startswith("ddim-core ")
    hosts = {name: rows[name]["adapter"].host for name in ("diffusers", "k-diffusion", "comfyui")}
    assert hosts == {"diffusers": "diffusers", "k-diffusion": "k_diffusion", "comfyui": "comfy"}


SHADOW = """
from ddim_core.hookspecs import hookimpl

@hookimpl
def ddim_core_standard_normal(generator, shape, like, draw):
    return None  # answers nothing: where it replaced a plugin, that plugin's generators fail
"""


@pytest.fixture(scope="module")
def clashing_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three distributions whose entry points take names already taken: `numpy` (a built-in's)
    and `dup` twice."""
    tmp = tmp_path_factory.mktemp("clashing")
    target = tmp / "site"
    wheels = [
        _wheel(tmp, "ddim_shadow_plugin", SHADOW, {"numpy": "ddim_shadow_plugin"}),
        _wheel(tmp, "ddim_dup_a", SHADOW, {"dup": "ddim_dup_a"}),
        _wheel(tmp, "ddim_dup_b", SHADOW, {"dup": "ddim_dup_b"}),
    ]
    subprocess.run([*PIP_INSTALL, "--target", str(target), *map(str, wheels)], check=True)
    return target


@needs_install
def test_an_entry_point_taking_a_taken_name_is_warned_about_and_listed_truthfully(
    clashing_site: Path,
) -> None:
    """A third party's `numpy` entry point (on sys.path before ddim-core) replaced the built-in
    numpy plugin without a word, and `ddim-core plugins` listed it as ddim-core's; of two `dup`
    entry points one was dropped silently and the other's distribution listed. The built-ins
    keep their names, a clash is warned about naming both distributions, and the listing
    names the distribution whose plugin is registered."""
    out = _run(
        clashing_site,
        """
        import json
        import numpy as np
        from ddim_core import builtins, plugins
        z = plugins.standard_normal(np.random.default_rng(0), (2,), like=np.zeros(2))
        rows = {row["name"]: row for row in plugins.describe()}
        dup = plugins.manager().get_plugin("dup").__name__
        print(json.dumps({
            "numpy": plugins.manager().get_plugin("numpy") is builtins.PLUGINS["numpy"],
            "numpy_dist": rows["numpy"]["distribution"],
            "dup_module": dup,
            "dup_dist": rows["dup"]["distribution"],
        }))
        """,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["numpy"] and result["numpy_dist"].startswith("ddim-core ")
    assert result["dup_dist"] == f"{result['dup_module']} 0.1"
    assert "plugin 'numpy' of ddim_shadow_plugin 0.1" in out.stderr
    assert "plugin 'dup' of ddim_dup_" in out.stderr
    assert "DDIM_CORE_BLOCK_PLUGINS=numpy" not in out.stderr  # blocking would drop both


def test_blocking_one_built_in_in_a_source_tree_keeps_the_others(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """ddim-core run from a source tree whose entry points are not installed registers its
    built-ins directly, but did so only if none of them was blocked: the reference path's
    DDIM_CORE_BLOCK_PLUGINS=numba (tests/helpers.py, benchmarks/threads.py) left no built-in
    at all, so dc.sample(..., eta=1.0, generator=np.random.default_rng(0)) raised 'cannot
    draw noise ... built in: none'. A blocked built-in is now the only one left out."""
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [])  # nothing installed
    config = dc.DDIMConfig()
    with blocked_plugins("numba"):
        pm = plugins.manager()
        names = {name for name, plugin in pm.list_name_plugin() if plugin is not None}
        assert names == set(plugins.BUILTINS) - {"numba"}
        assert pm.is_blocked("numba")
        rows = {row["name"]: row for row in plugins.describe()}
        assert rows["numpy"]["distribution"] == "ddim-core (source tree)"
        x, rng = np.ones((2, 3)), np.random.default_rng(0)
        y = dc.sample(lambda x, t: 0.1 * x, x, config, 3, eta=1.0, generator=rng)
        assert y.shape == (2, 3) and np.isfinite(y).all()


def test_a_plugin_registered_by_hand_is_not_listed_as_ddim_cores(fresh) -> None:  # type: ignore[no-untyped-def]
    """docs/plugins.md registers its example by hand; `ddim-core plugins` listed it under the
    distribution "ddim-core (source tree)"."""
    fresh.register(_Answer("by-hand", []), name="by-hand")
    rows = {row["name"]: row for row in plugins.describe()}
    assert rows["by-hand"]["distribution"] == "registered at run time"
    assert rows["numpy"]["distribution"].startswith("ddim-core")


# --- in-process: hooks and failure handling ------------------------------------------------


class _Raising:
    @hookimpl
    def ddim_core_standard_normal(self, generator, shape, like, draw):  # type: ignore[no-untyped-def]
        raise RuntimeError("bug in a plugin")


def test_a_plugin_raising_in_a_hook_is_warned_about_and_unregistered(fresh) -> None:  # type: ignore[no-untyped-def]
    fresh.register(_Raising(), name="raising")
    like = np.zeros((2, 2))
    with pytest.warns(plugins.PluginWarning, match="'raising' raised in ddim_core_standard_normal"):
        z = plugins.standard_normal(np.random.default_rng(3), (2, 2), like=like)
    np.testing.assert_array_equal(z, np.random.default_rng(3).standard_normal((2, 2)))
    assert not fresh.has_plugin("raising")


class _Answer:
    """Resolves every array to `answer`, recording that it was asked."""

    def __init__(self, answer: str, asked: list[str]) -> None:
        self.answer, self.asked = answer, asked

    @hookimpl
    def ddim_core_array_namespace(self, array):  # type: ignore[no-untyped-def]
        self.asked.append(self.answer)
        return self.answer


def test_firstresult_hooks_give_the_last_registered_answer_and_ask_no_further(fresh) -> None:  # type: ignore[no-untyped-def]
    asked: list[str] = []
    fresh.register(_Answer("first", asked), name="first")
    fresh.register(_Answer("second", asked), name="second")
    assert plugins.array_namespace(bytearray(1)) == "second"
    assert asked == ["second"]


def test_a_raising_plugin_is_left_out_and_the_call_answered_without_it(fresh) -> None:  # type: ignore[no-untyped-def]
    """The result is the one the call would give had the plugin never been registered."""
    asked: list[str] = []

    class Raising:
        @hookimpl
        def ddim_core_array_namespace(self, array):  # type: ignore[no-untyped-def]
            asked.append("raising")
            raise RuntimeError("bug in a plugin")

    fresh.register(_Answer("next", asked), name="next")
    fresh.register(Raising(), name="raising")
    with pytest.warns(plugins.PluginWarning, match="'raising' raised in ddim_core_array_namespace"):
        assert plugins.array_namespace(bytearray(1)) == "next"
    assert asked == ["raising", "next"]
    assert not fresh.has_plugin("raising") and fresh.has_plugin("next")
    assert plugins.array_namespace(bytearray(1)) == "next"  # no second warning: it is gone


def test_firstresult_calls_follow_registrations_order_and_monitoring(fresh) -> None:  # type: ignore[no-untyped-def]
    """Firstresult hooks are called in a loop where that is what pluggy does: the loop sees
    plugins registered or unregistered between calls, pluggy's tryfirst/trylast order, and
    a monitored manager calls through pluggy (its monitor sees every call)."""
    asked: list[str] = []
    fresh.register(_Answer("first", asked), name="first")
    assert plugins.array_namespace(bytearray(1)) == "first"

    class Last(_Answer):
        @hookimpl(trylast=True)
        def ddim_core_array_namespace(self, array):  # type: ignore[no-untyped-def]
            self.asked.append(self.answer)
            return self.answer

    fresh.register(Last("last", asked), name="last")  # registered last, asked last
    fresh.register(_Answer("second", asked), name="second")
    assert plugins.array_namespace(bytearray(1)) == "second"
    fresh.unregister(name="second")
    assert plugins.array_namespace(bytearray(1)) == "first"
    fresh.unregister(name="first")
    assert plugins.array_namespace(bytearray(1)) == "last"
    assert asked == ["first", "second", "first", "last"]
    seen: list[str] = []
    fresh.add_hookcall_monitoring(lambda name, impls, kwargs: seen.append(name), lambda *a: None)
    assert plugins.array_namespace(bytearray(1)) == "last"
    assert seen == ["ddim_core_array_namespace"]


def test_wrappers_run_as_pluggy_defines_them_and_a_raising_one_is_left_out(fresh) -> None:  # type: ignore[no-untyped-def]
    class Wrapper:
        @hookimpl(wrapper=True)
        def ddim_core_array_namespace(self, array):  # type: ignore[no-untyped-def]
            answer = yield
            return f"wrapped {answer}"

    class BrokenWrapper:
        @hookimpl(wrapper=True)
        def ddim_core_array_namespace(self, array):  # type: ignore[no-untyped-def]
            yield
            raise RuntimeError("bug after the yield")

    fresh.register(_Answer("inner", []), name="inner")
    fresh.register(Wrapper(), name="wrapper")
    assert plugins.array_namespace(bytearray(1)) == "wrapped inner"
    fresh.register(BrokenWrapper(), name="broken-wrapper")
    with pytest.warns(plugins.PluginWarning, match="'broken-wrapper' raised"):
        assert plugins.array_namespace(bytearray(1)) == "wrapped inner"
    assert not fresh.has_plugin("broken-wrapper")


def test_array_namespace_hook_is_asked_only_for_unknown_arrays(fresh) -> None:  # type: ignore[no-untyped-def]
    asked = []

    class Resolver:
        @hookimpl
        def ddim_core_array_namespace(self, array):  # type: ignore[no-untyped-def]
            asked.append(type(array).__name__)
            return "custom-namespace" if isinstance(array, bytearray) else None

    fresh.register(Resolver())
    backends.namespace(x=np.zeros(2))
    assert asked == []
    assert backends.namespace(x=bytearray(2)) == "custom-namespace"
    with pytest.raises(TypeError, match=r"x must be an array .* got str"):
        backends.namespace(x="not an array")
    assert asked == ["bytearray", "str"]


def test_adapter_hook_and_register_adapters(fresh) -> None:  # type: ignore[no-untyped-def]
    calls = []

    class Plugin:
        @hookimpl
        def ddim_core_adapter(self) -> Adapter:
            return Adapter("fake", "json", ("fake.x",), lambda: calls.append("fake"))

        @hookimpl
        def ddim_core_array_namespace(self, array):  # type: ignore[no-untyped-def]
            return None

    class Missing:
        @hookimpl
        def ddim_core_adapter(self) -> Adapter:
            return Adapter("missing", "no_such_host_package", (), lambda: calls.append("missing"))

    class Broken:
        @hookimpl
        def ddim_core_adapter(self) -> Adapter:
            return Adapter("broken", "json", (), lambda: 1 / 0)

    fresh.register(Plugin(), name="fake")
    fresh.register(Missing(), name="missing")
    fresh.register(Broken(), name="broken")
    with pytest.warns(plugins.PluginWarning, match="'broken' failed to register"):
        plugins.register_adapters()
    with pytest.raises(ZeroDivisionError):
        plugins.register_adapters("broken")
    calls.clear()
    assert {"fake", "missing"} <= set(plugins.adapters())
    with warnings.catch_warnings():  # hosts installed here but unusable are warned about
        warnings.simplefilter("ignore", plugins.PluginWarning)
        assert "fake" in plugins.register_adapters()
    assert calls == ["fake"]
    with pytest.raises(ImportError, match="'missing' needs 'no_such_host_package'"):
        plugins.register_adapters("missing")
    with pytest.raises(ValueError, match="unknown adapter 'nope'"):
        plugins.register_adapters("nope")
    row = {r["name"]: r for r in plugins.describe()}["missing"]
    assert row["host_importable"] is False


def test_step_kernel_hook_is_used_and_may_decline(fresh) -> None:  # type: ignore[no-untyped-def]
    """A plugin's kernel gets the step's FusedRow; returning None runs the reference."""
    calls = []

    class Kernel:
        @hookimpl
        def ddim_core_step_kernel(self, sample):  # type: ignore[no-untyped-def]
            if not isinstance(sample, np.ndarray):
                return None

            def kernel(x, m, z, c, clip, out):  # type: ignore[no-untyped-def]
                calls.append((tuple(c), clip, out))
                if x.shape[0] == 3:
                    return None  # declined: the reference path runs
                x0 = (c.x0_x * x - c.x0_m * m) / c.x0_div  # a FusedRow, clip off here
                eps = (c.eps_x * x - c.eps_m * m) / c.eps_div
                return c.sqrt_ab_to * x0 + c.direction * eps, x0

            return kernel

    fresh.register(Kernel(), name="test-kernel")
    plan = dc.make_plan(dc.DDIMConfig(clip_sample=False), 10)
    x, m = np.random.default_rng(0).standard_normal((2, 2, 4))
    got = dc.step(plan, m, 500, x)
    row = coefficients.fused_row(coefficients.StepKey(plan, 0.0, False), 500, False)
    assert calls == [(tuple(row), None, None)]
    np.testing.assert_allclose(got.prev_sample, reference.step(plan, m, 500, x)[0], rtol=1e-14)
    x3, m3 = np.ones((3, 2)), np.ones((3, 2))
    declined = dc.step(plan, m3, 500, x3).prev_sample
    assert len(calls) == 2
    np.testing.assert_allclose(declined, reference.step(plan, m3, 500, x3)[0], rtol=1e-14)


def test_a_kernel_of_a_plugin_left_out_or_unregistered_is_no_longer_used(fresh) -> None:  # type: ignore[no-untyped-def]
    """step_kernel's cached answer follows registrations: a plugin unregistered (by hand, or
    after raising in another hook) has its kernel forgotten, one registered later is asked."""
    calls: list[str] = []

    class Kernel:
        def __init__(self, name: str) -> None:
            self.name = name

        @hookimpl
        def ddim_core_step_kernel(self, sample):  # type: ignore[no-untyped-def]
            def kernel(x, m, z, c, clip, out):  # type: ignore[no-untyped-def]
                calls.append(self.name)
                return None  # declined: the reference runs

            return kernel

        @hookimpl
        def ddim_core_array_namespace(self, array):  # type: ignore[no-untyped-def]
            raise RuntimeError("bug in a plugin")

    plan = dc.make_plan(dc.DDIMConfig(), 10)
    x = np.ones((2, 2))
    dc.step(plan, x, 500, x)
    fresh.register(Kernel("late"), name="late")  # registered after the kernel was looked up
    dc.step(plan, x, 500, x)
    assert calls == ["late"]
    with pytest.warns(plugins.PluginWarning, match="'late' raised in ddim_core_array_namespace"):
        plugins.array_namespace(bytearray(1))
    dc.step(plan, x, 500, x)
    assert calls == ["late"]
    fresh.register(Kernel("by-hand"), name="by-hand")
    dc.step(plan, x, 500, x)
    fresh.unregister(name="by-hand")
    dc.step(plan, x, 500, x)
    assert calls == ["late", "by-hand"]


class _SlowKernel:
    """Offers `kernel` for every sample, once `go` is set (`entered` says it was asked)."""

    def __init__(self) -> None:
        self.entered, self.go = threading.Event(), threading.Event()

    @staticmethod
    def kernel(x, m, z, c, clip, out):  # type: ignore[no-untyped-def]
        return None

    @hookimpl
    def ddim_core_step_kernel(self, sample):  # type: ignore[no-untyped-def]
        self.entered.set()
        assert self.go.wait(30)
        return self.kernel


@pytest.mark.parametrize("change", ["unregister", "set_blocked", "cache_clear", "rebuilt"])
def test_a_kernel_looked_up_while_its_plugin_goes_is_not_kept(fresh, change) -> None:  # type: ignore[no-untyped-def]
    """A step on another thread asking the plugin for its kernel while the plugin is
    unregistered (blocked, or its manager replaced: `manager.cache_clear()`, and a new one
    built by a step meanwhile) may use that kernel, but it is not cached: it stored it after
    the cache was emptied, and every later step used the gone plugin's kernel."""
    slow = _SlowKernel()
    fresh.register(slow, name="slow")
    sample = np.ones(3, dtype=np.float32)
    got: list[object] = []
    thread = threading.Thread(target=lambda: got.append(plugins.step_kernel(sample)))
    thread.start()
    try:
        assert slow.entered.wait(30)
        if change == "unregister":
            fresh.unregister(name="slow")
        elif change == "set_blocked":
            fresh.set_blocked("slow")
        else:
            plugins.manager.cache_clear()  # the new manager has no "slow"
            if change == "rebuilt":
                assert plugins.step_kernel(sample) is not slow.kernel
    finally:
        slow.go.set()
        thread.join(30)
    assert got == [slow.kernel]  # the step under way
    assert plugins.step_kernel(sample) is not slow.kernel


def test_a_plugin_unregistered_is_asked_no_more_by_a_call_made_meanwhile(
    fresh, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """A hook call (or kernel lookup) made while pluggy removes a plugin, as another thread's
    may be, found the manager's version already counted: the hook's implementations (or the
    kernel) it read then, the plugin's among them, were kept for every later call."""
    slow = _SlowKernel()
    slow.go.set()
    fresh.register(_Answer("gone", []), name="gone")
    fresh.register(slow, name="slow")
    sample = np.ones(3, dtype=np.float32)
    remove = pluggy.HookCaller._remove_plugin

    def meanwhile(caller, plugin):  # type: ignore[no-untyped-def]
        plugins.array_namespace(bytearray(1))
        plugins.step_kernel(sample)
        return remove(caller, plugin)

    for name in ("slow", "gone"):  # each checked before another change empties the caches
        monkeypatch.setattr(pluggy.HookCaller, "_remove_plugin", meanwhile)
        fresh.unregister(name=name)
        monkeypatch.undo()
        assert plugins.step_kernel(sample) is not slow.kernel
        assert plugins.array_namespace(bytearray(1)) == ("gone" if name == "slow" else None)


def test_a_kernel_returning_neither_a_pair_nor_none_is_named_in_the_error(fresh) -> None:  # type: ignore[no-untyped-def]
    class Kernel:
        @hookimpl
        def ddim_core_step_kernel(self, sample):  # type: ignore[no-untyped-def]
            def odd_kernel(x, m, z, c, clip, out):  # type: ignore[no-untyped-def]
                return 3

            return odd_kernel

    fresh.register(Kernel(), name="odd")
    plan = dc.make_plan(dc.DDIMConfig(), 10)
    with pytest.raises(TypeError, match=r"kernel .*odd_kernel .*returned int 3; a kernel returns"):
        dc.step(plan, np.ones(2), 500, np.ones(2))


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        (lambda x: (x[:1], x[:1]), r"x_prev \(1,\) float64 for \(2,\) float64"),
        (lambda x: (x, x.astype(np.float32)), r"x0_pred \(2,\) float32 for \(2,\) float64"),
        (lambda x: (x.tolist(), x), "x_prev a list for a ndarray"),
    ],
)
def test_a_kernel_returning_arrays_unlike_the_sample_is_named(fresh, returned, message) -> None:  # type: ignore[no-untyped-def]
    """The hook promises a TypeError for a kernel answering anything but (x_prev, x0_pred) in
    the sample's dtype; only "a pair" was checked: a kernel returning arrays of another shape
    gave a wrong, broadcast sample (0.78 off in a review's probe), another library's failed
    later inside the model."""

    class Kernel:
        @hookimpl
        def ddim_core_step_kernel(self, sample):  # type: ignore[no-untyped-def]
            def odd_kernel(x, m, z, c, clip, out):  # type: ignore[no-untyped-def]
                return returned(x)

            return odd_kernel

    fresh.register(Kernel(), name="odd")
    plan = dc.make_plan(dc.DDIMConfig(), 10)
    with pytest.raises(TypeError, match=r"kernel .*odd_kernel .*returned " + message):
        dc.step(plan, np.ones(2), 500, np.ones(2))


def test_a_plugin_returning_garbage_is_warned_about_and_left_out(fresh) -> None:  # type: ignore[no-untyped-def]
    """An adapter hook answering no Adapter broke `adapters()`, hence `ddim-core plugins` and
    every `ddim-core` command (AttributeError); a kernel hook answering no callable broke
    every step ('int' object is not callable). Both are left out as a raising plugin is."""

    class Garbage:
        @hookimpl
        def ddim_core_adapter(self):  # type: ignore[no-untyped-def]
            return "not an adapter"

    class NoKernel:
        @hookimpl
        def ddim_core_step_kernel(self, sample):  # type: ignore[no-untyped-def]
            return 3

    fresh.register(Garbage(), name="garbage")
    with pytest.warns(plugins.PluginWarning, match="'garbage' returned str 'not an adapter'"):
        assert "diffusers" in plugins.adapters()
    assert not fresh.has_plugin("garbage")
    fresh.register(Garbage(), name="garbage")
    with pytest.warns(plugins.PluginWarning, match="'garbage' returned"):
        assert "garbage" not in {row["name"] for row in plugins.describe()}
    fresh.register(NoKernel(), name="no-kernel")
    plan = dc.make_plan(dc.DDIMConfig(), 10)
    with pytest.warns(plugins.PluginWarning, match="'no-kernel' returned int 3 .*a callable"):
        got = dc.step(plan, np.ones(2), 500, np.ones(2))
    want = reference.step(plan, np.ones(2), 500, np.ones(2))[0]
    np.testing.assert_allclose(got.prev_sample, want, rtol=1e-12)
    assert not fresh.has_plugin("no-kernel")


class _CounterGenerator:
    """A third party's generator: only its plugin draws from it."""


@pytest.mark.parametrize(
    ("answer", "returned"),
    [
        (lambda shape, like: [0.0] * shape[-1], "returned a builtins.list"),
        (
            lambda shape, like: np.zeros(shape[1:], like.dtype),
            r"returned noise of shape \(2,\) for shape \(3, 2\)",
        ),
        (lambda shape, like: 3.0, "returned a builtins.float"),
        (lambda shape, like: np.zeros(shape, np.int64), "returned noise of dtype int64 for"),
        (lambda shape, like: np.zeros(shape, np.complex64), "returned noise of dtype complex64"),
        (lambda shape, like: np.zeros(shape, bool), "returned noise of dtype bool for a float32"),
    ],
)
def test_a_noise_plugin_answering_no_noise_like_the_sample_is_named_and_left_out(
    fresh, answer, returned
) -> None:  # type: ignore[no-untyped-def]
    """A third party's noise of the wrong library or shape went into the step: the
    sample's error blamed the caller ("noise must be an array ... got list", "noise has shape
    (2,) but model_output has shape (3, 2)", with no noise passed; numpy noise for a torch
    sample: "pass arrays from one library"; integer, complex or boolean noise: "noise must be
    a real floating-point array"); it is now reported naming the plugin and left out, as an
    adapter hook's garbage is."""

    class WrongNoise:
        @hookimpl
        def ddim_core_standard_normal(self, generator, shape, like, draw):  # type: ignore[no-untyped-def]
            return answer(shape, like) if isinstance(generator, _CounterGenerator) else None

    fresh.register(WrongNoise(), name="wrong-noise")
    like = np.zeros((3, 2), np.float32)
    with (
        pytest.warns(plugins.PluginWarning, match=f"'wrong-noise' {returned}"),
        pytest.raises(TypeError, match="cannot draw noise"),
    ):
        plugins.standard_normal(_CounterGenerator(), (3, 2), like=like)
    assert not fresh.has_plugin("wrong-noise")


def test_registering_a_name_or_plugin_twice_is_a_short_error_naming_both(fresh) -> None:  # type: ignore[no-untyped-def]
    """Running docs/plugins.md's `register(mynoise, name="mynoise")` twice (a notebook cell
    run again) gave pluggy's ValueError, whose message went on with every registered plugin
    (the dict of all of them, numpy's, torch's, the adapters' modules ...)."""
    plugin = _Answer("twice", [])
    fresh.register(plugin, name="twice")
    with pytest.raises(ValueError, match="plugin named 'twice' is already registered") as info:
        fresh.register(_Answer("again", []), name="twice")
    assert "numpy" not in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match="already registered, as 'twice'") as info:
        fresh.register(plugin, name="other")
    assert "numpy" not in str(info.value) and "\n" not in str(info.value)
    assert fresh.get_plugin("twice") is plugin and not fresh.has_plugin("other")
    fresh.set_blocked("blocked")
    assert fresh.register(_Answer("blocked", []), name="blocked") is None  # pluggy's, as before


@pytest.mark.parametrize("requires", [None, 3])
def test_a_plugin_s_bad_requires_does_not_break_the_listing(fresh, requires) -> None:  # type: ignore[no-untyped-def]
    """`requires = None` (no libraries) or a non-iterable made `describe()`, hence `ddim-core
    plugins`, raise "TypeError: 'NoneType' object is not iterable", naming no plugin and
    listing none. None is no requirement; anything else is warned about naming the plugin,
    which is listed without it."""

    class Plugin(_Answer):
        pass

    Plugin.requires = requires  # type: ignore[attr-defined]
    fresh.register(Plugin("req", []), name="req")
    if requires is None:
        rows = {row["name"]: row for row in plugins.describe()}
    else:
        with pytest.warns(plugins.PluginWarning, match="plugin 'req'.*got int 3"):
            rows = {row["name"]: row for row in plugins.describe()}
    assert rows["req"]["requires"] == {} and rows["numpy"]["requires"] == {"numpy": True}


@pytest.mark.parametrize(
    ("fields", "wrong"),
    [
        ({"provides": "one string"}, "provides must be a tuple of str, got str"),
        ({"provides": ("x", 3)}, "provides must be a tuple of str"),
        ({"register": "json.dumps"}, 'register must be a callable or a "module:function"'),
        ({"command": 3}, "command must be a callable"),
        ({"host": None}, "host must be a non-empty str"),
    ],
)
def test_an_adapter_with_fields_of_the_wrong_kind_is_named_and_left_out(
    fresh, fields, wrong
) -> None:  # type: ignore[no-untyped-def]
    """A third party's Adapter with `provides="one string"` was listed by `ddim-core plugins`
    as "provides o, n, e,  , s, ..."; `register="json.dumps"` (no colon) failed only when
    registering ("No module named 'json.dumps'"); host=None broke the listing (AttributeError
    from find_spec(None)). Adapter checks its fields, and the plugin is left out naming it."""
    given = {"name": "odd", "host": "json", "provides": ("x",), "register": "json:dumps"}

    class Odd:
        @hookimpl
        def ddim_core_adapter(self):  # type: ignore[no-untyped-def]
            return Adapter(**{**given, **fields})

    fresh.register(Odd(), name="odd")
    with pytest.warns(plugins.PluginWarning, match=f"'odd' raised in ddim_core_adapter.*{wrong}"):
        assert "odd" not in plugins.adapters()
    assert not fresh.has_plugin("odd")
    assert Adapter(**{**given, "provides": ["x", "y"]}).provides == ("x", "y")


def test_an_adapter_naming_a_missing_function_says_which_adapter() -> None:
    """`ddim-core NAME` of an adapter whose command "json:nonexistent" names nothing raised
    "AttributeError: module 'json' has no attribute 'nonexistent'", naming no adapter."""
    adapter = Adapter("odd", "json", (), register="json:nonexistent", command="no_such_mod:main")
    with pytest.raises(ImportError, match="adapter 'odd': register 'json:nonexistent' names no"):
        adapter.run_register()
    with pytest.raises(ModuleNotFoundError, match="adapter 'odd': command 'no_such_mod:main'"):
        adapter.run_command([], "ddim-core odd")
    assert isinstance(Adapter("ok", "os", (), register="os:getcwd").run_register(), str)


def test_a_plugin_registered_by_hand_with_a_misspelled_hook_is_reported(fresh) -> None:  # type: ignore[no-untyped-def]
    """pluggy's check_pending() ran only when the entry points were loaded: a plugin registered
    by hand (docs/plugins.md's way to try one) implementing `ddim_core_standard_normel` stayed
    registered without a word, and its generator then had "cannot draw noise"."""

    class Typo:
        @hookimpl
        def ddim_core_standard_normel(self, generator, shape, like, draw):  # type: ignore[no-untyped-def]
            raise AssertionError("never called")

    with pytest.warns(plugins.PluginWarning, match="'typo' failed validation.*standard_normel"):
        assert fresh.register(Typo(), name="typo") is None
    assert not fresh.has_plugin("typo")
    assert fresh.register(_Answer("fine", []), name="fine") == "fine"


def test_every_hookspec_is_documented_and_tested() -> None:
    specs = [
        n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("ddim")
    ]
    tested = {  # each hook's own test here; the third-party test uses all three
        "ddim_core_array_namespace": test_array_namespace_hook_is_asked_only_for_unknown_arrays,
        "ddim_core_standard_normal": test_torch_generator_matches_diffusers_randn_tensor,
        "ddim_core_adapter": test_adapter_hook_and_register_adapters,
        "ddim_core_step_kernel": test_step_kernel_hook_is_used_and_may_decline,
    }
    assert sorted(specs) == sorted(tested)
    for name in specs:
        doc = inspect.getdoc(getattr(hookspecs, name)) or ""
        assert len(doc) > 60, f"{name} needs a docstring saying what it returns"


# --- built-in noise: one per backend -------------------------------------------------------


def test_numpy_generator_serves_every_backend(backend: Backend) -> None:
    """Drawn on the host, handed out in the sample's namespace, device and dtype."""
    like = backend.array(np.zeros((2, 3)), "float32")
    z = plugins.standard_normal(np.random.default_rng(7), (2, 3), like=like)
    assert backends.namespace(z=z) is backends.namespace(like=like)
    assert z.dtype == like.dtype and backend.device_of(z) == backend.device_of(like)
    assert tuple(z.shape) == (2, 3)
    if backend.has_values:  # torch:meta has none; every other backend checks them
        expected = np.random.default_rng(7).standard_normal((2, 3)).astype(np.float32)
        np.testing.assert_array_equal(to_numpy(z, dtype=None), expected)


def test_torch_generator_matches_diffusers_randn_tensor() -> None:
    torch = pytest.importorskip("torch")
    randn_tensor = pytest.importorskip("diffusers.utils.torch_utils").randn_tensor
    like = torch.zeros(3, 2, 4, dtype=torch.float64)
    ours = plugins.standard_normal(torch.Generator().manual_seed(5), (3, 2, 4), like=like)
    theirs = randn_tensor((3, 2, 4), generator=torch.Generator().manual_seed(5), dtype=like.dtype)
    assert torch.equal(ours, theirs)
    gens = [torch.Generator().manual_seed(s) for s in (1, 2, 3)]
    ours = plugins.standard_normal(gens, (3, 2, 4), like=like)
    gens = [torch.Generator().manual_seed(s) for s in (1, 2, 3)]
    assert torch.equal(ours, randn_tensor((3, 2, 4), generator=gens, dtype=like.dtype))
    with pytest.raises(TypeError, match=r"one per batch element.*a list of 2 for noise of shape"):
        plugins.standard_normal(gens[:2], (3, 2, 4), like=like)
    # a longer list: the first batch-size generators, as randn_tensor (it ignores the rest)
    gens = [torch.Generator().manual_seed(s) for s in (1, 2, 3)]
    ours = plugins.standard_normal(gens, (2, 2, 4), like=like)
    gens = [torch.Generator().manual_seed(s) for s in (1, 2, 3)]
    assert torch.equal(ours, randn_tensor((2, 2, 4), generator=gens, dtype=like.dtype))
    torch.manual_seed(11)
    drawn = plugins.standard_normal(None, (2,), like=like)
    torch.manual_seed(11)
    assert torch.equal(drawn, torch.randn(2, dtype=like.dtype))


def test_jax_key_folds_in_the_draw_index() -> None:
    jax = pytest.importorskip("jax")
    like = jax.numpy.zeros((4,), dtype=jax.numpy.float32)
    for key in (jax.random.PRNGKey(0), jax.random.key(0)):
        first = plugins.standard_normal(key, (4,), like=like, draw=0)
        again = plugins.standard_normal(key, (4,), like=like, draw=0)
        second = plugins.standard_normal(key, (4,), like=like, draw=1)
        assert first.dtype == like.dtype
        assert bool((first == again).all()) and not bool((first == second).all())


def test_sample_with_a_jax_key_draws_step_i_from_fold_in_of_i() -> None:
    """docs/backends.md: sample(..., generator=key) draws step i's noise as
    jax.random.normal(fold_in(key, i)), i the loop's step (0, 1, ...), not its timestep: the
    draw index the README's hook table says the JAX plugin folds in."""
    jax = pytest.importorskip("jax")
    config = dc.DDIMConfig(clip_sample=False)
    x = jax.numpy.full((2, 3), 0.5, dtype=jax.numpy.float32)
    timesteps = [int(t) for t in dc.make_plan(config, 4).timesteps]

    def given(key: object, folded: list[int]) -> object:
        noise = [jax.random.normal(jax.random.fold_in(key, i), x.shape, x.dtype) for i in folded]
        return dc.sample(lambda x, t: 0.1 * x, x, config, 4, eta=1.0, noise=noise)

    for key in (jax.random.PRNGKey(0), jax.random.key(0)):
        y = dc.sample(lambda x, t: 0.1 * x, x, config, 4, eta=1.0, generator=key)
        assert bool((y == given(key, [0, 1, 2, 3])).all())
        assert not bool((y == given(key, timesteps)).all())  # not fold_in(key, timestep)
    page = (Path(__file__).resolve().parent.parent / "docs" / "backends.md").read_text("utf-8")
    assert "`jax.random.normal(fold_in(key, i))`, i = 0, 1, ... the loop's step" in page


def test_a_batch_of_jax_keys_is_refused_and_keeps_the_jax_plugin(fresh: object) -> None:
    """dc.sample(..., eta=1.0, generator=jax.random.split(key, 2)) (a key per batch element,
    as a list of torch.Generators is): the built-in JAX plugin passed the key array to fold_in,
    which raised, so it was warned about as a broken plugin and unregistered for the rest of
    the process, and every later draw from a single, valid key raised 'cannot draw noise'.
    Only a single key (typed of shape (), or raw uint32 of shape (2,)) is the plugin's now; a
    batch of keys gets the TypeError naming the generator, and the plugin stays."""
    jax = pytest.importorskip("jax")
    x = jax.numpy.ones((2, 3), dtype=jax.numpy.float32)
    config = dc.DDIMConfig()
    keys = jax.random.split(jax.random.key(0), 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", plugins.PluginWarning)
        with pytest.raises(TypeError, match=r"PRNGKeyArray cannot draw noise.*single JAX PRNG key"):
            dc.sample(lambda x, t: 0.1 * x, x, config, 3, eta=1.0, generator=keys)
        y = dc.sample(lambda x, t: 0.1 * x, x, config, 3, eta=1.0, generator=jax.random.key(0))
    assert y.shape == x.shape and bool(jax.numpy.isfinite(y).all())


def test_a_built_in_draw_that_raises_raises_to_the_caller_and_stays(fresh: object) -> None:
    """dc.sample(..., eta=1.0, generator=torch.Generator()) under torch.func.vmap (whose
    default randomness="error" refuses random calls): torch's RuntimeError inside the built-in
    torch plugin made plugins.call warn of a broken plugin and unregister it for the process,
    so the call raised 'cannot draw noise' instead of torch's advice, and every later draw
    from a torch.Generator, outside vmap too, raised the same. A built-in draw raises for its
    caller's arguments: the error now reaches the caller as raised, and the plugin stays."""
    torch = pytest.importorskip("torch")
    config = dc.DDIMConfig()

    def run(x):
        g = torch.Generator().manual_seed(0)
        return dc.sample(lambda x, t: 0.1 * x, x, config, 3, eta=1.0, generator=g)

    with warnings.catch_warnings():
        warnings.simplefilter("error", plugins.PluginWarning)
        with pytest.raises(RuntimeError, match="randomness"):
            torch.func.vmap(run)(torch.ones(2, 3))
        y = run(torch.ones(2, 3))
    assert y.shape == (2, 3) and bool(torch.isfinite(y).all())


def test_threads_leaving_out_one_broken_plugin_each_get_their_noise(fresh, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Two threads drawing noise (a threaded server's requests) while a third party's noise
    plugin raises: each was told to leave it out and both unregistered it at once; pluggy's
    unregister is not thread-safe, so the thread that came second got pluggy's 'ValueError:
    plugin <...Broken object> not found' where the docs promise a PluginWarning and the rest
    working (also 'dictionary changed size during iteration' when another thread registered
    meanwhile). The manager now registers and unregisters under one lock: the second finds
    the plugin gone. The patched get_hookcallers widens the window to make the race sure."""
    meet = threading.Barrier(2, timeout=10)

    class Broken:
        @hookimpl
        def ddim_core_standard_normal(self, generator, shape, like, draw):  # type: ignore[no-untyped-def]
            meet.wait()  # both threads are in the hook before either leaves it out
            raise RuntimeError("broken plugin")

    fresh.register(Broken(), name="broken")
    get_hookcallers = fresh.get_hookcallers

    def slow_get_hookcallers(plugin):  # type: ignore[no-untyped-def]
        found = get_hookcallers(plugin)
        time.sleep(0.05)  # the other thread reads the callers too, before this one removes
        return found

    monkeypatch.setattr(fresh, "get_hookcallers", slow_get_hookcallers)
    results: list[object] = []

    def draw() -> None:
        try:
            results.append(plugins.standard_normal(np.random.default_rng(0), (2,), np.zeros(2)))
        except Exception as exc:  # the failure this test reports
            results.append(exc)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", plugins.PluginWarning)
        threads = [threading.Thread(target=draw) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    expected = np.random.default_rng(0).standard_normal(2)
    assert len(results) == 2
    for got in results:
        assert isinstance(got, np.ndarray), got
        np.testing.assert_array_equal(got, expected)
    assert not fresh.has_plugin("broken")


@pytest.mark.parametrize("style", ["wrapper", "hookwrapper"])
def test_a_wrapper_passing_on_a_built_in_draws_error_stays(fresh, style: str) -> None:  # type: ignore[no-untyped-def]
    """A third party's pass-through wrapper around ddim_core_standard_normal (wrapper=True
    returning what it yields, or an old-style hookwrapper reading outcome.get_result()), and a
    torch.Generator draw under torch.func.vmap: the built-in torch draw's RuntimeError (the
    caller's error), passed on by the wrapper, was taken for the wrapper's own: plugins.call
    warned that 'tracer' raised in ddim_core_standard_normal and unregistered it for the
    process. What a wrapper passes on from the implementations it wraps is theirs: it reaches
    the caller as raised and the wrapper stays; one raising on its own is still left out."""
    torch = pytest.importorskip("torch")
    calls: list[str] = []

    class Tracer:
        if style == "wrapper":

            @hookimpl(wrapper=True)
            def ddim_core_standard_normal(self, generator, shape, like, draw):  # type: ignore[no-untyped-def]
                calls.append("draw")
                return (yield)
        else:

            @hookimpl(hookwrapper=True)
            def ddim_core_standard_normal(self, generator, shape, like, draw):  # type: ignore[no-untyped-def]
                calls.append("draw")
                outcome = yield
                outcome.get_result()

    fresh.register(Tracer(), name="tracer")
    g = torch.Generator().manual_seed(0)

    def draw(x):  # type: ignore[no-untyped-def]
        return plugins.standard_normal(g, tuple(x.shape), like=x)

    with warnings.catch_warnings():
        warnings.simplefilter("error", plugins.PluginWarning)
        warnings.simplefilter("ignore", pluggy.PluggyTeardownRaisedWarning)  # old-style's
        for _ in range(2):
            with pytest.raises(RuntimeError, match="randomness"):
                torch.func.vmap(draw)(torch.zeros(3, 2))
            assert fresh.has_plugin("tracer")
        assert draw(torch.zeros(3, 2)).shape == (3, 2)
    assert calls == ["draw"] * 3

    class Raising:
        @hookimpl(wrapper=True)
        def ddim_core_standard_normal(self, generator, shape, like, draw):  # type: ignore[no-untyped-def]
            yield
            raise RuntimeError("a bug of its own")

    fresh.register(Raising(), name="raising")
    with pytest.warns(plugins.PluginWarning, match="'raising' raised"):
        assert draw(torch.zeros(3, 2)).shape == (3, 2)
    assert not fresh.has_plugin("raising") and fresh.has_plugin("tracer")


def test_jax_key_draws_where_the_sample_is() -> None:
    """A sample placed on a second device (or sharded over two), noise from a JAX key: the
    draw came on the default device, so dc.sample's first noisy step raised 'noise is on
    device CpuDevice(id=0) but model_output is on CpuDevice(id=1)' (the key being all a caller
    gives, nothing could be moved). The draw now takes the sample's placement. Two CPU
    devices need a fresh process (XLA_FLAGS is read when jax starts)."""
    pytest.importorskip("jax")
    code = """
        import jax, jax.numpy as jnp, numpy as np
        import ddim_core as dc
        from ddim_core import plugins
        from jax.sharding import Mesh, NamedSharding, PartitionSpec
        devices = jax.devices()
        assert len(devices) == 2, devices
        config = dc.DDIMConfig()
        sharded = NamedSharding(Mesh(np.array(devices), ("b",)), PartitionSpec("b"))
        for where in (devices[1], sharded):
            x = jax.device_put(jnp.full((2, 3), 0.5), where)
            z = plugins.standard_normal(jax.random.key(0), (2, 3), like=x, draw=0)
            assert z.sharding == x.sharding, (z.sharding, x.sharding)
            y = dc.sample(lambda x, t: 0.1 * x, x, config, 3, eta=1.0, generator=jax.random.key(0))
            assert y.sharding == x.sharding, (y.sharding, x.sharding)
        x = jnp.full((2, 3), 0.5)  # uncommitted: the draw stays uncommitted, as JAX places it
        assert not plugins.standard_normal(jax.random.key(0), (2, 3), like=x, draw=0).committed
        print("ok")
    """
    run_on_jax_cpu_devices(code, devices=2)


def test_cupy_generator_draws_on_the_gpu() -> None:
    cupy = pytest.importorskip("cupy")
    try:
        like = cupy.zeros((2, 2), dtype=cupy.float16)
    except Exception as exc:  # cupy installed without a usable GPU
        pytest.skip(f"no GPU: {exc}")
    z = plugins.standard_normal(cupy.random.default_rng(0), (2, 2), like=like)
    assert isinstance(z, cupy.ndarray) and z.dtype == like.dtype
    ref = cupy.random.default_rng(0).standard_normal((2, 2), dtype=cupy.float32)
    assert bool((z == ref.astype(cupy.float16)).all())


def test_unknown_generator_is_a_clear_type_error() -> None:
    with pytest.raises(TypeError, match=r"generator of type builtins\.object cannot draw noise"):
        plugins.standard_normal(object(), (2,), like=np.zeros(2))


def test_the_generator_error_lists_only_the_registered_built_ins(
    monkeypatch: pytest.MonkeyPatch, fresh: object
) -> None:
    """With DDIM_CORE_BLOCK_PLUGINS=numpy a NumPy Generator cannot draw, and the TypeError
    still listed numpy.random.Generator as built in. Now the list is of the registered
    built-ins, and the blocked ones are named as blocked."""
    with pytest.raises(TypeError, match=r"built in: numpy\.random\.Generator \(any sample"):
        plugins.standard_normal(object(), (2,), like=np.zeros(2))
    monkeypatch.setenv(plugins.BLOCK_ENV, "numpy,jax")
    plugins.manager.cache_clear()
    with pytest.raises(TypeError) as caught:
        plugins.standard_normal(np.random.default_rng(0), (2,), like=np.zeros(2))
    message = str(caught.value)
    built_in = message.partition("built in: ")[2].partition("; blocked")[0]
    assert "torch.Generator" in built_in and "cupy.random.Generator" in built_in
    assert "numpy.random.Generator" not in built_in and "JAX" not in built_in
    assert f"; blocked by {plugins.BLOCK_ENV}: numpy, jax;" in message


def test_sample_with_a_torch_generator_uses_the_torch_plugin() -> None:
    torch = pytest.importorskip("torch")
    config = dc.DDIMConfig(clip_sample=False)
    model = dc.GaussianMixture.create([[0.0]], [1.0], config)
    x = torch.randn(3, 1, dtype=torch.float64)
    got = dc.sample(model, x, config, 4, eta=0.5, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    noise = [torch.randn(3, 1, generator=g, dtype=torch.float64) for _ in range(4)]
    assert torch.equal(got, dc.sample(model, x, config, 4, eta=0.5, noise=noise))
