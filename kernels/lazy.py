"""Package exports that load on first use (PEP 562), so `import workbench.merge` stays as cheap as the CLI's
`--help` needs while `from workbench.merge import merge_tensors` works as the README shows.

It lives in the lowest layer (installed as workbench.kernels.lazy) because every package uses it, the kernels too:
imports point one way, kernels ← simulations ← workbench ← dashboards."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable


def exports(package: str, modules: dict[str, list[str]]) -> tuple[Callable, Callable, list[str]]:
    """(__getattr__, __dir__, __all__) for a package whose public names live in the given submodules."""
    where = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str):
        if name in where:
            return getattr(importlib.import_module(where[name]), name)
        # a submodule not imported yet: `workbench.experts.adapt.adapt(...)`, `workbench.asal.scores` work
        # after a plain `import workbench.experts` too, as they would in a package that imports its modules
        if importlib.util.find_spec(f"{package}.{name}") is not None:
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:  # the exports, not yet loaded, and what the package holds (its submodules)
        return sorted(set(where) | set(vars(sys.modules[package])))

    return __getattr__, __dir__, sorted(where)
