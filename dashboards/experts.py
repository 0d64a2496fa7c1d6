"""Expert-mixing explorer (Transformer², spec §4): open a stored `experts` or `adapt` run and look at what is
mixed — the singular-value scales z of each expert per layer and matrix, z against the rank of σ, the mixing
weights α that CEM found per number of shots (and per target task, per matrix), the dispatchers' confusion
matrices, accuracy against the number of shots, base vs experts vs strategies per task with the spread over
seeds, SVF against LoRA experts, the training / CEM curve — and mix the experts by hand: one slider per expert
recomposes the model (z′ = Σ α·p, composed once) and answers a prompt.

    model = ExpertsModel(runs_dir="runs", run_id=ID)
    model.figure("z"); model.export("alpha", "figures", ".pdf")
    model.alphas = [0.3, 0.7]; model.answer("s:kdpa=")          # the mixture's greedy answer

`panel serve dashboards/experts.py --args RUNS_DIR` or `workbench serve` (page /experts, `?run=ID`) shows it.
"""

from __future__ import annotations

import html
import math
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import panel as pn
import param

from workbench.checks import shell_path, user_path
from workbench.compare import replicates_of
from workbench.dashboards.shell import (
    FITS_WHEN_NARROW,
    ROW_WIDTH,
    SHRINKS_WHEN_NARROW,
    WRAPS_WHEN_NARROW,
    Follower,
    TextMultiChoice,
    as_text,
    code,
    code_content,
    counted,
    failed,
    literal,
    live,
    newest_readable,
    placeholder,
    plain,
    scrolls,
    when_narrow,
)
from workbench.figures import ACCURACY, CURVE_POINTS, holoviews, sized_by_frame, styled, text_colours
from workbench.lm.hf import transformers_imported
from workbench.runs import Run, RunError, RunStore, a_kind_run, config_of

if TYPE_CHECKING:
    from holoviews.core.dimension import Dimensioned

KINDS = ("experts", "adapt")
VIEWS = {"z": "z per expert", "z_rank": "z vs σ rank", "curve": "Adaptation curve", "alpha": "Mixing weights α",
         "confusion": "Dispatcher confusion", "shots": "Accuracy vs shots", "strategies": "Strategies per task",
         "svf_lora": "SVF vs LoRA"}
#: the Mixer tab as a view: export writes the z′ of the α its sliders set
MIXER = "mixer"
MEAN = "mean over matrices"
ACCENT = "#2f5d8a"
Z0 = 1.0 / (1.0 + math.exp(-0.1))  # z = sigmoid(0.1) where every expert starts (INIT_VALUE): "unchanged"


# --- reading runs ------------------------------------------------------------------------------------------------

@dataclass
class Expert:
    """One SVF expert as the explorer shows it: raw parameters p per matrix (NumPy) and where it came from."""

    label: str
    task: str
    params: dict[str, np.ndarray]
    meta: dict = field(default_factory=dict)

    def z(self) -> dict[str, np.ndarray]:
        """z = sigmoid(p) (max_mult 1, the reference's) per matrix."""
        return {n: 1.0 / (1.0 + np.exp(-p.astype(np.float64))) for n, p in self.params.items()}


@dataclass
class ExpertsData:
    """A run's files, read once: run.json, metrics, scores.json and its SVF experts (none for a LoRA run)."""

    run: Run
    info: dict
    metrics: pd.DataFrame
    scores: dict | None
    experts: list[Expert]
    damaged: list[str] = field(default_factory=list)  # the files it could not read (their views are empty)

    @property
    def kind(self) -> str:
        return self.info["kind"]

    @property
    def config(self) -> dict:
        return self.info["config"]

    @property
    def matrices(self) -> list[str]:
        """The experts' matrices, in their file's order (alphabetical): z rows are found by name."""
        return list(self.experts[0].params) if self.experts else []

    @property
    def alpha_matrices(self) -> list[str] | None:
        """The matrices of a few-shot α's columns: the model's order (gate, up, down of a layer), which adapt
        records in scores.json; for a run made before, that of the recorded model folder's architecture (built on
        the meta device: no weights); None where neither is known. (The file's order put each α on another
        matrix.)"""
        recorded = (self.scores or {}).get("matrices")
        if recorded:
            return list(recorded)
        folder = Path(str(self.config.get("model", "")))
        if not (folder / "config.json").is_file():
            return None
        try:
            transformers_imported()  # the first import of transformers under one lock
            from accelerate import init_empty_weights
            from transformers import AutoConfig, AutoModelForCausalLM

            from workbench.experts.model import svf_matrix_names

            with init_empty_weights():
                skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder))
            names = svf_matrix_names(skeleton)
        except Exception:  # an unreadable folder: the columns stay unnamed
            return None
        return names if sorted(names) == sorted(self.matrices) else None

    @property
    def task_experts(self) -> list[Expert]:
        """The experts mixed by few-shot adaptation and by the mixer (the classification expert is a dispatcher)."""
        return [e for e in self.experts if e.task != "classify"]

    @property
    def views(self) -> list[str]:
        """The views this run has something for, in page order."""
        out = ["z", "z_rank"] if self.experts else []
        s = self.scores or {}
        if self.kind == "experts":
            out.append("curve")
        else:
            if s.get("few_shot") or any(str(u).startswith("few-shot") for u in self.metrics.get("unit", [])):
                out.append("curve")
            if s.get("few_shot"):
                out.append("alpha")
            if s.get("dispatch"):
                out.append("confusion")
            if s.get("few_shot"):
                out.append("shots")
            if s.get("strategies"):
                out.append("strategies")
        out.append("svf_lora")
        return out


def matrix_label(name: str) -> str:
    """A short row label for a matrix: 'model.layers.3.mlp.gate_proj.weight' -> 'L3 gate'."""
    layer = re.search(r"(?:layers|layer|h|blocks)\.(\d+)\.", name)
    part = name.split("mlp.", 1)[-1].removesuffix(".weight").removesuffix("_proj").replace("_proj.", ".")
    return f"L{layer.group(1)} {part}" if layer else part


def _load_expert_file(path: Path, label: str | None = None) -> Expert:
    from workbench.experts.model import load_expert

    params, meta = load_expert(path)
    task = str(meta.get("task", "?"))
    return Expert(label or task, task, {n: p.numpy() for n, p in params.items()}, meta)


def read_run(store: RunStore, run_id: str) -> ExpertsData:
    """An `experts` or `adapt` run's files; ValueError naming the reason for anything else."""
    try:
        run = store.open(run_id)
    except RunError as exc:
        raise ValueError(str(exc)) from None
    info = run.info
    kind = info.get("kind")
    if kind not in KINDS:
        raise ValueError(f"{run.id!r} is {a_kind_run(kind)}; the Experts page opens experts and adapt runs "
                         "(`workbench experts train|adapt`)")
    # what the page's summary and expert labels read
    cfg = config_of(info, *(("adapter", "task", "model", "seed", "iters") if kind == "experts" else
                            ("model", "alpha", "variant")))
    from workbench.experts.mixing import VARIANTS

    inputs = info.get("expert_inputs")
    bad = [k for k in (("task", "model") if kind == "experts" else ("model", "alpha")) if not isinstance(cfg[k], str)]
    bad += ["variant"] if kind == "adapt" and cfg["variant"] not in VARIANTS else []
    bad += ["expert_inputs"] if inputs is not None and not (isinstance(inputs, list) and all(
        isinstance(r, dict) and isinstance(r.get("path"), str) for r in inputs)) else []
    if bad:  # each made the page a traceback (a TypeError, param's ValueError), not a run passed over
        raise RunError(f"run {run.id}'s run.json holds {', '.join(bad)} of another type or value: it is damaged")
    metrics, damaged = run.table_frame("metrics")
    scores = run.read_json("scores.json")
    experts: list[Expert] = []
    if kind == "experts" and cfg.get("adapter") == "svf":
        label = f"{cfg['task']} (seed {cfg['seed']})"
        if (run.path / "expert.safetensors").exists():
            experts.append(_load_expert_file(run.path / "expert.safetensors", label))
        elif (run.path / "checkpoint.json").exists():  # still training: its best expert so far
            state = run.load_checkpoint() or {}
            best = ((state.get("trainer") or {}).get("best") or {}).get("params")
            if best:
                experts.append(Expert(label, cfg["task"], {n: np.asarray(v, np.float32) for n, v in best.items()}))
    elif kind == "adapt":
        for rec in info.get("expert_inputs") or []:
            if (run.path / rec["path"]).exists():
                experts.append(_load_expert_file(run.path / rec["path"]))
    return ExpertsData(run, info, metrics, scores, experts, [damaged] if damaged else [])


def _torch_experts(experts: list[Expert]) -> list[dict]:
    import torch

    return [{n: torch.from_numpy(np.asarray(p, np.float32)) for n, p in e.params.items()} for e in experts]


def grouped(n: int) -> str:
    """A count with its thousands apart: 1152 -> "1 152"."""
    return f"{n:,}".replace(",", " ")


def spread(values: list[float]) -> dict:
    """mean, sample std and n of some scores, counted as `experts report` counts them (its spread: None and NaN
    left out), in the page's tables' shape (no values: mean NaN, std 0)."""
    from workbench.experts.report import spread as counted_spread

    s = counted_spread(values)
    return {"mean": math.nan if s["mean"] is None else s["mean"], "std": s["std"] or 0.0, "n": s["runs"]}


# --- the model ---------------------------------------------------------------------------------------------------

class ExpertsModel(param.Parameterized):
    """The explorer's state: the run on show, the view, the seeds pooled, the mixer's α; every table and figure
    is a method of it (the page only binds widgets to these parameters)."""

    runs_dir = param.String(default="runs", doc="the run store")
    run_id = param.Selector(default=None, objects=[], doc="the experts / adapt run on show")
    view = param.Selector(default="z", objects=[*VIEWS, MIXER], doc="the view on show (and what export writes)")
    matrix = param.Selector(default=MEAN, objects=[MEAN], doc="the matrix of the z-vs-rank view")
    compare = param.ListSelector(default=[], objects=[], doc="runs of this config with other seeds or experts, pooled")
    alphas = param.List(default=[], item_type=(int, float), doc="the mixer's α, one per task expert")
    variant = param.Selector(default="raw", objects=["raw", "sigmoid"], doc="mix raw p (the reference's) or sigmoid(p)")
    normalize = param.Boolean(default=False, doc="divide α by its sum over the experts")
    message = param.String(default="", doc="why the run asked for cannot be shown")

    def __init__(self, **params: Any):
        super().__init__(**params)
        self._data: ExpertsData | None = None
        self._store_scores: dict | None = None
        self._lm: tuple | None = None  # (model path, SVFModel, tokenizer) for the mixer
        self._mixer: tuple[str, list[Expert]] | None = None  # (run id, the experts its sliders mix)
        self._rows: list[dict] = []  # the catalog as refresh() last read it
        self.skipped: list[str] = []  # why the newest runs were passed over (refresh: they could not be read)
        self._lock = threading.Lock()
        self.refresh()

    # --- runs ---

    def refresh(self) -> list[str]:
        """Re-read the catalog (new runs, a running one's progress)."""
        # the catalog once per refresh: the run menu, the seeds to pool, the α of other runs, the store's experts
        # read it (each read its own: four reads per page, a quarter of a second each at 1,000 runs)
        store = RunStore(self.runs_dir)
        self._rows = store.list()
        ids = [r["id"] for r in self._rows if r.get("kind") in KINDS]
        self.param.run_id.objects = ids
        self._data, self._store_scores, self._mixer = None, None, None  # new runs: new experts to mix
        # runs of its kinds the catalog left out (a run.json field of another type) are passed over: said at each
        # read (a refresh kept the first read's, mended or newly damaged runs as they were)
        self.skipped = store.passed_over(KINDS)
        if self.run_id not in ids:  # the newest adapt run (it has every view), else the newest run, that reads
            kinds = {r["id"]: r.get("kind") for r in self._rows}
            adapts = [i for i in ids if kinds.get(i) == "adapt"]
            run_id, self._data, skipped = newest_readable(
                [*adapts[::-1], *[i for i in ids[::-1] if i not in adapts]],
                lambda i: read_run(RunStore(self.runs_dir), i))  # its files kept for data
            self.skipped += skipped
            self.run_id = run_id
        else:
            self._opened()
        return ids

    def prepare(self, run_id: str) -> ExpertsData:
        """Read run `run_id`'s files (the slow part of choose, for a worker thread: choose(run_id, data) then
        changes the model on the page's event loop); ValueError if this page cannot show it."""
        return read_run(RunStore(self.runs_dir), run_id.strip())  # raises the reason (another kind, no such run)

    def choose(self, run_id: str, data: ExpertsData | None = None) -> None:
        """Show run `run_id` (the page's ?run=ID), with its files as prepare(run_id) read them when given;
        ValueError if this page cannot show it."""
        run_id = run_id.strip()
        if data is None and (self._data is None or self._data.run.id != run_id):
            data = self.prepare(run_id)  # read before it is shown: one whose files do not read is refused
        if data is not None:  # a prefix stands for its run's full id (kept, export made a folder of that name)
            run_id = data.run.id
        if run_id not in self.param.run_id.objects:
            self.param.run_id.objects = [*self.param.run_id.objects, run_id]
        if data is not None:
            self._data = data  # `data` reads the run again only if these files are another run's
        self.run_id = run_id

    @param.depends("run_id", watch=True)
    def _opened(self) -> None:
        d = self.data
        if d is None:
            return
        self.param.matrix.objects = [MEAN, *d.matrices]
        same = self.same_config()
        self.param.compare.objects = same
        k = len(self.mixer_experts())
        with param.parameterized.discard_events(self):
            self.param.update(matrix=MEAN, compare=list(same), message="", alphas=[round(1.0 / k, 4)] * k if k else [],
                              variant=d.config.get("variant", "raw") if d.kind == "adapt" else "raw",
                              normalize=bool(d.config.get("normalize", False)) if d.kind == "adapt" else False)
        if self.view not in d.views and not (self.view == MIXER and self.mixer_experts()):
            self.view = d.views[0]

    @property
    def data(self) -> ExpertsData | None:
        """The run on show's tables and experts (read once per run shown); None without a run."""
        if self.run_id is None:
            return None
        if self._data is None or self._data.run.id != self.run_id:
            self._data = read_run(RunStore(self.runs_dir), self.run_id)
        return self._data

    def same_config(self) -> list[str]:
        """Finished adapt runs of this run's settings with other seeds or experts (pooled into the spread), each
        seed and experts once: a run that repeats both is the same computation again (it counted twice and narrowed
        the spread), as `experts report` counts it."""
        d = self.data
        if d is None or d.kind != "adapt":
            return []
        tasks = [e.task for e in d.experts]
        store = RunStore(self.runs_dir)

        def candidates():  # finished adapt runs with experts of the same tasks
            for row in self._rows:
                if row["id"] == d.run.id or row.get("kind") != d.kind or row.get("status") != "done":
                    continue
                info = Run(store.root / row["id"]).info  # an id of the catalog: read once (open read it twice)
                inputs = info.get("expert_inputs") or []
                # (a damaged run's, no list of records, is no run of these tasks: it made the page a traceback)
                if isinstance(inputs, list) and [r.get("task") if isinstance(r, dict) else r for r in inputs] == tasks:
                    yield row["id"], info

        from workbench.experts.report import ADAPT_SEED_KEYS  # a seed's own experts: as the report counts them

        return replicates_of(d.info, candidates(), ADAPT_SEED_KEYS)

    def pooled(self) -> list[ExpertsData]:
        """The run on show and the compared ones (their scores pool into means ± std over seeds)."""
        d = self.data
        store = RunStore(self.runs_dir)
        return [d, *[read_run(store, i) for i in self.compare]] if d is not None else []

    # --- tables behind the views ---

    def z_table(self) -> pd.DataFrame:
        """One row per expert, matrix and singular-value rank: z = sigmoid(p) (rank 0 = the largest σ)."""
        d = self.data
        rows = []
        # in the model's order where the run recorded it (an adapt run: gate, up, down, as its α heatmap's
        # columns), else the file's (alphabetical: down, gate, up)
        recorded = list((d.alpha_matrices or []) if d is not None and d.kind == "adapt" else [])
        for e in d.experts if d else []:
            zs = e.z()
            order = recorded if sorted(recorded) == sorted(zs) else list(zs)
            for m, (name, z) in enumerate((n, zs[n]) for n in order):
                rows.append(pd.DataFrame({"expert": e.label, "task": e.task, "matrix": name, "row": m,
                                          "label": matrix_label(name), "rank": np.arange(len(z)), "z": z}))
        return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
            columns=["expert", "task", "matrix", "row", "label", "rank", "z"])

    def z_rank_table(self) -> pd.DataFrame:
        """z against σ rank per expert, for `matrix` (or its mean over the matrices that have that rank)."""
        z = self.z_table()
        if z.empty:
            return z
        if self.matrix != MEAN:
            return z[z["matrix"] == self.matrix][["expert", "rank", "z"]].reset_index(drop=True)
        return z.groupby(["expert", "rank"], sort=False, as_index=False)["z"].mean()

    def curve_table(self) -> pd.DataFrame:
        """experts run: reward, training and validation accuracy per step (1 to iters, as best_step counts them).
        adapt run: CEM's best few-shot accuracy per generation for each number of shots k (the α search's
        adaptation curve)."""
        d = self.data
        m = d.metrics
        if m.empty:
            return pd.DataFrame(columns=["series", "x", "y"])
        if d.kind == "experts":
            out = []
            for col, name in (("reward", "reward (mean ±1)"), ("train_accuracy", "training accuracy"),
                              ("val_accuracy", "validation accuracy"), ("best_val_accuracy", "best validation")):
                if col in m:
                    part = m[["iteration", col]].dropna()  # iteration i's row is after step i + 1 (best_step's)
                    out.append(pd.DataFrame({"series": name, "x": part["iteration"] + 1, "y": part[col]}))
            return pd.concat(out, ignore_index=True)
        rows = []
        for _, r in m.iterrows():
            unit = str(r["unit"])
            if unit.startswith("few-shot:"):
                k = int(unit.split(":")[1])
                rows.append({"series": f"k = {k}", "k": k, "y": float(r["shots_accuracy"])})
        out = pd.DataFrame(rows, columns=["series", "k", "y"])
        out["x"] = out.groupby("k").cumcount() + 1
        return out[["series", "x", "y"]]

    def alpha_table(self) -> pd.DataFrame:
        """α per seed, number of shots k, expert (and matrix, for α per matrix): CEM's best member, chosen on the
        shots (never on the test set); share: α / Σα over the experts, what the mixture is made of. SVF's rescale
        takes a column's scale out (α and 2α compose the same weights), so shares compare across k and seeds
        where α's do not."""
        rows = []
        for d in self.pooled():
            s = d.scores or {}
            names = [e.label for e in d.task_experts]
            matrices = d.alpha_matrices if any(np.asarray(r["alpha"]).shape[1] > 1
                                               for r in (s.get("few_shot") or {}).values()) else None
            for k, rec in (s.get("few_shot") or {}).items():
                a = np.asarray(rec["alpha"], float)
                shares = alpha_shares(a)
                for i, name in enumerate(names):
                    for j in range(a.shape[1]):
                        label = "all" if a.shape[1] == 1 else matrix_label(matrices[j]) if matrices else f"matrix {j}"
                        rows.append({"seed": d.config["seed"], "k": int(k), "expert": name, "target": s.get("target"),
                                     "matrix": label,
                                     "alpha": float(a[i, j]), "share": float(shares[i, j])})
        return pd.DataFrame(rows, columns=["seed", "k", "expert", "target", "matrix", "alpha", "share"])

    def targets_alpha(self) -> pd.DataFrame:
        """α's share per expert (alpha_shares, mean over matrices) for each target task of the adapt runs on this
        model with these expert tasks: its largest k, averaged over seeds (one bar group per target task)."""
        d = self.data
        if d is None or d.kind != "adapt":
            return pd.DataFrame(columns=["target", "expert", "alpha", "std", "n"])
        store, found = RunStore(self.runs_dir), {}
        tasks = [e.task for e in d.task_experts]
        for row in self._rows:
            if row.get("kind") != "adapt" or row.get("status") != "done":
                continue
            try:
                other = read_run(store, row["id"]) if row["id"] != d.run.id else d
            except ValueError:  # another run that cannot be read (its scores damaged): not this run's view
                continue
            few = (other.scores or {}).get("few_shot") or {}
            if other.info.get("model_key") != d.info.get("model_key") or [e.task for e in other.task_experts] != tasks \
                    or not few:
                continue
            a = alpha_shares(np.asarray(few[str(max(map(int, few)))]["alpha"], float)).mean(1)
            for e, v in zip(other.task_experts, a, strict=True):
                found.setdefault((other.scores["target"], e.task), []).append(float(v))
        return pd.DataFrame([{"target": t, "expert": e, **spread(v)} for (t, e), v in found.items()])

    def confusion_tables(self) -> dict[str, pd.DataFrame]:
        """Per dispatcher (prompt, classifier): counts of (true task, named class), summed over the pooled runs."""
        out = {}
        for d in self.pooled():
            for name, rec in ((d.scores or {}).get("dispatch") or {}).items():
                rows = [{"true": t, "named": c, "count": n} for t, named in rec["confusion"].items()
                        for c, n in named.items()]
                out.setdefault(name, []).extend(rows)
        return {k: pd.DataFrame(v).groupby(["true", "named"], sort=False, as_index=False)["count"].sum()
                for k, v in out.items()}

    def shots_table(self) -> pd.DataFrame:
        """Test and few-shot accuracy of the best mixture against k, mean ± std over the pooled seeds; the target's
        base and oracle for reference."""
        rows = []
        for d in self.pooled():
            s = d.scores or {}
            for k, rec in (s.get("few_shot") or {}).items():
                rows.append({"seed": d.config["seed"], "k": int(k), "test": rec["test_accuracy"],
                             "shots": rec["shots_accuracy"]})
        return pd.DataFrame(rows, columns=["seed", "k", "test", "shots"]).sort_values(["k", "seed"])

    def target_refs(self) -> dict[str, dict]:
        """The target task's base accuracy (spread over the pooled runs). Not its oracle: the target has no expert
        by definition, so the oracle is the base there (its line hid the base's)."""
        pooled = self.pooled()
        target = (pooled[0].scores or {}).get("target") if pooled else None
        out = {}
        for name in ("base",):
            values = [((d.scores or {}).get("strategies") or {}).get(name, {}).get(target) for d in pooled]
            if any(v is not None for v in values):
                out[name] = spread(values)
        return out

    def strategies_table(self) -> pd.DataFrame:
        """Test accuracy per task and strategy (base, each expert, oracle, dispatchers, few-shot k), mean ± std over
        the pooled seeds."""
        vals: dict[tuple[str, str], list[float]] = {}
        for d in self.pooled():
            for s, per in ((d.scores or {}).get("strategies") or {}).items():
                for t, v in per.items():
                    vals.setdefault((t, s), []).append(float(v))
        rows = [{"task": t, "strategy": s, **spread(v)} for (t, s), v in vals.items()]
        return pd.DataFrame(rows, columns=["task", "strategy", "mean", "std", "n"])

    def svf_lora_table(self) -> pd.DataFrame:
        """Held-out test accuracy per task of the base, SVF and LoRA experts trained on this run's model (same
        weights: the model key), mean ± std over seeds, with the trainable parameter counts."""
        import json

        d = self.data
        if d is None:
            return pd.DataFrame()
        # read again for another model (a run of another model chosen showed the first model's table)
        if self._store_scores is None or self._store_scores["model_key"] != d.info.get("model_key"):
            store, found = RunStore(self.runs_dir), []
            for row in self._rows:
                if row.get("kind") != "experts" or row.get("status") != "done":
                    continue
                path = store.root / row["id"] / "scores.json"
                if not path.exists():
                    continue
                info = Run(path.parent).info  # once: each run.info read the file again (4 reads a run)
                if info.get("model_key") == d.info.get("model_key"):
                    found.append(json.loads(path.read_text()) | {"seed": info["config"]["seed"],
                                                                  "rank": info["config"].get("rank")})
            self._store_scores = {"model_key": d.info.get("model_key"), "rows": found}
        groups: dict[tuple[str, str], list[float]] = {}
        params: dict[str, int] = {}
        rows = self._store_scores["rows"]
        svf_tasks = {s["task"] for s in rows if s["adapter"] == "svf"}
        for s in rows:
            name = "SVF" if s["adapter"] == "svf" else f"LoRA r={s['rank']}"
            if s["adapter"] == "svf" or s["task"] not in svf_tasks:  # the base once per seed, not once per adapter
                groups.setdefault((s["task"], "base"), []).append(s["base"])
            groups.setdefault((s["task"], name), []).append(s["expert"])
            params[name] = s["n_params"]
        rows = [{"task": t, "model": m if m == "base" else f"{m} ({grouped(params[m])} params)",
                 **spread(v)} for (t, m), v in groups.items()]
        order = {"base": 0, "SVF": 1}
        rows.sort(key=lambda r: (r["task"], order.get(r["model"].split(" (")[0], 2), r["model"]))
        return pd.DataFrame(rows, columns=["task", "model", "mean", "std", "n"])

    # --- the mixer ---

    def mixer_experts(self) -> list[Expert]:
        """The experts the sliders mix: an adapt run's task experts; for an experts run, the finished SVF experts
        of the same model and seed in this folder, one per task (the run's own first; a classification expert's
        run: the others only)."""
        d = self.data
        if d is None:
            return []
        if d.kind == "adapt" or not d.experts:
            return d.task_experts
        if self._mixer is not None and self._mixer[0] == d.run.id:
            return self._mixer[1]
        # the classification expert dispatches, it is not mixed (as task_experts leaves it out): its own page
        # mixes the task experts of its seed (it put a slider "α classify" first)
        store, out = RunStore(self.runs_dir), [e for e in d.experts if e.task != "classify"]
        tasks = {e.task for e in out} | {"classify"}
        for row in reversed(self._rows):  # the newest run of each task
            if row.get("kind") != "experts" or row.get("status") != "done" or row["id"] == d.run.id:
                continue
            info = Run(store.root / row["id"]).info
            cfg = info["config"]
            if cfg.get("adapter") != "svf" or cfg["task"] in tasks or cfg["seed"] != d.config["seed"] or \
                    info.get("model_key") != d.info.get("model_key"):
                continue
            out.append(_load_expert_file(Path(self.runs_dir) / row["id"] / "expert.safetensors",
                                         f"{cfg['task']} (seed {cfg['seed']})"))
            tasks.add(cfg["task"])
        self._mixer = (d.run.id, out)
        return out

    def alpha_array(self) -> np.ndarray:
        """The sliders as mix_params' α, shape (K, 1); one error for the wrong number of values, a negative one or
        all 0 (check_alpha, as `experts eval --alpha`)."""
        from workbench.experts.mixing import check_alpha

        experts = self.mixer_experts()
        a = np.asarray(self.alphas, np.float64).reshape(-1, 1)
        if len(experts) == 0:
            raise ValueError("this run has no SVF experts to mix (a LoRA run?)")
        if a.shape[0] != len(experts):
            need = "needs one" if len(experts) == 1 else "need one each"
            raise ValueError(f"alphas has {counted(a.shape[0], 'value')}; the {counted(len(experts), 'expert')} "
                             f"({', '.join(e.label for e in experts)}) {need}")
        return check_alpha(a, "the mixer's α")

    def mixture_z(self) -> dict[str, np.ndarray]:
        """z′ of the mixer's setting (raw: Σ α·p, no sigmoid; sigmoid: Σ α·sigmoid(p)), per matrix."""
        from workbench.experts.mixing import mix_params

        a = self.alpha_array()
        params = _torch_experts(self.mixer_experts())
        mixed = mix_params(params, a, list(params[0]), self.normalize, variant=self.variant)
        return {n: v.numpy() for n, v in mixed.items()}

    def mixture_figure(self) -> Dimensioned:
        """z′ of the mixer's setting as a heatmap (layer · matrix × σ rank), centred on its mean: the rescale
        Σσ/Σ(σ⊙z′) undoes a uniform z′, so what moves the weights is z′ relative to its level."""
        z = self.mixture_z()
        rows = [pd.DataFrame({"expert": f"mixture ({self.variant})", "row": m, "label": matrix_label(name),
                              "rank": np.arange(len(v)), "z": v.astype(np.float64)}) for m, (name, v) in
                enumerate(z.items())]
        table = pd.concat(rows, ignore_index=True)
        # z′, the mixed vectors (raw: Σ α·p, before any sigmoid), not one expert's z (it said "z · mixture")
        return z_heatmaps(table, center=float(table["z"].mean()), width=620, quantity="z′").values()[0]

    def model_path(self) -> str:
        """The run's base model, found as given (relative to where the run was made) or under the run folder's
        parents; ValueError if it is not on this machine."""
        from workbench.lm.models import SMOLLM2

        model = self.data.config["model"]
        if model == SMOLLM2 or user_path(model).exists():
            return model
        for parent in Path(self.runs_dir).resolve().parents:
            if (parent / model).exists():
                return str(parent / model)
        raise ValueError(f"the run's model {model} is not here, so its experts cannot be composed into it (moved? "
                         f"`{self.data.run.resume_cli} --model PATH` records where it is now)")

    def _svf(self):
        """The SVFModel of the run's model, loaded once per model (the weights' key checked against the run's)."""
        from workbench.experts.model import SVFModel
        from workbench.lm.models import load_model

        path = self.model_path()
        if self._lm is None or self._lm[0] != path:
            net, tok = load_model(path, device="cpu")
            svf = SVFModel(net, tok)
            key = self.data.info.get("model_key")
            if key and svf.key != key:
                raise ValueError(f"the model at {path} is not the one the run used (its weights changed: key "
                                 f"{svf.key[:12]}… ≠ {key[:12]}…); its experts do not fit it")
            self._lm = (path, svf, tok)
        return self._lm[1], self._lm[2]

    def answer(self, prompt: str, max_new_tokens: int = 12) -> dict:
        """The mixture of the sliders composed into the run's model (once) and its greedy answer to `prompt`:
        {"answer", "seconds"} (seconds: compose + decode)."""
        from workbench.lm.evaluation import _encode, greedy
        from workbench.lm.tasks import CHARS

        if not prompt:
            raise ValueError("type a prompt, e.g. s:kdpa= (sort) or 12+34= (add)")
        a = self.alpha_array()
        with self._lock:
            svf, tok = self._svf()
            from workbench.experts.adapt import is_char_model

            unknown = sorted({c for c in prompt if c not in CHARS})
            if is_char_model(tok) and unknown:
                raise ValueError(f"the zoo's models read the characters {CHARS!r} only; the prompt has "
                                 f"{''.join(unknown)!r}")
            text = prompt
            if self.data.config.get("prompt_format") == "chat":
                # experts trained and scored inside their task's chat prompt (its instruction and demonstrations,
                # format_prompt): answered in it too, not in a bare user turn
                from workbench.experts.train import format_prompt
                from workbench.lm.tasks import prompt_task

                task = prompt_task(prompt)
                if task is None:
                    raise ValueError("this run's experts answer inside their task's chat prompt: type a prompt of "
                                     "one of its tasks, e.g. s:kdpa= (sort), 12+34= (add), 84 63 (larger)")
                text = format_prompt(tok, task, prompt, "chat")
            start = time.perf_counter()
            experts = _torch_experts(self.mixer_experts())
            try:
                svf.apply_mixture(experts, a, normalize=self.normalize, variant=self.variant)
                pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
                out = greedy(svf.model, [_encode(tok, text)], max_new_tokens, pad_id=pad, eos_id=tok.eos_token_id)
            finally:
                svf.reset()
            return {"answer": tok.decode(out[0], skip_special_tokens=True),
                    "seconds": round(time.perf_counter() - start, 4)}

    def score_mixture(self, n: int = 16) -> dict[str, float]:
        """Held-out accuracy per task (the run's tasks, n prompts each, stream 0) of the mixer's setting."""
        from workbench.experts.adapt import Experts, Scorer

        d = self.data
        tasks = list((d.scores or {}).get("tasks") or d.config.get("tasks") or []) or \
            [t for t in dict.fromkeys(e.task for e in self.mixer_experts())]
        a = self.alpha_array()
        with self._lock:
            svf, _ = self._svf()
            experts = _torch_experts(self.mixer_experts())
            scorer = Scorer(svf, Experts([], [], [], []), tasks, n, 0,
                            prompt_format=d.config.get("prompt_format", "plain"))
            try:
                svf.apply_mixture(experts, a, normalize=self.normalize, variant=self.variant)
                return {t: float(np.mean(scorer.correct(ex, t))) for t, ex in scorer.test.items()}
            finally:
                svf.reset()

    def found_alpha(self, k: int) -> list[float]:
        """The α CEM found with k shots, for the sliders (one α per expert): as found where it is one per expert;
        α per matrix: each expert's mean share of the matrices' mixtures (alpha_shares, as the α view shows them:
        SVF's rescale keeps only a matrix's ratios, so raw α of columns (0.9, 0.1) and (0.01, 0.09) are 83 % the
        first expert's on average, and their mixtures half each)."""
        few = ((self.data.scores or {}).get("few_shot") or {}).get(str(k))
        if few is None:
            raise ValueError(f"this run has no few-shot result for k = {k}")
        alpha = np.asarray(few["alpha"], float)
        if alpha.shape[1] > 1:
            shares = alpha_shares(alpha)
            mixed = ~np.isnan(shares).all(0)  # matrices whose α sum to 0 mix nothing
            alpha = shares[:, mixed] if mixed.any() else alpha
        return [round(float(v), 4) for v in alpha.mean(1)]

    def found_mixture(self, k: int) -> dict:
        """The mixture CEM scored with k shots, for the mixer: its α (found_alpha) and the run's mixing rule
        (variant, normalize; the mixer kept its own, showing a mixture CEM never scored)."""
        cfg = self.data.config
        return {"alphas": self.found_alpha(k), "variant": cfg.get("variant", "raw"),
                "normalize": bool(cfg.get("normalize", False))}

    # --- figures ---

    def figure(self, view: str | None = None, points: int | None = CURVE_POINTS) -> Dimensioned:
        """One of VIEWS as a HoloViews object (Bokeh on the page, matplotlib for paper figures), its curves at most
        `points` rows a line (figures.curve_rows), or every row (None: export's paper_figure)."""
        hv = holoviews()
        view = view or self.view
        d = self.data
        if d is None:
            return hv.Div("<i>no experts or adapt run in this folder yet: run `workbench experts train`</i>")
        if view == MIXER:
            if not self.mixer_experts():
                return hv.Div(f"<i>run {html.escape(d.run.id)} has no SVF experts to mix</i>")
            return self.mixture_figure()
        if view not in d.views:
            return hv.Div(f"<i>run {html.escape(d.run.id)} has nothing for {VIEWS.get(view, view)!r}</i>")
        if view == "z":
            return z_heatmaps(self.z_table())
        if view == "z_rank":
            return z_rank_plot(self.z_rank_table(), self.matrix if self.matrix == MEAN else matrix_label(self.matrix))
        if view == "curve":
            return curve_plot(self.curve_table(), d.kind, points)
        if view == "alpha":
            return alpha_plot(self.alpha_table(), self.targets_alpha(), (d.scores or {}).get("target"))
        if view == "confusion":
            return confusion_plot(self.confusion_tables(), len(self.pooled()))
        if view == "shots":
            return shots_plot(self.shots_table(), self.target_refs(), (d.scores or {}).get("target"))
        if view == "strategies":
            return bars_plot(self.strategies_table(), "strategy", "test accuracy")
        if view == "svf_lora":
            table = self.svf_lora_table()
            return bars_plot(table, "model", "held-out test accuracy") if not table.empty else hv.Div(
                "<i>no finished expert runs on this model in this folder</i>")
        raise ValueError(f"unknown view {view!r}; views are {', '.join(VIEWS)}")

    def paper_figure(self, view: str | None = None) -> tuple[Dimensioned, dict]:
        """A view (of VIEWS, or MIXER) as export writes it, with the paper style it is written in: (figure,
        style for figures.save). ValueError, with the page's reason, where the run has nothing under it."""
        from workbench.figures import layout_inches

        hv = holoviews()
        view = view or self.view
        fig = self.figure(view, points=None)  # a paper's: every row of its curves
        if isinstance(fig, hv.Div):
            raise ValueError(f"nothing to export under {view_title(view)!r}: {fig.data.strip('<i>/ ')}")
        return fig, {"fig_inches": layout_inches(fig, (3.2, 2.6))}

    def export(self, view: str | None, out_dir: str | Path, suffix: str = ".png", width: float | None = None,
               font: str | None = None, rename: dict[str, str] | None = None) -> Path:
        """Write a view (of VIEWS, or MIXER: the z′ of the mixer's α) as a paper figure (PNG / SVG / PDF via
        matplotlib, or standalone HTML): RUN-VIEW.SUFFIX, at figures.save's width (inches) and font, its legend
        entries renamed (figures.save's rename)."""
        from workbench.figures import export_suffix, save

        view = view or self.view
        suffix = export_suffix(suffix)
        fig, style = self.paper_figure(view)
        out = Path(out_dir) / f"{self.run_id}-{view.replace('_', '-')}{suffix}"
        out.parent.mkdir(parents=True, exist_ok=True)
        return save(fig, out, style=style, width=width, font=font, rename=rename)

    def summary(self) -> str:
        """The Markdown line about the run on show: an expert run's adapter, task, model, trainable parameters,
        status, steps and test scores, or an adaptation's model, experts, target, α and mixing, status and
        iterations; then the runs pooled with it and what could not be read. Without a run: the message."""
        d = self.data
        if d is None:
            return plain(self.message) if self.message else "No experts or adapt runs yet."
        cfg, info = d.config, d.info
        pooled = f" · pooled with {counted(len(self.compare), 'other run')}" if self.compare else ""
        pooled += "".join(f" · **cannot read** {plain(why)}" for why in d.damaged)  # its views without those rows
        if d.kind == "experts":
            test = info.get("test_scores") or {}
            score = (f" · test {test['base']:.3f} (base) → {test['expert']:.3f} (expert)" if "expert" in test else "")
            adapter = {"svf": "SVF", "lora": "LoRA"}.get(cfg["adapter"], str(cfg["adapter"]))  # as the tabs say
            n = info.get("n_params")
            n = grouped(n) if isinstance(n, int) else "?"  # "1 152", as the SVF vs LoRA tab
            return (f"**{literal(d.run.id)}** · {literal(adapter)} expert for **{literal(cfg['task'])}** on "
                    f"{model_text(cfg['model'])} · "
                    f"{n} trainable parameters · {d.run.live_status(info)}, "
                    f"{info.get('iterations', '?')}/{cfg['iters']} steps{score}{pooled}")
        target = cfg.get("target")
        return (f"**{literal(d.run.id)}** · adaptation on {model_text(cfg['model'])} · experts "
                f"{literal(', '.join(e.task for e in d.experts))} · target {literal(target or '–')} · α per "
                f"{literal(cfg['alpha'])}, {literal(cfg['variant'])} mixing · {d.run.live_status(info)}, "
                f"{info.get('iterations', '?')} iterations{pooled}")


def export_what(model: ExpertsModel) -> str:
    """The line above the export controls: the view export writes, or why a tab has none (a LoRA run's Mixer named
    its z′ there, and only the export's refusal said there was none)."""
    if model.view == MIXER and model.data is not None and not model.mixer_experts():
        return f"Nothing to export on this tab: {mixes_nothing(model)}."
    return f"Export writes the view on show: **{view_title(model.view)}**."


def view_title(view: str) -> str:
    """A view's name on the page (the Mixer tab's: what its export writes)."""
    return "Mixer: z′ of the α set" if view == MIXER else VIEWS.get(view, view)


def model_text(model: str) -> str:
    """A run's model for a header: a name as it is, a folder by its last two parts (…/zoo/generalist), the whole
    path on hover (a page, or a screenshot of it, shows no machine's folders)."""
    parts = Path(model).parts
    if len(parts) <= 2:
        return code(model)
    return f'<code title="{html.escape(model)}">…/{code_content("/".join(parts[-2:]))}</code>'


# --- plots (HoloViews, both backends: Bokeh on the page, matplotlib for paper figures) ---------------------------

COLOUR_BAR = 80  # a Bokeh colour bar's width with its ticks and title, in pixels
#: a z heatmap's room around its frame (the matrices' names; title, σ ranks and their label), in pixels: sized by
#: their frames, heatmaps line up in any layout (sized whole, `.cols(2)` squeezed the one above the colour bar's)
Z_AXES = (75, 70)


def z_heatmaps(z: pd.DataFrame, center: float = Z0, width: int = 460, quantity: str = "z"):
    """One heatmap per expert: rows = layer · matrix, columns = singular-value rank (0 = the largest σ); colour = z,
    centred on `center`, by default sigmoid(0.1) ≈ 0.525 where training starts (blue: scaled down, red: scaled up,
    relative to it)."""
    hv = holoviews()
    if z.empty:
        return hv.Div("<i>no SVF expert</i>")
    half = max(float(np.abs(z["z"] - center).max()), 1e-6)
    panels = []
    experts = list(dict.fromkeys(z["expert"]))
    cols = len(experts) if len(experts) <= 3 else 2
    # `width` is a panel's with its axes; the one colour bar (the last panel's) adds its room beside the row, and
    # the frames are sized alike (Z_AXES), so every heatmap is as wide as the others in any layout
    width = min(width, (ROW_WIDTH - COLOUR_BAR) // cols)
    for name, part in z.groupby("expert", sort=False):
        last = name == experts[-1]  # one colour bar, the last panel's: they share one scale (three said it thrice)
        labels = part.drop_duplicates("row").sort_values("row")["label"].tolist()
        rows, ranks = len(labels), int(part["rank"].max()) + 1
        grid = np.full((rows, ranks), np.nan)
        grid[part["row"].to_numpy(), part["rank"].to_numpy()] = part["z"].to_numpy()
        step = max(1, rows // 12)
        ticks = [(rows - 1 - i, labels[i]) for i in range(0, rows, step)]
        img = hv.Image(grid[::-1], bounds=(-0.5, -0.5, ranks - 0.5, rows - 0.5), kdims=["σ rank", "matrix"],
                       vdims=[hv.Dimension("z", label=quantity)])
        panels.append(styled(img, title=f"{quantity} · {name}", cmap="RdBu_r", clim=(center - half, center + half),
                             colorbar=last, yticks=ticks, xlabel="σ rank (0 = largest)", ylabel="",  # fits a third
                             bokeh={"frame_width": width - Z_AXES[0], "tools": ["hover"], "hooks": [sized_by_frame],
                                    "frame_height": max(170, 24 * rows + 70) - Z_AXES[1]},
                             mpl={"aspect": "auto"}))
    # up to three in a row (three in two rows left a quarter empty); hspace: room for the row labels between them
    return styled(hv.Layout(panels).cols(cols), shared_axes=False,
                  mpl={"sublabel_format": "", "hspace": 1.0, "vspace": 0.7})


def z_rank_plot(table: pd.DataFrame, what: str):
    """z against the rank of σ, one curve per expert, with z = sigmoid(0.1) (the start) dashed."""
    hv = holoviews()
    if table.empty:
        return hv.Div("<i>no SVF expert</i>")
    from workbench.figures import colours_for

    colours = colours_for(str(e) for e in table["expert"].unique())  # an expert's task in its colour, page and paper
    curves = [hv.Curve(part, "rank", "z", label=name).opts(color=colours[str(name)])
              for name, part in table.groupby("expert", sort=False)]
    start = styled(hv.HLine(Z0), color="#555555", bokeh={"line_dash": "dashed", "line_width": 1},
                   mpl={"linestyle": "--", "linewidth": 0.8})
    return styled(hv.Overlay([*curves, start]), title=f"z vs σ rank · {what}", xlabel="singular-value rank "
                  "(0 = largest σ)", ylabel="z = sigmoid(p)", bokeh={"width": 760, "height": 380,
                                                                    "legend_position": "right", "tools": ["hover"]},
                  mpl={"legend_position": "best"})  # inside (under the axes if it covers a curve): a column wide


def curve_plot(table: pd.DataFrame, kind: str, points: int | None = None):
    """experts: reward and accuracies per REINFORCE step; adapt: CEM's best few-shot accuracy per generation; at
    most `points` rows of each line (a page's: CURVE_POINTS), or every row (None)."""
    hv = holoviews()
    if table.empty:
        return hv.Div("<i>no steps yet</i>")
    from workbench.figures import dashed, thin_curve

    layers = []
    for i, (name, part) in enumerate(table.groupby("series", sort=False)):
        # at most `points` steps of each line (thin_curve: the best's steps, each bucket's extremes)
        curve = dashed(hv.Curve(thin_curve(part, "y", limit=points), "x", "y", label=name), i)
        layers.append(curve * hv.Scatter(part, "x", "y", label=name) if len(part) < 30 else curve)
    xlabel = "REINFORCE step" if kind == "experts" else "CEM generation"
    ylabel = "reward / accuracy" if kind == "experts" else "best few-shot accuracy"
    title = "expert training" if kind == "experts" else "α search: few-shot accuracy per generation"
    from workbench.figures import whole_numbers

    # the paper figure's legend inside the axes, where matplotlib finds room: beside them it squeezed the plot to
    # a third of the figure and its title into the y label; an accuracy on 0–1 (room above the curves)
    # a margin below 0 and beside the first and last step: an accuracy of 0 lay on the axis line, and the markers
    # at the ends were cut in half by the frame
    mpl = {"legend_position": "best", "padding": (0.04, 0.04), **({"ylim": ACCURACY} if kind != "experts" else {})}
    # the page too: a flat curve (an accuracy of 0 throughout) had a −1 … 1 axis; a reward lies in [−1, 1]
    flat = table["y"].min() == table["y"].max()
    bokeh = {"width": 760, "height": 380, "legend_position": "right", "tools": ["hover"],
             **({"ylim": ACCURACY} if kind != "experts" else {"ylim": (-1.05, 1.05)} if flat else {})}
    return whole_numbers(styled(hv.Overlay(layers), title=title, xlabel=xlabel, ylabel=ylabel, bokeh=bokeh, mpl=mpl))


def _bars(part: pd.DataFrame, key: str, title: str, ylabel: str, ymax: float = 1.12):
    """Bars of `mean` over the categories in `key`, whiskers ± std when any group has several runs, values
    written above. The y axis always starts at 0 (small gains must not look large)."""
    hv = holoviews()
    part = part.fillna({"mean": 0.0, "std": 0.0})
    from workbench.figures import BarValues

    values = BarValues(tuple(part[key]), tuple(float(v) for v in part["mean"]),
                       tuple(float(v) for v in part["std"]))
    bars = styled(hv.Bars(part, key, ["mean", "std", "n"]), color=ACCENT,
                  bokeh={"tools": ["hover"], "xrotation": 35}, mpl={"xrotation": 40})
    layers = [bars.opts(hooks=[values], backend="bokeh").opts(hooks=[values], backend="matplotlib")]
    if int(part["n"].max() or 0) > 1:
        layers.append(styled(hv.ErrorBars(part, key, ["mean", "std"]), bokeh={"line_width": 1.5},
                             mpl={"linewidth": 0.8}))
    # a paper panel wider than tall (square by default): room under each bar for its slanted label; on the page a
    # third of a row, wider by its bars where it has many (nine bars in 300 px ran their labels and values together)
    return styled(hv.Overlay(layers), title=title, ylabel=ylabel, xlabel="", ylim=(0, ymax),
                  bokeh={"width": bars_width(len(part)), "height": 340}, mpl={"aspect": 1.5})


BAR_ROOM = 32  # a bar and its value above it (its label below is slanted), in pixels


def bars_width(bars: int) -> int:
    """A bar panel's width on the page: a third of a row, or room for each bar and its value where it has more,
    a row at most."""
    return min(ROW_WIDTH, max(ROW_WIDTH // 3, BAR_ROOM * bars + 100))


def bar_columns(bars: int, most: int = 3) -> int:
    """Bar panels a row: `most`, fewer where panels widened by `bars` bars would run a row past the page."""
    return max(1, min(most, ROW_WIDTH // bars_width(bars)))


def bars_plot(table: pd.DataFrame, key: str, ylabel: str):
    """One panel per task: `mean` per `key` (strategy or model) with the spread over seeds."""
    hv = holoviews()
    if table.empty:
        return hv.Div("<i>no test scores (the run has not finished)</i>")
    panels = []
    for task, part in table.groupby("task", sort=False):
        n = int(part["n"].max())
        # the spread in the y label: "reverse (mean ± std, 2 seeds)" ran past its panel's edge
        label = f"{ylabel} (mean ± std)" if n > 1 else ylabel
        panels.append(_bars(part, key, f"{task}" + (f" · {n} seeds" if n > 1 else ""), label))
    most = int(table.groupby("task", sort=False)[key].size().max())
    return styled(hv.Layout(panels).cols(bar_columns(most)), shared_axes=False,
                  mpl={"sublabel_format": "", "hspace": 0.3})


def alpha_shares(alpha: np.ndarray) -> np.ndarray:
    """α / Σα over the experts (rows), per matrix (column): the mixture's make-up. Under SVF's rescale a column's
    scale cancels (CEM's (0, 0.38) and (0, 0.41) are one mixture), so shares are what compares; NaN where a
    column sums to 0 (no mixture)."""
    alpha = np.asarray(alpha, float)
    total = alpha.sum(0, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, alpha / np.where(total > 0, total, 1.0), np.nan)


def alpha_plot(table: pd.DataFrame, targets: pd.DataFrame, target: str | None):
    """Each expert's share of the mixture, α / Σα (alpha_shares: SVF's rescale keeps only α's ratios), for each
    number of shots (mean ± std over seeds); α per matrix: grouped bars per layer · matrix; with adapt runs of
    several targets on this model, the shares per target task (largest k)."""
    hv = holoviews()
    if table.empty:
        return hv.Div("<i>no few-shot result</i>")
    panels = []
    per_matrix = (table["matrix"] != "all").any()
    top = 1.12
    for k, part in table.groupby("k", sort=True):
        if per_matrix:
            panels.append(_matrix_shares(part, f"α's shares per matrix · {target} · k = {k}"))
        else:
            rows = [{"expert": e, **spread(g["share"].tolist())}
                    for e, g in part.groupby("expert", sort=False)]
            n = max(r["n"] for r in rows)
            # the title short enough for a third of a row (the y axis says what the bars are)
            title = f"{target} · k = {k}" + (f" ({n} seeds)" if n > 1 else "")
            panels.append(_bars(pd.DataFrame(rows), "expert", title, "α / Σα", top))
    several_targets = not targets.empty and targets["target"].nunique() > 1
    if several_targets:
        panels.append(styled(hv.Bars(targets, ["target", "expert"], "mean"),
                             title="α's shares per target task (largest k)",
                             ylabel="α / Σα (mean over seeds)", xlabel="", ylim=(0, top),
                             bokeh={"width": 520, "height": 340, "tools": ["hover"]}))
    # heatmaps one to a row (three side by side ran past a laptop's page, each 160 px high); bars three a row, or
    # two beside the wider per-target panel (three ran past the page's edge)
    cols = 1 if per_matrix else 2 if several_targets else 3
    if not per_matrix:  # many experts widen the bars (bars_width): fewer a row, within the page
        cols = bar_columns(len(dict.fromkeys(table["expert"])), cols)
    return styled(hv.Layout(panels).cols(cols), shared_axes=False,
                  mpl={"sublabel_format": "", "hspace": 0.6})


def _matrix_shares(part: pd.DataFrame, title: str):
    """α / Σα per expert (rows) and matrix (columns), mean over seeds, as a heatmap: as grouped bars, one group of
    K bars per matrix, the labels of a model's many matrices ran into each other and the bars took the colours of
    other tasks. Numeric axes with named ticks (text axes break matplotlib's, the paper figures'); at most 12
    matrix names along the bottom, evenly spaced."""
    hv = holoviews()
    mean = part.groupby(["matrix", "expert"], sort=False, as_index=False)["share"].mean()
    matrices, experts = list(dict.fromkeys(mean["matrix"])), list(dict.fromkeys(mean["expert"]))
    mean = mean.assign(x=[matrices.index(m) for m in mean["matrix"]],
                       y=[len(experts) - 1 - experts.index(e) for e in mean["expert"]])
    step = max(1, math.ceil(len(matrices) / 12))
    return styled(hv.HeatMap(mean, ["x", "y"], ("share", "α / Σα")), cmap="Blues", clim=(0, 1),
                  colorbar=True, title=title, xlabel="matrix", ylabel="", xlim=(-0.5, len(matrices) - 0.5),
                  ylim=(-0.5, len(experts) - 0.5), xticks=[(i, matrices[i]) for i in range(0, len(matrices), step)],
                  yticks=[(len(experts) - 1 - i, e) for i, e in enumerate(experts)],
                  bokeh={"width": 760, "height": max(220, 90 + 40 * len(experts)), "tools": ["hover"],
                         "xrotation": 35},
                  mpl={"xrotation": 40, "show_values": False})


def confusion_plot(tables: dict[str, pd.DataFrame], runs: int):
    """Per dispatcher: true task × the class it named (counts over the pooled runs, written in the cells)."""
    hv = holoviews()
    if not tables:
        return hv.Div("<i>no dispatcher was run</i>")
    titles = {"prompt": "(a) prompt dispatch", "classifier": "(b) classification expert"}
    panels = []
    for name, table in tables.items():
        total = table.groupby("true")["count"].transform("sum")
        table = table.assign(share=table["count"] / total)
        # numeric axes with named ticks: text labels on categorical axes break matplotlib's (paper figures)
        trues = list(dict.fromkeys(table["true"]))
        named = [*trues, *[c for c in dict.fromkeys(table["named"]) if c not in trues]]
        table = table.assign(x=[named.index(c) for c in table["named"]],
                             y=[len(trues) - 1 - trues.index(t) for t in table["true"]])
        # the count in whichever of white and black reads on its cell (white on Blues at 0.5 read at 2.4:1)
        table = table.assign(ink=text_colours(table["share"], "Blues", (0.0, 1.0)))
        heat = styled(hv.HeatMap(table, ["x", "y"], ["share", "count"]), cmap="Blues", clim=(0, 1),
                      colorbar=True, bokeh={"tools": ["hover"]}, mpl={"show_values": False})
        labels = styled(hv.Labels(table, ["x", "y"], ["count", "ink"]),
                        bokeh={"text_font_size": "9pt", "text_color": hv.dim("ink")},
                        mpl={"size": 7, "color": hv.dim("ink")})
        acc = table[table["true"] == table["named"]]["count"].sum() / table["count"].sum()
        # on two lines: on one, "(b) classification expert · acc. 0.000 (2 seeds)" ran past its panel's edge
        title = f"{titles.get(name, name)}\naccuracy {acc:.3f}" + (f" ({runs} seeds)" if runs > 1 else "")
        # every class on its axis, the ones never named too (a dispatcher that always answered "other" drew a
        # column of one)
        panels.append(styled(heat * labels, title=title, xlabel="named class", ylabel="true task",
                             xlim=(-0.5, len(named) - 0.5), ylim=(-0.5, len(trues) - 0.5),
                             xticks=list(enumerate(named)),
                             yticks=[(len(trues) - 1 - i, t) for i, t in enumerate(trues)],
                             bokeh={"width": ROW_WIDTH // 2, "height": 360, "xrotation": 35}, mpl={"xrotation": 40}))
    return styled(hv.Layout(panels).cols(2), shared_axes=False, mpl={"sublabel_format": "", "hspace": 1.0})


def shots_plot(table: pd.DataFrame, refs: dict[str, dict], target: str | None):
    """Test accuracy of the best mixture (mean ± std over seeds, each seed a dot) and its few-shot accuracy
    against the number of shots k; the target's base as a dashed line (its oracle is the base: no expert)."""
    hv = holoviews()
    if table.empty:
        return hv.Div("<i>no few-shot result</i>")
    ks = sorted(table["k"].unique())
    mean = table.groupby("k", as_index=False).agg(test=("test", "mean"), shots=("shots", "mean"),
                                                  std=("test", lambda v: float(np.std(v, ddof=1)) if len(v) > 1
                                                       else 0.0))
    layers = [hv.Curve(mean, "k", "test", label="test (mixture)"),
              hv.Scatter(table, "k", "test", label="test (mixture)"),
              styled(hv.Curve(mean, "k", "shots", label="few shots (CEM's fit)"),
                     bokeh={"line_dash": "dotted"}, mpl={"linestyle": ":"})]
    if len(table["seed"].unique()) > 1:
        layers.append(hv.ErrorBars(mean, "k", ["test", "std"]))
    for name, colour in (("base", "#555555"),):
        if name in refs:
            layers.append(styled(hv.Curve([(ks[0], refs[name]["mean"]), (ks[-1], refs[name]["mean"])], "k",
                                          "test", label=f"{name} on {target}"), color=colour,
                                 bokeh={"line_dash": "dashed"}, mpl={"linestyle": "--"}))
    return styled(hv.Overlay(layers), title=f"few-shot mixing for {target}", xlabel="shots k", ylabel="accuracy",
                  ylim=ACCURACY, padding=(0.04, 0.04), xticks=[int(k) for k in ks], bokeh={"width": 760, "height": 380,
                                                                     "legend_position": "right", "tools": ["hover"]},
                  mpl={"legend_position": "best"})  # inside (moved under the axes if it covers a line): a column wide


# --- the page ----------------------------------------------------------------------------------------------------

def mixture_shares(alphas: list[float], tasks: list[str]) -> str:
    """"shares 33 % add, 67 % sort": what a mixture is made of under SVF's rescale (α / Σα); "no mixture" at
    Σα = 0; "one expert" alone (its α does not matter)."""
    if len(alphas) == 1:
        return "one expert (its α does not change the weights)"
    total = float(sum(alphas))
    if total <= 0:
        return "no mixture (every α is 0)"
    return "shares " + ", ".join(f"{100 * a / total:.0f} % {t}" for a, t in zip(alphas, tasks, strict=True))


#: under a lone expert's greyed α slider
LONE_EXPERT = "*One expert: every α > 0 composes the same weights (SVF's rescale keeps only α's ratios).*"


#: why a run's mixer has nothing to mix (mixes_nothing), besides "no SVF experts"
DISPATCHES, LORA_NOT_MIXED = "the classification expert dispatches; it is not mixed", "a LoRA expert is not mixed"


def mixes_nothing(model: ExpertsModel) -> str:
    """Why a run's mixer has nothing to mix, in a few words, by cause (no_mixture's, with what to do; the export
    line said "no SVF experts to mix" of an SVF classification expert)."""
    d = model.data
    if d is not None and d.kind == "experts" and d.config.get("adapter") == "svf" and \
            all(e.task == "classify" for e in d.experts):
        return DISPATCHES
    if d is not None and d.kind == "experts" and d.config.get("adapter") == "lora":
        return LORA_NOT_MIXED
    return "this run has no SVF experts to mix"


def no_mixture(model: ExpertsModel) -> str:
    """Why a run's mixer has nothing to mix, by cause (a classification expert's page said "a LoRA expert"), and
    the command that trains what it would mix."""
    why = mixes_nothing(model)
    if why == DISPATCHES:
        return (f"The classification expert dispatches; it is not mixed. Train SVF task experts of its model and "
                f"seed (`{train_command(model)}`) to mix them here.")
    if why == LORA_NOT_MIXED:
        # said with the way to something to mix: the tab held one bare line
        return ("A LoRA expert is not mixed: Transformer²'s mixer composes SVF experts' z vectors. Train SVF "
                f"experts of its model and seed (`{train_command(model)}`) and open one of them to mix them here.")
    return "This run has no SVF experts to mix."


def train_command(model: ExpertsModel) -> str:
    """`workbench experts train` for an SVF expert (the default adapter) of the run's model, seed and prompt format,
    into the folder the page shows (the mixer takes experts of the same model and seed from there); T: the task."""
    cfg = model.data.config
    parts = ["workbench experts train", f"--model {shell_path(str(cfg['model']))}", "--task T",
             f"--seed {cfg['seed']}"]
    if cfg.get("prompt_format") == "chat":
        parts.append("--prompt-format chat")
    if model.runs_dir != "runs":
        parts.append(f"--runs {shell_path(model.runs_dir)}")
    return " ".join(parts)


#: the mixer's prompt and answer below its sliders in a phone's window (NARROW_PX), the window's width: beside them
#: (a stretching column may be 0 px wide: the row did not wrap) its words stood one a line
OWN_LINE_WHEN_NARROW = when_narrow("min-width: 100% !important;")
#: a checkbox's label on more lines in a phone's window (NARROW_PX): on one, the mixer's ran past the window's edge
LABEL_WRAPS_WHEN_NARROW = when_narrow("white-space: normal !important;", "*")


def mixer_panel(model: ExpertsModel, off_loop, streams: list | None = None) -> pn.Column:
    """Sliders per expert α (and the variant), a prompt box: every change recomposes the model and answers.
    `streams` collects the heatmap's stream of the model, for the page to stop it when it replaces the panel."""
    experts = model.mixer_experts()
    if not experts:
        return pn.Column(placeholder(no_mixture(model), width=640, height=160), sizing_mode="stretch_width")
    sliders = [pn.widgets.FloatSlider(label=f"α {e.label}", start=0.0, end=1.0, step=0.01, value=float(a),
                                      width=300, stylesheets=[FITS_WHEN_NARROW])
               for e, a in zip(experts, model.alphas, strict=False)]
    lone = None
    if len(sliders) == 1:  # α·p composes the same weights at every α > 0: SVF's rescale takes the scale out
        sliders[0].disabled = True  # (a slider has no description to say so: the page failed to build)
        lone = pn.pane.Markdown(LONE_EXPERT, sizing_mode="stretch_width", margin=(0, 10))
    variant = pn.widgets.RadioButtonGroup(label="mix", options=["raw", "sigmoid"], value=model.variant,
                                          color="primary", variant="outline")
    # the reference's norm_coeffs: kept for its runs, shown for what it does (α's scale only, not the weights)
    normalize = pn.widgets.Checkbox(label="normalise α (α's scale only: same weights)",
                                    value=model.normalize, stylesheets=[FITS_WHEN_NARROW, LABEL_WRAPS_WHEN_NARROW])
    prompt = pn.widgets.TextInput(label="Prompt", placeholder="e.g. s:kdpa= (sort), 12+34= (add), r:abc= (reverse)",
                                  value="s:kdpa=", width=320, stylesheets=[FITS_WHEN_NARROW])
    said = live(pn.pane.Markdown("", sizing_mode="stretch_width"))
    found = [int(k) for k in ((model.data.scores or {}).get("few_shot") or {})]
    per_matrix = model.data.config.get("alpha") == "matrix"  # CEM's α per matrix: the sliders hold its means
    load = pn.widgets.Select(label="α CEM found (mean over matrices)" if per_matrix else "α that CEM found",
                             options=["–"] + [f"k = {k}" for k in found], width=200,
                             description="the sliders take one α an expert: each expert's share of CEM's "
                                         "mixtures averaged over the matrices, not the mixture it chose"
                                         if per_matrix else None) if found else None
    score = pn.widgets.Button(label="score on held-out prompts (16 per task)", width=300,
                              stylesheets=[FITS_WHEN_NARROW])
    scores = pn.pane.Markdown("", sizing_mode="stretch_width")
    state = {"busy": False, "again": False}
    hv = holoviews()
    last = [model.mixture_figure()]

    def mixture(alphas, variant, normalize):
        try:
            last[0] = model.mixture_figure()
        except ValueError:  # a degenerate mixture (all α 0): the answer says why; the heatmap keeps the last one
            pass
        return last[0]

    # a DynamicMap updates the plot's data in place (a replaced plot, made while its tab is hidden, lays out squashed)
    stream = hv.streams.Params(model, ["alphas", "variant", "normalize"])
    if streams is not None:
        streams.append(stream)
    heat = pn.pane.HoloViews(hv.DynamicMap(mixture, streams=[stream]), backend="bokeh", linked_axes=False)

    async def run(*_):
        if state["busy"]:  # one answer at a time; the newest setting is answered when this one is done
            state["again"] = True
            return
        state["busy"] = True
        try:
            while True:
                state["again"] = False
                model.param.update(alphas=[float(s.value) for s in sliders], variant=variant.value,
                                   normalize=normalize.value)
                mix = " + ".join(f"{s.value:.2f}·{e.task}" for s, e in zip(sliders, experts, strict=True))
                shares = mixture_shares([s.value for s in sliders], [e.task for e in experts])
                try:
                    asked = prompt.value.strip()
                    out = await off_loop(model.answer, asked, busy=[said])
                    # the prompt, the answer and the experts' task names (a shared run's config) as text
                    said.object = as_text(f"**{literal(asked)} →** {code(out['answer'] or '∅')} · z′ = {literal(mix)} "
                                          f"({variant.value}) · {literal(shares)} · composed and decoded in "
                                          f"{out['seconds'] * 1000:.0f} ms")
                except ValueError as exc:
                    said.object = f"**cannot answer:** {plain(str(exc))}"
                except Exception as exc:
                    said.object = f"**answering failed:** {plain(failed(exc))}"
                    raise
                if not state["again"]:
                    break
        finally:
            state["busy"] = False

    async def on_score(*_):
        try:
            model.param.update(alphas=[float(s.value) for s in sliders], variant=variant.value,
                               normalize=normalize.value)
            acc = await off_loop(model.score_mixture, 16, busy=[score])
            scores.object = as_text("held-out accuracy: "
                                    + " · ".join(f"{literal(t)} **{a:.2f}**" for t, a in acc.items()))
        except ValueError as exc:
            scores.object = f"**cannot score:** {plain(str(exc))}"
        except Exception as exc:
            scores.object = f"**scoring failed:** {plain(failed(exc))}"
            raise

    def on_load(event):
        if event.new != "–":
            found = model.found_mixture(int(event.new.split("= ")[1]))
            variant.value, normalize.value = found["variant"], found["normalize"]  # the rule CEM mixed by
            for s, a in zip(sliders, found["alphas"], strict=True):
                s.value = min(1.0, max(0.0, a))

    for w in (*sliders, variant, normalize, prompt):  # a drag's many values: `run` answers the newest when free
        w.param.watch(run, "value")
    score.on_click(on_score)
    if load is not None:
        load.param.watch(on_load, "value")
    note = pn.pane.Markdown(
        "Each change composes W′ = U·diag(σ⊙z′)·Vᵀ·Σσ/Σ(σ⊙z′) once into the model (z′ = Σ α·p over the experts' "
        "raw parameters, the reference's rule, or Σ α·sigmoid(p)) and decodes the prompt greedily. The rescale "
        "takes the scale of z′ out: only α's ratios (each expert's share) change the weights.",
        sizing_mode="stretch_width")
    pn.state.onload(run) if pn.state.curdoc else None
    # in a phone's window the controls take its width (FITS_WHEN_NARROW), and what holds them may be as narrow
    # (SHRINKS_WHEN_NARROW): their fixed 300-320 px ran past it
    return pn.Column(note, pn.Row(pn.Column(*sliders, *([lone] if lone else []), variant, normalize,
                                            *([load] if load else []), stylesheets=[FITS_WHEN_NARROW]),
                                  pn.Column(prompt, said, score, scores, sizing_mode="stretch_width",
                                            stylesheets=[OWN_LINE_WHEN_NARROW]),
                                  stylesheets=[WRAPS_WHEN_NARROW, SHRINKS_WHEN_NARROW]),
                     scrolls(heat), sizing_mode="stretch_width", stylesheets=[SHRINKS_WHEN_NARROW])


def experts_page(runs_dir: str = "runs", run: str | None = None, standalone: bool = False,
                 model: ExpertsModel | None = None) -> pn.template.FastListTemplate:
    """The /experts page over the store `runs_dir`, on run `run` (default: the newest adapt run, else the newest
    experts run): its views, the mixer, export. standalone: a page of its own, without the links to the others.
    model: the page's model, made here when not given (a test's, to see what follows it)."""
    from workbench.dashboards.shell import (
        UNTRAPPED,
        WRAPPED_TABS,
        PageThread,
        address,
        address_at_load,
        export_controls,
        no_runs_page,
        off_loop,
        put_back,
        run_alert,
        section,
        served_location,
        shell,
        show_passed_over,
    )

    holoviews()
    model = model or ExpertsModel(runs_dir=runs_dir)
    alert = run_alert(model, run)
    if model.run_id is None:
        return no_runs_page("experts", alert, f"No experts or adapt run in {runs_dir} yet: `workbench experts train "
                                              f"--model … --task … --runs {shell_path(runs_dir)}` makes one.",
                            standalone=standalone)
    page = PageThread()  # the page's document, for updates after an await
    picker = pn.widgets.Select(label="Run", options=list(model.param.run_id.objects), value=model.run_id,
                               sizing_mode="stretch_width")
    refresh = pn.widgets.Button(label="refresh", sizing_mode="stretch_width")
    matrix = pn.widgets.Select.from_param(model.param.matrix, label="Matrix (z vs σ rank)",
                                          sizing_mode="stretch_width")
    compare = TextMultiChoice.from_param(model.param.compare, label="Pooled: other seeds or experts",
                                         placeholder="runs to pool", sizing_mode="stretch_width", **UNTRAPPED)
    fmt, size, export, status, download = export_controls(
        lambda suffix, **printed: model.export(None, Path(runs_dir) / model.run_id / "figures", suffix, **printed))
    what = pn.pane.Markdown("", margin=(0, 10))
    header = pn.pane.Markdown("", sizing_mode="stretch_width", margin=(0, 10))
    tabs = pn.Tabs(sizing_mode="stretch_width", dynamic=True, stylesheets=[WRAPPED_TABS])
    building = [False]
    # what the views on show follow of the model, stopped when build() replaces them (shell.Follower says why)
    following: list = []

    def view_pane(view: str):
        def draw(_changed, v=view, run_id=model.run_id):
            if model.run_id != run_id:
                return None
            # a Column of our own that stretches: the one Panel wraps a bound pane in takes the plot's "fixed"
            # sizing mode over (whatever it is given) without its width and height, and Bokeh's check logged W-1005
            # at each load of a LoRA run's page (its first tab a fixed-size curve)
            return pn.Column(pn.pane.HoloViews(model.figure(v), backend="bokeh", linked_axes=False),
                             sizing_mode="stretch_width")

        follower = Follower(model, ["matrix", "compare"])
        following.append(follower)
        return pn.panel(pn.bind(draw, follower.param.changed), lazy=True, sizing_mode="stretch_width")

    def build() -> None:
        d = model.data
        names = d.views
        for stream in following:  # the views of the run before stop following the model
            stream.unwatch()
        following.clear()
        building[0] = True
        try:
            tabs[:] = [(VIEWS[v], scrolls(view_pane(v), sizing_mode="stretch_width")) for v in names] + [
                ("Mixer", mixer_panel(model, off_loop, following))]
            tabs.active = names.index(model.view) if model.view in names else len(names) if model.view == MIXER else 0
        finally:
            building[0] = False
        header.object = as_text(model.summary())
        what.object = export_what(model)

    def on_tab(event):
        names = model.data.views
        if not building[0] and 0 <= event.new <= len(names):  # the last tab: the Mixer
            model.view = names[event.new] if event.new < len(names) else MIXER
            what.object = export_what(model)

    async def on_pick(event):
        if event.new == model.run_id:  # the menu put back to the run on show
            return
        try:  # the files are read on a worker thread
            data = await off_loop(model.prepare, event.new, busy=[tabs, picker])
        except ValueError as exc:
            alert.param.update(object=plain(str(exc)), visible=True)
            put_back(picker, lambda: model.run_id)  # the menu names the run on show (it kept the one refused)
            return

        def show():
            model.choose(event.new, data)
            alert.visible = False
            status.object = ""  # the last run's export (and its download) is not this one's
            address(location, run=model.run_id)  # a reload or a bookmark comes back to it
            build()

        # the model changes on the event loop, in one of the document's locked callbacks: its watchers re-run the
        # bound views, which choose() on the worker thread (as it was) built there, outside any document
        page.call_later(show)

    async def on_refresh(event):
        await off_loop(model.refresh, busy=[tabs, refresh])
        picker.options = list(model.param.run_id.objects)
        picker.value = model.run_id
        show_passed_over(alert, model)  # a refusal before is not this read's; the runs it passed over are
        address(location, run=model.run_id)  # a run removed since gave way to another: the address says which
        build()

    picker.param.watch(on_pick, "value")
    refresh.on_click(on_refresh)
    tabs.param.watch(on_tab, "active")
    model.param.watch(lambda e: setattr(header, "object", as_text(model.summary())), "compare")
    location = served_location()
    address_at_load(location, model)
    build()
    sidebar = [section("Run"), picker, refresh, section("View"), matrix, compare, section("Export for a paper"), what,
               fmt, size, export, status, download]
    return shell("experts", [alert, header, tabs], sidebar, standalone=standalone)


if __name__.startswith("bokeh"):
    pn.extension(inline=True, notifications=True)  # Notyf: shell.connection_notice
    experts_page(sys.argv[1] if len(sys.argv) > 1 else "runs", standalone=True).servable()  # titled by the shell
