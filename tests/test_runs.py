"""Searches end to end through the run store and the CLI: files, catalog, resume after a real kill, resume
checks (kind, contradicting flags), run-id prefixes, heartbeat and interrupted runs."""

import contextlib
import dataclasses
import hashlib
import html
import json
import math
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from forked import cli as _short
from PIL import Image
from procs import cli as _cli
from procs import kill_after, run_command

from workbench.asal.driver import SearchConfig, run_search
from workbench.asal.evaluate import EvalConfig
from workbench.cli import main
from workbench.runs import RunError, RunStore, effective_status, heartbeat, write_json


def test_target_search_writes_a_complete_run(tmp_path, capsys):
    target = tmp_path / "target.png"
    Image.fromarray(np.full((32, 32, 3), [200, 40, 40], np.uint8)).save(target)
    cfg = SearchConfig(kind="target", eval=EvalConfig("lenia", "pixels", steps=16, frames=2, chunk=4),
                       target_image=str(target), iters=3, pop=4, seed=1)
    store = RunStore(tmp_path / "runs")
    seen, shown = [], []
    run = run_search(cfg, store, on_iteration=lambda i, n, row: seen.append((i, n)),
                     on_population=lambda thetas, thumbs: shown.append(thumbs))
    assert seen == [(1, 3), (2, 3), (3, 3)]
    files = {p.name for p in run.path.iterdir()}
    assert {"run.json", "metrics.parquet", "population.parquet", "best.npy", "best.png", "best.mp4",
            "population.png", "checkpoint.json", "inputs"} <= files
    grid = np.asarray(Image.open(run.path / "population.png"))  # the last batch's final frames, 2 × 2
    t = shown[-1].shape[1]
    assert grid.shape == (2 * t, 2 * t, 3) and np.array_equal(grid[:t, t:], shown[-1][1])
    assert not any(name.endswith(".pkl") for name in files)
    info = run.info
    assert info["status"] == "done" and info["iterations"] == 3 and info["versions"]["torch"]
    metrics = run.read_table("metrics").to_pylist()
    assert [m["iteration"] for m in metrics] == [0, 1, 2]
    assert np.load(run.path / "best.npy").shape == (3117,)
    assert info["best_loss"] == min(m["loss_min"] for m in metrics)
    # the target image is the run's own copy, hashed; no path into the user's files is needed any more
    assert info["config"]["target_image"] == "inputs/target.png"
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    assert info["inputs"]["target_image"]["sha256"] == digest
    assert hashlib.sha256((run.path / "inputs" / "target.png").read_bytes()).hexdigest() == digest
    # best.png: the best θ's last frame at the render size, not the 74×74 thumbnail of the FM input
    assert np.asarray(Image.open(run.path / "best.png")).shape == (224, 224, 3)
    assert info["pid"] == os.getpid() and info["heartbeat"] > 0 and info["command"] is None  # a library call

    assert main(["runs", "list", "--json", "--runs", str(store.root)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {"id", "kind", "substrate", "fm", "status", "iterations", "best_loss"} <= set(rows[0])
    assert rows[0]["id"] == run.id and rows[0]["kind"] == "target"
    assert {k: rows[0][k] for k in ("metric", "better", "best", "algorithm", "method", "models", "columns",
                                    "resume_command")} == {
        "metric": "loss", "better": "lower", "best": info["best_loss"], "algorithm": "cma", "method": None,
        "models": None, "columns": ["substrate", "fm", "algorithm"], "resume_command": None}
    assert main(["runs", "show", run.id, "--runs", str(store.root), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert len(shown["metrics"]) == 3 and shown["metrics_rows"] == 3
    assert main(["runs", "show", run.id, "--runs", str(store.root), "--json", "--tail", "2"]) == 0
    tail = json.loads(capsys.readouterr().out)  # the last rows, and how many there are in all
    assert tail["metrics"] == shown["metrics"][-2:] and tail["metrics_rows"] == 3


def test_runs_show_totals_the_candidates_that_diverged(tmp_path, capsys):
    """`runs show` says how many of an ASAL run's candidates diverged (NaN or inf: ranked last) over all its rows,
    as `workbench asal` warns of them and the Search page says them, beside metrics_rows: --tail's last rows did
    not say it. Not for a run whose metrics do not count them (an older version's); nulls (its rows before a
    resume by this version) count none."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "black.png")
    cfg = SearchConfig("target", EvalConfig("plenia", "pixels", steps=20, size=32, chunk=4, device="cpu"),
                       target_image=str(tmp_path / "black.png"), iters=2, pop=4, sigma=100.0, seed=0)
    store = RunStore(tmp_path / "runs")
    run = run_search(cfg, store)
    rows = run.read_table("metrics").column("diverged").to_pylist()
    assert sum(rows) > rows[-1] > 0, rows  # (Particle Lenia at θ of 100 σ: members diverge at every iteration)

    def shown(*flags: str) -> dict:
        assert main(["runs", "show", run.id, "--runs", str(store.root), "--json", *flags]) == 0
        return json.loads(capsys.readouterr().out)

    tail = shown("--tail", "1")
    assert tail["diverged"] == sum(rows) and tail["metrics_rows"] == 2 and len(tail["metrics"]) == 1
    path = run.path / "metrics.parquet"
    table = pq.read_table(path)
    pq.write_table(table.set_column(table.column_names.index("diverged"), "diverged", pa.array([None, 2])), path)
    assert shown()["diverged"] == 2
    pq.write_table(table.drop_columns(["diverged"]), path)
    assert "diverged" not in shown() and shown()["metrics_rows"] == 2


SEARCHES = {
    "target": ["asal", "target", "--substrate", "boids", "--fm", "pixels", "--target-image", "target.png",
               "--steps", "40", "--frames", "2", "--size", "64", "--iters", "10", "--pop", "6", "--chunk", "3",
               "--seed", "5"],
    "ga": ["asal", "illuminate", "--substrate", "boids", "--fm", "pixels", "--algorithm", "ga", "--population", "12",
           "--pop", "4", "--steps", "30", "--size", "64", "--iters", "10", "--seed", "5"],
    "map-elites": ["asal", "illuminate", "--substrate", "boids", "--fm", "pixels", "--algorithm", "map-elites",
                   "--pop", "6", "--steps", "30", "--size", "64", "--iters", "10", "--seed", "5"],
}


def _target_png(folder: Path) -> None:
    Image.fromarray(np.full((24, 24, 3), [40, 200, 90], np.uint8)).save(folder / "target.png")


class Uninterrupted:
    """The uninterrupted run of each of SEARCHES (as given: --iters 10, seed 5), each in a fresh process of its own
    (`procs.cli`: bits compared across processes), started on first asking and shared by the module's tests that
    compare a resumed run with it: the resume after a kill, the resume of lagging saves (not the goes-on tests:
    their resumed runs are forked, and a forked run differed from a fresh one in a metric's last bit). Each runs in a
    folder of its own holding target.png, its store `whole` typed relative."""

    def __init__(self, root: Path):
        self.root, self.procs, self.results = root, {}, {}

    def start(self, search: str) -> None:
        """Start the run (if not yet started): alongside what the test does next, it takes no time of its own."""
        if search not in self.procs:
            (self.root / search).mkdir()
            _target_png(self.root / search)
            self.procs[search] = _cli(*SEARCHES[search], "--quiet", "--runs", "whole", cwd=self.root / search)

    def result(self, search: str) -> dict:
        """The command's JSON on stdout (its run's path, id, best loss), once it has ended."""
        self.start(search)
        if search not in self.results:
            proc = self.procs[search]
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
            self.results[search] = json.loads(out)
        return self.results[search]

    def run(self, search: str):
        return RunStore(self.root / search / "whole").open(self.result(search)["id"])

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=120)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    runs = Uninterrupted(tmp_path_factory.mktemp("uninterrupted"))
    yield runs
    runs.close()


@pytest.mark.parametrize("search", list(SEARCHES))
def test_resume_after_kill_equals_an_uninterrupted_run(tmp_path, search, uninterrupted):
    """SIGKILL a real process mid-run: the catalog says interrupted and gives the resume command; that
    command (with a prefix of the id) ends the run exactly as an uninterrupted one, from JSON + npz."""
    _target_png(tmp_path)
    args = [*SEARCHES[search], "--quiet"]
    uninterrupted.start(search)  # alongside the killed one: the test takes half the time
    killed = _cli(*args, "--runs", "killed", cwd=tmp_path)
    store = RunStore(tmp_path / "killed")
    row = kill_after(killed, store, 3)
    reference = uninterrupted.result(search)
    # the run's folder whole: `--runs whole`, typed relative, read after a cd (a script's next step) still finds it
    assert reference["path"] == str(uninterrupted.root / search / "whole" / reference["id"])
    run_id, done_before = row["id"], row["iterations"]
    assert 3 <= done_before < 10, "the kill should land mid-run"
    assert row["status"] == "interrupted"
    assert row["resume_command"] == f"workbench asal {SEARCHES[search][1]} --resume {run_id} --runs {store.root}"
    files = {p.name for p in store.open(run_id).path.iterdir()}
    assert "checkpoint.json" in files and not any(f.endswith(".pkl") for f in files)
    assert len([f for f in files if f.startswith("checkpoint-") and f.endswith(".npz")]) == 1

    shown = _short("runs", "show", run_id[:-2], "--runs", "killed", "--json", cwd=tmp_path)  # a unique prefix
    out, err = shown.communicate(timeout=120)
    assert shown.returncode == 0, err
    shown = json.loads(out)
    assert shown["id"] == run_id and shown["status"] == "interrupted" and shown["recorded_status"] == "running"
    assert shown["resume_command"] == row["resume_command"].replace(str(store.root), "killed")
    assert shown["command"] == shlex.join(["workbench", *args, "--runs", "killed"])

    resumed = run_command(row["resume_command"].replace(run_id, run_id[:-2]) + " --quiet", cwd=tmp_path)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    result = json.loads(out)
    assert result["status"] == "done" and result["iterations"] == 10
    assert result["best_loss"] == reference["best_loss"]
    a = uninterrupted.run(search)
    b = store.open(run_id)
    assert b.status == "done" and b.resume_command is None
    assert b.info["resumes"][0]["from_iteration"] >= done_before
    np.testing.assert_array_equal(np.load(a.path / "best.npy"), np.load(b.path / "best.npy"))
    losses = lambda r: [(m["loss_min"], m["loss_mean"]) for m in r.read_table("metrics").to_pylist()]  # noqa: E731
    assert losses(a) == losses(b)
    assert a.read_table("population").to_pylist() == b.read_table("population").to_pylist()
    if search == "target":
        assert (b.path / "best.png").exists() and b.info["inputs"] == a.info["inputs"]
    else:
        np.testing.assert_array_equal(np.load(a.path / "thumbs.npy"), np.load(b.path / "thumbs.npy"))


def test_a_kill_while_the_saves_lag_resumes_to_an_uninterrupted_run(tmp_path, uninterrupted):
    """Iterations faster than a save are saved together (workbench.runs.save_share): a kill between two saves loses
    the iterations done since the last, and the resume does them again, to the same bits (those of the run that
    saved every iteration: the share moves no bit). At a tiny share only the first iteration and the last are
    saved: the kill lands with eight unsaved iterations done or under way."""
    _target_png(tmp_path)
    args, lagging = [*SEARCHES["target"], "--quiet"], {"WORKBENCH_SAVE_SHARE": "1e-9"}
    uninterrupted.start("target")
    killed = _cli(*args, "--runs", "killed", cwd=tmp_path, env=lagging)
    store = RunStore(tmp_path / "killed")
    row = kill_after(killed, store, 1)
    reference = uninterrupted.result("target")
    assert row["iterations"] == 1 and row["status"] == "interrupted", row  # the last not reached, nor saved
    run = store.open(row["id"])
    assert run.load_checkpoint()["iteration"] == 1 and len(run.read_table("metrics")) == 1
    resumed = subprocess.run([sys.executable, "-m", "workbench", "asal", "target", "--resume", row["id"], "--runs",
                              "killed", "--quiet"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                             env={**os.environ, **lagging})
    assert resumed.returncode == 0, resumed.stderr
    a, b = uninterrupted.run("target"), store.open(row["id"])
    assert b.info["iterations"] == 10 and b.info["best_loss"] == reference["best_loss"]
    np.testing.assert_array_equal(np.load(a.path / "best.npy"), np.load(b.path / "best.npy"))
    drop = lambda r: r.read_table("metrics").to_pandas().drop(columns="seconds")  # noqa: E731
    pd.testing.assert_frame_equal(drop(a), drop(b))
    assert a.read_table("population").to_pylist() == b.read_table("population").to_pylist()


def test_sigterm_stops_a_run_resumable_as_ctrl_c_does(tmp_path):
    """SIGTERM (`kill`, a cluster scheduler's stop) to the command alone: the run stops after its iteration, marked
    stopped, the command says how to resume it and exits 143 (it died at once and left its run marked running)."""
    import signal

    _target_png(tmp_path)
    args = [*SEARCHES["target"][:-6], "--iters", "100000", "--pop", "4"]
    proc = _cli(*args, "--runs", "runs", cwd=tmp_path)
    store = RunStore(tmp_path / "runs")
    row = kill_after(proc, store, 2, sig=signal.SIGTERM)
    err = proc.stderr.read()
    assert proc.returncode == 143, (proc.returncode, err)
    assert "Traceback" not in err and f"stopped: run {row['id']} is resumable: workbench asal target --resume" in err
    assert row["status"] == "stopped" and row["iterations"] >= 2
    store.open(row["id"]).check_resumable()


def test_checkpoints_encode_each_appended_row_once_and_write_the_bytes_of_a_whole_encode(tmp_path):
    """Run.save_checkpoint keeps the JSON of the state's append-only rows (metrics, evaluations: RowsJSON) and
    encodes only rows added since: checkpoint.json is, byte for byte, what a Run that encodes the whole state
    writes, through odd values, a row with a NumPy scalar (left to pack), a state that spells the placeholder,
    another state (new lists, as a resume's) and a list cut short."""
    import re

    from workbench.runs import RowsJSON

    class EncodeAll(RowsJSON):  # what save_checkpoint wrote before: every row packed with the whole state
        def held(self, state: dict) -> dict[str, list[str]]:
            return {}

    store = RunStore(tmp_path / "runs")
    kept, fresh = (store.create("merge", "x", "none", {}, seed) for seed in (0, 1))

    def text(run) -> str:
        """checkpoint.json with the rows of its .jsonl files where their placeholders stand (as one file)."""
        text = (run.path / "checkpoint.json").read_text()
        specs = json.loads(text).get("rows", {})
        text = text.replace(',"rows":' + json.dumps(specs, separators=(",", ":")), "")
        for key, spec in specs.items():
            lines = (run.path / spec["file"]).read_bytes()[:spec["bytes"]].decode().split("\n")[:-1]
            text = text.replace(json.dumps(f"\x00workbench-rows:{key}\x00"), "[" + ",".join(lines) + "]")
        return re.sub(r'"written":"[^"]*"', "", text)

    state = {"note": "ok", "iteration": 0, "metrics": [], "evaluations": [], "search": np.arange(3.0)}
    rows = [{"loss": 1.5, "x": -0.0, "name": "α→β \u0000", "inf": math.inf, "nan": math.nan, "l": [1, [2.5]]},
            {"loss": 0.25, "nested": {"a": [None, True]}}, {"loss": np.float64(0.5)}, {"loss": 2.0}]
    for i, row in enumerate(rows * 2):
        state["metrics"].append({**row, "iteration": i})
        state["evaluations"].extend({"i": i, "g": [float(i), 0.5]} for _ in range(3))
        state["iteration"] = i + 1
        if i == 5:  # another state: new lists (a resume's hold the same rows; these, one other)
            state = {**state, "metrics": list(state["metrics"]),
                     "evaluations": [{"i": -1, "g": []}, *state["evaluations"][1:]]}
        if i == 6:
            del state["evaluations"][-4:]
        if i == 7:  # a value spelling the placeholder, before it
            state["note"] = "\x00workbench-rows:evaluations\x00"
        kept.save_checkpoint(state)
        fresh._rows_json = EncodeAll()
        fresh.save_checkpoint(state)
        assert text(kept) == text(fresh)
        back = kept.load_checkpoint()
        assert back["metrics"][-1]["iteration"] == i and len(back["evaluations"]) == len(state["evaluations"])
    assert kept._rows_json.lists["evaluations"][1]  # the evaluations were kept as text (the metrics were not: the
    assert "metrics" not in kept._rows_json.lists    # NumPy scalar's list is left to pack)


def test_a_checkpoint_appends_its_rows_and_its_bytes_do_not_grow_with_the_run(tmp_path):
    """The append-only rows (metrics, evaluations) go to checkpoint-<key>.jsonl, appended at each save, not
    rewritten: checkpoint.json keeps its size as the run grows (it held every row: a recipe evolution's grew by
    3.3 kB an iteration, 1.6 GB written over 1,000). A row half-written by a kill is ignored on load and cut off by
    the next save; a format-1 checkpoint (its rows inline) still loads, and its resume's save writes the file."""
    store = RunStore(tmp_path / "runs")
    run = store.create("merge", "x", "none", {}, 0)
    state = {"iteration": 0, "metrics": [], "evaluations": [], "search": np.arange(3.0)}
    sizes = []

    def rows_path(run) -> Path:  # the evaluations' file, as checkpoint.json names it
        return run.path / json.loads((run.path / "checkpoint.json").read_text())["rows"]["evaluations"]["file"]

    def iterate(n: int, appended: bool = True) -> None:
        for _ in range(n):
            it = state["iteration"]
            state["metrics"].append({"iteration": it, "best_loss": 1.0 / (it + 1)})
            state["evaluations"].extend({"iteration": it, "index": j, "loss": math.sqrt(it + j),
                                         "genome": [math.sin(it * j + k) for k in range(24)]} for j in range(8))
            state["iteration"] = it + 1
            rows_file = rows_path(run) if (run.path / "checkpoint.json").exists() else None
            inode = rows_file.stat().st_ino if rows_file else None
            before = rows_file.read_bytes() if inode else b""
            run.save_checkpoint(state)
            rows_file = rows_path(run)
            sizes.append((run.path / "checkpoint.json").stat().st_size)
            if appended:  # to the same file, not a new one renamed over it
                assert rows_file.read_bytes().startswith(before) and inode in (None, rows_file.stat().st_ino)

    def same(a: dict, b: dict) -> None:
        assert a.keys() == b.keys() and a["metrics"] == b["metrics"] and a["evaluations"] == b["evaluations"]
        np.testing.assert_array_equal(a["search"], b["search"])

    iterate(60)
    assert sizes[-1] - sizes[9] < 64  # the counts' digits alone: a row is 600 bytes
    same(store.open(run.id).load_checkpoint(), state)
    with rows_path(run).open("ab") as f:  # a kill in the middle of the next save's append
        f.write(b'{"iteration":60,"index":0,"lo')
    resumed = store.open(run.id)
    same(resumed.load_checkpoint(), state)
    run = resumed  # a resumed process: its first save rewrites the file, without the half row
    iterate(1, appended=False)
    assert rows_path(run).read_bytes().count(b"\n") == len(state["evaluations"]) == 61 * 8
    assert len(list(run.path.glob("checkpoint-evaluations*.jsonl"))) == 1  # the old file deleted
    same(store.open(run.id).load_checkpoint(), state)
    # a checkpoint of format 1, its rows inline (as this version writes a state that spells a placeholder)
    old = store.create("merge", "x", "none", {}, 1)
    old.save_checkpoint({**state, "note": "\x00workbench-rows:evaluations\x00"})
    text = (old.path / "checkpoint.json").read_text()
    assert '"rows":' not in text and not list(old.path.glob("checkpoint-*.jsonl"))
    (old.path / "checkpoint.json").write_text(text.replace('"format":2', '"format":1', 1))
    back = store.open(old.id).load_checkpoint()
    assert back.pop("note") == "\x00workbench-rows:evaluations\x00"
    same(back, state)
    store.open(old.id).save_checkpoint(back)
    assert rows_path(old).exists()
    same(store.open(old.id).load_checkpoint(), state)


def test_a_kill_before_checkpoint_json_of_a_save_whose_rows_start_over_leaves_the_last_checkpoint(tmp_path):
    """Where a save writes its rows whole (a process's first save, a rows list cut short or replaced), it must not
    write them over the file the checkpoint.json on disk counts: a kill before the new checkpoint.json's rename left
    the old one counting bytes the file no longer held, and the run could not be resumed ("corrupt"); a page that
    had read the old checkpoint.json got the same error instead of a retry. The kill is played back from the folder
    after the save: its checkpoint.json as before, and what the save deleted (only after that rename) still there."""
    store = RunStore(tmp_path / "runs")
    run = store.create("merge", "x", "none", {}, 0)
    rows = [{"iteration": i, "loss": math.nan if i == 3 else i / 7, "name": "α\nβ"} for i in range(6)]
    state = {"iteration": 6, "metrics": [{"iteration": 0, "best_loss": 1.0}], "evaluations": rows,
             "search": np.arange(3.0)}
    run.save_checkpoint(state)
    before = {p.name: p.read_bytes() for p in run.path.iterdir() if p.name.startswith("checkpoint")}
    for evaluations in (rows[:2], rows[:2] + [{"iteration": 9, "loss": 0.5, "name": "γ"}]):  # cut short, replaced
        run.save_checkpoint({**state, "evaluations": evaluations})
        (run.path / "checkpoint.json").write_bytes(before["checkpoint.json"])  # the kill, before its rename
        for name, data in before.items():
            if not (run.path / name).exists():
                (run.path / name).write_bytes(data)
        back = store.open(run.id).load_checkpoint()
        assert json.dumps(back["evaluations"]) == json.dumps(rows) and back["metrics"] == state["metrics"]
        run = store.open(run.id)  # the resumed process


def test_growing_tables_convert_new_rows_only_and_write_the_bytes_of_a_whole_conversion(tmp_path):
    """Run.write_rows (metrics.parquet every iteration) and GrowingTable convert only the rows added since the last
    write: the file is the one the whole conversion writes, one chunk (Parquet closes pages where chunks end), through
    a column of Nones that becomes floats (made at once), another list, a list trimmed and grown again, and columns."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from workbench.runs import GrowingTable

    def written(table: pa.Table) -> bytes:
        out = io.BytesIO()
        pq.write_table(table, out)
        return out.getvalue()

    run = RunStore(tmp_path / "runs").create("target", "lenia", "none", {}, 0)
    grown, rows = GrowingTable(), []
    for i in range(40):
        rows.append({"iteration": i, "loss": 1.0 / (i + 1), "note": None if i < 5 else f"n{i}", "x": [i, 0.5]})
        if i == 20:  # another list (a resume's holds the same rows; this one, one other)
            rows = [dict(rows[0], loss=-1.0), *rows[1:]]
        if i == 30:  # trimmed by two and grown by two: as long as at the last write, another row at its end
            del rows[-2:]
            rows += [{"iteration": 99, "loss": 0.0, "note": "again", "x": []}, dict(rows[-1])]
        table = grown(rows)
        assert table.column(0).num_chunks == 1 and written(table) == written(pa.Table.from_pylist(rows))
        run.write_rows("metrics", rows)
        assert (run.path / "metrics.parquet").read_bytes() == written(pa.Table.from_pylist(rows))
    columns, grown = {"a": [], "b": []}, GrowingTable()
    for i in range(5):
        columns["a"].append(i)
        columns["b"].append([str(i)] * i)
        assert written(grown(columns)) == written(pa.Table.from_pydict(columns))
    columns["a"] = [-1, *columns["a"][1:]]  # a column swapped for another list: other rows
    assert written(grown(columns)) == written(pa.Table.from_pydict(columns))
    grown, rows = GrowingTable(), [{"v": [0.5]}, {"v": [1.0]}]
    grown(rows)
    del rows[1:]  # cut short in place, the same list: its table too
    assert grown(rows).num_rows == 1
    rows += [{"v": [1]}, {"v": [True]}]  # alone, no type of their own ([1] and [True]); with the rest, doubles
    assert written(grown(rows)) == written(pa.Table.from_pylist(rows))


def test_corrupt_and_foreign_run_folders(tmp_path, capsys):
    store = RunStore(tmp_path)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "run.json").write_text("{ not json")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "run.json").write_text(json.dumps({"hello": 1}))
    for folder in ("snapshots", "figures"):  # what the Lab and the pages write beside the runs: not runs at all
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "lenia-seed0.png").write_bytes(b"")
    (tmp_path / "lost").mkdir()  # a run whose run.json was deleted: it went without a word
    (tmp_path / "lost" / "checkpoint.json").write_text("{}")
    (tmp_path / "lost" / "inputs").mkdir()  # not also "killed as it was created: delete the folder"
    assert store.unfinished(older_than=-1.0) == []
    assert store.list() == []
    assert sorted(store.broken()) == ["broken", "foreign"] and store.orphaned() == ["lost"]
    assert main(["runs", "list", "--runs", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "broken is not readable as a run" in err and "snapshots" not in err and "figures" not in err
    assert "broken is not readable as a run, left out: run.json is corrupt (" in err  # why, not `runs show` to ask
    assert "warning: lost holds a run's files but no run.json (deleted or lost?)" in err
    for name, message in (("broken", "corrupt"), ("broken", "restore run.json from a backup, or move the folder"),
                          ("foreign", "not a workbench run record (format 1): another program's folder? Keep it out"),
                          ("nope", "no run 'nope'")):
        assert main(["asal", "target", "--resume", name, "--runs", str(tmp_path), "--quiet"]) == 2
        assert message in capsys.readouterr().err
    with pytest.raises(RunError, match="corrupt"):
        store.open("broken")


def test_cli_bad_inputs(tmp_path, capsys, clip_weights, monkeypatch):
    runs = str(tmp_path / "runs")
    assert main(["asal", "target", "--substrate", "lenia", "--fm", "pixels", "--prompt", "a cell", "--runs", runs,
                 "--quiet"]) == 2
    assert "no text encoder" in capsys.readouterr().err
    assert main(["asal", "target", "--substrate", "lenia", "--fm", "pixels", "--runs", runs, "--quiet"]) == 2
    assert "--prompt TEXT" in capsys.readouterr().err
    assert main(["asal", "target", "--substrate", "lenia", "--fm", "pixels", "--target-image",
                 str(tmp_path / "none.png"), "--runs", runs, "--quiet", "--iters", "1"]) == 2
    assert "--target-image" in (err := capsys.readouterr().err) and "no such file" in err
    assert main(["asal", "target", "--substrate", "lenia", "--fm", "dinov3", "--prompt", "x", "--runs", runs]) == 2
    assert "unknown foundation model" in capsys.readouterr().err
    assert main(["asal", "target", "--substrate", "lenia", "--fm", "dino", "--prompt", "x", "--runs", runs]) == 2
    assert "dino has no text encoder" in capsys.readouterr().err
    # --frames not a multiple of the prompts: say so and round up
    assert main(["asal", "target", "--substrate", "lenia", "--fm", "openclip:ViT-B-32", "--weights", str(clip_weights),
                 "--prompt", "a small cell", "--prompt", "a large cell", "--frames", "3", "--steps", "8",
                 "--iters", "1", "--pop", "2", "--runs", runs, "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "using 4 frames" in captured.err
    run = RunStore(runs).open(json.loads(captured.out)["id"])
    assert run.info["config"]["eval"]["frames"] == 4
    assert os.path.exists(run.path / "best.mp4")
    # no --frames: one per prompt, as its help says, and no note of a --frames 1 not given
    assert main(["asal", "target", "--substrate", "lenia", "--fm", "openclip:ViT-B-32", "--weights", str(clip_weights),
                 "--prompt", "a", "--prompt", "b", "--prompt", "c", "--steps", "8", "--iters", "1", "--pop", "2",
                 "--runs", runs, "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "frames" not in captured.err, captured.err
    assert RunStore(runs).open(json.loads(captured.out)["id"]).info["config"]["eval"]["frames"] == 3
    # the FM's weights recorded as the absolute path they are: a resume from another folder finds them
    from workbench.asal.evaluate import EvalConfig

    monkeypatch.chdir(Path(clip_weights).parent)
    assert EvalConfig("lenia", "openclip:ViT-B-32", weights=Path(clip_weights).name).weights == str(clip_weights)


@pytest.mark.parametrize("algorithm", ["ga", "map-elites"])
def test_illumination_from_the_cli(tmp_path, capsys, algorithm):
    runs = str(tmp_path / "runs")
    assert main(["asal", "illuminate", "--substrate", "boids", "--fm", "pixels", "--algorithm", algorithm,
                 "--population", "12", "--pop", "4", "--steps", "20", "--iters", "3", "--runs", runs, "--quiet"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    run = RunStore(runs).open(result["id"])
    assert result["status"] == "done" and (run.path / "atlas.png").exists()
    population = run.read_table("population").to_pylist()
    assert len(population) >= 4 and len(population[0]["theta"]) == 193 and len(population[0]["embedding"]) == 2352
    if algorithm == "ga":
        assert len(population) == 12
    else:  # --population sizes MAP-Elites' square grid too: 12 → 3 × 3 cells, said once
        assert len(population) <= 9 and "--population 12 gives 3×3 = 9 cells" in captured.err
    atlas = np.asarray(Image.open(run.path / "atlas.png"))
    assert atlas.ndim == 3 and atlas.any()


def _one_error_line(proc) -> str:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and out == "", (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_resume_refuses_another_kind_and_contradicting_flags(tmp_path):
    """`asal target --substrate boids --target-image flock.png --resume ID_OF_AN_ILLUMINATION_RUN` used to run
    the other run: now one error, from the CLI (in its own process) and from the library."""
    flock = tmp_path / "flock.png"
    Image.fromarray(np.full((24, 24, 3), [40, 200, 90], np.uint8)).save(flock)
    Image.fromarray(np.full((24, 24, 3), [200, 20, 90], np.uint8)).save(tmp_path / "other.png")
    (tmp_path / "copy.png").write_bytes(flock.read_bytes())
    store = RunStore(tmp_path / "runs")
    illumination = run_search(SearchConfig(kind="illuminate", eval=EvalConfig("boids", "pixels", steps=10, size=32),
                                           iters=1, pop=4, population=8), store)
    stops = iter([False, True])
    target = run_search(SearchConfig(kind="target", eval=EvalConfig("boids", "pixels", steps=10, size=32),
                                     target_image=str(flock), iters=2, pop=4), store, should_stop=lambda: next(stops))
    assert target.status == "stopped"

    base = ["--runs", "runs", "--quiet"]
    procs = [_short("asal", "target", "--substrate", "boids", "--target-image", "flock.png", "--resume",
                    illumination.id, *base, cwd=tmp_path),
             _short("asal", "target", "--resume", target.id, "--substrate", "lenia", "--target-image", "other.png",
                    "--pop", "4", "--fm", "pixels", *base, cwd=tmp_path)]
    wrong_kind, contradicting = (_one_error_line(p) for p in procs)
    assert f"run {illumination.id} is an illuminate run, not target" in wrong_kind
    assert f"resume it with workbench asal illuminate --resume {illumination.id} --runs runs" in wrong_kind
    assert "--substrate 'lenia' ≠ the run's 'boids'" in contradicting and "--target-image other.png" in contradicting
    assert "--pop" not in contradicting and "--fm" not in contradicting  # given, but as the run has them
    assert store.open(illumination.id).info["iterations"] == 1 and store.open(target.id).info["iterations"] == 1

    # the library: the same checks, by config field
    with pytest.raises(RunError, match="is an illuminate run, not target"):
        run_search(None, store, resume=illumination.id, kind="target")
    other = SearchConfig(kind="target", eval=EvalConfig("lenia", "pixels", steps=10, size=32),
                         target_image=str(flock), iters=2, pop=4)
    with pytest.raises(RunError, match=r"eval\.substrate 'lenia' ≠ the run's 'boids'") as caught:
        run_search(other, store, resume=target.id)
    assert "target_image" not in str(caught.value)  # the same image, compared by content

    # the same image under another name, flags as the run has them: resumes
    ok = _short("asal", "target", "--resume", target.id[:-1], "--substrate", "boids", "--target-image", "copy.png",
              *base, cwd=tmp_path)
    out, err = ok.communicate(timeout=300)
    assert ok.returncode == 0, err
    assert json.loads(out)["status"] == "done" and store.open(target.id).info["iterations"] == 2
    # a finished run resumed with other settings besides more iterations: said what a resume does
    with pytest.raises(RunError, match=r"is finished and was started with other settings \(eval\.steps 12 ≠ the "
                                       r"run's 10\): a resume goes on with the run's own settings, to another "
                                       r"total where iters is given"):
        run_search(SearchConfig(kind="target", eval=EvalConfig("boids", "pixels", steps=12, size=32),
                                target_image=str(flock), iters=5, pop=4), store, resume=target.id)
    with pytest.raises(RunError, match=rf"run {target.id} has done 2 iterations of its iters 2: iters 1 would end "
                                       r"it before that; give iters 2 or more"):
        run_search(None, store, resume=target.id, iters=1)
    with pytest.raises(ValueError, match=r"iters= sets the total of a resumed run \(with resume=RUN_ID\)"):
        run_search(other, store, iters=5)  # a new run's length is its config's


@pytest.mark.parametrize("search", list(SEARCHES))
def test_a_finished_run_goes_on_to_more_iterations_as_a_run_started_with_them(tmp_path, search):
    """--resume ID --iters N (N more than the run's): a finished run goes on from its last checkpoint and ends
    as the run started with --iters N, bit for bit (a search's steps do not depend on its total); run.json says
    what the run now is. The CLI, in its own process, takes the same request and refuses a lower one."""
    _target_png(tmp_path)
    args = list(SEARCHES[search])
    args[args.index("--iters") + 1] = "2"
    first = _short(*args, "--runs", "runs", "--quiet", cwd=tmp_path)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    run_id = json.loads(out)["id"]
    store = RunStore(tmp_path / "runs")
    lower = _one_error_line(_short(SEARCHES[search][0], SEARCHES[search][1], "--resume", run_id, "--iters", "1",
                                   "--runs", "runs", cwd=tmp_path))
    assert f"run {run_id} has done 2 iterations of its --iters 2: --iters 1 would end it before that; give " \
           f"--iters 2 or more" in lower
    longer = _short(SEARCHES[search][0], SEARCHES[search][1], "--resume", run_id, "--iters", "4", "--runs", "runs",
                    "--quiet", cwd=tmp_path)
    out, err = longer.communicate(timeout=300)
    assert longer.returncode == 0, err
    assert json.loads(out)["iterations"] == 4 and json.loads(out)["status"] == "done"
    args[args.index("--iters") + 1] = "4"
    whole = _short(*args, "--runs", "whole", "--quiet", cwd=tmp_path)
    out, err = whole.communicate(timeout=300)
    assert whole.returncode == 0, err
    a, b = RunStore(tmp_path / "whole").open(json.loads(out)["id"]), store.open(run_id)
    assert b.info["config"] == a.info["config"] and b.info["config"]["iters"] == 4
    assert b.info["resumes"][-1]["from_iteration"] == 2 and b.info["resumes"][-1]["total"] == 4
    assert b.info["resumes"][-1]["previous_end"]["iterations"] == 2
    assert b.info["best_loss"] == a.info["best_loss"]
    np.testing.assert_array_equal(np.load(a.path / "best.npy"), np.load(b.path / "best.npy"))
    rows = lambda r: [{k: v for k, v in m.items() if k != "seconds"}  # noqa: E731
                      for m in r.read_table("metrics").to_pylist()]
    assert rows(a) == rows(b) and len(rows(b)) == 4
    assert a.read_table("population").to_pylist() == b.read_table("population").to_pylist()
    if search != "target":
        np.testing.assert_array_equal(np.load(a.path / "thumbs.npy"), np.load(b.path / "thumbs.npy"))
    # asked again for no more than it has: a finished run, left as it is
    again = _short(SEARCHES[search][0], SEARCHES[search][1], "--resume", run_id, "--iters", "4", "--runs", "runs",
                   "--quiet", cwd=tmp_path)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0 and json.loads(out)["iterations"] == 4, err
    assert len(store.open(run_id).info["resumes"]) == 1
    if search != "target":
        return
    # while a finished run goes on, no other resume may take it (it came back from reopen unclaimed)
    refusals = []

    def another_resume(r) -> None:
        try:
            store.reopen(r.id, dict)
            refusals.append("not refused")
        except RunError as exc:
            refusals.append(str(exc))

    assert run_search(None, store, resume=run_id, iters=5, on_start=another_resume).info["iterations"] == 5
    assert len(refusals) == 1 and "is being resumed by pid" in refusals[0], refusals
    # a finished run whose checkpoint is gone: refused, not done over from iteration 0 under its old metrics
    for f in store.open(run_id).path.glob("checkpoint*"):
        f.unlink()
    with pytest.raises(RunError, match=r"did 5 iterations but has no checkpoint\.json"):
        run_search(None, store, resume=run_id, iters=6)
    assert store.open(run_id).info["status"] == "done" and store.open(run_id).info["config"]["iters"] == 5
    # a stopped run given a total below its own (not below what it did) ends there, as a run of that total
    stops = iter([False, False, True])
    cfg = SearchConfig(kind="target", eval=EvalConfig("boids", "pixels", steps=20, size=32),
                       target_image=str(tmp_path / "target.png"), iters=9, pop=4, seed=2)
    stopped = run_search(cfg, store, should_stop=lambda: next(stops))
    assert stopped.status == "stopped" and stopped.info["iterations"] == 2
    shorter = run_search(None, store, resume=stopped.id, iters=3)
    assert shorter.status == "done" and shorter.info["config"]["iters"] == 3
    cfg.iters = 3
    fresh = run_search(cfg, RunStore(tmp_path / "fresh"))
    np.testing.assert_array_equal(np.load(fresh.path / "best.npy"), np.load(shorter.path / "best.npy"))
    assert rows(fresh) == rows(shorter)


def test_run_id_prefixes(tmp_path, monkeypatch):
    # one clock for the whole test: ids are stamped to the second, and runs made on both sides of a second's
    # boundary would get different stamps instead of the "-1" suffix this test is about
    now, strftime = time.localtime(), time.strftime
    monkeypatch.setattr(time, "strftime", lambda fmt, t=None: strftime(fmt, now if t is None else t))
    store = RunStore(tmp_path)
    a = store.create("target", "boids", "pixels", {}, 1)
    b = store.create("target", "boids", "pixels", {}, 1)
    c = store.create("openended", "lenia", "pixels", {}, 2)
    assert b.id == a.id + "-1"
    assert store.open(c.id[:-3]).id == c.id  # unique
    assert store.open(a.id).id == a.id  # a whole id that also starts another one
    with pytest.raises(RunError, match=f"ambiguous.*{a.id}, {b.id}"):
        store.open(a.id[:10])
    with pytest.raises(RunError, match="no run 'zzz'"):
        store.open("zzz")
    (tmp_path / "snapshots").mkdir()  # the Lab's, in the store's folder: no run to match or to name
    with pytest.raises(RunError, match=r"no run 'snap' in .* \(latest runs: [^)]*\)$") as refused:
        store.open("snap")
    assert "snapshots" not in str(refused.value)


def test_heartbeat_and_interrupted_runs(tmp_path, capsys):
    store = RunStore(tmp_path)
    run = store.create("target", "boids", "pixels", {"iters": 5}, 0)
    assert run.status == "running" and run.resume_command is None  # this process: alive
    with pytest.raises(RunError, match="still running"):
        store.reopen(run.id, dict)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    run.update(pid=gone.pid)
    assert run.status == "interrupted"
    assert run.resume_command == f"workbench asal target --resume {run.id} --runs {tmp_path}"
    assert store.reopen(run.id, dict)[1] == {"iters": 5}
    run.update(pid=os.getpid(), pid_started=1.0)  # the pid lives, but it is another process now
    assert run.status == "interrupted"
    run.update(host="elsewhere", heartbeat=time.time() - 30)  # another host: the heartbeat decides
    assert run.status == "running"
    run.update(heartbeat=time.time() - 3600)
    assert run.status == "interrupted"
    row = store.list()[0]
    assert row["status"] == "interrupted" and row["resume_command"] == run.resume_command
    info = run.info
    info["status"] = "done"
    write_json(run.path / "run.json", info)
    assert run.status == "done" and run.resume_command is None
    info["status"] = "running"
    write_json(run.path / "run.json", info)
    assert main(["runs", "list", "--runs", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "interrupted" in captured.out and "best loss ↓" in captured.out and "algorithm" in captured.out
    assert f"resume it with: workbench asal target --resume {run.id}" in captured.err


def test_a_run_whose_set_up_fails_is_marked_failed_or_stopped_and_resumes_from_its_start(tmp_path, capsys):
    """Between the run's folder and its loop (inputs, the search, on_start) an error marks the run failed with
    the error, and Ctrl-C stopped, not "running" for as long as the process lives; either resumes from its start.
    Settings that no search can take are refused before any folder is made, naming the flag."""
    store = RunStore(tmp_path)
    cfg = SearchConfig(kind="openended", eval=EvalConfig("boids", "pixels", steps=8, frames=2), iters=2, pop=2)

    def fail(exc):
        def on_start(run):
            raise exc
        return on_start

    with pytest.raises(ZeroDivisionError):
        run_search(cfg, store, on_start=fail(ZeroDivisionError("a page's callback")))
    failed = store.open(store.list()[0]["id"])
    assert failed.status == "failed" and failed.info["error"] == "ZeroDivisionError: a page's callback"
    assert failed.resume_command is not None
    with pytest.raises(KeyboardInterrupt):
        run_search(dataclasses.replace(cfg, seed=1), store, on_start=fail(KeyboardInterrupt()))
    stopped = store.open(next(r["id"] for r in store.list() if r["id"] != failed.id))
    assert stopped.status == "stopped"
    # a resumed run whose set-up fails keeps the status and error it had
    with pytest.raises(KeyboardInterrupt):
        run_search(None, store, resume=failed.id, on_start=fail(KeyboardInterrupt()))
    assert failed.status == "failed" and failed.info["error"] == "ZeroDivisionError: a page's callback"
    whole = run_search(dataclasses.replace(cfg, seed=1), store)
    for run in (failed, stopped):  # no checkpoint: from the start, as a new run
        assert run_search(None, store, resume=run.id).info["status"] == "done"
    assert pd.read_parquet(stopped.path / "metrics.parquet")["best_loss"].tolist() == \
        pd.read_parquet(whole.path / "metrics.parquet")["best_loss"].tolist()
    # set-up cut short: the run's copy of its target image was made with its folder, before its run.json (a
    # kill between the two left a run listed as resumable whose resume was refused), so the run resumes
    image = tmp_path / "target.png"
    Image.new("RGB", (16, 16), (200, 30, 30)).save(image)
    targeted = SearchConfig(kind="target", eval=EvalConfig("boids", "pixels", steps=8), iters=1, pop=2,
                            target_image=str(image))
    with pytest.raises(KeyboardInterrupt):
        run_search(targeted, store, on_start=fail(KeyboardInterrupt()))
    cut = next(r["id"] for r in store.list() if r["kind"] == "target")
    assert store.open(cut).info["inputs"]["target_image"]["path"] == "inputs/target.png"
    image.unlink()  # the run reads its own copy
    assert run_search(None, store, resume=cut).info["status"] == "done"
    # a run made before, whose set-up ended before its copy was recorded: its resume says so
    old = store.create("target", "boids", "pixels", {**targeted.to_dict(), "target_image": "inputs/target.png"}, 0)
    old.update(status="failed")
    with pytest.raises(RunError, match="no copy of its target image .* start a new run") as caught:
        run_search(None, store, resume=old.id)
    # that resume failed after it claimed the run; it let go although its traceback (kept here) holds the Run
    assert caught.traceback and store.reopen(old.id, dict)[0].release() is None
    # settings no search can take: one error naming the flag, no run folder
    runs = tmp_path / "refused"
    for args, flag in ((["openended", "--pop", "1"], "--pop must be at least 2"),
                       (["illuminate", "--pop", "1", "--population", "2"], "--population must be at least 3")):
        assert main(["asal", *args, "--substrate", "boids", "--fm", "pixels", "--steps", "8", "--runs", str(runs),
                     "--quiet"]) == 2
        assert flag in capsys.readouterr().err
    assert not runs.exists()


def test_population_png_is_written_at_most_every_few_seconds_and_when_the_loop_ends(tmp_path):
    """PNG-encoding a large population costs more than a GPU iteration: while the loop runs the latest batch is
    written at most every `every` seconds; the one left over is written when the loop ends."""
    from workbench.asal.atlas import population_grid
    from workbench.asal.driver import LatestPopulation

    run = RunStore(tmp_path).create("openended", "boids", "pixels", {}, 0)
    batches = [np.full((4, 8, 8, 3), 40 * i, np.uint8) for i in range(1, 4)]
    latest = LatestPopulation(run, every=3600)

    def shown():
        return np.asarray(Image.open(run.path / "population.png"))

    latest.offer(batches[0])
    assert np.array_equal(shown(), population_grid(batches[0]))  # the first at once
    latest.offer(batches[1])
    latest.offer(batches[2])
    assert np.array_equal(shown(), population_grid(batches[0]))  # within `every`: not rewritten
    latest.flush()
    assert np.array_equal(shown(), population_grid(batches[2]))  # the loop ended: the last one


HOLD_A_RESUME = """
import sys
from workbench.runs import RunStore
run, cfg, state = RunStore(sys.argv[1]).reopen(sys.argv[2], dict)
print("claimed", flush=True)
sys.stdin.read()  # the resume's set-up: the run is held until the test closes this stdin
"""


def test_a_run_being_resumed_is_refused_to_every_other_resume(tmp_path):
    """"running" is written when a resume's loop starts, after its set-up (models loaded, inputs checked). Two
    processes that checked the run within that window, the CLI and a page, both resumed it and wrote over each
    other's checkpoints; the resume's claim closes the window: from another process, and from this one."""
    store = RunStore(tmp_path)
    cfg = SearchConfig(kind="openended", eval=EvalConfig("boids", "pixels", steps=8, frames=2), iters=2, pop=2)
    run = run_search(cfg, store, should_stop=lambda: True)
    assert run.status == "stopped"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_A_RESUME, str(tmp_path), run.id], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "claimed"
        assert run.info["status"] == "stopped"  # nothing says "running" yet, but the catalog says what goes on
        assert run.status == "resuming" and run.resume_command is None
        listed = _cli("runs", "list", "--json", "--runs", str(tmp_path), cwd=tmp_path)
        out, err = listed.communicate(timeout=120)
        assert listed.returncode == 0, err
        assert [(r["id"], r["status"], r["resume_command"]) for r in json.loads(out)] == [(run.id, "resuming", None)]
        with pytest.raises(RunError, match=f"being resumed by pid {holder.pid} on "):
            store.reopen(run.id, dict)
        cli = _cli("asal", "openended", "--resume", run.id, "--runs", str(tmp_path), cwd=tmp_path)
        out, err = cli.communicate(timeout=120)
        assert cli.returncode == 2 and out == ""
        assert err.strip().splitlines() == [f"error: run {run.id!r} is being resumed by pid {holder.pid} on "
                                            f"{socket.gethostname()}; wait for that resume to end (or stop it) "
                                            f"before resuming it again"]
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
        holder.stdout.close()
    assert run.status == "stopped" and run.resume_command is not None  # the holder ended: free again
    again, _, _ = store.reopen(run.id, dict)
    assert again.status == "stopped"  # to its holder the run is as it was ...
    assert [(r["status"], r["resume_command"]) for r in store.list()] == [("resuming", None)]  # ... to others not
    with pytest.raises(RunError, match=f"being resumed by pid {os.getpid()} on "):
        store.reopen(run.id, dict)  # a second resume in this process (two pages of one server)
    again.release()
    assert store.list()[0]["status"] == "stopped"
    assert run_search(None, store, resume=run.id).status == "done"  # its loop let go of it at the end
    assert store.reopen(run.id, dict)[0].status == "done"


def test_a_new_run_is_held_from_its_creation_to_the_end_of_its_loop(tmp_path):
    """A run function's new run holds the claim a resume holds, from its folder to the end of its loop: where its
    run.json's pid check is fooled (a container's own pid namespace, a recycled pid) or its heartbeat is late (a
    long generation on another host), so that the run reads as interrupted, no resume and no removal takes it
    from under its live process. The loop's end lets go of it."""
    store = RunStore(tmp_path)
    cfg = SearchConfig(kind="openended", eval=EvalConfig("boids", "pixels", steps=8, frames=2), iters=2, pop=2)
    outcomes = []

    def others(run) -> None:
        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait()
        run.update(pid=gone.pid)  # as another process reads it whose pid check is fooled
        outcomes.append(store.open(run.id).status)
        for attempt in (lambda: store.reopen(run.id, dict)[0].release(), lambda: store.remove(run.id)):
            try:
                attempt()
                outcomes.append("not refused")
            except RunError as exc:
                outcomes.append(str(exc))

    run = run_search(cfg, store, on_start=others)
    assert run.status == "done" and run.info["iterations"] == 2
    assert outcomes[0] == "resuming" and f"is being resumed by pid {os.getpid()} on " in outcomes[1], outcomes
    assert f"is held by another process (a resume) (pid {os.getpid()} on " in outcomes[2], outcomes
    assert store.reopen(run.id, dict)[0].status == "done"  # let go
    assert store.remove(run.id) == run.id


def test_a_resume_of_a_run_whose_dead_process_had_its_pid_reads_as_resuming(tmp_path):
    """A restarted container resumes its run as pid 1 again, on the same host name: while the resume sets up,
    run.json still names the dead pid 1 (started before it), which is not the claim's holder. The run reads as
    being resumed, not as running, and the refusals say so; the holder's start time, in its claim, tells them apart."""
    store = RunStore(tmp_path)
    run = store.create("target", "boids", "pixels", {}, 0)
    info = run.info
    write_json(run.path / "run.json", {**info, "pid": os.getpid(), "pid_started": info["pid_started"] - 3600})
    assert effective_status(run.info) == "interrupted"
    held = store.reopen(run.id, dict)[0]  # the resume, setting up
    try:
        assert store.open(run.id).status == "resuming"
        with pytest.raises(RunError, match=f"is being resumed by pid {os.getpid()} on "):
            store.reopen(run.id, dict)
        with pytest.raises(RunError, match=r"is held by another process \(a resume\)"):
            store.remove(run.id)
        held.update(status="running", **heartbeat())  # its loop began: run.json names it
        assert store.open(run.id).status == "running"
    finally:
        held.release()


CREATE_A_RUN = """
import sys
from workbench.asal.driver import SearchConfig, run_search
from workbench.asal.evaluate import EvalConfig

def on_iteration(done, total, row):
    if done == 1:
        print("iterating", flush=True)
        sys.stdin.read()  # a long generation: the process lives, its heartbeat waits until the test closes stdin

cfg = SearchConfig(kind="openended", eval=EvalConfig("boids", "pixels", steps=8, frames=2), iters=2, pop=2)
run = run_search(cfg, sys.argv[1], on_start=lambda r: print(r.id, flush=True), on_iteration=on_iteration)
print(run.status, flush=True)
"""


def _own_pid_namespace() -> list[str] | None:
    """The command prefix that starts a process in a pid namespace of its own (as a container does), or None."""
    prefix = ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc"]
    if shutil.which("unshare") is None or sys.platform != "linux":
        return None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        if subprocess.run([*prefix, "true"], capture_output=True, timeout=30).returncode == 0:
            return prefix
    return None


def test_a_new_run_in_a_container_is_neither_resumed_nor_removed_from_another(tmp_path):
    """Two real processes: a run created in a pid namespace of its own (a container sharing the run store) records
    a pid that means another process, or none, outside it; there its run read as interrupted while it ran. Its
    claim, held from its creation, says it runs and refuses the resume and the removal that took it from under its
    process (whose next write then failed: its folder was gone)."""
    prefix = _own_pid_namespace()
    if prefix is None:
        pytest.skip("no unshare with user and pid namespaces here")
    creator = subprocess.Popen([*prefix, sys.executable, "-c", CREATE_A_RUN, str(tmp_path)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    try:
        run_id = creator.stdout.readline().strip()
        assert creator.stdout.readline().strip() == "iterating", run_id
        store = RunStore(tmp_path)
        run = store.open(run_id)
        assert effective_status(run.info) == "interrupted"  # the pid check, fooled: pid 1 is another process here
        assert run.status == "running" and run.resume_command is None  # its claim's holder is run.json's process
        assert store.list()[0]["status"] == "running"
        with pytest.raises(RunError, match=r"is still running \(pid 1 on .*\); stop it before resuming it"):
            store.reopen(run_id, dict)
        with pytest.raises(RunError, match=r"is running \(pid 1 on .*\): stop it first"):
            store.remove(run_id)
        rm = _short("runs", "rm", run_id, "--yes", "--runs", str(tmp_path), cwd=tmp_path)
        assert rm.returncode == 2 and f"run {run_id} is running (pid 1 on " in rm.stderr, rm.stderr
    finally:
        creator.stdin.close()
        out = creator.stdout.read()
        creator.wait(timeout=120)
        creator.stdout.close()
    assert creator.returncode == 0 and out.split() == ["done"], out
    assert store.open(run_id).status == "done" and store.remove(run_id) == run_id  # its loop let go of it


def test_runs_rm_lists_then_removes_and_refuses_a_run_that_runs_or_is_being_resumed(tmp_path):
    """`workbench runs rm` (its own process): by id and by --status, the runs listed and, with --yes, removed
    folders and all (a broken run too); a run that is running is refused and then none goes; a folder that is no
    run is refused. RunStore.remove refuses a run being resumed, and sweeps what a removal cut short left."""
    from workbench.runs import Run, heartbeat

    store = RunStore(tmp_path)
    failed, done, live, paused = (store.create("openended", "boids", "pixels", {}, seed) for seed in range(4))
    failed.update(status="failed")
    done.update(status="done")
    live.update(status="running", **heartbeat())  # this test's process: alive
    paused.update(status="stopped")
    broken = tmp_path / "broken-run"
    broken.mkdir()
    (broken / "run.json").write_text("{")
    (tmp_path / "snapshots").mkdir()  # the Lab's: no run
    rm = ("runs", "rm", "--runs", str(tmp_path))
    listed = _short(*rm, "--status", "failed", done.id, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == [f"{done.id}  (openended, done)", f"{failed.id}  (openended, failed)"]
    assert "nothing removed: these 2 run(s) go, folders and all, with --yes" in listed.stderr
    refused = _short(*rm, failed.id, live.id, "--yes", cwd=tmp_path)
    assert refused.returncode == 2 and refused.stdout == "", refused.stderr
    assert refused.stderr.strip() == (f"error: run {live.id} is running (pid {os.getpid()} on {socket.gethostname()}"
                                      "): stop it first (Ctrl-C where it runs, or stop on its page), then remove it")
    assert failed.path.is_dir()  # none went
    for bad, message in (((), "name the runs to remove: run ids (or unique prefixes), or --status"),
                         (("snapshots",), "snapshots is no run (it has no run.json); not removed"),
                         (("nope",), "no run 'nope' in")):
        refused = _short(*rm, *bad, "--yes", cwd=tmp_path)
        assert refused.returncode == 2 and message in refused.stderr, (bad, refused.stderr)
    (tmp_path / ".removing-old").mkdir()  # a removal a kill cut short
    removed = _short(*rm, "--status", "failed", done.id, "broken-run", "--yes", cwd=tmp_path)
    assert removed.returncode == 0, removed.stderr
    assert "broken-run  (not readable as a run: run.json is corrupt (" in removed.stdout  # why, as runs list says
    assert "removed 3 run(s)" in removed.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.id, paused.id, "snapshots"])
    assert [r["id"] for r in store.list()] == [live.id, paused.id]
    resuming = Run(paused.path)
    resuming.claim()  # a resume setting up (or a finished run's going on: its status says "done")
    try:
        with pytest.raises(RunError, match=f"run {paused.id} is held by another process \\(a resume\\) \\(pid "
                                           f"{os.getpid()} on "):
            store.remove(paused.id)
    finally:
        resuming.release()
    # a run.json this version does not read (a newer workbench's) that says its run runs: refused all the same
    newer = json.loads((live.path / "run.json").read_text())
    (live.path / "run.json").write_text(json.dumps({**newer, "format": newer["format"] + 1}))
    with pytest.raises(RunError, match=f"run {live.id} is running \\(pid {os.getpid()} on "):
        store.remove(live.id)
    for hidden in ("..", ".", ".removing-x"):  # no run ids: ".." read the parent's run.json
        with pytest.raises(RunError, match="no run"):
            store.remove(hidden)
    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    shutil.copytree(paused.path, elsewhere)
    (tmp_path / "linked").symlink_to(elsewhere)
    with pytest.raises(RunError, match="links to .*: remove the link yourself"):
        store.remove("linked")
    (tmp_path / "linked").unlink()
    shutil.rmtree(elsewhere)
    # what removals cut short left goes with the next one, but not what another process is deleting right now
    (tmp_path / ".removing-cut-999999999").mkdir()  # no such process
    (tmp_path / f".removing-busy-{os.getppid()}").mkdir()  # a live one
    assert store.remove(paused) == paused.id and not paused.path.exists()  # a Run names its run too
    assert [p.name for p in tmp_path.glob(".removing-*")] == [f".removing-busy-{os.getppid()}"]


def test_runs_note_writes_a_note_the_catalog_shows_while_the_run_runs(tmp_path):
    """`workbench runs note ID TEXT` (its own process): the note is kept in a file of its own (a running run
    rewrites run.json at each heartbeat), shown by `runs list` (a note column once one is written, the ids whole)
    and `runs show`, printed by `runs note ID`; '' removes it; too long a note is refused; a damaged note file
    costs its characters, not the run's place in the catalog."""
    from workbench.runs import MAX_NOTE, NOTE_FILE, heartbeat

    store = RunStore(tmp_path)
    live, other = (store.create("openended", "boids", "efficientnet-lite0", {}, seed) for seed in range(2))
    live.update(status="running", **heartbeat())
    note = ("runs", "note", "--runs", str(tmp_path))
    done = _short(*note, live.id, "  baseline of figure 3: σ = 0.1  ", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout == "baseline of figure 3: σ = 0.1\n", done.stderr
    live.update(iterations=3, **heartbeat())  # the run's own writes leave the note alone
    assert _short(*note, live.id, cwd=tmp_path).stdout == "baseline of figure 3: σ = 0.1\n"
    listed = _short("runs", "list", "--runs", str(tmp_path), env={"COLUMNS": "120"}, cwd=tmp_path)
    assert listed.returncode == 0 and "note" in listed.stdout and live.id in listed.stdout and \
        other.id in listed.stdout, listed.stdout  # whole ids in a narrow terminal
    # and whole words in every other column, the table's right border on every line (a note's column cut them)
    assert "efficientnet-lite0" in listed.stdout and "running" in listed.stdout and "iterations" in listed.stdout
    lines = [line for line in listed.stdout.splitlines()[1:] if line.strip()]
    assert all(line[-1] in "┓┃┩│┘" and len(line) == len(lines[0]) for line in lines), listed.stdout
    assert [r["note"] for r in store.list()] == ["baseline of figure 3: σ = 0.1", None]
    printed = _short("runs", "show", live.id, "--runs", str(tmp_path), cwd=tmp_path).stdout
    shown = json.loads(printed)
    assert shown["note"] == "baseline of figure 3: σ = 0.1" and shown["status"] == "running"
    assert "σ = 0.1" in printed  # for reading, as written (not \u03c3); --json escapes, as list and compare do
    assert "\\u03c3" in _short("runs", "show", live.id, "--json", "--runs", str(tmp_path), cwd=tmp_path).stdout
    refused = _short(*note, other.id, "x" * (MAX_NOTE + 1), cwd=tmp_path)
    assert refused.returncode == 2 and f"a note holds at most {MAX_NOTE}" in refused.stderr, refused.stderr
    assert _short(*note, live.id, "", cwd=tmp_path).returncode == 0 and not (live.path / NOTE_FILE).exists()
    (other.path / NOTE_FILE).write_bytes(b"\xff\xfe half a note")
    assert [r["id"] for r in store.list()] == [live.id, other.id] and store.list()[1]["note"].endswith("half a note")


def test_a_mistyped_run_store_is_an_error_not_an_empty_list(tmp_path):
    """`runs list --runs TYPO` printed an empty list and exited 0 (`--json`: `[]`), so a script could not tell a
    mistyped folder from an empty store; `runs rm --status failed` said there was nothing to remove. Both exit 2
    naming the flag now; an empty store's folder still lists as empty."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "a-file").write_text("")
    for argv in (("list",), ("list", "--json"), ("rm", "--status", "failed", "--yes")):
        res = _short("runs", *argv, "--runs", str(tmp_path / "typo"), cwd=tmp_path)
        assert (res.returncode, res.stdout) == (2, ""), (argv, res.stdout, res.stderr)
        assert f"--runs {tmp_path / 'typo'}: no such folder, so no run store there; give --runs the" in res.stderr
        res = _short("runs", *argv, "--runs", str(tmp_path / "a-file"), cwd=tmp_path)  # (refused as it was)
        assert res.returncode == 2 and "is a file, not a folder: give the run store's folder" in res.stderr
    empty = _short("runs", "list", "--json", "--runs", str(tmp_path / "empty"), cwd=tmp_path)
    assert (empty.returncode, json.loads(empty.stdout)) == (0, []), empty.stderr


def test_a_resume_sweeps_the_temporary_files_of_writes_a_kill_cut_short(tmp_path):
    """A SIGKILL during an atomic write leaves its never-renamed temporary beside the intact file (seen once in a
    kill-and-resume test: `.gen2_archive_map.<8 random>.json`); a resume removes such files and nothing else."""
    import tempfile

    from workbench.atomic import atomic_write, sweep_partial_writes

    (tmp_path / "maps").mkdir()
    atomic_write(tmp_path / "maps" / "gen2_archive_map.json", lambda p: p.write_text("{}"))
    left = [tempfile.mkstemp(dir=tmp_path / d, prefix=f".{stem}.", suffix=suffix)[1]
            for d, stem, suffix in (("maps", "gen3_archive_map", ".json"), (".", "metrics", ".parquet"))]
    (tmp_path / ".hidden").write_text("not ours")
    for name in (".results.20261203", ".data.old-1"):  # a user's folders that look like ours, not ours
        (tmp_path / name).mkdir()
    # a folder being staged (a LoRA adapter killed while saved, seen by a kill probe), and replace_dir killed
    # between its renames: the old folder moved aside and its replacement not yet in place
    from workbench.atomic import staging_dir

    staged = staging_dir(tmp_path / "lora")
    (staged / "adapter.safetensors").write_text("half")
    aside = tmp_path / ".model.replaced-4242"  # replace_dir's name for the folder it moves aside
    aside.mkdir()
    (aside / "weights").write_text("old")
    (tmp_path / "policy").mkdir()
    (tmp_path / ".policy.replaced-4243").mkdir()  # moved aside, its replacement in place: it goes
    gone = sweep_partial_writes(tmp_path)
    assert sorted(map(str, gone)) == sorted([*left, str(staged), str(tmp_path / ".policy.replaced-4243")])
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        ".data.old-1", ".hidden", ".results.20261203", "maps", "maps/gen2_archive_map.json", "model",
        "model/weights", "policy"]
    assert (tmp_path / "model" / "weights").read_text() == "old"


def test_files_written_one_after_the_other_are_read_from_one_write(tmp_path):
    """An illumination rewrites population.parquet, then thumbs.npy, as a resume extends it: a reader between the
    two paired one write's members with another's thumbnails. read_together reads again until neither changed."""
    import numpy as np

    run = RunStore(tmp_path / "runs").create("illuminate", "boids", "pixels", {}, 0)
    run.write_array("a.npy", np.zeros(3))
    run.write_array("b.npy", np.zeros(3))
    reads = []

    def read():
        a = run.read_array("a.npy")
        if not reads:  # the run's next write lands between the two reads
            run.write_array("a.npy", np.ones(4))
            run.write_array("b.npy", np.ones(4))
        reads.append(1)
        return a, run.read_array("b.npy")

    a, b = run.read_together(("a.npy", "b.npy"), read)
    assert len(reads) == 2 and a.tolist() == b.tolist() == [1.0] * 4

    def racing():
        run.write_array("b.npy", np.zeros(2))  # every read races a write
        return None

    with pytest.raises(RunError, match=r"a.npy, b.npy were rewritten while read, 3 times"):
        run.read_together(("a.npy", "b.npy"), racing, tries=3)


def test_a_reader_between_two_writes_reads_again_once_the_second_lands(tmp_path):
    """The writer replaces a.npy, then b.npy: a reader that came between the two (a.npy new, b.npy still the older
    write's) saw no file replaced while it read, and paired one write's a with another's b. Files long out of their
    write order (a folder copied over file by file) are read as they are."""
    import threading

    import numpy as np

    run = RunStore(tmp_path / "runs").create("illuminate", "boids", "pixels", {}, 0)
    run.write_array("a.npy", np.zeros(3))
    run.write_array("b.npy", np.zeros(3))
    time.sleep(0.05)  # mtimes tick coarsely: the next write is newer
    run.write_array("a.npy", np.ones(4))  # the writer is between its two writes

    def read():
        return run.read_array("a.npy"), run.read_array("b.npy")

    with pytest.raises(RunError, match="were rewritten while read, 2 times"):
        run.read_together(("a.npy", "b.npy"), read, tries=2)
    second = threading.Timer(0.1, lambda: run.write_array("b.npy", np.ones(4)))  # the second write lands
    second.start()
    try:
        a, b = run.read_together(("a.npy", "b.npy"), read)
    finally:
        second.join()
    assert a.tolist() == b.tolist() == [1.0] * 4
    old = time.time() - 3600  # out of order an hour ago: copied so, not being written
    os.utime(run.path / "a.npy", (old + 1, old + 1))
    os.utime(run.path / "b.npy", (old, old))
    a, b = run.read_together(("a.npy", "b.npy"), read, tries=1)
    assert a.tolist() == b.tolist() == [1.0] * 4


def test_only_a_held_run_is_swept(tmp_path):
    """A resume sweeps the run's leftover temporaries only once it holds the run: a done run (handed back as it is,
    unheld) may have another process's note or resume writing it, whose temporary went from under its rename."""
    import tempfile

    store = RunStore(tmp_path / "runs")
    done, cut = (store.create("openended", "boids", "pixels", {"iters": 5}, seed) for seed in range(2))
    done.update(status="done")
    cut.update(status="interrupted")
    writing = tempfile.mkstemp(dir=done.path, prefix=".note.", suffix=".txt")[1]
    left = tempfile.mkstemp(dir=cut.path, prefix=".metrics.", suffix=".parquet")[1]
    (cut.path / "figures").mkdir()
    others = [tempfile.mkstemp(dir=cut.path, prefix=".note.", suffix=".txt")[1],  # written by others into a held run
              tempfile.mkstemp(dir=cut.path / "figures", prefix=".curve.", suffix=".png")[1]]
    store.reopen(done.id, dict)
    assert os.path.exists(writing)  # another process's write, in flight
    run, _, _ = store.reopen(cut.id, dict)
    run.release()
    assert not os.path.exists(left)  # a kill's leftover in a run this resume holds
    assert all(os.path.exists(p) for p in others)  # a note, a page's export: written without holding the run


def test_every_run_config_refuses_a_seed_numpy_cannot_take(tmp_path):
    """A seed outside [0, 2³²) failed inside the run (NumPy's "Seed must be between 0 and 2**32 - 1"), after its
    folder was made: a failed run left behind. Each run kind's config now refuses it first, naming --seed."""
    from workbench.asal.driver import SearchConfig
    from workbench.asal.evaluate import EvalConfig
    from workbench.asal.sweep import SweepConfig
    from workbench.experts.adapt import AdaptConfig
    from workbench.experts.run import ExpertRunConfig
    from workbench.merge.evolution import EvolveConfig
    from workbench.namm.train import NAMMTrainConfig

    ev = EvalConfig("boids", "pixels", steps=10, frames=2)
    makes = [lambda s: SearchConfig(kind="openended", eval=ev, seed=s), lambda s: SweepConfig(eval=ev, seed=s),
             lambda s: EvolveConfig(zoo=str(tmp_path), models=["add"], seed=s),
             lambda s: ExpertRunConfig(model="smollm2", task="add", seed=s),
             lambda s: AdaptConfig(model="smollm2", experts=["e.safetensors"], seed=s),
             lambda s: NAMMTrainConfig(seed=s)]
    for make in makes:
        for bad in (-1, 2 ** 32, 1.5, True):
            with pytest.raises(ValueError, match=f"--seed must be a whole number from 0 to 4294967295.*got {bad!r}"):
                make(bad)
    with pytest.raises(ValueError, match="--test-seed must be a whole number"):
        AdaptConfig(model="smollm2", experts=["e.safetensors"], test_seed=-1)
    assert not any(tmp_path.iterdir())


def test_a_folder_built_aside_lands_whole_with_the_usual_permissions(tmp_path):
    """Model folders (a zoo, a generalist, a merge, an export) are built in a staging folder and moved into place:
    mkdtemp makes it 0700 and safetensors writes 0600 files, so without replace_dir's chmod a demo's generalist was
    unreadable to the machine's other users. An old folder is replaced whole; overwrite=False refuses one."""
    import stat

    from workbench.atomic import replace_dir, staging_dir

    old = os.umask(0o022)
    try:
        target = tmp_path / "model"
        target.mkdir()
        (target / "stale.bin").write_text("old")
        tmp = staging_dir(target)
        assert tmp.parent == tmp_path and tmp.name.startswith(".model.")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "weights.safetensors").write_text("new")
        os.chmod(tmp / "sub" / "weights.safetensors", 0o600)
        assert replace_dir(tmp, target) == target
        assert not tmp.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # nothing left aside
        assert [p.name for p in target.rglob("*")] == ["sub", "weights.safetensors"]
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [target, *target.rglob("*")]}
        assert modes == {"model": 0o755, "sub": 0o755, "weights.safetensors": 0o644}
        again = staging_dir(target)
        with pytest.raises(FileExistsError, match="exists"):
            replace_dir(again, target, overwrite=False)
        assert (target / "sub" / "weights.safetensors").read_text() == "new"
    finally:
        os.umask(old)


def test_a_killed_builds_staging_folder_goes_with_the_next_build(tmp_path):
    """A build killed with SIGKILL (a zoo, a model export) leaves its hidden staging folder beside the target: the
    next build of that target removes it where its process is gone, and puts back an old folder a killed replace
    had set aside (its only copy). A live process's, another host's (one whose name starts with this host's too)
    and other folders stay."""
    from workbench.atomic import _host_tag, staging_dir

    proc = subprocess.Popen([sys.executable, "-c", "from workbench.atomic import staging_dir; import sys; "
                             "print(staging_dir(sys.argv[1]))", str(tmp_path / "zoo")], stdout=subprocess.PIPE,
                            text=True)
    dead_staging = Path(proc.communicate()[0].strip())  # its process has ended: as a killed build's
    assert proc.returncode == 0 and dead_staging.is_dir() and dead_staging.parent == tmp_path
    (dead_staging / "weights.bin").write_bytes(b"x" * 100)
    host, dead = _host_tag(), proc.pid
    live = staging_dir(tmp_path / "zoo")  # this process's own: alive
    others = [tmp_path / f".zoo.staging-{host}1.{dead}-abcdefgh",  # another host, this one's name and more
              tmp_path / f".zoo.staging-other-0000abcd.{dead}-abcdefgh", tmp_path / ".zoo2.staging-x", tmp_path / "zoo"]
    for path in others:
        path.mkdir()
    (tmp_path / "zoo" / "old.bin").write_text("old")
    aside = tmp_path / f".model.replaced-{host}.{dead}"  # a killed replace_dir: model/ moved aside, none in place
    aside.mkdir()
    (aside / "weights").write_text("the only copy")
    again = staging_dir(tmp_path / "zoo")
    assert not dead_staging.exists() and live.is_dir() and again.is_dir() and all(p.is_dir() for p in others)
    staging_dir(tmp_path / "model")
    assert not aside.exists() and (tmp_path / "model" / "weights").read_text() == "the only copy"


def test_frames_follow_the_reference_recipes(tmp_path, capsys):
    """Open-endedness compares frames: the CLI takes the reference's K = 32 by default, and K = 1 (which scores
    0 for every θ) is refused for a new run. K = 1 of a target search is the last chunk end, state T − 1, as the
    reference samples it; illumination embeds the final state T; runs made before kept the final state."""
    from workbench.asal.driver import read_config
    from workbench.asal.evaluate import DEFAULT_STEPS, frame_indices

    runs = str(tmp_path / "runs")
    assert main(["asal", "openended", "--substrate", "boids", "--fm", "pixels", "--steps", "40", "--size", "32",
                 "--iters", "1", "--pop", "4", "--runs", runs, "--quiet"]) == 0
    run = RunStore(runs).open(json.loads(capsys.readouterr().out)["id"])
    assert run.info["config"]["eval"]["frames"] == 32
    with pytest.raises(ValueError, match="--frames 1 scores 0 for every θ"):
        run_search(SearchConfig(kind="openended", eval=EvalConfig("boids", "pixels", steps=10)),
                   RunStore(tmp_path / "x"))
    assert not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match="--frames 1 scores 0"):  # any search weighting open-endedness
        run_search(SearchConfig(kind="target", eval=EvalConfig("boids", "pixels", steps=10), prompts=["a"], c_oe=1.0),
                   RunStore(tmp_path / "x"))
    target = SearchConfig(kind="target", eval=EvalConfig("lenia", "pixels"), prompts=["a caterpillar"])
    assert frame_indices(target.eval) == [255]
    illuminate = SearchConfig(kind="illuminate", eval=EvalConfig("lenia", "pixels", frames=4))
    assert frame_indices(illuminate.eval) == [256]
    older = read_config({**target.to_dict(), "eval": {k: v for k, v in target.eval.__dict__.items()
                                                        if k != "sampling"}})
    assert older.eval.sampling == "final" and frame_indices(older.eval) == [256]
    clip = read_config({**target.to_dict(), "eval": {**older.eval.__dict__, "fm": "clip"}})
    assert clip.eval.fm == "clip"  # a run made now keeps its model
    del clip.eval.__dict__["sampling"]
    assert read_config({**target.to_dict(), "eval": clip.eval.__dict__}).eval.fm == "clip-gelu"  # one made before
    from workbench.asal.driver import check_new_search

    # an illumination has no loss to weigh: a weight given was recorded, unused (found by a probe of the docs)
    with pytest.raises(ValueError, match="an illumination has no target or open-endedness loss"):
        check_new_search(SearchConfig(kind="illuminate", eval=EvalConfig("boids", "pixels", steps=10), c_oe=1.0))
    assert (DEFAULT_STEPS["plenia"], DEFAULT_STEPS["plife_plus"], DEFAULT_STEPS["flow_lenia"]) == (1000, 1000, 256)


def test_an_open_ended_search_of_several_prompts_takes_the_most_frames_that_share_out_within_its_steps():
    """Without --frames an open-endedness search takes K = 32, or with P prompts the largest multiple of P up to
    min(32, --steps): 3 prompts over 32 steps are 30 frames (33, more than the steps, was refused), and such a
    config notes nothing about a --frames the user never gave."""
    from workbench.cli.asal import open_ended_frames

    assert [open_ended_frames(3, 32), open_ended_frames(3, 100), open_ended_frames(1, 20), open_ended_frames(0, 64),
            open_ended_frames(5, 3)] == [30, 30, 20, 32, 5]
    ev = EvalConfig("boids", "pixels", steps=32, frames=open_ended_frames(3, 32))
    assert SearchConfig(kind="openended", eval=ev, prompts=["a", "b", "c"], iters=1).notes == []


def test_runs_made_before_sampling_existed_embed_chunk_ends_when_they_take_several_frames():
    """sampling="final" (runs made before the setting) is the final state T for K = 1 only: an older open-endedness
    or multi-prompt run of K frames still embeds its K chunk ends (one frame would score 0 open-endedness)."""
    from workbench.asal.evaluate import frame_indices

    assert frame_indices(EvalConfig("lenia", "pixels", steps=16, frames=4, sampling="final")) == [3, 7, 11, 15]
    assert frame_indices(EvalConfig("lenia", "pixels", steps=16, frames=1, sampling="final")) == [16]


def test_a_thumbnail_is_the_last_sampled_frame_of_the_first_seed(tmp_path):
    """population.png and the atlas show each θ's final frame: with K frames, the last of them (state T − 1 here),
    whatever K, from the first of its initial-state seeds."""
    from workbench.asal.evaluate import embed_rollouts
    from workbench.simulations import make_substrate

    thetas = np.zeros((2, make_substrate("lenia").n_params))
    one = EvalConfig("lenia", "pixels", steps=16, frames=1, size=32)
    _, last = embed_rollouts(one, thetas, [5, 6], thumb=32)
    _, mid = embed_rollouts(EvalConfig("lenia", "pixels", steps=8, frames=1, size=32), thetas, [5, 6], thumb=32)
    assert not np.array_equal(last, mid)  # state 15 and state 7 (the first of K = 2) look different
    for frames in (2, 4):
        _, thumbs = embed_rollouts(EvalConfig("lenia", "pixels", steps=16, frames=frames, size=32), thetas, [5, 6],
                                   thumb=32)
        np.testing.assert_array_equal(thumbs, last)


def test_the_fm_sees_the_rendered_floats_and_older_runs_resume_as_they_started(tmp_path):
    """asal.md §6: the FM takes the frames in [0, 1], as the reference embeds them (no rounding to 8 bits).
    Runs made before eval.pixels and child_seeds existed embedded 8-bit frames and gave an illumination's children
    one seed: they keep that, and resume bit-identically also when the resuming config spells out the new
    defaults (a setting newer than a run is not a conflict)."""
    from workbench.asal.driver import read_config
    from workbench.asal.evaluate import components, embed_rollouts, frame_indices, to_uint8_tensor

    ev = EvalConfig("lenia", "pixels", steps=6, frames=2, size=32, overrides={"grid": 64, "phenotype": 32})
    sub, fm = components(ev)
    theta = np.random.default_rng(0).normal(0, 0.5, (1, sub.n_params))
    params, at, frames = sub.decode(theta), 0, []
    state = sub.init(params, seed=7)
    for index in frame_indices(ev):
        state, at = sub.step(state, params, steps=index - at), index
        frames.append(sub.render(state, params, size=32, as_tensor=True)[0])
    floats = torch.stack(frames)
    z, thumbs = embed_rollouts(ev, theta, [7])
    np.testing.assert_array_equal(z[0, 0], fm.embed_images(floats.numpy(), use_cache=False))
    bytes_ = fm.embed_images(to_uint8_tensor(floats).numpy(), use_cache=False)
    assert not np.array_equal(z[0, 0], bytes_)
    old_ev = dataclasses.replace(ev, pixels="uint8")
    z_old, thumbs_old = embed_rollouts(old_ev, theta, [7])
    np.testing.assert_array_equal(z_old[0, 0], bytes_)
    np.testing.assert_array_equal(thumbs_old, thumbs)  # thumbnails are the same bytes either way

    def made_before(cfg: SearchConfig) -> SearchConfig:  # what the run made before the settings did
        return SearchConfig(**{**cfg.to_dict(), "child_seeds": "shared", "eval": {**cfg.eval.__dict__,
                                                                                  "pixels": "uint8"}})

    new = SearchConfig(kind="illuminate", eval=EvalConfig("boids", "pixels", steps=10, size=32), iters=2, pop=4,
                       population=8, seed=2)
    straight = run_search(made_before(new), RunStore(tmp_path / "a"))
    fresh = run_search(new, RunStore(tmp_path / "c"))
    store = RunStore(tmp_path / "b")
    calls = iter([False, True])
    run = run_search(made_before(new), store, should_stop=lambda: next(calls))
    info = json.loads((run.path / "run.json").read_text())
    del info["config"]["eval"]["pixels"], info["config"]["child_seeds"], info["config"]["init"]
    write_json(run.path / "run.json", info)
    older = read_config(info["config"])
    assert (older.eval.pixels, older.child_seeds) == ("uint8", "shared")
    resumed = run_search(new, store, resume=run.id)  # given: the new defaults, pixels "float", child_seeds "own"
    from workbench.asal.driver import PREDATES
    from workbench.runs import resume_conflicts

    info = store.open(run.id).info  # the defaults given are no conflict; a request to change what it did is
    assert resume_conflicts(info, {"init": "zero", "eval.pixels": "float"}, PREDATES) == []
    assert [name for name, _ in resume_conflicts(info, {"init": "random", "eval.pixels": "uint8"}, PREDATES)] == [
        "init"]
    # typed (CLI flags): the default typed is a request too, refused where the run did otherwise
    assert [name for name, _ in resume_conflicts(info, {"init": "zero", "eval.pixels": "float"}, PREDATES,
                                                 typed=True)] == ["eval.pixels"]
    assert resume_conflicts(info, {"eval.pixel": "float"}, PREDATES)[0][1].startswith(
        "'float': the run has no such setting")  # misspelt: refused, never ignored
    proc = _short("asal", "illuminate", "--resume", run.id, "--init", "random", "--runs", str(store.root), cwd=tmp_path)
    out, err = proc.communicate(timeout=120)  # the CLI, in its own process: one line naming the flag
    assert proc.returncode == 2 and out == "" and "--init 'random' ≠ what the run did" in err, err
    metrics = [pd.read_parquet(r.path / "metrics.parquet") for r in (straight, resumed, fresh)]
    pd.testing.assert_frame_equal(metrics[0].drop(columns="seconds", errors="ignore"),
                                  metrics[1].drop(columns="seconds", errors="ignore"))
    assert not np.array_equal(metrics[0]["best_loss"], metrics[2]["best_loss"])


def test_resume_conflicts_of_settings_a_run_has_not_got():
    """A setting newer than a run: its default given is fine, another value is compared with what the run did
    (NAMM's --max-kept came after the first NAMM runs); a task's range the run has not got is a conflict; a name
    no config has is an error."""
    from workbench.asal.driver import PREDATES as ASAL
    from workbench.namm.legacy import PREDATES as NAMM
    from workbench.runs import resume_conflicts

    info = {"config": {"gens": 3, "ranges": {"add": [0, 1]}, "task_weights": None}}
    assert resume_conflicts(info, {"max_kept": None, "gens": 3, "ranges.add": (0, 1)}, NAMM) == []
    assert [name for name, _ in resume_conflicts(info, {"max_kept": 0.5}, NAMM)] == ["max_kept"]
    conflicts = resume_conflicts(info, {"ranges.b": [0, 1], "task_weights.a": 1})
    assert [name for name, _ in conflicts] == ["ranges.b", "task_weights.a"]
    assert "the run has no such setting (its ranges: add)" in conflicts[0][1]
    with pytest.raises(ValueError, match="unknown run setting 'gen'"):
        resume_conflicts(info, {"gen": 3}, NAMM)
    assert ASAL["init"] == ("zero", "zero") and ASAL["eval.pixels"] == ("float", "uint8")


def test_a_listing_names_cut_and_foreign_metrics_files_as_the_catalog_view_does(tmp_path):
    """list() reads no metrics view (three quarters of its time at 1,000 runs): it tells a damaged metrics.parquet
    by the file's Parquet ends. A file cut anywhere, one overwritten, a folder of that name: each named as the
    view's read names it, and the intact ones not."""
    store = RunStore(tmp_path / "runs")
    runs = [run_search(SearchConfig(kind="openended", eval=EvalConfig("boids", "pixels", steps=8, frames=2),
                                    iters=2, pop=4, seed=seed), store) for seed in range(4)]
    whole = (runs[0].path / "metrics.parquet").read_bytes()
    (runs[1].path / "metrics.parquet").write_bytes(whole[: len(whole) - 3])  # the end cut off
    (runs[2].path / "metrics.parquet").write_bytes(whole[:4] + b"x" * (len(whole) - 4))  # overwritten inside
    (runs[3].path / "metrics.parquet").unlink()
    (runs[3].path / "metrics.parquet").mkdir()
    damaged = [str(r.path / "metrics.parquet") for r in runs[1:]]
    assert [r["id"] for r in store.list()] == [r.id for r in runs] and store.unreadable_metrics == damaged
    store.catalog()  # the view's read: the same files
    assert store.unreadable_metrics == damaged


def test_a_run_json_value_the_catalog_cannot_hold_leaves_one_unreadable_run(tmp_path):
    """An int beyond 64 bits or a lone surrogate (json reads "\\udc80") in a catalog column: that run is skipped as
    unreadable, the others listed (the catalog's table refused every run: a traceback, or an error for all)."""
    store = RunStore(tmp_path)
    good = store.create("merge", "ties", "sort+reverse", {"iters": 1}, 0, metric="fitness")
    good.update(status="done", best_loss=-0.5, iterations=1)
    for name, field in (("big", '"iterations": 18446744073709551616'), ("surrogate", '"fm": "sort\\udc80"'),
                        ("bigreal", '"best_loss": 1180591620717411303424')):
        (tmp_path / name).mkdir()
        info = json.loads((good.path / "run.json").read_text()) | {"id": name}
        key = field.split(":")[0].strip('"')
        text = json.dumps({k: v for k, v in info.items() if k != key})
        (tmp_path / name / "run.json").write_text(text[:-1] + ", " + field + "}")
    rows = store.list()
    assert [r["id"] for r in rows] == [good.id] and rows[0]["best"] == 0.5 and rows[0]["iterations"] == 1
    assert sorted(store.unreadable_runs) == ["big", "bigreal", "surrogate"]


def test_a_run_the_catalog_leaves_out_is_named_with_its_reason_and_fix(tmp_path, capsys):
    """A run.json field of a type the catalog refuses (created a list, kind a number) or a config whose insides are
    wrong (models a number): `runs list` named the folder as "corrupt or foreign" and sent the researcher to `runs
    show`, which for the config was a TypeError traceback; a run.json without its status made `runs show` a
    KeyError traceback. Each reason and its fix is said where the run is left out, and `runs show` says it too."""
    store = RunStore(tmp_path)
    cfg = {"method": "ties", "models": ["a", "b"], "tasks": ["add"], "iters": 3}
    runs = [store.create("merge", "ties", "a+b", cfg, seed, metric="fitness") for seed in range(5)]
    for run in runs:
        run.update(status="done", best_loss=-0.5, iterations=3)
    good, created, kind, models, statusless = runs
    for run, change in ((created, {"created": ["2026"]}), (kind, {"kind": 5}),
                        (models, {"config": {**cfg, "models": 5}})):
        (run.path / "run.json").write_text(json.dumps(json.loads((run.path / "run.json").read_text()) | change))
    info = json.loads((statusless.path / "run.json").read_text())
    (statusless.path / "run.json").write_text(json.dumps({k: v for k, v in info.items() if k != "status"}))
    assert [r["id"] for r in store.list()] == [good.id, statusless.id]
    assert store.unreadable_why == {
        created.id: "run.json is corrupt (created is list, not str); correct it in run.json, or move the folder out "
                    "of the run store",
        kind.id: "run.json is corrupt (kind is int, not str); correct it in run.json, or move the folder out of the "
                 "run store",
        models.id: "run.json's config does not read as a merge run's ('int' object is not iterable); correct it in "
                   "run.json, or move the folder out of the run store"}
    # a page that picks merge runs: those that say they are merge runs (a kind of 5 says no kind)
    assert [why.split(":")[0] for why in store.passed_over(["merge"])] == [f"run {created.id}", f"run {models.id}"]
    assert main(["runs", "list", "--runs", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    for run in (created, kind, models):
        assert f"warning: {run.id} is not readable as a run, left out: {store.unreadable_why[run.id]}" in \
            " ".join(err.split()), err
    assert main(["runs", "show", models.id, "--runs", str(tmp_path)]) == 2
    assert "run.json's config does not read as a merge run's ('int' object is not iterable); correct it" in \
        " ".join(capsys.readouterr().err.split())
    assert main(["runs", "show", statusless.id, "--runs", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["recorded_status"] is None


def test_a_left_out_run_json_whose_kind_is_no_text_is_passed_over_by_no_page(tmp_path):
    """From mutation sampling: passed_over reads each left-out run.json as plain JSON, and a kind that is no text (a
    list) or a run.json that is no object names no kind (compared with a page's kinds, the list was unhashable: a
    TypeError on every page that picks runs); checked_catalog_row without the run's folder names the run's own
    run.json (ROOT/ID), not one at the store's root."""
    from workbench.runs import checked_catalog_row

    store = RunStore(tmp_path)
    cfg = {"method": "ties", "models": ["a", "b"], "tasks": ["add"], "iters": 3}
    listed, models = (store.create("merge", "ties", "a+b", cfg, seed, metric="fitness") for seed in (0, 1))
    for run, change in ((listed, {"kind": ["merge"]}), (models, {"config": {**cfg, "models": 5}})):
        (run.path / "run.json").write_text(json.dumps(json.loads((run.path / "run.json").read_text()) | change))
    (tmp_path / "array").mkdir()
    (tmp_path / "array" / "run.json").write_text("[1, 2]")
    assert store.list() == [] and sorted(store.unreadable_why) == sorted(["array", listed.id, models.id])
    assert [why.split(":")[0] for why in store.passed_over(["merge"])] == [f"run {models.id}"]
    with pytest.raises(RunError) as refused:
        checked_catalog_row(json.loads((models.path / "run.json").read_text()), tmp_path)
    assert str(refused.value).startswith(f"{models.path}/run.json's config does not read as a merge run's"), \
        refused.value


def test_damaged_files_of_one_run_leave_the_others_readable_and_each_is_named(tmp_path):
    """From a probe of damaged run folders: one truncated metrics.parquet failed `runs list`, `runs show` and the
    Runs page for every run (DuckDB's traceback), a damaged best.png blanked the Runs page, run.json fields of the
    wrong type (config a list, status a number) or a folder named run.json were tracebacks in every list, a
    resume of a run whose checkpoint.json was gone started it over and overwrote its metrics, and a damaged
    best.npy or a full disk was a traceback. Each is now one named damage; the other runs read as before."""
    from workbench.dashboards.runs import RunsModel

    store = RunStore(tmp_path / "runs")
    ids = []
    for seed in (0, 1, 2):
        run = run_search(SearchConfig(kind="openended", eval=EvalConfig("boids", "pixels", steps=8, frames=2),
                                      iters=2, pop=4, seed=seed), store)
        ids.append(run.id)
    good, bad, third = (store.root / i for i in ids)
    (bad / "metrics.parquet").write_bytes(b"PAR1 not really")
    (bad / "best.png").write_bytes(b"\x89PNG damaged")
    (third / "best.npy").write_bytes(b"")
    rows = store.list()
    assert [r["id"] for r in rows] == ids and store.unreadable_metrics == [str(bad / "metrics.parquet")]
    # a run removed while the catalog reads (its file there when listed, gone when read) is not "unreadable"
    gone = third / "metrics.parquet"
    moved = tmp_path / "moved.parquet"
    gone.rename(moved)
    listed_as_there = Path.exists
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Path, "exists", lambda p: p == gone or listed_as_there(p))
        store.list()
    assert store.unreadable_metrics == [str(bad / "metrics.parquet")]
    moved.rename(gone)
    with pytest.raises(RunError, match="metrics.parquet is unreadable"):
        store.metrics(bad.name)
    assert len(store.metrics(good.name)) == 2
    page = RunsModel(runs_dir=str(store.root))  # the page: every run, the damaged one without a picture
    cards = {row["id"]: page.card(row) for row in page.shown()}
    assert len(cards) == 3 and cards[bad.name]["thumbnail"] is None and cards[good.name]["thumbnail"]
    listed = _short("runs", "list", "--runs", str(store.root))
    assert listed.returncode == 0 and bad.name in listed.stdout and "metrics.parquet is not readable" in listed.stderr
    shown = _short("runs", "show", bad.name, "--runs", str(store.root), "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["metrics"] is None and "unreadable" in shown.stderr
    compared = _short("runs", "compare", good.name, bad.name, "--runs", str(store.root))
    # compared, the damaged run's curve left out and named (the whole comparison was refused)
    assert compared.returncode == 0 and compared.stderr.strip().startswith(
        f"warning: {bad.name} left out of the curves: {bad / 'metrics.parquet'} is unreadable (ArrowInvalid")
    assert good.name in compared.stdout and bad.name in compared.stdout
    video = _short("figure", "video", third.name, "--out", str(tmp_path / "v.gif"), "--runs", str(store.root))
    # a truncated .npy: EOFError from numpy's reader, ValueError from older numpy's (1.24)
    assert video.returncode == 2 and re.fullmatch(
        rf"error: {re.escape(str(third / 'best.npy'))} is unreadable \((EOFError|ValueError)\); it is damaged",
        video.stderr.strip())

    # run.json: fields of the wrong type, a folder, a newer format: each run skipped with a warning, named on open
    for name, change in (("typed", {"config": [1, 2]}), ("status", {"status": 7}), ("newer", {"format": 2})):
        (store.root / name).mkdir()
        info = {**json.loads((good / "run.json").read_text()), **change}
        (store.root / name / "run.json").write_text(json.dumps(info))
    (store.root / "folder" / "run.json").mkdir(parents=True)
    assert [r["id"] for r in store.list()] == ids
    assert sorted(store.broken()) == ["folder", "newer", "status", "typed"]
    header = html.unescape(RunsModel(runs_dir=str(store.root)).count_text())  # the page says what it left out, too
    assert header.startswith("3 of 3 runs") and re.search("left out: `folder` .*; `newer` .*; `status` .*; `typed` "
                                                          r"\(run.json is corrupt \(config is list, not dict\)", header)
    assert f"metrics unreadable: `{bad.name}`" in header
    with pytest.raises(RunError, match="config is list, not dict"):
        store.open("typed")
    with pytest.raises(RunError, match="newer workbench .*upgrade"):
        store.open("newer")
    with pytest.raises(RunError, match="run.json cannot be read"):
        store.open("folder")
    listed = _short("runs", "list", "--runs", str(store.root))  # a newer workbench's run is said to be one
    assert "warning: newer is not readable as a run, left out: run.json was written by a newer workbench (run " \
        "format 2" in listed.stderr and "upgrade the workbench to read it" in listed.stderr
    assert "warning: typed is not readable as a run, left out: run.json is corrupt (config is list, not dict); " \
        "correct it in run.json, or move the folder out of the run store" in listed.stderr

    # a copied run folder is its own run (it listed as the original, and its readers read the original)
    import shutil

    shutil.copytree(good, store.root / "copy")
    assert "copy" in [r["id"] for r in store.list()]

    # an unfinished run without its checkpoint is not started over on top of its metrics
    stopped = run_search(SearchConfig(kind="openended", eval=EvalConfig("boids", "pixels", steps=8, frames=2),
                                      iters=2, pop=4, seed=5), store)
    Run = type(stopped)
    Run(stopped.path).update(status="stopped")
    (stopped.path / "checkpoint.json").unlink()
    before = (stopped.path / "metrics.parquet").read_bytes()
    resumed = _short("asal", "openended", "--resume", stopped.id, "--runs", str(store.root), "--quiet")
    assert resumed.returncode == 2 and "has no checkpoint.json: --resume would start it over" in resumed.stderr
    assert (stopped.path / "metrics.parquet").read_bytes() == before

    # the system's errors (here a name longer than the file system takes) are one line, not a traceback
    long = _short("asal", "openended", "--substrate", "boids", "--fm", "pixels", "--runs",
                  str(tmp_path / ("x" * 300)), "--quiet")
    assert long.returncode == 1 and long.stderr.strip().startswith(f"error: {tmp_path / ('x' * 300)}") and \
        long.stderr.strip().endswith(": File name too long") and len(long.stderr.strip().splitlines()) == 1


def _failures_while(churn, stop, reads, tries: int) -> list[str]:
    """Each of `reads` called `tries` times while `churn` runs on a thread until `stop` is set: what they raised."""
    import threading

    failures: list[str] = []
    thread = threading.Thread(target=churn)
    thread.start()
    try:
        for _ in range(tries):
            for read in reads:
                try:
                    read()
                except Exception as exc:  # noqa: BLE001 - any failure is the bug
                    failures.append(f"{type(exc).__name__}: {exc}")
    finally:
        stop.set()
        thread.join()
    return failures


def test_tables_read_while_their_run_rewrites_them_are_whole(tmp_path):
    """From a probe of concurrent use: a page or command reading a run's metrics while the run rewrote them got
    the old file's footer with the new file's data about once in 100 reads (pyarrow, pandas and DuckDB open a file
    twice; the writer renames a new one over it in between): TProtocolException, "Page was smaller than
    expected", and now a RunError calling a healthy running run damaged. Tables are read in one open."""
    import threading

    store = RunStore(tmp_path / "runs")
    run = store.create("target", "lenia", "pixels", {}, 0)
    rows = [{"iteration": i, "best_loss": 1.0 / (i + 1), "seconds": 0.1, "note": "x" * (i % 7)} for i in range(400)]
    run.write_table("metrics", rows[:1])
    stop = threading.Event()

    def write() -> None:
        n = 1
        while not stop.is_set():
            n = n % len(rows) + 1
            run.write_table("metrics", rows[:n])

    failures = _failures_while(write, stop, [lambda: store.metrics(run.id), lambda: run.read_table("metrics")], 300)
    assert not failures, failures[:3]


def test_one_run_removed_from_two_tabs_at_once_says_removed_meanwhile(tmp_path):
    """From a probe of concurrent use: two tabs of one server (or a tab and `workbench runs rm`) removing one run at
    once removed it, and the loser was told it is "held by another process (a resume)" (the winner's brief claim),
    that it has no run.json, or a bare FileNotFoundError naming a .removing- folder. The run is gone either way:
    the loser is told so (or, where it looked after the rename, that there is no such run)."""
    import threading

    store = RunStore(tmp_path / "runs")
    told: list[str] = []
    for seed in range(40):
        run = store.create("target", "boids", "pixels", {}, seed)
        run.update(status="done")
        together = threading.Barrier(2)

        def remove(run_id: str = run.id, together: threading.Barrier = together) -> None:
            together.wait()
            try:
                store.remove_all(store.removable([run_id]))
            except Exception as exc:  # noqa: BLE001 - what the page shows is what is checked
                told.append(f"{type(exc).__name__}: {exc}".replace(run_id, "ID"))

        tabs = [threading.Thread(target=remove) for _ in range(2)]
        for tab in tabs:
            tab.start()
        for tab in tabs:
            tab.join()
        assert not (store.root / run.id).exists()
    wrong = [t for t in told if t != "RunError: run ID was removed meanwhile (by another page or `workbench runs rm`)"
             and not t.startswith("RunError: no run 'ID' in ")]
    assert not wrong, wrong[:3]
    assert not list(store.root.iterdir())  # no .removing- folder left


def test_a_note_written_as_its_run_is_removed_says_the_run_was_removed(tmp_path):
    """From a probe of concurrent use: a note saved on the Runs page while another tab or `workbench runs rm` removed
    the run failed with a bare FileNotFoundError (the page, which shows ValueErrors, said nothing) or called the run
    "not a workbench run (no run.json)". Now a RunError says it was removed meanwhile (or that there is no such run)."""
    import threading

    store = RunStore(tmp_path / "runs")
    told: list[str] = []
    for seed in range(40):
        run = store.create("target", "boids", "pixels", {}, seed)
        run.update(status="done")
        run.release()
        together = threading.Barrier(2)

        def note(run_id: str = run.id, together: threading.Barrier = together) -> None:
            together.wait()
            try:
                store.open(run_id).set_note("baseline")
            except Exception as exc:  # noqa: BLE001 - what the page shows is what is checked
                told.append(f"{type(exc).__name__}: {exc}".replace(run_id, "ID"))

        def remove(run_id: str = run.id, together: threading.Barrier = together) -> None:
            together.wait()
            store.remove(run_id)

        both = [threading.Thread(target=note), threading.Thread(target=remove)]
        for thread in both:
            thread.start()
        for thread in both:
            thread.join()
    wrong = [t for t in told if t != "RunError: run ID was removed meanwhile (by another page or `workbench runs rm`)"
             and not t.startswith("RunError: no run 'ID' in ")]
    assert not wrong, wrong[:3]
    assert not list(store.root.iterdir())


def test_the_catalog_read_while_runs_are_removed_leaves_them_out(tmp_path):
    """From a probe of concurrent use: a catalog read (a notebook's, `runs list`, the Runs page) while another tab or
    `workbench runs rm` removed a run raised DuckDB's IOException ("No files found that match the pattern
    .../metrics.parquet", from the metrics view, which binds to its files as it is made), or named the removed run
    unreadable ("not a workbench run (no run.json)"). A removal is one rename of the folder out of the store: here
    runs go out and come back, over and over, and every read succeeds with nothing called unreadable."""
    import threading

    store = RunStore(tmp_path / "runs")
    runs = []
    for seed in range(6):
        run = store.create("target", "boids", "pixels", {}, seed)
        run.write_table("metrics", [{"iteration": 0, "best_loss": 1.0}])
        run.update(status="done")
        run.release()
        runs.append(run)
    stop = threading.Event()

    def remove_and_put_back() -> None:
        while not stop.is_set():
            for run in runs:
                aside = store.root / f".removing-{run.id}-0"
                os.rename(run.path, aside)
                os.rename(aside, run.path)

    def read() -> None:
        store.catalog().close()
        if store.unreadable_why:  # a failure too: a run removed meanwhile is no damaged run
            raise RuntimeError(f"unreadable: {', '.join(store.unreadable_why.values())}")

    failures = _failures_while(remove_and_put_back, stop, [read], 60)
    assert not failures, failures[:3]
    with store.catalog() as con:  # all back: every run's metrics in the view
        assert con.execute("SELECT count(*) FROM metrics").fetchone() == (6,)


def test_a_write_reaches_the_disk_before_it_is_renamed_over_the_old_file(tmp_path, monkeypatch):
    """atomic_write fsyncs the new file's bytes before os.replace puts it in place: renamed first, a power cut could
    leave run.json or a checkpoint empty on file systems that order metadata before data."""
    from workbench import atomic

    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (events.append(("fsync", os.fstat(fd).st_size)),
                                                        real_fsync(fd))[1])
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: (events.append(("replace", Path(b).name)),
                                                             real_replace(a, b))[1])
    atomic.atomic_write(tmp_path / "run.json", lambda p: p.write_text('{"status": "done"}'))
    assert events == [("fsync", 18), ("replace", "run.json")]
    assert (tmp_path / "run.json").read_text() == '{"status": "done"}'


def test_a_write_that_fails_names_the_file_it_was_writing(tmp_path):
    """A full disk's OSError names no file (and a read-only folder's the temporary file, gone after): the command
    line's one error line said "OSError on: No space left on device". atomic_write names what it was writing."""
    import errno

    from workbench.atomic import atomic_write

    def write_to_a_full_disk(_) -> None:
        with open("/dev/full", "w") as full:  # the kernel's device that is always full
            full.write("x")

    with pytest.raises(OSError) as error:
        atomic_write(tmp_path / "run.json", write_to_a_full_disk)
    assert error.value.errno == errno.ENOSPC and error.value.filename == str(tmp_path / "run.json")
    assert list(tmp_path.iterdir()) == []  # no temporary file left
    # a folder where no temporary file can be made (as a read-only one): its name, not a random one never made
    with pytest.raises(OSError) as error:
        atomic_write("/proc/self/run.json", lambda p: p.write_text("{}"))
    assert error.value.filename == "/proc/self/run.json"


def test_a_write_that_fails_in_a_relative_folder_names_its_file_not_a_temporary_one(monkeypatch):
    """The run store's default folder is relative (--runs runs), and mkstemp names the temporary file it could not
    make by its absolute path: a run folder gone read-only said `error: /abs/runs/ID/.run.k3x9q.json:
    Read-only file system`, a file that never was, in place of run.json."""
    from workbench.atomic import atomic_write

    monkeypatch.chdir("/proc/self")  # a folder where no temporary file can be made, as a read-only one
    with pytest.raises(OSError) as error:
        atomic_write("run.json", lambda p: p.write_text("{}"))
    assert error.value.filename == "run.json"


def test_a_folder_replaced_through_a_symlink_leaves_no_link_aside(tmp_path):
    """replace_dir over a symlink: the link moves aside and goes (rmtree refused it, silently, and it stayed as
    a dangling `.name.replaced-…` link); what it pointed to is not touched."""
    from workbench.atomic import replace_dir, staging_dir

    real = tmp_path / "real"
    real.mkdir()
    (real / "kept.txt").write_text("old")
    (tmp_path / "link").symlink_to(real)
    new = staging_dir(tmp_path / "link")
    (new / "made.txt").write_text("new")
    replace_dir(new, tmp_path / "link")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]
    assert (tmp_path / "link" / "made.txt").read_text() == "new" and (real / "kept.txt").read_text() == "old"


def test_best_video_plays_the_best_from_the_initial_state_it_scored_from(tmp_path):
    """A probe: each iteration draws fresh initial states, and a seeded substrate's best θ kept its best loss
    from one of them, but best.mp4 (and `figure video`, the Lab) played it from seed 0, where it scored
    otherwise. run.json's best_seed names the state; from it the best θ scores the run's best loss again."""
    from workbench.asal.driver import iteration_seeds
    from workbench.asal.evaluate import Objective, embed_rollouts
    from workbench.export import export
    from workbench.figures import best_video
    from workbench.simulations import make_substrate

    ev = EvalConfig("boids", "pixels", steps=12, frames=3, size=32)
    run = run_search(SearchConfig(kind="openended", eval=ev, iters=4, pop=4, seed=3), RunStore(tmp_path / "runs"))
    seed = run.info["best_seed"]
    assert seed in [iteration_seeds(3, it, 1)[0] for it in range(4)]
    best = run.read_array("best.npy")
    z, _ = embed_rollouts(ev, best[None], [seed])
    assert float(Objective(None, 0.0, 0.0, 1.0)(z)[0]) == pytest.approx(run.info["best_loss"], abs=1e-6)
    sub = make_substrate("boids")
    export(sub, sub.decode(best), 12, tmp_path / "at-seed.png", seed=seed, size=32)
    export(sub, sub.decode(best), 12, tmp_path / "at-0.png", seed=0, size=32)
    shown = np.asarray(Image.open(run.path / "best.png"))
    assert np.array_equal(shown, np.asarray(Image.open(tmp_path / "at-seed.png")))
    assert not np.array_equal(shown, np.asarray(Image.open(tmp_path / "at-0.png")))
    video = best_video(tmp_path / "runs", run.id, tmp_path / "again.png", size=32)
    assert np.array_equal(np.asarray(Image.open(video)), shown)
    own = best_video(tmp_path / "runs", run.id, tmp_path / "own.png")  # at the run's own size (224 before)
    assert np.array_equal(np.asarray(Image.open(own)), shown)


def test_a_run_too_big_for_this_machine_is_refused_on_resume_before_anything_loads(tmp_path):
    """A run started where memory was plentiful, resumed on a laptop: its settings cannot change on a resume, so
    the memory check says so (not "give --pop 1234", which a resume refuses), before the FM loads."""
    store = RunStore(tmp_path)
    cfg = SearchConfig(kind="target", eval=EvalConfig("lenia", "pixels", steps=4), target_image="t.png",
                       iters=3, pop=10**8)
    made = store.create("target", "lenia", "pixels", cfg.to_dict(), 0)
    made.update(status="stopped")
    with pytest.raises(RunError, match=rf"run {made.id} needs more memory than this machine has free \(--pop "
                                       r"100000000: .*\); a resume keeps the run's settings"):
        run_search(None, store, resume=made.id)
    assert store.open(made.id).info["status"] == "stopped" and store.open(made.id).info.get("resumes") is None


KILLED_AFTER_THE_CHECKPOINT = """
import os, sys
from workbench import runs
from workbench.asal.driver import SearchConfig, run_search
from workbench.asal.evaluate import EvalConfig

where, folder = sys.argv[1], sys.argv[2]
write_table, update = runs.Run.write_table, runs.Run.update

def dying_write_table(self, name, rows, *args, **kwargs):
    if where == "metrics" and name == "metrics" and len(rows) == 3:
        os._exit(137)  # as a SIGKILL leaves the files: the last checkpoint written, its metrics row not
    return write_table(self, name, rows, *args, **kwargs)

def dying_update(self, **fields):
    if where == "run.json" and fields.get("iterations") == 3:
        os._exit(137)  # the checkpoint and metrics.parquet written, run.json not
    return update(self, **fields)

runs.Run.write_table, runs.Run.update = dying_write_table, dying_update
run_search(SearchConfig(kind="openended", iters=3, pop=4, eval=EvalConfig("boids", "pixels", steps=10, frames=2)),
           runs.RunStore(folder))
"""


@pytest.mark.parametrize("where", ["metrics", "run.json"])
def test_a_kill_just_after_the_last_checkpoint_loses_no_iteration(tmp_path, where):
    """The loop writes the checkpoint, then metrics.parquet, then run.json: a process killed between them at the
    LAST iteration resumed to a run one metrics row short (or whose run.json said one iteration fewer), as no
    later iteration rewrote them. The kill lands at that point exactly (os._exit in a process of its own: the
    window is milliseconds wide for a real SIGKILL); the resumed run equals an uninterrupted one."""
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_THE_CHECKPOINT, where, str(tmp_path / "killed")],
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "WORKBENCH_SAVE_SHARE": "1"})  # iteration 2 saved too
    assert killed.returncode == 137, killed.stderr
    store = RunStore(tmp_path / "killed")
    (folder,) = (tmp_path / "killed").iterdir()
    run = store.open(folder.name)
    assert run.info["iterations"] == 2 and len(run.load_checkpoint()["metrics"]) == 3
    resumed = run_search(None, store, resume=run.id)
    whole = run_search(SearchConfig(kind="openended", iters=3, pop=4, eval=EvalConfig("boids", "pixels", steps=10,
                                                                                       frames=2)),
                       RunStore(tmp_path / "whole"))
    assert resumed.info["status"] == "done" and resumed.info["iterations"] == whole.info["iterations"] == 3
    assert resumed.info["best_loss"] == whole.info["best_loss"]
    got, want = (r.read_table("metrics").to_pandas().drop(columns="seconds") for r in (resumed, whole))
    pd.testing.assert_frame_equal(got, want)


def test_json_on_stdout_is_standard_json_with_nan_in_metrics(tmp_path):
    """NaN in a run's metrics rows (a NAMM run's score of a task its curriculum has not reached, a QD archive still
    empty) is null in `runs show|list|compare --json`: json.dumps wrote NaN, which jq and JSON.parse refuse."""
    store = RunStore(tmp_path)
    ids = []
    for seed in (0, 1):
        run = store.create("namm", "passkey+qa", "tiny", {"seed": seed, "gens": 1}, seed, metric="fitness")
        run.write_table("metrics", {"iteration": [0], "best_loss": [-0.5], "score_qa": [math.nan],
                                    "score_passkey": [math.inf]})
        run.update(status="done", iterations=1, best_loss=-0.5)
        ids.append(run.id)

    def strict(text: str):  # NaN, Infinity and -Infinity refused, as every JSON reader but Python's does
        return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in {text}"))

    shown = strict(_short("runs", "show", ids[0], "--json", "--runs", str(tmp_path), cwd=tmp_path).stdout)
    assert shown["metrics"][0]["score_qa"] is None and shown["metrics"][0]["score_passkey"] is None
    assert shown["metrics"][0]["best_loss"] == -0.5
    assert strict(_short("runs", "show", ids[0], "--runs", str(tmp_path), cwd=tmp_path).stdout)["id"] == ids[0]
    assert len(strict(_short("runs", "list", "--json", "--runs", str(tmp_path), cwd=tmp_path).stdout)) == 2
    compared = _short("runs", "compare", *ids, "--json", "--runs", str(tmp_path), cwd=tmp_path)
    assert set(strict(compared.stdout)["runs"]) == set(ids), compared.stderr


def test_a_resume_takes_the_fm_weights_from_where_they_were_moved_checked_by_content(tmp_path, clip_weights, capsys):
    """A search's or a sweep's FM weights moved (a store taken to another machine): its resume said "pass --weights
    FILE", then refused --weights as a setting that contradicts the run. `--resume ID --weights PATH` goes on with
    the run's weights at PATH, checked by their content (run.json's weights_sha256; a run from before it: the
    weights still at its recorded path), and records PATH once they have loaded; a finished run records it too
    (its pages read it). Weights of other content are one line naming --weights, nothing recorded."""
    from workbench.asal.driver import SearchConfig, run_search
    from workbench.asal.evaluate import EvalConfig
    from workbench.asal.sweep import SweepConfig, run_sweep
    from workbench.asal.weights import weights_fingerprint

    weights = tmp_path / "vitb32.pt"
    os.link(clip_weights, weights)  # the same file under a name of the test's own (no copy of 600 MB)
    store = RunStore(tmp_path / "runs")
    ev = dict(fm="openclip:ViT-B-32", weights=str(weights), steps=8, frames=2, size=32)
    search = run_search(SearchConfig(kind="openended", eval=EvalConfig("boids", **ev), iters=2, pop=2), store,
                        should_stop=lambda: True)
    sweep = run_sweep(SweepConfig(EvalConfig("gol", **ev, bs=1), limit=4, batch=2), store, should_stop=lambda: True)
    sha = weights_fingerprint(clip_weights)
    assert search.info["weights_sha256"] == sweep.info["weights_sha256"] == sha
    (tmp_path / "other.pt").write_bytes(b"not the run's weights")
    resume = ["asal", "openended", "--resume", search.id, "--runs", str(store.root), "--quiet"]
    # a run from before weights_sha256: other weights are told by the ones still at its recorded path
    search.update(weights_sha256=None)
    assert main([*resume, "--weights", str(tmp_path / "other.pt")]) == 2
    assert f"are not run {search.id}'s FM weights" in capsys.readouterr().err
    assert main(resume) == 0  # its own: it goes on, and records their fingerprint once they have loaded
    capsys.readouterr()
    assert store.open(search.id).info["weights_sha256"] == sha
    moved = tmp_path / "elsewhere.pt"
    weights.rename(moved)
    for kind, run in (("openended", search), ("sweep", sweep)):
        args = ["asal", kind, "--resume", run.id, "--runs", str(store.root), "--quiet"]
        if kind == "sweep":  # (the finished search reads no weights without --weights)
            assert main(args) == 2
            said = capsys.readouterr().err
            assert f"run {run.id}'s FM weights {weights} are not there" in said and \
                f"`workbench asal {kind} --resume {run.id} --runs {store.root} --weights PATH`" in said
        assert main([*args, "--weights", str(tmp_path / "other.pt")]) == 2
        said = capsys.readouterr().err
        assert f"--weights {tmp_path / 'other.pt'} are not run {run.id}'s FM weights" in said and \
            len(said.strip().splitlines()) == 1
        assert store.open(run.id).info["config"]["eval"]["weights"] == str(weights)
    # the finished search: the new place recorded (no load: checked by content), where its pages read it
    assert main([*resume, "--weights", str(moved)]) == 0
    capsys.readouterr()
    info = store.open(search.id).info
    assert info["status"] == "done" and info["iterations"] == 2 and info["config"]["eval"]["weights"] == str(moved)
    done = run_sweep(None, store, resume=sweep.id, weights=str(moved))  # the library's spelling
    assert done.info["status"] == "done" and done.info["config"]["eval"]["weights"] == str(moved)
    # a run from before weights_sha256 whose weights are gone: weights given are taken as given (nothing to check
    # them by), recorded only once they load, and by path alone (a fingerprint would lock the run onto them)
    old = run_search(SearchConfig(kind="openended", eval=EvalConfig("boids", **{**ev, "weights": str(moved)}),
                                  iters=2, pop=2), store, should_stop=lambda: True)
    old.update(weights_sha256=None)
    again = tmp_path / "again.pt"
    moved.rename(again)
    args = ["asal", "openended", "--resume", old.id, "--runs", str(store.root), "--quiet"]
    assert main([*args, "--weights", str(tmp_path / "other.pt")]) == 2  # not a state dict: refused as it loads
    capsys.readouterr()
    assert store.open(old.id).info["config"]["eval"]["weights"] == str(moved)
    assert main([*args, "--weights", str(again)]) == 0
    capsys.readouterr()
    info = store.open(old.id).info
    assert info["config"]["eval"]["weights"] == str(again) and info.get("weights_sha256") is None


def test_run_ids_may_come_on_either_side_of_the_options(tmp_path):
    """`runs note ID --runs DIR TEXT`, `runs compare A --runs DIR B`, `runs rm A --runs DIR B` and `figure curves A
    --runs DIR B`, as scripts build them: argparse read only positionals side by side ("unrecognized arguments")."""
    store = RunStore(tmp_path / "s")
    a, b = (store.create("target", "lenia", "pixels", {"seed": s}, s) for s in (0, 1))
    for run in (a, b):
        run.write_table("metrics", {"iteration": [0], "best_loss": [0.5]})
        run.update(status="done", iterations=1, best_loss=0.5)
    where = ["--runs", str(store.root)]
    noted = _short("runs", "note", a.id, *where, "a note", cwd=tmp_path)
    assert noted.returncode == 0 and store.open(a.id).note == "a note", noted.stderr
    compared = _short("runs", "compare", a.id, *where, b.id, "--json", cwd=tmp_path)
    assert compared.returncode == 0 and set(json.loads(compared.stdout)["runs"]) == {a.id, b.id}, compared.stderr
    drawn = _short("figure", "curves", a.id, *where, b.id, "--out", str(tmp_path / "c.png"), cwd=tmp_path)
    assert drawn.returncode == 0 and (tmp_path / "c.png").is_file(), drawn.stderr
    listed = _short("runs", "rm", a.id, *where, b.id, cwd=tmp_path)  # without --yes: listed, not removed
    assert listed.returncode == 0 and a.id in listed.stdout and b.id in listed.stdout, listed.stderr
    unknown = _short("runs", "note", a.id, *where, "--bogus", cwd=tmp_path)  # an unknown flag is still named
    assert unknown.returncode == 2 and "unrecognized arguments: --bogus" in unknown.stderr, unknown.stderr


def test_stdout_of_another_encoding_a_closed_pipe_and_a_store_name_that_is_not_utf8(tmp_path):
    """Scripts' corners: a stdout that cannot show "↓" or a note's ü (PYTHONIOENCODING, a Latin-1 locale) gets them
    escaped, not "error: … codec can't encode" (exit 2) after the work was done; a reader that closes the pipe early
    ends the command with 141, as SIGPIPE would (1 is an error's); a store whose name is not UTF-8 is refused before
    a run folder is made (its run.json failed later, and the run was left failed)."""
    store = RunStore(tmp_path / "s")
    run = store.create("target", "lenia", "pixels", {"seed": 0}, 0)
    rows = 4000  # runs show --json past a pipe's buffer (64 KiB)
    run.write_table("metrics", {"iteration": list(range(rows)), "best_loss": [0.5] * rows})
    run.update(status="done", iterations=rows, best_loss=0.5)
    run.set_note("für Abbildung 3")
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    for args in (["runs", "list"], ["runs", "note", run.id], ["runs", "show", run.id]):
        proc = subprocess.run([sys.executable, "-m", "workbench", *args, "--runs", str(store.root)], env=env,
                              capture_output=True, timeout=120, cwd=tmp_path)
        assert proc.returncode == 0, (args, proc.stderr.decode())
        assert b"f\\xfcr Abbildung 3" in proc.stdout or b"f\\u00fcr Abbildung 3" in proc.stdout, proc.stdout[-300:]
    assert json.loads(proc.stdout)["note"] == "für Abbildung 3"  # runs show's JSON: escaped as JSON escapes
    reader = subprocess.Popen([sys.executable, "-m", "workbench", "runs", "show", run.id, "--json", "--runs",
                               str(store.root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    assert reader.stdout.read(10).startswith(b'{"')
    reader.stdout.close()  # as `| head -c 10` does
    assert reader.wait(timeout=120) == 141 and b"Traceback" not in reader.stderr.read()
    latin = RunStore(os.fsdecode(bytes(tmp_path / "s") + b"/lat\xe9"))
    assert latin.list() == []  # read as ever
    with pytest.raises(ValueError, match="the folder's name is not UTF-8 text"):
        latin.create("target", "lenia", "pixels", {"seed": 0}, 0)
    assert not latin.root.exists() and [r["id"] for r in store.list()] == [run.id]


def test_a_ctrl_c_in_a_resumed_runs_set_up_says_how_to_resume_it(tmp_path):
    """A Ctrl-C (or SIGTERM) while a resume sets up carries the run (stopped_run), so that the command line says
    how to resume it, as for a new run's set-up; the resumed run's status stays what it was."""
    from workbench.runs import setting_up

    run = RunStore(tmp_path).create("target", "lenia", "pixels", {"seed": 0}, 0)
    run.update(status="stopped")
    with pytest.raises(KeyboardInterrupt) as stop:
        with setting_up(run, new=False):
            raise KeyboardInterrupt
    assert stop.value.stopped_run is run and RunStore(tmp_path).open(run.id).info["status"] == "stopped"


def test_the_error_that_ended_a_run_is_the_one_said_when_run_json_cannot_be_written_either(tmp_path):
    """On a disk that stays full the loop's marking of the run failed fails too: its error (naming run.json) replaced
    the one that ended the run (naming metrics.parquet, say), and the command line lost the run and its resume
    command. Here the run's folder goes as its step fails, so that run.json cannot be written."""
    import errno
    import shutil

    from workbench.runs import checkpointed_loop

    run = RunStore(tmp_path).create("target", "lenia", "pixels", {"seed": 0}, 0)

    def step(it: int) -> dict:
        shutil.rmtree(run.path)
        raise OSError(errno.ENOSPC, "No space left on device", "metrics.parquet")

    with pytest.raises(OSError) as ended:
        checkpointed_loop(run, {"iteration": 0, "metrics": []}, 2, step, lambda: None)
    assert ended.value.errno == errno.ENOSPC and ended.value.filename == "metrics.parquet"
    assert ended.value.failed_run is run
    assert not getattr(ended.value, "__notes__", None)  # its run.json gone: no resume to name


def test_an_error_that_ends_a_run_names_the_run_and_its_resume(tmp_path):
    """A run function's error (a traceback in a notebook) says which run it marked failed and how to resume it."""
    from workbench.runs import checkpointed_loop

    run = RunStore(tmp_path).create("target", "lenia", "pixels", {"seed": 0}, 0)

    def step(it: int) -> dict:
        raise ValueError("a bad batch")

    with pytest.raises(ValueError, match="a bad batch") as ended:
        checkpointed_loop(run, {"iteration": 0, "metrics": []}, 2, step, lambda: None)
    assert getattr(ended.value, "__notes__", []) == ([] if sys.version_info < (3, 11) else [  # PEP 678: 3.11
        f"run {run.id} failed (resumable once that is fixed): run_search(None, {str(tmp_path)!r}, resume={run.id!r}) "
        f"(from workbench.asal), or `{run.resume_cli}`"])
    assert run.status == "failed"


def test_iterations_faster_than_a_save_are_saved_together_and_a_stop_saves_what_is_left(tmp_path):
    """A save after every iteration (the checkpoint, metrics.parquet and run.json: four fsynced writes, 18 ms here)
    took a fifth of a fast search's time. Iterations much faster than a save are saved together, once a save would
    take at most SAVE_SHARE of the time since the last; the first and the last are saved, and a stop saves every
    iteration done. On disk, each save is the whole state at its iteration."""
    import pandas as pd

    from workbench.runs import checkpointed_loop

    store = RunStore(tmp_path)
    run = store.create("target", "lenia", "pixels", {"seed": 0}, 0)
    on_disk = []  # (iterations done, run.json's iterations, checkpoint's iteration) as each iteration ends

    def seen(done: int, total: int, row: dict) -> None:
        on_disk.append((done, store.open(run.id).info.get("iterations"), run.load_checkpoint()["iteration"]))

    state = {"iteration": 0, "metrics": [], "x": []}

    def step(it: int) -> dict:  # far faster than a save: no disk
        state["x"].append(it)
        return {"best_loss": -float(it)}

    checkpointed_loop(run, state, 40, step, lambda: None, on_iteration=seen)
    assert on_disk[0] == (1, 1, 1) and on_disk[-1] == (40, 40, 40), on_disk
    assert any(ran > saved for ran, saved, _ in on_disk), "every iteration was saved"
    assert all(saved == held for _, saved, held in on_disk), on_disk  # run.json and the checkpoint agree
    assert run.load_checkpoint()["x"] == list(range(40))
    assert pd.read_parquet(run.path / "metrics.parquet")["best_loss"].tolist() == [-float(i) for i in range(40)]

    stopping = store.create("target", "lenia", "pixels", {"seed": 0}, 0)
    state = {"iteration": 0, "metrics": [], "x": []}
    checkpointed_loop(stopping, state, 40, step, lambda: pytest.fail("stopped: no finish"),
                      should_stop=lambda: len(state["x"]) == 7)
    assert stopping.status == "stopped" and stopping.info["iterations"] == 7
    assert stopping.load_checkpoint()["x"] == list(range(7))


def test_a_ctrl_c_as_a_resumed_runs_count_is_drawn_leaves_the_run_stopped(tmp_path):
    """A resumed run's progress bar is told the count it goes on from before the first iteration: a Ctrl-C there
    (the bar's first draw) came before the loop's try, and left the run "running", with no resume said."""
    from workbench.runs import checkpointed_loop

    run = RunStore(tmp_path).create("target", "lenia", "pixels", {"seed": 0}, 0)

    def bar(done: int, total: int, row: dict) -> None:
        pytest.fail("no iteration runs: the Ctrl-C came first")

    def interrupted(done: int, total: int, row: dict) -> None:
        raise KeyboardInterrupt

    bar.resumed = interrupted
    state = {"iteration": 1, "metrics": [{"iteration": 0, "seconds": 0.1, "best_loss": 0.5}]}
    with pytest.raises(KeyboardInterrupt) as ended:
        checkpointed_loop(run, state, 2, lambda it: pytest.fail("no step after the Ctrl-C"), lambda: None,
                          on_iteration=bar)
    assert run.status == "stopped" and ended.value.stopped_run is run


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full, a device no write fits on")
def test_a_resume_that_cannot_write_its_lock_file_names_it(tmp_path):
    """A resume on a full disk failed with "No space left on device" and no file: its lock file (pid in it) was
    the first write. The lock file here is /dev/full, whose writes fail."""
    store = RunStore(tmp_path)
    run = store.create("target", "lenia", "pixels", {"seed": 0}, 0)
    run.update(status="stopped")
    os.symlink("/dev/full", run.path / ".resume.lock")
    with pytest.raises(OSError) as failed:
        store.reopen(run.id, lambda config: config, kinds=("target",))
    assert failed.value.filename == str(run.path / ".resume.lock")


def test_runs_are_listed_in_the_order_they_were_made_in_any_time_zone(tmp_path):
    """`created` is local time: a run made in Tokyo, then one in New York, listed the Tokyo one as the newest (its
    text 14 h later). The catalog sorts by created_at, seconds since the epoch; a run from before it by its local
    `created` read as this machine's time."""
    store = RunStore(tmp_path)
    before = os.environ.get("TZ")
    made = []
    try:
        for zone in ("Asia/Tokyo", "America/New_York"):
            os.environ["TZ"] = zone
            time.tzset()
            made.append(store.create("target", "lenia", "pixels", {"seed": len(made)}, len(made)).id)
            time.sleep(0.01)
        tokyo, new_york = (store.open(i).info for i in made)
        assert tokyo["created"] > new_york["created"]  # the local times, the wrong way round
    finally:
        if before is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = before
        time.tzset()
    old = store.create("target", "lenia", "pixels", {"seed": 9}, 9)
    info = old.info
    del info["created_at"]  # a run from before created_at: its local time, read here
    info["created"] = "2020-01-01T00:00:00"
    write_json(old.path / "run.json", info)
    assert [r["id"] for r in store.list()] == [old.id, *made]


def test_a_second_ctrl_c_while_the_run_is_marked_stopped_leaves_it_stopped(tmp_path, monkeypatch):
    """A notebook's second "interrupt", pressed while the first one's handler wrote run.json, left the run
    "running" with the pid of the kernel, which lives on: every resume, there or from another process, was refused
    as "still running" until the kernel restarted. The write is tried again: the run is stopped, and resumes."""
    from workbench import atomic

    cfg = SearchConfig(kind="openended", eval=EvalConfig("boids", "pixels", steps=16, frames=2), iters=3, pop=4)
    replace, second = os.replace, [True]

    def interrupted_once(src, dst):  # the second Ctrl-C lands as the first one's "stopped" is put in place
        if Path(dst).name == "run.json" and second and json.loads(Path(src).read_text())["status"] == "stopped":
            second.pop()
            raise KeyboardInterrupt
        return replace(src, dst)

    def first_ctrl_c(done, total, row):
        if done == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(atomic.os, "replace", interrupted_once)
    store = RunStore(tmp_path)
    with pytest.raises(KeyboardInterrupt) as stop:
        run_search(cfg, store, on_iteration=first_ctrl_c)
    run = store.open(store.list()[0]["id"])
    assert not second and run.status == "stopped"
    # the interrupt names the run and how to resume it (a notebook's cell ended in a bare "KeyboardInterrupt:")
    assert getattr(stop.value, "__notes__", []) == ([] if sys.version_info < (3, 11) else [
        f"run {run.id} stopped (resumable): run_search(None, {str(tmp_path)!r}, resume={run.id!r}) "
        f"(from workbench.asal), or `{run.resume_cli}`"])
    assert run_search(None, store, resume=run.id).info["status"] == "done"


def test_every_kind_of_run_names_the_function_that_resumes_it():
    """The note an exception that ends a run carries names the run function that resumes it from Python: one for
    every kind the command line resumes, each taking (cfg, store, resume) as the note calls it."""
    import importlib
    import inspect

    from workbench.runs import RESUME_COMMANDS, RESUME_FUNCTIONS

    assert RESUME_FUNCTIONS.keys() == RESUME_COMMANDS.keys()
    for function in RESUME_FUNCTIONS.values():
        module, name = function.rsplit(".", 1)
        params = list(inspect.signature(getattr(importlib.import_module(module), name)).parameters)
        assert params[:3] == ["cfg", "store", "resume"], (function, params)


def test_a_sweep_cleans_a_moved_aside_folder_before_putting_it_back_and_spares_only_top_level_names(tmp_path):
    """sweep_partial_writes goes deepest first: a write cut short inside a folder replace_dir had moved aside is
    removed before that folder goes back in place (it stayed there, a stray temporary in the model). `spared` names
    the files of the folder itself: a temporary of the same name further down is no live write of theirs."""
    import tempfile

    from workbench.atomic import sweep_partial_writes

    aside = tmp_path / ".model.replaced-4242"
    aside.mkdir()
    (aside / "config.json").write_text("{}")
    inner = tempfile.mkstemp(dir=aside, prefix=".config.", suffix=".json")[1]
    (tmp_path / "sub").mkdir()
    deep = tempfile.mkstemp(dir=tmp_path / "sub", prefix=".note.", suffix=".md")[1]
    live = tempfile.mkstemp(dir=tmp_path, prefix=".note.", suffix=".md")[1]  # the note's write, maybe going on
    gone = sweep_partial_writes(tmp_path, spared=("note.md",))
    assert sorted(map(str, gone)) == sorted([inner, deep])
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        Path(live).name, "model", "model/config.json", "sub"]


def test_an_atomic_write_has_the_usual_permissions_and_fresh_paths_keep_every_earlier_file(tmp_path):
    """atomic_write's file is 0644 under umask 022 (mkstemp makes 0600: a run's files unreadable to the machine's
    other users); fresh_paths takes the next stem where ANY of its files is there (a PNG without its θ kept too)."""
    import stat

    from workbench.atomic import atomic_write, fresh_paths

    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "run.json", lambda p: p.write_text("{}"))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "run.json").stat().st_mode) == 0o644
    (tmp_path / "snap.png").write_bytes(b"png")
    assert fresh_paths(tmp_path / "snap", (".png", ".theta.npy")) == [tmp_path / "snap-2.png",
                                                                       tmp_path / "snap-2.theta.npy"]
