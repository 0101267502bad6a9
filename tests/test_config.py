"""DDIMConfig: defaults, validation, JSON in diffusers' keys, Bumblebee aliases."""

from __future__ import annotations

import json

import pytest

from ddim_core import DDIMConfig


def test_defaults_are_diffusers_defaults() -> None:
    c = DDIMConfig()
    assert (c.num_train_timesteps, c.beta_start, c.beta_end, c.beta_schedule) == (
        1000,
        0.0001,
        0.02,
        "linear",
    )
    assert c.clip_sample and c.set_alpha_to_one and not c.thresholding
    assert (c.prediction_type, c.timestep_spacing, c.steps_offset) == ("epsilon", "leading", 0)
    assert c.prev_timestep == "plan"


def test_frozen_and_hashable() -> None:
    c = DDIMConfig(trained_betas=[0.1] * 1000)
    assert isinstance(c.trained_betas, tuple)
    assert hash(c) == hash(DDIMConfig(trained_betas=tuple([0.1] * 1000)))
    with pytest.raises(AttributeError):
        c.beta_start = 0.1  # type: ignore[misc]


def test_json_round_trip(tmp_path) -> None:
    c = DDIMConfig(beta_schedule="scaled_linear", timestep_spacing="trailing", steps_offset=1)
    assert DDIMConfig.from_json(c.to_json()) == c
    c.to_json(tmp_path / "scheduler_config.json")
    assert DDIMConfig.from_json(tmp_path / "scheduler_config.json") == c
    assert DDIMConfig.from_json(str(tmp_path / "scheduler_config.json")) == c
    assert set(json.loads(c.to_json())) >= {"num_train_timesteps", "timestep_spacing"}


def test_unknown_keys_warn_and_metadata_is_silent() -> None:
    data = {"_class_name": "PNDMScheduler", "_diffusers_version": "0.42.1", "skip_prk_steps": True}
    with pytest.warns(UserWarning, match="skip_prk_steps"):
        c = DDIMConfig.from_dict(data)
    assert c == DDIMConfig()


def test_bumblebee_aliases() -> None:
    c = DDIMConfig.from_dict(
        {
            "num_train_steps": 500,
            "beta_schedule": ":quadratic",
            "prediction_type": "angular_velocity",
            "alpha_clip_strategy": ":alpha_zero",
            "timesteps_offset": 1,
            "clip_denoised_sample": False,
        }
    )
    assert c == DDIMConfig(
        num_train_timesteps=500,
        beta_schedule="scaled_linear",
        prediction_type="v_prediction",
        set_alpha_to_one=False,
        steps_offset=1,
        clip_sample=False,
    )
    assert DDIMConfig.from_dict(
        {"beta_schedule": "squared_cosine", "prediction_type": "noise"}
    ) == (DDIMConfig(beta_schedule="squaredcos_cap_v2"))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"beta_schedule": "cosine"}, ValueError, "beta_schedule='cosine'.*linear"),
        ({"prediction_type": "eps"}, ValueError, "prediction_type='eps'.*v_prediction"),
        ({"timestep_spacing": "uniform"}, ValueError, "timestep_spacing='uniform'.*trailing"),
        ({"prev_timestep": "next"}, ValueError, "prev_timestep='next'"),
        ({"num_train_timesteps": 0}, ValueError, "num_train_timesteps must be >= 1, got 0"),
        ({"num_train_timesteps": 10.0}, TypeError, "num_train_timesteps must be an integer"),
        ({"steps_offset": -1}, ValueError, "steps_offset must be >= 0, got -1"),
        ({"clip_sample": "yes"}, TypeError, "clip_sample must be True or False"),
        ({"beta_start": 0.0}, ValueError, r"beta_start must be in \(0.0, 1.0\)"),
        ({"beta_end": float("nan")}, ValueError, "beta_end"),
        ({"clip_sample_range": -1.0}, ValueError, "clip_sample_range"),
        ({"dynamic_thresholding_ratio": 1.5}, ValueError, "dynamic_thresholding_ratio"),
        ({"trained_betas": [0.5, 1.0]}, ValueError, r"trained_betas .* \(0, 1\)"),
        ({"trained_betas": "0.1"}, TypeError, "trained_betas"),
        ({"trained_betas": [0.1] * 10}, ValueError, "trained_betas has 10 values"),
    ],
)
def test_bad_options_are_named(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        DDIMConfig(**kwargs)


def test_from_dict_rejects_non_mapping() -> None:
    with pytest.raises(TypeError, match="mapping"):
        DDIMConfig.from_dict([("beta_start", 0.1)])  # type: ignore[arg-type]
