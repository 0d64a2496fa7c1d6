"""QD archives: a CycleQD run's archives generation by generation, and the other archives the workbench reads.

Sources: a qd run (`workbench qd cycle`), an ASAL MAP-Elites illumination run (its archive as a grid of
thumbnails), a pyribs archive (`pyribs/<task>.parquet`, one file or the folder) and the reference's archive
maps (`gen{N}_archive_map.json`, one file or a folder of them: one generation per file).

    model = QDModel(runs_dir="runs", run_id="20260101-120000-qd-...")  # or QDModel(path=".../archive_maps")
    model.generation = 5                  # the scrubber
    model.select(12)                      # the elite card's model, highlighted in every view
    model.figure("archives")              # any of VIEWS, as a HoloViews object (page, notebook, paper)
    model.card()                          # the elite card's facts; model.answer("s:kdpa=") runs the elite
    model.export("lineage", "figs", ".pdf")

Every view's data is a method of `QDModel` (cells, sampling, curves, lineage, children, baselines) that tests
and notebooks call without a browser; the page binds them to widgets. `panel serve dashboards/qd.py --args RUNS`
or `workbench serve` (page /qd) shows it; `?run=ID` or `?file=PATH` opens a source.
"""

from __future__ import annotations

import bisect
import functools
import html
import itertools
import json
import logging
import math
import operator
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np
import pandas as pd
import panel as pn
import param

from workbench.checks import is_count, user_path
from workbench.dashboards.shell import (
    FITS_WHEN_NARROW,
    ROW_WIDTH,
    UNTRAPPED,
    WRAPPED_TABS,
    WRAPS_WHEN_NARROW,
    Follower,
    TextMultiChoice,
    as_text,
    code,
    counted,
    failed,
    ids_digest,
    literal,
    live,
    plain,
    scrolls,
    subheading,
)
from workbench.figures import CURVE_POINTS, holoviews, sized_by_frame, styled
from workbench.runs import Run, RunError, RunStore, a_kind_run, effective_status, read_parquet

if TYPE_CHECKING:
    from holoviews.core.dimension import Dimensioned

VIEWS = {"archives": "Archives", "sampling": "Sampling frequency", "curves": "Coverage · QD score",
         "lineage": "Lineage", "children": "Children", "baselines": "Final vs baselines"}
# what each kind of source holds data for (a pyribs file or an archive map has no lineage, no baselines)
KIND_VIEWS = {"qd": tuple(VIEWS), "archive_map": ("archives", "sampling", "curves"),
              "pyribs": ("archives", "children"), "map-elites": ("archives",)}
MODEL_NAMES = {"cycleqd": "CycleQD best", "cycleqd_one_model": "CycleQD one model", "expert": "seed expert",
               "base": "base", "task_arithmetic": "task arithmetic", "merge_recipe": "merge recipe",
               "multitask": "multi-task FT"}
HIGHLIGHT = "#d62728"
ACCENT = "#2f5d8a"
# seed experts: Okabe & Ito's vermillion, apart from the elites' blue for any colour vision (a purple was not)
SEED = "#D55E00"
# the chosen cell's ring on a map: black, which no colour map here takes (red on Oranges hid for many readers)
RING = "#000000"
#: rebuilt elites' weights a page keeps (the one on show and the one before): each is a whole model's state dict,
#: held while the tab stays open (four were kept: ~2 GB a tab with SmolLM2-sized experts)
BUILT_KEPT = 2
THUMB = 32  # pixels per MAP-Elites cell on the page (the exported figure uses the stored thumbnails)
#: an archive panel's room beside its frame: the y axis with its ticks and label, the colour bar with its ticks and
#: label (Chromium drew three 190 px frames 927 px wide: a row sized by its frames alone ran past ROW_WIDTH)
ARCHIVE_ROOM = 125
#: an archive's frame on the page: three archives and their colour bars a row
ARCHIVE_FRAME = ROW_WIDTH // 3 - ARCHIVE_ROOM


# --- sources: every kind becomes one QDData ---------------------------------------------------------------------

@dataclass
class QDData:
    """What the explorer shows, whatever the source.

    cells: one row per filled cell per generation: generation, task (the archive), cell (tuple of bin indices along
        the archive's axes), x, y (its position in the plot: the first two indices), id, quality, draws (times
        the elite was drawn as a parent from this archive up to that generation; NaN when unknown).
    models: one row per model (index: id): label, generation, task, parents, omegas, mutation, pool,
        seed_expert, entered, kept and score_<task> for every task (NaN when unknown).
    """

    kind: str
    name: str
    tasks: list[str]
    axes: dict[str, list[str]]
    bins: int
    ranges: dict[str, tuple[float, float]]
    cells: pd.DataFrame
    models: pd.DataFrame
    info: dict
    metrics: pd.DataFrame | None = None
    scores: dict | None = None
    thumbs: np.ndarray | None = None
    thetas: np.ndarray | None = None

    @property
    def generations(self) -> list[int]:
        return sorted(int(g) for g in self.cells["generation"].unique()) if len(self.cells) else [0]

    @property
    def views(self) -> list[str]:
        views = list(KIND_VIEWS[self.kind])
        if self.kind == "qd" and not self.scores:
            views.remove("baselines")  # a run still running has no test scores yet
        return views

    def snap(self, generation: int) -> int:
        """The last generation with a snapshot at or before `generation` (the first one if none)."""
        gens = self.generations
        before = [g for g in gens if g <= generation]
        return before[-1] if before else gens[0]


def _cells(rows: pd.DataFrame) -> pd.DataFrame:
    """x, y plot positions from the cell tuples: a 1-D archive (K = 2) is one row; K > 3 shows the first two
    axes (the page keeps the best elite where cells share them)."""
    rows = rows.reset_index(drop=True)
    rows["cell"] = [tuple(int(i) for i in c) for c in rows["cell"]]
    rows["x"] = [c[0] for c in rows["cell"]]
    rows["y"] = [c[1] if len(c) > 1 else 0 for c in rows["cell"]]
    return rows


def _score_text(row: pd.Series, tasks: list[str]) -> str:
    return " · ".join(f"{t} {row[f'score_{t}']:.3f}" for t in tasks if not pd.isna(row.get(f"score_{t}")))


def read_qd_run(store: RunStore, run_id: str) -> QDData:
    """A qd run's tables (children, archive snapshots, metrics) and its test scores if it finished."""
    run = store.open(run_id)
    info = run.info
    if info.get("kind") != "qd":
        raise ValueError(_not_openable(run_id, info.get("kind")))
    if not (run.path / "children.parquet").exists():
        raise ValueError(f"run {run.id!r} has no finished generation yet (no children.parquet); wait a moment")
    cfg, tasks = _qd_config(run)
    # the archives first: a running run writes children.parquet, then archives.parquet, after each generation, so
    # children read after the archives hold every elite those name (read the other way round, a generation
    # written in between left elites without their model: a KeyError that stopped the page building)
    snapshots = run.read_table("archives").to_pandas()
    children = run.read_table("children").to_pandas()
    models = children.set_index("id", drop=False)
    models["label"] = [f"seed expert {s}" if isinstance(s, str) and s else f"model {i}"
                       for i, s in zip(models["id"], models["seed_expert"], strict=True)]
    models["parents"] = [[int(p) for p in ps] for ps in models["parents"]]
    cells = _cells(snapshots)
    # times drawn as a parent: from archive t in the generations optimising t (not from all archives, where t held
    # fewer than two elites), counted up to each snapshot
    drawn: dict[tuple[str, int], list[int]] = {}
    for g, t, parents, pool in zip(children["generation"], children["task"], children["parents"], children["pool"],
                                   strict=True):
        for p in parents if pool == "archive" else ():
            drawn.setdefault((t, int(p)), []).append(int(g))
    # children come in generation order, so each list of draw generations is sorted already
    cells["draws"] = [float(bisect.bisect_right(drawn.get((t, int(i)), ()), g))
                      for t, i, g in zip(cells["task"], cells["id"], cells["generation"], strict=True)]
    scores = run.read_json("scores.json")
    ranges = {t: tuple(cfg["ranges"][t]) for t in tasks}
    return QDData("qd", run.id, tasks, {t: [a for a in tasks if a != t] for t in tasks}, int(cfg["bins"]), ranges,
                  cells, models, info, metrics=run.read_table("metrics").to_pandas(), scores=scores)


def _qd_config(run: Run) -> tuple[dict, list[str]]:
    """A qd run's config and tasks, the fields the page reads checked: one ValueError naming a missing one (the page
    waited on "loading…" for good on the KeyError of a hand-edited run.json)."""
    cfg = run.info.get("config")
    missing = [k for k in ("tasks", "bins", "ranges") if k not in cfg] if isinstance(cfg, dict) else ["config"]
    if missing:
        raise ValueError(f"run {run.id!r}: its run.json's config lacks {', '.join(missing)} (the page reads tasks, "
                         "bins and ranges); correct it, or move the folder out of the store")
    tasks, bins, ranges = cfg["tasks"], cfg["bins"], cfg["ranges"]
    if not (isinstance(tasks, list) and tasks and all(isinstance(t, str) for t in tasks)):
        raise ValueError(f"run {run.id!r}: its run.json's config has a bad tasks ({tasks!r}, not a list of task "
                         "names); correct it, or move the folder out of the store")

    def is_range(r: object) -> bool:
        return isinstance(r, list | tuple) and len(r) == 2 and all(
            isinstance(x, int | float) and not isinstance(x, bool) for x in r)

    bad = [] if is_count(bins) else ["bins"]
    bad += [f"ranges.{t}" for t in tasks if not (isinstance(ranges, dict) and is_range(ranges.get(t)))]
    if bad:
        raise ValueError(f"run {run.id!r}: its run.json's config has a bad {', '.join(bad)}; correct it, or move "
                         "the folder out of the store")
    return cfg, tasks


def read_map_elites(store: RunStore, run_id: str) -> QDData:
    """An ASAL MAP-Elites illumination: its final archive (cells from the checkpointed pyribs archive, in the
    order of population.parquet and thumbs.npy) as one archive whose quality is the novelty."""
    run = store.open(run_id)
    info = run.info
    cfg = info.get("config", {})
    if info.get("kind") != "illuminate" or cfg.get("algorithm") != "map-elites":
        raise ValueError(_not_openable(run_id, info.get("kind"), cfg.get("algorithm")))
    if info.get("status") != "done" or not (run.path / "thumbs.npy").exists():
        command = run.resume_command  # a killed run said "running" (run.json's word, not the live status)
        raise ValueError(f"run {run.id!r} has not finished (status {run.live_status(info)}): its archive and "
                         f"thumbnails are written at the end" + (f"; resume it with `{command}`" if command else ""))
    import workbench.asal.search  # noqa: F401 - registers the searches the checkpoint holds

    search = (run.load_checkpoint() or {}).get("search")
    archive = getattr(search, "archive", None)
    if archive is None:
        raise ValueError(f"run {run.id!r} has no MAP-Elites archive in its checkpoint")
    data = archive.data(["index", "objective", "solution"])
    from workbench.asal.driver import read_population

    table, thumbs = read_population(run)  # from one write
    thetas = np.asarray(table["theta"], np.float64)
    if len(thetas) != len(data["index"]) or not np.allclose(thetas, data["solution"], atol=1e-5):
        raise ValueError(f"run {run.id!r}: population.parquet does not match its checkpointed archive")
    side = int(search.cells)
    rows = [{"generation": 0, "task": "novelty", "cell": tuple(int(i) for i in np.unravel_index(int(k), (side, side))),
             "id": m, "quality": float(q), "draws": math.nan}
            for m, (k, q) in enumerate(zip(data["index"], data["objective"], strict=True))]
    models = pd.DataFrame({"id": np.arange(len(thetas)), "label": [f"member {m}" for m in range(len(thetas))],
                           "score_novelty": data["objective"].astype(float),
                           "theta_norm": np.linalg.norm(thetas, axis=1)}).set_index("id", drop=False)
    q = data["objective"]
    # the descriptor: the first two principal components of the seed population's embeddings (asal.search)
    return QDData("map-elites", run.id, ["novelty"], {"novelty": list(PCA_AXES)}, side,
                  {"novelty": (float(min(0.0, q.min())), float(max(1.0, q.max())))}, _cells(pd.DataFrame(rows)),
                  models, info, thumbs=thumbs, thetas=thetas)


def read_pyribs_source(path: Path) -> QDData:
    """A pyribs archive `write_pyribs` wrote: one <task>.parquet (that archive) or the folder (all of them)."""
    from workbench.qd.pyribs import read_pyribs_frame

    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"{path} holds no pyribs archive (<task>.parquet files)")
    rows, models, meta = [], {}, None
    for file in files:
        frame, meta = read_pyribs_frame(file)
        tasks, task = list(meta["tasks"]), meta["task"]
        shape = (int(meta["bins"]),) * (len(tasks) - 1)
        scores = frame.get_field("scores") if "scores_0" in frame.columns else None
        for n, (i, mid, q) in enumerate(zip(frame.get_field("index"), frame.get_field("solution")[:, 0],
                                            frame.get_field("objective"), strict=True)):
            cell = tuple(int(c) for c in np.unravel_index(int(i), shape))
            rows.append({"generation": 0, "task": task, "cell": cell, "id": int(mid), "quality": float(q),
                         "draws": math.nan})
            row = models.setdefault(int(mid), {"id": int(mid), "label": f"model {int(mid)}"})
            if scores is not None:
                row.update({f"score_{t}": float(s) for t, s in zip(tasks, scores[n], strict=True)})
            row[f"score_{task}"] = float(q)
    tasks = list(meta["tasks"])
    shown = [t for t in tasks if any(r["task"] == t for r in rows)] or [meta["task"]]
    frame = pd.DataFrame(list(models.values())).set_index("id", drop=False)
    for t in tasks:
        if f"score_{t}" not in frame:
            frame[f"score_{t}"] = math.nan
    return QDData("pyribs", str(path), shown, {t: [a for a in tasks if a != t] for t in tasks}, int(meta["bins"]),
                  {t: tuple(meta["ranges"][t]) for t in tasks}, _cells(pd.DataFrame(rows)), frame,
                  {"tasks": tasks, "all_tasks": tasks})


def read_archive_map_source(path: Path) -> QDData:
    """The reference's archive maps: one gen{N}_archive_map.json or a folder of them (one generation each).
    Model ids are the distinct model paths in order of appearance; bins and ranges are not in the files: those of
    the qd run whose archive_maps/ they are in, else bins at least 15 and the largest index + 1, colours on [0, 1]
    or the best quality."""
    from workbench.qd.archive_map import _FILE, read_archive_map, run_settings

    if path.is_dir():
        files = sorted((int(m.group(1)), p) for p in path.iterdir() if (m := _FILE.fullmatch(p.name)))
        if not files:
            raise ValueError(f"{path} holds no gen{{N}}_archive_map.json file")
    else:
        m = _FILE.fullmatch(path.name)
        files = [(int(m.group(1)) if m else 0, path)]
    rows, paths = [], {}
    tasks: list[str] | None = None
    for g, file in files:
        entries = read_archive_map(file, tasks)
        tasks = list(entries)
        for task, cells in entries.items():
            for cell, e in cells.items():
                i = paths.setdefault(e.model_path, len(paths))
                rows.append({"generation": g, "task": task, "cell": cell, "id": i, "quality": e.quality,
                             "draws": float(max(e.sampling_freq - 1, 0)), "path": e.model_path})
    cells = _cells(pd.DataFrame(rows))
    own = run_settings(path)
    bins = max(own[0] if own else 15, int(max((max(c) for c in cells["cell"]), default=0)) + 1)
    models = pd.DataFrame({"id": list(paths.values()), "label": list(paths)}).set_index("id", drop=False)
    last = cells.sort_values("generation").drop_duplicates(["task", "id"], keep="last")
    for t in tasks:  # a model's quality in archive t is its score on t
        models[f"score_{t}"] = last[last["task"] == t].set_index("id")["quality"].reindex(models.index)
    top = float(cells["quality"].max()) if len(cells) else 1.0
    ranges = {t: own[1][t] if own and t in own[1] else (0.0, 1.0 if top <= 1.0 else top) for t in tasks}
    return QDData("archive_map", str(path), tasks, {t: [a for a in tasks if a != t] for t in tasks}, bins, ranges,
                  cells, models, {"tasks": tasks})


def read_source(runs_dir: str, run_id: str | None = None, path: str | None = None) -> QDData:
    """The QDData of a run (qd or MAP-Elites) or a file; one ValueError saying why a source cannot be shown."""
    from workbench.qd.archive_map import ArchiveMapError

    if run_id:
        store = RunStore(runs_dir)
        try:
            kind = store.open(run_id).info.get("kind")
        except RunError as exc:
            raise ValueError(str(exc)) from None
        return read_qd_run(store, run_id) if kind == "qd" else read_map_elites(store, run_id)
    if not path or not path.strip():
        raise ValueError("give a run id or the path of a pyribs archive (.parquet) or an archive map (.json)")
    p = user_path(path.strip())
    if not p.exists():
        raise ValueError(f"no file or folder {str(p)!r}")
    try:
        if (p / "run.json").is_file():  # a run folder: open it as a run
            return read_source(str(p.parent), p.name)
        if p.is_dir():
            if any(p.glob("*.parquet")):
                return read_pyribs_source(p)
            if any(p.glob("gen*_archive_map.json")):
                return read_archive_map_source(p)
            raise ValueError(f"{p} holds neither a pyribs archive (<task>.parquet) nor archive maps "
                             f"(gen{{N}}_archive_map.json)")
        if p.suffix == ".parquet":
            return read_pyribs_source(p)
        if p.suffix == ".json":
            return read_archive_map_source(p)
    except ArchiveMapError as exc:
        raise ValueError(str(exc)) from None
    except (OSError, KeyError, TypeError, IndexError) as exc:
        raise ValueError(f"cannot read {p}: {type(exc).__name__}: {exc}") from None
    raise ValueError(f"{p.name} is neither a pyribs archive (.parquet) nor a CycleQD archive map (.json)")


def _not_openable(run_id: str, kind: str | None, algorithm: str | None = None) -> str:
    kind = kind or "unknown"  # a run.json that names none ("a None run" was said)
    what = a_kind_run(f"{kind} ({algorithm})" if algorithm else kind)
    where = {"merge": " (open it on the Merge page)", "illuminate": " (open it in the Atlas)"}.get(kind, "")
    return f"run {run_id!r} is {what}{where}; the QD page opens qd runs and MAP-Elites illuminations"


def archive_thumbnail(run_path: str | Path, width: int = 224, height: int = 150) -> np.ndarray | None:
    """A qd run's newest archives side by side as a small RGB image (quality on each task's range in viridis,
    empty cells dark): its picture in the Runs gallery. None before its first generation."""
    path = Path(run_path)
    try:
        config = json.loads((path / "run.json").read_text())["config"]
        table = read_parquet(path / "archives.parquet", ["generation", "task", "cell", "quality"]).to_pandas()
    except (OSError, ValueError, KeyError):
        return None
    if table.empty:
        return None
    try:
        return _draw_archives(table, config, width, height)
    except (KeyError, TypeError, ValueError, IndexError):  # a config or table this code did not foresee: no picture
        return None


def _draw_archives(table: pd.DataFrame, config: dict, width: int, height: int) -> np.ndarray:
    import matplotlib

    tasks, bins = list(config["tasks"]), int(config["bins"])
    rows = 1 if len(tasks) == 2 else bins  # K = 2: each archive is one row of cells
    gap = 1  # empty cells between two archives
    px = max(1, min(width // (len(tasks) * (bins + gap)), height // rows))
    image = np.full((rows * px, (len(tasks) * (bins + gap) - gap) * px, 3), 29, np.uint8)
    cmap = matplotlib.colormaps["viridis"]
    last = table[table["generation"] == table["generation"].max()]
    for k, task in enumerate(tasks):
        lo, hi = config["ranges"][task]
        for cell, q in zip(last[last["task"] == task]["cell"], last[last["task"] == task]["quality"], strict=True):
            x, y = int(cell[0]), int(cell[1]) if len(cell) > 1 else 0
            colour = np.asarray(cmap(float(np.clip((q - lo) / (hi - lo), 0.0, 1.0)))[:3]) * 255
            r, c = rows - 1 - y, k * (bins + gap) + x  # y up, as on the page
            image[r * px:(r + 1) * px, c * px:(c + 1) * px] = colour.astype(np.uint8)
    return image


def source_runs(runs_dir: str, rows: list[dict] | None = None) -> list[str]:
    """The runs this page opens: qd runs with a generation, finished MAP-Elites illuminations (oldest first);
    `rows`: the store's catalog (RunStore.list()), read when not given."""
    out = []
    for r in RunStore(runs_dir).list() if rows is None else rows:
        if r["kind"] == "qd" and (Path(runs_dir) / r["id"] / "children.parquet").exists():
            out.append(r["id"])
        elif r["kind"] == "illuminate" and r.get("algorithm") == "map-elites" and r["status"] == "done":
            out.append(r["id"])
    return out


# --- the model -------------------------------------------------------------------------------------------------

class QDModel(param.Parameterized):
    """The QD page's state: a CycleQD or MAP-Elites run (or a pyribs archive file) on show, the generation the
    scrubber stands at, the archive and elite picked, seeds pooled; every view is a method of it (views_panel
    shows them in a notebook)."""

    runs_dir = param.String(default="runs", doc="the run store")
    run_id = param.Selector(default=None, objects=[], allow_None=True, doc="the run on show (qd or MAP-Elites)")
    path = param.String(default="", doc="a pyribs archive or archive map on show instead of a run")
    generation = param.Integer(default=0, doc="the scrubber: archives as they stood after this generation")
    task = param.Selector(default=None, objects=[], allow_None=True, doc="the archive last clicked")
    selected = param.Integer(default=-1, doc="the elite card's model, highlighted in every view (-1: none)")
    compare = param.ListSelector(default=[], objects=[], doc="runs of the same config (seeds) pooled in the bars")
    view = param.Selector(default="archives", objects=list(VIEWS), doc="the tab on show (and what export writes)")
    message = param.String(default="", doc="why the chosen source cannot be shown, if it cannot")
    revision = param.Integer(default=0, doc="counts loads: the page rebuilds its views when it changes")

    def __init__(self, autoload: bool = True, **params: Any):
        """autoload: open `path`, else `run_id`, else the newest run here (the page loads off the event loop
        instead: autoload=False)."""
        wanted_run = params.pop("run_id", None)
        super().__init__(**params)
        self.data: QDData | None = None
        self._built: dict[tuple[str, int], dict] = {}  # rebuilt weights, the last few
        self._lm = None  # (zoo path, model, tokenizer) the elite runs in
        self._lock = threading.Lock()  # one rebuild/generation at a time per session
        self._layers: tuple = (None, None)  # (key, layers) of the archive plot made last
        self._rows: list[dict] = []  # the catalog as refresh_runs() last read it
        self.skipped: list[str] = []  # runs of its kinds the catalog left out, and why (the page's alert says them)
        self.refresh_runs()
        if not autoload:
            return
        try:
            if self.path:
                self.open_path(self.path)
            elif wanted_run or self.param.run_id.objects:
                self.open_run(wanted_run or self.param.run_id.objects[-1])
        except ValueError as exc:
            self.message = str(exc)

    @param.depends("run_id", watch=True)
    def _run_chosen(self) -> None:
        """Setting run_id opens that run (a notebook's `model.run_id = ...`); the page loads off the loop."""
        if self.run_id and (self.data is None or self.data.name != self.run_id):
            try:
                self.open_run(self.run_id)
            except ValueError as exc:
                self.message = str(exc)

    # --- sources ---

    def refresh_runs(self) -> list[str]:
        """Re-read which runs this page opens (the run picker's choices) and the catalog that same_config reads."""
        # the catalog once per refresh: same_config read it again, on the page's event loop, at each source shown
        store = RunStore(self.runs_dir)
        self._rows = store.list()
        # qd runs and MAP-Elites illuminations the catalog left out (a run.json field of another type) are passed
        # over: said, with why and the fix (they dropped out of the menu without a word); oldest first, as the menu
        self.skipped = sorted([*store.passed_over(["qd"]), *store.passed_over(["illuminate"], "map-elites")])
        ids = source_runs(self.runs_dir, self._rows)
        self.param.run_id.objects = ids if self.run_id in ids or self.run_id is None else [*ids, self.run_id]
        return ids

    def open_run(self, run_id: str) -> None:
        """Show a run (qd or MAP-Elites); ValueError with the reason if it cannot be shown."""
        self.show(read_source(self.runs_dir, run_id.strip()))

    def open_path(self, path: str) -> None:
        """Show a pyribs archive, an archive map (file or folder) or a run folder."""
        self.show(read_source(self.runs_dir, path=path))

    def source(self) -> dict[str, str]:
        """What is on show, as `read_source`'s arguments ({"run": ID} or {"path": PATH}; {} for nothing)."""
        if self.data is None:
            return {}
        return {"run": self.data.name} if self.data.kind in ("qd", "map-elites") else {"path": self.data.name}

    def show(self, data: QDData) -> None:
        """Put a read source on show (fast; reading is `read_source`, which the page runs off the event loop)."""
        is_run = data.kind in ("qd", "map-elites")
        if is_run and data.name not in self.param.run_id.objects:
            self.param.run_id.objects = [*self.param.run_id.objects, data.name]
        self.data = data
        self.param.task.objects = list(data.tasks)
        self.param.compare.objects = self.same_config() if data.kind == "qd" else []
        with param.parameterized.discard_events(self):
            self.param.update(run_id=data.name if is_run else None, path="" if is_run else data.name,
                              generation=data.generations[-1], task=data.tasks[0], selected=-1, compare=[],
                              view=data.views[0], message="")
        self.revision += 1

    def same_config(self) -> list[str]:
        """Finished qd runs of this run's config with other seeds (their test scores pool into the bars): one a
        seed (a run that repeats a seed is the same computation again: it would count twice)."""
        d = self.data
        if d is None or d.kind != "qd":
            return []
        from workbench.compare import replicates_of

        root = Path(self.runs_dir)
        # a zoo counts by its content where the run fingerprinted it, not the path it lay at (flat_settings); the
        # catalog as refresh_runs read it (a run made since is offered after a refresh, as the run menu offers it),
        # each candidate's run.json read once (store.open(...).info read it twice)
        return replicates_of(d.info, ((r["id"], Run(root / r["id"]).info) for r in self._rows
                                      if r["kind"] == "qd" and r["id"] != d.name
                                      and (root / r["id"] / "scores.json").exists()))

    # --- selection ---

    def select(self, model_id: int, task: str | None = None) -> None:
        """The elite card's model (-1: none); `task` names the archive it was clicked in."""
        model_id = int(model_id)
        if self.data is None or (model_id >= 0 and model_id not in self.data.models.index):
            raise ValueError(f"no model {model_id} in {self.data.name if self.data else 'this source'}")
        self.param.update(selected=model_id, **({"task": task} if task else {}))

    def cell_at(self, task: str, x: float, y: float) -> int:
        """The elite (id) of archive `task` shown at plot position (x, y) at the current generation; -1: empty."""
        cells = self.cells(task)
        hit = cells[(cells["x"] == round(x)) & (cells["y"] == round(y))]
        return int(hit.sort_values("quality").iloc[-1]["id"]) if len(hit) else -1

    def click(self, task: str, x: float, y: float) -> int:
        """What a click on a cell does: select its elite (or nothing on an empty cell); returns the id."""
        i = self.cell_at(task, x, y)
        if i >= 0:
            self.select(i, task)
        return i

    # --- the data of each view ---

    def cells(self, task: str, generation: int | None = None) -> pd.DataFrame:
        """The filled cells of archive `task` as they stood after `generation` (default: the scrubber's), one row
        per plot position (K > 3: the best elite of the cells sharing it), with the hover's text columns."""
        d = self.data
        rows = self._archive_rows(task, generation)
        rows = rows.sort_values("quality").drop_duplicates(["x", "y"], keep="last").sort_values(["x", "y"])
        models = d.models.reindex(rows["id"])
        all_tasks = d.info.get("all_tasks", d.tasks)
        return rows.assign(
            model=pd.Series([str(v) for v in models["label"]], index=rows.index, dtype=object),
            scores=pd.Series([_score_text(r, all_tasks) for _, r in models.iterrows()], index=rows.index,
                             dtype=object),
            parents=pd.Series([_parents_text(r) for _, r in models.iterrows()], index=rows.index, dtype=object),
            cell_text=pd.Series([",".join(map(str, c)) for c in rows["cell"]], index=rows.index, dtype=object))

    def _archive_rows(self, task: str, generation: int | None = None) -> pd.DataFrame:
        """Every elite of archive `task` after `generation` (default: the scrubber's), all its cells (K > 3: more
        than one per plot position)."""
        d = self.data
        g = d.snap(self.generation if generation is None else generation)
        return d.cells[(d.cells["generation"] == g) & (d.cells["task"] == task)]

    def elite_cells(self, model_id: int | None = None) -> dict[str, tuple[int, ...]]:
        """Archive -> the cell the model holds at the current generation (the highlight in every archive), found
        among all the archive's cells: with K > 3 tasks an elite that is not the best at its plot position is
        still outlined there."""
        model_id = self.selected if model_id is None else model_id
        out = {}
        for task in self.data.tasks:
            rows = self._archive_rows(task)
            hit = rows[rows["id"] == model_id]
            if len(hit):
                out[task] = hit.iloc[0]["cell"]
        return out

    def sampling(self, task: str) -> pd.DataFrame:
        """Archive `task`'s elites with how often each was drawn as a parent from it, up to the generation; with
        K > 3 tasks a plot position's count is the sum over the elites of all the cells projected there."""
        cells = self.cells(task)
        rows = self._archive_rows(task)
        if len(rows) > len(cells):
            total = rows.groupby(["x", "y"])["draws"].sum(min_count=1)
            cells = cells.assign(draws=[total.loc[(x, y)] for x, y in zip(cells["x"], cells["y"], strict=True)])
        return cells[~cells["draws"].isna()]

    def curves(self) -> pd.DataFrame:
        """Per generation and archive: coverage (fraction of cells filled), QD score (sum of elite qualities),
        max quality; from the snapshots (equal to a qd run's metrics.parquet)."""
        d = self.data
        total = d.bins ** max(len(d.info.get("all_tasks", d.tasks)) - 1, 1) if d.kind != "map-elites" else d.bins ** 2
        grouped = d.cells.groupby(["generation", "task"])["quality"]
        out = pd.DataFrame({"count": grouped.size(), "qd_score": grouped.sum(), "max_quality": grouped.max()})
        out = out.reset_index()
        full = pd.MultiIndex.from_product([d.generations, d.tasks], names=["generation", "task"])
        out = out.set_index(["generation", "task"]).reindex(full).reset_index()
        out["count"] = out["count"].fillna(0)
        out["qd_score"] = out["qd_score"].fillna(0.0)
        out["coverage"] = out["count"] / total
        return out[["generation", "task", "coverage", "qd_score", "max_quality"]]

    def ancestors(self, model_id: int) -> list[int]:
        """The model and every ancestor back to the seed experts, newest first."""
        models, seen, stack = self.data.models, set(), [int(model_id)]
        while stack:
            i = stack.pop()
            if i in seen or i not in models.index:
                continue
            seen.add(i)
            stack.extend(int(p) for p in (models.at[i, "parents"] if "parents" in models else []))
        return sorted(seen, reverse=True)

    def lineage(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(nodes, edges) of the elites at the generation and their ancestries: a node per model (x = its
        generation, y = the lane of the task its generation optimised, siblings side by side; role: seed expert,
        elite, ancestor; on_path: in the selected model's ancestry) and an edge per parent -> child."""
        d = self.data
        g = d.snap(self.generation)
        elites = d.cells[d.cells["generation"] == g]["id"].unique()
        keep = set()
        for i in elites:
            keep.update(self.ancestors(int(i)))
        path = set(self.ancestors(self.selected)) if self.selected >= 0 else set()
        models = d.models.loc[sorted(keep)].reset_index(drop=True)
        batch = max(int(d.info.get("config", {}).get("batch", 1)), 1)
        lane = {t: k for k, t in enumerate(d.tasks)}
        nodes = pd.DataFrame({
            "x": models["generation"].astype(float),
            # a child beside its batch's siblings; a seed expert (its index is its task's, not a place in a batch:
            # seed 2 of three was drawn on lane 3, and of five off the plot) on its lane
            "y": [lane[t] + (0.0 if batch == 1 or not ps else (int(i) - (batch - 1) / 2) * 0.6 / batch)
                  for t, i, ps in zip(models["task"], models["index"], models["parents"], strict=True)],
            "index": models["id"].astype(int),
            "model": pd.Series(list(models["label"]), dtype=object),
            "role": pd.Series(["seed expert" if not ps else ("elite" if i in set(elites) else "ancestor")
                               for i, ps in zip(models["id"], models["parents"], strict=True)], dtype=object),
            "scores": pd.Series([_score_text(r, d.tasks) for _, r in models.iterrows()], dtype=object),
            "parents": pd.Series([_parents_text(r) for _, r in models.iterrows()], dtype=object),
            "on_path": [int(i) in path for i in models["id"]]})
        edges = pd.DataFrame([(int(p), int(i)) for i, ps in zip(models["id"], models["parents"], strict=True)
                              for p in ps], columns=["source", "target"])
        return nodes, edges

    def children(self) -> pd.DataFrame:
        """Every evaluated child up to the generation (a pyribs archive: its elites), its scores on all tasks and
        whether it entered an archive."""
        d = self.data
        models = d.models
        if "generation" in models:
            models = models[models["generation"] <= d.snap(self.generation)]
        entered = models["kept"] if "kept" in models else pd.Series(True, index=models.index)
        return models.assign(status=pd.Series(np.where(entered, "entered an archive", "entered none"),
                                               index=models.index, dtype=object),
                             seed=[not ps for ps in models["parents"]] if "parents" in models else False,
                             model=pd.Series(list(models["label"]), index=models.index, dtype=object),
                             parents_text=pd.Series([_parents_text(r) for _, r in models.iterrows()],
                                                    index=models.index, dtype=object))

    def baselines(self) -> pd.DataFrame:
        """Test scores per task of CycleQD's final models, the seed experts and the baselines: mean, std and n
        over this run and the `compare` runs (one run: std 0)."""
        d = self.data
        if d is None or d.kind != "qd" or not d.scores:
            return pd.DataFrame(columns=["task", "model", "name", "mean", "std", "n"])
        rows = []
        if self.compare:
            from workbench.qd.baselines import report

            store = RunStore(self.runs_dir)
            rep = report([store.open(i) for i in [d.name, *self.compare]])
            for t in rep["tasks"]:
                for m, s in rep["per_task"][t]["scores"].items():
                    rows.append({"task": t, "model": m, "mean": s["mean"], "std": s["std"], "n": len(s["values"])})
        else:
            for t, per in d.scores["per_task"].items():
                rows += [{"task": t, "model": m, "mean": float(v), "std": 0.0, "n": 1} for m, v in per.items()]
        out = pd.DataFrame(rows)
        out["name"] = pd.Series([MODEL_NAMES.get(m, m) for m in out["model"]], dtype=object)
        return out

    # --- the elite card ---

    def card(self, model_id: int | None = None) -> dict | None:
        """The elite card's facts: label, scores, lineage, where it is an elite now, draws, ancestry."""
        d = self.data
        i = self.selected if model_id is None else int(model_id)
        if d is None or i < 0:
            return None
        row = d.models.loc[i]
        all_tasks = d.info.get("all_tasks", d.tasks)
        out = {"id": i, "label": row["label"], "kind": d.kind,
               "scores": {t: float(row[f"score_{t}"]) for t in all_tasks if not pd.isna(row.get(f"score_{t}"))},
               "elite_of": {t: cell_text(c) for t, c in self.elite_cells(i).items()},
               "generation": d.snap(self.generation)}
        if d.kind == "qd":
            g = d.snap(self.generation)
            born = d.models[d.models["generation"] <= g]
            drawn = [(task, pool) for task, ps, pool in zip(born["task"], born["parents"], born["pool"], strict=True)
                     for p in ps if int(p) == i]
            # from archive t; and from all archives where the archive optimised held fewer than two elites
            draws = {t: sum(task == t and pool == "archive" for task, pool in drawn) for t in d.tasks}
            out["draws_all"] = sum(pool != "archive" for _, pool in drawn)
            ancestry = []
            for a in self.ancestors(i):
                r = d.models.loc[a]
                ancestry.append({"id": a, "generation": int(r["generation"]), "label": r["label"],
                                 "parents": [int(p) for p in r["parents"]], "task": r["task"]})
            out.update(born=int(row["generation"]), task=row["task"], parents=[int(p) for p in row["parents"]],
                       omegas=[float(w) for w in row["omegas"]], mutation=row["mutation"],
                       mutation_scale=float(row["mutation_scale"]), pool=row["pool"],
                       entered=list(row["entered"]), draws=draws, ancestry=ancestry, playable=True)
        elif d.kind == "archive_map":
            g = d.snap(self.generation)
            now = d.cells[(d.cells["generation"] == g) & (d.cells["id"] == i)]
            out["draws"] = {t: int(v) for t, v in zip(now["task"], now["draws"], strict=True)}
            out["path"] = row["label"]
        elif d.kind == "map-elites":
            out.update(theta_norm=float(row["theta_norm"]), lab=f"./lab?run={quote(d.name, safe='')}&member={i}")
        return out

    def prompt_example(self) -> str:
        """A held-out prompt of the clicked archive's task, for the prompt box's placeholder."""
        from workbench.lm.tasks import TASKS, heldout

        task = self.task if self.task in TASKS else next((t for t in (self.data.tasks if self.data else [])
                                                          if t in TASKS), "sort")
        return heldout(task, 1, 0)[0][0]

    def answer(self, prompt: str, max_new_tokens: int | None = None) -> str:
        """The selected elite, rebuilt from its lineage (workbench.qd.run.rebuild_model), decoding `prompt`
        greedily (seconds: the page calls this on a worker thread)."""
        from workbench.lm.evaluation import greedy
        from workbench.lm.tasks import CHARS, TASKS

        d = self.data
        if d is None or d.kind != "qd":
            raise ValueError("only the models of a CycleQD run can be rebuilt and run (a file names them only)")
        if self.selected < 0:
            raise ValueError("click a cell first: its elite answers the prompt")
        unknown = sorted({c for c in prompt if c not in CHARS})
        if not prompt or unknown:
            raise ValueError(f"the zoo's models read the characters {CHARS!r} only" +
                             (f"; the prompt has {''.join(unknown)!r}" if unknown else "; type a prompt"))
        with self._lock:
            lm, tok = self._ready(d, self.selected)
            ids = ([tok.bos_token_id] if tok.bos_token_id is not None else []) + \
                tok(prompt, add_special_tokens=False)["input_ids"]
            steps = max_new_tokens or max(t.max_new_tokens for t in TASKS.values())
            out = greedy(lm, [ids], steps, pad_id=tok.pad_token_id, eos_id=tok.eos_token_id)[0]
            return tok.decode(out, skip_special_tokens=True)

    def warm(self) -> threading.Thread | None:
        """Rebuild the selected elite and load the zoo's model on a background thread, so that the first answer
        finds them ready (the page calls it when a cell is clicked: the first load imports transformers and
        reads the zoo, seconds); None when nothing is selected. A failure is left to the answer, which says why."""
        d, selected = self.data, self.selected
        if d is None or d.kind != "qd" or selected < 0:
            return None

        def prepare() -> None:
            try:
                with self._lock:
                    if self.data is d and self.selected == selected:  # not a cell clicked past meanwhile
                        self._ready(d, selected)
            except Exception:  # noqa: BLE001 - answer() reports it
                logging.getLogger(__name__).debug("warming elite %s failed", selected, exc_info=True)

        thread = threading.Thread(target=prepare, name="warm a CycleQD elite", daemon=True)
        thread.start()
        return thread

    def _ready(self, d: QDData, selected: int):
        """(the zoo's model holding elite `selected`'s weights, its tokenizer); the caller holds self._lock."""
        from workbench.qd.run import QDRunConfig, rebuild_model, run_zoo

        cfg = QDRunConfig.from_dict(d.info["config"])
        folder = run_zoo(RunStore(self.runs_dir).open(d.name))  # not there: why, and the resume that says where
        key = (d.name, selected)
        built = self._built.pop(key, None)
        if built is None:  # the others used last kept, this one rebuilt (the oldest dropped first: at most BUILT_KEPT)
            self._built = dict(list(self._built.items())[max(len(self._built) - BUILT_KEPT + 1, 0):])
            built = rebuild_model(RunStore(self.runs_dir), d.name, selected)
        self._built[key] = built  # the most recently used last: the one on show and the one before stay
        if self._lm is None or self._lm[0] != folder:
            from workbench.lm.zoo import load_zoo

            zoo = load_zoo(folder)
            # a model of our own: the run's shared Context model is not ours to load weights into
            self._lm = (folder, zoo.model(cfg.base, device="cpu"), zoo.tokenizer())
        _, lm, tok = self._lm
        lm.load_state_dict(self._built[key], strict=True)
        return lm, tok

    # --- figures ---

    def figure(self, view: str | None = None, points: int | None = CURVE_POINTS) -> Dimensioned:
        """A view as a HoloViews object at the current generation with the selected model highlighted (the page
        shows it with Bokeh; export writes it), its curves at most `points` rows a line (figures.curve_rows), or
        every row (None: export's paper_figure)."""
        hv = holoviews()
        view = view or self.view
        d = self.data
        if d is None:
            return hv.Div(f"<i>{html.escape(self.message or 'nothing open')}</i>")
        if view not in d.views:
            return hv.Div(f"<i>a {d.kind} source has no {VIEWS.get(view, view).lower()} view</i>")
        if view in ("archives", "sampling"):
            # three across, room between them for each colour bar's label and the next panel's axis label (four
            # across ran them together: "brackets score reverse score")
            return hv.Layout([self.archive_plot(t, view) for t in d.tasks]).cols(3).opts(
                shared_axes=False).opts(sublabel_format="", hspace=1.1, vspace=1.0, backend="matplotlib")
        if view == "curves":
            return curves_plot(self.curves(), self.generation, points).opts(sublabel_format="",
                                                                             backend="matplotlib")
        if view == "lineage":
            return lineage_plot(*self.lineage(), d.tasks, self.selected)
        if view == "children":
            return children_plot(self.children(), d.info.get("all_tasks", d.tasks), self.selected,
                                 {t: d.ranges[t] for t in d.info.get("all_tasks", d.tasks)}).opts(
                sublabel_format="", backend="matplotlib")
        return baselines_plot(self.baselines(), bool(self.compare))

    def archive_plot(self, task: str, view: str = "archives", thumb: int = THUMB) -> Dimensioned:
        """One archive at the current generation: its cells coloured by quality (or by draws), the selected
        model's cell outlined; MAP-Elites: the thumbnails under the cells. The counts written in the cells of the
        sampling view only where a cell is wide enough for them at 7 pt (bins <= LABELLED_BINS: at 15 bins a third
        of a page "8" and "30" printed as "830"); the colour bar reads them otherwise."""
        layers, opts = self.archive_layers(task, view, thumb)
        if self.data.bins > LABELLED_BINS:
            layers = {**layers, "labels": None}
        return cell_plot(layers, opts)

    def archive_layers(self, task: str, view: str = "archives", thumb: int = THUMB) -> tuple[dict, dict]:
        """`cell_layers` of one archive at the current generation (view "archives" or "sampling")."""
        d = self.data
        key = (d.name, task, view, thumb, d.snap(self.generation), self.selected)
        if self._layers[0] == key:  # the page asks once per layer: make them once
            return self._layers[1]
        sampling = view == "sampling"
        cells = self.sampling(task) if sampling else self.cells(task)
        # a MAP-Elites archive shows its elites' pictures, not their novelty (hovered on the page): said so
        title = ("MAP-Elites: elites at their descriptor cells" if d.kind == "map-elites" else f"archive {task}") + \
            (f" · gen {d.snap(self.generation)}" if len(d.generations) > 1 else "")
        if sampling:
            # one scale for every archive and generation, over the values drawn: where archives have more than two
            # axes (K > 3) the draws of the cells sharing a plot position add up (`sampling`)
            drawn = d.cells["draws"] if all(len(a) <= 2 for a in d.axes.values()) else \
                d.cells.groupby(["generation", "task", "x", "y"])["draws"].sum(min_count=1)
            value, clim, cmap = "draws", (0.0, float(max(1.0, drawn.max() if drawn.notna().any() else 1.0))), "Oranges"
            title = f"{task}: times drawn" + (f" · gen {d.snap(self.generation)}" if len(d.generations) > 1 else "")
        else:
            value, clim, cmap = "quality", d.ranges[task], "viridis"
        axes = d.axes[task]
        under = _thumbnails(d, cells, thumb) if d.kind == "map-elites" else None
        # ticks in scores where the bins' ranges are known (a run, a pyribs file), bin indices otherwise
        scored = [d.ranges[a] for a in axes] if d.kind in ("qd", "pyribs") else None
        # the ringed elite's own model and quality (K > 3: not the best of its plot position, whose cell is drawn)
        elite = self._archive_rows(task)
        elite = elite[elite["id"] == self.selected]
        selected = {"model": str(d.models.reindex(elite["id"])["label"].iloc[0]), "id": elite["id"].iloc[0],
                    "quality": float(elite["quality"].iloc[0])} if len(elite) else None
        out = cell_layers(cells, value, clim, cmap, d.bins, axes, title, self.elite_cells().get(task), under,
                          labels=sampling, axis_ranges=scored, size=470 if under is not None else ARCHIVE_FRAME,
                          clabel="times drawn" if sampling else f"{task} score", selected=selected)
        self._layers = (key, out)
        return out

    def paper_figure(self, view: str | None = None) -> tuple[Dimensioned, dict]:
        """A view as export writes it, with the paper style it is written in: (figure, style for
        figures.save). ValueError, with the page's reason, where the source has nothing under that view."""
        from workbench.figures import PAGE_WIDTH, panel_inches

        hv = holoviews()
        view = view or self.view
        fig = self.figure(view, points=None)  # a paper's: every row of its curves
        if isinstance(fig, hv.Div):  # the page's message, without its markup (&#x27; for a quote)
            raise ValueError(f"nothing to export under {VIEWS.get(view, view)!r}: "
                             f"{html.unescape(fig.data.removeprefix('<i>').removesuffix('</i>'))}")
        if self.data.kind == "map-elites" and view == "archives":
            fig = self.archive_plot("novelty", thumb=64)  # sharper thumbnails than the page's
        if view == "lineage":
            return fig, {"fig_inches": (PAGE_WIDTH, 1.2 + 0.6 * len(self.data.tasks))}
        panels = len(fig) if isinstance(fig, hv.Layout) else 1
        cols = min(panels, 3)
        rows = math.ceil(panels / cols)
        return fig, {"fig_inches": panel_inches(cols, rows, (3.0, 2.5))}

    def export(self, view: str | None, out_dir: str | Path, suffix: str = ".png", width: float | None = None,
               font: str | None = None, rename: dict[str, str] | None = None) -> Path:
        """Write a view for a paper (PNG / SVG / PDF via matplotlib, or standalone HTML): NAME-VIEW-genG.SUFFIX,
        or NAME-VIEW.SUFFIX for a source of one archive (a MAP-Elites run, a pyribs file); at figures.save's width
        (inches), font and legend names (rename)."""
        from workbench.figures import export_suffix, save

        view = view or self.view
        suffix = export_suffix(suffix)
        fig, style = self.paper_figure(view)
        name = Path(self.data.name).stem if self.data.kind in ("pyribs", "archive_map") else self.data.name
        # a MAP-Elites run's archive is its last and a pyribs file holds one: no generations to name ("-gen0"
        # called a MAP-Elites run's final archive its first)
        gen = "" if self.data.kind in ("map-elites", "pyribs") else f"-gen{self.data.snap(self.generation)}"
        # the baselines pooled over other seeds' runs: a figure of its own (it was written over the run's own)
        pooled = "" if view != "baselines" or not self.compare else \
            f"-pooled-{ids_digest(self.compare)}"
        out = Path(out_dir) / f"{name}-{view}{pooled}{gen}{suffix}"
        out.parent.mkdir(parents=True, exist_ok=True)
        return save(fig, out, style=style, width=width, font=font, rename=rename)

    def summary(self) -> str:
        """The Markdown line about the source on show: a CycleQD run's tasks, sampling, bins, models, generations and
        status; a MAP-Elites run's substrate, FM, elites and grid; an archive file's kind, tasks and generations
        (without one: the message)."""
        d = self.data
        if d is None:
            return plain(self.message) if self.message else "Nothing open."
        gens = d.generations
        if d.kind == "qd":
            cfg = d.info["config"]
            method = d.info.get("method") or cfg.get("sampling", "?")  # (a hand-edited config may lack it)
            return (f"**{literal(d.name)}** · tasks {literal(', '.join(d.tasks))} · {literal(method)} · "
                    f"{d.bins} bins · {counted(len(d.models), 'model')} evaluated · "
                    f"generations {gens[0]}–{gens[-1]} · {effective_status(d.info)}")
        if d.kind == "map-elites":
            ev = d.info["config"]["eval"]
            return (f"**{literal(d.name)}** · MAP-Elites illumination of {literal(ev['substrate'])} "
                    f"({literal(ev['fm'])}) · "
                    f"{counted(len(d.models), 'elite')} in a {d.bins} × {d.bins} grid · hover a cell for its novelty, "
                    f"click it for its card and a link that plays it in the Lab")
        what = "pyribs archive" if d.kind == "pyribs" else "reference archive map"
        span = f"generations {gens[0]}–{gens[-1]}" if len(gens) > 1 else "one generation"
        return f"**{literal(d.name)}** · {what} · tasks {literal(', '.join(d.info.get('all_tasks', d.tasks)))} · {span}"


def answer_line(model: object, text: str, seconds: float) -> str:
    """The QD page's line for an elite's answer: the model's own characters in a code span (entities showed as
    "&lt;" in one, a backtick ended it), "(nothing)" for none."""
    return f"model {model} answers **{code(text) if text else '(nothing)'}** ({seconds:.1f} s)"


def _parents_text(row: pd.Series) -> str:
    parents = row.get("parents") if "parents" in row.index else None
    if parents is None or (isinstance(parents, float) and math.isnan(parents)):
        return "–"
    if len(parents) == 0:
        seed = row.get("seed_expert")
        return f"seed expert ({seed})" if isinstance(seed, str) else "seed expert"
    return " × ".join(str(int(p)) for p in parents)


def _thumbnails(d: QDData, cells: pd.DataFrame, size: int = THUMB) -> np.ndarray:
    """The thumbnails of the archive's members at their cells (x right, y up), `size` pixels per cell."""
    from PIL import Image

    side = d.bins
    img = np.full((side * size, side * size, 3), 24, np.uint8)
    for x, y, i in zip(cells["x"], cells["y"], cells["id"], strict=True):
        thumb = np.asarray(Image.fromarray(d.thumbs[int(i)]).resize((size, size), Image.BILINEAR))
        r = side - 1 - int(y)
        img[r * size:(r + 1) * size, int(x) * size:(int(x) + 1) * size] = thumb
    return img


# --- plots (HoloViews, both backends: Bokeh on the page, matplotlib for paper figures) --------------------------

def _edge_ticks(bins: int, lo: float, hi: float) -> list[tuple[float, str]]:
    """Ticks on the bins' edges (a few), labelled with the scores there: cells read as score ranges."""
    edges = np.linspace(lo, hi, bins + 1)
    step = max(1, bins // 3)
    marks = sorted({*range(0, bins + 1, step), bins})
    return [(b - 0.5, f"{edges[b]:.2g}") for b in marks]


def count_font_px(size: int, bins: int) -> int:
    """The pixel size of the counts written in an archive's cells on the page: 45 % of a cell (`size` px for `bins`
    cells a side), from 9 px (7 pt, what fits a 13 px cell of 15 bins at 190 px) to 14 px: the counts were 7 pt in
    any cell, small in the 31 px cells of the archive drawn over its thumbnails."""
    return int(min(14, max(9, round(0.45 * size / max(bins, 1)))))


def cell_layers(cells: pd.DataFrame, value: str, clim: tuple[float, float], cmap: str, bins: int, axes: list[str],
                title: str, highlight: tuple[int, ...] | None = None, under: np.ndarray | None = None,
                labels: bool = False, size: int = 190, axis_ranges: list[tuple[float, float]] | None = None,
                clabel: str | None = None, selected: dict | None = None) -> tuple[dict, dict]:
    """An archive's layers and the options of the plot they make: "under" (an RGB image beneath, or None),
    "cells" (coloured squares on the fixed grid, empty cells blank; hover: model, cell, quality, scores, parents),
    "labels" (the values written in the cells, or None) and "ring" (the highlighted cell outlined; its data the
    ringed elite's "model", "id" and "quality", `selected`, else the cell's drawn there, and "selected" True).
    The page animates each layer on its own (a click reaches the server from a plain element, not from an
    overlay)."""
    hv = holoviews()
    one_d = len(axes) == 1
    rect = cells.assign(x0=cells["x"] - 0.5, y0=cells["y"] - 0.5, x1=cells["x"] + 0.5, y1=cells["y"] + 0.5)
    vdims = [value, "model", "id", "scores", "parents", "cell_text"]
    vdims += ["quality"] if value != "quality" else []
    tips = [("model", "@model"), ("cell", "@cell_text"), ("quality", "@quality{0.000}"), ("scores", "@scores"),
            ("parents", "@parents")] + ([("times drawn", "@draws")] if value == "draws" else [])
    boxes = hv.Rectangles(rect[["x0", "y0", "x1", "y1", *vdims]], ["x0", "y0", "x1", "y1"], vdims)
    seen = under is not None  # the thumbnails show through transparent cells
    # the thumbnails at their own pixels in a PDF or SVG (resampled, a 1024 px mosaic was embedded at 525 px)
    layers = {"under": None if under is None else hv.RGB(under, bounds=(-0.5, -0.5, bins - 0.5, bins - 0.5)).opts(
        interpolation="none", backend="matplotlib")}
    layers["cells"] = styled(
        boxes, color=value, cmap=cmap, clim=clim, colorbar=not seen,
        bokeh={"tools": ["hover", "tap"], "hover_tooltips": tips, "line_color": "white", "line_width": 1,
               "colorbar_opts": {"width": 10, "padding": 4}, "clabel": clabel or " ",
               "alpha": 0.0 if seen else 1.0, "hover_alpha": 0.25 if seen else 1.0,
               "nonselection_alpha": 0.0 if seen else 1.0, "selection_alpha": 0.0 if seen else 1.0,
               "hover_line_color": "#f9a825", "hover_line_width": 2},
        mpl={"edgecolor": "white", "linewidth": 0.3, "alpha": 0.0 if seen else 1.0, "clabel": clabel})
    layers["labels"] = None
    if labels:
        text = cells.assign(text=pd.Series([f"{int(v)}" for v in cells[value]], index=cells.index, dtype=object))
        from workbench.figures import text_colours

        # white or black text, whichever reads on its cell (black on dark orange was hard to read)
        span = clim or ((float(cells[value].min()), float(cells[value].max())) if len(cells) else (0.0, 1.0))
        text["ink"] = text_colours(cells[value], cmap, span) if isinstance(cmap, str) and len(cells) else "#000000"
        layers["labels"] = styled(hv.Labels(text[text[value] > 0][["x", "y", "text", "ink"]], ["x", "y"],
                                            ["text", "ink"]),
                                  bokeh={"text_font_size": f"{count_font_px(size, bins)}px",
                                         "text_color": hv.dim("ink")},
                                  mpl={"size": 7, "color": hv.dim("ink")})  # 4 pt in matplotlib's grey-blue before
    hx, hy = (highlight[0], highlight[1] if len(highlight) > 1 else 0) if highlight else (None, None)
    # the ring's row in a CSV says what it rings (it was a Rectangles row of NaN, read as an empty cell): "selected"
    # True, with the elite's model, id and quality (`selected`; else the cell drawn there's), as a reference line
    # is a row that says what it marks; the cells' rows have "selected" NaN
    ring_dims = ["quality", "model", "id", "selected"]
    ring = pd.DataFrame(columns=["x0", "y0", "x1", "y1", *ring_dims])
    if highlight:
        drawn = cells[(cells["x"] == hx) & (cells["y"] == hy)]
        elite = selected or (drawn.iloc[0][ring_dims[:3]].to_dict() if len(drawn) else {})
        ring = pd.DataFrame([{"x0": hx - 0.5, "y0": hy - 0.5, "x1": hx + 0.5, "y1": hy + 0.5,
                              **{d: elite.get(d, np.nan) for d in ring_dims[:3]}, "selected": True}])
    ring = hv.Rectangles(ring, ["x0", "y0", "x1", "y1"], ring_dims)
    layers["ring"] = styled(ring, bokeh={"fill_alpha": 0.0, "line_color": RING, "line_width": 3},
                            mpl={"facecolor": "none", "edgecolor": RING, "linewidth": 1.2})
    unit = "score" if axis_ranges else "bin"
    xlabel = f"{axes[0]} {unit}"
    ylabel = "" if one_d else f"{axes[1]} {unit}"
    if len(axes) > 2:  # the other axes, folded into the plot: said under the title (a y label that long ran into
        title += f"\nbest over {', '.join(axes[2:])}"  # the panels beside it)
    common = {"xlim": (-0.5, bins - 0.5), "ylim": (-0.5, 0.5) if one_d else (-0.5, bins - 0.5), "title": title,
              "xlabel": xlabel, "ylabel": ylabel}
    if axis_ranges:
        common["xticks"] = _edge_ticks(bins, *axis_ranges[0])
        if not one_d:
            common["yticks"] = _edge_ticks(bins, *axis_ranges[1])
    bokeh = {"frame_width": size, "frame_height": 60 if one_d else size, "toolbar": None, "hooks": [sized_by_frame]}
    mpl = {"aspect": "equal" if not one_d else 5}
    if seen:  # descriptors of a MAP-Elites grid (a PCA of embeddings): positions, no scores to tick; named in a
        common.update(xlabel=axes[0], ylabel=axes[1])  # paper figure (it had no axes), bare on the page as before
        bokeh.update(xaxis=None, yaxis=None)
        mpl["hooks"] = [_no_ticks]
    if one_d:  # K = 2: each archive is one row of cells
        common["yaxis"] = None
    return layers, {"common": common, "bokeh": bokeh, "mpl": mpl}


#: a MAP-Elites archive's axes: its descriptor (the figure had none, its dimensions unnamed)
PCA_AXES = ("embedding PC 1", "embedding PC 2")


def _no_ticks(plot, element) -> None:
    """A matplotlib plot's axes without ticks, their labels kept (HoloViews' xticks takes no empty list)."""
    plot.handles["axis"].set_xticks([])
    plot.handles["axis"].set_yticks([])


#: the most bins a side whose cells a figure writes counts in (a third of a page wide, at 7 pt)
LABELLED_BINS = 8


def cell_plot(layers: dict, opts: dict):
    """The layers of `cell_layers` as one plot (the static figure: notebooks, paper figures)."""
    hv = holoviews()
    plot = hv.Overlay([layers[k] for k in ("under", "cells", "labels", "ring") if layers[k] is not None])
    return styled(plot, **opts["common"], bokeh=opts["bokeh"], mpl=opts["mpl"])


#: a Bokeh legend's width beside a plot (a swatch and a task's name), in pixels
LEGEND_ROOM = 110
#: a curve panel's room around its frame (y axis with its ticks and label; title, x axis and its label), in pixels:
#: sized by their frames, panels line up in any layout (sized whole, `.cols(2)` squeezed the frame of the panel
#: above the one with the legend)
CURVE_AXES = (70, 80)


def cell_text(cell) -> str:
    """An archive cell's bin indices as the card says them: "(0, 8)" for K − 1 > 1 axes ("0,8" read as 0.8), the
    bin alone for K = 2 tasks (one axis)."""
    bins = [str(int(b)) for b in cell]
    return f"({', '.join(bins)})" if len(bins) > 1 else "".join(bins)


def card_beside(d) -> bool:
    """Whether the elite card goes beside the views (one archive: MAP-Elites, one pyribs file) rather than below
    them (K archives side by side take the width, and so does a row of three curves: one archive map's)."""
    return len(d.tasks) == 1 and "curves" not in d.views


def curves_plot(curves: pd.DataFrame, generation: int, points: int | None = None):
    """Coverage, QD score and max quality per archive over generations (whole-number generation axis), a
    dashed line at the scrubber's generation; at most `points` rows of each line (a page's: CURVE_POINTS), or
    every row (None)."""
    from workbench.figures import colours_for, dashed, thin_curve, whole_numbers

    hv = holoviews()
    panels = []
    # each task in its own colour on the page as in the paper figure (figures.TASK_COLOURS), and its own dashes
    colours = colours_for(str(t) for t in curves["task"].unique())
    # one legend, beside the last panel: inside each of three it covered a third of the lines' area
    width = (ROW_WIDTH - LEGEND_ROOM) // 3
    columns = (("coverage", "coverage"), ("qd_score", "QD score"), ("max_quality", "max quality"))
    for column, label in columns:
        # at most `points` generations of each line (thin_curve: its steps and each bucket's extremes)
        lines = [dashed(hv.Curve(thin_curve(g, column, limit=points), "generation", (column, label), label=str(t)).opts(
                     color=colours[str(t)]), i) for i, (t, g) in enumerate(curves.groupby("task", sort=False))]
        now = hv.VLine(generation).opts(color="#888888", line_dash="dashed", backend="bokeh").opts(
            color="#888888", linestyle="--", linewidth=0.8, backend="matplotlib")
        # from 0 (a flat line, e.g. the seed experts' max quality, would otherwise float in a made-up range)
        top = float(np.nanmax(curves[column])) if curves[column].notna().any() else 1.0
        low = min(0.0, float(np.nanmin(curves[column]))) if curves[column].notna().any() else 0.0
        high = (top if top > 0 else 1.0) * 1.08
        # the scrubber's line where it is not the run's end (a paper figure's dashed line at its edge said nothing)
        last = generation >= curves["generation"].max()
        key = column == columns[-1][0]
        panel = styled(hv.Overlay([*lines, *([] if last else [now])]), title=label, show_legend=key,
                       legend_position="right", ylim=(low - 0.03 * (high - low), high),  # a line at 0 above the axis
                       bokeh={"frame_width": width - CURVE_AXES[0], "frame_height": 260 - CURVE_AXES[1],
                              "tools": ["hover"], "hooks": [sized_by_frame]})
        panels.append(whole_numbers(panel))
    return styled(hv.Layout(panels).cols(3), shared_axes=False, mpl={"sublabel_format": "", "hspace": 0.5})


def lineage_plot(nodes: pd.DataFrame, edges: pd.DataFrame, tasks: list[str], selected: int = -1):
    """Parent -> child edges among the elites and their ancestors: x = generation, a lane per quality task;
    colour = seed expert / elite now / ancestor; the selected model's ancestry ringed in red."""
    from workbench.figures import whole_numbers

    hv = holoviews()
    if nodes.empty:
        return hv.Div("<i>no models yet</i>")
    colours = {"seed expert": SEED, "elite": ACCENT, "ancestor": "#b0b7c3"}
    node_el = hv.Nodes(nodes, ["x", "y", "index"], ["model", "role", "scores", "parents", "on_path"])
    graph = hv.Graph((edges, node_el), ["source", "target"])
    tips = [("model", "@model"), ("role", "@role"), ("scores", "@scores"), ("parents", "@parents")]
    graph = styled(graph, node_color="role", cmap=colours, edge_color="#9aa3b2",
                   bokeh={"node_size": 9, "edge_line_width": 0.8, "edge_alpha": 0.5, "tools": ["hover", "tap"],
                          "hover_tooltips": tips, "inspection_policy": "nodes", "selection_policy": "nodes",
                          "node_line_color": "white"},
                   mpl={"node_size": 4, "edge_linewidth": 0.4, "edge_alpha": 0.5})
    path = nodes[nodes["on_path"]]
    at = nodes.set_index("index")
    chain = edges[edges["source"].isin(path["index"]) & edges["target"].isin(path["index"])]
    src, dst = at.loc[chain["source"]], at.loc[chain["target"]]
    segments = pd.DataFrame({"x0": src["x"].to_numpy(), "y0": src["y"].to_numpy(), "x1": dst["x"].to_numpy(),
                             "y1": dst["y"].to_numpy()})
    layers = [graph, styled(hv.Segments(segments, ["x0", "y0", "x1", "y1"]), color=HIGHLIGHT,
                            bokeh={"line_width": 2, "alpha": 0.8}, mpl={"linewidth": 0.8})]
    layers.append(styled(hv.Points(path, ["x", "y"]), bokeh={"size": 15, "fill_alpha": 0.0, "line_color": HIGHLIGHT,
                                                             "line_width": 2},
                         mpl={"s": 14, "facecolors": "none", "edgecolors": HIGHLIGHT, "linewidth": 0.8}))
    drawn = set(nodes["role"])
    for role, colour in colours.items():  # the legend (the graph's own nodes have none): a point off the axes
        if role not in drawn:  # a key for the roles drawn ("ancestor" listed where no model was one)
            continue
        layers.append(styled(hv.Points(pd.DataFrame({"x": [-1e9], "y": [-1e9]}), ["x", "y"], group="Key", label=role),
                             color=colour, bokeh={"size": 9}, mpl={"s": 20}))  # a key readable at 7 pt
    span = max(nodes["x"].max() - nodes["x"].min(), 1)
    ancestry = f"; red: model {selected}'s ancestry" if selected >= 0 else ""
    title = f"lineage of the elites ({counted(len(nodes), 'model')}{ancestry})"
    plot = styled(hv.Overlay(layers), title=title, xlabel="generation", ylabel="quality task",
                  yticks=list(enumerate(tasks)),
                  xlim=(nodes["x"].min() - 0.05 * span - 0.5, nodes["x"].max() + 0.05 * span + 0.5),
                  ylim=(-0.6, len(tasks) - 0.4),
                  # a row, its legend beside it included (860 and 1000 ran past a notebook's cell, a laptop's page)
                  bokeh={"width": ROW_WIDTH, "height": 140 + 90 * len(tasks), "legend_position": "right"},
                  mpl={"aspect": 3, "legend_position": "right"})
    return whole_numbers(plot)


def children_plot(children: pd.DataFrame, tasks: list[str], selected: int = -1,
                  ranges: dict[str, tuple[float, float]] | None = None):
    """Every evaluated child's scores, one panel per pair of tasks; colour: entered an archive or not;
    seed experts as diamonds, the selected model ringed."""
    hv = holoviews()
    if children.empty:
        return hv.Div("<i>no children yet</i>")
    panels = []
    colours = {"entered an archive": ACCENT, "entered none": "#8a94a3"}  # a grey seen on white (#c3c9d2 was not)
    for a, b in itertools.combinations(tasks, 2):  # every pair: five tasks make ten panels
        xa, yb = f"score_{a}", f"score_{b}"
        vd = [yb, "model", "parents_text", "status"]
        layers = []
        for status, colour in colours.items():
            part = children[(children["status"] == status) & ~children["seed"].astype(bool)]
            if part.empty:  # no key without points (a legend entry with no swatch)
                continue
            layers.append(styled(hv.Scatter(part[[xa, *vd]], xa, vd, label=status), color=colour,
                                 bokeh={"size": 7, "alpha": 0.7, "tools": ["hover"]}, mpl={"s": 8, "alpha": 0.7}))
        seeds = children[children["seed"].astype(bool)]
        layers.append(styled(hv.Scatter(seeds[[xa, *vd]], xa, vd, label="seed experts"), color=SEED,
                             bokeh={"size": 11, "marker": "diamond", "tools": ["hover"]}, mpl={"s": 18, "marker": "D"}))
        sel = children[children["id"] == selected] if "id" in children else children.iloc[:0]
        layers.append(styled(hv.Scatter(sel[[xa, yb]], xa, yb), bokeh={"size": 16, "fill_alpha": 0.0,
                                                                       "line_color": HIGHLIGHT, "line_width": 2},
                             mpl={"s": 40, "facecolors": "none", "edgecolors": HIGHLIGHT}))
        lim = {}
        if ranges:  # the archive's range, widened to scores outside it (they fill the end bins): none drawn off axes
            lim = {"xlim": _padded(ranges[a], children[xa]), "ylim": _padded(ranges[b], children[yb])}
        first = not panels  # one legend for all panels, and one count: the same children in each
        panels.append(styled(hv.Overlay(layers), xlabel=f"{a} score", ylabel=f"{b} score", **lim,
                             title=f"{a} vs {b}" + (f" (n = {len(children)})" if first else ""), show_legend=first,
                             bokeh={"width": ROW_WIDTH // 3, "height": 320, "legend_position": "top_right"},
                             mpl={"legend_position": "best"}))
    # rows apart: a panel's title sat on the x label of the one above it (five tasks draw four rows)
    return styled(hv.Layout(panels).cols(3), shared_axes=False,
                  mpl={"sublabel_format": "", "hspace": 0.5, "vspace": 0.6})


def _padded(bounds: tuple[float, float], scores: pd.Series) -> tuple[float, float]:
    """An axis over a task's archive range and every score (3 % margins)."""
    finite = scores[np.isfinite(scores)]
    lo = min(bounds[0], float(finite.min())) if len(finite) else bounds[0]
    hi = max(bounds[1], float(finite.max())) if len(finite) else bounds[1]
    pad = 0.03 * (hi - lo)
    return lo - pad, hi + pad


class _bar_colours:  # noqa: N801 - a matplotlib hook; a class so that HoloViews can compare it
    """Colours the bars one by one (matplotlib's Bars take one colour per plot; Bokeh's follow `color`)."""

    def __init__(self, colours: tuple[str, ...]):
        self.colours = colours

    def __call__(self, plot, element) -> None:
        from matplotlib.patches import Rectangle

        bars = [p for p in plot.handles["axis"].patches if isinstance(p, Rectangle)]
        for bar, colour in zip(bars, self.colours, strict=False):
            bar.set_facecolor(colour)

    def __eq__(self, other) -> bool:
        return isinstance(other, _bar_colours) and other.colours == self.colours

    def __hash__(self) -> int:
        return hash(("bar-colours", self.colours))


def baselines_plot(table: pd.DataFrame, spread: bool):
    """Test accuracy per task: CycleQD's best model and one-model pick, the seed expert, the base and the
    baselines; with several runs the bars are means and the whiskers ± one standard deviation over seeds."""
    hv = holoviews()
    if table.empty:
        return hv.Div("<i>no test scores (the run has not finished)</i>")
    panels = []
    palette = {name: (ACCENT if name.startswith("CycleQD") else "#9aa3b2") for name in table["name"]}
    for task, part in table.groupby("task", sort=False):
        colours = tuple(palette[n] for n in part["name"])
        bars = styled(hv.Bars(part, "name", ["mean", "std", "n"]),
                      bokeh={"tools": ["hover"], "xrotation": 35, "color": hv.dim("name").categorize(palette)},
                      mpl={"xrotation": 40})
        from workbench.figures import BarValues

        values = BarValues(tuple(part["name"]), tuple(float(v) for v in part["mean"]),
                           tuple(float(v) for v in part["std"]))
        layers = [bars.opts(hooks=[values], backend="bokeh").opts(hooks=[_bar_colours(colours), values],
                                                                  backend="matplotlib")]
        if spread:
            layers.append(styled(hv.ErrorBars(part, "name", ["mean", "std"]), bokeh={"line_width": 1.5},
                                 mpl={"linewidth": 0.8}))
        n = int(part["n"].max())
        panels.append(styled(hv.Overlay(layers), title=f"{task}" + (f" (mean ± std, {n} seeds)" if n > 1 else ""),
                             ylabel="test accuracy", xlabel="", ylim=(0, 1.12),
                             bokeh={"width": ROW_WIDTH // 3, "height": 330}, mpl={"aspect": 1.5}))  # room for labels
    return styled(hv.Layout(panels).cols(3), shared_axes=False, mpl={"sublabel_format": "", "hspace": 0.3})


# --- the page --------------------------------------------------------------------------------------------------

CARD_CSS = """
:host { width: 100%; }
.elite { font-size: 13px; color: #1d2330; }
.elite h3 { margin: 0 0 .3em 0; font-size: 16px; color: #2f5d8a; }
.elite .sub { color: #5b6472; margin-bottom: .5em; }
.elite table { border-collapse: collapse; margin: .3em 0 .6em 0; width: 100%; }
.elite td, .elite th { padding: 2px 6px; border-bottom: 1px solid #e6eaef; text-align: left; }
.elite th { color: #5b6472; font-weight: 600; }
.elite .bar { display: inline-block; height: 8px; background: #2f5d8a; border-radius: 2px; vertical-align: middle; }
.elite ol { margin: .2em 0; padding-left: 1.3em; max-height: 220px; overflow-y: auto; }
.elite li { margin: 1px 0; }
.elite .seed { color: #c05500; font-weight: 600; }
.elite a.play { display: inline-block; background: #2f5d8a; color: #fff; padding: 5px 12px; border-radius: 4px;
                text-decoration: none; margin-top: .4em; }
.elite img { width: 100%; image-rendering: pixelated; border-radius: 4px; }
.empty { color: #5b6472; font-size: 14px; }
.elite .warn { color: #8a5a00; background: #fff4d6; padding: 3px 6px; border-radius: 3px; margin-bottom: .5em; }
"""


def card_html(model: QDModel) -> str:
    """The elite card as HTML (pure: a function of the model's state)."""
    c = model.card()
    if c is None:
        if model.data is not None and model.data.kind == "map-elites":
            return ('<div class="empty">Click a cell: its member\'s thumbnail, novelty and a link that plays it in the '
                    "Lab.</div>")
        return ('<div class="empty">Click a cell of an archive: its elite\'s scores, lineage, ancestry and draws '
                "show here, and it is ringed in every view.</div>")
    e = html.escape
    parts = [f'<div class="elite"><h3>{e(str(c["label"]))}</h3>']
    if c["kind"] == "qd":
        how = ("a seed expert" if not c["parents"] else
               f"child of {' × '.join(str(p) for p in c['parents'])} (ω {', '.join(f'{w:.3f}' for w in c['omegas'])}), "
               f"{e(c['mutation'])} mutation {c['mutation_scale']:g}, parents from {e(c['pool'])}")
        parts.append(f'<div class="sub">born in generation {c["born"]} (quality task {e(c["task"])}) · {how}</div>')
        if c["born"] > c["generation"]:  # picked from the final models while the scrubber stands earlier
            parts.append(f'<div class="warn">not born yet at generation {c["generation"]}, the one shown: move the '
                         f'generation to {c["born"]} or later to find it in the archives</div>')
    if c["scores"]:
        rows = "".join(f"<tr><td>{e(t)}</td><td>{v:.3f}</td><td><span class='bar' style='width:{max(v, 0) * 90:.0f}px'>"
                       f"</span></td><td>{e(c['elite_of'].get(t, '–'))}</td></tr>" for t, v in c["scores"].items())
        kind = "novelty" if c["kind"] == "map-elites" else "validation score"
        parts.append(f"<table><tr><th>task</th><th>{kind}</th><th></th><th>cell now</th></tr>{rows}</table>")
    if "draws" in c:
        total = sum(c["draws"].values())
        per = ", ".join(f"{e(t)} {n}" for t, n in c["draws"].items())
        pooled = c.get("draws_all", 0)
        also = f"; {pooled} more from all archives, where one held fewer than two elites" if pooled else ""
        parts.append(f"<div>drawn as a parent from an archive <b>{total}</b> time{'s' if total != 1 else ''} up to "
                     f"generation {c['generation']} ({per}{also})</div>")
    if c.get("ancestry"):
        items = []
        for a in c["ancestry"][:40]:
            if a["parents"]:
                items.append(f"<li>gen {a['generation']}: model {a['id']} ← {' × '.join(map(str, a['parents']))}</li>")
            else:
                items.append(f"<li class='seed'>gen 0: {e(str(a['label']))} (model {a['id']})</li>")
        more = len(c["ancestry"]) - 40
        n = len(c["ancestry"])
        tail = f"<li>… {more} more</li>" if more > 0 else ""
        parts.append(f"<div style='margin-top:.5em'><b>Ancestry</b> back to the seed experts ({n} model"
                     f"{'s' if n != 1 else ''})</div><ol>{''.join(items)}{tail}</ol>")
    if c.get("path"):
        parts.append(f"<div>model_path <code>{e(c['path'])}</code></div>")
    if c.get("lab"):
        import base64
        import io

        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(model.data.thumbs[c["id"]]).save(buf, format="PNG")
        uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        parts.append(f"<img src='{uri}' alt='member {c['id']}'><div>|θ| {c['theta_norm']:.3f}</div>"
                     f"<a class='play' href='{e(c['lab'])}'>▶ play member {c['id']} in the Lab</a>")
    return "".join(parts) + "</div>"


def views_panel(model: QDModel, streams: list | None = None) -> pn.Tabs:
    """One tab per view of the source on show; the archive plots follow the scrubber and the selection in place
    (DynamicMaps: the Player animates them without new plots), a click on an archive cell selects its elite.
    `streams` collects the model's parameter streams (and the followers of the views drawn as a whole), for the page
    to stop them when another source replaces these views (else the old plots would keep redrawing, for a source
    that is gone, and stay in memory as long as the tab: the model's watchers hold them)."""
    hv = holoviews()
    d = model.data
    tabs = []
    streams = [] if streams is None else streams

    def follow(fn):
        stream = hv.streams.Params(model, ["generation", "selected", "compare"])
        streams.append(stream)
        return hv.DynamicMap(lambda generation, selected, compare: fn(), streams=[stream])

    for view in d.views:
        if view in ("archives", "sampling"):
            plots = []
            for task in d.tasks:
                layers, opts = model.archive_layers(task, view)
                part = {name: follow(lambda t=task, v=view, n=name: model.archive_layers(t, v)[0][n])
                        for name in ("cells", "labels", "ring") if layers[name] is not None}
                tap = hv.streams.Tap(source=part["cells"])
                tap.add_subscriber(lambda x, y, t=task: x is not None and model.click(t, x, y))
                plot = functools.reduce(operator.mul, [*([layers["under"]] if layers["under"] is not None else []),
                                                       *part.values()])
                # the titles name the archive only: the sidebar says which generation is on show
                plot = styled(plot, **{**opts["common"], "title": opts["common"]["title"].split(" · gen")[0]},
                              bokeh=opts["bokeh"])
                plots.append(pn.pane.HoloViews(plot, backend="bokeh", linked_axes=False, margin=(0, 4)))
            body = pn.FlexBox(*plots, sizing_mode="stretch_width")
        elif view == "lineage":
            body = pn.pane.HoloViews(follow(lambda: model.figure("lineage")), backend="bokeh")
        else:  # a layout of several plots: redrawn as a whole, and not at all once another source replaced it
            def draw(_redraw, v=view, revision=model.revision):
                if model.revision != revision:
                    return None
                return pn.pane.HoloViews(model.figure(v), backend="bokeh", linked_axes=False)

            # bound to the model through a follower the page stops, as the archives' streams (shell.Follower)
            follower = Follower(model, ["generation", "selected", "compare"])
            streams.append(follower)
            body = pn.panel(pn.bind(draw, follower.param.changed), lazy=True)
        tabs.append((VIEWS[view], scrolls(body, sizing_mode="stretch_width")))
    out = pn.Tabs(*tabs, dynamic=True, sizing_mode="stretch_width", stylesheets=[WRAPPED_TABS])
    out.active = d.views.index(model.view) if model.view in d.views else 0

    def on_tab(event):
        model.view = d.views[event.new]

    out.param.watch(on_tab, "active")
    return out


def qd_page(runs_dir: str = "runs", standalone: bool = False) -> pn.template.FastListTemplate:
    """The /qd page over the store `runs_dir`: CycleQD and MAP-Elites archives by generation, the elites, seeds
    pooled, export. standalone: a page of its own, without the links to the others."""
    from workbench.dashboards.shell import (
        address,
        export_controls,
        off_loop,
        placeholder,
        query_value,
        run_asked,
        section,
        served_location,
        shell,
        show_passed_over,
    )

    holoviews()
    args = (pn.state.session_args or {}) if pn.state.curdoc else {}
    wanted_run = run_asked(args, runs_dir) or ""
    wanted_file = query_value(args, "file") or ""
    model = QDModel(runs_dir=runs_dir, autoload=False)
    alert = pn.pane.Alert("", alert_type="danger", visible=False, sizing_mode="stretch_width", margin=(0, 10))
    header = pn.pane.Markdown("", sizing_mode="stretch_width", margin=(0, 10))
    # the views, then (or beside them) the elite card; it and the boxes below take no more than a narrow window (Panel
    # gives them the prompt box's and the card's fixed widths as their least)
    main = pn.Column(sizing_mode="stretch_width", stylesheets=[FITS_WHEN_NARROW])
    card = pn.pane.HTML("", stylesheets=[CARD_CSS], sizing_mode="stretch_width", name="elite-card")
    prompt = pn.widgets.TextInput(label="Prompt", placeholder="", sizing_mode="stretch_width")
    run_button = pn.widgets.Button(label="run the elite", color="primary", sizing_mode="stretch_width")
    answer = live(pn.pane.Markdown("", sizing_mode="stretch_width", name="elite-answer"))
    prompt_box = pn.Column(pn.pane.Markdown("**Run the elite on a prompt** (rebuilt from its lineage, greedy "
                                            "decoding)", margin=(0, 5)), prompt, run_button, answer, width=380,
                           stylesheets=[FITS_WHEN_NARROW])
    box = {"border": "1px solid #dde3ea", "border-radius": "8px", "background": "#fff", "padding": "8px 12px"}
    side = pn.Column(subheading("Elite", margin=(0, 5)), card, width=360, styles=box, margin=(10, 10),
                     stylesheets=[FITS_WHEN_NARROW])
    below = pn.Row(pn.Column(subheading("Elite", margin=(0, 5)), sizing_mode="stretch_width"),
                   sizing_mode="stretch_width", styles=box, margin=(10, 10),
                   stylesheets=[WRAPS_WHEN_NARROW, FITS_WHEN_NARROW])

    # --- sidebar
    runs = pn.widgets.Select(label="Run (qd or MAP-Elites)", options=list(model.param.run_id.objects),
                             value=model.run_id, sizing_mode="stretch_width")
    path = pn.widgets.TextInput(label="…or a file or folder", placeholder="pyribs .parquet / archive map .json",
                                value=model.path, sizing_mode="stretch_width")
    open_path = pn.widgets.Button(label="open", sizing_mode="stretch_width")
    refresh = pn.widgets.Button(label="refresh (new runs, new generations)", sizing_mode="stretch_width")
    player = pn.widgets.Player(label="generation", start=0, end=1, value=0, interval=600, loop_policy="once",
                               show_loop_controls=False, sizing_mode="stretch_width", scale_buttons=0.8,
                               visible_buttons=["first", "previous", "pause", "play", "next", "last"])
    gen_text = pn.pane.Markdown("", margin=(0, 10))
    gen_box = [section("Generation"), player, gen_text]  # hidden for a source with one snapshot
    highlight = pn.widgets.Select(label="Highlight a model", options={}, sizing_mode="stretch_width")
    compare = TextMultiChoice(label="Pool seeds (same config)", options=[], placeholder="seeds to pool",
                              sizing_mode="stretch_width", **UNTRAPPED)
    fmt, size, export, status, download = export_controls(lambda suffix, **printed: model.export(
        model.view, (Path(runs_dir) / model.run_id / "figures") if model.run_id else Path(runs_dir) / "figures",
        suffix, **printed))

    syncing = [False]  # widgets set from the model are not the user choosing
    streams: list = []  # the parameter streams of the views on show

    def show_message(*_):
        show_passed_over(alert, model, first=model.message)  # why a run asked for cannot be shown comes first

    def run_menu() -> None:
        """The Run menu names the run on show, or says none is (a file, nothing yet, a ?run= refused): it showed
        the first run, which was not open, and picking it changed nothing."""
        ids = [i for i in model.param.run_id.objects if i]  # (the parameter's objects hold None: no run)
        syncing[0] = True
        try:
            if model.data is not None and model.run_id in ids:
                runs.param.update(options=ids, value=model.run_id)
            else:
                runs.param.update(options={"(none open)": "", **{i: i for i in ids}}, value="")
        finally:
            syncing[0] = False

    def build(*_):
        """After a load: the views, the scrubber's range, the sidebar's choices (on the event loop)."""
        show_message()
        header.object = as_text(model.summary()) if model.data is not None else ""  # the alert says why, once
        run_menu()
        d = model.data
        if d is None:
            note = ("Pick a run or open a file (sidebar)." if model.param.run_id.objects else
                    f"No qd run or MAP-Elites illumination in {runs_dir} yet: `workbench qd cycle --zoo … --runs "
                    f"{runs_dir}` makes one; or open a pyribs archive or an archive map (sidebar).")
            main[:] = [placeholder(note, 700, 200)]
            for item in (*gen_box, highlight, compare):  # nothing to scrub, highlight or pool (they stayed, blank)
                item.visible = False
            return
        highlight.visible = True
        syncing[0] = True
        try:
            gens = d.generations
            player.param.update(start=gens[0], end=max(gens[-1], gens[0] + 1), value=model.generation,
                                disabled=len(gens) < 2)
            path.value = model.path
            best = {}
            if d.kind == "qd" and d.scores:
                best = {f"best on {t} (test)": int(v["id"]) for t, v in d.scores["cycleqd"].items()}
            # the last generation's elites (every evaluated model would make a list of thousands)
            elites = sorted(d.cells[d.cells["generation"] == gens[-1]]["id"].unique())
            highlight.options = {"none": -1, **best, **{str(d.models.at[i, "label"]): int(i) for i in elites}}
            highlight.value = -1
            # options whose values repeat (a best-on-task entry is an elite listed too) go to the browser as labels,
            # unique ones as (value, label) pairs: the value, unchanged at -1, was left in the other form and the
            # menu showed blank after a qd run and a MAP-Elites run in turn
            highlight.param.trigger("value")
            compare.options = list(model.param.compare.objects)
            compare.value = []
            compare.visible = d.kind == "qd"
            prompt_box.visible = d.kind == "qd"
            prompt.placeholder = f"e.g. {model.prompt_example()}" if d.kind == "qd" else ""
        finally:
            syncing[0] = False
        for stream in streams:  # the views of the previous source stop following the model
            stream.unwatch()
        streams.clear()
        views = views_panel(model, streams)
        if card_beside(d):
            side[:] = [subheading("Elite", margin=(0, 5)), card]
            main[:] = [pn.Row(views, side, sizing_mode="stretch_width",
                              stylesheets=[WRAPS_WHEN_NARROW, FITS_WHEN_NARROW])]
        else:  # K archives side by side take the width: the card and the prompt box below them
            below[:] = [pn.Column(subheading("Elite", margin=(0, 5)), card, sizing_mode="stretch_width"),
                        prompt_box]
            main[:] = [views, below]
        for item in gen_box:
            item.visible = len(d.generations) > 1
        on_generation()
        on_selected()

    def on_generation(*_):
        d = model.data
        if d is None:
            return
        gens = d.generations
        shown = d.snap(model.generation)
        gen_text.object = (f"generation **{shown}** of {gens[0]}–{gens[-1]}" if len(gens) > 1
                           else "one snapshot (no generations to scrub)")
        if player.value != model.generation:
            syncing[0] = True
            player.value = model.generation
            syncing[0] = False
        card.object = card_html(model)

    def on_selected(*_):
        card.object = card_html(model)
        answer.object = ""
        model.warm()  # the elite and the zoo's model load while the prompt is typed
        if model.selected in (highlight.options or {}).values() and highlight.value != model.selected:
            syncing[0] = True
            highlight.value = model.selected
            syncing[0] = False

    async def load(what: dict) -> None:
        try:
            data = await off_loop(read_source, runs_dir, what.get("run"), what.get("path"),
                                  busy=[main, runs, open_path])
        except ValueError as exc:
            model.message = str(exc)
            if model.data is None:
                build()  # "loading…" gives way to the message and what to do
            else:
                run_menu()  # the menu names the source still on show, not the run refused
            show_message()
            return
        model.show(data)
        status.object = ""  # the last source's export (and its download) is not this one's
        # the address follows the source on show: a reload or a bookmark comes back to it
        address(served_location(), run=model.run_id if "run" in what else None,
                file=what.get("path") if "path" in what else None)

    model.param.watch(build, "revision")
    model.param.watch(on_generation, "generation")
    model.param.watch(on_selected, "selected")

    async def on_run(event):
        # an async watcher runs after `syncing` is reset: the run on show is not a new choice
        if event.new and (model.data is None or model.data.name != event.new):
            await load({"run": event.new})

    async def on_open(event):
        await load({"path": path.value})

    async def on_refresh(event):
        # the source on show read again (a running run has new generations), else the newest run, if one came
        newest = await off_loop(model.refresh_runs, busy=[refresh])
        what = model.source() or ({"run": newest[-1]} if newest else None)
        if what:
            await load(what)
        else:
            show_message()  # the runs passed over as the store now holds them

    def on_player(event):
        if not syncing[0] and model.data is not None:
            model.generation = int(event.new)

    def on_highlight(event):
        if not syncing[0] and event.new is not None:
            model.select(int(event.new))

    def on_compare(event):
        if not syncing[0]:
            model.compare = list(event.new)

    async def on_run_elite(event):
        import time

        start = time.perf_counter()
        try:
            text = await off_loop(model.answer, prompt.value, busy=[prompt_box])
            answer.object = answer_line(model.selected, text, time.perf_counter() - start)
        except ValueError as exc:
            answer.object = f"**cannot run it:** {plain(str(exc))}"
        except Exception as exc:
            answer.object = f"**running it failed:** {plain(failed(exc))}"
            raise

    runs.param.watch(on_run, "value")
    open_path.on_click(on_open)
    refresh.on_click(on_refresh)
    player.param.watch(on_player, "value")
    highlight.param.watch(on_highlight, "value")
    compare.param.watch(on_compare, "value")
    run_button.on_click(on_run_elite)
    what = pn.bind(lambda v, _: f"Export writes the tab on show: **{VIEWS[v]}**" + (
        " at the scrubber's generation." if model.data is not None and len(model.data.generations) > 1 else "."),
        model.param.view, model.param.revision)  # a MAP-Elites archive has no scrubber

    run_menu()
    first = ({"run": wanted_run} if wanted_run else {"path": wanted_file} if wanted_file else
             {"run": model.param.run_id.objects[-1]} if model.param.run_id.objects else None)
    if first is not None:  # read off the event loop once the page is up (a long run's tables take a moment)
        async def first_load():
            await load(first)

        main[:] = [placeholder("loading…", 700, 200)]
        pn.state.onload(first_load)
    else:
        build()
    sidebar = [section("Source"), runs, path, open_path, refresh, *gen_box, section("Highlight"), highlight, compare,
               section("Export for a paper"), pn.pane.Markdown(what, margin=(0, 10)), fmt, size, export, status,
               download]
    return shell("qd", [alert, header, main], sidebar, standalone=standalone)


if __name__.startswith("bokeh"):
    pn.extension(inline=True, notifications=True)  # Notyf: shell.connection_notice
    qd_page(sys.argv[1] if len(sys.argv) > 1 else "runs", standalone=True).servable()  # titled by the shell
