"""Paper exports: PNG / SVG / PDF through matplotlib, standalone HTML with inline resources, videos."""

import numpy as np
import pytest
from PIL import Image

from workbench.asal.driver import SearchConfig, run_search
from workbench.asal.evaluate import EvalConfig
from workbench.cli import main
from workbench.figures import COLUMN_WIDTH
from workbench.runs import RunStore


@pytest.fixture
def before_save(monkeypatch):
    """A list of look(fig, fmt, renderer) callables, each called with every matplotlib figure figures.save
    writes, drawn, just before it is written (to measure where its legends went)."""
    import matplotlib.pyplot as plt

    looks, savefig = [], plt.Figure.savefig

    def spy(fig, *args, **kwargs):
        fig.draw_without_rendering()
        for look in looks:
            look(fig, kwargs.get("format"), fig._get_renderer())
        return savefig(fig, *args, **kwargs)

    monkeypatch.setattr(plt.Figure, "savefig", spy)
    return looks


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    store = RunStore(tmp_path_factory.mktemp("runs"))
    for seed in (0, 1):
        run_search(SearchConfig(kind="openended", eval=EvalConfig("boids", "pixels", steps=10, frames=2),
                                iters=3, pop=4, seed=seed), store)
    run_search(SearchConfig(kind="illuminate", eval=EvalConfig("boids", "pixels", steps=10), iters=2,
                            pop=4, population=9), store)
    return store


def test_figures_from_the_cli(store, tmp_path, capsys):
    runs = store.list()
    cma = [r["id"] for r in runs if r["kind"] == "openended"]
    ill = [r["id"] for r in runs if r["kind"] == "illuminate"][0]
    root = str(store.root)
    assert main(["figure", "curves", *cma, "--out", str(tmp_path / "c.png"), "--runs", root, "--dpi", "200"]) == 0
    png = Image.open(tmp_path / "c.png")
    assert png.size[0] > 400 and np.asarray(png).std() > 0
    inches = png.size[0] / png.info["dpi"][0]
    assert COLUMN_WIDTH - 0.15 < inches <= COLUMN_WIDTH  # a column's width, not wider: a paper would shrink it
    # --width: the same curves across a page (a NeurIPS page: 5.5), the text at its size, not scaled up
    assert main(["figure", "curves", *cma, "--out", str(tmp_path / "w.png"), "--runs", root, "--width", "5.5"]) == 0
    wide = Image.open(tmp_path / "w.png")
    assert 5.2 < wide.size[0] / wide.info["dpi"][0] <= 5.5
    for bad, message in ((["--width", "0.5"], "--width is the figure's width in inches, from 1 to 20"),
                         (["--width", "3", "--out", str(tmp_path / "w.html")], "--width sizes .png, .svg and .pdf")):
        capsys.readouterr()
        out = bad[bad.index("--out") + 1] if "--out" in bad else str(tmp_path / "x.png")
        args = [a for a in bad if a not in ("--out", out)]
        assert main(["figure", "curves", *cma, "--out", out, "--runs", root, *args]) == 2
        assert message in capsys.readouterr().err
    assert main(["figure", "curves", *cma, "--out", str(tmp_path / "c.pdf"), "--runs", root]) == 0
    assert (tmp_path / "c.pdf").read_bytes().startswith(b"%PDF")
    import re as _re

    box = _re.search(rb"/MediaBox \[ ?0 0 ([\d.]+)", (tmp_path / "c.pdf").read_bytes())
    assert COLUMN_WIDTH - 0.15 < float(box.group(1)) / 72 <= COLUMN_WIDTH  # the PDF a column wide too
    assert main(["figure", "curves", *cma, "--out", str(tmp_path / "c.svg"), "--runs", root]) == 0
    assert b"<svg" in (tmp_path / "c.svg").read_bytes()[:2000]
    assert main(["figure", "curves", *cma, "--out", str(tmp_path / "c.html"), "--runs", root]) == 0
    html = (tmp_path / "c.html").read_text()
    assert "cdn.bokeh.org" not in html and "Bokeh" in html  # inline resources: works offline
    from bokeh.core.validation.check import is_silenced  # bokeh < 3.9 exports it from check alone
    from bokeh.core.validation.warnings import FIXED_SIZING_MODE

    assert not is_silenced(FIXED_SIZING_MODE)  # for the export alone: a server's later pages are checked as before
    assert main(["figure", "atlas", ill, "--out", str(tmp_path / "a.png"), "--runs", root]) == 0
    for suffix, magic in ((".pdf", b"%PDF"), (".svg", b"<svg")):
        assert main(["figure", "atlas", ill, "--out", str(tmp_path / f"a{suffix}"), "--runs", root]) == 0
        assert magic in (tmp_path / f"a{suffix}").read_bytes()[:3000]
    import re

    atlas = store.open(ill).read_image("atlas.png")  # embedded at its own pixels repeated, not resampled
    embedded = int(re.search(rb"/Width (\d+)", (tmp_path / "a.pdf").read_bytes()).group(1))
    assert embedded % atlas.shape[1] == 0 and 600 <= embedded <= 1400
    # across a page: blocks for 6.75 in at 300 dpi
    assert main(["figure", "atlas", ill, "--out", str(tmp_path / "wide.pdf"), "--runs", root, "--width", "6.75"]) == 0
    embedded = int(re.search(rb"/Width (\d+)", (tmp_path / "wide.pdf").read_bytes()).group(1))
    assert embedded % atlas.shape[1] == 0 and abs(embedded - 6.75 * 300) <= atlas.shape[1]
    assert main(["figure", "video", cma[0], "--out", str(tmp_path / "v.gif"), "--runs", root, "--size", "64"]) == 0
    assert Image.open(tmp_path / "v.gif").n_frames > 1
    # its frames and pace as render's (a 10-step run made a video of 11 frames in 0.37 s, and no flag changed it)
    assert main(["figure", "video", cma[0], "--out", str(tmp_path / "slow.gif"), "--runs", root, "--size", "32",
                 "--every", "5", "--fps", "4"]) == 0
    slow = Image.open(tmp_path / "slow.gif")
    assert (slow.n_frames, slow.info["duration"]) == (3, 250)  # steps 0, 5, 10, at 4 frames a second
    capsys.readouterr()
    for bad, message in ((["--out", str(tmp_path / "v.png"), "--fps", "4"], "--fps sets a video's frames; a .png"),
                         (["--out", str(tmp_path / "v.gif"), "--fps", "60"], "--fps 60: a GIF's frames last whole")):
        assert main(["figure", "video", cma[0], "--runs", root, *bad]) == 2
        assert message in capsys.readouterr().err
    capsys.readouterr()
    assert main(["figure", "atlas", cma[0], "--out", str(tmp_path / "x.png"), "--runs", root]) == 2
    assert "is an openended run; only illumination runs (workbench asal illuminate) have" in capsys.readouterr().err
    # runs of other kinds, and an illumination that has not drawn its atlas yet: each told why (were a KeyError
    # traceback and "only illumination runs have one")
    other = RunStore(tmp_path / "other")
    merge = other.create("merge", "ties", "a+b", {}, 0, metric="fitness")
    unfinished = other.create("illuminate", "boids", "pixels", {}, 0)
    assert main(["figure", "video", merge.id, "--out", str(tmp_path / "x.gif"), "--runs", str(other.root)]) == 2
    assert "is a merge run; a video shows the best simulation of an ASAL run" in capsys.readouterr().err
    assert main(["figure", "atlas", unfinished.id, "--out", str(tmp_path / "x.png"), "--runs", str(other.root)]) == 2
    assert "has no atlas.png yet: an illumination run draws it when it finishes" in capsys.readouterr().err
    assert not (tmp_path / "x.gif").exists() and not (tmp_path / "x.png").exists()
    assert main(["figure", "curves", cma[0], "--out", str(tmp_path / "x.jpg"), "--runs", root]) == 2
    assert "figures are" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".png", ".html"])  # one per plotting backend: matplotlib, Bokeh
def test_the_first_figure_of_a_fresh_process(store, tmp_path, suffix):
    """Bug: `workbench figure atlas` failed with "No plotting extension is currently loaded" when it was the
    first figure of its process (the test above passed only because another figure ran first). Each command in a
    process of its own that has made no figure (forked from one that imported torch alone). .pdf and .svg go
    through matplotlib as .png does (the test above writes them)."""
    from forked import run

    ill = [r["id"] for r in store.list() if r["kind"] == "illuminate"][0]
    cma = [r["id"] for r in store.list() if r["kind"] == "openended"]
    for what, ids in (("atlas", [ill]), ("curves", cma)):
        out = tmp_path / f"{what}{suffix}"
        res = run("figure", what, *ids, "--out", str(out), "--runs", str(store.root))
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == str(out) and res.stderr.strip() == ""
        head = out.read_bytes()[:3000]
        assert {".png": b"\x89PNG", ".pdf": b"%PDF", ".svg": b"<svg", ".html": b"<!DOCTYPE html>"}[suffix] in head


def test_html_figures_need_no_current_bokeh_document(tmp_path):
    """Bug (a probe of the served pages): every HTML export failed on a server that had closed a session. The
    export runs on a worker thread, where Bokeh's current document is whatever document a session's callback
    holds then, a closed tab's destroyed one included ("'Document' object has no attribute '_theme'"), and
    HoloViews and file_html both reached for it. Here the current document is such a destroyed one."""
    import holoviews as hv
    from bokeh.document import Document
    from bokeh.io.doc import curdoc, set_curdoc

    from workbench.figures import holoviews, save

    holoviews()
    before, destroyed = curdoc(), Document()
    destroyed.on_change(print)
    destroyed.destroy(print)  # what Panel does to the document of a closed session
    set_curdoc(destroyed)
    try:
        out = save(hv.Curve([(0, 1.0), (1, 0.5)], "iteration", "best loss"), tmp_path / "c.html")
    finally:
        set_curdoc(before)
    html = out.read_text()
    assert html.lstrip().startswith("<!DOCTYPE html>") and "best loss" in html
    assert 'src="static/' not in html  # Panel's module shim by a server's path: a file has no server


def test_iteration_axes_are_whole_numbers(store):
    """Loss curves tick iterations at whole numbers only, in both backends."""
    import holoviews as hv

    from workbench.figures import holoviews, loss_curves

    holoviews()
    cma = [r["id"] for r in store.list() if r["kind"] == "openended"]
    fig = loss_curves(store, cma)
    bokeh = hv.render(fig, backend="bokeh")
    assert bokeh.xaxis[0].ticker.min_interval == 1
    mpl = hv.render(fig, backend="matplotlib")
    ticks = mpl.axes[0].get_xticks()
    assert len(ticks) and all(float(t).is_integer() for t in ticks)


def test_one_generation_ticks_whole_numbers():
    """Bug: a lineage (or any whole-number axis) whose points all sat at generation 0 ticked −0.60 … 0.60 in
    0.15 steps in paper figures: matplotlib's integer locator gives up where fewer than two whole numbers fit."""
    import holoviews as hv

    from workbench.figures import holoviews, whole_numbers

    holoviews()
    mpl = hv.render(whole_numbers(hv.Scatter([(0, 1.0), (0, 2.0)], "generation", "y").opts(
        xlim=(-0.55, 0.55), backend="matplotlib")), backend="matplotlib")
    ax = mpl.axes[0]
    shown = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert shown == [0]


def test_curves_show_each_run_in_its_own_metric_and_direction(tmp_path):
    """Bug: `figure curves` of a merge, CycleQD or expert run plotted best_loss, the negated score those runs
    store (a qd_score curve went down to −34). By default each run is drawn in its own metric, higher up where
    higher is better; --metric plots a column as stored, and its error lists that run's columns only (the
    catalog's view gave each run every kind's columns). One run has no legend: the title names it."""
    from workbench.figures import holoviews, loss_curves

    holoviews()
    store = RunStore(tmp_path / "runs")
    fit = store.create("merge", "ties", "a+b", {}, 0, metric="fitness")
    fit.write_table("metrics", {"iteration": [0, 1, 2], "best_loss": [-0.2, -0.5, -0.7], "fitness_mean": [.1, .2, .3]})
    loss = store.create("target", "lenia", "clip", {}, 0)
    loss.write_table("metrics", {"iteration": [0, 1], "best_loss": [0.9, 0.4], "sigma": [0.1, 0.1]})

    import holoviews as hv

    ax = hv.render(loss_curves(store, [fit.id]), backend="matplotlib").axes[0]
    assert list(ax.lines[0].get_ydata()) == [0.2, 0.5, 0.7] and ax.get_ylabel() == "best fitness"
    assert ax.get_legend() is None
    # one run's title says what it was, not its id (20261203-133435-target-lenia-s0 before)
    ax = hv.render(loss_curves(store, [loss.id]), backend="matplotlib").axes[0]
    assert ax.get_title() == "target · lenia · clip · seed 0"
    # two metrics: a panel each (one axis held both under "best fitness / loss")
    axes = hv.render(loss_curves(store, [fit.id, loss.id]), backend="matplotlib").axes
    assert [list(ax.lines[0].get_ydata()) for ax in axes] == [[0.2, 0.5, 0.7], [0.9, 0.4]]
    assert [ax.get_ylabel() for ax in axes] == ["best fitness", "best target loss"]
    assert [ax.lines[0].get_color() for ax in axes] == ["#0072B2", "#E69F00"]
    ax = hv.render(loss_curves(store, [fit.id], metric="fitness_mean"), backend="matplotlib").axes[0]
    assert list(ax.lines[0].get_ydata()) == pytest.approx([.1, .2, .3])
    with pytest.raises(ValueError) as error:
        loss_curves(store, [fit.id], metric="sigma")
    assert str(error.value).endswith("give --metric one of best_loss, fitness_mean")


def test_curves_of_two_runs_have_a_legend_naming_each(tmp_path):
    """From mutation sampling: `figure curves A B` of two runs in one metric must name each run in a legend (by
    the setting that tells them apart); only a figure of one run goes without (its title names it). Two
    unnamed lines, one dashed, say nothing to a reader."""
    import holoviews as hv

    from workbench.figures import holoviews, loss_curves

    holoviews()
    store = RunStore(tmp_path / "runs")
    ids = []
    for sigma in (0.1, 0.3):
        run = store.create("target", "lenia", "clip", {"sigma": sigma, "seed": 0}, 0)
        run.write_table("metrics", {"iteration": [0, 1], "best_loss": [0.9, 0.4]})
        ids.append(run.id)
    ax = hv.render(loss_curves(store, ids), backend="matplotlib").axes[0]
    assert ax.get_legend() is not None
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["sigma=0.1", "sigma=0.3"]


def test_a_flat_score_of_zero_is_drawn_on_the_whole_accuracy_scale():
    """From mutation sampling: an expert or merge scoring 0 at every step is a flat line at the bottom of the
    accuracy scale (-0.03 … 1.05), as 0.4 or 1 are, not the middle of a ±0.05 axis (where it reads as any score)."""
    from workbench.figures import ACCURACY, flat_range

    assert flat_range(0.0) == flat_range(1.0) == flat_range(0.4) == ACCURACY
    assert flat_range(-12.0) == pytest.approx((-12.6, -11.4))


def test_paper_figures_keep_text_as_text_and_the_style_in_every_panel(tmp_path):
    """For a paper: PDF fonts embedded as TrueType (Type 3 before: some publishers refuse them, text not
    searchable), SVG text as <text> (outlines before), the paper's font sizes in every panel of a layout and its
    colour bars (HoloViews' 10–18 pt defaults there before), and one clear error for a dpi past any printer."""
    import matplotlib.pyplot as plt

    from workbench.figures import MAX_DPI, PAPER_STYLE, BarValues, holoviews, save

    hv = holoviews()
    heat = hv.HeatMap([(i, j, i * j) for i in range(3) for j in range(3)]).opts(colorbar=True, clabel="value",
                                                                                 backend="matplotlib")
    # bars with their values written above them (6 pt before)
    bars = hv.Bars([("base", 0.2), ("expert", 0.9)], "strategy", "accuracy").opts(
        hooks=[BarValues(("base", "expert"), (0.2, 0.9), (0.0, 0.0))], backend="matplotlib")
    layout = (hv.Curve([1, 2, 3], label="a") * hv.Curve([3, 2, 1], label="b") + heat + bars).opts(
        title="three panels")
    pdf = save(layout, tmp_path / "f.pdf").read_bytes()
    assert b"/Type3" not in pdf and b"/FontFile2" in pdf
    assert "<text" in save(layout, tmp_path / "f.svg").read_text()

    seen = []
    savefig = plt.Figure.savefig

    def spy(fig, *args, **kwargs):  # the sizes of the visible text of the figure save writes
        fig.canvas.draw()
        seen.extend(t.get_fontsize() for t in fig.findobj(lambda o: hasattr(o, "get_text") and o.get_text()
                                                           and o.get_visible() and hasattr(o, "get_fontsize")))
        return savefig(fig, *args, **kwargs)

    plt.Figure.savefig = spy
    try:
        save(layout, tmp_path / "f.png")
    finally:
        plt.Figure.savefig = savefig
    allowed = set(PAPER_STYLE["fontsize"].values())
    assert seen and set(seen) <= allowed, sorted(set(seen) - allowed)

    with pytest.raises(ValueError, match="--width 2: a figure of 3 panels across needs at least 3.3 in"):
        save(layout.cols(3), tmp_path / "narrow.png", width=2)
    with pytest.raises(ValueError, match=f"--dpi 100000 is more than {MAX_DPI}"):
        save(layout, tmp_path / "g.png", dpi=100_000)
    assert not (tmp_path / "g.png").exists()
    with pytest.raises(ValueError, match="an .html figure has none: leave --dpi out"):
        save(layout, tmp_path / "g.html", dpi=600)


def test_figures_of_panels_fit_a_page(tmp_path):
    """Paper figures of several panels were as wide as their panels made them (QD archives and the experts'
    strategies 9–12 in: shrunk to a page's 7 in text width, their 7 pt labels print at 4–5 pt)."""
    from workbench.figures import PAGE_WIDTH, holoviews, layout_inches, panel_inches, save

    assert panel_inches(4, 1, (3.0, 2.5)) == (PAGE_WIDTH, round(2.5 * PAGE_WIDTH / 12, 2))
    assert panel_inches(2, 1, (3.2, 2.6)) == (6.4, 2.6)  # fits: as it is
    with pytest.raises(ValueError, match="cols"):
        panel_inches(0, 1)
    hv = holoviews()
    names = ["base", "expert:reverse", "task arithmetic", "multi-task FT", "classifier", "few-shot:5"]
    bars = hv.Bars([(n, i / 10) for i, n in enumerate(names)], "strategy", "accuracy").opts(xrotation=40,
                                                                                       backend="matplotlib")
    layout = (bars + bars + bars + bars).cols(4)
    assert layout_inches(layout) == panel_inches(4, 1)
    png = Image.open(save(layout, tmp_path / "bars.png", style={"fig_inches": layout_inches(layout)}))
    assert png.size[0] / png.info["dpi"][0] <= PAGE_WIDTH + 0.05


def test_an_illumination_curve_is_not_called_a_best_so_far(store):
    """An illumination's loss is its population's (or archive's) at each iteration, which can rise: its curve was
    labelled "best loss" like a search's best so far."""
    import holoviews as hv

    from workbench.compare import POPULATION_METRIC
    from workbench.figures import holoviews, loss_curves

    holoviews()
    runs = store.list()
    ill = [r["id"] for r in runs if r["kind"] == "illuminate"][0]
    cma = [r["id"] for r in runs if r["kind"] == "openended"][0]
    assert hv.render(loss_curves(store, [ill]), backend="matplotlib").axes[0].get_ylabel() == POPULATION_METRIC
    both = [ax.get_ylabel() for ax in hv.render(loss_curves(store, [cma, ill]), backend="matplotlib").axes]
    assert both == ["best open-endedness loss", POPULATION_METRIC]  # a panel each


def test_a_long_title_wraps_and_the_figure_keeps_its_size(tmp_path):
    """A title wider than the column ("DARE kept fraction (survivors rescaled to …)", the merge page's TIES / DARE
    panels) made _fit_width halve the figure again and again: no narrower axes make a 9 pt title narrower, and
    the figure came out 0.3 in wide, its plots specks. The title now breaks onto lines."""
    import holoviews as hv

    from workbench.figures import holoviews, save

    holoviews()
    title = "DARE kept fraction (survivors rescaled to the task vector's L1 norm) per layer"
    curve = hv.Curve([(0, 1), (1, 2), (2, 1.5)], "layer group", "kept fraction").opts(title=title, backend="matplotlib")
    png = Image.open(save(curve, tmp_path / "long.png"))
    assert 2.0 <= png.size[0] / png.info["dpi"][0] <= 3.5, png.size


def test_a_wrapped_title_keeps_its_mathtext_whole():
    """Each line of a title is parsed alone: a break inside $\\sigma = 0.1$ printed "$\\sigma" and "= 0.1 $" as
    raw text on two lines (and textwrap cut words longer than a line). Math stays on one line; \\$ is text."""
    import matplotlib.pyplot as plt

    from workbench.figures import _wrap_titles

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.set_title(r"best loss over the iterations at $\sigma = 0.1 + \alpha \beta$ with seeds and \$5 here")
    _wrap_titles(fig, 1.5)
    lines = ax.get_title().split("\n")
    assert len(lines) > 2 and r"$\sigma = 0.1 + \alpha \beta$" in lines
    # a lone $ is text: a title that starts with one wraps as any other (it was held whole, as if math)
    ax.set_title("$5 budget for the long search over many iterations and seeds")
    _wrap_titles(fig, 1.5)
    plt.close(fig)
    assert len(ax.get_title().split("\n")) > 2


def test_paper_figures_are_the_same_bytes_when_written_again(tmp_path):
    """A paper's repository keeps its figures: the same figure written twice differed (PDF: its creation date;
    SVG: its date and a random salt in every clip path's id), so every regeneration was a diff."""
    import holoviews as hv

    from workbench.figures import holoviews, save

    holoviews()
    curve = hv.Curve([(0, 0.47766), (1, 0.47767), (2, 0.47769)], "iteration", "best loss")
    for suffix in (".pdf", ".svg", ".png"):
        first, again = save(curve, tmp_path / f"a{suffix}"), save(curve, tmp_path / f"b{suffix}")
        assert first.read_bytes() == again.read_bytes(), suffix
    # ticks as plain numbers: no "1e-5+4.776e-1" offset over the axis
    assert "4.776e" not in (tmp_path / "a.svg").read_text() and "0.47766" in (tmp_path / "a.svg").read_text()


def test_a_legend_beside_the_axes_is_in_the_file(tmp_path):
    """HoloViews clips a legend it adds with add_artist to the axes, and a tight save then left it out: the DFS
    path's legend (right of the plot) was cut off at the file's edge ("mod…")."""
    import holoviews as hv

    from workbench.figures import holoviews, save

    holoviews()
    points = hv.Points({"x": [0, 1, 2, 3], "y": [0, 1, 0, 1], "model": ["add", "sort", "add", "sort"]},
                       ["x", "y"], ["model"]).opts(color="model", cmap=["#0072B2", "#E69F00"],
                                                   legend_position="right", backend="matplotlib")
    png = np.asarray(Image.open(save(points, tmp_path / "legend.png")).convert("L"))
    assert png[:, -5:].min() == 255, "something is cut at the file's right edge"  # the tight save's margin
    assert png.shape[1] / png.shape[0] > 1.2  # the legend's room beside the square axes


def test_charts_alone_share_one_shape_in_a_paper(tmp_path):
    """Curves, bands and bars alone come out as wide as one another, wider than high (HoloViews' square axes
    made one figure 2.3 in wide and the next 3.1: once each was scaled to a column, their ticks printed from 7.6
    to 10 pt); pictures keep their shape."""
    import holoviews as hv

    from workbench.figures import holoviews, save

    holoviews()
    curves = hv.Curve([(0, 0.9), (1, 0.6), (2, 0.4)], "iteration", "best loss") * hv.Curve([(0, 0.8), (2, 0.3)])
    bars = hv.Bars([("base", 0.2), ("expert", 0.9)], "strategy", "accuracy")
    marked = hv.Curve([(0, 0.5), (9, 0.6)], "σ rank", "z") * hv.HLine(0.525)  # a reference line: a chart still
    sizes = []
    for name, figure in (("curves", curves), ("bars", bars), ("picture", hv.RGB(np.zeros((8, 8, 3)))),
                         ("marked", marked)):
        png = Image.open(save(figure, tmp_path / f"{name}.png"))
        sizes.append([s / png.info["dpi"][0] for s in png.size])
    (cw, ch), (bw, bh), (pw, ph), (mw, mh) = sizes
    assert abs(cw - bw) < 0.2 and abs(cw - mw) < 0.2 and cw > 1.3 * ch and bw > 1.3 * bh and mw > 1.3 * mh, sizes
    assert abs(pw - ph) < 0.3, sizes


def test_the_merge_fitness_figure_keeps_its_legend_inside_the_axes(tmp_path):
    """A reviewer's audit: beside the axes, the fitness panels filled half of the figure's width."""
    import holoviews as hv
    import pandas as pd

    from workbench.figures import holoviews
    from workbench.merge.views import fitness_plot

    holoviews()
    metrics = pd.DataFrame({"iteration": range(6), "best_loss": [-0.2, -0.3, -0.5, -0.5, -0.6, -0.7],
                            "loss_mean": [-0.1, -0.2, -0.3, -0.4, -0.4, -0.5], "sigma": [0.2] * 6})
    fig = hv.render(fitness_plot(metrics), backend="matplotlib")
    fig.canvas.draw()
    ax = fig.axes[0]
    box, legend = ax.get_window_extent(), ax.get_legend().get_window_extent()
    assert box.x0 <= legend.x0 and legend.x1 <= box.x1 and box.y0 <= legend.y0 and legend.y1 <= box.y1
    assert fig.axes[1].get_ylabel() == "σ"
    # a column wide and its two panels wider than high: stacked square panels made it 3.2 × 7.5 in
    from workbench.figures import layout_inches, save

    # a run of one generation draws its points (its curves of one point drew nothing)
    assert len(fitness_plot(metrics.iloc[:1]).traverse(lambda e: e, [hv.Scatter])) == 2
    plot = fitness_plot(metrics)
    png = Image.open(save(plot, tmp_path / "fitness.png", style={"fig_inches": layout_inches(plot)}))
    width, height = (n / png.info["dpi"][0] for n in png.size)
    assert COLUMN_WIDTH - 0.1 < width <= COLUMN_WIDTH and height < 4.5, (width, height)


def test_the_dare_conflicts_figure_is_a_column_wide_and_not_a_page_tall(tmp_path):
    """A DARE-TIES run's TIES / DARE figure stacks two panels: square, they made a column figure 3.1 × 7.3 in (most of
    a page's height), an inch of white between them; each is now wider than high, as the fitness figure's."""
    from workbench.figures import holoviews, layout_inches, save
    from workbench.merge.views import conflict_plot

    holoviews()
    analysis = {"layer_groups": ["model.embed_tokens", "layers.0", "layers.1", "model.norm", "lm_head"],
                "sign_conflict": {"total": 0.2, "per_layer": [0.15, 0.12, 0.27, 0.0, 0.06], "after": "dare drop"},
                "dare_kept": {"add": [0.58, 0.46, 0.79, 0.13, 0.09], "sort": [0.41, 0.42, 0.73, 0.19, 0.25]},
                "dare_rescale": "l1"}
    plot = conflict_plot(analysis)
    png = Image.open(save(plot, tmp_path / "conflicts.png", style={"fig_inches": layout_inches(plot)}))
    width, height = (n / png.info["dpi"][0] for n in png.size)
    assert COLUMN_WIDTH - 0.15 < width <= COLUMN_WIDTH and height < 4.5, (width, height)


def _drawn_colours(obj, out) -> dict[str, set[str]]:
    """{legend name: the colours of its lines} in the figure `save` writes of `obj` to `out`."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex

    from workbench.figures import save

    seen: dict[str, set[str]] = {}
    savefig = plt.Figure.savefig

    def spy(fig, *args, **kwargs):
        for ax in fig.axes:
            for line in ax.lines:
                if not line.get_label().startswith("_"):
                    seen.setdefault(line.get_label(), set()).add(to_hex(line.get_color()))
        return savefig(fig, *args, **kwargs)

    plt.Figure.savefig = spy
    try:
        save(obj, out)
    finally:
        plt.Figure.savefig = savefig
    return seen


def test_a_task_or_a_pinned_name_has_one_colour_in_every_figure(tmp_path):
    """A paper's figures drew "sort" blue in one (its first task) and green in the next: a task now has its own
    colour wherever it is drawn (QD curves, experts' z), a name pinned by the user (pin_colours, --colour) keeps
    its colour in every figure, and the rest take Okabe & Ito's colours no name of the figure took."""
    import pandas as pd

    from workbench.cli.namm import TASK_NAMES
    from workbench.dashboards.experts import z_rank_plot
    from workbench.dashboards.qd import curves_plot
    from workbench.figures import OKABE_ITO, PINNED_COLOURS, TASK_COLOURS, colours_for, holoviews, pin_colours
    from workbench.lm.tasks import EXTRA_TASKS, TASKS

    holoviews()
    assert {*TASKS, *EXTRA_TASKS, *TASK_NAMES} <= set(TASK_COLOURS)  # every task the project draws
    assert colours_for(["mean", "sort", "best"]) == {"sort": TASK_COLOURS["sort"], "mean": OKABE_ITO[0],
                                                     "best": OKABE_ITO[1]}
    assert colours_for(["add", "x"])["x"] == OKABE_ITO[1]  # add took the first: x the next free one
    qd = pd.DataFrame({"generation": [0, 1, 0, 1], "task": ["brackets", "brackets", "sort", "sort"],
                       "coverage": [0.1, 0.2, 0.1, 0.3], "qd_score": [1.0, 2.0, 1.0, 3.0],
                       "max_quality": [0.5, 0.6, 0.4, 0.7]})
    experts = pd.DataFrame({"expert": ["add"] * 3 + ["sort"] * 3, "rank": [0, 1, 2] * 2,
                            "z": [0.5, 0.6, 0.4, 0.55, 0.5, 0.45]})
    in_qd = _drawn_colours(curves_plot(qd, 1), tmp_path / "qd.png")
    in_experts = _drawn_colours(z_rank_plot(experts, "all"), tmp_path / "experts.png")
    assert in_qd["sort"] == in_experts["sort"] == {TASK_COLOURS["sort"].lower()}  # in every panel too
    assert in_qd["brackets"] == {TASK_COLOURS["brackets"].lower()}
    import holoviews as hv
    from bokeh.models import GlyphRenderer, Line

    page = hv.renderer("bokeh").get_plot(curves_plot(qd, 1)).state  # the page draws them so too
    lines = {str(r.glyph.line_color).upper() for r in page.select({"type": GlyphRenderer}) if isinstance(r.glyph, Line)}
    assert {TASK_COLOURS["sort"], TASK_COLOURS["brackets"]} <= lines
    # more names than colours left free: they go on round the palette, not all onto the last free one
    extra = colours_for([*TASK_COLOURS][:7] + ["x", "y"])
    assert extra["x"] != extra["y"]
    import holoviews as hv

    x = np.linspace(0, 1, 5)
    built = hv.Overlay([hv.Curve((x, x), label="ours"), hv.Curve((x, x ** 2), label="theirs")])
    before = pin_colours({"sort": "black", "ours (n=3)": "#0072B2"})  # a setting's "(n=3)" pins the setting
    try:
        assert _drawn_colours(curves_plot(qd, 1), tmp_path / "qd2.png")["sort"] == {"#000000"}
        # a setting compared over seeds keeps its pinned colour with its run count
        assert colours_for(["sort (n=3)", "sort (n=2–3)"]) == {"sort (n=3)": "#000000", "sort (n=2–3)": "#000000"}
        # a figure built before the pin takes it, and no other entry takes the pinned colour
        drawn = _drawn_colours(built, tmp_path / "pinned.png")
        assert drawn["ours"] == {"#0072b2"} and drawn["theirs"] != {"#0072b2"}
        # the same where the figure chose its colours when built (a comparison's curves and bands): pinned to the
        # colour "theirs" was given, "ours" took it and both were drawn orange: "theirs" moves to a colour the figure
        # lacks; the colours the figure chose for the others stay (a QD plot's seed experts mean something)
        chose = hv.Overlay([hv.Area((x, x), label="ours (n=2)").opts(color=OKABE_ITO[0], facecolor=OKABE_ITO[0],
                                                                        backend="matplotlib"),
                            hv.Curve((x, x), label="ours (n=2)").opts(color=OKABE_ITO[0], backend="matplotlib"),
                            hv.Curve((x, x ** 2), label="theirs").opts(color=OKABE_ITO[1], backend="matplotlib"),
                            hv.Curve((x, x ** 3), label="reference").opts(color="#777777", backend="matplotlib"),
                            hv.Curve((x, x ** 4), label="seeds").opts(color=OKABE_ITO[2], backend="matplotlib")])
        pin_colours({"ours": OKABE_ITO[1]})
        drawn = _drawn_colours(chose, tmp_path / "chose.png")
        assert drawn["ours (n=2)"] == {OKABE_ITO[1].lower()} and drawn["theirs"] == {OKABE_ITO[0].lower()}, drawn
        assert drawn["reference"] == {"#777777"} and drawn["seeds"] == {OKABE_ITO[2].lower()}  # no clash: as chosen
        PINNED_COLOURS.pop("ours")  # without a pin, the colours chosen stay
        drawn = _drawn_colours(chose, tmp_path / "chose2.png")
        assert drawn["ours (n=2)"] == {OKABE_ITO[0].lower()} and drawn["theirs"] == {OKABE_ITO[1].lower()}
    finally:
        PINNED_COLOURS.clear()
        PINNED_COLOURS.update(before)
    for bad, message in (({"sort": "blurple"}, "--colour sort=blurple: 'blurple' is not a colour"),
                         ({"sort": "None"}, "'None' is not a colour"),
                         (["sort"], "--colour takes NAME=COLOUR"), (["a=red", "a=blue"], "--colour a is given twice")):
        with pytest.raises(ValueError, match=message):
            pin_colours(bad)
    assert PINNED_COLOURS == {}


def test_colours_and_fonts_from_the_cli(store, tmp_path, capsys):
    """--colour NAME=COLOUR pins a legend entry's colour for one command, --font serif sets the text in a
    Times-like face (embedded in the PDF); each bad one is one error before anything is read or written."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex

    from workbench.figures import PINNED_COLOURS

    cma = [r["id"] for r in store.list() if r["kind"] == "openended"]
    root = str(store.root)
    seen = {}
    savefig = plt.Figure.savefig

    def spy(fig, *args, **kwargs):
        seen.update({line.get_label(): to_hex(line.get_color()) for ax in fig.axes for line in ax.lines})
        return savefig(fig, *args, **kwargs)

    plt.Figure.savefig = spy
    try:
        assert main(["figure", "curves", *cma, "--out", str(tmp_path / "c.png"), "--runs", root]) == 0
        label = next(name for name in seen if "seed=1" in name)
        assert main(["figure", "curves", *cma, "--out", str(tmp_path / "c.png"), "--runs", root,
                     "--colour", f"{label}=#000000"]) == 0
    finally:
        plt.Figure.savefig = savefig
    assert seen[label] == "#000000" and PINNED_COLOURS == {}  # for that command only
    assert main(["figure", "curves", *cma, "--out", str(tmp_path / "serif.pdf"), "--runs", root,
                 "--font", "serif"]) == 0
    pdf = (tmp_path / "serif.pdf").read_bytes()
    assert b"STIXGeneral" in pdf and b"DejaVuSans" not in pdf
    assert main(["figure", "curves", *cma, "--out", str(tmp_path / "sans.pdf"), "--runs", root]) == 0
    assert b"DejaVuSans" in (tmp_path / "sans.pdf").read_bytes()  # the default
    for bad, message in ((["--colour", "seed=1"], "'1' is not a colour; give NAME=COLOUR"),
                         (["--colour", "=red"], "--colour takes NAME=COLOUR"),
                         (["--colour", "x=nocolour"], "not a colour"),
                         (["--colour", "sigma=2=red"], "the figure has no legend entry 'sigma=2'; its entries are"),
                         (["--font", "serif", "--out", str(tmp_path / "f.html")], "leave --font out"),
                         (["--colour", "x=red", "--out", str(tmp_path / "f.html")], "leave --colour out")):
        capsys.readouterr()
        out = bad[bad.index("--out") + 1] if "--out" in bad else str(tmp_path / "bad.png")
        args = [a for a in bad if a not in ("--out", out)]
        assert main(["figure", "curves", *cma, "--out", out, "--runs", root, *args]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "bad.png").exists() and not (tmp_path / "f.html").exists()
    assert PINNED_COLOURS == {}
    with pytest.raises(SystemExit):  # an atlas has no legend: no --colour
        main(["figure", "atlas", cma[0], "--out", str(tmp_path / "a.png"), "--runs", root, "--colour", "a=red"])


def test_legend_entries_renamed_for_a_paper_take_their_colours_by_the_new_name(store, tmp_path, capsys):
    """--rename NAME NEW (figures.rename): a legend entry the runs' settings named ("sigma=0.3, seed=1") called
    what the paper calls it, --colour then pinning the new name; a setting's "(n=2)" kept after it; an old name
    that is no entry, a name given twice, two entries called alike: one error each, nothing written."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex

    from workbench.figures import holoviews, legend_names, rename

    cma = [r["id"] for r in store.list() if r["kind"] == "openended"]
    root = str(store.root)
    seen = {}
    savefig = plt.Figure.savefig

    def spy(fig, *args, **kwargs):
        seen.clear()
        seen.update({line.get_label(): to_hex(line.get_color()) for ax in fig.axes for line in ax.lines})
        return savefig(fig, *args, **kwargs)

    plt.Figure.savefig = spy
    try:
        assert main(["figure", "curves", *cma, "--out", str(tmp_path / "c.png"), "--runs", root]) == 0
        before = [name for name in seen if not name.startswith("_")]
        label = next(name for name in before if "seed=1" in name)
        assert main(["figure", "curves", *cma, "--out", str(tmp_path / "c.png"), "--runs", root,
                     "--rename", label, "ours", "--colour", "ours=#000000"]) == 0
        after = [name for name in seen if not name.startswith("_")]
    finally:
        plt.Figure.savefig = savefig
    assert after == [("ours" if n == label else n) for n in before] and seen["ours"] == "#000000"
    hv = holoviews()
    band = hv.Overlay([hv.Area(([0, 1], [0, 1], [1, 2]), vdims=["y", "y2"], label="sigma=0.3 (n=2)"),
                       hv.Curve(([0, 1], [1, 2]), label="sigma=0.3 (n=2)"), hv.Curve(([0, 1], [0, 0]), label="b")])
    assert legend_names(rename(band, {"sigma=0.3": "ours"})) == ["ours", "b"]
    assert [e.label for e in rename(band, {"sigma=0.3": "ours"})] == ["ours (n=2)", "ours (n=2)", "b"]
    assert rename(band, {}) is band
    assert legend_names(rename(band, {"sigma=0.3 (n=2)": "ours"})) == ["ours", "b"]  # as printed, as --colour takes
    with pytest.raises(ValueError, match="two legend entries would be called 'b'"):
        rename(band, {"sigma=0.3": "b (n=4)"})  # one colour key ("b") for two entries
    for bad, message in ((["--rename", "sigma=2", "x"], "--rename 'sigma=2': the figure has no legend entry "
                                                         "'sigma=2'; its entries are"),
                         (["--rename", label, "a", "--rename", label, "b"], "is given twice"),
                         (["--rename", label, before[0] if before[0] != label else before[1]],
                          "two legend entries would be called"),
                         (["--rename", label, " "], "give the entry a name")):
        capsys.readouterr()
        assert main(["figure", "curves", *cma, "--out", str(tmp_path / "bad.png"), "--runs", root, *bad]) == 2
        assert message in capsys.readouterr().err, bad
        assert not (tmp_path / "bad.png").exists()
    with pytest.raises(SystemExit):  # a strip of frames has no legend: no --rename
        main(["figure", "frames", cma[0], "--out", str(tmp_path / "f.png"), "--runs", root, "--rename", "a", "b"])


def test_a_legend_that_covers_lines_moves_below_its_axes(tmp_path):
    """Six crossing curves left matplotlib's "best" place no free ground: the legend sat on the lines. It moves
    under the x label, in columns that fit the figure's width; a legend on free ground stays inside the axes."""
    import matplotlib.pyplot as plt

    from workbench.figures import holoviews, save

    hv = holoviews()
    x = np.linspace(0, 10, 100)
    crowded = hv.Overlay([hv.Curve((x, np.sin(x + k)), "iteration", "loss", label=f"sigma=0.{k}, seed={k}")
                          for k in range(6)])
    roomy = hv.Overlay([hv.Curve((x, x * k), "iteration", "loss", label=f"run {k}") for k in range(2)])
    boxes = {}
    savefig = plt.Figure.savefig

    def spy(fig, *args, **kwargs):
        fig.draw_without_rendering()
        renderer = fig._get_renderer()
        (ax,) = fig.axes
        legend = ax.get_legend()
        boxes[kwargs.get("format")] = (ax.xaxis.get_tightbbox(renderer), ax.bbox, legend.get_window_extent(renderer))
        return savefig(fig, *args, **kwargs)

    plt.Figure.savefig = spy
    try:
        save(crowded, tmp_path / "crowded.png")
        below = boxes.pop("png")
        save(roomy, tmp_path / "roomy.svg")
        inside = boxes.pop("svg")
    finally:
        plt.Figure.savefig = savefig
    x_axis, axes, legend = below
    assert legend.y1 <= x_axis.y0 and x_axis.y0 - legend.y1 < 20  # under the tick labels and the x label
    png = Image.open(tmp_path / "crowded.png")
    assert png.size[0] / png.info["dpi"][0] <= COLUMN_WIDTH  # in columns that fit: still a column wide
    _, axes, legend = inside
    assert axes.x0 <= legend.x0 and legend.x1 <= axes.x1 and axes.y0 <= legend.y0 and legend.y1 <= axes.y1


def test_a_legend_on_a_line_along_the_frame_finds_free_ground_inside(tmp_path, before_save):
    """A line at accuracy 1.0 under the top of the frame (CEM's k = 3): "best" put the legend on it (the path
    missed the legend's box by its stroke). The legend goes where it covers no data inside the axes."""
    from workbench.figures import _covers_data, holoviews, save

    hv = holoviews()
    top = hv.Curve(([1, 2, 3], [1.0, 1.0, 1.0]), "generation", "accuracy", label="k = 3")
    rising = hv.Curve(([1, 2, 3], [0.6, 0.7, 0.8]), "generation", "accuracy", label="k = 8")
    seen = []

    def look(fig, fmt, renderer):
        (ax,) = fig.axes
        box = ax.get_legend().get_window_extent(renderer)
        seen.append((ax.bbox.contains(box.x0, box.y0) and ax.bbox.contains(box.x1, box.y1),
                     _covers_data(ax, box, renderer)))

    before_save.append(look)
    save(hv.Overlay([top, rising]).opts(ylim=(0, 1.02), legend_position="top_left", backend="matplotlib"),
         tmp_path / "cem.png")
    assert seen == [(True, False)]  # inside the axes, on free ground


def test_a_covering_legend_over_another_panel_moves_below_its_axes_too(tmp_path, before_save):
    """Stacked panels with legends of their own (compare_panels: a loss and a fitness, each naming its runs) whose
    curves fill the axes: the upper panel's legend stayed on its lines, since under its axes it would have sat on
    the panel below. It moves under its x label; the rows move apart so that it sits on no other panel."""
    from matplotlib.legend import Legend

    from workbench.figures import holoviews, panel_inches, save

    hv = holoviews()
    x = np.linspace(0, 10, 200)

    def panel(tag):
        return hv.Overlay([hv.Curve((x, np.sin(x + k)), "iteration", "loss", label=f"{tag} sigma=0.{k}")
                           for k in range(6)])

    found = {}

    def look(fig, fmt, renderer):
        boxes = []
        for legend in (lg for lg in fig.findobj(Legend) if lg.get_visible() and lg.get_texts()):
            box, ax = legend.get_window_extent(renderer), legend.axes
            on_lines = any(line.get_path().transformed(a.transData).intersects_bbox(box, filled=False)
                           for a in fig.axes for line in a.lines)
            on_panels = [a for a in fig.axes if a is not ax and a.get_tightbbox(renderer).overlaps(box)]
            boxes.append((on_lines, on_panels, box, ax.xaxis.get_tightbbox(renderer)))
        found[fmt] = boxes

    before_save.append(look)
    for name, layout, shape in (("column", (panel("a") + panel("b")).cols(1), (1, 2)),
                                ("grid", (panel("a") + panel("b") + panel("c") + panel("d")).cols(2), (2, 2))):
        save(layout, tmp_path / f"{name}.png", style={"fig_inches": panel_inches(*shape)})
        legends = found.pop("png")
        assert len(legends) == shape[0] * shape[1], name
        for on_lines, on_panels, legend, x_axis in legends:
            assert not on_lines and not on_panels, name  # on no line, on no other panel
            assert legend.y1 <= x_axis.y0 and x_axis.y0 - legend.y1 < 20, name  # under its own x label
    png = Image.open(tmp_path / "column.png")
    assert png.size[0] / png.info["dpi"][0] <= COLUMN_WIDTH  # still a column wide: the rows opened, not the width


def test_panels_with_one_legend_share_it_and_a_reference_line_is_no_data(tmp_path, before_save):
    """Panels whose legends are alike (the QD curves' tasks in each) that cover their lines share one legend under
    the lowest panels (a legend under each overprinted its neighbours'); a dashed reference line across a panel
    does not count as data under a legend; a legend's title (an NdOverlay's key) stays with it."""
    from matplotlib.legend import Legend

    from workbench.figures import holoviews, panel_inches, save

    hv = holoviews()
    x = np.linspace(0, 10, 100)

    def panel():
        return hv.Overlay([hv.Curve((x, np.sin(x + k)), "iteration", "loss", label=f"sigma=0.{k}, seed={k}")
                           for k in range(4)])

    found = {}

    def look(fig, fmt, renderer):
        legends = [lg for lg in fig.findobj(Legend) if lg.get_visible()]
        found[fmt] = ([lg.get_window_extent(renderer) for lg in legends],
                      [ax.xaxis.get_tightbbox(renderer) for ax in fig.axes],
                      [lg.get_title().get_text() for lg in legends])

    before_save.append(look)
    save((panel() + panel() + panel() + panel()).cols(2), tmp_path / "grid.png",
         style={"fig_inches": panel_inches(2, 2)})
    flat = hv.Overlay([hv.Curve((x, 0.1 * x), "t", "y", label="a"), hv.Curve((x, 0.1 * x + 0.2), "t", "y",
                                                                              label="b"), hv.VLine(9.5)])
    save(flat.opts(legend_position="bottom_right", backend="matplotlib"), tmp_path / "flat.svg")
    nd = hv.NdOverlay({i: hv.Curve((x, np.cos(x + i))) for i in range(5)}, kdims="layer")
    save(nd, tmp_path / "nd.pdf")
    (shared,), x_axes, _ = found["png"]
    assert shared.y1 <= min(b.y0 for b in x_axes)  # one legend, under every panel's x label
    (kept,), (x_axis,), _ = found["svg"]
    assert kept.y0 > x_axis.y1  # the VLine under it: left inside its axes
    (titled,), (x_axis,), titles = found["pdf"]
    assert titles == ["layer"] and titled.y1 <= x_axis.y0


def test_no_legend_lies_on_the_data_once_the_figure_is_scaled_to_its_width(tmp_path, before_save):
    """Legends were checked against the data at the style's size (3.25 × 5.5 in), then the figure was scaled to fit
    its width (here 1.7 in wide: the title and y labels keep their size) and matplotlib's "best" put the search's
    legend on its band. Each legend still inside its axes as the figure is written lies on no data."""
    from matplotlib.legend import Legend

    from workbench.compare import compare_runs
    from workbench.figures import _covers_data, compare_curves, save

    store = RunStore(tmp_path / "runs")

    def run(kind, metric, best_loss, seed=0):
        made = store.create(kind, "boids" if kind == "openended" else "s", "f", {"seed": seed}, seed, metric=metric)
        made.write_table("metrics", {"iteration": list(range(len(best_loss))), "best_loss": best_loss})
        return made.id

    ids = [run("openended", "loss", [0.48117, 0.48117, 0.47691]),
           run("openended", "loss", [0.48195, 0.48195, 0.48036], seed=1),
           run("merge", "fitness", [-0.0, -0.0]), run("experts", "val_accuracy", [-0.0, -0.0, -0.0])]
    covering = []

    def look(fig, fmt, renderer):
        inside = [lg for lg in fig.findobj(Legend) if lg.axes is not None and lg.get_visible()
                  and lg.get_window_extent(renderer).overlaps(lg.axes.bbox)]
        assert inside
        covering.extend(lg for lg in inside if _covers_data(lg.axes, lg.get_window_extent(renderer), renderer))

    before_save.append(look)
    save(compare_curves(compare_runs(store, ids)), tmp_path / "mixed.png")
    assert covering == []


def test_a_run_stopped_before_its_best_says_how_to_go_on(tmp_path):
    """A strip or a video of a run that stopped (or was killed) before it wrote best.npy said "it finishes with
    one", which it never does unless resumed: it says how."""
    from workbench.figures import best_video, frames

    store = RunStore(tmp_path / "runs")
    run = store.create("openended", "boids", "pixels", {"eval": {"substrate": "boids", "fm": "pixels"}}, 0)
    with pytest.raises(ValueError, match=r"no best.npy yet \(it finishes with one\)"):  # running: it will
        frames(store, run.id)
    run.update(status="stopped")
    for draw in (lambda: frames(store, run.id), lambda: best_video(store, run.id, tmp_path / "b.mp4")):
        with pytest.raises(ValueError, match=f"it is stopped and writes one when it finishes; resume it with "
                                             f"`workbench asal openended --resume {run.id} --runs "):
            draw()


def test_html_charts_get_room_beside_their_legend(store):
    """An .html export of curves drew Bokeh's 300 px default: 95 px of plot beside the legend, a comparison's
    title cut short. Charts without a width of their own get HTML_CHART_WIDTH, alone or as a layout's panels (the
    layout's title kept); a width set (a page's) stays."""
    import holoviews as hv

    from workbench.figures import HTML_CHART_WIDTH, _html_width, holoviews, loss_curves

    holoviews()
    ids = [r["id"] for r in store.list()][:2]
    curves = loss_curves(store, ids)
    assert hv.render(curves, backend="bokeh").width == 300  # what the export had
    assert hv.render(_html_width(curves, hv), backend="bokeh").width == HTML_CHART_WIDTH
    set_here = curves.opts(width=760, backend="bokeh", clone=True)
    assert hv.render(_html_width(set_here, hv), backend="bokeh").width == 760
    layout = (curves + curves).cols(1).opts(title="both", backend="bokeh")
    title, grid = hv.render(_html_width(layout, hv), backend="bokeh").children
    assert "both" in title.text and [p.width for p, *_ in grid.children] == [HTML_CHART_WIDTH] * 2


def test_a_strip_of_the_frames_a_search_scored(store, tmp_path, clip_weights):
    """`figures.frames` / `workbench figure frames` (its own process): the best θ re-simulated from the initial
    state it scored from, the frames the search scored titled with their steps and, for a target search over
    several prompts, the prompt each frame was matched to; its pixels in whole blocks; bad input one error."""
    import holoviews as hv
    from forked import run

    from workbench.export import to_uint8
    from workbench.figures import frames
    from workbench.simulations import make_substrate

    def titles(strip) -> list[str]:
        return [hv.Store.lookup_options("matplotlib", p, "plot").kwargs["title"] for p in strip]

    cma = [r["id"] for r in store.list() if r["kind"] == "openended"][0]
    strip = frames(store, cma)
    assert titles(strip) == ["t = 4", "t = 9"]
    info = store.open(cma).info
    sub = make_substrate("boids")
    params = sub.decode(store.open(cma).read_array("best.npy"))
    state = sub.step(sub.init(params, seed=int(info["best_seed"])), params, 9)
    want = to_uint8(sub.render(state, params, 224))
    shown = strip[1].data  # the frame's pixels repeated (224 px printed 1.5 in at 300 dpi: twice)
    np.testing.assert_array_equal(shown[::2, ::2], want)
    assert shown.shape[0] == 2 * 224
    np.testing.assert_array_equal(frames(store, cma, upscale=False)[1].data, want)  # an .html page's own pixels
    assert titles(frames(store, cma, n=3)) == ["t = 2", "t = 5", "t = 8"]
    # an illumination's member, from the initial state its thumbnail came from
    ill = [r["id"] for r in store.list() if r["kind"] == "illuminate"][0]
    population = store.open(ill).read_table("population")
    theta, seed = np.asarray(population.column("theta")[3].as_py()), population.column("seed")[3].as_py()
    params = sub.decode(theta)
    want = to_uint8(sub.render(sub.step(sub.init(params, seed=seed), params, 9), params, 224))
    np.testing.assert_array_equal(frames(store, ill, member=3)[-1].data[::2, ::2], want)
    for bad, message in (((cma, 3), "--member picks an illumination's population member"),
                         ((ill, 99), "has population members 0 to 8, not 99")):
        with pytest.raises(ValueError, match=message):
            frames(store, bad[0], member=bad[1])
    from workbench.asal.driver import SearchConfig, run_search
    from workbench.asal.evaluate import EvalConfig

    target = run_search(SearchConfig(kind="target", prompts=["a red blob", "a blue ring"], iters=1, pop=2,
                                     eval=EvalConfig("boids", "openclip:ViT-B-32", weights=str(clip_weights),
                                                     steps=10, frames=4)), store).id
    assert titles(frames(store, target)) == ["t = 1\n“a red blob”", "t = 3\n“a blue ring”", "t = 5\n“a red blob”",
                                             "t = 7\n“a blue ring”"]
    args = ("figure", "frames", cma, "--runs", str(store.root))
    done = run(*args, "--out", str(tmp_path / "strip.pdf"))
    assert done.returncode == 0 and (tmp_path / "strip.pdf").read_bytes()[:4] == b"%PDF", done.stderr
    for bad, message in ((["--frames", "20"], "--frames 20 is more than the run's 10 steps"),
                         (["--steps", "3"], "the strip's 5 frames (the default) are more than --steps 3: a strip "
                                            "takes one frame a chunk of steps; give --frames 3 or fewer"),
                         (["--colour", "a=red"], "unrecognized arguments: --colour")):
        done = run(*args, *bad, "--out", str(tmp_path / "bad.png"))
        assert done.returncode == 2 and message in done.stderr, done.stderr
    other = RunStore(tmp_path / "other")
    merge = other.create("merge", "ties", "a+b", {}, 0, metric="fitness")
    done = run("figure", "frames", merge.id, "--runs", str(other.root), "--out", str(tmp_path / "bad.png"))
    assert done.returncode == 2 and "a strip of frames shows the best simulation of an ASAL run" in done.stderr
    assert not (tmp_path / "bad.png").exists()


def test_an_illuminations_best_plays_from_its_thumbnails_initial_state(store):
    """best.npy of an illumination is member 0: its strip, its video and the Lab play it from the initial state
    its thumbnail and embedding came from (seed 0 before, another simulation than the atlas showed); runs made
    before it was recorded find that seed in population.parquet."""
    from workbench.asal.driver import best_seed, population_member
    from workbench.figures import frames

    (ill,) = [r["id"] for r in store.list() if r["kind"] == "illuminate"]
    run = store.open(ill)
    kept = population_member(run, 0)[1]
    assert run.info["best_seed"] == kept and kept is not None
    older = {k: v for k, v in run.info.items() if k != "best_seed"}
    assert best_seed(run, older) == kept
    strip, member = frames(store, ill), frames(store, ill, member=0)
    assert [p.data.tobytes() for p in strip] == [p.data.tobytes() for p in member]


def test_a_strip_of_many_scored_frames_shows_eight_of_them(tmp_path):
    """An open-ended search scores 32 frames by default: one row of 32 panels ran their titles together. The
    strip shows STRIP_MAX of them, evenly spaced from the first to the last; --frames N still takes N."""
    from workbench.figures import STRIP_MAX, frames
    from workbench.simulations.rollout import sample_indices

    store = RunStore(tmp_path)
    run = run_search(SearchConfig(kind="openended", eval=EvalConfig("boids", "pixels", steps=16, frames=16, size=32),
                                  iters=1, pop=4), store)
    strip = frames(store, run.id)
    scored = sample_indices(16, (16, True))
    titles = [p.opts.get("plot", "matplotlib").kwargs["title"] for p in strip]
    assert len(strip) == STRIP_MAX == 8 and titles[0] == f"t = {scored[0]}" and titles[-1] == f"t = {scored[-1]}"
    assert len(frames(store, run.id, n=12)) == 12


def test_long_y_labels_and_wide_legends_keep_to_their_panels():
    """Stacked panels a column wide: "best open-endedness loss" (1.3 in at 8 pt) ran past its 1 in panel into the
    legend and tick labels below; a legend wider than its axes lay on the tick labels and the y label. The label
    breaks onto lines that fit the panel's height; the legend moves under its axes."""
    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt

    from workbench.figures import _legends_off_the_data, _renderer, _wrap_ylabels

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(3.25, 2.3))
    for ax in (top, bottom):  # low lines: the legend covers no data, it only sticks out of its axes
        ax.plot([0, 1, 2], [0, 0.1, 0], label="openended · algorithm=map-elites, descriptor_fit=held-out")
        ax.set_ylim(0, 3)
    top.set_ylabel("best open-endedness loss of the population", fontsize=8)
    top.legend(loc="upper right", fontsize=7)
    _wrap_ylabels(fig)
    renderer = _renderer(fig)
    label = top.yaxis.label
    assert "\n" in label.get_text() and label.get_window_extent(renderer).height <= top.bbox.height
    fig.set_size_inches(3.25, 2.0)  # a scaled figure: wrapped again for the lower panel, from the label as given
    _wrap_ylabels(fig)
    assert label.get_window_extent(_renderer(fig)).height <= top.bbox.height
    assert label.get_text().replace("-\n", "-").replace("\n", " ") == "best open-endedness loss of the population"
    _legends_off_the_data(fig, 3.15)
    box = top.get_legend().get_window_extent(_renderer(fig))
    assert box.y1 <= top.bbox.y0  # under its axes, not across them and their labels
    plt.close(fig)


def test_a_picture_is_as_wide_as_asked_and_panels_take_their_minimum_width(store, tmp_path):
    """An atlas (a picture alone) filled the column's 3.25 × 2.3 in box by its height: 2.6 in wide, 5.2 of 6.75 asked.
    Three panels need 3 × 1.1 in, which is 3.3000000000000003 in floating point: --width 3.3 was refused while
    the message asked for it."""
    import re

    import holoviews as hv

    from workbench.figures import atlas, holoviews, save

    holoviews()
    ill = [r["id"] for r in store.list() if r["kind"] == "illuminate"][0]
    for width in (None, 6.75):
        out = save(atlas(store, ill), tmp_path / "a.pdf", width=width)
        box = re.search(rb"/MediaBox \[ *([\d.]+) ([\d.]+) ([\d.]+) ([\d.]+)", out.read_bytes())
        assert float(box.group(3)) / 72 == pytest.approx(width or 3.25, rel=0.03)
    curve = hv.Curve([(0, 1.0), (1, 0.5)], "iteration", "loss")
    save(hv.Layout([curve, curve, curve]).cols(3), tmp_path / "three.png", width=3.3)


def test_paper_figures_show_every_series_class_and_key_they_name():
    """From a look at ~70 exported figures: equal series of one plot hid each other (now each in its own dashes),
    a dispatcher that always said "other" drew a confusion of one column, the lineage keyed an "ancestor" where none
    was drawn, QD curves kept the page's scrubber line at the run's end, α per matrix was grouped bars whose labels
    ran together (a heatmap now), an accuracy at 0 lay on the axis line, and a y label broke at its hyphen."""
    import pandas as pd

    from workbench.dashboards.experts import ACCURACY, _matrix_shares, confusion_plot
    from workbench.dashboards.qd import curves_plot, lineage_plot
    from workbench.figures import DASHES, _wrapped, compare_curves, holoviews

    hv = holoviews()

    def opts(element, name, backend="matplotlib"):
        return hv.Store.lookup_options(backend, element, "plot").kwargs.get(name) or \
            hv.Store.lookup_options(backend, element, "style").kwargs.get(name)

    curves = pd.DataFrame([{"task": t, "generation": g, "coverage": 0.1, "qd_score": 0.0, "max_quality": 0.0}
                           for t in ("sort", "reverse") for g in range(4)])
    panels = list(curves_plot(curves, 3))
    lines = [e for e in panels[0] if isinstance(e, hv.Curve)]
    assert [opts(c, "linestyle") for c in lines] == [DASHES[0][1], DASHES[1][1]]
    assert not any(isinstance(e, hv.VLine) for p in panels for e in p)  # the run's end: no scrubber line
    assert any(isinstance(e, hv.VLine) for e in curves_plot(curves, 1).values()[0])  # mid-run: it is there
    assert opts(panels[1], "ylim", "bokeh")[0] < 0  # a line at 0 above the axis line

    table = pd.DataFrame({"true": ["add", "sort"], "named": ["other", "other"], "count": [5, 5]})
    panel = confusion_plot({"prompt": table}, 1).values()[0]
    assert opts(panel, "xlim") == (-0.5, 2.5)  # add, sort and other: every class on its axis

    nodes = pd.DataFrame({"x": [0, 1], "y": [0, 0], "index": [0, 1], "model": ["0", "1"],
                          "role": ["seed expert", "elite"], "scores": ["", ""], "parents": ["", "0"],
                          "on_path": [False, False]})
    keys = [e.label for e in lineage_plot(nodes, pd.DataFrame({"source": [0], "target": [1]}), ["sort"])
            if e.group == "Key"]
    assert keys == ["seed expert", "elite"]

    shares = pd.DataFrame({"matrix": ["L0 gate", "L0 up"] * 2, "expert": ["add"] * 2 + ["sort"] * 2,
                           "share": [0.2, 0.4, 0.8, 0.6]})
    plot = _matrix_shares(shares, "α")
    assert isinstance(plot, hv.HeatMap) and opts(plot, "xticks") == [(0, "L0 gate"), (1, "L0 up")]
    assert ACCURACY[0] < 0
    assert _wrapped("best open-endedness loss", 12) == "best\nopen-endedness\nloss"
    assert _wrapped(r"best $\mathrm{open-ended}$ loss", 10, hyphens=True) == "best\n$\\mathrm{open-ended}$\nloss"
    from workbench.figures import compare_panels  # Runs → Compare: two runs at accuracy 0 had a −1 … 1 axis

    flat = [("accuracy", "#000", [hv.Curve([(0, 0.0), (1, 0.0)], "iteration", "accuracy", label=r)]) for r in "ab"]
    from workbench.dashboards.experts import z_heatmaps  # one colour bar for the shared scale, three in a row

    z = pd.DataFrame([{"expert": e, "row": r, "label": f"L{r}", "rank": k, "z": 0.5 + 0.01 * k}
                      for e in ("add", "sort", "classify") for r in range(2) for k in range(4)])
    heat = z_heatmaps(z)
    assert [bool(opts(p, "colorbar")) for p in heat] == [False, False, True] and heat._max_cols == 3
    # sized by their frames, the three heatmaps' frames as wide as each other in any layout (sized whole, the colour
    # bar's panel squeezed the frame above it in .cols(2)), the row with its colour bar within ROW_WIDTH
    from workbench.dashboards.experts import COLOUR_BAR, Z_AXES
    from workbench.dashboards.shell import ROW_WIDTH
    from workbench.figures import sized_by_frame

    frames = [opts(p, "frame_width", "bokeh") for p in heat]
    assert frames[0] == frames[1] == frames[2] and 3 * (frames[0] + Z_AXES[0]) + COLOUR_BAR <= ROW_WIDTH
    assert all(sized_by_frame in opts(p, "hooks", "bokeh") for p in heat)
    from workbench.dashboards.qd import LEGEND_ROOM, curves_plot  # one legend beside the last of the QD curves

    qd = pd.DataFrame({"generation": [0, 1] * 2, "task": ["sort"] * 2 + ["brackets"] * 2, "coverage": [0.1, 0.2] * 2,
                       "qd_score": [1.0, 2.0] * 2, "max_quality": [0.5, 0.6] * 2})
    curves = curves_plot(qd, 0)
    for backend in ("bokeh", "matplotlib"):  # (opts() reads a False as not set)
        legends = [hv.Store.lookup_options(backend, p, "plot").kwargs for p in curves]
        assert [(k["show_legend"], k["legend_position"]) for k in legends] == [(False, "right")] * 2 + [(True, "right")]
    from workbench.dashboards.qd import CURVE_AXES  # sized by their frames too, the legend's room beside the row

    frames = [opts(p, "frame_width", "bokeh") for p in curves]
    assert frames[0] == frames[1] == frames[2] and 3 * (frames[0] + CURVE_AXES[0]) + LEGEND_ROOM <= ROW_WIDTH
    assert all(sized_by_frame in opts(p, "hooks", "bokeh") for p in curves)  # kept beside whole_numbers' ticks
    panel = compare_panels(flat).values()[0]
    assert opts(panel, "ylim", "bokeh") == (-0.03, 1.05)
    assert [opts(c, "line_dash", "bokeh") for c in panel] == ["solid", "dashed"]  # the two at 0 both seen
    from workbench.figures import flat_range

    assert flat_range(-12.0) == (-12.6, -11.4) and flat_range(1500.0) == (1425.0, 1575.0)  # off the frame
    from workbench.compare import Comparison

    # one metric (Runs → Compare's usual case): one Overlay, told apart the same way
    curves = pd.DataFrame([{"run_id": r, "iteration": i, "best": 0.0, "metric": "val_accuracy"}
                           for r in "ab" for i in range(3)])
    overlay = compare_curves(Comparison(rows=[], curves=curves, differs={}, groups=[], labels={"a": "a", "b": "b"}))
    assert opts(overlay, "ylim", "bokeh") == (-0.03, 1.05)
    assert [opts(c, "line_dash", "bokeh") for c in overlay] == ["solid", "dashed"]
    from workbench.dashboards.namm import shown  # NAMM's figures name methods in words ("namm:", "kvpress:tova")

    assert [shown(m) for m in ("namm (cap 50%)", "h2o 32+32", "full", "kvpress:tova")] == [
        "NAMM (cap 50%)", "H2O 32+32", "full cache", "tova (kvpress)"]


def test_a_column_figure_is_at_most_a_column_wide_in_every_format(tmp_path, before_save):
    """The fit measures the raster; a PDF's and an SVG's text metrics add to it: curves of three runs (a legend of
    three entries under the axes) came out 3.27 in wide as PDF, of a 3.25 in column. The same runs compared (two
    seeds as a band, a title wider than the axes) came out 3.27 in wide too: the fit stopped after five scalings,
    the last one not measured, before the title that sticks out of the shrinking axes let it converge. And its
    axes were 1.5 in of the 3.2: the title, one line past them on both sides, held the width; it wraps now."""
    axes = []
    before_save.append(lambda fig, fmt, renderer: axes.append(
        (fig.axes[0].get_window_extent(renderer).width / fig.dpi, fig.axes[0].title.get_text())))
    import re

    from workbench.compare import compare_runs
    from workbench.figures import COLUMN_WIDTH, compare_curves, loss_curves, save

    store = RunStore(tmp_path / "runs")
    ids = [run_search(SearchConfig(kind="openended", eval=EvalConfig("boids", "pixels", steps=10, frames=2), iters=6,
                                   pop=4, sigma=sigma, seed=seed), store).id for sigma, seed in ((0.1, 0), (0.1, 1),
                                                                                                (0.3, 0))]
    for name, figure in (("curves", loss_curves(store, ids)), ("compare", compare_curves(compare_runs(store, ids)))):
        box = re.search(rb"/MediaBox \[ ?0 0 ([\d.]+)", save(figure, tmp_path / f"{name}.pdf").read_bytes())
        svg = re.search(r'width="([\d.]+)pt"', save(figure, tmp_path / f"{name}.svg").read_text())
        png = Image.open(save(figure, tmp_path / f"{name}.png"))
        for inches in (float(box.group(1)) / 72, float(svg.group(1)) / 72, png.size[0] / png.info["dpi"][0]):
            assert COLUMN_WIDTH - 0.15 < inches <= COLUMN_WIDTH, (name, inches)
    assert axes[-1][0] > 0.65 * COLUMN_WIDTH, axes[-1]  # the comparison's data has the room the curves' have
    assert axes[-1][1] == "mean over seeds; band:\nlowest to highest run"  # two lines of about one length


def test_an_atlas_is_repeated_the_whole_number_of_times_nearest_the_width_asked(store):
    """An atlas's pixels are repeated a whole number of times to about the width it prints at: the nearest whole
    number (2.6 times its width asked gives 3 repeats; cutting it down to 2 prints it a quarter smaller than asked
    and blurrier in a PDF)."""
    from workbench.figures import atlas

    ill = [r["id"] for r in store.list() if r["kind"] == "illuminate"][0]
    side = store.open(ill).read_image("atlas.png").shape[1]
    for asked, repeats in ((round(2.6 * side), 3), (round(2.4 * side), 2), (side // 3, 1)):
        assert atlas(store, ill, pixels=asked).dimension_values(2, flat=False).shape[1] == repeats * side


def test_figure_frames_for_a_paper_embeds_its_pixels_in_whole_blocks(store, tmp_path):
    """`figure frames --out f.pdf`: each frame's pixels repeated in whole blocks to about the width it prints at
    (embedded at its own 32 px, a PDF viewer resamples it into a blur); only an .html page keeps its own pixels."""
    import re

    from workbench.cli import main

    run = [r["id"] for r in store.list() if r["kind"] == "openended"][0]
    assert main(["figure", "frames", run, "--out", str(tmp_path / "f.pdf"), "--runs", str(store.root),
                 "--size", "32"]) == 0
    widths = [int(w) for w in re.findall(rb"/Width (\d+)", (tmp_path / "f.pdf").read_bytes())]
    assert widths and all(w % 32 == 0 and w >= 8 * 32 for w in widths)  # whole blocks, not the frames' own 32 px


def test_values_written_on_dark_cells_are_light_and_on_light_cells_dark():
    """From mutation sampling: the numbers a merge heatmap writes in its cells are white on the map's dark end and
    black on its light end (flipped, each number was dark on dark and light on light, unreadable in print)."""
    from workbench.figures import text_colours

    # viridis runs from dark purple (0) to light yellow (1)
    assert text_colours([0.0, 0.1, 0.95, 1.0], "viridis", (0.0, 1.0)) == ["#ffffff", "#ffffff", "#000000", "#000000"]
    # values past the scale take its end's colour, and a flat scale (clim of one value) still answers
    assert text_colours([-5.0, 7.0], "viridis", (0.0, 1.0)) == ["#ffffff", "#000000"]
    assert text_colours([2.0], "viridis", (2.0, 2.0)) == ["#ffffff"]


def test_the_dispatchers_counts_are_written_in_whichever_of_black_and_white_reads_on_their_cell():
    """The Experts page's confusion counts take text_colours' ink on Blues: black on a share of 0.6 (white went on
    every share over 0.5, and read at 3.2:1 there), white on the darkest cells."""
    import pandas as pd

    from workbench.dashboards.experts import confusion_plot
    from workbench.figures import holoviews

    hv = holoviews()
    table = pd.DataFrame({"true": ["add", "add", "sort"], "named": ["add", "other", "sort"], "count": [3, 2, 4]})
    labels = next(e for e in confusion_plot({"prompt": table}, 1).values()[0] if isinstance(e, hv.Labels))
    assert list(labels.data["share"]) == [0.6, 0.4, 1.0]
    assert list(labels.data["ink"]) == ["#000000", "#000000", "#ffffff"]


def test_a_flat_series_near_zero_gets_an_axis_a_reader_can_read():
    """From mutation sampling: a flat loss of −0.002 is drawn on −0.052 … 0.048 (a pad of at least 0.05), not on
    ±5 % of itself (−0.0021 … −0.0019: ticks of five significant digits around a line that means "nothing moved")."""
    from workbench.figures import flat_range

    assert flat_range(-0.002) == pytest.approx((-0.052, 0.048))
    assert flat_range(-2.0) == pytest.approx((-2.1, -1.9))  # 5 % of a value past ±1


def test_figure_video_of_a_long_run_has_about_120_frames_by_default(tmp_path):
    """From mutation sampling: `figure video RUN --steps 240` without --every draws every 2nd step (steps // 120,
    about 120 frames, as --help and the run's best.mp4 say): 121 frames, steps 0 … 240, not 61."""
    store = RunStore(tmp_path / "runs")
    run_search(SearchConfig(kind="openended", eval=EvalConfig("boids", "pixels", steps=4, frames=2), iters=1, pop=2,
                            seed=0), store)
    run_id = store.list()[0]["id"]
    assert main(["figure", "video", run_id, "--out", str(tmp_path / "v.gif"), "--runs", str(store.root),
                 "--size", "16", "--steps", "240"]) == 0
    assert Image.open(tmp_path / "v.gif").n_frames == 121


def test_a_png_is_written_at_the_dpi_asked(tmp_path):
    """From mutation sampling: `--dpi 150` (save(..., dpi=150)) gives a PNG of 150 dots per inch, its pixels in
    proportion; the paper style's dpi is only the default (the flag was checked, then could be ignored unseen)."""
    from workbench.figures import PAPER_STYLE, holoviews, save

    hv = holoviews()
    curve = hv.Curve(([0, 1, 2], [0.5, 0.25, 0.125]))
    save(curve, tmp_path / "low.png", dpi=150)
    save(curve, tmp_path / "default.png")
    low, default = Image.open(tmp_path / "low.png"), Image.open(tmp_path / "default.png")
    assert round(low.info["dpi"][0]) == 150 and round(default.info["dpi"][0]) == PAPER_STYLE["dpi"] != 150
    assert abs(low.size[0] / 150 - default.size[0] / PAPER_STYLE["dpi"]) < 0.05  # the same inches


def test_two_exports_at_once_each_draw_in_their_own_font_and_leave_the_rc_as_it_was(tmp_path):
    """From a probe of concurrent use: two tabs of one server exporting at once (figures.save in two threads) drew
    a sans figure in the other's serif font (matplotlib's rc is the process's), and the later export's exit put the
    earlier one's paper rc back for the process for good (TrueType PDF fonts, a fixed SVG salt)."""
    import threading

    import holoviews as hv
    import matplotlib

    from workbench.figures import save

    with matplotlib.rc_context():  # the old code's leak must not reach the tests after this one
        before = {k: matplotlib.rcParams[k] for k in ("font.family", "pdf.fonttype", "svg.hashsalt")}
        failures: list[str] = []
        together = threading.Barrier(2)  # each round's two exports begin together

        def export(font: str) -> None:
            for i in range(5):
                together.wait()
                try:
                    save(hv.Curve([(0, 0), (1, i + 1)]), tmp_path / f"{font}-{i}.svg", font=font)
                except Exception as exc:  # noqa: BLE001 - any failure is the bug
                    failures.append(f"{type(exc).__name__}: {exc}")

        tabs = [threading.Thread(target=export, args=(font,)) for font in ("sans", "serif")]
        for tab in tabs:
            tab.start()
        for tab in tabs:
            tab.join()
        after = {k: matplotlib.rcParams[k] for k in before}
    assert not failures, failures[:3]
    assert after == before
    in_serif = sorted(p.name for p in tmp_path.glob("*.svg") if "STIX" in p.read_text())
    assert in_serif == [f"serif-{i}.svg" for i in range(5)]


def test_means_over_seeds_beside_their_bands_differ_in_dashes_as_well_as_colour(tmp_path):
    """Printed in greyscale, a comparison's settings were told apart by colour alone: their means beside bands were
    all solid (a band, an Area and so a Curve to HoloViews, was dashed too and refused), Okabe & Ito's blue and green
    near one grey. Each setting's mean line now has a dash pattern of its own; the bands none."""
    import re

    from workbench.compare import compare_runs
    from workbench.figures import OKABE_ITO, compare_curves, save

    store = RunStore(tmp_path / "runs")
    ids = []
    for sigma in (0.1, 0.3, 1.0):
        for seed in (0, 1):
            run = store.create("openended", "boids", "f", {"sigma": sigma, "seed": seed}, seed, metric="loss")
            run.write_table("metrics", {"iteration": [0, 1, 2], "best_loss": [1.0, 1.0 - sigma, 1.0 - 2 * sigma]})
            ids.append(run.id)
    svg = save(compare_curves(compare_runs(store, ids)), tmp_path / "seeds.svg").read_text()
    styles = re.findall(r'<path [^>]*style="([^"]*)"', svg)
    dashes = {}
    for colour in (c.lower() for c in OKABE_ITO[:3]):  # the three settings' colours, in turn
        lines = [s for s in styles if "fill: none" in s and f"stroke: {colour}" in s]  # the mean and its legend key
        assert lines, colour
        dashes[colour] = {m.group(1) if (m := re.search(r"stroke-dasharray: ([^;]*)", s)) else "solid" for s in lines}
        assert len(dashes[colour]) == 1, dashes  # the legend's key drawn as its line
    assert len({d for pattern in dashes.values() for d in pattern}) == 3, dashes
    assert not [s for s in styles if "fill: none" not in s and "stroke-dasharray" in s]  # bands are not dashed


def _read_csv(path) -> list[dict[str, str]]:
    """A figure's CSV as its rows of text, as any reader (pgfplots, a screen reader's spreadsheet) sees them."""
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_a_figure_as_csv_is_every_point_of_every_panel_by_its_labels(tmp_path):
    """Researchers re-plotting a figure in their paper's style, or reading it (a chart is an image to a screen
    reader), had only pictures. A .csv is the figure's data, tidy: a row per point of every layer of every panel,
    its panel and title, its label (the legend entry, renamed as the legend is) and element type, then the element's
    dimensions by their labels, NaN where a layer lacks a column; floats exactly as stored."""
    from workbench.figures import holoviews, save

    hv = holoviews()

    tricky = [0.1, 1 / 3, 1e-300, float("nan"), -2.0**-1022, 123456789.123456789, 5e-324]
    runs = hv.Overlay([hv.Curve((range(7), tricky), "iteration", ("best", "best so far (loss ↓)"),
                                label="sigma=0.3, seed=1"),
                       hv.Curve((range(3), [3.0, 2.0, 1.5]), "iteration", ("best", "best so far (loss ↓)"),
                                label="sigma=0.1, seed=1")]).opts(title="two runs", backend="matplotlib")
    out = save(runs, tmp_path / "runs.csv", rename={"sigma=0.3, seed=1": "ours"})
    rows = _read_csv(out)
    assert list(rows[0]) == ["panel", "title", "label", "element", "iteration", "best so far (loss ↓)"]
    assert [r["label"] for r in rows] == ["ours"] * 7 + ["sigma=0.1, seed=1"] * 3  # --rename, as the legend
    assert {(r["panel"], r["title"], r["element"]) for r in rows} == {("1", "two runs", "Curve")}
    assert [r["iteration"] for r in rows] == [str(i) for i in (*range(7), *range(3))]  # whole numbers stay whole
    written = [float(r["best so far (loss ↓)"]) for r in rows[:7]]
    assert np.array_equal(written, tricky, equal_nan=True)  # every digit: the same float64 read back
    # a layout of two panels (a heatmap's cells as x, y, value rows beside the curves), NaN for what each lacks
    cells = hv.HeatMap([("sort", "expert a", 0.25), ("add", "expert b", 0.7)], ["task", "expert"], "accuracy")
    both = hv.Layout([runs, cells.opts(title="accuracy by expert", backend="matplotlib")])
    rows = _read_csv(save(both, tmp_path / "both.csv"))
    assert len(rows) == 10 + 2 and [r["panel"] for r in rows] == ["1"] * 10 + ["2"] * 2
    heat = rows[10:]
    assert [(r["title"], r["element"], r["task"], r["expert"], r["accuracy"]) for r in heat] == [
        ("accuracy by expert", "HeatMap", "sort", "expert a", "0.25"), ("accuracy by expert", "HeatMap", "add",
                                                                           "expert b", "0.7")]
    assert {r["iteration"] for r in heat} == {"NaN"} and {r["task"] for r in rows[:10]} == {"NaN"}


def test_a_csvs_titles_and_columns_are_what_an_overlay_draws_from_its_layers_and_a_key_names_its_codes(tmp_path):
    """HoloViews draws an overlay with the title and axis labels set on its layers (NAMM's raster carries its
    panel's title; a run's curve its y label): the CSV had an empty title and the unlabelled curve's "y" column
    beside the drawn "loss". A colour key's stand-in that holds the code its colour stands for is a row naming
    it; one of positions alone is left out."""
    from workbench.figures import holoviews, save

    hv = holoviews()
    raster = hv.Image(np.array([[0.0, 2.0], [1.0, 2.0]]), kdims=["token", "row"], vdims=["state"]).opts(
        title="kept after step 1", xlabel="token position", backend="matplotlib")
    keys = [hv.Scatter([(np.nan, np.nan, code)], vdims=["y", "state"], group="Key", label=name)
            for code, name in ((0, "evicted"), (2, "kept"))]
    bare = hv.Points([(np.nan, np.nan)], group="Key", label="a colour alone")
    rows = _read_csv(save(hv.Overlay([raster, *keys, bare]), tmp_path / "raster.csv"))
    assert {r["title"] for r in rows} == {"kept after step 1"} and "token position" in rows[0]
    assert [(r["label"], r["element"], r["state"]) for r in rows[4:]] == [("evicted", "Scatter", "0.0"),
                                                                         ("kept", "Scatter", "2.0")]
    assert len(rows) == 6 and {r["token position"] for r in rows[4:]} == {"NaN"}
    # a layer's empty title before a titled one: HoloViews draws none, and the CSV has none
    hidden = hv.Curve([(0, 1.0)]).opts(title="", backend="matplotlib") * hv.Curve([(0, 2.0)]).opts(
        title="shown", backend="matplotlib")
    assert {r["title"] for r in _read_csv(save(hidden, tmp_path / "hidden.csv"))} == {""}
    loss = hv.Curve([(0, 1.0), (1, 0.5)], label="ours").opts(ylabel="loss", backend="matplotlib")
    rows = _read_csv(save(loss * hv.Curve([(0, 2.0)], label="peer"), tmp_path / "two.csv"))
    assert list(rows[0])[4:] == ["x", "loss"] and [r["loss"] for r in rows] == ["1.0", "0.5", "2.0"]


def test_a_csvs_titles_are_formatted_as_holoviews_draws_them(tmp_path):
    """HoloViews formats a title as a template ("{label}", "{group}", "{type}", an NdLayout's "{dimensions}"; its
    default where none is set, matplotlib's: label and group, then the keys on a line of their own): the CSV wrote
    "{label}: best so far" where the figure said "ours: best so far", an NdLayout's panels untitled ("task: add"
    drawn) and a group left out. Each title is checked against the one HoloViews draws (figure_csv.drawn_titles),
    and spelled out here."""
    from figure_csv import check_csv

    from workbench.figures import holoviews, save

    hv = holoviews()
    curve = hv.Curve([(0, 1.0), (1, 0.5)], label="ours").opts(title="{label}: best so far", backend="matplotlib")
    overlay = hv.Curve([(0, 1.0)], label="ours") * hv.Curve([(0, 2.0)], label="peer").opts(
        title="{type} of two", backend="matplotlib")  # set on a layer, formatted with the overlay drawn
    layout = hv.Layout([curve, overlay, hv.Curve([(0, 1.0)], group="Loss", label="seed 1"),
                        hv.Curve([(0, 1.0)], label="a").opts(title="{label} ({group})", backend="bokeh")])
    cases = {"layout": (layout, None, ["ours: best so far", "Overlay of two", "seed 1 Loss", "a ()"]),
             "renamed": (curve, {"ours": "our search"}, ["our search: best so far"]),  # the new name, as drawn
             "keyed": (hv.NdLayout({"sort": hv.Curve([(0, 1.0)]), "add": hv.Curve([(0, 2.0)])}, kdims="task"),
                       None, ["task: add", "task: sort"]),
             # the default's keys on a line of their own (matplotlib's; Bokeh's on the same line)
             "keyed labelled": (hv.NdLayout({"sort": hv.Curve([(0, 1.0)], group="Loss", label="ours")}, kdims="task"),
                                None, ["ours Loss\ntask: sort"]),
             "braces": (hv.Curve([(0, 1.0)]).opts(title="loss {x", backend="matplotlib"), None, ["loss {x"])}
    for name, (fig, rename, titles) in cases.items():
        out = save(fig, tmp_path / f"{name}.csv", rename=rename)
        if name != "braces":  # no template: HoloViews cannot draw it (ValueError), the CSV keeps its text
            rows = check_csv(out, fig, rename)
        else:
            rows = _read_csv(out)
        assert list(dict.fromkeys(r["title"] for r in rows)) == titles, name


def test_a_csv_takes_no_printed_size_and_a_picture_has_no_data_to_write(tmp_path):
    """A .csv has no width, resolution or face: --width, --dpi and --font are refused (one error naming the flag,
    as .html refuses them), not ignored; a figure of pictures or text alone is refused as having no data, from the
    command line before any run is read or frame rendered (in a process of its own: the command as a script calls
    it). The runs named do not exist: the refusals come first."""
    import holoviews as hv
    from forked import run

    from workbench.figures import save

    curve = hv.Curve([(0, 1.0), (1, 0.5)], "iteration", "loss")
    for flag, given in (("--width", {"width": 3.25}), ("--dpi", {"dpi": 300}), ("--font", {"font": "serif"})):
        with pytest.raises(ValueError, match=f"^{flag} .*a .csv file is the figure's numbers.*leave {flag} out"):
            save(curve, tmp_path / "c.csv", **given)
    with pytest.raises(ValueError, match="the figure has no data to write as CSV"):
        save(hv.RGB(np.zeros((4, 4, 3))) + hv.Div("<b>text</b>"), tmp_path / "p.csv")
    assert not list(tmp_path.glob("*.csv"))
    runs = str(tmp_path / "runs")
    for args, message in ((("frames", "nope", "--out", str(tmp_path / "f.csv")),
                           "a strip of frames (pictures of the simulation) has no data to write as CSV"),
                          (("curves", "nope", "--out", str(tmp_path / "c.csv"), "--width", "3.25"),
                           "--width sizes .png, .svg and .pdf figures; a .csv file is the figure's numbers")):
        res = run("figure", *args, "--runs", runs)
        assert res.returncode == 2 and message in res.stderr, res.stderr
        assert res.stderr.count("error:") == 1 and "Traceback" not in res.stderr
    assert not list(tmp_path.glob("*.csv"))


def test_a_csv_of_pictures_or_text_is_refused_before_the_flags_a_csv_takes_no_size_for(tmp_path):
    """From review: `figure atlas --out a.csv --width 3` said "leave --width out", and once it was left out, that an
    atlas has no data to write as CSV: two errors in turn, the first a fix that fixed nothing. The format is the
    slip, and the pictures' other formats take those flags: an atlas, a strip of frames and NAMM's text view as .csv
    are refused first, whatever else is given (one error, before any run is read: the runs named do not exist)."""
    from forked import run

    runs = str(tmp_path / "runs")
    atlas = "an atlas (a picture of the population's frames) has no data to write as CSV"
    frames = "a strip of frames (pictures of the simulation) has no data to write as CSV"
    text = "--view text (the prompt's tokens) has no data to write as CSV"
    for args, message in ((("atlas", "nope", "--out", "a.csv", "--width", "3"), atlas),
                          (("atlas", "nope", "--out", "a.CSV", "--dpi", "600"), atlas),
                          (("frames", "nope", "--out", "f.csv", "--dpi", "300", "--font", "serif"), frames),
                          (("namm", "nope", "--view", "text", "--out", "t.csv", "--font", "serif"), text),
                          (("namm", "nope", "--view", "text", "--out", "t.csv", "--rename", "a", "b"), text),
                          (("namm", "nope", "--view", "text", "--out", "t.csv", "--colour", "a=red"), text)):
        res = run("figure", *args, "--runs", runs, cwd=tmp_path)
        assert res.returncode == 2 and message in res.stderr, (args, res.stderr)
        assert res.stderr.count("error:") == 1 and "Traceback" not in res.stderr
    # a name without a format: the formats listed are those the figure is written in (.csv listed for an atlas,
    # then refused once given)
    for args, formats in ((("atlas", "nope", "--out", "a"), ".png, .svg, .pdf, .html;"),
                          (("namm", "nope", "--view", "text", "--out", "t"), ".png, .svg, .pdf, .html;"),
                          (("namm", "nope", "--view", "sizes", "--out", "t"), ".png, .svg, .pdf, .html, .csv;")):
        res = run("figure", *args, "--runs", runs, cwd=tmp_path)
        assert res.returncode == 2 and f"figures are {formats} give a file name" in res.stderr, (args, res.stderr)
    assert not list(tmp_path.glob("*.*"))
