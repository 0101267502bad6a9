"""Importing ddim_core imports no array framework besides NumPy (einops/array-api-compat rule)."""

from __future__ import annotations

import json
import subprocess
import sys

FRAMEWORKS = ["torch", "jax", "cupy", "dask", "array_api_strict", "tensorflow", "mlx", "diffusers"]


def test_import_pulls_in_no_framework() -> None:
    code = (
        "import sys, json, ddim_core, ddim_core.cli\n"
        f"print(json.dumps([m for m in {FRAMEWORKS!r} if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_loading_every_plugin_pulls_in_no_framework() -> None:
    """The plugin manager loads all entry points (built-ins, the diffusers adapter's plugin)
    without importing a framework: hosts are imported only when an adapter registers."""
    code = (
        "import sys, json\n"
        "from ddim_core import plugins\n"
        "rows = plugins.describe()\n"
        f"print(json.dumps([m for m in {FRAMEWORKS!r} if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
