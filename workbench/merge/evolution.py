"""Evolving merge recipes: CMA-ES over recipe genomes, fitness = task accuracy, runs in the run store.

    cfg = EvolveConfig(zoo="data/zoo", models=["add", "sort"], method="ties", iters=10)
    run = evolve(cfg, RunStore("runs"))          # or evolve(None, store, resume="<run-id>")

Each iteration asks the search for a population of genomes, turns each into a recipe (a mergekit YAML
recipe for parameter-space methods, a DFS path for "dfs"), builds the merged model, scores it on the
validation sets of the tasks (seed `seed`) and tells the search loss = −Σ w_k·acc_k / Σ w_k. After
every iteration the search object and the tables are checkpointed atomically (JSON + npz, no pickle), so
`resume=` ends exactly where an uninterrupted run would. At the end the best recipe is written (recipe.yaml
or dfs.json) and the sources and the merge are scored on test sets (held-out stream seed + 1, the validation
prompts left out) into scores.json.
Fitness is higher-is-better; the run store keeps best_loss = −fitness for the loop it shares with the ASAL
searches and lists the run by its fitness (catalog: metric "fitness", better "higher", best).

Device: models load, merge and score on cfg.device ("cpu", "cuda", "cuda:N"; None = the GPU when torch sees
one). The config holds the device's name, not a torch.device, so it pickles to Dask workers, and each process
resolves it itself (workbench.kernels.device); run.json records the device the run (last) ran on. DARE masks do
not depend on the device; accuracies on a GPU can differ from the CPU's by float near-ties.

Run folder: run.json, metrics.parquet (one row per iteration: loss_* and fitness_* columns), evaluations.parquet
(every candidate: iteration, loss, per-task accuracy, genome), best.npy, recipe.yaml | dfs.json, scores.json,
analysis.json.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from workbench.checks import check_counts, check_positive, check_seed, checked_again, paths_as_text, texts
from workbench.merge.genome import NEEDS_BASE, DFSGenome, PSGenome
from workbench.merge.search import RecipeCMA
from workbench.merge.state import check_finite, check_models
from workbench.runs import (
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

if TYPE_CHECKING:
    import distributed

PS_METHODS = ("linear", "task_arithmetic", "ties", "dare_linear", "dare_ties")
#: EvolveConfig fields and the `workbench merge evolve` flags that set them, for resume errors.
FLAGS = {"zoo": "--zoo", "models": "--models", "method": "--method", "base": "--base", "tasks": "--tasks",
         "task_weights": "--task-weights", "iters": "--iters", "pop": "--pop", "sigma": "--sigma", "seed": "--seed",
         "n_eval": "--n-eval", "n_test": "--n-test", "dfs_r": "--r"}


@dataclass
class EvolveConfig:
    """One evolutionary merge: the source models (and base) to merge with `method`, the tasks and weights of the
    fitness, CMA-ES's budget (iters × pop, sigma, seed), the prompts per candidate and for the final scores, and
    where it runs. ValueError, naming the CLI flag, for settings that cannot run.

    Attributes:
        zoo: the folder models are looked up in (`--zoo`; the CLI's default: data/zoo): a name is `zoo/name` when
            that is a folder, else a model folder of its own (workbench.lm.models.resolve_model).
        models: the source models merged, in order (`--models`; one or more, distinct; the task-vector methods
            refuse the base among them). dfs lays out their layers in this order.
        method: "linear", "task_arithmetic", "ties" (the default), "dare_linear", "dare_ties" (parameter space:
            one weight, plus a density for ties and dare_*, per source model per layer group) or "dfs" (data-flow
            space: a layer path and activation scales) (`--method`).
        base: θ0 of the task-vector methods (task_arithmetic, ties, dare_*), which merge τ = model − base
            (`--base`; default "base", the zoo's). Loaded for every method but dfs (the analysis' task vectors);
            dfs has none (the CLI refuses `--base` with it).
        tasks: the tasks of the fitness (`--tasks`); empty: the source models named after a task.
        task_weights: w_k, one per task in order (`--task-weights`), finite, ≥ 0, positive sum; empty: all 1.
            Fitness = Σ w_k·acc_k / Σ w_k; CMA-ES minimises its negative.
        iters: CMA-ES generations (`--iters`, default 10).
        pop: candidates per generation, ≥ 2 (`--pop`, default 8).
        sigma: CMA-ES's initial step size in genome units, > 0 (`--sigma`, default 0.2): weights in [0, 1],
            densities in [0.05, 1]; dfs' indicator in [0, 1], its scales in [0, 2].
        seed: CMA-ES's draws, DARE's random drops and the validation prompts (held-out stream `seed`; the final
            test prompts: stream seed + 1) (`--seed`, default 0).
        n_eval: validation prompts per task per candidate, the fitness (`--n-eval`, default 64).
        n_test: test prompts per task for scores.json, of the sources and the best merge (`--n-test`, default 128).
        dfs_r: dfs only: repetitions r of the layer list, T = M·r slots (`--r`, default 3, the reference's).
        chunk: candidates per Dask task, with `--workers` or `--dask` (no flag of its own; default 2).
        device: "cpu", "cuda" or "cuda:N" where models load, merge and score (`--device`); None: the GPU when
            the process sees one. A name, resolved by each process (Dask workers too).
    """

    zoo: str                                   # folder of models (a zoo from `workbench zoo build`, or any)
    models: list[str]                          # source models: names in the zoo folder or model folders
    method: str = "ties"                       # a parameter-space method or "dfs"
    base: str = "base"                         # base model of task-vector methods
    tasks: list[str] = field(default_factory=list)   # default: the source models named after tasks
    task_weights: list[float] = field(default_factory=list)
    iters: int = 10
    pop: int = 8
    sigma: float = 0.2
    seed: int = 0
    n_eval: int = 64                           # validation prompts per task per candidate
    n_test: int = 128                          # test prompts per task for the final scores
    dfs_r: int = 3                             # DFS: repetitions of the layer list (the reference: 3)
    chunk: int = 2                             # candidates per Dask task
    device: str | None = None                  # "cpu", "cuda", "cuda:N"; None: the GPU when the process sees one

    def __post_init__(self):
        paths_as_text(self, "zoo", "models", "base")
        check_seed(self.seed)
        from workbench.lm.tasks import TASKS, check_tasks

        methods = (*PS_METHODS, "dfs")
        if self.method not in methods:
            raise ValueError(f"unknown merge method {self.method!r} for evolution; choose one of {', '.join(methods)}")
        self.models = texts(self.models, "--models")
        if not self.models:
            raise ValueError("give the source models to merge (--models NAME …)")
        if len(set(self.models)) != len(self.models):
            raise ValueError(f"--models names a model twice: {' '.join(self.models)}; give each once")
        if self.method in NEEDS_BASE and self.base in self.models:
            raise ValueError(f"--base {self.base} is also one of --models: {self.method} merges the task vectors of "
                             f"--models (each model minus the base); leave the base out of --models")
        self.tasks = texts(self.tasks, "--tasks") or [m for m in self.models if m in TASKS]
        if not self.tasks:
            raise ValueError(f"no task to score: give --tasks (known: {', '.join(TASKS)})")
        check_tasks(self.tasks, flag="--tasks")
        if len(set(self.tasks)) != len(self.tasks):  # scored twice, recorded once at the last weight
            raise ValueError(f"--tasks names a task twice: {' '.join(self.tasks)}; give each once (weigh one more "
                             "with --task-weights)")
        self.task_weights = [float(w) for w in self.task_weights] or [1.0] * len(self.tasks)
        if len(self.task_weights) != len(self.tasks) or not all(np.isfinite(self.task_weights)) \
                or min(self.task_weights) < 0 or sum(self.task_weights) <= 0:
            raise ValueError(f"--task-weights: give {len(self.tasks)} (one per --tasks task, in order) non-negative "
                             f"finite numbers with a positive sum, got {' '.join(map(str, self.task_weights))}")
        check_counts(self, ("iters", "pop", "n_eval", "n_test", "dfs_r", "chunk"), FLAGS)
        if self.pop < 2:
            raise ValueError("the CMA-ES population (--pop) must be at least 2")
        self.sigma = check_positive(self.sigma, "--sigma")
        if self.device is not None:
            self.device = str(self.device)  # a name, resolved where the work runs (a torch.device would pin it)

    def to_dict(self) -> dict:
        """The config as a plain dict (asdict), as run.json stores it."""
        return asdict(self)

    def genome(self, layers: int) -> PSGenome | DFSGenome:
        """The genome the search evolves, for source models of `layers` decoder layers: a DFSGenome (method
        "dfs", dfs_r repeats) or a PSGenome of the method's parameters."""
        if self.method == "dfs":
            return DFSGenome(self.models, layers, self.dfs_r)
        return PSGenome(self.models, layers, self.method, self.base)

    def loss(self, acc: np.ndarray) -> np.ndarray:
        """−(weighted mean accuracy) of rows of per-task accuracies."""
        w = np.asarray(self.task_weights)
        return -(np.asarray(acc) @ w) / w.sum()


#: The most memory (on the merge's device) a Context spends on sorted TIES magnitudes: the zoo's and SmolLM2's
#: task vectors fit; of larger models' only the first tensors are cached, the rest selected per candidate.
MAGNITUDE_CACHE_BYTES = 2 << 30


class Context:
    """What evaluating a candidate needs, built once per process (Dask workers keep theirs)."""

    def __init__(self, cfg: EvolveConfig):
        from workbench.kernels.device import resolve_device
        from workbench.lm.models import load_model, resolve_model

        self.device = resolve_device(cfg.device)  # this process's device: checked before any model loads
        names = list(dict.fromkeys([*([cfg.base] if cfg.method != "dfs" else []), *cfg.models]))
        self.models, tokenizer = {}, None
        for name in names:
            model, tok = load_model(str(resolve_model(name, cfg.zoo)), device=self.device)
            self.models[name] = model.eval()
            tokenizer = tokenizer or tok
        self.tokenizer = tokenizer
        ref = self.models[cfg.models[0]]
        self.layers = int(ref.config.num_hidden_layers)
        self.state_dicts = {n: {k: v.detach() for k, v in m.state_dict().items()} for n, m in self.models.items()}
        _check_compatible(self.state_dicts)
        self.genome = cfg.genome(self.layers)
        self.cfg = cfg

    @functools.cache  # noqa: B019 - one Context per process, kept for the process's life
    def scorer(self, n: int, seed: int):
        """The tokenised held-out sets (seed `seed`) of the run's tasks."""
        from workbench.lm.evaluation import HeldoutSets

        return HeldoutSets(self.tokenizer, self.cfg.tasks, n=n, seed=seed, batch_size=128)

    @functools.cached_property
    def score_method(self) -> str:
        """"forced" (one teacher-forced pass, exact) for one-token-per-character tokenizers such as the zoo's;
        "greedy" decoding for subword tokenizers (SmolLM2 and other real models)."""
        from workbench.lm.tasks import CHARS

        ids = self.tokenizer(list(CHARS), add_special_tokens=False)["input_ids"]
        return "forced" if all(len(i) == 1 for i in ids) and len(self.tokenizer) <= 256 else "greedy"

    def score(self, model, n: int, seed: int) -> dict[str, float]:
        return self.scorer(n, seed).score(model, self.score_method)

    def build(self, x: np.ndarray):
        """The merged model of genome x (a fresh module for DFS; the scratch model for PS methods)."""
        if self.cfg.method == "dfs":
            from workbench.merge.dfs import build_dfs_model

            return build_dfs_model(self.genome.recipe(x), self.models)
        return self.merged_model(self.merged_state_dict(x))

    def merged_state_dict(self, x: np.ndarray) -> dict:
        from workbench.merge.methods import magnitude_cache
        from workbench.merge.recipe import apply_recipe

        with magnitude_cache(self.magnitudes):
            return apply_recipe(self.genome.recipe(x), self.state_dicts.__getitem__, seed=self.cfg.seed,
                                device=self.device)

    @functools.cached_property
    def magnitudes(self):
        """The sorted |τ| TIES reads its thresholds from (MagnitudeCache), kept for this Context's life: every
        candidate merges the same source tensors."""
        from workbench.merge.methods import MagnitudeCache

        return MagnitudeCache(MAGNITUDE_CACHE_BYTES)

    @functools.cached_property
    def scratch(self):
        import copy

        return copy.deepcopy(self.models[self.cfg.models[0]])

    def merged_model(self, state_dict: dict):
        self.scratch.load_state_dict(state_dict, strict=True)
        return self.scratch


def _check_compatible(state_dicts: dict) -> None:
    """Fail fast, naming the tensor, on models of another architecture (DFS paths never reach the merge's
    own per-tensor check)."""
    names = check_models(state_dicts)
    first, ref = next(iter(state_dicts.items()))
    for model, sd in state_dicts.items():
        check_finite(model, sd)  # a damaged checkpoint: said, not evolved on
        for key in names:
            if sd[key].shape != ref[key].shape:
                raise ValueError(f"tensor {key} is {tuple(ref[key].shape)} in {first!r} but {tuple(sd[key].shape)} "
                                 f"in {model!r}: the models cannot be merged")


def context(cfg: EvolveConfig) -> Context:
    """The evaluation Context of cfg: the models, tokenizer and evaluators, built once per process and config (the
    two configs used last are kept: workbench.scale.made_once).

    Args:
        cfg: the evolution's config; every field counts (another device or iters builds another Context).
    Returns:
        The Context: device (this process's, resolved from cfg.device), models (name -> model in eval mode on it:
        the base first for the parameter-space methods, then cfg.models), tokenizer (the first model's), layers
        (cfg.models[0]'s decoder layers), state_dicts (their weights, detached), genome and cfg.
    """
    from workbench.scale import made_once

    return made_once(Context, cfg)


def evaluate_genomes(cfg: EvolveConfig, xs: np.ndarray) -> np.ndarray:
    """Validation accuracies (P, K) of genomes xs (runs locally or as a Dask task).

    Args:
        cfg: the evolution's config: the models merged, the tasks and the validation prompts (n_eval per task,
            held-out stream cfg.seed).
        xs: (P, G) genomes, one a row (G = the genome's size: cfg.genome(layers).size).
    Returns:
        float64 (P, K) accuracies in [0, 1], column k for cfg.tasks[k].
    """
    ctx = context(cfg)
    out = []
    for x in xs:
        acc = ctx.score(ctx.build(x), cfg.n_eval, cfg.seed)
        out.append([acc[t] for t in cfg.tasks])
    return np.asarray(out, np.float64)


def evaluate_population(cfg: EvolveConfig, xs: np.ndarray, client=None) -> np.ndarray:
    chunks = [xs[i:i + cfg.chunk] for i in range(0, len(xs), cfg.chunk)]
    if client is None:
        parts = [evaluate_genomes(cfg, c) for c in chunks]
    else:
        parts = client.gather(client.map(evaluate_genomes, [cfg] * len(chunks), chunks, pure=False))
    return np.concatenate(parts)


def _absolute(cfg: EvolveConfig) -> EvolveConfig:
    """cfg with its zoo, and the models named by a path rather than inside the zoo, as absolute paths: a run
    records them so, and reads them from any folder later (a resume from elsewhere read another zoo, or none)."""
    import os

    def absolute(name: str) -> str:
        return name if (Path(cfg.zoo) / name).is_dir() else os.path.abspath(os.path.expanduser(name))

    return dataclasses.replace(cfg, zoo=os.path.abspath(os.path.expanduser(cfg.zoo)),
                               models=[absolute(m) for m in cfg.models],
                               base=absolute(cfg.base) if cfg.method != "dfs" else cfg.base)


@releases_claims
def evolve(cfg: EvolveConfig | None, store: RunStore | str | Path, resume: str | None = None,
           client: distributed.Client | None = None,
           on_iteration: Callable[[int, int, dict], None] | None = None,
           should_stop: Callable[[], bool] | None = None, on_start: Callable[[Run], None] | None = None,
           device: str | None = None, *, trust_pickle: bool = False, command: str | None = None,
           iters: int | None = None, zoo: str | Path | None = None,
           on_phase: Callable[[str], None] | None = None) -> Run:
    """Run (or resume) a recipe evolution to cfg.iters iterations; returns the run. `device`, when given,
    replaces cfg.device (a resumed run's too: e.g. continue a GPU run on the CPU; it then continues as a run on
    that device would, not bit for bit as the original).

    resume: a run id (or a unique prefix of one); cfg may then be None, or a config that must equal the
    run's (else one error naming the differences) but for iters. iters (or cfg.iters, with resume): another
    total, down to what the run has done: a finished run goes on from its last checkpoint, a stopped one ends
    there, each as a run started with that total would have (runs.new_total). trust_pickle: also load a pickle
    checkpoint of an older version (it can run code: only for run folders you trust). command: the command line,
    kept in run.json. The run's metric is fitness (higher is better); best_loss in run.json and the metrics is −fitness.
    client: a Dask client to evaluate genomes on (the same results as without). zoo (with resume): where the
    run's zoo is now, checked by its zoo.json and recorded (workbench.lm.zoo.run_zoo); a new run records its zoo
    and model folders as absolute paths, read from anywhere later.
    Callbacks (progress bars, pages): on_start(run) once the run exists, before its first iteration;
    on_iteration(done, total, metrics row) after each stored iteration (a workbench.Progress draws it);
    should_stop() between iterations: True stops the run where it can be resumed; on_phase(text) says what the
    run's end (test scores, analysis: after the last iteration) is doing."""
    store = RunStore.of(store)
    iters = check_longer(resume, iters, "iters")
    if resume is not None:
        run = store.open(resume)
        given = {} if cfg is None else {k: v for k, v in cfg.to_dict().items() if k != "device"}
        if iters is not None:
            given["iters"] = iters
        from workbench.lm.zoo import record_zoo, run_zoo

        typed = given.pop("zoo", None)  # compared by content (run_zoo), not as text
        moved = run_zoo(run, zoo if zoo is not None else typed, "merge evolve")
        check_resume(run, "merge", given, extends="iters")
        run, cfg, state, total = store.reopen_to(run, lambda c: EvolveConfig(**c), ("merge",), "iters",
                                                 given.get("iters"), trust_pickle=trust_pickle)
        cfg = dataclasses.replace(cfg, zoo=moved)
        if total is not None:
            cfg = dataclasses.replace(cfg, iters=total)
        elif run.info.get("status") == "done":
            record_zoo(run, moved)  # where it is now, so that its page and later resumes find it, by content
            return run
        if state is not None and not (isinstance(state.get("search"), RecipeCMA) and "evaluations" in state):
            raise RunError(f"the checkpoint of run {run.id!r} holds no recipe search; start a new run instead")
    elif cfg is None:
        raise ValueError("give an EvolveConfig or resume=RUN_ID")
    else:
        # a notebook may have set a field since the config was built; the zoo as the run records it, before the
        # context is built (a context of the relative path and one of the absolute: every model loaded twice)
        cfg = _absolute(checked_again(cfg))
        state = None
    if device is not None:
        cfg = dataclasses.replace(cfg, device=str(device))
    elif resume is not None and cfg.device is not None:
        _check_resume_device(resume, cfg.device)
    ctx = context(cfg)  # fails fast on a missing GPU, missing or incompatible models
    if resume is not None:  # once the models and the device are there: a resume that failed left no entry
        record_zoo(run, moved)  # (and its zoo's place recorded: a zoo that failed to load is not the run's)
        record_resume(run, command, state, extends="iters", total=total)
    if resume is None:
        run = store.create("merge", cfg.method, "+".join(cfg.models), cfg.to_dict(), cfg.seed, metric="fitness",
                           command=command)
    with setting_up(run, new=resume is None):
        if resume is None:
            from workbench.lm.zoo import zoo_fingerprint

            run.update(zoo_sha256=zoo_fingerprint(cfg.zoo))  # compared runs tell zoos apart by content
        run.update(device=str(ctx.device))  # where this process evaluates (Dask workers resolve cfg.device themselves)
        if state is None:
            g = ctx.genome
            steps = g.steps() if cfg.method == "dfs" else None
            search = RecipeCMA(g.initial(), g.bounds(), sigma=cfg.sigma, population=cfg.pop, seed=cfg.seed, steps=steps)
            state = {"iteration": 0, "search": search, "metrics": [], "evaluations": []}
        if on_start is not None:
            on_start(run)
        search, evaluations = state["search"], state["evaluations"]

    def step(it: int) -> dict:
        xs = search.ask()
        acc = evaluate_population(cfg, xs, client)
        losses = cfg.loss(acc)
        info = search.tell(xs, losses)
        info.update(best_fitness=-info["best_loss"], fitness_max=-info["loss_min"], fitness_mean=-info["loss_mean"])
        i = int(np.argmin(losses))
        info.update({f"acc_{t}": float(acc[i, k]) for k, t in enumerate(cfg.tasks)})
        evaluations.extend({"iteration": it, "index": j, "loss": float(losses[j]),
                            **{f"acc_{t}": float(acc[j, k]) for k, t in enumerate(cfg.tasks)},
                            "genome": xs[j].astype(np.float64).tolist()} for j in range(len(xs)))
        return info

    return checkpointed_loop(run, state, cfg.iters, step, lambda: finish(run, cfg, search, evaluations, on_phase),
                             should_stop=should_stop, on_iteration=on_iteration)


def _check_resume_device(run_id: str, device: str) -> None:
    """A run started on a device this machine lacks: say how to continue it elsewhere."""
    from workbench.kernels.device import resolve_device

    try:
        resolve_device(device)
    except ValueError:
        raise ValueError(f"run {run_id!r} was started on {device!r}, which this machine lacks; resume it on another "
                         f"device with --device cpu (Python: device='cpu')") from None


def finish(run: Run, cfg: EvolveConfig, search: RecipeCMA, evaluations: list[dict],
           say: Callable[[str], None] | None = None) -> None:
    """Best recipe, test scores of sources and merge (per task; their means over the tasks, weighted by
    --task-weights as the search's objective, the source with the best mean and whether the merge beats each
    source's mean), analysis of the task vectors. say(text): what it is doing (the bar is full by then)."""
    say = say or (lambda text: None)
    ctx = context(cfg)
    run.write_table("evaluations", evaluations)
    best = search.best_x
    run.write_array("best.npy", np.asarray(best, np.float64))
    if cfg.method == "dfs":
        ctx.genome.recipe(best).save(run.path / "dfs.json")
    else:
        recipe = ctx.genome.recipe(best)  # with the seed its DARE drops were drawn with: apply rebuilds this merge
        recipe.save(run.path / "recipe.yaml", seed=cfg.seed if recipe.uses_drops() else None)
    from workbench.lm.evaluation import test_sets

    # the test prompts leave out the validation prompts the recipe was chosen on (two streams of one held-out
    # half share prompts: brackets 45 of 128, recall 22, add 6)
    test = test_sets(ctx.tokenizer, cfg.tasks, cfg.n_test, cfg.n_eval, cfg.seed)
    say(f"test scores of {', '.join(ctx.models)} and the merge …")
    scores = {"tasks": cfg.tasks, "method": ctx.score_method,
              "split": f"test (stream {cfg.seed + 1}, n {cfg.n_test}, the validation prompts (stream {cfg.seed}) "
                       "left out)",
              "n_test": {t: len(test.items[t][1]) for t in cfg.tasks},  # fewer only where a task's prompts run out
              "models": {name: test.score(model, ctx.score_method) for name, model in ctx.models.items()},
              "merged": test.score(ctx.build(best), ctx.score_method)}
    # whether the merge beats taking one model as it is: at small budgets it often does not (a probe: 0.445 against
    # 0.496 for its better source), and the per-task numbers alone left that to the reader (CycleQD's say it)
    # weighted as the search's objective (--task-weights; all 1 by default: the plain mean)
    w = np.asarray(cfg.task_weights, np.float64)
    mean = {name: float(np.asarray([s[t] for t in cfg.tasks]) @ w / w.sum()) for name, s in
            {"merged": scores["merged"], **scores["models"]}.items()}
    sources = {name: m for name, m in mean.items() if name != "merged"}
    scores.update(mean=mean, mean_weights=dict(zip(cfg.tasks, w.tolist(), strict=True)),
                  best_source=max(sources, key=sources.get),
                  beats={name: mean["merged"] > m for name, m in sources.items()})
    write_json(run.path / "scores.json", scores)
    say("the task vectors' norms, cosines and sign conflicts …")
    write_json(run.path / "analysis.json", analysis(ctx, best))
    run.update(status="done", test_scores=scores["merged"])


def analysis(ctx: Context, best: np.ndarray) -> dict:
    """The explorer's task-vector views, computed once at the end of a run (small, JSON). Per-layer values
    are lists in the order of `layer_groups` (embeddings, layers 0…L−1, final norm, LM head)."""
    from workbench.merge import analysis as tv

    out: dict = {"groups": ctx.genome.groups if ctx.cfg.method != "dfs" else None}
    base = ctx.cfg.base if ctx.cfg.base in ctx.state_dicts else None
    experts = {m: ctx.state_dicts[m] for m in ctx.cfg.models if m != base}
    if base is None or not experts:
        return out
    base_sd = ctx.state_dicts[base]
    order = list(dict.fromkeys(tv.layer_group(n) for n in base_sd))
    out["layer_groups"] = order
    norms = tv.task_vector_norms(base_sd, experts)
    out["task_vector_norms"] = {e: [norms[g][e] for g in order] for e in experts}
    out["task_vector_cosine"] = {"models": list(experts), "matrix": _plain(tv.task_vector_cosine(base_sd, experts))}
    if ctx.cfg.method in ("ties", "dare_ties", "dare_linear"):
        # the merge that ran: each expert's evolved weight and density per tensor, resolved as the merge does
        recipe = ctx.genome.recipe(best)
        density = tv.recipe_setting(recipe, "density", ctx.layers)
        _, d = ctx.genome.split(best)
        out["density_mean"] = float(np.mean(d))
        if ctx.cfg.method != "dare_linear":  # which has no sign election: a conflict rate there described nothing
            # the election the merge ran: over TIES' magnitude trim, or over DARE's random drop (dare_ties)
            drop = ctx.cfg.seed if ctx.cfg.method == "dare_ties" else None
            sc = tv.sign_conflict_rate(base_sd, experts, density, tv.recipe_setting(recipe, "weight", ctx.layers),
                                       drop_seed=drop)
            out["sign_conflict"] = {"total": sc["total"], "per_layer": [sc["per_layer"][g] for g in order],
                                    "after": "trim" if drop is None else "dare drop"}
        if ctx.cfg.method.startswith("dare"):
            kept = tv.dare_kept_fraction(base_sd, experts, density, seed=ctx.cfg.seed)
            out["dare_kept"] = {e: [kept[g][e] for g in order] for e in experts}
            # which rescaling of the survivors ran (spec: offer both, name the one used): the methods' defaults
            from workbench.merge.methods import TASK_VECTOR_METHODS

            params = recipe.parameters or {}
            rescaled = params.get("rescale", TASK_VECTOR_METHODS[ctx.cfg.method].rescale)
            out["dare_rescale"] = params.get("rescale_norm", "l1") if rescaled else "none"
    return out


def _plain(x):
    """Tensors / arrays / nested containers → JSON-ready Python."""
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    return x
