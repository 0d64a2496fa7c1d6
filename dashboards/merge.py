"""Merge explorer: open a stored merge-recipe evolution and look at its recipe, path, fitness and task vectors.

`MergeModel` holds the run folder and the chosen run; the views are functions of it (workbench.merge.views).
`panel serve dashboards/merge.py --args RUNS_DIR` or `workbench serve` (page /merge) shows it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import panel as pn
import param

from workbench.merge import views
from workbench.runs import RunStore

FIGURES = ("recipe", "path", "fitness", "scores", "norms", "cosine", "conflicts")


class MergeModel(param.Parameterized):
    runs_dir = param.String(default="runs")
    run_id = param.Selector(default=None, objects=[], doc="the merge run on show")

    def __init__(self, **params):
        super().__init__(**params)
        self._loaded: views.MergeRun | None = None  # the run's files, read once per run shown
        self.refresh()

    def refresh(self) -> list[str]:
        """Re-read the catalog (new runs, a running one's progress)."""
        self._loaded = None
        ids = [r["id"] for r in views.merge_runs(RunStore(self.runs_dir))]
        self.param.run_id.objects = ids
        if self.run_id not in ids:
            self.run_id = ids[0] if ids else None
        return ids

    def data(self) -> views.MergeRun | None:
        """The shown run's tables and recipe; every figure and the summary share one read of its folder."""
        if self.run_id is None:
            return None
        if self._loaded is None or self._loaded.run.id != self.run_id:
            self._loaded = views.MergeRun.open(RunStore(self.runs_dir), self.run_id)
        return self._loaded

    def figure(self, name: str):
        """One of FIGURES as a HoloViews object (for the page and for export)."""
        d = self.data()
        if d is None:
            return views._hv().Div("<i>no merge run in this folder yet: run `workbench merge evolve`</i>")
        return {"recipe": lambda: views.recipe_heatmaps(d.recipe_table()), "path": lambda: views.dfs_path_plot(d.dfs),
                "fitness": lambda: views.fitness_plot(d.metrics), "scores": lambda: views.scores_plot(d.scores),
                "norms": lambda: views.norms_plot(d.analysis), "cosine": lambda: views.cosine_plot(d.analysis),
                "conflicts": lambda: views.conflict_plot(d.analysis)}[name]()

    def summary(self) -> str:
        d = self.data()
        if d is None:
            return "No merge runs yet."
        cfg = d.info["config"]
        fit = "–" if d.info.get("best_loss") is None else f"{-d.info['best_loss']:.3f}"
        return (f"**{d.info['id']}** · method `{cfg['method']}` · models {', '.join(cfg['models'])} · tasks "
                f"{', '.join(cfg['tasks'])} · {d.info['status']}, {d.info['iterations']}/{cfg['iters']} iterations · "
                f"best validation fitness {fit}")

    def export(self, name: str, out_dir: str | Path, suffix: str = ".png") -> Path:
        """Write one figure for a paper (PNG/SVG/PDF via matplotlib, or standalone HTML)."""
        import holoviews as hv

        from workbench.figures import save

        fig = self.figure(name)
        if isinstance(fig, hv.Div):
            raise ValueError(f"run {self.run_id} has no {name!r} figure ({fig.data.strip('<i>/ ')})")
        out = Path(out_dir) / f"{self.run_id}-{name}{suffix}"
        out.parent.mkdir(parents=True, exist_ok=True)
        return save(fig, out)


def merge_page(runs_dir: str = "runs", run: str | None = None) -> pn.viewable.Viewable:
    import holoviews as hv

    hv.extension("bokeh", logo=False)
    model = MergeModel(runs_dir=runs_dir)
    arg = run or (pn.state.session_args.get("run", [b""])[0].decode() if pn.state.session_args else None)
    if arg and arg in model.param.run_id.objects:
        model.run_id = arg
    picker = pn.widgets.Select.from_param(model.param.run_id, name="run")
    refresh = pn.widgets.Button(name="refresh")
    refresh.on_click(lambda e: model.refresh())
    which = pn.widgets.Select(name="export figure", options=list(FIGURES), value="recipe")
    fmt = pn.widgets.Select(name="format", options=[".png", ".svg", ".pdf", ".html"], value=".png")
    export = pn.widgets.Button(name="export", button_type="primary")
    status = pn.pane.Markdown("")

    def on_export(event):
        try:
            path = model.export(which.value, Path(runs_dir) / model.run_id / "figures", fmt.value)
            status.object = f"written `{path}`"
        except ValueError as exc:
            status.object = f"**cannot export:** {exc}"

    export.on_click(on_export)

    def show(name):
        return pn.bind(lambda _: pn.pane.HoloViews(model.figure(name), backend="bokeh"), model.param.run_id)

    tabs = pn.Tabs(("Recipe", show("recipe")), ("DFS path", show("path")), ("Fitness", show("fitness")),
                   ("Scores", show("scores")), ("Task vectors", pn.Column(show("norms"), show("cosine"))),
                   ("TIES / DARE", show("conflicts")), dynamic=True)
    header = pn.bind(lambda _: pn.pane.Markdown(model.summary()), model.param.run_id)
    return pn.Column("## Merge recipes", pn.Row(picker, refresh, which, fmt, export), status, header, tabs)


if __name__.startswith("bokeh"):
    pn.extension(inline=True)
    merge_page(sys.argv[1] if len(sys.argv) > 1 else "runs").servable(title="workbench · merge")
