"""The check every page's views share when written as .csv (figures.figure_table): the rows a figure's CSV should
have, counted from the figure itself, panel by panel and element by element, so that a kind of element left out,
a panel numbered out of the order drawn or a legend name not renamed shows as the view it broke."""
import csv
import re
from collections import Counter
from pathlib import Path

from workbench.figures import TABLE_COLUMNS, holoviews


def _title_backend(panel, hv) -> str:
    """The backend whose title a panel's CSV names: the first that sets a title on the panel or one of its layers
    (an overlay draws the first title of its own and its layers', "" too), matplotlib's (the paper figure's) before
    Bokeh's; matplotlib where none sets one (HoloViews' default title, the same in both)."""
    for backend in ("matplotlib", "bokeh"):
        for obj in panel.traverse(lambda x: x):
            if "title" in hv.Store.lookup_options(backend, obj, "plot").kwargs:
                return backend
    return "matplotlib"


def drawn_titles(fig, rename: dict[str, str] | None = None) -> list[str]:
    """Each panel's title read off the figure as HoloViews draws it (`rename`d first, as figures.save does: a
    "{label}" in a title is the new name), in the backend that sets it (_title_backend): a template ("{label}
    …", "{group}", an NdLayout's "{dimensions}") formatted by HoloViews itself, not as the exporter thinks it is.
    Panels in the order drawn (a layout's, row by row)."""
    from holoviews.plotting.plot import GenericElementPlot, GenericOverlayPlot

    from workbench.figures import rename as renamed_figure

    hv = holoviews()
    fig = renamed_figure(fig, rename or {})
    panels = list(fig) if isinstance(fig, (hv.Layout, hv.NdLayout, hv.GridSpace)) else [fig]
    backends = [_title_backend(p, hv) for p in panels]
    drawn = {}
    for backend in set(backends):
        plot = hv.renderer(backend).get_plot(fig)
        top = plot.traverse(lambda p: p, [lambda p: isinstance(p, (GenericElementPlot, GenericOverlayPlot))
                                          and not p.overlaid])
        assert len(top) == len(panels), (backend, len(top), len(panels))
        drawn[backend] = [p.handles["axis"].get_title() if backend == "matplotlib" else p.handles["plot"].title.text
                          for p in top]
        if backend == "matplotlib":  # pyplot keeps every figure made open (it warns past 20)
            import matplotlib.pyplot as plt

            plt.close(plot.state)
    return [drawn[b][i] for i, b in enumerate(backends)]


def drawn_rows(fig, rename: dict[str, str] | None = None) -> tuple[Counter, list[str], set[str]]:
    """What a figure's CSV holds, from the figure: rows per (panel, element type) (a line's data points, a
    heatmap's or an image's cells, a Graph's edges and its nodes, a reference line one, a colour key's stand-in
    that holds a value; no picture, text or other colour key), the panels' titles in the order drawn (as drawn,
    `rename`d: drawn_titles) and the labels of the elements that have rows."""
    hv = holoviews()
    panels = list(fig) if isinstance(fig, (hv.Layout, hv.NdLayout, hv.GridSpace)) else [fig]
    counts, labels = Counter(), set()
    for i, panel in enumerate(panels, 1):
        for e in panel.traverse(lambda e: e, [hv.Element]):
            if isinstance(e, (hv.HLine, hv.VLine)):
                n = {type(e).__name__: 1}
            elif isinstance(e, (hv.RGB, hv.Labels, hv.Div, hv.element.Annotation)):
                continue
            elif e.group == "Key" and len(e.kdims + e.vdims) <= 2:  # a colour key's stand-ins: positions alone
                continue
            elif isinstance(e, hv.Graph):
                n = {"Graph": len(e.dframe()), "Nodes": len(e.nodes.dframe())}
            else:
                n = {type(e).__name__: len(e.dframe())}
            for kind, rows in n.items():
                counts[(str(i), kind)] += rows
            if e.label and sum(n.values()):
                labels.add(e.label)
    return +counts, drawn_titles(fig, rename), labels


def renamed(label: str, rename: dict[str, str]) -> str:
    """A legend entry as figures.save's rename writes it: its name replaced, a setting's "(n=3)" kept."""
    key = re.sub(r" \(n=\d+(–\d+)?\)$", "", label)
    return rename.get(key, key) + label[len(key):]


def check_csv(path: str | Path, fig, rename: dict[str, str] | None = None) -> list[dict[str, str]]:
    """`path`, the CSV written of `fig` (renamed as `rename` names legend entries), checked as a reader sees it:
    TABLE_COLUMNS first, a row for every point of every panel's elements (drawn_rows), each panel's title in its
    order, the labels as the legend (renamed), no column empty throughout (but label, of a figure without a legend,
    and title, of one without titles).
    Returns its rows."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        header = reader.fieldnames or []
    assert tuple(header[:len(TABLE_COLUMNS)]) == TABLE_COLUMNS, header
    assert rows, path
    counts, titles, labels = drawn_rows(fig, rename)
    assert Counter((r["panel"], r["element"]) for r in rows) == counts, path
    assert [r["panel"] for r in rows] == sorted((r["panel"] for r in rows), key=int), path  # panel by panel
    written = {r["panel"]: r["title"] for r in rows}
    assert written == {p: titles[int(p) - 1] for p in written}, path
    rename = rename or {}
    assert {r["label"] for r in rows} - {""} == {renamed(label, rename) for label in labels}, path
    assert not set(rename) & {renamed(r["label"], {}) for r in rows}, path  # none under its old name
    untitled = () if any(titles) else ("title",)
    empty = [c for c in header if c not in ("label", *untitled) and all(r[c] in ("", "NaN") for r in rows)]
    assert empty == [], (path, empty)
    return rows
