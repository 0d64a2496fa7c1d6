"""Rollout → render → embed → loss for a population of θ, the part every ASAL search shares.

Frames are embedded as soon as they are rendered, so memory holds one frame per simulation, not
K of them (spec §2: only the sampled states need to be kept). The population is processed in fixed
chunks, locally or on Dask workers alike, so a chunk's numbers never depend on where it ran.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from workbench.asal import scores
from workbench.export import to_uint8
from workbench.fm import load_fm
from workbench.simulations import make_substrate
from workbench.simulations.rollout import sample_indices

# the reference's rollout lengths (spec §1)
DEFAULT_STEPS = {"lenia": 256, "boids": 1000, "plife": 1000}


@dataclass
class EvalConfig:
    """Everything that fixes how one θ is scored; plain data so it can travel to Dask workers."""

    substrate: str
    fm: str
    weights: str | None = None
    steps: int | None = None            # None: the reference's length for the substrate
    frames: int = 1                     # K sampled frames (chunk ends)
    bs: int = 1                         # initial-state seeds averaged per θ
    size: int = 224
    overrides: dict = field(default_factory=dict)
    chunk: int = 16                     # simulations per batch (and per Dask task)

    def __post_init__(self):
        if self.steps is None:
            self.steps = DEFAULT_STEPS.get(self.substrate, 256)


_CACHE: dict = {}


def components(cfg: EvalConfig):
    """(substrate, fm) for a config, built once per process (workers keep theirs between tasks)."""
    key = ("sub", cfg.substrate, tuple(sorted(cfg.overrides.items())))
    if key not in _CACHE:
        _CACHE[key] = make_substrate(cfg.substrate, **cfg.overrides)
    fkey = ("fm", cfg.fm, cfg.weights)
    if fkey not in _CACHE:
        _CACHE[fkey] = load_fm(cfg.fm, weights=cfg.weights)
    return _CACHE[key], _CACHE[fkey]


def embed_rollouts(cfg: EvalConfig, thetas: np.ndarray, seeds: list[int],
                   thumb: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings (P, bs, K, D) of the sampled frames, and the last frame of seed 0 as uint8 thumbnails."""
    sub, fm = components(cfg)
    thetas = np.asarray(thetas, np.float64)
    indices = sample_indices(cfg.steps, (cfg.frames, True) if cfg.frames > 1 else "final")
    out, thumbs = [], None
    for lo in range(0, len(thetas), cfg.chunk):
        part = thetas[lo:lo + cfg.chunk]
        params = sub.decode(part)
        per_seed, last = [], None
        for seed in seeds:
            state, at, z = sub.init(params, seed=seed), 0, []
            for index in indices:
                if index > at:
                    state, at = sub.step(state, params, steps=index - at), index
                frames = to_uint8(sub.render(state, params, size=cfg.size))
                z.append(fm.embed_images(frames, use_cache=False))
                if last is None or seed == seeds[0]:
                    last = frames
            per_seed.append(np.stack(z, axis=1))  # (chunk, K, D)
        out.append(np.stack(per_seed, axis=1))   # (chunk, bs, K, D)
        small = _downsample(last, thumb)
        thumbs = small if thumbs is None else np.concatenate([thumbs, small])
    return np.concatenate(out), thumbs


def _downsample(frames: np.ndarray, size: int) -> np.ndarray:
    """Area-average (N, S, S, 3) uint8 frames to about size × size (integer factor)."""
    f = max(1, frames.shape[1] // size)
    n, s = frames.shape[0], frames.shape[1] // f * f
    x = frames[:, :s, :s].reshape(n, s // f, f, s // f, f, 3).mean(axis=(2, 4))
    return (x + 0.5).astype(np.uint8)


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

