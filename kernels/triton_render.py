"""Renderers on CUDA (Triton): one program per square tile of pixels of one frame.

A program walks the objects in the reference's drawing order and composites those whose footprint
(clipped exactly as the Taichi renderers clip it, kernels/render.py) touches its tile; the pixels stay in
registers until the tile is done. Image axis 0 is x and axis 1 is y, sample points linspace(0, 1, size).
"""

from __future__ import annotations

import math

import torch

from workbench.kernels.triton_support import interpreted, next_pow2, tl, triton

BOID_SIZE = 0.015
BOID_MARGIN = 0.02
EDGE_SHARPNESS = 20.0 / 0.01
EDGE_CUTOFF = 0.01


@triton.jit
def _sigmoid(z):
    return 1.0 / (1.0 + tl.exp(-z))


@triton.jit
def _tile(size, TILE: tl.constexpr):
    """This program's frame p, pixel indices ix (TILE, 1), iy (1, TILE), their sample points and mask."""
    pid = tl.program_id(0).to(tl.int64)
    per_row = tl.cdiv(size, TILE)
    per_frame = per_row * per_row
    p, t = pid // per_frame, pid % per_frame
    x0, y0 = (t // per_row) * TILE, (t % per_row) * TILE
    ix = x0 + tl.arange(0, TILE)[:, None]
    iy = y0 + tl.arange(0, TILE)[None, :]
    inside = (ix < size) & (iy < size)
    return p, x0, y0, ix, iy, ix.to(tl.float32) / (size - 1), iy.to(tl.float32) / (size - 1), inside


@triton.jit
def _store(img, p, ix, iy, size, r, g, b, inside):
    at = img + ((p * size + ix) * size + iy) * 3
    tl.store(at, r, mask=inside)
    tl.store(at + 1, g, mask=inside)
    tl.store(at + 2, b, mask=inside)


@triton.jit
def _pixel_lo(v, size):
    return tl.floor(v * (size - 1)).to(tl.int32)


@triton.jit
def _pixel_hi(v, size):
    return tl.ceil(v * (size - 1)).to(tl.int32)


@triton.jit
def _paint_boid(r, g, b, x_ptr, v_ptr, i, ix, iy, qx, qy, x0, y0, size, cr, cg, cb,
                TILE: tl.constexpr, S: tl.constexpr, MARGIN: tl.constexpr):
    px, py = tl.load(x_ptr + 2 * i), tl.load(x_ptr + 2 * i + 1)
    u, w = tl.load(v_ptr + 2 * i), tl.load(v_ptr + 2 * i + 1)
    ax, ay = px - w * S, py + u * S           # o + left·s, left = (−w, u)
    bx, by = px + w * S, py - u * S           # o − left·s
    cx, cy = px + u * (3.0 * S), py + w * (3.0 * S)
    xa = tl.maximum(_pixel_lo(tl.minimum(tl.minimum(ax, bx), cx) - MARGIN, size), 0)
    xb = tl.minimum(_pixel_hi(tl.maximum(tl.maximum(ax, bx), cx) + MARGIN, size), size - 1)
    ya = tl.maximum(_pixel_lo(tl.minimum(tl.minimum(ay, by), cy) - MARGIN, size), 0)
    yb = tl.minimum(_pixel_hi(tl.maximum(tl.maximum(ay, by), cy) + MARGIN, size), size - 1)
    if (xa <= x0 + TILE - 1) & (xb >= x0) & (ya <= y0 + TILE - 1) & (yb >= y0):
        v0x, v0y, v1x, v1y = bx - ax, by - ay, cx - ax, cy - ay
        v2x, v2y = qx - ax, qy - ay
        den = v0x * v1y - v1x * v0y
        l2 = (v2x * v1y - v1x * v2y) / den
        l3 = (v0x * v2y - v2x * v0y) / den
        l1 = 1.0 - l2 - l3
        m = _sigmoid(40.0 * l1) * _sigmoid(40.0 * l2) * _sigmoid(40.0 * l3)
        m = tl.where((ix >= xa) & (ix <= xb) & (iy >= ya) & (iy <= yb), m, 0.0)
        r = m * cr + (1.0 - m) * r
        g = m * cg + (1.0 - m) * g
        b = m * cb + (1.0 - m) * b
    return r, g, b


@triton.jit
def _boids(x_ptr, v_ptr, img, N, size, TILE: tl.constexpr, S: tl.constexpr, MARGIN: tl.constexpr):
    """White canvas, black boids composited in order, boid 0 drawn again in red on top."""
    p, x0, y0, ix, iy, qx, qy, inside = _tile(size, TILE)
    r = tl.full([TILE, TILE], 1.0, tl.float32)
    g = tl.full([TILE, TILE], 1.0, tl.float32)
    b = tl.full([TILE, TILE], 1.0, tl.float32)
    xs, vs = x_ptr + p * N * 2, v_ptr + p * N * 2
    for i in range(N):
        r, g, b = _paint_boid(r, g, b, xs, vs, i, ix, iy, qx, qy, x0, y0, size, 0.0, 0.0, 0.0, TILE, S, MARGIN)
    r, g, b = _paint_boid(r, g, b, xs, vs, 0, ix, iy, qx, qy, x0, y0, size, 1.0, 0.0, 0.0, TILE, S, MARGIN)
    _store(img, p, ix, iy, size, r, g, b, inside)


@triton.jit
def _particles(x_ptr, c_ptr, img, N, size, radius, reach, SHARP: tl.constexpr, TILE: tl.constexpr):
    """Black canvas, discs of coverage 1 − σ(2000·(d − radius)) composited in reverse index order."""
    p, x0, y0, ix, iy, qx, qy, inside = _tile(size, TILE)
    r = tl.zeros([TILE, TILE], dtype=tl.float32)
    g = tl.zeros([TILE, TILE], dtype=tl.float32)
    b = tl.zeros([TILE, TILE], dtype=tl.float32)
    xs, cs = x_ptr + p * N * 2, c_ptr + p * N
    for j in range(N):
        i = N - 1 - j
        px, py = tl.load(xs + 2 * i), tl.load(xs + 2 * i + 1)
        xa = tl.maximum(_pixel_lo(px - reach, size), 0)
        xb = tl.minimum(_pixel_hi(px + reach, size), size - 1)
        ya = tl.maximum(_pixel_lo(py - reach, size), 0)
        yb = tl.minimum(_pixel_hi(py + reach, size), size - 1)
        if (xa <= x0 + TILE - 1) & (xb >= x0) & (ya <= y0 + TILE - 1) & (yb >= y0):
            k = tl.load(cs + i)
            # palette red, green, blue, yellow, magenta, cyan
            cr = ((k == 0) | (k == 3) | (k == 4)).to(tl.float32)
            cg = ((k == 1) | (k == 3) | (k == 5)).to(tl.float32)
            cb = ((k == 2) | (k == 4) | (k == 5)).to(tl.float32)
            dx, dy = px - qx, py - qy
            dd = dx * dx + dy * dy
            cov = 1.0 - _sigmoid(SHARP * (tl.sqrt(dd) - radius))
            hit = (ix >= xa) & (ix <= xb) & (iy >= ya) & (iy <= yb) & (dd < reach * reach)
            cov = tl.where(hit, cov, 0.0)
            r = cov * cr + (1.0 - cov) * r
            g = cov * cg + (1.0 - cov) * g
            b = cov * cb + (1.0 - cov) * b
    _store(img, p, ix, iy, size, r, g, b, inside)


def _tile_size(size: int) -> int:
    # the interpreter runs each program as NumPy calls: one big tile; GPUs want many small programs
    return min(256, next_pow2(size)) if interpreted() else 16


def _launch(size: int, frames: int, tile: int) -> tuple[int]:
    return (frames * math.ceil(size / tile) ** 2,)


def boids(x: torch.Tensor, v: torch.Tensor, size: int) -> torch.Tensor:
    """Frames (P, size, size, 3) of boids x, v (P, N, 2)."""
    P, N = x.shape[:2]
    img = torch.empty(P, size, size, 3, dtype=torch.float32, device=x.device)
    tile = _tile_size(size)
    _boids[_launch(size, P, tile)](x, v, img, N, size, TILE=tile, S=BOID_SIZE, MARGIN=BOID_MARGIN, num_warps=4)
    return img


def particles(x: torch.Tensor, c: torch.Tensor, radius: float, size: int) -> torch.Tensor:
    """Frames (P, size, size, 3) of particles x (P, N, 2) with colours c (P, N)."""
    P, N = x.shape[:2]
    img = torch.empty(P, size, size, 3, dtype=torch.float32, device=x.device)
    tile = _tile_size(size)
    _particles[_launch(size, P, tile)](x, c, img, N, size, radius, radius + EDGE_CUTOFF, SHARP=EDGE_SHARPNESS,
                                       TILE=tile, num_warps=4)
    return img
