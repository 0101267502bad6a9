"""The node pack without ComfyUI: sampler functions, the DDIM schedule, node schemas as data.

ComfyUI's samplers have k-diffusion's signature and see a model that returns the denoised x0
from VE-scaled latents (x / sqrt(alpha_bar), sigma = sqrt((1 - alpha_bar) / alpha_bar)); its
`extra_args` carry the required `denoise_mask`, forwarded to the model untouched, and the
`seed` its ancestral samplers draw their noise from.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Iterator
from typing import Any

from ddim_kdiffusion import get_sigmas_ddim, sample_ddim, sample_ddim_inverse

from ddim_core.config import TIMESTEP_SPACINGS, check_nonnegative
from ddim_core.plugins import standard_normal

# The stock KSampler's list: sampling only. It always adds noise before sampling, so inversion
# (SamplerCustom / SamplerCustomAdvanced with the DDIM Inversion Sampler) is not offered there.
KSAMPLER_NAMES = ("ddim_core",)
CATEGORY = "sampling/custom_sampling"

# Exact inversion by default: refinements per step, and the residual that ends them early
# (tol 1e-6 is about float32's floor; on the test bed of benchmarks/inversion.py, float32
# with tol 2e-6 takes 2.0 to 3.8 model calls per step on average, guidance 1 to 7.5, 20 and
# 50 steps: the "exact k=30, tol" rows of benchmarks/results/inversion.md; 8 refinements cap
# a step at 9 calls where tol is out of reach). A float16 / bfloat16 model's residual levels
# off far above tol: for it the samplers stop a step that has stalled (`computes_in_half`,
# solve_step's stall): 102 model calls for 20 steps instead of 180 in a real ComfyUI
# (tests/test_comfyui_integration.py), round trip 1.4e-3 instead of 2.2e-3.
INVERSION_ITERS = 8
INVERSION_TOL = 1e-6
# ComfyUI's FlipSigmas makes a first sigma of 0 this (its Euler steps would divide by 0)
FLIP_SIGMAS_ZERO = 1e-4


def sample_ddim_core(
    model: Callable[..., Any],
    x: Any,
    sigmas: Any,
    extra_args: dict[str, Any] | None = None,
    callback: Callable[[dict[str, Any]], Any] | None = None,
    disable: bool | None = None,
    eta: float = 0.0,
    s_noise: float = 1.0,
    noise_sampler: Callable[[Any, Any], Any] | None = None,
) -> Any:
    """`ddim_kdiffusion.sample_ddim` with ComfyUI's noise: for eta > 0 without a noise_sampler,
    one standard normal draw like x per step from a torch.Generator on x's device seeded with
    ComfyUI's seed (`extra_args["seed"]`), as ComfyUI's ancestral samplers draw theirs. So a
    seed gives one result (with DisableNoise too), and eta = 1 equals euler_ancestral given
    the same seed. Without a seed: torch's global generator, as there.

    Parameters
    ----------
    model, x, sigmas, extra_args, callback, disable
        As `ddim_kdiffusion.sample_ddim` (ComfyUI's sampler signature); ``extra_args["seed"]``,
        if there, seeds the noise.
    eta : float, default 0.0
        0 is deterministic DDIM; 1 equals euler_ancestral given the same seed. Only 0 on a
        rectified-flow model (model_sampling CONST).
    s_noise : float, default 1.0
        Scale of the added noise.
    noise_sampler : callable, optional
        ``noise_sampler(sigma, sigma_next) -> noise``; default: `seeded_noise_sampler` of x
        and the seed.

    Returns
    -------
    array
        The sample at the last sigma.

    Raises
    ------
    TypeError
        An eta that is not a real number.
    ValueError
        eta > 0 on a rectified-flow model (see `_check_not_rectified_flow`), or eta < 0.

    Examples
    --------
    >>> import torch, ddim_core as dc
    >>> from ddim_kdiffusion import get_sigmas_ddim
    >>> sigmas = get_sigmas_ddim(dc.DDIMConfig(), 5)
    >>> def model(x, sigma, **extra_args):  # the exact denoiser of N(0, 1) data
    ...     return x / (1 + sigma**2)
    >>> def run(seed):
    ...     x = torch.ones(1, 3) * sigmas[0]
    ...     return sample_ddim_core(model, x, sigmas, {"seed": seed}, disable=True, eta=1.0)
    >>> torch.equal(run(7), run(7)), torch.equal(run(7), run(8))
    (True, False)
    """
    eta = check_nonnegative("eta", eta)  # before it is compared here
    if eta > 0:
        _check_not_rectified_flow(model, eta)
    if eta > 0 and noise_sampler is None:  # drawn in x's own dtype, as ComfyUI's are
        noise_sampler = seeded_noise_sampler(x, (extra_args or {}).get("seed"))
    x = stepped_as_comfyui(x, sigmas)
    return sample_ddim(model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler)


def stepped_as_comfyui(x: Any, sigmas: Any) -> Any:
    """A float16 or bfloat16 latent in the dtype ComfyUI's own samplers step it in: float32
    (float64 over float64 sigmas); any other latent, or a single sigma (no step), as given.

    ComfyUI's euler-style updates (euler, euler_ancestral, its ddim) give x + d * dt, torch's
    type promotion of the latent with the model's denoised and the sigmas; its models answer
    in float32 (BaseModel casts the diffusion model's output with .float()) and its sigmas are
    float32, so a half latent is float32 from the first step on. ddim_core keeps the sample's
    dtype, so the pack hands it the latent promoted (exactly: a half value is a float32 one).

    Parameters
    ----------
    x : torch.Tensor
        The latent ComfyUI gives the sampler.
    sigmas : torch.Tensor
        The sampler's sigmas.

    Returns
    -------
    torch.Tensor

    Examples
    --------
    >>> import torch
    >>> sigmas = torch.tensor([2.0, 1.0, 0.0])
    >>> stepped_as_comfyui(torch.ones(1, 2, dtype=torch.bfloat16), sigmas).dtype
    torch.float32
    >>> stepped_as_comfyui(torch.ones(1, 2, dtype=torch.bfloat16), sigmas[:1]).dtype
    torch.bfloat16
    """
    torch: Any = sys.modules.get("torch")
    if torch is None or not isinstance(x, torch.Tensor) or len(sigmas) < 2:
        return x
    if x.dtype not in (torch.float16, torch.bfloat16):
        return x
    return x.to(torch.promote_types(torch.float32, getattr(sigmas, "dtype", torch.float32)))


def _check_not_rectified_flow(model: Any, eta: float) -> None:
    """Refuse eta > 0 on a rectified-flow model (ComfyUI's model_sampling CONST: SD3, Flux).

    `sample_ddim`'s stochastic step is DDIM's in VE coordinates; a flow latent is (1 - s) x0 +
    s eps, so that step adds the wrong noise there. DDIM's own eta on a flow (the same step
    after x / (1 - s)) is not ComfyUI's RF euler_ancestral either, whose intermediate level is
    s_next^2 / s in flow coordinates where DDIM's is sigma_next^2 / sigma in VE ones. eta = 0
    is exact on both (it is euler there).
    """
    kind = _rectified_flow_type(model)
    if kind is not None:
        raise ValueError(
            f"DDIM Sampler: eta={eta} > 0 is not supported on a rectified-flow model "
            f"(model_type {kind}, model_sampling CONST: SD3, Flux, ...); use eta 0 "
            "(deterministic DDIM, which equals euler there) or ComfyUI's euler_ancestral"
        )


def computes_in_half(model: Any) -> bool:
    """Whether the ComfyUI model under its denoiser wrappers computes in float16 or bfloat16
    (BaseModel's manual_cast_dtype, else get_dtype()): then its output's rounding sets the
    floor of exact inversion's residual, and a step stops where that has stalled
    (`ddim_core.implicit.solve_step`'s stall).

    Parameters
    ----------
    model : object
        The sampler's model (KSamplerX0Inpaint -> CFGGuider -> BaseModel, by `inner_model`).

    Returns
    -------
    bool
        False where no BaseModel is found (a plain denoiser function).

    Examples
    --------
    >>> import types, torch
    >>> base = types.SimpleNamespace(get_dtype=lambda: torch.float16, manual_cast_dtype=None)
    >>> computes_in_half(types.SimpleNamespace(inner_model=base)), computes_in_half(len)
    (True, False)
    """
    for inner in _wrapped(model):
        get_dtype = getattr(inner, "get_dtype", None)
        if callable(get_dtype):
            dtype = getattr(inner, "manual_cast_dtype", None) or get_dtype()
            return str(dtype).removeprefix("torch.") in ("float16", "bfloat16")
    return False


def _wrapped(model: Any) -> Iterator[Any]:
    """`model` and the models under it by `inner_model` (KSamplerX0Inpaint -> CFGGuider ->
    BaseModel), at most 8 deep: a chain that loops back ends there."""
    for _ in range(8):
        if model is None:
            return
        yield model
        model = getattr(model, "inner_model", None)


def _rectified_flow_type(model: Any) -> str | None:
    """The model_type name of the rectified-flow model (model_sampling CONST) under ComfyUI's
    denoiser wrappers, "?" without one; None for any other model."""
    const = getattr(sys.modules.get("comfy.model_sampling"), "CONST", None)
    if const is None:
        return None
    for inner in _wrapped(model):
        if isinstance(getattr(inner, "model_sampling", None), const):
            return str(getattr(getattr(inner, "model_type", None), "name", "?"))
    return None


def seeded_noise_sampler(x: Any, seed: int | None) -> Callable[[Any, Any], Any] | None:
    """noise_sampler(sigma, sigma_next) drawing standard normal noise like the torch tensor x
    from a generator on x's device seeded with `seed`; None without a seed or a torch x.

    Parameters
    ----------
    x : array
        The latent: the noise's shape, device and dtype.
    seed : int or None
        ComfyUI's seed.

    Returns
    -------
    callable or None
        ``draw(sigma, sigma_next) -> noise`` (the sigmas are ignored), one draw after another
        from the one seeded generator.

    Examples
    --------
    >>> import torch
    >>> draw = seeded_noise_sampler(torch.zeros(2, 3), 0)
    >>> torch.equal(draw(1.0, 0.5), torch.randn(2, 3, generator=torch.Generator().manual_seed(0)))
    True
    >>> seeded_noise_sampler(torch.zeros(2, 3), None) is None
    True
    """
    torch = sys.modules.get("torch")
    if seed is None or torch is None or not isinstance(x, torch.Tensor):
        return None
    generator = torch.Generator(device=x.device)
    generator.manual_seed(seed)
    shape = tuple(x.shape)

    def draw(sigma: Any, sigma_next: Any) -> Any:
        return standard_normal(generator, shape, like=x)

    return draw


def sample_ddim_core_inverse(
    model: Callable[..., Any],
    x: Any,
    sigmas: Any,
    extra_args: dict[str, Any] | None = None,
    callback: Callable[[dict[str, Any]], Any] | None = None,
    disable: bool | None = None,
    fixed_point_iters: int = INVERSION_ITERS,
    tol: float | None = INVERSION_TOL,
) -> Any:
    """DDIM inversion for ComfyUI (`ddim_kdiffusion.sample_ddim_inverse`), exact by default.

    Ascending sigmas are walked as they are; descending ones (a stock scheduler's) in reverse,
    from the clean end up to the noisiest level. A first sigma of 1e-4, which ComfyUI's
    FlipSigmas puts in place of 0, counts as 0: x is the clean latent, and sampling back down
    to 0 returns it. On a rectified-flow model, whose latent ComfyUI scales by 1 - sigmas[0]
    on the way in and divides by 1 - sigmas[-1] on the way out, both orders give the same,
    but for a float16 or bfloat16 latent: ComfyUI hands descending sigmas' (1 - sigmas[0]) x0
    rounded to the latent's dtype, which no rescaling undoes (ascending ones give x0 itself).
    Outside a latent noise mask (``extra_args["denoise_mask"]``) the latent is kept, as
    ComfyUI's samplers keep it there.

    Parameters
    ----------
    model, x, sigmas, extra_args, callback, disable
        As `ddim_kdiffusion.sample_ddim_inverse` (ComfyUI's sampler signature).
    fixed_point_iters : int, default INVERSION_ITERS
        Refinements per step: at most fixed_point_iters + 1 model calls per step.
    tol : float, optional
        Stop refining once the residual is <= tol; None or 0: every refinement (and no check).
        With a model computed in float16 / bfloat16 (`computes_in_half`) a step also stops
        where its residual has stalled above tol (the model's precision floor).

    Returns
    -------
    array
        The inverted latent, at the noisiest sigma.

    Raises
    ------
    ValueError
        The sigmas climb to 1 or above on a rectified-flow model (ComfyUI would divide by 0).

    Warns
    -----
    ddim_core.implicit.ToleranceWarning
        Once per run, where a step ended above a tol > 0 (as
        `ddim_kdiffusion.sample_ddim_inverse`). The default tol is about float32's floor: with
        a half-precision model (whose steps then stall, and say so), or strong guidance at few
        steps, it can be out of reach.

    Examples
    --------
    >>> import torch, ddim_core as dc
    >>> from ddim_kdiffusion import get_sigmas_ddim
    >>> sigmas = get_sigmas_ddim(dc.DDIMConfig(), 5)  # descending
    >>> z = sample_ddim_core_inverse(lambda x, s: 0 * x, torch.zeros(1, 2), sigmas, disable=True)
    >>> z.shape
    torch.Size([1, 2])
    """
    given = sigmas
    if len(sigmas) >= 2 and float(sigmas[0]) > float(sigmas[-1]):
        sigmas = flip_sigmas(sigmas)
    elif len(sigmas) >= 2 and abs(float(sigmas[0]) - FLIP_SIGMAS_ZERO) < 1e-9:
        sigmas = sigmas.clone() if hasattr(sigmas, "clone") else sigmas.copy()
        sigmas[0] = 0.0
    flow = len(sigmas) >= 2 and _rectified_flow_type(model) is not None
    if flow and float(sigmas[-1]) >= 1.0:
        raise ValueError(
            f"DDIM Inversion Sampler: the sigmas climb to {float(sigmas[-1]):g}, pure noise on a "
            "rectified-flow model (SD3, Flux), which ComfyUI's LATENT (x / (1 - sigma)) cannot "
            "hold; stop below 1 (SplitSigmas at step 1)"
        )
    latent = x
    if flow:  # ComfyUI gave x at the given first sigma, (1 - sigma) x0, and divides by 1 - last
        x = _flow_rescaled(x, float(given[0]), float(sigmas[0]))
    z = sample_ddim_inverse(
        model,
        stepped_as_comfyui(x, sigmas),
        sigmas,
        extra_args,
        callback,
        disable,
        fixed_point_iters,
        (tol or None) if fixed_point_iters else None,  # the widget's tol has nothing to stop
        stall=computes_in_half(model),
    )
    if flow:
        z = _flow_rescaled(z, float(sigmas[-1]), float(given[-1]))
    return _outside_mask_kept(z, latent, given, flow, (extra_args or {}).get("denoise_mask"))


def _outside_mask_kept(z: Any, latent: Any, given: Any, flow: bool, mask: Any) -> Any:
    """z with the latent outside ComfyUI's noise mask, as its samplers leave it there: its
    denoiser returns the latent there as x0, where DDIM inversion's steps (which start from
    the sample scaled to the next level) would move it."""
    if mask is None or len(given) < 2:
        return z
    if flow:  # the latent as ComfyUI holds one at the last sigma
        latent = _flow_rescaled(latent, float(given[0]), float(given[-1]))
    return masked(z, latent, mask)


def masked(z: Any, x: Any, mask: Any) -> Any:
    """z where ComfyUI's noise mask is 1, x where it is 0 (blended at soft edges), as its
    samplers combine a result with the latent they were given.

    Parameters
    ----------
    z : array
        The sampler's result.
    x : array
        The latent it was given (at the result's level).
    mask : array
        ComfyUI's ``denoise_mask``, broadcastable to z, in [0, 1].

    Returns
    -------
    array
        ``z * mask + x * (1 - mask)``.

    Examples
    --------
    >>> import numpy as np
    >>> masked(np.array([5.0, 5.0, 5.0]), np.zeros(3), np.array([1.0, 0.5, 0.0])).tolist()
    [5.0, 2.5, 0.0]
    """
    return z * mask + x * (1.0 - mask)


def _flow_rescaled(x: Any, sigma: float, to: float) -> Any:
    """A rectified-flow latent (1 - sigma) x0 + ... at level `sigma` as ComfyUI holds one at
    level `to`: the walk's ends differ from the given list's where it was flipped (a stock
    scheduler's descending sigmas) or began at FlipSigmas' 1e-4 for 0."""
    return x if sigma == to else x * ((1.0 - to) / (1.0 - sigma))


def ddim_sigmas(model: Any, steps: int, spacing: str, steps_offset: int, denoise: float) -> Any:
    """SIGMAS of a DDIM plan on a ComfyUI MODEL's discrete schedule, ending in 0.

    alpha_bar is recovered from `model_sampling.sigmas` as 1 / (1 + sigma^2) in float64. With
    denoise < 1 the plan has int(steps / denoise) steps and the last steps + 1 sigmas are kept,
    as ComfyUI's BasicScheduler does. The plan has at most one step per training timestep (len
    of the table, 1000 for SD): more steps, or steps / denoise above that, give the plan of
    that many (all of it, or its last steps), as ComfyUI's ddim_uniform caps its steps; with
    leading or quadratic spacing (which add steps_offset), that many less steps_offset (whose
    last timestep is then the table's).

    Parameters
    ----------
    model : ComfyUI MODEL
        Anything with ``get_model_object("model_sampling").sigmas``.
    steps : int
    spacing : str
        One of `ddim_core.config.TIMESTEP_SPACINGS`: "leading", "trailing", "linspace" or
        "quadratic".
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
    >>> ab = torch.tensor(dc.alphas_cumprod(dc.DDIMConfig()))
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
    if denoise <= 0.0:  # no step; float32 on the CPU, as the plan's sigmas
        return table.new_zeros((0,)).float().cpu()
    total = min(steps if denoise >= 1.0 else int(steps / denoise), table.shape[0])
    if spacing in ("leading", "quadratic") and total == table.shape[0]:
        # every timestep, the last total - 1 + offset: room for the offset
        total = max(total - steps_offset, 1)
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
    sigmas : array
        A torch tensor (ComfyUI's SIGMAS) or another library's 1-D array.

    Returns
    -------
    array

    Examples
    --------
    >>> import torch
    >>> flip_sigmas(torch.tensor([2.0, 1.0, 0.0])).tolist()
    [0.0, 1.0, 2.0]
    """
    return sigmas.flip(0) if hasattr(sigmas, "flip") else sigmas[::-1]  # torch has no [::-1]


# --- node schemas, as data ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Param:
    """One node input.

    Attributes
    ----------
    name : str
    kind : str
        INT, FLOAT, COMBO, MODEL, SIGMAS, CONDITIONING or LATENT.
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
    tooltip: str = ""  # shown on hover in ComfyUI; every input has one


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
    output: str  # SAMPLER, SIGMAS or LATENT
    description: str
    run: Callable[..., Any]


def _sampler(eta: float, s_noise: float) -> tuple[Any, dict[str, Any]]:
    return sample_ddim_core, {"eta": eta, "s_noise": s_noise}


def _inversion_sampler(fixed_point_iters: int, tol: float) -> tuple[Any, dict[str, Any]]:
    return sample_ddim_core_inverse, {"fixed_point_iters": fixed_point_iters, "tol": tol}


STEPS_OFFSET = Param(  # the DDIM Schedule's and the Unsampler's (the same schedule)
    "steps_offset",
    "INT",
    0,
    0,
    1000,
    1,
    tooltip="Shift of every timestep (diffusers' steps_offset; leading and quadratic spacing "
    "only, 1 for Stable Diffusion 1.x).",
)

NODES = (
    NodeSpec(
        "DDIMCoreSampler",
        "DDIM Sampler (ddim-core)",
        f"{CATEGORY}/samplers",
        (
            Param(
                "eta",
                "FLOAT",
                0.0,
                0.0,
                1.0,
                0.01,
                tooltip="Noise added back per step: 0 is deterministic DDIM; 1 equals "
                "euler_ancestral given the same seed. The noise comes from the seed, as in "
                "ComfyUI's ancestral samplers (with DisableNoise too). Rectified-flow models "
                "(SD3, Flux): 0 only.",
            ),
            Param(
                "s_noise",
                "FLOAT",
                1.0,
                0.0,
                100.0,
                0.01,
                tooltip="Scale of the noise added back when eta > 0.",
            ),
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
            Param(
                "fixed_point_iters",
                "INT",
                INVERSION_ITERS,
                0,
                100,
                1,
                tooltip="Refinements per step that make the inversion exact (sampling the "
                "result gives the input back). Model calls per step: 1 for plain DDIM inversion "
                "(0), else at most fixed_point_iters + 1 (the step, then one per refinement), "
                "fewer once within tol.",
            ),
            Param(
                "tol",
                "FLOAT",
                INVERSION_TOL,
                0.0,
                1.0,
                1e-6,
                tooltip="Stop refining a step once its largest error (the forward step of the "
                "result against the input, at the clean latent's scale) is at most tol; 0 runs "
                "every refinement. A float16 / bfloat16 model's error levels off far above 1e-6 "
                "(its output's rounding): such a step stops once it has stalled. Steps still above "
                "tol are reported once per run (a ToleranceWarning in the console).",
            ),
        ),
        "SAMPLER",
        "DDIM inversion from a clean latent up the sigmas (ascending, e.g. from Flip to "
        "Inversion Sigmas), exact by default: sampling the result returns the input. Use it in "
        "SamplerCustom (add_noise off) or SamplerCustomAdvanced (DisableNoise).",
        _inversion_sampler,
    ),
    NodeSpec(
        "DDIMCoreSchedule",
        "DDIM Schedule (ddim-core)",
        f"{CATEGORY}/schedulers",
        (
            Param("model", "MODEL", tooltip="The model whose own noise schedule is used."),
            Param(
                "steps",
                "INT",
                20,
                1,
                10000,
                1,
                tooltip="Number of DDIM steps; at most the model's training timesteps (1000 "
                "for SD): more run that many, as ComfyUI's ddim_uniform.",
            ),
            Param(
                "spacing",
                "COMBO",
                "trailing",
                options=TIMESTEP_SPACINGS,
                tooltip="Where the timesteps fall, as diffusers' timestep_spacing: trailing "
                "starts at the noisiest level; leading and linspace are the older rules; "
                "quadratic is the DDIM paper's, denser toward the clean end.",
            ),
            STEPS_OFFSET,
            Param(
                "denoise",
                "FLOAT",
                1.0,
                0.0,
                1.0,
                0.01,
                tooltip="Fraction of the schedule to run, from its clean end (as "
                "BasicScheduler's denoise): < 1 keeps the last steps of int(steps / denoise), "
                "a plan of at most the model's training timesteps (1000 for SD).",
            ),
        ),
        "SIGMAS",
        "The sigmas of diffusers' DDIM timesteps (leading / trailing / linspace) or the DDIM "
        "paper's quadratic ones on the model's own schedule, ending in 0.",
        ddim_sigmas,
    ),
    NodeSpec(
        "DDIMCoreFlipSigmas",
        "Flip to Inversion Sigmas (ddim-core)",
        f"{CATEGORY}/sigmas",
        (
            Param(
                "sigmas",
                "SIGMAS",
                tooltip="Sampling sigmas (descending, e.g. from DDIM Schedule) to reverse.",
            ),
        ),
        "SIGMAS",
        "Reverse sampling sigmas for the DDIM Inversion Sampler (keeps a first sigma of 0).",
        flip_sigmas,
    ),
)


_BY_ID = {spec.node_id: spec for spec in NODES}


def run_node(node_id: str, **inputs: Any) -> tuple[Any, dict[str, Any]] | Any:
    """What a node of `NODES` computes: (sampler function, its options) for the sampler nodes,
    SIGMAS for the others. The comfy layer wraps sampler functions in `comfy.samplers.KSAMPLER`.
    The nodes of `unsampler.NODES` are not run here: each has its own `NodeSpec.run`.

    Parameters
    ----------
    node_id : str
        The `NodeSpec.node_id` of one of `NODES`.
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
    ('sample_ddim_core', {'eta': 0.0, 's_noise': 1.0})
    """
    spec = _BY_ID.get(node_id)
    if spec is None:
        raise ValueError(f"unknown node {node_id!r}; known: {list(_BY_ID)}")
    return spec.run(**inputs)
