"""Plain NumPy Flow-Lenia (asal-more.md §6, CAX's FlowLenia in its 5N7KKM example), written from the spec.

Slow and obvious on purpose (float64, one shifted copy of the grid per window offset): the tests compare the
kernels against these. Kernels and genotype are ASAL Lenia's (workbench.simulations.lenia / reference).
"""

from __future__ import annotations

import numpy as np

from workbench.simulations.reference import lenia_fK


def flow_constants(pattern="5N7KKM", grid: int = 128):
    """(fK, c0, c1, R) of the pattern: kernel spectra (K, grid, grid) and source/target channels."""
    from workbench.simulations.lenia import kernel_fields, load_pattern

    pat = load_pattern(pattern)
    return (lenia_fK(kernel_fields(pat, grid)), [k["c0"] for k in pat["kernels"]], [k["c1"] for k in pat["kernels"]],
            pat["R"])


def flow_world(cells, grid: int = 128):
    """Zeros (grid, grid, C) with the cells in the centre (rows/cols 48..80 for 32 cells in 128)."""
    cells = np.asarray(cells, np.float64)
    world = np.zeros((grid, grid, cells.shape[-1]))
    o = (grid - cells.shape[0]) // 2
    world[o:o + cells.shape[0], o:o + cells.shape[1]] = cells
    return world


def sobel(a):
    """(∂_y a, ∂_x a) with weights (1, 2, 1), no 1/8, zero outside the grid. a: (H, W, C)."""
    p = np.pad(a, ((1, 1), (1, 1), (0, 0)))
    H, W = a.shape[:2]
    sh = lambda dy, dx: p[1 + dy:1 + dy + H, 1 + dx:1 + dx + W]  # noqa: E731 - a[y + dy, x + dx]
    w = (1.0, 2.0, 1.0)
    gy = sum(w[k + 1] * (sh(1, k) - sh(-1, k)) for k in (-1, 0, 1))
    gx = sum(w[k + 1] * (sh(k, 1) - sh(k, -1)) for k in (-1, 0, 1))
    return gy, gx


def flow_step(A, m, s, h, fK, c0, c1, dt: float = 0.1, theta_A: float = 1.0, n: float = 2.0, dd: int = 5,
              sigma: float = 0.65):
    """One Flow-Lenia step of the world A (H, W, C); mass is conserved."""
    A = np.asarray(A, np.float64)
    H, W, C = A.shape
    fA = np.fft.fft2(A, axes=(0, 1))
    Ubar = np.zeros_like(A)
    for k in range(len(m)):
        U = np.real(np.fft.ifft2(fK[k] * fA[:, :, c0[k]]))
        Ubar[:, :, c1[k]] += h[k] * (2 * np.exp(-((U - m[k]) ** 2) / (2 * s[k] ** 2)) - 1)
    gUy, gUx = sobel(Ubar)
    gAy, gAx = sobel(A.sum(-1, keepdims=True))
    alpha = np.clip((A / theta_A) ** n, 0, 1)
    Fy = gUy * (1 - alpha) - gAy * alpha
    Fx = gUx * (1 - alpha) - gAx * alpha
    lim = dd - sigma
    ty, tx = np.clip(dt * Fy, -lim, lim), np.clip(dt * Fx, -lim, lim)  # μ − cell centre, per source cell
    out = np.zeros_like(A)
    cap = min(1.0, 2 * sigma)
    for oy in range(-dd, dd + 1):  # source q = p + (oy, ox)
        for ox in range(-dd, dd + 1):
            roll = lambda a: np.roll(a, (-oy, -ox), axis=(0, 1))  # noqa: B023,E731 - a[p + (oy, ox)]
            # p − μ(q) = −(oy + ty(q)): the toroidal distance, since |oy + ty| < grid / 2
            wy = np.clip(0.5 + sigma - np.abs(oy + roll(ty)), 0, cap)
            wx = np.clip(0.5 + sigma - np.abs(ox + roll(tx)), 0, cap)
            out += roll(A) * wy * wx / (4 * sigma ** 2)
    return out


def flow_render(A, size: int = 224):
    """clip(A, 0, 1) as RGB, nearest resize to size × size (half-pixel centres)."""
    A = np.asarray(A)
    g = A.shape[0]
    src = np.minimum(((np.arange(size) + 0.5) * g / size).astype(int), g - 1)
    return np.clip(A, 0, 1)[src][:, src]
