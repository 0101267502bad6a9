"""Fused torch steps write into reused CPU buffers, once nothing outside holds them.

A sampling loop drops each step's outputs a step or two later (`x = step(...).prev_sample`).
Fresh CPU tensors of a latent's size come from mmap or a trimmed heap, so the first write to
every page faults: at 8x4x128x128 float32 that nearly doubles the time of a step
(benchmarks/pipeline.py). So the numba kernel for torch tensors (`builtins`) writes into
buffers of its own and hands out a `detach()`ed alias of each. A buffer is reused only when
its storage is held by nothing but the pool: no tensor, view, NumPy array, DLPack capsule or
storage object anywhere (torch counts the tensors sharing a storage; Python counts the
storage object's holders), and only while its storage still has the memory it was made with:
`share_memory_()` moves it into shared memory that another process may map without any count
here (a `torch.multiprocessing` queue), and `resize_` gives it new memory (of a new size).
Its numbers never change while a user can see them.

The kernel reads and writes the tensors through NumPy arrays over their memory (`host_view`),
not `Tensor.numpy()`: that marks the storage as never resizable, so a caller's
`latents.resize_(...)` would raise after a step, where diffusers' tensors stay resizable.

The kernel asks only for plain, contiguous float32/float64 CPU tensors without grad
(accelerators have caching allocators already) of at least `MIN_BYTES`; each thread keeps
its own pool of at most `SIZE` buffers of one shape, dtype and inference mode (the last it
stepped), freed when the thread ends.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import numpy as np

SIZE = 4  # a loop's step needs two free buffers while the last step's outputs are held
MIN_BYTES = 1 << 17  # smaller blocks come from malloc's bins: no page faults to save
_COUNT = "_storage_Use_Count"  # torch's count of a storage's users (no pool without it)
_local = threading.local()
_use_count: Any = None  # torch._C._storage_Use_Count
_TYPESTR: dict[Any, str] = {}  # torch dtype -> NumPy's array interface typestr


def _holders(buf: Any) -> tuple[int, int, int, int]:
    """(tensors sharing buf's storage, Python references to its storage object, its memory:
    address and size)."""
    global _use_count
    if _use_count is None:  # bound on first use: torch is not imported here
        _use_count = getattr(sys.modules["torch"]._C, _COUNT)
    storage = buf.untyped_storage()
    refs = sys.getrefcount(storage)
    return _use_count(storage._cdata), refs, storage.data_ptr(), storage.nbytes()


class _Memory:
    """An array interface over a CPU tensor's memory (NumPy keeps it as the array's base)."""

    __slots__ = ("__array_interface__",)

    def __init__(self, t: Any, typestr: str) -> None:
        self.__array_interface__ = {
            "data": (t.data_ptr(), False),
            "shape": tuple(t.shape),
            "typestr": typestr,
            "version": 3,
        }


def host_view(t: Any) -> Any:
    """A NumPy array over the memory of `t`, a contiguous float32/float64 CPU tensor, for the
    kernel: what `t.numpy()` gives, except that the storage stays resizable (module
    docstring). The array does not keep `t` alive: it is valid while `t` has this memory (the
    call it is made for, or while the pool's check holds). Anything else (a tensor with the
    negative bit, another dtype) goes through `t.numpy()`, which checks it.

    Examples
    --------
    >>> import torch
    >>> t = torch.arange(4.0)
    >>> host_view(t).tolist(), t.resize_(8).shape
    ([0.0, 1.0, 2.0, 3.0], torch.Size([8]))
    """
    if not _TYPESTR:
        torch = sys.modules["torch"]
        _TYPESTR.update({torch.float32: "<f4", torch.float64: "<f8"})
    typestr = _TYPESTR.get(t.dtype)
    if typestr is None or sys.byteorder != "little" or t.is_neg() or not t.is_cpu:
        return t.numpy()
    return np.asarray(_Memory(t, typestr))


class OutputPool:
    """One thread's output buffers for one (shape, dtype, inference mode)."""

    def __init__(self, key: tuple[Any, ...]) -> None:
        self.key = key
        # (buffer, its holders when free, its NumPy view): the view holds nothing of the
        # buffer, and is valid while the storage keeps the memory it was made with (the
        # holders' last two numbers).
        self.bufs: list[tuple[Any, tuple[int, int, int, int], Any]] = []

    def take(self, like: Any) -> tuple[Any, Any, Any, Any]:
        """Two free buffers shaped like `like` (new ones where fewer are free), as detached
        aliases, and the NumPy views of the two buffers (for the kernel alone)."""
        free = []
        for i, entry in enumerate(self.bufs):  # one scan finds both
            if _holders(entry[0]) == entry[1]:
                free.append(i)
                if len(free) == 2:
                    break
        found = [self.bufs[i] for i in free]
        for i in reversed(free):  # to the end: the caller holds them through the next step
            del self.bufs[i]
        self.bufs += found
        while len(found) < 2:
            found.append(self._new(like))
        (a, _, a_view), (b, _, b_view) = found
        return a.detach(), b.detach(), a_view, b_view

    def view_of(self, x: Any) -> Any:
        """A NumPy array of x's elements: the view of the buffer x starts at (a step's sample
        is mostly the last step's output), else `host_view(x)`. x, contiguous, of the pool's
        shape and dtype and without the negative bit (the kernel resolves it), then has
        exactly the view's values, whatever became of the buffer."""
        ptr = x.data_ptr()
        for _, free, view in self.bufs:
            if free[2] == ptr:
                return view
        return host_view(x)

    def _new(self, like: Any) -> tuple[Any, tuple[int, int, int, int], Any]:
        torch = sys.modules["torch"]
        buf = torch.empty(like.shape, dtype=like.dtype, device=like.device)
        view = host_view(buf)
        _holders(buf)  # the storage object exists from here on: count it alike every time
        entry = (buf, _holders(buf), view)
        self.bufs.append(entry)
        del self.bufs[:-SIZE]  # buffers still held elsewhere are forgotten, not reused
        return entry


def outputs(torch: Any, x: Any) -> tuple[Any, Any, tuple[Any, Any, Any]]:
    """Two output tensors like `x`, a plain contiguous CPU tensor without grad (the kernel has
    checked), and the NumPy arrays of x and the two outputs: from this thread's pool where `x`
    is large enough and torch counts storage users, else fresh."""
    plain = type(x) is torch.Tensor and hasattr(torch._C, _COUNT)  # subclasses keep theirs
    if not plain or x.numel() * x.element_size() < MIN_BYTES:
        prev, x0 = torch.empty_like(x), torch.empty_like(x)
        return prev, x0, (host_view(x), host_view(prev), host_view(x0))
    key = (x.shape, x.dtype, torch.is_inference_mode_enabled())
    pool: OutputPool | None = getattr(_local, "pool", None)
    if pool is None or pool.key != key:
        pool = _local.pool = OutputPool(key)
    x_view = pool.view_of(x)  # before take, which may forget the buffer x starts at
    prev, x0, prev_view, x0_view = pool.take(x)
    return prev, x0, (x_view, prev_view, x0_view)
