"""Many simulation steps per launch on CUDA: a step function over fixed buffers, replayed as CUDA graphs.

A step of a small simulation is a handful of short kernels; launched one by one from Python, the launches
cost more than the work. Captured once as a CUDA graph of 2^j steps, a whole chunk of steps replays with
one call, and the GPU runs the kernels back to back. Graphs of 32, 16, …, 1 steps cover any step count.

The step function must only read and write buffers that outlive the graphs (no new tensors, no host sync).
Off CUDA, or when WORKBENCH_CUDA_GRAPHS=0, or if a capture fails, the steps simply run in a loop.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import torch


class GraphedSteps:
    """Run `step()` n times: replayed CUDA graphs on CUDA, a plain loop elsewhere."""

    def __init__(self, step: Callable[[], None], device: torch.device, max_steps_per_graph: int = 32):
        self.step = step
        self.sizes = [1 << j for j in range(max(0, max_steps_per_graph.bit_length() - 1), -1, -1)]
        self.enabled = device.type == "cuda" and os.environ.get("WORKBENCH_CUDA_GRAPHS", "1") != "0"
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.pool = None
        self.warm = False

    def run(self, n: int) -> None:
        """Run step() n times (none for n ≤ 0). On CUDA the very first step runs eagerly (it compiles the kernels),
        the rest as replays of graphs of power-of-two step counts, largest first, each captured at first use; a
        plain loop off CUDA, with WORKBENCH_CUDA_GRAPHS=0, or once a capture failed."""
        if n <= 0:
            return
        if not self.enabled:
            for _ in range(n):
                self.step()
            return
        if not self.warm:
            # The first step runs eagerly: it compiles the kernels and makes the FFT plans, which must not
            # happen during a capture. It is a real step of the simulation, not a throw-away.
            self.step()
            self.warm = True
            n -= 1
        for size in self.sizes:
            while n >= size:
                graph = self._graph(size)
                if graph is None:  # capture failed: the rest runs eagerly
                    for _ in range(n):
                        self.step()
                    return
                graph.replay()
                n -= size

    def _graph(self, size: int) -> torch.cuda.CUDAGraph | None:
        if size in self.graphs:
            return self.graphs[size]
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        try:
            # thread_local: another thread's CUDA work meanwhile (a second search of one server embedding its frames)
            # is no error of this capture, nor this capture an error of its (global, the default, failed it with
            # "operation not permitted when stream is capturing"); this thread's steps alone are captured
            with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
                for _ in range(size):
                    self.step()
        except Exception as exc:  # noqa: BLE001 - any capture failure means: run without graphs
            torch.cuda.synchronize()
            self.enabled = False
            warnings.warn(f"CUDA graph capture failed ({type(exc).__name__}: {exc}); running steps one by one",
                          RuntimeWarning, stacklevel=3)
            return None
        self.graphs[size] = graph
        return graph
