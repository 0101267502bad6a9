"""A finding: one row of a `ddim-core check` report."""

from __future__ import annotations

import dataclasses

PASS, FAIL, UNSUPPORTED, NA = "pass", "FAIL", "unsupported", "n/a"


@dataclasses.dataclass(frozen=True)
class Finding:
    """The area, its verdict (pass, FAIL, unsupported, n/a) and the first counterexample
    (shrunk), or what was checked, or why it does not apply.

    Examples
    --------
    >>> Finding("timesteps", PASS, "30 configs")
    Finding(area='timesteps', verdict='pass', detail='30 configs')
    """

    area: str
    verdict: str
    detail: str = ""
