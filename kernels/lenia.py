"""Lenia: the recentring roll, the update and the centre of mass of one step, in Taichi.

The convolutions run as batched real FFTs in torch and the Gaussian growth as torch's vectorised
exp (see workbench.simulations.lenia); these kernels do the rest in single passes over memory,
on channel-first worlds (P, C, H, W):
  roll:   out = the world rolled by -shift (the previous step's recentring), row by row with two
          contiguous runs instead of a modulo per element;
  update: A' = clip(A + dt·growth) with the growth summed over kernels by torch, and the
          centre-of-mass sums that give the next shift. Sums are taken row by row and then serially,
          so the shift (an integer, truncated) is the same on every run.
"""

import taichi as ti

from workbench.kernels.runtime import CPU_CHUNK, ROW_STRIDE, kernel


@kernel
def roll(world: ti.types.ndarray(ndim=4), shift: ti.types.ndarray(ndim=2), out: ti.types.ndarray(ndim=4)):
    """out[p, c, y, x] = world[p, c, (y + sy) mod H, (x + sx) mod W] with (sy, sx) = shift[p]."""
    P, C, H, W = world.shape[0], world.shape[1], world.shape[2], world.shape[3]
    for r in range(P * C * H * ROW_STRIDE):
        if r % ROW_STRIDE != 0:
            continue
        p, c, y = r // ROW_STRIDE // (C * H), r // ROW_STRIDE // H % C, r // ROW_STRIDE % H
        sy = ((y + shift[p, 0]) % H + H) % H
        sx = (shift[p, 1] % W + W) % W
        for x in range(W - sx):
            out[p, c, y, x] = world[p, c, sy, x + sx]
        for x in range(W - sx, W):
            out[p, c, y, x] = world[p, c, sy, x + sx - W]


@kernel
def update(a: ti.types.ndarray(ndim=4), growth: ti.types.ndarray(ndim=4), out: ti.types.ndarray(ndim=4),
           rows: ti.types.ndarray(ndim=3), shift: ti.types.ndarray(ndim=2), total_shift: ti.types.ndarray(ndim=2),
           R: ti.f32, dt: ti.f32):
    """out = clip(a + dt·growth, 0, 1), then the recentring shift.

    a: rolled world (P, C, H, W); growth: Σ_k h_k·(2·g_k − 1) per channel (P, C, H, W); out: A'.
    rows: scratch (P, H, 3) for per-row sums of A, A'·(y − mid) and A'·(x − mid).
    """
    P, C, H, W = a.shape[0], a.shape[1], a.shape[2], a.shape[3]
    for r in range(P * H * ROW_STRIDE):
        if r % ROW_STRIDE != 0:
            continue
        p, y = r // ROW_STRIDE // H, r // ROW_STRIDE % H
        m00, my, mx = 0.0, 0.0, 0.0
        for x in range(W):
            mass = 0.0
            for c in ti.static(range(3)):
                if c < C:
                    old = a[p, c, y, x]
                    new = ti.min(ti.max(old + dt * growth[p, c, y, x], 0.0), 1.0)
                    out[p, c, y, x] = new
                    m00 += old
                    mass += new
            my += mass * ti.cast(y - H // 2, ti.f32)
            mx += mass * ti.cast(x - W // 2, ti.f32)
        rows[p, y, 0], rows[p, y, 1], rows[p, y, 2] = m00, my, mx
    for chunk in range(P * CPU_CHUNK):
        if chunk % CPU_CHUNK == 0:
            p = chunk // CPU_CHUNK
            m00, my, mx = 0.0, 0.0, 0.0
            for y in range(H):
                m00 += rows[p, y, 0]
                my += rows[p, y, 1]
                mx += rows[p, y, 2]
            sy, sx = 0, 0
            if m00 > 0.0:
                # centre = Σ A'·X / m00 with X = (y − mid)/R; shift = trunc(centre·R). m00 is the mass
                # before the update (reference quirk); an empty world does not move.
                sy = int(my / R / m00 * R)
                sx = int(mx / R / m00 * R)
            shift[p, 0], shift[p, 1] = sy, sx
            total_shift[p, 0] += sy
            total_shift[p, 1] += sx
