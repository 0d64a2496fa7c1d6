"""Particle Lenia: the energy-gradient step and the U/G render, in Taichi (asal-more.md §4).

All pairs (N = 200): one thread per particle sums over every other particle in a fixed order, so the same
state gives the same step bit for bit. The render evaluates U and G at every pixel against all particles.
Parameters come as one (P, 6) array: μ_K, σ_K, w_K, μ_G, σ_G, c_rep.
"""

import taichi as ti

from workbench.kernels.runtime import CPU_CHUNK, kernel

LOG2E = 1.4426950408889634


@ti.func
def exp2_fast(y):
    """2^y in float32 to ~2e-7 relative, branch-free, so loops around it vectorise (ti.exp calls libm per
    element). 2^⌊y⌋ is built in the exponent bits; 2^frac by a degree-6 polynomial; y below −126 gives 2^−126."""
    y = ti.max(y, -126.0)
    n = ti.floor(y)
    f = y - n
    p = 2.16834313e-04
    p = p * f + 1.24379464e-03
    p = p * f + 9.67998526e-03
    p = p * f + 5.54821503e-02
    p = p * f + 2.40230308e-01
    p = p * f + 6.93146914e-01
    p = p * f + 1.0
    return p * ti.bit_cast((ti.cast(n, ti.i32) + 127) << 23, ti.f32)


@ti.func
def exp_fast(x):
    return exp2_fast(x * LOG2E)


@kernel
def step(x: ti.types.ndarray(ndim=3), xt: ti.types.ndarray(ndim=3), out: ti.types.ndarray(ndim=3),
         prm: ti.types.ndarray(ndim=2), dt: ti.f32):
    """out = x − dt·∇E at each particle (x left as it was). xt: x as (P, 2, N), contiguous per coordinate, so the
    inner loop over particles reads memory in order and vectorises."""
    P, N = x.shape[0], x.shape[1]
    for p, i in ti.ndrange(P, N):
        mu, inv_s, w = prm[p, 0], 1.0 / prm[p, 1], prm[p, 2]
        mu_g, inv_sg, c_rep = prm[p, 3], 1.0 / prm[p, 4], prm[p, 5]
        xi0, xi1 = x[p, i, 0], x[p, i, 1]
        U, gu0, gu1, gr0, gr1 = 0.0, 0.0, 0.0, 0.0, 0.0
        for j in range(N):
            d0, d1 = xi0 - xt[p, 0, j], xi1 - xt[p, 1, j]
            d2 = d0 * d0 + d1 * d1
            r = ti.sqrt(ti.max(d2, 1e-10))
            z = (r - mu) * inv_s
            K = exp_fast(-z * z)
            U += K  # quirk kept: the particle's own term counts in U ...
            # ... but not in the gradients: the clip at 1e-10 has zero gradient (the self pair, coincidences)
            inv_r = ti.select(d2 > 1e-10, 1.0 / r, 0.0)
            a = K * z * inv_r  # ∇U term / (−2 w/σ)
            b = ti.max(1.0 - r, 0.0) * inv_r
            gu0 += a * d0
            gu1 += a * d1
            gr0 += b * d0
            gr1 += b * d1
        U *= w
        zg = (U - mu_g) * inv_sg
        dG = -2.0 * zg * inv_sg * exp_fast(-zg * zg)
        cu = -2.0 * w * inv_s  # ∇U = cu·Σ K·z·u
        # ∇E = ∇R − G′(U)·∇U with ∇R = −c_rep·Σ max(1 − r, 0)·u
        e0 = -c_rep * gr0 - dG * cu * gu0
        e1 = -c_rep * gr1 - dG * cu * gu1
        out[p, i, 0] = xi0 - dt * e0
        out[p, i, 1] = xi1 - dt * e1


@kernel
def render(xt: ti.types.ndarray(ndim=3), prm: ti.types.ndarray(ndim=2), extent: ti.types.ndarray(ndim=1),
           img: ti.types.ndarray(ndim=4), rows: ti.types.ndarray(ndim=3)):
    """The U/G panel, min–max normalised per image: pixel (a, b) at e·(ℓ_b, ℓ_a), ℓ = linspace(−1, 1, size).

    rows: scratch (P, size, 2) for each row's min and max.
    """
    P, N, size = xt.shape[0], xt.shape[2], img.shape[1]
    for p, a, b in ti.ndrange(P, size, size):
        mu, inv_s, w = prm[p, 0], 1.0 / prm[p, 1], prm[p, 2]
        mu_g, inv_sg = prm[p, 3], 1.0 / prm[p, 4]
        e = extent[p]
        q0 = e * (-1.0 + 2.0 * b / (size - 1))
        q1 = e * (-1.0 + 2.0 * a / (size - 1))
        # the nearest distance is kept as the bits of d² ≥ 0, whose integer order is the float order: an integer
        # min vectorises, a float min does not here
        U, dmin = 0.0, 2147483647
        for j in range(N):
            d0, d1 = q0 - xt[p, 0, j], q1 - xt[p, 1, j]
            d2 = d0 * d0 + d1 * d1
            z = (ti.sqrt(ti.max(d2, 1e-10)) - mu) * inv_s
            U += exp_fast(-z * z)
            dmin = ti.min(dmin, ti.bit_cast(d2, ti.i32))
        U *= w
        zg = (U - mu_g) * inv_sg
        G = exp_fast(-zg * zg)
        m = ti.min(ti.max(ti.bit_cast(dmin, ti.f32) / 0.02, 0.0), 1.0)
        c1 = ti.Vector([0.1, 0.1, 0.3]) * (1.0 - U) + ti.Vector([0.2, 0.7, 1.0]) * U
        rgb = m * (c1 * (1.0 - G) + ti.Vector([1.17, 0.91, 0.13]) * G)
        for ch in ti.static(range(3)):
            img[p, a, b, ch] = rgb[ch]
    for p, a in ti.ndrange(P, size):
        lo, hi = img[p, a, 0, 0], img[p, a, 0, 0]
        for b in range(size):
            for ch in ti.static(range(3)):
                lo = ti.min(lo, img[p, a, b, ch])
                hi = ti.max(hi, img[p, a, b, ch])
        rows[p, a, 0], rows[p, a, 1] = lo, hi
    for q in range(P * CPU_CHUNK):
        if q % CPU_CHUNK == 0:
            p = q // CPU_CHUNK
            lo, hi = rows[p, 0, 0], rows[p, 0, 1]
            for a in range(size):
                lo = ti.min(lo, rows[p, a, 0])
                hi = ti.max(hi, rows[p, a, 1])
            rows[p, 0, 0], rows[p, 0, 1] = lo, 1.0 / (hi - lo)
    for p, a, b in ti.ndrange(P, size, size):
        for ch in ti.static(range(3)):
            img[p, a, b, ch] = (img[p, a, b, ch] - rows[p, 0, 0]) * rows[p, 0, 1]
