"""The plugin manager: loads the `ddim_core` entry points and calls hooks defensively.

Built-in backends and adapters are entry points of the ddim-core distribution itself, loaded
the same way as a third party's. A plugin that fails to import, fails pluggy's validation or
raises in a hook is reported with a `PluginWarning` naming it and left out; the core keeps
working. `DDIM_CORE_BLOCK_PLUGINS=name1,name2` blocks plugins by entry-point name.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import warnings
from collections.abc import Iterator
from typing import Any

import pluggy

from . import hookspecs
from .hookspecs import PROJECT, Adapter

BLOCK_ENV = "DDIM_CORE_BLOCK_PLUGINS"
# The built-in backend plugins (builtins.PLUGINS), registered directly when ddim-core runs from
# a source tree whose entry points are not installed.
BUILTINS = ("numpy", "torch", "jax", "cupy", "numba", "torch-fused", "cupy-fused")


_kernels: dict[tuple[type, Any], Any] = {}  # step_kernel's answers, per array type and dtype


class PluginWarning(UserWarning):
    """A plugin could not be loaded or raised in a hook, and was left out."""


@functools.cache
def manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, with every unblocked entry point loaded."""
    _kernels.clear()  # kernels found by an earlier manager
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in blocked():
        pm.set_blocked(name)
    for ep in importlib.metadata.entry_points(group=PROJECT):
        if not (pm.is_blocked(ep.name) or pm.has_plugin(ep.name)):
            _load(pm, ep)
    if not any(pm.has_plugin(name) or pm.is_blocked(name) for name in BUILTINS):
        from . import builtins

        for name, plugin in builtins.PLUGINS.items():
            pm.register(plugin, name=name)
    return pm


def blocked() -> list[str]:
    """Plugin names blocked by the environment variable."""
    return [n.strip() for n in os.environ.get(BLOCK_ENV, "").split(",") if n.strip()]


def _load(pm: pluggy.PluginManager, ep: importlib.metadata.EntryPoint) -> None:
    try:
        pm.register(ep.load(), name=ep.name)
    except Exception as exc:  # a third party's bug must not break the core
        _warn(ep.name, f"failed to load from {ep.value!r}", exc)


def _warn(name: str, what: str, exc: BaseException) -> None:
    warnings.warn(
        f"ddim-core plugin {name!r} {what}: {type(exc).__name__}: {exc}; it is skipped "
        f"(set {BLOCK_ENV}={name} to silence this)",
        PluginWarning,
        stacklevel=3,
    )


def call(hook: str, *, first: bool, **kwargs: Any) -> Any:
    """Call `hook` on every plugin, last registered first, skipping None results.

    first=True returns the first result (or None); first=False returns the list of results.
    """
    results = []
    for _, result in _results(hook, kwargs):
        if result is not None:
            if first:
                return result
            results.append(result)
    return None if first else results


def _results(hook: str, kwargs: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """(plugin name, result) per implementation; a plugin that raises is warned about and
    unregistered."""
    pm = manager()
    for impl in reversed(getattr(pm.hook, hook).get_hookimpls()):
        try:
            result = impl.function(*[kwargs[arg] for arg in impl.argnames])
        except Exception as exc:
            _warn(impl.plugin_name, f"raised in {hook}", exc)
            pm.unregister(name=impl.plugin_name)
            continue
        yield impl.plugin_name, result


def array_namespace(array: Any) -> Any:
    """The namespace a plugin resolves for an array array-api-compat does not know, or None."""
    return call("ddim_core_array_namespace", first=True, array=array)


def standard_normal(generator: Any, shape: tuple[int, ...], like: Any, draw: int = 0) -> Any:
    """Standard normal noise of `shape` from `generator`, in `like`'s namespace/device/dtype."""
    z = call(
        "ddim_core_standard_normal",
        first=True,
        generator=generator,
        shape=tuple(shape),
        like=like,
        draw=draw,
    )
    if z is None:
        raise TypeError(
            f"generator of type {type(generator).__module__}.{type(generator).__qualname__} "
            f"cannot draw noise for a {type(like).__module__}.{type(like).__qualname__} sample; "
            "built in: numpy.random.Generator (any sample library), torch.Generator or a list "
            "with one per batch element (torch samples), a JAX PRNG key (JAX samples), "
            "cupy.random.Generator (CuPy samples); other generators need a plugin (see "
            "ddim_core.hookspecs)"
        )
    return z


def step_kernel(sample: Any) -> Any:
    """The fused step kernel a plugin offers for `sample`'s type and dtype (cached), or None."""
    manager()  # a new manager (after cache_clear) empties this cache first
    key = (type(sample), sample.dtype)
    try:
        return _kernels[key]
    except KeyError:
        kernel = _kernels[key] = call("ddim_core_step_kernel", first=True, sample=sample)
        return kernel


def adapters() -> dict[str, Adapter]:
    """Every registered adapter, by name."""
    return {a.name: a for a in call("ddim_core_adapter", first=False)}


def host_importable(adapter: Adapter) -> bool:
    """Whether the adapter's host framework can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec(adapter.host) is not None
    except (ImportError, ValueError):
        return False


def register_adapters(*names: str) -> list[str]:
    """Register DDIM into the named hosts' registries (all importable hosts when none named).

    Returns the names registered. Naming an unknown adapter or one whose host is not
    installed raises ValueError / ImportError, and a named adapter's error propagates; with
    no names, an adapter whose registration fails is warned about and skipped.
    """
    known = adapters()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown adapter {unknown[0]!r}; registered adapters: {sorted(known)}")
    chosen = [known[n] for n in names] if names else list(known.values())
    done = []
    for adapter in chosen:
        if not host_importable(adapter):
            if names:
                raise ImportError(f"adapter {adapter.name!r} needs {adapter.host!r} installed")
            continue
        try:
            adapter.run_register()
        except Exception as exc:
            if names:
                raise
            _warn(adapter.name, "failed to register into its host", exc)
            continue
        done.append(adapter.name)
    return done


def describe() -> list[dict[str, Any]]:
    """One row per registered plugin: name, distribution, hooks, adapter and host status."""
    pm = manager()
    dists = {
        ep.name: f"{ep.dist.name} {ep.dist.version}" if ep.dist else "?"
        for ep in importlib.metadata.entry_points(group=PROJECT)
    }
    by_plugin = dict(_results("ddim_core_adapter", {}))
    rows = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda item: item[0]):
        if plugin is None:  # blocked
            continue
        hooks = sorted(c.name for c in pm.get_hookcallers(plugin) or [])
        adapter = by_plugin.get(name)
        rows.append(
            {
                "name": name,
                "distribution": dists.get(name, "ddim-core (source tree)"),
                "hooks": hooks,
                "adapter": adapter,
                "host_importable": host_importable(adapter) if adapter else None,
            }
        )
    return rows
