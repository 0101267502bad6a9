"""ddim_core.backends through the public steps: out= buffers and inputs the array layer must
judge before a fused kernel writes (torch's own errors come from deep inside a kernel)."""

from __future__ import annotations

import pytest

import ddim_core as dc
from ddim_core import backends

PLAN = dc.make_plan(dc.DDIMConfig(), 10)


def test_a_torch_broadcast_view_is_not_a_writable_out_buffer() -> None:
    """torch's expand() gives a view whose elements share memory (stride 0), as NumPy's
    broadcast_to does; `writable` said True, so out= reached the kernel and torch's
    RuntimeError 'more than one element of the written-to tensor refers to a single memory
    location' came from inside ddim_core.builtins."""
    torch = pytest.importorskip("torch")
    x = torch.ones(2, 3)
    assert not backends.writable(torch.empty(3).expand(2, 3))
    assert backends.writable(torch.empty(3, 2).T) and backends.writable(torch.empty(1, 3))
    assert backends.writable(torch.empty(3).expand(1, 3))  # stride 0 on a size-1 axis: fine
    assert backends.writable(torch.empty(3).expand(0, 2, 3))  # empty: nothing is shared
    with pytest.raises(ValueError, match=r"out\[0\] is read-only"):
        dc.step(PLAN, x * 0.5, 500, x, out=(torch.empty(3).expand(2, 3), torch.empty(2, 3)))
