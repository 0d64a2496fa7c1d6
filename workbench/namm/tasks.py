"""Procedural long-context tasks for NAMM (spec §3): a fact hidden in filler text, asked for at the end, scored
by exact match of the first number the model answers.

    examples = make_examples("passkey", tokenizer, n=8, length=1024, seed=0)
    ex = examples[0]
    ex.ids, ex.answer, ex.text          # prompt token ids (≈ length tokens), the exact answer, the prompt text
    score_answer(generated_text, ex.answer)   # 1.0 iff the first digit run of the output equals the answer

Tasks (each answer is a number; chance ≈ 0 unless said otherwise):

    passkey   "The pass key is 48213. Remember it. 48213 is the pass key." somewhere in the filler;
              "What is the pass key?" -> 48213
    kv        four facts "The number of the <word> is 4821." at random depths; asks for one of them (the other
              three are distractors of the same form)
    vartrack  variable tracking: "VAR QX = 52817." then, later, "VAR KD = VAR QX."; asks for the value of
              VAR KD (one hop), with an unrelated distractor variable
    count     "I saw a fox." 1 to 4 times among the filler; "How many times did I see a fox?" (chance 1/4)
    digit     one digit: "The magic digit is 7." (chance 1/10; the smallest retrieval, for tiny models)

The filler is plain sentences drawn (seeded) from a small pool, so a prompt is mostly text a memory policy may
forget. A prompt is built to `length` tokens of the given tokenizer (within one filler sentence), the fact(s)
at uniform random depths; with a chat template (SmolLM2-Instruct) the context and question form the user turn
and the assistant turn starts with an answer prefix ("The pass key is"), which small models need; without one
(the tests' char-level models) the text is the context, the question and the prefix, plainly.

The prompt is tokenised as two parts, the context (template head + filler and facts) and the question turn
(question, template tail, answer prefix): `ids[:n_context]` is what a kvpress press compresses, the rest is
appended uncompressed, so every method reads the same token ids.

Determinism: example i of (task, split, seed, length) comes from numpy's generator seeded with (crc32(task),
split, seed, length, i), whatever else was drawn, so the same call gives the same prompts on every machine;
"train" (what CMA-ES sees) and "test" (evaluations, benchmarks) never share a stream.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

FILLER = (
    "The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.", "There and back again.",
    "The river runs to the sea.", "A cat sleeps on the warm stone.", "The wind moves the tall trees.",
    "Bread is baked in the morning.", "The road is long and quiet.", "Rain falls on the old roof.",
    "The lamp is on the table.", "Children play in the park.", "The boat waits by the shore.",
    "Snow covers the high hills.", "The clock ticks on the wall.", "Leaves turn red in autumn.",
    "The market opens at dawn.", "A dog runs along the beach.", "The window faces the garden.",
)
WORDS = ("apple", "river", "candle", "garden", "mirror", "pencil", "silver", "window", "forest", "rocket",
         "tiger", "violin", "bottle", "castle", "planet", "anchor")
LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"
ANSWER_ONLY = "Answer with the number only."


class PromptTooShort(ValueError):
    """A prompt length below what a task's facts and question alone take (`base` tokens); `needed` is the length to
    ask for instead. The message names --length; `named(flag)` names the flag that gave the length."""

    def __init__(self, task: str, length: int, base: int, flag: str = "--length"):
        super().__init__(f"{flag} {length} is too short for task {task!r}: its facts and question alone take "
                         f"{base} tokens; use {flag} {base + 64} or more")
        self.task, self.length, self.base, self.needed = task, length, base, base + 64

    def named(self, flag: str) -> PromptTooShort:
        return PromptTooShort(self.task, self.length, self.base, flag)


@dataclass(frozen=True)
class Example:
    """One prompt: its token ids (what the model reads), the exact answer and the prompt text."""

    task: str
    ids: tuple[int, ...]
    answer: str
    text: str
    n_context: int  # ids[:n_context] is the context (what kvpress compresses), the rest the question turn

    @property
    def length(self) -> int:
        """The prompt's length in tokens, len(ids)."""
        return len(self.ids)


@dataclass(frozen=True)
class Spec:
    """What a task draws for one prompt: the facts to hide, the question, the answer prefix and the answer."""

    facts: list[str]
    question: str
    prefix: str
    answer: str
    extra_filler: list[str] = field(default_factory=list)  # sentences mixed into the filler (count's foxes)


def _number(rng: np.random.Generator, digits: int) -> str:
    return str(int(rng.integers(10 ** (digits - 1), 10 ** digits)))


def _passkey(rng: np.random.Generator) -> Spec:
    key = _number(rng, 5)
    return Spec([f"The pass key is {key}. Remember it. {key} is the pass key."], "What is the pass key?",
                "The pass key is", key)


def _kv(rng: np.random.Generator) -> Spec:
    words = rng.choice(len(WORDS), size=4, replace=False)
    values = [_number(rng, 4) for _ in words]
    asked = int(rng.integers(4))
    facts = [f"The number of the {WORDS[w]} is {v}." for w, v in zip(words, values, strict=True)]
    word = WORDS[words[asked]]
    return Spec(facts, f"What is the number of the {word}?", f"The number of the {word} is", values[asked])


def _var(rng: np.random.Generator) -> str:
    return "".join(rng.choice(list(LETTERS), size=2))


def _vartrack(rng: np.random.Generator) -> Spec:
    names = set()
    while len(names) < 3:
        names.add(_var(rng))
    a, b, c = (sorted(names)[i] for i in rng.permutation(3))
    value, other = _number(rng, 5), _number(rng, 5)
    # the definition comes before the copy: the facts are placed in this order
    facts = [f"VAR {a} = {value}.", f"VAR {c} = {other}.", f"VAR {b} = VAR {a}."]
    return Spec(facts, f"What is the value of VAR {b}?", f"The value of VAR {b} is", value)


def _count(rng: np.random.Generator) -> Spec:
    k = int(rng.integers(1, 5))
    return Spec([], "How many times did I see a fox?", "I saw a fox this many times:", str(k),
                extra_filler=["I saw a fox."] * k)


def _digit(rng: np.random.Generator) -> Spec:
    d = str(int(rng.integers(10)))
    return Spec([f"The magic digit is {d}."], "What is the magic digit?", "The magic digit is", d)


#: name -> (draw one prompt's spec, chance of a right answer by guessing)
TASKS: dict[str, tuple[Callable[[np.random.Generator], Spec], float]] = {
    "passkey": (_passkey, 0.0), "kv": (_kv, 0.0), "vartrack": (_vartrack, 0.0), "count": (_count, 0.25),
    "digit": (_digit, 0.1),
}
ORDERED = ("vartrack",)  # tasks whose facts must appear in the order drawn
SPLITS = ("train", "test")


def check_task_names(names: str | Iterable[str]) -> list[str]:
    """The task names as a list, or one error naming the known tasks."""
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise ValueError(f"give at least one task (--tasks), known: {', '.join(TASKS)}")
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise ValueError(f"unknown NAMM task(s) {', '.join(map(repr, unknown))}: use --tasks with any of "
                         f"{', '.join(TASKS)}")
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"--tasks: {twice!r} is listed twice; name each task once")
    return names


def _render(tokenizer, context: str, spec: Spec) -> tuple[str, str]:
    """(context part, question part) of the prompt text: the chat template when the tokenizer has one (split
    after the context, as kvpress splits its prompts), else plain text."""
    question = f"{spec.question} {ANSWER_ONLY}"
    if getattr(tokenizer, "chat_template", None):
        mark = "\x00" * 3
        messages = [{"role": "user", "content": f"{context}{mark}"}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        head, tail = text.split(mark)
        return head, f"\n\n{question}{tail}{spec.prefix}"
    return context, f"\n{question}\n{spec.prefix}"


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def make_example(task: str, tokenizer: PreTrainedTokenizerBase, length: int, seed: int, index: int,
                 split: str = "train") -> Example:
    """Example `index` of a task at about `length` prompt tokens (module doc); split "train" or "test" draws from
    separate streams."""
    draw, _ = TASKS[check_task_names([task])[0]]
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    rng = np.random.default_rng([zlib.crc32(task.encode()), SPLITS.index(split), int(seed), int(length), int(index)])
    spec = draw(rng)
    base = sum(len(_encode(tokenizer, part))
               for part in _render(tokenizer, " ".join([*spec.facts, *spec.extra_filler]), spec))
    if base >= length:
        raise PromptTooShort(task, length, base)
    # filler sentences until the prompt reaches `length` tokens (counted per sentence: within one sentence)
    sentences, tokens = [], base
    while tokens < length:
        s = FILLER[int(rng.integers(len(FILLER)))]
        sentences.append(s)
        tokens += len(_encode(tokenizer, " " + s))
    inserts = list(spec.facts) + list(spec.extra_filler)
    slots = rng.integers(0, len(sentences) + 1, size=len(inserts))
    if task in ORDERED:
        slots = np.sort(slots)
    for offset, (slot, fact) in enumerate(sorted(zip(slots.tolist(), range(len(inserts)), strict=True))):
        sentences.insert(slot + offset, inserts[fact])
    context, question = _render(tokenizer, " ".join(sentences), spec)
    context_ids, question_ids = _encode(tokenizer, context), _encode(tokenizer, question)
    return Example(task, tuple(context_ids + question_ids), spec.answer, context + question, len(context_ids))


def make_examples(task: str, tokenizer: PreTrainedTokenizerBase, n: int, length: int, seed: int = 0,
                  split: str = "train") -> list[Example]:
    """n examples of `task` at about `length` tokens each (example i is the same whatever n)."""
    if n < 1 or length < 1:  # a short length gets the task's own error (make_example): the --length it needs
        raise ValueError(f"give n ≥ 1 prompts of length ≥ 1 token, got n={n}, length={length}")
    return [make_example(task, tokenizer, length, seed, i, split) for i in range(n)]


def chance(task: str) -> float:
    """The score of guessing (count: 1/4; digit: 1/10; the others ≈ 0)."""
    return TASKS[task][1]


_NUMBER = re.compile(r"\d+")


def score_answer(generated: str, answer: str) -> float:
    """Exact match: 1.0 iff the first run of digits in the generated text is the answer."""
    found = _NUMBER.search(generated)
    return float(found is not None and found.group(0) == answer)


def check_prompts(model: str, tasks: list[str], length: int, n: int, seed: int, max_new_tokens: int,
                  split: str = "train", flag: str = "--length", new_flag: str | None = "--max-new-tokens",
                  model_flag: str | None = "--model") -> None:
    """Build the prompts with the model's tokenizer alone and check model and context length, before the model's
    weights load (a too-short --length, a context longer than the window, a model without eager attention). Each
    error names a --length that works, or says that none does (a task too long for the model's window), so that
    following one error never leads to the other; `flag` is the option that gave `length`, `new_flag` the one
    that gave `max_new_tokens` (named where the answer's tokens alone leave a task's prompt no room), `model_flag`
    the one that gave the model (None: a run's own model, which no flag changes)."""
    named = f"{model_flag} {model}" if model_flag else f"the run's model {model}"
    from workbench.namm.models import check_model_source, load_tokenizer, window

    limit = window(check_model_source(model))
    tokenizer = load_tokenizer(model)

    def longest_at(length: int) -> int:
        try:
            return max(ex.length for task in tasks for ex in make_examples(task, tokenizer, n, length, seed, split))
        except PromptTooShort as error:
            if limit is not None and error.needed + max_new_tokens > limit:  # no --length fits this model
                if new_flag is not None and error.needed < limit:  # it would, with fewer new tokens
                    raise ValueError(f"{new_flag} {max_new_tokens} leaves {max(0, limit - max_new_tokens)} of the "
                                     f"window of {named} ({limit} positions) to the prompt, and task "
                                     f"{error.task!r} needs {error.needed} tokens or more: give {new_flag} "
                                     f"{limit - error.needed} or less") from None
                fix = (f"leave {error.task} out of --tasks or give a model with a longer window (e.g. --model "
                       "smollm2)" if model_flag else "choose another --task")
                raise ValueError(f"task {error.task!r} needs prompts of {error.needed} tokens or more, beyond the "
                                 f"window of {named} ({limit} positions): {fix}") from None
            raise error.named(flag) from None

    longest = longest_at(length)
    if limit is not None and longest + max_new_tokens > limit:
        # the longest --length that fits: prompts fill up to --length a whole sentence at a time, around a template
        # and a question, so step down by each try's excess (the task's own error when none fits)
        most, fits = length, longest
        while fits + max_new_tokens > limit:
            most = max(1, most - (fits + max_new_tokens - limit))
            fits = longest_at(most)
        raise ValueError(f"a context of {longest + max_new_tokens} tokens (prompt + answer) is longer than the window "
                         f"of {named} ({limit} positions): use {flag} {most} or less")
