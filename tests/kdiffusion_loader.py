"""Test-only loader for k-diffusion 0.1.1.post1's `sampling` and `external` modules.

k_diffusion/utils.py imports torchvision at module level, and PyPI's torchvision cannot be
installed beside the CPU torch of these machines; the samplers never use it. The package's
`__init__` also imports its training modules (models, augmentation, ...). So: register a bare
`k_diffusion` package (its real directory, without running `__init__`), stub torchvision only
while `utils`, `sampling` and `external` import, then remove the stub again.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any

_STUBS = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")


def load() -> tuple[Any, Any]:
    """(k_diffusion.sampling, k_diffusion.external)."""
    if "k_diffusion.sampling" in sys.modules and "k_diffusion.external" in sys.modules:
        return sys.modules["k_diffusion.sampling"], sys.modules["k_diffusion.external"]
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError("k-diffusion is not installed")
    if "k_diffusion" not in sys.modules:
        package = types.ModuleType("k_diffusion")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        sys.modules["k_diffusion"] = package
    saved = {name: sys.modules.get(name) for name in _STUBS}
    stubs = {name: types.ModuleType(name) for name in _STUBS}
    stubs["torchvision"].transforms = stubs["torchvision.transforms"]  # type: ignore[attr-defined]
    stubs["torchvision.transforms"].functional = stubs["torchvision.transforms.functional"]  # type: ignore[attr-defined]
    sys.modules.update(stubs)
    try:
        sampling = importlib.import_module("k_diffusion.sampling")
        external = importlib.import_module("k_diffusion.external")
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return sampling, external
