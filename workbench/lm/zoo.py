"""The model zoo: one tiny Llama BASE and one fine-tuned EXPERT per task, built on the CPU in minutes.

Recipe (why each piece):
- The base is pre-trained on every task's FORMAT with random answers of the right shape, plus real auxiliary
  tasks (copy, value->key lookup, subtraction): it learns the vocabulary, the prompt/answer/eos structure and
  the machinery (copying, lookup, digit arithmetic) but none of the evaluated mappings, so it scores near zero
  while giving the experts a shared starting point they only need to redirect.
- Each expert starts from the base and fine-tunes with a small learning rate on its task, replaying the
  base's own pre-training mixture for the other tasks: the task vector τ = θ_expert − θ_base then changes
  the model's behaviour on its own task only, which is what makes task-vector merges of experts work.
  Budgets (steps, lr) are per task (ZooConfig.expert_budget, recorded in zoo.json): as small as still gives
  a good expert, since short, gentle fine-tunes keep the experts in one basin where their τs add up.
- Fixed seeds, numpy data streams and a fixed thread count make the build bit-reproducible.

Device: training and the build's evaluation run on ZooConfig.device (default: workbench.kernels.device's
choice, the GPU when torch sees one). Weights are initialised on the CPU and data is drawn on the CPU, but a
GPU sums floats in another order, so a zoo trained on a GPU has different weights (and slightly different
accuracies) than one trained on the CPU; the same seed gives the same zoo on the same device (on CUDA the
build turns on torch's deterministic algorithms). zoo.json records the device it was built on.

Layout: out/zoo.json, out/base, out/<task> (standard HF folders: config.json, model.safetensors, tokenizer).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from workbench.atomic import replace_dir, staging_dir
from workbench.checks import check_writable, file_above, shell_path, user_path
from workbench.kernels.device import describe, resolve_device
from workbench.lm.hf import transformers_imported
from workbench.lm.tasks import AUX_TASKS, TASKS, draw, get_task, make_tokenizer, stream

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

ZOO_FILE = "zoo.json"
# Expert budgets that differ from the default (expert_steps, expert_lr), measured on the default build:
# digit-carry addition is far from anything the base knows and only clicks after several hundred steps at a
# large lr (600 at 3e-3 still fails, 600 at 5e-3 reaches 1.0); brackets needs 600 steps for ~0.9; reverse a
# few more than the default; sort and recall (a fixed code) are learnt in fewer.
EXPERT_BUDGET: dict[str, tuple[int, float]] = {"add": (600, 5e-3), "reverse": (350, 1e-3), "sort": (200, 1e-3),
                                               "recall": (150, 1e-3), "brackets": (600, 1e-3)}


@dataclass
class ZooConfig:
    """How `build_zoo` builds the model zoo: a small Llama base pre-trained on the tasks' formats (answers
    random), then one expert per task fine-tuned from it (the merge methods' inputs). Sizes, steps, learning
    rates, the seed, threads and device; every build with the same config on the same device is the same.
    `workbench zoo build` sets tasks (`--tasks`), seed (`--seed`) and device (`--device`); `--quick` builds
    ZooConfig.quick(); the other fields have no flags. zoo.json records them all (under "config").

    Attributes:
        tasks: the tasks of the experts, one expert each, named after it (one or more distinct workbench.lm.tasks
            TASKS; default: all of them). The base's pre-training mixture shows them with random answers.
        hidden, layers, heads, intermediate: the Llama's hidden size, decoder layers, attention heads (as many
            KV heads) and MLP size (defaults 128, 2, 4, 256); hidden must be a multiple of heads.
        base_steps, base_lr: the base's pre-training steps (700) and AdamW's peak learning rate (3e-3; a linear
            warm-up over the first 5 % of the steps times a cosine decay to 0 over all of them).
        expert_steps, expert_lr: each expert's fine-tuning steps (250) and peak learning rate (1e-3), for the
            tasks `expert_budget` leaves out.
        expert_budget: task → (steps, lr) of its expert, replacing (expert_steps, expert_lr) (default:
            EXPERT_BUDGET, measured on the default build; zoo.json records each task's budget as built).
        replay: the fraction of each expert batch drawn from the base's pre-training mixture (the auxiliary
            tasks, the other tasks with random answers), in [0, 1) (default 0.25: round(replay·batch) examples).
        batch: training examples per step, of the base and of every expert (default 64).
        seed: the weights' initialisation and every training data stream (default 0).
        threads: torch threads during the build (default 1): part of the reproducibility contract, as CPU
            reductions may differ across thread counts; the multi-task baseline reuses it.
        eval_n: held-out prompts per task (stream 0) that score the base and the experts into zoo.json's
            "accuracy" (default 128).
        device: "cpu", "cuda" or "cuda:N" the build trains on; None: the GPU when torch sees one. A GPU build
            has other weights than a CPU one.
        quick_build: set by ZooConfig.quick (`--quick`): a seconds-long smoke-test zoo with weak experts,
            recorded so that its users are warned.
    """

    tasks: tuple[str, ...] = tuple(TASKS)
    hidden: int = 128
    layers: int = 2  # 4 layers learn no better in the 3-minute budget: 2 layers buy twice the steps
    heads: int = 4
    intermediate: int = 256
    base_steps: int = 700
    base_lr: float = 3e-3
    expert_steps: int = 250
    expert_lr: float = 1e-3
    # per-task (steps, lr) overrides of (expert_steps, expert_lr): tasks differ in how far the base is from them
    expert_budget: dict[str, tuple[int, float]] = field(default_factory=lambda: dict(EXPERT_BUDGET))
    replay: float = 0.25  # fraction of each expert batch drawn from the base's pre-training mixture
    batch: int = 64
    seed: int = 0
    threads: int = 1  # part of the reproducibility contract: CPU reductions may differ across thread counts
    eval_n: int = 128
    device: str | None = None  # "cpu", "cuda", "cuda:N"; None: the GPU when torch sees one (a string: pickles)
    quick_build: bool = False  # a seconds-long smoke-test build (weak experts): recorded so users are warned

    def __post_init__(self):
        from workbench.checks import check_counts, check_positive, check_seed, count, texts
        from workbench.lm.tasks import check_tasks

        self.tasks = tuple(check_tasks(texts(self.tasks, "--tasks")))
        if not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"--tasks: give one or more distinct tasks for the experts, got {list(self.tasks)}")
        check_seed(self.seed)
        check_counts(self, ("hidden", "layers", "heads", "intermediate", "base_steps", "expert_steps", "batch",
                            "threads", "eval_n"), {})  # zoo build has flags for none of them
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads})")
        self.base_lr = check_positive(self.base_lr, "base_lr")
        self.expert_lr = check_positive(self.expert_lr, "expert_lr")
        budgets = {}
        for task, budget in dict(self.expert_budget).items():  # checked as expert_steps and expert_lr are: 0 steps
            try:  # divided by zero in the learning-rate schedule, minutes into a build
                steps, lr = budget
            except (TypeError, ValueError):
                raise ValueError(f"expert_budget[{task!r}] must be (steps, lr), got {budget!r}") from None
            budgets[task] = (count(steps, f"expert_budget[{task!r}] steps"),
                             check_positive(lr, f"expert_budget[{task!r}] lr"))
        self.expert_budget = budgets
        if not (isinstance(self.replay, (int, float)) and 0 <= self.replay < 1):
            raise ValueError(f"replay is the fraction of each expert batch drawn from the base's mixture: give a "
                             f"number in [0, 1), got {self.replay!r}")
        if self.device is not None:
            self.device = str(self.device)  # a torch.device given here is kept as its name

    @classmethod
    def quick(cls, **kw: Any) -> ZooConfig:
        """A seconds-long build for tests and smoke runs (weak experts)."""
        small = dict(hidden=32, layers=2, heads=2, intermediate=64, base_steps=20, expert_steps=10, eval_n=16,
                     expert_budget={}, quick_build=True)
        return cls(**{**small, **kw})

    def budget(self, task: str) -> tuple[int, float]:
        """(steps, lr) of the expert for `task`."""
        steps, lr = self.expert_budget.get(task, (self.expert_steps, self.expert_lr))
        return int(steps), float(lr)


@dataclass
class Zoo:
    """A built zoo: names ('base' first, then the experts), their folders, the tasks and the build record."""

    path: Path
    info: dict
    names: list[str] = field(default_factory=list)

    @property
    def tasks(self) -> list[str]:
        """The zoo's tasks, as zoo.json lists them."""
        return list(self.info["tasks"])

    @property
    def quick(self) -> bool:
        """A smoke-test zoo (`zoo build --quick`): its experts are too weak for meaningful merges."""
        return bool(self.info.get("config", {}).get("quick_build", False))

    def quick_warning(self, what: str = "merges of it", flag: str = "--zoo data/zoo") -> str | None:
        """The note to show before using a quick zoo for real work (None for a real zoo): `what` means nothing,
        and the real zoo is given with `flag`."""
        if not self.quick:
            return None
        return (f"{self.path} is a quick smoke-test zoo (weak experts, accuracies near 0): {what} mean "
                f"nothing; build a real one with `workbench zoo build` (into data/zoo, a few minutes) and give it "
                f"with {flag}")

    @property
    def paths(self) -> dict[str, Path]:
        """Each model's folder by name ('base' first, then the experts)."""
        return {name: self.path / name for name in self.names}

    def state_dict(self, name: str) -> dict[str, torch.Tensor]:
        """The weights as stored: CPU tensors (merges take a device of their own)."""
        from safetensors.torch import load_file

        return load_file(self.paths[self._check(name)] / "model.safetensors")

    def model(self, name: str, device: str | torch.device | None = None) -> PreTrainedModel:
        """The model in eval mode on `device` (default: resolve_device(None))."""
        transformers_imported()  # the first import of transformers under one lock
        from transformers import AutoModelForCausalLM

        from workbench.lm.models import quiet_progress

        dev = resolve_device(device)
        with quiet_progress():
            model = AutoModelForCausalLM.from_pretrained(self.paths[self._check(name)], dtype=torch.float32)
        return model.to(dev).eval()

    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The base model's tokenizer (AutoTokenizer, as saved in its folder: the zoo's character-level one, with
        its pad token and left padding, as batched generation wants)."""
        transformers_imported()  # the first import of transformers under one lock
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.paths["base"])

    def _check(self, name: str) -> str:
        if name not in self.names:
            raise ValueError(f"zoo {self.path} has no model {name!r}; it has {', '.join(self.names)}")
        return name


def no_zoo(path: str | Path) -> str:
    """The error for a --zoo folder that does not exist, in every command's words."""
    return (f"--zoo {path}: no such folder, so no model in it; build a zoo there with `workbench zoo build --out "
            f"{shell_path(path)}`, or give the folder of yours with --zoo DIR")


def load_zoo(path: str | Path) -> Zoo:
    """The zoo in folder `path` (its zoo.json and one model folder per name). ValueError: not a zoo, or a model
    folder is missing (the message says how to build or rebuild it)."""
    path = Path(path)
    try:
        info = json.loads((path / ZOO_FILE).read_text())
        names = ["base", *info["tasks"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        if path.is_file():  # `zoo build --out FILE` would fail too
            raise ValueError(f"--zoo {path} is a file, not a model zoo: give the zoo's folder (`workbench zoo build "
                             "--out DIR` makes one)") from None
        if not path.exists():
            raise ValueError(no_zoo(path)) from None
        # the reason in words: an OSError's "[Errno 2] No such file or directory: 'z/zoo.json'" said it in Python's
        why = (f"no {ZOO_FILE} in it" if not (path / ZOO_FILE).exists()
               else f"its {ZOO_FILE} is not readable: {getattr(error, 'strerror', None) or error}")
        raise ValueError(f"--zoo {path} is not a model zoo ({why}); "
                         f"build one with `workbench zoo build --out {shell_path(path)}`") from None
    missing = [n for n in names if not (path / n / "model.safetensors").is_file()]
    if missing:
        raise ValueError(f"zoo {path} lacks model folders {missing}; "
                         f"rebuild it with `workbench zoo build --out {shell_path(path)} --replace`")
    return Zoo(path, info, names)


def llama_config(cfg: ZooConfig, vocab_size: int, tok):
    transformers_imported()  # the first import of transformers under one lock
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size, hidden_size=cfg.hidden, num_hidden_layers=cfg.layers,
                       num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads,
                       intermediate_size=cfg.intermediate, max_position_embeddings=64, tie_word_embeddings=False,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                       dtype="float32")


def _random_answer(rng: np.random.Generator, task: str, prompt: str, answer: str) -> str:
    """An answer of the right shape and alphabet but unrelated content: the base learns formats, not tasks."""
    if task in ("reverse", "sort"):
        return "".join(rng.permutation(list(answer)))
    alphabet = {"add": "0123456789", "recall": "0123456789", "brackets": ")]}"}[task]
    return "".join(rng.choice(list(alphabet), size=len(answer)))


def _batch(tok, examples: list[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and labels (loss on the answer and eos only). Causal attention never looks right,
    so the padding needs no attention mask."""
    seqs, labels = [], []
    # one call per batch, not two per example (a zoo build made 334 k of them): the same ids
    prompts = tok([p for p, _ in examples], add_special_tokens=False)["input_ids"]
    answers = tok([a for _, a in examples], add_special_tokens=False)["input_ids"]
    for prompt_ids, answer_ids in zip(prompts, answers, strict=True):
        p = [tok.bos_token_id] + prompt_ids
        a = answer_ids + [tok.eos_token_id]
        seqs.append(p + a)
        labels.append([-100] * len(p) + a)
    width = max(map(len, seqs))
    ids = torch.tensor([s + [tok.pad_token_id] * (width - len(s)) for s in seqs])
    lab = torch.tensor([s + [-100] * (width - len(s)) for s in labels])
    return ids, lab


class _Mixture:
    """Endless training examples: real answers for `real` tasks, random-shaped answers for `fake` tasks."""

    def __init__(self, seed: int, stage: str, real: list[str], fake: list[str]):
        self.tasks = [(t, True) for t in real] + [(t, False) for t in fake]
        self.rngs = {t: stream(seed + 7919 * _stage_id(stage), t, "train") for t, _ in self.tasks}
        self.pick = np.random.default_rng([seed, _stage_id(stage), 99])

    def sample(self, n: int) -> list[tuple[str, str]]:
        counts = np.bincount(self.pick.integers(0, len(self.tasks), size=n), minlength=len(self.tasks))
        out = []
        for (task, real), k in zip(self.tasks, counts, strict=True):
            for prompt, answer in draw(task, int(k), self.rngs[task], "train"):
                out.append((prompt, answer if real else _random_answer(self.rngs[task], task, prompt, answer)))
        return out


def _finetune_sampler(seed: int, stage: str, learnt: list[str], zoo_tasks: list[str], replay: float,
                      batch: int) -> Callable[[int], list[tuple[str, str]]]:
    """A fine-tuning batch of n (an expert's: `learnt` its task; the multi-task baseline's: its tasks): n − k real
    examples of `learnt`, then k = round(replay · batch) replaying the base's pre-training mixture (the auxiliary
    tasks' real answers, the zoo's other tasks' random-shaped ones, never a learnt task's), so that an expert keeps
    what the base learnt. Streams of their own per `stage`: the same seed gives the same batches."""
    mix = _Mixture(seed, stage, real=list(learnt), fake=[])
    again = _Mixture(seed, f"replay-{stage}", real=list(AUX_TASKS), fake=[t for t in zoo_tasks if t not in learnt])
    k = int(round(replay * batch))
    return lambda n: mix.sample(n - k) + again.sample(k)


def _stage_id(stage: str) -> int:
    return sum(ord(c) * 31 ** i for i, c in enumerate(stage)) % 100003  # stable across runs (unlike hash())


def _train(model, tok, sample: Callable[[int], list], steps: int, lr: float, batch: int,
           progress: Callable[[int], None] | None, device: torch.device) -> float:
    """AdamW (no weight decay: τ should hold only what the task taught), linear warm-up then cosine decay."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.98))
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + np.cos(np.pi * min(s, steps) / steps)))
    model.train()
    loss = torch.tensor(0.0)
    for _ in range(steps):
        ids, labels = _batch(tok, sample(batch))
        loss = model(input_ids=ids.to(device), labels=labels.to(device)).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if progress:
            progress(1)
    model.eval()
    return float(loss.detach())


def total_steps(cfg: ZooConfig) -> int:
    """The training steps build_zoo(…, cfg) takes in all (the base's and every expert's): what its progress(k)
    callbacks add up to, the total of a progress bar."""
    return cfg.base_steps + sum(cfg.budget(t)[0] for t in cfg.tasks)


def zoo_fingerprint(path: str | Path) -> str | None:
    """The sha256 of a zoo's zoo.json (its config, budgets, device, accuracies and build times: one build), or
    None for a folder of models without one. Runs record it, so that comparing them tells their zoos apart by
    what they hold, not by the path they were given."""
    from workbench.runs import sha256_file

    try:
        return sha256_file(Path(path) / ZOO_FILE)
    except OSError:
        return None


def run_zoo(run, zoo: str | Path | None = None, resume: str = "qd cycle") -> str:
    """The zoo folder a run built on a zoo reads (a qd or merge run: a resume, an export, its page): `zoo` (a
    resume's --zoo), which must be the run's zoo by content (its zoo.json: a zoo moved, or a relative path given
    from another folder; a run from before runs recorded zoo_sha256: the zoo still at its recorded path, see
    record_zoo), else the path the run recorded, which must still hold that zoo. One error naming --zoo
    (`workbench RESUME --resume ID --zoo DIR`) where it is not there or holds another zoo (a relative path reads
    from the folder you are in: runs before this version recorded it as given)."""
    import os

    from workbench.runs import RunError

    recorded, sha = str(run.info["config"].get("zoo")), run.info.get("zoo_sha256")
    fix = (f"resume it with `{run.resume_cli or f'workbench {resume} --resume {run.id}'} --zoo DIR` (the same zoo, "
           f"checked by its {ZOO_FILE}): the run then records where it is")
    if zoo is not None:
        zoo = os.path.abspath(os.path.expanduser(str(zoo)))
        if sha is None:  # a run from before zoos were fingerprinted: told by the zoo still at its recorded path (gone
            sha = zoo_fingerprint(user_path(recorded))  # too: taken as given, nothing to check it by)
        if not Path(zoo).is_dir() or (sha is not None and zoo_fingerprint(zoo) != sha):
            raise RunError(f"--zoo {zoo} is not run {run.id}'s zoo (its {ZOO_FILE} is not the one the run was built "
                           f"on, {recorded}); give that zoo's folder, or leave --zoo out")
        return zoo
    if sha is None and not (user_path(recorded) / ZOO_FILE).is_file():  # a run that read no zoo.json: its
        return recorded  # models were folders of their own (merge --models PATH …), its zoo no input to check
    if not user_path(recorded).is_dir():
        relative = "" if os.path.isabs(recorded) else \
            " (a relative path, read from the folder you are in: the run was started elsewhere)"
        raise RunError(f"run {run.id}'s zoo {recorded} is not there{relative}; {fix}")
    if sha is not None and zoo_fingerprint(recorded) != sha:  # another zoo under the recorded name
        raise RunError(f"run {run.id}'s zoo {recorded} holds another zoo now (its {ZOO_FILE} is not the one the run "
                       f"was built on); {fix}")
    return recorded


def record_zoo(run, zoo: str) -> None:
    """A resumed run's zoo `zoo` (run_zoo's) recorded where it moved, and its fingerprint where the run has none
    (a run from before zoos were fingerprinted: its later resumes check a zoo given by it, and comparisons group it
    with newer runs of the same zoo)."""
    fields, recorded = {}, str(run.info["config"].get("zoo"))
    if zoo != recorded:
        fields.update(config={**run.info["config"], "zoo": zoo}, **({"zoo": zoo} if "zoo" in run.info else {}))
    # only a zoo checked to be the run's: its own, or one told by the zoo still at its path (run_zoo); one given
    # with nothing to check it by is recorded by path alone (its fingerprint would lock the run onto it)
    checked = zoo == recorded or (user_path(recorded) / ZOO_FILE).is_file()
    sha = zoo_fingerprint(zoo) if run.info.get("zoo_sha256") is None and checked else None
    if sha is not None:
        fields["zoo_sha256"] = sha
    if fields:
        run.update(**fields)


def check_zoo_out(out: str | Path) -> Path:
    """Where a zoo may be built, as an absolute path: a new or empty folder, or an existing zoo (replaced); else
    one clear error, before anything trains (`--out .` failed at the end, its zoo thrown away: the staging folder
    beside it is named after the folder's name, which "." has not got)."""
    given = out
    # "." and ".." as the folders they name, a symlink as the folder it points to (the link itself was replaced,
    # and the zoo it pointed to was left as it was)
    out = Path(os.path.realpath(user_path(out)))
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {given} is a file; choose a new folder for the zoo")
    blocking = file_above(out)
    if blocking is not None:
        raise ValueError(f"--out {given}: {blocking} is a file, so no folder can be made under it; choose another "
                         "--out")
    if out.exists() and not (out / ZOO_FILE).is_file() and any(out.iterdir()):
        raise ValueError(f"{given} exists and is not a zoo; choose another --out or remove it")
    # where the build writes: beside --out (its staging folder), in the nearest folder there is on the way; one
    # nothing can be written in is said with the flag before the bar (it failed inside the build)
    check_writable(out, "--out", "choose another --out", given=str(given))
    return out


def build_zoo(out: str | Path, cfg: ZooConfig, progress: Callable[[int], None] | None = None,
              replace: bool = False) -> Path:
    """Train the base and one expert per task; write the zoo atomically to `out` (a temporary sibling folder
    renamed at the end). An existing zoo at `out` is refused before anything trains unless replace=True (then it
    is replaced, as `workbench zoo build --replace` does); any other existing folder is refused; with
    replace=False a zoo another process wrote there meanwhile is refused at the end, not lost.
    progress(k) is called after every k training steps (total_steps(cfg) in all). Trains on cfg.device (checked
    first, before anything is written); zoo.json records that device, since a GPU build has other weights."""
    transformers_imported()  # the first import of transformers under one lock
    import safetensors
    import tokenizers
    import transformers
    from transformers import LlamaForCausalLM

    from workbench.lm.evaluation import StateDictEvaluator
    from workbench.lm.models import quiet_progress

    if not isinstance(cfg, ZooConfig):  # build_zoo(cfg, out) failed on "'PosixPath' object has no attribute 'device'"
        raise ValueError(f"build_zoo(out, cfg): cfg must be a ZooConfig, got {type(cfg).__name__} (the folder comes "
                         "first: build_zoo('data/zoo', ZooConfig()))")
    device = resolve_device(cfg.device)
    for t in cfg.tasks:
        if get_task(t).name not in TASKS:
            raise ValueError(f"unknown zoo task {t!r}; choose from {', '.join(TASKS)}")
    out = check_zoo_out(out)
    if not replace and (out / ZOO_FILE).is_file():  # minutes of training over it: asked for, not by default
        raise ValueError(f"{out} holds a zoo already; give replace=True to build it again (its models, and what "
                         f"was made inside it such as generalist/, are replaced), or another folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    tmp = staging_dir(out)
    # the seeding below is the build's own: the caller's torch generators come back as they were
    rng = torch.get_rng_state(), torch.cuda.get_rng_state_all() if device.type == "cuda" else None
    try:
        tok = make_tokenizer()
        torch.manual_seed(cfg.seed)
        # initialised on the CPU whatever the device: every device starts from the same weights
        model = LlamaForCausalLM(llama_config(cfg, len(tok), tok)).to(device)
        tasks = list(cfg.tasks)
        aux = list(AUX_TASKS)
        base_mix = _Mixture(cfg.seed, "base", real=aux, fake=tasks)
        with _deterministic(device):
            losses = {"base": _train(model, tok, base_mix.sample, cfg.base_steps, cfg.base_lr, cfg.batch, progress,
                                     device)}
        base = {k: v.clone() for k, v in model.state_dict().items()}
        states = {"base": base}
        for task in tasks:
            model.load_state_dict(base)
            sample = _finetune_sampler(cfg.seed, task, [task], tasks, cfg.replay, cfg.batch)
            steps, lr = cfg.budget(task)
            with _deterministic(device):
                losses[task] = _train(model, tok, sample, steps, lr, cfg.batch, progress, device)
            states[task] = {k: v.clone() for k, v in model.state_dict().items()}
        train_seconds = time.perf_counter() - start
        evaluator = StateDictEvaluator(model, tok, tasks, n=cfg.eval_n, device=device)
        accuracy = {name: evaluator(sd) for name, sd in states.items()}
        with quiet_progress():  # transformers' "Writing model shards" bars, after our own progress
            for name, sd in states.items():
                model.load_state_dict(sd)
                model.save_pretrained(tmp / name)
                tok.save_pretrained(tmp / name)
        info = {"format": "workbench-zoo/1", "tasks": tasks, "models": ["base", *tasks],
                "config": asdict(cfg), "expert_budget": {t: list(cfg.budget(t)) for t in tasks},
                "device": str(device), "device_name": describe(device), "accuracy": accuracy, "final_loss": losses,
                "train_seconds": round(train_seconds, 2), "build_seconds": round(time.perf_counter() - start, 2),
                "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                             "tokenizers": tokenizers.__version__, "safetensors": safetensors.__version__}}
        (tmp / ZOO_FILE).write_text(json.dumps(info, indent=2))
        if not replace and (Path(out) / ZOO_FILE).is_file():  # the training is kept beside it, not thrown away
            kept = replace_dir(tmp, Path(out).with_name(f"{Path(out).name}.built-{os.getpid()}"))
            raise ValueError(f"a zoo was written to {out} while this one was built (another `workbench zoo build`?); "
                             f"this build is kept in {kept}: move it where you want it (a zoo is its folder)")
        replace_dir(tmp, out)  # a zoo is shared data: replace_dir gives it the usual permissions
    finally:
        torch.set_num_threads(threads)
        torch.set_rng_state(rng[0])
        if rng[1] is not None:
            torch.cuda.set_rng_state_all(rng[1])
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def multitask_budget(zoo: Zoo, tasks: list[str]) -> tuple[int, float]:
    """(steps, lr) of multi-task fine-tuning with the compute of the K experts of `tasks`: the sum of their
    steps (same batch), at the largest of their learning rates (a task that needs a large lr learns nothing
    at a small one)."""
    cfg = ZooConfig(**{**zoo.info["config"], "tasks": tuple(zoo.info["config"]["tasks"])})
    budgets = [cfg.budget(t) for t in tasks]
    return sum(s for s, _ in budgets), max(lr for _, lr in budgets)


def finetune_multitask(zoo: Zoo, tasks: list[str], *, steps: int, lr: float, seed: int,
                       device: str | torch.device | None = None,
                       progress: Callable[[int], None] | None = None) -> dict[str, torch.Tensor]:
    """The zoo's base fine-tuned on the MIXED training data of `tasks` (the multi-task baseline of model merging
    and CycleQD): the experts' recipe (AdamW, warm-up + cosine, the zoo's batch and replay of the base's
    pre-training mixture), with every task's real answers in one stream. Deterministic for a seed on a device
    (zoo.json's thread count). Returns CPU tensors."""
    cfg = ZooConfig(**{**zoo.info["config"], "tasks": tuple(zoo.info["config"]["tasks"])})
    device = resolve_device(device)
    tok = zoo.tokenizer()
    model = zoo.model("base", device=device)
    sample = _finetune_sampler(seed, "multitask-" + "+".join(tasks), tasks, cfg.tasks, cfg.replay, cfg.batch)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        with _deterministic(device):
            _train(model, tok, sample, int(steps), float(lr), cfg.batch, progress, device)
    finally:
        torch.set_num_threads(threads)
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


@contextlib.contextmanager
def _deterministic(device: torch.device):
    """On CUDA, torch's deterministic algorithms (and the cuBLAS workspace setting they need), so the same seed
    trains the same zoo on the same GPU; the previous settings come back after. The CPU path is left as it was:
    it is deterministic already."""
    if device.type != "cuda":
        yield
        return
    was = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    env = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    if env is None:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was[0], warn_only=was[1])
        if env is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


