"""A perfectly trained model: the exact denoiser of Gaussian-mixture data, in closed form.

For data x_0 ~ sum_k w_k N(mu_k, s_k^2 I) and x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps,
the noisy marginal is sum_k w_k N(sqrt(abar) mu_k, v_k I) with v_k = abar s_k^2 + 1 - abar, and

    E[eps | x_t] = sum_k r_k(x_t) sqrt(1 - abar) (x_t - sqrt(abar) mu_k) / v_k
    E[x_0 | x_t] = sum_k r_k(x_t) (mu_k + sqrt(abar) s_k^2 (x_t - sqrt(abar) mu_k) / v_k)

with r_k the posterior responsibilities (a softmax). Sampling with it has no model error:
what remains is the sampler's discretization error. Written against the array API, so it runs
on every backend; the parameters are host data, cast to the sample's dtype and device.

`guided(uncond, cond, scale, rescale=...)` combines two models by classifier-free guidance, the
regime users invert in; for two single Gaussians (no rescale) its probability-flow ODE is
linear and `Guided.ode_solution` solves it to float64 rounding.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import backends, guidance
from .backends import Array
from .config import DDIMConfig, check_nonnegative
from .schedules import Schedule, alphas_cumprod, schedule


@dataclasses.dataclass(frozen=True, eq=False)
class GaussianMixture:
    """Isotropic Gaussian mixture in D dimensions; `model(x, t)` predicts in `prediction_type`."""

    means: np.ndarray  # (K, D)
    stds: np.ndarray  # (K,)
    weights: np.ndarray  # (K,)
    schedule: Schedule
    prediction_type: str = "epsilon"

    @classmethod
    def create(
        cls,
        means: Sequence[Sequence[float]],
        stds: Sequence[float],
        config: DDIMConfig,
        weights: Sequence[float] | None = None,
    ) -> GaussianMixture:
        mu = np.asarray(means, dtype=np.float64)
        s = np.asarray(stds, dtype=np.float64).reshape(-1)
        if mu.ndim != 2 or s.shape[0] != mu.shape[0] or not np.all(s > 0):
            raise ValueError("means must be (K, D) and stds K positive numbers")
        w = np.full(mu.shape[0], 1.0 / mu.shape[0]) if weights is None else np.asarray(weights)
        if w.shape != s.shape or not np.all(w > 0):
            raise ValueError("weights must be K positive numbers")
        return cls(mu, s, w / w.sum(), schedule(config), config.prediction_type)

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    def component(self, k: int) -> GaussianMixture:
        """Component k alone (weight 1): the conditional model of class k."""
        return dataclasses.replace(
            self, means=self.means[k : k + 1], stds=self.stds[k : k + 1], weights=np.ones(1)
        )

    def sample_data(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n draws of x_0 (NumPy, float64)."""
        k = rng.choice(self.weights.shape[0], size=n, p=self.weights)
        return self.means[k] + self.stds[k, None] * rng.standard_normal((n, self.dim))

    def __call__(self, x: Array, t: Any) -> Array:
        """The exact model output at timestep t for samples x of shape (batch, D)."""
        xp = backends.namespace(x=x)
        ab = self._alpha_bar(t, x, xp)
        eps, x0 = self.posterior_means(x, ab)
        if self.prediction_type == "epsilon":
            return eps
        if self.prediction_type == "sample":
            return x0
        ab = xp.reshape(ab, (-1, 1))
        return xp.sqrt(ab) * eps - xp.sqrt(1.0 - ab) * x0  # v

    def posterior_means(self, x: Array, ab: Any) -> tuple[Array, Array]:
        """(E[eps | x_t], E[x_0 | x_t]) at level abar, an array of shape (1 or batch, 1, 1)."""
        xp = backends.namespace(x=x)
        mu, var, log_w = self._parameters(xp, backends.device(x), x.dtype)  # (K,D), (K,1), (K,1)
        sqrt_ab, sqrt_1m_ab = xp.sqrt(ab), xp.sqrt(1.0 - ab)
        v = ab * var + (1.0 - ab)  # (K, 1) or (batch, K, 1)
        diff = x[:, None, :] - sqrt_ab * mu  # (batch, K, D)
        log_r = (
            log_w - 0.5 * self.dim * xp.log(v) - xp.sum(diff**2, axis=-1, keepdims=True) / (2.0 * v)
        )
        r = xp.exp(log_r - xp.max(log_r, axis=1, keepdims=True))
        r = r / xp.sum(r, axis=1, keepdims=True)  # (batch, K, 1): posterior responsibilities
        eps = xp.sum(r * sqrt_1m_ab * diff / v, axis=1)
        x0 = xp.sum(r * (mu + sqrt_ab * var * diff / v), axis=1)
        return eps, x0

    def _parameters(self, xp: Any, device: Any, dtype: Any) -> tuple[Array, Array, Array]:
        """Means, variances and log weights on the sample's device, converted once."""
        return _device_parameters(self, xp, device, dtype)

    def _alpha_bar(self, t: Any, x: Array, xp: Any) -> Array:
        """alpha_bar_t as a (1 or batch, 1, 1) array; an int t takes the same gather as an
        array t, so both give bit-identical outputs."""
        device = backends.device(x)
        table = alphas_cumprod(self.schedule, xp=xp, device=device, dtype=x.dtype)
        if isinstance(t, int | np.integer):
            t = xp.asarray([int(t)], device=device)
        return xp.reshape(xp.take(table, xp.reshape(t, (-1,)), axis=0), (-1, 1, 1))

    def ode_solution(self, x_T: np.ndarray, ab_T: float, ab_0: float = 1.0) -> np.ndarray:
        """Exact probability-flow ODE map from level abar_T to level abar_0 (the data by
        default), for one component (host NumPy, float64).

        For a single Gaussian N(mu, s^2 I) the DDIM ODE is linear:
        x_0 = mu + s (x_T - sqrt(abar_T) mu) / sqrt(abar_T s^2 + 1 - abar_T) at abar_0 = 1.
        """
        if self.means.shape[0] != 1:
            raise ValueError("the closed-form ODE solution is for a single Gaussian")
        mu, s = self.means[0], float(self.stds[0])
        if ab_0 == 1.0:
            scale = s / math.sqrt(ab_T * s**2 + 1.0 - ab_T)
            x_0: np.ndarray = mu + scale * (x_T - math.sqrt(ab_T) * mu)
            return x_0
        return _guided_flow(mu, s, mu, s, 1.0, np.asarray(x_T, dtype=np.float64), ab_T, ab_0)


Model = Callable[[Array, Any], Array]


@dataclasses.dataclass(frozen=True, eq=False)
class Guided:
    """Classifier-free guidance of two models (Ho & Salimans 2022), optionally rescaled (Lin et
    al. 2023): `model(x, t)` = uncond + scale (cond - uncond), in their prediction type. Two
    model calls inside (one at scale 1), counted as one model call by the loops."""

    uncond: Model
    cond: Model
    scale: float
    rescale: float = 0.0

    def __call__(self, x: Array, t: Any) -> Array:
        cond = self.cond(x, t)
        uncond = cond if self.scale == 1.0 else self.uncond(x, t)
        out = guidance.cfg(uncond, cond, self.scale)
        return out if self.rescale == 0.0 else guidance.rescale_noise_cfg(out, cond, self.rescale)

    @property
    def exact(self) -> bool:
        """Whether `ode_solution` is known: two single Gaussians, no rescale."""
        u, c = self.uncond, self.cond
        return (
            self.rescale == 0.0
            and isinstance(u, GaussianMixture)
            and isinstance(c, GaussianMixture)
            and u.means.shape[0] == c.means.shape[0] == 1
            and u.schedule is c.schedule
            and u.prediction_type == c.prediction_type
        )

    def ode_solution(self, x_T: np.ndarray, ab_T: float, ab_0: float = 1.0) -> np.ndarray:
        """The exact probability-flow ODE map of the guided model from level abar_T to abar_0
        (host NumPy float64), for two single Gaussians without rescale (see `_guided_flow`)."""
        if not self.exact:
            raise ValueError(
                "the exact ODE solution of a guided model is known for two single-Gaussian "
                "GaussianMixture models of one schedule, without rescale"
            )
        u, c = self.uncond, self.cond
        assert isinstance(u, GaussianMixture) and isinstance(c, GaussianMixture)
        x = np.asarray(x_T, dtype=np.float64)
        return _guided_flow(
            u.means[0], float(u.stds[0]), c.means[0], float(c.stds[0]), self.scale, x, ab_T, ab_0
        )


def guided(uncond: Model, cond: Model, scale: float, *, rescale: float = 0.0) -> Guided:
    """The classifier-free-guided model of `uncond` and `cond` at guidance `scale` (1: cond
    alone), with guidance rescale `rescale` in [0, 1] (`ddim_core.rescale_noise_cfg`)."""
    if not (callable(uncond) and callable(cond)):
        raise TypeError("uncond and cond must be models callable as model(x, t)")
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale):
        raise TypeError(f"scale must be a finite real number, got {scale!r}")
    phi = check_nonnegative("rescale", rescale)
    if phi > 1.0:
        raise ValueError(f"rescale={rescale} must be in [0, 1]")
    return Guided(uncond, cond, float(scale), phi)


def _guided_flow(
    mu_u: np.ndarray,
    s_u: float,
    mu_c: np.ndarray,
    s_c: float,
    w: float,
    x_T: np.ndarray,
    ab_T: float,
    ab_0: float,
) -> np.ndarray:
    """The DDIM ODE of guided single Gaussians, solved (host float64).

    In VE form (x_ve = x / sqrt(abar), sigma = sqrt((1 - abar) / abar)) a Gaussian's eps is
    sigma (x_ve - mu) / (s^2 + sigma^2), so guidance gives the linear ODE
    dx_ve / dsigma = alpha(sigma) x_ve + beta(sigma) with integrating factor
    Phi(sigma) = (s_u^2 + sigma^2)^((1 - w) / 2) (s_c^2 + sigma^2)^(w / 2):

        x_ve(sigma_0) = Phi(sigma_0) (x_ve(sigma_T) / Phi(sigma_T) - int beta / Phi dsigma),
        beta(tau) = -tau ((1 - w) mu_u / (s_u^2 + tau^2) + w mu_c / (s_c^2 + tau^2)),

    the integral from sigma_0 to sigma_T by Gauss-Legendre quadrature in u = asinh(tau / s)
    (s the smaller std: the integrand's poles at +-i s sit pi / 2 away from the real axis), to
    float64 rounding.
    """
    s = min(s_u, s_c)
    sig_T, sig_0 = math.sqrt((1.0 - ab_T) / ab_T), math.sqrt((1.0 - ab_0) / ab_0)

    def phi(tau: np.ndarray) -> np.ndarray:
        out: np.ndarray = (s_u**2 + tau**2) ** ((1.0 - w) / 2) * (s_c**2 + tau**2) ** (w / 2)
        return out

    nodes, weights = np.polynomial.legendre.leggauss(200)
    lo, hi = math.asinh(sig_0 / s), math.asinh(sig_T / s)
    u = 0.5 * (hi - lo) * nodes + 0.5 * (hi + lo)
    tau = s * np.sinh(u)
    jac = 0.5 * (hi - lo) * s * np.cosh(u) * weights  # dtau = s cosh(u) du
    a_u = (1.0 - w) * tau / (s_u**2 + tau**2)
    a_c = w * tau / (s_c**2 + tau**2)
    integral = (jac * a_u / phi(tau)).sum() * mu_u + (jac * a_c / phi(tau)).sum() * mu_c
    x_ve = x_T / math.sqrt(ab_T)
    p0, pT = float(phi(np.asarray(sig_0))), float(phi(np.asarray(sig_T)))
    out: np.ndarray = math.sqrt(ab_0) * p0 * (x_ve / pT + integral)
    return out


@backends.device_cache
def _device_parameters(
    mixture: GaussianMixture, xp: Any, device: Any, dtype: Any
) -> tuple[Array, Array, Array]:
    host = (mixture.means, mixture.stds[:, None] ** 2, np.log(mixture.weights)[:, None])
    mu, var, log_w = (backends.from_host(a, xp, device=device, dtype=dtype) for a in host)
    return mu, var, log_w
