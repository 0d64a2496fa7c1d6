"""Recipe evolution end to end on a real (quick) zoo: run store, determinism, resume after SIGKILL, Dask,
`workbench merge evolve|apply`, and the errors users meet."""

import dataclasses
import json
import os
import shlex
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from forked import cli as _short
from procs import cli as _cli
from procs import kill_after, run_command

from workbench.cli import main
from workbench.merge.evolution import EvolveConfig, evolve
from workbench.runs import RunStore


def _cfg(zoo, **kw):
    return EvolveConfig(**{"zoo": str(zoo), "models": ["add", "sort"], "iters": 2, "pop": 4, "n_eval": 8,
                           "n_test": 8, "seed": 1, **kw})


def _evaluations(run):
    return run.read_table("evaluations").to_pylist()


def test_ties_candidates_read_their_thresholds_from_the_contexts_cache(quick_zoo):
    """Every candidate of a TIES evolution merges the same source tensors: the Context sorts their |τ| once
    (the first candidate) and each later merge reads its thresholds from that, the same merge bit for bit."""
    from workbench.merge.evolution import context
    from workbench.merge.recipe import apply_recipe

    cfg = _cfg(quick_zoo, method="ties")
    ctx = context(cfg)
    xs = np.random.default_rng(0).uniform(0.05, 1, (3, ctx.genome.size))
    used = []
    for x in xs:
        merged = ctx.merged_state_dict(x)
        used.append(ctx.magnitudes.used_bytes)
        plain = apply_recipe(ctx.genome.recipe(x), ctx.state_dicts.__getitem__, seed=cfg.seed, device=ctx.device)
        assert merged.keys() == plain.keys() and all(torch.equal(merged[k], plain[k]) for k in plain)
    assert used[0] > 0 and used[0] == used[1] == used[2]


def test_the_loss_is_minus_the_task_weighted_mean_accuracy():
    """--task-weights weigh the mean: the fitness CMA-ES and the run's charts see is −Σ wk·acck / Σ wk."""
    cfg = EvolveConfig(zoo="z", models=["add", "sort"], task_weights=[1, 3])
    np.testing.assert_allclose(cfg.loss(np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])), [-0.25, -0.75, -0.5])


@pytest.mark.parametrize("method", ["ties", "dare_ties", "task_arithmetic", "dfs"])
def test_evolve_writes_a_complete_run(tmp_path, quick_zoo, method):
    weights = [1.0, 3.0] if method == "task_arithmetic" else [1.0, 1.0]  # one run weighs its tasks
    run = evolve(_cfg(quick_zoo, method=method, task_weights=weights), RunStore(tmp_path))
    info = run.info
    assert info["kind"] == "merge" and info["substrate"] == method and info["status"] == "done"
    assert info["iterations"] == 2 and len(run.read_table("metrics")) == 2
    # fitness is higher-is-better and listed as such (best_loss stays −fitness for older readers)
    assert info["metric"] == "fitness" and info["better"] == "higher"
    (row,) = RunStore(tmp_path).list()
    assert row["best"] == -info["best_loss"] and row["method"] == method and row["models"] == ["add", "sort"]
    assert row["columns"] == ["method", "models"] and row["algorithm"] is None
    metrics = run.read_table("metrics").to_pylist()
    assert metrics[-1]["best_fitness"] == row["best"] == max(m["fitness_max"] for m in metrics)
    evals = _evaluations(run)
    assert len(evals) == 8 and {"acc_add", "acc_sort", "loss", "genome"} <= set(evals[0])
    assert all(-1 <= e["loss"] <= 0 for e in evals)
    scores = json.loads((run.path / "scores.json").read_text())
    assert set(scores["models"]) >= {"add", "sort"} and set(scores["merged"]) == {"add", "sort"}
    assert "the validation prompts (stream 1) left out" in scores["split"] and scores["n_test"] == {"add": 8, "sort": 8}
    # the merge against taking one source as it is, on the means over the tasks weighted as the search's objective
    assert scores["mean_weights"] == dict(zip(("add", "sort"), weights, strict=True))
    assert scores["mean"]["merged"] == pytest.approx(np.average([scores["merged"][t] for t in ("add", "sort")],
                                                                weights=weights))
    sources = {name: np.average([s[t] for t in ("add", "sort")], weights=weights)
               for name, s in scores["models"].items()}
    assert scores["best_source"] == max(sources, key=sources.get)
    assert scores["beats"] == {name: bool(scores["mean"]["merged"] > m) for name, m in sources.items()}
    analysis = json.loads((run.path / "analysis.json").read_text())
    if method == "dfs":
        from workbench.merge.dfs import DFSRecipe

        recipe = DFSRecipe.load(run.path / "dfs.json")
        assert recipe.models == ["add", "sort"] and len(recipe.indicator) == 2 * 2 * 3  # M · r, r = 3 (reference)
    else:
        from mergekit.config import MergeConfiguration

        text = (run.path / "recipe.yaml").read_text()
        MergeConfiguration.model_validate(yaml.safe_load(text))  # mergekit reads what we write
        assert yaml.safe_load(text)["merge_method"] == method
        assert set(analysis["task_vector_norms"]) == {"add", "sort"}
        assert len(analysis["task_vector_norms"]["add"]) == len(analysis["layer_groups"])
        if method != "task_arithmetic":
            assert 0 <= analysis["sign_conflict"]["total"] <= 1
            # the election the merge ran: over DARE's random drop for dare_ties, TIES' trim otherwise
            assert analysis["sign_conflict"]["after"] == ("dare drop" if method == "dare_ties" else "trim")
        if method == "dare_ties":
            assert all(0 < f <= 1 for f in analysis["dare_kept"]["add"])
            assert analysis["dare_rescale"] == "l1"  # which rescaling ran is named (mergekit's default)


def test_same_seed_same_run_and_cluster_equals_local(tmp_path, quick_zoo):
    from workbench.scale import local_client

    a = evolve(_cfg(quick_zoo, method="dare_ties"), RunStore(tmp_path / "a"))
    b = evolve(_cfg(quick_zoo, method="dare_ties"), RunStore(tmp_path / "b"))
    assert _evaluations(a) == _evaluations(b)
    client = local_client(2)
    try:
        c = evolve(_cfg(quick_zoo, method="dare_ties"), RunStore(tmp_path / "c"), client=client)
        assert len(client.scheduler_info()["workers"]) == 2
    finally:
        client.close()
        client.cluster.close()
    assert _evaluations(a) == _evaluations(c)
    np.testing.assert_array_equal(np.load(a.path / "best.npy"), np.load(c.path / "best.npy"))
    # the recipe names the seed its DARE drops were drawn with: `merge apply` rebuilds the model the run scored
    # (seed 0 before: another draw, 0.019 off)
    from workbench.lm.zoo import load_zoo
    from workbench.merge.apply import apply_recipe_file, load_merged
    from workbench.merge.recipe import Recipe, apply_recipe, recipe_seed

    assert recipe_seed(a.path / "recipe.yaml") == a.info["config"]["seed"] == 1
    applied = load_merged(apply_recipe_file(a.path / "recipe.yaml", models_dir=quick_zoo, out=tmp_path / "m"),
                          device="cpu")[0].state_dict()
    recipe, zoo = Recipe.from_yaml(a.path / "recipe.yaml"), load_zoo(quick_zoo)
    ours, other = apply_recipe(recipe, zoo.state_dict, seed=1), apply_recipe(recipe, zoo.state_dict, seed=0)
    for k, v in applied.items():
        torch.testing.assert_close(v, ours[k], rtol=0, atol=0)
    assert any(not torch.equal(ours[k], other[k]) for k in ours)


def test_resume_after_sigkill_equals_an_uninterrupted_run(tmp_path, quick_zoo):
    args = ["merge", "evolve", "--zoo", str(quick_zoo), "--models", "add", "sort", "--method", "ties",
            "--iters", "12", "--pop", "4", "--n-eval", "8", "--n-test", "8", "--seed", "3", "--quiet"]
    whole = _cli(*args, "--runs", "whole", cwd=tmp_path)  # alongside the killed one: the test takes half the time
    killed = _cli(*args, "--runs", "killed", cwd=tmp_path)
    store = RunStore(tmp_path / "killed")
    row = kill_after(killed, store, 3)
    out, err = whole.communicate(timeout=300)
    assert whole.returncode == 0, err
    reference = json.loads(out)
    run_id = row["id"]
    assert 3 <= row["iterations"] < 12, "the kill should land mid-run"
    assert row["status"] == "interrupted"
    assert row["resume_command"] == f"workbench merge evolve --resume {run_id} --runs {store.root}"
    files = {p.name for p in store.open(run_id).path.iterdir()}
    assert "checkpoint.json" in files and not any(f.endswith(".pkl") for f in files)
    resumed = run_command(f"workbench merge evolve --resume {run_id[:-1]} --runs killed --quiet", cwd=tmp_path)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    result = json.loads(out)
    assert result["status"] == "done" and result["iterations"] == 12
    assert result["best_fitness"] == reference["best_fitness"]
    a, b = RunStore(tmp_path / "whole").open(reference["id"]), store.open(run_id)
    np.testing.assert_array_equal(np.load(a.path / "best.npy"), np.load(b.path / "best.npy"))
    assert _evaluations(a) == _evaluations(b)
    assert (a.path / "recipe.yaml").read_text() == (b.path / "recipe.yaml").read_text()
    assert b.info["command"] == shlex.join(["workbench", *args, "--runs", "killed"])


def test_a_finished_run_goes_on_to_more_iterations_as_a_run_started_with_them(tmp_path, quick_zoo):
    """A finished 2-iteration evolution resumed with iters=4 (the library) and then --iters 5 (the CLI, its own
    process) ends as the run started with 5: every evaluation, the best genome, the recipe and the test scores."""
    store = RunStore(tmp_path / "runs")
    run = evolve(dataclasses.replace(_cfg(quick_zoo), zoo=Path(quick_zoo)), store)  # a notebook's Path: kept as text
    assert evolve(None, store, resume=run, iters=4).info["iterations"] == 4
    resumed = run_command(f"workbench merge evolve --resume {run.id} --iters 5 --runs runs --quiet", cwd=tmp_path)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert json.loads(out)["iterations"] == 5
    whole = evolve(_cfg(quick_zoo, iters=5), RunStore(tmp_path / "whole"))
    b = store.open(run.id)
    assert b.info["config"] == whole.info["config"]
    assert [(r["from_iteration"], r["total"]) for r in b.info["resumes"]] == [(2, 4), (4, 5)]
    np.testing.assert_array_equal(np.load(whole.path / "best.npy"), np.load(b.path / "best.npy"))
    assert _evaluations(whole) == _evaluations(b) and b.info["best_loss"] == whole.info["best_loss"]
    assert (whole.path / "recipe.yaml").read_text() == (b.path / "recipe.yaml").read_text()
    assert (whole.path / "scores.json").read_text() == (b.path / "scores.json").read_text()


@torch.no_grad()
def test_apply_writes_models_that_match_the_in_memory_merge(tmp_path, quick_zoo, capsys):
    from workbench.lm.zoo import load_zoo
    from workbench.merge.apply import load_merged
    from workbench.merge.dfs import DFSRecipe, build_dfs_model
    from workbench.merge.recipe import Recipe, apply_recipe

    zoo = load_zoo(quick_zoo)
    recipe = Recipe.from_dict({"merge_method": "ties", "base_model": "base", "parameters": {"normalize": True},
                               "models": [{"model": "add", "parameters": {"weight": [0.2, 0.9], "density": 0.6}},
                                          {"model": "sort", "parameters": {"weight": 0.5, "density": 0.4}}]})
    recipe.save(tmp_path / "recipe.yaml")
    assert main(["merge", "apply", str(tmp_path / "recipe.yaml"), "--zoo", str(quick_zoo), "--out",
                 str(tmp_path / "m1"), "--eval", "add", "--n", "8"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed["accuracy"]) == {"add"}
    model, _ = load_merged(tmp_path / "m1", device="cpu")
    expected = apply_recipe(recipe, zoo.state_dict)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, expected[k], rtol=0, atol=0)
    assert (tmp_path / "m1" / "mergekit_config.yml").is_file()
    # the recipe's dtype is the written model's, as mergekit writes it (float32 files held bf16 values)
    from safetensors import safe_open

    half = Recipe.from_dict({**recipe.to_dict(), "dtype": "bfloat16"})
    half.save(tmp_path / "half.yaml")
    assert main(["merge", "apply", str(tmp_path / "half.yaml"), "--zoo", str(quick_zoo), "--out",
                 str(tmp_path / "m3")]) == 0
    capsys.readouterr()
    with safe_open(str(tmp_path / "m3" / "model.safetensors"), framework="pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    config = json.loads((tmp_path / "m3" / "config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) == "bfloat16"
    # an --out under a file: refused before the models load and merge
    (tmp_path / "afile").write_text("")
    assert main(["merge", "apply", str(tmp_path / "recipe.yaml"), "--zoo", str(quick_zoo), "--out",
                 str(tmp_path / "afile" / "m")]) == 2
    assert "--out" in capsys.readouterr().err and not (tmp_path / "afile").is_dir()
    umask = os.umask(0)
    os.umask(umask)  # the folder and its weights as readable as any new file (mkdtemp: 0700, safetensors: 0600)
    assert {stat.S_IMODE(p.stat().st_mode) for p in [tmp_path / "m1", *(tmp_path / "m1").iterdir()]} == {
        0o777 & ~umask, 0o666 & ~umask}

    dfs = DFSRecipe(["add", "sort"], 2, path=[{"model": "add", "layer": 0}, {"model": "sort", "layer": 1, "scale": 1.4},
                                              {"model": "add", "layer": 1, "scale": 0.6}])
    dfs.save(tmp_path / "dfs.json")
    assert main(["merge", "apply", str(tmp_path / "dfs.json"), "--zoo", str(quick_zoo), "--out",
                 str(tmp_path / "m2")]) == 0
    loaded, tok = load_merged(tmp_path / "m2", device="cpu")
    live = build_dfs_model(dfs, {m: zoo.model(m, device="cpu") for m in ("add", "sort")})
    ids = tok(["3+4=", "s:dcba="], padding=True, return_tensors="pt")
    torch.testing.assert_close(loaded(**ids).logits, live(**ids).logits, rtol=0, atol=1e-6)


def test_the_merged_models_tokenizer_follows_tokenizer_source(quick_zoo):
    """mergekit's tokenizer_source: the base model's by default (and for "union" of one shared vocabulary), a named
    model's when given; models whose vocabularies differ are refused (rows are merged by token id)."""
    from transformers import AutoTokenizer

    from workbench.merge.apply import recipe_tokenizer
    from workbench.merge.recipe import Recipe

    toks = {name: AutoTokenizer.from_pretrained(quick_zoo / name) for name in ("base", "add", "sort")}
    recipe = Recipe.from_dict({"merge_method": "task_arithmetic", "base_model": "base",
                               "models": [{"model": "add", "parameters": {"weight": 0.5}},
                                          {"model": "sort", "parameters": {"weight": 0.5}}]})
    for source, expected in ((None, "base"), ("base", "base"), ("union", "base"), ("sort", "sort")):
        recipe.tokenizer_source = source
        assert recipe_tokenizer(recipe.validate(), toks) is toks[expected]
    toks["add"].add_tokens(["<extra>"])
    with pytest.raises(ValueError, match="tokenizers of 'base' and 'add' differ"):
        recipe_tokenizer(recipe, toks)


def test_errors_name_the_fix(tmp_path, quick_zoo, capsys):
    base = ["merge", "evolve", "--zoo", str(quick_zoo), "--runs", str(tmp_path / "runs"), "--quiet", "--iters", "1"]
    cases = [
        (["--models", "add", "nope"], "no model 'nope': neither"),
        (["--models", "add", "nope"], "a model folder (the zoo at"),
        (["--models", "add", "--method", "slerp"], "invalid choice"),
        (["--models", "add", "--tasks", "juggling"], "unknown task 'juggling'"),
        (["--models", "add", "--task-weights", "1", "2"], "--task-weights: give 1 (one per --tasks task"),
        (["--models", "add", "sort", "--r", "2"], "--r repeats DFS's layer list: it applies to --method dfs, not ties"),
        (["--models", "add", "sort", "--method", "dfs", "--base", "base"], "has no base model: leave --base out"),
        (["--resume", "missing-run"], "no run 'missing-run'"),
        (["--resume", "x", "--trust-pickle"], "no run 'x'"),
    ]
    for extra, message in cases:
        try:
            code = main([*base, *extra])
        except SystemExit as exit_:  # argparse rejects invalid choices itself
            code = exit_.code
        captured = capsys.readouterr()
        assert code == 2, extra
        assert message in captured.err.replace("\n", " "), (extra, captured.err)
    # no zoo where --zoo (or its default) points: that flag is named, not --base, the first model looked up in it
    nowhere = tmp_path / "no-zoo"
    assert main(["merge", "evolve", "--zoo", str(nowhere), "--models", "add", "sort", "--runs", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"--zoo {nowhere}: no such folder" in err and "--base" not in err
    (tmp_path / "r.yaml").write_text("merge_method: linear\nmodels:\n  - model: add\n    parameters: {weight: 1}\n")
    assert main(["merge", "apply", str(tmp_path / "r.yaml"), "--zoo", str(nowhere), "--out", str(tmp_path / "o")]) == 2
    assert f"--zoo {nowhere}: no such folder" in capsys.readouterr().err
    # models given as folders of their own: the one missing is named, whatever --zoo is
    gone = tmp_path / "models" / "gone"
    assert main(["merge", "evolve", "--zoo", str(nowhere), "--models", str(quick_zoo / "add"), str(gone),
                 "--method", "dfs", "--tasks", "add", "--runs", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"--models: no model '{gone}'" in err and "--zoo" not in err, err
    (tmp_path / "bad.yaml").write_text("merge_method: frobnicate\nmodels:\n  - model: add\n")
    assert main(["merge", "apply", str(tmp_path / "bad.yaml"), "--zoo", str(quick_zoo), "--out",
                 str(tmp_path / "o")]) == 2
    assert "frobnicate" in capsys.readouterr().err
    # models of another architecture: the error names the tensor
    from workbench.lm.zoo import ZooConfig, build_zoo

    other = build_zoo(tmp_path / "other", ZooConfig.quick(tasks=("add",), hidden=48, heads=2))
    code = main([*base, "--models", "add", str(other / "add"), "--tasks", "add"])
    assert code == 2 and "tensor model." in capsys.readouterr().err
    # a damaged checkpoint (one NaN entry): said as it loads, naming model and tensor (DARE's L1 rescale made a
    # whole tensor NaN of it, every other method a merged model with NaN in it, without a word)
    import shutil

    from safetensors.torch import load_file, save_file

    damaged = tmp_path / "damaged"
    shutil.copytree(quick_zoo / "sort", damaged)
    weights = load_file(damaged / "model.safetensors")
    name = next(k for k, v in weights.items() if v.ndim == 2)
    weights[name][0, 1] = float("nan")
    save_file(weights, damaged / "model.safetensors")
    said = f"its tensor {name} holds 1 NaN or inf value(s) of {weights[name].numel()} (a damaged checkpoint?)"
    assert main([*base, "--models", "add", str(damaged), "--method", "dare_linear"]) == 2
    err = capsys.readouterr().err
    assert said in err and err.count("error:") == 1, err  # (after the quick zoo's note)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # no run folder made
    (tmp_path / "d.yaml").write_text(f"merge_method: dare_linear\nbase_model: base\nmodels:\n  - model: add\n"
                                     f"    parameters: {{weight: 0.5, density: 0.5}}\n  - model: {damaged}\n"
                                     f"    parameters: {{weight: 0.5, density: 0.5}}\n")
    assert main(["merge", "apply", str(tmp_path / "d.yaml"), "--zoo", str(quick_zoo), "--out",
                 str(tmp_path / "o")]) == 2
    assert said in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_resume_refuses_another_kind_and_contradicting_flags(tmp_path, quick_zoo, capsys):
    from workbench.asal.driver import SearchConfig, run_search
    from workbench.asal.evaluate import EvalConfig

    store = RunStore(tmp_path)
    stops = iter([False, True])
    run = evolve(_cfg(quick_zoo, method="ties"), store, should_stop=lambda: next(stops))
    search = run_search(SearchConfig(kind="openended", eval=EvalConfig("boids", "pixels", steps=10, size=32, frames=2),
                                     iters=1, pop=4), store)
    base = ["merge", "evolve", "--runs", str(tmp_path), "--quiet"]
    proc = _short(*base, "--resume", run.id, "--models", "add", "brackets", "--method", "ties", "--seed", "2",
                cwd=tmp_path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert "--models ['add', 'brackets'] ≠ the run's ['add', 'sort']" in err and "--seed 2 ≠ the run's 1" in err
    assert "--method" not in err  # given as the run has it
    assert main([*base, "--resume", search.id]) == 2
    assert f"is an openended run, not merge; resume it with workbench asal openended --resume {search.id}" in \
        capsys.readouterr().err.replace("\n", "")
    with pytest.raises(ValueError, match="sigma 0.5 ≠ the run's 0.2"):
        evolve(_cfg(quick_zoo, method="ties", sigma=0.5), store, resume=run.id)
    assert store.open(run.id).info["iterations"] == 1

    # the list shows merge runs with their own columns and fitness, higher is better
    assert main(["runs", "list", "--runs", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "merge evolutions" in out and "best fitness ↑" in out and "add, sort" in out and "ties" in out
    assert "ASAL searches" in out and "best loss ↓" in out


def test_dfs_stopped_and_resumed_equals_an_uninterrupted_run(tmp_path, quick_zoo):
    """CMA-ES with margin (CMAwM and its inner CMA) through a JSON + npz checkpoint, in the library."""
    whole = evolve(_cfg(quick_zoo, method="dfs", iters=3), RunStore(tmp_path / "whole"))
    store = RunStore(tmp_path / "stopped")
    stops = iter([False, True])
    stopped = evolve(_cfg(quick_zoo, method="dfs", iters=3), store, should_stop=lambda: next(stops))
    assert stopped.status == "stopped" and stopped.resume_command.startswith("workbench merge evolve --resume")
    done = evolve(None, store, resume=stopped.id)
    assert done.status == "done" and _evaluations(done) == _evaluations(whole)
    assert (done.path / "dfs.json").read_text() == (whole.path / "dfs.json").read_text()


def test_a_runs_zoo_is_read_from_anywhere_checked_and_found_again_where_it_moved(tmp_path, quick_zoo, capsys,
                                                                                  monkeypatch):
    """A relative --zoo is recorded as the folder it names: a resume from another folder read another zoo of the
    same name, or none. A resume checks the zoo by its zoo.json (another zoo under the recorded name is refused,
    not mixed into the run), takes a moved one as --zoo DIR and records it; a resume that fails leaves no entry."""
    import shutil

    from workbench.lm.zoo import ZooConfig, build_zoo

    here = tmp_path / "here"
    shutil.copytree(quick_zoo, here / "zoo")
    monkeypatch.chdir(here)
    store = RunStore(tmp_path / "runs")
    stops = iter([False, True])
    run = evolve(_cfg("zoo", method="ties", iters=3), store, should_stop=lambda: next(stops))
    assert run.info["config"]["zoo"] == str(here / "zoo") and run.info["status"] == "stopped"
    (here / "zoo").rename(tmp_path / "moved")
    build_zoo(here / "zoo", ZooConfig.quick(tasks=("add", "sort"), base_steps=2, expert_steps=2))  # another zoo
    monkeypatch.chdir(tmp_path)
    resume = ["merge", "evolve", "--resume", run.id, "--runs", "runs", "--quiet"]
    assert main(resume) == 2
    assert f"run {run.id}'s zoo {here / 'zoo'} holds another zoo now" in capsys.readouterr().err
    assert main([*resume, "--zoo", str(here / "zoo")]) == 2
    assert "is not run" in capsys.readouterr().err
    assert main([*resume, "--zoo", "moved", "--device", "cuda:7"]) == 2  # refused before the resume is recorded
    capsys.readouterr()
    assert "resumes" not in store.open(run.id).info
    # the failed resume lets go of the run, also while its error is kept (a notebook's cell, a page)
    failures = []
    for _ in range(2):
        with pytest.raises(ValueError) as failed:
            evolve(None, store, resume=run.id, device="cuda:7", zoo=tmp_path / "moved")
        failures.append(failed)
    assert "being resumed" not in str(failures[1].value)
    assert main([*resume, "--zoo", "moved"]) == 0
    capsys.readouterr()
    info = store.open(run.id).info
    assert info["config"]["zoo"] == str(tmp_path / "moved") and info["status"] == "done" and info["iterations"] == 3
    whole = evolve(_cfg(tmp_path / "moved", method="ties", iters=3), RunStore(tmp_path / "whole"))
    assert _evaluations(whole) == _evaluations(store.open(run.id))  # the run its own zoo makes, bit for bit


def test_the_runs_end_says_what_it_does_after_the_last_iteration(tmp_path, quick_zoo):
    """After the last iteration (the bar full) the run scores its sources and the merge on the test sets: said
    (on_phase, the CLI bar's text), where the bar sat at n/n with nothing left."""
    said: list[str] = []
    run = evolve(_cfg(quick_zoo, method="ties", iters=1), RunStore(tmp_path), on_phase=said.append)
    assert run.info["status"] == "done"
    assert said == ["test scores of base, add, sort and the merge …",
                    "the task vectors' norms, cosines and sign conflicts …"]


def test_the_merge_page_shows_a_run_stopped_before_its_first_iteration(tmp_path, quick_zoo):
    """A run in its first iteration (or stopped or killed there) has no figure: the page was a traceback (Panel
    refused tab 0 of no tabs), on /merge too where that run is the newest. Now a note, the run's line above it."""
    import panel as pn

    from workbench.dashboards.merge import NO_FIGURES, MergeModel, merge_page

    run = evolve(_cfg(quick_zoo, method="ties"), RunStore(tmp_path), should_stop=lambda: True)
    assert run.info["status"] == "stopped" and run.info["iterations"] == 0
    assert MergeModel(runs_dir=str(tmp_path), run_id=run.id).tabs() == []
    page = merge_page(str(tmp_path), standalone=True)
    main = pn.Column(*page.main)
    notes = [m for m in main.select(pn.pane.Markdown) if m.object == NO_FIGURES]
    assert len(notes) == 1 and notes[0].visible
    assert MergeModel(runs_dir=str(tmp_path), run_id=run.id).no_figures() == NO_FIGURES
    run.update(iterations=1)  # past its first iteration but no figure (its files lost): why the first one is missing
    why = MergeModel(runs_dir=str(tmp_path), run_id=run.id).no_figures()
    assert why.startswith("*No figures: ") and "<i>" not in why and "first iteration" not in why
    (tabs,) = main.select(pn.Tabs)
    assert not tabs.visible and len(tabs) == 0


def test_a_run_from_before_zoo_fingerprints_is_told_its_zoo_by_the_one_at_its_path(tmp_path, quick_zoo, capsys):
    """Runs made before runs recorded zoo_sha256 took any --zoo on a resume (another zoo's weights went into the
    run without a word). While the zoo at its recorded path is there, a zoo given is checked against it; the
    resume records the fingerprint, and a comparison groups such a run with newer runs of the same zoo."""
    import shutil

    from workbench.compare import compare_runs
    from workbench.lm.zoo import ZooConfig, build_zoo, zoo_fingerprint
    from workbench.runs import write_json

    store = RunStore(tmp_path / "runs")
    run = evolve(_cfg(quick_zoo, method="ties", iters=2, seed=1), store, should_stop=lambda: True)
    newer = evolve(_cfg(quick_zoo, method="ties", iters=2, seed=2), store)
    info = run.info
    del info["zoo_sha256"]  # as a run from before 2026-12-03 wrote it
    write_json(run.path / "run.json", info)
    assert len(compare_runs(store, [run.id, newer.id]).groups) == 1  # one setting: the zoo as it is now
    other = build_zoo(tmp_path / "other", ZooConfig.quick(tasks=("add", "sort"), base_steps=2, expert_steps=2))
    resume = ["merge", "evolve", "--resume", run.id, "--runs", str(store.root), "--quiet"]
    assert main([*resume, "--zoo", str(other)]) == 2
    assert f"--zoo {other} is not run {run.id}'s zoo" in capsys.readouterr().err
    assert store.open(run.id).info["config"]["zoo"] == str(quick_zoo) and "zoo_sha256" not in store.open(run.id).info
    copy = tmp_path / "copy"
    shutil.copytree(quick_zoo, copy)
    assert main([*resume, "--zoo", str(copy)]) == 0
    capsys.readouterr()
    info = store.open(run.id).info
    assert info["config"]["zoo"] == str(copy) and info["zoo_sha256"] == zoo_fingerprint(quick_zoo)


def test_a_zoo_given_with_nothing_to_check_it_by_is_recorded_only_once_it_loads_and_by_path(tmp_path, quick_zoo,
                                                                                         capsys):
    """A run from before zoo fingerprints whose zoo is gone: a zoo given is taken as given (nothing to check it by),
    recorded only once its models loaded (one without the run's models recorded nothing: the next resume was told
    the wrong zoo was the run's), and by path alone (its fingerprint would lock the run onto it)."""
    import shutil

    from workbench.lm.zoo import ZooConfig, build_zoo
    from workbench.runs import write_json

    gone = tmp_path / "gone"
    shutil.copytree(quick_zoo, gone)
    store = RunStore(tmp_path / "runs")
    run = evolve(_cfg(gone, method="ties", iters=2), store, should_stop=lambda: True)
    info = run.info
    del info["zoo_sha256"]  # as a run from before 2026-12-03 wrote it
    write_json(run.path / "run.json", info)
    shutil.rmtree(gone)
    wrong = build_zoo(tmp_path / "wrong", ZooConfig.quick(tasks=("brackets",), base_steps=2, expert_steps=2))
    resume = ["merge", "evolve", "--resume", run.id, "--runs", str(store.root), "--quiet"]
    assert main([*resume, "--zoo", str(wrong)]) == 2  # its models are not the run's: refused as they load
    assert "add" in capsys.readouterr().err
    assert store.open(run.id).info["config"]["zoo"] == str(gone)  # nothing recorded
    assert main([*resume, "--zoo", str(quick_zoo)]) == 0
    capsys.readouterr()
    info = store.open(run.id).info
    assert info["config"]["zoo"] == str(quick_zoo) and "zoo_sha256" not in info and info["status"] == "done"
