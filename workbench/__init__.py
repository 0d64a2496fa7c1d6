"""Workbench for the methods of the "evolve foundation models" papers (ASAL and friends).

    from workbench import make_substrate, rollout, load_fm, RunStore, resolve_device, Progress

Also here: default_theta (the θ a substrate is shown with), rule_text (a Game of Life rule as B3/S23),
compare_runs / Comparison (runs side by side: settings that differ, replicate groups, curves), to_uint8 (rendered
frames as uint8 for images and videos), FoundationModel
(what load_fm returns: the base class of every embedder), Run (one run folder, as RunStore.open and the run
functions return it) and RunError (a run folder that is missing, corrupt or not ours; a ValueError). Modules of
their own: workbench.figures (paper figures and videos), workbench.viewer (the pygame viewer).
"""

from workbench.kernels.lazy import exports

__version__ = "0.1.0"

__getattr__, __dir__, __all__ = exports(__name__, {
    "workbench.simulations": ["make_substrate", "rollout", "rule_text"],
    "workbench.viewer": ["default_theta"],
    "workbench.compare": ["compare_runs", "Comparison"],
    "workbench.fm": ["load_fm", "FoundationModel"],
    "workbench.runs": ["RunStore", "Run", "RunError"],
    "workbench.progress": ["Progress"],
    "workbench.export": ["to_uint8"],
    "workbench.kernels.device": ["resolve_device"],
})
