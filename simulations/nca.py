"""Continuous neural cellular automata, d = 1 or 3 channels (asal-more.md §2).

θ = [b0 (4), K0 (3·3·(d+2)·4), b1 (16), K1 (4·16), b2 (d), K2 (16·d)] (209 numbers for d = 1, 315 for d = 3);
θ = 0 is the all-zero network (the searches' start). A step is S′ = clip(S + dt·M·ΔS, 0, 1) with a drop mask M:
each cell updates with probability 1 − p_drop = ½. Reference quirks kept: the wrap pad covers the channel axis
too (the first layer sees d + 2 channels), there is no nonlinearity after the 3×3 layer, and dt = 0.01.
"""

from __future__ import annotations

import numpy as np
import torch

from workbench.kernels.runtime import ensure_taichi
from workbench.simulations.base import check_positive
from workbench.simulations.gol import GridSubstrate, step_keys

NET_SHAPES = (("b0", (4,)), ("K0", (3, 3, None, 4)), ("b1", (16,)), ("K1", (4, 16)), ("b2", (None,)),
              ("K2", (16, None)))


def net_shapes(d: int) -> dict[str, tuple[int, ...]]:
    """Shapes of the network's pieces in θ order for d channels (None above stands for d + 2 in K0, else d)."""
    out = {}
    for name, shape in NET_SHAPES:
        out[name] = tuple((d + 2 if name == "K0" else d) if s is None else s for s in shape)
    return out


def unflatten(theta: np.ndarray, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Row-major pieces of θ (P, n) in the order of `shapes` (evosax's ParameterReshaper order)."""
    out, at = {}, 0
    for name, shape in shapes.items():
        size = int(np.prod(shape))
        out[name] = theta[:, at:at + size].reshape(-1, *shape)
        at += size
    return out


def flax_init(shapes: dict[str, tuple[int, ...]], rng: np.random.Generator, population: int | None = None,
              normal: tuple[str, ...] = ()) -> np.ndarray:
    """θ (n,) or (P, n) of the reference's random network initialisation, in θ order: flax's lecun-normal kernels
    (pieces named K… or W…: a normal cut at ±2σ, scaled to std √(1/fan_in), fan_in = every kernel axis but the
    last), zero biases, and N(0, 1) for the pieces named in `normal`. (Searches start from θ = 0; this is the
    "random init" start, --init random.)"""
    P = 1 if population is None else population
    pieces = []
    for name, shape in shapes.items():
        size = int(np.prod(shape))
        if name in normal:
            pieces.append(rng.standard_normal((P, size)))
        elif name.startswith(("K", "W")):
            x = rng.standard_normal((P, size))
            while (bad := np.abs(x) > 2).any():
                x[bad] = rng.standard_normal(int(bad.sum()))
            fan_in = int(np.prod(shape[:-1]))
            pieces.append(x * np.sqrt(1.0 / fan_in) / 0.87962566103423978)
        else:
            pieces.append(np.zeros((P, size)))
    theta = np.concatenate(pieces, axis=1)
    return theta[0] if population is None else theta


def pack(params: dict[str, torch.Tensor], d: int) -> torch.Tensor:
    """The network's weights as one row per simulation in the kernels' layout (kernels.nca.layout): the first
    layer folded onto the d real channels (padded channel c′ is a copy of channel (c′ − 1) mod d)."""
    K0 = params["K0"]
    fold = torch.tensor([(c - 1) % d for c in range(d + 2)], device=K0.device)
    K0f = torch.zeros(*K0.shape[:3], d, K0.shape[4], dtype=K0.dtype, device=K0.device).index_add_(3, fold, K0)
    P = K0.shape[0]
    pieces = [K0f, params["b0"], params["K1"], params["b1"], params["K2"], params["b2"]]
    return torch.cat([t.reshape(P, -1) for t in pieces], dim=1).contiguous()


class NCA(GridSubstrate):
    """Continuous NCA with d channels on a torus (grid × grid); see the module docstring."""

    noise_what = "drop masks in {0, 1} (1: the cell updates)"

    def __init__(self, d: int = 1, grid: int = 128, p_drop: float = 0.5, dt: float = 0.01,
                 device: str | torch.device | None = None, engine: str | None = None):
        self.d = check_positive("d", d)
        self.name = f"nca_d{self.d}"
        super().__init__(device, engine)
        self.grid = check_positive("grid", grid)
        if not 0.0 <= p_drop < 1.0:
            raise ValueError(f"p_drop must be in [0, 1), got {p_drop!r}")
        if not (np.isfinite(dt) and dt > 0):
            raise ValueError(f"dt must be a positive number, got {dt!r}")
        self.p_drop, self.dt = float(p_drop), float(dt)
        self.param_shapes = net_shapes(self.d)
        self.n_params = sum(int(np.prod(s)) for s in self.param_shapes.values())
        self.state_shapes = {"state": (self.grid, self.grid, self.d)}
        self.state_dtypes = {"state": torch.float32}

    def noise_shape(self):
        return (self.grid, self.grid)

    def _convert_noise(self, arr):
        if not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{self.name}: drop masks must hold only 0 and 1 (1: the cell updates)")
        return torch.as_tensor(np.ascontiguousarray(arr, dtype=np.uint8)).to(self.device)

    def _decode(self, theta):
        return unflatten(theta, self.param_shapes)

    def flax_init_theta(self, rng: np.random.Generator, population: int | None = None) -> np.ndarray:
        """θ of the reference's random initialisation (lecun-normal kernels, zero biases); see flax_init."""
        return flax_init(self.param_shapes, rng, population)

    def _init(self, params, seeds):
        worlds = [np.random.default_rng(seed).random((self.grid, self.grid, self.d), dtype=np.float32)
                  for seed in seeds]
        return self._with_key({"state": torch.as_tensor(np.stack(worlds), device=self.device)}, seeds)

    def _step(self, arrays, params, steps, noise=None):
        if self.engine == "torch":
            from workbench.kernels import torch_ca

            S = arrays["state"]
            for t in range(steps):
                keys = step_keys(arrays["rng"], t).to(self.device)
                S = torch_ca.nca_step(S, params, None if noise is None else noise[t], keys, 1.0 - self.p_drop,
                                      self.dt)
            return {**arrays, "state": S}
        from workbench.kernels import nca as kn

        ensure_taichi(self.device)
        w = pack(params, self.d)
        a = arrays["state"].contiguous()
        b = torch.empty_like(a)
        P = a.shape[0]
        no_mask = torch.zeros(P, 1, 1, dtype=torch.uint8, device=self.device)
        stride = kn.row_stride()
        for t in range(steps):
            mask = no_mask if noise is None else noise[t]
            keys = step_keys(arrays["rng"], t).to(self.device)
            kn.nca_step(a, b, w, mask, keys, int(noise is None), 1.0 - self.p_drop, self.dt, stride, self.d)
            a, b = b, a
        return {**arrays, "state": a}

    def _render(self, arrays, params, size):
        return self._render_channels(arrays["state"], size)  # d = 1: red only


class NCA1(NCA):
    """NCA with one channel (rendered red)."""

    def __init__(self, grid: int = 128, p_drop: float = 0.5, dt: float = 0.01,
                 device: str | torch.device | None = None, engine: str | None = None):
        super().__init__(1, grid, p_drop, dt, device, engine)


class NCA3(NCA):
    """NCA with three channels (rendered as RGB)."""

    def __init__(self, grid: int = 128, p_drop: float = 0.5, dt: float = 0.01,
                 device: str | torch.device | None = None, engine: str | None = None):
        super().__init__(3, grid, p_drop, dt, device, engine)
