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
    """A counterexample: the target differs from exact DDIM (the message says how)."""


class AllUnsupported(Exception):
    """Every example drawn was one the target does not take."""


def search(
    prop: Callable[[Any], None], strategy: SearchStrategy[Any], *, examples: int = 25
) -> str | None:
    """Run `prop` over `strategy`: None when no counterexample is found, else the message of
    the first one, shrunk. Examples the target does not take (`Unsupported`) are skipped;
    AllUnsupported when all are. Derandomized (the same examples every run), no database."""

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
    """A drawn example in words: configs by their non-default options."""
    if isinstance(case, DDIMConfig):
        return describe(case)
    if isinstance(case, tuple | list):
        return ", ".join(case_text(part) for part in case)
    return repr(case)


def inputs(
    seed: int, shape: tuple[int, ...], dtype: str = "float64", scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standard normal (sample, model output, noise) times `scale`, rounded to `dtype`."""
    rng = np.random.default_rng(seed)
    x, m, z = (round_to(scale * rng.standard_normal(shape), dtype) for _ in range(3))
    return x, m, z
