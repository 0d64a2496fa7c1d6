"""`workbench experts train|adapt|report|eval|generalist`: Transformer² SVF experts (and LoRA ones for comparison)
trained by REINFORCE into the run store, adaptation strategies evaluated on a mixed test set, reports over seeds."""

from __future__ import annotations

import argparse
import json

from workbench.cli.common import (
    POSITIVE,
    SEED,
    add_device_argument,
    check_device,
    check_resume_device,
    finite,
    iteration_progress,
    json_text,
    note_quick_zoo,
    resumed_run,
    say,
    work_progress,
)

#: `experts train` flags (dest) whose parser default is None, and the ExpertRunConfig fields they set.
TRAIN_FIELDS = {"model": "model", "task": "task", "adapter": "adapter", "rank": "rank", "iters": "iters",
                "batch": "batch", "seed": "seed", "lr": "lr", "kl_coeff": "kl_coeff", "val_every": "val_every",
                "val_n": "val_n", "n_test": "n_test", "threads": "threads", "prompt_format": "prompt_format",
                "stop_token": "stop_token"}
#: `experts adapt` flags (dest) whose parser default is None, and the AdaptConfig fields they set.
ADAPT_FIELDS = {"model": "model", "tasks": "tasks", "target": "target", "shots": "shots", "cem_iters": "cem_iters",
                "pop": "pop", "alpha_per": "alpha", "variant": "variant", "strategies": "strategies", "n": "n",
                "seed": "seed", "test_seed": "test_seed", "threads": "threads", "prompt_format": "prompt_format",
                "stop_token": "stop_token"}
#: the AdaptConfig fields that only few-shot mixing reads, and their flags
FEW_SHOT_FLAGS = {"shots": "--shots", "cem_iters": "--cem-iters", "pop": "--pop", "alpha": "--alpha-per",
                  "variant": "--variant"}
# spelled out so that --help imports no torch (workbench.lm.tasks, workbench.experts.adapt / .run / .mixing)
TASKS = ("add", "reverse", "sort", "recall", "brackets")
CHAT_TASKS = ("larger",)  # workbench.lm.chat_tasks: for chat models (--prompt-format chat)
STRATEGIES = ("base", "experts", "prompt", "classifier", "few-shot")
STOP_TOKENS = ("drop", "count")


def _given(args, fields: dict[str, str]) -> dict:
    return {field: getattr(args, dest) for dest, field in fields.items() if getattr(args, dest) is not None}


def cmd_train(args) -> int:
    from workbench.experts.run import FIXED, FLAGS, KIND, PREDATES, ExpertRunConfig, check_model, train_expert
    from workbench.runs import RunStore, cli_command

    device = check_device(args.device)
    store = RunStore(args.runs)
    given = _given(args, TRAIN_FIELDS)
    cfg, resume = None, None
    moved = given.pop("model", None) if args.resume is not None else None  # checked by its weights, not as text
    run = resumed_run(store, args, KIND, given, FLAGS, PREDATES, fixed=FIXED)
    if run is not None:
        check_resume_device(run, device)
        resume, config = run.id, run.info["config"]
        total, task = config["iters"], config["task"]
    else:
        if not args.model or not args.task:
            raise ValueError("give --model (e.g. data/zoo/generalist) and --task (one of the zoo's tasks or "
                             "classify), or --resume RUN_ID")
        cfg = ExpertRunConfig(**{**given, "device": device})
        if "rank" in given and cfg.adapter != "lora":  # an SVF expert has no rank: the flag would go unused
            raise ValueError("--rank is the rank of a LoRA adapter: give --adapter lora too, or leave --rank out")
        check_model(cfg.model, cfg.prompt_format)
        from pathlib import Path

        # after the checks: a refusal is one line alone
        note_quick_zoo(str(Path(cfg.model).parent), model=cfg.model)  # ZOO/generalist of a smoke-test zoo
        total, task = cfg.iters, cfg.task
    with iteration_progress(f"experts train {task}", total, "val", _train_value, quiet=args.quiet) as on_iteration:
        run = train_expert(cfg, store, resume=resume, on_iteration=on_iteration,
                           on_start=on_iteration.start, given=given, command=cli_command(), model=moved)
    info = run.info
    print(json_text({"id": run.id, "path": str(run.path.absolute()), "status": info["status"],
                     "iterations": info["iterations"],
                     "best_val_accuracy": None if info["best_loss"] is None else -info["best_loss"],
                     "n_params": info.get("n_params"), "test_scores": info.get("test_scores")}))
    return 0


def _train_value(row: dict) -> str:
    return f"{row['best_val_accuracy']:.3f} · reward {row['reward']:+.2f}"


def resolve_experts(specs: list[str], runs: str) -> list[str]:
    """Expert files for --experts: each spec is a file, or the id (or unique prefix) of an `experts train` run."""
    from pathlib import Path

    from workbench.experts.run import expert_file
    from workbench.runs import RunError, RunStore

    store, out = RunStore(runs), []
    for spec in specs:
        if Path(spec).is_file():
            out.append(spec)
            continue
        if Path(spec).suffix == ".safetensors" or Path(spec).is_dir():
            what = "a folder" if Path(spec).is_dir() else "no such file"
            raise ValueError(f"--experts {spec}: {what}; give expert.safetensors files or `experts train` run ids")
        try:
            out.append(str(expert_file(store.open(spec))))
        except RunError as error:
            raise ValueError(f"--experts {spec}: not an expert file, and {error}") from None
    return out


def cmd_adapt(args) -> int:
    from workbench.experts.adapt import (
        FLAGS,
        KIND,
        PREDATES,
        AdaptConfig,
        check_plan,
        plan,
        read_experts,
        resumed_units,
    )
    from workbench.experts.run import check_model
    from workbench.runs import RunStore, cli_command

    device = check_device(args.device)
    store = RunStore(args.runs)
    given = _given(args, ADAPT_FIELDS)
    if args.normalize:
        given["normalize"] = True
    cfg, resume = None, None
    if args.resume is not None and args.experts:
        given["experts"] = resolve_experts(args.experts, args.runs)
    moved = given.pop("model", None) if args.resume is not None else None  # checked by its weights, not as text
    run = resumed_run(store, args, KIND, given, FLAGS, PREDATES)
    if run is not None:
        check_resume_device(run, device)
        resume, total = run.id, len(resumed_units(run))
    else:
        if not args.model or not args.experts:
            raise ValueError("give --model (the experts' base model) and --experts RUN_ID|FILE …, or --resume RUN_ID")
        cfg = AdaptConfig(**{**given, "experts": resolve_experts(args.experts, args.runs), "device": device})
        check_model(cfg.model, cfg.prompt_format)
        experts = read_experts(cfg.experts, cfg.target)
        strategies, units = plan(cfg, experts)
        check_plan(cfg, strategies, experts)
        unused = [FEW_SHOT_FLAGS[f] for f in FEW_SHOT_FLAGS if f in given] + (["--normalize"] if args.normalize else [])
        if unused and "few-shot" not in strategies:
            raise ValueError(f"{', '.join(unused)} set(s) few-shot CEM mixing, which this run does not do: give "
                             "--target TASK (a task without an expert) and keep few-shot in --strategies, or leave "
                             f"{'it' if len(unused) == 1 else 'them'} out")
        total = len(units)
    from workbench.experts.adapt import adapt

    with iteration_progress("experts adapt", total, "", _adapt_value, quiet=args.quiet) as on_iteration:
        run = adapt(cfg, store, resume=resume, on_iteration=on_iteration, on_start=on_iteration.start, given=given,
                    command=cli_command(), model=moved)
    info = run.info
    print(json_text({"id": run.id, "path": str(run.path.absolute()), "status": info["status"],
                     "iterations": info["iterations"],
                     "test_scores": info.get("test_scores")}))
    return 0


def _adapt_value(row: dict) -> str:
    value = row["mean_accuracy"] if row["mean_accuracy"] == row["mean_accuracy"] else row["shots_accuracy"]
    return f"{row['unit']} {value:.3f}"


def cmd_report(args) -> int:
    from workbench.experts.report import report
    from workbench.runs import RunStore

    store = RunStore(args.runs)
    out = report([store.open(i) for i in args.ids])
    for run_id, held in out["repeats"].items():
        say("note", f"{run_id} repeats the settings and seed of {held} (the same computation again): counted once")
    if out.get("adapt", {}).get("differs"):
        say("note", f"these adapt runs differ in {', '.join(out['adapt']['differs'])}, not only in their seed: each "
                    "mean ± std mixes those settings")
    if args.json:
        print(json_text(out))
        return 0
    from rich.console import Console
    from rich.table import Table

    def cell(s: dict) -> str:  # one run has no spread: its score alone (± 0.000 read as a measured one)
        if s["mean"] is None:
            return ""
        return f"{s['mean']:.3f}" if s.get("runs", 2) < 2 else f"{s['mean']:.3f} ± {s['std']:.3f}"

    console = Console(width=max(Console().width, 140), markup=False)
    if "experts" in out:
        several = len({e["model"] for e in out["experts"]}) > 1  # grouped apart: the model named
        table = Table("task", *(["model"] if several else []), "adapter", "stop token", "trainable params",
                      "base (test)", "expert (test)", "best validation", "runs",
                      title="experts: held-out test accuracy, mean ± std over runs")
        for e in out["experts"]:
            table.add_row(e["task"], *([e["model"]] if several else []), e["adapter"], e["stop_token"],
                          str(e["n_params"]), cell(e["base"]),
                          cell(e["expert"]), cell(e["best_val_accuracy"]), str(e["expert"]["runs"]))
        console.print(table)
    if "adapt" in out:
        a = out["adapt"]
        table = Table("strategy", *a["tasks"], "mean", title=f"adaptation: test accuracy, mean ± std over {a['runs']} "
                                                              f"runs (seeds {a['seeds']})")
        for s, per in a["per_task"].items():
            table.add_row(s, *[cell(per[t]) if t in per else "" for t in a["tasks"]],
                          cell(a["mean"][s]) if s in a["mean"] else "")
        console.print(table)
        for d, s in a["dispatch"].items():
            console.print(f"dispatcher {d}: accuracy {cell(s)}")
        if len(a["stop_tokens"]) > 1:
            console.print(f"note: these runs broke CEM's ties with different --stop-token rules "
                          f"({', '.join(a['stop_tokens'])}): the spread mixes them")
    return 0


def cmd_eval(args) -> int:
    import numpy as np

    from workbench.experts.adapt import check_experts_fit, read_experts
    from workbench.experts.mixing import check_alpha
    from workbench.experts.run import check_model
    from workbench.experts.train import check_chat_tasks
    from workbench.lm.tasks import check_tasks

    device = check_device(args.device)
    tasks = check_tasks(args.tasks, CHAT_TASKS, "--tasks")
    twice = next((t for i, t in enumerate(tasks) if t in tasks[:i]), None)
    if twice is not None:  # scored once (a dict per task) while the flag named it twice, as adapt refuses it
        raise ValueError(f"--tasks names {twice!r} twice; give each once")
    check_chat_tasks(tasks, args.prompt_format)
    check_model(args.model, args.prompt_format)
    if args.variant != "raw" and args.alpha is None:  # it was ignored: one expert is applied as trained
        raise ValueError("--variant says how --alpha mixes experts; one expert alone is applied as it was trained "
                         "(z = sigmoid(p)): leave --variant out, or give --alpha")
    experts = read_experts(resolve_experts(args.experts, args.runs), None) if args.experts else None
    if experts is not None and experts.classifier is not None:  # listed in the output, never applied
        raise ValueError("--experts: the classification expert dispatches prompts to experts (`experts adapt "
                         "--strategies classifier`); eval scores task experts: leave it out")
    alpha = None
    if args.alpha is not None:
        if experts is None:
            raise ValueError("--alpha mixes experts: give them with --experts")
        alpha = np.asarray(args.alpha, np.float64)
        k, m = len(experts.task_experts), len(next(iter(experts.task_experts.values())))
        if alpha.size not in (k, k * m):
            raise ValueError(f"--alpha has {alpha.size} values; {k} experts need {k} (one per expert) or {k * m} "
                             f"(one per expert per matrix, {m} matrices, expert-major)")
        alpha = check_alpha(alpha.reshape(k, -1))
    elif experts is not None and len(experts.task_experts) > 1:
        raise ValueError(f"{len(experts.task_experts)} experts: give their mixing coefficients with --alpha (one per "
                         "expert, or one per expert per matrix), or give one expert")
    from workbench.experts.adapt import Scorer
    from workbench.experts.model import SVFModel
    from workbench.lm.models import load_model
    from workbench.threads import torch_threads

    with torch_threads(args.threads), work_progress("experts eval", len(set(tasks)), loading=args.model) as advance:
        net, tok = load_model(args.model, device=device)
        svf = SVFModel(net, tok)
        if experts is not None:
            check_experts_fit(svf, experts)
        scorer = Scorer(svf, experts or _no_experts(), tasks, args.n, args.test_seed,
                        prompt_format=args.prompt_format)
        if alpha is not None:
            svf.apply_mixture(list(experts.task_experts.values()), alpha, variant=args.variant)
        else:
            svf.apply(next(iter(experts.task_experts.values())) if experts else None)
        acc = scorer.accuracy(progress=advance)
    print(json_text({"model": args.model, "experts": [str(p) for p in experts.paths] if experts else [],
                     "alpha": None if alpha is None else alpha.tolist(), "accuracy": acc}))
    return 0


def _no_experts():
    from workbench.experts.adapt import Experts

    return Experts([], [], [], [])


def cmd_generalist(args) -> int:
    from rich.progress import Progress

    from workbench.cli.common import err
    from workbench.experts.generalist import build_generalist, check_generalist

    device = check_device(args.device)
    check_generalist(args.zoo, args.out or f"{args.zoo}/generalist", steps=args.steps, lr=args.lr,
                     replace=args.replace)
    with Progress(console=err, disable=args.quiet) as bar:
        task = bar.add_task("generalist", total=args.steps)
        out = build_generalist(args.zoo, args.out or f"{args.zoo}/generalist", steps=args.steps, lr=args.lr,
                               seed=args.seed, classify=not args.no_classify, device=device,
                               progress=lambda n: bar.advance(task, n), replace=args.replace)
    print(json_text(json.loads((out / "generalist.json").read_text())))  # one line, as every command
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `workbench experts train|adapt|report|eval|generalist` to the `workbench` parser."""
    ex = sub.add_parser("experts", help="Transformer²: SVF experts by REINFORCE, adaptation strategies, reports")
    ex_sub = ex.add_subparsers(dest="action", required=True, metavar="ACTION")

    tr = ex_sub.add_parser("train", help="REINFORCE an SVF (or LoRA) expert for one task into the run store",
                           description="Greedy rollouts through the evaluation harness, reward ±1 by exact match, "
                                       "Adam on the SVF parameters only (spec §4); the best-validation expert is "
                                       "kept as expert.safetensors.")
    # settings default to None (then ExpertRunConfig's defaults apply), so that --resume can tell given flags
    tr.add_argument("--model", help="'smollm2', a .gguf file or a model folder (e.g. data/zoo/generalist, made by "
                                    "workbench experts generalist: the zoo's base gives SVF nothing to learn from); "
                                    "required unless --resume; with --resume: where the run's model is now, if it "
                                    "was moved (the same model, checked by its weights)")
    tr.add_argument("--task", choices=[*TASKS, "classify", "larger"],
                    help="the task (classify: the dispatcher expert; larger: for chat models such as smollm2); "
                         "required unless --resume")
    tr.add_argument("--adapter", choices=["svf", "lora"], help="svf (default) or lora (peft, the same matrices)")
    tr.add_argument("--rank", type=int, help="LoRA rank (default: 4)")
    tr.add_argument("--iters", type=int, help="REINFORCE steps (default: 100)")
    tr.add_argument("--batch", type=int, help="prompts per step (default: 16)")
    tr.add_argument("--seed", type=SEED, help="seed of the expert's initial p and of the training and validation "
                                              "prompts (default: 0)")
    tr.add_argument("--lr", type=float, help="Adam learning rate (default: 2e-3, the reference's)")
    tr.add_argument("--kl-coeff", type=float, help="λ of KL(π_ref‖π_θ) in the loss (default: 0)")
    tr.add_argument("--val-every", type=int, help="steps between validations (default: 10)")
    tr.add_argument("--val-n", type=int, help="validation prompts (default: 64)")
    tr.add_argument("--n-test", type=int, help="held-out test prompts for the final scores (default: 128)")
    tr.add_argument("--threads", type=POSITIVE, help="torch threads (default: 1; a resume keeps the run's)")
    tr.add_argument("--prompt-format", choices=["plain", "chat"],
                    help="plain (default: the zoo's prompts) or chat (the chat template around an instruction, for "
                         "chat models such as smollm2)")
    tr.add_argument("--stop-token", choices=STOP_TOKENS,
                    help="drop (default, the reference's: log π over the answer's tokens, the eos left out) or count "
                         "(the eos the model emitted counts too, so stopping gets credit; runs before 2026-12-01)")
    _run_flags(tr)
    tr.set_defaults(func=cmd_train)

    ad = ex_sub.add_parser("adapt", help="evaluate the adaptation strategies on a mixed test set (a run)",
                           description="base, each expert, the oracle, prompt dispatch by the base, the classification "
                                       "expert, and few-shot CEM mixing of α for a --target without an expert.")
    ad.add_argument("--model", help="the experts' base model: 'smollm2', a .gguf file or a model folder (required "
                                    "unless --resume; with --resume: where the run's model is now, if it was moved, "
                                    "the same model, checked by its weights)")
    ad.add_argument("--experts", nargs="+", metavar="RUN_ID|FILE",
                    help="SVF experts: `experts train` run ids or expert files; one trained on classify is the "
                         "classification expert (required unless --resume)")
    ad.add_argument("--tasks", nargs="+", choices=[*TASKS, *CHAT_TASKS],
                    help="tasks of the mixed test set (default: the experts' tasks and the target; larger: chat "
                         "models, with --prompt-format chat)")
    ad.add_argument("--target", choices=[*TASKS, *CHAT_TASKS],
                    help="a task WITHOUT an expert, adapted to by few-shot CEM mixing")
    ad.add_argument("--shots", nargs="+", type=int, help="numbers of shots (default: 3 5 10 20)")
    ad.add_argument("--cem-iters", type=int, help="CEM generations per number of shots (default: 5)")
    ad.add_argument("--pop", type=int, help="CEM population (default: 32, the reference's)")
    ad.add_argument("--alpha-per", choices=["expert", "matrix"],
                    help="one α per expert (default, the reference's policy config) or per expert per matrix (what "
                         "its few-shot script ran)")
    ad.add_argument("--variant", choices=["raw", "sigmoid"], help="mix raw p (default, the reference's) or sigmoid(p)")
    ad.add_argument("--normalize", action="store_true",
                    help="normalise α over the experts (under SVF's rescale, the default, only α's scale changes, "
                         "not the weights)")
    ad.add_argument("--strategies", nargs="+", choices=STRATEGIES, help="strategies to score (default: all the inputs "
                                                                          "allow)")
    ad.add_argument("--n", type=int, help="test prompts per task (default: 64)")
    ad.add_argument("--seed", type=SEED, help="seed of the shots and of CEM (default: 0)")
    ad.add_argument("--test-seed", type=SEED, help="held-out stream of the test set (default: 0, fixed over seeds)")
    ad.add_argument("--threads", type=POSITIVE, help="torch threads (default: 1)")
    ad.add_argument("--prompt-format", choices=["plain", "chat"], help="how the experts were trained (default: plain)")
    ad.add_argument("--stop-token", choices=STOP_TOKENS,
                    help="CEM's tie-break log-likelihood of the correct shots: drop (default, the reference's: the "
                         "eos left out) or count")
    _run_flags(ad)
    ad.set_defaults(func=cmd_adapt)

    rp = ex_sub.add_parser("report", help="mean ± std over runs (seeds) of experts and adapt runs")
    rp.add_argument("ids", nargs="+", metavar="ID", help="run ids or unique prefixes")
    rp.add_argument("--runs", default="runs", help="run store folder (default: runs)")
    rp.add_argument("--json", action="store_true", help="one JSON line")
    rp.set_defaults(func=cmd_report)

    ev = ex_sub.add_parser("eval", help="accuracy per task of the base, an expert, or a mixture with given α (JSON)")
    ev.add_argument("--model", required=True, help="the experts' base model")
    ev.add_argument("--experts", nargs="+", metavar="RUN_ID|FILE", help="none: the base; one: that expert; several: "
                                                                         "a mixture (needs --alpha)")
    ev.add_argument("--alpha", nargs="+", type=finite, help="mixing coefficients: one per expert, or one per expert "
                                                            "per matrix (expert-major, matrices in the model's order "
                                                            "as an adapt run's scores.json lists them)")
    ev.add_argument("--variant", choices=["raw", "sigmoid"], default="raw", help="mix raw p (default) or sigmoid(p)")
    ev.add_argument("--tasks", nargs="+", default=list(TASKS), choices=[*TASKS, *CHAT_TASKS],
                    help="tasks to score (default: every zoo task; larger: for chat models, with --prompt-format chat)")
    ev.add_argument("--prompt-format", choices=["plain", "chat"], default="plain",
                    help="plain (default: the zoo's prompts) or chat (the chat template around an instruction, as "
                         "experts trained with --prompt-format chat were)")
    ev.add_argument("--n", type=POSITIVE, default=128, help="held-out prompts per task (default: 128)")
    ev.add_argument("--test-seed", type=SEED, default=0, help="held-out stream (default: 0)")
    ev.add_argument("--threads", type=POSITIVE, default=1, help="torch threads (default: 1)")
    ev.add_argument("--runs", default="runs", help="run store folder for run ids (default: runs)")
    add_device_argument(ev)
    ev.set_defaults(func=cmd_eval)

    ge = ex_sub.add_parser("generalist", help="the zoo's base fine-tuned briefly on every task (+ classify): a base "
                                              "SVF experts can improve (the zoo's base scores ~0)")
    ge.add_argument("--zoo", default="data/zoo", help="zoo folder (default: data/zoo)")
    ge.add_argument("--out", help="model folder (default: ZOO/generalist, inside the zoo it derives from)")
    ge.add_argument("--steps", type=int, default=300, help="fine-tuning steps (default: 300)")
    ge.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (default: 3e-3)")
    ge.add_argument("--seed", type=SEED, default=0, help="seed of the fine-tuning")
    ge.add_argument("--no-classify", action="store_true", help="leave the classification task out")
    ge.add_argument("--replace", action="store_true", help="train anew where a generalist is (default: refuse; the "
                                                           "experts trained on it no longer load)")
    ge.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device_argument(ge)
    ge.set_defaults(func=cmd_generalist)


def _run_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", default="runs", help="run store folder (default: runs)")
    parser.add_argument("--resume", metavar="RUN_ID",
                        help="continue a stopped or killed run (an id or a unique prefix; settings flags must match "
                             "the run's or be left out)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device_argument(parser, "; with --resume: the run's own, as its floats depend on it, another is refused")
