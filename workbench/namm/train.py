"""Training NAMM (spec §3, "Training"): CMA-ES over the 4172 BAM parameters, fitness normalised by the full cache,
an incremental curriculum over tasks.

    cfg = NAMMTrainConfig(model="smollm2", tasks=["passkey", "kv"], gens=12, pop=8, n_up=64, seed=0)
    search = new_search(cfg)                        # cmaes SepCMA ("sep") or FastCMA ("full"): mean 0, σ0 = 0.065
    ctx = context(cfg)                              # model, tokenizer, prompts (one per process)
    full = ctx.full_scores("passkey")               # per-prompt exact match of the full cache on the pool
    prompts = {"passkey": cfg.prompts_of(g, "passkey")}                  # generation g's draw
    scores, kept = evaluate_population(cfg, ["passkey"], thetas, stats, prompts)   # (P, K) mean scores, (P,) kept
    fitness(cfg, scores, kept, [denominator(full, prompts["passkey"], cfg.normalizer)[0]])  # (P,) CMA-ES maximises

Fitness of a candidate = mean over the active tasks of (its mean score) / (the full cache's mean score on the
same prompts) − memory_weight · (its mean kept fraction); memory_weight is 0 by default (the spec's fitness,
which does not reward a small cache) and named in the run when set. With max_kept (the capped variant, an
extension: NAMMPolicy's docstring) the cache is bounded by the cap and the search only learns what to keep.
CMA-ES minimises −fitness; its μ = ⌊λ/2⌋ best candidates recombine (elite ratio 0.5, cmaes' default weights).
"sep" (separable: diagonal covariance, the CPU default) or "full" (the reference's full covariance: cmaes' CMA as
workbench.fast_cma.FastCMA, the same numbers without its per-sample n³ products; what remains is one
eigendecomposition of a 4172² matrix per generation) — the run names which ran, and its population (the spec's 32,
or smaller on a CPU).

Statistics: the first evaluation is the full cache's on the first task's whole training pool, run as NAMM with
θ = 0 (which keeps every token, so it IS the full cache) collecting the running normalisation statistics; they are
frozen there and every candidate, stage and the saved policy use them. The reference's iteration-0 evaluation is
the same (the CMA mean θ₀ = 0 over every training prompt of the first task, statistics updating; evo-memory's
memory_trainer.py); its statistics freeze one iteration later (freeze_after 1), so its first population step adds
to them as its candidates run, each seeing what the ones before it added. We freeze before the first population:
every candidate sees the same statistics whatever the order it runs in, so Dask workers give the local result.

Curriculum: stage k trains on tasks[:k + 1] for stage_gens[k] generations (default: `gens` split evenly, the
remainder to the last stages), each stage going on from the previous stage's CMA state and statistics.

Prompts: each generation draws `n_prompts` training prompts per task (split "train") without replacement from a
pool of the task's first `pool` training prompts, a fresh draw every generation and the same for every candidate
of it: the reference's schedule (evo-memory's trainer samples a new batch of 64 prompts per task each step, its
task_sampler.py). The draw is seeded by (seed, generation, task), so a resume draws the same. The full cache is
scored once on the whole pool, and a generation's denominator is its mean over that generation's prompts (the
reference's score_normalization_reference filtered to the sampled indices). Where the drawn prompts hold none the
full cache solves, the reference divides by 1e-7 (it adds 1e-7 to every denominator); with our few prompts a
generation then ranks on that task alone, so by default (normalizer "pool") the denominator falls back to the
pool's mean there, and to 1e-7 only where the full cache solves none of the pool either (named in metrics:
full_fallback). normalizer "reference" divides as evo-memory does: by the drawn prompts' mean + 1e-7.
pool = 0 scores every generation on the same first `n_prompts` prompts, which runs made before 2026-12-01 did (a
fixed batch: fewer full-cache evaluations, and candidates fitted to those few prompts).

Every prompt is scored one at a time, with torch on `threads` threads (floats depend on it; a resume uses the
run's). Candidates are independent, so a population evaluated on Dask workers (chunks of `chunk`) gives exactly
the local result. A prompt's first n_up tokens, which no policy has seen yet, run once per process for all the
candidates scored on it (driver.FirstChunks: the same numbers, 5–8 % less time at the defaults).
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from workbench.checks import absolute_paths, as_number, check_counts, check_seed, is_count, is_whole, paths_as_text
from workbench.namm.cache import check_n_up
from workbench.namm.saved import VARIANTS, check_variant
from workbench.namm.scorer import N_PARAMS
from workbench.namm.tasks import check_task_names
from workbench.threads import torch_threads

CMA_VARIANTS = ("sep", "full")
SIGMA0 = 0.065
ELITE_RATIO = 0.5  # cmaes' μ = ⌊λ/2⌋
SPEC_POPULATION = 32
#: NAMMTrainConfig fields and the `workbench namm train` flags that set them (errors and resume conflicts).
FLAGS = {"model": "--model", "tasks": "--tasks", "gens": "--gens", "pop": "--pop", "sigma": "--sigma",
         "cma": "--cma", "n_up": "--n-up", "seed": "--seed", "n_prompts": "--prompts", "length": "--length",
         "max_new_tokens": "--max-new-tokens", "variant": "--variant", "memory_weight": "--memory-weight",
         "max_kept": "--max-kept", "pool": "--pool", "normalizer": "--normalizer",
         "n_test": "--n-test", "threads": "--threads", "stage_gens": "--stage-gens", "chunk": "--chunk"}
#: the random stream of the prompt draws (apart from the CMA-ES seed's)
PROMPT_STREAM = 0x6E616D6D
#: what a task's fitness is divided by where the full cache solves none of a generation's prompts (module doc)
NORMALIZERS = ("pool", "reference")
#: evo-memory's guard against a zero normaliser: score / (normaliser + 1e-7)
REFERENCE_EPSILON = 1e-7


@dataclass
class NAMMTrainConfig:
    """The settings of a NAMM training run (all recorded in run.json; module doc for their meaning).
    `workbench namm train` sets each with the flag of its name in dashes, but n_prompts: `--prompts`.

    Args:
        model: 'smollm2', a .gguf file or a model folder (eager attention, full-attention layers).
        tasks: the curriculum's tasks, in the order they are added (workbench.namm.tasks).
        gens: generations in all. pop: CMA-ES population λ (spec: 32). sigma: σ0 (spec: 0.065).
        cma: "sep" or "full". n_up: tokens between eviction steps (a multiple of 16). seed: CMA-ES and prompts.
        n_prompts: training prompts per task a generation is scored on. pool: the training prompts per task each
            generation draws its n_prompts from, afresh (0: the same n_prompts every generation; module doc).
        normalizer: "pool" or "reference": the denominator where the full cache solves none of a generation's
            prompts (module doc).
        length: prompt tokens. max_new_tokens: answer budget.
        variant: "equal-n" or "strict". memory_weight: fitness − w · kept fraction (0: the spec's fitness).
        max_kept: None (the paper's NAMM) or the capped variant's fraction (NAMMPolicy: at most ⌈f · seen⌉ slots).
        n_test: test prompts per task scored at the end (0: none). threads: torch threads of every evaluation.
        stage_gens: generations per curriculum stage (default: gens split evenly). chunk: candidates per Dask task.
        device: "cpu", "cuda" or "cuda:N" the model loads on, in every process; None: the GPU when torch sees one.
    """

    model: str = "smollm2"
    tasks: list[str] = field(default_factory=lambda: ["passkey"])
    gens: int = 10
    pop: int = 8
    sigma: float = SIGMA0
    cma: str = "sep"
    n_up: int = 64
    seed: int = 0
    n_prompts: int = 4
    pool: int = 32
    normalizer: str = "pool"
    length: int = 512
    max_new_tokens: int = 8
    variant: str = "equal-n"
    memory_weight: float = 0.0
    max_kept: float | None = None
    n_test: int = 8
    threads: int = 1
    stage_gens: list[int] = field(default_factory=list)
    chunk: int = 1
    device: str | None = None

    def __post_init__(self):
        from workbench.lm.models import SMOLLM2

        paths_as_text(self, "model")
        absolute_paths(self, "model", keep=(SMOLLM2,))  # found from any folder on resume
        check_seed(self.seed)
        self.tasks = check_task_names(self.tasks)
        check_counts(self, ("gens", "pop", "n_prompts", "length", "max_new_tokens", "threads", "chunk"), FLAGS)
        if not is_count(self.pool, 0) or 0 < self.pool < self.n_prompts:
            raise ValueError(f"--pool must be at least --prompts {self.n_prompts} (each generation draws its prompts "
                             f"from the pool) or 0 (the same prompts every generation), got {self.pool!r}")
        if self.normalizer not in NORMALIZERS:
            raise ValueError(f"--normalizer must be one of {', '.join(NORMALIZERS)}, got {self.normalizer!r}")
        if not is_count(self.n_test, 0):
            raise ValueError(f"--n-test must be a whole number of at least 0, got {self.n_test!r}")
        if self.pop < 2:
            raise ValueError(f"--pop must be at least 2 (CMA-ES recombines the best half), got {self.pop}")
        check_n_up(self.n_up, "--n-up")
        if self.cma not in CMA_VARIANTS:
            raise ValueError(f"--cma must be one of {', '.join(CMA_VARIANTS)}, got {self.cma!r}")
        if self.variant not in VARIANTS:
            check_variant(self.variant)
        for name in ("sigma", "memory_weight"):  # kept as the float checked: "0.1" stayed text in run.json
            given = getattr(self, name)
            value = as_number(given)
            if not math.isfinite(value) or value < 0 or (name == "sigma" and value == 0):
                raise ValueError(f"{FLAGS[name]} must be a finite number {'> 0' if name == 'sigma' else '≥ 0'}, "
                                 f"got {given!r}")
            setattr(self, name, value)
        from workbench.namm.policy import check_max_kept

        self.max_kept = check_max_kept(self.max_kept)
        if not all(is_whole(g) for g in self.stage_gens):  # int(g) made [1.5, 2.5] stages of 1 and 2
            raise ValueError(f"--stage-gens takes whole numbers of generations, got {list(self.stage_gens)}")
        self.stage_gens = [int(g) for g in self.stage_gens]
        if self.stage_gens:
            if len(self.stage_gens) != len(self.tasks) or min(self.stage_gens) < 1 \
                    or sum(self.stage_gens) != self.gens:
                raise ValueError(f"--stage-gens must give one positive number per task ({len(self.tasks)}) summing "
                                 f"to --gens {self.gens}, got {self.stage_gens}")
        elif self.gens < len(self.tasks):
            raise ValueError(f"--gens {self.gens} is fewer than the {len(self.tasks)} curriculum stages (one task "
                             f"added per stage): give --gens {len(self.tasks)} or more")
        if self.device is not None:
            self.device = str(self.device)

    def to_dict(self) -> dict:
        """The config as a plain dict (asdict), as run.json stores it."""
        return asdict(self)

    def stages(self) -> list[int]:
        """Generations per stage (stage k: tasks[:k + 1])."""
        if self.stage_gens:
            return list(self.stage_gens)
        k = len(self.tasks)
        base, extra = divmod(self.gens, k)
        return [base + (1 if i >= k - extra else 0) for i in range(k)]

    def stage_of(self, generation: int) -> int:
        """The curriculum stage of generation `generation` (0-based)."""
        return int(np.searchsorted(np.cumsum(self.stages()), generation, side="right"))

    def active_tasks(self, generation: int) -> list[str]:
        """The tasks trained on at `generation`: those of its curriculum stage and every earlier one."""
        return self.tasks[: self.stage_of(generation) + 1]

    def pool_size(self) -> int:
        """The training prompts per task the full cache is scored on (the pool, or n_prompts without one)."""
        return max(self.pool, self.n_prompts)

    def draws(self) -> bool:
        """Whether generations draw their prompts from a pool (else all score the same first n_prompts)."""
        return self.pool > self.n_prompts

    def prompts_of(self, generation: int, task: str) -> list[int]:
        """The indices (into the task's training pool, ascending) of the prompts generation `generation` scores
        `task` on: n_prompts drawn without replacement, seeded by (seed, generation, task); the first n_prompts
        where there is no pool to draw from (pool 0 or n_prompts)."""
        if not self.draws():
            return list(range(self.n_prompts))
        rng = np.random.default_rng([PROMPT_STREAM, int(self.seed), int(generation), self.tasks.index(task)])
        return sorted(int(i) for i in rng.choice(self.pool, self.n_prompts, replace=False))


def new_search(cfg: NAMMTrainConfig, optimiser: type | None = None):
    """The cmaes optimiser: mean 0 over the N_PARAMS numbers, σ0 = cfg.sigma, population cfg.pop, seeded; of class
    `optimiser` when given (bench namm's peer: cmaes' own CMA), else cfg.cma's."""
    from cmaes import SepCMA

    from workbench.checkpoint import fresh_cmaes
    from workbench.fast_cma import FastCMA

    cls = optimiser or (SepCMA if cfg.cma == "sep" else FastCMA)
    with np.errstate(divide="ignore"):  # populations below 4: see workbench.merge.search.RecipeCMA
        return fresh_cmaes(cls(mean=np.zeros(N_PARAMS), sigma=float(cfg.sigma), population_size=int(cfg.pop),
                               seed=int(cfg.seed)))


def denominator(full: list[float], prompts: list[int], normalizer: str = "pool") -> tuple[float, bool]:
    """What a task's mean scores are divided by: the full cache's mean score on `prompts` (indices into its
    per-prompt pool scores `full`), and whether the full cache solves none of them, where `normalizer` decides
    (module doc): "pool", its mean on the whole pool, or 1e-7 where it solves none of those either; "reference",
    evo-memory's mean + 1e-7 always. Never 0: a fitness of 0 / 0 was NaN, and CMA-ES ranked NaNs."""
    full = np.asarray(full, np.float64)
    drawn = float(np.mean(full[prompts]))
    if normalizer == "reference":
        return drawn + REFERENCE_EPSILON, drawn == 0
    if drawn > 0:
        return drawn, False
    pool = float(np.mean(full))
    return (pool if pool > 0 else REFERENCE_EPSILON), True


def fitness(cfg: NAMMTrainConfig, scores: np.ndarray, kept: np.ndarray, full: list[float]) -> np.ndarray:
    """(P,) fitness of candidates from their (P, K) mean task scores, (P,) kept fractions and the full cache's
    K mean scores (module doc)."""
    ratios = np.asarray(scores, np.float64) / np.asarray(full, np.float64)[None, :]
    return ratios.mean(1) - float(cfg.memory_weight) * np.asarray(kept, np.float64)


class Context:
    """What evaluating candidates needs in one process (Dask workers keep theirs): the eager model, its
    tokenizer, the prompts and their first chunks (driver.FirstChunks: a generation's candidates share each
    prompt's first n_up tokens)."""

    def __init__(self, cfg: NAMMTrainConfig):
        from workbench.namm.driver import FirstChunks
        from workbench.namm.models import load_eager_model

        self.cfg = cfg
        self.model, self.tokenizer = load_eager_model(cfg.model, device=cfg.device)
        self.first_chunks = FirstChunks()

    @functools.cache  # noqa: B019 - one Context per process
    def examples(self, task: str, split: str = "train", n: int | None = None):
        """The first n prompts of a split (default: the training pool; example i does not depend on n)."""
        from workbench.namm.tasks import make_examples

        return make_examples(task, self.tokenizer, n or self.cfg.pool_size(), self.cfg.length, self.cfg.seed, split)

    def run(self, task: str, policy, split: str = "train", n: int | None = None, prompts: list[int] | None = None):
        """Evaluate a policy on the first n prompts of a split, or on `prompts` (indices) of them."""
        from workbench.namm.evaluation import evaluate

        examples = self.examples(task, split, n)
        if prompts is not None:
            examples = [examples[i] for i in prompts]
        with torch_threads(self.cfg.threads):
            return evaluate(self.model, self.tokenizer, examples, policy, n_up=self.cfg.n_up,
                            max_new_tokens=self.cfg.max_new_tokens, first_chunks=self.first_chunks)

    def shape(self) -> tuple[int, int, int]:
        from workbench.namm.cache import model_shape

        return model_shape(self.model.config)

    def collect_stats(self, task: str, prompts: list[int]) -> tuple[list[float], np.ndarray, np.ndarray, int]:
        """The first evaluation: θ = 0 (keeps every token: the full cache) on `prompts` of `task`'s training pool,
        collecting the statistics; (their full-cache scores, mean, var, values merged)."""
        from workbench.namm.policy import NAMMPolicy

        policy = NAMMPolicy(np.zeros(N_PARAMS), *self.shape(), stats=None)
        res = self.run(task, policy, prompts=prompts)
        s = policy.statistics
        return [a.score for a in res.answers], s.mean.numpy().copy(), s.var.numpy().copy(), int(s.count)

    def full_scores(self, task: str, split: str = "train", n: int | None = None) -> list[float]:
        from workbench.namm.baselines import FullCache

        return [a.score for a in self.run(task, FullCache(), split, n).answers]

    def policy(self, theta: np.ndarray, stats):
        from workbench.namm.policy import NAMMPolicy

        return NAMMPolicy(theta, *self.shape(), stats=stats, strict=self.cfg.variant == "strict",
                          max_kept=self.cfg.max_kept)


def context(cfg: NAMMTrainConfig) -> Context:
    """This process's Context for cfg (built once: workbench.scale.made_once)."""
    from workbench.scale import made_once

    return made_once(Context, cfg)


def evaluate_thetas(cfg: NAMMTrainConfig, tasks: list[str], thetas: np.ndarray, stats,
                    prompts: dict[str, list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(P, K) mean scores on each task's `prompts` (indices into its training pool) and (P,) mean kept fractions
    of candidates thetas (runs locally or as a Dask task)."""
    ctx = context(cfg)
    scores, kept = [], []
    for theta in np.asarray(thetas, np.float64):
        policy = ctx.policy(theta, stats)
        per_task, fractions = [], []
        for task in tasks:
            res = ctx.run(task, policy, prompts=prompts[task])
            per_task.append(res.score)
            fractions.extend(a.kept for a in res.answers)
        scores.append(per_task)
        kept.append(float(np.mean(fractions)))
    return np.asarray(scores, np.float64), np.asarray(kept, np.float64)


def evaluate_population(cfg: NAMMTrainConfig, tasks: list[str], thetas: np.ndarray, stats,
                        prompts: dict[str, list[int]], client=None) -> tuple[np.ndarray, np.ndarray]:
    """evaluate_thetas over a population, in chunks of cfg.chunk on Dask when a client is given."""
    chunks = [thetas[i: i + cfg.chunk] for i in range(0, len(thetas), cfg.chunk)]
    if client is None:
        parts = [evaluate_thetas(cfg, tasks, c, stats, prompts) for c in chunks]
    else:
        n = len(chunks)
        parts = client.gather(client.map(evaluate_thetas, [cfg] * n, [tasks] * n, chunks, [stats] * n,
                                         [prompts] * n, pure=False))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
