"""CycleQD runs in the run store (`workbench qd cycle`): the ask/tell loop of workbench.qd.cycle on a model zoo,
checkpointed every generation, resumable bit for bit, evaluated serially or on Dask, with baselines at the end.

    cfg = QDRunConfig(zoo="data/zoo", tasks=["sort", "reverse", "brackets"], gens=100, seed=0)
    run = run_cycleqd(cfg, RunStore("runs"))            # or run_cycleqd(None, store, resume="<run-id>")

Generation 0 scores the zoo's seed experts (the model named after each task), generation g >= 1 breeds
`batch` children from the archive of task tasks[g mod K] (crossover of two elites' task vectors, then SVD or
Gaussian mutation) and scores each on every task: exact match on `n_eval` validation prompts per task
(held-out stream `seed`, teacher-forced: one forward pass per task on the zoo's character tokenizer). Scores
are binned on each task's fixed range (`ranges`, default (0, 1)) into `bins` bins.

Batches: the B children of a generation are drawn from the archives as they stand at its start (child i from
SeedSequence([seed, g, i])) and told in index order (workbench.qd.cycle), so a serial run and a Dask run of the
same B are the same run. Dask workers get each child either as its lineage, rebuilt on the worker from the seed
experts with a per-worker cache of the live elites it built (`transfer="lineage"`, the default: a task carries
the kept models' records, a few kB, and a build costs milliseconds) or as weights built here and shipped
(`transfer="weights"`, ~1.4 MB per child of the default zoo). `workbench bench qd` times both: on the 2-core
VM lineage was faster (0.57 against 0.67 s per generation of 4 children; docs/benchmarks.md). Every process
evaluates with `threads` torch threads (default 1), so the floats, and hence the archives, do not depend on where
a child was scored.

Storage stays bounded: no child's weights are stored. A model is its lineage (parents, ω, mutation seed; see
workbench.qd.lineage), rebuilt bit for bit from the seed experts; a resumed run rebuilds its live elites that
way. Run folder (kind "qd"):

    run.json                     config (method: which sampling / mutation ran; seed experts), status
    checkpoint.json + .npz       the CycleQD state (records, archives, snapshots): JSON + arrays, no pickle
    metrics.parquet              per generation: coverage / qd_score / max_quality per archive and in all
    children.parquet             every evaluated model: lineage, scores on all tasks, archives entered, draws
    archives.parquet             archive snapshots: one row per filled cell per generation
    archive_maps/gen{N}_archive_map.json   the reference's archive file, every generation
    pyribs/<task>.parquet        the final archives as pyribs ArchiveDataFrames (workbench.qd.pyribs)
    baselines.json, scores.json  test scores of the best model per task vs the baselines (workbench.qd.baselines)
    baselines/multitask.safetensors   the multi-task fine-tuned baseline (the one set of weights kept: it costs
                                 K expert trainings to remake)
    inputs/<recipe>              a copy of --merge-recipe, hashed
"""

from __future__ import annotations

import dataclasses
import math
import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from workbench.atomic import replace_dir, staging_dir
from workbench.checks import check_counts, checked_again, paths_as_text
from workbench.qd.archives import DEFAULT_BINS, DEFAULT_RANGE
from workbench.qd.cycle import Child, CycleQD, CycleQDConfig, drawn_parents
from workbench.runs import (
    GrowingTable,
    Run,
    RunError,
    RunStore,
    check_longer,
    check_resume,
    checkpointed_loop,
    record_resume,
    releases_claims,
    setting_up,
    write_json,
)
from workbench.threads import torch_threads

if TYPE_CHECKING:
    import distributed

KIND = "qd"
METRIC = "qd_score"
TRANSFERS = ("weights", "lineage")
#: QDRunConfig fields and the `workbench qd cycle` flags that set them, for errors and resume conflicts.
FLAGS = {"zoo": "--zoo", "tasks": "--tasks", "base": "--base", "gens": "--gens", "batch": "--batch",
         "sampling": "--sampling", "mutation": "--mutation", "mutation_scale": "--mutation-scale",
         "ranges": "--range", "bins": "--bins", "seed": "--seed", "n_eval": "--n-eval", "n_test": "--n-test",
         "multitask_steps": "--multitask-steps", "merge_recipe": "--merge-recipe", "transfer": "--transfer",
         "threads": "--threads"}


@dataclass
class QDRunConfig:
    """The settings of a stored CycleQD run (all recorded in run.json).

    Args:
        zoo: the zoo folder (`workbench zoo build`): its base and one expert per task, named after the task.
        tasks: K >= 2 distinct tasks, in the order that defines the archives' axes.
        gens: generations after generation 0 (which scores the seed experts).
        batch: children per generation (B), evaluated together (in parallel on Dask).
        sampling: "elite" (the paper) or "uniform" (ablation). mutation: "svd" (the paper) or "gaussian".
        mutation_scale: κ of the SVD mutation or σ of the Gaussian one (None: 0.1 / 3e-4).
        ranges: task -> fixed [lo, hi] its score is binned on (tasks left out: [0, 1]).
        bins: bins per task (15 in the reference).
        seed: the run seed (every draw; validation prompts use held-out stream `seed`, test prompts `seed + 1`).
        n_eval: validation prompts per task per child. n_test: test prompts per task for the final report.
        base: the zoo's base model (θ0 of the task vectors).
        multitask_steps: training steps of the multi-task baseline (None: the sum of the K experts' steps, the
            compute of K expert trainings; 0: no multi-task baseline).
        merge_recipe: a recipe of `workbench merge evolve` (recipe.yaml or dfs.json) to score as a baseline.
        transfer: how Dask workers get a child: "weights" or "lineage" (results are the same).
        threads: torch threads per evaluating process (part of the reproducibility contract).
        device: "cpu", "cuda", "cuda:N"; None: the GPU when the process sees one.
    """

    zoo: str = "data/zoo"
    tasks: list[str] = field(default_factory=lambda: ["sort", "reverse", "brackets"])
    gens: int = 50
    batch: int = 1
    sampling: str = "elite"
    mutation: str = "svd"
    mutation_scale: float | None = None
    ranges: dict[str, list[float]] | None = None
    bins: int = DEFAULT_BINS
    seed: int = 0
    n_eval: int = 64
    n_test: int = 128
    base: str = "base"
    multitask_steps: int | None = None
    merge_recipe: str | None = None
    transfer: str = "lineage"
    threads: int = 1
    device: str | None = None

    def __post_init__(self):
        from workbench.lm.tasks import TASKS

        paths_as_text(self, "zoo", "merge_recipe")
        if isinstance(self.tasks, str):
            self.tasks = [self.tasks]
        self.tasks = list(self.tasks)
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"--tasks: unknown task{'s' if len(unknown) > 1 else ''} "
                             f"{', '.join(map(repr, unknown))}; choose from {', '.join(TASKS)}")
        twice = sorted({t for t in self.tasks if self.tasks.count(t) > 1})
        if twice:
            raise ValueError(f"--tasks: {', '.join(map(repr, twice))} listed twice in {' '.join(self.tasks)}; "
                             f"list each task once")
        if len(self.tasks) < 2:
            example = " ".join(dict.fromkeys([*self.tasks, "sort", "brackets"]))
            raise ValueError(f"--tasks: CycleQD needs at least 2 tasks (each archive is indexed by the other "
                             f"tasks' scores), got {' '.join(self.tasks) or 'none'}; add a task, e.g. --tasks "
                             f"{example}")
        self.ranges = _check_ranges(self.tasks, self.ranges)
        check_counts(self, ("gens", "batch", "bins", "n_eval", "n_test", "threads"), FLAGS)
        check_counts(self, ("seed",), FLAGS, at_least=0)
        from workbench.qd.archives import check_bins

        check_bins(self.bins, len(self.tasks), "--bins")  # archives of bins^(K-1) cells: a grid each, in memory
        if self.multitask_steps is not None:
            if isinstance(self.multitask_steps, bool) or not isinstance(self.multitask_steps, Integral) \
                    or self.multitask_steps < 0:
                raise ValueError(f"--multitask-steps must be an integer >= 0 (0: no multi-task baseline), got "
                                 f"{self.multitask_steps!r}")
            self.multitask_steps = int(self.multitask_steps)
        if self.transfer not in TRANSFERS:
            raise ValueError(f"--transfer must be one of {', '.join(TRANSFERS)}, got {self.transfer!r}")
        if self.device is not None:
            self.device = str(self.device)
        if self.merge_recipe is not None:
            self.merge_recipe = str(self.merge_recipe)
        from workbench.qd.operators import MUTATIONS
        from workbench.qd.sampling import SAMPLERS

        if self.sampling not in SAMPLERS:
            raise ValueError(f"--sampling must be one of {', '.join(SAMPLERS)}, got {self.sampling!r}")
        if self.mutation not in MUTATIONS:
            raise ValueError(f"--mutation must be one of {', '.join(MUTATIONS)}, got {self.mutation!r}")
        if self.mutation_scale is not None and not (isinstance(self.mutation_scale, Real)
                                                    and math.isfinite(self.mutation_scale)
                                                    and self.mutation_scale >= 0):
            raise ValueError(f"--mutation-scale must be a finite number >= 0, got {self.mutation_scale!r}")
        self.mutation_scale = self.cycle_config().mutation_scale   # None -> the method's default, recorded

    def cycle_config(self) -> CycleQDConfig:
        """The loop's configuration (workbench.qd.cycle)."""
        return CycleQDConfig(tasks=tuple(self.tasks), ranges={t: tuple(r) for t, r in self.ranges.items()},
                             bins=self.bins, seed=self.seed, sampling=self.sampling, mutation=self.mutation,
                             mutation_scale=self.mutation_scale, batch=self.batch)

    @property
    def method(self) -> str:
        """Which variant runs, in words (the paper's method or an ablation)."""
        return self.cycle_config().method

    def to_dict(self) -> dict:
        """The config as a plain dict (dataclasses.asdict), as run.json stores it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> QDRunConfig:
        """A config from its dict (run.json's); keys that are no field are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _check_ranges(tasks: list[str], ranges) -> dict[str, list[float]]:
    """Every task's [lo, hi] (DEFAULT_RANGE for those not given), each finite with lo < hi."""
    ranges = dict(ranges or {})
    unknown = [t for t in ranges if t not in tasks]
    if unknown:
        raise ValueError(f"--range names {', '.join(map(repr, unknown))}, not among --tasks {' '.join(tasks)}; "
                         f"fix the task name or add it to --tasks")
    out = {}
    for t in tasks:
        value = ranges.get(t, DEFAULT_RANGE)
        try:
            lo, hi = (float(v) for v in value)
        except (TypeError, ValueError):
            raise ValueError(f"--range {t}: give two numbers LO HI, got {value!r}") from None
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"--range {t} {lo:g} {hi:g}: lo must be below hi (both finite); e.g. --range {t} 0 1")
        out[t] = [lo, hi]
    return out


def check_inputs(cfg: QDRunConfig) -> None:
    """Everything a run needs that is not in its config, checked before anything is written or loaded: the zoo,
    its base, one seed expert per task, the merge recipe and its models."""
    from workbench.lm.zoo import load_zoo

    zoo = load_zoo(cfg.zoo)   # names the fix: `workbench zoo build --out ZOO`
    if cfg.base not in zoo.names:
        raise ValueError(f"--base: zoo {cfg.zoo} has no model {cfg.base!r}; it has {', '.join(zoo.names)}")
    missing = [t for t in cfg.tasks if t not in zoo.names]
    if missing:
        experts = [n for n in zoo.names if n != cfg.base]
        raise ValueError(f"--tasks: zoo {cfg.zoo} has no seed expert for {', '.join(map(repr, missing))} (it has "
                         f"experts for {', '.join(experts)}); drop {'them' if len(missing) > 1 else 'it'} from --tasks "
                         f"or build a zoo with them: workbench zoo build --out DIR --tasks "
                         f"{' '.join(dict.fromkeys([*experts, *missing]))}")
    if cfg.merge_recipe is not None:
        from workbench.qd.baselines import load_recipe

        load_recipe(cfg.merge_recipe, zoo)


# --- evaluation, in this process or on a Dask worker ------------------------------------------------------------

class Context:
    """What building and scoring children needs, made once per process (Dask workers keep theirs): the base,
    the seed experts, the SVD factors of their task vectors, one model to load state dicts into, and the
    tokenised validation prompts."""

    def __init__(self, cfg: QDRunConfig):
        from workbench.kernels.device import resolve_device
        from workbench.lm.evaluation import HeldoutSets
        from workbench.lm.zoo import load_zoo
        from workbench.qd.operators import svd_factors, task_vector

        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.zoo = load_zoo(cfg.zoo)
        with torch_threads(cfg.threads):
            self.theta0 = self.zoo.state_dict(cfg.base)
            self.seeds = {t: self.zoo.state_dict(t) for t in cfg.tasks}   # seed expert name = task name
            self.factors = ({t: svd_factors(task_vector(sd, self.theta0)) for t, sd in self.seeds.items()}
                            if cfg.mutation == "svd" else {})
        self.tokenizer = self.zoo.tokenizer()
        self.model = self.zoo.model(cfg.base, device=self.device)
        self.validation = HeldoutSets(self.tokenizer, cfg.tasks, n=cfg.n_eval, seed=cfg.seed, batch_size=128)
        self.cache: dict[int, dict] = {}   # lineage transfer: the models this worker has built, by id

    def build(self, child: Child, models: dict[int, dict]) -> dict:
        """A child's weights from its parents' (or a seed expert's, as stored)."""
        from workbench.qd.lineage import build_child

        if child.is_seed:
            return self.seeds[child.task]
        return build_child(child, self.theta0, [models[p] for p in child.parents], self.factors.get(child.task))

    def rebuild(self, model_id: int, lineage: Callable[[int], Child], cache: dict[int, dict] | None = None) -> dict:
        """A recorded model's weights from its lineage (workbench.qd.lineage.rebuild)."""
        from workbench.qd.lineage import rebuild

        return rebuild(model_id, lineage, self.theta0, self.seeds, self.factors, self.cache if cache is None else cache)

    def score(self, theta: dict, sets=None) -> dict[str, float]:
        """Exact match per task on the validation prompts (or `sets`)."""
        self.model.load_state_dict(theta, strict=True)
        return (sets or self.validation).score(self.model, "forced")


def context(cfg: QDRunConfig) -> Context:
    """This process's Context for cfg (made once: workbench.scale.made_once; the merge recipe, a baseline's alone,
    is no part of it: a new run reads its own copy once it exists, and the Context made before stays the one)."""
    from workbench.scale import made_once

    return made_once(Context, cfg, key={**cfg.to_dict(), "merge_recipe": None})


def score_weights(cfg: QDRunConfig, thetas: list[dict]) -> list[dict[str, float]]:
    """Validation scores of state dicts (a Dask task of the "weights" transfer)."""
    ctx = context(cfg)
    with torch_threads(cfg.threads):
        return [ctx.score(theta) for theta in thetas]


def score_lineage(cfg: QDRunConfig, children: list[dict], lineage: dict[int, dict],
                  keep: list[int]) -> list[dict[str, float]]:
    """Validation scores of children rebuilt here from their lineage (a Dask task of the "lineage" transfer).

    Args:
        cfg: the run's settings (the model zoo, tasks and threads the worker's context is built from).
        children: the children's records (Child fields).
        lineage: id -> record of every model that can be an ancestor (the kept ones).
        keep: ids this worker's cache may keep afterwards (the live elites and the generation's children)."""
    ctx = context(cfg)
    records = {int(i): r for i, r in lineage.items()}
    records.update({int(c["id"]): c for c in children})
    out = []
    with torch_threads(cfg.threads):
        for child in children:
            out.append(ctx.score(ctx.rebuild(int(child["id"]), lambda i: Child.from_dict(records[i]))))
    keep_set = set(keep)
    for i in [i for i in ctx.cache if i not in keep_set]:
        del ctx.cache[i]
    return out


def _chunks(items: list, n: int) -> list[list]:
    """items cut into at most n contiguous runs of (nearly) equal length, in order."""
    size = -(-len(items) // max(1, n))
    return [items[i:i + size] for i in range(0, len(items), size)]


def evaluate_generation(cfg: QDRunConfig, ctx: Context, qd: CycleQD, children: list[Child],
                        models: dict[int, dict], client=None) -> tuple[list[dict], list[dict | None]]:
    """Scores of a generation's children, in order, and their weights where this process built them. On Dask
    the children go out as one task per worker (contiguous runs, gathered back in order)."""
    workers = 1 if client is None else max(1, len(client.scheduler_info()["workers"]))
    if client is None or cfg.transfer == "weights":
        with torch_threads(cfg.threads):
            thetas = [ctx.build(c, models) for c in children]
            if client is None:
                return [ctx.score(t) for t in thetas], thetas
        parts = _chunks(thetas, workers)
        futures = client.map(score_weights, [cfg] * len(parts), parts, pure=False)
        return [s for part in client.gather(futures) for s in part], thetas
    kept = _kept_records(qd)
    keep = sorted({*qd.live_ids(), *(c.id for c in children)})
    parts = _chunks([c.to_dict() for c in children], workers)
    futures = client.map(score_lineage, [cfg] * len(parts), parts, [kept] * len(parts), [keep] * len(parts),
                         pure=False)
    return [s for part in client.gather(futures) for s in part], [None] * len(children)


def _lineage_record(record: dict) -> dict:
    return {k: record[k] for k in (f.name for f in dataclasses.fields(Child))}


#: per CycleQD (weakly: a finished run's goes with it), the lineage records of its kept models, and how many
#: records were looked at: a model's record and whether it was kept never change once told, so each generation adds
#: its own children's (qd.records copied every record of the run, every generation: 40 ms at 8,000 models)
_KEPT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _kept_records(qd: CycleQD) -> dict[int, dict]:
    kept, seen = _KEPT.get(qd, ({}, 0))
    if seen > qd.evaluated:
        kept, seen = {}, 0
    kept.update({r["id"]: _lineage_record(r) for r in qd.records_since(seen) if r["kept"]})
    _KEPT[qd] = (kept, qd.evaluated)
    return dict(kept)  # the caller's: what a task ships is this generation's set, whatever later ones add


# --- the run ------------------------------------------------------------------------------------------------------

@releases_claims
def run_cycleqd(cfg: QDRunConfig | None, store: RunStore | str | Path, resume: str | None = None,
                client: distributed.Client | None = None,
                on_iteration: Callable[[int, int, dict], None] | None = None,
                should_stop: Callable[[], bool] | None = None, on_start: Callable[[Run], None] | None = None,
                *, given: dict | None = None, device: str | None = None, command: str | None = None,
                gens: int | None = None, on_phase: Callable[[str], None] | None = None) -> Run:
    """Run (or resume) CycleQD to generation cfg.gens; returns the run.

    resume: a run id (or a unique prefix); cfg may then be None. given: settings that must equal the resumed
    run's (config field names, "ranges.<task>" for a range; else one error naming each difference by its flag),
    but for "gens": another total, down to what the run has done (a finished run goes on from its last
    checkpoint, a stopped one ends there, each as a run started with that total would have: runs.new_total);
    gens=N (with resume) asks the same. cfg is not read on a resume.
    on_iteration(done, total, metrics row) after each generation is stored (done counts generation 0 too, so
    total = gens + 1). device, when given, replaces cfg.device (a resumed run's too; it then continues as a run on
    that device would). command: the command line, kept in run.json. Metric: the QD score summed over the
    archives (higher is better; best_loss in run.json is its negative). client: a Dask client to evaluate
    children on (the same results as without). on_start(run) once the run exists; should_stop() between
    generations: True stops the run where it can be resumed. on_phase(text) says what the run's end (its test
    scores and baselines, after the last generation) is doing."""
    store = RunStore.of(store)
    gens = check_longer(resume, gens, "gens")
    if resume is not None:
        run = store.open(resume)
        given = {**(given or {}), **({"gens": gens} if gens is not None else {})}
        moved = run_zoo(run, given.pop("zoo", None))  # the run's zoo, wherever it is now (checked by content)
        check_resume(run, KIND, given, names=flag_names(run.info["config"]), extends="gens")
        run, cfg, state, total = store.reopen_to(run, QDRunConfig.from_dict, (KIND,), "gens", given.get("gens"))
        from workbench.lm.zoo import record_zoo

        cfg = dataclasses.replace(cfg, zoo=moved)
        if total is not None:
            cfg = dataclasses.replace(cfg, gens=total)
        elif run.info.get("status") == "done":
            record_zoo(run, moved)  # where it is now, so that its exports, page and later resumes find it, by content
            return run
        if state is not None and not isinstance(state.get("qd"), CycleQD):
            raise RunError(f"the checkpoint of run {run.id!r} holds no CycleQD state; start a new run instead")
        run.check_copied("merge_recipe", cfg.merge_recipe)
        copy = run.input_path("merge_recipe")
        if copy is not None:
            cfg = dataclasses.replace(cfg, merge_recipe=str(copy))
    elif cfg is None:
        raise ValueError("give a QDRunConfig or resume=RUN_ID")
    else:
        # a notebook may have set a field since the config was built; the zoo as the run records it (read from
        # anywhere later), before the context is built on it
        cfg = checked_again(cfg)
        check_inputs(cfg)
        cfg = dataclasses.replace(cfg, zoo=os.path.abspath(os.path.expanduser(cfg.zoo)))
        state = None
    if device is not None:
        cfg = dataclasses.replace(cfg, device=str(device))
    ctx = context(cfg)   # fails fast on a missing device or model
    if resume is not None:  # once the zoo and the device are there: a resume that failed left no entry
        record_zoo(run, moved)  # (and its zoo's place recorded: a zoo that failed to load is not the run's)
        record_resume(run, command, state, key="from_generation", extends="gens", total=total)
    if resume is None:
        config = cfg.to_dict()
        if cfg.merge_recipe:   # the run keeps its own copy (hashed), not a path into the user's files
            config["merge_recipe"] = f"inputs/{Path(cfg.merge_recipe).name}"
        run = store.create(KIND, cfg.sampling + "+" + cfg.mutation, "+".join(cfg.tasks), config, cfg.seed,
                           metric=METRIC, command=command,
                           inputs={"merge_recipe": cfg.merge_recipe} if cfg.merge_recipe else None)
    with setting_up(run, new=resume is None):
        if resume is None:
            if cfg.merge_recipe:  # read from the run's copy, as a resume does (the file given may be gone at the end)
                cfg = dataclasses.replace(cfg, merge_recipe=str(run.input_path("merge_recipe")))
            from workbench.lm.zoo import zoo_fingerprint

            run.update(method=cfg.method, seed_experts={t: t for t in cfg.tasks}, zoo=str(cfg.zoo),
                       zoo_sha256=zoo_fingerprint(cfg.zoo))  # compared runs tell zoos apart by content
        run.update(device=str(ctx.device))
        if state is None:
            state = {"iteration": 0, "qd": CycleQD(cfg.cycle_config(), {t: t for t in cfg.tasks}), "metrics": []}
        qd: CycleQD = state["qd"]
        models: dict[int, dict] = {}
        if client is None or cfg.transfer == "weights":   # the live elites, rebuilt from lineage (bit for bit)
            with torch_threads(cfg.threads):
                for i in qd.live_ids():
                    ctx.rebuild(i, qd.child, models)
            models = {i: models[i] for i in qd.live_ids()}
        files = GenerationFiles(run)
        files.write(qd)   # catch up on files a kill left unwritten
        if on_start is not None:
            on_start(run)

    def step(generation: int) -> dict:
        nonlocal models
        if qd.generation != generation:
            raise RunError(f"run {run.id}: the checkpoint is at generation {qd.generation}, the loop at {generation}")
        children = qd.ask_batch()
        scores, thetas = evaluate_generation(cfg, ctx, qd, children, models, client)
        for child, s, theta in zip(children, scores, thetas, strict=True):
            if qd.tell(child, s) and theta is not None:
                models[child.id] = theta
        live = set(qd.live_ids())
        models = {i: m for i, m in models.items() if i in live}
        return metrics_row(qd)

    def finish() -> None:
        from workbench.qd.baselines import finish_run

        # (the files are written: the last generation is always saved, and a resume's set-up catches them up)
        finish_run(run, cfg, ctx, qd, models, say=on_phase)

    # the files after each save, not each generation: a model children.parquet lists is one the checkpoint holds
    # (the page's and `qd export`'s rebuild), and no archive map is written of a generation a resume does again
    return checkpointed_loop(run, state, cfg.gens + 1, step, finish, should_stop=should_stop,
                             on_iteration=on_iteration, on_save=lambda: files.write(qd))


def flag_names(config: dict) -> dict[str, str]:
    """Config field -> CLI flag, with one "ranges.<task>" entry per task of the config."""
    return {**FLAGS, **{f"ranges.{t}": f"--range {t}" for t in config.get("tasks", [])}}


def metrics_row(qd: CycleQD) -> dict:
    """The metrics of the generation just finished: per archive coverage, QD score and max quality (the best
    score on its task so far), their totals, and best_loss = −(summed QD score) for the run store."""
    m = qd.last_statistics()  # the generation's own (qd.metrics() made arrays of every generation's: O(run))
    told = qd.told_in(int(m["generation"]))  # the generation's own records (every record was copied)
    row: dict = {"generation": int(m["generation"]), "task": m["task"] or "", "evaluated": len(told),
                 "kept": sum(bool(r["kept"]) for r in told)}
    for k, t in enumerate(qd.tasks):
        row[f"coverage_{t}"] = float(m["coverage"][k])
        row[f"qd_score_{t}"] = float(m["qd_score"][k])
        row[f"max_quality_{t}"] = float(m["max_quality"][k])
    row["coverage"] = float(m["coverage"].mean())
    row["qd_score"] = float(m["qd_score"].sum())
    row["best_loss"] = -row["qd_score"]
    return row


# --- files ----------------------------------------------------------------------------------------------------

def children_rows(qd: CycleQD) -> dict[str, list]:
    """children.parquet: one row per evaluated model, in id order: lineage (parents, omegas, mutation seed and
    scale, pool), scores on every task (score_<task>), the archives it entered, kept, and draws_<task> (how often
    it was drawn as a parent from archive <task> so far)."""
    return ChildrenRows().extend(qd)


class ChildrenRows:
    """children_rows as columns, extended by the models told since the last call: a model's row never changes
    but for its draw counts, which grow by the parents of the newer children (rebuilt whole after every
    generation, the rows cost 5.7 ms of Python at generation 1000 and grew with the run; the file is the same
    byte for byte)."""

    FIXED = ("id", "generation", "index", "task", "pool", "seed_expert", "mutation", "mutation_seed", "mutation_scale")

    def __init__(self) -> None:
        self.upto = 0  # models in the columns
        self.tasks: list[str] = []
        self.out: dict[str, list] = {}

    def extend(self, qd: CycleQD) -> dict[str, list]:
        """The rows of models 0 … qd.evaluated − 1 as columns (shared with later calls: write, do not keep)."""
        if self.upto and (self.tasks != qd.tasks or self.upto > qd.evaluated):  # another run's, or one rewound
            self.__init__()
        if not self.upto:
            self.tasks = list(qd.tasks)
            self.out = {k: [] for k in (*self.FIXED, "parents", "omegas", *(f"score_{t}" for t in self.tasks),
                                        "entered", "kept", *(f"draws_{t}" for t in self.tasks))}
        out, tasks = self.out, self.tasks
        for r in qd.records_since(self.upto):
            for k in self.FIXED:
                out[k].append(r[k])
            out["parents"].append([int(p) for p in r["parents"]])
            out["omegas"].append([float(w) for w in r["omegas"]])
            for t in tasks:
                out[f"score_{t}"].append(r["scores"][t])
                out[f"draws_{t}"].append(0)
            out["entered"].append(list(r["entered"]))
            out["kept"].append(bool(r["kept"]))
            for p in drawn_parents(r):  # as CycleQD.draw_counts counts
                out[f"draws_{r['task']}"][p] += 1
        self.upto = len(out["id"])
        return out


def archive_rows(qd: CycleQD) -> dict[str, list]:
    """archives.parquet: every filled cell of every archive after every generation (columns generation, task,
    cell (bin indices along the archive's axes, the other tasks in task order), id, quality)."""
    return ArchiveRows().extend(qd)


class ArchiveRows:
    """archive_rows, built once and extended by the generations finished since the last call: rebuilt from
    generation 0 after every generation, a run's bookkeeping grew as G² (at generation 200, 45 ms of rows against
    an 84 ms evaluation step; 200 generations 23 % faster this way, every file byte-identical)."""

    def __init__(self) -> None:
        self.upto = 0  # generations in the rows
        self.filled: dict[tuple[int, int], int] = {}  # (archive k, flat cell) -> elite id after generation upto - 1
        self.out: dict[str, list] = {"generation": [], "task": [], "cell": [], "id": [], "quality": []}
        self.scores: dict[int, dict[str, float]] = {}  # elite id -> its scores (they never change once told)
        self.grown = GrowingTable()  # the rows as a pyarrow Table (table())

    def extend(self, qd: CycleQD) -> dict[str, list]:
        """The rows of generations 0 … qd.finished − 1 (the columns, shared with later calls: write, do not keep)."""
        if qd.finished < self.upto:  # another run's CycleQD, or one rewound: start again
            self.__init__()
        out, filled, scores, tasks, shape = self.out, self.filled, self.scores, qd.tasks, qd.archives.shape
        for g in range(self.upto, qd.finished):
            for k, cell, i in qd.changes(g).tolist():
                filled[k, cell] = i
                if i not in scores:  # only the new elites' (qd.records copied every record, every generation)
                    scores[i] = qd.scores(i)
            for k, cell in sorted(filled):  # task order, then row-major: as the archives read
                i = filled[k, cell]
                out["generation"].append(g)
                out["task"].append(tasks[k])
                out["cell"].append([int(c) for c in np.unravel_index(cell, shape)])
                out["id"].append(i)
                out["quality"].append(scores[i][tasks[k]])
        self.upto = qd.finished
        return out

    def table(self, qd: CycleQD):
        """extend(qd)'s rows as a pyarrow Table, converted from the rows added since the last call only
        (workbench.runs.GrowingTable: converted whole, the rows of every generation so far cost 121 ms at generation
        1,000, three tasks and 15 bins, and grew with the run)."""
        return self.grown(self.extend(qd))


def archive_maps_dir(run: Run) -> Path:
    return run.path / "archive_maps"


class GenerationFiles:
    """Writes a run's children.parquet, archives.parquet and the archive maps of finished generations not written
    yet, after each checkpoint (a kill in between leaves the previous files, which a resume catches up on: its
    first write checks every map). The rows and the maps written are remembered between writes (ChildrenRows,
    ArchiveRows)."""

    def __init__(self, run: Run) -> None:
        self.run, self.children, self.rows, self.maps_checked = run, ChildrenRows(), ArchiveRows(), 0

    def write(self, qd: CycleQD) -> None:
        from workbench.qd.archive_map import archive_map_path, write_archive_map

        if not qd.evaluated:
            return
        self.run.write_table("children", self.children.extend(qd))
        self.run.write_table("archives", self.rows.table(qd))
        folder = archive_maps_dir(self.run)
        folder.mkdir(exist_ok=True)
        for g in range(min(self.maps_checked, qd.generation), qd.generation):
            path = archive_map_path(folder, g)
            if not path.exists():
                write_archive_map(path, qd.archive_map(g))
        self.maps_checked = qd.generation


def run_zoo(run: Run, zoo: str | None = None) -> str:
    """The zoo folder a qd run reads (for a resume, an export, its page's rebuilds): workbench.lm.zoo.run_zoo."""
    from workbench.lm.zoo import run_zoo as found

    return found(run, zoo, "qd cycle")


def load_run(store: RunStore | str | Path, run_id: str) -> tuple[Run, QDRunConfig, CycleQD]:
    """A qd run's folder, config and CycleQD (from its last checkpoint)."""
    store = RunStore.of(store)
    run = store.open(run_id)
    if run.info.get("kind") != KIND:
        from workbench.runs import _wrong_kind

        raise RunError(_wrong_kind(run, KIND))
    cfg = dataclasses.replace(QDRunConfig.from_dict(run.info["config"]), zoo=run_zoo(run))
    copy = run.input_path("merge_recipe")
    if copy is not None:
        cfg = dataclasses.replace(cfg, merge_recipe=str(copy))
    state = run.load_checkpoint()
    if state is None or not isinstance(state.get("qd"), CycleQD):
        raise RunError(f"run {run.id!r} has no CycleQD checkpoint yet")
    return run, cfg, state["qd"]


def model_id_of(run: Run, qd: CycleQD, model: int | str) -> int:
    """A model of a run: its id (children.parquet's model_id; an int or its digits) or "best:TASK" (the archive
    elite scoring highest on TASK). One ValueError naming --model for anything else or an id the run lacks."""
    from workbench.qd.baselines import best_per_task

    if isinstance(model, str) and model.startswith("best:"):
        task = model.split(":", 1)[1]
        if task not in qd.tasks:
            raise ValueError(f"--model best:{task}: the run's tasks are {', '.join(qd.tasks)}")
        return best_per_task(qd)[task]
    try:
        if isinstance(model, bool) or isinstance(model, float):
            raise ValueError
        model_id = int(model)
    except (TypeError, ValueError):
        raise ValueError(f"--model takes a model id or best:TASK, got {model!r}") from None
    if not 0 <= model_id < qd.evaluated:
        raise ValueError(f"--model {model_id}: run {run.id} has models 0 to {qd.evaluated - 1}")
    return model_id


def rebuild_model(store: RunStore | str | Path, run_id: str, model_id: int | str) -> dict:
    """The weights of model `model_id` (an id or "best:TASK", see model_id_of) of a run, rebuilt from its lineage
    (CPU tensors, bit for bit those that were scored)."""
    store = RunStore.of(store)
    run, cfg, qd = load_run(store, run_id)
    model_id = model_id_of(run, qd, model_id)
    ctx = context(cfg)
    with torch_threads(cfg.threads):
        return ctx.rebuild(model_id, qd.child, {})


def export_model(store: RunStore | str | Path, run_id: str, model_id: int | str, out: str | Path) -> Path:
    """Write model `model_id` (an id or "best:TASK") of a run as a model folder (config, safetensors, tokenizer)
    that `workbench zoo eval` and `merge apply` read; written under a temporary name and renamed."""
    store = RunStore.of(store)
    import shutil

    from workbench.checks import refuse_file_above

    out = Path(out)
    if out.exists():
        raise ValueError(f"{out} exists; choose a new --out folder")
    refuse_file_above(out)
    run, cfg, qd = load_run(store, run_id)
    model_id = model_id_of(run, qd, model_id)
    try:  # before the rebuild: a folder it may not make ("/proc/x") said with the flag
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"--out {out}: cannot make its folder {out.parent} ({error.strerror})") from None
    theta = rebuild_model(store, run.id, model_id)
    ctx = context(cfg)
    tmp = staging_dir(out)
    try:
        ctx.model.load_state_dict(theta, strict=True)
        from workbench.lm.models import quiet_progress

        with quiet_progress():  # transformers' "Writing model shards" bar, before the command's JSON
            ctx.model.save_pretrained(tmp)
        ctx.tokenizer.save_pretrained(tmp)
        write_json(tmp / "lineage.json", {"run": run.id, "model": int(model_id), **qd.records[int(model_id)]})
        replace_dir(tmp, out, overwrite=False)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out
