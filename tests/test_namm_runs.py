"""NAMM tasks, training runs and benchmarks on a tiny random Llama with GQA: prompt building and exact-match
scoring, `workbench namm train` in processes of its own (a SIGKILL and a bit-identical resume), `namm eval`,
`bench namm`, the one-shot replay behind the kvpress press (and the press itself in kvpress' virtualenv when
`make kvpress-peer` made one), and every bad input (one `error:` line, exit 2, nothing written, nothing lost)."""

import json
import os
import subprocess
import time

import numpy as np
import pytest
import torch
from forked import cli as _short
from procs import cli, kill_after, run_command
from setup_parts import missing_setup

from workbench.cli import main
from workbench.runs import RunStore

#: the tiny model's seed: a random model answers by luck; with this seed the full cache gets 1 of the 6 training
#: prompts right on both tasks, which the fitness (normalised by the full cache) needs
SEED = 10
TRAIN = ["--tasks", "digit", "count", "--pop", "4", "--n-up", "32", "--seed", "0", "--length", "160",
         "--prompts", "4", "--pool", "6", "--n-test", "2", "--max-new-tokens", "4", "--quiet"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from workbench.namm.models import tiny_llama

    return tiny_llama(tmp_path_factory.mktemp("namm") / "tiny", SEED)


def _train_args(tiny, gens: int = 3) -> list[str]:
    """The training run of the resume and Dask tests: three generations over two curriculum stages (the first
    generation in the first; `gens` makes the second longer and leaves the first generations as they were)."""
    return ["namm", "train", "--model", str(tiny), "--gens", str(gens), "--stage-gens", "1", str(gens - 1), *TRAIN]


@pytest.fixture(scope="module")
def whole(tmp_path_factory, tiny):
    """`namm train` run uninterrupted in a process of its own: the reference the killed-and-resumed run and the
    run on Dask workers must equal bit for bit. Its folder (runs in <folder>/whole) and its JSON."""
    folder = tmp_path_factory.mktemp("whole")
    return folder, _run(*_train_args(tiny), "--runs", "whole", cwd=folder)


def _run(*args, cwd, timeout=300, short=False) -> dict:
    """A command's JSON, the command run in a fresh process (short: forked, for commands whose output is all a
    test reads, not runs compared bit for bit with another process')."""
    proc = _short(*args, cwd=cwd, timeout=timeout) if short else cli(*args, cwd=cwd)
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return json.loads(out)


def _rows(run, table="metrics"):
    """A table's rows without timings (NaN as None so that rows compare)."""
    return _plain(run.read_table(table).to_pylist())


def _plain(rows: list[dict]) -> list[dict]:
    """Rows without timings, NaN as None (NaN equals nothing, itself included)."""
    return [{k: None if v != v else v for k, v in r.items() if not k.endswith("seconds")} for r in rows]


# --- tasks ---------------------------------------------------------------------------------------------------

def test_tasks_build_seeded_prompts_and_score_exact_matches(tiny):
    from workbench.namm.models import load_tokenizer
    from workbench.namm.tasks import (
        TASKS,
        PromptTooShort,
        chance,
        check_task_names,
        make_example,
        make_examples,
        score_answer,
    )

    tok = load_tokenizer(str(tiny))
    # a length must exceed what the facts and question alone take (passkey's take the same tokens whatever is
    # drawn): that many is too short, one more is a prompt
    with pytest.raises(PromptTooShort) as short:
        make_example("passkey", tok, 1, 5, 0)
    base = short.value.base
    with pytest.raises(PromptTooShort, match=f"--length {base} is too short for task 'passkey'"):
        make_example("passkey", tok, base, 5, 0)
    make_example("passkey", tok, base + 1, 5, 0)
    for task in TASKS:
        a = make_examples(task, tok, 3, 400, seed=5)
        assert [e.ids for e in a] == [e.ids for e in make_examples(task, tok, 3, 400, seed=5)]
        assert a[1] == make_example(task, tok, 400, 5, 1)  # example i does not depend on n
        assert a[0].ids != make_examples(task, tok, 1, 400, seed=5, split="test")[0].ids
        for ex in a:
            assert 400 <= ex.length < 400 + 40  # within one filler sentence (char tokens)
            assert tok.decode(list(ex.ids)) == ex.text
            assert tok.decode(list(ex.ids[: ex.n_context])) + tok.decode(list(ex.ids[ex.n_context:])) == ex.text
            assert ex.answer.isdigit() and "?" in ex.text[ex.n_context - 1:]
    kv = make_examples("kv", tok, 4, 500, seed=0)
    for ex in kv:
        word = ex.text.split("What is the number of the ")[1].split("?")[0]
        assert f"The number of the {word} is {ex.answer}." in ex.text[: ex.n_context]
        assert ex.text[: ex.n_context].count("The number of the ") == 4
    for ex in make_examples("count", tok, 6, 400, seed=0):
        assert ex.text.count("I saw a fox.") == int(ex.answer)
    for ex in make_examples("vartrack", tok, 4, 400, seed=0):
        b = ex.text.split("What is the value of VAR ")[1][:2]
        a = ex.text.split(f"VAR {b} = VAR ")[1][:2]
        assert ex.text.index(f"VAR {a} = {ex.answer}.") < ex.text.index(f"VAR {b} = VAR {a}.")
    assert (chance("count"), chance("digit"), chance("passkey")) == (0.25, 0.1, 0.0)
    # exact match of the first number in the answer
    assert score_answer(" 48213.", "48213") == 1.0
    assert score_answer("The key is 48213", "48213") == 1.0
    assert score_answer(" 482130", "48213") == 0.0 and score_answer(" 4821", "48213") == 0.0
    assert score_answer(" 3 or 48213", "48213") == 0.0 and score_answer("none", "48213") == 0.0
    # a chat template: the context is the user turn, the answer prefix opens the assistant turn
    tok.chat_template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}<|assistant|>"
    ex = make_example("passkey", tok, 400, 0, 0)
    assert ex.text.startswith("<|user|>") and ex.text.endswith("<|assistant|>The pass key is")
    assert ex.text[ex.n_context:].startswith("\n\nWhat is the pass key?")
    with pytest.raises(ValueError, match="unknown NAMM task.*--tasks"):
        check_task_names(["passkey", "needle"])
    with pytest.raises(ValueError, match="--length 40 is too short for task 'kv'"):
        make_example("kv", tok, 40, 0, 0)


# --- namm train ----------------------------------------------------------------------------------------------

def test_train_run_and_resume_after_sigkill_is_bit_identical(tmp_path, tiny, whole):
    from workbench.namm import NAMMPolicy
    from workbench.namm.saved import load_run_policy

    args = _train_args(tiny)
    folder, whole = whole
    assert whole["status"] == "done" and whole["iterations"] == 3 and whole["cma"] == "sep"
    saved, a = load_run_policy(folder / "whole", whole["id"])
    info = a.info
    assert info["kind"] == "namm" and info["metric"] == "fitness" and info["better"] == "higher"
    assert (info["substrate"], info["fm"]) == ("digit+count", "tiny")
    assert info["sigma0"] == 0.065 and info["population"] == 4 and info["mu"] == 2 and info["stages"] == [1, 2]
    rows = _rows(a)
    assert [r["stage"] for r in rows] == [0, 1, 1]
    assert [r["tasks"] for r in rows] == ["digit"] + ["digit+count"] * 2
    assert rows[0]["score_count"] is None and all(r["score_count"] is not None for r in rows[1:])
    assert all(0 < r["kept_mean"] <= 1 and r["fitness_min"] <= r["fitness_mean"] <= r["fitness_max"] for r in rows)
    assert rows[0]["best_fitness"] == rows[0]["fitness_max"]
    assert -info["best_loss"] == rows[-1]["best_fitness"] == max(r["fitness_max"] for r in rows[1:])
    evaluations = _rows(a, "evaluations")
    assert len(evaluations) == 3 * 4 and {"fitness", "kept", "score_digit", "score_count"} <= set(evaluations[0])
    # a generation's row: its best candidate's (the first of the highest fitness) kept fraction and scores; the best
    # fitness so far is of the stage's generations only (fitness of another stage averages other tasks)
    for g, row in enumerate(rows):
        candidates = evaluations[4 * g:4 * g + 4]
        best = max(candidates, key=lambda e: e["fitness"])
        assert row["fitness_max"] == best["fitness"] and row["kept_best"] == best["kept"]
        assert (row["score_digit"], row["score_count"]) == (best["score_digit"], best["score_count"])
        assert row["best_fitness"] == max(r["fitness_max"] for r in rows[:g + 1] if r["stage"] == row["stage"])
    # the saved policy: the CMA mean with the statistics frozen in the first evaluation, and what it ran with
    assert saved.meta["generation"] == 3 and saved.meta["n_up"] == 32 and saved.meta["run"] == whole["id"]
    assert saved.theta.shape == (4172,) and np.abs(saved.theta).max() > 0 and (saved.var > 0).all()
    policy = saved.build(__import__("transformers").AutoConfig.from_pretrained(tiny))
    assert isinstance(policy, NAMMPolicy) and not policy.collect and policy.n_kv_heads == 2
    scores = json.loads((a.path / "scores.json").read_text())
    assert set(scores["tasks"]) == {"digit", "count"} and whole["test_scores"]["digit"] == scores["tasks"]["digit"][
        "namm"]
    assert a.info["test_kept"] == {t: s["kept"] for t, s in scores["tasks"].items()}

    killed = cli(*args, "--runs", "killed", cwd=tmp_path)
    store = RunStore(tmp_path / "killed")
    row = kill_after(killed, store, 1)
    assert 1 <= row["iterations"] < 3, "the kill should land mid-run"
    assert row["status"] == "interrupted"
    assert row["resume_command"] == f"workbench namm train --resume {row['id']} --runs {store.root}"
    resumed = run_command(row["resume_command"] + " --quiet", cwd=tmp_path)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert json.loads(out)["status"] == "done"
    b = store.open(row["id"])
    assert _rows(a) == _rows(b) and _rows(a, "evaluations") == _rows(b, "evaluations")
    assert (a.path / "policy.safetensors").read_bytes().replace(a.id.encode(), b"") \
        == (b.path / "policy.safetensors").read_bytes().replace(b.id.encode(), b"")
    assert json.loads((a.path / "scores.json").read_text()) == json.loads((b.path / "scores.json").read_text())
    assert len(b.info["resumes"]) == 1

    # namm eval of the run: NAMM, the full cache and the baselines at the budgets and NAMM's own fraction
    ev = _run("namm", "eval", "--run", whole["id"], "--runs", "whole", "--n", "2", "--budgets", "0.5", "0.5",
              "--threads", "1", "--json", "--quiet", cwd=folder, short=True)
    assert ev["model"] == str(tiny) and ev["n_up"] == 32 and ev["policy"]["run"] == whole["id"]
    scored = [(r["method"], r["budget"], r["task"]) for r in ev["rows"]]
    assert len(scored) == len(set(scored)), scored  # a budget given twice is evaluated once
    methods = {(r["method"], r["task"]) for r in ev["rows"]}
    assert methods == {(m, t) for m in ("namm", "full", "recent", "h2o") for t in ("digit", "count")}
    assert all(r["kept"] == 1.0 for r in ev["rows"] if r["method"] == "full")
    halves = [r["kept"] for r in ev["rows"] if r["budget"] == 0.5]
    assert halves and all(abs(k - 0.5) < 0.03 for k in halves)
    # NAMM scored at another n_up, on another model than it was trained at / on: said (its statistics were
    # collected at its own, on its own); the model it was trained on, named by another path, is its own
    __import__("shutil").copytree(tiny, folder / "other-model")
    other = _short("namm", "eval", "--run", whole["id"], "--runs", "whole", "--n", "1", "--methods", "namm",
                   "--n-up", "48", "--tasks", "digit", "--model", "other-model", "--json", "--quiet", cwd=folder,
                   timeout=300)
    out, err = other.communicate(timeout=300)
    assert other.returncode == 0 and "note: --n-up 48: the policy was trained at n_up 32" in err, err
    assert f"note: --model other-model: the policy was trained on {tiny} (its feature statistics" in err, err
    from workbench.cli.namm import _same_model

    assert _same_model(os.path.relpath(tiny), str(tiny)) and not _same_model("smollm2", str(tiny))
    # figure namm of a task prompt longer than the model's window: one error naming --length, as namm eval's
    done = _short("figure", "namm", whole["id"], "--runs", "whole", "--task", "digit", "--length", "5000", "--out",
                  "f.png", cwd=folder, timeout=300)
    _, err = done.communicate(timeout=300)
    assert done.returncode == 2 and "use --length" in err and "Traceback" not in err, err


# --- bad input -----------------------------------------------------------------------------------------------

def _snapshot(root) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()} \
        if root.exists() else {}


def _refused(capsys, argv, message, root) -> None:
    """One `error:` line naming the problem, exit 2, and the folder exactly as it was."""
    before = _snapshot(root)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, (argv, err)
    assert err.startswith("error:") and "\n" not in err, err
    assert message in err, (message, err)
    assert _snapshot(root) == before


def _group_gone(pgid: int, wait: float = 30) -> bool:
    """Whether process group pgid is empty within `wait` seconds (an exited worker waits to be reaped)."""
    deadline = time.time() + wait
    while time.time() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_dask_workers_equal_the_local_run_and_ctrl_c_stops_quietly(tmp_path, tiny, whole):
    """--workers 2 (a real LocalCluster): the generations done on the workers give exactly the local run's metrics
    and candidate evaluations; a Ctrl-C once the first is done (SIGINT to the command's process group, the workers
    too, as from a terminal): exit 130, the run marked stopped and resumable, no tracebacks on stderr (from Dask's
    cut-short gathers, the interrupted workers, a worker's heartbeat to the closed scheduler) but one line with
    the command that resumes the run, no worker left.
    The run on Dask is the local one with a longer second stage (its first three generations are the same): a
    loaded machine may let a few tiny generations pass before the signal lands, and the run must still be going
    then."""
    import signal

    folder, local = whole
    store = RunStore(tmp_path / "dask")
    proc = cli(*_train_args(tiny, gens=12), "--runs", "dask", "--workers", "2", cwd=tmp_path)
    row = kill_after(proc, store, 1, sig=signal.SIGINT, group=True)
    err = proc.stderr.read()
    assert proc.returncode == 130, (row["status"], row["iterations"], err)  # "done", 12: the signal was lost
    assert "Traceback" not in err and "Task exception" not in err and "KeyboardInterrupt" not in err, err
    assert f"stopped: run {row['id']} is resumable: workbench namm train --resume {row['id']}" in err, err
    assert _group_gone(proc.pid), "Dask workers outlived the command"
    assert row["status"] == "stopped" and 1 <= row["iterations"] < 12
    dask, local_run = store.open(row["id"]), RunStore(folder / "whole").open(local["id"])
    dask.check_resumable()
    same = min(row["iterations"], 3)  # the generations both runs have
    assert _rows(dask)[:same] == _rows(local_run)[:same]
    evaluations = _plain(dask.load_checkpoint()["evaluations"])
    assert len(evaluations) == row["iterations"] * 4
    assert [r for r in evaluations if r["iteration"] < same] == \
        [r for r in _rows(local_run, "evaluations") if r["iteration"] < same]


def test_capped_training_saves_its_cap_and_keeps_within_it(tmp_path, tiny):
    """--max-kept (the capped variant): every candidate's cache stays within the cap (plus the tokens after the
    last eviction step), and the saved policy rebuilds with the same cap."""
    from workbench.namm.run import train_namm
    from workbench.namm.saved import load_run_policy
    from workbench.namm.train import NAMMTrainConfig

    cfg = NAMMTrainConfig(model=str(tiny), tasks=["digit"], gens=1, pop=2, n_up=32, length=160, n_prompts=6,
                          pool=0, n_test=0, max_new_tokens=4, max_kept=0.25, sigma=0.5)
    run = train_namm(cfg, RunStore(tmp_path / "runs"))
    saved, _ = load_run_policy(tmp_path / "runs", run.id)
    assert saved.max_kept == 0.25 and run.info["config"]["max_kept"] == 0.25
    assert saved.build(__import__("transformers").AutoConfig.from_pretrained(tiny)).max_kept == 0.25
    kept = [r["kept"] for r in run.read_table("evaluations").to_pylist()]
    assert kept and max(kept) <= 0.25 + 32 / 160  # the cap at the last step, plus at most n_up unevaluated tokens


def test_the_policy_file_is_the_generation_the_checkpoint_holds(tmp_path, tiny, monkeypatch):
    """Generations faster than a save are saved together (workbench.runs.save_share): the policy file was written
    after every generation all the same, ahead of run.json and the checkpoint (`namm eval --run` of a killed run
    scored a generation its resume did again). It is written with each save, of the generation saved."""
    from workbench.namm.run import train_namm
    from workbench.namm.saved import load_run_policy
    from workbench.namm.train import NAMMTrainConfig

    monkeypatch.setenv("WORKBENCH_SAVE_SHARE", "1e-9")  # saved are the first generation and the last only
    store, seen = RunStore(tmp_path / "runs"), []

    def check(done: int, total: int, row: dict) -> None:
        saved, run = load_run_policy(store.root, store.list()[0]["id"])
        seen.append((done, run.info["iterations"], saved.meta["generation"]))

    cfg = NAMMTrainConfig(model=str(tiny), tasks=["digit"], gens=3, pop=2, n_up=32, length=160, n_prompts=6,
                          pool=0, n_test=0, max_new_tokens=4)
    assert train_namm(cfg, store, on_iteration=check).info["status"] == "done"
    assert seen == [(1, 1, 1), (2, 1, 1), (3, 3, 3)], seen


def test_bad_input_is_one_error_and_writes_nothing(tmp_path, tiny, capsys, monkeypatch):
    from transformers import MistralConfig, MistralForCausalLM

    from workbench.namm.run import train_namm
    from workbench.namm.saved import save_policy
    from workbench.namm.train import NAMMTrainConfig

    runs = tmp_path / "runs"
    store = RunStore(runs)
    done = train_namm(NAMMTrainConfig(model=str(tiny), tasks=["digit"], gens=1, pop=2, n_up=32, length=160,
                                      n_prompts=6, pool=0, n_test=0, max_new_tokens=4), store)
    train = ["namm", "train", "--model", str(tiny), "--runs", str(runs), "--quiet", "--gens", "1", "--pop", "2",
             "--length", "160"]
    _refused(capsys, [*train, "--n-up", "40"], "--n-up (tokens between eviction steps) must be a positive multiple "
                                               "of 16, got 40", tmp_path)
    _refused(capsys, [*train, "--length", "1100"], "longer than the window of --model", tmp_path)
    before = sorted(p.name for p in runs.iterdir())  # the library says it too, before a run folder is made
    with pytest.raises(ValueError, match="longer than the window of --model"):
        train_namm(NAMMTrainConfig(model=str(tiny), tasks=["digit"], gens=1, pop=2, n_up=32, length=1100), store)
    assert sorted(p.name for p in runs.iterdir()) == before
    _refused(capsys, [*train, "--tasks", "digit", "count", "passkey"], "--gens 1 is fewer than the 3", tmp_path)
    _refused(capsys, [*train, "--max-kept", "1.5"], "--max-kept must be a fraction", tmp_path)
    for pool in ("3", "-1"):  # fewer than --prompts 4 to draw from; negative
        _refused(capsys, [*train, "--prompts", "4", "--pool", pool], f"--pool must be at least --prompts 4 (each "
                 f"generation draws its prompts from the pool) or 0 (the same prompts every generation), got {pool}",
                 tmp_path)
    # a model whose layers are not all full attention (Mistral with a sliding window)
    sliding = tmp_path / "sliding"
    MistralForCausalLM(MistralConfig(vocab_size=99, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, num_key_value_heads=1, sliding_window=8,
                                     max_position_embeddings=512)).save_pretrained(sliding)
    __import__("shutil").copy(tiny / "tokenizer.json", sliding / "tokenizer.json")
    __import__("shutil").copy(tiny / "tokenizer_config.json", sliding / "tokenizer_config.json")
    _refused(capsys, [*train[:2], "--model", str(sliding), *train[4:]], "['sliding_attention'] layers", tmp_path)
    _refused(capsys, [*train[:2], "--model", str(tmp_path / "nowhere"), *train[4:]], "unknown model", tmp_path)
    # θ of the wrong length, in a policy file
    np.savez(tmp_path / "short.npz", theta=np.zeros(4171), mean=np.zeros(17), var=np.ones(17))
    _refused(capsys, ["namm", "eval", "--policy", str(tmp_path / "short.npz"), "--model", str(tiny)],
             "θ has shape (4171,), the BAM policy has 4172 parameters", tmp_path)
    with pytest.raises(ValueError, match="θ has shape"):
        save_policy(tmp_path / "x.safetensors", np.zeros(17), (np.zeros(17), np.ones(17)), {})
    # a file naming a variant this version has not got: said of the file (eval has no --variant to give)
    from safetensors.numpy import save_file

    save_file({"theta": np.zeros(4172), "mean": np.zeros(17), "var": np.ones(17)}, tmp_path / "odd.safetensors",
              metadata={"namm": '{"variant": "greedy"}'})
    _refused(capsys, ["namm", "eval", "--policy", str(tmp_path / "odd.safetensors"), "--model", str(tiny)],
             "odd.safetensors names an unknown NAMM variant 'greedy'", tmp_path)
    _refused(capsys, ["namm", "eval", "--run", done.id, "--runs", str(runs), "--n-up", "24"], "--n-up", tmp_path)
    # a resume that contradicts the run's settings
    _refused(capsys, [*train[:2], "--resume", done.id, "--runs", str(runs), "--pop", "6"], "--pop", tmp_path)
    # another --device than the run's: its resume went on on the run's device and left the flag unused unsaid
    import shutil

    gpu = runs / "gpu-run"  # a copy that ran on a GPU
    shutil.copytree(runs / done.id, gpu)
    info = json.loads((gpu / "run.json").read_text())
    (gpu / "run.json").write_text(json.dumps({**info, "config": {**info["config"], "device": "cuda"}}))
    _refused(capsys, [*train[:2], "--resume", "gpu-run", "--runs", str(runs), "--device", "cpu"],
             "--device cpu: run gpu-run runs on cuda and goes on there (its floats depend on the device); resume it "
             "without --device, or start a new run on cpu", tmp_path)
    # a run that recorded no device (started without --device): not known here, so not refused (this machine's
    # default, compared before, need not be the one it ran on)
    from workbench.cli.common import check_resume_device

    (gpu / "run.json").write_text(json.dumps({**info, "config": {**info["config"], "device": None}}))
    check_resume_device(RunStore(runs).open("gpu-run"), "cpu")
    shutil.rmtree(gpu)
    from workbench.namm.peer import check_presses

    assert check_presses(["none"]) == check_presses([]) == []  # `bench namm --presses none`: no kvpress, as its help
    # kvpress: a press it does not have
    _refused(capsys, ["bench", "namm", "--model", str(tiny), "--presses", "snapkv", "h2o-press"],
             "unknown kvpress press 'h2o-press'", tmp_path)
    _refused(capsys, ["bench", "namm", "--model", str(tiny), "--length", "2000"], "longer than the window", tmp_path)
    _refused(capsys, ["bench", "namm", "--model", str(tiny), "--tasks", "digit", "--length", "160", "--speed-length",
                      "10"], "--speed-length 10 is too short for task 'digit'", tmp_path)  # not --length's
    # a --length too short for a task: the task's own error, naming the flag (a library's "n ≥ 1 prompts" before)
    _refused(capsys, [*train[:-1], "10", "--tasks", "digit"], "--length 10 is too short for task 'digit'", tmp_path)
    # a task the model cannot solve (its full cache scores 0): refused before a run folder is made (a failed run
    # was left behind)
    _refused(capsys, [*train, "--tasks", "passkey", "--prompts", "2", "--pool", "2", "--n-test", "0"],
             "the full cache scores 0 on the 2 training prompts of task(s) 'passkey', so a normalised score is "
             "undefined: choose tasks the model solves (--tasks), a shorter --length or more --pool", tmp_path)
    assert [r["status"] for r in store.list()] == ["done"]
    # the model's folder is recorded as the absolute path it is, so that a resume, `namm eval --run`, `figure
    # namm` and the page find it from any folder; a resume names it however it likes
    assert done.info["config"]["model"] == str(tiny)
    monkeypatch.chdir(tiny.parent)
    assert NAMMTrainConfig(model="tiny", tasks=["digit"], length=160).model == str(tiny)
    assert main([*train[:2], "--resume", done.id, "--runs", str(runs), "--model", "./tiny/", "--quiet"]) == 0
    _refused(capsys, [*train[:2], "--resume", done.id, "--runs", str(runs), "--model", str(sliding)],
             f"--model {sliding} is not run {done.id}'s model (its weights differ", tmp_path)
    # a run with no policy yet: the command that resumes it, with its --runs
    early = store.create("namm", "digit", "tiny", {"tasks": ["digit"]}, 0, metric="fitness")
    _refused(capsys, ["namm", "eval", "--run", early.id, "--runs", str(runs)],
             f"resume it with `workbench namm train --resume {early.id} --runs {runs}`", tmp_path)


# --- the one-shot replay behind the kvpress press, the press, bench namm -------------------------------------

def test_length_errors_on_a_short_window_name_a_length_that_works_or_say_none_does(tmp_path):
    """On a model with a short window, "use a shorter --length" and "--length is too short for the task" sent users
    from one to the other: each now names a --length that passes, or says the task cannot fit the window."""
    from workbench.namm.models import tiny_llama
    from workbench.namm.tasks import check_prompts

    short = str(tiny_llama(tmp_path / "w96", SEED, window=96))
    for length in (30, 300):
        with pytest.raises(ValueError, match=r"task 'passkey' needs prompts of \d+ tokens or more, beyond the window "
                                             r"of --model .*\(96 positions\): leave passkey out of --tasks"):
            check_prompts(short, ["passkey"], length, 4, 0, 8)
    # a run's own model (figure namm: no --model to change it): said as the run's, with what can change
    with pytest.raises(ValueError, match=r"window of the run's model .*\(96 positions\): choose another --task"):
        check_prompts(short, ["passkey"], 30, 1, 0, 8, "test", new_flag=None, model_flag=None)
    wider = str(tiny_llama(tmp_path / "w400", SEED, window=400))
    with pytest.raises(ValueError, match=r"longer than the window .*\(400 positions\): use --length \d+ or less") as e:
        check_prompts(wider, ["passkey"], 600, 4, 0, 8)
    check_prompts(wider, ["passkey"], int(str(e.value).split("--length ")[1].split()[0]), 4, 0, 8)  # it passes
    # the answer's tokens leave the prompt no room: the flag that gave them is named (the task and the model were),
    # with a number of them that leaves it room, then a --length that fits beside them
    with pytest.raises(ValueError, match=r"--decode-tokens 390 leaves 10 of the window of --model .*\(400 "
                                         r"positions\) to the prompt, .* give --decode-tokens \d+ or less") as e:
        check_prompts(wider, ["passkey"], 300, 4, 0, 390, new_flag="--decode-tokens")
    fewer = int(str(e.value).split("--decode-tokens ")[-1].split()[0])
    # more answer tokens than the whole window: they leave the prompt nothing (not a negative count)
    with pytest.raises(ValueError, match=r"--decode-tokens 500 leaves 0 of the window of --model .*\(400 positions\)"):
        check_prompts(wider, ["passkey"], 300, 4, 0, 500, new_flag="--decode-tokens")
    with pytest.raises(ValueError, match=r"use --length \d+ or less") as e:
        check_prompts(wider, ["passkey"], 300, 4, 0, fewer)
    check_prompts(wider, ["passkey"], int(str(e.value).split("--length ")[1].split()[0]), 4, 0, fewer)


def test_one_shot_replay_keeps_what_the_evicting_cache_keeps_in_layer_0(tiny):
    from workbench.namm import EvictionCache, NAMMPolicy, forward
    from workbench.namm.cache import model_shape
    from workbench.namm.models import load_eager_model
    from workbench.namm.oneshot import replay

    model, _ = load_eager_model(str(tiny), device="cpu")
    shape = model_shape(model.config)
    rng = np.random.default_rng(0)
    theta = rng.normal(0, 0.3, 4172)
    ids = torch.randint(3, 99, (1, 200), generator=torch.Generator().manual_seed(0))
    stats = (np.zeros(17), np.ones(17))
    cache = EvictionCache(model.config, NAMMPolicy(theta, *shape, stats=stats), 32)
    forward(model, ids, cache)
    with torch.inference_mode():
        attentions = model(ids, output_attentions=True).attentions
    policy = NAMMPolicy(theta, *shape, stats=stats)
    kept = replay(policy, 0, attentions[0], 32)
    positions, _ = cache.kept(0)
    assert kept.shape[-1] < 200, "the policy should evict something"
    assert torch.equal(kept, positions)


def test_bench_namm_and_the_kvpress_press(tmp_path, tiny):
    from workbench.namm.peer import peer_python
    from workbench.namm.saved import save_policy

    theta = np.random.default_rng(1).normal(0, 0.3, 4172)
    theta[-1] = -1.0  # b_s: most tokens score below 0 and go
    policy = save_policy(tmp_path / "p.safetensors", theta, (np.zeros(17), np.ones(17)),
                         {"model": str(tiny), "n_up": 32, "variant": "equal-n"})
    peer = peer_python()
    presses = ["snapkv", "observed"] if peer else []
    out = _run("bench", "namm", "--model", str(tiny), "--tasks", "digit", "--policy", str(policy), "--n", "2",
               "--length", "160", "--budgets", "0.5", "--presses", *presses, "--threads", "1", "--speed-length",
               "160", "--decode-tokens", "4", "--pop", "2", "--cma-prompts", "1", "--max-new-tokens", "4",
               "--json", "--quiet", cwd=tmp_path, short=True)
    rows = out["rows"]
    namm = next(r for r in rows if r["method"] == "namm")
    assert 0 < namm["kept"] < 1 and out["config"]["n_up"] == 32 and out["config"]["max_new_tokens"] == 4
    own = round(namm["kept"], 3)
    summary = out["summary"]["digit"]
    assert summary["namm_kept"] == namm["kept"] and summary["best_baseline"]["method"] in ("recent", "h2o")
    assert summary["best_baseline"]["kept"] == pytest.approx(own, abs=0.03)
    assert {(r["method"], r["budget"]) for r in rows if r["method"] in ("recent", "h2o")} \
        == {(m, b) for m in ("recent", "h2o") for b in sorted({0.5, own})}
    for name in ("dynamic_cache", "evicting_full", "namm"):
        assert out["speed"][name]["prefill_tok_s"] > 0 and out["speed"][name]["decode_tok_s"] > 0
    assert out["speed"]["evicting_full"]["kept"] == 1.0 and out["speed"]["namm"]["kept"] < 1
    assert out["cma"]["generation_s"] > 0 and out["cma"]["optimiser_sep_s"] > 0
    # NAMM's overhead: the evicting cache keeping all over NAMM (> 1: NAMM slower); a candidate's share of the
    # timed generation of --pop 2
    speed = out["speed"]
    for phase in ("prefill", "decode"):
        assert speed[f"namm_overhead_{phase}"] == pytest.approx(
            speed["evicting_full"][f"{phase}_tok_s"] / speed["namm"][f"{phase}_tok_s"])
    assert out["cma"]["per_candidate_s"] == pytest.approx(out["cma"]["generation_s"] / 2)
    if not peer:
        assert "make kvpress-peer" in out["presses"]["skipped"]
        missing_setup("the kvpress virtualenv (make kvpress-peer): the press rows are not checked")
    assert out["presses"]["peer"] == "kvpress 0.5.5"
    for name in ("snapkv", "observed"):
        kept = [r["kept"] for r in rows if r["method"] == name]
        assert len(kept) == 2 and all(abs(k - b) < 0.02 for k, b in zip(kept, sorted({0.5, own}), strict=True))
    # the press with θ = 0 keeps every token: the full cache's answers; the trained θ keeps what NAMM keeps
    zero = save_policy(tmp_path / "zero.safetensors", np.zeros(4172), (np.zeros(17), np.ones(17)), {"n_up": 32})
    script = ("import sys, torch\n"
              "from kvpress import KVPressTextGenerationPipeline\n"
              "from workbench.lm.models import load_model\n"
              "from workbench.namm.press import NAMMPress\n"
              "model, tok = load_model(sys.argv[1], device='cpu'); model.set_attn_implementation('eager')\n"
              "pipe = KVPressTextGenerationPipeline(model=model, tokenizer=tok)\n"
              "context = 'The magic digit is 7. ' + 'The grass is green. ' * 12\n"
              "out = []\n"
              "for path in sys.argv[2:]:\n"
              "    press = NAMMPress(path)\n"
              "    out.append((pipe(context, question='Digit?', press=press, max_new_tokens=5)['answer'],"
              " press.kept_fraction))\n"
              "plain = pipe(context, question='Digit?', max_new_tokens=5)['answer']\n"
              "assert out[0] == (plain, 1.0), (out, plain)\n"
              "assert out[1][1] < 1, out\n"
              "print('ok')\n")
    done = subprocess.run([peer, "-c", script, str(tiny), str(zero), str(policy)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]


def test_bench_namm_budgets_are_fractions_in_0_to_1_with_1_the_whole_cache(tiny):
    """--budgets are kept-cache fractions in (0, 1]: 1 (keep everything) is one, 0 and above 1 are refused before the
    model loads."""
    from workbench.namm.bench import BenchConfig, check_config

    def config(budgets):
        return BenchConfig(model=str(tiny), tasks=["digit"], budgets=budgets, presses=[], n=1, length=160,
                           sections=["scores"])

    assert check_config(config([0.5, 1.0])) is None
    for budgets in ([0.0], [0.5, 1.5]):
        with pytest.raises(ValueError, match=r"--budgets are kept-cache fractions in \(0, 1\]"):
            check_config(config(budgets))
    flagged = config([0.5])
    flagged.pop = True  # a bool is no count (it passed isinstance(value, int) as 1, then failed --pop's check as 1)
    with pytest.raises(ValueError, match=r"^--pop must be a whole number of at least 1, got True$"):
        check_config(flagged)


def test_the_peer_says_a_bad_job_in_one_line(tmp_path):
    """python -m workbench.namm.peer answers a job it cannot run with one error line, exit 2, as its doc says: in a
    Python without kvpress (the workbench's own) it names the peer's, and a job without a key names the key (both
    were tracebacks)."""
    import sys

    from workbench.namm.peer import peer_python

    def job(python: str, text: str) -> subprocess.CompletedProcess:
        return subprocess.run([python, "-m", "workbench.namm.peer"], input=text, capture_output=True, text=True,
                              cwd=tmp_path, timeout=120)

    pythons = [sys.executable] + ([peer_python()] if peer_python() else [])
    for python in pythons:
        no_json = job(python, "not json")
        assert no_json.returncode == 2 and len(no_json.stderr.splitlines()) == 1, no_json.stderr[-2000:]
        assert no_json.stderr.startswith("error: ")
    try:
        import kvpress  # noqa: F401
    except ImportError:
        outside = job(sys.executable, "{}")
        assert outside.returncode == 2 and outside.stderr.splitlines() == [outside.stderr.strip()], outside.stderr
        assert "kvpress is not installed" in outside.stderr and "make kvpress-peer" in outside.stderr
    if not peer_python():
        missing_setup("the kvpress virtualenv (make kvpress-peer): a job without presses is not checked there")
    keyless = job(peer_python(), "{}")
    assert keyless.returncode == 2 and keyless.stderr.strip() == \
        "error: the job has no 'presses' (its keys: workbench.namm.peer's module doc)", keyless.stderr[-2000:]


def test_the_peer_says_only_the_jobs_own_faults_in_one_line(monkeypatch, capsys):
    """A key the job lacks, or kvpress not installed, is one error line; a KeyError or an ImportError from inside
    the libraries is a bug and keeps its traceback (it read "the job has no 'rope_theta'", "transformers is not
    installed")."""
    import io
    import sys

    from workbench.namm import peer

    def raising(error):
        def run_job(job, log=None):
            raise error
        return run_job

    for error, said in ((KeyError("presses"), "error: the job has no 'presses'"),
                        (ModuleNotFoundError("No module named 'kvpress'", name="kvpress"), "error: kvpress is not "
                                                                                             "installed")):
        monkeypatch.setattr(peer, "run_job", raising(error))
        monkeypatch.setattr(sys, "stdin", io.StringIO("{}"))
        assert peer.main() == 2 and capsys.readouterr().err.startswith(said)
    for error in (KeyError("rope_theta"), KeyError("presses"), ImportError("cannot import name 'x' from "
                                                                           "'transformers'", name="transformers")):
        monkeypatch.setattr(peer, "run_job", raising(error))
        monkeypatch.setattr(sys, "stdin", io.StringIO('{"presses": []}'))
        with pytest.raises(type(error)):
            peer.main()


def test_prompts_are_drawn_afresh_each_generation_and_older_runs_keep_theirs(tmp_path, tiny, capsys, monkeypatch):
    """--pool: each generation scores every candidate on prompts drawn afresh from the pool (seeded, so a resume
    draws the same), normalised by the full cache on those prompts (the pool's mean where it solves none of them);
    a run made before the draw (no pool in its config) resumes on its fixed prompts, and refuses --pool 32."""
    from workbench.namm.run import train_namm
    from workbench.namm.train import (
        NAMMTrainConfig,
        context,
        denominator,
        evaluate_population,
        evaluate_thetas,
        new_search,
    )

    base = dict(model=str(tiny), tasks=["digit", "count"], gens=3, stage_gens=[1, 2], pop=2, n_up=32, length=160,
                n_prompts=3, n_test=0, max_new_tokens=4, sigma=0.5)
    cfg = NAMMTrainConfig(**base, pool=8)
    draws = [cfg.prompts_of(g, t) for g in range(8) for t in ("digit", "count")]
    assert all(len(set(d)) == 3 and d == sorted(d) and 0 <= d[0] and d[-1] < 8 for d in draws)
    assert len({tuple(d) for d in draws}) > 8, "a fresh draw each generation and task"
    assert draws == [NAMMTrainConfig(**base, pool=8).prompts_of(g, t) for g in range(8) for t in ("digit", "count")]
    assert draws != [NAMMTrainConfig(**{**base, "seed": 1}, pool=8).prompts_of(g, t)
                     for g in range(8) for t in ("digit", "count")]
    assert NAMMTrainConfig(**base, pool=0).prompts_of(5, "count") == NAMMTrainConfig(**base, pool=3).prompts_of(
        5, "count") == [0, 1, 2]
    with pytest.raises(ValueError, match="--pool must be at least --prompts 3"):
        NAMMTrainConfig(**base, pool=2)
    assert denominator([0.0, 1.0, 0.0, 0.0], [1, 2]) == (0.5, False)
    assert denominator([0.0, 1.0, 0.0, 0.0], [0, 2]) == (0.25, True)  # none solved: the pool's mean
    # none of the pool solved either: evo-memory's 1e-7 (0 / 0 was a NaN fitness, and CMA-ES ranked NaNs)
    assert denominator([0.0] * 4, [0, 2]) == denominator([0.0] * 4, [0, 2], "reference") == (1e-7, True)
    assert denominator([0.0, 1.0, 0.0, 0.0], [1, 2], "reference") == (0.5 + 1e-7, False)  # evo-memory: + 1e-7 always
    assert denominator([0.0, 1.0, 0.0, 0.0], [0, 2], "reference") == (1e-7, True)
    with pytest.raises(ValueError, match="--normalizer must be one of pool, reference"):
        NAMMTrainConfig(**base, normalizer="mean")

    import workbench.namm.run as namm_run

    store, asked = RunStore(tmp_path / "runs"), []

    def spy(cfg, tasks, thetas, stats, prompts, client=None):  # the real evaluation; the prompts it was given
        asked.append(prompts)
        return evaluate_population(cfg, tasks, thetas, stats, prompts, client)

    monkeypatch.setattr(namm_run, "evaluate_population", spy)
    drawn = train_namm(cfg, store)
    monkeypatch.undo()
    fixed = train_namm(NAMMTrainConfig(**base, pool=0), store)
    assert asked == [{t: cfg.prompts_of(g, t) for t in cfg.active_tasks(g)} for g in range(3)]
    state, rows = drawn.load_checkpoint(), _rows(drawn)
    assert {t: len(s) for t, s in state["full"].items()} == {"digit": 8, "count": 8}
    assert {t: len(s) for t, s in fixed.load_checkpoint()["full"].items()} == {"digit": 3, "count": 3}
    assert "full_fallback" not in _rows(fixed)[0]
    assert [{k: v for k, v in r.items() if k != "full_fallback"} for r in rows] != _rows(fixed)
    for g, row in enumerate(rows):
        dens = [denominator(state["full"][t], cfg.prompts_of(g, t)) for t in row["tasks"].split("+")]
        assert row["full_fallback"] == "+".join(t for t, (_, fell) in zip(row["tasks"].split("+"), dens,
                                                                             strict=True) if fell)
    # every candidate's fitness: its scores over the full cache's mean on the drawn prompts, and at least one term
    # where that differs from the pool's mean (so that the pool's would not pass)
    telling = 0
    for r in _rows(drawn, "evaluations"):
        tasks = cfg.active_tasks(r["iteration"])
        dens = [denominator(state["full"][t], cfg.prompts_of(r["iteration"], t))[0] for t in tasks]
        assert r["fitness"] == pytest.approx(np.mean([r[f"score_{t}"] / d for t, d in zip(tasks, dens, strict=True)]))
        telling += sum(r[f"score_{t}"] > 0 and d != np.mean(state["full"][t]) for t, d in zip(tasks, dens,
                                                                                               strict=True))
    assert telling > 0
    # generation 0's candidates again, on its drawn prompts: what the run recorded (their kept fractions depend on
    # the prompts, so the first prompts would not do)
    opt = new_search(cfg)
    xs = np.stack([opt.ask() for _ in range(cfg.pop)])
    stats = (state["stats"]["mean"], state["stats"]["var"])
    _, kept = evaluate_thetas(cfg, ["digit"], xs, stats, {"digit": cfg.prompts_of(0, "digit")})
    recorded = [r["kept"] for r in _rows(drawn, "evaluations") if r["iteration"] == 0]
    assert kept.tolist() == recorded
    assert evaluate_thetas(cfg, ["digit"], xs, stats, {"digit": [0, 1, 2]})[1].tolist() != recorded
    assert cfg.prompts_of(0, "digit") != [0, 1, 2]
    # the statistics: θ = 0 (the full cache) over the first task's whole pool, as the reference's first evaluation
    scores, mean, _, count = context(cfg).collect_stats("digit", list(range(8)))
    assert count == state["stats"]["count"] and np.array_equal(mean, state["stats"]["mean"])
    assert scores == state["full"]["digit"]

    # a run made before --pool: its config has none; it resumes on the same first prompts, as the run did
    old_store = RunStore(tmp_path / "old")
    done = []
    old = train_namm(NAMMTrainConfig(**base, pool=0), old_store, should_stop=lambda: bool(done),
                     on_iteration=lambda i, n, row: done.append(i))
    # the policy file of a run stopped midway holds CMA-ES's mean, as a finished run's, not the generation's best
    # (4 candidates: with 2, CMA-ES's μ = 1 makes its mean the best)
    from workbench.namm.saved import load_policy

    two: list[int] = []
    midway = train_namm(NAMMTrainConfig(**{**base, "pop": 4}, pool=0), RunStore(tmp_path / "midway"),
                        should_stop=lambda: len(two) == 2, on_iteration=lambda i, n, row: two.append(i))
    assert midway.info["status"] == "stopped" and midway.info["iterations"] == 2
    np.testing.assert_array_equal(load_policy(midway.path / "policy.safetensors").theta,
                                  midway.load_checkpoint()["cma"]["attrs"]["_mean"])
    old.update(config={k: v for k, v in old.info["config"].items() if k not in ("pool", "normalizer")})
    argv = ["namm", "train", "--resume", old.id, "--runs", str(old_store.root), "--quiet"]
    _refused(capsys, [*argv, "--pool", "32"], "--pool", tmp_path / "old")
    resumed = train_namm(None, old_store, resume=old.id)
    assert resumed.info["status"] == "done" and "pool" not in resumed.info["config"]
    assert _rows(resumed) == _rows(fixed) and _rows(resumed, "evaluations") == _rows(fixed, "evaluations")
    from workbench.compare import flat_settings

    assert flat_settings(resumed.info)["config.pool"] == flat_settings(fixed.info)["config.pool"] == 0
    # and before --normalizer: it divided as "pool" does, which a resume may name (it was an unknown setting)
    from workbench.compare import kind_predates
    from workbench.runs import resume_conflicts

    assert flat_settings(resumed.info)["config.normalizer"] == "pool"
    assert resume_conflicts(resumed.info, {"normalizer": "pool"}, kind_predates("namm"), typed=True) == []
    assert [n for n, _ in resume_conflicts(resumed.info, {"normalizer": "reference"}, kind_predates("namm"),
                                          typed=True)] == ["normalizer"]
    from workbench.namm.legacy import PREDATES

    assert kind_predates("namm") == PREDATES


def test_the_best_fitness_starts_again_at_each_curriculum_stage(tmp_path, tiny):
    """From mutation sampling: the best fitness so far is the stage's (a stage's fitness averages its own tasks: a
    first stage on digit alone is no score to beat for digit + count), and the run the other tests train never had a
    first stage that beat its second, so a best carried over the boundary went unseen. Here the first stage's best
    beats every candidate of the second: the second's rows, and run.json's best_loss, are of its own generation."""
    from workbench.namm.run import train_namm
    from workbench.namm.train import NAMMTrainConfig

    cfg = NAMMTrainConfig(model=str(tiny), tasks=["digit", "count"], gens=2, stage_gens=[1, 1], pop=2, n_up=32,
                          length=160, n_prompts=3, n_test=0, max_new_tokens=4, seed=0)
    run = train_namm(cfg, RunStore(tmp_path))
    first, second = _rows(run)
    assert (first["stage"], second["stage"]) == (0, 1)
    assert first["fitness_max"] > second["fitness_max"], "the case this test is for: the first stage's best beats"
    assert first["best_fitness"] == first["fitness_max"] and second["best_fitness"] == second["fitness_max"]
    assert run.info["best_loss"] == -second["fitness_max"]


def test_a_run_of_another_kind_is_named_with_its_article(tmp_path):
    """`namm eval --run` with an adapt run said "is a adapt run"."""
    from workbench.namm.saved import load_run_policy
    from workbench.runs import RunStore

    store = RunStore(tmp_path)
    adapt = store.create("adapt", "brackets", "sort+reverse", {"seed": 0}, 0)
    with pytest.raises(ValueError, match=f"run {adapt.id} is an adapt run, not a NAMM training"):
        load_run_policy(tmp_path, adapt.id)
    target = store.create("target", "lenia", "pixels", {"seed": 0}, 0)
    with pytest.raises(ValueError, match=f"run {target.id} is a target run"):
        load_run_policy(tmp_path, target.id)


def test_a_moved_run_whose_model_path_holds_another_model_is_refused(tmp_path, tiny, capsys, monkeypatch):
    """A run records its model by its weights (model_key): once its recorded folder holds another model (a run
    store moved to a machine where that path is another checkout, a model rebuilt in place), its resume, `figure
    namm` and the NAMM page refuse it, naming both, instead of drawing or training its policy on that model."""
    import shutil

    from workbench.dashboards.namm import NAMMExplorer
    from workbench.namm.models import tiny_llama
    from workbench.namm.run import train_namm
    from workbench.namm.train import NAMMTrainConfig
    from workbench.runs import RunError

    model = tmp_path / "model"
    shutil.copytree(tiny, model)
    store = RunStore(tmp_path / "runs")
    done: list[int] = []
    run = train_namm(NAMMTrainConfig(model=str(model), tasks=["digit"], gens=2, pop=2, n_up=32, length=160,
                                     n_prompts=4, pool=6, n_test=0, max_new_tokens=4), store,
                     should_stop=lambda: bool(done), on_iteration=lambda i, n, row: done.append(i))
    assert run.info["status"] == "stopped" and len(run.info["model_key"]) == 64
    page = NAMMExplorer(runs_dir=str(store.root))
    page.choose(run.id)  # its own model: opens
    shutil.rmtree(model)
    tiny_llama(model, SEED + 1)  # another model of the same shape, at the path the run recorded
    from collections import OrderedDict

    from workbench import scale
    from workbench.namm import trace

    monkeypatch.setattr(scale, "_made", OrderedDict())  # a fresh process, as on the machine the store moved to:
    monkeypatch.setattr(trace, "_MODELS", {})           # nothing of the model loaded before
    with pytest.raises(RunError, match="trained on another model than the one now at"):
        train_namm(None, store, resume=run.id)
    moved = NAMMExplorer(runs_dir=str(store.root), prompt="The digit is 7. What is the digit?")
    moved.choose(run.id)  # picked (no model loads on the page's loop), refused as it would run there
    with pytest.raises(ValueError, match="trained on another model than the one now at"):
        moved.run()
    assert main(["figure", "namm", run.id, "--runs", str(store.root), "--task", "digit", "--length", "160",
                 "--out", str(tmp_path / "n.png")]) == 2
    assert "trained on another model than the one now at" in capsys.readouterr().err
    assert not (tmp_path / "n.png").exists()
    # the model folder moved away: the resume says where it was and how to go on (it said "no such folder; give
    # 'smollm2', …", which named no fix), before the run is held
    shutil.move(model, tmp_path / "moved-model")
    assert main(["namm", "train", "--resume", run.id, "--runs", str(store.root)]) == 2
    said = capsys.readouterr().err
    assert f"run {run.id}'s model {model} is not there (moved or deleted?)" in said and \
        f"`workbench namm train --resume {run.id} --runs {store.root} --model PATH`" in said and \
        len(said.strip().splitlines()) == 1
    # --model: where the run's model is now, checked by its weights (this folder holds the other model)
    args = ["namm", "train", "--resume", run.id, "--runs", str(store.root), "--quiet"]
    assert main([*args, "--model", str(tmp_path / "moved-model")]) == 2
    said = capsys.readouterr().err
    assert f"--model {tmp_path / 'moved-model'} is not run {run.id}'s model (its weights differ" in said and \
        len(said.strip().splitlines()) == 1
    assert main([*args, "--model", str(tmp_path / "nowhere")]) == 2
    assert f"--model {tmp_path / 'nowhere'}: no such model folder" in capsys.readouterr().err
    (tmp_path / "moved-model").rename(model)  # put back: the resume refuses it no more for being away
    with pytest.raises(RunError, match="trained on another model"):
        train_namm(None, store, resume=run.id)
    assert store.open(run.id).info["config"]["model"] == str(model)  # nothing recorded by the refusals
    # the run's own model at its new place: the run goes on, and records where its model is now
    assert main([*args, "--model", str(tiny)]) == 0
    info = store.open(run.id).info
    assert info["status"] == "done" and info["iterations"] == 2 and info["config"]["model"] == str(tiny)
    # a finished run given its model's new place: checked by its weights and recorded, where `figure namm` and the
    # page read it (the policy file keeps where it was trained)
    again = tmp_path / "again"
    shutil.copytree(tiny, again)
    assert main([*args, "--model", str(again)]) == 0
    assert store.open(run.id).info["config"]["model"] == str(again)
    assert main(["figure", "namm", run.id, "--runs", str(store.root), "--task", "digit", "--length", "160",
                 "--out", str(tmp_path / "n.png")]) == 0
    opened = NAMMExplorer(runs_dir=str(store.root))
    opened.choose(run.id)
    assert opened.model_name == str(again)
