"""`workbench bench namm`: NAMM against the baselines and kvpress' presses, and what NAMM costs.

    result = bench_namm(BenchConfig(model="smollm2", tasks=["passkey", "kv"], policy="runs/<id>/policy.safetensors"))

One JSON object:
  * rows: task score (exact match, "test" prompts) vs kept-cache fraction for every method on the same model,
    prompts and budgets: full cache, NAMM (with a policy), recent window + 4 sinks and H2O (workbench.namm.
    baselines, evicting every n_up tokens like NAMM) at each budget and at NAMM's own kept fraction, and the
    presses of kvpress (StreamingLLM, SnapKV, TOVA, ObservedAttention, Knorm by default) at the same budgets,
    plus the trained NAMM as a kvpress press ("namm-press"). Kept fraction: workbench.namm.evaluation's (slots held
    when the answer starts ÷ prompt tokens, mean over layers and heads); a press's budget becomes kvpress'
    compression_ratio over the context (workbench.namm.peer.ratio_for).
  * summary: per task, NAMM's score and kept fraction next to the best baseline and the best press at NAMM's
    own fraction.
  * speed: prefill and decode tokens/s of one long prompt, transformers' own DynamicCache (no hooks), the
    evicting cache keeping everything (the hooks' cost), and NAMM (the policy's cost and its smaller cache).
  * cma: seconds per CMA-ES generation (ask, a population scored on the training prompts, tell) and the optimiser's
    own update time (separable; the full covariance only with time_full_cma: FastCMA and, beside it as the peer,
    cmaes' own CMA, the same numbers: minutes on two cores).

kvpress runs in its own virtualenv (workbench.namm.peer explains why; `make kvpress-peer` makes it); without it
the press rows are left out and `presses` says so. Everything is checked before the model loads.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from workbench.checks import check_counts
from workbench.lm.hf import transformers_imported
from workbench.machine import machine
from workbench.namm.peer import DEFAULT_PRESSES, check_presses, peer_python

CMA_SEED = 0


@dataclass
class BenchConfig:
    """Settings of `workbench bench namm` (flags of the same names in dashes;
    policy is also set by `--run ID`, that run's policy file). check_config refuses bad ones before the model loads.

    Attributes:
        model: 'smollm2' (the default), a .gguf file or a model folder (eager attention).
        tasks: the NAMM tasks scored (workbench.namm.tasks; default passkey and kv); the speed and cma sections
            use the first.
        policy: a trained policy file (policy.safetensors); None: no NAMM rows, the speed section times a random
            θ (N(0, 0.065²), seeded by `seed`) and the cma section uses the statistics it collected.
        budgets: kept-cache fractions in (0, 1] the baselines and presses run at (default 0.25 and 0.5); NAMM's
            own mean kept fraction is added.
        presses: kvpress presses run in the kvpress virtualenv (default: DEFAULT_PRESSES; empty: none).
        n: test prompts per task (default 8).
        length: prompt tokens of the scores and cma sections (default 512).
        n_up: tokens between eviction steps, a multiple of 16; None: the policy's, else 64.
        seed: the test and training prompts, and the random θ without a policy (default 0); the timed CMA-ES
            itself uses CMA_SEED.
        threads: torch threads (default 1).
        max_new_tokens: answer tokens at most, in the scores and cma sections (default 8).
        speed_length: prompt tokens of the speed test (default 1024).
        decode_tokens: tokens decoded after it in the speed test (default 32).
        pop: the timed CMA-ES generation's population, ≥ 2 (default 8).
        cma_prompts: training prompts of the first task each candidate of the timed generation is scored on
            (default 2).
        time_full_cma: also time full-covariance CMA-ES's update (FastCMA, and cmaes' CMA beside it), not only the
            separable one's (minutes).
        sections: any of "scores", "speed", "cma" (default: all three).
    """

    model: str = "smollm2"
    tasks: list[str] = field(default_factory=lambda: ["passkey", "kv"])
    policy: str | None = None        # a policy file; None: no NAMM rows (speed and CMA time a random θ)
    budgets: list[float] = field(default_factory=lambda: [0.25, 0.5])
    presses: list[str] = field(default_factory=lambda: list(DEFAULT_PRESSES))
    n: int = 8                       # test prompts per task
    length: int = 512                # prompt tokens
    n_up: int | None = None          # default: the policy's, else 64
    seed: int = 0
    threads: int = 1
    max_new_tokens: int = 8
    speed_length: int = 1024         # prompt tokens of the speed test
    decode_tokens: int = 32
    pop: int = 8                     # CMA-ES population of the timed generation
    cma_prompts: int = 2             # training prompts per candidate in the timed generation
    time_full_cma: bool = False
    sections: list[str] = field(default_factory=lambda: ["scores", "speed", "cma"])


SECTIONS = ("scores", "speed", "cma")


def check_config(cfg: BenchConfig):
    """One clear error for any bad setting, before the model loads; returns the SavedPolicy (or None)."""
    from workbench.namm.cache import check_n_up
    from workbench.namm.saved import load_policy
    from workbench.namm.tasks import check_prompts, check_task_names

    cfg.tasks = check_task_names(cfg.tasks)
    cfg.presses = check_presses(cfg.presses)
    cfg.sections = [cfg.sections] if isinstance(cfg.sections, str) else list(cfg.sections)  # one, not its letters
    unknown = [s for s in cfg.sections if s not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown section(s) {unknown}: use --sections with any of {', '.join(SECTIONS)}")
    saved = load_policy(cfg.policy) if cfg.policy else None
    cfg.n_up = check_n_up(cfg.n_up or (saved.n_up if saved else None) or 64, "--n-up")
    if any(not 0 < b <= 1 for b in cfg.budgets):
        raise ValueError(f"--budgets are kept-cache fractions in (0, 1], got {cfg.budgets}")
    check_counts(cfg, ("n", "length", "threads", "max_new_tokens", "speed_length", "decode_tokens", "pop",
                       "cma_prompts"))  # (True passed a check of isinstance(value, int))
    if cfg.pop < 2:
        raise ValueError(f"--pop must be at least 2, got {cfg.pop}")
    check_prompts(cfg.model, cfg.tasks, cfg.length, cfg.n, cfg.seed, cfg.max_new_tokens, "test")
    if "speed" in cfg.sections:
        check_prompts(cfg.model, cfg.tasks[:1], cfg.speed_length, 1, cfg.seed, cfg.decode_tokens, "test",
                      flag="--speed-length", new_flag="--decode-tokens")
    return saved


def _peer(cfg: BenchConfig, examples: dict, budgets: list[float], log) -> tuple[list[dict], dict]:
    """The kvpress rows from the peer virtualenv (workbench.namm.peer), or none and why."""
    python = peer_python()
    if python is None:
        return [], {"skipped": "no kvpress virtualenv: run `make kvpress-peer` (or set WORKBENCH_KVPRESS_PYTHON)"}
    job = {"model": cfg.model, "threads": cfg.threads, "max_new_tokens": cfg.max_new_tokens, "presses": cfg.presses,
           "budgets": budgets, "policy": cfg.policy and str(Path(cfg.policy).resolve()), "n_up": cfg.n_up,
           "examples": {t: [{"ids": list(e.ids), "n_context": e.n_context, "answer": e.answer} for e in exs]
                        for t, exs in examples.items()}}
    import os

    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen([python, "-m", "workbench.namm.peer"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    out, err = proc.communicate(json.dumps(job))
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    if proc.returncode != 0:
        last = (err.strip().splitlines() or ["(no message)"])[-1]
        raise ValueError(f"the kvpress peer failed ({python}): {last}")
    for row in rows:
        if log is not None:
            log(f"{row['method']:>12}@{row['budget'] if row['budget'] is not None else 'own'} {row['task']:>9}: "
                f"score {row['score']:.3f} kept {row['kept']:.3f}")
    peer = rows[0].pop("peer") if rows else None
    for row in rows[1:]:
        row.pop("peer", None)
    return rows, {"peer": peer, "python": "kvpress-peer virtualenv"}


def _scores(cfg: BenchConfig, model, tokenizer, saved, log) -> dict:
    from workbench.namm.evaluation import Method, compare
    from workbench.namm.tasks import make_examples

    examples = {t: make_examples(t, tokenizer, cfg.n, cfg.length, cfg.seed, "test") for t in cfg.tasks}
    rows, budgets, own = [], list(cfg.budgets), None
    if saved is not None:
        rows += compare(model, tokenizer, examples, [Method("namm", make=lambda: saved.build(model.config))],
                        n_up=cfg.n_up, max_new_tokens=cfg.max_new_tokens, log=log)
        own = round(float(np.mean([r["kept"] for r in rows])), 3)
        budgets = sorted({*budgets, own})  # every other method also at NAMM's own fraction
    todo = [Method("full")] + [Method(m, b) for m in ("recent", "h2o") for b in budgets]
    rows += compare(model, tokenizer, examples, todo, n_up=cfg.n_up, max_new_tokens=cfg.max_new_tokens, log=log)
    press_rows, presses = _peer(cfg, examples, budgets, log) if cfg.presses else ([], {"skipped": "no presses"})
    rows += press_rows
    return {"rows": rows, "budgets": budgets, "presses": presses, "summary": _summary(rows, own)}


def _summary(rows: list[dict], own: float | None) -> dict:
    """Per task: NAMM, the full cache, and the best baseline and press at NAMM's own kept fraction (`own`, the
    budget the other methods ran at: NAMM's mean over the tasks)."""
    if own is None:
        return {}
    out = {}
    for task in dict.fromkeys(r["task"] for r in rows):
        mine = [r for r in rows if r["task"] == task]
        namm = next(r for r in mine if r["method"] == "namm")
        full = next(r for r in mine if r["method"] == "full")
        same = [r for r in mine if r["budget"] is not None and abs(r["budget"] - own) < 1e-9]
        base = max((r for r in same if r["method"] in ("recent", "h2o")), key=lambda r: r["score"], default=None)
        press = max((r for r in same if r["method"] not in ("recent", "h2o")), key=lambda r: r["score"], default=None)
        out[task] = {"full": full["score"], "namm": namm["score"], "namm_kept": namm["kept"],
                     "best_baseline": base and {k: base[k] for k in ("method", "score", "kept")},
                     "best_press": press and {k: press[k] for k in ("method", "score", "kept")}}
    return out


def _timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _speed(cfg: BenchConfig, model, tokenizer, policy_factory) -> dict:
    """Prefill and decode tokens/s: DynamicCache, the evicting cache keeping all, NAMM."""
    transformers_imported()  # the first import of transformers under one lock
    import torch
    from transformers import DynamicCache

    from workbench.lm.models import cache_keyword
    from workbench.namm.baselines import FullCache
    from workbench.namm.cache import EvictionCache
    from workbench.namm.driver import forward
    from workbench.namm.tasks import make_examples

    ex = make_examples(cfg.tasks[0], tokenizer, 1, cfg.speed_length, cfg.seed, "test")[0]
    ids = torch.tensor([ex.ids])
    out = {"prompt_tokens": ids.shape[1], "decode_tokens": cfg.decode_tokens}

    @torch.inference_mode()
    def plain():
        cache = DynamicCache()
        kw = {cache_keyword(type(model)): cache}
        pre, res = _timed(lambda: model(input_ids=ids, use_cache=True, logits_to_keep=1, **kw))
        nxt, pos = res.logits[:, -1].argmax(-1, keepdim=True), ids.shape[1]
        start = time.perf_counter()
        for _ in range(cfg.decode_tokens):
            res = model(input_ids=nxt, position_ids=torch.tensor([[pos]]), use_cache=True, **kw)
            nxt, pos = res.logits[:, -1].argmax(-1, keepdim=True), pos + 1
        return pre, time.perf_counter() - start, 1.0

    def evicting(policy):
        def run():
            cache = EvictionCache(model.config, policy, cfg.n_up, record="none")
            pre, logits = _timed(lambda: forward(model, ids, cache, last_only=True))
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            start = time.perf_counter()
            for _ in range(cfg.decode_tokens):
                nxt = forward(model, nxt, cache, last_only=True)[:, -1].argmax(-1, keepdim=True)
            from workbench.namm.evaluation import kept_fraction

            return pre, time.perf_counter() - start, kept_fraction(cache, ids.shape[1] + cfg.decode_tokens)
        return run

    from workbench.threads import torch_threads

    with torch_threads(cfg.threads):
        for name, fn in (("dynamic_cache", plain), ("evicting_full", evicting(FullCache())),
                         ("namm", evicting(policy_factory()))):
            fn()  # warm-up (first calls allocate)
            pre, dec, kept = fn()
            out[name] = {"prefill_tok_s": ids.shape[1] / pre, "decode_tok_s": cfg.decode_tokens / dec,
                         "kept": kept}
    out["namm_overhead_prefill"] = out["evicting_full"]["prefill_tok_s"] / out["namm"]["prefill_tok_s"]
    out["namm_overhead_decode"] = out["evicting_full"]["decode_tok_s"] / out["namm"]["decode_tok_s"]
    out["threads"] = cfg.threads
    return out


def _cma(cfg: BenchConfig, model, tokenizer, stats) -> dict:
    """Seconds per CMA-ES generation (ask, score pop candidates on cma_prompts prompts of the first task, tell)."""
    from cmaes import CMA

    from workbench.namm.cache import model_shape
    from workbench.namm.driver import FirstChunks
    from workbench.namm.evaluation import evaluate
    from workbench.namm.policy import NAMMPolicy
    from workbench.namm.tasks import make_examples
    from workbench.namm.train import NAMMTrainConfig, new_search
    from workbench.threads import torch_threads

    exs = make_examples(cfg.tasks[0], tokenizer, cfg.cma_prompts, cfg.length, cfg.seed, "train")
    shape = model_shape(model.config)
    out = {"pop": cfg.pop, "prompts": cfg.cma_prompts, "length": cfg.length, "task": cfg.tasks[0],
           "threads": cfg.threads}
    search = new_search(NAMMTrainConfig(model=cfg.model, tasks=cfg.tasks[:1], pop=cfg.pop, seed=CMA_SEED,
                                        n_up=cfg.n_up))
    first_chunks = FirstChunks()  # as training's Context: the candidates share each prompt's first chunk
    with torch_threads(cfg.threads):
        start = time.perf_counter()
        xs = [search.ask() for _ in range(cfg.pop)]
        fits = [evaluate(model, tokenizer, exs, NAMMPolicy(x, *shape, stats=stats), n_up=cfg.n_up,
                         max_new_tokens=cfg.max_new_tokens, first_chunks=first_chunks).score for x in xs]
        search.tell([(x, -f) for x, f in zip(xs, fits, strict=True)])
        out["generation_s"] = time.perf_counter() - start
    for kind in ("sep", "full", "full_cmaes") if cfg.time_full_cma else ("sep",):
        # "full_cmaes": the peer, cmaes' own CMA, which FastCMA reproduces bit for bit
        s = new_search(NAMMTrainConfig(model=cfg.model, tasks=cfg.tasks[:1], pop=cfg.pop, cma=kind.split("_")[0],
                                       seed=CMA_SEED, n_up=cfg.n_up), optimiser=CMA if kind == "full_cmaes" else None)
        start = time.perf_counter()
        for _ in range(2):  # full CMA decomposes its covariance in the first ask after a tell
            xs = [s.ask() for _ in range(cfg.pop)]
            s.tell([(x, float(np.sum(x ** 2))) for x in xs])
        out[f"optimiser_{kind}_s"] = (time.perf_counter() - start) / 2
    out["per_candidate_s"] = out["generation_s"] / cfg.pop
    return out


def bench_namm(cfg: BenchConfig, log: Callable[[str], None] | None = None) -> dict:
    """The whole benchmark (module doc), on the CPU. check_config runs first: one ValueError for a bad setting
    before the model loads (it also sets cfg's tasks, presses, sections and n_up in place).

    Args:
        cfg: the benchmark's settings (BenchConfig).
        log: log(line) is told a line per scored method and task and the speed and cma results as they come;
            None: silent.
    Returns:
        The JSON-able dict the module doc describes: config (cfg as a dict), policy (the saved policy's run,
        generation, variant, max_kept, tasks, cma and pop; without one {"random_theta_seed": seed}) and python
        (its version), then per section asked: "scores" → rows, budgets (with a policy, NAMM's own kept fraction
        added), presses, summary; "speed" → prefill and decode tokens/s and the kept fraction per cache, and NAMM's
        overhead ratios; "cma" → seconds per generation, per candidate and per optimiser update.
    """
    saved = check_config(cfg)
    from workbench.namm.models import load_eager_model
    from workbench.namm.policy import NAMMPolicy
    from workbench.namm.scorer import N_PARAMS
    from workbench.threads import torch_threads

    model, tokenizer = load_eager_model(cfg.model, device="cpu")
    result = {"config": asdict(cfg), "policy": saved and {k: saved.meta.get(k) for k in
                                                          ("run", "generation", "variant", "max_kept", "tasks",
                                                           "cma", "pop")}}
    if saved is not None:
        stats, factory = saved.stats, (lambda: saved.build(model.config))
    else:
        # no policy: a seeded random θ at σ0 with statistics collected on one prompt (the policy's cost)
        from workbench.namm.cache import model_shape
        from workbench.namm.evaluation import evaluate
        from workbench.namm.tasks import make_examples

        theta = np.random.default_rng(cfg.seed).normal(0, 0.065, N_PARAMS)
        probe = NAMMPolicy(theta, *model_shape(model.config))
        with torch_threads(cfg.threads):
            evaluate(model, tokenizer, make_examples(cfg.tasks[0], tokenizer, 1, cfg.length, cfg.seed), probe,
                     n_up=cfg.n_up, max_new_tokens=1)
        stats = probe.stats
        factory = (lambda: NAMMPolicy(theta, *model_shape(model.config), stats=stats))
        result["policy"] = {"random_theta_seed": cfg.seed}
    if "scores" in cfg.sections:
        with torch_threads(cfg.threads):
            result.update(_scores(cfg, model, tokenizer, saved, log))
    if "speed" in cfg.sections:
        result["speed"] = _speed(cfg, model, tokenizer, factory)
        if log is not None:
            log(f"speed: {json.dumps(result['speed'])}")
    if "cma" in cfg.sections:
        result["cma"] = _cma(cfg, model, tokenizer, stats)
        if log is not None:
            log(f"cma: {json.dumps(result['cma'])}")
    result["python"] = sys.version.split()[0]
    result["machine"] = machine()
    return result
