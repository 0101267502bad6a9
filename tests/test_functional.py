"""Functional Scheduler/init/step: eta and use_clipped_model_output as the imperative step;
nothing can be mismatched, also while tracing; torch.compile(fullgraph=True) equals eager.

Elsewhere: the functional loop equals the imperative loops bit for bit, and jax.jit + lax.scan
equals eager, over random problems and backends (tests/test_loop_properties.py); the loop on
torch's meta device and its float16 twin on CPU (tests/test_no_sync.py)."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
from helpers import reference_path

import ddim_core as dc
from ddim_core import functional as F
from ddim_core.analytic import GaussianMixture

CONFIG = dc.DDIMConfig(clip_sample=False, timestep_spacing="trailing")
MODEL = GaussianMixture.create([[-2.0, 0.0], [2.0, 0.0]], [0.3, 0.3], CONFIG)
X_T = np.random.default_rng(0).standard_normal((8, 2))


def _loop(scheduler, state, x, model, noise=None):
    for i in range(scheduler.num_inference_steps):
        z = None if noise is None else noise[i]
        state, x = F.step(scheduler, state, model(x, F.timestep(state)), x, noise=z)
    return x


def test_eta_and_use_clipped_model_output_equal_imperative() -> None:
    config = CONFIG.replace(clip_sample=True, clip_sample_range=1.5)
    scheduler = F.Scheduler(config, 10, eta=0.7, use_clipped_model_output=True)
    noise = np.random.default_rng(1).standard_normal((10, *X_T.shape))
    got = _loop(scheduler, F.init(scheduler, like=X_T), X_T, MODEL, noise)
    with reference_path():
        expected = dc.sample(lambda x, t: MODEL(x, t), X_T, config, 10, eta=0.7, noise=list(noise))
        plan = dc.make_plan(config, 10)
        x = X_T
        for i, t in enumerate(plan.timesteps):
            x = dc.step(
                plan, MODEL(x, t), t, x, eta=0.7, noise=noise[i], use_clipped_model_output=True
            ).prev_sample
    assert np.array_equal(got, x)
    assert not np.array_equal(got, expected)  # use_clipped_model_output matters here


def test_scheduler_is_hashable_and_reads_back_its_timesteps() -> None:
    a, b = F.Scheduler(CONFIG, 5), F.Scheduler(CONFIG, 5)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a.timesteps == dc.make_plan(CONFIG, 5).timesteps
    inv = F.Scheduler(CONFIG, 5, inverse=True)
    assert inv.timesteps == a.timesteps[::-1]
    custom = F.Scheduler(CONFIG, timesteps=(900, 500, 100))
    assert custom.num_inference_steps == 3 and custom.timesteps == (900, 500, 100)
    assert F.Scheduler(CONFIG, timesteps=(100, 500, 900), inverse=True).timesteps == (100, 500, 900)
    with pytest.raises(ValueError, match="num_inference_steps=4 but 3 timesteps"):
        F.Scheduler(CONFIG, 4, timesteps=(900, 500, 100))


def test_nothing_can_be_mismatched() -> None:
    a, b = F.Scheduler(CONFIG, 5), F.Scheduler(CONFIG.replace(prediction_type="v_prediction"), 5)
    state = F.init(a, like=X_T)
    with pytest.raises(TypeError, match="state was not made by init"):
        F.step(b, state, X_T, X_T)
    same = F.Scheduler(CONFIG, 5)  # an equal scheduler shares the state type
    F.step(same, state, X_T, X_T)
    noisy = F.Scheduler(CONFIG, 5, eta=1.0)
    with pytest.raises(ValueError, match="needs `noise`"):
        F.step(noisy, F.init(noisy, like=X_T), X_T, X_T)
    with pytest.raises(ValueError, match="inversion is deterministic"):
        F.Scheduler(CONFIG, 5, inverse=True, eta=0.5)
    with pytest.raises(TypeError, match="inverse must be True or False"):
        F.Scheduler(CONFIG, 5, inverse=1)
    with pytest.raises(TypeError, match="scheduler must be a functional\\.Scheduler"):
        F.init(CONFIG, like=X_T)  # type: ignore[arg-type]


@pytest.mark.slow
def test_eta_without_noise_is_refused_while_tracing() -> None:
    jax = pytest.importorskip("jax")

    @jax.jit
    def noisy(x):  # type: ignore[no-untyped-def]
        s = F.Scheduler(CONFIG, 10, eta=1.0)
        return F.step(s, F.init(s, like=x), x, x)

    with pytest.raises(ValueError, match="needs `noise`"):
        noisy(jax.numpy.asarray(X_T))


def test_thresholding_max_value_that_is_zero_in_float32_is_refused_while_tracing() -> None:
    """sample_max_value=1e-40 (subnormal in float32, flushed to 0 by XLA) gave NaN from the
    jitted step, silently; the eager and compiled steps (torch.compile, aot_eager) raise the
    same ValueError as `ddim_core.step` (checked on the config float and the dtype: nothing
    is read from the traced arrays)."""
    jax = pytest.importorskip("jax")
    torch = pytest.importorskip("torch")
    scheduler = F.Scheduler(CONFIG.replace(thresholding=True, sample_max_value=1e-40), 10)
    match = r"sample_max_value=1e-40 is below 1.17549435\d*e-38, .* of float32"
    x = jax.numpy.asarray(X_T, dtype=jax.numpy.float32)
    with pytest.raises(ValueError, match=match):
        jax.jit(lambda state, x: F.step(scheduler, state, x, x))(F.init(scheduler, like=x), x)
    x_t = torch.from_numpy(X_T).float()
    state = F.init(scheduler, like=x_t)
    for run in (F.step, torch.compile(F.step, backend="aot_eager")):
        with pytest.raises(ValueError, match=match):
            run(scheduler, state, x_t, x_t)


def test_jitted_step_compiles_once_from_an_uncommitted_sample() -> None:
    """init(like=x) with x uncommitted (jax.random.normal's, jnp.ones') committed the state to
    x's device: the first step's arguments (committed state, uncommitted sample) were another
    signature than the committed arrays it returns, so the jitted step, model and all, was
    compiled twice. The state is now committed where `like` is."""
    jax = pytest.importorskip("jax")
    scheduler = F.Scheduler(CONFIG, 4)
    step = jax.jit(lambda state, x: F.step(scheduler, state, 0.1 * x, x))
    x = jax.random.normal(jax.random.key(0), (2, 3))
    state = F.init(scheduler, like=x)
    assert not x.committed and not any(a.committed for a in state)
    for _ in range(4):
        state, x = step(state, x)
    assert step._cache_size() == 1  # one compile
    x = jax.device_put(x, jax.devices()[0])
    assert all(a.committed for a in F.init(scheduler, like=x))


OUT_OF_RANGE = (-1, -3, -10, -11, 10, 11, 2**31 - 1)  # the plans below have 10 steps


def test_an_index_out_of_range_under_jit_gives_nan_not_another_step() -> None:
    """A traced index cannot raise: -1 .. -10 took rows from the end (jnp.take wraps them),
    a silently wrong step. Every index outside [0, N) now gives NaN x_prev, and timestep()
    the integer dtype's minimum (no plan timestep); indices inside are unchanged."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    scheduler = F.Scheduler(CONFIG, 10)
    x = jnp.asarray(X_T, dtype=jnp.float32)
    state = F.init(scheduler, like=x)
    step = jax.jit(lambda state, x: F.step(scheduler, state, 0.5 * x, x)[1])
    timestep = jax.jit(F.timestep)
    for i in range(10):
        at = state._replace(index=jnp.asarray(i))
        eager = F.step(scheduler, at, 0.5 * x, x)[1]  # XLA fuses the jitted one: 1 ulp apart
        np.testing.assert_allclose(step(at, x), eager, rtol=1e-6, atol=1e-6)
        assert int(timestep(at)) == scheduler.timesteps[i]
    for i in OUT_OF_RANGE:
        at = state._replace(index=jnp.asarray(i, dtype=state.index.dtype))
        assert np.isnan(np.asarray(step(at, x))).all(), i
        assert int(timestep(at)) == jnp.iinfo(state.timesteps.dtype).min, i
        with pytest.raises(ValueError, match=rf"state.index={i} must be in \[0, 10\)"):
            F.step(scheduler, at, 0.5 * x, x)  # eager: read for free, refused


@pytest.mark.slow
def test_an_index_out_of_range_under_torch_compile_gives_nan() -> None:
    """The same under torch.compile (the index is a traced tensor there): -1 took the last
    row, 10 raised IndexError from the gather (on CUDA an asynchronous device assert)."""
    torch = pytest.importorskip("torch")
    scheduler = F.Scheduler(CONFIG, 10)
    x = torch.from_numpy(X_T)
    state = F.init(scheduler, like=x)

    def step(state, x):  # type: ignore[no-untyped-def]
        return F.step(scheduler, state, 0.5 * x, x)[1], F.timestep(state)

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    for i in (0, 9):
        at = state._replace(index=torch.tensor(i))
        assert torch.equal(compiled(at, x)[0], step(at, x)[0])
    for i in (-1, -11, 10):
        got, t = compiled(state._replace(index=torch.tensor(i)), x)
        assert torch.isnan(got).all() and int(t) == torch.iinfo(state.timesteps.dtype).min, i


def _torch_model(x, t):
    return 0.5 * x * (1 + t.to(x.dtype) / 1000)


@pytest.mark.slow
def test_torch_compile_fullgraph_equals_eager() -> None:
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(X_T)
    scheduler = F.Scheduler(CONFIG, 3)
    state = F.init(scheduler, like=x)
    eager = _loop(scheduler, state, x, _torch_model)
    compiled = torch.compile(lambda s, x: _loop(scheduler, s, x, _torch_model), fullgraph=True)
    assert torch.equal(compiled(state, x), eager)


def test_init_under_torch_compile_is_refused_by_name() -> None:
    """init inside the compiled function (where jax.jit takes it) failed, under
    fullgraph=True, with torch's InternalTorchDynamoError and an empty NotImplementedError
    message: Dynamo traced the plan's host tables (coefficients.table). init now raises a
    RuntimeError saying to call it outside, which torch.compile reports."""
    torch = pytest.importorskip("torch")
    scheduler = F.Scheduler(CONFIG, 3)

    def loop(x):  # type: ignore[no-untyped-def]
        state = F.init(scheduler, like=x)
        for _ in range(3):
            state, x = F.step(scheduler, state, 0.5 * x, x)
        return x

    compiled = torch.compile(loop, fullgraph=True, backend="eager")
    with pytest.raises(
        torch._dynamo.exc.Unsupported,
        match=r"init\(\) cannot run under torch\.compile: .* call state = init\(scheduler, "
        r"like=x\) outside the compiled function",
    ):
        compiled(torch.ones(2, 3))


@pytest.mark.slow
def test_torch_compile_compiles_a_loop_once_in_a_fresh_process() -> None:
    """The compiled loop is compiled once: backends.compiling bound torch's getter to a
    module global on its first call, and where that call came inside the first trace, the
    global's None was a guard that the bound getter failed at the next call (a second compile
    of the whole loop, model included)."""
    import subprocess
    import sys

    pytest.importorskip("torch")
    code = (
        "import torch, ddim_core as dc\n"
        "from ddim_core import functional as F\n"
        "from torch._dynamo.utils import counters\n"
        "scheduler = F.Scheduler(dc.DDIMConfig(), 3)\n"
        "x = torch.ones(2, 3)\n"
        "state = F.init(scheduler, like=x)\n"
        "def loop(state, x):\n"
        "    for _ in range(3):\n"
        "        state, x = F.step(scheduler, state, 0.5 * x, x)\n"
        "    return x\n"
        "compiled = torch.compile(loop, fullgraph=True)\n"
        "for _ in range(3):\n"
        "    compiled(state, x)\n"
        "print(counters['stats']['unique_graphs'])\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["1"]


@pytest.mark.slow
def test_torch_compile_takes_a_scheduler_made_per_call() -> None:
    """A compiled step given a scheduler made per call (a server's request) whose eta changed
    between calls: torch.compile made eta symbolic, and the third call, with a scheduler equal
    to the first but another object, raised InternalTorchDynamoError ('SymNodeVariable() is
    not a constant') from the check that the state was made for this scheduler."""
    torch = pytest.importorskip("torch")

    def denoise(scheduler, state, x, z):  # type: ignore[no-untyped-def]
        return F.step(scheduler, state, 0.3 * x, x, noise=z)

    compiled = torch.compile(denoise, fullgraph=True)
    x = torch.from_numpy(X_T)
    for eta in (0.0, 0.5, 0.0):
        scheduler = F.Scheduler(CONFIG, 4, eta=eta)
        state = F.init(scheduler, like=x)
        got, want = compiled(scheduler, state, x, x), denoise(scheduler, state, x, x)
        assert torch.equal(got[1], want[1]) and int(got[0].index) == 1
    state = F.init(F.Scheduler(CONFIG, 4), like=X_T)  # equal as values, other text
    F.step(F.Scheduler(CONFIG, 4, eta=-0.0), state, X_T, X_T)


@pytest.mark.slow
def test_torch_compile_takes_config_floats_changed_between_calls() -> None:
    """A compiled step given schedulers whose clip_sample_range, sample_max_value (also below
    1) or dynamic_thresholding_ratio changed between calls: torch.compile made the float
    symbolic at the recompile, and kernels.clip and kernels.threshold failed under fullgraph
    ('Unsupported torch.* op returned non-Tensor': array-api-compat's clip runs math.isnan on
    scalar bounds). Now each call equals eager, and each float changes the step."""
    torch = pytest.importorskip("torch")

    def denoise(scheduler, state, x):  # type: ignore[no-untyped-def]
        return F.step(scheduler, state, 0.3 * x, x)[1]

    compiled = torch.compile(denoise, fullgraph=True)
    x = torch.from_numpy(X_T) / 10  # x0_pred of the first step within about [-3, 3]
    clipped = CONFIG.replace(clip_sample=True)
    thresholded = CONFIG.replace(thresholding=True)
    configs = [
        clipped,
        clipped.replace(clip_sample_range=2.0),
        thresholded,
        thresholded.replace(sample_max_value=0.5),
        thresholded.replace(sample_max_value=50.0, dynamic_thresholding_ratio=0.7),
    ]
    results = []
    for config in configs:
        scheduler = F.Scheduler(config, 4)
        state = F.init(scheduler, like=x)
        got, want = compiled(scheduler, state, x), denoise(scheduler, state, x)
        assert torch.equal(got, want), config
        results.append(got)
    for a, b in itertools.pairwise(results):
        assert not torch.equal(a, b)  # each changed float reached the step


def test_state_pickles_and_steps_in_another_process(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A state (a class made per scheduler) pickles, for checkpoints and worker processes."""
    import pickle
    import subprocess
    import sys

    scheduler = F.Scheduler(dc.DDIMConfig(), 5)
    x = np.ones((2, 3))
    state = F.init(scheduler, like=x)
    state, y = F.step(scheduler, state, 0.1 * x, x)
    again = pickle.loads(pickle.dumps(state))
    assert type(again) is type(state) and int(again.index) == 1
    path = tmp_path / "state.pkl"
    path.write_bytes(pickle.dumps((scheduler, state, y)))
    code = (
        "import pickle, sys, numpy as np\n"
        "from ddim_core import functional as F\n"
        "scheduler, state, y = pickle.loads(open(sys.argv[1], 'rb').read())\n"
        "state, y = F.step(scheduler, state, 0.1 * y, y)\n"
        "print(repr(float(y[0, 0])), int(state.index))\n"
    )
    run = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    _, want = F.step(scheduler, state, 0.1 * y, y)
    assert run.stdout.split() == [repr(float(want[0, 0])), "2"]


def test_state_and_sample_must_agree() -> None:
    """A state of another library or work dtype, a step past the plan's end and an integer
    `like` are clear errors (they gave silent float32 coefficients, raw backend errors)."""
    torch = pytest.importorskip("torch")
    scheduler = F.Scheduler(dc.DDIMConfig(), 2)
    x = np.ones(3)
    with pytest.raises(TypeError, match="float32 work and the sample is float64"):
        F.step(scheduler, F.init(scheduler, like=x.astype(np.float32)), x, x)
    with pytest.raises(TypeError, match="state is a torch array but sample is a numpy array"):
        F.step(scheduler, F.init(scheduler, like=torch.ones(3, dtype=torch.float64)), x, x)
    state = F.init(scheduler, like=x)
    for _ in range(2):
        state, x = F.step(scheduler, state, 0.1 * x, x)
    with pytest.raises(
        ValueError, match=r"state\.index=2 must be in \[0, 2\): the plan has 2 steps, all taken"
    ):
        F.step(scheduler, state, 0.1 * x, x)
    with pytest.raises(TypeError, match="like must be a real floating-point array"):
        F.init(scheduler, like=np.ones(3, dtype=np.int64))
    with pytest.raises(TypeError, match=r"^like must be an array, got None$"):
        F.init(scheduler, like=None)  # said "expected at least one array among ['like']"


def test_inverse_scheduler_refuses_use_clipped_model_output() -> None:
    """Inversion steps have no use_clipped_model_output (ddim_core.inverse_step): the
    functional inverse loop divided by sqrt(1 - alpha_bar) = 0 at its first step (NaN)."""
    with pytest.raises(ValueError, match="use_clipped_model_output=True: inversion"):
        F.Scheduler(dc.DDIMConfig(), 5, inverse=True, use_clipped_model_output=True)


def test_states_outlive_the_bounded_class_cache() -> None:
    """State classes are cached per scheduler up to a bound (no leak in a process that makes
    schedulers without end); a state whose class left the cache still steps."""
    from ddim_core.functional import _state_type

    scheduler = F.Scheduler(dc.DDIMConfig(), 3)
    x = np.ones(2)
    state = F.init(scheduler, like=x)
    for n in range(4, 4 + _state_type.cache_info().maxsize + 1):
        F.init(F.Scheduler(dc.DDIMConfig(), n), like=x)
    assert type(F.init(scheduler, like=x)) is not type(state)  # evicted: a new class
    state, y = F.step(scheduler, state, 0.1 * x, x)
    assert int(state.index) == 1 and y.shape == x.shape


def test_bad_scheduler_arguments_are_named() -> None:
    """Scheduler(config, timesteps=5) raised "'int' object is not iterable" and timesteps="900"
    "timesteps must be an integer, got '9'" (the string was split into characters); a config
    passed to step as the scheduler was reported as a state made for another scheduler; a
    negative index was "all taken"; timestep() of anything but a state raised AttributeError."""
    with pytest.raises(TypeError, match="timesteps must be a sequence of integers, got 5"):
        F.Scheduler(CONFIG, timesteps=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="timesteps must be a sequence of integers, got '900'"):
        F.Scheduler(CONFIG, timesteps="900", inverse=True)  # type: ignore[arg-type]
    with pytest.raises(  # said 'strictly decreasing, got [100, 500, 900]', reversed
        ValueError,
        match=r"strictly increasing with inverse=True \(the order the inversion visits them\), "
        r"got \[900, 500, 100\]",
    ):
        F.Scheduler(CONFIG, timesteps=(900, 500, 100), inverse=True)
    with pytest.raises(ValueError, match=r"strictly decreasing, got \[100, 500\]"):
        F.Scheduler(CONFIG, timesteps=(100, 500))
    scheduler = F.Scheduler(CONFIG, 2)
    x = np.ones(3)
    state = F.init(scheduler, like=x)
    with pytest.raises(
        TypeError, match=r"scheduler must be a functional\.Scheduler, got DDIMConfig"
    ):
        F.step(CONFIG, state, x, x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"state\.index=-1 must be in \[0, 2\)"):
        F.step(scheduler, state._replace(index=np.asarray(-1)), x, x)
    for bad in (None, (1, 2, 3), scheduler):  # AttributeError: no attribute 'index'
        with pytest.raises(TypeError, match="state must be a DDIMState from init"):
            F.timestep(bad)  # type: ignore[arg-type]
    torch = pytest.importorskip("torch")  # timestep past the end raised torch's IndexError
    done = F.init(scheduler, like=torch.ones(3))._replace(index=torch.tensor(2))
    with pytest.raises(ValueError, match=r"state\.index=2 must be in \[0, 2\)"):
        F.timestep(done)


def test_an_index_that_is_not_an_integer_array_is_named() -> None:
    """A state whose index was set by hand to a Python int (to start at step k) raised torch's
    "reshape(): argument 'input' (position 1) must be Tensor, not int"; a float index NumPy's
    'Cannot cast array data' or torch's index_select error, and a bool one took step 1
    silently. Each is a TypeError naming the index and the way to move it."""
    torch = pytest.importorskip("torch")
    scheduler = F.Scheduler(CONFIG, 4)
    match = (
        r"state\.index must be a 0-d integer array, got .*; to start at step k, pass "
        r"state\._replace\(index=state\.index \+ k\)"
    )
    bad = [
        (torch.ones(3), 2),
        (torch.ones(3), torch.tensor(1.0)),
        (np.ones(3), np.asarray(1.0)),
        (np.ones(3), np.asarray(True)),
    ]
    for x, index in bad:
        state = F.init(scheduler, like=x)._replace(index=index)
        with pytest.raises(TypeError, match=match):
            F.step(scheduler, state, x, x)
        with pytest.raises(TypeError, match=match):
            F.timestep(state)
    state = F.init(scheduler, like=torch.ones(3))
    moved = state._replace(index=state.index + 2)
    assert int(F.timestep(moved)) == scheduler.timesteps[2]
    assert int(F.step(scheduler, moved, torch.ones(3), torch.ones(3))[0].index) == 3


def test_dask_step_past_the_end_is_refused_at_call_time() -> None:
    """On Dask the index was a lazy array: a step (or timestep) past the plan's end was
    accepted and failed at compute time with an IndexError from inside Dask. Its index is
    now host-side (read for free), so both are the ValueError of NumPy, at call time, and
    the loop still equals NumPy's."""
    da = pytest.importorskip("dask.array")
    scheduler = F.Scheduler(CONFIG, 2)
    x = y = X_T
    lazy = da.from_array(X_T, chunks=(4, 2))
    state, lazy_state = F.init(scheduler, like=x), F.init(scheduler, like=lazy)
    for _ in range(2):
        state, x = F.step(scheduler, state, MODEL(x, F.timestep(state)), x)
        t = F.timestep(lazy_state)
        lazy_state, lazy = F.step(scheduler, lazy_state, MODEL(lazy, t), lazy)
    assert np.array_equal(lazy.compute(), x) and not np.array_equal(x, y)
    past = r"state\.index=2 must be in \[0, 2\): the plan has 2 steps, all taken"
    with pytest.raises(ValueError, match=past):
        F.step(scheduler, lazy_state, 0.1 * lazy, lazy)
    with pytest.raises(ValueError, match=past):
        F.timestep(lazy_state)


def test_scheduler_custom_timesteps_as_a_tensor_or_an_unordered_collection() -> None:
    """make_plan reads a tensor of any library as custom timesteps and refuses a dict or set
    (unordered), but Scheduler split them with tuple() first: a JAX or torch array was refused
    with 'timesteps must be an integer, got Array(999, ...)', a dict was taken in its
    iteration order silently, a set failed on the order hashing gave it."""
    jnp = pytest.importorskip("jax").numpy
    config = dc.DDIMConfig()
    for inverse, given in ((False, [900, 500, 100]), (True, [100, 500, 900])):
        want = F.Scheduler(config, timesteps=tuple(given), inverse=inverse)
        got = F.Scheduler(config, timesteps=jnp.asarray(given), inverse=inverse)
        assert got == want and got.timesteps == want.timesteps
    for unordered in ({900: 0, 500: 0}, {900, 500, 100}, frozenset({900, 500})):
        with pytest.raises(TypeError, match="timesteps must be a sequence of integers"):
            F.Scheduler(config, timesteps=unordered)
    with pytest.raises(ValueError, match=r"timesteps must be 1-D, got shape \(1, 2\)"):
        F.Scheduler(config, timesteps=jnp.asarray([[900, 500]]))


def test_a_state_batched_by_vmap_out_axes_is_named() -> None:
    """jax.vmap(step, in_axes=(None, 0)) with the default out_axes=0 returns the shared state
    batched (index of shape (B,)): the next step, eager or mapped again, failed inside JAX
    ('cannot reshape array of shape (3,) (size 3) into shape (1,)')."""
    jax = pytest.importorskip("jax")
    scheduler = F.Scheduler(CONFIG, 4)
    x = jax.numpy.ones((3, 2))
    mapped = jax.vmap(lambda state, y: F.step(scheduler, state, 0.1 * y, y), in_axes=(None, 0))
    state, x = mapped(F.init(scheduler, like=x[0]), x)
    assert state.index.shape == (3,)
    for call in (lambda: mapped(state, x), lambda: F.step(scheduler, state, x, x)):
        with pytest.raises(ValueError, match=r"state\.index must be 0-d, got shape \(3,\)"):
            call()
    with pytest.raises(ValueError, match=r"state\.index must be 0-d, got shape \(2,\)"):
        F.timestep(F.init(scheduler, like=X_T)._replace(index=np.array([0, 1])))
    # mapped with out_axes=(None, 0), the shared state steps on
    shared = jax.vmap(
        lambda state, y: F.step(scheduler, state, 0.1 * y, y), in_axes=(None, 0), out_axes=(None, 0)
    )
    state, x = shared(F.init(scheduler, like=x[0]), x)
    state, x = shared(state, x)
    assert int(state.index) == 2


def test_torch_func_vmap_maps_a_batched_state() -> None:
    """torch.func.vmap over per-sample states (jax.vmap's in_axes=0): the index read for the
    range check called .tolist() on vmap's batched tensor, which has no storage
    (RuntimeError 'Cannot access data pointer of Tensor that doesn't have storage'). A
    batched index is not read (as under torch.compile): each sample takes its own step."""
    torch = pytest.importorskip("torch")
    from torch.func import vmap

    scheduler = F.Scheduler(CONFIG, 4)
    x = torch.as_tensor(X_T[:2])
    one = F.init(scheduler, like=x[0])
    index = torch.tensor([0, 2])
    batched = one._replace(
        coefficients=one.coefficients.expand(2, -1, -1),
        timesteps=one.timesteps.expand(2, -1),
        index=index,
    )
    state, got = vmap(lambda s, y: F.step(scheduler, s, 0.1 * y, y))(batched, x)
    assert state.index.tolist() == [1, 3]
    assert vmap(F.timestep)(batched).tolist() == [999, 499]
    for i in range(2):
        _, expected = F.step(scheduler, one._replace(index=index[i]), 0.1 * x[i], x[i])
        assert torch.equal(got[i], expected)


def test_a_state_batched_by_torch_func_vmap_out_dims_is_named() -> None:
    """torch.func.vmap(step, in_dims=(None, 0)) with the default out_dims=0 returns the shared
    state batched, as jax.vmap does: the next step's ValueError named jax.vmap's out_axes and
    in_axes only, which torch.func.vmap has not (its arguments are out_dims and in_dims)."""
    torch = pytest.importorskip("torch")
    from torch.func import vmap

    scheduler = F.Scheduler(CONFIG, 4)
    x = torch.as_tensor(X_T[:3])
    mapped = vmap(lambda state, y: F.step(scheduler, state, 0.1 * y, y), in_dims=(None, 0))
    state, x = mapped(F.init(scheduler, like=x[0]), x)
    assert state.index.shape == (3,)
    match = (
        r"state\.index must be 0-d, got shape \(3,\): a state batched by jax\.vmap or "
        r"torch\.func\.vmap \(.*out_dims=\(None, 0\).*in_dims=0"
    )
    for call in (lambda: mapped(state, x), lambda: F.step(scheduler, state, x, x)):
        with pytest.raises(ValueError, match=match):
            call()
    shared = vmap(
        lambda state, y: F.step(scheduler, state, 0.1 * y, y), in_dims=(None, 0), out_dims=(None, 0)
    )
    state, x = shared(F.init(scheduler, like=x[0]), x)
    state, x = shared(state, x)
    assert int(state.index) == 2


def test_dataclasses_replace_derives_the_timesteps_again() -> None:
    """`dataclasses.replace` hands the derived timesteps to the new Scheduler: a new config
    kept the old plan's timesteps silently, a new step count or direction raised about
    timesteps the caller never gave. They are derived again; given timesteps stay given."""
    s = F.Scheduler(dc.DDIMConfig(), 4)
    trailing = dc.DDIMConfig(timestep_spacing="trailing")
    assert dataclasses.replace(s, config=trailing) == F.Scheduler(trailing, 4)
    assert dataclasses.replace(s, config=trailing).timesteps == (999, 749, 499, 249)
    assert dataclasses.replace(s, num_inference_steps=8) == F.Scheduler(dc.DDIMConfig(), 8)
    assert dataclasses.replace(s, inverse=True).timesteps == (0, 250, 500, 750)
    assert dataclasses.replace(s, eta=0.5).timesteps == s.timesteps
    custom = F.Scheduler(dc.DDIMConfig(), timesteps=[900, 500, 100])
    assert dataclasses.replace(custom, config=trailing).timesteps == (900, 500, 100)
