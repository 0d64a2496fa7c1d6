"""Parent selection from one archive: the paper's elite sampling and the uniform ablation.

A sampler is a function (rng, cells, quality) -> two distinct row indices into the archive's elites
(`TaskArchives.elites(task)` gives ids, cells, quality in row-major cell order). Register a new one in
SAMPLERS to make it selectable by name in CycleQDConfig(sampling=...).

Elite sampling (reference `sampler/elite_sampler.py`, spec §2 step 1): each column (the quality, and EACH
bin-index column of the cells, integer indices rather than scores) is mapped to n(v) = 0.5 + 0.8·(v − min) /
(max − min), a constant column to 1; an elite's weight is the product over columns, and two parents are drawn
WITHOUT replacement with probability ∝ weight. Elites with high quality and far-out cells are favoured.
Elites come in row-major cell order (the reference lists them in the order their cells were first filled), so
one seed draws other parents than the reference would, from the same distribution.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

Sampler = Callable[[np.random.Generator, np.ndarray, np.ndarray], np.ndarray]

MIN_BASE, SPAN = 0.5, 0.8   # the reference's min_base and max_base: n(v) runs from 0.5 to 1.3


def _normalise(values: np.ndarray) -> np.ndarray:
    lo, hi = values.min(), values.max()
    if lo == hi:
        return np.ones_like(values)
    return MIN_BASE + (values - lo) * (SPAN / (hi - lo))   # the reference's order of operations, bit for bit


def elite_probs(cells: ArrayLike, quality: ArrayLike) -> np.ndarray:
    """Elite-sampling probabilities of the elites of one archive.

    Args:
        cells: (n, d) integer bin indices of the elites' cells (d = K - 1).
        quality: (n,) their raw qualities (finite).
    Returns:
        (n,) float64 probabilities summing to 1: ∏ over the quality column and each cell column of
        n(v) = 0.5 + 0.8·(v − min)/(max − min) (1 for a column with min = max), normalised. All weights zero
        gives the uniform distribution (kept for parity with the reference; n(v) >= 0.5 makes it unreachable
        for finite input).
    """
    quality = np.asarray(quality, dtype=np.float64)
    cells = np.asarray(cells)
    if quality.ndim != 1 or len(quality) == 0:
        raise ValueError(f"quality must be a non-empty 1-D array, got shape {quality.shape}")
    if cells.ndim != 2 or len(cells) != len(quality):
        raise ValueError(f"cells must be (n, d) = ({len(quality)}, d) bin indices, got shape {cells.shape}")
    if not np.issubdtype(cells.dtype, np.integer):
        floats = np.issubdtype(cells.dtype, np.floating)
        if not (floats and np.isfinite(cells).all() and (cells == np.round(cells)).all()):
            raise ValueError("cells must be integer bin indices (not scores: sampling weighs bins, as the reference)")
        cells = cells.astype(np.int64)
    if not np.isfinite(quality).all():
        raise ValueError("qualities must be finite")
    weights = _normalise(quality)
    for j in range(cells.shape[1]):
        weights = weights * _normalise(cells[:, j].astype(np.float64))
    total = weights.sum()
    if total == 0:
        weights, total = np.ones_like(weights), float(len(weights))
    return weights / total


def _check_pool(cells: np.ndarray) -> int:
    n = len(cells)
    if n < 2:
        raise ValueError(f"two distinct parents need at least 2 elites, the archive has {n}")
    return n


def sample_elite(rng: np.random.Generator, cells: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """Two distinct row indices drawn with probability ∝ elite_probs(cells, quality), without replacement."""
    n = _check_pool(cells)
    return rng.choice(n, size=2, replace=False, p=elite_probs(cells, quality))


def sample_uniform(rng: np.random.Generator, cells: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """Two distinct row indices drawn uniformly (the ablation; the reference's default configuration)."""
    return rng.choice(_check_pool(cells), size=2, replace=False)


#: Samplers by the name CycleQDConfig(sampling=...) takes.
SAMPLERS: dict[str, Sampler] = {"elite": sample_elite, "uniform": sample_uniform}
