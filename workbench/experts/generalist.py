"""A generalist base for Transformer² experts on the zoo (`workbench experts generalist`).

Why: SVF experts are trained by REINFORCE on greedy rollouts with rewards ±1, so they can only sharpen what the
base already does now and then; the zoo's base is pre-trained on the task FORMATS with random answers and
scores about 0 on every task (that is what task-vector merging wants), so its rollouts are almost all wrong and
the ±1 signal only pushes down whatever it says (measured in docs/benchmarks.md). Transformer² starts from a
generalist LLM instead. The zoo's analogue: its base fine-tuned for a SHORT budget on the mixed data of every
task (workbench.lm.zoo.finetune_multitask, the zoo's recipe), plus the classification task ("t:" + prompt ->
the task's name), so the generalist is partly right on each task and can be prompted to name a prompt's task,
which the zoo's base cannot.

    build_generalist("data/zoo", "data/zoo/generalist", steps=300)   # ~30 s on 2 CPU cores

Layout: out/ is a model folder (config.json, model.safetensors, tokenizer) plus generalist.json (the settings,
held-out accuracy per task). Deterministic for a seed on a device; written to a temporary folder and renamed.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.atomic import replace_dir, staging_dir

if TYPE_CHECKING:
    import torch

GENERALIST_FILE = "generalist.json"


def check_generalist(zoo: str | Path, out: str | Path, *, steps: int, lr: float, replace: bool = False) -> Path:
    """One error, before anything is trained or written, for bad settings, a missing zoo, an --out folder that
    is something else than a generalist, or one that is a generalist already, unless `replace` (the experts and
    adapt runs trained on it would no longer load: their SVF factors are of its weights). Returns out as a Path."""
    from workbench.lm.zoo import load_zoo

    if int(steps) < 1:
        raise ValueError(f"--steps must be a whole number of at least 1, got {steps}")
    if not (math.isfinite(lr) and lr > 0):  # inf trained a model of NaNs and wrote it
        raise ValueError(f"--lr must be a finite positive number, got {lr}")
    out = Path(out)
    if out.exists() and not (out / GENERALIST_FILE).is_file():
        raise ValueError(f"--out {out} exists and is not a generalist folder; choose a new folder")
    if (out / GENERALIST_FILE).is_file() and not replace:
        raise ValueError(f"--out {out} holds a generalist already: the experts and adapt runs trained on it read "
                         "it (trained anew, they no longer load); give another --out, or --replace to train it "
                         "anew")
    load_zoo(zoo)  # a missing or broken zoo: its own error
    return out


def build_generalist(zoo: str | Path, out: str | Path, *, steps: int = 300, lr: float = 3e-3, seed: int = 0,
                     classify: bool = True, device: str | torch.device | None = None,
                     progress: Callable[[int], None] | None = None,
                     eval_n: int = 128, replace: bool = False) -> Path:
    """Fine-tune the zoo's base on every zoo task (and "classify") for `steps` steps; write the model folder (a
    generalist there already only with `replace`: check_generalist).

    zoo: the zoo's folder; out: the generalist's folder, written atomically with generalist.json (its tasks,
    settings and accuracy); lr: AdamW's learning rate; seed: the batches drawn; classify: train the task
    classifier's prompts too; eval_n: held-out prompts per task for the accuracy recorded (seed 0, forced
    decoding). Returns out."""
    from workbench.lm.evaluation import evaluate
    from workbench.lm.tasks import CLASSIFY
    from workbench.lm.zoo import finetune_multitask, load_zoo

    out = check_generalist(zoo, out, steps=steps, lr=lr, replace=replace)
    z = load_zoo(zoo)
    tasks = [*z.tasks, *([CLASSIFY] if classify else [])]
    weights = finetune_multitask(z, tasks, steps=int(steps), lr=float(lr), seed=int(seed), device=device,
                                 progress=progress)
    model = z.model("base", device="cpu")
    model.load_state_dict(weights)
    tok = z.tokenizer()
    accuracy = evaluate(model, tok, tasks, n=eval_n, method="forced", device="cpu")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = staging_dir(out)
    try:
        from workbench.lm.models import quiet_progress

        with quiet_progress():
            model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / GENERALIST_FILE).write_text(json.dumps(
            {"zoo": str(zoo), "tasks": tasks, "steps": int(steps), "lr": float(lr), "seed": int(seed),
             "accuracy": accuracy, "eval": f"held-out seed 0, n {eval_n}"}, indent=2))
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
