"""The BAM scorer (spec §3, "BAM scorer"): one small backward-attention layer over the cached tokens of one
(layer, KV head), then a single linear score per token. Its 4172 parameters are shared by all layers and heads
and live in ONE flat vector (what CMA-ES evolves), matrices row-major [in, out] (y = x·W, the transpose of
torch.nn.Linear's weight):

    offset  size  name     shape     role
    0       2400  W_qkv    25 × 96   q = cols 0–31, k = 32–63, v = 64–95
    2400      96  b_qkv    96
    2496    1600  W_o      32 × 50   r = out[0:25], g = out[25:50]
    4096      50  b_o      50
    4146      25  W_s      25 × 1    the score layer
    4171       1  b_s      1

    scores = bam_scores(theta, features, valid)   # (..., T, 25), valid (..., T) -> (..., T)

Token i attends to tokens j ≥ i only (BACKWARD mask: a token is judged by what came after it), padding keys are
masked with an additive float32 minimum, no RoPE, scale 1/√32; x′ = x⊙(1 + g) + r (no nonlinearity);
score = x′·W_s + b_s. All-zero θ scores 0 everywhere, which the selection keeps (score ≥ 0 qualifies).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from workbench.namm.features import FEATURE_DIM, as_tensor

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

HIDDEN = 32                   # the one attention head's dimension
OUT = 2 * FEATURE_DIM         # W_o's outputs: r (25) and g (25)
# (name, shape) in the order they sit in θ
LAYOUT: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("W_qkv", (FEATURE_DIM, 3 * HIDDEN)),
    ("b_qkv", (3 * HIDDEN,)),
    ("W_o", (HIDDEN, OUT)),
    ("b_o", (OUT,)),
    ("W_s", (FEATURE_DIM, 1)),
    ("b_s", (1,)),
)
N_PARAMS = sum(math.prod(shape) for _, shape in LAYOUT)  # 4172


def offsets() -> dict[str, int]:
    """Where each weight starts in θ: W_qkv 0, b_qkv 2400, W_o 2496, b_o 4096, W_s 4146, b_s 4171."""
    out, at = {}, 0
    for name, shape in LAYOUT:
        out[name] = at
        at += math.prod(shape)
    return out


@dataclass(frozen=True)
class BAMParams:
    """θ unpacked into its weights (float32, row-major [in, out])."""

    W_qkv: torch.Tensor
    b_qkv: torch.Tensor
    W_o: torch.Tensor
    b_o: torch.Tensor
    W_s: torch.Tensor
    b_s: torch.Tensor


def check_theta(theta: torch.Tensor | ArrayLike) -> torch.Tensor:
    """θ as a flat float32 tensor of N_PARAMS numbers, or one clear error."""
    theta = as_tensor(theta)
    if theta.ndim != 1 or theta.shape[0] != N_PARAMS:
        raise ValueError(f"the BAM policy has {N_PARAMS} parameters (one flat vector); got shape "
                         f"{tuple(theta.shape)}: pass a 1-D θ of length {N_PARAMS} (np.zeros({N_PARAMS}) keeps "
                         "every token)")
    if not bool(torch.isfinite(theta).all()):
        raise ValueError("θ holds NaN or infinite values: pass a finite parameter vector")
    return theta


def unpack_theta(theta: torch.Tensor | ArrayLike) -> BAMParams:
    """Slice the flat θ (4172,) into the scorer's weights (views, no copy)."""
    theta = check_theta(theta)
    parts, at = {}, 0
    for name, shape in LAYOUT:
        size = math.prod(shape)
        parts[name] = theta[at: at + size].reshape(shape)
        at += size
    return BAMParams(**parts)


def bam_scores(theta: torch.Tensor | ArrayLike | BAMParams, features: torch.Tensor | ArrayLike,
               valid: torch.Tensor | ArrayLike | None = None) -> torch.Tensor:
    """Scores of the cached tokens of each (layer, head): features (..., T, 25), valid (T,) or broadcastable to
    (..., T) (False = padding) -> (..., T) float32. Padding tokens still get a (meaningless) finite score here:
    `select_tokens` replaces it with −∞ (and the newest token's with +∞)."""
    p = theta if isinstance(theta, BAMParams) else unpack_theta(theta)
    x = as_tensor(features)
    if x.shape[-1] != FEATURE_DIM:
        raise ValueError(f"features must end in {FEATURE_DIM} numbers (8 age + 17 spectrogram), got {tuple(x.shape)}")
    dev = x.device
    n_tokens = x.shape[-2]
    qkv = x @ p.W_qkv.to(dev) + p.b_qkv.to(dev)
    q, k, v = qkv[..., :HIDDEN], qkv[..., HIDDEN: 2 * HIDDEN], qkv[..., 2 * HIDDEN:]
    logits = (q @ k.transpose(-1, -2)) / math.sqrt(HIDDEN)                      # (..., T_query, T_key)
    idx = torch.arange(n_tokens, device=dev)
    hidden = idx[None, :] < idx[:, None]                                        # backward: key j < query i hidden
    if valid is not None:
        keys = torch.broadcast_to(as_tensor(valid, torch.bool, dev), x.shape[:-1])
        hidden = hidden | ~keys[..., None, :]                                   # padding keys hidden
    logits = logits + hidden.to(torch.float32) * torch.finfo(torch.float32).min  # one additive minimum
    out = torch.softmax(logits, dim=-1) @ v @ p.W_o.to(dev) + p.b_o.to(dev)    # (..., T, 50)
    r, g = out[..., :FEATURE_DIM], out[..., FEATURE_DIM:]
    return ((x * (1 + g) + r) @ p.W_s.to(dev) + p.b_s.to(dev))[..., 0]
