"""`python -m ddim_comfyui install|uninstall COMFYUI_DIR` (see `ddim_comfyui.install`)."""

import sys

from .install import main

sys.exit(main())
