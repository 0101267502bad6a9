"""DDIMConfig: defaults, validation, JSON in diffusers' keys, Bumblebee aliases, option docs."""

from __future__ import annotations

import dataclasses
import json
import pydoc
import warnings

import numpy as np
import pytest

from ddim_core import DDIMConfig, make_plan
from ddim_core.config import TIMESTEP_SPACINGS, check_bool, check_int


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


def test_trained_betas_as_a_tensor_are_read_once() -> None:
    """A scheduler's betas tensor with autograd on (a learned schedule) as trained_betas: read
    value by value, with torch's UserWarning 'Converting a tensor with requires_grad=True to
    a scalar may lead to unexpected behavior' (an error where warnings are errors), and on an
    accelerator with one device sync a value; now read to the host once."""
    torch = pytest.importorskip("torch")
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = DDIMConfig(trained_betas=betas)
    assert config.trained_betas == tuple(betas.detach().numpy().tolist())


class _SeriesLike:
    """What a pandas Series shows: dtype, shape, iteration, __array__ and a get(key)."""

    def __init__(self, values: np.ndarray) -> None:
        self.values, self.dtype, self.shape = values, values.dtype, values.shape

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.values)

    def __array__(self, dtype=None, copy=None):  # type: ignore[no-untyped-def]
        return self.values if dtype is None else self.values.astype(dtype)

    def get(self, key, default=None):  # type: ignore[no-untyped-def]
        return default


def test_trained_betas_with_a_get_method_are_not_taken_for_cupy() -> None:
    """A pandas Series of betas (dtype, shape and a get(key) method) went through
    backends.to_host since efdfbda, which took anything with a `get` for a CuPy array and
    called get(): TypeError "get() missing 1 required positional argument: 'key'", naming
    neither trained_betas nor the cause, where the Series was read before."""
    betas = np.linspace(1e-4, 0.02, 1000)
    assert DDIMConfig(trained_betas=_SeriesLike(betas)).trained_betas == tuple(betas.tolist())


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
    assert DDIMConfig.from_file(tmp_path / "scheduler_config.json") == c
    assert DDIMConfig.from_file(str(tmp_path / "scheduler_config.json")) == c
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


def test_bumblebee_step_options_are_named_with_where_they_go() -> None:
    # Bumblebee's eta and rederive_noise (= diffusers' use_clipped_model_output) are step
    # options here: the warning says so instead of calling Bumblebee's own keys unknown.
    data = {"num_train_steps": 500, "eta": 0.5, "rederive_noise": True, "skip_prk_steps": True}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        c = DDIMConfig.from_dict(data)
    assert c == DDIMConfig(num_train_timesteps=500)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2, messages
    unknown = next(m for m in messages if "unknown" in m)
    assert "skip_prk_steps" in unknown
    assert "eta" not in unknown and "rederive_noise" not in unknown
    steps = next(m for m in messages if "unknown" not in m)
    assert "eta=0.5" in steps and "rederive_noise=True" in steps
    assert "use_clipped_model_output=True" in steps and "functional.Scheduler" in steps


@pytest.mark.parametrize(
    "options",
    [{"eta": 0.0}, {"eta": 0}, {"rederive_noise": False}, {"eta": 0.0, "rederive_noise": False}],
)
def test_bumblebee_step_options_at_their_defaults_are_read_silently(options: dict) -> None:
    # Bumblebee's defaults are the per-call defaults here: nothing to pass, nothing to say
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert DDIMConfig.from_dict({"num_train_steps": 500, **options}) == DDIMConfig(
            num_train_timesteps=500
        )


@pytest.mark.parametrize("options", [{"eta": 1e-3}, {"eta": False}, {"rederive_noise": 0}])
def test_bumblebee_step_options_off_their_defaults_still_warn(options: dict) -> None:
    with pytest.warns(UserWarning, match="step options"):
        DDIMConfig.from_dict(options)


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        (
            {"alpha_clip_strategy": ":ones"},
            ValueError,
            r"^alpha_clip_strategy=':ones' is not supported; choose one of :one, :alpha_zero",
        ),
        ({"alpha_clip_strategy": 1}, TypeError, r"^alpha_clip_strategy=1 .* :one, :alpha_zero"),
        ({"num_train_steps": 0}, ValueError, r"^num_train_steps must be in \[1, 1000000\], got 0"),
        ({"num_train_steps": 10.0}, TypeError, r"^num_train_steps must be an integer, got 10.0"),
        ({"timesteps_offset": -1}, ValueError, r"^timesteps_offset must be >= 0, got -1"),
        ({"clip_denoised_sample": "yes"}, TypeError, r"^clip_denoised_sample must be True or"),
        (
            {"beta_schedule": ":cosine"},
            ValueError,
            r"^beta_schedule=':cosine' is not supported; choose one of .*'linear'.*:quadratic",
        ),
        ({"prediction_type": ":nois"}, ValueError, r"^prediction_type=':nois' .*:noise"),
        ({"timestep_spacing": ":uniform"}, ValueError, r"^timestep_spacing=':uniform' .*trailing"),
        (
            {"num_train_steps": 500, "num_train_timesteps": 1000},
            ValueError,
            r"^num_train_steps=500 and num_train_timesteps=1000 both set num_train_timesteps",
        ),
        (
            {"alpha_clip_strategy": ":alpha_zero", "set_alpha_to_one": True},
            ValueError,
            r"^alpha_clip_strategy=':alpha_zero' and set_alpha_to_one=True both set",
        ),
        (
            {"num_train_steps": 10, "trained_betas": [0.1] * 5},
            ValueError,
            r"num_train_timesteps is 10; .*\(num_train_timesteps is num_train_steps here\)$",
        ),
    ],
)
def test_bumblebee_keys_and_atoms_are_named_as_written(data, error, match) -> None:
    """A bad value under Bumblebee's key or as an atom was named by diffusers' option and the
    value with its colon dropped ("set_alpha_to_one must be True or False, got 'ones'" for
    alpha_clip_strategy=":ones"), and two names of one option that disagreed were read as the
    later one, silently."""
    with pytest.raises(error, match=match):
        DDIMConfig.from_dict(data)


def test_bumblebee_keys_that_agree_with_diffusers_keys_are_read() -> None:
    data = {"num_train_steps": 500, "num_train_timesteps": 500, "alpha_clip_strategy": ":one"}
    data |= {"set_alpha_to_one": True, "clip_denoised_sample": False, "clip_sample": False}
    assert DDIMConfig.from_dict(data) == DDIMConfig(num_train_timesteps=500, clip_sample=False)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"beta_schedule": ":linear"}, DDIMConfig()),  # Bumblebee's default atom
        ({"beta_schedule": ":scaled_linear"}, DDIMConfig(beta_schedule="scaled_linear")),
        ({"beta_schedule": ":squaredcos_cap_v2"}, DDIMConfig(beta_schedule="squaredcos_cap_v2")),
        ({"prediction_type": ":v_prediction"}, DDIMConfig(prediction_type="v_prediction")),
        ({"timestep_spacing": ":trailing"}, DDIMConfig(timestep_spacing="trailing")),
    ],
)
def test_bumblebee_atoms_of_our_own_names(data, expected) -> None:
    assert DDIMConfig.from_dict(data) == expected


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"beta_schedule": "cosine"}, ValueError, "beta_schedule='cosine'.*linear"),
        ({"prediction_type": "eps"}, ValueError, "prediction_type='eps'.*v_prediction"),
        ({"timestep_spacing": "uniform"}, ValueError, "timestep_spacing='uniform'.*trailing"),
        ({"prev_timestep": "next"}, ValueError, "prev_timestep='next'"),
        (
            {"num_train_timesteps": 0},
            ValueError,
            r"num_train_timesteps must be in \[1, 1000000\], got 0",
        ),
        ({"num_train_timesteps": 10.0}, TypeError, "num_train_timesteps must be an integer"),
        ({"steps_offset": -1}, ValueError, "steps_offset must be >= 0, got -1"),
        ({"clip_sample": "yes"}, TypeError, "clip_sample must be True or False"),
        ({"beta_start": 0.0}, ValueError, r"beta_start must be in \(0.0, 1.0\)"),
        ({"beta_end": float("nan")}, ValueError, "beta_end"),
        ({"clip_sample_range": -1.0}, ValueError, "clip_sample_range"),
        ({"dynamic_thresholding_ratio": 1.5}, ValueError, "dynamic_thresholding_ratio"),
        ({"dynamic_thresholding_ratio": -0.1}, ValueError, r"dynamic_thresholding_ratio .*\[0"),
        ({"trained_betas": [1.0, 0.5]}, ValueError, r"trained_betas\[0\]=1.0: only the last"),
        ({"trained_betas": [0.5, 1.5]}, ValueError, r"trained_betas\[1\]=1.5 .* \(0, 1\]"),
        ({"trained_betas": []}, ValueError, "trained_betas must be a non-empty"),
        ({"trained_betas": "0.1"}, TypeError, "trained_betas"),
        # a set has no order: its betas would be taken in hash order, a wrong schedule
        (
            {"trained_betas": set(np.linspace(1e-4, 0.02, 1000).tolist())},
            TypeError,
            "trained_betas must be a sequence of floats or None, got set",
        ),
        ({"trained_betas": [0.1] * 10}, ValueError, "trained_betas has 10 values"),
    ],
)
def test_bad_options_are_named(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        DDIMConfig(**kwargs)


def test_from_dict_rejects_non_mapping() -> None:
    with pytest.raises(TypeError, match="mapping"):
        DDIMConfig.from_dict([("beta_start", 0.1)])  # type: ignore[arg-type]


def test_every_option_is_declared_once_with_a_check_and_a_doc() -> None:
    fields = dataclasses.fields(DDIMConfig)
    assert [name for name, _, _ in DDIMConfig.options()] == [f.name for f in fields]
    for f, (name, default, doc) in zip(fields, DDIMConfig.options(), strict=True):
        assert callable(f.metadata["check"]), name
        assert isinstance(doc, str) and doc.strip() and "\n" not in doc, name
        assert default == f.default
        assert f.metadata["check"](name, default) == default  # every default passes its check
    assert dict((n, d) for n, d, _ in DDIMConfig.options()) == DDIMConfig().to_dict()


@pytest.mark.parametrize(
    "text", [DDIMConfig.__doc__, pydoc.render_doc(DDIMConfig, renderer=pydoc.plaintext)]
)
def test_help_lists_every_option_with_its_description(text: str | None) -> None:
    def words(s: str) -> str:  # ignore line wrapping and pydoc's " |  " margin
        return " ".join(s.replace("|", " ").split())

    assert text is not None
    for f in dataclasses.fields(DDIMConfig):
        entry = f"{f.name}: {f.type} = {f.default!r} {f.metadata['doc']}"
        assert words(entry) in words(text), f.name


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(DDIMConfig)])
def test_every_option_runs_its_check(name: str) -> None:
    with pytest.raises(TypeError, match=name):
        DDIMConfig(**{name: object()})


def test_option_docs_say_what_they_mean() -> None:
    docs = {name: doc for name, _, doc in DDIMConfig.options()}
    assert "[-clip_sample_range, clip_sample_range]" in docs["clip_sample"]
    assert "t - num_train_timesteps // num_inference_steps" in docs["prev_timestep"]
    for name, values in [
        ("beta_schedule", ("linear", "scaled_linear", "squaredcos_cap_v2")),
        ("prediction_type", ("epsilon", "sample", "v_prediction")),
        ("timestep_spacing", ("leading", "trailing", "linspace")),
        ("prev_timestep", ("plan", "stride")),
    ]:
        assert all(f'"{value}"' in docs[name] for value in values), name


@pytest.mark.parametrize("value", [1, 7, np.int64(7), np.uint8(7), np.int32(-3)])
def test_check_int_accepts_integers_and_returns_int(value) -> None:
    out = check_int("n", value)
    assert type(out) is int and out == int(value)


@pytest.mark.parametrize(
    "value", [True, False, np.bool_(True), 1.0, np.float64(1.0), "1", None, 1j]
)
def test_check_int_rejects_non_integers(value) -> None:
    with pytest.raises(TypeError, match=r"^n must be an integer, got "):
        check_int("n", value)


@pytest.mark.parametrize(
    ("kwargs", "value", "message"),
    [
        ({"low": 1}, 0, "n must be >= 1, got 0"),
        ({"low": 0}, np.int64(-2), "n must be >= 0, got -2"),
        ({"high": 10}, 11, "n must be <= 10, got 11"),
        ({"low": 1, "high": 10}, 0, r"n must be in \[1, 10\], got 0"),
        ({"low": 1, "high": 10}, 11, r"n must be in \[1, 10\], got 11"),
    ],
)
def test_check_int_out_of_range_names_value_and_range(kwargs, value, message) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        check_int("n", value, **kwargs)


def test_check_int_bounds_are_inclusive() -> None:
    assert check_int("n", 1, low=1, high=10) == 1
    assert check_int("n", 10, low=1, high=10) == 10
    assert check_int("n", 5, low=5, high=5) == 5


def test_check_bool_accepts_only_bools() -> None:
    assert check_bool("flag", True) is True and check_bool("flag", False) is False
    for value in (1, 0, "yes", None, np.bool_(True)):
        with pytest.raises(TypeError, match="flag must be True or False"):
            check_bool("flag", value)


@pytest.mark.parametrize("spacing", TIMESTEP_SPACINGS)
def test_steps_offset_doc_names_the_spacings_it_moves(spacing: str) -> None:
    """The steps_offset option said it moves the "leading" spacing's timesteps, where
    make_plan adds it to the "quadratic" spacing's too (as timestep_spacing's doc says)."""
    doc = {name: doc for name, _, doc in DDIMConfig.options()}["steps_offset"]
    base = DDIMConfig(timestep_spacing=spacing)
    moved = make_plan(base.replace(steps_offset=1), 10).timesteps != make_plan(base, 10).timesteps
    added = doc.partition(" spacings, not to ")[0]
    assert (f'"{spacing}"' in added) == moved and f'"{spacing}"' in doc, doc


def test_integer_options_take_numpy_integers_as_int() -> None:
    c = DDIMConfig(num_train_timesteps=np.int64(500), steps_offset=np.int32(1))
    assert type(c.num_train_timesteps) is int and type(c.steps_offset) is int
    assert c == DDIMConfig(num_train_timesteps=500, steps_offset=1)


def test_replace_validates_again() -> None:
    with pytest.raises(ValueError, match="steps_offset must be >= 0"):
        DDIMConfig().replace(steps_offset=-1)


def test_legacy_set_alpha_to_zero_is_read_as_diffusers_reads_it() -> None:
    """A DDIMInverseScheduler config saved by diffusers < 0.18 has `set_alpha_to_zero`, which
    diffusers' DDIMInverseScheduler reads as set_alpha_to_one (FutureWarning): the core reads it
    the same way, where it ignored it (set_alpha_to_one left True: another end level)."""
    old = {"_class_name": "DDIMInverseScheduler", "set_alpha_to_zero": False}
    with pytest.warns(FutureWarning, match=r"set_alpha_to_zero=False .* set_alpha_to_one=False"):
        config = DDIMConfig.from_dict(old)
    assert config.set_alpha_to_one is False
    with pytest.warns(FutureWarning):  # it wins over set_alpha_to_one, as in diffusers
        assert DDIMConfig.from_dict({**old, "set_alpha_to_one": True}).set_alpha_to_one is False
    with pytest.warns(FutureWarning), pytest.raises(TypeError, match="set_alpha_to_zero"):
        DDIMConfig.from_dict({"set_alpha_to_zero": "no"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # None: as if absent, as in diffusers
        assert DDIMConfig.from_dict({"set_alpha_to_zero": None}).set_alpha_to_one is True


def test_from_file_takes_a_scheduler_or_pipeline_folder(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A folder, as diffusers' from_pretrained takes it (the scheduler's, or a pipeline's with
    its scheduler/), gave IsADirectoryError; a folder without a config says which files it
    looked for."""
    c = DDIMConfig(steps_offset=1, timestep_spacing="trailing")
    (tmp_path / "scheduler").mkdir()
    c.to_json(tmp_path / "scheduler" / "scheduler_config.json")
    assert DDIMConfig.from_file(tmp_path) == c  # the pipeline's folder
    assert DDIMConfig.from_file(str(tmp_path / "scheduler")) == c  # the scheduler's
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty .*scheduler_config\.json.*scheduler"):
        DDIMConfig.from_file(tmp_path / "empty")


def test_from_file_refuses_a_file_too_large_before_reading_it(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A model's weights given for the config (`unet/diffusion_pytorch_model.safetensors`, GBs)
    were read whole into memory before the size check; the file's size is checked first."""
    import ddim_core.config as config_module

    monkeypatch.setattr(config_module, "JSON_MAX_BYTES", 100)
    big = tmp_path / "weights.safetensors"
    big.write_bytes(b"\0" * 1000)
    reads: list[int] = []
    real_open = open

    def recording_open(path, mode="r", *args, **kwargs):  # type: ignore[no-untyped-def]
        f = real_open(path, mode, *args, **kwargs)
        read = f.read
        f.read = lambda n=-1: reads.append(n) or read(n)  # type: ignore[method-assign]
        return f

    monkeypatch.setattr("builtins.open", recording_open)
    with pytest.raises(
        ValueError, match=r"weights\.safetensors is 1000 bytes; a config is at most 100"
    ):
        DDIMConfig.from_file(big)
    assert reads == []
    small = tmp_path / "scheduler_config.json"
    small.write_text('{"steps_offset": 2}')
    assert DDIMConfig.from_file(small).steps_offset == 2
    assert reads == [404]  # 4 bytes a character at most, a BOM, and one more


def test_to_json_of_the_largest_trained_betas_fits_what_from_json_reads() -> None:
    """to_json of num_train_timesteps = MAX_TRAIN_TIMESTEPS trained betas (26 MB for a linear
    range) was longer than the JSON_MAX_BYTES that from_json / from_file read, so such a config
    did not read back. Measured per beta on a small config with the longest repr a beta in
    (0, 1) has, and extrapolated (the full size takes seconds to write and parse)."""
    from ddim_core.config import JSON_MAX_BYTES, MAX_TRAIN_TIMESTEPS

    longest = 2.2250738585072014e-308  # 23 characters, as long as a float's repr gets here

    def size(n: int) -> int:
        config = DDIMConfig(num_train_timesteps=n, trained_betas=[longest] * n)
        return len(config.to_json())

    per_beta = size(3) - size(2)
    assert size(2) + (MAX_TRAIN_TIMESTEPS - 2) * per_beta <= JSON_MAX_BYTES
