"""Each package's __init__ exports its public API (loaded on first use), as the README's imports assume."""

import importlib

import pytest


@pytest.mark.parametrize("package", ["workbench", "workbench.asal", "workbench.lm", "workbench.merge",
                                     "workbench.qd", "workbench.experts", "workbench.namm", "workbench.kernels",
                                     "workbench.simulations", "workbench.dashboards"])
def test_every_exported_name_resolves(package):
    module = importlib.import_module(package)
    assert module.__all__
    for name in module.__all__:
        assert getattr(module, name) is not None, name
    with pytest.raises(AttributeError):
        module.no_such_name  # noqa: B018


def test_readme_imports():
    from workbench.asal import SepCMAESSearch, run_search  # noqa: F401
    from workbench.fm import load_fm  # noqa: F401
    from workbench.merge import merge_state_dicts, merge_tensors  # noqa: F401
    from workbench.simulations import make_substrate, rollout  # noqa: F401


def test_dir_shows_the_exports_and_the_loaded_submodules():
    """Tab completion in JupyterLab lists what dir() gives: the exports (loaded or not) and the submodules."""
    import workbench.asal
    import workbench.asal.driver  # noqa: F401

    names = dir(workbench.asal)
    assert {"run_search", "SearchConfig", "driver"} <= set(names)
