"""Lenia on CUDA: cuFFT for the convolutions, three fused Triton kernels per step, steps replayed as CUDA graphs.

One step over channel-first worlds (P, C, H, W), `rolled` already holding the world rolled by the last shift:
  rfft2(rolled) → spectra (P, C, H, W/2+1)                                   cuFFT
  product:  kernel k's spectrum × the spectrum of its source channel c0_k       Triton, one pass
  irfft2 → potentials U (P, K, H, W)                                         cuFFT
  update:   growth Σ_k 2h_k·2^(−((U_k − m_k)·a_k)²) − Σ_k h_k into channel c1_k, A' = clip(A + dt·growth),
            and per-row sums of A, A'·(y − mid), A'·(x − mid)                 Triton, one pass over U
  recentre: the shift from the row sums (the reference's truncation), total_shift, and the world rolled
            by the new shift for the next step                              Triton, one pass
with a_k = √(log2(e)/2)/s_k, so the Gaussian exp(−(U − m)²/(2s²)) is one exp2. The kernels spectra are shared
by the whole population; m, s, h are per simulation. All buffers live as long as the population size, so a
chunk of steps is captured once as a CUDA graph (kernels/graphs.py) and replayed.
"""

from __future__ import annotations

import math
import threading

import torch

from workbench.kernels.device import fits_in_memory
from workbench.kernels.graphs import GraphedSteps
from workbench.kernels.triton_support import interpreted, next_pow2, tl, triton

GAUSS = math.sqrt(math.log2(math.e) / 2.0)


@triton.jit
def _product(spec, fk, c0, out, C, K, HWR, BLOCK: tl.constexpr):
    """out[p, k] = spec[p, c0[k]] · fk[k] (complex, stored as interleaved float pairs)."""
    pk = tl.program_id(0).to(tl.int64)
    p, k = pk // K, pk % K
    c = tl.load(c0 + k).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = offs < HWR
    s_at = spec + ((p * C + c) * HWR + offs) * 2
    k_at = fk + (k * HWR + offs) * 2
    sre, sim = tl.load(s_at, mask=m, other=0.0), tl.load(s_at + 1, mask=m, other=0.0)
    kre, kim = tl.load(k_at, mask=m, other=0.0), tl.load(k_at + 1, mask=m, other=0.0)
    o_at = out + (pk * HWR + offs) * 2
    tl.store(o_at, sre * kre - sim * kim, mask=m)
    tl.store(o_at + 1, sre * kim + sim * kre, mask=m)


@triton.jit
def _update(rolled, u, scale, offset, h2, hsum, c1, out, rows, H, W, dt,
            K: tl.constexpr, ROWS: tl.constexpr, BLOCK_W: tl.constexpr):
    """A' = clip(A + dt·growth) for ROWS rows of one simulation, and those rows' centre-of-mass sums."""
    pid = tl.program_id(0).to(tl.int64)
    blocks = tl.cdiv(H, ROWS)
    p, y0 = pid // blocks, (pid % blocks) * ROWS
    ry = y0 + tl.arange(0, ROWS)
    cx = tl.arange(0, BLOCK_W)
    m = (ry[:, None] < H) & (cx[None, :] < W)
    pix = ry[:, None] * W + cx[None, :]
    g0 = tl.zeros([ROWS, BLOCK_W], dtype=tl.float32)
    g1 = tl.zeros([ROWS, BLOCK_W], dtype=tl.float32)
    g2 = tl.zeros([ROWS, BLOCK_W], dtype=tl.float32)
    for k in tl.static_range(K):
        a = tl.load(scale + p * K + k)
        b = tl.load(offset + p * K + k)
        w = tl.load(h2 + p * K + k)
        target = tl.load(c1 + k)
        d = (tl.load(u + (p * K + k) * H * W + pix, mask=m, other=0.0) - b) * a
        g = w * tl.exp2(-(d * d))
        g0 += tl.where(target == 0, g, 0.0)
        g1 += tl.where(target == 1, g, 0.0)
        g2 += tl.where(target == 2, g, 0.0)
    old0, new0 = _apply(rolled, out, hsum, g0, p, 0, H, W, pix, m, dt)
    old1, new1 = _apply(rolled, out, hsum, g1, p, 1, H, W, pix, m, dt)
    old2, new2 = _apply(rolled, out, hsum, g2, p, 2, H, W, pix, m, dt)
    old_mass = tl.sum(old0 + old1 + old2, axis=1)
    new_mass = tl.where(m, new0 + new1 + new2, 0.0)
    row = rows + (p * H + ry) * 3
    rm = ry < H
    tl.store(row, old_mass, mask=rm)
    tl.store(row + 1, tl.sum(new_mass, axis=1) * (ry - H // 2).to(tl.float32), mask=rm)
    tl.store(row + 2, tl.sum(new_mass * (cx - W // 2).to(tl.float32)[None, :], axis=1), mask=rm)


@triton.jit
def _apply(rolled, out, hsum, g, p, c, H, W, pix, m, dt):
    """Channel c of one update: A' = clip(A + dt·(g − Σh)); returns A and A' (zero outside the mask)."""
    at = (p * 3 + c) * H * W + pix
    old = tl.load(rolled + at, mask=m, other=0.0)
    new = tl.minimum(tl.maximum(old + dt * (g - tl.load(hsum + p * 3 + c)), 0.0), 1.0)
    tl.store(out + at, new, mask=m)
    return old, new


@triton.jit
def _recentre(world, rows, shift, total, rolled, N, H, W, R,
              COMPUTE: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK: tl.constexpr):
    """rolled = world rolled by the shift; with COMPUTE the shift is first derived from the row sums
    (shift = trunc(Σ A'·X / m00 · R), X = (y − mid)/R, 0 for an empty world) and added to total_shift.

    Every program of a simulation derives the shift itself (a few hundred numbers), so the roll runs on
    all programs at once; program 0 of the simulation writes shift and total_shift."""
    p = tl.program_id(0).to(tl.int64)
    blk = tl.program_id(1)
    if COMPUTE:
        r = tl.arange(0, BLOCK_H)
        rm = r < H
        at = rows + (p * H + r) * 3
        m00 = tl.sum(tl.load(at, mask=rm, other=0.0), axis=0)
        my = tl.sum(tl.load(at + 1, mask=rm, other=0.0), axis=0)
        mx = tl.sum(tl.load(at + 2, mask=rm, other=0.0), axis=0)
        some = m00 > 0.0
        safe = tl.where(some, m00, 1.0)
        sy = tl.where(some, (my / R / safe * R).to(tl.int32), 0)
        sx = tl.where(some, (mx / R / safe * R).to(tl.int32), 0)
        if blk == 0:
            tl.store(shift + p * 2, sy)
            tl.store(shift + p * 2 + 1, sx)
            tl.store(total + p * 2, tl.load(total + p * 2) + sy)
            tl.store(total + p * 2 + 1, tl.load(total + p * 2 + 1) + sx)
    else:
        sy = tl.load(shift + p * 2)
        sx = tl.load(shift + p * 2 + 1)
    offs = blk * BLOCK + tl.arange(0, BLOCK)
    n = 3 * H * W
    m = offs < n
    c, y, x = offs // (H * W), (offs // W) % H, offs % W
    yy = ((y + sy) % H + H) % H
    xx = ((x + sx) % W + W) % W
    val = tl.load(world + p * n + c * H * W + yy * W + xx, mask=m, other=0.0)
    tl.store(rolled + p * n + offs, val, mask=m)


class _Buffers:
    """Everything one population size needs, allocated once: the graphs replay over these addresses."""

    def __init__(self, P: int, K: int, H: int, W: int, device: torch.device):
        f32 = dict(dtype=torch.float32, device=device)
        self.world = torch.empty(P, 3, H, W, **f32)       # A' as stored (not rolled)
        self.rolled = torch.empty(P, 3, H, W, **f32)      # the world rolled by the current shift
        self.spec = torch.empty(P, 3, H, W // 2 + 1, dtype=torch.complex64, device=device)
        self.prod = torch.empty(P, K, H, W // 2 + 1, dtype=torch.complex64, device=device)
        self.u = torch.empty(P, K, H, W, **f32)
        self.rows = torch.empty(P, H, 3, **f32)
        self.shift = torch.zeros(P, 2, dtype=torch.int32, device=device)
        self.total = torch.zeros(P, 2, dtype=torch.int32, device=device)
        self.scale = torch.empty(P, K, **f32)
        self.offset = torch.empty(P, K, **f32)
        self.h2 = torch.empty(P, K, **f32)
        self.hsum = torch.empty(P, 3, **f32)


def bytes_per_simulation(K: int, H: int, W: int) -> int:
    """GPU memory one simulation takes: the buffers, plus the copy of the products that the inverse FFT
    makes (cuFFT's complex-to-real transform overwrites its input) and cuFFT's work area."""
    wr = W // 2 + 1
    return 4 * (2 * 3 * H * W + K * H * W) + 8 * (3 * H * wr + 3 * K * H * wr) + 4 * 3 * H


class LeniaTriton:
    """The Lenia step on CUDA (or Triton's interpreter) for one substrate configuration.

    fk: the kernels' spectra (K, H, W/2+1) complex64 in kernel order; c0, c1: source / target channel per
    kernel; R, dt: the pattern's radius and time step.
    """

    def __init__(self, fk: torch.Tensor, c0, c1, R: float, dt: float, device: torch.device):
        self.device = device
        self.K, self.H, wr = fk.shape
        self.W = (wr - 1) * 2
        self.fk = torch.view_as_real(fk.to(device).contiguous()).contiguous()
        self.c0 = torch.as_tensor(c0, dtype=torch.int32, device=device)
        self.c1 = torch.as_tensor(c1, dtype=torch.int32, device=device)
        self.onehot = torch.nn.functional.one_hot(self.c1.long(), 3).to(torch.float32)  # (K, 3)
        self.R, self.dt = float(R), float(dt)
        self._buffers: tuple[int, _Buffers, GraphedSteps] | None = None
        self._lock = threading.Lock()  # buffers and graphs are shared state: one call at a time

    # --- launches ---------------------------------------------------------------------------

    def _launch_config(self, P: int):
        interp = interpreted()
        H, W = self.H, self.W
        hwr = H * (W // 2 + 1)
        return {
            "product_block": next_pow2(hwr) if interp else 1024,
            "rows": next_pow2(H) if interp else (1 if P < 64 else 4),
            "roll_block": next_pow2(3 * H * W) if interp else 2048,
        }

    def _roll(self, b: _Buffers, compute: bool, cfg: dict) -> None:
        P, H, W = b.world.shape[0], self.H, self.W
        grid = (P, triton.cdiv(3 * H * W, cfg["roll_block"]))
        _recentre[grid](b.world, b.rows, b.shift, b.total, b.rolled, 3 * H * W, H, W, self.R,
                        COMPUTE=compute, BLOCK_H=next_pow2(H), BLOCK=cfg["roll_block"], num_warps=4)

    def _one_step(self, b: _Buffers, cfg: dict) -> None:
        P, K, H, W = b.world.shape[0], self.K, self.H, self.W
        hwr = H * (W // 2 + 1)
        torch.fft.rfft2(b.rolled, out=b.spec)
        grid = (P * K, triton.cdiv(hwr, cfg["product_block"]))
        _product[grid](torch.view_as_real(b.spec), self.fk, self.c0, torch.view_as_real(b.prod), 3, K, hwr,
                       BLOCK=cfg["product_block"], num_warps=4)
        torch.fft.irfft2(b.prod, s=(H, W), out=b.u)
        rows = cfg["rows"]
        _update[(P * triton.cdiv(H, rows),)](b.rolled, b.u, b.scale, b.offset, b.h2, b.hsum, self.c1, b.world,
                                            b.rows, H, W, self.dt, K=K, ROWS=rows, BLOCK_W=next_pow2(W),
                                            num_warps=4)
        self._roll(b, True, cfg)

    def _prepare(self, P: int) -> tuple[_Buffers, GraphedSteps, dict]:
        cfg = self._launch_config(P)
        if self._buffers is None or self._buffers[0] != P:
            self._buffers = None  # free the old population's buffers (and graphs) first
            fits_in_memory(self.device, P, bytes_per_simulation(self.K, self.H, self.W), "lenia")
            b = _Buffers(P, self.K, self.H, self.W, self.device)
            self._buffers = (P, b, GraphedSteps(lambda: self._one_step(b, cfg), self.device))
        return self._buffers[1], self._buffers[2], cfg

    # --- public -----------------------------------------------------------------------------

    def step(self, world: torch.Tensor, shift: torch.Tensor, total: torch.Tensor, m: torch.Tensor, s: torch.Tensor,
             h: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Advance worlds (P, H, W, 3) by `steps` steps; m, s, h (P, K) in kernel order. Returns new tensors."""
        P = world.shape[0]
        with self._lock:
            b, graphs, cfg = self._prepare(P)
            b.world.copy_(world.permute(0, 3, 1, 2))
            b.shift.copy_(shift)
            b.total.copy_(total)
            scale = (GAUSS / s.double()).float()
            b.scale.copy_(scale)
            b.offset.copy_(m)
            b.h2.copy_(2.0 * h)
            b.hsum.copy_(h @ self.onehot)
            self._roll(b, False, cfg)
            graphs.run(steps)
            return b.world.permute(0, 2, 3, 1).contiguous(), b.shift.clone(), b.total.clone()
