"""`workbench qd cycle|report|archive|export`: CycleQD runs, their report over seeds, the reference's archive files,
and a run's models as model folders."""

from __future__ import annotations

import argparse
import json

from workbench.cli.common import (
    POSITIVE,
    SEED,
    add_dask_arguments,
    add_device_argument,
    check_device,
    close_client,
    dask_client,
    iteration_progress,
    json_text,
    note_quick_zoo,
    resumed_run,
    say,
)

#: `workbench qd cycle` flags whose parser default is None (so --resume can tell given flags from defaults) and the
#: QDRunConfig fields they set.
CYCLE_FIELDS = {"zoo": "zoo", "tasks": "tasks", "base": "base", "gens": "gens", "batch": "batch",
                "sampling": "sampling", "mutation": "mutation", "mutation_scale": "mutation_scale", "bins": "bins",
                "seed": "seed", "n_eval": "n_eval", "n_test": "n_test", "multitask_steps": "multitask_steps",
                "merge_recipe": "merge_recipe", "transfer": "transfer", "threads": "threads"}
# spelled out so that --help imports no torch (workbench.qd.sampling.SAMPLERS, workbench.qd.operators.MUTATIONS)
SAMPLINGS, MUTATIONS, TRANSFERS = ("elite", "uniform"), ("svd", "gaussian"), ("weights", "lineage")


def _ranges(values: list[list[str]] | None) -> dict[str, list[float]] | None:
    """--range TASK LO HI (repeatable) as {task: [lo, hi]}; one error for a task given twice or a non-number."""
    if not values:
        return None
    out: dict[str, list[float]] = {}
    for task, lo, hi in values:
        if task in out:
            raise ValueError(f"--range {task} is given twice; give each task's range once")
        try:
            out[task] = [float(lo), float(hi)]
        except ValueError:
            raise ValueError(f"--range {task} {lo} {hi}: LO and HI must be numbers, e.g. --range {task} 0 1") from None
    return out


def _progress_value(tasks: list[str]):
    def value(row: dict) -> str:
        best = " ".join(f"{t} {row[f'max_quality_{t}']:.2f}" for t in tasks)
        return f"coverage {row['coverage']:.3f} · QD {row['qd_score']:.2f} · best {best}"

    return value


def by_generation(on_iteration):
    """run_cycleqd's on_iteration(done, total, row) for the bar, which counts generations as --gens does
    (generation 0 scores the seeds: done and total one less), and its resumed(done, total, row) too: a resumed
    cycle's bar read "setting up" until its next generation ended where only the call was passed on."""
    def on_generation(done: int, total: int, row: dict) -> None:
        on_iteration(done - 1, total - 1, row)

    def resumed(done: int, total: int, row: dict) -> None:
        on_iteration.resumed(done - 1, total - 1, row)

    on_generation.resumed = resumed
    return on_generation


def cmd_cycle(args) -> int:
    from workbench.qd.run import KIND, QDRunConfig, check_inputs, flag_names, run_cycleqd, run_zoo
    from workbench.runs import RunStore, cli_command, steps_done

    device = check_device(args.device)
    store = RunStore(args.runs)
    given = {field: getattr(args, dest) for dest, field in CYCLE_FIELDS.items() if getattr(args, dest) is not None}
    ranges = _ranges(args.range)
    cfg, resume = None, None
    zoo = None
    if args.resume is not None:
        given.update({f"ranges.{t}": r for t, r in (ranges or {}).items()})
        # the run's zoo where it is now (a --zoo is checked by content, not compared as text): before any bar
        zoo = given.pop("zoo", None)
    run = resumed_run(store, args, "qd", given,  # a --range of a task the run has not got named as typed too
                      lambda config: {**{k: f"--range {k.split('.', 1)[1]}" for k in given if k.startswith("ranges.")},
                                      **flag_names(config)}, extends="gens")
    if run is not None:
        run_zoo(run, zoo)
        resume, config = run.id, run.info["config"]
        gens = args.gens or config["gens"]
        total, tasks = gens, config["tasks"]
        # nothing left to run: no bar
        args.quiet = args.quiet or (run.info.get("status") == "done" and gens == config["gens"])
    else:
        if "transfer" in given and args.workers is None and args.dask is None:  # a flag the run would not read
            raise ValueError("--transfer says how children reach Dask workers; without --workers N or --dask "
                             "ADDRESS every child is built where it runs: leave --transfer out or add workers")
        cfg = QDRunConfig(**{**given, "ranges": ranges, "device": device})
        check_inputs(cfg)
        total, tasks = cfg.gens, cfg.tasks
        note_quick_zoo(cfg.zoo)
    client = dask_client(args)
    try:
        with iteration_progress("qd cycle", total, "", _progress_value(tasks), quiet=args.quiet) as on_iteration:
            run = run_cycleqd(cfg, store, resume=resume, client=client, on_iteration=by_generation(on_iteration),
                              on_start=on_iteration.start, given={**given, **({"zoo": zoo} if zoo else {})},
                              on_phase=on_iteration.phase,
                              device=device if resume is not None else None, command=cli_command())
    finally:
        close_client(client)
    info = run.info
    print(json_text({"id": run.id, "path": str(run.path.absolute()), "status": info["status"],
                     "generations": steps_done(KIND, info["iterations"])[0],
                     "qd_score": None if info["best_loss"] is None else -info["best_loss"],
                     "test_scores": info.get("test_scores")}))
    return 0


def cmd_report(args) -> int:
    from workbench.qd.baselines import report
    from workbench.qd.run import KIND
    from workbench.runs import RunError, RunStore, _wrong_kind

    store = RunStore(args.runs)
    runs = [store.open(i) for i in args.ids]
    for run in runs:
        if run.info.get("kind") != KIND:
            raise RunError(_wrong_kind(run, KIND))
    out = report(runs)
    if out["differs"]:
        say("note", f"these runs differ in {', '.join(out['differs'])}, not only in their seed: each mean ± std "
                    "mixes those settings")
    for run_id, held in out["repeats"].items():
        say("note", f"{run_id} repeats the seed of {held} (the same computation again): counted once")
    for task, names in out["missing"].items():
        say("note", f"{task}: {', '.join(names)} left out: not scored in every run")
    if args.json:
        print(json_text(out))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 120), markup=False)
    for task, entry in out["per_task"].items():
        table = Table("model", "mean ± std", "min", "max", "CycleQD beats it",
                      title=f"{task} (test, {len(out['counted'])} runs)")
        for model, s in entry["scores"].items():
            versus = entry["cycleqd_vs"].get(model)
            beats = "" if versus is None else (f"{versus['wins']}/{versus['runs']} runs, margin "
                                               f"{versus['margin']['mean']:+.3f} ± {versus['margin']['std']:.3f}")
            table.add_row(model, f"{s['mean']:.3f} ± {s['std']:.3f}", f"{s['min']:.3f}", f"{s['max']:.3f}", beats)
        console.print(table)
        if entry["best_is_a_seed_expert"]:
            console.print(f"{task}: CycleQD's best model is the seed expert itself in {entry['best_is_a_seed_expert']}"
                          f"/{len(out['counted'])} runs")
    return 0


def cmd_archive(args) -> int:
    from pathlib import Path

    from workbench.checks import file_above
    from workbench.qd.archive_map import archives_from_map, read_archive_map, run_settings
    from workbench.qd.archives import DEFAULT_BINS, check_bins
    from workbench.qd.run import _check_ranges

    # a qd run's own maps at the run's bins and ranges (the files hold neither), unless given
    run_bins, run_ranges = run_settings(args.path) or (None, {})
    args.bins = args.bins if args.bins is not None else run_bins or DEFAULT_BINS
    check_bins(args.bins, flag="--bins")
    blocking = args.pyribs and (file_above(args.pyribs) or (args.pyribs if Path(args.pyribs).is_file() else None))
    if blocking:
        raise ValueError(f"--pyribs {args.pyribs}: {blocking} is a file; give a new folder")
    entries = read_archive_map(args.path, bins=args.bins)
    tasks = list(entries)
    check_bins(args.bins, len(tasks), "--bins")
    ranges = _ranges(args.range) or {}
    unknown = [t for t in ranges if t not in tasks]
    if unknown:
        raise ValueError(f"--range names {unknown}, not among the archive map's tasks {tasks}")
    ranges = {**{t: r for t, r in run_ranges.items() if t in tasks}, **ranges}
    archives, paths = archives_from_map(entries, {t: tuple(r) for t, r in _check_ranges(tasks, ranges).items()},
                                        args.bins)
    summary = {"path": str(args.path), "tasks": tasks, "bins": args.bins,
               "ranges": {t: list(archives.ranges[t]) for t in tasks}, "models": len(paths), "archives": {
        t: {**archives.stats(t), "elites": len(entries[t])} for t in tasks}}
    if args.pyribs:
        from workbench.qd.pyribs import write_pyribs

        out = Path(args.pyribs)
        if out.exists() and any(out.iterdir()):
            raise ValueError(f"--pyribs {out} exists and is not empty; choose a new folder")
        summary["pyribs"] = [str(p) for p in write_pyribs(out, archives)]
        summary["model_paths"] = paths   # solution_0 = the index into this list
    print(json_text(summary, indent=None if args.json else 2))
    return 0


def cmd_export(args) -> int:
    from workbench.qd.run import export_model, load_run, model_id_of
    from workbench.runs import RunStore

    store = RunStore(args.runs)
    run, _, qd = load_run(store, args.id)
    model_id = model_id_of(run, qd, args.model)
    out = export_model(store, run.id, model_id, args.out)
    # the search's scores are on the validation prompts; the run's held-out test scores, where it reported this
    # model (a task's best, the best all-rounder), are what a paper quotes: each under its own name
    summary = {"out": str(out), "run": run.id, "model": model_id, "validation_scores": qd.scores(model_id)}
    reported = run.path / "scores.json"
    if reported.exists():
        scores = json.loads(reported.read_text())
        entries = [*scores.get("cycleqd", {}).values(), scores.get("cycleqd_one_model") or {}]
        test = next((e["test"] for e in entries if isinstance(e, dict) and e.get("id") == model_id and "test" in e),
                    None)
        if test is not None:
            summary["test_scores"] = test
    print(json_text(summary))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `workbench qd cycle|report|archive|export` to the `workbench` parser."""
    qd = sub.add_parser("qd", help="CycleQD: quality-diversity over models (per-task archives of merged experts)")
    qd_sub = qd.add_subparsers(dest="action", required=True, metavar="ACTION")

    cy = qd_sub.add_parser("cycle", help="run CycleQD on a zoo's seed experts into the run store",
                           description="Generation 0 scores the seed experts; each generation g breeds --batch "
                                       "children from the archive of task g mod K (elite sampling, model-wise "
                                       "crossover of task vectors, SVD mutation: the paper's method by default) "
                                       "and inserts each into every archive it enters (parents from all archives "
                                       "while archive g mod K holds fewer than two elites). At the end the best "
                                       "model per task is scored on test prompts against the baselines.")
    # settings default to None here (then QDRunConfig's defaults apply), so that --resume can tell given flags
    cy.add_argument("--zoo", help="zoo folder (default: data/zoo)")
    cy.add_argument("--tasks", nargs="+", metavar="TASK", help="K >= 2 tasks (default: sort reverse brackets)")
    cy.add_argument("--gens", type=int, help="generations after the seed experts' generation 0 (default: 50)")
    cy.add_argument("--batch", type=int, help="children per generation, drawn from the archives at its start and "
                                              "evaluated together (default: 1)")
    cy.add_argument("--sampling", choices=SAMPLINGS, help="parent sampling (default: elite, the paper's)")
    cy.add_argument("--mutation", choices=MUTATIONS, help="mutation (default: svd, the paper's)")
    cy.add_argument("--mutation-scale", type=float, help="κ of svd (default 0.1) or σ of gaussian (default 3e-4)")
    cy.add_argument("--range", nargs=3, action="append", metavar=("TASK", "LO", "HI"),
                    help="fixed score range of a task's bins (repeatable; default 0 1)")
    cy.add_argument("--bins", type=int, help="bins per task (default: 15)")
    cy.add_argument("--seed", type=SEED, help="the run's seed: every draw, and the validation prompts (default: 0)")
    cy.add_argument("--n-eval", type=int, help="validation prompts per task per child (default: 64)")
    cy.add_argument("--n-test", type=int, help="test prompts per task for the final report (default: 128)")
    cy.add_argument("--base", help="the zoo's base model (default: base)")
    cy.add_argument("--multitask-steps", type=int, help="steps of the multi-task baseline (default: the sum of the "
                                                        "K experts' steps; 0: none)")
    cy.add_argument("--merge-recipe", metavar="FILE", help="a merge evolve run's recipe.yaml or dfs.json, scored as "
                                                            "a baseline")
    cy.add_argument("--transfer", choices=TRANSFERS, help="Dask: send each child's lineage (rebuilt on the worker) "
                                                          "or its weights; same results (default: lineage)")
    cy.add_argument("--threads", type=POSITIVE, help="torch threads per evaluating process (default: 1)")
    cy.add_argument("--runs", default="runs", help="run store folder (default: runs)")
    cy.add_argument("--resume", metavar="RUN_ID", help="continue a stopped or killed run (an id or a unique prefix; "
                                                   "settings flags must match the run's or be left out); with "
                                                   "another --gens, it goes on to that total (a finished run too) "
                                                   "or ends there, as a run started with it would have")
    add_dask_arguments(cy, "each generation's children")
    cy.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device_argument(cy, "; with --resume: default the run's own")
    cy.set_defaults(func=cmd_cycle)

    rp = qd_sub.add_parser("report", help="finished runs side by side (e.g. 3 seeds): best per task vs baselines, "
                                          "mean ± std")
    rp.add_argument("ids", nargs="+", metavar="ID", help="run ids or unique prefixes")
    rp.add_argument("--runs", default="runs", help="run store folder (default: runs)")
    rp.add_argument("--json", action="store_true", help="one JSON line")
    rp.set_defaults(func=cmd_report)

    ar = qd_sub.add_parser("archive", help="read a reference gen{N}_archive_map.json: summary, optional pyribs "
                                           "parquet")
    ar.add_argument("path", metavar="PATH", help="a gen{N}_archive_map.json (SakanaAI/CycleQD's format)")
    ar.add_argument("--bins", type=int, help="bins per task (default: the run's, for a qd run's archive_maps/ "
                                             "file; else 15)")
    ar.add_argument("--range", nargs=3, action="append", metavar=("TASK", "LO", "HI"),
                    help="a task's fixed range (the file holds none; default: the run's, for a "
                         "qd run's archive_maps/ file, else 0 1)")
    ar.add_argument("--pyribs", metavar="DIR", help="also write the archives as pyribs ArchiveDataFrames, "
                                                    "DIR/<task>.parquet")
    ar.add_argument("--json", action="store_true", help="one JSON line")
    ar.set_defaults(func=cmd_archive)

    ex = qd_sub.add_parser("export", help="a run's model, rebuilt from its lineage, as a model folder")
    ex.add_argument("id", metavar="ID", help="run id or a unique prefix")
    ex.add_argument("--model", required=True, help="a model id (children.parquet) or best:TASK")
    ex.add_argument("--out", required=True, help="new model folder")
    ex.add_argument("--runs", default="runs", help="run store folder (default: runs)")
    ex.set_defaults(func=cmd_export)
