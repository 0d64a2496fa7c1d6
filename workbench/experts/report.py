"""Reports over finished expert and adaptation runs: the spread over seeds, side by side.

    report([store.open(i) for i in ids])   # -> {"repeats": …, "experts": …, "adapt": …} (plain JSON-ready dicts)

experts runs (grouped by task, adapter and stop-token rule): held-out test accuracy of the base and of the best
expert (mean, std, min, max over the runs: the seeds), best validation accuracy, trainable parameter count. adapt
runs (grouped by strategy and task): test accuracy over the runs, and each strategy's mean over the tasks; the
dispatchers' accuracy. A std over three seeds is a rough spread: read a gain smaller than it as no gain.
"""

from __future__ import annotations

import json

import numpy as np

from workbench.compare import uses_cem
from workbench.runs import Run, RunError, a_kind_run


def spread(values: list[float]) -> dict:
    """mean, sample std (0 for one value), min, max and the count of some numbers; None and NaN (no score) are
    left out of all five (the Experts page pools its seeds through this too)."""
    a = np.asarray([v for v in values if v is not None], np.float64)
    a = a[~np.isnan(a)]
    if a.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None, "runs": 0}
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0, "min": float(a.min()),
            "max": float(a.max()), "runs": int(a.size)}


def _scores(run: Run) -> dict:
    path = run.path / "scores.json"
    if not path.is_file():
        raise RunError(f"run {run.id} has no scores.json (status {run.status}); finish it first: "
                       f"{run.resume_command or 'it is still running'}")
    return json.loads(path.read_text())


def stop_token(run: Run) -> str:
    """The log π rule a run trained (or broke CEM's ties) with: "drop" or "count" (runs made before the setting)."""
    return run.info["config"].get("stop_token", "count")


#: what an adapt run's seed brings along: its own experts (files and contents); the spread is over those
ADAPT_SEED_KEYS = ("config.seed", "config.experts", "inputs.experts")


def report(runs: list[Run]) -> dict:
    """The spread over seeds of finished `experts` and `adapt` runs (module doc); other kinds are refused. A run
    named twice is refused; a run of the same settings and seed as an earlier one (the same computation again) is
    counted once (`repeats`: its id -> the one counted). experts runs of different models (their model key) are
    grouped apart; adapt runs that differ in more than their seed and experts are pooled, and `adapt.differs`
    names the settings they mix."""
    from workbench.compare import CONTEXT_KEYS, differing_settings, repeats_of

    folders = [run.path.resolve() for run in runs]  # (runs of two stores may share an id)
    twice = next((run for run, f in zip(runs, folders, strict=True) if folders.count(f) > 1), None)
    if twice is not None:
        raise RunError(f"run {twice.id} is named more than once; give each run once")
    for run in runs:
        if run.info.get("kind") not in ("experts", "adapt"):
            raise RunError(f"run {run.id} is {a_kind_run(run.info.get('kind'))}; experts report reads `experts "
                           "train` and `experts adapt` runs")
    twins = repeats_of([run.info for run in runs])
    repeats = {runs[i].id: runs[j].id for i, j in twins.items()}
    runs = [run for i, run in enumerate(runs) if i not in twins]
    experts: dict[tuple[str, str, str, str], list[dict]] = {}
    models: dict[str, str] = {}
    adapts: list[dict] = []
    adapt_runs: list[Run] = []
    adapt_rules: set[str] = set()
    for run in runs:
        if run.info["kind"] == "experts":
            s = _scores(run)
            key = str(run.info.get("model_key") or run.info["config"].get("model"))
            models.setdefault(key, str(run.info["config"].get("model")))
            experts.setdefault((s["task"], s["adapter"], stop_token(run), key), []).append(s)
        else:
            adapts.append(_scores(run))
            adapt_runs.append(run)
            if uses_cem(run.info["config"]):  # the rule only breaks CEM's ties
                adapt_rules.add(stop_token(run))
    out: dict = {"repeats": repeats}
    if experts:
        out["experts"] = [{"task": task, "adapter": adapter, "stop_token": rule, "model": models[key],
                           "n_params": group[0]["n_params"],
                           "base": spread([g["base"] for g in group]), "expert": spread([g["expert"] for g in group]),
                           "best_val_accuracy": spread([g["best_val_accuracy"] for g in group])}
                          for (task, adapter, rule, key), group in sorted(experts.items())]
    if adapts:
        strategies = list(dict.fromkeys(s for a in adapts for s in a["strategies"]))
        tasks = list(dict.fromkeys(t for a in adapts for t in a["tasks"]))
        ignored = set(ADAPT_SEED_KEYS) | set(CONTEXT_KEYS)
        differs = [k.removeprefix("config.") for k in differing_settings([r.info for r in adapt_runs])
                   if k not in ignored]
        out["adapt"] = {
            "tasks": tasks, "runs": len(adapts), "seeds": [a["seed"] for a in adapts], "differs": differs,
            "stop_tokens": sorted(adapt_rules),
            "per_task": {s: {t: spread([a["strategies"].get(s, {}).get(t) for a in adapts]) for t in tasks
                             if any(t in a["strategies"].get(s, {}) for a in adapts)} for s in strategies},
            "mean": {s: spread([a["mean"].get(s) for a in adapts]) for s in strategies
                     if any(s in a["mean"] for a in adapts)},
            "dispatch": {d: spread([a["dispatch"][d]["accuracy"] for a in adapts if d in a["dispatch"]])
                         for d in ("prompt", "classifier") if any(d in a["dispatch"] for a in adapts)}}
    return out
