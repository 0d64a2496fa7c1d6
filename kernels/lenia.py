"""Lenia: the growth, update and recentring of one step, fused in Taichi.

The convolutions run as batched real FFTs in torch (see workbench.simulations.lenia); these kernels
do everything around them in single passes over memory:
  roll_to_channels: roll the stored world by -shift (the previous step's recentring) and lay it out
                    channel-first for the FFT;
  update:           growth of the 15 potentials, the clipped update, and the centre-of-mass sums
                    that give the next shift. Sums are taken row by row and then serially, so the
                    shift (an integer, truncated) is the same on every run.
"""

import taichi as ti

from workbench.kernels.runtime import CPU_CHUNK


@ti.kernel
def roll_to_channels(world: ti.types.ndarray(ndim=4), shift: ti.types.ndarray(ndim=2),
                     out: ti.types.ndarray(ndim=4)):
    """out[p, c, y, x] = world[p, (y + sy) mod H, (x + sx) mod W, c] with (sy, sx) = shift[p]."""
    P, H, W, C = world.shape[0], world.shape[1], world.shape[2], world.shape[3]
    # Row loops with a serial inner axis: Taichi's n-d index decomposition costs more than the copy.
    for p, y in ti.ndrange(P, H):
        sy = ((y + shift[p, 0]) % H + H) % H
        for x in range(W):
            sx = ((x + shift[p, 1]) % W + W) % W
            for c in range(C):
                out[p, c, y, x] = world[p, sy, sx, c]


@ti.kernel
def update(a: ti.types.ndarray(ndim=4), u: ti.types.ndarray(ndim=4),
           m: ti.types.ndarray(ndim=2), s: ti.types.ndarray(ndim=2), h: ti.types.ndarray(ndim=2),
           c1: ti.types.ndarray(ndim=1), world: ti.types.ndarray(ndim=4), rows: ti.types.ndarray(ndim=3),
           shift: ti.types.ndarray(ndim=2), total_shift: ti.types.ndarray(ndim=2), R: ti.f32, dt: ti.f32):
    """A' = clip(A + dt·Σ_k h_k·G(U_k; m_k, s_k) into channel c1_k, 0, 1), then the recentring shift.

    a: rolled world (P, C, H, W); u: potentials (P, K, H, W); world: output A' (P, H, W, C).
    rows: scratch (P, H, 3) for per-row sums of A, A'·(y − mid) and A'·(x − mid).
    """
    P, C, H, W = a.shape[0], a.shape[1], a.shape[2], a.shape[3]
    K = u.shape[1]
    for p, y in ti.ndrange(P, H):
        m00, my, mx = 0.0, 0.0, 0.0
        for x in range(W):
            growth = ti.Vector([0.0, 0.0, 0.0])
            for k in range(K):
                d = (u[p, k, y, x] - m[p, k]) / s[p, k]
                growth[c1[k]] += h[p, k] * (2.0 * ti.exp(-0.5 * d * d) - 1.0)
            mass = 0.0
            for c in ti.static(range(3)):
                if c < C:
                    old = a[p, c, y, x]
                    new = ti.min(ti.max(old + dt * growth[c], 0.0), 1.0)
                    world[p, y, x, c] = new
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
