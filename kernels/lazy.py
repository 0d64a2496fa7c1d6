"""Package exports that load on first use (PEP 562), so `import workbench.merge` stays as cheap as the CLI's
`--help` needs while `from workbench.merge import merge_tensors` works as the README shows.

It lives in the lowest layer (installed as workbench.kernels.lazy) because every package uses it, the kernels too:
imports point one way, kernels ← simulations ← workbench ← dashboards."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import signal
import sys
import threading
from collections.abc import Callable, Iterator

#: the signals a command stops on (Ctrl-C, and `timeout`, schedulers, `kill`)
STOPPING = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Ctrl-C and SIGTERM received in the block are held and delivered as it ends (to the handlers in place before
    it). Taichi's kernel decorators run inside a bare `except: pass` (taichi.lang.kernel_impl._inside_class, 1.8 of
    a 2.2 s cold import of a kernel module): a KeyboardInterrupt, or the CLI's exception for SIGTERM, raised there
    was swallowed, and the command ran to its end and exited 0. Signal handlers belong to the main thread: in any
    other thread (a page's, a Dask worker's) the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    before = {s: signal.signal(s, lambda signum, frame: held.append(signum)) for s in STOPPING}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
        if held:  # the first that came (its exception ends what follows: a second would add nothing)
            signal.raise_signal(held[0])


def exports(package: str, modules: dict[str, list[str]]) -> tuple[Callable, Callable, list[str]]:
    """(__getattr__, __dir__, __all__) for a package whose public names live in the given submodules."""
    where = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str):
        if name in where:
            return getattr(importlib.import_module(where[name]), name)
        # a submodule not imported yet: `workbench.experts.adapt.adapt(...)`, `workbench.asal.scores` work
        # after a plain `import workbench.experts` too, as they would in a package that imports its modules
        if importlib.util.find_spec(f"{package}.{name}") is not None:
            with signals_deferred():  # the kernels' modules: Taichi's decorators swallow a Ctrl-C
                return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:  # the exports, not yet loaded, and what the package holds (its submodules)
        return sorted(set(where) | set(vars(sys.modules[package])))

    return __getattr__, __dir__, sorted(where)
