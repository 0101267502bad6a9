"""ddim_diffusers against the installed diffusers: interface, config files, registry, numbers
(the adapter's add_noise / get_velocity: test_parity_diffusers.py).

Tolerances (tests/parity.py): float64 runs give both schedulers diffusers' float32 alpha_bar
table cast to float64 and must agree to 1e-10; float32 runs use each side's own table and must
agree to 1e-5 * (1 + |diffusers|), up to diffusers' own float32 error where the single-step
test measures it.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import TOLERANCE, assert_defines_every_name_of, reference_path, rel

import ddim_core as dc

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
import ddim_diffusers as dd  # noqa: E402
from parity import FLOAT64_LIMIT, assert_parity, cases, diffusers_config, share_tables  # noqa: E402

CLASSES = [
    (dd.DDIMScheduler, diffusers.DDIMScheduler),
    (dd.DDIMInverseScheduler, diffusers.DDIMInverseScheduler),
]


def _mixture(config: dict) -> tuple[dc.GaussianMixture, object]:
    """The analytic mixture of the numbers tests, and its model called with diffusers' t."""
    gm = dc.GaussianMixture.create([[0.5] * 4, [-0.5] * 4], [0.4, 0.6], dc.DDIMConfig(**config))
    return gm, lambda x, t: gm(x, int(t))


# --- interface ---------------------------------------------------------------------------


@pytest.mark.parametrize(("ours", "theirs"), CLASSES)
def test_same_constructor_arguments_and_defaults(ours, theirs) -> None:  # type: ignore[no-untyped-def]
    mine = inspect.signature(ours.__init__).parameters
    for name, p in inspect.signature(theirs.__init__).parameters.items():
        assert name in mine, name
        assert mine[name].default == p.default, name
    assert set(mine) - set(inspect.signature(theirs.__init__).parameters) == {"prev_timestep"}
    assert issubclass(ours, diffusers.SchedulerMixin) and issubclass(ours, diffusers.ConfigMixin)
    for method in ("set_timesteps", "step", "scale_model_input", "__len__"):
        their_params = inspect.signature(getattr(theirs, method)).parameters
        assert (
            list(their_params)
            == list(inspect.signature(getattr(ours, method)).parameters)[: len(their_params)]
        ), method


@pytest.mark.parametrize(("ours", "theirs"), CLASSES)
def test_subclass_of_diffusers_class_running_none_of_its_code(ours, theirs) -> None:  # type: ignore[no-untyped-def]
    """Ours subclass diffusers' classes, so pipelines that test `isinstance(scheduler,
    DDIMScheduler)` (LEdits++, Bria) take them for one; every name diffusers' class defines
    itself (methods, properties, `order`, `_compatibles`, ...) is defined by a class before it
    in ours' MRO, so no attribute lookup reaches diffusers' scheduler code."""
    assert_defines_every_name_of(ours, theirs)


@pytest.mark.parametrize(("ours", "theirs"), CLASSES)
def test_same_attributes_before_and_after_set_timesteps(ours, theirs) -> None:  # type: ignore[no-untyped-def]
    a, b = ours(), theirs()
    assert (a.order, a.init_noise_sigma, a.num_inference_steps, len(a)) == (
        b.order,
        b.init_noise_sigma,
        b.num_inference_steps,
        len(b),
    )
    assert a._compatibles == theirs._compatibles
    assert torch.equal(a.timesteps, b.timesteps)
    for name in ("betas", "alphas", "alphas_cumprod"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype == torch.float32
        # float32 rounding of a 1000-term cumulative product: T * u relative (ours is exact).
        assert torch.allclose(x, y, rtol=1000 * 2**-24, atol=0), name
    boundary = "final_alpha_cumprod" if ours is dd.DDIMScheduler else "initial_alpha_cumprod"
    assert float(getattr(a, boundary)) == float(getattr(b, boundary))
    a.set_timesteps(50, device="cpu")
    b.set_timesteps(50, device="cpu")
    assert torch.equal(a.timesteps, b.timesteps) and a.num_inference_steps == 50
    x = torch.randn(1, 3, 4, 4)
    assert a.scale_model_input(x, 5) is x


def test_private_members_published_code_calls() -> None:
    a, b = dd.DDIMScheduler(set_alpha_to_one=False), diffusers.DDIMScheduler(set_alpha_to_one=False)
    share_tables(a, b)  # diffusers' float32 arithmetic loses 1.6e-4 relative at (20, 0)
    for t, prev in ((999, 979), (500, 480), (20, 0), (10, -10)):
        ours, theirs = a._get_variance(t, prev), b._get_variance(t, prev)
        assert ours.dtype == theirs.dtype == torch.float64  # the table's dtype (shared: float64)
        assert float(ours) == pytest.approx(float(theirs), rel=2**-23)
    own = dd.DDIMScheduler()._get_variance(500, 480)
    assert own.dtype == diffusers.DDIMScheduler()._get_variance(500, 480).dtype == torch.float32
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 3
    cfg = {"thresholding": True, "sample_max_value": 2.0, "dynamic_thresholding_ratio": 0.9}
    a, b = dd.DDIMScheduler(**cfg), diffusers.DDIMScheduler(**cfg)
    assert torch.allclose(a._threshold_sample(x), b._threshold_sample(x), rtol=1e-6, atol=1e-6)


def test_step_before_set_timesteps_raises_diffusers_error() -> None:
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError) as theirs:
        diffusers.DDIMScheduler().step(x, 10, x)
    for cls in (dd.DDIMScheduler, dd.DDIMInverseScheduler):
        with pytest.raises(ValueError) as ours:
            cls().step(x, 10, x)
        assert str(ours.value) == str(theirs.value)


def test_configuration_on_the_meta_device_names_its_argument() -> None:
    """set_timesteps(timesteps=...), an assigned alphas_cumprod or final_alpha_cumprod and
    trained_betas on torch's meta device (shapes, no values) raised torch's
    NotImplementedError 'Cannot copy out of meta tensor; no data!' from inside the host read,
    naming neither the argument nor its device."""
    torch = pytest.importorskip("torch")
    scheduler = dd.DDIMScheduler()
    with pytest.raises(ValueError, match="timesteps is on device 'meta', whose values the host"):
        scheduler.set_timesteps(timesteps=torch.tensor([900, 500], device="meta"))
    table = torch.linspace(0.99, 0.01, 1000, device="meta")
    with pytest.raises(ValueError, match="alphas_cumprod is on device 'meta', whose values"):
        scheduler.alphas_cumprod = table
    with pytest.raises(ValueError, match="final_alpha_cumprod is on device 'meta', whose"):
        scheduler.final_alpha_cumprod = torch.tensor(1.0, device="meta")
    with pytest.raises(ValueError, match="initial_alpha_cumprod is on device 'meta', whose"):
        dd.DDIMInverseScheduler().initial_alpha_cumprod = torch.tensor(1.0, device="meta")
    with pytest.raises(TypeError, match="trained_betas must be a 1-D sequence of floats: it is on"):
        dd.DDIMScheduler(trained_betas=torch.full((1000,), 0.01, device="meta"))


def test_custom_timesteps_in_the_wrong_order_name_the_order_each_class_runs() -> None:
    forward, inverse = dd.DDIMScheduler(), dd.DDIMInverseScheduler()
    forward.set_timesteps(timesteps=[900, 500, 100])
    inverse.set_timesteps(timesteps=[100, 500, 900])  # the order the inverse loop runs
    assert inverse.timesteps.tolist() == [100, 500, 900]
    with pytest.raises(ValueError, match=r"strictly decreasing, got \[100, 500, 900\]"):
        forward.set_timesteps(timesteps=[100, 500, 900])
    with pytest.raises(ValueError, match=r"strictly increasing, got \[900, 500, 100\]"):
        inverse.set_timesteps(timesteps=[900, 500, 100])
    with pytest.raises(ValueError, match=r"strictly increasing, got \[5, 5\]"):
        inverse.set_timesteps(timesteps=[5, 5])


@pytest.mark.parametrize("cls", ["DDIMScheduler", "DDIMInverseScheduler"])
@pytest.mark.parametrize("timesteps", [{1, 2, 3}, frozenset({1, 2, 3}), {900: 0, 100: 0}])
def test_custom_timesteps_without_an_order_are_refused(cls: str, timesteps: object) -> None:
    """A set or a mapping of timesteps has no order of its own, and dc.make_plan refuses one;
    set_timesteps(timesteps=...) took it in iteration order (hash order for a set: {1, 2, 3}
    ran as [1, 2, 3], {100, 500, 900} raised 'strictly decreasing, got [100, 900, 500]')."""
    scheduler = getattr(dd, cls)()
    with pytest.raises(TypeError, match="timesteps must be a sequence of integers, got"):
        scheduler.set_timesteps(timesteps=timesteps)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"beta_schedule": "cubic"}, NotImplementedError),
        ({"num_train_timesteps": "1000"}, TypeError),
    ],
)
def test_bad_constructor_arguments_raise_like_diffusers(kwargs: dict, error: type) -> None:
    for ours, theirs in CLASSES:
        with pytest.raises(error):
            theirs(**kwargs)
        with pytest.raises(error, match=next(iter(kwargs))):
            ours(**kwargs)


@pytest.mark.parametrize(
    "unread", [{"beta_schedule": "cubic"}, {"beta_start": -1.0, "beta_end": 2.0}]
)
@pytest.mark.parametrize(("ours_cls", "theirs_cls"), CLASSES)
def test_schedule_options_beside_trained_betas_are_not_read(ours_cls, theirs_cls, unread) -> None:  # type: ignore[no-untyped-def]
    """With trained_betas, diffusers reads neither beta_schedule nor beta_start / beta_end
    (any value goes, as the NotImplementedError above says: "or pass trained_betas"); ours
    refused them all the same (ValueError: beta_schedule='cubic' is not supported). They are
    taken now, kept in the config as given, and the numbers are diffusers'."""
    betas = dc.schedule(dc.DDIMConfig(beta_schedule="scaled_linear")).betas.tolist()
    _assert_unread_and_stepping_like_diffusers(
        ours_cls, theirs_cls, {"trained_betas": betas}, unread
    )


@pytest.mark.parametrize(
    "unread", [{"beta_start": None, "beta_end": None}, {"beta_start": 0.0, "beta_end": 2.0}]
)
@pytest.mark.parametrize(("ours_cls", "theirs_cls"), CLASSES)
def test_beta_range_beside_the_cosine_schedule_is_not_read(ours_cls, theirs_cls, unread) -> None:  # type: ignore[no-untyped-def]
    """squaredcos_cap_v2 has no beta range: diffusers reads neither beta_start nor beta_end
    with it (any value goes, None included); ours refused a value it would refuse for a
    linear schedule (TypeError: beta_start must be a real number, got None; ValueError:
    beta_start must be in (0.0, 1.0), got 0.0). They are taken now, kept in the config as
    given, and the numbers are diffusers'; a linear schedule still refuses them."""
    cosine = {"beta_schedule": "squaredcos_cap_v2"}
    # alpha_bar falls to 2.4e-9: diffusers' float32 cumulative product drifts up to its T u
    # bound there (docs/accuracy.md; 1.3e-5 measured), ours is the cosine table exactly
    _assert_unread_and_stepping_like_diffusers(ours_cls, theirs_cls, cosine, unread, 1000 * 2**-24)
    assert torch.equal(
        ours_cls(**cosine, **unread).alphas_cumprod, ours_cls(**cosine).alphas_cumprod
    )
    with pytest.raises((TypeError, ValueError), match="beta_start must be"):
        ours_cls(**unread)


def _assert_unread_and_stepping_like_diffusers(  # type: ignore[no-untyped-def]
    ours_cls, theirs_cls, schedule, unread, rtol=1e-5
) -> None:
    """Options `unread` beside `schedule` are kept in the config as given, the table is
    diffusers' within `rtol`, and the steps are diffusers' (on diffusers' table)."""
    cfg = {**schedule, "clip_sample": False, **unread}
    ours, theirs = ours_cls(**cfg), theirs_cls(**cfg)
    for key, value in unread.items():
        assert ours.config[key] == theirs.config[key] == value
    # the table (float32 rounding apart, within rtol), then both on diffusers' table
    assert torch.allclose(ours.alphas_cumprod, theirs.alphas_cumprod, rtol=rtol, atol=0)
    share_tables(ours, theirs)
    ours.set_timesteps(10)
    theirs.set_timesteps(10)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for t in theirs.timesteps:
        assert_parity(ours.step(0.3 * x, t, x).prev_sample, theirs.step(0.3 * x, t, x).prev_sample)
    again = ours_cls.from_config(ours.config)
    assert again.config[next(iter(unread))] == next(iter(unread.values()))


ARGUMENT_ERRORS = [
    ((), {"clip_sampel": True}),  # an unknown option (DDIMInverseScheduler takes **kwargs)
    (tuple(range(20)), {}),  # too many positional arguments
    ((1,), {"num_train_timesteps": 3}),  # one option twice
]


@pytest.mark.parametrize(("args", "kwargs"), ARGUMENT_ERRORS)
def test_argument_errors_name_the_public_class(args: tuple, kwargs: dict) -> None:
    """DDIMScheduler(clip_sampel=True) said "ForwardScheduler.__init__() got an unexpected
    keyword argument", naming the internal class; diffusers names DDIMScheduler. Without
    diffusers (the stand-ins, as ddim_mindone's classes use without mindone) the message
    named no class. Now each names the class the user called, as diffusers does."""
    import ddim_mindone.schedulers as mindone  # its stand-ins fail before MindSpore is needed

    for ours in (*(c for c, _ in CLASSES), mindone.DDIMScheduler, mindone.DDIMInverseScheduler):
        try:
            getattr(diffusers, ours.__name__)(*args, **kwargs)
        except TypeError as e:
            want = str(e).split("(", 1)[0]  # diffusers' "DDIMScheduler.__init__"
        else:
            continue  # diffusers takes it (DDIMInverseScheduler's **kwargs): so do we
        with pytest.raises(TypeError, match=rf"^{want}\(\) (got|takes)"):
            ours(*args, **kwargs)


# --- config files and the registry -------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [diffusers.DDIMScheduler, diffusers.PNDMScheduler, diffusers.EulerDiscreteScheduler],
)
def test_from_config_of_any_diffusers_scheduler(source) -> None:  # type: ignore[no-untyped-def]
    theirs = source(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1
    )
    ours = dd.DDIMScheduler.from_config(theirs.config)
    assert (ours.config.beta_schedule, ours.config.steps_offset) == ("scaled_linear", 1)
    back = diffusers.DDIMScheduler.from_config(ours.config)
    assert back.config.beta_end == 0.012


@pytest.mark.parametrize(("ours", "theirs"), CLASSES)
def test_config_rewritten_after_construction_is_followed(ours, theirs) -> None:  # type: ignore[no-untyped-def]
    """StableDiffusionPipeline.__init__ (and ~20 other pipelines) rewrite an old scheduler
    config in place, steps_offset=1 and clip_sample=False, through `_internal_dict`; diffusers'
    scheduler reads its config at every set_timesteps and step, so it follows. Ours kept the
    constructor's options: other timesteps and a clipped x_0, silently."""
    from diffusers.configuration_utils import FrozenDict

    x = torch.full((1, 2), 3.0, dtype=torch.float64)
    results = []
    for cls in (ours, theirs):
        scheduler = cls()  # clip_sample=True, steps_offset=0, as old configs and scripts
        for key, value in (("steps_offset", 1), ("clip_sample", False)):
            new_config = dict(scheduler.config)  # pipeline_stable_diffusion.py, verbatim
            new_config[key] = value
            scheduler._internal_dict = FrozenDict(new_config)
        scheduler.set_timesteps(5)
        timesteps = scheduler.timesteps.tolist()
        first = scheduler.step(torch.zeros_like(x), scheduler.timesteps[0], x)
        scheduler.register_to_config(prediction_type="sample")  # after set_timesteps
        second = scheduler.step(x, scheduler.timesteps[1], x)
        results.append((timesteps, first.pred_original_sample, second.pred_original_sample))
    (ours_ts, ours_x0, ours_x0b), (theirs_ts, theirs_x0, theirs_x0b) = results
    assert ours_ts == theirs_ts == [801, 601, 401, 201, 1][:: -1 if ours._inverse else 1]
    assert float(theirs_x0b.max()) == 3.0  # sample prediction, unclipped
    assert torch.allclose(ours_x0, theirs_x0, rtol=1e-5) and float(ours_x0.max()) > 1.0
    assert torch.equal(ours_x0b, theirs_x0b)


@pytest.mark.parametrize(("ours", "theirs"), CLASSES)
def test_config_attribute_written_before_set_timesteps_is_followed(ours, theirs) -> None:  # type: ignore[no-untyped-def]
    """`scheduler.config.timestep_spacing = "leading"` (LEdits++'s invert() does it; so do
    scripts) replaces the config's attribute alone: diffusers' FrozenDict lets it through and
    its scheduler reads options as attributes, so it follows. Ours read the items: the
    constructor's timesteps and a clipped x_0, silently."""
    x = torch.full((1, 2), 3.0, dtype=torch.float64)
    results = []
    for cls in (ours, theirs):
        scheduler = cls()
        scheduler.config.timestep_spacing = "trailing"
        scheduler.config.clip_sample = False
        scheduler.set_timesteps(4)
        out = scheduler.step(torch.zeros_like(x), scheduler.timesteps[0], x)
        results.append((scheduler.timesteps.tolist(), out.pred_original_sample))
    (ours_ts, ours_x0), (theirs_ts, theirs_x0) = results
    assert ours_ts == theirs_ts == [999, 749, 499, 249][:: -1 if ours._inverse else 1]
    assert torch.allclose(ours_x0, theirs_x0, rtol=1e-5) and float(ours_x0.max()) > 1.0


def test_an_inverse_scheduler_ignores_forward_only_options_of_the_config() -> None:
    """DDIMInverseScheduler.from_config(pipe.scheduler.config) (DiffEdit's and Pix2Pix-Zero's
    docs) of a forward config with thresholding=True: diffusers keeps the options its inverse
    class does not take (thresholding, dynamic_thresholding_ratio, sample_max_value) in the
    config and ignores them. Ours read them back from the config and thresholded every
    inversion step's x_0: another inversion, silently."""
    forward = diffusers.DDIMScheduler(
        thresholding=True, sample_max_value=1.0, dynamic_thresholding_ratio=0.5
    )
    x = torch.full((1, 4, 2, 2), 3.0, dtype=torch.float64)
    results = []
    for cls in (dd.DDIMInverseScheduler, diffusers.DDIMInverseScheduler):
        scheduler = cls.from_config(forward.config, clip_sample=False)
        assert scheduler.config.thresholding  # kept in the config, as diffusers keeps it
        scheduler.set_timesteps(4)
        results.append(scheduler.step(torch.zeros_like(x), scheduler.timesteps[1], x))
    ours, theirs = results
    assert torch.allclose(ours.pred_original_sample, theirs.pred_original_sample, rtol=1e-5)
    assert torch.allclose(ours.prev_sample, theirs.prev_sample, rtol=1e-5)
    assert float(theirs.pred_original_sample.max()) > 1.0  # not thresholded


@pytest.mark.parametrize("cls", [dd.DDIMScheduler, dd.DDIMInverseScheduler])
def test_prev_timestep_registered_back_to_the_default_is_followed(cls) -> None:  # type: ignore[no-untyped-def]
    """register_to_config(prev_timestep="plan") on a "stride" scheduler was dropped (the
    default stays out of new configs), so the config and the steps stayed "stride"."""
    x = torch.full((1, 2), 0.5, dtype=torch.float64)
    scheduler = cls(prev_timestep="stride", timestep_spacing="trailing", clip_sample=False)
    scheduler.register_to_config(prev_timestep="plan")
    plan = cls(timestep_spacing="trailing", clip_sample=False)
    outputs = []
    for s in (scheduler, plan):
        s.set_timesteps(3)
        outputs.append(s.step(torch.zeros_like(x), s.timesteps[1], x).prev_sample)
    assert scheduler.config.get("prev_timestep", "plan") == "plan"
    assert torch.equal(outputs[0], outputs[1])


@pytest.mark.parametrize(("ours", "theirs"), CLASSES)
def test_a_step_before_set_timesteps_says_so_whatever_the_config(ours, theirs) -> None:  # type: ignore[no-untyped-def]
    """A step before set_timesteps raises the not-set ValueError first, as diffusers' does, also
    after the config was rewritten (here to an option ddim_core refuses): not the option's."""
    from ddim_diffusers._scheduling import NOT_SET
    from diffusers.configuration_utils import FrozenDict

    x = torch.zeros(1, 2)
    scheduler = ours()
    scheduler._internal_dict = FrozenDict({**scheduler.config, "clip_sample_range": -1.0})
    with pytest.raises(ValueError) as raised:
        scheduler.step(x, 1, x)
    assert str(raised.value) == NOT_SET


@pytest.mark.parametrize(("ours", "theirs"), CLASSES)
def test_tables_assigned_as_python_floats_or_lists_step_like_diffusers(ours, theirs) -> None:  # type: ignore[no-untyped-def]
    """`scheduler.final_alpha_cumprod = 0.5` (or a list as `alphas_cumprod`) is taken by
    diffusers' scheduler, which indexes it as it is; ours raised AttributeError ('float'
    object has no attribute 'dtype') from deep inside the setter."""
    boundary = "final_alpha_cumprod" if ours is dd.DDIMScheduler else "initial_alpha_cumprod"
    table = np.linspace(0.999, 0.01, 1000).tolist()
    x = torch.tensor([[0.5, -1.5]], dtype=torch.float64)
    results = []
    for cls in (ours, theirs):
        scheduler = cls(clip_sample=False, set_alpha_to_one=False)
        scheduler.set_timesteps(10)
        scheduler.alphas_cumprod = table
        setattr(scheduler, boundary, 0.9995)  # above alpha_bar_0: diffusers' step is finite
        t = scheduler.timesteps[-1 if ours is dd.DDIMScheduler else 0]  # the boundary step
        results.append(scheduler.step(0.1 * x, t, x).prev_sample)
    assert float(getattr(scheduler, boundary)) == pytest.approx(0.9995)
    assert torch.allclose(results[0], results[1], rtol=1e-6, atol=0)


@pytest.mark.parametrize(("ours", "theirs"), CLASSES)
@pytest.mark.parametrize("table_first", [True, False])
def test_tables_assigned_as_arrays_read_back_as_assigned(ours, theirs, table_first: bool) -> None:  # type: ignore[no-untyped-def]
    """diffusers keeps an `alphas_cumprod` or boundary level assigned as an array as it is, and
    published pipelines read them back with `_get_variance` (CycleDiffusion's posterior_sample
    and compute_noise, LEdits++'s compute_noise_ddim). Ours read back float32 tables (and a
    float32 variance), whatever was assigned: a float64 pipeline's numbers were rounded to
    float32 (1.7e-8 relative after CycleDiffusion's 4 steps, where diffusers' is exact)."""
    boundary = "final_alpha_cumprod" if ours is dd.DDIMScheduler else "initial_alpha_cumprod"
    table = theirs(set_alpha_to_one=False).alphas_cumprod.double() * (1 - 2**-30)
    level = table[0].clone()
    x = torch.tensor([[0.5, -1.5]], dtype=torch.float64)
    results = []
    for cls in (ours, theirs):
        scheduler = cls(clip_sample=False, set_alpha_to_one=False)
        scheduler.set_timesteps(10)
        assignments = [("alphas_cumprod", table), (boundary, level)]
        for name, value in assignments if table_first else assignments[::-1]:
            setattr(scheduler, name, value)
        assert scheduler.alphas_cumprod is table and getattr(scheduler, boundary) is level
        t = scheduler.timesteps[-1 if ours is dd.DDIMScheduler else 0]  # the boundary step
        step = scheduler.step(0.1 * x, t, x).prev_sample
        forward = cls is dd.DDIMScheduler  # (DDIMInverseScheduler has no _get_variance)
        variance = [scheduler._get_variance(900, p) for p in (800, -1)] if forward else []
        results.append((step, variance))
    (ours_step, ours_variance), (theirs_step, _) = results
    assert torch.allclose(ours_step, theirs_step, rtol=1e-12, atol=0)
    if ours is dd.DDIMScheduler:
        a = table[900]
        for variance, b in zip(ours_variance, (table[800], level), strict=True):
            assert variance.dtype == torch.float64  # as diffusers: the table's dtype
            exact = (1 - b) / (1 - a) * (1 - a / b)  # eq. (16) / eta^2
            assert float(variance) == pytest.approx(float(exact), rel=1e-14)


IN_PLACE = {  # what users and tools write into a scheduler's table
    "zero_terminal_snr": lambda table: table.__setitem__(-1, 0.0),
    "mul_": lambda table: table.mul_(0.9),
    "copy_": lambda table: table.copy_(torch.linspace(0.9999, 0.001, len(table))),
}


def _table_readers(scheduler, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[no-untyped-def]
    """Everything diffusers computes from `alphas_cumprod`: steps (the boundary's, a middle
    one, the one at t = 999) and, for DDIMScheduler, add_noise, get_velocity, _get_variance."""
    ts = scheduler.timesteps
    out = [scheduler.step(0.1 * x, t, x).prev_sample for t in (ts[0], ts[5], ts[-1])]
    if hasattr(scheduler, "final_alpha_cumprod"):
        t = torch.tensor([999, 500])
        out += [scheduler.add_noise(x, 0.1 * x, t), scheduler.get_velocity(x, 0.1 * x, t)]
        out += [scheduler._get_variance(999, 899), scheduler._get_variance(99, -1)]
    return out


@pytest.mark.parametrize(("ours", "theirs"), CLASSES)
@pytest.mark.parametrize("edit", list(IN_PLACE))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_table_written_in_place_steps_like_diffusers(ours, theirs, edit: str, dtype) -> None:  # type: ignore[no-untyped-def]
    """diffusers' scheduler indexes `alphas_cumprod` in every step, add_noise, get_velocity
    and _get_variance, so a write into the table (zero terminal SNR's `alphas_cumprod[-1] =
    0`, a `mul_`) applies from the next call. Ours read an assigned table when it was assigned
    and stepped on the old values after such a write (2e-2 relative off after `copy_`).
    Both schedulers here hold diffusers' table (float32), or its float64 copy, written once."""
    boundary = "final_alpha_cumprod" if ours is dd.DDIMScheduler else "initial_alpha_cumprod"
    config = {"clip_sample": False, "set_alpha_to_one": False, "timestep_spacing": "trailing"}
    a, b = (cls(**config, prediction_type="v_prediction") for cls in (ours, theirs))
    table, level = b.alphas_cumprod.to(dtype), getattr(b, boundary).to(dtype)
    x = torch.tensor([[0.5, -1.5], [1.0, 0.25]], dtype=dtype)
    for scheduler in (a, b):
        scheduler.set_timesteps(10)
        scheduler.alphas_cumprod = table
        setattr(scheduler, boundary, level)
    before = _table_readers(a, x)  # (ours has read the table and cached what it made of it)
    IN_PLACE[edit](table)
    limit = FLOAT64_LIMIT if dtype is torch.float64 else TOLERANCE["float32"]
    ours_after, theirs_after = _table_readers(a, x), _table_readers(b, x)
    for mine, expected in zip(ours_after, theirs_after, strict=True):
        assert mine.dtype == expected.dtype and rel(mine, expected) <= limit
    # (the write moved some output by more than the limit: the parity above sees it)
    assert any(rel(old, new) > limit for old, new in zip(before, ours_after, strict=True))


@pytest.mark.parametrize("cls", [dd.DDIMScheduler, dd.DDIMInverseScheduler])
@pytest.mark.parametrize("edit", list(IN_PLACE))
@pytest.mark.parametrize("one", [True, False])
def test_its_own_table_written_in_place_is_as_if_assigned(cls, edit: str, one: bool) -> None:  # type: ignore[no-untyped-def]
    """A write into the scheduler's own float32 table (none assigned) applies as well: the
    scheduler computes what it does with the written table assigned. As in diffusers, whose
    boundary level is a view `alphas_cumprod[0]` with set_alpha_to_one=False, a write into
    the first entry moves that level too."""
    boundary = "final_alpha_cumprod" if cls is dd.DDIMScheduler else "initial_alpha_cumprod"
    written, assigned = (
        cls(clip_sample=False, set_alpha_to_one=one, prediction_type="v_prediction")
        for _ in range(2)
    )
    x = torch.tensor([[0.5, -1.5], [1.0, 0.25]])
    for scheduler in (written, assigned):
        scheduler.set_timesteps(10)
    _table_readers(written, x)
    IN_PLACE[edit](written.alphas_cumprod)
    assigned.alphas_cumprod = written.alphas_cumprod.clone()
    setattr(assigned, boundary, getattr(written, boundary).clone())
    assert float(getattr(assigned, boundary)) == (1.0 if one else float(written.alphas_cumprod[0]))
    for mine, expected in zip(_table_readers(written, x), _table_readers(assigned, x), strict=True):
        assert torch.equal(mine, expected)


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copy_follows_writes_into_its_own_table(how: str) -> None:
    """A copied torch table starts a version counter of its own (at 1): after the original's
    table had been written 3 times, the copy's writes went unseen until its count passed 3."""
    import copy
    import pickle

    scheduler = dd.DDIMScheduler(clip_sample=False)
    scheduler.set_timesteps(10)
    x = torch.tensor([[0.5, -1.5]])
    for _ in range(3):
        scheduler.alphas_cumprod.mul_(1.0)
    scheduler.step(0.1 * x, 901, x)
    clone = copy.deepcopy(scheduler) if how == "deepcopy" else pickle.loads(pickle.dumps(scheduler))
    clone.alphas_cumprod.mul_(0.9)  # the clone's count: 1, 2, 3 (the original's when copied)
    clone.alphas_cumprod.mul_(1.0)
    expected = dd.DDIMScheduler(clip_sample=False)
    expected.set_timesteps(10)
    expected.alphas_cumprod = clone.alphas_cumprod.clone()
    got = clone.step(0.1 * x, 901, x).prev_sample
    assert torch.equal(got, expected.step(0.1 * x, 901, x).prev_sample)


def test_a_numpy_table_written_in_place_is_followed() -> None:
    """NumPy arrays keep no version counter: a NumPy table is compared by its bytes (4 KB) at
    each call instead."""
    scheduler = dd.DDIMScheduler(clip_sample=False, prediction_type="v_prediction")
    scheduler.set_timesteps(10)
    scheduler.alphas_cumprod = table = scheduler.alphas_cumprod.numpy().copy()
    x = np.array([[0.5, -1.5]], dtype=np.float32)
    step = scheduler.step(0.1 * x, 999 - 99, x).prev_sample
    table *= np.float32(0.9)
    expected = dd.DDIMScheduler(clip_sample=False, prediction_type="v_prediction")
    expected.set_timesteps(10)
    expected.alphas_cumprod = table.copy()
    again = scheduler.step(0.1 * x, 999 - 99, x).prev_sample
    assert np.array_equal(again, expected.step(0.1 * x, 999 - 99, x).prev_sample)
    assert not np.array_equal(again, step)


@pytest.mark.parametrize("cls", [dd.DDIMScheduler, dd.DDIMInverseScheduler])
@pytest.mark.parametrize("level", [1.5, -0.1, float("nan")])
def test_a_boundary_level_outside_0_1_is_refused(cls, level: float) -> None:  # type: ignore[no-untyped-def]
    """An alpha_bar past the ends of the table outside [0, 1] made every step through it NaN,
    silently (alphas_cumprod's setter refuses such values; the boundary's did not)."""
    boundary = "final_alpha_cumprod" if cls is dd.DDIMScheduler else "initial_alpha_cumprod"
    scheduler = cls()
    with pytest.raises(ValueError, match=f"{boundary} must be in \\[0, 1\\], got"):
        setattr(scheduler, boundary, torch.tensor(level))


@pytest.mark.parametrize(("ours", "theirs"), CLASSES)
def test_save_and_load_both_ways(ours, theirs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = {"timestep_spacing": "trailing", "prediction_type": "v_prediction", "clip_sample": False}
    ours(**cfg, prev_timestep="stride").save_pretrained(tmp_path / "ours")
    data = json.loads((tmp_path / "ours" / "scheduler_config.json").read_text())
    assert data["_class_name"] == theirs.__name__ and data["prev_timestep"] == "stride"
    loaded = theirs.from_pretrained(tmp_path / "ours")
    assert loaded.config.prediction_type == "v_prediction"
    theirs(**cfg).save_pretrained(tmp_path / "theirs")
    mine = ours.from_pretrained(tmp_path / "theirs")
    assert isinstance(mine, ours) and mine.config.timestep_spacing == "trailing"
    assert ours.from_pretrained(tmp_path / "ours").config.prev_timestep == "stride"


def test_config_values_from_disk_are_data(tmp_path: Path) -> None:
    (tmp_path / "scheduler_config.json").write_text(
        json.dumps({"beta_schedule": "__import__('os').system('touch pwned')"})
    )
    with pytest.raises(NotImplementedError, match="is not implemented"):
        dd.DDIMScheduler.from_pretrained(tmp_path)
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def test_register_makes_the_classes_loadable_by_name(tmp_path: Path) -> None:
    from ddim_core import plugins

    assert plugins.register_adapters("diffusers") == ["diffusers"]
    assert diffusers.DDIMCoreScheduler is dd.DDIMScheduler
    assert diffusers.schedulers.DDIMCoreInverseScheduler is dd.DDIMInverseScheduler
    assert dd.DDIMScheduler in diffusers.EulerDiscreteScheduler().compatibles
    plugins.register_adapters("diffusers")  # idempotent
    assert diffusers.DDIMScheduler._compatibles.count("DDIMCoreScheduler") == 1
    # DDPMPipeline keeps the scheduler it is given (DDIMPipeline converts to its own class)
    pipe = diffusers.DDPMPipeline(unet=_unet(), scheduler=dd.DDIMScheduler())
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["scheduler"] == ["ddim_diffusers", "DDIMScheduler"]
    assert isinstance(diffusers.DDPMPipeline.from_pretrained(tmp_path).scheduler, dd.DDIMScheduler)
    index["scheduler"] = ["diffusers", "DDIMCoreScheduler"]  # a config naming the alias
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    loaded = diffusers.DDPMPipeline.from_pretrained(tmp_path).scheduler
    assert isinstance(loaded, dd.DDIMScheduler)
    by_name = diffusers.DDIMCoreScheduler.from_pretrained(tmp_path, subfolder="scheduler")
    assert isinstance(by_name, dd.DDIMScheduler)


# --- numbers -----------------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["float64", "float32"])
@pytest.mark.parametrize("config", list(cases()))
def test_step_parity_every_core_config(config: dc.DDIMConfig, precision: str) -> None:
    float64 = precision == "float64"
    dtype = torch.float64 if float64 else torch.float32
    theirs = diffusers.DDIMScheduler(**diffusers_config(config))
    exact = diffusers.DDIMScheduler(**diffusers_config(config))
    ours = dd.DDIMScheduler(**diffusers_config(config), prev_timestep="stride")
    share_tables(ours, exact)
    if float64:
        share_tables(ours, theirs)
    for s in (theirs, exact, ours):
        s.set_timesteps(10)
    gen = torch.Generator().manual_seed(0)
    for t in theirs.timesteps:
        x, out, z = (torch.randn(2, 3, 4, 4, generator=gen, dtype=dtype) for _ in range(3))
        for eta, clipped in ((0.0, False), (1.0, True)):
            kw = {"eta": eta, "use_clipped_model_output": clipped, "variance_noise": z}
            mine = ours.step(out, t, x, **kw)
            if float64:
                assert_parity(mine.prev_sample, theirs.step(out, t, x, **kw).prev_sample)
                continue
            ref = exact.step(out.double(), t, x.double(), **{**kw, "variance_noise": z.double()})
            assert_parity(
                mine.prev_sample, theirs.step(out, t, x, **kw).prev_sample, ref.prev_sample
            )
            assert_parity(
                mine.pred_original_sample,
                theirs.step(out, t, x, **kw).pred_original_sample,
                ref.pred_original_sample,
            )


@pytest.mark.parametrize("precision", ["float64", "float32"])
@pytest.mark.parametrize(("ours_cls", "theirs_cls"), CLASSES)
def test_zero_snr_trained_betas_step_like_diffusers(ours_cls, theirs_cls, precision: str) -> None:  # type: ignore[no-untyped-def]
    """A table whose last beta is 1 (rescale_betas_zero_snr's, given as trained_betas) was
    refused: each beta had to be in (0, 1). diffusers takes it; so do we, with its numbers.
    Still refused, as in diffusers' own test file: beta_end = 2, 2 betas for 1000 steps."""
    core = dc.DDIMConfig(rescale_betas_zero_snr=True, timestep_spacing="trailing")
    betas = dc.schedule(core).betas.tolist()
    assert betas[-1] == 1.0
    cfg = {"trained_betas": betas, "timestep_spacing": "trailing", "clip_sample": False}
    cfg["prediction_type"] = "v_prediction"
    float64 = precision == "float64"
    dtype = torch.float64 if float64 else torch.float32
    theirs, exact = theirs_cls(**cfg), theirs_cls(**cfg)
    ours = ours_cls(**cfg, prev_timestep="stride")
    share_tables(ours, exact)
    if float64:
        share_tables(ours, theirs)
    for s in (theirs, exact, ours):
        s.set_timesteps(10)
    assert ours.timesteps.tolist() == theirs.timesteps.tolist()
    gen = torch.Generator().manual_seed(0)
    for t in theirs.timesteps:
        x, out = (torch.randn(2, 3, 4, 4, generator=gen, dtype=dtype) for _ in range(2))
        mine = ours.step(out, t, x).prev_sample
        if float64:
            assert_parity(mine, theirs.step(out, t, x).prev_sample)
            continue
        ref = exact.step(out.double(), t, x.double()).prev_sample
        assert_parity(mine, theirs.step(out, t, x).prev_sample, ref)
    with pytest.raises(ValueError, match="beta_end"):
        ours_cls(beta_end=2.0)
    with pytest.raises(ValueError, match="trained_betas has 2 values"):
        ours_cls(trained_betas=[0.1, 0.2])


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_zero_snr_epsilon_inverts_and_enters_below_999_like_diffusers(precision: str) -> None:
    """rescale_betas_zero_snr with epsilon prediction and trailing spacing: alpha_bar = 0 at
    999, where x_0 cannot be recovered. set_timesteps refused the whole plan, so
    DDIMInverseScheduler (whose last step goes up to 999: x_999 = eps) and img2img (which
    enters below 999) could not run, where diffusers' classes do. Now both step like
    diffusers, and only the step down from 999 is refused, by step, with the plan's message
    (diffusers returns inf there)."""
    cfg = {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing", "clip_sample": False}
    dtype = torch.float64 if precision == "float64" else torch.float32
    gen = torch.Generator().manual_seed(0)
    for ours_cls, theirs_cls in CLASSES:
        ours, theirs, exact = ours_cls(**cfg), theirs_cls(**cfg), theirs_cls(**cfg)
        share_tables(ours, exact)
        if precision == "float64":
            share_tables(ours, theirs)
        for s in (ours, theirs, exact):
            s.set_timesteps(5)
        assert ours.timesteps.tolist() == theirs.timesteps.tolist()
        inverse = ours_cls is dd.DDIMInverseScheduler
        x = torch.randn(2, 3, 4, 4, generator=gen, dtype=dtype)
        mine = x
        for t in theirs.timesteps[0 if inverse else 1 :]:  # forward: img2img's entry below 999
            out = torch.randn(2, 3, 4, 4, generator=gen, dtype=dtype)
            ref = exact.step(out.double(), t, mine.double()).prev_sample
            got = theirs.step(out, t, mine).prev_sample
            mine = ours.step(out, t, mine).prev_sample
            assert_parity(mine, got, None if precision == "float64" else ref)
        if not inverse:
            assert not torch.isfinite(theirs.step(out, 999, x).prev_sample).any()
            with pytest.raises(ValueError, match="cannot step at timestep 999: alpha_bar = 0"):
                ours.step(out, ours.timesteps[0], x)


def test_thresholding_max_value_that_is_zero_in_the_dtype_is_refused() -> None:
    """diffusers divides 0 by 0 (NaN x_0) where sample_max_value rounds to 0 in the sample's
    dtype; the adapter's step and its _threshold_sample raise the core's ValueError."""
    ours = dd.DDIMScheduler(thresholding=True, sample_max_value=1e-46)
    ours.set_timesteps(10)
    x = torch.ones(2, 3, 4, 4) * 3.0
    match = r"sample_max_value=1e-46 is below .* float32"
    with pytest.raises(ValueError, match=match):
        ours.step(x, ours.timesteps[0], x)
    with pytest.raises(ValueError, match=match + ", where float16 samples"):
        ours._threshold_sample(x.half())
    theirs = diffusers.DDIMScheduler(thresholding=True, sample_max_value=1e-46)
    assert torch.isnan(theirs._threshold_sample(x)).all()  # what the error replaces


@pytest.mark.parametrize("precision", ["float64", "float32"])
@pytest.mark.parametrize("steps", [10, 50])
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_full_loops_with_the_same_torch_generator(
    precision: str, steps: int, spacing: str, eta: float
) -> None:
    dtype = torch.float64 if precision == "float64" else torch.float32
    cfg = {"timestep_spacing": spacing, "clip_sample": False}
    theirs, ours = diffusers.DDIMScheduler(**cfg), dd.DDIMScheduler(**cfg, prev_timestep="stride")
    if dtype == torch.float64:
        share_tables(ours, theirs)
    _, model = _mixture(cfg)
    results = []
    for s in (theirs, ours):
        s.set_timesteps(steps)
        gen = torch.Generator().manual_seed(3)
        x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0), dtype=dtype)
        for t in s.timesteps:
            x = s.step(model(x, t), t, x, eta=eta, generator=gen).prev_sample
        results.append(x)
    limit = FLOAT64_LIMIT if dtype == torch.float64 else TOLERANCE["float32"]
    assert rel(results[1], results[0]) <= limit


def test_inversion_loop_then_sampling_back() -> None:
    cfg = {"clip_sample": False, "set_alpha_to_one": False}
    gm, model = _mixture(cfg)
    x0 = torch.from_numpy(gm.sample_data(8, np.random.default_rng(0)))  # seeded, from the data
    finals = []
    for inv_cls, fwd_cls, extra in (
        (diffusers.DDIMInverseScheduler, diffusers.DDIMScheduler, {}),
        (dd.DDIMInverseScheduler, dd.DDIMScheduler, {"prev_timestep": "stride"}),
    ):
        inv, fwd = inv_cls(**cfg, **extra), fwd_cls(**cfg, **extra)
        inv.set_timesteps(50)
        fwd.set_timesteps(50)
        x = x0
        for t in inv.timesteps:
            x = inv.step(model(x, t), t, x).prev_sample
        finals.append(x)
        for t in fwd.timesteps:
            x = fwd.step(model(x, t), t, x).prev_sample
        assert float((x - x0).abs().max()) < 0.1  # plain inversion: close, not exact
    assert rel(finals[1], finals[0]) <= TOLERANCE["float32"]  # independent float32 tables


def test_per_sample_timesteps_and_other_array_libraries() -> None:
    s = dd.DDIMScheduler(clip_sample=False)
    s.set_timesteps(20)
    plan = dc.make_plan(dc.DDIMConfig(clip_sample=False), 20)
    rng = np.random.default_rng(0)
    x, out = rng.standard_normal((3, 2, 4)), rng.standard_normal((3, 2, 4))
    t = np.array([950, 500, 0])
    got = s.step(out, t, x)
    assert isinstance(got.prev_sample, np.ndarray)
    np.testing.assert_array_equal(got.prev_sample, dc.step(plan, out, t, x).prev_sample)
    with reference_path():  # per-sample timesteps run the reference path: bit for bit
        for i, ti in enumerate(t.tolist()):
            np.testing.assert_array_equal(got.prev_sample[i], s.step(out, ti, x).prev_sample[i])
    # a torch timestep from `scheduler.timesteps` with NumPy samples, and a numpy generator
    first = s.step(out, s.timesteps[0], x, eta=1.0, generator=np.random.default_rng(1))
    z = np.random.default_rng(1).standard_normal(x.shape)
    expected = dc.step(plan, out, int(s.timesteps[0]), x, eta=1.0, noise=z).prev_sample
    np.testing.assert_array_equal(first.prev_sample, expected)
    jnp = pytest.importorskip("jax.numpy")
    jx = s.step(jnp.asarray(out), 500, jnp.asarray(x)).prev_sample
    assert rel(jx, dc.step(plan, out, 500, x).prev_sample) <= TOLERANCE["float64"]


def test_one_jax_key_at_every_step_draws_what_sample_draws() -> None:
    """scheduler.step(..., eta=1, generator=key) drew jax.random.normal(fold_in(key, 0)) at
    every step: a JAX key is a value that no draw advances, so a loop passing one key (as it
    would a torch.Generator) added the same noise at every step. The step from the plan's
    i-th timestep now folds in i, as dc.sample(generator=key) does: that loop gives
    dc.sample's result, and a repeated call the same noise (nothing hidden advances)."""
    jax = pytest.importorskip("jax")
    config = dc.DDIMConfig(clip_sample=False)
    scheduler = dd.DDIMScheduler(clip_sample=False)
    scheduler.set_timesteps(4)
    x = jax.numpy.full((2, 3), 0.5, dtype=jax.numpy.float32)
    for key in (jax.random.PRNGKey(0), jax.random.key(0)):
        y = x
        for t in scheduler.timesteps:
            y = scheduler.step(0.1 * y, t, y, eta=1.0, generator=key, return_dict=False)[0]
        want = dc.sample(lambda x, t: 0.1 * x, x, config, 4, eta=1.0, generator=key)
        assert bool((y == want).all())
        t = scheduler.timesteps[2]  # a repeated call: the same noise
        again = [scheduler.step(0.1 * x, t, x, eta=1.0, generator=key)[0] for _ in range(2)]
        assert bool((again[0] == again[1]).all())
        # per-sample timesteps fold in the index of their largest (here t_1)
        both = jax.numpy.asarray([int(scheduler.timesteps[1]), int(scheduler.timesteps[3])])
        z = jax.random.normal(jax.random.fold_in(key, 1), x.shape, x.dtype)
        plan = dc.make_plan(config, 4)
        noisy = scheduler.step(0.1 * x, both, x, eta=1.0, generator=key).prev_sample
        assert bool((noisy == dc.step(plan, 0.1 * x, both, x, eta=1.0, noise=z).prev_sample).all())


# --- a real pipeline -----------------------------------------------------------------------


def _unet():  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    return diffusers.UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    ).eval()


def _pipeline_images(unet, cls, eta: float, share64: bool) -> np.ndarray:  # type: ignore[no-untyped-def]
    pipe = diffusers.DDIMPipeline(unet=unet, scheduler=diffusers.DDIMScheduler())
    pipe.scheduler = cls.from_config(pipe.scheduler.config)  # DDIMPipeline converts in init
    assert type(pipe.scheduler) is cls
    if share64:
        share_tables(pipe.scheduler, diffusers.DDIMScheduler())
    pipe.set_progress_bar_config(disable=True)
    out = pipe(
        batch_size=2,
        generator=torch.Generator().manual_seed(0),
        num_inference_steps=20,
        eta=eta,
        output_type="np",
    )
    return out.images.astype(np.float64)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_pipeline_images_equal_in_float64(eta: float) -> None:
    unet = _unet().double()
    ours, theirs = (
        _pipeline_images(unet, c, eta, True) for c in (dd.DDIMScheduler, diffusers.DDIMScheduler)
    )
    assert np.abs(ours - theirs).max() <= 1e-10  # measured: identical


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_pipeline_images_equal_in_float32(eta: float) -> None:
    """Within 1e-5, or within diffusers' own sensitivity to float32 rounding.

    With random weights and eta = 0 the 20-step map is badly conditioned: scaling the initial
    noise by 1 + 1e-7 moves diffusers' own images by 2.8e-4 (measured here), so two float32
    computations of it cannot agree to 1e-5 (measured: 2.8e-4 for ours against theirs; 2e-6
    at eta = 1, where the injected noise damps the growth).
    """
    unet = _unet()
    ours, theirs = (
        _pipeline_images(unet, c, eta, False) for c in (dd.DDIMScheduler, diffusers.DDIMScheduler)
    )
    s = diffusers.DDIMScheduler()
    s.set_timesteps(20)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    ends = []
    for y in (x, x * (1 + 1e-7)):
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for t in s.timesteps:
                y = s.step(unet(y, t).sample, t, y, eta=eta, generator=gen).prev_sample
        ends.append(y)
    sensitivity = float((ends[0] - ends[1]).abs().max()) / 2  # images are x / 2 + 1 / 2
    assert np.abs(ours - theirs).max() <= max(1e-5, 2 * sensitivity)


# --- without diffusers (mindone-style) ---------------------------------------------------


def test_works_without_diffusers_and_returns_tuples(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["diffusers"] = None  # importing diffusers fails
        import numpy as np
        import ddim_core as dc
        import ddim_diffusers as dd
        assert not dd.HAVE_DIFFUSERS and "torch" not in sys.modules
        from ddim_diffusers import _base
        assert issubclass(dd.DDIMScheduler, _base.DDIMSchedulerBase)  # in place of diffusers'
        assert issubclass(dd.DDIMInverseScheduler, _base.DDIMInverseSchedulerBase)
        s = dd.DDIMScheduler(timestep_spacing="trailing", clip_sample=False)
        s.set_timesteps(10)
        assert isinstance(s.timesteps, np.ndarray) and s.timesteps[0] == 999
        x = np.random.default_rng(0).standard_normal((2, 3))
        out = s.step(x * 0.1, s.timesteps[0], x)
        assert isinstance(out, tuple) and len(out) == 2
        plan = dc.make_plan(dc.DDIMConfig(timestep_spacing="trailing", clip_sample=False), 10)
        assert np.array_equal(out[0], dc.step(plan, x * 0.1, 999, x).prev_sample)
        named = s.step(x * 0.1, 999, x, return_dict=True)
        assert named.prev_sample is named[0] and named["pred_original_sample"] is named[1]
        s.save_pretrained({str(tmp_path)!r})
        again = dd.DDIMScheduler.from_pretrained({str(tmp_path)!r})
        assert dict(again.config) == dict(s.config), (again.config, s.config)
        inv = dd.DDIMInverseScheduler.from_config(s.config)
        inv.set_timesteps(10)
        back = inv.step(x * 0.1, 999, out[0])[0]
        assert np.abs(back - x).max() < 1e-12
        try:
            dd.DDIMScheduler().step(x, 1, x)
        except ValueError as e:
            assert "set_timesteps" in str(e)
        else:
            raise AssertionError("no error")
        print("ok")
        """
    )
    env = {**os.environ, "PYTHONWARNINGS": "error::DeprecationWarning"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_copies_and_pickles_without_diffusers() -> None:
    """Without diffusers (the stand-in ConfigMixin), copy.deepcopy and pickle of a scheduler
    raised TypeError ('a scheduler config is read-only'): they rebuild the read-only config
    item by item. diffusers' FrozenDict copies, and the schedulers' own __getstate__ is there
    for copies."""
    code = textwrap.dedent(
        """
        import copy, pickle, sys
        sys.modules["diffusers"] = None  # importing diffusers fails
        import numpy as np
        import ddim_diffusers as dd
        s = dd.DDIMScheduler(timestep_spacing="trailing", clip_sample=False)
        s.config.prediction_type = "sample"  # an attribute write, as diffusers' FrozenDict takes
        s.set_timesteps(10)
        x = np.linspace(-1.0, 1.0, 6).reshape(2, 3)
        want = s.step(x * 0.1, 999, x)[0]
        for other in (copy.deepcopy(s), pickle.loads(pickle.dumps(s)), copy.copy(s)):
            assert dict(other.config) == dict(s.config)
            assert other.config.prediction_type == "sample"
            assert np.array_equal(other.step(x * 0.1, 999, x)[0], want)
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_step_output_is_the_output_its_constructor_builds() -> None:
    """`step` builds diffusers' DDIMSchedulerOutput directly (its checks cost ~4 us a step):
    the object equals one from the constructor in type, items, attributes, indexing, to_tuple
    and pickling; a class built differently is constructed as usual."""
    import pickle

    from ddim_diffusers import _scheduling

    torch = pytest.importorskip("torch")
    scheduler = dd.DDIMScheduler()
    scheduler.set_timesteps(10)
    x = torch.randn(1, 4, 8, 8)
    got = scheduler.step(x, scheduler.timesteps[0], x)
    built = dd.schedulers.DDIMSchedulerOutput(
        prev_sample=got.prev_sample, pred_original_sample=got.pred_original_sample
    )
    assert type(got) is type(built)
    assert list(got.items()) == list(built.items()) and vars(got) == vars(built)
    assert got[0] is built[0] and got["pred_original_sample"] is built.pred_original_sample
    assert got.to_tuple() == built.to_tuple()
    again = pickle.loads(pickle.dumps(got))
    assert list(again.keys()) == ["prev_sample", "pred_original_sample"]
    assert torch.equal(again.prev_sample, got.prev_sample)

    class Other(dd.schedulers.DDIMSchedulerOutput):
        def __post_init__(self) -> None:  # builds something else: the constructor is used
            super().__post_init__()
            self.extra = 1

    other = _scheduling.make_output(Other, got.prev_sample, got.pred_original_sample)
    assert type(other) is Other and other.extra == 1


def test_eta_noise_is_drawn_into_one_buffer_with_the_numbers_of_fresh_draws() -> None:
    """With eta > 0 and a torch.Generator, each step draws into this thread's noise buffer:
    the same numbers as a fresh `torch.randn` from the same generator (diffusers' draws), no
    output aliases it, and a new shape or dtype gets a new buffer."""
    torch = pytest.importorskip("torch")
    scheduler = dd.DDIMScheduler()
    scheduler.set_timesteps(5)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    g, g_ref = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    a = b = x
    buffers = set()
    for t in scheduler.timesteps:
        out = scheduler.step(a, t, a, eta=1.0, generator=g)
        z = torch.randn(a.shape, generator=g_ref, dtype=a.dtype)
        ref = scheduler.step(b, t, b, eta=1.0, variance_noise=z)
        assert torch.equal(out.prev_sample, ref.prev_sample)
        buf = scheduler._local.noise
        buffers.add(buf.data_ptr())
        assert buf.data_ptr() not in {out.prev_sample.data_ptr(), out[1].data_ptr()}
        a, b = out.prev_sample, ref.prev_sample
    assert len(buffers) == 1
    scheduler.step(a.double(), scheduler.timesteps[0], a.double(), eta=1.0, generator=g)
    assert scheduler._local.noise.dtype == torch.float64


@pytest.mark.parametrize("seeded", ["generator", "global"])
def test_eta_noise_after_a_step_under_inference_mode_draws_outside_it(seeded: str) -> None:
    """A noise buffer made under torch.inference_mode is an inference tensor, which torch does
    not write outside the mode: a later step outside it raised TypeError (no plugin could draw
    the noise: the torch plugin's `normal_` into the buffer raised). It draws diffusers'
    numbers instead."""
    torch = pytest.importorskip("torch")
    scheduler = dd.DDIMScheduler()
    scheduler.set_timesteps(5)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    t = scheduler.timesteps[0]
    with torch.inference_mode():
        scheduler.step(x, t, x, eta=1.0, generator=torch.Generator().manual_seed(7))
    torch.manual_seed(7)
    g = torch.Generator().manual_seed(7) if seeded == "generator" else None
    out = scheduler.step(x, t, x, eta=1.0, generator=g)
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(7))
    ref = scheduler.step(x, t, x, eta=1.0, variance_noise=z)
    assert not out.prev_sample.is_inference()
    assert torch.equal(out.prev_sample, ref.prev_sample)


@pytest.mark.parametrize(
    ("noise", "error", "message"),
    [
        (np.zeros((2, 4, 8, 8), np.float32), TypeError, "is a numpy array but model_output is a"),
        (torch.zeros(1, 4, 8, 8), ValueError, r"has shape \(1, 4, 8, 8\) but model_output has"),
        (torch.zeros(2, 4, 8, 8, dtype=torch.int64), TypeError, "must be a real floating-point"),
        ([0.0, 0.0], TypeError, "must be an array"),
    ],
)
def test_a_bad_variance_noise_is_named_as_the_caller_passed_it(noise, error, message) -> None:  # type: ignore[no-untyped-def]
    """step(..., eta=1.0, variance_noise=z) with a z of another library, batch or dtype (or
    not an array) was refused as 'noise ...', the core's name for it, which the caller never
    passed; a step that does not use it (eta = 0) ignores it, as diffusers does."""
    scheduler = dd.DDIMScheduler()
    scheduler.set_timesteps(4)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with pytest.raises(error, match=f"^variance_noise {message}"):
        scheduler.step(x, 501, x, eta=1.0, variance_noise=noise)
    deterministic = scheduler.step(x, 501, x, eta=0.0, variance_noise=noise).prev_sample
    assert torch.equal(deterministic, scheduler.step(x, 501, x).prev_sample)
    # where the sample is the cause, the sample is still named, as the core names it
    with pytest.raises(ValueError, match=r"^sample has shape"):
        scheduler.step(x, 501, x[:1], eta=1.0, variance_noise=torch.zeros_like(x))
