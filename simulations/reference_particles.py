"""Plain NumPy versions of Particle Lenia and Particle Life+ (asal-more.md §4, §5), written from the spec.

Slow and obvious on purpose (float64, all pairs): the tests compare the Taichi kernels against these.
Every function works on one simulation.
"""

from __future__ import annotations

import numpy as np

# --- Particle Lenia ----------------------------------------------------------------------------

PLENIA_BASE = {"mu_k": 4.0, "sigma_k": 1.0, "w_k": 0.022, "mu_g": 0.6, "sigma_g": 0.15, "c_rep": 1.0}


def plenia_decode(theta) -> dict[str, float]:
    """θ (6,) -> the six scalars (base · exp(θ))."""
    theta = np.asarray(theta, np.float64)
    return {k: b * float(np.exp(t)) for (k, b), t in zip(PLENIA_BASE.items(), theta, strict=True)}


def plenia_fields(points, x, params):
    """U, G and R at `points` (M, 2) from the particles x (N, 2), all particles counted."""
    d2 = ((np.asarray(points, np.float64)[:, None] - np.asarray(x, np.float64)[None]) ** 2).sum(-1)
    r = np.sqrt(np.maximum(d2, 1e-10))
    U = params["w_k"] * np.exp(-(((r - params["mu_k"]) / params["sigma_k"]) ** 2)).sum(-1)
    G = np.exp(-(((U - params["mu_g"]) / params["sigma_g"]) ** 2))
    R = params["c_rep"] / 2 * (np.maximum(1 - r, 0) ** 2).sum(-1)
    return U, G, R


def plenia_step(x, params, dt: float = 0.1):
    """One explicit Euler step x ← x − dt·∇E(x_i), the other particles fixed."""
    x = np.asarray(x, np.float64)
    mu, sig, w = params["mu_k"], params["sigma_k"], params["w_k"]
    d = x[:, None] - x[None]  # x_i − x_j
    d2 = (d ** 2).sum(-1)
    r = np.sqrt(np.maximum(d2, 1e-10))
    live = d2 > 1e-10  # the clip kills the gradient of the self term (and of exact coincidences)
    u = np.where(live[..., None], d / r[..., None], 0.0)
    K = np.exp(-(((r - mu) / sig) ** 2))
    U = w * K.sum(1)  # quirk: the self term counts in U
    grad_U = w * ((K * (-2 * (r - mu) / sig ** 2))[..., None] * u).sum(1)
    grad_R = -params["c_rep"] * (np.maximum(1 - r, 0)[..., None] * u).sum(1)
    G = np.exp(-(((U - params["mu_g"]) / params["sigma_g"]) ** 2))
    dG = -2 * (U - params["mu_g"]) / params["sigma_g"] ** 2 * G
    grad_E = grad_R - dG[:, None] * grad_U
    return x - dt * grad_E


def plenia_render(x, params, size: int = 224):
    """The U/G panel of the reference's render: (size, size, 3) in [0, 1]."""
    x = np.asarray(x, np.float64)
    e = 1.2 * np.abs(x).max()
    ell = np.linspace(-1, 1, size)
    pts = e * np.stack(np.meshgrid(ell, ell, indexing="xy"), -1).reshape(-1, 2)  # (row a, col b) -> (ℓ_b, ℓ_a)
    U, G, _ = plenia_fields(pts, x, params)
    dmin = ((pts[:, None] - x[None]) ** 2).sum(-1).min(1)
    m = np.clip(dmin / 0.02, 0, 1)[:, None]
    U, G = U[:, None], G[:, None]
    c1 = np.array([0.1, 0.1, 0.3]) * (1 - U) + np.array([0.2, 0.7, 1.0]) * U
    rgb = m * (c1 * (1 - G) + np.array([1.17, 0.91, 0.13]) * G)
    rgb = (rgb - rgb.min()) / (rgb.max() - rgb.min())
    return rgb.reshape(size, size, 3)


# --- Particle Life+ ----------------------------------------------------------------------------

PLIFE_PLUS_LAYERS = ((12, 8), (8, 8), (8, 8), (8, 7))


def plife_plus_decode(theta) -> dict[str, np.ndarray]:
    """θ (311,) -> W0..W3 (in × out), b0..b3: per layer bias first, then the kernel row-major."""
    theta = np.asarray(theta, np.float64)
    out, at = {}, 0
    for i, (n_in, n_out) in enumerate(PLIFE_PLUS_LAYERS):
        out[f"b{i}"] = theta[at:at + n_out]
        at += n_out
        out[f"W{i}"] = theta[at:at + n_in * n_out].reshape(n_in, n_out)
        at += n_in * n_out
    assert at == theta.size
    return out


def force(r, alpha, beta):
    """F(r; α, β) of Particle Life."""
    return np.where(r < beta, r / beta - 1,
                    np.where((beta < r) & (r < 1), alpha * (1 - np.abs(2 * r - 1 - beta) / (1 - beta)), 0.0))


def plife_plus_pair(ci, cj, params):
    """(α_ij, δ_ij) of the pair MLP for colour rows ci, cj (..., 6)."""
    h = np.concatenate([ci, cj], -1)
    for i in range(3):
        h = np.tanh(h @ params[f"W{i}"] + params[f"b{i}"])
    o = h @ params["W3"] + params["b3"]
    return 1.5 * np.tanh(o[..., 0]), np.tanh(o[..., 1:])


def plife_plus_step(x, v, c, params, dt: float = 0.02, beta: float = 0.3, mass: float = 0.1,
                    half_life: float = 0.04, r_max: float = 0.1):
    """One step over all ordered pairs, the self pair included: returns (x', v', c')."""
    x, v, c = (np.asarray(a, np.float64) for a in (x, v, c))
    N = len(x)
    d = x[None] - x[:, None]  # d_ij = x_j − x_i
    d = np.where(d > 0.5, d - 1, np.where(d < -0.5, d + 1, d))
    rho = np.sqrt((d ** 2).sum(-1))
    alpha, delta = plife_plus_pair(np.broadcast_to(c[:, None], (N, N, 6)), np.broadcast_to(c[None], (N, N, 6)),
                                   params)
    f = d / (rho + 1e-8)[..., None] * (r_max * force(rho / r_max, alpha, beta))[..., None]
    a = f.sum(1) / mass
    dc = (delta * np.maximum(1 - rho / r_max, 0)[..., None]).sum(1)
    v = 2.0 ** (-dt / half_life) * v + dt * a
    x = np.mod(x + dt * v, 1.0)
    c = c + dt * dc
    c = c / np.linalg.norm(c, axis=-1, keepdims=True)
    return x, v, c


def plife_plus_render(x, c, size: int = 224, mass: float = 0.1):
    """Black canvas; discs of coverage 1 − σ(750·(dist − √m·0.04)) in index order (the last on top)."""
    x, c = np.asarray(x, np.float64), np.asarray(c, np.float64)
    lin = np.linspace(0, 1, size)
    gx, gy = np.meshgrid(lin, lin, indexing="ij")  # image axis 0 is x
    img = np.zeros((size, size, 3))
    radius = np.sqrt(mass) * 0.04
    for i in range(len(x)):
        dist = np.sqrt((gx - x[i, 0]) ** 2 + (gy - x[i, 1]) ** 2)
        cov = (1 - 1 / (1 + np.exp(-(30 / 0.04) * (dist - radius))))[..., None]
        img = cov * (c[i, :3] + 1) / 2 + (1 - cov) * img
    return img
