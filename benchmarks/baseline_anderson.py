"""The exact-inversion loop of ddim-core 0.1 (main at e2521a3), kept verbatim as the inversion
benchmark's baseline ("today's Anderson solver"): the plain inversion step, then up to
`fixed_point_iters` Anderson iterations per step (the plain result measured first), the
m x m normal equations solved by a Cholesky factorisation, the best measured iterate kept."""

# mypy: ignore-errors
# ruff: noqa

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

from ddim_core import backends, coefficients
from ddim_core.backends import Array, Namespace
from ddim_core.coefficients import StepKey
from ddim_core.plans import make_plan
from ddim_core.sampling import StepInfo
from ddim_core.steps import inverse_step, step


def invert(
    model, x, config, num_inference_steps, *, fixed_point_iters, tol=None, callback=None, history=5
):
    """ddim_core.invert of main at e2521a3 (without its argument checks)."""
    plan = make_plan(config, num_inference_steps)
    xp = backends.namespace(x=x)
    for i, t in enumerate(plan.inverse_timesteps):
        out = model(x, t)
        y, x0 = inverse_step(plan, out, t, x)
        calls, residual = 1, None
        if fixed_point_iters:

            def forward(y, t=t):
                return step(plan, model(y, t), t, y)[0]

            row = coefficients.row(StepKey(plan, 0.0, True), t)
            c = row.sqrt_ab_to / row.sqrt_ab_from
            y, more, residual = solve_implicit(
                forward, x, y, fixed_point_iters, tol, c=c, history=history
            )
            calls += more
        x = backends.materialize(y)
        if callback is not None:
            callback(StepInfo(i, t, x, x0, calls, residual))
    return x


def solve_implicit(
    forward: Callable[[Array], Array],
    x_src: Array,
    y: Array,
    iters: int,
    tol: float | None,
    *,
    c: float = 1.0,
    history: int = 5,
) -> tuple[Array, int, float | None]:
    """Find y with forward(y) = x_src per batch element, from the guess y (plain inversion).

    The fixed-point map g(y) = y - c (forward(y) - x_src), with c the inverse of forward's
    linear part, is plain inversion with the model evaluated at y. Anderson mixing of the
    last `history` iterates (Walker & Ni 2011) makes it converge where plain iteration does
    not; the best iterate per sample is kept. Returns (best, forward calls, max residual);
    the residual is read to the host only to stop at `tol`, or when free (NumPy), else None.
    """
    xp = backends.namespace(x_src=x_src, y=y)
    batch = y.shape[0]
    best = y
    best_res = xp.full((batch,), math.inf, dtype=y.dtype, device=backends.device(y))
    g_hist: list[Array] = []
    f_hist: list[Array] = []
    calls = 0
    residual: float | None = None
    for _ in range(iters):
        x_fwd = backends.materialize(forward(y))
        calls += 1
        f = -c * (x_fwd - x_src)  # g(y) - y
        res = xp.max(xp.reshape(xp.abs(x_fwd - x_src), (batch, -1)), axis=1)
        best = xp.where(backends.broadcast_to_sample(res < best_res, y.ndim, xp), y, best)
        best_res = xp.minimum(res, best_res)
        best, best_res = backends.materialize(best), backends.materialize(best_res)
        if tol is not None or backends.is_host_numpy(best_res):
            residual = float(xp.max(best_res))  # a host read: only to stop early, or free
            if tol is not None and residual <= tol:
                break
        g_hist = [*g_hist, y + f][-(history + 1) :]
        f_hist = [*f_hist, f][-(history + 1) :]
        y = backends.materialize(_anderson(g_hist, f_hist, xp))
    return best, calls, residual


def _anderson(g_hist: list[Array], f_hist: list[Array], xp: Namespace) -> Array:
    """Anderson type-II step per batch element: y = g_k - dG gamma, gamma = argmin |f_k - dF gamma|.

    The m x m normal equations are solved by a Cholesky factorisation written out over (batch,)
    arrays, so no linalg extension is needed (Dask has no batched solve).
    """
    g_k, f_k = g_hist[-1], f_hist[-1]
    if len(f_hist) < 2:
        return g_k
    batch = f_k.shape[0]

    def flat(a: Array) -> Array:
        return xp.reshape(a, (batch, -1))

    dF = [flat(b - a) for a, b in itertools.pairwise(f_hist)]
    dG = [b - a for a, b in itertools.pairwise(g_hist)]
    gram = [[xp.sum(a * b, axis=1) for b in dF] for a in dF]
    rhs = [xp.sum(a * flat(f_k), axis=1) for a in dF]
    ridge = 1e-10 * sum(gram[i][i] for i in range(len(dF))) + 1e-300  # dF may be singular
    gamma = _cholesky_solve(gram, rhs, ridge, xp)
    return g_k - sum(
        backends.broadcast_to_sample(c, g_k.ndim, xp) * d for c, d in zip(gamma, dG, strict=True)
    )


def _cholesky_solve(
    a: list[list[Array]], b: list[Array], ridge: Array, xp: Namespace
) -> list[Array]:
    """Solve (a + ridge I) x = b for symmetric positive definite a, elementwise over the batch."""
    k = len(b)
    low: list[list[Any]] = [[None] * k for _ in range(k)]
    for i in range(k):
        for j in range(i + 1):
            s = a[i][j] + (ridge if i == j else 0.0) - sum(low[i][p] * low[j][p] for p in range(j))
            low[i][j] = xp.sqrt(xp.maximum(s, ridge)) if i == j else s / low[j][j]
    y: list[Array] = []
    for i in range(k):
        y.append((b[i] - sum(low[i][p] * y[p] for p in range(i))) / low[i][i])
    x: list[Array] = [None] * k
    for i in reversed(range(k)):
        x[i] = (y[i] - sum(low[p][i] * x[p] for p in range(i + 1, k))) / low[i][i]
    return x
