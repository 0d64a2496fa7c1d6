"""The one place that initialises Taichi and picks where arrays live.

Taichi is started lazily on the first kernel call so that importing the library stays cheap.
``WORKBENCH_ARCH`` (``cpu``, ``cuda``, ``vulkan``, ``metal`` or ``gpu``) overrides the choice;
by default a GPU backend is used when one is present and the CPU otherwise.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading

import taichi as ti
import torch

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

_ARCHES = {"cpu": ti.cpu, "cuda": ti.cuda, "vulkan": ti.vulkan, "metal": ti.metal, "gpu": ti.gpu}


def ensure_taichi() -> str:
    """Initialise Taichi once (thread-safe) and return the name of the backend in use."""
    global _arch
    if _arch is not None:
        return _arch
    with _lock:
        if _arch is None:
            wanted = os.environ.get("WORKBENCH_ARCH", "gpu" if torch.cuda.is_available() else "cpu")
            if wanted not in _ARCHES:
                raise ValueError(f"WORKBENCH_ARCH={wanted!r} is not one of {sorted(_ARCHES)}")
            # Taichi's JIT cache makes the second process start fast; fp32 matches the reference.
            with contextlib.redirect_stdout(io.StringIO()):  # ti.init prints "Starting on arch=..."
                ti.init(arch=_ARCHES[wanted], default_fp=ti.f32, default_ip=ti.i32,
                        offline_cache=True, log_level=ti.WARN)
            _arch = ti.lang.impl.current_cfg().arch.name
    return _arch


def torch_device() -> torch.device:
    """The torch device whose tensors Taichi kernels can read without copies."""
    arch = ensure_taichi()
    return torch.device("cuda") if arch == "cuda" else torch.device("cpu")


def row_bands(rows: int) -> tuple[int, int]:
    """How to cut `rows` image rows into bands, one thread each: (bands, loop stride).

    On the CPU a few bands per core, each its own chunk of the range-for (stride CPU_CHUNK); on a GPU
    one band per row. The picture does not depend on the choice.
    """
    if ensure_taichi() in ("x64", "arm64"):
        return min(rows, max(16, 4 * (os.cpu_count() or 1))), CPU_CHUNK
    return rows, 1

