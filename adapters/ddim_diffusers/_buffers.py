"""Step outputs written into reused CPU buffers, once nothing outside holds them.

A pipeline drops each step's outputs a step or two later (`latents = step(...).prev_sample`).
Fresh CPU tensors of a latent's size come from mmap or a trimmed heap, so the first write to
every page faults: at 8x4x128x128 float32 that doubles the time of a step, whose pass is
otherwise at the memory floor (benchmarks/pipeline.py). So `ddim_diffusers` steps write into
buffers of their own and hand out a `detach()`ed alias of each. A buffer is reused only when
its storage is held by nothing but the pool: no tensor, view, NumPy array, DLPack capsule or
storage object anywhere (torch counts the tensors sharing a storage; Python counts the
storage object's holders), and only while its storage still has the memory it was made with:
`share_memory_()` moves it into shared memory that another process may map without any count
here (a `torch.multiprocessing` queue). Its numbers never change while a user can see them.

Only plain, contiguous float32/float64 CPU tensors without grad (and inputs that are not
sparse), outside torch.compile, take this path (accelerators have caching allocators
already); each thread keeps its own pool of at most `SIZE` buffers of one shape, dtype and
inference mode.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

SIZE = 4  # a pipeline step needs two free buffers while the last step's sample is held
MIN_BYTES = 1 << 17  # smaller blocks come from malloc's bins: no page faults to save
_COUNT = "_storage_Use_Count"  # torch's count of a storage's users (no pool without it)


def _holders(buf: Any) -> tuple[int, int, int]:
    """(tensors sharing buf's storage, Python references to its storage object, its memory)."""
    storage = buf.untyped_storage()
    return _use_count(storage._cdata), sys.getrefcount(storage), storage.data_ptr()


def _use_count(cdata: int) -> int:
    return int(getattr(sys.modules["torch"]._C, _COUNT)(cdata))


class OutputPool:
    """One thread's output buffers for one (shape, dtype, inference mode)."""

    def __init__(self, key: tuple[Any, ...]) -> None:
        self.key = key
        self.bufs: list[tuple[Any, tuple[int, int, int]]] = []  # (buffer, its holders when free)

    def take(self, like: Any) -> Any:
        """A free buffer shaped like `like` (a new one if none is free), as a detached alias."""
        for buf, free in self.bufs:
            if _holders(buf) == free:
                return buf.detach()
        torch = sys.modules["torch"]
        buf = torch.empty(like.shape, dtype=like.dtype, device=like.device)
        _holders(buf)  # the storage object exists from here on: count it alike every time
        self.bufs.append((buf, _holders(buf)))
        del self.bufs[:-SIZE]  # buffers still held elsewhere are forgotten, not reused
        return buf.detach()


def outputs(local: threading.local, model_output: Any, sample: Any, noise: Any) -> Any:
    """Two pooled output buffers for a fused step of these tensors, or None (then the step
    allocates its outputs as usual)."""
    torch = sys.modules.get("torch")
    if torch is None or type(sample) is not torch.Tensor or type(model_output) is not torch.Tensor:
        return None
    if not sample.is_cpu or sample.dtype not in (torch.float32, torch.float64):
        return None
    if model_output.dtype != sample.dtype or model_output.shape != sample.shape:
        return None
    if noise is not None and (type(noise) is not torch.Tensor or noise.dtype != sample.dtype):
        return None
    dense = torch.strided  # sparse tensors have no data pointer for out='s overlap check
    if sample.layout != dense or model_output.layout != dense:
        return None
    if noise is not None and noise.layout != dense:
        return None
    if sample.numel() * sample.element_size() < MIN_BYTES or not sample.is_contiguous():
        return None
    if sample.requires_grad or model_output.requires_grad or not hasattr(torch._C, _COUNT):
        return None
    key = (sample.shape, sample.dtype, torch.is_inference_mode_enabled())
    pool: OutputPool | None = getattr(local, "pool", None)
    if pool is None or pool.key != key:
        pool = local.pool = OutputPool(key)
    return pool.take(sample), pool.take(sample)
