"""The grid substrates (Game of Life, NCA, discrete NCA) as batched torch operations: the engine for CUDA devices,
and their renders on every engine (two index_selects beat a Taichi kernel per pixel on the CPU too).

On the CPU the Taichi kernels (kernels/gol.py, kernels/nca.py) are far faster (measured at P = 16: NCA 8–30×,
Game of Life ~100×); on a GPU these whole-grid tensor operations avoid a second Taichi arch in a process that
already runs Taichi on the CPU. Same arithmetic as the Taichi kernels: the same folded first layer, the same
counter-based hash for the noise a substrate draws itself (so both engines draw the same masks and categories).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from workbench.kernels.device import ieee_convolutions

MASK32 = 0xFFFFFFFF


def _mix(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 on int64 tensors holding 32-bit values (kernels.nca._mix); products wrap mod 2^64, and only their
    low 32 bits are kept."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & MASK32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & MASK32
    return x ^ (x >> 16)


def uniform(keys: torch.Tensor, cells: int) -> torch.Tensor:
    """(P, cells) uniforms on a 2^-24 grid from the step keys (P, 2) int32, as kernels.nca._uniform."""
    k = keys.to(torch.int64) & MASK32
    cell = torch.arange(cells, device=keys.device, dtype=torch.int64)[None]
    bits = _mix(_mix((cell + k[:, :1]) & MASK32) ^ k[:, 1:])
    return (bits >> 8).to(torch.float32) * (1.0 / 16777216.0)


def resize_index(m: int, size: int, device: torch.device) -> torch.Tensor:
    """Nearest resize m -> size as jax.image.resize: output pixel i takes source ⌊(2i + 1)·m / (2·size)⌋."""
    return ((2 * torch.arange(size, device=device) + 1) * m // (2 * size))


def centre_index(m: int, size: int, device: torch.device) -> torch.Tensor:
    """Nearest resize m -> size with half-pixel centres in float32 (Lenia's and Flow-Lenia's renders, as their
    kernels computed it): output pixel i takes source ⌊(i + ½)·m / size⌋, at most m − 1."""
    src = ((torch.arange(size, dtype=torch.float32) + 0.5) * m / size).long()
    return src.clamp(max=m - 1).to(device)


def render_states(states: torch.Tensor, palette: torch.Tensor, size: int) -> torch.Tensor:
    """(P, H, W) integer states coloured by palette (n, 3), nearest-resized to (P, size, size, 3): coloured at the
    grid's size, then two index_selects (on a CPU 10-20x faster than a per-pixel kernel or one 2-D gather)."""
    iy = resize_index(states.shape[1], size, states.device)
    ix = resize_index(states.shape[2], size, states.device)
    return palette[states.long()].index_select(1, iy).index_select(2, ix)


def render_channels(world: torch.Tensor, size: int) -> torch.Tensor:
    """(P, H, W, C ≤ 3) as RGB (missing channels 0), nearest-resized to (P, size, size, 3)."""
    iy = resize_index(world.shape[1], size, world.device)
    ix = resize_index(world.shape[2], size, world.device)
    if world.shape[-1] < 3:
        world = torch.cat([world, world.new_zeros(*world.shape[:3], 3 - world.shape[-1])], dim=-1)
    return world.index_select(1, iy).index_select(2, ix)


# --- Game of Life --------------------------------------------------------------------------------

def gol_steps(s: torch.Tensor, rule: torch.Tensor, steps: int) -> torch.Tensor:
    """`steps` steps of grids s (P, H, W) int32 under rules (P,): bit 9·s + n of the rule."""
    r = rule.view(-1, 1, 1)
    for _ in range(steps):
        rows = s + torch.roll(s, 1, 1) + torch.roll(s, -1, 1)
        n = rows + torch.roll(rows, 1, 2) + torch.roll(rows, -1, 2) - s
        s = (r >> (9 * s + n)) & 1
    return s


# --- NCA ----------------------------------------------------------------------------------------

def _tail(h: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """(P, N, 4) first-layer outputs -> (P, N, d): 1×1 → 16 with ReLU, 1×1 → d."""
    h2 = torch.relu(torch.baddbmm(params["b1"][:, None], h, params["K1"]))
    return torch.baddbmm(params["b2"][:, None], h2, params["K2"])


def folded_kernel(K0: torch.Tensor, d: int) -> torch.Tensor:
    """K0 (P, 3, 3, d + 2, 4) summed onto the d real channels (padded channel c′ copies channel (c′ − 1) mod d)."""
    fold = torch.tensor([(c - 1) % d for c in range(d + 2)], device=K0.device)
    out = torch.zeros(*K0.shape[:3], d, K0.shape[4], dtype=K0.dtype, device=K0.device)
    return out.index_add_(3, fold, K0)


def nca_delta(S: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """ΔS (P, H, W, d) of worlds S (P, H, W, d): circular 3×3 conv with the folded kernel, then the 1×1 tail."""
    P, H, W, d = S.shape
    x = F.pad(S.permute(0, 3, 1, 2), (1, 1, 1, 1), mode="circular").reshape(1, P * d, H + 2, W + 2)
    w0 = folded_kernel(params["K0"], d).permute(0, 4, 3, 1, 2).reshape(P * 4, d, 3, 3)
    with ieee_convolutions():  # TF32 (torch's default for cuDNN) moves ΔS beyond the golden tolerance
        h = F.conv2d(x, w0, params["b0"].reshape(-1), groups=P)
    h = h.reshape(P, 4, H * W).transpose(1, 2)
    return _tail(h, params).reshape(P, H, W, d)


def nca_step(S: torch.Tensor, params: dict[str, torch.Tensor], mask: torch.Tensor | None, keys: torch.Tensor,
             keep: float, dt: float) -> torch.Tensor:
    """clip(S + dt·M·ΔS, 0, 1); M is mask (P, H, W), or drawn (u < keep) when mask is None."""
    P, H, W, _ = S.shape
    if mask is None:
        m = (uniform(keys, H * W) < keep).reshape(P, H, W)
    else:
        m = mask.bool()
    return torch.where(m[..., None], (S + dt * nca_delta(S, params)).clamp(0.0, 1.0), S)


# --- discrete NCA -------------------------------------------------------------------------------

def dnca_logits(k: torch.Tensor, params: dict[str, torch.Tensor], identity: float) -> torch.Tensor:
    """Logits (P, H·W, 8) of states k (P, H, W): the folded first layer looked up at the 9 neighbours' states."""
    P, H, W = k.shape
    table = folded_kernel(params["K0"], 8).reshape(P, 9, 8, 4)
    h = params["b0"][:, None].expand(P, H * W, 4).clone()
    for i in range(3):
        for j in range(3):
            nb = torch.roll(k, (1 - i, 1 - j), (1, 2)).reshape(P, H * W, 1).long()
            h += table[:, 3 * i + j].gather(1, nb.expand(P, H * W, 4))
    logits = _tail(h, params)
    if identity != 0.0:
        logits = logits + identity * F.one_hot(k.reshape(P, H * W).long(), 8).to(logits.dtype)
    return logits


def dnca_step(k: torch.Tensor, params: dict[str, torch.Tensor], gumbel: torch.Tensor | None, keys: torch.Tensor,
              tau: float, identity: float) -> torch.Tensor:
    """argmax_k (L_k/τ + g_k) with g gumbel (P, H, W, 8); without it, the same distribution from one uniform a cell
    (the category whose cumulative softmax(L/τ) weight first exceeds u), as kernels.nca.dnca_step."""
    P, H, W = k.shape
    logits = dnca_logits(k, params, identity)
    if gumbel is not None:
        return torch.argmax(logits / tau + gumbel.reshape(P, H * W, 8), dim=-1).reshape(P, H, W).to(k.dtype)
    weights = torch.exp((logits - logits.max(dim=-1, keepdim=True).values) / tau)
    cum = torch.cumsum(weights, dim=-1)
    target = uniform(keys, H * W)[..., None] * cum[..., -1:]
    best = (cum <= target).sum(dim=-1)
    last = torch.where(weights > 0, torch.arange(8, device=k.device), -1).max(dim=-1).values
    return torch.where(best >= 8, last, best).reshape(P, H, W).to(k.dtype)
