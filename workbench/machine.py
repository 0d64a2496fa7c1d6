"""The machine a benchmark ran on, as docs/benchmarks.md records it beside each figure.

Sessions run on different CPUs (some without bf16 or AVX-512), so a timing means little without its CPU model and
the flags that change our kernels' speed, the cores the process may use, the memory, the GPU and the versions of
the parts timed. Every `workbench bench …` JSON carries this under "machine" ("x86_64" was all most of them said).
"""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import sys
from pathlib import Path

#: the CPU flags our timings depend on (vector width, bf16 matmuls, AMX tiles)
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")

#: the distributions whose versions a figure depends on (read from their metadata: nothing is imported)
PACKAGES = ("torch", "numpy", "taichi", "open_clip_torch", "transformers", "duckdb", "panel", "bokeh", "workbench")


def _cpuinfo(text: str) -> tuple[str | None, list[str]]:
    """The CPU's model name and which of FLAGS it has, from /proc/cpuinfo's text (its first processor)."""
    model, flags = None, set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model is None:
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return model, [f for f in FLAGS if f in flags]


def _memory_gib(meminfo: str) -> float | None:
    """MemTotal of /proc/meminfo's text in GiB (one decimal), None if it is not there."""
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 2**20, 1)
    return None


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:  # not Linux, or /proc hidden
        return ""


def _version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def machine() -> dict:
    """What the timings ran on: {"cpu": model, "cpu_flags": [...], "cores": usable by this process, "cpus": the
    machine's, "memory_gib", "gpu": CUDA device name or None, "os", "python", "versions": {package: version}}.

    The GPU is named only where torch is imported already (a CPU benchmark does not pay for CUDA's start)."""
    model, flags = _cpuinfo(_read("/proc/cpuinfo"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch = sys.modules.get("torch")
    gpu = torch.cuda.get_device_name() if torch is not None and torch.cuda.is_available() else None
    return {"cpu": model or platform.processor() or platform.machine(), "cpu_flags": flags, "cores": cores,
            "cpus": os.cpu_count(), "memory_gib": _memory_gib(_read("/proc/meminfo")), "gpu": gpu,
            "os": platform.platform(), "python": platform.python_version(),
            "versions": {name: _version(name) for name in PACKAGES}}
