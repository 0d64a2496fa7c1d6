"""Atlas projections: shapes, seeds, and no third-party warnings in the user's output."""

import subprocess
import sys

import numpy as np
import pytest

from workbench.asal.atlas import project, snap_to_grid


@pytest.mark.parametrize("method", ["pca", "tsne", "umap"])
def test_projections_are_seeded_and_normalised(method):
    z = np.random.default_rng(0).standard_normal((40, 6))
    xy = project(z, method, seed=3)
    assert xy.shape == (40, 2) and xy.min() >= 0 and xy.max() <= 1
    np.testing.assert_array_equal(xy, project(z, method, seed=3))
    cells = snap_to_grid(xy)
    assert len(set(cells.tolist())) == 40


def test_umap_is_quiet_in_a_fresh_process():
    code = ("import numpy as np; from workbench.asal.atlas import project; "
            "project(np.random.default_rng(0).standard_normal((30, 5)), 'umap')")
    res = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stderr.strip() == "", res.stderr
