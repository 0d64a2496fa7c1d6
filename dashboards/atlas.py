"""Atlas: an illumination run's population laid out by its embeddings and snapped to a thumbnail grid.

Pick a run and a projection (PCA, t-SNE, UMAP); hover a cell for its index and θ summary; click it
to play that simulation; export the atlas as a high-resolution PNG. `AtlasModel` does the work.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import panel as pn
import param

from workbench.asal.atlas import PROJECTIONS, compose, project, snap_to_grid
from workbench.atomic import write_png
from workbench.runs import RunStore


class AtlasModel(param.Parameterized):
    runs_dir = param.String(default="runs")
    run_id = param.Selector(default=None, objects=[])
    projection = param.Selector(default="pca", objects=list(PROJECTIONS))
    seed = param.Integer(default=0, bounds=(0, None))
    selected = param.Integer(default=-1, doc="population index of the clicked cell (-1: none)")

    def __init__(self, **params):
        super().__init__(**params)
        self.refresh_runs()
        self.image = np.zeros((8, 8, 3), np.uint8)
        self.cells = np.zeros(0, int)
        self.side = 1
        self.thetas = np.zeros((0, 0))
        self.substrate = None
        self.layout()

    def refresh_runs(self) -> None:
        runs = [r["id"] for r in RunStore(self.runs_dir).list() if r["kind"] == "illuminate" and r["status"] == "done"]
        self.param.run_id.objects = runs
        if self.run_id not in runs:
            self.run_id = runs[-1] if runs else None

    @param.depends("run_id", "projection", "seed", watch=True)
    def layout(self) -> None:
        """Load the run's population, project, snap to the grid and compose the atlas image."""
        if self.run_id is None:
            return
        run = RunStore(self.runs_dir).open(self.run_id)
        table = run.read_table("population").to_pydict()
        self.thetas = np.asarray(table["theta"], np.float64)
        z = np.asarray(table["embedding"], np.float64)
        thumbs_path = run.path / "thumbs.npy"
        if not thumbs_path.exists():
            raise ValueError(f"run {self.run_id!r} has no thumbs.npy (runs from before the atlas page have none)")
        thumbs = np.load(thumbs_path)
        self.substrate = run.info["config"]["eval"]["substrate"]
        self.side = math.ceil(math.sqrt(len(z)))
        self.cells = snap_to_grid(project(z, self.projection, self.seed), self.side)
        self.thumbs = thumbs
        self.image = compose(thumbs, self.cells, self.side)
        self.selected = -1

    def cell_table(self) -> dict:
        """Per population member: grid position (x, y of the cell centre in [0, 1]) and a θ summary."""
        r, c = np.divmod(self.cells, self.side)
        norms = np.linalg.norm(self.thetas, axis=1) if len(self.thetas) else np.zeros(0)
        return {"x": (c + 0.5) / self.side, "y": 1.0 - (r + 0.5) / self.side,
                "index": np.arange(len(self.cells)), "theta_norm": np.round(norms, 3),
                "run": [self.run_id] * len(self.cells)}

    def export_png(self, path: str | Path, scale: int = 4) -> Path:
        """The atlas at `scale`× its thumbnail resolution (nearest neighbour), written atomically."""
        path = Path(path)
        write_png(path, np.repeat(np.repeat(self.image, scale, axis=0), scale, axis=1))
        return path


def atlas_view(model: AtlasModel):
    from bokeh.models import ColumnDataSource, HoverTool, TapTool
    from bokeh.plotting import figure

    from workbench.dashboards.lab import rgba

    def oriented(img):
        return rgba(img)[::-1].copy()  # the atlas' row 0 is its top row

    image = ColumnDataSource({"image": [oriented(model.image)]})
    cells = ColumnDataSource(model.cell_table())
    fig = figure(width=640, height=640, x_range=(0, 1), y_range=(0, 1), tools="", toolbar_location=None,
                 name="atlas")
    fig.axis.visible = False
    fig.grid.visible = False
    fig.image_rgba(image="image", x=0, y=0, dw=1, dh=1, source=image)
    w = 1.0 / max(model.side, 1)
    rects = fig.rect(x="x", y="y", width=w, height=w, source=cells, fill_alpha=0.0, line_alpha=0.0,
                     selection_line_color="white", selection_line_alpha=1.0, nonselection_line_alpha=0.0)
    fig.add_tools(HoverTool(renderers=[rects], tooltips=[("run", "@run"), ("index", "@index"),
                                                         ("|θ|", "@theta_norm")]), TapTool(renderers=[rects]))

    def on_layout(*_):
        image.data = {"image": [oriented(model.image)]}
        cells.data = model.cell_table()
        rects.glyph.width = rects.glyph.height = 1.0 / max(model.side, 1)

    model.param.watch(on_layout, ["run_id", "projection", "seed"])

    def on_tap(attr, old, new):
        model.selected = int(cells.data["index"][new[0]]) if new else -1

    cells.selected.on_change("indices", on_tap)
    return pn.pane.Bokeh(fig)


def atlas_page(runs_dir: str = "runs") -> pn.viewable.Viewable:
    from workbench.dashboards.lab import LabModel, frame_view

    model = AtlasModel(runs_dir=runs_dir)
    if model.run_id is None:
        return pn.Column("## Atlas", pn.pane.Markdown(f"No finished illumination run in `{runs_dir}` yet: "
                                                      f"`workbench asal illuminate ...` makes one."))
    player = LabModel(substrate=model.substrate)
    playing = pn.pane.Markdown("Click a cell to play its simulation.")

    def on_select(event):
        if event.new < 0:
            return
        if player.substrate != model.substrate:
            player.substrate = model.substrate
        player.set_theta(model.thetas[event.new])
        player.playing = True
        playing.object = f"playing population member **{event.new}** of `{model.run_id}`"

    model.param.watch(on_select, "selected")
    callback = pn.state.add_periodic_callback(player.tick, period=50, start=True)  # noqa: F841
    export = pn.widgets.Button(name="export PNG")
    saved = pn.pane.Markdown("")

    def on_export(event):
        path = model.export_png(Path(runs_dir) / model.run_id / "atlas-export.png")
        saved.object = f"saved `{path}`"

    export.on_click(on_export)
    controls = pn.Param(model, parameters=["run_id", "projection", "seed"], show_name=False)
    return pn.Row(pn.Column("## Atlas", controls, export, saved, playing, frame_view(player), width=540),
                  atlas_view(model))


if __name__.startswith("bokeh"):
    pn.extension(inline=True)
    atlas_page(sys.argv[1] if len(sys.argv) > 1 else "runs").servable(title="workbench · atlas")
