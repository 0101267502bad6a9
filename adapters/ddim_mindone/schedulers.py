"""mindone.diffusers-compatible DDIMScheduler and DDIMInverseScheduler, computed by ddim_core.

The constructor options, attributes and methods of mindone 0.5's classes (those of diffusers:
the behaviour is ddim_diffusers' `_scheduling`, shared), with mindone's conventions:
- `step(...)` returns `(prev_sample, pred_original_sample)` unless return_dict=True;
- `set_timesteps(num_inference_steps, timesteps=None)`: no device argument;
- `betas`, `alphas`, `alphas_cumprod`, `final_alpha_cumprod` are float32 MindSpore tensors and
  `timesteps` an int64 MindSpore tensor, as mindone's;
- with eta > 0, noise from `generator`: a NumPy Generator or a list with one per batch
  element (mindone's `randn_tensor`: the same numbers), a mindspore.Generator, or None
  (MindSpore's default generator, seeded by `mindspore.manual_seed`).
And ddim_core's: `prev_timestep="plan"` (exact for every spacing; "stride" is mindone's rule),
float64 coefficients, one timestep per batch element.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from ddim_diffusers._scheduling import ForwardScheduler, InverseScheduler

from ._compat import COMPATIBLES, BaseOutput, ConfigMixin, SchedulerMixin, register_to_config


@dataclasses.dataclass
class DDIMSchedulerOutput(BaseOutput):  # type: ignore[misc]
    """prev_sample: x_{t-1} (x_t for inversion); pred_original_sample: the predicted x_0."""

    prev_sample: Any
    pred_original_sample: Any = None


class _MindSporeTables:
    """Tables as mindone makes them: MindSpore tensors (float32 values, int64 timesteps)."""

    _output_class = DDIMSchedulerOutput

    def _float_table(self, values: np.ndarray) -> Any:
        import mindspore

        return mindspore.tensor(np.asarray(values, dtype=np.float32))

    def _int_table(self, values: np.ndarray, device: Any) -> Any:
        import mindspore

        return mindspore.tensor(np.ascontiguousarray(values, dtype=np.int64))


class DDIMScheduler(_MindSporeTables, ForwardScheduler, SchedulerMixin, ConfigMixin):  # type: ignore[misc]
    """Denoising diffusion implicit models (Song et al. 2021): mindone.diffusers'
    DDIMScheduler API on MindSpore tensors."""

    _compatibles = COMPATIBLES
    __init__ = register_to_config(ForwardScheduler.__init__)

    def set_timesteps(  # type: ignore[override]  # mindone's signature: no device
        self, num_inference_steps: int | None = None, timesteps: list[int] | None = None
    ) -> None:
        """Choose the plan: `num_inference_steps` with the configured spacing, or explicit
        `timesteps` (descending)."""
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
        """One DDIM step from `timestep` to the plan's previous timestep, eq. (12); returns
        (prev_sample, pred_original_sample), or DDIMSchedulerOutput with return_dict=True."""
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


class DDIMInverseScheduler(_MindSporeTables, InverseScheduler, SchedulerMixin, ConfigMixin):  # type: ignore[misc]
    """DDIM inversion (x_0 -> x_T): mindone.diffusers' DDIMInverseScheduler API on MindSpore
    tensors; the inverse plan mirrors the forward plan (see InverseScheduler)."""

    _compatibles: list[str] = []  # as mindone's DDIMInverseScheduler  # noqa: RUF012
    __init__ = register_to_config(InverseScheduler.__init__)

    def set_timesteps(  # type: ignore[override]  # mindone's signature: no device
        self, num_inference_steps: int | None = None, timesteps: list[int] | None = None
    ) -> None:
        """Choose the plan; `timesteps`, if given, ascending (the order inversion runs)."""
        InverseScheduler.set_timesteps(self, num_inference_steps, None, timesteps)

    def step(self, model_output: Any, timestep: Any, sample: Any, return_dict: bool = False) -> Any:
        """One DDIM inversion step up to `timestep` (deterministic); a tuple by default."""
        return self._step(model_output, timestep, sample, return_dict)


def register() -> list[str]:
    """Make the classes visible where mindone looks schedulers up by name.

    They become `mindone.diffusers.DDIMCoreScheduler` / `DDIMCoreInverseScheduler` (also in
    `mindone.diffusers.schedulers`), and every mindone scheduler compatible with
    DDIMScheduler lists DDIMCoreScheduler in its `compatibles`. Idempotent.
    """
    import mindone.diffusers
    import mindone.diffusers.schedulers

    names = {"DDIMCoreScheduler": DDIMScheduler, "DDIMCoreInverseScheduler": DDIMInverseScheduler}
    for name, cls in names.items():
        for module in (mindone.diffusers, mindone.diffusers.schedulers):
            setattr(module, name, cls)
    for value in _scheduler_classes(mindone.diffusers.schedulers):
        peers = getattr(value, "_compatibles", None)
        if (
            isinstance(peers, list)
            and "DDIMScheduler" in peers
            and "DDIMCoreScheduler" not in peers
        ):
            peers.append("DDIMCoreScheduler")
    return list(names)


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
