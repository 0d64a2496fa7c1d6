import gc
import os
import sys

import pytest

# The suite's processes hold torch, transformers, Panel and Bokeh: at Python's default threshold (700 allocations)
# the collector walks their objects again and again (in-process tests: 3-5 % of their time). The workbench
# command collects as rarely (workbench.cli.run).
gc.set_threshold(10_000, 10, 10)

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")


def _no_gpu() -> bool:
    import torch

    return not torch.cuda.is_available()


# Without a GPU the Triton (CUDA) kernels run under Triton's interpreter, so the GPU code paths are tested
# on the CPU too (this must be set before triton is first imported). With a GPU they run for real.
if _no_gpu():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def golden():
    """One step of each substrate from the ASAL reference implementation (data/asal_step1_reference.npz)."""
    from workbench.simulations.reference import golden

    return golden()


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


@pytest.fixture(autouse=True)
def _no_page_search_left_running():
    """A test that fails while a page's search runs leaves no search thread under the interpreter's exit: its
    daemon thread, left running, aborted the process (rc -6) and hid the failure's report."""
    yield
    search = sys.modules.get("workbench.dashboards.search")  # only where a test imported the pages
    if search is not None:
        search.SearchJob.stop_all()
