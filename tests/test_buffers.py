"""Fused torch CPU steps write into reused buffers (ddim_core._buffers), through diffusers'
scheduler API and ddim_core's own: the pipeline call pattern reuses a few, every output equals a
fresh step's, and a buffer anything still holds (the output, a view, a NumPy array, a DLPack
capsule, its storage, a weak reference to it) is never written again."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any

import ddim_diffusers as dd
import numpy as np
import pytest

import ddim_core as dc
from ddim_core import _buffers

torch = pytest.importorskip("torch")

SHAPE = (8, 4, 32, 32)  # float32: exactly _buffers.MIN_BYTES


def _scheduler(cls: Any = dd.DDIMScheduler, steps: int = 10) -> Any:
    scheduler = cls()
    scheduler.set_timesteps(steps)
    return scheduler


def _pairs(seed: int = 0) -> tuple[Any, Any]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)


@pytest.fixture(autouse=True)
def _no_pool_yet() -> None:
    _buffers._local.pool = None


def _fresh(scheduler: Any, eps: Any, t: Any, x: Any, **kwargs: Any) -> Any:
    """The same step into fresh buffers (the same fused kernel, no pool)."""
    out = (torch.empty_like(x), torch.empty_like(x))
    return dc.step(scheduler._plan, eps, int(t), x, out=out, **kwargs)


def test_pipeline_pattern_reuses_a_few_buffers_and_equals_fresh_steps() -> None:
    scheduler = _scheduler(steps=20)
    x, eps = _pairs()
    seen = set()
    for t in scheduler.timesteps:
        ref = _fresh(scheduler, eps, t, x)
        out = scheduler.step(eps, t, x)
        assert torch.equal(out.prev_sample, ref.prev_sample)
        assert torch.equal(out.pred_original_sample, ref.pred_original_sample)
        seen |= {out.prev_sample.data_ptr(), out.pred_original_sample.data_ptr()}
        x = out.prev_sample
    assert len(seen) <= 4  # `out` holds both outputs of the last step while the next runs
    assert len(_buffers._local.pool.bufs) <= _buffers.SIZE


def test_pipeline_pattern_checks_two_buffers_a_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """Buffers a step takes go to the end of the pool: the next step (the caller still holds
    them) finds the two free ones first, checking two buffers, not four."""
    scheduler = _scheduler()
    x, eps = _pairs(16)
    checks = []
    holders = _buffers._holders
    monkeypatch.setattr(_buffers, "_holders", lambda buf: checks.append(1) or holders(buf))
    counts = []
    for t in scheduler.timesteps:
        checks.clear()
        out = scheduler.step(eps, t, x)
        counts.append(len(checks))
        x = out.prev_sample
    assert counts[2:] == [2] * (len(counts) - 2)  # the first two steps make the four buffers


def test_inverse_steps_take_the_pool_too() -> None:
    scheduler = _scheduler(dd.DDIMInverseScheduler)
    x, eps = _pairs(1)
    seen = set()
    for t in scheduler.timesteps:
        fresh = (torch.empty_like(x), torch.empty_like(x))
        ref = dc.inverse_step(scheduler._plan, eps, int(t), x, out=fresh)
        out = scheduler.step(eps, t, x)
        assert torch.equal(out.prev_sample, ref.prev_sample)
        seen.add(out.prev_sample.data_ptr())
        x = out.prev_sample
    assert len(seen) <= 3


def _keep(kind: str, x0: Any) -> Callable[[], Any]:
    """Hold `x0` (a step's pred_original_sample) the way `kind` says, and only that way; the
    closure reads the held values back as a tensor."""
    if kind == "view":
        view = x0[1:]
        return lambda: view
    if kind == "numpy":
        array = x0.numpy()
        return lambda: torch.from_numpy(array)
    if kind == "dlpack":
        capsule = torch.utils.dlpack.to_dlpack(x0)
        return lambda: torch.utils.dlpack.from_dlpack(capsule)
    if kind == "storage":
        storage = x0.untyped_storage()
        return lambda: torch.empty(0).set_(storage, 0, SHAPE)
    if kind == "memoryview":  # of a NumPy view
        buffer = memoryview(x0.numpy()[1:])
        return lambda: torch.from_numpy(np.asarray(buffer))
    if kind == "from_dlpack":
        tensor = torch.from_dlpack(x0)
        return lambda: tensor
    if kind == "as_strided":
        strided = x0.as_strided((100,), (7,), 3)
        return lambda: strided
    if kind == "autograd":  # saved for backward of w * x0
        w = torch.ones(SHAPE, requires_grad=True)
        with torch.enable_grad():
            loss = (w * x0).sum()
        return lambda: torch.autograd.grad(loss, w, retain_graph=True)[0]
    if kind == "swapped":
        other = torch.zeros(SHAPE)
        torch.utils.swap_tensors(other, x0)
        return lambda: other
    return lambda: x0


@pytest.mark.parametrize(
    "kind",
    [
        "tensor",
        "view",
        "numpy",
        "dlpack",
        "storage",
        "memoryview",
        "from_dlpack",
        "as_strided",
        "autograd",
        "swapped",
    ],
)
def test_a_held_output_is_never_written_again(kind: str) -> None:
    """Whatever still refers to a step's x0 buffer keeps its numbers through later steps."""
    scheduler = _scheduler()
    x, eps = _pairs(2)
    held = []
    for t in scheduler.timesteps:
        out = scheduler.step(eps, t, x)
        x0 = out.pred_original_sample
        expected = _keep(kind, x0.clone())()  # read once: a DLPack capsule is consumed
        held.append((_keep(kind, x0), expected))
        x = out.prev_sample
        del out, x0
    for read, expected in held:
        assert torch.equal(read(), expected)


def test_a_weak_reference_to_an_output_never_reads_a_later_steps_numbers() -> None:
    """A weak reference to an output's storage (a WeakKeyDictionary of storages, a
    weakref.finalize) dies with the output once a caller drops it, as with fresh outputs, or
    reads the numbers it had: the pool keeps the storage object alive, and reused its buffer
    while such a reference read a later step's numbers."""
    scheduler = _scheduler()
    x, eps = _pairs(18)
    held = []
    for t in scheduler.timesteps:
        out = scheduler.step(eps, t, x)
        x0 = out.pred_original_sample
        held.append((weakref.ref(x0.untyped_storage()), x0.clone()))
        x = out.prev_sample
        del out, x0
    for ref, expected in held:
        storage = ref()
        assert storage is None or torch.equal(torch.empty(0).set_(storage, 0, SHAPE), expected)
    assert len(_buffers._local.pool.bufs) <= _buffers.SIZE


@pytest.mark.parametrize("strategy", ["fd", "filename"])
def test_an_output_shared_with_another_process_is_never_written_again(strategy: str) -> None:
    """A torch.multiprocessing queue moves a tensor's storage into shared memory
    (`share_memory_()`) and the receiver maps it by handle, holding nothing here: once the
    sender drops the output, its buffer was reused and the receiver's numbers changed."""
    scheduler = _scheduler()
    x, eps = _pairs(11)
    received = []
    for t in scheduler.timesteps:
        out = scheduler.step(eps, t, x)
        storage = out.pred_original_sample.share_memory_().untyped_storage()
        if strategy == "fd":  # what the receiving process rebuilds from the handle
            mapped = torch.UntypedStorage._new_shared_fd_cpu(*storage._share_fd_cpu_())
        else:
            mapped = torch.UntypedStorage._new_shared_filename_cpu(*storage._share_filename_cpu_())
        view = torch.empty(0).set_(mapped, 0, SHAPE)
        received.append((view, out.pred_original_sample.clone()))
        x = out.prev_sample
        del out, storage
    for view, expected in received:
        assert torch.equal(view, expected)


def test_a_sample_moved_to_shared_memory_is_read_where_it_is_now() -> None:
    """The kernel reads a step's sample through the NumPy view of the pool buffer it starts
    at; a last output moved into shared memory (its buffer's old memory freed) is read from
    its new memory, with a fresh step's numbers."""
    scheduler = _scheduler()
    x, eps = _pairs(17)
    for t in scheduler.timesteps:
        x.share_memory_()
        ref = _fresh(scheduler, eps, t, x)
        junk = [torch.full(SHAPE, 7.0) for _ in range(4)]  # may take the freed memory
        out = scheduler.step(eps, t, x)
        assert torch.equal(out.prev_sample, ref.prev_sample)
        x = out.prev_sample
        del junk


def test_return_dict_false_tuples_are_held_too() -> None:
    scheduler = _scheduler()
    x, eps = _pairs(8)
    held = []
    for t in scheduler.timesteps:
        pair = scheduler.step(eps, t, x, return_dict=False)
        held.append((pair, pair[1].clone()))
        x = pair[0]
    assert all(torch.equal(pair[1], value) for pair, value in held)


def test_outputs_held_by_the_caller_keep_the_pool_bounded() -> None:
    """A caller keeping every output (a callback storing x0 predictions) makes the pool
    allocate afresh; it never keeps more than SIZE buffers of its own."""
    scheduler = _scheduler(steps=30)
    x, eps = _pairs(3)
    kept = []
    for t in scheduler.timesteps:
        out = scheduler.step(eps, t, x)
        kept.append(out)
        x = out.prev_sample
    ptrs = {o.pred_original_sample.data_ptr() for o in kept}
    assert len(ptrs) == len(kept)
    assert len(_buffers._local.pool.bufs) == _buffers.SIZE


def test_threads_have_their_own_pools() -> None:
    scheduler = _scheduler(steps=20)
    results: dict[int, Any] = {}

    def run(seed: int) -> None:
        x, eps = _pairs(seed)
        for t in scheduler.timesteps:
            x = scheduler.step(eps, t, x).prev_sample
        results[seed] = x

    threads = [threading.Thread(target=run, args=(s,)) for s in (4, 5)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for seed in (4, 5):
        x, eps = _pairs(seed)
        for t in scheduler.timesteps:
            x = _fresh(scheduler, eps, t, x).prev_sample
        assert torch.equal(results[seed], x)


def test_inference_mode_and_plain_buffers_are_kept_apart() -> None:
    """A buffer made under torch.inference_mode cannot be written outside it: the pool is
    keyed by the mode."""
    scheduler = _scheduler()
    x, eps = _pairs(6)
    t = scheduler.timesteps[0]
    with torch.inference_mode():
        a = scheduler.step(eps, t, x).prev_sample
    b = scheduler.step(eps, t, x).prev_sample
    assert a.is_inference() and not b.is_inference()
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "case",
    ["small", "grad", "mixed", "strided", "thresholding"],
)
def test_steps_outside_the_plain_case_allocate_as_before(case: str) -> None:
    scheduler = dd.DDIMScheduler(thresholding=case == "thresholding")
    scheduler.set_timesteps(10)
    x, eps = _pairs(7)
    if case == "small":
        x, eps = x[:1, :1], eps[:1, :1]
    elif case == "grad":
        eps.requires_grad_(True)
    elif case == "mixed":
        eps = eps.double()
    elif case == "strided":
        x = x.transpose(2, 3)
    out = scheduler.step(eps, scheduler.timesteps[0], x)
    assert _buffers._local.pool is None
    assert out.prev_sample.shape == x.shape


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_steps_pool_their_float32_work_and_return_their_own_outputs(
    dtype: torch.dtype,
) -> None:
    """A half-precision step runs the float32 kernel on float32 copies: its float32 outputs
    come from the pool (dropped once rounded), and the half outputs it returns are its own,
    never a pool buffer, so a loop may hold them as long as it likes."""
    scheduler = _scheduler()
    x, eps = (a.to(dtype) for a in _pairs(7))
    held, copies = [], []
    for t in scheduler.timesteps[:4]:
        out = scheduler.step(eps, t, x)
        held += [out.prev_sample, out.pred_original_sample]
        copies += [a.clone() for a in held[-2:]]
    pool = _buffers._local.pool
    assert pool is not None and pool.dtype == torch.float32
    pooled = {entry[0].data_ptr() for entry in pool.bufs}
    assert all(a.dtype == dtype for a in held)
    assert len({a.data_ptr() for a in held} | pooled) == len(held) + len(pooled)
    assert all(torch.equal(a, b) for a, b in zip(held, copies, strict=True))


@pytest.mark.parametrize("sparse", ["model_output", "variance_noise"])
def test_sparse_inputs_allocate_as_before(sparse: str) -> None:
    """A sparse model_output or variance_noise has no data pointer: out='s overlap check
    raised 'Cannot access data pointer of Tensor that doesn't have storage' from inside torch
    (pooled steps passed out= then), where fresh outputs worked."""
    scheduler = _scheduler()
    x, eps = _pairs(13)
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(14))
    if sparse == "model_output":
        eps = eps.to_sparse()
    else:
        noise = noise.to_sparse()
    t = scheduler.timesteps[0]
    out = scheduler.step(eps, t, x, eta=0.5, variance_noise=noise)
    assert _buffers._local.pool is None
    ref = _fresh(scheduler, eps, t, x, eta=0.5, noise=noise)  # out= checks take sparse too
    assert torch.equal(out.prev_sample, ref.prev_sample)


@pytest.mark.parametrize("shape", [(1,), (17,), (1, 4, 64, 64), (2, 3, 5, 7)])
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize("seeded", ["generator", "global"])
def test_noise_drawn_into_a_buffer_has_randns_numbers(
    shape: tuple[int, ...], dtype: str, seeded: str
) -> None:
    """The torch plugin draws into a buffer with `normal_`: torch.randn's numbers exactly."""
    from ddim_core.plugins import standard_normal

    dt = getattr(torch, dtype)
    like, buf = torch.zeros(shape, dtype=dt), torch.empty(shape, dtype=dt)
    if seeded == "generator":
        z = standard_normal(torch.Generator().manual_seed(5), shape, like=like, out=buf)
        ref = torch.randn(shape, generator=torch.Generator().manual_seed(5), dtype=dt)
    else:
        torch.manual_seed(5)
        z = standard_normal(None, shape, like=like, out=buf)
        torch.manual_seed(5)
        ref = torch.randn(shape, dtype=dt)
    assert z.data_ptr() == buf.data_ptr()
    assert torch.equal(z, ref)


def test_noise_for_an_inference_buffer_outside_inference_mode_is_drawn_fresh() -> None:
    """An inference tensor (made under torch.inference_mode) is not written outside the mode:
    the torch plugin's `normal_` into it raised, so no plugin drew (TypeError). It draws
    torch.randn's numbers into a new tensor instead."""
    from ddim_core.plugins import standard_normal

    with torch.inference_mode():
        buf = torch.empty(SHAPE)
    z = standard_normal(torch.Generator().manual_seed(5), SHAPE, like=torch.zeros(SHAPE), out=buf)
    assert torch.equal(z, torch.randn(SHAPE, generator=torch.Generator().manual_seed(5)))
    assert not z.is_inference()
    with torch.inference_mode():  # inside the mode it is written as any buffer
        z = standard_normal(torch.Generator().manual_seed(5), SHAPE, like=buf, out=buf)
    assert z.data_ptr() == buf.data_ptr()


def test_no_pool_where_the_fused_kernels_are_blocked(monkeypatch: pytest.MonkeyPatch) -> None:
    """DDIM_CORE_BLOCK_PLUGINS=torch-fused leaves no kernel to write into buffers: steps
    allocate (was TypeError: out= needs a fused kernel)."""
    from ddim_core import plugins

    monkeypatch.setenv("DDIM_CORE_BLOCK_PLUGINS", "torch-fused")
    plugins.manager.cache_clear()
    try:
        scheduler = _scheduler()
        x, eps = _pairs(9)
        out = scheduler.step(eps, scheduler.timesteps[0], x)
        ref = dc.step(scheduler._plan, eps, int(scheduler.timesteps[0]), x)  # no kernel: no out=
        assert torch.allclose(out.prev_sample, ref.prev_sample, rtol=0, atol=1e-6)
        assert _buffers._local.pool is None
    finally:
        monkeypatch.delenv("DDIM_CORE_BLOCK_PLUGINS")
        plugins.manager.cache_clear()


def test_no_pool_where_torch_cannot_count_storage_users(monkeypatch: pytest.MonkeyPatch) -> None:
    """A torch without torch._C._storage_Use_Count cannot tell a free buffer from a held one:
    steps allocate their outputs as before."""
    monkeypatch.delattr(torch._C, "_storage_Use_Count")
    scheduler = _scheduler()
    x, eps = _pairs(12)
    t = scheduler.timesteps[0]
    out = scheduler.step(eps, t, x)
    assert _buffers._local.pool is None
    assert torch.equal(out.prev_sample, _fresh(scheduler, eps, t, x).prev_sample)


def test_buffers_are_made_on_the_samples_device_whatever_the_default() -> None:
    scheduler = _scheduler()
    x, eps = _pairs(10)
    torch.set_default_device("meta")
    try:
        out = scheduler.step(eps, scheduler.timesteps[0], x)
    finally:
        torch.set_default_device(None)
    assert out.prev_sample.device.type == "cpu"
    assert torch.equal(out.prev_sample, _fresh(scheduler, eps, scheduler.timesteps[0], x)[0])


def test_core_loops_take_the_pool_too() -> None:
    """ddim_core.sample (ComfyUI's and k-diffusion's loops step through it) reuses buffers
    as the diffusers API does, with the numbers of steps into fresh buffers."""
    plan = dc.make_plan(dc.DDIMConfig(clip_sample=True), 20)
    x_t, eps = _pairs(15)
    seen: set[int] = set()

    def model(x: Any, t: int) -> Any:
        seen.add(x.data_ptr())
        return eps

    x0 = dc.sample(model, x_t, plan.config, timesteps=plan.timesteps)
    x = x_t
    for t in plan.timesteps:
        x = dc.step(plan, eps, t, x, out=(torch.empty_like(x), torch.empty_like(x)))[0]
    assert torch.equal(x0, x)
    assert len(seen) <= 4  # x_T and the few buffers the loop's samples cycle through
    assert _buffers._local.pool is not None and len(_buffers._local.pool.bufs) <= _buffers.SIZE


def _resizable(t: Any) -> bool:
    """Whether t's storage can still be resized (resized and put back, as a caller might)."""
    shape = tuple(t.shape)
    try:
        t.resize_(2 * t.numel())
    except RuntimeError:
        return False
    t.resize_(shape)
    return True


@pytest.mark.parametrize("shape", [SHAPE, (1, 4, 8, 8)])  # pooled, and fresh outputs
def test_a_step_leaves_every_tensor_resizable_as_diffusers_does(shape: tuple[int, ...]) -> None:
    """`Tensor.numpy()` marks a storage as never resizable: the kernel's views of the sample,
    the model output, the noise and both outputs (pool buffers and out=) made a caller's
    `latents.resize_(...)` raise 'Trying to resize storage that is not resizable' after a
    fused step, where diffusers' tensors stay resizable."""
    import diffusers

    g = torch.Generator().manual_seed(18)
    x, eps, noise = (torch.randn(shape, generator=g) for _ in range(3))
    ours, theirs = _scheduler(), _scheduler(diffusers.DDIMScheduler)
    t = ours.timesteps[1]
    out = ours.step(eps, t, x, eta=1.0, variance_noise=noise)
    ref = theirs.step(eps.clone(), t, x.clone(), eta=1.0, variance_noise=noise.clone())
    assert torch.allclose(out.prev_sample, ref.prev_sample, rtol=0, atol=1e-6)
    given = (torch.empty(shape), torch.empty(shape))
    dc.step(ours._plan, eps, int(t), x, out=given)
    tensors = [x, eps, noise, out.prev_sample, out.pred_original_sample, *given]
    assert all(_resizable(a) for a in [*ref.values(), x, eps, noise])  # diffusers'
    assert all(_resizable(a) for a in tensors)


def test_an_output_a_caller_read_as_numpy_leaves_later_outputs_resizable() -> None:
    """A caller's `Tensor.numpy()` (or np.asarray) marks that output's storage as never
    resizable, for good: once the output was dropped its buffer was reused, so outputs of
    later steps, which the caller never read as NumPy, refused `resize_` where fresh ones (and
    diffusers') resize. Such a buffer is not handed out again."""
    scheduler = _scheduler()
    x, eps = _pairs(20)
    for i, t in enumerate(scheduler.timesteps):
        out = scheduler.step(eps, t, x)
        if i == 1:
            out.prev_sample.numpy(), np.asarray(out.pred_original_sample)
        else:
            assert _resizable(out.prev_sample) and _resizable(out.pred_original_sample), i
        x = out.prev_sample
        del out
    assert len(_buffers._local.pool.bufs) <= _buffers.SIZE


def test_outputs_resized_by_the_caller_are_never_written_again() -> None:
    """A caller may now resize an output: its storage gets new memory, so its buffer (which
    shares that storage) no longer has the memory its view was made with. Grown, shrunk back
    (possibly at the old address) or shrunk below its size and dropped, such a buffer is
    never reused, later steps have a fresh step's numbers, and what the caller kept stays."""
    scheduler = _scheduler(steps=20)
    x, eps = _pairs(19)
    kept = []
    for i, t in enumerate(scheduler.timesteps):
        ref = _fresh(scheduler, eps, t, x)
        out = scheduler.step(eps, t, x)
        assert torch.equal(out.prev_sample, ref.prev_sample)
        assert torch.equal(out.pred_original_sample, ref.pred_original_sample)
        for a in out.values():  # a reused buffer has its whole memory
            assert a.untyped_storage().nbytes() == a.numel() * a.element_size()
        x0 = out.pred_original_sample
        x0.resize_(2 * x0.numel())  # new, larger memory for the buffer's storage too
        if i % 3 == 0:
            x0.resize_(SHAPE)  # back to its size, in memory it reuses or not
            kept.append((x0, ref.pred_original_sample))
        elif i % 3 == 1:
            x0.untyped_storage().resize_(x0.element_size())  # smaller than the buffer: dropped
        x = out.prev_sample
        del out, x0
    assert all(torch.equal(a, b) for a, b in kept)


def test_tensors_with_the_negative_bit_are_read_and_written_as_their_values() -> None:
    """A tensor with the negative bit (`torch._neg_view`) holds -values in its memory. A
    sample that was such a view of the last step's output was read through the pool's view of
    that buffer as it is (the other sign), and such a model output, noise or out= made the
    step raise (`Tensor.numpy()` refuses them); now inputs are resolved, outputs eager."""
    scheduler = _scheduler()
    x, eps = _pairs(20)
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(21))
    t0, t = scheduler.timesteps[:2]
    held = scheduler.step(eps, t0, x).prev_sample
    ref = _fresh(scheduler, eps, t, -held)
    out = scheduler.step(eps, t, torch._neg_view(held))
    assert torch.equal(out.prev_sample, ref.prev_sample)
    ref = _fresh(scheduler, eps, t, x, eta=1.0, noise=noise)
    for i in range(3):  # the sample, the model output, the noise as negative views
        args = [x, eps, noise]
        args[i] = torch._neg_view(-args[i])
        out = scheduler.step(args[1], t, args[0], eta=1.0, variance_noise=args[2])
        assert torch.equal(out.prev_sample, ref.prev_sample)
        assert torch.equal(out.pred_original_sample, ref.pred_original_sample)
    given = (torch._neg_view(torch.empty(SHAPE)), torch.empty(SHAPE))
    out = dc.step(scheduler._plan, eps, int(t), x, eta=1.0, noise=noise, out=given)
    assert out.prev_sample is given[0]  # the eager kernel's: equal within rounding
    assert all(torch.allclose(a, b, rtol=0, atol=1e-5) for a, b in zip(out, ref, strict=True))
