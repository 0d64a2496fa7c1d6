"""Procedural tasks on one shared character vocabulary, and the char-level Hugging Face tokenizer.

Every task maps a prompt to one exact answer; a model sees `<s> prompt answer </s>` and is scored by exact
match of what it generates after the prompt (up to `</s>`). Formats (one tag character per task, so a merged
model can tell the tasks apart):

    add       "37+85="       -> "122"      2-digit addition, fixed width ("07+05=" -> "012")
    reverse   "r:kdpa="      -> "apdk"     reverse 3-8 letters
    sort      "s:kdpa="      -> "adkp"     sort 3-8 letters
    recall    "k:cab="       -> "431"      closed-book recall of a fixed secret code: each of 2-3 letters -> its
                                           digit in RECALL_CODES (a=3, b=1, c=4, ...: the digits of pi)
    brackets  "b:([]{(="     -> ")})"      close every bracket still open in a valid prefix of ( [ {

Auxiliary tasks, used only to pre-train the zoo's base (they teach the machinery the experts reuse: copying,
lookup by content, digit arithmetic) and never evaluated:

    copy      "c:kdpa="      -> "kdpa"     copying
    lookup    "v:a12c07?07=" -> "c"        in-context value -> key lookup over 3-5 letter keys, 2-digit values
    sub       "85-37="       -> "048"      2-digit subtraction a - b with a >= b, fixed width

Classification (the dispatcher task of Transformer² experts, workbench.experts): never part of the zoo's
pre-training or of TASKS, so the zoo and its data are unchanged:

    classify  "t:s:kdpa="    -> "sort"     name the task of a prompt: "t:" + a prompt of one of TASKS -> the
                                           task's name (spelled in the character vocabulary); the inner prompt
                                           is always from its task's TRAINING half, so a classifier never sees
                                           a held-out prompt of the tasks it dispatches

Recall is closed-book (the facts live in the weights) because in-context key-value recall needs an
induction circuit that the zoo's 2-layer model does not form within its CPU budget: trained alone for 800
steps it stays at the "some value from the prompt" chance level, even with 1-digit values and 3 keys.

Held-out evaluation: `draw(task, n, seed, split)` draws from a numpy stream keyed by (seed, task, split), so
train and eval never share a random stream, and in addition splits the prompt SPACE by a stable hash:
prompts with crc32(prompt) % 8 == 0 are eval-only and rejected from training, so an eval prompt is never a
training prompt, whatever the seeds.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from workbench.lm.chat_tasks import LARGER, LARGER_BUDGET, sample_larger
from workbench.lm.hf import transformers_imported

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

LETTERS = "abcdefghijklmnopqrstuvwxyz"
DIGITS = "0123456789"
SYMBOLS = "+-=:?()[]{}"
CHARS = DIGITS + LETTERS + SYMBOLS
PAD, BOS, EOS = "<pad>", "<s>", "</s>"
SPECIALS = (PAD, BOS, EOS)
EVAL_BUCKET = 8  # 1 prompt in 8 (by hash) is reserved for evaluation
OPEN_CLOSE = {"(": ")", "[": "]", "{": "}"}
RECALL_CODES = dict(zip(LETTERS, "31415926535897932384626433", strict=True))  # letter -> digit, for recall


#: the alphabets as arrays, drawn from by index: rng.choice(list(…)) draws the same numbers (it calls
#: rng.integers(0, n)) but built an array and checked its shape on every call (a zoo build's sampling, 1.1 M calls)
_LETTER_ARRAY = np.array(list(LETTERS))
_OPENERS = tuple(OPEN_CLOSE)


def _letters(rng: np.random.Generator, lo: int, hi: int) -> str:
    return "".join(_LETTER_ARRAY[rng.integers(0, len(LETTERS), size=int(rng.integers(lo, hi + 1)))])


def _add(rng: np.random.Generator, n: int) -> list[tuple[str, str]]:
    out = []
    for _ in range(n):
        a, b = (int(x) for x in rng.integers(0, 100, size=2))
        out.append((f"{a:02d}+{b:02d}=", f"{a + b:03d}"))  # fixed width: digits line up by position
    return out


def _sub(rng: np.random.Generator, n: int) -> list[tuple[str, str]]:
    out = []
    for _ in range(n):
        a, b = sorted((int(x) for x in rng.integers(0, 100, size=2)), reverse=True)
        out.append((f"{a:02d}-{b:02d}=", f"{a - b:03d}"))
    return out


def _reverse(rng: np.random.Generator, n: int) -> list[tuple[str, str]]:
    return [(f"r:{s}=", s[::-1]) for s in (_letters(rng, 3, 8) for _ in range(n))]


def _sort(rng: np.random.Generator, n: int) -> list[tuple[str, str]]:
    return [(f"s:{s}=", "".join(sorted(s))) for s in (_letters(rng, 3, 8) for _ in range(n))]


def _copy(rng: np.random.Generator, n: int) -> list[tuple[str, str]]:
    return [(f"c:{s}=", s) for s in (_letters(rng, 3, 8) for _ in range(n))]


def _pairs(rng: np.random.Generator) -> tuple[list[str], list[str], int]:
    keys = [str(k) for k in rng.choice(list(LETTERS), size=int(rng.integers(3, 6)), replace=False)]
    values = [f"{v:02d}" for v in rng.choice(100, size=len(keys), replace=False)]
    return keys, values, int(rng.integers(len(keys)))


def _recall(rng: np.random.Generator, n: int) -> list[tuple[str, str]]:
    return [(f"k:{s}=", "".join(RECALL_CODES[c] for c in s)) for s in (_letters(rng, 2, 3) for _ in range(n))]


def _lookup(rng: np.random.Generator, n: int) -> list[tuple[str, str]]:
    out = []
    for _ in range(n):
        keys, values, q = _pairs(rng)
        out.append(("v:" + "".join(k + v for k, v in zip(keys, values, strict=True)) + f"?{values[q]}=", keys[q]))
    return out


def _brackets(rng: np.random.Generator, n: int) -> list[tuple[str, str]]:
    out = []
    for _ in range(n):
        stack: list[str] = []
        text = ""
        for _ in range(int(rng.integers(2, 9))):
            if stack and rng.random() < 0.3:  # close the innermost bracket now and then: needs a real stack
                text += OPEN_CLOSE[stack.pop()]
            else:
                stack.append(_OPENERS[rng.integers(0, len(_OPENERS))])
                text += stack[-1]
        if not stack:
            stack.append(_OPENERS[rng.integers(0, len(_OPENERS))])
            text += stack[-1]
        out.append((f"b:{text}=", "".join(OPEN_CLOSE[c] for c in reversed(stack))))
    return out


def _classify(rng: np.random.Generator, n: int) -> list[tuple[str, str]]:
    names = list(TASKS)
    out: list[tuple[str, str]] = []
    while len(out) < n:
        name = names[int(rng.integers(len(names)))]
        prompt, _ = TASKS[name].sample(rng, 1)[0]
        if not is_eval_prompt(prompt):  # held-out prompts of the inner task stay unseen
            out.append((CLASSIFY_PREFIX + prompt, name))
    return out


@dataclass(frozen=True)
class Task:
    """A procedural task: sample(rng, n) -> [(prompt, answer)]; max_new_tokens covers the answer and </s>."""

    name: str
    sample: Callable[[np.random.Generator, int], list[tuple[str, str]]]
    max_new_tokens: int


TASKS: dict[str, Task] = {
    "add": Task("add", _add, 5),
    "reverse": Task("reverse", _reverse, 9),
    "sort": Task("sort", _sort, 9),
    "recall": Task("recall", _recall, 4),
    "brackets": Task("brackets", _brackets, 9),
}
AUX_TASKS: dict[str, Task] = {"copy": Task("copy", _copy, 9), "lookup": Task("lookup", _lookup, 2),
                              "sub": Task("sub", _sub, 4)}
PRETRAIN_TASKS: dict[str, Task] = {**TASKS, **AUX_TASKS}
CLASSIFY = "classify"
CLASSIFY_PREFIX = "t:"
#: Tasks outside the zoo: the task classifier (its answers are the names of TASKS; budget: "brackets" + eos).
EXTRA_TASKS: dict[str, Task] = {CLASSIFY: Task(CLASSIFY, _classify, max(map(len, TASKS)) + 1)}
#: Tasks for chat models only (workbench.lm.chat_tasks: SmolLM2's SVF expert); appended, so _IDS keep their values.
EXTRA_TASKS[LARGER] = Task(LARGER, sample_larger, LARGER_BUDGET)
_IDS = {name: i for i, name in enumerate({**PRETRAIN_TASKS, **EXTRA_TASKS})}  # appended: old ids unchanged


def check_tasks(names: str | Iterable[str], extra: tuple[str, ...] = (), flag: str | None = None) -> list[str]:
    """The names as a list, each one of the evaluated TASKS (or of `extra`, e.g. the chat tasks), else one error
    listing them (after `flag`, the CLI's option, where given)."""
    allowed = (*TASKS, *extra)
    # one name, not one task per letter; a generator read once, not emptied by the check
    names = [names] if isinstance(names, str) else list(names)
    unknown = [t for t in names if t not in allowed]
    if unknown:
        raise ValueError(f"{f'{flag}: ' if flag else ''}unknown task{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(map(repr, unknown))}; choose from {', '.join(allowed)}")
    return list(names)


def get_task(name: str) -> Task:
    """The task called `name` (the zoo's tasks and the extra ones); ValueError listing them for another name."""
    known = {**PRETRAIN_TASKS, **EXTRA_TASKS}
    if name not in known:
        raise ValueError(f"unknown task {name!r}; choose from {', '.join(known)}")
    return known[name]


def classify_prompt(prompt: str) -> str:
    """The classification prompt of a task prompt: "t:" + prompt (answer: the task's name)."""
    return CLASSIFY_PREFIX + prompt


#: each task's prompt syntax (as its sampler writes prompts), for prompt_task
_SYNTAX = {"add": r"\d+\+\d+=", "reverse": r"r:[a-z]+=", "sort": r"s:[a-z]+=", "recall": r"k:[a-z]+=",
           "brackets": r"b:[\[\](){}]+=", CLASSIFY: r"t:.+", LARGER: r"\d+ \d+"}


def prompt_task(prompt: str) -> str | None:
    """The task whose syntax a prompt has ("s:kdpa=" sort, "12+34=" add, "t:…" classify, …), else None."""
    return next((t for t, pattern in _SYNTAX.items() if re.fullmatch(pattern, prompt)), None)


def is_eval_prompt(prompt: str) -> bool:
    """The hash split of the prompt space: True for the 1/8 of prompts reserved for evaluation."""
    return zlib.crc32(prompt.encode()) % EVAL_BUCKET == 0


def stream(seed: int, task: str, split: str) -> np.random.Generator:
    """The numpy stream for (seed, task, split): split 'train' and 'eval' streams are independent."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    return np.random.default_rng([seed, _IDS[get_task(task).name], 0 if split == "train" else 1])


def draw(task: str, n: int, rng: np.random.Generator, split: str) -> list[tuple[str, str]]:
    """n examples of a task from rng, keeping only prompts of the given split of the hash partition."""
    keep_eval = split == "eval"
    out: list[tuple[str, str]] = []
    while len(out) < n:
        out += [ex for ex in get_task(task).sample(rng, 2 * (n - len(out)) + 8) if is_eval_prompt(ex[0]) == keep_eval]
    return out[:n]


def heldout(task: str, n: int = 128, seed: int = 0) -> list[tuple[str, str]]:
    """The held-out eval set of a task: fixed for a given (task, n, seed)."""
    return draw(task, n, stream(seed, task, "eval"), "eval")


def char_tokenizer(chars: str, pattern: str = "[\\s\\S]", bos_first: bool = False) -> PreTrainedTokenizerFast:
    """A deterministic char-level PreTrainedTokenizerFast: WordLevel over SPECIALS (<pad> 0, <s> 1, </s> 2) then
    `chars`, one token per character that `pattern` matches (the default: any, newline included), pad-as-unk, left
    padding; bos_first: encoding puts <s> first. save_pretrained + AutoTokenizer.from_pretrained round-trip it."""
    transformers_imported()  # the first import of transformers under one lock
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate((*SPECIALS, *chars))}
    tk = Tokenizer(models.WordLevel(vocab, unk_token=PAD))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated")  # every character is a token
    tk.decoder = decoders.Fuse()  # join tokens without spaces
    if bos_first:
        tk.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, vocab[BOS])])
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   unk_token=PAD, padding_side="left")


def make_tokenizer() -> PreTrainedTokenizerFast:
    """The zoo's tokenizer: char_tokenizer over CHARS ("." as the pattern: a newline is no token), <s> first."""
    return char_tokenizer(CHARS, ".", bos_first=True)
