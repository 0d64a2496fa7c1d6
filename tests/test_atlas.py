"""Atlas projections: shapes, seeds, and no third-party warnings in the user's output."""

import json
import subprocess
import sys

import numpy as np
import pytest

from workbench.asal.atlas import EMPTY_CELL, as_uint8_frames, compose, population_grid, project, snap_to_grid


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_projections_are_seeded_and_normalised(method):
    z = np.random.default_rng(0).standard_normal((40, 6))
    xy = project(z, method, seed=3)
    assert xy.shape == (40, 2) and xy.min() >= 0 and xy.max() <= 1
    np.testing.assert_array_equal(xy, project(z, method, seed=3))
    cells = snap_to_grid(xy)
    assert len(set(cells.tolist())) == 40


def test_a_tsne_map_is_the_same_for_every_seed_at_an_fms_width():
    """The atlas page disables its Seed under t-SNE: the map starts from PCA's layout. sklearn's own init="pca"
    takes a randomized, seeded SVD for inputs over 500 wide (CLIP's 512 dimensions), and the map moved with the
    seed the page showed disabled; 6 dimensions hid it."""
    z = np.random.default_rng(1).standard_normal((40, 512)).astype(np.float32)
    np.testing.assert_array_equal(project(z, "tsne", seed=0), project(z, "tsne", seed=7))


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


def test_the_grid_keeps_the_projections_orientation_top_row_up():
    """project's y points up and the grid's row 0 is at the top: a point in the top-left corner of [0, 1]² lands
    in cell 0 (top-left), one in the bottom-right corner in the last cell, so the atlas is not drawn upside down."""
    xy = np.array([[0.1, 0.9], [0.9, 0.9], [0.1, 0.1], [0.9, 0.1]])  # top-left, top-right, bottom-left, bottom-right
    assert snap_to_grid(xy, 2).tolist() == [0, 1, 2, 3]
    assert snap_to_grid(np.array([[0.2, 0.95], [0.8, 0.05]]), 3).tolist() == [0, 8]


def test_a_population_grid_has_no_empty_rows_below_its_thumbnails():
    """Six 4 × 4 thumbnails: a 3 × 2 grid (12 × 8 pixels), not 3 × 3 with an empty grey row; in order, row by row."""
    thumbs = np.arange(6, dtype=np.uint8)[:, None, None, None] * np.ones((6, 4, 4, 3), np.uint8) * 40
    grid = population_grid(thumbs)
    assert grid.shape == (8, 12, 3)
    for i in range(6):
        r, c = divmod(i, 3)
        assert (grid[r * 4:(r + 1) * 4, c * 4:(c + 1) * 4] == 40 * i).all()


def test_float_thumbnails_are_rounded_to_bytes_as_the_exports_write_them():
    """The atlas and population grids turn [0, 1] frames into the bytes the exported PNGs and videos hold
    (export.to_uint8: rounded, not truncated)."""
    from workbench.export import to_uint8

    frames = np.random.default_rng(0).random((3, 4, 4, 3)).astype(np.float32)
    np.testing.assert_array_equal(as_uint8_frames(frames), to_uint8(frames))
    assert as_uint8_frames(np.array([[[[0.5, 0.999, 1.0]]]])).tolist() == [[[[128, 255, 255]]]]
