"""Expert training runs in the run store (`workbench experts train`, run kind "experts"): REINFORCE on the SVF
parameters only (or on peft LoRA weights of the same matrices, for the paper's comparison), checkpointed every
step, resumable bit for bit, the best-validation expert kept.

    cfg = ExpertRunConfig(model="data/zoo/generalist", task="sort", iters=200, seed=0)
    run = train_expert(cfg, RunStore("runs"))          # or train_expert(None, store, resume="<run-id>")

Each iteration is one ExpertTrainer step (greedy rollouts through the evaluation harness, reward ±1 by exact
match, one clipped Adam step); after step 1, 1 + val_every, … and the last one the expert is scored on the
validation set (drawn from the training half of the prompt space) and kept when it is the best so far. The
held-out test set is touched once, at the end, for the base and the best expert.

Run folder (kind "experts"):

    run.json              config, model key (SHA-256 of the MLP matrices), trainable parameter count, status
    metrics.parquet       per step: reward, loss, KL(π_ref‖π_θ) (logged even at λ = 0), training accuracy,
                          validation accuracy (on validation steps), best validation accuracy, z or LoRA stats
    checkpoint.json+.npz  the trainer (expert, Adam, generator, best checkpoint): JSON + arrays, no pickle
    expert.safetensors    the best SVF expert (save_expert: raw p per matrix + metadata, model key included)
    lora/                 the best LoRA expert as a peft adapter folder (adapter "lora")
    scores.json           test accuracy (held-out prompts) of the base and the best expert on the task, the gain

The metric is the best validation accuracy (higher is better; run.json's best_loss is its negative). Torch
runs with `threads` threads (default 1): floats, hence runs, depend on the thread count, so a resume uses the
run's own.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.checks import (
    absolute_paths,
    check_counts,
    check_positive,
    check_seed,
    check_weight,
    checked_again,
    paths_as_text,
    user_path,
)
from workbench.runs import (
    Run,
    RunError,
    RunStore,
    a_kind_run,
    as_run_did,
    check_resume,
    checkpointed_loop,
    record_resume,
    releases_claims,
    setting_up,
    write_json,
)
from workbench.threads import torch_threads

if TYPE_CHECKING:
    from workbench.experts.train import TrainConfig

KIND = "experts"
#: why a run's --iters cannot change on a resume (runs.check_resume's fixed): its last step is validated, and the
# kept expert may be that step's; a run started with more iterations would not have validated it
FIXED = ("iters", "its last step is validated and may be the expert it keeps: a run of another total validates "
                  "another step")
METRIC = "val_accuracy"
ADAPTERS = ("svf", "lora")
EXPERT_FILE = "expert.safetensors"
LORA_DIR = "lora"
#: ExpertRunConfig fields and the `workbench experts train` flags that set them (errors, resume conflicts).
FLAGS = {"model": "--model", "task": "--task", "adapter": "--adapter", "rank": "--rank", "iters": "--iters",
         "batch": "--batch", "seed": "--seed", "lr": "--lr", "kl_coeff": "--kl-coeff", "val_every": "--val-every",
         "val_n": "--val-n", "n_test": "--n-test", "threads": "--threads", "prompt_format": "--prompt-format",
         "stop_token": "--stop-token"}
#: Settings newer than some runs (workbench.runs.resume_conflicts): name → (default, what runs made before did).
#: stop_token (2026-12-01): runs made before counted the eos in log π.
PREDATES = {"stop_token": ("drop", "count")}


@dataclass
class ExpertRunConfig:
    """The settings of a stored expert training run (all recorded in run.json). `workbench experts train` sets
    every field but micro_batch and rollout_batch with the flag of its name in dashes (--kl-coeff, --val-every, …).

    Args:
        model: 'smollm2', a .gguf file or a model folder (a zoo's base: data/zoo/base).
        task: one of the zoo's tasks, "classify" (the dispatcher expert) or "larger" (chat models, prompt_format
            "chat").
        adapter: "svf" (Transformer², the default) or "lora" (peft LoRA on the same MLP matrices).
        rank: the LoRA rank (adapter "lora"). iters: REINFORCE steps. batch: prompts per step.
        seed: the expert's initial p (or LoRA weights) and the training and validation prompt streams.
        lr, kl_coeff: Adam's learning rate (2e-3, the reference's) and λ of the KL term (0).
        val_every: steps between validations. val_n: validation prompts. n_test: held-out test prompts.
        threads: torch threads (part of the reproducibility contract). device: None = the GPU when torch sees one.
        micro_batch, rollout_batch: rows per differentiable forward (memory, not the loss) and prompts per greedy
            decoding batch (TrainConfig's; no flags).
        prompt_format: "plain" (the zoo's prompts) or "chat" (the chat template around an instruction: SmolLM2).
        stop_token: "drop" (the reference's log π: the answer's tokens, the eos left out) or "count" (the eos the
            model emitted counts too: stopping gets credit; runs made before 2026-12-01 did this).
    """

    model: str
    task: str
    adapter: str = "svf"
    rank: int = 4
    iters: int = 100
    batch: int = 16
    seed: int = 0
    lr: float = 2e-3
    kl_coeff: float = 0.0
    val_every: int = 10
    val_n: int = 64
    n_test: int = 128
    threads: int = 1
    micro_batch: int = 16
    rollout_batch: int = 64
    prompt_format: str = "plain"
    stop_token: str = "drop"
    device: str | None = None

    def __post_init__(self):
        from workbench.lm.models import SMOLLM2

        paths_as_text(self, "model")
        absolute_paths(self, "model", keep=(SMOLLM2,))  # found from any folder on resume
        check_seed(self.seed)
        from workbench.experts.train import check_chat_tasks, check_expert_task, check_prompt_format, check_stop_token

        check_expert_task(self.task)
        check_stop_token(self.stop_token)
        check_prompt_format(self.prompt_format)
        check_chat_tasks([self.task], self.prompt_format)
        if self.adapter not in ADAPTERS:
            raise ValueError(f"--adapter must be one of {', '.join(ADAPTERS)}, got {self.adapter!r}")
        check_counts(self, ("rank", "iters", "batch", "val_every", "val_n", "n_test", "threads", "micro_batch",
                            "rollout_batch"), FLAGS)
        self.lr = check_positive(self.lr, FLAGS["lr"], " (Adam's learning rate)")
        self.kl_coeff = check_weight(self.kl_coeff, FLAGS["kl_coeff"])
        if self.device is not None:
            self.device = str(self.device)

    def to_dict(self) -> dict:
        """The config as a plain dict (asdict), as run.json stores it."""
        return asdict(self)

    def train_config(self) -> TrainConfig:
        """The TrainConfig of the run's training steps (lr, KL coefficient, batches, validation, prompt format)."""
        from workbench.experts.train import TrainConfig

        return TrainConfig(lr=self.lr, kl_coeff=self.kl_coeff, batch_size=self.batch, micro_batch=self.micro_batch,
                           rollout_batch=self.rollout_batch, val_n=self.val_n, log_kl=True,
                           prompt_format=self.prompt_format, stop_token=self.stop_token)


def read_config(config: dict) -> ExpertRunConfig:
    """A stored run's config, settings newer than the run (PREDATES) as the run did them."""
    return ExpertRunConfig(**as_run_did(config, PREDATES))


def check_model(model: str, prompt_format: str = "plain") -> None:
    """Refuse, without loading it, a --model that is no model, has no MLP matrices to adapt (model folders:
    read from the safetensors headers; 'smollm2' and .gguf files are checked when they load), or has no chat
    template for --prompt-format chat (a folder's tokenizer files; SmolLM2 has one)."""
    from workbench.lm.models import SMOLLM2

    path = user_path(model)
    if model == SMOLLM2 or (path.is_file() and path.suffix == ".gguf"):
        return
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else []
    if not path.is_dir() or not (path / "config.json").is_file() or not files:
        raise ValueError(f"--model {model}: not a model; give '{SMOLLM2}', a .gguf file or a Hugging Face model folder "
                         "such as data/zoo/base (build the zoo with `workbench zoo build`)")
    from safetensors import safe_open

    try:
        shapes = {}
        for file in files:
            with safe_open(file, framework="pt") as f:
                shapes.update({k: f.get_slice(k).get_shape() for k in f.keys()})
    except Exception as error:  # a damaged header: load_model says the same with its own fix
        raise ValueError(f"--model {model}: cannot read {file} ({error}); rebuild the model") from None
    if not any("mlp" in k and len(s) == 2 and not k.endswith("bias") for k, s in shapes.items()):
        raise ValueError(f"--model {model} has no 2-D MLP weight matrices (no tensor name contains 'mlp'), so SVF "
                         "has nothing to adapt; give a transformer causal LM such as data/zoo/base or smollm2")
    if prompt_format == "chat" and not _has_chat_template(path):
        raise ValueError(f"--prompt-format chat needs a tokenizer with a chat template, and --model {model} has none "
                         "(the zoo's character models read plain prompts: leave --prompt-format out; SmolLM2-Instruct "
                         "has one: --model smollm2)")


def _has_chat_template(folder: Path) -> bool:
    """Whether a model folder's tokenizer carries a chat template (in tokenizer_config.json or a file of its own),
    read without loading the tokenizer."""
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    try:
        return bool(json.loads((folder / "tokenizer_config.json").read_text()).get("chat_template"))
    except (OSError, ValueError, AttributeError):
        return False


def load_adapter_model(model: str, adapter: str = "svf", *, rank: int = 4, device=None):
    """An SVFModel or a LoRAModel around load_model(model) (errors: an unknown model, a model without MLP
    matrices, ...)."""
    from workbench.lm.models import load_model

    net, tok = load_model(model, device=device)
    if adapter == "lora":
        from workbench.experts.lora import LoRAModel

        return LoRAModel(net, tok, rank=rank)
    from workbench.experts.model import SVFModel

    return SVFModel(net, tok)


@releases_claims
def train_expert(cfg: ExpertRunConfig | None, store: RunStore | str | Path, resume: str | None = None, *,
                 on_iteration: Callable[[int, int, dict], None] | None = None,
                 should_stop: Callable[[], bool] | None = None, on_start: Callable[[Run], None] | None = None,
                 given: dict | None = None, command: str | None = None, model: str | None = None) -> Run:
    """Train (or resume) an expert to cfg.iters steps; returns the run (module doc).

    resume: a run id (or unique prefix); cfg may then be None. given: settings the caller was given on a resume
    (config field -> value), refused when they contradict the run's. command: the command line, kept in run.json.
    model: with resume, where the run's model is now (a moved folder; the CLI's --model), checked by its weights
    and recorded (workbench.lm.models.check_run_model). Every refusal (unknown model, model without MLP matrices,
    bad settings, a run of another kind) comes before a run folder is created or a checkpoint is touched.
    Callbacks (progress bars, pages): on_start(run) once the run exists, before its first iteration;
    on_iteration(done, total, metrics row) after each stored iteration (a workbench.Progress draws it);
    should_stop() between iterations: True stops the run where it can be resumed."""
    store = RunStore.of(store)
    from workbench.experts.train import ExpertTrainer

    state = None
    if resume is not None:
        run = store.open(resume)
        check_resume(run, KIND, given or {}, names=FLAGS, predates=PREDATES, fixed=FIXED)
        from workbench.lm.models import reopen_with_model

        run, cfg, state, moved = reopen_with_model(store, run, KIND, "experts train", model, read_config)
        if run.info.get("status") == "done" and moved is None:
            return run
        if state is not None and "trainer" not in state and run.info.get("status") != "done":
            raise RunError(f"the checkpoint of run {run.id!r} holds no expert trainer; start a new run instead")
    elif cfg is None:
        raise ValueError("give an ExpertRunConfig or resume=RUN_ID")
    else:
        cfg = checked_again(cfg)  # a notebook may have set a field since the config was built
    with torch_threads(cfg.threads):
        model = load_adapter_model(cfg.model, cfg.adapter, rank=cfg.rank, device=cfg.device)
        if resume is not None:
            from workbench.lm.models import check_resumed_model

            check_resumed_model(run, moved, model.key)
            if run.info.get("status") == "done":  # its model's new place recorded: it goes no further
                return run
        if state is None:
            trainer = ExpertTrainer(model, cfg.task, cfg.seed, config=cfg.train_config())
            state = {"iteration": 0, "metrics": [], "trainer": None}
        else:
            trainer = ExpertTrainer.from_state(state["trainer"], model)
        if resume is None:
            # a LoRA expert's id says so (an SVF and a LoRA expert of one task and seed differed by their time only)
            run = store.create(KIND, cfg.task, cfg.adapter, cfg.to_dict(), cfg.seed, metric=METRIC, command=command,
                               name=cfg.task if cfg.adapter == "svf" else f"{cfg.task}-{cfg.adapter}")
        else:
            record_resume(run, command, state)
        with setting_up(run, new=resume is None):
            run.update(model_key=model.key, n_params=model.n_params, device=str(model.device))
            if on_start is not None:
                on_start(run)

        def step(it: int) -> dict:
            stats = trainer.step()
            row = {"reward": stats["reward_mean"], "loss": stats["loss"], "kl": stats["kl_mean"],
                   "train_accuracy": stats["accuracy"], "grad_norm": stats["grad_norm"],
                   "gen_tokens": stats["gen_tokens"], **{k: v for k, v in stats.items()
                                                         if k in ("z_mean", "z_std", "delta_norm")},
                   "val_accuracy": math.nan}
            if it % cfg.val_every == 0 or it == cfg.iters - 1:
                row["val_accuracy"] = trainer.validate()["val_accuracy"]
            row.update(best_val_accuracy=trainer.best_val, best_step=trainer.best_step,
                       best_loss=-trainer.best_val)
            state["trainer"] = trainer.state_dict()
            return row

        return checkpointed_loop(run, state, cfg.iters, step, lambda: finish(run, cfg, model, trainer),
                                 should_stop=should_stop, on_iteration=on_iteration)


def expert_meta(run: Run, cfg: ExpertRunConfig, model, trainer) -> dict:
    """What an expert file says about itself: task, model and its key, adapter, seed, best validation."""
    return {"task": cfg.task, "model": cfg.model, "model_key": model.key, "adapter": cfg.adapter, "seed": cfg.seed,
            "run": run.id, "best_val_accuracy": trainer.best_val, "best_step": trainer.best_step,
            "n_params": model.n_params, "iters": cfg.iters}


def finish(run: Run, cfg: ExpertRunConfig, model, trainer) -> None:
    """The best expert to a file; base and expert on the held-out test prompts, the expert's gain over the base
    and whether it beats it (scores.json)."""
    from workbench.experts.model import save_expert
    from workbench.experts.train import rollout
    from workbench.lm.tasks import get_task, heldout

    best = trainer.best_params
    meta = expert_meta(run, cfg, model, trainer)
    if cfg.adapter == "svf":
        save_expert(run.path / EXPERT_FILE, best, meta)
    else:
        model.save(run.path / LORA_DIR, best, meta)
    test = trainer.formatted(heldout(cfg.task, cfg.n_test, 0))
    budget = get_task(cfg.task).max_new_tokens
    scores = {}
    for name, params in (("base", None), ("expert", best)):
        model.apply(params)
        scores[name] = rollout(model.model, model.tokenizer, test, budget, cfg.rollout_batch).accuracy
    model.reset()
    out = {"task": cfg.task, "adapter": cfg.adapter, "split": f"test (held-out seed 0, n {cfg.n_test})",
           "n_params": model.n_params, "model_key": model.key, "best_step": trainer.best_step,
           "best_val_accuracy": trainer.best_val, **scores,
           # said outright: at the spec's lr and clip a short run often leaves the expert at the base's accuracy
           "gain": scores["expert"] - scores["base"], "beats_base": scores["expert"] > scores["base"]}
    write_json(run.path / "scores.json", out)
    run.update(status="done", test_scores=scores)


def expert_file(run: Run) -> Path:
    """The SVF expert file of a finished experts run (one clear error for anything else)."""
    info = run.info
    if info.get("kind") != KIND:
        raise RunError(f"run {run.id} is {a_kind_run(info.get('kind'))}, not an experts run: give an expert file or "
                       "the id of a `workbench experts train` run")
    if info["config"].get("adapter") != "svf":
        raise RunError(f"run {run.id} trained a {info['config'].get('adapter')} expert; adaptation mixes SVF experts: "
                       "give runs of `workbench experts train --adapter svf`")
    path = run.path / EXPERT_FILE
    if not path.is_file():
        raise RunError(f"run {run.id} has no {EXPERT_FILE} yet (status {run.status}): finish it first with "
                       f"workbench experts train --resume {run.id}")
    return path
