"""Particle Life+ (ASAL `plife_plus`): particles with unit colour vectors whose pair MLP sets attraction and
colour change (asal-more.md §5)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from workbench.kernels.runtime import ensure_taichi, row_bands
from workbench.simulations.base import Deterministic, Substrate, check_positive
from workbench.simulations.nca import flax_init

COLOUR_DIMS = 6
LAYERS = ((2 * COLOUR_DIMS, 8), (8, 8), (8, 8), (8, 1 + COLOUR_DIMS))  # (in, out) of W0..W3


class ParticleLifePlus(Deterministic, Substrate):
    """Particle Life+. θ ∈ ℝ^311 = the pair MLP [b0, W0, b1, W1, b2, W2, b3, W3] (bias first, kernels in × out,
    row-major); state "x" (N, 2) in [0, 1), "v" (N, 2), "c" (N, 6) unit colour vectors."""

    name = "plife_plus"
    n_params = sum(i * o + o for i, o in LAYERS)

    def __init__(self, N: int = 1000, dt: float = 0.02, beta: float = 0.3, mass: float = 0.1,
                 half_life: float = 0.04, r_max: float = 0.1, device: str | torch.device | None = None,
                 engine: str | None = None):
        super().__init__(device, engine)
        self.N = check_positive("N", N)
        for key, val in (("dt", dt), ("mass", mass), ("half_life", half_life), ("r_max", r_max)):
            if not (math.isfinite(val) and val > 0):
                raise ValueError(f"{key} must be a positive number, got {val!r}")
        if not 0 < beta < 1:
            raise ValueError(f"beta must lie in (0, 1), got {beta!r}")
        if r_max > 0.5:
            raise ValueError(f"r_max must be at most 0.5 (half the torus), got {r_max}")
        self.dt, self.beta, self.mass = float(dt), float(beta), float(mass)
        self.half_life, self.r_max = float(half_life), float(r_max)
        self.decay = 2.0 ** (-self.dt / self.half_life)
        grid = int(1.0 / self.r_max)  # cells at least r_max wide; fewer than 3 a side: one cell, all pairs
        self.grid, self.reach = (grid, 1) if grid >= 3 else (1, 0)
        self.radius = math.sqrt(self.mass) * 0.04  # rendered disc radius
        self.param_shapes = {}
        for k, (n_in, n_out) in enumerate(LAYERS):
            self.param_shapes[f"b{k}"] = (n_out,)
            self.param_shapes[f"W{k}"] = (n_in, n_out)
        self.state_shapes = {"x": (self.N, 2), "v": (self.N, 2), "c": (self.N, COLOUR_DIMS)}
        self.state_dtypes = {"x": torch.float32, "v": torch.float32, "c": torch.float32}

    def _decode(self, theta):
        out, at = {}, 0
        for k, (n_in, n_out) in enumerate(LAYERS):
            out[f"b{k}"] = theta[:, at:at + n_out]
            at += n_out
            out[f"W{k}"] = theta[:, at:at + n_in * n_out].reshape(-1, n_in, n_out)
            at += n_in * n_out
        return out

    def flax_init_theta(self, rng: np.random.Generator, population: int | None = None) -> np.ndarray:
        """θ of the reference's random initialisation of the pair MLP (lecun-normal kernels, zero biases)."""
        return flax_init(self.param_shapes, rng, population)

    def _init(self, params, seeds: Sequence[int]):
        xs, cs = [], []
        for seed in seeds:
            rng = np.random.default_rng(seed)
            n = rng.standard_normal((self.N, COLOUR_DIMS))
            cs.append(n / np.linalg.norm(n, axis=-1, keepdims=True))
            xs.append(rng.random((self.N, 2)))
        x = torch.as_tensor(np.stack(xs), dtype=torch.float32, device=self.device)
        return {"x": x, "v": torch.zeros_like(x), "c": torch.as_tensor(np.stack(cs), dtype=torch.float32,
                                                                        device=self.device)}

    def bytes_per_simulation(self) -> int:
        """The tensor path (GPUs) holds every pair's MLP activations: about 64 floats a pair."""
        if self.engine == "taichi" and self.device.type == "cpu":
            return 0
        return 64 * 4 * self.N * self.N

    def _step(self, arrays, params, steps):
        x, v, c = (arrays[k].contiguous() for k in ("x", "v", "c"))
        if self.engine == "triton" or self.device.type != "cpu":
            for _ in range(steps):
                x, v, c = _step_torch(x, v, c, params, self)
            return {"x": x, "v": v, "c": c}
        from workbench.kernels import plife_plus as kp

        ensure_taichi(self.device)
        P, N, H = x.shape[0], self.N, LAYERS[0][1]
        zi = lambda *s: torch.zeros(*s, dtype=torch.int32, device=self.device)  # noqa: E731
        start, fill = zi(P, self.grid * self.grid + 1), zi(P, self.grid * self.grid)
        xs, ys = torch.empty(P, N, device=self.device), torch.empty(P, N, device=self.device)
        bs = torch.empty(P, H, N, device=self.device)  # c_j·W0[6:] in cell order
        offset = zi(P * N + 1)
        idx, dist = zi(1), torch.empty(2, 1, device=self.device)
        # the MLP flat in θ's layout, one array per simulation (see kernels/plife_plus.py)
        mlp = torch.cat([torch.cat([params[f"b{k}"], params[f"W{k}"].flatten(1)], 1) for k in range(len(LAYERS))],
                        1).contiguous()
        for _ in range(steps):
            kp.sort(x, c, mlp, start, fill, xs, ys, bs, self.grid)
            args = (x, start, xs, ys, offset)
            kp.neighbours(*args, idx, dist, self.grid, self.reach, self.r_max, False)
            pairs = int(offset[-1])  # particle (p, i)'s pairs at offset[p·N + i] on
            if idx.shape[0] < pairs:  # grown, never shrunk, within a call
                idx = zi(pairs + pairs // 4)
                dist = torch.empty(2, idx.shape[0], device=self.device)
            kp.neighbours(*args, idx, dist, self.grid, self.reach, self.r_max, True)
            kp.interact(x, v, c, mlp, bs, offset, idx, dist, self.r_max, self.beta, self.mass, self.decay, self.dt)
        return {"x": x, "v": v, "c": c}

    def _render(self, arrays, params, size):
        x, c = arrays["x"].contiguous(), arrays["c"].contiguous()
        if self.engine == "triton" or self.device.type != "cpu":
            return _render_torch(x, c, self.radius, size)
        from workbench.kernels import plife_plus as kp

        ensure_taichi(self.device)
        img = torch.empty(x.shape[0], size, size, 3, device=self.device)
        kp.render(x, c, img, self.radius, *row_bands(size))
        return img

    def _validate_state(self, arrays):
        x, c = arrays["x"], arrays["c"]
        if (x < 0).any() or (x > 1).any():  # 1.0: float32's x mod 1 of a tiny negative x (the torus's 0)
            raise ValueError("plife_plus: positions 'x' must lie in [0, 1]")
        if ((c.norm(dim=-1) - 1).abs() > 1e-3).any():
            raise ValueError("plife_plus: colours 'c' must be unit vectors (6 numbers of norm 1 per particle)")


def _step_torch(x, v, c, params, sub: ParticleLifePlus):
    """All pairs as tensor algebra (GPUs): the same step as the Taichi kernel, O(N²) memory per simulation."""
    d = x[:, None] - x[:, :, None]  # d_ij = x_j − x_i
    d = torch.where(d > 0.5, d - 1, torch.where(d < -0.5, d + 1, d))
    rho = d.norm(dim=-1)
    N = x.shape[1]
    h = torch.cat([c[:, :, None].expand(-1, -1, N, -1), c[:, None].expand(-1, N, -1, -1)], -1)
    for k in range(3):
        h = torch.tanh(h @ params[f"W{k}"][:, None] + params[f"b{k}"][:, None, None])
    o = h @ params["W3"][:, None] + params["b3"][:, None, None]
    alpha, delta = 1.5 * torch.tanh(o[..., 0]), torch.tanh(o[..., 1:])
    r, b = rho / sub.r_max, sub.beta
    force = torch.where(r < b, r / b - 1, torch.where((b < r) & (r < 1), alpha * (1 - (2 * r - 1 - b).abs() / (1 - b)),
                                                        torch.zeros_like(r)))
    a = (d / (rho + 1e-8)[..., None] * (sub.r_max * force)[..., None]).sum(2) / sub.mass
    dc = (delta * (1 - r).clamp_min(0)[..., None]).sum(2)
    v = sub.decay * v + sub.dt * a
    x = torch.remainder(x + sub.dt * v, 1.0)
    c = c + sub.dt * dc
    return x, v, c / c.norm(dim=-1, keepdim=True)


def _render_torch(x, c, radius, size):
    lin = torch.linspace(0, 1, size, device=x.device)
    img = torch.zeros(x.shape[0], size, size, 3, device=x.device)
    gx, gy = lin[:, None], lin[None, :]
    for i in range(x.shape[1]):
        dist = ((gx - x[:, i, 0, None, None]) ** 2 + (gy - x[:, i, 1, None, None]) ** 2).sqrt()
        cov = (1 - torch.sigmoid((30 / 0.04) * (dist - radius)))[..., None]
        img = cov * ((c[:, i, :3] + 1) / 2)[:, None, None] + (1 - cov) * img
    return img
