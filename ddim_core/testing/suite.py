"""The pieces every conformance area is made of: a `Finding` (one row of the report), the
`Divergence` an area raises for a counterexample, and `search`, which runs one property over
a Hypothesis strategy with bounded, derandomized settings and returns the shrunk
counterexample's message."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from hypothesis import HealthCheck, Phase, Verbosity, given, reject, settings
from hypothesis.errors import Flaky, Unsatisfiable
from hypothesis.strategies import SearchStrategy

from ddim_core.config import DDIMConfig

from .assertions import describe
from .backends import round_to
from .findings import FAIL, NA, PASS, UNSUPPORTED, Finding
from .targets import Crash, Unsupported

__all__ = ["FAIL", "NA", "PASS", "UNSUPPORTED", "AllUnsupported", "Divergence", "Finding", "search"]


class Divergence(AssertionError):
    """A counterexample: the target differs from exact DDIM (the message says how).

    An area's property raises it; `search` catches it and returns its message, shrunk.

    Examples
    --------
    >>> from hypothesis import strategies as st
    >>> def prop(n):
    ...     if n > 10:
    ...         raise Divergence(f"{n} is off")
    >>> search(prop, st.integers(0, 100))
    '11 is off'
    """


class AllUnsupported(Exception):
    """Every example drawn was one the target does not take.

    `search` raises it when the property raised `Unsupported` for every example, so that the
    area's verdict is "unsupported" rather than a pass on nothing.

    Examples
    --------
    >>> from hypothesis import strategies as st
    >>> def prop(n):
    ...     raise Unsupported("no such option")
    >>> try:
    ...     search(prop, st.integers())
    ... except AllUnsupported:
    ...     print("unsupported")
    unsupported
    """


def search(
    prop: Callable[[Any], None], strategy: SearchStrategy[Any], *, examples: int = 25
) -> str | None:
    """Run `prop` over `strategy`: None when no counterexample is found, else the message of
    the first one, shrunk. Examples the target does not take (`Unsupported`) are skipped;
    AllUnsupported when all are. Derandomized (the same examples every run), no database.

    Parameters
    ----------
    prop : callable
        The property: takes one drawn example, raises `Divergence` (or `Crash`) for a
        counterexample and `Unsupported` for an example the target does not take.
    strategy : hypothesis.strategies.SearchStrategy
        Where the examples are drawn from.
    examples : int, optional
        The most examples to draw (Hypothesis' max_examples). Default 25.

    Returns
    -------
    str or None
        None when every example passes; else the shrunk counterexample's message (a `Crash`
        names the example it raised for), or "not deterministic: ..." when an example failed
        and then passed when run again.

    Raises
    ------
    AllUnsupported
        If the property raised `Unsupported` for every example drawn.

    Examples
    --------
    >>> from hypothesis import strategies as st
    >>> def prop(n):
    ...     if n * n > 50:
    ...         raise Divergence(f"{n}**2 = {n * n} > 50")
    >>> search(prop, st.integers(0, 100))
    '8**2 = 64 > 50'
    >>> search(prop, st.integers(0, 7)) is None
    True
    """

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        verbosity=Verbosity.quiet,
        report_multiple_bugs=False,
        phases=(Phase.explicit, Phase.generate, Phase.shrink),
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def run(case: Any) -> None:
        try:
            prop(case)
        except Unsupported:
            reject()
        except Crash as e:  # name the example, as a Divergence does
            raise Crash(f"{e} ({case_text(case)})") from e.__cause__

    try:
        run()
    except (Divergence, Crash) as e:
        return str(e)
    except Flaky as e:  # an example failed once and passed when run again
        inner = getattr(e, "exceptions", None)  # FlakyFailure groups the failures seen
        first = inner[0] if inner else e
        return f"not deterministic: the same input fails, then passes ({first})"
    except Unsatisfiable:
        raise AllUnsupported from None
    return None


def case_text(case: Any) -> str:
    """A drawn example in words: configs by their non-default options.

    Parameters
    ----------
    case : object
        A drawn example: a DDIMConfig, a tuple or list of parts, or any other value.

    Returns
    -------
    str
        Configs as `describe` writes them, tuples and lists as their parts joined by ", ",
        anything else as its repr.

    Examples
    --------
    >>> case_text((DDIMConfig(timestep_spacing="trailing"), 10))
    "DDIMConfig(timestep_spacing='trailing'), 10"
    """
    if isinstance(case, DDIMConfig):
        return describe(case)
    if isinstance(case, tuple | list):
        return ", ".join(case_text(part) for part in case)
    return repr(case)


def inputs(
    seed: int, shape: tuple[int, ...], dtype: str = "float64", scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standard normal (sample, model output, noise) times `scale`, rounded to `dtype`.

    Parameters
    ----------
    seed : int
        Seed of the NumPy generator the three arrays are drawn from.
    shape : tuple of int
        Shape of each array.
    dtype : str, optional
        A floating dtype's name (bfloat16 included) the values are rounded to. Default
        "float64".
    scale : float, optional
        Factor the standard normal values are multiplied by. Default 1.0.

    Returns
    -------
    tuple of numpy.ndarray
        (sample, model output, noise), float64 arrays holding values exact in `dtype`.

    Examples
    --------
    >>> x, m, z = inputs(0, (2,), "float16")
    >>> x
    array([ 0.12573242, -0.13208008])
    >>> bool((x.astype(np.float16).astype(np.float64) == x).all())
    True
    """
    rng = np.random.default_rng(seed)
    x, m, z = (round_to(scale * rng.standard_normal(shape), dtype) for _ in range(3))
    return x, m, z
