"""Lab: play a substrate live in the browser, mutate θ, step, reset, and snapshot frames.

The state lives in `LabModel` (param.Parameterized): tests and notebooks drive it directly
(`advance()`, `reset()`, `mutate()`, `set_rule_bits()`, `set_scalar()`), and the page only binds widgets and a
periodic callback to it. How each substrate is edited (`EDITORS`): Lenia and Flow-Lenia m, s, h per kernel and
Particle Life α, β in tables; the Game of Life rule as birth / survival checkboxes; Particle Lenia's six scalars
as sliders; the network weights of Boids, the NCAs, the discrete NCA and Particle Life+ by σ-mutation only.
Run alone with `panel serve dashboards/lab.py`, or with every page via `workbench serve`.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import panel as pn
import param
import torch

from workbench.atomic import atomic_write, fresh_paths, write_png
from workbench.export import to_uint8
from workbench.simulations import SUBSTRATES, make_substrate, random_init_of
from workbench.simulations.base import Deterministic
from workbench.viewer import default_theta, mutated_theta, read_only_params, rule_text

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from workbench.fm import FoundationModel

# frames at the grid's own size where it has one (the page scales them up without smoothing)
RENDER_SIZE = {"lenia": 128, "boids": 224, "plife": 224, "gol": 64, "nca_d1": 128, "nca_d3": 128, "dnca": 128,
               "plenia": 224, "plife_plus": 224, "flow_lenia": 128}
# how the page edits each substrate's θ: "table" (named parameters), "rule" (GoL checkboxes), "sliders"
# (Particle Lenia's scalars) or "mutation" (network weights: σ-mutation only)
GIF_STEPS = 120  # the Lab's GIF: these steps from the start (step 0) of its θ and seed, every second one drawn
EDITORS = {"lenia": "table", "flow_lenia": "table", "plife": "table", "gol": "rule", "plenia": "sliders",
           "boids": "mutation", "nca_d1": "mutation", "nca_d3": "mutation", "dnca": "mutation",
           "plife_plus": "mutation"}
# what the weights of a "mutation" substrate are, for the page
NETWORKS = {"boids": "Boids: the {n} weights of the steering network",
            "nca_d1": "NCA (d = 1): the {n} weights of its 3×3-conv network",
            "nca_d3": "NCA (d = 3): the {n} weights of its 3×3-conv network",
            "dnca": "Discrete NCA: the 8 initial logits and the weights of its network ({n} in all)",
            "plife_plus": "Particle Life+: the {n} weights of the pair MLP"}


class LabModel(param.Parameterized):
    """The Lab page's state: one substrate simulated live (play / pause, steps per frame, θ mutated by σ or edited
    one parameter at a time, Game of Life's rule bit by bit), its latest frame, and optionally a foundation
    model's score of the frames against a prompt or an image. A notebook shows it with frame_view(model),
    param_editor(model) and score_trace(model); snapshots go to snapshot_dir."""

    substrate = param.Selector(default="lenia", objects=list(SUBSTRATES),
                               doc="the substrate simulated; another one starts from its default θ")
    seed = param.Integer(default=0, bounds=(0, 2 ** 32 - 1),  # NumPy's seeds, as the substrates take
                         doc="seed of the initial state (a substrate that starts from its θ's pattern takes none)")
    steps_per_frame = param.Integer(default=1, bounds=(1, 64), doc="simulation steps between two frames shown")
    sigma = param.Number(default=0.1, bounds=(0.0, 2.0), doc="σ of a mutation: θ ← θ + σ·N(0, I)")
    mutation_seed = param.Integer(default=0, bounds=(0, None),
                                  doc="seed of the next mutation (each mutation then moves it on by one)")
    playing = param.Boolean(default=False, doc="the play / pause toggle: whether tick() steps the simulation")
    step_count = param.Integer(default=0, constant=True, doc="steps simulated since the last reset")
    frame = param.Array(doc="the latest frame, uint8 (H, W, 3)")
    fps = param.Number(default=0.0, constant=True, doc="frames shown per second, measured")
    snapshot_dir = param.String(default="snapshots", doc="where snapshot() writes the frame (PNG) and θ (.npy)")
    fm = param.Selector(default="pixels", objects=["pixels", "efficientnet-lite0", "clip", "dino"], label="FM",
                        doc="the foundation model that embeds the frames the score trace scores")
    fm_weights = param.String(default="", label="FM weights",
                              doc="local weights for clip (a file) or dino (a folder), offline")
    prompt = param.String(default="", doc="text target for the score trace (CLIP only)")
    score_every = param.Integer(default=5, bounds=(1, None), doc="frames between two scores")
    scores = param.List(default=[], doc="(step, supervised-target loss) pairs since the last reset")
    message = param.String(default="", doc="what the page tells the user about the last action")
    message_kind = param.Selector(default="info", objects=["info", "success", "danger"],
                                  doc="how the page shows the message: a note, a success, a failure")
    resets = param.Integer(default=0, doc="counts resets (new θ, seed or substrate): views of θ redraw on it")
    diverged_at = param.Integer(default=None, allow_None=True, constant=True,
                                doc="the step by which the state or its frame held a NaN or inf (None: finite); "
                                    "no step, render or score after it until a reset")
    divergence = param.String(default="", constant=True,
                              doc="the page's notice of a diverged simulation and what to do about it (\"\": none)")

    def __init__(self, **params: Any):
        super().__init__(**params)
        self._fm = None
        # the FM kept and the choice it was loaded for change together (a load ends on a worker thread while the
        # page's event loop takes another choice): not the RLock tick holds, which the event loop never waits on
        self._fm_lock = threading.Lock()
        self._target_image: np.ndarray | None = None  # kept: another FM embeds it again
        self._target: np.ndarray | None = None  # its embedding by the FM loaded now
        self._frames = 0
        self._text_target: tuple[str, np.ndarray] | None = None
        self._score_error = ""  # why the trace cannot score (said once, until the FM or the prompt changes)
        # held by anything that replaces θ, the substrate or the state; the page's periodic tick skips a frame
        # rather than wait while a load runs on a worker thread
        self._lock = threading.RLock()
        self._prepared = None  # a substrate built by _show before `substrate` changes (None: build it here)
        self._diverged_exact = False  # diverged_at is the very step (else the frame's last: "by step N")
        # the parameters it diverged with: the notice says whether they were edited since
        self._diverged_params: dict[str, np.ndarray] = {}
        self._switches = 0     # switch requests made (request_switch); only the latest one runs
        self._set_substrate()

    @param.depends("substrate", watch=True)
    def _set_substrate(self):
        with self._lock:
            sub, self._prepared = self._prepared, None
            self.sub = sub if sub is not None and sub.name == self.substrate else make_substrate(self.substrate)
            self.theta = np.asarray(default_theta(self.sub), np.float64)  # GoL: Conway, not the dead rule 0
            self.reset()

    @param.depends("seed", watch=True)
    def reset(self) -> None:
        """Back to the initial state of the current θ and seed."""
        with self._lock:
            self._set_params(self.sub.decode(self.theta))
            self.state = self.sub.init(self._device_params, seed=self.seed)
            with param.edit_constant(self):
                self.step_count, self.fps = 0, 0.0  # another θ or seed: its own speed, said once it plays
            self._frames = 0  # the first score after a reset comes after score_every frames, not at any step
            self.scores = []
            self._diverged(None)  # a new start: finite until a frame says otherwise
            self._render()
            if not self._finite():  # parameters whose very first frame is NaN or inf: said at step 0
                self._diverged(self.state)
            self.resets += 1
        self.dismiss()

    @property
    def params(self) -> Mapping[str, np.ndarray]:
        """The decoded parameters playing, read-only (`dict(model.params)` for a copy to keep): set_param,
        set_cell, set_scalar, set_rule and set_theta change them, θ with them (an array edited in place would not
        have reached the copy the steps take)."""
        return self._params

    def _set_params(self, params: Mapping[str, np.ndarray]) -> None:
        # checked and moved to the substrate's device once per change, not at every frame's step and render: the
        # checks took a quarter of a Boids frame on a CPU (docs/benchmarks.md, "Lab frames")
        with self._lock:
            self._device_params = self.sub.to_device(params)
            self._params = read_only_params(params)
            if self.diverged_at is not None:  # the notice's advice follows the parameters edited since
                with param.edit_constant(self):
                    self.divergence = self.divergence_text()

    def dismiss(self) -> None:
        """The message about an earlier action goes once another one is taken (a reset: a new θ, seed or
        substrate; the page's edits and steps): a refusal stayed on show over later actions that worked. The
        score's standing error stays: the trace scores nothing until the FM, its weights or the prompt change (said
        by advance, or by the page once the FM loads: _score_error is still "" then, score_problem() is not)."""
        standing = self.standing_problem()
        if self.message and not (standing and self.message == f"no FM score: {standing}"):
            self.tell("")

    def _show(self, substrate: str) -> None:
        """Switch to `substrate` (its default θ), building it first: if that fails nothing has changed."""
        with self._lock:
            if substrate != self.substrate:
                self._prepared = make_substrate(substrate)
                self.substrate = substrate

    def request_switch(self) -> int:
        """A number for the next `switch`: a pick overtaken by a later one (arrow keys through the menu, each
        change its own worker thread) then does nothing instead of finishing last."""
        self._switches += 1
        return self._switches

    def switch(self, substrate: str, request: int | None = None) -> bool:
        """Show `substrate` (its default θ) and compile its step: what the page's substrate menu does on a
        worker thread, so that neither the switch nor the first frame played compiles on the event loop.
        False (and nothing done) when `request` is not the latest request_switch number."""
        with self._lock:
            if request is not None and request != self._switches:
                return False
            self._show(substrate)
            self.warm_up()
        return True

    def warm_up(self) -> None:
        """Compile the current substrate's step for steps_per_frame (the first play would otherwise do it in
        the page's periodic callback): one frame's steps from the current state, thrown away — steps are pure,
        the state on show does not move."""
        with self._lock:
            self.sub.step(self.state, self._device_params, self.steps_per_frame)

    def set_theta(self, theta: np.ndarray, seed: int | None = None) -> None:
        """Play θ from its initial state (of `seed`, when given: e.g. the one a population member's thumbnail
        came from). One θ of the substrate's length: a population (P, n) is refused (the page plays one; kept,
        it broke every later step, render and snapshot)."""
        theta = np.asarray(theta, np.float64)
        if theta.shape != (self.sub.n_params,):
            raise ValueError(f"θ must be one vector of {self.sub.n_params} numbers for {self.sub.name}, got shape "
                             f"{theta.shape}" + (": a population; pick one member (e.g. θ[0])" if theta.ndim == 2
                                                 else ""))
        with self._lock:
            self.sub.decode(theta)  # checks values before anything changes
            self.theta = theta
            if seed is not None:
                with param.discard_events(self):  # one reset, below, not one for the old θ first
                    self.seed = int(seed)
            self.reset()

    def load_run(self, runs_dir: str, run_id: str, member: int | str | None = None) -> None:
        """The best θ of a stored ASAL run (and its substrate), or population member `member` of a finished
        illumination (`/lab?run=ID&member=K`: the QD page's MAP-Elites cells), from the initial state its thumbnail
        came from when the run kept that seed. A run that does not exist, one of another kind (a merge recipe) or
        one without a best θ yet raises ValueError with the reason."""
        from workbench.asal.driver import population_member
        from workbench.runs import RunStore, a_kind_run

        run_id = run_id.strip()
        if not run_id:
            raise ValueError("give a run id (the Runs page lists them)")
        run = RunStore(runs_dir).open(run_id)  # RunError (a ValueError) names some runs that do exist
        info = run.info
        ev = info.get("config", {}).get("eval")
        if not isinstance(ev, dict) or "substrate" not in ev:
            kind = info.get("kind")
            where = {"merge": "; open it on the Merge page", "qd": "; open it on the QD archives page",
                     "experts": "; open it on the Experts page", "adapt": "; open it on the Experts page",
                     "namm": "; open it on the NAMM page"}.get(kind, "")
            raise ValueError(f"run {run_id!r} is {a_kind_run(kind)}, not a simulation search: it has no θ to "
                             f"play{where}")
        seed = None
        if member is not None:
            theta, seed = population_member(run, member)
        else:
            best = run.path / "best.npy"
            if not best.exists():
                from workbench.figures import no_best_yet

                raise ValueError(no_best_yet(run))  # a killed run said "running" (run.json's word): now its resume
            theta = run.read_array("best.npy")
        with self._lock:
            self._show(ev["substrate"])
            # a member from its thumbnail's initial state; a best θ from the one it scored from, as best.png and
            # best.mp4 show it (asal.driver.best_seed)
            from workbench.asal.driver import best_seed

            self.set_theta(theta, seed=best_seed(run, info) if member is None else seed)

    def open_run(self, runs_dir: str, run_id: str, member: int | str | None = None) -> bool:
        """load_run for the page (on a worker thread, which also compiles the step: not in the first tick):
        success or the reason it failed goes to `message`; True if loaded."""
        try:
            self.load_run(runs_dir, run_id, member)
        except ValueError as exc:
            self.param.update(message=str(exc), message_kind="danger")
            return False
        what = "the best θ" if member is None else f"population member {member} (initial-state seed {self.seed})"
        self.param.update(message=f"loaded {what} of {run_id.strip()} ({self.substrate})", message_kind="success")
        try:
            self.warm_up()
        except Exception as exc:  # noqa: BLE001 - e.g. out of GPU memory: said, and θ stays loaded
            self.tell(f"loaded {what} of {run_id.strip()}, but its first step failed: {exc}", "danger")
        return True

    def default_theta(self) -> None:
        """Back to the substrate's default θ (θ = 0, the reference; Game of Life: Conway's B3/S23)."""
        self.set_theta(default_theta(self.sub))

    def random_init(self, seed: int | None = None) -> None:
        """The substrate's random start (NCA, discrete NCA, Particle Life+: the reference's flax initialisation;
        Particle Lenia: θ ~ N(0, I); Game of Life: a uniformly drawn rule), seeded by `seed` (default: the mutation
        seed, then moved on by one)."""
        draw = random_init_of(self.sub)
        if draw is None:
            raise ValueError(f"{self.substrate} has no random initialisation; use σ-mutation (mutate) instead")
        if seed is None:
            seed, self.mutation_seed = self.mutation_seed, self.mutation_seed + 1
        self.set_theta(draw(np.random.default_rng(seed)))

    # --- Game of Life: the rule as births / survivals ---------------------------------------------------

    def _only(self, substrate: str, what: str) -> None:
        if self.substrate != substrate:
            raise ValueError(f"only {substrate} has {what}; {self.substrate} has θ of {self.sub.n_params} numbers")

    @property
    def rule(self) -> int:
        """The Game of Life rule on show (ValueError for another substrate)."""
        self._only("gol", "a rule")
        return int(self.theta[0])

    def rule_bits(self) -> tuple[list[int], list[int]]:
        """(births, survivals): the neighbour counts n = 0..8 at which a dead cell is born (bit n of the rule)
        and a live one survives (bit 9 + n)."""
        rule = self.rule
        return [n for n in range(9) if rule >> n & 1], [n for n in range(9) if rule >> (9 + n) & 1]

    def set_rule_bits(self, births: Iterable[int], survivals: Iterable[int]) -> None:
        """The rule with these birth and survival neighbour counts (each in 0..8); the simulation goes on from its
        current grid under the new rule."""
        rule = 0
        for offset, counts, what in ((0, births, "birth"), (9, survivals, "survival")):
            for n in counts:
                if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n <= 8:
                    raise ValueError(f"a {what} count is a number of live neighbours from 0 to 8, got {n!r}")
                rule |= 1 << (offset + int(n))
        self.set_rule(rule)

    def set_rule(self, rule: int) -> None:
        """Play rule `rule` ∈ [0, 2^18) from the current grid (θ = [rule])."""
        self._only("gol", "a rule")
        theta = np.array([rule], np.float64)
        with self._lock:
            self._set_params(self.sub.decode(theta))  # checks the range
            self.theta = theta

    @property
    def rule_name(self) -> str:
        """The Game of Life rule on show in B/S notation, e.g. 'B3/S23' (ValueError for another substrate)."""
        return rule_text(self.rule)

    # --- Particle Lenia: six scalars, θ = log(value / base) --------------------------------------------

    def scalar_names(self) -> list[str]:
        """Particle Lenia's six scalars in θ's order: mu_k, sigma_k, w_k, mu_g, sigma_g, c_rep (ValueError for another
        substrate)."""
        from workbench.simulations.plenia import PARAM_NAMES

        self._only("plenia", "scalar sliders")
        return list(PARAM_NAMES)

    def set_scalar(self, name: str, value: float) -> None:
        """Particle Lenia: set a decoded scalar (μ_K, σ_K, w_K, μ_G, σ_G, c_rep) to `value` > 0; θ_i becomes
        log(value / base_i). The swarm goes on from where it is."""
        from workbench.simulations.plenia import PARAM_BASE

        names = self.scalar_names()
        if name not in names:
            raise ValueError(f"plenia has no scalar {name!r}; it has {', '.join(names)}")
        value = float(value)
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive number (θ = log(value / base)), got {value}")
        i = names.index(name)
        theta = self.theta.copy()
        theta[i] = np.log(value / PARAM_BASE[i])
        with self._lock:
            self._set_params(self.sub.decode(theta))
            self.theta = theta

    def tell(self, message: str, kind: str = "info") -> None:
        """Set the page's message and how it shows (kind: "info", "success" or "danger"); "" clears it."""
        self.param.update(message=message, message_kind=kind)

    def set_param(self, name: str, value: ArrayLike) -> None:
        """Edit a named physical parameter (e.g. Lenia m/s/h per kernel, Particle Life alpha/beta) in place;
        the simulation goes on from its current state with the new dynamics. θ follows (Substrate.theta_with:
        the numbers changed, each within θ's reach), so a snapshot's θ, a reset and a GIF play what was edited."""
        shape = np.shape(self._param(name))
        value = np.asarray(value, np.float64)
        if value.shape != shape:
            raise ValueError(f"{name} has shape {shape}, got {value.shape}")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{name} takes finite numbers (a cell left empty is none): kept the values it had")
        if self.substrate == "plenia":  # its θ is known from the values: keep the two in step
            self.set_scalar(name, float(value))
            return
        with self._lock:
            theta = self.sub.theta_with(self.theta, name, value)
            self._set_params(self.sub.decode(theta))
            self.theta = theta

    def _param(self, name: str) -> np.ndarray:
        """The parameter `name` as it plays, or one error naming those there are."""
        if name not in self.params:
            raise ValueError(f"{self.substrate} has no parameter {name!r}; it has {sorted(self.params)}")
        return self.params[name]

    def set_cell(self, name: str, index: tuple[int, ...], value: float) -> None:
        """One number of a parameter edited (the Lab's table cell `index` of `name`), the others as they are."""
        current = np.array(self._param(name), np.float64)
        if value is None or not np.isfinite(float(value)):
            raise ValueError(f"{name} takes finite numbers (a cell left empty is none): kept the value it had")
        current[index] = float(value)
        self.set_param(name, current)

    def set_target_image(self, image: np.ndarray | None) -> None:
        """A target image for the score trace (any FM); None goes back to the prompt."""
        self._target_image = None if image is None else np.asarray(image)[..., :3]
        fm = None if image is None else self.load_fm()
        target = None if fm is None else fm.embed_images(self._target_image)
        with self._fm_lock:  # another FM chosen meanwhile: score() embeds the image again with it
            self._target = target if fm is None or fm is self._fm else None
        self.scores, self._score_error = [], ""

    @param.depends("fm", "fm_weights", watch=True)
    def _reset_fm(self):
        # the targets' embeddings go with the FM (another one's are of another size): embedded again on use
        with self._fm_lock:
            self._fm, self._text_target, self._target = None, None, None
        self.scores = []
        self._score_error = ""

    @param.depends("prompt", watch=True)
    def _reset_scores(self):
        self.scores, self._score_error = [], ""

    def load_fm(self) -> FoundationModel:
        """The FM (loaded once per process, shared with the other sessions and the searches beside them: fm.shared_fm;
        the page calls this on a worker thread when the choice changes)."""
        fm = self._fm  # read once: another choice may clear it meanwhile
        if fm is None:
            from workbench.fm import shared_fm, weights_for

            asked = (self.fm, self.fm_weights)
            fm = shared_fm(self.fm, weights=weights_for(self.fm, self.fm_weights or None))
            with self._fm_lock:
                # another FM chosen while this one loaded: it is not kept (a slow CLIP load ended after pixels was
                # chosen and scored as "pixels")
                if (self.fm, self.fm_weights) == asked:
                    self._fm = fm
        return fm

    @property
    def fm_loaded(self) -> bool:
        """Whether this session holds the FM chosen (load_fm returned it since the FM or its weights last changed)."""
        return self._fm is not None

    def standing_problem(self) -> str:
        """Why the trace scores nothing until the FM, its weights or the prompt change ("" when it can score): an
        error met scoring or loading the FM, or the FM loaded unable to read the target set."""
        return self._score_error or self.score_problem()

    def fm_failed(self, why: str) -> None:
        """The FM chosen cannot load: the trace scores nothing (and says so) until the FM or its weights change."""
        self._score_error = why
        self.param.trigger("scores")

    def wants_score(self) -> bool:
        """Whether there is a target to score against: an uploaded image or a prompt that is not blank."""
        return self._target_image is not None or bool(self.prompt.strip())

    def score_problem(self) -> str:
        """Why the FM loaded cannot score the target set ("" when it can, or when no FM is loaded yet): a prompt
        with an FM that has no text encoder."""
        if self._fm is None or self._fm.has_text or self._target_image is not None or not self.prompt.strip():
            return ""
        return f"FM {self.fm} has no text encoder: for a prompt choose FM clip, or upload a target image"

    def score(self) -> float | None:
        """Supervised-target loss of the current frame (its rendered floats, as searches embed them) against the
        prompt or target image (None: no target, or a diverged simulation, whose black frame is no picture)."""
        if not self.wants_score() or self.diverged_at is not None:
            return None
        import torch

        from workbench.asal.evaluate import unit_frames
        from workbench.asal.scores import supervised_target

        fm = self.load_fm()
        if problem := self.score_problem():  # said as the page says it (the FM's own message names CLI flags)
            raise ValueError(problem)
        if self._target_image is not None and self._target is None:
            self._target = fm.embed_images(self._target_image)
        target = self._target
        if target is None:
            prompt = self.prompt.strip()
            if self._text_target is None or self._text_target[0] != prompt:
                self._text_target = (prompt, fm.embed_texts([prompt]))
            target = self._text_target[1]
        frames = unit_frames(torch.as_tensor(np.asarray(self._rendered, np.float32))).numpy()
        return float(supervised_target(fm.embed_images(frames)[None], target)[0])

    def mutate(self, seed: int | None = None) -> None:
        """θ ← θ + σ·N(0, I) with the noise drawn from `seed` (default: the mutation seed, which then moves on by
        one, so pressing again gives another θ and the same seed the same θ), then reset. Game of Life: the rule
        with bits flipped instead (σ plays no part)."""
        if seed is None:
            seed, self.mutation_seed = self.mutation_seed, self.mutation_seed + 1
        self.set_theta(mutated_theta(self.sub, self.theta, self.sigma, np.random.default_rng(seed)))

    def advance(self, score_needs_fm: bool = True) -> None:
        """One displayed frame: steps_per_frame simulation steps, then a render (and every score_every frames
        a score; with score_needs_fm=False only once the FM is loaded, which the page does off the loop).

        A state or frame that holds a NaN or inf (checked once per frame, not per step) has diverged: diverged_at
        and `divergence` say so, playing stops, and nothing more is stepped, rendered or scored until a reset (a
        NaN state stays NaN: the steps only burnt CPU, and the FM scored its black frame like any picture)."""
        start = time.perf_counter()
        with self._lock:
            if self.diverged_at is not None:
                return
            before = self.state
            self.state = self.sub.step(self.state, self._device_params, self.steps_per_frame)
            with param.edit_constant(self):
                self.step_count += self.steps_per_frame
            self._render()
            if not self._finite():
                self._diverged(before)
        if self.diverged_at is not None:
            self.playing = False
            return
        self._frames += 1
        if self._frames % self.score_every == 0 and (score_needs_fm or self.fm_loaded) and not self._score_error:
            try:
                loss = self.score()
            except ValueError as exc:  # a prompt the FM has no text encoder for: said once, the frames go on
                self._score_error, loss = str(exc), None
                self.tell(f"no FM score: {exc}", "danger")
                self.param.trigger("scores")  # the trace says it scores nothing (it kept "scores appear …")
            if loss is not None:
                self.scores = [*self.scores[-499:], (self.step_count, loss)]
        elapsed = time.perf_counter() - start
        with param.edit_constant(self):
            self.fps = 0.8 * self.fps + 0.2 / max(elapsed, 1e-6) if self.fps else 1.0 / max(elapsed, 1e-6)

    def tick(self) -> None:
        """What the page's periodic callback calls: advance while playing, skipping the frame while a load
        holds the model (it runs on a worker thread; the event loop must not wait for it)."""
        if not self.playing or not self._lock.acquire(blocking=False):
            return
        if self.diverged_at is not None:  # play pressed on a diverged state: back to paused, nothing stepped
            self._lock.release()
            self.playing = False
            return
        try:
            self.advance(score_needs_fm=False)
        finally:
            self._lock.release()

    def snapshot(self) -> Path:
        """Save the current frame as PNG and θ as .npy (both atomically); returns the PNG path."""
        out = Path(self.snapshot_dir)
        out.mkdir(parents=True, exist_ok=True)
        # a new θ starts again at step 0: a second snapshot of the same name keeps the first (…-2, …-3)
        npy, png = fresh_paths(out / f"{self.substrate}-seed{self.seed}-step{self.step_count}", (".npy", ".png"))
        atomic_write(npy, lambda p: np.save(p, self.theta))
        try:
            return write_png(png, self.frame)
        except BaseException:  # (a disk full between the two) no θ without its frame: the pair or nothing
            npy.unlink(missing_ok=True)
            raise

    def _render(self) -> None:
        frame = self.sub.render(self.state, self._device_params, size=RENDER_SIZE.get(self.substrate, 224))
        self.frame = to_uint8(frame)
        self._rendered = frame  # the floats, which score() hands the FM

    def _finite(self) -> bool:
        """Whether the state's floating arrays and the rendered frame hold only finite numbers (as the searches'
        evaluate._diverged: a particle renderer can skip a NaN particle and draw a finite frame). Once per frame:
        tens of microseconds at the Lab's sizes (the report of the change measured them)."""
        return bool(np.isfinite(self._rendered).all()) and _finite_state(self.state)

    def _diverged(self, before) -> None:
        """Mark the state on show diverged (before: the state one frame back, the state itself at a reset, or None
        for "not diverged": a reset clears the notice).

        The step is found by replaying that frame's steps one at a time from `before`, once: deterministic
        substrates only (a stochastic one's replay draws other noise) and only the state is checked (a frame
        rendered non-finite from a finite state says "by" the frame's step)."""
        with param.edit_constant(self):
            if before is None:
                self._diverged_params = {}
                self.param.update(diverged_at=None, divergence="")
                return
            at, exact = self.step_count, self.steps_per_frame == 1 or before is self.state
            if not exact and isinstance(self.sub, Deterministic):
                state = before
                for n in range(self.step_count - self.steps_per_frame + 1, self.step_count + 1):
                    state = self.sub.step(state, self._device_params, 1)
                    if not _finite_state(state):
                        at, exact = n, True
                        break
            self._diverged_exact = exact
            self._diverged_params = {k: np.array(v) for k, v in self._params.items()}
            self.diverged_at = at
            self.divergence = self.divergence_text()

    def diverged_text(self) -> str:
        """"the simulation diverged (NaN or inf) at step N" ("by step N" where N is the frame's last step and the
        divergence came within its steps_per_frame), "" while the state is finite."""
        if self.diverged_at is None:
            return ""
        return f"the simulation diverged (NaN or inf) {'at' if self._diverged_exact else 'by'} step {self.diverged_at}"

    def divergence_text(self) -> str:
        """The page's notice of a diverged simulation ("" while finite), with what to do: the Particle Lenia
        scalars set past their sliders' range named (typed: the sliders themselves reach no divergence), else a
        reset (of the parameters edited since, or, with the same θ, after taking another one)."""
        said = self.diverged_text()
        if not said:
            return ""
        if self.substrate == "plenia":
            advice = []
            for name in self.scalar_names():
                value, (low, high) = float(self.params[name]), scalar_range(name)
                label = SCALAR_LABELS[name].split(" ")[0]
                if value > high * (1 + 1e-6):  # (float32's rounding of a slider's end is not past it)
                    advice.append(f"lower {label} (now {value:.4g}; its slider ends at {high:.4g})")
                elif value < low * (1 - 1e-6):
                    advice.append(f"raise {label} (now {value:.4g}; its slider starts at {low:.4g})")
            if advice:
                return f"{said}: {', '.join(advice)}, then reset"
        edited = set(self._params) != set(self._diverged_params) or any(
            not np.array_equal(v, self._diverged_params[k]) for k, v in self._params.items())
        if edited:
            return f"{said}: reset to play the parameters now on show from step 0"
        return (f"{said}: reset (the same θ may diverge again), or change θ (the editor, then reset; the preset; a "
                f"σ-mutation)")


def _finite_state(state) -> bool:
    """Whether a state's floating arrays hold only finite numbers. On the CPU through NumPy's view of them: torch's
    isfinite took 75 µs for a 128² Lenia world (NumPy: 6 µs), a twentieth of a frame of the cheaper substrates."""
    for a in state.arrays.values():
        if a.is_floating_point():
            if not (np.isfinite(a.detach().numpy()).all() if a.device.type == "cpu" else bool(torch.isfinite(a).all())):
                return False
    return True


def rgba(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) -> (H, W) uint32 RGBA, what Bokeh's image_rgba draws (its row 0 at the bottom)."""
    h, w = image.shape[:2]
    packed = np.empty((h, w), np.uint32)
    view = packed.view(np.uint8).reshape(h, w, 4)
    view[..., :3], view[..., 3] = image, 255
    return packed


def status_text(model: LabModel) -> str:
    """The Lab's status line: playing or paused, the step, and the frames per second the substrate computes
    (and renders; the page shows at most one per period_ms)."""
    if model.diverged_at is not None:  # no frames computed any more: the speed of the last ones said nothing
        return f"stopped · step **{model.step_count}** · **diverged** (NaN or inf)"
    return (f"{'playing' if model.playing else 'paused'} · step **{model.step_count}** · "
            f"{model.fps:.1f} frames/s computed")


def status_view(model: LabModel, every: float = 0.25) -> pn.pane.Markdown:
    """status_text as a Markdown pane. While the simulation plays it redraws at most every `every` seconds:
    redrawn at each frame (twice: the step, then the speed), Panel rendered the text and rebuilt the pane's
    stylesheets each time, half of a Boids frame's time on the event loop, for numbers no one reads at 30 frames
    a second. A pause, a step or a reset shows at once."""
    pane = pn.pane.Markdown(status_text(model), margin=(0, 10))
    shown_at = [-math.inf]

    def update(*_):
        now = time.monotonic()
        if model.playing and model.step_count and now - shown_at[0] < every:
            return
        shown_at[0] = now
        pane.object = status_text(model)

    model.param.watch(update, ["step_count", "fps", "playing", "diverged_at"])
    return pane


def frame_view(model: LabModel, size: int = 512) -> pn.pane.Bokeh:
    """A Bokeh RGBA image of the model's frame, updated in place (no new plot per frame); safe to update from
    a worker thread (the change is handed to the page's event loop)."""
    from bokeh.models import ColumnDataSource
    from bokeh.plotting import figure

    from workbench.dashboards.shell import PageThread

    def oriented(frame: np.ndarray) -> np.ndarray:
        # image axis 0 is x in the reference layout, and Bokeh draws row 0 at the bottom
        return rgba(frame).T[::-1].copy()

    source = ColumnDataSource({"image": [oriented(model.frame)]})
    fig = figure(width=size, height=size, x_range=(0, 1), y_range=(0, 1), toolbar_location=None,
                 match_aspect=True, name="lab-frame", min_border=0, outline_line_color=None,
                 html_attributes={"aria-label": "the simulation as it plays"})  # its name for a reader
    fig.axis.visible = False
    fig.grid.visible = False
    fig.image_rgba(image="image", x=0, y=0, dw=1, dh=1, source=source)
    page = PageThread()

    def update(event):  # the model's frame as it is when this runs: a queued update must not draw an older one
        source.data = {"image": [oriented(model.frame)]}

    model.param.watch(page.wrap(update), "frame")
    return pn.pane.Bokeh(fig, margin=0)


def scalar_range(name: str) -> tuple[float, float]:
    """The span of Particle Lenia's slider for scalar `name`: base/10 .. 2·base (θ_i from −2.3 to 0.7, the reference
    value mid-way). A typed value may go beyond it; divergence_text names those that do."""
    from workbench.simulations.plenia import PARAM_BASE, PARAM_NAMES

    base = float(PARAM_BASE[PARAM_NAMES.index(name)])
    return base / 10, 2 * base


SCALAR_LABELS = {"mu_k": "μ_K (kernel peak distance)", "sigma_k": "σ_K (kernel width)", "w_k": "w_K (kernel weight)",
                 "mu_g": "μ_G (growth optimum)", "sigma_g": "σ_G (growth width)", "c_rep": "c_rep (repulsion)"}


def param_editor(model: LabModel) -> pn.viewable.Viewable:
    """The editor of the substrate on show (see EDITORS): tables of named parameters (Lenia and Flow-Lenia m,
    s, h per kernel; Particle Life α (6×6, coloured like a heatmap) and β), the Game of Life rule as birth and
    survival checkboxes, Particle Lenia's six scalars as sliders, and for network weights a σ-mutation panel."""
    holder = pn.Column(sizing_mode="stretch_width")

    def guarded(action, undo=None):
        model.dismiss()
        try:
            action()
        except ValueError as exc:
            model.tell(str(exc), "danger")
            if undo is not None:
                undo()

    from workbench.dashboards.shell import model_watchers

    following: list = []  # the watchers the editor on show put on the model (from_param, checked_int_input)

    def build(*_):
        # the editor replaced stops following the model: its widgets' links (Panel's from_param, the int fields'
        # watchers) stayed on the model for good, six more at every reset of a σ-mutation editor (a mutation, a
        # seed, a θ loaded), each keeping its widgets and setting them at every change of σ or the mutation seed,
        # for as long as the tab stayed open (a helper's leak audit). The page adds its own watchers when it is
        # built, not while it runs: what appeared on the model during the editor's build is the editor's.
        for watcher in following:
            model.param.unwatch(watcher)
        before = {id(w) for w in model_watchers(model)}
        kind = EDITORS.get(model.substrate, "mutation")
        editor = {"table": _table_editor, "rule": _rule_editor, "sliders": _scalar_editor,
                  "mutation": _mutation_editor}[kind](model, guarded)
        following[:] = [w for w in model_watchers(model) if id(w) not in before]
        holder[:] = editor

    build()
    model.param.watch(build, "resets")  # a new θ, seed or substrate
    return holder


def _table_editor(model: LabModel, guarded) -> list:
    import pandas as pd

    def frame() -> pd.DataFrame:  # shown to 4 places (float32's noise digits crowded the cells); edits are exact
        p = model.params
        if model.substrate in ("lenia", "flow_lenia"):
            return pd.DataFrame({"m": p["m"], "s": p["s"], "h": p["h"]}).astype(float).round(4).rename_axis("kernel")
        df = pd.DataFrame(p["alpha"], columns=[f"α·{j}" for j in range(6)]).astype(float).round(3)
        df["β"] = np.round(p["beta"].astype(float), 4)
        return df.rename_axis("i")  # colour i (a longer name was cut to "c…")

    df = frame()
    # fit_columns: Particle Life's eight columns share the editor's width (laid out to their data, they ran
    # past it and the table scrolled sideways); no sort arrows in the headers, which then cut "α·0" to "α…".
    # α as numbers on a diverging background (attraction red, repulsion blue): progress bars filled every cell
    # green whatever its value
    alphas = [c for c in df.columns if c.startswith("α")]
    table = pn.widgets.Tabulator(df, label="parameters", show_index=True, height=230 if len(df) > 6 else 200,
                                 sizing_mode="stretch_width", layout="fit_columns",
                                 configuration={"columnDefaults": {"headerSort": False}},
                                 formatters={c: {"type": "money", "precision": 2, "symbol": ""} for c in alphas})
    if alphas:
        table.style.background_gradient(cmap="RdBu_r", vmin=-1.5, vmax=1.5, subset=alphas)

    def apply(event) -> None:  # the one cell edited, the others as the model holds them (not their rounding)
        row, column = int(event.row), str(event.column)
        if column.startswith("α·"):
            model.set_cell("alpha", (row, int(column.removeprefix("α·"))), event.value)
        else:
            model.set_cell({"β": "beta"}.get(column, column), (row,), event.value)

    def put_back() -> None:  # the refused cell shows the value kept again (an emptied one showed "-")
        table.value = frame()

    table.on_edit(lambda event: guarded(lambda: apply(event), put_back))
    ranges = ("m: growth centre, s: growth width, h: kernel weight, each within θ's reach of the pattern's value"
              if model.substrate in ("lenia", "flow_lenia") else
              "α·j: colour i's attraction to colour j, from −1.5 to 1.5; β: colour i's repulsion radius, 0 to 1")
    return [pn.pane.Markdown("**Parameters** (edit a cell; the simulation goes on with them, and θ with it)"),
            table, pn.pane.Markdown(ranges, styles={"color": "#666", "font-size": "12px"})]


def _rule_editor(model: LabModel, guarded) -> list:
    births, survivals = model.rule_bits()
    options = {str(n): n for n in range(9)}
    boxes = {what: pn.widgets.CheckBoxGroup(label=what, options=options, value=value, inline=True,
                                            css_classes=[f"gol-{what}"], sizing_mode="stretch_width")
             for what, value in (("births", births), ("survivals", survivals))}
    name = pn.pane.Markdown(_rule_caption(model), sizing_mode="stretch_width")

    def on_change(event):
        guarded(lambda: model.set_rule_bits(boxes["births"].value, boxes["survivals"].value))
        name.object = _rule_caption(model)

    for box in boxes.values():
        box.param.watch(on_change, "value")
    return [pn.pane.Markdown("**Rule** (live neighbours 0–8; the grid goes on under the new rule)"),
            pn.pane.Markdown("born with", margin=(0, 10)), boxes["births"],
            pn.pane.Markdown("survives with", margin=(0, 10)), boxes["survivals"], name]


def _rule_caption(model: LabModel) -> str:
    return f"rule **{model.rule_name}** = {model.rule} (Conway: B3/S23 = 6152)"


def _scalar_editor(model: LabModel, guarded) -> list:
    from workbench.simulations.plenia import PARAM_BASE

    sliders, syncing = [], [False]
    names = model.scalar_names()
    for i, name in enumerate(names):
        base, value = float(PARAM_BASE[i]), float(model.params[name])
        # the slider spans scalar_range(name); a typed value may go beyond (and may make the swarm diverge: the
        # page then says which value to lower or raise). No bound on the typed value: the browser's input silently
        # kept the old one below its bound; set_scalar refuses a value that is not positive, said on the page, and
        # the slider goes back
        start, end = scalar_range(name)
        slider = pn.widgets.EditableFloatSlider(label=SCALAR_LABELS[name], start=start, end=end,
                                                step=base / 100, value=value, format="0.0000",
                                                css_classes=[f"scalar-{name}"], sizing_mode="stretch_width")
        slider.param.watch(lambda event, n=name, s=slider: syncing[0] or guarded(
            lambda: model.set_scalar(n, event.new), undo=lambda: _put_back(s, float(model.params[n]))), "value")
        sliders.append(slider)

    def _put_back(slider, value: float) -> None:  # the model's value again, without setting it once more
        syncing[0] = True
        try:
            slider.value = value
        finally:
            syncing[0] = False

    def random_theta():  # the model draws; its reset rebuilds this editor with the new values (setting these,
        model.random_init()  # now removed, sliders made Bokeh warn "reference already known")

    draw = pn.widgets.Button(label="random θ ~ N(0, I)", sizing_mode="stretch_width")
    draw.on_click(lambda e: guarded(random_theta))
    return [pn.pane.Markdown("**Parameters** (decoded values; θ = log(value / base); the swarm goes on with "
                             "them)"), *sliders, draw]


def _mutation_editor(model: LabModel, guarded) -> list:
    what = NETWORKS.get(model.substrate, "{n} weights").format(n=model.sub.n_params)
    sigma = pn.widgets.FloatSlider.from_param(model.param.sigma, label="σ", sizing_mode="stretch_width")
    from workbench.dashboards.shell import checked_int_input

    seed = checked_int_input(model, "mutation_seed", lambda why: model.tell(why, "danger"), label="mutation seed",
                             sizing_mode="stretch_width")
    mutate = pn.widgets.Button(label="mutate", color="primary", sizing_mode="stretch_width")
    mutate.on_click(lambda e: guarded(model.mutate))
    buttons = [mutate]
    if hasattr(model.sub, "flax_init_theta"):  # θ = 0 is the all-zero network: a random start shows more
        init = pn.widgets.Button(label="random init", sizing_mode="stretch_width")
        init.on_click(lambda e: guarded(model.random_init))
        buttons.append(init)
    return [pn.pane.Markdown(f"{what} change by σ-mutation: θ ← θ + σ·N(0, I), the noise drawn from the "
                             f"mutation seed (which moves on by one each time)."),
            sigma, seed, pn.Row(*buttons, sizing_mode="stretch_width")]


def score_trace(model: LabModel) -> pn.viewable.Viewable:
    """The FM score trace, or a placeholder saying what it needs; one plot pane, its curve replaced in place."""
    import holoviews as hv

    from workbench.dashboards.shell import placeholder
    from workbench.figures import holoviews, whole_numbers

    holoviews()
    width, height = 380, 220
    pane = pn.pane.HoloViews(None, backend="bokeh", width=width, height=height)
    holder = pn.Column(width=width + 20, height=height + 10)

    def update(*_):
        if model.diverged_at is not None and model.wants_score():  # the scores before it are not what is on show
            holder[:] = [placeholder(f"no score: {model.diverged_text()}; its frame (black) is no picture to "
                                     f"score", width=width, height=height)]
            return
        if not model.scores:
            problem = model.standing_problem()
            hint = (f"no score: {problem} (see the message above)" if problem and model.wants_score() else
                    "scores appear every few frames while playing" if model.wants_score()
                    else "type a prompt or upload a target image (sidebar) to trace an FM score")
            holder[:] = [placeholder(hint, width=width, height=height)]
            return
        curve = hv.Curve(model.scores, "step", "loss").opts(width=width, height=height, color="#2f5d8a",
                                                            title="supervised-target loss", line_width=2,
                                                            backend="bokeh")
        if len(model.scores) < 30:  # its points drawn: a first score alone, a line of one point, drew nothing
            curve = curve * hv.Scatter(model.scores, "step", "loss").opts(color="#2f5d8a", size=5, backend="bokeh")
        pane.object = whole_numbers(curve)
        if holder.objects != [pane]:
            holder[:] = [pane]

    update()
    model.param.watch(update, ["scores", "prompt", "diverged_at"])
    return holder


def lab_page(model: LabModel | None = None, runs_dir: str = "runs", period_ms: int = 30,
             standalone: bool = False) -> pn.template.FastListTemplate:
    """The /lab page: `model` (a new LabModel when None) simulated live, a frame every `period_ms` while it plays;
    snapshots in `runs_dir`/snapshots, ?run=ID plays a run's θ. standalone: a page of its own, without the links to
    the others."""
    from workbench.dashboards.shell import (
        FITS_WHEN_NARROW,
        SCROLLS_WHEN_NARROW,
        PageThread,
        address,
        cannot_write,
        checked_int_input,
        download_button,
        failed,
        in_page_words,
        live,
        off_loop,
        offer,
        plain,
        query_value,
        run_asked,
        run_while,
        section,
        served_location,
        shell,
    )

    model = model or LabModel(snapshot_dir=str(Path(runs_dir) / "snapshots"))
    # a Column around the Bokeh pane carries the busy spinner (Panel cannot set `loading` on a Bokeh pane)
    frame = pn.Column(frame_view(model, size=480), margin=0)
    trace = score_trace(model)
    alert = live(pn.pane.Alert("", sizing_mode="stretch_width", visible=False, margin=(0, 10)))

    def show_message(*_):
        alert.param.update(object=plain(model.message), alert_type=model.message_kind,
                           visible=bool(model.message))

    model.param.watch(show_message, ["message", "message_kind"])
    # a diverged simulation's notice stays until a reset (the message above goes with the next action, and the
    # black frame is all the page showed of it before)
    diverged = live(pn.pane.Alert(plain(model.divergence), alert_type="warning", sizing_mode="stretch_width",
                                  visible=bool(model.divergence), margin=(0, 10), css_classes=["lab-diverged"]))

    def show_divergence(*_):
        diverged.param.update(object=plain(model.divergence), visible=bool(model.divergence))

    model.param.watch(show_divergence, "divergence")

    # --- simulation
    # the substrate menu switches on a worker thread: a substrate's first use compiles its kernels (seconds on a
    # cold Taichi cache), which on the event loop would stall every session of the server. A switch or a load holds
    # the model meanwhile; `held` (filled below) are the controls whose handlers would wait for it on the event
    # loop: their spinners keep clicks off them until it is done
    held: list[pn.viewable.Viewable] = []
    substrate = pn.widgets.Select(label="Substrate", options=list(model.param.substrate.objects), value=model.substrate,
                                  sizing_mode="stretch_width")

    async def on_substrate(event):
        if event.new == model.substrate:
            return
        request = model.request_switch()
        try:
            await off_loop(model.switch, event.new, request, busy=[frame, *held])
        except Exception as exc:  # noqa: BLE001 - a substrate that cannot be built here (say, no GPU memory)
            model.tell(f"cannot show {event.new}: {exc}", "danger")
            substrate.value = model.substrate  # the menu back to what is on show

    substrate.param.watch(on_substrate, "value")
    page = PageThread()
    # a load switches too; the menu takes the model's substrate as it is when this runs, not as it was when queued
    model.param.watch(page.wrap(lambda e: setattr(substrate, "value", model.substrate)), "substrate")
    def refused(why: str) -> None:
        model.tell(why, "danger")

    seed = checked_int_input(model, "seed", refused, sizing_mode="stretch_width")

    def seed_for_substrate(*_):  # Lenia's start is its θ's own pattern: a seed there changed nothing, silently
        seeded = model.sub.seeded_init
        seed.param.update(disabled=not seeded, description=model.param.seed.doc if seeded else
                          f"{model.substrate} starts from its θ's own pattern: no seed draws its initial state")

    controls = pn.Param(model, parameters=["steps_per_frame", "sigma", "playing"],
                        widgets={"playing": {"type": pn.widgets.Toggle, "label": "▶ play / pause",
                                             "color": "primary"}},
                        show_name=False, sizing_mode="stretch_width")

    def sigma_for_substrate(*_):  # Game of Life's mutation flips a rule's bits: σ, offered there, changed nothing
        life = model.substrate == "gol"
        controls._widgets["sigma"].param.update(disabled=life, name="Sigma (not used: GoL flips rule bits)" if life
                                                else "Sigma")

    for follow in (seed_for_substrate, sigma_for_substrate):
        follow()
        model.param.watch(page.wrap(follow), "substrate")
    step, reset, mutate = (pn.widgets.Button(label=n, sizing_mode="stretch_width")
                           for n in ("step", "reset", "new θ (σ-mutation)"))
    step.on_click(lambda e: (model.dismiss(), model.advance(score_needs_fm=False)))
    reset.on_click(lambda e: model.reset())
    mutate.on_click(lambda e: model.mutate())

    # --- θ from a run, a file or the reference
    run_id = pn.widgets.TextInput(label="run id", placeholder="a run in the run store", sizing_mode="stretch_width")
    load = pn.widgets.Button(label="load best θ", color="primary", sizing_mode="stretch_width")

    # the address names the run on show (?run=ID&member=N): a reload or a link comes back to it. shown: its θ
    # and substrate; set from the worker threads that switch substrates too, so through the page's document
    location, shown, on_page = served_location(), {}, PageThread()

    async def do_load(rid: str, member: str | None = None) -> None:
        # a new substrate compiles its kernels: on a worker thread, so other sessions keep playing
        if await off_loop(model.open_run, runs_dir, rid, member, busy=[frame, load, *held]):
            shown.update(theta=model.theta.copy(), substrate=model.substrate)
            on_page.call(functools.partial(address, location, run=rid.strip(), member=member))

    def leave_run(*_):
        """Another θ or substrate than the run's: the address names no run any more (a reload brought it back)."""
        if shown and (model.substrate != shown["substrate"] or not np.array_equal(model.theta, shown["theta"])):
            shown.clear()
            on_page.call(functools.partial(address, location, run=None, member=None))

    model.param.watch(leave_run, "resets")

    async def on_load(event):
        await do_load(run_id.value)

    load.on_click(on_load)
    theta_file = pn.widgets.FileInput(accept=".npy", label="θ file (.npy)", sizing_mode="stretch_width")
    preset = pn.widgets.Button(label="preset: reference θ (GoL: Conway)", sizing_mode="stretch_width")

    def on_theta_file(event):
        import io

        from workbench.export import read_theta

        # a file's name in backticks: the message is Markdown, which made "drv.py" a link to http://drv.py
        name = f"`{theta_file.filename}`" if theta_file.filename else "the file"
        try:
            model.set_theta(read_theta(io.BytesIO(event.new), name))
            model.tell(f"loaded θ from {name}", "success")
        except Exception as exc:  # noqa: BLE001 - any unreadable file is shown to the user
            model.tell(f"cannot use {name} as θ: {exc}", "danger")

    theta_file.param.watch(on_theta_file, "value")
    preset.on_click(lambda e: model.default_theta())
    args = (pn.state.session_args or {}) if pn.state.curdoc else {}
    wanted, member = run_asked(args, runs_dir), query_value(args, "member")
    if wanted:
        run_id.value = wanted

        async def load_wanted():
            await do_load(run_id.value, member)
            if member is not None:  # a population member (the QD page's MAP-Elites cells link here): playing at once
                model.playing = model.message_kind == "success"

        pn.state.onload(load_wanted)

    # --- FM score trace
    score_controls = pn.Param(model, parameters=["fm", "fm_weights", "prompt"], show_name=False,
                              sizing_mode="stretch_width")
    score_every = checked_int_input(model, "score_every", refused, sizing_mode="stretch_width")
    upload = pn.widgets.FileInput(accept="image/*", label="target image", sizing_mode="stretch_width")

    async def on_upload(event):
        import io

        from PIL import Image

        try:
            try:
                image = np.asarray(Image.open(io.BytesIO(event.new)).convert("RGB"))
            except OSError:  # PIL's own message names a BytesIO object
                name = f"`{upload.filename}`" if upload.filename else "the file"  # no link of it (Markdown)
                raise ValueError(f"{name} is not an image PIL can read; give a PNG or JPEG") from None
            await off_loop(model.set_target_image, image, busy=[trace])
            model.tell("target image set: the trace scores frames against it", "success")
        except Exception as exc:  # noqa: BLE001 - shown to the user
            model.tell(f"cannot use that image: {exc}", "danger")

    upload.param.watch(on_upload, "value")

    async def preload_fm(*_):
        if model.wants_score() and not model.fm_loaded:
            asked = (model.fm, model.fm_weights)  # a load that fails after another FM was chosen says nothing
            try:
                await off_loop(model.load_fm, busy=[trace])
            except Exception as exc:  # noqa: BLE001 - a missing weights file, no network for CLIP, ...
                if (model.fm, model.fm_weights) != asked:
                    return
                said = in_page_words(str(exc), {"--fm": "FM", "--weights": "FM weights"}, bold=False)  # its fields
                model.tell(f"cannot load FM {model.fm}: {said}", "danger")
                model.fm_failed(f"FM {model.fm} did not load")  # the trace says it scores nothing
            else:  # and the error of an FM chosen before goes
                if (model.fm, model.fm_weights) != asked:  # the FM chosen since says its own
                    return
                problem = model.score_problem()
                model.tell(f"no FM score: {problem}" if problem else
                           f"FM {model.fm} loaded: the trace scores frames with it", "danger" if problem else "success")

    model.param.watch(preload_fm, ["fm", "fm_weights", "prompt"])

    # --- save
    snap = pn.widgets.Button(label="snapshot PNG + θ", sizing_mode="stretch_width")
    video = pn.widgets.Button(label="export GIF", sizing_mode="stretch_width",  # (the longer label was cut off)
                              description=f"from the start: steps 0 to {GIF_STEPS} of the θ and seed on show, every "
                                          "second one drawn")
    # what was saved, for a browser elsewhere to take (the files are on the server's disk)
    downloads = [download_button(), download_button()]

    def on_snapshot(event):
        try:
            png = model.snapshot()
        except OSError as exc:  # a store served read-only: said on the page (it was a traceback in the log alone)
            if (refused := cannot_write(exc)) is None:
                raise
            model.tell(f"cannot save the snapshot: {refused}", "danger")
            return
        model.tell(f"saved {png} and its θ", "success")
        offer(downloads[0], png, "PNG")  # two half-width buttons: the names are in the message above
        offer(downloads[1], png.with_suffix(".npy"), "θ (.npy)")

    snap.on_click(on_snapshot)

    def export_gif() -> Path:
        from workbench.export import export

        out = Path(model.snapshot_dir)
        out.mkdir(parents=True, exist_ok=True)
        [gif] = fresh_paths(out / f"{model.substrate}-seed{model.seed}", (".gif",))  # keeps earlier exports
        return export(model.sub, model.params, GIF_STEPS, gif,
                      seed=model.seed, size=RENDER_SIZE.get(model.substrate, 224), every=2)

    async def on_video(event):
        try:
            path = await off_loop(export_gif, busy=[video])
        except Exception as exc:  # said on the page, not only in the server's log
            if (refused := cannot_write(exc)) is not None:  # the folder's fault, not the code's: no traceback
                model.tell(f"cannot export the GIF: {refused}", "danger")
                return
            model.tell(f"the GIF export failed: {failed(exc)}", "danger")
            raise
        model.tell(f"saved {path}", "success")
        offer(downloads[0], path, "GIF")
        downloads[1].visible = False

    video.on_click(on_video)

    callback = pn.state.add_periodic_callback(model.tick, period=period_ms, start=False)
    model.param.watch(run_while(callback), "playing")
    step_reset = pn.Row(step, reset, sizing_mode="stretch_width")
    editor = param_editor(model)
    held[:] = [substrate, seed, controls, step_reset, mutate, theta_file, preset, editor]
    sidebar = [section("Simulation"), substrate, seed, controls, step_reset, mutate,
               section("θ from a run or a file"), run_id, load, theta_file, preset,
               section("FM score trace"), score_controls, score_every, upload,
               section("Save"), pn.Row(snap, video, sizing_mode="stretch_width"),
               pn.Row(*downloads, sizing_mode="stretch_width")]
    main = [alert, diverged,
            pn.FlexBox(pn.Column(status_view(model), frame, margin=(0, 10)),
                       pn.Column(editor, pn.pane.Markdown("**FM score**"), trace, width=400,
                                 stylesheets=[FITS_WHEN_NARROW, SCROLLS_WHEN_NARROW]))]
    return shell("lab", main, sidebar, standalone=standalone)


if __name__.startswith("bokeh"):
    pn.extension("tabulator", inline=True, notifications=True)  # Notyf: shell.connection_notice
    lab_page(standalone=True).servable()  # titled by the shell
