"""DDIMConfig: every option of diffusers' DDIMScheduler / DDIMInverseScheduler, validated once.

Key names are diffusers' `scheduler_config.json` names, so a config read from a diffusers
checkpoint round-trips. Bumblebee's names and values are accepted as aliases on the way in.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import numbers
import os
import textwrap
import warnings
from collections.abc import Callable, Mapping, Set
from typing import Any

# Tables are host float64 arrays of T entries; real models use T <= 4000.
MAX_TRAIN_TIMESTEPS = 1_000_000

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace", "quadratic")
DIFFUSERS_SPACINGS = TIMESTEP_SPACINGS[:3]
PREV_TIMESTEP_RULES = ("plan", "stride")

# Bumblebee (elixir-nx) names -> ours; values that say what they mean -> diffusers' values.
_LEGACY_ONE = "set_alpha_to_zero"  # DDIMInverseScheduler's before diffusers 0.18
_KEY_ALIASES = {
    "num_train_steps": "num_train_timesteps",
    "timesteps_offset": "steps_offset",
    "clip_denoised_sample": "clip_sample",
    "alpha_clip_strategy": "set_alpha_to_one",
}
# Bumblebee's options that are per-call step arguments here (not config): its name -> ours.
_STEP_OPTIONS = {"eta": "eta", "rederive_noise": "use_clipped_model_output"}


def _per_call_default(key: str, value: Any) -> bool:
    """Whether Bumblebee's step option `key` has the value the per-call argument defaults to
    (eta 0, rederive_noise false): then leaving it out changes nothing."""
    if isinstance(value, bool):
        return key == "rederive_noise" and value is False
    return key == "eta" and isinstance(value, int | float) and value == 0


_VALUE_ALIASES: dict[str, dict[Any, Any]] = {
    "beta_schedule": {"quadratic": "scaled_linear", "squared_cosine": "squaredcos_cap_v2"},
    "prediction_type": {"noise": "epsilon", "angular_velocity": "v_prediction"},
    "set_alpha_to_one": {"one": True, "alpha_zero": False},
}


def check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    """An integer in [low, high] (either bound optional).

    bool is not an integer here; NumPy and other `numbers.Integral` integers are, as int.

    Parameters
    ----------
    name : str
        The argument's name, for the error message.
    value : object
        The value to check.
    low, high : int, optional
        Inclusive bounds.

    Returns
    -------
    int

    Raises
    ------
    TypeError
        Not an integer.
    ValueError
        Out of bounds.

    Examples
    --------
    >>> check_int("steps", 5, low=1)
    5
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    number = int(value)
    if (low is not None and number < low) or (high is not None and number > high):
        if high is None:
            allowed = f">= {low}"
        elif low is None:
            allowed = f"<= {high}"
        else:
            allowed = f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {allowed}, got {number}")
    return number


def check_bool(name: str, value: Any) -> bool:
    """True or False (not 0/1, not a string).

    Parameters
    ----------
    name : str
        The argument's name, for the error message.
    value : object
        The value to check.

    Returns
    -------
    bool

    Raises
    ------
    TypeError
        Anything but a bool.

    Examples
    --------
    >>> check_bool("clip_sample", False)
    False
    """
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def check_nonnegative(name: str, value: Any) -> float:
    """A finite real number >= 0 (eta, s_noise).

    Parameters
    ----------
    name : str
        The argument's name, for the error message.
    value : object
        The value to check.

    Returns
    -------
    float

    Raises
    ------
    TypeError
        Not a real number.
    ValueError
        Negative, NaN or infinite.

    Examples
    --------
    >>> check_nonnegative("eta", 1)
    1.0
    """
    number = check_real(name, value)
    if number < 0.0:
        raise ValueError(f"{name}={value} must be a finite number >= 0")
    return number


def check_real(name: str, value: Any) -> float:
    """A finite real host number, any sign (a guidance scale, an interpolation weight).

    Parameters
    ----------
    name : str
        The argument's name, for the error message.
    value : object
        The value to check.

    Returns
    -------
    float

    Raises
    ------
    TypeError
        Not a real number (a bool, a string or an array).
    ValueError
        NaN or infinite.

    Examples
    --------
    >>> check_real("guidance_scale", 7.5)
    7.5
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    try:
        scale = float(value)
    except OverflowError:  # an int past float's range: not a finite float either
        scale = math.inf
    if not math.isfinite(scale):
        raise ValueError(f"{name}={value!r:.40} must be a finite number")
    return scale


def _unalias(key: str, value: Any) -> Any:
    if isinstance(value, str):
        # Bumblebee atoms may arrive as ":quadratic", or as ":linear" (its default): any atom
        # names a value, ours or one of its aliases.
        name = value.lstrip(":")
        return _VALUE_ALIASES.get(key, {}).get(name, name if value.startswith(":") else value)
    return value


def _read(check: Callable[[str, Any], Any], key: str, raw_key: str, raw_value: Any) -> Any:
    """Option `key`, given as `raw_key`: raw_value (Bumblebee's atoms made ours) checked by
    `check`, its errors naming the key and the value as the config wrote them."""
    value = _unalias(key, raw_value)
    try:
        return check(raw_key, value)
    except (TypeError, ValueError) as error:
        atoms = ", ".join(f":{name}" for name in _VALUE_ALIASES.get(key, {}))
        if raw_key != key and atoms:  # Bumblebee's key (alpha_clip_strategy): its values
            kind = ValueError if isinstance(raw_value, str) else TypeError
            raise kind(
                f"{raw_key}={raw_value!r} is not supported; choose one of {atoms} "
                f"(Bumblebee's values of {key})"
            ) from None
        shown = error
        if value is not raw_value:  # an atom (":cosine"): the error again, with it as written
            try:
                check(raw_key, raw_value)
            except (TypeError, ValueError) as as_written:
                shown = as_written
        if atoms:
            raise type(shown)(f"{shown}; Bumblebee's {atoms} are read too") from None
        raise shown from None


def _choice(options: tuple[str, ...]) -> Any:
    def check(name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a string, one of {options}; got {value!r}")
        if value not in options:
            raise ValueError(f"{name}={value!r} is not supported; choose one of {options}")
        return value

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
    # (a set has no order: its betas would be read in hash order)
    if isinstance(value, (str, bytes, Mapping, Set)) or not hasattr(value, "__iter__"):
        raise TypeError(f"{name} must be a sequence of floats or None, got {type(value).__name__}")
    if hasattr(value, "dtype") and hasattr(value, "shape"):
        from . import backends  # (lazily: config is imported before any backend)

        # an array of any library (a scheduler's betas tensor): read to the host once, not
        # value by value (a device sync each, torch's grad warning, a meta tensor's RuntimeError)
        value = backends.to_host(value, dtype=None, name=name)
    try:
        betas = tuple(float(b) for b in value)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a sequence of real numbers: {e}") from None
    if not betas:
        raise ValueError(f"{name} must be a non-empty sequence of values in (0, 1]; got none")
    for i, b in enumerate(betas):
        if b == 1.0 and i < len(betas) - 1:
            raise ValueError(
                f"{name}[{i}]={b}: only the last beta may be 1 (zero terminal SNR); a 1 before "
                "it makes every later level alpha_bar = 0"
            )
        if not 0.0 < b <= 1.0:
            raise ValueError(f"{name}[{i}]={b} must be in (0, 1] (1 only as the last value)")
    return betas


def _option(default: Any, check: Callable[[str, Any], Any], doc: str) -> Any:
    """A DDIMConfig field declared once: its default, its check and its one-line description."""
    return dataclasses.field(default=default, metadata={"check": check, "doc": doc})


@dataclasses.dataclass(frozen=True)
class DDIMConfig:
    """Options of a DDIM scheduler, with diffusers' names and defaults, validated on creation.

    Frozen and hashable. Each option is declared once, with its check and its description
    (listed below, and by `DDIMConfig.options()`); the repr shows the options that differ
    from their defaults.

    Raises
    ------
    TypeError
        An option of the wrong type (bool and int are not interchangeable).
    ValueError
        An option with a bad value, `trained_betas` whose length is not
        `num_train_timesteps`, or `trained_betas` on a device whose values the host cannot read
        (torch's meta device; an array of any library is read to the host once).

    Examples
    --------
    >>> import ddim_core as dc
    >>> config = dc.DDIMConfig(beta_schedule="scaled_linear", timestep_spacing="trailing")
    >>> config
    DDIMConfig(beta_schedule='scaled_linear', timestep_spacing='trailing')
    >>> dc.DDIMConfig.from_json(config.to_json()) == config
    True
    >>> dc.DDIMConfig.from_dict({"beta_schedule": ":quadratic"}).beta_schedule  # Bumblebee
    'scaled_linear'
    """

    num_train_timesteps: int = _option(
        1000,
        functools.partial(check_int, low=1, high=MAX_TRAIN_TIMESTEPS),
        "number of diffusion steps T the model was trained with (timesteps 0 .. T - 1); "
        f"1 .. {MAX_TRAIN_TIMESTEPS}",
    )
    beta_start: float = _option(
        0.0001,
        _real(0.0, 1.0),
        'beta at t = 0 of "linear" and "scaled_linear" (unused by "squaredcos_cap_v2"); in (0, 1)',
    )
    beta_end: float = _option(
        0.02,
        _real(0.0, 1.0),
        'beta at t = T - 1 of "linear" and "scaled_linear" (unused by "squaredcos_cap_v2"); '
        "in (0, 1)",
    )
    beta_schedule: str = _option(
        "linear",
        _choice(BETA_SCHEDULES),
        '"linear": betas evenly spaced from beta_start to beta_end; "scaled_linear": sqrt(beta) '
        'evenly spaced (Stable Diffusion); "squaredcos_cap_v2": the cosine schedule of Nichol '
        "& Dhariwal 2021, betas capped at 0.999",
    )
    trained_betas: tuple[float, ...] | None = _option(
        None,
        _betas,
        "betas taken as given, one per training timestep, each in (0, 1), the last in (0, 1] "
        "(1: zero terminal SNR, as rescale_betas_zero_snr makes); they override beta_start, "
        "beta_end and beta_schedule",
    )
    clip_sample: bool = _option(
        True,
        check_bool,
        "clip the predicted x_0 to [-clip_sample_range, clip_sample_range] (ignored when "
        "thresholding is on)",
    )
    set_alpha_to_one: bool = _option(
        True,
        check_bool,
        "alpha_bar of the clean level where sampling ends and inversion starts (t = -1): "
        "True takes 1, False takes alpha_bar_0",
    )
    steps_offset: int = _option(
        0,
        functools.partial(check_int, low=0),
        'added to every inference timestep of the "leading" and "quadratic" spacings, not to '
        '"trailing" or "linspace" (as in diffusers); Stable Diffusion uses 1; >= 0',
    )
    prediction_type: str = _option(
        "epsilon",
        _choice(PREDICTION_TYPES),
        'what the model predicts: "epsilon" the noise, "sample" x_0, "v_prediction" '
        "v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0 (Salimans & Ho 2022)",
    )
    thresholding: bool = _option(
        False,
        check_bool,
        "dynamic thresholding of the predicted x_0 (Saharia et al. 2022, Imagen) instead of "
        "clip_sample; for pixel-space models, not latent ones",
    )
    dynamic_thresholding_ratio: float = _option(
        0.995,
        _real(0.0, 1.0, low_open=False, high_open=False),
        "quantile of |x_0| per sample that sets the dynamic threshold s; in [0, 1] (0: the "
        "smallest |x_0|)",
    )
    clip_sample_range: float = _option(
        1.0,
        _real(0.0, math.inf),
        "bound of clip_sample: x_0 is clipped to [-clip_sample_range, clip_sample_range]; > 0",
    )
    sample_max_value: float = _option(
        1.0,
        _real(0.0, math.inf),
        "largest dynamic threshold: s is clamped to [1, sample_max_value]; > 0, and a step "
        "refuses one below the smallest normal number of its work dtype (float32 for half "
        "precision), where s would be 0 and x_0 NaN",
    )
    timestep_spacing: str = _option(
        "leading",
        _choice(TIMESTEP_SPACINGS),
        "which N of the T timesteps inference visits, k = 0 .. N - 1 (Lin et al. 2023, "
        'table 2): "leading" k * (T // N) + steps_offset; "trailing" round(T - k * T / N) - 1; '
        '"linspace" round(linspace(0, T - 1, N)); not in diffusers: "quadratic" '
        "floor(0.8 T k^2 / (N - 1)^2) + steps_offset (Song et al. 2021, appendix D.2), a "
        "timestep not above its predecessor moved to one above it",
    )
    rescale_betas_zero_snr: bool = _option(
        False,
        check_bool,
        "rescale betas so the last training timestep has zero SNR (Lin et al. 2023, "
        'algorithm 1); for models trained so, with "trailing" spacing',
    )
    prev_timestep: str = _option(
        "plan",
        _choice(PREV_TIMESTEP_RULES),
        'not in diffusers: "plan" takes t_prev from the timestep plan (exact for every '
        'spacing); "stride" reproduces diffusers\' t - num_train_timesteps // num_inference_steps',
    )

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            check = field.metadata["check"]
            object.__setattr__(self, field.name, check(field.name, getattr(self, field.name)))
        if self.prev_timestep == "stride" and self.timestep_spacing not in DIFFUSERS_SPACINGS:
            raise ValueError(
                f'prev_timestep="stride" reproduces diffusers, which has no '
                f'timestep_spacing="{self.timestep_spacing}"; use prev_timestep="plan"'
            )
        betas = self.trained_betas
        if self.rescale_betas_zero_snr and self.num_train_timesteps < 2:
            raise ValueError(
                "rescale_betas_zero_snr=True needs num_train_timesteps >= 2 (it shifts the "
                "schedule between its first and last level), got 1"
            )
        if betas is not None and len(betas) != self.num_train_timesteps:
            raise ValueError(
                f"trained_betas has {len(betas)} values but num_train_timesteps is "
                f"{self.num_train_timesteps}; they must agree"
            )

    def __repr__(self) -> str:
        """The options that differ from their defaults (trained_betas summarised)."""
        changed = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value == f.default:
                continue
            shown = f"<{len(value)} values>" if f.name == "trained_betas" else repr(value)
            changed.append(f"{f.name}={shown}")
        return f"DDIMConfig({', '.join(changed)})"

    @classmethod
    def options(cls) -> tuple[tuple[str, Any, str], ...]:
        """(name, default, description) of every option, in declaration order.

        Returns
        -------
        tuple of (str, object, str)
        """
        return tuple((f.name, f.default, f.metadata["doc"]) for f in dataclasses.fields(cls))

    def replace(self, **changes: Any) -> DDIMConfig:
        """A copy with some options changed (validated again).

        Parameters
        ----------
        **changes
            Options by name.

        Returns
        -------
        DDIMConfig
        """
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The options under diffusers' `scheduler_config.json` keys (plus ours).

        Returns
        -------
        dict
        """
        out = dataclasses.asdict(self)
        if self.trained_betas is not None:
            out["trained_betas"] = list(self.trained_betas)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DDIMConfig:
        """Build from diffusers' or Bumblebee's keys; unknown keys are ignored with a warning.

        Bumblebee's `eta` and `rederive_noise` are step options here, not config: they are
        left out, with a warning that names them as `eta` and `use_clipped_model_output`, the
        arguments of `step` and `functional.Scheduler` that take them, unless they have those
        arguments' defaults (eta 0, rederive_noise false: Bumblebee's defaults too).

        Keys starting with "_" (`_class_name`, `_diffusers_version`) are metadata and ignored
        silently. The key `set_alpha_to_zero` of DDIMInverseScheduler configs saved by diffusers
        before 0.18 sets `set_alpha_to_one` to its value (a FutureWarning says so), as diffusers
        reads it.

        Parameters
        ----------
        data : mapping
            Option names (or Bumblebee's aliases) to values.

        Returns
        -------
        DDIMConfig

        Raises
        ------
        TypeError
            `data` is not a mapping, or an option has the wrong type.
        ValueError
            An option has a bad value, or Bumblebee's key and diffusers' (`num_train_steps`
            and `num_train_timesteps`) give one option different values. Errors name the key
            and the value as `data` has them.

        Examples
        --------
        >>> DDIMConfig.from_dict({"num_train_steps": 500, "alpha_clip_strategy": ":alpha_zero"})
        DDIMConfig(num_train_timesteps=500, set_alpha_to_one=False)
        >>> DDIMConfig.from_dict({"alpha_clip_strategy": ":ones"})
        Traceback (most recent call last):
        ...
        ValueError: alpha_clip_strategy=':ones' is not supported; choose one of :one, ...
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"config data must be a mapping, got {type(data).__name__}")
        checks = {f.name: f.metadata["check"] for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        written: dict[str, str] = {}  # option -> the key the config gave it under
        unknown = []
        step_options: dict[str, Any] = {}
        for raw_key, raw_value in data.items():
            key = _KEY_ALIASES.get(raw_key, raw_key)
            if raw_key in _STEP_OPTIONS:
                if not _per_call_default(raw_key, raw_value):
                    step_options[raw_key] = raw_value
                continue
            if key not in checks:
                if not str(raw_key).startswith("_") and raw_key != _LEGACY_ONE:
                    unknown.append(raw_key)
                continue
            value = _read(checks[key], key, raw_key, raw_value)
            if key in written and kwargs[key] != value:  # Bumblebee's name and diffusers'
                first = written[key]
                raise ValueError(
                    f"{first}={data[first]!r} and {raw_key}={raw_value!r} both set {key} "
                    "but disagree; give one of them"
                )
            kwargs[key], written[key] = value, raw_key
        if unknown:
            warnings.warn(
                f"DDIMConfig ignores unknown config keys: {sorted(map(str, unknown))}",
                stacklevel=2,
            )
        if step_options:
            given = ", ".join(f"{k}={v!r}" for k, v in step_options.items())
            ours = ", ".join(f"{_STEP_OPTIONS[k]}={v!r}" for k, v in step_options.items())
            warnings.warn(
                f"DDIMConfig leaves out Bumblebee's step options {given}: pass them per call, "
                f"as {ours} to ddim_core.step or ddim_core.functional.Scheduler (eta also to "
                "ddim_core.sample)",
                stacklevel=2,
            )
        legacy = data.get(_LEGACY_ONE)
        if legacy is not None:  # what diffusers' DDIMInverseScheduler does with the key
            warnings.warn(
                f"{_LEGACY_ONE}={legacy!r} (a DDIMInverseScheduler config of diffusers < 0.18) "
                f"is read as set_alpha_to_one={legacy!r}, as diffusers reads it",
                FutureWarning,
                stacklevel=2,
            )
            kwargs["set_alpha_to_one"] = check_bool(_LEGACY_ONE, legacy)
        try:
            return cls(**kwargs)
        except ValueError as error:  # a rule between options, which it names as ours
            aliased = [f"{k} is {v} here" for k, v in written.items() if k != v and k in str(error)]
            if not aliased:
                raise
            raise ValueError(f"{error} ({', '.join(aliased)})") from None

    def to_json(self, path: str | os.PathLike[str] | None = None) -> str:
        """JSON text in diffusers' format; also written to `path` when given.

        Parameters
        ----------
        path : str or path-like, optional
            A file to write.

        Returns
        -------
        str
        """
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
        if path is not None:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        return text

    @classmethod
    def from_json(cls, text: str | bytes) -> DDIMConfig:
        """From JSON text (a `scheduler_config.json`'s content); for a file, `from_file`.

        Parameters
        ----------
        text : str or bytes
            One JSON object of options (diffusers' or Bumblebee's keys).

        Returns
        -------
        DDIMConfig

        Raises
        ------
        TypeError
            `text` is a path (use `from_file`) or not text.
        ValueError
            Not one JSON object of options (see `load_json_object`), or a bad option value.

        Examples
        --------
        >>> DDIMConfig.from_json('{"timestep_spacing": "trailing"}').timestep_spacing
        'trailing'
        """
        if isinstance(text, os.PathLike):
            raise TypeError(f"from_json takes JSON text; for the file {text!r} use from_file")
        return cls.from_dict(load_json_object(text, "DDIMConfig.from_json text"))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> DDIMConfig:
        """From a JSON file, e.g. a diffusers checkpoint's `scheduler/scheduler_config.json`, or
        from a folder holding one: the scheduler's folder, or a pipeline's (its `scheduler/`),
        as diffusers' `from_pretrained` takes them.

        Parameters
        ----------
        path : str or path-like
            The file, or a folder with `scheduler_config.json` or
            `scheduler/scheduler_config.json`.

        Returns
        -------
        DDIMConfig

        Raises
        ------
        TypeError
            `path` is not a str or path-like.
        OSError
            The file cannot be read; FileNotFoundError for a folder without either file.
        ValueError
            Its content is not one JSON object of valid options, or the file is larger than a
            config can be (found before it is read: a model's weights given by mistake).

        Examples
        --------
        >>> import tempfile, os
        >>> folder = tempfile.mkdtemp()
        >>> path = os.path.join(folder, "scheduler_config.json")
        >>> _ = DDIMConfig(steps_offset=1).to_json(path)
        >>> DDIMConfig.from_file(path).steps_offset, DDIMConfig.from_file(folder).steps_offset
        (1, 1)
        """
        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        if os.path.isdir(path):
            path = _config_in(os.fspath(path))
        limit = 4 * JSON_MAX_BYTES + 3  # UTF-8: at most 4 bytes a character, and a BOM
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            data = b"" if size > limit else f.read(limit + 1)  # (a pipe: no size, read so far)
        if max(size, len(data)) > limit:
            raise ValueError(
                f"{path} is {max(size, len(data))} bytes; a config is at most {JSON_MAX_BYTES} "
                "characters (a scheduler_config.json, not a model's weights)"
            )
        return cls.from_dict(load_json_object(data, str(path)))


def _config_in(folder: str) -> str:
    """The scheduler_config.json of a scheduler's folder or of a pipeline's (its scheduler/)."""
    tried = [os.path.join(folder, *parts, CONFIG_NAME) for parts in ((), ("scheduler",))]
    for candidate in tried:
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(
        f"{folder} is a folder without a scheduler config: neither {tried[0]} nor {tried[1]} exists"
    )


CONFIG_NAME = "scheduler_config.json"  # diffusers' name, in a scheduler's folder

# Bounds for configuration files: a scheduler config is a flat object of a few dozen keys.
JSON_MAX_BYTES = 1 << 25  # to_json of 10**6 trained_betas fits: at most 29 characters a beta
JSON_MAX_DEPTH = 32
JSON_MAX_DIGITS = 64


def load_json_object(text: str | bytes, where: str) -> dict[str, Any]:
    """Parse configuration JSON safely: one object, at most JSON_MAX_BYTES characters,
    nested at most JSON_MAX_DEPTH deep, integers of at most JSON_MAX_DIGITS digits; a UTF-8
    BOM is allowed. Nothing in it is executed or followed (a string is never read as a path
    to another file).

    Parameters
    ----------
    text : str or bytes
        The JSON text.
    where : str
        What the text is, for error messages (a file name).

    Returns
    -------
    dict
        The object's keys and values.

    Raises
    ------
    TypeError
        `text` is not str or bytes.
    ValueError
        Not UTF-8, too large, too deep, not JSON, or not one object.

    Examples
    --------
    >>> load_json_object('{"steps_offset": 1}', "example")
    {'steps_offset': 1}
    >>> load_json_object("[1, 2]", "example")
    Traceback (most recent call last):
    ValueError: example must hold a JSON object of options, got list
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise ValueError(f"{where} is not UTF-8 text: {e}") from None
    if not isinstance(text, str):
        raise TypeError(f"{where} must be JSON text (str or bytes), got {type(text).__name__}")
    text = text.removeprefix("\ufeff")
    if len(text) > JSON_MAX_BYTES:
        raise ValueError(f"{where} is {len(text)} characters; a config is at most {JSON_MAX_BYTES}")
    if _depth(text) > JSON_MAX_DEPTH:
        raise ValueError(f"{where} nests deeper than {JSON_MAX_DEPTH} levels; a config is flat")

    def parse_int(digits: str) -> int:
        if len(digits.lstrip("-")) > JSON_MAX_DIGITS:
            raise ValueError(f"{where} holds an integer of {len(digits)} digits")
        return int(digits)

    try:
        data = json.loads(text, parse_int=parse_int)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{where} is not valid JSON ({e}); from_json takes JSON text, from_file a path"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(f"{where} must hold a JSON object of options, got {type(data).__name__}")
    return data


def _depth(text: str) -> int:
    """The deepest nesting of [ and { outside strings (checked before parsing: json's own
    recursion would fail with RecursionError far deeper)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            escaped, in_string = (False, True) if escaped else (ch == "\\", ch != '"')
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _options_section(cls: type[DDIMConfig]) -> str:
    """The options part of `help(DDIMConfig)`, written from the field declarations."""
    rows = []
    for f in dataclasses.fields(cls):
        indent = " " * 8
        doc = textwrap.fill(
            f.metadata["doc"],
            92,
            initial_indent=indent,
            subsequent_indent=indent,
            break_long_words=False,
            break_on_hyphens=False,
        )
        rows.append(f"    {f.name}: {f.type} = {f.default!r}\n{doc}")
    return "Options (name: type = default):\n\n" + "\n".join(rows)


DDIMConfig.__doc__ = f"{(DDIMConfig.__doc__ or '').rstrip()}\n\n{_options_section(DDIMConfig)}\n"
