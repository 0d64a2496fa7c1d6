"""The one place that picks where tensors live: substrates, foundation models and language models all ask here.

    resolve_device(None)      # the default: the GPU when torch sees one, else the CPU
    resolve_device("cpu")     # explicit choices are checked: "cuda" without a GPU is one clear error

``WORKBENCH_ARCH`` overrides the default for the whole process: ``cpu`` makes the CPU the default (an explicit
``"cuda"`` still takes the GPU), ``cuda`` insists on a CUDA GPU (and says so when there is none), ``gpu`` (or
unset) takes the GPU when present. The
Taichi-only backends ``vulkan`` and ``metal`` run the Taichi kernels there and keep torch tensors on the CPU.
This module imports no Taichi, so GPU-only code paths never need it.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

import torch

ENV = "WORKBENCH_ARCH"
ARCHES = ("cpu", "cuda", "gpu", "vulkan", "metal")


def cuda_available() -> bool:
    """Whether torch sees a CUDA GPU."""
    return torch.cuda.is_available()


def _no_gpu(asked: str) -> ValueError:
    why = "torch was built without CUDA" if torch.version.cuda is None else "torch sees no CUDA GPU"
    return ValueError(f"{asked} but {why} (torch {torch.__version__}); the CPU is the fallback: "
                      f"leave it unset (or set {ENV}=cpu / device='cpu')")


def arch_setting() -> str | None:
    """The checked value of WORKBENCH_ARCH (None when unset)."""
    wanted = os.environ.get(ENV)
    if wanted is None or wanted == "":
        return None
    if wanted not in ARCHES:
        raise ValueError(f"{ENV}={wanted!r} is not one of {', '.join(ARCHES)}")
    return wanted


def default_device() -> torch.device:
    """The GPU when torch sees one (unless WORKBENCH_ARCH says otherwise), else the CPU."""
    wanted = arch_setting()
    if wanted == "cuda" and not cuda_available():
        raise _no_gpu(f"{ENV}=cuda")
    if wanted in (None, "gpu", "cuda") and cuda_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """A checked torch device: None → default_device(); "cuda" / "cuda:N" only where that GPU exists."""
    if device is None:
        return default_device()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device={device!r} is not a device; use 'cpu', 'cuda' or 'cuda:N'") from exc
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise ValueError(f"device={device!r}: only 'cpu' and CUDA GPUs ('cuda', 'cuda:N') are supported")
    if not cuda_available():
        raise _no_gpu(f"device={str(device)!r}")
    index = torch.cuda.current_device() if dev.index is None else dev.index
    if index >= torch.cuda.device_count():
        raise ValueError(f"device={str(device)!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                         f"numbered from 0")
    return torch.device("cuda", index)


def check_device_flag(value: str | None) -> str | None:
    """The checked value of a --device flag (unchanged), or one ValueError naming the flag and the fix (the CLI's
    commands and `python -m workbench.lm.bench` check it before any work)."""
    try:
        resolve_device(value)
    except ValueError:
        why = "this torch has no CUDA" if torch.version.cuda is None else "torch sees no CUDA GPU"
        if value is None:  # WORKBENCH_ARCH set to a bad value, or to cuda on a machine without a GPU
            if arch_setting() == "cuda":
                raise ValueError(f"{ENV}=cuda: {why}; unset it or use --device cpu") from None
            raise
        try:
            kind = torch.device(value).type
        except (RuntimeError, TypeError):
            kind = None
        if kind not in ("cpu", "cuda"):
            raise ValueError(f"--device {value}: not a device; use cpu, cuda or cuda:N") from None
        if not cuda_available():
            raise ValueError(f"--device {value}: {why}; use --device cpu (the fallback)") from None
        count = torch.cuda.device_count()
        raise ValueError(f"--device {value}: this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}") from None
    return value


def synchronize(device: torch.device | str | None) -> None:
    """Wait for the device's queued work (a no-op on the CPU): timings call this before reading a clock."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def describe(device: torch.device | str) -> str:
    """A short name for reports: 'cpu' or the GPU's name (device: a torch.device or its name, "cuda:0")."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu"


def fits_in_memory(device: torch.device, population: int, bytes_per_item: int, what: str,
                   free_bytes: int | None = None, fraction: float = 0.9) -> None:
    """Raise one clear error, before any allocation, when `population` items of `bytes_per_item` do not fit in
    the GPU's free memory; it names the largest population that fits. CPUs are not checked (the OS pages).

    `free_bytes` overrides the measured free memory (for callers that reserve some themselves).
    """
    if device.type != "cuda" and free_bytes is None:
        return
    if free_bytes is None:
        free_bytes, _ = torch.cuda.mem_get_info(device)
        # memory torch's allocator holds but no tensor uses is free to us too
        free_bytes += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    budget = int(free_bytes * fraction)
    need = population * bytes_per_item
    if need <= budget:
        return
    fit = max(0, budget // max(1, bytes_per_item))
    raise ValueError(f"{what}: a population of {population} needs about {need / 2**30:.1f} GiB on {device}, "
                     f"{free_bytes / 2**30:.1f} GiB are free: at most {fit} fit at once; evaluate fewer at a "
                     f"time (--chunk N, or a smaller --pop)")


_ieee = {"lock": threading.Lock(), "depth": 0, "before": None}


@contextlib.contextmanager
def ieee_convolutions() -> Iterator[None]:
    """cuDNN's float32 convolutions in full float32 inside the block, the user's setting back after it.

    torch lets cuDNN round a float32 convolution's operands to TF32 (a 10-bit mantissa) by default
    (``torch.backends.cudnn.conv.fp32_precision`` "tf32"; ``allow_tf32`` before torch 2.9): that moves an NCA d = 3
    state by 3e-5 and a Flow-Lenia world by 5e-4 in one step, where the reference's golden step holds to 1e-5.
    The setting is process-wide, so nested and concurrent blocks (a page's search thread beside a notebook's)
    share one save and one restore. The CPU ignores it.
    """
    conv = getattr(torch.backends.cudnn, "conv", None)
    modern = conv is not None and hasattr(conv, "fp32_precision")
    with _ieee["lock"]:
        if _ieee["depth"] == 0:
            if modern:
                _ieee["before"], conv.fp32_precision = conv.fp32_precision, "ieee"
            else:
                _ieee["before"], torch.backends.cudnn.allow_tf32 = torch.backends.cudnn.allow_tf32, False
        _ieee["depth"] += 1
    try:
        yield
    finally:
        with _ieee["lock"]:
            _ieee["depth"] -= 1
            if _ieee["depth"] == 0:
                if modern:
                    conv.fp32_precision = _ieee["before"]
                else:
                    torch.backends.cudnn.allow_tf32 = _ieee["before"]
