"""`workbench namm train|eval`: train a NAMM eviction policy into the run store, score one against the baselines.

Every bad input (unknown task, n_up not a multiple of 16, a θ of the wrong length, a model without eager
attention, a context longer than the model's window, settings that contradict a resumed run) is one `error:`
line and exit 2 before any model loads or a run folder is touched.
"""

from __future__ import annotations

import argparse

from workbench.checks import user_path
from workbench.cli.common import (
    POSITIVE,
    SEED,
    add_dask_arguments,
    add_device_argument,
    check_device,
    check_out_file,
    check_resume_device,
    close_client,
    dask_client,
    err,
    iteration_progress,
    json_text,
    resumed_run,
    say,
)

#: `namm train` flags whose parser default is None (so --resume can tell given flags from defaults) and the
#: NAMMTrainConfig fields they set.
TRAIN_FIELDS = {"model": "model", "tasks": "tasks", "gens": "gens", "pop": "pop", "sigma": "sigma", "cma": "cma",
                "n_up": "n_up", "seed": "seed", "prompts": "n_prompts", "length": "length",
                "max_new_tokens": "max_new_tokens", "variant": "variant", "memory_weight": "memory_weight",
                "max_kept": "max_kept", "pool": "pool", "normalizer": "normalizer",
                "n_test": "n_test", "threads": "threads", "stage_gens": "stage_gens", "chunk": "chunk"}
# spelled out so that --help needs no torch import (tests keep them equal to the library's)
TASK_NAMES = ("passkey", "kv", "vartrack", "count", "digit")
CMA_VARIANTS = ("sep", "full")
VARIANTS = ("equal-n", "strict")
NORMALIZERS = ("pool", "reference")
METHODS = ("namm", "full", "recent", "h2o")


def cmd_train(args) -> int:
    from workbench.namm.legacy import PREDATES
    from workbench.namm.run import FIXED, train_namm
    from workbench.namm.tasks import check_prompts
    from workbench.namm.train import FLAGS, NAMMTrainConfig
    from workbench.runs import RunStore, cli_command

    device = check_device(args.device)
    store = RunStore(args.runs)
    given = {field: getattr(args, dest) for dest, field in TRAIN_FIELDS.items() if getattr(args, dest) is not None}
    cfg, resume = None, None
    moved = given.pop("model", None) if args.resume is not None else None  # checked by its weights, not as text
    run = resumed_run(store, args, "namm", given, FLAGS, PREDATES, fixed=FIXED)
    if run is not None:
        check_resume_device(run, device)
        resume, total = run.id, run.info["config"]["gens"]
    else:
        cfg = NAMMTrainConfig(**given, device=device)
        check_prompts(cfg.model, cfg.tasks, cfg.length, cfg.pool_size(), cfg.seed, cfg.max_new_tokens)  # before Dask
        total = cfg.gens
    client = dask_client(args)

    def value(row: dict) -> str:
        return f"{row['fitness_max']:.3f} · kept {row['kept_mean']:.2f} · stage {row['stage'] + 1}"

    try:
        with iteration_progress("namm train", total, "generation fitness", value, quiet=args.quiet) as on_iteration:
            run = train_namm(cfg, store, resume=resume, client=client, on_iteration=on_iteration,
                             on_start=on_iteration.start, given=given, command=cli_command(), model=moved)
    finally:
        close_client(client)
    info = run.info
    print(json_text({"id": run.id, "path": str(run.path.absolute()), "status": info["status"],
                     "iterations": info["iterations"], "cma": info.get("cma"), "population": info.get("population"),
                     "best_fitness": None if info["best_loss"] is None else -info["best_loss"],
                     "policy": str(run.path.absolute() / "policy.safetensors"), "test_scores": info.get("test_scores"),
                     "test_kept": info.get("test_kept")}))
    return 0


def _policy_source(args):
    """The SavedPolicy named by --policy or --run (checked: θ length, statistics), or None."""
    from workbench.namm.saved import load_policy

    if args.policy and args.run:
        raise ValueError("give --policy FILE or --run ID, not both")
    if args.run:
        from workbench.namm.saved import load_run_policy

        return load_run_policy(args.runs, args.run)[0]
    return load_policy(args.policy) if args.policy else None


def _same_model(given: str, trained_on: str) -> bool:
    """Whether --model names the model a policy was trained on: the same name, or the same folder."""
    if given == trained_on:
        return True
    a, b = user_path(given), user_path(trained_on)
    return a.exists() and b.exists() and a.resolve() == b.resolve()


def cmd_eval(args) -> int:
    from workbench.atomic import atomic_write
    from workbench.namm.cache import check_n_up
    from workbench.namm.tasks import check_prompts, check_task_names

    device = check_device(args.device)  # first, as every command: a mistyped --device came after the tokenizer loaded
    check_out_file(args.out)
    saved = _policy_source(args)
    # by default every method that can run: namm needs a policy (a default that named it always failed without one)
    methods = list(dict.fromkeys(args.methods or [m for m in METHODS if m != "namm" or saved is not None]))
    if "namm" in methods and saved is None:
        raise ValueError("method namm needs a policy: give --policy FILE or --run ID (or leave namm out of --methods)")
    meta = saved.meta if saved is not None else {}
    model = args.model or meta.get("model") or "smollm2"
    tasks = check_task_names(args.tasks or meta.get("tasks") or ["passkey"])
    length = args.length or meta.get("length") or 512
    n_up = check_n_up(args.n_up or meta.get("n_up") or 64, "--n-up")
    budgets = sorted({float(b) for b in args.budgets})  # a budget given twice is evaluated once
    if any(not 0 < b <= 1 for b in budgets):
        raise ValueError(f"--budgets are kept-cache fractions in (0, 1], got {budgets}")
    trained_on = meta.get("model")
    if "namm" in methods and args.model and trained_on and not _same_model(args.model, trained_on):
        say("note", f"--model {args.model}: the policy was trained on {trained_on} (its feature statistics were "
                    "collected there); NAMM is scored on --model as asked")
    trained_at = meta.get("n_up")
    if "namm" in methods and args.n_up and trained_at and args.n_up != trained_at:
        say("note", f"--n-up {args.n_up}: the policy was trained at n_up {trained_at} (its feature statistics were "
                    "collected there); NAMM is scored at --n-up as asked")
    check_prompts(model, tasks, length, args.n, args.seed, args.max_new_tokens, "test")

    from workbench.namm.evaluation import Method, compare
    from workbench.namm.models import load_eager_model
    from workbench.namm.tasks import make_examples
    from workbench.threads import torch_threads

    net, tokenizer = load_eager_model(model, device=device)
    examples = {t: make_examples(t, tokenizer, args.n, length, args.seed, "test") for t in tasks}
    log = None if args.quiet else (lambda line: err.print(line))
    rows = []
    with torch_threads(args.threads):
        if "namm" in methods:
            rows += compare(net, tokenizer, examples, [Method("namm", make=lambda: saved.build(net.config))],
                            n_up=n_up, max_new_tokens=args.max_new_tokens, log=log)
            kept = sum(r["kept"] for r in rows) / len(rows)
            budgets = sorted({*budgets, round(kept, 3)})  # the baselines also at NAMM's own fraction
        todo = [Method("full")] if "full" in methods else []
        todo += [Method(m, b) for m in ("recent", "h2o") if m in methods for b in budgets]
        rows += compare(net, tokenizer, examples, todo, n_up=n_up, max_new_tokens=args.max_new_tokens, log=log)
    out = {"model": model, "n_up": n_up, "length": length, "n": args.n, "seed": args.seed, "split": "test",
           "policy": None if saved is None else {k: saved.meta.get(k)
                                                 for k in ("run", "generation", "variant", "max_kept")},
           "rows": rows}
    text = json_text(out)
    if args.out:
        from pathlib import Path

        atomic_write(Path(args.out), lambda p: p.write_text(text))
    print(text if args.json else json_text(out, indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `workbench namm train|eval` to the `workbench` parser."""
    namm = sub.add_parser("namm", help="NAMM: learned KV-cache eviction (train by CMA-ES, evaluate vs baselines)")
    namm_sub = namm.add_subparsers(dest="action", required=True, metavar="ACTION")

    tr = namm_sub.add_parser("train", help="CMA-ES over the BAM policy's 4172 parameters, fitness normalised by the "
                                           "full cache, one task added per curriculum stage",
                             # opening with the help line (the parser puts it first otherwise: said twice)
                             description="CMA-ES over the BAM policy's 4172 parameters, fitness normalised by the "
                                         "full cache, one task added per curriculum stage (spec §3: each task's "
                                         "score over the full cache's); --resume ID continues a run, refusing flags "
                                         "that contradict it.")
    tr.add_argument("--model", help="'smollm2' (default), a .gguf file or a model folder; with --resume: where the "
                                    "run's model is now, if it was moved (the same model, checked by its weights)")
    tr.add_argument("--tasks", nargs="+", choices=TASK_NAMES, help="curriculum tasks in order (default: passkey)")
    tr.add_argument("--gens", type=int, help="CMA-ES generations in all (default: 10)")
    tr.add_argument("--pop", type=int, help="population λ (default: 8; the spec's 32 is slow on a CPU)")
    tr.add_argument("--sigma", type=float, help="σ0 (default: 0.065, the spec's)")
    tr.add_argument("--cma", choices=CMA_VARIANTS, help="sep: separable (default, CPU), full: full covariance (its "
                    "4172² matrix and eigenbasis make each generation's checkpoint ≈ 280 MB)")
    tr.add_argument("--n-up", type=int, help="tokens between eviction steps, a multiple of 16 (default: 64)")
    tr.add_argument("--seed", type=SEED, help="seed of CMA-ES and of the prompts (default: 0)")
    tr.add_argument("--prompts", type=int, help="training prompts per task a generation is scored on (default: 4)")
    tr.add_argument("--pool", type=int, help="training prompts per task each generation draws its --prompts from, "
                    "afresh, as the reference (default: 32; 0: the same --prompts every generation)")
    tr.add_argument("--normalizer", choices=NORMALIZERS,
                    help="where the full cache solves none of a generation's prompts of a task, divide its scores by "
                         "the full cache's mean on the pool (pool, the default; 1e-7 where it solves none of those) "
                         "or as evo-memory, by the drawn prompts' mean + 1e-7 always (reference)")
    tr.add_argument("--length", type=POSITIVE, help="prompt tokens (default: 512)")
    tr.add_argument("--max-new-tokens", type=int, help="answer tokens at most (default: 8)")
    tr.add_argument("--variant", choices=VARIANTS, help="equal-n (default): every head keeps N slots; strict: "
                                                        "fill slots masked")
    tr.add_argument("--memory-weight", type=float, help="fitness − w·kept fraction (default 0: the spec's fitness)")
    tr.add_argument("--max-kept", type=float, metavar="FRACTION",
                    help="the capped variant (beyond the paper): each layer keeps at most this fraction of the "
                         "tokens it has seen, the best-scored of those that qualify (default: no cap)")
    tr.add_argument("--n-test", type=int, help="test prompts per task scored at the end (default: 8; 0: none)")
    tr.add_argument("--threads", type=POSITIVE,
                    help="torch threads of every evaluation (default: 1; part of the result)")
    tr.add_argument("--stage-gens", nargs="+", type=int, help="generations per stage (default: --gens split evenly)")
    tr.add_argument("--chunk", type=int, help="candidates per Dask task (default: 1)")
    tr.add_argument("--runs", default="runs", help="run store folder (default: runs)")
    tr.add_argument("--resume", metavar="RUN_ID", help="continue a stopped or killed run (an id or a unique "
                    "prefix; settings flags must match the run's or be left out)")
    add_dask_arguments(tr, "the population (--chunk candidates a task)")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device_argument(tr, "; with --resume: the run's own, another is refused")
    tr.set_defaults(func=cmd_train)

    ev = namm_sub.add_parser("eval", help="task score vs kept-cache fraction: a NAMM policy, the full cache, recent "
                                          "window + sinks and H2O at budgets (JSON)")
    ev.add_argument("--policy", help="a policy file (policy.safetensors of a run, or .npz with theta, mean, var)")
    ev.add_argument("--run", metavar="ID", help="a namm run (its policy.safetensors)")
    ev.add_argument("--runs", default="runs", help="run store folder for --run (default: runs)")
    ev.add_argument("--model", help="'smollm2', a .gguf file or a model folder (default: the policy's model, else "
                                     "smollm2)")
    ev.add_argument("--tasks", nargs="+", choices=TASK_NAMES, help="tasks scored (default: the policy's tasks, else "
                                                                 "passkey)")
    ev.add_argument("--length", type=POSITIVE, help="prompt tokens (default: the policy's training length, else 512)")
    ev.add_argument("--n", type=POSITIVE, default=8, help="test prompts per task (default: 8)")
    ev.add_argument("--n-up", type=POSITIVE, help="tokens between eviction steps (default: the policy's, else 64)")
    ev.add_argument("--budgets", nargs="+", type=float, default=[0.25, 0.5],
                    help="kept fractions for recent / h2o (default: 0.25 0.5; NAMM's own fraction is added)")
    ev.add_argument("--methods", nargs="+", choices=METHODS,
                    help="methods scored (default: all; namm only with --policy or --run)")
    ev.add_argument("--seed", type=SEED, default=0, help="prompt seed (test split; default: 0)")
    ev.add_argument("--max-new-tokens", type=POSITIVE, default=8, help="answer tokens at most")
    ev.add_argument("--threads", type=POSITIVE, default=1, help="torch threads (default: 1)")
    ev.add_argument("--out", help="also write the JSON to this file (atomically)")
    ev.add_argument("--json", action="store_true", help="one JSON line")
    ev.add_argument("--quiet", action="store_true", help="no per-method lines on stderr")
    add_device_argument(ev)
    ev.set_defaults(func=cmd_eval)
