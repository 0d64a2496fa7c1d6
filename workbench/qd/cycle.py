"""The CycleQD loop as an ask/tell object: the caller builds, evaluates and stores the models.

    qd = CycleQD(CycleQDConfig(tasks=("add", "sort"), seed=0), seed_experts={"add": "add", "sort": "sort"})
    models = {}                                            # the caller's store: live elites only
    while qd.generation <= 100:
        child = qd.ask()                                   # generation 0: the K seed experts, one per ask
        theta = (zoo.state_dict(child.seed_expert) if child.is_seed
                 else build_child(child, theta0, [models[p] for p in child.parents], factors[child.task]))
        if qd.tell(child, evaluate(theta)):                # -> the archives it entered
            models[child.id] = theta
        models = {i: models[i] for i in qd.live_ids()}     # a model no archive holds is never a parent again

After `CycleQD.from_state(state)` the store comes back from lineage: `models = {i: rebuild(i, qd.child, theta0,
zoo.state_dict, factors) for i in qd.live_ids()}` (workbench.qd.lineage), bit for bit.

Generation 0 evaluates the K seed experts (ids 0..K-1, in task order) and inserts each with the usual rule.
Generation g >= 1 (id K - 1 + g) optimises the quality task q = tasks[g mod K] (spec §2): two distinct parents
from archive q (elite sampling, or uniform), model-wise ω_i ~ N(1 + μ, |σ|), then a mutation: SVD of q's seed
expert's task vector (the paper's method, our default) or Gaussian noise (the reference's default config, an
ablation). `CycleQDConfig.sampling` / `.mutation` record which ran. If archive q holds fewer than 2 elites, the
parents are drawn uniformly from the elites of all archives (pool "all archives"); with a single elite in all,
it is both parents (pool "single"). The reference would fail there; the child's `pool` records it.

Every random draw comes from SeedSequence([config.seed, generation]) (spawned per purpose: parents, ω,
mutation), so any generation can be recomputed from the archives it saw, and a resumed run (`state_dict()` ->
`CycleQD.from_state`) continues bit for bit: there is no generator state to carry. A child description
(`Child`) holds everything `build_child` needs to rebuild its weights from its parents' (lineage).

Batches (`CycleQDConfig.batch` = B > 1, for evaluating B children in parallel): generation g >= 1 has B
children, ids K + (g - 1)·B + i for i = 0..B-1. All B are drawn when the generation starts, from the archives
as they stand then (a child never sees a sibling), child i from SeedSequence([seed, g, i]) (i = 0 keeps
[seed, g], so the first child is the one a B = 1 run would draw from the same archives), and they are told
in index order, each inserted as it is told. So the result depends on B but not on where or in which order
the B evaluations run: a serial loop and a Dask pool give the same run. `ask_batch()` hands out the whole
generation; `ask()` / `tell()` still go one child at a time, in index order. Build the whole batch before telling
(a sibling told first can evict a parent), and prune the store after the generation:

    children = qd.ask_batch()
    thetas = [build(c) for c in children]                  # all from the parents alive at the start
    for child, theta, scores in zip(children, thetas, map(evaluate, thetas)):   # evaluate anywhere, in any order
        if qd.tell(child, scores):
            models[child.id] = theta
    models = {i: models[i] for i in qd.live_ids()}

Records, all plain data (dicts, lists and NumPy arrays): every evaluated model with its lineage, scores on all
tasks and the archives it entered (`records`); parent draw counts per model and archive (`draw_counts`); per
generation coverage, QD score and max quality per archive (`metrics`) and the archives' elite ids (`snapshot`).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np

from workbench.checkpoint import checkpointable
from workbench.qd.archives import DEFAULT_BINS, TaskArchives, check_bins, check_ranges, check_task_list
from workbench.qd.operators import MUTATION_SCALES, MUTATIONS
from workbench.qd.sampling import SAMPLERS

# /1 (one pending child), /2 (dense snapshots) and /3 (records and history as lists of dicts) are read too
STATE_FORMAT = "workbench.qd.CycleQD/4"
_FORMATS = ("workbench.qd.CycleQD/1", "workbench.qd.CycleQD/2", "workbench.qd.CycleQD/3", STATE_FORMAT)
_PARENTS, _OMEGAS, _MUTATION = range(3)   # the spawned seed streams of a generation


@dataclass
class CycleQDConfig:
    """The settings of a CycleQD run (all of them recorded with it).

    Args:
        tasks: K >= 2 distinct workbench.lm task names, in the order that defines the archives' axes.
        ranges: task -> fixed (lo, hi) its score is binned on; None: (0.0, 1.0) for every task (accuracies).
        bins: bins per task (the reference's 15; archives are (bins,) * (K - 1)).
        seed: the run seed; generation g draws from SeedSequence([seed, g]) (child i > 0 of a batch: [seed, g, i]).
        sampling: "elite" (the paper) or "uniform" (ablation); any key of workbench.qd.sampling.SAMPLERS.
        mutation: "svd" (the paper) or "gaussian" (ablation); any key of workbench.qd.operators.MUTATIONS.
        mutation_scale: κ of the SVD mutation (r ~ U(0, κ)) or σ of the Gaussian one; None: the method's
            default (0.1, 3e-4), written back so the record is explicit.
        omega_mu, omega_sigma: ω_i ~ N(1 + μ, |σ|) (the reference's 0 and 0.01).
        batch: children per generation (B >= 1), all drawn from the archives at the start of the generation
            and told in index order (see the module docstring); 1 is the reference's loop.
    """

    tasks: tuple[str, ...] = ("sort", "reverse", "brackets")
    ranges: dict[str, tuple[float, float]] | None = None
    bins: int = DEFAULT_BINS
    seed: int = 0
    sampling: str = "elite"
    mutation: str = "svd"
    mutation_scale: float | None = None
    omega_mu: float = 0.0
    omega_sigma: float = 0.01
    batch: int = 1

    def __post_init__(self):
        from workbench.lm.tasks import check_tasks

        self.tasks = tuple(check_tasks(check_task_list(self.tasks)))
        self.ranges = check_ranges(list(self.tasks), self.ranges)
        self.bins = check_bins(self.bins, len(self.tasks))
        # any whole number ≥ 0 (SeedSequence takes them all), not check_seed's < 2³² as the other configs: runs made
        # with larger seeds through the library must still resume
        if isinstance(self.seed, bool) or not isinstance(self.seed, Integral) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        self.seed = int(self.seed)
        if isinstance(self.batch, bool) or not isinstance(self.batch, Integral) or self.batch < 1:
            raise ValueError(f"batch must be a whole number of at least 1 (children per generation), "
                             f"got {self.batch!r}")
        self.batch = int(self.batch)
        if self.sampling not in SAMPLERS:
            raise ValueError(f"unknown sampling {self.sampling!r}; choose from {', '.join(SAMPLERS)}")
        if self.mutation not in MUTATIONS:
            raise ValueError(f"unknown mutation {self.mutation!r}; choose from {', '.join(MUTATIONS)}")
        if self.mutation_scale is None:
            if self.mutation not in MUTATION_SCALES:
                raise ValueError(f"mutation {self.mutation!r} has no default scale; set mutation_scale")
            self.mutation_scale = MUTATION_SCALES[self.mutation]
        for name in ("mutation_scale", "omega_mu", "omega_sigma"):
            given = getattr(self, name)
            value = float(given) if isinstance(given, Real) and not isinstance(given, bool) else np.nan
            if not np.isfinite(value) or (name == "mutation_scale" and value < 0):
                raise ValueError(f"{name} must be a finite number{' >= 0' if name == 'mutation_scale' else ''}, "
                                 f"got {getattr(self, name)!r}")
            setattr(self, name, value)

    @property
    def method(self) -> str:
        """Which variant runs, in words: the paper's method or an ablation."""
        words = f"{self.sampling} sampling + {self.mutation} mutation"
        return words + (" (the paper's method)" if (self.sampling, self.mutation) == ("elite", "svd")
                        else " (an ablation; the paper's method is elite sampling + svd mutation)")

    def to_dict(self) -> dict:
        """JSON-ready fields (ranges as [lo, hi] lists)."""
        out = dataclasses.asdict(self)
        out["tasks"], out["ranges"] = list(self.tasks), {t: list(r) for t, r in self.ranges.items()}
        return out

    @classmethod
    def from_dict(cls, d: Mapping) -> CycleQDConfig:
        """A config from its dict (run.json's); ValueError naming fields it does not know."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown CycleQD config fields {unknown}; known: {sorted(names)}")
        return cls(**d)


@dataclass(frozen=True)
class Child:
    """One model to evaluate: a seed expert (generation 0) or a child, with everything that rebuilds it.

    Attributes:
        id: its model id (seeds 0..K-1 in task order, then K - 1 + generation; with batches K + (g - 1)·B + i).
        generation: 0 for seed experts.
        task: the generation's quality task q (a seed: the task it is the expert of).
        parents: the two parents' ids (() for a seed).
        omegas: one crossover weight per parent.
        mutation: "svd", "gaussian", ... ("none" for a seed).
        mutation_seed: the integer every mutation draw comes from (per tensor: SeedSequence([seed, crc32(name)])).
        mutation_scale: κ or σ.
        seed_expert: a seed's model name (None for a child).
        pool: where the parents came from: "archive" (archive q), "all archives", "single" (one elite in all), or
            "seed".
        index: its place in its generation (0..B-1 for a child, the task's index for a seed).
    """

    id: int
    generation: int
    task: str
    parents: tuple[int, ...] = ()
    omegas: tuple[float, ...] = ()
    mutation: str = "none"
    mutation_seed: int = 0
    mutation_scale: float = 0.0
    seed_expert: str | None = None
    pool: str = "archive"
    index: int = 0

    @property
    def is_seed(self) -> bool:
        """Whether it is a seed expert (no parents) rather than a child."""
        return not self.parents

    def to_dict(self) -> dict:
        """The child as a JSON-able dict (parents and omegas as lists)."""
        d = dataclasses.asdict(self)
        d["parents"], d["omegas"] = list(self.parents), list(self.omegas)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> Child:
        """A child from to_dict's dict (keys that are no field are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: (tuple(v) if k in ("parents", "omegas") else v) for k, v in d.items() if k in names})


@checkpointable("qd.CycleQD")
class CycleQD:
    """CycleQD (Kuroki et al., 2024) over models as an ask/tell optimiser.

    Args:
        config: the run's settings (CycleQDConfig).
        seed_experts: task -> the name of that task's seed expert (e.g. its zoo model name), for every task.

    Attributes:
        config, seed_experts, archives (TaskArchives), generation (the generation the next ask belongs to).
    """

    def __init__(self, config: CycleQDConfig, seed_experts: Mapping[str, str]):
        if not isinstance(config, CycleQDConfig):
            raise ValueError(f"config must be a CycleQDConfig, got {type(config).__name__}")
        self.config = config
        tasks = list(config.tasks)
        if not isinstance(seed_experts, Mapping):
            raise ValueError(f"seed_experts must map each task to its expert's name, got {type(seed_experts).__name__}")
        unknown = [t for t in seed_experts if t not in tasks]
        if unknown:
            raise ValueError(f"seed_experts name {unknown}, not among the tasks {tasks}; fix the name or add the task")
        missing = [t for t in tasks if t not in seed_experts]
        if missing:
            raise ValueError(f"task{'s' if len(missing) > 1 else ''} {missing} ha{'ve' if len(missing) > 1 else 's'} "
                             f"no seed expert; pass seed_experts={{{missing[0]!r}: <its fine-tuned expert>, ...}} "
                             f"(CycleQD starts from one expert per task)")
        self.seed_experts = {t: str(seed_experts[t]) for t in tasks}
        self.archives = TaskArchives(tasks, config.ranges, config.bins)
        self.generation = 0
        self._records: list[dict] = []
        self._pending: list[Child] = []           # the current generation's children not told yet, in order
        # per finished generation, the cells it changed: (n, 3) int64 rows (archive k, flat cell, elite id). A
        # dense (K, *grid) copy per generation grew as generations × K × bins^(K-1): 400 MB rewritten each
        # generation of a five-task run at the reference's 15 bins
        self._changes: list[np.ndarray] = []
        self._last = self._dense_ids()            # the archives' elite ids after the last finished generation
        self._history: list[dict] = []            # per finished generation: the archives' statistics
        self._columns: dict | None = None         # state_dict's columns so far (_state_columns), grown by what is new

    @property
    def tasks(self) -> list[str]:
        """The tasks, one archive each (config.tasks)."""
        return list(self.config.tasks)

    @property
    def quality_task(self) -> str | None:
        """The task generation `self.generation` optimises (None in generation 0)."""
        return None if self.generation == 0 else self.tasks[self.generation % len(self.tasks)]

    # --- ask / tell ---

    def ask(self) -> Child:
        """The next model to evaluate. Asking again before `tell` returns the same child."""
        return self.ask_batch()[0]

    def ask_batch(self) -> list[Child]:
        """Every child of the current generation not told yet, in the order they must be told: the K seed
        experts in generation 0, then the generation's B children (the first `ask_batch` of a generation draws
        them all, from the archives as they stand). Asking again before `tell` returns the same children.

        Build (or hold on to the parents of) every child of the batch before telling the first one: a sibling told
        earlier can evict a parent from the archives, and so from `live_ids()`."""
        if not self._pending:
            if self.generation == 0:
                self._pending = [self._seed(i) for i in range(len(self._records), len(self.tasks))]
            else:
                start = len(self._records)
                self._pending = [self._breed(start + i, i) for i in range(self.config.batch)]
        return list(self._pending)

    def _seed(self, i: int) -> Child:
        task = self.tasks[i]
        return Child(id=i, generation=0, task=task, seed_expert=self.seed_experts[task], pool="seed", index=i)

    def _breed(self, model_id: int, index: int) -> Child:
        g, cfg = self.generation, self.config
        q = self.tasks[g % len(self.tasks)]
        streams = np.random.SeedSequence([cfg.seed, g] if index == 0 else [cfg.seed, g, index]).spawn(3)
        rng = np.random.default_rng(streams[_PARENTS])
        ids, cells, quality = self.archives.elites(q)
        if len(ids) >= 2:
            pool, parents = "archive", ids[SAMPLERS[cfg.sampling](rng, cells, quality)]
        else:
            everyone = self.archives.elite_ids()
            if len(everyone) >= 2:
                pool, parents = "all archives", everyone[rng.choice(len(everyone), size=2, replace=False)]
            else:
                pool, parents = "single", everyone[[0, 0]]
        omegas = np.random.default_rng(streams[_OMEGAS]).normal(1.0 + cfg.omega_mu, abs(cfg.omega_sigma), size=2)
        return Child(id=model_id, generation=g, task=q, parents=tuple(int(p) for p in parents),
                     omegas=tuple(float(w) for w in omegas), mutation=cfg.mutation,
                     mutation_seed=int(streams[_MUTATION].generate_state(1)[0]),
                     mutation_scale=float(cfg.mutation_scale), pool=pool, index=index)

    def tell(self, child: Child, scores: Mapping[str, float]) -> list[str]:
        """Record the evaluated child and insert it into every archive it enters.

        Args:
            child: the child of the last `ask()` (with batches: the first child of `ask_batch()` not told yet;
                a generation's children are told in index order).
            scores: task -> score, for every task.
        Returns:
            the archives entered, in task order ([]: the child need not be kept).
        """
        if not self._pending or child != self._pending[0]:
            pending = self._pending[0].id if self._pending else None
            got = getattr(child, "id", child)
            raise ValueError(f"tell the child of the last ask() (pending: {pending}, got {got}); a generation's "
                             f"children are told in the order ask_batch() lists them")
        scores = self.archives.check_scores(scores)
        entered = self.archives.add(child.id, scores)
        self._records.append({**child.to_dict(), "scores": scores, "entered": entered, "kept": bool(entered)})
        self._pending.pop(0)
        if not self._pending and (self.generation > 0 or len(self._records) == len(self.tasks)):
            self._finish_generation()
        return list(entered)  # not the record's own list: records never change once told (state_dict keeps them)

    def _dense_ids(self) -> np.ndarray:
        """The archives' elite ids now, flat: (K, cells) int64, -1 where empty."""
        return np.stack([self.archives.grid(t)[0].reshape(-1) for t in self.tasks])

    def _empty_ids(self) -> np.ndarray:
        """Archives with no elite yet, flat: (K, cells) int64 of -1 (as _dense_ids)."""
        return np.full((len(self.tasks), int(np.prod(self.archives.shape))), -1, np.int64)

    def _finish_generation(self) -> None:
        now = self._dense_ids()
        self._changes.append(_changed(self._last, now))
        self._last = now
        stats = [self.archives.stats(t) for t in self.tasks]
        told = self._records[-self.config.batch:] if self.generation else self._records   # B children, or K seeds
        self._history.append({"generation": self.generation, "task": self.quality_task,
                              "evaluated": [r["id"] for r in told],
                              "entered": sorted({t for r in told for t in r["entered"]}, key=self.tasks.index),
                              **{k: [s[k] for s in stats] for k in ("coverage", "qd_score", "max_quality")}})
        self.generation += 1

    # --- records ---

    @property
    def evaluated(self) -> int:
        """How many models have been told (evaluated): their ids run from 0 to evaluated − 1."""
        return len(self._records)

    @property
    def records(self) -> list[dict]:
        """Every evaluated model in id order: Child fields + scores (task -> float), entered (archive names) and
        kept (entered at least one archive). Copies."""
        return self.records_since(0)

    def records_since(self, start: int) -> list[dict]:
        """The records of models start, start + 1, … (copies, as `records`): for a caller that keeps its own table
        and adds the models told since it last looked (copying every record each generation grows with the run)."""
        return [_copied(r) for r in self._records[start:]]

    def told_in(self, generation: int) -> list[dict]:
        """The records of the models a finished generation told (the K seed experts in 0, its B children in each
        later one), copies as `records`."""
        self._check_generation(generation)
        return [_copied(self._records[i]) for i in self._history[generation]["evaluated"]]

    def child(self, model_id: int) -> Child:
        """The Child description of an evaluated (or pending) model: its lineage, for rebuilding it."""
        for child in self._pending:
            if model_id == child.id:
                return child
        return Child.from_dict(self._record(model_id))

    def scores(self, model_id: int) -> dict[str, float]:
        """The task scores of the evaluated model `model_id`, {task: score} (a copy). Raises ValueError for an id
        not evaluated yet (a negative one read a model from the end; one past the end was an IndexError)."""
        return dict(self._record(model_id, "evaluated model")["scores"])

    def _record(self, model_id: int, what: str = "model") -> dict:
        """The record of evaluated model `model_id`; ValueError naming the ids there are for another."""
        if not (0 <= int(model_id) < len(self._records)):
            raise ValueError(f"no {what} {model_id}: ids run from 0 to {len(self._records) - 1}")
        return self._records[int(model_id)]

    def live_ids(self) -> list[int]:
        """Ids of the models some archive holds: the only ones a later generation can draw as parents."""
        return self.archives.elite_ids().tolist()

    def draw_counts(self, generation: int | None = None) -> np.ndarray:
        """(models, K) int64: how often each model was drawn as a parent from archive k (in the generations
        optimising task k), up to and including `generation` (default: every told child): the reference's sampling
        frequency. Draws from all archives (pool "all archives" or "single": archive k held fewer than 2 elites)
        are not from archive k, and not counted."""
        counts = np.zeros((len(self._records), len(self.tasks)), np.int64)
        for r in self._records:
            if generation is None or r["generation"] <= generation:
                for p in drawn_parents(r):
                    counts[p, self.tasks.index(r["task"])] += 1
        return counts

    def metrics(self) -> dict:
        """Per finished generation: generation (G,), task (quality task, None for 0), coverage, qd_score and
        max_quality (G, K) arrays with columns in task order."""
        h = self._history
        out: dict = {"tasks": self.tasks, "generation": np.array([x["generation"] for x in h], np.int64),
                     "task": [x["task"] for x in h]}
        for k in ("coverage", "qd_score", "max_quality"):
            out[k] = np.array([x[k] for x in h], np.float64).reshape(len(h), len(self.tasks))
        return out

    def last_statistics(self) -> dict:
        """The last finished generation's row of metrics(): generation, task, and coverage, qd_score and max_quality
        as (K,) arrays (the same numbers, without the arrays of every generation)."""
        if not self._history:
            raise ValueError("no generation has finished yet")
        h = self._history[-1]
        return {"generation": h["generation"], "task": h["task"],
                **{k: np.array(h[k], np.float64).reshape(len(self.tasks)) for k in ("coverage", "qd_score",
                                                                                    "max_quality")}}

    @property
    def finished(self) -> int:
        """How many generations have finished (their snapshots: 0 .. finished - 1)."""
        return len(self._changes)

    def _check_generation(self, generation: int) -> None:
        if not (0 <= generation < len(self._changes)):
            raise ValueError(f"no snapshot of generation {generation}; "
                             f"finished generations: 0..{len(self._changes) - 1}")

    def snapshot_ids(self, generation: int) -> np.ndarray:
        """The archives' elite ids as they were after `generation`: (K, *grid) int64, -1 where empty."""
        self._check_generation(generation)
        ids = self._empty_ids()
        for change in self._changes[: generation + 1]:
            ids[change[:, 0], change[:, 1]] = change[:, 2]
        return ids.reshape(len(self.tasks), *self.archives.shape)

    def changes(self, generation: int) -> np.ndarray:
        """The cells generation `generation` changed: (n, 3) int64 rows of archive k (task order), flat cell
        (row-major in the archive's shape) and the elite id now there. Copies."""
        self._check_generation(generation)
        return self._changes[generation].copy()

    def snapshot(self, generation: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The archives as they were after `generation`: task -> (elite ids, qualities), as `TaskArchives.grid`."""
        snap = self.snapshot_ids(generation)
        out = {}
        for k, task in enumerate(self.tasks):
            ids = snap[k]
            quality = np.full(ids.shape, np.nan)
            for idx in zip(*np.nonzero(ids >= 0), strict=True):
                quality[idx] = self._records[ids[idx]]["scores"][task]
            out[task] = (ids, quality)
        return out

    def snapshot_archives(self, generation: int) -> TaskArchives:
        """The archives after `generation` as a TaskArchives."""
        archives = TaskArchives(self.tasks, self.config.ranges, self.config.bins)
        for task, (ids, quality) in self.snapshot(generation).items():
            for idx in zip(*np.nonzero(ids >= 0), strict=True):
                archives.place(task, idx, int(ids[idx]), float(quality[idx]))
        return archives

    def model_path(self, model_id: int) -> str:
        """The default `model_path` of the reference's archive map: a seed's name, `models/gen_{g}` for a child
        (the reference saves a child of generation g in {model_dir}/gen_{g}); `models/gen_{g}_{i}` for child i
        of a batch (B > 1)."""
        r = self._records[int(model_id)]
        if r["seed_expert"] is not None:
            return r["seed_expert"]
        return f"models/gen_{r['generation']}" + (f"_{r.get('index', 0)}" if self.config.batch > 1 else "")

    def archive_map(self, generation: int | None = None, model_path: Callable[[int], str] | None = None,
                    validation_quality: Callable[[str, int], float | None] | None = None) -> dict:
        """The archives after `generation` (default: the last finished one) in the reference's
        `gen{N}_archive_map.json` format; sampling_freq = 1 + draws from that archive up to then (the
        reference starts each entry at 1). Write it with workbench.qd.archive_map.write_archive_map."""
        from workbench.qd.archive_map import to_archive_map

        generation = len(self._changes) - 1 if generation is None else generation
        counts = self.draw_counts(generation)
        return to_archive_map(self.snapshot_archives(generation), model_path or self.model_path,
                              sampling_freq=lambda task, i: 1 + int(counts[i, self.tasks.index(task)]),
                              validation_quality=validation_quality)

    # --- checkpoints ---

    def state_dict(self) -> dict:
        """Everything, as plain values and arrays (no pickle): config, seed experts, generation, the archives,
        every record, the pending children, the cells each generation changed (snapshot_changes: (n, 4) int64
        rows of generation, archive k, flat cell, elite id) and per-generation statistics. The records and the
        statistics are columns (arrays): a run writes its state every generation, and as lists of dicts encoding
        them grew with the run (a checkpoint at generation 1000 took 59 ms to write, 20 ms as columns)."""
        records, changes, history = self._state_columns()
        return {"format": STATE_FORMAT, "config": self.config.to_dict(), "seed_experts": dict(self.seed_experts),
                "generation": self.generation, "archives": self.archives.state_dict(),
                "records": records,
                "pending": [c.to_dict() for c in self._pending],
                "snapshot_changes": changes,
                "history": history}

    def _state_columns(self) -> tuple[dict, np.ndarray, dict]:
        """state_dict's records, snapshot changes and history columns, made from the records, generations and
        statistics added since the last call and joined to the columns kept from it (records and statistics never
        change once added): made whole at every checkpoint they cost 26 ms at generation 3,000 and 33 ms at 8,000
        models (batch 8), growing with the run. The same arrays, value for value and dtype for dtype."""
        c = self._columns
        if c is None or c["of"] is not self._records or c["n"] > len(self._records) \
                or c["g"] > len(self._changes) or c["h"] > len(self._history):
            c = self._columns = {"of": self._records, "n": 0, "g": 0, "h": 0, "records": None,
                                 "changes": np.zeros((0, 4), np.int64), "history": None}
        if c["records"] is None or len(self._records) > c["n"]:
            c["records"] = _joined(c["records"], _record_columns(self._records[c["n"]:], self.tasks))
            c["n"] = len(self._records)
        if len(self._changes) > c["g"]:
            new = [np.concatenate([np.full((len(x), 1), g, np.int64), x], axis=1)
                   for g, x in enumerate(self._changes[c["g"]:], c["g"])]
            c["changes"] = np.concatenate([c["changes"], *new])
            c["g"] = len(self._changes)
        if c["history"] is None or len(self._history) > c["h"]:
            c["history"] = _joined(c["history"], _history_columns(self._history[c["h"]:], self.tasks))
            c["h"] = len(self._history)
        for a in _arrays([c["records"], c["changes"], c["history"]]):  # handed out by every state_dict: read-only
            a.flags.writeable = False
        return c["records"], c["changes"], c["history"]

    @classmethod
    def from_state(cls, state: Mapping) -> CycleQD:
        """The CycleQD `state_dict()` wrote; it continues exactly as the original would have."""
        if state.get("format") not in _FORMATS:
            raise ValueError(f"not a CycleQD state (format {state.get('format')!r}, expected {STATE_FORMAT!r})")
        qd = cls(CycleQDConfig.from_dict(state["config"]), state["seed_experts"])
        qd.generation = int(state["generation"])
        qd.archives = TaskArchives.from_state(state["archives"])
        records = state["records"]
        qd._records = (_records_of(records, qd.tasks) if isinstance(records, Mapping)      # /4: columns
                       else [_record(r) for r in records])
        pending = state["pending"]
        pending = [] if pending is None else [pending] if isinstance(pending, Mapping) else pending   # /1: one child
        qd._pending = [Child.from_dict(c) for c in pending]
        history = state["history"]
        qd._history = _history_of(history, qd.tasks) if isinstance(history, Mapping) else [dict(h) for h in history]
        if "snapshot_changes" in state:
            rows = np.asarray(state["snapshot_changes"], np.int64).reshape(-1, 4)
            qd._changes = [rows[rows[:, 0] == g, 1:] for g in range(len(qd._history))]
        else:  # /1, /2: a dense (K, *grid) snapshot per finished generation
            before = qd._empty_ids()
            for snap in state["snapshots"]:
                now = np.asarray(snap, np.int64).reshape(len(qd.tasks), -1)
                qd._changes.append(_changed(before, now))
                before = now
        qd._last = qd.snapshot_ids(qd.finished - 1).reshape(len(qd.tasks), -1) if qd.finished else qd._empty_ids()
        return qd


def _changed(before: np.ndarray, now: np.ndarray) -> np.ndarray:
    """The cells whose elite differs between two flat (K, cells) id arrays: (n, 3) int64 rows of archive k, flat
    cell and the elite id now there."""
    k, cell = np.nonzero(now != before)
    return np.stack([k, cell, now[k, cell]], axis=1).astype(np.int64)


def _copied(r: dict) -> dict:
    """A record to hand out: its lists and dicts copied."""
    return {**r, "parents": list(r["parents"]), "omegas": list(r["omegas"]), "scores": dict(r["scores"]),
            "entered": list(r["entered"])}


def drawn_parents(record: Mapping) -> list[int]:
    """The parents a record's model drew from the archive of its quality task: what the sampling frequency
    (CycleQD.draw_counts) counts. None for a seed expert, or parents drawn from all archives (pool "all archives"
    or "single": the task's archive held fewer than 2 elites)."""
    return list(record["parents"]) if record["parents"] and record["pool"] == "archive" else []


def _record(r: Mapping) -> dict:
    """A record read back from a checkpoint's list (/1 – /3), with the keys, order and types `tell` writes (JSON
    turns tuples into lists; /1 had no index: its default)."""
    out = {f.name: r.get(f.name, f.default) if f.default is not dataclasses.MISSING else r[f.name]
           for f in dataclasses.fields(Child)}
    out["parents"], out["omegas"] = [int(p) for p in r["parents"]], [float(w) for w in r["omegas"]]
    out["scores"], out["entered"] = {t: float(v) for t, v in r["scores"].items()}, list(r["entered"])
    out["kept"] = bool(r.get("kept", out["entered"]))
    return out


# --- the state's columns (format /4) -------------------------------------------------------------------------------
# Every value comes back as `tell` and `_finish_generation` made it: ints, floats (bit for bit, NaN included), task
# names, None; dicts and lists in their order. Names are written once, with int codes per row.


def _named(values: list) -> dict:
    names = list(dict.fromkeys(values))
    index = {v: i for i, v in enumerate(names)}
    return {"names": names, "codes": np.array([index[v] for v in values], np.int64)}


def _unnamed(column: Mapping) -> list:
    names = list(column["names"])
    return [names[i] for i in np.asarray(column["codes"], np.int64).tolist()]


def _ragged(lists: list[list], dtype: type) -> dict:
    return {"counts": np.array([len(x) for x in lists], np.int64),
            "values": np.array([v for x in lists for v in x], dtype)}


def _unragged(column: Mapping) -> list[list]:
    values = np.asarray(column["values"]).tolist()
    ends = list(itertools.accumulate(np.asarray(column["counts"], np.int64).tolist()))
    # the starts are one longer than the ends: no rows gives none (a state before generation 0 ends)
    return [values[a:b] for a, b in zip([0, *ends], ends, strict=False)]


def _in_tasks(rows: list[list[str]], tasks: list[str]) -> np.ndarray:
    """(N, K) bool: row n names task k (each row's names are in task order)."""
    mask = np.zeros((len(rows), len(tasks)), bool)
    for n, names in enumerate(rows):
        mask[n, [tasks.index(t) for t in names]] = True
    return mask


def _of_tasks(mask: np.ndarray, tasks: list[str]) -> list[list[str]]:
    return [[tasks[k] for k in np.flatnonzero(row)] for row in np.asarray(mask, bool).reshape(-1, len(tasks))]


def _arrays(value) -> list[np.ndarray]:
    if isinstance(value, np.ndarray):
        return [value]
    if isinstance(value, dict):
        return [a for v in value.values() for a in _arrays(v)]
    if isinstance(value, list):
        return [a for v in value for a in _arrays(v)]
    return []


def _joined(before: dict | None, after: dict) -> dict:
    """The columns of two runs of rows, one after the other, as _record_columns / _history_columns make them for the
    rows together: arrays joined along their rows, names in the order they first appear, codes renumbered."""
    if before is None:
        return after
    out = {}
    for key, a in before.items():
        b = after[key]
        if isinstance(a, np.ndarray):
            out[key] = np.concatenate([a, b])
        elif "names" in a:
            names = list(dict.fromkeys([*a["names"], *b["names"]]))
            index = {v: i for i, v in enumerate(names)}
            renumber = np.array([index[v] for v in b["names"]], np.int64)
            out[key] = {"names": names, "codes": np.concatenate([a["codes"], renumber[b["codes"]]])}
        else:
            out[key] = {"counts": np.concatenate([a["counts"], b["counts"]]),
                        "values": np.concatenate([a["values"], b["values"]])}
    return out


def _record_columns(records: list[dict], tasks: list[str]) -> dict:
    """The records as columns: ints, floats, names, ragged parents and omegas, (N, K) scores and entered."""
    get = {k: [r[k] for r in records] for k in ("id", "generation", "index", "mutation_seed")}
    return {**{k: np.array(v, np.int64) for k, v in get.items()},
            **{k: _named([r[k] for r in records]) for k in ("task", "mutation", "seed_expert", "pool")},
            "mutation_scale": np.array([r["mutation_scale"] for r in records], np.float64),
            "parents": _ragged([r["parents"] for r in records], np.int64),
            "omegas": _ragged([r["omegas"] for r in records], np.float64),
            "scores": np.array([[r["scores"][t] for t in tasks] for r in records], np.float64).reshape(-1, len(tasks)),
            "entered": _in_tasks([r["entered"] for r in records], tasks)}


def _records_of(columns: Mapping, tasks: list[str]) -> list[dict]:
    """The records _record_columns wrote, each with the keys (in their order) and types `tell` gives it."""
    ints = {k: np.asarray(columns[k], np.int64).tolist() for k in ("id", "generation", "index", "mutation_seed")}
    named = {k: _unnamed(columns[k]) for k in ("task", "mutation", "seed_expert", "pool")}
    scale = np.asarray(columns["mutation_scale"], np.float64).tolist()
    parents, omegas = _unragged(columns["parents"]), _unragged(columns["omegas"])
    scores = np.asarray(columns["scores"], np.float64).reshape(-1, len(tasks)).tolist()
    entered = _of_tasks(columns["entered"], tasks)
    return [{"id": ints["id"][n], "generation": ints["generation"][n], "task": named["task"][n],
             "parents": parents[n], "omegas": omegas[n], "mutation": named["mutation"][n],
             "mutation_seed": ints["mutation_seed"][n], "mutation_scale": scale[n],
             "seed_expert": named["seed_expert"][n], "pool": named["pool"][n], "index": ints["index"][n],
             "scores": dict(zip(tasks, scores[n], strict=True)), "entered": entered[n], "kept": bool(entered[n])}
            for n in range(len(ints["id"]))]


_STATISTICS = ("coverage", "qd_score", "max_quality")


def _history_columns(history: list[dict], tasks: list[str]) -> dict:
    """Per finished generation: its number, quality task (None for 0), models evaluated, archives entered and the
    (G, K) statistics."""
    return {"generation": np.array([h["generation"] for h in history], np.int64),
            "task": _named([h["task"] for h in history]),
            "evaluated": _ragged([h["evaluated"] for h in history], np.int64),
            "entered": _in_tasks([h["entered"] for h in history], tasks),
            **{k: np.array([h[k] for h in history], np.float64).reshape(-1, len(tasks)) for k in _STATISTICS}}


def _history_of(columns: Mapping, tasks: list[str]) -> list[dict]:
    generation = np.asarray(columns["generation"], np.int64).tolist()
    task, evaluated = _unnamed(columns["task"]), _unragged(columns["evaluated"])
    entered = _of_tasks(columns["entered"], tasks)
    stats = {k: np.asarray(columns[k], np.float64).reshape(-1, len(tasks)).tolist() for k in _STATISTICS}
    return [{"generation": generation[g], "task": task[g], "evaluated": evaluated[g], "entered": entered[g],
             **{k: stats[k][g] for k in _STATISTICS}} for g in range(len(generation))]
