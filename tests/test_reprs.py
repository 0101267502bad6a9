"""Reprs say what an object is (its config, N, first and last timesteps, dtype), never dump
its tables."""

from __future__ import annotations

import ddim_core as dc


def test_short_reprs() -> None:
    config = dc.DDIMConfig(timestep_spacing="trailing", trained_betas=[0.01] * 1000)
    plan = dc.make_plan(config, 50)
    mixture = dc.GaussianMixture.create([[0.0, 0.0], [1.0, 1.0]], [1.0, 1.0], config)
    assert repr(config) == "DDIMConfig(trained_betas=<1000 values>, timestep_spacing='trailing')"
    assert repr(plan) == (
        "Plan(N=50, timesteps 999 -> 19, t_prev 979 -> -1, T=1000, float64, "
        "DDIMConfig(trained_betas=<1000 values>, timestep_spacing='trailing'))"
    )
    assert repr(plan.schedule).startswith("Schedule(T=1000, float64, alpha_bar 0.99 at t=0 -> ")
    assert repr(mixture) == (
        "GaussianMixture(K=2 components in D=2 dimensions, float64, "
        "prediction_type='epsilon', T=1000)"
    )
    for obj in (config, plan, plan.schedule, mixture):
        assert len(repr(obj)) < 200
    assert repr(dc.DDIMConfig()) == "DDIMConfig()"
