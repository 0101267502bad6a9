"""The plugin manager: loads the `ddim_core` entry points and calls hooks through pluggy.

Built-in backends and adapters are entry points of the ddim-core distribution itself, loaded
the same way as a third party's. Hooks are called by pluggy (firstresult, ordering, wrappers
as pluggy defines them); each hook implementation is guarded when it is registered, so a
plugin that fails to import, fails pluggy's validation (`check_pending()` included), raises
in a hook or answers what its hook does not allow (`ddim_core_adapter` no Adapter,
`ddim_core_step_kernel` nothing callable, `ddim_core_standard_normal` no array of `like`'s
library, of `shape` and real floating) is reported with a `PluginWarning` naming it and
left out; the core keeps working. A built-in's noise draw is not guarded: what it raises is
its caller's error (a generator torch refuses under torch.func.vmap), and reaches the caller
(a wrapper passing it on is not blamed for it).
`DDIM_CORE_BLOCK_PLUGINS=name1,name2` blocks plugins by entry-point name.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import itertools
import os
import threading
import warnings
from collections.abc import Callable, Generator
from typing import Any, TypeVar

import pluggy

from . import backends, builtins, hookspecs
from .hookspecs import PROJECT, Adapter

T = TypeVar("T")

BLOCK_ENV = "DDIM_CORE_BLOCK_PLUGINS"
# The built-in backend plugins, registered directly when ddim-core runs from a source tree
# whose entry points are not installed.
BUILTINS = tuple(builtins.PLUGINS)
# What each built-in noise plugin draws from, by its name, for standard_normal's TypeError
_DRAWS = {
    "numpy": "numpy.random.Generator (any sample library)",
    "torch": "torch.Generator or a list with one per batch element (torch samples)",
    "jax": "a single JAX PRNG key, not a batch of them (JAX samples)",
    "cupy": "cupy.random.Generator (CuPy samples)",
    "mindspore": "mindspore.Generator, None or a list of them or of numpy Generators, one per "
    "batch element (MindSpore samples)",
}


# step_kernel's answers, per array type and dtype (emptied when plugins come or go)
_kernels: dict[tuple[type, Any], Any] = {}
# Guards storing a looked-up kernel against `_forget_kernels`: `_forgotten[0]` counts the
# emptyings, so a lookup under way when plugins went (on another thread) is not stored.
_kernels_lock = threading.Lock()
_forgotten = [0]
# Manager versions, unique (`next` is atomic where `+= 1` on threads may lose a count).
_versions = itertools.count(1)


def _forget_kernels() -> None:
    """Empty step_kernel's cache, and have a lookup under way not store its answer."""
    with _kernels_lock:
        _forgotten[0] += 1
        _kernels.clear()


class PluginWarning(UserWarning):
    """A plugin could not be loaded, failed validation or raised in a hook, and was left out.

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore", PluginWarning)  # silence plugin reports
    """


class _PluginFailed(Exception):
    """A hook implementation raised (the original exception is the __cause__), or returned
    what its hook does not allow (`what`: the answer, described)."""

    def __init__(self, plugin: str, hook: str, what: str = "") -> None:
        super().__init__(plugin, hook)
        self.plugin, self.hook, self.what = plugin, hook, what

    def warn(self) -> None:
        if self.what:
            _warn(self.plugin, f"returned {self.what}", None)
        else:
            _warn(self.plugin, f"raised in {self.hook}", self.__cause__)


# What a hook may answer besides None, checked where the answer is not on a per-step path
# (an adapter's is read by every `ddim-core` command, a kernel's once per type and dtype).
_ANSWERS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "ddim_core_adapter": ("an Adapter", lambda answer: isinstance(answer, Adapter)),
    "ddim_core_step_kernel": ("a callable", callable),
}


class _Manager(pluggy.PluginManager):
    """pluggy's manager, each hook implementation guarded as it is registered: an exception it
    raises comes out of the hook call as `_PluginFailed` naming the plugin, for `call`."""

    monitored = False  # add_hookcall_monitoring / enable_tracing: every call through pluggy
    version = 0  # new after each registration, unregistration (`_direct` caches per version)

    def __init__(self, project_name: str) -> None:
        super().__init__(project_name)
        # name -> (plugin, "distribution version") of the entry points loaded, for `describe`
        self.distributions: dict[str, tuple[object, str]] = {}
        # pluggy's (un)registration is not thread-safe: threads leaving out the same broken
        # plugin at once would remove it twice (pluggy's "plugin ... not found")
        self.lock = threading.RLock()

    def unregister(self, plugin: Any = None, name: str | None = None) -> Any:
        with self.lock:
            try:
                return super().unregister(plugin, name)
            finally:  # after: a call meanwhile (another thread's) may have read its hooks
                self.version = next(_versions)
                _forget_kernels()  # the kernel found may be the unregistered plugin's

    def add_hookcall_monitoring(self, before: Any, after: Any) -> Callable[[], None]:
        self.monitored = True
        self.version = next(_versions)
        return super().add_hookcall_monitoring(before, after)

    def register(self, plugin: object, name: str | None = None) -> str | None:
        with self.lock:
            return self._register(plugin, name)

    def _register(self, plugin: object, name: str | None) -> str | None:
        _check_not_registered(self, plugin, name)
        try:
            name = super().register(plugin, name)
            if name is not None:  # None: blocked
                for caller in self.get_hookcallers(plugin) or []:
                    if _callers_error(plugin, caller.name):
                        continue
                    for impl in caller.get_hookimpls():
                        if impl.plugin is plugin:  # pluggy reads `function` at each call
                            guarded = _guard(impl, caller.name)
                            impl.function = guarded  # type: ignore[misc]  # declared Final
                _check_pending(self)  # a misspelled hook, also in a plugin registered by hand
            return name if name is None or self.has_plugin(name) else None
        finally:  # after, as in unregister
            self.version = next(_versions)
            _forget_kernels()  # the new plugin may offer a kernel


def _check_not_registered(pm: pluggy.PluginManager, plugin: object, name: str | None) -> None:
    """Raise ValueError naming the name and plugin where registering `plugin` as `name` would
    register one of them twice (pluggy's own error lists every registered plugin)."""
    if plugin is None:  # pluggy ignores it
        return
    name = name or pm.get_canonical_name(plugin)
    taken = pm.get_plugin(name)
    if taken is not None:
        raise ValueError(
            f"a ddim-core plugin named {name!r} is already registered ({taken!r:.80}); "
            f"unregister it first (plugins.manager().unregister(name={name!r})) or give "
            "another name"
        )
    other = pm.get_name(plugin)
    if other is not None:
        raise ValueError(
            f"ddim-core plugin {plugin!r:.80} is already registered, as {other!r}; a plugin "
            f"is registered once (unregister {other!r} first to register it as {name!r})"
        )


def _callers_error(plugin: object, hook: str) -> bool:
    """Whether what `plugin` raises in `hook` is its caller's error, left unguarded: a
    built-in's noise draw raises for the arguments it was given (torch refusing a random call
    under torch.func.vmap), which the caller must see as raised; guarded, it would be taken for
    a broken plugin and the built-in unregistered for the process."""
    built_in = any(plugin is p for p in builtins.PLUGINS.values())
    return built_in and hook == "ddim_core_standard_normal"


def _guard(impl: pluggy.HookImpl, hook: str) -> Callable[..., Any]:
    """`impl.function`, raising `_PluginFailed` for any exception of its own (for a wrapper,
    also those of its code after the yield)."""
    fn: Callable[..., Any] = impl.function
    plugin = impl.plugin_name
    kind, allowed = _ANSWERS.get(hook, ("anything", lambda answer: True))

    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except _PluginFailed:  # another plugin's, in a hook this one called
            raise
        except Exception as exc:
            raise _PluginFailed(plugin, hook) from exc

    def guarded_answer(*args: Any, **kwargs: Any) -> Any:
        answer = guarded(*args, **kwargs)
        if answer is not None and not allowed(answer):
            what = f"{type(answer).__name__} {answer!r:.60} in {hook}, not None or {kind}"
            raise _PluginFailed(plugin, hook, what)
        return answer

    def guarded_wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        # what the wrapped implementations raised, given to the wrapper (thrown in by
        # pluggy, or in an old-style wrapper's Result): passed on, it is theirs (a built-in
        # draw's is its caller's error), not the wrapper's own
        passed: list[BaseException] = []
        wrapper = fn(*args, **kwargs)
        try:
            sent = next(wrapper)
            while True:
                try:
                    received = yield sent
                except BaseException as exc:
                    passed.append(exc)
                    sent = wrapper.throw(exc)
                else:
                    if isinstance(received, pluggy.Result) and received.exception is not None:
                        passed.append(received.exception)
                    sent = wrapper.send(received)
        except StopIteration as stop:
            return stop.value
        except _PluginFailed:
            raise
        except Exception as exc:
            if any(exc is p for p in passed):
                raise
            raise _PluginFailed(plugin, hook) from exc

    def guarded_noise(*args: Any) -> Any:  # pluggy and `call` pass the arguments by position
        answer = guarded(*args)
        if answer is not None:
            wrong = _not_noise(answer, dict(zip(impl.argnames, args, strict=False)))
            if wrong:
                raise _PluginFailed(plugin, hook, f"{wrong} in {hook}")
        return answer

    if impl.wrapper or impl.hookwrapper:
        return functools.wraps(fn)(guarded_wrapper)
    if hook == "ddim_core_standard_normal":  # a third party's: the built-ins' go unguarded
        return functools.wraps(fn)(guarded_noise)
    if hook in _ANSWERS:
        return functools.wraps(fn)(guarded_answer)
    return functools.wraps(fn)(guarded)


def _not_noise(answer: Any, given: dict[str, Any]) -> str:
    """What is wrong with a noise plugin's `answer` to the arguments `given` ("" if nothing):
    not an array of `like`'s library, not of `shape`, or not real floating (another floating
    dtype than `like`'s is cast by the step). Caught here, it would reach the step as the
    caller's error ("noise has shape ..." where the caller passed no noise)."""
    like, shape = given.get("like"), given.get("shape")
    try:
        xp = backends.namespace(noise=answer, like=like)
    except (TypeError, ValueError) as exc:  # not an array, another library or device
        return f"a {type(answer).__module__}.{type(answer).__qualname__} ({exc})"
    if shape is not None and tuple(answer.shape) != tuple(shape):
        return f"noise of shape {tuple(answer.shape)} for shape {tuple(shape)}"
    if not backends.is_real_floating(xp, answer):
        sample = "" if like is None else f" for a {like.dtype} sample"  # (an impl without like)
        return f"noise of dtype {answer.dtype}{sample}, not real floating"
    return ""


def _built_once(build: Callable[[], T]) -> Any:
    """`build()` called once per process, also when many threads ask at once (a cache alone
    would let each of them build it); `cache_clear()` forgets it (and, as it builds the plugin
    manager, the step kernels its plugins offered), `builds` counts builds."""
    lock = threading.Lock()
    box: list[T] = []

    @functools.wraps(build)
    def get() -> T:
        if box:
            return box[0]
        with lock:
            if not box:
                box.append(build())
                get.builds += 1  # type: ignore[attr-defined]
            return box[0]

    def cache_clear() -> None:
        box.clear()
        _forget_kernels()  # the kernels the forgotten manager's plugins offered

    get.cache_clear = cache_clear  # type: ignore[attr-defined]
    get.builds = 0  # type: ignore[attr-defined]
    return get


@_built_once
def manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, with every unblocked entry point loaded and checked.

    Built once (cached); `manager.cache_clear()` makes the next call build a new one (after
    changing `DDIM_CORE_BLOCK_PLUGINS`, for example).

    Returns
    -------
    pluggy.PluginManager

    Examples
    --------
    >>> manager().has_plugin("numpy")
    True
    """
    _forget_kernels()  # kernels found by an earlier manager
    pm = _Manager(PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in blocked():
        pm.set_blocked(name)
    # ddim-core's own first: a third party's entry point cannot take a built-in's name
    for ep in sorted(importlib.metadata.entry_points(group=PROJECT), key=_third_party):
        if pm.is_blocked(ep.name):
            continue
        if pm.has_plugin(ep.name):
            taken = pm.distributions.get(ep.name, (None, "?"))[1]
            what = f"of {_distribution(ep)} takes the name of a plugin of {taken}"
            _warn(ep.name, what, None, hint=False)  # blocking the name would block both
            continue
        _load(pm, ep)
    # none loaded: a source tree, its entry points not installed (`register` refuses blocked ones)
    if not any(pm.has_plugin(name) for name in BUILTINS):
        for name, plugin in builtins.PLUGINS.items():
            pm.register(plugin, name=name)
    _check_pending(pm)
    return pm


def _numba_plugin_registered() -> bool:
    """Whether the "numba" plugin is registered (not blocked): torch-fused runs numba's pass
    only then (`builtins._numba_registered`)."""
    return bool(manager().has_plugin("numba"))


builtins._numba_registered = _numba_plugin_registered  # (builtins cannot import this module)


def blocked() -> list[str]:
    """Plugin names blocked by the environment variable `DDIM_CORE_BLOCK_PLUGINS`.

    Returns
    -------
    list of str

    Examples
    --------
    >>> import os
    >>> blocked() == [n for n in os.environ.get(BLOCK_ENV, "").split(",") if n]
    True
    """
    return [n.strip() for n in os.environ.get(BLOCK_ENV, "").split(",") if n.strip()]


def _distribution(ep: importlib.metadata.EntryPoint) -> str:
    """The "name version" of the distribution declaring `ep`."""
    return f"{ep.dist.name} {ep.dist.version}" if ep.dist else "?"


def _third_party(ep: importlib.metadata.EntryPoint) -> bool:
    """Whether `ep` is not ddim-core's own (a sort key: ddim-core's own come first)."""
    name = ep.dist.name if ep.dist else ""
    return name.lower().replace("_", "-") != "ddim-core"


def _load(pm: _Manager, ep: importlib.metadata.EntryPoint) -> None:
    try:
        plugin = ep.load()
        if pm.register(plugin, name=ep.name) is not None:
            pm.distributions[ep.name] = (plugin, _distribution(ep))
    except Exception as exc:  # a third party's bug must not break the core
        _warn(ep.name, f"failed to load from {ep.value!r}", exc)


def _check_pending(pm: pluggy.PluginManager) -> None:
    """pluggy's `check_pending()`: a plugin implementing a hook that hookspecs does not
    declare (a misspelled name) is warned about and unregistered."""
    while True:
        try:
            pm.check_pending()
        except pluggy.PluginValidationError as exc:
            _warn(pm.get_name(exc.plugin) or repr(exc.plugin), "failed validation", exc)
            pm.unregister(exc.plugin)
        else:
            return


def _warn(name: str, what: str, exc: BaseException | None, hint: bool = True) -> None:
    warnings.warn(
        f"ddim-core plugin {name!r} {what}"
        + (f": {type(exc).__name__}: {exc}" if exc is not None else "")
        + "; it is skipped"
        + (f" (set {BLOCK_ENV}={name} to silence this)" if hint else ""),
        PluginWarning,
        stacklevel=3,
    )


def call(hook: str, only: str | None = None, **kwargs: Any) -> Any:
    """Call a hook through pluggy, leaving out any plugin that raises.

    For a firstresult hook the first result that is not None (or None), else the list of
    results. A plugin that raises is warned about by name and unregistered, and the hook is
    called again without it, so the result is as if that plugin had never been registered.

    Parameters
    ----------
    hook : str
        The hook's name (``"ddim_core_..."``).
    only : str, optional
        Ask just the plugin of that name.
    **kwargs
        The hook's arguments, by name.

    Returns
    -------
    object or list

    Examples
    --------
    >>> sorted(a.name for a in call("ddim_core_adapter"))
    ['comfyui', 'diffusers', 'k-diffusion', 'mindone']
    """
    pm = manager()
    if only is None:
        direct = _direct(pm, hook)
        if direct is not None:
            try:
                for fn, names in direct:
                    result = fn(*[kwargs[n] for n in names])
                    if result is not None:
                        return result
                return None
            except _PluginFailed as failed:  # as below: left out, and asked again without it
                failed.warn()
                pm.unregister(name=failed.plugin)
    while True:
        caller = getattr(pm.hook, hook)
        if only is not None:
            others = [p for p in pm.get_plugins() if pm.get_name(p) != only]
            caller = pm.subset_hook_caller(hook, others)
        try:
            return caller(**kwargs)
        except _PluginFailed as failed:
            failed.warn()
            pm.unregister(name=failed.plugin)


def _direct(pm: _Manager, hook: str) -> list[tuple[Callable[..., Any], tuple[str, ...]]] | None:
    """A firstresult hook's implementations as (function, argument names), in the order pluggy
    calls them (last registered first, tryfirst/trylast sorted), when calling them in a loop
    is what pluggy does (no wrappers, no call monitoring): the loop saves pluggy's ~2 us per
    call on the per-step hooks (noise). Else None: pluggy calls it."""
    version = pm.version  # read first: a change meanwhile (another thread's) outdates it
    found = _direct_calls.get(hook)
    if found is not None and found[0] == version and found[1] is pm:
        direct: list[tuple[Callable[..., Any], tuple[str, ...]]] | None = found[2]
        return direct
    caller = getattr(pm.hook, hook)
    impls = caller.get_hookimpls()
    spec = caller.spec
    plain = spec is not None and spec.opts.get("firstresult") and not pm.monitored
    plain = plain and not any(i.wrapper or i.hookwrapper for i in impls)
    direct = [(i.function, tuple(i.argnames)) for i in reversed(impls)] if plain else None
    _direct_calls[hook] = (version, pm, direct)
    return direct


_direct_calls: dict[str, tuple[int, Any, Any]] = {}


def array_namespace(array: Any) -> Any:
    """The namespace a plugin resolves for an array array-api-compat does not know, or None.

    Parameters
    ----------
    array : object

    Returns
    -------
    namespace or None

    Examples
    --------
    >>> array_namespace(object()) is None
    True
    """
    return call("ddim_core_array_namespace", array=array)


# backends asks this for arrays array-api-compat does not know (backends imports no plugin code)
backends.set_namespace_fallback(array_namespace)


def standard_normal(
    generator: Any, shape: tuple[int, ...], like: Any, draw: int = 0, out: Any = None
) -> Any:
    """Standard normal noise of `shape` from `generator`, in `like`'s namespace, device, dtype.

    Parameters
    ----------
    generator : object
        A numpy Generator, torch.Generator (or one per batch element), JAX key, CuPy
        Generator, or anything a plugin draws from; None draws from torch's global generator
        for torch samples.
    shape : tuple of int
        The noise's shape.
    like : array
        The sample.
    draw : int, default 0
        The draw's index within a loop.
    out : array, optional
        A buffer like `like`, of `shape`, that plugins may draw into (and return) instead of
        allocating: pass one only if its previous contents are no longer needed.

    Returns
    -------
    array

    Raises
    ------
    TypeError
        No plugin can draw from this generator for this sample.

    Examples
    --------
    >>> import numpy as np
    >>> standard_normal(np.random.default_rng(0), (2, 3), like=np.zeros((2, 3))).shape
    (2, 3)
    """
    z = call(
        "ddim_core_standard_normal",
        generator=generator,
        shape=tuple(shape),
        like=like,
        draw=draw,
        out=out,
    )
    if z is None:
        raise TypeError(
            f"generator of type {type(generator).__module__}.{type(generator).__qualname__} "
            f"cannot draw noise for a {type(like).__module__}.{type(like).__qualname__} sample; "
            f"{_built_in_draws()}; other generators need a plugin (see ddim_core.hookspecs)"
            + (
                f"; got a list of {len(generator)} for noise of shape {tuple(shape)}"
                if isinstance(generator, list | tuple)
                else ""
            )
        )
    return z


def _built_in_draws() -> str:
    """The generators the registered built-in plugins draw from, and the blocked ones."""
    pm = manager()
    blocked = [name for name in _DRAWS if pm.is_blocked(name)]
    found = [draws for name, draws in _DRAWS.items() if pm.has_plugin(name)]
    text = "built in: " + (", ".join(found) or "none")
    return text + (f"; blocked by {BLOCK_ENV}: {', '.join(blocked)}" if blocked else "")


def step_kernel(sample: Any) -> Any:
    """The fused step kernel a plugin offers for `sample`'s type and dtype (cached), or None.

    Parameters
    ----------
    sample : array

    Returns
    -------
    callable or None

    Examples
    --------
    >>> import numpy as np
    >>> step_kernel(np.zeros(2, dtype=np.int64)) is None  # no kernel for integers
    True
    """
    key = (type(sample), sample.dtype)
    try:  # emptied whenever plugins come or go, and by `manager.cache_clear()`
        return _kernels[key]
    except KeyError:
        manager()  # built first: a new manager empties the cache
        forgotten = _forgotten[0]
        kernel = call("ddim_core_step_kernel", sample=sample)
        with _kernels_lock:
            if _forgotten[0] == forgotten:  # no plugin came or went meanwhile
                _kernels[key] = kernel
        return kernel


def adapters() -> dict[str, Adapter]:
    """Every registered adapter, by name.

    Of adapters sharing a name the first registered plugin's is used (a built-in's before a
    third party's, as for entry-point names); the others are reported with a `PluginWarning`.

    Returns
    -------
    dict of str to Adapter

    Examples
    --------
    >>> adapters()["diffusers"].host
    'diffusers'
    """
    found: dict[str, tuple[str, Adapter]] = {}
    for plugin, adapter in adapter_plugins():
        first = found.setdefault(adapter.name, (plugin, adapter))[0]
        if first != plugin:
            warnings.warn(
                f"ddim-core plugin {plugin!r}: its adapter {adapter.name!r} is left out, plugin "
                f"{first!r} (registered before it) has an adapter of that name",
                PluginWarning,
                stacklevel=2,
            )
    return {name: adapter for name, (_, adapter) in found.items()}


def adapter_plugins() -> list[tuple[str, Adapter]]:
    """Each registered adapter with the name of the plugin offering it, in the order the
    plugins were registered (ddim-core's own first).

    Returns
    -------
    list of (str, Adapter)

    Examples
    --------
    >>> ("diffusers", adapters()["diffusers"]) in adapter_plugins()
    True
    """
    pm = manager()
    found = []
    # under the manager's lock: pluggy's name lookups iterate its registry, which another
    # thread leaving out a broken plugin would change meanwhile (reentrant: a plugin left out
    # here is unregistered under it)
    with pm.lock:
        for name, plugin in pm.list_name_plugin():
            hooks = pm.get_hookcallers(plugin) if plugin is not None else None
            if any(caller.name == "ddim_core_adapter" for caller in hooks or []):
                found += [(name, adapter) for adapter in call("ddim_core_adapter", only=name)]
    return found


def host_importable(adapter: Adapter) -> bool:
    """Whether the adapter's host framework can be imported (checked without importing it).

    Parameters
    ----------
    adapter : Adapter
        An adapter, as `adapters()` returns them.

    Returns
    -------
    bool
        True when `importlib.util.find_spec(adapter.host)` finds the host.

    Examples
    --------
    >>> host_importable(Adapter("json", "json", (), register=lambda: None))
    True
    """
    return importable(adapter.host)


def importable(module: str) -> bool:
    """Whether `module` can be imported, found with `importlib.util.find_spec` (a top-level name
    is never imported; for a dotted name its parent packages are).

    Parameters
    ----------
    module : str
        An import name.

    Returns
    -------
    bool

    Examples
    --------
    >>> importable("json"), importable("no_such_module_here")
    (True, False)
    """
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def requirements(plugin: object) -> dict[str, bool]:
    """The libraries a plugin object declares in its `requires` attribute (a tuple of import
    names), each with whether it can be imported (`importable`: nothing is imported).

    Parameters
    ----------
    plugin : object
        A registered plugin.

    Returns
    -------
    dict of str to bool
        Empty for a plugin without `requires` or with ``requires = None``.

    Raises
    ------
    TypeError
        `requires` is neither None, a str nor an iterable of them.

    Examples
    --------
    >>> class Plugin:
    ...     requires = ("json", "no_such_module_here")
    >>> requirements(Plugin())
    {'json': True, 'no_such_module_here': False}
    """
    names = getattr(plugin, "requires", None)
    if names is None:
        return {}
    if isinstance(names, str):
        names = (names,)
    try:
        names = tuple(names)
    except TypeError:
        raise TypeError(
            f"a plugin's `requires` is a tuple of import names, got {type(names).__name__} "
            f"{names!r:.60}"
        ) from None
    return {str(name): importable(str(name)) for name in names}


def register_adapters(*names: str) -> list[str]:
    """Register DDIM into the named hosts' registries (all importable hosts when none named).

    Parameters
    ----------
    *names : str
        Adapter names ("diffusers", "k-diffusion", "comfyui"); none: every adapter whose host
        can be imported.

    Returns
    -------
    list of str
        The adapters registered.

    Raises
    ------
    ValueError
        An unknown adapter name.
    ImportError
        A named adapter's host is not installed (with no names: skipped).

    Examples
    --------
    >>> register_adapters("diffusers")  # doctest: +SKIP
    ['diffusers']
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


def _registered_from(pm: pluggy.PluginManager, name: str, plugin: object) -> str:
    """Where the plugin registered as `name` came from, for `describe`: the distribution of
    the entry point that loaded it, ddim-core for a built-in registered from a source tree,
    else "registered at run time" (by `register`, as docs/plugins.md's example is)."""
    loaded, distribution = getattr(pm, "distributions", {}).get(name, (None, ""))
    if loaded is plugin:
        return str(distribution)
    if builtins.PLUGINS.get(name) is plugin:
        return "ddim-core (source tree)"
    return "registered at run time"


def describe() -> list[dict[str, Any]]:
    """One row per registered plugin, sorted by name.

    Returns
    -------
    list of dict
        ``name``, ``distribution`` (of the entry point that loaded it, "ddim-core 0.1.0";
        "registered at run time" for one registered by hand), ``hooks`` (the hook names it
        implements), ``requires`` (library -> importable, from the plugin's `requires` and an
        adapter's host; checked without importing), ``adapter`` (its `Adapter` or None) and
        ``host_importable`` (None for a plugin that is no adapter).

    Examples
    --------
    >>> rows = {row["name"]: row for row in describe()}
    >>> rows["numpy"]["requires"], rows["numpy"]["hooks"]
    ({'numpy': True}, ['ddim_core_standard_normal'])
    """
    pm = manager()
    rows = []
    adapters_of: dict[str, Adapter] = {}
    for owner, found in adapter_plugins():  # (each plugin's first)
        adapters_of.setdefault(owner, found)
    for name in sorted(name for name, plugin in pm.list_name_plugin() if plugin is not None):
        adapter = adapters_of.get(name)
        plugin = pm.get_plugin(name)
        if plugin is None:  # raised in ddim_core_adapter: warned about and unregistered
            continue
        hooks = sorted(c.name for c in pm.get_hookcallers(plugin) or [])
        try:
            needs = requirements(plugin)
        except TypeError as exc:  # one plugin's bad `requires` must not break the listing
            message = f"ddim-core plugin {name!r}: {exc}; listed without it"
            warnings.warn(message, PluginWarning, stacklevel=2)
            needs = {}
        if adapter is not None:
            needs.setdefault(adapter.host, host_importable(adapter))
        rows.append(
            {
                "name": name,
                "distribution": _registered_from(pm, name, plugin),
                "hooks": hooks,
                "requires": needs,
                "adapter": adapter,
                "host_importable": host_importable(adapter) if adapter else None,
            }
        )
    return rows
