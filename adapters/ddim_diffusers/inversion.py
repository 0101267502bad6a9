"""Invert latents through a diffusers pipeline's UNet under classifier-free guidance.

    from ddim_diffusers import invert_latents, sample_latents

    embeds = dict(prompt_embeds=cond, negative_prompt_embeds=uncond, guidance_scale=7.5)
    noise = invert_latents(pipe, latents, num_inference_steps=50, **embeds)
    again = sample_latents(pipe, noise, num_inference_steps=50, **embeds)   # == latents

The UNet runs as diffusers' pipelines run it: the unconditional and conditional halves in one
batch of 2B, combined by `ddim_core.guided`'s formula, with the optional guidance rescale; a
guidance-distilled (LCM-style) UNet once, the scale embedded as its ``timestep_cond``.
The schedule is the pipeline scheduler's config (its diffusers keys), so inversion and
sampling visit the same timesteps. Any array library the UNet takes (torch; MindSpore through
its ddim_core plugin). Methods: "exact" DDIM inversion (`ddim_core.invert` with
`fixed_point_iters`, 1 + k UNet calls per step), "plain" DDIM inversion (diffusers'
DDIMInverseScheduler's result), and the samplers that invert exactly by construction,
"edict", "bdia", "belm" (`ddim_core.reversible`: `invert_latents` returns their state, which
`sample_latents` takes back).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import ddim_core as dc
from ddim_core import backends, guidance, reversible
from ddim_core.config import check_real

METHODS = ("exact", "plain", "edict", "bdia", "belm")
_REVERSIBLE = ("edict", "bdia", "belm")


def guided_unet(
    unet: Any,
    prompt_embeds: Any,
    negative_prompt_embeds: Any = None,
    guidance_scale: float = 7.5,
    guidance_rescale: float = 0.0,
    added_cond_kwargs: Mapping[str, Any] | None = None,
    negative_added_cond_kwargs: Mapping[str, Any] | None = None,
    **unet_kwargs: Any,
) -> Callable[[Any, Any], Any]:
    """model(x, t) for ddim_core's loops: the UNet's output (the scheduler's prediction type)
    under classifier-free guidance, uncond and cond in one batch of 2B (guidance_scale <= 1,
    as diffusers' pipelines' `do_classifier_free_guidance`, or no
    negative embeddings: the conditional UNet alone). Embeddings with batch 1 serve every
    latent. A guidance-distilled UNet (LCM-style: ``unet.config.time_cond_proj_dim`` set)
    takes the scale as an input and is not guided, as diffusers' Stable Diffusion and SDXL
    pipelines run it: one call, the conditional embeddings alone, with ``timestep_cond``
    the sinusoidal embedding of 1000 (guidance_scale - 1) of that width (float32, then the
    latents' dtype), at any guidance_scale; the negative embeddings and guidance_rescale go
    unused.

    Parameters
    ----------
    unet : callable
        ``unet(x, t, encoder_hidden_states=...).sample`` (a diffusers UNet); its
        ``config.time_cond_proj_dim``, where not None, marks it guidance-distilled.
    prompt_embeds : array
        The conditional embeddings, batch 1 or the latents'.
    negative_prompt_embeds : array, optional
        The unconditional ones; None: no guidance (unused by a guidance-distilled UNet).
    guidance_scale : float, default 7.5
        w; at most 1: no guidance, the conditional UNet alone (as diffusers' pipelines). A
        guidance-distilled UNet gets it as ``timestep_cond`` instead.
    guidance_rescale : float, default 0.0
        Lin et al.'s phi (`ddim_core.rescale_noise_cfg`); unused without guidance.
    added_cond_kwargs : mapping of str to array, optional
        The UNet's added conditioning for the prompt, each array of batch 1 or the latents'
        (SDXL: ``{"text_embeds": pooled_prompt_embeds, "time_ids": add_time_ids}``), batched
        beside `prompt_embeds`.
    negative_added_cond_kwargs : mapping of str to array, optional
        The same for the negative prompt (SDXL: the negative pooled embeddings and time
        ids), the same keys; required with `added_cond_kwargs` under guidance.
    **unet_kwargs
        Passed to the UNet as given (a ``timestep_cond`` given here replaces the one made
        from `guidance_scale`).

    Returns
    -------
    callable
        ``model(x, t)`` for ddim_core's loops.

    Raises
    ------
    TypeError
        `prompt_embeds` None or not an array, embeddings of two libraries, or a
        `guidance_scale` or `guidance_rescale` that is not a real number.
    ValueError
        A NaN or infinite `guidance_scale`, a `guidance_rescale` outside [0, 1], embeddings
        (or added conditioning arrays) without a batch axis or on two devices, or of shapes
        past the batch axis or dtypes that differ (they go into one batch); added
        conditioning of other keys than its negative's, a negative one without the other, or
        none under guidance; when the model is called, embeddings whose batch is neither 1
        nor the latents'.

    Examples
    --------
    >>> import types, numpy as np
    >>> import ddim_diffusers as dd
    >>> def unet(x, t, encoder_hidden_states):       # a stand-in for pipe.unet
    ...     bias = encoder_hidden_states.reshape(-1, 1, 1, 1)
    ...     return types.SimpleNamespace(sample=0.1 * x + bias)
    >>> pipe = types.SimpleNamespace(unet=unet, scheduler=dd.DDIMScheduler(clip_sample=False))
    >>> cond, uncond = np.full((1, 1, 1), 0.2), np.zeros((1, 1, 1))
    >>> embeds = dict(prompt_embeds=cond, negative_prompt_embeds=uncond, guidance_scale=3.0)
    >>> model = guided_unet(pipe.unet, cond, uncond, 3.0)
    >>> model(np.zeros((2, 1, 1, 1)), 10).ravel().round(6).tolist()   # 0 + 3 * (0.2 - 0)
    [0.6, 0.6]

    SDXL's UNet takes the pooled embeddings and the size numbers beside them:

    >>> def unet_xl(x, t, encoder_hidden_states, added_cond_kwargs):
    ...     pooled = added_cond_kwargs["text_embeds"].reshape(-1, 1, 1, 1)
    ...     return types.SimpleNamespace(sample=unet(x, t, encoder_hidden_states).sample + pooled)
    >>> added = {"text_embeds": np.full((1, 1), 0.1), "time_ids": np.zeros((1, 6))}
    >>> negative = {"text_embeds": np.zeros((1, 1)), "time_ids": np.zeros((1, 6))}
    >>> model = guided_unet(unet_xl, cond, uncond, 3.0, 0.0, added, negative)
    >>> model(np.zeros((2, 1, 1, 1)), 10).ravel().round(6).tolist()   # 3 * (0.3 - 0)
    [0.9, 0.9]

    A guidance-distilled UNet runs once, on the prompt alone, the scale in ``timestep_cond``:

    >>> class DistilledUNet:
    ...     config = {"time_cond_proj_dim": 4}   # (sin, sin, cos, cos) of 1000 (w - 1) f_k
    ...     def __call__(self, x, t, encoder_hidden_states, timestep_cond):
    ...         features = timestep_cond[:, 1].reshape(-1, 1, 1, 1)   # f_1 = 1e-4
    ...         out = unet(x, t, encoder_hidden_states).sample
    ...         return types.SimpleNamespace(sample=out + features)
    >>> model = guided_unet(DistilledUNet(), cond, uncond, 3.0)
    >>> model(np.zeros((2, 1, 1, 1)), 10).ravel().round(6).tolist()   # 0.2 + sin(0.2)
    [0.398669, 0.398669]
    """
    guidance_scale = check_real("guidance_scale", guidance_scale)
    guidance_rescale = guidance.check_rescale("guidance_rescale", guidance_rescale)
    _check_embeddings(
        {"prompt_embeds": prompt_embeds, "negative_prompt_embeds": negative_prompt_embeds}
    )
    config = getattr(unet, "config", None)
    if isinstance(config, Mapping):
        proj_dim = config.get("time_cond_proj_dim")
    else:
        proj_dim = getattr(config, "time_cond_proj_dim", None)
    distilled = proj_dim is not None  # guidance is the UNet's own: one conditional call
    guided = not distilled and negative_prompt_embeds is not None and guidance_scale > 1.0
    _check_added(prompt_embeds, added_cond_kwargs, negative_added_cond_kwargs, guided)
    embedded: dict[tuple[Any, ...], Any] = {}  # timestep_cond by batch, dtype and device

    def timestep_cond(x: Any) -> dict[str, Any]:
        if proj_dim is None or "timestep_cond" in unet_kwargs:
            return {}
        xp, where = backends.namespace(x=x), backends.device(x)
        key = (x.shape[0], x.dtype, where)
        if key not in embedded:
            made = _scale_embedding(xp, guidance_scale - 1.0, proj_dim, x.shape[0])
            embedded[key] = xp.asarray(backends.cast(xp, made, x.dtype), device=where)
        return {"timestep_cond": embedded[key]}

    def model(x: Any, t: Any) -> Any:
        size = x.shape[0]
        cond = _batch("prompt_embeds", prompt_embeds, size)
        added = _batch_added("added_cond_kwargs", added_cond_kwargs, size)
        if not guided:
            kwargs = {**added, **timestep_cond(x), **unet_kwargs}
            return unet(x, t, encoder_hidden_states=cond, **kwargs).sample
        uncond = _batch("negative_prompt_embeds", negative_prompt_embeds, size)
        if added:  # the negative's first, as the prompt's embeddings: one 2B batch
            negative = _batch_added("negative_added_cond_kwargs", negative_added_cond_kwargs, size)
            added = {
                "added_cond_kwargs": {
                    key: _concat(negative["added_cond_kwargs"][key], value)
                    for key, value in added["added_cond_kwargs"].items()
                }
            }
        both = unet(
            _concat(x, x), t, encoder_hidden_states=_concat(uncond, cond), **added, **unet_kwargs
        ).sample
        out_uncond, out_cond = both[: x.shape[0]], both[x.shape[0] :]
        out = guidance.cfg(out_uncond, out_cond, guidance_scale)
        if guidance_rescale > 0.0:
            out = guidance.rescale_noise_cfg(out, out_cond, guidance_rescale)
        return out

    return model


def ddim_config(scheduler_or_config: Any) -> dc.DDIMConfig:
    """The DDIMConfig of a pipeline's scheduler (ours, diffusers' DDIM, or any scheduler whose
    config has the schedule's keys, e.g. Stable Diffusion's PNDMScheduler), or of a config
    mapping; keys DDIMConfig does not have are left out. A scheduler's options are read as
    its scheduler reads them: as the config's attributes (an attribute written on the config
    included).

    Parameters
    ----------
    scheduler_or_config : scheduler or mapping
        A pipeline's scheduler, or its config.

    Returns
    -------
    DDIMConfig

    Examples
    --------
    >>> ddim_config({"beta_schedule": "scaled_linear", "skip_prk_steps": True}).beta_schedule
    'scaled_linear'
    """
    found = getattr(scheduler_or_config, "_ddim_config", None)
    if isinstance(found, dc.DDIMConfig):
        return found
    config = getattr(scheduler_or_config, "config", scheduler_or_config)
    known = {f.name for f in dataclasses.fields(dc.DDIMConfig)}
    # diffusers' schedulers read options as the config's attributes, which a write such as
    # LEdits++'s `scheduler.config.timestep_spacing = "leading"` changes alone
    options = {k: getattr(config, k, v) for k, v in dict(config).items() if k in known}
    return dc.DDIMConfig.from_dict(options)


def invert_latents(
    pipe: Any,
    latents: Any,
    *,
    prompt_embeds: Any,
    negative_prompt_embeds: Any = None,
    guidance_scale: float = 7.5,
    guidance_rescale: float = 0.0,
    added_cond_kwargs: Mapping[str, Any] | None = None,
    negative_added_cond_kwargs: Mapping[str, Any] | None = None,
    num_inference_steps: int | None = None,
    method: str = "exact",
    fixed_point_iters: int | None = None,
    tol: float | None = None,
    callback: Callable[[dc.StepInfo], Any] | None = None,
    progress: bool = False,
    **method_options: Any,
) -> Any:
    """x_T for clean `latents` (already scaled by the VAE's scaling factor), or a reversible
    method's state. `pipe` is a pipeline (or anything with `.unet` and `.scheduler`).

    "exact" (default): 1 + fixed_point_iters UNet calls per step, fewer with `tol`;
    "plain": one call; "edict" (2 calls, p=0.93), "bdia" (1 call, gamma=1.0), "belm" (1
    call); `method_options` go to the method (e.g. precision="float64" for the reversible
    ones, history= for "exact"). Torch latents are inverted under torch.no_grad(), as
    diffusers' pipelines run (no autograd graph of the UNet's calls), unless they require
    grad themselves: then the graph is built, as asked (or call `ddim_core.invert` with
    `guided_unet`'s model).

    Parameters
    ----------
    pipe : pipeline
        Anything with `.unet` and `.scheduler`.
    latents : array
        Clean latents.
    prompt_embeds, negative_prompt_embeds, guidance_scale, guidance_rescale
        As in `guided_unet` (a guidance-distilled UNet, ``unet.config.time_cond_proj_dim``
        set, runs unguided with the scale as its ``timestep_cond``, as the pipelines run it).
    added_cond_kwargs, negative_added_cond_kwargs
        As in `guided_unet` (SDXL's pooled embeddings and time ids).
    num_inference_steps : int, optional
        N: 50 unless `timesteps` (a custom plan, in `method_options`) is given, as a
        pipeline's `timesteps=` takes the place of its step count.
    method : str, default "exact"
        One of METHODS.
    fixed_point_iters : int, optional
        Refinements per step of "exact" (default 2); other methods take none.
    tol : float, optional
        The residual tolerance of "exact" (one host read per iterate).
    callback : callable, optional
        Called with a `ddim_core.StepInfo` after each step.
    progress : bool, default False
        Show a progress bar.
    **method_options
        Passed to the method's function.

    Returns
    -------
    array or ddim_core.reversible.State
        x_T, or the reversible method's state.

    Raises
    ------
    TypeError
        `prompt_embeds` None, or latents and embeddings that are not arrays of one library
        (the UNet's), or guidance numbers that are not real numbers.
    ValueError
        An unknown method, `fixed_point_iters` or `tol` with a method other than "exact", bad
        guidance numbers, embeddings whose batch is neither 1 nor the latents' or that do not
        fit one batch (see `guided_unet`).

    Warns
    -----
    ddim_core.implicit.ToleranceWarning
        "exact" with `tol`: once per call, where a step used every refinement and ended above
        tol (`ddim_core.invert`).

    Examples
    --------
    >>> import types, numpy as np
    >>> import ddim_diffusers as dd
    >>> def unet(x, t, encoder_hidden_states):       # a stand-in for pipe.unet
    ...     bias = encoder_hidden_states.reshape(-1, 1, 1, 1)
    ...     return types.SimpleNamespace(sample=0.1 * x + bias)
    >>> pipe = types.SimpleNamespace(unet=unet, scheduler=dd.DDIMScheduler(clip_sample=False))
    >>> cond, uncond = np.full((1, 1, 1), 0.2), np.zeros((1, 1, 1))
    >>> embeds = dict(prompt_embeds=cond, negative_prompt_embeds=uncond, guidance_scale=3.0)
    >>> x_0 = np.ones((1, 1, 1, 1))
    >>> z = invert_latents(pipe, x_0, num_inference_steps=10, **embeds)
    >>> back = sample_latents(pipe, z, num_inference_steps=10, **embeds)
    >>> bool(np.abs(back - x_0).max() < 1e-6)
    True
    """
    config, model = _setup(
        pipe,
        {"latents": latents},
        prompt_embeds,
        negative_prompt_embeds,
        guidance_scale,
        guidance_rescale,
        (added_cond_kwargs, negative_added_cond_kwargs),
    )
    method = _check_method(method)
    n = _steps(num_inference_steps, method_options)
    if method != "exact" and (fixed_point_iters is not None or tol is not None):
        raise ValueError(
            f"fixed_point_iters={fixed_point_iters!r}, tol={tol!r}: these refine "
            f'method="exact"; method={method!r} takes neither'
        )
    with _without_graph(latents):
        if method in _REVERSIBLE:
            invert = getattr(reversible, f"invert_{method}")
            return invert(
                model, latents, config, n, callback=callback, progress=progress, **method_options
            )
        iters = 0 if method == "plain" else (2 if fixed_point_iters is None else fixed_point_iters)
        return dc.invert(
            model,
            latents,
            config,
            n,
            fixed_point_iters=iters,
            tol=tol,  # (None for "plain", checked above; with 0 iters: ddim_core says so)
            callback=callback,
            progress=progress,
            **method_options,
        )


def sample_latents(
    pipe: Any,
    noise: Any,
    *,
    prompt_embeds: Any,
    negative_prompt_embeds: Any = None,
    guidance_scale: float = 7.5,
    guidance_rescale: float = 0.0,
    added_cond_kwargs: Mapping[str, Any] | None = None,
    negative_added_cond_kwargs: Mapping[str, Any] | None = None,
    num_inference_steps: int | None = None,
    method: str = "exact",
    callback: Callable[[dc.StepInfo], Any] | None = None,
    progress: bool = False,
    **method_options: Any,
) -> Any:
    """Clean latents from `invert_latents`' result (x_T, or a reversible method's state) by
    the same method's sampler (DDIM for "exact" and "plain"), same guidance, same steps; under
    torch.no_grad() for torch unless the noise requires grad, as `invert_latents`.

    Parameters
    ----------
    pipe : pipeline
        Anything with `.unet` and `.scheduler`.
    noise : array or ddim_core.reversible.State
        What `invert_latents` returned (or any x_T for "exact" / "plain").
    prompt_embeds, negative_prompt_embeds, guidance_scale, guidance_rescale
        As in `guided_unet` (a guidance-distilled UNet, ``unet.config.time_cond_proj_dim``
        set, runs unguided with the scale as its ``timestep_cond``, as the pipelines run it).
    added_cond_kwargs, negative_added_cond_kwargs
        As in `guided_unet` (SDXL's pooled embeddings and time ids).
    num_inference_steps : int, optional
        N: 50 unless `timesteps` (a custom plan, in `method_options`) is given, as a
        pipeline's `timesteps=` takes the place of its step count.
    method : str, default "exact"
        The method `invert_latents` used.
    callback : callable, optional
        Called with a `ddim_core.StepInfo` after each step.
    progress : bool, default False
        Show a progress bar.
    **method_options
        Passed to the method's function.

    Returns
    -------
    array
        Clean latents.

    Raises
    ------
    TypeError, ValueError
        As `invert_latents`, for `noise` in place of `latents`; ValueError for a reversible
        method's state with method "exact" or "plain".

    Examples
    --------
    >>> import types, numpy as np
    >>> import ddim_diffusers as dd
    >>> def unet(x, t, encoder_hidden_states):       # a stand-in for pipe.unet
    ...     bias = encoder_hidden_states.reshape(-1, 1, 1, 1)
    ...     return types.SimpleNamespace(sample=0.1 * x + bias)
    >>> pipe = types.SimpleNamespace(unet=unet, scheduler=dd.DDIMScheduler(clip_sample=False))
    >>> cond, uncond = np.full((1, 1, 1), 0.2), np.zeros((1, 1, 1))
    >>> embeds = dict(prompt_embeds=cond, negative_prompt_embeds=uncond, guidance_scale=3.0)
    >>> state = invert_latents(pipe, np.ones((1, 1, 1, 1)), method="bdia", **embeds)
    >>> sample_latents(pipe, state, method="bdia", **embeds).round(9).ravel().tolist()
    [1.0]
    """
    sample_array = noise[0] if isinstance(noise, reversible.State) else noise
    config, model = _setup(
        pipe,
        {"noise": sample_array},
        prompt_embeds,
        negative_prompt_embeds,
        guidance_scale,
        guidance_rescale,
        (added_cond_kwargs, negative_added_cond_kwargs),
    )
    method = _check_method(method)
    if isinstance(noise, reversible.State) and method not in _REVERSIBLE:
        made = "" if noise.origin is None else f" of invert_{noise.origin[0]}"
        raise ValueError(
            f"noise is a reversible sampler's state{made}, which method={method!r} cannot "
            f"sample: pass the method invert_latents used, one of {_REVERSIBLE}"
        )
    n = _steps(num_inference_steps, method_options)
    with _without_graph(sample_array):
        if method in _REVERSIBLE:
            sample = getattr(reversible, f"sample_{method}")
            return sample(
                model, noise, config, n, callback=callback, progress=progress, **method_options
            )
        return dc.sample(
            model, noise, config, n, callback=callback, progress=progress, **method_options
        )


def _without_graph(x: Any) -> Any:
    """torch.no_grad() as diffusers' pipelines run (a UNet whose parameters require grad would
    keep every call's activations), unless `x` requires grad: a caller optimising through
    the loop (noise optimisation) asked for the graph."""
    if backends.records_gradient(x):
        return contextlib.nullcontext()
    return backends.no_grad(x)


def _steps(num_inference_steps: int | None, method_options: Mapping[str, Any]) -> int | None:
    """N for the loop: as given, else 50 where no custom `timesteps` are (the loop refuses
    both, so None leaves the plan to them)."""
    if num_inference_steps is None and method_options.get("timesteps") is None:
        return 50
    return num_inference_steps


def _setup(
    pipe: Any,
    sample: dict[str, Any],
    prompt_embeds: Any,
    negative: Any,
    scale: float,
    rescale: float,
    added: tuple[Mapping[str, Any] | None, Mapping[str, Any] | None],
) -> tuple[dc.DDIMConfig, Callable[[Any, Any], Any]]:
    """The schedule and the guided model, after checking the sample (latents or noise, by
    name), the embeddings and the added conditioning up front: one library and device,
    batches that fit."""
    config = ddim_config(pipe.scheduler)
    model = guided_unet(pipe.unet, prompt_embeds, negative, scale, rescale, *added)
    embeds = {"prompt_embeds": prompt_embeds, "negative_prompt_embeds": negative}
    for name, kw in zip(("added_cond_kwargs", "negative_added_cond_kwargs"), added, strict=True):
        embeds.update({f"{name}[{k!r}]": v for k, v in (kw or {}).items()})
    ((name, x),) = sample.items()
    if x is None:  # namespace() skips None
        raise TypeError(f"{name} must be an array of the UNet's library, got None")
    backends.namespace(**sample, **embeds)  # one library (the UNet's) and device
    for key, value in embeds.items():
        if value is not None and x.ndim:
            _batch(key, value, x.shape[0], name)
    return config, model


def _check_embeddings(embeds: dict[str, Any]) -> None:
    """prompt_embeds given; embeddings arrays of one library and device, with a batch axis."""
    if embeds["prompt_embeds"] is None:
        raise TypeError(
            "prompt_embeds=None: pass the conditional text embeddings, an array of batch 1 or "
            "the latents' (e.g. from the pipeline's encode_prompt)"
        )
    backends.namespace(**embeds)
    for name, value in embeds.items():
        if value is not None and value.ndim == 0:
            raise ValueError(f"{name} is a 0-d array; expected a batch axis (batch, tokens, dim)")
    cond, uncond = embeds["prompt_embeds"], embeds["negative_prompt_embeds"]
    if uncond is not None:
        _check_pair(
            ("prompt_embeds", cond),
            ("negative_prompt_embeds", uncond),
            " (encode both prompts to the same number of tokens)",
        )


def _check_pair(cond: tuple[str, Any], uncond: tuple[str, Any], hint: str) -> None:
    """A conditional and an unconditional array (by name) that go into one 2B batch of the
    UNet: all but the batch axis, and the dtype, must agree."""
    (c_name, c), (u_name, u) = cond, uncond
    if tuple(u.shape[1:]) != tuple(c.shape[1:]) or u.ndim != c.ndim:
        raise ValueError(
            f"{u_name} has shape {tuple(u.shape)} but {c_name} has shape {tuple(c.shape)}; "
            f"they must be equal past the batch axis{hint}"
        )
    if u.dtype != c.dtype:
        raise ValueError(
            f"{u_name} has dtype {u.dtype} but {c_name} {c.dtype}; pass both in one dtype "
            "(the UNet's)"
        )


def _check_added(prompt_embeds: Any, added: Any, negative: Any, guided: bool) -> None:
    """Added conditioning (SDXL's pooled embeddings and time ids): mappings of arrays of the
    embeddings' library and device, each with a batch axis; the negative's of the same keys,
    shapes past the batch axis and dtypes (they go into one 2B batch), and given under
    guidance."""
    for name, value in (("added_cond_kwargs", added), ("negative_added_cond_kwargs", negative)):
        if value is not None and not isinstance(value, Mapping):
            raise TypeError(
                f"{name} must be a mapping of names to arrays (SDXL: text_embeds, time_ids), "
                f"got {type(value).__name__}"
            )
    if added is None:
        if negative is not None:
            raise ValueError(
                "negative_added_cond_kwargs given without added_cond_kwargs: pass the "
                "prompt's added conditioning too"
            )
        return
    if guided and negative is None:
        raise ValueError(
            "added_cond_kwargs under guidance needs negative_added_cond_kwargs, the negative "
            "prompt's (SDXL: its pooled embeddings as text_embeds, and its time ids)"
        )
    if guided and set(negative) != set(added):
        raise ValueError(
            f"negative_added_cond_kwargs has keys {sorted(negative)} but added_cond_kwargs "
            f"{sorted(added)}; they must be the same"
        )
    given = {"added_cond_kwargs": added, "negative_added_cond_kwargs": negative if guided else {}}
    arrays = {f"{name}[{k!r}]": v for name, kw in given.items() for k, v in kw.items()}
    for name, value in arrays.items():
        if value is None:  # namespace() skips None
            raise TypeError(f"{name} must be an array of the UNet's library, got None")
    backends.namespace(prompt_embeds=prompt_embeds, **arrays)  # one library and device
    for name, value in arrays.items():
        if value.ndim == 0:
            raise ValueError(f"{name} is a 0-d array; expected a batch axis")
    if not guided:
        return
    for key, value in added.items():
        _check_pair(
            (f"added_cond_kwargs[{key!r}]", value),
            (f"negative_added_cond_kwargs[{key!r}]", negative[key]),
            "",
        )


def _batch_added(name: str, added: Mapping[str, Any] | None, size: int) -> dict[str, Any]:
    """``{name: arrays for size latents}`` for the UNet call, or nothing where not given."""
    if added is None:
        return {}
    return {"added_cond_kwargs": {k: _batch(f"{name}[{k!r}]", v, size) for k, v in added.items()}}


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"method={method!r}: choose one of {METHODS}")
    return method


def _scale_embedding(xp: Any, w: float, dim: int, size: int) -> Any:
    """A guidance-distilled UNet's `timestep_cond` for guidance weight `w` (the scale less 1),
    `size` rows of `dim`: VDM's sinusoidal features of 1000 w, the sines of 1000 w f_k then
    their cosines, f_k = 10000**(-k / (dim // 2 - 1)), a zero column past them for odd `dim`.
    float32 on `xp`'s default device, every operation in the order diffusers' pipelines use,
    so that the rows are theirs to the bit."""
    half = dim // 2
    rate = xp.log(xp.asarray(10000.0, dtype=xp.float32)) / (half - 1)
    frequencies = xp.exp(xp.arange(half, dtype=xp.float32) * -rate)
    weights = xp.broadcast_to(xp.asarray([w], dtype=xp.float32) * 1000.0, (size,))
    angles = weights[:, None] * frequencies[None, :]
    columns = [xp.sin(angles), xp.cos(angles)]
    if dim % 2:
        columns.append(xp.zeros((size, 1), dtype=xp.float32))
    return xp.concat(columns, axis=1)


def _batch(name: str, embeds: Any, size: int, of: str = "latents") -> Any:
    """Embeddings for `size` latents: as given, or a batch of 1 repeated."""
    if embeds.shape[0] == size:
        return embeds
    if embeds.shape[0] != 1:
        raise ValueError(
            f"{name} has batch {embeds.shape[0]}; expected 1 or the batch of {of}, {size}"
        )
    xp = backends.namespace(**{name: embeds})
    return xp.broadcast_to(embeds, (size, *embeds.shape[1:]))


def _concat(a: Any, b: Any) -> Any:
    xp = backends.namespace(a=a, b=b)
    return xp.concat([a, b], axis=0)
