"""Plain NumPy versions of the substrates and renderers, written from the project's ASAL spec.

Slow and obvious on purpose: the tests (and `workbench bench gpu` on a GPU) compare the Taichi and Triton
kernels against these. `golden()` loads one step of each substrate computed by the ASAL reference
implementation.
"""

from __future__ import annotations

from importlib import resources

import numpy as np


def golden() -> dict[str, np.ndarray]:
    """The reference implementation's one-step data (keys prefixed lenia_, boids_, plife_)."""
    with resources.files("workbench.data").joinpath("asal_step1_reference.npz").open("rb") as f:
        return dict(np.load(f))


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


# --- Lenia -------------------------------------------------------------------------------------

def lenia_step(world, shift, total_shift, m, s, h, fK, c0, c1, R, T):
    """One reference step on one simulation: returns (world', shift', total_shift')."""
    H, W, C = world.shape
    A = np.roll(world, (-shift[0], -shift[1]), axis=(0, 1)).astype(np.float64)
    fA = np.fft.fft2(A, axes=(0, 1))
    G = np.zeros_like(A)
    for k in range(len(m)):
        U = np.real(np.fft.ifft2(fK[k] * fA[:, :, c0[k]]))
        G[:, :, c1[k]] += h[k] * (2 * np.exp(-((U - m[k]) ** 2) / (2 * s[k] ** 2)) - 1)
    A1 = np.clip(A + G / T, 0, 1)
    new_shift = lenia_shift(A, A1, R)
    return A1.astype(np.float32), new_shift, total_shift + new_shift


def lenia_shift(before, after, R):
    """The recentring shift of a step from world `before` (rolled) to `after`: trunc(centre·R) toward zero, centre
    = Σ_{y,x} (Σ_c after)·X / m00 with X = ((y − mid)/R, (x − mid)/R) and m00 the mass BEFORE the update (the
    reference's quirk)."""
    H, W = after.shape[:2]
    yy, xx = np.mgrid[0:H, 0:W]
    X = np.stack([(yy - H // 2) / R, (xx - W // 2) / R], -1)
    m00 = np.asarray(before, np.float64).sum()
    centre = (np.asarray(after, np.float64).sum(-1)[..., None] * X).sum((0, 1)) / m00
    return np.trunc(centre * R).astype(int)


def lenia_off_centre(gold: dict[str, np.ndarray], off: tuple[int, int] = (-40, 40), R: int = 12):
    """The golden Lenia step from its state rolled by `off` (y, x): (world before, world after, shift). The step is
    translation-equivariant on the torus, so the world after is the golden one rolled alike; the shift is the
    spec's recentring of it, trunc(centre·R) with m00 the mass before the update (the reference's quirk). Off the
    centre the variants differ: at (−40, 40) centre·R = (−38.35, 37.59), the shift (−38, 37), where floor gives
    (−39, 37) and the mass after the update (−39, 38); at the golden state the mass after gave the same shift."""
    before = np.roll(gold["lenia_A0"], off, (0, 1))
    after = np.roll(gold["lenia_A1"], off, (0, 1))
    return before, after, lenia_shift(before, after, R)


def lenia_fK(kernels_K):
    return np.fft.fft2(np.fft.ifftshift(kernels_K, axes=(-2, -1)), axes=(-2, -1))


def lenia_states(params, steps: int, pattern="5N7KKM", grid: int = 128):
    """(world, shift, total_shift) of one simulation after init (which performs one step) and after each of
    `steps` further steps: steps + 1 states, from decoded parameters (m, s, h, cells)."""
    from workbench.simulations.lenia import kernel_fields, load_pattern

    pat = load_pattern(pattern)
    fK = lenia_fK(kernel_fields(pat, grid))
    c0, c1 = [k["c0"] for k in pat["kernels"]], [k["c1"] for k in pat["kernels"]]
    cells = np.asarray(params["cells"])
    world = np.zeros((grid, grid, cells.shape[-1]), np.float32)
    o = (grid - cells.shape[0]) // 2
    world[o:o + cells.shape[0], o:o + cells.shape[1]] = cells
    shift, total = np.zeros(2, int), np.zeros(2, int)
    for _ in range(steps + 1):
        world, shift, total = lenia_step(world, shift, total, params["m"], params["s"], params["h"], fK, c0, c1,
                                         pat["R"], pat["T"])
        yield world, shift, total


# --- Boids -------------------------------------------------------------------------------------

def boids_step(x, v, p, k=16, visual_range=0.1, speed=0.5, dt=0.01):
    x = x.astype(np.float64)
    v = v.astype(np.float64)
    N = len(x)
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    d[np.arange(N), np.arange(N)] = np.inf
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    v_new = np.empty_like(v)
    for i in range(N):
        u, w = v[i]
        rot = np.array([[u, w], [-w, u]])
        nb = idx[i]
        mask = d[i, nb] < visual_range
        pos = (x[nb] - x[i]) @ rot.T
        vel = v[nb] @ rot.T
        inp = np.concatenate([50 * pos, vel], axis=1)
        hdn = np.tanh(np.tanh(inp @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"])
        o = 0.0
        if mask.any():
            pooled = (hdn * mask[:, None]).sum(0) / mask.sum()
            o = np.tanh(np.tanh(pooled @ p["W3"] + p["b3"]) @ p["W4"] + p["b4"])[0]
        nv = v[i] + dt * 60 * o * np.array([-w, u])
        v_new[i] = nv / np.linalg.norm(nv)
    x_new = np.mod(x + speed * dt * v_new, 1.0)
    return x_new.astype(np.float32), v_new.astype(np.float32)


def render_boids(x, v, size=224, s=0.015):
    lin = np.linspace(0, 1, size)
    q = np.stack(np.meshgrid(lin, lin, indexing="ij"), -1)  # q[i, j] = (x_i, y_j)
    img = np.ones((size, size, 3))

    def mask_of(i):
        u, w = v[i]
        fwd, left = np.array([u, w]), np.array([-w, u])
        a, b, c = x[i] + left * s, x[i] - left * s, x[i] + 3 * s * fwd
        v0, v1, v2 = b - a, c - a, q - a
        den = v0[0] * v1[1] - v1[0] * v0[1]
        l2 = (v2[..., 0] * v1[1] - v1[0] * v2[..., 1]) / den
        l3 = (v0[0] * v2[..., 1] - v2[..., 0] * v0[1]) / den
        l1 = 1 - l2 - l3
        return (sigmoid(40 * l1) * sigmoid(40 * l2) * sigmoid(40 * l3))[..., None]

    for i in range(len(x)):
        mk = mask_of(i)
        img = mk * 0.0 + (1 - mk) * img
    mk = mask_of(0)
    img = mk * np.array([1.0, 0, 0]) + (1 - mk) * img
    return img.astype(np.float32)


# --- Particle Life -----------------------------------------------------------------------------

def plife_step(x, v, c, alpha, beta, dt=0.002, mass=0.1, half_life=0.04, r_max=0.1):
    x = x.astype(np.float64)
    v = v.astype(np.float64)
    d = x[None, :] - x[:, None]  # d[i, j] = x_j - x_i
    d = d - np.round(d)
    r = np.linalg.norm(d, axis=-1)
    rr = r / r_max
    a = alpha[c[:, None], c[None, :]]
    b = beta[c][:, None]
    F = np.where(rr < b, rr / b - 1, np.where((b < rr) & (rr < 1), a * (1 - np.abs(2 * rr - 1 - b) / (1 - b)), 0.0))
    acc = (r_max * F / (r + 1e-8))[..., None] * d
    acc = acc.sum(1) / mass
    v = 2 ** (-dt / half_life) * v + dt * acc
    x = np.mod(x + dt * v, 1.0)
    return x.astype(np.float32), v.astype(np.float32)


PALETTE = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]], dtype=np.float64)


RADIUS = np.sqrt(0.1) * 0.01


def render_particles(x, c, size=224, radius=RADIUS):
    lin = np.linspace(0, 1, size)
    qx, qy = np.meshgrid(lin, lin, indexing="ij")
    img = np.zeros((size, size, 3))
    for i in reversed(range(len(x))):
        dist = np.sqrt((qx - x[i, 0]) ** 2 + (qy - x[i, 1]) ** 2)
        cov = (1 - sigmoid(2000 * (dist - radius)))[..., None]
        img = cov * PALETTE[c[i]] + (1 - cov) * img
    return img.astype(np.float32)


def psnr(a, b):
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return np.inf if mse == 0 else 10 * np.log10(1.0 / mse)
