"""Rollout → render → embed → loss for a population of θ, the part every ASAL search shares.

Frames are embedded as soon as they are rendered, so memory holds one frame per simulation, not
K of them (spec §2: only the sampled states need to be kept). The population is processed in fixed
chunks, locally or on Dask workers alike, so a chunk's numbers never depend on where it ran.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from workbench.asal import scores
from workbench.checks import absolute_paths, paths_as_text
from workbench.fm import check_fm_name, shared_fm, weights_for
from workbench.kernels.device import synchronize
from workbench.simulations import check_substrate, make_substrate
from workbench.simulations.rollout import sample_indices

# the reference's rollout lengths (asal.md §1; asal-more.md: 1000 steps, Game of Life 1024, Flow-Lenia 256)
DEFAULT_STEPS = {"lenia": 256, "boids": 1000, "plife": 1000}
DEFAULT_STEPS.update({"gol": 1024, "nca_d1": 1000, "nca_d3": 1000, "dnca": 1000, "plenia": 1000,
                      "plife_plus": 1000, "flow_lenia": 256})
SAMPLINGS = ("chunk_ends", "final")
PIXELS = ("float", "uint8")


@dataclass
class EvalConfig:
    """Everything that fixes how one θ is scored; plain data so it can travel to Dask workers.

    Attributes:
        substrate: one of workbench.simulations.SUBSTRATES ("lenia", "boids", …).
        fm: the foundation model that embeds the frames ("clip", "efficientnet-lite0", "pixels", …; see
            workbench.fm), with `weights` its checkpoint where it takes one (None: its default).
        steps: simulation steps of a rollout (None: the reference's length for the substrate).
        frames: K, the frames of a rollout the FM embeds (which: `sampling`).
        bs: initial-state seeds a θ is simulated from; its score is their mean (not a batch size).
        size: the rendered frames' side in pixels (224: what CLIP takes).
        overrides: the substrate's own settings (make_substrate's keywords, e.g. {"N": 64} for boids, {"grid": 32}
            for gol).
        chunk: simulations run together in one batch (and one Dask task); memory, not results, depends on it.
        device: where rollouts and the FM run (None: the GPU when present, else the CPU; each worker resolves it).
        sampling: which states the K frames are, with T = steps and c = ⌊T/K⌋: "chunk_ends", states c − 1,
            2c − 1, …, T − 1 (K = 1: state T − 1, as the reference's target and open-endedness searches take it),
            or "final", state T for K = 1 (as its illumination takes it, and runs made before this setting did),
            chunk ends for K > 1.
        pixels: "float" (frames in [0, 1], the reference's) or "uint8" (runs made before this setting).
    """

    substrate: str
    fm: str
    weights: str | None = None
    steps: int | None = None            # None: the reference's length for the substrate
    frames: int = 1                     # K sampled frames (chunk ends)
    bs: int = 1                         # initial-state seeds averaged per θ
    size: int = 224
    overrides: dict = field(default_factory=dict)
    chunk: int = 16                     # simulations per batch (and per Dask task)
    device: str | None = None           # None: the GPU when present, else the CPU (each worker resolves it)
    # which states the K frames are: "chunk_ends" (c−1, 2c−1, …, c = ⌊T/K⌋; K = 1 is state T−1, as the reference's
    # target and open-endedness searches take it) or "final" (K = 1 is state T, as its illumination takes it;
    # also what runs made before this setting existed did, for K = 1)
    sampling: str = "chunk_ends"
    # what the FM sees: "float", the rendered frames in [0, 1] as the reference embeds them, or "uint8", the frames
    # rounded to 8 bits as runs made before this setting embedded them (they keep it on resume)
    pixels: str = "float"

    def __post_init__(self):
        paths_as_text(self, "weights")
        absolute_paths(self, "weights")  # the FM's weights found again on a resume from another folder
        if self.steps is None:
            self.steps = DEFAULT_STEPS.get(self.substrate, 256)
        self.check()

    @classmethod
    def own_copy(cls, given: EvalConfig | dict) -> EvalConfig:
        """A config of its own for a SearchConfig or SweepConfig: `given` copied (the search adjusts its frames,
        a run its device: the caller's stays as given), or built from its dict (a run.json's)."""
        if isinstance(given, dict):
            return cls(**given)
        if isinstance(given, cls):
            return dataclasses.replace(given)
        raise ValueError(f"eval must be an EvalConfig (or its dict), got {type(given).__name__}")

    def check(self) -> None:
        """One clear error (naming the CLI flag) for a substrate, a setting of it or a foundation model that does
        not exist and numbers no rollout can use, before anything loads."""
        check_substrate(self.substrate, **self.overrides)
        check_fm_name(self.fm)
        for name in ("steps", "frames", "bs", "size", "chunk"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"--{name} must be a whole number of at least 1, got {value!r}")
        if self.size < 2:  # the renderers' own check came after the run folder was made, naming no flag
            raise ValueError(f"--size must be at least 2 pixels, got {self.size}")
        if self.size > 4096:  # a chunk's frames at 6000 px took the machine's memory; the FMs read 224 px
            raise ValueError(f"--size {self.size}: the frames the FM reads are at most 4096 pixels a side (the FMs "
                             "resize them to their input, 224 for CLIP); give a smaller --size")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {self.sampling!r}")
        if self.pixels not in PIXELS:
            raise ValueError(f"pixels must be one of {', '.join(PIXELS)}, got {self.pixels!r}")
        if self.frames > self.steps:
            raise ValueError(f"--frames {self.frames} is more than --steps {self.steps}: a frame is sampled at the "
                             "end of a chunk of steps, so give at most as many frames as steps")


def frame_indices(cfg: EvalConfig) -> list[int]:
    """The states whose frames are embedded (see EvalConfig.sampling)."""
    if cfg.frames == 1 and cfg.sampling == "final":
        return sample_indices(cfg.steps, "final")
    return sample_indices(cfg.steps, (cfg.frames, True))


_CACHE: dict = {}
_BUILDING = threading.Lock()  # two searches started together (two tabs of one server) built one substrate twice


def components(cfg: EvalConfig):
    """(substrate, fm) for a config, built once per process (workers keep theirs between tasks; threads share it:
    a substrate keeps no state between calls)."""
    key = ("sub", cfg.substrate, tuple(sorted(cfg.overrides.items())), cfg.device)
    with _BUILDING:
        if key not in _CACHE:
            _CACHE[key] = make_substrate(cfg.substrate, device=cfg.device, **cfg.overrides)
    # one per process, shared with the pages' sessions a served search runs beside; runs made before load_fm
    # refused them kept --weights given with an embedded model, which it ignored
    return _CACHE[key], shared_fm(cfg.fm, weights=weights_for(cfg.fm, cfg.weights), device=cfg.device)


class PhaseTimer:
    """Seconds spent per phase (simulate, render, embed, …) for benchmarks. The device is synchronised at
    both ends of a phase, so GPU work is charged to the phase that queued it; without a timer nothing syncs."""

    def __init__(self, device: torch.device | str | None = None):
        self.device = device
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str):
        synchronize(self.device)
        start = time.perf_counter()
        yield
        synchronize(self.device)
        self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start


def _phase(timer: PhaseTimer | None, name: str):
    return contextlib.nullcontext() if timer is None else timer(name)


def rollout_bytes(frames: int, dim: int, k2: float) -> float:
    """What the losses hold for one rollout's K = frames embeddings of `dim`: the float32 embeddings and their
    float64 copies (20 bytes a number), and k2 bytes for each of its K × K similarities (16 for open-endedness'
    float64 matrix and its masked copy, 32 more for the softmax loss' arrays; 0 where no loss holds one).
    Measured against tracemalloc peaks in tests/test_search.py."""
    return 20.0 * frames * dim + k2 * frames * frames


def check_chunk_memory(cfg: EvalConfig, simulations: int, free: int) -> None:
    """Refuse a chunk of simulations whose frames cannot fit in `free` bytes (rendered, put in [0, 1] and
    resized for the FM, float32; the simulations' own state is smaller), naming --chunk, or --size where one
    frame alone does not fit. `simulations`: how many a call evaluates (a chunk holds at most that many)."""
    import math

    from workbench.checks import check_fits

    per_sim = 3 * 12.0 * cfg.size * cfg.size
    chunk = min(cfg.chunk, simulations)
    if per_sim > 0.8 * free:
        check_fits(per_sim, "--size", cfg.size, f"one {cfg.size}² frame and its copies",
                   int(math.sqrt(0.8 * free / 36.0)), free)
    check_fits(chunk * per_sim, "--chunk", cfg.chunk, f"rendering {chunk} simulations at {cfg.size}² at once",
               int(0.8 * free / per_sim), free)


def embed_rollouts(cfg: EvalConfig, thetas: np.ndarray, seeds: int | Sequence[int] | np.ndarray, thumb: int = 64,
                   timer: PhaseTimer | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings (P, bs, K, D) of the sampled frames, and the last frame of the first seed as uint8 thumbnails.

    A rollout that diverged (NaN or inf in its state or in a rendered frame at any sampled state) has NaN
    embeddings, all K of them: it has no picture to score. (Its frames were embedded as black, or as the part of a
    frame that was still drawn, and a diverged candidate scored as that picture: the best match of a dark target.)
    The searches rank such a candidate last (workbench.asal.driver); its thumbnail is black where it is NaN.

    seeds: bs initial-state seeds every θ shares (a list; one whole number: that one seed), or each θ's own, an
    integer array (P, bs).
    On the CPU each frame is embedded as soon as it is rendered (memory holds one frame per simulation). On
    a GPU the frames stay there, and the K frames of a chunk go to the FM as one batch."""
    sub, fm = components(cfg)
    thetas = np.asarray(thetas, np.float64)
    if np.ndim(seeds) == 0:
        seeds = [seeds]
    own = np.ndim(seeds) == 2
    if own and np.shape(seeds)[0] != len(thetas):
        raise ValueError(f"seeds of {np.shape(seeds)[0]} simulations for {len(thetas)} θ")
    indices = frame_indices(cfg)
    batched = sub.device.type == "cuda"
    # every embedding is written into one array, made at the first: a list of K small arrays per simulation
    # between the render's freed temporaries fragmented the heap (RSS grew 15-30x the embeddings it kept, 5 GiB
    # for 200 MiB of them at K = 1500)
    out, thumbs = None, None

    def keep(z: np.ndarray, rows: slice, b: int, k: int | slice) -> None:
        nonlocal out
        z = np.asarray(z)
        if out is None:
            out = np.empty((len(thetas), len(columns), len(indices), z.shape[-1]), z.dtype)
        out[rows, b, k] = z

    for lo in range(0, len(thetas), cfg.chunk):
        part = thetas[lo:lo + cfg.chunk]
        with _phase(timer, "decode"):
            params = sub.to_device(sub.decode(part))  # checked and copied once, not at every call
        last, rows = None, slice(lo, lo + len(part))
        columns = [[int(s) for s in column] for column in np.asarray(seeds)[lo:lo + cfg.chunk].T] if own else seeds
        for b, seed in enumerate(columns):
            with _phase(timer, "simulate"):
                state, at, frames_k = sub.init(params, seed=seed), 0, []
            diverged = torch.zeros(len(part), dtype=torch.bool, device=sub.device)
            for k, index in enumerate(indices):
                if index > at:
                    with _phase(timer, "simulate"):
                        state, at = sub.step(state, params, steps=index - at), index
                with _phase(timer, "render"):
                    rendered = sub.render(state, params, size=cfg.size, as_tensor=True)
                    # 8-bit frames: the thumbnails' (the first seed's last frame), and the FM's for runs made before
                    # pixels existed
                    thumbnail = b == 0 and index == indices[-1]
                    pixels = to_uint8_tensor(rendered) if thumbnail or cfg.pixels == "uint8" else None
                    frames = unit_frames(rendered) if cfg.pixels == "float" else pixels
                    diverged |= _diverged(state.arrays, rendered)
                if batched:
                    frames_k.append(frames)
                else:
                    with _phase(timer, "embed"):
                        keep(fm.embed_images(frames.numpy(), use_cache=False), rows, b, k)
                if thumbnail:
                    last = pixels
            if batched:  # (chunk, K, H, W, 3) → one FM batch of chunk·K frames
                with _phase(timer, "embed"):
                    stacked = torch.stack(frames_k, dim=1)
                    zk = fm.embed_images(stacked.reshape(-1, *stacked.shape[2:]), use_cache=False)
                keep(np.asarray(zk).reshape(len(part), len(indices), -1), rows, b, slice(None))
            gone = diverged.cpu().numpy()
            if gone.any():
                out[np.arange(lo, lo + len(part))[gone], b] = np.nan
        with _phase(timer, "thumbnails"):
            small = _downsample(last, thumb)
        thumbs = small if thumbs is None else np.concatenate([thumbs, small])
    return out, thumbs


def _diverged(arrays: dict[str, torch.Tensor], rendered: torch.Tensor) -> torch.Tensor:
    """(P,) bool: simulations whose floating state or rendered frame holds a NaN or an infinity. The state is
    checked too: a particle renderer skips a NaN particle, so a diverged state can draw a finite frame."""
    bad = ~torch.isfinite(rendered).flatten(1).all(dim=1)
    for a in arrays.values():
        if a.is_floating_point():
            bad |= ~torch.isfinite(a).flatten(1).all(dim=1)
    return bad


def to_uint8_tensor(frames: torch.Tensor) -> torch.Tensor:
    """export.to_uint8 for tensors, on their device (the same float32 operations, so the same bytes; a NaN is
    black, where a cast left it to the hardware)."""
    return (frames.nan_to_num(0.0).clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8)


def unit_frames(frames: torch.Tensor) -> torch.Tensor:
    """Rendered floats as the FM takes them (searches, the Lab's score): in [0, 1], a NaN (a diverged simulation)
    black, as in the 8-bit frames."""
    return torch.nan_to_num(frames, nan=0.0, posinf=1.0, neginf=0.0).clamp_(0.0, 1.0)


def _downsample(frames: torch.Tensor, size: int) -> np.ndarray:
    """Area-average (N, S, S, 3) uint8 frames to about size × size (integer factor), on their device; only the
    thumbnails travel to the host. (float32 is exact here: sums of at most f² bytes, one rounded division.)"""
    f = max(1, frames.shape[1] // size)
    n, s = frames.shape[0], frames.shape[1] // f * f
    x = frames[:, :s, :s].reshape(n, s // f, f, s // f, f, 3).float().mean(dim=(2, 4))
    return (x + 0.5).to(torch.uint8).cpu().numpy()


@dataclass
class Objective:
    """c_prompt·L_ST + c_softmax·L_SM + c_oe·L_OE against fixed target embeddings (spec §3)."""

    z_target: np.ndarray | None = None   # (M, D) prompt or target-image embeddings
    c_prompt: float = 1.0
    c_softmax: float = 0.0
    c_oe: float = 0.0

    def __call__(self, z: np.ndarray) -> np.ndarray:
        """Loss per simulation from embeddings (P, bs, K, D), averaged over the bs seeds."""
        loss = np.zeros(z.shape[:2])
        if self.z_target is not None and self.c_prompt:
            loss += self.c_prompt * scores.supervised_target(z, self.z_target)
        if self.z_target is not None and self.c_softmax:
            loss += self.c_softmax * scores.softmax_target(z, self.z_target)
        if self.c_oe:
            loss += self.c_oe * scores.open_endedness(z)
        return loss.mean(axis=1)

