"""Search: launch an ASAL search in the background, watch its loss and best frame, stop and resume it.

`SearchModel` runs `workbench.asal.driver.run_search` on a thread; the thread only writes plain
fields, and the page reads them on a periodic callback (Bokeh documents must be changed from their
own thread). Tests drive the model directly: start(), wait(), stop(), resume().
"""

from __future__ import annotations

import sys
import threading

import numpy as np
import panel as pn
import param

from workbench.asal.driver import SearchConfig, run_search
from workbench.asal.evaluate import EvalConfig
from workbench.runs import RunStore
from workbench.simulations import SUBSTRATES


class SearchModel(param.Parameterized):
    kind = param.Selector(default="openended", objects=["target", "openended", "illuminate"])
    algorithm = param.Selector(default="ga", objects=["ga", "map-elites"], doc="illumination only")
    substrate = param.Selector(default="boids", objects=list(SUBSTRATES))
    fm = param.String(default="pixels", doc="clip | openclip:ARCH (needs weights) | efficientnet-lite0 | pixels")
    weights = param.String(default="", doc="local weights file for clip / openclip")
    prompt = param.String(default="", doc="target prompt(s), separated by ';'")
    iters = param.Integer(default=20, bounds=(1, None))
    pop = param.Integer(default=8, bounds=(2, None))
    steps = param.Integer(default=100, bounds=(1, None))
    frames = param.Integer(default=4, bounds=(1, None))
    bs = param.Integer(default=1, bounds=(1, None), doc="initial-state seeds averaged per θ")
    target_image = param.String(default="", doc="target image file (instead of a prompt)")
    seed = param.Integer(default=0, bounds=(0, None))
    runs_dir = param.String(default="runs")

    def __init__(self, **params):
        super().__init__(**params)
        self.status = "idle"
        self.run_id: str | None = None
        self.metrics: list[dict] = []
        self.best_thumb: np.ndarray | None = None
        self.population: np.ndarray | None = None  # thumbnails of the latest evaluated batch
        self.error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def config(self) -> SearchConfig:
        prompts = [p.strip() for p in self.prompt.split(";") if p.strip()]
        ev = EvalConfig(self.substrate, self.fm, weights=self.weights or None, steps=self.steps,
                        frames=self.frames, bs=self.bs, chunk=self.pop)
        if self.kind == "illuminate":
            extra = {"population": max(4 * self.pop, 8), "algorithm": self.algorithm}
        else:
            extra = {"prompts": prompts, "target_image": self.target_image or None}
        return SearchConfig(kind=self.kind, eval=ev, iters=self.iters, pop=self.pop, seed=self.seed, **extra)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, resume: str | None = None) -> None:
        """Start a new search (or resume run `resume`) on a background thread."""
        if self.running:
            raise ValueError("a search is already running; stop it first")
        cfg = None if resume else self.config()  # bad settings raise here, in the caller's thread
        self._stop.clear()
        self.metrics, self.best_thumb, self.error, self.status = [], None, "", "running"
        self._thread = threading.Thread(target=self._work, args=(cfg, resume), daemon=True)
        self._thread.start()

    def _work(self, cfg, resume) -> None:
        store = RunStore(self.runs_dir)
        try:
            run = run_search(cfg, store, resume=resume, on_iteration=self._progress, should_stop=self._stop.is_set,
                             on_start=lambda r: setattr(self, "run_id", r.id),
                             on_population=lambda thetas, thumbs: setattr(self, "population", thumbs))
            self.run_id = run.id
            self.status = run.info["status"]
            thumb = run.path / "best.png"
            if thumb.exists():
                from PIL import Image

                self.best_thumb = np.asarray(Image.open(thumb))
        except Exception as exc:  # noqa: BLE001 - shown on the page; the thread must not die silently
            self.error, self.status = f"{type(exc).__name__}: {exc}", "failed"

    def _progress(self, done: int, total: int, row: dict) -> None:
        self.metrics = [*self.metrics, row]

    def stop(self) -> None:
        """Ask the search to stop after the current iteration (it stays resumable)."""
        self._stop.set()

    def resume(self) -> None:
        if not self.run_id:
            raise ValueError("no run to resume yet")
        self.start(resume=self.run_id)

    def wait(self, timeout: float = 600.0) -> str:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.status


def search_page(runs_dir: str = "runs", model: SearchModel | None = None) -> pn.viewable.Viewable:
    import holoviews as hv

    hv.extension("bokeh", logo=False)
    model = model or SearchModel(runs_dir=runs_dir)
    controls = pn.Param(model, parameters=["kind", "algorithm", "substrate", "fm", "weights", "prompt", "target_image",
                                           "iters", "pop", "steps", "frames", "bs", "seed"], show_name=False,
                        widgets={k: pn.widgets.IntInput for k in ("iters", "pop", "steps", "frames", "bs", "seed")})
    start, stop, resume = (pn.widgets.Button(name=n) for n in ("start", "stop", "resume"))
    status = pn.pane.Markdown("status: **idle**")
    progress = pn.indicators.Progress(value=0, max=model.iters, sizing_mode="stretch_width")
    curve = pn.pane.HoloViews(hv.Curve([], "iteration", "best_loss").opts(width=520, height=260))
    best = pn.pane.Image(None, width=224, height=224)
    population = pn.pane.Image(None, width=320, height=320)

    def safely(action):
        try:
            action()
        except ValueError as exc:
            status.object = f"status: **error** — {exc}"

    start.on_click(lambda e: safely(model.start))
    stop.on_click(lambda e: model.stop())
    resume.on_click(lambda e: safely(model.resume))
    seen = {"n": -1, "status": None, "population": None}

    def refresh():
        if len(model.metrics) != seen["n"]:
            seen["n"] = len(model.metrics)
            rows = model.metrics
            curve.object = hv.Curve([(r["iteration"], r["best_loss"]) for r in rows], "iteration",
                                    "best_loss").opts(width=520, height=260)
            progress.max, progress.value = model.iters, min(len(rows), model.iters)
        if model.population is not None and model.population is not seen["population"]:
            import math

            from PIL import Image

            from workbench.asal.atlas import compose

            seen["population"] = thumbs = model.population
            side = math.ceil(math.sqrt(len(thumbs)))
            population.object = Image.fromarray(compose(thumbs, np.arange(len(thumbs)), side)).resize((320, 320))
        if model.status != seen["status"] or model.error:
            seen["status"] = model.status
            text = f"status: **{model.status}**" + (f" · run `{model.run_id}`" if model.run_id else "")
            status.object = text + (f" — {model.error}" if model.error else "")
            if model.best_thumb is not None:
                from PIL import Image

                best.object = Image.fromarray(model.best_thumb).resize((224, 224), Image.NEAREST)

    pn.state.add_periodic_callback(refresh, period=300)
    return pn.Row(pn.Column("## Search", controls, pn.Row(start, stop, resume), width=340),
                  pn.Column(status, progress, curve, pn.Row(pn.Column("best so far", best),
                                                            pn.Column("latest population", population))))


if __name__.startswith("bokeh"):
    pn.extension(inline=True)
    search_page(sys.argv[1] if len(sys.argv) > 1 else "runs").servable(title="workbench · search")
