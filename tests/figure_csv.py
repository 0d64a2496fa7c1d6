"""The check every page's views share when written as .csv (figures.figure_table): the rows a figure's CSV should
have, counted from the figure itself, panel by panel and element by element, so that a kind of element left out,
a panel numbered out of the order drawn or a legend name not renamed shows as the view it broke."""
import csv
import re
from collections import Counter
from pathlib import Path

from workbench.figures import TABLE_COLUMNS, holoviews


def _title(panel, hv) -> str:
    """A panel's title as either backend draws it (an overlay draws the first title of its own and its layers'), ""
    where the first set is empty, else its label."""
    hidden = False
    for backend in ("matplotlib", "bokeh"):
        for obj in panel.traverse(lambda x: x):
            options = hv.Store.lookup_options(backend, obj, "plot").kwargs
            if "title" in options:  # the first that sets one, "" too (no title then)
                if options["title"]:
                    return str(options["title"])
                hidden = True
                break
    return "" if hidden else str(panel.label or "")


def drawn_rows(fig) -> tuple[Counter, list[str], set[str]]:
    """What a figure's CSV holds, from the figure: rows per (panel, element type) (a line's data points, a
    heatmap's or an image's cells, a Graph's edges and its nodes, a reference line one, a colour key's stand-in
    that holds a value; no picture, text or other colour key), the panels' titles in the order drawn and the
    labels of the elements that have rows."""
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
    return +counts, [_title(p, hv) for p in panels], labels


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
    counts, titles, labels = drawn_rows(fig)
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
