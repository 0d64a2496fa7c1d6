"""ASAL: foundation-model scores and the target, open-endedness and illumination searches."""

from workbench.kernels.lazy import exports

__getattr__, __dir__, __all__ = exports(__name__, {
    "workbench.asal.scores": ["supervised_target", "softmax_target", "open_endedness", "illumination"],
    "workbench.asal.search": ["SepCMAESSearch", "IlluminationGA", "MapElitesSearch", "prune_redundant"],
    "workbench.asal.evaluate": ["EvalConfig", "Objective", "PhaseTimer", "embed_rollouts"],
    "workbench.asal.driver": ["SearchConfig", "make_search", "start_theta", "run_search", "iteration_seeds",
                              "search_seeds"],
    "workbench.asal.atlas": ["project", "snap_to_grid", "compose", "population_grid"],
    "workbench.asal.sweep": ["SweepConfig", "run_sweep"],
})
