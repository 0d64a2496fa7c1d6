"""The illumination atlas: embeddings projected to 2-D and snapped to a grid of thumbnails (the ASAL
poster layout). Used by the /atlas page and by figures.

    xy = project(z, method="umap" | "tsne" | "pca", seed=0)   # (N, 2)
    cells = snap_to_grid(xy, side)                              # (N,) distinct cell indices, row-major
    img = compose(thumbs, cells, side)                          # (side·h, side·w, 3) uint8
"""

from __future__ import annotations

import math
import sys
import warnings

import numpy as np

PROJECTIONS = ("pca", "tsne", "umap")
#: the most embeddings t-SNE projects on one thread (project): more threads pay from about a thousand (1 000 × 512:
#: 4.9 s on two, 7.4 s on one)
ONE_THREAD_TSNE = 500


def project(z: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """2-D coordinates of the rows of z, scaled to [0, 1]² (each axis).

    z: (N, D) embeddings, N ≥ 2, finite. method: "pca" (deterministic), "tsne" or "umap" (PROJECTIONS); seed:
    UMAP's random_state (the same seed, the same map). t-SNE starts from PCA's layout (its optimisation has no
    randomness), so its map is the same for every seed. Raises ValueError for another shape, NaN or inf, or an
    unknown method."""
    z = np.asarray(z, np.float64)
    if z.ndim != 2 or len(z) < 2:
        raise ValueError(f"need at least two embeddings of shape (N, D), got {z.shape}")
    if not np.isfinite(z).all():
        raise ValueError("the embeddings hold NaN or inf: project finite embeddings (a run's rows that failed?)")
    if method in ("pca", "tsne"):
        zc = z - z.mean(axis=0)
        _, _, vt = np.linalg.svd(zc, full_matrices=False)
        xy = zc @ vt[:2].T
    if method == "tsne":
        from sklearn.manifold import TSNE
        from threadpoolctl import threadpool_limits

        # started from the exact PCA layout (scaled as sklearn's init="pca" does: PC1's std 1e-4): its own "pca"
        # takes a randomized SVD, seeded, for inputs over 500 wide (CLIP's 512 dimensions), so the map moved with
        # the seed that the page shows disabled
        init = np.pad(xy, ((0, 0), (0, 2 - xy.shape[1]))).astype(np.float32)
        init = init / (np.std(init[:, 0]) or 1.0) * 1e-4
        tsne = TSNE(2, perplexity=min(30.0, (len(z) - 1) / 3), init=init)
        # up to ONE_THREAD_TSNE points on one OpenMP thread: as fast (300 × 512: 1.08 s, two threads 1.09 s) and the
        # same bits, where two threads' spin-waits on a loaded machine took 0.5-5.7 s for 40 points (0.22 s on one)
        with threadpool_limits(1 if len(z) <= ONE_THREAD_TSNE else None, user_api="openmp"):
            xy = tsne.fit_transform(z)
    elif method == "umap":
        # UMAP and numba warn on import and fit (n_jobs overridden by random_state, spectral init fallbacks):
        # noise for the user, who asked for a seeded projection
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import umap

            _cache_compiles("umap")
            xy = umap.UMAP(n_components=2, n_neighbors=min(15, len(z) - 1), random_state=seed).fit_transform(z)
    elif method != "pca":
        raise ValueError(f"unknown projection {method!r}; choose one of {', '.join(PROJECTIONS)}")
    xy = np.asarray(xy, np.float64)
    if xy.shape[1] < 2:  # a single distinct embedding: PCA gives fewer components
        xy = np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))
    span = np.where(np.ptp(xy, axis=0) > 0, np.ptp(xy, axis=0), 1.0)
    return (xy - xy.min(axis=0)) / span


def _cache_compiles(package: str) -> None:
    """Keep the numba compiles of an (imported) package's kernels in numba's on-disk cache.

    UMAP's first layout in a process compiles its numba kernels: about 20 s of CPU on a quiet machine, minutes on a
    busy one, paid by every new server or notebook kernel. umap-learn marks few of its kernels `cache=True`, so this
    turns the cache on for the others, as that flag would. The cache is numba's own (next to the package's sources,
    else the user's cache folder, or NUMBA_CACHE_DIR), keyed by each source file's content and the machine's CPU: an
    upgraded package or another CPU compiles afresh. The cached code is the code numba compiles: the same layouts.
    Only umap's own kernels: pynndescent (UMAP's neighbours from 4096 points on) leaves its kernels that take a
    distance function uncached on purpose, as each process would miss and write another file. Where no cache folder
    is writable, nothing changes (numba refuses to build a cache there).
    """
    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher

    for name, module in list(sys.modules.items()):
        if module is None or name.split(".")[0] != package:
            continue
        for obj in list(vars(module).values()):
            if isinstance(obj, Dispatcher) and isinstance(obj._cache, NullCache):
                try:
                    obj.enable_caching()  # kernels numba cannot cache (dynamic globals) only warn, quietened above
                except (RuntimeError, OSError):  # no writable cache folder: compile in memory, as before
                    return


def snap_to_grid(xy: np.ndarray, side: int | None = None) -> np.ndarray:
    """Distinct cells of a side × side grid (row-major, row 0 at the top) minimising the total squared
    distance between points and their cells' centres (a linear assignment).

    xy: (N, 2) points in [0, 1]² (x to the right, y up: `project`'s output); side: the grid's side (None: the
    smallest square that holds N points, ⌈√N⌉). Returns (N,) int cell indices in 0 … side² − 1, point i in
    row cells[i] // side, column cells[i] % side."""
    from scipy.optimize import linear_sum_assignment

    xy = np.asarray(xy, np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"snap_to_grid takes 2-D points of shape (N, 2), got {xy.shape}")
    side = side or math.ceil(math.sqrt(len(xy)))
    if side * side < len(xy):
        raise ValueError(f"a {side}×{side} grid cannot hold {len(xy)} points")
    r, c = np.divmod(np.arange(side * side), side)
    centres = np.stack([(c + 0.5) / side, 1.0 - (r + 0.5) / side], axis=1)  # x to the right, y up
    cost = ((xy[:, None, :] - centres[None]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    cells = np.empty(len(xy), int)
    cells[rows] = cols
    return cells


def as_uint8_frames(thumbs) -> np.ndarray:
    """Frames as uint8 RGB: uint8 ones as they are, float ones in [0, 1] (what render and rollout return) scaled
    to 0-255 and rounded, as the exports write them; float ones beyond [0, 1] are refused (a cast to uint8 left
    [0, 1] floats black)."""
    thumbs = np.asarray(thumbs)
    if thumbs.dtype == np.uint8:
        return thumbs
    if np.issubdtype(thumbs.dtype, np.floating):
        if thumbs.size and not (np.nanmin(thumbs) >= 0.0 and np.nanmax(thumbs) <= 1.0):
            raise ValueError(f"float frames must be in [0, 1] (as render returns them), got values in "
                             f"[{np.nanmin(thumbs):.3g}, {np.nanmax(thumbs):.3g}]: give them as uint8 0-255, or "
                             f"divide by 255")
        return (np.nan_to_num(thumbs) * 255.0 + 0.5).astype(np.uint8)
    raise ValueError(f"frames must be uint8 (0-255) or floats in [0, 1], got {thumbs.dtype}")


#: the colour of a grid cell no thumbnail sits in: a light grey, not black, which a dead simulation renders
EMPTY_CELL = (236, 236, 236)


def compose(thumbs: np.ndarray, cells: np.ndarray, side: int) -> np.ndarray:
    """The atlas image: thumbnail i at grid cell cells[i] (uint8, or floats in [0, 1]: as_uint8_frames); the
    cells no thumbnail sits in are EMPTY_CELL grey (black was a dead member's look)."""
    thumbs = as_uint8_frames(thumbs)
    n, h, w, _ = thumbs.shape
    img = np.empty((side * h, side * w, 3), np.uint8)
    img[:] = EMPTY_CELL
    for i, cell in enumerate(cells):
        r, c = divmod(int(cell), side)
        img[r * h:(r + 1) * h, c * w:(c + 1) * w] = thumbs[i]
    return img


def population_grid(thumbs: np.ndarray) -> np.ndarray:
    """A population's thumbnails in order, row by row in a near-square grid, without the empty rows below it
    (6 thumbnails: 3 × 2, not 3 × 3): the Search page's "latest population", and a run's population.png.
    uint8 thumbnails, or floats in [0, 1] (as_uint8_frames)."""
    thumbs = as_uint8_frames(thumbs)
    if thumbs.ndim != 4 or thumbs.shape[-1] != 3 or not len(thumbs):
        raise ValueError(f"population_grid takes thumbnails of shape (N, H, W, 3), got {thumbs.shape}")
    side = math.ceil(math.sqrt(len(thumbs)))
    rows = math.ceil(len(thumbs) / side)
    return compose(thumbs, np.arange(len(thumbs)), side)[: rows * thumbs.shape[1]]
