"""Real-time pygame viewer: `workbench view SUBSTRATE` (any of the ten in workbench.simulations.SUBSTRATES).

Keys: space pause, n new random θ (σ = 0.1 around the current one; Game of Life: one rule bit flipped or more),
r reset, s save PNG,
+/− simulation steps per frame, q (or closing the window) quit. FPS and step counter on screen.

ViewerModel holds everything a key does, so tests can drive it directly or through real
pygame events (SDL's dummy video driver).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np

from workbench.export import to_uint8
from workbench.simulations import Substrate, rule_text

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # pygame prints a banner on import otherwise

__all__ = ["ViewerModel", "check_display", "default_theta", "mutated_theta", "rule_text", "run_viewer"]

CONWAY = 6152  # B3/S23 (workbench.simulations.gol.CONWAY; not imported, so this module loads no kernels)


def default_theta(sub: Substrate | str) -> np.ndarray:
    """The θ a substrate (or a substrate's name) is shown with when none is given (viewer, `workbench render`, the
    Lab): the reference defaults θ = 0, except Game of Life, whose θ = 0 is rule 0 (every cell dies at once):
    Conway's B3/S23."""
    if isinstance(sub, str):  # the README's `default_theta("gol")` failed on a name
        from workbench.simulations import make_substrate

        sub = make_substrate(sub, device="cpu")
    if sub.name == "gol":
        return np.array([CONWAY], np.int64)
    return sub.zero_theta()


def mutated_theta(sub: Substrate, theta: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """θ + σ·N(0, I); for Game of Life, whose θ is an integer rule, the rule with bits flipped instead (each with
    probability 1/18, at least one: the GA over rules' mutation; σ plays no part)."""
    if sub.name == "gol":
        from workbench.asal.rules import mutate_rules

        return mutate_rules(np.asarray(theta).reshape(1), rng).astype(np.int64)
    theta = np.asarray(theta, np.float64)
    return theta + sigma * rng.standard_normal(theta.shape)


def read_only_params(params: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
    """Decoded parameters as a read-only mapping of read-only copies, what the Lab and the viewer show as playing
    (copies: decode may hand out arrays someone else writes to). To edit: `{k: v.copy() for k, v in it.items()}`."""
    return MappingProxyType({k: _read_only(v) for k, v in params.items()})


def _read_only(value):
    if not isinstance(value, np.ndarray):
        return value
    value = value.copy()
    value.flags.writeable = False
    return value


@dataclass
class ViewerModel:
    sub: Substrate
    theta: np.ndarray
    seed: int = 0
    steps_per_frame: int = 1
    render_size: int = 224
    out_dir: Path = field(default_factory=Path.cwd)
    paused: bool = False
    running: bool = True

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)  # a string is a folder too
        self.rng = np.random.default_rng(self.seed)
        self.saved: list[Path] = []
        self.notice = ""  # what the last key could not do (a snapshot the disk refused), until the next key
        self.reset()

    def reset(self) -> None:
        params = self.sub.decode(self.theta)
        # checked and on the device once per θ, not at every frame's step and render (docs/benchmarks.md, "Lab frames")
        self._device_params = self.sub.to_device(params)
        self._params = read_only_params(params)
        self.state = self.sub.init(self._device_params, seed=self.seed)
        self.steps = 0
        self.diverged = False  # the simulation left the numbers (NaN or inf): drawn black, said in the status

    @property
    def params(self) -> Mapping[str, np.ndarray]:
        """The decoded parameters of θ as they play, read-only (a new θ and reset() change them; an array edited
        in place would not have reached the checked copy the steps take)."""
        return self._params

    @property
    def title(self) -> str:
        """The substrate's name, and Game of Life's rule (it changes with n)."""
        return self.sub.name + (f" {rule_text(self.params['rule'])}" if self.sub.name == "gol" else "")

    def status(self, fps: float) -> str:
        """The status line: step, speed, and what is wrong (a diverged simulation, a snapshot not saved)."""
        line = f"{self.title}  step {self.steps}  {fps:5.1f} FPS  {self.steps_per_frame} steps/frame"
        if self.paused:
            line += "  [paused]"
        if self.diverged:
            line += "  [diverged: n for a new θ]"
        return line + (f"  [{self.notice}]" if self.notice else "")

    def new_theta(self, sigma: float = 0.1) -> None:
        theta = mutated_theta(self.sub, self.theta, sigma, self.rng)
        self.theta = theta if self.sub.name == "gol" else theta.astype(np.float32)
        self.reset()

    def advance(self) -> None:
        if not self.paused:
            self.state = self.sub.step(self.state, self._device_params, self.steps_per_frame)
            self.steps += self.steps_per_frame

    def frame(self) -> np.ndarray:
        """The current picture as uint8 (size, size, 3), laid out like the saved PNG; a diverged simulation's
        NaN and inf as black and white (a cast of NaN warned), and `diverged` set."""
        picture = np.asarray(self.sub.render(self.state, self._device_params, self.render_size))
        if not np.isfinite(picture).all():
            self.diverged = True
            picture = np.nan_to_num(picture, nan=0.0, posinf=1.0, neginf=0.0)
        return to_uint8(picture)

    def save_png(self) -> Path:
        """The current frame as PNG with θ beside it (.theta.npy, to reload with --theta), both atomically, under
        a name no earlier snapshot has (a new θ starts again at step 0: …-2, …-3, as the Lab's snapshots)."""
        from workbench.atomic import atomic_write, fresh_paths, write_png

        self.out_dir.mkdir(parents=True, exist_ok=True)
        stem = self.out_dir / f"{self.sub.name}-seed{self.seed}-step{self.steps:06d}"
        path, npy = fresh_paths(stem, (".png", ".theta.npy"))
        atomic_write(npy, lambda p: np.save(p, self.theta))
        write_png(path, self.frame())
        self.saved.append(path)
        return path

    def key(self, name: str) -> None:
        """Apply one key press: 'space', 'n', 'r', 's', '+', '-', 'q'. A snapshot the disk refuses is said in
        the status line (it ended the session)."""
        self.notice = ""
        if name == "space":
            self.paused = not self.paused
        elif name == "n":
            self.new_theta()
        elif name == "r":
            self.reset()
        elif name == "s":
            try:
                self.save_png()
            except OSError as error:
                self.notice = f"not saved: {error.strerror or error} ({self.out_dir})"
        elif name == "+":
            self.steps_per_frame = min(self.steps_per_frame * 2, 1024)
        elif name == "-":
            self.steps_per_frame = max(self.steps_per_frame // 2, 1)
        elif name == "q":
            self.running = False


def _key_name(event) -> str | None:
    import pygame

    if event.key == pygame.K_SPACE:
        return "space"
    if event.key in (pygame.K_PLUS, pygame.K_EQUALS, pygame.K_KP_PLUS):
        return "+"
    if event.key in (pygame.K_MINUS, pygame.K_KP_MINUS):
        return "-"
    names = {pygame.K_n: "n", pygame.K_r: "r", pygame.K_s: "s", pygame.K_q: "q", pygame.K_ESCAPE: "q"}
    return names.get(event.key)


NO_DISPLAY_FIX = ("render a video instead (`workbench render SUBSTRATE --steps 500 --out sim.mp4`) or play it on "
                  "the Lab page (`workbench serve`, through an SSH tunnel from a remote machine)")


def check_display() -> None:
    """One ValueError, before a kernel compiles, where `workbench view` has no screen to open its window on: on
    Linux neither DISPLAY nor WAYLAND_DISPLAY is set (SDL then picked its offscreen driver and played to nobody,
    forever), unless SDL_VIDEODRIVER names a driver on purpose (the tests' dummy)."""
    import os
    import sys

    if os.environ.get("SDL_VIDEODRIVER") or not sys.platform.startswith("linux"):
        return
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise ValueError(f"workbench view opens a window, and this session has no display (DISPLAY is unset); "
                         f"{NO_DISPLAY_FIX}")


def run_viewer(model: ViewerModel, window: int = 768, max_frames: int | None = None,
               fps_cap: int = 60) -> ViewerModel:
    """Open the window and loop until q / close (or max_frames, for tests and demos). A display SDL cannot open
    (or one it only offers offscreen, not asked for) is one ValueError naming what to do instead."""
    import os

    import pygame

    # the viewer plays no sound: no audio device is opened (ALSA complains on machines without one)
    try:
        pygame.display.init()
        headless = pygame.display.get_driver() in ("offscreen", "dummy") and not os.environ.get("SDL_VIDEODRIVER")
        if headless:
            raise pygame.error(f"SDL found no screen, only its {pygame.display.get_driver()} driver")
        pygame.font.init()
    except pygame.error as exc:
        pygame.quit()
        raise ValueError(f"workbench view cannot open a window ({exc}); {NO_DISPLAY_FIX}") from None
    try:
        try:
            screen = pygame.display.set_mode((window, window))
        except pygame.error as exc:
            raise ValueError(f"workbench view cannot open a window ({exc}); {NO_DISPLAY_FIX}") from None
        caption = None
        font = pygame.font.Font(None, 24)
        clock = pygame.time.Clock()
        frames, last, fps = 0, time.perf_counter(), 0.0
        while model.running and (max_frames is None or frames < max_frames):
            for event in pygame.event.get():
                if event.type == pygame.QUIT:
                    model.running = False
                elif event.type == pygame.KEYDOWN and (name := _key_name(event)):
                    model.key(name)
            model.advance()
            # surfarray is indexed [x, y]: transpose so the window shows the saved PNG's layout
            surface = pygame.surfarray.make_surface(model.frame().transpose(1, 0, 2))
            screen.blit(pygame.transform.scale(surface, (window, window)), (0, 0))
            now = time.perf_counter()
            fps = 0.9 * fps + 0.1 / max(now - last, 1e-6) if frames else 0.0
            last = now
            if caption != model.title:  # Game of Life's rule changes with n
                caption = model.title
                pygame.display.set_caption(f"workbench view {caption}")
            text = font.render(model.status(fps), True, (255, 255, 255), (0, 0, 0))
            screen.blit(text, (8, 8))
            pygame.display.flip()
            clock.tick(fps_cap)
            frames += 1
    finally:
        pygame.quit()
    return model
