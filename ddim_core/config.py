"""DDIMConfig: every option of diffusers' DDIMScheduler / DDIMInverseScheduler, validated once.

Key names are diffusers' `scheduler_config.json` names, so a config read from a diffusers
checkpoint round-trips. Bumblebee's names and values are accepted as aliases on the way in.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
import warnings
from collections.abc import Mapping
from typing import Any

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")
PREV_TIMESTEP_RULES = ("plan", "stride")

# Bumblebee (elixir-nx) names -> ours; values that say what they mean -> diffusers' values.
_KEY_ALIASES = {
    "num_train_steps": "num_train_timesteps",
    "timesteps_offset": "steps_offset",
    "clip_denoised_sample": "clip_sample",
    "alpha_clip_strategy": "set_alpha_to_one",
}
_VALUE_ALIASES: dict[str, dict[Any, Any]] = {
    "beta_schedule": {"quadratic": "scaled_linear", "squared_cosine": "squaredcos_cap_v2"},
    "prediction_type": {"noise": "epsilon", "angular_velocity": "v_prediction"},
    "set_alpha_to_one": {"one": True, "alpha_zero": False},
}


@dataclasses.dataclass(frozen=True)
class DDIMConfig:
    """Options of a DDIM scheduler, with diffusers' names and defaults.

    `prev_timestep` is ours: "plan" takes t_prev from the timestep plan (correct for every
    spacing); "stride" reproduces diffusers' `t - num_train_timesteps // num_inference_steps`.
    """

    num_train_timesteps: int = 1000
    beta_start: float = 0.0001
    beta_end: float = 0.02
    beta_schedule: str = "linear"
    trained_betas: tuple[float, ...] | None = None
    clip_sample: bool = True
    set_alpha_to_one: bool = True
    steps_offset: int = 0
    prediction_type: str = "epsilon"
    thresholding: bool = False
    dynamic_thresholding_ratio: float = 0.995
    clip_sample_range: float = 1.0
    sample_max_value: float = 1.0
    timestep_spacing: str = "leading"
    rescale_betas_zero_snr: bool = False
    prev_timestep: str = "plan"

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            object.__setattr__(self, field.name, _VALIDATORS[field.name](field.name, value))
        betas = self.trained_betas
        if betas is not None and len(betas) != self.num_train_timesteps:
            raise ValueError(
                f"trained_betas has {len(betas)} values but num_train_timesteps is "
                f"{self.num_train_timesteps}; they must agree"
            )

    def replace(self, **changes: Any) -> DDIMConfig:
        """A copy with some options changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Options under diffusers' `scheduler_config.json` keys (plus ours)."""
        out = dataclasses.asdict(self)
        if self.trained_betas is not None:
            out["trained_betas"] = list(self.trained_betas)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DDIMConfig:
        """Build from diffusers' or Bumblebee's keys; unknown keys are ignored with a warning.

        Keys starting with "_" (`_class_name`, `_diffusers_version`) are metadata and ignored
        silently.
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"config data must be a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        unknown = []
        for raw_key, raw_value in data.items():
            key = _KEY_ALIASES.get(raw_key, raw_key)
            if key not in known:
                if not str(raw_key).startswith("_"):
                    unknown.append(raw_key)
                continue
            kwargs[key] = _unalias(key, raw_value)
        if unknown:
            warnings.warn(
                f"DDIMConfig ignores unknown config keys: {sorted(map(str, unknown))}",
                stacklevel=2,
            )
        return cls(**kwargs)

    def to_json(self, path: str | os.PathLike[str] | None = None) -> str:
        """JSON text in diffusers' format; also written to `path` when given."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
        if path is not None:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        return text

    @classmethod
    def from_json(cls, source: str | os.PathLike[str]) -> DDIMConfig:
        """From JSON text, or from a path to a JSON file (e.g. `scheduler_config.json`)."""
        if isinstance(source, os.PathLike) or not str(source).lstrip().startswith("{"):
            with open(source, encoding="utf-8") as f:
                source = f.read()
        data = json.loads(source)
        return cls.from_dict(data)


def check_nonnegative(name: str, value: Any) -> float:
    """A finite real number >= 0 (eta, s_noise), else TypeError/ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    number = float(value)
    if not (math.isfinite(number) and number >= 0.0):
        raise ValueError(f"{name}={value} must be a finite number >= 0")
    return number


def _unalias(key: str, value: Any) -> Any:
    if isinstance(value, str):
        name = value.lstrip(":")  # Bumblebee atoms may arrive as ":quadratic"
        return _VALUE_ALIASES.get(key, {}).get(name, value)
    return value


def _choice(options: tuple[str, ...]) -> Any:
    def check(name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a string, one of {options}; got {value!r}")
        if value not in options:
            raise ValueError(f"{name}={value!r} is not supported; choose one of {options}")
        return value

    return check


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def _int(low: int) -> Any:
    def check(name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an integer, got {value!r}")
        if value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")
        return int(value)

    return check


def _real(low: float, high: float, *, low_open: bool = True, high_open: bool = True) -> Any:
    lo, hi = ("(" if low_open else "["), (")" if high_open else "]")

    def check(name: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a real number, got {value!r}")
        v = float(value)
        above = v > low if low_open else v >= low
        below = v < high if high_open else v <= high
        if not math.isfinite(v) or not (above and below):
            raise ValueError(f"{name} must be in {lo}{low}, {high}{hi}, got {value!r}")
        return v

    return check


def _betas(name: str, value: Any) -> tuple[float, ...] | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
        raise TypeError(f"{name} must be a sequence of floats or None, got {type(value).__name__}")
    try:
        betas = tuple(float(b) for b in value)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a sequence of real numbers: {e}") from None
    bad = [b for b in betas if not 0.0 < b < 1.0]
    if not betas or bad:
        raise ValueError(f"{name} must be a non-empty sequence of values in (0, 1); got {bad[:3]}")
    return betas


_VALIDATORS: dict[str, Any] = {
    "num_train_timesteps": _int(1),
    "beta_start": _real(0.0, 1.0),
    "beta_end": _real(0.0, 1.0),
    "beta_schedule": _choice(BETA_SCHEDULES),
    "trained_betas": _betas,
    "clip_sample": _bool,
    "set_alpha_to_one": _bool,
    "steps_offset": _int(0),
    "prediction_type": _choice(PREDICTION_TYPES),
    "thresholding": _bool,
    "dynamic_thresholding_ratio": _real(0.0, 1.0, high_open=False),
    "clip_sample_range": _real(0.0, math.inf),
    "sample_max_value": _real(0.0, math.inf),
    "timestep_spacing": _choice(TIMESTEP_SPACINGS),
    "rescale_betas_zero_snr": _bool,
    "prev_timestep": _choice(PREV_TIMESTEP_RULES),
}
