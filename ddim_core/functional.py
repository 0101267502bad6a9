"""Functional DDIM in Bumblebee's shape: a static scheduler, a state of arrays, pure steps.

    scheduler = Scheduler(DDIMConfig(), 50)
    state = init(scheduler, like=x)
    for t in scheduler.timesteps:
        state, x = step(scheduler, state, model(x, t), x)

`Scheduler` is frozen and hashable: what does not change during a loop (pass it as a static
argument to jax.jit). The state holds only arrays: the plan's coefficient rows, cast once by
`init` to the sample's dtype and device, its timesteps and the step index. So `step` is pure
array code with no Python branch on values and no host read, and a whole loop runs under
`jax.lax.scan` / `jax.jit`, `torch.compile(fullgraph=True)` and on torch's meta device. Under
torch.compile, call `init` outside the compiled function (it builds the state from the plan's
host tables, which Dynamo does not trace: inside, a RuntimeError); under jax.jit it may run
inside.

Nothing can be mismatched: each scheduler has its own state type, so a state used with another
scheduler is a TypeError (checked on the type, also while tracing), and eta > 0 without noise
is a ValueError at trace time. An index outside the plan is a ValueError where it is free to
read (host arrays); where it is not (traced by jax.jit or torch.compile, on a device), the
step gives NaN, never the step of another index.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import numpy as np

from . import backends, coefficients, kernels
from .backends import Array
from .coefficients import Row, StepKey
from .config import DDIMConfig, check_bool
from .plans import Plan, _sequence, make_plan
from .steps import _require, check_eta, checked_arrays


class DDIMState(NamedTuple):
    """The loop's state: arrays only (a JAX pytree), made by `init`.

    `init` returns an instance of a subclass made for its scheduler, so a state used with
    another scheduler is a TypeError (see `step`).

    Attributes
    ----------
    coefficients : array
        (N, 5): the `coefficients.Row` of each step of the plan, in the work dtype.
    timesteps : array
        (N,) integer: the timestep of each step (inversion: the destination).
    index : array
        () integer: the next step (a NumPy one beside Dask arrays, checked at each call).

    Examples
    --------
    >>> import numpy as np, ddim_core as dc
    >>> state = init(Scheduler(dc.DDIMConfig(), 4), like=np.zeros(2))
    >>> state.coefficients.shape, int(state.index)
    ((4, 5), 0)
    """

    coefficients: Array  # (N, 5): the Row of each step of the plan, in the work dtype
    timesteps: Array  # (N,) integer: the timestep of each step (inversion: the destination)
    index: Array  # () integer: the next step (NumPy beside Dask: read for free)


@dataclasses.dataclass(frozen=True)
class Scheduler:
    """The static part of a DDIM loop: config, step count (or custom timesteps) and options.

    Frozen and hashable: pass it as a static argument to `jax.jit`.

    Parameters
    ----------
    config : DDIMConfig
        The scheduler options.
    num_inference_steps : int, optional
        N (may be None when `timesteps` is given).
    eta : float, default 0.0
        0: deterministic; > 0 needs `noise` at every `step`.
    inverse : bool, default False
        Walk the mirrored plan (inversion; eta must be 0).
    use_clipped_model_output : bool, default False
        As in `ddim_core.step`.
    timesteps : sequence of int or integer array, optional
        A custom plan, in visiting order (ascending when `inverse`), as `make_plan` takes it
        (an array of any library is read once). Reads back as the tuple of timesteps the loop
        visits. `dataclasses.replace` derives them again from the new config, step count and
        direction, unless they were given.

    Raises
    ------
    ValueError
        inverse with eta > 0, `num_inference_steps` disagreeing with `timesteps`, or
        `timesteps` out of the visiting order (decreasing; increasing when `inverse`) or not
        1-D.
    TypeError
        `timesteps` that is not a sequence of integers, or is a mapping or set (as
        `make_plan`).

    Examples
    --------
    >>> import ddim_core as dc
    >>> Scheduler(dc.DDIMConfig(timestep_spacing="trailing"), 4).timesteps
    (999, 749, 499, 249)
    >>> Scheduler(dc.DDIMConfig(timestep_spacing="trailing"), 4, inverse=True).timesteps
    (249, 499, 749, 999)
    """

    config: DDIMConfig
    num_inference_steps: int | None = None
    _: dataclasses.KW_ONLY
    eta: float = 0.0
    inverse: bool = False
    use_clipped_model_output: bool = False
    timesteps: tuple[int, ...] | None = None
    # The fields as text, for step's check that a state was made for this scheduler: under
    # torch.compile a float field that changed between calls (eta per request) is symbolic,
    # and Dynamo cannot take the dataclass == of it (InternalTorchDynamoError); a string is
    # a constant to it
    _identity: str = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        set_ = functools.partial(object.__setattr__, self)
        set_("eta", check_eta(self.eta))
        set_("inverse", check_bool("inverse", self.inverse))
        use_clipped = check_bool("use_clipped_model_output", self.use_clipped_model_output)
        set_("use_clipped_model_output", use_clipped)
        if self.inverse and self.eta:
            raise ValueError(f"eta={self.eta}: inversion is deterministic, eta must be 0")
        if self.inverse and use_clipped:
            raise ValueError(
                "use_clipped_model_output=True: inversion steps have no such option "
                "(ddim_core.inverse_step); it applies to forward steps only"
            )
        derived = self.timesteps is None or (
            type(self.timesteps) is _Derived and self.num_inference_steps is not None
        )  # (dataclasses.replace hands back the derived ones: derive them again)
        if derived:
            plan = make_plan(self.config, self.num_inference_steps)
        else:
            # as make_plan takes them (a tensor read once; no string, mapping or set), then
            # reversed for an inversion
            plan = self._custom_plan(tuple(_sequence(self.timesteps)))
            if self.num_inference_steps not in (None, plan.num_inference_steps):
                raise ValueError(
                    f"num_inference_steps={self.num_inference_steps} but {plan.num_inference_steps}"
                    " timesteps were given; give one of them, or both in agreement"
                )
        set_("num_inference_steps", plan.num_inference_steps)
        visits = plan.inverse_timesteps if self.inverse else plan.timesteps
        set_("timesteps", _Derived(visits) if derived else visits)
        fields = (self.num_inference_steps, self.eta, self.inverse, use_clipped, self.timesteps)
        set_("_identity", repr((dataclasses.astuple(self.config), *fields)))

    @property
    def plan(self) -> Plan:
        """The timestep plan of the loop (`make_plan` caches it)."""
        return make_plan(self.config, timesteps=self._descending(self.timesteps or ()))

    def _custom_plan(self, visits: tuple[Any, ...]) -> Plan:
        try:
            return make_plan(self.config, timesteps=self._descending(visits))
        except ValueError as e:  # make_plan saw them reversed: name the order given here
            if not (self.inverse and "strictly decreasing" in str(e)):
                raise
        raise ValueError(
            f"timesteps must be strictly increasing with inverse=True (the order the "
            f"inversion visits them), got {list(visits)}"
        )

    def _descending(self, visits: tuple[int, ...]) -> tuple[int, ...]:
        return visits[::-1] if self.inverse else visits


class _Derived(tuple):  # type: ignore[type-arg]
    """Timesteps a Scheduler derived from its config and step count (a tuple, equal and
    hashing as one): `dataclasses.replace` passes them to the new Scheduler, which derives
    them again from its own config and step count, where it kept the old plan's (another
    config's timesteps, silently)."""

    __slots__ = ()


def init(scheduler: Scheduler, *, like: Array) -> DDIMState:
    """The state before the first step, on `like`'s device, in its working dtype.

    Parameters
    ----------
    scheduler : Scheduler
        The loop's static part.
    like : array
        A sample (or an array of its library, device and dtype).

    Returns
    -------
    DDIMState
        Coefficient rows cast once to the work dtype (float32 for half precision), the
        timesteps and index 0.

    Raises
    ------
    TypeError
        `scheduler` is not a `Scheduler`, or `like` is not a real floating-point array.
    ValueError
        A plan step that cannot be taken (as `ddim_core.step`).
    RuntimeError
        Called while torch.compile traces (call it outside the compiled function; under
        ``fullgraph=True`` torch.compile reports this error). `jax.jit` may trace it.

    Examples
    --------
    >>> import numpy as np, ddim_core as dc
    >>> state = init(Scheduler(dc.DDIMConfig(), 10), like=np.zeros(3, dtype=np.float32))
    >>> state.coefficients.dtype
    dtype('float32')
    """
    if not isinstance(scheduler, Scheduler):
        raise TypeError(f"scheduler must be a functional.Scheduler, got {type(scheduler).__name__}")
    if backends.compiling():  # Dynamo would trace the host tables' NumPy (an internal error)
        raise RuntimeError(
            "init() cannot run under torch.compile: it builds the state from the plan's host "
            "tables, which Dynamo does not trace; call state = init(scheduler, like=x) outside "
            "the compiled function and pass the state in"
        )
    plan = scheduler.plan
    found = coefficients.table(StepKey(plan, scheduler.eta, scheduler.inverse))
    ts = np.array(scheduler.timesteps, dtype=np.int64)
    coefficients.check_timesteps(found, ts.tolist())
    _require(like=like)
    xp = backends.namespace(like=like)
    if not backends.is_real_floating(xp, like):
        raise TypeError(f"like must be a real floating-point array, got dtype {like.dtype}")
    # An uncommitted JAX array (jax.random.normal's, jnp.ones') makes an uncommitted state
    # (`device` is None for it): a committed state beside an uncommitted sample is another
    # signature to jax.jit than the committed arrays the first step returns (the jitted step,
    # model included, compiled twice)
    device = backends.device(like)
    dtype = backends.work_dtype(xp, like.dtype)
    # A Dask index is read only when the graph runs (a step past the plan's end was an
    # IndexError inside Dask): a NumPy one is read for free by every call's check
    index = np.asarray(0) if backends.is_lazy(like) else xp.asarray(0, device=device)
    return _state_type(scheduler)(
        coefficients=backends.from_host(found.values[ts], xp, device=device, dtype=dtype),
        timesteps=xp.asarray(ts.tolist(), device=device),
        index=index,
    )


def timestep(state: DDIMState) -> Array:
    """The timestep of the next step, a 0-d integer array.

    Parameters
    ----------
    state : DDIMState
        A state from `init` or `step`.

    Returns
    -------
    array
        The integer dtype's minimum when ``state.index`` is outside [0, N) and cannot be read
        to raise (traced, on a device): no timestep of the plan.

    Raises
    ------
    TypeError
        `state` is not a `DDIMState`, or its index is not an integer array.
    ValueError
        An index past the plan where it can be read without a sync (host arrays, and the
        NumPy index of a Dask state), or an index that is not 0-d (a state batched by
        `jax.vmap` or `torch.func.vmap`).

    Examples
    --------
    >>> import numpy as np, ddim_core as dc
    >>> int(timestep(init(Scheduler(dc.DDIMConfig(), 10), like=np.zeros(1))))
    900
    """
    if not isinstance(state, DDIMState):  # a type check: no array read, also while tracing
        raise TypeError(f"state must be a DDIMState from init(), got {type(state).__name__}")
    if _check_index(state):
        return _at(state.timesteps, state.index)
    xp = backends.namespace(timesteps=state.timesteps)
    return _at(state.timesteps, state.index, xp.iinfo(state.timesteps.dtype).min)


def step(
    scheduler: Scheduler,
    state: DDIMState,
    model_output: Array,
    sample: Array,
    *,
    noise: Array | None = None,
) -> tuple[DDIMState, Array]:
    """The next step of the scheduler's plan: pure array code, no host read.

    Runs under `jax.jit` + `jax.lax.scan`, `torch.compile(fullgraph=True)` and on torch's
    meta device. The argument order of `ddim_core.step(plan, model_output, timestep,
    sample)`.

    Parameters
    ----------
    scheduler : Scheduler
        The scheduler `state` was made for.
    state : DDIMState
        From `init` or the previous `step`.
    model_output : array
        The model's output at (sample, `timestep(state)`).
    sample : array
        x_t.
    noise : array, optional
        Standard normal noise like `sample`; required when ``scheduler.eta > 0``.

    Returns
    -------
    state : DDIMState
        With the index advanced.
    prev_sample : array
        x_prev, in the sample's dtype; all NaN when ``state.index`` is outside [0, N) and
        cannot be read to raise (traced by jax.jit or torch.compile, on a device): never the
        step of another index.

    Raises
    ------
    TypeError
        `scheduler` is not a `Scheduler`, `state` was made by `init` for another one, or its
        index is not an integer array.
    ValueError
        eta > 0 without `noise` (at trace time under jit), an index past the plan where it
        can be read without a sync (host arrays, and the NumPy index of a Dask state), or an
        index that is not 0-d (a state batched by `jax.vmap` or `torch.func.vmap`).

    Examples
    --------
    >>> import numpy as np, ddim_core as dc
    >>> scheduler = Scheduler(dc.DDIMConfig(clip_sample=False), 10)
    >>> x = np.ones(3)
    >>> state = init(scheduler, like=x)
    >>> for t in scheduler.timesteps:
    ...     state, x = step(scheduler, state, 0.5 * x, x)
    >>> plan = dc.make_plan(dc.DDIMConfig(clip_sample=False), 10)
    >>> y = np.ones(3)
    >>> for t in plan.timesteps:
    ...     y = dc.step(plan, 0.5 * y, t, y).prev_sample
    >>> bool(np.allclose(x, y))
    True
    """
    if not isinstance(scheduler, Scheduler):
        raise TypeError(f"scheduler must be a functional.Scheduler, got {type(scheduler).__name__}")
    made_for = getattr(type(state), "scheduler", None)  # a class attribute: no array read
    same = made_for is scheduler or getattr(made_for, "_identity", None) == scheduler._identity
    if not same and made_for != scheduler:  # == after: schedulers equal as values (-0.0, 0.0)
        raise TypeError(
            f"state was not made by init() for this scheduler ({scheduler!r}); "
            "call init(scheduler, like=x) and pass its state"
        )
    if scheduler.eta > 0.0 and noise is None:
        raise ValueError(f"scheduler.eta={scheduler.eta} > 0 needs `noise` (standard normal)")
    noise = noise if scheduler.eta > 0.0 else None
    xp = checked_arrays(sample=sample, model_output=model_output, noise=noise)
    checked = _check_state(state, sample, xp)  # the index read (else the gather is guarded)
    x_t, out, z = backends.to_work_dtype(xp, sample, model_output, noise)
    values = _at(state.coefficients, state.index, None if checked else math.nan)  # NaN x_prev
    row = Row(*(values[k] for k in range(len(Row._fields))))
    use_clipped = scheduler.use_clipped_model_output
    x_prev, _ = kernels.ddim_update(x_t, out, row, scheduler.config, z, use_clipped, xp=xp)
    return state._replace(index=state.index + 1), backends.cast(xp, x_prev, sample.dtype)


def _check_state(state: DDIMState, sample: Array, xp: Any) -> bool:
    """The state's arrays are of the sample's library and work dtype (static facts, no value
    read), and where the index is free to read (host arrays), a step of the plan remains;
    whether the index was read."""
    try:
        backends.namespace(sample=sample, state=state.coefficients)
    except (TypeError, ValueError) as e:
        raise TypeError(f"state and sample: {e}; call init(scheduler, like=sample)") from None
    want = backends.work_dtype(xp, sample.dtype)
    if state.coefficients.dtype != want:
        raise TypeError(
            f"state was made for {state.coefficients.dtype} work and the sample is "
            f"{sample.dtype} (works in {want}); call init(scheduler, like=sample)"
        )
    return _check_index(state)


def _check_index(state: DDIMState) -> bool:
    """Where the index is free to read (host arrays), a step of the plan remains; whether it
    was read (else `_at` guards the gather)."""
    # a static shape, also while tracing: the default out_axes=0 of jax.vmap (out_dims=0 of
    # torch.func.vmap) batches a shared state
    shape = tuple(getattr(state.index, "shape", ()))
    if shape:
        raise ValueError(
            f"state.index must be 0-d, got shape {shape}: a state batched by jax.vmap or "
            "torch.func.vmap (out_axes=(None, 0), torch's out_dims=(None, 0), keeps a shared "
            "state unbatched; in_axes=0, torch's in_dims=0, maps a batched one)"
        )
    # A Python int or a float index failed inside torch or NumPy; a bool one was a step.
    # (isdtype uncached: is_kind's cache, filled while torch.compile traces, was a guard that
    # failed at the next call, a second compile)
    dtype = getattr(state.index, "dtype", None)
    try:
        xp = backends.namespace(index=state.index)
        integral = dtype is not None and bool(xp.isdtype(dtype, "integral"))
    except TypeError:
        integral = False
    if not integral:
        raise TypeError(
            f"state.index must be a 0-d integer array, got {state.index!r}; to start at step "
            "k, pass state._replace(index=state.index + k)"
        )
    index = backends.host_integers(state.index)
    steps = state.timesteps.shape[0]
    if index is not None and not 0 <= index[0] < steps:
        taken = ", all taken" if index[0] >= steps else ""
        raise ValueError(
            f"state.index={index[0]} must be in [0, {steps}): the plan has {steps} steps{taken}"
        )
    return index is not None


@functools.lru_cache(maxsize=256)  # bounded: a process making schedulers without end
def _state_type(scheduler: Scheduler) -> type[DDIMState]:
    """A DDIMState subclass of its own per scheduler (equal schedulers share it while cached;
    `step` compares schedulers by value). It pickles as (scheduler, arrays) and is rebuilt
    from them (pickle cannot find a made class by name)."""

    def reduce(state: DDIMState) -> tuple[Any, ...]:
        return _rebuild_state, (scheduler, tuple(state))

    namespace = {"__slots__": (), "scheduler": scheduler, "__reduce__": reduce}
    return type("DDIMState", (DDIMState,), namespace)


def _rebuild_state(scheduler: Scheduler, arrays: tuple[Array, ...]) -> DDIMState:
    return _state_type(scheduler)(*arrays)


def _at(values: Array, index: Array, outside: float | None = None) -> Array:
    """values[index] as a gather; with `outside` (an index that could not be checked), that
    value everywhere for an index out of [0, N).

    Indexing with a 0-d array would read it back (torch.compile). A traced index cannot raise
    (`_check_index` raises where the index is free to read), and a gather would wrap a
    negative one (the row of another step) or fail on the device: the gather takes
    index mod N, always in range, and `where` puts `outside` (NaN for coefficients) over the
    row of an index outside. A NumPy index (a Dask state's) is reshaped by NumPy: Dask's
    reshape takes only its own."""
    xp = backends.namespace(values=values)
    n = values.shape[0]
    at = index if outside is None else index % n
    on_host = isinstance(index, (np.ndarray, np.generic))  # (a tuple: torch.compile traces it)
    flat = np.reshape(at, (1,)) if on_host else xp.reshape(at, (1,))
    row = xp.take(values, flat, axis=0)[0, ...]
    if outside is None:
        return row
    inside = (index >= 0) & (index < n)
    return xp.where(inside, row, xp.full_like(row, outside))
