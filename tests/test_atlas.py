"""Atlas projections: shapes, seeds, and no third-party warnings in the user's output."""

import json
import subprocess
import sys

import numpy as np
import pytest

from workbench.asal.atlas import EMPTY_CELL, compose, population_grid, project, snap_to_grid


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_projections_are_seeded_and_normalised(method):
    z = np.random.default_rng(0).standard_normal((40, 6))
    xy = project(z, method, seed=3)
    assert xy.shape == (40, 2) and xy.min() >= 0 and xy.max() <= 1
    np.testing.assert_array_equal(xy, project(z, method, seed=3))
    cells = snap_to_grid(xy)
    assert len(set(cells.tolist())) == 40


def test_umap_is_seeded_normalised_quiet_and_compiles_once_per_machine():
    """UMAP in fresh processes, whose stderr stays empty. Its numba kernels compile once (the costly part) into
    numba's on-disk cache: a second process loads them, and lays out the same bits."""
    code = ("import json, numpy as np; "
            "from workbench.asal.atlas import project, snap_to_grid; "
            "z = np.random.default_rng(0).standard_normal((40, 6)); "
            "a, b = project(z, 'umap', seed=3), project(z, 'umap', seed=3); "
            "import umap.umap_; hits = sum(umap.umap_.smooth_knn_dist.stats.cache_hits.values()); "
            "print(json.dumps({'shape': list(a.shape), 'lo': float(a.min()), 'hi': float(a.max()), 'xy': a.tolist(), "
            "'same': bool((a == b).all()), 'cells': len(set(snap_to_grid(a).tolist())), 'hits': hits}))")
    outs = []
    for _ in range(2):  # the first compiles, unless an earlier process on this machine did
        res = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True,
                             timeout=300)
        assert res.returncode == 0, res.stderr
        assert res.stderr.strip() == "", res.stderr
        outs.append(json.loads(res.stdout))
    first, second = outs
    assert first["shape"] == [40, 2] and first["lo"] >= 0 and first["hi"] <= 1
    assert first["same"] and first["cells"] == 40
    # smooth_knn_dist: one of the kernels umap-learn itself leaves uncached
    assert second["hits"] > 0, "the second process should load UMAP's kernels from numba's cache"
    assert second["xy"] == first["xy"]


def test_cells_no_thumbnail_sits_in_are_grey_not_a_dead_members_black():
    """Three dead (black) thumbnails on a 2 × 2 grid: the fourth cell is EMPTY_CELL grey, so an empty cell and a
    member that rendered nothing look different; population_grid's short last row likewise."""
    dead = np.zeros((3, 4, 4, 3), np.uint8)
    img = compose(dead, np.array([3, 0, 1]), 2)
    assert img.shape == (8, 8, 3)
    assert (img[:4, :8] == 0).all() and (img[4:, 4:] == 0).all()  # cells 0, 1, 3: the members
    assert (img[4:, :4] == EMPTY_CELL).all() and EMPTY_CELL != (0, 0, 0)  # cell 2: none
    grid = population_grid(dead)
    assert (grid[4:, :4] == 0).all() and (grid[4:, 4:] == EMPTY_CELL).all()
