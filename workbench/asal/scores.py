"""ASAL's foundation-model scores (spec §3). All are minimised; embeddings are unit rows.

Every function takes embeddings with optional leading batch axes, e.g. (P, K, D) for a population of
P rollouts of K frames, and returns one loss per batch entry. The last two axes are always (frames, D): the
final frames of P simulations scored one loss each are (P, 1, D) (z[:, None]); as (P, D) they read as one
rollout of P frames and give one loss.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import ArrayLike


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


def supervised_target(z: ArrayLike, z_txt: ArrayLike) -> np.ndarray | float:
    """L_ST = −(1/K)·Σ_t ⟨z_txt[t], z_t⟩ with prompts tiled over the K frames.

    Args:
        z: frame embeddings (..., K, D): (P, K, D) for P rollouts of K frames, (P, 1, D) for P final frames (as
            (P, D) they are one rollout of P frames, one loss). A NumPy array or what np.asarray reads (a CPU torch
            tensor without grad, nested lists).
        z_txt: prompt embeddings (Q, D) of the same model, tiled over the K frames as p1, p2, …, pQ, p1, …

    Returns:
        One loss per rollout: an array of z's leading shape (...), a NumPy float for one rollout (K, D).

    Raises:
        ValueError: z with fewer than 2 axes, z_txt not (Q, D) with Q ≥ 1, K not a multiple of Q, or another D.
    """
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


def softmax_target(z: ArrayLike, z_txt: ArrayLike, temperature: float = 0.01) -> np.ndarray | float:
    """L_SM = ½·(mean_t −log softmax_row(S)_tt + mean_t −log softmax_col(S)_tt), S = Z_txt·Z_imgᵀ/τ.

    Computed with log-softmax (max subtracted), so it stays finite at τ = 0.01. S is (K, K) per rollout, prompts
    by frames: its rows ask each prompt to pick its own frame among the K, its columns each frame to pick its own
    prompt. With one frame (K = 1) the loss is 0 whatever z.

    Args:
        z: frame embeddings (..., K, D), as supervised_target takes them ((P, D) is one rollout of P frames).
        z_txt: prompt embeddings (Q, D), tiled over the K frames (K a multiple of Q).
        temperature: τ, the similarities' divisor: smaller is a sharper softmax (0.01, the reference's).

    Returns:
        One loss per rollout: an array of z's leading shape (...), a NumPy float for one rollout (K, D).

    Raises:
        ValueError: a temperature that is not positive, or z / z_txt refused as supervised_target refuses them.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    z = _frames(z)
    txt = _tiled_for(z_txt, z)
    S = np.einsum("kd,...jd->...kj", txt, z) / temperature
    rows = np.diagonal(_log_softmax(S, axis=-1), axis1=-2, axis2=-1)
    cols = np.diagonal(_log_softmax(S, axis=-2), axis1=-2, axis2=-1)
    return 0.5 * (-rows.mean(axis=-1) - cols.mean(axis=-1))


def open_endedness(z: ArrayLike) -> np.ndarray | float:
    """L_OE = (1/K)·Σ_t max(0, max_{t′<t} ⟨z_t, z_t′⟩): how much each frame repeats an earlier one.

    The clamp at 0 (and the 0 of the first frame) comes from the reference masking the upper
    triangle of the similarity matrix with zeros; it is kept.

    z: frame embeddings (..., K, D) in time order, e.g. (P, K, D) for P rollouts of K frames; (P, D) is one
    rollout of P frames (one loss), and a rollout of one frame scores 0. Returns one loss per rollout: an array of
    z's leading shape (...), a NumPy float for one rollout (K, D). Raises ValueError for z with fewer than 2 axes.
    """
    z = _frames(z)
    K = z.shape[-2]
    sim = gram(z)
    sim = np.where(np.tril(np.ones((K, K), bool), k=-1), sim, 0.0)
    return sim.max(axis=-1).mean(axis=-1)


def illumination(z: ArrayLike) -> np.ndarray | float:
    """L_IL = (1/N)·Σ_i max_{j≠i} ⟨z_i, z_j⟩ over N simulations (one embedding each).

    z: (..., N, D), one embedding per simulation on the second-to-last axis: (N, D) is one population of N (here
    the (P, D) reading is the right one), (B, N, D) B populations; (P, 1, D) is P populations of one, refused.
    Returns one loss per population: an array of z's leading shape (...), a NumPy float for (N, D). Raises
    ValueError for z with fewer than 2 axes or N < 2.
    """
    z = _frames(z)
    N = z.shape[-2]
    if N < 2:
        raise ValueError("illumination needs at least two simulations")
    sim = gram(z)  # BLAS: einsum's own loop took 13 ms for the GA's 256 × 512
    sim = np.where(np.eye(N, dtype=bool), -np.inf, sim)
    return sim.max(axis=-1).mean(axis=-1)
