"""mindone.diffusers-compatible DDIMScheduler and DDIMInverseScheduler, computed by ddim_core.

The constructor options, attributes and methods of mindone 0.5's classes (those of diffusers:
the behaviour is ddim_diffusers' `_scheduling`, shared), with mindone's conventions:
- `step(...)` returns `(prev_sample, pred_original_sample)` unless return_dict=True;
- `set_timesteps(num_inference_steps, timesteps=None)`: no device argument;
- `betas`, `alphas`, `alphas_cumprod`, `final_alpha_cumprod` are float32 MindSpore tensors and
  `timesteps` an int64 MindSpore tensor, as mindone's;
- with eta > 0, noise in the sample's dtype (as mindone's) from `generator`: a NumPy
  Generator or a list with one per batch element (mindone's `randn_tensor`: the same
  numbers), a mindspore.Generator, or None (MindSpore's default generator, seeded by
  `mindspore.manual_seed`).
And ddim_core's: `prev_timestep="plan"` (exact for every spacing; "stride" is mindone's rule),
float64 coefficients, one timestep per batch element.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from ddim_diffusers._scheduling import (
    ForwardScheduler,
    InverseScheduler,
    init_of,
    list_in_compatibles,
)

from ._compat import (
    COMPATIBLES,
    BaseOutput,
    DDIMInverseSchedulerBase,
    DDIMSchedulerBase,
    register_to_config,
)


@dataclasses.dataclass
class DDIMSchedulerOutput(BaseOutput):  # type: ignore[misc]
    """What `DDIMScheduler.step` returns with ``return_dict=True`` (mindone's BaseOutput, or
    ddim_diffusers' stand-in without mindone).

    Attributes
    ----------
    prev_sample : mindspore.Tensor
        x_{t-1} (x_t for inversion).
    pred_original_sample : mindspore.Tensor
        The predicted x_0.

    Examples
    --------
    >>> import numpy as np
    >>> out = DDIMSchedulerOutput(prev_sample=np.zeros(2), pred_original_sample=np.ones(2))
    >>> out[0] is out.prev_sample  # indexes like a tuple, as mindone's outputs do
    True
    """

    prev_sample: Any
    pred_original_sample: Any = None


def _mindspore() -> Any:
    """The mindspore module, or an ImportError naming the extra that installs it (the
    constructor is the first to need it: this package itself imports without it)."""
    try:
        import mindspore
    except ImportError:
        raise ImportError(
            "ddim_mindone's schedulers make MindSpore tensors, and MindSpore is not installed: "
            "pip install 'ddim-core[mindone]'"
        ) from None
    return mindspore


class _MindSporeTables:
    """Tables as mindone makes them: MindSpore tensors (float32 values, int64 timesteps)."""

    _output_class = DDIMSchedulerOutput
    _noise_like = "sample"  # mindone draws eta noise in the sample's dtype

    def _float_table(self, values: np.ndarray) -> Any:
        return _mindspore().tensor(np.asarray(values, dtype=np.float32))

    def _int_table(self, values: np.ndarray, device: Any) -> Any:
        return _mindspore().tensor(np.ascontiguousarray(values, dtype=np.int64))


class DDIMScheduler(_MindSporeTables, ForwardScheduler, DDIMSchedulerBase):  # type: ignore[misc]
    """Denoising diffusion implicit models (Song et al. 2021): mindone.diffusers'
    DDIMScheduler API on MindSpore tensors.

    The constructor takes mindone's (diffusers') options and `prev_timestep`; `from_config`,
    `from_pretrained`, `save_pretrained` and `compatibles` are mindone's (ddim_diffusers'
    stand-ins without it). With mindone it is a subclass of mindone's DDIMScheduler
    (`isinstance` checks in pipelines pass) that defines every name that class defines, so
    none of its code runs. The examples need MindSpore (docs/mindspore.md has more, run by
    ``make test-mindspore``).

    Examples
    --------
    >>> import mindspore, numpy as np  # doctest: +SKIP
    >>> scheduler = DDIMScheduler(clip_sample=False, timestep_spacing="trailing")  # doctest: +SKIP
    >>> scheduler.set_timesteps(4)  # doctest: +SKIP
    >>> scheduler.timesteps.asnumpy().tolist()  # doctest: +SKIP
    [999, 749, 499, 249]
    >>> x = mindspore.tensor(np.ones((1, 2)), mindspore.float32)  # doctest: +SKIP
    >>> for t in scheduler.timesteps:  # doctest: +SKIP
    ...     x = scheduler.step(0.1 * x, t, x)[0]  # a tuple by default, as mindone's
    >>> isinstance(x, mindspore.Tensor), x.dtype == mindspore.float32  # doctest: +SKIP
    (True, True)
    """

    _compatibles = COMPATIBLES
    __init__ = register_to_config(init_of("DDIMScheduler", ForwardScheduler.__init__))

    def set_timesteps(  # type: ignore[override]  # mindone's signature: no device
        self, num_inference_steps: int | None = None, timesteps: list[int] | None = None
    ) -> None:
        """Choose the plan: `num_inference_steps` with the configured spacing, or explicit
        `timesteps` (descending).

        Parameters
        ----------
        num_inference_steps : int, optional
            The number of steps (N).
        timesteps : list of int, optional
            Explicit timesteps, descending, instead of `num_inference_steps`.

        Raises
        ------
        ValueError
            Neither or both given, a step count outside [1, num_train_timesteps], or
            timesteps that are not strictly descending within [0, num_train_timesteps).
        """
        ForwardScheduler.set_timesteps(self, num_inference_steps, None, timesteps)

    def step(
        self,
        model_output: Any,
        timestep: Any,
        sample: Any,
        eta: float = 0.0,
        use_clipped_model_output: bool = False,
        generator: Any = None,
        variance_noise: Any = None,
        return_dict: bool = False,
    ) -> Any:
        """One DDIM step from `timestep` to the plan's previous timestep, eq. (12).

        Parameters
        ----------
        model_output : mindspore.Tensor
            The model's output at (sample, timestep), in the configured prediction type.
        timestep : int or integer tensor
            A timestep of `self.timesteps`, or one per batch element.
        sample : mindspore.Tensor
            x_t.
        eta : float, default 0.0
            0: deterministic DDIM; > 0 adds noise.
        use_clipped_model_output : bool, default False
            Re-derive eps_pred from the clipped x0_pred.
        generator : optional
            With eta > 0: a NumPy Generator or a list with one per batch element (mindone's
            `randn_tensor`), a mindspore.Generator, or None (MindSpore's default generator).
            The noise is drawn in the sample's dtype, as mindone's.
        variance_noise : mindspore.Tensor, optional
            The noise itself, instead of a generator.
        return_dict : bool, default False
            True: a `DDIMSchedulerOutput`; False: a tuple, as mindone's.

        Returns
        -------
        tuple or DDIMSchedulerOutput
            (prev_sample, pred_original_sample).

        Raises
        ------
        ValueError
            `set_timesteps` was not called, or both `generator` and `variance_noise` were given.
        """
        return self._step(
            model_output,
            timestep,
            sample,
            eta,
            use_clipped_model_output,
            generator,
            variance_noise,
            return_dict,
        )


class DDIMInverseScheduler(_MindSporeTables, InverseScheduler, DDIMInverseSchedulerBase):  # type: ignore[misc]
    """DDIM inversion (x_0 -> x_T): mindone.diffusers' DDIMInverseScheduler API on MindSpore
    tensors; the inverse plan mirrors the forward plan (see InverseScheduler). With mindone,
    a subclass of its DDIMInverseScheduler defining every name that defines.

    Examples
    --------
    >>> import mindspore, numpy as np  # doctest: +SKIP
    >>> inverse = DDIMInverseScheduler(timestep_spacing="trailing")  # doctest: +SKIP
    >>> inverse.set_timesteps(4)  # doctest: +SKIP
    >>> inverse.timesteps.asnumpy().tolist()  # doctest: +SKIP
    [249, 499, 749, 999]
    >>> z = mindspore.tensor(np.full((1, 2), 0.5), mindspore.float32)  # doctest: +SKIP
    >>> for t in inverse.timesteps:  # from x_0 up to x_T at t = 999
    ...     z = inverse.step(0.1 * z, t, z)[0]  # doctest: +SKIP
    >>> isinstance(z, mindspore.Tensor), z.shape  # doctest: +SKIP
    (True, (1, 2))
    """

    _compatibles: list[str] = []  # as mindone's DDIMInverseScheduler  # noqa: RUF012
    __init__ = register_to_config(init_of("DDIMInverseScheduler", InverseScheduler.__init__))

    def set_timesteps(  # type: ignore[override]  # mindone's signature: no device
        self, num_inference_steps: int | None = None, timesteps: list[int] | None = None
    ) -> None:
        """Choose the plan; `timesteps`, if given, ascending (the order inversion runs).

        Parameters
        ----------
        num_inference_steps : int, optional
            The number of steps (N).
        timesteps : list of int, optional
            Explicit timesteps, ascending, instead of `num_inference_steps`.

        Raises
        ------
        ValueError
            Neither or both given, a step count outside [1, num_train_timesteps], or
            timesteps that are not strictly ascending within [0, num_train_timesteps).
        """
        InverseScheduler.set_timesteps(self, num_inference_steps, None, timesteps)

    def step(self, model_output: Any, timestep: Any, sample: Any, return_dict: bool = False) -> Any:
        """One DDIM inversion step up to `timestep` (deterministic), eq. (12) with sigma = 0.

        Parameters
        ----------
        model_output : mindspore.Tensor
            The model's output at (sample, timestep), in the configured prediction type.
        timestep : int or integer tensor
            A timestep of `self.timesteps`, or one per batch element.
        sample : mindspore.Tensor
            The sample at the level the step leaves (x_0 before the first step).
        return_dict : bool, default False
            True: a `DDIMSchedulerOutput`; False: a tuple, as mindone's.

        Returns
        -------
        tuple or DDIMSchedulerOutput
            (prev_sample, pred_original_sample): prev_sample is the sample at `timestep`.

        Raises
        ------
        ValueError
            `set_timesteps` was not called.
        """
        return self._step(model_output, timestep, sample, return_dict)


def register() -> list[str]:
    """Make the classes visible where mindone looks schedulers up by name.

    They become `mindone.diffusers.DDIMCoreScheduler` / `DDIMCoreInverseScheduler` (also in
    `mindone.diffusers.schedulers`), and every mindone scheduler compatible with
    DDIMScheduler, mindone's DDIMScheduler and ours list ours in their `compatibles`.
    Idempotent.

    Returns
    -------
    list of str
        The names added: ``["DDIMCoreScheduler", "DDIMCoreInverseScheduler"]``.

    Raises
    ------
    ImportError
        mindone is not installed.

    Examples
    --------
    >>> import mindone.diffusers  # doctest: +SKIP
    >>> register()  # doctest: +SKIP
    ['DDIMCoreScheduler', 'DDIMCoreInverseScheduler']
    >>> mindone.diffusers.DDIMCoreScheduler is DDIMScheduler  # doctest: +SKIP
    True
    """
    import mindone.diffusers
    import mindone.diffusers.schedulers
    from mindone.diffusers.schedulers.scheduling_utils import SchedulerMixin as Mixin

    names = {"DDIMCoreScheduler": DDIMScheduler, "DDIMCoreInverseScheduler": DDIMInverseScheduler}
    for name, cls in names.items():
        for module in (mindone.diffusers, mindone.diffusers.schedulers):
            setattr(module, name, cls)
    list_in_compatibles(Mixin, DDIMScheduler)  # as ddim_diffusers: ours lists itself too
    for value in _scheduler_classes(mindone.diffusers.schedulers):
        peers = getattr(value, "_compatibles", None)
        if (
            isinstance(peers, list)
            and "DDIMScheduler" in peers
            and "DDIMCoreScheduler" not in peers
        ):
            peers.append("DDIMCoreScheduler")
    return list(names)


# a pipeline's save_pretrained records a component's class under its module: the package,
# which mindone's DiffusionPipeline.from_pretrained imports to find the class again and its
# SchedulerMixin (exported there) to know how to load it
for _cls in (DDIMScheduler, DDIMInverseScheduler, DDIMSchedulerOutput):
    _cls.__module__ = "ddim_mindone"


def _scheduler_classes(module: Any) -> list[Any]:
    """The classes a lazily loading module exports (loaded now; one that fails is skipped)."""
    found = []
    for name in getattr(module, "__all__", None) or dir(module):
        try:
            value = getattr(module, name)
        except (AttributeError, ImportError, RuntimeError):
            continue
        if isinstance(value, type):
            found.append(value)
    return found
