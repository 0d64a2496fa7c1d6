"""NAMM explorer: type a prompt, run it through a causal LM whose KV cache a policy evicts every n_up tokens
(NAMM with a θ of zeros, a random one or a trained run's; or a baseline), and watch the cache evolve.

`NAMMExplorer` holds the choices and the trace of the last run (workbench.namm.trace computes what every view
shows); the views are functions of it, each one exportable as a paper figure. `panel serve dashboards/namm.py
--args RUNS_DIR` or `workbench serve` (page /namm; ?run=ID opens a trained "namm" run's policy) shows it.
"""

from __future__ import annotations

import hashlib
import html
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import panel as pn
import param

from workbench.checks import shell_path, user_path
from workbench.dashboards.shell import ROW_WIDTH, code, literal, plain, scrolls
from workbench.figures import PICTURE_ROW, colours_for, export_suffix, holoviews, whole_numbers
from workbench.namm import trace as tr

if TYPE_CHECKING:
    import pandas as pd
    from holoviews.core.dimension import Dimensioned
    from transformers import PretrainedConfig

    from workbench.namm.policy import EvictionPolicy

VIEWS = {"retention": "Retention", "sizes": "Cache size", "spectrogram": "Spectrogram / EMA",
         "scores": "Scores", "text": "Text", "sweep": "Score vs cache"}
MODELS = {"tiny (random Llama, instant)": tr.TINY, "SmolLM2-135M-Instruct": "smollm2"}
COLORS = {tr.NOT_YET: "#eef1f4", tr.EVICTED: "#d98b80", tr.KEPT: "#2f5d8a", tr.FILL: "#f0a63a"}
DEFAULT_PROMPT = ("The passkey is 71432. Remember it. The grass is green. The sky is blue. The sun is yellow. "
                  "Here we go. There and back again. The grass is green. The sky is blue. The sun is yellow. "
                  "What is the passkey? The passkey is")


def shown(name: str) -> str:
    """A method or policy as a figure names it: "namm (cap 50%)" -> "NAMM (cap 50%)", "h2o 32+32" -> "H2O 32+32",
    "full" -> "full cache", "kvpress:snapkv" -> "snapkv (kvpress)" (the data keep their own names)."""
    head, _, rest = str(name).partition(" ")
    if head.startswith("kvpress:"):
        return f"{head.removeprefix('kvpress:')} (kvpress)" + (f" {rest}" if rest else "")
    head = {"namm": "NAMM", "h2o": "H2O", "full": "full cache"}.get(head, head)
    return f"{head} {rest}" if rest else head


#: The spectrogram's and EMA features' frequency bins (0 … 16) are whole numbers.
BIN_TICKS = [0, 4, 8, 12, 16]


def _style(obj, **opts):
    """Options for both backends (the page draws with Bokeh, paper figures with matplotlib)."""
    common = {k: v for k, v in opts.items() if k not in ("width", "height", "tools", "fig_inches")}
    out = obj.opts(**common, backend="matplotlib")
    return out.opts(**{k: v for k, v in opts.items() if k != "fig_inches"}, backend="bokeh")


def _side_by_side(hv, panels: list):
    """One panel as it is; two in a row, with room between them in a paper figure for the left one's colorbar
    label and the right one's axis label (they overlapped)."""
    if len(panels) == 1:
        return panels[0]
    return hv.Layout(panels).opts(shared_axes=False).opts(hspace=0.6, backend="matplotlib").cols(2)


def raster_hover(n_layers: int, n_heads: int):
    """The retention raster's hover: the token, the layer and KV head of the row (row 0, layer 0 head 0, is drawn
    at the top) and the state by name — what `pick` reads from a click."""
    from bokeh.models import CustomJSHover, HoverTool

    rows = n_layers * n_heads
    where = CustomJSHover(args={"rows": rows, "heads": n_heads}, code="""
        const row = rows - 1 - Math.round(value);
        if (row < 0 || row >= rows) return "";
        return "L" + Math.floor(row / heads) + " · head " + (row % heads);""")
    names = [tr.CODES[c] for c in sorted(tr.CODES)]
    state = CustomJSHover(args={"names": names}, code="return names[Math.round(value)] ?? '';")
    return HoverTool(tooltips=[("token", "$x{0}"), ("layer · KV head", "$y{custom}"), ("state", "@image{custom}")],
                     formatters={"$y": where, "@image": state})


@dataclass(frozen=True)
class Recipe:
    """What makes a trace, as the settings were when run was pressed (they may change while it runs, and after):
    the model, n_up, the policy's name for export files (`policy_source`) and for the sweep (None: a baseline,
    which the sweep draws anyway) and `make(config)`, a fresh policy. The sweep compares on the recipe of the
    trace on show (it took the settings of the moment: another model's vocabulary crashed it, another n_up or θ
    was plotted as this trace's)."""

    model_name: str
    n_up: int
    source: str
    sweep_name: str | None
    make: Callable


class NAMMExplorer(param.Parameterized):
    """The explorer's state: what to run, and which step / layer / head / token the views show."""

    runs_dir = param.String(default="runs", doc="the run store whose namm runs θ may name")
    model_name = param.String(default=tr.TINY, doc="tiny, smollm2 or a Hugging Face model folder")
    policy = param.Selector(default="namm", objects=list(tr.POLICIES),
                            doc="namm (θ's policy), full (no eviction), recent (a window and sinks) or h2o")
    theta = param.String(default="random", doc="zeros (keeps all), random, or the id of a namm run")
    seed = param.Integer(default=0, bounds=(0, 2 ** 32 - 1), doc="seed of a random θ; the test prompt use_task picks")
    scale = param.Number(default=0.065, bounds=(0, None), doc="σ of a random θ")
    strict = param.Boolean(default=False, doc="NAMM's strict-per-head variant (fill tokens masked)")
    budget = param.Integer(default=64, bounds=(2, None), doc="tokens a baseline keeps")
    n_up = param.Selector(default=32, objects=[16, 32, 64, 128], doc="tokens between two eviction steps")
    max_new_tokens = param.Integer(default=16, bounds=(0, 512), doc="tokens generated after the prompt")
    prompt = param.String(default=DEFAULT_PROMPT, doc="the text run through the model")
    chat = param.Boolean(default=True, doc="wrap the prompt in the chat template (when the model has one)")
    step = param.Integer(default=0, bounds=(0, None), doc="eviction step on show (index)")
    layer = param.Integer(default=-1, doc="layer of the text and score views (-1: all); the spectrogram's is ≥ 0")
    head = param.Integer(default=-1, doc="KV head of the text view (-1: all); the spectrogram's is ≥ 0")
    token = param.Integer(default=0, bounds=(0, None),  # the trace's tokens once one is on show (show)
                          doc="token position of the spectrogram view")
    view = param.Selector(default="retention", objects=list(VIEWS), doc="the view on show, which export writes")
    results = param.String(default="", doc="a JSON of eval / bench rows (method, score, kept); default: the run's")
    version = param.Integer(default=0, doc="bumped when a new trace or sweep is on show")

    def __init__(self, **params: Any):
        super().__init__(**params)
        self.trace: tr.Trace | None = None
        self.ran: Recipe | None = None  # what made the trace on show (export names, the sweep)
        self.sweep_rows = None  # DataFrame of agreement_sweep
        self.message = ""

    # ---- running -----------------------------------------------------------------------------------------
    def theta_choices(self) -> list[str]:
        """The θ the settings can name: "zeros", "random" and runs_dir's namm runs that hold a policy, oldest first."""
        return ["zeros", "random", *tr.namm_runs(self.runs_dir)]

    def choose(self, run_id: str) -> None:
        """Open a trained namm run's policy (the page's ?run=ID), at the settings it was trained at (adopt_run)."""
        if run_id not in tr.namm_runs(self.runs_dir):
            raise ValueError(self._why_not(run_id))
        policy, self.policy = self.policy, "namm"
        try:
            if self.theta == run_id:
                self.adopt_run()
            else:
                self.theta = run_id  # adopt_run follows
        except ValueError:
            self.policy = policy  # a run refused leaves the policy as it was
            raise

    def _why_not(self, run_id: str) -> str:
        """Why `run_id` has no policy to open: no such run, a run of another kind, or a namm run that has saved
        none yet (it saves one after its first generation: stopped or failed before, it resumes)."""
        from workbench.runs import Run, RunError, a_kind_run, is_run_name

        run = Run(Path(self.runs_dir) / run_id)
        try:  # a run of the store only: ?run=../elsewhere or a path read the run.json it named, and said its kind
            info = run.info if is_run_name(run_id) else None
        except RunError as exc:
            if (run.path / "run.json").exists():  # a run whose run.json does not read (a kind of 5): why, and the fix
                return f"{exc}; the NAMM page cannot open it"  # ("is no run in DIR (0 there)" was wrong of it)
            info = None
        if info is None:  # the count: the namm runs here that the page opens (those that saved a policy)
            return (f"{run_id!r} is no run in {self.runs_dir}: the NAMM page opens runs of `workbench namm train` "
                    f"({len(tr.namm_runs(self.runs_dir))} there)")
        if info.get("kind") != "namm":
            return (f"run {run_id} is {a_kind_run(info.get('kind'))}, not a namm run: the NAMM page opens runs of "
                    "`workbench namm train`")
        return (f"namm run {run_id} has saved no policy yet (status {run.live_status(info)}): it saves one after its "
                f"first generation; `workbench namm train --resume {run_id} --runs {shell_path(self.runs_dir)}` "
                "goes on")

    _adopted = "random"  # the θ of the last run adopted (the default before any): a refused one goes back to it

    @param.depends("theta", watch=True, on_init=True)
    def adopt_run(self) -> None:
        """A trained run as θ (chosen, or picked in the θ menu) brings what it was trained at: its n_up (any
        multiple of 16 `namm train` takes: a menu lacking it gains it), its model (its statistics were collected
        there) and its strict variant. Each can be changed afterwards. A broken policy file, or a model that is
        not there: one ValueError, and the θ chosen before is chosen again, nothing of the run taken (it was left
        chosen, its policy then drawn on a model it was not trained on)."""
        from workbench.namm.cache import check_n_up

        try:
            saved = self.saved()
            if saved is None:  # zeros or random: nothing trained
                self._adopted = self.theta
                return
            trained_on = str(saved.meta.get("model") or "")
            model = self._trained_model(trained_on) if trained_on else None  # refused before anything changes
        except ValueError:
            with param.discard_events(self):
                self.theta = self._adopted
            raise
        try:
            n_up = check_n_up(saved.meta.get("n_up"))
        except ValueError:  # a policy file without one (or a broken one): the menu's stays
            n_up = None
        if n_up is not None:
            if n_up not in self.param.n_up.objects:  # this explorer's menu only (a parameter per instance)
                self.param.n_up.objects = sorted({*self.param.n_up.objects, n_up})
            self.n_up = n_up
        if model is not None:
            self.model_name = model
        self.strict = saved.strict
        self._adopted = self.theta

    def _trained_model(self, trained_on: str) -> str:
        """The model a run's policy was trained on, as this page loads it: a model file or folder (`namm train`
        records its absolute path; a relative one from older runs is taken from here), else a model's name. One
        that is neither: ValueError (the page drew the policy on its default model, which it was never trained
        on, without a word)."""
        if trained_on in MODELS.values():  # a name first, as `namm train` keeps "smollm2" one
            return trained_on
        path = user_path(trained_on)
        if path.exists():
            return str(path.absolute())
        from workbench.runs import Run

        run = Run(Path(self.runs_dir) / self.theta)
        raise ValueError(f"run {self.theta} was trained on the model {trained_on}, which is not there (moved or "
                         "deleted?): its θ and feature statistics belong to that model; put the model back there "
                         f"to open the run, or record where it is now with `{run.resume_cli} --model PATH`")

    def use_task(self, task: str, length: int = 256) -> str:
        """Put test prompt `seed` of a NAMM task (passkey, kv, …) at about `length` tokens in the prompt box; the
        text carries its chat template already. Returns the expected answer. A length that is not a number from
        32 to the model's window raises ValueError (100 000 made a prompt no run could take, and sent it all)."""
        if isinstance(length, bool) or not isinstance(length, int) or length < 32:
            raise ValueError(f"task prompt tokens must be a whole number of at least 32, got {length!r}")
        model, tok = tr.explorer_model(self.model_name)
        window = getattr(model.config.get_text_config(decoder=True), "max_position_embeddings", None)
        if window is not None and length + self.max_new_tokens > window:
            raise ValueError(f"{length} task prompt tokens + {self.max_new_tokens} new ones exceed the model's window "
                             f"of {window} positions: ask for at most {window - self.max_new_tokens}")
        text, answer = tr.task_prompt(task, tok, length, self.seed)
        self.param.update(prompt=text, chat=False)
        return answer

    def saved(self) -> tr.PolicySource | None:
        """The trained policy θ names, read from its run's folder (ValueError for a broken one); None for "zeros" or
        "random"."""
        if self.theta in ("zeros", "random"):
            return None
        return tr.load_saved_policy(Path(self.runs_dir) / self.theta)

    def recipe(self) -> Recipe:
        """The trace the settings ask for now, frozen (Recipe): a broken policy file is one ValueError here,
        before a model loads."""
        kind, theta, strict, budget = self.policy, self.theta, self.strict, self.budget
        if kind != "namm":
            def make(config):
                return tr.make_policy(kind, config, budget=budget)
        elif theta == "zeros":
            def make(config):
                return tr.make_policy("namm", config, strict=strict)
        elif theta == "random":
            random_theta = tr.random_theta(self.seed, self.scale)

            def make(config):
                return tr.make_policy("namm", config, theta=random_theta, strict=strict)
        else:
            saved = self.saved()

            def make(config):  # a run trained with a cache cap keeps to it here as in `namm eval`
                return tr.make_policy("namm", config, theta=saved.theta, stats=saved.stats, strict=strict,
                                      max_kept=saved.max_kept)
        return Recipe(self.model_name, int(self.n_up), self.policy_source(),
                      f"namm ({theta})" if kind == "namm" else None, make)

    def make_policy(self, config: PretrainedConfig) -> EvictionPolicy:
        """The chosen policy for a model of this config (a fresh object: its per-sequence state is empty)."""
        return self.recipe().make(config)

    def compute(self, progress: Callable[[int, int], None] | None = None, recipe: Recipe | None = None) -> tr.Trace:
        """Load the model (once per process) and record the prompt's trace by `recipe` (default: the settings
        now); nothing on show changes yet."""
        if not self.prompt.strip():
            raise ValueError("the prompt is empty: type some text")
        recipe = recipe or self.recipe()  # a broken policy file is one error before the model loads
        model, tok = tr.explorer_model(recipe.model_name)
        self._check_weights(recipe.model_name, model)
        cfg = tr.TraceConfig(n_up=recipe.n_up, max_new_tokens=self.max_new_tokens, chat=self.chat)
        return tr.record_trace(model, tok, self.prompt, recipe.make(model.config), cfg, progress=progress)

    def _check_weights(self, model_name: str, model) -> None:
        """ValueError where a trained run's policy is about to run on the model at the path it was trained at, and
        that model is another one (its weights' key is not the run's model_key: a moved store, a folder rebuilt in
        place drew the policy there without a word). Another model chosen on purpose is the user's to try. Checked
        here, as the model is loaded off the page's loop, not as the run is picked (a load on the loop)."""
        saved = self.saved() if self.policy == "namm" else None
        key = saved.meta.get("model_key") if saved is not None else None
        if not key:  # an untrained θ, or a run made before runs recorded their model's key
            return
        try:
            trained_at = self._trained_model(str(saved.meta.get("model") or ""))
        except ValueError:
            return
        if trained_at != model_name:
            return
        from workbench.namm.run import check_model_key, model_key

        check_model_key(self.theta, key, model_name, model_key(model))

    def show(self, trace: tr.Trace, recipe: Recipe | None = None) -> None:
        """Put a trace on show, at its last step. recipe: what made it (read before it ran: the settings may
        change meanwhile), which export names carry and the sweep compares on; None: the settings now."""
        self.trace, self.sweep_rows = trace, None
        self.ran = recipe or self.recipe()
        n = len(trace.steps)
        self.param.step.bounds = (0, max(n - 1, 0))
        # a token past the trace is refused (it was taken and the spectrogram quietly drew the last one)
        self.param.token.bounds = (0, max(trace.n_tokens - 1, 0))
        self.param.update(step=max(n - 1, 0), layer=min(self.layer, trace.n_layers - 1),
                          head=min(self.head, trace.n_heads - 1), token=min(self.token, trace.n_tokens - 1))
        self.version += 1

    def run(self, progress: Callable[[int, int], None] | None = None) -> tr.Trace:
        """Record the prompt's trace by the settings now (compute: progress(tokens done, total)) and put it on show;
        returns it."""
        recipe = self.recipe()
        trace = self.compute(progress, recipe)
        self.show(trace, recipe)
        return trace

    def policy_source(self) -> str:
        """The policy as the settings choose it, for file names: a baseline and its budget ("h2o-b64"), or NAMM
        with its θ: "zeros", "random-s<seed>-<σ>" (strict: "-strict") or a run's id."""
        if self.policy != "namm":
            return f"{self.policy}-b{self.budget}"
        theta = f"random-s{self.seed}-{self.scale:g}" if self.theta == "random" else self.theta
        return f"namm-{theta}" + ("-strict" if self.strict else "")

    def compute_sweep(self, progress: Callable[[int, int], None] | None = None,
                      fractions: Sequence[float] = (0.25, 0.5, 0.75)) -> pd.DataFrame:
        """Next-token agreement with the full cache vs kept fraction on the trace on show's prompt, model and
        n_up: its policy (NAMM) and the baselines."""
        if self.trace is None or self.ran is None:
            raise ValueError("run a prompt first")
        ran = self.ran
        model, _ = tr.explorer_model(ran.model_name)
        ids = self.trace.ids[: self.trace.n_prompt]
        methods = tr.budget_methods(model.config, len(ids), fractions, ran.n_up)
        if ran.sweep_name is not None:
            methods = {ran.sweep_name: lambda: ran.make(model.config), **methods}
        return tr.agreement_sweep(model, ids, methods, n_up=ran.n_up,
                                  new_tokens=max(1, min(self.max_new_tokens, 32)), progress=progress)

    def show_sweep(self, rows: pd.DataFrame) -> None:
        """Put an agreement sweep (compute_sweep's rows) on show."""
        self.sweep_rows = rows
        self.version += 1

    def result_rows(self) -> list[dict]:
        """Rows of an eval / bench JSON (the `results` path, else the chosen run's folder); [] when none."""
        path = self.results.strip() or (str(Path(self.runs_dir) / self.theta)
                                        if self.theta not in ("zeros", "random") else "")
        if not path:
            return []
        return tr.read_results(path)

    # ---- summaries ---------------------------------------------------------------------------------------------
    def summary(self) -> str:
        """The Markdown line about the trace on show: policy, model, prompt and generated tokens, layers × KV heads,
        n_up, eviction steps, the cache at the end and the answer (before a trace: how to make one)."""
        t = self.trace
        if t is None:
            return "Type a prompt and press **run**."
        frac = np.mean(t.final_sizes) / max(t.n_tokens, 1)
        model = self.ran.model_name if self.ran else self.model_name  # the trace's, whatever the settings say now
        return (f"**{literal(shown(t.label))}** on {code(model)} · {t.n_prompt} prompt tokens + {t.n_generated} "
                f"generated · {t.n_layers} layers × {t.n_heads} KV heads · n_up {t.n_up} · {len(t.steps)} eviction "
                f"step{'' if len(t.steps) == 1 else 's'} · cache at the end {frac:.0%} of the tokens · answer: "
                f"{code(t.generated.strip()[:80])}")

    def pick(self, x: float, y: float) -> tuple[int, int, int] | None:
        """A click on the retention raster at (token x, row y): show that token, layer and head (spectrogram,
        text, scores); returns (token, layer, head), or None outside the raster."""
        t = self.trace
        if t is None or x is None or y is None:
            return None
        rows = t.n_layers * t.n_heads
        token, row = int(round(x)), rows - 1 - int(round(y))
        if not (0 <= token < t.n_tokens and 0 <= row < rows):
            return None
        self.param.update(token=token, layer=row // t.n_heads, head=row % t.n_heads)
        return token, self.layer, self.head

    def step_text(self) -> str:
        """The step on show, "step i of n: T tokens processed" ("no eviction step yet" without one)."""
        t = self.trace
        if t is None or not t.steps:
            return "no eviction step yet"
        return f"step {self.step + 1} of {len(t.steps)}: {t.steps[self.step]} tokens processed"

    # ---- figures -------------------------------------------------------------------------------------------------
    def figure(self, name: str) -> Dimensioned:
        """One of VIEWS as a HoloViews object (page and export); a Div saying why when there is nothing."""
        hv = holoviews()
        t = self.trace
        if t is None:
            return hv.Div("<i>run a prompt first</i>")
        if not t.steps and name != "sweep":
            return hv.Div(f"<i>no eviction step: {t.n_tokens} tokens processed, fewer than n_up = {t.n_up}; use a "
                          "longer prompt, more new tokens or a smaller n_up</i>")
        return getattr(self, f"_{name}")(hv, t)

    def _retention(self, hv, t: tr.Trace):
        codes = tr.retention(t, self.step)
        rows, n = codes.shape
        # trace row r (layer r // H, KV head r % H) drawn at y = rows − 1 − r: layer 0 head 0 at the top, as the
        # ticks, hover and pick read it. That y is the picture's alone (PICTURE_ROW, left out of a CSV): each cell
        # carries its layer and KV head, the CSV's columns (it held the y, "layer / KV head" 3 for L0 head 0), in
        # the smallest whole type (the page's Bokeh source carries them too, beside the states)
        index = np.arange(rows, dtype=np.min_scalar_type(rows))
        cell_layer, cell_head = (np.repeat(a[::-1, None], n, axis=1) for a in np.divmod(index, t.n_heads))
        # bounds given: from coordinates alone HoloViews cannot tell a cell's size along an axis of one cell (one
        # layer with one KV head), and the raster failed to build (NaN bounds)
        img = hv.Image((np.arange(n), np.arange(rows), codes[::-1].astype(float), cell_layer, cell_head),
                       bounds=(-0.5, -0.5, n - 0.5, rows - 0.5), kdims=["token", PICTURE_ROW],
                       vdims=["state", "layer", "KV head"])
        every = max(1, t.n_layers // 12)
        ticks = [(rows - 1 - layer * t.n_heads - (t.n_heads - 1) / 2, f"L{layer}")
                 for layer in range(0, t.n_layers, every)]
        cmap = [COLORS[c] for c in sorted(COLORS)]
        img = img.opts(aspect="auto", backend="matplotlib")
        img = _style(img, cmap=cmap, clim=(-0.5, 3.5), yticks=ticks, ylabel="layer / KV head", xlabel="token position",
                     title=f"{shown(t.label)}: kept after step {self.step + 1} ({t.steps[self.step]} tokens)",
                     width=ROW_WIDTH, height=max(260, min(24 * rows, 560)), tools=[raster_hover(t.n_layers, t.n_heads)],
                     fig_inches=(6, 2.6))
        # every state the raster draws has its key; not yet seen (near white) gets an outline to show on white
        # the raster's key: stand-ins (group "Key") for the colour map's states, not data a colour is pinned to
        # each holds its state's code: a CSV of the figure names the codes of the raster's "state" column
        keys = [hv.Scatter([(np.nan, np.nan, c)], vdims=["y", "state"], group="Key", label=CODES_LABEL[c])
                .opts(color=COLORS[c], size=8, backend="bokeh")
                .opts(color=COLORS[c], s=20, edgecolors="#888888" if c == tr.NOT_YET else COLORS[c],
                      backend="matplotlib") for c in (tr.NOT_YET, tr.EVICTED, tr.KEPT, tr.FILL)]
        line = hv.VLine(t.steps[self.step] - 0.5).opts(color="black", line_dash="dashed", backend="bokeh").opts(
            color="black", linestyle="--", linewidth=0.8, backend="matplotlib")
        # the figure carries its key (a notebook, an export); the page leaves it out for its own above the tabs
        return hv.Overlay([img, line, *keys]).opts(legend_position="right", backend="bokeh").opts(
            legend_position="right", backend="matplotlib")

    def _sizes(self, hv, t: tr.Trace):
        df = tr.cache_sizes(t)
        # labelled curves, not an NdOverlay keyed by layer: its keys were no legend entries --colour and --rename
        # could reach (legend_names saw "full cache" alone)
        over = hv.Overlay([hv.Curve(part, "tokens", "size", label=f"L{layer}") for layer, part in df.groupby("layer")])
        full = hv.Curve([(0, 0), (t.n_tokens, t.n_tokens)], "tokens", "size", label="full cache").opts(
            color="grey", line_dash="dotted", backend="bokeh").opts(color="grey", linestyle=":", backend="matplotlib")
        now = hv.VLine(t.steps[self.step]).opts(color="black", line_dash="dashed", backend="bokeh").opts(
            color="black", linestyle="--", linewidth=0.8, backend="matplotlib")
        legend = t.n_layers <= 8
        # the legend at the top left, which no curve reaches (a cache holds at most the tokens processed: every
        # curve lies under the full cache's diagonal); at the top right it sat on the full cache's line
        return _style(over * full * now, title=f"{shown(t.label)}: cache size per layer", xlabel="tokens processed",
                      ylabel="slots per KV head", show_legend=legend, legend_position="top_left", width=720,
                      height=360, fig_inches=(4, 2.6))

    def _spectrogram(self, hv, t: tr.Trace):
        layer, head = max(self.layer, 0), max(self.head, 0)
        pos = min(self.token, t.n_tokens - 1)
        where = f"token {pos} {t.pieces[pos]!r} (L{layer} h{head})"
        times, mag = tr.spectrogram(t, layer, head, pos)
        if len(times):
            spec = hv.Image(mag.T[::-1], bounds=(times[0] - 8, -0.5, times[-1] + 8, 16.5),
                            kdims=["query position", "frequency bin"], vdims=["|STFT|"])
            spec = _style(spec.opts(aspect="auto", backend="matplotlib"), cmap="viridis", colorbar=True,
                          title=f"spectrogram: {where}", yticks=BIN_TICKS, width=ROW_WIDTH // 2, height=300,
                          tools=["hover"], fig_inches=(3.4, 2.4))
        else:
            why = ("spectra kept for layers " + ", ".join(map(str, t.spectra_layers)) if layer not in t.spectra_layers
                   else "the token was evicted or not yet scored")
            spec = hv.Div(f"<i>no spectrogram for {where}: {why}</i>")
        steps, raw, norm = tr.ema_history(t, layer, head, pos)
        if len(steps):
            half = t.n_up / 2
            ema = hv.Image(norm.T[::-1], bounds=(steps[0] - half, -0.5, steps[-1] + half, 16.5),
                           kdims=["tokens processed", "frequency bin"], vdims=["x̂"])
            ema = _style(ema.opts(aspect="auto", backend="matplotlib"), cmap="RdBu_r", colorbar=True,
                         symmetric=True, title="EMA features (normalised)", yticks=BIN_TICKS, width=ROW_WIDTH // 2,
                         height=300, tools=["hover"], fig_inches=(3.4, 2.4))
        else:
            ema = hv.Div("<i>EMA features: NAMM policies only, for tokens that reached a step</i>")
        drawn = [whole_numbers(p) for p in (spec, ema) if not isinstance(p, hv.Div)]  # tokens: no 7.5 on the axis
        if not drawn:
            return spec
        return _side_by_side(hv, drawn)

    def _scores(self, hv, t: tr.Trace):
        layer = None if self.layer < 0 else self.layer
        df = tr.score_table(t, self.step, layer)
        if df.empty:
            return hv.Div(f"<i>{shown(t.label)} gives no scores (full cache and recent windows keep by position)</i>")
        edges = np.histogram_bin_edges(df["score"].to_numpy(), bins=40)
        parts = []
        for label, mask, color in (("evicted", ~df["kept"], COLORS[tr.EVICTED]),
                                   ("kept", df["kept"] & ~df["fill"], COLORS[tr.KEPT]),
                                   ("kept to fill N", df["fill"], COLORS[tr.FILL])):
            counts, _ = np.histogram(df["score"][mask], bins=edges)
            # matplotlib's histogram takes facecolor (it ignored color: evicted and kept came out swapped)
            parts.append(hv.Histogram((edges, counts), kdims="score", vdims="tokens", label=label).opts(
                color=color, alpha=0.6, line_alpha=0, backend="bokeh").opts(facecolor=color, alpha=0.6,
                                                                            linewidth=0, backend="matplotlib"))
        over = hv.Overlay(parts)
        if t.policy.get("policy") == "namm":
            over = over * hv.VLine(0).opts(color="black", line_dash="dashed", backend="bokeh").opts(
                color="black", linestyle="--", linewidth=0.8, backend="matplotlib")
        where = "all layers" if layer is None else f"layer {layer}"
        what = "score" if t.policy.get("policy") == "namm" else "accumulated attention"
        return _style(over, title=f"{shown(t.label)}: {what} at step {self.step + 1}, {where}", width=720, height=360,
                      xlabel=what, fig_inches=(4, 2.6))

    def _text(self, hv, t: tr.Trace):
        """The page shows the text as HTML (hover titles); as a figure it is drawn by `text_figure`."""
        return hv.Div(tr.text_html(t, self.step, None if self.layer < 0 else self.layer,
                                   None if self.head < 0 else self.head))

    def _sweep(self, hv, t: tr.Trace):
        plots = []
        rows = self.sweep_rows
        try:
            found = self.result_rows()
            failed = None
        except ValueError as exc:
            found, failed = [], exc
        # one colour per method in both panels (by the order each first appears)
        methods = [*([] if rows is None else rows["method"]), *(r["method"] for r in found)]
        # the methods' colours: Okabe & Ito's, as every paper figure's (this page's own teal and purple were ΔE 6
        # apart to a deuteranope), by name: colours pinned with figures.pin_colours hold here too
        colour = colours_for(methods)
        if rows is not None and len(rows):
            parts = []
            for method, part in rows.groupby("method", sort=False):
                part, color = part.sort_values("kept"), colour[method]
                pts = hv.Scatter(part, "kept", ["agreement", "label"], label=shown(method)).opts(
                    size=9, tools=["hover"], color=color, backend="bokeh").opts(color=color, backend="matplotlib")
                if len(part) > 1:
                    pts = hv.Curve(part, "kept", "agreement").opts(color=color, backend="bokeh").opts(
                        color=color, backend="matplotlib") * pts
                parts.append(pts)
            plots.append(_style(hv.Overlay(parts), title="this prompt: agreement with the full cache",
                                xlabel="kept cache fraction", ylabel="next-token agreement", xlim=(0, 1.05),
                                ylim=(-0.05, 1.05), width=ROW_WIDTH // 2, height=360, legend_position="bottom_right",
                                fig_inches=(3.6, 2.6)))
        if failed is not None:
            plots = [*plots, hv.Div(f"<i>{html.escape(str(failed), quote=False)}</i>")]
        if found:
            import pandas as pd

            df = pd.DataFrame(found)
            df["budget"] = df["budget"].fillna(-1)
            mean = df.groupby(["method", "budget"], as_index=False)[["score", "kept"]].mean()
            parts = []
            for method, part in mean.groupby("method", sort=False):
                part, color = part.sort_values("kept"), colour[method]
                pts = hv.Scatter(part, "kept", ["score", "budget"], label=shown(method)).opts(
                    size=9, tools=["hover"], color=color, backend="bokeh").opts(color=color, backend="matplotlib")
                if len(part) > 1:
                    pts = hv.Curve(part, "kept", "score").opts(color=color, backend="bokeh").opts(
                        color=color, backend="matplotlib") * pts
                parts.append(pts)
            plots.append(_style(hv.Overlay(parts), title="eval / bench file: task score",
                                xlabel="kept cache fraction", ylabel="task score (mean over tasks)", xlim=(0, 1.05),
                                ylim=(-0.05, 1.05), width=ROW_WIDTH // 2,  # the scales of the panel beside it
                                height=360, legend_position="bottom_right", fig_inches=(3.6, 2.6)))
        if not plots:
            return hv.Div("<i>press <b>compare</b> to run the baselines on this prompt (and give an eval / bench "
                          "JSON to see task scores, kvpress included)</i>")
        drawn = [p for p in plots if not isinstance(p, hv.Div)] or plots
        return _side_by_side(hv, drawn)

    def export(self, name: str, out_dir: str | Path, suffix: str = ".png", width: float | None = None,
               font: str | None = None, rename: dict[str, str] | None = None) -> Path:
        """Write one view for a paper (PNG/SVG/PDF via matplotlib, or standalone HTML) as namm-<view>-<step>, at
        figures.save's width (inches), font and legend names (rename)."""
        if name not in VIEWS:
            raise ValueError(f"unknown view {name!r}: one of {', '.join(VIEWS)}")
        suffix = export_suffix(suffix)
        self._drawn(name)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        # which policy and which prompt: exports of other θ or prompts went to one name, each over the last
        source = self.ran.source if self.ran else (self.trace.label if self.trace else "")
        label = "".join(c if c.isalnum() or c == "." else "-" for c in source).strip("-")
        prompt = hashlib.sha256(repr(self.trace.ids[: self.trace.n_prompt]).encode()).hexdigest()[:8] \
            if self.trace else "none"
        return self.write(name, out_dir / f"namm-{name}-{label}-p{prompt}-step{self.step + 1}{suffix}", width=width,
                          font=font, rename=rename)

    def _drawn(self, name: str):
        """figure(name), or the page's reason why there is nothing to write under it (ValueError)."""
        hv = holoviews()
        fig = self.figure(name)
        if isinstance(fig, hv.Div) and (name != "text" or self.trace is None or not self.trace.steps):
            raise ValueError(f"nothing to export under {VIEWS[name]!r}: {fig.data.strip('<i>/ ')}")
        return fig

    def write(self, name: str, out: str | Path, dpi: int | None = None, width: float | None = None,
              font: str | None = None, rename: dict[str, str] | None = None) -> Path:
        """Write view `name` to the file `out` (its suffix picks the format) as export does, at figures.save's
        dpi, width (inches), font and legend names (rename; `workbench figure namm`); the text view is drawn
        token by token."""
        from workbench.figures import (
            COLUMN_WIDTH,
            MATPLOTLIB_LOCK,
            NO_DATE,
            PAGE_WIDTH,
            PAPER_RC,
            check_dpi,
            check_font,
            check_legend_entries,
            check_width,
            refuse_csv,
            save,
        )

        hv = holoviews()
        if name not in VIEWS:
            raise ValueError(f"unknown view {name!r}: one of {', '.join(VIEWS)}")
        if name == "text":  # tokens, no numbers (drawn with matplotlib, or the page's HTML): before the size flags
            refuse_csv(f"the {VIEWS[name]!r} view (the prompt's tokens)", out)
        check_dpi(dpi, out)
        check_width(width, out)
        check_font(font, out)
        tr.check_text_font(name, font)
        fig, out = self._drawn(name), Path(out)
        if name == "text":  # the page's own HTML (hover titles), or drawn token by token with matplotlib
            check_legend_entries(fig, rename or {}, "--rename")  # no legend: refused, as save refuses
            from workbench.atomic import atomic_write

            layer, head = None if self.layer < 0 else self.layer, None if self.head < 0 else self.head
            if out.suffix.lower() == ".html":
                page = f"<!doctype html><meta charset='utf-8'><style>{tr.TEXT_CSS}</style>{fig.data}"
                atomic_write(out, lambda p: p.write_text(page, encoding="utf-8"))
            else:
                import matplotlib.pyplot as plt

                # a page's text width, its tight margins included; TrueType in PDF and text in SVG (Type 3 glyphs
                # and SVG outlines before: matplotlib's defaults, as every paper figure but this one avoided)
                pad = plt.rcParams["savefig.pad_inches"]
                suffix = out.suffix.lower()
                with MATPLOTLIB_LOCK:  # the rc is the process's: another tab's export meanwhile drew with ours
                    figure = text_figure(self.trace, self.step, layer, head, width=(width or PAGE_WIDTH) - 2 * pad)
                    with plt.rc_context(PAPER_RC):
                        atomic_write(out, lambda p: figure.savefig(p, dpi=dpi or 300, bbox_inches="tight",
                                                                   format=suffix[1:], metadata=NO_DATE.get(suffix)))
                    plt.close(figure)
            return out
        wide = isinstance(fig, hv.Layout)  # two panels side by side
        inches = (PAGE_WIDTH, 2.6) if wide else {"retention": (6.0, 2.6)}.get(name, (COLUMN_WIDTH, 2.3))
        return save(fig.opts(sublabel_format="", backend="matplotlib") if wide else fig, out,
                    style={"fig_inches": inches}, dpi=dpi, width=width, font=font, rename=rename)

    def figures_dir(self) -> Path:
        """Where exports go: the run's figures folder for a trained θ, else the store's own, <runs_dir>/figures/namm
        (not beside the store, where it wrote into whatever folder held it)."""
        if self.theta not in ("zeros", "random"):
            return Path(self.runs_dir) / self.theta / "figures"
        return Path(self.runs_dir) / "figures" / "namm"


CODES_LABEL = tr.CODES


def text_figure(trace: tr.Trace, i: int, layer: int | None = None, head: int | None = None, width: float = 7.0):
    """The text after step i as a matplotlib figure for a paper: tokens laid out left to right in a monospace
    font, evicted ones red and struck through, tokens not yet processed grey, partly kept ones on an amber
    ground (darker: fewer of the chosen layers/heads hold it)."""
    import matplotlib

    if "inline" not in matplotlib.get_backend():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = tr.text_tokens(trace, i, layer, head)
    # 7 pt: a paper's smallest text (a mono char 4.2 pt of its ~5.1 pt slot); as many slots as `width` holds (96
    # at a page's 6.55 in; a fixed 96 ran the letters together in a column)
    size = 7.0
    chars_per_line = max(20, int(width * 72 / 4.9))
    line_h = size * 1.9 / 72
    x = 0.0
    lines: list[list[tuple[float, object]]] = [[]]
    for row in df.itertuples():
        pieces = row.piece.split("\n")
        for k, piece in enumerate(pieces):
            if k:
                lines.append([])
                x = 0.0
            if x + len(piece) > chars_per_line and x > 0:
                lines.append([])
                x = 0.0
            lines[-1].append((x, row._replace(piece=piece)))
            x += len(piece)
    height = line_h * (len(lines) + 1)
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, chars_per_line)
    ax.set_ylim(len(lines), -0.5)
    ax.axis("off")
    for y, line in enumerate(lines):
        for x0, row in line:
            color = "#b03a2e" if row.evicted else ("#7a8290" if not row.seen else "#1d2733")
            n = len(row.piece)
            if row.seen and not row.evicted and row.kept < 1 and n:
                ax.add_patch(plt.Rectangle((x0, y - 0.45), n, 0.9, color=COLORS[tr.FILL],
                                           alpha=0.15 + 0.45 * (1 - row.kept), lw=0))
            ax.text(x0, y, row.piece, family="monospace", fontsize=size, color=color, va="center", ha="left")
            if row.evicted and n:
                ax.plot([x0, x0 + n], [y, y], color="#b03a2e", lw=0.6)
    where = ("all layers" if layer is None else f"layer {layer}") + ("" if head is None else f", head {head}")
    fig.suptitle(f"{shown(trace.label)}: evicted after step {i % len(trace.steps) + 1} ({where})", fontsize=8, y=1.0,
                 va="bottom")
    return fig


def token_field(model: NAMMExplorer, refused: Callable[[str], None]) -> pn.widgets.IntInput:
    """The keyboard's way to the token a click on the raster picks (NAMMExplorer.pick; the layer and head have
    their menus): a number field two ways with `token`. A number past the trace on show (the model's bounds) is
    put back and refused(why) told. (An IntInput with an end sent the end and kept showing the number typed.)"""
    from workbench.dashboards.shell import checked_int_input

    return checked_int_input(model, "token", refused, label="token (spectrogram)", sizing_mode="stretch_width",
                             description="token position the spectrogram shows, as the raster's hover says it; "
                                         "a click on the raster picks it too")


def namm_page(runs_dir: str = "runs", run: str | None = None, standalone: bool = False) -> pn.template.FastListTemplate:
    """The /namm page: the attention-mask explorer (a policy's kept tokens, scores and spectra on a prompt), with
    the trained NAMM run `run` of the store `runs_dir` as θ when given. standalone: a page of its own."""
    from workbench.dashboards.shell import (
        PageThread,
        as_text,
        checked_int_input,
        export_controls,
        failed,
        live,
        off_loop,
        put_back,
        run_alert,
        section,
        shell,
    )

    hv = holoviews()
    model = NAMMExplorer(runs_dir=runs_dir)
    page_thread = PageThread()
    alert = run_alert(model, run)

    # --- sidebar: what to run
    w = pn.widgets
    models = {**MODELS, "a model folder…": "folder"}
    known = model.model_name in models.values()
    model_pick = w.Select(label="Model", options=models, value=model.model_name if known else "folder",
                          sizing_mode="stretch_width")
    folder = w.TextInput(label="Model folder", placeholder="a Hugging Face model folder", visible=not known,
                         value="" if known else model.model_name, sizing_mode="stretch_width")
    policy = w.Select(label="Policy", options={"NAMM": "namm", "full cache": "full", "recent window + sinks": "recent",
                                              "H2O (heavy hitters + recent)": "h2o"}, value=model.policy,
                      sizing_mode="stretch_width")
    theta = w.Select(label="θ", options=model.theta_choices(), value=model.theta, sizing_mode="stretch_width")
    def refused(why: str) -> None:
        status.object = f"**not taken:** {plain(why)}" if why else ""

    seed = checked_int_input(model, "seed", refused, label="seed (random θ, task prompt)", sizing_mode="stretch_width")
    strict = w.Checkbox(label="strict per head (fill tokens masked)", value=model.strict)
    budget = checked_int_input(model, "budget", refused, label="budget (tokens kept)", sizing_mode="stretch_width")
    chat = w.Checkbox(label="chat template (when the model has one)", value=model.chat)
    n_up = w.Select(label="n_up (tokens between evictions)", options=model.param.n_up.objects, value=model.n_up,
                    sizing_mode="stretch_width")
    new_tokens = checked_int_input(model, "max_new_tokens", refused, label="new tokens", sizing_mode="stretch_width")
    prompt = w.TextAreaInput(label="Prompt", value=model.prompt, height=160, sizing_mode="stretch_width",
                             placeholder="type a prompt")
    tasks = tr.task_names()
    task = w.Select(label="…or a task prompt", options=tasks, value=tasks[0] if tasks else None, visible=bool(tasks),
                    sizing_mode="stretch_width")
    task_length = w.IntInput(label="task prompt tokens", value=256, start=32, step=32, visible=bool(tasks),
                             sizing_mode="stretch_width")
    use_task = w.Button(label="use the task prompt", visible=bool(tasks), sizing_mode="stretch_width")
    run_button = w.Button(label="run", color="primary", sizing_mode="stretch_width")
    progress = pn.indicators.Progress(label="eviction run progress", value=0, max=100, visible=False,
                                      sizing_mode="stretch_width", bar_color="primary")
    # --- sidebar: what to look at
    player = w.Player(label="eviction step", start=0, end=1, value=0, interval=700, loop_policy="once",
                      show_loop_controls=False, sizing_mode="stretch_width", scale_buttons=0.8, disabled=True,
                      visible_buttons=["first", "previous", "pause", "play", "next", "last"])
    step_text = pn.pane.Markdown(model.step_text(), margin=(0, 10))
    layer = w.Select(label="Layer", options={"all layers": -1}, value=-1, sizing_mode="stretch_width")
    head = w.Select(label="KV head", options={"all heads": -1}, value=-1, sizing_mode="stretch_width")
    token = token_field(model, refused)
    results = w.TextInput(label="eval / bench JSON (score vs cache)", placeholder="runs/<id>/eval.json",
                          sizing_mode="stretch_width")
    compare = w.Button(label="compare with baselines", sizing_mode="stretch_width")
    fmt, size, export, written, download = export_controls(
        lambda suffix, **printed: model.export(model.view, model.figures_dir(), suffix, **printed))
    # the run's messages beside its button; the export's beside its own (one line for both said what an export
    # wrote at the sidebar's top, under the prompt, far from the button pressed)
    status = live(pn.pane.Markdown("", sizing_mode="stretch_width"))

    header = pn.pane.Markdown(as_text(model.summary()), sizing_mode="stretch_width", margin=(0, 10))
    keys = " ".join(f'<span style="background:{COLORS[c]};padding:1px 8px;border-radius:3px;'
                    f'color:{"#fff" if c == tr.KEPT else "#222"}">{tr.CODES[c]}</span>'
                    for c in sorted(COLORS))
    legend = pn.pane.HTML(f"{keys} &nbsp; <span style='color:#667'>click the raster (or set the Layer, KV head "
                          "and token fields): that token, layer and head in the other views</span>", margin=(0, 10))

    def draw(name):
        def inner(step, layer_, head_, token_, version):
            fig = model.figure(name)
            if name == "retention" and isinstance(fig, hv.Overlay):  # a click picks token, layer and head
                fig = fig.opts(show_legend=False, backend="bokeh")  # the page's key is above the tabs
                tap = hv.streams.Tap(source=fig.get(0))
                tap.add_subscriber(lambda x, y: model.pick(x, y))
            # in a Column that stretches: see the Experts page's view_pane (Bokeh's W-1005 otherwise)
            return pn.Column(pn.pane.HoloViews(fig, backend="bokeh", linked_axes=False), sizing_mode="stretch_width")
        return pn.panel(pn.bind(inner, model.param.step, model.param.layer, model.param.head, model.param.token,
                                model.param.version), lazy=True)

    def text_view(step, layer_, head_, version):
        if model.trace is None or not model.trace.steps:
            return pn.pane.HTML("<i>run a prompt first (with at least n_up tokens)</i>")
        body = tr.text_html(model.trace, step, None if layer_ < 0 else layer_, None if head_ < 0 else head_)
        return pn.pane.HTML(body, stylesheets=[tr.TEXT_CSS], sizing_mode="stretch_width", name="namm-text")

    hover_note = pn.pane.Markdown("Struck through: evicted (by every chosen layer/head); shaded: kept by some; "
                                  "dotted underline: generated. Hover a token for its scores per layer and head.",
                                  margin=(0, 10))
    tabs = pn.Tabs(*[(title, scrolls(draw(name), sizing_mode="stretch_width")) if name != "text" else
                     (title, pn.Column(hover_note, pn.panel(pn.bind(text_view, model.param.step, model.param.layer,
                                                                    model.param.head, model.param.version)),
                                       sizing_mode="stretch_width"))
                     for name, title in VIEWS.items()], dynamic=True, sizing_mode="stretch_width")

    syncing = [False]

    def sync_widgets():
        """After a run: the step scrubber's range, the layer / head / token choices (on the event loop)."""
        t = model.trace
        syncing[0] = True
        try:
            n = len(t.steps)
            player.param.update(start=0, end=max(n - 1, 1), value=model.step, disabled=n < 2)
            layer.options = {"all layers": -1, **{f"layer {i}": i for i in range(t.n_layers)}}
            layer.value = model.layer
            head.options = {"all heads": -1, **{f"head {i}": i for i in range(t.n_heads)}}
            head.value = model.head  # (the token field follows the model itself: token_field)
        finally:
            syncing[0] = False
        header.object = as_text(model.summary())
        step_text.object = model.step_text()

    def link(widget, name):
        def on(event):
            if syncing[0]:
                return
            try:  # an emptied number field (None) or a refused value: put back, said, not a server traceback
                if event.new is None:
                    raise ValueError("it was left empty")
                setattr(model, name, event.new)
            except ValueError as exc:
                put_back(widget, lambda: getattr(model, name))
                status.object = f"**{widget.name or name}:** {plain(str(exc).splitlines()[0])}"
        widget.param.watch(on, "value")

    for widget, name in ((policy, "policy"), (theta, "theta"), (strict, "strict"), (chat, "chat"), (n_up, "n_up"),
                         (prompt, "prompt"), (player, "step"), (layer, "layer"),
                         (head, "head"), (results, "results")):
        link(widget, name)
    model.param.watch(lambda e: setattr(step_text, "object", model.step_text()), "step")

    def follow_pick(*_):
        """The sidebar follows a click on the raster (the token field follows the model itself)."""
        syncing[0] = True
        try:
            layer.value, head.value = model.layer, model.head
        finally:
            syncing[0] = False
    model.param.watch(follow_pick, ["layer", "head"])

    def on_model(event):
        folder.visible = event.new == "folder"
        model.model_name = folder.value if event.new == "folder" else event.new
    model_pick.param.watch(on_model, "value")
    folder.param.watch(lambda e: setattr(model, "model_name", e.new), "value")

    def follow_run(*_):
        """The sidebar follows the settings a trained run picked as θ brings (NAMMExplorer.adopt_run)."""
        syncing[0] = True
        try:
            n_up.param.update(options=list(model.param.n_up.objects), value=model.n_up)
            strict.value = model.strict
            known = model.model_name in models.values()
            # the folder first: picking "folder" hands the folder field's value to the model
            folder.param.update(visible=not known, value="" if known else model.model_name)
            model_pick.value = model.model_name if known else "folder"
        finally:
            syncing[0] = False
    model.param.watch(follow_run, ["n_up", "strict", "model_name"])
    # the chosen model loads in the background while the prompt is being picked (SmolLM2: 5-30 s), not on the click
    model.param.watch(lambda e: tr.warm_model(e.new), "model_name")
    tr.warm_model(model.model_name)  # a run opened with ?run=ID chose the model it was trained on

    def show_policy_fields(kind: str) -> None:
        theta.visible = strict.visible = kind == "namm"  # the seed stays: it picks the task prompt too
        budget.visible = kind in ("recent", "h2o")
    policy.param.watch(lambda e: show_policy_fields(e.new), "value")
    show_policy_fields(model.policy)

    def tick(done, total):
        page_thread.call(lambda: progress.param.update(value=int(100 * done / max(total, 1))))

    async def on_run(event):
        progress.param.update(value=0, visible=True)
        status.object = "running…"
        try:  # the settings as they are when run is clicked: export names and the sweep say what made the trace
            recipe = model.recipe()
            trace = await off_loop(model.compute, tick, recipe, busy=[run_button, tabs])
        except ValueError as exc:
            alert.param.update(object=plain(str(exc)), visible=True)
            status.object = ""
            return
        except Exception as exc:  # said on the page (it said "running…" for good), and in the log
            alert.param.update(object=f"the run failed: {plain(failed(exc))}", visible=True)
            status.object = ""
            raise
        finally:
            progress.visible = False
        alert.visible = False
        model.show(trace, recipe)
        sync_widgets()
        status.object = f"ran {trace.n_tokens} tokens: {len(trace.steps)} eviction steps"
        written.object = ""  # what the last export wrote drew the trace before this one (its button offered it)

    async def on_compare(event):
        progress.param.update(value=0, visible=True)
        try:
            rows = await off_loop(model.compute_sweep, tick, busy=[compare, tabs])
            model.show_sweep(rows)
            tabs.active = list(VIEWS).index("sweep")
            status.object = f"compared {len(rows)} methods on this prompt"
        except ValueError as exc:
            status.object = f"**cannot compare:** {plain(str(exc))}"
        except Exception as exc:
            status.object = f"**the comparison failed:** {plain(failed(exc))}"
            raise
        finally:
            progress.visible = False

    def on_tab(event):
        model.view = list(VIEWS)[event.new]
    tabs.param.watch(on_tab, "active")

    async def on_task(event):
        try:
            answer = await off_loop(model.use_task, task.value, task_length.value, busy=[use_task, prompt])
        except ValueError as exc:
            status.object = f"**cannot make the prompt:** {plain(str(exc))}"
            return
        syncing[0] = True
        try:
            prompt.value, chat.value = model.prompt, model.chat
        finally:
            syncing[0] = False
        status.object = f"{task.value} prompt (seed {model.seed}): the answer is **{literal(answer)}**"

    use_task.on_click(on_task)
    run_button.on_click(on_run)
    compare.on_click(on_compare)

    # the prompt, "run" and what it says first: below the model's ten settings they were off a laptop's screen
    # (the page says "type a prompt and press run"), its messages at the sidebar's foot under Export
    sidebar = [section("Prompt"), prompt, chat, task, task_length, use_task, run_button, progress, status,
               section("Model and policy"), model_pick, folder, policy, theta, seed, strict, budget, n_up, new_tokens,
               section("Watch the cache"), player, step_text, layer, head, token,
               section("Score vs cache"), results, compare,
               section("Export the view on show"), fmt, size, export, written, download]
    return shell("namm", [alert, header, legend, tabs], sidebar, standalone=standalone)


if __name__.startswith("bokeh"):
    pn.extension(inline=True, notifications=True)  # Notyf: shell.connection_notice
    namm_page(sys.argv[1] if len(sys.argv) > 1 else "runs", standalone=True).servable()  # titled by the shell
