"""Shared use from many threads: the plugin manager is built once, and a shared
ddim_diffusers scheduler gives every thread the plan it set (diffusers' own does not)."""

from __future__ import annotations

import copy
import pickle
import threading

import numpy as np
import pytest

import ddim_core as dc
from ddim_core import plugins

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
import ddim_diffusers as dd  # noqa: E402

THREADS = 16


def _run_in_threads(fn, n: int = THREADS) -> list:  # type: ignore[no-untyped-def, type-arg]
    barrier = threading.Barrier(n)
    results: list = [None] * n  # type: ignore[type-arg]
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            barrier.wait()
            results[i] = fn(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    return results


def _loop(scheduler, x: torch.Tensor, n: int) -> torch.Tensor:  # type: ignore[no-untyped-def]
    scheduler.set_timesteps(n)
    for t in scheduler.timesteps:
        x = scheduler.step(0.1 * x + 0.01 * t, t, x).prev_sample
    return x


@pytest.mark.parametrize("cls", [dd.DDIMScheduler, dd.DDIMInverseScheduler])
def test_a_shared_scheduler_gives_each_thread_its_plan(cls) -> None:
    shared = cls()
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    steps = [5 + 3 * i for i in range(THREADS)]
    serial = [_loop(cls(), x, n) for n in steps]
    for _ in range(2):  # 32 loops in all
        got = _run_in_threads(lambda i: _loop(shared, x, steps[i]))
        assert all(torch.equal(a, b) for a, b in zip(got, serial, strict=True))


def test_single_thread_behaviour_and_copies_are_unchanged() -> None:
    s = dd.DDIMScheduler()
    s.set_timesteps(10)
    assert s.num_inference_steps == 10 and len(s.timesteps) == 10
    seen = _run_in_threads(lambda i: (s.num_inference_steps, s.timesteps.tolist()), 2)
    assert seen[0] == (10, s.timesteps.tolist())  # a thread that set none sees the last plan
    clone = copy.deepcopy(s)
    again = pickle.loads(pickle.dumps(s))
    assert clone.timesteps.tolist() == again.timesteps.tolist() == s.timesteps.tolist()
    clone.set_timesteps(3)
    assert s.num_inference_steps == 10 and clone.num_inference_steps == 3
    s.timesteps = s.timesteps[2:]  # pipelines may assign (img2img strength)
    assert len(s.timesteps) == 8


@pytest.mark.parametrize("cls", [dd.DDIMScheduler, dd.DDIMInverseScheduler])
def test_a_deepcopy_of_the_attributes_keeps_this_threads_plan(cls) -> None:
    """StableDiffusionPanoramaPipeline saves a scheduler's state as
    `copy.deepcopy(scheduler.__dict__)` and restores it with `__dict__.update`: the copy holds
    the plan of the thread that took it, even where another thread set a plan since."""
    s = cls()
    s.set_timesteps(20)
    ready, other_set = threading.Event(), threading.Event()

    def other() -> None:
        ready.wait(timeout=60)
        s.set_timesteps(4)
        other_set.set()

    thread = threading.Thread(target=other)
    thread.start()
    ready.set()
    other_set.wait(timeout=60)
    thread.join(timeout=60)
    saved = copy.deepcopy(s.__dict__)
    s.__dict__.update(saved)
    assert s.num_inference_steps == 20 and len(s.timesteps) == 20
    x = torch.ones(1, 4)
    fresh = cls()
    fresh.set_timesteps(20)
    t = s.timesteps[1]
    assert torch.equal(s.step(0.1 * x, t, x).prev_sample, fresh.step(0.1 * x, t, x).prev_sample)


def test_plugin_manager_is_built_once_under_concurrent_first_use() -> None:
    x = np.ones((4, 2))
    plan = dc.make_plan(dc.DDIMConfig(), 10)
    for _ in range(3):
        plugins.manager.cache_clear()
        before = plugins.manager.builds
        got = _run_in_threads(lambda i: dc.step(plan, x, 900, x).prev_sample)
        assert all(np.array_equal(g, got[0]) for g in got)
        assert plugins.manager.builds == before + 1
        assert len(set(_run_in_threads(lambda i: id(plugins.manager())))) == 1


@pytest.mark.parametrize("write", ["in_place", "assigned"])
def test_a_table_written_in_one_thread_applies_in_every_thread(write: str) -> None:
    """Each thread steps on its own plan, but on the scheduler's one table, as diffusers'
    threads do: a table written in place or assigned by one thread applies to the next steps
    of a thread that set its plan before. That thread kept stepping on the table its plan was
    made with."""
    shared = dd.DDIMScheduler(clip_sample=False)
    expected = dd.DDIMScheduler(clip_sample=False)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    planned, written, got = threading.Event(), threading.Event(), []

    def other() -> None:
        shared.set_timesteps(10)
        planned.set()
        written.wait(60)
        got.append(shared.step(0.1 * x, 901, x).prev_sample)

    thread = threading.Thread(target=other)
    thread.start()
    planned.wait(60)
    shared.set_timesteps(10)
    if write == "in_place":
        shared.alphas_cumprod.mul_(0.9)
    else:
        shared.alphas_cumprod = shared.alphas_cumprod * 0.9
    mine = shared.step(0.1 * x, 901, x).prev_sample  # (this thread reads the table first)
    written.set()
    thread.join(60)
    expected.alphas_cumprod = expected.alphas_cumprod * 0.9
    expected.set_timesteps(10)
    assert torch.equal(mine, expected.step(0.1 * x, 901, x).prev_sample)
    assert torch.equal(got[0], mine)
