"""kvpress, the outside peer, on the same model, prompts and budgets as NAMM (run inside the peer virtualenv).

kvpress 0.5.5 requires transformers < 5.3 (it hooks attention modules through the `past_key_values` keyword that
transformers 5.3 renamed), while the workbench runs a newer one (5.25 here). So kvpress lives in a virtualenv of its
own, made by `make kvpress-peer` (.venv/kvpress-peer: kvpress, transformers 5.2 and their few pins; a .pth file
adds .venv's site-packages AFTER its own, so torch and everything else are shared, not downloaded twice).
`workbench bench namm` starts this module there with a JSON job on stdin:

    {"model": "smollm2", "threads": 2, "max_new_tokens": 8, "presses": ["snapkv", ...], "budgets": [0.25, 0.5],
     "examples": {"passkey": [{"ids": [...], "n_context": 480, "answer": "48213"}, ...]},
     "policy": "runs/<id>/policy.safetensors" or null, "n_up": 64}

and reads one JSON row per (press, budget, task) on stdout: method, budget, task, score, kept, n (the rows of
workbench.namm.evaluation.compare). kvpress' protocol, as in its pipeline: the press compresses the context
(ids[:n_context]) after its prefill; the question turn is appended uncompressed at its true positions and the
answer decoded greedily, stopping like workbench.namm.evaluation.answer. A budget is the kept fraction of the
whole prompt, as for the other methods: compression_ratio = 1 − (budget·L − question tokens) / context tokens.
With a policy, the trained NAMM also runs as a press (method "namm-press", at its own fraction).
"""

from __future__ import annotations

import json
import os
import sys

from workbench.lm.hf import transformers_imported

#: press names the bench takes -> kvpress class (score-based presses that compress the prefilled context)
PRESSES = {"streamingllm": "StreamingLLMPress", "snapkv": "SnapKVPress", "tova": "TOVAPress",
           "observed": "ObservedAttentionPress", "knorm": "KnormPress", "expected": "ExpectedAttentionPress",
           "keydiff": "KeyDiffPress", "random": "RandomPress", "pyramidkv": "PyramidKVPress"}
DEFAULT_PRESSES = ("streamingllm", "snapkv", "tova", "observed", "knorm")
PEER_ENV = "WORKBENCH_KVPRESS_PYTHON"
#: the keys a job must have (the module doc); the others have defaults
JOB_KEYS = ("model", "presses", "budgets", "examples")


def check_presses(names) -> list[str]:
    """Press names as a list, or one error naming the presses this bench runs (kvpress class names accepted);
    "none" alone (or no names): no kvpress."""
    names = [names] if isinstance(names, str) else list(names)  # one press, not one per letter
    if [str(n).lower() for n in names] == ["none"]:
        return []
    by_class = {v.lower(): k for k, v in PRESSES.items()}
    out = []
    for name in names:
        key = name.lower()
        key = by_class.get(key, by_class.get(key + "press", key))
        if key not in PRESSES:
            raise ValueError(f"unknown kvpress press {name!r}: use --presses with any of {', '.join(PRESSES)} "
                             f"(kvpress' {', '.join(PRESSES.values())})")
        out.append(key)
    return list(dict.fromkeys(out))


def peer_python() -> str | None:
    """The peer virtualenv's interpreter ($WORKBENCH_KVPRESS_PYTHON, else .venv/kvpress-peer), None if absent."""
    from pathlib import Path

    given = os.environ.get(PEER_ENV)
    path = Path(given) if given else Path(sys.prefix) / "kvpress-peer" / "bin" / "python"
    return str(path) if path.is_file() else None


def ratio_for(budget: float, length: int, n_context: int) -> float:
    """kvpress' compression_ratio that keeps `budget` of a `length`-token prompt whose first n_context tokens
    are the (compressible) context."""
    keep = budget * length - (length - n_context)
    return float(min(max(1.0 - keep / n_context, 0.0), 0.99))


def _answer(model, tokenizer, ids, n_context, press, max_new_tokens):
    """(generated text, kept fraction of the prompt) for one prompt, kvpress' way."""
    transformers_imported()  # the first import of transformers under one lock
    import torch
    from transformers import DynamicCache

    from workbench.namm.evaluation import _DONE

    ids = torch.tensor([ids])
    context, question = ids[:, :n_context], ids[:, n_context:]
    cache = DynamicCache()
    with torch.inference_mode():
        if press is None:
            model(input_ids=context, past_key_values=cache)
        else:
            with press(model):
                model(input_ids=context, past_key_values=cache)
        held = sum(layer.get_seq_length() for layer in cache.layers) / len(cache.layers)  # NAMM: per layer
        pos = torch.arange(n_context, ids.shape[1])[None]
        logits = model(input_ids=question, past_key_values=cache, position_ids=pos, logits_to_keep=1).logits[0, -1]
        out, nxt_pos = [], ids.shape[1]
        for step in range(max_new_tokens):
            nxt = int(logits.argmax(-1))
            if nxt == tokenizer.eos_token_id:
                break
            out.append(nxt)
            text = tokenizer.decode(out, skip_special_tokens=True)
            if _DONE.search(text) or step == max_new_tokens - 1:
                break
            logits = model(input_ids=torch.tensor([[nxt]]), past_key_values=cache,
                           position_ids=torch.tensor([[nxt_pos]])).logits[0, -1]
            nxt_pos += 1
    return tokenizer.decode(out, skip_special_tokens=True), (held + question.shape[1]) / ids.shape[1]


def run_job(job: dict, log=None) -> list[dict]:
    """The rows of one job (module doc); imports kvpress."""
    from importlib.metadata import version

    import kvpress
    import torch

    from workbench.lm.models import load_model
    from workbench.namm.tasks import score_answer

    names = check_presses(job["presses"])
    torch.set_num_threads(int(job.get("threads", 1)))
    model, tokenizer = load_model(job["model"], device="cpu")
    model.set_attn_implementation("eager")  # ObservedAttention and NAMM read attention weights
    methods = [(n, b) for n in names for b in job["budgets"]]
    if job.get("policy"):
        methods.append(("namm-press", None))
    rows = []
    for name, budget in methods:
        for task, examples in job["examples"].items():
            scores, kept = [], []
            for ex in examples:
                if name == "namm-press":
                    from workbench.namm.press import NAMMPress

                    press = NAMMPress(job["policy"], n_up=job.get("n_up"))
                else:
                    ratio = ratio_for(budget, len(ex["ids"]), ex["n_context"])
                    press = getattr(kvpress, PRESSES[name])(compression_ratio=ratio)
                text, fraction = _answer(model, tokenizer, ex["ids"], ex["n_context"], press,
                                         int(job.get("max_new_tokens", 8)))
                scores.append(score_answer(text, ex["answer"]))
                kept.append(fraction)
            row = {"method": name, "budget": budget, "task": task, "score": sum(scores) / len(scores),
                   "kept": sum(kept) / len(kept), "n": len(examples), "peer": f"kvpress {version('kvpress')}"}
            rows.append(row)
            if log is not None:
                log(json.dumps(row))
    return rows


def main() -> int:
    """`python -m workbench.namm.peer < job.json`: rows as JSON lines on stdout, errors as one line on stderr."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("kvpress").setLevel(logging.ERROR)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    job = None
    try:
        job = json.load(sys.stdin)
        run_job(job, log=lambda line: print(line, flush=True))
    except ValueError as error:  # a job that is no JSON too
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyError as error:
        key = error.args[0] if error.args else None
        if not (isinstance(job, dict) and key in JOB_KEYS and key not in job):
            raise  # a key missing in a library (transformers, kvpress) or an example: a bug, with its traceback
        print(f"error: the job has no {key!r} (its keys: workbench.namm.peer's module doc)", file=sys.stderr)
        return 2
    except ModuleNotFoundError as error:  # this Python is not the peer's
        if error.name != "kvpress":
            raise  # an import inside kvpress or transformers that failed (their versions): its traceback
        print(f"error: kvpress is not installed in {sys.executable}: run the job with the kvpress peer's Python "
              "(make kvpress-peer; workbench.namm.peer.peer_python() finds it)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
