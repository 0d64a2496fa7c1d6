"""Dashboards: the models without a browser, and the served pages in a real Chromium (Playwright), offline."""

import asyncio
import contextlib
import html
import itertools
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from workbench.dashboards.lab import LabModel
from workbench.dashboards.runs import RunsModel
from workbench.dashboards.search import SearchModel
from workbench.local_server import first_answer, free_port, wait_live

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SERVED: dict[str, dict] = {}  # server url -> {"runs": folder, "log": server log file, "ids": {...}}


# --- runs made once for the module ---------------------------------------------------------------------------

def _illumination(runs) -> str:
    from workbench.asal.driver import SearchConfig, run_search
    from workbench.asal.evaluate import EvalConfig
    from workbench.runs import RunStore

    cfg = SearchConfig(kind="illuminate", eval=EvalConfig("boids", "pixels", steps=20), iters=3, pop=6, population=16)
    return run_search(cfg, RunStore(runs)).id


def _openended(runs, seed: int) -> str:
    from workbench.asal.driver import SearchConfig, run_search
    from workbench.asal.evaluate import EvalConfig
    from workbench.runs import RunStore

    cfg = SearchConfig(kind="openended", eval=EvalConfig("boids", "pixels", steps=10, frames=2), iters=2, pop=4,
                       seed=seed)
    return run_search(cfg, RunStore(runs)).id


def _merge_runs(runs, zoo) -> dict[str, str]:
    from workbench.merge.evolution import EvolveConfig, evolve
    from workbench.runs import RunStore

    return {method: evolve(EvolveConfig(zoo=str(zoo), models=["add", "sort"], method=method, iters=2, pop=4, n_eval=8,
                                        n_test=8), RunStore(runs)).id for method in ("dare_ties", "dfs")}


def _diverging(runs, target: Path, iters: int = 1) -> str:
    """A target search some of whose candidates diverge (NaN) at every iteration: Particle Lenia at θ of 100 σ
    (tests/test_diverged.py), against a black picture (`target`, written here). Seconds on a CPU."""
    from workbench.asal.driver import SearchConfig, run_search
    from workbench.asal.evaluate import EvalConfig
    from workbench.runs import RunStore

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(target)
    cfg = SearchConfig("target", EvalConfig("plenia", "pixels", steps=20, size=32, chunk=4, device="cpu"),
                       target_image=str(target), iters=iters, pop=4, sigma=100.0, seed=0)
    return run_search(cfg, RunStore(runs)).id


@pytest.fixture(scope="module")
def runs(tmp_path_factory, quick_zoo) -> dict:
    """A run folder with a run of every kind: {"dir", "illuminate", "openended": [a, b], "dare_ties", "dfs"}."""
    folder = tmp_path_factory.mktemp("runs")
    return {"dir": str(folder), "illuminate": _illumination(folder),
            "openended": [_openended(folder, s) for s in (0, 1)], **_merge_runs(folder, quick_zoo)}


# --- models, no browser -----------------------------------------------------------------------------------------

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
    kept = np.load(png.with_suffix(".npy"))
    model.mutate()  # a new θ, again at step 0: its snapshot has a name of its own, the first stays
    again = model.snapshot()
    assert again.name == png.stem + "-2.png" and np.array_equal(np.load(png.with_suffix(".npy")), kept)
    assert not np.array_equal(np.load(again.with_suffix(".npy")), kept)
    model.substrate = "plife"
    assert model.frame.shape == (224, 224, 3) and model.theta.shape == (42,)
    with pytest.raises(ValueError):
        model.set_theta(np.zeros(5))
    with pytest.raises(ValueError, match="a population; pick one member"):  # kept, it broke every later step
        model.set_theta(np.zeros((2, 42)))
    assert model.theta.shape == (42,)
    model.advance()
    assert model.frame.shape == (224, 224, 3)


def wcag_contrast(a, b) -> float:
    """WCAG 2.1's contrast ratio of two colours, each "#rrggbb" or an RGB triple of floats in 0..1."""
    def luminance(c):
        rgb = np.array([int(c[i:i + 2], 16) / 255 for i in (1, 3, 5)] if isinstance(c, str) else c, float)
        rgb = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
        return float(rgb @ [0.2126, 0.7152, 0.0722])

    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_the_pages_own_text_colours_read_at_wcag_aa():
    """The pages' own colours for small text read at 4.5:1 (WCAG 2.1 AA) on what they are drawn on: a status badge's
    white, the header's links on the current page's and the hovered link's veil (the current one's read at 4.1:1),
    every text colour of the Home cards', the Runs gallery's and the QD elite card's CSS on its rule's background
    (a descendant on its ancestor rule's, else the white page: a seed's orange in the elite card read at 3.9:1), and
    the numbers written on heatmap cells (white went on viridis' middle green at 2.5:1, on Blues' at 2.4:1)."""
    from matplotlib import colormaps

    from workbench.dashboards.home import CARDS_CSS
    from workbench.dashboards.qd import CARD_CSS
    from workbench.dashboards.runs import GALLERY_CSS, STATUS_COLOURS
    from workbench.dashboards.shell import ACCENT, NAV_CSS
    from workbench.figures import text_colours

    for status, colour in STATUS_COLOURS.items():
        assert wcag_contrast("#ffffff", colour) >= 4.5, status
    accent = np.array([int(ACCENT[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    for rule in ("nav a.current", "nav a:hover"):
        alpha = float(re.search(re.escape(rule) + r" \{ background: rgba\(255,255,255,([.\d]+)\)", NAV_CSS)[1])
        assert wcag_contrast("#ffffff", accent * (1 - alpha) + alpha) >= 4.5, rule
    checked = 0
    for css in (CARDS_CSS, GALLERY_CSS, CARD_CSS):
        rules = {sel.strip(): body for sel, body in re.findall(r"([^{}]+)\{([^}]*)\}", css)}
        backgrounds = {sel: m[1] for sel, body in rules.items()
                       if (m := re.search(r"background(?:-color)?: (#[0-9a-fA-F]{6})", body))}
        for sel, body in rules.items():
            for colour in re.findall(r"(?<![-\w])color: (#[0-9a-fA-F]{3,6})\b", body):
                colour = colour if len(colour) == 7 else "#" + "".join(ch * 2 for ch in colour[1:])
                ground = backgrounds.get(sel) or backgrounds.get(sel.split()[0])
                if ground is None and colour == "#ffffff":
                    continue  # white on a colour set in the markup: the badges', checked above
                ground = ground or "#ffffff"
                assert wcag_contrast(colour, ground) >= 4.5, (sel, colour, ground)
                checked += 1
    assert checked >= 15  # the rules were read (a changed layout of the CSS would check nothing)
    values = np.linspace(0.0, 1.0, 401)
    for cmap in ("viridis", "Blues", "RdBu_r"):  # the maps the QD, Merge and Experts pages write numbers on
        inks, cells = text_colours(values, cmap, (0.0, 1.0)), colormaps[cmap](values)[:, :3]
        for value, ink, cell in zip(values, inks, cells, strict=True):
            assert wcag_contrast(ink, cell) >= 4.5, (cmap, value, ink)


def test_metric_thumbnail_draws_the_curve_or_the_bars():
    """Runs without a picture get their metric drawn: best-so-far as a line (accuracies on 0..1) with the metric's
    own values as dots, or one bar per unit (adapt runs), the best highlighted; nothing without data."""
    import pandas as pd

    from workbench.dashboards.runs import CURVE_BG, CURVE_DOT, CURVE_LINE, metric_thumbnail

    def colour(hex_):
        return np.array([int(hex_[i:i + 2], 16) for i in (1, 3, 5)], np.uint8)

    def rows_with(image, hex_):
        return np.flatnonzero((image == colour(hex_)).all(axis=-1).any(axis=1))

    flat = pd.DataFrame({"iteration": range(10), "best_loss": [-0.5] * 10,
                         "val_accuracy": [0.5 if i % 3 == 0 else np.nan for i in range(10)]})
    image = metric_thumbnail(flat, "val_accuracy", higher=True, width=224, height=149)
    assert image.shape == (149, 224, 3) and (image[0, 0] == colour(CURVE_BG)).all()
    line = rows_with(image, CURVE_LINE)
    assert len(line) and abs(line.mean() - (22 + 139) / 2) < 3  # 0.5 on a 0..1 scale: half-way down the plot
    assert len(rows_with(image, CURVE_DOT))  # the validation points
    falling = pd.DataFrame({"iteration": range(5), "best_loss": [0.9, 0.7, 0.7, 0.4, 0.3]})
    image = metric_thumbnail(falling, "loss", higher=False)
    cols = np.flatnonzero((image == colour(CURVE_LINE)).all(axis=-1).any(axis=0))
    first, last = (rows_with(image[:, c:c + 1], CURVE_LINE).mean() for c in (cols[0], cols[-1]))
    assert first < last  # a loss going down is drawn going down
    bars = pd.DataFrame({"iteration": range(3), "unit": ["base", "expert:add", "few-shot"],
                         "mean_accuracy": [0.25, 0.5, 0.75], "best_loss": [-0.25, -0.5, -0.75]})
    image = metric_thumbnail(bars, "accuracy", higher=True)
    assert len(rows_with(image, CURVE_DOT)) > len(rows_with(image, CURVE_LINE))  # the best bar is the tallest
    zeros = metric_thumbnail(bars.assign(mean_accuracy=0.0), "accuracy", higher=True)  # every strategy at 0
    assert len(rows_with(zeros, CURVE_DOT)) >= 2  # its bars seen above the axis line (the picture looked blank)
    assert metric_thumbnail(pd.DataFrame(), "loss", higher=False) is None
    # tables nobody planned for still draw: 150 units (bars under 2 px), a negative accuracy, a text column,
    # a missing iteration and an infinite best
    many = pd.DataFrame({"iteration": range(150), "unit": [f"u{i}" for i in range(150)],
                         "mean_accuracy": np.linspace(-0.2, 0.9, 150), "best_loss": -np.linspace(0, 0.9, 150)})
    assert metric_thumbnail(many, "accuracy", higher=True).shape == (149, 224, 3)
    odd = pd.DataFrame({"iteration": [0, None, 2], "best_loss": [0.5, np.inf, 0.4], "loss": ["a", "b", "c"]})
    assert len(rows_with(metric_thumbnail(odd, "loss", higher=False), CURVE_LINE))


def test_lab_switch_warms_up_without_moving_the_state():
    """The menu's switch (run on a worker thread by the page) shows the new substrate at step 0 and compiles
    its step by stepping a throwaway copy: the state, frame and step count on show stay as they were."""
    model = LabModel(substrate="lenia")
    model.steps_per_frame = 3
    model.switch("boids")
    assert model.substrate == "boids" and model.step_count == 0
    reference = LabModel(substrate="boids")
    np.testing.assert_array_equal(model.frame, reference.frame)
    model.warm_up()
    np.testing.assert_array_equal(model.frame, reference.frame)
    model.advance()  # the warmed-up step is the real one: same as a model that never warmed up
    reference.steps_per_frame = 3
    reference.advance()
    assert model.step_count == 3
    np.testing.assert_array_equal(model.frame, reference.frame)


def test_lab_switch_requests_and_failures():
    """Only the latest menu pick runs (an overtaken one does nothing); a substrate that cannot be built changes
    nothing (the model keeps showing what it showed)."""
    model = LabModel(substrate="lenia")
    first, second = model.request_switch(), model.request_switch()
    assert model.switch("boids", first) is False and model.substrate == "lenia"
    assert model.switch("plife", second) is True and model.substrate == model.sub.name == "plife"
    shown = model.frame.copy()
    with pytest.raises(ValueError, match="unknown substrate 'nope'"):
        model.switch("nope")
    assert model.substrate == model.sub.name == "plife" and np.array_equal(model.frame, shown)


def test_lab_tick_skips_a_frame_while_a_load_holds_the_model():
    import threading

    model = LabModel(substrate="boids", playing=True)
    held, release = threading.Event(), threading.Event()

    def load():  # what a load on the page's worker thread does: hold the model while it replaces θ
        with model._lock:
            held.set()
            release.wait(10)

    worker = threading.Thread(target=load)
    worker.start()
    held.wait(10)
    model.tick()  # the event loop's tick: must not wait for the load
    assert model.step_count == 0
    release.set()
    worker.join()
    model.tick()
    assert model.step_count == 1


def test_an_fm_chosen_while_another_loads_is_the_one_kept(clip_weights, tmp_path):
    """CLIP still loading (here: another session's load of the same weights holds it) when pixels is chosen: the
    pixels model is the one the Lab keeps and scores with; the CLIP load ending after it is not kept (it was, and
    the trace scored with CLIP under "pixels"). A score the FM cannot make is said in the trace at once."""
    import threading
    from pathlib import Path

    from workbench import fm as fm_module
    from workbench.kernels.device import resolve_device

    model = LabModel(substrate="boids", snapshot_dir=str(tmp_path), prompt="a caterpillar",
                     fm_weights=str(clip_weights))
    model.fm = "clip"
    place = ("clip", str(Path(clip_weights).resolve()), str(resolve_device(None)))
    with fm_module._SHARED_LOCK:
        held = fm_module._SHARED_LOCKS.setdefault(place, threading.Lock())
    held.acquire()  # another session's load of these weights, under way
    loading = threading.Thread(target=model.load_fm)
    try:
        loading.start()
        time.sleep(0.5)  # at the held load
        model.fm = "pixels"  # chosen meanwhile
        assert model.load_fm().name == "pixels"
    finally:
        held.release()
    loading.join(timeout=300)
    assert model.fm == "pixels" and model.load_fm().name == "pixels"
    # a target image given while CLIP loads and pixels chosen meanwhile: scored with pixels' own embedding (CLIP's
    # was kept: "prompt embeddings of size 512 against frame embeddings of size 2352", the trace dead)
    model.fm = "clip"
    held.acquire()
    uploading = threading.Thread(target=model.set_target_image, args=(np.full((32, 32, 3), 200, np.uint8),))
    try:
        uploading.start()
        time.sleep(0.5)  # at the held load
        model.fm = "pixels"
    finally:
        held.release()
    uploading.join(timeout=300)
    assert isinstance(model.score(), float) and model._target.shape == (1, model.load_fm().dim)
    model.set_target_image(None)
    triggered = []
    model.param.watch(lambda e: triggered.append(e), "scores")
    model.playing = True
    for _ in range(model.score_every):  # pixels has no text encoder: the trace hears it at the first score
        model.tick()
    assert "no text encoder" in model.standing_problem() and triggered


@pytest.mark.parametrize("substrate, edit", [
    ("lenia", lambda m: m.set_cell("m", (0,), float(m.params["m"][0]) + 0.05)),
    ("gol", lambda m: m.set_rule(6216)),  # HighLife, B36/S23
    ("plenia", lambda m: m.set_scalar("mu_g", 0.7)),
])
def test_lab_steps_play_the_parameters_on_show(substrate, edit):
    """The Lab checks its parameters and moves them to the device once per edit, not at each frame's step and
    render: the frame after an edit is the substrate's own step and render of the edited parameters (not of the
    ones before), and the parameters on show are read-only (an array edited in place would not reach the steps)."""
    from workbench.dashboards.lab import RENDER_SIZE
    from workbench.export import to_uint8

    model = LabModel(substrate=substrate)
    model.advance(score_needs_fm=False)
    before, state = model.sub.decode(model.theta), model.state
    edit(model)
    model.advance(score_needs_fm=False)
    size = RENDER_SIZE.get(substrate, 224)

    def played(params):
        return to_uint8(model.sub.render(model.sub.step(state, params, 1), params, size=size))

    np.testing.assert_array_equal(model.frame, played(model.sub.decode(model.theta)))
    assert not np.array_equal(model.frame, played(before))  # the edit shows in this frame already
    for name, value in model.params.items():
        if isinstance(value, np.ndarray):  # (Particle Lenia's are NumPy scalars)
            with pytest.raises(ValueError, match="read-only"):
                value[...] = 0
        with pytest.raises(TypeError):
            model.params[name] = before[name]


def test_lab_status_redraws_at_most_every_period_while_playing():
    """The status line (step, frames/s) redrew at each frame, twice, half of a Boids frame's time on the event
    loop: while playing it redraws at most every `every` seconds; a pause, a step or a reset shows at once."""
    from workbench.dashboards.lab import status_view

    model = LabModel(substrate="gol")
    pane = status_view(model, every=3600.0)
    assert pane.object == "paused · step **0** · 0.0 frames/s computed"
    model.playing = True
    assert pane.object.startswith("playing · step **0**")
    for _ in range(5):
        model.advance(score_needs_fm=False)
    assert pane.object.startswith("playing · step **0**")  # within the period: not redrawn
    model.playing = False
    # (not "0.0 frames/s" alone: a rate of 890.0 holds it, which failed the test one run in many)
    assert pane.object.startswith("paused · step **5** ·") and "· 0.0 frames/s" not in pane.object
    model.advance(score_needs_fm=False)  # a step while paused
    assert pane.object.startswith("paused · step **6** ·")
    model.playing = True
    model.reset()
    assert pane.object == "playing · step **0** · 0.0 frames/s computed"


def _first_non_finite_step(sub, theta: np.ndarray, steps: int = 0, then: dict | None = None, limit: int = 64) -> int:
    """The step at which Particle Lenia's state first holds a NaN or inf, stepped one at a time from the Lab's initial
    state (seed 0): θ's parameters for `steps` steps, then `then`'s (a value typed meanwhile). Found with the
    substrate alone, as the searches' check reads it (evaluate._diverged), not with the Lab's code."""
    params = sub.decode(theta)
    state = sub.step(sub.init(params, seed=0), params, steps) if steps else sub.init(params, seed=0)
    params = {**params, **(then or {})}
    for n in range(steps + 1, steps + limit + 1):
        state = sub.step(state, params, 1)
        if not np.isfinite(sub.state_to_arrays(state)["x"]).all():
            return n
    raise AssertionError(f"finite after {steps + limit} steps")


def test_lab_stops_says_why_and_scores_nothing_once_a_typed_value_makes_it_diverge():
    """A Particle Lenia value typed past its slider (σ_G = 1e-20; the slider starts at 0.015, its box takes any
    positive number) blows the swarm up within a frame. (c_rep = 1e20 does too, from the initial state, but a browser
    cannot send it: Panel's float box fails on a number past int64, JSON's whole number, and keeps the old value.)
    The Lab played on: its state all NaN, a black frame (NaN is black), a score of that black frame (against a black
    target: the best there is), "playing" and a frame rate, and not a word. Now it stops at that frame, says at which
    step it diverged and which value to raise, steps nothing more (not a step, a render nor a score: NaN stays NaN),
    and its score view says why it shows no score; the value raised, the notice says a reset plays it, and a reset
    plays again."""
    import panel as pn

    from workbench.dashboards.lab import param_editor, score_trace, status_view

    model = LabModel(substrate="plenia", fm="pixels", score_every=1, steps_per_frame=16)
    model.set_target_image(np.zeros((32, 32, 3), np.uint8))  # black: the diverged frame was its best match
    (slider,) = [s for s in pn.Column(param_editor(model)).select(pn.widgets.EditableFloatSlider)
                 if "scalar-sigma_g" in s.css_classes]
    trace, status = score_trace(model), status_view(model, every=0.0)
    assert (slider.start, slider.end) == (0.015, 0.3)  # what the slider reaches: 1e-20 is typed into its box
    slider.value = 1e-20
    assert model.params["sigma_g"] == np.float32(1e-20) and model.message == ""  # taken, as any positive value
    expected = _first_non_finite_step(model.sub, np.zeros(6), then={"sigma_g": np.float32(1e-20)})
    assert 0 < expected <= 16  # within the first frame's 16 steps
    model.playing = True
    model.tick()
    assert not np.isfinite(model.state.arrays["x"].numpy()).any() and not model.frame.any()  # NaN, drawn black
    assert (model.step_count, model.playing, model.scores) == (16, False, [])  # it played on, and scored -1.0
    said = f"the simulation diverged (NaN or inf) at step {expected}"
    assert model.diverged_at == expected
    assert model.divergence == f"{said}: raise σ_G (now 1e-20; its slider starts at 0.015), then reset"
    assert model.score() is None  # the black frame is no picture to score
    assert f"no score: {said}; its frame (black) is no picture to score" in trace.objects[0].object
    assert status.object == "stopped · step **16** · **diverged** (NaN or inf)"
    # nothing stepped any more: play pressed again goes back to paused, a step does nothing
    state = model.state
    model.playing = True
    model.tick()
    model.advance()
    assert (model.state is state, model.step_count, model.playing, model.scores) == (True, 16, False, [])
    # the value raised (by the slider): the state is still NaN, the notice says the reset that plays it
    slider.value = 0.15
    assert model.diverged_at == expected
    assert model.divergence == f"{said}: reset to play the parameters now on show from step 0"
    model.reset()
    assert (model.diverged_at, model.divergence, model.scores) == (None, "", [])
    assert status.object.startswith("paused · step **0** ·")
    model.advance()  # σ_G = 0.15 from the initial state
    assert model.step_count == 16 and model.diverged_at is None and len(model.scores) == 1
    assert np.isfinite(model.state.arrays["x"].numpy()).all()


def test_lab_finds_the_step_a_run_diverged_at_whatever_the_steps_per_frame(tmp_path):
    """θ = [0, 0, 0, 0, 0, 80] (c_rep = e^80, tests/test_diverged.py) loaded from a file diverges within a few steps:
    the Lab checks once per frame, and says the step itself (Particle Lenia is deterministic: the frame's steps
    replayed once, one by one), the same at 1, 16 or 64 steps a frame. The page shows the notice above the frame
    until a reset, a new θ or another substrate."""
    import panel as pn

    from workbench.dashboards.lab import lab_page
    from workbench.dashboards.shell import plain

    theta = np.array([0, 0, 0, 0, 0, 80.0])
    expected = _first_non_finite_step(LabModel(substrate="plenia").sub, theta)
    model = LabModel(substrate="plenia", snapshot_dir=str(tmp_path))
    page = lab_page(model, runs_dir=str(tmp_path))
    (notice,) = [a for a in pn.Column(*page.main).select(pn.pane.Alert) if "lab-diverged" in a.css_classes]
    for spf in (1, 16, 64):
        model.steps_per_frame = spf
        model.set_theta(theta)
        assert not notice.visible
        for _ in range(64):
            model.advance()
            if model.diverged_at is not None:
                break
        assert model.diverged_at == expected, spf
        assert model.step_count == -(-expected // spf) * spf  # stopped at the frame that diverged
        assert model.divergence == (f"the simulation diverged (NaN or inf) at step {expected}: lower c_rep (now "
                                    f"{float(np.float32(np.exp(80))):.4g}; its slider ends at 2), then reset")
        assert notice.visible and notice.object == plain(model.divergence)
    model.substrate = "boids"
    assert not notice.visible and model.diverged_at is None


def test_lab_checks_the_state_not_only_the_frame_it_draws():
    """Particle Life draws its particles one by one and skips a NaN one: a frame stays finite while NaN spreads
    through the swarm (one NaN particle: hundreds after a step). The Lab checks the state too, as the searches do
    (evaluate._diverged). Particle Life is stochastic (a replay draws other noise): the step is the frame's, "by"
    it, and with θ as it was the notice says a reset alone may diverge again."""
    import torch

    from workbench.simulations.base import State

    model = LabModel(substrate="plife", steps_per_frame=4)
    arrays = {k: v.clone() for k, v in model.state.arrays.items()}
    arrays["x"][0, 0, 0] = float("nan")  # a state gone wrong (state_from_arrays refuses to make one)
    model.state = State(model.state.substrate, arrays, model.state.batched)
    model.advance()
    assert torch.isnan(model.state.arrays["x"]).sum() > 1 and model.frame.any()  # a frame drawn, of a NaN swarm
    assert np.isfinite(model._rendered).all()  # (what the old check of the frame alone saw)
    assert (model.diverged_at, model.step_count) == (4, 4)
    assert model.divergence == ("the simulation diverged (NaN or inf) by step 4: reset (the same θ may diverge "
                                "again), or change θ (the editor, then reset; the preset; a σ-mutation)")


def test_lab_model_loads_runs_edits_parameters_and_scores(runs):
    model = LabModel(substrate="lenia")
    resets = model.resets
    model.load_run(runs["dir"], runs["illuminate"])
    assert model.substrate == "boids" and model.theta.shape == (193,)
    assert model.resets > resets  # what the parameter tables redraw on (step_count stays 0: no event)
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
    # a reset (a seed, a θ, a substrate) starts the count of frames again, and the speed: the first score came at
    # whatever frame the count had reached, and the frames/s of the θ before stayed on show
    lenia.advance()
    assert lenia.fps > 0
    lenia.seed += 1
    assert lenia.fps == 0.0 and lenia.scores == []
    lenia.advance()
    assert lenia.scores == []  # one frame: the first score comes at the second
    lenia.advance()
    assert [s for s, _ in lenia.scores] == [2 * lenia.steps_per_frame]
    # an FM that does not load: the trace scores nothing, and says so
    lenia.fm_failed("FM clip did not load")
    lenia.advance()
    lenia.advance()
    assert len(lenia.scores) == 1
    # another FM embeds the target image again (the pixels model's embedding, of another size, raised in the
    # page's tick at every frame)
    lenia.fm = "efficientnet-lite0"
    assert lenia.scores == [] and -1.0 <= lenia.score() <= 0.0
    assert LabModel(substrate="boids").score() is None  # no target: no score
    # a prompt the FM cannot read (pixels has no text encoder): said once on the page, the frames go on (it raised
    # in the page's periodic tick at every scored frame: a traceback in the server's log each time)
    words = LabModel(substrate="boids", fm="pixels", prompt="a flock", score_every=1)
    for _ in range(3):
        words.advance()
    assert words.step_count == 3 * words.steps_per_frame and words.scores == []
    assert words.message_kind == "danger" and "no text encoder" in words.message


def test_lab_table_edits_move_theta_so_a_snapshot_or_reset_plays_them(tmp_path):
    """A cell edited in the Lab's table (Lenia's m, s, h; Particle Life's α, β) moves θ with the parameters: the
    snapshot's θ, a reset and a GIF play the edit (θ stayed the default, the edit lost on save). Only the numbers
    edited move θ; a number θ cannot reach is refused with its range, the cell put back."""
    import panel as pn
    from panel.models.tabulator import TableEditEvent

    from workbench.dashboards.lab import param_editor

    model = LabModel(substrate="lenia", snapshot_dir=str(tmp_path))
    [table] = [w for w in param_editor(model).objects if isinstance(w, pn.widgets.Tabulator)]
    m = model.params["m"].copy()
    table.patch({"m": [(1, 0.2)]})
    table._process_event(TableEditEvent(model=None, column="m", row=1))
    assert model.message == "" and model.params["m"][1] == pytest.approx(0.2) and np.count_nonzero(model.theta) == 1
    snap = model.snapshot()
    theta = np.load(next(tmp_path.glob("*.npy")))
    np.testing.assert_array_equal(theta, model.theta)
    assert model.sub.decode(theta)["m"][1] == pytest.approx(0.2), snap
    model.reset()  # back to the start of the edited θ, not the pattern's
    assert model.params["m"][1] == pytest.approx(0.2) and model.params["m"][0] == m[0]
    high = float(np.float32(1 / (1 + np.exp(-(model.sub.base[0] + 1.0)))))  # m[0]'s bound, as float32 shows it
    model.set_cell("m", (0,), high)
    assert model.theta[0] == 1.0 and model.message == ""
    table.patch({"s": [(0, 7.0)]})
    table._process_event(TableEditEvent(model=None, column="s", row=0))
    assert model.message_kind == "danger" and "s[0] = 7 is out of θ's reach: it moves s[0] from" in model.message
    assert np.count_nonzero(model.theta) == 2
    life = LabModel(substrate="plife")
    [table] = [w for w in param_editor(life).objects if isinstance(w, pn.widgets.Tabulator)]
    table.patch({"α·2": [(1, 0.5)]})
    table._process_event(TableEditEvent(model=None, column="α·2", row=1))
    assert life.params["alpha"][1, 2] == pytest.approx(0.5) and np.flatnonzero(life.theta).tolist() == [6 + 6 + 2]
    table.patch({"β": [(0, 1.0)]})
    table._process_event(TableEditEvent(model=None, column="β", row=0))
    assert "beta[0] = 1: beta takes numbers between 0 and 1 (both left out)" in life.message
    nca = LabModel(substrate="nca_d1")
    name, weights = next(iter(nca.params.items()))
    with pytest.raises(ValueError, match="θ is not set parameter by parameter"):
        nca.set_param(name, np.zeros_like(weights))


def test_lab_messages_follow_the_last_action():
    """The alert is about the last action: a refusal went on showing over later actions that worked. An emptied
    table cell is refused in the page's words and shows the value kept again (it showed "-"). An FM without a
    text encoder is said when it loads, not "loaded: the trace scores frames with it", and in the page's words
    (the FM's own message names CLI flags); that standing error stays over later actions."""
    import panel as pn
    from panel.models.tabulator import TableEditEvent

    from workbench.dashboards.lab import param_editor

    model = LabModel(substrate="lenia")
    [table] = [w for w in param_editor(model).objects if isinstance(w, pn.widgets.Tabulator)]
    m = model.params["m"].copy()
    table.patch({"m": [(0, float("nan"))]})  # what the browser sends for an emptied cell
    table._process_event(TableEditEvent(model=None, column="m", row=0))
    assert model.message_kind == "danger" and "left empty" in model.message, model.message
    np.testing.assert_array_equal(model.params["m"], m)
    np.testing.assert_array_equal(table.value["m"].to_numpy(), m.astype(float).round(4))  # the value kept, shown
    table.patch({"m": [(0, m[0] + 0.01)]})  # the next edit works: the refusal goes
    table._process_event(TableEditEvent(model=None, column="m", row=0))
    assert model.message == "" and model.params["m"][0] == pytest.approx(m[0] + 0.01)
    model.tell("cannot use x.npy as θ: …", "danger")
    model.mutate()  # a new θ
    assert model.message == ""
    model.tell("saved snapshots/lenia.png", "success")
    model.seed += 1
    assert model.message == ""
    # pixels has no text encoder: the prompt cannot be scored, which is said in the page's words and stays
    words = LabModel(substrate="boids", fm="pixels", prompt="a flock", score_every=1)
    words.load_fm()
    assert "no text encoder" in words.score_problem() and "--" not in words.score_problem()
    words.advance()
    assert words.message == f"no FM score: {words.score_problem()}" and words.message_kind == "danger"
    words.reset()
    assert words.message == f"no FM score: {words.score_problem()}"
    words.prompt = ""
    assert words.score_problem() == ""
    # said by the page as the FM loads, before any frame is scored (_score_error not set yet): it stays too
    early = LabModel(substrate="boids", fm="pixels", prompt="a flock")
    early.load_fm()
    early.tell(f"no FM score: {early.score_problem()}", "danger")
    early.reset()
    assert early.message.startswith("no FM score")
    plife = LabModel(substrate="plife")
    [grid] = [w for w in param_editor(plife).objects if isinstance(w, pn.widgets.Tabulator)]
    assert grid.layout == "fit_columns"  # its eight columns fit the editor's width


def test_the_lab_plays_a_runs_best_from_the_initial_state_it_scored_from(runs, tmp_path):
    """Loading a run's best θ sets the Lab's seed to the one its best was scored from (run.json's best_seed), so
    the Lab shows what best.png and best.mp4 show; the seed the Lab happened to hold played another rollout. The
    sample runs' best seed is 0, the Lab's default: a copy of one records 7 here."""
    import shutil

    from workbench.runs import RunStore

    run_id = runs["openended"][0]
    shutil.copytree(Path(runs["dir"]) / run_id, tmp_path / run_id)
    RunStore(tmp_path).open(run_id).update(best_seed=7)
    model = LabModel(substrate="boids", seed=3)
    model.load_run(str(tmp_path), run_id)
    assert model.seed == 7


def test_lab_model_tells_why_a_run_cannot_be_loaded(runs):
    """Bug: a merge run's id gave KeyError('eval') in the server log and nothing on the page."""
    model = LabModel(substrate="lenia")
    with pytest.raises(ValueError, match="is a merge run"):
        model.load_run(runs["dir"], runs["dare_ties"])
    assert model.open_run(runs["dir"], runs["openended"][0])
    assert model.message_kind == "success" and "loaded the best θ" in model.message
    theta = model.theta.copy()
    for bad, why in ((runs["dfs"], "merge run"), ("no-such-run", "no run 'no-such-run'"), ("  ", "give a run id")):
        assert not model.open_run(runs["dir"], bad)
        assert model.message_kind == "danger" and why in model.message, model.message  # replaces the last one
        np.testing.assert_array_equal(model.theta, theta)  # and nothing changed


def test_a_killed_run_is_interrupted_on_the_lab_not_running(runs, tmp_path):
    """run.json says "running" until its process writes otherwise: a killed run's own word. The Lab read it as it
    stood (the Merge page already said interrupted, with its resume; the Experts page: test_experts_page)."""
    import socket

    store = tmp_path / "killed"
    run_id = runs["openended"][0]
    shutil.copytree(Path(runs["dir"]) / run_id, store / run_id)
    info = json.loads((store / run_id / "run.json").read_text())
    info.update(status="running", pid=2 ** 22 + 7, host=socket.gethostname(), pid_started=1.0)
    (store / run_id / "run.json").write_text(json.dumps(info))
    (store / run_id / "best.npy").unlink()
    model = LabModel(substrate="lenia")
    assert not model.open_run(str(store), run_id)
    # in the words `figure frames` / `figure video` use (figures.no_best_yet)
    assert f"run {run_id!r} has no best.npy: it is interrupted and writes one when it finishes; resume it with " \
           f"`workbench asal" in model.message and f"--resume {run_id}" in model.message, model.message


@pytest.mark.parametrize("page", ["atlas", "merge", "experts"])
def test_an_explorer_of_an_empty_folder_says_what_to_do_in_its_sidebar(tmp_path, page):
    """No run of its kinds yet: the note names the command that makes one, and the sidebar says to reload after
    (the Atlas had no sidebar at all)."""
    import importlib

    import panel as pn

    template = getattr(importlib.import_module(f"workbench.dashboards.{page}"), f"{page}_page")(str(tmp_path))
    said = [o.object for o in template.sidebar if isinstance(o, pn.pane.Markdown)]
    assert any("No runs to show yet" in text for text in said), said
    shown = [str(o.object) for o in pn.Column(*template.main).select(pn.pane.HTML)]  # the note in a stretching box
    assert any("<code>workbench " in text for text in shown), shown


def test_a_message_for_the_command_line_is_said_in_a_pages_words(tmp_path):
    """The library words its errors for the command line; a page shows them with its own fields' names (the Search
    page said "a target search needs --prompt TEXT", beside a field called Prompt)."""
    from workbench.asal.driver import SearchConfig
    from workbench.asal.evaluate import EvalConfig
    from workbench.dashboards.search import FIELDS, SearchModel, SearchViews
    from workbench.dashboards.shell import in_page_words

    with pytest.raises(ValueError) as refused:
        SearchConfig(kind="target", eval=EvalConfig("boids", "pixels", steps=8))
    said = in_page_words(str(refused.value), FIELDS)
    assert "**Prompt**" in said and "**Target image**" in said and "--" not in said and "TEXT" not in said, said
    assert in_page_words("give --frames K ≥ 2 or --other 3", {"--frames": "Frames"}) == \
        "give **Frames** ≥ 2 or --other 3"
    views = SearchViews(SearchModel(runs_dir=str(tmp_path), kind="target", fm="pixels"))
    views.safely(views.model.start)
    assert "**Prompt**" in views.status.object and "--prompt" not in views.status.object
    # a message that begins with a flag: plain() writes its first "-" as an entity (a list at a line's start)
    views = SearchViews(SearchModel(runs_dir=str(tmp_path), kind="target", fm="pixels", prompt="x", frames=50,
                                    steps=8))
    views.safely(views.model.start)
    assert "— **Frames** 50 is more than **Steps** 8" in views.status.object, views.status.object


def test_a_placeholder_sets_commands_as_code():
    """A page's placeholder names a command in backticks: set as code, the text escaped (the backticks showed)."""
    from workbench.dashboards.shell import placeholder

    box = placeholder("no run in <runs>: `workbench qd cycle --zoo Z` makes one").object
    assert "<code>workbench qd cycle --zoo Z</code>" in box and "&lt;runs&gt;" in box and "`" not in box


def shown_text(grid) -> str:
    """What the Runs page's gallery grid shows: its cards' HTML, one pane each."""
    return "".join(p.object for p in grid.objects)


def test_runs_model_gallery_filters_and_compares(runs):
    from workbench.dashboards.runs import best_text, gallery_html, table_shown, what_cell

    model = RunsModel(runs_dir=runs["dir"])
    ids = {runs["illuminate"], *runs["openended"], runs["dare_ties"], runs["dfs"]}
    table = model.table().set_index("id")
    assert set(table.index) == ids
    # each run's best in its own metric and direction, as its card says it (a merge run's fitness was shown
    # negated under best_loss)
    for row in model.shown():
        assert best_text(row) == (f"best {table.at[row['id'], 'metric'][:-2]} {table.at[row['id'], 'best']:.4g} "
                                  f"{table.at[row['id'], 'metric'][-1]}")
    assert "best_loss" not in table and set(table["metric"]) >= {"loss ↓", "fitness ↑"}, table["metric"]
    # what each run is, in the values its kind is described by (a merge's method sat under "substrate")
    assert "substrate" not in table and table.at[runs["openended"][0], "what"] == "boids · pixels · cma"
    assert table.at[runs["dare_ties"], "what"] == "dare_ties · add+sort", table["what"]
    # and on the page, HTML that breaks after a "+" or "/" (a task list broke inside its last task), escaped
    shown = table_shown(model).set_index("id")
    assert shown.at[runs["dare_ties"], "what"] == "dare_ties · add+<wbr>sort"
    assert shown.drop(columns="what").equals(table.drop(columns="what"))
    assert what_cell("a<b>&/c+d") == "a&lt;b&gt;&amp;/<wbr>c+<wbr>d"
    # the note before the time created, which reads as the card's (to the second, no "T" nor milliseconds)
    assert list(table.columns[-2:]) == ["note", "created"]
    # what a run is and its best first: at a laptop's 1366 px the best sat after done and unit, off to the right
    assert list(model.table().columns[:6]) == ["id", "kind", "what", "status", "metric", "best"]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", c) for c in table["created"]), table["created"]
    # newest first, as the gallery (the table listed the oldest first)
    assert list(model.table()["id"]) == [r["id"] for r in model.shown()] == model.ids[::-1]
    cards = {c["id"]: c for c in (model.card(r) for r in model.shown())}
    assert set(cards) == ids and all(c["thumbnail"].startswith("data:image/png;base64,") for c in cards.values())
    thumb = Image.open(__import__("io").BytesIO(__import__("base64").b64decode(
        cards[runs["dfs"]]["thumbnail"].split(",", 1)[1])))
    assert thumb.size == (224, 149)  # the DFS path drawn from the run's dfs.json
    assert cards[runs["illuminate"]]["links"][0] == ("Atlas", f"./atlas?run={runs['illuminate']}")
    assert cards[runs["openended"][0]]["links"] == [("Lab", f"./lab?run={runs['openended'][0]}"),
                                                    ("Search", f"./search?run={runs['openended'][0]}")]
    assert cards[runs["dare_ties"]]["links"] == [("Merge", f"./merge?run={runs['dare_ties']}")]
    assert "fitness" in cards[runs["dare_ties"]]["best"] or "loss" in cards[runs["dare_ties"]]["best"]
    model.kind = "merge"
    assert {r["id"] for r in model.shown()} == {runs["dare_ties"], runs["dfs"]}
    model.kind, model.query = "all", "illuminate"
    assert [r["id"] for r in model.shown()] == [runs["illuminate"]]
    # any status is shown as it is, with the command that resumes the run when the catalog has one
    row = {**model.shown()[0], "status": "interrupted",
           "resume_command": f"workbench asal illuminate --resume {runs['illuminate']} --runs {runs['dir']}"}
    page = gallery_html([model.card(row)], runs["dir"])
    assert 'data-status="interrupted"' in page and "--resume " + runs["illuminate"] in page
    assert best_text({"best": 0.75, "better": "higher", "metric": "fitness"}) == "best fitness 0.75 ↑"
    assert best_text({"best_loss": 0.5}) == "best loss 0.5 ↓"
    # in words, as the QD and Experts pages say them (the card said "best val_accuracy 0.5 ↑")
    assert best_text({"best": 0.5, "better": "higher", "metric": "val_accuracy"}) == "best validation accuracy 0.5 ↑"
    assert best_text({"best": 2.0, "better": "higher", "metric": "qd_score"}) == "best QD score 2 ↑"
    assert "No run yet in" in gallery_html([], runs["dir"]) and "no such folder" not in gallery_html([], runs["dir"])
    assert "(no such folder yet: the first run makes it)" in gallery_html([], runs["dir"] + "-typo")
    # a search without its best θ yet (stopped, running) opens on the Search page first, where it goes on (the
    # Lab said it had no best θ yet); a finished one in the Lab
    done = runs["openended"][0]
    assert [t for t, _ in model._links({"kind": "openended", "id": done})] == ["Lab", "Search"]
    assert [t for t, _ in model._links({"kind": "openended", "id": "not-finished"})] == ["Search", "Lab"]
    assert "No run matches the filters" in gallery_html([], runs["dir"], filtered=True)  # not "start a run"
    from workbench.dashboards.runs import MAX_COMPARED, curves_plot

    for run_id in runs["openended"]:
        model.toggle(run_id)
    cmp = model.comparison()
    curves = cmp.curves
    assert sorted(curves["run_id"].unique()) == sorted(runs["openended"]) and len(curves) == 4
    # the two open-endedness runs differ only by seed: one setting, drawn as its mean and band over the seeds
    assert [g.ids for g in cmp.groups] == [runs["openended"]]
    table = model.settings_table()
    assert list(table["id"]) == runs["openended"] and list(table["seed"]) == [0, 1]
    plotted = curves_plot(model).object
    assert [type(e).__name__ for e in plotted] == ["Area", "Curve"] and "(n=2)" in plotted.get(1).label
    model.toggle(runs["illuminate"])  # another kind: a setting of its own (its band is its one curve)
    assert model.selected == [*runs["openended"], runs["illuminate"]]
    assert len(model.comparison().groups) == 2 and "kind" in model.settings_table()
    # in another metric too (its population's loss, not a best so far): a panel of its own
    assert [[type(e).__name__ for e in panel] for panel in curves_plot(model).object] == [["Area", "Curve"]] * 2
    written = model.export(".svg")  # the figure for a paper, in the store's figures/ (no run's: kept when one goes)
    from workbench.figures import compare_curves, legend_names

    names = legend_names(compare_curves(model.comparison()))  # the settings' names, renamed for the paper
    renamed = model.export(".svg", rename={names[0]: "our search"}).read_text()
    assert "our search" in renamed and names[0] not in renamed and names[1] in renamed
    with pytest.raises(ValueError, match="--rename 'nope': the figure has no legend entry 'nope'"):
        model.export(".svg", rename={"nope": "x"})
    from figure_csv import check_csv  # the comparison's numbers: a row per band and mean point, renamed as the legend

    check_csv(model.export(".csv", rename={names[0]: "our search"}), compare_curves(model.comparison()),
              {names[0]: "our search"})
    wide = Image.open(model.export(".png", width=6.75, font="serif"))  # at a two-column page's width, 300 dpi
    assert 0.9 * 6.75 * 300 < wide.width <= 6.75 * 300, wide.size
    assert written.parent == Path(runs["dir"]) / "figures" and written.suffix == ".svg"
    assert written.read_text().lstrip().startswith("<?xml") and model.export(".svg") == written
    model.toggle(runs["openended"][0])  # ticked again: out
    assert model.selected == [runs["openended"][1], runs["illuminate"]]
    assert [[type(e).__name__ for e in panel] for panel in curves_plot(model).object] == [["Curve"], ["Curve"]]
    kept = model.selected
    for n in range(MAX_COMPARED):  # past MAX_COMPARED the oldest leave: both of the kept ones
        model.toggle(f"run-{n}")
    assert model.selected == [f"run-{n}" for n in range(MAX_COMPARED)] == model.ticked  # compared ones are ticked
    model.selected = kept
    assert model.ticked == kept
    # the table's ticks: any number, in the order ticked, all of them for a removal; the last MAX_COMPARED
    # compared (a ninth tick unticked the first, and a removal took eight runs at most)
    many = [f"run-{n}" for n in range(MAX_COMPARED + 2)]
    model.tick(many)
    assert model.ticked == many and model.selected == many[-MAX_COMPARED:]
    model.tick(many[1:])  # one unticked
    assert model.ticked == many[1:] and model.selected == many[-MAX_COMPARED:]
    model.selected = many[-MAX_COMPARED:-1]  # one taken out of the comparison (the compare menu): unticked too
    assert model.ticked == many[1:-1]
    model.tick(kept)
    assert model.ticked == model.selected == kept
    assert f"./merge?run={runs['dfs']}" in model.link(runs["dfs"])


def _document_events(view) -> list:
    """The changes a Bokeh document (a browser's session) is sent as `view` changes: its root attached to one."""
    from bokeh.document import Document

    doc = Document()
    doc.add_root(view.get_root(doc))
    events: list = []
    doc.on_change(events.append)
    return events


def test_the_gallery_sends_the_browser_only_the_cards_that_changed(runs):
    """While a run runs, the page redraws every FOLLOW_MS: only that run's card goes to the browser again (one
    pane for all cards resent every picture, 2-4 MB each time for 60 cards); a new run adds its card, the others
    stay; no card left: why, in words."""
    from workbench.dashboards.runs import Gallery

    model = RunsModel(runs_dir=runs["dir"])
    cards = [model.card(r) for r in model.shown()]
    gallery = Gallery(runs["dir"])
    gallery.show(cards)
    panes = list(gallery.grid.objects)
    events = _document_events(gallery.layout)
    going = {**cards[1], "status": "running", "steps": "7 it"}
    gallery.show([cards[0], going, *cards[2:]])
    assert [e.attr for e in events] == ["text"] and going["id"] in events[0].new  # that card alone
    assert not any(c["id"] in events[0].new for c in cards if c["id"] != going["id"])
    assert 'data-status="running"' in panes[1].object and gallery.grid.objects == panes
    events.clear()
    newcomer = {**cards[0], "id": "20991231-000000-openended-lenia-s9"}
    gallery.show([newcomer, cards[0], going, *cards[2:]])
    assert gallery.grid.objects[1:] == panes and len(gallery.grid.objects) == len(cards) + 1
    assert not [e for e in events if getattr(e, "attr", None) == "text"]  # the new card's pane, not the others' text
    assert newcomer["id"] in gallery.html and all(c["id"] in gallery.html for c in cards)
    gallery.show([cards[0], {**cards[0], "title": "again"}])  # a run once: its first card (one pane per run)
    assert len(gallery.grid.objects) == 1 and "again" not in gallery.html
    gallery.show([], filtered=True)
    assert "No run matches the filters" in gallery.html and not gallery.grid.visible and gallery.empty.visible


def test_the_runs_table_patches_the_cells_that_changed(runs):
    """The Table tab follows a running run by patching its cells (replacing the rows every FOLLOW_MS sent the
    whole catalog each time); other runs, or other columns: the rows are replaced."""
    import panel as pn
    from bokeh.document.events import ColumnDataChangedEvent, ColumnsPatchedEvent

    from workbench.dashboards.runs import patch_table

    model = RunsModel(runs_dir=runs["dir"])
    table = pn.widgets.Tabulator(model.table(), selectable="checkbox", disabled=True, show_index=False)
    events = _document_events(table)
    changed = model.table()
    changed.loc[1, "status"], changed.loc[2, "note"] = "running", "for figure 2"
    patch_table(table, changed)
    patches = [e for e in events if isinstance(e, ColumnsPatchedEvent)]
    assert len(patches) == 1 and sorted(patches[0].patches) == ["note", "status"], events
    assert table.value.equals(changed)
    events.clear()
    patch_table(table, changed)
    assert events == []  # nothing changed, nothing sent
    fewer = changed.iloc[1:].reset_index(drop=True)
    patch_table(table, fewer)
    assert table.value.equals(fewer) and not any(isinstance(e, ColumnsPatchedEvent) for e in events)
    assert any(isinstance(e, ColumnDataChangedEvent) or getattr(e, "attr", None) == "data" for e in events)


def test_a_search_not_done_shows_its_latest_population_in_the_gallery(tmp_path):
    import base64
    import io

    from workbench.asal.driver import SearchConfig, run_search
    from workbench.asal.evaluate import EvalConfig
    from workbench.runs import RunStore

    done = []
    cfg = SearchConfig(kind="openended", eval=EvalConfig("boids", "pixels", steps=8, frames=2), iters=5, pop=4)
    run = run_search(cfg, RunStore(tmp_path), on_iteration=lambda i, n, row: done.append(i),
                     should_stop=lambda: len(done) >= 2)
    assert run.status == "stopped" and not (run.path / "best.png").exists()
    model = RunsModel(runs_dir=str(tmp_path))
    card = model.card(model.shown()[0])
    thumb = Image.open(io.BytesIO(base64.b64decode(card["thumbnail"].split(",", 1)[1])))
    assert thumb.size == Image.open(run.path / "population.png").size  # its frames, not the loss curve (224 × 149)


def test_the_search_page_exports_a_runs_curve_and_frames_as_the_cli_writes_them(tmp_path):
    """Export for a paper on the Search page: the run on show's loss curve and its best simulation as a strip of
    frames, in its figures/ folder, the same bytes as `workbench figure curves|frames` (its own process), at the
    width and font asked too; before a run, and for frames before its best θ, one reason."""
    from forked import run

    model = SearchModel(runs_dir=str(tmp_path), kind="openended", substrate="boids", fm="pixels", steps=10,
                        frames=2, iters=2, pop=4)
    with pytest.raises(ValueError, match="no run on show"):
        model.export("curve")
    model.start()
    assert model.wait() == "done"
    run_id = model.job.run_id
    curve, strip = model.export("curve", ".pdf"), model.export("frames", ".svg", width=5.5, font="serif")
    assert curve == tmp_path / run_id / "figures" / f"{run_id}-curve.pdf"
    for what, page, printed in (("curves", curve, ()), ("frames", strip, ("--width", "5.5", "--font", "serif"))):
        done = run("figure", what, run_id, "--runs", str(tmp_path), *printed, "--out",
                   str(tmp_path / f"cli{page.suffix}"))
        assert done.returncode == 0, done.stderr
        assert (tmp_path / f"cli{page.suffix}").read_bytes() == page.read_bytes(), what
    assert model.export("frames", ".html").read_text().count("Bokeh") > 0
    from figure_csv import check_csv

    from workbench.figures import loss_curves

    check_csv(model.export("curve", ".csv"), loss_curves(tmp_path, [run_id]))  # a row per iteration
    with pytest.raises(ValueError, match=r"a strip of frames \(pictures of the simulation\) has no data"):
        model.export("frames", ".csv")
    with pytest.raises(ValueError, match="export one of curve, frames"):
        model.export("atlas")


TWO_SEARCHES = """
import sys
from workbench.dashboards.search import SearchModel
pages = [SearchModel(runs_dir=sys.argv[1], kind="openended", substrate="boids", fm="pixels", steps=10, frames=2,
                     iters=2, pop=4, seed=seed) for seed in (0, 1)]
for page in pages:
    page.start()
print([(page.wait(), page.job.error) for page in pages])
"""


def test_two_pages_start_searches_at_once_and_both_run(tmp_path):
    """Two browser tabs of one server pressing Start together: both searches run. Taichi's runtime is one per
    process and not thread-safe; the two threads compiling their first kernels at once failed one search at once
    ("Kernels cannot call other kernels", or an LLVM context assertion) and left its run failed with no iteration.
    A fresh process: in this one the kernels may be compiled already."""
    done = subprocess.run([sys.executable, "-c", TWO_SEARCHES, str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "[('done', ''), ('done', '')]", (done.stdout, done.stderr)


def test_search_model_runs_stops_and_resumes(tmp_path):
    from workbench.dashboards.search import SearchJob, SearchViews

    model = SearchModel(runs_dir=str(tmp_path), kind="openended", substrate="boids", fm="pixels", steps=10,
                        frames=2, iters=3, pop=4)
    views = SearchViews(model)  # what the page shows, fed by refresh() as the page's periodic callback does
    assert model.algorithm == "ga"  # the illumination selector's default...
    model.start()
    assert model.wait() == "done" and len(model.metrics) == 3 and model.best_thumb is not None
    assert model.algorithm_name == "sep-CMA-ES"  # ...is not what an open-endedness search runs
    assert model.progress_text() == "3 / 3 iterations"
    views.refresh()
    assert views.shows(views.curve) and [p[0] for p in views.losses.data] == [0, 1, 2]
    assert views.shows(views.best) and views.shows(views.population)
    drawn = views.loss_curve.object[()]
    assert (drawn.vdims[0].label, drawn.opts.get("plot", backend="bokeh").kwargs["title"]) == \
        ("best loss", "best loss so far")
    model.iters = 40
    before = model.population
    model.start()
    # a page opened from the menu meanwhile (no run asked for) finds it, also while it sets up without a run yet
    assert SearchJob.searching(str(tmp_path)) == [model.job]
    menu = SearchModel(runs_dir=str(tmp_path))
    menu.watch(SearchJob.searching(str(tmp_path))[-1])
    assert menu.job is model.job and menu.running and not menu.busy
    views.refresh()  # a new search: nothing of the one before stays on show
    rows = model.metrics
    assert views.losses.data == [(r["iteration"], r["best_loss"]) for r in rows[: len(views.losses.data)]]
    assert not views.shows(views.best)  # the new run's best frame comes when it ends
    assert not views.shows(views.population) or views._seen["population"] is not before
    while len(model.metrics) < 1:
        time.sleep(0.05)
    # another page (a reloaded tab, the Runs gallery's link) opens the running search: the same job, live
    other = SearchModel(runs_dir=str(tmp_path))
    with pytest.raises(ValueError, match="a search is running on this page"):
        model.choose(model.run_id)
    other.choose(model.run_id)
    assert other.job is model.job and other.running and not other.resumable
    assert model.busy and not other.busy  # the page that started it holds it; a watching page holds nothing up
    assert other.kind == "openended" and other.iters == 40 and other.steps == 10  # its settings in the sidebar
    other.stop()  # stopped from there
    assert model.wait() == "stopped" and len(model.metrics) < 40 and not other.running
    stopped_id, done = model.run_id, model.done
    # a third opens it from the store (by an id prefix): the rows so far, resumable
    from workbench.runs import RunStore

    reopened = SearchModel(runs_dir=str(tmp_path))
    reopened_views = SearchViews(reopened)
    reopened.choose(stopped_id[:-1])
    assert reopened.run_id == stopped_id and reopened.job is not model.job and not reopened.running
    assert reopened.status == "stopped" and reopened.resumable and reopened.done == done
    assert len(reopened.metrics) == done and reopened.progress_text() == f"{done} / 40 iterations"
    reopened_views.refresh()
    assert not reopened_views.resume.disabled and reopened_views.stop.disabled
    # its latest population as the run's folder keeps it (population.png): what the page running it showed last
    assert reopened_views.shows(reopened_views.population) and np.array_equal(reopened.population, model.population)
    twin = SearchModel(runs_dir=str(tmp_path))  # a second tab on the stopped run
    twin.choose(stopped_id)
    reopened.iters = 7  # the resumed run keeps its own budget
    reopened.resume()
    twin.resume()  # not a second search of the same run, writing the same folder: the first one's, live
    assert twin.job is reopened.job and twin.running
    assert other.follow() and other.job is reopened.job  # a page left on the stopped run shows the resume live
    assert reopened.busy and not twin.busy and not other.busy
    assert reopened.wait() == "done" and reopened.run_id == stopped_id and not reopened.resumable
    assert len(RunStore(tmp_path).open(stopped_id).info["resumes"]) == 1
    assert reopened.progress_text() == "40 / 40 iterations" and done < 40
    reopened_views.refresh()  # the resumed run's curve goes on from where it stopped
    assert [p[0] for p in reopened_views.losses.data] == list(range(40)) and reopened_views.shows(reopened_views.best)
    assert RunStore(tmp_path).open(stopped_id).info["iterations"] == 40
    # a finished run: resumable only to more iterations than it did, which the button says
    reopened.iters = 40
    reopened_views.refresh()
    assert not reopened.resumable and reopened_views.resume.disabled
    reopened.iters = 43
    reopened_views.refresh()
    assert reopened.resumable and not reopened_views.resume.disabled and reopened_views.resume.name == "go on to 43"
    reopened.resume()
    assert reopened.wait() == "done" and reopened.progress_text() == "43 / 43 iterations"
    reopened_views.refresh()
    assert [p[0] for p in reopened_views.losses.data] == list(range(43)) and reopened_views.resume.name == "resume"
    assert RunStore(tmp_path).open(stopped_id).info["config"]["iters"] == 43
    assert model.status == "stopped"  # the first page still shows its own job as it ended
    with pytest.raises(ValueError, match="no run"):
        other.choose("no-such-run")
    merge = RunStore(tmp_path).create("merge", "ties", "a+b", {"method": "ties"}, 0)
    with pytest.raises(ValueError, match="merge run; the Search page opens ASAL searches"):
        other.choose(merge.id)
    assert other.run_id == stopped_id  # a refused run leaves the page as it was
    # a run whose settings the sidebar cannot take (MAP-Elites with a batch of 1; the page's pop starts at 2)
    from workbench.asal.driver import SearchConfig, run_search
    from workbench.asal.evaluate import EvalConfig

    odd = run_search(SearchConfig(kind="illuminate", algorithm="map-elites", pop=1, population=4, iters=1,
                                  eval=EvalConfig("lenia", "pixels", steps=4)), RunStore(tmp_path))
    other.choose(odd.id)
    assert other.run_id == odd.id and other.status == "done" and "cannot take them" in other.notice
    assert (other.kind, other.substrate, other.pop, other.iters) == ("openended", "boids", 4, 40)  # as they were
    model.kind, model.algorithm, model.iters = "illuminate", "map-elites", 2
    model.start()
    assert model.wait() == "done" and model.algorithm_name == "MAP-Elites"
    views.refresh()  # an illumination's curve is its population's loss at each iteration, not a best so far
    drawn = views.loss_curve.object[()]
    assert (drawn.vdims[0].label, drawn.opts.get("plot", backend="bokeh").kwargs["title"]) == \
        ("population's illumination loss", "illumination loss per iteration")
    # and no best frame is coming: the Atlas shows it (it said "appears when the run ends" beside "status: done")
    assert "an illumination keeps a population, not one best frame: <a href=\"./atlas?run=" in views.best[0].object
    model.fm = "pixels"
    model.kind = "target"
    with pytest.raises(ValueError, match="--prompt"):
        model.start()
    model.kind, model.init = "openended", "random"  # boids has no random initialisation: hidden, θ = 0 is used
    assert not model.init_choosable and model.config().init == "zero"
    model.substrate = "plenia"
    assert model.init_choosable and model.config().init == "random"
    # Frames is hidden for an illumination, and a value left from another kind does not refuse it
    model.kind, model.frames, model.steps = "openended", 50, 100
    model.kind, model.steps = "illuminate", 20
    assert not model.frames_choosable and model.config().eval.frames == 1


def test_an_illumination_from_the_page_keeps_a_population_of_four_times_its_pop(tmp_path):
    """From mutation sampling: the Search page's illumination keeps a population of 4 × Pop (Pop: the children
    drawn each iteration, asal.md §4's 32 to a population of 256; the page's smaller default runs in seconds), and
    no test read it, so another factor went unseen. The run the page starts keeps that many members."""
    from workbench.runs import RunStore

    model = SearchModel(runs_dir=str(tmp_path), kind="illuminate", substrate="lenia", pop=3, iters=1, steps=4,
                        fm="pixels")
    cfg = model.config()
    assert (cfg.algorithm, cfg.pop, cfg.population) == ("ga", 3, 12)
    model.start()
    assert model.wait() == "done", model.error
    run = RunStore(tmp_path).open(model.run_id)
    assert run.info["config"]["population"] == 12 and len(run.read_table("population")) == 12


def test_search_address_follows_the_run_on_show(tmp_path):
    """The page's address names the run on show. A runs path that is not a folder is refused before a search
    starts (the run before stays on show, and in the address); a search that failed before it had an id takes
    the old run's id out of the address (a reload would have opened the run before, not what the page said)."""
    from panel.io.location import Location

    from workbench.dashboards.search import SearchJob, SearchViews

    model = SearchModel(runs_dir=str(tmp_path / "runs"), kind="openended", substrate="boids", fm="pixels", steps=10,
                        frames=2, iters=1, pop=4)
    location = Location(search="?tab=x")
    views = SearchViews(model, location)
    model.start()
    assert model.wait() == "done"
    views.refresh()
    shown = model.run_id
    assert location.query_params == {"tab": "x", "run": shown}
    (tmp_path / "runs").rename(tmp_path / "moved")
    (tmp_path / "runs").write_text("a file where the runs folder was")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        model.start()
    views.refresh()
    assert model.run_id == shown and location.query_params == {"tab": "x", "run": shown}
    failed = SearchJob(str(tmp_path / "runs"))  # what a search that failed in its set-up, before its id, leaves
    failed.status, failed.error = "failed", "OSError: no space left on device"
    model.job = failed
    model.starts += 1
    views.refresh()
    assert location.query_params == {"tab": "x"} and "failed" in views.status.object


def test_search_status_says_how_many_candidates_diverged(tmp_path):
    """The status line says how many of the run's candidates diverged (NaN or inf: ranked last), as `workbench asal`
    warns of them: for a run opened from the store, and live while a resume goes on, its new iterations' counted
    as they come (the page said nothing: a search that lost members to blow-ups looked like any other). Nothing
    where none diverged, nor for a run of a version that did not count them; nulls (its rows before a resume by
    this version) count none."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from workbench.dashboards.search import SearchJob, SearchViews
    from workbench.runs import RunStore

    store = RunStore(tmp_path / "runs")
    run_id = _diverging(store.root, tmp_path / "black.png")

    def counted(name: str) -> list:
        return store.open(name).read_table("metrics").column("diverged").to_pylist()

    first = sum(counted(run_id))
    assert first > 1  # (3: the plural)
    model = SearchModel(runs_dir=str(store.root))
    model.choose(run_id)
    views = SearchViews(model)
    views.refresh()
    said = f"**{first}** candidates diverged (NaN or inf in a simulation): ranked last"
    assert model.diverged == first and model.diverged_text() == said
    assert f"algorithm **sep-CMA-ES** · {said}" in views.status.object, views.status.object
    model.iters = 2  # on to a second iteration: its rows come from the search thread, not from the store
    model.resume()
    assert model.wait() == "done", model.error
    views.refresh()
    rows = counted(run_id)
    assert len(rows) == 2 and rows[1] > 0, rows  # the resume lost members too: the count went up
    assert model.diverged == sum(rows), (model.diverged, rows)
    assert f"**{sum(rows)}** candidates diverged" in views.status.object, views.status.object
    # between two refreshes of a running search only the count may change (status, run and algorithm as before):
    # the line is written anew for it. The job's rows as its thread hands them over (on_iteration), here in turn
    job = SearchJob(str(store.root))
    job.status, job.run_id, job.algorithm_ran = "running", run_id, "cma"
    model.watch(job)
    for done, row in enumerate(store.open(run_id).read_table("metrics").to_pylist(), 1):
        job._progress(done, 2, row)
        views.refresh()
        assert model.diverged_text().startswith(f"**{sum(rows[:done])}** candidate"), model.diverged_text()
        assert model.diverged_text() in views.status.object, views.status.object

    path = store.root / run_id / "metrics.parquet"
    table = pq.read_table(path)
    for column, want in (([0, 0], ""), ([None, 1], "**1** candidate diverged"), (None, "")):
        # none diverged; an older version's row before a resume by this one; a run of an older version
        pq.write_table(table.drop_columns(["diverged"]) if column is None
                       else table.set_column(table.column_names.index("diverged"), "diverged",
                                             pa.array(column, pa.int64())), path)
        model.choose(run_id)
        views.refresh()
        assert model.diverged_text().startswith(want) and bool(want) == ("diverged" in views.status.object), \
            (column, views.status.object)


def test_a_search_page_fed_at_build_keeps_a_note_made_before_its_first_periodic_refresh(tmp_path):
    """The views are fed when the page is built (and every 300 ms from its load on): a refused number typed before
    the first periodic refresh keeps its note (that refresh, the first to write the status line, wrote over it)."""
    from workbench.dashboards.search import SearchViews

    views = SearchViews(SearchModel(runs_dir=str(tmp_path)), None)
    views.feed()  # as the page is built (no server: the periodic refresh does not run)
    views.note("**not taken** — Iters takes a whole number of at least 1 (got 0; kept 20)")
    views.refresh()  # the first periodic one
    assert "not taken" in views.status.object, views.status.object


def test_every_setting_on_the_search_and_lab_pages_says_what_it_is(tmp_path):
    """Each field of the Search and Lab sidebars carries its parameter's doc as its tooltip: the number fields
    (made by checked_int_input) had none, BS's doc was in the code only, and Iters, Pop, Steps, Frames and Seed
    had no doc at all."""
    import panel as pn

    from workbench.dashboards.lab import lab_page
    from workbench.dashboards.search import search_page

    search = {f.label: f for f in pn.Column(*search_page(str(tmp_path)).sidebar).select(pn.widgets.IntInput)}
    assert set(search) == {"Iters", "Pop", "Steps", "Frames", "BS", "Seed"}
    for label, field in search.items():
        assert field.description == SearchModel.param[label.lower()].doc and field.description, label
    assert search["BS"].description == "initial-state seeds averaged per θ"
    lab = pn.Column(*lab_page(runs_dir=str(tmp_path)).sidebar).select(pn.widgets.IntInput)
    assert len(lab) >= 2 and all(field.description for field in lab), [f.label for f in lab]


def test_search_page_opened_from_the_menu_puts_the_running_search_in_the_address(tmp_path):
    """A page opened from the menu while this server searches shows that search from its first refresh: the
    browser's first report of its address (/search), when it came after that refresh, took the ?run=ID out again,
    and the page never put it back. The run on show
    goes back in the address (the full id, for a prefix too); an idle page leaves its address alone. A note in the
    status line (a refused number) stays while the run on show has an error (the next refresh wrote over it)."""
    from panel.io.location import Location

    from workbench.dashboards.search import SearchJob, SearchViews

    model = SearchModel(runs_dir=str(tmp_path), kind="openended", substrate="boids", fm="pixels", steps=10,
                        frames=2, iters=1000, pop=4)
    starter = SearchViews(model, None)  # the tab that starts it: its status line names the run once it has an id
    model.start()
    try:
        starter.refresh()
        deadline = time.time() + 120
        while model.run_id is None and model.running and time.time() < deadline:
            time.sleep(0.05)
        assert model.run_id is not None, model.error
        starter.refresh()  # still "running" (the line was keyed on its status alone and kept no run id)
        assert f"run `{model.run_id}`" in starter.status.object, starter.status.object
        menu = SearchModel(runs_dir=str(tmp_path))  # what search_page does when no run is asked for
        menu.choose(SearchJob.searching(str(tmp_path))[-1].run_id)
        assert menu.running and not menu.busy
        location = Location(search="")  # the address asked for: /search
        views = SearchViews(menu, location)
        views.refresh()  # the first refresh, before the browser has loaded the page
        assert location.query_params == {"run": model.run_id}
        location.search = ""  # the browser's first report of its address
        views.refresh()
        assert location.query_params == {"run": model.run_id}
        location.search = f"?tab=x&run={model.run_id[:-1]}"  # a prefix in the address names the run too
        views.refresh()
        assert location.query_params == {"tab": "x", "run": model.run_id}
        idle_location = Location(search="?run=no-such-run")  # nothing on show (the run was refused): left alone
        SearchViews(SearchModel(runs_dir=str(tmp_path)), idle_location).refresh()
        assert idle_location.search == "?run=no-such-run"
        failed = SearchJob(str(tmp_path))
        failed.status, failed.error = "failed", "RuntimeError: boom"
        failed.best_thumb = np.zeros((8, 8, 3), np.uint8)
        menu.watch(failed)
        views.refresh()
        assert location.query_params == {"tab": "x"} and "boom" in views.status.object
        best = views.best_image.object
        views.note("**not taken** — Pop takes a whole number of at least 2")
        views.refresh()
        assert "not taken" in views.status.object and views.best_image.object is best  # not drawn anew either
    finally:
        model.stop()
        model.wait()


def test_runs_page_table_ticks_add_to_the_runs_picked_in_the_sidebar(runs):
    """The Table tab's ticks are the runs compared: picks in the sidebar tick their rows, and a row ticked then
    adds its run to them (it replaced them: the sidebar's picks were lost); an untick takes its run out."""
    import panel as pn

    from workbench.dashboards.runs import runs_page

    page = runs_page(runs["dir"])
    objects = pn.Column(*page.main, *page.sidebar)
    (table,), (compare,) = objects.select(pn.widgets.Tabulator), objects.select(pn.widgets.MultiChoice)
    ids = list(table.value["id"])
    compare.value = ids[:3]
    assert sorted(table.selection) == [0, 1, 2]
    table.selection = [*table.selection, 3]
    assert compare.value == ids[:4]
    table.selection = [0, 2, 3]
    assert compare.value == [ids[0], ids[2], ids[3]]


def test_the_runs_page_follows_a_running_run(tmp_path):
    """While a run runs, the page reads the catalog again (RunsModel.follow, every FOLLOW_MS): its card and row
    follow its iterations (they stayed at the first count until "refresh" was pressed); nothing is read while
    none runs, until a run is started or removed elsewhere."""
    from workbench.dashboards.runs import RunsModel
    from workbench.runs import RunStore, heartbeat

    store = RunStore(tmp_path)
    run = store.create("openended", "boids", "pixels", {}, 0)
    run.update(status="running", iterations=1, **heartbeat())
    model = RunsModel(runs_dir=str(tmp_path))
    assert [r["iterations"] for r in model._rows] == [1] and not model.follow()  # nothing new
    run.update(iterations=2, **heartbeat())
    assert model.follow() and [r["iterations"] for r in model._rows] == [2]
    run.update(status="done", iterations=3)
    assert model.follow() and [r["status"] for r in model._rows] == ["done"]
    run.update(note="read only on refresh now")
    assert not model.follow() and model._rows[0].get("note") is None
    other = store.create("openended", "boids", "pixels", {}, 1)  # a run started elsewhere: taken in, then followed
    other.update(status="running", iterations=1, **heartbeat())
    assert model.follow() and [r["id"] for r in model._rows] == [run.id, other.id]


def test_the_runs_page_keeps_its_ticks_on_their_runs_when_rows_come_and_go(tmp_path):
    """The table's ticks stay on the runs ticked when the catalog is read again: Panel maps a selection onto the
    new rows by position, so a run removed above them (elsewhere; the page follows the store every 5 s) moved the
    ticks onto other runs, which a removal would then have named."""
    import shutil

    import panel as pn

    from workbench.dashboards.runs import runs_page
    from workbench.runs import RunStore

    store = RunStore(tmp_path)
    ids = [store.create("openended", "boids", "pixels", {}, seed).id for seed in range(4)]
    for run_id in ids:
        store.open(run_id).update(status="done")
    page = runs_page(str(tmp_path))
    objects = pn.Column(*page.main, *page.sidebar)
    (table,) = objects.select(pn.widgets.Tabulator)
    (refresh,) = [b for b in objects.select(pn.widgets.Button) if b.label.startswith("refresh")]
    row = {rid: i for i, rid in enumerate(table.value["id"])}
    table.selection = [row[ids[1]], row[ids[3]]]
    shutil.rmtree(tmp_path / ids[0])  # a run above them, removed elsewhere
    refresh.clicks += 1
    assert sorted(table.value.iloc[i]["id"] for i in table.selection) == [ids[1], ids[3]]


def test_runs_page_removes_the_ticked_runs_once_asked_and_refuses_a_run_that_runs(tmp_path):
    """The Runs page's Remove: the ticked runs named in a question, removed for good on "yes" (those the question
    named, whatever is ticked by then) and gone from the gallery, the table and the picks; "keep them" removes
    nothing; a run that is running refuses the removal, and then none goes (RunsModel.remove, as `runs rm`)."""
    import panel as pn

    from workbench.dashboards.runs import runs_page
    from workbench.runs import RunStore, heartbeat

    store = RunStore(tmp_path)
    failed, done, kept, live = (store.create("openended", "boids", "pixels", {}, seed) for seed in range(4))
    failed.update(status="failed")
    done.update(status="done")
    kept.update(status="done")
    live.update(status="running", **heartbeat())  # this test's process: alive
    page = runs_page(str(tmp_path))
    objects = pn.Column(*page.main, *page.sidebar)
    (table,), (compare,) = objects.select(pn.widgets.Tabulator), objects.select(pn.widgets.MultiChoice)
    buttons = {b.label: b for b in objects.select(pn.widgets.Button)}
    remove, confirm, keep = (buttons[k] for k in ("remove the ticked runs…", "yes, remove them for good",
                                                  "keep them"))
    (gallery,) = [c for c in objects.select(pn.Column) if c.name == "runs-gallery"]  # one pane per card
    said = [p for p in objects.select(pn.pane.Markdown) if p.object == ""]

    def told() -> str:
        return " ".join(p.object for p in said if p.object)

    remove.clicks += 1  # nothing ticked
    assert "Tick the runs to remove first" in told() and not confirm.visible
    compare.value = [failed.id, done.id]
    remove.clicks += 1
    assert f"Remove 2 runs for good, folders and all (metrics, checkpoints, figures)? `{failed.id}`, `{done.id}`" \
        in told() and confirm.visible and keep.visible
    keep.clicks += 1
    assert not confirm.visible and failed.path.is_dir() and done.path.is_dir()
    remove.clicks += 1
    compare.value = [kept.id]  # ticked after the question: the question's runs go
    confirm.clicks += 1
    assert f"removed 2 runs: `{failed.id}`, `{done.id}`" in told()
    assert not failed.path.exists() and not done.path.exists() and kept.path.is_dir()
    # the table newest first
    assert list(table.value["id"]) == [live.id, kept.id] and sorted(compare.options) == [kept.id, live.id]
    assert failed.id not in shown_text(gallery) and kept.id in shown_text(gallery)
    compare.value = [kept.id, live.id]
    remove.clicks += 1
    confirm.clicks += 1
    assert f"**not (all) removed:** run {live.id} is running (pid {os.getpid()} on " in told() and kept.path.is_dir()


def test_runs_page_writes_the_note_of_the_one_ticked_run_and_its_search_finds_it(tmp_path):
    """The Runs page's Note: one run ticked, the field holds its note; saved as the field is left, the card, the
    table and the search show it; two ticked or none, nothing to write on; too long a note is refused in words."""
    import panel as pn

    from workbench.dashboards.runs import runs_page
    from workbench.runs import MAX_NOTE, RunStore

    store = RunStore(tmp_path)
    first, second = (store.create("openended", "boids", "pixels", {}, seed) for seed in range(2))
    first.set_note("the old note")
    page = runs_page(str(tmp_path))
    objects = pn.Column(*page.main, *page.sidebar)
    (table,), (compare,) = objects.select(pn.widgets.Tabulator), objects.select(pn.widgets.MultiChoice)
    (note,) = [w for w in objects.select(pn.widgets.TextAreaInput) if w.name == "Note on the ticked run"]
    (query,) = [w for w in objects.select(pn.widgets.TextInput) if w.name == "Search"]
    (gallery,) = [c for c in objects.select(pn.Column) if c.name == "runs-gallery"]  # one pane per card
    assert note.disabled
    compare.value = [first.id]
    assert note.value == "the old note" and not note.disabled and first.note == "the old note"  # shown, not saved
    note.value = "baseline <of> figure 3"  # typed, and the field left
    assert first.note == "baseline <of> figure 3" and "baseline &lt;of&gt; figure 3" in shown_text(gallery)
    assert list(table.value.set_index("id")["note"]) == ["", "baseline <of> figure 3"]  # newest first
    query.value = "figure 3"
    assert first.id in shown_text(gallery) and second.id not in shown_text(gallery)
    note.value = "x" * (MAX_NOTE + 1)
    assert first.note == "baseline <of> figure 3" and any(
        f"not saved:** the note has {MAX_NOTE + 1} characters" in (p.object or "")
        for p in objects.select(pn.pane.Markdown))
    compare.value = [first.id, second.id]
    assert note.disabled
    (settings,) = [p for p in objects.select(pn.pane.DataFrame) if p.name == "compare-settings"]
    assert list(settings.object["note"]) == ["baseline <of> figure 3", ""]  # compared, with their notes


#: what test_a_store_served_read_only_says_on_each_page_why_it_cannot_write runs in a process that cannot write the
#: store: every write a page makes (Lab snapshot and GIF, Atlas export, the Runs page's note, removal and export,
#: the Search page's start and resume), each page's words printed as JSON, with what it raised or logged
READ_ONLY_PAGES = r'''
import asyncio, json, logging, sys
from pathlib import Path
import panel as pn
from bokeh.document import Document
from panel.io.state import set_curdoc

runs, illuminate, openended = sys.argv[1:4]
logged, said = [], {}
logging.getLogger().addHandler(type("H", (logging.Handler,), {"emit": lambda self, r: logged.append(r.getMessage())})())

def words(page):
    everything = pn.Column(*page.main, *page.sidebar)
    return [p.object for p in everything.select(pn.pane.Markdown) if isinstance(p.object, str) and p.object
            and getattr(p, "visible", True)]

async def click(page, label, name, done=lambda: False):
    before = words(page)
    button = next(b for b in pn.Column(*page.main, *page.sidebar).select(pn.widgets.Button) if b.label == label)
    try:
        button.clicks += 1
    except Exception as exc:
        said[name] = [f"raised {type(exc).__name__}: {exc}"]
        return
    for _ in range(1200):
        await asyncio.sleep(0.05)
        if (words(page) != before or done()) and not button.loading:
            break
    said[name] = [w for w in words(page) if w not in before]

async def main():
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: logged.append(repr(context)))
    from workbench.dashboards.atlas import atlas_page
    from workbench.dashboards.lab import lab_page
    from workbench.dashboards.runs import runs_page
    from workbench.dashboards.search import SearchModel, search_page

    with set_curdoc(Document()):
        lab = lab_page(runs_dir=runs)
        await click(lab, "snapshot PNG + θ", "snapshot")
        await click(lab, "export GIF", "gif")
        await click(atlas_page(runs), "export PNG", "atlas")
        page = runs_page(runs)
        everything = pn.Column(*page.main, *page.sidebar)
        (ticked,) = everything.select(pn.widgets.MultiChoice)
        ticked.value = [openended]
        (note,) = [w for w in everything.select(pn.widgets.TextAreaInput) if w.name == "Note on the ticked run"]
        before = words(page)
        try:
            note.value = "a note"
            said["note"] = [w for w in words(page) if w not in before]
        except Exception as exc:
            said["note"] = [f"raised {type(exc).__name__}: {exc}"]
        await click(page, "remove the ticked runs…", "ask")
        await click(page, "yes, remove them for good", "remove")
        ticked.value = [openended, illuminate]
        await click(page, "export", "compare")
        for what, run in (("start", None), ("resume", openended)):
            model = SearchModel(runs_dir=runs, kind="openended", substrate="boids", iters=2, pop=4, steps=10, frames=2)
            page = search_page(runs, model=model, run=run)
            model.iters = 3  # the done run goes on to 3: a resume
            label = "start" if what == "start" else "resume"
            await click(page, label, what, done=lambda: model.starts > 1 and not model.running)
            model.wait(120)
            await asyncio.sleep(0.5)  # the page's next refresh writes the status line
            said[what] = [w for w in words(page) if w.startswith("status")]
    print(json.dumps({"said": said, "logged": logged}))

asyncio.run(main())
'''


def test_a_store_served_read_only_says_on_each_page_why_it_cannot_write(runs, tmp_path):
    """A run store served that the server's user can read but not write (a shared group folder, a read-only mount, a
    colleague's results): every write a page makes says on the page which folder refused it and why, in one line, and
    nothing is left in the store. Before, the Lab's snapshot, the Atlas' export and the Runs page's note said nothing
    (a traceback in the server's log alone, the note field showing a note never saved); the exports and the Lab's
    GIF said "PermissionError: [Errno 13] …" and logged a traceback besides; a search said so of a run folder that
    never was. The store is written by a process without the power to override permissions: as root (this machine's
    and CI's user), one whose capabilities setpriv dropped."""
    store = tmp_path / "store"
    for run_id in (runs["illuminate"], runs["openended"][0]):
        shutil.copytree(Path(runs["dir"]) / run_id, store / run_id)
    command = [sys.executable, "-c", READ_ONLY_PAGES, str(store), runs["illuminate"], runs["openended"][0]]
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("root without setpriv: a read-only folder cannot be made for root")
        command = ["setpriv", "--inh-caps=-all", "--bounding-set=-all", *command]
    listing = sorted(str(p.relative_to(store)) for p in store.rglob("*"))
    for path in (store, *store.rglob("*")):
        path.chmod(path.stat().st_mode & ~0o222)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "WORKBENCH_CACHE": str(tmp_path / "cache")})
    finally:
        for path in (store, *store.rglob("*")):
            path.chmod(path.stat().st_mode | 0o200)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.splitlines()[-1])
    said, logged = out["said"], out["logged"]
    why = "Permission denied (the server's user may not write there: check the folder's permissions"
    run, other = store / runs["openended"][0], store / runs["illuminate"]
    expected = {"snapshot": f"cannot save the snapshot: {store}: {why}",
                "gif": f"cannot export the GIF: {store}: {why}",
                "atlas": f"**cannot export:** {other}: {why}",
                "note": f"**not saved:** {run}: {why}",
                "remove": f"**not (all) removed:** {store}: {why}",
                "compare": f"**cannot export:** {store}: {why}",
                "start": f"{store}: {why}",  # the store, not the folder of a run that could not be made
                "resume": f"{run / 'run.json'}: {why}"}
    for action, words in expected.items():  # (the pages' Markdown has the paths' "_" and "." as entities)
        assert any(words in html.unescape(line) for line in said[action]), (action, said[action])
    assert not any("Errno" in line for lines in said.values() for line in lines), said
    assert logged == [] and "Traceback" not in done.stderr, (logged, done.stderr[-3000:])
    assert sorted(str(p.relative_to(store)) for p in store.rglob("*")) == listing  # nothing half-written


def test_a_write_refused_by_its_folder_is_named_by_the_folder_that_exists():
    """cannot_write names the nearest folder that exists (a new run's or an export's folder that could not be made
    does not: its parent refused), the system's words and what to do; a failure that is no write refusal is None
    (said by failed() and raised, for the log). A path under a regular file fails for root too."""
    import errno
    import tempfile

    from workbench.dashboards.shell import cannot_write

    with tempfile.TemporaryDirectory() as folder:
        blocker = Path(folder) / "runs"
        blocker.write_text("a file where the store should be")
        with pytest.raises(OSError) as under_a_file:
            (blocker / "x" / "figures").mkdir(parents=True, exist_ok=True)
        assert cannot_write(under_a_file.value) == \
            f"{blocker}: Not a directory (a file stands where a folder should be)"
        denied = PermissionError(errno.EACCES, "Permission denied", str(Path(folder) / "new-run" / "figures"))
        assert cannot_write(denied).startswith(f"{folder}: Permission denied (the server's user may not write there")
        moved = PermissionError(errno.EACCES, "Permission denied", str(blocker), None,  # (filename2: a rename's)
                                str(Path(folder) / ".removing-x"))
        assert cannot_write(moved).startswith(f"{folder}: Permission denied")  # the folder a rename moves within
        assert cannot_write(OSError(errno.EROFS, "Read-only file system", folder)) == \
            f"{folder}: Read-only file system (a read-only file system: serve a copy of the runs in a folder that " \
            "can be written)"
        assert cannot_write(OSError(errno.ENOSPC, "No space left on device")) == \
            "No space left on device (free some space)"
    assert cannot_write(FileNotFoundError(errno.ENOENT, "No such file or directory", "x")) is None
    assert cannot_write(ValueError("x")) is None


def test_atlas_cells_are_clicked_where_their_thumbnails_are_drawn_and_seed_0_is_a_seed(tmp_path):
    """The page's clickable cells (cell_table's x, y: the plot's y points up) lie on the thumbnails compose draws
    (the image's row 0 at the top). Mirrored, a click on a thumbnail in the top row would play the member drawn in
    the bottom row. A member whose thumbnail came from seed 0 plays from seed 0: None, the Lab's own seed, is only
    for −1 (runs made before seeds were kept)."""
    from workbench.dashboards.atlas import AtlasModel

    model = AtlasModel(runs_dir=str(tmp_path))
    model.side, model.cells, model.thetas, model.substrate = 3, np.array([0, 5, 7]), np.ones((3, 4)), "boids"
    table = model.cell_table()
    # cell 0: row 0, column 0 (top left); cell 5: row 1, column 2; cell 7: row 2 (the bottom), column 1
    np.testing.assert_allclose(table["x"], [1 / 6, 5 / 6, 3 / 6])
    np.testing.assert_allclose(table["y"], [5 / 6, 3 / 6, 1 / 6])
    model.seeds = np.array([0, 12, -1])
    assert [model.member_seed(i) for i in range(3)] == [0, 12, None]


def test_atlas_model_snaps_and_exports(runs, tmp_path):
    from workbench.dashboards.atlas import AtlasModel

    model = AtlasModel(runs_dir=runs["dir"])
    assert model.run_id == runs["illuminate"] and model.side == 4 and model.revision == 1
    assert sorted(model.cells) == sorted(set(model.cells)) and len(model.cells) == 16
    from workbench.dashboards.lab import LabModel
    from workbench.runs import RunStore

    seeds = RunStore(runs["dir"]).open(runs["illuminate"]).read_table("population").to_pydict()["seed"]
    assert [model.member_seed(i) for i in range(16)] == seeds and min(seeds) >= 0
    player = LabModel(substrate=model.substrate)  # a clicked cell plays from its thumbnail's initial state
    player.set_theta(model.thetas[5], seed=model.member_seed(5))
    assert player.seed == seeds[5]
    model.projection = "tsne"  # UMAP too in the browser (test_a_slow_layout_…): its numba compile, paid once
    assert len(set(model.cells)) == 16
    assert model.revision == 2
    out = model.export_png(tmp_path / "atlas.png", scale=2)
    assert np.asarray(Image.open(out)).shape == (model.image.shape[0] * 2, model.image.shape[1] * 2, 3)
    # at a paper figure's dpi: LaTeX placed it at 72 dpi (it said none), 12.4 in wide at 4×
    assert Image.open(out).info["dpi"] == pytest.approx((300, 300), abs=0.01)
    with pytest.raises(ValueError, match="not a finished illumination run"):
        model.choose(runs["dare_ties"])
    with pytest.raises(ValueError, match=r"'x' is not a finished illumination run .* \(some that are: none yet\)"):
        AtlasModel(runs_dir=str(tmp_path / "none")).choose("x")  # a bookmark on an empty store (TypeError: None)
    model.choose(runs["illuminate"])
    model.selected = 5
    model.projection = "pca"  # another layout of its run: the member played stays picked (its cell outlined)
    assert model.selected == 5 and model.revision == 3
    for name in ("a", "b"):  # two runs (a run is its folder)
        shutil.copytree(Path(runs["dir"]) / runs["illuminate"], tmp_path / "two" / name)
    other = AtlasModel(runs_dir=str(tmp_path / "two"))
    other.selected = 3
    other.run_id = "a" if other.run_id == "b" else "b"  # another run: none of its members is picked
    assert other.selected == -1
    # a run that cannot be laid out leaves the layout on show whole, its run chosen again (its population beside
    # the other's picture went into an export named after the refused run)
    shown, image, thetas = other.run_id, other.image.copy(), other.thetas.copy()
    refused = "a" if shown == "b" else "b"
    (tmp_path / "two" / refused / "thumbs.npy").unlink()
    with pytest.raises(ValueError, match=f"run '{refused}' has no thumbs.npy"):
        other.run_id = refused
    assert other.run_id == shown and np.array_equal(other.image, image) and np.array_equal(other.thetas, thetas)


def test_a_player_ticks_while_it_plays_and_never_for_a_session_that_ended():
    """The Lab's and the Atlas' players tick while `playing` (the Atlas ticked every 50 ms in every session from its
    start); a member's load awaited while its tab closed set `playing` on a session that had ended, and Panel
    started an unscoped task for it that nothing stopped."""
    import weakref

    import param
    from bokeh.document import Document
    from panel.io.state import set_curdoc

    from workbench.dashboards.shell import run_while

    class Ticks:  # stands for Panel's PeriodicCallback: what the watcher asks of it
        def __init__(self):
            self.calls = []

        def start(self):
            self.calls.append("start")

        def stop(self):
            self.calls.append("stop")

    class Player(param.Parameterized):
        playing = param.Boolean(default=False)

    class Session:  # what a served document's session context is to it: a weak reference Bokeh clears at its end
        pass

    doc, session = Document(), Session()
    doc._session_context = weakref.ref(session)
    player, ticks = Player(), Ticks()
    with set_curdoc(doc):
        player.param.watch(run_while(ticks), "playing")
    player.playing = True
    player.playing = False
    assert ticks.calls == ["start", "stop"]
    del session  # the tab closed, its session ended
    player.playing = True
    assert ticks.calls == ["start", "stop"]  # not started for good
    alone, unserved = Player(), Ticks()  # a page no server serves (a notebook)
    alone.param.watch(run_while(unserved), "playing")
    alone.playing = True
    assert unserved.calls == ["start"]


def test_the_atlas_member_field_and_a_click_pick_the_same_member_and_refuse_one_past_the_run(runs):
    """Keyboard: the Atlas' cells answered the mouse only. The sidebar's Member field sets the member a click on its
    cell sets (`selected`, AtlasModel.pick), a click shows its member there, and a number past the run's
    population is refused in words, put back, the member on show kept (the model took any number: IndexError)."""
    from workbench.dashboards.atlas import AtlasModel, member_field

    model = AtlasModel(runs_dir=runs["dir"])
    field, said = member_field(model)
    assert field.name == "Member to play" and model.param.selected.bounds == (-1, len(model.cells) - 1) == (-1, 15)
    assert model.pick([5]) == 5 and field.value == 5  # a click: the field follows
    field.value = 9  # typed: the same state a click on cell 9 sets
    assert model.selected == 9 and model.pick([9]) == 9 and model.pick([]) == -1 and field.value == -1
    field.value = 9
    for bad in (16, -2, None):
        field.value = bad
        assert model.selected == 9 and field.value == 9, bad
        why = "it was left empty" if bad is None else f"got {bad}"
        assert said.object == f"Member to play takes a whole number from -1 to 15 ({why}; kept 9)"
    field.value = 15  # the last member: taken, the refusal's line goes
    assert model.selected == 15 and said.object == ""
    with pytest.raises(ValueError, match="must be at most 15"):
        model.selected = 16
    assert model.pick([16]) == -1  # a row past the cells (none drawn there) is a click beside them


def test_the_atlas_page_takes_runs_finished_since_it_opened(runs, tmp_path):
    """The Atlas page's "refresh the runs": an illumination run finished after the page opened joins the menu
    (the menu was the page's first list for good)."""
    import panel as pn

    from workbench.dashboards.atlas import atlas_page

    shutil.copytree(Path(runs["dir"]) / runs["illuminate"], tmp_path / "a")  # a run is its folder
    page = atlas_page(str(tmp_path))
    objects = pn.Column(*page.main, *page.sidebar)
    (menu,) = [w for w in objects.select(pn.widgets.Select) if w.name == "Run"]
    (refresh,) = [b for b in objects.select(pn.widgets.Button) if b.label == "refresh the runs"]
    assert menu.options == ["a"]
    # the player is blank until a cell is clicked (it showed θ = 0's frame under "click a cell to play")
    from bokeh.models import ColumnDataSource

    (frame,) = [p for p in objects.select(pn.pane.Bokeh) if p.object.name == "lab-frame"]
    (image,) = [m.data["image"][0] for m in frame.object.select({"type": ColumnDataSource}) if "image" in m.data]
    from workbench.dashboards.atlas import BLANK

    assert (np.asarray(image).view(np.uint8).reshape(-1, 4)[:, :3] == BLANK).all()  # light grey, not a black frame
    shutil.copytree(Path(runs["dir"]) / runs["illuminate"], tmp_path / "b")
    refresh.clicks += 1
    deadline = time.time() + 30
    while menu.options != ["a", "b"] and time.time() < deadline:
        time.sleep(0.1)
    assert menu.options == ["a", "b"] and menu.value == "a"


def test_figure_view_of_a_merge_run_and_of_a_search(runs, tmp_path):
    """`workbench figure view` (its own process): a merge run's DFS path as the Merge page exports it; a search
    has no page view to draw: one error naming the commands that draw it."""
    from forked import run

    from workbench.cli.figure import PAGE_VIEWS
    from workbench.dashboards import experts, qd
    from workbench.dashboards.merge import FIGURES, MergeModel

    # the command's choices (kept in the CLI: the pages' modules load Panel) are the pages' views
    assert PAGE_VIEWS["qd"] == tuple(qd.KIND_VIEWS["qd"]) and PAGE_VIEWS["map-elites"] == qd.KIND_VIEWS["map-elites"]
    assert PAGE_VIEWS["experts"] == tuple(experts.VIEWS) and PAGE_VIEWS["merge"] == FIGURES
    want = MergeModel(runs_dir=runs["dir"], run_id=runs["dfs"]).export("path", tmp_path / "page", ".pdf", font="serif")
    done = run("figure", "view", runs["dfs"], "--view", "path", "--runs", runs["dir"], "--font", "serif", "--out",
               str(tmp_path / "p.pdf"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "p.pdf").read_bytes() == want.read_bytes()
    done = run("figure", "view", runs["openended"][0], "--runs", runs["dir"], "--out", str(tmp_path / "o.png"))
    assert done.returncode == 2 and "is an openended run; `figure view` draws the pages' views of qd, MAP-Elites, " \
        "experts, adapt and merge runs (a search: figure curves, compare, atlas, frames or video" in done.stderr, \
        done.stderr
    assert not (tmp_path / "o.png").exists()


def test_merge_model_views_tabs_and_export(runs, tmp_path):
    import holoviews as hv

    from workbench.dashboards.merge import FIGURES, MergeModel
    from workbench.merge.views import scores_plot

    model = MergeModel(runs_dir=runs["dir"])
    assert sorted(model.param.run_id.objects) == sorted([runs["dare_ties"], runs["dfs"]])
    assert model.run_id == runs["dfs"]  # no run asked for: the newest
    prefix = next(p for p in (runs["dfs"][:k] for k in range(len(runs["dfs"]), 0, -1))
                  if sum(r.startswith(p) for r in model.param.run_id.objects) == 2)
    with pytest.raises(ValueError, match=f"run id '{prefix}' is ambiguous"):  # "not a run", it said
        model.choose(prefix)
    model.run_id = runs["dare_ties"]
    table = model.data().recipe_table()
    assert set(table["model"]) == {"add", "sort"} and set(table["filter"]) == {"attention", "mlp", "norm & embeddings"}
    assert table["density"].between(0.05, 1).all() and len(set(table["group"])) == 2 + 2
    shown = {name: model.figure(name) for name in FIGURES}
    assert isinstance(shown["path"], hv.Div) and not isinstance(shown["recipe"], hv.Div)
    # the heatmaps' rows top to bottom in --models order (the norms' legends'), not reverse-alphabetical
    from workbench.merge.views import recipe_heatmaps

    swapped = table.iloc[::-1]  # --models sort add
    yticks = hv.Store.lookup_options("bokeh", recipe_heatmaps(swapped).values()[0], "plot").kwargs["yticks"]
    assert [label for _, label in yticks][::-1] == ["sort · attn", "sort · mlp", "sort · other", "add · attn",
                                                    "add · mlp", "add · other"]
    for name in ("recipe", "fitness", "scores", "norms", "cosine", "conflicts"):
        hv.render(shown[name], backend="bokeh")
    # the norms' legend lies inside its axes: to the right it covered the next panel of the Task vectors tab
    ax = hv.render(shown["norms"], backend="matplotlib").axes[0]
    ax.figure.canvas.draw()
    inside, box = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert box.x0 <= inside.x0 and inside.x1 <= box.x1 and box.y0 <= inside.y0 and inside.y1 <= box.y1
    assert model.tabs() == ["Recipe", "Fitness", "Scores", "Task vectors", "TIES / DARE"] and model.tab == "Recipe"
    # cells sit at integer positions under their own tick labels (both backends, no categorical re-sorting),
    # and each cell writes its value
    scores = model.data().scores
    grid = scores_plot(scores)
    title = grid.opts.get("plot", backend="bokeh").kwargs["title"]  # the page's plot is wide enough for it
    assert grid.opts.get("plot", backend="bokeh").kwargs["width"] >= 7 * len(title)
    heatmap, labels = grid.get(0), grid.get(1)
    opts = hv.Store.lookup_options("matplotlib", grid, "plot").kwargs
    xticks, yticks = dict(opts["xticks"]), dict(opts["yticks"])
    for _, cell in heatmap.dframe().iterrows():
        task, name = xticks[cell["task"]], yticks[cell["model"]]
        assert (task, name) == (cell["task name"], cell["model name"])
        source = scores["merged"] if name == "merged" else scores["models"][name]
        expected = np.mean(list(source.values())) if task == "mean" else source[task]  # the last column: means
        assert cell["accuracy"] == pytest.approx(expected, abs=1e-3)
    assert list(xticks.values())[-1] == "mean"
    means = {m: (scores.get("mean") or {}).get(m, np.mean(list(v.values()))) for m, v in scores["models"].items()}
    tied = [m for m, v in means.items() if v == max(means.values())]  # sources tied for the best: named together
    title = hv.Store.lookup_options("bokeh", grid, "plot").kwargs["title"]
    assert f"its best source{'s' if len(tied) > 1 else ''} ({' = '.join(tied)}) on the mean" in title, title
    assert sorted(labels.dframe()["text"]) == sorted(f"{v:.2f}" for v in heatmap.dframe()["accuracy"])
    # a run that weighed its tasks (--task-weights 1 3) is judged on its weighted means, and says so
    weighted = {"models": {"a": {"add": 0.9, "sort": 0.1}, "b": {"add": 0.1, "sort": 0.5}},
                "merged": {"add": 0.5, "sort": 0.45}, "mean_weights": {"add": 1.0, "sort": 3.0},
                "mean": {"merged": 0.4625, "a": 0.3, "b": 0.4}}
    grid = scores_plot(weighted)
    cells = grid.get(0).dframe()
    means = cells[cells["task name"] == "weighted mean"].set_index("model name")["accuracy"]
    assert means.to_dict() == pytest.approx({"merged": 0.4625, "a": 0.3, "b": 0.4}, abs=1e-3)  # cells round
    title = hv.Store.lookup_options("bokeh", grid, "plot").kwargs["title"]
    # on the plain means a (0.5) would beat the merge (0.475)
    assert "the merge beats its best source (b) on the weighted mean" in title
    tie = {"models": {"a": {"add": 0.5}, "b": {"add": 0.5}}, "merged": {"add": 0.5}}
    title = hv.Store.lookup_options("bokeh", scores_plot(tie), "plot").kwargs["title"]
    # "matches", not "ties" (on a TIES run it read as the method), nor "does not beat (a)"
    assert title == "test accuracy: the merge matches its best sources (a = b) on the mean"
    png = model.export("recipe", tmp_path / "figs")
    assert Image.open(png).size[0] > 300
    assert model.export("recipe", tmp_path / "figs", "svg").name.endswith("-recipe.svg")  # "recipesvg" was refused
    with pytest.raises(ValueError, match="no 'path' figure"):
        model.export("path", tmp_path / "figs")
    model.tab = "Task vectors"
    both = model.export_tab(tmp_path / "figs", ".svg")
    assert both.name == f"{runs['dare_ties']}-task-vectors.svg" and both.read_text().count("<svg") >= 1
    model.tab = "TIES / DARE"  # a tab's words, its punctuation left out: ties-dare
    assert model.export_tab(tmp_path / "figs", ".svg").name == f"{runs['dare_ties']}-ties-dare.svg"
    # a DFS run has no recipe heatmaps: the page moves to a tab it has
    model.run_id = runs["dfs"]
    assert "Recipe" not in model.tabs() and model.tab == model.tabs()[0] == "DFS path"
    assert "method `dfs`" in model.summary()
    assert model.export_tab(tmp_path / "figs", ".png").name == f"{runs['dfs']}-dfs-path.png"
    # every figure of both runs as .csv, and the tab on show: a row per heatmap cell (its values written in the cells
    # are text, not rows again), curve point, DFS step (figure_csv)
    from figure_csv import check_csv

    from workbench.dashboards.merge import FIGURES

    for run_id in (runs["dfs"], runs["dare_ties"]):
        model.run_id = run_id
        for name in FIGURES:
            try:
                fig = model.paper_figure(name)[0]
            except ValueError:  # not this run's (a DFS run has no recipe, a TIES one no path)
                continue
            rows = check_csv(model.export(name, tmp_path / "figs", ".csv"), fig)
            assert "Labels" not in {r["element"] for r in rows}, name
    model.tab = "Task vectors"
    check_csv(model.export_tab(tmp_path / "figs", ".csv"), model.tab_figure(points=None))
    with pytest.raises(ValueError, match="is an illuminate run"):
        model.choose(runs["illuminate"])
    model.choose(runs["dare_ties"][:-1])  # a unique prefix, as the CLI takes one
    assert model.run_id == runs["dare_ties"]
    # a run whose process is gone (killed): interrupted, with its resume, not the "running" it last wrote
    import socket

    store = tmp_path / "killed"
    shutil.copytree(Path(runs["dir"]) / runs["dfs"], store / runs["dfs"])
    info = json.loads((store / runs["dfs"] / "run.json").read_text())
    info.update(status="running", pid=2 ** 22 + 7, host=socket.gethostname(), pid_started=1.0, iterations=1,
                best_loss=-0.25)
    (store / runs["dfs"] / "run.json").write_text(json.dumps(info))
    killed = MergeModel(runs_dir=str(store), run_id=runs["dfs"])
    assert "· interrupted," in killed.summary() and f"merge evolve --resume {runs['dfs']}" in killed.summary()
    # iterations done of those asked; the fitness: the loss negated
    assert f"· interrupted, 1/{info['config']['iters']} iterations · best validation fitness 0.250" in killed.summary()
    # a damaged metrics file: the page shows the run's other files and says what it could not read (it failed to
    # build, a traceback for the Runs gallery's link)
    (store / runs["dfs"] / "metrics.parquet").write_bytes(b"PAR1 cut short")
    damaged = MergeModel(runs_dir=str(store), run_id=runs["dfs"])
    assert "**cannot read** " in damaged.summary()
    assert "metrics.parquet is unreadable" in html.unescape(damaged.summary())  # shown as its characters
    assert "DFS path" in damaged.tabs()
    # a run on show that is gone at a refresh (deleted): the page moves to a run that is there
    two = tmp_path / "two"
    for name in (runs["dare_ties"], runs["dfs"]):
        shutil.copytree(Path(runs["dir"]) / name, two / name)
    gone = MergeModel(runs_dir=str(two), run_id=runs["dare_ties"])
    shutil.rmtree(two / runs["dare_ties"])
    assert gone.refresh() == [runs["dfs"]] and gone.run_id == runs["dfs"]


def test_export_controls_print_png_svg_pdf_at_a_width_and_font_and_html_as_its_page():
    """The export controls' printed size: the width and font asked go to a .png/.svg/.pdf export (sans: the
    default, as the CLI without --font), none to an .html one (its page's), whose size fields are then greyed; a
    refusal names the page's fields, not the CLI's flags."""
    from workbench.dashboards.shell import export_controls, export_settings, page_words

    assert export_settings(".pdf", 5.5, "serif") == {"width": 5.5, "font": "serif", "rename": {}}
    assert export_settings(".png", None, "sans") == {"width": None, "font": None, "rename": {}}
    # the legend's new names, one a line as NAME → NEW (names hold "=", so an arrow parts them), for any format
    assert export_settings(".html", 5.5, "serif", "sigma=0.3, seed=1 → ours\n\n b -> baseline ") == \
        {"width": None, "font": None, "rename": {"sigma=0.3, seed=1": "ours", "b": "baseline"}}
    for bad, message in (("sigma=0.3 ours", "Rename legend entries: write each line as NAME → NEW"),
                         ("a → x\na → y", "Rename legend entries 'a' is given twice")):
        with pytest.raises(ValueError) as refused:
            export_settings(".png", None, "sans", bad)
        assert message in page_words(str(refused.value))
    fmt, size, export, status, download = export_controls(lambda suffix, **printed: None)
    (width, font), legend = size
    assert legend.value == "" and legend.label == "Rename legend entries"
    assert not download.visible  # until a file is written
    assert (width.value, font.value) == (None, "sans") and not width.disabled
    fmt.value = ".html"
    assert width.disabled and font.disabled
    fmt.value = ".svg"
    assert not width.disabled and not font.disabled
    assert page_words("--width 2: ... give --width 3.3 or more; leave --font out") == \
        "Width 2: ... give Width 3.3 or more; leave Font out"


def test_the_export_format_menu_offers_csv_without_a_printed_size():
    """The pages' "export for a paper" offered pictures only; its format menu now offers .csv, the figure's
    numbers, whose width and font are greyed as an .html figure's are (and not passed on: a table has no size)."""
    from workbench.dashboards.shell import export_controls, export_settings

    fmt, size, export, status, download = export_controls(lambda suffix, **printed: None)
    (width, font), legend = size
    assert ".csv" in fmt.options and fmt.value == ".png"
    fmt.value = ".csv"
    assert width.disabled and font.disabled
    fmt.value = ".pdf"
    assert not width.disabled and not font.disabled
    assert export_settings(".csv", 5.5, "serif", "sigma=0.3 → ours") == \
        {"width": None, "font": None, "rename": {"sigma=0.3": "ours"}}


def test_a_failure_that_is_no_value_error_is_said_by_its_type_and_first_line():
    """What the pages show where a run, an answer or an export fails otherwise than by a ValueError (the NAMM page
    said "running…" for good, the reason only in the server's log)."""
    from workbench.dashboards.shell import failed, plain

    assert failed(ImportError("cannot import name 'x' from 'y'\n(see above)")) == \
        "ImportError: cannot import name 'x' from 'y'"
    assert failed(KeyError()) == "KeyError" and failed(RuntimeError("  ")) == "RuntimeError"
    assert failed(TypeError("got <class 'int'> & 1")) == "TypeError: got <class 'int'> & 1"
    # as a page shows it: in Markdown, the <...> vanished as HTML
    assert _shown_text(plain(failed(TypeError("got <class 'int'> & 1"))))[0].strip() == \
        "TypeError: got <class 'int'> & 1"


def test_a_search_whose_metrics_cannot_be_read_says_so_beside_its_status(tmp_path):
    """A done search with a truncated metrics.parquet read "5 / 5 iterations · done" beside "the loss curve appears
    after the first iteration"; one without best_loss made the page a traceback. Now the notice says why."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from workbench.asal.driver import SearchConfig, run_search
    from workbench.asal.evaluate import EvalConfig
    from workbench.dashboards.search import SearchViews
    from workbench.runs import RunStore

    store = RunStore(tmp_path)
    run = run_search(SearchConfig(kind="openended", pop=4, iters=2, eval=EvalConfig("boids", "pixels", steps=4,
                                                                                     frames=2, overrides={"N": 8})),
                     store)
    good = (run.path / "metrics.parquet").read_bytes()
    for damage, why in ((lambda f: f.write_bytes(good[:60]), "is unreadable"),
                        (lambda f: pq.write_table(pa.table({"iteration": [0]}), f), "has no best_loss column")):
        damage(run.path / "metrics.parquet")
        model = SearchModel(runs_dir=str(tmp_path))
        model.choose(run.id)
        assert model.status == "done" and model.metrics == [] and "cannot read its loss curve" in model.notice
        assert why in model.notice
        views = SearchViews(model)
        views.refresh()  # it raised on the rows without best_loss
        shown, made = _shown_text(views.status.object)
        assert why in shown and "**cannot read** its loss curve" in views.status.object, views.status.object
    (run.path / "metrics.parquet").write_bytes(good)
    model = SearchModel(runs_dir=str(tmp_path))
    model.choose(run.id)
    assert len(model.metrics) == 2 and "cannot read" not in model.notice


def test_shell_registry_and_offline_design(tmp_path):
    from workbench.dashboards.shell import (
        OPENERS,
        PAGES,
        OfflineFast,
        counted,
        open_links,
        register_opener,
        run_asked,
    )

    assert {"lab", "search", "runs", "atlas", "merge", "qd"} <= set(PAGES)  # and the pages other issues add
    assert [counted(n, "model") for n in (0, 1, 2)] == ["0 models", "1 model", "2 models"]  # "1 models" before
    # the run an address asks for: an empty or blank ?run= asks for none (the Search page hid its server's search;
    # a blank one was refused as "no run ' '")
    assert [run_asked(a) for a in (None, {}, {"run": [b""]}, {"run": [b" "]}, {"run": [b" r1 "]})] == [
        None, None, None, None, "r1"]
    from tornado.httputil import parse_qs_bytes  # the server's own reading of a query string: "+" is a space

    assert run_asked(parse_qs_bytes(b"run=20261204-114241-qd-elite+svd-s0")) == "20261204-114241-qd-elite+svd-s0"
    # a run folder renamed with a space: its own links (%20) and an address written back (+) both reach it
    (tmp_path / "my merge run").mkdir()
    for query in (b"run=my%20merge%20run", b"run=my+merge+run"):
        assert run_asked(parse_qs_bytes(query), tmp_path) == "my merge run"
    assert run_asked(parse_qs_bytes(b"run=a+b"), tmp_path) == run_asked(parse_qs_bytes(b"run=a+b")) == "a+b"
    assert all(p.description for p in PAGES.values())
    assert open_links("illuminate", "r1") == [("Atlas", "./atlas?run=r1"), ("Lab", "./lab?run=r1"),
                                              ("Search", "./search?run=r1")]
    # "kind/algorithm" wins over the kind; ids are quoted (the "+" of a qd run's id would read as a space)
    assert open_links("illuminate", "r1", "map-elites") == [("Atlas", "./atlas?run=r1"), ("QD archives", "./qd?run=r1"),
                                                            ("Lab", "./lab?run=r1"), ("Search", "./search?run=r1")]
    assert open_links("target", "r1")[-1] == open_links("openended", "r1")[-1] == ("Search", "./search?run=r1")
    assert open_links("illuminate", "r1", "ga") == open_links("illuminate", "r1")
    assert open_links("qd", "a+b s") == [("QD archives", "./qd?run=a%2Bb%20s")]
    assert open_links("unknown-kind", "r1") == []
    assert open_links("sweep", "r1") == [("Lab", "./lab?run=r1")]  # its best rule plays there (it linked nowhere)
    with pytest.raises(ValueError, match="unknown page"):
        register_opener("a-new-kind", "explorer-that-does-not-exist")
    register_opener("a-new-kind", "atlas")
    try:
        assert open_links("a-new-kind", "r2") == [("Atlas", "./atlas?run=r2")]
    finally:
        del OPENERS["a-new-kind"]
    resources = OfflineFast().resolve_resources(cdn=False)
    urls = [u for kind in ("css", "js", "js_modules") for u in resources[kind].values()]
    assert urls and not [u for u in urls if u.startswith(("http:", "https:", "//"))], urls


def test_a_closed_session_takes_its_pages_fake_root_with_it():
    """Panel keeps an id per served page in state._fake_roots (a list that every widget change of every session
    searches) and never took it out at the session's end: a long-lived server kept one more for good per browser
    session (a helper's leak audit: one id more a closed session, none live). Panel's own end of the session
    (the template's _server_destroy) takes it out now."""
    from types import SimpleNamespace

    import panel as pn
    from bokeh.document import Document
    from panel.io.state import state

    from workbench.dashboards.shell import shell

    before = list(state._fake_roots)
    doc = Document()
    template = shell("lab", [pn.pane.Markdown("a page")])
    template.server_doc(doc)
    assert len(state._fake_roots) == len(before) + 1
    template._server_destroy(SimpleNamespace(_document=doc))  # what Bokeh calls as the session ends
    assert state._fake_roots == before


def test_a_hidden_tabs_pane_that_changes_keeps_the_pages_stylesheets_on_our_server():
    """A dynamic Tabs keeps a hidden tab's model out of the document; a change of its pane (the Experts mixer's
    answer after a switch of run, a spinner) made Panel rewrite the page's shared loading.css and markdown.css
    to cdn.holoviz.org (an offline browser then failed to fetch them). dashboards.shell.local_stylesheets."""
    import panel as pn
    from bokeh.document import Document
    from bokeh.models import ImportedStyleSheet
    from panel.io.resources import LOCAL_DIST, patch_model_css
    from panel.io.state import set_curdoc

    from workbench.dashboards.shell import local_stylesheets

    local_stylesheets()
    doc = Document()
    doc._template_variables["dist_url"] = LOCAL_DIST  # as Panel's server sets it for a page it serves
    said = pn.pane.Markdown("first answer")
    tabs = pn.Tabs(("view", pn.pane.Markdown("a view")), ("mixer", said), dynamic=True, active=1)
    with set_curdoc(doc):
        root = tabs.get_root(doc)
        doc.add_root(root)
        patch_model_css(root, dist_url=LOCAL_DIST)
        tabs.active = 0  # the mixer is hidden: its model leaves the document
        said.loading = True
        said.object = "the answer, landed while hidden"
        said.loading = False
    urls = {m.url for m in doc.models if isinstance(m, ImportedStyleSheet)}
    assert any("markdown.css" in u for u in urls) and any("loading.css" in u for u in urls), urls
    assert all(u.startswith(LOCAL_DIST) for u in urls), urls


def test_every_page_builds_without_panel_deprecations_of_ours(tmp_path):
    """Panel's (pending) deprecations of what the pages call (Widget.name, say: Panel 2.0 removes it), raised from
    our code, are errors here; those inside third-party code (Bokeh's pandas calls) are not ours to fix. Each route
    serves its own page (titled as PAGES names it)."""
    import warnings

    from workbench.dashboards.app import pages
    from workbench.dashboards.shell import PAGES

    with warnings.catch_warnings():
        for category in (DeprecationWarning, PendingDeprecationWarning):
            warnings.filterwarnings("error", category=category, module=r"workbench\.dashboards")
        for route, build in pages(str(tmp_path)).items():
            assert build().title == (PAGES[route].title if route in PAGES else "Home"), route


def test_closed_tab_noise_is_dropped_and_other_errors_are_kept():
    """The AssertionError Bokeh raises for a message of a tab whose session is already detached (what a tab
    closed mid-work leaves in the log) is filtered; the same logger's other errors are not."""
    from bokeh.server.connection import ServerConnection

    from workbench.dashboards.shell import _ClosedSessionNoise

    class Session:  # only what ServerConnection calls on its session
        def subscribe(self, connection):
            pass

        def unsubscribe(self, connection):
            pass

    connection = ServerConnection(protocol=None, socket=None, application_context=None, session=Session())
    connection.detach_session()
    try:
        connection.session  # noqa: B018 - what a late message of a closed tab does
    except AssertionError:
        closed = sys.exc_info()
    try:
        raise AssertionError("a real bug")
    except AssertionError:
        ours = sys.exc_info()

    def record(exc_info, msg="Handler or its work threw an exception: %r"):
        return logging.LogRecord("bokeh.server.views.ws", logging.ERROR, __file__, 1, msg, (exc_info[1],), exc_info)

    noise = _ClosedSessionNoise()
    assert not noise.filter(record(closed))
    assert noise.filter(record(ours))
    assert not noise.filter(logging.LogRecord("bokeh.server.views.ws", logging.WARNING, __file__, 1,
                                              "Failed sending message as connection was closed", (), None))


def test_off_loop_keeps_the_event_loop_serving():
    """Work handed to off_loop runs on a thread: the loop keeps running other callbacks meanwhile."""
    import panel as pn

    from workbench.dashboards.shell import off_loop

    async def main():
        ticks = 0
        busy = pn.Column()
        seen_loading = []

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                seen_loading.append(busy.loading)
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        result = await off_loop(lambda: (time.sleep(0.5), 42)[1], busy=[busy])
        task.cancel()
        return result, ticks, seen_loading, busy.loading

    result, ticks, seen_loading, loading_after = asyncio.run(main())
    assert result == 42 and ticks >= 20 and any(seen_loading) and not loading_after


def test_page_thread_changes_models_only_under_the_document_lock():
    """The served loop runs code outside Bokeh's document lock too (Panel's own tasks: a click that arrives while
    an earlier change is pending). A raw model changed there through PageThread.call is queued to a locked
    callback, not changed at once (Bokeh would raise and the update would be lost)."""
    import panel as pn
    from bokeh.models import ColumnDataSource
    from bokeh.plotting import figure

    from workbench.dashboards.shell import PageThread

    made = {}

    def app():
        source = ColumnDataSource({"x": [0], "y": [0]})
        fig = figure(width=100, height=100)
        fig.scatter("x", "y", source=source)
        made.update(source=source, page=PageThread())
        return pn.pane.Bokeh(fig)

    port = free_port()
    server = pn.serve({"app": app}, port=port, threaded=True, show=False)
    try:
        assert first_answer(f"http://127.0.0.1:{port}/app", 60) is not None  # the GET makes the session
        outcome = []

        def outside_the_lock():  # a plain loop callback, as Panel's event tasks are
            try:
                made["page"].call(lambda: setattr(made["source"], "data", {"x": [1], "y": [2]}))
                outcome.append("ok")
            except Exception as exc:  # noqa: BLE001 - what the test reports
                outcome.append(repr(exc))

        server.asyncio_loop.call_soon_threadsafe(outside_the_lock)
        deadline = time.time() + 30
        while (not outcome or made["source"].data["y"] != [2]) and time.time() < deadline:
            time.sleep(0.05)
        assert outcome == ["ok"] and made["source"].data["y"] == [2], (outcome, made["source"].data)
    finally:
        server.stop()


FORK_WHILE_BLAS = """
import os, sys, threading, time
import numpy as np
from workbench.dashboards.shell import serial_blas

serial_blas()
z = np.random.default_rng(0).normal(size=(16, 2352))
stop = False

def forker():  # what a search thread does when it starts ffmpeg for its run's video
    while not stop:
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)

threading.Thread(target=forker, daemon=True).start()
start = time.time()
while time.time() - start < 2:  # the Atlas page's PCA, on the event loop's thread
    np.linalg.svd(z - z.mean(0), full_matrices=False)
stop = True
import scipy.linalg  # noqa: F401 - an OpenBLAS loaded after serial_blas (scipy's, with t-SNE)
from threadpoolctl import threadpool_info

print(sorted({i["num_threads"] for i in threadpool_info() if i["internal_api"] == "openblas"}))
"""


def test_serial_blas_survives_a_fork_in_another_thread():
    """A server's BLAS calls go on while another of its threads forks: with OpenBLAS's own worker threads the
    BLAS call waited for good, about every time within these two seconds; serial_blas (workbench serve, pages
    served alone) also holds for an OpenBLAS loaded after it."""
    if (os.cpu_count() or 1) < 2:
        pytest.skip("OpenBLAS runs serially on one CPU anyway")
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    try:
        out = subprocess.run([sys.executable, "-c", FORK_WHILE_BLAS], capture_output=True, text=True, timeout=120,
                             cwd=Path(__file__).resolve().parents[1], env=env)
    except subprocess.TimeoutExpired:
        pytest.fail("a BLAS call hung while another thread forked")
    assert out.returncode == 0 and out.stdout.strip().splitlines()[-1] == "[1]", out.stderr[-2000:]


def test_off_loop_spinner_stays_until_the_last_overlapping_call_ends():
    import panel as pn

    from workbench.dashboards.shell import off_loop

    async def main():
        shared, own = pn.Column(), pn.Column()
        short = asyncio.create_task(off_loop(time.sleep, 0.2, busy=[shared]))
        long = asyncio.create_task(off_loop(time.sleep, 0.8, busy=[shared, own]))
        await short
        during = (shared.loading, own.loading)
        await long
        return during, (shared.loading, own.loading)

    during, after = asyncio.run(main())
    assert during == (True, True) and after == (False, False)


def test_a_spinner_left_on_by_a_closed_tab_passes_to_no_other_component():
    """A tab closed while off_loop worked never runs its "off": the count it leaves must go with its component
    (kept by id(), it passed to whichever later component got that id, whose spinner then never went off)."""
    import gc

    import panel as pn

    from workbench.dashboards import shell

    left = pn.Column()
    shell._set_loading([left], True)  # "on" ran; the tab closed before "off"
    assert left.loading and len(shell._BUSY) == 1
    del left
    gc.collect()
    assert len(shell._BUSY) == 0
    later = pn.Column()
    shell._set_loading([later], True)
    shell._set_loading([later], False)
    assert not later.loading


# --- the served pages in Chromium ---------------------------------------------------------------------------

@contextlib.contextmanager
def serving(runs_dir: str, log: Path, env: dict[str, str] | None = None, kill: bool = False):
    """`workbench serve` over runs_dir on a free port (env: variables to add), its output in log; yields the url
    once /liveness answers. Stopped by SIGTERM (as a Ctrl-C: it waits for the work its pages started), or by
    SIGKILL (kill) where that work is seconds long."""
    port = free_port()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "workbench", "serve", "--port", str(port), "--runs", runs_dir],
                                stdout=out, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    url = f"http://127.0.0.1:{port}"
    if not wait_live(url, 120, proc):
        proc.kill()
        pytest.fail(f"workbench serve did not come up: {log.read_text()}")
    try:
        yield url
    finally:
        proc.kill() if kill else proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_ctrl_c_stops_the_server_and_waits_for_the_searches_its_pages_started(tmp_path, sig):
    """A Ctrl-C at the terminal (SIGINT to the process group) while a search a page started runs: the search stops
    after its iteration, marked stopped (resumable), the command says so and exits 130 (143 for SIGTERM, as every
    command stopped by one). The search's thread is a
    daemon: the process used to exit under it, aborting inside native code ("terminate called without an active
    exception", exit -6) with the run left marked running; and serve exited 0 with Panel's banner on stdout.
    SIGTERM to the server alone (`kill`, a service manager's stop) does the same (it killed the process at once)."""
    import signal

    from procs import _as_from_a_terminal, kill_after

    from workbench.runs import RunStore

    runs, port = str(tmp_path / "runs"), free_port()
    script = ("import sys\n"
              "from workbench.asal.driver import SearchConfig\n"
              "from workbench.asal.evaluate import EvalConfig\n"
              "from workbench.cli import main\n"
              "from workbench.dashboards.search import SearchJob\n"
              "ev = EvalConfig('boids', 'pixels', steps=8, size=32, overrides={'N': 16})\n"
              "SearchJob.launch(sys.argv[1], SearchConfig(kind='target', eval=ev, target_image=sys.argv[3], "
              "iters=100000, pop=4))  # what the Search page's Start does\n"
              "sys.exit(main(['serve', '--port', sys.argv[2], '--runs', sys.argv[1]]))\n")
    target = tmp_path / "target.png"
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(target)
    proc = subprocess.Popen([sys.executable, "-c", script, runs, str(port), str(target)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_as_from_a_terminal, process_group=0)
    assert wait_live(f"http://127.0.0.1:{port}", 120, proc), proc.stderr.read()
    row = kill_after(proc, RunStore(runs), 2, sig=getattr(signal, sig), group=sig == "SIGINT")
    out, err = proc.stdout.read(), proc.stderr.read()
    assert proc.returncode == 128 + getattr(signal, sig), (proc.returncode, err)  # 130, or 143 as other commands
    assert "terminate called" not in err and "Traceback" not in err, err
    assert "stopping 1 search after the current iteration" in err and "Launching server" not in out, (out, err)
    assert row["status"] == "stopped" and row["iterations"] >= 2
    RunStore(runs).open(row["id"]).check_resumable()


@pytest.fixture(scope="module")
def server(tmp_path_factory, runs):
    log = tmp_path_factory.mktemp("server") / "serve.log"
    with serving(runs["dir"], log) as url:
        SERVED[url] = {"runs": runs["dir"], "log": log, "ids": runs}
        yield url


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
    """A fresh page at url, offline: any request that leaves our server is refused. On leaving, no console or
    page errors and no refused requests may have happened. Screenshot and trace are kept under
    test-artifacts/ when the test fails."""
    context, page, errors = _open(browser, url)
    failed = True
    try:
        yield page
        assert not errors, errors
        failed = False
    finally:
        _finish(context, page, request.node.name, failed)


def _wait_for_model(page, name: str) -> None:
    page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0 && "
                           f"Bokeh.documents[0].get_model_by_name('{name}') !== null", timeout=60000)


def _open(browser, url):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    # DOM snapshots per action, no screencast: its frames (one per repaint of a playing Lab, a running search) cost
    # Chromium CPU on a 2-core machine in every test; a failing test still keeps a screenshot (_finish)
    context.tracing.start(screenshots=False, snapshots=True)
    # a file:// page (an .html export) may load files only: its host, "", was in every address
    host = "file://" if url.startswith("file:") else url.split("/")[2]
    errors = []

    def route(r):
        if r.request.url.startswith(("data:", "blob:")) or host in r.request.url:
            r.continue_()
        else:
            errors.append(f"refused a request that leaves the server: {r.request.url}")
            r.abort()

    context.route("**/*", route)
    page = context.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url, wait_until="networkidle")
    return context, page, errors


def _finish(context, page, name: str, failed: bool) -> None:
    """Keep a screenshot and a Playwright trace when the test failed."""
    if failed:
        out = Path("test-artifacts") / name
        out.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out / "page.png"))
        context.tracing.stop(path=str(out / "trace.zip"))
    else:
        context.tracing.stop()
    context.close()


FRAME_SUM = """() => {
  const fig = Bokeh.documents[0].get_model_by_name('lab-frame');
  const img = fig.renderers[0].data_source.data.image[0];
  let s = 0; for (let i = 0; i < img.length; i += 7) s = (s * 31 + img[i]) % 1000000007; return s;
}"""

def test_a_page_says_when_it_loses_its_server_in_chromium(browser, tmp_path, request):
    """A page whose websocket closes (the server stopped here; a dropped network or a laptop's sleep the same) says
    so, and that a reload reconnects. Panel turns Bokeh's own notice off and no page turned Panel's on: the page
    looked alive, a running search's progress stood still and its stop button did nothing, silently."""
    from playwright.sync_api import expect

    from workbench.dashboards.shell import CONNECTION_LOST

    with serving(str(tmp_path / "runs"), tmp_path / "serve.log") as url:
        context, page, errors = _open(browser, f"{url}/search")
        page.get_by_text("status: idle").wait_for(timeout=60000)
        assert not errors, errors  # the notice's own script and styles come from our server, not a CDN
        expect(page.locator(".notyf__message")).to_have_count(0)  # nothing said while connected
    failed = True
    try:  # the server is gone now
        expect(page.locator(".notyf__message")).to_have_text(CONNECTION_LOST, timeout=30000)
        failed = False
    finally:
        _finish(context, page, request.node.name, failed)


def test_pages_open_in_frames_of_this_machine_only_in_chromium(server, browser, request, tmp_path):
    """Each answer says who may frame the pages (Content-Security-Policy frame-ancestors): a page of another site
    framing the Runs page (and tricking a click on "remove") is refused by the browser; a frame on the pages'
    own server, or another port of this machine (a notebook's IFrame), shows it."""
    from workbench.dashboards.app import FRAME_ANCESTORS

    for route in ("/runs", "/static/js/bokeh.min.js"):
        with urllib.request.urlopen(f"{server}{route}", timeout=30) as answer:
            assert answer.headers["Content-Security-Policy"] == FRAME_ANCESTORS
    with _browse(browser, f"{server}/", request) as page:
        page.locator(".cards .card").first.wait_for(timeout=30000)
        framed = "url => new Promise(done => { const f = document.createElement('iframe'); f.src = url; " \
                 "f.onload = () => done(true); document.body.appendChild(f); })"
        page.evaluate(framed, f"{server}/runs")
        frame = page.frames[-1]
        frame.locator(".bk-tab", has_text="Table").wait_for(timeout=60000)  # drawn inside the frame
        # another site: a page from another address (127.0.0.2, a real server: a page Playwright made up is
        # refused by Chromium's local-network checks whatever the pages say) framing the Runs page
        import functools
        import http.server
        import threading

        (tmp_path / "index.html").write_text(f'<iframe src="{server}/runs" width="800" height="600"></iframe>')
        quiet = type("Quiet", (http.server.SimpleHTTPRequestHandler,), {"log_message": lambda *_: None})
        site = http.server.ThreadingHTTPServer(("127.0.0.2", 0), functools.partial(quiet, directory=str(tmp_path)))
        threading.Thread(target=site.serve_forever, daemon=True).start()
        elsewhere = browser.new_context()  # not the offline one: it refuses every address but the server's
        other = elsewhere.new_page()
        try:
            other.goto(f"http://127.0.0.2:{site.server_address[1]}/index.html")
            # refused: the frame holds Chromium's error page, never the Runs page (which drew its tabs in the frame
            # in 3 s without the policy); waited for, up to 30 s
            for _ in range(150):
                if other.frames[-1].url == "chrome-error://chromewebdata/":
                    break
                other.wait_for_timeout(200)
            assert other.frames[-1].url == "chrome-error://chromewebdata/", other.frames[-1].url
            assert other.frames[-1].locator(".bk-tab").count() == 0
        finally:
            elsewhere.close()
            site.shutdown()


def test_every_page_has_the_shell_names_its_parts_and_navigates_offline(server, browser, request):
    """Each page: in the template, its title and description (the tab's "workbench · PAGE"), the navigation from
    page to page (each page reached from the one before, the first from Home's cards), and back Home; a heading
    for screen readers. On the same walk (one page load each, not one walk per check): what a screen reader is
    given of each page (_check_names_its_parts_for_a_screen_reader) and, on the Lab, Search and NAMM pages, a name
    for every control and chart (_check_every_control_and_chart_has_a_name)."""
    from workbench.dashboards.shell import PAGES

    with _browse(browser, f"{server}/", request) as page:
        page.locator(".cards .card").first.wait_for(timeout=30000)
        assert page.locator(".cards .card").count() == len(PAGES) and page.title() == "workbench"
        assert page.evaluate(HEADING_LEVELS) == [1, *[2] * len(PAGES), 2]  # the cards, the latest runs
        _check_names_its_parts_for_a_screen_reader(page, "", "Home")
        for n, (slug, info) in enumerate(PAGES.items()):
            if n == 0:
                page.locator(".cards .card").first.click()  # the cards link the pages in their order
            else:
                page.locator("nav.pages").get_by_role("link", name=info.title, exact=True).click()
            page.wait_for_url(f"{server}/{slug}", timeout=30000)
            page.get_by_text(info.description).wait_for(timeout=60000)
            assert page.title() == f"workbench · {info.title}"  # the tab said "Lab" among other apps' tabs
            links = page.locator("nav.pages a").all_inner_texts()
            assert links == ["Home", *(p.title for p in PAGES.values())], links
            assert page.locator("nav.pages a.current").inner_text() == info.title
            # one heading for screen readers to start from (a page had none), not drawn beside the header's title
            heading = page.get_by_role("heading", level=1)
            assert heading.count() == 1 and heading.text_content() == info.title
            assert heading.bounding_box()["width"] <= 1
            page.locator("#sidebar").wait_for(timeout=30000)  # the page's controls
            # an outline without gaps: the sidebar's sections were h4 under the h1 (levels 1 then 4)
            levels = page.evaluate(HEADING_LEVELS)
            deeper = [b - a for a, b in zip([1, *levels[:-1]], levels, strict=True)]
            assert levels.count(1) == 1 and max(deeper) <= 1, (slug, levels)
            _check_names_its_parts_for_a_screen_reader(page, slug, info.title)
            if slug in ("lab", "search", "namm"):
                _check_every_control_and_chart_has_a_name(page, slug)
        page.locator("nav.pages").get_by_role("link", name="Home", exact=True).click()
        page.wait_for_url(f"{server}/", timeout=30000)
        page.locator(".cards .card").first.wait_for(timeout=30000)


#: what a narrow window shows: the page's own width against the window's, the main area's, whether the sidebar is
#: open, whether the header's links scroll within it and where the current page's link is drawn
NARROW_LAYOUT = """() => {
  const nav = [...document.querySelectorAll("#header-items *")].map((e) => e.shadowRoot &&
                e.shadowRoot.querySelector("nav.pages")).find((n) => n);
  const sidebar = document.getElementById("sidebar");
  return {page: document.scrollingElement.scrollWidth, window: window.innerWidth,
          main: document.getElementById("main").clientWidth, sidebar: !!sidebar && !sidebar.matches(".hidden"),
          navScrolls: nav.scrollWidth > nav.clientWidth,
          current: nav.querySelector("a.current").getBoundingClientRect()};
}"""


#: the main area's width against what it scrolls to, and each text or control drawn past the window's right edge
#: outside a box of its own that scrolls sideways (shadow roots included): [tag, left, right, text]
MAIN_REFLOW = """() => {
  const main = document.getElementById("main"), window_ = window.innerWidth;
  const up = (el) => el.parentNode instanceof ShadowRoot ? el.parentNode.host : el.parentElement;
  const scrollsItself = (el) => { for (let a = up(el); a && a !== main; a = up(a)) {
    if (["auto", "scroll"].includes(getComputedStyle(a).overflowX)) return true; } return false; };
  const past = [];
  const walk = (root) => { for (const el of root.querySelectorAll("*")) {
    if (el.shadowRoot) walk(el.shadowRoot);
    const control = el.matches("input, select, textarea, button");
    for (const node of control ? [el] : [...el.childNodes].filter((n) => n.nodeType === 3 && n.textContent.trim())) {
      const range = document.createRange();
      range.selectNodeContents(node);
      const box = control ? el.getBoundingClientRect() : range.getBoundingClientRect();
      if (box.width > 0 && box.right > window_ + 1 && !scrollsItself(el))
        past.push([el.tagName.toLowerCase(), Math.round(box.left), Math.round(box.right),
                   (control ? el.type : node.textContent).trim().slice(0, 40)]);
    } } };
  walk(main);
  return {main: main.scrollWidth, window: main.clientWidth, past};
}"""


#: true once the page's document_ready script has run (the shell's: it closes a narrow window's sidebar first and sets
#: this flag last, in one go)
DOCUMENT_READY = "() => window.__workbench_control_names === true"


#: true once every tabs' active tab has its views drawn: a dynamic tab's views come from the server when it is
#: chosen (a placeholder Spacer tagged "hidden" stands for them until then)
TABS_DRAWN = """() => [...Bokeh.index.all_views()].filter((v) => Array.isArray(v.model.tabs)).every((v) => {
  const panel = v.model.tabs[v.model.active];
  if (!panel) return true;
  const child = panel.child;
  if (child.type === "Spacer" && (child.tags || []).includes("hidden")) return false;
  const view = Bokeh.index.query_one((c) => c.model === child);
  return view !== null && view.has_finished();
})"""


def _settled(page, script: str, period_ms: int = 150, tries: int = 100):
    """What script reads on the page once two reads period_ms apart agree (a layout that moves, views that draw);
    the last read after `tries` reads otherwise (the test's assertions then judge it)."""
    before = page.evaluate(script)
    for _ in range(tries):
        page.wait_for_timeout(period_ms)
        now = page.evaluate(script)
        if now == before:
            break
        before = now
    return before


def test_every_page_fits_a_320_px_window_in_chromium(server, browser, request):
    """WCAG 1.4.10 reflow: at 320 CSS px (a phone, a 1280 px window at 400 % zoom) no page is wider than the window,
    the header's links scroll within the header with the current page's in sight, the page opens with its sidebar
    closed (the main area the window's width), and the main area's text and controls fit the window on every tab (a
    wider chart or table scrolls within its own box). The header's nine links made every page 900-1000 px wide and
    the template hides the page's overflow: the links past the edge could not be reached; the 330 px sidebar left
    the main area 30 px and ran past the window itself."""
    from playwright.sync_api import expect

    from workbench.dashboards.shell import PAGES

    with _browse(browser, f"{server}/", request) as page:
        page.set_viewport_size({"width": 320, "height": 640})
        for slug in ["", *PAGES]:
            page.goto(f"{server}/{slug}", wait_until="load")
            page.locator(".description").first.wait_for(timeout=60000)
            page.wait_for_function("() => document.querySelector('#header-items *') !== null", timeout=30000)
            page.wait_for_function(DOCUMENT_READY, timeout=30000)  # it closed the sidebar, scrolled the links
            got = _settled(page, NARROW_LAYOUT)
            assert got["page"] <= got["window"] == 320, (slug, got)
            assert got["navScrolls"], (slug, got)  # the links past the header's edge are reached by its scroll
            assert 0 <= got["current"]["left"] and got["current"]["right"] <= 320, (slug, got)  # in sight
            assert not got["sidebar"] and got["main"] >= 300, (slug, got)
            # the main area does not scroll sideways, and no text or control is past the window's edge: a chart or
            # table wider than the window scrolls in a box of its own (the whole main area scrolled, 350-900 px
            # wide, and the text between the charts panned with them; a placeholder's 520 px box cut its text)
            tabs = page.locator("#main .bk-tab")
            for n in range(max(tabs.count(), 1)):  # the page as it opens (its first tab), then each other tab
                if n:
                    tabs.nth(n).click()
                    expect(tabs.nth(n)).to_have_class(re.compile(r"\bbk-active\b"), timeout=30000)
                page.wait_for_function(TABS_DRAWN, timeout=60000)  # a dynamic tab's views come from the server
                reflow = _settled(page, MAIN_REFLOW)
                assert reflow["main"] <= reflow["window"] and not reflow["past"], (slug, n, reflow)


#: a control or picture in an aria snapshot with no name: `- textbox`, `- img` (the other controls, a number field's
#: step buttons, a slider's handle, a checkbox, a progress bar among them, are checked in the full accessibility
#: tree: _check_every_control_and_chart_has_a_name)
UNNAMED = re.compile(r"^(\s*)- (textbox|combobox|img|link)(?: \[[^\]]*\])*:?$")


def unnamed(snapshot: str) -> list[str]:
    """The lines of an aria snapshot that show a text field, select, picture or link without a name, or named
    "null"; an unnamed icon inside a named button (a player's) and choices.js' box around its named field pass."""
    lines, found = snapshot.splitlines(), []
    for i, line in enumerate(lines):
        if re.search(r'"null"', line):
            found.append(line)
        elif match := UNNAMED.match(line):
            parent = next((p for p in reversed(lines[:i]) if len(p) - len(p.lstrip()) < len(match[1])), "")
            inner = lines[i + 1] if i + 1 < len(lines) else ""
            if match[2] == "img" and re.match(r"\s*- button \"", parent):
                continue
            if match[2] == "combobox" and re.match(r'\s*- textbox "[^"]+"', inner):
                continue
            found.append(line)
    return found


def _settled_aria(page, period_ms: int = 300, tries: int = 100) -> str:
    """The page's aria snapshot once two reads period_ms apart agree (the views that draw after the page)."""
    before = page.locator("body").aria_snapshot()
    for _ in range(tries):
        page.wait_for_timeout(period_ms)
        now = page.locator("body").aria_snapshot()
        if now == before:
            break
        before = now
    return before


def _check_names_its_parts_for_a_screen_reader(page, slug: str, title: str) -> None:
    """The page as Chromium's accessibility tree has it: the template's header a banner holding the page links'
    navigation ("Pages", the current page's link said to be current: its highlight was a colour only), the page
    in a main landmark (none before), the sidebar's controls a complementary region; no field, select, picture or
    link without a name (the Runs page's compare box was read as "null", every view's full-screen icon as an
    unnamed image); the Search page's state and count are live regions (a started search changed on screen only).
    Read once the page is drawn: its ready script run, its tabs' views drawn, the tree still."""
    page.locator("h1.page-heading").wait_for(state="attached", timeout=60000)
    page.wait_for_function(DOCUMENT_READY, timeout=60000)
    page.wait_for_function(TABS_DRAWN, timeout=60000)
    tree = _settled_aria(page)
    assert re.search(r"^- banner:$", tree, re.M) and re.search(r"^- main:$", tree, re.M), (slug, tree)
    assert re.search(r'^  - navigation "Pages":$', tree, re.M), (slug, tree)
    current = page.locator('nav.pages a[aria-current="page"]')
    assert current.count() == 1 and current.inner_text() == title, slug
    if slug:  # Home has no controls
        assert re.search(r'^- complementary "Controls":$', tree, re.M), (slug, tree)
    assert not unnamed(tree), (slug, unnamed(tree))
    if slug == "search":
        expect_live = page.get_by_role("status")
        expect_live.filter(has_text="iterations").wait_for(timeout=60000)
        assert expect_live.filter(has_text="idle").count() == 1


#: the roles of Chromium's accessibility tree that a reader needs a name for: controls, pictures, charts' canvases
NAMED_ROLES = {"button", "slider", "checkbox", "radio", "spinbutton", "progressbar", "img", "image", "figure",
               "Canvas", "tab", "combobox", "textbox"}


def unnamed_controls(page) -> list[str]:
    """The nodes of the page's full accessibility tree (shadow roots included) that are controls, pictures or
    focusable yet have no name, each as "role <tag.class>"."""
    cdp = page.context.new_cdp_session(page)
    try:
        found = []
        for node in cdp.send("Accessibility.getFullAXTree")["nodes"]:
            role = node.get("role", {}).get("value", "")
            focusable = any(p["name"] == "focusable" and p["value"].get("value") for p in node.get("properties", []))
            if node.get("ignored") or role == "RootWebArea" or not (role in NAMED_ROLES or focusable):
                continue
            if not str(node.get("name", {}).get("value", "")).strip():
                dom = cdp.send("DOM.describeNode", {"backendNodeId": node["backendDOMNodeId"]})["node"]
                attrs = dict(zip(dom.get("attributes", [])[::2], dom.get("attributes", [])[1::2], strict=True))
                found.append(f"{role} <{dom['nodeName'].lower()}.{attrs.get('class', '').replace(' ', '.')}>")
        return found
    finally:
        cdp.detach()


def _check_every_control_and_chart_has_a_name(page, slug: str) -> None:
    """On the Lab (sliders, number fields, its frame, the parameters table), the Search page (an option group, a
    progress bar) and the NAMM page (checkboxes, tabs, a player) every control, picture and focusable node of
    Chromium's accessibility tree has a name: a number field's step buttons, a slider's handle, a checkbox, a
    progress bar, a chart's canvases and a tab header had none (24 on the NAMM page). The template's sidebar
    toggle is a button the keyboard reaches, named for what it does (and, on the NAMM page, hides the controls)."""
    deadline, left = time.monotonic() + 10, None
    while left is None or (left and time.monotonic() < deadline):  # views drawn after the page
        page.wait_for_timeout(500)
        left = unnamed_controls(page)
    assert not left, (slug, left)
    toggle = page.get_by_role("button", name="Show or hide controls", exact=True)
    assert toggle.get_attribute("tabindex") == "0" and toggle.get_attribute("aria-expanded") == "true", slug
    if slug == "namm":
        page.get_by_role("slider", name="eviction step").wait_for(state="attached")
        toggle.focus()
        page.keyboard.press("Enter")  # the keyboard hides the controls, as a click does
        page.locator("#sidebar.hidden").wait_for(state="attached", timeout=10000)
        assert toggle.get_attribute("aria-expanded") == "false"


def widest_row(figure) -> int:
    """The width in pixels of a HoloViews figure's widest row of panels as Bokeh draws it (or of a figure
    hv.render drew already: a Bokeh model). A panel sized by its frame counts its frame's width only (its axes and
    colour bar are not known before a browser lays it out): a lower bound there."""
    import holoviews as hv
    import holoviews.plotting.bokeh  # noqa: F401  (hv.render's backend)
    from bokeh.model import Model
    from bokeh.models import GridPlot

    def widest(model) -> int:
        if not isinstance(model, GridPlot):
            return model.width or getattr(model, "frame_width", None) or 0
        rows: dict[int, int] = {}
        for child, row, *_ in model.children:
            rows[row] = rows.get(row, 0) + widest(child)
        return max(rows.values())

    return widest(figure if isinstance(figure, Model) else hv.render(figure, backend="bokeh"))


#: a notebook's output cell in JupyterLab 4 at a 1280 px window, the file browser open (measured); a lone Bokeh plot
#: is drawn there with 5 px margins each side
NOTEBOOK_CELL = 848
NOTEBOOK_MARGINS = 10

# The width a figure's plots take as Chromium lays them out (axes, legends and colour bars included): the union
# of their canvases, the figure embedded alone into the page's body.
DRAWN = """async (item) => {
  const box = document.createElement('div');
  box.id = 'figure';
  document.body.replaceChildren(box);
  await Bokeh.embed.embed_item(JSON.parse(item), 'figure');
  await new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)));
  let left = Infinity, right = -Infinity;
  for (const v of Bokeh.index.all_views()) {
    if (!v.canvas_view || !v.canvas_view.el.isConnected) continue;
    const r = v.canvas_view.el.getBoundingClientRect();
    left = Math.min(left, r.left);
    right = Math.max(right, r.right);
  }
  return Math.round(right - left);
}"""


@contextlib.contextmanager
def figure_page(browser):
    """A blank page with BokehJS (inline, offline) for `drawn_width`."""
    from bokeh.resources import INLINE

    context = browser.new_context(viewport={"width": 2400, "height": 900})
    try:
        page = context.new_page()
        page.set_content(f"<html><head>{INLINE.render_js()}</head><body></body></html>")
        yield page
    finally:
        context.close()


def drawn_width(page, figure) -> int:
    """The width in pixels of a HoloViews figure as Chromium draws it with Bokeh: what `widest_row` leaves out
    included (the axes beside a frame-sized panel, its colour bar, a legend beside the row)."""
    import holoviews as hv
    import holoviews.plotting.bokeh  # noqa: F401  (hv.render's backend)
    from bokeh.embed import json_item

    if isinstance(figure, hv.Div):  # HTML (Panel's model, not BokehJS's), as wide as the cell it is in
        return 0
    return page.evaluate(DRAWN, json.dumps(json_item(hv.render(figure, backend="bokeh"))))


# The levels of the page's headings in document order, through the pages' shadow roots.
HEADING_LEVELS = """() => {
    const levels = [];
    const walk = (node) => {
        for (const el of node.children) {
            if (/^H[1-6]$/.test(el.tagName)) levels.push(Number(el.tagName[1]));
            if (el.shadowRoot) walk(el.shadowRoot);
            walk(el);
        }
    };
    walk(document);
    return levels;
}"""

# The element the keyboard is on, through the pages' shadow roots: its tag, text and outline.
FOCUSED = """() => {
  let e = document.activeElement;
  while (e && e.shadowRoot && e.shadowRoot.activeElement) e = e.shadowRoot.activeElement;
  const style = getComputedStyle(e);
  return [e.tagName, e.textContent.trim(), style.outlineStyle, style.outlineWidth];
}"""


def test_the_keyboard_is_seen_on_a_button_in_chromium(server, browser, request):
    """Tabbed to, the Search page's start button shows a ring (the design drew a focused button with no outline
    at all: a keyboard user could not see where start, export or run was); a group's chosen button reads."""
    with _browse(browser, f"{server}/search", request) as page:
        seed = page.get_by_label("Seed", exact=True)
        seed.click()
        for _ in range(8):  # past the field's own step buttons
            page.keyboard.press("Tab")
            tag, text, outline, width = page.evaluate(FOCUSED)
            if text == "start":
                break
        assert (tag, text) == ("BUTTON", "start") and outline != "none" and width != "0px", (tag, text, outline)
        # the chosen kind in white on the accent (its dark text read at 2.9:1)
        chosen = page.get_by_role("button", name="openended").evaluate("e => getComputedStyle(e).color")
        assert chosen == "rgb(255, 255, 255)", chosen


#: every piece of text in the tooltips on show (the host's shadow root walked), with its colour and what it is drawn
#: on: the tooltip's background and opacity, as Chromium computed them. Elements not drawn are left out: an .html
#: export's tooltip holds Bokeh's stylesheets as <style> elements, whose text is CSS
TOOLTIP_TEXT = """() => {
  const rgb = (c) => c.match(/[\\d.]+/g).slice(0, 3).map((v) => Number(v) / 255);
  const found = [];
  const walk = (root) => {
    for (const el of root.querySelectorAll("*")) {
      if (el.shadowRoot) walk(el.shadowRoot);
      if (!el.classList.contains("bk-Tooltip") || getComputedStyle(el).display === "none") continue;
      const tip = getComputedStyle(el);
      for (const part of el.shadowRoot.querySelectorAll("*")) {
        if (!part.getClientRects().length) continue;
        const own = [...part.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
        if (own) found.push({text: part.textContent.trim(), ink: rgb(getComputedStyle(part).color),
                             ground: rgb(tip.backgroundColor), opacity: Number(tip.opacity)});
      }
    }
  };
  walk(document);
  return found;
}"""


def tooltip_contrasts(page) -> list[tuple[str, float]]:
    """Each text of the tooltips on show and its WCAG contrast ratio, the tooltip's opacity taken in: the text and
    its background blended over a white and over a black page beneath (the lower of the two)."""
    shown = []
    for part in page.evaluate(TOOLTIP_TEXT):
        a, ink, ground = part["opacity"], np.array(part["ink"]), np.array(part["ground"])
        ratio = min(wcag_contrast(a * ink + (1 - a) * under, a * ground + (1 - a) * under) for under in (1.0, 0.0))
        shown.append((part["text"], ratio))
    return shown


def test_tooltips_read_at_wcag_aa_in_chromium(server, browser, request):
    """A chart's hover tooltip (the Atlas's cells: run, index, θ) and a control's help tooltip read at 4.5:1 (WCAG
    2.1 AA) as Chromium draws them: Bokeh's labels, a fixed light blue on its white 95 % opaque tooltip, read at
    2.6:1 (shell.TOOLTIP_CSS)."""
    with _browse(browser, f"{server}/atlas?run={SERVED[server]['ids']['illuminate']}", request) as page:
        _wait_for_model(page, "atlas")
        canvas = page.locator(".bk-Canvas").first  # the atlas plot (the player's frame comes second)
        box = canvas.bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.4)
        page.wait_for_function(f"() => ({TOOLTIP_TEXT})().some((p) => p.text.startsWith('index'))", timeout=30000)
        hover = tooltip_contrasts(page)
        assert {"run:", "index:", "θ:"} <= {text for text, _ in hover}, hover  # its labels were read
        page.mouse.move(5, 880)  # the hover tooltip away
        page.wait_for_function(f"() => ({TOOLTIP_TEXT})().length === 0", timeout=30000)
        page.locator(".bk-description").first.hover()  # a control's help
        page.wait_for_function(f"() => ({TOOLTIP_TEXT})().length > 0", timeout=30000)
        help_ = tooltip_contrasts(page)
    low = [(text, round(ratio, 2)) for text, ratio in hover + help_ if ratio < 4.5]
    assert not low, low


def test_html_exports_tooltips_read_at_wcag_aa_in_chromium(browser, request, tmp_path):
    """An .html export's hover tooltip (figures.save: `workbench figure ... --out x.html`, a page's export menu)
    reads at 4.5:1 (WCAG 2.1 AA) as Chromium draws the file, offline: its labels were Bokeh's light blue on its
    white tooltip, 2.5:1, as the pages' were before shell.TOOLTIP_CSS (figures.TOOLTIP_CSS now, in both)."""
    import holoviews as hv

    from workbench.figures import holoviews, save

    holoviews()
    heat = hv.Image(np.arange(4.0).reshape(2, 2), ["iteration", "seed"], "loss")  # hovered anywhere in its frame
    out = save(heat.opts(tools=["hover"], width=300, height=300, backend="bokeh"), tmp_path / "heat.html")
    with _browse(browser, out.as_uri(), request) as page:
        box = page.locator(".bk-Canvas").first.bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
        page.wait_for_function(f"() => ({TOOLTIP_TEXT})().some((p) => p.text === 'loss:')", timeout=30000)
        hover = tooltip_contrasts(page)
    assert {"iteration:", "seed:", "loss:"} <= {text for text, _ in hover}, hover  # its labels were read
    low = [(text, round(ratio, 2)) for text, ratio in hover if ratio < 4.5]
    assert not low, low


def test_the_keyboard_goes_past_the_runs_compare_box_in_chromium(browser, request, tmp_path):
    """Tab from the Runs page's compare box goes on to the band over seeds (with 10 runs its list scrolled, took
    the keyboard into it and closed, and the next Tab came back to the box, never past it); the tabs open from the
    keyboard, and show its focus; inline code reads."""
    from playwright.sync_api import expect

    from workbench.runs import RunStore

    store = RunStore(tmp_path / "runs")
    for seed in range(10):
        store.create("openended", "boids", "pixels", {}, seed).update(status="done")
    with serving(str(store.root), tmp_path / "serve.log") as url, _browse(browser, f"{url}/runs", request) as page:
        page.get_by_label("Search").click()
        seen = []
        for _ in range(6):
            page.keyboard.press("Tab")
            page.wait_for_timeout(200)
            tag, text, _, _ = page.evaluate(FOCUSED)
            seen.append((tag, text))
            if tag == "SELECT":
                break
        assert seen[-1] == ("SELECT", "rangesdci95"), seen  # the band over seeds, after the compare box
        # the tab headers answer the keyboard (Bokeh's took focus, but only a click opened one): an arrow moves
        # the focus to the header beside it, Enter or Space opens the one focused
        active = page.locator(".bk-tab.bk-active")
        assert active.inner_text() == "Gallery"
        page.locator(".bk-tab", has_text="Table").focus()
        page.keyboard.press("Enter")
        expect(active).to_have_text("Table")
        page.keyboard.press("ArrowLeft")
        _, text, outline, width = page.evaluate(FOCUSED)
        assert (text, outline, width) == ("Gallery", "solid", "2px")  # seen (a dotted 1px grey)
        assert active.inner_text() == "Table"  # not opened by the arrow
        page.keyboard.press("ArrowLeft")  # round to the last
        assert page.evaluate(FOCUSED)[1] == "Compare"
        page.keyboard.press("Home")
        page.keyboard.press(" ")
        expect(active).to_have_text("Gallery")
        # inline code (the store's folder in the count) reads on white: the theme's was for its dark code blocks
        colour = page.locator("code", has_text=str(store.root)).first.evaluate("e => getComputedStyle(e).color")
        assert colour == "rgb(31, 79, 130)", colour


def test_home_follows_the_run_store_in_chromium(browser, request, tmp_path):
    """Home's summary and latest cards follow the store (a run started elsewhere appears within FOLLOW_MS): they
    were the page's first look for good. A store folder not made yet is said to be so (a typo in --runs showed
    empty pages, and serve said nothing)."""
    from workbench.runs import RunStore, heartbeat

    store = RunStore(tmp_path / "runs")
    log = tmp_path / "serve.log"
    with serving(str(store.root), log) as url, _browse(browser, f"{url}/", request) as page:
        page.get_by_text("is empty (no such folder yet: the first run makes it): start a search").wait_for(
            timeout=60000)
        assert f"note: --runs {store.root} does not exist yet" in log.read_text()
        # an address that is no page: the browser's 404, not a line in the server's output (Tornado's access log)
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(f"{url}/nosuch", timeout=30)
        assert "nosuch" not in log.read_text()
        run = store.create("openended", "boids", "pixels", {}, 0)
        run.update(status="running", iterations=1, **heartbeat())
        page.get_by_text("holds 1 run: 1 openended (1 running)").wait_for(timeout=30000)
        page.get_by_text("Latest runs").wait_for(timeout=30000)
        # its card, one pane of the grid, follows it to its end
        page.locator(f'.gallery .run[data-run="{run.id}"][data-status="running"]').wait_for(timeout=30000)
        run.update(status="done", iterations=3)
        page.locator(f'.gallery .run[data-run="{run.id}"][data-status="done"]').wait_for(timeout=30000)
        assert "3 it" in page.locator(f'.gallery .run[data-run="{run.id}"] .meta').inner_text()


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
        page.get_by_role("button", name="snapshot PNG + θ").click()
        page.get_by_text("saved").wait_for(timeout=30000)
        # the θ saved, taken by the browser (the file is on the server's disk)
        # two half-width buttons side by side, named by what they hold (the files' names ran over each other)
        png, npy = page.get_by_role("button", name="download PNG"), page.get_by_role("button", name="download θ (.npy)")
        from playwright.sync_api import expect

        # both on show before either is measured: bounding_box waits for its own element only, and the PNG's,
        # shown before the θ's (two widgets' changes, which the page may apply apart), is the row's full width alone
        for button in (png, npy):
            expect(button).to_be_visible(timeout=30000)
        left, right = png.bounding_box(), npy.bounding_box()
        assert left["x"] >= 0 and left["x"] + left["width"] <= right["x"], (left, right)
        for button in (png, npy):
            assert button.evaluate("b => b.scrollWidth <= b.clientWidth + 1")
        with page.expect_download(timeout=60000) as got:
            npy.click()
        assert re.fullmatch(r"lenia-seed0-step3.*\.npy", got.value.suggested_filename), got.value.suggested_filename
        np.testing.assert_array_equal(np.load(got.value.path()), np.zeros(LabModel(substrate="lenia").sub.n_params))
        # the substrate menu (the switch runs on a worker thread, its spinner on the frame)
        shown = page.evaluate(FRAME_SUM)
        page.get_by_label("Substrate").select_option("boids")
        page.get_by_text("Boids: the 193 weights").wait_for(timeout=60000)
        page.wait_for_function(f"() => ({FRAME_SUM})() !== {shown}", timeout=30000)
        page.locator(".pn-loading").first.wait_for(state="detached", timeout=60000)
        page.get_by_text("step 0").wait_for(timeout=30000)
        # Game of Life's new θ flips a rule's bits: its σ slider is off (offered, it changed nothing)
        assert page.locator(".noUi-target[disabled]").count() == 0
        page.get_by_label("Substrate").select_option("gol")
        expect(page.locator(".noUi-target[disabled]")).to_have_count(1, timeout=60000)


def _plenia_box(page, name: str, shown: str):
    """The Lab switched to Particle Lenia, the box of its scalar `name` showing `shown` (its default), once the
    switch's compile is done (fill and Enter go through a veil, and an edit would wait on the compile)."""
    from playwright.sync_api import expect

    _wait_for_model(page, "lab-frame")
    page.get_by_label("Substrate").select_option("plenia")
    box = page.locator(f".scalar-{name} input").first
    expect(box).to_have_value(shown, timeout=90000)
    page.locator(".pn-loading").first.wait_for(state="detached", timeout=30000)
    return box


def test_lab_refuses_a_typed_particle_lenia_value_that_is_not_positive_in_chromium(server, browser, request):
    """A value typed into a Particle Lenia slider's box below zero is refused on the page, and the box shows the
    value in use again (the browser's input bound kept the old value without a word); a positive one is taken.
    Each value is typed once the server has answered the one before: Panel holds a change from the browser 50 ms
    and sends on only the last of those that came meanwhile, so a -2 typed within 50 ms of 0.5 (the test's pace,
    never a person's) left 0.5 unseen and the box showed the 1.0 the Lab still held."""
    from playwright.sync_api import expect

    with _browse(browser, f"{server}/lab", request) as page:
        box = _plenia_box(page, "c_rep", "1.0000")
        refused = page.get_by_text("c_rep must be a positive number")
        box.fill("-1")
        box.press("Enter")
        expect(refused).to_contain_text("got -1.0", timeout=30000)
        expect(box).to_have_value("1.0000", timeout=30000)
        box.fill("0.5")
        box.press("Enter")
        expect(box).to_have_value("0.5000", timeout=30000)  # (the browser's own formatting of what was typed)
        # the server's answer: the edit's first step dismisses the message (the browser's formatting above came
        # at once, before the server had the value)
        expect(refused).to_be_hidden(timeout=30000)
        box.fill("-2")  # refused: the box shows what the Lab holds, 0.5 taken
        box.press("Enter")
        expect(refused).to_contain_text("got -2.0", timeout=30000)
        expect(box).to_have_value("0.5000", timeout=30000)


def test_lab_says_a_typed_value_made_it_diverge_in_chromium(server, browser, request):
    """σ_G typed as 1e-20 (below its slider's 0.015), then steps: the page says the simulation diverged, at which step
    and which value to raise, above its black frame, until a reset."""
    from playwright.sync_api import expect

    with _browse(browser, f"{server}/lab", request) as page:
        box = _plenia_box(page, "sigma_g", "0.1500")
        box.fill("1e-20")
        box.press("Enter")
        notice = page.locator(".lab-diverged")
        page.wait_for_timeout(300)  # Panel holds a browser's change 50 ms: the value reaches the server first
        for n in range(1, 11):  # a step at a time until it diverges (step 1 on this CPU)
            page.get_by_role("button", name="step").click()
            status = page.get_by_text(re.compile(rf"^(paused|stopped) · step {n} ·"))
            expect(status).to_be_visible(timeout=30000)
            if status.inner_text().startswith("stopped"):
                break
        expect(notice).to_contain_text(f"the simulation diverged (NaN or inf) at step {n}: raise σ_G (now 1e-20; "
                                       "its slider starts at 0.015), then reset")
        expect(page.get_by_text(f"stopped · step {n} · diverged (NaN or inf)")).to_be_visible()
        page.get_by_role("button", name="reset", exact=True).click()
        expect(notice).to_be_hidden(timeout=30000)


def test_lab_says_why_a_run_of_another_kind_cannot_be_loaded(server, browser, request):
    ids = SERVED[server]["ids"]
    with _browse(browser, f"{server}/lab", request) as page:
        _wait_for_model(page, "lab-frame")
        box = page.get_by_placeholder("a run in the run store")
        box.fill(ids["openended"][0])
        page.get_by_role("button", name="load best θ").click()
        page.get_by_text("loaded the best θ").wait_for(timeout=60000)
        page.get_by_text("Boids: the 193 weights").wait_for(timeout=30000)  # the editor follows the substrate
        from playwright.sync_api import expect

        expect(page.get_by_label("Substrate")).to_have_value("boids", timeout=30000)  # and so does the menu
        page.locator(".pn-loading").first.wait_for(state="detached", timeout=60000)  # the load's spinners go
        # the address names the run on show (a reload brings it back), and no run once θ is another
        page.wait_for_url(f"{server}/lab?run={ids['openended'][0]}", timeout=30000)
        page.get_by_role("button", name="new θ (σ-mutation)").click()
        page.wait_for_url(f"{server}/lab", timeout=30000)
        box.fill(ids["dare_ties"])
        page.get_by_role("button", name="load best θ").click()
        alert = page.locator(".alert:not(.lab-diverged)")  # the message (a diverged simulation's notice is another)
        alert.get_by_text("is a merge run").wait_for(timeout=60000)
        assert "loaded the best θ" not in alert.inner_text()  # the previous message is gone
        box.fill("no-such-run")
        page.get_by_role("button", name="load best θ").click()
        alert.get_by_text("no run 'no-such-run'").wait_for(timeout=60000)
        # a file's name is no link in the message (Markdown made drv.py one to http://drv.py)
        page.locator('input[type="file"][accept=".npy"]').set_input_files(
            files=[{"name": "drv.py", "mimeType": "text/plain", "buffer": b"x"}])
        alert.get_by_text("cannot use drv.py as θ").wait_for(timeout=60000)
        assert alert.locator("a").count() == 0, alert.inner_html()


def test_lab_spinner_goes_after_every_load(server, browser, request):
    """Quick loads one after another: each click finds the button free. (The spinner used to be switched on
    and off outside Bokeh's document lock; when a write was under way "on" reached the page after "off" and
    stayed: the second click of this loop waited for ever.)"""
    ids = SERVED[server]["ids"]
    with _browse(browser, f"{server}/lab", request) as page:
        _wait_for_model(page, "lab-frame")
        box = page.get_by_placeholder("a run in the run store")
        for rid in [*ids["openended"]] * 4:
            box.fill(rid)
            page.get_by_role("button", name="load best θ").click(timeout=30000)
            page.get_by_text(f"loaded the best θ of {rid}").wait_for(timeout=60000)
        page.locator(".pn-loading").first.wait_for(state="detached", timeout=30000)


def _patch_msgids(page) -> list[int]:
    """The ids of the PATCH-DOC messages the server sends this page from now on, in the order they arrive. Bokeh
    numbers each message from its id counter when it serialises it."""
    ids: list[int] = []

    def on_frame(payload) -> None:
        if isinstance(payload, str) and payload.startswith('{"msgid"') and '"PATCH-DOC"' in payload:
            ids.append(int(json.loads(payload)["msgid"].lstrip("p")))

    page.on("websocket", lambda ws: ws.on("framereceived", on_frame))
    return ids


def test_lab_load_reaches_the_browser_in_the_order_it_was_made(server, browser, request):
    """Bokeh names a model by id once it has sent its definition, so its messages must arrive in the order it
    made them. Panel wrote the spinners' changes (and other widget changes made in Bokeh's locked callbacks)
    itself, later than updates made after them: every load of a run reordered a few messages, and about one
    in 60 broke the page ("reference pNNNN isn't known"). dashboards.shell.ordered_patches."""
    ids = SERVED[server]["ids"]
    with _browse(browser, f"{server}/", request) as page:
        msgids = _patch_msgids(page)
        for rid in ids["openended"][:2]:
            page.goto(f"{server}/lab?run={rid}", wait_until="networkidle")
            page.get_by_text(f"loaded the best θ of {rid}").wait_for(timeout=60000)
            page.locator(".pn-loading").first.wait_for(state="detached", timeout=30000)
        assert len(msgids) > 20
        late = [(a, b) for a, b in itertools.pairwise(msgids) if b < a]
        assert not late, f"PATCH-DOC p{late[0][1]} arrived after p{late[0][0]} ({len(late)} such)"


def test_a_change_the_server_makes_is_not_taken_for_the_browsers(browser):
    """ordered_patches hands Panel's changes made in a locked callback to Bokeh, as Panel's own write does not:
    without the model's Python callbacks, which would take the server's own change for one from the browser
    (Panel then queued an echo of it, which could set a widget back over a newer value)."""
    import panel as pn

    from workbench.dashboards.shell import ordered_patches

    made = {}

    def app():
        ordered_patches()
        made.update(box=pn.widgets.TextInput(value="a", label="box"), doc=pn.state.curdoc)
        return made["box"]

    port = free_port()
    server = pn.serve({"app": app}, port=port, threaded=True, show=False)
    page = browser.new_page()
    try:
        page.goto(f"http://127.0.0.1:{port}/app", wait_until="networkidle")
        box = page.locator("input").first
        box.wait_for(timeout=60000)
        page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0", timeout=60000)
        # until Panel marks the page loaded (a message after the browser's document exists) it leaves changes
        # to Bokeh's own path, model callbacks included: a change made then was heard (once under a loaded suite)
        deadline = time.time() + 60
        while not pn.state._loaded.get(made["doc"]) and time.time() < deadline:
            time.sleep(0.05)
        assert pn.state._loaded.get(made["doc"]), "Panel never marked the page loaded"
        heard = []
        model = next(iter(made["box"]._models.values()))[0]
        model.on_change("value", lambda attr, old, new: heard.append(new))
        made["doc"].add_next_tick_callback(lambda: setattr(made["box"], "value", "b"))  # a locked callback
        deadline = time.time() + 30
        while box.input_value() != "b" and time.time() < deadline:
            time.sleep(0.05)
        assert box.input_value() == "b" and made["box"].value == "b"
        assert heard == []
    finally:
        page.close()
        server.stop()


def test_a_card_without_a_picture_says_so_in_the_middle_of_its_frame(browser):
    """A run with no picture yet (a search before its first frame) says so centred in its card's dark frame, as
    the pictures are (the link around it, a block, put the words at its top left)."""
    from workbench.dashboards.runs import GALLERY_CSS, gallery_html

    card = {"id": "r1", "title": "target · lenia", "subtitle": "", "status": "running", "iterations": 0,
            "steps": "0 it", "best": "–", "thumbnail": "", "links": [("Search", "./search?run=r1")],
            "resume_command": ""}
    page = browser.new_page()
    try:
        page.set_content(f"<style>{GALLERY_CSS}</style>{gallery_html([card], 'runs')}")
        frame, words = page.locator(".thumb").bounding_box(), page.locator(".thumb .none").bounding_box()
        for x, size in (("x", "width"), ("y", "height")):
            assert abs((words[x] + words[size] / 2) - (frame[x] + frame[size] / 2)) < 2, (frame, words)
    finally:
        page.close()


def test_runs_gallery_opens_runs_where_they_fit_and_compares(server, browser, request):
    ids = SERVED[server]["ids"]
    with _browse(browser, f"{server}/runs", request) as page:
        gallery = page.locator(".gallery")
        gallery.wait_for(timeout=60000)
        from workbench.runs import RunStore

        stored = len(RunStore(SERVED[server]["runs"]).list())
        assert gallery.locator(".run").count() == stored == gallery.locator(".run img").count()
        card = gallery.locator(f'.run[data-run="{ids["illuminate"]}"]')
        href = card.get_by_role("link", name="open in Atlas").get_attribute("href")
        assert href == f"./atlas?run={ids['illuminate']}"
        merge = gallery.locator(f'.run[data-run="{ids["dfs"]}"]')
        assert merge.get_by_role("link", name="open in Merge").count() == 1
        # two runs ticked in the table are compared
        page.locator(".bk-tab", has_text="Table").click()
        page.locator(".tabulator-row").first.wait_for(timeout=30000)
        for row in range(2):
            page.locator(".tabulator-row input[type=checkbox]").nth(row).check()
        page.locator(".bk-tab", has_text="Compare").click()
        page.get_by_text(re.compile(r"Comparing \S+ and \S+")).wait_for(timeout=30000)
        page.locator(".bk-Canvas, canvas").first.wait_for(timeout=30000)
        # and a card opens its run in the Lab
        page.locator(".bk-tab", has_text="Gallery").click()
        gallery.locator(f'.run[data-run="{ids["openended"][0]}"]').get_by_role("link", name="open in Lab").click()
        page.wait_for_url(re.compile(r"/lab\?run="), timeout=30000)
        page.get_by_text("loaded the best θ").wait_for(timeout=60000)


def test_runs_page_removes_a_ticked_run_in_chromium(tmp_path, browser, request):
    """In Chromium, on a server of its own: a note typed on the one run ticked and saved shows on its card; a run
    ticked in the Table, "remove", the question, "yes": its folder is gone and its card leaves the gallery; the
    other run stays."""
    from playwright.sync_api import expect

    from workbench.runs import RunStore

    store = RunStore(tmp_path / "runs")
    gone, stays = (store.create("openended", "boids", "pixels", {}, seed) for seed in range(2))
    for run in (gone, stays):
        run.update(status="done", best_loss=0.123456789)
    gone.set_note("a long note on the run, of the kind a researcher writes down to find it again weeks later " * 2)
    # a run of every other kind as its command describes it: the table's widest values (a merge's models, an
    # experts run's "validation accuracy ↑", a long id)
    for kind, substrate, fm, config, metric, name in (
            ("illuminate", "particle_lenia", "clip", {"algorithm": "sep-cma-es"}, "loss",
             "illumination-particle_lenia"),
            ("merge", "dare_ties", "Qwen2.5-1.5B-Instruct-math+Qwen2.5-1.5B-Instruct-code",
             {"method": "dare_ties", "models": ["Qwen2.5-1.5B-Instruct-math", "Qwen2.5-1.5B-Instruct-code"]},
             "fitness", None),
            ("qd", "elite+svd", "brackets+sort+copy",
             {"tasks": ["brackets", "sort", "copy"], "sampling": "elite", "mutation": "svd"}, "qd_score", None),
            ("experts", "gsm8k", "svf", {}, "val_accuracy", None),
            ("adapt", "arc_easy", "gsm8k+mbpp+arc_easy", {}, "accuracy", None),
            ("namm", "brackets+sort", "Qwen2.5-0.5B-Instruct", {}, "fitness", None)):
        store.create(kind, substrate, fm, config, 3, metric=metric, name=name).update(
            status="done", best_loss=-0.6875 if metric != "loss" else 0.5, iterations=1000)
    with serving(str(store.root), tmp_path / "serve.log") as url, _browse(browser, f"{url}/runs", request) as page:
        page.locator(f'.gallery .run[data-run="{gone.id}"]').wait_for(timeout=60000)
        page.locator(".bk-tab", has_text="Table").click()
        page.locator(".tabulator-row").first.wait_for(timeout=30000)
        # every column in a laptop's 1366 px window, and through the note in a 1280 px one (the table was 1,545 px
        # wide in a 969 px main area: the columns after "best" were off to the right)
        holder = page.locator(".tabulator-tableholder")
        fits = "e => e.scrollWidth <= e.clientWidth + 1"
        page.set_viewport_size({"width": 1366, "height": 800})
        deadline = time.monotonic() + 10  # the table lays itself out again after the resize
        while not holder.evaluate(fits) and time.monotonic() < deadline:
            page.wait_for_timeout(100)
        assert holder.evaluate(fits), holder.evaluate("e => [e.scrollWidth, e.clientWidth]")
        wide = holder.evaluate("e => e.clientWidth")
        page.set_viewport_size({"width": 1280, "height": 800})
        deadline = time.monotonic() + 10
        while holder.evaluate("e => e.clientWidth") >= wide and time.monotonic() < deadline:
            page.wait_for_timeout(100)
        note_head, room = page.locator('.tabulator-col[tabulator-field="note"]').bounding_box(), holder.bounding_box()
        assert note_head["x"] + note_head["width"] <= room["x"] + room["width"] + 1, (note_head, room)
        # a long note wraps in a column of its own width, all of it shown (its column was as wide as the note)
        from workbench.dashboards.runs import NOTE_WIDTH

        note = page.locator(".tabulator-row", has_text=gone.id).locator('.tabulator-cell[tabulator-field="note"]')
        box = note.bounding_box()
        assert box["width"] <= NOTE_WIDTH + 1 and box["height"] > 3 * 20, box
        assert note.evaluate("e => e.scrollHeight <= e.clientHeight + 1"), "the note is cut off"
        # the best to four decimals (six before), as near the cards' four digits as a column allows
        best = page.locator(".tabulator-row", has_text=stays.id).locator('.tabulator-cell[tabulator-field="best"]')
        assert best.inner_text().strip() == "0.1235"
        # scrolled to the note and the time created, the id stays at the left
        holder.evaluate("e => e.scrollLeft = e.scrollWidth")
        page.wait_for_timeout(300)
        cell = page.locator(".tabulator-row", has_text=stays.id).locator('.tabulator-cell[tabulator-field="id"]')
        assert "tabulator-frozen" in cell.get_attribute("class")
        assert cell.bounding_box()["x"] < holder.bounding_box()["x"] + 60 and cell.is_visible()
        # the id wrapped at its hyphens in a column of its own width (on one line it took a third of a laptop's
        # table), and whole as text: what a copy of it gives
        from workbench.dashboards.runs import ID_WIDTH

        assert cell.bounding_box()["width"] <= ID_WIDTH + 1 and cell.inner_text().strip() == stays.id
        assert cell.evaluate("e => e.scrollWidth <= e.clientWidth + 1"), "the id is cut off"
        # a task list breaks after its "+" signs, not inside a task (it broke inside "arc_easy")
        what = page.locator(".tabulator-cell", has_text="gsm8k+mbpp+arc_easy")
        # the last "arc_easy", the task list's (the first is the run's substrate, a word of its own)
        lines = what.evaluate("""e => { const w = document.createTreeWalker(e, NodeFilter.SHOW_TEXT); let n, at = null;
            while ((n = w.nextNode())) { const i = n.data.lastIndexOf("arc_easy"); if (i >= 0) at = [n, i]; }
            if (at === null) return -1;
            const r = document.createRange(); r.setStart(at[0], at[1]); r.setEnd(at[0], at[1] + 8);
            return r.getClientRects().length; }""")
        assert lines == 1, lines
        for cell in page.locator('.tabulator-cell[tabulator-field="what"]').all():  # and none is cut off
            assert cell.evaluate("e => e.scrollWidth <= e.clientWidth + 1"), cell.inner_text()
        holder.evaluate("e => e.scrollLeft = 0")
        # a note on the one run ticked, typed and saved without leaving the field
        kept = page.locator(".tabulator-row", has_text=stays.id).locator("input[type=checkbox]")
        kept.check()
        field = page.get_by_label("Note on the ticked run")
        expect(field).to_be_enabled(timeout=30000)
        field.fill("kept for figure 2")
        field.press("Tab")
        page.get_by_text(f"note saved on {stays.id}").wait_for(timeout=30000)
        kept.uncheck()
        page.locator(".tabulator-row", has_text=gone.id).locator("input[type=checkbox]").check()
        page.get_by_role("button", name="remove the ticked runs…").click()
        page.get_by_text(re.compile(r"Remove 1 run for good")).wait_for(timeout=30000)
        page.get_by_role("button", name="yes, remove them for good").click()
        page.get_by_text(f"removed 1 run: {gone.id}").wait_for(timeout=30000)
        page.locator(".bk-tab", has_text="Gallery").click()
        page.locator(f'.gallery .run[data-run="{stays.id}"]').wait_for(timeout=30000)
        # the gallery is drawn again after the removal is said: waited for
        expect(page.locator(f'.gallery .run[data-run="{gone.id}"]')).to_have_count(0, timeout=30000)
        assert page.locator(f'.gallery .run[data-run="{stays.id}"] .note').inner_text() == "kept for figure 2"
    assert not gone.path.exists() and stays.path.is_dir() and stays.note == "kept for figure 2"
    assert "Traceback" not in (tmp_path / "serve.log").read_text()


# The search page's loss curve: the id and length of its data source (the one with an "iteration" column).
CURVE_SOURCE = """() => {
    for (const doc of Bokeh.documents)
        for (const m of doc.all_models)
            if (m.data != null && m.data.iteration !== undefined) return [m.id, m.data.iteration.length];
    return [null, -1];
}"""
CURVE_POINTS = f"() => ({CURVE_SOURCE})()[1]"


def _fill(page, label: str, value: str) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(value)
    box.press("Enter")


def test_search_page_runs_a_search_in_chromium(server, browser, request):
    with _browse(browser, f"{server}/search", request) as page:
        page.get_by_text("status: idle").wait_for(timeout=60000)
        # a number the settings refuse is put back in its field and said: the field kept showing 0 while a
        # search started with the old value
        _fill(page, "Iters", "0")
        page.get_by_text("Iters takes a whole number of at least 1 (got 0; kept 20)").wait_for(timeout=30000)
        from playwright.sync_api import expect

        expect(page.get_by_label("Iters", exact=True)).to_have_value("20", timeout=30000)
        # an illumination embeds the final state only: no Frames field while it is chosen
        page.get_by_role("button", name="illuminate", exact=True).click()
        expect(page.get_by_label("Frames", exact=True)).to_be_hidden(timeout=30000)
        page.get_by_role("button", name="openended", exact=True).click()
        expect(page.get_by_label("Frames", exact=True)).to_be_visible(timeout=30000)
        for label, value in (("Iters", "2"), ("Steps", "10"), ("Frames", "2"), ("Pop", "4")):
            _fill(page, label, value)
        page.get_by_text("0 / 2 iterations").wait_for(timeout=30000)  # the budget the start will run
        page.get_by_role("button", name="start", exact=True).click()
        page.get_by_text("status: done").wait_for(timeout=120000)
        page.get_by_text("2 / 2 iterations").wait_for(timeout=30000)
        assert page.get_by_text("algorithm sep-CMA-ES").count() == 1  # not the illumination selector's "ga"
        page.locator(".bk-Canvas, canvas").first.wait_for(timeout=30000)  # the loss curve replaced its placeholder
        page.wait_for_function(f"() => ({CURVE_POINTS})() === 2", timeout=30000)
        source = page.evaluate(CURVE_SOURCE)[0]
        # export for a paper: the finished run's best simulation as a strip of frames, in its figures folder, at
        # a two-column page's width (300 dpi)
        page.get_by_label("Figure", exact=True).select_option(label="frames of the best simulation")
        # a width out of range is said with the number typed (the browser's bounds sent 0 for 100 and for 0.5)
        _fill(page, "Width (in)", "100")
        page.get_by_role("button", name="export").click()
        page.get_by_text(re.compile(r"cannot export:.* from 1 to \d+.*got 100")).wait_for(timeout=60000)
        _fill(page, "Width (in)", "6.75")
        page.get_by_role("button", name="export").click()
        written = page.get_by_text(re.compile(r"written .*-openended-boids-s0-frames\.png"))
        written.wait_for(timeout=60000)
        path = Path(re.search(r"written (\S+\.png)", written.inner_text()).group(1))
        strip = Image.open(path)
        assert 0.9 * 6.75 * 300 < strip.width <= 6.75 * 300, strip.size
        # the file is on the server's disk; the browser takes it with the button that appears
        button = page.get_by_role("button", name=f"download {path.name}")
        # the file's name wraps within the button (it ran 21 px past its edge, longer names further)
        assert button.evaluate("b => b.scrollWidth <= b.clientWidth + 1"), button.evaluate("b => b.scrollWidth")
        with page.expect_download(timeout=60000) as got:
            button.click()
        assert got.value.suggested_filename == path.name and Path(got.value.path()).read_bytes() == path.read_bytes()
        # a strip of frames has no legend to rename: said in the field's words, nothing written
        renames = page.get_by_label("Rename legend entries", exact=True)
        renames.fill("best → ours")
        renames.press("Tab")
        page.get_by_role("button", name="export").click()
        page.get_by_text("Rename legend entries: the figure has no legend entries").wait_for(timeout=60000)
        # hidden in a message after the status line's: waited for
        expect(page.get_by_role("button", name=re.compile("^download "))).to_be_hidden(timeout=30000)
        # a long one, stopped from the page: the curve is fed, not redrawn, so the page answers while it runs
        _fill(page, "Iters", "500")
        page.get_by_role("button", name="start", exact=True).click()
        page.get_by_text("status: running").wait_for(timeout=60000)
        page.get_by_text("the best frame appears when the run ends").wait_for(timeout=30000)  # the last run's went
        page.wait_for_function(f"() => ({CURVE_POINTS})() >= 3", timeout=60000)  # points added as it runs
        # the address names the run; a second tab, opened from the menu (no run in its address), shows the search
        # this server runs, live, names it in its address, and stops it
        page.wait_for_url(re.compile(r"/search\?run=.+-openended-boids-"), timeout=30000)
        context, second, errors = _open(browser, f"{server}/search")
        try:
            second.get_by_text(re.compile(r"status: running · run")).wait_for(timeout=60000)
            second.wait_for_url(re.compile(r"/search\?run=.+-openended-boids-"), timeout=30000)
            second.get_by_role("button", name="stop").click()
            second.get_by_text("status: stopped").wait_for(timeout=120000)
            assert not errors, errors
        finally:
            _finish(context, second, request.node.name + "-second-tab", bool(errors))
        page.get_by_text("status: stopped").wait_for(timeout=60000)
        done = page.get_by_text(re.compile(r"\d+ / 500 iterations"))
        done.wait_for(timeout=30000)
        iterations = int(done.inner_text().split(" / ")[0])
        page.wait_for_function(f"() => ({CURVE_POINTS})() === {iterations}", timeout=30000)  # one per iteration
        assert page.evaluate(CURVE_SOURCE)[0] == source  # the same curve throughout, fed (not a figure per update)
        # a reload reads the stopped run from the store: its progress, its curve, resume on offer
        page.reload(wait_until="networkidle")
        page.get_by_text("status: stopped").wait_for(timeout=60000)
        page.get_by_text(f"{iterations} / 500 iterations").wait_for(timeout=30000)
        page.wait_for_function(f"() => ({CURVE_POINTS})() === {iterations}", timeout=30000)
        assert page.get_by_role("button", name="resume").is_enabled()
        assert page.get_by_label("Iters", exact=True).input_value() == "500"  # the run's settings


def test_a_finished_search_reached_from_another_page_in_the_same_tab_draws_in_chromium(server, browser):
    """A finished search's page reached from another page of the server in the same tab draws its curve, best frame
    and population. Its scripts cached, the browser pulls the document before it has drawn it, and the views, fed
    once in that gap (before the browser's document_ready), had their changes dropped by Panel: placeholders for
    good, about one opening in two (eight here). No request routing here (_browse's): routing turns the browser's
    cache off, and the gap with it."""
    from workbench.dashboards.search import SearchViews

    run = SERVED[server]["ids"]["openended"][0]
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        page = context.new_page()
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{server}/runs", wait_until="networkidle")
        for _ in range(8):  # it kept its placeholders about one opening in two
            page.goto(f"{server}/search?run={run}", wait_until="networkidle")
            page.get_by_text("status: done").wait_for(timeout=60000)
            page.wait_for_function(f"() => ({CURVE_POINTS})() === 2", timeout=15000)
            for hint in (SearchViews.CURVE_HINT, SearchViews.BEST_HINT, SearchViews.POPULATION_HINT):
                page.get_by_text(hint).wait_for(state="hidden", timeout=15000)
            page.goto(f"{server}/runs", wait_until="networkidle")
        assert not errors, errors
    finally:
        context.close()


def test_search_page_says_a_runs_diverged_candidates_in_chromium(server, browser, request, tmp_path):
    """The served page's status line says how many of the run's candidates diverged, beside its status, id and
    algorithm (the page said nothing of them). The run is made in the served store for this test and removed after
    it (the gallery's tests count the store's runs)."""
    from workbench.runs import RunStore

    runs = Path(SERVED[server]["runs"])
    run_id = _diverging(runs, tmp_path / "black.png")
    try:
        total = sum(RunStore(runs).open(run_id).read_table("metrics").column("diverged").to_pylist())
        assert total > 1
        with _browse(browser, f"{server}/search?run={run_id}", request) as page:
            said = (f"status: done · run {run_id} · algorithm sep-CMA-ES · {total} candidates diverged (NaN or inf in "
                    "a simulation): ranked last")
            page.get_by_text(said).wait_for(timeout=60000)
    finally:
        shutil.rmtree(runs / run_id)


CELL_PLACES = """() => {  // where the atlas' cells put the population members (their x, y in member order)
  const fig = Bokeh.documents[0].get_model_by_name('atlas');
  for (const r of fig.renderers)
    if (r.data_source.columns().includes('theta_norm'))
      return Array.from(r.data_source.data.x).join(',') + ';' + Array.from(r.data_source.data.y).join(',');
  return null;
}"""


CELL_PICKED = """() => {  // the population members whose cells are outlined (Bokeh's selection)
  const fig = Bokeh.documents[0].get_model_by_name('atlas');
  for (const r of fig.renderers)
    if (r.data_source.columns().includes('theta_norm')) return Array.from(r.data_source.selected.indices);
  return null;
}"""


def test_atlas_page_plays_a_cell_and_exports_in_chromium(server, browser, request):
    with _browse(browser, f"{server}/atlas?run={SERVED[server]['ids']['illuminate']}", request) as page:
        _wait_for_model(page, "atlas")
        page.set_viewport_size({"width": 1280, "height": 800})
        canvas = page.locator(".bk-Canvas").first  # the atlas plot (the player's frame comes second)
        canvas.wait_for(timeout=30000)
        box = canvas.bounding_box()
        # the player beside the atlas in a 1280 px window, in sight (it wrapped below, a click seemed to do nothing)
        player = page.locator(".bk-Canvas").nth(1).bounding_box()
        assert player["x"] >= box["x"] + box["width"] and player["y"] < 400, (box, player)
        page.mouse.click(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.4)
        page.get_by_text("playing population member").wait_for(timeout=30000)
        for _ in range(2):  # and it plays: frame after frame (the player ticks from the click on, not before it)
            shown = page.evaluate(FRAME_SUM)
            page.wait_for_function(f"() => ({FRAME_SUM})() !== {shown}", timeout=30000)
        href = page.get_by_role("link", name="open it in the Lab").get_attribute("href")
        member = int(re.fullmatch(r"\./lab\?run=[^&]+&member=(\d+)", href).group(1))  # the Lab opens that member
        assert page.evaluate(CELL_PICKED) == [member]
        from playwright.sync_api import expect

        # the keyboard's way (the cells answered the mouse only): the Member field, a Tab after the projection
        # (PCA: the seed is off), says the member clicked; one typed there plays, its cell outlined
        field = page.get_by_label("Member to play", exact=True)
        expect(field).to_have_value(str(member), timeout=30000)
        page.get_by_role("button", name="UMAP").focus()
        page.keyboard.press("Tab")
        expect(field).to_be_focused()
        member = (member + 5) % 16
        page.keyboard.press("Control+A")
        page.keyboard.type(str(member))
        page.keyboard.press("Enter")
        page.get_by_text(re.compile(rf"playing population member {member} of")).wait_for(timeout=30000)
        page.wait_for_function(f"() => ({CELL_PICKED})().join() === '{member}'", timeout=30000)
        pca = page.evaluate(CELL_PLACES)

        expect(page.get_by_label("Seed", exact=True)).to_be_disabled()  # PCA draws nothing: no seed to give
        page.get_by_role("button", name="UMAP").click()  # compiles, unless an earlier process on this machine did
        page.wait_for_function(f"() => ({CELL_PLACES})() !== {pca!r}", timeout=300000)  # the members moved
        assert page.evaluate(CELL_PICKED) == [member]  # still played, its cell outlined where it lies now
        umap = page.evaluate(CELL_PLACES)
        expect(page.get_by_label("Seed", exact=True)).to_be_enabled()
        page.get_by_role("button", name="t-SNE").click()
        page.wait_for_function(f"() => ({CELL_PLACES})() !== {umap!r}", timeout=300000)  # laid out: exported as such
        expect(page.get_by_label("Seed", exact=True)).to_be_disabled()  # t-SNE starts from PCA: the same any seed
        page.get_by_role("button", name="export PNG").click()
        page.get_by_text(re.compile(r"saved \S+atlas-tsne\.png")).wait_for(timeout=30000)
        page.get_by_role("button", name="export PNG").click()  # a second export keeps the first
        page.get_by_text(re.compile(r"saved \S+atlas-tsne-2\.png")).wait_for(timeout=30000)
        with page.expect_download(timeout=60000) as got:
            page.get_by_role("button", name="download atlas-tsne-2.png").click()
        assert Image.open(got.value.path()).size[0] > 0
        # a refused seed is said in the page's words (param's named 'AtlasModel.seed'), put back, and the message
        # goes with the next layout taken (it stayed up)
        tsne = page.evaluate(CELL_PLACES)
        page.get_by_role("button", name="UMAP").click()
        page.wait_for_function(f"() => ({CELL_PLACES})() !== {tsne!r}", timeout=300000)
        expect(page.get_by_label("Seed", exact=True)).to_be_enabled()
        _fill(page, "Seed", "-3")
        refusal = page.get_by_text("Seed must be a whole number from 0 to 4294967295, got -3; the atlas keeps seed 0")
        refusal.wait_for(timeout=30000)
        expect(page.get_by_label("Seed", exact=True)).to_have_value("0", timeout=30000)
        _fill(page, "Seed", "1")
        expect(refusal).to_have_count(0, timeout=120000)
        page.goto(f"{server}/atlas")  # a bare address gets the id of the run on show, once the browser has the page
        page.wait_for_url(re.compile(r"/atlas\?run=\d{8}-\d{6}-illuminate-[\w.+-]+$"), timeout=30000)


def test_the_atlas_player_switches_to_another_runs_substrate_off_the_event_loop(runs, browser, request, tmp_path):
    """Atlas: a cell of a run of another substrate than the player's (Lenia's atlas open, then a Boids run picked)
    switches the player on a worker thread, as the Lab's menu does (on the event loop its compile held every
    session), and plays the member clicked; the run switch stopped the member played before."""
    from workbench.asal.driver import SearchConfig, run_search
    from workbench.asal.evaluate import EvalConfig
    from workbench.runs import RunStore

    store = RunStore(tmp_path / "runs")
    shutil.copytree(Path(runs["dir"]) / runs["illuminate"], store.root / runs["illuminate"])
    cfg = SearchConfig(kind="illuminate", eval=EvalConfig("lenia", "pixels", steps=8, frames=2), iters=1, pop=4,
                       population=4)
    lenia = run_search(cfg, store).id
    with serving(str(store.root), tmp_path / "serve.log") as url, \
            _browse(browser, f"{url}/atlas?run={lenia}", request) as page:
        _wait_for_model(page, "atlas")
        # the address follows a run picked with nothing playing (it waited for the browser's next event: a reload
        # or a bookmark meanwhile opened the run before)
        page.get_by_label("Run", exact=True).select_option(runs["illuminate"])
        page.wait_for_url(f"{url}/atlas?run={runs['illuminate']}", timeout=20000)
        page.get_by_label("Run", exact=True).select_option(lenia)
        page.wait_for_url(f"{url}/atlas?run={lenia}", timeout=20000)
        canvas = page.locator(".bk-Canvas").first
        box = canvas.bounding_box()
        # the layout's spinner goes through the next-tick queue after the address changed: its veil takes clicks
        page.locator(".pn-loading").first.wait_for(state="detached", timeout=30000)
        page.mouse.click(box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.25)
        page.get_by_text(f"of {lenia}").wait_for(timeout=60000)
        page.get_by_label("Run", exact=True).select_option(runs["illuminate"])
        page.get_by_text("Click a cell of the atlas to play its simulation here.").wait_for(timeout=60000)
        page.wait_for_url(f"{url}/atlas?run={runs['illuminate']}", timeout=30000)  # a reload comes back to it
        # the player is blank beside the new run's atlas (the last run's member stayed in it)
        page.wait_for_function("() => { const img = Bokeh.documents[0].get_model_by_name('lab-frame')"
                               ".renderers[0].data_source.data.image[0]; return img.every(v => v === img[0]); }",
                               timeout=30000)
        # the click once the browser draws the new run's 16 cells, as a user clicks what they see (a click on the
        # Lenia run's four, under a loaded fresh clone's run, was lost once)
        page.wait_for_function(f"() => {{ const p = ({CELL_PLACES})(); "
                               "return p !== null && p.split(';')[0].split(',').length === 16; }", timeout=60000)
        # and once its veil is off: the cells come before the spinner goes (a click on the veil was lost in CI)
        page.locator(".pn-loading").first.wait_for(state="detached", timeout=30000)
        page.mouse.click(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.4)
        page.get_by_text(f"of {runs['illuminate']}").wait_for(timeout=60000)
    assert "Traceback" not in (tmp_path / "serve.log").read_text()


def test_a_slow_layout_leaves_other_sessions_live(runs, browser, request, tmp_path):
    """UMAP's first layout on a machine takes tens of seconds (numba compiles its kernels, then keeps them in its
    cache): it runs on a worker thread, so a Lab in another tab steps meanwhile. A server of its own, with an empty
    NUMBA_CACHE_DIR, makes that first layout; it is stopped without waiting for the compile to end (killed: a
    SIGTERM stops it as a Ctrl-C does, after the layout)."""
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    with serving(runs["dir"], tmp_path / "serve.log", env, kill=True) as url, \
            _browse(browser, f"{url}/atlas", request) as atlas, _browse(browser, f"{url}/lab", request) as lab:
        _wait_for_model(atlas, "atlas")
        _wait_for_model(lab, "lab-frame")
        atlas.get_by_role("button", name="UMAP").click()
        atlas.locator(".pn-loading").first.wait_for(timeout=10000)  # the layout is under way
        start = time.perf_counter()
        before = lab.evaluate(FRAME_SUM)
        lab.get_by_role("button", name="step").click()
        lab.wait_for_function(f"() => ({FRAME_SUM})() !== {before}", timeout=5000)
        stepped = time.perf_counter() - start
        assert atlas.locator(".pn-loading").count() > 0, \
            f"the layout finished before the step ({stepped:.1f} s): nothing was shown"


def test_merge_page_opens_a_tab_the_run_has_and_exports_it(server, browser, request):
    """Each run's own tabs and exports; the address follows the run on show and an export's line leaves with its
    run; a run removed after the menu was made is refused and the run on show stays, its tabs working (the page
    was left naming the removed run: every tab click a traceback in the server's log, which the module's last test
    reads)."""
    ids = SERVED[server]["ids"]
    gone = f"{ids['dfs']}-gone"
    shutil.copytree(Path(SERVED[server]["runs"]) / ids["dfs"], Path(SERVED[server]["runs"]) / gone)
    with _browse(browser, f"{server}/merge?run={ids['dfs']}", request) as page:
        page.get_by_text(re.compile(r"method\s+dfs")).wait_for(timeout=60000)
        tabs = page.locator(".bk-tab").all_inner_texts()
        assert "Recipe" not in tabs and tabs[0] == "DFS path", tabs
        page.locator(".bk-Canvas, canvas").first.wait_for(timeout=30000)  # the path plot drew
        page.get_by_role("button", name="export").click()
        page.get_by_text("written").wait_for(timeout=60000)
        assert (Path(SERVED[server]["runs"]) / ids["dfs"] / "figures" / f"{ids['dfs']}-dfs-path.png").is_file()
        page.locator("select").first.select_option(ids["dare_ties"])
        page.get_by_text(re.compile(r"method\s+dare_ties")).wait_for(timeout=60000)
        page.wait_for_url(f"{server}/merge?run={ids['dare_ties']}", timeout=30000)
        assert page.get_by_text(re.compile(r"written .*dfs-path")).count() == 0  # the last run's export left
        page.locator(".bk-tab", has_text="Recipe").wait_for(timeout=30000)
        page.locator(".bk-tab", has_text="Fitness").click()
        page.get_by_text("Export writes the tab on show: Fitness").wait_for(timeout=30000)
        page.get_by_role("button", name="export").click()
        page.get_by_text(re.compile(rf"written \S+{ids['dare_ties']}-fitness\.png")).wait_for(timeout=60000)
        shutil.rmtree(Path(SERVED[server]["runs"]) / gone)
        page.locator("select").first.select_option(gone)
        page.locator(".alert").get_by_text(f"no run '{gone}'").wait_for(timeout=60000)
        for _ in range(50):
            if page.locator("select").first.evaluate("s => s.value") == ids["dare_ties"]:
                break
            time.sleep(0.2)
        assert page.locator("select").first.evaluate("s => s.value") == ids["dare_ties"]
        page.locator(".bk-tab", has_text="Recipe").click()  # the run on show's tabs still work
        page.get_by_text("Export writes the tab on show: Recipe").wait_for(timeout=30000)
        # a prefix of a run's id in the address opens it and is written whole (the write at build was lost: the
        # browser's first report of its address took it out)
        page.goto(f"{server}/merge?run={ids['dare_ties'][:-1]}")
        page.wait_for_url(f"{server}/merge?run={ids['dare_ties']}", timeout=30000)
    assert "merge.py" not in SERVED[server]["log"].read_text()  # no traceback through the page's callbacks
    with _browse(browser, f"{server}/merge?run={ids['illuminate']}", request) as page:
        page.locator(".alert").get_by_text("is an illuminate run").wait_for(timeout=60000)


def test_tab_headers_that_do_not_fit_wrap_in_chromium(browser, tmp_path):
    """WRAPPED_TABS: ten tab headers in a 1000 px window wrap onto a second row, every one of them in the window
    (Bokeh's header cut the last ones off: the Experts page's Mixer could not be reached at 1400 px). Served by a
    `panel serve` of its own (a server in this process left an event loop behind that later tests tripped on)."""
    app = tmp_path / "tabs.py"
    app.write_text("import panel as pn\n"
                   "from workbench.dashboards.shell import WRAPPED_TABS\n"
                   "pn.extension(inline=True)\n"
                   "pn.Tabs(*[(f'a long tab label {i}', pn.pane.Markdown(f'tab {i}')) for i in range(10)],\n"
                   "        sizing_mode='stretch_width', stylesheets=[WRAPPED_TABS]).servable()\n")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "panel", "serve", str(app), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert first_answer(f"http://127.0.0.1:{port}/tabs", 120, proc) is not None, "panel serve did not start"
        page = browser.new_page(viewport={"width": 1000, "height": 600})
        page.goto(f"http://127.0.0.1:{port}/tabs")
        last = page.locator(".bk-tab", has_text="label 9")
        last.wait_for(timeout=30000)
        box = last.bounding_box()
        assert box["x"] + box["width"] <= 1000 and box["y"] > 10, box  # on a second row, in the window
        page.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_concurrent_lab_sessions_play_without_errors(server, browser):
    """The load test in small (2 sessions, 3 s, on the module's server): every session receives frames and nothing
    errs. Frame rates are benchmarks (`workbench bench dashboards`, which starts a server), not asserted here."""
    from workbench.bench import bench_dashboards

    result = bench_dashboards(sessions=2, seconds=3, browser=browser, url=server)
    assert result["errors"] == []
    assert all(f > 0 for f in result["fps_per_session"])


def test_tabs_closed_mid_work_leave_no_tracebacks(server, browser):
    """Close tabs while the server works for them (a playing Lab loading a run, a search, a t-SNE layout):
    the server log stays free of tracebacks (runs last in the module: the log covers every test above)."""
    ids = SERVED[server]["ids"]
    context = browser.new_context()
    for path, act in (
            ("lab", lambda p: (p.get_by_role("button", name="▶ play / pause").click(),
                               p.get_by_placeholder("a run in the run store").fill(ids["illuminate"]),
                               p.get_by_role("button", name="load best θ").click(),
                               p.get_by_role("button", name="step").click())),
            ("search", lambda p: (_fill(p, "Iters", "3"),  # a short search: it runs on after its tab closes
                                  p.get_by_role("button", name="start", exact=True).click(),
                                  # running, or already done where a machine is fast: the page polls every 300 ms
                                  p.get_by_text(re.compile(r"status: (running|done)")).wait_for(timeout=60000))),
            ("atlas", lambda p: (p.get_by_role("button", name="t-SNE").click(),
                                 p.get_by_role("button", name="PCA").click()))):
        for _ in range(2):
            page = context.new_page()
            page.goto(f"{server}/{path}", wait_until="load")
            page.wait_for_function(DOCUMENT_READY, timeout=60000)  # drawn, its session open
            act(page)
            page.close()
    context.close()
    time.sleep(3)
    log = SERVED[server]["log"].read_text()
    assert "Traceback" not in log and "AssertionError" not in log, log[-4000:]


def test_a_page_runs_alone_with_panel_serve(tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "panel", "serve", "dashboards/lab.py", "--port", str(port)],
                            cwd=Path(__file__).resolve().parents[1], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        html = first_answer(f"http://127.0.0.1:{port}/lab", 120, proc)
        if html is None:
            pytest.fail("panel serve dashboards/lab.py did not answer")
        assert "bokeh" in html.lower() and not re.search(r"cdn\.(?:bokeh|holoviz)\.org|fonts\.googleapis", html)
        assert "workbench" in html and "./search" not in html  # the shell, without links to pages not served
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_an_html_figure_is_the_same_file_each_time_and_draws_offline(browser, tmp_path):
    """Bokeh numbers its models by a counter of the process and its document by random UUIDs: the same figure made
    another file at each export (a paper's website saw a change at every build). Renumbered, the page still draws
    its plot in Chromium from the file alone, without a request or an error: also after a Tabulator was made in
    the process (a page's table, a notebook's), whose stylesheet Bokeh linked into every export by Panel's CDN."""
    import pandas as pd
    import panel as pn

    from workbench.figures import holoviews, save

    pn.widgets.Tabulator(pd.DataFrame({"a": [1]})).get_root()
    hv = holoviews()
    curves = hv.Curve([(0, 1.0), (1, 0.5), (2, 0.25)], "iteration", "best loss", label="ours") * \
        hv.Curve([(0, 1.0), (1, 0.8), (2, 0.7)], "iteration", "best loss", label="baseline")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = save(curves, tmp_path / "a" / "c.html")
    save(hv.Curve([(0, 2.0)]), tmp_path / "b" / "other.html")  # the counter moves on between the two
    second = save(curves, tmp_path / "b" / "c.html")
    assert first.read_bytes() == second.read_bytes()
    page = browser.new_page()
    errors, requests = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url) if not r.url.startswith(("file:", "data:", "blob:")) else None)
    try:
        page.goto(second.as_uri(), wait_until="load")
        page.locator("canvas").first.wait_for(timeout=30000)
        legend = page.evaluate("() => Array.from(Bokeh.documents[0].all_models)"
                               ".filter(m => m.label !== undefined && m.renderers !== undefined)"
                               ".map(m => m.label.value)")
        assert legend == ["ours", "baseline"] and not errors and not requests, (legend, errors, requests)
    finally:
        page.close()


XSS = '<img src=x onerror="window.__xss=(window.__xss||0)+1;alert(1)">'


def test_page_messages_and_run_menus_show_html_as_text():
    """A run folder named, a note or a config value written by someone else (a colleague's shared run, a downloaded
    one) is text on the pages: a message naming it keeps its HTML as text (an "<" outside `code` as an entity,
    Markdown kept, text escaped already left as it is), and a MultiChoice of run ids sends the browser each id
    escaped (Bokeh's menu draws an option's HTML) and takes the escaped id back as the id."""
    import panel as pn

    from workbench.dashboards.shell import TextMultiChoice, as_text, run_alert

    assert as_text(f"no run {XSS!r} in `a<b` (**see**) `ok`") == \
        f"no run {XSS.replace('<', '&lt;')!r} in <code>a&lt;b</code> (**see**) `ok`"
    assert as_text("TypeError: &lt;x&gt;") == "TypeError: &lt;x&gt;" and as_text("") == ""
    # the Experts header's model, its whole path on hover (experts.model_text), stays a tag; no other tag does
    from workbench.dashboards.experts import model_text

    hover = model_text("/a/b/zoo/base")
    assert hover.startswith("<code title=") and as_text(f"**r** · on {hover} · done") == f"**r** · on {hover} · done"
    for tricky in ['<code title="x" onmouseover="alert(1)">y</code>', '<code title="x">y<img src=x></code>',
                   model_text(f"/a/b/{XSS}/m")]:
        assert "<img" not in html.unescape(pn.pane.Markdown(as_text(tricky)).get_root().text), tricky
    for tricky in ['<code title="x" onmouseover="alert(1)">y</code>', '<code title="x">y<img src=x></code>']:
        assert "<code" not in as_text(tricky), tricky  # another attribute, a tag inside: text
    # backticks Markdown takes for no code span (a longer closing run, an escaped opening one, one a link's
    # destination or title swallows, a single one pairing past a run of two) leave no HTML through
    for tricky in ["`<img src=x onerror=alert(1)>``", "\\`<img src=x onerror=alert(1)>`", "a`b` <img src=x> `c",
                   "[a](`x) <img src=x onerror=alert(1)>`", '[a](u "`") <img src=x onerror=alert(1)>`',
                   "no run '`a``b`<img src=x onerror=alert(1)>`c'"]:
        assert "<img" not in html.unescape(pn.pane.Markdown(as_text(tricky)).get_root().text), tricky

    class Refusing:
        def choose(self, run_id):
            raise ValueError(f"no run {run_id!r} (latest runs: evil{XSS})")

    alert = run_alert(Refusing(), XSS)
    assert alert.visible and "<img" not in alert.object and "&lt;img" in alert.object
    shown = html.unescape(pn.pane.Markdown(alert.object).get_root().text)  # the HTML the browser puts in the page
    assert "<img" not in shown and "&lt;img" in shown

    ids = ["20261206-000000-openended-boids-s0", f"evil{XSS}"]
    menu = TextMultiChoice(options=ids, value=[ids[1]])
    root = menu.get_root()
    assert root.options == [ids[0], f"evil{XSS}".replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")]
    assert root.value == [root.options[1]]
    menu._process_events({"value": [root.options[0], root.options[1]]})
    assert menu.value == ids


def test_a_run_folder_named_with_html_runs_no_script_on_the_pages_in_chromium(browser, request, tmp_path):
    """A run folder whose name holds HTML (copied in from elsewhere) is shown as text wherever a page names it:
    the Runs page's compare menu drew it as HTML and ran its script as the page opened, and the Lab, Atlas, QD,
    Experts and Search pages' messages ran it (the run loaded, or "latest runs: …" when another was asked for). So is
    a run.json's kind on Home (its summary counted the runs of each kind in HTML)."""
    import urllib.parse

    from workbench.runs import RunStore

    store = RunStore(tmp_path / "runs")
    run = store.create("openended", "boids", "pixels", {}, 0)
    run.update(status="done", iterations=1)
    evil = f"evil{XSS}"
    shutil.copytree(run.path, store.root / evil)
    info = json.loads((store.root / evil / "run.json").read_text())
    (store.root / evil / "run.json").write_text(json.dumps({**info, "id": evil}))
    shutil.copytree(run.path, store.root / "kinded")
    (store.root / "kinded" / "run.json").write_text(json.dumps({**info, "id": "kinded", "kind": XSS}))
    with serving(str(store.root), tmp_path / "serve.log") as url:
        for address in ["/", "/runs", f"/atlas?run={urllib.parse.quote(evil)}", "/qd?run=nosuch", "/lab?run=nosuch"]:
            with _browse(browser, url + address, request) as page:
                dialogs: list[str] = []
                page.on("dialog", lambda d, said=dialogs: (said.append(d.message), d.dismiss()))
                page.get_by_text(re.compile("onerror=")).first.wait_for(state="attached", timeout=60000)
                page.wait_for_timeout(500)
                assert not dialogs and page.evaluate("() => window.__xss || 0") == 0, address


def test_the_runs_pages_own_lines_show_a_run_id_as_text(tmp_path):
    """The Runs page names the runs compared, asked about and removed in `code` spans of its own: a folder named
    with a backtick (a`<img …>) closed the span, and the rest of its name was HTML the page ran as the runs were
    compared or their removal asked (as_text on those lines too)."""
    import panel as pn

    from workbench.dashboards.runs import runs_page
    from workbench.dashboards.shell import TextMultiChoice
    from workbench.runs import RunStore

    store = RunStore(tmp_path / "runs")
    run = store.create("openended", "boids", "pixels", {}, 0)
    run.update(status="done", iterations=1)
    evil = "a`<img src=x onerror=alert(1)>"
    shutil.copytree(run.path, store.root / evil)
    info = json.loads((store.root / evil / "run.json").read_text())
    (store.root / evil / "run.json").write_text(json.dumps({**info, "id": evil}))
    page = runs_page(str(store.root))
    everything = pn.Column(*page.main, *page.sidebar)
    next(iter(everything.select(TextMultiChoice))).value = [run.id, evil]
    next(b for b in everything.select(pn.widgets.Button) if b.label.startswith("remove the ticked")).clicks += 1
    shown = [html.unescape(m.get_root().text) for m in everything.select(pn.pane.Markdown) if m.object]
    assert any("Comparing" in s for s in shown) and any("for good" in s for s in shown), shown
    assert not [s for s in shown if "<img" in s]


MARKDOWN_ID = "_a*b*_[x](y)~~s~~$m$"  # a run folder name Markdown reads as italics, emphasis, a link, a strike, maths


def _shown_text(markdown: str) -> tuple[str, list[str]]:
    """The text a Markdown pane's HTML shows (its tags dropped), and whether Markdown made anything of it."""
    import panel as pn

    rendered = html.unescape(pn.pane.Markdown(markdown).get_root().text)  # the HTML the browser gets
    made = [tag for tag in ("<em>", "<strong>", "<a ", "<s>", "<del>", "<span class=\"math", "<h1", "<h2",
                            "<blockquote", "<ul", "<ol", "<dl", "<hr") if tag in rendered]
    return html.unescape(re.sub(r"<[^>]+>", "", rendered)), made


def test_a_run_id_with_markdown_in_it_is_shown_as_its_characters(tmp_path):
    """A run folder named with Markdown's characters (`_draft_`, `a*b*`, `[x](y)`) is shown as it is named: the
    pages' alerts gave a library's words ("no run 'a*b*'") to Markdown and showed "no run 'a<em>b</em>'", and
    their own lines put ids in bold or in code spans a backtick of the id closed. A library's words are plain()
    (their `code` spans kept), a value in a page's line literal() or code()."""
    import panel as pn

    from workbench.dashboards.runs import RunsModel, runs_page
    from workbench.dashboards.shell import TextMultiChoice, code, literal, plain, run_alert
    from workbench.runs import RunStore

    text, made = _shown_text(plain(f"no run {MARKDOWN_ID!r} in `a_b*c*` (see **x**)"))
    assert text.strip() == f"no run {MARKDOWN_ID!r} in a_b*c* (see **x**)" and not made, (text, made)
    text, made = _shown_text(f"**{literal(MARKDOWN_ID)}** on {code('a`b')} · {code(' x ')} · {code('')}")
    assert text.strip() == f"{MARKDOWN_ID} on a`b ·  x  ·" and made == ["<strong>"], (text, made)
    # what Markdown makes only at a line's start (a value may start one), entities, and what linkify reads as a link
    for value in ("R&amp;D", "&copy; 1", "# x", "> x", "- x", "+ x", "1. x", "2) x", "x\n===", "x\n---", "t\n: d",
                  "www.x.com", "weights.pt", "see http://x.com/a", "x@y.com", "mailto:a@b", "0.5 · -0.5 · a-b.c",
                  "é.com", "日本.jp", "x.рф", "x².com", "x\r# y", "x\r1. y"):
        text, made = _shown_text(literal(value))
        assert text.strip() == value.replace("\r", "\n") and not made, (value, text, made)  # a lone CR: a line end
    from workbench.dashboards.qd import answer_line

    for said in ("a<b & c", "x`*y*` <img src=x onerror=alert(1)>", "R&amp;D"):  # a model's answer, as it is
        rendered = html.unescape(pn.pane.Markdown(answer_line(3, said, 0.25)).get_root().text)
        assert "<img" not in rendered and _shown_text(answer_line(3, said, 0.25))[0].strip() == \
            f"model 3 answers {said} (0.2 s)", rendered

    class Refusing:
        def choose(self, run_id):
            raise ValueError(f"no run {run_id!r} (latest runs: {MARKDOWN_ID})")

    text, made = _shown_text(run_alert(Refusing(), MARKDOWN_ID).object)
    assert text.strip() == f"no run {MARKDOWN_ID!r} (latest runs: {MARKDOWN_ID})" and not made, (text, made)

    store = RunStore(tmp_path / "runs")
    run = store.create("openended", "boids", "pixels", {}, 0)
    run.update(status="done", iterations=1)
    for name in (MARKDOWN_ID, "a`b"):
        shutil.copytree(run.path, store.root / name)
        info = json.loads((store.root / name / "run.json").read_text())
        (store.root / name / "run.json").write_text(json.dumps({**info, "id": name}))
    # a folder the catalog leaves out, named with a backtick and HTML after it: the Runs page's header named it in a
    # code span its backtick closed, and the rest was HTML the page ran
    shutil.copytree(run.path, store.root / "a`<img src=x onerror=alert(1)>")
    (store.root / "a`<img src=x onerror=alert(1)>" / "run.json").write_text("{not json")
    header = RunsModel(runs_dir=str(store.root)).count_text()
    assert "<img" not in html.unescape(pn.pane.Markdown(header).get_root().text), header
    assert "left out: a`<img src=x onerror=alert(1)> (run.json is corrupt" in _shown_text(header)[0], header
    page = runs_page(str(store.root))
    everything = pn.Column(*page.main, *page.sidebar)
    next(iter(everything.select(TextMultiChoice))).value = [MARKDOWN_ID, "a`b"]
    next(b for b in everything.select(pn.widgets.Button) if b.label.startswith("remove the ticked")).clicks += 1
    shown = [_shown_text(m.object) for m in everything.select(pn.pane.Markdown) if m.object]
    asked = [t for t, _ in shown if "for good" in t] + [t for t, _ in shown if t.startswith("Comparing")]
    assert len(asked) == 2 and all(f"{MARKDOWN_ID}, a`b" in t or f"{MARKDOWN_ID} and a`b" in t for t in asked), asked


def test_a_search_opened_on_the_page_puts_its_seed_in_the_sidebar(tmp_path):
    """Opening a finished search puts its settings in the sidebar so that Start runs one like it: its seed too
    (the page kept its own seed, 0, so the search started again was another one than the run opened)."""
    model = SearchModel(runs_dir=str(tmp_path), kind="openended", substrate="boids", fm="pixels", steps=4,
                        frames=2, iters=1, pop=4, seed=5)
    model.start()
    assert model.wait() == "done"
    other = SearchModel(runs_dir=str(tmp_path))
    other.choose(model.run_id)
    assert (other.seed, other.iters, other.steps) == (5, 1, 4) and other.config().seed == 5


def test_the_atlas_opens_on_the_newest_finished_illumination_and_offers_no_unfinished_one(runs, tmp_path):
    """The Atlas lays out a finished illumination's population: it opens on the newest finished run, and a stopped
    one (no final population to lay out) is not in its menu, not even as the newest run of the folder."""
    from workbench.dashboards.atlas import AtlasModel

    for name in ("a", "b", "c"):  # oldest first (one created_at: then by id)
        shutil.copytree(Path(runs["dir"]) / runs["illuminate"], tmp_path / name)
    info = json.loads((tmp_path / "c" / "run.json").read_text())
    (tmp_path / "c" / "run.json").write_text(json.dumps({**info, "status": "stopped"}))
    model = AtlasModel(runs_dir=str(tmp_path))
    assert model.param.run_id.objects == ["a", "b"] and model.run_id == "b"


def test_home_says_how_many_runs_of_each_kind_and_of_each_status_it_holds(tmp_path):
    """Home's first line: the runs of each kind, then (in brackets) of each status, most first, without Chromium."""
    from workbench.dashboards.home import store_summary

    rows = [{"kind": "openended", "status": "done"}, {"kind": "openended", "status": "running"},
            {"kind": "illuminate", "status": "done"}]
    assert store_summary("runs", rows) == \
        "<code>runs</code> holds 3 runs: 2 openended, 1 illuminate (2 done, 1 running)."


def test_the_runs_gallery_shows_at_most_its_limit_of_cards_the_newest(runs):
    """From mutation sampling: a store of hundreds of runs opens the Runs page on its `limit` newest cards (60 by
    default), not every card at once; lowering the limit keeps the newest."""
    model = RunsModel(runs_dir=runs["dir"])
    every = model.shown()
    assert len(every) > 2
    model.limit = 2
    assert [r["id"] for r in model.shown()] == [r["id"] for r in every[:2]]


def test_an_accuracy_that_starts_at_zero_is_drawn_on_the_whole_accuracy_scale():
    """From mutation sampling: a merge whose accuracy climbs from 0 to 0.5 has its card's curve end half-way up
    (0..1, as every accuracy card), not at the top as if it had reached 1."""
    import pandas as pd

    from workbench.dashboards.runs import CURVE_LINE, metric_thumbnail

    line = np.array([int(CURVE_LINE[i:i + 2], 16) for i in (1, 3, 5)], np.uint8)
    rising = pd.DataFrame({"iteration": range(4), "best_loss": [0.0, -0.25, -0.5, -0.5]})
    image = metric_thumbnail(rising, "val_accuracy", higher=True, width=224, height=149)
    drawn = (image == line).all(axis=-1)
    last = np.flatnonzero(drawn.any(axis=0))[-1]
    assert abs(np.flatnonzero(drawn[:, last]).mean() - (22 + 139) / 2) < 4  # 0.5 on 0..1: half-way down


def test_an_idle_search_page_counts_the_iterations_its_next_start_runs_and_start_refuses_what_no_search_runs(
        tmp_path):
    """From mutation sampling: before any run the progress line counts the sidebar's Iters as they change (not the
    value the page opened with), and settings no search can run (open-endedness over one frame) are refused by
    start() itself, in the caller's thread: no search is launched to fail on its own."""
    model = SearchModel(runs_dir=str(tmp_path), kind="openended", substrate="boids", fm="pixels", steps=4)
    model.iters = 7
    assert model.total == 7 and model.progress_text() == "0 / 7 iterations"
    model.frames = 1
    with pytest.raises(ValueError, match="--frames 1 scores 0"):
        model.start()
    assert model.status == "idle" and model.run_id is None and not model.running


def test_the_search_page_shows_the_run_it_was_asked_for_what_runs_elsewhere_and_no_atlas_for_a_search(tmp_path):
    """From mutation sampling: a page asked for a run (?run=ID, or run=) opens that run even while this server runs
    another search (only a page asked for none shows the one running); a run that runs in another process says
    so beside its status; a finished search without a best frame is not sent to the Atlas (an illumination's
    note); a run resumed from the page shows none of the rows of the run shown before."""
    from workbench.asal.driver import SearchConfig, run_search
    from workbench.asal.evaluate import EvalConfig
    from workbench.dashboards.search import ATLAS_NOTE, SearchViews, search_page
    from workbench.runs import RunStore

    store = RunStore(tmp_path)
    ev = EvalConfig("boids", "pixels", steps=4, frames=2, overrides={"N": 8})
    first = run_search(SearchConfig(kind="openended", pop=4, iters=2, eval=ev), store)
    second = run_search(SearchConfig(kind="openended", pop=4, iters=1, seed=1, eval=ev), store)
    for name, edit in (("elsewhere", lambda info: {**info, "status": "running", "host": "another-host",
                                                   "heartbeat": time.time()}), ("nobest", lambda info: info)):
        shutil.copytree(first.path, tmp_path / name)
        info = json.loads((tmp_path / name / "run.json").read_text())
        (tmp_path / name / "run.json").write_text(json.dumps(edit(info)))
    (tmp_path / "nobest" / "best.png").unlink()

    model = SearchModel(runs_dir=str(tmp_path))
    model.choose("elsewhere")
    views = SearchViews(model)
    views.refresh()
    assert model.status == "running" and not model.running
    assert "not in this server" in views.status.object, views.status.object
    model.choose("nobest")
    views.refresh()
    assert model.status == "done" and model.best_thumb is None
    assert ATLAS_NOTE not in str(views.best[0].object)

    model.choose(first.id)
    assert len(model.metrics) == 2
    model.start(resume=second.id)  # done: nothing more to run, and nothing of the first run kept on show
    assert model.wait() == "done" and model.run_id == second.id
    assert model.metrics == RunStore(tmp_path).open(second.id).metrics_table("iteration", "best_loss").to_pylist()
    assert len(model.metrics) == 1 and model.total == 1 and model.progress_text() == "1 / 1 iterations"

    running = SearchModel(runs_dir=str(tmp_path), kind="openended", substrate="boids", fm="pixels", steps=10,
                          frames=2, iters=1000, pop=4)
    running.start()
    try:
        deadline = time.time() + 120
        while running.run_id is None and running.running and time.time() < deadline:
            time.sleep(0.05)
        assert running.run_id is not None, running.error
        live = SearchViews(running)
        live.refresh()  # it runs here: no "shown as it was" beside its status
        assert "**running**" in live.status.object and "not in this server" not in live.status.object
        asked = SearchModel(runs_dir=str(tmp_path))
        search_page(str(tmp_path), model=asked, run=first.id)
        assert asked.run_id == first.id and not asked.running
    finally:
        running.stop()
        running.wait()


def test_the_lab_plays_one_theta_from_the_seed_given_seed_0_included():
    """From mutation sampling: a population of one, (1, n), is refused as any population is (the page plays one
    θ), and a θ given with initial-state seed 0 (a population member's thumbnail seed) plays from seed 0, not from
    the seed the Lab had."""
    model = LabModel(substrate="boids", seed=5)
    with pytest.raises(ValueError, match="one vector"):
        model.set_theta(np.zeros((1, model.sub.n_params)))
    model.set_theta(model.theta, seed=0)
    assert model.seed == 0


def test_the_local_server_helpers_wait_for_a_200_and_give_up_when_the_server_has_exited(tmp_path):
    """From mutation sampling (the page tests only saw servers that came up): wait_live is True once /liveness
    answers 200, first_answer gives the page's body; an error page is no answer; a server whose process has
    exited is given up on at once, not after the timeout."""
    import http.server
    import threading

    class Pages(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = f"page {self.path}".encode()
            self.send_response(200 if self.path in ("/liveness", "/app") else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Pages)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert wait_live(url, 30) and first_answer(f"{url}/app", 30) == "page /app"
        assert first_answer(f"{url}/missing", 0.5) is None
    finally:
        server.shutdown()
        server.server_close()
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    answers = []  # asked with a timeout the test would not wait out: the exited process ends the wait
    asking = threading.Thread(target=lambda: answers.append(wait_live(f"http://127.0.0.1:{free_port()}", 600, exited)),
                              daemon=True)
    asking.start()
    asking.join(60)
    assert answers == [False]


def test_the_lab_ticks_only_while_playing():
    """From mutation sampling: the page's periodic tick steps nothing while the Lab is paused (the callback may
    still fire once after a pause)."""
    model = LabModel(substrate="boids")
    model.tick()
    assert model.step_count == 0
    model.playing = True
    model.tick()
    assert model.step_count == 1


def test_the_lab_scores_a_target_image_with_an_fm_that_has_no_text_encoder_whatever_the_prompt():
    """From mutation sampling: an uploaded target image wins over the prompt, so an FM without a text encoder
    (pixels) scores the frames against it even with a prompt typed; no standing error is said. After a reset the
    first score comes score_every frames later, whatever frames were shown before it."""
    model = LabModel(substrate="boids", fm="pixels", prompt="a flock", score_every=2)
    model.set_target_image(model.frame)
    assert model.score_problem() == "" and model.standing_problem() == ""
    model.advance()
    model.advance()
    assert len(model.scores) == 1 and model.message == "", (model.scores, model.message)
    model.advance()
    model.reset()
    model.advance()
    assert model.scores == []
    model.advance()
    assert [step for step, _ in model.scores] == [2]


def test_a_download_button_is_offered_under_a_short_label_keeping_the_files_name(tmp_path):
    """From mutation sampling: offer() labels the button with what it is given (the Lab's narrow buttons say "PNG"
    and "θ (.npy)"), the file keeping its own name; without it, the file's name."""
    from workbench.dashboards.shell import download_button, offer

    button = download_button()
    offer(button, tmp_path / "lenia-seed0-step4.png", "PNG")
    assert (button.label, button.filename, button.visible) == ("download PNG", "lenia-seed0-step4.png", True)
    offer(button, tmp_path / "lenia-seed0.gif")
    assert (button.label, button.filename) == ("download lenia-seed0.gif", "lenia-seed0.gif")


def test_an_int_field_clears_only_its_own_refusal_and_the_address_keeps_other_query_keys():
    """From mutation sampling: checked_int_input tells on_refused("") only once a value is taken after its own
    refusal (not at every value: that cleared a page's other notes), and address() changes the keys it is given,
    keeping the others of the page's address."""
    import param
    from panel.io.location import Location

    from workbench.dashboards.shell import address, checked_int_input

    class Settings(param.Parameterized):
        iters = param.Integer(default=20, bounds=(1, None))

    said = []
    settings = Settings()
    field = checked_int_input(settings, "iters", said.append)
    field.value = 5
    assert settings.iters == 5 and said == []  # nothing refused: nothing to clear
    field.value = 0
    assert settings.iters == 5 and field.value == 5 and len(said) == 1 and "at least 1" in said[0], said
    field.value = 7
    field.value = 8
    assert settings.iters == 8 and said[1:] == [""]  # cleared once
    location = Location(search="?tab=x&run=a")
    address(location, run="b")
    assert location.query_params == {"tab": "x", "run": "b"}
    address(location, run=None, member=3)
    assert location.query_params == {"tab": "x", "member": 3}
    address(None, run="c")  # no served page: nothing to do


def test_home_says_an_empty_store_is_empty(tmp_path):
    """From mutation sampling: a store without runs is said to be empty (not "holds 0 runs: ()"), and a folder
    that does not exist is said not to."""
    from workbench.dashboards.home import store_summary

    assert store_summary(str(tmp_path), []) == \
        f"The run store <code>{tmp_path}</code> is empty: start a search on the Search page."
    assert store_summary(str(tmp_path / "none")).startswith(f"The run store <code>{tmp_path / 'none'}</code> is empty "
                                                            "(no such folder yet")


def test_the_search_page_says_an_error_only_of_a_failed_run_and_from_the_menu_shows_the_newest_search(tmp_path):
    """From mutation sampling: a run.json's error is said only while the run is failed (runs resumed before a
    resume cleared it kept the error of their failure when done); a page opened from the menu while this server
    runs two searches shows the newest one."""
    from workbench.asal.driver import SearchConfig, run_search
    from workbench.asal.evaluate import EvalConfig
    from workbench.dashboards.search import search_page
    from workbench.runs import RunStore

    ev = EvalConfig("boids", "pixels", steps=4, frames=2, overrides={"N": 8})
    done = run_search(SearchConfig(kind="openended", pop=4, iters=1, eval=ev), RunStore(tmp_path))
    info = json.loads((done.path / "run.json").read_text())
    (done.path / "run.json").write_text(json.dumps({**info, "error": "RuntimeError: the failure before a resume"}))
    model = SearchModel(runs_dir=str(tmp_path))
    model.choose(done.id)
    assert model.status == "done" and model.error == ""
    (done.path / "run.json").write_text(json.dumps({**info, "status": "failed", "error": "RuntimeError: boom"}))
    model.choose(done.id)
    assert model.status == "failed" and model.error == "RuntimeError: boom"

    searches = [SearchModel(runs_dir=str(tmp_path), kind="openended", substrate="boids", fm="pixels", steps=10,
                            frames=2, iters=1000, pop=4, seed=seed) for seed in (1, 2)]
    try:
        for search in searches:
            search.start()
            deadline = time.time() + 120
            while search.run_id is None and search.running and time.time() < deadline:
                time.sleep(0.05)
            assert search.run_id is not None, search.error
        menu = SearchModel(runs_dir=str(tmp_path))
        search_page(str(tmp_path), model=menu)
        assert menu.run_id == searches[1].run_id and menu.running
    finally:
        for search in searches:
            search.stop()
        for search in searches:
            search.wait()


def test_a_damaged_newest_run_is_passed_over_and_one_asked_for_is_refused_on_the_merge_and_experts_pages(tmp_path):
    """A run whose run.json lacks fields its config always has (edited by hand), or whose recipe.yaml is cut short,
    made the Merge and Experts pages a traceback before they were built (a KeyError, a YAML error) where it was
    the newest run, or asked for by ?run=: the newest run that reads is shown, the alert says which were passed
    over and why, and one asked for is refused, the run on show kept."""
    import panel as pn

    from workbench.dashboards.experts import ExpertsModel, experts_page
    from workbench.dashboards.merge import MergeModel, merge_page
    from workbench.dashboards.shell import run_alert
    from workbench.runs import RunStore

    store = RunStore(tmp_path)
    merge_cfg = {"method": "ties", "models": ["a", "b"], "tasks": ["add"], "iters": 3}
    good, cut, hand = (store.create("merge", "ties", "a+b", cfg, seed, metric="fitness")
                       for seed, cfg in enumerate([merge_cfg, merge_cfg, {"method": "ties", "models": ["a", "b"]}]))
    (cut.path / "recipe.yaml").write_text("{{{ cut short")
    adapt = store.create("adapt", "add", "svf", {"model": "m", "alpha": "task", "variant": "raw"}, 0)
    bad_adapt = store.create("adapt", "add", "svf", {"model": "m"}, 1)
    for run in (good, cut, hand, adapt, bad_adapt):
        run.update(status="done", best_loss=-0.5, iterations=3)

    merge = MergeModel(runs_dir=str(tmp_path))
    assert merge.run_id == good.id and len(merge.skipped) == 2, merge.skipped
    assert f"run {hand.id}'s run.json lacks its config's tasks, iters: it is damaged" in merge.skipped[0]
    assert "recipe.yaml is not valid YAML" in merge.skipped[1] and merge.summary().startswith(f"**{good.id}**")
    alert = run_alert(merge)
    assert alert.visible and alert.object.startswith("Passed over: ") and hand.id in alert.object
    with pytest.raises(ValueError, match="recipe.yaml is not valid YAML"):
        merge.choose(cut.id)
    assert merge.run_id == good.id and merge.summary().startswith(f"**{good.id}**")
    experts = ExpertsModel(runs_dir=str(tmp_path))
    assert experts.run_id == adapt.id and "lacks its config's alpha, variant" in experts.skipped[0]
    with pytest.raises(ValueError, match="lacks its config's alpha, variant"):
        experts.choose(bad_adapt.id)
    assert experts.run_id == adapt.id and experts.summary().startswith(f"**{adapt.id}**")
    for build, asked in ((merge_page, hand.id), (merge_page, None), (experts_page, bad_adapt.id)):
        page = build(str(tmp_path), run=asked, standalone=True)
        (shown,) = [a for a in pn.Column(*page.main).select(pn.pane.Alert) if a.visible]
        assert "damaged" in shown.object or "not valid YAML" in shown.object, shown.object


def test_a_run_the_catalog_leaves_out_is_said_with_its_reason_on_the_run_pages(tmp_path):
    """A run whose run.json holds a top-level field of a type the catalog refuses (created a list, status a dict,
    kind a number) dropped out of the Merge and Experts pickers without a line (the alert passes over only runs
    whose files did not read), the Home line counted the runs left as all the store holds, the Runs page named the
    folder without its reason, Merge's ?run= of it said "not a run", and the NAMM page said a run with a kind of 5
    "is no run … (0 there)". Each says the run and why, with the fix."""
    import panel as pn

    from workbench.dashboards.experts import ExpertsModel
    from workbench.dashboards.home import store_summary
    from workbench.dashboards.merge import MergeModel
    from workbench.dashboards.namm import NAMMExplorer
    from workbench.dashboards.shell import run_alert
    from workbench.runs import RunStore

    store = RunStore(tmp_path)
    merge_cfg = {"method": "ties", "models": ["a", "b"], "tasks": ["add"], "iters": 3}
    good, created = (store.create("merge", "ties", "a+b", merge_cfg, seed, metric="fitness") for seed in (0, 1))
    adapt, status = (store.create("adapt", "add", "svf", {"model": "m", "alpha": "task", "variant": "raw"}, seed)
                     for seed in (0, 1))
    namm = store.create("namm", "tiny", "namm", {"model": "tiny"}, 0)
    for run in (good, created, adapt, status, namm):
        run.update(status="done", best_loss=-0.5, iterations=3)
    mended = {run.id: (run.path / "run.json").read_text() for run in (created, status)}
    for run, change in ((created, {"created": ["2026"]}), (status, {"status": {"a": 1}}), (namm, {"kind": 5})):
        (run.path / "run.json").write_text(json.dumps(json.loads((run.path / "run.json").read_text()) | change))
    fix = "correct it in run.json, or move the folder out of the run store"

    runs = RunsModel(runs_dir=str(tmp_path))
    assert runs.ids == [good.id, adapt.id]
    assert f"`{created.id}` (run.json is corrupt (created is list, not str); {fix})" in html.unescape(runs.count_text())
    assert f"`{namm.id}` (run.json is corrupt (kind is int, not str); {fix})" in html.unescape(runs.count_text())
    runs.unreadable_why[namm.id] = "config's models is <img src=x onerror=alert(1)>"  # a reason quoting run.json
    shown = pn.pane.Markdown(runs.count_text()).get_root().text
    assert "<img" not in html.unescape(shown) and "(config's models is <img src=x onerror=alert(1)>)" in \
        _shown_text(runs.count_text())[0]
    assert store_summary(str(tmp_path), runs._rows, runs.unreadable).endswith(
        "Left out, not readable as runs: 3 folders (the Runs page says why).")
    assert "holds no readable run. Left out, not readable as runs: 3 folders" in store_summary(str(tmp_path), [], [
        created.id, status.id, namm.id])

    merge = MergeModel(runs_dir=str(tmp_path))
    assert merge.run_id == good.id
    assert merge.skipped == [f"run {created.id}: run.json is corrupt (created is list, not str); {fix}"]
    alert = run_alert(merge)
    assert alert.visible and alert.object.startswith("Passed over: ") and created.id in alert.object
    with pytest.raises(ValueError, match=r"created is list, not str\); correct it in run.json"):
        merge.choose(created.id)
    experts = ExpertsModel(runs_dir=str(tmp_path))
    assert experts.run_id == adapt.id
    assert experts.skipped == [f"run {status.id}: run.json is corrupt (status is dict, not str); {fix}"]

    with pytest.raises(ValueError) as refused:
        NAMMExplorer(runs_dir=str(tmp_path)).choose(namm.id)
    assert f"run.json is corrupt (kind is int, not str); {fix}; the NAMM page cannot open it" in str(refused.value)
    assert "is no run" not in str(refused.value)

    # a refresh reads them again: mended, the line goes; damaged since, it comes (the first read's line stayed)
    from workbench.dashboards.shell import show_passed_over

    for run in (created, status):
        (run.path / "run.json").write_text(mended[run.id])
    merge.refresh()  # the run on show stays: the line was read again all the same
    assert merge.run_id == good.id and merge.skipped == [], merge.skipped
    (good.path / "run.json").write_text(json.dumps(json.loads((good.path / "run.json").read_text()) | {"seed": "0"}))
    merge.refresh()
    experts.refresh()
    assert merge.skipped == [f"run {good.id}: run.json is corrupt (seed is str, not int); {fix}"], merge.skipped
    assert experts.skipped == [] and experts.run_id == adapt.id
    show_passed_over(alert, experts)
    assert not alert.visible and alert.object == ""
    show_passed_over(alert, merge)
    assert alert.visible and alert.object.startswith("Passed over: ") and good.id in alert.object


def test_the_qd_page_and_the_atlas_say_the_runs_of_their_kinds_the_catalog_left_out(tmp_path):
    """A qd run or an illumination whose run.json holds a field of a type the catalog refuses (created a list) dropped
    out of the QD page's and the Atlas' run menus without a word, as it had out of Merge's and Experts': each page
    says it passed them over, with why and the fix, and only the runs it would open (the QD page no GA
    illumination, the Atlas no qd run). The Atlas' ?run= of one says why, not "not a finished illumination run"."""
    import panel as pn

    from workbench.dashboards.atlas import AtlasModel, atlas_page
    from workbench.dashboards.qd import QDModel, qd_page
    from workbench.runs import RunStore

    store = RunStore(tmp_path)
    ev = {"substrate": "boids", "fm": "pixels", "steps": 4}
    qd = store.create("qd", "zoo", "elite", {"tasks": ["a", "b"], "bins": 3, "ranges": {}}, 0, metric="qd_score")
    me, ga = (store.create("illuminate", "boids", "pixels", {"algorithm": algorithm, "eval": ev}, 0)
              for algorithm in ("map-elites", "ga"))
    for run in (qd, me, ga):
        run.update(status="done")
        (run.path / "run.json").write_text(json.dumps(json.loads((run.path / "run.json").read_text())
                                                      | {"created": ["2026"]}))
    why = ("run.json is corrupt (created is list, not str); correct it in run.json, or move the folder out of the "
           "run store")

    def alert_of(page) -> str:
        (shown,) = [a for a in pn.Column(*page.main).select(pn.pane.Alert) if a.visible]
        return shown.object

    model = QDModel(runs_dir=str(tmp_path))
    assert model.param.run_id.objects == []
    assert sorted(model.skipped) == sorted([f"run {qd.id}: {why}", f"run {me.id}: {why}"])
    shown = alert_of(qd_page(str(tmp_path), standalone=True))
    assert shown.startswith("Passed over: ") and qd.id in shown and me.id in shown and ga.id not in shown

    atlas = AtlasModel(runs_dir=str(tmp_path))
    assert atlas.run_id is None and sorted(atlas.skipped) == sorted([f"run {me.id}: {why}", f"run {ga.id}: {why}"])
    shown = alert_of(atlas_page(str(tmp_path), standalone=True))
    assert shown.startswith("Passed over: ") and me.id in shown and ga.id in shown and qd.id not in shown
    with pytest.raises(ValueError, match=r"created is list, not str\); correct it in run.json") as refused:
        atlas.choose(ga.id)
    assert "not a finished illumination run" not in str(refused.value)


def test_a_run_json_without_a_kind_is_said_a_run_of_unknown_kind_not_a_none_run(tmp_path):
    """A run.json without its kind (edited by hand) reads as a run, and every message that names a run's kind said
    "a None run" of it (the Search page, the Experts, QD and Merge pages, figures, NAMM's and the experts' readers,
    a resume of another kind), Merge's ?run= "not a run", the Runs page "no page opens None runs": each says a run
    of unknown kind, as the NAMM page does ("an unknown run")."""
    from workbench import figures
    from workbench.cli.figure import page_view
    from workbench.dashboards.experts import read_run
    from workbench.dashboards.merge import MergeModel
    from workbench.dashboards.qd import read_source
    from workbench.experts.report import report
    from workbench.experts.run import expert_file
    from workbench.merge.views import MergeRun
    from workbench.namm.saved import load_run_policy
    from workbench.runs import RunStore, check_resume

    store = RunStore(tmp_path)
    merge_cfg = {"method": "ties", "models": ["a", "b"], "tasks": ["add"], "iters": 3}
    merge = store.create("merge", "ties", "a+b", merge_cfg, 0, metric="fitness")
    search = store.create("openended", "boids", "pixels", {"eval": {"substrate": "boids", "fm": "pixels"}}, 0)
    for run in (merge, search):
        run.update(status="done")
        info = json.loads((run.path / "run.json").read_text())
        del info["kind"]
        (run.path / "run.json").write_text(json.dumps(info))
    run = store.open(merge.id)
    assert run.info.get("kind") is None  # it reads: a run, of no kind it says
    said = []
    for call in (lambda: SearchModel(runs_dir=str(tmp_path)).choose(merge.id),
                 lambda: read_run(store, merge.id),
                 lambda: read_source(str(tmp_path), merge.id),
                 lambda: MergeModel(runs_dir=str(tmp_path)).choose(merge.id),
                 lambda: MergeRun.open(store, merge.id),
                 lambda: figures.atlas(store, merge.id),
                 lambda: figures.frames(store, merge.id),
                 lambda: figures.frames(store, search.id, member=0),
                 lambda: figures.best_video(store, merge.id, tmp_path / "v.mp4"),
                 lambda: page_view(store, merge.id, None, None),
                 lambda: load_run_policy(tmp_path, merge.id),
                 lambda: report([run]),
                 lambda: expert_file(run),
                 lambda: check_resume(run, "merge", {})):
        with pytest.raises(ValueError) as refused:
            call()
        said.append(str(refused.value))
    for text in said:
        assert "an unknown run" in text and "None" not in text and "not a run" not in text, text
    runs = RunsModel(runs_dir=str(tmp_path))
    assert runs.link(merge.id) == f"`{merge.id}`: no page opens runs of unknown kind yet"


def test_the_passed_over_line_and_the_live_panes_a_screen_reader_announces():
    """From mutation sampling: the passed-over line puts " · " between runs (a reason that ends with its fix ran into
    the next run's words) and is "" for none (the QD page and the Atlas show their alert whenever it is not); the
    run alert is announced at once (role alert), other live panes politely (role status)."""
    import panel as pn

    from workbench.dashboards.shell import LIVE_CLASS, live, passed_over_line, run_alert

    assert passed_over_line(["run a: damaged; fix it", "run b: corrupt"]) == \
        "Passed over: run a: damaged; fix it · run b: corrupt"
    assert passed_over_line([]) == ""
    assert live(pn.pane.Markdown("")).css_classes == [LIVE_CLASS]
    assert f"{LIVE_CLASS}-alert" in run_alert(None).css_classes


def test_the_qd_page_passes_over_left_out_runs_oldest_first_and_says_one_of_no_kind_with_an_algorithm(tmp_path):
    """From mutation sampling: the QD page's passed-over line lists its runs oldest first, as its menu does (an
    illumination made before a qd run came after it); a run.json without a kind whose config names an algorithm
    was "a None (ga) run" on the QD page."""
    from workbench.dashboards.home import store_summary
    from workbench.dashboards.qd import QDModel, read_source
    from workbench.runs import RunStore

    store = RunStore(tmp_path)
    ev = {"substrate": "boids", "fm": "pixels", "steps": 4}
    me = store.create("illuminate", "boids", "pixels", {"algorithm": "map-elites", "eval": ev}, 0)
    qd = store.create("qd", "zoo", "elite", {"tasks": ["a", "b"], "bins": 3, "ranges": {}}, 0, metric="qd_score")
    ga = store.create("illuminate", "boids", "pixels", {"algorithm": "ga", "eval": ev}, 1)
    for run in (me, qd):
        run.update(status="done")
        (run.path / "run.json").write_text(json.dumps(json.loads((run.path / "run.json").read_text())
                                                      | {"created": ["2026"]}))
    assert [why.split(":")[0] for why in QDModel(runs_dir=str(tmp_path)).skipped] == [f"run {me.id}", f"run {qd.id}"]
    # the Home line read without the Runs page's catalog counts the folders left out too
    assert store_summary(str(tmp_path)).endswith("Left out, not readable as runs: 2 folders (the Runs page says why).")
    info = json.loads((ga.path / "run.json").read_text())
    del info["kind"]
    (ga.path / "run.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match=r"is an unknown \(ga\) run; the QD page opens"):
        read_source(str(tmp_path), ga.id)


def test_an_atlas_run_whose_run_json_lacks_its_substrate_is_said_and_one_asked_for_is_refused(tmp_path):
    """A finished illumination whose run.json lost its config's eval (edited by hand) made the Atlas a traceback
    before it was built (a KeyError reading the substrate, outside the layout's refusals) where it was the newest
    run, and a KeyError from choose where it was asked for: the page says why, and one asked for is refused with
    the layout on show kept."""
    import panel as pn

    from workbench.asal.driver import SearchConfig, run_search
    from workbench.asal.evaluate import EvalConfig
    from workbench.dashboards.atlas import AtlasModel, atlas_page
    from workbench.runs import RunStore

    ev = EvalConfig("boids", "pixels", steps=4, frames=2, overrides={"N": 8})
    good = run_search(SearchConfig(kind="illuminate", eval=ev, iters=1, pop=4, population=4), RunStore(tmp_path)).id
    damaged = tmp_path / "damaged"
    shutil.copytree(tmp_path / good, damaged)  # "damaged" sorts after the run's dated id: the newest folder
    info = json.loads((damaged / "run.json").read_text())
    del info["config"]["eval"]
    (damaged / "run.json").write_text(json.dumps({**info, "id": "damaged", "created_at": info["created_at"] + 1}))
    why = "run damaged's run.json lacks its config's eval: it is damaged"
    model = AtlasModel(runs_dir=str(tmp_path))
    assert model.run_id == "damaged" and model.message == why and model.revision == 0
    page = atlas_page(str(tmp_path), standalone=True)
    (shown,) = [a for a in pn.Column(*page.main).select(pn.pane.Alert) if a.visible]
    assert "lacks its config's eval" in shown.object
    model.choose(good)
    assert model.revision == 1 and model.substrate == "boids"
    with pytest.raises(ValueError, match="lacks its config's eval"):
        model.choose("damaged")
    assert model.run_id == good and model.substrate == "boids" and model.revision == 1


def test_a_merge_run_whose_run_json_lacks_its_iterations_is_shown_not_a_traceback(tmp_path):
    """run.json's iterations (a field every run writes, outside its config) removed by hand made the Merge page's
    summary a KeyError, the page a traceback before it was built: the summary says "?" iterations."""
    from workbench.dashboards.merge import MergeModel, merge_page
    from workbench.runs import RunStore

    run = RunStore(tmp_path).create("merge", "ties", "a+b", {"method": "ties", "models": ["a", "b"], "tasks": ["add"],
                                                            "iters": 3}, 0, metric="fitness")
    run.update(status="done", best_loss=-0.5)
    info = json.loads((run.path / "run.json").read_text())
    del info["iterations"]
    (run.path / "run.json").write_text(json.dumps(info))
    model = MergeModel(runs_dir=str(tmp_path))
    assert model.run_id == run.id and ", ?/3 iterations" in model.summary()
    merge_page(str(tmp_path), standalone=True)


def test_an_experts_run_json_with_fields_of_another_type_is_passed_over_not_a_traceback(tmp_path):
    """Fields of a run.json edited by hand that the Experts page read without a check (a model that is no text, a
    variant no mixture has, expert_inputs that are no list, iterations gone) made the page a traceback before it
    was built: each such run is passed over as damaged (the alert says why), and one that only lost its count
    says "?" for it."""
    import panel as pn

    from workbench.dashboards.experts import ExpertsModel, experts_page
    from workbench.runs import RunStore

    store = RunStore(tmp_path)
    cfg = {"model": "m", "alpha": "task", "variant": "raw"}
    counted = store.create("adapt", "add", "svf", cfg, 0)
    counted.update(status="done")
    info = json.loads((counted.path / "run.json").read_text())
    del info["iterations"]
    (counted.path / "run.json").write_text(json.dumps(info))
    bad = {"model": {**cfg, "model": 3}, "variant": {**cfg, "variant": "softmax"}, "expert_inputs": cfg}
    for seed, (field, config) in enumerate(bad.items(), 1):
        run = store.create("adapt", "add", "svf", config, seed)
        run.update(status="done", iterations=3, **({"expert_inputs": "e.safetensors"} if field == "expert_inputs"
                                                    else {}))
    model = ExpertsModel(runs_dir=str(tmp_path))
    assert model.run_id == counted.id and ", ? iterations" in model.summary(), model.summary()
    assert [why.split("run.json holds ")[1] for why in model.skipped] == \
        [f"{field} of another type or value: it is damaged" for field in reversed(bad)], model.skipped
    page = experts_page(str(tmp_path), standalone=True)
    (shown,) = [a for a in pn.Column(*page.main).select(pn.pane.Alert) if a.visible]
    assert shown.object.startswith("Passed over: ") and shown.object.count("it is damaged") == 3


def test_an_address_whose_query_is_not_utf8_opens_its_page_saying_no_such_run(tmp_path, browser, request):
    """?run=%FF (a link percent-encoded in Latin-1, or cut inside a letter): the page's build raised
    UnicodeDecodeError and the browser got an empty page, the traceback in the server's log only; the Lab's
    ?member= and the QD page's ?file= likewise. Now the page opens and names the run it has not got."""
    from workbench.runs import RunStore

    RunStore(tmp_path / "runs").create("target", "boids", "pixels", {}, 0)
    log = tmp_path / "serve.log"
    with serving(str(tmp_path / "runs"), log) as url:
        with urllib.request.urlopen(f"{url}/qd?file=%E9", timeout=60) as answer:
            assert answer.status == 200
        with _browse(browser, f"{url}/search?run=%FF", request) as page:
            page.get_by_text("no run '\ufffd' in ").first.wait_for(timeout=60000)
        with _browse(browser, f"{url}/lab?run=x&member=%FF", request) as page:  # the member is read once loaded
            page.get_by_text("no run 'x' in ").first.wait_for(timeout=60000)
    assert "Traceback" not in log.read_text(), log.read_text()
