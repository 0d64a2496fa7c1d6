"""Particle Lenia (ASAL `plenia`): 200 particles descending the gradient of a Lenia-like energy (asal-more.md §4)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from workbench.kernels.runtime import ensure_taichi
from workbench.simulations.base import Deterministic, Substrate, check_positive

PARAM_NAMES = ("mu_k", "sigma_k", "w_k", "mu_g", "sigma_g", "c_rep")
# θ = 0 is the original Particle Lenia setting; decode multiplies these by exp(θ)
PARAM_BASE = np.array([4.0, 1.0, 0.022, 0.6, 0.15, 1.0])


class ParticleLenia(Deterministic, Substrate):
    """Particle Lenia. θ ∈ ℝ^6 → (μ_K, σ_K, w_K, μ_G, σ_G, c_rep) = base·exp(θ); state "x" (N, 2), unbounded."""

    name = "plenia"
    n_params = len(PARAM_NAMES)

    def __init__(self, N: int = 200, dt: float = 0.1, device: str | torch.device | None = None,
                 engine: str | None = None):
        super().__init__(device, engine)
        self.N = check_positive("N", N)
        if not (math.isfinite(dt) and dt > 0):
            raise ValueError(f"dt must be a positive number, got {dt!r}")
        self.dt = float(dt)
        self.param_shapes = {k: () for k in PARAM_NAMES}
        self.state_shapes = {"x": (self.N, 2)}
        self.state_dtypes = {"x": torch.float32}

    def _decode(self, theta):
        vals = PARAM_BASE * np.exp(theta)
        return {k: vals[:, i] for i, k in enumerate(PARAM_NAMES)}

    def random_theta(self, rng: np.random.Generator, population: int | None = None) -> np.ndarray:
        """θ ~ N(0, I) (the reference's default_params)."""
        return rng.standard_normal(self.n_params if population is None else (population, self.n_params))

    def _init(self, params, seeds: Sequence[int]):
        xs = [12.0 * (np.random.default_rng(seed).random((self.N, 2)) - 0.5) for seed in seeds]
        return {"x": torch.as_tensor(np.stack(xs), dtype=torch.float32, device=self.device)}

    def _packed(self, params) -> torch.Tensor:
        return torch.stack([params[k] for k in PARAM_NAMES], -1).contiguous()

    def _step(self, arrays, params, steps):
        x = arrays["x"].contiguous()
        prm = self._packed(params)
        if self.engine == "triton" or self.device.type != "cpu":
            for _ in range(steps):
                x = _step_torch(x, prm, self.dt)
            return {"x": x}
        from workbench.kernels import plenia as kp

        ensure_taichi(self.device)
        other = torch.empty_like(x)
        for _ in range(steps):
            kp.step(x, x.transpose(1, 2).contiguous(), other, prm, self.dt)
            x, other = other, x
        return {"x": x}

    def _render(self, arrays, params, size):
        x = arrays["x"].contiguous()
        prm = self._packed(params)
        extent = (1.2 * x.abs().flatten(1).amax(1)).contiguous()
        if self.engine == "triton" or self.device.type != "cpu":
            img = _render_torch(x, prm, extent, size)
            lo, hi = torch.aminmax(img.flatten(1), dim=1)
            return (img - lo[:, None, None, None]) / (hi - lo)[:, None, None, None]
        from workbench.kernels import plenia as kp

        ensure_taichi(self.device)
        img = torch.empty(x.shape[0], size, size, 3, device=self.device)
        kp.render(x.transpose(1, 2).contiguous(), prm, extent, img, torch.empty(x.shape[0], size, 2))
        return img


def _step_torch(x: torch.Tensor, prm: torch.Tensor, dt: float) -> torch.Tensor:
    """The step as batched tensor algebra (GPUs): the same sums as the Taichi kernel."""
    mu, sig, w, mu_g, sig_g, c_rep = (prm[:, k, None, None] for k in range(6))
    d = x[:, :, None] - x[:, None]  # x_i − x_j
    d2 = (d * d).sum(-1)
    r = d2.clamp_min(1e-10).sqrt()
    z = (r - mu) / sig
    K = torch.exp(-z * z)
    inv_r = torch.where(d2 > 1e-10, 1.0 / r, torch.zeros_like(r))
    U = w[..., 0] * K.sum(-1)
    grad_U = (-2.0 * w / sig * K * z * inv_r)[..., None].mul(d).sum(2)
    grad_R = -c_rep * ((1.0 - r).clamp_min(0) * inv_r)[..., None].mul(d).sum(2)
    zg = (U - mu_g[..., 0]) / sig_g[..., 0]
    dG = -2.0 * zg / sig_g[..., 0] * torch.exp(-zg * zg)
    return x - dt * (grad_R - dG[..., None] * grad_U)


def _render_torch(x: torch.Tensor, prm: torch.Tensor, extent: torch.Tensor, size: int) -> torch.Tensor:
    mu, sig, w, mu_g, sig_g = (prm[:, k, None, None] for k in range(5))
    ell = torch.linspace(-1, 1, size, device=x.device)
    q = torch.stack(torch.meshgrid(ell, ell, indexing="xy"), -1).reshape(1, -1, 2) * extent[:, None, None]
    d2 = ((q[:, :, None] - x[:, None]) ** 2).sum(-1)
    z = (d2.clamp_min(1e-10).sqrt() - mu) / sig
    U = w[..., 0] * torch.exp(-z * z).sum(-1)
    G = torch.exp(-(((U - mu_g[..., 0]) / sig_g[..., 0]) ** 2))
    m = (d2.amin(-1) / 0.02).clamp(0, 1)[..., None]
    U, G = U[..., None], G[..., None]
    c1 = x.new_tensor([0.1, 0.1, 0.3]) * (1 - U) + x.new_tensor([0.2, 0.7, 1.0]) * U
    rgb = m * (c1 * (1 - G) + x.new_tensor([1.17, 0.91, 0.13]) * G)
    return rgb.reshape(-1, size, size, 3)
