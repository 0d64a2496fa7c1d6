"""Kernels for the ASAL substrates and their renderers: Taichi on CPUs, Triton (with cuFFT and CUDA graphs) on
CUDA GPUs, and the one place that picks the device.

Installed as ``workbench.kernels``. Only :mod:`workbench.kernels.runtime` calls ``ti.init``.
"""

import os
import sys

if __name__ == "kernels":
    # This folder imported under its folder's name, the top-level "kernels": the repository's root is on sys.path
    # (`python -m pytest` or `python -m workbench` run there put the working directory first). That name is
    # Hugging Face's `kernels` package, which transformers ≥ 5.25 imports: this folder hid it ("cannot import
    # name 'CUDAProperties' from 'kernels'"). The installed package takes its place.
    import importlib.machinery
    import importlib.util

    _root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    _spec = importlib.machinery.PathFinder.find_spec(
        "kernels", [p for p in sys.path if os.path.abspath(p or os.curdir) != _root])
    if _spec is None:
        raise ImportError("no module named 'kernels' is installed (this folder is the workbench's: "
                          "import workbench.kernels)", name="kernels")
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["kernels"] = _module  # what `import kernels` hands back once this file has run
    _spec.loader.exec_module(_module)
else:
    # Taichi prints a banner on import; keep stdout clean for `--json` output and pipes.
    os.environ.setdefault("ENABLE_TAICHI_HEADER_PRINT", "false")
    # Under Jupyter Taichi logs "Graphical python shell detected, using wrapped sys.stdout" for every kernel module
    # it decorates (before ti.init's log level applies); the wrapped buffer only serves print() inside kernels,
    # which ours never call.
    os.environ.setdefault("TI_ENABLE_PYBUF", "0")

    from workbench.kernels.lazy import exports

    __getattr__, __dir__, __all__ = exports(__name__, {
        "workbench.kernels.device": ["resolve_device", "check_device_flag", "default_device", "cuda_available",
                                     "synchronize", "fits_in_memory", "describe", "ieee_convolutions"],
        "workbench.kernels.runtime": ["ensure_taichi"],
        "workbench.kernels.graphs": ["GraphedSteps"],
    })
