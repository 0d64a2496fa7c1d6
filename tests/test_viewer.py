"""The pygame viewer: driven through real SDL events (dummy video driver) and once on Xvfb."""

import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pygame
import pytest
from setup_parts import missing_setup

from workbench.viewer import ViewerModel, run_viewer


def post_keys(*keys):
    for key in keys:
        pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=key, mod=0, unicode="", scancode=0))


class ScriptedViewer(ViewerModel):
    """Posts a scripted key per frame into SDL's real event queue (the loop reads them as a user's)."""

    script: dict

    def advance(self):
        super().advance()
        frame = getattr(self, "_frame_no", 0)
        self._frame_no = frame + 1
        if frame in self.script:
            post_keys(*self.script[frame])


def test_keys_through_sdl_events(tmp_path, substrates, monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    sub = substrates["boids"]
    model = ScriptedViewer(sub, sub.zero_theta(), seed=3, out_dir=tmp_path, render_size=96)
    model.script = {
        1: [pygame.K_PLUS],          # 1 -> 2 steps per frame
        2: [pygame.K_EQUALS],        # 2 -> 4 (the unshifted + key)
        3: [pygame.K_MINUS],         # 4 -> 2
        4: [pygame.K_SPACE],         # pause
        6: [pygame.K_s],             # save a PNG (while paused)
        7: [pygame.K_SPACE, pygame.K_n],  # resume, new θ
        9: [pygame.K_r],             # reset
        11: [pygame.K_q],            # quit
    }
    theta0 = model.theta.copy()
    run_viewer(model, window=128, max_frames=100, fps_cap=1000)
    assert not model.running
    assert model.steps_per_frame == 2
    assert not model.paused
    assert not np.array_equal(model.theta, theta0)
    assert (model.theta - theta0).std() == pytest.approx(0.1, rel=0.3)  # σ = 0.1 around the old θ
    assert len(model.saved) == 1 and model.saved[0].is_file()
    assert model.saved[0].with_suffix(".theta.npy").is_file()
    assert model._frame_no < 20  # q ended the loop, not max_frames
    assert model.steps == 2 * (model._frame_no - 10)  # counted from the reset


def test_pause_holds_the_state(substrates, tmp_path):
    sub = substrates["lenia"]
    model = ViewerModel(sub, sub.zero_theta(), out_dir=tmp_path, render_size=64)
    model.key("space")
    before = sub.state_to_arrays(model.state)["world"]
    model.advance()
    np.testing.assert_array_equal(sub.state_to_arrays(model.state)["world"], before)
    assert model.steps == 0
    model.key("space")
    model.advance()
    assert model.steps == 1
    for _ in range(20):
        model.key("-")
    assert model.steps_per_frame == 1


def test_a_new_theta_plays_its_own_parameters(substrates, tmp_path):
    """The viewer checks θ's parameters once (not at each frame): after the n key the frames are the substrate's
    own step and render of the new θ's parameters, not the old θ's."""
    from workbench.export import to_uint8

    sub = substrates["lenia"]
    model = ViewerModel(sub, sub.zero_theta(), out_dir=tmp_path, render_size=64)
    old = sub.decode(model.theta)
    model.key("n")
    state = model.state
    model.advance()

    def played(params):
        return to_uint8(np.nan_to_num(np.asarray(sub.render(sub.step(state, params, 1), params, 64)), nan=0.0))

    np.testing.assert_array_equal(model.frame(), played(sub.decode(model.theta)))
    assert not np.array_equal(model.frame(), played(old))
    assert model.params.keys() == old.keys()
    # what plays is read-only: an array edited in place would not reach the checked copy the steps take
    with pytest.raises(ValueError, match="read-only"):
        model.params["m"][...] = 1.0
    with pytest.raises(TypeError):
        model.params["m"] = np.zeros(15)


@pytest.mark.parametrize("name", ["gol", "nca_d3", "dnca", "plenia", "flow_lenia"])
def test_the_new_substrates_play_in_the_window(name, tmp_path, monkeypatch):
    """Issue 15's substrates at their viewing default (Game of Life: Conway, not the dead rule 0), a few frames
    through the real loop; s saves the frame and its θ, which reloads."""
    from workbench.export import load_theta
    from workbench.simulations import make_substrate
    from workbench.viewer import default_theta

    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    sub = make_substrate(name)
    model = ScriptedViewer(sub, default_theta(sub), out_dir=tmp_path, render_size=64)
    model.script = {1: [pygame.K_s], 2: [pygame.K_q]}
    run_viewer(model, window=96, max_frames=20, fps_cap=1000)
    assert not model.running and model.steps == 4 and len(model.saved) == 1  # q is read in the 4th frame
    np.testing.assert_array_equal(load_theta(model.saved[0].with_suffix(".theta.npy"), sub), model.theta)
    if name == "gol":
        assert model.theta.tolist() == [6152] and model.frame().max() == 255


def test_smoke_under_xvfb_with_screenshot(tmp_path):
    from PIL import ImageGrab

    if shutil.which("Xvfb") is None:
        missing_setup("Xvfb (make test-deps)")

    # -displayfd: Xvfb picks a free display and writes its number once it accepts connections (a fixed
    # display and a fixed sleep failed when the number was taken or the server was slow to start)
    read_fd, write_fd = os.pipe()
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "800x800x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(write_fd,))
    os.close(write_fd)
    try:
        with os.fdopen(read_fd) as ready:
            number = ready.readline().strip()
        assert number, "Xvfb did not start"
        display = f":{number}"
        env = {**os.environ, "DISPLAY": display, "SDL_VIDEODRIVER": "x11"}
        env.pop("SDL_AUDIODRIVER", None)  # as on a user's machine: the viewer must stay quiet without it
        viewer = subprocess.Popen([sys.executable, "-m", "workbench", "view", "plife", "--window", "400",
                                   "--frames", "100000", "--out-dir", str(tmp_path)], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        shot = None
        for _ in range(60):  # wait for the window to show particles
            time.sleep(0.5)
            assert viewer.poll() is None, viewer.stderr.read()
            shot = np.asarray(ImageGrab.grab(xdisplay=display))[:400, :400]
            if shot.std() > 10:
                break
        assert shot is not None and shot.std() > 10, "nothing drawn in the window"
        from PIL import Image

        Image.fromarray(shot).save(tmp_path / "screenshot.png")
        colours = {tuple(int(c) for c in px) for px in shot[::7, ::7].reshape(-1, 3)}
        assert len(colours) > 5  # coloured particles on black, plus the status text
        viewer.terminate()
        out, errors = viewer.communicate(timeout=20)
        noise = [line for line in (out + errors).splitlines() if "pygame" in line.lower() or "ALSA" in line]
        assert not noise, noise  # no banner, no audio-device complaints
    finally:
        xvfb.terminate()
        xvfb.wait(timeout=10)


def test_snapshots_keep_each_other_and_a_missing_folder_is_made(tmp_path, substrates):
    """`s`, `n` (a new θ: step 0 again), `s`: two snapshots, the first kept (the second overwrote it, PNG and θ);
    into a folder not there yet (the first `s` ended the session)."""
    sub = substrates["boids"]
    model = ViewerModel(sub, sub.zero_theta(), seed=3, out_dir=tmp_path / "new", render_size=32)
    first = model.save_png()
    model.key("n")
    second = model.save_png()
    assert first != second and first.is_file() and second.is_file()
    np.testing.assert_array_equal(np.load(first.with_suffix(".theta.npy")), sub.zero_theta())
    np.testing.assert_array_equal(np.load(second.with_suffix(".theta.npy")), model.theta)


def test_the_title_follows_the_rule_and_the_status_says_what_went_wrong(tmp_path, monkeypatch):
    """n gave Game of Life a new rule and the window's title kept the old one; a θ that diverges played black with
    a NumPy warning and no word; a snapshot the disk refused ended the session. The title follows, the status
    line says it, the frame is drawn without a warning."""
    import warnings

    from workbench.simulations import make_substrate
    from workbench.viewer import default_theta

    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    sub = make_substrate("gol", grid=64)

    class Titled(ScriptedViewer):
        def advance(self):
            super().advance()
            self.captions = [*getattr(self, "captions", []), pygame.display.get_caption()[0]]

    model = Titled(sub, default_theta(sub), out_dir=tmp_path, render_size=64)
    model.script = {1: [pygame.K_n], 3: [pygame.K_q]}
    run_viewer(model, window=64, max_frames=20, fps_cap=1000)
    assert model.captions[1] == "workbench view gol B3/S23" and model.captions[-1] == f"workbench view {model.title}"
    assert model.title != "gol B3/S23"

    plenia = make_substrate("plenia")
    blown = ViewerModel(plenia, np.full(6, 50.0), out_dir=tmp_path / "a-file" / "shots", render_size=32)
    (tmp_path / "a-file").write_text("")
    blown.steps_per_frame = 4  # gone by its third step
    blown.advance()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frame = blown.frame()
    assert blown.diverged and frame.dtype == np.uint8 and "[diverged: n for a new θ]" in blown.status(30.0)
    blown.key("s")
    assert blown.running and blown.saved == [] and "not saved:" in blown.notice and "not saved:" in blown.status(0)
    blown.key("r")
    assert not blown.diverged and blown.notice == ""


@pytest.mark.parametrize("env, message", [({}, "this session has no display (DISPLAY is unset)"),
                                          ({"SDL_VIDEODRIVER": "x11"}, "workbench view cannot open a window")])
def test_view_without_a_display_is_one_error_naming_what_to_do(env, message):
    """No display: SDL played to its offscreen driver, forever, without a word; a driver it cannot open ended in
    a traceback. One error line naming the render command and the Lab instead, exit 2."""
    clean = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER")}
    proc = subprocess.run([sys.executable, "-m", "workbench", "view", "gol", "--frames", "2"], capture_output=True,
                          text=True, timeout=120, env={**clean, **env})
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "workbench render" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(("flags", "size"), [(["--window", "96"], 96), ([], 512),
                                             (["--window", "96", "--render-size", "40"], 40)])
def test_view_renders_at_the_render_size_else_the_window_up_to_512(tmp_path, flags, size):
    """`workbench view`'s frames (and so its snapshots) are --render-size pixels, else the window's, 512 at most."""
    from workbench.cli import build_parser
    from workbench.cli.sim import viewer_model

    model = viewer_model(build_parser().parse_args(["view", "gol", "--out-dir", str(tmp_path), *flags]))
    assert model.render_size == size
    assert model.frame().shape == (size, size, 3)


def test_escape_and_closing_the_window_quit_and_max_frames_counts_the_frames(tmp_path, substrates, monkeypatch):
    """From mutation sampling: Escape quits as q does, closing the window (SDL's QUIT) too; max_frames is the
    number of frames played; + doubles the steps per frame up to 1024."""
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    sub = substrates["boids"]
    model = ViewerModel(sub, sub.zero_theta(), out_dir=tmp_path, render_size=32)
    run_viewer(model, window=32, max_frames=3, fps_cap=1000)
    assert model.running and model.steps == 3
    for event in (pygame.event.Event(pygame.KEYDOWN, key=pygame.K_ESCAPE, mod=0, unicode="", scancode=0),
                  pygame.event.Event(pygame.QUIT)):
        model = ViewerModel(sub, sub.zero_theta(), out_dir=tmp_path, render_size=32)
        pygame.display.init()  # run_viewer's own init: the event is posted before the loop reads it
        pygame.event.post(event)
        run_viewer(model, window=32, max_frames=20, fps_cap=1000)
        assert not model.running and model.steps == 1, event
    for _ in range(20):
        model.key("+")
    assert model.steps_per_frame == 1024


def test_what_plays_is_a_read_only_copy_of_the_parameters_given():
    """From mutation sampling: read_only_params copies before it locks, so the decoded arrays it was given (which
    a substrate may hand out again) stay writable and its view keeps what played."""
    from workbench.viewer import read_only_params

    given = {"m": np.zeros(3), "n": 2}
    shown = read_only_params(given)
    given["m"][0] = 1.0
    assert shown["m"][0] == 0.0 and not shown["m"].flags.writeable and shown["n"] == 2


def test_a_frame_partly_off_the_numbers_draws_nan_black_inf_white_and_the_rest_as_it_is(tmp_path):
    """From mutation sampling: no real substrate renders a frame with only some pixels NaN or inf, so the viewer's
    partly diverged frame went untested (a check of any() instead of all() drew it with NumPy's cast warning and
    no word; +inf mapped to black). Lenia's render shows its world's cells as they are: its world is written here
    with a NaN and −inf channel, an inf channel and a finite one."""
    import warnings

    import torch

    from workbench.simulations import make_substrate
    from workbench.simulations.base import State

    sub = make_substrate("lenia", device="cpu")
    model = ViewerModel(sub, sub.zero_theta(), out_dir=tmp_path, render_size=16)
    world = torch.full_like(model.state.arrays["world"], 0.25)  # blue: a finite value
    world[..., 0] = float("nan")
    world[:, : sub.grid // 2, :, 0] = float("-inf")  # red: −inf in the top half, NaN in the bottom one
    world[..., 1] = float("inf")  # green
    model.state = State(sub.name, {**model.state.arrays, "world": world}, model.state.batched)
    picture = sub.render(model.state, model.params, 16)
    assert np.isnan(picture).any() and np.isneginf(picture).any() and np.isposinf(picture).any()
    assert np.isfinite(picture).any()  # partly off the numbers, not wholly
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a cast of NaN to uint8 warns (and draws what the platform makes of it)
        frame = model.frame()
    assert model.diverged and "[diverged: n for a new θ]" in model.status(30.0)
    assert frame.shape == (16, 16, 3) and frame.dtype == np.uint8
    np.testing.assert_array_equal(frame[..., 0], 0)  # NaN and −inf black
    np.testing.assert_array_equal(frame[..., 1], 255)  # +inf white
    np.testing.assert_array_equal(frame[..., 2], 64)  # the finite 0.25 as a finite frame draws it (0.25 · 255, rounded)
