"""Lab: play a substrate live in the browser, mutate θ, step, reset, and snapshot frames.

The state lives in `LabModel` (param.Parameterized): tests and notebooks drive it directly
(`advance()`, `reset()`, `mutate()`), and the page only binds widgets and a periodic callback to it.
Run alone with `panel serve dashboards/lab.py`, or with every page via `workbench serve`.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import panel as pn
import param

from workbench.atomic import atomic_write, write_png
from workbench.export import to_uint8
from workbench.simulations import SUBSTRATES, make_substrate

RENDER_SIZE = {"lenia": 128, "boids": 224, "plife": 224}


class LabModel(param.Parameterized):
    substrate = param.Selector(default="lenia", objects=list(SUBSTRATES))
    seed = param.Integer(default=0, bounds=(0, None))
    steps_per_frame = param.Integer(default=1, bounds=(1, 64))
    sigma = param.Number(default=0.1, bounds=(0.0, 2.0), doc="σ of a mutation: θ ← θ + σ·N(0, I)")
    playing = param.Boolean(default=False)
    step_count = param.Integer(default=0, constant=True)
    frame = param.Array(doc="the latest frame, uint8 (H, W, 3)")
    fps = param.Number(default=0.0, constant=True)
    snapshot_dir = param.String(default="snapshots")
    fm = param.Selector(default="pixels", objects=["pixels", "efficientnet-lite0", "clip"])
    fm_weights = param.String(default="", doc="local weights for clip (offline)")
    prompt = param.String(default="", doc="text target for the score trace (CLIP only)")
    score_every = param.Integer(default=5, bounds=(1, None), doc="frames between two scores")
    scores = param.List(default=[], doc="(step, supervised-target loss) pairs since the last reset")

    def __init__(self, **params):
        super().__init__(**params)
        self._rng = np.random.default_rng(self.seed)
        self._fm = None
        self._target: np.ndarray | None = None
        self._frames = 0
        self._set_substrate()

    @param.depends("substrate", watch=True)
    def _set_substrate(self):
        self.sub = make_substrate(self.substrate)
        self.theta = np.zeros(self.sub.n_params)
        self.reset()

    @param.depends("seed", watch=True)
    def reset(self) -> None:
        """Back to the initial state of the current θ and seed."""
        self.params = self.sub.decode(self.theta)
        self.state = self.sub.init(self.params, seed=self.seed)
        with param.edit_constant(self):
            self.step_count = 0
        self.scores = []
        self._render()

    def set_theta(self, theta: np.ndarray) -> None:
        theta = np.asarray(theta, np.float64)
        self.sub.decode(theta)  # checks shape and values before anything changes
        self.theta = theta
        self.reset()

    def load_run(self, runs_dir: str, run_id: str) -> None:
        """The best θ of a stored run (and its substrate)."""
        from workbench.runs import RunStore

        run = RunStore(runs_dir).open(run_id)
        best = run.path / "best.npy"
        if not best.exists():
            raise ValueError(f"run {run_id!r} has no best.npy yet")
        substrate = run.info["config"]["eval"]["substrate"]
        if substrate != self.substrate:
            self.substrate = substrate
        self.set_theta(np.load(best))

    def set_param(self, name: str, value) -> None:
        """Edit a named physical parameter (e.g. Lenia m/s/h per kernel, Particle Life alpha/beta) in place;
        the simulation goes on from its current state with the new dynamics."""
        if name not in self.params:
            raise ValueError(f"{self.substrate} has no parameter {name!r}; it has {sorted(self.params)}")
        value = np.asarray(value, np.float64)
        if value.shape != np.shape(self.params[name]) or not np.all(np.isfinite(value)):
            raise ValueError(f"{name} must be finite with shape {np.shape(self.params[name])}, got {value.shape}")
        self.params = {**self.params, name: value}

    def set_target_image(self, image: np.ndarray | None) -> None:
        """A target image for the score trace (any FM); None goes back to the prompt."""
        self._target = None if image is None else self._load_fm().embed_images(np.asarray(image)[..., :3])
        self.scores = []

    @param.depends("fm", "fm_weights", "prompt", watch=True)
    def _reset_scores(self):
        self._fm, self.scores = None, []

    def _load_fm(self):
        if self._fm is None:
            from workbench.fm import load_fm

            self._fm = load_fm(self.fm, weights=self.fm_weights or None)
        return self._fm

    def score(self) -> float | None:
        """Supervised-target loss of the current frame against the prompt or target image (None: no target)."""
        if self._target is None and not self.prompt.strip():
            return None
        from workbench.asal.scores import supervised_target

        fm = self._load_fm()
        target = self._target if self._target is not None else fm.embed_texts([self.prompt])
        return float(supervised_target(fm.embed_images(self.frame)[None], target)[0])

    def mutate(self) -> None:
        """θ ← θ + σ·N(0, I) (seeded by the model's generator), then reset."""
        self.set_theta(self.theta + self.sigma * self._rng.standard_normal(self.sub.n_params))

    def advance(self) -> None:
        """One displayed frame: steps_per_frame simulation steps, then a render."""
        start = time.perf_counter()
        self.state = self.sub.step(self.state, self.params, self.steps_per_frame)
        with param.edit_constant(self):
            self.step_count += self.steps_per_frame
        self._render()
        self._frames += 1
        if self._frames % self.score_every == 0:
            loss = self.score()
            if loss is not None:
                self.scores = [*self.scores[-499:], (self.step_count, loss)]
        elapsed = time.perf_counter() - start
        with param.edit_constant(self):
            self.fps = 0.8 * self.fps + 0.2 / max(elapsed, 1e-6) if self.fps else 1.0 / max(elapsed, 1e-6)

    def tick(self) -> None:
        """What the page's periodic callback calls: advance while playing."""
        if self.playing:
            self.advance()

    def snapshot(self) -> Path:
        """Save the current frame as PNG and θ as .npy (both atomically); returns the PNG path."""
        out = Path(self.snapshot_dir)
        out.mkdir(parents=True, exist_ok=True)
        stem = out / f"{self.substrate}-seed{self.seed}-step{self.step_count}"
        atomic_write(stem.with_suffix(".npy"), lambda p: np.save(p, self.theta))
        return write_png(stem.with_suffix(".png"), self.frame)

    def _render(self) -> None:
        frame = self.sub.render(self.state, self.params, size=RENDER_SIZE.get(self.substrate, 224))
        self.frame = to_uint8(frame)


def rgba(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) -> (H, W) uint32 RGBA, what Bokeh's image_rgba draws (its row 0 at the bottom)."""
    h, w = image.shape[:2]
    packed = np.empty((h, w), np.uint32)
    view = packed.view(np.uint8).reshape(h, w, 4)
    view[..., :3], view[..., 3] = image, 255
    return packed


def frame_view(model: LabModel):
    """A Bokeh RGBA image of the model's frame, updated in place (no new plot per frame)."""
    from bokeh.models import ColumnDataSource
    from bokeh.plotting import figure

    def oriented(frame: np.ndarray) -> np.ndarray:
        # image axis 0 is x in the reference layout, and Bokeh draws row 0 at the bottom
        return rgba(frame).T[::-1].copy()

    source = ColumnDataSource({"image": [oriented(model.frame)]})
    fig = figure(width=512, height=512, x_range=(0, 1), y_range=(0, 1), toolbar_location=None,
                 match_aspect=True, name="lab-frame")
    fig.axis.visible = False
    fig.grid.visible = False
    fig.image_rgba(image="image", x=0, y=0, dw=1, dh=1, source=source)

    def update(event):
        source.data = {"image": [oriented(event.new)]}

    model.param.watch(update, "frame")
    return pn.pane.Bokeh(fig)


def param_editor(model: LabModel) -> pn.viewable.Viewable:
    """Editable tables of the named parameters: Lenia m, s, h per kernel; Particle Life α (6×6, coloured
    like a heatmap) and β. Boids' 193 network weights are changed by σ-mutation instead."""
    import pandas as pd

    holder = pn.Column()

    def build(*_):
        p = model.params
        if model.substrate == "lenia":
            df = pd.DataFrame({"m": p["m"], "s": p["s"], "h": p["h"]}).rename_axis("kernel")
            names = {"m": "m", "s": "s", "h": "h"}
        elif model.substrate == "plife":
            df = pd.DataFrame(p["alpha"], columns=[f"α·{j}" for j in range(6)]).rename_axis("colour")
            df["β"] = p["beta"]
            names = None
        else:
            holder[:] = [pn.pane.Markdown("Boids: the 193 weights of the steering network change by σ-mutation "
                                          "(**new θ**).")]
            return
        table = pn.widgets.Tabulator(df, show_index=True, width=300, height=230 if len(df) > 6 else 200,
                                     formatters={c: {"type": "progress", "min": -1.5, "max": 1.5, "legend": True}
                                                 for c in df.columns if c.startswith("α")})

        def on_edit(event):
            value = table.value
            if names:
                model.set_param(event.column, value[event.column].to_numpy())
            else:
                model.set_param("alpha", value[[f"α·{j}" for j in range(6)]].to_numpy())
                model.set_param("beta", value["β"].to_numpy())

        table.on_edit(on_edit)
        holder[:] = [pn.pane.Markdown("**parameters** (edit a cell)"), table]

    build()
    model.param.watch(lambda e: build() if e.new == 0 else None, "step_count")  # after reset / new θ
    return holder


def score_panel(model: LabModel) -> pn.viewable.Viewable:
    import holoviews as hv

    hv.extension("bokeh", logo=False)
    controls = pn.Param(model, parameters=["fm", "fm_weights", "prompt", "score_every"], show_name=False)
    upload = pn.widgets.FileInput(accept="image/*", name="target image")
    message = pn.pane.Markdown("")

    def on_upload(event):
        import io

        from PIL import Image

        try:
            model.set_target_image(np.asarray(Image.open(io.BytesIO(event.new)).convert("RGB")))
            message.object = "target image set"
        except Exception as exc:  # noqa: BLE001 - shown to the user
            message.object = f"**error**: {exc}"

    upload.param.watch(on_upload, "value")
    trace = pn.bind(lambda scores: hv.Curve(scores, "step", "loss").opts(width=320, height=180,
                                                                        title="supervised-target loss"),
                    model.param.scores)
    return pn.Column(pn.pane.Markdown("**FM score trace** (prompt or target image)"), controls, upload, message,
                     pn.pane.HoloViews(trace))


def lab_page(model: LabModel | None = None, runs_dir: str = "runs", period_ms: int = 30) -> pn.viewable.Viewable:
    model = model or LabModel(snapshot_dir=str(Path(runs_dir) / "snapshots"))
    notice = pn.pane.Markdown("")
    run_id = pn.widgets.TextInput(name="run id", placeholder="a run in the run store")
    load = pn.widgets.Button(name="load best θ")

    def do_load(rid):
        try:
            model.load_run(runs_dir, rid)
            notice.object = f"loaded the best θ of `{rid}`"
        except ValueError as exc:
            notice.object = f"**error**: {exc}"

    load.on_click(lambda e: do_load(run_id.value))
    theta_file = pn.widgets.FileInput(accept=".npy", name="θ file (.npy)")
    preset = pn.widgets.Button(name="preset: reference θ = 0")

    def on_theta_file(event):
        import io

        try:
            model.set_theta(np.load(io.BytesIO(event.new), allow_pickle=False))
            notice.object = f"loaded θ from `{theta_file.filename}`"
        except Exception as exc:  # noqa: BLE001 - shown to the user
            notice.object = f"**error**: {exc}"

    theta_file.param.watch(on_theta_file, "value")
    preset.on_click(lambda e: model.set_theta(np.zeros(model.sub.n_params)))
    wanted = (pn.state.session_args or {}).get("run") if pn.state.curdoc else None
    if wanted:
        run_id.value = wanted[0].decode()
        do_load(run_id.value)
    controls = pn.Param(model, parameters=["substrate", "seed", "steps_per_frame", "sigma", "playing"],
                        widgets={"playing": {"type": pn.widgets.Toggle, "name": "▶ play / pause"}},
                        show_name=False)
    step, reset, mutate = (pn.widgets.Button(name=n) for n in ("step", "reset", "new θ (σ-mutation)"))
    snap, video = pn.widgets.Button(name="snapshot PNG"), pn.widgets.Button(name="export GIF")
    saved = pn.pane.Markdown("")
    step.on_click(lambda e: model.advance())
    reset.on_click(lambda e: model.reset())
    mutate.on_click(lambda e: model.mutate())
    snap.on_click(lambda e: setattr(saved, "object", f"saved `{model.snapshot()}`"))

    def export_video(event):
        from workbench.export import export

        out = Path(model.snapshot_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = export(model.sub, model.params, 120, out / f"{model.substrate}-seed{model.seed}.gif", seed=model.seed,
                      size=RENDER_SIZE.get(model.substrate, 224), every=2)
        saved.object = f"saved `{path}`"

    video.on_click(export_video)
    status = pn.bind(lambda n, fps: f"step **{n}** · {fps:.1f} fps", model.param.step_count, model.param.fps)
    callback = pn.state.add_periodic_callback(model.tick, period=period_ms, start=False)
    model.param.watch(lambda e: callback.start() if e.new else callback.stop(), "playing")
    left = pn.Column("## Lab", controls, pn.Row(step, reset), mutate, pn.Row(snap, video), saved,
                     pn.pane.Markdown(status), pn.Row(run_id, load), theta_file, preset, notice, width=340)
    return pn.Row(left, pn.Column(frame_view(model)), pn.Column(param_editor(model), score_panel(model), width=340))


if __name__.startswith("bokeh"):
    pn.extension(inline=True)
    lab_page().servable(title="workbench · lab")
