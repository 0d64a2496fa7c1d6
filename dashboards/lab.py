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

    def __init__(self, **params):
        super().__init__(**params)
        self._rng = np.random.default_rng(self.seed)
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
        self._render()

    def set_theta(self, theta: np.ndarray) -> None:
        theta = np.asarray(theta, np.float64)
        self.sub.decode(theta)  # checks shape and values before anything changes
        self.theta = theta
        self.reset()

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
        elapsed = time.perf_counter() - start
        with param.edit_constant(self):
            self.fps = 0.8 * self.fps + 0.2 / max(elapsed, 1e-6) if self.fps else 1.0 / max(elapsed, 1e-6)

    def tick(self) -> None:
        """What the page's periodic callback calls: advance while playing."""
        if self.playing:
            self.advance()

    def snapshot(self) -> Path:
        """Save the current frame as PNG and θ as .npy; returns the PNG path."""
        from PIL import Image

        out = Path(self.snapshot_dir)
        out.mkdir(parents=True, exist_ok=True)
        stem = out / f"{self.substrate}-seed{self.seed}-step{self.step_count}"
        Image.fromarray(self.frame).save(stem.with_suffix(".png"))
        np.save(stem.with_suffix(".npy"), self.theta)
        return stem.with_suffix(".png")

    def _render(self) -> None:
        frame = self.sub.render(self.state, self.params, size=RENDER_SIZE.get(self.substrate, 224))
        self.frame = (np.clip(frame, 0, 1) * 255 + 0.5).astype(np.uint8)


def frame_view(model: LabModel):
    """A Bokeh RGBA image of the model's frame, updated in place (no new plot per frame)."""
    from bokeh.models import ColumnDataSource
    from bokeh.plotting import figure

    def rgba(frame: np.ndarray) -> np.ndarray:
        h, w = frame.shape[:2]
        img = np.empty((h, w), np.uint32)
        view = img.view(np.uint8).reshape(h, w, 4)
        view[..., :3], view[..., 3] = frame, 255
        # Bokeh draws row 0 at the bottom; image axis 0 is x in the reference layout, so transpose
        return img.T[::-1].copy()

    source = ColumnDataSource({"image": [rgba(model.frame)]})
    fig = figure(width=512, height=512, x_range=(0, 1), y_range=(0, 1), toolbar_location=None,
                 match_aspect=True, name="lab-frame")
    fig.axis.visible = False
    fig.grid.visible = False
    fig.image_rgba(image="image", x=0, y=0, dw=1, dh=1, source=source)

    def update(event):
        source.data = {"image": [rgba(event.new)]}

    model.param.watch(update, "frame")
    return pn.pane.Bokeh(fig)


def lab_page(model: LabModel | None = None, period_ms: int = 40) -> pn.viewable.Viewable:
    model = model or LabModel()
    controls = pn.Param(model, parameters=["substrate", "seed", "steps_per_frame", "sigma", "playing"],
                        widgets={"playing": {"type": pn.widgets.Toggle, "name": "▶ play / pause"}},
                        show_name=False)
    step = pn.widgets.Button(name="step")
    reset = pn.widgets.Button(name="reset")
    mutate = pn.widgets.Button(name="new θ (σ-mutation)")
    snap = pn.widgets.Button(name="snapshot PNG")
    saved = pn.pane.Markdown("")
    step.on_click(lambda e: model.advance())
    reset.on_click(lambda e: model.reset())
    mutate.on_click(lambda e: model.mutate())
    snap.on_click(lambda e: setattr(saved, "object", f"saved `{model.snapshot()}`"))
    status = pn.bind(lambda n, fps: f"step **{n}** · {fps:.1f} fps", model.param.step_count, model.param.fps)
    callback = pn.state.add_periodic_callback(model.tick, period=period_ms, start=False)
    model.param.watch(lambda e: callback.start() if e.new else callback.stop(), "playing")
    return pn.Row(pn.Column("## Lab", controls, pn.Row(step, reset), mutate, snap, saved, pn.pane.Markdown(status),
                            width=320),
                  frame_view(model))


if __name__.startswith("bokeh"):
    pn.extension(inline=True)
    lab_page().servable(title="workbench · lab")
