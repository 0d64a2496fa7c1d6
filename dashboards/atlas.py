"""Atlas: an illumination run's population laid out by its embeddings and snapped to a thumbnail grid.

Any substrate's run (its thumbnails come with it). Pick a run and a projection (PCA, t-SNE, UMAP); hover a cell
for its index and θ summary (|θ|; Game of Life: the rule in B/S notation); click it (or type its index in the
sidebar's Member field, the keyboard's way) to play that simulation; export the atlas as a high-resolution PNG.
`AtlasModel` does the work.
"""

from __future__ import annotations

import math
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np
import panel as pn
import param

from workbench.asal.atlas import PROJECTIONS, compose, project, snap_to_grid
from workbench.atomic import fresh_paths, write_png
from workbench.runs import RunError, RunStore, config_of

#: the player's frame before a cell is clicked: a light grey, as the pages' placeholders (black read as a frame)
BLANK = 240


class AtlasModel(param.Parameterized):
    """The Atlas page's state: a finished illumination run's population laid out on a grid by a 2-D projection of
    its embeddings, and the member clicked. A notebook drives it and shows it with atlas_view(model).

        model = AtlasModel(runs_dir="runs")            # the newest finished illumination run
        model.projection = "umap"                      # another layout
        model.selected = 12                            # member 12 on show (its cell outlined)
        model.pick([12])                               # the same, as a click on its cell does"""

    runs_dir = param.String(default="runs", doc="the run store")
    run_id = param.Selector(default=None, objects=[], doc="the illumination run on show")
    projection = param.Selector(default="pca", objects=list(PROJECTIONS), doc="the 2-D layout of the embeddings")
    seed = param.Integer(default=0, bounds=(0, 2 ** 32 - 1),  # NumPy's seeds (the run configs check it too)
                         doc="seeds the projection (UMAP's; PCA and t-SNE, which starts from PCA, have none)")
    # bounds: the population laid out (layout sets them), so a number typed past it is refused, not an IndexError
    selected = param.Integer(default=-1, bounds=(-1, -1),
                             doc="population index of the member on show, its cell clicked or its index typed "
                                 "(-1: none)")
    message = param.String(default="", doc="why the chosen run cannot be laid out, if it cannot")
    revision = param.Integer(default=0, doc="counts layouts: views redraw when it changes")

    def __init__(self, **params: Any):
        super().__init__(**params)
        self.image = np.zeros((8, 8, 3), np.uint8)
        self.cells = np.zeros(0, int)
        self.side = 1
        self.thetas = np.zeros((0, 0))
        self.seeds: np.ndarray | None = None
        self.thumbs = np.zeros((0, 8, 8, 3), np.uint8)
        self.substrate = None
        self._laid_out: str | None = None  # the run of the layout on show
        self.skipped: list[str] = []  # illuminations the catalog left out, and why (the page's alert says them)
        try:
            self.refresh_runs()  # picking a run lays it out (the watcher); a run given by name is laid out here
            if self.revision == 0:
                self.layout()
        except ValueError as exc:  # a run without thumbnails: the page says so instead of failing to open
            self.message = str(exc)

    def refresh_runs(self) -> None:
        """Re-read the store's finished illumination runs into run_id's choices (oldest first); a run chosen that is
        not among them gives way to the newest (None: there is none)."""
        store = RunStore(self.runs_dir)
        runs = [r["id"] for r in store.list() if r["kind"] == "illuminate" and r["status"] == "done"]
        # those the catalog left out (a run.json field of another type) are passed over: said, with why and the fix
        # (they dropped out of the menu without a word)
        self.skipped = store.passed_over(["illuminate"])
        self.param.run_id.objects = runs
        if self.run_id not in runs:
            self.run_id = runs[-1] if runs else None

    def choose(self, run_id: str) -> None:
        """Show run `run_id` (the page's ?run=ID); ValueError if it is not a finished illumination run here."""
        if run_id not in self.param.run_id.objects:
            store = RunStore(self.runs_dir)
            store.list()
            if run_id in store.unreadable_why:  # a run the catalog left out: why, and the fix (not "not a … run")
                raise ValueError(f"run {run_id}: {store.unreadable_why[run_id]}")
            listed = ", ".join(o for o in self.param.run_id.objects[-3:] if o) or "none yet"  # (None: no run)
            raise ValueError(f"{run_id!r} is not a finished illumination run in {self.runs_dir} (some that are: "
                             f"{listed})")
        self.run_id = run_id

    def member_seed(self, i: int) -> int | None:
        """The initial-state seed of member i's thumbnail (None where the run did not keep it)."""
        if self.seeds is None or self.seeds[i] < 0:
            return None
        return int(self.seeds[i])

    @param.depends("run_id", "projection", "seed", watch=True)
    def layout(self) -> None:
        """Load the run's population, project, snap to the grid and compose the atlas image (t-SNE and UMAP
        take seconds: the page calls this on a worker thread)."""
        self.message = ""
        if self.run_id is None:
            return
        try:
            run = RunStore(self.runs_dir).open(self.run_id)
            # the substrate the player takes (a run.json edited by hand without it made the page a traceback)
            ev = config_of(run.info, "eval")["eval"]
            if not isinstance(ev, dict) or not isinstance(ev.get("substrate"), str):
                raise RunError(f"run {run.id}'s run.json lacks its config's eval.substrate: it is damaged")
            if not (run.path / "thumbs.npy").exists():
                raise ValueError(f"run {self.run_id!r} has no thumbs.npy (runs from before the atlas page have none)")
            from workbench.asal.driver import read_population

            table, thumbs = read_population(run)  # from one write
            thetas = np.asarray(table["theta"], np.float64)
            # each member's initial-state seed (its thumbnail's; −1 or absent in runs made before seeds were kept)
            seeds = np.asarray(table["seed"], np.int64) if "seed" in table else None
            z = np.asarray(table["embedding"], np.float64)
            side = math.ceil(math.sqrt(len(z)))
            cells = snap_to_grid(project(z, self.projection, self.seed), side)
        except ValueError:
            # a run refused leaves the layout on show whole, its run chosen again: the population of the refused
            # run beside the old one's picture exported that picture into the refused run's folder
            if self._laid_out in self.param.run_id.objects and self._laid_out != self.run_id:
                with param.discard_events(self):
                    self.run_id = self._laid_out
            raise
        # every field at once, after the slow part: a reader never sees cells of one layout with another's side
        self.substrate = ev["substrate"]
        self.thetas, self.seeds = thetas, seeds
        self.side, self.cells, self.thumbs = side, cells, thumbs
        self.image = compose(thumbs, cells, side)
        self.param.selected.bounds = (-1, len(cells) - 1)
        # the member played stays picked in another projection of its run (its cell outlined where it lies now);
        # another run has other members
        if self._laid_out != self.run_id:
            self.selected = -1
        self._laid_out = self.run_id
        self.revision += 1

    def pick(self, rows: list[int]) -> int:
        """A click on the atlas: `rows`, the cells Bokeh selected (cell_table's rows, one per member in member order),
        puts that member on show; none (a click beside every cell) puts it away. Returns `selected`. The Member
        field, the keyboard's way, sets `selected` itself: its bounds refuse a member the run has not got."""
        self.selected = int(rows[0]) if len(rows) and 0 <= rows[0] < len(self.cells) else -1
        return self.selected

    def cell_table(self) -> dict:
        """Per population member: grid position (x, y of the cell centre in [0, 1]) and a θ summary (|θ|, and as
        text: |θ| or, for Game of Life, whose θ is one integer rule, the rule as B/S)."""
        from workbench.viewer import rule_text

        r, c = np.divmod(self.cells, self.side)
        norms = np.linalg.norm(self.thetas, axis=1) if len(self.thetas) else np.zeros(0)
        if self.substrate == "gol":
            summary = [f"rule {rule_text(int(t[0]))} = {int(t[0])}" for t in self.thetas]
        else:
            summary = [f"|θ| {n:.3f}" for n in norms]
        return {"x": (c + 0.5) / self.side, "y": 1.0 - (r + 0.5) / self.side,
                "index": np.arange(len(self.cells)), "theta_norm": np.round(norms, 3), "theta": summary,
                "run": [self.run_id] * len(self.cells)}

    def export_png(self, path: str | Path, scale: int = 4) -> Path:
        """The atlas at `scale`× its thumbnail resolution (nearest neighbour), written atomically, at a paper
        figure's 300 dpi (a 224 px atlas at 4×: 3 in, a column)."""
        from workbench.figures import PAPER_STYLE

        path = Path(path)
        write_png(path, np.repeat(np.repeat(self.image, scale, axis=0), scale, axis=1), dpi=PAPER_STYLE["dpi"])
        return path


def set_cell_size(rects, w: float) -> None:
    """The atlas' cell outlines `w` wide and high (another run's grid). Each state's glyph is a copy of its own:
    setting the plain one only left the clicked and hovered outlines at the old run's cell size."""
    for glyph in (rects.glyph, rects.selection_glyph, rects.nonselection_glyph, rects.hover_glyph,
                  rects.muted_glyph):
        if hasattr(glyph, "width"):
            glyph.width = glyph.height = w


def atlas_view(model: AtlasModel, size: int = 560) -> pn.pane.Bokeh:
    """The atlas as a Bokeh image with one invisible cell per population member (hover: run, index, |θ|;
    click: model.selected). Follows the model (another run, another layout): on a served page by changing its
    sources, safely from a worker thread; unserved (a notebook) with a new figure, since changes of a shown
    figure's raw Bokeh models never reach a notebook's view (the atlas stayed the old run's and clicks on it
    selected members of the new one)."""
    from bokeh.models import ColumnDataSource, HoverTool, TapTool
    from bokeh.plotting import figure

    from workbench.dashboards.lab import rgba
    from workbench.dashboards.shell import PageThread

    def oriented(img):
        return rgba(img)[::-1].copy()  # the atlas' row 0 is its top row

    shown: dict = {}  # the sources and cells of the figure on show

    def on_tap(attr, old, new):
        model.pick(new)

    def outline(*_):
        """The picked member's cell outlined however it was picked (a click selects it in Bokeh; the Member field
        did not: its member played with another cell, or none, outlined)."""
        wanted = [model.selected] if model.selected >= 0 else []
        if shown["cells"].selected.indices != wanted:  # a click's own selection: already so
            shown["cells"].selected.indices = wanted

    def build():
        image = ColumnDataSource({"image": [oriented(model.image)]})
        cells = ColumnDataSource(model.cell_table())
        fig = figure(width=size, height=size, x_range=(0, 1), y_range=(0, 1), tools="", toolbar_location=None,
                     name="atlas", min_border=0, outline_line_color=None,
                     html_attributes={"aria-label": "the population's atlas: a cell plays its member"})
        fig.axis.visible = False
        fig.grid.visible = False
        fig.image_rgba(image="image", x=0, y=0, dw=1, dh=1, source=image)
        w = 1.0 / max(model.side, 1)
        # faint cell borders show the grid; the clicked cell gets a strong one, the hovered one a yellow one
        rects = fig.rect(x="x", y="y", width=w, height=w, source=cells, fill_alpha=0.0, line_color="#7f8c9d",
                         line_alpha=0.35, selection_line_color="#2f5d8a", selection_line_alpha=1.0,
                         selection_line_width=3, nonselection_line_color="#7f8c9d", nonselection_line_alpha=0.35,
                         hover_line_color="#f9a825", hover_line_alpha=1.0, hover_line_width=3)
        fig.add_tools(HoverTool(renderers=[rects], tooltips=[("run", "@run"), ("index", "@index"), ("θ", "@theta")]),
                      TapTool(renderers=[rects]))
        cells.selected.on_change("indices", on_tap)
        shown.update(image=image, cells=cells, rects=rects)
        return fig

    pane = pn.pane.Bokeh(build(), margin=0)
    page = PageThread()
    served = page.doc is not None and page.doc.session_context is not None

    def on_layout(*_):
        if not served:
            pane.object = build()
            return
        shown["image"].data = {"image": [oriented(model.image)]}
        shown["cells"].data = model.cell_table()
        # the outline follows the member picked (none: another run); Bokeh kept the last rows selected, and a
        # click on a row still selected changes nothing (the member was not played again)
        shown["cells"].selected.indices = [model.selected] if model.selected >= 0 else []
        set_cell_size(shown["rects"], 1.0 / max(model.side, 1))

    model.param.watch(page.wrap(on_layout), "revision")
    model.param.watch(page.wrap(outline), "selected")
    return pane


def member_field(model: AtlasModel) -> tuple[pn.widgets.IntInput, pn.pane.Markdown]:
    """The keyboard's way to a cell (a click is the mouse's only): a number field for the member on show, two ways
    with `selected` (a click on a cell shows its index here), and the live line that says a number refused (past
    the run's population: the model's bounds) and what the atlas keeps."""
    from workbench.dashboards.shell import checked_int_input, live, plain

    said = live(pn.pane.Markdown("", sizing_mode="stretch_width", margin=(0, 10)))
    field = checked_int_input(model, "selected", lambda why: setattr(said, "object", plain(why)),
                              label="Member to play", sizing_mode="stretch_width",
                              description="population index of the member to play, as a cell's hover says it "
                                          "(-1: none); Enter plays it")
    return field, said


def atlas_page(runs_dir: str = "runs", standalone: bool = False) -> pn.template.FastListTemplate:
    """The /atlas page over the store `runs_dir`: an illumination run's population on a grid, the member clicked
    played live. standalone: a page of its own (`panel serve dashboards/atlas.py`), without the links to the others."""
    from workbench.dashboards.lab import LabModel, frame_view
    from workbench.dashboards.shell import (
        FITS_WHEN_NARROW,
        address,
        address_at_load,
        as_text,
        cannot_write,
        code,
        download_button,
        live,
        no_runs_page,
        off_loop,
        offer,
        plain,
        put_back,
        run_asked,
        run_while,
        scrolls,
        section,
        served_location,
        shell,
        show_passed_over,
    )

    model = AtlasModel(runs_dir=runs_dir)
    location = served_location()
    wanted = run_asked(pn.state.session_args, runs_dir) if pn.state.curdoc else None
    alert = pn.pane.Alert("", alert_type="danger", visible=False, sizing_mode="stretch_width", margin=(0, 10))

    def show_message(*_):
        show_passed_over(alert, model, first=model.message)  # why a run asked for cannot be shown comes first

    model.param.watch(show_message, "message")
    if wanted:
        try:
            model.choose(wanted)
        except ValueError as exc:
            model.message = str(exc)
    show_message()
    if model.run_id is None:  # a sidebar that says what to do, as the other explorers' (it had none)
        return no_runs_page("atlas", alert, f"No finished illumination run in {runs_dir} yet: start one on the "
                            f"Search page (kind illuminate) or with `workbench asal illuminate …`.",
                            standalone=standalone)
    player = LabModel(substrate=model.substrate or "lenia")
    if player.frame is not None:  # blank until a cell is clicked, as after another run is laid out (it showed θ = 0's
        player.frame = np.full_like(player.frame, BLANK)  # frame under "click a cell to play")
    playing = pn.pane.Markdown("Click a cell of the atlas to play its simulation here.")
    member, member_said = member_field(model)
    shown_player = pn.Column(frame_view(player, size=300), margin=0)  # carries the busy spinner while it loads
    plot = scrolls(atlas_view(model))  # the Column carries the busy spinner (not a Bokeh pane's job)

    async def on_select(event):
        if event.new < 0:  # another run laid out: its members are others
            player.playing = False
            if player.frame is not None:  # the last run's member left the player (beside another run's atlas)
                player.frame = np.full_like(player.frame, BLANK)
            playing.object = "Click a cell of the atlas to play its simulation here."
            return
        member, request = event.new, player.request_switch()

        def load() -> bool:  # another run's substrate compiles its kernels: on a worker thread, as the Lab's menu
            if player.substrate != model.substrate and not player.switch(model.substrate, request):
                return False  # a later click overtook this one
            player.set_theta(model.thetas[member], seed=model.member_seed(member))
            return True

        if not await off_loop(load, busy=[shown_player]) or model.selected != member:
            return
        player.playing = True
        link = f"./lab?run={urllib.parse.quote(str(model.run_id), safe='')}&member={member}"
        playing.object = as_text(f"playing population member **{member}** of {code(model.run_id)} · "
                                  f"[open it in the Lab]({link}) (edit, score, snapshot)")

    model.param.watch(on_select, "selected")
    # ticks while a member plays (it ticked every 50 ms in every session, for nothing until a cell was clicked)
    ticks = pn.state.add_periodic_callback(player.tick, period=50, start=False)
    player.param.watch(run_while(ticks), "playing")

    # the sidebar's widgets are not linked to the model directly: a change lays the atlas out on a worker
    # thread (t-SNE / UMAP take seconds), so the server's event loop stays free for every other session
    run = pn.widgets.Select(label="Run", options=list(model.param.run_id.objects), value=model.run_id,
                            sizing_mode="stretch_width")
    projection = pn.widgets.RadioButtonGroup(label="Projection", options={"PCA": "pca", "t-SNE": "tsne",
                                                                          "UMAP": "umap"},
                                             value=model.projection, color="primary", variant="outline",
                                             sizing_mode="stretch_width")
    # no start/end: Bokeh's input would send the bound and keep showing the number typed (shell.checked_int_input)
    seed = pn.widgets.IntInput(label="Seed", value=model.seed, sizing_mode="stretch_width",
                               description="draws UMAP's layout (PCA has no randomness, nor t-SNE, which starts "
                                           "from PCA's layout)")
    widgets = {"run_id": run, "projection": projection, "seed": seed}

    def seed_for_projection(*_):  # under PCA and t-SNE a new seed laid the same atlas out again, to no effect
        seed.disabled = model.projection != "umap"

    seed_for_projection()
    model.param.watch(seed_for_projection, "projection")

    refused = [False]  # a refusal is on show: the next layout taken clears it

    async def relayout(event):
        name = next(k for k, w in widgets.items() if w is event.obj)
        if event.new == getattr(model, name):  # the field put back after a refusal: nothing to lay out
            return
        try:
            await off_loop(lambda: model.param.update(**{name: event.new}), busy=[plot, *widgets.values()])
        except ValueError as exc:
            # param's own words name the class ("Integer parameter 'AtlasModel.seed' must be at least 0")
            low, high = model.param.seed.bounds
            model.message = (f"Seed must be a whole number from {low} to {high}, got {event.new}; the atlas "
                             f"keeps seed {model.seed}" if name == "seed" else str(exc))
            refused[0] = True
            put_back(event.obj, lambda: getattr(model, name))  # the field shows what the atlas still uses
        else:
            if refused[0]:
                model.message, refused[0] = "", False
            if name == "run_id":  # the address follows the run on show: a reload comes back to it
                address(location, run=model.run_id)
                saved.object, download.visible = "", False  # the last run's export is not this one's

    for w in widgets.values():
        w.param.watch(relayout, "value")
    refresh = pn.widgets.Button(label="refresh the runs", sizing_mode="stretch_width")

    async def on_refresh(event):
        """Runs finished since the page opened join the menu; a run removed since leaves it (the atlas on show
        then lays out the newest run, off the event loop)."""
        await off_loop(model.refresh_runs, busy=[plot, refresh])
        run.param.update(options=list(model.param.run_id.objects), value=model.run_id)
        show_message()  # the runs passed over as the store now holds them
        address(location, run=model.run_id)  # a run removed since gave way to another: the address says which

    refresh.on_click(on_refresh)
    address_at_load(location, model)
    export = pn.widgets.Button(label="export PNG", color="primary", sizing_mode="stretch_width")
    saved = live(pn.pane.Markdown("", sizing_mode="stretch_width"))
    download = download_button()

    def on_export(event):
        [png] = fresh_paths(Path(runs_dir) / model.run_id / f"atlas-{model.projection}", (".png",))  # keeps others
        try:
            path = model.export_png(png)
        except OSError as exc:  # a run served read-only: said here (it was a traceback in the server's log alone)
            if (refused := cannot_write(exc)) is None:
                raise
            saved.object = f"**cannot export:** {plain(refused)}"
            download.visible = False  # the last export's file is not this one
            return
        saved.object = as_text(f"saved {code(path)} (4× the thumbnails' resolution)")
        offer(download, path)

    export.on_click(on_export)
    sidebar = [section("Run"), run, refresh, section("Layout"), pn.pane.Markdown("Projection", margin=(0, 10)),
               projection, seed, section("Play"), member, member_said, section("Export"), export, saved, download]
    # the player beside the atlas in a 1280 px window (with 20 px each side it wrapped below, out of sight)
    # 16 px between them as a gap: wrapped below the atlas (a narrow window), the player has no margin to the left;
    # its text as wide as the player (its 300 px and the text's margins) and no wider than a narrow window
    main = [alert, pn.FlexBox(plot, pn.Column(pn.pane.Markdown("**Player**"), scrolls(shown_player), playing,
                                              width=320, margin=0, stylesheets=[FITS_WHEN_NARROW]), gap="0 16px")]
    return shell("atlas", main, sidebar, standalone=standalone)


if __name__.startswith("bokeh"):
    pn.extension(inline=True, notifications=True)  # Notyf: shell.connection_notice
    atlas_page(sys.argv[1] if len(sys.argv) > 1 else "runs", standalone=True).servable()  # titled by the shell
