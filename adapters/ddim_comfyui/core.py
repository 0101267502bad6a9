"""The node pack without ComfyUI: sampler functions, the DDIM schedule, node schemas as data.

ComfyUI's samplers have k-diffusion's signature and see a model that returns the denoised x0
from VE-scaled latents (x / sqrt(alpha_bar), sigma = sqrt((1 - alpha_bar) / alpha_bar)); its
`extra_args` carry the required `denoise_mask`, forwarded to the model untouched.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from ddim_kdiffusion import get_sigmas_ddim, sample_ddim, sample_ddim_inverse

from ddim_core.config import TIMESTEP_SPACINGS

SAMPLER_NAMES = ("ddim_core", "ddim_core_inverse")
CATEGORY = "sampling/custom_sampling"

sample_ddim_core = sample_ddim


def sample_ddim_core_inverse(
    model: Callable[..., Any],
    x: Any,
    sigmas: Any,
    extra_args: dict[str, Any] | None = None,
    callback: Callable[[dict[str, Any]], Any] | None = None,
    disable: bool | None = None,
    fixed_point_iters: int = 0,
    tol: float | None = None,
) -> Any:
    """DDIM inversion for ComfyUI (the "ddim_core_inverse" sampler).

    Ascending sigmas are used as they are; descending ones (a stock scheduler's, e.g. in
    KSamplerAdvanced with add_noise off) are walked in reverse, from the clean end up to the
    noisiest level.

    Parameters
    ----------
    model, x, sigmas, extra_args, callback, disable
        As `ddim_kdiffusion.sample_ddim_inverse` (ComfyUI's sampler signature).
    fixed_point_iters : int, default 0
        Extra model calls per step for the exact solve.
    tol : float, optional
        Stop below this residual; 0 or None: off.

    Returns
    -------
    array

    Examples
    --------
    >>> import torch, ddim_core as dc
    >>> from ddim_kdiffusion import get_sigmas_ddim
    >>> sigmas = torch.from_numpy(get_sigmas_ddim(dc.DDIMConfig(), 5))  # descending
    >>> z = sample_ddim_core_inverse(lambda x, s: 0 * x, torch.zeros(1, 2), sigmas, disable=True)
    >>> z.shape
    torch.Size([1, 2])
    """
    if len(sigmas) >= 2 and float(sigmas[0]) > float(sigmas[-1]):
        sigmas = flip_sigmas(sigmas)
    return sample_ddim_inverse(
        model, x, sigmas, extra_args, callback, disable, fixed_point_iters, tol or None
    )


def ddim_sigmas(model: Any, steps: int, spacing: str, steps_offset: int, denoise: float) -> Any:
    """SIGMAS of a DDIM plan on a ComfyUI MODEL's discrete schedule, ending in 0.

    alpha_bar is recovered from `model_sampling.sigmas` as 1 / (1 + sigma^2) in float64. With
    denoise < 1 the plan has int(steps / denoise) steps and the last steps + 1 sigmas are kept,
    as ComfyUI's BasicScheduler does.

    Parameters
    ----------
    model : ComfyUI MODEL
        Anything with ``get_model_object("model_sampling").sigmas``.
    steps : int
    spacing : str
        "leading", "trailing" or "linspace".
    steps_offset : int
    denoise : float
        In [0, 1].

    Returns
    -------
    torch.Tensor
        float32 on the CPU, as ComfyUI's schedulers return.

    Raises
    ------
    ValueError
        The model has no discrete schedule.

    Examples
    --------
    >>> import torch, types, ddim_core as dc
    >>> ab = torch.from_numpy(dc.alphas_cumprod(dc.DDIMConfig()))
    >>> sampling = types.SimpleNamespace(sigmas=((1 - ab) / ab).sqrt())
    >>> model = types.SimpleNamespace(get_model_object=lambda name: sampling)
    >>> ddim_sigmas(model, 4, "trailing", 0, 1.0).shape
    torch.Size([5])
    """
    model_sampling = model.get_model_object("model_sampling")
    table = getattr(model_sampling, "sigmas", None)
    if table is None or table.ndim != 1 or table.shape[0] < 2:
        raise ValueError(
            "DDIM Schedule needs a model with a discrete noise schedule (model_sampling.sigmas); "
            f"got {type(model_sampling).__name__}"
        )
    if denoise <= 0.0:
        return table.new_zeros((0,))
    total = steps if denoise >= 1.0 else int(steps / denoise)
    alphas_cumprod = 1.0 / (1.0 + table.double() ** 2)
    sigmas = get_sigmas_ddim(
        alphas_cumprod, total, spacing=spacing, steps_offset=steps_offset, set_alpha_to_one=True
    )
    return sigmas[-(steps + 1) :].float().cpu()


def flip_sigmas(sigmas: Any) -> Any:
    """Descending sampling sigmas as ascending inversion sigmas.

    A first sigma of 0 stays 0: the DDIM inverse evaluates the model at the destination level
    (ComfyUI's FlipSigmas moves it to 0.0001 because Euler from 0 divides by zero).

    Parameters
    ----------
    sigmas : torch.Tensor

    Returns
    -------
    torch.Tensor

    Examples
    --------
    >>> import torch
    >>> flip_sigmas(torch.tensor([2.0, 1.0, 0.0])).tolist()
    [0.0, 1.0, 2.0]
    """
    return sigmas.flip(0)


# --- node schemas, as data ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Param:
    """One node input.

    Attributes
    ----------
    name : str
    kind : str
        INT, FLOAT, COMBO, MODEL or SIGMAS.
    default, min, max, step : optional
        Widget settings.
    options : tuple of str
        A COMBO's choices.
    tooltip : str

    Examples
    --------
    >>> Param("eta", "FLOAT", 0.0, 0.0, 1.0, 0.01).kind
    'FLOAT'
    """

    name: str
    kind: str
    default: Any = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    options: tuple[str, ...] = ()
    tooltip: str = ""


@dataclasses.dataclass(frozen=True)
class NodeSpec:
    """One node: its schema, and `run`, what it computes from its inputs (see `run_node`).

    Examples
    --------
    >>> [spec.node_id for spec in NODES]
    ['DDIMCoreSampler', 'DDIMCoreInversionSampler', 'DDIMCoreSchedule', 'DDIMCoreFlipSigmas']
    """

    node_id: str
    display_name: str
    category: str
    inputs: tuple[Param, ...]
    output: str  # SAMPLER or SIGMAS
    description: str
    run: Callable[..., Any]


def _sampler(eta: float, s_noise: float) -> tuple[Any, dict[str, Any]]:
    return sample_ddim_core, {"eta": eta, "s_noise": s_noise}


def _inversion_sampler(fixed_point_iters: int, tol: float) -> tuple[Any, dict[str, Any]]:
    return sample_ddim_core_inverse, {"fixed_point_iters": fixed_point_iters, "tol": tol}


NODES = (
    NodeSpec(
        "DDIMCoreSampler",
        "DDIM Sampler (ddim-core)",
        f"{CATEGORY}/samplers",
        (
            Param(
                "eta", "FLOAT", 0.0, 0.0, 1.0, 0.01, tooltip="0: deterministic DDIM, 1: DDPM-like"
            ),
            Param("s_noise", "FLOAT", 1.0, 0.0, 100.0, 0.01, tooltip="scale of the added noise"),
        ),
        "SAMPLER",
        "DDIM (Song et al. 2021) computed by ddim-core; eta = 0 is deterministic.",
        _sampler,
    ),
    NodeSpec(
        "DDIMCoreInversionSampler",
        "DDIM Inversion Sampler (ddim-core)",
        f"{CATEGORY}/samplers",
        (
            Param("fixed_point_iters", "INT", 0, 0, 100, 1, tooltip="0: plain DDIM inversion"),
            Param(
                "tol", "FLOAT", 0.0, 0.0, 1.0, 0.0001, tooltip="stop refining below this; 0: off"
            ),
        ),
        "SAMPLER",
        "DDIM inversion from a clean latent up the sigmas (ascending, e.g. from Flip to "
        "Inversion Sigmas); fixed-point refinement makes sampling return the input.",
        _inversion_sampler,
    ),
    NodeSpec(
        "DDIMCoreSchedule",
        "DDIM Schedule (ddim-core)",
        f"{CATEGORY}/schedulers",
        (
            Param("model", "MODEL"),
            Param("steps", "INT", 20, 1, 10000, 1),
            Param("spacing", "COMBO", "trailing", options=TIMESTEP_SPACINGS),
            Param("steps_offset", "INT", 0, 0, 1000, 1, tooltip="leading spacing only"),
            Param("denoise", "FLOAT", 1.0, 0.0, 1.0, 0.01),
        ),
        "SIGMAS",
        "The sigmas of diffusers' DDIM timesteps (leading / trailing / linspace) on the model's "
        "own schedule, ending in 0.",
        ddim_sigmas,
    ),
    NodeSpec(
        "DDIMCoreFlipSigmas",
        "Flip to Inversion Sigmas (ddim-core)",
        f"{CATEGORY}/sigmas",
        (Param("sigmas", "SIGMAS"),),
        "SIGMAS",
        "Reverse sampling sigmas for the DDIM Inversion Sampler (keeps a first sigma of 0).",
        flip_sigmas,
    ),
)


_BY_ID = {spec.node_id: spec for spec in NODES}


def run_node(node_id: str, **inputs: Any) -> tuple[Any, dict[str, Any]] | Any:
    """What a node computes: (sampler function, its options) for the sampler nodes, SIGMAS for
    the others. The comfy layer wraps sampler functions in `comfy.samplers.KSAMPLER`.

    Parameters
    ----------
    node_id : str
        A `NodeSpec.node_id`.
    **inputs
        The node's inputs by name.

    Returns
    -------
    tuple or torch.Tensor

    Raises
    ------
    ValueError
        An unknown node.

    Examples
    --------
    >>> function, options = run_node("DDIMCoreSampler", eta=0.0, s_noise=1.0)
    >>> function.__name__, options
    ('sample_ddim', {'eta': 0.0, 's_noise': 1.0})
    """
    spec = _BY_ID.get(node_id)
    if spec is None:
        raise ValueError(f"unknown node {node_id!r}; known: {list(_BY_ID)}")
    return spec.run(**inputs)
