"""Comparing runs (workbench.compare, `workbench runs compare`): real ASAL runs in a real run store, the settings
that differ, seeds grouped as replicates of one setting, and the bands drawn from their curves."""

import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
from forked import cli as _short

from workbench.asal.driver import SearchConfig, run_search
from workbench.asal.evaluate import EvalConfig
from workbench.compare import compare_runs, differing_settings, flat_settings, group_replicates, run_labels
from workbench.runs import RunStore


def _openended(store: RunStore, seed: int, sigma: float, device: str | None = None) -> str:
    ev = EvalConfig("boids", "pixels", steps=10, frames=2, size=32, device=device)
    return run_search(SearchConfig(kind="openended", eval=ev, iters=3, pop=4, sigma=sigma, seed=seed), store).id


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    """Two seeds of σ = 0.1 (one run with --device cpu given: where it ran is not a setting) and one of σ = 0.3."""
    store = RunStore(tmp_path_factory.mktemp("runs"))
    ids = [_openended(store, 0, 0.1), _openended(store, 1, 0.1, device="cpu"), _openended(store, 0, 0.3)]
    return store, ids


def _best_by_iteration(store: RunStore, run_id: str) -> list[float]:
    """The run's best so far per iteration, read straight from its metrics.parquet (no catalog, no DuckDB)."""
    return pq.read_table(store.root / run_id / "metrics.parquet").column("best_loss").to_pylist()


def test_settings_that_differ_and_replicate_groups(three):
    store, (a, b, c) = three
    cmp = compare_runs(store, [a, b, c])
    assert [r["id"] for r in cmp.rows] == [a, b, c]
    assert set(cmp.differs) == {"config.sigma", "config.seed", "config.eval.device"}
    assert cmp.differs["config.sigma"] == {a: 0.1, b: 0.1, c: 0.3}
    assert cmp.differs["config.eval.device"] == {a: None, b: "cpu", c: None}
    # seeds and devices never split a setting: two groups, labelled by what tells them apart
    assert [(g.label, g.ids, g.seeds) for g in cmp.groups] == [("sigma=0.1", [a, b], [0, 1]), ("sigma=0.3", [c], [0])]
    first = cmp.groups[0]
    bests = [RunStore(store.root).open(i).info["best_loss"] for i in (a, b)]  # loss: the best is best_loss itself
    stats = first.stats()
    assert first.bests == bests and stats["n"] == 2 and stats["mean"] == pytest.approx(np.mean(bests))
    assert stats["std"] == pytest.approx(np.std(bests, ddof=1)) and (stats["min"], stats["max"]) == (min(bests),
                                                                                                    max(bests))
    assert cmp.groups[1].stats()["std"] is None  # one run has no spread
    with pytest.raises(ValueError, match="named more than once"):  # the same run named twice (after prefixes resolve)
        compare_runs(store, [a, c, a])
    # the bands: per iteration, the mean and range of the group's runs, from their own metrics files
    bands = cmp.bands()
    mine = bands[bands["group"] == "sigma=0.1"]
    curves = np.array([_best_by_iteration(store, i) for i in (a, b)])
    np.testing.assert_allclose(mine["mean"], curves.mean(axis=0))
    np.testing.assert_array_equal(mine["lo"], curves.min(axis=0))
    np.testing.assert_array_equal(mine["hi"], curves.max(axis=0))
    assert list(mine["n"]) == [2, 2, 2] and list(mine["iteration"]) == sorted(mine["iteration"])
    alone = bands[bands["group"] == "sigma=0.3"]
    np.testing.assert_array_equal(alone["lo"], alone["hi"])
    np.testing.assert_array_equal(alone["mean"], _best_by_iteration(store, c))


def test_the_band_over_seeds_is_the_range_one_sd_or_a_95_ci_of_the_mean(three, tmp_path, capsys):
    """--band / the Runs page's "Band over seeds": the runs' range (the default), the mean ± one sample sd, or
    Student's t 95% confidence interval of the mean; a setting of one run has none (its curve); the figure's
    title says which band it draws, and the page's export names a band other than the range."""
    from workbench.cli import main
    from workbench.cli.figure import BAND_CHOICES
    from workbench.compare import BANDS
    from workbench.dashboards.runs import RunsModel, curves_plot
    from workbench.figures import band_title, compare_curves, holoviews

    store, (a, b, c) = three
    cmp = compare_runs(store, [a, b, c])
    curves = np.array([_best_by_iteration(store, i) for i in (a, b)])
    mean, sd = curves.mean(axis=0), curves.std(axis=0, ddof=1)
    t = 12.706204736174694  # Student's t(0.975) at one degree of freedom (two runs)
    for band, half in (("sd", sd), ("ci95", t * sd / np.sqrt(2))):
        bands = cmp.bands(band)
        mine, alone = bands[bands["group"] == "sigma=0.1"], bands[bands["group"] == "sigma=0.3"]
        np.testing.assert_allclose(mine["mean"], mean)
        np.testing.assert_allclose(mine["lo"], mean - half)
        np.testing.assert_allclose(mine["hi"], mean + half)
        np.testing.assert_array_equal(alone["lo"], alone["mean"])
        np.testing.assert_array_equal(alone["hi"], alone["mean"])
    with pytest.raises(ValueError, match="--band must be one of range, sd, ci95"):
        cmp.bands("iqr")
    with pytest.raises(ValueError, match="--band must be one of range, sd, ci95"):  # runs of one seed each too
        compare_curves(compare_runs(store, [a, c]), "iqr")
    assert list(BAND_CHOICES) == list(BANDS)
    hv = holoviews()
    axis = hv.render(compare_curves(cmp, "ci95"), backend="matplotlib").axes[0]
    assert axis.get_title() == band_title("ci95") == "mean over seeds; band: 95% CI of the mean (Student's t)"
    # the CLI, and the page
    out = tmp_path / "ci.png"
    assert main(["figure", "compare", a, b, c, "--band", "ci95", "--runs", str(store.root), "--out", str(out)]) == 0
    assert out.exists() and "no band is drawn" not in capsys.readouterr().err
    assert main(["figure", "compare", a, c, "--band", "sd", "--runs", str(store.root), "--out", str(out)]) == 0
    assert "note: --band sd: no setting of these runs has several seeds" in capsys.readouterr().err
    model = RunsModel(runs_dir=str(store.root), selected=[a, b, c], band="sd")
    plot = hv.render(curves_plot(model).object, backend="bokeh")
    assert plot.title.text == f"best so far: {band_title('sd')}"
    written = model.export(".png")
    assert written.name.endswith("-sd.png") and written.parent == store.root / "figures"
    model.band = "range"
    assert model.export(".png").name == written.name.replace("-sd.png", ".png")


def test_the_figure_draws_a_band_per_setting_with_replicates(three, tmp_path):
    from PIL import Image

    from workbench.figures import compare_curves, save

    store, (a, b, c) = three
    bands = compare_curves(compare_runs(store, [a, b, c]))
    assert [type(e).__name__ for e in bands] == ["Area", "Curve", "Area", "Curve"]
    assert [e.label for e in bands] == ["sigma=0.1 (n=2)"] * 2 + ["sigma=0.3 (n=1)"] * 2
    curves = compare_curves(compare_runs(store, [a, c]))  # no setting repeated: a curve per run
    assert [(type(e).__name__, e.label) for e in curves] == [("Curve", "sigma=0.1"), ("Curve", "sigma=0.3")]
    png = Image.open(save(bands, tmp_path / "seeds.png"))
    assert png.width > 500 and np.asarray(png.convert("L")).std() > 0


def test_runs_in_other_metrics_are_drawn_a_panel_per_metric(tmp_path):
    """From a review of the Compare tab: a search's loss, a merge's fitness and a QD score were drawn on one y axis,
    labelled "best fitness / loss / qd_score" (cut off on the page). Each metric is a panel of its own with its own
    y label, over one iteration range, each run in one colour in both backends and named in its panel's legend; on
    the page (Bokeh) and in the paper figure (matplotlib). Runs in one metric stay one plot."""
    import holoviews as hv

    from workbench.dashboards.runs import RunsModel, curves_plot
    from workbench.figures import BAND_TITLE, OKABE_ITO, compare_curves, holoviews

    holoviews()
    store = RunStore(tmp_path / "runs")

    def run(kind, metric, best_loss, seed=0):
        made = store.create(kind, "s", "f", {"seed": seed}, seed, metric=metric)
        made.write_table("metrics", {"iteration": list(range(len(best_loss))), "best_loss": best_loss})
        return made.id

    search, merge = run("target", "loss", [0.9, 0.6, 0.4]), run("merge", "fitness", [-0.2, -0.5])
    qd = run("qd", "qd_score", [-3.0, -10.0, -20.0, -34.0, -40.0])
    figure = compare_curves(compare_runs(store, [search, merge, qd]))
    assert isinstance(figure, hv.Layout) and [len(panel) for panel in figure] == [1, 1, 1]
    # on the page (Bokeh draws no legend for one element) each panel names its run in its title
    assert [p.title.text for p, *_ in hv.render(figure, backend="bokeh").children] == [
        "target · s", "merge · s", "qd · s"]
    axes = hv.render(figure, backend="matplotlib").axes
    assert [ax.get_ylabel() for ax in axes] == ["best target loss", "best fitness", "best QD score"]
    assert [ax.get_xlim() for ax in axes] == [(0, 4)] * 3 and [ax.get_xlabel() for ax in axes] == ["", "", "iteration"]
    assert [ax.lines[0].get_color() for ax in axes] == list(OKABE_ITO[:3])
    assert [[t.get_text() for t in ax.get_legend().get_texts()] for ax in axes] == [["target · s"], ["merge · s"],
                                                                                     ["qd · s"]]
    # a second merge seed: bands, on the page, the title once above the panels, a setting's colour in its panel
    twin = run("merge", "fitness", [-0.3, -0.4], seed=1)
    model = RunsModel(runs_dir=str(store.root))
    model.selected = [search, merge, qd, twin]
    plotted = curves_plot(model).object
    assert [[type(e).__name__ for e in panel] for panel in plotted] == [["Area", "Curve"]] * 3
    title, grid = hv.render(plotted, backend="bokeh").children
    plots = [plot for plot, *_ in grid.children]
    assert BAND_TITLE in title.text and [p.yaxis[0].axis_label for p in plots] == ["best target loss", "best fitness",
                                                                                   "best QD score"]
    assert all(p.width == 760 and p.x_range is plots[0].x_range for p in plots)
    assert [{getattr(r.glyph, "fill_color", r.glyph.line_color) for r in p.renderers} for p in plots] == [
        {colour} for colour in OKABE_ITO[:3]]
    assert model.export(".pdf").read_bytes().startswith(b"%PDF")  # the paper figure of the panels
    assert isinstance(compare_curves(compare_runs(store, [merge, twin])), hv.Overlay)  # one metric: one plot


def test_a_replicate_cut_short_sets_the_budget_the_group_is_compared_at(three, tmp_path):
    """A third σ = 0.1 seed stopped after its first iteration: the setting's bests are taken there for every
    seed, and its band ends there (past it, a mean of fewer runs would jump)."""
    import shutil

    store, (a, b, c) = three
    local = RunStore(tmp_path / "runs")
    for run_id in (a, b):
        shutil.copytree(store.root / run_id, local.root / run_id)
    stops = iter([False, True])
    ev = EvalConfig("boids", "pixels", steps=10, frames=2, size=32)
    short = run_search(SearchConfig(kind="openended", eval=ev, iters=3, pop=4, sigma=0.1, seed=2), local,
                       should_stop=lambda: next(stops)).id
    cmp = compare_runs(local, [a, b, short])
    (group,) = cmp.groups
    last = len(_best_by_iteration(local, short)) - 1
    assert group.ids == [a, b, short] and group.at_iteration < 2 and group.at_iteration == \
        int(pq.read_table(local.root / short / "metrics.parquet").column("iteration").to_pylist()[last])
    assert group.bests == [_best_by_iteration(local, i)[last] for i in (a, b, short)]
    bands = cmp.bands()
    assert list(bands["n"]) == [3] * len(bands) and bands["iteration"].max() == group.at_iteration
    # a seed run with a smaller --iters is a replicate too (its iteration i is the same whatever the total): one
    # setting compared where the shortest ended, iters said among the differences (seeds of --iters 3 and 2 made
    # two settings)
    shorter = run_search(SearchConfig(kind="openended", eval=ev, iters=2, pop=4, sigma=0.1, seed=3), local).id
    cmp = compare_runs(local, [a, b, shorter])
    (group,) = cmp.groups
    assert group.ids == [a, b, shorter] and group.at_iteration == 1 and group.label == "openended · boids"
    assert cmp.differs["config.iters"] == {a: 3, b: 3, shorter: 2}
    # a copied run folder is its own run: compared by its folder's name, not the id in its run.json
    shutil.copytree(local.root / a, local.root / "copy-of-a")
    cmp = compare_runs(local, [a, "copy-of-a"])
    assert [r["id"] for r in cmp.rows] == [a, "copy-of-a"] and cmp.groups[0].ids == [a, "copy-of-a"]


def test_groups_by_value_and_labels_per_kind(tmp_path):
    """1 and 1.0 are one setting (the Python API's int, the CLI's float); with other kinds compared, each label
    names what differs among the runs of its own kind, after the kind."""
    def info(run_id, kind, config, seed=0):
        return {"id": run_id, "kind": kind, "substrate": "s", "fm": "f", "seed": seed, "status": "done",
                "config": {**config, "seed": seed}}

    infos = [info("a", "openended", {"sigma": 1}), info("b", "openended", {"sigma": 1.0}, seed=1),
             info("c", "qd", {"ranges": {"x": [0, 0.5]}, "transfer": "lineage"}),
             info("d", "qd", {"ranges": {"x": [0, 0.6]}, "transfer": "weights"}),
             info("e", "merge", {"method": "ties", "models": ["add", "sort"]})]
    groups = group_replicates(infos, str(tmp_path))
    assert [(g.label, g.ids) for g in groups] == [("openended · s", ["a", "b"]), ("qd · ranges.x=[0, 0.5]", ["c"]),
                                                  ("qd · ranges.x=[0, 0.6]", ["d"]), ("merge · s", ["e"])]
    assert group_replicates([info("a", "openended", {"sigma": 1}), info("b", "openended", {"sigma": True})],
                            str(tmp_path))[1].ids == ["b"]  # True is not 1
    # a run made before EvalConfig.sampling took K = 1 at the final state: one setting with a new run doing that;
    # with K > 1 the sampling does not matter
    old, new = {"frames": 1, "steps": 9}, {"frames": 1, "steps": 9, "sampling": "final"}
    assert len(group_replicates([info("a", "illuminate", {"eval": old}), info("b", "illuminate", {"eval": new}, 1)],
                                str(tmp_path))) == 1
    assert len(group_replicates([info("a", "target", {"eval": {"frames": 2}}),
                                 info("b", "target", {"eval": {"frames": 2, "sampling": "chunk_ends"}}, 1)],
                                str(tmp_path))) == 1
    assert len(group_replicates([info("a", "target", {"eval": old}),
                                 info("b", "target", {"eval": {**old, "sampling": "chunk_ends"}}, 1)],
                                str(tmp_path))) == 2
    # runs made before EvalConfig.pixels embedded 8-bit frames: another setting than a new run's floats
    older = group_replicates([info("a", "target", {"eval": {"frames": 2}}),
                              info("b", "target", {"eval": {"frames": 2, "pixels": "float"}}, 1)], str(tmp_path))
    assert [g.label for g in older] == ["pixels=uint8", "pixels=float"]
    # illuminations made before child_seeds gave their children one seed; other kinds always share theirs
    older = group_replicates([info("a", "illuminate", {"eval": {"frames": 1, "pixels": "float"}}),
                              info("b", "illuminate", {"eval": {"frames": 1, "pixels": "float"}, "child_seeds": "own"},
                                   1)], str(tmp_path))
    assert [g.label for g in older] == ["child_seeds=shared", "child_seeds=own"]
    assert len(group_replicates([info("a", "target", {"eval": {"frames": 2, "pixels": "float"}}),
                                 info("b", "target", {"eval": {"frames": 2, "pixels": "float"}, "child_seeds": "own"},
                                      1)], str(tmp_path))) == 1
    # an illumination made before unused loss weights were refused, with --c-softmax 0.5 on record: no loss read
    # it, so it replicates one without; a target search's weight tells runs apart
    ill = {"eval": {"frames": 1, "pixels": "float"}, "child_seeds": "own"}
    assert len(group_replicates([info("a", "illuminate", {**ill, "c_softmax": 0.5}), info("b", "illuminate", ill, 1)],
                                str(tmp_path))) == 1
    tgt = {"eval": {"frames": 2, "pixels": "float"}}
    assert len(group_replicates([info("a", "target", {**tgt, "c_softmax": 0.5}), info("b", "target", tgt, 1)],
                                str(tmp_path))) == 2
    # a setting a run has not got is None: a NAMM run made before max_kept is a replicate of one with None
    assert len(group_replicates([info("a", "namm", {"gens": 2}), info("b", "namm", {"gens": 2, "max_kept": None}, 1)],
                                str(tmp_path))) == 1
    # Transformer² runs made before stop_token counted the eos; an adapt run without CEM has no use for the rule
    older = group_replicates([info("a", "experts", {"task": "sort"}), info("b", "experts", {"task": "sort",
                              "stop_token": "drop"}, 1), info("c", "experts", {"task": "sort", "stop_token": "count"},
                                                             2)], str(tmp_path))
    assert [(g.label, g.ids) for g in older] == [("stop_token=count", ["a", "c"]), ("stop_token=drop", ["b"])]
    assert len(group_replicates([info("a", "adapt", {"target": "sort", "strategies": ["base"]}),
                                 info("b", "adapt", {"target": "sort", "strategies": ["base"], "stop_token": "drop"},
                                      1)], str(tmp_path))) == 1


def test_each_run_is_labelled_by_what_tells_it_apart(three, tmp_path):
    """Curves of single runs (`figure curves`, a comparison without replicates) name each run by the settings that
    tell it from the others, its seed included but not where it ran; its title where the label would be too long
    to read (it was its id: three of four runs of a figure were ids), its id where nothing tells it apart or where
    two runs read the same."""
    from workbench.figures import loss_curves

    store, (a, b, c) = three
    assert [e.label for e in loss_curves(store, [a, b, c])] == ["sigma=0.1, seed=0", "sigma=0.1, seed=1",
                                                                 "sigma=0.3, seed=0"]

    def info(run_id, kind, config, seed=0):
        return {"id": run_id, "kind": kind, "substrate": "s", "fm": "f", "seed": seed, "status": "done",
                "config": {**config, "seed": seed}}

    root = str(tmp_path)
    assert run_labels([info("a", "target", {"pop": 8}), info("b", "merge", {"pop": 8}, seed=2),
                       info("c", "merge", {"pop": 8})], root) == {"a": "target · s", "b": "merge · seed=2",
                                                                  "c": "merge · seed=0"}
    assert run_labels([info("a", "target", {"device": "cpu"}), info("b", "target", {"device": None})],
                      root) == {"a": "a", "b": "b"}  # only where they ran differs
    long = {f"setting_{i}": i for i in range(9)}
    assert run_labels([info("a", "target", long), info("b", "target", {k: -v for k, v in long.items()})],
                      root) == {"a": "a", "b": "b"}  # their titles read the same
    assert run_labels([info("a", "target", long), info("b", "target", {k: -v for k, v in long.items()}, seed=1)],
                      root) == {"a": "target · s · f · seed 0", "b": "target · s · f · seed 1"}
    assert run_labels([info("a", "target", {"x": 1}), info("b", "target", {"x": 1.0}), info("c", "target", {"x": 2})],
                      root) == {"a": "a", "b": "b", "c": "x=2"}  # 1 and 1.0 read the same
    # a setting a run has not got is left out of its label (a GA's read "descriptor_fit=—")
    assert run_labels([info("a", "target", {"algorithm": "ga"}),
                       info("b", "target", {"algorithm": "map-elites", "descriptor_fit": "held-out"})],
                      root) == {"a": "algorithm=ga", "b": "algorithm=map-elites, descriptor_fit=held-out"}
    assert run_labels([info("a", "namm", {"max_kept": None}), info("b", "namm", {"max_kept": 0.5})],
                      root) == {"a": "max_kept=—", "b": "max_kept=0.5"}  # None is a value (no cap): said
    # an absolute path by the fewest last parts that tell it apart: a researcher's home folder went into the paper
    # ("model=/home/alice/thesis/zoo/base"); a relative one as given
    experts = [info("a", "experts", {"model": "/home/alice/thesis/zoo/base"}),
               info("b", "experts", {"model": "/tmp/w/zoo/base2"}), info("c", "experts", {"model": "zoo/base"})]
    assert run_labels(experts, root) == {"a": "model=base", "b": "model=base2", "c": "model=zoo/base"}
    assert [g.label for g in group_replicates(experts, root)] == ["model=base", "model=base2", "model=zoo/base"]
    assert run_labels([info("a", "experts", {"model": "/a/zoo/base"}), info("b", "experts", {"model": "/b/zoo/base"}),
                       info("c", "experts", {"model": "/zoo/base"})], root) == {
        "a": "model=a/zoo/base", "b": "model=b/zoo/base", "c": "model=/zoo/base"}
    # nor read as a relative path beside it: both said model=base, and the legend fell back to the runs' ids
    assert run_labels([info("a", "experts", {"model": "/home/al/zoo/base"}), info("b", "experts", {"model": "base"})],
                      root) == {"a": "model=zoo/base", "b": "model=base"}


def test_short_paths_tell_absolute_paths_apart_by_their_last_parts():
    from workbench.compare import short_paths, value_text

    paths = short_paths(["/home/a/zoo/base", ("/c/e1.safetensors", "/d/e1.safetensors"), "rel/x", "openclip:ViT",
                         "C:\\Users\\al\\zoo\\base", 3])
    assert paths == {"/home/a/zoo/base": "a/zoo/base", "C:\\Users\\al\\zoo\\base": "al/zoo/base",
                     "/c/e1.safetensors": "c/e1.safetensors", "/d/e1.safetensors": "d/e1.safetensors"}
    assert value_text(("/c/e1.safetensors", "/d/e1.safetensors"), paths=paths) == "c/e1.safetensors+d/e1.safetensors"
    assert value_text("/c/e1.safetensors") == "/c/e1.safetensors"  # tables show the whole path


def test_flat_settings_and_runs_of_other_kinds():
    info = {"id": "x", "kind": "merge", "config": {"models": ["add", "sort"], "eval": {"n": 3}, "seed": 2}}
    assert flat_settings(info) == {"kind": "merge", "config.models": ("add", "sort"), "config.eval.n": 3,
                                   "config.seed": 2}
    other = {"id": "y", "kind": "openended", "config": {"eval": {"n": 3}, "seed": 2, "sigma": 0.1}}
    differs = differing_settings([info, other])
    assert differs == {"kind": {"x": "merge", "y": "openended"}, "config.models": {"x": ["add", "sort"], "y": None},
                       "config.sigma": {"x": None, "y": 0.1}}


def test_runs_compare_in_its_own_process(three, tmp_path):
    store, (a, b, c) = three
    proc = _short("runs", "compare", a, b, c, "--runs", str(store.root), "--json", cwd=tmp_path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    data = json.loads(out)
    assert list(data["runs"]) == [a, b, c]
    assert data["runs"][a]["best_loss_by_iteration"] == _best_by_iteration(store, a)
    assert data["differs"]["config.sigma"] == {a: 0.1, b: 0.1, c: 0.3}
    groups = {g["label"]: g for g in data["groups"]}
    assert groups["sigma=0.1"]["ids"] == [a, b] and groups["sigma=0.1"]["n"] == 2
    assert math.isclose(groups["sigma=0.1"]["best_mean"], np.mean([data["runs"][i]["best"] for i in (a, b)]))
    assert groups["sigma=0.1"]["better"] == "lower" and groups["sigma=0.3"]["best_std"] is None
    # Student's t 95% CI of the mean best over the two seeds (t(0.975, 1) = 12.706), none for one run
    bests = [data["runs"][i]["best"] for i in (a, b)]
    half = 12.706204736174694 * np.std(bests, ddof=1) / math.sqrt(2)
    np.testing.assert_allclose(groups["sigma=0.1"]["best_ci95"], [np.mean(bests) - half, np.mean(bests) + half])
    assert groups["sigma=0.3"]["best_ci95"] is None
    # the tables: runs with the settings that differ, then each setting over its seeds
    proc = _short("runs", "compare", a, b, c, "--runs", str(store.root), cwd=tmp_path, env={"COLUMNS": "200"})
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "runs compared" in out and "over seeds" in out and "sigma=0.1" in out and "eval.device" in out
    assert " ± " in out and a in out and "95% CI" in out
    ci = groups["sigma=0.1"]["best_ci95"]
    assert f"{ci[0]:.4f} to {ci[1]:.4f}" in out
    # "same settings" where it is so (two seeds of one setting), never for runs of other kinds, whose settings
    # are not compared (a target search and a CycleQD run read "same settings")
    import shutil

    mixed = RunStore(tmp_path / "mixed")
    shutil.copytree(store.root / a, mixed.root / a)
    shutil.copytree(store.root / a, mixed.root / "again")
    proc = _short("runs", "compare", a, "again", "--runs", str(mixed.root), cwd=tmp_path)
    assert "(same settings)" in proc.communicate(timeout=120)[0]
    merge = mixed.create("merge", "ties", "a+b", {"method": "ties", "seed": 0}, 0)
    proc = _short("runs", "compare", a, merge.id, "--runs", str(mixed.root), cwd=tmp_path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "(different kinds: settings not compared)" in out and "same settings" not in out
    # runs counted in other units each say theirs: a qd run's 3 iterations are its 2 generations ("3" read wrong)
    qd = mixed.create("qd", "elite+svd", "add+sort", {"seed": 0, "gens": 2}, 0)
    qd.update(iterations=3, status="done")
    proc = _short("runs", "compare", a, qd.id, "--runs", str(mixed.root), cwd=tmp_path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "2 generations" in out and "iterations" in out, err
    # the paper figure, in its own process too
    proc = _short("figure", "compare", a, b, c, "--runs", str(store.root), "--out", "seeds.pdf", cwd=tmp_path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert (tmp_path / "seeds.pdf").read_bytes().startswith(b"%PDF")
    # refused, one line each: one run, the same run twice
    for args, message in (([a], "give two or more runs to compare, got 1"),
                          ([a, a], f"{a} is named more than once")):
        proc = _short("runs", "compare", *args, "--runs", str(store.root), cwd=tmp_path)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 2 and out == "" and err.strip().count("\n") == 0, err
        assert message in err, err


def test_runs_on_other_inputs_are_other_settings_and_a_repeated_seed_counts_once(three, tmp_path):
    """From a reviewer's check of comparisons: runs toward other target images (every run's copy is
    inputs/target.png) or from other zoos at one path were seeds of one setting; a run repeating a seed counted
    as another replicate (n=3 for seeds 0, 1, 0); a NaN at the compared iteration took the iteration before's
    value and an inf run stayed in the band (mean inf); the matplotlib band had another colour than its line;
    nothing in an exported figure said what the band is."""
    import shutil

    from workbench.figures import BAND_TITLE, compare_curves, holoviews

    def info(run_id, seed, **extra):
        return {"id": run_id, "kind": "target", "substrate": "s", "fm": "f", "seed": seed, "status": "done",
                "config": {"seed": seed, "target_image": "inputs/target.png"}, **extra}

    image = {"inputs": {"target_image": {"path": "inputs/target.png", "sha256": "a" * 64}}}
    other = {"inputs": {"target_image": {"path": "inputs/target.png", "sha256": "b" * 64}}}
    groups = group_replicates([info("a", 0, **image), info("b", 1, **image), info("c", 2, **other)], str(tmp_path))
    assert [g.ids for g in groups] == [["a", "b"], ["c"]]
    assert [g.label for g in groups] == ["inputs.target_image=sha256:aaaaaaaaaaaa",
                                         "inputs.target_image=sha256:bbbbbbbbbbbb"]
    merge = {"kind": "merge", "substrate": "ties", "fm": "a+b", "status": "done"}
    zoos = [{**merge, "id": i, "seed": s, "config": {"zoo": "zoo", "seed": s}, "zoo_sha256": sha}
            for i, s, sha in (("m", 0, "1" * 64), ("n", 1, "1" * 64), ("o", 2, "2" * 64))]
    assert [g.ids for g in group_replicates(zoos, str(tmp_path))] == [["m", "n"], ["o"]]

    store, (a, b, c) = three
    local = RunStore(tmp_path / "runs")
    for run_id in (a, b):
        shutil.copytree(store.root / run_id, local.root / run_id)
    shutil.copytree(store.root / a, local.root / "again")  # seed 0 once more: the same computation
    cmp = compare_runs(local, [a, b, "again"])
    (group,) = cmp.groups
    assert group.repeats == {"again": a} and group.stats()["n"] == 2
    assert set(cmp.bands()["n"]) == {2}
    out = _short("runs", "compare", a, b, "again", "--runs", str(local.root))
    assert out.returncode == 0 and f"again repeats the seed of {a}" in out.stderr
    seeds = [line for line in out.stdout.splitlines() if "0, 1" in line]
    assert seeds and not any("0, 1, 0" in line for line in seeds), out.stdout  # the seed repeated is said once

    # a non-finite best after a finite one: the best so far stays the run's earlier score (a NaN does not undo
    # it); a run with no finite best at all is not in the stats nor in the band
    shutil.copytree(local.root / b, local.root / "b-again")
    table = pq.read_table(local.root / b / "metrics.parquet").to_pandas()
    earlier = float(table["best_loss"].iloc[-2])
    table.loc[table.index[-1], "best_loss"] = float("nan")
    import pyarrow as pa

    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), local.root / b / "metrics.parquet")
    cmp = compare_runs(local, [a, b])
    (group,) = cmp.groups
    assert group.bests[1] == earlier and group.stats()["n"] == 2
    table["best_loss"] = float("inf")
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), local.root / b / "metrics.parquet")
    cmp = compare_runs(local, [a, b])
    (group,) = cmp.groups
    assert group.bests[1] is None or math.isnan(group.bests[1])
    assert group.stats()["n"] == 1 and set(cmp.bands()["n"]) == {1}
    # of two runs of one seed, the one with a finite best counts
    (group,) = compare_runs(local, [a, b, "b-again"]).groups
    assert group.repeats == {b: "b-again"} and group.stats()["n"] == 2

    hv = holoviews()
    figure = compare_curves(compare_runs(store, [a, b, c]))
    axis = hv.render(figure, backend="matplotlib").axes[0]
    assert axis.get_title() == BAND_TITLE
    fills = [tuple(round(v, 3) for v in poly.get_facecolor()[0][:3]) for poly in axis.collections]
    from matplotlib.colors import to_rgb

    lines = [tuple(round(v, 3) for v in to_rgb(line.get_color())) for line in axis.lines]
    assert fills == lines[:len(fills)], (fills, lines)


def test_figures_say_which_runs_they_leave_out(three, tmp_path):
    """A run without metrics yet was left out of `figure compare` and `figure curves` without a word."""
    import shutil

    store, (a, b, _) = three
    local = RunStore(tmp_path / "runs")
    for run_id in (a, b):
        shutil.copytree(store.root / run_id, local.root / run_id)
    fresh = local.create("openended", "boids", "pixels", {"seed": 7}, 7).id
    for what in ("compare", "curves"):
        out = _short("figure", what, a, b, fresh, "--runs", str(local.root), "--out", str(tmp_path / f"{what}.png"))
        assert out.returncode == 0, out.stderr
        assert out.stderr.strip() == f"note: {fresh} has no metrics yet: the figure leaves it out"
    # with --metric: the run without metrics drew bare axes (exit 0), and any misspelt column passed unchecked
    out = _short("figure", "curves", fresh, "--metric", "no_such", "--runs", str(local.root), "--out",
                 str(tmp_path / "m.png"))
    assert out.returncode == 2 and f"no metrics yet in {fresh}" in out.stderr, out.stderr
    out = _short("figure", "curves", a, fresh, "--metric", "no_such", "--runs", str(local.root), "--out",
                 str(tmp_path / "m.png"))
    assert out.returncode == 2 and f"run {a!r} has no metric 'no_such'; give --metric one of" in out.stderr


def test_a_run_that_scored_nan_or_inf_stays_in_its_band_and_says_how_many_scored(tmp_path):
    """A first population all NaN leaves best_loss inf; a NaN between scores cut a run's line. The best so far is
    taken over the finite values (a NaN after a score keeps that score), the band's n says how many runs had scored
    ("n=2–3"), and the mean never rises for a loss."""
    from workbench.figures import compare_curves

    store = RunStore(tmp_path / "runs")

    def run(seed, best_loss):
        made = store.create("target", "boids", "pixels", {"seed": seed, "sigma": 0.1}, seed)
        made.write_table("metrics", {"iteration": list(range(len(best_loss))), "best_loss": best_loss})
        return made.id

    ids = [run(0, [0.9, 0.7, 0.6]), run(1, [0.8, float("nan"), 0.5]), run(2, [float("inf"), 0.75, 0.55])]
    comparison = compare_runs(store, ids)
    band = comparison.bands()
    assert band["n"].tolist() == [2, 3, 3]
    assert band["mean"].tolist() == pytest.approx([0.85, (0.7 + 0.8 + 0.75) / 3, (0.6 + 0.5 + 0.55) / 3])
    assert all(np.diff(band["mean"]) <= 0)
    assert [e.label.rsplit(" (", 1)[1] for e in compare_curves(comparison)] == ["n=2–3)"] * 2


def test_a_run_whose_metrics_cannot_be_read_is_left_out_of_the_curves_and_named(three, tmp_path):
    """A truncated metrics.parquet (or one without iteration / best_loss) failed the whole comparison: on the Runs
    page silently (the Compare tab kept its last view, the error in the server log), in `runs compare` as an
    error naming no fix, or a traceback. Now the run's settings are compared, its curve left out and named; and
    `runs show` names the table a metrics table must be where DuckDB's binder error was a traceback."""
    import shutil

    import pyarrow as pa

    from workbench.dashboards.runs import RunsModel

    store, (a, b, c) = three
    copy = RunStore(tmp_path / "runs")
    for i in (a, b, c):
        shutil.copytree(store.root / i, copy.root / i)
    (copy.root / b / "metrics.parquet").write_bytes((store.root / b / "metrics.parquet").read_bytes()[:100])
    pq.write_table(pa.table({"foo": ["x"]}), copy.root / c / "metrics.parquet")
    comparison = compare_runs(copy, [a, b, c])
    assert set(comparison.curves["run_id"]) == {a} and list(comparison.unreadable) == [b, c]
    assert "unreadable" in comparison.unreadable[b] and "no iteration or best_loss column" in comparison.unreadable[c]
    assert comparison.differs["config.sigma"] == {a: 0.1, b: 0.1, c: 0.3}
    model = RunsModel(runs_dir=str(copy.root))
    model.selected = [a, b, c]
    text = model.compared_text(model.comparison())
    assert text.startswith(f"Comparing `{a}`, `{b}` and `{c}`.") and f"**`{c}` left out of the curves:**" in text
    proc = _short("runs", "compare", a, b, c, "--runs", str(copy.root), "--json", cwd=tmp_path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert list(json.loads(out)["unreadable"]) == [b, c] and f"warning: {c} left out of the curves" in err
    proc = _short("runs", "show", c, "--runs", str(copy.root), cwd=tmp_path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert "has no iteration column: not a metrics table of this workbench" in err
    assert json.loads(out)["metrics"] is None


def test_labels_name_the_kind_whenever_two_kinds_are_compared_and_the_setting_in_full(tmp_path):
    """From mutation sampling: a comparison of two merge methods beside a search labelled its groups
    "method=ties" and "method=dare_ties" with no kind before them (only three kinds or more said it), and a
    setting's value in a legend must read as given: σ = 0.125 is "0.125", not "0.12" (two settings read alike)."""
    from workbench.compare import value_text

    def info(run_id, kind, config, seed=0):
        return {"id": run_id, "kind": kind, "substrate": "s", "fm": "f", "seed": seed, "status": "done",
                "config": {**config, "seed": seed}}

    infos = [info("a", "merge", {"method": "ties"}), info("b", "merge", {"method": "dare_ties"}),
             info("c", "target", {"sigma": 0.125}), info("d", "target", {"sigma": 0.12})]
    assert [g.label for g in group_replicates(infos, str(tmp_path))] == [
        "merge · method=ties", "merge · method=dare_ties", "target · sigma=0.125", "target · sigma=0.12"]
    assert [value_text(v) for v in (0.125, 1e-05, 123456.0, [0.001, 0.125])] == [
        "0.125", "1e-05", "123456", "[0.001, 0.125]"]


def test_an_axis_of_several_metrics_names_them_in_one_order():
    """The y label of curves in several metrics reads the same in every figure and process (a set's order changes
    with Python's hash seed: "best loss / fitness" in one build of a paper, "best fitness / loss" in the next);
    an illumination's population loss comes last, not as a best."""
    from workbench.compare import POPULATION_METRIC, curves_label

    for metrics in (["loss", "fitness", "qd_score"], ["qd_score", "fitness", "loss"], ["fitness", "qd_score", "loss"]):
        assert curves_label(metrics) == "best QD score / fitness / loss"
    assert curves_label([POPULATION_METRIC, "loss"]) == f"best loss / {POPULATION_METRIC}"


def test_an_infinite_population_loss_is_no_point_of_its_settings_band():
    """An illumination's curve is its population's loss at each iteration (not carried forward as a best so far):
    an inf there (no member scored) is left out of its setting's band, which is then the other seeds' (n says how
    many), rather than a mean of inf that drew no band at all."""
    import pandas as pd

    from workbench.compare import POPULATION_METRIC, Comparison, RunGroup

    curves = pd.DataFrame({"run_id": ["a", "a", "b", "b"], "iteration": [0, 1, 0, 1],
                           "best_loss": [math.inf, 0.5, 0.7, 0.3], "best": [math.inf, 0.5, 0.7, 0.3],
                           "metric": [POPULATION_METRIC] * 4})
    group = RunGroup(label="g", kind="illuminate", metric="loss", higher=False, ids=["a", "b"], seeds=[0, 1],
                     at_iteration=1)
    bands = Comparison(rows=[], differs={}, groups=[group], curves=curves).bands().sort_values("iteration")
    assert list(bands["n"]) == [1, 2] and list(bands["mean"]) == [0.7, 0.4]
    assert list(bands["lo"]) == [0.7, 0.3] and list(bands["hi"]) == [0.7, 0.5]


def test_a_settings_band_runs_in_iteration_order_when_its_first_run_scored_late(tmp_path):
    """A target search whose first population scored nothing (NaN at iteration 0; it stays NaN, no point) listed
    first among its seeds: the setting's mean and band must still run from iteration 0 up. They ran 1, 2, 3 and then
    back to 0: the mean line drew a stroke from the last iteration back across the figure to iteration 0."""
    import holoviews as hv

    from workbench.figures import compare_curves, holoviews

    holoviews()
    store = RunStore(tmp_path / "runs")
    ids = []
    for seed, losses in ((0, [math.nan, 0.5, 0.4, 0.3]), (1, [0.7, 0.6, 0.2, 0.1])):
        run = store.create("target", "lenia", "clip", {"sigma": 0.1, "seed": seed}, seed)
        run.write_table("metrics", {"iteration": [0, 1, 2, 3], "best_loss": losses})
        ids.append(run.id)
    cmp = compare_runs(store, ids)
    assert list(cmp.bands()["iteration"]) == [0, 1, 2, 3]
    ax = hv.render(compare_curves(cmp), backend="matplotlib").axes[0]
    assert list(ax.lines[0].get_xdata()) == [0, 1, 2, 3]


def test_the_descriptor_fit_tells_map_elites_runs_apart_and_no_ga_runs():
    """From mutation sampling: two MAP-Elites illuminations that fit their descriptor on other prompts ran two
    settings; the GA fits none, so its runs differing there (a stored default) are replicates of one."""
    def info(run_id: str, algorithm: str, fit: str) -> dict:
        cfg = SearchConfig(kind="illuminate", eval=EvalConfig("boids", "pixels", steps=4), algorithm=algorithm,
                           descriptor_fit=fit)
        return {"id": run_id, "kind": "illuminate", "config": cfg.to_dict()}

    elites = [info("a", "map-elites", "held-out"), info("b", "map-elites", "all")]
    assert differing_settings(elites) == {"config.descriptor_fit": {"a": "held-out", "b": "all"}}
    assert differing_settings([info("c", "ga", "held-out"), info("d", "ga", "all")]) == {}


def test_an_adapt_run_mixes_by_cem_with_a_target_and_few_shot_among_its_strategies_or_all_of_them():
    """From mutation sampling: an empty list of strategies is all of them, CEM's few-shot mixing included, so its
    stop-token rule is a setting of that run too."""
    from workbench.compare import uses_cem

    assert uses_cem({"target": "add", "strategies": []}) and uses_cem({"target": "add"})
    assert uses_cem({"target": "add", "strategies": ["prompt", "few-shot"]})
    assert not uses_cem({"target": "add", "strategies": ["prompt"]}) and not uses_cem({"target": None})


def test_a_setting_set_to_none_and_one_a_run_has_not_got_are_one_setting():
    """From mutation sampling: a run made before a setting existed (absent from its run.json) and one that set it to
    None (NAMM's max_kept: no cap) ran one setting, as differing_settings reads them: replicates, not two."""
    from workbench.compare import replicates_of

    new = {"id": "a", "kind": "merge", "config": {"seed": 0, "max_kept": None}}
    old = {"id": "b", "kind": "merge", "config": {"seed": 1}}
    assert differing_settings([new, old]) == {"config.seed": {"a": 0, "b": 1}}
    assert replicates_of(new, [("b", old)]) == ["b"] and replicates_of(old, [("a", new)]) == ["a"]
