"""CycleQD (quality-diversity over models, spec §2): per-task archives, elite sampling, model-wise crossover,
SVD mutation, and the loop as an ask/tell object whose children are rebuilt from their lineage.

    from workbench.qd import CycleQD, CycleQDConfig, build_child, svd_factors, task_vector
    from workbench.qd import QDRunConfig, run_cycleqd        # stored runs (`workbench qd cycle`)
    from workbench.qd import write_pyribs, read_pyribs       # pyribs ArchiveDataFrame parquet files
"""

from workbench.kernels.lazy import exports

__getattr__, __dir__, __all__ = exports(__name__, {
    "workbench.qd.archives": ["bin_ids", "bin_edges", "TaskArchives"],
    "workbench.qd.sampling": ["elite_probs", "sample_elite", "sample_uniform", "SAMPLERS"],
    "workbench.qd.operators": ["crossover", "svd_mutate", "svd_factors", "svd_draws", "SVDFactors", "task_vector",
                               "gaussian_mutate", "svd_eligible", "MUTATIONS"],
    "workbench.qd.cycle": ["CycleQD", "CycleQDConfig", "Child"],
    "workbench.qd.lineage": ["build_child", "rebuild"],
    "workbench.qd.archive_map": ["read_archive_map", "write_archive_map", "check_archive_map", "to_archive_map",
                                 "archives_from_map", "archive_map_path", "latest_archive_map", "ArchiveEntry",
                                 "ArchiveMapError"],
    "workbench.qd.run": ["QDRunConfig", "run_cycleqd", "load_run", "rebuild_model", "export_model", "model_id_of"],
    "workbench.qd.pyribs": ["write_pyribs", "read_pyribs", "read_pyribs_frame", "to_grid_archive"],
    "workbench.qd.baselines": ["report", "best_per_task", "best_overall"],
})
