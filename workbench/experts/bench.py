"""`workbench bench experts`: the speed of Transformer² experts (a benchmark that prints JSON, never a test).

    bench_experts("data/zoo", models=("zoo", "smollm2"))

- seconds per REINFORCE step (rollouts + the differentiable forward and backward through W′(z(p)) + Adam),
  on the zoo's base and on SmolLM2-135M-Instruct (median of a few steps after a warm-up step);
- seconds per CEM generation (population 32, K experts mixed, k shots scored per member: compose + greedy);
- generated tokens per second of the base and of the same model with an SVF expert composed into it: SVFModel
  swaps W′ into the existing modules, so the two must be equal within noise (timed alternately, best of
  `repeats` each, forced to a fixed number of new tokens so both generate the same amount).
On a shared machine the timings move with the load: read them next to the machine's load (`uptime`).
"""

from __future__ import annotations

import statistics
import time

import torch

from workbench.checks import shell_path
from workbench.machine import machine


def _tokens_per_second(model, tok, prompts: list[str], new_tokens: int, repeats: int) -> float:
    """Greedy decoding of `new_tokens` tokens for every prompt (eos never stops it), best of `repeats`."""
    from workbench.lm.evaluation import _encode, greedy

    ids = [_encode(tok, p) for p in prompts]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        greedy(model, ids, new_tokens, pad_id=pad, eos_id=-1)
        best = min(best, time.perf_counter() - start)
    return len(prompts) * new_tokens / best


def _bench_model(name: str, path: str, *, task: str, batch: int, steps: int, new_tokens: int, tok_batch: int,
                 repeats: int, cem: bool, shots: int, experts: int, pop: int, prompt_format: str = "plain") -> dict:
    from workbench.experts import CEM, ExpertTrainer, SVFModel, TrainConfig, score_shots, uniform_alpha
    from workbench.lm.models import load_model
    from workbench.lm.tasks import draw, get_task, stream

    start = time.perf_counter()
    net, tok = load_model(path, device="cpu")
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    svf = SVFModel(net, tok)
    out = {"model": path, "threads": torch.get_num_threads(), "load_s": round(load_s, 2),
           "svd_s": round(time.perf_counter() - start, 2), "svd_count": svf.svd_count, "matrices": len(svf.names),
           "svf_params": svf.n_params}
    # tokens/s, base vs composed (the same modules, so the same cost), timed alternately before anything else runs
    prompts = [p for p, _ in draw(task, tok_batch, stream(0, task, "eval"), "eval")]
    expert = svf.init_params(seed=1, noise=0.3)  # a z far from uniform: W′ really differs from W
    rates: dict[str, list[float]] = {"base": [], "svf_composed": []}
    for _ in range(repeats):
        for kind in rates:
            svf.apply(expert if kind == "svf_composed" else None)
            rates[kind].append(_tokens_per_second(svf.model, tok, prompts, new_tokens, 1))
    svf.reset()
    base, composed = max(rates["base"]), max(rates["svf_composed"])
    out["tokens_per_s"] = {"base": round(base, 1), "svf_composed": round(composed, 1),
                           "ratio": round(composed / base, 3), "batch": tok_batch, "new_tokens": new_tokens,
                           "repeats": repeats}
    trainer = ExpertTrainer(svf, task, seed=0, config=TrainConfig(batch_size=batch, micro_batch=batch, val_n=8,
                                                                  prompt_format=prompt_format))
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        trainer.step()
        times.append(time.perf_counter() - start)
    out["reinforce_step_s"] = round(statistics.median(times[1:]), 4)
    out["reinforce"] = {"task": task, "batch": batch, "steps": steps, "warmup_s": round(times[0], 3),
                        "prompt_format": prompt_format}
    svf.reset()
    if cem:
        pool = [svf.init_params(seed=s, noise=0.3) for s in range(experts)]
        shot_set = draw(task, shots, stream(1, task, "train"), "train")
        search = CEM(uniform_alpha(experts, 1).ravel(), 0.5, pop=pop, seed=0)
        budget = get_task(task).max_new_tokens
        gens = []
        for _ in range(3):
            start = time.perf_counter()
            xs = search.ask()
            perf, tie = [], []
            for x in xs:
                svf.apply_mixture(pool, x.reshape(experts, 1))
                a, t = score_shots(svf, tok, shot_set, budget)
                perf.append(a)
                tie.append(t)
            search.tell(xs, perf, tie_break=tie)
            gens.append(time.perf_counter() - start)
        svf.reset()
        out["cem_generation_s"] = round(statistics.median(gens), 3)
        out["cem"] = {"pop": pop, "experts": experts, "shots": shots, "task": task}
    return out


def bench_experts(zoo: str = "data/zoo", models: tuple[str, ...] = ("zoo", "smollm2"), *, steps: int = 5,
                  repeats: int = 3, threads: int | None = None) -> dict:
    """The JSON of `workbench bench experts` (module doc). models: "zoo" (ZOO/base), "smollm2"."""
    from pathlib import Path

    if int(steps) < 1 or int(repeats) < 1:
        raise ValueError(f"--steps and --repeats must be at least 1, got {steps} and {repeats}")
    unknown = [m for m in models if m not in ("zoo", "smollm2")]
    if unknown:
        raise ValueError(f"unknown model {unknown[0]!r} for bench experts; choose zoo and/or smollm2")
    if "zoo" in models and not (Path(zoo) / "base").is_dir():
        raise ValueError(f"no zoo at {zoo}: build it with `workbench zoo build --out {shell_path(zoo)}` or pass --zoo")
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        out = {"machine": machine()}
        if "zoo" in models:
            out["zoo"] = _bench_model("zoo", str(Path(zoo) / "base"), task="sort", batch=32, steps=steps,
                                      new_tokens=32, tok_batch=64, repeats=repeats, cem=True, shots=10, experts=4,
                                      pop=32)
        if "smollm2" in models:
            # the setup of `make smollm2-expert`: larger in the chat format, 16 prompts a step
            out["smollm2"] = _bench_model("smollm2", "smollm2", task="larger", batch=16, steps=max(2, steps // 2),
                                          new_tokens=16, tok_batch=16, repeats=repeats, cem=False, shots=0, experts=0,
                                          pop=0, prompt_format="chat")
        return out
    finally:
        torch.set_num_threads(before)


