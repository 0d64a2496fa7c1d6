"""NAMM training settings newer than some runs, kept free of torch so that `runs compare` can read old runs
without loading it: name → (default, what runs made before it did), for resume checks
(workbench.runs.resume_conflicts) and config readers (workbench.runs.as_run_did).

max_kept (2026-12-01): runs made before were the paper's uncapped NAMM. pool (2026-12-01): runs made before scored
every generation on the same prompts. normalizer (2026-12-05): runs made before divided as "pool" does.
"""

PREDATES = {"max_kept": (None, None), "pool": (32, 0), "normalizer": ("pool", "pool")}
