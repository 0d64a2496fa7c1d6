"""Particle Life: all-pairs forces through a cell list with cell size >= r_max.

Only pairs closer than r_max interact, so each particle visits the 3×3 block of cells around its
own (on the torus). Positions and colours are copied into cell order by a stable counting sort: the inner loop reads
contiguous memory, and every particle sums its forces in the same order on every run, so the same
seed gives the same trajectory bit for bit.
"""

import taichi as ti

from workbench.kernels.runtime import CPU_CHUNK, kernel


@ti.func
def cell_of(x: ti.template(), p, i, grid):
    gx = ti.min(ti.max(int(x[p, i, 0] * grid), 0), grid - 1)
    gy = ti.min(ti.max(int(x[p, i, 1] * grid), 0), grid - 1)
    return gx * grid + gy


@ti.func
def cell_run(cell_start: ti.template(), p, xi0, xi1, gx, gy, dx, seg: ti.template(), grid, reach):
    """Where the cell-list neighbours of a particle at (xi0, xi1), in cell (gx, gy), lie in column gx + dx:
    (begin, end, ox, oy), the slots [begin, end) in cell order and the particle's position shifted so that
    neighbour − (ox, oy) is the minimum image for every pair closer than r_max.

    The column's cells gy − reach … gy + reach lie contiguously in cell order but for the torus' edges: a column
    is at most three runs, `seg` 0 the middle one, 1 and 2 the ones wrapped around the y edges (empty unless the
    block crosses an edge). A column across the x edge shifts the particle by one period instead. reach = 0 (one
    cell holding everything): run 0 is the whole grid, the caller wraps differences itself."""
    cx = gx + dx
    ox = xi0 + ti.cast(cx < 0, ti.f32) - ti.cast(cx >= grid, ti.f32)
    row = ((cx + grid) % grid) * grid
    lo, hi = gy - reach, gy + reach
    first, last, oy = ti.max(lo, 0), ti.min(hi, grid - 1), xi1
    if ti.static(seg == 1):
        first, last, oy = lo + grid, grid - 1, xi1 + 1.0
    elif ti.static(seg == 2):
        first, last, oy = 0, hi - grid, xi1 - 1.0
    if reach == 0:
        first, last = 0, ti.static(-1 if seg > 0 else 0)
    end = cell_start[p, row + last + 1] if first <= last else 0
    begin = cell_start[p, row + first] if first <= last else 0
    return begin, end, ox, oy


@ti.func
def _pick6(row, k):
    """row[k] for 6 colours as a chain of selects (vectorises, unlike a gather)."""
    out = row[5]
    for q in ti.static(range(5)):
        out = ti.select(k == 4 - q, row[4 - q], out)
    return out


@kernel
def step(x: ti.types.ndarray(ndim=3), v: ti.types.ndarray(ndim=3), c: ti.types.ndarray(ndim=2),
         alpha: ti.types.ndarray(ndim=3), beta: ti.types.ndarray(ndim=2),
         cell_start: ti.types.ndarray(ndim=2), cell_fill: ti.types.ndarray(ndim=2),
         xs: ti.types.ndarray(ndim=2), ys: ti.types.ndarray(ndim=2),
         cs: ti.types.ndarray(ndim=2), grid: ti.i32, reach: ti.i32, r_max: ti.f32, mass: ti.f32,
         decay: ti.f32, dt: ti.f32):
    """One step of every simulation (x, v updated in place).

    Cells are 1/grid wide and a particle visits the (2·reach + 1)² cells around its own, so
    reach/grid >= r_max must hold (grid = 1, reach = 0: all pairs).
    """
    n_cells = grid * grid
    for p, k in ti.ndrange(x.shape[0], n_cells + 1):
        cell_start[p, k] = 0
    for p, i in ti.ndrange(x.shape[0], x.shape[1]):
        ti.atomic_add(cell_start[p, cell_of(x, p, i, grid) + 1], 1)
    for q in range(x.shape[0] * CPU_CHUNK):
        if q % CPU_CHUNK == 0:
            p = q // CPU_CHUNK
            for k in range(n_cells):
                cell_start[p, k + 1] += cell_start[p, k]
                cell_fill[p, k] = 0
            for i in range(x.shape[1]):  # serial: keeps each cell in particle order
                k = cell_of(x, p, i, grid)
                slot = cell_start[p, k] + cell_fill[p, k]
                xs[p, slot], ys[p, slot] = x[p, i, 0], x[p, i, 1]
                cs[p, slot] = c[p, i]
                cell_fill[p, k] += 1
    inv_r = 1.0 / r_max
    for p, i in ti.ndrange(x.shape[0], x.shape[1]):
        xi0, xi1 = x[p, i, 0], x[p, i, 1]
        ci = c[p, i]
        b = beta[p, ci]
        arow = ti.Vector([alpha[p, ci, k] for k in ti.static(range(6))])
        inv_b, inv_1mb = 1.0 / b, 1.0 / (1.0 - b)
        gx = ti.min(ti.max(int(xi0 * grid), 0), grid - 1)
        gy = ti.min(ti.max(int(xi1 * grid), 0), grid - 1)
        a0, a1 = 0.0, 0.0
        for dx in range(-reach, reach + 1):
            for seg in ti.static(range(3)):
                t_begin, t_end, ox, oy = cell_run(cell_start, p, xi0, xi1, gx, gy, dx, seg, grid, reach)
                for t in range(t_begin, t_end):
                    d0 = xs[p, t] - ox
                    d1 = ys[p, t] - oy
                    if reach == 0:
                        d0 -= ti.round(d0)
                        d1 -= ti.round(d1)
                    # Branch-free so that the loop vectorises; pairs at r >= r_max get F = 0 and the
                    # particle itself (d = 0) adds exactly 0, as in the reference.
                    r = ti.sqrt(d0 * d0 + d1 * d1)
                    rr = r * inv_r
                    near = rr * inv_b - 1.0
                    far = _pick6(arow, cs[p, t]) * (1.0 - ti.abs(2.0 * rr - 1.0 - b) * inv_1mb)
                    force = ti.select(rr < b, near, ti.select((b < rr) & (rr < 1.0), far, 0.0))
                    f = r_max * force / (r + 1e-8)
                    a0 += f * d0
                    a1 += f * d1
        v[p, i, 0] = decay * v[p, i, 0] + dt * a0 / mass
        v[p, i, 1] = decay * v[p, i, 1] + dt * a1 / mass
    for p, i in ti.ndrange(x.shape[0], x.shape[1]):
        for a in ti.static(range(2)):
            y = x[p, i, a] + dt * v[p, i, a]
            x[p, i, a] = y - ti.floor(y)
