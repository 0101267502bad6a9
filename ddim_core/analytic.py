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
    """The exact denoiser of isotropic Gaussian-mixture data in D dimensions.

    Calling it, ``model(x, t)``, returns the exact model output at timestep t for samples x
    of shape (batch, D), in `prediction_type`, on any array backend: a perfectly trained
    network, so that what remains in a result is the sampler's own error. Build it with
    `create`.

    Attributes
    ----------
    means : numpy.ndarray
        (K, D) component means.
    stds : numpy.ndarray
        (K,) component standard deviations.
    weights : numpy.ndarray
        (K,) mixture weights, summing to 1.
    schedule : Schedule
        The noise schedule the model was "trained" with.
    prediction_type : str
        "epsilon", "sample" or "v_prediction".

    Examples
    --------
    >>> import numpy as np, ddim_core as dc
    >>> config = dc.DDIMConfig()
    >>> model = dc.GaussianMixture.create([[0.0, 0.0], [3.0, 0.0]], [0.5, 0.5], config)
    >>> model
    GaussianMixture(K=2 components in D=2 dimensions, float64, prediction_type='epsilon', T=1000)
    >>> model(np.zeros((4, 2)), 500).shape
    (4, 2)
    """

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
        """A mixture from its parameters, with `config`'s schedule and prediction type.

        Parameters
        ----------
        means : sequence of sequences of float
            (K, D) component means.
        stds : sequence of float
            K positive standard deviations.
        config : DDIMConfig
            The schedule and prediction type of the model.
        weights : sequence of float, optional
            K positive weights (normalised); equal when None.

        Returns
        -------
        GaussianMixture

        Raises
        ------
        TypeError
            `config` is not a DDIMConfig, or parameters that are not numbers.
        ValueError
            Shapes that do not agree, non-finite or too large values (their squares must be
            finite), or non-positive stds or weights.
        """
        if not isinstance(config, DDIMConfig):
            raise TypeError(f"config must be a DDIMConfig, got {type(config).__name__}")
        mu = _parameter("means", means)
        s = _parameter("stds", stds).reshape(-1)
        if mu.ndim != 2 or mu.size == 0 or s.shape[0] != mu.shape[0] or not np.all(s > 0):
            raise ValueError(
                f"means must be (K, D) and stds K positive numbers; got means of shape "
                f"{mu.shape} and stds of shape {s.shape}"
            )
        w = np.ones_like(s) if weights is None else _parameter("weights", weights).reshape(-1)
        if w.shape != s.shape or not np.all(w > 0):
            raise ValueError(f"weights must be {s.shape[0]} positive numbers, got {w.tolist()}")
        return cls(mu, s, w / w.sum(), schedule(config), config.prediction_type)

    def __repr__(self) -> str:
        k, d = self.means.shape
        return (
            f"GaussianMixture(K={k} components in D={d} dimensions, {self.means.dtype}, "
            f"prediction_type={self.prediction_type!r}, T={self.schedule.num_train_timesteps})"
        )

    @property
    def dim(self) -> int:
        """D, the dimension of the data."""
        return int(self.means.shape[1])

    def sample_data(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n draws of x_0 (NumPy, float64).

        Parameters
        ----------
        n : int
            How many.
        rng : numpy.random.Generator
            The generator to draw with.

        Returns
        -------
        numpy.ndarray
            (n, D).
        """
        k = rng.choice(self.weights.shape[0], size=n, p=self.weights)
        return self.means[k] + self.stds[k, None] * rng.standard_normal((n, self.dim))

    def __call__(self, x: Array, t: Any) -> Array:
        """The exact model output at timestep t for samples x of shape (batch, D), computed
        in float32 for half-precision x (as the steps are) and returned in x's dtype."""
        xp = backends.namespace(x=x)
        if not backends.is_real_floating(xp, x) or x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(
                f"x must be a real floating array of shape (batch, {self.dim}), got shape "
                f"{tuple(x.shape)} and dtype {x.dtype}"
            )
        t = self._check_t(t, x, xp)
        (x_w,) = backends.to_work_dtype(xp, x)
        ab = self._alpha_bar(t, x_w, xp)
        eps, x0 = self.posterior_means(x_w, ab)
        if self.prediction_type == "epsilon":
            out = eps
        elif self.prediction_type == "sample":
            out = x0
        else:
            ab = xp.reshape(ab, (-1, 1))
            out = xp.sqrt(ab) * eps - xp.sqrt(1.0 - ab) * x0  # v
        return backends.cast(xp, out, x.dtype)

    def posterior_means(self, x: Array, ab: Any) -> tuple[Array, Array]:
        """(E[eps | x_t], E[x_0 | x_t]) at level alpha_bar.

        Parameters
        ----------
        x : array
            (batch, D) samples.
        ab : array
            alpha_bar, of shape (1 or batch, 1, 1).

        Returns
        -------
        eps : array
            (batch, D).
        x0 : array
            (batch, D).
        """
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

    def _check_t(self, t: Any, x: Array, xp: Any) -> Any:
        """An int in [0, T), or an integer array of the sample's library (range-checked where
        its values are free to read, on its device otherwise)."""
        size = self.schedule.num_train_timesteps
        if isinstance(t, int | np.integer) and not isinstance(t, bool | np.bool_):
            if not 0 <= int(t) < size:
                raise ValueError(f"t={t} is outside [0, num_train_timesteps={size})")
            return int(t)
        try:
            if t is None:
                raise TypeError("got None")
            backends.namespace(x=x, t=t)
        except (TypeError, ValueError) as e:
            raise TypeError(f"t must be an int or an integer array like x: {e}") from None
        if not backends.is_kind(xp, t, "integral") or t.ndim > 1:
            raise TypeError(f"t must be an integer scalar or (batch,) array, got {t.dtype}")
        values = backends.host_integers(t)
        if values is not None:
            bad = [v for v in values if not 0 <= v < size]
            if bad:
                raise ValueError(f"t={bad[0]} is outside [0, num_train_timesteps={size})")
            return t
        message = f"t is outside [0, num_train_timesteps={size})"
        return backends.check_range_on_device(t, size, message)

    def _alpha_bar(self, t: Any, x: Array, xp: Any) -> Array:
        """alpha_bar_t as a (1 or batch, 1, 1) array; an int t takes the same gather as an
        array t, so both give bit-identical outputs."""
        device = backends.device(x)
        table = alphas_cumprod(self.schedule, xp=xp, device=device, dtype=x.dtype)
        if isinstance(t, int | np.integer):
            t = xp.asarray([int(t)], device=device)
        return xp.reshape(xp.take(table, xp.reshape(t, (-1,)), axis=0), (-1, 1, 1))

    def ode_solution(self, x_T: np.ndarray, ab_T: float) -> np.ndarray:
        """The exact probability-flow ODE map from level alpha_bar_T to the data, for one Gaussian.

        For a single Gaussian N(mu, s^2 I) the DDIM ODE is linear:
        x_0 = mu + s (x_T - sqrt(alpha_bar_T) mu) / sqrt(alpha_bar_T s^2 + 1 - alpha_bar_T).

        Parameters
        ----------
        x_T : numpy.ndarray
            Samples at level `ab_T`.
        ab_T : float
            alpha_bar of the starting level.

        Returns
        -------
        numpy.ndarray
            x_0.

        Raises
        ------
        ValueError
            The mixture has more than one component.
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


def _parameter(name: str, values: Any) -> np.ndarray:
    """Host float64 parameters, finite and small enough that their squares are (the
    responsibilities square distances); TypeError/ValueError naming `name` otherwise."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be numbers in a regular (rectangular) shape: {e}") from None
    if not np.all(np.isfinite(array)) or np.any(np.abs(array) > 1e150):
        raise ValueError(f"{name} must be finite numbers of magnitude <= 1e150")
    return array
