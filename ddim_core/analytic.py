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
from .config import DDIMConfig, check_int, check_nonnegative, check_real
from .schedules import Schedule, _table, schedule

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
        if mu.ndim != 2 or mu.size == 0 or s.shape[0] != mu.shape[0]:
            raise ValueError(
                f"means must be (K, D) and stds K numbers; got means of shape {mu.shape} and "
                f"stds of shape {s.shape}"
            )
        w = np.ones_like(s) if weights is None else _parameter("weights", weights).reshape(-1)
        if w.shape != s.shape:
            raise ValueError(f"weights must be K = {s.shape[0]} numbers, got {w.tolist()}")
        for name, values in (("stds", s), ("weights", w)):
            if not np.all(values > 0):
                raise ValueError(f"{name} must be > 0, got {values.tolist()}")
        mu, s, w = _read_only(mu), _read_only(s), _read_only(w / w.sum())
        return cls(mu, s, w, schedule(config), config.prediction_type)

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

    def component(self, k: int) -> GaussianMixture:
        """Component k alone (weight 1): the conditional model of class k.

        Parameters
        ----------
        k : int
            The component's index in [-K, K) (negative: from the end, as in a list).

        Returns
        -------
        GaussianMixture
            One Gaussian, on the same schedule and prediction type.

        Raises
        ------
        TypeError
            `k` is not an integer.
        ValueError
            `k` outside [-K, K).

        Examples
        --------
        >>> import ddim_core as dc
        >>> mixture = dc.GaussianMixture.create([[-2.0], [2.0]], [0.3, 0.3], dc.DDIMConfig())
        >>> mixture.component(1).means.tolist()
        [[2.0]]
        """
        size = self.means.shape[0]
        k = check_int("k", k, low=-size, high=size - 1) % size  # k=-1 sliced [-1:0], empty
        one = _read_only(np.ones(1))
        return dataclasses.replace(
            self, means=self.means[k : k + 1], stds=self.stds[k : k + 1], weights=one
        )

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

        Raises
        ------
        TypeError
            `n` is not an integer, or `rng` not a Generator (`numpy.random.default_rng(seed)`).
        ValueError
            `n` < 0.
        """
        n = check_int("n", n, low=0)
        if not isinstance(rng, np.random.Generator):
            raise TypeError(
                "rng must be a numpy.random.Generator (numpy.random.default_rng(seed)), got "
                f"{type(rng).__name__}"
            )
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
        if t.ndim == 1 and t.shape[0] not in (1, x.shape[0]):
            raise ValueError(f"t has shape {tuple(t.shape)}; expected () or ({x.shape[0]},)")
        values = backends.host_integers(t)
        if values is not None:
            bad = [v for v in values if not 0 <= v < size]
            if bad:
                raise ValueError(f"t={bad[0]} is outside [0, num_train_timesteps={size})")
            return t
        message = f"t is outside [0, num_train_timesteps={size})"
        return backends.check_range_on_device(t, size, message)

    def _alpha_bar(self, t: Any, x: Array, xp: Any) -> Array:
        """alpha_bar_t as a (1 or batch, 1, 1) array: the same table entry for an int t (an
        index, no host-to-device copy) as for an array t (a gather), so both give
        bit-identical outputs."""
        device = backends.device(x)
        table = _table(self.schedule, "alphas_cumprod", xp, device, x.dtype)  # cached, shared
        if isinstance(t, int | np.integer):
            return xp.reshape(table[int(t)], (1, 1, 1))
        return xp.reshape(backends.take_rows(table, t, xp), (-1, 1, 1))

    def ode_solution(self, x_T: np.ndarray, ab_T: float, ab_0: float = 1.0) -> np.ndarray:
        """The exact probability-flow ODE map from level alpha_bar_T to level alpha_bar_0 (the
        data by default), for one Gaussian (host NumPy, float64).

        For a single Gaussian N(mu, s^2 I) the DDIM ODE is linear:
        x_0 = mu + s (x_T - sqrt(alpha_bar_T) mu) / sqrt(alpha_bar_T s^2 + 1 - alpha_bar_T)
        at alpha_bar_0 = 1; other end levels by `Guided.ode_solution`'s formula at scale 1.

        Parameters
        ----------
        x_T : numpy.ndarray
            Samples at level `ab_T`.
        ab_T : float
            alpha_bar of the starting level.
        ab_0 : float, default 1.0
            alpha_bar of the end level (1: the data; a schedule's final_alpha_cumprod when
            set_alpha_to_one is False).

        Returns
        -------
        numpy.ndarray
            The samples at level `ab_0`.

        Raises
        ------
        ValueError
            The mixture has more than one component; a level outside [0, 1], or NaN (`ab_T` =
            0, pure noise, only with `ab_0` = 1); `x_T` not of shape (..., D).

        Examples
        --------
        >>> import numpy as np, ddim_core as dc
        >>> one = dc.GaussianMixture.create([[2.0]], [0.5], dc.DDIMConfig())
        >>> one.ode_solution(np.zeros((1, 1)), 0.0).tolist()   # from pure noise 0: the mean
        [[2.0]]
        """
        if self.means.shape[0] != 1:
            raise ValueError("the closed-form ODE solution is for a single Gaussian")
        mu, s = self.means[0], float(self.stds[0])
        x_T = _flow_input(x_T, self.dim)
        if ab_0 == 1.0:
            if not 0.0 <= ab_T <= 1.0:  # also refuses NaN
                raise ValueError(f"ab_T={ab_T!r} must be in [0, 1] (an alpha_bar)")
            scale = s / math.sqrt(ab_T * s**2 + 1.0 - ab_T)
            x_0: np.ndarray = mu + scale * (x_T - math.sqrt(ab_T) * mu)
            return x_0
        return _guided_flow(mu, s, mu, s, 1.0, x_T, ab_T, ab_0)


Model = Callable[[Array, Any], Array]


@dataclasses.dataclass(frozen=True, eq=False)
class Guided:
    """Classifier-free guidance of two models (Ho & Salimans 2022), optionally rescaled (Lin et
    al. 2023): `model(x, t)` = uncond + scale (cond - uncond), in their prediction type. Two
    model calls inside (one at scale 1), counted as one model call by the loops. Made by
    `guided`.

    Examples
    --------
    >>> import numpy as np, ddim_core as dc
    >>> config = dc.DDIMConfig(clip_sample=False)
    >>> mixture = dc.GaussianMixture.create([[-2.0], [2.0]], [0.3, 0.3], config)
    >>> model = dc.guided(mixture, mixture.component(0), 7.5)
    >>> model(np.zeros((1, 1)), 500).shape
    (1, 1)
    """

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
            and _same_schedule(u.schedule, c.schedule)
            and u.prediction_type == c.prediction_type
        )

    def ode_solution(self, x_T: np.ndarray, ab_T: float, ab_0: float = 1.0) -> np.ndarray:
        """The exact probability-flow ODE map of the guided model from level abar_T to abar_0
        (host NumPy float64), for two single Gaussians without rescale (see `_guided_flow`).

        Parameters
        ----------
        x_T : numpy.ndarray
            Samples at level `ab_T`.
        ab_T : float
            alpha_bar of the starting level.
        ab_0 : float, default 1.0
            alpha_bar of the end level (1: the data).

        Returns
        -------
        numpy.ndarray
            The samples at level `ab_0`.

        Raises
        ------
        ValueError
            Not two single Gaussians of one schedule, or a rescale (`exact` is False); a level
            outside (0, 1] (alpha_bar = 0, a zero-SNR end, included); `x_T` not of shape
            (..., D).

        Examples
        --------
        >>> import numpy as np, ddim_core as dc
        >>> config = dc.DDIMConfig()
        >>> u = dc.GaussianMixture.create([[0.0]], [1.0], config)
        >>> c = dc.GaussianMixture.create([[2.0]], [1.0], config)
        >>> x = dc.guided(u, c, 3.0).ode_solution(np.zeros((1, 1)), 1e-12)  # nearly pure noise
        >>> x.round(4).tolist()   # the guided mean, 0 + 3 (2 - 0)
        [[6.0]]
        """
        if not self.exact:
            raise ValueError(
                "the exact ODE solution of a guided model is known for two single-Gaussian "
                "GaussianMixture models of one schedule, without rescale"
            )
        u, c = self.uncond, self.cond
        assert isinstance(u, GaussianMixture) and isinstance(c, GaussianMixture)
        x = _flow_input(x_T, c.dim)
        return _guided_flow(
            u.means[0], float(u.stds[0]), c.means[0], float(c.stds[0]), self.scale, x, ab_T, ab_0
        )


def guided(uncond: Model, cond: Model, scale: float, *, rescale: float = 0.0) -> Guided:
    """The classifier-free-guided model of `uncond` and `cond` at guidance `scale` (1: cond
    alone), with guidance rescale `rescale` in [0, 1] (`ddim_core.rescale_noise_cfg`).

    Parameters
    ----------
    uncond, cond : callable
        Models ``model(x, t) -> array`` of one prediction type (e.g. a `GaussianMixture` and
        one of its components).
    scale : float
        The guidance scale w.
    rescale : float, default 0.0
        Guidance rescale phi in [0, 1].

    Returns
    -------
    Guided
        The guided model; `Guided.ode_solution` where the exact ODE is known.

    Raises
    ------
    TypeError
        Models that are not callable, or a scale that is not a real number.
    ValueError
        A NaN or infinite scale, or a rescale outside [0, 1].

    Examples
    --------
    >>> import numpy as np, ddim_core as dc
    >>> config = dc.DDIMConfig(clip_sample=False, timestep_spacing="trailing")
    >>> u = dc.GaussianMixture.create([[0.0]], [1.0], config)
    >>> c = dc.GaussianMixture.create([[2.0]], [0.5], config)
    >>> model = dc.guided(u, c, 3.0)
    >>> x_T = np.zeros((1, 1))
    >>> exact = model.ode_solution(x_T, model.cond.schedule.alpha_bar(999))
    >>> bool(abs(dc.sample(model, x_T, config, 200) - exact).max() < 0.01)
    True
    """
    if not (callable(uncond) and callable(cond)):
        raise TypeError("uncond and cond must be models callable as model(x, t)")
    w = check_real("scale", scale)
    phi = check_nonnegative("rescale", rescale)
    if phi > 1.0:
        raise ValueError(f"rescale={rescale} must be in [0, 1]")
    return Guided(uncond, cond, w, phi)


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
    for name, ab in (("ab_T", ab_T), ("ab_0", ab_0)):
        if not 0.0 < ab <= 1.0:  # host floats; also refuses NaN
            raise ValueError(
                f"{name}={ab!r} must be in (0, 1]: the VE form has no level alpha_bar = 0 (a "
                "zero-SNR end); start from the next level"
            )
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


def _flow_input(x_T: Any, dim: int) -> np.ndarray:
    """x_T as host float64 samples of shape (..., dim): NumPy would broadcast (n, 1) silently."""
    x = np.asarray(x_T, dtype=np.float64)
    if x.ndim == 0 or x.shape[-1] != dim:
        raise ValueError(
            f"x_T has shape {x.shape}; expected (..., {dim}), samples of dimension {dim}"
        )
    return x


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
        array = np.array(values, dtype=np.float64)  # a copy: the caller's array stays theirs
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be numbers in a regular (rectangular) shape: {e}") from None
    if not np.all(np.isfinite(array)) or np.any(np.abs(array) > 1e150):
        raise ValueError(f"{name} must be finite numbers of magnitude <= 1e150")
    return array


def _read_only(array: np.ndarray) -> np.ndarray:
    """`array` made read-only: the device copies of a mixture's parameters are cached, so a
    write to them would be seen on the host but not by the model."""
    array.flags.writeable = False
    return array


def _same_schedule(a: Schedule, b: Schedule) -> bool:
    # Equal tables, not identity: the schedule cache may have rebuilt one of them.
    return a is b or (
        a.final_alpha_cumprod == b.final_alpha_cumprod
        and np.array_equal(a.alphas_cumprod, b.alphas_cumprod)
    )
