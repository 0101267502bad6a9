"""The maths of one DDIM step (Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models").

Glossary, code name: paper (diffusers):
    alpha_bar_t     abar_t, cumulative product of (1 - beta_s) for s <= t   (alpha_prod_t)
    alpha_bar_prev  abar_{t-1}, the level the step moves to                  (alpha_prod_t_prev)
    x_t             the current sample                                      (sample)
    x_prev          x_{t-1}, the result of the step                         (prev_sample)
    eps_pred        eps_theta(x_t), the predicted noise                     (pred_epsilon)
    x0_pred         f_theta(x_t), the predicted clean sample, eq. (9)       (pred_original_sample)
    sigma_t         eq. (16): eta * sqrt((1 - abar_{t-1}) / (1 - abar_t))
                                      * sqrt(1 - abar_t / abar_{t-1})      (std_dev_t)
    direction       sqrt(1 - abar_{t-1} - sigma_t^2), weight of eps_pred in eq. (12)

Every step is one transfer from level a to level b, eq. (12):

    x_b = sqrt(abar_b) * x0_pred + sqrt(1 - abar_b - sigma^2) * eps_pred + sigma * noise

Forward DDIM moves to a less noisy b; inversion is the same map to a noisier b with sigma = 0.
The coefficients of a step (a `coefficients.Row`) are computed in `coefficients`; the functions
here apply them. Array functions take a keyword-only `xp`; coefficients may be Python floats
or arrays that broadcast against the sample.
"""

from __future__ import annotations

import math
from typing import Any

from . import backends
from .backends import Array, Namespace
from .config import DDIMConfig


def ddim_update(
    x_t: Array,
    model_output: Array,
    row: Any,
    config: DDIMConfig,
    noise: Array | None,
    use_clipped_model_output: bool,
    *,
    xp: Namespace,
) -> tuple[Array, Array]:
    """(x_b, x0_pred): eq. (12) from a model output, with the config's x0 clip or threshold.

    Parameters
    ----------
    x_t : array
        The sample at level a (work dtype).
    model_output : array
        The model output in the config's prediction type.
    row : coefficients.Row
        The step's coefficients (floats or broadcasting arrays).
    config : DDIMConfig
        Only prediction_type, clip_sample(_range) and the thresholding options are read.
    noise : array or None
        Standard normal noise (weighted by ``row.sigma``), or None.
    use_clipped_model_output : bool
        Re-derive eps_pred from the clipped x0_pred.
    xp : array namespace
        The arrays' namespace (keyword-only).

    Returns
    -------
    x_b : array
    x0_pred : array

    Examples
    --------
    >>> import numpy as np, array_api_compat.numpy as xp, ddim_core as dc
    >>> from ddim_core.coefficients import Row
    >>> config = dc.DDIMConfig(clip_sample=False)
    >>> x_b, x0 = ddim_update(np.ones(2), np.zeros(2), Row(0.5, 0.75**0.5, 1.0, 0.0, 0.0),
    ...                       config, None, False, xp=xp)
    >>> x0, x_b  # eps = 0: x0 = x_t / sqrt(alpha_bar_t), and the clean level keeps it
    (array([2., 2.]), array([2., 2.]))
    """
    row = backends.exact_scalars(xp, row, x_t)  # float64 on MindSpore: 0-d arrays
    sqrt_ab, sqrt_1m_ab = row.sqrt_ab_from, row.sqrt_1m_ab_from
    x0, eps = predict_x0_eps(x_t, model_output, sqrt_ab, sqrt_1m_ab, config.prediction_type)
    if config.thresholding:
        x0 = threshold(x0, config.dynamic_thresholding_ratio, config.sample_max_value, xp=xp)
    elif config.clip_sample:
        x0 = clip(x0, config.clip_sample_range, xp=xp)
    if use_clipped_model_output:
        eps = eps_from_x0(x_t, x0, sqrt_ab, sqrt_1m_ab)
    return transfer(x0, eps, row.sqrt_ab_to, row.direction, row.sigma, noise), x0


def eq9(sqrt_ab: Any, sqrt_1m_ab: Any, prediction_type: str) -> tuple[Weights, Weights]:
    """Eq. (9) as weights: x0_pred and eps_pred are each `affine(x_t, model_output, w)`.

    epsilon: x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar); sample: eps = (x_t - sqrt(abar)
    x0) / sqrt(1 - abar); v (Salimans & Ho 2022): x0 = sqrt(abar) x_t - sqrt(1 - abar) v and
    eps = sqrt(abar) v + sqrt(1 - abar) x_t. The reference step applies these weights and the
    fused kernels take the same ones (`coefficients.fused_form`), in the same order.

    Parameters
    ----------
    sqrt_ab : float or array
        sqrt(alpha_bar_t) of the level the step leaves.
    sqrt_1m_ab : float or array
        sqrt(1 - alpha_bar_t).
    prediction_type : str
        "epsilon", "sample" or "v_prediction" (any other value is taken as "v_prediction";
        `DDIMConfig` admits no other).

    Returns
    -------
    w_x0 : tuple
        (a, b, c) with x0_pred = (a x_t - b model_output) / c.
    w_eps : tuple
        (a, b, c) with eps_pred = (a x_t - b model_output) / c.

    Examples
    --------
    >>> eq9(0.6, 0.8, "epsilon")  # x0 = (x_t - 0.8 eps) / 0.6; eps is the model output
    ((1.0, 0.8, 0.6), (0.0, -1.0, 1.0))
    >>> eq9(0.6, 0.8, "v_prediction")
    ((0.6, 0.8, 1.0), (0.8, -0.6, 1.0))
    """
    if prediction_type == "epsilon":
        return (1.0, sqrt_1m_ab, sqrt_ab), (0.0, -1.0, 1.0)
    if prediction_type == "sample":
        return (0.0, -1.0, 1.0), (1.0, sqrt_ab, sqrt_1m_ab)
    return (sqrt_ab, sqrt_1m_ab, 1.0), (sqrt_1m_ab, -sqrt_ab, 1.0)


Weights = tuple[Any, Any, Any]  # (a, b, c) of (a * x - b * u) / c


def affine(x: Array, u: Array, w: Weights) -> Array:
    """(a x - b u) / c for w = (a, b, c), leaving out the multiplications by 0 and 1 and the
    division by 1 that structural weights (Python floats) ask for: exact for finite values.

    Parameters
    ----------
    x : array
        The sample x_t.
    u : array
        The model output (or the clipped x0_pred, for `eps_from_x0`).
    w : tuple
        (a, b, c): Python floats or arrays broadcasting against `x` (from `eq9` or
        `eps_from_x0_weights`).

    Returns
    -------
    array

    Examples
    --------
    >>> import numpy as np
    >>> x, u = np.array([1.0, 2.0]), np.array([0.5, -0.5])
    >>> affine(x, u, (1.0, 0.8, 0.6))  # (x - 0.8 u) / 0.6
    array([1., 4.])
    >>> affine(x, u, (0.0, -1.0, 1.0)) is u  # the structural weights of "u itself"
    True
    """
    a, b, c = w
    if _is(a, 0.0):
        num = u if _is(b, -1.0) else -b * u
    else:
        num = x if _is(a, 1.0) else a * x
        num = num - b * u
    return num if _is(c, 1.0) else num / c


def _is(weight: Any, value: float) -> bool:
    return isinstance(weight, float) and weight == value


def predict_x0_eps(
    x_t: Array, model_output: Array, sqrt_ab: Any, sqrt_1m_ab: Any, prediction_type: str
) -> tuple[Array, Array]:
    """(x0_pred, eps_pred) from the model output, eq. (9) (the weights of `eq9`).

    Parameters
    ----------
    x_t : array
        The sample at level alpha_bar_t.
    model_output : array
        The model output in `prediction_type`.
    sqrt_ab, sqrt_1m_ab : float or array
        sqrt(alpha_bar_t) and sqrt(1 - alpha_bar_t).
    prediction_type : str
        "epsilon", "sample" or "v_prediction".

    Returns
    -------
    x0_pred : array
    eps_pred : array

    Examples
    --------
    >>> import numpy as np
    >>> x0, eps = predict_x0_eps(np.array([1.0, 2.0]), np.array([0.5, -0.5]), 0.6, 0.8,
    ...                          "v_prediction")
    >>> x0, eps
    (array([0.2, 1.6]), array([1.1, 1.3]))
    >>> 0.6 * x0 + 0.8 * eps  # x_t = sqrt(abar) x0 + sqrt(1 - abar) eps
    array([1., 2.])
    """
    w_x0, w_eps = eq9(sqrt_ab, sqrt_1m_ab, prediction_type)
    return affine(x_t, model_output, w_x0), affine(x_t, model_output, w_eps)


def eps_from_x0(x_t: Array, x0_pred: Array, sqrt_ab: Any, sqrt_1m_ab: Any) -> Array:
    """Re-derive eps_pred from a clipped x0_pred (GLIDE; diffusers' use_clipped_model_output):
    (x_t - sqrt(abar) x0_pred) / sqrt(1 - abar).

    Parameters
    ----------
    x_t : array
        The sample at level alpha_bar_t.
    x0_pred : array
        The (clipped or thresholded) predicted clean sample.
    sqrt_ab, sqrt_1m_ab : float or array
        sqrt(alpha_bar_t) and sqrt(1 - alpha_bar_t).

    Returns
    -------
    array
        eps_pred.

    Examples
    --------
    >>> import numpy as np
    >>> x_t = np.array([1.0, 2.0])
    >>> eps_from_x0(x_t, np.array([1.0, 4.0]), 0.6, 0.8)  # unclipped: the model's eps back
    array([ 0.5, -0.5])
    """
    return affine(x_t, x0_pred, eps_from_x0_weights(sqrt_ab, sqrt_1m_ab))


def eps_from_x0_weights(sqrt_ab: Any, sqrt_1m_ab: Any) -> Weights:
    """The weights of `eps_from_x0`: eps_pred = affine(x_t, x0_pred, w).

    Parameters
    ----------
    sqrt_ab, sqrt_1m_ab : float or array
        sqrt(alpha_bar_t) and sqrt(1 - alpha_bar_t).

    Returns
    -------
    tuple
        (1.0, sqrt_ab, sqrt_1m_ab).

    Examples
    --------
    >>> eps_from_x0_weights(0.6, 0.8)
    (1.0, 0.6, 0.8)
    """
    return (1.0, sqrt_ab, sqrt_1m_ab)


def transfer(
    x0_pred: Array, eps_pred: Array, sqrt_ab_to: Any, direction: Any, sigma: Any, noise: Any
) -> Array:
    """Eq. (12): x_b = sqrt(alpha_bar_b) x0_pred + direction * eps_pred (+ sigma * noise).

    Parameters
    ----------
    x0_pred, eps_pred : array
        Eq. (9)'s predictions.
    sqrt_ab_to : float or array
        sqrt(alpha_bar_b).
    direction : float or array
        sqrt(1 - alpha_bar_b - sigma^2).
    sigma : float or array
        sigma_t of eq. (16).
    noise : array or None
        Standard normal noise, or None.

    Returns
    -------
    array

    Examples
    --------
    >>> transfer(2.0, 1.0, 0.5, 0.5, 0.0, None)
    1.5
    """
    x_b = sqrt_ab_to * x0_pred + direction * eps_pred
    return x_b if noise is None else x_b + sigma * noise


def ddim_variance(alpha_bar_from: Any, alpha_bar_to: Any) -> Any:
    """(sigma_t / eta)^2 of eq. (16) for a step from level alpha_bar_a to the cleaner
    alpha_bar_b (diffusers' `_get_variance`).

    Parameters
    ----------
    alpha_bar_from, alpha_bar_to : float or numpy.ndarray
        The two levels (host floats or float64 arrays).

    Returns
    -------
    float or numpy.ndarray

    Examples
    --------
    >>> ddim_variance(0.5, 1.0)  # to the clean level: no variance
    0.0
    """
    a, b = alpha_bar_from, alpha_bar_to
    return (1.0 - b) / (1.0 - a) * (1.0 - a / b)


def zero_level_cause(beta: float) -> str:
    """Why a schedule's alpha_bar_t is 0, from its beta_t: zero terminal SNR where beta_t is 1
    (a beta of 1 makes the level 0; a schedule's table past a level of 0 has betas of 1), else
    float64 underflow of the cumulative product of (1 - beta) (many train timesteps or large
    betas). Host floats only.

    Parameters
    ----------
    beta : float
        beta_t of the timestep whose level is 0 (for the final level, beta_0).

    Returns
    -------
    str

    Examples
    --------
    >>> zero_level_cause(1.0)
    'zero terminal SNR: rescale_betas_zero_snr=True, or a last trained beta of 1'
    >>> zero_level_cause(0.9)[:37]
    'alpha_bar underflowed to 0 in float64'
    """
    if beta == 1.0:
        return "zero terminal SNR: rescale_betas_zero_snr=True, or a last trained beta of 1"
    return (
        "alpha_bar underflowed to 0 in float64: the schedule's cumulative product of "
        "(1 - beta) reaches 0 with no beta of 1; fewer train timesteps or smaller betas keep "
        "it above 0"
    )


def unrecoverable(
    alpha_bar: float, prediction_type: str, *, beta: float | None = None
) -> str | None:
    """Why eq. (9) cannot be solved at level `alpha_bar` for this prediction type, or None.

    epsilon divides by sqrt(alpha_bar) (zero terminal SNR: alpha_bar = 0); sample divides by
    sqrt(1 - alpha_bar) (the clean level alpha_bar = 1). Host floats only.

    Parameters
    ----------
    alpha_bar : float
        The level.
    prediction_type : str
        "epsilon", "sample" or "v_prediction".
    beta : float, optional
        The schedule's beta at the level's timestep: the reason for a level of 0 names its
        cause (`zero_level_cause`). Without it, it names zero terminal SNR.

    Returns
    -------
    str or None

    Examples
    --------
    >>> unrecoverable(0.0, "v_prediction") is None, unrecoverable(0.0, "epsilon") is None
    (True, False)
    """
    if prediction_type == "epsilon" and alpha_bar == 0.0:
        cause = zero_level_cause(1.0 if beta is None else beta)
        return (
            f"alpha_bar = 0 there ({cause}), where "
            "prediction_type='epsilon' cannot recover x_0 (division by sqrt(alpha_bar) = 0); "
            "use 'v_prediction' or 'sample'"
        )
    if prediction_type == "sample" and alpha_bar == 1.0:
        return (
            "alpha_bar = 1 there (the clean level), where prediction_type='sample' cannot "
            "recover the noise (division by sqrt(1 - alpha_bar) = 0)"
        )
    return None


def clip(x0_pred: Array, limit: float, *, xp: Namespace) -> Array:
    """Clip x0_pred to [-limit, limit] (diffusers' clip_sample).

    Parameters
    ----------
    x0_pred : array
    limit : float
    xp : array namespace

    Returns
    -------
    array

    Examples
    --------
    >>> import numpy as np, array_api_compat.numpy as xp
    >>> clip(np.array([-3.0, 0.5, 3.0]), 1.0, xp=xp)
    array([-1. ,  0.5,  1. ])
    """
    limit = min(limit, float(xp.finfo(x0_pred.dtype).max))  # 1e300 for float32: no overflow
    return xp.clip(x0_pred, *backends.traced_bounds(xp, x0_pred, -limit, limit))


def threshold(x0_pred: Array, ratio: float, max_value: float, *, xp: Namespace) -> Array:
    """Dynamic thresholding (Saharia et al. 2022, Imagen, sec. 2.3), per batch element.

    s = the `ratio` quantile of |x0_pred| over each sample, clamped to [1, max_value];
    x0_pred is clipped to [-s, s] and divided by s. Half precision is computed in float32.
    An infinite quantile (x0_pred holding inf, as from a float16 model output that
    overflowed) is s = max_value, so infinities clip to +-1 and the rest stays finite
    (diffusers' torch.quantile gives NaN there, and a NaN sample).

    Parameters
    ----------
    x0_pred : array
        (batch, ...): a 1-D array is a batch of scalars, a 0-d one a single sample.
    ratio : float
        The quantile, in [0, 1].
    max_value : float
        The largest threshold.
    xp : array namespace

    Returns
    -------
    array

    Raises
    ------
    ValueError
        `max_value` below the smallest normal number of the dtype the threshold is computed
        in (checked on the host, before any array work): s would round to 0 (or, where a
        backend flushes subnormals to zero, XLA's CPU and GPU kernels, become 0) and x0_pred
        0 / 0 = NaN.

    Examples
    --------
    >>> import numpy as np, array_api_compat.numpy as xp
    >>> threshold(np.array([[0.5, 4.0]]), 1.0, 2.0, xp=xp)
    array([[0.25, 1.  ]])
    """
    dtype = x0_pred.dtype
    _check_max_value(max_value, dtype, xp=xp)
    if math.prod(x0_pred.shape) == 0:
        return x0_pred  # an empty batch: nothing to threshold
    batch = x0_pred.shape[0] if x0_pred.ndim >= 1 else 1  # 1-D: a batch of scalars
    flat = xp.reshape(x0_pred, (batch, -1))
    if xp.finfo(dtype).bits < 32:
        flat = xp.astype(flat, xp.float32)
    s = quantile(xp.abs(flat), ratio, xp=xp)
    max_value = min(max_value, float(xp.finfo(flat.dtype).max))  # 1e300 in float32: a no-op
    # torch.clamp(min=1, max=...) order: below 1, max wins (the array API leaves clip with
    # min > max unspecified; array-api-strict raises). clip, not maximum(s, 1.0): array-api-
    # compat's scalar promotion there calls torch.result_type, which torch.compile cannot trace
    low, high = backends.traced_bounds(xp, s, min(1.0, max_value), max_value)
    s = xp.clip(s, min=low, max=high)
    s = xp.reshape(s, (batch, 1))
    flat = xp.minimum(xp.maximum(flat, -s), s) / s
    return xp.astype(xp.reshape(flat, x0_pred.shape), dtype)


def _check_max_value(max_value: float, dtype: Any, *, xp: Namespace) -> None:
    """A threshold cap s <= max_value that is a normal number in the work dtype (a host float
    and a dtype: no array read)."""
    info = xp.finfo(backends.work_dtype(xp, dtype))
    tiny = float(info.smallest_normal)
    if max_value < tiny:
        # "float32" whatever the library ("torch.float32", "array_api_strict.float32")
        work, given = (str(d).rsplit(".", 1)[-1] for d in (info.dtype, xp.finfo(dtype).dtype))
        where = work if work == given else f"{work}, where {given} samples are thresholded"
        raise ValueError(
            f"sample_max_value={max_value!r} is below {tiny!r}, the smallest normal number of "
            f"{where}: the threshold s would be 0 there (or flushed to 0) and x0_pred 0 / 0 = "
            "NaN; use a larger sample_max_value"
        )


def quantile(a: Array, q: float, *, xp: Namespace) -> Array:
    """The q-quantile along the last axis with linear interpolation (torch.quantile's rule).

    The array API has no quantile: sort, then interpolate between the two neighbouring order
    statistics at position q * (n - 1), computed on the host. Infinite neighbours give the
    limit of the interpolation on the extended reals, where torch.quantile and np.quantile
    give NaN (inf - inf in their lerp): two equal ones (inf, inf) their value, a finite one
    below inf inf, -inf below a finite one -inf, a position on an order statistic that
    statistic; only -inf below inf strictly between them is NaN. Finite neighbours give the
    same bits as before.

    Parameters
    ----------
    a : array
    q : float
        In [0, 1].
    xp : array namespace

    Returns
    -------
    array
        `a` without its last axis.

    Examples
    --------
    >>> import numpy as np, array_api_compat.numpy as xp
    >>> quantile(np.array([1.0, 2.0, 3.0, 4.0]), 0.5, xp=xp)
    array(2.5)
    >>> quantile(np.array([1.0, 2.0, np.inf, np.inf]), 0.5, xp=xp)
    array(inf)
    """
    n = a.shape[-1]
    pos = q * (n - 1)
    lo = math.floor(pos)
    frac = pos - lo
    # pos on an order statistic: that statistic alone (0 * (inf - x) would be NaN)
    hi = min(lo + 1, n - 1) if frac > 0 else lo
    ordered = xp.sort(a, axis=-1)
    low, high = ordered[..., lo], ordered[..., hi]
    (frac,) = backends.exact_scalars(xp, (frac,), a)
    between = low + frac * (high - low)
    # equal neighbours (inf - inf is NaN) and -inf below a finite one (-inf + inf is NaN)
    # are their low one; a finite one below inf already gives inf
    return xp.where((low == high) | (xp.isinf(low) & xp.isfinite(high)), low, between)
