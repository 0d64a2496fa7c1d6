"""Scoring eviction policies on task prompts: greedy answers through an evicting cache, exact match, and the
fraction of the cache each policy kept.

    ans = answer(model, tokenizer, example, policy, n_up=64)       # ans.text, ans.score, ans.kept
    result = evaluate(model, tokenizer, examples, policy, n_up=64)  # mean score and kept fraction over prompts
    rows = compare(model, tokenizer, examples, methods, n_up=64)   # one row per (method, task): score vs kept

One prompt at a time (batch 1): NAMM keeps the same number of slots for every row of a batch, so batching
would make a prompt's evictions depend on its neighbours. Decoding is greedy and stops at the end of the first
number (the answer is a number; `max_new_tokens` bounds it) or at eos.

Kept fraction of a prompt: the slots the cache holds (attended ones, mean over layers and KV heads) when the
model starts answering, divided by the prompt's tokens: 1 for the full cache; for a policy that last ran r
tokens before the end of the prompt, those r unevaluated tokens count as kept.

Budgets: `budget_policy("recent" | "h2o", fraction, prompt_tokens, n_up)` builds a baseline whose kept fraction
is `fraction` in that sense (the budget K is what is left of fraction·L once the r tokens after the last
eviction are counted; recent windows keep 4 sink tokens).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from workbench.namm.baselines import H2O, FullCache, RecentWindow
from workbench.namm.cache import EvictionCache
from workbench.namm.driver import FirstChunks, forward
from workbench.namm.policy import EvictionPolicy
from workbench.namm.tasks import Example, score_answer

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

SINKS = 4
BUDGET_METHODS = ("recent", "h2o")
_DONE = re.compile(r"\d+\D")  # a number followed by something else: the answer is complete


@dataclass
class Answer:
    """One prompt answered: the generated text, exact-match score, kept fraction and prompt tokens."""

    text: str
    score: float
    kept: float
    tokens: int


@dataclass
class Result:
    """A policy on a list of prompts: per-prompt answers, mean score and mean kept fraction."""

    answers: list[Answer]

    @property
    def score(self) -> float:
        """The mean exact-match score over the answers."""
        return sum(a.score for a in self.answers) / len(self.answers)

    @property
    def kept(self) -> float:
        """The mean kept fraction of the cache over the answers."""
        return sum(a.kept for a in self.answers) / len(self.answers)


def kept_fraction(cache: EvictionCache, tokens: int) -> float:
    """Attended slots (mean over layers and KV heads) ÷ tokens processed."""
    held = [float(v.sum(-1).float().mean()) for v in cache.valid if v is not None]
    return sum(held) / len(held) / tokens


@torch.inference_mode()
def answer(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, example: Example, policy: EvictionPolicy, *,
           n_up: int, max_new_tokens: int = 8, first_chunks: FirstChunks | None = None) -> Answer:
    """Greedy answer of one prompt with `policy` evicting every n_up tokens (module doc).

    model, tokenizer: an eager-attention causal LM and its tokenizer (load_eager_model, load_tokenizer). example:
    the prompt (its ids are fed as they are). policy: the eviction policy (evaluate hands it one per prompt).
    n_up: tokens between eviction steps. max_new_tokens: the most tokens generated; the answer also ends at eos
    or once it holds a number followed by something else. first_chunks: a memo (driver.FirstChunks) that runs the
    prompt's first n_up tokens once for every policy scored on it (the same answers). Returns its Answer: text,
    exact-match score, the cache's kept fraction after the prompt, and the prompt's length."""
    ids = torch.tensor([example.ids])
    cache = EvictionCache(model.config, policy, n_up, record="none")
    logits = forward(model, ids, cache, last_only=True, first_chunks=first_chunks)[:, -1]
    kept = kept_fraction(cache, ids.shape[1])
    eos = tokenizer.eos_token_id
    out: list[int] = []
    for step in range(max_new_tokens):
        nxt = int(logits.argmax(-1))
        if nxt == eos:
            break
        out.append(nxt)
        text = tokenizer.decode(out, skip_special_tokens=True)
        if _DONE.search(text) or step == max_new_tokens - 1:
            break
        logits = forward(model, torch.tensor([[nxt]]), cache, last_only=True)[:, -1]
    text = tokenizer.decode(out, skip_special_tokens=True)
    return Answer(text, score_answer(text, example.answer), kept, ids.shape[1])


def evaluate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, examples: list[Example],
             policy: EvictionPolicy | Callable[[Example], EvictionPolicy], *, n_up: int,
             max_new_tokens: int = 8, first_chunks: FirstChunks | None = None) -> Result:
    """A policy (one object, reset per prompt, statistics kept; or a factory called per prompt) on prompts
    (first_chunks: as answer takes it)."""
    if not examples:
        raise ValueError("no prompts to evaluate: give one or more examples (workbench.namm.tasks.make_examples)")
    answers = []
    for ex in examples:
        p = policy(ex) if callable(policy) and not isinstance(policy, EvictionPolicy) else policy
        answers.append(answer(model, tokenizer, ex, p, n_up=n_up, max_new_tokens=max_new_tokens,
                              first_chunks=first_chunks))
    return Result(answers)


def budget_policy(method: str, fraction: float, tokens: int, n_up: int) -> EvictionPolicy:
    """A baseline whose cache holds about `fraction` of a `tokens`-long prompt when answering (module doc)."""
    if method not in BUDGET_METHODS:
        raise ValueError(f"unknown budget method {method!r}; choose one of {', '.join(BUDGET_METHODS)}")
    if not 0 < fraction <= 1:
        raise ValueError(f"a cache budget is a fraction in (0, 1], got {fraction}")
    unevaluated = tokens % n_up
    budget = max(SINKS + 2, round(fraction * tokens) - unevaluated)
    if method == "recent":
        return RecentWindow(window=budget - SINKS, sinks=SINKS)
    return H2O(heavy=budget // 2, recent=budget - budget // 2)


@dataclass(frozen=True)
class Method:
    """A method to compare: a name ("full", "namm", "recent", "h2o"), its budget (None: its own) and, for
    NAMM, a factory of the (frozen) policy."""

    name: str
    budget: float | None = None
    make: Callable[[], EvictionPolicy] | None = None

    @property
    def label(self) -> str:
        """The name, with the budget when it has one: "h2o@0.25"."""
        return self.name if self.budget is None else f"{self.name}@{self.budget:g}"

    def policy(self, example: Example, n_up: int) -> EvictionPolicy:
        """A fresh policy for `example`: make()'s, FullCache for "full", else budget_policy for the example's
        length."""
        if self.make is not None:
            return self.make()
        if self.name == "full":
            return FullCache()
        return budget_policy(self.name, self.budget, example.length, n_up)


def compare(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, examples: dict[str, list[Example]],
            methods: list[Method], *, n_up: int, max_new_tokens: int = 8,
            log: Callable[[str], None] | None = None) -> list[dict]:
    """One row per (method, task): method, budget, task, score (mean exact match), kept (mean fraction), n.

    examples: {task: its prompts}. methods: the Methods to run on every task (each prompt gets a fresh policy,
    Method.policy). n_up, max_new_tokens: as answer takes them. log(line): told one line per (method, task) as it
    is done."""
    rows = []
    for method in methods:
        for task, exs in examples.items():
            res = evaluate(model, tokenizer, exs, lambda ex, m=method: m.policy(ex, n_up), n_up=n_up,
                           max_new_tokens=max_new_tokens)
            rows.append({"method": method.name, "budget": method.budget, "task": task, "score": res.score,
                         "kept": res.kept, "n": len(exs)})
            if log is not None:
                log(f"{method.label:>16} {task:>9}: score {res.score:.3f} kept {res.kept:.3f}")
    return rows
