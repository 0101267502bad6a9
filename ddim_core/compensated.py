"""Compensated ("double-word") arithmetic for the reversible samplers' states.

A reversible sampler's step is affine in its state: z' = A z + B w + ... with host constants
and arrays w computed from the rounded state (the model's output, DDIM's transfers). Computed
in plain floating point, the inverse undoes the forward only up to the rounding of each update,
and the sampler amplifies that rounding through the model (under guidance, by a lot). Here a
state is carried as a pair (hi, lo) with hi = fl(hi + lo): the unevaluated sum keeps about
twice the working precision (Dekker 1971; Knuth's TwoSum; the double-word algorithms of Joldes,
Muller & Popescu 2017). The inverse then reproduces every state to about 2^-2p of its size, its
hi (the rounded state the model is called on) bit for bit but in rare ties, so the model sees
the same inputs both ways and the round trip is exact to the last bit of the samples.

Everything is array-API arithmetic (+, -, * on arrays and host scalars), so it runs on every
backend, in float32 and float64, without FMA (half precision is computed in float32, as the
samplers do: the products refuse it). Host constants enter rounded to the working
dtype (`Constant`), split once on the host. Exact while no partial product overflows or
underflows (normal numbers with |x| below about 2^996 in float64, 2^115 in float32; a
subnormal element is off by at most the smallest subnormal).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from . import backends
from .backends import Array, Namespace


class Constant(NamedTuple):
    """A host constant rounded to the working dtype, with its Dekker split (value = hi + lo,
    each half fits in half the significand, so products with split halves are exact).

    Examples
    --------
    >>> c = Constant.of(0.1, 64)
    >>> c.value == c.hi + c.lo, c.value == 0.1
    (True, True)
    >>> Constant.of(0.1, 32).value == 0.1   # rounded to float32
    False
    """

    value: float
    hi: float
    lo: float

    @classmethod
    def of(cls, value: float, bits: int) -> Constant:
        """`value` rounded to a `bits`-bit float (32 or 64) and split.

        Parameters
        ----------
        value : float
        bits : int
            The working dtype's width: 32 or 64.

        Returns
        -------
        Constant

        Raises
        ------
        ValueError
            `bits` is not 32 or 64.
        """
        kind = np.float32 if bits == 32 else np.float64
        v = kind(value)
        t = kind(_splitter(bits)) * v
        hi = t - (t - v)
        return cls(float(v), float(hi), float(v - hi))


def _splitter(bits: int) -> float:
    """Dekker's splitting factor 2^ceil(p / 2) + 1 for a p-bit significand."""
    if bits not in (32, 64):  # float64's factor is inf in float16: the low words came out NaN
        raise ValueError(
            f"bits must be 32 or 64 (compensated arithmetic works in float32 or float64; "
            f"compute half precision in float32), got {bits}"
        )
    return 4097.0 if bits == 32 else 134217729.0


class Pair(NamedTuple):
    """An array as an unevaluated sum hi + lo with hi = fl(hi + lo) elementwise.

    Examples
    --------
    >>> import numpy as np
    >>> from ddim_core.backends import HOST_XP
    >>> z = Pair.of(np.array([1.0]), HOST_XP)
    >>> tiny = np.array([1e-20])
    >>> w = add(z, Pair.of(tiny, HOST_XP), HOST_XP)
    >>> w.hi.tolist(), w.lo.tolist()     # the 1e-20 is kept in lo
    ([1.0], [1e-20])
    """

    hi: Array
    lo: Array

    @classmethod
    def of(cls, x: Array, xp: Namespace, lo: Array | None = None) -> Pair:
        """`x` (+ `lo`) as a pair; `lo` zero when not given.

        Parameters
        ----------
        x : array
        xp : namespace
        lo : array, optional

        Returns
        -------
        Pair
        """
        if lo is None:
            return cls(x, xp.zeros_like(x))
        return cls(*_fast_two_sum(x, lo))


def bits(xp: Namespace, dtype: Any) -> int:
    """The width of a floating dtype (32 or 64; half precision is not a working dtype).

    Parameters
    ----------
    xp : namespace
    dtype : dtype

    Returns
    -------
    int

    Examples
    --------
    >>> import numpy as np
    >>> from ddim_core.backends import HOST_XP
    >>> bits(HOST_XP, np.float32)
    32
    """
    return int(xp.finfo(dtype).bits)


def _two_sum(a: Array, b: Array) -> tuple[Array, Array]:
    """s + e = a + b exactly, s = fl(a + b) (Knuth)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _fast_two_sum(a: Array, b: Array) -> tuple[Array, Array]:
    """s + e = a + b exactly when |a| >= |b| or a = 0 (Dekker)."""
    s = a + b
    return s, b - (s - a)


def _split(x: Array, factor: Any) -> tuple[Array, Array]:
    t = factor * x
    hi = t - (t - x)
    return hi, x - hi


def _two_prod(c: Constant, x: Array, xp: Namespace) -> tuple[Array, Array]:
    """p + e = c x exactly, p = fl(c x) (Dekker's product, no FMA)."""
    c, factor = _exact(xp, c, x), _factor(xp, x)
    p = c.value * x
    x_hi, x_lo = _split(x, factor)
    return p, ((c.hi * x_hi - p) + c.hi * x_lo + c.lo * x_hi) + c.lo * x_lo


def _exact(xp: Namespace, c: Constant, like: Array) -> Constant:
    """c's parts as operands exact in `like`'s dtype (`backends.exact_scalars`: MindSpore
    rounds Python floats to float32 against float64 tensors)."""
    return backends.exact_scalars(xp, c, like)


def _factor(xp: Namespace, like: Array) -> Any:
    """The splitting factor as an operand exact in `like`'s dtype."""
    return backends.exact_scalars(xp, (_splitter(bits(xp, like.dtype)),), like)[0]


def add(a: Pair, b: Pair, xp: Namespace) -> Pair:
    """a + b, with a relative error of about 2^-2p even under cancellation (the accurate
    double-word sum).

    Parameters
    ----------
    a, b : Pair
    xp : namespace

    Returns
    -------
    Pair

    Examples
    --------
    >>> import numpy as np
    >>> from ddim_core.backends import HOST_XP as xp
    >>> one, eps = Pair.of(np.array([1.0]), xp), Pair.of(np.array([2.0**-60]), xp)
    >>> add(add(one, eps, xp), scale(Constant.of(-1.0, 64), one, xp), xp).hi.tolist()
    [8.673617379884035e-19]
    """
    s, e = _two_sum(a.hi, b.hi)
    t, f = _two_sum(a.lo, b.lo)
    s, e = _fast_two_sum(s, e + t)
    return Pair(*_fast_two_sum(s, e + f))


def scale(c: Constant, a: Pair, xp: Namespace) -> Pair:
    """c a for a host constant c.

    Parameters
    ----------
    c : Constant
    a : Pair
    xp : namespace

    Returns
    -------
    Pair

    Examples
    --------
    >>> import numpy as np
    >>> from ddim_core.backends import HOST_XP as xp
    >>> third = Constant.of(1 / 3, 64)
    >>> p = scale(third, Pair.of(np.array([3.0]), xp), xp)
    >>> p.hi.tolist(), p.lo.tolist()   # 3 fl(1/3) = 1 - 2^-54, which one float cannot hold
    ([1.0], [-5.551115123125783e-17])
    """
    p, e = _two_prod(c, a.hi, xp)
    return Pair(*_fast_two_sum(p, e + _exact(xp, c, a.lo).value * a.lo))


def product(c: Constant, x: Array, xp: Namespace) -> Pair:
    """c x exactly, for a host constant c and a plain array x.

    Parameters
    ----------
    c : Constant
    x : array
    xp : namespace

    Returns
    -------
    Pair

    Examples
    --------
    >>> import numpy as np
    >>> from ddim_core.backends import HOST_XP as xp
    >>> product(Constant.of(1 / 3, 64), np.array([3.0]), xp).lo.tolist()
    [-5.551115123125783e-17]
    """
    return Pair(*_two_prod(c, x, xp))


def divide(a: Pair, c: Constant, xp: Namespace) -> Pair:
    """a / c for a host constant c != 0 (one correction: q1 + (a - c q1) / c).

    Parameters
    ----------
    a : Pair
    c : Constant
    xp : namespace

    Returns
    -------
    Pair

    Examples
    --------
    >>> import numpy as np
    >>> from ddim_core.backends import HOST_XP as xp
    >>> c = Constant.of(1 / 3, 64)
    >>> q = divide(scale(c, Pair.of(np.array([0.7]), xp), xp), c, xp)
    >>> q.hi.tolist(), abs(float(q.lo[0])) < 1e-30
    ([0.7], True)
    """
    value = _exact(xp, c, a.hi).value
    q1 = a.hi / value
    p, e = _two_prod(c, q1, xp)
    r = add(a, Pair(-p, -e), xp)
    q2 = (r.hi + r.lo) / value
    return Pair(*_fast_two_sum(q1, q2))


def combine(terms: list[tuple[Constant, Pair | Array]], xp: Namespace) -> Pair:
    """sum_j c_j v_j for host constants c_j and pairs or plain arrays v_j.

    Parameters
    ----------
    terms : list of (Constant, Pair or array)
    xp : namespace

    Returns
    -------
    Pair

    Raises
    ------
    ValueError
        No terms.

    Examples
    --------
    >>> import numpy as np
    >>> from ddim_core.backends import HOST_XP as xp
    >>> one = Constant.of(1.0, 64)
    >>> combine([(one, np.array([1.0])), (one, np.array([1e-20]))], xp).lo.tolist()
    [1e-20]
    """
    total: Pair | None = None
    for c, v in terms:
        part = scale(c, v, xp) if isinstance(v, Pair) else product(c, v, xp)
        total = part if total is None else add(total, part, xp)
    if total is None:
        raise ValueError("combine needs at least one term")
    return Pair(backends.materialize(total.hi), backends.materialize(total.lo))
