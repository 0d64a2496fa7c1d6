"""Particle Life on CUDA: a cell list rebuilt each step by a stable sort, forces by tiles of particle pairs.

One step:
  cells:   each particle's cell (cells are r_max wide, so interacting pairs are in neighbouring cells)  Triton
  sort:    particles sorted by cell, stable in index; where each cell starts (searchsorted)              torch
  gather:  positions and colours in cell order (contiguous runs per cell)                              Triton
  forces:  one program per cell; its particles against the 3 × 3 cells around (the torus wrapped by a
           shift of one period), BI × BJ pairs at a time; then v ← decay·v + dt·a/m, x ← (x + dt·v) mod 1,
           written back at the particles' own indices                                               Triton
Every particle's forces are summed in the same order on every run. The steps of one call replay as a
CUDA graph (kernels/graphs.py). With fewer than 3 cells per axis (r_max > 1/3) one cell holds all pairs
and the minimum image is taken explicitly.
"""

from __future__ import annotations

import threading

import torch

from workbench.kernels.device import fits_in_memory
from workbench.kernels.graphs import GraphedSteps
from workbench.kernels.triton_support import interpreted, tl, triton

N_COLOURS = 6


@triton.jit
def _cells(x_ptr, cell_ptr, total, grid, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < total
    x0 = tl.load(x_ptr + 2 * offs, mask=m, other=0.0)
    x1 = tl.load(x_ptr + 2 * offs + 1, mask=m, other=0.0)
    gx = tl.minimum(tl.maximum((x0 * grid).to(tl.int32), 0), grid - 1)
    gy = tl.minimum(tl.maximum((x1 * grid).to(tl.int32), 0), grid - 1)
    tl.store(cell_ptr + offs, gx * grid + gy, mask=m)


@triton.jit
def _gather(x_ptr, c_ptr, perm, xs, ys, cs, N, total, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < total
    src = (offs // N) * N + tl.load(perm + offs, mask=m, other=0)
    tl.store(xs + offs, tl.load(x_ptr + 2 * src, mask=m, other=0.0), mask=m)
    tl.store(ys + offs, tl.load(x_ptr + 2 * src + 1, mask=m, other=0.0), mask=m)
    tl.store(cs + offs, tl.load(c_ptr + src, mask=m, other=0), mask=m)


@triton.jit
def _forces(xs, ys, cs, perm, starts, x_ptr, v_ptr, alpha, beta, N, grid, reach, inv_r, r_max, decay, dt, mass,
            BI: tl.constexpr, BJ: tl.constexpr, ALL_PAIRS: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    n_cells = grid * grid
    p, cell = pid // n_cells, pid % n_cells
    gx, gy = cell // grid, cell % grid
    sb = starts + p * (n_cells + 1)
    row = p * N
    first, last = tl.load(sb + cell), tl.load(sb + cell + 1)
    for i0 in range(first, last, BI):
        ii = i0 + tl.arange(0, BI)
        mi = ii < last
        xi = tl.load(xs + row + ii, mask=mi, other=0.0)
        yi = tl.load(ys + row + ii, mask=mi, other=0.0)
        ci = tl.load(cs + row + ii, mask=mi, other=0)
        b = tl.load(beta + p * 6 + ci)
        inv_b, inv_1mb = 1.0 / b, 1.0 / (1.0 - b)
        a0 = tl.zeros([BI], dtype=tl.float32)
        a1 = tl.zeros([BI], dtype=tl.float32)
        for dxc in range(-reach, reach + 1):
            cx = gx + dxc
            # a neighbour cell across the torus' edge: shift this cell's particles by one period instead
            ox = xi + ((cx < 0).to(tl.float32) - (cx >= grid).to(tl.float32))
            cx = (cx + grid) % grid
            for dyc in range(-reach, reach + 1):
                cy = gy + dyc
                oy = yi + ((cy < 0).to(tl.float32) - (cy >= grid).to(tl.float32))
                cy = (cy + grid) % grid
                t0, t1 = tl.load(sb + cx * grid + cy), tl.load(sb + cx * grid + cy + 1)
                for j0 in range(t0, t1, BJ):
                    jj = j0 + tl.arange(0, BJ)
                    mj = jj < t1
                    d0 = tl.load(xs + row + jj, mask=mj, other=0.0)[None, :] - ox[:, None]
                    d1 = tl.load(ys + row + jj, mask=mj, other=0.0)[None, :] - oy[:, None]
                    if ALL_PAIRS:  # one cell holds everything: the minimum image
                        d0 -= tl.floor(d0 + 0.5)
                        d1 -= tl.floor(d1 + 0.5)
                    cj = tl.load(cs + row + jj, mask=mj, other=0)
                    r = tl.sqrt_rn(d0 * d0 + d1 * d1)
                    rr = r * inv_r
                    near = rr * inv_b[:, None] - 1.0
                    al = tl.load(alpha + p * 36 + ci[:, None] * 6 + cj[None, :])
                    far = al * (1.0 - tl.abs(2.0 * rr - 1.0 - b[:, None]) * inv_1mb[:, None])
                    bb = b[:, None]
                    force = tl.where(rr < bb, near, tl.where((bb < rr) & (rr < 1.0), far, 0.0))
                    f = tl.where(mi[:, None] & mj[None, :], r_max * force / (r + 1e-8), 0.0)
                    a0 += tl.sum(f * d0, axis=1)
                    a1 += tl.sum(f * d1, axis=1)
        own = row + tl.load(perm + row + ii, mask=mi, other=0)
        vx = decay * tl.load(v_ptr + 2 * own, mask=mi, other=0.0) + dt * a0 / mass
        vy = decay * tl.load(v_ptr + 2 * own + 1, mask=mi, other=0.0) + dt * a1 / mass
        tl.store(v_ptr + 2 * own, vx, mask=mi)
        tl.store(v_ptr + 2 * own + 1, vy, mask=mi)
        nx = xi + dt * vx
        ny = yi + dt * vy
        tl.store(x_ptr + 2 * own, nx - tl.floor(nx), mask=mi)
        tl.store(x_ptr + 2 * own + 1, ny - tl.floor(ny), mask=mi)


class _Buffers:
    def __init__(self, P: int, N: int, n_cells: int, device: torch.device):
        i32 = dict(dtype=torch.int32, device=device)
        self.x = torch.empty(P, N, 2, dtype=torch.float32, device=device)
        self.v = torch.empty(P, N, 2, dtype=torch.float32, device=device)
        self.c = torch.empty(P, N, **i32)
        self.alpha = torch.empty(P, N_COLOURS, N_COLOURS, dtype=torch.float32, device=device)
        self.beta = torch.empty(P, N_COLOURS, dtype=torch.float32, device=device)
        self.cell = torch.empty(P, N, **i32)
        self.sorted = torch.empty(P, N, **i32)
        self.perm = torch.empty(P, N, dtype=torch.int64, device=device)
        self.bounds = torch.arange(n_cells + 1, **i32).expand(P, n_cells + 1).contiguous()
        self.starts = torch.empty(P, n_cells + 1, **i32)
        self.xs = torch.empty(P, N, dtype=torch.float32, device=device)
        self.ys = torch.empty(P, N, dtype=torch.float32, device=device)
        self.cs = torch.empty(P, N, **i32)


def bytes_per_simulation(N: int, n_cells: int) -> int:
    return N * (8 + 8 + 4 + 4 + 4 + 8 + 4 + 4 + 4) * 2 + 4 * 2 * (n_cells + 1) + 4 * 42


class ParticleLifeTriton:
    """The Particle Life step on CUDA (or Triton's interpreter) for one configuration."""

    def __init__(self, N: int, grid: int, reach: int, r_max: float, mass: float, decay: float, dt: float,
                 device: torch.device):
        self.N, self.grid, self.reach = N, grid, reach
        self.r_max, self.mass, self.decay, self.dt = r_max, mass, decay, dt
        self.device = device
        self._state: tuple[int, _Buffers, GraphedSteps] | None = None
        self._lock = threading.Lock()

    def _one_step(self, b: _Buffers) -> None:
        P, N, G = b.x.shape[0], self.N, self.grid * self.grid
        total = P * N
        block = 1024 if not interpreted() else max(1024, 1 << (total - 1).bit_length())
        elem = (triton.cdiv(total, block),)
        _cells[elem](b.x, b.cell, total, self.grid, BLOCK=block, num_warps=4)
        torch.sort(b.cell, dim=1, stable=True, out=(b.sorted, b.perm))
        torch.searchsorted(b.sorted, b.bounds, out_int32=True, out=b.starts)
        _gather[elem](b.x, b.c, b.perm, b.xs, b.ys, b.cs, N, total, BLOCK=block, num_warps=4)
        tile = 64
        _forces[(P * G,)](b.xs, b.ys, b.cs, b.perm, b.starts, b.x, b.v, b.alpha, b.beta, N, self.grid, self.reach,
                          1.0 / self.r_max, self.r_max, self.decay, self.dt, self.mass, BI=tile, BJ=tile,
                          ALL_PAIRS=self.reach == 0, num_warps=4)

    def step(self, x: torch.Tensor, v: torch.Tensor, c: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor,
             steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Advance x, v (P, N, 2) with colours c (P, N) by `steps` steps; returns new x, v."""
        P = x.shape[0]
        with self._lock:
            if self._state is None or self._state[0] != P:
                self._state = None
                fits_in_memory(self.device, P, bytes_per_simulation(self.N, self.grid ** 2), "plife")
                b = _Buffers(P, self.N, self.grid ** 2, self.device)
                self._state = (P, b, GraphedSteps(lambda: self._one_step(b), self.device))
            _, b, graphs = self._state
            b.x.copy_(x)
            b.v.copy_(v)
            b.c.copy_(c)
            b.alpha.copy_(alpha)
            b.beta.copy_(beta)
            graphs.run(steps)
            return b.x.clone(), b.v.clone()
