"""Independent NumPy float64 reference of DDIM, written from the paper's equations.

Only the schedule tables come from ddim_core (they are checked against diffusers separately).
"""

from __future__ import annotations

import numpy as np

import ddim_core as dc


def level(plan: dc.Plan, t: int) -> float:
    return plan.schedule.final_alpha_cumprod if t < 0 else float(plan.schedule.alphas_cumprod[t])


def x0_eps(x: np.ndarray, out: np.ndarray, ab: float, prediction: str) -> tuple:
    if prediction == "epsilon":
        return (x - np.sqrt(1 - ab) * out) / np.sqrt(ab), out
    if prediction == "sample":
        return out, (x - np.sqrt(ab) * out) / np.sqrt(1 - ab)
    return np.sqrt(ab) * x - np.sqrt(1 - ab) * out, np.sqrt(ab) * out + np.sqrt(1 - ab) * x


def threshold(x0: np.ndarray, ratio: float, max_value: float) -> np.ndarray:
    flat = x0.reshape(x0.shape[0], -1)
    s = np.quantile(np.abs(flat), ratio, axis=1, method="linear")
    s = np.minimum(np.maximum(s, 1.0), max_value)[:, None]
    return (np.clip(flat, -s, s) / s).reshape(x0.shape)


def process_x0(plan: dc.Plan, x0: np.ndarray) -> np.ndarray:
    cfg = plan.config
    if cfg.thresholding:
        return threshold(x0, cfg.dynamic_thresholding_ratio, cfg.sample_max_value)
    if cfg.clip_sample:
        return np.clip(x0, -cfg.clip_sample_range, cfg.clip_sample_range)
    return x0


def step(plan, out, t, x, eta=0.0, noise=None, use_clipped=False):
    """Eq. (12) with sigma from eq. (16)."""
    ab_t, ab_prev = level(plan, t), level(plan, plan.prev_timestep(t))
    x0, eps = x0_eps(x, out, ab_t, plan.config.prediction_type)
    x0 = process_x0(plan, x0)
    if use_clipped:
        eps = (x - np.sqrt(ab_t) * x0) / np.sqrt(1 - ab_t)
    sigma = eta * np.sqrt((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev))
    x_prev = np.sqrt(ab_prev) * x0 + np.sqrt(max(1 - ab_prev - sigma**2, 0.0)) * eps
    if eta > 0:
        x_prev = x_prev + sigma * noise
    return x_prev, x0


def inverse_step(plan, out, t, x):
    """From the level of prev_timestep(t) up to t, model evaluated at t on the source sample."""
    ab_src, ab_dst = level(plan, plan.prev_timestep(t)), level(plan, t)
    x0, eps = x0_eps(x, out, ab_src, plan.config.prediction_type)
    x0 = process_x0(plan, x0)
    return np.sqrt(ab_dst) * x0 + np.sqrt(1 - ab_dst) * eps, x0


def per_sample(plan, out, timesteps, x, eta=0.0, noise=None, inverse=False):
    """`step` (or `inverse_step`) of sample i from timesteps[i], stacked: a step with an array
    of per-sample timesteps."""
    rows = []
    for i, t in enumerate(timesteps):
        if inverse:
            rows.append(inverse_step(plan, out[i], t, x[i]))
        else:
            z = None if noise is None else noise[i]
            rows.append(step(plan, out[i], t, x[i], eta=eta, noise=z))
    return tuple(np.stack(parts) for parts in zip(*rows, strict=True))
