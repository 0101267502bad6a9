"""Built-in backend plugins: standard normal noise from each library's own generator, fused
step kernels (torch eager, numba for NumPy, a CuPy ElementwiseKernel), and MindSpore tensors
(their array namespace, `_mindspore`, and their noise).

Registered through ddim-core's own `ddim_core` entry points (see pyproject.toml), as a third
party's plugin would be. No framework is imported here: a generator or array of a library can
only exist once that library is imported, so each plugin looks it up in `sys.modules` (numba,
an optional extra, is imported on first use). Each plugin names the library it serves in
`requires`, which `ddim-core plugins` checks with `importlib.util.find_spec` (nothing is
imported).
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from . import _buffers, backends
from .hookspecs import hookimpl


class NumpyNoise:
    """numpy.random.Generator / RandomState: drawn in float64 on the host, then moved to the
    sample's library, device and dtype (so it serves every backend, reproducibly).

    Examples
    --------
    >>> import numpy as np
    >>> z = NumpyNoise().ddim_core_standard_normal(np.random.default_rng(0), (2,), np.zeros(2), 0)
    >>> z.shape, z.dtype
    ((2,), dtype('float64'))
    """

    requires = ("numpy",)  # shown by `ddim-core plugins`, checked without importing

    @hookimpl
    def ddim_core_standard_normal(
        self, generator: Any, shape: tuple[int, ...], like: Any, draw: int
    ) -> Any:
        """The `hookspecs.ddim_core_standard_normal` hook: noise from `generator`, or None.

        Parameters
        ----------
        generator : object
            The generator a loop or adapter was given.
        shape : tuple of int
            The noise's shape.
        like : array
            The sample: the noise's library, device and dtype.
        draw : int
            The draw's index within a loop.

        Returns
        -------
        array or None
        """
        if not isinstance(generator, np.random.Generator | np.random.RandomState):
            return None
        values = generator.standard_normal(shape)
        xp = backends.namespace(like=like)
        return backends.from_host(values, xp, device=backends.device(like), dtype=like.dtype)


class TorchNoise:
    """torch.Generator, or a list with one per batch element (extra ones unused), as diffusers'
    `randn_tensor` draws: on the generator's device (a CPU generator for a GPU sample draws on
    the CPU), in the sample's dtype, then moved to the sample's device. None draws from
    torch's global generator.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> TorchNoise().ddim_core_standard_normal(g, (2,), torch.zeros(2), 0, None).shape
    torch.Size([2])
    """

    requires = ("torch",)  # shown by `ddim-core plugins`, checked without importing

    @hookimpl
    def ddim_core_standard_normal(
        self, generator: Any, shape: tuple[int, ...], like: Any, draw: int, out: Any
    ) -> Any:
        """The `hookspecs.ddim_core_standard_normal` hook: noise from `generator`, or None.

        Parameters
        ----------
        generator : object
            The generator a loop or adapter was given.
        shape : tuple of int
            The noise's shape.
        like : array
            The sample: the noise's library, device and dtype.
        draw : int
            The draw's index within a loop.
        out : tensor or None
            A buffer to draw into (a contiguous tensor of the sample's dtype and device and of
            `shape`, used when one generator draws on the sample's device), or None.

        Returns
        -------
        array or None
        """
        torch = sys.modules.get("torch")
        if torch is None or not isinstance(like, torch.Tensor):
            return None
        if type(generator) is torch.Generator and generator.device == like.device:
            # the pipeline's case, quickly: one generator where the sample is (as `_draw`),
            # into `out` when it is a plain buffer for these draws (the same numbers)
            if _plain_buffer(torch, out, shape, like):
                return out.normal_(generator=generator)  # randn's numbers, 2 us sooner
            return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)
        if generator is None:
            if _plain_buffer(torch, out, shape, like):
                return out.normal_()
            return torch.randn(shape, device=like.device, dtype=like.dtype)
        gens = generator if isinstance(generator, list | tuple) else [generator]
        if not all(isinstance(g, torch.Generator) for g in gens):
            return None
        per_sample = _per_sample(gens, shape)
        if per_sample is None:
            return None
        rows = (1, *shape[1:]) if len(per_sample) > 1 else shape
        parts = [self._draw(torch, g, rows, like) for g in per_sample]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)

    @staticmethod
    def _draw(torch: Any, generator: Any, shape: tuple[int, ...], like: Any) -> Any:
        device = generator.device if generator.device.type != like.device.type else like.device
        z = torch.randn(shape, generator=generator, device=device, dtype=like.dtype)
        return z.to(like.device)


def _per_sample(gens: list[Any] | tuple[Any, ...], shape: tuple[int, ...]) -> list[Any] | None:
    """One generator for the whole draw, or the first `batch` of a list (diffusers'
    randn_tensor draws sample i from generator i and ignores the rest); None for a shorter
    list (the caller's error then says what a list needs)."""
    if len(gens) == 1:
        return list(gens)
    if not shape or len(gens) < shape[0]:
        return None
    return list(gens[: shape[0]])


def _plain_buffer(torch: Any, out: Any, shape: tuple[int, ...], like: Any) -> bool:
    """Whether `out` is a torch tensor to draw `like`'s noise into in place (not an inference
    tensor outside torch.inference_mode: torch does not write those there)."""
    if type(out) is not torch.Tensor or out.dtype != like.dtype or out.device != like.device:
        return False
    if tuple(out.shape) != shape or not out.is_contiguous() or out.requires_grad:
        return False
    return not out.is_inference() or torch.is_inference_mode_enabled()


class JaxNoise:
    """A JAX PRNG key (typed or raw uint32): `jax.random.normal(fold_in(key, draw))`, so every
    draw of a loop is distinct and the whole loop stays a pure function of the key; placed as
    the sample is (its device, or its sharding) where the sample is committed to one.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> JaxNoise().ddim_core_standard_normal(jax.random.key(0), (2,), jnp.zeros(2), 0).shape
    (2,)
    """

    requires = ("jax",)  # shown by `ddim-core plugins`, checked without importing

    @hookimpl
    def ddim_core_standard_normal(
        self, generator: Any, shape: tuple[int, ...], like: Any, draw: int
    ) -> Any:
        """The `hookspecs.ddim_core_standard_normal` hook: noise from `generator`, or None.

        Parameters
        ----------
        generator : object
            The generator a loop or adapter was given.
        shape : tuple of int
            The noise's shape.
        like : array
            The sample: the noise's library, device and dtype.
        draw : int
            The draw's index within a loop.

        Returns
        -------
        array or None
        """
        jax = sys.modules.get("jax")
        if jax is None or not isinstance(generator, jax.Array) or not isinstance(like, jax.Array):
            return None
        # one key only: fold_in raises on a batch of keys, and a plugin that raises is
        # unregistered for the process (`plugins.call`); a batch gets the caller's TypeError
        typed = jax.dtypes.issubdtype(generator.dtype, jax.dtypes.prng_key) and not generator.shape
        raw = generator.dtype == np.uint32 and generator.shape == (2,)
        if not (typed or raw):
            return None
        z = jax.random.normal(jax.random.fold_in(generator, draw), shape, dtype=like.dtype)
        if isinstance(like, jax.core.Tracer) or not like.committed:
            return z  # placed by the traced computation, or where JAX moves it
        return jax.device_put(z, like.sharding)  # the key's device need not be the sample's


class CupyNoise:
    """cupy.random.Generator / RandomState, drawn on the sample's GPU in its dtype (float32 or
    float64; half precision is drawn in float32 and cast).

    Examples
    --------
    >>> import numpy as np
    >>> CupyNoise().ddim_core_standard_normal(None, (2,), np.zeros(2), 0) is None  # not CuPy
    True
    """

    requires = ("cupy",)  # shown by `ddim-core plugins`, checked without importing

    @hookimpl
    def ddim_core_standard_normal(
        self, generator: Any, shape: tuple[int, ...], like: Any, draw: int
    ) -> Any:
        """The `hookspecs.ddim_core_standard_normal` hook: noise from `generator`, or None.

        Parameters
        ----------
        generator : object
            The generator a loop or adapter was given.
        shape : tuple of int
            The noise's shape.
        like : array
            The sample: the noise's library, device and dtype.
        draw : int
            The draw's index within a loop.

        Returns
        -------
        array or None
        """
        cupy = sys.modules.get("cupy")
        if cupy is None or not isinstance(like, cupy.ndarray):
            return None
        if not isinstance(generator, cupy.random.Generator | cupy.random.RandomState):
            return None
        dtype = like.dtype if like.dtype in (cupy.float32, cupy.float64) else cupy.float32
        with like.device:
            return generator.standard_normal(shape, dtype=dtype).astype(like.dtype, copy=False)


class TorchKernel:
    """torch tensors, float32/float64. On the CPU with numba installed (and its plugin, "numba",
    not blocked): numba's single pass on the tensors' memory (zero-copy NumPy views).
    Elsewhere (GPU, autograd, no numba): eager, the fewest kernels, in place on the outputs,
    so a step allocates its two outputs and nothing else (nothing with `out`).

    Examples
    --------
    >>> import torch
    >>> callable(TorchKernel().ddim_core_step_kernel(torch.zeros(2)))
    True
    """

    requires = ("torch",)  # shown by `ddim-core plugins`, checked without importing

    @hookimpl
    def ddim_core_step_kernel(self, sample: Any) -> Any:
        """The `hookspecs.ddim_core_step_kernel` hook: a fused step for `sample`'s type, or None.

        Parameters
        ----------
        sample : array
            An array of the type and dtype asked about.

        Returns
        -------
        callable or None
        """
        torch = sys.modules.get("torch")
        if torch is None or not isinstance(sample, torch.Tensor):
            return None
        single = _torch_step_numba if _numba_allowed() else _torch_step
        if sample.dtype in (torch.float16, torch.bfloat16):
            return functools.partial(_torch_step_half, single)  # chosen once, not per step
        if sample.dtype not in (torch.float32, torch.float64):
            return None
        return single


def _numba_allowed() -> bool:
    """Whether numba is installed and its plugin ("numba") is not blocked or unregistered:
    blocking it keeps numba off CPU torch steps too (asked once per type and dtype)."""
    return importlib.util.find_spec("numba") is not None and _numba_registered()


def _registered_until_told() -> bool:
    return True


# Whether the "numba" plugin is registered: set by ddim_core.plugins, which imports this
# module (this module cannot import it back: an import cycle); until then, numba if installed
_numba_registered: Callable[[], bool] = _registered_until_told


def _torch_step_half(
    single: Any, x: Any, m: Any, z: Any, c: Any, clip: float | None, out: Any
) -> Any:
    """float16 / bfloat16 CPU tensors: `single`, the float32 kernel, on float32 copies of the
    inputs (float32 is the reference's working dtype for half precision), its outputs rounded
    once to the sample's dtype, so within one rounding of the reference (which rounds once
    too). The reference's ten or so float32 ops and five casts become three casts in, one pass
    and two out. Elsewhere (an accelerator, autograd) None: the reference runs."""
    if not (x.is_cpu and m.is_cpu and (z is None or z.is_cpu)):
        return None
    if x.requires_grad or m.requires_grad or (z is not None and z.requires_grad):
        return None
    if out is not None and (_aliases(out, (x, m, z)) or any(o.dtype != x.dtype for o in out)):
        return None
    z32 = None if z is None else z.float()
    prev, x0 = single(x.float(), m.float(), z32, c, clip, None)
    if out is None:
        return prev.to(x.dtype), x0.to(x.dtype)
    # rounded before the copy where a buffer has the negative bit: torch's float32 -> float16
    # copy_ into such a view drops the bit (the buffer got -values)
    prev, x0 = (r.to(x.dtype) if o.is_neg() else r for r, o in zip((prev, x0), out, strict=True))
    return out[0].copy_(prev), out[1].copy_(x0)


def _torch_step_numba(x: Any, m: Any, z: Any, c: Any, clip: float | None, out: Any) -> Any:
    """numba's pass for plain contiguous CPU tensors with a row of floats; anything else goes
    to the eager kernel. A tensor with the negative bit holds -values in its memory, which the
    kernel's NumPy views would read as they are: such an input is resolved (copied), such an
    output goes to the eager kernel, as do tensors that may carry forward-mode tangents (dual
    tensors do not require grad; torch's ops propagate their tangents). Checks cheapest
    first: this runs once per pipeline step."""
    if x.is_neg() or m.is_neg() or (z is not None and z.is_neg()):  # is_neg: 0.1 us
        x, m = x.resolve_neg(), m.resolve_neg()  # themselves unless negative
        z = None if z is None else z.resolve_neg()
    plain = (out is not None or x.numel() >= NUMBA_MIN_ELEMENTS) and type(c.x0_x) is float
    plain = plain and x.is_cpu and x.is_contiguous() and m.is_contiguous()
    plain = plain and not (x.requires_grad or m.requires_grad or backends.forward_ad_active())
    if plain and z is not None:
        plain = z.is_contiguous() and not z.requires_grad
    view = _buffers.host_view  # flat NumPy arrays over the tensors' memory (None: none)
    if plain and out is not None:
        plain = all(o.is_contiguous() and o.dtype == x.dtype and not o.is_neg() for o in out)
        out_views = [view(o) for o in out] if plain else []
        plain = plain and all(v is not None for v in out_views)
        plain = plain and not _aliases(out, (x, m, z))
    x_view, m_view = (view(x), view(m)) if plain else (None, None)
    z_view = None if z is None or not plain else view(z)
    if x_view is None or m_view is None or (z is not None and z_view is None):
        return _torch_step(x, m, z, c, clip, out)  # (not plain, or an input without memory)
    if out is None:  # reused once nothing holds them
        prev, x0, prev_view, x0_view = _buffers.outputs(sys.modules["torch"], x)
    else:
        (prev, x0), (prev_view, x0_view) = out, out_views
    _numba().run(x_view, m_view, z_view, c, clip, prev_view, x0_view)
    return prev, x0


def _numba() -> Any:
    """ddim_core._numba, imported on first use (numba loads then), then from this cache."""
    global _numba_module
    if _numba_module is None:
        from . import _numba as module

        _numba_module = module
    return _numba_module


_numba_module: Any = None


def _torch_step(x: Any, m: Any, z: Any, c: Any, clip: float | None, out: Any) -> Any:
    """Eager torch ops, in place on the two outputs: a step allocates them and nothing else of
    the sample's size. The row holds Python floats, or 0-d / (batch, 1, ...) tensors gathered
    on the sample's device (then no value is read on the host). Within rounding of the
    reference (eq. (12)'s weights are folded: x_b = sb x0 + (d / eps_div)(eps_x x - eps_m u))."""
    torch = sys.modules["torch"]
    prev_buf = x0_buf = None
    if out is not None:
        if _aliases(out, (x, m, z)):
            return None
        # vmap has no batching rule for torch.mul(out=), forward-mode AD no formula
        if _without_memory((*out, x, m, z)) or backends.forward_ad_active():
            prev, x0 = _torch_step(x, m, z, c, clip, None)
            return out[0].copy_(prev), out[1].copy_(x0)  # fresh results: no alias is read
        prev_buf, x0_buf = out
    if _is(c.x0_x, 0.0) and _is(c.x0_m, -1.0) and _is(c.x0_div, 1.0) and clip is None:
        x0 = m if x0_buf is None else x0_buf.copy_(m)  # sample prediction: x0_pred is m
    else:
        if _is(c.x0_x, 0.0):  # x_t's term left out, as the reference does (0 * inf is NaN)
            x0 = torch.mul(m, -c.x0_m, out=x0_buf)
        else:
            x0 = torch.mul(x, c.x0_x, out=x0_buf)
            _axpy(x0, m, -c.x0_m)
        if not _is(c.x0_div, 1.0):
            x0.div_(c.x0_div)
        if clip is not None:
            x0.clamp_(-clip, clip)
    k = c.direction / c.eps_div
    prev = torch.mul(x0, c.sqrt_ab_to, out=prev_buf)
    if not _is(c.eps_x, 0.0):
        _axpy(prev, x, k * c.eps_x)
    _axpy(prev, x0 if c.eps_from_x0 else m, -k * c.eps_m)
    if z is not None:
        _axpy(prev, z, c.sigma)
    return prev, x0


def _axpy(acc: Any, y: Any, k: Any) -> None:
    """acc += k * y in place, for a Python float or a tensor k (no array-sized temporary)."""
    if isinstance(k, float):
        acc.add_(y, alpha=k)
    else:
        acc.addcmul_(y, k)


def _is(weight: Any, value: float) -> bool:
    return isinstance(weight, float) and weight == value


def _without_memory(tensors: tuple[Any, ...]) -> bool:
    """Whether a tensor's elements are not in memory at its data pointer (torch.func's vmap,
    jvp, functionalize; FakeTensor; wrapper subclasses; meta): `backends.tensor_address`."""
    return any(t is not None and backends.tensor_address(t) is None for t in tensors)


def _aliases(out: Any, inputs: tuple[Any, ...]) -> bool:
    """An output buffer sharing memory with an input would be read after being written. An
    empty tensor has none to share (its data pointer is 0, as every other empty one's), nor
    has a meta tensor. A tensor whose elements are not in memory (torch.func's vmap, jvp,
    functionalize; FakeTensor; wrapper subclasses: `backends.tensor_address` None) aliases
    only itself."""
    strided = sys.modules["torch"].strided  # a sparse input has no data pointer of its own
    address = backends.tensor_address
    ptrs = {address(a) for a in inputs if a is not None and a.layout == strided} - {None}
    for o in out:
        if any(o is a for a in inputs):
            return True
        if o.numel() and not o.is_meta and address(o) in ptrs:  # (meta: 0)
            return True
    return False


# Steps smaller than this (elements) leave numba alone unless out= asks for a fused kernel: the
# reference costs ~40 us more per step there, while importing numba and loading its cached
# compiled loop costs ~1 s once per process (measured with `ddim-core demo`, 300 x 2 points).
NUMBA_MIN_ELEMENTS = 1 << 14


class NumbaKernel:
    """NumPy float32/float64 with numba installed: one pass over memory reading x_t, the model
    output (and noise), writing both outputs (steps below NUMBA_MIN_ELEMENTS, without out=,
    are left to the reference path).

    Examples
    --------
    >>> import numpy as np
    >>> kernel = NumbaKernel().ddim_core_step_kernel(np.zeros(2))  # None without numba
    >>> kernel is None or callable(kernel)
    True
    """

    requires = ("numba",)  # shown by `ddim-core plugins`, checked without importing

    @hookimpl
    def ddim_core_step_kernel(self, sample: Any) -> Any:
        """The `hookspecs.ddim_core_step_kernel` hook: a fused step for `sample`'s type, or None.

        Parameters
        ----------
        sample : array
            An array of the type and dtype asked about.

        Returns
        -------
        callable or None
        """
        if not isinstance(sample, np.ndarray) or sample.dtype not in (np.float32, np.float64):
            return None
        if importlib.util.find_spec("numba") is None:
            return None
        return _numpy_step


def _numpy_step(x: Any, m: Any, z: Any, c: Any, clip: float | None, out: Any) -> Any:
    if out is None and x.size < NUMBA_MIN_ELEMENTS:
        return None  # the reference path, without importing numba
    return _numba().step(x, m, z, c, clip, out)


class CupyKernel:
    """CuPy float32/float64: one ElementwiseKernel pass (compiled once per dtype).

    Examples
    --------
    >>> import numpy as np
    >>> CupyKernel().ddim_core_step_kernel(np.zeros(2)) is None  # not CuPy
    True
    """

    requires = ("cupy",)  # shown by `ddim-core plugins`, checked without importing

    @hookimpl
    def ddim_core_step_kernel(self, sample: Any) -> Any:
        """The `hookspecs.ddim_core_step_kernel` hook: a fused step for `sample`'s type, or None.

        Parameters
        ----------
        sample : array
            An array of the type and dtype asked about.

        Returns
        -------
        callable or None
        """
        cupy = sys.modules.get("cupy")
        if cupy is None or not isinstance(sample, cupy.ndarray):
            return None
        if sample.dtype not in (cupy.float32, cupy.float64):
            return None
        from . import _cupy

        return _cupy.step


class MindSporeBackend:
    """MindSpore tensors, which array-api-compat does not know: their array namespace
    (`_mindspore`, imported on the first MindSpore tensor) and their noise.

    Noise for a MindSpore sample: a mindspore.Generator, None (MindSpore's default generator,
    seeded by `mindspore.manual_seed`), or a list with one generator per batch element
    (mindspore.Generator or numpy Generator, as mindone's `randn_tensor` takes). A single numpy
    Generator is `NumpyNoise`'s. MindSpore 2.10 has no CPU kernel for generator-driven normal
    draws, so a mindspore.Generator keys a NumPy Philox stream with its (seed, offset) and
    advances its offset: reproducible from `manual_seed`, the same numbers on every device,
    and each draw a stream of its own.

    Examples
    --------
    >>> import numpy as np
    >>> backend = MindSporeBackend()  # answers nothing for arrays that are not MindSpore's
    >>> backend.ddim_core_array_namespace(np.zeros(2)) is None
    True
    >>> backend.ddim_core_standard_normal(None, (2,), np.zeros(2), 0) is None
    True
    """

    requires = ("mindspore",)  # shown by `ddim-core plugins`, checked without importing

    @hookimpl
    def ddim_core_array_namespace(self, array: Any) -> Any:
        """The `hookspecs.ddim_core_array_namespace` hook: `ddim_core._mindspore` for a
        MindSpore tensor, else None (mindspore is never imported here).

        Parameters
        ----------
        array : object
            An array array-api-compat does not know.

        Returns
        -------
        module or None
        """
        mindspore = sys.modules.get("mindspore")
        if mindspore is None or not isinstance(array, mindspore.Tensor):
            return None
        from . import _mindspore

        return _mindspore

    @hookimpl
    def ddim_core_standard_normal(
        self, generator: Any, shape: tuple[int, ...], like: Any, draw: int
    ) -> Any:
        """The `hookspecs.ddim_core_standard_normal` hook: noise for a MindSpore sample from a
        mindspore.Generator, None (the default generator) or one generator per batch element,
        else None.

        Parameters
        ----------
        generator : object
            A mindspore.Generator, None, or a list of mindspore or numpy generators, one per
            batch element (``shape[0]``).
        shape : tuple of int
            The noise's shape.
        like : array
            The sample: the noise's device and dtype.
        draw : int
            The draw's index within a loop (unused: each generator advances itself).

        Returns
        -------
        mindspore.Tensor or None
            float64 normals drawn on the host, as `like`'s dtype on its device.
        """
        mindspore = sys.modules.get("mindspore")
        if mindspore is None or not isinstance(like, mindspore.Tensor):
            return None
        if generator is None:
            generator = mindspore.default_generator
        gens = generator if isinstance(generator, list | tuple) else [generator]
        kinds = (mindspore.Generator, np.random.Generator, np.random.RandomState)
        if isinstance(generator, kinds[1:]) or not all(isinstance(g, kinds) for g in gens):
            return None  # a single numpy Generator: NumpyNoise's
        per_sample = _per_sample(gens, shape)
        if per_sample is None:
            return None
        if len(per_sample) == 1:
            values = _host_normal(mindspore, per_sample[0], shape)
        else:
            rows = (1, *shape[1:])
            values = np.concatenate([_host_normal(mindspore, g, rows) for g in per_sample])
        from . import _mindspore

        return _mindspore.asarray(values, dtype=like.dtype, device=like.device)


def _host_normal(mindspore: Any, generator: Any, shape: tuple[int, ...]) -> np.ndarray:
    """float64 standard normals on the host from a numpy or a mindspore Generator."""
    if isinstance(generator, mindspore.Generator):
        # MindSpore's own random ops read and advance the generator the same way. (seed,
        # offset) is the Philox key, not its counter: counter + 1 is the same stream 4 numbers
        # on, so the next draw would be this one shifted
        seed, offset = (int(v) for v in generator._step(mindspore.tensor(1, mindspore.int64)))
        key = [seed % 2**64, offset % 2**64]
        generator = np.random.Generator(np.random.Philox(key=np.array(key, dtype=np.uint64)))
    values: np.ndarray = generator.standard_normal(shape)
    return values


numpy_noise = NumpyNoise()
torch_noise = TorchNoise()
jax_noise = JaxNoise()
cupy_noise = CupyNoise()
numba_kernel = NumbaKernel()
torch_kernel = TorchKernel()
cupy_kernel = CupyKernel()
mindspore_backend = MindSporeBackend()
# by entry-point name (pyproject.toml), for a source tree whose entry points are not installed
PLUGINS = {
    "numpy": numpy_noise,
    "torch": torch_noise,
    "jax": jax_noise,
    "cupy": cupy_noise,
    "numba": numba_kernel,
    "torch-fused": torch_kernel,
    "cupy-fused": cupy_kernel,
    "mindspore": mindspore_backend,
}
