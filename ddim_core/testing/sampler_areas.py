"""The conformance areas of a k-diffusion-style sampler function `fn(model, x, sigmas, ...)`.

The model is the exact denoiser of Gaussian data N(mu, s^2 I) in k-diffusion's form
(`model(x, sigma * ones(batch))` returns E[x_0 | x]), with drawn mu and s; sigmas are those
of a DDIM plan (`reference.sigmas`), descending to 0 to sample and ascending from 0 to
invert. Loops are compared with `reference.kdiffusion_sample` / `kdiffusion_invert` within
TOLERANCE[dtype] * steps * (|exact| + 1 + sigma_max): each step rounds iterates as large as
sigma_max in this form.
"""

from __future__ import annotations

import functools
import itertools
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
from hypothesis import strategies as st

from ddim_core import backends
from ddim_core.config import DDIMConfig

from . import reference
from .assertions import TOLERANCE, assert_array_close, describe, n_steps, rel
from .backends import round_to, to_numpy
from .strategies import configs, etas
from .suite import FAIL, NA, PASS, UNSUPPORTED, AllUnsupported, Divergence, Finding, search
from .targets import Crash, Malformed, Sampler, Unsupported, describe_error

SHAPE = (2, 3, 4, 4)
VARY = ("beta_schedule", "beta_start", "beta_end", "timestep_spacing", "steps_offset")


def gaussian_denoiser(mu: float, s: float) -> Callable[..., Any]:
    """E[x_0 | x] for x_0 ~ N(mu, s^2 I) and x = x_0 + sigma * noise, on any backend.

    Parameters
    ----------
    mu : float
        The data's mean.
    s : float
        The data's standard deviation.

    Returns
    -------
    callable
        `model(x, sigma, **extra_args)`: mu + s^2 / (s^2 + sigma^2) * (x - mu), sigma one
        level per batch element (extra arguments, as k-diffusion passes, are ignored).

    Examples
    --------
    >>> model = gaussian_denoiser(0.0, 1.0)
    >>> model(np.array([[2.0, -2.0]]), np.array([1.0]))  # halfway to the mean at sigma = s
    array([[ 1., -1.]])
    >>> model(np.array([[2.0, -2.0]]), np.array([0.0]))  # sigma 0: x is clean
    array([[ 2., -2.]])
    >>> gaussian_denoiser(1.0, 1.0)(np.array([[3.0]]), np.array([1.0]))
    array([[2.]])
    """

    def model(x: Any, sigma: Any, **extra_args: Any) -> Any:
        xp = backends.namespace(sigma=sigma)  # array-api-strict arrays have no .reshape
        sig = xp.reshape(sigma, (-1,) + (1,) * (len(x.shape) - 1))
        # float16 sigmas above 256 square to inf and the ratio to 0, where it is below 1e-4
        # (s <= 2): NumPy's overflow warning would read as the checked sampler's
        with np.errstate(over="ignore"):
            return mu + (s * s) / (s * s + sig * sig) * (x - mu)

    return model


def t_only_denoiser(seed: int, shape: tuple[int, ...]) -> Callable[..., Any]:
    """A denoiser whose implied noise (x - D) / sigma depends on sigma only: each inverse
    step is then the exact inverse of a forward one.

    Parameters
    ----------
    seed : int
        Seed of the noise; each level (sigma of the batch's first element, rounded to 1e-6)
        draws its own standard normal array from it.
    shape : tuple of int
        The shape of the samples (and of the noise).

    Returns
    -------
    callable
        `model(x, sigma, **extra_args)`: x - sigma * eps(sigma), on NumPy arrays or torch
        tensors (the noise made in x's dtype and device).

    Examples
    --------
    >>> model = t_only_denoiser(0, (1, 2))
    >>> sigma = np.array([0.5])
    >>> x, y = np.zeros((1, 2)), np.ones((1, 2))
    >>> eps_x, eps_y = (x - model(x, sigma)) / 0.5, (y - model(y, sigma)) / 0.5
    >>> bool(np.allclose(eps_x, eps_y)), eps_x.round(4)
    (True, array([[ 0.9482, -1.1175]]))
    """

    def eps(level: float) -> np.ndarray:
        return np.random.default_rng([seed, round(level * 1e6)]).standard_normal(shape)

    def model(x: Any, sigma: Any, **extra_args: Any) -> Any:
        level = float(to_numpy(sigma).reshape(-1)[0])
        if isinstance(x, np.ndarray):
            return x - level * eps(level)
        return x - level * _like(x, eps(level))

    return model


def _like(x: Any, values: np.ndarray) -> Any:
    module = type(x).__module__
    if module.startswith("torch"):
        import torch

        return torch.from_numpy(values).to(device=x.device, dtype=x.dtype)
    return np.asarray(values, dtype=x.dtype)


def _sigmas(config: DDIMConfig, n: int, inverse: bool) -> np.ndarray:
    try:
        plan = reference.make_plan(config, n)
    except ValueError as e:
        raise Unsupported(str(e)) from None
    sig = reference.sigmas(plan)
    return sig[::-1].copy() if inverse else sig


def loop_matches(
    target: Sampler,
    config: DDIMConfig,
    n: int,
    seed: int,
    mu: float,
    s: float,
    *,
    dtype: str = "float64",
    eta: float = 0.0,
) -> None:
    """The target's loop over a plan's sigmas equals exact DDIM's (Divergence).

    The plan's sigmas (`reference.sigmas`, ascending to invert), a seeded start (sigma_max
    times standard normal to sample, standard normal to invert) and one seeded noise draw
    per step served by noise_sampler; the result must have the input's dtype and equal
    `reference.kdiffusion_sample` / `kdiffusion_invert` within TOLERANCE[dtype] * n *
    (|exact| + 1 + sigma_max).

    Parameters
    ----------
    target : Sampler
        The wrapped sampler function, forward or inverse.
    config : DDIMConfig
        The options of the plan (schedule, spacing, offset).
    n : int
        The number of steps.
    seed : int
        Seed of the start and of the noise draws.
    mu : float
        The mean of the data the Gaussian denoiser is exact for.
    s : float
        Its standard deviation.
    dtype : str, optional
        The dtype of x (sigmas in float32 for float16 and bfloat16, as k-diffusion's
        get_sigmas_* and ComfyUI make them). Default "float64".
    eta : float, optional
        DDIM's eta (passed with noise_sampler when nonzero). Default 0.

    Raises
    ------
    Divergence
        If the loop returns another dtype than x's (half precision: than x's or the sigmas'
        float32, which k-diffusion's Euler, Heun and LMS return there), or values off exact
        DDIM's by more than the tolerance (`assertions.assert_array_close`; the message
        names the config, the element and the size of the error).
    Unsupported
        If no plan of n steps exists for `config`, or eta is nonzero and the sampler takes
        no eta and noise_sampler (`Sampler.run`).
    Crash
        If the sampler raises.

    Examples
    --------
    >>> from ddim_core.testing.targets import wrap
    >>> def sample_euler(model, x, sigmas):  # DDIM with eta 0 in this form
    ...     for i in range(len(sigmas) - 1):
    ...         d = (x - model(x, sigmas[i : i + 1])) / sigmas[i]
    ...         x = x + d * (sigmas[i + 1] - sigmas[i])
    ...     return x
    >>> euler = wrap(sample_euler, backend_name="numpy")
    >>> loop_matches(euler, DDIMConfig(), 10, seed=0, mu=0.5, s=1.0, dtype="float32")
    >>> reference_loop = wrap(reference.kdiffusion_sample, backend_name="numpy")
    >>> try:
    ...     loop_matches(reference_loop, DDIMConfig(), 10, seed=0, mu=0.5, s=1.0, dtype="float32")
    ... except Divergence as e:
    ...     print(e)
    DDIMConfig(), 10 steps, mu=0.5, s=1, eta=0.0, float32: a float32 loop returns float64
    """
    b = target.backend
    sig = _sigmas(config, n, target.inverse)
    rng = np.random.default_rng(seed)
    start = sig[0] if not target.inverse else 1.0
    x = round_to(start * rng.standard_normal(SHAPE), dtype)
    draws = [round_to(rng.standard_normal(SHAPE), dtype) for _ in range(n)]
    calls = iter(range(n))

    def noise_sampler(sigma: Any, sigma_next: Any) -> Any:
        return b.array(draws[next(calls)], dtype)

    sigma_dtype = "float32" if dtype in ("float16", "bfloat16") else dtype
    model = gaussian_denoiser(mu, s)
    got = target.run(
        model, b.array(x, dtype), b.array(sig, sigma_dtype), eta=eta, noise_sampler=noise_sampler
    )
    if target.inverse:
        exact = reference.kdiffusion_invert(model, x, sig)
    else:
        exact = reference.kdiffusion_sample(model, x, sig, eta=eta, noise=draws)
    context = f"{describe(config)}, {n_steps(n)}, mu={mu:.3g}, s={s:.3g}, eta={eta}, {dtype}"
    # half precision: x's dtype or the sigmas' float32 (k-diffusion's Euler, Heun and LMS
    # divide by sigma as a 4-d float32 tensor and return float32; ComfyUI casts either back)
    if str(got.dtype).rpartition(".")[2] not in (dtype, sigma_dtype):
        sigmas_note = f" (sigmas {sigma_dtype})" if sigma_dtype != dtype else ""
        raise Divergence(f"{context}: a {dtype} loop{sigmas_note} returns {got.dtype}")
    try:
        # rounding of iterates as large as sigma_max * noise, at most once per step
        size = 1.0 + float(sig.max())
        assert_array_close(got, exact, dtype, scale=n, magnitude=size, what="x", context=context)
    except AssertionError as e:
        raise Divergence(str(e)) from None


def _cases() -> st.SearchStrategy[Any]:
    return st.tuples(
        configs(*VARY, clip_sample=False),
        st.integers(1, 30),
        st.integers(0, 2**16),
        st.floats(-1.0, 1.0),
        st.floats(0.3, 2.0),
    )


def _run(area: str, prop: Callable[[Any], None], strategy: Any, checked: str) -> Finding:
    try:
        found = search(prop, strategy, examples=30)
    except AllUnsupported:
        return Finding(area, UNSUPPORTED, f"takes none of the inputs drawn ({checked})")
    return Finding(area, FAIL, found) if found else Finding(area, PASS, checked)


def step_values(target: Sampler) -> Finding:
    """The sampler's loop (sampling or inverting) with an exact Gaussian denoiser, float64,
    against exact DDIM's.

    Up to 30 random configs (schedule, betas, spacing, offset), plans of 1 to 30 steps,
    denoisers of data N(mu, s^2 I) with mu in [-1, 1] and s in [0.3, 2] (`loop_matches`).

    Parameters
    ----------
    target : Sampler
        The wrapped sampler function, forward or inverse.

    Returns
    -------
    Finding
        Area "step values: sample": pass; FAIL with the first divergence, shrunk; or
        unsupported when no config drawn has a plan the sampler takes.

    Examples
    --------
    >>> from ddim_core.testing.targets import wrap
    >>> def sample_euler(model, x, sigmas):  # DDIM with eta 0 in this form
    ...     for i in range(len(sigmas) - 1):
    ...         d = (x - model(x, sigmas[i : i + 1])) / sigmas[i]
    ...         x = x + d * (sigmas[i + 1] - sigmas[i])
    ...     return x
    >>> step_values(wrap(sample_euler, backend_name="numpy")).verdict
    'pass'
    >>> def sample_euler_but_last(model, x, sigmas):  # stops one step short
    ...     return sample_euler(model, x, sigmas[:-1])
    >>> found = step_values(wrap(sample_euler_but_last, backend_name="numpy"))
    >>> print(found.verdict, found.detail)
    FAIL x[...] = ... but exact DDIM gives ...: off by ... (relative ...), ... x the tolerance
    ... (DDIMConfig(clip_sample=False), 1 step, mu=0, s=1, eta=0.0, float64)
    """
    area = "step values: sample"
    what = "invert" if target.inverse else "sample"

    def prop(case: Any) -> None:
        loop_matches(target, *case)

    return _run(area, prop, _cases(), f"{what} with an exact Gaussian denoiser, float64")


def eta_noise(target: Sampler) -> Finding:
    """eta in (0, 1], each step's noise drawn by the caller's noise_sampler, against exact
    DDIM with the same draws.

    Random configs and Gaussian denoisers as in `step_values`, float64.

    Parameters
    ----------
    target : Sampler
        The wrapped sampler function.

    Returns
    -------
    Finding
        Area "eta noise": pass; FAIL with the first divergence, shrunk; n/a for an inverse
        sampler; unsupported when the function takes no eta and noise_sampler.

    Examples
    --------
    The reference loop, its noise drawn by noise_sampler, passes; a sampler without eta is
    unsupported:

    >>> from ddim_core.testing.targets import wrap
    >>> def sample_ddim(model, x, sigmas, eta=0.0, noise_sampler=None):
    ...     steps = zip(sigmas[:-1], sigmas[1:])
    ...     draws = [noise_sampler(a, b) for a, b in steps] if eta else None
    ...     return reference.kdiffusion_sample(model, x, sigmas, eta=eta, noise=draws)
    >>> eta_noise(wrap(sample_ddim, backend_name="numpy")).verdict
    'pass'
    >>> eta_noise(wrap(reference.kdiffusion_sample, backend_name="numpy")).detail
    'takes no eta and noise_sampler'
    >>> eta_noise(wrap(reference.kdiffusion_invert, backend_name="numpy")).verdict
    'n/a'
    """
    area = "eta noise"
    if target.inverse:
        return Finding(area, NA, "inversion is deterministic")
    if not {"eta", "noise_sampler"} <= target.params:
        return Finding(area, UNSUPPORTED, "takes no eta and noise_sampler")

    def prop(case: Any) -> None:
        args, eta = case
        loop_matches(target, *args, eta=eta)

    strategy = st.tuples(_cases(), etas().filter(lambda e: e > 0))
    return _run(area, prop, strategy, "eta in (0, 1], noise from noise_sampler, float64")


def inverse_mirror(target: Sampler) -> Finding:
    """Invert with the sampler, then sample with exact DDIM down the same sigmas, with a
    denoiser whose implied noise depends on sigma only (`t_only_denoiser`): x_0 comes back.

    Random configs and plans of 1 to 30 steps, float64; x_0 must come back within
    TOLERANCE["float64"] * n * (1 + sigma_max), relative.

    Parameters
    ----------
    target : Sampler
        The wrapped sampler function.

    Returns
    -------
    Finding
        Area "inverse mirror": pass; FAIL with how far from x_0 the round trip lands,
        shrunk; n/a for a forward sampler.

    Examples
    --------
    >>> from ddim_core.testing.targets import wrap
    >>> inverse_mirror(wrap(reference.kdiffusion_invert, backend_name="numpy")).verdict
    'pass'
    >>> inverse_mirror(wrap(reference.kdiffusion_sample, backend_name="numpy")).verdict
    'n/a'
    """
    area = "inverse mirror"
    if not target.inverse:
        return Finding(area, NA, "a forward sampler (check the inverse one)")

    def prop(case: Any) -> None:
        config, n, seed, _, _ = case
        sig = _sigmas(config, n, True)
        model = t_only_denoiser(seed, SHAPE)
        x0 = np.random.default_rng(seed).standard_normal(SHAPE)
        b = target.backend
        z = to_numpy(target.run(model, b.array(x0), b.array(sig)))
        back = reference.kdiffusion_sample(model, z, sig[::-1])
        error = rel(back, x0)
        if not error <= TOLERANCE["float64"] * n * (1 + sig[-1]):
            raise Divergence(
                f"{describe(config)}, {n_steps(n)}: sampling down the same sigmas after inverting "
                f"returns x_0 off by {error:.2g} (relative)"
            )

    return _run(area, prop, _cases(), "inverting then sampling returns x_0, float64")


def dtypes(target: Sampler) -> Finding:
    """float32 loops (and float16, bfloat16 where the library has them; their sigmas in
    float32) against exact DDIM within the dtype's tolerance, returning the input's dtype
    (half precision: or the sigmas' float32, as k-diffusion's own samplers do).

    Up to 15 random configs and Gaussian denoisers per dtype (`loop_matches`).

    Parameters
    ----------
    target : Sampler
        The wrapped sampler function, forward or inverse.

    Returns
    -------
    Finding
        Area "dtypes": pass naming the dtypes; or FAIL with each dtype's first divergence,
        joined by "; ".

    Examples
    --------
    The reference loop computes in float64 whatever it is given:

    >>> from ddim_core.testing.targets import wrap
    >>> found = dtypes(wrap(reference.kdiffusion_sample, backend_name="numpy"))
    >>> print(found.verdict, found.detail)
    FAIL DDIMConfig(clip_sample=False), 1 step, mu=0, s=1, eta=0.0, float32: a float32 loop
    returns float64; DDIMConfig(clip_sample=False), 1 step, mu=0, s=1, eta=0.0, float16: a
    float16 loop (sigmas float32) returns float64

    An Euler loop in NumPy returns float32 for float16 x and float32 sigmas (NumPy promotes
    by the sigma), as k-diffusion's sample_euler does in torch:

    >>> def sample_euler(model, x, sigmas):  # DDIM with eta 0 in this form
    ...     for i in range(len(sigmas) - 1):
    ...         d = (x - model(x, sigmas[i : i + 1])) / sigmas[i]
    ...         x = x + d * (sigmas[i + 1] - sigmas[i])
    ...     return x
    >>> dtypes(wrap(sample_euler, backend_name="numpy"))
    Finding(area='dtypes', verdict='pass', detail='float32, float16 loops')
    """
    area = "dtypes"
    found = []
    halves = [d for d in ("float16", "bfloat16") if target.backend.supports(d)]
    for dtype in ("float32", *halves):

        def prop(case: Any, dtype: str = dtype) -> None:
            loop_matches(target, *case, dtype=dtype)

        try:
            message = search(prop, _cases(), examples=15)
        except AllUnsupported:
            continue
        if message:
            found.append(message)
    if found:
        return Finding(area, FAIL, "; ".join(found))
    return Finding(area, PASS, f"float32{''.join(', ' + d for d in halves)} loops")


def nan_inf(target: Sampler) -> Finding:
    """Loops of 1 to 30 steps of every schedule, spacing and eta 0 / 1, float32 and float64,
    from sigma_max up to 1e4: finite.

    The denoiser of N(0, I) data, noise_sampler drawing ones; inverse samplers at eta 0,
    from a standard normal x. Loops the sampler does not take (eta) are skipped.

    Parameters
    ----------
    target : Sampler
        The wrapped sampler function, forward or inverse.

    Returns
    -------
    Finding
        Area "NaN/Inf": pass with the number of loops run and those not taken (eta 1 when
        the sampler takes no eta and noise_sampler); FAIL naming the first loop with a NaN
        or Inf in its result; or unsupported when no loop is taken.

    Raises
    ------
    Crash
        If the sampler raises (`conformance.check` reports the area FAIL).

    Examples
    --------
    >>> from ddim_core.testing.targets import wrap
    >>> def sample_euler(model, x, sigmas):  # DDIM with eta 0 in this form
    ...     for i in range(len(sigmas) - 1):
    ...         d = (x - model(x, sigmas[i : i + 1])) / sigmas[i]
    ...         x = x + d * (sigmas[i + 1] - sigmas[i])
    ...     return x
    >>> print(nan_inf(wrap(sample_euler, backend_name="numpy")).detail)
    540 loops finite (not taken: eta=1.0: takes no eta and noise_sampler)
    """
    area = "NaN/Inf"
    b = target.backend
    total = 0
    not_taken: set[str] = set()
    for n, schedule, spacing, dtype, eta in itertools.product(
        range(1, 31),
        ("linear", "scaled_linear", "squaredcos_cap_v2"),
        ("leading", "trailing", "linspace"),
        ("float32", "float64"),
        (0.0, 1.0) if not target.inverse else (0.0,),
    ):
        config = DDIMConfig(beta_schedule=schedule, timestep_spacing=spacing)
        sig = _sigmas(config, n, target.inverse)
        x = round_to(
            np.random.default_rng(n).standard_normal(SHAPE)
            * (sig.max() if not target.inverse else 1),
            dtype,
        )
        ones = b.array(np.ones(SHAPE), dtype)
        try:
            got = target.run(
                gaussian_denoiser(0.0, 1.0),
                b.array(x, dtype),
                b.array(sig, dtype),
                eta=eta,
                noise_sampler=functools.partial(_constant, ones),
            )
        except Unsupported as e:  # eta 1 without eta and noise_sampler: eta 0 still runs
            not_taken.add(f"eta={eta}: {e}")
            continue
        total += 1
        values = to_numpy(got)
        if not np.all(np.isfinite(values)):
            kind = "NaN" if np.isnan(values).any() else "Inf"
            return Finding(
                area,
                FAIL,
                f"{describe(config)}, {n_steps(n)}, eta={eta}, {dtype}: {kind} in "
                f"{int((~np.isfinite(values)).sum())} of {values.size} elements",
            )
    note = f" (not taken: {'; '.join(sorted(not_taken))})" if not_taken else ""
    if not total:
        return Finding(area, UNSUPPORTED, f"no loop taken{note}")
    return Finding(area, PASS, f"{total} loops finite{note}")


HOST_READS = frozenset(
    ("item", "tolist", "numpy", "cpu", "__array__", "__bool__", "__float__", "__int__", "__index__")
)


def _constant(value: Any, *args: Any) -> Any:
    return value


def host_syncs(target: Sampler) -> Finding:
    """Loops of 5 and 10 steps on torch tensors that record every read back to the host (a
    sync on a GPU): reading the sigmas once before the loop is fine, reads that grow with the
    number of steps are not.

    Reads recorded: `HOST_READS` (item, tolist, numpy, cpu, __array__, __bool__,
    __float__, __int__, __index__) on the sigmas, the sample or anything computed from them.

    Parameters
    ----------
    target : Sampler
        The wrapped sampler function, on the torch backend.

    Returns
    -------
    Finding
        Area "host syncs": pass with the reads per loop; FAIL when a 10-step loop reads more
        often than a 5-step one; n/a on any other backend than torch; unsupported when the
        sampler raises on the tensor subclass.

    Raises
    ------
    Malformed
        If the sampler returns no tensor of x's shape (`conformance.check` reports the area
        FAIL).

    Examples
    --------
    >>> from ddim_core.testing.targets import wrap
    >>> def sample_euler(model, x, sigmas):  # DDIM with eta 0 in this form
    ...     for i in range(len(sigmas) - 1):
    ...         d = (x - model(x, sigmas[i : i + 1])) / sigmas[i]
    ...         x = x + d * (sigmas[i + 1] - sigmas[i])
    ...     return x
    >>> host_syncs(wrap(sample_euler, backend_name="numpy")).verdict
    'n/a'
    >>> host_syncs(wrap(sample_euler, backend_name="torch")).detail
    '0 host reads per loop, none per step'
    >>> def sample_euler_floats(model, x, sigmas):  # reads two sigmas a step
    ...     for i in range(len(sigmas) - 1):
    ...         s, s_next = sigmas[i].item(), sigmas[i + 1].item()
    ...         x = x + (x - model(x, sigmas[i : i + 1])) / s * (s_next - s)
    ...     return x
    >>> print(host_syncs(wrap(sample_euler_floats, backend_name="torch")).detail)
    reads back to the host 10 times in 5 steps and 20 in 10 (item): a sync per step on a GPU
    """
    area = "host syncs"
    if target.backend.module != "torch":
        return Finding(area, NA, f"needs torch tensors ({target.backend.name} arrays)")
    import torch

    reads: list[str] = []

    class Recorded(torch.Tensor):
        @classmethod
        def __torch_function__(
            cls, func: Any, types: Any, args: Any = (), kwargs: Any = None
        ) -> Any:
            name = getattr(func, "__name__", "")
            if name in HOST_READS:
                reads.append(name)
            return super().__torch_function__(func, types, args, kwargs or {})  # type: ignore[no-untyped-call]

    counts = []
    for n in (5, 10):
        sig = torch.from_numpy(_sigmas(DDIMConfig(), n, target.inverse)).as_subclass(Recorded)
        x = torch.zeros(SHAPE, dtype=sig.dtype).as_subclass(Recorded)
        reads.clear()
        try:
            target.run(gaussian_denoiser(0.0, 1.0), x, sig)
        except Malformed:
            raise  # it ran on the subclass: conformance.check reports what it returned
        except Crash as e:
            cause = describe_error(e.__cause__) if e.__cause__ else str(e)
            return Finding(area, UNSUPPORTED, f"fails on a torch.Tensor subclass: {cause}")
        counts.append((len(reads), sorted(set(reads))))
    (five, _), (ten, names) = counts
    if ten > five:
        return Finding(
            area,
            FAIL,
            f"reads back to the host {five} times in 5 steps and {ten} in 10 "
            f"({', '.join(names)}): a sync per step on a GPU",
        )
    return Finding(area, PASS, f"{ten} host reads per loop, none per step")


def thread_safety(target: Sampler) -> Finding:
    """THREADS concurrent calls, each with its own sigmas (plans of 3 to 10 steps), start and
    denoiser, against the same calls made one after another.

    Parameters
    ----------
    target : Sampler
        The wrapped sampler function, forward or inverse.

    Returns
    -------
    Finding
        Area "thread safety": pass; or FAIL with what a concurrent call raised, or when a
        result differs from the serial call's.

    Raises
    ------
    Crash
        If the sampler raises in the serial calls (`conformance.check` reports the area
        FAIL).

    Examples
    --------
    >>> from ddim_core.testing.targets import wrap
    >>> thread_safety(wrap(reference.kdiffusion_sample, backend_name="numpy"))
    Finding(area='thread safety', verdict='pass', detail='8 concurrent calls')
    """
    from .areas import THREADS, _in_threads

    area = "thread safety"
    b = target.backend
    config = DDIMConfig()
    jobs = [(_sigmas(config, 3 + i, target.inverse), i) for i in range(THREADS)]

    def run(i: int) -> np.ndarray:
        sig, seed = jobs[i]
        x = np.random.default_rng(seed).standard_normal(SHAPE)
        model = gaussian_denoiser(0.1 * seed, 1.0)
        return to_numpy(target.run(model, b.array(x), b.array(sig)))

    serial = [run(i) for i in range(THREADS)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        results, errors = _in_threads(run, THREADS)
    finally:
        sys.setswitchinterval(interval)
    if errors:
        return Finding(area, FAIL, f"concurrent calls: {describe_error(errors[0])}")
    if not all(np.array_equal(a, s) for a, s in zip(results, serial, strict=True)):
        return Finding(area, FAIL, "concurrent calls give other results than serial ones")
    return Finding(area, PASS, f"{THREADS} concurrent calls")


def all_areas(target: Sampler) -> list[Callable[[], Finding]]:
    """The areas in report order (those of schedulers, some not applicable).

    Parameters
    ----------
    target : Sampler
        The wrapped sampler function, forward or inverse.

    Returns
    -------
    list of callable
        One function per name of `conformance.AREAS`, in that order, each returning the
        area's `Finding` when called; the areas that do not apply to a sampler (timesteps,
        previous timestep, epsilon and v_prediction values, clipping, per-sample timesteps,
        out= buffers) return n/a.

    Examples
    --------
    >>> from ddim_core.testing.conformance import AREAS
    >>> from ddim_core.testing.targets import wrap
    >>> runs = all_areas(wrap(reference.kdiffusion_sample, backend_name="numpy"))
    >>> len(runs) == len(AREAS)
    True
    >>> runs[AREAS.index("timesteps")]()
    Finding(area='timesteps', verdict='n/a', detail="a sampler takes the caller's sigmas")
    """
    sigmas = "a sampler takes the caller's sigmas"
    denoised = "k-diffusion models return the denoised x_0: see step values: sample"
    return [
        lambda: Finding("timesteps", NA, sigmas),
        lambda: Finding("previous timestep", NA, sigmas),
        lambda: Finding("step values: epsilon", NA, denoised),
        lambda: step_values(target),
        lambda: Finding("step values: v_prediction", NA, denoised),
        lambda: Finding("clipping and thresholding", NA, "k-diffusion samplers do not clip"),
        lambda: eta_noise(target),
        lambda: inverse_mirror(target),
        lambda: dtypes(target),
        lambda: nan_inf(target),
        lambda: Finding("per-sample timesteps", NA, "the batch shares the sigmas"),
        lambda: Finding("out= buffers", NA, "a sampler returns its result"),
        lambda: host_syncs(target),
        lambda: thread_safety(target),
    ]
