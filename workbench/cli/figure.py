"""`workbench figure curves|compare|atlas|frames|view|namm|video`: paper figures and videos of runs."""

from __future__ import annotations

import argparse

from workbench.cli.common import FRAME_SIZE, POSITIVE, add_video_arguments, say, video_arguments, whole
from workbench.cli.namm import TASK_NAMES


def cmd_figure(args) -> int:
    from workbench import figures
    from workbench.runs import RunStore

    store = RunStore(args.runs)
    if args.what == "video":
        video_args = video_arguments(args)  # before the run is read
        print(figures.best_video(store, args.ids[0], args.out, steps=args.steps, size=args.size, **video_args))
        return 0
    # before any run is read. A figure of pictures or text whatever the run: its .csv refused first, before the
    # flags a .csv refuses (the fix is another format, which takes them), the simulation renders (frames), the atlas
    # is read or the model loads; another suffix is refused naming the formats it is written in (not .csv)
    no_table = _no_table(args)
    if no_table is not None:
        figures.refuse_csv(no_table, args.out)
    figures.check_figure_path(args.out, figures.FORMATS if no_table is None else figures.PICTURE_FORMATS)
    figures.check_width(args.width, args.out)
    figures.check_dpi(args.dpi, args.out)
    figures.check_font(getattr(args, "font", None), args.out)
    if getattr(args, "colour", None):
        figures.refuse_unprinted("--colour", "sets the lines of", args.out, "an .html figure keeps its page's colours",
                                 "a .csv file is the figure's numbers, with no colours")
    # pinned for this command only: main() may run inside a notebook, whose later figures keep their own
    pinned = figures.check_colours(getattr(args, "colour", None) or [])
    before = figures.pin_colours(pinned)
    try:
        out = _figure(figures, store, args, pinned)
    finally:
        figures.PINNED_COLOURS.clear()
        figures.PINNED_COLOURS.update(before)
    print(out)
    return 0


def _no_table(args) -> str | None:
    """What `args` draw, in refuse_csv's words, where it is pictures or text whatever the run (figures.PICTURES,
    NAMM's text view), else None."""
    from workbench import figures

    if args.what == "namm" and args.view == "text":
        return "--view text (the prompt's tokens)"
    return figures.PICTURES.get(args.what)


#: the formats a figure with data is written in (a picture alone: all but .csv), as the commands' help says them
TABLE_FORMATS, PICTURE_FORMATS = "(.png .svg .pdf .html .csv)", "(.png .svg .pdf .html)"

#: figure compare --band: workbench.compare.BANDS' names (a test checks they agree; compare imports pandas)
BAND_CHOICES = ("range", "sd", "ci95")


def _figure(figures, store, args, pinned: dict[str, str]):
    """The figure `args.what` of args.ids written to args.out (its colours `pinned`, checked against its legend);
    its path."""
    if args.what == "namm":
        return namm_view(store, args, pinned)
    style, undrawn = None, None  # the figure's own style (a page's view); the runs a curve figure left out
    if args.what == "curves":
        figure = figures.loss_curves(store, args.ids, args.metric)
        undrawn = ([store.open(i).id for i in args.ids], set())
    elif args.what == "compare":
        from workbench.compare import check_ids, compare_runs

        check_ids(args.ids)
        comparison = compare_runs(store, args.ids)
        figure = figures.compare_curves(comparison, args.band)
        if args.band != "range" and not comparison.has_replicates:
            say("note", f"--band {args.band}: no setting of these runs has several seeds, so each run is its own "
                        "curve and no band is drawn")
        undrawn = ([r["id"] for r in comparison.rows], set(comparison.curves["run_id"]))
    elif args.what == "frames":
        # its pixels in whole blocks for the size it prints at (an .html page shows its own pixels); at the strip's
        # own size (a page at most)
        figure = figures.frames(store, args.ids[0], args.frames, args.steps, args.size, width=args.width,
                                dpi=args.dpi, member=args.member, upscale=not args.out.lower().endswith(".html"))
    elif args.what == "view":
        figure, style = page_view(store, args.ids[0], args.view, args.generation,
                                  {"--colour": pinned, "--rename": getattr(args, "rename", None)})
    else:  # atlas: drawn at whole-pixel blocks for the size it prints at (an .html page shows its own pixels)
        pixels = 1 if args.out.lower().endswith(".html") else \
            int((args.width or figures.COLUMN_WIDTH) * (args.dpi or figures.PAPER_STYLE["dpi"]))
        figure = figures.atlas(store, args.ids[0], pixels)
    # before the pins: --colour takes the new names (frames and atlas have no --rename)
    figure = figures.rename(figure, figures.rename_pairs(getattr(args, "rename", None) or []))
    _check_pinned(figures, figure, pinned)
    out = figures.save(figure, args.out, style=style, dpi=args.dpi, width=args.width, font=getattr(args, "font", None))
    if undrawn is not None:
        _say_undrawn(store, *undrawn)
    return out


#: the views `figure view` draws, per kind of run: the pages' own (QD archives, Experts, Merge), as their export
#: buttons write them
PAGE_VIEWS = {
    "qd": ("archives", "sampling", "curves", "lineage", "children", "baselines"),
    "map-elites": ("archives",),
    "experts": ("z", "z_rank", "curve", "alpha", "confusion", "shots", "strategies", "svf_lora"),
    "merge": ("recipe", "path", "fitness", "scores", "norms", "cosine", "conflicts"),
}
PAGE_VIEWS["adapt"] = PAGE_VIEWS["experts"]
ALL_VIEWS = tuple(dict.fromkeys(v for views in PAGE_VIEWS.values() for v in views))
#: the QD page's views (of qd and MAP-Elites runs) that never have legend entries (the archives' and sampling
#: cells' key is a colour bar, the lineage's its roles' colour map, the baselines' bars are named on their axis): a
#: --colour or --rename for them is refused before the run's models load (a test checks the page agrees)
QD_NO_LEGEND = ("archives", "sampling", "lineage", "baselines")


def _refuse_legend_flags(given: dict) -> None:
    """For a view that never has legend entries: the first of --colour and --rename (flag -> what was given) that
    was given, refused (drawn, the figure would have nothing they could reach)."""
    from workbench import figures

    for flag, value in given.items():
        if value:
            raise figures.no_legend_entries(flag)


def page_view(store, run_id: str, view: str | None, generation: int | None, legend_flags: dict | None = None):
    """A page's view of a run as its export writes it: (HoloViews figure, paper style). The run's kind picks the
    page (a CycleQD or MAP-Elites run: QD archives; experts and adapt: Experts; merge: Merge); `view` must be one
    it has (default: the first the page shows it with); `generation` (CycleQD) the archives as they stood then
    (default: the last). legend_flags: flag -> what was given for it (--colour, --rename), refused for a QD view
    that has no legend entries, before the page's model loads."""
    from workbench.runs import a_kind_run

    run = store.open(run_id)
    info = run.info
    algorithm = (info.get("config") or {}).get("algorithm")
    kind = "map-elites" if info.get("kind") == "illuminate" and algorithm == "map-elites" else info.get("kind")
    if kind not in PAGE_VIEWS:
        raise ValueError(f"run {run.id} is {a_kind_run(kind)}; `figure view` draws the pages' views of "
                         "qd, MAP-Elites, experts, adapt and merge runs (a search: figure curves, compare, atlas, "
                         "frames or video; a namm run: figure namm)")
    if view is not None and view not in PAGE_VIEWS[kind]:
        raise ValueError(f"--view {view}: {a_kind_run(kind)}'s views are {', '.join(PAGE_VIEWS[kind])}")
    if generation is not None and kind != "qd":
        raise ValueError(f"--generation picks a CycleQD run's archives; run {run.id} is {a_kind_run(kind)}: "
                         "leave --generation out")
    if generation is not None and (view or "archives") not in GENERATION_VIEWS:
        raise ValueError(f"--generation draws the {', '.join(GENERATION_VIEWS)} views at a generation; "
                         f"--view {view or 'archives'} has none: leave --generation out")
    # the QD page opens on its archives (data.views[0] for every qd and MAP-Elites run)
    if kind in ("qd", "map-elites") and (view or "archives") in QD_NO_LEGEND:
        _refuse_legend_flags(legend_flags or {})
    root = str(store.root)
    if kind in ("qd", "map-elites"):
        from workbench.dashboards.qd import QDModel

        model = QDModel(runs_dir=root, autoload=False)
        model.open_run(run.id)
        if generation is not None:
            last = model.data.generations[-1]
            if generation > last:
                raise ValueError(f"--generation {generation}: run {run.id} has generations 0 to {last}")
            model.generation = generation
        views = model.data.views
    elif kind in ("experts", "adapt"):
        from workbench.dashboards.experts import ExpertsModel

        model = ExpertsModel(runs_dir=root)
        model.choose(run.id)
        views = [v for v in model.data.views if v in PAGE_VIEWS[kind]]
    else:
        from workbench.dashboards.merge import MergeModel

        model = MergeModel(runs_dir=root)
        model.choose(run.id)
        views = [v for v in PAGE_VIEWS[kind] if model.has(v)]
    status = run.live_status(info)  # a killed run is interrupted, not the "running" it last wrote
    if not views:
        raise ValueError(f"run {run.id} has nothing to draw yet (status {status})")
    if view is not None and view not in views:
        raise ValueError(f"--view {view}: run {run.id} has nothing to draw there ({status}); its views: "
                         f"{', '.join(views)}")
    return model.paper_figure(view or views[0])


#: a qd run's views drawn as the archives stood at a generation (--generation); baselines are the final models'
GENERATION_VIEWS = ("archives", "sampling", "curves", "lineage", "children")
#: the NAMM page's views (dashboards.namm.VIEWS, kept here: the page's module loads Panel)
NAMM_VIEWS = ("retention", "sizes", "spectrogram", "scores", "text", "sweep")
#: the NAMM views each of `figure namm`'s flags changes (the page's step, layer, KV head and token)
NAMM_FLAGS = {"step": ("retention", "sizes", "scores", "text"), "layer": ("spectrogram", "scores", "text"),
              "head": ("spectrogram", "text"), "token": ("spectrogram",)}
#: the NAMM views that never have legend entries (the retention raster's key is its colour map's; the text view is
#: tokens): a --colour or --rename for them is refused before the model loads (a test checks the page agrees)
NAMM_NO_LEGEND = ("retention", "text")


def namm_view(store, args, pinned: dict[str, str]):
    """A trained NAMM policy's view of one prompt (a NAMM task's test prompt, or text), as the NAMM page's export
    writes it; the model is the one the run trained on. Written to args.out; its path."""
    from workbench import figures

    if args.length is not None and args.task is None:
        raise ValueError("--length sizes a --task prompt; give --task NAME too, or leave --length out")
    if args.no_chat and args.prompt is None:
        raise ValueError("--no-chat leaves a --prompt without the chat template; a --task prompt has its own: give "
                         "--prompt TEXT too, or leave --no-chat out")
    for flag, views in NAMM_FLAGS.items():
        if getattr(args, flag) is not None and args.view not in views:
            raise ValueError(f"--{flag} changes the {', '.join(views)} views; --view {args.view} has none: leave "
                             f"--{flag} out")
    from workbench.namm.trace import check_text_font

    check_text_font(args.view, args.font)
    if args.view in NAMM_NO_LEGEND:  # before the model loads
        _refuse_legend_flags({"--colour": pinned, "--rename": args.rename})
    if args.prompt is not None and not args.prompt.strip():
        raise ValueError("--prompt is empty: give some text, or --task NAME for a task's test prompt")
    from workbench.runs import a_kind_run

    run = store.open(args.ids[0])
    if run.info.get("kind") != "namm":
        raise ValueError(f"run {run.id} is {a_kind_run(run.info.get('kind'))}; `figure namm` draws namm runs "
                         "(`workbench namm train`); `figure view` the pages' views of qd, experts and merge runs")
    from workbench.dashboards.namm import NAMMExplorer
    from workbench.namm.trace import TINY

    model = NAMMExplorer(runs_dir=str(store.root))
    model.choose(run.id)
    if args.prompt is not None:
        model.param.update(prompt=args.prompt, chat=not args.no_chat)
    elif args.task is not None:
        if model.model_name != TINY:  # the window, with the tokenizer alone: before the model's weights load
            from workbench.namm.tasks import check_prompts

            check_prompts(model.model_name, [args.task], args.length or 256, 1, model.seed, model.max_new_tokens,
                          "test", new_flag=None, model_flag=None)
        model.use_task(args.task, args.length or 256)
    with _quiet_progress():
        model.run()
        if args.view == "sweep":
            model.show_sweep(model.compute_sweep())
    steps = len(model.trace.steps)
    if not steps and args.view != "sweep":  # the page's message suggests a smaller n_up, which is the run's here
        t = model.trace
        fix = (f"give --length {t.n_up} or more" if args.task is not None else
               f"give a --prompt of {t.n_up - (t.n_tokens - t.n_prompt)} tokens or more, or --task NAME")
        raise ValueError(f"{t.n_tokens} tokens (the prompt's {t.n_prompt} and {t.n_tokens - t.n_prompt} of its "
                         f"answer) make no eviction step (one every {t.n_up} tokens, the policy's n_up): {fix}")
    if args.step is not None:
        if args.step > steps:
            raise ValueError(f"--step {args.step}: the prompt's trace has eviction steps 1 to {steps}; give one of "
                             "them (or leave --step out: the last)")
        model.step = args.step - 1
    for name, (most, what) in {"layer": (model.trace.n_layers, "the model has {} layers"),
                               "head": (model.trace.n_heads, "the model has {} KV heads"),
                               "token": (model.trace.n_tokens, "the prompt and its answer have {} tokens")}.items():
        value = getattr(args, name)
        if value is not None:
            if value >= most:
                raise ValueError(f"--{name} {value}: {what.format(most)} (0 to {most - 1})")
            setattr(model, name, value)
    renames = figures.rename_pairs(args.rename or [])
    drawn = model.figure(args.view) if args.view != "text" else figures.holoviews().Div("")  # text: no legend
    _check_pinned(figures, figures.rename(drawn, renames), pinned)  # --colour takes the new names
    return model.write(args.view, args.out, dpi=args.dpi, width=args.width, font=args.font, rename=renames)


def _quiet_progress():
    """Nothing of the model's loading on the terminal (its weights' bars): this command prints the file it wrote."""
    import contextlib
    import io

    return contextlib.redirect_stderr(io.StringIO())


def _check_pinned(figures, figure, pinned: dict[str, str]) -> None:
    """A --colour NAME (of `pinned`, figures.check_colours' names) that is no legend entry of the figure (a slip in
    a label) is refused with the entries there are, before anything is written: it would have coloured nothing,
    silently."""
    figures.check_legend_entries(figure, pinned, "--colour")


def _say_undrawn(store, ids: list[str], drawn: set[str]) -> None:
    """A note for each run asked for that the figure leaves out, having no metrics yet (it was silent)."""
    from workbench.cli.common import say

    for run_id in ids:
        if run_id not in drawn and not (store.root / run_id / "metrics.parquet").is_file():
            say("note", f"{run_id} has no metrics yet: the figure leaves it out")


def register(sub: argparse._SubParsersAction) -> None:
    figure = sub.add_parser("figure", help="paper figures of runs: curves, compare, atlas, frames, view, namm, "
                                           "video")
    from workbench.cli import IntermixedParser  # (ids on either side of the options, as scripts write them)

    figure_sub = figure.add_subparsers(dest="what", required=True, metavar="WHAT", parser_class=IntermixedParser)
    # .csv: the figure's numbers, a row per point (figures.figure_table)
    for name, n, text in (("curves", "+", f"loss curves of runs {TABLE_FORMATS}"),
                          ("compare", "+", "best so far of two or more runs; runs that differ only by seed as their "
                                           f"setting's mean with a band over its seeds {TABLE_FORMATS}"),
                          ("atlas", 1, f"an illumination run's atlas {PICTURE_FORMATS}"),
                          ("frames", 1, "an ASAL run's best simulation as a strip of frames, titled with their "
                                        f"steps (and prompts) {PICTURE_FORMATS}"),
                          ("namm", 1, "a trained NAMM policy's view of one prompt (a task's test prompt or "
                                      f"--prompt), as the NAMM page exports it {TABLE_FORMATS}"),
                          ("view", 1, "a page's view of a qd, MAP-Elites, experts, adapt or merge run, as its "
                                      f"export writes it {TABLE_FORMATS}"),
                          ("video", 1, "the best simulation of a run (.mp4 .gif .png)")):
        f = figure_sub.add_parser(name, help=text)
        f.add_argument("ids", nargs=n, metavar="ID", help="a run id or a unique prefix of one" if n == 1 else
                       "run ids or unique prefixes")
        f.add_argument("--out", required=True, help="the file to write; its suffix picks the format: "
                                                    + text.rsplit("(", 1)[1].rstrip(")"))
        f.add_argument("--runs", default="runs", help="run store folder (default: runs)")
        # each subcommand has the flags it reads, no others: a flag it would ignore is refused by argparse
        if name != "video":
            f.add_argument("--dpi", type=POSITIVE, default=None, help="raster resolution (default: 300)")
            sizes = "a two-column page's text width is 6.75, a one-column NeurIPS/ICLR page 5.5"
            own = f"3.25, a column; {sizes}" if name in ("curves", "compare", "atlas") else \
                f"the figure's own: a column for one panel, at most a page for several; a column is 3.25, {sizes}"
            kept = "" if name == "atlas" else ", text kept at 7-9 pt"  # an atlas is a picture: no text
            f.add_argument("--width", type=float, default=None, metavar="INCHES",
                           help=f"the figure's width in inches{kept} (default: {own})")
            if name != "atlas":
                f.add_argument("--font", choices=("sans", "serif"), default=None,
                               help="the text's face: sans (default, DejaVu Sans) or serif (Times-like STIX, for a "
                                    "paper set in Times)")
            if name not in ("atlas", "frames"):
                f.add_argument("--colour", action="append", default=None, metavar="NAME=COLOUR",
                               help="draw the legend entry NAME in COLOUR (#D55E00, black, tab:blue), e.g. the "
                                    "same method alike in every figure; repeat for more (default: tasks in "
                                    "their own colours, the rest in Okabe & Ito's)")
        if name in ("curves", "compare", "view", "namm"):
            f.add_argument("--rename", nargs=2, action="append", default=None, metavar=("NAME", "NEW"),
                           help="call the legend entry NAME (e.g. 'sigma=0.3, seed=1', as the runs' settings named "
                                "it) NEW (ours) in the figure; repeat for more; --colour then takes NEW")
        if name == "compare":
            f.add_argument("--band", choices=BAND_CHOICES, default="range",
                           help="the band around a setting's mean over seeds: range, its lowest to highest run; sd, "
                                "± 1 sample standard deviation; ci95, Student's t 95%% confidence interval of the "
                                "mean (the figure's title says which)")
        if name == "curves":
            f.add_argument("--metric", default=None, help="a metrics column to plot as stored (default: the best "
                                                        "so far in each run's own metric and direction)")
        if name == "view":
            f.add_argument("--view", choices=ALL_VIEWS, default=None, metavar="VIEW",
                           help="qd: " + ", ".join(PAGE_VIEWS["qd"]) + "; MAP-Elites: archives; experts, adapt: "
                                + ", ".join(PAGE_VIEWS["experts"]) + "; merge: " + ", ".join(PAGE_VIEWS["merge"])
                                + " (default: the first the run has, as its page opens)")
            f.add_argument("--generation", type=whole(0), default=None,
                           help="a qd run's archives as they stood after this generation (default: the last)")
        if name == "namm":
            f.add_argument("--view", choices=NAMM_VIEWS, default="retention",
                           help="what to draw (default: retention, the cache's kept and evicted tokens per layer "
                                "and KV head); sweep runs the baselines on the prompt too; text, the prompt's tokens, "
                                "has no .csv")
            prompt = f.add_mutually_exclusive_group()
            prompt.add_argument("--task", choices=TASK_NAMES, default=None,
                                help="a NAMM task's test prompt, its answer hidden in filler (default: the page's "
                                     "passkey text)")
            prompt.add_argument("--prompt", default=None, help="this text as the prompt")
            f.add_argument("--length", type=whole(32), default=None, help="the --task prompt's tokens (default: 256)")
            f.add_argument("--no-chat", action="store_true", help="--prompt as it is, without the chat template")
            f.add_argument("--step", type=POSITIVE, default=None, help="the eviction step drawn (default: the last)")
            for flag, text in (("layer", "layer of the text, scores and spectrogram views (default: all; the "
                                         "spectrogram's: 0)"),
                               ("head", "KV head of the text and spectrogram views (default: all; the spectrogram's: "
                                        "0)"),
                               ("token", "token position of the spectrogram view (default: 0)")):
                f.add_argument(f"--{flag}", type=whole(0), default=None, help=text)
        if name == "frames":
            f.add_argument("--frames", type=POSITIVE, default=None,
                           help="evenly spaced frames (default: the K frames the search scored, at most 8 evenly "
                                "spaced among them, each with its prompt; 5 where it scored one or --steps is not "
                                "the run's)")
            f.add_argument("--steps", type=POSITIVE, default=None, help="steps of the rollout (default: the run's)")
            f.add_argument("--size", type=FRAME_SIZE, default=None, help="frame size (default: the run's, 224)")
            f.add_argument("--member", type=whole(0), default=None,
                           help="an illumination's population member (its index in the atlas and the Lab; "
                                "default: the best θ, member 0)")
        if name == "video":
            f.add_argument("--steps", type=POSITIVE, default=None, help="steps (default: the run's)")
            f.add_argument("--size", type=FRAME_SIZE, default=None, help="frame size (default: the run's, 224)")
            add_video_arguments(f, every="steps // 120, about 120 frames, as the run's best.mp4")
        f.set_defaults(func=cmd_figure)
