"""ddim_mindone against mindone.diffusers 0.5: the parity figures README.md and
docs/mindspore.md quote (`mindspore.*`).

Run in the MindSpore environment, from the repository root:
`.venv-mindspore/bin/python tests/mindspore/mindone_report.py` writes
benchmarks/results/mindspore.json, the run tests/test_figures.py checks the pages against.
test_mindone.py runs each comparison here against its bound, and checks a fresh `measure()`
against the figures as the pages write them.

mindone computes the previous timestep as t - T // N: "leading" plans agree with that rule,
other spacings are compared with prev_timestep="stride".
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "adapters")]

import mindspore  # noqa: E402
import numpy as np  # noqa: E402
from ddim_mindone import DDIMInverseScheduler, DDIMScheduler  # noqa: E402
from mindone.diffusers import DDIMInverseScheduler as TheirInverse  # noqa: E402
from mindone.diffusers import DDIMScheduler as TheirScheduler  # noqa: E402

import ddim_core as dc  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "mindspore.json"

SD = {  # a Stable Diffusion pipeline's scheduler options
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
}
CASES: dict[str, dict[str, Any]] = {
    "sd-leading": SD,
    "default-clip": {},
    "trailing-v-zero-snr": {
        **SD,
        "timestep_spacing": "trailing",
        "prediction_type": "v_prediction",
        "rescale_betas_zero_snr": True,
        "steps_offset": 0,
    },
    "linspace-sample-clip": {"timestep_spacing": "linspace", "prediction_type": "sample"},
    "squaredcos-threshold": {
        "beta_schedule": "squaredcos_cap_v2",
        "thresholding": True,
        "sample_max_value": 1.5,
    },
}
SHAPE = (2, 4, 8, 8)
# eta 1 on zero terminal SNR is NaN in mindone (test_mindone.py): that case runs at eta 0.5
ETA_CASES = [(case, eta) for case in CASES for eta in (0.0, 1.0)]
ETA_CASES[ETA_CASES.index(("trailing-v-zero-snr", 1.0))] = ("trailing-v-zero-snr", 0.5)
FLOAT16_CASES = ["sd-leading", "trailing-v-zero-snr", "default-clip"]
INVERSE_CASES = FLOAT16_CASES


def pair(options: dict[str, Any], steps: int, inverse: bool = False) -> tuple[Any, Any]:
    """(mindone's scheduler, ours) from the same options, on the same plan."""
    theirs = (TheirInverse if inverse else TheirScheduler)(**options)
    stride = options.get("timestep_spacing", "leading") != "leading"
    mine = (DDIMInverseScheduler if inverse else DDIMScheduler).from_config(
        theirs.config, prev_timestep="stride" if stride else "plan"
    )
    for s in (theirs, mine):
        s.set_timesteps(steps)
    np.testing.assert_array_equal(mine.timesteps.asnumpy(), theirs.timesteps.asnumpy())
    return theirs, mine


def tensor(values: np.ndarray, dtype: Any) -> Any:
    return mindspore.tensor(values, dtype=dtype)


def loop(scheduler: Any, x: Any, outputs: list[np.ndarray], dtype: Any, **step: Any) -> list:
    """Step through the plan with given model outputs; the per-step results (NumPy)."""
    results = []
    seed = step.pop("seed", None)
    generator = None if seed is None else np.random.default_rng(seed)
    for t, out in zip(scheduler.timesteps, outputs, strict=True):
        if generator is not None:
            step["generator"] = generator
        prev, _ = scheduler.step(tensor(out, dtype), t, x, **step)
        results.append(prev.astype(mindspore.float64).asnumpy())
        x = prev
    return results


def model_outputs(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(SHAPE) for _ in range(n)]


def relative(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """The largest step's max |a - b| over max |b|."""
    return max(float(np.abs(x - y).max() / np.abs(y).max()) for x, y in zip(a, b, strict=True))


def shared_tables(options: dict[str, Any], *schedulers: Any) -> None:
    """Both schedulers on ddim_core's float64 alpha_bar table (mindone's own is float32)."""
    sched = dc.schedule(dc.DDIMConfig(**options))
    table = mindspore.tensor(sched.alphas_cumprod)
    final = mindspore.tensor(sched.final_alpha_cumprod, dtype=mindspore.float64)
    for s in schedulers:
        s.alphas_cumprod = table
        if hasattr(s, "initial_alpha_cumprod"):
            s.initial_alpha_cumprod = final
        else:
            s.final_alpha_cumprod = final


def float32_error(case: str, eta: float) -> float:
    """10 float32 steps, each side on its own table (eta > 0: NumPy Generators of one seed)."""
    theirs, mine = pair(CASES[case], 10)
    x_T = tensor(np.random.default_rng(1).standard_normal(SHAPE), mindspore.float32)
    outputs = model_outputs(10)
    step = {"eta": eta, "seed": 5} if eta else {}
    a = loop(mine, x_T, outputs, mindspore.float32, **step)
    b = loop(theirs, x_T, outputs, mindspore.float32, **step)
    return relative(a, b)


def float16_ulps(case: str) -> tuple[float, float]:
    """One step at each timestep from the same float16 inputs: the most ulps ours is from the
    exact float64 result (elementwise), and from mindone's (at the sample's scale)."""
    theirs, mine = pair(CASES[case], 10)
    rng = np.random.default_rng(2)
    own, scale = 0.0, 0.0
    for t in mine.timesteps:
        x, out = (rng.standard_normal(SHAPE).astype(np.float16) for _ in range(2))
        a, b = (
            s.step(tensor(out, mindspore.float16), t, tensor(x, mindspore.float16))[0]
            .asnumpy()
            .astype(np.float64)
            for s in (mine, theirs)
        )
        exact = mine.step(out.astype(np.float64), int(t), x.astype(np.float64))[0]
        own_ulps = np.abs(a - exact) / np.spacing(np.abs(exact).astype(np.float16))
        scale_ulps = np.abs(a - b).max() / np.spacing(np.float16(np.abs(b).max()))
        own, scale = max(own, float(own_ulps.max())), max(scale, float(scale_ulps))
    return own, scale


def float64_error(case: str, eta: float) -> float:
    """10 float64 steps, both on ddim_core's float64 table (eta > 0: one NumPy seed)."""
    theirs, mine = pair(CASES[case], 10)
    shared_tables(CASES[case], theirs, mine)
    x_T = tensor(np.random.default_rng(4).standard_normal(SHAPE), mindspore.float64)
    outputs = model_outputs(10, 5)
    step = {"eta": eta, "seed": 6} if eta else {}
    a = loop(mine, x_T, outputs, mindspore.float64, **step)
    b = loop(theirs, x_T, outputs, mindspore.float64, **step)
    return relative(a, b)


def inverse_error(case: str, dtype: str) -> float:
    """10 inverse steps; float64 on shared tables, float32 each on its own."""
    theirs, mine = pair(CASES[case], 10, inverse=True)
    if dtype == "float64":
        shared_tables(CASES[case], theirs, mine)
    x_0 = tensor(np.random.default_rng(7).standard_normal(SHAPE) * 0.5, getattr(mindspore, dtype))
    outputs = model_outputs(10, 8)
    a = loop(mine, x_0, outputs, getattr(mindspore, dtype))
    b = loop(theirs, x_0, outputs, getattr(mindspore, dtype))
    return relative(a, b)


def pipeline_difference() -> tuple[float, Any]:
    """mindone's DDIMPipeline (eta 1, a NumPy Generator, 5 steps) with mindone's scheduler,
    then with `pipe.scheduler = DDIMScheduler.from_config(...)`: the images' max absolute
    difference (in [0, 1]) and the pipeline. The model is a small stand-in (mindone's UNets
    need kernels MindSpore lacks on the CPU, e.g. Arange), registered like a mindone model."""
    from mindone.diffusers import DDIMPipeline, ModelMixin
    from mindone.diffusers.configuration_utils import ConfigMixin, register_to_config

    class TinyUNet(ModelMixin, ConfigMixin):  # type: ignore[misc]
        @register_to_config  # type: ignore[untyped-decorator]
        def __init__(self, sample_size: int = 8, in_channels: int = 3) -> None:
            super().__init__()
            self.scale = mindspore.Parameter(mindspore.tensor(0.3, mindspore.float32))

        def construct(self, x: Any, t: Any) -> tuple[Any]:
            return (x * self.scale + mindspore.ops.cos(t.astype(x.dtype) / 100.0),)

    pipe = DDIMPipeline(unet=TinyUNet(), scheduler=TheirScheduler())
    images = {}
    for name in ("theirs", "ours"):
        if name == "ours":
            pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        generator = np.random.default_rng(0)
        images[name] = pipe(
            batch_size=2, generator=generator, num_inference_steps=5, eta=1.0, output_type="np"
        )[0]
    return float(np.abs(images["ours"] - images["theirs"]).max()), pipe


def measure() -> dict[str, float]:
    """Every figure, the largest over the comparisons test_mindone.py runs."""
    eta0 = max(float32_error(case, eta) for case, eta in ETA_CASES if not eta)
    eta = max(float32_error(case, eta) for case, eta in ETA_CASES if eta)
    half = [float16_ulps(case) for case in FLOAT16_CASES]
    return {
        "float32_eta0": eta0,
        "float32_eta": eta,
        "float32": max(eta0, eta),
        "float16_exact_ulps": max(own for own, _ in half),
        "float16_ulps": max(scale for _, scale in half),
        "float64": max(float64_error(case, eta) for case in CASES for eta in (0.0, 0.5)),
        "inverse_float32": max(inverse_error(case, "float32") for case in INVERSE_CASES),
        "inverse_float64": max(inverse_error(case, "float64") for case in INVERSE_CASES),
        "pipeline": pipeline_difference()[0],
    }


def main() -> None:
    from importlib.metadata import version

    mindspore.runtime.launch_blocking()  # as tests/mindspore/conftest.py runs it
    run = {
        "mindspore": version("mindspore"),
        "mindone": version("mindone"),
        "figures": measure(),
    }
    RESULTS.write_text(json.dumps(run, indent=2) + "\n")
    for key, value in run["figures"].items():
        print(f"{key}: {value:.3g}")


if __name__ == "__main__":
    main()
