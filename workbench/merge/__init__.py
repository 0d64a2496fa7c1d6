"""Model merging: mergekit-compatible methods and recipes, DFS merging, evolved recipes."""
