"""Dataset-scale inversion and sampling on dask.distributed: Zarr (or .npy) in, Zarr out.

    report = invert_dataset("my_models:load", "latents.zarr", "noise.zarr", config, 50)

The source's items (its first axis) are cut into chunks of `chunk` items. Each chunk is one
Dask task: it reads its items, runs the single-process loop on them (`ddim_core.invert` or
`ddim_core.sample`, or another method by name) with the model its worker built once, writes
the result chunk whole, and then records the chunk as done with the digest of what it was made
from: the config, the steps, the method and its options, the model's identity and the chunk's
input bytes. A rerun skips chunks whose record matches and computes the rest; a worker that
dies costs only the chunks it had in flight, which Dask runs again elsewhere. The noise of
`sample_dataset` is seeded from the chunk index, so the result never depends on which worker
ran a chunk, or when: chunk c equals the single-process loop on the same items, bit for bit.

A target is a Zarr group:

    result   (items, *item_shape) in the source's dtype, one Zarr chunk per task chunk (NaN
             where nothing was written yet)
    done     (chunks, 80) uint8: per chunk, the sha256 of its run record and of its chunk
             record, and the token of the run that wrote it; zero while the chunk is not done
    attrs["ddim_core"]  the layout, and every run record by digest (what each chunk was made
             from, readable with `done_records`)

dask.distributed and zarr (the `distributed` extra) are imported inside the functions that
use them, so `import ddim_core` imports neither.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import importlib
import inspect
import io
import json
import logging
import math
import os
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from . import backends
from .analytic import DEMO_MEANS, DEMO_STDS, GaussianMixture
from .backends import Array
from .config import DDIMConfig, check_int, check_nonnegative
from .plans import make_plan

FORMAT = 1  # version of the target layout and of the records

# Methods by name, per kind: "module:function" with the loop signature
# fn(model, x, config, num_inference_steps, **options) -> array. Names the registry does not
# know are passed on as `method=NAME` to the default loop when it takes a `method` option.
METHODS: dict[str, dict[str, str]] = {
    "invert": {"ddim": "ddim_core.sampling:invert"},
    "sample": {"ddim": "ddim_core.sampling:sample"},
}
DEFAULT_METHOD = "ddim"
DEFAULT_MODEL = "ddim_core.distributed:analytic_model"
_WORKER_TIMEOUT_S = 600.0  # waiting for the `workers` of a given cluster: a clear error, no hang

# Loop options that cannot cross to the workers, and why.
_REFUSED = {
    "callback": "callbacks run on the workers; the report counts chunks, calls and retries",
    "noise": "the noise of chunk c is drawn from numpy.random.default_rng((seed, c)): pass seed=",
    "generator": "the noise of chunk c is drawn from numpy.random.default_rng((seed, c)): "
    "pass seed=",
}
_CHUNK_BYTES = 4 << 20  # the default chunk holds about this much source data


def register_method(kind: str, name: str, function: str) -> None:
    """Make `method=name` run `function` in the dataset runs of `kind`.

    The registry is `METHODS`, per process: register in the process that calls
    `invert_dataset` / `sample_dataset` (the workers receive the "module:function" string, not
    the name).

    Parameters
    ----------
    kind : str
        "invert" (for `invert_dataset`) or "sample" (for `sample_dataset`).
    name : str
        The method's name, as given to `method=`.
    function : str
        "module:function", importable on the workers, with the signature of
        `ddim_core.invert` / `ddim_core.sample`:
        ``fn(model, x, config, num_inference_steps, **options) -> array``, the array shaped
        like x (one result per item).

    Raises
    ------
    ValueError
        `kind` is neither "invert" nor "sample", or `function` is not "module:function".
    TypeError
        `name` is not a non-empty string, or `function` is not a string.

    Examples
    --------
    >>> from ddim_core.distributed import METHODS, register_method
    >>> register_method("invert", "plain", "ddim_core.sampling:invert")
    >>> METHODS["invert"]["plain"]
    'ddim_core.sampling:invert'
    >>> del METHODS["invert"]["plain"]
    >>> register_method("edit", "plain", "ddim_core.sampling:invert")
    Traceback (most recent call last):
        ...
    ValueError: kind must be one of ['invert', 'sample'], got 'edit'
    """
    if kind not in METHODS:
        raise ValueError(f"kind must be one of {sorted(METHODS)}, got {kind!r}")
    if not (isinstance(name, str) and name):
        raise TypeError(f"name must be a non-empty string, got {name!r}")
    if not isinstance(function, str):  # the workers import it by name
        raise TypeError(f"function must be 'module:function' (a string), got {function!r}")
    _check_spec("method", function)
    METHODS[kind][name] = function


# --- the embedded default model --------------------------------------------------------------


def analytic_model(config: DDIMConfig) -> Callable[[Array, Any], Array]:
    """The default model factory: the exact denoiser of the demo's Gaussian mixture
    (`ddim-core demo`: three components, std 0.3), for items of any shape.

    Items of D values are points in D dimensions; the 2-D means are repeated over the
    dimensions, so 2-D points get exactly the demo's mixture.

    Parameters
    ----------
    config : DDIMConfig
        The scheduler options the model's outputs are exact for (prediction type, schedule).

    Returns
    -------
    ItemMixture
        ``model(x, t)`` for `x` of shape (batch, *item), in any array-API library.

    Examples
    --------
    >>> import numpy as np, ddim_core as dc
    >>> from ddim_core.distributed import analytic_model
    >>> model = analytic_model(dc.DDIMConfig(timestep_spacing="trailing"))
    >>> x = np.random.default_rng(0).standard_normal((3, 4, 8, 8)).astype(np.float32)
    >>> out = model(x, 999)  # items of 4x8x8 values: points in 256 dimensions
    >>> out.shape, out.dtype
    ((3, 4, 8, 8), dtype('float32'))
    """
    return ItemMixture(config)


@dataclasses.dataclass(frozen=True)
class ItemMixture:
    """`model(x, t)` for x of shape (batch, *item): the mixture in prod(item) dimensions.

    What `analytic_model` returns: the exact denoiser of the demo's Gaussian mixture
    (`ddim_core.analytic.GaussianMixture`), its 2-D means repeated over the item's values.
    Frozen and picklable, so it travels to Dask workers.

    Attributes
    ----------
    config : DDIMConfig
        The scheduler options the outputs are exact for.

    Examples
    --------
    >>> import numpy as np, ddim_core as dc
    >>> from ddim_core.distributed import ItemMixture
    >>> config = dc.DDIMConfig(timestep_spacing="trailing", clip_sample=False)
    >>> model = ItemMixture(config)
    >>> x_0 = dc.sample(model, np.random.default_rng(0).standard_normal((4, 2)), config, 10)
    >>> x_0.shape
    (4, 2)
    """

    config: DDIMConfig

    def __call__(self, x: Array, t: Any) -> Array:
        xp = backends.namespace(x=x)
        flat = xp.reshape(x, (x.shape[0], -1))
        out = _mixture(self.config, int(flat.shape[1]))(flat, t)
        return xp.reshape(out, tuple(x.shape))


@functools.lru_cache(maxsize=16)
def _mixture(config: DDIMConfig, dim: int) -> GaussianMixture:
    means = [[m[d % len(m)] for d in range(dim)] for m in DEMO_MEANS]
    return GaussianMixture.create(means, DEMO_STDS, config)


# --- the report -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Report:
    """What a dataset run did: what `invert_dataset` and `sample_dataset` return.

    Attributes
    ----------
    kind : str
        "invert" or "sample".
    target : str
        The target, as the caller gave it.
    items : int
        Items in the source.
    chunks : int
        Chunks (tasks) of the run.
    computed : int
        Chunks computed by this run.
    skipped : int
        Chunks already done with the same inputs by an earlier run.
    retries : int or None
        Chunks run again because their worker died (None when the scheduler could not be
        asked).
    seconds : float
        The run's wall time, cluster start excluded.
    items_per_second : float
        Computed items over `seconds`.
    model_calls_per_step : float or None
        Model calls per chunk and step (exact inversion makes more than one); None when
        nothing was computed.
    model_loads : int
        Model factory calls on the workers (one per worker, unless a worker kept the model
        of an earlier run).
    workers : int
        Workers (threads) of the cluster.

    Examples
    --------
    >>> from ddim_core.distributed import Report
    >>> report = Report("invert", "noise.zarr", items=1000, chunks=4, computed=3, skipped=1,
    ...                 retries=0, seconds=2.0, items_per_second=375.0,
    ...                 model_calls_per_step=1.0, model_loads=2, workers=2)
    >>> print(report.summary())
    invert-dataset: 4 chunks (1000 items), 3 computed, 1 skipped, 0 retried; 2.00 s,
    375.0 items/s, 1.00 model calls per step, 2 model loads on 2 workers -> noise.zarr
    """

    kind: str
    target: str
    items: int
    chunks: int
    computed: int
    skipped: int
    retries: int | None
    seconds: float
    items_per_second: float
    model_calls_per_step: float | None
    model_loads: int
    workers: int

    def summary(self) -> str:
        """The report in one line, as `progress=True` prints it at the end of a run.

        Returns
        -------
        str
            E.g. ``invert-dataset: 8 chunks (1000 items), 6 computed, 2 skipped, 1 retried;
            2.10 s, 357.1 items/s, 1.00 model calls per step, 2 model loads on 2 workers ->
            noise.zarr`` ("?" retried when unknown, "-" model calls when nothing was computed).
        """
        retries = "?" if self.retries is None else str(self.retries)
        calls = "-" if self.model_calls_per_step is None else f"{self.model_calls_per_step:.2f}"
        loads = f"{self.model_loads} model load{'' if self.model_loads == 1 else 's'}"
        workers = f"{self.workers} worker{'' if self.workers == 1 else 's'}"
        return (
            f"{self.kind}-dataset: {self.chunks} chunks ({self.items} items), "
            f"{self.computed} computed, {self.skipped} skipped, {retries} retried; "
            f"{self.seconds:.2f} s, {self.items_per_second:.1f} items/s, {calls} model calls "
            f"per step, {loads} on {workers} -> {self.target}"
        )


# --- public entry points ----------------------------------------------------------------------


def invert_dataset(
    model_factory: str | Callable[[DDIMConfig], Any] | None,
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    config: DDIMConfig,
    n: int | None = None,
    *,
    client: Any = None,
    chunk: int | None = None,
    method: str = DEFAULT_METHOD,
    workers: int | None = None,
    worker_timeout: float | None = _WORKER_TIMEOUT_S,
    resources: Mapping[str, float] | None = None,
    model_id: str | None = None,
    progress: bool = False,
    **loop_options: Any,
) -> Report:
    """DDIM-invert every item of `source` into the Zarr group `target`, chunk by chunk.

    Each chunk of `chunk` items is one Dask task running `ddim_core.invert` (or `method`) on
    its items; a chunk already done with the same inputs (config, steps, method, options,
    model, input bytes) is skipped, so a rerun computes only what is missing or changed. The
    result is ``zarr.open_group(target)["result"]``; `done_records` says what each chunk was
    made from.

    Parameters
    ----------
    model_factory : str, callable or None
        "module:function" or a picklable callable; each worker calls ``factory(config)`` once
        and keeps the model it returns (``model(x, t)``, as in `ddim_core.invert`). None: the
        analytic mixture (`analytic_model`).
    source : str or path-like
        A Zarr array (a path or URL the workers can read; an array in a group is
        GROUP/NAME), a .npy file, or the target of an earlier run (its result); items on the
        first axis, any floating dtype (the result keeps it).
    target : str or path-like
        A Zarr group, created when missing (not the source).
    config : DDIMConfig
        The scheduler options, as in ``ddim_core.invert(model, x, config, n)``.
    n : int, optional
        The number of inference steps; give this or the loop option `timesteps`.
    client : distributed.Client, str or None, optional
        A `distributed.Client`, a scheduler address, or None for a `local_cluster` of
        `workers` processes (one thread each; default: one per core this process may run
        on), closed at the end.
    chunk : int, optional
        Items per task (and per Zarr chunk of the result): the batch the model sees.
        Default: about 4 MiB of source.
    method : str, default "ddim"
        A name in ``METHODS["invert"]`` ("ddim": `ddim_core.invert`), a name the default
        loop takes as its `method` option, or "module:function".
    workers : int, optional
        Without a client, the LocalCluster's size; with a client or an address, wait until
        that many workers are connected.
    worker_timeout : float or None, default 600
        Seconds to wait for those `workers` (with a client or an address); None waits
        without limit.
    resources : mapping of str to float, optional
        Dask resources each task needs, e.g. ``{"GPU": 1}`` with one worker per GPU; only
        with a `client` whose workers declare them (a run's own cluster declares none).
    model_id : str, optional
        The model's identity in the records and in the workers' model cache (default: the
        factory's name; pass a new one when the weights behind the same name change, so that
        chunks are recomputed).
    progress : bool, default False
        A progress bar of chunks (tqdm, on stderr) and `Report.summary` printed at the end.
    **loop_options : Any
        Passed to the method (`fixed_point_iters`, `tol`, `history`, `timesteps`,
        `check_finite`, ...); its defaults apply as in a single-process call. `callback` is
        refused: it would run on the workers.

    Returns
    -------
    Report
        What the run did: chunks computed and skipped, retries, speed, model loads.

    Raises
    ------
    TypeError
        `client`, `config` or `model_factory` of the wrong kind (or a factory that cannot be
        pickled); `n`, `chunk` or `workers` not an integer, `worker_timeout` not a number,
        `resources` not a mapping of names to numbers; a loop option refused, unknown to the
        method, or not plain data to be recorded; a source that is not floating point.
    ValueError
        `n`, `chunk`, `workers`, `worker_timeout` or `resources` out of range, or
        `resources` without a `client`; an unknown method; a loop option NaN or Inf (the
        records are JSON); a source that cannot be read as an array; a target that is or
        holds the source, a folder of other files, a Zarr group that ddim-core did not write
        (or another version of it wrote), or that holds another layout (kind, items, item
        shape, dtype, chunk); a chunk of the source holding NaN or Inf (unless
        ``check_finite=False``), found when the chunk runs.
    FileNotFoundError
        The source does not exist.
    TimeoutError
        Fewer than `workers` workers connected within `worker_timeout` seconds.
    ImportError
        dask.distributed or zarr (the `distributed` extra) is missing, or the model factory
        or method cannot be imported.
    RuntimeError
        The model factory raised on a worker (its error, named with the factory). An error
        of the model or the loop in a chunk stops the run with that error, as in a
        single-process call.

    Examples
    --------
    A cluster of one thread in this process; a second run finds every chunk done:

    >>> import numpy as np, zarr, ddim_core as dc
    >>> from distributed import Client
    >>> from ddim_core.distributed import invert_dataset, local_cluster
    >>> config = dc.DDIMConfig(timestep_spacing="trailing", clip_sample=False)
    >>> np.save("points.npy", np.random.default_rng(0).standard_normal((8, 2)))
    >>> with local_cluster(1, processes=False) as cluster, Client(cluster) as client:
    ...     first = invert_dataset(None, "points.npy", "points-noise.zarr", config, 10,
    ...                            client=client, chunk=4, fixed_point_iters=3)
    ...     again = invert_dataset(None, "points.npy", "points-noise.zarr", config, 10,
    ...                            client=client, chunk=4, fixed_point_iters=3)
    >>> (first.chunks, first.computed), (again.computed, again.skipped)
    ((2, 2), (0, 2))
    >>> zarr.open_group("points-noise.zarr", mode="r")["result"].shape
    (8, 2)

    On a cluster, with a model the workers import:

    >>> report = invert_dataset("my_models:load", "latents.zarr", "noise.zarr", config, 50,
    ...                         client="tcp://scheduler:8786", chunk=16,
    ...                         fixed_point_iters=10)  # doctest: +SKIP
    """
    return _run(
        "invert",
        model_factory,
        source,
        target,
        config,
        n,
        client=client,
        chunk=chunk,
        method=method,
        workers=workers,
        worker_timeout=worker_timeout,
        resources=resources,
        model_id=model_id,
        progress=progress,
        seed=None,
        options=loop_options,
    )


def sample_dataset(
    model_factory: str | Callable[[DDIMConfig], Any] | None,
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    config: DDIMConfig,
    n: int | None = None,
    *,
    client: Any = None,
    chunk: int | None = None,
    method: str = DEFAULT_METHOD,
    workers: int | None = None,
    worker_timeout: float | None = _WORKER_TIMEOUT_S,
    resources: Mapping[str, float] | None = None,
    model_id: str | None = None,
    progress: bool = False,
    seed: int = 0,
    **loop_options: Any,
) -> Report:
    """DDIM-sample from every item of `source` (x_T, e.g. noise) into the Zarr group `target`.

    As `invert_dataset`, with `ddim_core.sample` (eta, timesteps, ...) as the default method.
    Chunk c's step noise (eta > 0) is drawn from `numpy.random.default_rng((seed, c))`: chunk
    c equals `ddim_core.sample(model, x[c * chunk:(c + 1) * chunk], config, n,
    generator=numpy.random.default_rng((seed, c)), **loop_options)` bit for bit, whichever
    worker ran it.

    Parameters
    ----------
    model_factory : str, callable or None
        As in `invert_dataset`: "module:function", a picklable ``factory(config) -> model``,
        or None for `analytic_model`.
    source : str or path-like
        x_T: a Zarr array, a .npy file, or the target of an earlier run (e.g. of
        `invert_dataset`); items on the first axis, any floating dtype.
    target : str or path-like
        A Zarr group, created when missing (not the source).
    config : DDIMConfig
        The scheduler options, as in ``ddim_core.sample(model, x, config, n)``.
    n : int, optional
        The number of inference steps; give this or the loop option `timesteps`.
    client : distributed.Client, str or None, optional
        As in `invert_dataset`.
    chunk : int, optional
        Items per task; default: about 4 MiB of source. Part of the noise's seeding: the
        same `seed` with another `chunk` draws other noise (eta > 0).
    method : str, default "ddim"
        A name in ``METHODS["sample"]`` ("ddim": `ddim_core.sample`) or "module:function".
    workers : int, optional
        As in `invert_dataset`.
    worker_timeout : float or None, default 600
        As in `invert_dataset`.
    resources : mapping of str to float, optional
        As in `invert_dataset`: only with a `client` whose workers declare them.
    model_id : str, optional
        As in `invert_dataset`.
    progress : bool, default False
        A progress bar of chunks and `Report.summary` printed at the end.
    seed : int, default 0
        The noise seed (>= 0), recorded: another seed recomputes every chunk.
    **loop_options : Any
        Passed to the method (`eta`, `timesteps`, `check_finite`, ...). `callback`, `noise`
        and `generator` are refused: the noise comes from `seed`.

    Returns
    -------
    Report
        What the run did.

    Raises
    ------
    TypeError
        As `invert_dataset`; `seed` not an integer.
    ValueError
        As `invert_dataset`; `seed` < 0.
    FileNotFoundError
        The source does not exist.
    ImportError
        dask.distributed or zarr is missing, or the model factory or method cannot be
        imported.
    RuntimeError
        As `invert_dataset`: the model factory raised on a worker.

    Examples
    --------
    Chunk 1 of the run is the single-process loop on items 4 to 8 with the noise of
    ``default_rng((seed, 1))``, bit for bit:

    >>> import numpy as np, zarr, ddim_core as dc
    >>> from distributed import Client
    >>> from ddim_core.distributed import analytic_model, local_cluster, sample_dataset
    >>> config = dc.DDIMConfig(timestep_spacing="trailing", clip_sample=False)
    >>> x_T = np.random.default_rng(1).standard_normal((8, 2))
    >>> np.save("x_T.npy", x_T)
    >>> with local_cluster(1, processes=False) as cluster, Client(cluster) as client:
    ...     report = sample_dataset(None, "x_T.npy", "samples.zarr", config, 10,
    ...                             client=client, chunk=4, seed=7, eta=0.5)
    >>> report.computed
    2
    >>> samples = zarr.open_group("samples.zarr", mode="r")["result"][...]
    >>> loop = dc.sample(analytic_model(config), x_T[4:8], config, 10, eta=0.5,
    ...                  generator=np.random.default_rng((7, 1)))
    >>> bool((samples[4:8] == loop).all())
    True
    """
    seed = check_int("seed", seed, low=0)
    return _run(
        "sample",
        model_factory,
        source,
        target,
        config,
        n,
        client=client,
        chunk=chunk,
        method=method,
        workers=workers,
        worker_timeout=worker_timeout,
        resources=resources,
        model_id=model_id,
        progress=progress,
        seed=seed,
        options=loop_options,
    )


def done_records(target: str | os.PathLike[str]) -> list[dict[str, Any] | None]:
    """What each chunk of `target` was made from (its run record), None where not done.

    Parameters
    ----------
    target : str or path-like
        The target of a dataset run (a Zarr group ddim-core wrote).

    Returns
    -------
    list of dict or None
        Per chunk, in order: the record of the run that computed it (``format``, ``kind``,
        ``method``, ``function``, ``options`` with their defaults, ``config``, ``steps``,
        ``model``, ``seed``), or None while the chunk is not done.

    Raises
    ------
    ValueError
        `target` is a Zarr group that ddim-core did not write, or no Zarr group (a Zarr
        array, such as the target's ``result``, or another file).
    FileNotFoundError
        `target` does not exist.
    ImportError
        zarr is missing.

    Examples
    --------
    >>> import numpy as np, ddim_core as dc
    >>> from ddim_core.distributed import done_records, prepare, run_chunk
    >>> np.save("items.npy", np.zeros((6, 2)))
    >>> job = prepare("invert", None, "items.npy", "records.zarr", dc.DDIMConfig(), 10, chunk=3)
    >>> _ = run_chunk(job, 0)  # chunk 1 is not computed
    >>> [None if r is None else (r["kind"], r["steps"], r["model"]) for r in done_records(
    ...     "records.zarr")]
    [('invert', 10, 'ddim_core.distributed:analytic_model'), None]
    """
    path = _location(target)
    if "://" not in path and not os.path.exists(path):
        raise FileNotFoundError(f"target {target} does not exist")
    zarr = _zarr()  # (outside the try: zarr missing is the ImportError documented)
    try:
        group = zarr.open_group(store=path, mode="r")
    except Exception:  # zarr's words for an array: "An array already exists in store ..."
        raise ValueError(
            f"target {target} is not a Zarr group (a Zarr array or another file): give the "
            "group a dataset run wrote, not its result"
        ) from None
    runs = _meta(group, str(target))["runs"]
    rows = np.asarray(group["done"][...])
    return [runs.get(bytes(row[:32]).hex()) if row.any() else None for row in rows]


# --- one task: one chunk ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Job:
    """Everything a task needs, the same for every chunk of a run (small and picklable).

    Made by `prepare`; `run_chunk(job, c)` computes chunk c, for c < `chunks`.

    Attributes
    ----------
    kind : str
        "invert" or "sample".
    factory : str or callable
        The model factory as it travels to the workers ("module:function" or a callable).
    model_id : str
        The model's identity in the records and in the workers' model cache.
    config : DDIMConfig
        The scheduler options.
    n : int or None
        The number of inference steps.
    function : str
        "module:function" of the loop.
    options : mapping
        The loop options as the caller gave them (plus `method` for names passed on).
    seed : int or None
        The noise seed (`sample_dataset`), None for inversion.
    source : str
        The source's absolute path or URL (a target's result array for an earlier run).
    target : str
        The target's absolute path or URL.
    target_name : str
        The target as the caller gave it (for the report).
    items : int
        Items in the source.
    item_shape : tuple of int
        The shape of one item.
    dtype : str
        The source's (and the result's) dtype, as ``numpy.dtype.str``.
    chunk : int
        Items per chunk.
    run_digest : bytes
        sha256 of the run record.
    token : bytes
        This run's 16 random bytes: tell "done by this run" from "done before".

    Examples
    --------
    >>> import numpy as np, ddim_core as dc
    >>> from ddim_core.distributed import prepare
    >>> np.save("ten.npy", np.zeros((10, 2), dtype=np.float32))
    >>> job = prepare("invert", None, "ten.npy", "ten-noise.zarr", dc.DDIMConfig(), 10, chunk=4)
    >>> job.kind, job.items, job.item_shape, job.dtype, job.chunk, job.chunks
    ('invert', 10, (2,), '<f4', 4, 3)
    """

    kind: str
    factory: str | Callable[[DDIMConfig], Any]
    model_id: str
    config: DDIMConfig
    n: int | None
    function: str  # "module:function" of the loop
    options: Mapping[str, Any]  # as the caller gave them (plus `method` for pass-on names)
    seed: int | None
    source: str
    target: str
    target_name: str  # as the caller gave it (for the report)
    items: int
    item_shape: tuple[int, ...]
    dtype: str  # the source's, and the result's
    chunk: int
    run_digest: bytes  # sha256 of the run record
    token: bytes  # this run's 16 random bytes: tells "done by this run" from "done before"

    @property
    def chunks(self) -> int:
        """The number of chunks (tasks): ``ceil(items / chunk)``."""
        return -(-self.items // self.chunk)


class ChunkResult(NamedTuple):
    """What a task reports back (small: the chunk itself stays in the target).

    Attributes
    ----------
    chunk : int
        The chunk's index.
    computed : bool
        Whether this run computed the chunk (False: done before, with the same inputs). A
        chunk whose report was lost with its worker, replayed after it was done, counts as
        computed.
    model_calls : int or None
        Model calls the chunk made; None when it was not computed here.
    seconds : float
        The task's wall time.
    model_built : bool
        Whether the task called the model factory (the first task of a worker, per model
        and config).

    Examples
    --------
    >>> import numpy as np, ddim_core as dc
    >>> from ddim_core.distributed import prepare, run_chunk
    >>> np.save("four.npy", np.zeros((4, 2)))
    >>> job = prepare("sample", None, "four.npy", "four-out.zarr", dc.DDIMConfig(), 5)
    >>> result = run_chunk(job, 0)
    >>> result.chunk, result.computed, result.model_calls
    (0, True, 5)
    """

    chunk: int
    computed: bool  # by this run (a chunk whose result was lost with its worker is replayed)
    model_calls: int | None  # None when the chunk was replayed
    seconds: float
    model_built: bool


def run_chunk(job: Job, index: int) -> ChunkResult:
    """Compute chunk `index` of `job` unless its record says it is done with the same inputs.

    The task a dataset run submits once per chunk; called directly, it computes one chunk in
    this process (to debug a chunk, or to time the work without Dask). The result is written
    whole before the record (a chunk done before from other inputs is marked not done
    first), and the Zarr writes replace files atomically (temp file + rename), so a worker
    killed at any point leaves the chunk either done or not done, never half done.

    Parameters
    ----------
    job : Job
        The run, from `prepare`.
    index : int
        The chunk, 0 <= index < ``job.chunks``: items ``index * job.chunk`` up to
        ``(index + 1) * job.chunk``.

    Returns
    -------
    ChunkResult
        Whether the chunk was computed (or was done already), its model calls and time.

    Raises
    ------
    ValueError
        `index` out of range; the chunk's source items hold NaN or Inf (unless the option
        ``check_finite=False``); the method returned an array not shaped like the chunk.
    TypeError
        `index` is not an integer.
    RuntimeError
        The model factory raised (`worker_model`). The loop's and the model's own errors
        pass through as they are.

    Examples
    --------
    >>> import numpy as np, zarr, ddim_core as dc
    >>> from ddim_core.distributed import analytic_model, prepare, run_chunk
    >>> config = dc.DDIMConfig(timestep_spacing="trailing", clip_sample=False)
    >>> x_0 = np.random.default_rng(0).standard_normal((6, 2))
    >>> np.save("x_0.npy", x_0)
    >>> job = prepare("invert", None, "x_0.npy", "x_T.zarr", config, 10, chunk=3)
    >>> [run_chunk(job, c).computed for c in range(job.chunks)]
    [True, True]
    >>> run_chunk(job, 1).computed  # done by this job before: computed by this run
    True
    >>> job = prepare("invert", None, "x_0.npy", "x_T.zarr", config, 10, chunk=3)  # a rerun
    >>> run_chunk(job, 1).computed
    False
    >>> x_T = zarr.open_group("x_T.zarr", mode="r")["result"][...]
    >>> bool((x_T[:3] == dc.invert(analytic_model(config), x_0[:3], config, 10)).all())
    True
    """
    start = time.perf_counter()
    # -1 would run the empty items [-chunk:0] and record them in the last chunk's row
    index = check_int("index", index, low=0, high=job.chunks - 1)
    source, result, done = _arrays(job)
    a, b = index * job.chunk, min((index + 1) * job.chunk, job.items)
    # a .npy source's items are its file's pages mapped read-only: torch.from_numpy warns
    # that writing to them is undefined, so the model gets a copy, as from a Zarr source
    x = np.require(source[a:b], requirements=["C", "W"])
    record = job.run_digest + _chunk_digest(job.run_digest, index, a, b, x)
    row = np.asarray(done[index], dtype=np.uint8).tobytes()
    if row[:64] == record:
        replayed = row[64:] == job.token
        return ChunkResult(index, replayed, None, time.perf_counter() - start, False)
    if job.options.get("check_finite") is not False and not np.isfinite(x).all():
        bad = a + int(np.argmin(np.isfinite(x.reshape(len(x), -1)).all(axis=1)))
        unfinished = " (an earlier run's result is NaN where its chunks are not done yet)"
        raise _SourceError(
            f"source {job.source} has NaN or Inf in item {bad}"
            f"{unfinished if job.source.endswith('/result') else ''}; fix the source, or pass "
            "check_finite=False (on the command line: --option check_finite=false) to give the "
            "model these items anyway"
        )
    model, built = worker_model(job.factory, job.model_id, job.config)
    counted = _Counted(model)
    prepare = getattr(model, "asarray", None)  # a model that runs on a device moves x there
    options = dict(job.options)
    if job.seed is not None and "generator" in _parameters(job.function):
        options["generator"] = np.random.default_rng((job.seed, index))
    y = _import(job.function)(
        counted, x if prepare is None else prepare(x), job.config, job.n, **options
    )
    out = backends.to_host(y, dtype=x.dtype)
    if out.shape != x.shape:  # written as it is, fewer items would be broadcast: no error
        raise ValueError(
            f"method {job.function} returned shape {out.shape} for chunk {index} of shape "
            f"{x.shape}: a dataset method returns one result per item, shaped like its input "
            "(a pair of arrays, such as ddim_core.reversible's states, does not fit a result)"
        )
    if any(row):  # done from other inputs: its record must not outlive the result it names
        done[index] = np.zeros(len(row), dtype=np.uint8)
    result[a:b] = out
    done[index] = np.frombuffer(record + job.token, dtype=np.uint8)
    return ChunkResult(index, True, counted.calls, time.perf_counter() - start, built)


class _SourceError(ValueError):
    """A chunk's source items hold NaN or Inf: bad input, found by the run (the command line
    exits with status 2 for it, 1 for the other errors of a chunk)."""


def _arrays(job: Job) -> tuple[Any, Any, Any]:
    """(source, result, done) of a job: the target's Zarr handles opened once per worker and
    layout; the source opened each time (under a kept handle, a source written again with
    other chunks or another Zarr format was read through its old metadata)."""
    layout = (job.items, job.item_shape, job.dtype, job.chunk)
    source = _open_source(job.source, layout)
    result, done = (_open_cached(job.target, layout, name) for name in ("result", "done"))
    return source, result, done


@functools.lru_cache(maxsize=64)
def _open_cached(path: str, layout: tuple[Any, ...], what: str) -> Any:
    return _zarr().open_group(store=path, mode="r+")[what]


class _Counted:
    """The model, counting its calls."""

    def __init__(self, model: Callable[[Array, Any], Array]) -> None:
        self.model = model
        self.calls = 0

    def __call__(self, x: Array, t: Any) -> Array:
        self.calls += 1
        return self.model(x, t)


# Per-worker cache: each worker process builds a model once per (model id, config), even when
# it runs several tasks at a time (one lock: a second thread waits for the first build). One
# config per model id is kept, so that a run with another config frees the last one's
# weights (a GPU holds one copy, not one per config ever run).
_MODELS: dict[str, tuple[DDIMConfig, Any]] = {}
_MODELS_LOCK = threading.Lock()


def worker_model(
    factory: str | Callable[[DDIMConfig], Any], model_id: str, config: DDIMConfig
) -> tuple[Any, bool]:
    """(the model, whether this call built it) from this process's cache.

    A worker builds a model once per model id and config, even when it runs several tasks at
    a time (a second thread waits for the first build); a new config for the same id
    replaces the cached model, so that its weights are freed.

    Parameters
    ----------
    factory : str or callable
        "module:function" or a callable; ``factory(config)`` returns ``model(x, t)``.
    model_id : str
        The cache key (a run's `Job.model_id`).
    config : DDIMConfig
        The scheduler options the factory is called with.

    Returns
    -------
    tuple
        (model, built): the cached or new model, and whether this call built it.

    Raises
    ------
    TypeError
        The factory returned something that is not callable.
    ImportError
        The factory "module:function" cannot be imported.
    RuntimeError
        The factory raised: its error, named with the factory (the original is the cause).

    Examples
    --------
    >>> import ddim_core as dc
    >>> from ddim_core.distributed import analytic_model, worker_model
    >>> config = dc.DDIMConfig()
    >>> model, built = worker_model(analytic_model, "docstring-example", config)
    >>> built, worker_model(analytic_model, "docstring-example", config) == (model, False)
    (True, True)
    >>> worker_model(lambda config: 42, "not-a-model", config)
    Traceback (most recent call last):
        ...
    TypeError: model factory not-a-model returned int, not a model(x, t)
    """
    with _MODELS_LOCK:
        cached = _MODELS.get(model_id)
        if cached is not None and cached[0] == config:
            return cached[1], False
        _MODELS.pop(model_id, None)
        build = _import(factory) if isinstance(factory, str) else factory
        try:
            model = build(config)
        except Exception as e:
            raise RuntimeError(f"model factory {model_id} failed: {e!r}") from e
        if not callable(model):
            raise TypeError(
                f"model factory {model_id} returned {type(model).__name__}, not a model(x, t)"
            )
        _MODELS[model_id] = (config, model)
        return model, True


# --- the run on the client ------------------------------------------------------------------


def _run(
    kind: str,
    model_factory: str | Callable[[DDIMConfig], Any] | None,
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    config: DDIMConfig,
    n: int | None,
    *,
    client: Any,
    chunk: int | None,
    method: str,
    workers: int | None,
    resources: Mapping[str, float] | None,
    model_id: str | None,
    progress: bool,
    seed: int | None,
    options: dict[str, Any],
    cluster_options: Mapping[str, Any] | None = None,
    worker_timeout: float | None = _WORKER_TIMEOUT_S,
    started: Callable[[], None] | None = None,
) -> Report:
    """Check the arguments, prepare the job, start or reach the cluster and run the chunks;
    `started()` is called once the chunks are submitted (from then on, an error is the run's,
    not the arguments')."""
    dask = _dask()  # and tqdm for the bar: a missing extra fails before anything is written
    if progress:
        _tqdm()
    if not (client is None or isinstance(client, (str, dask.Client))):
        raise TypeError(
            "client must be a distributed.Client, a scheduler address or None, got "
            f"{type(client).__name__}"
        )
    if workers is not None:
        workers = check_int("workers", workers, low=1)
    if worker_timeout is not None and check_nonnegative("worker_timeout", worker_timeout) == 0:
        raise ValueError("worker_timeout=0 must be a number of seconds > 0, or None: no limit")
    _check_own_arguments(kind, options)
    resources = _check_resources(resources, client)
    job = prepare(
        kind,
        model_factory,
        source,
        target,
        config,
        n,
        chunk=chunk,
        method=method,
        model_id=model_id,
        seed=seed,
        **options,
    )
    with _client(client, workers, cluster_options or {}, worker_timeout) as dask_client:
        if started is not None:
            started()
        return _submit(dask_client, job, resources, progress)


def _check_own_arguments(kind: str, options: Mapping[str, Any]) -> None:
    """Loop options that are the run's own arguments (`--option seed=1`, or seed= to an
    inversion) are refused by name, before Python's "got multiple values" could be."""
    for name in sorted(set(options) & {"chunk", "method", "model_id", "seed"}):
        if name == "seed" and kind == "invert":
            raise TypeError("seed= is not an option of an inversion: it draws no noise")
        flag = "--" + name.replace("_", "-")
        raise TypeError(
            f"loop option {name}= is an argument of the run itself: pass {name}= "
            f"(command line: {flag}), not a loop option"
        )


def _check_resources(resources: Any, client: Any) -> dict[str, float] | None:
    """Resources Dask can meet: a mapping of names to amounts >= 0, and a cluster whose
    workers may declare them (Dask waits forever for a worker that has them)."""
    if not resources:
        return None
    if not isinstance(resources, Mapping):
        raise TypeError(
            f"resources must be a mapping of name to amount, e.g. {{'GPU': 1}}, got {resources!r}"
        )
    checked = {}
    for name, amount in resources.items():
        if not isinstance(name, str):
            raise TypeError(f"resources names must be strings, got {name!r}")
        checked[name] = check_nonnegative(f"resources[{name!r}]", amount)
    if client is None:
        raise ValueError(
            f"resources={dict(resources)} need workers that declare them, and the run's own "
            "local_cluster declares none (its chunks would wait forever): pass client= (CLI: "
            "--scheduler) of a cluster whose workers do, e.g. `dask worker ADDRESS "
            "--resources GPU=1`"
        )
    return checked


def prepare(
    kind: str,
    model_factory: str | Callable[[DDIMConfig], Any] | None,
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    config: DDIMConfig,
    n: int | None = None,
    *,
    chunk: int | None = None,
    method: str = DEFAULT_METHOD,
    model_id: str | None = None,
    seed: int | None = None,
    **loop_options: Any,
) -> Job:
    """Check a run's arguments, create the target (or check the existing one's layout) and
    record the run: the Job whose chunks `run_chunk(job, c)` computes, c < job.chunks, on a
    worker, or in this process (to debug one chunk, or to time the work without Dask).

    What `invert_dataset` and `sample_dataset` do before they start Dask; no cluster is
    needed.

    Parameters
    ----------
    kind : str
        "invert" or "sample".
    model_factory : str, callable or None
        As in `invert_dataset`.
    source : str or path-like
        As in `invert_dataset`.
    target : str or path-like
        As in `invert_dataset`.
    config : DDIMConfig
        The scheduler options.
    n : int, optional
        The number of inference steps; give this or the loop option `timesteps`.
    chunk : int, optional
        Items per chunk; default: about 4 MiB of source.
    method : str, default "ddim"
        As in `invert_dataset` / `sample_dataset`.
    model_id : str, optional
        As in `invert_dataset`.
    seed : int, optional
        The noise seed of a "sample" run (`sample_dataset` passes 0 by default); None for
        inversion.
    **loop_options : Any
        The method's options, as in `invert_dataset`.

    Returns
    -------
    Job
        The run, ready for `run_chunk`.

    Raises
    ------
    ValueError
        An unknown `kind` or method; a bad plan (`n`, `timesteps`); a bad `eta`, `history`,
        `fixed_point_iters` or `tol` of the ddim loops; `chunk` < 1; `seed` < 0;
        a source that cannot be read as an array; a target that is or holds the source, a
        folder of other files, a Zarr group that ddim-core did not write (or another version
        of it wrote), or that holds another layout.
    TypeError
        `config` is not a DDIMConfig; a bad model factory, `model_id`, `chunk`, `seed` or
        loop option; a source that is not floating point.
    FileNotFoundError
        The source does not exist.
    ImportError
        zarr (or, for a callable factory, dask.distributed) is missing, or the factory or
        method cannot be imported.

    Examples
    --------
    >>> import numpy as np, ddim_core as dc
    >>> from ddim_core.distributed import prepare, run_chunk
    >>> config = dc.DDIMConfig(timestep_spacing="trailing", clip_sample=False)
    >>> x_0 = np.random.default_rng(0).standard_normal((5, 4, 8, 8)).astype(np.float32)
    >>> np.save("latents.npy", x_0)
    >>> job = prepare("invert", None, "latents.npy", "latents-noise.zarr", config, 10,
    ...               chunk=2, fixed_point_iters=2)
    >>> job.chunks, job.function, dict(job.options)
    (3, 'ddim_core.sampling:invert', {'fixed_point_iters': 2})
    >>> run_chunk(job, 2).computed  # the last chunk, one item, in this process
    True
    >>> prepare("invert", None, "latents.npy", "latents-noise.zarr", config, 10, chunk=3)
    Traceback (most recent call last):
        ...
    ValueError: target latents-noise.zarr holds invert results for 5 items of shape (4, 8, 8)
    in float32, chunks of 2; this run makes invert results for 5 items of shape (4, 8, 8) in
    float32, chunks of 3. To go on with it, pass chunk=2 (command line: --chunk 2); or choose
    another target, or delete this one to start again
    """
    if kind not in METHODS:
        raise ValueError(f"kind must be one of {sorted(METHODS)}, got {kind!r}")
    if not isinstance(config, DDIMConfig):
        raise TypeError(f"config must be a DDIMConfig, got {type(config).__name__}")
    # named as the caller knows them (make_plan says num_inference_steps); NumPy integers
    # as int: the records are JSON, written after the result arrays
    if (n is None) == (loop_options.get("timesteps") is None):
        raise ValueError(f"give exactly one of n and the loop option timesteps, got n={n!r}")
    n = None if n is None else check_int("n", n, low=1, high=config.num_train_timesteps)
    plan = make_plan(config, n, timesteps=loop_options.get("timesteps"))  # checks timesteps
    if loop_options.get("timesteps") is not None:
        # a NumPy array, a tensor (a diffusers scheduler's `timesteps`) or a range, as the
        # loops take them: recorded, and sent to the workers, as the list of its ints
        loop_options["timesteps"] = list(plan.timesteps)
    seed = None if seed is None else check_int("seed", seed, low=0)
    factory, identity = _model_spec(model_factory, model_id)
    function, options, recorded = _method(kind, method, loop_options)
    source_path, shape, dtype = _source(source)
    target_path = _location(target)
    if _same_place(source_path, target_path):
        raise ValueError(
            f"target {target_path} is or holds the source ({source_path}): write the result "
            "elsewhere"
        )
    items = shape[0]
    default_chunk = _CHUNK_BYTES // max(1, math.prod(shape[1:]) * dtype.itemsize)
    chunk = min(items, max(1, default_chunk)) if chunk is None else check_int("chunk", chunk)
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    run = {
        "format": FORMAT,
        "kind": kind,
        "method": method,
        "function": function,
        "options": recorded,
        "config": config.to_dict(),
        "steps": n,
        "model": identity,
        "seed": seed,
    }
    run_digest = hashlib.sha256(_json(run).encode()).digest()
    layout = {
        "format": FORMAT,
        "kind": kind,
        "items": items,
        "item_shape": list(shape[1:]),
        "dtype": dtype.str,
        "chunk": chunk,
    }
    _prepare_target(target_path, str(target), layout, run, run_digest.hex(), shape, dtype)
    return Job(
        kind=kind,
        factory=factory,
        model_id=identity,
        config=config,
        n=n,
        function=function,
        options=options,
        seed=seed,
        source=source_path,
        target=target_path,
        target_name=str(target),
        items=items,
        item_shape=shape[1:],
        dtype=dtype.str,
        chunk=chunk,
        run_digest=run_digest,
        token=uuid.uuid4().bytes,
    )


def _submit(client: Any, job: Job, resources: Mapping[str, float] | None, progress: bool) -> Report:
    chunks = job.chunks
    bar = _bar(chunks, job.kind, progress)
    keys = [f"ddim-core-{job.kind}-{job.token.hex()}-{c}" for c in range(chunks)]
    start = time.perf_counter()
    futures = client.map(
        run_chunk,
        [job] * chunks,
        range(chunks),
        key=keys,
        resources=dict(resources) if resources else None,
    )
    results: list[ChunkResult] = []
    try:
        for future in _dask().as_completed(futures):
            results.append(future.result())
            if bar is not None:
                n_computed = sum(r.computed for r in results)
                bar.set_postfix(computed=n_computed, skipped=len(results) - n_computed)
                bar.update(1)
        seconds = time.perf_counter() - start
        retries = _retries(client, keys)
    finally:
        if bar is not None:
            bar.close()
        client.cancel(futures)
    done = [r for r in results if r.computed]
    done_items = sum(min(job.chunk, job.items - r.chunk * job.chunk) for r in done)
    calls = [r.model_calls for r in done if r.model_calls is not None]
    steps = len(make_plan(job.config, job.n, timesteps=job.options.get("timesteps")).timesteps)
    report = Report(
        kind=job.kind,
        target=job.target_name,
        items=job.items,
        chunks=chunks,
        computed=len(done),
        skipped=chunks - len(done),
        retries=retries,
        seconds=seconds,
        items_per_second=done_items / seconds if seconds > 0 else 0.0,
        model_calls_per_step=(sum(calls) / (len(calls) * steps) if calls else None),
        model_loads=sum(r.model_built for r in results),
        workers=len(client.nthreads()),
    )
    if progress:
        print(report.summary())
    return report


def _retries(client: Any, keys: list[str]) -> int | None:
    """How many times a chunk was in flight on a worker that died (the scheduler's count of
    'suspicious' runs). The function is defined here so it travels by value: the scheduler
    need not have ddim_core installed."""

    def suspicious(dask_scheduler: Any, keys: list[str]) -> int:
        tasks = dask_scheduler.tasks
        return sum(int(tasks[k].suspicious) for k in keys if k in tasks)

    try:
        return int(client.run_on_scheduler(suspicious, keys=keys))
    except Exception:  # a scheduler that refuses to run functions: unknown, not an error
        return None


def local_cluster(
    workers: int | None = None, *, environ: Mapping[str, Any] | None = None, **kwargs: Any
) -> Any:
    """The LocalCluster a run starts when given no client: `workers` processes (default: one
    per core this process may run on) of one thread each, with glibc's malloc left to its own
    rules.

    Dask's nannies set MALLOC_TRIM_THRESHOLD_=65536 in their workers, which turns off glibc's
    dynamic mmap threshold: every temporary array over 128 KiB is then mapped and unmapped
    again, and the analytic model on 4x64x64 latents runs 2x slower than in a plain process
    (measured here); this cluster leaves it unset.

    Parameters
    ----------
    workers : int, optional
        Worker processes; default: one per core this process may run on, as Dask counts
        them (`dask.system.CPU_COUNT`: its CPU affinity and cgroup quota, e.g. a SLURM job's
        cores, not all the machine's).
    environ : mapping of str to value, optional
        Variables added to the workers' environment before they start (glibc reads MALLOC_*
        only then; a value None unsets one).
    **kwargs : Any
        Passed on to `distributed.LocalCluster`, over the defaults above (e.g.
        ``processes=False`` for threads of this process, ``silence_logs``,
        ``memory_limit``).

    Returns
    -------
    distributed.LocalCluster
        The cluster, started; close it (or use it as a context manager) when done.

    Raises
    ------
    TypeError
        `workers` is not an integer.
    ValueError
        `workers` < 1.
    KeyboardInterrupt
        Ctrl-C while the cluster starts: held until it has started, then raised once the
        cluster is closed again (so no half-started cluster is left behind).

    Examples
    --------
    >>> from distributed import Client
    >>> from ddim_core.distributed import local_cluster
    >>> with local_cluster(2, processes=False) as cluster, Client(cluster) as client:
    ...     threads = client.nthreads()
    >>> sorted(threads.values())
    [1, 1]
    """
    import dask
    from dask.system import CPU_COUNT  # not os.cpu_count(): the machine's, affinity ignored

    # distributed's config defaults are loaded by its import: dask.config.set of a
    # distributed.* key before it would be undone on exit with them, leaving no "distributed"
    # config at all (KeyError: 'distributed' when the cluster closes)
    _dask()
    if workers is not None:  # 0 is no "default", -1 no cluster
        workers = check_int("workers", workers, low=1)
    options: dict[str, Any] = {
        "n_workers": workers or CPU_COUNT,
        "threads_per_worker": 1,
        "processes": True,
        "dashboard_address": ":0",
    }
    options.update(kwargs)
    env = {"MALLOC_TRIM_THRESHOLD_": None, **(environ or {})}
    with dask.config.set({f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in env.items()}):
        return _start_uninterrupted(lambda: _dask().LocalCluster(**options))


def _start_uninterrupted(start: Callable[[], Any]) -> Any:
    """`start()` (which returns something to close) with Ctrl-C (SIGINT) held until it
    returns: then what it started is closed and KeyboardInterrupt raised.

    A LocalCluster interrupted inside its constructor is left half started, its workers in
    Status.init, where nothing can close it: distributed's atexit hook `close_clusters` then
    fails on it with a traceback (AssertionError: Status.init) after the command's own exit
    message. Only the main thread takes signals; a SIGINT handler other than Python's default
    is left alone.
    """
    main = threading.current_thread() is threading.main_thread()
    if not main or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return start()
    held: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        started = start()
        if held:
            started.close()
    except Exception:
        if not held:
            raise
        # else the interrupt, not what it caused: in a terminal Ctrl-C also reaches the
        # worker processes, and a worker still starting dies of it ("Nanny failed to start")
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if held:
        raise KeyboardInterrupt
    return started


class _client:
    """The Dask client to use, as a context: a LocalCluster of our own (closed at the end),
    a connection to an address (closed, the cluster left running), or the caller's client."""

    def __init__(
        self,
        client: Any,
        workers: int | None,
        options: Mapping[str, Any],
        timeout: float | None = None,
    ) -> None:
        self.given, self.workers, self.options, self.timeout = client, workers, options, timeout
        self.owned: list[Any] = []

    def __enter__(self) -> Any:
        try:
            return self._open()
        except BaseException:  # a `with` whose __enter__ raises calls no __exit__
            self.__exit__()  # closes what was opened before the failure
            raise

    def _open(self) -> Any:
        dask = _dask()
        if self.given is None:
            cluster = local_cluster(self.workers, **self.options)
            self.owned.append(cluster)
            client = dask.Client(cluster)
            self.owned.append(client)
            return client
        if isinstance(self.given, str):
            client = dask.Client(self.given)
            self.owned.append(client)
        else:
            client = self.given
        if self.workers is not None:
            try:
                client.wait_for_workers(self.workers, timeout=self.timeout)
            except TimeoutError as e:  # dask's says "Only 0/2 workers arrived after 5.0"
                raise TimeoutError(
                    f"fewer than workers={self.workers} workers connected within "
                    f"worker_timeout={self.timeout} s ({e}); start more workers, or pass a "
                    "larger worker_timeout (None: no limit)"
                ) from None
        return client

    def __exit__(self, *exc: object) -> None:
        for thing in reversed(self.owned):
            thing.close()


def _bar(total: int, kind: str, enabled: bool) -> Any:
    if not enabled:
        return None
    return _tqdm()(total=total, desc=f"{kind}-dataset", unit="chunk", file=sys.stderr)


def _tqdm() -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError:
        raise ImportError("progress=True needs tqdm: pip install 'ddim-core[progress]'") from None
    return tqdm


# --- checks and records -----------------------------------------------------------------------


def _check_spec(what: str, spec: str) -> tuple[str, str]:
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"{what} {spec!r} must be 'module:function', e.g. {DEFAULT_MODEL!r}")
    return module, name


@functools.lru_cache(maxsize=64)
def _import_spec(spec: str) -> Any:
    module_name, name = _check_spec("name", spec)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise ImportError(f"cannot import {module_name!r} (from {spec!r}): {e}") from e
    for part in name.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ImportError(f"module {module_name!r} has no {name!r} (from {spec!r})") from None
    if not callable(obj):
        raise TypeError(f"{spec!r} is a {type(obj).__name__}, not a function")
    return obj


def _import(spec: str) -> Any:
    return _import_spec(spec)


def _parameters(function: str) -> Mapping[str, inspect.Parameter]:
    return inspect.signature(_import(function)).parameters


def _model_spec(
    factory: str | Callable[[DDIMConfig], Any] | None, model_id: str | None
) -> tuple[str | Callable[[DDIMConfig], Any], str]:
    """The factory as it travels to the workers and the model's identity for the records."""
    if model_id is not None and not (isinstance(model_id, str) and model_id):
        raise TypeError(f"model_id must be a non-empty string, got {model_id!r}")
    if factory is None:
        factory = DEFAULT_MODEL
    if isinstance(factory, str):
        _check_spec("model factory", factory)
        _import(factory)  # fails here, clearly, rather than on every worker
        return factory, model_id or factory
    if not callable(factory):
        raise TypeError(
            "model_factory must be 'module:function', a callable factory(config) -> model, "
            f"or None; got {type(factory).__name__}"
        )
    try:
        _dask_pickle(factory)
        pickled = _stable_pickle(factory)
    except Exception as e:
        raise TypeError(f"model_factory {factory!r} cannot be pickled for the workers: {e}") from e
    name = f"{getattr(factory, '__module__', '?')}:{getattr(factory, '__qualname__', '?')}"
    return factory, model_id or f"{name}#{hashlib.sha256(pickled).hexdigest()[:16]}"


def _method(
    kind: str, method: str, options: dict[str, Any]
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(the loop's "module:function", the options to call it with, the options recorded: its
    defaults filled in, so that a changed default recomputes too)."""
    if not isinstance(method, str):
        raise TypeError(f"method must be a name or 'module:function', got {method!r}")
    for name in options:
        if name in _REFUSED or name == "progress":
            why = _REFUSED.get(name, "progress= shows the run's progress bar")
            raise TypeError(f"loop option {name}= is not supported for datasets: {why}")
    options = dict(options)
    known = METHODS[kind]
    if method in known:
        function = known[method]
    elif ":" in method:
        function = method
    elif "method" in _parameters(known[DEFAULT_METHOD]):
        function = known[DEFAULT_METHOD]
        options["method"] = method
    else:
        raise ValueError(f"unknown {kind} method {method!r}; known: {', '.join(sorted(known))}")
    signature = inspect.signature(_import(function))
    try:
        signature.bind(None, None, None, None, **options)  # model, x, config, n
    except TypeError as e:
        raise TypeError(f"method {method!r} ({function}): bad loop options: {e}") from None
    recorded = {
        p.name: p.default
        for i, p in enumerate(signature.parameters.values())
        if i >= 4
        and p.default is not inspect.Parameter.empty
        and p.name not in _REFUSED
        and p.name != "progress"
    }
    recorded.update(options)
    try:
        recorded = json.loads(_json(recorded))
    except TypeError as e:
        raise TypeError(
            f"loop options must be plain data (numbers, strings, lists) to be recorded: {e}"
        ) from None
    except ValueError:  # NaN or Inf, which JSON cannot hold; json's message names no option
        for name, value in recorded.items():
            try:
                _json(value)
            except ValueError:
                raise ValueError(
                    f"loop option {name}={value!r} cannot be recorded: the records are JSON, "
                    "which holds no NaN or Inf; pass a finite number"
                ) from None
        raise
    for p in signature.parameters.values():  # eta=0 is eta=0.0: one record, as in the config
        if type(recorded.get(p.name)) is int and _floating(p.annotation):
            recorded[p.name] = float(recorded[p.name])
    if kind == "invert":
        from .sampling import check_fixed_point

        if "fixed_point_iters" in recorded:
            check_fixed_point(recorded["fixed_point_iters"], recorded.get("tol"))
    if function == known[DEFAULT_METHOD]:
        _check_ddim_options(kind, recorded)
    return function, options, recorded


def _floating(annotation: Any) -> bool:
    """Whether a parameter's annotation ("float", "float | None", float) takes floats and no
    ints: its int values are recorded as floats."""
    words = set(re.findall(r"\w+", str(annotation)))
    return "float" in words and "int" not in words


def _check_ddim_options(kind: str, options: Mapping[str, Any]) -> None:
    """The checks `ddim_core.sample` / `invert` make of eta, history, tol, check_finite and
    stall, made here so that a bad value fails before the target is created and a cluster
    started, not on every worker."""
    from .sampling import check_fixed_point, check_tol_used
    from .steps import check_eta

    eta = check_eta(options.get("eta", 0.0))
    for flag in ("check_finite", "stall") if kind == "invert" else ("check_finite",):
        value = options.get(flag)
        if not (value is None or isinstance(value, bool)):  # `--option check_finite=0`
            raise TypeError(f"{flag} must be True, False or None, got {value!r}")
    if kind == "invert":
        if eta != 0:
            raise ValueError(f"eta={options['eta']}: inversion is deterministic, eta must be 0")
        check_int("history", options.get("history", 3), low=1)
        tol = options.get("tol")
        check_tol_used(check_fixed_point(options.get("fixed_point_iters", 0), tol), tol)


def _json(data: Any) -> str:
    def plain(x: Any) -> Any:
        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, tuple):
            return list(x)
        raise TypeError(f"{x!r} ({type(x).__name__}) is not JSON data")

    return json.dumps(data, sort_keys=True, default=plain, allow_nan=False)


def _chunk_digest(run_digest: bytes, index: int, a: int, b: int, x: np.ndarray) -> bytes:
    """sha256 of what chunk `index` is made from: the run, its place, its input bytes."""
    h = hashlib.sha256(run_digest)
    place = {"chunk": index, "items": [a, b], "shape": x.shape, "dtype": x.dtype.str}
    h.update(_json(place).encode())
    h.update(x.tobytes())
    return h.digest()


# --- source and target ------------------------------------------------------------------------


def _zarr() -> Any:
    try:
        import zarr
    except ImportError:
        raise ImportError(
            "ddim_core.distributed needs zarr and dask.distributed: "
            "pip install 'ddim-core[distributed]'"
        ) from None
    return zarr


def _dask() -> Any:
    try:
        return importlib.import_module("distributed")
    except ImportError:
        raise ImportError(
            "ddim_core.distributed needs dask.distributed and zarr: "
            "pip install 'ddim-core[distributed]'"
        ) from None


def _dask_pickle(obj: Any) -> bytes:
    """obj pickled as Dask sends it to workers (cloudpickle: by value where needed)."""
    _dask()
    pickled: bytes = importlib.import_module("cloudpickle").dumps(obj)
    return pickled


# cloudpickle names each class it sends by value (one defined in a script) by a uuid4 drawn
# anew in every process
_CLASS_TRACKER_ID = re.compile("[0-9a-f]{12}4[0-9a-f]{19}")


def _stable_pickle(obj: Any) -> bytes:
    """obj pickled as for the workers, but the same bytes in every process: the model's
    identity in the records (a rerun from a new process must find its chunks done). Never
    unpickled: a set's items in a fixed order (their order is the hash seed's), cloudpickle's
    per-process class ids left out."""
    cloudpickle = importlib.import_module("cloudpickle")

    class Pickler(cloudpickle.Pickler):  # type: ignore[misc, name-defined]
        def persistent_id(self, x: Any) -> Any:
            if isinstance(x, (set, frozenset)):
                return (type(x).__name__, sorted(_stable_pickle(item) for item in x))
            if isinstance(x, str) and _CLASS_TRACKER_ID.fullmatch(x):
                return "class-tracker-id"
            return None

    out = io.BytesIO()
    Pickler(out).dump(obj)
    return out.getvalue()


def _location(path: str | os.PathLike[str]) -> str:
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str) or not path:
        raise TypeError(f"expected a path or URL, got {path!r}")
    return path if "://" in path else os.path.abspath(path)


def _same_place(source: str, target: str) -> bool:
    """Whether the source is the target or lies inside it (an earlier run's result, read
    from the group this run writes)."""
    source, target = os.path.normpath(source), os.path.normpath(target)
    return source == target or source.startswith(target.rstrip("/") + "/")


def _open_source(path: str, layout: tuple[Any, ...] | None = None) -> Any:
    """The source array (a .npy file mapped, or a Zarr array), checked against `layout`."""
    array = (
        np.load(path, mmap_mode="r")
        if path.endswith(".npy")
        else _zarr().open_array(store=path, mode="r")
    )
    if layout is not None:
        items, item_shape, dtype, _ = layout
        if (tuple(array.shape), np.dtype(array.dtype).str) != ((items, *item_shape), dtype):
            raise ValueError(
                f"source {path} changed during the run: shape {tuple(array.shape)}, dtype "
                f"{array.dtype}; the run started with {(items, *item_shape)}, {np.dtype(dtype)}"
            )
    return array


def _source(source: str | os.PathLike[str]) -> tuple[str, tuple[int, ...], np.dtype[Any]]:
    """(location, shape, dtype) of the source, checked."""
    path = _location(source)
    if "://" not in path and not os.path.exists(path):
        raise FileNotFoundError(f"source {path} does not exist (a Zarr array or a .npy file)")
    if _is_ddim_target(path):  # a target of an earlier run: its result
        path = f"{path.rstrip('/')}/result"
    try:
        array = _open_source(path)
    except Exception as e:
        names = _group_arrays(path)
        if names is not None:
            raise ValueError(
                f"source {path} is a Zarr group: give the array inside it as GROUP/NAME "
                f"(its arrays: {', '.join(names) or 'none'})"
            ) from None
        raise ValueError(f"cannot read source {path} as a Zarr array or a .npy file: {e}") from e
    shape, dtype = tuple(int(s) for s in array.shape), np.dtype(array.dtype)
    if len(shape) < 1 or shape[0] < 1:
        raise ValueError(f"source {path} has shape {shape}: items go on a first axis, length >= 1")
    if dtype.kind != "f":
        raise TypeError(f"source {path} has dtype {dtype}; expected floating point values")
    return path, shape, dtype


def _is_ddim_target(path: str) -> bool:
    if path.endswith(".npy"):
        return False
    try:
        group = _zarr().open_group(store=path, mode="r")
    except Exception:
        return False
    return "ddim_core" in group.attrs


def _group_arrays(path: str) -> list[str] | None:
    """The names of the arrays in the Zarr group at `path`, or None if it is no group."""
    try:
        group = _zarr().open_group(store=path, mode="r")
    except Exception:
        return None
    return sorted(group.array_keys())


def _meta(group: Any, target: str) -> dict[str, Any]:
    meta = group.attrs.get("ddim_core")
    if not isinstance(meta, dict) or "layout" not in meta:
        raise ValueError(
            f"target {target} is a Zarr group that ddim-core did not write; choose another target"
        )
    return meta


def _prepare_target(
    path: str,
    name: str,
    layout: dict[str, Any],
    run: dict[str, Any],
    run_digest: str,
    shape: tuple[int, ...],
    dtype: np.dtype[Any],
) -> None:
    """Create the target group, or check that an existing one has this run's layout; record
    the run (the client is the only writer of the attributes)."""
    zarr = _zarr()
    others = _foreign_files(path)
    if others:  # mode="a" would make the folder a group, our arrays among the user's files
        raise ValueError(
            f"target {name} is a folder that is not a Zarr group (it holds "
            f"{', '.join(others[:3])}{', ...' if len(others) > 3 else ''}): name a new "
            "folder (or an empty one) for the result"
        )
    try:
        group = zarr.open_group(store=path, mode="a")
    except Exception as e:
        raise ValueError(f"target {name} cannot be opened as a Zarr group: {e}") from e
    if "ddim_core" not in group.attrs and not list(group.keys()):
        meta: dict[str, Any] = {"layout": layout, "runs": {}}
        # marked ours before its arrays: a run stopped between the two is a target a rerun
        # finishes, not "a Zarr group that ddim-core did not write"
        group.attrs["ddim_core"] = meta
    else:
        meta = _meta(group, name)
        written = meta["layout"].get("format")
        if written != FORMAT:  # its layout and records may mean other things
            raise ValueError(
                f"target {name} was written by another version of ddim-core (format "
                f"{written!r}; this one reads and writes format {FORMAT}). Choose another "
                "target, or delete this one to start again"
            )
        if meta["layout"] != layout:
            old, new = meta["layout"], layout
            # only the chunk differs (a rerun without the first run's --chunk): its done
            # chunks are kept by passing that chunk again, not by deleting them
            resume = (
                f"To go on with it, pass chunk={old['chunk']} (command line: --chunk "
                f"{old['chunk']}); or choose another target"
                if {**old, "chunk": new["chunk"]} == new
                else "Choose another target"
            )
            raise ValueError(
                f"target {name} holds {_describe(old)}; this run makes {_describe(new)}. "
                f"{resume}, or delete this one to start again"
            )
    if "done" not in group:  # new, or stopped before its records: no chunk is done yet
        if "result" not in group:
            group.create_array(
                "result",
                shape=shape,
                chunks=(layout["chunk"], *shape[1:]),
                dtype=dtype,
                fill_value=np.nan,
            )
        chunks = -(-layout["items"] // layout["chunk"])
        group.create_array("done", shape=(chunks, 80), chunks=(1, 80), dtype="uint8", fill_value=0)
    meta["runs"][run_digest] = run
    meta["last_run"] = run_digest
    group.attrs["ddim_core"] = meta


def _foreign_files(path: str) -> list[str]:
    """The entries of a local folder at `path` that holds no Zarr metadata (zarr.json, or
    Zarr 2's .zgroup / .zarray), sorted; [] for a Zarr node, an empty folder, no folder or
    a URL."""
    if "://" in path or not os.path.isdir(path):
        return []
    names = sorted(os.listdir(path))
    return [] if {"zarr.json", ".zgroup", ".zarray"} & set(names) else names


def _describe(layout: Mapping[str, Any]) -> str:
    return (
        f"{layout['kind']} results for {layout['items']} items of shape "
        f"{tuple(layout['item_shape'])} in {np.dtype(layout['dtype'])}, chunks of "
        f"{layout['chunk']}"
    )


# --- command line: `ddim-core invert-dataset | sample-dataset` --------------------------------


def command(name: str, argv: Sequence[str]) -> int:
    """`ddim-core invert-dataset|sample-dataset SOURCE TARGET ...` (called by ddim_core.cli).

    A progress bar and the summary line unless ``--quiet``; ``ddim-core invert-dataset
    --help`` lists the options.

    Parameters
    ----------
    name : str
        "invert-dataset" or "sample-dataset".
    argv : sequence of str
        The arguments after it.

    Returns
    -------
    int
        The exit status: 0 when done; 2 after a one-line error on stderr for bad input (a
        missing source, a bad option: before any cluster is started; a source with NaN: when
        the run meets it); 1 after a one-line error when the run fails (a model or its factory
        raised, a worker died); 130 when interrupted (the chunks done are kept).
        argparse exits by itself for ``--help`` (0), bad arguments and a ``--config`` that
        cannot be read (2, after one line naming the argument).

    Examples
    --------
    >>> from ddim_core.distributed import command
    >>> command("invert-dataset", ["missing.npy", "out.zarr", "--steps", "10", "--quiet"])
    2
    >>> command("invert-dataset", ["latents.zarr", "noise.zarr", "--steps", "50",
    ...                            "--scheduler", "tcp://scheduler:8786"])  # doctest: +SKIP
    0
    """
    from ._arguments import ArgumentParser, current_directory_importable  # (one-line errors)

    kind = name.removesuffix("-dataset")
    parser = ArgumentParser(
        prog=f"ddim-core {name}",
        description=(
            f"DDIM-{'invert' if kind == 'invert' else 'sample from'} every item of SOURCE (a "
            "Zarr array or .npy file, items on the first axis) into the Zarr group TARGET on "
            "dask.distributed, chunk by chunk; a rerun computes only chunks not done."
        ),
    )
    parser.add_argument(
        "source",
        metavar="SOURCE",
        help="a Zarr array (GROUP/NAME inside a group) or a .npy file, items on the first axis",
    )
    parser.add_argument(
        "target", metavar="TARGET", help="the Zarr group to write (its array `result`)"
    )
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        metavar="MODULE:FUNCTION",
        help="factory(config) -> model(x, t), called once per worker (default: the analytic "
        "Gaussian mixture)",
    )
    parser.add_argument("--model-id", help="the model's identity in the records")
    parser.add_argument(
        "--steps", type=int, help="inference steps (or --option timesteps=[...], the steps' list)"
    )
    parser.add_argument(
        "--config", help="a scheduler_config.json, or a folder with one (default: DDIMConfig())"
    )
    parser.add_argument("--scheduler", metavar="ADDRESS", help="a Dask scheduler's address")
    parser.add_argument("--workers", type=int, help="LocalCluster size, or workers to wait for")
    parser.add_argument(
        "--worker-timeout",
        type=_seconds_or_none,
        default=_WORKER_TIMEOUT_S,
        metavar="SECONDS",
        help="how long to wait for --workers on --scheduler (default 600; none: no limit)",
    )
    parser.add_argument("--chunk", type=int, help="items per task (default: about 4 MiB)")
    parser.add_argument("--method", default=DEFAULT_METHOD, help="a method name or module:function")
    parser.add_argument(
        "--resources",
        action="append",
        default=[],
        metavar="NAME=AMOUNT",
        help="Dask resources per task, e.g. GPU=1 (repeatable)",
    )
    if kind == "invert":
        parser.add_argument("--fixed-point-iters", type=int, help="exact inversion iterations")
        parser.add_argument("--tol", type=float, help="exact inversion tolerance")
    else:
        parser.add_argument("--eta", type=float, help="DDIM eta (noise seeded per chunk)")
        parser.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="another loop option, e.g. history=3 (repeatable)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    args = parser.parse_args(list(argv))
    timesteps = any(item.partition("=")[0] == "timesteps" for item in args.option)
    if (args.steps is None) != timesteps:  # n or timesteps, as in ddim_core.invert / sample
        parser.error(
            "--steps and --option timesteps=... both given; give one"
            if timesteps
            else "the following arguments are required: --steps (or --option timesteps=[...])"
        )
    try:
        config = DDIMConfig.from_file(args.config) if args.config else DDIMConfig()
    except (OSError, ValueError, TypeError) as e:  # missing, a folder, not JSON, a bad option
        why = e.strerror if isinstance(e, OSError) and e.strerror else e
        parser.error(f"argument --config: {args.config!r}: {why}")
    try:  # the extra the command needs (it brings tqdm too) before the progress bar's
        _dask()
        _zarr()
    except ImportError as e:
        print(f"ddim-core {name}: error: {e}", file=sys.stderr)
        return 2
    if not args.quiet:
        try:
            _tqdm()
        except ImportError:
            parser.error(
                "the progress bar needs tqdm: pip install 'ddim-core[progress]', or pass --quiet"
            )
    running: list[bool] = []  # set once the chunks are submitted: errors then are the run's
    try:
        # --model and --method modules as `python -m` finds them (the current directory
        # first); the command's own workers are spawned with this sys.path
        with current_directory_importable():
            options = _cli_options(args, kind)
            _run(
                kind,
                args.model,
                args.source,
                args.target,
                config,
                None
                if args.steps is None
                else check_int("--steps", args.steps, low=1, high=config.num_train_timesteps),
                client=args.scheduler,
                chunk=args.chunk,
                method=args.method,
                workers=args.workers,
                worker_timeout=args.worker_timeout,
                resources=_pairs(args.resources, float, "--resources") or None,
                model_id=args.model_id,
                progress=not args.quiet,
                seed=None if kind == "invert" else check_int("--seed", args.seed, low=0),
                options=options,
                # the error comes back as one line: no worker log of it (with its traceback)
                cluster_options={"silence_logs": logging.CRITICAL},
                started=lambda: running.append(True),
            )
    except Exception as e:
        bad_input = (ValueError, TypeError, ImportError, OSError)
        if isinstance(e, _SourceError) or (isinstance(e, bad_input) and not running):
            print(f"ddim-core {name}: error: {e}", file=sys.stderr)
            return 2
        # the run failed: the model's or its factory's errors (a model's ValueError too), Dask's
        print(f"ddim-core {name}: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"ddim-core {name}: interrupted; the chunks done are kept: run the same command "
            "again to go on",
            file=sys.stderr,
        )
        return 130
    return 0


def _seconds_or_none(text: str) -> float | None:
    """--worker-timeout's value: a number of seconds, or "none" (no limit: worker_timeout=None,
    which a float cannot say). Range errors are worker_timeout's own.

    Examples
    --------
    >>> _seconds_or_none("90"), _seconds_or_none("None")
    (90.0, None)
    """
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds or 'none' (no limit)"
        ) from None


def _cli_options(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    options: dict[str, Any] = _pairs(
        args.option,
        json.loads,
        "--option",
        "the value must be JSON (a number, true, false, null, or a string quoted: "
        "NAME='\"text\"'): ",
    )
    named = ("fixed_point_iters", "tol") if kind == "invert" else ("eta",)
    for key in named:
        if getattr(args, key) is not None:
            if key in options:  # two values for one option: neither is silently dropped
                flag = "--" + key.replace("_", "-")
                raise ValueError(f"--option {key}=... and {flag} both given; give one")
            options[key] = getattr(args, key)
    return options


def _pairs(
    items: Sequence[str], convert: Callable[[str], Any], flag: str, what: str = ""
) -> dict[str, Any]:
    """NAME=VALUE items as a dict; `what` says how a value is written (json's own error
    message does not say that the value is JSON)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} {item!r} must be NAME=VALUE")
        try:
            out[key] = convert(value)
        except ValueError as e:
            raise ValueError(f"{flag} {item!r}: {what}{e}") from None
    return out


__all__ = [
    "DEFAULT_MODEL",
    "METHODS",
    "ChunkResult",
    "ItemMixture",
    "Job",
    "Report",
    "analytic_model",
    "done_records",
    "invert_dataset",
    "local_cluster",
    "prepare",
    "register_method",
    "run_chunk",
    "sample_dataset",
    "worker_model",
]
