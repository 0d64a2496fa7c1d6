"""torch's intra-op thread count for a block of work: zoo builds, CycleQD, experts and NAMM runs, their evaluations
and the benchmarks pin it (float sums depend on it, so a resumed run must use the same count) and give the process's
setting back afterwards. ASAL searches and merges need no pin: their results were measured the same on 1, 2 and 4
threads, a merge's whole-tensor sums being thread-free (merge.methods.thread_free_sum). Imports torch only when
used, so modules that check a config before anything loads can import it at the top."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

# The blocks open now, process-wide, and the count before the first of them. torch's count is partly the process's
# (the default new threads take, MKL's) and partly each thread's (OpenMP's): two blocks of two threads (two pages of
# one server rebuilding CycleQD elites at once, a NAMM trace beside) each gave back the count it saw as it began,
# and the later one's "before" was the earlier one's pin: the server was left on 1 thread for good.
_lock = threading.Lock()
_open = 0
_outside = 0
_mine = threading.local()  # this thread's own pins, innermost last: a nested block gives back its outer one's


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to n inside the block (floats depend on it), restored after: to the
    enclosing block's count of this thread, else to the process's count before any block (of any thread) began."""
    import torch

    global _open, _outside
    pins: list[int] = _mine.__dict__.setdefault("pins", [])
    with _lock:
        # read on every thread, not only the first block's: torch sets a thread's own count from the process's at
        # its first read, and a first read after another block ended took that block's restore over this pin
        before = torch.get_num_threads()
        torch.set_num_threads(int(n))  # first: a count it refuses (0) leaves no block counted open for good
        if _open == 0:
            _outside = before
        _open += 1
    pins.append(int(n))
    try:
        yield
    finally:
        pins.pop()
        with _lock:
            _open -= 1
            torch.set_num_threads(pins[-1] if pins else _outside)
