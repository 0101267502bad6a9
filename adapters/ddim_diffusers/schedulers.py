"""diffusers-compatible DDIMScheduler and DDIMInverseScheduler, computed by ddim_core.

Same constructor arguments, defaults, attributes and methods as diffusers 0.42's classes, plus:
- `prev_timestep`: "plan" (default: t_prev is the next timestep of the plan, exact for every
  spacing) or "stride" (diffusers' `t - num_train_timesteps // num_inference_steps`);
- `step` takes one timestep per batch element, and NumPy, JAX, CuPy, Dask or array-api-strict
  arrays as well as torch tensors (outputs in the sample's library, device and dtype);
- the step maths runs on float64 coefficients, cast where they meet the sample.
`alphas_cumprod` & co. are float32 tables like diffusers'; assigning a different table to
`alphas_cumprod` makes the scheduler step on that table.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np

import ddim_core as dc
from ddim_core import backends, kernels
from ddim_core.config import BETA_SCHEDULES
from ddim_core.plugins import standard_normal

from ._compat import (
    COMPATIBLES,
    HAVE_DIFFUSERS,
    RETURN_DICT,
    BaseOutput,
    ConfigMixin,
    SchedulerMixin,
    register_to_config,
)

NOT_SET = (
    "Number of inference steps is 'None', you need to run 'set_timesteps' after creating the "
    "scheduler"
)


@dataclasses.dataclass
class DDIMSchedulerOutput(BaseOutput):
    """What `DDIMScheduler.step` returns with ``return_dict=True``.

    Attributes
    ----------
    prev_sample : array
        x_{t-1} (x_t for inversion).
    pred_original_sample : array
        The predicted x_0.

    Examples
    --------
    >>> import numpy as np
    >>> out = DDIMSchedulerOutput(prev_sample=np.zeros(2), pred_original_sample=np.ones(2))
    >>> out[0] is out.prev_sample  # indexes like a tuple, as diffusers' outputs do
    True
    """

    prev_sample: Any
    pred_original_sample: Any = None


class _DDIMSchedulerBase(SchedulerMixin, ConfigMixin):  # type: ignore[misc]
    """What the forward and inverse schedulers share: schedule, plan, tables, noise maths."""

    order = 1
    _inverse = False

    def _setup(self, options: dict[str, Any]) -> None:
        self._ddim_config = _ddim_config(type(self).__name__, options)
        self._schedule = dc.schedule(self._ddim_config)
        self._plan: dc.Plan | None = None
        self._refresh_tables()
        self.init_noise_sigma = 1.0
        self.num_inference_steps: int | None = None
        every = np.arange(self._ddim_config.num_train_timesteps)
        self.timesteps = _int_array(every if self._inverse else every[::-1], None)

    # --- tables ------------------------------------------------------------------------------

    def _refresh_tables(self) -> None:
        s = self._schedule
        self.betas = _float_array(s.betas)
        self.alphas = _float_array(1.0 - s.betas)
        self._alphas_cumprod = _float_array(s.alphas_cumprod)
        self._boundary = _float_array(np.asarray(s.final_alpha_cumprod))

    @property
    def alphas_cumprod(self) -> Any:
        """alpha_bar_t for every training timestep (float32, as diffusers)."""
        return self._alphas_cumprod

    @alphas_cumprod.setter
    def alphas_cumprod(self, value: Any) -> None:
        table = backends.to_host(value)
        if _same_table(table, value, self._schedule.alphas_cumprod):  # moved or cast: keep exact
            self._alphas_cumprod = value
            return
        given = dc.Schedule.from_alphas_cumprod(table)
        self._use_schedule(
            dataclasses.replace(given, final_alpha_cumprod=self._schedule.final_alpha_cumprod)
        )

    def _set_boundary_level(self, value: Any) -> None:
        level = float(backends.to_host(value).reshape(()))
        if not _same_table(
            np.asarray(level), value, np.asarray(self._schedule.final_alpha_cumprod)
        ):
            self._use_schedule(dataclasses.replace(self._schedule, final_alpha_cumprod=level))

    def _use_schedule(self, schedule: dc.Schedule) -> None:
        self._schedule = schedule
        self._refresh_tables()
        if self._plan is not None:
            self._plan = self._with_schedule(self._plan)

    def _with_schedule(self, plan: dc.Plan) -> dc.Plan:
        if plan.schedule is self._schedule:
            return plan
        return dc.Plan(plan.config, self._schedule, plan.timesteps, plan.prev_timesteps)

    # --- diffusers API -----------------------------------------------------------------------

    def scale_model_input(self, sample: Any, timestep: Any = None) -> Any:
        """DDIM does not scale the model input (diffusers' interface)."""
        return sample

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: Any = None,
        timesteps: list[int] | None = None,
    ) -> None:
        """Choose the plan: `num_inference_steps` with the configured spacing, or explicit
        `timesteps` (in the order the scheduler runs them). `device`: where the torch
        `timesteps` tensor lives."""
        custom = None
        if timesteps is not None:
            custom = [int(t) for t in timesteps]
            custom = custom[::-1] if self._inverse else custom
        plan = dc.make_plan(self._ddim_config, num_inference_steps, timesteps=custom)
        self._plan = self._with_schedule(plan)
        self.num_inference_steps = plan.num_inference_steps
        order = plan.inverse_timesteps if self._inverse else plan.timesteps
        self.timesteps = _int_array(np.asarray(order, dtype=np.int64), device)

    def add_noise(self, original_samples: Any, noise: Any, timesteps: Any) -> Any:
        """q(x_t | x_0): sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise, per-sample timesteps."""
        return dc.add_noise(
            self._schedule, original_samples, noise, _timestep_for(timesteps, original_samples)
        )

    def get_velocity(self, sample: Any, noise: Any, timesteps: Any) -> Any:
        """The v-prediction target sqrt(abar_t) noise - sqrt(1 - abar_t) x_0."""
        return dc.get_velocity(self._schedule, sample, noise, _timestep_for(timesteps, sample))

    def __len__(self) -> int:
        return int(self._ddim_config.num_train_timesteps)

    def _require_plan(self) -> dc.Plan:
        if self._plan is None:
            raise ValueError(NOT_SET)
        return self._plan


class DDIMScheduler(_DDIMSchedulerBase):
    """Denoising diffusion implicit models (Song et al. 2021): diffusers' `DDIMScheduler` API,
    computed by ddim_core.

    The constructor takes diffusers 0.42's arguments with its defaults (see `DDIMConfig` for
    each option's meaning), plus `prev_timestep`: "plan" (default, t_prev from the plan, exact
    for every spacing) or "stride" (diffusers' rule).

    Examples
    --------
    >>> import torch
    >>> scheduler = DDIMScheduler(timestep_spacing="trailing", clip_sample=False)
    >>> scheduler.set_timesteps(10)
    >>> x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    >>> for t in scheduler.timesteps:
    ...     x = scheduler.step(0.1 * x, t, x).prev_sample     # 0.1 * x: a stand-in model
    >>> x.shape
    torch.Size([1, 4, 8, 8])
    """

    _compatibles = COMPATIBLES

    @register_to_config  # type: ignore[untyped-decorator]
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

    def step(
        self,
        model_output: Any,
        timestep: Any,
        sample: Any,
        eta: float = 0.0,
        use_clipped_model_output: bool = False,
        generator: Any = None,
        variance_noise: Any = None,
        return_dict: bool = RETURN_DICT,
    ) -> Any:
        """One DDIM step from `timestep` to the plan's previous timestep, eq. (12).

        Parameters
        ----------
        model_output : array
            The model's output at (sample, timestep), in the configured prediction type.
        timestep : int or integer array
            A timestep of `self.timesteps` (a 0-d tensor is fine), or one per batch element.
        sample : array
            x_t: a torch tensor, or a NumPy, JAX, CuPy, Dask or array-api-strict array.
        eta : float, default 0.0
            0: deterministic DDIM; > 0 adds noise.
        use_clipped_model_output : bool, default False
            Re-derive eps_pred from the clipped x0_pred.
        generator : optional
            With eta > 0: a torch.Generator (or one per batch element), a NumPy Generator, a JAX
            key, ...; None draws from torch's global generator (as diffusers' `randn_tensor`).
        variance_noise : array, optional
            The noise itself, instead of a generator.
        return_dict : bool
            True (default with diffusers installed): a `DDIMSchedulerOutput`; False: a tuple.

        Returns
        -------
        DDIMSchedulerOutput or tuple
            (prev_sample, pred_original_sample).

        Raises
        ------
        ValueError
            `set_timesteps` was not called, or both `generator` and `variance_noise` were given.
        """
        plan = self._require_plan()
        noise = None
        if eta > 0:
            if variance_noise is not None and generator is not None:
                raise ValueError(
                    "Cannot pass both generator and variance_noise. Please make sure that "
                    "either `generator` or `variance_noise` stays `None`."
                )
            noise = variance_noise
            if noise is None:
                noise = standard_normal(generator, tuple(model_output.shape), like=model_output)
        out = dc.step(
            plan,
            model_output,
            _timestep_for(timestep, sample),
            sample,
            eta=eta,
            noise=noise,
            # DDIMPipeline passes None, which diffusers reads as False
            use_clipped_model_output=bool(use_clipped_model_output or False),
        )
        return _output(out, return_dict)

    def _get_variance(self, timestep: Any, prev_timestep: Any) -> Any:
        """sigma_t^2 / eta^2 of eq. (16) between two timesteps (prev < 0: the final level)."""
        a = self._schedule.alpha_bar(int(timestep))
        b = self._schedule.alpha_bar(max(int(prev_timestep), dc.FINAL))
        return _float_array(np.asarray(kernels.ddim_variance(a, b)))

    def _threshold_sample(self, sample: Any) -> Any:
        """Dynamic thresholding of a predicted x_0 (Imagen), per batch element."""
        c = self._ddim_config
        xp = backends.namespace(sample=sample)
        return kernels.threshold(sample, c.dynamic_thresholding_ratio, c.sample_max_value, xp=xp)


class DDIMInverseScheduler(_DDIMSchedulerBase):
    """DDIM inversion (x_0 -> x_T): diffusers' `DDIMInverseScheduler` API.

    `step(model_output, timestep, sample)` moves from the level of the plan timestep before
    `timestep` (the clean level before the first; with prev_timestep="stride", diffusers'
    timestep - T // N instead) up to `timestep`, with the model evaluated at `timestep` on
    `sample`, as diffusers does. The inverse plan mirrors the forward plan.

    Examples
    --------
    >>> import torch
    >>> inverse = DDIMInverseScheduler(clip_sample=False)
    >>> inverse.set_timesteps(5)
    >>> inverse.timesteps.tolist()
    [0, 200, 400, 600, 800]
    """

    _compatibles: list[str] = []  # as diffusers' DDIMInverseScheduler  # noqa: RUF012
    _inverse = True

    @register_to_config  # type: ignore[untyped-decorator]
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

    def step(
        self, model_output: Any, timestep: Any, sample: Any, return_dict: bool = RETURN_DICT
    ) -> Any:
        """One DDIM inversion step up to `timestep` (deterministic).

        Parameters
        ----------
        model_output : array
            The model's output at (sample, timestep).
        timestep : int or integer array
            The destination timestep.
        sample : array
            The less noisy sample.
        return_dict : bool
            As in `DDIMScheduler.step`.

        Returns
        -------
        DDIMSchedulerOutput or tuple
        """
        plan = self._require_plan()
        out = dc.inverse_step(plan, model_output, _timestep_for(timestep, sample), sample)
        return _output(out, return_dict)


def register() -> list[str]:
    """Make the classes visible where diffusers looks schedulers up by name.

    They become `diffusers.DDIMCoreScheduler` / `diffusers.DDIMCoreInverseScheduler` (also in
    `diffusers.schedulers`), so a model_index.json or script naming them loads them; and every
    diffusers scheduler compatible with DDIMScheduler lists DDIMCoreScheduler in its
    `compatibles`, the list UIs offer for swapping schedulers. Idempotent.

    Returns
    -------
    list of str
        The names registered.

    Examples
    --------
    >>> register()  # doctest: +SKIP
    ['DDIMCoreScheduler', 'DDIMCoreInverseScheduler']
    """
    import diffusers
    import diffusers.schedulers

    names = {"DDIMCoreScheduler": DDIMScheduler, "DDIMCoreInverseScheduler": DDIMInverseScheduler}
    for name, cls in names.items():
        for module in (diffusers, diffusers.schedulers):
            setattr(module, name, cls)
    for value in vars(diffusers.schedulers).values():
        peers = getattr(value, "_compatibles", None)
        if (
            isinstance(peers, list)
            and "DDIMScheduler" in peers
            and "DDIMCoreScheduler" not in peers
        ):
            peers.append("DDIMCoreScheduler")
    return list(names)


# --- helpers ---------------------------------------------------------------------------------


def _ddim_config(class_name: str, options: dict[str, Any]) -> dc.DDIMConfig:
    """The core config of the constructor options, rejecting what diffusers rejects the way
    diffusers does (an unknown beta_schedule is NotImplementedError)."""
    fields = {f.name for f in dataclasses.fields(dc.DDIMConfig)}
    kwargs = {k: v for k, v in options.items() if k in fields}
    betas = kwargs.get("trained_betas")
    if betas is None and kwargs.get("beta_schedule") not in BETA_SCHEDULES:
        raise NotImplementedError(
            f"beta_schedule={kwargs.get('beta_schedule')!r} is not implemented for {class_name}; "
            f"choose one of {BETA_SCHEDULES} or pass trained_betas"
        )
    if betas is not None:
        kwargs["trained_betas"] = tuple(backends.to_host(betas).reshape(-1).tolist())
    return dc.DDIMConfig(**kwargs)


def _output(out: dc.StepOutput, return_dict: bool) -> Any:
    if return_dict:
        return DDIMSchedulerOutput(prev_sample=out.prev_sample, pred_original_sample=out[1])
    return (out.prev_sample, out.pred_original_sample)


def _timestep_for(timestep: Any, sample: Any) -> Any:
    """A timestep the core takes with `sample`: Python ints as they are; an array of another
    library (torch `scheduler.timesteps` entries with NumPy or JAX samples) or on another
    device (diffusers' `timesteps.to(sample.device)`) is brought to the sample's."""
    if isinstance(timestep, int | np.integer):
        return int(timestep)
    xp = backends.namespace(sample=sample)
    try:
        if backends.namespace(timestep=timestep) is xp:
            if backends.device(timestep) == backends.device(sample):
                return timestep
            return timestep.to(backends.device(sample))
    except TypeError:
        pass
    host = backends.to_host(timestep, np.int64)
    if host.ndim == 0:
        return int(host)
    return xp.asarray(host, device=backends.device(sample))


def _same_table(table: np.ndarray, given: Any, exact: np.ndarray) -> bool:
    """Whether `given` (as float64 `table`) is `exact` rounded to given's dtype."""
    if table.shape != exact.shape:
        return False
    rounded = exact.astype(np.float32) if "float32" in str(given.dtype) else exact
    return bool(np.array_equal(table, rounded.astype(np.float64)))


def _float_array(values: np.ndarray) -> Any:
    """A float32 table: a torch tensor with diffusers (as diffusers' own), else NumPy."""
    table = np.ascontiguousarray(values, dtype=np.float32)
    if HAVE_DIFFUSERS:
        import torch

        return torch.from_numpy(table)
    return table


def _int_array(values: np.ndarray, device: Any) -> Any:
    values = np.ascontiguousarray(values, dtype=np.int64)
    if HAVE_DIFFUSERS:
        import torch

        return torch.from_numpy(values).to(device)
    return values
