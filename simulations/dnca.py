"""Discrete neural cellular automaton: 8 states, 1 group, temperature τ = 1e-3 (asal-more.md §3).

θ = [init logits (8), the NCA network for d = 8 (580)] = 588 numbers. Cells start i.i.d. with P(k) =
softmax(init)_k; a step is s′ = argmax_k (L_k/τ + g_k) with L the network on the one-hot state and g standard
Gumbel noise (identity bias 0; ties: the lowest k). With θ = 0 (L ≡ 0) every step is uniform noise.
"""

from __future__ import annotations

import numpy as np
import torch

from workbench.kernels.runtime import ensure_taichi
from workbench.simulations.base import check_positive
from workbench.simulations.gol import GridSubstrate, step_keys
from workbench.simulations.nca import flax_init, net_shapes, pack, unflatten

N_STATES = 8
# red, green, blue, yellow, magenta, cyan, white, #8f5d00
PALETTE = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (1.0, 1.0, 0.0), (1.0, 0.0, 1.0), (0.0, 1.0, 1.0),
           (1.0, 1.0, 1.0), (143 / 255, 93 / 255, 0.0))


class DiscreteNCA(GridSubstrate):
    """Discrete NCA on a torus (grid × grid), states 0..7; see the module docstring."""

    name = "dnca"
    noise_what = "standard Gumbel draws"

    def __init__(self, grid: int = 128, tau: float = 1e-3, identity_bias: float = 0.0,
                 device: str | torch.device | None = None, engine: str | None = None):
        """tau: the temperature τ; identity_bias: b added to the logit of a cell's own state (the reference's
        option, 0 there)."""
        super().__init__(device, engine)
        self.grid = check_positive("grid", grid)
        if not (np.isfinite(tau) and tau > 0):
            raise ValueError(f"tau must be a positive number, got {tau!r}")
        if not np.isfinite(identity_bias):
            raise ValueError(f"identity_bias must be a finite number, got {identity_bias!r}")
        self.tau, self.identity_bias = float(tau), float(identity_bias)
        self.param_shapes = {"init": (N_STATES,), **net_shapes(N_STATES)}
        self.n_params = sum(int(np.prod(s)) for s in self.param_shapes.values())
        self.state_shapes = {"state": (self.grid, self.grid, 1)}
        self.state_dtypes = {"state": torch.int32}
        self._palette = torch.tensor(PALETTE, dtype=torch.float32, device=self.device)

    def state_range(self) -> tuple[float, float]:
        """The cell values' range: the states 0 … N_STATES − 1."""
        return 0, N_STATES - 1

    def noise_shape(self) -> tuple[int, ...]:
        """One step's Gumbel noise for one simulation: (grid, grid, 1, N_STATES)."""
        return (self.grid, self.grid, 1, N_STATES)

    def _convert_noise(self, arr):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{self.name}: Gumbel noise contains NaN or inf")
        # (steps, P, H, W, 1, 8) -> (steps, P, H, W, 8)
        return torch.as_tensor(np.ascontiguousarray(arr[..., 0, :], dtype=np.float32)).to(self.device)

    def _decode(self, theta):
        return unflatten(theta, self.param_shapes)

    def flax_init_theta(self, rng: np.random.Generator, population: int | None = None) -> np.ndarray:
        """θ of the reference's random initialisation: init logits N(0, 1), lecun-normal kernels, zero biases."""
        return flax_init(self.param_shapes, rng, population, normal=("init",))

    def _init(self, params, seeds):
        logits = params["init"].detach().cpu().numpy().astype(np.float64)
        grids = []
        for p, seed in enumerate(seeds):
            prob = np.exp(logits[p] - logits[p].max())
            cdf = np.cumsum(prob / prob.sum())
            u = np.random.default_rng(seed).random((self.grid, self.grid, 1))
            grids.append(np.minimum(np.searchsorted(cdf, u, side="right"), N_STATES - 1))
        state = torch.as_tensor(np.stack(grids), dtype=torch.int32, device=self.device)
        return self._with_key({"state": state}, seeds)

    def _step(self, arrays, params, steps, noise=None):
        if self.engine == "torch":
            from workbench.kernels import torch_ca

            P = arrays["state"].shape[0]
            k = arrays["state"].reshape(P, self.grid, self.grid)
            for t in range(steps):
                keys = step_keys(arrays["rng"], t).to(self.device)
                k = torch_ca.dnca_step(k, params, None if noise is None else noise[t], keys, self.tau,
                                       self.identity_bias)
            return {**arrays, "state": k.reshape(P, self.grid, self.grid, 1)}
        from workbench.kernels import nca as kn

        ensure_taichi(self.device)
        w = pack({k: v for k, v in params.items() if k != "init"}, N_STATES)
        P = arrays["state"].shape[0]
        a = arrays["state"].reshape(P, self.grid, self.grid).contiguous()
        b = torch.empty_like(a)
        no_gumbel = torch.zeros(P, 1, 1, N_STATES, device=self.device)
        stride = kn.row_stride()
        for t in range(steps):
            g = no_gumbel if noise is None else noise[t]
            keys = step_keys(arrays["rng"], t).to(self.device)
            kn.dnca_step(a, b, w, g, keys, int(noise is None), self.tau, self.identity_bias, stride)
            a, b = b, a
        return {**arrays, "state": a.reshape(P, self.grid, self.grid, 1)}

    def _render(self, arrays, params, size):
        P = arrays["state"].shape[0]
        return self._render_states(arrays["state"].view(P, self.grid, self.grid), self._palette, size)
