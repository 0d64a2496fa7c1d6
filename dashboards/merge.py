"""Merge explorer: open a stored merge-recipe evolution and look at its recipe, path, fitness and task vectors.

`MergeModel` holds the run folder and the chosen run; the views are functions of it (workbench.merge.views).
`panel serve dashboards/merge.py --args RUNS_DIR` or `workbench serve` (page /merge) shows it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import panel as pn
import param

from workbench.checks import shell_path
from workbench.dashboards.shell import code, literal, newest_readable, plain, scrolls
from workbench.figures import CURVE_POINTS
from workbench.merge import views
from workbench.runs import RunStore, a_kind_run

if TYPE_CHECKING:
    from holoviews.core.dimension import Dimensioned

FIGURES = ("recipe", "path", "fitness", "scores", "norms", "cosine", "conflicts")
# the page's tabs and the figures each shows; a tab shows only when the run has one of its figures
TABS = {"Recipe": ("recipe",), "DFS path": ("path",), "Fitness": ("fitness",), "Scores": ("scores",),
        "Task vectors": ("norms", "cosine"), "TIES / DARE": ("conflicts",)}


#: what the page shows for a run without figures (its status and resume command are in the line above)
NO_FIGURES = ("*No figures yet: the run has not finished its first iteration. Refresh when it has (a run stopped "
              "or killed before it is resumed with the command above).*")


class MergeModel(param.Parameterized):
    """The Merge page's state: an evolved merge run on show and the tab (its recipe, fitness curves, …); each
    tab's figure is a method of it, for a notebook and for export."""

    runs_dir = param.String(default="runs", doc="the run store")
    run_id = param.Selector(default=None, objects=[], doc="the merge run on show")
    tab = param.Selector(default="Recipe", objects=list(TABS), doc="the tab on show (and what export writes)")

    def __init__(self, **params: Any):
        super().__init__(**params)
        self._loaded: views.MergeRun | None = None  # the run's files, read once per run shown
        self.skipped: list[str] = []  # why the newest runs were passed over (refresh: they could not be read)
        self._figures: dict[tuple[str, str], object] = {}  # (run, figure) -> HoloViews object
        self.refresh()
        self._fit_tab()

    def refresh(self) -> list[str]:
        """Re-read the catalog (new runs, a running one's progress)."""
        self._loaded = None
        self._figures = {}
        store = RunStore(self.runs_dir)
        ids = [r["id"] for r in views.merge_runs(store)]
        self.param.run_id.objects = ids
        # merge runs the catalog left out (a run.json field of another type) are passed over: said at each read (a
        # refresh kept the first read's, mended or newly damaged runs as they were)
        self.skipped = store.passed_over(["merge"])
        if self.run_id not in ids:  # the newest run that reads (its files kept for data()); newer ones passed over
            run_id, self._loaded, skipped = newest_readable(
                ids, lambda i: views.MergeRun.open(RunStore(self.runs_dir), i))
            self.skipped += skipped
            self.run_id = run_id
        return ids

    def choose(self, run_id: str) -> None:
        """Show run `run_id` (the page's ?run=ID; a unique prefix too, as the CLI takes); ValueError if it is not
        a merge run of this folder."""
        store = RunStore(self.runs_dir)
        try:
            run_id = store.resolve(run_id)
        except ValueError as error:
            if "ambiguous" in str(error):  # a prefix of several runs: said so ("not a run" was wrong)
                raise ValueError(str(error)) from None
            # no such run: said below, with the page's words
        if run_id not in self.param.run_id.objects:
            rows = store.list()
            if run_id in store.unreadable_why:  # a run the catalog left out: why ("not a run" was wrong of it)
                raise ValueError(f"run {run_id}: {store.unreadable_why[run_id]}")
            row = next((r for r in rows if r["id"] == run_id), None)  # a run of another kind, or of none
            why = a_kind_run(row["kind"]) if row else f"not a run in {self.runs_dir}"
            raise ValueError(f"{run_id!r} is {why}; the Merge page opens merge runs")
        if run_id != self.run_id:  # read before it is shown: one whose files do not read is refused, not on show
            self._loaded = views.MergeRun.open(RunStore(self.runs_dir), run_id)
        self.run_id = run_id

    @param.depends("run_id", watch=True)
    def _fit_tab(self) -> None:
        """Open on a tab the run has (a DFS run has no recipe heatmaps, a running one no scores yet)."""
        tabs = self.tabs()
        if tabs and self.tab not in tabs:
            self.tab = tabs[0]

    def tabs(self) -> list[str]:
        """The tabs this run has something to show in, in page order."""
        return [t for t, names in TABS.items() if any(self.has(n) for n in names)]

    def no_figures(self) -> str:
        """What the page says for a run without any figure: not through its first iteration yet (NO_FIGURES), or
        else why its first figure is missing (its files' damage, say)."""
        d = self.data()
        if d is None or not d.info.get("iterations"):
            return NO_FIGURES
        why = self.figure(next(iter(FIGURES)))
        return f"*No figures: {plain(str(why.data).replace('<i>', '').replace('</i>', '').strip())}*"

    def has(self, name: str) -> bool:
        """Whether the run on show has figure `name` (of FIGURES), not the Div saying why it has none."""
        import holoviews as hv

        return not isinstance(self.figure(name), hv.Div)

    def tab_figure(self, tab: str | None = None, points: int | None = CURVE_POINTS) -> Dimensioned:
        """The figure(s) of a tab (default: the current one): one figure, or a Layout of the tab's figures (their
        lines as figure(name, points) draws them)."""
        names = [n for n in TABS[tab or self.tab] if self.has(n)]
        if not names:
            return self.figure(TABS[tab or self.tab][0])  # the Div saying why there is nothing
        if len(names) == 1:
            return self.figure(names[0], points)
        figures = [self.figure(n, points) for n in names]
        layout = figures[0]
        for fig in figures[1:]:
            layout = layout + fig
        return layout.opts(shared_axes=False)

    def data(self) -> views.MergeRun | None:
        """The shown run's tables and recipe; every figure and the summary share one read of its folder."""
        if self.run_id is None:
            return None
        if self._loaded is None or self._loaded.run.id != self.run_id:
            self._loaded = views.MergeRun.open(RunStore(self.runs_dir), self.run_id)
        return self._loaded

    def figure(self, name: str, points: int | None = CURVE_POINTS) -> Dimensioned:
        """One of FIGURES as a HoloViews object, made once per run shown: the page's, its lines at most `points`
        rows each (figures.curve_rows), or, with None, every row (export: paper_figure, export_tab)."""
        d = self.data()
        if d is None:
            return views._hv().Div("<i>no merge run in this folder yet: run `workbench merge evolve`</i>")
        key = (self.run_id, name, points)
        if key not in self._figures:
            self._figures[key] = {
                "recipe": lambda: views.recipe_heatmaps(d.recipe_table()), "path": lambda: views.dfs_path_plot(d.dfs),
                "fitness": lambda: views.fitness_plot(d.metrics, points), "scores": lambda: views.scores_plot(d.scores),
                "norms": lambda: views.norms_plot(d.analysis), "cosine": lambda: views.cosine_plot(d.analysis),
                "conflicts": lambda: views.conflict_plot(d.analysis)}[name]()
        return self._figures[key]

    def summary(self) -> str:
        """The Markdown line about the run on show: method, models, tasks, status, iterations, best validation
        fitness, the command that resumes it and what could not be read ("No merge runs yet." without one)."""
        d = self.data()
        if d is None:
            return "No merge runs yet."
        cfg = d.info["config"]
        fit = "–" if d.info.get("best_loss") is None else f"{-d.info['best_loss']:.3f}"
        status = d.run.live_status(d.info)  # a killed run says "interrupted", not the "running" it last wrote
        resume = d.run.resume_command
        return (f"**{literal(d.info['id'])}** · method {code(cfg['method'])} · models "
                f"{literal(', '.join(cfg['models']))} · tasks {literal(', '.join(cfg['tasks']))} · {status}, "
                f"{d.info.get('iterations', '?')}/{cfg['iters']} iterations · best validation fitness {fit}"
                + (f" · resume it: {code(resume)}" if resume else "")
                + "".join(f" · **cannot read** {plain(why)}" for why in d.damaged))

    def paper_figure(self, name: str) -> tuple[Dimensioned, dict]:
        """One of FIGURES as export writes it, with the paper style it is written in: (figure, style for
        figures.save). ValueError where the run has no such figure."""
        import holoviews as hv

        from workbench.figures import layout_inches

        if name not in FIGURES:
            raise ValueError(f"unknown figure {name!r}: one of {', '.join(FIGURES)}")
        fig = self.figure(name, points=None)  # a paper's: every row of its lines
        if isinstance(fig, hv.Div):
            raise ValueError(f"run {self.run_id} has no {name!r} figure ({fig.data.strip('<i>/ ')})")
        return fig, {"fig_inches": layout_inches(fig)}

    def export(self, name: str, out_dir: str | Path, suffix: str = ".png", width: float | None = None,
               font: str | None = None, rename: dict[str, str] | None = None) -> Path:
        """Write one figure for a paper (PNG/SVG/PDF via matplotlib, or standalone HTML) at figures.save's width
        (inches), font and legend names (rename)."""
        from workbench.figures import export_suffix, save

        suffix = export_suffix(suffix)
        fig, style = self.paper_figure(name)
        out = Path(out_dir) / f"{self.run_id}-{name}{suffix}"
        out.parent.mkdir(parents=True, exist_ok=True)
        return save(fig, out, style=style, width=width, font=font, rename=rename)

    def export_tab(self, out_dir: str | Path, suffix: str = ".png", width: float | None = None,
                   font: str | None = None, rename: dict[str, str] | None = None) -> Path:
        """Write the current tab (what the page shows) as one figure: RUN-<tab>.<suffix>, at figures.save's
        width (inches), font and legend names (rename)."""
        import holoviews as hv

        from workbench.figures import export_suffix, layout_inches, save

        suffix = export_suffix(suffix)
        fig = self.tab_figure(points=None)  # a paper's: every row of its lines
        if isinstance(fig, hv.Div):
            raise ValueError(f"run {self.run_id} has nothing to show under {self.tab!r}")
        slug = "-".join("".join(c if c.isalnum() else " " for c in self.tab.lower()).split())
        out = Path(out_dir) / f"{self.run_id}-{slug}{suffix}"
        out.parent.mkdir(parents=True, exist_ok=True)
        return save(fig, out, style={"fig_inches": layout_inches(fig)}, width=width, font=font, rename=rename)


def merge_page(runs_dir: str = "runs", run: str | None = None,
               standalone: bool = False) -> pn.template.FastListTemplate:
    """The /merge page over the store `runs_dir`, on run `run` (default: the newest merge run): the recipe, its
    fitness and scores, export. standalone: a page of its own, without the links to the others."""
    from workbench.dashboards.shell import (
        WRAPPED_TABS,
        address,
        address_at_load,
        as_text,
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
    from workbench.figures import holoviews

    holoviews()
    model = MergeModel(runs_dir=runs_dir)
    alert = run_alert(model, run)
    if model.run_id is None:
        return no_runs_page("merge", alert, f"No merge run in {runs_dir} yet: `workbench merge evolve --zoo … "
                                            f"--runs {shell_path(runs_dir)}` makes one.", standalone=standalone)
    picker = pn.widgets.Select(label="Run", options=list(model.param.run_id.objects), value=model.run_id,
                               sizing_mode="stretch_width")
    refresh = pn.widgets.Button(label="refresh", sizing_mode="stretch_width")
    fmt, size, export, status, download = export_controls(
        lambda suffix, **printed: model.export_tab(Path(runs_dir) / model.run_id / "figures", suffix, **printed))
    header = pn.pane.Markdown(as_text(model.summary()), sizing_mode="stretch_width", margin=(0, 10))
    tabs = pn.Tabs(sizing_mode="stretch_width", dynamic=True, stylesheets=[WRAPPED_TABS])
    # a run in its first iteration (or killed there) has no figure yet: a note, not tabs (none to make active)
    nothing = pn.pane.Markdown("", margin=(0, 10), visible=False)
    what = pn.pane.Markdown("", margin=(0, 10))

    building = [False]  # replacing the tabs moves `active`; that is not the user picking a tab

    def build_tabs() -> None:
        # built on the event loop from the figures the worker thread made
        names, wanted = model.tabs(), model.tab
        building[0] = True
        try:
            # one plot per figure (a tab's Layout in one Bokeh grid squashes a heatmap next to a curve)
            tabs[:] = [(t, pn.FlexBox(*[scrolls(pn.pane.HoloViews(model.figure(n), backend="bokeh"))
                                        for n in TABS[t] if model.has(n)])) for t in names]
            if names:
                tabs.active = names.index(wanted) if wanted in names else 0
            tabs.visible, nothing.visible = bool(names), not names
            nothing.object = "" if names else as_text(model.no_figures())
        finally:
            building[0] = False
        header.object = as_text(model.summary())
        what.object = f"Export writes the tab on show: **{model.tab}**."

    def on_tab(event):
        names = model.tabs()
        if not building[0] and 0 <= event.new < len(names):
            model.tab = names[event.new]
            what.object = f"Export writes the tab on show: **{model.tab}**."

    def load() -> None:
        for t in model.tabs():
            model.tab_figure(t)  # reads the run's files and makes its figures, off the event loop

    async def on_pick(event):
        if event.new == model.run_id:  # the menu put back to the run on show
            return
        shown = model.run_id

        def pick() -> None:
            try:
                model.run_id = event.new
                load()
            except ValueError:  # a run that cannot be read (removed since the menu was made): the last one stays
                model.run_id = shown
                raise

        try:
            await off_loop(pick, busy=[tabs, picker])
        except ValueError as exc:
            # the tabs stayed the last run's while run_id named the one refused: every tab click was a traceback
            alert.param.update(object=plain(str(exc)), visible=True)
            put_back(picker, lambda: model.run_id)
            return
        alert.visible = False
        status.object = ""  # the last run's export (and its download) is not this one's
        address(location, run=model.run_id)  # a reload or a bookmark comes back to it
        build_tabs()

    async def on_refresh(event):
        await off_loop(lambda: (model.refresh(), load()), busy=[tabs, refresh])
        picker.options = list(model.param.run_id.objects)
        picker.value = model.run_id
        show_passed_over(alert, model)  # a refusal before is not this read's; the runs it passed over are
        address(location, run=model.run_id)
        build_tabs()

    picker.param.watch(on_pick, "value")
    refresh.on_click(on_refresh)
    tabs.param.watch(on_tab, "active")
    location = served_location()
    address_at_load(location, model)
    build_tabs()
    sidebar = [section("Run"), picker, refresh, section("Export for a paper"), what, fmt, size, export, status,
               download]
    return shell("merge", [alert, header, nothing, tabs], sidebar, standalone=standalone)


if __name__.startswith("bokeh"):
    pn.extension(inline=True, notifications=True)  # Notyf: shell.connection_notice
    merge_page(sys.argv[1] if len(sys.argv) > 1 else "runs", standalone=True).servable()  # titled by the shell
