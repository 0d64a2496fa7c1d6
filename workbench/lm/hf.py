"""transformers, imported once per process under one lock, before any thread takes a name from it.

transformers' ``__init__`` replaces its own entry in ``sys.modules`` with a lazy module (``_LazyModule``). When two
threads run the first ``import transformers`` at once, CPython (3.11) hands the thread that waited on the import lock
the module object it found *before* waiting: the half-built original, which has none of the lazy names; its
``from transformers import AutoModelForCausalLM`` then fails with ``ImportError: cannot import name ...``. The pages run
model loads, merges and figure exports on threads (``dashboards.shell.off_loop``), so two first imports can meet.

Every runtime import of transformers (or of a package that imports it, such as peft) in the project calls
``transformers_imported()`` first; once the package is fully in ``sys.modules`` the lazy names resolve safely from any
thread (submodule imports take CPython's per-module locks). Importing it here, lazily, keeps ``workbench --help`` and
page start-up from paying its ~0.8 s.
"""

from __future__ import annotations

import sys
import threading
from types import ModuleType

_lock = threading.Lock()


def transformers_imported() -> ModuleType:
    """The transformers package as ``sys.modules`` holds it once fully imported (the lazy module); the first call in
    a process imports it while holding a process-wide lock, so no thread sees the half-built module."""
    module = sys.modules.get("transformers")
    if module is not None and not getattr(getattr(module, "__spec__", None), "_initializing", False):
        return module
    with _lock:
        import transformers  # noqa: F401  (the import itself is the point)

        return sys.modules["transformers"]
