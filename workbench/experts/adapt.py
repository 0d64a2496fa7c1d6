"""Transformer² adaptation at inference (spec §4), evaluated on a mixed test set and stored as a run (`workbench
experts adapt`, run kind "adapt").

    cfg = AdaptConfig(model="data/zoo/generalist", experts=["runs/…/expert.safetensors", …], target="brackets")
    run = run_adapt(cfg, RunStore("runs"))              # or run_adapt(None, store, resume="<run-id>")

The mixed test set: `n` held-out prompts of each task in `tasks` (default: the experts' tasks and the target),
the same for every seed (held-out stream `test_seed`). Strategies, each scored per task by exact match:

    base          the base weights
    expert:<t>    the expert of task t applied to every prompt (each expert on each task)
    oracle        every prompt answered by its own task's expert (the base for a task without one): the
                  ceiling of any dispatcher (computed from the expert:<t> scores)
    prompt        two passes: (1) the BASE model classifies each prompt ("t:" + prompt for the zoo's character
                  models, which only a base that learnt that format can answer; a few-shot instruction for
                  subword models such as SmolLM2), (2) the prompt is answered with the expert of the class it
                  named, or the base weights for a class without an expert (or an answer that is no class)
    classifier    the same two passes with the classification expert (an SVF expert trained on the task
                  "classify") applied in pass 1
    few-shot:<k>  for the target task (which has NO expert of its own): k shots from its training half, α over
                  the task experts searched by CEM (population `pop`, `cem_iters` generations, spec §4: member 0 the
                  previous best, elites 20 %, the best member applied, ties broken by the log-likelihood of the
                  correct shots), then the target's test prompts answered with the best mixture

Mixtures follow the spec's default, z′ = Σ_k α_k·p_k over RAW parameters (`variant="sigmoid"` for Σ α·sigmoid(p)),
with one α per expert (`alpha="expert"`) or per expert and matrix (`alpha="matrix"`). The α reported is the
best member of the last generation, chosen on the shots, never on the test set.

Each strategy (and each CEM generation) is one iteration of the run store's loop, checkpointed, so a killed run
resumes where it stopped and ends as an uninterrupted one. Run folder (kind "adapt"):

    run.json                  config, the expert files' copies and hashes, status
    inputs/expert-<i>-<task>.safetensors   copies of the experts (a resume reads these)
    metrics.parquet           per iteration: the strategy, its mean test accuracy, CEM's few-shot accuracy
    checkpoint.json+.npz      results so far and the live CEM
    scores.json               per strategy per task accuracy, means, dispatcher confusion matrices, α per k
    scores.parquet            the same as rows (strategy, task, accuracy, n, seed)

The metric is the best mean test accuracy of a strategy scored on every task (higher is better).
"""

from __future__ import annotations

import hashlib
import math
import numbers
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from workbench.checks import absolute_paths, check_counts, check_seed, checked_again, is_count, paths_as_text
from workbench.runs import (
    Run,
    RunError,
    RunStore,
    as_run_did,
    check_resume,
    checkpointed_loop,
    record_resume,
    releases_claims,
    setting_up,
    write_json,
)

KIND = "adapt"
METRIC = "accuracy"
STRATEGIES = ("base", "experts", "prompt", "classifier", "few-shot")
ALPHAS = ("expert", "matrix")
OTHER = "other"  # a dispatcher answer that names no task
#: AdaptConfig fields and the `workbench experts adapt` flags that set them.
FLAGS = {"model": "--model", "experts": "--experts", "tasks": "--tasks", "target": "--target", "shots": "--shots",
         "cem_iters": "--cem-iters", "pop": "--pop", "alpha": "--alpha-per", "variant": "--variant",
         "normalize": "--normalize", "strategies": "--strategies", "n": "--n", "seed": "--seed",
         "test_seed": "--test-seed", "threads": "--threads", "prompt_format": "--prompt-format",
         "stop_token": "--stop-token"}
#: Settings newer than some runs (workbench.runs.resume_conflicts): name → (default, what runs made before did).
#: stop_token (2026-12-01): CEM's tie-break counted the eos in the shots' log-likelihood before.
PREDATES = {"stop_token": ("drop", "count")}


@dataclass
class AdaptConfig:
    """The settings of a stored adaptation run (module doc). `experts` are SVF expert files (save_expert); the
    one trained on "classify", if any, is the classification expert. `strategies` empty: every strategy the
    inputs allow (classifier: with a classification expert; few-shot: with a target). `stop_token`: CEM's
    tie-break log-likelihood leaves the answers' eos out ("drop", the reference's) or counts it ("count").
    `workbench experts adapt` sets each field with the flag named below.

    Attributes:
        model: the experts' base model: 'smollm2', a .gguf file or a model folder (`--model`).
        experts: SVF expert files (`--experts`, which also takes `experts train` run ids), one per task; the one
            trained on "classify" is the classification expert; none may be the target's.
        tasks: the tasks of the mixed test set (`--tasks`); empty: the task experts' tasks and the target.
        target: a task WITHOUT an expert, adapted to by few-shot CEM mixing (`--target`); None: no few-shot.
        shots: the numbers of shots k, one CEM search each (`--shots`; distinct, ≥ 1; default 3 5 10 20); the
            shots come from the target's training half.
        cem_iters: CEM generations per number of shots (`--cem-iters`, default 5).
        pop: CEM's population, ≥ 10 so that int(0.2·pop) ≥ 2 elites (`--pop`, default 32, the spec's).
        alpha: one α per expert ("expert", the default, as the reference's policy config) or per expert and
            matrix ("matrix", what the reference's few-shot script ran: its per_layer=true) (`--alpha-per`).
        variant: "raw" (z′ = Σ α_k·p_k, the reference's, the default) or "sigmoid" (Σ α_k·sigmoid(p_k))
            (`--variant`).
        normalize: divide α by its sum over the experts before mixing (`--normalize`; default False, as the
            reference's few-shot script). With SVF's rescale it changes only α's scale, not the weights.
        strategies: of "base", "experts", "prompt", "classifier", "few-shot" (`--strategies`); empty: every one
            the inputs allow. The oracle is computed whenever the experts' scores are there.
        n: test prompts per task of the mixed test set (`--n`, default 64).
        seed: the shots' draw and CEM's generator (seed·1000 + k) (`--seed`, default 0): what varies across runs.
        test_seed: the held-out stream of the test set (`--test-seed`, default 0), kept fixed across seeds.
        threads: torch threads (`--threads`, default 1).
        prompt_format: "plain" (the zoo's prompts) or "chat" (the chat template around an instruction, for chat
            models such as SmolLM2) (`--prompt-format`): the format the experts were trained with.
        stop_token: "drop" or "count" (`--stop-token`; above).
        device: "cpu", "cuda" or "cuda:N" (`--device`); None: the GPU when torch sees one.
    """

    model: str
    experts: list[str]
    tasks: list[str] = field(default_factory=list)
    target: str | None = None
    shots: list[int] = field(default_factory=lambda: [3, 5, 10, 20])
    cem_iters: int = 5
    pop: int = 32
    alpha: str = "expert"
    variant: str = "raw"
    normalize: bool = False
    strategies: list[str] = field(default_factory=list)
    n: int = 64
    seed: int = 0
    test_seed: int = 0
    threads: int = 1
    prompt_format: str = "plain"
    stop_token: str = "drop"
    device: str | None = None

    def __post_init__(self):
        from workbench.lm.models import SMOLLM2

        paths_as_text(self, "model", "experts")
        absolute_paths(self, "model", "experts", keep=(SMOLLM2,))  # found from any folder on resume
        check_seed(self.seed)
        check_seed(self.test_seed, '--test-seed')
        from workbench.experts.mixing import VARIANTS
        from workbench.experts.train import check_chat_tasks, check_prompt_format, check_stop_token
        from workbench.lm.chat_tasks import CHAT_INSTRUCTIONS
        from workbench.lm.tasks import check_tasks

        check_prompt_format(self.prompt_format)
        check_stop_token(self.stop_token)
        self.experts = [str(e) for e in ([self.experts] if isinstance(self.experts, str) else self.experts)]
        if not self.experts:
            raise ValueError("give the experts to adapt with: --experts RUN_ID|FILE …")
        self.tasks = check_tasks(self.tasks, tuple(CHAT_INSTRUCTIONS))  # one name given alone: that task
        if self.target is not None:
            check_tasks([self.target], tuple(CHAT_INSTRUCTIONS))
        check_chat_tasks([*self.tasks, self.target], self.prompt_format)
        if not isinstance(self.normalize, bool):  # "no" read as on
            raise ValueError(f"normalize (--normalize) is True or False, got {self.normalize!r}")
        if isinstance(self.strategies, str):  # one strategy, not one per letter
            self.strategies = [self.strategies]
        unknown = [s for s in self.strategies if s not in STRATEGIES]
        if unknown:
            raise ValueError(f"unknown strategy {unknown[0]!r} (--strategies); choose from {', '.join(STRATEGIES)}")
        for flag, values in (("--tasks", self.tasks), ("--strategies", list(self.strategies))):
            twice = next((v for i, v in enumerate(values) if v in values[:i]), None)
            if twice is not None:  # each was run (or scored) twice, the first result overwritten
                raise ValueError(f"{flag} names {twice!r} twice; give each once")
        few_shot = self.target is not None and (not self.strategies or "few-shot" in self.strategies)
        if self.tasks and few_shot and self.target not in self.tasks:
            # the few-shot mixtures are tested on the target: without it in the test set the run failed (KeyError)
            # after its whole CEM search
            raise ValueError(f"--tasks must include the --target task {self.target!r} (the few-shot mixture is "
                             f"tested on it), or leave --tasks out: the experts' tasks and the target")
        if "few-shot" in self.strategies and self.target is None:
            raise ValueError("the few-shot strategy adapts to a task without an expert: give it with --target TASK")
        shots = [self.shots] if isinstance(self.shots, numbers.Integral) else list(self.shots)  # shots=3: one
        if not shots or not all(is_count(k) for k in shots) or len(set(shots)) != len(shots):
            raise ValueError(f"--shots must be distinct positive numbers of shots, e.g. 3 5 10 20; got {self.shots}")
        self.shots = [int(k) for k in shots]
        check_counts(self, ("cem_iters", "n", "threads", "pop"), FLAGS)
        if self.pop < 10:
            raise ValueError(f"--pop must be at least 10 (CEM keeps int(0.2·pop) >= 2 elites), got {self.pop}")
        if self.alpha not in ALPHAS:
            raise ValueError(f"--alpha-per must be one of {', '.join(ALPHAS)}, got {self.alpha!r}")
        if self.variant not in VARIANTS:
            raise ValueError(f"--variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        if self.device is not None:
            self.device = str(self.device)

    def to_dict(self) -> dict:
        """The config as a plain dict (asdict), as run.json stores it."""
        return asdict(self)


@dataclass
class Experts:
    """The expert files read and checked: task experts (in the order given) and the classification expert."""

    paths: list[Path]
    tasks: list[str]  # one per path ("classify" for the classifier)
    params: list[dict]
    metas: list[dict]

    @property
    def task_experts(self) -> dict[str, dict]:
        from workbench.lm.tasks import CLASSIFY

        return {t: p for t, p in zip(self.tasks, self.params, strict=True) if t != CLASSIFY}

    @property
    def classifier(self) -> dict | None:
        from workbench.lm.tasks import CLASSIFY

        return next((p for t, p in zip(self.tasks, self.params, strict=True) if t == CLASSIFY), None)


def read_experts(paths: list[str | Path], target: str | None) -> Experts:
    """Load the expert files (no model needed) and refuse, with one error naming the file and the flag: a file
    that is not an SVF expert, one without a task, two experts for one task, a second classifier, an expert for
    the target (few-shot mixing is for a task WITHOUT an expert), no task expert at all."""
    from workbench.experts.model import load_expert
    from workbench.experts.train import check_expert_task
    from workbench.lm.tasks import CLASSIFY

    out = Experts([], [], [], [])
    for path in map(Path, paths):
        try:
            params, meta = load_expert(path)
            task = meta.get("task")
            if task is None:
                raise ValueError("its metadata names no task; write experts with `workbench experts train`")
            check_expert_task(task)
        except ValueError as error:
            raise ValueError(f"--experts {path}: {error}") from None
        if task in out.tasks:
            other = out.paths[out.tasks.index(task)]
            raise ValueError(f"--experts gives two {task} experts ({other} and {path}); give one expert per task")
        if target is not None and task == target:
            raise ValueError(f"--target {target} asks for few-shot mixing of a task WITHOUT an expert, but --experts "
                             f"includes a {target} expert ({path}): drop it from --experts, or pick a --target "
                             "that has no expert")
        out.paths.append(path)
        out.tasks.append(task)
        out.params.append(params)
        out.metas.append(meta)
    if not [t for t in out.tasks if t != CLASSIFY]:
        raise ValueError("--experts holds only a classification expert; give at least one task expert")
    return out


def check_experts_fit(svf, experts: Experts) -> None:
    """One error for an expert made for another model: a matrix it lacks or sizes differently (named), or the
    same shapes but other weights (the model key in its metadata differs)."""
    for path, params, meta in zip(experts.paths, experts.params, experts.metas, strict=True):
        try:
            svf.check(params, what="expert")
        except ValueError as error:
            raise ValueError(f"--experts {path}: {error}") from None
        key = meta.get("model_key")
        if key is not None and key != svf.key:
            raise ValueError(f"--experts {path} was trained on another model ({meta.get('model', '?')}, key "
                             f"{key[:12]}…) than --model (key {svf.key[:12]}…): its vectors fit the shapes but "
                             "not the weights; train experts on this model")


def plan(cfg: AdaptConfig, experts: Experts) -> tuple[list[str], list[str]]:
    """(the strategies that run, the iterations' unit names in order)."""
    wanted = list(cfg.strategies) or [s for s in STRATEGIES if (s != "classifier" or experts.classifier is not None)
                                      and (s != "few-shot" or cfg.target is not None)]
    if "classifier" in wanted and experts.classifier is None:
        raise ValueError("the classifier strategy needs a classification expert: add a run of `workbench experts train "
                         "--task classify` to --experts, or leave classifier out of --strategies")
    units = []
    for s in wanted:
        if s == "experts":
            units += [f"expert:{t}" for t in experts.task_experts]
        elif s == "few-shot":
            units += [f"few-shot:{k}:{g}" for k in cfg.shots for g in range(cfg.cem_iters)]
        else:
            units.append(s)
    return wanted, units


def check_plan(cfg: AdaptConfig, strategies: list[str], experts: Experts) -> None:
    """What a new run's plan would waste, refused (a resumed one goes on as it was started):
    - few-shot mixing of one task expert searches nothing: α·p composes the same weights at every α > 0 (SVF's
      rescale takes z′'s scale out), so CEM's pop × iterations × shots rollouts would all score one model;
    - a target neither mixed for (no few-shot) nor tested (not among the tasks) would go unused, silently."""
    if cfg.target is not None and "few-shot" not in strategies and cfg.tasks and cfg.target not in cfg.tasks:
        raise ValueError(f"--target {cfg.target} is read by few-shot mixing, which this run does not do, and is "
                         "not among --tasks: keep few-shot in --strategies, add it to --tasks, or leave it out")
    if "few-shot" in strategies and len(experts.task_experts) < 2:
        raise ValueError(f"few-shot CEM mixes task experts, and one alone ({', '.join(experts.task_experts)}) composes "
                         "the same weights at every α (SVF's rescale keeps only α's ratios): give two or more task "
                         "experts with --experts, or leave few-shot out of --strategies")


def test_tasks(cfg: AdaptConfig, experts: Experts) -> list[str]:
    """The mixed test set's tasks: cfg.tasks, else the task experts' tasks and the target."""
    if cfg.tasks:
        return list(cfg.tasks)
    return list(dict.fromkeys([*experts.task_experts, *([cfg.target] if cfg.target else [])]))


# --- scoring -------------------------------------------------------------------------------------------------

def is_char_model(tokenizer) -> bool:
    """The zoo's one-token-per-character tokenizer (its models know the "t:" classification format)."""
    from workbench.lm.tasks import CHARS

    ids = tokenizer(list(CHARS), add_special_tokens=False)["input_ids"]
    return all(len(i) == 1 for i in ids) and len(tokenizer) <= 256


def instruction_prompt(prompt: str, tasks: list[str] | tuple[str, ...] | None = None) -> str:
    """The classification prompt for subword models (SmolLM2): the mixed test set's task names (default: the
    zoo's), one training example per task in their order, then the prompt."""
    from workbench.lm.tasks import TASKS, draw, stream

    names = list(tasks or TASKS)
    lines = [f"{draw(t, 1, stream(0, t, 'train'), 'train')[0][0]} -> {t}" for t in names]
    return ("Name the task of each puzzle (" + ", ".join(names) + ").\n" + "\n".join(lines) + f"\n{prompt} ->")


def parse_label(text: str, tasks: list[str] | tuple[str, ...] | None = None) -> str:
    """The task a dispatcher named: its answer's first word if that is a task's name (the zoo's, or one of
    `tasks`), else "other"."""
    from workbench.lm.tasks import TASKS

    words = text.strip().split()
    word = words[0].strip(".,:;!\"'") if words else ""
    return word if word in TASKS or word in (tasks or ()) else OTHER


class Scorer:
    """The model, the experts and the tokenised test sets; scores strategies (the caller owns the loop)."""

    def __init__(self, svf, experts: Experts, tasks: list[str], n: int, test_seed: int, batch: int = 64,
                 prompt_format: str = "plain"):
        from workbench.lm.tasks import heldout

        self.svf, self.experts, self.tasks, self.batch = svf, experts, tasks, batch
        self.prompt_format = prompt_format
        self.tok = svf.tokenizer
        self.test = {t: heldout(t, n, test_seed) for t in tasks}
        self.char = is_char_model(self.tok)

    def correct(self, examples: list[tuple[str, str]], task: str) -> list[bool]:
        """Exact match of the weights now in the model on task examples (in the run's prompt format)."""
        from workbench.experts.train import format_examples, rollout
        from workbench.lm.tasks import get_task

        shown = format_examples(self.tok, task, examples, self.prompt_format)
        return rollout(self.svf.model, self.tok, shown, get_task(task).max_new_tokens, self.batch).correct

    def tasks_accuracy(self, params: dict | None) -> dict[str, float]:
        """Accuracy per task with one expert (None: the base) applied to every prompt."""
        self.svf.apply(params)
        return self.accuracy()

    def accuracy(self, progress: Callable[[int], None] | None = None) -> dict[str, float]:
        """Accuracy per test task of the weights now in the model (an expert, a mixture); progress(1) after each."""
        out = {}
        for task, examples in self.test.items():
            out[task] = float(np.mean(self.correct(examples, task)))
            if progress is not None:
                progress(1)
        return out

    def dispatch(self, dispatcher: dict | None, prompt_format: str) -> tuple[dict[str, float], dict]:
        """Two passes: classify every test prompt with `dispatcher` applied (None: the base), then answer each
        with the expert of the class it named (the base for a class without an expert). prompt_format: "char"
        (the classify task's "t:" prompts) or "instruction" (instruction_prompt, for subword models). Returns
        (accuracy per task, {"accuracy": dispatcher accuracy, "confusion": {true task: {named class: count}}})."""
        from workbench.experts.train import format_examples, rollout
        from workbench.lm.tasks import CLASSIFY, classify_prompt, get_task

        flat = self.flat_test()
        if prompt_format == "char":  # the classify task's own prompts, in the run's prompt format
            queries = format_examples(self.tok, CLASSIFY, [(classify_prompt(p), t) for t, p, _ in flat],
                                      self.prompt_format)
            budget = get_task(CLASSIFY).max_new_tokens
        else:
            queries = [(instruction_prompt(p, self.tasks), t) for t, p, _ in flat]
            budget = 6
        self.svf.apply(dispatcher)
        texts = rollout(self.svf.model, self.tok, queries, budget, self.batch).texts
        labels = [parse_label(x, self.tasks) for x in texts]
        right = self.answer_by_label(labels)
        acc = {t: float(np.mean([right[i] for i, (tt, _, _) in enumerate(flat) if tt == t])) for t in self.tasks}
        confusion: dict[str, dict[str, int]] = {t: {} for t in self.tasks}
        for (t, _, _), label in zip(flat, labels, strict=True):
            confusion[t][label] = confusion[t].get(label, 0) + 1
        hits = sum(label == t for (t, _, _), label in zip(flat, labels, strict=True))
        return acc, {"accuracy": hits / len(flat), "confusion": confusion}

    def flat_test(self) -> list[tuple[str, str, str]]:
        """Every test example as (task, prompt, answer), task by task: the order dispatch's labels follow."""
        return [(t, p, a) for t, ex in self.test.items() for p, a in ex]

    def answer_by_label(self, labels: list[str]) -> list[bool]:
        """Dispatch's second pass: whether each test example (flat_test's order) is answered right by the expert
        of the class `labels` names for it, the base weights where that class has no expert (or is "other")."""
        flat = self.flat_test()
        experts = self.experts.task_experts
        right = [False] * len(flat)
        for label in dict.fromkeys(labels):
            self.svf.apply(experts.get(label))  # a class without an expert: the base weights
            for task in self.tasks:
                rows = [i for i, (t, _, _) in enumerate(flat) if t == task and labels[i] == label]
                if rows:
                    for i, ok in zip(rows, self.correct([(flat[i][1], flat[i][2]) for i in rows], task), strict=True):
                        right[i] = ok
        return right


def draw_shots(target: str, k: int, seed: int) -> list[tuple[str, str]]:
    """k shots of the target from its TRAINING half (never a test prompt), seeded by (seed, k)."""
    from workbench.lm.tasks import draw

    return draw(target, k, np.random.default_rng([int(seed), int(k), 0x5407]), "train")


# --- the run -------------------------------------------------------------------------------------------------

def _hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _copy_inputs(folder: Path, experts: Experts) -> dict:
    """Copies of the expert files in the new run's inputs/, made before its run.json (RunStore.create's setup: a
    kill between the two left a run offered for a resume that was refused); their hashes, for its run.json (a
    resume reads the copies)."""
    from workbench.atomic import atomic_write

    (folder / "inputs").mkdir(exist_ok=True)
    records = []
    for i, (path, task) in enumerate(zip(experts.paths, experts.tasks, strict=True)):
        data = path.read_bytes()
        name = f"inputs/expert-{i}-{task}.safetensors"
        atomic_write(folder / name, lambda p, data=data: p.write_bytes(data))
        records.append({"path": name, "source": str(path), "task": task, "sha256": hashlib.sha256(data).hexdigest()})
    return {"expert_inputs": records}


def _sources(run: Run, experts: Experts) -> list[str]:
    """The expert files as the run was given them (run.json's expert_inputs), else the paths read."""
    records = run.info.get("expert_inputs") or []
    if len(records) == len(experts.paths):
        return [str(rec["source"]) for rec in records]
    return [str(p) for p in experts.paths]


def _input_copies(run: Run) -> list[Path]:
    if not run.info.get("expert_inputs"):
        raise RunError(f"run {run.id!r} has no copies of its experts: its set-up did not finish "
                       f"({run.info.get('error') or 'no error recorded'}); start a new run")
    out = []
    for rec in run.info.get("expert_inputs") or []:
        path = run.path / rec["path"]
        if not path.is_file() or _hash(path) != rec["sha256"]:
            raise RunError(f"the run's copy of its expert {rec['path']} is missing or changed (sha256 differs from "
                           "run.json); the run cannot be resumed")
        out.append(path)
    return out


def read_config(config: dict) -> AdaptConfig:
    """A stored run's config, settings newer than the run (PREDATES) as the run did them."""
    return AdaptConfig(**as_run_did(config, PREDATES))


def resumed_units(run: Run) -> list[str]:
    """The iterations of a stored adapt run (read from its config and its copies of the experts)."""
    cfg = read_config(run.info["config"])
    return plan(cfg, read_experts(_input_copies(run), cfg.target))[1]


@releases_claims
def adapt(cfg: AdaptConfig | None, store: RunStore | str | Path, resume: str | None = None, *,
          on_iteration: Callable[[int, int, dict], None] | None = None, should_stop: Callable[[], bool] | None = None,
          on_start: Callable[[Run], None] | None = None, given: dict | None = None, command: str | None = None,
          model: str | None = None) -> Run:
    """Run (or resume) the adaptation evaluation (module doc); returns the run. Every refusal (bad settings,
    unreadable experts, an expert of the target, experts of another model, a run of another kind) comes before
    a run folder is created. model: with resume, where the run's model is now (a moved folder; the CLI's
    --model), checked by its weights and recorded (workbench.lm.models.check_run_model).
    Callbacks (progress bars, pages): on_start(run) once the run exists, before its first iteration;
    on_iteration(done, total, metrics row) after each stored iteration (a workbench.Progress draws it);
    should_stop() between iterations: True stops the run where it can be resumed."""
    store = RunStore.of(store)
    import workbench.experts.cem  # noqa: F401 - registers CEM, which the checkpoint holds between generations
    from workbench.threads import torch_threads

    state = None
    if resume is not None:
        run = store.open(resume)
        check_resume(run, KIND, given or {}, names=FLAGS, predates=PREDATES)
        from workbench.lm.models import reopen_with_model

        run, cfg, state, moved = reopen_with_model(store, run, KIND, "experts adapt", model, read_config)
        if run.info.get("status") == "done" and moved is None:
            return run
        experts = read_experts(_input_copies(run), cfg.target)
    elif cfg is None:
        raise ValueError("give an AdaptConfig or resume=RUN_ID")
    else:
        cfg = checked_again(cfg)  # a notebook may have set a field since the config was built
        experts = read_experts(cfg.experts, cfg.target)
    strategies, units = plan(cfg, experts)
    if resume is None:
        check_plan(cfg, strategies, experts)
    tasks = test_tasks(cfg, experts)
    with torch_threads(cfg.threads):
        from workbench.experts.model import SVFModel
        from workbench.lm.models import load_model

        net, tok = load_model(cfg.model, device=cfg.device)
        svf = SVFModel(net, tok)
        if resume is not None:  # the run's model (by its weights) before its experts are fitted to it
            from workbench.lm.models import check_resumed_model

            check_resumed_model(run, moved, svf.key)
            if run.info.get("status") == "done":  # its model's new place recorded: it goes no further
                return run
        check_experts_fit(svf, experts)
        if resume is None:
            run = store.create(KIND, cfg.target or "mixed", "+".join(experts.tasks), cfg.to_dict(), cfg.seed,
                               metric=METRIC, command=command, setup=lambda folder: _copy_inputs(folder, experts))
        else:
            record_resume(run, command, state)
        with setting_up(run, new=resume is None):
            run.update(model_key=svf.key, device=str(svf.device), strategies=strategies, test_tasks=tasks)
            if state is None:
                state = {"iteration": 0, "metrics": [], "results": {}, "dispatch": {}, "few_shot": {}, "cem": None}
            scorer = Scorer(svf, experts, tasks, cfg.n, cfg.test_seed, prompt_format=cfg.prompt_format)
            step = _stepper(cfg, state, units, scorer)
            if on_start is not None:  # set up: the loop starts (a progress bar, a page showing the run)
                on_start(run)
        return checkpointed_loop(run, state, len(units), step,
                                 lambda: finish(run, cfg, state, tasks, experts, svf.names),
                                 should_stop=should_stop, on_iteration=on_iteration)


def _alpha_shape(cfg: AdaptConfig, n_experts: int, n_matrices: int) -> tuple[int, int]:
    return (n_experts, 1 if cfg.alpha == "expert" else n_matrices)


def _stepper(cfg: AdaptConfig, state: dict, units: list[str], scorer: Scorer) -> Callable[[int], dict]:
    from workbench.experts.cem import CEM
    from workbench.experts.mixing import DegenerateMixtureError, uniform_alpha
    from workbench.experts.train import format_examples, score_shots
    from workbench.lm.tasks import get_task

    svf, experts = scorer.svf, scorer.experts
    mixed = list(experts.task_experts.values())
    shape = _alpha_shape(cfg, len(mixed), len(svf.names))
    results, dispatch, few = state["results"], state["dispatch"], state["few_shot"]

    def best_mean() -> float:
        full = [float(np.mean([r[t] for t in scorer.tasks])) for r in results.values() if set(scorer.tasks) <= set(r)]
        return max(full) if full else 0.0

    def apply_alpha(x: np.ndarray) -> bool:
        try:
            svf.apply_mixture(mixed, x.reshape(shape), normalize=cfg.normalize, variant=cfg.variant)
            return True
        except DegenerateMixtureError:
            return False

    def step(it: int) -> dict:
        unit = units[it]
        row = {"unit": unit, "mean_accuracy": math.nan, "shots_accuracy": math.nan}
        if unit == "base":
            results["base"] = scorer.tasks_accuracy(None)
        elif unit.startswith("expert:"):
            task = unit.split(":", 1)[1]
            results[unit] = scorer.tasks_accuracy(experts.task_experts[task])
        elif unit in ("prompt", "classifier"):
            dispatcher = None if unit == "prompt" else experts.classifier
            fmt = "char" if scorer.char or unit == "classifier" else "instruction"
            results[unit], dispatch[unit] = scorer.dispatch(dispatcher, fmt)
        else:  # few-shot:<k>:<generation>
            _, k, g = unit.split(":")
            k, g = int(k), int(g)
            if g == 0:
                state["cem"] = CEM(uniform_alpha(*shape).ravel(), 0.5, pop=cfg.pop, seed=cfg.seed * 1000 + k)
            cem = state["cem"]
            shots = format_examples(scorer.tok, cfg.target, draw_shots(cfg.target, k, cfg.seed), cfg.prompt_format)
            budget = get_task(cfg.target).max_new_tokens
            xs = cem.ask()
            perf, tie = np.zeros(len(xs)), np.zeros(len(xs))
            for i, x in enumerate(xs):
                if apply_alpha(x):  # a degenerate mixture scores as a failure
                    perf[i], tie[i] = score_shots(svf, scorer.tok, shots, budget,
                                                   count_stop=cfg.stop_token == "count")
            best = cem.tell(xs, perf, tie_break=tie)
            row["shots_accuracy"] = float(cem.best_perf)
            if g == cfg.cem_iters - 1:
                name = f"few-shot:{k}"
                if apply_alpha(best):
                    results[name] = {cfg.target: float(np.mean(scorer.correct(scorer.test[cfg.target], cfg.target)))}
                else:
                    results[name] = {cfg.target: scorer.tasks_accuracy(None)[cfg.target]}
                few[str(k)] = {"alpha": best.reshape(shape).tolist(), "shots_accuracy": float(cem.best_perf),
                               "test_accuracy": results[name][cfg.target], "generations": cfg.cem_iters}
                state["cem"] = None
                row["unit"] = name
        key = row["unit"] if row["unit"] in results else None
        if key is not None:
            row["mean_accuracy"] = float(np.mean(list(results[key].values())))
        row["best_loss"] = -best_mean()
        svf.reset()
        return row

    return step


def finish(run: Run, cfg: AdaptConfig, state: dict, tasks: list[str], experts: Experts,
           matrices: list[str]) -> None:
    """The oracle from the single-expert scores, then scores.json and scores.parquet. `matrices`: the adapted
    matrices in the model's order, the order of a few-shot α's columns (an expert file's is alphabetical)."""
    results = dict(state["results"])
    if any(k.startswith("expert:") for k in results):
        base = results.get("base", {})
        results["oracle"] = {t: results[f"expert:{t}"][t] if f"expert:{t}" in results else base[t]
                             for t in tasks if f"expert:{t}" in results or t in base}
    order = [s for s in ("base", *[f"expert:{t}" for t in experts.task_experts], "oracle", "prompt", "classifier",
                         *[f"few-shot:{k}" for k in cfg.shots]) if s in results]
    strategies = {s: results[s] for s in order}
    means = {s: float(np.mean(list(r.values()))) for s, r in strategies.items() if set(tasks) <= set(r)}
    out = {"tasks": tasks, "n": cfg.n, "test_seed": cfg.test_seed, "seed": cfg.seed, "target": cfg.target,
           "variant": cfg.variant, "alpha_per": cfg.alpha, "strategies": strategies, "mean": means,
           "dispatch": state["dispatch"], "few_shot": state["few_shot"], "matrices": list(matrices),
           # the files as given (a resume reads the run's copies of them: their paths made a resumed run's scores
           # differ from an uninterrupted one's)
           "experts": [{"file": source, "task": t} for source, t in zip(_sources(run, experts), experts.tasks,
                                                                         strict=True)]}
    write_json(run.path / "scores.json", out)
    run.write_table("scores", [{"strategy": s, "task": t, "accuracy": float(a), "n": cfg.n, "seed": cfg.seed}
                               for s, r in strategies.items() for t, a in r.items()])
    # the means over the whole mixed test set (strategies that answered all of it), and every strategy's score on
    # the target apart: a few-shot mixture answers the target alone, and its score beside the others' means
    # (over easier tasks too) read as a gain it was not
    on_target = {s: float(r[cfg.target]) for s, r in strategies.items() if cfg.target in r}
    run.update(status="done", test_scores={"mean": means, **({"on_target": on_target} if cfg.target else {})})


#: adapt() as workbench.experts exports it (there `adapt` is this module), beside train_expert and run_cycleqd
run_adapt = adapt
