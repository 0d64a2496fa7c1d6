"""Figures for papers: any HoloViews plot to PNG / SVG / PDF through the matplotlib backend with a paper
style, standalone HTML with inline resources, its numbers as a tidy CSV, and ready-made figures of runs.

    fig = loss_curves(store, ["run-a", "run-b"])
    save(fig, "curves.pdf")              # .png .svg .pdf (matplotlib) or .html (Bokeh, inline, offline)
    save(fig, "curves.csv")              # every point of every line, to re-plot (pgfplots) or read (figure_table)
    save(atlas(store, "run-c"), "atlas.png", dpi=600)
    save(compare_curves(compare_runs(store, ids)), "seeds.pdf")   # each setting's mean and range over seeds
    pin_colours({"ours": "#D55E00"}); save(fig, "curves.pdf", font="serif")   # a method's colour, Times-like text

`workbench figure curves|compare|atlas|frames|view|namm|video ...` is the same on the command line.
"""

from __future__ import annotations

import functools
import math
import re
import threading
from pathlib import Path

from workbench.atomic import atomic_write
from workbench.checks import count, output_file
from workbench.compare import Comparison, curves_label
from workbench.runs import RunStore, a_kind_run

# a column of a two-column page (ICML, NeurIPS-style 2-column, ACM, IEEE: 3.25–3.5 in): a single figure's width
COLUMN_WIDTH = 3.25
# Sizes in points for a single-column figure; colour bars' labels and ticks too.
PAPER_STYLE = {
    "fig_inches": (COLUMN_WIDTH, 2.3),
    "fontsize": {"title": 9, "labels": 8, "xticks": 7, "yticks": 7, "legend": 7, "clabel": 8, "cticks": 7},
    "dpi": 300,
}
FORMATS = (".png", ".svg", ".pdf", ".html", ".csv")
#: the formats of a figure that is pictures or text alone (an atlas, frames): no .csv (refuse_csv)
PICTURE_FORMATS = FORMATS[:-1]
#: the formats that are no picture printed at a size: an .html figure fills its page, a .csv is the figure's numbers
#: (--width, --dpi and --font are refused for them: refuse_unprinted; the pages' export controls grey width and font)
UNPRINTED = (".html", ".csv")
# a two-column page's text width in inches (ICML 6.75, ACM and IEEE 7.0–7.16; a one-column NeurIPS or ICLR page
# 5.5: give --width 5.5): the widest a figure of panels gets, so that no paper shrinks its 7 pt text
PAGE_WIDTH = 6.75
MAX_WIDTH = 20.0  # inches: a poster's panel; more is a mistyped unit (cm, points)
MAX_DPI = 2400  # a raster of a 7 in figure at 2400 dpi is 16 800 px wide; more ran out of memory, traceback and all
MIN_PANEL_WIDTH = 1.1  # inches a panel of a --width figure keeps at least: three panels in 3.25 in ran together
# Okabe & Ito's palette: told apart with any colour vision. Not in greyscale print: past its first three, colours
# share a lightness (green L* 58, vermillion 54, purple 61; orange 71, sky blue 70), so lines of one plot take
# DASHES as well (distinct)
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
#: The project's task names in fixed colours, so that a task reads alike in every figure of a paper: the QD curves'
#: "sort" and the experts' "sort" (by position, each figure gave its first task blue). The language models' tasks,
#: then the NAMM's (no figure draws the two families together); Okabe & Ito's yellow, weak on white, left out.
TASK_COLOURS = {
    "add": OKABE_ITO[0], "reverse": OKABE_ITO[1], "sort": OKABE_ITO[2], "recall": OKABE_ITO[3],
    "brackets": OKABE_ITO[4], "classify": OKABE_ITO[5], "larger": OKABE_ITO[7],
    "passkey": OKABE_ITO[0], "kv": OKABE_ITO[1], "vartrack": OKABE_ITO[2], "count": OKABE_ITO[3],
    "digit": OKABE_ITO[4],
}
#: Colours you pin to legend names, for every figure this process writes (.png .svg .pdf; an .html figure keeps
#: its page's colours), figures built before the pin included: a method drawn alike in all of a paper's figures.
#: Set with pin_colours (checked), or `workbench figure --colour NAME=COLOUR` for one command. A name matches a
#: legend entry equal to it, or one that adds a setting's run count ("sigma=0.3 (n=3)").
PINNED_COLOURS: dict[str, str] = {}
#: Fonts for a figure's text (save(font=...), `workbench figure --font`): matplotlib's own sans (DejaVu Sans), or a
#: Times-like serif (STIX, which matplotlib ships) for papers set in Times; maths ($\sigma$) in the same face.
FONTS = {
    "sans": {"font.family": "sans-serif", "font.sans-serif": ["DejaVu Sans"], "mathtext.fontset": "dejavusans"},
    "serif": {"font.family": "serif", "font.serif": ["STIXGeneral", "DejaVu Serif"], "mathtext.fontset": "stix"},
}
# text stays text in vector figures: TrueType fonts embedded in PDF (not Type 3), <text> in SVG (not outlines)
VECTOR_TEXT = {"pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "none"}
# matplotlib's rc (rc_context) is the process's, and pyplot is not thread-safe: two tabs of one server exporting at
# once drew a sans figure in the other's serif font, and the later export's exit put the earlier one's paper rc
# (TrueType PDF fonts, a fixed SVG salt) back for the process for good. A paper figure is drawn by one thread at a time.
MATPLOTLIB_LOCK = threading.RLock()
# the rest of a paper figure's rc: ticks as plain numbers (not "1e-5+4.776e-1" over the axis), and SVG ids from a
# fixed salt (random per save otherwise: the same figure written twice differed in every clip path id)
PAPER_RC = {**VECTOR_TEXT, "axes.formatter.useoffset": False, "svg.hashsalt": "workbench"}
# no creation date in a vector figure: the same figure written again has the same bytes (a paper's repository)
NO_DATE = {".pdf": {"CreationDate": None}, ".svg": {"Date": None}}


def sized_by_frame(plot, element) -> None:
    """A Bokeh hook for a plot sized by its frame (frame_width / frame_height): HoloViews marks it "fixed" with no
    width or height, which Bokeh's check reports (W-1005) at each render on a page and in each HTML export; sized by
    its frame it needs no sizing mode. Panels sized by their frames line up in any layout (sized whole, a panel
    with a legend or colour bar beside it squeezed the frame of the panel above or below it)."""
    plot.state.sizing_mode = None


def styled(obj, bokeh: dict | None = None, mpl: dict | None = None, **common):
    """obj with the same look in both backends (`common` options) plus options only one of them knows (`bokeh`
    for the page, `mpl` for paper figures): every figure function styles its plots through this."""
    obj = obj.opts(**common, **(bokeh or {}), backend="bokeh")
    return obj.opts(**common, **(mpl or {}), backend="matplotlib")


def holoviews():
    """HoloViews with both plotting backends loaded and the current one left as it was (Bokeh by default).
    Options are set per backend, and HoloViews refuses any before a backend is loaded: every figure function
    calls this first, so the first figure of a fresh process works too. The backends are loaded as renderers,
    not with hv.extension: in a notebook that also wrote Bokeh's and Panel's JavaScript loaders into the cell's
    output, from the CDN, so offline the notebook's console filled with errors and a later plot could come out
    blank (a notebook shows plots after its own `hv.extension('bokeh', inline=True)`)."""
    import holoviews as hv

    _inline_notebook_stylesheets()
    missing = [b for b in ("bokeh", "matplotlib") if b not in hv.Store.renderers]
    if missing:
        import matplotlib

        if "inline" not in matplotlib.get_backend():  # no GUI backend: figures render on server threads too
            matplotlib.use("Agg")
        current = hv.Store.current_backend if hv.Store.renderers else "bokeh"
        for backend in missing:
            hv.renderer(backend)
        hv.Store.set_current_backend(current)
    return hv


_hv = holoviews


@functools.cache
def _inline_notebook_stylesheets() -> None:
    """Panel's stylesheets inline in a notebook's plots. HoloViews shows a plot in a notebook through Panel's
    render_model / render_mimebundle, in a Document of its own: there Panel points the plot's stylesheets
    (loading, listpanel, theme) at cdn.holoviz.org, and, unlike Panel's own display, nothing inlines them
    (hv.extension(inline=True) leaves pn.config.inline off), so offline every plot asked the CDN five times. Both
    are wrapped, once per process, to inline them first from Panel's installed dist (~7 KB of CSS a plot; Panel's own
    display does so only with pn.config.inline).
    Served pages and HTML exports do not go through them (their stylesheets: dashboards.shell, save)."""
    import holoviews.plotting.renderer as renderer

    try:
        from bokeh.models import UIElement
        from panel.io.notebook import patch_inline_stylesheets
    except ImportError:  # another Panel: its plots as it draws them
        return
    if not all(callable(getattr(renderer, name, None)) for name in ("render_model", "render_mimebundle")):
        return

    def inlined(render):
        @functools.wraps(render)
        def wrapper(model, *args, **kwargs):
            for element in model.select({"type": UIElement}):
                patch_inline_stylesheets(element)
            return render(model, *args, **kwargs)

        return wrapper

    renderer.render_model = inlined(renderer.render_model)
    renderer.render_mimebundle = inlined(renderer.render_mimebundle)


class BarValues:
    """A plot hook for both backends (Labels on a categorical axis break matplotlib's), a class so that
    HoloViews can compare it: writes each bar's value above it (above its whisker), so that a small difference
    reads as small. Use: `bars.opts(hooks=[BarValues(names, means, stds)], backend=...)`."""

    def __init__(self, names: tuple[str, ...], means: tuple[float, ...], stds: tuple[float, ...]):
        self.names, self.means, self.stds = names, means, stds

    def __call__(self, plot, element) -> None:
        texts = [f"{m:.2f}" for m in self.means]
        tops = [m + s + 0.02 for m, s in zip(self.means, self.stds, strict=True)]
        if "axis" in plot.handles and hasattr(plot.handles["axis"], "xaxis"):  # matplotlib: bars at 0, 1, ...
            # more than six bars in a paper panel: values upright would run into each other
            rotation = 90 if len(texts) > 6 else 0
            for i, (top, text) in enumerate(zip(tops, texts, strict=True)):
                # 7 pt, a paper's smallest text (PAPER_STYLE's ticks), not 6
                plot.handles["axis"].text(i, top, text, ha="center", va="bottom", fontsize=7, rotation=rotation)
        else:
            plot.state.text(x=list(self.names), y=tops, text=texts, text_align="center", text_font_size="8pt",
                            text_baseline="bottom", text_color="#333333")

    def __eq__(self, other) -> bool:
        return isinstance(other, BarValues) and (other.names, other.means, other.stds) == (
            self.names, self.means, self.stds)

    def __hash__(self) -> int:
        return hash(("bar-values", self.names, self.means, self.stds))


#: line styles (Bokeh's, matplotlib's) that series of one plot take in turn: equal series (two archives' flat
#: lines, a run whose validation is its best) drew one over the other, a legend entry with nothing to see
DASHES = (("solid", "-"), ("dashed", "--"), ("dotted", ":"), ("dashdot", "-."))


def dashed(curve, i: int):
    """`curve` in the i-th of DASHES (in both backends)."""
    bokeh, mpl = DASHES[i % len(DASHES)]
    return curve.opts(line_dash=bokeh, backend="bokeh").opts(linestyle=mpl, backend="matplotlib")


#: the most points a page's line chart sends of one per-iteration series (curve_rows): a 50 000-iteration run sent
#: whole was 0.1–2.4 MB of a live page's document per refresh (the noisier the series, the more), and Bokeh drew
#: every point. 2 000 is about twice a chart's width in pixels: the min/max of each bucket still draws the series'
#: envelope as the full series would
CURVE_POINTS = 2000


def curve_rows(*series, limit: int = CURVE_POINTS):
    """The rows (ascending indices) that a line chart of `series` (y columns of one length, in x order: a run's
    per-iteration metrics) keeps when it may send at most `limit` of them: every row when there are no more (the
    caller then sends its data unchanged). Otherwise the first and last rows, and every row where some series
    changes (the last row before a change and the first after it), when that is within `limit`: a best-so-far
    curve (monotone, flat between improvements) then draws exactly as in full, each step at its true iteration;
    only the insides of flat stretches go. Else, where they fit, the first row of each new value: every step at
    its true iteration and value, drawn as a ramp from the step before. Past that, the rows between are cut into
    equal buckets and each keeps, per series, its first lowest and first highest value and its first NaN (the
    line's gap): every extreme is drawn, the global best included, and a best-so-far curve keeps, per bucket, its
    value on entry and its last improvement. Rows, not resampled points: the x values (iterations) and any hover
    columns stay true.
    Deterministic (no randomness, ties to the first row)."""
    import numpy as np

    ys = [np.asarray(y, dtype=float) for y in series]
    if not ys or len({len(y) for y in ys}) != 1:
        raise ValueError("curve_rows takes one or more series of one length")
    n = len(ys[0])
    if n <= limit:
        return np.arange(n)
    nan = any(np.isnan(y).any() for y in ys)
    per_bucket = len(ys) * (3 if nan else 2)
    if limit < 2 + per_bucket:
        raise ValueError(f"curve_rows needs a limit of at least {2 + per_bucket} for {len(ys)} series, got {limit}")
    ends = np.array([0, n - 1])
    step = np.zeros(n, dtype=bool)  # the first row of each new value of some series
    for y in ys:
        same = (y[1:] == y[:-1]) | (np.isnan(y[1:]) & np.isnan(y[:-1]))  # NaN to NaN is no change
        step[1:] |= ~same
    corners = np.union1d(ends, np.flatnonzero(step | np.append(step[1:], False)))  # and the row before it
    if len(corners) <= limit:
        return corners
    # more steps than fit as steps, but each new value fits: kept at the row where it first appears (a best so
    # far's every improvement at its true iteration, drawn as a ramp from the one before). The buckets below kept
    # about one in two improvements of a curve with 0.5 to 1 × `limit` of them
    starts = np.union1d(ends, np.flatnonzero(step))
    if len(starts) <= limit:
        return starts
    buckets = (limit - 2) // per_bucket
    edges = np.linspace(1, n - 1, buckets + 1).astype(int)  # rows 1 … n − 2 in `buckets` runs of rows
    bucket = np.repeat(np.arange(buckets), np.diff(edges))

    def first(mask):  # each bucket's first row where mask holds, if any
        rows = np.flatnonzero(mask)
        _, at = np.unique(bucket[rows], return_index=True)
        return rows[at] + 1

    kept = [ends]
    for y in ys:
        inner = y[1:-1]
        with np.errstate(invalid="ignore"):
            low, high = np.fmin.reduceat(inner, edges[:-1] - 1), np.fmax.reduceat(inner, edges[:-1] - 1)
        kept += [first(inner == low[bucket]), first(inner == high[bucket]), first(np.isnan(inner))]
    return np.unique(np.concatenate(kept))


def thin_curve(table, *columns: str, by: str | None = None, limit: int | None = CURVE_POINTS):
    """The rows of `table` (a DataFrame in x order) that a page's line chart of `columns` sends: curve_rows of
    each group of `by` (a run, a task: one line each), or of the whole table. `table` itself, untouched, when no
    line has more than `limit` rows, or `limit` is None (a paper figure, an exported file: every row)."""
    import numpy as np

    if limit is None:
        return table
    # positions, not the groups' frames: a group whose key is missing (NaN) is a line too (groupby dropped its
    # rows), and the rows kept stay in the table's order (concatenated groups put interleaved lines one after
    # another)
    groups = ([np.arange(len(table))] if by is None else
              list(table.groupby(by, sort=False, dropna=False).indices.values()))
    if all(len(g) <= limit for g in groups):
        return table
    kept = [g[curve_rows(*(table[c].iloc[g] for c in columns), limit=limit)] for g in groups]
    return table.iloc[np.sort(np.concatenate(kept))]


def whole_numbers(obj, axis: str = "x"):
    """Ticks at whole numbers only on `axis` (iterations, steps, generations), in both backends. Hooks make a
    fresh ticker per rendered plot (a Bokeh model belongs to one document: pages render per session); the hooks
    obj has already are kept (a plot sized by its frame has one)."""
    import holoviews as hv

    for backend in ("bokeh", "matplotlib"):
        had = hv.Store.lookup_options(backend, obj, "plot").kwargs.get("hooks", [])
        kept = [h for h in had if not (isinstance(h, _integer_ticks) and h.axis == axis)]
        obj = obj.opts(hooks=[*kept, _integer_ticks(axis)], backend=backend)
    return obj


class _integer_ticks:  # noqa: N801 - used like a function; a class so that HoloViews can pickle and compare it
    def __init__(self, axis: str):
        self.axis = axis

    def __call__(self, plot, element) -> None:
        if "axis" in plot.handles and hasattr(plot.handles["axis"], "xaxis"):  # matplotlib
            from matplotlib.ticker import MaxNLocator

            # min_n_ticks=1: where fewer than two whole numbers fit (every point at generation 0), one tick
            # at 0, not matplotlib's fallback to ticks at 0.15 steps; nbins "auto": as many as the axis' length
            # holds at its tick labels' size (8 ran "100125150175200" together in a 1.3 in panel)
            locator = MaxNLocator(nbins="auto", integer=True, min_n_ticks=1)
            getattr(plot.handles["axis"], f"{self.axis}axis").set_major_locator(locator)
        else:  # bokeh
            from bokeh.models import BasicTicker

            for ax in getattr(plot.state, f"{self.axis}axis"):
                if not (isinstance(ax.ticker, BasicTicker) and ax.ticker.min_interval == 1):  # hooks run per update
                    ax.ticker = BasicTicker(min_interval=1, desired_num_ticks=8)

    def __eq__(self, other) -> bool:
        return isinstance(other, _integer_ticks) and other.axis == self.axis

    def __hash__(self) -> int:
        return hash(("integer-ticks", self.axis))


def _legend_key(name: str) -> str:
    """A legend entry as colours are pinned to it: a setting's "(n=3)" / "(n=2–3)" left out."""
    return re.sub(r" \(n=\d+(–\d+)?\)$", "", str(name))


def colours_for(names) -> dict[str, str]:
    """Each legend name's colour in one figure: the colour pinned to it (PINNED_COLOURS), else a task's own
    (TASK_COLOURS), else Okabe & Ito's colours that no name of this figure took, in order (then the palette again).
    Names are taken once, in order."""
    names = list(dict.fromkeys(str(n) for n in names))
    fixed = {n: PINNED_COLOURS.get(_legend_key(n)) or TASK_COLOURS.get(_legend_key(n)) for n in names}
    taken = {c.lower() for c in fixed.values() if c}
    # the colours no name took first; past them the palette again (more names than free colours share, rather
    # than all falling on the last free one)
    free = [c for c in OKABE_ITO if c.lower() not in taken]
    free += [c for c in OKABE_ITO if c not in free]
    out, n_free = {}, 0
    for name in names:
        if fixed[name]:
            out[name] = fixed[name]
        else:
            out[name], n_free = free[n_free % len(free)], n_free + 1
    return out


def check_colours(colours) -> dict[str, str]:
    """`colours` ({name: colour}, or "NAME=COLOUR" texts as --colour gives them) checked: each colour one
    matplotlib reads ("#D55E00", "tab:blue", "black"), each name given once; returned as {name: "#rrggbb"}."""
    from matplotlib.colors import is_color_like, to_hex, to_rgba

    pairs = []
    for item in (colours.items() if isinstance(colours, dict) else colours):
        if isinstance(item, str):
            name, sep, colour = item.rpartition("=")
            if not sep or not name.strip():
                raise ValueError(f"--colour takes NAME=COLOUR (a legend name, e.g. sort=#D55E00), got {item!r}")
            item = (name.strip(), colour.strip())
        pairs.append(item)
    out: dict[str, str] = {}
    for name, colour in pairs:
        # a number is a grey to matplotlib ("1": white): here the likely slip is a name with "=" in it given alone
        # ("seed=1" for the legend entry seed=1)
        number = str(colour).replace(".", "", 1).isdigit()
        if number or not is_color_like(colour) or str(colour).strip().lower() in ("", "none"):
            raise ValueError(f"--colour {name}={colour}: {colour!r} is not a colour; give NAME=COLOUR with a hex "
                             f"colour (#D55E00) or a matplotlib colour name (black, tab:blue); a name with = in it "
                             f"takes its colour after the last = ({name}={colour}=#D55E00)")
        name = _legend_key(name)  # "sigma=0.3 (n=3)" pins "sigma=0.3", as legends are matched
        if name in out:
            raise ValueError(f"--colour {name} is given twice; give each name one colour")
        out[name] = to_hex(colour, keep_alpha=to_rgba(colour)[3] < 1)  # a translucent colour stays so
    return out


def _named_data(hv):
    """Whether a part is an element whose legend name a colour can be given to: not a colour map's key (group
    "Key": stand-ins whose colours the map sets, not data)."""
    return lambda part: isinstance(part, hv.Element) and part.group != "Key"


def legend_names(obj) -> list[str]:
    """The legend entries of a HoloViews figure as colours are pinned to them (a setting's "(n=3)" left out),
    not a colour map's key (_named_data)."""
    hv = _hv()
    found = obj.traverse(lambda part: part.label, [_named_data(hv)])
    return list(dict.fromkeys(_legend_key(label) for label in found if label))


def no_legend_entries(flag: str) -> ValueError:
    """The error for a --colour or --rename (`flag`) given for a figure that has no legend entries at all."""
    return ValueError(f"{flag}: the figure has no legend entries (its colours are a colour map's or its own): leave "
                      f"{flag} out")


def check_legend_entries(obj, names, flag: str) -> list[str]:
    """The legend entries of `obj` (legend_names), `names` checked against them for `flag` (--colour, --rename): a
    name that is no entry (a slip in a label) would have coloured or renamed nothing, silently, so it is refused
    (ValueError) with the entries there are, as is any name where the figure has no legend at all."""
    entries = legend_names(obj)
    names = list(names)
    if names and not entries:
        raise no_legend_entries(flag)
    for name in names:
        if name not in entries:
            raise ValueError(f"{flag} {name!r}: the figure has no legend entry {name!r}; its entries are "
                             + ", ".join(repr(n) for n in entries))
    return entries


def rename_pairs(pairs) -> dict[str, str]:
    """(NAME, NEW) pairs (`--rename NAME NEW` …, the export controls' lines) as rename's {NAME: NEW}; a NAME given
    twice is refused (ValueError): a dict would keep its last NEW silently."""
    names: dict[str, str] = {}
    for old, new in pairs:
        if old in names:
            raise ValueError(f"--rename {old!r} is given twice; give each legend entry one new name")
        names[old] = new
    return names


def rename(obj, names: dict[str, str]):
    """`obj` with legend entries renamed for a paper ({"sigma=0.3, seed=1": "ours"}: the names the runs' settings
    gave, as legend_names lists them). A setting's "(n=3)" stays after its new name. Refused (ValueError) where an
    old name is no legend entry (it would rename nothing, silently: the entries there are are named), a new name
    is empty, or two entries would share one name (their colours too). Colours are then pinned to the new names.
    `workbench figure curves|compare|view --rename NAME NEW` calls it."""
    hv = _hv()
    names = {_legend_key(str(old)): str(new).strip() for old, new in dict(names).items()}  # as printed: "x (n=3)"
    if not names:
        return obj
    entries = check_legend_entries(obj, names, "--rename")
    for old, new in names.items():
        if not new:
            raise ValueError(f"--rename {old!r} '': give the entry a name")
    after = [_legend_key(names.get(n, n)) for n in entries]  # as colours are pinned: "x (n=4)" is "x"
    shared = sorted({n for n in after if after.count(n) > 1})
    if shared:
        raise ValueError(f"--rename: two legend entries would be called {shared[0]!r} (and share a colour); give "
                         "each its own name")

    def relabel(part):
        key = _legend_key(part.label)
        return part.relabel(label=names[key] + part.label[len(key):]) if part.label and key in names else part

    return obj.map(relabel, [_named_data(hv)])


_rename_legend = rename  # save's keyword of the same name hides it there


def pin_colours(colours) -> dict[str, str]:
    """Pin colours to legend names for every later figure of this process (PINNED_COLOURS), checked
    (check_colours); returns what was pinned before, for pin_colours(previous) to restore after
    PINNED_COLOURS.clear()."""
    checked, before = check_colours(colours), dict(PINNED_COLOURS)
    PINNED_COLOURS.update(checked)
    return before


def check_font(font: str | None, out: str | Path) -> str | None:
    """--font checked for a figure written to `out`: one of FONTS, and not for .html or .csv."""
    if font is None:
        return None
    if font not in FONTS:
        raise ValueError(f"--font is one of {', '.join(FONTS)}, got {font!r}")
    refuse_unprinted("--font", "sets the text of", out, "an .html figure uses its page's")
    return font


def refuse_unprinted(flag: str, does: str, out: str | Path, html: str,
                     csv: str = "a .csv file is the figure's numbers, with no size or face") -> None:
    """`flag` (which `does` something to .png, .svg and .pdf figures) refused for an `out` of UNPRINTED, saying
    why that format has no use for it (`html`, `csv`): ignored silently, a script would believe its figure was
    sized, set in its font or coloured."""
    why = {".html": html, ".csv": csv}.get(Path(out).suffix.lower())
    if why is not None:
        raise ValueError(f"{flag} {does} .png, .svg and .pdf figures; {why}: leave {flag} out")


def loss_curves(store: RunStore | str | Path, run_ids: list[str], metric: str | None = None):
    """Best so far against iteration, one curve per run labelled by the settings that tell it from the others
    (compare.run_labels: "sigma=0.3, seed=1"), in each run's own metric and direction (an ASAL search's
    loss ↓, a merge's fitness ↑, CycleQD's qd_score ↑, an expert's val_accuracy ↑: not the negated scores the
    runs store as best_loss), or any metrics column `metric` as it is stored. One run: no legend (the title
    says what the run was: its kind, substrate or task, model and seed, not its id). Runs in several metrics: a
    panel per metric (compare_panels), one run's colour the same throughout."""
    store = RunStore.of(store)
    from workbench.compare import best_curves, run_labels, run_title

    hv = _hv()
    run_ids = [run_ids] if isinstance(run_ids, str) else run_ids  # one run's id, not one run per letter
    if not run_ids:
        raise ValueError("give at least one run id")
    runs = [store.open(run_id) for run_id in run_ids]
    infos = [run.info for run in runs]
    labels = run_labels(infos, str(store.root))
    if metric is None:
        df = best_curves(store, infos)
        drawn = list(dict.fromkeys(df["run_id"]))  # the runs with metrics, in order
        layers = run_curves(df, labels)
        if len({m for m, _, _ in layers}) > 1:  # a search's loss beside a merge's fitness: a panel per metric
            return compare_panels(layers)
        curves = [curve for _, _, (curve,) in layers]
    else:
        curves, drawn = [], []
        for run in runs:
            rows = store.metrics(run.id)
            if not rows:  # no curve (an empty one drew bare axes, and let any --metric name pass unchecked)
                continue
            drawn.append(run.id)
            if metric not in rows[0]:
                columns = sorted(set(rows[0]) - {"run_id", "iteration"})
                raise ValueError(f"run {run.id!r} has no metric {metric!r}; give --metric one of {', '.join(columns)}")
            curves.append(hv.Curve([(r["iteration"], r[metric]) for r in rows], "iteration", metric,
                                   label=labels[run.id]))
    if not curves:
        raise ValueError(f"no metrics yet in {', '.join(run.id for run in runs)}")
    colours = colours_for(c.label for c in curves)
    curves = [c.opts(color=colours[c.label], backend="matplotlib") for c in curves]
    legend = {"show_legend": len(curves) > 1}
    if len(curves) == 1:  # titled by the run drawn (another asked for may have no metrics yet)
        curves = [curves[0].relabel(run_title(next(i for i in infos if i["id"] == drawn[0]), store.root))]
    curves, flat = distinct(curves)
    # a paper's legend sits inside the axes (where matplotlib finds room): to the right it took half the width
    overlay = hv.Overlay(curves).opts(**legend, **flat, legend_position="right", backend="bokeh").opts(
        **legend, **flat, legend_position="best", backend="matplotlib")
    return whole_numbers(overlay)


def band_title(band: str = "range") -> str:
    """The title of a comparison's curves over seeds: what the line and the band are (workbench.compare.BANDS)."""
    from workbench.compare import BANDS, check_band

    return f"mean over seeds; band: {BANDS[check_band(band)]}"


#: the title of a comparison's curves over seeds, with the default band (the range of the runs)
BAND_TITLE = band_title()


def compare_curves(comparison: Comparison, band: str = "range", points: int | None = None):
    """Best so far against iteration for runs compared (workbench.compare.compare_runs): one curve per run (labelled
    as in loss_curves), or, where some runs repeat one setting with other seeds, one curve per setting (the mean
    over its seeds) over a band (`band`, workbench.compare.BANDS: by default from its lowest to its highest run;
    "sd", "ci95"), labelled with the setting and its number of runs with metrics (a run repeating another's seed
    counted once), titled with what line and band are; a setting's curve ends where the first of its runs stops
    (a running one: at the iteration it has reached). Runs in one metric are one Overlay; runs in several (a
    search's loss, a merge's fitness, a QD score) are a Layout of one Overlay per metric (compare_panels). points:
    at most that many rows per line and band (curve_rows: the Runs page); None, every row (a paper figure)."""
    title = band_title(band)  # a bad band refused before any drawing, with replicates or not
    title = title if comparison.has_replicates else None
    hv = _hv()
    df = comparison.curves
    if df.empty:
        raise ValueError("none of the runs compared has metrics yet")
    layers = []  # (metric, colour, elements): a run's curve, or a setting's band and mean
    if not comparison.has_replicates:
        layers = run_curves(df, comparison.labels, points)
    else:
        bands = comparison.bands(band)
        colours = colours_for(g.label for g in comparison.groups)
        for group in comparison.groups:
            rows = bands[bands["group"] == group.label]
            if rows.empty:
                continue
            lo, hi = int(rows["n"].min()), int(rows["n"].max())  # runs that had scored at each iteration
            if points is not None:  # after the label: the rows where fewer runs had scored may be thinned out
                rows = thin_curve(rows, "mean", "lo", "hi", limit=points)
            label = f"{group.label} (n={hi})" if lo == hi else f"{group.label} (n={lo}–{hi})"
            colour = colours[group.label]
            metric = rows["metric"].iloc[0]
            ylabel = curves_label([metric])
            area = hv.Area(rows, "iteration", [("lo", ylabel), "hi"], label=label)
            # facecolor: matplotlib fills an Area from its own colour cycle otherwise, a band unlike its line
            layers.append((metric, colour, [
                area.opts(alpha=0.2, backend="bokeh").opts(alpha=0.2, linewidth=0, color=colour, facecolor=colour,
                                                           backend="matplotlib"),
                hv.Curve(rows, "iteration", ("mean", ylabel), label=label).opts(color=colour, backend="matplotlib")]))
    if len({metric for metric, _, _ in layers}) > 1:
        return compare_panels(layers, title)
    elements, flat = distinct([e for _, _, elements in layers for e in elements])
    overlay = hv.Overlay(elements).opts(legend_position="bottom", **flat, backend="bokeh").opts(
        legend_position="best", **flat, backend="matplotlib")
    if title:  # what line and band are, in the figure itself: a reader assumes ± sd or a CI
        overlay = overlay.opts(title=title, backend="bokeh").opts(title=title, backend="matplotlib")
    return whole_numbers(overlay)


def run_curves(df, labels: dict[str, str], points: int | None = None) -> list[tuple[str, str, list]]:
    """The best-so-far curve of each run in `df` (compare.best_curves' rows) as compare_panels' layers: (its
    metric, its colour, [its curve labelled by labels[run id], y labelled by its own metric]); at most `points`
    rows of each (curve_rows), or all of them (None)."""
    hv = _hv()
    layers = []
    named = {run_id: labels.get(run_id, run_id) for run_id in dict.fromkeys(df["run_id"])}
    colours = colours_for(named.values())
    for run_id, rows in df.groupby("run_id", sort=False):
        rows = rows if points is None else thin_curve(rows, "best", limit=points)
        colour, metric = colours[named[run_id]], rows["metric"].iloc[0]
        curve = hv.Curve(rows, "iteration", ("best", curves_label([metric])), label=named[run_id])
        layers.append((metric, colour, [curve.opts(color=colour, backend="matplotlib")]))
    return layers


#: a panel of compare_panels is this many times as wide as high in a paper figure (stacked, they share the width)
PANEL_ASPECT = 2.5


#: an accuracy's (a score's in [0, 1]) axis: from a little below 0, so that a series at 0 is not hidden by the axis
#: line
ACCURACY = (-0.03, 1.05)


def flat_range(v: float) -> tuple[float, float]:
    """A y range for a flat series at v: ACCURACY around a score in [0, 1] (accuracies of 0 throughout had −1 … 1,
    the line on the axis), else v ± 5 % (a loss of −12 on −12 … 1 lay on the bottom axis line)."""
    if 0.0 <= v <= 1.0:
        return ACCURACY
    pad = 0.05 * max(1.0, abs(v))
    return (v - pad, v + pad)


def distinct(elements: list) -> tuple[list, dict]:
    """Curves of one plot told apart: each line in turn in DASHES (equal ones hid each other; a band keeps none), the
    plot's y range (flat_range) where every value is one value; (elements, options for the plot)."""
    import numpy as np

    hv = _hv()
    curves = [e for e in elements if isinstance(e, hv.Curve)]
    turn = iter(range(len(elements)))
    # lines only: an Area is a Curve to HoloViews, and a band dashed at its line width of 0 was refused by matplotlib
    # ("at least one value in the dash list must be positive"). Means beside their bands are dashed too: in solid
    # lines Okabe & Ito's blue and green settings were near greys in print (L* 46 and 58)
    lines = [e for e in curves if not isinstance(e, hv.Area)]
    if len(lines) > 1:
        elements = [dashed(e, next(turn)) if isinstance(e, hv.Curve) and not isinstance(e, hv.Area) else e
                    for e in elements]
    values = np.concatenate([np.asarray(e.dimension_values(1), float) for e in curves]) if curves else np.zeros(0)
    values = values[np.isfinite(values)]
    flat = len(values) and values.min() == values.max()
    return elements, ({"ylim": flat_range(float(values[0]))} if flat else {})


def compare_panels(layers: list[tuple[str, str, list]], title: str | None = None):
    """compare_curves' layers in several metrics as one panel per metric, stacked: one y axis held a loss, a fitness
    and a QD score, and its label ("best fitness / loss / qd_score") ran past the plot. The panels share the
    iteration axis (its numbers under the lowest only); a run keeps its colour in every backend, so that no two
    runs read as one across panels (each panel's own colour cycle would start again); each run is in one panel,
    so each panel's legend names its own runs."""
    hv = _hv()
    metrics = list(dict.fromkeys(metric for metric, _, _ in layers))
    # one iteration range for all panels, given: HoloViews shares a layout's ranges only among elements without
    # options of their own, and each curve here has its colour (panels of 0..2 and 0..5 iterations looked alike)
    drawn = [e.range("iteration") for _, _, elements in layers for e in elements]
    xlim = (min(lo for lo, _ in drawn), max(hi for _, hi in drawn))
    panels = []
    for n, metric in enumerate(metrics):
        elements = [e.opts(color=colour, backend="bokeh") for m, colour, mine in layers if m == metric for e in mine]
        elements, flat = distinct(elements)
        axis = "bottom" if n == len(metrics) - 1 else "bare"  # x ticks kept, their numbers once at the bottom
        shared = {"xaxis": axis, "xlim": xlim, **flat}  # the y label names the metric
        # Bokeh draws no legend for a plot of one element: a panel of one run names it in its title instead (the
        # page's panels said no run's name); matplotlib's legend names it
        named = elements[0].label if len(elements) == 1 else ""
        panel = hv.Overlay(elements).opts(legend_position="bottom", title=named, **shared, backend="bokeh").opts(
            legend_position="best", aspect=PANEL_ASPECT, title="", **shared, backend="matplotlib")
        panels.append(whole_numbers(panel))
    layout = hv.Layout(panels).cols(1).opts(sublabel_format="", backend="matplotlib")  # no A, B: the y labels say
    if title:
        layout = layout.opts(title=title, backend="bokeh").opts(title=title, backend="matplotlib")
    return layout


def atlas(store: RunStore | str | Path, run_id: str, pixels: int = 900):
    """The illumination atlas of a run (its atlas.png) as an RGB element, its pixels repeated a whole number of
    times to about `pixels` across (what the figure prints: 3 in at 300 dpi by default; width × dpi for others,
    the atlas' own size for a page)."""
    store = RunStore.of(store)

    run = store.open(run_id)
    path = run.path / "atlas.png"
    kind = run.info.get("kind")
    if kind != "illuminate":
        raise ValueError(f"run {run_id!r} is {a_kind_run(kind)}; only illumination runs (workbench asal "
                         "illuminate) have an atlas")
    if not path.exists():
        raise ValueError(f"run {run_id!r} has no atlas.png yet: an illumination run draws it when it finishes "
                         f"({run.status} now)")
    img = run.read_image(path.name)
    # its pixels repeated a whole number of times to about the width it prints at, and not resampled
    # (interpolation "none"): a 224 px atlas drawn at ~900 px came out as uneven 2- and 3-pixel blocks, and a PDF
    # embedded it at ~119 dpi
    k = max(1, round(count(pixels, "pixels") / max(img.shape[:2])))
    img = img.repeat(k, axis=0).repeat(k, axis=1)
    # a picture: no axes (they read "x", "y", 0 to 1)
    return _hv().RGB(img, bounds=(0, 0, 1, 1)).opts(xaxis=None, yaxis=None, backend="bokeh").opts(
        xaxis=None, yaxis=None, interpolation="none", backend="matplotlib")


#: frames a strip shows of a run that scored one (an illumination's final state, a one-frame target search)
STRIP_FRAMES = 5

#: the most of the frames a search scored that a strip shows by default (evenly spaced among them): an open-ended
#: search scores 32, which made one row of 32 panels whose titles ran together
STRIP_MAX = 8


#: a strip's frame in a paper figure: (width, height) in inches, titles included (panel_inches: at most a page wide)
STRIP_PANEL = (1.5, 1.8)


def no_best_yet(run) -> str:
    """Why an ASAL run has no best θ to draw or play (figures here, the Lab): it finishes with one; a run stopped
    before it does says how to go on."""
    command = run.resume_command
    if command is None:
        return f"run {run.id!r} has no best.npy yet (it finishes with one)"
    return (f"run {run.id!r} has no best.npy: it is {run.status} and writes one when it finishes; resume it with "
            f"`{command}`")


def frames(store: RunStore | str | Path, run_id: str, n: int | None = None, steps: int | None = None,
           size: int | None = None, width: float | None = None, dpi: int | None = None,
           member: int | None = None, upscale: bool = True):
    """The best simulation of an ASAL run as a strip of frames for a paper: its best θ re-simulated from the
    initial state it scored from (as best_video), one panel per frame, titled with its step. By default the frames
    its search scored (its --frames K states: for a target search over several prompts, each titled with the
    prompt it was matched to, tiled p1 … pP p1 … as the loss tiles them; of more than STRIP_MAX, that many
    evenly spaced among them), or STRIP_FRAMES evenly spaced
    ones where it scored one; n: that many evenly spaced (chunk ends, as the search samples); steps: a rollout of
    that length (default: the run's); size: the frames' side in pixels (default: the run's render size); width,
    dpi: the strip's printed width in inches (default: STRIP_PANEL a frame, at most a page) and resolution, for
    which each frame's pixels are repeated a whole number of times (as atlas; upscale=False keeps the frames' own
    pixels, as an .html page shows them); member: an illumination's population
    member (the atlas' and the Lab's index; its best.npy is member 0) from its thumbnail's initial state. It
    carries its size (STRIP_PANEL a frame, at most a page wide), which save keeps: save(strip, "strip.pdf")."""
    import textwrap

    import numpy as np

    from workbench.asal.evaluate import DEFAULT_STEPS
    from workbench.export import to_uint8
    from workbench.simulations import make_substrate
    from workbench.simulations.rollout import rollout, sample_indices

    store = RunStore.of(store)
    n, steps, size = (None if v is None else count(v, name) for v, name in ((n, "frames"), (steps, "steps"),
                                                                              (size, "size")))
    run = store.open(run_id)
    info = run.info
    if "eval" not in info.get("config", {}):
        kind = info.get("kind")
        raise ValueError(f"run {run_id!r} is {a_kind_run(kind)}; a strip of frames shows the best simulation "
                         "of an ASAL run (workbench asal target|openended|illuminate|sweep)")
    from workbench.asal.driver import best_seed

    seed = best_seed(run, info)
    if member is not None:
        from workbench.asal.driver import population_member

        if info.get("kind") != "illuminate":
            raise ValueError(f"--member picks an illumination's population member; run {run_id!r} is "
                             f"{a_kind_run(info.get('kind'))}: leave --member out")
        theta, kept = population_member(run, count(member, "member", 0))
        seed = 0 if kept is None else kept
    elif not (run.path / "best.npy").exists():
        raise ValueError(no_best_yet(run))
    else:
        theta = run.read_array("best.npy")
    cfg, ev = info["config"], info["config"]["eval"]
    asked = steps
    steps = steps or ev.get("steps") or DEFAULT_STEPS[ev["substrate"]]
    scored = int(ev.get("frames") or 1)
    own = n is None and steps == (ev.get("steps") or steps) and scored > 1  # the frames the search scored
    k = scored if own else (n or STRIP_FRAMES)
    if k > steps:
        given = f"--frames {k} is" if n is not None else f"the strip's {k} frames (the default) are"
        length = f"--steps {steps}" if asked is not None else f"the run's {steps} steps"
        raise ValueError(f"{given} more than {length}: a strip takes one frame a chunk of steps; give "
                         f"--frames {steps} or fewer")
    sub = make_substrate(ev["substrate"], **ev.get("overrides", {}))
    shots = to_uint8(np.asarray(rollout(sub, sub.decode(theta), steps, (k, True), size=size or ev.get("size", 224),
                                        seed=seed)))
    prompts = list(cfg.get("prompts") or []) if own and info.get("kind") == "target" else []
    # of many scored frames, STRIP_MAX evenly spaced (the first and the last among them); a target search's
    # frames tiled over its prompts keep their prompts
    shown = np.unique(np.round(np.linspace(0, k - 1, STRIP_MAX)).astype(int)) if own and k > STRIP_MAX \
        else np.arange(k)
    scored_at = sample_indices(steps, (k, True))
    indices = [scored_at[i] for i in shown]
    shots, k = shots[shown], len(shown)
    across = (check_width(width, "strip.pdf") or panel_inches(k, 1, STRIP_PANEL)[0]) / k
    repeat = max(1, round(across * (count(dpi, "dpi") if dpi is not None else PAPER_STYLE["dpi"]) / shots.shape[1])) \
        if upscale else 1
    shots = shots.repeat(repeat, axis=1).repeat(repeat, axis=2)
    hv = _hv()
    panels = []
    for i, index, shot in zip(shown, indices, shots, strict=True):
        title = f"t = {index}"
        if len(prompts) > 1:  # one prompt alone is the run's, said once by the caller's caption
            title += "\n" + "\n".join(textwrap.wrap(f"“{prompts[i % len(prompts)]}”", 18))
        panels.append(hv.RGB(shot, bounds=(0, 0, 1, 1), label="").opts(
            title=title, xaxis=None, yaxis=None, backend="bokeh").opts(
            title=title, xaxis=None, yaxis=None, interpolation="none", backend="matplotlib"))
    strip = hv.Layout(panels).cols(len(panels))
    return strip.opts(sublabel_format="", hspace=0.1, fig_inches=panel_inches(len(panels), 1, STRIP_PANEL),
                      backend="matplotlib")


def text_colours(values, cmap: str, clim: tuple[float, float]) -> list[str]:
    """Black or white text for values written on cells of colour map `cmap` over `clim`, whichever has the higher
    WCAG contrast with the cell's colour: one of the two is at least 4.58:1 on any colour. (Chosen by a gamma-encoded
    luma at 0.55 with near-black #1a1a1a, white went on viridis' middle green at 2.5:1.)"""
    import numpy as np
    from matplotlib import colormaps

    lo, hi = clim
    span = (hi - lo) or 1.0
    rgb = colormaps[cmap](np.clip((np.asarray(values, float) - lo) / span, 0, 1))[:, :3]
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    luminance = linear @ np.array([0.2126, 0.7152, 0.0722])  # WCAG's relative luminance
    # white's ratio (1.05 / (L + 0.05)) against black's ((L + 0.05) / 0.05): white wins below L = 0.179
    return ["#ffffff" if 1.05 / (v + 0.05) > (v + 0.05) / 0.05 else "#000000" for v in luminance]


def check_width(width: float | None, out: str | Path) -> float | None:
    """--width checked for a figure written to `out`: inches from 1 to MAX_WIDTH, and not for .html or .csv."""
    if width is None:
        return None
    if not (isinstance(width, (int, float)) and not isinstance(width, bool) and 1.0 <= width <= MAX_WIDTH):
        raise ValueError(f"--width is the figure's width in inches, from 1 to {MAX_WIDTH:g} (a column "
                         f"{COLUMN_WIDTH:g}, a two-column page {PAGE_WIDTH:g}), got {width!r}")
    refuse_unprinted("--width", "sizes", out, "an .html figure fills its page")
    return float(width)


def check_dpi(dpi: int | None, out: str | Path) -> int | None:
    """--dpi checked for a figure written to `out`: a whole number up to MAX_DPI, and not for .html or .csv."""
    dpi = None if dpi is None else count(dpi, "dpi")
    if dpi is not None and dpi > MAX_DPI:
        raise ValueError(f"--dpi {dpi} is more than {MAX_DPI}; 300 is print quality, 600 for fine detail")
    if dpi is not None:
        refuse_unprinted("--dpi", "sizes the rasters of", out, "an .html figure has none")
    return dpi


_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
#: a Bokeh model's id (p1017) or a UUID, as a whole word
_BOKEH_ID = re.compile(rf"(?<![\w-])(?:p\d+|{_UUID})(?![\w-])")


def _stable_ids(page: str) -> str:
    """A Bokeh page with its ids numbered in the order they first appear: Bokeh names its models from a counter
    of the process (p1017 in one export, p1070 in the next) and its document and root elements by random UUIDs,
    so the same figure wrote another file each time (a paper's website or repository saw a change at every
    build). Only the models' ids (`"id":"p…"`) and UUIDs are renumbered, everywhere they are named."""
    models = dict.fromkeys(re.findall(r'\\?"id\\?":\\?"(p\d+)\\?"', page))
    if not models and not re.search(_UUID, page):
        return page
    tokens = dict.fromkeys(m.group(0) for m in _BOKEH_ID.finditer(page)
                           if m.group(0) in models or not m.group(0).startswith("p"))
    names = {}
    for i, token in enumerate(tokens):
        names[token] = f"p{1000 + i}" if token.startswith("p") else f"00000000-0000-4000-8000-{i:012d}"
    return _BOKEH_ID.sub(lambda m: names.get(m.group(0), m.group(0)), page)


def export_suffix(suffix: str) -> str:
    """A page export's format as its suffix, ".pdf" ("pdf" and ".PDF" taken too), or one error naming the
    formats and the argument: a Python caller gives `suffix`, not --out ("pdf" made a file "…-fitnesspdf", refused
    as "(--out)")."""
    text = str(suffix).strip().lower()
    text = text if text.startswith(".") else f".{text}"
    if text not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {suffix!r} (the export's suffix)")
    return text


def check_figure_path(out: str | Path, formats: tuple[str, ...] = FORMATS) -> Path:
    """`out` as a Path, or one error naming the fix: a format the figure is written in (`formats`: a picture's
    leave .csv out, which its refuse_csv explains), a folder that exists."""
    out = Path(out)
    if out.suffix.lower() not in formats:
        raise ValueError(f"cannot write {str(out)!r}: figures are {', '.join(formats)}; give a file name ending in "
                         "one of them (--out)")
    return output_file(out, "--out", "figure" + out.suffix)


def panel_inches(cols: int, rows: int, panel: tuple[float, float] = PAPER_STYLE["fig_inches"],
                 width: float = PAGE_WIDTH) -> tuple[float, float]:
    """The size of a figure of `cols` × `rows` panels of `panel` inches each, scaled down as a whole (its
    proportions kept) to at most `width` inches wide, the text width of a two-column page: four 3 in panels in
    a row make a 12 in figure otherwise, which a paper shrinks to its text width, and its 7 pt labels with it, to
    4 pt. Use: `save(layout, out, style={"fig_inches": panel_inches(3, 1, (3.2, 2.6))})`."""
    cols, rows = count(cols, "cols"), count(rows, "rows")
    w, h = panel[0] * cols, panel[1] * rows
    scale = min(1.0, width / w)
    return round(w * scale, 2), round(h * scale, 2)


def layout_inches(obj, panel: tuple[float, float] = PAPER_STYLE["fig_inches"],
                  width: float = PAGE_WIDTH) -> tuple[float, float]:
    """panel_inches for a HoloViews object as it lays its panels out: a Layout's rows and columns, else one."""
    from holoviews import Layout

    rows, cols = obj.shape if isinstance(obj, Layout) else (1, 1)
    return panel_inches(cols, rows, panel, width)


def _unclip_legends(fig) -> None:
    """HoloViews adds some legends with `ax.add_artist`, which clips them to the axes; a legend so clipped is left
    out of the tight box, so one placed beside the axes (legend_position="right": the DFS path's) was cut off at
    the edge of the saved file."""
    from matplotlib.legend import Legend

    for legend in fig.findobj(Legend):
        legend.set_clip_on(False)


def _covers_data(ax, box, renderer) -> bool:
    """Whether the box (display units) lies on data of `ax`: a line, a point, a band (an Area's fill) or a bar;
    not a reference line across the axes (a VLine: drawn in axes units along one side). The box is taken 2 pt
    wider on every side: a line drawn along its edge (an accuracy of 1.0 under the frame) is covered by its
    stroke and the frame's, though its path misses the box."""
    from matplotlib.collections import PolyCollection

    box = box.padded(renderer.points_to_pixels(2.0))
    data = ax.transData
    if any(line.get_visible() and len(line.get_xydata()) and line.get_transform() == data and
           line.get_path().transformed(data).intersects_bbox(box, filled=False) for line in ax.lines):
        return True
    for c in ax.collections:
        if not c.get_visible():
            continue
        if hasattr(c, "get_sizes") and len(c.get_sizes()) and len(c.get_offsets()):  # points
            if box.count_contains(c.get_offset_transform().transform(c.get_offsets())):
                return True
        elif isinstance(c, PolyCollection) and any(p.transformed(c.get_transform()).intersects_bbox(box)
                                                   for p in c.get_paths()):
            return True
    return any(p.get_visible() and p.get_window_extent(renderer).overlaps(box) for p in ax.patches)


def _legends_off_the_data(fig, width: float) -> bool:
    """A legend inside the axes that still covers data where matplotlib put it ("best" only finds the least
    covered place: six crossing curves leave none free) moves below its axes, under the x label, in as many
    columns side by side (at most 3) as fit under the axes (`width` inches for a figure of one): a reader must
    see every line. Panels whose legends are all alike (the QD curves' tasks in each panel) share one legend under
    the lowest panels instead. A legend stays where it is on free ground. Where another panel lies below (a layout of
    rows), the rows above move up and the figure grows by what the legend needs (_open_rows): it stayed on the lines
    otherwise."""
    from matplotlib.legend import Legend
    from matplotlib.transforms import blended_transform_factory, offset_copy

    _wrap_ylabels(fig)
    fig.draw_without_rendering()  # places "best" legends and the tick labels
    renderer = _renderer(fig)
    panels = [a for a in fig.axes if a.get_visible() and a.get_label() != "<colorbar>"]
    inside = [lg for lg in fig.findobj(Legend) if lg.axes is not None and lg.get_visible() and lg not in fig.legends
              and lg.get_texts() and lg.get_window_extent(renderer).overlaps(lg.axes.bbox)]  # not beside its axes
    if not inside:
        return False

    def entries(legend) -> tuple:
        return tuple(t.get_text() for t in legend.get_texts()), legend.get_title().get_text()

    def under(ax) -> float:
        """Points from the axes' bottom to below its tick labels and x label."""
        labels = ax.xaxis.get_tightbbox(renderer)  # None for a bare axis
        return (ax.bbox.y0 - (labels.y0 if labels is not None else ax.bbox.y0)) * 72 / fig.dpi + 3

    def remove(legend) -> None:
        ax = legend.axes
        if ax.get_legend() is legend:
            ax.legend_ = None
        else:  # added with add_artist (HoloViews does so for some)
            legend.remove()

    def placed(parent, legend, anchor, room: float) -> Legend:
        """The legend's entries anchored at `anchor`'s (0.5, 0), in as many columns (at most 3) as fit `room`."""
        texts, title = entries(legend)
        for ncols in range(min(len(texts), 3), 0, -1):
            moved = Legend(parent, legend.legend_handles, list(texts), loc="upper center", bbox_to_anchor=(0.5, 0.0),
                           bbox_transform=anchor, ncols=ncols, fontsize=legend.get_texts()[0].get_fontsize(),
                           title=title or None, title_fontsize=legend.get_title().get_fontsize(), frameon=False,
                           borderaxespad=0.0, columnspacing=1.2, handlelength=1.8)
            if moved.get_window_extent(renderer).width / fig.dpi <= room or ncols == 1:
                break
        moved.set_clip_on(False)
        return moved

    def out_of_axes(legend) -> bool:  # wider than its axes, it lay on the tick labels and the y label
        box, frame = legend.get_window_extent(renderer), legend.axes.bbox.padded(1.0)
        return not (frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1))

    covering = [lg for lg in inside if out_of_axes(lg) or _covers_data(lg.axes, lg.get_window_extent(renderer),
                                                                       renderer)]
    if len(inside) > 1 and len(inside) == len({lg.axes for lg in inside}) == len(panels) and covering \
            and len({entries(lg) for lg in inside}) == 1:
        # one legend for all: under the lowest panels (the figure's x centre; in points below their labels,
        # which holds when _fit_width scales the figure)
        lowest = min(panels, key=lambda a: a.bbox.y0)
        drop = max(under(a) for a in panels if a.bbox.y0 <= lowest.bbox.y0 + 1)
        anchor = blended_transform_factory(fig.transFigure, offset_copy(lowest.transAxes, fig=fig, y=-drop,
                                                                         units="points"))
        shared = placed(fig, inside[0], anchor, width)
        for legend in inside:
            remove(legend)
        fig.legends.append(shared)
        return True
    moved_under = []
    for legend in covering:
        ax = legend.axes
        free = next((loc for loc in INSIDE_PLACES if _covers_nothing_at(legend, loc, renderer)), None)
        if free is not None:  # a place inside the axes on free ground after all ("best" missed it: a line on the
            continue  # frame's edge): the legend stays there
        legend.set_loc("best")
        room = width if len(panels) == 1 else ax.bbox.width / fig.dpi + 0.2  # a panel's legend under its panel
        moved = placed(ax, legend, offset_copy(ax.transAxes, fig=fig, y=-under(ax), units="points"), room)
        if ax.get_legend() is legend:  # as Axes.legend sets one
            moved._remove_method = ax._remove_legend
            ax.legend_ = moved
        else:
            legend.remove()
            ax.add_artist(moved)
        moved_under.append(moved)
    _open_rows(fig, moved_under, renderer)
    return bool(moved_under)


#: where inside its axes a legend that covers data is tried before it moves under them, in order
INSIDE_PLACES = ("lower right", "upper right", "lower left", "upper left", "center right", "center left")


def _covers_nothing_at(legend, loc: str, renderer) -> bool:
    """Put `legend` at `loc` inside its axes: whether it lies on no data there (and inside the axes)."""
    legend.set_loc(loc)
    box = legend.get_window_extent(renderer)
    return legend.axes.bbox.contains(box.x0, box.y0) and legend.axes.bbox.contains(box.x1, box.y1) and \
        not _covers_data(legend.axes, box, renderer)


def _open_rows(fig, legends, renderer) -> None:
    """Where a legend moved under its panel runs into what lies below it (the next row's panel, its title or
    letter, a colour bar), the gap under that panel's row opens by as much: every axes and figure text from that
    row up moves up, and the figure grows taller by the sum, so no panel changes size (the legend is anchored to its
    axes in points, and follows it)."""
    pad = 4 * fig.dpi / 72  # display units kept between a legend and what is below it
    gaps: dict[float, float] = {}  # a row's bottom (display units): how much its gap opens (display units)
    for legend in legends:
        box, ax = legend.get_window_extent(renderer), legend.axes
        tops = [other.get_tightbbox(renderer).y1 for other in fig.axes if other is not ax and other.get_visible()
                and other.bbox.y1 <= ax.bbox.y0 + 1 and other.bbox.x0 < box.x1 and box.x0 < other.bbox.x1]
        need = max(tops, default=box.y0) + pad - box.y0
        if tops and need > 0:
            row = round(ax.bbox.y0, 1)
            gaps[row] = max(gaps.get(row, 0.0), need)
    if not gaps:
        return
    w, h = fig.get_size_inches()
    grown = h + sum(gaps.values()) / fig.dpi

    def lift(y: float) -> float:  # inches from the figure's bottom, before: after
        return y + sum(g for row, g in gaps.items() if y * fig.dpi >= row - 1) / fig.dpi

    for ax in fig.axes:
        x0, y0, aw, ah = ax.get_position(original=True).bounds
        ax.set_position([x0, lift(y0 * h) / grown, aw, ah * h / grown])
    for text in fig.texts:  # a layout's title (the suptitle), in figure units
        if text.get_transform() == fig.transFigure:
            text.set_y(lift(text.get_position()[1] * h) / grown)
    fig.set_size_inches(w, grown)


def _wrapped(text: str, chars: int, hyphens: bool = False) -> str:
    """`text` broken onto lines of about `chars` characters. Mathtext ($\\sigma = 0.1$) must not break across
    lines (each line is parsed alone): its spaces are held as NULs while wrapping, and no word is cut; a lone or
    escaped $ is plain text to matplotlib, and here."""
    import textwrap

    parts = re.split(r"(?<!\\)(\$[^$]*(?<!\\)\$)", text)
    # (re.split puts the matched math at the odd places, whatever the plain text around it starts with)
    held = "".join(p.replace(" ", "\0").replace("-", "\1") if i % 2 else p for i, p in enumerate(parts))
    # at a hyphen only where asked (`hyphens`): "best open-" over "endedness loss" read as two words
    return textwrap.fill(held, chars, break_long_words=False, break_on_hyphens=hyphens).replace(
        "\0", " ").replace("\1", "-")


def _renderer(fig):
    """A fresh renderer at the figure's dpi (matplotlib's private one where it has it, else the canvas'): a text's
    own may be an earlier draw's."""
    fresh = getattr(fig, "_get_renderer", None)
    return fresh() if fresh is not None else fig.canvas.get_renderer()


def _wrap_ylabels(fig) -> None:
    """Break y labels longer than their axes are high onto more lines: "best open-endedness loss" at 8 pt is
    1.3 in, a stacked panel of a column-wide figure 1 in high, and it ran past its panel into the legend and
    tick labels below."""
    renderer = _renderer(fig)
    for ax in fig.axes:
        label = ax.yaxis.label
        # from the label as it was: the figure may have been scaled since an earlier wrap (_fit_width)
        text = getattr(label, "_unwrapped", None) or label.get_text()
        if not ax.get_visible() or not label.get_visible() or not text or "\n" in text:
            continue
        label.set_text(text)
        length, room = label.get_window_extent(renderer).height, ax.bbox.height
        if length > room:
            label._unwrapped = text
            # lines of about the panel's height, shorter while they are still too many for it (no word is cut);
            # broken at a hyphen only where whole words do not fit ("open-endedness" is longer than a low panel)
            for hyphens in (False, True):
                words = re.split(r"\s+|(?<=-)", text) if hyphens else text.split()
                chars, longest = max(8, int(len(text) * room / length)), max(map(len, words))
                label.set_text(_wrapped(text, chars, hyphens))
                while label.get_window_extent(renderer).height > room and chars > longest:
                    chars -= 2
                    label.set_text(_wrapped(text, chars, hyphens))
                if label.get_window_extent(renderer).height <= room:
                    break


#: inches an axes' title may stick out past its axes, both sides together, before it is wrapped
TITLE_OVERHANG = 0.4


def _wrap_titles(fig, width: float) -> None:
    """Break titles wider than `width` inches onto more lines: no shrinking of the axes makes a 9 pt title
    narrower, and _fit_width shrank a figure under one ("DARE kept fraction (survivors rescaled to …)") to 0.3 in."""

    # ax.title is public; the left and right titles and the suptitle only as matplotlib's private attributes,
    # taken where they are (a matplotlib without them wraps the centre titles, and saves)
    renderer = _renderer(fig)
    # an axes' centre title at most a little wider than its axes: one sticking out past them on both sides (a
    # comparison's "mean over seeds; band: …") held the width, and the fit shrank the axes under it to half the figure
    titles = [(ax.title, min(width, ax.get_window_extent(renderer).width / fig.dpi + TITLE_OVERHANG))
              for ax in fig.axes]
    titles += [(t, width) for ax in fig.axes for t in (getattr(ax, "_left_title", None),
                                                       getattr(ax, "_right_title", None)) if t is not None]
    titles += [(t, width) for t in (getattr(fig, "_suptitle", None),) if t is not None]
    for title, most in titles:
        text = title.get_text()
        drawn = title.get_window_extent(renderer).width / fig.dpi if text else 0.0
        if drawn > most and "\n" not in text:  # lines of about equal length (not one word alone on the last)
            title.set_text(_wrapped(text, max(12, math.ceil(len(text) / math.ceil(drawn / most)) + 2)))


def _fit_width(fig, width: float, w0: float | None = None) -> None:
    """Scale `fig` until what a tight save writes is `width` inches wide, within 1 %: a figure made for a column
    is a column wide, so that a paper includes it at 100 % and prints its text at the sizes set. Too wide:
    colour bars, their labels and legends beside the axes are drawn past the figure's edge, and the tight box
    takes them in (three QD archives asked for 7 in came out 7.5 in); the axes give up the room, but never more
    than half of it (text that cannot fit leaves the figure wider rather than its axes a speck). Too narrow: a
    chart of a fixed aspect inside a taller box (a curve asked for 3.25 in came out 2.9 in); it grows, at most
    by half. w0: the width those bounds are of (default: the figure's now; a second fit after legends moved
    gives the first's, so that the halves do not compound)."""
    import matplotlib

    width -= 2 * matplotlib.rcParams["savefig.pad_inches"]  # the tight save's margin on either side
    width -= 0.05  # what the PDF's and SVG's text metrics may add to the raster measured here (3.27 in of 3.25)
    _wrap_titles(fig, width)
    w0 = w0 or fig.get_size_inches()[0]
    # up to 12 scalings: text wider than the axes (a title over a band of seeds) holds part of the width, and each
    # scaling takes about half the rest; at 5, comparisons stopped at 3.27 in of a 3.25 in column
    for _ in range(12):
        _wrap_ylabels(fig)  # at the panels' height now: a scaled figure's axes are lower
        drawn = fig.get_tightbbox().width  # inches
        if width * 0.99 <= drawn <= width:
            break
        w, h = fig.get_size_inches()
        # what sticks out (text) stays as it is: only the rest scales
        scale = min(max(0.5 * w0 / w, (w - (drawn - width * 0.995)) / w), 1.5 * w0 / w)
        if abs(scale - 1.0) < 1e-3:
            break
        fig.set_size_inches(w * scale, h * scale)
    else:  # the last scaling is not measured yet: its panels' labels wrapped to them
        _wrap_ylabels(fig)


#: the columns a figure's CSV starts with (figure_table): the panel (1, 2, … in the layout's order) and its title, the
#: element's label (its legend entry: a run's settings, a task) and its type (Curve, Area, HeatMap, …)
TABLE_COLUMNS = ("panel", "title", "label", "element")


def no_data(what: str = "the figure") -> ValueError:
    """The error for a .csv of a figure that is pictures or text alone (`what`: an atlas, a strip of frames, NAMM's
    text view): there are no numbers to write, and an empty file would pass for a figure without points."""
    return ValueError(f"{what} has no data to write as CSV (it is pictures or text); use .png, .svg, .pdf or .html")


#: the figures that are pictures alone, in refuse_csv's words: no .csv of them (`figure atlas`, `figure frames`,
#: the Search page's frames)
PICTURES = {"atlas": "an atlas (a picture of the population's frames)",
            "frames": "a strip of frames (pictures of the simulation)"}


def refuse_csv(what: str, out: str | Path) -> None:
    """no_data(`what`) for a .csv `out` (a file, or a page export's suffix alone): for figures that are pictures or
    text whatever their run (a strip of frames, an atlas), called before anything is read or drawn (frames renders
    the simulation first)."""
    if str(out).lower().endswith(".csv"):  # Path(".csv").suffix is "": a hidden file's name
        raise no_data(what)


#: the title HoloViews draws over a panel that sets none: matplotlib's plots' `title` default (the backend read first,
#: as _drawn_option reads options), the keys of an NdLayout's panel on a line of their own below its label and group
#: (Bokeh's default puts them on the same line, "{label} {group} {dimensions}")
DEFAULT_TITLE = "{label} {group}\n{dimensions}"


def _panel_title(panel, hv, key: tuple = (), dimensions: tuple = ()) -> str:
    """A panel's title as drawn: its own title option (either backend's), else one of its layers' (_drawn_option: a
    title set on an overlay's raster is the overlay's); "" where it is set empty (none drawn: a comparison's panel
    of several runs, which its legend names); DEFAULT_TITLE where none sets one. Formatted as HoloViews formats
    it (GenericElementPlot._format_title): "{label}", "{group}" (but the type's own name), "{type}" and
    "{dimensions}" (a panel of an NdLayout: its `key` in the layout's `dimensions`, "task: sort") filled in from
    the panel drawn (an overlay's own, where a layer set the title), outer spaces and line ends stripped: the CSV
    had "{label}: best so far" where the figure said "ours: best so far". A title HoloViews could not format (a
    brace of its own) is its text."""
    title = _drawn_option(panel, "title", hv)
    title = DEFAULT_TITLE if title is None else str(title)
    kind = type(panel).__name__
    # an NdLayout's panel: its key, two dimensions a line (ElementPlot._frame_title)
    keys = [dim.pprint_value_string(k) for dim, k in zip(dimensions, key, strict=False)]
    where = "\n".join(", ".join(keys[i:i + 2]) for i in range(0, len(keys), 2))
    try:
        drawn = title.format(label=str(panel.label or ""), group="" if panel.group == kind else str(panel.group),
                             type=kind, dimensions=where)
    except (KeyError, IndexError, ValueError):  # not a template: HoloViews would fail to draw it, the text stays
        return title
    return drawn.strip(" \n")


def _column_names(dimensions, taken) -> list[str]:
    """The columns of an element's dimensions: their labels (what the axes say: "best so far (loss ↓)"), a
    dimension whose label is taken (TABLE_COLUMNS, another of the element's) by its name, else by its label and
    name: one element's columns never merge."""
    names, seen = [], set(taken)
    for dim in dimensions:
        name = next(n for n in (dim.label, dim.name, f"{dim.label} ({dim.name})") if n not in seen)
        seen.add(name)
        names.append(name)
    return names


#: the name of a raster's key that is only where its picture draws a row (NAMM's retention raster: layer 0 head 0
#: at the top, row rows − 1), not data: a CSV leaves it out, the raster's own values saying what each row is (its
#: layer and KV head), as its ticks and hover do; written, it read as the layer and head (3 for L0 head 0)
PICTURE_ROW = "picture row"

#: elements whose y axis is their second key (a cell's or a point's position), not their first value
_TWO_KEYED = ("HeatMap", "Image", "QuadMesh", "Raster", "Points", "Nodes")


def _drawn_option(panel, name: str, hv):
    """A plot option as a panel draws it: its own, else the first of its layers' that sets it (HoloViews passes a
    title, an xlabel or a ylabel set on an overlay's layer to the overlay: NAMM's raster carries its panel's title,
    one curve of several the y axis's label), either backend's (matplotlib's first). The first that sets it wins
    even where it is empty, as in HoloViews (a title set to "" hides its layers' titles): "" where each backend's
    first is empty, None where none sets it (an element: its own option alone)."""
    found = None
    for backend in ("matplotlib", "bokeh"):
        for obj in panel.traverse(lambda x: x):
            options = hv.Store.lookup_options(backend, obj, "plot").kwargs
            if name in options:
                if options[name]:
                    return options[name]
                found = ""
                break
    return found


def _axis_labels(element, panel, hv) -> dict[str, str]:
    """The labels the axes show for an element's x and y dimensions where its plot (or its panel's overlay) sets
    them (xlabel, ylabel: "REINFORCE step" over a Curve of "x" and "y"), by dimension name: its columns are then
    named as a reader of the figure sees them. Elements of four keys (Rectangles, Segments) and a Graph's edges
    have no one dimension per axis: their own labels stay."""
    if len(element.kdims) > 2 or isinstance(element, hv.Graph) or not element.kdims:
        return {}
    y = element.kdims[1] if type(element).__name__ in _TWO_KEYED and len(element.kdims) > 1 else \
        (element.vdims or [None])[0]
    labels = {}
    for dim, option in ((element.kdims[0], "xlabel"), (y, "ylabel")):
        label = _drawn_option(element, option, hv) or _drawn_option(panel, option, hv)
        if dim is not None and isinstance(label, str) and label.strip():
            labels[dim.name] = label.strip()
    return labels


def _element_rows(element, hv, panel=None):
    """An element's data as a table of its dimensions' columns (kdims, then vdims: a gridded Image or HeatMap as
    x, y, value rows), one row per point, named as the axes say (_axis_labels, within `panel`); a Histogram's bins
    with their edges too ("score from", "score to": a re-plot draws the bars drawn, centres alone do not say
    them); a band's (an Area of two values) as "<y> (lower edge)" and "<y> (upper edge)". None for an element
    that holds no data: a picture (RGB), text (Labels: a heatmap's values written in its cells, already its rows)
    and reference marks but lines (annotations), a colour map's key (group "Key") that holds nothing but its
    stand-ins' positions.
    A Graph is its edges here; its nodes are an element of their own (figure_table). A key's stand-in that carries
    the value its colour stands for (a dimension past its position: NAMM's "state" 2 for "kept") is a row of that
    value alone, under its label: the table then says what the codes mean, as the legend does. A key named
    PICTURE_ROW is the picture's position of a row, not data: left out."""
    if isinstance(element, (hv.RGB, hv.Labels, hv.element.Annotation)):
        return None
    dims = [d for d in element.kdims + element.vdims if d.name != PICTURE_ROW]
    if element.group == "Key":
        position = element.kdims[:2] if type(element).__name__ in _TWO_KEYED else element.kdims[:1] + element.vdims[:1]
        dims = [d for d in dims if d not in position]
        if not dims:
            return None
    frame = element.dframe([d.name for d in dims])
    labels = _axis_labels(element, element if panel is None else panel, hv)
    frame.columns = _column_names([d.clone(label=labels.get(d.name, d.label)) for d in dims], TABLE_COLUMNS)
    if isinstance(element, hv.Histogram) and len(frame):
        edges, x = element.edges, frame.columns[0]
        frame.insert(1, f"{x} from", edges[:-1])
        frame.insert(2, f"{x} to", edges[1:])
    if isinstance(element, hv.Area) and len(element.vdims) == 2:  # a band: its edges apart from the line's values
        # (its lower edge took the y axis's column, where its mean line's values are; its upper edge was "hi")
        y = frame.columns[len(element.kdims)]
        frame.columns = [*frame.columns[:-2], f"{y} (lower edge)", f"{y} (upper edge)"]
    return frame


def _line_rows(line, drawn: list, hv, panel=None):
    """A reference line (HLine, VLine) as one row: its position in the column of the axis it marks, named as the
    panel's first data element (`drawn`) names its x or y (_axis_labels; x, y without one), so that a re-plot
    draws it where it was (the generation on show, a starting value). A heatmap's or an image's y is its second
    key, not its value (an HLine over one went to the value's column)."""
    import pandas as pd

    axes = drawn[0] if drawn else None
    if isinstance(line, hv.VLine):
        dims = axes.kdims[:1] if axes is not None else []
    elif axes is not None and type(axes).__name__ in _TWO_KEYED:
        dims = axes.kdims[1:2]
    else:
        dims = (axes.vdims or axes.kdims[1:])[:1] if axes is not None else []
    labels = _axis_labels(axes, axes if panel is None else panel, hv) if axes is not None else {}
    named = [d.clone(label=labels.get(d.name, d.label)) for d in dims]
    column = _column_names(named, TABLE_COLUMNS)[0] if dims else ("x" if isinstance(line, hv.VLine) else "y")
    return pd.DataFrame({column: [line.data]})


def figure_table(obj):
    """Every element's data in a HoloViews figure as one tidy table (pandas), the numbers behind it for a paper's
    own plotting (pgfplots, matplotlib) or a screen reader (a chart is an image to it): one row per data point,
    its panel (TABLE_COLUMNS: 1, 2, … in a layout's order, and its title), its element's label (the legend entry)
    and type, then the element's own dimensions by their labels (names where labels clash); NaN in the columns a
    layer lacks. Every row of the figure as given: the pages' exports build their figures whole (points=None).
    Reference lines are a row each (_line_rows); pictures, text and a colour map's key are left out
    (_element_rows). A figure with no data at all is refused (no_data) — save's .csv writes this table."""
    import pandas as pd

    hv = _hv()
    if isinstance(obj, (hv.NdLayout, hv.GridSpace)):  # panels under keys
        panels = list(obj.data.items())
    else:
        panels = [((), p) for p in (obj if isinstance(obj, hv.Layout) else [obj])]
    dimensions = tuple(obj.kdims) if isinstance(obj, hv.NdLayout) else ()  # an NdLayout's titles say its keys
    frames = []
    for i, (key, panel) in enumerate(panels, 1):
        title = _panel_title(panel, hv, key, dimensions)
        elements = []
        for element in panel.traverse(lambda e: e, [hv.Element]):
            elements += [element, element.nodes] if isinstance(element, hv.Graph) else [element]
        data = [(e, _element_rows(e, hv, panel)) for e in elements]
        drawn = [e for e, rows in data if rows is not None]
        for element, rows in data:
            if isinstance(element, (hv.HLine, hv.VLine)):
                rows = _line_rows(element, drawn, hv, panel)
            if rows is None or rows.empty:  # an empty layer (no path drawn yet) adds no column no row fills
                continue
            # whole numbers stay whole where another layer's NaN fills their column (not 3.0)
            rows = rows.astype({c: "Int64" for c in rows if pd.api.types.is_integer_dtype(rows[c])})
            meta = pd.DataFrame({"panel": i, "title": title, "label": str(element.label or ""),
                                 "element": type(element).__name__}, index=rows.index)
            frames.append(pd.concat([meta, rows], axis=1))
    if not frames:  # every layer without rows (skipped above): nothing to write
        raise no_data()
    return pd.concat(frames, ignore_index=True, sort=False)


def _write_table(table, tmp: Path) -> None:
    """figure_table's rows as CSV: floats as Python writes them (the shortest text that reads back as the same
    number: every digit a paper's re-plot needs), NaN for what a layer lacks, UTF-8 (labels hold ↓ and σ) with
    "\n" line ends on every machine (the same figure, the same bytes)."""
    table.to_csv(tmp, index=False, na_rep="NaN", lineterminator="\n", encoding="utf-8")


def save(obj, out: str | Path, dpi: int | None = None, style: dict | None = None,
         width: float | None = None, font: str | None = None, rename: dict[str, str] | None = None) -> Path:
    """Write a HoloViews object: .png/.svg/.pdf with the matplotlib backend and the paper style,
    .html with Bokeh and inline resources, or .csv, its data as a table (figure_table; no width, dpi or font: they
    are refused). Written atomically. dpi: a raster's resolution (None: the style's).
    style: PAPER_STYLE keys changed for this figure (e.g. {"fig_inches": panel_inches(3, 1)}). width: the figure's
    width in inches, its height
    scaled with it (default: the style's, COLUMN_WIDTH for one plot; e.g. PAGE_WIDTH, or 5.5 for a one-column
    NeurIPS or ICLR page): a paper then prints its text at the sizes set, not shrunk. font: "sans" (default) or
    "serif" (FONTS: Times-like, for a paper set in Times). Legend names keep their colours across figures
    (colours_for; pin your own with pin_colours). rename: legend entries renamed first ({"sigma=0.3, seed=1":
    "ours"}: figures.rename, checked likewise)."""
    hv = _hv()
    if not isinstance(obj, hv.core.Dimensioned):  # a matplotlib figure failed deep inside ("no attribute 'map'")
        raise ValueError(f"save writes HoloViews objects (figures.loss_curves, compare_curves, atlas, a page's "
                         f"figure), got a {type(obj).__module__}.{type(obj).__name__}; a matplotlib figure has its "
                         f"own fig.savefig")
    out = check_figure_path(out)
    suffix = out.suffix.lower()
    obj = _rename_legend(obj, rename or {})
    if suffix == ".csv":  # the numbers alone: the printed size and face are refused, not ignored
        check_width(width, out)
        check_dpi(dpi, out)
        check_font(font, out)
        table = figure_table(obj)
        atomic_write(out, functools.partial(_write_table, table))
        return out
    # a layout that set its own size (a strip of frames: figures.frames) keeps it, unless the caller's style says
    own = hv.Store.lookup_options("matplotlib", obj, "plot").kwargs.get("fig_inches") \
        if isinstance(obj, hv.Layout) else None
    pictures = (hv.RGB, hv.Image)  # a strip of frames has no labels to keep room for
    if isinstance(obj, pictures) and not own and "fig_inches" not in (style or {}):
        # a picture alone (an atlas) in a box of its own shape, room for a title above: in the column's
        # 3.25 × 2.3 in box a square one filled its height, 2.6 in wide (5.2 of 6.75 asked)
        rows, cols = obj.dimension_values(2, flat=False).shape[:2]
        w = PAPER_STYLE["fig_inches"][0]
        own = (w, round(w * rows / cols + 0.4, 3))
    style = {**PAPER_STYLE, **({"fig_inches": tuple(own)} if own else {}), **(style or {})}
    if check_width(width, out) is not None:
        w, h = style["fig_inches"]
        style["fig_inches"] = (float(width), round(h * width / w, 3))
    dpi = check_dpi(dpi, out)
    check_font(font, out)
    if width is not None and isinstance(obj, hv.Layout) and not all(isinstance(p, pictures) for p in obj):
        # each panel keeps room for its labels and title
        cols = obj.shape[1]
        if width < cols * MIN_PANEL_WIDTH - 1e-9:
            raise ValueError(f"--width {width:g}: a figure of {cols} panels across needs at least "
                             f"{cols * MIN_PANEL_WIDTH:g} in (their labels ran into each other); give --width "
                             f"{cols * MIN_PANEL_WIDTH:g} or more")

    def write(tmp: Path) -> None:
        if suffix == ".html":
            # Bokeh alone, not Panel's save: on a served page Panel's save moved its shared stylesheet models
            # into the export's document and the page's next updates failed ("Models must be owned by only a
            # single document").
            # And a document of its own, the plot its one root, so that neither HoloViews nor file_html reaches
            # for Bokeh's current document: in a server's worker thread that is whatever document a session's
            # callback holds at that moment, the destroyed one of a closed tab included ("'Document' object has
            # no attribute '_theme'"). A server-mode renderer attaches the plot to the document it is given.
            from bokeh.core.validation import silenced
            from bokeh.core.validation.warnings import FIXED_SIZING_MODE
            from bokeh.document import Document
            from bokeh.embed import file_html
            from bokeh.resources import INLINE

            doc = Document()
            state = hv.renderer("bokeh").instance(mode="server").get_plot(_html_width(obj, hv), doc=doc).state
            doc.add_root(state)
            # a plot sized by its frame and aspect draws as it should; Bokeh's check for fixed width and height
            # printed a warning line per export: silenced for this one (for the process, it hid every later
            # W-1005 of a server's pages from its log)
            with silenced(FIXED_SIZING_MODE):
                page = file_html(state, INLINE, out.stem, template=HTML_TEMPLATE,
                                 template_variables={"tooltip_css": TOOLTIP_CSS})
            # Panel adds a module shim by a server's relative path to Bokeh's resources: a file has no server, so
            # a browser failed that load (and a hosted copy requested it); nothing here needs it
            page = re.sub(r'<script[^>]*\ssrc="static/[^"]*"[^>]*>\s*</script>\s*', "", page)
            # and the stylesheets of Panel's widgets by their CDN: once a Tabulator was made in the process (a page,
            # a notebook), Bokeh's bundle linked its CSS into every export, a request that fails offline; a figure
            # has no widget that needs it
            page = re.sub(r'<link[^>]*\shref="https?://[^"]*"[^>]*>\s*', "", page)
            tmp.write_text(_stable_ids(page), encoding="utf-8")
            return
        import matplotlib.pyplot as plt

        # rendered by name: the current backend (Bokeh on the pages) stays what it is. The font sizes go to every
        # panel of a layout (on the layout alone they reached its title only), the figure size to the whole.
        styled = obj.map(lambda part: part.opts(fontsize=style["fontsize"], backend="matplotlib", clone=True),
                         lambda part: isinstance(part, hv.core.Dimensioned))
        styled = styled.opts(fig_inches=style["fig_inches"], backend="matplotlib", clone=True)
        styled = styled.map(lambda part: part.opts(sublabel_size=style["fontsize"]["title"], backend="matplotlib",
                                                   clone=True), hv.Layout)  # the panels' A, B: 18 pt otherwise
        styled = _chart_aspect(_paper_colours(styled, hv), hv)
        # text HoloViews sizes nothing for (a heatmap's cell values) takes the paper's smallest size, not 10 pt
        with MATPLOTLIB_LOCK, plt.rc_context({**PAPER_RC, **FONTS[font or "sans"],
                                              "font.size": min(style["fontsize"].values())}):
            fig = hv.render(styled, backend="matplotlib")
            w0 = fig.get_size_inches()[0]
            _legends_off_the_data(fig, style["fig_inches"][0] - 0.1)
            _unclip_legends(fig)
            # text measured near the dpi it is written at (its extent differs a little by dpi), at most the paper's:
            # a 2400 dpi canvas only to measure would cost hundreds of MB
            fig.set_dpi(min(dpi or style["dpi"], style["dpi"]))
            _fit_width(fig, style["fig_inches"][0])
            # scaled to the width, the axes shrink under text that does not: a legend on free ground before may
            # lie on the data now (a band: matplotlib's "best" sees lines only); looked at again at the size fitted,
            # until none moves (a moved legend never comes back inside: a pass per legend at most)
            for _ in range(3):
                if not _legends_off_the_data(fig, style["fig_inches"][0] - 0.1):
                    break
                _unclip_legends(fig)
                _fit_width(fig, style["fig_inches"][0], w0)
            fig.savefig(tmp, dpi=dpi or style["dpi"], bbox_inches="tight", format=suffix[1:],
                        metadata=NO_DATE.get(suffix))
            plt.close(fig)

    atomic_write(out, write)
    return out


#: a chart's hover tooltip dark with white text, on the served pages (dashboards.shell) and in .html exports (save):
#: Bokeh colours its labels ("run:", "index:") a fixed light blue (#26aae1) inside the tooltip's shadow root, where no
#: page stylesheet reaches; on Bokeh's white, 95 % opaque tooltip they read at 2.5:1 (WCAG AA asks 4.5:1). On #1a1d21
#: they read at 5.8:1, the white values at 14.7:1. The tooltip's element is the page body's child, and a page rule on
#: a shadow host wins over the host's own :host rule: this sets the custom properties that rule takes its colours
#: from (the widgets' help tooltips, if there, read the same)
TOOLTIP_CSS = """
.bk-Tooltip { --tooltip-color: #1a1d21; --tooltip-text: #ffffff; --tooltip-border: #1a1d21;
              --tooltip-arrow-color: #1a1d21; --tooltip-arrow-inner-color: #1a1d21; }
"""

#: Bokeh's file template (bokeh.core.templates.FILE, extended) with TOOLTIP_CSS in the page's head, after Bokeh's own
#: styles: the same bytes for the same figure, 196 more of them
HTML_TEMPLATE = "{% block postamble %}<style>{{ tooltip_css }}</style>\n{% endblock %}"


#: an .html export's chart (curves, bands) without a width of its own: Bokeh's 300 px default kept 95 px for the
#: plot beside a legend on the right, and cut a comparison's title short
HTML_CHART_WIDTH = 640


def _html_width(obj, hv):
    """obj with HTML_CHART_WIDTH on each chart (alone, or a panel of a layout) that sets no width for Bokeh."""
    charts = (hv.Overlay, hv.NdOverlay, hv.Curve, hv.Area)

    def widen(part):
        options = hv.Store.lookup_options("bokeh", part, "plot").kwargs
        if not isinstance(part, charts) or options.get("width") is not None or options.get("frame_width"):
            return part
        return part.opts(width=HTML_CHART_WIDTH, backend="bokeh", clone=True)

    if isinstance(obj, hv.Layout):  # its panels, the layout's own options (title, columns) kept
        return obj.clone(data=[(key, widen(part)) for key, part in obj.data.items()])
    return widen(obj)


#: a chart alone (curves, bands, bars) in a paper figure is this many times as wide as high: HoloViews' square axes
#: made one figure 2.3 in wide and the next 3.1, their ticks 7.6 to 10 pt once each was scaled to a column
CHART_ASPECT = 1.6


def _chart_aspect(obj, hv):
    """obj with CHART_ASPECT when it is one chart or an overlay of charts still on the default square shape;
    layouts, pictures, heatmaps and figures that chose a shape keep theirs."""
    charts = (hv.Curve, hv.Area, hv.Scatter, hv.Bars, hv.Spread, hv.Histogram, hv.ErrorBars)
    marks = (hv.HLine, hv.VLine, hv.HSpan, hv.VSpan)  # a reference line on a chart leaves it a chart
    parts = list(obj.values()) if isinstance(obj, (hv.Overlay, hv.NdOverlay)) else [obj]
    parts = [e for part in parts for e in (part.values() if isinstance(part, hv.NdOverlay) else [part])]
    if not any(isinstance(part, charts) for part in parts) or not all(
            isinstance(part, charts + marks) for part in parts):
        return obj
    if hv.Store.lookup_options("matplotlib", obj, "plot").kwargs.get("aspect", "square") != "square":
        return obj
    return obj.opts(aspect=CHART_ASPECT, backend="matplotlib", clone=True)


def _paper_colours(obj, hv):
    """Okabe & Ito's colours for every element left to HoloViews' default colour cycle (QD curves, merge fitness,
    task-vector norms, NAMM cache sizes): its red and yellow are ΔE 13.5 apart to a deuteranope, its red and
    green 10 to a protanope (Okabe & Ito's first three: over 50). An element with a legend name takes that name's
    colour (colours_for: pinned, a task's own, else the next free), so a task or a method reads alike in every
    figure and in every panel of one; unnamed ones cycle through the colours no name took. Colours a plot chose
    stay, but for a name whose colour a pin given after the figure was built takes (it moves to a colour the
    figure lacks); the pages (Bokeh) keep their own."""
    plots = hv.Store.registry.get("matplotlib", {})

    def cycled(part) -> list[str]:
        style = hv.Store.lookup_options("matplotlib", part, "style").kwargs
        # only matplotlib's own options: the lookup also returns those set for Bokeh (a Labels' text_color)
        own = set(getattr(plots.get(type(part)), "style_opts", ()))
        return [k for k, v in style.items() if k in own and isinstance(v, hv.Cycle) and v.key == "default_colors"]

    def chosen(part) -> dict[str, str]:
        """The colours a figure set on the part itself (a comparison's curve and band), by option."""
        style = hv.Store.lookup_options("matplotlib", part, "style").kwargs
        own = set(getattr(plots.get(type(part)), "style_opts", ()))
        return {k: style[k].lower() for k in ("color", "facecolor") if k in own and isinstance(style.get(k), str)}

    def pinned_to(part) -> str | None:
        return PINNED_COLOURS.get(_legend_key(part.label)) if part.label else None

    is_element = _named_data(hv)  # a colour map's key keeps its colours, pinned names or not
    parts = list(obj.traverse(lambda part: part, [is_element]))
    names = [part.label for part in parts if part.label and cycled(part)]
    colours = colours_for(names)
    named = {c.lower() for c in colours.values()}
    rest = hv.Cycle([c for c in OKABE_ITO if c.lower() not in named] or list(OKABE_ITO))
    # a pin on a figure built before it (renamed since: `--rename sigma=0.1 ours --colour ours=…`) may take the
    # colour the figure chose for another name: that name moves to a colour no part of the figure has (two
    # curves were drawn in one colour); the colours the figure chose elsewhere stay (they may mean something)
    late = {pinned_to(part).lower() for part in parts if pinned_to(part) and not cycled(part)}
    clashing = list(dict.fromkeys(part.label for part in parts if late and part.label and not pinned_to(part)
                                  and not cycled(part) and late & set(chosen(part).values())))
    kept = {c for part in parts if not pinned_to(part) and part.label not in clashing for c in chosen(part).values()}
    used = kept | late | named | {c.lower() for c in PINNED_COLOURS.values()}
    free = [c for c in OKABE_ITO if c.lower() not in used] or [c for c in OKABE_ITO if c.lower() not in late]
    moved = {name: free[i % len(free)] for i, name in enumerate(clashing)}

    def recolour(part):
        keys = cycled(part)
        pinned = pinned_to(part)
        if pinned and not keys:  # a figure built before the pin (its colours chosen then): the pin holds
            style = hv.Store.lookup_options("matplotlib", part, "style").kwargs
            own = set(getattr(plots.get(type(part)), "style_opts", ()))
            keys = [k for k in ("color", "facecolor") if k in own and (k == "color" or k in style)]
        elif part.label in moved:
            keys = [k for k, c in chosen(part).items() if c in late]
            return part.opts(**dict.fromkeys(keys, moved[part.label]), backend="matplotlib", clone=True)
        if not keys:
            return part
        colour = pinned or (colours.get(part.label, rest) if part.label else rest)
        return part.opts(**dict.fromkeys(keys, colour), backend="matplotlib", clone=True)

    return obj.map(recolour, is_element)


def best_video(store: RunStore | str | Path, run_id: str, out: str | Path, steps: int | None = None,
               size: int | None = None, every: int | None = None, fps: int = 30) -> Path:
    """MP4 / GIF (or PNG of the last frame) of a run's best θ, re-simulated from its config and the initial
    state it scored from (asal.driver.best_seed: run.json's best_seed), as best.mp4; size: the frames' side in
    pixels (default: the run's render size, as best.mp4 and figures.frames); every: a frame every N steps
    (default: steps // 120, about 120 frames, as best.mp4); fps: frames per second."""
    store = RunStore.of(store)
    from workbench.asal.evaluate import DEFAULT_STEPS
    from workbench.export import export
    from workbench.simulations import make_substrate

    steps, every = (None if v is None else count(v, name) for v, name in ((steps, "steps"), (every, "every")))
    size = None if size is None else count(size, "size")
    run = store.open(run_id)
    info = run.info
    if "eval" not in info.get("config", {}):  # merges, CycleQD, experts and NAMM runs have no simulation
        kind = info.get("kind")
        raise ValueError(f"run {run_id!r} is {a_kind_run(kind)}; a video shows the best simulation of an ASAL "
                         "run (workbench asal target|openended|illuminate|sweep)")
    ev = info["config"]["eval"]
    if not (run.path / "best.npy").exists():
        raise ValueError(no_best_yet(run))
    sub = make_substrate(ev["substrate"], **ev.get("overrides", {}))
    theta = run.read_array("best.npy")
    steps = steps if steps is not None else ev.get("steps") or DEFAULT_STEPS[ev["substrate"]]
    from workbench.asal.driver import best_seed

    return export(sub, sub.decode(theta), steps, out, size=size or ev.get("size", 224), seed=best_seed(run, info),
                  strict=True,
                  every=every if every is not None else max(1, steps // 120), fps=fps)
