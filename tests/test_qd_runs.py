"""CycleQD runs end to end on a quick zoo: `workbench qd cycle|report|archive|export` in their own processes, the
run folder, resume after SIGKILL, serial == Dask, the reference's archive maps and pyribs archives, bad input.

Two serial runs (seeds 3 and 1 of one setting, batches of 2) are made once: they are the finished runs the report,
export and interop tests read, the uninterrupted reference of the resume test (seed 1) and the serial reference
of the Dask test (seed 3), so each of those starts only the processes it compares (fresh ones: bits compared
across processes).

The zoo is a quick one trained a little longer (seconds): its experts score near 0 except on brackets (answers of
one to three characters), where children's scores spread, so archives fill and children breed children (seeds and
mutation scales picked for that): plumbing, not quality.
"""

import hashlib
import json
import os
import re
import shutil
import stat

import numpy as np
import pytest
from forked import cli as _short
from procs import cli as _cli
from procs import kill_after, run_command

from workbench.checkpoint import pack
from workbench.cli import main
from workbench.runs import RunStore

# the paper's method (elite sampling + SVD mutation, κ = 1 so that children differ enough to enter), GENS
# generations of 2 children
GENS = 5
CYCLE = ["qd", "cycle", "--tasks", "brackets", "sort", "--gens", str(GENS), "--batch", "2", "--n-eval", "32",
         "--n-test", "16", "--multitask-steps", "5", "--range", "brackets", "0", "0.5", "--mutation-scale", "1",
         "--quiet"]
SEEDS = (3, 1)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    from workbench.lm.zoo import ZooConfig, build_zoo

    return build_zoo(tmp_path_factory.mktemp("qdzoo") / "zoo",
                     ZooConfig.quick(tasks=("brackets", "sort"), base_steps=100, expert_steps=60))


def _done(proc) -> dict:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return json.loads(out)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, zoo):
    """Two finished runs (SEEDS) of CYCLE, one fresh process each."""
    root = tmp_path_factory.mktemp("qdruns")
    procs = [_cli(*CYCLE, "--zoo", str(zoo), "--runs", "runs", "--seed", str(s), cwd=root) for s in SEEDS]
    results = [_done(p) for p in procs]
    return root, RunStore(root / "runs"), [r["id"] for r in results], results


def _table(run, name: str, drop=("seconds",)) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in drop} for row in run.read_table(name).to_pylist()]


def _qd_state(run) -> tuple:
    import workbench.qd.cycle  # noqa: F401 - registers the checkpoint type (run alone, nothing else imports it)

    state = run.load_checkpoint()
    tree, arrays = pack(state["qd"])
    return (state["iteration"], json.dumps(tree, sort_keys=True),
            {k: (v.dtype.str, v.shape, v.tobytes()) for k, v in arrays.items()})


def _files(run, folder: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((run.path / folder).iterdir())}


def test_cycle_writes_a_complete_run(finished, zoo, capsys):
    from workbench.qd.archive_map import read_archive_map
    from workbench.qd.pyribs import read_pyribs
    from workbench.qd.run import load_run, rebuild_model

    root, store, ids, results = finished
    run = store.open(ids[0])
    info = run.info
    assert results[0]["status"] == "done" and results[0]["generations"] == GENS and info["iterations"] == GENS + 1
    assert info["config"]["batch"] == 2
    assert info["kind"] == "qd" and info["metric"] == "qd_score" and info["better"] == "higher"
    assert info["method"] == "elite sampling + svd mutation (the paper's method)"
    assert (info["substrate"], info["fm"]) == ("elite+svd", "brackets+sort")  # the catalog's sampling+mutation, tasks
    assert info["seed_experts"] == {"brackets": "brackets", "sort": "sort"}
    assert info["config"]["mutation_scale"] == 1.0 and info["config"]["ranges"]["brackets"] == [0.0, 0.5]
    files = {p.name for p in run.path.iterdir()}
    assert {"run.json", "checkpoint.json", "metrics.parquet", "children.parquet", "archives.parquet", "archive_maps",
            "pyribs", "baselines.json", "scores.json", "baselines"} <= files
    assert not any(f.endswith(".pkl") for f in files)
    assert sorted(p.name for p in (run.path / "archive_maps").iterdir()) == sorted(
        f"gen{g}_archive_map.json" for g in range(GENS + 1))
    # every evaluated child, with its lineage, scores on all tasks and the archives it entered
    _, cfg, qd = load_run(store, run.id)
    # --model: an id below the count of models (the count itself is none: one error, not a lookup's traceback),
    # its digits, or best:TASK; a float is no id (1.5 read as model 1)
    from workbench.qd.run import model_id_of

    last = qd.evaluated - 1
    assert model_id_of(run, qd, last) == model_id_of(run, qd, str(last)) == last
    for bad, message in ((qd.evaluated, f"--model {qd.evaluated}: run {run.id} has models 0 to {last}"),
                         (1.5, "--model takes a model id or best:TASK, got 1.5"),
                         (True, "--model takes a model id or best:TASK, got True")):
        with pytest.raises(ValueError, match=re.escape(message)):
            model_id_of(run, qd, bad)
    children = run.read_table("children").to_pylist()
    assert [c["id"] for c in children] == list(range(2 + GENS * 2)) and children[0]["seed_expert"] == "brackets"
    for c, r in zip(children, qd.records, strict=True):
        assert c["parents"] == r["parents"] and c["omegas"] == r["omegas"] and c["entered"] == r["entered"]
        assert c["score_brackets"] == r["scores"]["brackets"] and c["mutation_seed"] == r["mutation_seed"]
    # two parents per child drawn from an archive (those drawn from all archives, while the quality task's archive
    # held fewer than two elites, are no archive's sampling frequency)
    pools = [c["pool"] for c in children[2:]]
    assert len(pools) == GENS * 2 and set(pools) <= {"archive", "all archives", "single"}
    assert sum(c["draws_brackets"] + c["draws_sort"] for c in children) == 2 * pools.count("archive")
    metrics = run.read_table("metrics").to_pylist()
    assert [m["generation"] for m in metrics] == list(range(GENS + 1))
    # the archive each generation bred from: none for generation 0 (the seed experts), "" in the file (not null)
    assert [x["task"] for x in metrics] == ["", *(cfg.tasks[g % 2] for g in range(1, GENS + 1))]
    m = qd.metrics()
    assert [x["qd_score_sort"] for x in metrics] == m["qd_score"][:, 1].tolist()
    assert -info["best_loss"] == metrics[-1]["qd_score"] == pytest.approx(m["qd_score"][-1].sum())
    # coverage in all: the archives' mean (their coverages differ in some generation, so the max would not do)
    assert any(len(set(row)) > 1 for row in m["coverage"].tolist())
    assert [x["coverage"] for x in metrics] == pytest.approx(m["coverage"].mean(axis=1).tolist())
    # snapshots: the table's last generation is the final archives; the table, extended generation by generation
    # as the run went (ArchiveRows), is the one built from generation 0 at once
    from workbench.qd.run import archive_rows

    assert run.read_table("archives").to_pydict() == archive_rows(qd)
    archives = run.read_table("archives").to_pylist()
    last = {(a["task"], tuple(a["cell"])): (a["id"], a["quality"]) for a in archives if a["generation"] == GENS}
    for task in qd.tasks:
        got_ids, quality = qd.archives.grid(task)
        assert {cell: v for (t, cell), v in last.items() if t == task} == {
            tuple(int(i) for i in cell): (int(got_ids[tuple(cell)]), float(quality[tuple(cell)]))
            for cell in np.argwhere(got_ids >= 0)}
    # interop files: the final archive map and the pyribs archives hold the final archives
    entries = read_archive_map(run.path / "archive_maps" / f"gen{GENS}_archive_map.json", tasks=qd.tasks, bins=15)
    assert {t: sorted(e) for t, e in entries.items()} == {
        t: sorted(tuple(int(i) for i in c) for c in qd.archives.elites(t)[1]) for t in qd.tasks}
    ribs = read_pyribs(run.path / "pyribs")
    for task in qd.tasks:
        assert np.array_equal(ribs.grid(task)[0], qd.archives.grid(task)[0])
        assert np.array_equal(ribs.grid(task)[1], qd.archives.grid(task)[1], equal_nan=True)
    # the final report: the best model per task vs every baseline, on test prompts
    scores = json.loads((run.path / "scores.json").read_text())
    baselines = json.loads((run.path / "baselines.json").read_text())
    assert set(scores["per_task"]["brackets"]) == {"cycleqd", "cycleqd_one_model", "base", "expert", "task_arithmetic",
                                                   "multitask"}
    assert scores["n_test"] == {"brackets": 16, "sort": 16}
    assert scores["beats"]["sort"].keys() == {"base", "expert", "task_arithmetic", "multitask"}
    assert baselines["settings"]["multitask"]["steps"] == 5 and (run.path / "baselines" /
                                                                   "multitask.safetensors").is_file()
    from safetensors import safe_open

    with safe_open(run.path / "baselines" / "multitask.safetensors", framework="pt") as f:
        assert "seconds" not in f.metadata()  # its bytes are the run's, not the wall clock's
    assert json.loads((run.path / "baselines" / "multitask.json").read_text())["seconds"] == \
        baselines["settings"]["multitask"]["seconds"]
    assert "stream 4, the validation prompts (stream 3) left out" in scores["split"]
    best = scores["cycleqd"]["brackets"]
    assert best["validation"] == qd.scores(best["id"]) and info["test_scores"]["brackets"] == best["test"]["brackets"]
    # a kept child rebuilt from its lineage scores what it scored when it was told
    from workbench.qd.run import context

    ctx = context(cfg)
    from workbench.qd.baselines import test_sets

    test = test_sets(ctx)
    for task in cfg.tasks:   # test prompts: as many as asked, none of them a validation prompt
        prompts = {tuple(p) for p in test.items[task][0]}
        assert len(test.items[task][0]) == 16 and not prompts & {tuple(p) for p in ctx.validation.items[task][0]}
    # a child of a child (two levels of lineage): which seed makes one depends on the CPU's arithmetic (the zoo is
    # trained here), so the newest such child of either run
    grandchildren = [(run_id, r["id"]) for run_id in ids for r in load_run(store, run_id)[2].records
                     if r["kept"] and r["parents"] and max(r["parents"]) >= 2]
    assert grandchildren, "neither seed kept a child of a child"
    run_id, child = grandchildren[-1]
    _, cfg_child, qd_child = load_run(store, run_id)
    assert context(cfg_child).score(rebuild_model(store, run_id, child)) == qd_child.scores(child)
    # the catalog lists the run with its own columns and metric
    assert main(["runs", "list", "--runs", str(store.root)]) == 0
    out = capsys.readouterr().out
    assert "CycleQD runs" in out and "best qd_score ↑" in out and "brackets, sort" in out and "svd" in out
    # counted in generations, as --gens is: generation 0 (the seed experts) is not one of them
    (line,) = [line for line in out.splitlines() if run.id in line]
    assert "generations" in out and f" {GENS} " in line and f" {GENS + 1} " not in line
    from workbench.dashboards.runs import RunsModel

    gallery = RunsModel(runs_dir=str(store.root))
    (card,) = [gallery.card(r) for r in store.list() if r["id"] == run.id]
    assert card["steps"] == f"{GENS} generations" and card["iterations"] == GENS + 1
    (listed,) = gallery.table().query("id == @run.id").to_dict("records")  # the page's table counts them so too
    assert (listed["done"], listed["unit"]) == (GENS, "generations")
    assert listed["what"].startswith("brackets+sort · ") and listed["what"].endswith(" · svd"), listed["what"]
    gallery.query = "svd"  # the page's search finds what its table says (a run's mutation was not searched)
    assert run.id in [r["id"] for r in gallery.shown()]
    gallery.query = ""
    for compared in ids:
        gallery.toggle(compared)
    (listed,) = gallery.settings_table().query("id == @run.id").to_dict("records")
    assert (listed["done"], listed["unit"]) == (GENS, "generations")
    assert main(["runs", "compare", *ids, "--runs", str(store.root)]) == 0
    out = capsys.readouterr().out
    (line,) = [line for line in out.splitlines() if ids[0] in line]
    assert "generations" in out and f" {GENS} " in line and f" {GENS + 1} " not in line
    (row,) = [r for r in store.list() if r["id"] == run.id]
    assert row["tasks"] == ["brackets", "sort"] and row["sampling"] == "elite" and row["mutation"] == "svd"
    assert row["columns"] == ["tasks", "sampling", "mutation"] and row["best"] == -info["best_loss"]


def test_resume_after_sigkill_equals_an_uninterrupted_run(finished, tmp_path, zoo):
    """Seed 1 of CYCLE killed after generation 2 and resumed equals the fixture's uninterrupted seed-1 run."""
    _, whole, ids, results = finished
    killed = _cli(*CYCLE, "--zoo", str(zoo), "--seed", "1", "--runs", "killed", cwd=tmp_path)
    store = RunStore(tmp_path / "killed")
    row = kill_after(killed, store, 3)
    reference = results[SEEDS.index(1)]
    run_id = row["id"]
    assert 3 <= row["iterations"] < GENS + 1, "the kill should land mid-run"
    assert row["status"] == "interrupted"
    assert row["resume_command"] == f"workbench qd cycle --resume {run_id} --runs {store.root}"
    resumed = run_command(f"workbench qd cycle --resume {run_id[:-1]} --runs killed --quiet", cwd=tmp_path)
    result = _done(resumed)
    assert result["status"] == "done" and result["generations"] == GENS
    a, b = whole.open(reference["id"]), store.open(run_id)
    assert a.info["seed"] == b.info["seed"] == 1
    assert b.info["resumes"][0]["from_generation"] >= 3
    assert result["qd_score"] == reference["qd_score"] and result["test_scores"] == reference["test_scores"]
    children = _table(a, "children")
    assert sum(c["kept"] for c in children[2:]) >= 3, "children should enter the archives"
    assert any(max(c["parents"] or [0]) >= 2 and c["kept"] for c in children), "children of children too"
    assert children == _table(b, "children")
    assert _table(a, "metrics") == _table(b, "metrics")
    assert _table(a, "archives") == _table(b, "archives")
    assert _qd_state(a) == _qd_state(b)
    assert _files(a, "archive_maps") == _files(b, "archive_maps")
    assert _files(a, "pyribs") == _files(b, "pyribs")
    assert (a.path / "scores.json").read_text() == (b.path / "scores.json").read_text()
    base_a, base_b = (json.loads((r.path / "baselines.json").read_text()) for r in (a, b))
    assert base_a["test"] == base_b["test"]


def test_a_finished_run_goes_on_to_more_generations_as_a_run_started_with_them(finished, tmp_path, zoo):
    """Seed 1 of CYCLE run to generation GENS − 2, then `--resume ID --gens GENS`: equals the fixture's seed-1 run
    (every table, file and score); a lower --gens is refused in one line."""
    _, whole, _, results = finished
    args = list(CYCLE)
    args[args.index("--gens") + 1] = str(GENS - 2)
    short = _done(_cli(*args, "--zoo", str(zoo), "--seed", "1", "--runs", "runs", cwd=tmp_path))
    assert short["generations"] == GENS - 2
    # a refusal, no bits compared: forked from the torch-importing server (still a process of its own)
    lower = _short("qd", "cycle", "--resume", short["id"], "--gens", "1", "--runs", "runs", cwd=tmp_path)
    out, err = lower.communicate(timeout=120)
    assert lower.returncode == 2 and f"has done {GENS - 2} generations of its --gens {GENS - 2}: --gens 1 would end " \
                                     f"it before that" in err
    result = _done(run_command(f"workbench qd cycle --resume {short['id']} --gens {GENS} --runs runs --quiet",
                               cwd=tmp_path))
    reference = results[SEEDS.index(1)]
    assert result["status"] == "done" and result["generations"] == GENS
    assert result["qd_score"] == reference["qd_score"] and result["test_scores"] == reference["test_scores"]
    a, b = whole.open(reference["id"]), RunStore(tmp_path / "runs").open(short["id"])
    assert b.info["config"] == a.info["config"]
    assert b.info["resumes"][-1]["total"] == GENS and b.info["resumes"][-1]["from_generation"] == GENS - 1
    assert b.info["resumes"][-1]["previous_end"]["test_scores"] and b.info["test_scores"] == a.info["test_scores"]
    for name in ("children", "metrics", "archives"):
        assert _table(a, name) == _table(b, name), name
    assert _qd_state(a) == _qd_state(b)
    assert _files(a, "archive_maps") == _files(b, "archive_maps") and _files(a, "pyribs") == _files(b, "pyribs")
    assert (a.path / "scores.json").read_text() == (b.path / "scores.json").read_text()


def test_a_resumed_cycle_tells_its_progress_bar_the_generation_it_goes_on_from(finished, tmp_path, capsys):
    """run_cycleqd wraps its on_iteration (the archives written first): a progress bar's `resumed` was lost
    there, and a resumed CycleQD run's bar read "setting up …" until its next generation ended."""
    import shutil

    from workbench.progress import Progress
    from workbench.qd.run import run_cycleqd

    _, whole, ids, _ = finished
    shutil.copytree(whole.root / ids[0], tmp_path / "runs" / ids[0])  # a copy: the fixture's run stays as it is
    capsys.readouterr()
    run_cycleqd(None, RunStore(tmp_path / "runs"), resume=ids[0], gens=GENS + 1, on_iteration=Progress("qd"))
    lines = [line.split(" · ")[0] for line in capsys.readouterr().err.splitlines() if line.startswith("qd: ")]
    assert lines == [f"qd: {GENS + 1}/{GENS + 2}", f"qd: {GENS + 2}/{GENS + 2}"], lines


def test_batches_serial_equal_dask_with_either_transfer(finished, tmp_path, zoo):
    """Seed 3 of CYCLE on a Dask cluster, with either transfer, equals the fixture's serial seed-3 run."""
    from dask.distributed import LocalCluster

    _, serial, ids, finished_results = finished
    args = [*CYCLE, "--zoo", str(zoo), "--seed", "3"]
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=40) as cluster:
        # both transfers on one cluster (--workers N starts one of its own through the same code: NAMM's tests)
        dask = ["--dask", cluster.scheduler_address]
        procs = {"weights": _cli(*args, "--runs", "weights", "--transfer", "weights", *dask, cwd=tmp_path),
                 "lineage": _cli(*args, "--runs", "lineage", *dask, cwd=tmp_path)}  # the default transfer
        results = {name: _done(proc) for name, proc in procs.items()}
    results["serial"] = finished_results[SEEDS.index(3)]
    runs = {name: RunStore(tmp_path / name).open(r["id"]) for name, r in results.items() if name != "serial"}
    runs["serial"] = serial.open(results["serial"]["id"])
    assert "--dask" not in runs["serial"].info["command"] and "--dask" in runs["lineage"].info["command"]
    reference = _table(runs["serial"], "children")
    assert len(reference) == 2 + GENS * 2 and sum(c["kept"] for c in reference[2:]) >= 2
    assert [c["index"] for c in reference[2:]] == [0, 1] * GENS
    for name in ("weights", "lineage"):
        assert runs[name].info["config"]["transfer"] == name
        assert _table(runs[name], "children") == reference, name
        assert _table(runs[name], "metrics") == _table(runs["serial"], "metrics"), name
        assert _qd_state(runs[name]) == _qd_state(runs["serial"]), name
        assert results[name]["test_scores"] == results["serial"]["test_scores"]


def _hashes(path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*"))
            if p.is_file()}


def test_bad_input_is_one_error_naming_the_fix_and_writes_nothing(tmp_path, zoo, quick_zoo, capsys):
    from workbench.merge.evolution import EvolveConfig, evolve

    runs = tmp_path / "runs"
    merge = evolve(EvolveConfig(zoo=str(quick_zoo), models=["add", "sort"], iters=1, pop=4, n_eval=4, n_test=4),
                   RunStore(runs))
    before = _hashes(runs)
    base = ["qd", "cycle", "--zoo", str(zoo), "--runs", str(runs), "--gens", "1", "--quiet"]
    cases = [
        (["--tasks", "brackets", "srot"], "--tasks: unknown task 'srot'; choose from"),
        (["--tasks", "brackets", "sort", "brackets"], "'brackets' listed twice"),
        (["--tasks", "brackets"], "at least 2 tasks"),
        (["--tasks", "brackets", "sort", "reverse"], "no seed expert for 'reverse' (it has experts for brackets, "
                                                     "sort); drop it from --tasks or build a zoo with them"),
        (["--tasks", "brackets", "reverse", "add"], "no seed expert for 'reverse', 'add' (it has experts for brackets, "
                                                    "sort); drop them from --tasks"),
        (["--tasks", "brackets", "sort", "--range", "sort", "0.5", "0.5"], "--range sort 0.5 0.5: lo must be below hi"),
        (["--tasks", "brackets", "sort", "--range", "sort", "1", "0"], "lo must be below hi"),
        (["--tasks", "brackets", "sort", "--range", "add", "0", "1"], "--range names 'add', not among --tasks"),
        (["--tasks", "brackets", "sort", "--range", "sort", "low", "1"], "LO and HI must be numbers"),
        (["--tasks", "brackets", "sort", "--bins", "0"], "--bins must be a whole number of at least 1"),
        # a dense grid per archive: a typo took the machine's memory (20 GB) after the models had loaded
        (["--tasks", "brackets", "sort", "--bins", "100000000"], "--bins 100000000: 2 tasks make archives of "
                                                                   "100000000^1 cells, more than 1,000,000"),
        (["--tasks", "brackets", "sort", "--batch", "0"], "--batch must be a whole number of at least 1"),
        (["--tasks", "brackets", "sort", "--transfer", "weights"], "--transfer says how children reach Dask workers"),
        (["--tasks", "brackets", "sort", "--merge-recipe", str(tmp_path / "none.yaml")], "--merge-recipe: no file"),
        (["--resume", merge.id], f"is a merge run, not qd; resume it with workbench merge evolve --resume {merge.id}"),
        (["--resume", "nope"], "no run 'nope'"),
    ]
    for extra, message in cases:
        assert main([*base, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and err.startswith("error:"), (extra, err)
        assert message in err, (extra, err)
        assert _hashes(runs) == before, extra   # nothing written, nothing lost
    # reading a run of another kind: its kind, without the resume a --resume is told (no resume was asked for)
    assert main(["qd", "report", merge.id, "--runs", str(runs)]) == 2
    err = capsys.readouterr().err
    assert f"run {merge.id} is a merge run, not qd" in err and "resume" not in err, err
    # archive maps: corrupt, foreign (a run.json), bins < 1, a range, a folder under a file, a task's name that is
    # no file's (it wrote outside --pyribs, then failed half-way)
    (tmp_path / "gen3_archive_map.json").write_text('{"brackets": {"0": {"quality": 0.5')
    entry = {"0": {"quality": 0.5, "model_path": "m/gen_1", "sampling_freq": 1, "validation_quality": None}}
    (tmp_path / "gen4_archive_map.json").write_text(json.dumps({"../out": entry, "b": entry}))
    (tmp_path / "afile").write_text("")
    good = tmp_path / "gen5_archive_map.json"
    good.write_text(json.dumps({"a": entry, "b": entry}))
    (tmp_path / "picture.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00")
    for path, extra, message in [(tmp_path / "gen3_archive_map.json", [], "not valid JSON"),
                                 (tmp_path, [], "is a folder: give one of its gen{N}_archive_map.json files"),
                                 (tmp_path / "picture.png", [], "is not a JSON archive map: SakanaAI/CycleQD's"),
                                 (runs / merge.id / "run.json", [], "is not a CycleQD archive map"),
                                 (good, ["--bins", "0"], "--bins must be a whole number of at least 1"),
                                 (good, ["--bins", "100000000"], "--bins 100000000: 2 tasks make archives"),
                                 (good, ["--range", "a", "1", "0"], "--range a 1 0: lo must be below hi"),
                                 (good, ["--pyribs", str(tmp_path / "afile" / "x")], "afile is a file; give a new"),
                                 (tmp_path / "gen4_archive_map.json", ["--pyribs", str(tmp_path / "ribs4")],
                                  "tasks ['../out']: a task's archive is written to <folder>/<task>.parquet")]:
        assert main(["qd", "archive", str(path), *extra]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "out.parquet").exists() and not (tmp_path / "ribs4").exists()
    # in a real process: the error line only, nothing on stdout, nothing in the store
    proc = _short(*base, "--tasks", "brackets", cwd=tmp_path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and out == "" and len(err.strip().splitlines()) == 1 and "at least 2 tasks" in err
    assert _hashes(runs) == before


def test_archive_map_and_pyribs_round_trips_in_the_cli(finished, tmp_path):
    from workbench.qd.archive_map import archives_from_map, read_archive_map
    from workbench.qd.pyribs import read_pyribs
    from workbench.qd.run import load_run

    root, store, ids, _ = finished
    run, _, qd = load_run(store, ids[0])
    path = run.path / "archive_maps" / f"gen{GENS}_archive_map.json"
    proc = _short("qd", "archive", str(path), "--range", "brackets", "0", "0.5", "--pyribs", str(tmp_path / "ribs"),
                "--json", cwd=tmp_path)
    summary = _done(proc)
    for k, task in enumerate(qd.tasks):
        assert summary["archives"][task]["coverage"] == qd.metrics()["coverage"][-1, k]
        assert summary["archives"][task]["qd_score"] == pytest.approx(qd.metrics()["qd_score"][-1, k])
    # a run's own map file reads at the run's bins and ranges (the file holds neither), a copy elsewhere at 15 on [0, 1]
    again = _done(_short("qd", "archive", str(path), "--json", cwd=tmp_path))
    assert again["ranges"] == {"brackets": [0.0, 0.5], "sort": [0.0, 1.0]} and again["archives"] == summary["archives"]
    shutil.copy(path, tmp_path / path.name)
    assert _done(_short("qd", "archive", str(tmp_path / path.name), "--json", cwd=tmp_path))["ranges"]["brackets"] == \
        [0.0, 1.0]
    entries = read_archive_map(path)
    archives, paths = archives_from_map(entries, {"brackets": (0.0, 0.5), "sort": (0.0, 1.0)})
    ribs = read_pyribs(tmp_path / "ribs")
    assert summary["model_paths"] == paths and ribs.ranges == archives.ranges
    for task in qd.tasks:
        assert np.array_equal(ribs.grid(task)[0], archives.grid(task)[0])
        assert np.array_equal(ribs.grid(task)[1], archives.grid(task)[1], equal_nan=True)
        assert np.array_equal(ribs.grid(task)[1], qd.archives.grid(task)[1], equal_nan=True)


def test_pyribs_conversion_keeps_right_closed_cells(tmp_path):
    """Scores exactly on interior edges: pyribs' own binning of them would move them one cell up; the files
    carry our cells (index) and measures moved into them, so re-inserting the rows lands in our cells."""
    from ribs.archives import GridArchive

    from workbench.qd import TaskArchives, bin_ids
    from workbench.qd.pyribs import read_pyribs, read_pyribs_frame, to_grid_archive, write_pyribs

    tasks = ["sort", "reverse", "brackets"]
    ranges = {"sort": (0.0, 1.0), "reverse": (0.0, 0.45), "brackets": (0.0, 0.75)}
    archives = TaskArchives(tasks, ranges, bins=15)
    edges = {t: np.linspace(*ranges[t], 16) for t in tasks}
    scores = {0: {"sort": 0.9, "reverse": edges["reverse"][3], "brackets": edges["brackets"][7]},
              1: {"sort": edges["sort"][5], "reverse": 0.05, "brackets": 0.5},
              2: {"sort": 1.3, "reverse": -0.1, "brackets": edges["brackets"][14]}}
    for i, s in scores.items():
        archives.add(i, s)
    grid = GridArchive(solution_dim=1, dims=[15, 15], ranges=[ranges["reverse"], ranges["brackets"]])
    raw = np.array([[scores[0]["reverse"], scores[0]["brackets"]]])
    assert grid.int_to_grid_index(grid.index_of(raw)).tolist() == [[3, 7]]              # pyribs: left-closed
    assert [int(bin_ids(scores[0][t], *ranges[t])) for t in ("reverse", "brackets")] == [2, 6]   # ours
    write_pyribs(tmp_path, archives, scores)
    back = read_pyribs(tmp_path)
    for task in tasks:
        assert np.array_equal(back.grid(task)[0], archives.grid(task)[0])
        assert np.array_equal(back.grid(task)[1], archives.grid(task)[1], equal_nan=True)
        frame, meta = read_pyribs_frame(tmp_path / f"{task}.parquet")
        assert meta["axes"] == archives.axes(task) and meta["bins"] == 15
        fresh = GridArchive(solution_dim=1, dims=[15, 15], ranges=[ranges[t] for t in archives.axes(task)],
                            solution_dtype=np.int64)
        fresh.add(frame.get_field("solution"), frame.get_field("objective"), frame.get_field("measures"))
        assert sorted(fresh.data("index").tolist()) == sorted(frame.get_field("index").tolist())
        raw_scores = frame.get_field("scores")
        ids = frame.get_field("solution")[:, 0]
        assert all(raw_scores[r].tolist() == [scores[int(i)][t] for t in tasks] for r, i in enumerate(ids))
    live = to_grid_archive(archives, "sort", scores)
    cells = dict(zip(live.data("solution")[:, 0].tolist(), live.int_to_grid_index(live.data("index")).tolist(),
                     strict=True))
    assert cells[0] == [2, 6]   # model 0's edge scores: our cell, not pyribs' [3, 7]


def test_report_and_export_in_their_own_processes(finished, tmp_path):
    from workbench.lm.evaluation import StateDictEvaluator
    from workbench.lm.models import load_model
    from workbench.qd.run import load_run

    root, store, ids, _ = finished
    report = _done(_short("qd", "report", ids[0], ids[1], "--runs", str(store.root), "--json", cwd=tmp_path))
    assert report["runs"] == ids and report["seeds"] == [3, 1]
    assert report["differs"] == []   # replicates: only the seed differs (else a note says which settings mix)
    scores = [json.loads((store.open(i).path / "scores.json").read_text()) for i in ids]
    entry = report["per_task"]["brackets"]
    values = [s["per_task"]["brackets"]["cycleqd"] for s in scores]
    assert entry["scores"]["cycleqd"]["values"] == values
    assert entry["scores"]["cycleqd"]["mean"] == pytest.approx(np.mean(values))
    assert entry["scores"]["cycleqd"]["std"] == pytest.approx(np.std(values, ddof=1))
    versus = entry["cycleqd_vs"]["task_arithmetic"]
    assert versus["runs"] == 2 and versus["wins"] == sum(s["beats"]["brackets"]["task_arithmetic"] for s in scores)
    assert set(entry["cycleqd_vs"]) == set(scores[0]["beats"]["brackets"])  # CycleQD's one model is not beaten
    for task in ("brackets", "sort"):  # a win is a strict beat: a tie (sort's scores near 0 tie often) is none
        for m, versus in report["per_task"][task]["cycleqd_vs"].items():
            assert versus["wins"] == sum(s["beats"][task][m] for s in scores), (task, m)
    assert report["missing"] == {}

    run, cfg, qd = load_run(store, ids[0])
    out = tmp_path / "best-brackets"
    proc = _short("qd", "export", ids[0], "--model", "best:brackets", "--out", str(out), "--runs", str(store.root),
                  cwd=tmp_path)
    printed, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "Writing model shards" not in err  # transformers' bar stays out of the command's output
    exported = json.loads(printed)
    model_id = exported["model"]
    assert model_id == scores[0]["cycleqd"]["brackets"]["id"]
    model, tok = load_model(str(out), device="cpu")
    evaluator = StateDictEvaluator(model, tok, cfg.tasks, n=cfg.n_eval, seed=cfg.seed, device="cpu")
    assert evaluator(model.state_dict()) == qd.scores(model_id)   # the exported weights are the scored ones
    # each set of scores under its name (a probe: validation scores were printed as plain "scores")
    assert exported["validation_scores"] == qd.scores(model_id) and "scores" not in exported
    assert exported["test_scores"] == scores[0]["cycleqd"]["brackets"]["test"]
    assert json.loads((out / "lineage.json").read_text())["parents"] == qd.records[model_id]["parents"]
    umask = os.umask(0)
    os.umask(umask)  # as readable as any new folder (mkdtemp makes 0700, safetensors 0600 files)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((out / "model.safetensors").stat().st_mode) == 0o666 & ~umask


def test_cli_choices_match_the_library():
    from workbench.cli import qd as cli_qd
    from workbench.qd import run
    from workbench.qd.operators import MUTATIONS
    from workbench.qd.sampling import SAMPLERS

    assert cli_qd.SAMPLINGS == tuple(SAMPLERS) and cli_qd.MUTATIONS == tuple(MUTATIONS)
    assert cli_qd.TRANSFERS == run.TRANSFERS
    assert set(cli_qd.CYCLE_FIELDS.values()) | {"ranges"} == set(run.FLAGS)


def test_a_runs_zoo_is_read_from_anywhere_and_found_again_where_it_moved(tmp_path, zoo, capsys, monkeypatch):
    """A relative --zoo is recorded as the folder it names (an export, a resume or the page from another folder
    read no zoo, or another); a zoo moved is given to a resume as --zoo DIR, checked by its zoo.json, and the run
    records where it is now; another zoo is refused; a resume that fails leaves no entry in run.json."""
    import shutil

    from workbench.lm.zoo import ZooConfig, build_zoo

    here = tmp_path / "here"
    shutil.copytree(zoo, here / "zoo")
    monkeypatch.chdir(here)
    short = ["qd", "cycle", "--tasks", "brackets", "sort", "--gens", "1", "--n-eval", "4", "--n-test", "4",
             "--multitask-steps", "0", "--runs", str(tmp_path / "runs"), "--quiet"]
    assert main([*short, "--zoo", "zoo"]) == 0
    run_id = json.loads(capsys.readouterr().out)["id"]
    store = RunStore(tmp_path / "runs")
    assert store.open(run_id).info["config"]["zoo"] == str(here / "zoo")
    monkeypatch.chdir(tmp_path)  # elsewhere: the run still reads its zoo
    assert main(["qd", "export", run_id, "--model", "0", "--out", str(tmp_path / "m0"), "--runs", "runs"]) == 0
    capsys.readouterr()
    (tmp_path / "afile").write_text("")  # bad --model and --out: named, before a model is rebuilt
    for extra, message in ((["--model", "99", "--out", "m9"], "--model 99: run "),
                           (["--model", "0", "--out", str(tmp_path / "afile" / "m")], "afile is a file, not a folder"),
                           (["--model", "0", "--out", "/proc/nope/m"], "--out /proc/nope/m: cannot make its folder")):
        assert main(["qd", "export", run_id, *extra, "--runs", "runs"]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    (here / "zoo").rename(tmp_path / "moved")  # the zoo moved: said, with the resume that finds it again
    assert main(["qd", "export", run_id, "--model", "0", "--out", str(tmp_path / "m1"), "--runs", "runs"]) == 2
    err = capsys.readouterr().err
    assert f"run {run_id}'s zoo {here / 'zoo'} is not there" in err and \
        f"--resume {run_id} --runs runs --zoo DIR" in err
    other = build_zoo(tmp_path / "other", ZooConfig.quick(tasks=("brackets", "sort"), base_steps=2, expert_steps=2))
    (tmp_path / "other").rename(here / "zoo")  # another zoo under the recorded name: refused, not read
    assert main(["qd", "export", run_id, "--model", "0", "--out", str(tmp_path / "m1"), "--runs", "runs"]) == 2
    assert "holds another zoo now" in capsys.readouterr().err
    (here / "zoo").rename(other)
    resumes = store.open(run_id).info.get("resumes", [])
    for zoo_given, message in ((other, "is not run"), (tmp_path / "nowhere", "is not run")):
        assert main(["qd", "cycle", "--resume", run_id, "--zoo", str(zoo_given), "--gens", "2", "--runs", "runs",
                     "--quiet"]) == 2
        assert message in capsys.readouterr().err
    assert main(["qd", "cycle", "--resume", run_id, "--gens", "2", "--runs", "runs", "--device", "cuda:7",
                 "--zoo", "moved", "--quiet"]) == 2  # no such device: refused before the resume is recorded
    capsys.readouterr()
    assert store.open(run_id).info.get("resumes", []) == resumes
    # a --range of a task the run has not got: named as typed (it said ranges.reverse)
    assert main(["qd", "cycle", "--resume", run_id, "--range", "reverse", "0", "1", "--zoo", "moved", "--runs", "runs",
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--range reverse" in err and "ranges.reverse" not in err, err
    assert main(["qd", "cycle", "--resume", run_id, "--gens", "2", "--zoo", "moved", "--runs", "runs",
                 "--quiet"]) == 0
    capsys.readouterr()
    info = store.open(run_id).info
    assert info["config"]["zoo"] == info["zoo"] == str(tmp_path / "moved") and info["status"] == "done"
    assert main(["qd", "export", run_id, "--model", "best:sort", "--out", str(tmp_path / "m2"), "--runs",
                 "runs"]) == 0


def test_the_runs_end_says_what_it_does_after_the_last_generation(tmp_path, zoo):
    """After the last generation (the bar full) the run scores its best models and the baselines and trains the
    multi-task one: a minute that looked like a hang; on_phase (the bar's text in the CLI) says each step."""
    from workbench.qd.run import QDRunConfig, run_cycleqd

    said: list[str] = []
    cfg = QDRunConfig(zoo=str(zoo), tasks=["brackets", "sort"], gens=1, n_eval=4, n_test=4, multitask_steps=3)
    run = run_cycleqd(cfg, RunStore(tmp_path), on_phase=said.append)
    assert run.info["status"] == "done"
    assert said[0] == "test scores of the best models and the baselines …"
    assert [s for s in said if s.startswith("multi-task baseline: step")][-1] == "multi-task baseline: step 3/3 …"
    assert said[-1] == "test scores of the multi-task baseline …"


def test_a_running_runs_files_never_run_ahead_of_its_checkpoint(tmp_path, zoo, monkeypatch):
    """Generations faster than a save are saved together (workbench.runs.save_share): children.parquet, the archives
    and the archive maps were written after every generation all the same, ahead of the checkpoint, so that the
    page's and `qd export`'s rebuild of a model children.parquet listed was refused ("run … has models 0 to 1"),
    and a kill left maps of generations its resume does again. They are written with each save, of what it saved."""
    import pyarrow.parquet as pq

    from workbench.qd.archive_map import archive_map_path
    from workbench.qd.run import QDRunConfig, archive_maps_dir, load_run, model_id_of, run_cycleqd

    monkeypatch.setenv("WORKBENCH_SAVE_SHARE", "1e-9")  # saved are the first generation and the last only
    store = RunStore(tmp_path / "runs")
    seen = []

    def check(done: int, total: int, row: dict) -> None:
        run, _, qd = load_run(store, store.list()[0]["id"])
        listed = pq.read_table(run.path / "children.parquet").num_rows
        maps = sorted(g for g in range(total) if archive_map_path(archive_maps_dir(run), g).exists())
        seen.append((done, run.info["iterations"], qd.generation, qd.evaluated, listed, maps))
        assert model_id_of(run, qd, listed - 1) == listed - 1  # the newest model listed, rebuilt from the checkpoint

    cfg = QDRunConfig(zoo=str(zoo), tasks=["brackets", "sort"], gens=4, batch=2, n_eval=8, n_test=4,
                      multitask_steps=1, ranges={"brackets": [0, 0.5]}, mutation_scale=1.0, seed=1)
    assert run_cycleqd(cfg, store, on_iteration=check).info["status"] == "done"
    assert [s[:2] for s in seen] == [(1, 1), (2, 1), (3, 1), (4, 1), (5, 5)], seen  # saves batched, as meant
    for _, saved, generation, evaluated, listed, maps in seen:
        assert generation == saved and listed == evaluated and maps == list(range(saved)), seen


def test_a_merge_recipe_is_kept_with_the_run_and_scored_as_a_baseline(tmp_path, zoo):
    """--merge-recipe: the run's own copy is made with its folder, before its run.json (a kill in between left a
    run listed as resumable whose resume was refused), and the recipe is scored on the test sets beside the other
    baselines, from the copy (the file given may be gone by then)."""
    from workbench.qd.run import QDRunConfig, run_cycleqd

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("merge_method: task_arithmetic\nbase_model: base\nmodels:\n"
                      "  - model: brackets\n    parameters: {weight: 0.5}\n"
                      "  - model: sort\n    parameters: {weight: 0.5}\n")
    cfg = QDRunConfig(zoo=str(zoo), tasks=["brackets", "sort"], gens=1, n_eval=4, n_test=4, multitask_steps=1,
                      merge_recipe=str(recipe))
    seen, text = [], recipe.read_text()

    def started(r):  # the run exists: its copy is recorded already, and the file given goes
        seen.append(r.info.get("inputs", {}).get("merge_recipe"))
        recipe.unlink()

    run = run_cycleqd(cfg, RunStore(tmp_path / "runs"), on_start=started)
    assert seen[0]["path"] == "inputs/recipe.yaml" and (run.path / "inputs" / "recipe.yaml").read_text() == text
    assert run.info["status"] == "done" and run.info["config"]["merge_recipe"] == "inputs/recipe.yaml"
    scores = json.loads((run.path / "scores.json").read_text())
    assert "merge_recipe" in scores["baselines"] and all("merge_recipe" in scores["per_task"][t] for t in cfg.tasks)


def test_bench_qd_keeps_each_run_it_times(tmp_path, zoo):
    """`workbench bench qd` (its own process, a real one-worker LocalCluster) at its smallest: the serial B = 1
    run the estimate is from, the batched serial run and the Dask run each under a key of their own (--batch 1
    wrote the batched run over the serial one), and no run left behind (its store is temporary). Its runs' sizes
    (--n-eval, --n-test, as `qd cycle`'s) are recorded: each run scored its children and its report on those."""
    done = _short("bench", "qd", "--zoo", str(zoo), "--tasks", "brackets", "sort", "--gens", "2", "--batch", "1",
                  "--batch-gens", "1", "--workers", "1", "--n-eval", "4", "--n-test", "4", "--json", cwd=tmp_path,
                  timeout=300)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert (out["n_eval"], out["n_test"]) == (4, 4), out
    runs = out["runs"]
    assert set(runs) == {"serial_b1", "serial_b1_g1", "dask_b1_w1_weights", "dask_b1_w1_lineage"}, sorted(runs)
    assert runs["serial_b1"]["gens"] == 2 and runs["serial_b1_g1"]["gens"] == 1
    assert out["estimate_200_generations"]["wall_s"] > 0 and list(tmp_path.iterdir()) == []
    # 200 generations after generation 0: 201 generations' files at the serial run's bytes per generation (3 of them)
    serial = runs["serial_b1"]
    assert out["estimate_200_generations"]["bytes"] == int(serial["bytes"]["total"] * 201 / 3)
    assert out["estimate_200_generations"]["wall_s"] == round(200 * serial["wall_s_mean"], 1)
    said = done.stderr.splitlines()  # minutes at its defaults: each run said as it starts (nothing was)
    assert said[:2] == ["serial run: 2 generations of 1 child", "serial run: 1 generation of 1 child"], said
    assert "Dask run (lineage to the workers): 1 generation of 1 child" in said


@pytest.mark.parametrize("flag", ["--n-eval", "--n-test"])
def test_bench_qd_refuses_a_bad_size_as_qd_cycle_does(tmp_path, zoo, flag):
    """A size of 0 for the bench's runs: one line naming the flag, `qd cycle`'s wording, before a model loads or a
    run starts (nothing said of a run, nothing written)."""
    done = _short("bench", "qd", "--zoo", str(zoo), "--tasks", "brackets", "sort", flag, "0", "--json", cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert done.stderr.strip() == f"error: {flag} must be a whole number of at least 1, got 0", done.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_bench_run_counts_seconds_per_child_and_bytes_per_folder(tmp_path, zoo):
    """One timed run of `bench qd` (B = 2): the seconds per child are the generation's over its B children, and the
    run folder's bytes are grouped by top-level file or folder (checkpoint.json and .npz as one), summing to the
    total, which is per generation over gens + 1 (generation 0 too)."""
    from workbench.qd.bench import _one
    from workbench.qd.run import QDRunConfig

    cfg = QDRunConfig(zoo=str(zoo), tasks=["brackets", "sort"], gens=2, batch=2, n_eval=4, n_test=4,
                      multitask_steps=0)
    out = _one(cfg, RunStore(tmp_path / "runs"))
    assert out["children"] == 4 and out["step_s"] > 0 and out["wall_s"] > 0
    assert out["step_s_per_child"] == pytest.approx(out["step_s"] / 2)
    assert out["wall_s_per_child"] == pytest.approx(out["wall_s"] / 2)
    sizes = out["bytes"]
    assert {"checkpoint", "run.json", "metrics.parquet", "archive_maps", "pyribs", "total"} <= set(sizes), sorted(sizes)
    assert not any(name.startswith("checkpoint.") or name.startswith("gen") for name in sizes), sorted(sizes)
    assert sizes["total"] == sum(v for k, v in sizes.items() if k != "total")
    assert out["bytes_per_generation"] == pytest.approx(sizes["total"] / 3)


def test_a_bench_stopped_mid_run_ends_quietly(tmp_path, zoo):
    """SIGTERM to `bench qd` while one of its runs goes: exit 143 and no traceback (the stop carried the run,
    whose temporary store was removed on the way out, and reading it for a resume command failed)."""
    import signal
    import subprocess
    import sys
    import time

    (tmp_path / "t").mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "workbench", "bench", "qd", "--zoo", str(zoo), "--tasks", "brackets",
                             "sort", "--gens", "100000", "--workers", "1", "--json"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TMPDIR": str(tmp_path / "t")})
    deadline = time.time() + 240
    started = lambda: any((tmp_path / "t").glob("bench-qd-*/runs/*/run.json"))  # noqa: E731 - a run goes
    while time.time() < deadline and proc.poll() is None and not started():
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "Traceback" not in err and out == "", (proc.returncode, err)
    assert not any((tmp_path / "t").glob("bench-qd-*")), "the bench's temporary store outlived it"


def test_the_bar_counts_generations_as_gens_does_and_ends_on_the_metric(tmp_path, zoo):
    """`qd cycle --gens 2` on a terminal: the bar counts 2 generations (generation 0, the seed experts' scores, is
    set-up: it showed 3/3), and what stays on screen at the end (the frame drawn as the bar stops) is the archives'
    metric, not the last phase ("test scores of the multi-task baseline …" read as still working). Whether a phase
    is drawn while it lasts depends on the bar's refresh clock: not asserted."""
    import re

    proc = _short("qd", "cycle", "--zoo", str(zoo), "--tasks", "brackets", "sort", "--gens", "2", "--n-eval", "4",
                  "--n-test", "4", "--multitask-steps", "1", "--runs", str(tmp_path), cwd=tmp_path,
                  env={"FORCE_COLOR": "1", "COLUMNS": "200"})  # rich draws as on a terminal
    assert proc.returncode == 0, proc.stderr
    frames = [f for f in re.split(r"[\r\n]", re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", proc.stderr)) if f.strip()]
    last = frames[-1]
    assert "2/2" in last and "3/3" not in "".join(frames) and "coverage" in last and "baseline" not in last, last
