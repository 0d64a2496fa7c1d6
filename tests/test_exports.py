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


def test_the_kernels_folder_does_not_hide_hugging_faces_kernels_package():
    """transformers ≥ 5.25 imports Hugging Face's `kernels` package; run from the repository's root (`python -m
    pytest`, `python -m workbench`) the folder kernels/ (workbench.kernels) was found first under that name and
    every model load failed ("cannot import name 'CUDAProperties' from 'kernels'"). Imported under that name,
    the folder hands over to the installed package, or says there is none."""
    import importlib.metadata
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    code = "import kernels, workbench.kernels; print(kernels.__file__); print(workbench.kernels.resolve_device)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    try:
        importlib.metadata.distribution("kernels")
    except importlib.metadata.PackageNotFoundError:  # nothing to hide: the folder says what it is
        assert proc.returncode == 1 and "this folder is the workbench's: import workbench.kernels" in proc.stderr
        return
    assert proc.returncode == 0, proc.stderr
    found = Path(proc.stdout.splitlines()[0]).resolve()
    assert root / "kernels" not in found.parents and "resolve_device" in proc.stdout
