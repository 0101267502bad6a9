"""diffusers-compatible DDIMScheduler and DDIMInverseScheduler, computed by ddim_core.

Same constructor arguments, defaults, attributes and methods as diffusers 0.42's classes, plus:
- `prev_timestep`: "plan" (default: t_prev is the next timestep of the plan, exact for every
  spacing) or "stride" (diffusers' `t - num_train_timesteps // num_inference_steps`);
- `step` takes one timestep per batch element, and NumPy, JAX, CuPy, Dask or array-api-strict
  arrays as well as torch tensors (outputs in the sample's library, device and dtype);
- the step maths runs on float64 coefficients, cast where they meet the sample.
`alphas_cumprod` & co. are float32 tables like diffusers'; assigning a different table to
`alphas_cumprod` makes the scheduler step on that table, and an array assigned to it (or to the
boundary level) reads back as assigned, as diffusers' does (`_get_variance` in its dtype).
A torch or NumPy table written in place (`alphas_cumprod[-1] = 0.0`) is followed from the next
call, as diffusers reads its table at every step.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ._compat import (
    COMPATIBLES,
    HAVE_DIFFUSERS,
    RETURN_DICT,
    BaseOutput,
    DDIMInverseSchedulerBase,
    DDIMSchedulerBase,
    register_to_config,
)
from ._scheduling import ForwardScheduler, InverseScheduler, init_of, list_in_compatibles


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


class _DiffusersTables:
    """Tables and outputs as diffusers makes them: float32 torch tensors (NumPy arrays without
    diffusers), and DDIMSchedulerOutput."""

    _output_class = DDIMSchedulerOutput

    def _float_table(self, values: np.ndarray) -> Any:
        return _float_array(values)

    def _int_table(self, values: np.ndarray, device: Any) -> Any:
        return _int_array(values, device)


class DDIMScheduler(_DiffusersTables, ForwardScheduler, DDIMSchedulerBase):  # type: ignore[misc]
    """Denoising diffusion implicit models (Song et al. 2021): diffusers' DDIMScheduler API.

    The constructor takes diffusers' options (`DDIMConfig`'s, under the same names) and
    `prev_timestep`; `from_config`, `from_pretrained`, `save_pretrained` and `compatibles`
    are the host's (diffusers', or the stand-ins without it). With diffusers it is a subclass
    of diffusers' DDIMScheduler (`isinstance` checks in pipelines pass) that defines every
    name that class defines, so none of its code runs.

    Examples
    --------
    >>> import numpy as np, ddim_core as dc
    >>> scheduler = DDIMScheduler(clip_sample=False, timestep_spacing="trailing")
    >>> scheduler.set_timesteps(4)
    >>> scheduler.timesteps.tolist()
    [999, 749, 499, 249]
    >>> x = np.ones((1, 2))  # x_T, a NumPy array: any array library steps
    >>> for t in scheduler.timesteps:
    ...     x = scheduler.step(np.zeros_like(x), t, x, return_dict=False)[0]  # eps_pred = 0
    >>> alpha_bar_T = dc.schedule(dc.DDIMConfig()).alpha_bar(999)
    >>> bool(np.allclose(x, 1 / np.sqrt(alpha_bar_T), rtol=1e-12))  # x_0 = x_T / sqrt(abar_T)
    True
    """

    _compatibles = COMPATIBLES
    __init__ = register_to_config(init_of("DDIMScheduler", ForwardScheduler.__init__))  # type: ignore[no-untyped-call]

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
            A JAX key is a value no draw advances: the step from the plan's i-th timestep
            draws ``jax.random.normal(fold_in(key, i))``, as ``ddim_core.sample(...,
            generator=key)`` does, so one key passed at every step gives each step fresh
            noise, and the same call the same noise. A timestep array the host cannot read
            (on an accelerator, under ``jax.jit``) draws with i = 0: split the key per step.
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
        TypeError
            `model_output`, `sample` or (eta > 0) `variance_noise` is not a real
            floating-point array, or they are arrays of two libraries (the message names
            the argument).
        ValueError
            `set_timesteps` was not called, both `generator` and `variance_noise` were given,
            or the arrays differ in shape or device.
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


class DDIMInverseScheduler(_DiffusersTables, InverseScheduler, DDIMInverseSchedulerBase):  # type: ignore[misc]
    """DDIM inversion (x_0 -> x_T): diffusers' DDIMInverseScheduler API (see InverseScheduler);
    with diffusers, a subclass of its DDIMInverseScheduler defining every name that defines.

    Its timesteps are the forward plan's, ascending; each step goes up from the level of the
    plan timestep before `timestep` (the clean level before the first) to `timestep`.

    Examples
    --------
    >>> import numpy as np
    >>> forward = DDIMScheduler(clip_sample=False, timestep_spacing="trailing")
    >>> inverse = DDIMInverseScheduler.from_config(forward.config)
    >>> forward.set_timesteps(4)
    >>> inverse.set_timesteps(4)
    >>> inverse.timesteps.tolist()
    [249, 499, 749, 999]
    >>> x0 = np.array([[0.5, -0.5]])
    >>> z = x0
    >>> for t in inverse.timesteps:  # a model whose output does not depend on x: exact
    ...     z = inverse.step(np.zeros_like(z), t, z, return_dict=False)[0]
    >>> x = z
    >>> for t in forward.timesteps:
    ...     x = forward.step(np.zeros_like(x), t, x, return_dict=False)[0]
    >>> float(np.abs(x - x0).max()) < 1e-12
    True
    """

    _compatibles: list[str] = []  # as diffusers' DDIMInverseScheduler  # noqa: RUF012
    __init__ = register_to_config(init_of("DDIMInverseScheduler", InverseScheduler.__init__))  # type: ignore[no-untyped-call]

    def step(
        self, model_output: Any, timestep: Any, sample: Any, return_dict: bool = RETURN_DICT
    ) -> Any:
        """One DDIM inversion step up to `timestep` (deterministic), eq. (12) with sigma = 0.

        Parameters
        ----------
        model_output : array
            The model's output at (sample, timestep), in the configured prediction type.
        timestep : int or integer array
            A timestep of `self.timesteps`, or one per batch element.
        sample : array
            The sample at the level the step leaves (x_0 before the first step).
        return_dict : bool
            True (default with diffusers installed): a `DDIMSchedulerOutput`; False: a tuple.

        Returns
        -------
        DDIMSchedulerOutput or tuple
            (prev_sample, pred_original_sample): prev_sample is the sample at `timestep`.

        Raises
        ------
        ValueError
            `set_timesteps` was not called.
        """
        return self._step(model_output, timestep, sample, return_dict)


def register() -> list[str]:
    """Make the classes visible where diffusers looks schedulers up by name.

    They become `diffusers.DDIMCoreScheduler` / `diffusers.DDIMCoreInverseScheduler` (also in
    `diffusers.schedulers`), so a model_index.json or script naming them loads them; and
    every diffusers scheduler compatible with DDIMScheduler, whether imported already or later
    (diffusers imports them lazily), lists DDIMCoreScheduler in its `compatibles`, the list
    UIs offer for swapping schedulers. Idempotent.

    Returns
    -------
    list of str
        The names added: ``["DDIMCoreScheduler", "DDIMCoreInverseScheduler"]``.

    Examples
    --------
    >>> import diffusers  # doctest: +SKIP
    >>> register()  # doctest: +SKIP
    ['DDIMCoreScheduler', 'DDIMCoreInverseScheduler']
    >>> diffusers.DDIMCoreScheduler is DDIMScheduler  # doctest: +SKIP
    True
    """
    import diffusers
    import diffusers.schedulers
    from diffusers.schedulers.scheduling_utils import SchedulerMixin as Mixin

    names = {"DDIMCoreScheduler": DDIMScheduler, "DDIMCoreInverseScheduler": DDIMInverseScheduler}
    for name, cls in names.items():
        for module in (diffusers, diffusers.schedulers):
            setattr(module, name, cls)
    list_in_compatibles(Mixin, DDIMScheduler)
    for value in vars(diffusers.schedulers).values():  # the lists of classes already imported
        peers = getattr(value, "_compatibles", None)
        if (
            isinstance(peers, list)
            and "DDIMScheduler" in peers
            and "DDIMCoreScheduler" not in peers
        ):
            peers.append("DDIMCoreScheduler")
    return list(names)


# save_pretrained records a component's class under its module: the package, whose plain
# import is enough for DiffusionPipeline.from_pretrained to find it again (it resolves
# libraries it does not know from sys.modules; the names load lazily from there)
for _cls in (DDIMScheduler, DDIMInverseScheduler, DDIMSchedulerOutput):
    _cls.__module__ = "ddim_diffusers"


# --- helpers ---------------------------------------------------------------------------------


def _float_array(values: np.ndarray) -> Any:
    """A float32 table: a torch tensor with diffusers (as diffusers' own), else NumPy."""
    table = np.array(values, dtype=np.float32)  # a copy: positive strides for torch
    if HAVE_DIFFUSERS:
        import torch

        return torch.from_numpy(table)
    return table


def _int_array(values: np.ndarray, device: Any) -> Any:
    values = np.array(values, dtype=np.int64)  # a copy: positive strides for torch
    if HAVE_DIFFUSERS:
        import torch

        return torch.from_numpy(values).to(device)
    return values
