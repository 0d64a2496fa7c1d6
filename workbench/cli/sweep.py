"""`workbench asal sweep --substrate gol`: every Game of Life rule ranked by open-endedness, into the run store."""

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
)

#: Defaults of the flags that default to None (so that --resume can tell the flags given from defaults).
SWEEP_FLAG_DEFAULTS = {"substrate": "gol", "fm": "efficientnet-lite0", "steps": 4096, "frames": 32, "bs": 16,
                       "size": 224, "chunk": 16, "start": 0, "end": 2 ** 18, "batch": 256, "seed": 0}
#: flag dest -> SweepConfig field (dotted for the eval config)
SWEEP_FIELDS = {"substrate": "eval.substrate", "fm": "eval.fm", "weights": "eval.weights", "steps": "eval.steps",
                "frames": "eval.frames", "bs": "eval.bs", "size": "eval.size", "chunk": "eval.chunk",
                "start": "start", "end": "end", "limit": "limit", "batch": "batch", "seed": "seed"}


def cmd_sweep(args) -> int:
    from workbench.asal.evaluate import EvalConfig
    from workbench.asal.sweep import FLAGS, KIND, PREDATES, SweepConfig, read_sweep_config, run_sweep
    from workbench.runs import RunStore, cli_command
    from workbench.simulations import rule_text

    check_device(args.device)
    store = RunStore(args.runs)
    given = {field: getattr(args, dest) for dest, field in SWEEP_FIELDS.items() if getattr(args, dest) is not None}
    cfg, resume = None, None
    moved = given.pop("eval.weights", None) if args.resume is not None else None  # checked by content, not as text
    run = resumed_run(store, args, KIND, given, FLAGS, PREDATES)
    if run is not None:
        resume, total = run.id, read_sweep_config(run.info["config"]).iters
    else:
        def value(dest: str):
            v = getattr(args, dest)
            return v if v is not None else SWEEP_FLAG_DEFAULTS[dest]

        ev = EvalConfig(value("substrate"), value("fm"), weights=args.weights, steps=value("steps"),
                        frames=value("frames"), bs=value("bs"), size=value("size"), chunk=value("chunk"),
                        device=args.device)
        cfg = SweepConfig(ev, start=value("start"), end=value("end"), limit=args.limit, batch=value("batch"),
                          seed=value("seed"))
        from workbench.fm import check_fm

        check_fm(ev.fm, ev.weights)  # before any load or progress bar
        total = cfg.iters
    client = dask_client(args)
    try:
        with iteration_progress("asal sweep", total, "loss", lambda row: f"{row['best_loss']:.4f}",
                                quiet=args.quiet) as on_iteration:
            run = run_sweep(cfg, store, resume=resume, client=client, on_iteration=on_iteration, device=args.device,
                            command=cli_command(), on_start=on_iteration.start, weights=moved)
    finally:
        close_client(client)
    info = run.info
    best = int(run.read_table("ranking").column("rule")[0].as_py()) if info["status"] == "done" else None
    print(json_text({"id": run.id, "path": str(run.path.absolute()), "status": info["status"],
                     "iterations": info["iterations"],
                     "best_loss": info["best_loss"], "best_rule": best,
                     "best_rule_name": None if best is None else rule_text(best)}))
    return 0


def register_sweep(asal_sub: argparse._SubParsersAction) -> None:
    text = ("every Game of Life rule (or a range) ranked by open-endedness: the reference's exhaustive sweep "
            "(ranking.parquet: lowest open-endedness loss first, the rule whose frames repeat least)")
    a = asal_sub.add_parser("sweep", help=text, description=text)
    # every name is taken, so that another substrate is told which search it needs; the usage says gol
    a.add_argument("--substrate", choices=SUBSTRATES, metavar="gol",
                   help="gol (the default), the one substrate whose θ is an integer rule")
    a.add_argument("--fm", help="clip | openclip:ARCH | dino | efficientnet-lite0 | pixels (default: "
                                "efficientnet-lite0)")
    a.add_argument("--weights", help="local weights: a state dict file for clip / openclip:ARCH, a model folder "
                                     "for dino; with --resume: where the run's weights are now, if they moved (the "
                                     "same weights, checked by their content)")
    a.add_argument("--start", type=int, help="first rule (default: 0)")
    a.add_argument("--end", type=int, help="one past the last rule (default: 2^18 = 262144)")
    a.add_argument("--limit", type=int, help="only the first N rules of the range (small tests, partial sweeps)")
    a.add_argument("--batch", type=int, help="rules per iteration and checkpoint (default: 256)")
    a.add_argument("--steps", type=int, help="simulation steps (default: 4096, the reference sweep's)")
    a.add_argument("--frames", type=int, help="K frames sampled at chunk ends (default: 32)")
    a.add_argument("--bs", type=int, help="initial states per rule, the same for every rule (default: 16)")
    a.add_argument("--size", type=int, help="render size fed to the FM (default: 224)")
    a.add_argument("--chunk", type=int, help="simulations per batch / Dask task (default: 16)")
    add_device_argument(a, "; simulations and the FM")
    a.add_argument("--seed", type=SEED, help="seed of the initial states (default: 0)")
    a.add_argument("--runs", default="runs", help="run store folder (default: runs)")
    a.add_argument("--resume", metavar="RUN_ID", help="continue a stopped or killed sweep (an id or a unique prefix)")
    add_dask_arguments(a, "the rules (--chunk of them a task)")
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    a.set_defaults(func=cmd_sweep)
