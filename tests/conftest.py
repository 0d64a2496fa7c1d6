import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

SHARED = Path(os.environ.get("WORKBENCH_SHARED", Path(__file__).resolve().parents[2] / "shared"))


@pytest.fixture(scope="session")
def golden():
    path = SHARED / "data" / "asal_step1_reference.npz"
    if not path.is_file():
        pytest.fail(f"golden data {path} missing: check out shared/ beside the repo or set WORKBENCH_SHARED")
    return dict(np.load(path))


@pytest.fixture(scope="session")
def substrates():
    from workbench.simulations import make_substrate

    return {name: make_substrate(name) for name in ("lenia", "boids", "plife")}
