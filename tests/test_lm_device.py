"""Devices for the language models and merges: explicit "cpu" equals the default on a machine without a GPU,
`--device cuda` without a GPU is one error line before anything loads, the one-shot device benchmark, and
(only where torch sees a CUDA GPU) CUDA against the CPU."""

import json

import pytest
import torch
from forked import run

from workbench.kernels.device import ENV, resolve_device

NO_GPU = not torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(NO_GPU, reason="needs a CUDA GPU: compares CUDA results with the CPU's")
PARAMS = {"add": {"weight": 0.7, "density": 0.5}, "sort": {"weight": [0.2, 0.9], "density": 0.4}}


@pytest.fixture
def default_is_cpu(monkeypatch):
    """The default device of this machine, made the CPU where a GPU would otherwise be the default."""
    monkeypatch.delenv(ENV, raising=False)
    if not NO_GPU:
        monkeypatch.setenv(ENV, "cpu")
    assert resolve_device(None) == torch.device("cpu")


def test_explicit_cpu_equals_the_default(quick_zoo, default_is_cpu, tmp_path):
    from workbench.lm.evaluation import evaluate
    from workbench.lm.zoo import load_zoo
    from workbench.merge.evolution import EvolveConfig, evolve
    from workbench.merge.state import merge_state_dicts
    from workbench.runs import RunStore

    zoo = load_zoo(quick_zoo)
    tok = zoo.tokenizer()
    for name in zoo.names:
        model = zoo.model(name, device="cpu")
        assert model.device.type == "cpu"
        assert evaluate(model, tok, zoo.tasks, n=8, device="cpu") == evaluate(zoo.model(name), tok, zoo.tasks, n=8)
    sds = {name: zoo.state_dict(name) for name in zoo.names}
    for method in ("ties", "dare_ties"):
        explicit = merge_state_dicts(sds, method, base="base", model_parameters=PARAMS, seed=2, device="cpu")
        default = merge_state_dicts(sds, method, base="base", model_parameters=PARAMS, seed=2)
        assert explicit.keys() == default.keys()
        assert all(torch.equal(explicit[k], default[k]) and explicit[k].device.type == "cpu" for k in explicit)

    cfg = {"zoo": str(quick_zoo), "models": ["add", "sort"], "method": "dare_ties", "iters": 1, "pop": 4,
           "n_eval": 4, "n_test": 4}
    a = evolve(EvolveConfig(**cfg, device=torch.device("cpu")), RunStore(tmp_path / "a"))
    b = evolve(EvolveConfig(**cfg), RunStore(tmp_path / "b"))
    assert a.read_table("evaluations").to_pylist() == b.read_table("evaluations").to_pylist()
    assert a.info["config"]["device"] == "cpu" and b.info["config"]["device"] is None  # a name, not an object
    assert a.info["device"] == b.info["device"] == "cpu"  # where it ran


def test_a_gpu_run_resumes_on_the_cpu_with_device_cpu(quick_zoo, default_is_cpu, tmp_path, capsys):
    """A stopped run whose config names a GPU this machine lacks: one error naming --device cpu, then resumed."""
    from workbench.cli import main
    from workbench.merge.evolution import EvolveConfig, evolve
    from workbench.runs import RunStore, write_json

    store = RunStore(tmp_path)
    cfg = EvolveConfig(zoo=str(quick_zoo), models=["add", "sort"], iters=2, pop=4, n_eval=4, n_test=4, device="cpu")
    calls = iter([False, True])
    run = evolve(cfg, store, should_stop=lambda: next(calls))
    assert run.info["status"] == "stopped" and run.info["iterations"] == 1
    info = run.info
    info["config"]["device"] = "cuda:7"  # as if started on a GPU machine with eight GPUs
    write_json(run.path / "run.json", info)
    if NO_GPU or torch.cuda.device_count() < 8:
        assert main(["merge", "evolve", "--resume", run.id, "--runs", str(tmp_path), "--quiet"]) == 2
        assert "resume it on another device with --device cpu" in capsys.readouterr().err.replace("\n", " ")
    assert main(["merge", "evolve", "--resume", run.id, "--runs", str(tmp_path), "--quiet", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "done"
    assert store.open(run.id).info["device"] == "cpu"


def test_zoo_records_its_device(quick_zoo):
    from workbench.lm.zoo import load_zoo

    info = load_zoo(quick_zoo).info
    assert info["device"] == str(resolve_device(None)) and info["config"]["device"] is None


def _workbench(*args, cwd):
    # COLUMNS: the width a terminal usually has; rich wraps longer error lines
    return run(*args, cwd=cwd, env={"COLUMNS": "80"}, unset=(ENV,), timeout=120)


@pytest.mark.skipif(not NO_GPU, reason="this machine has a CUDA GPU: --device cuda is valid here")
@pytest.mark.parametrize("command", [
    ["zoo", "build", "--out", "zoo", "--quick"],
    ["zoo", "eval", "nowhere"],  # a missing model: its error would come first if anything loaded before the check
    ["merge", "evolve", "--zoo", "nowhere", "--models", "add", "sort", "--runs", "runs"],
    ["merge", "apply", "missing.yaml", "--zoo", "nowhere", "--out", "merged"],
])
def test_device_cuda_without_a_gpu_is_one_error_line(tmp_path, command):
    res = _workbench(*command, "--device", "cuda", cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --device cuda:"), res.stderr
    assert "no CUDA" in lines[0] and "use --device cpu (the fallback)" in lines[0]
    assert res.stdout == "" and not list(tmp_path.iterdir())  # no zoo, run store or merged folder started


@pytest.mark.skipif(not NO_GPU, reason="this machine has a CUDA GPU: --device cuda is valid here")
def test_the_lm_bench_without_a_gpu_is_one_error_before_any_work(tmp_path):
    """Its default --device cuda gave a traceback after the CPU half of the bench had run."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != ENV}
    res = subprocess.run([sys.executable, "-m", "workbench.lm.bench"], capture_output=True, text=True, cwd=tmp_path,
                         env=env, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    (error,) = res.stderr.strip().splitlines()  # one line, as the workbench commands' (no usage block)
    assert error.startswith("error: python -m workbench.lm.bench: --device cuda: ") and "--device cpu" in error
    assert not list(tmp_path.iterdir())


def test_bad_device_names_are_one_error(capsys):
    from workbench.cli import main

    assert main(["zoo", "eval", "nowhere", "--device", "tpu"]) == 2
    assert "--device tpu: not a device; use cpu, cuda or cuda:N" in capsys.readouterr().err


def test_bench_lm_device_on_cpu_compares_the_cpu_with_itself(capsys):
    from workbench.lm.bench import bench_lm_device

    result = bench_lm_device("cpu", seed=0)
    assert capsys.readouterr() == ("", "")  # no progress bars, warnings or logs
    json.dumps(result)
    assert {"device", "device_name", "zoo", "evaluation", "merge", "recipe", "total_seconds"} <= set(result)
    assert result["device"] == "cpu" and "gpu" not in result
    zoo, ev, merge, recipe = result["zoo"], result["evaluation"], result["merge"], result["recipe"]
    assert zoo["built_on"] == "cpu" and zoo["same_seed_same_weights"] and zoo["build_seconds"] > 0
    assert set(ev["accuracy"]["device"]) == {"base", "add", "sort"}
    assert ev["accuracy"]["device"] == ev["accuracy"]["cpu"]
    assert ev["accuracy_max_abs_difference"] == ev["logits_max_abs_difference"] == 0.0
    assert set(ev["seconds"]) == {"device", "cpu"}
    assert merge["ties"]["max_abs_difference"] == merge["dare_ties"]["max_abs_difference"] == 0.0
    assert merge["dare_masks_identical"]
    kept = merge["dare_kept_fraction"]  # densities 0.5 and 0.3 over ~10^4 weights
    assert abs(kept["add"] - 0.5) < 0.03 and abs(kept["sort"] - 0.3) < 0.03
    assert recipe["max_abs_difference"] == 0.0 and set(recipe["accuracy"]["cpu"]) == {"add", "sort"}


# --------------------------------------------------------------------------- only where torch sees a CUDA GPU


@needs_gpu
def test_cuda_zoo_evaluation_matches_the_cpu(quick_zoo):
    from workbench.lm.evaluation import evaluate
    from workbench.lm.tasks import heldout
    from workbench.lm.zoo import load_zoo

    zoo = load_zoo(quick_zoo)
    tok = zoo.tokenizer()
    n = 32
    batch = dict(tok([p for t in zoo.tasks for p, _ in heldout(t, 8)], padding=True, return_tensors="pt"))
    batch_gpu = {k: v.to("cuda") for k, v in batch.items()}  # (BatchEncoding.to would move `batch` itself)
    for name in zoo.names:
        gpu, cpu = zoo.model(name, device="cuda"), zoo.model(name, device="cpu")
        assert gpu.device.type == "cuda"
        on_gpu, on_cpu = evaluate(gpu, tok, zoo.tasks, n=n, device="cuda"), evaluate(cpu, tok, zoo.tasks, n=n,
                                                                                       device="cpu")
        assert all(isinstance(v, float) for v in on_gpu.values())
        assert all(abs(on_gpu[t] - on_cpu[t]) <= 2 / n for t in zoo.tasks), (name, on_gpu, on_cpu)  # near-ties
        with torch.inference_mode():
            torch.testing.assert_close(gpu(**batch_gpu).logits.cpu(), cpu(**batch).logits, rtol=1e-4, atol=1e-4)


@needs_gpu
def test_cuda_merges_match_the_cpu_and_dare_keeps_the_same_elements(quick_zoo):
    from workbench.lm.evaluation import evaluate
    from workbench.lm.zoo import load_zoo
    from workbench.merge.state import merge_state_dicts

    zoo = load_zoo(quick_zoo)
    sds = {name: zoo.state_dict(name) for name in zoo.names}
    for method in ("ties", "dare_ties"):
        gpu = merge_state_dicts(sds, method, base="base", model_parameters=PARAMS, seed=5, device="cuda")
        cpu = merge_state_dicts(sds, method, base="base", model_parameters=PARAMS, seed=5, device="cpu")
        for k in cpu:
            assert gpu[k].device.type == "cpu"  # CPU state dicts in, CPU tensors out
            torch.testing.assert_close(gpu[k], cpu[k], rtol=1e-5, atol=1e-6)
        if method == "ties":
            tok, accs = zoo.tokenizer(), []
            for where, merged in (("cuda", gpu), ("cpu", cpu)):
                model = zoo.model("base", device=where)
                model.load_state_dict(merged)
                accs.append(evaluate(model, tok, zoo.tasks, n=32, device=where))
            assert all(abs(accs[0][t] - accs[1][t]) <= 2 / 32 for t in zoo.tasks), accs
    # masks read back exactly: ones merged onto zeros with weights 1 and 2 encode both experts' masks
    zeros = {k: torch.zeros_like(v) for k, v in sds["base"].items()}
    ones = {k: torch.ones_like(v) for k, v in zeros.items()}
    weights = {"add": {"weight": 1.0, "density": 0.5}, "sort": {"weight": 2.0, "density": 0.4}}
    codes = [merge_state_dicts({"base": zeros, "add": ones, "sort": ones}, "dare_linear", base="base",
                               model_parameters=weights, parameters={"rescale": False}, seed=5, device=where)
             for where in ("cuda", "cpu")]
    assert all(torch.equal(codes[0][k], codes[1][k]) for k in zeros)


@needs_gpu
def test_cuda_zoo_build_is_reproducible_and_recorded(tmp_path):
    import hashlib

    from workbench.lm.zoo import ZooConfig, build_zoo, load_zoo

    cfg = ZooConfig.quick(tasks=("sort",), device="cuda")
    digests = []
    for name in ("a", "b"):
        out = build_zoo(tmp_path / name, cfg)
        digests.append({p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                        for p in sorted(out.rglob("*.safetensors"))})
        info = load_zoo(out).info
        assert info["device"].startswith("cuda") and info["device_name"] == torch.cuda.get_device_name()
    assert digests[0] == digests[1]
