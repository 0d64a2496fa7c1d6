"""The one place that initialises Taichi.

Taichi runs the CPU kernels (and, on request, Taichi's own GPU backends); CUDA GPUs use the Triton
kernels (see kernels/triton_*.py), so Taichi is imported and started lazily, on the first Taichi kernel
call, and a GPU-only process never needs it. The arch follows the device of the substrate that asks:
the CPU, or CUDA for a substrate made with engine="taichi" on a CUDA device; ``WORKBENCH_ARCH=vulkan``
or ``metal`` run the Taichi kernels there instead of on the CPU.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import threading
from collections.abc import Callable
from typing import Any

import torch

from workbench.kernels.device import arch_setting
from workbench.kernels.lazy import signals_deferred

# Taichi's CPU backend hands out range-for iterations in chunks of 512 (loop_config(block_dim=...) is
# ignored there), so a loop over fewer items runs on one core. A loop over range(P * CPU_CHUNK) that
# works only on multiples of CPU_CHUNK gives each simulation its own chunk: small populations still
# use every core. Kernels use this for their per-simulation serial parts.
CPU_CHUNK = 512
# Loops over image rows (a few hundred) would fit in one chunk and use one core. Row loops iterate over
# rows × ROW_STRIDE and work only on multiples of ROW_STRIDE: 16 rows a chunk, so every core gets rows.
ROW_STRIDE = 32

_lock = threading.Lock()
_arch: str | None = None
# Taichi's runtime is one per process and not thread-safe: two threads compiling kernels at once (two searches
# started together from two browser tabs of one `workbench serve`) failed one of them ("Kernels cannot call other
# kernels", or an LLVM context assertion). Every kernel call takes this lock; Taichi's CPU kernels use every core
# anyway, so two searches lose little by taking turns.
_calls = threading.RLock()


def kernel(fn: Callable[..., Any]) -> Callable[..., Any]:
    """ti.kernel, whose every call (compilation included) holds the process's Taichi lock: use it for each kernel.
    The kernel's autodiff (`.grad`) is not carried over: no kernel here is differentiated."""
    import taichi as ti

    compiled = ti.kernel(fn)

    @functools.wraps(fn)
    def locked(*args: Any, **kwargs: Any) -> Any:
        with _calls:
            return compiled(*args, **kwargs)

    return locked


def _wanted_arch(device: torch.device) -> str:
    if device.type == "cuda":
        return "cuda"
    setting = arch_setting()
    return setting if setting in ("vulkan", "metal") else "cpu"


def ensure_taichi(device: torch.device | str = "cpu") -> str:
    """Initialise Taichi once (thread-safe) for the device's arch; returns Taichi's name of the arch in use."""
    global _arch
    wanted = _wanted_arch(torch.device(device))
    if _arch is None:
        with _lock, signals_deferred():  # Taichi swallows a Ctrl-C in places (lazy.signals_deferred)
            if _arch is None:
                import taichi as ti

                arches = {"cpu": ti.cpu, "cuda": ti.cuda, "vulkan": ti.vulkan, "metal": ti.metal}
                # Taichi's JIT cache makes the second process start fast; fp32 matches the reference.
                flushing = flushes_subnormals()
                with contextlib.redirect_stdout(io.StringIO()):  # ti.init prints "Starting on arch=..."
                    ti.init(arch=arches[wanted], default_fp=ti.f32, default_ip=ti.i32,
                            offline_cache=True, log_level=ti.WARN)
                # ti.init turns on flush-to-zero in the calling thread and leaves it on: afterwards that thread's
                # NumPy and torch read and wrote subnormal numbers as 0 (a notebook's own NumPy after a Lenia
                # step; a figure's CSV wrote 5e-324 as 0.0). Put back as it was; the kernels' bits are unchanged
                # (they run on Taichi's threads)
                if not flushing and flushes_subnormals():
                    torch.set_flush_denormal(False)
                # the root field tree made here, on the thread that made the runtime: the first kernel call makes
                # it otherwise, and from another thread (a second search's) Taichi's LLVM context refuses it
                # ("add_struct_module ... get_id() == main_thread_id_"), failing that search
                ti.lang.impl.get_runtime().materialize()
                _arch = ti.lang.impl.current_cfg().arch.name
    on_host = _arch in ("x64", "arm64")
    if (wanted == "cpu") != on_host or (wanted == "cuda" and _arch != "cuda"):
        raise ValueError(f"Taichi already runs on {_arch} in this process and cannot also run on {wanted}; "
                         f"use one device per process for Taichi kernels (engine='triton' on CUDA)")
    return _arch


def flushes_subnormals() -> bool:
    """Whether this thread's floating point flushes subnormal numbers to zero (x86's FTZ/DAZ: the smallest normal
    double halved comes out 0)."""
    import numpy as np

    return float(np.float64(2.2250738585072014e-308) / np.float64(2.0)) == 0.0


def row_bands(rows: int) -> tuple[int, int]:
    """How to cut `rows` image rows into bands, one thread each: (bands, loop stride).

    On the CPU a few bands per core, each its own chunk of the range-for (stride CPU_CHUNK); on a GPU
    one band per row. The picture does not depend on the choice.
    """
    if _arch in (None, "x64", "arm64"):
        return min(rows, max(16, 4 * (os.cpu_count() or 1))), CPU_CHUNK
    return rows, 1
