"""A perfectly trained model: the exact denoiser of Gaussian-mixture data, in closed form.

For data x_0 ~ sum_k w_k N(mu_k, s_k^2 I) and x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps,
the noisy marginal is sum_k w_k N(sqrt(abar) mu_k, v_k I) with v_k = abar s_k^2 + 1 - abar, and

    E[eps | x_t] = sum_k r_k(x_t) sqrt(1 - abar) (x_t - sqrt(abar) mu_k) / v_k
    E[x_0 | x_t] = sum_k r_k(x_t) (mu_k + sqrt(abar) s_k^2 (x_t - sqrt(abar) mu_k) / v_k)

with r_k the posterior responsibilities (a softmax). Sampling with it has no model error:
what remains is the sampler's discretization error. Written against the array API, so it runs
on every backend; the parameters are host data, cast to the sample's dtype and device.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import backends
from .backends import Array
from .config import DDIMConfig
from .schedules import Schedule, alphas_cumprod, schedule

# The demo's data (`ddim-core demo`, the default model of ddim_core.distributed): narrow, well
# separated components in 2-D, where plain inversion fails near the boundaries between them.
DEMO_MEANS = ((-2.0, 0.0), (2.0, 0.0), (0.0, 3.5))
DEMO_STDS = (0.3, 0.3, 0.3)


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

    def ode_solution(self, x_T: np.ndarray, ab_T: float) -> np.ndarray:
        """Exact probability-flow ODE map from level abar_T to the data, for one component.

        For a single Gaussian N(mu, s^2 I) the DDIM ODE is linear:
        x_0 = mu + s (x_T - sqrt(abar_T) mu) / sqrt(abar_T s^2 + 1 - abar_T).
        """
        if self.means.shape[0] != 1:
            raise ValueError("the closed-form ODE solution is for a single Gaussian")
        mu, s = self.means[0], float(self.stds[0])
        scale = s / math.sqrt(ab_T * s**2 + 1.0 - ab_T)
        x_0: np.ndarray = mu + scale * (x_T - math.sqrt(ab_T) * mu)
        return x_0


@backends.device_cache
def _device_parameters(
    mixture: GaussianMixture, xp: Any, device: Any, dtype: Any
) -> tuple[Array, Array, Array]:
    host = (mixture.means, mixture.stds[:, None] ** 2, np.log(mixture.weights)[:, None])
    mu, var, log_w = (backends.from_host(a, xp, device=device, dtype=dtype) for a in host)
    return mu, var, log_w
