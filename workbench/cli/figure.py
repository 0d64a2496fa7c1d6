"""`workbench figure curves|compare|atlas|video`: paper figures and videos of runs."""

from __future__ import annotations

import argparse

from workbench.cli.common import FRAME_SIZE, POSITIVE


def cmd_figure(args) -> int:
    from workbench import figures
    from workbench.runs import RunStore

    store = RunStore(args.runs)
    if args.what == "video":
        print(figures.best_video(store, args.ids[0], args.out, steps=args.steps, size=args.size))
        return 0
    # before any run is read
    figures.check_figure_path(args.out)
    figures.check_width(args.width, args.out)
    figures.check_font(args.font, args.out)
    # pinned for this command only: main() may run inside a notebook, whose later figures keep their own
    before = figures.pin_colours(getattr(args, "colour", None) or [])
    try:
        out = _figure(figures, store, args)
    finally:
        figures.PINNED_COLOURS.clear()
        figures.PINNED_COLOURS.update(before)
    print(out)
    return 0


def _figure(figures, store, args):
    """The figure `args.what` of args.ids written to args.out; its path."""
    saved = {"dpi": args.dpi, "width": args.width, "font": args.font}
    if args.what == "curves":
        figure = figures.loss_curves(store, args.ids, args.metric)
        _check_pinned(figures, figure, getattr(args, "colour", None))
        out = figures.save(figure, args.out, **saved)
        _say_undrawn(store, [store.open(i).id for i in args.ids], set())
    elif args.what == "compare":
        from workbench.compare import check_ids, compare_runs

        check_ids(args.ids)
        comparison = compare_runs(store, args.ids)
        figure = figures.compare_curves(comparison)
        _check_pinned(figures, figure, getattr(args, "colour", None))
        out = figures.save(figure, args.out, **saved)
        _say_undrawn(store, [r["id"] for r in comparison.rows], set(comparison.curves["run_id"]))
    else:  # atlas: drawn at whole-pixel blocks for the size it prints at (an .html page shows its own pixels)
        pixels = 1 if args.out.lower().endswith(".html") else \
            int((args.width or figures.COLUMN_WIDTH) * (args.dpi or figures.PAPER_STYLE["dpi"]))
        out = figures.save(figures.atlas(store, args.ids[0], pixels), args.out, **saved)
    return out


def _check_pinned(figures, figure, colours: list[str] | None) -> None:
    """A --colour NAME that is no legend entry of the figure (a slip in a label) is refused with the entries
    there are, before anything is written: it would have coloured nothing, silently."""
    names = figures.legend_names(figure)
    for name in figures.check_colours(colours or []):
        if name not in names:
            raise ValueError(f"--colour {name}=…: the figure has no legend entry {name!r}; its entries are "
                             + ", ".join(repr(n) for n in names))


def _say_undrawn(store, ids: list[str], drawn: set[str]) -> None:
    """A note for each run asked for that the figure leaves out, having no metrics yet (it was silent)."""
    from workbench.cli.common import say

    for run_id in ids:
        if run_id not in drawn and not (store.root / run_id / "metrics.parquet").is_file():
            say("note", f"{run_id} has no metrics yet: the figure leaves it out")


def register(sub: argparse._SubParsersAction) -> None:
    figure = sub.add_parser("figure", help="paper figures of runs: curves, compare, atlas, video")
    figure_sub = figure.add_subparsers(dest="what", required=True, metavar="WHAT")
    for name, n, text in (("curves", "+", "loss curves of runs (.png .svg .pdf .html)"),
                          ("compare", "+", "best so far of two or more runs; runs that differ only by seed as their "
                                           "setting's mean with the range of its seeds (.png .svg .pdf .html)"),
                          ("atlas", 1, "an illumination run's atlas (.png .svg .pdf .html)"),
                          ("video", 1, "the best simulation of a run (.mp4 .gif .png)")):
        f = figure_sub.add_parser(name, help=text)
        f.add_argument("ids", nargs=n, metavar="ID")
        f.add_argument("--out", required=True, help="the file to write; its suffix picks the format: "
                                                    + text.rsplit("(", 1)[1].rstrip(")"))
        f.add_argument("--runs", default="runs", help="run store folder (default: runs)")
        # each subcommand has the flags it reads, no others: a flag it would ignore is refused by argparse
        if name != "video":
            f.add_argument("--dpi", type=POSITIVE, default=None, help="raster resolution (default: 300)")
            f.add_argument("--width", type=float, default=None, metavar="INCHES",
                           help="the figure's width in inches, text kept at 7-9 pt (default: a column, 3.25; a "
                                "two-column page's text width 6.75, a one-column NeurIPS/ICLR page 5.5)")
            f.add_argument("--font", choices=("sans", "serif"), default=None,
                           help="the text's face: sans (default, DejaVu Sans) or serif (Times-like STIX, for a "
                                "paper set in Times)")
            if name != "atlas":
                f.add_argument("--colour", action="append", default=None, metavar="NAME=COLOUR",
                               help="draw the legend entry NAME in COLOUR (#D55E00, black, tab:blue), e.g. the "
                                    "same method alike in every figure; repeat for more (default: tasks in "
                                    "their own colours, the rest in Okabe & Ito's)")
        if name == "curves":
            f.add_argument("--metric", default=None, help="a metrics column to plot as stored (default: the best "
                                                        "so far in each run's own metric and direction)")
        if name == "video":
            f.add_argument("--steps", type=POSITIVE, default=None, help="steps (default: the run's)")
            f.add_argument("--size", type=FRAME_SIZE, default=224, help="frame size (default: 224)")
        f.set_defaults(func=cmd_figure)
