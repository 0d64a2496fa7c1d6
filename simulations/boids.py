"""Boids whose steering is a small neural network (the ASAL reference substrate)."""

from __future__ import annotations

import math

import numpy as np
import torch

from workbench.kernels.runtime import ensure_taichi, row_bands
from workbench.simulations.base import Substrate, check_positive

# layer name -> (fan in, fan out), in the order of the flat θ (b_i then W_i per layer)
LAYERS = {"1": (4, 8), "2": (8, 8), "3": (8, 8), "4": (8, 1)}
N_PARAMS = sum(fan_out + fan_in * fan_out for fan_in, fan_out in LAYERS.values())  # 193
K_NEIGHBOURS = 16


class Boids(Substrate):
    """Boids steered by a small MLP (spec §1): `N` boids on the unit torus, each turning by what the network
    makes of its 16 nearest neighbours within `visual_range`, seen in its own frame. θ (193 numbers) is the
    network's weights; the state is positions x and unit headings v (random from the seed); the render draws
    each boid as a triangle on white, boid 0 in red.

    N: boids per simulation; visual_range: the radius (torus units) within which neighbours are seen; speed, dt:
    each step moves a boid speed · dt along its new heading, turned by dt · 60 times the network's steer (the
    reference's 0.5 and 0.01); device, engine: see Substrate."""

    name = "boids"
    n_params = N_PARAMS

    def __init__(self, N: int = 128, visual_range: float = 0.1, speed: float = 0.5, dt: float = 0.01,
                 device: str | torch.device | None = None, engine: str | None = None):
        super().__init__(device, engine)
        self.N = check_positive("N", N)
        for key, val in (("visual_range", visual_range), ("speed", speed), ("dt", dt)):
            if not (math.isfinite(val) and val > 0):
                raise ValueError(f"{key} must be a positive number, got {val!r}")
        self.visual_range, self.speed, self.dt = float(visual_range), float(speed), float(dt)
        # grid cells of the visual range: a boid's in-range neighbours lie in its 3×3 block
        self.grid = max(1, math.ceil(1.0 / self.visual_range))
        self.cell = 1.0 / self.grid if self.grid == 1 else self.visual_range
        self.param_shapes = {}
        for i, (fan_in, fan_out) in LAYERS.items():
            self.param_shapes[f"W{i}"] = (fan_in, fan_out)
            self.param_shapes[f"b{i}"] = (fan_out,)
        self.state_shapes = {"x": (self.N, 2), "v": (self.N, 2)}
        self.state_dtypes = {"x": torch.float32, "v": torch.float32}

    def _decode(self, theta):
        out, at = {}, 0
        for i, (fan_in, fan_out) in LAYERS.items():
            out[f"b{i}"] = theta[:, at:at + fan_out]
            at += fan_out
            out[f"W{i}"] = theta[:, at:at + fan_in * fan_out].reshape(-1, fan_in, fan_out)
            at += fan_in * fan_out
        return out

    def flat(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Batched parameters back to the flat θ layout that the kernel reads."""
        parts = []
        for i in LAYERS:
            parts += [params[f"b{i}"].reshape(params[f"b{i}"].shape[0], -1),
                      params[f"W{i}"].reshape(params[f"W{i}"].shape[0], -1)]
        return torch.cat(parts, dim=1).contiguous()

    def _init(self, params, seeds):
        xs, vs = [], []
        for seed in seeds:
            rng = np.random.default_rng(seed)
            x = rng.random((self.N, 2))
            v = rng.standard_normal((self.N, 2))
            xs.append(x)
            vs.append(v / np.linalg.norm(v, axis=1, keepdims=True))
        as_t = lambda a: torch.as_tensor(np.stack(a), dtype=torch.float32, device=self.device)  # noqa: E731
        return {"x": as_t(xs), "v": as_t(vs)}

    def _scratch(self, P: int, N: int):
        """Grid buffers for P simulations of N boids: cell starts, fill counters, boids in cell order."""
        z = lambda *s: torch.zeros(*s, dtype=torch.int32, device=self.device)  # noqa: E731
        return z(P, self.grid * self.grid + 1), z(P, self.grid * self.grid), z(P, N)

    def _step(self, arrays, params, steps):
        x, v = arrays["x"], arrays["v"]
        P = x.shape[0]
        theta = self.flat(params)
        if self.engine == "triton":
            from workbench.kernels import triton_boids

            triton_boids.step(x, v, theta, steps, self.visual_range, self.speed, self.dt, K_NEIGHBOURS)
            return {"x": x, "v": v}
        from workbench.kernels import boids as kb

        ensure_taichi(self.device)
        x_new, v_new = torch.empty_like(x), torch.empty_like(v)
        start, fill, items = self._scratch(P, self.N)
        if self.device.type == "cpu":
            kb.step_per_simulation(x, v, theta, x_new, v_new, start, fill, items, steps, self.grid, self.cell,
                                   self.visual_range, self.speed, self.dt)
        else:
            for _ in range(steps):
                kb.step_per_boid(x, v, theta, x_new, v_new, start, fill, items, self.grid, self.cell,
                                 self.visual_range, self.speed, self.dt)
        return {"x": x, "v": v}

    def knn(self, x: np.ndarray, k: int = K_NEIGHBOURS) -> tuple[np.ndarray, np.ndarray]:
        """The exact k nearest other boids (grid search) for positions (N, 2) or (P, N, 2)."""
        from workbench.kernels import boids as kb

        ensure_taichi(self.device)
        x = torch.as_tensor(np.asarray(x, dtype=np.float32))
        batched = x.ndim == 3
        x = (x if batched else x[None]).contiguous().to(self.device)
        P, N = x.shape[:2]
        idx = torch.empty(P, N, k, dtype=torch.int32, device=self.device)
        dist = torch.empty(P, N, k, device=self.device)
        start, fill, items = self._scratch(P, N)
        kb.knn(x, idx, dist, start, fill, items, self.grid, self.cell, k)
        idx, dist = idx.cpu().numpy(), dist.cpu().numpy()
        return (idx, dist) if batched else (idx[0], dist[0])

    def _render(self, arrays, params, size):
        x, v = arrays["x"], arrays["v"]
        if self.engine == "triton":
            from workbench.kernels import triton_render

            return triton_render.boids(x, v, size)
        from workbench.kernels import render as kr

        ensure_taichi(self.device)
        P = x.shape[0]
        img = torch.empty(P, size, size, 3, device=self.device)
        kr.boids(x, v, img, *row_bands(size))
        return img

    def _validate_state(self, arrays):
        x = arrays["x"]
        if (x < 0).any() or (x > 1).any():  # 1.0: float32's x mod 1 of a tiny negative x (the torus's 0)
            raise ValueError("boids: positions 'x' must lie in [0, 1]")
        if (arrays["v"].norm(dim=-1) == 0).any():
            raise ValueError("boids: velocities 'v' must be non-zero (they are headings)")
