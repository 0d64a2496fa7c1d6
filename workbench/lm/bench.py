"""The language-model path on a device against the CPU, in well under a minute: for the one-shot GPU benchmark.

    bench_lm_device("cuda")            # a JSON-ready dict; device="cpu" compares the CPU with itself
    python -m workbench.lm.bench --device cuda     # the same, as one JSON line

It builds a quick zoo (ZooConfig.quick, as the tests' fixture) on the device, twice, to see that a seed gives
the same weights there; evaluates every model on the device and on the CPU (accuracy per task per model, and
the largest logit difference, which sees float differences that accuracies of a weak zoo hide); merges the two
experts with ties and dare_ties on both (largest difference of the merged tensors; DARE's kept-element masks,
read back from a merge of ones, must be identical); and scores one recipe (the initial TIES genome of an
evolution) on both. Timings: zoo build, evaluation, merges and the recipe, device vs CPU, after a warm-up.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import tempfile
import time
import warnings
from pathlib import Path

import torch

from workbench.kernels.device import describe, resolve_device, synchronize
from workbench.lm.hf import transformers_imported

TASKS = ("add", "sort")
N_EVAL = 32
DENSITY = {"add": 0.5, "sort": 0.3}
WEIGHT = {"add": 0.6, "sort": 0.4}


@contextlib.contextmanager
def quiet():
    """No third-party noise: transformers' progress bars and logs, Python warnings, stray stderr writes."""
    transformers_imported()  # the first import of transformers under one lock
    from transformers.utils import logging as hf_logging

    from workbench.lm.models import quiet_progress

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with quiet_progress(), warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(level)


def _timed(fn, device: torch.device):
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - start


def _digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.safetensors"))}


def _max_abs(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def _accuracy_gap(a: dict, b: dict) -> float:
    """Largest |a − b| over the leaves of two equally shaped {…: {task: accuracy}} trees."""
    if isinstance(a, dict):
        return max((_accuracy_gap(a[k], b[k]) for k in a), default=0.0)
    return abs(float(a) - float(b))


def _evaluation(zoo, where: torch.device) -> tuple[dict, float, dict[str, torch.Tensor]]:
    """({model: {task: accuracy}}, seconds, {model: logits of a fixed batch on the CPU}) on one device."""
    from workbench.lm.evaluation import evaluate
    from workbench.lm.tasks import heldout

    tok = zoo.tokenizer()
    models = {name: zoo.model(name, device=where) for name in zoo.names}
    evaluate(models["base"], tok, zoo.tasks, n=4, device=where)  # warm-up: kernels, caches, allocator
    acc, seconds = _timed(lambda: {name: evaluate(m, tok, zoo.tasks, n=N_EVAL, device=where)
                                   for name, m in models.items()}, where)
    prompts = [p for task in zoo.tasks for p, _ in heldout(task, 8)]
    batch = tok(prompts, padding=True, return_tensors="pt").to(where)
    with torch.inference_mode():
        logits = {name: m(**batch).logits.float().cpu() for name, m in models.items()}
    return acc, seconds, logits


def _merges(zoo, dev: torch.device, cpu: torch.device, seed: int) -> dict:
    from workbench.merge.state import merge_state_dicts

    sds = {name: zoo.state_dict(name) for name in zoo.names}  # CPU tensors: both merges read the same inputs
    params = {e: {"weight": WEIGHT[e], "density": DENSITY[e]} for e in zoo.tasks}
    out: dict = {}
    for method in ("ties", "dare_ties"):
        runs = {}
        for label, where in (("device", dev), ("cpu", cpu)):
            def merge(method=method, where=where) -> dict[str, torch.Tensor]:
                return merge_state_dicts(sds, method, base="base", model_parameters=params, seed=seed, device=where)

            merge()  # warm-up
            runs[label] = _timed(merge, where)
        out[method] = {"max_abs_difference": _max_abs(runs["device"][0], runs["cpu"][0]),
                       "seconds": {label: round(s, 4) for label, (_, s) in runs.items()}}
    # DARE's masks, read back exactly: a dare_linear merge of ones onto zeros with weights 1 and 2 (no rescale,
    # no normalisation) is 1·mask_add + 2·mask_sort, i.e. both masks in one tensor; same seed, names and
    # densities as the dare_ties merge above, so the same generator draws.
    zeros = {k: torch.zeros_like(v) for k, v in sds["base"].items() if v.is_floating_point()}
    ones = {k: torch.ones_like(v) for k, v in zeros.items()}
    codes = {label: merge_state_dicts({"base": zeros, "add": ones, "sort": ones}, "dare_linear", base="base",
                                      model_parameters={e: {"weight": float(i + 1), "density": DENSITY[e]}
                                                        for i, e in enumerate(("add", "sort"))},
                                      parameters={"rescale": False}, seed=seed, device=where)
             for label, where in (("device", dev), ("cpu", cpu))}
    total = sum(v.numel() for v in zeros.values())
    kept = {e: sum(int(((c.long() & bit) != 0).sum()) for c in codes["cpu"].values()) / total
            for e, bit in (("add", 1), ("sort", 2))}
    out["dare_masks_identical"] = all(torch.equal(codes["device"][k], codes["cpu"][k]) for k in zeros)
    out["dare_kept_fraction"] = kept
    return out


def _recipe(zoo, dev: torch.device, cpu: torch.device, seed: int) -> dict:
    import numpy as np

    from workbench.merge.evolution import EvolveConfig, context, evaluate_genomes

    acc, seconds = {}, {}
    for label, where in (("device", dev), ("cpu", cpu)):
        cfg = EvolveConfig(zoo=str(zoo.path), models=list(TASKS), method="ties", n_eval=N_EVAL, seed=seed,
                           device=str(where))
        x = context(cfg).genome.initial()[None]
        evaluate_genomes(cfg, x)  # warm-up: models loaded, held-out sets tokenised
        scores, seconds[label] = _timed(lambda cfg=cfg, x=x: evaluate_genomes(cfg, x), where)
        acc[label] = dict(zip(cfg.tasks, np.asarray(scores)[0].tolist(), strict=True))
    return {"accuracy": acc, "max_abs_difference": _accuracy_gap(acc["device"], acc["cpu"]),
            "seconds": {k: round(v, 4) for k, v in seconds.items()}}


def bench_lm_device(device: str = "cuda", seed: int = 0) -> dict:
    """Zoo build, evaluation, merges and a recipe on `device` against the CPU (see the module doc); a
    JSON-serialisable dict. Raises the device module's ValueError when `device` is not there."""
    from workbench.lm.zoo import ZooConfig, build_zoo, load_zoo

    dev, cpu = resolve_device(device), torch.device("cpu")
    start = time.perf_counter()
    result: dict = {"device": str(dev), "device_name": describe(dev), "seed": seed, "torch": torch.__version__,
                    "cuda": torch.version.cuda}
    if dev.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(dev)
    with quiet(), tempfile.TemporaryDirectory(prefix="bench-lm-") as tmp:
        cfg = ZooConfig.quick(tasks=TASKS, seed=seed, device=str(dev))
        _, build_seconds = _timed(lambda: build_zoo(Path(tmp) / "zoo", cfg), dev)
        build_zoo(Path(tmp) / "again", cfg)
        zoo = load_zoo(Path(tmp) / "zoo")
        result["zoo"] = {"tasks": zoo.tasks, "built_on": zoo.info["device"], "build_seconds": round(build_seconds, 3),
                         "same_seed_same_weights": _digests(Path(tmp) / "zoo") == _digests(Path(tmp) / "again"),
                         "build_accuracy": zoo.info["accuracy"]}
        on_dev, dev_seconds, dev_logits = _evaluation(zoo, dev)
        on_cpu, cpu_seconds, cpu_logits = _evaluation(zoo, cpu)
        result["evaluation"] = {
            "n": N_EVAL, "accuracy": {"device": on_dev, "cpu": on_cpu},
            "accuracy_max_abs_difference": _accuracy_gap(on_dev, on_cpu),
            "logits_max_abs_difference": _max_abs(dev_logits, cpu_logits),
            "seconds": {"device": round(dev_seconds, 4), "cpu": round(cpu_seconds, 4)}}
        result["merge"] = _merges(zoo, dev, cpu, seed)
        result["recipe"] = _recipe(zoo, dev, cpu, seed)
    result["total_seconds"] = round(time.perf_counter() - start, 2)
    return result


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    class Parser(argparse.ArgumentParser):  # one error line, as the workbench commands' (the CLI is not imported
        def error(self, message: str):      # by the library)
            self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")

    parser = Parser(prog="python -m workbench.lm.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cpu, cuda or cuda:N (default: cuda)")
    parser.add_argument("--seed", type=int, default=0, help="the zoos' and merges' seed (default: 0)")
    args = parser.parse_args(argv)
    from workbench.checks import check_seed
    from workbench.kernels.device import check_device_flag

    try:
        check_seed(args.seed)  # the recipe's EvolveConfig would refuse it, minutes in, after two zoo builds
        check_device_flag(args.device)  # a bad --device came as a traceback, after the CPU half of the bench
    except ValueError as error:
        parser.error(str(error))
    print(json.dumps(bench_lm_device(args.device, args.seed)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
