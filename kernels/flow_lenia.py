"""Flow-Lenia: the flow and the reintegration tracking of one step, in Taichi (asal-more.md §6).

The potentials run as Lenia's batched FFTs in torch (workbench.simulations.flow_lenia); these kernels do the rest
on channel-first worlds (P, C, H, W):
  affinity:    Ū_c = Σ_k weight[c, k]·(2·2^(−(U′_k − offset_k)²) − 1) in one pass over the potentials (U′ is U_k
               scaled by √(log2 e / 2)/s_k, as in Lenia's step, so the Gaussian is a power of 2);
  targets:     the zero-padded Sobel gradients of Ū_c and of A_Σ, the flow F_c and each source cell's clipped
               displacement dt·F_c;
  reintegrate: each source cell's mass spread over the cells its square (side 2σ, centred on its target) overlaps.
               The spec writes this as a gather over the (2dd+1)² window around each cell; a source reaches at most
               ⌊1 + 2σ⌋ + 1 cells a side, all inside that window (|μ − q| ≤ dd − σ), so visiting the sources and
               adding to those few cells gives the same sums with ~15× less work. One thread per image visits its
               sources in a fixed order: the same state gives the same step bit for bit, without atomics.
"""

import taichi as ti

from workbench.kernels.plenia import exp2_fast
from workbench.kernels.runtime import CPU_CHUNK, kernel

MAX_CHANNELS = 4


@ti.func
def _at(a: ti.template(), p, c, y, x):
    """a[p, c, y, x], zero outside the grid (the Sobel filter's padding)."""
    H, W = a.shape[2], a.shape[3]
    v = 0.0
    if 0 <= y < H and 0 <= x < W:
        v = a[p, c, y, x]
    return v


@kernel
def affinity(u: ti.types.ndarray(ndim=4), offset: ti.types.ndarray(ndim=2), weight: ti.types.ndarray(ndim=3),
             ubar: ti.types.ndarray(ndim=4), a: ti.types.ndarray(ndim=4), total: ti.types.ndarray(ndim=4)):
    """ubar[p, c] = Σ_k weight[p, c, k]·(2·2^(−(u[p, k] − offset[p, k])²) − 1); weight = h_k where c1_k = c, else 0.
    Also total[p, 0] = Σ_c a[p, c], the mass A_Σ whose gradient `targets` takes.

    At most MAX_CHANNELS channels (sums kept in registers)."""
    P, K, H, W = u.shape[0], u.shape[1], u.shape[2], u.shape[3]
    C = ubar.shape[1]
    for p, y, x in ti.ndrange(P, H, W):
        acc = ti.Vector([0.0] * MAX_CHANNELS)
        for k in range(K):
            d = u[p, k, y, x] - offset[p, k]
            g = 2.0 * exp2_fast(-d * d) - 1.0
            for c in ti.static(range(MAX_CHANNELS)):
                if c < C:
                    acc[c] += weight[p, c, k] * g
        mass = 0.0
        for c in ti.static(range(MAX_CHANNELS)):
            if c < C:
                ubar[p, c, y, x] = acc[c]
                mass += a[p, c, y, x]
        total[p, 0, y, x] = mass


@kernel
def targets(a: ti.types.ndarray(ndim=4), ubar: ti.types.ndarray(ndim=4), total: ti.types.ndarray(ndim=4),
            ty: ti.types.ndarray(ndim=4), tx: ti.types.ndarray(ndim=4), dt: ti.f32, theta_a: ti.f32, n: ti.f32,
            lim: ti.f32):
    """ty, tx (P, C, H, W): each source cell's displacement clip(dt·F, ±lim) per axis (total: A_Σ, (P, 1, H, W))."""
    P, C, H, W = a.shape[0], a.shape[1], a.shape[2], a.shape[3]
    for p, y, x in ti.ndrange(P, H, W):
        # ∂_y s = Σ_k w_k (s[y+1, x+k] − s[y−1, x+k]), ∂_x s = Σ_k w_k (s[y+k, x+1] − s[y+k, x−1]), w = (1, 2, 1)
        sy, sx = 0.0, 0.0
        for k in ti.static(range(-1, 2)):
            w = 2.0 if k == 0 else 1.0
            sy += w * (_at(total, p, 0, y + 1, x + k) - _at(total, p, 0, y - 1, x + k))
            sx += w * (_at(total, p, 0, y + k, x + 1) - _at(total, p, 0, y + k, x - 1))
        for c in range(C):
            uy, ux = 0.0, 0.0
            for k in ti.static(range(-1, 2)):
                w = 2.0 if k == 0 else 1.0
                uy += w * (_at(ubar, p, c, y + 1, x + k) - _at(ubar, p, c, y - 1, x + k))
                ux += w * (_at(ubar, p, c, y + k, x + 1) - _at(ubar, p, c, y + k, x - 1))
            alpha = ti.min(ti.max(ti.pow(a[p, c, y, x] / theta_a, n), 0.0), 1.0)
            fy = uy * (1.0 - alpha) - sy * alpha
            fx = ux * (1.0 - alpha) - sx * alpha
            ty[p, c, y, x] = ti.min(ti.max(dt * fy, -lim), lim)
            tx[p, c, y, x] = ti.min(ti.max(dt * fx, -lim), lim)


@kernel
def reintegrate(a: ti.types.ndarray(ndim=4), ty: ti.types.ndarray(ndim=4), tx: ti.types.ndarray(ndim=4),
                out: ti.types.ndarray(ndim=4), sigma: ti.f32, reach: ti.i32):
    """out[p, c] = Σ_q A(q)·Π_axis clip(½ + σ − |p − μ(q)|, 0, min(1, 2σ)) / (4σ²) on the torus, μ(q) = q + t(q).

    Cell p gets weight > 0 on an axis only where |p − μ| < ½ + σ: at most `reach` = ⌊1 + 2σ⌋ + 1 cells from
    ⌊μ − ½ − σ⌋ + 1 on.
    """
    P, C, H, W = a.shape[0], a.shape[1], a.shape[2], a.shape[3]
    cap = ti.min(1.0, 2.0 * sigma)
    norm = 1.0 / (4.0 * sigma * sigma)
    half = 0.5 + sigma
    for q in range(P * C * CPU_CHUNK):
        if q % CPU_CHUNK != 0:
            continue
        p, c = q // CPU_CHUNK // C, q // CPU_CHUNK % C
        for y, x in ti.ndrange(H, W):
            out[p, c, y, x] = 0.0
        for y, x in ti.ndrange(H, W):
            m = a[p, c, y, x] * norm
            if m != 0.0:
                my = ti.cast(y, ti.f32) + ty[p, c, y, x]
                mx = ti.cast(x, ti.f32) + tx[p, c, y, x]
                y0 = int(ti.floor(my - half)) + 1
                x0 = int(ti.floor(mx - half)) + 1
                for i in range(reach):
                    wy = ti.min(ti.max(half - ti.abs(ti.cast(y0 + i, ti.f32) - my), 0.0), cap)
                    if wy > 0.0:
                        row = (y0 + i + 2 * H) % H
                        for j in range(reach):
                            wx = ti.min(ti.max(half - ti.abs(ti.cast(x0 + j, ti.f32) - mx), 0.0), cap)
                            out[p, c, row, (x0 + j + 2 * W) % W] += m * wy * wx
