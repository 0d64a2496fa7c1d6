"""What the Triton (CUDA) kernels share: availability checks, the interpreter switch, small math helpers.

On CUDA the substrates run Triton kernels instead of Taichi ones: a Taichi launch costs 42–67 µs from
Python on an H200 (more than a whole reference Lenia or Boids step), Taichi launches cannot be captured in
CUDA graphs, and they run on a stream of their own. Triton kernels launch on torch's current stream, so
cuFFT calls and kernels of many steps replay as one CUDA graph.

The same kernels run on the CPU under Triton's interpreter (``TRITON_INTERPRET=1``, set before the first
import of triton): the test suite checks the GPU code paths that way on machines without a GPU. Kernels take
their block sizes from the wrapper, which picks large blocks for the interpreter (few, big NumPy operations)
and small ones for GPUs (many programs in flight).
"""

from __future__ import annotations

import os

import torch

try:  # CPU-only torch builds come without triton: the Taichi engine needs none
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the torch build
    triton = None

INF = 1e30


def interpreted() -> bool:
    """Whether Triton kernels run in the interpreter (on the CPU, for tests)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def check_engine(device: torch.device) -> None:
    """engine='triton' runs on CUDA GPUs, or on the CPU under Triton's interpreter: one clear error otherwise."""
    if triton is None:
        raise ValueError("engine='triton' needs the package triton (pip install triton); or use engine='taichi'")
    if device.type == "cuda":
        return
    if not interpreted():
        raise ValueError("engine='triton' runs on CUDA GPUs (on the CPU only under TRITON_INTERPRET=1, as the "
                         "tests do); on the CPU use the default engine='taichi'")


def next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


if triton is not None:
    @triton.jit
    def tanh(x):
        """tanh: Triton has no portable one (libdevice's is CUDA-only and absent in the interpreter).
        (1 − e^−2|x|)/(1 + e^−2|x|) loses relative accuracy near 0, so |x| < 0.25 takes the odd series to x⁹
        (truncation < 3e-9). Error ≲ 2 ulp."""
        a = tl.abs(x)
        t = tl.exp(-2.0 * a)
        y = (1.0 - t) / (1.0 + t)
        x2 = x * x
        series = x * (1.0 + x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 + x2 * (-17.0 / 315.0 + x2 * (62.0 / 2835.0)))))
        return tl.where(a < 0.25, series, tl.where(x < 0.0, -y, y))
