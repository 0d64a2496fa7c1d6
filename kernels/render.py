"""Renderers: tile-binned splatting for boids and particles, nearest-neighbour upscale for Lenia.

The reference draws one object at a time over the whole canvas (0.7 s a frame for 5000 particles).
Each object here touches only the tiles its footprint covers: objects are binned into 8×8-pixel
tiles (in drawing order, so compositing is exactly the reference's), then every pixel composites
the short list of its tile. Footprints are cut where an object's weight drops below ~1e-8.

Image axis 0 is x and axis 1 is y, sample points linspace(0, 1, size) (the reference's layout).
"""

import taichi as ti

from workbench.kernels.runtime import CPU_CHUNK

TILE = 8


@ti.func
def _tile_range(lo, hi, size):
    """Tiles covering world coordinates [lo, hi] on an axis sampled at k/(size − 1)."""
    n_tiles = (size + TILE - 1) // TILE
    a = ti.max(int(ti.floor(lo * (size - 1))) // TILE, 0)
    b = ti.min(int(ti.ceil(hi * (size - 1))) // TILE, n_tiles - 1)
    return a, b


@ti.func
def _sigmoid(z):
    return 1.0 / (1.0 + ti.exp(-z))


# --- boids -------------------------------------------------------------------------------------

BOID_SIZE = 0.015
BOID_MARGIN = 0.02  # beyond this distance from the triangle its mask is < 1e-7


@ti.func
def _boid_triangle(x: ti.template(), v: ti.template(), p, i):
    u, w = v[p, i, 0], v[p, i, 1]
    o = ti.Vector([x[p, i, 0], x[p, i, 1]])
    fwd, left = ti.Vector([u, w]), ti.Vector([-w, u])
    s = BOID_SIZE
    # local vertices (0, 1)s, (0, -1)s, (3, 0)s mapped by the boid's frame
    return o + left * s, o - left * s, o + fwd * (3.0 * s)


@ti.func
def _boid_mask(a, b, c, q):
    """σ(40λ1)·σ(40λ2)·σ(40λ3) on the barycentric coordinates of q."""
    v0, v1, v2 = b - a, c - a, q - a
    den = v0[0] * v1[1] - v1[0] * v0[1]
    l2 = (v2[0] * v1[1] - v1[0] * v2[1]) / den
    l3 = (v0[0] * v2[1] - v2[0] * v0[1]) / den
    l1 = 1.0 - l2 - l3
    return _sigmoid(40.0 * l1) * _sigmoid(40.0 * l2) * _sigmoid(40.0 * l3)


@ti.kernel
def boids(x: ti.types.ndarray(ndim=3), v: ti.types.ndarray(ndim=3), img: ti.types.ndarray(ndim=4),
          tile_start: ti.types.ndarray(ndim=2), tile_fill: ti.types.ndarray(ndim=2),
          tile_items: ti.types.ndarray(ndim=2)):
    """White canvas, black boids composited in order, boid 0 drawn again in red on top."""
    P, N, size = x.shape[0], x.shape[1], img.shape[1]
    nt = (size + TILE - 1) // TILE
    for p, t in ti.ndrange(P, nt * nt + 1):
        tile_start[p, t] = 0
    for q in range(P * CPU_CHUNK):
        if q % CPU_CHUNK == 0:
            p = q // CPU_CHUNK
            for pass_ in range(2):  # count, then fill in boid order
                if pass_ == 1:
                    for t in range(nt * nt):
                        tile_start[p, t + 1] += tile_start[p, t]
                        tile_fill[p, t] = 0
                for i in range(N):
                    a, b, c = _boid_triangle(x, v, p, i)
                    tx0, tx1 = _tile_range(ti.min(a[0], b[0], c[0]) - BOID_MARGIN,
                                           ti.max(a[0], b[0], c[0]) + BOID_MARGIN, size)
                    ty0, ty1 = _tile_range(ti.min(a[1], b[1], c[1]) - BOID_MARGIN,
                                           ti.max(a[1], b[1], c[1]) + BOID_MARGIN, size)
                    for tx in range(tx0, tx1 + 1):
                        for ty in range(ty0, ty1 + 1):
                            t = tx * nt + ty
                            if pass_ == 0:
                                tile_start[p, t + 1] += 1
                            else:
                                tile_items[p, tile_start[p, t] + tile_fill[p, t]] = i
                                tile_fill[p, t] += 1
    for p, ix in ti.ndrange(P, size):  # rows with a serial inner loop: cheaper indexing than 3-d ranges
        for iy in range(size):
            q = ti.Vector([ix / (size - 1), iy / (size - 1)])
            t = (ix // TILE) * nt + iy // TILE
            col = ti.Vector([1.0, 1.0, 1.0])
            for k in range(tile_start[p, t], tile_start[p, t + 1]):
                a, b, c = _boid_triangle(x, v, p, tile_items[p, k])
                col *= 1.0 - _boid_mask(a, b, c, q)
            a, b, c = _boid_triangle(x, v, p, 0)
            mask = _boid_mask(a, b, c, q)
            col = mask * ti.Vector([1.0, 0.0, 0.0]) + (1.0 - mask) * col
            for ch in ti.static(range(3)):
                img[p, ix, iy, ch] = col[ch]


# --- particles ---------------------------------------------------------------------------------

PALETTE = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (1.0, 1.0, 0.0), (1.0, 0.0, 1.0), (0.0, 1.0, 1.0))
EDGE_SHARPNESS = 20.0 / 0.01
EDGE_CUTOFF = 0.01  # coverage 1 − σ(2000·d) < 3e-9 beyond this distance outside the disc


@ti.kernel
def particles(x: ti.types.ndarray(ndim=3), c: ti.types.ndarray(ndim=2), img: ti.types.ndarray(ndim=4),
              radius: ti.f32, tile_start: ti.types.ndarray(ndim=2), tile_fill: ti.types.ndarray(ndim=2),
              tile_x: ti.types.ndarray(ndim=2), tile_y: ti.types.ndarray(ndim=2), tile_c: ti.types.ndarray(ndim=2)):
    """Black canvas, discs of coverage 1 − σ(2000·(d − radius)) composited in reverse index order.

    Tile lists hold copies of the particles' positions and colours (not indices), so the per-pixel
    loop reads contiguous memory.
    """
    P, N, size = x.shape[0], x.shape[1], img.shape[1]
    nt = (size + TILE - 1) // TILE
    reach = radius + EDGE_CUTOFF
    palette = ti.Matrix(PALETTE)
    for p, t in ti.ndrange(P, nt * nt + 1):
        tile_start[p, t] = 0
    for p, i in ti.ndrange(P, N):
        tx0, tx1 = _tile_range(x[p, i, 0] - reach, x[p, i, 0] + reach, size)
        ty0, ty1 = _tile_range(x[p, i, 1] - reach, x[p, i, 1] + reach, size)
        for tx in range(tx0, tx1 + 1):
            for ty in range(ty0, ty1 + 1):
                ti.atomic_add(tile_start[p, tx * nt + ty + 1], 1)
    for q in range(P * CPU_CHUNK):
        if q % CPU_CHUNK == 0:
            p = q // CPU_CHUNK
            for t in range(nt * nt):
                tile_start[p, t + 1] += tile_start[p, t]
                tile_fill[p, t] = 0
            for j in range(N):  # serial, last particle first: the drawing order of the reference
                i = N - 1 - j
                tx0, tx1 = _tile_range(x[p, i, 0] - reach, x[p, i, 0] + reach, size)
                ty0, ty1 = _tile_range(x[p, i, 1] - reach, x[p, i, 1] + reach, size)
                for tx in range(tx0, tx1 + 1):
                    for ty in range(ty0, ty1 + 1):
                        t = tx * nt + ty
                        slot = tile_start[p, t] + tile_fill[p, t]
                        tile_x[p, slot], tile_y[p, slot], tile_c[p, slot] = x[p, i, 0], x[p, i, 1], c[p, i]
                        tile_fill[p, t] += 1
    for p, ix in ti.ndrange(P, size):
        for iy in range(size):
            qx, qy = ix / (size - 1), iy / (size - 1)
            t = (ix // TILE) * nt + iy // TILE
            col = ti.Vector([0.0, 0.0, 0.0])
            for k in range(tile_start[p, t], tile_start[p, t + 1]):
                dx, dy = tile_x[p, k] - qx, tile_y[p, k] - qy
                dd = dx * dx + dy * dy
                if dd < reach * reach:
                    cov = 1.0 - _sigmoid(EDGE_SHARPNESS * (ti.sqrt(dd) - radius))
                    ci = tile_c[p, k]
                    colour = ti.Vector([palette[ci, 0], palette[ci, 1], palette[ci, 2]])
                    col = cov * colour + (1.0 - cov) * col
            for ch in ti.static(range(3)):
                img[p, ix, iy, ch] = col[ch]


# --- Lenia -------------------------------------------------------------------------------------

@ti.kernel
def upscale_nearest(world: ti.types.ndarray(ndim=4), img: ti.types.ndarray(ndim=4), y0: ti.i32, x0: ti.i32,
                    crop: ti.i32):
    """img[p, i, j] = world[p, y0 + ⌊(i + ½)·crop/size⌋, x0 + ⌊(j + ½)·crop/size⌋] (half-pixel centres)."""
    P, size, C = img.shape[0], img.shape[1], img.shape[3]
    for p, i, j in ti.ndrange(P, size, size):
        sy = y0 + ti.min(int((i + 0.5) * crop / size), crop - 1)
        sx = x0 + ti.min(int((j + 0.5) * crop / size), crop - 1)
        for ch in range(C):
            img[p, i, j, ch] = world[p, sy, sx, ch]
