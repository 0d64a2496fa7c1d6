"""Model merging: mergekit-compatible methods and recipes, DFS merging, evolved recipes."""

from workbench.kernels.lazy import exports

__getattr__, __dir__, __all__ = exports(__name__, {
    "workbench.merge.methods": ["merge_tensors", "slerp", "METHODS"],
    "workbench.merge.state": ["merge_state_dicts"],
    "workbench.merge.recipe": ["Recipe", "apply_recipe"],
    "workbench.merge.apply": ["apply_recipe_file", "load_merged"],
    "workbench.merge.dfs": ["DFSRecipe", "build_dfs_model"],
    "workbench.merge.search": ["RecipeCMA"],
    "workbench.merge.evolution": ["EvolveConfig", "evolve", "context", "evaluate_genomes"],
    "workbench.merge.analysis": ["task_vector_norms", "task_vector_cosine", "sign_conflict_rate", "dare_kept_fraction"],
})
