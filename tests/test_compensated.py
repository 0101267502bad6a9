"""Compensated (double-word) arithmetic (`ddim_core.compensated`): the operations are exact to
about 2^-2p against exact rational arithmetic, and scaling then dividing by a constant returns
the same pair, on every backend, in float32 and float64."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from helpers import Backend, to_numpy
from hypothesis import given, settings
from hypothesis import strategies as st

from ddim_core import backends
from ddim_core import compensated as cw

BACKENDS = [
    Backend("numpy", "numpy"),
    Backend("torch", "torch"),
    Backend("jax", "jax"),
    Backend("array_api_strict", "array_api_strict"),
]
P = {"float32": 24, "float64": 53}
# normal numbers (or zero): Dekker's product is exact unless a partial product underflows
FLOATS = st.floats(-1e3, 1e3).filter(lambda v: v == 0.0 or abs(v) > 1e-20)


def exact(pair: cw.Pair) -> list[Fraction]:
    hi, lo = to_numpy(pair.hi).astype(np.float64), to_numpy(pair.lo).astype(np.float64)
    return [Fraction(float(h)) + Fraction(float(v)) for h, v in zip(hi, lo, strict=True)]


@settings(max_examples=40)
@given(
    values=st.lists(FLOATS, min_size=4, max_size=4),
    others=st.lists(FLOATS, min_size=4, max_size=4),
    constant=st.floats(1e-3, 1e3),
    dtype=st.sampled_from(["float32", "float64"]),
    backend=st.sampled_from(BACKENDS),
)
def test_operations_against_exact_arithmetic(values, others, constant, dtype, backend) -> None:
    if not backend.supports(dtype):
        return
    x = backend.array(np.array(values), dtype)
    y = backend.array(np.array(others), dtype)
    xp = backends.namespace(x=x)
    c = cw.Constant.of(constant, cw.bits(xp, x.dtype))
    assert Fraction(c.hi) + Fraction(c.lo) == Fraction(c.value)
    xs = [Fraction(float(v)) for v in to_numpy(x).astype(np.float64)]
    ys = [Fraction(float(v)) for v in to_numpy(y).astype(np.float64)]
    cv = Fraction(c.value)
    product = cw.product(c, x, xp)
    assert exact(product) == [cv * a for a in xs]  # Dekker's product is exact
    total = cw.add(product, cw.Pair.of(y, xp), xp)
    rel = Fraction(2) ** (4 - 2 * P[dtype])
    for got, a, b in zip(exact(total), xs, ys, strict=True):
        assert abs(got - (cv * a + b)) <= rel * (abs(cv * a) + abs(b))
    back = cw.divide(cw.scale(c, total, xp), c, xp)
    for got, want in zip(exact(back), exact(total), strict=True):
        assert abs(got - want) <= rel * (abs(want) + abs(cv * max(map(abs, xs), default=0)))
    np.testing.assert_array_equal(to_numpy(back.hi), to_numpy(total.hi))


def test_pairs_stay_normalised() -> None:
    """hi = fl(hi + lo) after every operation."""
    rng = np.random.default_rng(0)
    xp = backends.HOST_XP
    z = cw.Pair.of(rng.standard_normal(64), xp)
    for c in (0.93, 1 / 3, 7.5, 0.07):
        k = cw.Constant.of(c, 64)
        z = cw.combine([(k, z), (cw.Constant.of(-c / 2, 64), rng.standard_normal(64))], xp)
        np.testing.assert_array_equal(z.hi + z.lo, z.hi)


def test_half_precision_is_refused_not_nan() -> None:
    """A float16 array gave a NaN low word (Dekker's float64 splitter, 2^27 + 1, is inf in
    float16) and Constant.of(value, 16) a float64 constant, silently; the module said it ran in
    every floating dtype. Half precision is computed in float32 (as the samplers do)."""
    xp = backends.HOST_XP
    x = np.array([0.1, 3.0], dtype=np.float16)
    with pytest.raises(ValueError, match=r"bits must be 32 or 64.*got 16"):
        cw.product(cw.Constant.of(0.1, 32), x, xp)
    with pytest.raises(ValueError, match=r"bits must be 32 or 64.*got 16"):
        cw.Constant.of(0.1, 16)
    assert cw.add(cw.Pair.of(x, xp), cw.Pair.of(x, xp), xp).hi.dtype == np.float16  # TwoSum
