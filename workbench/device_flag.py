"""The --device flag that every command shares: its help text and its check.

The check runs before any model loads or progress bar starts and fails with one short line (it fits an
80-column terminal) that names the flag which fixes it. The value itself is passed on unchanged: the library
resolves it again where it runs (Dask workers included), so no flag keeps meaning "this machine's GPU when it
has one" (workbench.kernels.device).
"""

from __future__ import annotations

import argparse

DEVICE_HELP = "cpu, cuda or cuda:N (default: the GPU when torch sees one, else the CPU)"


def add_device_argument(parser: argparse.ArgumentParser, more: str = "") -> None:
    parser.add_argument("--device", metavar="DEVICE", help=DEVICE_HELP + more)


def check_device(value: str | None) -> str | None:
    """The checked value of --device (unchanged), or one ValueError naming the fix."""
    import torch

    from workbench.kernels.device import ENV, arch_setting, cuda_available, resolve_device

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
