"""`workbench merge evolve|apply`: evolve a merge recipe into the run store, apply one."""

from __future__ import annotations

import argparse

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
    work_progress,
)

#: `workbench merge evolve` flags whose parser default is None, so that a --resume can tell the flags given
#: from defaults (then the EvolveConfig defaults apply), and the EvolveConfig fields they set.
EVOLVE_FIELDS = {"zoo": "zoo", "models": "models", "method": "method", "base": "base", "tasks": "tasks",
                 "task_weights": "task_weights", "iters": "iters", "pop": "pop", "sigma": "sigma", "seed": "seed",
                 "n_eval": "n_eval", "n_test": "n_test", "r": "dfs_r"}
ZOO = "data/zoo"
# workbench.merge.evolution.PS_METHODS, spelled out so that --help needs no torch import (a test keeps them equal)
PS_METHODS = ("linear", "task_arithmetic", "ties", "dare_linear", "dare_ties")


def cmd_evolve(args) -> int:
    from workbench.merge.evolution import FLAGS, EvolveConfig, evolve
    from workbench.runs import RunStore, cli_command

    device = check_device(args.device)
    store = RunStore(args.runs)
    given = {field: getattr(args, dest) for dest, field in EVOLVE_FIELDS.items() if getattr(args, dest) is not None}
    cfg, resume = None, None
    zoo = given.pop("zoo", None) if args.resume is not None else None  # checked by content, not as text
    run = resumed_run(store, args, "merge", given, FLAGS, extends="iters")
    if run is not None:
        from workbench.lm.zoo import run_zoo

        run_zoo(run, zoo, "merge evolve")  # a zoo not there (or another one): said before any bar
        resume, total = run.id, args.iters or run.info["config"].get("iters")
    else:
        if not args.models:
            raise ValueError("give the source models: --models NAME [NAME …] (or --resume RUN_ID)")
        cfg = EvolveConfig(**{"zoo": ZOO, **given, "device": device})
        if "dfs_r" in given and cfg.method != "dfs":  # flags another method reads would go unused
            raise ValueError(f"--r repeats DFS's layer list: it applies to --method dfs, not {cfg.method}")
        if "base" in given and cfg.method == "dfs":
            raise ValueError("--method dfs stacks the source models' layers and has no base model: leave --base out")
        total = cfg.iters
        from workbench.lm.models import MissingModel, resolve_model
        from workbench.lm.zoo import no_zoo

        for name in dict.fromkeys([*([cfg.base] if cfg.method != "dfs" else []), *cfg.models]):
            try:  # a missing model is one error before a progress bar starts, naming its flag
                resolve_model(name, cfg.zoo)
            except MissingModel as error:
                if error.no_zoo:  # no zoo at all: its flag, not the first model looked up in it
                    raise ValueError(no_zoo(cfg.zoo)) from None
                flag = "--base" if name == cfg.base and name not in cfg.models else "--models"
                raise ValueError(f"{flag}: {error}") from None
        note_quick_zoo(cfg.zoo)
    client = dask_client(args)
    try:
        with iteration_progress("merge evolve", total, "fitness", lambda row: f"{-row['best_loss']:.3f}",
                                quiet=args.quiet) as on_iteration:
            # on --resume, a --device given replaces the run's own
            run = evolve(cfg, store, resume=resume, client=client, on_iteration=on_iteration,
                         on_start=on_iteration.start,
                         device=device if resume is not None else None, trust_pickle=args.trust_pickle,
                         command=cli_command(), iters=args.iters if resume is not None else None, zoo=zoo,
                         on_phase=on_iteration.phase)
    finally:
        close_client(client)
    info = run.info
    print(json_text({"id": run.id, "path": str(run.path.absolute()), "status": info["status"],
                     "iterations": info["iterations"],
                     "best_fitness": None if info["best_loss"] is None else -info["best_loss"],
                     "test_scores": info.get("test_scores")}))
    return 0


def cmd_apply(args) -> int:
    from workbench.merge.apply import apply_recipe_file

    device = check_device(args.device)
    tasks = None
    if args.eval:  # checked before the merge is written: the zoo's tasks, as `zoo eval --tasks` takes them
        from workbench.lm.tasks import TASKS, check_tasks

        tasks = list(TASKS) if args.eval == ["all"] else check_tasks(args.eval, flag="--eval")
    from workbench.lm.models import MissingModel
    from workbench.lm.zoo import no_zoo

    try:
        out = apply_recipe_file(args.recipe, models_dir=args.zoo, out=args.out, seed=args.seed, device=device)
    except MissingModel as error:
        if error.no_zoo:  # a model named by its name, in a --zoo that is not there
            raise ValueError(no_zoo(args.zoo)) from None
        raise
    result = {"out": str(out)}
    if tasks:
        from workbench.lm.evaluation import evaluate
        from workbench.merge.apply import load_merged

        with work_progress("merge eval", args.n * len(tasks), loading="the merge") as advance:
            model, tok = load_merged(out, device=device)
            result["accuracy"] = evaluate(model, tok, tasks, n=args.n, device=device, progress=advance)
    print(json_text(result))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `workbench merge evolve|apply` to the `workbench` parser."""
    merge = sub.add_parser("merge", help="evolved model merging: evolve a recipe, apply one")
    merge_sub = merge.add_subparsers(dest="action", required=True, metavar="ACTION")

    ev = merge_sub.add_parser("evolve", help="CMA-ES over merge recipes, fitness = task accuracy",
                              description="Parameter-space methods evolve one (weight, density) pair per source "
                                          "model per layer group; dfs evolves a layer path and activation scales "
                                          "(CMA-ES with margin).")
    # settings default to None here (then EvolveConfig's defaults apply), so that --resume can tell given flags
    ev.add_argument("--zoo", help="folder holding the models (default: data/zoo)")
    ev.add_argument("--models", nargs="+", metavar="MODEL",
                    help="source models (names in --zoo or model folders; required unless --resume)")
    ev.add_argument("--method", choices=[*PS_METHODS, "dfs"], help="merge method (default: ties)")
    ev.add_argument("--base", help="base model: θ0 of the task-vector methods; linear merges leave it out but the "
                    "analysis (task-vector norms) reads it (default: base; not with dfs)")
    ev.add_argument("--tasks", nargs="+", metavar="TASK",
                    help="tasks of the fitness (default: the models named after tasks)")
    ev.add_argument("--task-weights", nargs="+", type=float, metavar="WEIGHT",
                    help="weights of the tasks (default: equal)")
    ev.add_argument("--iters", type=int, help="CMA-ES iterations (default: 10)")
    ev.add_argument("--pop", type=int, help="CMA-ES population (default: 8)")
    ev.add_argument("--sigma", type=float, help="CMA-ES' initial step size (default: 0.2)")
    ev.add_argument("--seed", type=SEED, help="seed of CMA-ES, DARE's drops and the validation prompts (default: 0)")
    ev.add_argument("--n-eval", type=int, help="validation prompts per task per candidate (default: 64)")
    ev.add_argument("--n-test", type=int, help="test prompts per task for the final scores (default: 128)")
    ev.add_argument("--r", type=int, help="dfs: repetitions of the layer list (default: 3, as the reference)")
    ev.add_argument("--runs", default="runs", help="run store folder (default: runs)")
    ev.add_argument("--resume", metavar="RUN_ID", help="continue a stopped or killed run (an id or a unique prefix; "
                                                   "settings flags must match the run's or be left out); with "
                                                   "another --iters, it goes on to that total (a finished run too) "
                                                   "or ends there, as a run started with it would have")
    ev.add_argument("--trust-pickle", action="store_true",
                    help="with --resume: also load an old-format checkpoint.pkl (a pickle can run code: only for run "
                         "folders you trust)")
    add_dask_arguments(ev, "each generation's recipes")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device_argument(ev, "; with --resume: default the run's own")
    ev.set_defaults(func=cmd_evolve)

    ap = merge_sub.add_parser("apply", help="merge per a mergekit YAML recipe or a DFS JSON; write a model folder")
    ap.add_argument("recipe", metavar="RECIPE", help="recipe.yaml (mergekit format) or dfs.json")
    ap.add_argument("--zoo", default="data/zoo", help="folder holding the recipe's models (default: data/zoo)")
    ap.add_argument("--out", required=True, help="new folder for the merged model")
    ap.add_argument("--seed", type=SEED, default=None,
                    help="seed of DARE's random drops (default: the one the recipe was saved with, a merge run's "
                         "recipe.yaml: the model it scored; else 0)")
    ap.add_argument("--eval", nargs="+", metavar="TASK", help="also score the merge on these tasks ('all')")
    ap.add_argument("--n", type=POSITIVE, default=128, help="prompts per task for --eval")
    add_device_argument(ap)
    ap.set_defaults(func=cmd_apply)
