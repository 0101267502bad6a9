"""MindSpore's default, asynchronous execution (the rest of this suite runs synchronously):
a loop gives the same numbers, and a kernel that fails is still reported, at the next read."""

from __future__ import annotations

import subprocess
import sys
import textwrap

CODE = textwrap.dedent(
    """
    import numpy as np, mindspore
    import ddim_core as dc
    from ddim_core import _mindspore as xp
    cfg = dc.DDIMConfig(clip_sample=False)
    mix = dc.GaussianMixture.create([[-2.0, 0.0], [2.0, 0.5]], [0.3, 0.5], cfg)
    x = np.random.default_rng(0).standard_normal((4, 2))
    got = dc.sample(mix, mindspore.tensor(x), cfg, 5, eta=0.5, generator=np.random.default_rng(1))
    want = dc.sample(mix, x, cfg, 5, eta=0.5, generator=np.random.default_rng(1))
    assert np.abs(got.asnumpy() - want).max() < 1e-13
    bad = xp.take(xp.asarray(np.arange(5.0)), xp.asarray([7]), axis=0)
    try:
        bad.asnumpy()
    except Exception as e:
        assert "input_indices" in str(e), e
        print("ok")
    """
)


def test_asynchronous_execution() -> None:
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
