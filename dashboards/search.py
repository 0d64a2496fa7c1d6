"""Search: launch an ASAL search in the background, watch its loss and best frame, stop and resume it.

A search belongs to the server, not to the browser tab that started it: it runs on as a `SearchJob` (a thread
of the server's process) when its tab closes, and any Search page opened on it (`/search?run=ID`, the Runs
gallery's link; the page puts its run in the address, so a reload comes back to it) shows its progress live
and can stop it. A run that is not running here (done, stopped, interrupted, or running in another process)
opens from the run store: its curve, best frame and settings, resumable where its status allows.

`SearchModel` holds the settings (the sidebar) and the job on show; the job's thread only writes plain fields,
and the page reads them on a periodic callback (Bokeh documents must be changed from their own thread). Tests
drive the model directly: start(), wait(), stop(), resume(), choose(run_id).
"""

from __future__ import annotations

import sys
import threading
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np
import panel as pn
import param

from workbench.asal.atlas import population_grid
from workbench.asal.driver import INITS, KINDS, SearchConfig, check_new_search, read_config, run_search, starts_random
from workbench.asal.evaluate import EvalConfig
from workbench.compare import POPULATION_METRIC
from workbench.dashboards.shell import (
    as_text,
    cannot_write,
    checked_int_input,
    code,
    every_from_load,
    export_controls,
    in_page_words,
    live,
    placeholder,
    plain,
    run_alert,
    run_asked,
    scrolls,
    section,
    served_location,
    shell,
)
from workbench.fm import weights_for
from workbench.runs import RESUMABLE, Run, RunError, RunStore, a_kind_run, whole_total
from workbench.simulations import SUBSTRATES

ALGORITHM_NAMES = {"cma": "sep-CMA-ES", "ga": "illumination GA", "map-elites": "MAP-Elites", "rule-ga": "GA over rules"}
# Game of Life's θ is one integer rule: every kind of search runs the GA over rules (bit flips) on it
RULE_SUBSTRATES = ("gol",)
#: what the status line says of a run whose metrics do not read (the page's words, in bold there; the reason after it
#: is the library's, as text)
UNREADABLE_CURVE = "cannot read its loss curve"
RULE_NOTE = ("Game of Life: θ is one integer rule (18 bits: births, survivals), searched by a **GA over rules** "
             "(bit flips) for every kind. To rank all 2^18 rules: `workbench asal sweep --substrate gol`.")


class SearchJob:
    """One search as a page shows it: status, progress, metrics rows, best frame, latest population.

    `SearchJob.launch` runs (or resumes) a search on a daemon thread of this process and lists it among the live
    jobs until the thread ends, so a page opened later on the same run (`SearchJob.live`) shares it: the same
    fields, the same stop. A run is resumed by one job at a time: a second resume of it gets the first's job.
    `SearchJob.read` fills the fields once from the run store (a run not running here). Only the job's thread
    writes the fields of a live job."""

    def __init__(self, runs_dir: str, total: int = 0):
        self.runs_dir = str(runs_dir)
        self.status = "idle"
        self.run_id: str | None = None
        self.metrics: list[dict] = []  # replaced by a longer list, never changed in place (diverged counts on that)
        self._counted: tuple[list[dict], int] = (self.metrics, 0)  # the rows `diverged` summed last, and their sum
        self.best_thumb: np.ndarray | None = None
        self.population: np.ndarray | None = None  # the latest evaluated batch's thumbnails in a grid (RGB)
        self.error = ""
        self.algorithm_ran: str | None = None  # read from the run's config: what actually runs, resumes included
        self.kind_ran: str | None = None  # the search kind of the run on show (its curve and frames say it)
        self.done = 0  # iterations the run has done, of `total`
        self.unreadable = ""  # why an opened run's metrics (its loss curve) could not be read, if they could not
        self.total = total
        self.owner: object | None = None  # the page (SearchModel) that started it; others only watch it
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._began = False  # the run reached its set-up (on_start): from then on its own status is the truth

    # ---- the jobs of this process, by run ------------------------------------------------------------------
    _live: dict[tuple[str, str], SearchJob] = {}
    _starting: list[SearchJob] = []  # new searches still loading their models: no run folder, no id yet
    _live_lock = threading.Lock()

    @staticmethod
    def _key(runs_dir: str, run_id: str) -> tuple[str, str]:
        return str(Path(runs_dir).resolve()), run_id

    @classmethod
    def live(cls, runs_dir: str, run_id: str) -> SearchJob | None:
        """The job of this process that is running `run_id` in `runs_dir`, if any."""
        with cls._live_lock:
            job = cls._live.get(cls._key(runs_dir, run_id))
        return job if job is not None and job.running else None

    @classmethod
    def searching(cls, runs_dir: str) -> list[SearchJob]:
        """The jobs of this process searching in `runs_dir`, oldest first: those with a run, then those still
        setting up (no run folder yet)."""
        root = str(Path(runs_dir).resolve())
        with cls._live_lock:
            jobs = [job for (folder, _), job in cls._live.items() if folder == root]
            jobs += [job for job in cls._starting if str(Path(job.runs_dir).resolve()) == root]
        return [job for job in jobs if job.running]

    # ---- making one ------------------------------------------------------------------------------------------
    @classmethod
    def launch(cls, runs_dir: str, cfg: SearchConfig | None, resume: str | None = None,
               shown: SearchJob | None = None, owner: object | None = None, iters: int | None = None) -> SearchJob:
        """Start a new search (cfg) or resume run `resume` (cfg None; its full id) on a background thread for
        `owner` (the page). A run that a job of this process is running already is not resumed twice: that job
        is returned (its owner unchanged). shown: what the page showed of the run (its rows, budget and best frame
        stay on show until the thread has read the run, and when the resume is refused). iters: a resumed run's
        new total (run_search's iters: a finished run goes on to it)."""
        job = cls(runs_dir, total=cfg.iters if cfg is not None else (iters or (shown.total if shown else 0)))
        job.status, job.owner = "running", owner
        job._thread = threading.Thread(target=job._work, args=(cfg, resume, iters), daemon=True)
        if resume is None:
            job.algorithm_ran, job.kind_ran = cfg.algorithm, cfg.kind
            with cls._live_lock:  # found by a page opened meanwhile, before the run has a folder (_started)
                cls._starting.append(job)
            job._thread.start()
            return job
        job.run_id = resume
        if shown is not None and shown.run_id == resume:
            job.algorithm_ran, job.done, job.metrics = shown.algorithm_ran, shown.done, shown.metrics
            job.best_thumb = shown.best_thumb
        key = cls._key(runs_dir, resume)
        with cls._live_lock:  # listed before its thread starts: a second resume finds it
            other = cls._live.get(key)
            if other is not None and other.running:
                return other
            cls._live[key] = job
            job._thread.start()
        return job

    @classmethod
    def running_jobs(cls) -> list[SearchJob]:
        """Every search running in this process (in any run store), those setting up included."""
        with cls._live_lock:
            jobs = [*cls._live.values(), *cls._starting]
        return [job for job in jobs if job.running]

    @classmethod
    def stop_all(cls, jobs: list[SearchJob] | None = None) -> None:
        """Ask every running search (or `jobs`) to stop after its current iteration and wait until they have: what
        the server does as it stops. Their threads are daemons: left running, the interpreter's exit would end
        them inside native code (the process aborted) and their runs would stay marked running."""
        jobs = cls.running_jobs() if jobs is None else jobs
        for job in jobs:
            job.stop()
        for job in jobs:
            job.wait(timeout=None)

    @classmethod
    def read(cls, runs_dir: str, run: Run, info: dict) -> SearchJob:
        """A search run as the store holds it (`info`: its run.json, read once by the caller); RunError for a run
        that is not an ASAL search."""
        if info.get("kind") not in KINDS:
            raise RunError(f"run {run.id} is {a_kind_run(info.get('kind'))}; the Search page "
                           f"opens ASAL searches ({', '.join(KINDS)}): open it from the Runs page"
                           + (" (a sweep's best rule plays on the Lab page)" if info.get("kind") == "sweep" else ""))
        job = cls(runs_dir)
        job._opened(run, info)
        job.status = run.live_status(info)
        job.error = str(info.get("error") or "") if job.status == "failed" else ""
        job.best_thumb = _best_thumb(run.path)
        return job

    # ---- the thread --------------------------------------------------------------------------------------------
    def _work(self, cfg, resume, iters=None) -> None:
        try:
            store = RunStore(self.runs_dir)  # in the try: a folder gone bad since start() is this job's failure
            run = run_search(cfg, store, resume=resume, iters=iters, on_iteration=self._progress,
                             should_stop=self._stop.is_set,
                             on_start=self._started,
                             on_population=lambda thetas, thumbs: setattr(self, "population",
                                                                          population_grid(thumbs)))
            if not self._began:  # a done run asked for no more returns before its set-up: what it holds, read
                self._opened(run)  # (the page showed its id beside the budget of the run shown before)
            self.run_id = run.id
            self.best_thumb = _best_thumb(run.path)
            self.status = run.info["status"]  # last: the page shows the best frame when the status changes
        except Exception as exc:  # noqa: BLE001 - shown on the page; the thread must not die silently
            # a store served read-only: the folder that refused and what to do, not "PermissionError: [Errno 13] …"
            self.error, self.status = cannot_write(exc) or f"{type(exc).__name__}: {exc}", "failed"
            if resume is not None and not self._began:  # refused before it began: the run is as it was
                self.status = _stored_status(self.runs_dir, resume)
        finally:
            with self._live_lock:
                if self in self._starting:  # it failed while setting up
                    self._starting.remove(self)
                if self.run_id is not None and self._live.get(self._key(self.runs_dir, self.run_id)) is self:
                    del self._live[self._key(self.runs_dir, self.run_id)]

    def _started(self, run) -> None:
        self._began = True
        self._opened(run)
        with self._live_lock:
            self._live[self._key(self.runs_dir, run.id)] = self
            if self in self._starting:
                self._starting.remove(self)

    def _opened(self, run, info: dict | None = None) -> None:
        """What the run's folder says (info: its run.json, if read already): its id, algorithm, budget, iterations
        done and (when it has done some) the metrics rows so far, so a resumed or reopened run's curve goes on
        from where it was."""
        info = run.info if info is None else info
        self.run_id = run.id
        try:
            self.algorithm_ran = info["config"].get("algorithm") or self.algorithm_ran
            self.kind_ran = info.get("kind") or self.kind_ran
            self.total = int(info["config"].get("iters", self.total))
            self.done = int(info.get("iterations") or 0)
        except (AttributeError, TypeError, ValueError) as exc:
            raise RunError(f"run {run.id} has a run.json this page cannot read ({type(exc).__name__}: {exc})") from None
        if self.done:
            try:
                # (without iteration or best_loss the page was a traceback on the curve's rows)
                self.metrics = run.metrics_table("iteration", "best_loss").to_pylist()
            except Exception as exc:  # noqa: BLE001 - a damaged or missing table costs the curve, not the run
                self.metrics = []
                # said beside the status: "done, 5 / 5" next to "the curve appears after the first iteration" hid it
                self.unreadable = f"{UNREADABLE_CURVE}: {exc}"
            self.population = _picture(run.path / "population.png")  # the latest, until a resume evaluates more

    def _progress(self, done: int, total: int, row: dict) -> None:
        self.done, self.total = done, total
        self.metrics = [*self.metrics, row]

    # ---- what pages call ----------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def diverged(self) -> int:
        """The run's candidates so far (resumed parts included) whose simulation diverged (NaN or inf): its
        metrics rows' `diverged` summed (as `workbench asal` warns of it). 0 for a run of an older version: no
        such column, and null in the rows it did before a resume by this one. Summed once per list of rows: the
        page asks on every refresh, and a long run has a row an iteration."""
        rows = self.metrics  # read once: the search thread may swap it meanwhile
        counted = self._counted  # read once too: another session's refresh may replace it with an older list's
        if rows is not counted[0]:  # (whole_total: a foreign table's values cost the count, not a refresh's error)
            counted = (rows, whole_total(rows, "diverged"))
            self._counted = counted
        return counted[1]

    def stop(self) -> None:
        """Ask the search to stop after the current iteration (it stays resumable)."""
        self._stop.set()

    def wait(self, timeout: float | None = 600.0) -> str:
        """The job's status once its thread has ended, or after `timeout` seconds (None: no limit)."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.status


def _stored_status(runs_dir: str, run_id: str) -> str:
    try:
        return RunStore(runs_dir).open(run_id).status
    except ValueError:
        return "failed"


def _best_thumb(path: Path) -> np.ndarray | None:
    return _picture(path / "best.png")


def _picture(path: Path) -> np.ndarray | None:
    """An RGB picture of a run's folder, or None when it has none (or one this page cannot read)."""
    if not path.exists():
        return None
    from PIL import Image

    try:
        return np.asarray(Image.open(path).convert("RGB"))
    except (OSError, ValueError):  # cut short by a kill mid-rename cannot happen (atomic); foreign files can
        return None


#: what the page exports for a paper: the run's loss curve, or its best simulation as a strip of frames
EXPORTS = {"loss curve": "curve", "frames of the best simulation": "frames"}


class SearchModel(param.Parameterized):
    """The Search page's state: an ASAL search's settings (those of `workbench asal target|openended|illuminate`),
    the run started, resumed or opened from them, and its progress; start() runs it in a thread of this process,
    stop() / resume() as the CLI's Ctrl-C and --resume."""

    kind = param.Selector(default="openended", objects=["target", "openended", "illuminate"],
                          doc="target: match a prompt or image; openended: novelty along the rollout; illuminate: a "
                              "diverse population")
    algorithm = param.Selector(default="ga", objects=["ga", "map-elites"],
                               doc="illumination only (Game of Life: the GA over rules, every kind)")
    substrate = param.Selector(default="boids", objects=list(SUBSTRATES), doc="the simulation whose θ is searched")
    fm = param.String(default="pixels", label="FM",
                      doc="clip | openclip:ARCH (needs weights) | dino | efficientnet-lite0 | pixels")
    weights = param.String(default="", doc="local weights: a file for clip / openclip, a folder for dino")
    prompt = param.String(default="", doc="target prompt(s), separated by ';'")
    iters = param.Integer(default=20, bounds=(1, None), doc="iterations (generations) of the search")
    pop = param.Integer(default=8, bounds=(2, None),
                        doc="θs simulated per iteration: CMA-ES's population, the GA's children, MAP-Elites' batch")
    steps = param.Integer(default=100, bounds=(1, None), doc="simulation steps of each rollout")
    frames = param.Integer(default=4, bounds=(1, None),
                           doc="frames the FM embeds: the ends of equal chunks of the rollout")
    bs = param.Integer(default=1, bounds=(1, None), label="BS", doc="initial-state seeds averaged per θ")
    target_image = param.String(default="", doc="target image file (instead of a prompt)")
    seed = param.Integer(default=0, bounds=(0, 2 ** 32 - 1),  # NumPy's seeds (the run configs check it too)
                         doc="every random choice of the search: the same seed, the same run")
    init = param.Selector(default="zero", objects=list(INITS),
                          doc="start at θ = 0 (the reference) or at the substrate's random initialisation (--init)")
    runs_dir = param.String(default="runs", doc="the run store the search writes to and the page reads")

    def __init__(self, **params: Any):
        super().__init__(**params)
        self.job = SearchJob(self.runs_dir, total=self.iters)  # the run on show (idle: none yet)
        self.starts = 0  # runs put on show so far (started, resumed or opened): the views clear the one before
        self.notice = ""  # why an opened run's settings are not in the sidebar, if they are not
        self._algorithms_for_substrate()

    @param.depends("substrate", watch=True)
    def _algorithms_for_substrate(self) -> None:
        """The algorithms that search this substrate's θ: the GA over rules for Game of Life, else the illumination
        GA or MAP-Elites (target and open-endedness searches run Sep-CMA-ES)."""
        objects = ["rule-ga"] if self.substrate in RULE_SUBSTRATES else ["ga", "map-elites"]
        if self.param.algorithm.objects != objects:
            self.param.algorithm.objects = objects
            self.algorithm = objects[0]

    @property
    def algorithm_choosable(self) -> bool:
        """Whether the page shows the algorithm choice (illumination runs; Game of Life: every kind)."""
        return self.kind == "illuminate" or self.substrate in RULE_SUBSTRATES

    @property
    def init_choosable(self) -> bool:
        """Whether the substrate has a random initialisation to start from (NCA, discrete NCA, Particle Life+,
        Particle Lenia); the others start at θ = 0."""
        return starts_random(self.substrate)

    @property
    def frames_choosable(self) -> bool:
        """Whether the page shows the frames to embed: an illumination embeds the final state only (K = 1)."""
        return self.kind != "illuminate"

    def config(self) -> SearchConfig:
        """The SearchConfig of the settings (what start() runs); settings a search cannot run are one ValueError."""
        prompts = [p.strip() for p in self.prompt.split(";") if p.strip()]
        # an illumination's K = 1 (its Frames field is hidden): a value left from another kind must not refuse it
        ev = EvalConfig(self.substrate, self.fm, weights=weights_for(self.fm, self.weights or None), steps=self.steps,
                        frames=self.frames if self.frames_choosable else 1, bs=self.bs, chunk=self.pop)
        if self.kind == "illuminate":
            extra = {"population": max(4 * self.pop, 8), "algorithm": self.algorithm}
        else:
            extra = {"prompts": prompts, "target_image": self.target_image or None}
            if self.substrate in RULE_SUBSTRATES:
                extra["algorithm"] = "rule-ga"
        init = self.init if self.init_choosable else "zero"
        return SearchConfig(kind=self.kind, eval=ev, iters=self.iters, pop=self.pop, seed=self.seed, init=init,
                            **extra)

    # ---- the run on show (its job's fields) ---------------------------------------------------------------------
    status = property(lambda self: self.job.status,
                      doc="The run's status: 'idle' before any, else 'running', 'done', 'stopped', 'failed', …")
    run_id = property(lambda self: self.job.run_id, doc="The run's id (None: no run yet).")
    metrics = property(lambda self: self.job.metrics, doc="The run's metrics rows, one dict per iteration.")
    best_thumb = property(lambda self: self.job.best_thumb,
                          doc="The run's best frame (best.png) as an RGB array; None while it has none.")
    population = property(lambda self: self.job.population,
                          doc="The latest evaluated batch's thumbnails in one grid (RGB); None before the first.")
    error = property(lambda self: self.job.error, doc="Why the run failed ('' unless it did).")
    algorithm_ran = property(lambda self: self.job.algorithm_ran,
                             doc="The algorithm the run runs, read from its config (None until known).")
    kind_ran = property(lambda self: self.job.kind_ran,
                        doc="The run's search kind: target, openended or illuminate (None until known).")
    done = property(lambda self: self.job.done, doc="The iterations the run has done, of `total`.")
    diverged = property(lambda self: self.job.diverged,
                        doc="The run's candidates so far whose simulation diverged (NaN or inf): ranked last.")

    @property
    def total(self) -> int:
        """The iterations of the run on show; before any (an idle page), the Iters the next start will run."""
        return self.job.total if self.job.run_id or self.job.status != "idle" else self.iters

    @property
    def running(self) -> bool:
        """Whether the search on show is running (this page's, or another page's that it watches)."""
        return self.job.running

    @property
    def busy(self) -> bool:
        """Whether a search this page started is running: it must be stopped before the page starts or opens
        another. A search the page only watches (opened, or followed) holds nothing up: it runs on if the page
        moves to another run."""
        return self.job.running and self.job.owner is self

    @property
    def resumable(self) -> bool:
        """Whether the run on show can be resumed: stopped, interrupted or failed, or finished with the sidebar's
        iterations above its own (it goes on to them: goes_on), and not running here."""
        return not self.running and self.run_id is not None and (self.status in RESUMABLE or self.goes_on)

    @property
    def goes_on(self) -> bool:
        """Whether resume() takes the finished run on show on to the sidebar's iterations (more than it did)."""
        return self.status == "done" and self.run_id is not None and self.iters > self.job.total

    def start(self, resume: str | None = None, iters: int | None = None) -> None:
        """Start a new search (or resume run `resume`, to `iters` in all where given) on a background thread. A
        run that another page of this process is resuming already is not resumed twice: this page shows that
        search."""
        if self.busy:
            raise ValueError("a search is already running; stop it first")
        store = RunStore(self.runs_dir)  # a runs path that is not a folder is refused here, before any thread
        if resume:
            resume = store.open(resume).id
        cfg = None if resume else self.config()  # bad settings raise here, in the caller's thread
        if cfg is not None:
            check_new_search(cfg)
        self.job = SearchJob.launch(self.runs_dir, cfg, resume, shown=self.job, owner=self, iters=iters)
        self.starts += 1  # the page's views clear what they show of the run before
        self.notice = ""

    def watch(self, job: SearchJob) -> None:
        """Show a search of this process that another page started (live: its progress, its stop), also one still
        setting up, whose run has no folder yet."""
        self.job = job
        self.starts += 1
        self.notice = ""

    def follow(self) -> bool:
        """If another page of this process has resumed the run on show since, show that search (live, stop
        included) instead of the run as it was; True when it did. The page calls it on every refresh."""
        if self.run_id is None or self.running:
            return False
        job = SearchJob.live(self.runs_dir, self.run_id)
        if job is None or job is self.job:
            return False
        self.job = job
        self.starts += 1
        return True

    def choose(self, run_id: str) -> None:
        """Put run `run_id` (an id or a unique prefix) on show: the search running it in this process if there is
        one (its progress live, stop included), else the run as the store holds it, with its settings in the
        sidebar (resumable when stopped, interrupted or failed). ValueError: no such run, or not an ASAL search."""
        if self.busy:
            raise ValueError("a search is running on this page; stop it before opening another run")
        run = RunStore(self.runs_dir).open(run_id)
        info = run.info
        job = SearchJob.live(self.runs_dir, run.id) or SearchJob.read(self.runs_dir, run, info)
        self.job = job
        self.starts += 1
        self.notice = " ".join(text for text in (self._settings_of(run, info), job.unreadable) if text)

    SETTINGS = ("kind", "substrate", "algorithm", "fm", "weights", "prompt", "target_image", "iters", "pop", "steps",
                "frames", "bs", "seed", "init")

    def _settings_of(self, run, info: dict) -> str:
        """Put the run's settings in the sidebar's fields, so that start runs a search like it (with a new id).
        Only the fields the sidebar has: the population, σ and the others of a CLI run take the page's values.
        Returns "" or why the fields could not take them (they then keep what they had)."""
        try:
            cfg = read_config(info["config"])
            copy = run.input_path("target_image")  # the run's own copy of its target image
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            return f"its settings are not in the sidebar: this version cannot read them ({exc})"
        ev = cfg.eval
        values = {"kind": cfg.kind, "fm": ev.fm, "weights": ev.weights or "", "prompt": "; ".join(cfg.prompts),
                  "target_image": str(copy) if copy else "", "iters": cfg.iters, "pop": cfg.pop, "steps": ev.steps,
                  "frames": ev.frames, "bs": ev.bs, "seed": cfg.seed, "init": cfg.init}
        before = {name: getattr(self, name) for name in self.SETTINGS}
        try:
            self.param.update(substrate=ev.substrate)  # first: it sets the algorithms to choose from
            if cfg.algorithm in self.param.algorithm.objects:
                values["algorithm"] = cfg.algorithm
            self.param.update(**values)
        except ValueError as exc:
            self.param.update(substrate=before.pop("substrate"))
            self.param.update(**before)
            return f"its settings are not in the sidebar, which cannot take them ({exc})"
        return ""

    @property
    def algorithm_name(self) -> str:
        """The algorithm of the run on show (not the illumination selector when another kind runs)."""
        return ALGORITHM_NAMES.get(self.algorithm_ran or "", self.algorithm_ran or "–")

    def progress_text(self) -> str:
        """The run's progress as text: "done / total iterations"."""
        return f"{self.done} / {self.total} iterations"

    def diverged_text(self) -> str:
        """What the status line says of the run's diverged candidates (Markdown): "" where none diverged, or the
        run is of a version that did not count them. A search that lost members to blow-ups searched less than
        its budget says, and a picture of its curve alone does not show it."""
        n = self.diverged
        if not n:
            return ""
        return f"**{n}** candidate{'s' if n != 1 else ''} diverged (NaN or inf in a simulation): ranked last"

    def stop(self) -> None:
        """Ask the search on show to stop after the current iteration (it stays resumable)."""
        self.job.stop()

    def resume(self) -> None:
        """Resume the run on show: a stopped, interrupted or failed one to its own total (the sidebar's iterations
        may be meant for the next new run), a finished one on to the sidebar's iterations where they are more
        (goes_on; the button then says so)."""
        if not self.run_id:
            raise ValueError("no run to resume yet")
        self.start(resume=self.run_id, iters=self.iters if self.goes_on else None)

    def export(self, what: str, suffix: str = ".png", width: float | None = None, font: str | None = None,
               rename: dict[str, str] | None = None) -> Path:
        """The run on show as a paper figure, in its figures/ folder as RUN-<what>.<suffix>, written as `workbench
        figure curves|frames` write it: its loss curve ("curve", figures.loss_curves) or its best simulation as a
        strip of the frames its search scored ("frames", figures.frames: once the run has finished with a best θ);
        at figures.save's width (inches), font and legend names (rename). ValueError, saying why, where there is
        nothing to export."""
        from workbench.figures import PICTURES, export_suffix, frames, loss_curves, refuse_csv, save

        if what not in EXPORTS.values():
            raise ValueError(f"export one of {', '.join(EXPORTS.values())}, got {what!r}")
        suffix = export_suffix(suffix)
        run_id = self.job.run_id
        if run_id is None:
            raise ValueError("no run on show: start a search or open one (the Runs page links them here)")
        store = RunStore(self.runs_dir)
        if what == "curve":
            if not self.metrics:
                raise ValueError(f"run {run_id} has no iteration yet")
            figure = loss_curves(store, [run_id])
        else:  # its pixels in whole blocks for the printed size; an .html page shows its own
            refuse_csv(PICTURES["frames"], suffix)  # before the simulation renders
            figure = frames(store, run_id, width=width, upscale=suffix != ".html")
        out = store.root / run_id / "figures" / f"{run_id}-{what}{suffix}"
        out.parent.mkdir(parents=True, exist_ok=True)
        return save(figure, out, width=width, font=font, rename=rename)

    def wait(self, timeout: float = 600.0) -> str:
        """The run's status once its search thread has ended, or after `timeout` seconds (SearchJob.wait)."""
        return self.job.wait(timeout)


#: the sidebar's fields by the command-line flags the library's messages name: each setting's label (the flag is
#: the setting's name), the start's menu called "Start" on the page
FIELDS = {**{f"--{name.replace('_', '-')}": p.label for name, p in SearchModel.param.objects().items()
             if name not in ("name", "runs_dir")}, "--init": "Start"}


#: where a finished illumination's best frame would be (SearchViews.atlas_note)
ATLAS_NOTE = "an illumination keeps a population, not one best frame"


class SearchViews:
    """What the Search page shows of a SearchModel: status, progress, the loss curve, the best frame and the
    latest population. The views are made once and then only fed by refresh(), which the page calls every
    300 ms: a running search updates the curve's data, not a new figure, and the images' pixels, not new panes.
    (A new Bokeh figure per iteration kept the browser so busy laying out the page that, on a loaded machine,
    the stop button did not answer a click.) A new search clears what the views showed of the one before."""

    CURVE_HINT = "the loss curve appears after the first iteration"
    BEST_HINT = "the best frame appears when the run ends (an illumination keeps a population: see its Atlas)"
    POPULATION_HINT = "thumbnails of each evaluated population"

    def __init__(self, model: SearchModel, location=None):
        import holoviews as hv

        from workbench.figures import holoviews, whole_numbers

        holoviews()
        self.model = model
        self.location = location  # the page's address (pn.state.location), served: it gets ?run=ID of the run on show
        self.start = pn.widgets.Button(label="start", color="primary", sizing_mode="stretch_width")
        self.stop = pn.widgets.Button(label="stop", color="warning", sizing_mode="stretch_width", disabled=True)
        self.resume = pn.widgets.Button(label="resume", sizing_mode="stretch_width", disabled=True)
        self.status = live(pn.pane.Markdown("status: **idle**", sizing_mode="stretch_width", margin=(0, 10)))
        self.spinner = pn.indicators.LoadingSpinner(value=False, size=24, margin=(12, 0, 0, 10), color="primary",
                                                    visible=False)
        self.progress = pn.indicators.Progress(label="search progress", value=0, max=model.iters,
                                               sizing_mode="stretch_width",
                                               bar_color="primary", margin=(0, 10))
        self.count = live(pn.pane.Markdown(model.progress_text(), margin=(0, 10), width=200))  # names the bar
        self.losses = hv.streams.Pipe(data=[])
        def curve(data):
            # an illumination's loss is its population's (or archive's) at each iteration, not a best so far: it
            # can rise (the page said "best loss so far" of it); named as `figure curves` names it
            population = self.model.kind_ran == "illuminate"
            loss = hv.Dimension("loss", label=POPULATION_METRIC if population else "best loss")
            title = "illumination loss per iteration" if population else "best loss so far"
            return whole_numbers(hv.Curve(data, "iteration", loss).opts(
                width=520, height=280, title=title, color="#2f5d8a", line_width=2, tools=["hover"], toolbar=None,
                framewise=True, backend="bokeh"))

        loss_curve = hv.DynamicMap(curve, streams=[self.losses])
        self.loss_curve = pn.pane.HoloViews(loss_curve, backend="bokeh")
        # said to a screen reader too (the pictures had no alt text)
        self.population_image = pn.pane.Image(None, width=280, height=280,
                                              alt_text="the latest population: a thumbnail of each simulation")
        self.best_image = pn.pane.Image(None, width=224, height=224,
                                        alt_text="the best simulation's frame so far")
        self.curve = scrolls(placeholder(self.CURVE_HINT, 520, 280))
        self.best = pn.Column(placeholder(self.BEST_HINT, 224, 224))
        self.population = pn.Column(placeholder(self.POPULATION_HINT, 280, 280))
        self._seen = {"starts": 0, "n": -1, "status": None, "population": None, "done": -1, "run_id": None}

    def _address(self, run_id: str | None) -> None:
        """?run=ID of the run on show, so a reload, a bookmark or a link come back to it; none while a new search
        has no id yet (and for good when it failed before it had one: a reload then opens a fresh page, not the
        run shown before)."""
        if run_id:
            self.location.update_query(run=run_id)
        elif "run" in self.location.query_params:
            rest = {k: v for k, v in self.location.query_params.items() if k != "run"}
            self.location.search = "?" + urllib.parse.urlencode(rest) if rest else ""

    def _addressed(self) -> str | None:
        """The run the address names (?run=), as a text: as the browser last reported it or the page last set it."""
        return dict(urllib.parse.parse_qsl(self.location.search.lstrip("?"))).get("run")

    @staticmethod
    def atlas_note(run_id: str) -> pn.pane.HTML:
        """The best frame's place for a finished illumination, which keeps a population, not one best: a link to
        its Atlas."""
        atlas = f"./atlas?run={urllib.parse.quote(run_id, safe='')}"
        return placeholder(ATLAS_NOTE, 224, 224, link=f': <a href="{atlas}">see it in the Atlas</a>')

    def shows(self, view: pn.Column) -> bool:
        """Whether a view (curve, best, population) shows a run's data rather than its placeholder."""
        if view is self.curve:
            return view[0] is self.loss_curve and bool(self.losses.data)
        return view[0] is self.best_image or view[0] is self.population_image

    def _clear(self) -> None:
        """Nothing of the run before: its best frame and population give way to the placeholders, and its
        curve to empty axes (the figure stays in the page, to be fed again: a figure taken out and put back
        is a new Bokeh figure, which the browser lays out anew)."""
        self.losses.send([])
        self.best[:] = [placeholder(self.BEST_HINT, 224, 224)]
        self.population[:] = [placeholder(self.POPULATION_HINT, 280, 280)]
        self._seen.update(n=-1, population=None, status=None, done=-1)

    def note(self, text: str) -> None:
        """A note in the status line (a field's refused value) until the next status; "": the status again."""
        if text:
            self.status.object = f"status: {text}"
        else:
            self._seen["status"] = None  # the next refresh writes the status line anew

    def safely(self, action) -> None:
        """Run a button's action; a ValueError (bad settings, nothing to resume) shows in the status line, in the
        page's words (the library's name the command line's flags: "needs --prompt TEXT")."""
        try:
            action()
        except ValueError as exc:
            self.status.object = f"status: **error** — {in_page_words(plain(str(exc)), FIELDS)}"

    def feed(self, period_ms: int = 300) -> None:
        """Refresh the views now, and every `period_ms` once the browser has loaded the page (shell.every_from_load
        says why: a finished run's curve, best frame and population, fed once, kept their placeholders).

        Now: for the page's first look to be in the document the browser pulls (a first refresh at the load wrote
        the status line over a note the user had caused already: a refused number typed at once)."""
        self.refresh()
        every_from_load(self.refresh, period_ms)

    def refresh(self) -> None:
        from PIL import Image

        model, seen = self.model, self._seen
        model.follow()  # another tab resumed the run on show: its search, live
        if model.starts != seen["starts"]:
            seen["starts"] = model.starts
            self._clear()
        running = model.running
        self.spinner.value = self.spinner.visible = running
        self.start.disabled, self.stop.disabled = model.busy, not running
        self.resume.disabled = not model.resumable
        self.resume.name = f"go on to {model.iters}" if model.goes_on else "resume"
        # the run on show goes back in the address whenever the address lacks it, not only when the run changes: the
        # browser's first report of its address (/search, opened from the menu) could come after the first refresh
        # and took out the ?run=ID written for a run on show from the start (the search this server runs)
        run_id = model.run_id
        if self.location is not None and (run_id != seen["run_id"] or (run_id and self._addressed() != run_id)):
            self._address(run_id)
        seen["run_id"] = run_id
        if (model.done, model.total) != (seen["done"], self.progress.max):
            seen["done"] = model.done
            self.progress.max, self.progress.value = max(model.total, 1), min(model.done, model.total)
            self.count.object = model.progress_text()
        rows = model.metrics
        if len(rows) != seen["n"]:
            seen["n"] = len(rows)
            if rows:
                # at most CURVE_POINTS of a long run's rows (each step of the best so far, its extremes): a 50 000-
                # iteration search sent all 50 000 on every refresh of the page
                from workbench.figures import curve_rows

                kept = curve_rows([r["best_loss"] for r in rows])
                self.losses.send([(rows[i]["iteration"], rows[i]["best_loss"]) for i in kept])
                if self.curve[0] is not self.loss_curve:
                    self.curve[:] = [self.loss_curve]
        grid = model.population  # read once: the search thread may swap it meanwhile
        if grid is not None and grid is not seen["population"]:
            seen["population"] = grid
            height = max(1, round(280 * grid.shape[0] / grid.shape[1]))
            self.population_image.object = Image.fromarray(grid).resize((280, height))
            self.population_image.height = height
            if self.population[0] is not self.population_image:
                self.population[:] = [self.population_image]
        # when the status line's words change, not on every refresh while there is an error: that wrote over a note
        # (a refused number) at once and sent the best frame to the browser anew every 300 ms. The run's id and
        # algorithm are words of it too: a new search gets its id after it starts, its status still "running"; and
        # its diverged candidates, counted up while it runs
        line = (model.status, model.error, model.notice, model.run_id, model.algorithm_name, model.diverged)
        if line != seen["status"]:
            seen["status"] = line
            parts = [f"status: **{model.status}**"]
            if model.status == "running" and not running:
                parts[0] += " (not in this server: shown as it was when opened)"
            if model.run_id:
                parts.append(as_text(f"run {code(model.run_id)}"))
            if model.algorithm_ran:
                parts.append(f"algorithm **{model.algorithm_name}**")
            if diverged := model.diverged_text():  # live: the count goes up with the iterations that lose members
                parts.append(diverged)
            # the notes are text (a run's folder, an exception's words); only the page's own words are in bold
            bold = UNREADABLE_CURVE.replace("cannot read", "**cannot read**")
            notes = [plain(text).replace(UNREADABLE_CURVE, bold, 1) for text in (model.error, model.notice) if text]
            self.status.object = " · ".join(parts) + "".join(f" — {text}" for text in notes)
            if model.best_thumb is not None:
                self.best_image.object = Image.fromarray(model.best_thumb).resize((224, 224), Image.NEAREST)
                if self.best[0] is not self.best_image:
                    self.best[:] = [self.best_image]
            elif model.status == "done" and model.kind_ran == "illuminate" and model.run_id:
                # done, and no best frame coming: it said "appears when the run ends" beside "status: done"
                self.best[:] = [self.atlas_note(model.run_id)]


def search_page(runs_dir: str = "runs", model: SearchModel | None = None, run: str | None = None,
                standalone: bool = False) -> pn.template.FastListTemplate:
    """The Search page; `run` (or the address's ?run=ID) opens that run: live when it runs in this server."""
    model = model or SearchModel(runs_dir=runs_dir)
    # an empty ?run= asks for nothing (run_alert reads it alike): the search this server runs, as from the menu
    asked = run or run_asked(pn.state.session_args, model.runs_dir)
    running = SearchJob.searching(model.runs_dir)
    if not asked and running:  # the page opened from the menu while this server searches: that search, live
        if running[-1].run_id:
            run = running[-1].run_id  # as its ?run=ID opens it: its settings in the sidebar too
        else:
            model.watch(running[-1])  # still setting up: no run folder to read settings from yet
    alert = run_alert(model, run)
    kind = pn.widgets.RadioButtonGroup.from_param(model.param.kind, sizing_mode="stretch_width",
                                                  color="primary", variant="outline")
    # not from_param: the options carry the algorithms' names, and they change with the substrate
    algorithm = pn.widgets.Select(label="Algorithm", value=model.algorithm, sizing_mode="stretch_width",
                                  options={ALGORITHM_NAMES[a]: a for a in model.param.algorithm.objects})
    algorithm.param.watch(lambda e: setattr(model, "algorithm", e.new) if e.new else None, "value")
    rule_note = pn.pane.Markdown(RULE_NOTE, sizing_mode="stretch_width", margin=(0, 10))
    text = {name: pn.widgets.TextInput.from_param(getattr(model.param, name), sizing_mode="stretch_width")
            for name in ("fm", "weights", "prompt", "target_image")}
    substrate = pn.widgets.Select.from_param(model.param.substrate, sizing_mode="stretch_width")
    init = pn.widgets.Select(label="Start", value=model.init, sizing_mode="stretch_width",
                             options={"θ = 0 (the reference)": "zero", "random initialisation": "random"})
    init.param.watch(lambda e: setattr(model, "init", e.new), "value")

    def algorithm_follows(*_):  # choose() sets the model's settings: the two plain Selects follow them
        algorithm.options = {ALGORITHM_NAMES[a]: a for a in model.param.algorithm.objects}
        algorithm.value = model.algorithm
    model.param.watch(algorithm_follows, "algorithm")
    model.param.watch(lambda e: setattr(init, "value", e.new), "init")

    def show_for_kind(*_):
        algorithm_follows()
        algorithm.visible = model.algorithm_choosable
        rule_note.visible = model.substrate in RULE_SUBSTRATES
        init.visible = model.init_choosable
        text["prompt"].visible = text["target_image"].visible = model.kind == "target"

    model.param.watch(show_for_kind, ["kind", "substrate"])
    show_for_kind()
    views = SearchViews(model, served_location())
    views.start.on_click(lambda e: views.safely(model.start))
    views.stop.on_click(lambda e: model.stop())
    views.resume.on_click(lambda e: views.safely(model.resume))

    def refused(why: str) -> None:
        views.note(f"**not taken** — {plain(why)}" if why else "")

    w = {name: checked_int_input(model, name, refused, sizing_mode="stretch_width")
         for name in ("iters", "pop", "steps", "frames", "bs", "seed")}

    def frames_for_kind(*_):
        w["frames"].visible = model.frames_choosable

    model.param.watch(frames_for_kind, "kind")
    frames_for_kind()
    figure = pn.widgets.Select(label="Figure", options=EXPORTS, value="curve", sizing_mode="stretch_width")
    fmt, size, export, exported, download = export_controls(
        lambda suffix, **printed: model.export(figure.value, suffix, **printed))
    views.feed()
    sidebar = [section("What to search"), kind, substrate, rule_note, algorithm, init, text["fm"], text["weights"],
               text["prompt"], text["target_image"], section("Budget"), pn.Row(w["iters"], w["pop"]),
               pn.Row(w["steps"], w["frames"]), pn.Row(w["bs"], w["seed"]),
               section("Run"), pn.Row(views.start, views.stop, views.resume, sizing_mode="stretch_width"),
               section("Export for a paper"), figure, fmt, size, export, exported, download]
    main = [alert, pn.Row(views.spinner, views.status, sizing_mode="stretch_width"),
            pn.Row(views.progress, views.count, sizing_mode="stretch_width"),
            pn.FlexBox(views.curve, pn.Column(pn.pane.Markdown("**best so far**"), views.best),
                       pn.Column(pn.pane.Markdown("**latest population**"), views.population))]
    return shell("search", main, sidebar, standalone=standalone)


if __name__.startswith("bokeh"):
    pn.extension(inline=True, notifications=True)  # Notyf: shell.connection_notice
    search_page(sys.argv[1] if len(sys.argv) > 1 else "runs", standalone=True).servable()  # titled by the shell
