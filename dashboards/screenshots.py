"""One screenshot per dashboard page, for the README: `refresh(out_dir="docs/screenshots", runs_dir=...)`.

Starts `workbench serve` on a free port, makes a small run of each kind first if the runs folder has none
(an open-endedness search, an illumination, a TIES merge of a seconds-long zoo, a CycleQD run, SVF experts and an
adaptation), drives each page in Debian's Chromium a little (a few Lab steps, a short search, a cell played in the
Atlas, an elite clicked in the QD archives) and writes PAGE.png. Nothing is fetched from the network.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

PAGES = ("home", "lab", "search", "runs", "atlas", "merge", "qd", "experts", "namm")
VIEWPORT = {"width": 1440, "height": 900}
#: the pages that show the store's runs, whose shots want a run of each kind; the others need none (the Lab plays a
#: creature, the Search page starts its own search, the NAMM page runs a model)
RUN_PAGES = ("home", "runs", "atlas", "merge", "qd", "experts")
#: the real zoo, where the zoo commands build it (`--zoo`'s default: data/zoo in the folder a command runs in); it was
#: taken beside the package, which an installed wheel holds in site-packages (no zoo there: a quick zoo, quietly)
REAL_ZOO = Path("data/zoo")


def sample_runs(runs_dir: str | Path, zoo_dir: str | Path | None = None,
                qd_zoo_dir: str | Path | None = None) -> list[str]:
    """A small run of each kind in runs_dir (about a minute on two CPU cores); their ids. zoo_dir: a built
    zoo to merge (default: a quick one built in a temporary folder). qd_zoo_dir: the zoo CycleQD evolves
    (default: data/zoo when it is a real zoo, whose archives fill; else a quick one)."""
    from workbench.asal.driver import SearchConfig, run_search
    from workbench.asal.evaluate import EvalConfig
    from workbench.lm.zoo import ZooConfig, build_zoo
    from workbench.merge.evolution import EvolveConfig, evolve
    from workbench.runs import RunStore

    store = RunStore(runs_dir)
    ids = [run_search(SearchConfig(kind="openended", eval=EvalConfig("plife", "pixels", steps=300, frames=4),
                                   iters=5, pop=4, seed=1), store).id,
           run_search(SearchConfig(kind="illuminate", eval=EvalConfig("boids", "pixels", steps=60), iters=8, pop=8,
                                   population=36, seed=2), store).id]
    zoo = Path(zoo_dir) if zoo_dir else Path(tempfile.mkdtemp()) / "zoo"
    if not (zoo / "zoo.json").exists():  # a quick zoo with 4 layers: a heatmap worth looking at, in seconds
        build_zoo(zoo, ZooConfig.quick(tasks=("add", "sort"), layers=4))
    for method in ("dfs", "ties"):  # the newest (ties) is what the Merge page opens on: its recipe heatmaps
        ids.append(evolve(EvolveConfig(zoo=str(zoo), models=["add", "sort"], method=method, iters=6, pop=6,
                                       n_eval=16, n_test=16), store).id)
    ids.append(_qd_run(store, qd_zoo_dir))  # the newest qd run is what the QD page opens on
    ids += _experts_runs(store, zoo)  # the newest adapt run is what the Experts page opens on
    return ids


def _experts_runs(store, zoo: Path) -> list[str]:
    """SVF experts (add, sort, classify) and two seeds of an adaptation to reverse (seconds): on the generalist of
    data/zoo when there is one (`workbench experts generalist`: a base SVF can improve), else on zoo's base."""
    from workbench.experts.adapt import AdaptConfig, adapt
    from workbench.experts.run import ExpertRunConfig, expert_file, train_expert

    generalist = REAL_ZOO / "generalist"
    model = str(generalist if (generalist / "config.json").exists() else zoo / "base")
    ids = [train_expert(ExpertRunConfig(model=model, task=t, iters=12, batch=8, val_every=4, val_n=16, n_test=32),
                        store).id for t in ("add", "sort", "classify")]
    files = [str(expert_file(store.open(i))) for i in ids]
    for seed in (0, 1):
        ids.append(adapt(AdaptConfig(model=model, experts=files, target="reverse", shots=[3, 5, 10], cem_iters=3,
                                     pop=16, n=32, seed=seed), store).id)
    return ids


def _qd_run(store, zoo_dir: str | Path | None) -> str:
    """A CycleQD run of sort, reverse and brackets (seconds): on the real zoo when there is one."""
    from workbench.lm.zoo import ZooConfig, build_zoo, load_zoo
    from workbench.qd.run import QDRunConfig, run_cycleqd

    tasks = ["sort", "reverse", "brackets"]
    real = REAL_ZOO
    if zoo_dir is None and (real / "zoo.json").exists():
        found = load_zoo(real)
        zoo_dir = real if not found.quick and set(tasks) <= set(found.tasks) else None
    if zoo_dir is None:
        zoo_dir = build_zoo(Path(tempfile.mkdtemp()) / "qd-zoo", ZooConfig.quick(tasks=tuple(tasks), base_steps=100,
                                                                                  expert_steps=60))
    # a quick zoo's experts learn brackets a little only: a narrow range and a strong mutation spread the bins
    quick = load_zoo(zoo_dir).quick
    cfg = QDRunConfig(zoo=str(zoo_dir), tasks=tasks, gens=30, batch=4, n_eval=32, n_test=32, multitask_steps=20,
                      ranges={"brackets": [0.0, 0.5]} if quick else None, mutation_scale=1.0 if quick else None,
                      seed=3)
    return run_cycleqd(cfg, store).id


def _offline(context, host: str) -> list[str]:
    """Refuse every request that leaves our server; the list of refused URLs (should stay empty)."""
    refused: list[str] = []

    def route(r):
        url = r.request.url
        if url.startswith(("data:", "blob:")) or host in url:
            r.continue_()
        else:
            refused.append(url)
            r.abort()

    context.route("**/*", route)
    return refused


def _stage(page, name: str) -> None:
    """Put a page in a state worth showing."""
    if name == "lab":  # Lenia's reference creature, playing
        page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0 && "
                               "Bokeh.documents[0].get_model_by_name('lab-frame') !== null", timeout=60000)
        page.get_by_role("button", name="▶ play / pause").click()
        page.wait_for_timeout(5000)
        page.get_by_role("button", name="▶ play / pause").click()
    elif name == "search":
        for label, value in (("Iters", "8"), ("Steps", "40"), ("Frames", "2"), ("Pop", "6")):
            box = page.get_by_label(label, exact=True)
            box.fill(value)
            box.press("Enter")
        page.get_by_role("button", name="start", exact=True).click()
        page.get_by_text("status: done").wait_for(timeout=180000)
        page.wait_for_timeout(800)
    elif name == "atlas":
        canvas = page.locator(".bk-Canvas").first
        canvas.wait_for(timeout=60000)
        box = canvas.bounding_box()
        page.mouse.click(box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.45)
        page.get_by_text("playing population member").wait_for(timeout=30000)
        page.wait_for_timeout(1500)
    elif name == "merge":
        page.locator(".bk-tab").first.wait_for(timeout=60000)
        page.wait_for_timeout(1500)
    elif name == "namm":  # the default prompt through SmolLM2, a random θ, n_up 32: the retention raster
        # by its label: the first select is the task prompts' (since they came, the model was never chosen)
        page.get_by_label("Model", exact=True).select_option(label="SmolLM2-135M-Instruct")
        page.get_by_label("n_up (tokens between evictions)").select_option(label="32")
        page.get_by_role("button", name="run", exact=True).click()
        page.get_by_text("cache at the end").wait_for(timeout=600000)
        page.wait_for_timeout(2000)
    elif name == "experts":  # the z heatmaps of the newest adapt run's experts
        page.locator(".bk-tab").first.wait_for(timeout=60000)
        page.wait_for_timeout(2500)
    elif name == "qd":  # a young elite clicked (a long ancestry): its card and its ring in every archive
        page.wait_for_function(f"() => ({_NEWEST_CELL})() !== null", timeout=60000)
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        # a click that lands while the plot is still taking its tools misses (seen once on a busy 2-core
        # machine: the card never came): click again, up to four times in all
        for attempt in range(4):
            page.mouse.click(*page.evaluate(_NEWEST_CELL))
            try:
                page.locator(".elite h3").wait_for(timeout=15000)
                break
            except PlaywrightTimeout:
                if attempt == 3:
                    raise
        page.mouse.move(5, 880)  # the hover tooltip away, and the click's focus ring
        page.evaluate("() => { let e = document.activeElement; while (e && e.shadowRoot && e.shadowRoot.activeElement)"
                      " e = e.shadowRoot.activeElement; if (e) e.blur(); }")
        page.wait_for_timeout(1500)
    else:
        page.wait_for_timeout(1500)


_NEWEST_CELL = """() => {  // page position of the youngest elite of the first archive plot, once it is drawn
  for (const v of Bokeh.index.all_views()) {
    const t = v.model.title;
    if (!(t && t.text && t.text.startsWith('archive ') && v.frame)) continue;
    for (const r of v.model.renderers) {
      const d = r.data_source;
      if (!(d && d.columns().includes('quality') && d.get_length() > 0)) continue;
      const ids = Array.from(d.get_column('id')), k = ids.indexOf(Math.max(...ids));
      const c = (n) => d.get_column(n)[k], x = (c('x0') + c('x1')) / 2, y = (c('y0') + c('y1')) / 2;
      const box = v.canvas_view.el.getBoundingClientRect();
      return [box.left + v.frame.x_scale.compute(x), box.top + v.frame.y_scale.compute(y)];
    }
  }
  return null;
}"""


def needs_sample_runs(pages: Iterable[str], runs_dir: str | Path) -> bool:
    """Whether sample runs are made in runs_dir before the shots of `pages`: when one of them shows runs and the
    store has none (`--pages lab` made six runs it never showed, for a minute and a half)."""
    from workbench.runs import RunStore

    return any(p in RUN_PAGES for p in pages) and not RunStore(runs_dir).list()


def _path(name: str) -> str:
    return "" if name == "home" else name


def refresh(out_dir: str | Path = "docs/screenshots", runs_dir: str | Path | None = None,
            pages: Iterable[str] = PAGES, chromium: str | None = None) -> list[Path]:
    """Write out_dir/PAGE.png for each page, served from runs_dir (sample runs are made there first if it
    has none and a page shows runs; without runs_dir, in a temporary folder). Returns the written paths.
    RuntimeError: the server did not come up, or a page asked the network for something."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # a dev extra: an installed wheel has no Playwright
        raise ValueError("screenshots need Playwright, which the workbench installs only with its dev extra: "
                         "pip install playwright (it drives Debian's chromium: no browser download)") from None

    from workbench.checks import shell_path
    from workbench.local_server import free_port, wait_live

    chromium = chromium or shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise ValueError("screenshots need Debian's chromium (apt-get install chromium)")
    pages = list(pages)  # read three times below: a generator would be spent by the first
    unknown = [p for p in pages if p not in PAGES]
    if unknown:
        raise ValueError(f"unknown page(s) {unknown}; pages are {', '.join(PAGES)}")
    scratch = None if runs_dir else tempfile.TemporaryDirectory()
    runs_dir = Path(runs_dir) if runs_dir else Path(scratch.name) / "runs"
    if needs_sample_runs(pages, runs_dir):
        sample_runs(runs_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # served from the run folder's parent as "--runs NAME", so the pages name it as a user's would ("runs"), not
    # by a path of the machine that took the pictures
    server = subprocess.Popen([sys.executable, "-m", "workbench", "serve", "--port", str(port), "--runs",
                               runs_dir.name], cwd=runs_dir.resolve().parent, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    written = []
    try:
        if not wait_live(url, 120.0, server):
            # its output went nowhere: the command that shows why
            raise RuntimeError((f"workbench serve exited with {server.returncode}" if server.poll() is not None
                                else f"workbench serve did not answer at {url} within 120 s")
                               + f"; `workbench serve --runs {shell_path(runs_dir)}` shows why")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            for name in pages:
                context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
                refused = _offline(context, f"127.0.0.1:{port}")
                page = context.new_page()
                page.goto(f"{url}/{_path(name)}", wait_until="networkidle")
                _stage(page, name)
                path = out / f"{name}.png"
                page.screenshot(path=str(path))
                context.close()
                if refused:
                    raise RuntimeError(f"the {name} page asked the network for {refused}")
                written.append(path)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
        if scratch is not None:
            scratch.cleanup()
    return written


if __name__ == "__main__":
    for written in refresh(*sys.argv[1:3]):
        print(written)
