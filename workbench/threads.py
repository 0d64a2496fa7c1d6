"""torch's intra-op thread count for a block of work: zoo builds, CycleQD, experts and NAMM runs, their evaluations
and the benchmarks pin it (float sums depend on it, so a resumed run must use the same count) and give the process's
setting back afterwards. ASAL searches and merges need no pin: their results were measured the same on 1, 2 and 4
threads, a merge's whole-tensor sums being thread-free (merge.methods.thread_free_sum). Imports torch only when
used, so modules that check a config before anything loads can import it at the top."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to n inside the block (floats depend on it), restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)
