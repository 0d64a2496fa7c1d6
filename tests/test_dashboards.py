"""Dashboards: the models without a browser, and the served pages in a real Chromium (Playwright)."""

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from workbench.dashboards.lab import LabModel
from workbench.dashboards.runs import RunsModel
from workbench.dashboards.search import SearchModel

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SERVED_RUNS: dict[str, str] = {}  # server url -> its runs folder


def test_lab_model_plays_mutates_and_snapshots(tmp_path):
    model = LabModel(substrate="lenia", snapshot_dir=str(tmp_path))
    first = model.frame.copy()
    model.steps_per_frame = 4
    model.advance()
    assert model.step_count == 4 and not np.array_equal(model.frame, first)
    model.tick()  # paused: nothing happens
    assert model.step_count == 4
    model.playing = True
    model.tick()
    assert model.step_count == 8
    before = model.theta.copy()
    model.mutate()
    assert model.step_count == 0 and np.abs(model.theta - before).max() > 0
    png = model.snapshot()
    assert png.exists() and np.load(png.with_suffix(".npy")).shape == (3117,)
    model.substrate = "plife"
    assert model.frame.shape == (224, 224, 3) and model.theta.shape == (42,)
    with pytest.raises(ValueError):
        model.set_theta(np.zeros(5))


def test_lab_model_loads_runs_edits_parameters_and_scores(tmp_path):
    run_id = _illumination(tmp_path)
    model = LabModel(substrate="lenia")
    model.load_run(str(tmp_path), run_id)
    assert model.substrate == "boids" and model.theta.shape == (193,)
    lenia = LabModel(substrate="lenia")
    twin = LabModel(substrate="lenia")
    m = lenia.params["m"].copy()
    m[0] += 0.05
    lenia.set_param("m", m)
    for x in (lenia, twin):
        x.steps_per_frame = 10
        x.advance()
    assert not np.array_equal(lenia.frame, twin.frame)  # the edit changed the dynamics
    with pytest.raises(ValueError, match="no parameter"):
        lenia.set_param("alpha", m)
    with pytest.raises(ValueError, match="shape"):
        lenia.set_param("m", m[:3])
    plife = LabModel(substrate="plife")
    plife.set_param("alpha", np.eye(6))
    assert plife.params["alpha"][0, 0] == 1.0
    # the FM score trace: a target image with the pixels model, one score every 2 frames
    lenia.score_every = 2
    lenia.set_target_image(lenia.frame)
    for _ in range(4):
        lenia.advance()
    assert len(lenia.scores) == 2 and all(-1.0 <= loss <= 0.0 for _, loss in lenia.scores)
    assert LabModel(substrate="boids").score() is None  # no target: no score


def test_runs_model_reads_the_catalog(tmp_path):
    from workbench.asal.driver import SearchConfig, run_search
    from workbench.asal.evaluate import EvalConfig
    from workbench.runs import RunStore

    store = RunStore(tmp_path)
    ids = [run_search(SearchConfig(kind="openended", eval=EvalConfig("boids", "pixels", steps=10, frames=2),
                                   iters=2, pop=4, seed=s), store).id for s in (0, 1)]
    model = RunsModel(runs_dir=str(tmp_path))
    assert sorted(model.table()["id"]) == sorted(ids)
    model.selected = ids
    curves = model.curves()
    assert sorted(curves["run_id"].unique()) == sorted(ids) and len(curves) == 4


def test_search_model_runs_stops_and_resumes(tmp_path):
    model = SearchModel(runs_dir=str(tmp_path), kind="openended", substrate="boids", fm="pixels", steps=10,
                        frames=2, iters=3, pop=4)
    model.start()
    assert model.wait() == "done" and len(model.metrics) == 3 and model.best_thumb is not None
    model.iters = 40
    model.start()
    while len(model.metrics) < 1:
        time.sleep(0.05)
    model.stop()
    assert model.wait() == "stopped" and len(model.metrics) < 40
    stopped_id = model.run_id
    model.resume()
    assert model.wait() == "done" and model.run_id == stopped_id
    from workbench.runs import RunStore

    assert RunStore(tmp_path).open(stopped_id).info["iterations"] == 40
    model.fm = "pixels"
    model.kind = "target"
    with pytest.raises(ValueError, match="--prompt"):
        model.start()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _illumination(runs) -> str:
    from workbench.asal.driver import SearchConfig, run_search
    from workbench.asal.evaluate import EvalConfig
    from workbench.runs import RunStore

    cfg = SearchConfig(kind="illuminate", eval=EvalConfig("boids", "pixels", steps=20), iters=3, pop=6, population=16)
    return run_search(cfg, RunStore(runs)).id


def test_atlas_model_snaps_and_exports(tmp_path):
    from workbench.dashboards.atlas import AtlasModel

    run_id = _illumination(tmp_path)
    model = AtlasModel(runs_dir=str(tmp_path))
    assert model.run_id == run_id and model.side == 4
    assert sorted(model.cells) == sorted(set(model.cells)) and len(model.cells) == 16
    for projection in ("tsne", "umap"):
        model.projection = projection
        assert len(set(model.cells)) == 16
    out = model.export_png(tmp_path / "atlas.png", scale=2)
    assert np.asarray(Image.open(out)).shape == (model.image.shape[0] * 2, model.image.shape[1] * 2, 3)


def _merge_runs(runs, zoo) -> dict[str, str]:
    from workbench.merge.evolve import EvolveConfig, evolve
    from workbench.runs import RunStore

    return {method: evolve(EvolveConfig(zoo=str(zoo), models=["add", "sort"], method=method, iters=2, pop=4, n_eval=8,
                                        n_test=8), RunStore(runs)).id for method in ("dare_ties", "dfs")}


def test_merge_model_views_and_export(tmp_path, quick_zoo):
    import holoviews as hv

    from workbench.dashboards.merge import FIGURES, MergeModel

    ids = _merge_runs(tmp_path, quick_zoo)
    model = MergeModel(runs_dir=str(tmp_path))
    assert sorted(model.param.run_id.objects) == sorted(ids.values())
    model.run_id = ids["dare_ties"]
    table = model.data().recipe_table()
    assert set(table["model"]) == {"add", "sort"} and set(table["filter"]) == {"attention", "mlp", "norm & embeddings"}
    assert table["density"].between(0.05, 1).all() and len(set(table["group"])) == 2 + 2
    shown = {name: model.figure(name) for name in FIGURES}
    assert isinstance(shown["path"], hv.Div) and not isinstance(shown["recipe"], hv.Div)
    for name in ("recipe", "fitness", "scores", "norms", "cosine", "conflicts"):
        hv.render(shown[name], backend="bokeh")
    # cells sit at integer positions under their own tick labels (both backends, no categorical re-sorting)
    from workbench.merge.views import scores_plot

    hm = scores_plot(model.data().scores)
    xticks = dict(hv.Store.lookup_options("matplotlib", hm, "plot").kwargs["xticks"])
    yticks = dict(hv.Store.lookup_options("matplotlib", hm, "plot").kwargs["yticks"])
    scores = model.data().scores
    for _, cell in hm.dframe().iterrows():
        task, name = xticks[cell["task"]], yticks[cell["model"]]
        assert (task, name) == (cell["task name"], cell["model name"])
        source = scores["merged"] if name == "merged" else scores["models"][name]
        assert cell["accuracy"] == pytest.approx(source[task], abs=1e-3)
    png = model.export("recipe", tmp_path / "figs")
    assert Image.open(png).size[0] > 300
    with pytest.raises(ValueError, match="no 'path' figure"):
        model.export("path", tmp_path / "figs")
    model.run_id = ids["dfs"]
    assert not isinstance(model.figure("path"), hv.Div) and "method `dfs`" in model.summary()
    assert model.export("path", tmp_path / "figs", ".svg").read_text().startswith("<?xml")
    assert f"./merge?run={ids['dfs']}" in RunsModel(runs_dir=str(tmp_path)).link(ids["dfs"])


@pytest.fixture(scope="module")
def server(tmp_path_factory, quick_zoo):
    runs = tmp_path_factory.mktemp("runs")
    _illumination(runs)
    _merge_runs(runs, quick_zoo)
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "workbench", "serve", "--port", str(port), "--runs", str(runs)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    SERVED_RUNS[url] = str(runs)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/liveness", timeout=2).status == 200:
                break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail(f"workbench serve did not come up: {proc.stdout.read()}")
    yield url
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.fail("Debian chromium is missing: `make test` installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@contextlib.contextmanager
def _browse(browser, url: str, request):
    """A fresh page at url; on leaving, no console or page errors may have happened. Screenshot and
    trace are kept under test-artifacts/ when the test fails."""
    context, page, errors = _open(browser, url)
    try:
        yield page
        assert not errors, errors
    finally:
        _finish(context, page, request)


def _wait_for_model(page, name: str) -> None:
    page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0 && "
                           f"Bokeh.documents[0].get_model_by_name('{name}') !== null", timeout=60000)


def _open(browser, url):
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    context.tracing.start(screenshots=True, snapshots=True)
    page = context.new_page()
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url, wait_until="networkidle")
    return context, page, errors


FRAME_SUM = """() => {
  const fig = Bokeh.documents[0].get_model_by_name('lab-frame');
  const img = fig.renderers[0].data_source.data.image[0];
  let s = 0; for (let i = 0; i < img.length; i += 7) s = (s * 31 + img[i]) % 1000000007; return s;
}"""


def test_lab_page_in_chromium(server, browser, request):
    with _browse(browser, f"{server}/lab", request) as page:
        _wait_for_model(page, "lab-frame")
        before = page.evaluate(FRAME_SUM)
        page.get_by_role("button", name="step").click()
        page.wait_for_function(f"() => ({FRAME_SUM})() !== {before}", timeout=30000)
        # the steps-per-frame slider: one arrow key moves it to 2, so the next step goes from step 1 to 3
        page.locator(".noUi-handle").first.press("ArrowRight")
        moved = page.evaluate(FRAME_SUM)
        page.get_by_role("button", name="step").click()
        page.get_by_text("step 3").wait_for(timeout=30000)
        page.wait_for_function(f"() => ({FRAME_SUM})() !== {moved}", timeout=30000)
        page.get_by_role("button", name="snapshot PNG").click()
        page.get_by_text("saved").wait_for(timeout=30000)


def test_lab_opens_a_run_from_the_query_string(server, browser, request):
    with _browse(browser, f"{server}/runs", request) as page:
        page.locator(".tabulator-row").first.wait_for(timeout=60000)
        page.locator(".tabulator-row input[type=checkbox]").first.check()
        link = page.get_by_role("link", name=re.compile("in the Lab"))
        link.first.wait_for(timeout=30000)
        link.first.click()
        page.get_by_text("loaded the best θ").wait_for(timeout=60000)


def test_search_page_runs_a_search_in_chromium(server, browser, request):
    with _browse(browser, f"{server}/search", request) as page:
        page.get_by_role("heading", name="Search").wait_for(timeout=60000)
        for label, value in (("Iters", "2"), ("Steps", "10"), ("Frames", "2"), ("Pop", "4")):
            box = page.get_by_label(label, exact=True)
            box.fill(value)
            box.press("Enter")
        page.get_by_role("button", name="start").click()
        page.get_by_text("done").wait_for(timeout=120000)
        # a long one, stopped from the page
        box = page.get_by_label("Iters", exact=True)
        box.fill("500")
        box.press("Enter")
        page.get_by_role("button", name="start").click()
        page.get_by_text("running").wait_for(timeout=60000)
        page.get_by_role("button", name="stop").click()
        page.get_by_text("stopped").wait_for(timeout=120000)


def test_atlas_page_plays_a_cell_and_exports_in_chromium(server, browser, request):
    with _browse(browser, f"{server}/atlas", request) as page:
        _wait_for_model(page, "atlas")
        canvas = page.locator(".bk-Canvas").last  # the atlas plot (the player's frame comes first)
        canvas.wait_for(timeout=30000)
        box = canvas.bounding_box()
        page.mouse.click(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.4)
        page.get_by_text("playing population member").wait_for(timeout=30000)
        page.get_by_role("button", name="export PNG").click()
        page.get_by_text("atlas-export.png").wait_for(timeout=30000)


def test_merge_page_shows_runs_and_exports_in_chromium(server, browser, request):
    with _browse(browser, f"{server}/merge", request) as page:
        page.get_by_text("Merge recipes").wait_for(timeout=60000)
        run_select = page.locator("select").first
        options = run_select.locator("option").all_inner_texts()
        dfs_id = next(o for o in options if "-merge-dfs-" in o)
        ties_id = next(o for o in options if "-merge-dare_ties-" in o)
        run_select.select_option(dfs_id)
        page.get_by_text(re.compile(r"method\s+dfs")).wait_for(timeout=30000)
        page.get_by_text("DFS path", exact=True).click()
        page.locator(".bk-Canvas, canvas").first.wait_for(timeout=30000)  # the path plot drew
        page.locator("select").nth(1).select_option("path")
        page.get_by_role("button", name="export").click()
        page.get_by_text("written").wait_for(timeout=60000)
        assert (Path(server_runs(server)) / dfs_id / "figures" / f"{dfs_id}-path.png").is_file()
        run_select.select_option(ties_id)
        page.get_by_text(re.compile(r"method\s+dare_ties")).wait_for(timeout=30000)
        page.get_by_text("Recipe", exact=True).click()
        page.locator(".bk-Canvas, canvas").first.wait_for(timeout=30000)  # the recipe heatmaps drew


def server_runs(url: str) -> str:
    return SERVED_RUNS[url]


def test_index_and_runs_pages_load_without_errors(server, browser, request):
    with _browse(browser, f"{server}/", request) as page:
        assert all(name in page.content() for name in ("lab", "search", "runs", "atlas"))
    with _browse(browser, f"{server}/runs", request) as page:
        page.get_by_role("heading", name=re.compile("Runs in")).wait_for(timeout=60000)
        page.locator(".tabulator").first.wait_for(timeout=30000)


def _finish(context, page, request):
    """Keep a screenshot and a Playwright trace when the test failed."""
    failed = getattr(request.node, "rep_call", None) is None or request.node.rep_call.failed
    if failed:
        out = Path("test-artifacts") / request.node.name
        out.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out / "page.png"))
        context.tracing.stop(path=str(out / "trace.zip"))
    else:
        context.tracing.stop()
    context.close()


def test_concurrent_lab_sessions_play_without_errors(browser):
    """The load test in small (2 sessions, 5 s): every session receives frames and nothing errs.
    Frame rates are benchmarks (`workbench bench dashboards`), not asserted here."""
    from workbench.bench import bench_dashboards

    result = bench_dashboards(sessions=2, seconds=5, browser=browser)
    assert result["errors"] == []
    assert all(f > 0 for f in result["fps_per_session"])


def test_a_page_runs_alone_with_panel_serve(tmp_path):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "panel", "serve", "dashboards/lab.py", "--port", str(port)],
                            cwd=Path(__file__).resolve().parents[1], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                html = urllib.request.urlopen(f"http://127.0.0.1:{port}/lab", timeout=5).read().decode()
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("panel serve dashboards/lab.py did not answer")
        assert "bokeh" in html.lower() and "cdn.bokeh.org" not in html
    finally:
        proc.terminate()
        proc.wait(timeout=20)
