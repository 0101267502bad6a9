"""Exact DDIM inversion: each inverse step solved implicitly, at few model calls per step.

Inverting a DDIM step means finding x_t whose forward step lands on the source sample:
F(x_t) = x_s. In VE coordinates (a sample times `scale`: 1 / sqrt(abar) for DDIM's samples;
sigma = sqrt((1 - abar) / abar)) the forward step is x_s = x_t - h eps(x_t), h = sigma_t -
sigma_s, so the inverse step is the implicit equation

    x_t = x_s + h eps(x_t)            (backward Euler of the probability-flow ODE)

whose fixed-point iteration, started at x_s, is plain DDIM inversion. Three things make it
cheap and safe:

1. A warm start from the previous steps ("the previous step's correction"): the eps a step
   solved for, (x_t - x_s) / h, moves smoothly along the inversion, so each step starts from
   x_s + h eps_pred, eps_pred extrapolated from the last steps (`Trail`) in the DDIM angle
   theta = atan(sigma), which stays bounded up to a zero-SNR end where sigma runs off to 1e4:
   by the quadratic through the last three, or, with `tol`, per sample by the polynomial of
   degree 3 or 4 that would have predicted the last step better, from the steps before it,
   than every lower degree (half precision: the quadratic, whose weights amplify the
   iterates' rounding least);
   with two steps, where the step in theta is more than REACH times the last one, or where
   the last two spacings differ by more than REACH: linearly, reaching at most REACH times
   the last change; where not finite: the last solved eps. The first step starts from x_s.
   Second order instead of first cuts the warm start's residual, and so the round trip at
   a fixed number of calls. The degree chosen one step back saves calls where `tol` stops
   the step; without tol it is not used: a degree chosen one step back is sometimes wrong
   where a path bends, and a fixed number of calls cannot make up for it. (These choices
   were measured on code since changed; the current figures are the README's, from
   `benchmarks/inversion.py`.)
2. Anderson acceleration (type II; Walker & Ni 2011) of the fixed-point map
   g(x) = x - c (F(x) - x_s): a multisecant quasi-Newton update from the step's last
   `history` iterates. c is the inverse of F's slope for data of unit variance,
   1 / cos(theta_t - theta_s) with theta = atan(sigma) the DDIM angle (`Frame.c`): it stays
   right up to a zero-SNR end, where holding eps fixed would give c = 0. The small
   least-squares problem is solved per sample by modified Gram-Schmidt (no normal equations,
   which square the condition number, and no factorisation that can divide by zero); a
   column that is numerically dependent on the others, or too small to carry more than
   rounding, is dropped.
3. Safeguards: an update that is not finite or is longer than `CAP` plain steps becomes the
   plain step; every measured iterate's residual max |F(x) - x_s| is kept per sample with the
   best iterate; the last refinement (which no call measures) is returned only where the
   iteration was still improving and it is finite, else the best measured iterate. Where the
   model is not finite at an iterate, that sample's next iterate is its best measured
   iterate's plain step, halved each time it fails (a backtracking line search), and the
   failed iterate enters Anderson's history as the best one (a zero difference, dropped): a
   model that fails only in a region the iteration overshot into recovers. Where the warm
   start itself fails (no iterate measured finite yet), the next iterate is halfway back to
   plain inversion's point, and halfway again at each failure: a trail that extrapolated
   into such a region recovers too. A warm start beyond the sample dtype's range (infinite
   once rounded to it, whence no step back could return) starts at plain inversion's point.
   A sample whose model failed at every call of the step is NaN, as in plain inversion: no
   iterate of it was measured, and a device loop reads nothing to warn with.

Counting: with `refinements = k`, the first model call is the step itself, taken at the warm
start (at the first step it is plain inversion's call, and its fixed-point update is plain
inversion); each of the k further calls measures the latest iterate and refines it. So a step
costs 1 + k model calls, and returns the k-th refinement of the plain step's result, unless
`tol` is given: then every measured residual is read on the host, and the step stops at the
first iterate where every sample is within tol, measured or predicted. A sample returns the
refinement no call has measured wherever that is predicted within tol: its last residual r_k
times the slowest rate r_j / r_j-1 the step has shown, where r_k improved on the best before
it and the refinement is finite; else its best measured iterate. Still one host read per
iterate; where the prediction holds a step stops one call sooner than measuring would.
Predicting at the last rate instead, r_k (r_k / r_k-1), failed: Anderson's third iterate is
near-exact on the benchmark's 2-D test bed, and the fourth falls back to the rate of the first
two (round trip 1.1e-9 instead of 1.4e-11, real data at guidance 3). With the slowest rate,
float64 round trips with tol fell from about 5e-12 to 1e-14 at fewer calls (the refinement is
better than the measured iterate it replaces); one step in 10,000 of the real data at
guidance 3 ended above tol (1.6e-11).
Half precision, whose iterates are rounded from float32, stops on measured residuals only: the
prediction knows nothing of the rounding (it took float16 at guidance 7.5 from 4 to 5 ulps).

Half precision is iterated in float32 and measured at the iterates rounded to the sample's
dtype (what the sampler will see). Everything is array-API code over the batch: no host read
unless `tol` is given (or the arrays are NumPy's, where reading is free).

With `tol` and `stall` (a model computed in half precision: the ComfyUI adapter turns it on
for a float16 / bfloat16 model, and the loops, `resolve_stall`, for float16 / bfloat16
samples), a step also stops where it has stalled above tol: its best
residual is in (STALL_ULPS ulps of the work dtype, STALL_BELOW] = (1.2e-4, 1e-2] in float32,
and the last STALL_REFINEMENTS (2) refinements cut it by less than a factor STALL (1.5). It
returns its best measured iterate, as at tol, decided on the residuals tol reads anyway. A
half-precision model (or sample) rounds to ~1e-3 relative, so the residual levels off after a
few calls far above tol = 1e-6, and every refinement was spent for nothing. With the stall
stop a step ends where it levels off: tests/test_inversion_methods.py (float16 samples, 20
steps, tol 1e-6, 8 refinements) measures 105 model calls where every refinement takes 166
(`ddim_core.invert`) and 100 against 180 (k-diffusion), and tests/test_comfyui_integration.py
in a real ComfyUI (a float16 model on float32 latents) 102 against 180, for a round trip of
1.4e-3 against 2.2e-3. Not on for float32 / float64 samples: a step that does not converge
(real data under strong guidance) can level off in the same band for two refinements and
still converge later, and a model rounded element by element (each output a function of its
own input only) can reach an exact fixed point after a plateau.

A step that ends above `tol` (its refinements run out, or it stalled) returns its best
iterate all the same; the loops (`ddim_core.invert`, `ddim_kdiffusion.sample_ddim_inverse`)
collect such steps in a `Shortfalls` and warn once per loop (`ToleranceWarning`), from the
residuals `tol` already reads; for a stalled step the advice is a larger tol, not more
refinements. Without `tol` nothing is compared, and nothing is read to compare.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

from . import backends
from .backends import Array, Namespace
from .coefficients import Row
from .config import check_bool, check_int, check_real

CAP = 10.0  # the longest update accepted, in plain (fixed-point) steps
REACH = 2.0  # the warm start extrapolates at most this many times the last change of eps
ORDER = 4  # the warm start's highest order of extrapolation (2 in half precision)
# with tol and stall, a step stops refining where its last STALL_REFINEMENTS refinements cut
# its best residual by less than STALL, once that is at most STALL_BELOW and above STALL_ULPS
# ulps of the work dtype (module docstring: a half-precision model's floor; above the band a
# step that does not converge, below it one at the latents' own floor, keeps refining)
STALL = 1.5
STALL_REFINEMENTS = 2
STALL_BELOW = 1e-2
STALL_ULPS = 1024
# the packages whose frames a ToleranceWarning skips: the core, and its adapters calling a loop
OWN_PACKAGES = ("ddim_core", "ddim_diffusers", "ddim_kdiffusion", "ddim_comfyui", "ddim_mindone")


class Frame(NamedTuple):
    """One inverse step from noise level sigma_from up to sigma_to. A sample times `scale_*`
    is its VE form (1 / sqrt(abar) for DDIM's samples, 1 for k-diffusion's); `start` takes the
    source sample to the destination's coordinates at the same VP point (plain inversion's
    point of evaluation: 1 when both are VP samples).

    Examples
    --------
    >>> f = Frame(1.0, 1.0, 0.5, 0.7)   # k-diffusion's VE samples, sigma 0.5 -> 0.7
    >>> round(f.h, 12), round(f.c, 6)
    (0.2, 1.103704)
    """

    scale_from: float
    scale_to: float
    sigma_from: float
    sigma_to: float
    start: float = 1.0

    @property
    def h(self) -> float:
        """sigma_to - sigma_from: the step in sigma."""
        return self.sigma_to - self.sigma_from

    @property
    def c(self) -> float:
        """The preconditioner: the inverse of the forward step's slope in the samples'
        coordinates for unit-variance data, 1 / cos(theta_to - theta_from) for VP samples."""
        return _preconditioner(self.scale_from, self.scale_to, self.sigma_from, self.sigma_to)


def _preconditioner(
    scale_from: float, scale_to: float, sigma_from: float, sigma_to: float
) -> float:
    """1 / F'(x) for data N(0, I): F is then linear, VP slope cos(theta_to - theta_from) with
    theta = atan(sigma); a sample times scale times cos(theta) is its VP form. sigma_to may be
    inf (a zero-SNR end; then scale_to * cos(theta_to) is taken as 1)."""
    theta_from, theta_to = math.atan(sigma_from), math.atan(sigma_to)
    vp_from = scale_from * math.cos(theta_from)
    vp_to = scale_to * math.cos(theta_to) if math.isfinite(sigma_to) else 1.0
    return vp_from / (vp_to * math.cos(theta_to - theta_from))


def frame(row: Row) -> Frame | None:
    """The frame of a DDIM inverse step from its `coefficients.Row` (eta = 0: `direction` is
    sqrt(1 - abar_to)); None when abar_to = 0 (a zero-SNR end, which has no VE form) or when
    the step does not move up (abar_to = abar_from: the step from alpha_bar_0 to t = 0 when
    set_alpha_to_one is False, whose forward step is the identity but for clipping).

    Parameters
    ----------
    row : coefficients.Row
        The inverse step's row (`coefficients.row(StepKey(plan, 0.0, True), t)`).

    Returns
    -------
    Frame or None

    Examples
    --------
    >>> import ddim_core as dc
    >>> from ddim_core import coefficients
    >>> plan = dc.make_plan(dc.DDIMConfig(), 10)
    >>> row = coefficients.row(coefficients.StepKey(plan, 0.0, True), plan.timesteps[-1])
    >>> frame(row).sigma_from   # from the clean level (set_alpha_to_one)
    0.0
    """
    if row.sqrt_ab_to <= 0.0:
        return None
    scale_from, scale_to = 1.0 / row.sqrt_ab_from, 1.0 / row.sqrt_ab_to
    found = Frame(scale_from, scale_to, row.sqrt_1m_ab_from * scale_from, row.direction * scale_to)
    return found if found.h > 0.0 else None


def vp_preconditioner(row: Row) -> float:
    """`Frame.c` of a DDIM inverse step (VP samples) from its Row, also where it has no frame:
    1 / (sqrt(abar_from abar_to) + sqrt((1 - abar_from) (1 - abar_to))).

    Parameters
    ----------
    row : coefficients.Row
        The inverse step's row.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        A step from alpha_bar = 1 straight to alpha_bar = 0 (zero terminal SNR in one step):
        its forward step returns the model's x0_pred, of slope 0 in x_t, and has no inverse.

    Examples
    --------
    >>> import ddim_core as dc
    >>> from ddim_core import coefficients
    >>> plan = dc.make_plan(dc.DDIMConfig(), 10)
    >>> row = coefficients.row(coefficients.StepKey(plan, 0.0, True), plan.timesteps[0])
    >>> round(vp_preconditioner(row), 6) == round(frame(row).c, 6)
    True
    """
    slope = float(row.sqrt_ab_from * row.sqrt_ab_to + row.sqrt_1m_ab_from * row.direction)
    if slope <= 0.0:
        raise ValueError(
            "exact inversion cannot solve a step from alpha_bar = 1 straight to alpha_bar = 0 "
            "(zero terminal SNR in one step): its forward step returns the model's x0_pred "
            "whatever x_T is; take more than one step, or plain inversion"
        )
    return 1.0 / slope


class Trail(NamedTuple):
    """What an inverse step hands to the next: the sigma and the solved eps
    ((x_t - x_s) / h in VE form, in the work dtype) of the last ORDER + 2 steps (the points of
    the highest-order extrapolation and of its check against the last step).

    Examples
    --------
    >>> trail = Trail()
    >>> for k in range(8):
    ...     trail = trail.extend(float(k), "e")
    >>> trail.sigmas
    (2.0, 3.0, 4.0, 5.0, 6.0, 7.0)
    """

    sigmas: tuple[float, ...] = ()
    eps: tuple[Array, ...] = ()

    def extend(self, sigma: float, eps: Array) -> Trail:
        """The trail with a solved step's sigma and eps appended (the last ORDER + 2 kept).

        Parameters
        ----------
        sigma : float
            The step's destination sigma.
        eps : array
            The eps it solved for.

        Returns
        -------
        Trail

        Examples
        --------
        >>> import numpy as np
        >>> trail = Trail()
        >>> for k in range(4):
        ...     trail = trail.extend(float(k), np.array([k]))
        >>> trail.sigmas
        (0.0, 1.0, 2.0, 3.0)
        """
        keep = ORDER + 2
        return Trail((*self.sigmas, sigma)[-keep:], (*self.eps, eps)[-keep:])


def warm_start(x_src: Array, frame: Frame | None, trail: Trail, order: int = ORDER) -> Array:
    """x_s + h eps_pred (in the samples' coordinates), eps_pred extrapolated from the trail in
    theta = atan(sigma) by a polynomial through its last points (`_extrapolated`): of degree 2
    to `order`, per sample the one that best predicted the last solved eps from the steps before
    it; linear through the last two (by at most REACH times their change) when the trail has
    two or the step in theta is more than REACH times the trail's last; x_s itself (times
    `Frame.start`) when the trail is empty (the first step: plain inversion's point).

    Parameters
    ----------
    x_src : array
        The source sample (work dtype).
    frame : Frame or None
        The step; None: the source itself.
    trail : Trail
        The last steps' solved eps.
    order : int, default ORDER
        The highest degree of the extrapolation (at least 2).

    Returns
    -------
    array
        The first iterate, in the destination's coordinates.

    Examples
    --------
    >>> import numpy as np
    >>> theta = np.arctan([0.5, 1.0, 2.0])            # eps linear in theta: exact
    >>> trail = Trail()
    >>> for s, t in zip([0.5, 1.0, 2.0], theta):
    ...     trail = trail.extend(s, np.array([t]))
    >>> bool(np.isclose(warm_start(np.array([1.0]), Frame(1.0, 1.0, 2.0, 3.0), trail)[0],
    ...                 1.0 + np.arctan(3.0)))
    True
    """
    if frame is None or (not trail.eps and frame.start == 1.0):
        return x_src
    xp = backends.namespace(x_src=x_src)
    start, scale_from, scale_to, h = _exact(xp, x_src, frame.start, *frame[:2], frame.h)
    if not trail.eps:
        return x_src * start
    return (x_src * scale_from + h * _extrapolated(trail, frame, order)) / scale_to


def _extrapolated(trail: Trail, frame: Frame, order: int) -> Array:
    """eps at the frame's destination, extrapolated from the trail in theta = atan(sigma).

    Where the step ahead is at most REACH times the trail's last step and the trail's last two
    spacings are within REACH of each other (uneven nodes make Lagrange weights large): the
    quadratic through the last three points; then, per sample, the polynomial of degree
    p = 3 .. `order` through the last p + 1 points (all spacings within REACH) where it would
    have predicted the last solved eps, from the p + 1 points before it, better than every lower
    degree did (an order chosen by its error one step back, as variable-order ODE solvers do).
    Else linear, capped at REACH. Where the extrapolation is not finite: the last solved eps.
    """
    eps = trail.eps[-1]
    if len(trail.eps) < 2:
        return eps
    xp = backends.namespace(eps=eps)
    if eps.ndim == 0:  # one value: extrapolated as a batch of one (the degree check is per sample)
        lifted = Trail(trail.sigmas, tuple(xp.reshape(e, (1,)) for e in trail.eps))
        return xp.reshape(_extrapolated(lifted, frame, order), ())
    thetas = [math.atan(s) for s in trail.sigmas]
    target = math.atan(frame.sigma_to) if math.isfinite(frame.sigma_to) else math.pi / 2
    reach = (target - thetas[-1]) / (thetas[-1] - thetas[-2])
    even = _even_points(thetas)
    if even < 3 or reach > REACH:
        e0, e1 = trail.eps[-2:]
        (k,) = _exact(xp, eps, min(reach, REACH))
        guess = e1 + k * (e1 - e0)
    else:
        guess = _lagrange(xp, thetas[-3:], trail.eps[-3:], target)
        higher_degrees = range(3, min(order, even - 2) + 1)  # degree p: p + 2 points checked
        if higher_degrees:  # else no check is needed: the quadratic it is
            best = _error_one_step_back(xp, thetas, trail.eps, 2)  # what a degree must beat
            for p in higher_degrees:
                error = _error_one_step_back(xp, thetas, trail.eps, p)
                higher = _lagrange(xp, thetas[-p - 1 :], trail.eps[-p - 1 :], target)
                better = error < best
                guess = xp.where(_sample_mask(better, eps.ndim, xp), higher, guess)
                best = xp.where(better, error, best)
    return xp.where(xp.isfinite(guess), guess, eps)


def _error_one_step_back(
    xp: Namespace, thetas: list[float], eps: tuple[Array, ...], degree: int
) -> Array:
    """Per sample, max |error| of the polynomial of `degree` through the degree + 1 points
    before the last, at the last point: how well it would have predicted the last step."""
    back = _lagrange(xp, thetas[-degree - 2 : -1], eps[-degree - 2 : -1], thetas[-1])
    return _max_abs(back - eps[-1], xp)


def _even_points(thetas: list[float]) -> int:
    """How many of the last nodes are evenly enough spaced for a Lagrange extrapolation: each
    spacing within REACH of the one after it."""
    count = min(len(thetas), 2)
    for j in range(len(thetas) - 3, -1, -1):
        ratio = (thetas[j + 2] - thetas[j + 1]) / (thetas[j + 1] - thetas[j])
        if not 1.0 / REACH <= ratio <= REACH:
            break
        count += 1
    return count


def _lagrange(xp: Namespace, nodes: list[float], values: tuple[Array, ...], at: float) -> Array:
    """The polynomial through (nodes, values) at `at`: its Lagrange weights, computed in
    float64 on the host, applied to the arrays."""
    weights = []
    for i, t_i in enumerate(nodes):
        w = 1.0
        for j, t_j in enumerate(nodes):
            if j != i:
                w *= (at - t_j) / (t_i - t_j)
        weights.append(w)
    exact = _exact(xp, values[0], *weights)
    out = exact[0] * values[0]
    for w, v in zip(exact[1:], values[1:], strict=True):
        out = out + w * v
    return out


def _solved_eps(x_src: Array, x_t: Array, frame: Frame) -> Array:
    """The eps a solved step implies, (x_t - x_s) / h in VE form (h > 0)."""
    xp = backends.namespace(x_t=x_t)
    scale_from, scale_to, h = _exact(xp, x_t, *frame[:2], frame.h)
    return (x_t * scale_to - x_src * scale_from) / h


def _exact(xp: Namespace, like: Array, *values: float) -> tuple[Any, ...]:
    """Host floats as operands that lose nothing against `like` (`backends.exact_scalars`:
    MindSpore rounds Python floats to float32 against float64 tensors)."""
    return backends.exact_scalars(xp, values, like)


def resolve_stall(stall: bool | None, x: Array, *, xp: Namespace) -> bool:
    """The stall stop of an inversion loop over samples like `x`: `stall` as given (checked),
    or for None whether `x` is half precision (float16 / bfloat16, computed in float32: the
    rounding of its iterates floors the residual above a float32 tol).

    Parameters
    ----------
    stall : bool or None
    x : array
        The loop's sample.
    xp : array namespace

    Returns
    -------
    bool

    Raises
    ------
    TypeError
        `stall` neither a bool nor None.

    Examples
    --------
    >>> import numpy as np, array_api_compat.numpy as xp
    >>> resolve_stall(None, np.zeros(2, np.float16), xp=xp), resolve_stall(None, np.zeros(2), xp=xp)
    (True, False)
    """
    if stall is None:
        return bool(backends.work_dtype(xp, x.dtype) != x.dtype)
    return check_bool("stall", stall)


class ToleranceWarning(RuntimeWarning):
    """Exact inversion with `tol`: some step ended above tol (it used every refinement, or its
    residual stopped decreasing: stalled), so the result does not map back onto its input
    within tol. Issued once per inversion loop.

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore", ToleranceWarning)  # accept a best-effort inversion
    """


class Shortfalls:
    """The steps of one inversion loop that ended above `tol`, and the one warning about them.

    A step above tol that made fewer than fixed_point_iters + 1 model calls stalled (its
    residual stopped decreasing, `solve_step`): for it the warning advises a larger tol, not
    more refinements.

    Parameters
    ----------
    tol : float or None
        The loop's tolerance; None: nothing is recorded (no threshold, and no residual read).
    fixed_point_iters : int
        The loop's refinements per step (named in the warning).

    Examples
    --------
    >>> import warnings
    >>> short = Shortfalls(1e-9, 4)
    >>> short.record(0, "timestep 499", 5, 3e-9)
    >>> short.record(1, "timestep 999", 2, 1e-10)     # within tol: not a shortfall
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     short.warn()
    >>> print(caught[0].message)  # doctest: +NORMALIZE_WHITESPACE
    exact inversion: 1 of 2 steps ended above tol=1e-09, the worst step 0 (timestep 499) at
    residual 3e-09 (its best measured iterate) after 5 model calls (fixed_point_iters=4, all
    used); sampling the result returns the input to about that, or closer where the step
    returns its last refinement (no call measures it; taken where the residual was still
    falling). Give more fixed_point_iters or a larger tol (or check the model: guidance,
    precision)
    >>> short = Shortfalls(1e-6, 8)
    >>> short.record(0, "timestep 499", 4, 3e-4)      # 4 of 9 calls: stalled
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     short.warn()
    >>> print(caught[0].message)  # doctest: +NORMALIZE_WHITESPACE
    exact inversion: 1 of 1 steps ended above tol=1e-06, the worst step 0 (timestep 499) at
    residual 0.0003 (its best measured iterate) after 4 model calls (stalled: its residual
    stopped decreasing; 1 of 1 steps above tol stalled, fixed_point_iters=8); sampling the
    result returns the input to about that, or closer where the step returns its last
    refinement (no call measures it; taken where the residual was still falling). A stalled
    residual is the model's precision floor (a float16 / bfloat16 model) or a step too hard
    to solve (strong guidance, few steps): more fixed_point_iters do not help; give a larger
    tol (about that residual) or more steps
    """

    def __init__(self, tol: float | None, fixed_point_iters: int) -> None:
        self.tol, self.iters = tol, fixed_point_iters
        self.steps, self.above, self.stalled = 0, 0, 0
        self.worst: tuple[float, int, str, int] | None = None

    def record(self, index: int, where: str, calls: int, residual: float | None) -> None:
        """Count one solved step; keep it where its residual is above tol.

        Parameters
        ----------
        index : int
            The step's index in the loop.
        where : str
            The step's place, for the warning ("timestep 499", "sigma 0.5 -> 1.2").
        calls : int
            The model calls it made (fewer than fixed_point_iters + 1 above tol: stalled).
        residual : float or None
            Its `Solution.residual` (a float whenever tol is given).
        """
        self.steps += 1
        if self.tol is None or residual is None or not residual > self.tol:  # NaN is above
            return
        self.above += 1
        self.stalled += calls <= self.iters
        if self.worst is None or not residual <= self.worst[0]:
            self.worst = (residual, index, where, calls)

    def warn(self, stacklevel: int = 2) -> None:
        """Issue the loop's one `ToleranceWarning`, if a step ended above tol.

        Parameters
        ----------
        stacklevel : int, default 2
            As `warnings.warn`'s, counted from the caller of `warn`; then moved past the
            frames of ddim-core's packages (`OWN_PACKAGES`: an adapter calling a core loop),
            so that the warning names the user's line.
        """
        if self.worst is None:
            return
        residual, index, where, calls = self.worst
        if calls > self.iters:  # the worst step used every refinement
            how = f"fixed_point_iters={self.iters}, all used"
            if self.stalled:
                how += f"; {self.stalled} of {self.above} steps above tol stalled"
            advice = (
                "Give more fixed_point_iters or a larger tol (or check the model: guidance, "
                "precision)"
            )
        else:
            how = (
                f"stalled: its residual stopped decreasing; {self.stalled} of {self.above} "
                f"steps above tol stalled, fixed_point_iters={self.iters}"
            )
            advice = (
                "A stalled residual is the model's precision floor (a float16 / bfloat16 "
                "model) or a step too hard to solve (strong guidance, few steps): more "
                "fixed_point_iters do not help; give a larger tol (about that residual) or "
                "more steps"
            )
        warnings.warn(
            f"exact inversion: {self.above} of {self.steps} steps ended above tol={self.tol:g}, "
            f"the worst step {index} ({where}) at residual {residual:.3g} (its best measured "
            f"iterate) after {calls} model calls ({how}); sampling the result returns the "
            "input to about that, or closer where the step returns its last refinement (no "
            "call measures it; taken where the residual was still falling). " + advice,
            ToleranceWarning,
            stacklevel=_outside_own_packages(stacklevel + 1),
        )


def _outside_own_packages(stacklevel: int) -> int:
    """`stacklevel` for a `warnings.warn` in this function's caller, moved past the frames of
    `OWN_PACKAGES` (an adapter calling a core loop) to the user's code."""
    try:
        frame = sys._getframe(stacklevel)  # level 1, the caller, is frame 1 here
    except ValueError:  # deeper than the stack: warnings.warn takes it as it is
        return stacklevel
    while frame.f_back is not None and frame.f_globals.get("__name__", "").split(".")[0] in (
        OWN_PACKAGES
    ):
        stacklevel, frame = stacklevel + 1, frame.f_back
    return stacklevel


class Solution(NamedTuple):
    """One solved inverse step: the result, the x0_pred of the best measured iterate, the model
    calls it took, the max over samples of the residual of the best measured iterate (None
    unless read; with tol, where a sample took the unmeasured refinement, its predicted
    residual), and the trail for the next step. Returned by `solve_step`.

    Examples
    --------
    >>> Solution(x_t=1.0, x0=1.0, calls=2, residual=None, trail=Trail()).calls
    2
    """

    x_t: Array
    x0: Array
    calls: int
    residual: float | None
    trail: Trail


def solve_step(
    forward: Callable[[Array], tuple[Array, Array]],
    x_src: Array,
    frame: Frame | None,
    refinements: int,
    tol: float | None,
    trail: Trail | None = None,
    *,
    c: float | None = None,
    history: int = 3,
    dtype: Any = None,
    stall: bool = False,
) -> Solution:
    """Find x_t with forward(x_t) = x_src per batch element: the warm start, then `refinements`
    Anderson refinements of the plain step (1 + refinements calls of `forward`, fewer when the
    residual reaches `tol`; see the module docstring).

    `forward` maps a sample at the destination level to the source level (one model call),
    returning (x_prev, x0_pred) as `steps.step` does (x_prev in the iterates' dtype or their
    work dtype).
    `c` is the preconditioner (`Frame.c` by default). Without a frame (see `frame`) the step
    starts from x_src and hands the trail on unchanged; then `c` must be given.

    Parameters
    ----------
    forward : callable
        ``forward(y) -> (x_prev, x0_pred)``: the forward step from the destination level.
    x_src : array
        The source sample (the target of the forward step), in `dtype` or, for a half
        `dtype`, in float32.
    frame : Frame or None
        The step's levels and coordinates.
    refinements : int
        k: refinements after the plain step (1 + k calls of `forward`).
    tol : float or None
        Stop at the first measured iterate whose max residual is <= tol, or one call sooner
        where the next refinement is predicted within tol, or where the residual has stalled
        above tol (module docstring); a host read per iterate, only when given.
    trail : Trail, optional
        The previous steps' solved eps (the warm start).
    c : float, optional
        The preconditioner; `frame.c` when not given.
    history : int, default 3
        Past iterates the Anderson update combines with the newest (its secant
        differences), at least 1.
    dtype : dtype, optional
        The iterates' dtype (what `forward` gets, and the result's): x_src's by default. A half
        dtype with a float32 x_src keeps a target formed in float32 unrounded (k-diffusion's
        VE sample taken to VP units).
    stall : bool, default False
        With tol, also stop where the residual has stalled above tol (module docstring): for a
        model computed in half precision, whose output's rounding sets the floor; off for any
        other (a step that does not converge stalls alike, and may still converge).

    Returns
    -------
    Solution

    Raises
    ------
    ValueError
        No frame and no `c`; refinements < 0, history < 1, tol <= 0 or not finite; a tol
        under jax.jit (a host read).
    TypeError
        A `dtype` that is neither x_src's dtype nor one whose work dtype x_src's is; a
        refinements or history that is not an integer, a tol that is not a real number.

    Examples
    --------
    >>> import numpy as np
    >>> f = Frame(1.0, 1.0, 0.0, 0.5)             # VE samples, sigma 0 -> 0.5
    >>> def forward(y):                           # DDIM's step back for eps(y) = y / 2
    ...     return y - 0.5 * (y / 2), y
    >>> out = solve_step(forward, np.array([[1.0]]), f, 2, None)
    >>> out.calls, bool(abs(forward(out.x_t)[0] - 1.0).max() < 1e-12)
    (3, True)
    >>> target = np.array([[1.0]], dtype=np.float32)  # a float16 solve, its target unrounded
    >>> solve_step(forward, target, f, 2, None, dtype=np.float16).x_t.dtype
    dtype('float16')
    """
    refinements = check_int("refinements", refinements, low=0)
    history = check_int("history", history, low=1)
    if tol is not None and check_real("tol", tol) <= 0:  # else it never stops, or at once
        raise ValueError(f"tol={tol!r} must be a number > 0 (or None)")
    xp = backends.namespace(x_src=x_src)
    if tol is not None and backends.jax_traced(x_src):
        raise ValueError(
            f"tol={tol!r} reads each iterate's residual on the host, which jax.jit cannot "
            "trace; pass tol=None under jit (fixed_point_iters refinements, no host read)"
        )
    trail = Trail() if trail is None else trail
    dtype = _iterates_dtype(xp, x_src, dtype)
    if 0 in tuple(x_src.shape):  # nothing to solve (and no model call): as empty a result
        empty = backends.cast(xp, x_src, dtype)
        return Solution(empty, empty, 0, None, trail)
    if x_src.ndim == 0:  # one value: solved as a batch of one
        lifted = solve_step(
            lambda y: tuple(xp.reshape(a, (1,)) for a in forward(xp.reshape(y, ()))),
            xp.reshape(x_src, (1,)),
            frame,
            refinements,
            tol,
            trail,
            c=c,
            history=history,
            dtype=dtype,
            stall=stall,
        )
        x_t, x0 = (xp.reshape(a, ()) for a in lifted[:2])
        return lifted._replace(x_t=x_t, x0=x0)
    work = backends.work_dtype(xp, dtype)
    src = backends.cast(xp, x_src, work)
    if c is None:
        if frame is None:
            raise ValueError("a step without a frame needs its preconditioner c")
        c = frame.c
    (c_work,) = _exact(xp, src, c)
    anchor = warm_start(src, frame, Trail())  # plain inversion's point: a failed start goes back
    # degrees above 2 only with tol, where a start that a chosen degree got wrong (a path that
    # bends) costs calls, not accuracy; and not in half precision, whose solved eps carry the
    # rounding of the half iterates (the quartic's weights sum to 31 in magnitude, the
    # quadratic's to 7)
    warm = warm_start(src, frame, trail, ORDER if tol is not None and work == dtype else 2)
    fits = _max_abs(warm, xp) <= xp.finfo(dtype).max  # else (overflowed) the start is anchor
    y = backends.cast(xp, xp.where(_sample_mask(fits, warm.ndim, xp), warm, anchor), dtype)
    best, best_x0, best_res, improving = y, None, None, None
    best_r: Any = None
    damping: Any = None  # per sample: the step back after a failed iterate, halved each time
    ys: list[Array] = []
    rs: list[Array] = []
    residual: float | None = None
    calls = 0
    last_res, rate = None, None
    reads: list[float] = []  # with tol, the residual read after each call
    floor = STALL_ULPS * float(xp.finfo(work).eps)  # a stall at or below it is the data's own
    for _ in range(refinements + 1):
        x_prev, x0 = forward(y)
        x_fwd = backends.cast(xp, backends.materialize(x_prev), work)
        calls += 1
        res = _max_abs(x_fwd - src, xp)
        if tol is not None and last_res is not None and work == dtype:
            # the slowest rate r_j / r_j-1 the step has shown; 1 (no gain) where it did not
            # shrink (then nothing is predicted for the rest of the step)
            shrank = (res < last_res) & xp.isfinite(last_res)
            one = xp.ones_like(res)
            ratio = xp.where(shrank, res, one) / xp.where(shrank, last_res, one)
            rate = ratio if rate is None else xp.maximum(rate, ratio)
        last_res = res
        r = c_work * (x_fwd - src)  # g(y) = y - r: the plain step
        y_work = backends.cast(xp, y, work)
        if best_res is None:
            best_x0, best_res, improving = x0, res, xp.isfinite(res)
            # a failed start's residual enters the history as NaN: inf - inf warns in NumPy
            best_r = xp.where(xp.isfinite(r), r, xp.full_like(r, math.nan))
            damping = xp.ones_like(res)
        else:
            improving = res < best_res
            mask = _sample_mask(improving, y.ndim, xp)
            best, best_x0 = xp.where(mask, y, best), xp.where(mask, x0, best_x0)
            best_r = xp.where(mask, r, best_r)
            best_res = xp.where(improving, res, best_res)
        best, best_x0, best_res, best_r = (
            backends.materialize(a) for a in (best, best_x0, best_res, best_r)
        )
        # a failed iterate (model not finite there) enters the history as the best measured
        # one (a zero difference, which Anderson drops); the next iterate is the best one's
        # plain step, halved each time a sample fails (a backtracking line search). Where no
        # iterate has been finite yet (the warm start failed), it is halfway back to plain
        # inversion's point instead, and halfway again at each failure
        failed = ~xp.isfinite(res)
        damping = xp.where(failed, 0.5 * damping, damping)
        back = _sample_mask(failed, y.ndim, xp)
        best_work = backends.cast(xp, best, work)
        ys = [*ys, xp.where(back, best_work, y_work)][-(history + 1) :]
        rs = [*rs, xp.where(back, best_r, r)][-(history + 1) :]
        shrink = _sample_mask(damping, y.ndim, xp)
        retreat = xp.where(
            _sample_mask(xp.isfinite(best_res), y.ndim, xp),
            best_work - shrink * best_r,
            anchor + shrink * (best_work - anchor),
        )
        y = xp.where(back, retreat, _anderson(ys, rs, xp))
        y = backends.cast(xp, backends.materialize(y), dtype)
        if tol is not None or backends.is_host_numpy(best_res):
            # each sample's residual: its best measured one, or where it takes the refinement
            # no call has measured (`_takes_refinement`), the predicted one
            take, bound = None, best_res
            if tol is not None and rate is not None:
                predicted = res * rate
                take = _takes_refinement(y, predicted, improving, tol, xp)
                bound = xp.where(take, predicted, best_res)
            residual = float(xp.max(bound))  # the host read: only to stop early, or free
            reads.append(residual)
            if tol is not None and (residual <= tol or (stall and _stalled(reads, floor))):
                if take is not None:
                    best = backends.materialize(xp.where(_sample_mask(take, y.ndim, xp), y, best))
                return _solution(best, best_x0, calls, residual, src, frame, trail, xp)
    # the last refinement, which no call measures: only where the iteration still improved;
    # NaN where no iterate was measured finite (the model failed at every call), as plain
    # inversion gives, not a point no call validated (a device loop reads nothing to warn)
    keep = improving & _finite_rows(y, xp)
    failed_all = _sample_mask(~xp.isfinite(best_res), y.ndim, xp)
    best = xp.where(failed_all, xp.full_like(best, math.nan), best)
    x_t = backends.materialize(xp.where(_sample_mask(keep, y.ndim, xp), y, best))
    return _solution(x_t, best_x0, calls, residual, src, frame, trail, xp)


def _stalled(reads: list[float], floor: float) -> bool:
    """Whether a step with tol has stalled above it, from the residuals read after its calls:
    its best is in (floor, STALL_BELOW] and the last STALL_REFINEMENTS refinements cut it by
    less than a factor STALL (a model's precision floor; module docstring)."""
    if len(reads) <= STALL_REFINEMENTS:
        return False
    now, before = min(reads), min(reads[:-STALL_REFINEMENTS])
    return floor < now <= STALL_BELOW and now * STALL > before


def _iterates_dtype(xp: Namespace, x_src: Array, dtype: Any) -> Any:
    """The iterates' dtype: x_src's, or a `dtype` whose work dtype x_src is in (a half dtype's
    target kept in float32)."""
    if dtype is None or dtype == x_src.dtype:
        return x_src.dtype
    try:
        works_in_it = backends.work_dtype(xp, dtype) == x_src.dtype
        allowed = works_in_it and xp.isdtype(dtype, "real floating")
    except (TypeError, ValueError, AttributeError):  # finfo's answers to no dtype of xp
        allowed = False
    if not allowed:
        raise TypeError(
            f"dtype must be x_src's dtype ({x_src.dtype}) or a half-precision dtype computed in "
            f"it, got {dtype!r}"
        )
    return dtype


def _takes_refinement(
    y: Array, predicted: Array, improving: Array, tol: float, xp: Namespace
) -> Array:
    """Per sample, whether a step with tol that stops now returns the refinement `y`, which
    no call has measured, rather than its best measured iterate: where the last measured
    residual improved on the best before it, `y` is finite, and the predicted residual of `y`
    (the last measured residual times the slowest rate r_j / r_j-1 the step has shown) is
    <= tol."""
    return improving & _finite_rows(y, xp) & (predicted <= tol)


def _solution(
    x_t: Array,
    x0: Array,
    calls: int,
    residual: float | None,
    src: Array,
    frame: Frame | None,
    trail: Trail,
    xp: Namespace,
) -> Solution:
    if frame is None:
        return Solution(x_t, x0, calls, residual, trail)
    eps = _solved_eps(src, backends.cast(xp, x_t, src.dtype), frame)
    return Solution(x_t, x0, calls, residual, trail.extend(frame.sigma_to, eps))


def _anderson(ys: list[Array], rs: list[Array], xp: Namespace) -> Array:
    """Anderson's type-II update (Walker & Ni 2011, eq. 2.1 with mixing 1) per batch element,
    for the fixed-point map g(y) = y - r(y), from iterates `ys` and residuals `rs` (oldest
    first): gamma = argmin |r_k - dR gamma|, y_new = y_k - r_k - (dY - dR) gamma, dY and dR
    the consecutive differences. One iterate: the plain step y_k - r_k.

    Safeguards: differences within rounding of the iterates are left out; the least squares is
    solved by `lstsq_mgs`; an update that is not finite or is longer than CAP plain steps is
    replaced by the plain step.
    """
    y_k, r_k = ys[-1], rs[-1]
    plain = y_k - r_k
    if len(ys) < 2:
        return plain
    batch = y_k.shape[0]

    def flat(a: Array) -> Array:
        return xp.reshape(a, (batch, -1))

    noise = 16.0 * xp.finfo(y_k.dtype).eps * (1.0 + _max_abs(y_k, xp))
    d_y: list[Array] = []
    d_r: list[Array] = []
    for j in reversed(range(len(ys) - 1)):  # newest first: they win where columns conflict
        dy = flat(ys[j + 1] - ys[j])
        dr = flat(rs[j + 1] - rs[j])
        # a failed start's residual is not finite: no secant through it
        usable = (_max_abs(dy, xp) > noise) & xp.isfinite(_max_abs(dr, xp))
        d_y.append(dy)
        d_r.append(xp.where(_column(usable, xp), dr, xp.zeros_like(dr)))
    gamma = lstsq_mgs(d_r, flat(r_k), xp)
    step = -flat(r_k)
    for g, dy, dr in zip(gamma, d_y, d_r, strict=True):
        step = step - _column(g, xp) * (dy - dr)
    length, plain_length = _norm(step, xp), _norm(flat(r_k), xp)
    ok = xp.isfinite(length) & (length <= CAP * plain_length)
    return xp.where(_sample_mask(ok, y_k.ndim, xp), y_k + xp.reshape(step, y_k.shape), plain)


def lstsq_mgs(columns: list[Array], rhs: Array, xp: Namespace) -> list[Array]:
    """Per row of the batch, the coefficients gamma_j minimising |rhs - sum_j gamma_j a_j| for
    columns a_j of shape (batch, D), by modified Gram-Schmidt and back substitution.

    A column whose part orthogonal to the columns before it is below sqrt(eps) of its own
    norm (numerically dependent, or zero) is dropped: its gamma is 0. So no division by zero,
    and no gamma blows up on a near-singular problem.

    Parameters
    ----------
    columns : list of array
        m arrays of shape (batch, D), the columns in order of priority.
    rhs : array
        Shape (batch, D).
    xp : namespace
        The arrays' array API namespace.

    Returns
    -------
    list of array
        m arrays of shape (batch,).

    Examples
    --------
    >>> import numpy as np
    >>> from ddim_core.backends import HOST_XP
    >>> e1, e2 = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
    >>> [g.tolist() for g in lstsq_mgs([e1, e2, 2 * e1], np.array([[3.0, 4.0]]), HOST_XP)]
    [[3.0], [4.0], [0.0]]
    """
    m = len(columns)
    rel = math.sqrt(float(xp.finfo(rhs.dtype).eps))
    basis: list[Array] = []
    kept: list[Array] = []
    r: list[list[Array]] = [[xp.zeros_like(rhs[:, 0])] * m for _ in range(m)]
    for j, v in enumerate(columns):
        size = _norm(v, xp)
        for i, q in enumerate(basis):
            r[i][j] = xp.sum(q * v, axis=1)
            v = v - _column(r[i][j], xp) * q
        rest = _norm(v, xp)
        ok = rest > rel * size
        r[j][j] = xp.where(ok, rest, xp.ones_like(rest))
        q = v / _column(r[j][j], xp)
        basis.append(xp.where(_column(ok, xp), q, xp.zeros_like(q)))
        kept.append(ok)
    z = [xp.sum(q * rhs, axis=1) for q in basis]
    gamma: list[Array] = [z[0]] * m
    for j in reversed(range(m)):
        s = z[j]
        for p in range(j + 1, m):
            s = s - r[j][p] * gamma[p]
        gamma[j] = xp.where(kept[j], s / r[j][j], xp.zeros_like(s))
    return gamma


def _finite_rows(y: Array, xp: Namespace) -> Array:
    """Per batch element, whether every value of y is finite."""
    return xp.all(xp.reshape(xp.isfinite(y), (y.shape[0], -1)), axis=1)


def _norm(a: Array, xp: Namespace) -> Array:
    """Euclidean norm of each row of a (batch, D) array."""
    return xp.sqrt(xp.sum(a * a, axis=1))


def _max_abs(d: Array, xp: Namespace) -> Array:
    """max |d| over each batch element, NaN counted as +inf."""
    m = xp.max(xp.reshape(xp.abs(d), (d.shape[0], -1)), axis=1)
    return xp.where(xp.isnan(m), xp.full_like(m, math.inf), m)


def _column(v: Array, xp: Namespace) -> Array:
    """A (batch,) array as a (batch, 1) column."""
    return xp.reshape(v, (v.shape[0], 1))


def _sample_mask(mask: Array, ndim: int, xp: Namespace) -> Array:
    return backends.broadcast_to_sample(mask, ndim, xp)
