"""`workbench zoo build|eval`: the language-model zoo."""

from __future__ import annotations

import argparse

from workbench.cli.common import POSITIVE, SEED, add_device_argument, check_device, json_text, say, work_progress


def cmd_zoo_build(args) -> int:
    from pathlib import Path

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from workbench.lm.tasks import TASKS, check_tasks
    from workbench.lm.zoo import ZooConfig, build_zoo, check_zoo_out, load_zoo, total_steps

    device = check_device(args.device)
    tasks = tuple(check_tasks(args.tasks or TASKS, flag="--tasks"))
    cfg = (ZooConfig.quick if args.quick else ZooConfig)(tasks=tasks, seed=args.seed, device=device)
    args.out = args.out or ("data/zoo-quick" if args.quick else "data/zoo")
    check_zoo_out(args.out)  # before the progress bar starts
    if (Path(args.out) / "zoo.json").is_file() and not args.replace:
        raise ValueError(f"{args.out} holds a zoo already; give --replace to build it again (everything in it, its "
                         "models and what was made there such as generalist/, is replaced), or another --out")
    err = Console(stderr=True)
    try:
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                      TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(), TimeRemainingColumn(),
                      console=err, disable=args.quiet) as bar:
            task = bar.add_task(f"zoo → {args.out}", total=total_steps(cfg))
            out = build_zoo(args.out, cfg, progress=lambda k: bar.advance(task, k), replace=args.replace)
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM: the build is staged beside --out, so nothing half-made is left
        say("stopped", f"zoo build interrupted; no zoo was built at {args.out}")
        raise
    info = load_zoo(out).info
    print(json_text({"path": str(out), "tasks": info["tasks"], "device": info["device"],
                     "build_seconds": info["build_seconds"], "accuracy": info["accuracy"]}))
    return 0


def cmd_zoo_eval(args) -> int:
    import torch

    from workbench.lm.evaluation import evaluate
    from workbench.lm.models import load_model
    from workbench.lm.tasks import TASKS, check_tasks

    device = check_device(args.device)
    tasks = check_tasks(args.tasks or TASKS, flag="--tasks")
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 4)))
    with work_progress("zoo eval", args.n * len(tasks), loading=args.model) as advance:
        model, tok = load_model(args.model, device=device)
        acc = evaluate(model, tok, tasks, n=args.n, seed=args.seed, batch_size=args.batch_size, device=device,
                       progress=advance)
    print(json_text(acc))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this package's subcommands to the `workbench` parser."""
    zoo = sub.add_parser("zoo", help="the model zoo: build a base + per-task experts, evaluate models")
    zoo_sub = zoo.add_subparsers(dest="zoo_action", required=True, metavar="ACTION")
    build = zoo_sub.add_parser("build", help="train the base and one expert per task (2–3 min on 2 CPU cores)",
                               description="A zoo trained on a GPU has other weights than one trained on the CPU "
                                           "(zoo.json records the device); each is reproducible for a seed.")
    build.add_argument("--out", default=None, help="zoo folder (default: data/zoo; with --quick data/zoo-quick, "
                                                      "so a smoke test never replaces the real zoo)")
    build.add_argument("--seed", type=SEED, default=0,
                       help="seed of the weights' initialisation and every training data stream")
    build.add_argument("--tasks", nargs="+", metavar="TASK", help="tasks to train experts for (default: all tasks)")
    build.add_argument("--quick", action="store_true", help="a tiny zoo in seconds (weak experts; for smoke tests)")
    build.add_argument("--replace", action="store_true",
                       help="build again where a zoo is: everything in --out is deleted once the new zoo is built "
                            "(default: refuse)")
    build.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device_argument(build)
    build.set_defaults(func=cmd_zoo_build)
    ev = zoo_sub.add_parser("eval", help="exact-match accuracy per task (JSON) of a model folder or 'smollm2'")
    ev.add_argument("model", metavar="PATH_OR_NAME", help="'smollm2', a .gguf file or a model folder (e.g. ZOO/add)")
    ev.add_argument("--tasks", nargs="+", metavar="TASK", help="tasks to score (default: all tasks)")
    ev.add_argument("--n", type=POSITIVE, default=128, help="held-out prompts per task")
    ev.add_argument("--seed", type=SEED, default=0, help="eval stream seed")
    ev.add_argument("--batch-size", type=POSITIVE, default=64, help="prompts per forward batch")
    add_device_argument(ev)
    ev.set_defaults(func=cmd_zoo_eval)
