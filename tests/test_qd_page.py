"""The QD-archive explorer (/qd): QDModel's data for every view on real runs made here (a CycleQD run of a quick
zoo, a second seed of it, a MAP-Elites illumination), the archive-map and pyribs sources, bad files, the Lab's
play-a-member hook, and the served page in Debian's Chromium, offline."""

import json
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote, urlencode

import numpy as np
import pandas as pd
import pytest
from test_dashboards import (  # noqa: F401 - browser is a fixture
    FOCUSED,
    NOTEBOOK_CELL,
    NOTEBOOK_MARGINS,
    _browse,
    browser,
    drawn_width,
    figure_page,
    serving,
    widest_row,
)

from workbench.dashboards.qd import VIEWS, QDModel, read_source, source_runs
from workbench.local_server import first_answer, free_port
from workbench.runs import RunStore

TASKS = ["brackets", "sort", "reverse"]


@pytest.fixture(scope="module")
def qd(tmp_path_factory):
    """A run folder with two seeds of one CycleQD config (3 tasks: 2-D archives that fill as generations pass)
    and a MAP-Elites illumination: {"dir", "zoo", "run", "other", "me"}."""
    from workbench.asal.driver import SearchConfig, run_search
    from workbench.asal.evaluate import EvalConfig
    from workbench.lm.zoo import ZooConfig, build_zoo
    from workbench.qd.run import QDRunConfig, run_cycleqd

    root = tmp_path_factory.mktemp("qdpage")
    # the quick zoo learns brackets a little (the other scores stay near 0): a narrow range spreads its bins
    zoo = build_zoo(root / "zoo", ZooConfig.quick(tasks=tuple(TASKS), base_steps=100, expert_steps=60))
    store = RunStore(root / "runs")

    def cycle(seed: int) -> str:
        cfg = QDRunConfig(zoo=str(zoo), tasks=TASKS, gens=12, batch=2, n_eval=32, n_test=16, multitask_steps=5,
                          ranges={"brackets": [0.0, 0.5]}, mutation_scale=1.0, seed=seed)
        return run_cycleqd(cfg, store).id

    me = run_search(SearchConfig(kind="illuminate", algorithm="map-elites", iters=3, pop=6,
                                 eval=EvalConfig("boids", "pixels", steps=20)), store).id
    return {"dir": str(store.root), "zoo": zoo, "run": cycle(3), "other": cycle(1), "me": me}


def _table(qd, name: str) -> pd.DataFrame:
    return RunStore(qd["dir"]).open(qd["run"]).read_table(name).to_pandas()


# --- the model, no browser --------------------------------------------------------------------------------------

def test_archives_scrubber_sampling_and_curves_follow_the_run_files(qd):
    model = QDModel(runs_dir=qd["dir"], run_id=qd["run"])
    d = model.data
    assert d.kind == "qd" and d.tasks == TASKS and d.generations == list(range(13)) and model.generation == 12
    assert d.views == list(VIEWS)
    # opened on its first archive (the prompt's placeholder is that task's), the generations said oldest first
    assert d.snap(-1) == 0 and d.snap(99) == 12  # the scrubber before the first snapshot: the first; past the last
    # no run asked for: the newest run here (the run menu's last)
    assert QDModel(runs_dir=qd["dir"]).data.name == qd["other"] == source_runs(qd["dir"])[-1]
    assert model.task == TASKS[0] and " · generations 0–12 · " in model.summary()
    snapshots = _table(qd, "archives")
    children = _table(qd, "children").set_index("id")
    changed = False
    for g in (0, 5, 12):
        model.generation = g
        for t in TASKS:
            want = snapshots[(snapshots["generation"] == g) & (snapshots["task"] == t)]
            got = model.cells(t)
            assert sorted(zip(got["cell"], got["id"], strict=True)) == sorted(
                (tuple(c), i) for c, i in zip(want["cell"], want["id"], strict=True))
            assert np.allclose(got.sort_values("id")["quality"], want.sort_values("id")["quality"])
            assert all(got["x"] == [c[0] for c in got["cell"]]) and all(got["y"] == [c[1] for c in got["cell"]])
            changed |= g > 0 and len(got) != len(model.cells(t, 0))
    assert changed, "no archive grew over 12 generations: the scrubber would show nothing"
    # hover text: the model, all scores, the parents
    row = model.cells("sort").iloc[-1]
    child = children.loc[row["id"]]
    assert all(f"{t} {child[f'score_{t}']:.3f}" in row["scores"] for t in TASKS)
    assert row["parents"] == (" × ".join(map(str, child["parents"])) if len(child["parents"]) else
                              f"seed expert ({child['seed_expert']})")
    # sampling frequency at the last generation: children.parquet counts every draw of the run
    model.generation = 12
    for t in TASKS:
        s = model.sampling(t)
        assert list(s["draws"]) == [children.loc[i, f"draws_{t}"] for i in s["id"]]
    assert sum(model.sampling(t)["draws"].sum() for t in TASKS) > 0
    # curves from the snapshots equal the run's own metrics
    metrics = _table(qd, "metrics")
    curves = model.curves()
    for t in TASKS:
        mine = curves[curves["task"] == t].set_index("generation")
        for column in ("coverage", "qd_score", "max_quality"):
            assert np.allclose(mine[column], metrics.set_index("generation")[f"{column}_{t}"], equal_nan=True)
    # max quality is the best elite's, not a mean over the archive (every elite of the run may tie): a weaker elite
    # added to the last brackets archive leaves it and adds to the QD score
    cells = model.data.cells
    best = cells[(cells["generation"] == 12) & (cells["task"] == "brackets")].sort_values("quality").iloc[-1]
    weaker = {**best.to_dict(), "cell": (int(best["x"]), 14), "y": 14, "quality": best["quality"] - 0.25}
    model.data.cells = pd.concat([cells, pd.DataFrame([weaker], index=[cells.index.max() + 1])])
    was, now = (c.set_index(["generation", "task"]).loc[(12, "brackets")] for c in (curves, model.curves()))
    assert now["max_quality"] == was["max_quality"] == best["quality"]
    assert now["qd_score"] == pytest.approx(was["qd_score"] + best["quality"] - 0.25)


def test_the_views_of_a_source_replaced_stop_following_the_model(qd):
    """The page rebuilds its views for every source shown (a run picked, the refresh button) and stops what the last
    ones followed of the model through `streams`: the curves, children and baselines tabs, bound to the model's
    parameters (pn.bind), were not among them and kept Panel's watchers on it (nine more a rebuild of a qd run's
    views, each holding its tabs for as long as the page stayed open: a helper's leak audit)."""
    from workbench.dashboards.qd import views_panel

    def watchers() -> int:
        return sum(len(w) for kinds in model.param.watchers.values() for w in kinds.values())

    model = QDModel(runs_dir=qd["dir"], run_id=qd["run"])
    before = watchers()
    for _ in range(3):
        streams: list = []
        views_panel(model, streams)
        assert watchers() > before  # the views follow the scrubber, the selection and the seeds pooled
        for stream in streams:  # what qd_page does before it builds the next source's views
            stream.unwatch()
        assert watchers() == before


def test_lineage_children_card_and_baselines(qd, tmp_path):
    model = QDModel(runs_dir=qd["dir"], run_id=qd["run"])
    children = _table(qd, "children").set_index("id")
    nodes, edges = model.lineage()
    ids = set(nodes["index"])
    final = set(_table(qd, "archives").query("generation == 12")["id"])
    assert final <= ids and set(nodes[nodes["role"] == "seed expert"]["index"]) <= {0, 1, 2}
    seeds = nodes[nodes["role"] == "seed expert"]  # each on its task's lane (batch 2 moved them off it)
    assert [TASKS.index(model.data.models.loc[i, "task"]) for i in seeds["index"]] == list(seeds["y"])
    for src, dst in zip(edges["source"], edges["target"], strict=True):  # every edge is a recorded parent
        assert src in children.loc[dst, "parents"] and src in ids
    assert all(p in ids for i in ids for p in children.loc[i, "parents"])  # whole ancestries, back to seeds
    # the K-task scatter holds every evaluated child up to the generation, entered or not
    model.generation = 4
    kids = model.children()
    assert len(kids) == int((children["generation"] <= 4).sum())
    assert list(kids["status"] == "entered an archive") == list(children.loc[kids.index, "kept"])
    # a click on a filled cell selects its elite; an empty one selects nothing
    model.generation = 12
    cell = model.cells("sort").iloc[-1]
    assert model.click("sort", cell["x"] + 0.3, cell["y"] - 0.2) == cell["id"] and model.selected == cell["id"]
    assert model.task == "sort" and model.click("sort", 14, 14) == -1 and model.selected == cell["id"]
    newest = int(max(final))
    model.select(newest)
    card = model.card()
    assert card["parents"] == list(children.loc[newest, "parents"])
    assert card["born"] == children.loc[newest, "generation"]
    assert card["draws"] == {t: int(children.loc[newest, f"draws_{t}"]) for t in TASKS}
    assert card["draws_all"] == sum(newest in ps for ps, pool in zip(children["parents"], children["pool"],
                                                                    strict=True) if pool != "archive")
    ancestry = {a["id"] for a in card["ancestry"]}
    assert [a["id"] for a in card["ancestry"]] == sorted(ancestry, reverse=True)  # newest first, itself at the top
    # draws from all archives (the archive optimised held fewer than two elites) apart from an archive's own
    draws_all = {}
    for i in model.data.models.index:
        drawn = [pool for ps, pool in zip(children["parents"], children["pool"], strict=True) if i in ps]
        draws_all[i] = model.card(int(i))["draws_all"]
        assert draws_all[i] == sum(pool != "archive" for pool in drawn)
    assert any(draws_all.values())
    assert newest in ancestry and any(not a["parents"] for a in card["ancestry"])  # down to a seed expert
    assert all(p in ancestry for a in card["ancestry"] for p in a["parents"])
    assert set(card["elite_of"]) == {t for t in TASKS if newest in set(model.cells(t)["id"])}
    # its cells as bin tuples ("0,8" read as 0.8)
    assert all(re.fullmatch(r"\(\d+, \d+\)", c) for c in card["elite_of"].values()), card["elite_of"]
    from workbench.dashboards.qd import cell_text  # K = 2: one axis, the bin alone (it was an empty string)

    assert (cell_text([0, 8]), cell_text([11]), cell_text((1, 2, 3))) == ("(0, 8)", "11", "(1, 2, 3)")
    assert model.lineage()[0]["on_path"].sum() == len(ancestry)  # the selection's ancestry is ringed
    from workbench.dashboards.qd import card_html

    assert "not born yet" not in card_html(model)
    model.generation = int(card["born"]) - 1  # the scrubber before its birth: said, not a card of a model not there
    assert f"not born yet at generation {card['born'] - 1}" in card_html(model)
    model.generation = 12
    # final models vs seed experts vs baselines: the run's scores.json, then pooled with the other seed
    scores = json.loads((Path(qd["dir"]) / qd["run"] / "scores.json").read_text())
    bars = model.baselines()
    for t in TASKS:
        for name, v in scores["per_task"][t].items():
            assert bars[(bars["task"] == t) & (bars["model"] == name)]["mean"].item() == pytest.approx(v)
    assert set(bars["n"]) == {1} and set(bars["std"]) == {0.0}  # one run: each bar one score, no spread
    assert model.param.compare.objects == [qd["other"]]
    model.compare = [qd["other"]]
    other = json.loads((Path(qd["dir"]) / qd["other"] / "scores.json").read_text())
    pooled = model.baselines().query("task == 'brackets' and model == 'cycleqd'").iloc[0]
    pair = [scores["per_task"]["brackets"]["cycleqd"], other["per_task"]["brackets"]["cycleqd"]]
    assert pooled["n"] == 2 and pooled["mean"] == pytest.approx(np.mean(pair))
    assert pooled["std"] == pytest.approx(np.std(pair, ddof=1))
    # exported as a figure of its own (it was written over the run's own, under the same name)
    on_its_own = QDModel(runs_dir=qd["dir"], run_id=qd["run"], autoload=False)
    on_its_own.show(model.data)
    own, both = on_its_own.export("baselines", tmp_path, ".svg"), model.export("baselines", tmp_path, ".svg")
    assert own != both and "-baselines-pooled-" in both.name and own.is_file()


def test_a_run_that_repeats_a_seed_pools_once_on_the_page_and_in_the_report(qd, tmp_path, capsys):
    """A copy of a run (its seed repeated: the same computation again) is not offered as another seed to pool, and
    `qd report` counts it once, with a note (the spread and the wins counted it twice)."""
    import shutil

    from workbench.cli import main

    runs = tmp_path / "runs"
    shutil.copytree(qd["dir"], runs)
    again = qd["other"] + "-again"
    shutil.copytree(runs / qd["other"], runs / again)
    # its zoo recorded at another path (a relative one of an older version, a zoo moved): the same zoo by content
    info = json.loads((runs / again / "run.json").read_text())
    info["config"]["zoo"] = "data/zoo"
    (runs / again / "run.json").write_text(json.dumps(info))
    model = QDModel(runs_dir=str(runs), run_id=qd["run"])
    assert model.param.compare.objects in ([qd["other"]], [again])
    assert main(["qd", "report", qd["run"], qd["other"], again, "--runs", str(runs), "--json"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["repeats"] == {again: qd["other"]} and out["counted"] == [qd["run"], qd["other"]]
    assert out["differs"] == []  # the zoo's path is no setting where its content is known
    assert len(out["per_task"]["brackets"]["scores"]["cycleqd"]["values"]) == 2
    assert f"{again} repeats the seed of {qd['other']}" in captured.err
    # beside a run of another setting too (the repeat counted twice where the runs differed in more than seeds)
    varied = qd["run"] + "-varied"
    shutil.copytree(runs / qd["run"], runs / varied)
    info = json.loads((runs / varied / "run.json").read_text())
    info["config"]["mutation_scale"] = 0.5
    (runs / varied / "run.json").write_text(json.dumps(info))
    scores = json.loads((runs / varied / "scores.json").read_text())  # as a run of --multitask-steps 0
    for row in scores["per_task"].values():
        del row["multitask"]
    (runs / varied / "scores.json").write_text(json.dumps(scores))
    assert main(["qd", "report", qd["run"], qd["other"], again, varied, "--runs", str(runs), "--json"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["differs"] == ["--mutation-scale"] and out["repeats"] == {again: qd["other"]}
    assert out["counted"] == [qd["run"], qd["other"], varied]
    assert out["missing"] == dict.fromkeys(TASKS, ["multitask"])
    assert "multitask" not in out["per_task"]["sort"]["scores"]
    assert "sort: multitask left out: not scored in every run" in captured.err


def test_a_source_shown_reads_the_catalog_once_per_refresh(qd, monkeypatch):
    """The seeds to pool (same_config) come from the catalog the run menu read: showing a source read the whole
    catalog again, on the page's event loop (every run.json of the store), and each qd run's run.json twice."""
    from workbench.runs import Run

    catalogs, infos = [], []
    records, info = RunStore._records, Run.info.fget
    monkeypatch.setattr(RunStore, "_records", lambda self: catalogs.append(self.root) or records(self))
    monkeypatch.setattr(Run, "info", property(lambda self: infos.append(self.id) or info(self)))
    model = QDModel(runs_dir=qd["dir"], run_id=qd["run"])
    assert model.param.compare.objects == [qd["other"]] and len(catalogs) == 1
    model.open_run(qd["other"])  # another source: the catalog is not read again
    assert model.param.compare.objects == [qd["run"]] and len(catalogs) == 1
    infos.clear()
    assert model.same_config() == [qd["run"]] and infos == [qd["run"]]  # the one candidate's run.json, once
    model.refresh_runs()
    assert len(catalogs) == 2


def test_every_view_renders_and_exports_as_a_paper_figure(qd, tmp_path):
    import holoviews as hv
    from bokeh.core.validation import check_integrity
    from PIL import Image

    from workbench.dashboards.shell import ROW_WIDTH
    from workbench.figures import PAGE_WIDTH

    model = QDModel(runs_dir=qd["dir"], run_id=qd["run"])
    model.select(int(model.cells("brackets").iloc[0]["id"]))
    for view in VIEWS:
        drawn = hv.render(model.figure(view), backend="bokeh")  # drawn once, for both checks
        # and Bokeh's checks pass (the archives, sized by their frames, were "fixed" without a size: W-1005)
        checked = check_integrity(drawn.references())
        assert [w.code for w in (*checked.warning, *checked.error)] == [], view
        # and it fits beside the sidebar of a 1280 px window (three panels at 330 px ran past its edge)
        assert 0 < widest_row(drawn) <= ROW_WIDTH, view
    png = model.export("archives", tmp_path, ".png")
    assert png.name == f"{qd['run']}-archives-gen12.png" and Image.open(png).size[0] > 600
    for view in ("archives", "baselines"):  # three panels in a row: at most a page wide (9 in before)
        image = Image.open(png if view == "archives" else model.export(view, tmp_path, ".png"))
        assert image.size[0] / image.info["dpi"][0] <= PAGE_WIDTH + 0.05, view
    assert model.export("lineage", tmp_path, ".svg").read_text().count("<svg") >= 1
    assert model.export("baselines", tmp_path, ".pdf").read_bytes()[:4] == b"%PDF"
    html = model.export("curves", tmp_path, ".html").read_text()
    assert "cdn.bokeh.org" not in html and "Bokeh" in html
    model.generation = 3
    assert model.export("children", tmp_path).name.endswith("-children-gen3.png")
    # and as .csv, every view: a row per cell, curve point, child, bar, lineage edge and node (figure_csv)
    from figure_csv import check_csv

    from workbench.figures import legend_names

    for view in VIEWS:
        fig = model.paper_figure(view)[0]
        first = (legend_names(fig) or [None])[0]
        rename = {first: "ours"} if first else None
        rows = check_csv(model.export(view, tmp_path, ".csv", rename=rename), fig, rename)
        assert len({r["panel"] for r in rows}) == (len(fig) if isinstance(fig, hv.Layout) else 1), view
    assert {r["element"] for r in check_csv(model.export("lineage", tmp_path, ".csv"),
                                            model.paper_figure("lineage")[0])} >= {"Graph", "Nodes"}


def test_the_elite_answers_a_prompt_as_the_model_it_is(qd):
    """A seed expert rebuilt through the lineage answers like the zoo's own expert decoding the same prompt."""
    from workbench.lm.evaluation import greedy
    from workbench.lm.zoo import load_zoo

    model = QDModel(runs_dir=qd["dir"], run_id=qd["run"])
    with pytest.raises(ValueError, match="click a cell first"):
        model.answer("b:([=")
    assert model.warm() is None  # nothing selected, nothing to prepare
    model.select(0)  # the seed expert of brackets
    model.warm().join(120)  # what the page does on the click: the elite and the zoo's model, ready for the answer
    assert (model.data.name, 0) in model._built and model._lm is not None
    zoo = load_zoo(qd["zoo"])
    tok = zoo.tokenizer()
    for prompt in ("b:([=", "b:{(=", "s:kdpa="):
        ids = [tok.bos_token_id] + tok(prompt, add_special_tokens=False)["input_ids"]
        want = tok.decode(greedy(zoo.model("brackets", device="cpu"), [ids], 9, pad_id=tok.pad_token_id,
                                 eos_id=tok.eos_token_id)[0], skip_special_tokens=True)
        assert model.answer(prompt) == want
    with pytest.raises(ValueError, match="the prompt has '!A'"):
        model.answer("A!b:(=")
    from workbench.dashboards.qd import BUILT_KEPT

    for i in model.data.models.index[1:4]:  # an open tab holds a few rebuilt models, not every one clicked
        model.select(int(i))
        model.warm().join(120)
        assert len(model._built) == min(BUILT_KEPT, 1 + list(model.data.models.index).index(i))
        assert (model.data.name, int(i)) in model._built
    a, b, c = (int(i) for i in model.data.models.index[1:4])
    for i in (a, b, a, c):  # kept by their last use: a, on show again before c, outlives b
        model.select(i)
        model.warm().join(120)
    assert list(model._built)[-2:] == [(model.data.name, a), (model.data.name, c)]


def test_map_elites_run_and_the_lab_plays_a_member(qd):
    from workbench.dashboards.lab import LabModel
    from workbench.dashboards.qd import card_html

    model = QDModel(runs_dir=qd["dir"], run_id=qd["me"])
    d = model.data
    run = RunStore(qd["dir"]).open(qd["me"])
    thetas = np.asarray(run.read_table("population").to_pydict()["theta"])
    assert d.kind == "map-elites" and d.views == ["archives"] and len(d.cells) == len(thetas)
    cells = model.cells("novelty")
    assert len(set(zip(cells["x"], cells["y"], strict=True))) == len(thetas)  # one member per cell
    layers, opts = model.archive_layers("novelty")
    assert layers["under"].data.shape[:2] == (16 * 32, 16 * 32)  # the thumbnails beneath the cells
    # titled for what it shows, its pictures (not its novelty, which the hover says), and told alike on the page
    assert opts["common"]["title"] == "MAP-Elites: elites at their descriptor cells"
    assert model.summary().endswith("hover a cell for its novelty, click it for its card and a link that plays it in "
                                    "the Lab")
    member = int(cells.iloc[len(cells) // 2]["id"])
    assert model.click("novelty", *cells.iloc[len(cells) // 2][["x", "y"]]) == member
    link = f"./lab?run={qd['me']}&amp;member={member}"
    assert model.card()["lab"] == f"./lab?run={qd['me']}&member={member}" and link in card_html(model)
    lab = LabModel(substrate="lenia")
    assert lab.open_run(qd["dir"], qd["me"], member) and lab.substrate == "boids"
    np.testing.assert_allclose(lab.theta, thetas[member], rtol=1e-6)
    seed = run.read_table("population").to_pydict()["seed"][member]  # the initial state of its thumbnail
    assert lab.seed == seed >= 0 and f"population member {member} (initial-state seed {seed})" in lab.message
    assert not lab.open_run(qd["dir"], qd["me"], 10_000) and "members 0 to" in lab.message


def test_map_elites_archive_exports_its_thumbnails_at_their_own_pixels(qd, tmp_path):
    """The paper figure of a MAP-Elites archive: named without a generation (it is the run's last archive, not
    "-gen0"), its thumbnail mosaic embedded at its own size in a PDF (resampled to 525 px before)."""
    import re

    model = QDModel(runs_dir=qd["dir"], run_id=qd["me"])
    pdf = model.export("archives", tmp_path, ".pdf")
    assert pdf.name == f"{qd['me']}-archives.pdf"
    # as .csv: its cells (the thumbnails under them are pictures, left out), one row each
    from figure_csv import check_csv

    rows = check_csv(model.export("archives", tmp_path, ".csv"), model.paper_figure("archives")[0])
    assert {r["element"] for r in rows} == {"Rectangles"} and len(rows) >= len(model.cells("novelty"))
    widths = {int(w) for w in re.findall(rb"/Width (\d+)", pdf.read_bytes())}
    assert model.archive_layers("novelty", thumb=64)[0]["under"].data.shape[1] in widths, widths  # the export's
    # its axes named by what the descriptor is (the figure had none), without ticks: positions, not scores
    import holoviews as hv

    from workbench.dashboards.qd import PCA_AXES

    ax = hv.render(model.paper_figure("archives")[0], backend="matplotlib").axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == PCA_AXES and ax.get_xaxis().get_visible()
    assert list(ax.get_xticks()) == [] and list(ax.get_yticks()) == []


def test_archive_maps_and_pyribs_files_show_the_same_archives(qd, tmp_path):
    run_dir = Path(qd["dir"]) / qd["run"]
    run = QDModel(runs_dir=qd["dir"], run_id=qd["run"])
    maps = QDModel(runs_dir=qd["dir"], path=str(run_dir / "archive_maps"))
    assert maps.data.kind == "archive_map" and maps.data.generations == list(range(13)) and not maps.message
    assert maps.data.views == ["archives", "sampling", "curves"]
    assert maps.data.bins == 15 and maps.data.ranges == run.data.ranges  # the run's, which the files do not hold
    for g in (0, 12):
        run.generation = maps.generation = g
        for t in TASKS:
            a, b = run.cells(t), maps.cells(t)
            assert list(a["cell"]) == list(b["cell"]) and np.allclose(a["quality"], b["quality"])
            # the reference's sampling_freq counts the same draws (starting at 1)
            assert list(a["draws"]) == list(b["draws"])
    assert maps.source() == {"path": str(run_dir / "archive_maps")} and run.source() == {"run": qd["run"]}
    one = QDModel(runs_dir=qd["dir"], path=str(run_dir / "archive_maps" / "gen5_archive_map.json"))
    assert one.data.generations == [5]
    ribs = QDModel(runs_dir=qd["dir"], path=str(run_dir / "pyribs"))
    assert ribs.data.kind == "pyribs" and ribs.data.tasks == TASKS
    children = _table(qd, "children").set_index("id")
    for t in TASKS:
        got = ribs.cells(t)
        assert sorted(zip(got["cell"], got["id"], strict=True)) == sorted(zip(run.cells(t)["cell"], run.cells(t)["id"],
                                                                              strict=True))
        for i in got["id"]:  # pyribs' extra field keeps every elite's scores on all tasks
            assert [ribs.data.models.loc[i, f"score_{u}"] for u in TASKS] == [children.loc[i, f"score_{u}"]
                                                                              for u in TASKS]
    single = QDModel(runs_dir=qd["dir"], path=str(run_dir / "pyribs" / "sort.parquet"))
    assert single.data.tasks == ["sort"] and len(single.cells("sort")) == len(run.cells("sort"))
    assert single.data.views == ["archives", "children"]
    # the elite card beside one archive, below K of them or a row of curves (it ran past a 1280 px window's edge)
    from types import SimpleNamespace

    from workbench.dashboards.qd import card_beside

    assert card_beside(single.data) and not card_beside(maps.data) and not card_beside(run.data)
    assert not card_beside(SimpleNamespace(tasks=["sort"], views=["archives", "sampling", "curves"]))
    assert single.export("children", tmp_path).name == "sort-children.png"  # one archive: no "-gen0"


def test_a_bad_file_is_one_clear_message(qd, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    broken = tmp_path / "gen3_archive_map.json"
    broken.write_text('{"sort": {"1": {"quality": 0.5')
    foreign = tmp_path / "other.parquet"
    pq.write_table(pa.table({"index": [1, 2], "objective": [0.1, 0.2]}), foreign)
    wrong = tmp_path / "notes.txt"
    wrong.write_text("hello")
    fields, empty = tmp_path / "maps", tmp_path / "empty"
    fields.mkdir()
    empty.mkdir()
    (fields / "gen0_archive_map.json").write_text(json.dumps({"a": {"0": {"quality": 1}}, "b": {}}))
    for path, why in ((broken, "not valid JSON"), (foreign, "not a CycleQD archive written by workbench"),
                      (wrong, "neither a pyribs archive"), (tmp_path / "missing.json", "no file or folder"),
                      (fields, "expected exactly"), (empty, "holds neither")):
        with pytest.raises(ValueError, match=why):
            read_source(qd["dir"], path=str(path))
        model = QDModel(runs_dir=qd["dir"], path=str(path))
        assert model.data is None and why in model.message and "\n" not in model.message
    with pytest.raises(ValueError, match="no run 'nope'"):
        read_source(qd["dir"], "nope")


def test_runs_gallery_cards_link_here_with_the_archives_as_picture(qd):
    """A qd run's card: its archives as the picture, a link here; a MAP-Elites card links here too, a GA's not."""
    import base64
    import io

    from PIL import Image

    from workbench.dashboards.qd import archive_thumbnail
    from workbench.dashboards.runs import RunsModel

    gallery = RunsModel(runs_dir=qd["dir"])
    rows = {r["id"]: r for r in gallery.shown()}
    card = gallery.card(rows[qd["run"]])
    assert card["title"] == "qd · elite sampling, svd mutation" and card["subtitle"] == "tasks " + ", ".join(TASKS)
    assert card["links"] == [("QD archives", f"./qd?run={quote(qd['run'], safe='')}")]
    picture = np.asarray(Image.open(io.BytesIO(base64.b64decode(card["thumbnail"].split(",", 1)[1]))))
    image = archive_thumbnail(Path(qd["dir"]) / qd["run"])
    assert picture.shape == image.shape and picture.shape[1] <= 224
    # one coloured cell per filled cell of the last generation's archives (cells of px × px pixels, dark when empty)
    px = image.shape[0] // 15
    filled = (image[::px, ::px] != 29).any(axis=2).sum()
    model = QDModel(runs_dir=qd["dir"], run_id=qd["run"])
    assert filled == sum(len(model.cells(t)) for t in TASKS) > 0
    me = quote(qd["me"], safe="")
    assert gallery.card(rows[qd["me"]])["links"] == [("Atlas", f"./atlas?run={me}"), ("QD archives", f"./qd?run={me}"),
                                                     ("Lab", f"./lab?run={me}"), ("Search", f"./search?run={me}")]


def test_the_page_is_registered_in_the_shell():
    from workbench.dashboards.app import pages
    from workbench.dashboards.shell import PAGES, open_links

    assert PAGES["qd"].title == "QD archives" and PAGES["qd"].description and "qd" in pages("runs")
    assert open_links("qd", "r1") == [("QD archives", "./qd?run=r1")]
    assert ("QD archives", "./qd?run=r2") in open_links("illuminate", "r2", "map-elites")
    assert ("QD archives", "./qd?run=r2") not in open_links("illuminate", "r2", "ga")


# --- the served page in Chromium -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def served(tmp_path_factory, qd):
    log = tmp_path_factory.mktemp("qdserver") / "serve.log"
    with serving(qd["dir"], log) as url:
        yield url
    text = log.read_text()
    assert "Traceback" not in text, text[-4000:]


CELLS = """(title) => {  // rows of the archive plot titled `title` (its cells' data source)
  for (const v of Bokeh.index.all_views()) {
    const t = v.model.title;
    if (t && t.text === title)
      for (const r of v.model.renderers)
        if (r.data_source && r.data_source.columns().includes('model')) return r.data_source.get_length();
  }
  return null;
}"""
WHERE = """([title, x, y]) => {  // the page position of data point (x, y) in the plot titled `title`
  for (const v of Bokeh.index.all_views()) {
    const t = v.model.title;
    if (t && t.text === title && v.frame) {
      const r = v.canvas_view.el.getBoundingClientRect();
      return [r.left + v.frame.x_scale.compute(x), r.top + v.frame.y_scale.compute(y)];
    }
  }
  return null;
}"""


def test_qd_page_scrubs_selects_and_runs_an_elite_in_chromium(served, qd, browser, request):  # noqa: F811
    from playwright.sync_api import expect

    model = QDModel(runs_dir=qd["dir"], run_id=qd["run"])
    counts = {g: len(model.cells("sort", g)) for g in (0, 12)}
    assert counts[0] != counts[12]
    # the id as `qd cycle` prints it, "+" and all, as a user types it (a query string reads "+" as a space)
    assert "+" in qd["run"]
    with _browse(browser, f"{served}/qd?run={qd['run']}", request) as page:
        page.get_by_text("generation 12 of 0–12").wait_for(timeout=60000)
        page.wait_for_function(f"() => ({CELLS})('archive sort') === {counts[12]}", timeout=30000)
        # the player's controls have names once reached (icons and a bare slider: "button" six times)
        expect(page.get_by_role("button", name="last", exact=True)).to_have_count(1)  # once drawn: a reader's
        page.locator("button.first").focus()  # browse mode moves neither focus nor pointer
        expect(page.get_by_role("button", name="first", exact=True)).to_have_count(1)
        page.locator("input[type=range]").first.focus()
        expect(page.get_by_role("slider", name="generation", exact=True)).to_have_count(1)
        page.locator("button.first").click()  # the scrubber back to generation 0
        page.get_by_text("generation 0 of 0–12").wait_for(timeout=30000)
        page.wait_for_function(f"() => ({CELLS})('archive sort') === {counts[0]}", timeout=30000)
        page.locator("button.last").click()
        page.wait_for_function(f"() => ({CELLS})('archive sort') === {counts[12]}", timeout=30000)
        cell = model.cells("sort").iloc[-1]
        page.mouse.click(*page.evaluate(WHERE, ["archive sort", float(cell["x"]), float(cell["y"])]))
        card = page.locator(".elite")
        card.get_by_text(f"model {int(cell['id'])}", exact=True).wait_for(timeout=30000)
        card.get_by_text("Ancestry").wait_for(timeout=10000)
        page.get_by_placeholder("e.g.").fill("b:([{=")
        page.get_by_role("button", name="run the elite").click()
        model.select(int(cell["id"]))
        want = model.answer("b:([{=")   # here, while the server rebuilds the elite for the page
        said = page.get_by_text(re.compile(rf"model {int(cell['id'])} answers"))
        said.wait_for(timeout=120000)
        assert f"answers {want} (" in said.inner_text()
        # from the keyboard: the arrows to the Lineage tab, Enter opens it; the tabs draw their headers again (a
        # dynamic Tabs) and the focus stays on it (it fell to the page, and the next arrow did nothing)
        page.locator(".bk-tab.bk-active").focus()
        for _ in range(len(VIEWS)):
            if page.evaluate(FOCUSED)[1] == "Lineage":
                break
            page.keyboard.press("ArrowRight")
        page.keyboard.press("Enter")
        expect(page.locator(".bk-tab.bk-active")).to_have_text("Lineage")
        ringed = f"model {int(cell['id'])}'s ancestry"  # the lineage plot's title (drawn on its canvas)
        page.wait_for_function("(text) => Bokeh.index.all_views().some(v => v.model.title && v.model.title.text && "
                               "v.model.title.text.includes(text))", arg=ringed, timeout=30000)
        assert page.evaluate(FOCUSED)[:2] == ["DIV", "Lineage"]
        page.keyboard.press("ArrowLeft")
        assert page.evaluate(FOCUSED)[0] == "DIV" and page.evaluate(FOCUSED)[1] != "Lineage"
        page.get_by_role("button", name="export").click()
        page.get_by_text("written").wait_for(timeout=60000)
        assert (Path(qd["dir"]) / qd["run"] / "figures" / f"{qd['run']}-lineage-gen12.png").is_file()


def test_runs_gallery_opens_qd_runs_and_map_elites_plays_in_the_lab(served, qd, browser, request):  # noqa: F811
    with _browse(browser, f"{served}/runs", request) as page:
        card = page.locator(f'.run[data-run="{qd["run"]}"]')
        link = card.get_by_role("link", name="open in QD archives")
        assert link.get_attribute("href") == f"./qd?run={quote(qd['run'], safe='')}"  # "+" in the id
        link.click()
        page.wait_for_url(re.compile(r"/qd\?run="), timeout=30000)
        page.get_by_text(f"{qd['run']} · tasks").wait_for(timeout=60000)
    model = QDModel(runs_dir=qd["dir"], run_id=qd["me"])
    cell = model.cells("novelty").iloc[0]
    with _browse(browser, f"{served}/qd?run={qd['me']}", request) as page:
        page.get_by_text("MAP-Elites illumination of boids").wait_for(timeout=60000)
        title = "MAP-Elites: elites at their descriptor cells"
        page.wait_for_function(f"() => ({CELLS})('{title}') === {len(model.data.cells)}", timeout=30000)
        # the load's veil goes after its plots: it takes a click
        page.locator(".pn-loading").first.wait_for(state="detached", timeout=30000)
        page.mouse.click(*page.evaluate(WHERE, [title, float(cell["x"]), float(cell["y"])]))
        page.get_by_role("link", name=f"play member {int(cell['id'])} in the Lab").click()
        page.wait_for_url(re.compile(r"/lab\?run=.*member="), timeout=30000)
        page.get_by_text(f"loaded population member {int(cell['id'])}").wait_for(timeout=60000)


#: the text of a <select>'s chosen option ('' where the browser shows none)
SELECTED = "s => s.selectedIndex >= 0 ? s.options[s.selectedIndex].text : ''"


def test_a_bad_file_on_the_page_and_the_page_alone(served, qd, browser, request, tmp_path):  # noqa: F811
    from playwright.sync_api import expect

    bad = tmp_path / "gen1_archive_map.json"
    bad.write_text("[1, 2]")
    # the page alone (`panel serve dashboards/qd.py`) starts while the page in `workbench serve` is checked
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "panel", "serve", "dashboards/qd.py", "--port", str(port), "--args",
                             qd["dir"]], cwd=Path(__file__).resolve().parents[1], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        with _browse(browser, f"{served}/qd?file={bad}", request) as page:
            page.locator(".alert").get_by_text("is not a CycleQD archive map").wait_for(timeout=60000)
            # the Run menu says no run is open (it showed the first run, and picking it changed nothing)
            assert page.get_by_label("Run (qd or MAP-Elites)").evaluate(SELECTED) == "(none open)"
            # nothing to highlight (it stayed, blank); hidden after the alert shows, so waited for
            expect(page.get_by_label("Highlight a model")).to_be_hidden(timeout=30000)
            newest = QDModel(runs_dir=qd["dir"], autoload=False).param.run_id.objects[-1]
            page.get_by_role("button", name="refresh").click()  # nothing on show: the newest run
            page.get_by_text(f"{newest} · ").first.wait_for(timeout=60000)
            # the address follows the source on show (it kept the one the page opened with)
            page.wait_for_url(f"{served}/qd?{urlencode({'run': newest})}", timeout=30000)
            assert page.get_by_label("Run (qd or MAP-Elites)").evaluate(SELECTED) == newest
            box = page.get_by_placeholder("pyribs .parquet / archive map .json")
            pyribs = str(Path(qd["dir"]) / qd["run"] / "pyribs")
            box.fill(pyribs)
            page.get_by_role("button", name="open", exact=True).click()
            page.get_by_text("pyribs archive · tasks").wait_for(timeout=60000)
            assert not page.locator(".alert").is_visible()
            page.wait_for_url(f"{served}/qd?{urlencode({'file': pyribs})}", timeout=30000)
            assert page.get_by_label("Run (qd or MAP-Elites)").evaluate(SELECTED) == "(none open)"
            # a qd run's highlight menu repeats values (a best-on-task entry is an elite listed too), a MAP-Elites
            # run's does not: after one and the other, the menu still shows its "none" (it went blank)
            for run, said in ((qd["run"], f"{qd['run']} · tasks"), (qd["me"], "MAP-Elites illumination of boids")):
                page.get_by_label("Run (qd or MAP-Elites)").select_option(run)
                page.get_by_text(said).first.wait_for(timeout=60000)
                page.wait_for_url(f"{served}/qd?{urlencode({'run': run})}", timeout=30000)
            assert page.get_by_label("Highlight a model").evaluate(SELECTED) == "none"
        html = first_answer(f"http://127.0.0.1:{port}/qd", 120, proc)
        if html is None:
            pytest.fail("panel serve dashboards/qd.py did not answer")
        assert "cdn.bokeh.org" not in html and "fonts.googleapis" not in html and "./runs" not in html
        newest = QDModel(runs_dir=qd["dir"], autoload=False).param.run_id.objects[-1]
        with _browse(browser, f"http://127.0.0.1:{port}/qd", request) as page:
            page.get_by_text(f"{newest} · ").first.wait_for(timeout=60000)  # opens the newest run
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_children_scatter_shows_scores_outside_the_archive_range():
    """A score past the range (it fills an end bin) stays on the axes: the reference's range is [0, 0.45]."""
    from workbench.dashboards.qd import children_plot

    children = pd.DataFrame({"id": [0, 1, 2], "score_a": [0.1, 0.9, 0.3], "score_b": [0.2, 0.4, -0.1],
                             "model": ["m0", "m1", "m2"], "parents_text": ["", "0", "0"], "seed": [True, False, False],
                             "status": ["entered an archive", "entered an archive", "entered none"]})
    panel = children_plot(children, ["a", "b"], ranges={"a": (0.0, 0.45), "b": (0.0, 0.45)}).values()[0]
    (x0, x1), (y0, y1) = panel.opts.get().kwargs["xlim"], panel.opts.get().kwargs["ylim"]
    assert x0 < 0.0 and x1 > 0.9 and y0 < -0.1 and y1 > 0.45
    inside = children.assign(score_a=[0.1, 0.2, 0.3], score_b=[0.2, 0.3, 0.4])  # all inside: the range itself
    panel = children_plot(inside, ["a", "b"], ranges={"a": (0.0, 0.45), "b": (0.0, 0.45)}).values()[0]
    assert panel.opts.get().kwargs["xlim"] == pytest.approx((-0.0135, 0.4635))


def test_four_tasks_project_three_bin_indices_onto_the_plot(tmp_path):
    """K = 4: archives are 15³ and the plot shows their first two bin indices. An elite that is not the best of
    the cells sharing its plot position is still outlined when selected, and the sampling view counts the draws
    of every elite projected there."""
    from workbench.lm.zoo import ZooConfig, build_zoo
    from workbench.qd.run import QDRunConfig, run_cycleqd

    tasks = ["brackets", "sort", "reverse", "add"]
    zoo = build_zoo(tmp_path / "zoo", ZooConfig.quick(tasks=tuple(tasks)))   # the plot's projection, not scores
    store = RunStore(tmp_path / "runs")
    run = run_cycleqd(QDRunConfig(zoo=str(zoo), tasks=tasks, gens=4, batch=2, n_eval=32, n_test=8, multitask_steps=2,
                                  ranges={t: [0.0, 0.3] for t in tasks}, seed=3), store)
    model = QDModel(runs_dir=str(store.root), run_id=run.id)
    d = model.data
    assert d.tasks == tasks and all(len(c) == 3 for c in d.cells["cell"])
    # the quick zoo's experts learn one task only, so its elites never share a plot position: give one a
    # neighbour in the third bin index, a weaker elite of another model (as a run whose third task varies has)
    now = d.cells[(d.cells["generation"] == d.snap(model.generation)) & (d.cells["task"] == "sort")]
    best = now.sort_values("quality").iloc[-1]
    other = int(next(i for i in d.models.index if i not in set(now["id"])))
    hidden = {**best.to_dict(), "cell": (*best["cell"][:2], best["cell"][2] + 1), "id": other,
              "quality": best["quality"] - 0.5, "draws": 5.0}
    d.cells = pd.concat([d.cells, pd.DataFrame([hidden], index=[d.cells.index.max() + 1])])
    shown = model.cells("sort")
    assert len(shown) == len(now) and int(shown[(shown["x"] == best["x"]) & (shown["y"] == best["y"])]["id"].iloc[0]) \
        == int(best["id"])  # the plot position shows its best elite
    assert model.elite_cells(other) == {"sort": hidden["cell"]}  # the weaker one is found, and outlined there
    model.selected = other  # its ring's row in a CSV is its own model and quality, not the best elite's drawn there
    ring = model.archive_layers("sort")[0]["ring"].dframe()
    assert ring[["id", "quality", "selected"]].values.tolist() == [[other, hidden["quality"], True]]
    assert ring["model"].tolist() == [str(d.models.loc[other, "label"])]
    model.selected = -1
    sampled = model.sampling("sort")
    at = sampled[(sampled["x"] == best["x"]) & (sampled["y"] == best["y"])]
    assert float(at["draws"].iloc[0]) == best["draws"] + 5.0
    layers, _ = model.archive_layers("sort", "sampling")  # the colour scale reaches the summed count
    assert layers["cells"].opts.get().kwargs["clim"][1] >= best["draws"] + 5.0


def test_a_running_runs_archives_are_read_with_the_model_of_every_elite(qd, tmp_path, monkeypatch):
    """A running run writes children.parquet, then archives.parquet, after each generation. The page read them in
    the other order, and a generation written between its two reads (a probe: 13 reads of 113 of a run written in
    a loop) gave archives whose new elites had no model: a KeyError as the page built its highlight menu (or an
    elite's card). Here the run's next generation lands just after the page's first read (of a copy of the
    module's finished run, its tables cut back to a generation as a running run's stood)."""
    import shutil

    import pyarrow.compute as pc

    from workbench.runs import Run

    store = RunStore(tmp_path / "runs")
    shutil.copytree(Path(qd["dir"]) / qd["run"], store.root / qd["run"])  # a copy: the module's run stays as it is
    run = store.open(qd["run"])
    children, archives = run.read_table("children"), run.read_table("archives")
    born = dict(zip(children["id"].to_pylist(), children["generation"].to_pylist(), strict=True))
    entered = [g for i, g in zip(archives["id"].to_pylist(), archives["generation"].to_pylist(), strict=True)
               if g >= 1 and born[i] == g]  # generations whose archives hold an elite born in them
    assert entered, "no child entered an archive: nothing to read before its model"
    g = entered[0]

    def upto(table, generation: int):
        return table.filter(pc.less_equal(table["generation"], generation))

    run.write_table("children", upto(children, g - 1))  # the run as it stood after generation g - 1
    run.write_table("archives", upto(archives, g - 1))
    read_table, landed = Run.read_table, []

    def read_while_the_run_writes(self, name):
        table = read_table(self, name)
        if not landed:  # generation g lands, as GenerationFiles.write writes it
            landed.append(name)
            self.write_table("children", upto(children, g))
            self.write_table("archives", upto(archives, g))
        return table

    monkeypatch.setattr(Run, "read_table", read_while_the_run_writes)
    d = read_source(str(store.root), run.id)
    assert landed and set(d.cells["id"]) <= set(d.models.index)
    last = d.cells[d.cells["generation"] == d.generations[-1]]["id"].unique()
    assert all(d.models.at[i, "label"] for i in last)  # the page's highlight menu
    model = QDModel(runs_dir=str(store.root), autoload=False)
    model.show(d)
    for i in last:
        assert model.card(int(i))["id"] == int(i)


def test_figure_view_writes_what_the_export_button_writes(qd, tmp_path):
    """`workbench figure view` (its own process): a page's view of a run for a paper's build script, the same
    bytes as the page's export of that view at that generation; a MAP-Elites run's archive by default; each
    wrong view, generation or kind of run one error naming the fix, nothing written."""
    from forked import run_pages as run  # its own process, forked from one with the pages' modules imported

    from workbench.cli.figure import QD_NO_LEGEND
    from workbench.figures import legend_names

    model = QDModel(runs_dir=qd["dir"], run_id=qd["run"])
    model.generation = 3
    want = model.export("curves", tmp_path / "page", ".pdf", width=6.75, font="serif").read_bytes()
    # the views whose --colour and --rename the command refuses before the run's models load: none has a legend
    # entry on the page (of a CycleQD run, early and at its end, and of a MAP-Elites one), as the others have
    me_model = QDModel(runs_dir=qd["dir"], run_id=qd["me"])
    for source, views in ((model, QD_NO_LEGEND), (me_model, ["archives"])):
        assert all(legend_names(source.paper_figure(view)[0]) == [] for view in views), views
    model.generation = 12
    assert all(legend_names(model.paper_figure(view)[0]) == [] for view in QD_NO_LEGEND)
    assert all(legend_names(model.paper_figure(view)[0]) for view in model.data.views if view not in QD_NO_LEGEND)
    args = ("figure", "view", qd["run"], "--runs", qd["dir"])
    done = run(*args, "--view", "curves", "--generation", "3", "--width", "6.75", "--font", "serif", "--out",
               str(tmp_path / "curves.pdf"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "curves.pdf").read_bytes() == want
    done = run("figure", "view", qd["me"], "--runs", qd["dir"], "--out", str(tmp_path / "me.png"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "me.png").read_bytes() == \
        me_model.export("archives", tmp_path / "page", ".png").read_bytes()
    done = run("figure", "view", qd["me"], "--runs", qd["dir"], "--out", str(tmp_path / "me.html"))
    assert done.returncode == 0 and done.stderr == "", done.stderr  # Bokeh's W-1005 line for a frame-sized plot
    # the lineage of the elites as they stood at a generation is another figure than at the end
    done = run(*args, "--view", "lineage", "--generation", "2", "--out", str(tmp_path / "early.svg"))
    assert done.returncode == 0, done.stderr
    assert run(*args, "--view", "lineage", "--out", str(tmp_path / "late.svg")).returncode == 0
    assert (tmp_path / "early.svg").read_bytes() != (tmp_path / "late.svg").read_bytes()
    for bad, message in ((["--view", "z"], "--view z: a qd run's views are archives, sampling, curves"),
                         (["--generation", "99"], f"--generation 99: run {qd['run']} has generations 0 to 12"),
                         # one past the last: refused as well (the bound is the last generation itself)
                         (["--generation", "13"], f"--generation 13: run {qd['run']} has generations 0 to 12"),
                         (["--view", "baselines", "--generation", "3"], "--view baselines has none"),
                         (["--colour", "sort=black"], "--colour: the figure has no legend entries"),
                         # the lineage's key is its colour map's (roles), not lines a colour is pinned to
                         (["--view", "lineage", "--colour", "elite=black"], "no legend entries"),
                         (["--view", "sampling", "--rename", "sort", "order"], "--rename: the figure has no legend"),
                         (["--view", "nope"], "invalid choice: 'nope'")):
        done = run(*args, *bad, "--out", str(tmp_path / "bad.png"))
        assert done.returncode == 2 and message in done.stderr, done.stderr
    done = run("figure", "view", qd["me"], "--runs", qd["dir"], "--generation", "1", "--out", str(tmp_path / "b.png"))
    assert done.returncode == 2 and "--generation picks a CycleQD run's archives" in done.stderr
    assert not (tmp_path / "bad.png").exists() and not (tmp_path / "b.png").exists()


def test_five_tasks_draw_every_pair_and_archive_panels_that_read(qd):
    """Five tasks: the children view draws all ten pairs (it kept six, silently); an archive of four axes says
    which it takes the best over under its title, not in a y label that ran into the next panel; the sampling
    view's counts are written in cells wide enough for them (at 15 bins "8" and "30" printed as "830")."""
    from workbench.dashboards.qd import LABELLED_BINS, cell_layers, children_plot

    tasks = ["add", "reverse", "sort", "recall", "brackets"]
    rng = np.random.default_rng(0)
    children = pd.DataFrame({**{f"score_{t}": rng.random(6) for t in tasks}, "id": range(6), "model": list("abcdef"),
                             "parents_text": [""] * 6, "seed": [True] * 5 + [False],
                             "status": ["entered an archive"] * 6})
    assert len(children_plot(children, tasks)) == 10
    # no child missed the archives: no key for them (it had a legend entry without a swatch)
    assert "entered none" not in {e.label for e in children_plot(children, tasks).values()[0]}
    cells = pd.DataFrame({"x": [0], "y": [0], "draws": [30.0], "model": ["m"], "id": [1], "scores": [""],
                          "parents": [""], "cell_text": [""], "quality": [0.5]})
    layers, opts = cell_layers(cells, "draws", (0, 30), "Oranges", 15, tasks[1:], "add: times drawn", labels=True)
    assert opts["common"]["title"] == "add: times drawn\nbest over recall, brackets"
    assert opts["common"]["ylabel"] == "sort bin" and layers["labels"] is not None
    model = QDModel(runs_dir=qd["dir"], run_id=qd["run"])  # 15 bins: no counts in the figure's cells
    assert model.data.bins > LABELLED_BINS
    kinds = [type(e).__name__ for e in model.archive_plot(TASKS[0], "sampling")]
    assert "Rectangles" in kinds and "Labels" not in kinds
    assert model.archive_layers(TASKS[0], "sampling")[0]["labels"] is not None  # the page's own cells keep them


def test_the_counts_in_an_archives_cells_grow_with_the_cells():
    """The page wrote its counts at 7 pt in any cell: small in the 31 px cells of an archive drawn over its
    thumbnails (470 px, 15 bins) or in a coarse archive's. They take 45 % of a cell, from 9 px to 14 px."""
    import holoviews as hv

    from workbench.dashboards.qd import cell_layers, count_font_px

    assert [count_font_px(190, 15), count_font_px(470, 15), count_font_px(190, 8), count_font_px(190, 3)] == \
        [9, 14, 11, 14]
    cells = pd.DataFrame({"x": [0], "y": [0], "draws": [30.0], "model": ["m"], "id": [1], "scores": [""],
                          "parents": [""], "cell_text": [""], "quality": [0.5]})
    for size, px in ((190, "9px"), (470, "14px")):
        layers, _ = cell_layers(cells, "draws", (0, 30), "Oranges", 15, TASKS[:2], "t", labels=True, size=size)
        style = hv.Store.lookup_options("bokeh", layers["labels"], "style").kwargs
        assert style["text_font_size"] == px, style


def test_the_ring_around_the_selected_cell_is_a_csv_row_that_says_so(tmp_path):
    """The ring around the selected elite's cell was a Rectangles row of NaN quality and model in an archive's
    CSV: a decoration read as an empty cell. Like a reference line (a row that says where it marks), it is a row
    marked "selected" True with the ringed elite's model, id and quality (the one selected, else the cell's drawn
    there); the cells' rows are not marked, and an archive without a selection has no ring row."""
    from figure_csv import check_csv

    from workbench.dashboards.qd import cell_layers, cell_plot
    from workbench.figures import save

    cells = pd.DataFrame({"x": [0, 1], "y": [0, 2], "quality": [0.25, 0.75], "model": ["m3", "m7"], "id": [3, 7],
                          "scores": ["a", "b"], "parents": ["p", "q"], "cell_text": ["0,0", "1,2"]})
    figures = {"drawn": (1, 2), "weaker": (1, 2), "none": None}
    chosen = {"weaker": {"model": "m9", "id": 9, "quality": 0.5}}  # K > 3: not the best at its plot position
    for name, highlight in figures.items():
        fig = cell_plot(*cell_layers(cells, "quality", (0, 1), "viridis", 3, TASKS[:2], "archive sort", highlight,
                                     selected=chosen.get(name)))
        rows = check_csv(save(fig, tmp_path / f"{name}.csv"), fig)
        ring = [r for r in rows if r.get("selected") == "True"]
        assert [r for r in rows if r.get("selected") not in ("True", "NaN", None)] == []
        assert len(rows) == 2 + len(ring) and all(r["quality"] != "NaN" and r["model"] != "NaN" for r in rows)
        if highlight is None:
            assert ring == [], name
            continue
        elite = chosen.get(name, {"model": "m7", "id": 7, "quality": 0.75})
        assert [(r["x0"], r["y0"], r["x1"], r["y1"], r["model"], r["id"], float(r["quality"])) for r in ring] == [
            ("0.5", "1.5", "1.5", "2.5", elite["model"], str(elite["id"]), elite["quality"])], name


def test_a_hand_edited_qd_config_costs_its_run_not_the_pages(qd, tmp_path):
    """A qd run.json whose config lacks a task's range (or everything) took down Home and Runs (its thumbnail
    read the config outside any try) and left the QD page on "loading…" for good (a KeyError where the page
    expects a ValueError). Now the run's card has no picture and the QD page names the field."""
    import shutil

    from workbench.dashboards.home import home_page
    from workbench.dashboards.qd import archive_thumbnail, read_qd_run
    from workbench.dashboards.runs import RunsModel, runs_page

    store = RunStore(tmp_path / "runs")
    for name, edit in (("no-range", lambda c: c["ranges"].pop("brackets")), ("no-config", lambda c: c.clear()),
                       ("bad-bins", lambda c: c.update(bins="many"))):
        folder = store.root / f"{qd['run']}-{name}"
        shutil.copytree(Path(qd["dir"]) / qd["run"], folder)
        info = json.loads((folder / "run.json").read_text())
        edit(info["config"])
        info["id"] = folder.name
        (folder / "run.json").write_text(json.dumps(info))
        assert archive_thumbnail(folder) is None
        with pytest.raises(ValueError, match=re.escape(f"run {folder.name!r}: its run.json's config") + ".*correct it"):
            read_qd_run(store, folder.name)
    named = {"no-range": "a bad ranges.brackets", "no-config": "lacks tasks, bins, ranges", "bad-bins": "bad bins"}
    for name, field in named.items():
        with pytest.raises(ValueError, match=field):
            read_qd_run(store, f"{qd['run']}-{name}")
    model = RunsModel(runs_dir=str(store.root))
    assert len(model.ids) == 3 and all(model.thumbnail(r) is None for r in store.list())
    runs_page(str(store.root))  # they raised as they built their cards
    home_page(str(store.root))
    folder = store.root / f"{qd['run']}-no-sampling"  # what the page reads besides: its line said nothing then
    shutil.copytree(Path(qd["dir"]) / qd["run"], folder)
    info = json.loads((folder / "run.json").read_text())
    del info["config"]["sampling"], info["method"]
    (folder / "run.json").write_text(json.dumps({**info, "id": folder.name}))
    assert " · ? · 15 bins · " in QDModel(runs_dir=str(store.root), run_id=folder.name).summary()
    shutil.copytree(Path(qd["dir"]) / qd["run"], store.root / qd["run"])  # a sound one beside them: its picture
    assert RunsModel(runs_dir=str(store.root)).thumbnail(store.open(qd["run"]).info | {"id": qd["run"]})


def test_bars_pooled_over_two_seeds_say_so_in_their_panel_title():
    """Bars pooled over two seeds are means with ± std whiskers, and each task's panel says "(mean ± std, 2 seeds)";
    one run's bars are its own scores and their titles say nothing of seeds."""
    from workbench.dashboards.qd import baselines_plot

    def titles(n):
        table = pd.DataFrame([{"task": t, "model": m, "name": m, "mean": 0.5, "std": 0.1 if n > 1 else 0.0, "n": n}
                              for t in ("brackets", "sort") for m in ("cycleqd", "base")])
        return [p.opts.get().kwargs["title"] for p in baselines_plot(table, spread=n > 1).values()]

    assert titles(2) == ["brackets (mean ± std, 2 seeds)", "sort (mean ± std, 2 seeds)"]
    assert titles(1) == ["brackets", "sort"]


def test_an_archives_score_ticks_sit_on_the_edges_of_its_cells():
    """From mutation sampling: a 6-bin archive over scores 0 … 1 labels the cells' edges (cell i spans i − ½ …
    i + ½), so "0" sits on the left edge of the first cell and "1" on the right edge of the last; a tick half a cell
    over would put each score range one cell off, and "1" past the plot's edge."""
    from workbench.dashboards.qd import _edge_ticks

    assert _edge_ticks(6, 0.0, 1.0) == [(-0.5, "0"), (1.5, "0.33"), (3.5, "0.67"), (5.5, "1")]


def test_every_view_fits_a_notebooks_cell_and_the_page_in_chromium(qd, browser):  # noqa: F811
    """Every view as Chromium draws it, axes, colour bars and legends included, fits ROW_WIDTH, which fits a
    notebook's output cell at a 1280 px window (848 px) and the page's main area: three archives sized by their
    190 px frames drew 927 px (widest_row counted 570), the lineage 860 px (870 in JupyterLab)."""
    from workbench.dashboards.shell import ROW_WIDTH

    assert ROW_WIDTH + NOTEBOOK_MARGINS <= NOTEBOOK_CELL
    model = QDModel(runs_dir=qd["dir"], run_id=qd["run"])
    model.select(int(model.cells("brackets").iloc[0]["id"]))
    early = QDModel(runs_dir=qd["dir"], run_id=qd["run"])
    early.generation = 0
    with figure_page(browser) as page:
        for view in model.data.views:
            assert 0 < drawn_width(page, model.figure(view)) <= ROW_WIDTH, view
        # notebook 06: the seed experts' archives above the last generation's
        assert drawn_width(page, (early.figure("archives") + model.figure("archives")).cols(3)) <= ROW_WIDTH
        assert drawn_width(page, QDModel(runs_dir=qd["dir"], run_id=qd["me"]).figure("archives")) <= ROW_WIDTH
