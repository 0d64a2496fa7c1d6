"""Particle Life+: the pair MLP, forces and colour change through a cell list, in Taichi (asal-more.md §5, §7).

Only pairs closer than r_max contribute, and the self pair (d = 0, inside its own cell) gives its δ_ii in full,
so each particle visits the 3×3 block of cells around its own, as in Particle Life (kernels/plife.py). A step is
four passes: `sort` (the cell list), `neighbours` twice (count each particle's pairs within r_max, then write
them contiguously), `interact` (the MLP over the lists, vectorised, and the update). About a third of the
candidates in the 3×3 block are within r_max, and a branch in the MLP loop would stop its vectorisation, so the
lists are built first. The first layer is split: [c_i ‖ c_j]·W0 + b0 = (c_i·W0[:6] + b0) + c_j·W0[6:], the second
half computed once per particle. Each particle sums its pairs in cell order, the same on every run, so the same
state gives the same step bit for bit.
"""

import taichi as ti

from workbench.kernels.plenia import exp_fast
from workbench.kernels.plife import cell_of, cell_run
from workbench.kernels.runtime import CPU_CHUNK, kernel

H = 8  # hidden width of the pair MLP
D = 6  # colour dimensions
# The MLP comes as one flat array per simulation in θ's layout [b0, W0, b1, W1, b2, W2, b3, W3] (kernels in × out,
# row-major): one kernel argument instead of eight (each ndarray argument costs time on every launch).
B0, W0, B1, W1, B2, W2, B3, W3 = 0, 8, 104, 112, 176, 184, 248, 255


@ti.func
def tanh_fast(x):
    """tanh as Eigen's float rational approximation (13/6, a few ulp; |x| clamped at 7.9, where it is 1 in float32):
    a dozen multiply-adds and one division, cheaper than libm's tanhf or one through exp."""
    x = ti.min(ti.max(x, -7.90531110763549805), 7.90531110763549805)
    x2 = x * x
    p = -2.76076847742355e-16
    p = p * x2 + 2.00018790482477e-13
    p = p * x2 - 8.60467152213735e-11
    p = p * x2 + 5.12229709037114e-08
    p = p * x2 + 1.48572235717979e-05
    p = p * x2 + 6.37261928875436e-04
    p = p * x2 + 4.89352455891786e-03
    q = 1.19825839466702e-06
    q = q * x2 + 1.18534705686654e-04
    q = q * x2 + 2.26843463243900e-03
    q = q * x2 + 4.89352518554385e-03
    return x * p / q


@kernel
def sort(x: ti.types.ndarray(ndim=3), c: ti.types.ndarray(ndim=3), mlp: ti.types.ndarray(ndim=2),
         cell_start: ti.types.ndarray(ndim=2), cell_fill: ti.types.ndarray(ndim=2), xs: ti.types.ndarray(ndim=2),
         ys: ti.types.ndarray(ndim=2), bs: ti.types.ndarray(ndim=3), grid: ti.i32):
    """Positions and c_j·W0[6:] copied into cell order by a stable counting sort (cells 1/grid wide).

    One serial pass per simulation (a thousand particles): a parallel loop per phase would cost more in
    synchronisation than the work.
    """
    P, N = x.shape[0], x.shape[1]
    n_cells = grid * grid
    for q in range(P * CPU_CHUNK):
        if q % CPU_CHUNK == 0:
            p = q // CPU_CHUNK
            for k in range(n_cells + 1):
                cell_start[p, k] = 0
            for i in range(N):
                cell_start[p, cell_of(x, p, i, grid) + 1] += 1
            for k in range(n_cells):
                cell_start[p, k + 1] += cell_start[p, k]
                cell_fill[p, k] = 0
            for i in range(N):  # serial: keeps each cell in particle order
                k = cell_of(x, p, i, grid)
                slot = cell_start[p, k] + cell_fill[p, k]
                xs[p, slot], ys[p, slot] = x[p, i, 0], x[p, i, 1]
                for o in ti.static(range(H)):
                    acc = 0.0
                    for a in ti.static(range(D)):
                        acc += c[p, i, a] * mlp[p, W0 + (D + a) * H + o]
                    bs[p, o, slot] = acc
                cell_fill[p, k] += 1


@kernel
def neighbours(x: ti.types.ndarray(ndim=3), cell_start: ti.types.ndarray(ndim=2), xs: ti.types.ndarray(ndim=2),
               ys: ti.types.ndarray(ndim=2), offset: ti.types.ndarray(ndim=1), idx: ti.types.ndarray(ndim=1),
               dist: ti.types.ndarray(ndim=2), grid: ti.i32, reach: ti.i32, r_max: ti.f32, fill: ti.template()):
    """The pairs (i, j) closer than r_max, the self pair included, in cell order.

    fill = False: counts them (plus one spare slot) and sums the counts: particle (p, i)'s list starts at
    offset[p·N + i] (offset[0] = 0). fill = True: writes each pair at
    offset[p·N + i] on: idx the neighbour's slot in cell order, dist (2, pairs) d_ij.
    Cells are 1/grid wide and a particle visits the (2·reach + 1)² cells around its own, so reach/grid >= r_max
    must hold (grid = 1, reach = 0: all pairs, the wrapped difference by rounding).
    """
    P, N = x.shape[0], x.shape[1]
    inv_r2 = 1.0 / (r_max * r_max)
    for p, i in ti.ndrange(P, N):
        at = offset[p * N + i] if ti.static(fill) else 0
        xi0, xi1 = x[p, i, 0], x[p, i, 1]
        gx = ti.min(ti.max(int(xi0 * grid), 0), grid - 1)
        gy = ti.min(ti.max(int(xi1 * grid), 0), grid - 1)
        for dx in range(-reach, reach + 1):
            for seg in ti.static(range(3)):
                t_begin, t_end, ox, oy = cell_run(cell_start, p, xi0, xi1, gx, gy, dx, seg, grid, reach)
                for t in range(t_begin, t_end):
                    d0 = xs[p, t] - ox
                    d1 = ys[p, t] - oy
                    if reach == 0:
                        d0 = d0 - ti.select(d0 > 0.5, 1.0, 0.0) + ti.select(d0 < -0.5, 1.0, 0.0)
                        d1 = d1 - ti.select(d1 > 0.5, 1.0, 0.0) + ti.select(d1 < -0.5, 1.0, 0.0)
                    near = (d0 * d0 + d1 * d1) * inv_r2 < 1.0  # ρ < r_max
                    # Farther pairs add nothing; the self pair (rr = 0) adds its δ_ii. Branch-free (a third of
                    # the candidates are kept, at random: a branch mispredicts): every candidate is written at
                    # `at`, and `at` moves on only for a kept one. Each particle's list ends in one spare slot
                    # for the last write.
                    if ti.static(fill):
                        idx[at] = t
                        dist[0, at], dist[1, at] = d0, d1
                    at += ti.select(near, 1, 0)
        if ti.static(not fill):
            offset[p * N + i + 1] = at + 1  # the spare slot
    if ti.static(not fill):
        for q in range(CPU_CHUNK):  # one serial pass: the lists' starts (offset[0] = 0)
            if q == 0:
                for k in range(P * N):
                    offset[k + 1] += offset[k]


@kernel
def interact(x: ti.types.ndarray(ndim=3), v: ti.types.ndarray(ndim=3), c: ti.types.ndarray(ndim=3),
             mlp: ti.types.ndarray(ndim=2),
             bs: ti.types.ndarray(ndim=3), offset: ti.types.ndarray(ndim=1), idx: ti.types.ndarray(ndim=1),
             dist: ti.types.ndarray(ndim=2), r_max: ti.f32, beta: ti.f32, mass: ti.f32, decay: ti.f32, dt: ti.f32):
    """The pair MLP over each particle's list (contiguous, branch-free: it vectorises), then v, x and c updated
    in place. Each particle sums its pairs in cell order, the same on every run."""
    P, N = x.shape[0], x.shape[1]
    inv_r, inv_b, inv_1mb = 1.0 / r_max, 1.0 / beta, 1.0 / (1.0 - beta)
    for p, i in ti.ndrange(P, N):
        # the layers transposed (out × in), so a layer is w @ h
        w1 = ti.Matrix([[mlp[p, W1 + a * H + o] for a in ti.static(range(H))] for o in ti.static(range(H))])
        w2 = ti.Matrix([[mlp[p, W2 + a * H + o] for a in ti.static(range(H))] for o in ti.static(range(H))])
        w3 = ti.Matrix([[mlp[p, W3 + a * 7 + o] for a in ti.static(range(H))] for o in ti.static(range(7))])
        c1 = ti.Vector([mlp[p, B1 + o] for o in ti.static(range(H))])
        c2 = ti.Vector([mlp[p, B2 + o] for o in ti.static(range(H))])
        c3 = ti.Vector([mlp[p, B3 + o] for o in ti.static(range(7))])
        ai = ti.Vector([mlp[p, B0 + o] for o in ti.static(range(H))])  # c_i·W0[:6] + b0 (c_i before the update)
        for o in ti.static(range(H)):
            for a in ti.static(range(D)):
                ai[o] += c[p, i, a] * mlp[p, W0 + a * H + o]
        f0, f1 = 0.0, 0.0
        dc0, dc1, dc2, dc3, dc4, dc5 = 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
        for k in range(offset[p * N + i], offset[p * N + i + 1] - 1):  # without the spare slot
            # fresh names per layer: reassigning a Taichi vector here kept the old value
            t = idx[k]
            h1 = ti.Vector([tanh_fast(ai[o] + bs[p, o, t]) for o in ti.static(range(H))])
            z2 = w1 @ h1 + c1
            h2 = ti.Vector([tanh_fast(z2[o]) for o in ti.static(range(H))])
            z3 = w2 @ h2 + c2
            h3 = ti.Vector([tanh_fast(z3[o]) for o in ti.static(range(H))])
            out = w3 @ h3 + c3
            d0, d1 = dist[0, k], dist[1, k]
            rho = ti.sqrt(d0 * d0 + d1 * d1)
            rr = rho * inv_r
            alpha = 1.5 * tanh_fast(out[0])
            far = alpha * (1.0 - ti.abs(2.0 * rr - 1.0 - beta) * inv_1mb)
            force = ti.select(rr < beta, rr * inv_b - 1.0, ti.select(beta < rr, far, 0.0))
            f = r_max * force / (rho + 1e-8)
            f0 += f * d0
            f1 += f * d1
            wgt = 1.0 - rr
            dc0 += tanh_fast(out[1]) * wgt
            dc1 += tanh_fast(out[2]) * wgt
            dc2 += tanh_fast(out[3]) * wgt
            dc3 += tanh_fast(out[4]) * wgt
            dc4 += tanh_fast(out[5]) * wgt
            dc5 += tanh_fast(out[6]) * wgt
        v0 = decay * v[p, i, 0] + dt * f0 / mass
        v1 = decay * v[p, i, 1] + dt * f1 / mass
        v[p, i, 0], v[p, i, 1] = v0, v1
        y0, y1 = x[p, i, 0] + dt * v0, x[p, i, 1] + dt * v1
        x[p, i, 0], x[p, i, 1] = y0 - ti.floor(y0), y1 - ti.floor(y1)
        cn = ti.Vector([c[p, i, 0], c[p, i, 1], c[p, i, 2], c[p, i, 3], c[p, i, 4], c[p, i, 5]])
        cn += dt * ti.Vector([dc0, dc1, dc2, dc3, dc4, dc5])
        cn = cn / cn.norm()
        for a in ti.static(range(D)):
            c[p, i, a] = cn[a]


# --- render ------------------------------------------------------------------------------------

EDGE_SHARPNESS = 30.0 / 0.04
EDGE_CUTOFF = 0.02  # coverage 1 − σ(750·d) < 3e-7 beyond this distance outside the disc


@kernel
def render(x: ti.types.ndarray(ndim=3), c: ti.types.ndarray(ndim=3), img: ti.types.ndarray(ndim=4),
           radius: ti.f32, bands: ti.i32, band_stride: ti.i32):
    """Black canvas, discs of colour (c[:3] + 1)/2 and coverage 1 − σ(750·(d − radius)) in index order.

    Banded as kernels/render.py `particles`: one thread per band of rows (axis 0 is x), every particle in drawing
    order painting only the part of its disc inside the band; not wrapped at the edges.
    """
    P, N, size = x.shape[0], x.shape[1], img.shape[1]
    reach = radius + EDGE_CUTOFF
    per_band = (size + bands - 1) // bands
    for q in range(P * bands * band_stride):
        if q % band_stride != 0:
            continue
        k = q // band_stride
        p, band = k // bands, k % bands
        ix0, ix1 = band * per_band, ti.min((band + 1) * per_band, size) - 1
        for ix in range(ix0, ix1 + 1):
            for iy in range(size):
                for ch in ti.static(range(3)):
                    img[p, ix, iy, ch] = 0.0
        for i in range(N):  # index order: the last particle ends on top
            px, py = x[p, i, 0], x[p, i, 1]
            a = ti.max(int(ti.floor((px - reach) * (size - 1))), ix0)
            b = ti.min(int(ti.ceil((px + reach) * (size - 1))), ix1)
            if a <= b:
                ya = ti.max(int(ti.floor((py - reach) * (size - 1))), 0)
                yb = ti.min(int(ti.ceil((py + reach) * (size - 1))), size - 1)
                colour = ti.Vector([(c[p, i, ch] + 1.0) * 0.5 for ch in ti.static(range(3))])
                for ix in range(a, b + 1):
                    dx = px - ix / (size - 1)
                    # the pixels of this row within `reach` of the centre (rounded outwards: a pixel or two more
                    # get coverage below 3e-7, as in the reference, which composites every particle everywhere)
                    hw = ti.sqrt(ti.max(reach * reach - dx * dx, 0.0))
                    y0 = ti.max(int(ti.floor((py - hw) * (size - 1))), ya)
                    y1 = ti.min(int(ti.ceil((py + hw) * (size - 1))), yb)
                    for iy in range(y0, y1 + 1):
                        dy = py - iy / (size - 1)
                        cov = 1.0 / (1.0 + exp_fast(EDGE_SHARPNESS * (ti.sqrt(dx * dx + dy * dy) - radius)))
                        for ch in ti.static(range(3)):
                            img[p, ix, iy, ch] = cov * colour[ch] + (1.0 - cov) * img[p, ix, iy, ch]
