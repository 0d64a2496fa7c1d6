"""Training SVF experts by REINFORCE on the procedural tasks (Transformer² §4), as a small object:

    svf = SVFModel(zoo.model("base"), zoo.tokenizer())
    trainer = ExpertTrainer(svf, "sort", seed=0)             # p = 0.1 + 0.01·N(0, 1), Adam(lr 2e-3)
    for _ in range(100):
        stats = trainer.step()                               # one batch: rollouts, rewards, one Adam step
        if trainer.step_count % 10 == 1:
            trainer.validate()                               # keeps the best-validation expert
    expert = trainer.best_params                             # -> svf.apply(expert), save_expert(...)

One step (the reference's Reinforce.step_optimization + update):
1. greedy rollouts of the batch's prompts with the current expert composed into the model
   (workbench.lm.evaluation.greedy, the evaluation harness's own decoding and prompt format);
2. reward +1 for an exact-match answer, −1 otherwise;
3. loss = (1/B)·Σ_j[−r_j·log π(y_j|x_j) + λ·KL_j] through the differentiable forward W′(z(p)), where y_j are
   the answer's tokens as the reference takes them (`stop_token="drop"`: prompt + the answer's text tokenised
   again, so no eos), or the generated ids with the eos the model emitted (`stop_token="count"`, the form runs
   made before 2026-12-01 trained with: stopping is part of an exact match, so it gets credit);
4. gradient-norm clip (1e-3) and one Adam step (lr 2e-3).

Data (workbench.lm.tasks): training batches and a fixed validation set are drawn from the TRAINING half of
the prompt space (crc32 split) by two seeded streams of their own, and training never draws a validation
prompt; the held-out eval set (`heldout`, the other half) is never touched here, so the checkpoint is not
picked on the test set (the reference's quirk). Report test accuracy with workbench.lm.evaluation on
`best_params`.

Adapters: the trainer drives any object with the SVFModel interface it uses (names, key, device, tokenizer,
model, init_params, apply, reset, forward, summary): SVFModel (the default) or workbench.experts.lora.LoRAModel
(peft LoRA on the same matrices), so both are trained by the same loss on the same data for the same steps.
Rewards: exact match (+1 / −1) unless `reward=` gives another function; rewards that are not finite are one
error before anything changes, and so is a gradient that is not finite (the expert keeps its last values).

`state_dict()` holds plain values and NumPy arrays only (workbench.checkpoint.pack writes it: no pickle):
the expert, Adam's moments and step counts, the batch generator, the best checkpoint and the validation
log; `ExpertTrainer.from_state(state, svf)` continues bit for bit (same device, same thread count).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from workbench.checkpoint import rng_from_state, rng_state
from workbench.experts.model import SVFModel
from workbench.experts.reinforce import kl_ref, mean_token_logprobs, reinforce_loss, sequence_logprobs
from workbench.experts.svf import INIT_NOISE, INIT_VALUE
from workbench.lm.chat_tasks import CHAT_INSTRUCTIONS, LARGER

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

#: A reward function: (examples (prompt, answer), generated texts) -> one finite reward per example.
Reward = Callable[[list[tuple[str, str]], list[str]], Sequence[float]]

STATE_FORMAT = "workbench-expert-trainer/1"


@dataclass
class TrainConfig:
    """REINFORCE settings; the defaults are the reference's except batch_size (256 there: a GPU budget).

    No flags of its own: `workbench experts train` fills it from ExpertRunConfig (ExpertRunConfig.train_config:
    lr `--lr`, kl_coeff `--kl-coeff`, batch_size `--batch`, val_n `--val-n`, prompt_format `--prompt-format`,
    stop_token `--stop-token`; micro_batch and rollout_batch from the fields of those names; log_kl on).

    Attributes:
        lr: Adam's learning rate, > 0 (2e-3, the spec's).
        max_grad_norm: the gradient-norm clip of every step, > 0 (1e-3, the spec's).
        kl_coeff: λ ≥ 0 of the KL(π_ref‖π_θ) term, π_ref the base model (0: no KL term, the spec's default).
        batch_size: prompts per REINFORCE step, B in the loss's (1/B)·Σ (16).
        micro_batch: rows per differentiable forward; gradients accumulate over a batch, so it changes memory,
            not the loss (16).
        rollout_batch: prompts per greedy decoding batch, of the rollouts and of validation (64).
        val_n: the fixed validation set's prompts, drawn from the task's training half (64).
        init_value, init_noise: an SVF expert's start, p = init_value + init_noise·N(0, 1) per singular value
            (0.1 and 0.01, the spec's: z = sigmoid(p) ≈ 0.525); a LoRA adapter ignores them.
        max_new_tokens: the rollouts' token budget; None (or 0): the task's own (its answer and the eos).
        log_kl: also measure KL(π_ref‖π_θ) when kl_coeff = 0 (one more no-grad forward per micro-batch).
        prompt_format: "plain" (the task's prompt as it is, the zoo's format) or "chat" (the tokenizer's chat
            template around an instruction and a few demonstrations, for chat models such as SmolLM2).
        stop_token: which tokens log π sums: "drop" (the answer's, the eos left out: the reference's) or "count"
            (the generated ids, the eos the model emitted included; runs made before 2026-12-01).
    """

    lr: float = 2e-3
    max_grad_norm: float = 1e-3
    kl_coeff: float = 0.0  # λ of the KL(π_ref‖π_θ) term; π_ref = the base model
    batch_size: int = 16
    micro_batch: int = 16  # rows per differentiable forward (gradients accumulate: the same loss, less memory)
    rollout_batch: int = 64  # prompts per greedy decoding batch
    val_n: int = 64  # size of the validation set
    init_value: float = INIT_VALUE
    init_noise: float = INIT_NOISE
    max_new_tokens: int | None = None  # None: the task's own budget (answer + eos)
    log_kl: bool = False  # also measure KL(π_ref‖π_θ) when kl_coeff = 0 (one more no-grad forward per micro-batch)
    prompt_format: str = "plain"  # "chat": the tokenizer's chat template around an instruction (SmolLM2)
    stop_token: str = "drop"  # "drop": log π leaves the eos out (the reference); "count": the eos emitted counts

    def __post_init__(self):
        from workbench.checks import as_number, check_counts, check_positive, check_weight

        check_stop_token(self.stop_token)
        # whole numbers ≥ 1 (a check of int(value) let 1.5 through); max_new_tokens: None or 0 is the task's own
        counts = ("batch_size", "micro_batch", "rollout_batch", "val_n")
        check_counts(self, counts, {n: f"TrainConfig.{n}" for n in counts})
        if self.max_new_tokens is not None:
            check_counts(self, ("max_new_tokens",), {"max_new_tokens": "TrainConfig.max_new_tokens"}, at_least=0)
        if self.prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"TrainConfig.prompt_format must be one of {PROMPT_FORMATS}, got {self.prompt_format!r}")
        # each kept as the float checked: "0.1" failed at `>` (a TypeError) or stayed text, True passed as 1
        self.lr = check_positive(self.lr, "TrainConfig.lr (--lr)")
        self.max_grad_norm = check_positive(self.max_grad_norm, "TrainConfig.max_grad_norm")
        self.kl_coeff = check_weight(self.kl_coeff, "TrainConfig.kl_coeff (--kl-coeff)")
        value, noise = as_number(self.init_value), as_number(self.init_noise)
        if not (math.isfinite(value) and math.isfinite(noise) and noise >= 0):
            raise ValueError(f"TrainConfig.init_value must be a finite number and init_noise a finite number ≥ 0 (an "
                             f"expert's start), got {self.init_value!r} and {self.init_noise!r}")
        self.init_value, self.init_noise = value, noise
        if not isinstance(self.log_kl, bool):  # "no" read as on
            raise ValueError(f"TrainConfig.log_kl is True or False, got {self.log_kl!r}")


STOP_TOKENS = ("drop", "count")


def check_stop_token(stop_token: str) -> None:
    """One error for a stop-token rule other than STOP_TOKENS, naming the CLI flag."""
    if stop_token not in STOP_TOKENS:
        raise ValueError(f"--stop-token must be one of {', '.join(STOP_TOKENS)}, got {stop_token!r}")


# --- prompt formats ------------------------------------------------------------------------------------------

PROMPT_FORMATS = ("plain", "chat")
#: One line per task for chat models (the zoo's models read the plain prompts they were trained on).
INSTRUCTIONS = {
    "add": "Add the two numbers. Answer with exactly three digits and nothing else (07+05= gives 012).",
    "reverse": "Reverse the letters after r: and answer with them only (r:abc= gives cba).",
    "sort": "Sort the letters after s: alphabetically and answer with them only (s:cab= gives abc).",
    "recall": "Each letter stands for a digit of pi (a=3, b=1, c=4, ...); answer with the digits (k:ab= gives 31).",
    "brackets": "Close the brackets left open after b:, innermost first; answer with them only (b:([= gives ]).",
    "classify": "Name the task of this puzzle with one word: add, reverse, sort, recall or brackets.",
}
INSTRUCTIONS.update(CHAT_INSTRUCTIONS)  # the chat-only tasks (workbench.lm.chat_tasks: larger)


CHAT_SHOTS = 3  # demonstrations in the chat format (fixed per task, from its training half)


def format_prompt(tokenizer: PreTrainedTokenizerBase, task: str, prompt: str, prompt_format: str = "plain") -> str:
    """The text a model sees for a task prompt: the prompt itself ("plain", the zoo's format), or for chat models
    ("chat") the tokenizer's chat template around a one-line instruction (system turn), CHAT_SHOTS demonstrations
    (user: prompt, assistant: answer; fixed per task, from the training half) and the prompt, ready for the
    answer. The leading bos is left to the harness, which adds it."""
    if prompt_format == "plain":
        return prompt
    if prompt_format != "chat":
        raise ValueError(f"unknown prompt format {prompt_format!r}; choose from {', '.join(PROMPT_FORMATS)}")
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("--prompt-format chat needs a tokenizer with a chat template (SmolLM2-Instruct has one; the "
                         "zoo's character models read plain prompts)")
    from workbench.lm.tasks import draw

    messages = [{"role": "system", "content": INSTRUCTIONS[task]}]
    for shot, answer in draw(task, CHAT_SHOTS, _stream(0, task, "chat-shots"), "train"):
        messages += [{"role": "user", "content": shot}, {"role": "assistant", "content": answer}]
    messages.append({"role": "user", "content": prompt})
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    bos = tokenizer.bos_token
    return text[len(bos):] if bos and text.startswith(bos) else text


def format_examples(tokenizer, task: str, examples: list[tuple[str, str]], prompt_format: str = "plain"
                    ) -> list[tuple[str, str]]:
    """(format_prompt(prompt), answer) for each example."""
    return [(format_prompt(tokenizer, task, p, prompt_format), a) for p, a in examples]


# --- rollouts ------------------------------------------------------------------------------------------------

@dataclass
class Rollouts:
    """Greedy answers to some prompts: token ids of prompts and answers for log π (see rollout), text, reward."""

    prompts: list[list[int]]
    outputs: list[list[int]]
    texts: list[str]
    correct: list[bool]
    generated: list[int] = field(default_factory=list)  # tokens each row generated, its eos included
    rewards: list[float] = field(init=False)

    def __post_init__(self):
        self.rewards = [1.0 if c else -1.0 for c in self.correct]

    @property
    def accuracy(self) -> float:
        """The fraction answered correctly (exact match); 0.0 for no rollouts."""
        return sum(self.correct) / max(len(self.correct), 1)


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def rollout(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, examples: list[tuple[str, str]],
            max_new_tokens: int, batch_size: int = 64, count_stop: bool = False) -> Rollouts:
    """Greedy answers of `model` (as its weights are now) to (prompt, answer) examples, scored by exact match.

    The token ids kept for log π: by default the reference's, prompt + the answer's TEXT tokenised again, split at
    the prompt's length (the text holds no eos, nor any special token the model emitted; for a subword tokenizer
    the ids may differ from the generated ones, as they do in the reference). count_stop: the generated ids as
    they are, ending with the eos where the model emitted it."""
    from workbench.lm.evaluation import _encode, greedy  # the harness's decoding and prompt format (bos + text)

    eos = tokenizer.eos_token_id
    prompts = [_encode(tokenizer, p) for p, _ in examples]
    outputs: list[list[int]] = []
    for i in range(0, len(prompts), batch_size):
        outputs += greedy(model, prompts[i: i + batch_size], max_new_tokens, pad_id=_pad_id(tokenizer), eos_id=eos)
    texts = [tokenizer.decode(o, skip_special_tokens=True) for o in outputs]
    correct = [t == a for t, (_, a) in zip(texts, examples, strict=True)]
    generated = [len(o) + (len(o) < max_new_tokens) for o in outputs]
    if count_stop:  # greedy drops the eos; a row shorter than the budget stopped by emitting it
        outputs = [o + [eos] if len(o) < max_new_tokens else o for o in outputs]
    else:  # the reference's tokenizer(prompt + output text)[prompt_length:]
        full = [_encode(tokenizer, p + t) for (p, _), t in zip(examples, texts, strict=True)]
        prompts, outputs = [f[: len(q)] for f, q in zip(full, prompts, strict=True)], [
            f[len(q):] for f, q in zip(full, prompts, strict=True)]
    return Rollouts(prompts, outputs, texts, correct, generated)


def teacher_batch(prompts: list[list[int]], outputs: list[list[int]], pad_id: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (B, T) = prompt + output, right-padded; targets (B, T−1): the output tokens where logits[:, :−1]
    predict them, −100 elsewhere). Causal attention never looks right, so the padding needs no mask, and the
    real tokens keep the positions greedy decoding gave them."""
    rows = [p + o for p, o in zip(prompts, outputs, strict=True)]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    targets = torch.full((len(rows), width - 1), -100, dtype=torch.long)
    for i, (p, o) in enumerate(zip(prompts, outputs, strict=True)):
        ids[i, : len(p) + len(o)] = torch.tensor(p + o)
        if o:
            targets[i, len(p) - 1: len(p) - 1 + len(o)] = torch.tensor(o)
    return ids, targets


@torch.no_grad()
def score_shots(svf: SVFModel, tokenizer: PreTrainedTokenizerBase, examples: list[tuple[str, str]], max_new_tokens: int,
                batch_size: int = 64, count_stop: bool = False) -> tuple[float, float]:
    """(exact-match accuracy, tie-break) of the weights now in `svf.model` on few-shot examples: the CEM
    fitness. tie-break = the mean over the correctly answered shots of each answer's mean token
    log-likelihood (0.0 when none is correct), as the reference's use_loglikelihood_for_ties (over the answer's
    text tokenised again, as the reference; count_stop: the generated ids and the eos)."""
    from workbench.lm.evaluation import model_device

    roll = rollout(svf.model, tokenizer, examples, max_new_tokens, batch_size, count_stop)
    right = [i for i, c in enumerate(roll.correct) if c]
    if not right:
        return roll.accuracy, 0.0
    ids, targets = teacher_batch([roll.prompts[i] for i in right], [roll.outputs[i] for i in right],
                                 _pad_id(tokenizer))
    logits = svf.model(input_ids=ids.to(model_device(svf.model))).logits[:, :-1]
    return roll.accuracy, float(mean_token_logprobs(logits, targets).mean())


# --- the trainer ---------------------------------------------------------------------------------------------

def _stream(seed: int, task: str, purpose: str) -> np.random.Generator:
    """A NumPy stream of its own for (seed, task, purpose): batches and validation never share draws."""
    return np.random.default_rng([int(seed), zlib.crc32(task.encode()), zlib.crc32(purpose.encode())])


def check_expert_task(task: str) -> str:
    """A task an expert can be trained on: one of the zoo's TASKS, "classify" (the dispatcher) or "larger" (for
    chat models: workbench.lm.chat_tasks), else one error."""
    from workbench.lm.tasks import CLASSIFY, TASKS

    if task not in (*TASKS, CLASSIFY, LARGER):
        raise ValueError(f"unknown task {task!r}; choose from {', '.join((*TASKS, CLASSIFY, LARGER))}")
    return task


def check_prompt_format(prompt_format: str) -> None:
    """One error for a prompt format other than PROMPT_FORMATS, naming the CLI flag."""
    if prompt_format not in PROMPT_FORMATS:
        raise ValueError(f"--prompt-format must be one of {', '.join(PROMPT_FORMATS)}, got {prompt_format!r}")


def check_chat_tasks(tasks, prompt_format: str) -> None:
    """One error for a chat-only task (workbench.lm.chat_tasks) asked for without the chat prompt format."""
    chat_only = [t for t in tasks if t in CHAT_INSTRUCTIONS]
    if chat_only and prompt_format != "chat":
        raise ValueError(f"{chat_only[0]} is a task for chat models (its prompts hold spaces, which the zoo's "
                         "vocabulary lacks): add --prompt-format chat and a chat --model such as smollm2")


class ExpertTrainer:
    """REINFORCE training of one expert on one task (see the module docstring); the loop is the caller's.

    svf: an SVFModel (or a LoRAModel: the same interface); task: one of TASKS or "classify"; reward: optional
    reward function (default exact match, +1 / −1)."""

    def __init__(self, svf: SVFModel, task: str, seed: int = 0, *, tokenizer: PreTrainedTokenizerBase | None = None,
                 config: TrainConfig | None = None, reward: Reward | None = None):
        from workbench.lm.tasks import draw, get_task

        self.svf, self.task, self.seed = svf, check_expert_task(task), int(seed)
        self.reward = reward
        self.cfg = config or TrainConfig()
        self.tokenizer = tokenizer if tokenizer is not None else svf.tokenizer
        if self.tokenizer is None:
            raise ValueError("ExpertTrainer needs a tokenizer: pass tokenizer=... or build the SVFModel with one "
                             "(SVFModel(model, tokenizer) or SVFModel.load(path))")
        self.max_new_tokens = int(self.cfg.max_new_tokens or get_task(self.task).max_new_tokens)
        # the expert: leaf tensors Adam updates in place
        self.params = {n: p.requires_grad_(True) for n, p in
                       svf.init_params(self.seed, self.cfg.init_value, self.cfg.init_noise).items()}
        self.opt = torch.optim.Adam(list(self.params.values()), lr=self.cfg.lr)
        self.val_set = draw(self.task, self.cfg.val_n, _stream(self.seed, self.task, "svf-val"), "train")
        self._val_prompts = {p for p, _ in self.val_set}
        self.rng = _stream(self.seed, self.task, "svf-train")
        self.step_count = 0
        self.best_params: dict[str, torch.Tensor] | None = None
        self.best_val: float | None = None
        self.best_step: int | None = None
        self.history: list[dict] = []  # one record per validate()

    # --- data ---

    def sample_batch(self, n: int | None = None) -> list[tuple[str, str]]:
        """n (default batch_size) training examples from the trainer's stream, never a validation prompt."""
        from workbench.lm.tasks import draw

        n = int(n or self.cfg.batch_size)
        out: list[tuple[str, str]] = []
        while len(out) < n:
            out += [ex for ex in draw(self.task, n - len(out), self.rng, "train") if ex[0] not in self._val_prompts]
        return out

    def formatted(self, examples: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The examples in the trainer's prompt format (what the rollouts see)."""
        return format_examples(self.tokenizer, self.task, examples, self.cfg.prompt_format)

    def expert(self) -> dict[str, torch.Tensor]:
        """A detached copy of the current expert p."""
        return {n: p.detach().clone() for n, p in self.params.items()}

    # --- one REINFORCE step ---

    def step(self, batch: list[tuple[str, str]] | None = None) -> dict:
        """Roll out `batch` (default: sample_batch()) greedily, reward by exact match, take one clipped Adam step
        on the REINFORCE loss. Returns plain-float stats (grad_norm is the norm before the clip). Afterwards the
        model's modules hold the pre-step expert (the base when kl_coeff > 0 or log_kl): `svf.apply(trainer.params)`
        before using the model directly."""
        batch = self.sample_batch() if batch is None else list(batch)
        if not batch or not all(isinstance(ex, tuple | list) and len(ex) == 2 and all(isinstance(s, str) for s in ex)
                                for ex in batch):
            raise ValueError("a batch is a non-empty list of (prompt, answer) string pairs, e.g. from "
                             "trainer.sample_batch() or workbench.lm.tasks.draw")
        cfg, svf = self.cfg, self.svf
        svf.apply(self.params)  # rollouts with W′(z(p)) composed once
        roll = rollout(svf.model, self.tokenizer, self.formatted(batch), self.max_new_tokens, cfg.rollout_batch,
                       cfg.stop_token == "count")
        rewards = torch.tensor(self._rewards(batch, roll), dtype=torch.float32)
        ids, targets = teacher_batch(roll.prompts, roll.outputs, _pad_id(self.tokenizer))
        dev = svf.device
        B = len(batch)
        with_ref = cfg.kl_coeff > 0 or cfg.log_kl
        if with_ref:
            svf.reset()  # π_ref = the base model, read from the modules below
        self.opt.zero_grad(set_to_none=True)
        total, logp_sum, kl_sum = 0.0, 0.0, 0.0
        for i in range(0, B, cfg.micro_batch):
            sl = slice(i, i + cfg.micro_batch)
            x, y = ids[sl].to(dev), targets[sl].to(dev)
            logits = svf.forward(self.params, input_ids=x).logits[:, :-1]
            ref = None
            if with_ref:
                with torch.no_grad():
                    ref = svf.model(input_ids=x).logits[:, :-1]
            # reinforce_loss is a mean over its rows: weight each micro-batch by its share of the batch
            loss = reinforce_loss(logits, y, rewards[sl], ref, cfg.kl_coeff) * (x.shape[0] / B)
            loss.backward()
            with torch.no_grad():
                total += float(loss)
                logp_sum += float(sequence_logprobs(logits, y).sum())
                if ref is not None:
                    kl_sum += float(kl_ref(logits, ref, y >= 0).sum())
        grad_norm = torch.nn.utils.clip_grad_norm_(list(self.params.values()), cfg.max_grad_norm)
        if not math.isfinite(float(grad_norm)) or not math.isfinite(total):
            self.opt.zero_grad(set_to_none=True)  # nothing moves: the expert keeps its values
            raise ValueError(f"step {self.step_count + 1} of the {self.task} expert gave a non-finite loss or gradient "
                             f"(loss {total}, gradient norm {float(grad_norm)}); the expert was not updated: lower "
                             "the learning rate (--lr) or resume from the last checkpoint")
        self.opt.step()
        self.step_count += 1
        return {"step": self.step_count, "loss": total, "reward_mean": float(rewards.mean()),
                "accuracy": roll.accuracy, "logp_mean": logp_sum / B, "kl_mean": kl_sum / B if with_ref else None,
                "grad_norm": float(grad_norm), **svf.summary(self.params),
                "gen_tokens": float(np.mean(roll.generated))}

    def _rewards(self, batch: list[tuple[str, str]], roll: Rollouts) -> list[float]:
        """±1 by exact match, or the reward function's values: one finite number per example, else one error."""
        if self.reward is None:
            return roll.rewards
        values = list(self.reward(batch, roll.texts))
        if len(values) != len(batch):
            raise ValueError(f"the reward function returned {len(values)} rewards for {len(batch)} examples; it must "
                             "return one per example")
        bad = [i for i, v in enumerate(values) if not math.isfinite(float(v))]
        if bad:
            raise ValueError(f"the reward function returned {values[bad[0]]} for example {bad[0]} "
                             f"({batch[bad[0]][0]!r}): rewards must be finite numbers (exact match gives +1 / -1); "
                             "the expert was not updated")
        return [float(v) for v in values]

    # --- validation and the best checkpoint ---

    @torch.no_grad()
    def validate(self) -> dict:
        """Accuracy of the current expert on the validation set; keeps it as the best checkpoint when it beats
        every earlier validation (the first validation always sets it, so there is a checkpoint even while
        accuracy is 0, where the reference, starting from 0 with a strict >, keeps none; ties keep the earlier)."""
        self.svf.apply(self.params)
        roll = rollout(self.svf.model, self.tokenizer, self.formatted(self.val_set), self.max_new_tokens,
                       self.cfg.rollout_batch)
        acc = roll.accuracy
        improved = self.best_val is None or acc > self.best_val
        if improved:
            self.best_params, self.best_val, self.best_step = self.expert(), acc, self.step_count
        record = {"step": self.step_count, "val_accuracy": acc, "best_val_accuracy": self.best_val,
                  "best_step": self.best_step, "improved": improved}
        self.history.append(record)
        return record

    def fit(self, steps: int, val_every: int = 10) -> list[dict]:
        """A convenience loop: `steps` steps, validating after step 1, 1 + val_every, ... and the last one (the
        reference tests at i % test_interval == 0). Returns each step's stats (with its validation record)."""
        out = []
        for i in range(int(steps)):
            stats = self.step()
            if i % val_every == 0 or i == steps - 1:
                stats.update(self.validate())
            out.append(stats)
        return out

    # --- checkpoints ---

    def state_dict(self) -> dict:
        """Plain values and NumPy arrays (workbench.checkpoint.pack can write it): everything a bit-exact resume
        needs. The SVFModel is not in it: give the same model to from_state."""
        opt = self.opt.state_dict()
        return {"format": STATE_FORMAT, "task": self.task, "seed": self.seed, "config": asdict(self.cfg),
                "model_key": self.svf.key, "names": list(self.svf.names), "step": self.step_count,
                "params": _arrays(self.params),
                "optimizer": {"state": {str(k): {n: _plain(v) for n, v in s.items()} for k, s in opt["state"].items()},
                              "param_groups": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
                                               for g in opt["param_groups"]]},
                "rng": rng_state(self.rng),
                "best": {"val": self.best_val, "step": self.best_step,
                         "params": None if self.best_params is None else _arrays(self.best_params)},
                "history": [dict(r) for r in self.history]}

    @classmethod
    def from_state(cls, state: dict, svf: SVFModel, *, tokenizer: PreTrainedTokenizerBase | None = None,
                   reward: Reward | None = None) -> ExpertTrainer:
        """The trainer `state_dict` described, on `svf` (which must wrap the same weights)."""
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ValueError(f"not an ExpertTrainer state (format {STATE_FORMAT!r} expected)")
        if state["model_key"] != svf.key or list(state["names"]) != svf.names:
            raise ValueError("this trainer state was made for another model (its SVD key differs): resume it with "
                             "the model it was trained on")
        cfg = {"stop_token": "count", **state["config"]}  # states made before stop_token counted the eos
        trainer = cls(svf, state["task"], state["seed"], tokenizer=tokenizer, config=TrainConfig(**cfg), reward=reward)
        with torch.no_grad():
            for n, p in trainer.params.items():
                p.copy_(torch.from_numpy(np.array(state["params"][n])))
        opt = state["optimizer"]
        trainer.opt.load_state_dict({
            "state": {int(k): {n: _tensor(v) for n, v in s.items()} for k, s in opt["state"].items()},
            "param_groups": [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()}
                             for g in opt["param_groups"]]})
        trainer.rng = rng_from_state(state["rng"])
        trainer.step_count = int(state["step"])
        best = state["best"]
        trainer.best_val, trainer.best_step = best["val"], best["step"]
        if best["params"] is not None:
            dev = svf.device
            trainer.best_params = {n: torch.from_numpy(np.array(v)).to(dev) for n, v in best["params"].items()}
        trainer.history = [dict(r) for r in state["history"]]
        return trainer


def _arrays(params: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {n: p.detach().to("cpu").numpy().copy() for n, p in params.items()}


def _plain(v):
    return v.detach().to("cpu").numpy().copy() if isinstance(v, torch.Tensor) else v


def _tensor(v):
    return torch.from_numpy(np.array(v)) if isinstance(v, np.ndarray | np.generic) else v
