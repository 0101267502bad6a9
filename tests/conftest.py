"""ddim-core's own pytest plugin (fixtures `backend`, `xp`, `device`, `reference_scheduler`;
the matrix itself: ddim_core.testing.backends.BACKENDS) and the Hypothesis profile: `ci`
(derandomized, bounded; the default) or `dev` (HYPOTHESIS_PROFILE=dev, more examples)."""

from __future__ import annotations

import importlib.util
import os

from hypothesis import settings

from ddim_core.testing.strategies import CI, DEV

# Installed, ddim-core registers this plugin through its pytest11 entry point (named after the
# module, so that naming it here again is a no-op); from a source checkout, this loads it.
pytest_plugins = ["ddim_core.testing.pytest_plugin", "pytester"]

settings.register_profile("ci", CI)
settings.register_profile("dev", DEV)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

if importlib.util.find_spec("jax") is not None:
    import jax

    jax.config.update("jax_enable_x64", True)
