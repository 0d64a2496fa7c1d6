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


@pytest.fixture(scope="session")
def clip_weights(tmp_path_factory):
    """A random-initialised open_clip ViT-B-32 saved as a state dict: the same code path as real
    weights, without a download."""
    import open_clip
    import torch

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    path = tmp_path_factory.mktemp("clip") / "vitb32.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def clip_fm(clip_weights):
    from workbench.fm import load_fm

    return load_fm("openclip:ViT-B-32", weights=clip_weights)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Expose each phase's report on the item (rep_call), so fixtures can keep artefacts on failure."""
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


@pytest.fixture(scope="session")
def quick_zoo(tmp_path_factory):
    """A seconds-long zoo (base + add and sort experts, tiny Llama models): the same files and code paths
    as `workbench zoo build`, too small to be accurate."""
    from workbench.lm.zoo import ZooConfig, build_zoo

    return build_zoo(tmp_path_factory.mktemp("zoo") / "zoo", ZooConfig.quick(tasks=("add", "sort")))
