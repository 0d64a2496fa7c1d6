"""Searches end to end through the run store and the CLI: files, catalog, resume after a real kill."""

import json
import os

import numpy as np
import pytest
from PIL import Image
from procs import cli as _cli
from procs import kill_after

from workbench.asal.driver import SearchConfig, run_search
from workbench.asal.evaluate import EvalConfig
from workbench.cli import main
from workbench.runs import RunError, RunStore


def test_target_search_writes_a_complete_run(tmp_path, capsys):
    target = tmp_path / "target.png"
    Image.fromarray(np.full((32, 32, 3), [200, 40, 40], np.uint8)).save(target)
    cfg = SearchConfig(kind="target", eval=EvalConfig("lenia", "pixels", steps=16, frames=2, chunk=4),
                       target_image=str(target), iters=3, pop=4, seed=1)
    store = RunStore(tmp_path / "runs")
    seen = []
    run = run_search(cfg, store, on_iteration=lambda i, n, row: seen.append((i, n)))
    assert seen == [(1, 3), (2, 3), (3, 3)]
    files = {p.name for p in run.path.iterdir()}
    assert {"run.json", "metrics.parquet", "population.parquet", "best.npy", "best.png", "best.mp4",
            "checkpoint.pkl"} <= files
    info = run.info
    assert info["status"] == "done" and info["iterations"] == 3 and info["versions"]["torch"]
    metrics = run.read_table("metrics").to_pylist()
    assert [m["iteration"] for m in metrics] == [0, 1, 2]
    assert np.load(run.path / "best.npy").shape == (3117,)
    assert info["best_loss"] == min(m["loss_min"] for m in metrics)

    assert main(["runs", "list", "--json", "--runs", str(store.root)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {"id", "kind", "substrate", "fm", "status", "iterations", "best_loss"} <= set(rows[0])
    assert rows[0]["id"] == run.id and rows[0]["kind"] == "target"
    assert main(["runs", "show", run.id, "--runs", str(store.root), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert len(shown["metrics"]) == 3


SEARCH = ["asal", "openended", "--substrate", "boids", "--fm", "pixels", "--steps", "40", "--frames", "4",
          "--iters", "8", "--pop", "6", "--chunk", "3", "--seed", "5", "--quiet"]


def test_resume_after_kill_equals_an_uninterrupted_run(tmp_path):
    whole = _cli(*SEARCH, "--runs", "whole", cwd=tmp_path)
    out, err = whole.communicate(timeout=300)
    assert whole.returncode == 0, err
    reference = json.loads(out)

    killed = _cli(*SEARCH, "--runs", "killed", cwd=tmp_path)
    store = RunStore(tmp_path / "killed")
    row = kill_after(killed, store, 3)
    run_id, done_before = row["id"], row["iterations"]
    assert 3 <= done_before < 8, "the kill should land mid-run"
    resumed = _cli("asal", "openended", "--resume", run_id, "--runs", "killed", "--quiet", cwd=tmp_path)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    result = json.loads(out)
    assert result["status"] == "done" and result["iterations"] == 8
    assert result["best_loss"] == reference["best_loss"]
    a = RunStore(tmp_path / "whole").open(reference["id"])
    b = store.open(run_id)
    np.testing.assert_array_equal(np.load(a.path / "best.npy"), np.load(b.path / "best.npy"))
    losses = lambda r: [(m["loss_min"], m["loss_mean"]) for m in r.read_table("metrics").to_pylist()]  # noqa: E731
    assert losses(a) == losses(b)


def test_corrupt_and_foreign_run_folders(tmp_path, capsys):
    store = RunStore(tmp_path)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "run.json").write_text("{ not json")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "run.json").write_text(json.dumps({"hello": 1}))
    assert store.list() == []
    assert sorted(store.broken()) == ["broken", "foreign"]
    assert main(["runs", "list", "--runs", str(tmp_path)]) == 0
    assert "broken is not a readable run" in capsys.readouterr().err
    for name, message in (("broken", "corrupt"), ("foreign", "not a workbench run record"), ("nope", "no run 'nope'")):
        assert main(["asal", "target", "--resume", name, "--runs", str(tmp_path), "--quiet"]) == 2
        assert message in capsys.readouterr().err
    with pytest.raises(RunError, match="corrupt"):
        store.open("broken")


def test_cli_bad_inputs(tmp_path, capsys, clip_weights):
    runs = str(tmp_path / "runs")
    assert main(["asal", "target", "--substrate", "lenia", "--fm", "pixels", "--prompt", "a cell", "--runs", runs,
                 "--quiet"]) == 2
    assert "no text encoder" in capsys.readouterr().err
    assert main(["asal", "target", "--substrate", "lenia", "--fm", "pixels", "--runs", runs, "--quiet"]) == 2
    assert "--prompt TEXT" in capsys.readouterr().err
    assert main(["asal", "target", "--substrate", "lenia", "--fm", "pixels", "--target-image",
                 str(tmp_path / "none.png"), "--runs", runs, "--quiet", "--iters", "1"]) == 2
    assert "cannot read the target image" in capsys.readouterr().err
    assert main(["asal", "target", "--substrate", "lenia", "--fm", "dino", "--prompt", "x", "--runs", runs]) == 2
    assert "unknown foundation model" in capsys.readouterr().err
    # --frames not a multiple of the prompts: say so and round up
    assert main(["asal", "target", "--substrate", "lenia", "--fm", "openclip:ViT-B-32", "--weights", str(clip_weights),
                 "--prompt", "a small cell", "--prompt", "a large cell", "--frames", "3", "--steps", "8",
                 "--iters", "1", "--pop", "2", "--runs", runs, "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "using 4 frames" in captured.err
    run = RunStore(runs).open(json.loads(captured.out)["id"])
    assert run.info["config"]["eval"]["frames"] == 4
    assert os.path.exists(run.path / "best.mp4")


@pytest.mark.parametrize("algorithm", ["ga", "map-elites"])
def test_illumination_from_the_cli(tmp_path, capsys, algorithm):
    runs = str(tmp_path / "runs")
    assert main(["asal", "illuminate", "--substrate", "boids", "--fm", "pixels", "--algorithm", algorithm,
                 "--population", "12", "--pop", "4", "--steps", "20", "--iters", "3", "--runs", runs, "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    run = RunStore(runs).open(result["id"])
    assert result["status"] == "done" and (run.path / "atlas.png").exists()
    population = run.read_table("population").to_pylist()
    assert len(population) >= 4 and len(population[0]["theta"]) == 193 and len(population[0]["embedding"]) == 192
    if algorithm == "ga":
        assert len(population) == 12
    atlas = np.asarray(Image.open(run.path / "atlas.png"))
    assert atlas.ndim == 3 and atlas.any()
