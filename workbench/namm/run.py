"""NAMM training runs in the run store (`workbench namm train`, run kind "namm"): CMA-ES generations checkpointed
one by one, resumable bit for bit after a kill, the policy (CMA mean θ + frozen statistics) saved as it goes.

    cfg = NAMMTrainConfig(model="smollm2", tasks=["passkey", "kv"], gens=12, pop=8, seed=0)
    run = train_namm(cfg, RunStore("runs"))          # or train_namm(None, store, resume="<run-id>")

Each iteration is one generation (workbench.namm.train): the first one also runs the full cache on the first
task's training pool as NAMM with θ = 0, collecting and freezing the normalisation statistics, and scores the full
cache on every other task's pool (the fitness' denominators, per prompt).
Then the population is asked, evaluated (locally or on Dask), told, and the checkpoint (the optimiser with its
random generator, statistics, full-cache scores, tables) written atomically.

Run folder (kind "namm"):

    run.json              config (cma, pop, n_up, variant, tasks, ...), elite ratio, μ, σ0, status, heartbeat
    metrics.parquet       per generation: stage, active tasks, fitness max / mean / min, best fitness of the
                          stage so far, kept fraction (population mean, best candidate), the best candidate's
                          score per task, the tasks whose denominator fell back to the pool's mean
                          (full_fallback, runs that draw their prompts; workbench.namm.train), σ, seconds
    evaluations.parquet   every candidate: generation, index, fitness, kept fraction, score per task
    checkpoint.json+.npz  optimiser (cmaes_state), statistics, full-cache scores: JSON + arrays, no pickle
    policy.safetensors    the CMA mean θ + frozen (mean, var) + metadata (model, n_up, variant, tasks, run),
                          rewritten after every generation (the final policy at the end)
    scores.json           at the end: full cache vs the policy on n_test test prompts per task, kept fraction

The metric is fitness (higher is better; run.json's best_loss is −best fitness of the current stage: fitness
values of different stages average different tasks).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from workbench.checkpoint import cmaes_from_state, cmaes_state
from workbench.checks import checked_again
from workbench.fast_cma import as_fast_cma
from workbench.namm.legacy import PREDATES
from workbench.namm.saved import POLICY_FILE, save_policy
from workbench.namm.tasks import check_prompts
from workbench.namm.train import (
    ELITE_RATIO,
    FLAGS,
    SPEC_POPULATION,
    NAMMTrainConfig,
    context,
    denominator,
    evaluate_population,
    fitness,
    new_search,
)
from workbench.runs import (
    Run,
    RunError,
    RunStore,
    as_run_did,
    check_resume,
    checkpointed_loop,
    record_resume,
    releases_claims,
    setting_up,
    write_json,
)

if TYPE_CHECKING:
    import distributed

KIND = "namm"
#: why a finished run cannot go on to more --gens (runs.check_resume's fixed)
FIXED = ("gens", "its curriculum and its CMA-ES were set up for the stages --gens was divided into")
METRIC = "fitness"



def read_config(config: dict) -> NAMMTrainConfig:
    """A stored run's config, settings newer than the run (PREDATES) as the run did them."""
    return NAMMTrainConfig(**as_run_did(config, PREDATES))


def _describe(cfg: NAMMTrainConfig) -> tuple[str, str]:
    """The catalog's two describing columns: the tasks, the model (its folder name for a path)."""
    from pathlib import Path

    return "+".join(cfg.tasks), Path(cfg.model).name or cfg.model


def model_key(model) -> str:
    """The model a NAMM run was trained on, by its weights (workbench.experts.model.weights_key of its state dict):
    its path alone let a resume, `figure namm` and the NAMM page take whatever model now lies there (a rebuilt or
    replaced folder at the path a moved run recorded) without a word. Hashed once per model object and kept on it
    (NAMM never changes a model's weights; the page and a run's Context share their loaded models)."""
    from workbench.experts.model import weights_key

    if getattr(model, "_workbench_weights_key", None) is None:
        model._workbench_weights_key = weights_key(model.state_dict())
    return model._workbench_weights_key


def check_model_key(run_id: str, recorded: str | None, model: str, key: str) -> None:
    """Refuse run `run_id`, trained on the model whose key is `recorded` (its run.json's or policy's model_key),
    where the model now at `model` has another `key`; a run without one (made before runs recorded it) passes."""
    if recorded and recorded != key:
        raise RunError(f"run {run_id} was trained on another model than the one now at {model} (its weights "
                       f"differ: key {key[:12]}… ≠ the run's {recorded[:12]}…): its θ and feature statistics belong "
                       "to that model; put the run's own model there")


def policy_meta(cfg: NAMMTrainConfig, run: Run, generation: int) -> dict:
    return {"model": cfg.model, **({"model_key": run.info["model_key"]} if run.info.get("model_key") else {}),
            "n_up": cfg.n_up, "variant": cfg.variant, "tasks": cfg.tasks, "run": run.id,
            "generation": generation, "cma": cfg.cma, "pop": cfg.pop, "seed": cfg.seed, "length": cfg.length,
            **({} if cfg.max_kept is None else {"max_kept": cfg.max_kept})}


@releases_claims
def train_namm(cfg: NAMMTrainConfig | None, store: RunStore | str | Path, resume: str | None = None, *,
               client: distributed.Client | None = None,
               on_iteration: Callable[[int, int, dict], None] | None = None,
               should_stop: Callable[[], bool] | None = None, on_start: Callable[[Run], None] | None = None,
               given: dict | None = None, command: str | None = None, model: str | None = None) -> Run:
    """Train (or resume) a NAMM policy to cfg.gens generations; returns the run (module doc).

    resume: a run id (or unique prefix); cfg may then be None. given: settings given with the resume (config field ->
    value), refused when they contradict the run's. client: a Dask client to evaluate the population on (same results as
    local). command: the command line, kept in run.json. model: with resume, where the run's model is now (a moved
    folder; the CLI's --model), checked by its weights and recorded (workbench.lm.models.check_run_model).
    Callbacks (progress bars, pages): on_start(run) once the run exists, before its first iteration;
    on_iteration(done, total, metrics row) after each stored iteration (a workbench.Progress draws it);
    should_stop() between iterations: True stops the run where it can be resumed."""
    store = RunStore.of(store)
    state = None
    if resume is not None:
        run = store.open(resume)
        check_resume(run, KIND, given or {}, names=FLAGS, predates=PREDATES, fixed=FIXED)
        from workbench.lm.models import reopen_with_model

        run, cfg, state, moved = reopen_with_model(store, run, KIND, "namm train", model, read_config)
        if run.info.get("status") == "done" and moved is None:
            return run
        if state is not None and "cma" not in state and run.info.get("status") != "done":
            raise RunError(f"the checkpoint of run {run.id!r} holds no NAMM search; start a new run instead")
    elif cfg is None:
        raise ValueError("give a NAMMTrainConfig or resume=RUN_ID")
    else:
        cfg = checked_again(cfg)  # a notebook may have set a field since the config was built
    if resume is None:  # prompts that do not fit the model's window: said before a run folder is made
        check_prompts(cfg.model, cfg.tasks, cfg.length, cfg.pool_size(), cfg.seed, cfg.max_new_tokens)
    ctx = context(cfg)  # loads the model: every refusal of the settings came before
    key = model_key(ctx.model)
    if resume is not None:
        from workbench.lm.models import check_resumed_model

        check_resumed_model(run, moved, key)
        if run.info.get("status") == "done":  # its model's new place recorded: it goes no further
            return run
        record_resume(run, command, state)  # (after the model's check: a refused resume is no resume)
    first = None
    if resume is None:  # a task the model cannot solve is refused before a run folder exists, too
        first = {"stats": None, "full": {}}
        _first_scores(cfg, ctx, first)
        tasks, model = _describe(cfg)
        run = store.create(KIND, tasks, model, cfg.to_dict(), cfg.seed, metric=METRIC, command=command)
    with setting_up(run, new=resume is None):
        if resume is None:
            # model_key: the model by its weights, which a resume, `figure namm` and the page check
            run.update(model_key=key, cma=cfg.cma, population=cfg.pop, spec_population=SPEC_POPULATION,
                       elite_ratio=ELITE_RATIO, mu=cfg.pop // 2, sigma0=cfg.sigma, stages=cfg.stages(),
                       threads=cfg.threads)
        if state is None:
            state = {"iteration": 0, "metrics": [], "evaluations": [], "cma": cmaes_state(new_search(cfg)),
                     "stats": None, "full": {}, "best": None, **(first or {})}
        if on_start is not None:
            on_start(run)
        opt = as_fast_cma(cmaes_from_state(state["cma"], copy=False))  # the state is rewritten after each tell

    def step(it: int) -> dict:
        tasks, stage = cfg.active_tasks(it), cfg.stage_of(it)
        start = time.perf_counter()
        prompts = {t: cfg.prompts_of(it, t) for t in tasks}
        if state["stats"] is None:  # a run resumed before its first generation was stored
            _first_scores(cfg, ctx, state)
        for task in tasks:
            if task not in state["full"]:
                state["full"][task] = ctx.full_scores(task)
        full, fallback = zip(*(denominator(state["full"][t], prompts[t], cfg.normalizer) for t in tasks), strict=True)
        stats = (state["stats"]["mean"], state["stats"]["var"])
        full_seconds = time.perf_counter() - start
        xs = np.stack([opt.ask() for _ in range(opt.population_size)])
        scores, kept = evaluate_population(cfg, tasks, xs, stats, prompts, client)
        fit = fitness(cfg, scores, kept, list(full))
        opt.tell([(x, -float(f)) for x, f in zip(xs, fit, strict=True)])
        state["cma"] = cmaes_state(opt, copy=False)  # written out before the next tell: no copy of C and B
        i = int(np.argmax(fit))
        best = state["best"]
        if best is None or best["stage"] != stage or fit[i] > best["fitness"]:
            best = state["best"] = {"stage": stage, "fitness": float(fit[i])}
        per_task = {f"score_{t}": float(scores[i, tasks.index(t)]) if t in tasks else float("nan")
                    for t in cfg.tasks}
        state["evaluations"].extend(
            {"iteration": it, "index": j, "stage": stage, "fitness": float(fit[j]), "kept": float(kept[j]),
             **{f"score_{t}": float(scores[j, tasks.index(t)]) if t in tasks else float("nan") for t in cfg.tasks}}
            for j in range(len(xs)))
        return {"stage": stage, "tasks": "+".join(tasks), "fitness_max": float(fit[i]),
                "fitness_mean": float(fit.mean()), "fitness_min": float(fit.min()), "best_fitness": best["fitness"],
                "best_loss": -best["fitness"], "kept_mean": float(kept.mean()), "kept_best": float(kept[i]),
                **per_task, **({"full_fallback": "+".join(t for t, f in zip(tasks, fallback, strict=True) if f)}
                               if cfg.draws() else {}),
                "sigma": float(opt._sigma), "full_seconds": full_seconds}

    def save_the_policy() -> None:
        """With each save, not each generation: the policy file is the generation run.json and the checkpoint say
        (`namm eval --run`, the page), never one that a kill leaves for its resume to do again."""
        stats = (state["stats"]["mean"], state["stats"]["var"])
        save_policy(run.path / POLICY_FILE, opt.mean, stats, policy_meta(cfg, run, state["iteration"]))

    return checkpointed_loop(run, state, cfg.gens, step, lambda: finish(run, cfg, opt, state),
                             should_stop=should_stop, on_iteration=on_iteration, on_save=save_the_policy)


def _first_scores(cfg: NAMMTrainConfig, ctx, state: dict) -> None:
    """Fill state's "stats" (θ = 0 keeps every token: the first stage's task scored with the feature statistics
    collected, its scores the full cache's) and every task's per-prompt full-cache scores ("full"), before the first
    generation: a task the model cannot solve stops the run here (_check_full), not stages later."""
    task = cfg.active_tasks(0)[0]
    scores, mean, var, count = ctx.collect_stats(task, list(range(cfg.pool_size())))
    state["stats"] = {"mean": mean, "var": var, "count": count}
    state["full"][task] = scores
    for other in cfg.tasks:
        if other not in state["full"]:
            state["full"][other] = ctx.full_scores(other)
    _check_full(cfg, state["full"])


def _check_full(cfg: NAMMTrainConfig, full: dict[str, list[float]]) -> None:
    zero = [t for t in cfg.tasks if not np.mean(full[t]) > 0]
    if zero:
        raise ValueError(f"the full cache scores 0 on the {cfg.pool_size()} training prompts of task(s) "
                         f"{', '.join(map(repr, zero))}, so a normalised score is undefined: choose tasks the model "
                         f"solves (--tasks), a shorter --length or more {'--pool' if cfg.pool else '--prompts'}")


def finish(run: Run, cfg: NAMMTrainConfig, opt, state: dict) -> None:
    """The final policy (CMA mean), every candidate's evaluation, and the test scores vs the full cache."""
    ctx = context(cfg)
    run.write_table("evaluations", state["evaluations"])
    stats = (state["stats"]["mean"], state["stats"]["var"])
    save_policy(run.path / POLICY_FILE, opt.mean, stats, policy_meta(cfg, run, cfg.gens))
    scores = {"split": f"test (seed {cfg.seed}, n {cfg.n_test}, length {cfg.length})", "tasks": {}}
    for task in cfg.tasks if cfg.n_test else ():
        full = ctx.full_scores(task, "test", cfg.n_test)
        res = ctx.run(task, ctx.policy(opt.mean, stats), "test", cfg.n_test)
        scores["tasks"][task] = {"full": float(np.mean(full)), "namm": res.score, "kept": res.kept}
    write_json(run.path / "scores.json", scores)
    run.update(status="done", test_scores={t: s["namm"] for t, s in scores["tasks"].items()},
               test_kept={t: s["kept"] for t, s in scores["tasks"].items()})
