"""Runs: the DuckDB catalog of a run store as a sortable table, and two runs' loss curves compared.

`RunsModel` holds the folder and the selection; `panel serve dashboards/runs.py --args RUNS_DIR` or
`workbench serve --runs RUNS_DIR` shows it.
"""

from __future__ import annotations

import sys

import pandas as pd
import panel as pn
import param

from workbench.runs import RunStore

COLUMNS = ["id", "kind", "substrate", "fm", "status", "iterations", "best_loss", "created"]


class RunsModel(param.Parameterized):
    runs_dir = param.String(default="runs")
    selected = param.List(default=[], doc="ids of the runs to compare (at most two are drawn)")

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(RunStore(self.runs_dir).list(), columns=COLUMNS)

    def link(self, run_id: str) -> str:
        """Markdown link to the page that opens a run: the merge explorer for merge runs, else the Lab."""
        kind = RunStore(self.runs_dir).open(run_id).info.get("kind")
        if kind == "merge":
            return f"[open `{run_id}` in the merge explorer](./merge?run={run_id})"
        return f"[open `{run_id}` in the Lab](./lab?run={run_id})"

    def curves(self) -> pd.DataFrame:
        """Best loss by iteration of the selected runs (long format: run_id, iteration, best_loss)."""
        store = RunStore(self.runs_dir)
        rows = [m for run_id in self.selected[:2] for m in store.metrics(run_id)]
        return pd.DataFrame(rows, columns=["run_id", "iteration", "best_loss"]) if rows else \
            pd.DataFrame(columns=["run_id", "iteration", "best_loss"])


def curves_plot(model: RunsModel):
    import holoviews as hv

    hv.extension("bokeh", logo=False)
    df = model.curves()
    if df.empty:
        return pn.pane.Markdown("Select two runs in the table to compare their loss curves.")
    overlay = hv.Overlay([hv.Curve(g, "iteration", "best_loss", label=str(k)) for k, g in df.groupby("run_id")])
    return pn.pane.HoloViews(overlay.opts(width=640, height=320, legend_position="bottom"))


def runs_page(runs_dir: str = "runs") -> pn.viewable.Viewable:
    model = RunsModel(runs_dir=runs_dir)
    table = pn.widgets.Tabulator(model.table(), selectable="checkbox", disabled=True, pagination="local",
                                 page_size=20, sizing_mode="stretch_width", show_index=False)

    def on_select(event):
        model.selected = [table.value.iloc[i]["id"] for i in event.new]

    table.param.watch(on_select, "selection")
    refresh = pn.widgets.Button(name="refresh")
    refresh.on_click(lambda e: setattr(table, "value", model.table()))
    curves = pn.bind(lambda _: curves_plot(model), model.param.selected)
    links = pn.bind(lambda ids: pn.pane.Markdown(" · ".join(model.link(i) for i in ids)), model.param.selected)
    return pn.Column(f"## Runs in `{runs_dir}`", refresh, table, links, curves)


if __name__.startswith("bokeh"):
    pn.extension("tabulator", inline=True)
    runs_page(sys.argv[1] if len(sys.argv) > 1 else "runs").servable(title="workbench · runs")
