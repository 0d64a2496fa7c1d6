"""Procedural tasks for chat models (SmolLM2-135M-Instruct), registered beside the zoo's in workbench.lm.tasks
(EXTRA_TASKS: outside the zoo's pre-training and its character vocabulary, which has no space):

    larger    "37 85"      -> "85"       the larger of two different whole numbers 0-99

Why this task: REINFORCE with ±1 rewards needs a task the model already answers right a fair share of the
time. With the chat template and three demonstrations, SmolLM2-135M-Instruct gets brackets right 3-16 % of
the time (the −1 rewards dominate and nothing is learnt) but answers `larger` with one of the two numbers almost
always, the larger one about half the time: short exact answers, a clear signal, room to learn (an SVF
expert: validation 0.53 -> 0.84 in 40 steps, docs/benchmarks.md).
"""

from __future__ import annotations

import numpy as np

LARGER = "larger"
#: The chat instruction (system turn) of each task here, for workbench.experts.train.INSTRUCTIONS.
CHAT_INSTRUCTIONS = {LARGER: "Answer with the larger of the two numbers."}
#: Tokens an answer may take, eos included (two digits + eos, one spare: SmolLM2 writes a digit per token).
LARGER_BUDGET = 4


def sample_larger(rng: np.random.Generator, n: int) -> list[tuple[str, str]]:
    """n examples "a b" -> str(max(a, b)) with a != b drawn uniformly from 0-99 (no ties: one exact answer)."""
    out = []
    for _ in range(n):
        a, b = (int(x) for x in rng.choice(100, size=2, replace=False))
        out.append((f"{a} {b}", str(max(a, b))))
    return out
