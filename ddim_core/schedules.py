"""Noise schedules: beta_t and alpha_bar_t = prod_{s<=t} (1 - beta_s).

Tables are computed once per configuration, in float64, with array API functions on the host
(NumPy through array-api-compat), and only cast where they meet a sample. `betas()` and
`alphas_cumprod()` hand them out in any namespace, device and dtype, cached (read-only, or a copy
where the library has no read-only arrays).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import numpy as np

from . import backends
from .backends import Array, Namespace
from .config import DDIMConfig, check_bool, check_int


@dataclasses.dataclass(frozen=True, eq=False)
class Schedule(backends.Registered):
    """Host float64 tables of one noise schedule.

    Attributes
    ----------
    betas : numpy.ndarray
        beta_t for t in [0, T).
    alphas_cumprod : numpy.ndarray
        alpha_bar_t = prod_{s <= t} (1 - beta_s).
    final_alpha_cumprod : float
        The level past the last step, used for t = -1: 1.0 with set_alpha_to_one, else
        alpha_bar_0.

    Examples
    --------
    >>> import ddim_core as dc
    >>> s = dc.schedule(dc.DDIMConfig())
    >>> s.num_train_timesteps, s.alpha_bar(-1), round(s.alpha_bar(999), 6)
    (1000, 1.0, 4e-05)
    """

    betas: np.ndarray
    alphas_cumprod: np.ndarray
    final_alpha_cumprod: float

    def __repr__(self) -> str:
        ab = self.alphas_cumprod
        return (
            f"Schedule(T={ab.shape[0]}, {ab.dtype}, alpha_bar {ab[0]:.6g} at t=0 -> "
            f"{ab[-1]:.6g} at t={ab.shape[0] - 1}, "
            f"final_alpha_cumprod={self.final_alpha_cumprod:g})"
        )

    @property
    def num_train_timesteps(self) -> int:
        """T, the number of training timesteps (the length of the tables)."""
        return int(self.alphas_cumprod.shape[0])

    def alpha_bar(self, t: int) -> float:
        """alpha_bar_t as a Python float; t = -1 is the final (clean) level.

        Parameters
        ----------
        t : int
            A timestep in [-1, T).

        Returns
        -------
        float

        Raises
        ------
        TypeError
            `t` is not an integer.
        ValueError
            `t` outside [-1, T).
        """
        t = check_int("t", t, low=-1, high=self.num_train_timesteps - 1)
        return self.final_alpha_cumprod if t < 0 else float(self.alphas_cumprod[t])

    def levels(self, timesteps: np.ndarray) -> np.ndarray:
        """alpha_bar for an integer array of timesteps, -1 meaning the final level.

        Parameters
        ----------
        timesteps : numpy.ndarray
            Integers in [-1, T).

        Returns
        -------
        numpy.ndarray
            float64, shaped like `timesteps`.

        Raises
        ------
        TypeError
            `timesteps` are not integers.
        ValueError
            A timestep outside [-1, T) (T would read the final level, T + 1 past the table).
        """
        timesteps = np.asarray(timesteps)
        if timesteps.dtype.kind not in "iu":  # (bool is not an integer here, as in check_int)
            raise TypeError(f"timesteps must be integers, got dtype {timesteps.dtype}")
        T = self.num_train_timesteps
        outside = timesteps[(timesteps < -1) | (timesteps >= T)]
        if outside.size:
            raise ValueError(f"timesteps must be in [-1, {T - 1}], got {int(outside[0])}")
        table = np.concatenate([self.alphas_cumprod, [self.final_alpha_cumprod]])
        return table[np.where(timesteps < 0, table.shape[0] - 1, timesteps)]

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod: Any, *, set_alpha_to_one: bool = True) -> Schedule:
        """A schedule from a given alpha_bar table (e.g. another library's float32 table).

        Parameters
        ----------
        alphas_cumprod : array-like
            alpha_bar_t for t in [0, T), values in [0, 1].
        set_alpha_to_one : bool, default True
            The final level: 1, or alpha_bar_0.

        Returns
        -------
        Schedule

        Raises
        ------
        TypeError
            `set_alpha_to_one` is not a bool.
        ValueError
            Not a 1-D table of numbers, an empty one, or values outside [0, 1]; a table on a
            device whose values the host cannot read (torch's meta device).
        """
        set_alpha_to_one = check_bool("set_alpha_to_one", set_alpha_to_one)
        try:  # (to_host: a torch table on a device, with grad, or in bfloat16 too; a copy: frozen)
            ab = np.array(backends.to_host(alphas_cumprod, name="it"), dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"alphas_cumprod must be a 1-D table of numbers: {e}") from None
        if ab.ndim != 1:
            raise ValueError(f"alphas_cumprod must be 1-D, got shape {ab.shape}")
        if ab.size == 0:
            raise ValueError("alphas_cumprod must be a non-empty table of values in [0, 1]")
        outside = np.flatnonzero(~((ab >= 0.0) & (ab <= 1.0)))  # NaN included
        if outside.size:
            i = int(outside[0])
            raise ValueError(
                "alphas_cumprod must be a table of values in [0, 1], "
                f"got alphas_cumprod[{i}] = {ab[i]}"
            )
        # Past a level of 0 the level stays 0: beta = 1 there, not 0 / 0.
        betas = 1.0 - ab / np.concatenate([[1.0], np.where(ab[:-1] > 0.0, ab[:-1], 1.0)])
        ab.setflags(write=False)  # as a config's: device copies are cached per schedule
        betas.setflags(write=False)
        final = 1.0 if set_alpha_to_one else float(ab[0])
        return cls(betas=betas, alphas_cumprod=ab, final_alpha_cumprod=final)


def schedule(config: DDIMConfig) -> Schedule:
    """The host schedule of a config (cached).

    Parameters
    ----------
    config : DDIMConfig
        Its beta options are read.

    Returns
    -------
    Schedule

    Raises
    ------
    TypeError
        `config` is not a DDIMConfig.

    Examples
    --------
    >>> import ddim_core as dc
    >>> schedule(dc.DDIMConfig()) is schedule(dc.DDIMConfig())
    True
    """
    if not isinstance(config, DDIMConfig):
        raise TypeError(f"config must be a DDIMConfig, got {type(config).__name__}")
    return _host_schedule(
        config.num_train_timesteps,
        config.beta_start,
        config.beta_end,
        config.beta_schedule,
        config.trained_betas,
        config.rescale_betas_zero_snr,
        config.set_alpha_to_one,
    )


@backends.host_constant
def _host_schedule(*options: Any) -> Schedule:
    """`_schedule`, which torch.compile runs eagerly and keeps as a constant: it would trace
    the function the lru_cache wraps, NumPy code it cannot trace."""
    return _schedule(*options)


@functools.lru_cache(maxsize=64)
def _schedule(
    n: int,
    beta_start: float,
    beta_end: float,
    beta_schedule: str,
    trained_betas: tuple[float, ...] | None,
    rescale_zero_snr: bool,
    set_alpha_to_one: bool,
) -> Schedule:
    xp: Namespace = backends.HOST_XP
    if trained_betas is not None:
        b = xp.asarray(trained_betas, dtype=xp.float64)
    elif beta_schedule == "linear":
        b = _linear(n, beta_start, beta_end, xp=xp)
    elif beta_schedule == "scaled_linear":
        b = _linear(n, beta_start**0.5, beta_end**0.5, xp=xp) ** 2
    else:
        b = _squaredcos_cap_v2(n, xp=xp)
    if rescale_zero_snr:
        b = _rescale_zero_terminal_snr(b, xp=xp)
    ab = xp.cumulative_prod(1.0 - b)
    b.setflags(write=False)
    ab.setflags(write=False)
    final = 1.0 if set_alpha_to_one else float(ab[0])
    return Schedule(betas=b, alphas_cumprod=ab, final_alpha_cumprod=final)


def _linear(n: int, start: float, end: float, *, xp: Namespace) -> Array:
    return xp.linspace(start, end, n, dtype=xp.float64)


def _squaredcos_cap_v2(n: int, *, xp: Namespace, max_beta: float = 0.999) -> Array:
    """Nichol & Dhariwal's cosine schedule, alpha_bar(t) = cos^2((t + s) / (1 + s) * pi / 2)."""

    def f(t: Array) -> Array:
        return xp.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    i = xp.arange(n, dtype=xp.float64)
    return xp.minimum(1.0 - f((i + 1) / n) / f(i / n), max_beta)


def _rescale_zero_terminal_snr(betas: Array, *, xp: Namespace) -> Array:
    """Lin et al. 2023, Algorithm 1: shift sqrt(alpha_bar) so the last step has zero SNR."""
    s = xp.sqrt(xp.cumulative_prod(1.0 - betas))
    s0, s_last = s[0], s[-1]
    if not float(s0) > float(s_last):  # host table: the shift would divide by zero
        raise ValueError(
            "rescale_betas_zero_snr=True needs alpha_bar to fall from t = 0 to t = T - 1, but "
            f"both are {float(s0) ** 2!r} (betas too small to change 1 - beta in float64)"
        )
    s = (s - s_last) * s0 / (s0 - s_last)
    ab = s**2
    # Where alpha_bar has underflowed to 0 it stays 0 (beta = 1), not 0 / 0.
    alphas = xp.concat([ab[:1], ab[1:] / xp.where(ab[:-1] > 0.0, ab[:-1], 1.0)])
    return 1.0 - alphas


def as_schedule(obj: Any) -> Schedule:
    """The schedule of a DDIMConfig, a Schedule, or anything with a `.schedule` (a Plan).

    Parameters
    ----------
    obj : DDIMConfig, Schedule or Plan

    Returns
    -------
    Schedule

    Raises
    ------
    TypeError
        Anything else.

    Examples
    --------
    >>> import ddim_core as dc
    >>> as_schedule(dc.make_plan(dc.DDIMConfig(), 10)) is schedule(dc.DDIMConfig())
    True
    """
    if isinstance(obj, Schedule):
        return obj
    if isinstance(obj, DDIMConfig):
        return schedule(obj)
    if isinstance(getattr(obj, "schedule", None), Schedule):
        return obj.schedule  # type: ignore[no-any-return]
    raise TypeError(f"expected a DDIMConfig, Schedule or Plan, got {type(obj).__name__}")


def betas(
    config: DDIMConfig | Schedule,
    *,
    xp: Namespace | None = None,
    device: Any = None,
    dtype: Any = None,
) -> Array:
    """beta_t for t in [0, T), in namespace `xp` (NumPy by default), float64 unless `dtype`.

    Parameters
    ----------
    config : DDIMConfig or Schedule
        Where the table comes from.
    xp : array namespace, optional
        e.g. ``array_api_compat.torch`` or ``jax.numpy``; NumPy when None.
    device : optional
        The device to put the table on.
    dtype : optional
        The table's dtype (default float64; cast on the host, so no float64 array is made on
        a device that has none).

    Returns
    -------
    array
        Read-only where the library has read-only arrays (NumPy, JAX; cached and shared),
        else a copy of the cached table (torch, CuPy, ...): writing into it changes no later
        call.

    Examples
    --------
    >>> import ddim_core as dc
    >>> b = betas(dc.DDIMConfig())
    >>> b.shape, float(b[0]), float(b[-1])
    ((1000,), 0.0001, 0.02)
    """
    return _handed_out(_table(as_schedule(config), "betas", xp, device, dtype))


def alphas_cumprod(
    config: DDIMConfig | Schedule,
    *,
    xp: Namespace | None = None,
    device: Any = None,
    dtype: Any = None,
) -> Array:
    """alpha_bar_t for t in [0, T), in namespace `xp` (NumPy by default), float64 unless `dtype`.

    Parameters
    ----------
    config : DDIMConfig or Schedule
        Where the table comes from.
    xp : array namespace, optional
        NumPy when None.
    device : optional
        The device to put the table on.
    dtype : optional
        The table's dtype (default float64).

    Returns
    -------
    array
        As `betas`: read-only, or a copy that later calls do not see.

    Examples
    --------
    >>> import numpy as np, ddim_core as dc
    >>> ab = alphas_cumprod(dc.DDIMConfig(), dtype=np.float32)
    >>> ab.dtype, bool(ab[0] > ab[-1])
    (dtype('float32'), True)
    """
    return _handed_out(_table(as_schedule(config), "alphas_cumprod", xp, device, dtype))


def _handed_out(table: Array) -> Array:
    """The cached table itself where no one can write into it, else a copy: a write into a
    shared torch (CuPy, ...) table would change every later call's table."""
    if not backends.writable(table):
        return table
    return backends.namespace(table=table).asarray(table, copy=True)


def _table(sched: Schedule, name: str, xp: Namespace | None, device: Any, dtype: Any) -> Array:
    xp = backends.HOST_XP if xp is None else backends.as_namespace(xp)
    dtype = xp.float64 if dtype is None else dtype
    try:
        floating = bool(xp.isdtype(dtype, "real floating"))
    except Exception:
        floating = False
    if not floating:
        raise TypeError(f"dtype must be a real floating dtype of {xp.__name__}, got {dtype!r}")
    try:
        where = backends.default_device(xp) if device is None else device  # (the cache key)
        made = backends.made_dtype(xp, dtype)  # (the cache key: JAX's x64 may switch)
        return _cached_table(sched, name, xp, device, dtype, where, made)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(  # (the library's reason says which: a device, or a dtype it lacks)
            f"device={device!r} with dtype={dtype!r} is not supported by {xp.__name__} ({e})"
        ) from None


@backends.device_cache
def _cached_table(
    sched: Schedule, name: str, xp: Namespace, device: Any, dtype: Any, where: Any, made: Any
) -> Array:
    """The table of `_table`, cached per schedule, namespace, device, dtype, the device
    `where` it lands on (`device`, or the default device a context has set: device=None
    leaves JAX arrays uncommitted, as the user asked) and the dtype `made` of the request."""
    table = backends.from_host(getattr(sched, name), xp, device=device, dtype=dtype)
    if backends.is_host_numpy(table):
        table.setflags(write=False)  # shared through the cache: keep it immutable
    return table
