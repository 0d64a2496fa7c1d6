"""Particle Life: 6 colours, asymmetric attraction matrix α and repulsion radii β (ASAL reference)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from workbench.kernels.runtime import ensure_taichi, row_bands
from workbench.simulations.base import Substrate, check_positive

N_COLOURS = 6


class ParticleLife(Substrate):
    """Particle Life (spec §1): `N` particles of 6 colours on the unit torus, each pair attracting or repelling
    by the colours' α within `r_max`, with the mover's repulsion radius β. θ (42 numbers) is β (6) and α (6×6)
    before their squashing; the state is positions x, velocities v and colours c (random from the seed); the
    render draws coloured discs on black."""

    name = "plife"
    n_params = N_COLOURS + N_COLOURS * N_COLOURS

    def __init__(self, N: int = 5000, dt: float = 0.002, mass: float = 0.1, half_life: float = 0.04,
                 r_max: float = 0.1, device: str | torch.device | None = None, engine: str | None = None):
        super().__init__(device, engine)
        self.N = check_positive("N", N)
        for key, val in (("dt", dt), ("mass", mass), ("half_life", half_life), ("r_max", r_max)):
            if not (math.isfinite(val) and val > 0):
                raise ValueError(f"{key} must be a positive number, got {val!r}")
        if r_max > 0.5:
            raise ValueError(f"r_max must be at most 0.5 (half the torus), got {r_max}")
        self.dt, self.mass, self.half_life, self.r_max = float(dt), float(mass), float(half_life), float(r_max)
        self.decay = 2.0 ** (-self.dt / self.half_life)
        # cells at least r_max wide; fewer than 3 per axis would visit a cell twice: use all pairs
        grid = int(1.0 / self.r_max)
        self.grid, self.reach = (grid, 1) if grid >= 3 else (1, 0)
        self.radius = math.sqrt(self.mass) * 0.01  # rendered disc radius
        self.param_shapes = {"alpha": (N_COLOURS, N_COLOURS), "beta": (N_COLOURS,)}
        self.state_shapes = {"x": (self.N, 2), "v": (self.N, 2), "c": (self.N,)}
        self.state_dtypes = {"x": torch.float32, "v": torch.float32, "c": torch.int32}
        if self.engine == "triton":
            from workbench.kernels.triton_plife import ParticleLifeTriton

            self._triton = ParticleLifeTriton(self.N, self.grid, self.reach, self.r_max, self.mass, self.decay,
                                              self.dt, self.device)

    def _decode(self, theta):
        beta = 1.0 / (1.0 + np.exp(-theta[:, :N_COLOURS]))
        alpha = 3.0 / (1.0 + np.exp(-theta[:, N_COLOURS:])) - 1.5
        return {"alpha": alpha.reshape(-1, N_COLOURS, N_COLOURS), "beta": beta}

    def theta_with(self, theta: Any, name: str, value: Any) -> np.ndarray:
        """θ giving α or β the numbers `value` (Substrate.theta_with): β in (0, 1) (θ = logit β), α in (−1.5, 1.5)
        (θ = logit((α + 1.5) / 3)); a number outside is refused with its range."""
        theta, old, value = self._edit_checked(theta, name, value)
        low, high, start = (0.0, 1.0, 0) if name == "beta" else (-1.5, 1.5, N_COLOURS)
        new, changed = value.ravel(), (value != old).ravel()
        out = changed & ((new <= low) | (new >= high))
        if out.any():
            i = int(np.argmax(out))
            where = f"[{i}]" if name == "beta" else f"[{i // N_COLOURS}, {i % N_COLOURS}]"
            raise ValueError(f"{name}{where} = {new[i]:g}: {name} takes numbers between {low:g} and {high:g} "
                             "(both left out)")
        unit = (new - low) / (high - low)
        where = start + np.flatnonzero(changed)
        theta[where] = np.log(unit[changed]) - np.log1p(-unit[changed])
        return theta

    def _init(self, params, seeds):
        xs, cs = [], []
        for seed in seeds:
            rng = np.random.default_rng(seed)
            cs.append(rng.integers(0, N_COLOURS, self.N))
            xs.append(rng.random((self.N, 2)))
        x = torch.as_tensor(np.stack(xs), dtype=torch.float32, device=self.device)
        return {"x": x, "v": torch.zeros_like(x),
                "c": torch.as_tensor(np.stack(cs), dtype=torch.int32, device=self.device)}

    def bytes_per_simulation(self) -> int:
        """Working memory one simulation of a step needs on the device: the Triton step's per-particle buffers and
        its grid's cell table (workbench.kernels.triton_plife.bytes_per_simulation)."""
        from workbench.kernels.triton_plife import bytes_per_simulation

        return bytes_per_simulation(self.N, self.grid ** 2)

    def _step(self, arrays, params, steps):
        x, v, c = arrays["x"], arrays["v"], arrays["c"]
        if self.engine == "triton":
            x, v = self._triton.step(x, v, c, params["alpha"], params["beta"], steps)
            return {"x": x, "v": v, "c": c}
        from workbench.kernels import plife as kp

        ensure_taichi(self.device)
        P = x.shape[0]
        zi = lambda *s: torch.zeros(*s, dtype=torch.int32, device=self.device)  # noqa: E731
        start, fill = zi(P, self.grid * self.grid + 1), zi(P, self.grid * self.grid)
        # positions (SoA) and colours in cell order, filled by the kernel each step
        xs, ys = torch.empty(P, self.N, device=self.device), torch.empty(P, self.N, device=self.device)
        cs = zi(P, self.N)
        for _ in range(steps):
            kp.step(x, v, c, params["alpha"], params["beta"], start, fill, xs, ys, cs, self.grid, self.reach,
                    self.r_max, self.mass, self.decay, self.dt)
        return {"x": x, "v": v, "c": c}

    def _render(self, arrays, params, size):
        x, c = arrays["x"], arrays["c"]
        if self.engine == "triton":
            from workbench.kernels import triton_render

            return triton_render.particles(x, c, self.radius, size)
        from workbench.kernels import render as kr

        ensure_taichi(self.device)
        img = torch.empty(x.shape[0], size, size, 3, device=self.device)
        kr.particles(x, c, img, self.radius, *row_bands(size))
        return img

    def _validate_state(self, arrays):
        x, c = arrays["x"], arrays["c"]
        if (x < 0).any() or (x > 1).any():  # 1.0: float32's x mod 1 of a tiny negative x (the torus's 0)
            raise ValueError("plife: positions 'x' must lie in [0, 1]")
        if (c < 0).any() or (c >= N_COLOURS).any():
            raise ValueError(f"plife: colours 'c' must be integers in 0..{N_COLOURS - 1}")
