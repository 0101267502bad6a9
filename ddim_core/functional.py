"""Functional init/step API: the state holds only arrays and a step index.

    state = init(config, 50, like=x)
    for _ in range(50):
        t = timestep(state)
        state, x = step(state, x, model(x, t), config=config)

Every coefficient is precomputed by `init` (host float64, cast once to the sample's dtype and
device), so `step` is pure array code with no Python branch on values and no host read: a
whole loop runs under `jax.lax.scan` / `jax.jit` and `torch.compile(fullgraph=True)`.
`config` is static (hashable), as Bumblebee passes its scheduler to `step`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import backends, kernels
from .backends import Array
from .config import DDIMConfig
from .plans import make_plan
from .steps import _check_row, _host_table


class DDIMState(NamedTuple):
    """Arrays only (a JAX pytree): per-step coefficients, timesteps, and the step index."""

    coefficients: Array  # (N, 5): the kernels' columns for each step of the plan
    timesteps: Array  # (N,) integer
    index: Array  # () integer: the next step


def init(
    config: DDIMConfig,
    num_inference_steps: int,
    *,
    like: Array,
    inverse: bool = False,
    eta: float = 0.0,
) -> DDIMState:
    """State for the forward plan (or, with `inverse=True`, the mirrored inverse plan)."""
    plan = make_plan(config, num_inference_steps)
    ts = np.array(plan.inverse_timesteps if inverse else plan.timesteps)
    table, reasons = _host_table(("inverse" if inverse else "forward", plan, float(eta)))
    _check_row(reasons, ts.tolist())
    xp = backends.namespace(like=like)
    device = backends.device(like)
    dtype = backends.work_dtype(xp, like.dtype)
    return DDIMState(
        coefficients=backends.from_host(table[ts], xp, device=device, dtype=dtype),
        timesteps=xp.asarray(ts.tolist(), device=device),
        index=xp.asarray(0, device=device),
    )


def timestep(state: DDIMState) -> Array:
    """The timestep of the next step, a 0-d integer array."""
    return _row(state.timesteps, state.index)


def step(
    state: DDIMState,
    sample: Array,
    model_output: Array,
    *,
    config: DDIMConfig,
    noise: Array | None = None,
) -> tuple[DDIMState, Array]:
    """One step of the plan `init` made (forward or inverse); returns (new state, x_prev)."""
    xp = backends.namespace(sample=sample, model_output=model_output, noise=noise)
    x_t, out, z = backends.to_work_dtype(xp, sample, model_output, noise)
    c = _row(state.coefficients, state.index)
    x_prev, _ = kernels.ddim_update(x_t, out, c, config, z, False, xp=xp)
    return state._replace(index=state.index + 1), backends.cast(xp, x_prev, sample.dtype)


def _row(table: Array, index: Array) -> Array:
    """table[index] as a gather: indexing with a 0-d array would read it back (torch.compile)."""
    xp = backends.namespace(table=table)
    return xp.take(table, xp.reshape(index, (1,)), axis=0)[0, ...]
