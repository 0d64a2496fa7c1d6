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


ROOT = importlib.import_module("workbench").__file__.rsplit("/", 2)[0]
LAYERS = {"kernels": "workbench.kernels", "simulations": "workbench.simulations", "workbench": "workbench",
          "dashboards": "workbench.dashboards"}


def _imports(path):
    """Every module a file imports, at its top or inside a function (absolute names)."""
    import ast

    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module


def test_imports_point_one_way():
    """kernels ← simulations ← workbench ← dashboards, and only the CLI (and its entry point) reaches the pages:
    a module of a lower layer importing a higher one is named with the import."""
    from pathlib import Path

    def layer(module: str) -> int | None:
        for rank, name in enumerate(("workbench.kernels", "workbench.simulations", "workbench.dashboards")):
            if module == name or module.startswith(name + "."):
                return (0, 1, 3)[rank]
        return 2 if module == "workbench" or module.startswith("workbench.") else None

    wrong = []
    for folder, package in LAYERS.items():
        own = layer(package)
        for path in sorted(Path(ROOT, folder).rglob("*.py")):
            rel = path.relative_to(Path(ROOT, folder))
            if folder == "workbench" and rel.parts[0] in ("cli", "entry.py"):
                continue  # the CLI imports the library and the pages (serve, figure view)
            for module in _imports(path):
                if layer(module) is not None and layer(module) > own or module.startswith("workbench.cli"):
                    wrong.append(f"{folder}/{rel} imports {module}")
    assert wrong == []


def test_notebooks_and_the_readme_import_what_the_packages_export():
    """A name a package exports is imported from the package, not from the module that holds it today (modules
    move; the exports are the API the notebooks and the README teach)."""
    import json
    import re
    from pathlib import Path

    sources = [Path(ROOT, "README.md").read_text(encoding="utf-8")]
    for nb in sorted(Path(ROOT, "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
        sources += ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    reached = []
    for text in sources:
        for module, names in re.findall(r"^\s*from (workbench(?:\.\w+)+) import ([\w, ]+)$", text, re.M):
            parts = module.split(".")
            if hasattr(importlib.import_module(module), "__path__"):
                continue  # a package's own exports (workbench.simulations' make_substrate)
            for k in range(len(parts) - 1, 0, -1):
                package = importlib.import_module(".".join(parts[:k]))
                if hasattr(package, "__all__") and all(n.strip() in package.__all__ for n in names.split(",")):
                    reached.append(f"from {module} import {names} (exported by {package.__name__})")
                    break
    assert reached == []
