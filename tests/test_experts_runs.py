"""`workbench experts …` on the quick zoo, in processes of their own: expert training runs (SVF and LoRA) with a
SIGKILL and a bit-identical resume, the adaptation run with every strategy, reports, and every bad input (one
`error:` line, exit 2, nothing written, nothing already written lost)."""

import json
import os
import stat
import warnings

import numpy as np
import pytest
import torch
from forked import cli as _short
from procs import cli, kill_after, run_command

from workbench.cli import main
from workbench.runs import CLAIM_FILE, Run, RunError, RunStore

TRAIN = ["--batch", "4", "--val-every", "3", "--val-n", "6", "--n-test", "6", "--quiet"]


@pytest.fixture(autouse=True)
def svd_cache(tmp_path, monkeypatch):
    """SVD caches in the test's folder (the processes started here inherit it)."""
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))


def _run(*args, cwd, timeout=300, short=False) -> dict:
    """A command's JSON, the command run in a fresh process (short: forked, for commands whose output is all a
    test reads, not runs compared bit for bit with another process')."""
    proc = _short(*args, cwd=cwd, timeout=timeout) if short else cli(*args, cwd=cwd)
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return json.loads(out)


def _train(zoo, task, runs, *extra, seed=0):
    """An expert run made in this process (the library call the command makes)."""
    from workbench.experts.run import ExpertRunConfig, train_expert

    cfg = ExpertRunConfig(model=str(zoo / "base"), task=task, iters=2, batch=4, val_every=1, val_n=4, n_test=4,
                          seed=seed, **dict(extra))
    return train_expert(cfg, RunStore(runs))


def _rows(run):
    """The metrics rows without timings, NaN (a step without validation) as None so that rows compare."""
    return [{k: None if v != v else v for k, v in r.items() if k != "seconds"}
            for r in run.read_table("metrics").to_pylist()]


# --- experts train -------------------------------------------------------------------------------------------

def test_train_run_and_resume_after_sigkill_is_bit_identical(tmp_path, quick_zoo):
    from safetensors.torch import load_file

    from workbench.experts import load_expert

    # the eos counts: the quick zoo's base answers with it at once, and the answers alone give no gradient
    args = ["experts", "train", "--model", str(quick_zoo / "base"), "--task", "sort", "--iters", "12", "--seed", "3",
            "--stop-token", "count", *TRAIN]
    whole = _run(*args, "--runs", "whole", cwd=tmp_path)
    assert whole["status"] == "done" and whole["iterations"] == 12
    a = RunStore(tmp_path / "whole").open(whole["id"])
    info = a.info
    assert info["kind"] == "experts" and info["metric"] == "val_accuracy" and info["better"] == "higher"
    assert info["substrate"] == "sort" and info["fm"] == "svf"
    # SVF trains Σ min(out, in) numbers: 2 layers × (gate, up, down) of the quick zoo's 32 <-> 64 Llama
    assert info["n_params"] == whole["n_params"] == 6 * 32
    files = {p.name for p in a.path.iterdir()}
    assert {"run.json", "metrics.parquet", "checkpoint.json", "expert.safetensors", "scores.json"} <= files
    rows = _rows(a)
    assert len(rows) == 12 and {"reward", "loss", "kl", "val_accuracy", "best_val_accuracy", "z_mean"} <= set(rows[0])
    validated = [r for r in rows if r["val_accuracy"] is not None]
    assert [r["iteration"] for r in validated] == [0, 3, 6, 9, 11]  # every 3rd, and the last
    assert all(r["reward"] * 4 in (-4, -2, 0, 2, 4) for r in rows)  # the mean of four ±1 rewards
    assert -info["best_loss"] == rows[-1]["best_val_accuracy"] == max(r["val_accuracy"] for r in validated)
    params, meta = load_expert(a.path / "expert.safetensors")
    assert meta["task"] == "sort" and meta["model_key"] == info["model_key"] and meta["adapter"] == "svf"
    assert meta["best_val_accuracy"] == whole["best_val_accuracy"] and len(params) == 6
    scores = json.loads((a.path / "scores.json").read_text())
    assert set(scores) >= {"base", "expert", "n_params"} and scores["expert"] == whole["test_scores"]["expert"]
    assert scores["gain"] == scores["expert"] - scores["base"] and scores["beats_base"] == (scores["gain"] > 0)
    (row,) = RunStore(tmp_path / "whole").list()
    assert row["columns"] == ["substrate", "fm"] and row["best"] == whole["best_val_accuracy"]

    killed = cli(*args, "--runs", "killed", cwd=tmp_path)
    store = RunStore(tmp_path / "killed")
    row = kill_after(killed, store, 3)
    assert 3 <= row["iterations"] < 12, "the kill should land mid-run"
    assert row["status"] == "interrupted"
    assert row["resume_command"] == f"workbench experts train --resume {row['id']} --runs {store.root}"
    resumed = run_command(row["resume_command"] + " --quiet", cwd=tmp_path)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert json.loads(out)["status"] == "done"
    b = store.open(row["id"])
    assert _rows(a) == _rows(b)
    ea, eb = load_file(a.path / "expert.safetensors"), load_file(b.path / "expert.safetensors")
    assert all(torch.equal(ea[n], eb[n]) for n in ea)
    sa, sb = (json.loads((r.path / "scores.json").read_text()) for r in (a, b))
    assert sa == sb
    assert len(b.info["resumes"]) == 1


def test_model_and_expert_paths_are_recorded_absolute_and_resumed_however_written(tmp_path, quick_zoo, monkeypatch):
    """An expert or adapt run records its model folder and expert files as the absolute paths they are (as typed,
    `--model zoo/base` failed to resume from any other folder); a resume may name them relative again, and a run
    id among --experts stays an id. Another folder is still another model."""
    from workbench.experts.adapt import AdaptConfig
    from workbench.experts.run import ExpertRunConfig, train_expert
    from workbench.runs import resume_conflicts

    (tmp_path / "e.safetensors").write_bytes(b"")
    monkeypatch.chdir(quick_zoo.parent)
    relative = str((quick_zoo / "base").relative_to(quick_zoo.parent))
    cfg = ExpertRunConfig(model=relative, task="sort", iters=1, batch=2, val_every=1, val_n=2, n_test=2)
    assert cfg.model == str(quick_zoo / "base")
    assert ExpertRunConfig(model="smollm2", task="sort").model == "smollm2"  # a name, not a path
    adapt = AdaptConfig(model=relative, experts=[str(tmp_path / "e.safetensors"), "20261205-000000-experts-sort-s0"])
    assert adapt.model == str(quick_zoo / "base") and adapt.experts[1] == "20261205-000000-experts-sort-s0"
    run = train_expert(cfg, RunStore(tmp_path / "runs"))
    assert run.info["config"]["model"] == str(quick_zoo / "base")
    monkeypatch.chdir(quick_zoo)
    assert resume_conflicts(run.info, {"model": "base/"}) == []
    assert resume_conflicts(run.info, {"model": "add"}) == [("model", f"'add' ≠ the run's '{quick_zoo / 'base'}'")]


def test_a_resume_takes_the_runs_model_from_where_it_was_moved_checked_by_its_weights(tmp_path, quick_zoo,
                                                                                       expert_runs, capsys):
    """A store moved to another machine, or a model folder moved: `experts train|adapt --resume ID --model PATH`
    goes on with the run's model at PATH, refused (one line naming --model, nothing recorded) where PATH holds
    another model, and records PATH so that later resumes, pages and reports find it."""
    import shutil

    from workbench.experts.adapt import AdaptConfig, adapt
    from workbench.experts.run import ExpertRunConfig, expert_file, train_expert

    model = tmp_path / "base"
    shutil.copytree(quick_zoo / "base", model)
    store = RunStore(tmp_path / "runs")
    cfg = ExpertRunConfig(model=str(model), task="sort", iters=2, batch=4, val_every=1, val_n=4, n_test=4)
    trained = train_expert(cfg, store, should_stop=lambda: True)
    files = [str(expert_file(store.open(expert_runs[t]))) for t in ("add", "sort")]
    adapted = adapt(AdaptConfig(model=str(model), experts=files, n=4, strategies=["base", "experts"]), store,
                    should_stop=lambda: True)
    assert trained.info["status"] == adapted.info["status"] == "stopped"
    # a run from before runs recorded their model's key: no --model to another place while its own is still there
    key = trained.info["model_key"]
    trained.update(model_key=None)
    assert main(["experts", "train", "--resume", trained.id, "--runs", str(store.root), "--quiet", "--model",
                 str(quick_zoo / "add")]) == 2
    assert f"run {trained.id}'s model is still at {model}" in capsys.readouterr().err
    trained.update(model_key=key)
    moved = tmp_path / "elsewhere" / "base"
    moved.parent.mkdir()
    shutil.move(model, moved)
    for command, run in (("train", trained), ("adapt", adapted)):
        args = ["experts", command, "--resume", run.id, "--runs", str(store.root), "--quiet"]
        assert main(args) == 2  # not there: where it was, and the flag that says where it is now
        said = capsys.readouterr().err
        assert f"run {run.id}'s model {model} is not there" in said and \
            f"`workbench experts {command} --resume {run.id} --runs {store.root} --model PATH`" in said
        assert main([*args, "--model", str(quick_zoo / "add")]) == 2  # another model (the zoo's add expert)
        said = capsys.readouterr().err
        assert f"--model {quick_zoo / 'add'} is not run {run.id}'s model (its weights differ" in said and \
            len(said.strip().splitlines()) == 1
        assert store.open(run.id).info["config"]["model"] == str(model)
        assert main([*args, "--model", str(moved)]) == 0
        info = store.open(run.id).info
        assert info["status"] == "done" and info["config"]["model"] == str(moved)
        again = tmp_path / "again" / command  # finished: its model's new place checked and recorded all the same
        shutil.copytree(moved, again)
        resumes = info.get("resumes", [])
        assert main([*args, "--model", str(again)]) == 0
        info = store.open(run.id).info
        assert info["config"]["model"] == str(again) and info.get("resumes", []) == resumes  # and no resume
        assert main([*args, "--model", str(quick_zoo / "add")]) == 2  # (and another model refused)
        assert "its weights differ" in capsys.readouterr().err
    assert main(["experts", "report", adapted.id, "--runs", str(store.root)]) == 0


def test_a_run_made_before_stop_token_resumes_as_it_trained(tmp_path, quick_zoo, capsys):
    """Runs made before --stop-token counted the eos in log π; one resumed (also with the new default spelled
    out) goes on counting it and ends as an uninterrupted run that counted it, unlike one that drops it."""
    from workbench.experts.run import ExpertRunConfig, train_expert

    def config(stop_token):
        return ExpertRunConfig(model=str(quick_zoo / "base"), task="sort", iters=3, batch=4, val_every=1, val_n=4,
                               n_test=4, seed=1, stop_token=stop_token)

    counted = train_expert(config("count"), RunStore(tmp_path / "count"))
    dropped = train_expert(config("drop"), RunStore(tmp_path / "drop"))
    assert _rows(counted) != _rows(dropped)  # empty answers: only the eos moves the expert
    store = RunStore(tmp_path / "old")
    calls = []
    old = train_expert(config("count"), store, should_stop=lambda: len(calls) > 0,
                       on_iteration=lambda *a: calls.append(a))
    assert old.info["status"] == "stopped" and old.info["iterations"] == 1
    info = json.loads((old.path / "run.json").read_text())  # as a run made before the setting
    del info["config"]["stop_token"]
    (old.path / "run.json").write_text(json.dumps(info))
    ckpt = json.loads((old.path / "checkpoint.json").read_text())
    assert ckpt["state"]["trainer"]["config"].pop("stop_token") == "count"
    (old.path / "checkpoint.json").write_text(json.dumps(ckpt))
    done = train_expert(None, store, resume=old.id, given={"stop_token": "drop"})
    assert done.info["status"] == "done" and _rows(done) == _rows(counted)
    # compared and reported with the runs that counted it, apart from the one that dropped it
    from workbench.compare import flat_settings
    from workbench.experts.report import report

    assert flat_settings(done.info)["config.stop_token"] == "count"
    # the CLI's flags are typed requests: the new default typed on an old run is refused, its own rule accepted
    resume = ["experts", "train", "--resume", done.id, "--runs", str(store.root), "--quiet"]
    _refused(capsys, [*resume, "--stop-token", "drop"], "--stop-token 'drop' ≠ what the run did, made before this "
             "setting existed ('count')", store.root)
    assert main([*resume, "--stop-token", "count"]) == 0
    # more --iters for a finished expert: refused, saying why (a search's run can go on; this one cannot)
    _refused(capsys, [*resume, "--iters", str(done.info["config"]["iters"] + 2)],
             "it does not extend or change a finished one (its last step is validated and may be the expert it "
             "keeps: a run of another total validates another step)", store.root)
    # the resumed old run is the same computation as the one that counted (same settings and seed): counted once
    out = report([counted, dropped, done])
    assert {(e["stop_token"], e["expert"]["runs"]) for e in out["experts"]} == {("count", 1), ("drop", 1)}
    assert out["repeats"] == {done.id: counted.id}
    with pytest.raises(RunError, match=f"run {counted.id} is named more than once"):
        report([counted, counted])
    # an expert of another model (its key) is grouped apart, named by its model (two bases were averaged)
    import shutil

    shutil.copytree(counted.path, counted.path.parent / f"{counted.id}-m")
    info = json.loads((counted.path.parent / f"{counted.id}-m" / "run.json").read_text())
    info.update(id=f"{counted.id}-m", model_key="another model's")
    info["config"]["model"] = "elsewhere/base"
    (counted.path.parent / f"{counted.id}-m" / "run.json").write_text(json.dumps(info))
    other = RunStore(tmp_path / "count").open(f"{counted.id}-m")
    out = report([counted, other])
    assert out["repeats"] == {} and {e["model"] for e in out["experts"]} == {"elsewhere/base", str(quick_zoo / "base")}
    # adapt runs made before: CEM's tie-break counted the eos too
    from workbench.experts.adapt import AdaptConfig, read_config

    assert AdaptConfig(model="m", experts=["e"]).stop_token == "drop"
    # a target outside --tasks is refused only where few-shot runs: other strategies never test on it
    assert AdaptConfig(model="m", experts=["e"], tasks=["add"], target="sort", strategies=["base"]).target == "sort"
    with pytest.raises(ValueError, match="--tasks must include the --target task 'sort'"):
        AdaptConfig(model="m", experts=["e"], tasks=["add"], target="sort", strategies=["base", "few-shot"])
    assert read_config({"model": "m", "experts": ["e"]}).stop_token == "count"


def test_lora_adapter_trains_the_same_matrices_with_peft(tmp_path, quick_zoo):
    from peft import PeftModel

    from workbench.experts import SVFModel
    from workbench.experts.lora import LoRAModel
    from workbench.lm.models import load_model

    proc = _short("experts", "train", "--model", str(quick_zoo / "base"), "--task", "add", "--adapter", "lora",
                  "--rank", "2", "--iters", "3", "--runs", "runs", *TRAIN, cwd=tmp_path)
    text, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    out = json.loads(text)
    # a model of a smoke-test zoo: said before the run, with the real zoo's model to give instead
    assert "experts of its models mean nothing" in err and "--model data/zoo/base" in err
    run = RunStore(tmp_path / "runs").open(out["id"])
    assert run.info["fm"] == "lora" and out["status"] == "done"
    assert out["id"].endswith("-experts-add-lora-s0")  # told from an SVF expert of the same task and seed by its id
    # LoRA trains r·(in + out) per matrix: 6 matrices of 32 <-> 64 at rank 2
    assert out["n_params"] == 6 * 2 * (32 + 64)
    assert SVFModel(load_model(str(quick_zoo / "base"), device="cpu")[0], cache=False).n_params == 6 * 32
    folder = run.path / "lora"
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["r"] == 2 and len(config["target_modules"]) == 6
    assert all("mlp" in m for m in config["target_modules"])
    assert config["target_modules"] == sorted(config["target_modules"])  # peft's set order changed per process
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["task"] == "add" and meta["rank"] == 2
    # peft reads the adapter back: its model gives the logits of our LoRAModel with the best weights
    ids = torch.tensor([[1, 5, 6, 7, 8]])
    ours = LoRAModel(load_model(str(quick_zoo / "base"), device="cpu")[0], rank=2)
    state = run.load_checkpoint()["trainer"]  # the trainer's best weights
    ours.apply({n: torch.from_numpy(np.array(v)) for n, v in state["best"]["params"].items()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers' deprecation note on a peft call
        theirs = PeftModel.from_pretrained(load_model(str(quick_zoo / "base"), device="cpu")[0], folder)
    with torch.no_grad():
        torch.testing.assert_close(theirs(input_ids=ids).logits, ours.model(input_ids=ids).logits, rtol=0, atol=1e-6)


# --- experts adapt and report ----------------------------------------------------------------------------------

@pytest.fixture
def expert_runs(tmp_path, quick_zoo):
    runs = tmp_path / "runs"
    return {t: _train(quick_zoo, t, runs).id for t in ("add", "sort", "classify")}


def test_adapt_runs_every_strategy_and_report(tmp_path, quick_zoo, expert_runs):
    runs = tmp_path / "runs"
    ids = list(expert_runs.values())
    out = _run("experts", "adapt", "--model", str(quick_zoo / "base"), "--experts", *ids, "--target", "reverse",
               "--shots", "2", "3", "--cem-iters", "2", "--pop", "10", "--n", "5", "--alpha-per", "matrix", "--runs",
               str(runs), "--quiet", cwd=tmp_path, short=True)
    assert out["status"] == "done"
    run = RunStore(runs).open(out["id"])
    info = run.info
    assert info["kind"] == "adapt" and info["metric"] == "accuracy" and info["substrate"] == "reverse"
    assert info["strategies"] == ["base", "experts", "prompt", "classifier", "few-shot"]
    assert info["iterations"] == 1 + 2 + 1 + 1 + 2 * 2
    scores = json.loads((run.path / "scores.json").read_text())
    assert scores["tasks"] == ["add", "sort", "reverse"]
    assert list(scores["strategies"]) == ["base", "expert:add", "expert:sort", "oracle", "prompt", "classifier",
                                          "few-shot:2", "few-shot:3"]
    for s in ("base", "expert:add", "oracle", "prompt", "classifier"):
        assert set(scores["strategies"][s]) == {"add", "sort", "reverse"}
    assert set(scores["strategies"]["few-shot:2"]) == {"reverse"}
    # what the command prints: the means over the whole mixed set, and each strategy on the target apart (a
    # few-shot mixture's target score printed beside the others' means read as a gain it was not)
    means = {s: np.mean([r[t] for t in ("add", "sort", "reverse")]) for s, r in scores["strategies"].items()
             if "add" in r}
    assert out["test_scores"]["mean"] == pytest.approx(means) and "few-shot:2" not in out["test_scores"]["mean"]
    assert out["test_scores"]["on_target"] == {s: r["reverse"] for s, r in scores["strategies"].items()}
    # the oracle takes each task's own expert, the base where there is none
    oracle, st = scores["strategies"]["oracle"], scores["strategies"]
    assert oracle == {"add": st["expert:add"]["add"], "sort": st["expert:sort"]["sort"],
                      "reverse": st["base"]["reverse"]}
    for d in ("prompt", "classifier"):
        confusion = scores["dispatch"][d]["confusion"]
        assert all(sum(c.values()) == 5 for c in confusion.values())
    alpha = np.array(scores["few_shot"]["3"]["alpha"])
    assert alpha.shape == (2, 6) and alpha.min() >= 0 and alpha.max() <= 1  # per expert per matrix, CEM's bounds
    table = run.read_table("scores").to_pylist()
    assert len(table) == 6 * 3 + 2 and {"strategy", "task", "accuracy", "n", "seed"} <= set(table[0])
    inputs = sorted(p.name for p in (run.path / "inputs").iterdir())
    assert inputs == ["expert-0-add.safetensors", "expert-1-sort.safetensors", "expert-2-classify.safetensors"]

    report = _run("experts", "report", *ids, out["id"], "--runs", str(runs), "--json", cwd=tmp_path, short=True)
    assert {e["task"] for e in report["experts"]} == {"add", "sort", "classify"}
    assert report["adapt"]["runs"] == 1 and report["adapt"]["per_task"]["oracle"]["add"]["runs"] == 1
    assert set(report["adapt"]["dispatch"]) == {"prompt", "classifier"}
    proc = _short("experts", "report", out["id"], "--runs", str(runs), cwd=tmp_path)
    text, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "adaptation: test accuracy" in text, err
    assert "±" not in text.split("adaptation: test accuracy")[1].split("\n", 1)[1]  # one run: no spread to show

    mixed = _run("experts", "eval", "--model", str(quick_zoo / "base"), "--experts", ids[0], ids[1], "--alpha", "0.3",
                 "0.7", "--tasks", "add", "sort", "--n", "4", "--runs", str(runs), cwd=tmp_path, short=True)
    assert mixed["alpha"] == [[0.3], [0.7]] and set(mixed["accuracy"]) == {"add", "sort"}


def test_dispatch_answers_a_class_without_an_expert_with_the_base(tmp_path, quick_zoo, expert_runs):
    """model-evolution.md: a prompt classified as a task without an expert (or as nothing) is answered by the base
    weights, not by some expert (the first, say). The quick zoo's base names no class ("other": it answers with
    an eos at once), so every prompt goes to the base, which the model holds after the dispatch. (Classes with
    an expert, then without: the next test.)"""
    from workbench.experts import SVFModel
    from workbench.experts.adapt import Scorer, read_experts
    from workbench.experts.run import expert_file
    from workbench.lm.zoo import load_zoo

    store = RunStore(tmp_path / "runs")
    experts = read_experts([expert_file(store.open(expert_runs[t])) for t in ("add", "sort")], None)
    zoo = load_zoo(quick_zoo)
    svf = SVFModel(zoo.model("base", device="cpu"), zoo.tokenizer(), cache_dir=tmp_path / "svf")
    scorer = Scorer(svf, experts, ["add", "sort", "reverse"], n=3, test_seed=0)
    _, dispatch = scorer.dispatch(None, "instruction")
    named = {label for row in dispatch["confusion"].values() for label in row}
    assert named and not named & set(experts.task_experts)
    assert svf.applied == "base"


def test_dispatch_goes_back_to_the_base_after_an_expert(tmp_path, quick_zoo, expert_runs):
    """The second pass with labels as a dispatcher might name them: a class with an expert, then one without
    ("reverse", "other"), then the expert again. The test sets' answers are the base's own greedy answers, so a
    prompt is right exactly when the weights answering it give the base's answer: the expert's weights change
    some (checked), and a prompt whose class has no expert must get the base's, whatever was applied before."""
    from workbench.experts import SVFModel
    from workbench.experts.adapt import Scorer, read_experts
    from workbench.experts.run import expert_file
    from workbench.experts.train import format_examples, rollout
    from workbench.lm.tasks import get_task
    from workbench.lm.zoo import load_zoo

    store = RunStore(tmp_path / "runs")
    experts = read_experts([expert_file(store.open(expert_runs[t])) for t in ("add", "sort")], None)
    zoo = load_zoo(quick_zoo)
    model = zoo.model("base", device="cpu")
    with torch.no_grad():  # the quick base ends every answer at once, whatever the weights SVF scales: random ones
        gen = torch.Generator().manual_seed(0)
        for weights in model.parameters():
            weights.copy_(torch.randn(weights.shape, generator=gen))
    svf = SVFModel(model, zoo.tokenizer(), cache_dir=tmp_path / "svf")
    scorer = Scorer(svf, experts, ["add", "sort", "reverse"], n=4, test_seed=0)

    def answers(params, task, examples):
        svf.apply(params)
        shown = format_examples(scorer.tok, task, examples, scorer.prompt_format)
        return rollout(svf.model, scorer.tok, shown, get_task(task).max_new_tokens, 8).texts

    for task, examples in scorer.test.items():  # the base's answers become the right ones
        scorer.test[task] = [(p, a) for (p, _), a in zip(examples, answers(None, task, examples), strict=True)]
    # an add expert that scales the singular values unevenly (an even scaling is undone by the rescale)
    experts.params[0] = {k: 3 * torch.randn(v.shape, generator=gen) for k, v in experts.params[0].items()}
    add_expert = experts.task_experts["add"]
    same_as_base = {task: [a == b for (_, a), b in zip(ex, answers(add_expert, task, ex), strict=True)]
                    for task, ex in scorer.test.items()}
    assert not all(all(v) for v in same_as_base.values())  # the add expert answers differently somewhere
    labels = ["add", "reverse", "add", "other", "reverse", "add", "reverse", "add", "add", "other", "add", "reverse"]
    flat = scorer.flat_test()
    assert [t for t, _, _ in flat] == ["add"] * 4 + ["sort"] * 4 + ["reverse"] * 4
    right = scorer.answer_by_label(labels)
    position = {task: 0 for task in scorer.tasks}
    for (task, _, _), label, ok in zip(flat, labels, right, strict=True):
        k, position[task] = position[task], position[task] + 1
        assert ok == (same_as_base[task][k] if label == "add" else True), (task, k, label)
    assert svf.applied == "base"  # the last class named ("other") has no expert


def test_adapt_stopped_and_resumed_equals_an_uninterrupted_run(tmp_path, quick_zoo, expert_runs):
    from workbench.experts.adapt import AdaptConfig, adapt
    from workbench.experts.run import expert_file

    store = RunStore(tmp_path / "runs")
    files = [str(expert_file(store.open(expert_runs[t]))) for t in ("add", "sort")]
    cfg = AdaptConfig(model=str(quick_zoo / "base"), experts=files, target="recall", shots=[2], cem_iters=3, pop=10,
                      n=4, seed=5, strategies=["base", "few-shot"])
    whole = adapt(cfg, RunStore(tmp_path / "whole"))
    stops = iter([False, False, True])  # stop inside CEM: the live CEM goes through the checkpoint
    part = adapt(cfg, RunStore(tmp_path / "part"), should_stop=lambda: next(stops, False))
    assert part.info["status"] == "stopped" and part.info["iterations"] == 2
    # CEM as the spec starts it: mean 1/K, std 0.5, the run's population, a seed of its own per k (the quick zoo
    # answers no shot right: zero fitness throughout)
    from workbench.experts import CEM

    replica = CEM(np.full(2, 1 / 2), 0.5, pop=10, seed=5 * 1000 + 2)
    replica.tell(replica.ask(), np.zeros(10), tie_break=np.zeros(10))
    live = part.load_checkpoint()["cem"]
    assert live.generation == 1
    np.testing.assert_array_equal(live.mean, replica.mean)
    np.testing.assert_array_equal(live.std, replica.std)
    done = adapt(None, RunStore(tmp_path / "part"), resume=part.id)
    assert done.info["status"] == "done"
    sw, sp = (json.loads((r.path / "scores.json").read_text()) for r in (whole, done))
    assert sw == sp  # all of it: the experts' files as given too (the resumed run named its own copies)
    assert [e["file"] for e in sp["experts"]] == files
    assert _rows(whole) == _rows(done)
    assert sw["few_shot"]["2"]["shots_accuracy"] == 0.0
    np.testing.assert_array_equal(np.ravel(sw["few_shot"]["2"]["alpha"]), 1 / 2)  # every generation ties: member 0


def test_an_adapt_runs_expert_copies_are_made_before_its_run_json(tmp_path, quick_zoo, expert_runs, monkeypatch):
    """The copies of the experts were made after run.json: a kill between the two left a run that `runs list`
    offered to resume and whose resume was refused, for good. Its first run.json records them, made by then; and a
    folder a kill left with its copies alone is named by `runs list` (nothing to resume there)."""
    import workbench.runs as runs_module
    from workbench.experts.adapt import AdaptConfig, adapt
    from workbench.experts.run import expert_file

    store = RunStore(tmp_path / "runs")
    files = [str(expert_file(store.open(expert_runs[t]))) for t in ("add", "sort")]
    first, write_json = {}, runs_module.write_json

    def keep_first(path, data):
        if path.name == "run.json" and data.get("kind") == "adapt":
            first.setdefault(path.parent.name, (dict(data), sorted(p.name for p in (path.parent / "inputs").iterdir())
                                                if (path.parent / "inputs").is_dir() else []))
        return write_json(path, data)

    monkeypatch.setattr(runs_module, "write_json", keep_first)
    run = adapt(AdaptConfig(model=str(quick_zoo / "base"), experts=files, n=2, strategies=["base"]),
                RunStore(tmp_path / "adapt"))
    data, copies = first[run.id]
    assert [rec["task"] for rec in data["expert_inputs"]] == ["add", "sort"]
    assert copies == ["expert-0-add.safetensors", "expert-1-sort.safetensors"]
    # a kill before run.json: the folder holds inputs/ only, which runs list names (a minute old: not one in the
    # making)
    left = tmp_path / "adapt" / "20261205-000000-adapt-mixed-s0"
    (left / "inputs").mkdir(parents=True)
    (left / "inputs" / ".expert-0-add.abcdefgh.safetensors").write_bytes(b"")
    os.utime(left / "inputs", (0, 0))
    os.utime(left, (0, 0))
    # killed before its inputs were copied: a folder named as a run that holds only the claim its run function
    # took (it was passed over without a word); one whose claim is held is a run being made now, and an empty
    # folder of another name (a page's figures to come) is none
    empty, held, other = (tmp_path / "adapt" / name for name in ("20261205-000001-adapt-mixed-s0",
                                                                 "20261205-000002-adapt-mixed-s0", "figures"))
    for folder in (empty, held, other):
        folder.mkdir()
    (empty / CLAIM_FILE).write_text("pid 1 on elsewhere\n")  # as a killed creator left it: nobody holds it
    making = Run(held)
    making.claim()
    for folder in (empty, held, other):
        os.utime(folder, (0, 0))
    assert RunStore(tmp_path / "adapt").unfinished() == [left.name, empty.name]
    proc = _short("runs", "list", "--runs", str(tmp_path / "adapt"))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert f"note: {left.name} holds only the inputs of a run killed as it was created (no run.json)" in err, err
    assert f"note: {empty.name} is the empty folder of a run killed as it was created (no run.json)" in err, err
    assert "figures" not in err and held.name not in err, err
    making.release()


# --- bad input -------------------------------------------------------------------------------------------------

def _refused(capsys, argv, message, runs) -> None:
    """One `error:` line naming the problem, exit 2, and the run store exactly as it was."""
    before = _snapshot(runs)
    capsys.readouterr()  # what the test printed before (a model saved for the case, …)
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, (argv, err)
    assert err.startswith("error:") and "\n" not in err, err
    assert message in err, (message, err)
    assert _snapshot(runs) == before


def _snapshot(root) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()} \
        if root.exists() else {}


def test_bad_input_is_one_error_and_writes_nothing(tmp_path, quick_zoo, expert_runs, capsys):
    from safetensors.torch import load_file

    from workbench.experts import load_expert, save_expert
    from workbench.experts.run import expert_file
    from workbench.lm.zoo import ZooConfig, build_zoo

    runs = tmp_path / "runs"
    store = RunStore(runs)
    base = str(quick_zoo / "base")
    add_file = expert_file(store.open(expert_runs["add"]))
    sort_id = expert_runs["sort"]
    train = ["experts", "train", "--runs", str(runs), "--quiet", "--iters", "1"]
    adapt = ["experts", "adapt", "--model", base, "--runs", str(runs), "--quiet", "--n", "2"]

    # a z of the wrong length: the error names the matrix and both lengths
    params, meta = load_expert(add_file)
    name = next(iter(params))
    short = tmp_path / "short.safetensors"
    save_expert(short, {**params, name: params[name][:-1]}, meta)
    _refused(capsys, [*adapt, "--experts", str(short), sort_id], f"matrix '{name}' has shape (31,)", runs)
    # an expert from another model: another architecture (the matrix is named) ...
    other = build_zoo(tmp_path / "other", ZooConfig.quick(tasks=("add",), hidden=48, heads=2))
    foreign = _train(other, "sort", tmp_path / "other-runs")
    _refused(capsys, [*adapt, "--experts", str(add_file), str(expert_file(foreign))],
             "'model.layers.0.mlp.gate_proj.weight' has shape (48,), this model needs (32,)", runs)
    # ... or the same shapes and other weights (the model key)
    _refused(capsys, [*adapt[:3], str(quick_zoo / "add"), *adapt[4:], "--experts", str(add_file), sort_id],
             "was trained on another model", runs)
    # a test set without the target: refused before anything loads (it failed after the whole CEM search)
    _refused(capsys, [*adapt, "--experts", str(add_file), sort_id, "--tasks", "add", "sort", "--target", "reverse"],
             "--tasks must include the --target task 'reverse'", runs)
    # α of the wrong shape
    _refused(capsys, ["experts", "eval", "--model", base, "--experts", str(add_file), sort_id, "--alpha", "1", "2",
                      "3", "--runs", str(runs), "--n", "2"], "--alpha has 3 values; 2 experts need 2", runs)
    # a negative α turns its expert around and the rescale blows the weights up (sort fell from 0.84 to 0); all 0
    # mixes nothing (the rescale divides by 0)
    for alpha, message in ((["1", "-1"], "--alpha takes mixing coefficients >= 0"),
                           (["0", "0"], "--alpha: the coefficients of a matrix are all 0")):
        _refused(capsys, ["experts", "eval", "--model", base, "--experts", str(add_file), sort_id, "--alpha", *alpha,
                          "--runs", str(runs), "--n", "2"], message, runs)
    # eval: the classifier is no task expert (it was listed in the output and never applied); --variant without
    # --alpha (ignored: one expert is applied as trained); a chat task without the chat format
    evaluate = ["experts", "eval", "--model", base, "--runs", str(runs), "--n", "2"]
    _refused(capsys, [*evaluate, "--experts", str(add_file), expert_runs["classify"], "--alpha", "1", "1"],
             "--experts: the classification expert dispatches prompts", runs)
    _refused(capsys, [*evaluate, "--experts", str(add_file), "--variant", "sigmoid"],
             "--variant says how --alpha mixes experts", runs)
    _refused(capsys, [*evaluate, "--tasks", "larger"], "larger is a task for chat models", runs)
    _refused(capsys, [*adapt, "--experts", str(add_file), sort_id, "--strategies", "base", "experts", "base"],
             "--strategies names 'base' twice; give each once", runs)
    _refused(capsys, [*adapt, "--experts", str(add_file), sort_id, "--tasks", "add", "add", "sort"],
             "--tasks names 'add' twice", runs)
    _refused(capsys, [*evaluate, "--tasks", "add", "add"], "--tasks names 'add' twice", runs)
    # a --target neither mixed for (no few-shot) nor tested (not among --tasks) went unused, silently
    _refused(capsys, [*adapt, "--experts", str(add_file), sort_id, "--target", "recall", "--tasks", "add", "sort",
                      "--strategies", "base"], "--target recall is read by few-shot mixing", runs)
    # ... and from the library alike (the refusal lived in the CLI only: a notebook's run went on without it)
    from workbench.experts.adapt import AdaptConfig
    from workbench.experts.adapt import adapt as adapt_run

    before = _snapshot(runs)
    cfg = AdaptConfig(model=base, experts=[str(add_file), str(expert_file(store.open(sort_id)))], target="recall",
                      tasks=["add", "sort"], strategies=["base"], n=2)
    with pytest.raises(ValueError, match="--target recall is read by few-shot mixing"):
        adapt_run(cfg, store)
    assert _snapshot(runs) == before
    # few-shot mixing of one task expert: every α the same weights, CEM's rollouts all of one model
    _refused(capsys, [*adapt, "--experts", str(add_file), "--target", "reverse", "--strategies", "few-shot"],
             "few-shot CEM mixes task experts, and one alone (add)", runs)
    # a model without MLP matrices (OPT names its feed-forward layers fc1 / fc2)
    from transformers import OPTConfig, OPTForCausalLM

    opt = tmp_path / "opt"
    OPTForCausalLM(OPTConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2,
                             max_position_embeddings=32, word_embed_proj_dim=16)).save_pretrained(opt)
    _refused(capsys, [*train, "--model", str(opt), "--task", "sort"], "no 2-D MLP weight matrices", runs)
    _refused(capsys, [*train, "--model", str(tmp_path / "nowhere"), "--task", "sort"], "not a model", runs)
    # flags the run would not read: a rank without LoRA, few-shot settings without a few-shot target
    _refused(capsys, [*train, "--model", base, "--task", "sort", "--rank", "8"],
             "--rank is the rank of a LoRA adapter: give --adapter lora too", runs)
    _refused(capsys, [*adapt, "--experts", str(add_file), sort_id, "--shots", "3", "--variant", "sigmoid"],
             "--shots, --variant set(s) few-shot CEM mixing, which this run does not do", runs)
    # the chat format on a model whose tokenizer has no chat template: said before the model loads
    _refused(capsys, [*train, "--model", base, "--task", "sort", "--prompt-format", "chat"],
             f"--prompt-format chat needs a tokenizer with a chat template, and --model {base} has none", runs)
    _refused(capsys, [*adapt, "--experts", str(add_file), "--prompt-format", "chat"],
             f"--model {base} has none", runs)
    # NaN (or other non-finite) settings that would make NaN losses
    _refused(capsys, [*train, "--model", base, "--task", "sort", "--lr", "nan"], "--lr must be a finite number", runs)
    _refused(capsys, [*train, "--model", base, "--task", "sort", "--kl-coeff", "inf"],
             "--kl-coeff weighs a term of the loss: give a finite number ≥ 0", runs)
    # a target that has an expert, when few-shot mixing (no expert) is asked
    _refused(capsys, [*adapt, "--experts", str(add_file), sort_id, "--target", "sort"],
             "--target sort asks for few-shot mixing of a task WITHOUT an expert", runs)
    _refused(capsys, [*adapt, "--experts", str(add_file), "--strategies", "classifier"],
             "needs a classification expert", runs)
    _refused(capsys, [*adapt, "--experts", str(tmp_path / "short.txt")], "--experts", runs)
    # a damaged expert file
    junk = tmp_path / "junk.safetensors"
    junk.write_text("junk")
    _refused(capsys, [*adapt, "--experts", str(junk)], "is not an SVF expert file", runs)
    # resume of a run of another kind (the runs already written stay as they were)
    from workbench.experts.adapt import AdaptConfig
    from workbench.experts.adapt import adapt as run_adapt

    done = run_adapt(AdaptConfig(model=base, experts=[str(add_file)], n=2, strategies=["base"]), store)
    _refused(capsys, [*train, "--resume", done.id],
             f"is an adapt run, not experts; resume it with workbench experts adapt --resume {done.id}", runs)
    _refused(capsys, ["experts", "adapt", "--runs", str(runs), "--resume", sort_id],
             "is an experts run, not adapt", runs)
    _refused(capsys, ["merge", "evolve", "--runs", str(runs), "--resume", sort_id, "--quiet"],
             "is an experts run, not merge", runs)
    _refused(capsys, [*train, "--resume", sort_id, "--seed", "9"], "--seed 9 ≠ the run's 0", runs)
    _refused(capsys, [*train, "--resume", sort_id, "--stop-token", "count"], "--stop-token 'count' ≠ the run's 'drop'",
             runs)
    assert load_file(add_file)  # the expert file is intact


def test_nan_rewards_and_gradients_leave_the_expert_unchanged(quick_zoo, tmp_path):
    from workbench.experts import ExpertTrainer, SVFModel, TrainConfig
    from workbench.lm.zoo import load_zoo

    zoo = load_zoo(quick_zoo)
    svf = SVFModel(zoo.model("base", device="cpu"), zoo.tokenizer(), cache_dir=tmp_path / "svf")
    cfg = TrainConfig(batch_size=4, val_n=4)
    trainer = ExpertTrainer(svf, "sort", seed=0, config=cfg, reward=lambda ex, texts: [float("nan")] * len(ex))
    before = trainer.expert()
    with pytest.raises(ValueError, match="rewards must be finite numbers"):
        trainer.step()
    assert trainer.step_count == 0 and all(torch.equal(before[n], trainer.params[n]) for n in before)
    wrong = ExpertTrainer(svf, "sort", seed=0, config=cfg, reward=lambda ex, texts: [1.0])
    with pytest.raises(ValueError, match="returned 1 rewards for 4 examples"):
        wrong.step()
    # a custom finite reward is used as given
    half = ExpertTrainer(svf, "sort", seed=0, config=cfg, reward=lambda ex, texts: [0.5] * len(ex))
    assert half.step()["reward_mean"] == 0.5


def test_generalist_is_a_model_folder_the_experts_commands_take(tmp_path, quick_zoo):
    from workbench.lm.models import load_model

    proc = _short("experts", "generalist", "--zoo", str(quick_zoo), "--out", str(tmp_path / "gen"), "--steps", "3",
                  "--quiet", cwd=tmp_path)
    text, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and len(text.strip().splitlines()) == 1, (text, err)  # one JSON line, as every command
    out = json.loads(text)
    assert out["tasks"] == ["add", "sort", "classify"] and out["steps"] == 3
    assert set(out["accuracy"]) == set(out["tasks"])
    model, _ = load_model(str(tmp_path / "gen"), device="cpu")
    base, _ = load_model(str(quick_zoo / "base"), device="cpu")
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), base.parameters(), strict=True))
    umask = os.umask(0)
    os.umask(umask)  # as readable as any new folder (mkdtemp makes 0700, safetensors 0600 files)
    assert stat.S_IMODE((tmp_path / "gen").stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((tmp_path / "gen" / "model.safetensors").stat().st_mode) == 0o666 & ~umask
    # a folder that is something else is refused, not overwritten
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    proc = _short("experts", "generalist", "--zoo", str(quick_zoo), "--out", str(tmp_path / "taken"), "--steps", "1",
               "--quiet", cwd=tmp_path)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "exists and is not a generalist folder" in err
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"
    from workbench.experts.generalist import check_generalist  # --lr inf trained a model of NaNs and wrote it

    with pytest.raises(ValueError, match="^--lr must be a finite positive number, got inf$"):
        check_generalist(quick_zoo, tmp_path / "nan", steps=1, lr=float("inf"))
    with pytest.raises(ValueError, match="^--lr must be a finite positive number, got 0.0$"):  # trains nothing
        check_generalist(quick_zoo, tmp_path / "nan", steps=1, lr=0.0)
    # named --lr, which was fine
    with pytest.raises(ValueError, match="^--steps must be a whole number of at least 1, got 0$"):
        check_generalist(quick_zoo, tmp_path / "nan", steps=0, lr=3e-3)
    # a generalist there already: the experts trained on it read it, so it is trained anew only with --replace
    before = (tmp_path / "gen" / "model.safetensors").read_bytes()
    again = ["experts", "generalist", "--zoo", str(quick_zoo), "--out", str(tmp_path / "gen"), "--steps", "1",
             "--quiet"]
    proc = _short(*again, cwd=tmp_path)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "holds a generalist already" in err and "--replace" in err, err
    assert (tmp_path / "gen" / "model.safetensors").read_bytes() == before
    proc = _short(*again, "--replace", cwd=tmp_path)
    text, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and json.loads(text)["steps"] == 1, err
