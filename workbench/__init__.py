"""Workbench for the methods of the "evolve foundation models" papers (ASAL and friends).

    from workbench import make_substrate, rollout, load_fm, RunStore, resolve_device, Progress
"""

from workbench.lazy import exports

__version__ = "0.1.0"

__getattr__, __dir__, __all__ = exports(__name__, {
    "workbench.simulations": ["make_substrate", "rollout"],
    "workbench.fm": ["load_fm"],
    "workbench.runs": ["RunStore"],
    "workbench.progress": ["Progress"],
    "workbench.kernels.device": ["resolve_device"],
})
