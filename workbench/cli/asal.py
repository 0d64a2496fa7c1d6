"""`workbench asal target|openended|illuminate`: ASAL searches into the run store, with resume and Dask."""

from __future__ import annotations

import argparse

from workbench.cli.common import (
    SEED,
    SUBSTRATES,
    add_dask_arguments,
    add_device_argument,
    check_device,
    close_client,
    dask_client,
    iteration_progress,
    json_text,
    resumed_run,
    say,
)

#: `workbench asal` flags whose parser default is None, so that a --resume can tell the flags given from
#: defaults: their defaults, and the SearchConfig fields they set (c_oe None: SearchConfig's own, 1 for an
#: open-ended search and 0 otherwise).
ASAL_DEFAULTS = {"fm": "efficientnet-lite0", "algorithm": "ga", "population": 256, "iters": 100, "frames": 1, "bs": 1,
                 "size": 224, "sigma": 0.1, "c_softmax": 0.0, "c_oe": None, "chunk": 16, "seed": 0,
                 "init": "zero"}
OPEN_ENDED_FRAMES = 32  # K of the reference's open-endedness recipes (asal.md §4)
ASAL_FIELDS = {"substrate": "eval.substrate", "fm": "eval.fm", "weights": "eval.weights", "steps": "eval.steps",
               "frames": "eval.frames", "bs": "eval.bs", "size": "eval.size", "chunk": "eval.chunk",
               "prompt": "prompts", "target_image": "target_image", "algorithm": "algorithm",
               "population": "population", "iters": "iters", "pop": "pop", "sigma": "sigma", "seed": "seed",
               "c_softmax": "c_softmax", "c_oe": "c_oe", "init": "init"}


def open_ended_frames(prompts: int, steps: int) -> int:
    """K of an open-endedness search without --frames: the reference's 32, or fewer where --steps is shorter; with
    several prompts the largest multiple of them within that (the frames go round the prompts: 3 prompts over 32
    steps are 30 frames, not 33, more than the steps), at least one frame a prompt."""
    n = max(1, prompts)
    return max(n, min(OPEN_ENDED_FRAMES, steps) // n * n)


def cmd_asal(args) -> int:
    from workbench.asal.driver import DEFAULT_POP, FLAGS, PREDATES, SearchConfig, check_new_search, run_search
    from workbench.asal.evaluate import EvalConfig
    from workbench.runs import RunStore, cli_command

    check_device(args.device)

    store = RunStore(args.runs)
    given = {field: getattr(args, dest) for dest, field in ASAL_FIELDS.items() if getattr(args, dest, None) is not None}
    cfg, resume, total = None, None, None
    moved = given.pop("eval.weights", None) if args.resume is not None else None  # checked by content, not as text
    run = resumed_run(store, args, args.search, given, FLAGS, PREDATES, extends="iters")
    if run is not None:
        resume, total = run.id, args.iters or run.info["config"].get("iters")
    else:
        defaults = {**ASAL_DEFAULTS, "pop": DEFAULT_POP[args.search]}

        def value(dest: str):
            v = getattr(args, dest, None)
            return v if v is not None else defaults[dest]

        if args.substrate is None:
            raise ValueError("--substrate is required (unless --resume RUN_ID)")
        ev = EvalConfig(args.substrate, value("fm"), weights=args.weights, steps=args.steps, frames=value("frames"),
                        bs=value("bs"), size=value("size"), chunk=value("chunk"), device=args.device)
        if args.search == "openended" and args.frames is None:  # the reference's open-endedness recipes: K = 32
            ev.frames = open_ended_frames(len(args.prompt or []), ev.steps)
        elif args.search == "target" and args.frames is None and args.prompt:  # one per prompt, as the help says
            ev.frames = len(args.prompt)  # (from 1, the config noted that a --frames 1 not given was made 3)
        if args.search == "illuminate":
            extra = {"algorithm": value("algorithm"), "population": value("population")}
        else:
            extra = {"prompts": args.prompt or [], "target_image": args.target_image}
        cfg = SearchConfig(kind=args.search, eval=ev, iters=value("iters"), pop=value("pop"), sigma=value("sigma"),
                           seed=value("seed"), c_softmax=value("c_softmax"), c_oe=value("c_oe"), init=value("init"),
                           **extra)
        total = cfg.iters
        check_new_search(cfg)  # the foundation-model request too: before any load or progress bar
        for note in cfg.notes:
            say("note", note)
    client = dask_client(args)
    try:
        with iteration_progress(f"asal {args.search}", total, "loss", _loss_and_diverged,
                                quiet=args.quiet) as on_iteration:
            run = run_search(cfg, store, resume=resume, client=client, on_iteration=on_iteration,
                             on_start=on_iteration.start,
                             device=args.device, kind=args.search, trust_pickle=args.trust_pickle,
                             command=cli_command(), iters=args.iters if resume is not None else None,
                             weights=moved)
    finally:
        close_client(client)
    info = run.info
    diverged = _diverged_total(run)
    if diverged:  # said, not only counted in the metrics: a search that lost members to blow-ups searched less
        say("warning", f"{diverged} candidate(s) of this run diverged (NaN or inf in a simulation) and were ranked "
                       f"last: the metrics' `diverged` column says when; a smaller --sigma keeps θ nearer the "
                       f"substrate's range")
    print(json_text({"id": run.id, "path": str(run.path.absolute()), "status": info["status"],
                     "iterations": info["iterations"], "best_loss": info["best_loss"]}))
    return 0


def _loss_and_diverged(row: dict) -> str:
    """The progress bar's value: the best loss so far, and how many of the iteration's candidates diverged."""
    text = f"{row['best_loss']:.4f}"
    return f"{text} ({row['diverged']} diverged)" if row.get("diverged") else text


def _diverged_total(run) -> int:
    """The candidates of the whole run (resumed parts included) whose simulation diverged: its metrics' sum."""
    from workbench.runs import RunError, whole_total

    try:
        rows = run.read_table("metrics").to_pylist()
    except RunError:  # metrics that cannot be read (said elsewhere)
        return 0
    return whole_total(rows, "diverged")  # 0 for a run of an older version: no such column


def register(sub: argparse._SubParsersAction) -> None:
    asal = sub.add_parser("asal", help="ASAL searches: target, openended, illuminate, and the Game of Life rule sweep")
    asal_sub = asal.add_subparsers(dest="search", required=True, metavar="SEARCH")
    for name, text in (("target", "Sep-CMA-ES towards prompts or a target image"),
                       ("openended", "Sep-CMA-ES for open-endedness (optionally with prompts)"),
                       ("illuminate", "a diverse population: the reference GA or MAP-Elites")):
        a = asal_sub.add_parser(name, help=text, description=text)
        a.add_argument("--substrate", choices=SUBSTRATES, help="required unless --resume")
        # settings default to None here (defaults: ASAL_DEFAULTS), so that --resume can tell given flags apart
        a.add_argument("--fm", help="clip | openclip:ARCH | dino | efficientnet-lite0 | pixels (default: "
                                    "efficientnet-lite0, offline)")
        a.add_argument("--weights", help="local weights: a state dict file for clip / openclip:ARCH, a model "
                                         "folder for dino; with --resume: where the run's weights are now, if "
                                         "they moved (the same weights, checked by their content)")
        if name != "illuminate":
            a.add_argument("--prompt", action="append", help="target text (repeat for a sequence)")
            a.add_argument("--target-image", help="target image file (for image-only FMs too); the run keeps a copy")
        else:
            a.add_argument("--algorithm", choices=["ga", "map-elites"],
                           help="the reference's GA or MAP-Elites' grid archive (default: ga)")
            a.add_argument("--population", type=int, help="GA population size, or MAP-Elites' grid of about that "
                           "many cells (√P × √P; default: 256)")
        a.add_argument("--iters", type=int, help="search iterations (default: 100)" + (
            "; the first evaluates the θ = 0 population, each later one a generation of children (the reference "
            "runs its n_iters generations after that first evaluation: give --iters n_iters + 1)"
            if name == "illuminate" else ""))
        a.add_argument("--pop", type=int, help="CMA population / GA children / MAP-Elites batch (default: "
                                               f"{16 if name != 'illuminate' else 32})")
        a.add_argument("--steps", type=int, default=None, help="simulation steps (default: the reference's)")
        if name != "illuminate":  # an illumination embeds the final state, as the reference's: K = 1
            a.add_argument("--frames", type=int, help="K frames sampled at chunk ends (default: " + (
                "32, the reference's open-endedness recipes; with P prompts the largest multiple of P up to 32, "
                "at most --steps" if name == "openended" else "1, or one per prompt") + ")")
        a.add_argument("--bs", type=int, help="initial-state seeds averaged per θ (default: 1)")
        a.add_argument("--size", type=int, help="render size fed to the FM" + (
            "; the atlas' thumbnails are it divided by a whole number, about 64 px (74 px at 224; default: 224)"
            if name == "illuminate" else " and of best.png / best.mp4 (default: 224)"))
        a.add_argument("--sigma", type=float, help=("CMA-ES' initial step size" if name != "illuminate" else
                                                   "the GA's or MAP-Elites' mutation scale") + " (default: 0.1)")
        a.add_argument("--init", choices=["zero", "random"],
                       help="start at θ = 0 (default, the reference) or at a random initialisation drawn from --seed "
                            "(NCA and discrete NCA, Particle Life+: the networks' flax init; Particle Lenia: N(0, I))")
        if name != "illuminate":  # no loss there: the population's diversity is the objective
            a.add_argument("--c-softmax", type=float, help="weight of the softmax loss over the targets (default: 0)")
            a.add_argument("--c-oe", type=float, help="weight of the open-endedness loss (default: " + (
                "1" if name == "openended" else "0") + ")")
        a.add_argument("--chunk", type=int, help="simulations per batch / Dask task (default: 16)")
        add_device_argument(a, "; simulations and the FM (with --resume: default the run's own)")
        a.add_argument("--seed", type=SEED, help="seed of every random choice of the search (default: 0)")
        a.add_argument("--runs", default="runs", help="run store folder (default: runs)")
        a.add_argument("--resume", metavar="RUN_ID", help="continue a stopped or killed run (an id or a unique prefix; "
                                                         "settings flags must match the run's or be left out); with "
                                                         "another --iters, it goes on to that total (a finished run "
                                                         "too) or ends there, as a run started with it would have")
        a.add_argument("--trust-pickle", action="store_true",
                       help="with --resume: also load an old-format checkpoint.pkl (a pickle can run code: only for "
                            "run folders you trust)")
        add_dask_arguments(a, "the population's rollouts (--chunk parameter sets a task)")
        a.add_argument("--quiet", action="store_true", help="no progress bar")
        a.set_defaults(func=cmd_asal)
    from workbench.cli.sweep import register_sweep

    register_sweep(asal_sub)
