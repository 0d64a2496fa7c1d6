"""Boids on CUDA: one Triton program per simulation runs every requested step in a single launch.

A simulation (≤ 128 boids) is one thread block. Each step computes the 128 × 128 distances in registers and
takes the 16 nearest in-range neighbours one at a time as the row minimum of (distance, index) — the
reference's order, without sorting — with one fused min-and-index reduction each. The neighbours' positions
and headings are gathered from the state in memory (L1-resident): the block writes its new state only after
every lane has read the old one, with a barrier on each side, so a population of P simulations is P blocks
and P = 1 is one launch per call, however many steps.

Simulations of more boids than BLOCK_MAX use a plain torch step (all-pairs distances, a stable sort, the MLP).
"""

from __future__ import annotations

import torch

from workbench.kernels.triton_support import INF, interpreted, next_pow2, tanh, tl, triton

BLOCK_MAX = 128
HIDDEN = 8
# offsets of b1, W1, b2, W2, b3, W3, b4, W4 in the flat parameter vector (θ layout)
_B1, _W1, _B2, _W2, _B3, _W3, _B4, _W4 = 0, 8, 40, 48, 112, 120, 184, 185
N_PARAMS = 193


@triton.jit
def _dense8(x, W, b):
    """tanh(x·W + b) for x (B, 8), W (8, 8), b (8,)."""
    return tanh(b[None, :] + tl.sum(x[:, :, None] * W[None, :, :], axis=1))


@triton.jit
def _steps(x_ptr, v_ptr, theta_ptr, n, steps, visual_range, speed, dt,
           BLOCK: tl.constexpr, K: tl.constexpr):
    p = tl.program_id(0).to(tl.int64)
    i = tl.arange(0, BLOCK)
    valid = i < n
    xs, vs = x_ptr + p * n * 2, v_ptr + p * n * 2
    th = theta_ptr + p * 193
    h = tl.arange(0, 8)
    b1 = tl.load(th + 0 + h)
    w10 = tl.load(th + 8 + h)
    w11 = tl.load(th + 16 + h)
    w12 = tl.load(th + 24 + h)
    w13 = tl.load(th + 32 + h)
    b2 = tl.load(th + 40 + h)
    W2 = tl.load(th + 48 + h[:, None] * 8 + h[None, :])
    b3 = tl.load(th + 112 + h)
    W3 = tl.load(th + 120 + h[:, None] * 8 + h[None, :])
    b4 = tl.load(th + 184)
    W4 = tl.load(th + 185 + h)
    for _ in range(steps):
        px = tl.load(xs + 2 * i, mask=valid, other=0.0)
        py = tl.load(xs + 2 * i + 1, mask=valid, other=0.0)
        u = tl.load(vs + 2 * i, mask=valid, other=1.0)
        w = tl.load(vs + 2 * i + 1, mask=valid, other=0.0)
        dx = px[None, :] - px[:, None]
        dy = py[None, :] - py[:, None]
        d = tl.sqrt_rn(dx * dx + dy * dy)
        ok = valid[None, :] & (i[:, None] != i[None, :]) & (d < visual_range)
        d = tl.where(ok, d, 1e30)  # 1e30: not a neighbour
        pooled = tl.zeros([BLOCK, 8], dtype=tl.float32)
        count = tl.zeros([BLOCK], dtype=tl.float32)
        for _k in range(K):
            best, j = tl.min(d, axis=1, return_indices=True, return_indices_tie_break_left=True)
            d = tl.where(i[None, :] == j[:, None], 1e30, d)
            found = best < 1e30
            rx = tl.load(xs + 2 * j, mask=valid, other=0.0) - px
            ry = tl.load(xs + 2 * j + 1, mask=valid, other=0.0) - py
            vx = tl.load(vs + 2 * j, mask=valid, other=0.0)
            vy = tl.load(vs + 2 * j + 1, mask=valid, other=0.0)
            # neighbour position and velocity in the boid's frame (heading along the first axis)
            in0 = 50.0 * (u * rx + w * ry)
            in1 = 50.0 * (-w * rx + u * ry)
            in2 = u * vx + w * vy
            in3 = -w * vx + u * vy
            h1 = tanh(b1[None, :] + in0[:, None] * w10[None, :] + in1[:, None] * w11[None, :]
                      + in2[:, None] * w12[None, :] + in3[:, None] * w13[None, :])
            pooled += tl.where(found[:, None], _dense8(h1, W2, b2), 0.0)
            count += found.to(tl.float32)
        h3 = _dense8(pooled / tl.maximum(count, 1.0)[:, None], W3, b3)
        o = tanh(b4 + tl.sum(h3 * W4[None, :], axis=1))
        o = tl.where(count > 0.0, o, 0.0)
        nu = u + dt * 60.0 * o * (-w)
        nw = w + dt * 60.0 * o * u
        norm = tl.sqrt_rn(nu * nu + nw * nw)
        nu = nu / norm
        nw = nw / norm
        qx = px + speed * dt * nu
        qy = py + speed * dt * nw
        tl.debug_barrier()  # every lane has gathered its neighbours' old state
        tl.store(xs + 2 * i, qx - tl.floor(qx), mask=valid)
        tl.store(xs + 2 * i + 1, qy - tl.floor(qy), mask=valid)
        tl.store(vs + 2 * i, nu, mask=valid)
        tl.store(vs + 2 * i + 1, nw, mask=valid)
        tl.debug_barrier()  # the new state is visible to every lane of the block


def step(x: torch.Tensor, v: torch.Tensor, theta: torch.Tensor, steps: int, visual_range: float, speed: float,
         dt: float, k: int = 16) -> None:
    """Advance boids x, v (P, N, 2) in place by `steps` steps; theta (P, 193) in the flat θ layout."""
    P, N = x.shape[:2]
    if N > BLOCK_MAX:
        for _ in range(steps):
            _torch_step(x, v, theta, visual_range, speed, dt, k)
        return
    block = max(16, next_pow2(N))
    _steps[(P,)](x, v, theta, N, steps, visual_range, speed, dt, BLOCK=block, K=k,
                 num_warps=1 if interpreted() else (16 if block >= 128 else 4))


def _layer(theta: torch.Tensor, b_off: int, w_off: int, n_in: int, n_out: int):
    return theta[:, b_off:b_off + n_out], theta[:, w_off:w_off + n_in * n_out].reshape(-1, n_in, n_out)


def _torch_step(x, v, theta, visual_range, speed, dt, k):
    """One step for large N: all-pairs distances, the k nearest by (distance, index), the MLP in torch."""
    P, N = x.shape[:2]
    diff = x[:, None, :, :] - x[:, :, None, :]                    # (P, i, j, 2): x_j − x_i
    d = torch.sqrt(diff[..., 0] * diff[..., 0] + diff[..., 1] * diff[..., 1])
    d.diagonal(dim1=1, dim2=2).fill_(INF)
    d = torch.where(d < visual_range, d, torch.full_like(d, INF))
    kk = min(k, N - 1)
    # stable sort keeps equal distances in index order, as the reference's neighbour list
    dist, idx = torch.sort(d, dim=-1, stable=True)
    dist, idx = dist[..., :kk], idx[..., :kk]
    mask = dist < INF
    rel = torch.gather(diff, 2, idx[..., None].expand(P, N, kk, 2))
    vel = torch.gather(v[:, None].expand(P, N, N, 2), 2, idx[..., None].expand(P, N, kk, 2))
    u, w = v[..., 0:1], v[..., 1:2]
    feats = torch.stack([50.0 * (u * rel[..., 0] + w * rel[..., 1]), 50.0 * (-w * rel[..., 0] + u * rel[..., 1]),
                         u * vel[..., 0] + w * vel[..., 1], -w * vel[..., 0] + u * vel[..., 1]], dim=-1)
    b1, W1 = _layer(theta, _B1, _W1, 4, HIDDEN)
    b2, W2 = _layer(theta, _B2, _W2, HIDDEN, HIDDEN)
    b3, W3 = _layer(theta, _B3, _W3, HIDDEN, HIDDEN)
    b4, W4 = _layer(theta, _B4, _W4, HIDDEN, 1)
    h = torch.tanh(torch.einsum("pnkq,pqo->pnko", feats, W1) + b1[:, None, None])
    h = torch.tanh(torch.einsum("pnkq,pqo->pnko", h, W2) + b2[:, None, None])
    count = mask.sum(-1, keepdim=True).float()
    pooled = (h * mask[..., None]).sum(2) / count.clamp(min=1.0)
    h = torch.tanh(torch.einsum("pnq,pqo->pno", pooled, W3) + b3[:, None])
    o = torch.tanh(torch.einsum("pnq,pqo->pno", h, W4) + b4[:, None])[..., 0]
    o = torch.where(count[..., 0] > 0, o, torch.zeros_like(o))
    nu = v[..., 0] + dt * 60.0 * o * (-v[..., 1])
    nw = v[..., 1] + dt * 60.0 * o * v[..., 0]
    norm = torch.sqrt(nu * nu + nw * nw)
    v[..., 0], v[..., 1] = nu / norm, nw / norm
    q = x + speed * dt * v
    x.copy_(q - torch.floor(q))
