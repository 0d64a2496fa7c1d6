"""The end of a CycleQD run: the best model per task from the archives against the baselines, on TEST prompts;
and the report over several runs (seeds).

Test prompts: n_test per task from held-out stream seed + 1, without the run's validation prompts (the archives
were filled on those), scored like the children (teacher-forced exact match). Models compared:

- cycleqd: for each task k, the elite of archive k with the highest validation score on k (ties: the lowest id),
  rebuilt from its lineage and scored on every task (K models; the report says when one is a seed expert);
- cycleqd_one_model: the elite with the highest mean validation score over the tasks (one model for all tasks,
  to set against the single-model baselines; listed, not counted in `beats`);
- base: the zoo's base model; experts: each seed expert (the expert of task k is the baseline on task k);
- task_arithmetic: merging alone, θ0 + Σ_k τ_k over the K seed experts (λ = 1, mergekit's task_arithmetic with
  weight 1 each, no normalisation);
- merge_recipe: the recipe of a `workbench merge evolve` run when the run was given one (--merge-recipe);
- multitask: the base fine-tuned on the MIXED training data of the K tasks with the compute of the K expert
  trainings (the sum of their steps at the zoo's batch, the largest of their learning rates, the experts'
  replay; workbench.lm.zoo.finetune_multitask), trained with the run seed. Its weights are kept in
  baselines/multitask.safetensors, the one model of a run worth storing (it costs K expert trainings).

Files: baselines.json (what each baseline is, its settings and test scores), scores.json (the comparison per
task: CycleQD's best vs each baseline, and whether it beats each one). `report(...)` puts several runs'
scores.json together: per task and model the mean, sample standard deviation, min and max over runs, and how
many runs CycleQD beats each baseline in.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from workbench.checks import shell_path
from workbench.runs import Run, write_json

if TYPE_CHECKING:
    from workbench.qd.cycle import CycleQD

MULTITASK_FILE = "baselines/multitask.safetensors"
MULTITASK_TIMING = "baselines/multitask.json"  # the fine-tune's wall time (not in the weights' file)


def load_recipe(path: str | Path, zoo):
    """A merge recipe (mergekit YAML or DFS JSON) whose models are all in the zoo; one error naming the flag."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--merge-recipe: no file {path} (give the recipe.yaml or dfs.json of a merge evolve run)")
    try:
        if path.suffix == ".json":
            from workbench.merge.dfs import DFSRecipe

            recipe = DFSRecipe.load(path)
            names = list(recipe.models)
        else:
            from workbench.merge.recipe import Recipe

            recipe = Recipe.from_yaml(path).validate()
            names = recipe.model_names()
    except (ValueError, TypeError, KeyError, OSError) as error:
        raise ValueError(f"--merge-recipe {path}: not a usable merge recipe ({error})") from None
    missing = [n for n in names if n not in zoo.names]
    if missing:
        raise ValueError(f"--merge-recipe {path} merges {missing}, which zoo {zoo.path} lacks (it has "
                         f"{', '.join(zoo.names)})")
    return recipe


def test_sets(ctx):
    """The run's test prompts: n_test per task from held-out stream seed + 1, the validation prompts left out
    (workbench.lm.evaluation.test_sets)."""
    from workbench.lm.evaluation import test_sets as disjoint_test_sets

    cfg = ctx.cfg
    return disjoint_test_sets(ctx.tokenizer, cfg.tasks, cfg.n_test, cfg.n_eval, cfg.seed)


def best_per_task(qd: CycleQD) -> dict[str, int]:
    """Task -> id of archive task's elite with the highest score on task (ties: the lowest id)."""
    out = {}
    for task in qd.tasks:
        ids, _, quality = qd.archives.elites(task)
        order = np.lexsort((ids, -quality))
        out[task] = int(ids[order[0]])
    return out


def best_overall(qd: CycleQD) -> int:
    """Id of the elite (of any archive) with the highest mean validation score over the tasks (ties: the lowest
    id): CycleQD's one model for all tasks."""
    ids = qd.live_ids()
    means = [float(np.mean([qd.scores(i)[t] for t in qd.tasks])) for i in ids]
    return int(ids[int(np.argmax(means))])


def task_arithmetic(theta0: dict, experts: list[dict]) -> dict:
    """θ0 + Σ_k (θ_k − θ0) on floating tensors (others: θ0's)."""
    out = {}
    for name, base in theta0.items():
        if not base.is_floating_point():
            out[name] = base
            continue
        delta = sum(e[name] - base for e in experts)
        out[name] = base + delta
    return out


def recipe_scores(ctx, path: str, sets, seed: int = 0) -> dict[str, float]:
    """Test scores of a merge recipe applied to the zoo (DARE drops, if any, seeded with `seed`: the one the
    recipe was saved with, merge.recipe.recipe_seed)."""
    recipe = load_recipe(path, ctx.zoo)
    if Path(path).suffix == ".json":
        from workbench.merge.dfs import build_dfs_model

        model = build_dfs_model(recipe, {m: ctx.zoo.model(m, device=ctx.device) for m in recipe.models})
        return sets.score(model.eval(), "forced")
    from workbench.merge.recipe import apply_recipe

    return ctx.score(apply_recipe(recipe, ctx.zoo.state_dict, seed=seed, device=ctx.device), sets)


def multitask_model(run: Run, ctx, steps: int, lr: float,
                    progress: Callable[[int], None] | None = None) -> tuple[dict, dict]:
    """The multi-task baseline's weights and training record: read back from the run folder when a finish is
    redone with the same settings, else trained (and written, atomically; progress(k) after every k steps)."""
    from safetensors.torch import load_file

    from workbench.atomic import save_safetensors
    from workbench.lm.zoo import finetune_multitask

    cfg = ctx.cfg
    record = {"steps": int(steps), "lr": float(lr), "seed": cfg.seed, "tasks": list(cfg.tasks),
              "batch": int(ctx.zoo.info["config"]["batch"]), "device": str(ctx.device)}
    path = run.path / MULTITASK_FILE
    if path.is_file():
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
        if all(meta.get(k) == str(v) for k, v in record.items()):
            timing = run.read_json(MULTITASK_TIMING) or {}  # files written before it kept seconds in the metadata
            seconds = float(timing.get("seconds", meta.get("seconds", "nan")))
            return load_file(path), {**record, "seconds": seconds, "reused": True}
    start = time.perf_counter()
    theta = finetune_multitask(ctx.zoo, list(cfg.tasks), steps=steps, lr=lr, seed=cfg.seed, device=ctx.device,
                               progress=progress)
    seconds = time.perf_counter() - start
    path.parent.mkdir(exist_ok=True)
    # the weights' file holds what made them, the same bytes for the same run; its wall time goes beside it
    save_safetensors({k: v.contiguous() for k, v in theta.items()}, path, {k: str(v) for k, v in record.items()})
    write_json(run.path / MULTITASK_TIMING, {"seconds": round(seconds, 2)})
    return theta, {**record, "seconds": round(seconds, 2), "reused": False}


def finish_run(run: Run, cfg, ctx, qd, models: dict[int, dict], say: Callable[[str], None] | None = None) -> None:
    """Final files of a run: the pyribs archives, then baselines.json and scores.json (test prompts). say(text)
    tells what it is doing (the loop's bar is full by then: a minute of this looked like a hang)."""
    from workbench.lm.zoo import multitask_budget
    from workbench.qd.pyribs import write_pyribs
    from workbench.threads import torch_threads

    say = say or (lambda text: None)
    write_pyribs(run.path / "pyribs", qd.archives, {r["id"]: r["scores"] for r in qd.records})
    say("test scores of the best models and the baselines …")
    sets = test_sets(ctx)
    tasks = list(cfg.tasks)
    with torch_threads(cfg.threads):
        cache = dict(models)
        best = best_per_task(qd)
        cycleqd = {}
        for task, i in best.items():
            theta = ctx.rebuild(i, qd.child, cache)
            record = qd.records[i]
            cycleqd[task] = {"id": i, "generation": record["generation"], "seed_expert": record["seed_expert"],
                             "validation": record["scores"], "test": ctx.score(theta, sets)}
        single = best_overall(qd)
        record = qd.records[single]
        overall = {"id": single, "generation": record["generation"], "seed_expert": record["seed_expert"],
                   "validation": record["scores"], "test": ctx.score(ctx.rebuild(single, qd.child, cache), sets)}
        test = {"base": ctx.score(ctx.theta0, sets),
                "experts": {t: ctx.score(ctx.seeds[t], sets) for t in tasks},
                "task_arithmetic": ctx.score(task_arithmetic(ctx.theta0, [ctx.seeds[t] for t in tasks]), sets)}
        what = {"base": f"the zoo's base model {cfg.base!r}",
                "experts": "each seed expert (the zoo's model named after the task)",
                "task_arithmetic": "merging alone: θ0 + Σ_k τ_k of the K seed experts (λ = 1)"}
        settings: dict = {}
        if cfg.merge_recipe:
            from workbench.merge.recipe import recipe_seed

            seed = recipe_seed(cfg.merge_recipe) or 0  # its DARE drops as the run that evolved it drew them
            test["merge_recipe"] = recipe_scores(ctx, cfg.merge_recipe, sets, seed)
            what["merge_recipe"] = f"the merge evolve recipe {Path(cfg.merge_recipe).name}"
            settings["merge_recipe"] = {"path": str(cfg.merge_recipe), "dare_seed": seed}
    steps, lr = multitask_budget(ctx.zoo, tasks)
    steps = steps if cfg.multitask_steps is None else cfg.multitask_steps
    if steps > 0:
        done = [0]

        def trained(k: int) -> None:
            done[0] += k
            say(f"multi-task baseline: step {done[0]}/{steps} …")

        say(f"multi-task baseline: step 0/{steps} …")
        theta, record = multitask_model(run, ctx, steps, lr, progress=trained)
        say("test scores of the multi-task baseline …")
        with torch_threads(cfg.threads):
            test["multitask"] = ctx.score(theta, sets)
        what["multitask"] = (f"the base fine-tuned on the mixed data of {', '.join(tasks)} for {steps} steps "
                             f"(= the K expert trainings' steps) at lr {lr:g}")
        settings["multitask"] = {**record, "weights": MULTITASK_FILE}
    split = (f"test: {cfg.n_test} prompts per task from held-out stream {cfg.seed + 1}, the validation prompts "
             f"(stream {cfg.seed}) left out")
    write_json(run.path / "baselines.json", {"tasks": tasks, "split": split, "what": what, "settings": settings,
                                             "test": test})
    per_task, beats = {}, {}
    for t in tasks:
        row = {"cycleqd": cycleqd[t]["test"][t], "cycleqd_one_model": overall["test"][t], "base": test["base"][t],
               "expert": test["experts"][t][t]}
        row.update({name: test[name][t] for name in ("task_arithmetic", "merge_recipe", "multitask") if name in test})
        per_task[t] = row
        beats[t] = {name: row["cycleqd"] > value for name, value in row.items() if not name.startswith("cycleqd")}
    scores = {"tasks": tasks, "split": split, "n_test": {t: len(sets.items[t][1]) for t in tasks},
              "method": "forced (teacher-forced exact match)", "cycleqd": cycleqd, "cycleqd_one_model": overall,
              "per_task": per_task, "beats": beats, "baselines": list(what)}
    write_json(run.path / "scores.json", scores)
    run.update(status="done", test_scores={t: per_task[t]["cycleqd"] for t in tasks})


def report(runs: list[Run]) -> dict:
    """Several finished qd runs (e.g. seeds) side by side: per task and model, the test scores of each run,
    their mean, sample standard deviation, min and max; per baseline how many runs CycleQD's best beats it in,
    with the mean ± std of the margin; and in how many runs that best model is a seed expert itself. `differs`
    lists the flags of the settings other than the seed (and device, threads) in which the runs differ: their spread
    mixes them. A run that repeats an earlier one's seed (of the same setting) is the same computation again: it
    counts once (`repeats`: its id -> the id counted; `counted`: the runs the statistics are over)."""
    import json

    loaded = []
    for run in runs:
        path = run.path / "scores.json"
        if not path.is_file():
            raise ValueError(f"run {run.id} has no scores.json (status {run.status}); finish it first "
                             f"(`workbench qd cycle --resume {run.id} --runs {shell_path(run.path.parent)}`)")
        loaded.append(json.loads(path.read_text()))
    tasks = loaded[0]["tasks"]
    other = [r.id for r, s in zip(runs, loaded, strict=True) if s["tasks"] != tasks]
    if other:
        raise ValueError(f"runs {other} have other tasks than {tasks}; report runs of one setting together")

    def stats(values: list[float]) -> dict:
        v = np.asarray(values, np.float64)
        return {"values": [float(x) for x in v], "mean": float(v.mean()),
                "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "min": float(v.min()), "max": float(v.max())}

    from workbench.compare import CONTEXT_KEYS, REPLICATE_KEYS, differing_settings, repeats_of

    ids = [r.id for r in runs]
    if len(set(ids)) < len(ids):
        raise ValueError(f"run {next(i for i in ids if ids.count(i) > 1)} is named more than once; give each run once")
    # runs that differ by more than their seed (and where they ran) make a spread that mixes settings: said, not hidden
    from workbench.qd.run import FLAGS

    mixed = [k.removeprefix("config.") for k in differing_settings([r.info for r in runs])
             if k not in REPLICATE_KEYS and k not in CONTEXT_KEYS]
    mixed = [FLAGS.get(k.split(".")[0], k) for k in mixed]  # as typed: --n-eval, --range (ranges.sort)
    # a run of the same settings and seed as an earlier one is the same computation again: counted once (whether or
    # not other runs of the report differ in their settings)
    repeats = {runs[i].id: runs[j].id for i, j in repeats_of([r.info for r in runs]).items()}
    counted = [i for i in ids if i not in repeats]
    loaded = [s for i, s in zip(ids, loaded, strict=True) if i not in repeats]
    out: dict = {"runs": ids, "seeds": [r.info.get("seed") for r in runs], "tasks": tasks,
                 "differs": mixed, "repeats": repeats, "counted": counted, "per_task": {}}
    out["missing"] = {}
    for t in tasks:
        every = list(dict.fromkeys(m for s in loaded for m in s["per_task"][t]))
        models = [m for m in every if all(m in s["per_task"][t] for s in loaded)]
        if len(models) < len(every):  # e.g. multitask where a run had --multitask-steps 0: said, not dropped unseen
            out["missing"][t] = [m for m in every if m not in models]
        entry = {m: stats([s["per_task"][t][m] for s in loaded]) for m in models}
        versus = {}
        for m in models:
            if m.startswith("cycleqd"):  # CycleQD's own models are listed, not beaten (as in scores.json's beats)
                continue
            margin = [s["per_task"][t]["cycleqd"] - s["per_task"][t][m] for s in loaded]
            versus[m] = {"wins": int(sum(x > 0 for x in margin)), "runs": len(margin),
                         "margin": stats(margin)}
        seeds = sum(s["cycleqd"][t].get("seed_expert") is not None for s in loaded)
        out["per_task"][t] = {"scores": entry, "cycleqd_vs": versus, "best_is_a_seed_expert": seeds}
    return out
