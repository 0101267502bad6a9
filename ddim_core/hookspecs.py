"""The hooks a ddim-core plugin can implement (pluggy project name "ddim_core").

A plugin is any module or object with functions marked `@hookimpl` and named as below. It is
registered through the `ddim_core` entry-point group, as the built-in backends and adapters are:

    # pyproject.toml of a third-party package
    [project.entry-points.ddim_core]
    my_backend = "my_package.ddim_plugin"

    # my_package/ddim_plugin.py
    from ddim_core.hookspecs import hookimpl

    @hookimpl
    def ddim_core_standard_normal(generator, shape, like, draw):
        if isinstance(generator, MyGenerator):
            return generator.normal(shape, dtype=like.dtype)
        return None  # not mine: the next plugin is asked

Hooks are called through pluggy: plugins are asked in turn, last registered first (pluggy's
`tryfirst`/`trylast` and `wrapper=True` work as pluggy documents them). For the `firstresult`
hooks the first result that is not None wins and later plugins are not asked;
`ddim_core_adapter` collects one result per plugin. A plugin that raises in a hook, or answers
an adapter hook with no Adapter, a kernel hook with nothing callable or a noise hook with no
array of `like`'s library, of `shape` and real floating, is reported with a
warning naming it and unregistered, and the call goes on as if it had never been
registered; a plugin implementing a `ddim_core_*` hook not declared here (a misspelling) is
reported and unregistered when it is registered (from its entry point, or by hand).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any

import pluggy

PROJECT = "ddim_core"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@dataclasses.dataclass(frozen=True)
class Adapter:
    """A host-framework adapter, as `ddim-core plugins` lists it.

    The core imports no adapter: `register` and `command` may be "module:function" strings,
    resolved only when used.

    Attributes
    ----------
    name : str
        Short name ("diffusers"); also the `ddim-core NAME ...` command of `command` (unless
        it is one of ddim-core's own commands, "plugins" or "demo" say: that one runs).
    host : str
        The host's import name, checked for importability without importing it.
    provides : tuple of str
        What the adapter offers, for people to read.
    register : callable or str
        Adds DDIM to the host's own registry (imports the host; called by
        `plugins.register_adapters`).
    command : callable or str, optional
        The adapter's command line, called as ``command(args, prog)`` by
        `ddim-core NAME ARGS...` and returning the exit status (None: 0, as for `sys.exit`).

    Raises
    ------
    TypeError
        A field of another type: `name` and `host` non-empty str, `provides` a tuple or
        list of str, `register` (and `command` unless None) a callable or a
        "module:function" str. Raised in a plugin's `ddim_core_adapter`, the plugin is
        reported and left out.

    Examples
    --------
    >>> adapter = Adapter("demo", "json", ("nothing",), register="json:dumps")
    >>> adapter.run_register.__name__, adapter.command is None
    ('run_register', True)
    """

    name: str
    host: str
    provides: tuple[str, ...]
    register: Callable[[], Any] | str
    command: Callable[[list[str], str], int] | str | None = None

    def __post_init__(self) -> None:
        for field in ("name", "host"):
            value = getattr(self, field)
            if not isinstance(value, str) or not value:
                raise TypeError(f"Adapter {field} must be a non-empty str, got {value!r:.60}")
        provides = self.provides
        if not isinstance(provides, tuple | list) or not all(isinstance(p, str) for p in provides):
            raise TypeError(
                f"Adapter {self.name!r}: provides must be a tuple of str, got "
                f"{type(provides).__name__} {provides!r:.60}"
            )
        object.__setattr__(self, "provides", tuple(provides))  # frozen: hashable as declared
        for field in ("register", "command"):
            value = getattr(self, field)
            if field == "command" and value is None:
                continue
            if not (callable(value) or (isinstance(value, str) and ":" in value)):
                raise TypeError(
                    f"Adapter {self.name!r}: {field} must be a callable or a "
                    f'"module:function" str, got {type(value).__name__} {value!r:.60}'
                )

    def run_register(self) -> Any:
        """Call `register`; a "module:function" string is imported first.

        So a plugin module can name its host-importing registration without importing
        anything itself.

        Returns
        -------
        object
            What `register` returns (the adapters return the names they registered).
        """
        return _resolve(self.register, self.name, "register")()

    def run_command(self, args: list[str], prog: str) -> int:
        """Run `command` with the command-line arguments after the adapter's name.

        Parameters
        ----------
        args : list of str
            The arguments after `ddim-core NAME`.
        prog : str
            The program name for messages ("ddim-core NAME").

        Returns
        -------
        int
            The exit status: what `command` returns, 0 for None (as `sys.exit`).

        Raises
        ------
        ValueError
            The adapter has no command.
        TypeError
            `command` returned neither an int nor None.
        """
        if self.command is None:
            raise ValueError(f"adapter {self.name!r} has no command line")
        status = _resolve(self.command, self.name, "command")(args, prog)
        if status is None:  # a main(argv) that returns nothing: success, as sys.exit(None)
            return 0
        if not isinstance(status, int):
            raise TypeError(
                f"adapter {self.name!r}: command returned {type(status).__name__} "
                f"{status!r:.60}; a command returns its exit status (an int) or None"
            )
        return int(status)


def _resolve(target: Callable[..., Any] | str, adapter: str, field: str) -> Callable[..., Any]:
    """A callable, or the function a "module:function" string names (imported now); one
    that names no module or function is an ImportError naming the adapter and field."""
    if not isinstance(target, str):
        return target
    module, _, attr = target.partition(":")
    where = f"adapter {adapter!r}: {field} {target!r} names"
    try:
        imported = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:  # a module it imports is missing: that error says which
            raise
        raise ModuleNotFoundError(f"{where} no module {module!r}", name=module) from None
    function: Callable[..., Any] | None = getattr(imported, attr, None)
    if not callable(function):
        raise ImportError(f"{where} no function: {module!r} has no callable {attr!r}")
    return function


@hookspec(firstresult=True)
def ddim_core_array_namespace(array: Any) -> Any:
    """The array-API namespace of `array`, a type array-api-compat does not know, or None.

    Called only after array-api-compat has failed, so a plugin adding e.g. MLX or MindSpore
    arrays costs nothing on the common backends. The namespace must follow the array API
    standard. One whose library rounds Python floats below float64 in arithmetic with float64
    arrays sets `rounds_python_floats = True`: the core then passes its coefficients to float64
    arrays as 0-d arrays (`backends.exact_scalars`; the built-in MindSpore namespace does).

    Parameters
    ----------
    array : object
        The array to resolve.

    Returns
    -------
    namespace or None

    Examples
    --------
    >>> from ddim_core import plugins
    >>> plugins.array_namespace(object()) is None  # no plugin knows a plain object
    True
    """


@hookspec(firstresult=True)
def ddim_core_standard_normal(
    generator: Any, shape: tuple[int, ...], like: Any, draw: int, out: Any
) -> Any:
    """Standard normal noise of `shape` drawn from `generator`, or None if it is not yours.

    Parameters
    ----------
    generator : object
        What the user passed (`sample(generator=...)`, an adapter's `generator=`).
    shape : tuple of int
        The noise's shape.
    like : array
        The result lives in its namespace, on its device, in its dtype.
    draw : int
        Counts the draws of one loop (0, 1, ...): stateless generators (JAX keys) fold it in
        so that every step gets fresh noise; stateful ones ignore it.
    out : array or None
        A buffer like `like` (library, device, dtype; C-contiguous, of `shape`) that the noise
        may be drawn into, to return (a caller that draws every step reuses one: no
        allocation, no page faults); an implementation may ignore it and return a new array.
        An implementation that does not take `out` is called without it (pluggy).

    Returns
    -------
    array or None

    Examples
    --------
    >>> import numpy as np
    >>> from ddim_core import plugins
    >>> plugins.standard_normal(np.random.default_rng(0), (3,), like=np.zeros(3)).shape
    (3,)
    """


@hookspec(firstresult=True)
def ddim_core_step_kernel(sample: Any) -> Any:
    """A fused DDIM step for arrays of `sample`'s type and dtype, or None.

    Asked once per array type and dtype (the answer is cached). The kernel is called as
    ``kernel(x_t, model_output, noise, c, clip, out)`` with `c` a `coefficients.FusedRow`
    (Python floats for a scalar timestep; 0-d or (batch, 1, ...) arrays on the sample's device
    for a timestep array that cannot be read without a sync), `clip` the clip range r or None,
    `noise` an array or None, and `out` None or a pair of arrays (x_prev, x0_pred) to write
    into. It returns (x_prev, x0_pred) in the sample's dtype, or None for inputs it does not
    take (the reference array-API path then runs); anything else is a TypeError naming it.
    Kernels must equal the reference to rounding; one that computes the FusedRow's formulas
    in float64 in their order, leaving out the terms whose weight is 0.0 as the reference does
    (0 * inf is NaN), equals it bit for bit on float64 samples.

    A kernel may also have a device-table form, ``kernel.gather(x_t, model_output, noise,
    table, timesteps, eps_from_x0, clip, out)``: `table` the (T, 9) float64 array of every
    timestep's first nine FusedRow fields on the sample's device
    (`coefficients.fused_device_table`), `timesteps` the checked integer array; the kernel then
    reads each element's row itself (CuPy's: one launch where gathering costs more).

    Parameters
    ----------
    sample : array
        An array of the type and dtype asked about.

    Returns
    -------
    callable or None

    Examples
    --------
    >>> import numpy as np
    >>> from ddim_core import plugins
    >>> kernel = plugins.step_kernel(np.zeros(2))  # numba's, when numba is installed
    >>> kernel is None or callable(kernel)
    True
    """


@hookspec
def ddim_core_adapter() -> Adapter | None:
    """Describe the host-framework adapter this plugin provides (None if it provides none).

    Returns
    -------
    Adapter or None

    Examples
    --------
    >>> from ddim_core import plugins
    >>> sorted(plugins.adapters())
    ['comfyui', 'diffusers', 'k-diffusion', 'mindone']
    """
