"""Renderers: banded splatting for boids and particles (the grid substrates render by torch gathers:
kernels/torch_ca.py and simulations/lenia.py).

The reference draws one object at a time over the whole canvas (0.7 s a frame for 5000 particles).
Here the image is cut into bands of rows, one thread each; a thread walks all objects in the
reference's drawing order and paints only the pixels of each footprint inside its band. Compositing
is exactly the reference's, nothing is binned, and a band (a few KB) stays in cache. Footprints are
cut where an object's weight drops below ~1e-8.

Image axis 0 is x and axis 1 is y, sample points linspace(0, 1, size) (the reference's layout).
"""

import taichi as ti

from workbench.kernels.runtime import kernel


@ti.func
def _sigmoid(z):
    return 1.0 / (1.0 + ti.exp(-z))


@ti.func
def _band(img: ti.template(), k, bands, background):
    """Band k of the banded renderers: its image p and rows ix0..ix1, cleared to the background."""
    size = img.shape[1]
    per_band = (size + bands - 1) // bands
    p, band = k // bands, k % bands
    ix0, ix1 = band * per_band, ti.min((band + 1) * per_band, size) - 1
    for ix in range(ix0, ix1 + 1):
        for iy in range(size):
            for ch in ti.static(range(3)):
                img[p, ix, iy, ch] = background
    return p, ix0, ix1


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


@ti.func
def _pixel_range(lo, hi, first, last, size):
    """Pixels first..last (clipped) whose sample points k/(size − 1) may lie in [lo, hi]."""
    return ti.max(int(ti.floor(lo * (size - 1))), first), ti.min(int(ti.ceil(hi * (size - 1))), last)


@ti.func
def _paint_boid(x: ti.template(), v: ti.template(), img: ti.template(), p, i, ix0, ix1, colour):
    """img ← mask·colour + (1 − mask)·img over the part of boid i's footprint in rows ix0..ix1."""
    size = img.shape[1]
    a, b, c = _boid_triangle(x, v, p, i)
    xa, xb = _pixel_range(ti.min(a[0], b[0], c[0]) - BOID_MARGIN, ti.max(a[0], b[0], c[0]) + BOID_MARGIN,
                          ix0, ix1, size)
    ya, yb = _pixel_range(ti.min(a[1], b[1], c[1]) - BOID_MARGIN, ti.max(a[1], b[1], c[1]) + BOID_MARGIN,
                          0, size - 1, size)
    for ix in range(xa, xb + 1):
        for iy in range(ya, yb + 1):
            mask = _boid_mask(a, b, c, ti.Vector([ix / (size - 1), iy / (size - 1)]))
            for ch in ti.static(range(3)):
                img[p, ix, iy, ch] = mask * colour[ch] + (1.0 - mask) * img[p, ix, iy, ch]


@kernel
def boids(x: ti.types.ndarray(ndim=3), v: ti.types.ndarray(ndim=3), img: ti.types.ndarray(ndim=4),
          bands: ti.i32, band_stride: ti.i32):
    """White canvas, black boids composited in order, boid 0 drawn again in red on top.

    Painted band by band like `particles` (one thread per band of rows, boids in drawing order).
    """
    P, N = x.shape[0], x.shape[1]
    for q in range(P * bands * band_stride):
        if q % band_stride != 0:
            continue
        p, ix0, ix1 = _band(img, q // band_stride, bands, 1.0)
        for i in range(N):
            _paint_boid(x, v, img, p, i, ix0, ix1, ti.Vector([0.0, 0.0, 0.0]))
        _paint_boid(x, v, img, p, 0, ix0, ix1, ti.Vector([1.0, 0.0, 0.0]))


# --- particles ---------------------------------------------------------------------------------

PALETTE = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (1.0, 1.0, 0.0), (1.0, 0.0, 1.0), (0.0, 1.0, 1.0))
EDGE_SHARPNESS = 20.0 / 0.01
EDGE_CUTOFF = 0.01  # coverage 1 − σ(2000·d) < 3e-9 beyond this distance outside the disc


@kernel
def particles(x: ti.types.ndarray(ndim=3), c: ti.types.ndarray(ndim=2), img: ti.types.ndarray(ndim=4),
              radius: ti.f32, bands: ti.i32, band_stride: ti.i32):
    """Black canvas, discs of coverage 1 − σ(2000·(d − radius)) composited in reverse index order.

    The image is cut into `bands` bands of rows (axis 0), one thread each; a thread walks all particles
    in drawing order and paints the part of each disc inside its band. Drawing order is kept without
    any binning, and the band (a few KB) stays in cache. `band_stride` spaces the bands' loop indices
    (CPU_CHUNK on the CPU, so each band is its own chunk; 1 on GPUs, with one band per row).
    """
    P, N, size = x.shape[0], x.shape[1], img.shape[1]
    reach = radius + EDGE_CUTOFF
    palette = ti.Matrix(PALETTE)
    for q in range(P * bands * band_stride):
        if q % band_stride != 0:
            continue
        p, ix0, ix1 = _band(img, q // band_stride, bands, 0.0)
        for j in range(N):  # last particle first: the drawing order of the reference
            i = N - 1 - j
            px, py = x[p, i, 0], x[p, i, 1]
            a = ti.max(int(ti.floor((px - reach) * (size - 1))), ix0)
            b = ti.min(int(ti.ceil((px + reach) * (size - 1))), ix1)
            if a <= b:
                ya = ti.max(int(ti.floor((py - reach) * (size - 1))), 0)
                yb = ti.min(int(ti.ceil((py + reach) * (size - 1))), size - 1)
                ci = c[p, i]
                colour = ti.Vector([palette[ci, 0], palette[ci, 1], palette[ci, 2]])
                for ix in range(a, b + 1):
                    for iy in range(ya, yb + 1):
                        dx, dy = px - ix / (size - 1), py - iy / (size - 1)
                        dd = dx * dx + dy * dy
                        if dd < reach * reach:
                            cov = 1.0 - _sigmoid(EDGE_SHARPNESS * (ti.sqrt(dd) - radius))
                            for ch in ti.static(range(3)):
                                img[p, ix, iy, ch] = cov * colour[ch] + (1.0 - cov) * img[p, ix, iy, ch]
