"""Kernels for the ASAL substrates and their renderers: Taichi on CPUs, Triton (with cuFFT and CUDA graphs) on
CUDA GPUs, and the one place that picks the device.

Installed as ``workbench.kernels``. Only :mod:`workbench.kernels.runtime` calls ``ti.init``.
"""

import os

# Taichi prints a banner on import; keep stdout clean for `--json` output and pipes.
os.environ.setdefault("ENABLE_TAICHI_HEADER_PRINT", "false")
# Under Jupyter Taichi logs "Graphical python shell detected, using wrapped sys.stdout" for every kernel module it
# decorates (before ti.init's log level applies); the wrapped buffer only serves print() inside kernels, which ours
# never call.
os.environ.setdefault("TI_ENABLE_PYBUF", "0")

from workbench.lazy import exports  # noqa: E402 - after the banner switch

__getattr__, __dir__, __all__ = exports(__name__, {
    "workbench.kernels.device": ["resolve_device", "check_device_flag", "default_device", "cuda_available",
                                 "synchronize", "fits_in_memory", "describe"],
    "workbench.kernels.runtime": ["ensure_taichi"],
    "workbench.kernels.graphs": ["GraphedSteps"],
})
