"""Runs: the run store as a gallery (a thumbnail, status and best score per run, opened in the page that fits
its kind), as a sortable table, and runs compared: their best-so-far curves (runs that differ only by seed drawn
as one setting's mean with a band over its seeds: their range, ± 1 sd or a 95% CI) and the settings that differ
(workbench.compare).

`RunsModel` holds the folder, the filters and the selection; `panel serve dashboards/runs.py --args RUNS_DIR`
or `workbench serve --runs RUNS_DIR` shows it.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import panel as pn
import param
from bokeh.models.widgets.tables import NumberFormatter

from workbench.compare import BANDS, METRIC_WORDS, Comparison, compare_runs, value_text, what_text
from workbench.dashboards.shell import (
    OPENERS,
    PAGES,
    TextMultiChoice,
    as_text,
    cannot_write,
    code,
    counted,
    ids_digest,
    live,
    open_links,
    plain,
    store_missing,
)
from workbench.runs import MAX_NOTE, RunError, RunStore, steps_done

#: the Runs table's columns: what a run is and its best first (at a laptop's 1366 px the best came after done and unit,
#: off to the right; the id stays at the left when the table scrolls), then how far it went, the note, the time
#: created. "done" counts what a run's users count (a CycleQD run's generations, the others' iterations), "unit"
#: says which (in the data; the page's table hides it and says so on the done header: DONE_TOOLTIP)
COLUMNS = ["id", "kind", "what", "status", "metric", "best", "done", "unit", "note", "created"]
#: px: the widths of the Runs table's wrapped columns, all ten in the 969 px a 1366 px window's main area has, and
#: through the note in a 1280 px window's 883 (at their own widths they were 1,545 px with every kind of run: a
#: merge's what 437, the id 240, "validation accuracy ↑" 139, the unit 82, the time 139; the columns after "best"
#: were off to the right). The id wrapped at its hyphens: "20261206-181940-" above "illumination-" above
#: "particle_lenia-s3" (on one line it took 304 px); it copies whole, as one word. The time created: its date above
#: its time
NOTE_WIDTH = 140
ID_WIDTH = 140
WHAT_WIDTH = 150
METRIC_WIDTH = 90
CREATED_WIDTH = 95
#: the done header's tooltip: what its numbers count (the hidden unit column's word for each run)
DONE_TOOLTIP = "iterations done; a CycleQD (qd) run's generations"
HIGHER = ("higher", "max", "maximize")  # values of a catalog row's `better` meaning higher is better
THUMB = 224  # thumbnail side in pixels
MAX_COMPARED = 8  # runs compared at once (a legend and a settings table stay readable)
FOLLOW_MS = 5000  # how often the page reads the catalog again while a run runs
NOTHING_TICKED = "tick the runs to remove first (in the Table, or pick them to compare)"


def _folders(runs_dir: str) -> frozenset[str]:
    """The names of the run store's folders (a cheap look for runs started or removed since)."""
    try:
        return frozenset(e.name for e in os.scandir(runs_dir) if e.is_dir())
    except OSError:
        return frozenset()


class RunsModel(param.Parameterized):
    """The Runs page's state: the store's catalog filtered (kind, status, text), the runs ticked and compared,
    notes and removals; refresh() reads the catalog again, follow() while a run of it runs."""

    runs_dir = param.String(default="runs", doc="the run store")
    kind = param.Selector(default="all", objects=["all"], doc="show runs of this kind")
    status = param.Selector(default="all", objects=["all"], doc="show runs with this status")
    query = param.String(default="", doc="text the run's id, what it is (the table's 'what': substrate, FM, "
                                         "method, models, tasks …) or its note contain")
    selected = param.List(default=[], doc=f"ids of the runs to compare (at most {MAX_COMPARED})")
    ticked = param.List(default=[], doc=f"ids of the runs ticked in the table, in the order ticked: removal takes "
                                        f"every one, the comparison the last {MAX_COMPARED}")
    limit = param.Integer(default=60, bounds=(1, None), doc="cards shown at most (newest first)")
    band = param.Selector(default="range", objects=list(BANDS),
                          doc="the band around a setting's mean over seeds (workbench.compare.BANDS): range, sd, ci95")

    def __init__(self, **params: Any):
        super().__init__(**params)
        self._rows: list[dict] = []
        self._ticking = False  # tick() sets the comparison from the ticks, not the other way round
        self.ticked = [*self.ticked, *(r for r in self.selected if r not in self.ticked)]  # runs given compared
        self.param.watch(self._follow_compared, "selected")
        self.refresh()

    def tick(self, ids: list[str]) -> None:
        """The table's ticks (any number), in the order ticked (a tick adds its run after those ticked before);
        compared: the last MAX_COMPARED of them. A ninth tick unticked the first, and a removal took eight
        runs at most."""
        kept = [r for r in self.ticked if r in ids]
        ticked = kept + [r for r in ids if r not in kept]
        self._ticking = True
        try:
            self.param.update(ticked=ticked, selected=ticked[-MAX_COMPARED:])
        finally:
            self._ticking = False

    def _follow_compared(self, event) -> None:
        """A run taken into the comparison (toggle, the compare menu) is ticked too; one taken out, unticked."""
        if self._ticking:
            return
        dropped = set(event.old) - set(event.new)
        ticked = [r for r in self.ticked if r not in dropped]
        self.ticked = ticked + [r for r in event.new if r not in ticked]

    def refresh(self) -> list[dict]:
        """Re-read the catalog (new runs, a running one's progress) and the filter choices."""
        store = RunStore(self.runs_dir)
        self._folders = _folders(self.runs_dir)
        self._rows = store.list()
        # what the catalog left out, for the page to say (the CLI's runs list warns of each)
        self.unreadable = list(store.unreadable_runs)
        self.unreadable_why = dict(store.unreadable_why)  # each one's reason and fix, for the page to say
        self.without_metrics = [Path(p).parent.name for p in store.unreadable_metrics]
        for name in ("kind", "status"):
            values = ["all", *sorted({str(r[name]) for r in self._rows if r.get(name)})]
            self.param[name].objects = values
            if getattr(self, name) not in values:
                setattr(self, name, "all")
        known = {r["id"] for r in self._rows}
        self.ticked = [i for i in self.ticked if i in known]  # removed runs leave the ticks and the comparison
        self.selected = [i for i in self.selected if i in known]
        return self._rows

    @property
    def ids(self) -> list[str]:
        """Every run's id in the store as refresh() last read it, oldest first (no filter applied)."""
        return [r["id"] for r in self._rows]

    def count_text(self) -> str:
        """The gallery's header: how many runs are shown of how many, and the folders the catalog could not read."""
        text = f"{len(self.shown())} of {counted(len(self._rows), 'run')} in {code(self.runs_dir)} (newest first)"
        if self.unreadable:  # each with its reason and fix (the names alone sent the researcher to the CLI)
            # a reason may quote run.json's values, a folder's name may hold a backtick and HTML after it (its
            # code span closed, the HTML ran): the library's words plain(), the names code()
            whys = {n: plain(self.unreadable_why.get(n, "run.json does not read")) for n in self.unreadable}
            text += " · not readable as runs, left out: " + "; ".join(f"{code(n)} ({why})" for n, why in whys.items())
        if self.without_metrics:
            text += f" · metrics unreadable: {', '.join(code(n) for n in self.without_metrics)}"
        return text

    def shown(self) -> list[dict]:
        """The rows the filters let through, newest first, at most `limit`."""
        text = self.query.strip().lower()

        def keep(r: dict) -> bool:
            if self.kind != "all" and r.get("kind") != self.kind:
                return False
            if self.status != "all" and r.get("status") != self.status:
                return False
            # what the card and the table say the run is (a CycleQD run's sampling and mutation were not found)
            hay = " ".join([r["id"], what_text(r), r.get("note") or ""])
            return text in hay.lower()

        return [r for r in reversed(self._rows) if keep(r)][: self.limit]

    def table(self) -> pd.DataFrame:
        """Every run in the catalog, one row each: COLUMNS — `what`, the values that describe a run of its kind
        (runs.KIND_COLUMNS, the values `workbench runs list` shows: "lenia · clip · cma", "ties · a+b", "add ·
        svf"; the table had substrate and FM columns, which held a merge's method, an expert's task and adapter),
        the best score in the run's own metric and direction (the card's; a CycleQD run's best_loss is its QD
        score negated, which the table showed under best_loss); the note before the time created (in a 1280 px
        window the one column off to the right), which is to the second, as the card's. Newest first,
        as the gallery (it listed the oldest first)."""
        rows = [{**r, **_done(r), **_best(r), "what": what_text(r), "note": r.get("note") or "",
                 "created": str(r.get("created") or "")[:19].replace("T", " ")} for r in reversed(self._rows)]
        return pd.DataFrame(rows, columns=COLUMNS)

    def link(self, run_id: str) -> str:
        """Markdown link to the page that fits the run's kind (Lab, Atlas, Merge; see shell.OPENERS)."""
        info = RunStore(self.runs_dir).open(run_id).info
        kind = info.get("kind")
        links = open_links(kind, run_id, (info.get("config") or {}).get("algorithm"))
        if not links:
            what = f"{kind} runs" if kind else "runs of unknown kind"  # (a run.json without one: "None runs")
            return f"{code(run_id)}: no page opens {what} yet"
        title, url = links[0]
        return f"[open {code(run_id)} in the {title}]({url})"

    def card(self, row: dict) -> dict:
        """What a gallery card shows for a catalog row: title, subtitle, status, best, thumbnail, links."""
        kind = row.get("kind") or "?"
        if kind == "merge":
            title = f"merge · {row.get('method') or row.get('substrate')}"
            models = row.get("models")
            subtitle = " + ".join(models) if models else str(row.get("fm") or "")
        elif kind == "qd":
            title = f"qd · {row.get('sampling')} sampling, {row.get('mutation')} mutation"
            subtitle = "tasks " + ", ".join(row.get("tasks") or [])
        elif kind in ("experts", "adapt", "namm"):  # what substrate and fm hold for them: runs.KIND_COLUMNS
            title = f"{kind} · {str(row.get('substrate')).replace('+', ' + ')}"
            fm = str(row.get("fm") or "")
            subtitle = {"experts": f"{ {'svf': 'SVF', 'lora': 'LoRA'}.get(fm, fm)} expert",
                        "adapt": "experts " + fm.replace("+", ", "), "namm": f"model {fm}"}[kind]
        else:
            title = f"{kind} · {row.get('substrate')}"
            algorithm = row.get("algorithm")
            subtitle = f"FM {row.get('fm')}" + (f" · {algorithm}" if algorithm else "")
        return {"id": row["id"], "kind": kind, "title": title, "subtitle": subtitle,
                "status": str(row.get("status") or "unknown"), "iterations": row.get("iterations") or 0,
                "steps": _steps_text(kind, row.get("iterations")),
                "best": best_text(row), "created": str(row.get("created") or "")[:19].replace("T", " "),
                "thumbnail": self.thumbnail(row),
                "links": self._links(row),
                "resume_command": row.get("resume_command"), "note": row.get("note") or ""}

    def _links(self, row: dict) -> list[tuple[str, str]]:
        """The pages that open the run, best fit first: a search without its best θ yet (stopped, running) opens
        on the Search page first, where it goes on (the Lab said it had no best θ yet: a dead end)."""
        links = open_links(row.get("kind"), row["id"], row.get("algorithm"))
        if row.get("kind") in ("target", "openended") and not (Path(self.runs_dir) / row["id"] / "best.npy").exists():
            links = sorted(links, key=lambda link: link[0] != PAGES["search"].title)
        return links

    def thumbnail(self, row: dict) -> str | None:
        """A catalog row's picture as a data: URI (best frame, atlas, a search's latest population, a recipe
        heatmap for merge runs, the metric per iteration for runs without one), or None while it has none. Cached
        per run and file version. A run whose files this code did not foresee (a hand-edited config, say) costs its
        card the picture, not the page."""
        try:
            return self._thumbnail(row)
        except Exception:  # noqa: BLE001 - see the docstring: Home and Runs were a traceback for one qd run.json
            if row.get("id") not in _NO_THUMBNAIL:  # in the server's log once, not at every redraw
                _NO_THUMBNAIL.add(row.get("id"))
                logging.getLogger(__name__).warning("no picture for run %s", row.get("id"), exc_info=True)
            return None

    def _thumbnail(self, row: dict) -> str | None:
        kind = row.get("kind")
        path = Path(self.runs_dir) / row["id"]
        if kind == "merge":
            sources = [p for p in (path / "recipe.yaml", path / "dfs.json") if p.exists()]
            return _merge_thumbnail(str(path), tuple(p.stat().st_mtime_ns for p in sources)) if sources else None
        if kind == "qd":  # its newest archives side by side
            table = path / "archives.parquet"
            return _qd_thumbnail(str(path), table.stat().st_mtime_ns) if table.exists() else None
        for name in ("best.png", "atlas.png", "population.png"):  # a search not done: its latest population
            if (path / name).exists():
                return _image_thumbnail(str(path / name), (path / name).stat().st_mtime_ns)
        # runs without a picture of their own (experts, adapt, NAMM; a search of an older version before its end):
        # the metric they are judged by, per iteration
        table = path / "metrics.parquet"
        if table.exists():
            return _metric_thumbnail(str(table), table.stat().st_mtime_ns, str(row.get("metric") or "loss"),
                                     str(row.get("better") or "lower") in HIGHER)
        return None

    def follow(self) -> bool:
        """The catalog read again while a run of it runs, or once runs came or went (the page every FOLLOW_MS: a
        listing of the store's folders, and only then the catalog): True when it changed (a card's count, a
        status, a run new or removed), for the page to redraw. A running run's card stayed at its first count
        until "refresh" was pressed."""
        folders = _folders(self.runs_dir)
        if folders == self._folders and not any(r.get("status") in ("running", "resuming") for r in self._rows):
            return False  # no run started, removed or going since the last read
        before = self._rows
        return self.refresh() != before

    def toggle(self, run_id: str) -> None:
        """Add a run to the comparison (the oldest leaves past MAX_COMPARED) or take it out."""
        if run_id in self.selected:
            self.selected = [i for i in self.selected if i != run_id]
        else:
            self.selected = [*self.selected, run_id][-MAX_COMPARED:]

    def comparison(self) -> Comparison | None:
        """The selected runs compared (None for fewer than two): settings that differ, replicate groups, curves."""
        store = RunStore(self.runs_dir)
        # runs deleted since the page last listed them drop out; the ones left are compared
        ids = [i for i in self.selected if (store.root / i / "run.json").is_file()]
        return compare_runs(store, ids) if len(ids) >= 2 else None

    def compared_text(self, comparison: Comparison | None) -> str:
        """The Compare tab's first line: the runs compared, and those whose metrics could not be read (left out
        of the curves, their settings still compared)."""
        ids = [code(i) for i in self.selected]
        names = ", ".join(ids[:-1]) + " and " + ids[-1] if len(ids) > 1 else (ids[0] if ids else "no runs yet")
        left_out = "".join(f" **{code(i)} left out of the curves:** {plain(why)}."
                           for i, why in (comparison.unreadable if comparison else {}).items())
        return f"Comparing {names}.{left_out}"

    def settings_table(self, comparison: Comparison | None = None) -> pd.DataFrame:
        """One row per selected run: id, seed, the settings that differ between them, status, best (of
        `comparison`, default: the selection's, compared now)."""
        comparison = comparison or self.comparison()
        if comparison is None:
            return pd.DataFrame(columns=["id", "seed", "done", "unit", "status", "best"])
        keys = [k for k in comparison.differs if k != "config.seed"]
        out = []
        noted = any(r.get("note") for r in comparison.rows)  # the researchers' own words, where there are some
        for r in comparison.rows:
            out.append({"id": r["id"], "seed": r["seed"],
                        **{k.removeprefix("config."): value_text(comparison.differs[k][r["id"]]) for k in keys},
                        **_done(r), "status": r["status"], "best": best_text(r),
                        **({"note": r.get("note") or ""} if noted else {})})
        return pd.DataFrame(out)

    def note(self, run_id: str, text: str) -> str:
        """Write a run's note (Run.set_note, as `workbench runs note ID TEXT`; '' removes it) and read the
        catalog again: the card, the table and the search show it. The note as stored."""
        written = RunStore(self.runs_dir).open(run_id).set_note(text)
        self.refresh()
        return written

    def remove(self, ids: list[str]) -> list[str]:
        """Remove these runs for good, folders and all (RunStore.remove, as `workbench runs rm --yes`); their ids.
        Every one is checked first: one that runs or is being resumed refuses them all (RunError, naming it). The
        catalog is read again, so the removed leave the gallery, the table and the selection."""
        if not ids:
            raise ValueError(NOTHING_TICKED)
        store = RunStore(self.runs_dir)
        runs = store.removable(ids)
        try:
            return store.remove_all(runs)
        finally:
            self.refresh()  # what went leaves the gallery and the table whatever came after

    def export(self, suffix: str = ".png", width: float | None = None, font: str | None = None,
               rename: dict[str, str] | None = None) -> Path:
        """The comparison's curves as a figure for a paper, in the store's own figures/ folder (no run's: removing
        a compared run kept it): compare-<N>runs-<digest of the ids>[-<band>].<suffix> (the same runs with the same
        band write the same file; the default band, range, is not named); at figures.save's width (inches) and
        font, the settings' legend entries renamed ({"sigma=0.3": "ours"}: figures.save's rename)."""
        from workbench.figures import compare_curves, export_suffix, save

        suffix = export_suffix(suffix)
        comparison = self.comparison()
        if comparison is None:
            raise ValueError(f"pick 2 to {MAX_COMPARED} runs to compare first")
        ids = [r["id"] for r in comparison.rows]
        digest = ids_digest(ids)
        band = "" if self.band == "range" else f"-{self.band}"
        out = Path(self.runs_dir) / "figures" / f"compare-{len(ids)}runs-{digest}{band}{suffix}"
        out.parent.mkdir(parents=True, exist_ok=True)
        return save(compare_curves(comparison, self.band), out, width=width, font=font, rename=rename)


def _best(row: dict) -> dict:
    """A row's best score in its own metric and direction: {"metric": "qd_score ↑", "best": 0.125}, from the
    catalog's best + better + metric, else best_loss ({"metric": "", "best": None}: no score yet)."""
    if row.get("best") is not None:
        higher = str(row.get("better")) in HIGHER
        metric = row.get("metric") or ("fitness" if higher else "loss")
        metric = METRIC_WORDS.get(metric, metric)  # "validation accuracy", as the Experts page says (not val_accuracy)
        return {"metric": f"{metric} {'↑' if higher else '↓'}", "best": row["best"]}
    return {"metric": "loss ↓" if row.get("best_loss") is not None else "", "best": row.get("best_loss")}


def best_text(row: dict) -> str:
    """'best loss 0.123 ↓' / 'best fitness 0.87 ↑': a card's line, the table's metric and best (_best) in words."""
    best = _best(row)
    if best["best"] is None:
        return "no score yet"
    metric, arrow = best["metric"].rsplit(" ", 1)
    return f"best {metric} {best['best']:.4g} {arrow}"


def _done(row: dict) -> dict:
    """A row's steps as its users count them: {"done": 6, "unit": "generations"} for a CycleQD run of --gens 6
    (its 7 stored iterations), {"done": 12, "unit": "iterations"} for the others."""
    done, unit = steps_done(row.get("kind"), row.get("iterations"))
    return {"done": done, "unit": unit}


def _steps_text(kind: str, iterations: int | None) -> str:
    """A card's steps: "12 it", or a CycleQD run's "6 generations"."""
    done, unit = steps_done(kind, iterations)
    return f"{done} {'it' if unit == 'iterations' else unit}"


def _png_uri(image: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")  # not optimize=True: 4x the time, no fewer bytes (a thumbnail)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@functools.lru_cache(maxsize=512)
def _image_thumbnail(path: str, mtime_ns: int) -> str | None:
    from PIL import Image

    try:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
    except (OSError, ValueError):  # a damaged picture: that card goes without one, the page shows the rest
        return None
    image.thumbnail((THUMB, THUMB), Image.LANCZOS)
    return _png_uri(np.asarray(image))


@functools.lru_cache(maxsize=512)
def _merge_thumbnail(run_path: str, mtimes: tuple[int, ...]) -> str | None:
    from workbench.merge.views import MergeRun, recipe_thumbnail

    path = Path(run_path)
    try:
        data = MergeRun.open(RunStore(path.parent), path.name)
    except (RunError, OSError, ValueError):
        return None
    image = recipe_thumbnail(data, THUMB, THUMB * 2 // 3)
    return None if image is None else _png_uri(image)


_NO_THUMBNAIL: set = set()  # runs whose picture failed, logged once


@functools.lru_cache(maxsize=512)
def _qd_thumbnail(run_path: str, mtime_ns: int) -> str | None:
    from workbench.dashboards.qd import archive_thumbnail

    image = archive_thumbnail(run_path, THUMB, THUMB * 2 // 3)
    return None if image is None else _png_uri(image)


@functools.lru_cache(maxsize=512)
def _metric_thumbnail(table: str, mtime_ns: int, metric: str, higher: bool) -> str | None:
    from workbench.runs import read_parquet

    try:
        image = metric_thumbnail(read_parquet(table).to_pandas(), metric, higher, THUMB, THUMB * 2 // 3)
    except Exception:  # noqa: BLE001 - a table this code did not foresee costs its card the picture, not the page
        return None
    return None if image is None else _png_uri(image)


def _numbers(column: pd.Series) -> np.ndarray:
    """A column as float64, anything that is not a number (text, lists, None) as NaN."""
    return pd.to_numeric(column, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


CURVE_BG, CURVE_GRID, CURVE_LINE, CURVE_DOT, CURVE_TEXT = "#1d2330", "#3a4254", "#8ab4e8", "#f0a63a", "#c9d1de"


def metric_thumbnail(df: pd.DataFrame, metric: str, higher: bool, width: int = 224,
                     height: int = 149) -> np.ndarray | None:
    """A run's metrics table as a small picture for the gallery, uint8 (height, width, 3), or None without data.

    A table with a `unit` column (an adapt run: one row per strategy or expert evaluated) gives one bar per unit,
    the best one highlighted. Otherwise a curve over the iterations: the best value so far (from `best_loss`, in
    the metric's own direction) as a line, and the metric's own values where the table has them (an expert's
    validation accuracy every few steps) as dots; the range is written at the left edge."""
    from PIL import Image, ImageDraw, ImageFont

    if df.empty or "best_loss" not in df:
        return None
    image = Image.new("RGB", (width, height), CURVE_BG)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    left, right, top, bottom = 34, width - 8, 22, height - 10
    shown = METRIC_WORDS.get(metric, metric)  # in words, as the card's line below it
    draw.text((right - draw.textlength(shown, font=font), 3), shown, fill=CURVE_TEXT, font=font)
    if "unit" in df and "mean_accuracy" in df:
        values = _numbers(df["mean_accuracy"])
        finite = values[np.isfinite(values)]
        if not len(finite):
            return None
        lo, hi = min(0.0, float(finite.min())), max(1.0, float(finite.max()))
        best = int(np.nanargmax(np.where(np.isfinite(values), values, np.nan)))
        n = len(values)
        slot = (right - left) / n
        gap = min(max(1.0, slot / 4), slot / 2 - 0.5) if slot >= 2 else 0.0  # many units: bars 1 px, no gaps
        for i, v in enumerate(values):
            if not np.isfinite(v):
                continue
            x0 = left + i * slot + gap
            # 3 px at least: bars of 0 (an adapt run whose strategies all scored 0) lay under the axis line, and
            # the picture looked blank
            y = min(bottom - (v - lo) / (hi - lo) * (bottom - top), bottom - 3)
            draw.rectangle((x0, y, max(x0, left + (i + 1) * slot - gap - 1), bottom),
                           fill=CURVE_DOT if i == best else CURVE_LINE)
    else:
        x = _numbers(df["iteration"]) if "iteration" in df else np.arange(len(df), dtype=float)
        x = np.where(np.isfinite(x), x, np.arange(len(df), dtype=float))
        best = _numbers(df["best_loss"]) * (-1.0 if higher else 1.0)
        raw = _numbers(df[metric]) if metric in df and metric != "best_loss" else np.full(len(df), np.nan)
        finite = np.concatenate([best[np.isfinite(best)], raw[np.isfinite(raw)]])
        if not len(finite):
            return None
        lo, hi = float(finite.min()), float(finite.max())
        if "accuracy" in metric and lo >= 0 and hi <= 1:
            lo, hi = 0.0, 1.0  # accuracies on their whole scale: a flat 0.375 is not a flat 1.0
        elif hi - lo < 1e-12:
            pad = max(abs(lo) * 0.05, 1e-3)
            lo, hi = lo - pad, hi + pad
        x0, x1 = float(x.min()), float(max(x.max(), x.min() + 1))

        def at(xv, yv):
            return (left + (xv - x0) / (x1 - x0) * (right - left), bottom - (yv - lo) / (hi - lo) * (bottom - top))

        ok = np.isfinite(best)
        points = [at(a, b) for a, b in zip(x[ok], best[ok], strict=True)]
        if len(points) > 1:
            draw.line(points, fill=CURVE_LINE, width=2)
        elif points:
            draw.ellipse((points[0][0] - 2, points[0][1] - 2, points[0][0] + 2, points[0][1] + 2), fill=CURVE_LINE)
        for a, b in zip(x[np.isfinite(raw)], raw[np.isfinite(raw)], strict=True):
            px, py = at(a, b)
            draw.ellipse((px - 2, py - 2, px + 2, py + 2), fill=CURVE_DOT)
    for value, y in ((hi, top), (lo, bottom)):
        draw.line((left, y, right, y), fill=CURVE_GRID, width=1)
        draw.text((2, y - 5), f"{value:.3g}", fill=CURVE_TEXT, font=font)
    return np.asarray(image)


STATUS_COLOURS = {"done": "#2e7d32", "running": "#1565c0", "resuming": "#3f6394", "stopped": "#8d6e00",
                  "interrupted": "#c75000", "failed": "#c62828"}

GALLERY_CSS = """
:host { width: 100%; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(236px, 1fr)); gap: 14px; }
.run { border: 1px solid #dde3ea; border-radius: 8px; background: #fff; overflow: hidden;
       box-shadow: 0 1px 2px rgba(0,0,0,.05); display: flex; flex-direction: column; font-size: 13px; }
.run:hover { border-color: #2f5d8a; box-shadow: 0 2px 8px rgba(47,93,138,.18); }
.thumb { display: flex; align-items: center; justify-content: center; height: 176px; background: #1d2330; }
.thumb a { display: flex; align-items: center; justify-content: center; width: 100%; height: 100%; }
.thumb img { width: 100%; height: 176px; object-fit: contain; image-rendering: pixelated; display: block; }
.thumb .none { color: #9aa3b2; font-size: 13px; }
.body { padding: 8px 10px 10px 10px; display: flex; flex-direction: column; gap: 3px; }
.title { font-weight: 600; font-size: 14px; color: #1d2330; }
.sub, .meta { color: #5b6472; }
.id { color: #5b6472; font-family: ui-monospace, monospace; font-size: 11px; word-break: break-all; }
.note { color: #3a4250; font-style: italic; white-space: pre-wrap; overflow-wrap: anywhere; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; color: #fff; font-size: 11px;
         font-weight: 600; margin-right: 6px; }
.links { display: flex; gap: 6px; margin-top: 4px; flex-wrap: wrap; }
.links a { text-decoration: none; background: #2f5d8a; color: #fff; padding: 3px 10px; border-radius: 4px; }
.links a.secondary { background: #e8eef5; color: #2f5d8a; }
code.resume { display: block; background: #f4f6f8; border-radius: 4px; padding: 4px 6px; font-size: 11px;
              word-break: break-all; user-select: all; color: #333; }
.empty { color: #666; font-size: 15px; padding: 20px; }
"""


def gallery_html(cards: list[dict], runs_dir: str, filtered: bool = False) -> str:
    """The cards as one HTML grid, for a static page styled by GALLERY_CSS (the served pages show a Gallery: one pane
    per card); none: why — no run yet, or (`filtered`: the folder has runs) none that the filters keep."""
    if not cards:
        return empty_html(runs_dir, filtered)
    return f'<div class="gallery">{"".join(card_html(c) for c in cards)}</div>'


def empty_html(runs_dir: str, filtered: bool = False) -> str:
    """Why the gallery shows no card: no run yet in `runs_dir`, or (`filtered`) none that the filters keep."""
    if filtered:
        return ('<div class="empty">No run matches the filters (kind, status, search): clear them to see every '
                "run.</div>")
    return (f'<div class="empty">No run yet in <code>{html.escape(runs_dir)}</code>{store_missing(runs_dir)}. '
            f'Start one on the '
            f'<a href="./search">Search</a> page or with <code>workbench asal …</code> / '
            f"<code>workbench merge evolve …</code>.</div>")


def card_html(c: dict) -> str:
    """One card (RunsModel.card's dict) as HTML: picture, title, status, best, id, note, resume command, links."""
    links = c["links"]
    thumb = (f'<img src="{c["thumbnail"]}" alt="{html.escape(c["id"])}">' if c["thumbnail"]
             else '<span class="none">no picture yet</span>')
    if links:
        thumb = f'<a href="{links[0][1]}" title="open in the {links[0][0]}">{thumb}</a>'
    buttons = "".join(f'<a class="{"" if i == 0 else "secondary"}" href="{url}">'
                      f'{"open in " if i == 0 else ""}{html.escape(title)}</a>'
                      for i, (title, url) in enumerate(links))
    colour = STATUS_COLOURS.get(c["status"], "#616161")
    note = f'<div class="note">{html.escape(c["note"])}</div>' if c.get("note") else ""
    resume = (f'<code class="resume" title="the command that resumes this run">{html.escape(c["resume_command"])}'
              "</code>" if c["resume_command"] else "")
    return (f'<div class="run" data-run="{html.escape(c["id"])}" data-status="{html.escape(c["status"])}">'
            f'<div class="thumb">{thumb}</div><div class="body">'
            f'<div class="title">{html.escape(c["title"])}</div><div class="sub">{html.escape(c["subtitle"])}</div>'
            f'<div class="meta"><span class="badge" style="background:{colour}">{html.escape(c["status"])}</span>'
            f'{html.escape(c["steps"])} · {html.escape(c["best"])}</div>'
            f'<div class="id">{html.escape(c["id"])}</div>{note}{resume}<div class="links">{buttons}</div></div></div>')


# the cards' grid, laid on the Column that holds one pane per card (its children sit in its shadow root)
GRID_CSS = """
:host { display: grid !important; grid-template-columns: repeat(auto-fill, minmax(236px, 1fr)); gap: 14px; }
"""


class Gallery:
    """The gallery on a page: one HTML pane per card in a grid, so that a redraw sends the browser only the cards
    that changed. One pane for every card resent all of them every FOLLOW_MS while a run ran (a running run's
    count changes): with a Lenia picture ~70 KB as a data: URI, 60 cards were 2-4 MB every 5 s to each tab.

    `show(cards)` reuses a run's pane, changes its HTML only where the card's differs, and re-lists the grid
    only when the runs shown or their order change. `layout` is what the page places; `html` the cards' text."""

    def __init__(self, runs_dir: str, name: str = "gallery"):
        self.runs_dir = runs_dir
        self.empty = pn.pane.HTML("", stylesheets=[GALLERY_CSS], sizing_mode="stretch_width", visible=False,
                                  margin=0)
        self.grid = pn.Column(stylesheets=[GRID_CSS], css_classes=["gallery"], sizing_mode="stretch_width",
                              margin=(5, 10), name=name)
        self.layout = pn.Column(self.empty, self.grid, sizing_mode="stretch_width", margin=0)
        self._panes: dict[str, pn.pane.HTML] = {}

    def show(self, cards: list[dict], filtered: bool = False) -> None:
        """Show these cards in this order; none: why (empty_html), `filtered` as there."""
        firsts: dict[str, dict] = {}
        for card in cards:  # a run once (its first card): one pane per run
            firsts.setdefault(card["id"], card)
        cards = list(firsts.values())
        panes = []
        for card in cards:
            text = card_html(card)
            pane = self._panes.get(card["id"])
            if pane is None:
                pane = pn.pane.HTML(text, stylesheets=[GALLERY_CSS], sizing_mode="stretch_width", margin=0)
            elif pane.object != text:
                pane.object = text  # this card's change alone goes to the browser
            panes.append(pane)
        self._panes = {card["id"]: pane for card, pane in zip(cards, panes, strict=True)}
        if [id(p) for p in self.grid.objects] != [id(p) for p in panes]:
            self.grid.objects = panes
        self.empty.object = "" if cards else empty_html(self.runs_dir, filtered)
        self.empty.visible, self.grid.visible = not cards, bool(cards)

    @property
    def html(self) -> str:
        """The text shown: the cards' HTML one after another, or why there is none."""
        return "".join(p.object for p in self.grid.objects) if self.grid.visible else self.empty.object


def what_cell(text: str) -> str:
    """A run's `what` as the Runs table's HTML cell: escaped, with a break opportunity after each "+" and "/" (a
    task list "gsm8k+mbpp+arc_easy" is one word to the browser, which broke it inside "arc_easy"; a path anywhere
    rather than at its slashes)."""
    return re.sub(r"([+/])", r"\1<wbr>", html.escape(text))


def table_shown(model: RunsModel) -> pd.DataFrame:
    """The Runs table's rows as the page shows them: model.table() with `what` as HTML (what_cell)."""
    table = model.table()
    table["what"] = table["what"].map(what_cell)
    return table


def patch_table(table: pn.widgets.Tabulator, df: pd.DataFrame) -> None:
    """Put `df` in the table: where only cells changed (the same runs in the same order, the same columns and
    types: a running run's count, a status), patch those cells; replace the rows otherwise. Replacing them every
    FOLLOW_MS while a run ran sent the browser the whole catalog each time."""
    old = table.value
    same = (old is not None and old.shape == df.shape and list(old.columns) == list(df.columns)
            and old.index.equals(df.index) and list(old["id"]) == list(df["id"])
            and (old.dtypes == df.dtypes).all())
    if not same:
        table.value = df
        return
    patch: dict[str, list[tuple[int, object]]] = {}
    for column in df.columns:
        before, after = old[column], df[column]
        changed = ~((before == after) | (before.isna() & after.isna()))
        if changed.any():
            patch[column] = [(int(i), after.iloc[i]) for i in np.flatnonzero(changed.to_numpy())]
    if patch:
        table.patch(patch, as_index=False)


def curves_plot(model: RunsModel, comparison: Comparison | None = None) -> pn.viewable.Viewable:
    """The compared runs' curves (of `comparison`, default: the selection's, compared now)."""
    from workbench.dashboards.shell import placeholder
    from workbench.figures import CURVE_POINTS, band_title, compare_curves, holoviews

    comparison = comparison or model.comparison()
    if comparison is None or comparison.curves.empty:
        return placeholder(f"pick 2 to {MAX_COMPARED} runs under “compare” (sidebar) or tick them in the table",
                           760, 320)
    hv = holoviews()
    title = f"best so far: {band_title(model.band)}" if comparison.has_replicates else "best so far by iteration"
    figure = compare_curves(comparison, model.band, points=CURVE_POINTS)  # a page: long runs thinned
    # runs in several metrics come as a Layout of a panel per metric: each panel sized, the title once on top
    height = 340 if isinstance(figure, hv.Overlay) else 260
    figure = figure.opts(hv.opts.Overlay(width=760, height=height, backend="bokeh")).opts(title=title, backend="bokeh")
    return pn.pane.HoloViews(figure, backend="bokeh")


def removal_question(ids: list[str]) -> str:
    """What the Runs page asks before it removes runs: which, and that it is for good."""
    return (f"Remove {counted(len(ids), 'run')} for good, folders and all (metrics, checkpoints, figures)? "
            f"{', '.join(code(i) for i in ids)}")


def runs_page(runs_dir: str = "runs", standalone: bool = False) -> pn.template.FastListTemplate:
    """The /runs page over the store `runs_dir`: the gallery and table of every run, filters, notes, removal and
    the comparison of the runs ticked. standalone: a page of its own, without the links to the others."""
    from workbench.dashboards.shell import UNTRAPPED, every_from_load, export_controls, scrolls, section, served, shell

    model = RunsModel(runs_dir=runs_dir)
    kind = pn.widgets.Select.from_param(model.param.kind, sizing_mode="stretch_width")
    status = pn.widgets.Select.from_param(model.param.status, sizing_mode="stretch_width")
    query = pn.widgets.TextInput.from_param(model.param.query, label="Search", placeholder="id, substrate, FM, model…",
                                            sizing_mode="stretch_width")
    compare = TextMultiChoice(label=f"compare (2 to {MAX_COMPARED} runs)", options=model.ids[::-1],
                              placeholder="runs to compare", max_items=MAX_COMPARED, sizing_mode="stretch_width",
                              **UNTRAPPED)
    refresh = pn.widgets.Button(label="refresh", sizing_mode="stretch_width")
    band = pn.widgets.Select.from_param(model.param.band, name="Band over seeds", sizing_mode="stretch_width",
                                        description="range: lowest to highest run; sd: mean ± 1 sd; ci95: Student's "
                                                    "t 95% confidence interval of the mean")
    gallery = Gallery(runs_dir, name="runs-gallery")
    count = pn.pane.Markdown("", margin=(0, 10))
    # the best to four decimals at most, as near the cards' four digits as a column allows (it showed six); a note
    # wrapped in a column of its own width (one long note made its column 500 px wide and the table scroll far)
    # every column in a laptop's main area (COLUMNS, the widths above): what, the metric and the time wrapped too,
    # the unit on the done header (what = a merge's models: a path with no hyphen breaks anywhere rather than be cut)
    wrapped = {"type": "textarea"}
    table = pn.widgets.Tabulator(table_shown(model), label="runs", selectable="checkbox", disabled=True,
                                 pagination="local", page_size=20, sizing_mode="stretch_width", show_index=False,
                                 frozen_columns=["id"],
                                 formatters={"best": NumberFormatter(format="0.[0000]", text_align="right"),
                                             **dict.fromkeys(["id", "metric", "note", "created"], wrapped),
                                             "what": {"type": "html"}},
                                 widths={"note": NOTE_WIDTH, "id": ID_WIDTH, "what": WHAT_WIDTH,
                                         "metric": METRIC_WIDTH, "created": CREATED_WIDTH},
                                 hidden_columns=["unit"], header_tooltips={"done": DONE_TOOLTIP},
                                 stylesheets=['.tabulator-row .tabulator-cell[tabulator-field="what"] { '
                                              'white-space: normal; overflow-wrap: anywhere; }'])

    def compare_views() -> list:
        """The Compare tab: who is compared, the curves and what differs, from one comparison of the runs."""
        try:
            comparison = model.comparison()
        except ValueError as exc:  # a run that cannot be opened: said on the tab (it went to the server log alone)
            return [pn.pane.Markdown(as_text(f"{model.compared_text(None)} **Cannot compare them:** {plain(str(exc))}"),
                                     margin=(5, 10))]
        table = model.settings_table(comparison) if comparison is not None else pd.DataFrame()
        settings = pn.pane.Markdown("") if table.empty else pn.pane.DataFrame(
            table, index=False, sizing_mode="stretch_width", name="compare-settings")
        # run ids in backticks: a folder named a`<img …> closed the code span and its HTML ran (as_text)
        return [pn.pane.Markdown(as_text(model.compared_text(comparison)), margin=(5, 10)),
                curves_plot(model, comparison), settings]

    fmt, size, export, written, download = export_controls(model.export)
    remove = pn.widgets.Button(label="remove the ticked runs…", sizing_mode="stretch_width")
    confirm = pn.widgets.Button(label="yes, remove them for good", color="danger", visible=False,
                                sizing_mode="stretch_width")
    cancel = pn.widgets.Button(label="keep them", visible=False, sizing_mode="stretch_width")
    removal = live(pn.pane.Markdown("", sizing_mode="stretch_width"))
    asked: list[str] = []  # the runs the question names: removed on "yes" whatever is ticked by then
    # saved as the field is left (its value is sent then): a "save" button's click could reach the server before
    # the text typed just before it, and saved the text the field had held
    note = pn.widgets.TextAreaInput(label="Note on the ticked run", description="saved as you leave the field",
                                    placeholder="tick one run", disabled=True, max_length=MAX_NOTE, height=80,
                                    sizing_mode="stretch_width")
    noted = live(pn.pane.Markdown("", sizing_mode="stretch_width"))
    showing = [False]  # the field filled from the model is not the user writing
    noting: list[str | None] = [None]  # the run whose note the field holds (the ticks may change before it is left)
    curves = pn.Column(*compare_views())
    # the table and the curves in boxes that scroll: the tabs took the table's width, and the gallery its 3 columns,
    # in any window (the main area scrolled sideways on a phone)
    tabs = pn.Tabs(("Gallery", pn.Column(count, gallery.layout, sizing_mode="stretch_width")),
                   ("Table", scrolls(table)), ("Compare", scrolls(curves)), sizing_mode="stretch_width", dynamic=False)

    def draw(*_):
        shown = model.shown()
        gallery.show([model.card(r) for r in shown], filtered=bool(model._rows))
        count.object = model.count_text()

    def show_store(*_):
        """The table, the compare menu and the gallery as the catalog now reads (model.refresh: a removal or a
        note read it)."""
        # the ticks by run, not by row: Panel maps the old ticks onto the new rows by position, and a run gone
        # from above them moved them onto others (which on_table_select then took as ticked)
        replacing[0] = True
        try:
            patch_table(table, table_shown(model))
        finally:
            replacing[0] = False
        on_ticked()
        compare.options = model.ids[::-1]
        draw()

    def on_refresh(event):
        model.refresh()
        show_store()

    def rows_of(ids: list[str]) -> list[int]:
        where = {rid: i for i, rid in enumerate(table.value["id"])} if not table.value.empty else {}
        return [where[r] for r in ids if r in where]

    replacing = [False]  # the table's rows are being replaced: its selection is not the user's

    def on_table_select(event):
        if replacing[0]:
            return
        # the table's ticks (any number: removal takes them all) and the last MAX_COMPARED of them compared
        # (model.tick); the sidebar's picks are ticked in turn (on_ticked)
        model.tick([table.value.iloc[i]["id"] for i in event.new])

    def on_compare(event):
        if list(event.new) != model.selected:
            model.selected = list(event.new)

    def on_selected(event):
        if list(compare.value) != model.selected:
            compare.value = list(model.selected)
        on_ticked()
        curves[:] = compare_views()
        written.object = ""  # another comparison: the last one's file and its download leave the sidebar
        if len(model.selected) == 2 and tabs.active == 0:
            tabs.active = 2

    def on_band(*_):
        curves[:] = compare_views()
        written.object = ""  # the last export was of the other band

    def on_ticked(*_):
        rows = rows_of(model.ticked)
        if sorted(table.selection) != sorted(rows):
            table.selection = rows

    def ask_removal(event):
        asked[:] = list(model.ticked)
        removal.object = as_text(removal_question(asked)) if asked else f"{NOTHING_TICKED.capitalize()}."
        confirm.visible = cancel.visible = bool(asked)

    def on_confirm(event):
        confirm.visible = cancel.visible = False
        try:
            removed = model.remove(asked)
            removal.object = as_text(f"removed {counted(len(removed), 'run')}: {', '.join(code(i) for i in removed)}")
        except (ValueError, OSError) as exc:  # a store served read-only: the folder that refused, in words
            removal.object = f"**not (all) removed:** {plain(cannot_write(exc) or str(exc))}"
        finally:
            show_store()

    def show_note(*_):
        """The note field holds the one ticked run's note (two or none ticked: nothing to write on)."""
        one = model.selected[-1] if len(model.selected) == 1 else None
        noting[0] = one
        row = next((r for r in model._rows if r["id"] == one), None) if one else None
        showing[0] = True
        try:
            note.param.update(value=(row or {}).get("note") or "", disabled=one is None,
                              placeholder=f"what {one} is for (saved as you leave the field)" if one else
                              "tick one run")
        finally:
            showing[0] = False
        noted.object = ""

    def on_note(event):
        run_id = noting[0]
        if showing[0] or run_id is None:
            return
        try:
            written = model.note(run_id, event.new or "")
        except (ValueError, OSError) as exc:  # OSError: a run served read-only (it was a traceback in the log)
            if isinstance(exc, OSError) and cannot_write(exc) is None:
                raise
            noted.object = f"**not saved:** {plain(cannot_write(exc) or str(exc))}"
            return
        noted.object = as_text(f"note saved on {code(run_id)}" if written else f"note removed from {code(run_id)}")
        show_store()

    def on_cancel(event):
        confirm.visible = cancel.visible = False
        removal.object = ""

    model.param.watch(draw, ["kind", "status", "query", "limit"])
    remove.on_click(ask_removal)
    note.param.watch(on_note, "value")
    model.param.watch(show_note, "selected")
    confirm.on_click(on_confirm)
    cancel.on_click(on_cancel)
    model.param.watch(on_selected, "selected")
    model.param.watch(on_ticked, "ticked")
    model.param.watch(on_band, "band")
    table.param.watch(on_table_select, "selection")
    compare.param.watch(on_compare, "value")
    refresh.on_click(on_refresh)

    def follow_runs():
        if model.follow():
            show_store()

    if served():  # a session's own
        every_from_load(follow_runs, FOLLOW_MS)
    draw()
    opens = ", ".join(f"{k} → {' / '.join(PAGES[p].title for p in pages)}" for k, pages in OPENERS.items())
    sidebar = [section("Filter"), kind, status, query, refresh, section("Compare"), compare, band, fmt, size, export,
               written, download, section("Note"), note, noted, section("Remove"), remove, confirm, cancel, removal,
               pn.pane.Markdown(f"Runs open where they fit: {opens}.", styles={"color": "#666"})]
    return shell("runs", [tabs], sidebar, standalone=standalone)


if __name__.startswith("bokeh"):
    pn.extension("tabulator", inline=True, notifications=True)  # Notyf: shell.connection_notice
    runs_page(sys.argv[1] if len(sys.argv) > 1 else "runs", standalone=True).servable()  # titled by the shell
