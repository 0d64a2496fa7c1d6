"""Taichi kernels for the ASAL substrates and their renderers.

Installed as ``workbench.kernels``. Only :mod:`workbench.kernels.runtime` calls ``ti.init``.
"""

import os

# Taichi prints a banner on import; keep stdout clean for `--json` output and pipes.
os.environ.setdefault("ENABLE_TAICHI_HEADER_PRINT", "false")
