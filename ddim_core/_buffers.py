"""Fused torch steps write into reused CPU buffers, once nothing outside holds them.

A sampling loop drops each step's outputs a step or two later (`x = step(...).prev_sample`).
Fresh CPU tensors of a latent's size come from mmap or a trimmed heap, so the first write to
every page faults: at 8x4x128x128 float32 that nearly doubles the time of a step
(benchmarks/pipeline.py). So the numba kernel for torch tensors (`builtins`) writes into
buffers of its own and hands out a `detach()`ed alias of each. A buffer is reused only when
its storage is held by nothing but the pool: no tensor, view, NumPy array, DLPack capsule or
storage object anywhere (torch counts the tensors sharing a storage; Python counts the
storage object's holders), nor a weak reference to that object (the pool keeps the object
alive, so a weak reference that a fresh output's drop would have killed reads on), and only
while its storage still has the memory it was made with: `share_memory_()` moves it into
shared memory that another process may map without any count here (a `torch.multiprocessing`
queue), and `resize_` gives it new memory (of a new size). Its numbers never change while a
user can see them. A buffer a caller read through `Tensor.numpy()` (or `np.asarray`), which
marks its storage as never resizable, is not reused either: later outputs stay resizable, as
fresh tensors are.

The kernel reads and writes the tensors through flat NumPy arrays over their memory
(`host_view`), not `Tensor.numpy()`: that marks the storage as never resizable, so a caller's
`latents.resize_(...)` would raise after a step, where diffusers' tensors stay resizable.
Such an array is an address, a length and a dtype: one is made per (address, length, dtype)
and kept, as the pool keeps its buffers' storage objects. A step checks two buffers and
makes two aliases; it allocates nothing of the sample's size.

The kernel asks only for plain, contiguous float32/float64 CPU tensors without grad
(accelerators have caching allocators already) of at least `MIN_BYTES`; each thread keeps
its own pool of at most `SIZE` buffers of one shape, dtype and inference mode (the last it
stepped), freed when the thread ends.
"""

from __future__ import annotations

import sys
import threading
from typing import Any
from weakref import getweakrefcount

import numpy as np

from . import backends

SIZE = 4  # a loop's step needs two free buffers while the last step's outputs are held
MIN_BYTES = 1 << 17  # smaller blocks come from malloc's bins: no page faults to save
_COUNT = "_storage_Use_Count"  # torch's count of a storage's users (no pool without it)
_local = threading.local()
_use_count: Any = None  # torch._C._storage_Use_Count
_TYPESTR: dict[Any, str] = {}  # torch dtype -> NumPy's array interface typestr


def _holders(storage: Any) -> tuple[int, int, int, int, int, bool]:
    """(tensors sharing a buffer's storage, Python references to its storage object, weak
    references to it, its memory: address and size, whether it is resizable). torch keeps one
    storage object per storage (a tensor's `untyped_storage()` is always the same object): the
    pool keeps it beside the buffer."""
    global _use_count
    if _use_count is None:  # bound on first use: torch is not imported here
        _use_count = getattr(sys.modules["torch"]._C, _COUNT)
    refs = sys.getrefcount(storage)
    weak = getweakrefcount(storage)
    memory = storage.data_ptr(), storage.nbytes(), storage.resizable()
    return _use_count(storage._cdata), refs, weak, *memory


class _Memory:
    """An array interface over a CPU tensor's memory (NumPy keeps it as the array's base)."""

    __slots__ = ("__array_interface__",)

    def __init__(self, address: int, length: int, typestr: str) -> None:
        self.__array_interface__ = {
            "data": (address, False),
            "shape": (length,),
            "typestr": typestr,
            "version": 3,
        }


def host_view(t: Any) -> Any:
    """A flat NumPy array over the memory of `t`, a contiguous float32/float64 CPU tensor, for
    the kernel: what `t.numpy().ravel()` gives, except that the storage stays resizable (module
    docstring). The array holds nothing of `t`: it is an address, a length and a dtype, valid
    while `t` has this memory (the call it is made for). So one array serves every tensor at
    that address, length and dtype, and is cached (a step's tensors mostly come back to the
    same few addresses: the pool's buffers, the model's outputs). Another dtype goes through
    `t.numpy()`, which checks it. A tensor with the negative bit must be resolved first (the
    kernel does): a view cached for its address reads the memory as it is, without the sign
    (only a first call at an address goes through `t.numpy()`, which refuses it). None for a
    tensor whose elements are not in memory at its data pointer (torch.func's vmap, jvp and
    functionalize, FakeTensorMode, wrapper subclasses): the eager kernel takes those.

    Examples
    --------
    >>> import torch
    >>> t = torch.arange(4.0).reshape(2, 2)
    >>> host_view(t).tolist(), t.resize_(8).shape
    ([0.0, 1.0, 2.0, 3.0], torch.Size([8]))
    """
    if type(t) is not sys.modules["torch"].Tensor and hasattr(t, "fake_mode"):
        return None  # a FakeTensor: asking its data pointer warns (an error in later torch)
    try:
        key = (t.data_ptr(), t.numel(), t.dtype)
    except RuntimeError:  # torch.func's vmap / jvp: "... Tensor that doesn't have storage"
        return None
    view = _VIEWS.get(key)
    if view is None:
        # Functionalize and wrapper subclasses: a data pointer of 0, or a functional view's
        # offset from 0 (a few bytes up to its storage's size), no address: its storage says
        # so (asked on a miss only: such a key is never cached, so never found)
        if backends.tensor_address(t) is None:
            return None
        if not _TYPESTR:
            torch = sys.modules["torch"]
            _TYPESTR.update({torch.float32: "<f4", torch.float64: "<f8"})
        typestr = _TYPESTR.get(t.dtype)
        if typestr is None or sys.byteorder != "little" or t.is_neg() or not t.is_cpu:
            return t.numpy().ravel()
        view = np.asarray(_Memory(key[0], key[1], typestr))
        if len(_VIEWS) >= VIEWS:
            _VIEWS.clear()
        _VIEWS[key] = view
    return view


VIEWS = 64  # cached views (address, length, dtype): a few per loop, cleared when full
_VIEWS: dict[tuple[int, int, Any], Any] = {}


class OutputPool:
    """One thread's output buffers for one (shape, dtype, inference mode)."""

    def __init__(self, shape: Any, dtype: Any, inference: bool) -> None:
        self.shape, self.dtype, self.inference = shape, dtype, inference
        # (buffer, its storage object, its holders when free, its flat NumPy view): reused
        # while the holders are what they were when it was made (nothing else holds it, and
        # its storage has the memory it was made with: the view's)
        self.bufs: list[tuple[Any, Any, tuple[int, int, int, int, int, bool], Any]] = []

    def take(self, like: Any) -> tuple[Any, Any, Any, Any]:
        """Two free buffers shaped like `like` (new ones where fewer are free), as detached
        aliases (x_prev's, x0_pred's), and their views. The two go to the end, x_prev's last:
        a loop holds x_prev through the next step (its sample) and drops x0_pred, so the next
        step's first two buffers are free, and it checks two. (x_prev then alternates between
        two buffers, x0_pred between two.)"""
        bufs = self.bufs
        if len(bufs) >= 2:  # a loop's steady state, checked first
            x0, prev = bufs[0], bufs[1]
            if _holders(x0[1]) == x0[2] and _holders(prev[1]) == prev[2]:
                del bufs[:2]
                bufs += (x0, prev)
                return prev[0].detach(), x0[0].detach(), prev[3], x0[3]
        free = []
        for i, entry in enumerate(bufs):  # one scan finds both
            if _holders(entry[1]) == entry[2]:
                free.append(i)
                if len(free) == 2:
                    break
        found = [bufs.pop(i) for i in reversed(free)][::-1]
        while len(found) < 2:
            found.append(self._new(like))
        bufs += found
        del bufs[:-SIZE]  # buffers still held elsewhere are forgotten, not reused
        (x0_buf, _, _, x0_view), (prev_buf, _, _, prev_view) = found
        return prev_buf.detach(), x0_buf.detach(), prev_view, x0_view

    def _new(self, like: Any) -> tuple[Any, Any, tuple[int, int, int, int, int, bool], Any]:
        torch = sys.modules["torch"]
        buf = torch.empty(like.shape, dtype=like.dtype, device=like.device)
        made = (buf, buf.untyped_storage())  # held by one tuple, as in `bufs` when checked
        free = _holders(made[1])
        return (buf, made[1], free, host_view(buf))


def outputs(torch: Any, x: Any) -> tuple[Any, Any, Any, Any]:
    """Two output tensors like `x`, a plain contiguous CPU tensor without grad (the kernel has
    checked), and their flat NumPy views: from this thread's pool where `x` is large enough
    and torch counts storage users, else fresh."""
    pool: OutputPool | None = getattr(_local, "pool", None)
    inference = torch.is_inference_mode_enabled()
    if (
        pool is not None
        and pool.shape == x.shape
        and pool.dtype == x.dtype
        and pool.inference == inference
        and type(x) is torch.Tensor
    ):  # the pool's kind: large enough, torch counts (checked when it was made)
        return pool.take(x)
    if type(x) is not torch.Tensor or x.numel() * x.element_size() < MIN_BYTES or not _counts():
        prev, x0 = torch.empty_like(x), torch.empty_like(x)  # subclasses keep theirs
        return prev, x0, host_view(prev), host_view(x0)
    pool = _local.pool = OutputPool(x.shape, x.dtype, inference)
    return pool.take(x)


def _counts() -> bool:
    """Whether this torch counts a storage's users (no pool without it)."""
    return hasattr(sys.modules["torch"]._C, _COUNT)
