"""Atlas projections: shapes, seeds, and no third-party warnings in the user's output."""

import json
import subprocess
import sys

import numpy as np
import pytest

from workbench.asal.atlas import project, snap_to_grid


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_projections_are_seeded_and_normalised(method):
    z = np.random.default_rng(0).standard_normal((40, 6))
    xy = project(z, method, seed=3)
    assert xy.shape == (40, 2) and xy.min() >= 0 and xy.max() <= 1
    np.testing.assert_array_equal(xy, project(z, method, seed=3))
    cells = snap_to_grid(xy)
    assert len(set(cells.tolist())) == 40


def test_umap_is_seeded_normalised_and_quiet_in_a_fresh_process():
    """The same checks for UMAP, in a fresh process (its numba functions compile once there, the costly part),
    whose stderr stays empty."""
    code = ("import json, numpy as np; from workbench.asal.atlas import project, snap_to_grid; "
            "z = np.random.default_rng(0).standard_normal((40, 6)); "
            "a, b = project(z, 'umap', seed=3), project(z, 'umap', seed=3); "
            "print(json.dumps({'shape': list(a.shape), 'lo': float(a.min()), 'hi': float(a.max()), "
            "'same': bool((a == b).all()), 'cells': len(set(snap_to_grid(a).tolist()))}))")
    res = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stderr.strip() == "", res.stderr
    out = json.loads(res.stdout)
    assert out["shape"] == [40, 2] and out["lo"] >= 0 and out["hi"] <= 1
    assert out["same"] and out["cells"] == 40
