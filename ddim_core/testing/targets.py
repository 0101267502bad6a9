"""What `ddim-core check` runs: a target named `module:attr`, loaded and wrapped so that the
conformance suite drives every kind the same way.

- "scheduler": a diffusers-style scheduler class: `cls(**options)`, `set_timesteps(n)`,
  `timesteps`, `step(model_output, t, sample, eta=..., variance_noise=...,
  use_clipped_model_output=..., return_dict=False)`.
- "inverse": a diffusers-style inverse scheduler class (guessed from "Inverse" in its name; its
  `step` takes no eta): `step(model_output, t, sample)` moves from the level of the forward
  plan's t_prev up to t.
- "sampler" / "inverse-sampler": a k-diffusion-style function `fn(model, x, sigmas, ...)`,
  `model(x, sigma * ones(batch))` returning the denoised x_0; sigmas descend to sample and
  ascend to invert (a name containing "inverse" marks an inverse sampler).

Options a class does not take (missing from its constructor, and, where that takes **kwargs,
from its base class's it passes them on to) are left at their defaults; configs that need
them, and inputs the target rejects (constructor or set_timesteps raises), are skipped as
unsupported. A `step(..., **kwargs)` is likewise given its base class's step options,
unsupported where it raises a TypeError naming one, and a sampler taking **kwargs is given
eta and noise_sampler on the same terms. Any other exception from `step` (or the sampler) is
a failure.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from ddim_core.config import DDIMConfig
from ddim_core.plugins import importable
from ddim_core.schedules import Schedule, schedule

from . import reference
from .assertions import timestep_ints
from .backends import BACKENDS, Backend, backend, to_numpy

KINDS = ("scheduler", "inverse", "sampler", "inverse-sampler")
DEFAULTS = DDIMConfig()


class Unsupported(Exception):
    """The target rejects this input (an option it lacks, a constructor or set_timesteps that
    raises): the example is skipped, not failed.

    Examples
    --------
    >>> s = wrap(reference.ReferenceScheduler)
    >>> try:
    ...     s.make(DDIMConfig(prev_timestep="stride"))
    ... except Unsupported as e:
    ...     print(e)
    takes no prev_timestep
    """


class Crash(AssertionError):
    """The target raised where it must not (in step, or when sharing an instance).

    An AssertionError: the area fails, with this message as its counterexample.

    Examples
    --------
    >>> class Broken(reference.ReferenceScheduler):
    ...     def step(self, *args, **kwargs):
    ...         raise RuntimeError("shape mismatch")
    >>> s = wrap(Broken)
    >>> instance = s.make(DDIMConfig())
    >>> s.set_timesteps(instance, 10)[:3]
    [900, 800, 700]
    >>> try:
    ...     s.step(instance, np.zeros(2), 900, np.ones(2))
    ... except Crash as e:
    ...     print(e)
    step raises RuntimeError: shape mismatch
    """


class Malformed(Crash):
    """The target returned what no caller can use: a step or loop result that is no array or
    not of its input's shape, or timesteps that are not integers.

    A `Crash`: the area fails with this message; the areas that read a Crash as something
    more particular (host syncs: a read back to the host) let it through as it is.

    Examples
    --------
    >>> class ReturnsNothing(reference.ReferenceScheduler):
    ...     def step(self, *args, **kwargs):
    ...         super().step(*args, **kwargs)  # forgets to return
    >>> s = wrap(ReturnsNothing)
    >>> instance = s.make(DDIMConfig())
    >>> s.set_timesteps(instance, 10)[:1]
    [900]
    >>> try:
    ...     s.step(instance, np.zeros(2), 900, np.ones(2))
    ... except Malformed as e:
    ...     print(e)
    step returns NoneType as prev_sample, not an array
    """


def _need_array(value: Any, like: Any, what: str, who: str = "") -> None:
    """Malformed unless `value` is an array (it has a shape and a dtype) of `like`'s shape:
    the areas read results as arrays, and DDIM keeps the sample's shape."""
    if not (hasattr(value, "shape") and hasattr(value, "dtype")):
        raise Malformed(f"{who}returns {type(value).__name__} as {what}, not an array")
    if tuple(value.shape) != tuple(like.shape):
        raise Malformed(
            f"{who}returns {what} of shape {tuple(value.shape)} for an input of shape "
            f"{tuple(like.shape)}"
        )


def describe_error(exc: BaseException) -> str:
    """`TypeName: first line of the message` (at most 160 characters).

    Parameters
    ----------
    exc : BaseException
        The exception.

    Returns
    -------
    str
        Its type's name and its message's first line, or the name alone when the message is
        empty; cut to 157 characters and "..." when longer than 160.

    Examples
    --------
    >>> describe_error(ValueError("bad eta\\nmore lines"))
    'ValueError: bad eta'
    >>> describe_error(RuntimeError())
    'RuntimeError'
    """
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def load(spec: str) -> Any:
    """The object `module:attr` names (attr may be dotted); ValueError when the module
    cannot be imported (it raises, or has a syntax error) or lacks attr.

    Parameters
    ----------
    spec : str
        "module:attr", e.g. "diffusers:DDIMScheduler".

    Returns
    -------
    object
        The attribute.

    Raises
    ------
    ValueError
        If `spec` is not of the form module:attr, the module cannot be imported (whatever it
        raises), or it lacks the attribute.

    Examples
    --------
    >>> load("ddim_core.config:DDIMConfig")
    <class 'ddim_core.config.DDIMConfig'>
    >>> load("ddim_core.config:NoSuchClass")
    Traceback (most recent call last):
    ...
    ValueError: 'ddim_core.config' has no attribute 'NoSuchClass'
    """
    module_name, colon, attr = spec.partition(":")
    if not colon or not module_name or not attr:
        raise ValueError(
            f"TARGET must be written module:attr (e.g. diffusers:DDIMScheduler), got {spec!r}"
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as e:  # ImportError, SyntaxError, or whatever the module raises
        raise ValueError(f"cannot import {module_name!r}: {describe_error(e)}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{module_name!r} has no attribute {attr!r}") from None
    return obj


def guess_kind(obj: Any) -> str:
    """scheduler / inverse (a class with "inverse", "inversion" or "invert" in its name) /
    sampler / inverse-sampler (a function so named: `sample_ddim_inverse`, `invert_edict`).
    A step without eta is no evidence: many forward
    schedulers (Euler, DPM-Solver) take none.

    Parameters
    ----------
    obj : object
        The target: a scheduler class or a sampler function.

    Returns
    -------
    str
        One of KINDS.

    Raises
    ------
    ValueError
        If `obj` is a class without step and set_timesteps, an instance of a scheduler class,
        or neither a class nor callable.

    Examples
    --------
    >>> guess_kind(reference.ReferenceInverseScheduler)
    'inverse'
    >>> def sample_inverse_ddim(model, x, sigmas):
    ...     return x
    >>> guess_kind(sample_inverse_ddim)
    'inverse-sampler'
    >>> guess_kind(reference.kdiffusion_invert)
    'inverse-sampler'
    """
    if inspect.isclass(obj):
        _need_scheduler(obj)
        return "inverse" if _inverting(obj.__name__) else "scheduler"
    _need_no_instance(obj)
    if callable(obj):
        return "inverse-sampler" if _inverting(getattr(obj, "__name__", "")) else "sampler"
    raise ValueError(f"{_short(obj)} is neither a scheduler class nor a sampler function")


def _short(obj: Any) -> str:
    """`obj` named in one line: its qualified name, or its repr's first line (a diffusers
    scheduler's repr is its config, many lines of JSON), cut to 80 characters."""
    text = getattr(obj, "__qualname__", None) or (repr(obj).splitlines() or [""])[0]
    return text if len(text) <= 80 else text[:77] + "..."


def _need_no_instance(obj: Any) -> None:
    """ValueError for an instance of a scheduler class (`scheduler = DDIMScheduler()`, as a
    pipeline holds one): the check makes its own instance for every config it draws."""
    cls = type(obj)
    if not inspect.isclass(obj) and hasattr(cls, "step") and hasattr(cls, "set_timesteps"):
        raise ValueError(
            f"an instance of {cls.__module__}.{cls.__qualname__}, not a scheduler class: name "
            f"the class ({cls.__module__}:{cls.__qualname__}); the check makes an instance for "
            "every config it draws"
        )


def _inverting(name: str) -> bool:
    """Whether a target's name says it inverts ("inverse" covers "inversion" too: "invers")."""
    return "invers" in name.lower() or "invert" in name.lower()


def _need_scheduler(obj: Any, kind: str | None = None) -> None:
    _need_no_instance(obj)
    if not (inspect.isclass(obj) and hasattr(obj, "step") and hasattr(obj, "set_timesteps")):
        name = _short(obj)
        given = f"kind={kind!r}: " if kind else ""
        raise ValueError(f"{given}{name} is not a scheduler class (with step and set_timesteps)")


def _named(cls: Any, method: str) -> set[str]:
    """The names `cls.<method>` takes by keyword; where it also takes **kwargs (a subclass
    passing them on to its base's method), those the base class's method takes as well."""
    names: set[str] = set()
    for klass in inspect.getmro(cls):
        if method not in vars(klass) or klass is object:
            continue
        found = _parameters(getattr(klass, method))
        names |= {
            n for n, p in found.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }
        if not any(p.kind is p.VAR_KEYWORD for p in found.values()):
            break
    return names


def _parameters(fn: Any) -> dict[str, inspect.Parameter]:
    try:
        return dict(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return {}


# --- diffusers-style scheduler classes ---------------------------------------------------------


@dataclasses.dataclass
class Scheduler:
    """A diffusers-style scheduler class, forward or inverse, on one array library.

    The areas drive the class through it: `make` an instance for a config, `set_timesteps`,
    `step`; what the class does not take is `Unsupported`, what it raises in step a `Crash`.

    Attributes
    ----------
    cls : type
        The scheduler class.
    inverse : bool
        Whether it is an inverse scheduler (its step goes from t_prev up to t).
    backend : Backend
        The array library its inputs are made in.

    Examples
    --------
    >>> s = Scheduler(reference.ReferenceScheduler, False, backend("numpy"))
    >>> instance = s.make(DDIMConfig(timestep_spacing="trailing"))
    >>> s.set_timesteps(instance, 5)
    [999, 799, 599, 399, 199]
    >>> prev_sample, x0 = s.step(instance, np.zeros(2), 999, np.ones(2))
    >>> x0  # noise 0 predicted: x_t / sqrt(alpha_bar_t) = 157.4, clipped to 1 (clip_sample)
    array([1., 1.])
    """

    cls: Any
    inverse: bool
    backend: Backend

    def __post_init__(self) -> None:
        self.options = _named(self.cls, "__init__") - {"self"}
        own = set(_parameters(self.cls.step))
        self.step_params = _named(self.cls, "step")
        # what a step(..., **kwargs) passes on to its base class's: a TypeError naming one of
        # these is Unsupported, as an option missing from the signature is
        self.forwarded = self.step_params - own
        self.set_timesteps_params = set(_parameters(self.cls.set_timesteps))

    @property
    def name(self) -> str:
        """The class's module and qualified name."""
        return f"{self.cls.__module__}.{self.cls.__qualname__}"

    def accepts(self, config: DDIMConfig) -> bool:
        """Whether every option of `config` that differs from the default is one the class
        takes (ddim-core's own prev_timestep must be "plan": exact DDIM).

        Parameters
        ----------
        config : DDIMConfig
            The config an area would make an instance for.

        Returns
        -------
        bool
            True when the class's constructor takes all of its non-default options.
        """
        if config.prev_timestep != "plan":
            return False
        return all(name in self.options for name in _changed(config) if name != "prev_timestep")

    def make(self, config: DDIMConfig) -> Any:
        """An instance configured as `config` (Unsupported when the class rejects it).

        Parameters
        ----------
        config : DDIMConfig
            The config; its non-default options are passed to the constructor.

        Returns
        -------
        object
            The instance.

        Raises
        ------
        Unsupported
            If the class takes not every non-default option (`accepts`), or its constructor
            raises for them.
        """
        if not self.accepts(config):
            missing = sorted(n for n in _changed(config) if n not in self.options)
            raise Unsupported(f"takes no {', '.join(missing) or 'prev_timestep'}")
        kwargs = {
            name: getattr(config, name)
            for name in _changed(config)
            if name in self.options and name != "prev_timestep"
        }
        if kwargs.get("trained_betas") is not None:
            kwargs["trained_betas"] = list(kwargs["trained_betas"])
        try:
            return self.cls(**kwargs)
        except Exception as e:
            raise Unsupported(describe_error(e)) from None

    def set_timesteps(self, instance: Any, n: int, device: Any = None) -> list[int]:
        """set_timesteps(n) (Unsupported when it raises); the timesteps it sets (none read
        when `device` is given: they may have no values there).

        Parameters
        ----------
        instance : object
            An instance of the class.
        n : int
            The number of inference steps.
        device : object, optional
            Passed as set_timesteps' device when given.

        Returns
        -------
        list of int
            The timesteps it set, or [] when `device` is given.

        Raises
        ------
        Unsupported
            If set_timesteps raises.
        """
        kwargs = {"device": device} if device is not None else {}
        try:
            instance.set_timesteps(n, **kwargs)
        except Exception as e:
            raise Unsupported(describe_error(e)) from None
        return [] if device is not None else self.timesteps(instance)

    def timesteps(self, instance: Any) -> list[int]:
        """The instance's `timesteps` as Python ints, read in NumPy whatever their library.

        Parameters
        ----------
        instance : object
            An instance on which set_timesteps was called.

        Returns
        -------
        list of int
            Its timesteps, flattened.

        Raises
        ------
        Malformed
            If they cannot be read as integers (None, or not set).
        """
        values = None
        try:
            values = getattr(instance, "timesteps", None)
            return timestep_ints(values)
        except Exception as e:  # None, what is no array of numbers, or 900.5
            raise Malformed(
                f"timesteps after set_timesteps are no integers ({type(values).__name__}: "
                f"{describe_error(e)})"
            ) from e

    def step(
        self,
        instance: Any,
        model_output: Any,
        t: Any,
        sample: Any,
        *,
        eta: float = 0.0,
        noise: Any = None,
        use_clipped: bool = False,
        out: Any = None,
    ) -> tuple[Any, Any]:
        """(prev_sample, pred_original_sample or None) of one step; a forward step's eta,
        noise (passed as variance_noise) and use_clipped_model_output where given; `out`
        (buffers for the two results) passed as out= where given.

        Parameters
        ----------
        instance : object
            An instance on which set_timesteps was called.
        model_output : array
            The model's output at `t`.
        t : int or array
            The timestep.
        sample : array
            x_t.
        eta : float, optional
            DDIM's eta (forward steps only; passed with `noise` when nonzero). Default 0.
        noise : array, optional
            The draw passed as variance_noise when eta is nonzero.
        use_clipped : bool, optional
            Pass use_clipped_model_output=True (forward steps only). Default False.
        out : object, optional
            Passed as out= when given.

        Returns
        -------
        tuple
            (prev_sample, pred_original_sample), the latter None when step returns none.

        Raises
        ------
        Unsupported
            If eta or use_clipped is asked for and step takes no variance_noise or
            use_clipped_model_output, or if step itself raises Unsupported.
        Crash
            If step raises anything else.
        Malformed
            If step returns no array as prev_sample (or pred_original_sample), or one of
            another shape than `sample`.
        """
        kwargs: dict[str, Any] = {} if out is None else {"out": out}
        if not self.inverse:
            if eta:
                if "variance_noise" not in self.step_params:
                    raise Unsupported("step takes no variance_noise")
                kwargs.update(eta=eta, variance_noise=noise)
            if use_clipped:
                if "use_clipped_model_output" not in self.step_params:
                    raise Unsupported("step takes no use_clipped_model_output")
                kwargs["use_clipped_model_output"] = True
        if "return_dict" in self.step_params:
            kwargs["return_dict"] = False
        try:
            result = instance.step(model_output, t, sample, **kwargs)
        except Unsupported:
            raise
        except TypeError as e:
            rejected = [n for n in sorted(self.forwarded & set(kwargs)) if f"'{n}'" in str(e)]
            if rejected:  # passed on by step(..., **kwargs) to a step that takes no such option
                raise Unsupported(f"step takes no {rejected[0]}") from None
            raise Crash(f"step raises {describe_error(e)}") from e
        except Exception as e:
            raise Crash(f"step raises {describe_error(e)}") from e
        if hasattr(result, "prev_sample"):
            prev, x0 = result.prev_sample, getattr(result, "pred_original_sample", None)
        elif isinstance(result, tuple | list) and result:
            prev, x0 = result[0], (result[1] if len(result) > 1 else None)
        else:
            prev, x0 = result, None
        _need_array(prev, sample, "prev_sample", "step ")
        if x0 is not None:
            _need_array(x0, sample, "pred_original_sample", "step ")
        return prev, x0

    @property
    def boundary_name(self) -> str:
        """The attribute holding the level past the last step: final_alpha_cumprod, or
        initial_alpha_cumprod for an inverse scheduler."""
        return "initial_alpha_cumprod" if self.inverse else "final_alpha_cumprod"

    def table(self, instance: Any, config: DDIMConfig) -> Schedule:
        """The alpha_bar table the instance steps on (its `alphas_cumprod` and final /
        initial level, read in float64), or exact DDIM's when it has none.

        Parameters
        ----------
        instance : object
            An instance of the class.
        config : DDIMConfig
            The config it was made for (exact DDIM's table comes from it).

        Returns
        -------
        Schedule
            The instance's table, or exact DDIM's when it has no `alphas_cumprod` or one of
            another length; the boundary level is exact DDIM's when it has none.
        """
        exact = schedule(config)
        values = getattr(instance, "alphas_cumprod", None)
        if values is None:
            return exact
        ab = to_numpy(values).reshape(-1)
        if ab.shape != exact.alphas_cumprod.shape:
            return exact
        boundary = getattr(instance, self.boundary_name, None)
        final = (
            exact.final_alpha_cumprod
            if boundary is None
            else float(to_numpy(boundary).reshape(-1)[0])
        )
        return reference.schedule_from_table(ab, final)

    def promote(self, instance: Any) -> None:
        """Its tables in float64 where it lets them be assigned (torch or NumPy), so that the
        value areas compare the maths of a step, not the precision of its tables.

        Parameters
        ----------
        instance : object
            An instance of the class; its `alphas_cumprod` and boundary level are replaced
            in place where they can be (an instance that refuses keeps its own).
        """
        for name in ("alphas_cumprod", self.boundary_name):
            value = getattr(instance, name, None)
            if value is None:
                continue
            try:
                if hasattr(value, "double"):
                    setattr(instance, name, value.double())
                elif isinstance(value, np.ndarray | np.floating):
                    setattr(instance, name, np.asarray(value, dtype=np.float64))
            except Exception:
                pass


def _changed(config: DDIMConfig) -> list[str]:
    return [
        f.name
        for f in dataclasses.fields(config)
        if getattr(config, f.name) != getattr(DEFAULTS, f.name)
    ]


# --- k-diffusion-style sampler functions ------------------------------------------------------


@dataclasses.dataclass
class Sampler:
    """A k-diffusion-style sampler function `fn(model, x, sigmas, ...)`.

    Attributes
    ----------
    fn : callable
        The sampler: `fn(model, x, sigmas, ...)` with `model(x, sigma * ones(batch))` the
        denoised x_0.
    inverse : bool
        Whether it inverts (sigmas ascend).
    backend : Backend
        The array library its inputs are made in.

    Examples
    --------
    >>> s = Sampler(reference.kdiffusion_sample, False, backend("numpy"))
    >>> s.run(lambda x, sigma: 0 * x, np.ones((1, 2)), np.array([1.0, 0.0]))
    array([[0., 0.]])
    """

    fn: Callable[..., Any]
    inverse: bool
    backend: Backend

    def __post_init__(self) -> None:
        found = _parameters(self.fn)
        self.params = set(found)
        # a fn(model, x, sigmas, **kwargs) passing them on to a sampler may take eta and
        # noise_sampler: they are given where eta is asked for, Unsupported where a TypeError
        # names one
        self.forwarded: set[str] = set()
        if any(p.kind is p.VAR_KEYWORD for p in found.values()):
            self.forwarded = {"eta", "noise_sampler"} - self.params
            self.params |= self.forwarded

    @property
    def name(self) -> str:
        """The function's module and qualified name."""
        return f"{getattr(self.fn, '__module__', '?')}.{getattr(self.fn, '__qualname__', self.fn)}"

    def run(
        self,
        model: Callable[..., Any],
        x: Any,
        sigmas: Any,
        *,
        eta: float = 0.0,
        noise_sampler: Callable[[Any, Any], Any] | None = None,
    ) -> Any:
        """The sampler run on `x` down (or up) `sigmas`, its progress bar off (`disable`) and
        eta 0 unless given (ancestral samplers default to eta 1).

        Parameters
        ----------
        model : callable
            `model(x, sigma * ones(batch))`: the denoised x_0.
        x : array
            The starting sample.
        sigmas : array
            The levels, descending to sample, ascending to invert.
        eta : float, optional
            DDIM's eta; when nonzero passed with `noise_sampler`. Default 0.
        noise_sampler : callable, optional
            `noise_sampler(sigma, sigma_next)`: a step's noise draw.

        Returns
        -------
        array
            What the sampler returns.

        Raises
        ------
        Unsupported
            If eta is nonzero and the function takes no eta and noise_sampler (one taking
            **kwargs is given them, and takes none where it raises a TypeError naming one), or
            if it raises Unsupported.
        Crash
            If the function raises anything else.
        Malformed
            If it returns no array, or one of another shape than `x`.

        Examples
        --------
        >>> s = Sampler(reference.kdiffusion_sample, False, backend("numpy"))
        >>> s.run(lambda x, sigma: 0 * x, np.ones((1, 2)), np.array([1.0, 0.0]), eta=1.0)
        Traceback (most recent call last):
        ...
        ddim_core.testing.targets.Unsupported: takes no eta and noise_sampler
        """
        kwargs: dict[str, Any] = {}
        if "disable" in self.params:
            kwargs["disable"] = True
        if eta:
            if "eta" not in self.params or "noise_sampler" not in self.params:
                raise Unsupported("takes no eta and noise_sampler")
            kwargs.update(eta=eta, noise_sampler=noise_sampler)
        elif "eta" in self.params - self.forwarded:
            kwargs["eta"] = 0.0  # ancestral samplers default to eta = 1
        try:
            result = self.fn(model, x, sigmas, **kwargs)
        except Unsupported:
            raise
        except TypeError as e:
            if any(f"'{n}'" in str(e) for n in self.forwarded & set(kwargs)):
                raise Unsupported("takes no eta and noise_sampler") from None
            raise Crash(f"raises {describe_error(e)}") from e
        except Exception as e:
            raise Crash(f"raises {describe_error(e)}") from e
        _need_array(result, x, "x")
        return result


# --- loading -------------------------------------------------------------------------------------


def wrap(obj: Any, kind: str | None = None, backend_name: str | None = None) -> Scheduler | Sampler:
    """The target wrapped for the suite; kind and array library guessed unless given.
    ValueError for a kind the target does not fit, or a backend that cannot run here.

    Parameters
    ----------
    obj : object
        The target: a scheduler class or a sampler function (see `load`).
    kind : str, optional
        One of KINDS; guessed by `guess_kind` when not given.
    backend_name : str, optional
        The backend its inputs are made in (a name in BACKENDS, or an installed library's
        module). Default: a scheduler's, the library of its timesteps after
        set_timesteps(10); a sampler's, torch when installed, else NumPy.

    Returns
    -------
    Scheduler or Sampler
        The wrapped target.

    Raises
    ------
    ValueError
        If `kind` is not one of KINDS or does not fit the target (a scheduler kind needs a
        class with step and set_timesteps, a sampler kind a function; an instance of a
        scheduler class fits neither), or the backend cannot run here.

    Examples
    --------
    >>> s = wrap(reference.ReferenceScheduler)
    >>> type(s).__name__, s.inverse, s.backend.name
    ('Scheduler', False, 'numpy')
    >>> wrap(reference.ReferenceScheduler, "sampler")
    Traceback (most recent call last):
    ...
    ValueError: kind='sampler' needs a sampler function, got <class '...ReferenceScheduler'>
    """
    kind = kind or guess_kind(obj)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    given = _given_backend(backend_name) if backend_name else None
    if kind in ("scheduler", "inverse"):
        _need_scheduler(obj, kind)
        return Scheduler(obj, kind == "inverse", given or _scheduler_backend(obj))
    _need_no_instance(obj)
    if inspect.isclass(obj) or not callable(obj):
        raise ValueError(f"kind={kind!r} needs a sampler function, got {obj!r}")
    return Sampler(obj, kind == "inverse-sampler", given or _default_backend())


def _given_backend(name: str) -> Backend:
    """The backend called `name` (one of BACKENDS, or an installed library's module). A module
    of a package (`mypackage.arrays`) is looked up itself, not only its package: the backend is
    used next, so importing the package to find it costs nothing (`Backend.unavailable` does
    not, and a missing module left every area unsupported, the check passing)."""
    chosen = backend(name)
    why = chosen.unavailable()
    if why is None and not importable(chosen.module):
        why = f"{chosen.module} is not installed"
    if why is not None:
        known = ", ".join(b.name for b in BACKENDS)
        raise ValueError(f"backend {name!r} cannot run here ({why}); backends: {known}")
    return chosen


def _scheduler_backend(cls: Any) -> Backend:
    """The array library of the class's `timesteps` after set_timesteps(10); the default
    where they are no library's array (a list)."""
    try:
        instance = cls()
        instance.set_timesteps(10)
        module = type(instance.timesteps).__module__.partition(".")[0]
    except Exception:
        return _default_backend()
    module = {"jaxlib": "jax"}.get(module, module)  # JAX arrays are jaxlib types
    lib = sys.modules.get(module)
    known = any(b.name == module for b in BACKENDS)
    if not known and not (hasattr(lib, "asarray") or hasattr(lib, "tensor")):
        return _default_backend()  # e.g. builtins (a list): no array library
    return backend(module)


def _default_backend() -> Backend:
    """torch when installed (diffusers and k-diffusion take torch tensors), else NumPy."""
    if importlib.util.find_spec("torch") is not None:
        return backend("torch")
    return backend("numpy")
