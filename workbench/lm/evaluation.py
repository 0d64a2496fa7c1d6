"""Exact-match evaluation of causal LMs on the procedural tasks: batched greedy decoding with left padding
and a KV cache (a small loop of our own: `generate` adds per-call overhead that dominates on a tiny model).

`evaluate(model, tok, tasks)` scores any model; `StateDictEvaluator` keeps one model and the tokenised
held-out sets in memory and scores state dicts loaded into it, for searches that evaluate hundreds of merges.

Two methods, same score: "greedy" decodes; "forced" runs ONE teacher-forced forward pass over prompt + answer
+ eos and counts a prompt correct iff the argmax at every answer position is the answer token. Greedy decoding
emits the answer exactly when that holds, so the two agree (up to float near-ties between the cached and the
full pass); "forced" needs the answer's tokenisation to be the one the model would emit, which holds for the
zoo's char-level tokenizer, not for BPE models such as SmolLM2 (use "greedy" there; it is the default).

Devices: `evaluate` and `StateDictEvaluator` move the model to `device` (default: workbench.kernels.device's
choice, the GPU when torch sees one); the lower-level `greedy` and `HeldoutSets.score` run where the model's
weights are. Prompts are tokenised on the CPU and moved per batch; accuracies come back as plain floats.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

import torch

from workbench.kernels.device import resolve_device
from workbench.lm.hf import transformers_imported
from workbench.lm.models import cache_keyword
from workbench.lm.tasks import get_task, heldout

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def model_device(model) -> torch.device:
    """Where a model's weights live (the CPU for a module without parameters)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def exact_match(outputs: list[str], answers: list[str]) -> float:
    """Fraction of outputs equal to their answer (no normalisation: the tasks have one exact answer)."""
    if len(outputs) != len(answers):
        raise ValueError(f"{len(outputs)} outputs for {len(answers)} answers")
    return sum(o == a for o, a in zip(outputs, answers, strict=True)) / max(len(answers), 1)


@torch.inference_mode()
def greedy(model: PreTrainedModel, prompts: list[list[int]], max_new_tokens: int, *, pad_id: int,
           eos_id: int) -> list[list[int]]:
    """Greedy continuations of token-id prompts (each stops at eos, which is not returned). One left-padded
    batch: positions count real tokens only, so a padded prompt sees the same positions as an unpadded one.

    max_new_tokens: the most tokens generated per prompt (≥ 1; the batch stops early once every prompt has ended).
    pad_id: the token the shorter prompts are left-padded with (masked out). eos_id: the end token: a prompt's
    continuation ends before it. Raises ValueError for no prompts, an empty prompt or max_new_tokens below 1."""
    transformers_imported()  # the first import of transformers under one lock
    from transformers import DynamicCache

    if not prompts or not all(prompts):
        raise ValueError("greedy needs one or more prompts, each of one token or more")
    from workbench.checks import count

    max_new_tokens = count(max_new_tokens, "max_new_tokens")
    dev = model_device(model)
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts]).to(dev)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts]).to(dev)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=model.config)
    done = torch.zeros(len(prompts), dtype=torch.bool, device=dev)
    out = []
    cache_arg = cache_keyword(type(model))
    for _ in range(max_new_tokens):
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                       **{cache_arg: cache}).logits[:, -1]
        nxt = logits.argmax(-1).masked_fill(done, eos_id)
        out.append(nxt)
        done |= nxt == eos_id
        if bool(done.all()):
            break
        ids, pos = nxt[:, None], pos[:, -1:] + 1
        mask = torch.cat([mask, torch.ones(len(prompts), 1, dtype=mask.dtype, device=dev)], dim=1)
    rows = torch.stack(out, dim=1).tolist()
    return [r[: r.index(eos_id)] if eos_id in r else r for r in rows]


def _encode(tokenizer, prompt: str) -> list[int]:
    # bos + characters: the zoo's training format (SmolLM2's tokenizer adds no bos, so add it if it has one)
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return ([tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []) + ids


class HeldoutSets:
    """The tokenised held-out sets of some tasks, sorted by prompt length so batches carry little padding."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, tasks: Iterable[str], *, n: int = 128, seed: int = 0,
                 batch_size: int = 64):
        from workbench.checks import count

        n = count(n, "n (held-out prompts per task)")
        batch_size, seed = count(batch_size, "batch_size"), count(seed, "seed", 0)  # any size: it names a stream
        tasks = [tasks] if isinstance(tasks, str) else list(tasks)  # one task's name, not one task per letter
        self.tokenizer, self.tasks, self.batch_size = tokenizer, tasks, batch_size
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.items = {}
        for name in self.tasks:
            examples = sorted(heldout(name, n, seed), key=lambda ex: len(ex[0]))
            self.items[name] = ([_encode(tokenizer, p) for p, _ in examples], [a for _, a in examples])

    def score(self, model: PreTrainedModel, method: str = "greedy",
              progress: Callable[[int], None] | None = None) -> dict[str, float]:
        """Accuracy per task of `model`, on the device its weights are on. progress(k), if given, is called as each
        batch of k prompts is scored (greedy) or each task's (forced)."""
        check_method(method)
        if method == "forced":
            return self._forced(model, progress)
        acc = {}
        for name in self.tasks:
            prompts, answers = self.items[name]
            max_new = get_task(name).max_new_tokens
            outs: list[list[int]] = []
            for i in range(0, len(prompts), self.batch_size):
                outs += greedy(model, prompts[i: i + self.batch_size], max_new, pad_id=self.pad_id,
                               eos_id=self.tokenizer.eos_token_id)
                if progress is not None:
                    progress(len(prompts[i: i + self.batch_size]))
            # special tokens kept: one generated inside an answer ("1<pad>22") makes it wrong, as the forced method
            # counts it (dropped, it read "122")
            acc[name] = exact_match([self.tokenizer.decode(o, skip_special_tokens=False) for o in outs], answers)
        return acc

    @torch.inference_mode()
    def _forced(self, model, progress: Callable[[int], None] | None = None) -> dict[str, float]:
        if not hasattr(self, "_teacher"):  # right-padded prompt+answer+eos rows and the answer-position masks
            eos, self._teacher = self.tokenizer.eos_token_id, {}
            for name in self.tasks:
                prompts, answers = self.items[name]
                rows = [p + self.tokenizer(a, add_special_tokens=False)["input_ids"] + [eos]
                        for p, a in zip(prompts, answers, strict=True)]
                width = max(map(len, rows))
                ids = torch.tensor([r + [self.pad_id] * (width - len(r)) for r in rows])
                check = torch.zeros(len(rows), width - 1, dtype=torch.bool)  # position t predicts token t+1
                for i, (p, r) in enumerate(zip(prompts, rows, strict=True)):
                    check[i, len(p) - 1: len(r) - 1] = True
                self._teacher[name] = (ids, check)
        acc, dev = {}, model_device(model)
        for name, (ids, check) in self._teacher.items():
            hits = []
            for i in range(0, len(ids), self.batch_size):  # causal: right padding needs no attention mask
                b, c = ids[i: i + self.batch_size].to(dev), check[i: i + self.batch_size].to(dev)
                pred = model(input_ids=b).logits[:, :-1].argmax(-1)
                hits.append(((pred == b[:, 1:]) | ~c).all(1))
            acc[name] = float(torch.cat(hits).float().mean())
            if progress is not None:
                progress(len(ids))
        return acc


def test_sets(tokenizer: PreTrainedTokenizerBase, tasks: Iterable[str], n_test: int, n_eval: int, seed: int,
              batch_size: int = 128) -> HeldoutSets:
    """The test prompts of a run that validated on heldout(task, n_eval, seed): n_test per task from held-out
    stream seed + 1, the validation prompts left out (drawn until n_test remain; fewer only if the task's held-out
    prompts run out). Two streams of one held-out half share prompts: without this, 45 of brackets' 128 test prompts
    were validation prompts its recipe had been chosen on (recall 22, add 6). tasks: task names (workbench.lm.tasks; one
    name is one task). batch_size: prompts a forward pass when the sets are scored (HeldoutSets.score)."""
    sets = HeldoutSets(tokenizer, tasks, n=1, seed=seed + 1, batch_size=batch_size)
    for task in sets.tasks:
        validation = {p for p, _ in heldout(task, n_eval, seed)}
        draw = n_test + n_eval
        while True:   # tasks with few distinct prompts (brackets) repeat validation prompts often: draw more
            pool = [ex for ex in heldout(task, draw, seed + 1) if ex[0] not in validation]
            if len(pool) >= n_test or draw >= 64 * (n_test + n_eval):
                break
            draw *= 2
        examples = sorted(pool[:n_test], key=lambda ex: len(ex[0]))
        sets.items[task] = ([_encode(tokenizer, p) for p, _ in examples], [a for _, a in examples])
    return sets


test_sets.__test__ = False  # a library function: pytest, finding it imported in a test module, would collect it


def evaluate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, tasks: Iterable[str], *, n: int = 128,
             seed: int = 0, batch_size: int = 64, method: str = "greedy", device: str | torch.device | None = None,
             progress: Callable[[int], None] | None = None) -> dict[str, float]:
    """Exact-match accuracy per task on the held-out sets (n prompts per task, eval seed stream `seed`).
    The model is moved to `device` (in place, as Module.to does; default: resolve_device(None)). progress(k): see
    HeldoutSets.score (n × len(tasks) prompts in all).

    method: "greedy" generates each answer (up to the task's max_new_tokens decoding steps a batch) and compares
    the decoded text; "forced" feeds prompt + answer + eos in one forward pass a batch and counts a prompt right
    when every answer token and the eos are the model's argmax: much faster, and the same verdict for the zoo's
    character-level tokenizer, but with a subword tokenizer an answer greedy would spell with other tokens counts
    as wrong. batch_size: prompts a forward pass. Raises ValueError for an unknown method, task or device, or a
    count below 1."""
    check_method(method)
    sets = HeldoutSets(tokenizer, tasks, n=n, seed=seed, batch_size=batch_size)  # its checks before the move
    model.to(resolve_device(device)).eval()
    return sets.score(model, method, progress)


#: how HeldoutSets.score decodes: "greedy" generates each answer; "forced" scores the answer's tokens in one
#: forward pass (exact for the zoo's character-level tokenizer)
METHODS = ("greedy", "forced")


def check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")


class StateDictEvaluator:
    """Scores state dicts on one reusable model: `ev(state_dict) -> {task: accuracy}` (no disk reload).
    Default method "forced" (one forward pass per task; exact for the zoo's char-level tokenizer). The model
    is moved to `device` (default: resolve_device(None)); state dicts may live anywhere (load_state_dict copies)."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, tasks: Iterable[str], *,
                 n: int = 128, seed: int = 0, batch_size: int = 128, method: str = "forced",
                 device: str | torch.device | None = None):
        check_method(method)
        self.sets = HeldoutSets(tokenizer, tasks, n=n, seed=seed, batch_size=batch_size)
        self.model, self.method = model.to(resolve_device(device)).eval(), method

    def __call__(self, state_dict: Mapping[str, torch.Tensor]) -> dict[str, float]:
        self.model.load_state_dict(state_dict, strict=True)
        return self.sets.score(self.model, self.method)
