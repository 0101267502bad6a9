"""The diffusers scheduler API over ddim_core, for any host: what diffusers' classes
(`ddim_diffusers.schedulers`) and mindone.diffusers' (`ddim_mindone.schedulers`) share.

A host class puts one of `ForwardScheduler` / `InverseScheduler` before its host's
SchedulerMixin and ConfigMixin, decorates `__init__` (named after the public class by
`init_of`) with the host's `register_to_config`, defines the public `step` with the host's
`return_dict` default, and says how tables and outputs are made (`_float_table`,
`_int_table`, `_output_class`). So every number a step computes comes from ddim_core, and no
behaviour is written twice.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import itertools
import os
import sys
import threading
import types
import warnings
from collections.abc import Callable, Mapping, Set
from typing import Any

import numpy as np

import ddim_core as dc
from ddim_core import backends, kernels, steps
from ddim_core.config import BETA_SCHEDULES, check_int, load_json_object
from ddim_core.plugins import standard_normal

NOT_SET = (
    "Number of inference steps is 'None', you need to run 'set_timesteps' after creating the "
    "scheduler"
)


@dataclasses.dataclass(frozen=True)
class _PlanState:
    """What set_timesteps sets: the plan, its step count and the timesteps table."""

    plan: dc.Plan | None
    num_inference_steps: int | None
    timesteps: Any
    # the table set_timesteps built, its host values and the table's version counter then
    built: tuple[Any, tuple[int, ...], int] | None = None


class _ThreadState(threading.local):
    """A scheduler's per-thread state: the plan the thread set (`state`) and its eta noise
    buffer (`noise`).

    A copy is a fresh one holding the copying thread's plan: StableDiffusionPanoramaPipeline
    keeps each view's scheduler state as `copy.deepcopy(scheduler.__dict__)` and puts it back
    with `scheduler.__dict__.update(...)`, and a `threading.local` cannot be copied.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        state = getattr(self, "state", None)
        return (type(self), (), None if state is None else {"state": state})


class SchedulerCore:
    """What the forward and inverse schedulers share: schedule, plan, tables, noise maths.

    Hosts define `_float_table(values)` (a float32 table: betas, alphas_cumprod, ...),
    `_int_table(values, device)` (the int64 `timesteps`) and `_output_class` (the
    `(prev_sample, pred_original_sample)` dataclass `step` returns with return_dict=True).
    """

    _output_class: Any

    def _float_table(self, values: np.ndarray) -> Any:
        raise NotImplementedError

    def _int_table(self, values: np.ndarray, device: Any) -> Any:
        raise NotImplementedError

    order = 1
    _inverse = False
    # the array eta > 0 noise is drawn like (dtype, device): diffusers' randn_tensor takes
    # model_output's, mindone's the sample's (a float32 sample with float16 model output
    # gets float32 noise there)
    _noise_like = "model_output"
    # core options the host's class does not take: left at their defaults, not read from the
    # config (from_config keeps a config's other options there, and the host ignores them)
    _not_options: frozenset[str] = frozenset()
    config: Any  # the host's ConfigMixin.config

    @classmethod
    def _dict_from_json_file(cls, json_file: str | os.PathLike[str]) -> dict[str, Any]:
        """The host's config-file reader, made safe: one JSON object of bounded size, depth and
        integers, nothing followed (a JSON string naming another directory is an error, where
        diffusers would load that directory's config, or ask the Hub)."""
        with open(json_file, "rb") as f:
            return load_json_object(f.read(), os.fspath(json_file))

    def register_to_config(self, **options: Any) -> None:
        """The host's config registration, except that prev_timestep enters the config only
        when it is not the default: our scheduler_config.json then loads into the host's own
        classes without a warning, and a "stride" config still reads back as "stride" (and
        "plan" registered over it is recorded, so that it applies).

        Parameters
        ----------
        **options
            The config entries to record, as the host's `register_to_config` takes them.
        """
        recorded = getattr(self, "config", None) or {}
        if options.get("prev_timestep") == "plan" and "prev_timestep" not in recorded:
            del options["prev_timestep"]
        defaults = options.get("_use_default_values")
        if isinstance(defaults, list) and "prev_timestep" in defaults:
            options["_use_default_values"] = [k for k in defaults if k != "prev_timestep"]
            if not options["_use_default_values"]:
                del options["_use_default_values"]
        super().register_to_config(**options)  # type: ignore[misc]

    def _setup(self, options: dict[str, Any]) -> None:
        self._core = (
            self.config,
            _host_options(self.config, self._not_options),
            ddim_config(type(self).__name__, options),
        )
        self._schedule = dc.schedule(self._ddim_config)
        self._local = _ThreadState()
        every = np.arange(self._ddim_config.num_train_timesteps)
        order = every if self._inverse else every[::-1]
        self._shared = _PlanState(None, None, self._int_table(order, None))
        self._refresh_tables()
        self.init_noise_sigma = 1.0

    @property
    def _ddim_config(self) -> dc.DDIMConfig:
        """The core config of the host config as it is now (see `_follow_config`)."""
        return self._follow_config()

    def _follow_config(self, attributes: bool = False) -> dc.DDIMConfig:
        """The core config, following the host config: diffusers' scheduler reads its config
        at every set_timesteps and step, and pipelines rewrite it after construction
        (StableDiffusionPipeline sets steps_offset=1 and clip_sample=False through
        `_internal_dict`). The options rewritten (values replaced, found by identity) take
        effect from then on, in this thread's plan too; the tables stay those built at
        construction, as diffusers' do. A write to an attribute of the same config
        (`config.timestep_spacing = "leading"`, which diffusers' FrozenDict lets through) is
        looked for only where `attributes` is true (set_timesteps), not at every step."""
        config = self.config
        seen, before, core = self._core
        if config is seen and not attributes:
            return core
        now = _host_options(config, self._not_options)
        changed = {k: v for k, v in now.items() if before.get(k, _ABSENT) is not v}
        if changed:
            current = {k: getattr(core, k) for k in _FIELDS}
            core = ddim_config(type(self).__name__, {**current, **changed})
        self._core = (config, now, core)
        plan = self._plan
        if plan is not None and plan.config != core:
            self._set_state(plan=dc.Plan(core, plan.schedule, plan.timesteps, plan.prev_timesteps))
        return core

    # --- the plan: per thread --------------------------------------------------------------
    # diffusers keeps the plan in the scheduler, so threads sharing one (serving engines)
    # overwrite each other's set_timesteps. Here each thread sees the plan it set; a thread
    # that set none sees the last one set by any thread, so one thread alone behaves exactly
    # as diffusers' scheduler does.

    def _state(self) -> _PlanState:
        state: _PlanState | None = getattr(self._local, "state", None)
        return self._shared if state is None else state

    def _set_state(self, **changes: Any) -> None:
        state = dataclasses.replace(self._state(), **changes)
        self._local.state = self._shared = state

    @property
    def _plan(self) -> dc.Plan | None:
        return self._state().plan

    @property
    def num_inference_steps(self) -> int | None:
        """The number of steps of the plan set by `set_timesteps` (None before)."""
        return self._state().num_inference_steps

    @num_inference_steps.setter
    def num_inference_steps(self, value: int | None) -> None:
        self._set_state(num_inference_steps=value)

    @property
    def timesteps(self) -> Any:
        """The timesteps the loop visits, in the host's integer table type."""
        return self._state().timesteps

    @timesteps.setter
    def timesteps(self, value: Any) -> None:
        self._set_state(timesteps=value)

    def __getstate__(self) -> dict[str, Any]:  # copy.deepcopy, pickle: the calling thread's plan
        state = dict(self.__dict__)
        state["_shared"] = self._state()
        del state["_local"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = _ThreadState()
        # a torch table copied starts a version counter of its own: read it again first
        for seen in ("_table_seen", "_boundary_seen"):
            if type(state.get(seen)) is int:
                setattr(self, seen, -1)

    # --- tables ------------------------------------------------------------------------------

    def _refresh_tables(self) -> None:
        s = self._schedule
        self.betas = self._float_table(s.betas)
        self.alphas = self._float_table(1.0 - s.betas)
        self._alphas_cumprod = self._built_alphas_cumprod = self._float_table(s.alphas_cumprod)
        table = self._alphas_cumprod
        if s.final_alpha_cumprod == s.alphas_cumprod[0] and _fingerprint(table) is not None:
            # set_alpha_to_one=False: a view of alpha_bar_0, as diffusers' `alphas_cumprod[0]`
            # (torch, NumPy: tables whose writes are followed), which a write there moves
            self._boundary = table[0, ...]
        else:
            self._boundary = self._float_table(np.asarray(s.final_alpha_cumprod))
        self._table_seen = _fingerprint(self._alphas_cumprod)
        self._boundary_seen = _fingerprint(self._boundary)

    @property
    def alphas_cumprod(self) -> Any:
        """alpha_bar_t for every training timestep (float32, as diffusers; an array assigned
        reads back as it was assigned, as diffusers keeps it). Written in place (a torch
        tensor or a NumPy array), it is read again before the next step, add_noise,
        get_velocity or _get_variance, as diffusers reads its table at each of them."""
        return self._alphas_cumprod

    @alphas_cumprod.setter
    def alphas_cumprod(self, value: Any) -> None:
        table = backends.to_host(value, name="alphas_cumprod")
        if _same_table(table, value, self._schedule.alphas_cumprod):  # moved or cast: keep exact
            self._alphas_cumprod = value
            self._table_seen = _fingerprint(value)
            return
        given = dc.Schedule.from_alphas_cumprod(table)
        # the boundary level stays, and so does what it reads back as (an array assigned too)
        self._use_schedule(
            dataclasses.replace(given, final_alpha_cumprod=self._schedule.final_alpha_cumprod),
            alphas_cumprod=_as_assigned(value),
            boundary=self._boundary,
        )
        self._table_seen = _fingerprint(self._alphas_cumprod)

    def _follow_tables(self) -> None:
        """Take an in-place write to `alphas_cumprod` (`alphas_cumprod[-1] = 0`, `mul_`) since
        it was last read: diffusers' scheduler indexes it at every step, so such a write
        applies from the next one. Seen through `_fingerprint` (for torch tables one int, read
        inline in `_require_plan`); the table is read again only when it changed, and the
        boundary level with it where that changed too: diffusers' is the view
        `alphas_cumprod[0]` with set_alpha_to_one=False (and ours), which a write into the
        table's first entry moves. A boundary array of its own is read when assigned."""
        if _fingerprint(self._alphas_cumprod) == self._table_seen:
            return
        self.alphas_cumprod = self._alphas_cumprod
        if _fingerprint(self._boundary) != self._boundary_seen:
            self._take_boundary_level(self._boundary)

    def _set_boundary_level(self, value: Any) -> None:
        self._follow_tables()  # (the table stays as it is now, writes included)
        self._take_boundary_level(value)

    def _take_boundary_level(self, value: Any) -> None:
        name = "initial_alpha_cumprod" if self._inverse else "final_alpha_cumprod"
        level = float(backends.to_host(value, name=name).reshape(()))
        if not 0.0 <= level <= 1.0:  # NaN included: every step through it would be NaN
            raise ValueError(f"{name} must be in [0, 1], got {level}")
        if _same_table(np.asarray(level), value, np.asarray(self._schedule.final_alpha_cumprod)):
            # moved or cast (or diffusers' own `alphas_cumprod[0]` view): keep the exact level;
            # the array reads back as assigned, and is followed
            if hasattr(value, "dtype"):
                self._boundary = value
        else:
            self._use_schedule(
                dataclasses.replace(self._schedule, final_alpha_cumprod=level),
                alphas_cumprod=self._alphas_cumprod,  # the table stays, as it reads back
                boundary=_as_assigned(value),
            )
        self._boundary_seen = _fingerprint(self._boundary)

    def _use_schedule(
        self, schedule: dc.Schedule, *, alphas_cumprod: Any = None, boundary: Any = None
    ) -> None:
        """Step on `schedule` from now on. `alphas_cumprod` and `boundary`: what those tables
        read back as (diffusers' scheduler keeps an array assigned to them as it is, and
        pipelines read them: CycleDiffusion, LEdits++); None: float tables of `schedule`.
        A table kept is followed from where it was last read (`_follow_tables`)."""
        seen = self._table_seen, self._boundary_seen
        self._schedule = schedule
        self._refresh_tables()
        if alphas_cumprod is not None:
            self._alphas_cumprod, self._table_seen = alphas_cumprod, seen[0]
        if boundary is not None:
            self._boundary, self._boundary_seen = boundary, seen[1]
        if self._plan is not None:
            self._set_state(plan=self._with_schedule(self._plan))

    def _with_schedule(self, plan: dc.Plan) -> dc.Plan:
        if plan.schedule is self._schedule:
            return plan
        return dc.Plan(plan.config, self._schedule, plan.timesteps, plan.prev_timesteps)

    # --- diffusers API -----------------------------------------------------------------------

    def scale_model_input(self, sample: Any, timestep: Any = None) -> Any:
        """DDIM does not scale the model input (diffusers' interface).

        Parameters
        ----------
        sample : array
            The model's input.
        timestep : int or array, optional
            Ignored.

        Returns
        -------
        array
            `sample`, as it is.
        """
        return sample

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: Any = None,
        timesteps: list[int] | None = None,
    ) -> None:
        """Choose the plan: `num_inference_steps` with the configured spacing, or explicit
        `timesteps` (in the order the scheduler runs them). `device`: where the torch
        `timesteps` tensor lives.

        Parameters
        ----------
        num_inference_steps : int, optional
            The number of steps (when `timesteps` is not given).
        device : str or torch.device, optional
            Where the `timesteps` tensor lives.
        timesteps : list of int, optional
            Explicit timesteps, in the order the scheduler runs them.

        Raises
        ------
        TypeError
            If `timesteps` is not a sequence of integers.
        ValueError
            If the steps or timesteps do not make a plan (see `ddim_core.make_plan`; a first
            step that cannot be taken, epsilon prediction at a zero-SNR timestep, is refused
            by `step` at that timestep, as img2img and inversion never take it), or an
            inverse scheduler's `timesteps` are not strictly increasing.
        """
        custom = None
        if timesteps is not None:
            custom = _custom_timesteps(timesteps)
            if self._inverse:
                # the core checks the forward order; name the order the caller gave
                if any(a >= b for a, b in itertools.pairwise(custom)):
                    raise ValueError(
                        f"timesteps must be strictly increasing, got {custom} "
                        f"({type(self).__name__} runs them in its loop's order)"
                    )
                custom = custom[::-1]
        # a first step that cannot be taken (epsilon prediction at zero SNR) is refused by
        # `step` at that timestep alone: img2img enters below it, the inverse never takes it
        config = self._follow_config(attributes=True)
        plan = dc.make_plan(config, num_inference_steps, timesteps=custom, check_first_step=False)
        plan = self._with_schedule(plan)
        order = plan.inverse_timesteps if self._inverse else plan.timesteps
        timesteps = self._int_table(np.asarray(order, dtype=np.int64), device)
        version = _version(timesteps)
        built = None if version is None else (timesteps, tuple(order), version)
        self._set_state(
            plan=plan,
            num_inference_steps=plan.num_inference_steps,
            timesteps=timesteps,
            built=built,
        )

    def _timestep_for(self, timestep: Any, sample: Any) -> Any:
        """`timestep_for`, except that the pipeline's `t in scheduler.timesteps` becomes the
        Python int it holds, so that the step takes the fused path with host coefficients: on
        the CPU read as it is (free there: `_host_int64`); on an accelerator, an element of
        the `timesteps` table set_timesteps built is known on the host without reading the
        device. A table written in place is not trusted (its version counter moved); a write
        torch's counter does not see (through `.data` or DLPack) is not seen here either, as
        autograd does not see it. Nothing is read or assumed while torch.compile traces."""
        if type(timestep) is int:
            return timestep
        value = _host_int64(timestep)
        if value is not None:
            return value
        # only torch builds tables of 0-d views (`_base`): `is_cpu` is torch's device check
        if not getattr(timestep, "is_cpu", True) and not backends.compiling():
            known = _built_value(self._state().built, timestep)
            if known is not None:
                return known
        return timestep_for(timestep, sample)

    def add_noise(self, original_samples: Any, noise: Any, timesteps: Any) -> Any:
        """q(x_t | x_0): sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise, per-sample timesteps.

        Parameters
        ----------
        original_samples : array
            x_0.
        noise : array
            The noise, of x_0's shape.
        timesteps : int or array
            t: one, or one per sample.

        Returns
        -------
        array
            x_t, in x_0's dtype and on its device.
        """
        self._follow_tables()
        return dc.add_noise(
            self._schedule,
            original_samples,
            noise,
            timestep_for(timesteps, original_samples, "timesteps", "original_samples"),
        )

    def get_velocity(self, sample: Any, noise: Any, timesteps: Any) -> Any:
        """The v-prediction target sqrt(abar_t) noise - sqrt(1 - abar_t) x_0.

        Parameters
        ----------
        sample : array
            x_0.
        noise : array
            The noise, of x_0's shape.
        timesteps : int or array
            t: one, or one per sample.

        Returns
        -------
        array
            v, in x_0's dtype and on its device.
        """
        self._follow_tables()
        return dc.get_velocity(
            self._schedule, sample, noise, timestep_for(timesteps, sample, "timesteps")
        )

    def __len__(self) -> int:
        return int(self._ddim_config.num_train_timesteps)

    def _output(self, out: dc.StepOutput, return_dict: bool) -> Any:
        if return_dict:
            return make_output(self._output_class, out.prev_sample, out.pred_original_sample)
        return (out.prev_sample, out.pred_original_sample)

    def _noise_buffer(self, like: Any) -> Any:
        """This thread's buffer for eta > 0 noise like `like` (a plain torch tensor), or None.

        The noise of a step is read by the step alone, so each step draws into the same
        buffer (the torch plugin does, with the numbers it would draw anyway): no allocation of
        the sample's size per step, and no page faults when malloc has returned the last one
        to the system (16x4x128x128: ~300 us of a 4.4 ms step)."""
        torch = sys.modules.get("torch")
        if torch is None or type(like) is not torch.Tensor or like.requires_grad:
            return None
        if backends.compiling():
            return None
        buf = getattr(self._local, "noise", None)
        if (
            buf is None
            or buf.shape != like.shape
            or buf.dtype != like.dtype
            or buf.device != like.device
            or (buf.is_inference() and not torch.is_inference_mode_enabled())
        ):  # (an inference tensor, made under torch.inference_mode, is not written outside)
            buf = torch.empty(like.shape, dtype=like.dtype, device=like.device)
            self._local.noise = buf
        return buf

    def _require_plan(self) -> dc.Plan:
        seen = self._table_seen  # (`_fingerprint`, inline: this runs at every step)
        if type(seen) is int:  # a torch table, as in pipelines: one version read (~0.1 us)
            if self._alphas_cumprod._version != seen:
                self._follow_tables()
        elif seen is not None and self._alphas_cumprod.tobytes() != seen:  # NumPy (~0.2 us)
            self._follow_tables()
        if self.config is not self._core[0]:
            if self._plan is None:  # no plan is said first, as in diffusers, not a bad option
                raise ValueError(NOT_SET)
            self._follow_config()  # a config rewritten since set_timesteps applies from now
        plan = self._state().plan
        if plan is None:
            raise ValueError(NOT_SET)
        if plan.schedule is not self._schedule:  # another thread's table: it is shared
            plan = self._with_schedule(plan)
            self._set_state(plan=plan)
        return plan


class ForwardScheduler(SchedulerCore):
    """DDIMScheduler's behaviour (Song et al. 2021); `__init__` lists its options."""

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: Any = None,
        clip_sample: bool = True,
        set_alpha_to_one: bool = True,
        steps_offset: int = 0,
        prediction_type: str = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        clip_sample_range: float = 1.0,
        sample_max_value: float = 1.0,
        timestep_spacing: str = "leading",
        rescale_betas_zero_snr: bool = False,
        prev_timestep: str = "plan",
    ) -> None:
        self._setup(dict(locals()))

    @property
    def final_alpha_cumprod(self) -> Any:
        """alpha_bar after the last step: 1 with set_alpha_to_one, else alpha_bar_0."""
        return self._boundary

    @final_alpha_cumprod.setter
    def final_alpha_cumprod(self, value: Any) -> None:
        self._set_boundary_level(value)

    def _step(
        self,
        model_output: Any,
        timestep: Any,
        sample: Any,
        eta: float,
        use_clipped_model_output: bool | None,
        generator: Any,
        variance_noise: Any,
        return_dict: bool,
    ) -> Any:
        """One DDIM step from `timestep` to the plan's previous timestep, eq. (12).

        With eta > 0 the noise is `variance_noise`, or drawn from `generator` (a
        torch.Generator or a list of them, a numpy Generator, a JAX key, ...; None: torch's
        global generator) in model_output's dtype, as diffusers' `randn_tensor` does (the
        sample's where the host's `_noise_like` says so, as mindone's), with `_draw_index` as
        the draw's index (a JAX key folds it in; stateful generators ignore it).
        """
        plan = self._require_plan()
        t = self._timestep_for(timestep, sample)
        noise = None
        if eta > 0:
            if variance_noise is not None and generator is not None:
                raise ValueError(
                    "Cannot pass both generator and variance_noise. Please make sure that "
                    "either `generator` or `variance_noise` stays `None`."
                )
            noise = variance_noise
            if noise is None:
                shape = tuple(model_output.shape)
                like = sample if self._noise_like == "sample" else model_output
                out = self._noise_buffer(like)
                draw = _draw_index(plan, t)
                noise = standard_normal(generator, shape, like=like, draw=draw, out=out)
        try:
            out = dc.step(
                plan,
                model_output,
                t,
                sample,
                eta=eta,
                noise=noise,
                # DDIMPipeline passes None, which diffusers reads as False
                use_clipped_model_output=bool(use_clipped_model_output or False),
            )
        except (TypeError, ValueError):
            if noise is not None and noise is variance_noise:
                # the core's check of its arrays again, naming the caller's argument where the
                # core says `noise` (only here, on the way out: nothing on a step that succeeds)
                steps._arrays(model_output=model_output, sample=sample, variance_noise=noise)
            raise
        return self._output(out, return_dict)

    def _get_variance(self, timestep: Any, prev_timestep: Any) -> Any:
        """sigma_t^2 / eta^2 of eq. (16) between two timesteps (prev < 0: the final level), in
        `alphas_cumprod`'s dtype and on its device, as diffusers' (a float64 table assigned:
        float64)."""
        self._follow_tables()
        a = self._schedule.alpha_bar(int(timestep))
        b = self._schedule.alpha_bar(max(int(prev_timestep), dc.FINAL))
        variance = np.asarray(kernels.ddim_variance(a, b))
        table = self._alphas_cumprod
        if table is self._built_alphas_cumprod or not hasattr(table, "dtype"):
            return self._float_table(variance)  # our table, or a Python sequence assigned
        xp = backends.namespace(alphas_cumprod=table)
        return backends.from_host(variance, xp, device=backends.device(table), dtype=table.dtype)

    def _threshold_sample(self, sample: Any) -> Any:
        """Dynamic thresholding of a predicted x_0 (Imagen), per batch element."""
        c = self._ddim_config
        xp = backends.namespace(sample=sample)
        return kernels.threshold(sample, c.dynamic_thresholding_ratio, c.sample_max_value, xp=xp)


class InverseScheduler(SchedulerCore):
    """DDIM inversion (x_0 -> x_T): diffusers' DDIMInverseScheduler API.

    `step(model_output, timestep, sample)` moves from the level of the plan timestep before
    `timestep` (the clean level before the first; with prev_timestep="stride", diffusers'
    timestep - T // N instead) up to `timestep`, with the model evaluated at `timestep` on
    `sample`, as diffusers does. The inverse plan mirrors the forward plan.
    """

    _inverse = True
    # a forward config's thresholding (DDIMInverseScheduler.from_config(pipe.scheduler.config)):
    # diffusers' inverse scheduler takes none, and ignores them
    _not_options = frozenset({"thresholding", "dynamic_thresholding_ratio", "sample_max_value"})
    ignore_for_config = ["kwargs"]  # noqa: RUF012 (as diffusers')
    _deprecated_kwargs = ["set_alpha_to_zero"]  # noqa: RUF012 (as diffusers')

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: Any = None,
        clip_sample: bool = True,
        set_alpha_to_one: bool = True,
        steps_offset: int = 0,
        prediction_type: str = "epsilon",
        clip_sample_range: float = 1.0,
        timestep_spacing: str = "leading",
        rescale_betas_zero_snr: bool = False,
        prev_timestep: str = "plan",
        **kwargs: Any,
    ) -> None:
        options = dict(locals())
        extra = options.pop("kwargs")
        if extra.get("set_alpha_to_zero") is not None:
            warnings.warn(
                "The `set_alpha_to_zero` argument is deprecated. Please use `set_alpha_to_one` "
                "instead.",
                FutureWarning,
                stacklevel=2,
            )
            options["set_alpha_to_one"] = extra["set_alpha_to_zero"]
        self._setup(options)

    @property
    def initial_alpha_cumprod(self) -> Any:
        """alpha_bar before the first inverse step: 1 with set_alpha_to_one, else alpha_bar_0."""
        return self._boundary

    @initial_alpha_cumprod.setter
    def initial_alpha_cumprod(self, value: Any) -> None:
        self._set_boundary_level(value)

    def _step(self, model_output: Any, timestep: Any, sample: Any, return_dict: bool) -> Any:
        """One DDIM inversion step up to `timestep` (deterministic)."""
        plan = self._require_plan()
        out = dc.inverse_step(plan, model_output, self._timestep_for(timestep, sample), sample)
        return self._output(out, return_dict)


# --- helpers ---------------------------------------------------------------------------------


_FIELDS = frozenset(f.name for f in dataclasses.fields(dc.DDIMConfig))
_ABSENT = object()


def _host_options(config: Any, skip: frozenset[str]) -> dict[str, Any]:
    """The core options as the host's scheduler reads them: as attributes of its config (a
    diffusers FrozenDict keeps each item as an attribute too, and a write to the attribute
    changes what the scheduler reads, not the item), less `skip` (options the class does not
    take)."""
    return {k: v for k in _FIELDS - skip if (v := getattr(config, k, _ABSENT)) is not _ABSENT}


def init_of(owner: str, init: Callable[..., None]) -> Callable[..., None]:
    """A copy of `init` (`ForwardScheduler.__init__` or `InverseScheduler.__init__`) that
    Python names `owner.__init__` in its argument errors (an unknown option, too many
    positional arguments), as diffusers names its class: the user called `owner`.

    Parameters
    ----------
    owner : str
        The public class's name ("DDIMScheduler").
    init : function
        The shared constructor; its code, defaults and signature are kept.

    Returns
    -------
    function
        For the public class to decorate with its host's `register_to_config`.
    """
    named = types.FunctionType(
        init.__code__, init.__globals__, init.__name__, init.__defaults__, init.__closure__
    )
    named.__kwdefaults__ = init.__kwdefaults__
    named.__annotations__ = dict(init.__annotations__)  # (inspect.signature reads them)
    named.__doc__, named.__module__ = init.__doc__, init.__module__
    named.__qualname__ = f"{owner}.__init__"  # what the errors name
    return named


def ddim_config(class_name: str, options: dict[str, Any]) -> dc.DDIMConfig:
    """The core config of the constructor options, rejecting what diffusers rejects the way
    diffusers does (an unknown beta_schedule is NotImplementedError). Beside trained_betas,
    diffusers reads neither beta_schedule nor beta_start / beta_end, and beside
    squaredcos_cap_v2 neither beta_start nor beta_end: a value of those the core would
    refuse is left at the core's default (the host config keeps it as given)."""
    kwargs = {k: v for k, v in options.items() if k in _FIELDS}
    betas = kwargs.get("trained_betas")
    unread: tuple[str, ...] = ()
    if betas is not None:
        unread = ("beta_schedule", "beta_start", "beta_end")
    elif kwargs.get("beta_schedule") == "squaredcos_cap_v2":
        unread = ("beta_start", "beta_end")
    for name in unread:
        if name in kwargs and not _valid_option(name, kwargs[name]):
            del kwargs[name]
    if betas is None and kwargs.get("beta_schedule") not in BETA_SCHEDULES:
        raise NotImplementedError(
            f"beta_schedule={kwargs.get('beta_schedule')!r} is not implemented for {class_name}; "
            f"choose one of {BETA_SCHEDULES} or pass trained_betas"
        )
    if betas is not None:
        try:
            host = backends.to_host(betas, name="it")
        except (TypeError, ValueError) as e:
            raise TypeError(f"trained_betas must be a 1-D sequence of floats: {e}") from None
        if host.ndim != 1:
            raise ValueError(f"trained_betas must be 1-D, got shape {host.shape}")
        kwargs["trained_betas"] = tuple(host.tolist())
    return dc.DDIMConfig(**kwargs)


def _valid_option(name: str, value: Any) -> bool:
    """Whether DDIMConfig takes `value` for its option `name`."""
    try:
        dc.DDIMConfig(**{name: value})
    except (TypeError, ValueError):
        return False
    return True


def _draw_index(plan: dc.Plan, timestep: Any) -> int:
    """The draw index of a step's noise: how many of the plan's timesteps lie above the step's
    (above the largest, for one per batch element), i for the plan's t_i, the index
    `dc.sample` draws step i with. A JAX key is a value that no draw advances: folding in i
    gives each step of a loop that passes one key fresh noise, `dc.sample(generator=key)`'s,
    as a function of the key and the timestep only. 0 for a timestep array the host cannot
    read for free (on an accelerator, traced)."""
    if not isinstance(timestep, int):
        values = backends.host_integers(timestep)
        if not values:
            return 0
        timestep = max(values)
    return len(plan.timesteps) - bisect.bisect_right(plan.inverse_timesteps, timestep)


def _custom_timesteps(timesteps: Any) -> list[int]:
    """set_timesteps(timesteps=...): integers (a list, or an integer array of any library)."""
    if hasattr(timesteps, "dtype"):
        host = backends.to_host(timesteps, None, name="timesteps")
        if host.dtype.kind not in "iu" or host.ndim != 1:
            raise TypeError(
                f"timesteps must be a 1-D sequence of integers, got dtype {host.dtype} and "
                f"shape {host.shape}"
            )
        return [int(t) for t in host.tolist()]
    # a set or a mapping has no order of its own (dc.make_plan refuses them alike)
    if isinstance(timesteps, str | bytes | Mapping | Set) or not hasattr(timesteps, "__iter__"):
        raise TypeError(f"timesteps must be a sequence of integers, got {timesteps!r}")
    return [check_int("timesteps", t) for t in timesteps]


def _host_int64(timestep: Any) -> int | None:
    """The value of a 0-d int64 torch CPU tensor (a pipeline's `t` of a CPU
    `scheduler.timesteps`), read on the host where that is free (not while torch.compile
    traces), so that the step takes the Python-int path; None for anything else.

    Examples
    --------
    >>> import torch
    >>> _host_int64(torch.tensor(981)), _host_int64(torch.tensor([981])), _host_int64(981)
    (981, None, None)
    """
    torch = sys.modules.get("torch")
    if torch is None or type(timestep) is not torch.Tensor or timestep.dtype is not torch.int64:
        return None
    if timestep.ndim or not timestep.is_cpu or backends.compiling():
        return None
    value: int = timestep.item()
    return value


def _built_value(built: tuple[Any, tuple[int, ...], int] | None, timestep: Any) -> int | None:
    """The host value of `timestep` when it is a 0-d view into the built table (torch's
    `_base`, `storage_offset` and shared `_version` say so without reading the device), else
    None.

    Examples
    --------
    >>> import torch
    >>> table = torch.tensor([999, 500, 1])
    >>> built = (table, (999, 500, 1), table._version)
    >>> [_built_value(built, t) for t in table], _built_value(built, table[1:2])
    ([999, 500, 1], None)
    """
    if built is None or getattr(timestep, "_base", None) is not built[0]:
        return None
    table, values, version = built
    if timestep.ndim != 0 or _version(timestep) != version or table.ndim != 1:
        return None
    i, rest = divmod(timestep.storage_offset() - table.storage_offset(), table.stride(0) or 1)
    return values[i] if rest == 0 and 0 <= i < len(values) else None


def _version(table: Any) -> int | None:
    """torch's in-place modification counter of `table` (shared by its views); None where
    there is none (not torch; an inference-mode tensor, which tracks no version)."""
    try:
        version = table._version
    except (AttributeError, RuntimeError):
        return None
    return version if type(version) is int else None


def _fingerprint(table: Any) -> object:
    """What an in-place write to `table` changes, read without a device sync: torch's version
    counter (an int, bumped by every in-place op on the tensor or a view of it); a NumPy
    array's bytes (no counter there: a 4 KB copy and compare for 1000 float32 values, ~0.2
    us); None elsewhere (a torch inference tensor, CuPy, MindSpore: no counter, and their
    values are not read at every step, which could mean a device sync: read when assigned;
    JAX arrays cannot be written).

    Examples
    --------
    >>> import numpy as np, torch
    >>> t, a = torch.zeros(3), np.zeros(3, dtype=np.float32)
    >>> before = _fingerprint(t), _fingerprint(a)
    >>> t[0], a[0] = 1.0, 1.0
    >>> before == (_fingerprint(t), _fingerprint(a))
    False
    """
    if type(table) is np.ndarray:
        return table.tobytes()
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(table, torch.Tensor):
        return None
    return _version(table)  # (an int: SchedulerCore._require_plan reads it inline then)


def timestep_for(
    timestep: Any, sample: Any, name: str = "timestep", sample_name: str = "sample"
) -> Any:
    """A timestep the core takes with `sample`: Python ints as they are; an array of another
    library (torch `scheduler.timesteps` entries with NumPy or JAX samples) or on another
    device (diffusers' `timesteps.to(sample.device)`) is brought to the sample's. Errors name
    them `name` and `sample_name`, the caller's arguments (a missing sample is left to the
    core, which names it)."""
    if type(timestep) is type(sample) and getattr(timestep, "device", 0) == getattr(
        sample, "device", 1
    ):
        return timestep  # the pipeline's case (checked first): one library, one device
    if isinstance(timestep, bool | np.bool_ | float | str | bytes) or timestep is None:
        raise TypeError(
            f"{name} must be an integer (an int, or an integer array of one or one per "
            f"sample), got {timestep!r}"
        )
    if isinstance(timestep, int | np.integer):
        return int(timestep)
    if sample is None:
        return timestep  # the core's error names the missing array
    xp = backends.namespace(**{sample_name: sample})
    try:
        if backends.namespace(**{name: timestep}) is xp:
            if backends.device(timestep) == backends.device(sample):
                return timestep
            try:
                return timestep.to(backends.device(sample))
            except (NotImplementedError, RuntimeError) as e:
                raise ValueError(
                    f"{name} is on {backends.device(timestep)} and {sample_name} on "
                    f"{backends.device(sample)}, and it cannot be moved ({e}); "
                    + (
                        "call set_timesteps(device=...) with the sample's device"
                        if name == "timestep"
                        else f"pass {name} on {sample_name}'s device"
                    )
                ) from None
    except TypeError:
        pass
    host = backends.to_host(timestep, None, name=name)
    if host.dtype.kind not in "iu":
        raise TypeError(f"{name} must have an integer dtype, got {host.dtype}")
    if host.ndim == 0:
        return int(host)
    return xp.asarray(host, device=backends.device(sample))


def list_in_compatibles(mixin: type, ours: type) -> None:
    """Make the host's `mixin` (its SchedulerMixin) list `ours` in the `compatibles` of every
    scheduler class compatible with DDIMScheduler, whenever that class was imported, and of
    a DDIMScheduler (the host's and ours). The host's lookup goes by names in its own module,
    where `ours`, also named DDIMScheduler, is not found. Idempotent."""
    original = mixin.__dict__["_get_compatibles"].__func__
    if getattr(original, "_ddim_core", False):
        return

    def _get_compatibles(cls: type) -> list[type]:
        found = list(original(cls))
        peers = getattr(cls, "_compatibles", [])
        if ("DDIMScheduler" in peers or cls.__name__ == "DDIMScheduler") and ours not in found:
            found.append(ours)
        return found

    _get_compatibles._ddim_core = True  # type: ignore[attr-defined]
    mixin._get_compatibles = classmethod(_get_compatibles)  # type: ignore[attr-defined]


def make_output(cls: Any, prev_sample: Any, pred_original_sample: Any) -> Any:
    """`cls(prev_sample=..., pred_original_sample=...)`, built directly where that gives the same
    object: diffusers' BaseOutput (an OrderedDict dataclass) spends ~4 us per step in its
    checks (`__post_init__`, `__setattr__`) for what is, with two arrays, two items and two
    attributes. Checked once per class against the constructor (any other class, or one
    built differently, is constructed as usual)."""
    fast = _FAST_OUTPUTS.get(cls)
    if fast is None:
        fast = _FAST_OUTPUTS[cls] = _direct_matches(cls)
    if not fast or prev_sample is None or pred_original_sample is None:
        return cls(prev_sample=prev_sample, pred_original_sample=pred_original_sample)
    return _direct(cls, prev_sample, pred_original_sample)


_FAST_OUTPUTS: dict[type, bool] = {}


def _direct(cls: Any, prev_sample: Any, pred_original_sample: Any) -> Any:
    out = cls.__new__(cls)
    _set_item(out, "prev_sample", prev_sample)
    _set_item(out, "pred_original_sample", pred_original_sample)
    attributes = out.__dict__
    attributes["prev_sample"] = prev_sample
    attributes["pred_original_sample"] = pred_original_sample
    return out


_set_item = collections.OrderedDict.__setitem__  # bound once: a step builds one output


def _direct_matches(cls: Any) -> bool:
    """Whether `_direct` builds what the constructor builds (an OrderedDict dataclass with
    exactly these two fields, whose construction stores them as items and attributes)."""
    if not (issubclass(cls, collections.OrderedDict) and dataclasses.is_dataclass(cls)):
        return False
    names = [f.name for f in dataclasses.fields(cls)]
    if names != ["prev_sample", "pred_original_sample"]:
        return False
    a, b = object(), object()
    make: Any = cls  # narrowed to a dataclass type above; it is the output class
    built, direct = make(prev_sample=a, pred_original_sample=b), _direct(cls, a, b)
    same_items = list(built.items()) == list(direct.items())
    return same_items and vars(built) == vars(direct) and built.to_tuple() == direct.to_tuple()


def _as_assigned(value: Any) -> Any:
    """What a table assigned reads back as: an array as it is (its library, dtype and device,
    as diffusers keeps it); None for a Python float or sequence (the float table, as before:
    pipelines index it with tensors and take its dtype)."""
    return value if hasattr(value, "dtype") else None


def _same_table(table: np.ndarray, given: Any, exact: np.ndarray) -> bool:
    """Whether `given` (as float64 `table`) is `exact` rounded to given's dtype (a Python float
    or list, which has none, as it is: diffusers' attributes take those too)."""
    if table.shape != exact.shape:
        return False
    dtype = str(getattr(given, "dtype", "")).lower()
    rounded = exact.astype(np.float32) if "float32" in dtype else exact
    return bool(np.array_equal(table, rounded.astype(np.float64)))
