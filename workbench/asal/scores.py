"""ASAL's foundation-model scores (spec §3). All are minimised; embeddings are unit rows.

Every function takes embeddings with optional leading batch axes, e.g. (P, K, D) for a population of
P rollouts of K frames, and returns one loss per batch entry. The last two axes are always (frames, D): the
final frames of P simulations scored one loss each are (P, 1, D) (z[:, None]); as (P, D) they read as one
rollout of P frames and give one loss.
"""

from __future__ import annotations

import numpy as np


def tile_prompts(z_txt: np.ndarray, frames: int) -> np.ndarray:
    """Prompt embeddings (P, D) tiled over K frames as p1, p2, …, pP, p1, … (K a multiple of P)."""
    z_txt = np.asarray(z_txt, np.float64)
    if z_txt.ndim != 2 or len(z_txt) == 0:
        raise ValueError(f"prompt embeddings must have shape (P, D), got {z_txt.shape}")
    if frames % len(z_txt):
        raise ValueError(f"the number of frames ({frames}) must be a multiple of the number of prompts "
                         f"({len(z_txt)})")
    return np.tile(z_txt, (frames // len(z_txt), 1))


def gram(z: np.ndarray) -> np.ndarray:
    """z @ zᵀ over the last two axes, through a copied transpose: NumPy sends `z @ z.T` of one buffer to BLAS'
    syrk, which segfaulted in OpenBLAS with 2 threads at 16 000 × 2352 rows (numpy/numpy#19685, open); gemm on
    the copy did not. The copy costs one more array of z's size."""
    return z @ np.ascontiguousarray(np.swapaxes(z, -1, -2))


def _frames(z) -> np.ndarray:
    z = np.asarray(z, np.float64)
    if z.ndim < 2:
        raise ValueError(f"embeddings must have shape (..., K, D), got {z.shape}")
    return z


def supervised_target(z, z_txt) -> np.ndarray | float:
    """L_ST = −(1/K)·Σ_t ⟨z_txt[t], z_t⟩ with prompts tiled over the K frames."""
    z = _frames(z)
    return -np.mean(np.sum(_tiled_for(z_txt, z) * z, axis=-1), axis=-1)


def _tiled_for(z_txt, z: np.ndarray) -> np.ndarray:
    """The prompts tiled over z's K frames, checked to be embeddings of the same model (same D)."""
    tiled = tile_prompts(z_txt, z.shape[-2])
    if tiled.shape[-1] != z.shape[-1]:
        raise ValueError(f"prompt embeddings of size {tiled.shape[-1]} against frame embeddings of size "
                         f"{z.shape[-1]}: embed both with the same foundation model")
    return tiled


def _log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def softmax_target(z, z_txt, temperature: float = 0.01) -> np.ndarray | float:
    """L_SM = ½·(mean_t −log softmax_row(S)_tt + mean_t −log softmax_col(S)_tt), S = Z_txt·Z_imgᵀ/τ.

    Computed with log-softmax (max subtracted), so it stays finite at τ = 0.01.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    z = _frames(z)
    txt = _tiled_for(z_txt, z)
    S = np.einsum("kd,...jd->...kj", txt, z) / temperature
    rows = np.diagonal(_log_softmax(S, axis=-1), axis1=-2, axis2=-1)
    cols = np.diagonal(_log_softmax(S, axis=-2), axis1=-2, axis2=-1)
    return 0.5 * (-rows.mean(axis=-1) - cols.mean(axis=-1))


def open_endedness(z) -> np.ndarray | float:
    """L_OE = (1/K)·Σ_t max(0, max_{t′<t} ⟨z_t, z_t′⟩): how much each frame repeats an earlier one.

    The clamp at 0 (and the 0 of the first frame) comes from the reference masking the upper
    triangle of the similarity matrix with zeros; it is kept.
    """
    z = _frames(z)
    K = z.shape[-2]
    sim = gram(z)
    sim = np.where(np.tril(np.ones((K, K), bool), k=-1), sim, 0.0)
    return sim.max(axis=-1).mean(axis=-1)


def illumination(z) -> np.ndarray | float:
    """L_IL = (1/N)·Σ_i max_{j≠i} ⟨z_i, z_j⟩ over N simulations (one embedding each)."""
    z = _frames(z)
    N = z.shape[-2]
    if N < 2:
        raise ValueError("illumination needs at least two simulations")
    sim = gram(z)  # BLAS: einsum's own loop took 13 ms for the GA's 256 × 512
    sim = np.where(np.eye(N, dtype=bool), -np.inf, sim)
    return sim.max(axis=-1).mean(axis=-1)
