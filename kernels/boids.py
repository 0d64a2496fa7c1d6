"""Boids: neural-network boids of the ASAL reference, several steps per kernel launch.

One simulation has few boids (128), so a thread owns a whole simulation and runs all requested
steps without returning to Python: a population of P simulations advances in one launch, in
parallel over P. Neighbours come from a uniform grid that returns exactly the brute-force k nearest
(plain Euclidean distance, no wrap-around: a reference quirk).

Flat parameter layout (as the search vector θ): for layer i = 1..4, b_i then W_i (in×out, row-major).
"""

import taichi as ti

from workbench.kernels.runtime import CPU_CHUNK, kernel

K_NEIGHBOURS = 16
HIDDEN = 8
# offsets of b1, W1, b2, W2, b3, W3, b4, W4 in the flat parameter vector
_B1, _W1, _B2, _W2, _B3, _W3, _B4, _W4 = 0, 8, 40, 48, 112, 120, 184, 185
N_PARAMS = 193

INF = 1e30


@ti.func
def _bin(x: ti.template(), p, n, grid, cell,
         cell_start: ti.template(), cell_fill: ti.template(), items: ti.template()):
    """Counting sort of simulation p's boids into grid cells, stable in boid index."""
    for c in range(grid * grid + 1):
        cell_start[p, c] = 0
    for i in range(n):
        c = _cell_of(x, p, i, grid, cell)
        cell_start[p, c + 1] += 1
    for c in range(grid * grid):
        cell_start[p, c + 1] += cell_start[p, c]
        cell_fill[p, c] = 0
    for i in range(n):
        c = _cell_of(x, p, i, grid, cell)
        items[p, cell_start[p, c] + cell_fill[p, c]] = i
        cell_fill[p, c] += 1


@ti.func
def _cell_of(x: ti.template(), p, i, grid, cell):
    gx = ti.min(ti.max(int(x[p, i, 0] / cell), 0), grid - 1)
    gy = ti.min(ti.max(int(x[p, i, 1] / cell), 0), grid - 1)
    return gx * grid + gy


@ti.func
def _knn(x: ti.template(), p, i, grid, cell, max_dist,
         cell_start: ti.template(), items: ti.template(), k: ti.template()):
    """The k nearest other boids of boid i within max_dist, sorted by (distance, index).

    Searches rings of cells around boid i's cell; a ring r+1 can only hold points at distance
    >= r·cell, so the search stops once the k-th best is closer than that (or max_dist is passed).
    """
    best_d = ti.Vector([INF] * k, dt=ti.f32)
    best_j = ti.Vector([-1] * k, dt=ti.i32)
    count = 0
    xi = ti.Vector([x[p, i, 0], x[p, i, 1]])
    gx = ti.min(ti.max(int(xi[0] / cell), 0), grid - 1)
    gy = ti.min(ti.max(int(xi[1] / cell), 0), grid - 1)
    r = 0
    while r <= grid:
        for dx in range(-r, r + 1):
            for dy in range(-r, r + 1):
                cx, cy = gx + dx, gy + dy
                if ti.max(ti.abs(dx), ti.abs(dy)) == r and 0 <= cx < grid and 0 <= cy < grid:
                    c = cx * grid + cy
                    for t in range(cell_start[p, c], cell_start[p, c + 1]):
                        j = items[p, t]
                        dxy = ti.Vector([x[p, j, 0] - xi[0], x[p, j, 1] - xi[1]])
                        d = ti.sqrt(dxy[0] * dxy[0] + dxy[1] * dxy[1])
                        worse = count == k and (d > best_d[k - 1] or (d == best_d[k - 1] and j > best_j[k - 1]))
                        if j != i and d < max_dist and not worse:
                            pos = ti.min(count, k - 1)
                            while pos > 0 and (best_d[pos - 1] > d or (best_d[pos - 1] == d and best_j[pos - 1] > j)):
                                best_d[pos] = best_d[pos - 1]
                                best_j[pos] = best_j[pos - 1]
                                pos -= 1
                            best_d[pos] = d
                            best_j[pos] = j
                            count = ti.min(count + 1, k)
        reach = r * cell
        if reach >= max_dist or (count == k and best_d[k - 1] <= reach):
            break
        r += 1
    return count, best_j, best_d


@kernel
def knn(x: ti.types.ndarray(ndim=3), out_idx: ti.types.ndarray(ndim=3), out_dist: ti.types.ndarray(ndim=3),
        cell_start: ti.types.ndarray(ndim=2), cell_fill: ti.types.ndarray(ndim=2), items: ti.types.ndarray(ndim=2),
        grid: ti.i32, cell: ti.f32, k: ti.template()):
    """The exact k nearest neighbours of every boid (indices -1 / distance INF where fewer exist)."""
    for q in range(x.shape[0] * CPU_CHUNK):
        if q % CPU_CHUNK == 0:
            p = q // CPU_CHUNK
            n = x.shape[1]
            _bin(x, p, n, grid, cell, cell_start, cell_fill, items)
            for i in range(n):
                _, bj, bd = _knn(x, p, i, grid, cell, INF, cell_start, items, k)
                for t in ti.static(range(k)):
                    out_idx[p, i, t] = bj[t]
                    out_dist[p, i, t] = bd[t]


@ti.func
def _dense_tanh(inp, theta: ti.template(), p, b_off: ti.template(), w_off: ti.template(),
                n_in: ti.template(), n_out: ti.template()):
    out = ti.Vector([0.0] * n_out, dt=ti.f32)
    for o in ti.static(range(n_out)):
        acc = theta[p, b_off + o]
        for q in ti.static(range(n_in)):
            acc += inp[q] * theta[p, w_off + q * n_out + o]
        out[o] = ti.tanh(acc)
    return out


@ti.func
def _update_boid(x: ti.template(), v: ti.template(), theta: ti.template(), x_new: ti.template(), v_new: ti.template(),
                 cell_start: ti.template(), items: ti.template(), p, i, grid, cell, visual_range, speed, dt):
    """Boid i's next heading and position (written to x_new, v_new)."""
    count, nbr, _ = _knn(x, p, i, grid, cell, visual_range, cell_start, items, K_NEIGHBOURS)
    u, w = v[p, i, 0], v[p, i, 1]
    pooled = ti.Vector([0.0] * HIDDEN, dt=ti.f32)
    for q in range(count):
        j = nbr[q]
        dx, dy = x[p, j, 0] - x[p, i, 0], x[p, j, 1] - x[p, i, 1]
        vx, vy = v[p, j, 0], v[p, j, 1]
        # neighbour position and velocity in boid i's frame (heading along the first axis)
        inp = ti.Vector([50.0 * (u * dx + w * dy), 50.0 * (-w * dx + u * dy),
                         u * vx + w * vy, -w * vx + u * vy], dt=ti.f32)
        h1 = _dense_tanh(inp, theta, p, _B1, _W1, 4, HIDDEN)
        pooled += _dense_tanh(h1, theta, p, _B2, _W2, HIDDEN, HIDDEN)
    o = 0.0
    if count > 0:
        pooled /= ti.cast(count, ti.f32)
        h3 = _dense_tanh(pooled, theta, p, _B3, _W3, HIDDEN, HIDDEN)
        o = _dense_tanh(h3, theta, p, _B4, _W4, HIDDEN, 1)[0]
    nu = u + dt * 60.0 * o * (-w)
    nw = w + dt * 60.0 * o * u
    norm = ti.sqrt(nu * nu + nw * nw)
    nu, nw = nu / norm, nw / norm
    v_new[p, i, 0], v_new[p, i, 1] = nu, nw
    px = x[p, i, 0] + speed * dt * nu
    py = x[p, i, 1] + speed * dt * nw
    x_new[p, i, 0] = px - ti.floor(px)
    x_new[p, i, 1] = py - ti.floor(py)


@kernel
def step_per_simulation(x: ti.types.ndarray(ndim=3), v: ti.types.ndarray(ndim=3), theta: ti.types.ndarray(ndim=2),
                        x_new: ti.types.ndarray(ndim=3), v_new: ti.types.ndarray(ndim=3),
                        cell_start: ti.types.ndarray(ndim=2), cell_fill: ti.types.ndarray(ndim=2),
                        items: ti.types.ndarray(ndim=2), steps: ti.i32, grid: ti.i32, cell: ti.f32,
                        visual_range: ti.f32, speed: ti.f32, dt: ti.f32):
    """Advance every simulation by `steps` steps in one launch (x, v updated in place).

    One thread owns one simulation: best on CPUs, where a launch costs ~0.2 ms and a Boids step
    of 128 boids costs less than that.
    """
    for q in range(x.shape[0] * CPU_CHUNK):
        if q % CPU_CHUNK == 0:
            p = q // CPU_CHUNK
            n = x.shape[1]
            for _s in range(steps):
                _bin(x, p, n, grid, cell, cell_start, cell_fill, items)
                for i in range(n):
                    _update_boid(x, v, theta, x_new, v_new, cell_start, items, p, i, grid, cell, visual_range,
                                 speed, dt)
                for i in range(n):
                    for a in ti.static(range(2)):
                        x[p, i, a] = x_new[p, i, a]
                        v[p, i, a] = v_new[p, i, a]


@kernel
def step_per_boid(x: ti.types.ndarray(ndim=3), v: ti.types.ndarray(ndim=3), theta: ti.types.ndarray(ndim=2),
                  x_new: ti.types.ndarray(ndim=3), v_new: ti.types.ndarray(ndim=3),
                  cell_start: ti.types.ndarray(ndim=2), cell_fill: ti.types.ndarray(ndim=2),
                  items: ti.types.ndarray(ndim=2), grid: ti.i32, cell: ti.f32,
                  visual_range: ti.f32, speed: ti.f32, dt: ti.f32):
    """One step, parallel over every boid of every simulation: best on GPUs and for large N."""
    for p in range(x.shape[0]):
        _bin(x, p, x.shape[1], grid, cell, cell_start, cell_fill, items)
    for p, i in ti.ndrange(x.shape[0], x.shape[1]):
        _update_boid(x, v, theta, x_new, v_new, cell_start, items, p, i, grid, cell, visual_range, speed, dt)
    for p, i in ti.ndrange(x.shape[0], x.shape[1]):
        for a in ti.static(range(2)):
            x[p, i, a] = x_new[p, i, a]
            v[p, i, a] = v_new[p, i, a]
