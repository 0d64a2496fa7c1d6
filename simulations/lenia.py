"""Lenia (multi-channel, 15 kernels) with the reference's genotype, recentring and rendering."""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench.kernels.runtime import ensure_taichi
from workbench.simulations.base import Substrate, check_positive


def load_pattern(pattern: str | Path | dict = "5N7KKM") -> dict:
    """A Lenia pattern: the shipped '5N7KKM' (Aquarium swarm), a JSON file path or a dict."""
    if isinstance(pattern, dict):
        return pattern
    if str(pattern) == "5N7KKM":
        return json.loads(resources.files("workbench.data").joinpath("lenia_5N7KKM.json").read_text())
    path = Path(pattern)
    if not path.is_file():
        raise ValueError(f"Lenia pattern {pattern!r} is neither '5N7KKM' nor a JSON file")
    return json.loads(path.read_text())


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def kernel_fields(pattern: dict, grid: int) -> np.ndarray:
    """The normalised kernels K_k (K, grid, grid), centred at (grid/2, grid/2), in float64."""
    R = pattern["R"]
    mid = grid // 2
    yy, xx = np.mgrid[0:grid, 0:grid]
    D = np.sqrt(((yy - mid) / R) ** 2 + ((xx - mid) / R) ** 2)
    out = []
    for k in pattern["kernels"]:
        b = np.asarray(k["b"], dtype=np.float64)
        B = len(b)
        Dk = D * B / k["r"]
        shell = b[np.minimum(np.floor(Dk).astype(int), B - 1)]
        K = (Dk < B) * shell * np.exp(-(((Dk % 1) - 0.5) ** 2) / (2 * 0.15**2))
        out.append(K / K.sum())
    return np.stack(out)


class Lenia(Substrate):
    """Lenia as ASAL searches it (spec §1): a 3-channel world of `grid`² cells, 15 kernels of the pattern
    (default 5N7KKM), recentred on its mass every step. θ (3117 numbers) perturbs the kernels' growth parameters
    (m, s, h) and the initial `cells`² pattern in logit space (θ = 0 is the pattern itself); the state is the
    world and its shifts, the render the central `phenotype`² crop. The initial state is the parameters' own
    pattern after one step, whatever the seed."""

    name = "lenia"
    seeded_init = False  # the initial pattern is the parameters' own (the reference's)

    def __init__(self, grid: int = 128, cells: int = 32, phenotype: int = 64, pattern: str | Path | dict = "5N7KKM",
                 device: str | torch.device | None = None, engine: str | None = None):
        super().__init__(device, engine)
        self.grid = check_positive("grid", grid)
        self.cells = check_positive("cells", cells)
        self.phenotype = check_positive("phenotype", phenotype)
        if self.cells > self.grid or self.phenotype > self.grid:
            raise ValueError(f"cells ({cells}) and phenotype ({phenotype}) must fit in the grid ({grid})")
        pat = load_pattern(pattern)
        self.R, self.T = float(pat["R"]), float(pat["T"])
        self.dt = 1.0 / self.T
        kernels = pat["kernels"]
        self.n_kernels = len(kernels)
        c0 = np.array([k["c0"] for k in kernels])
        # Internally the kernels are ordered by source channel, so each channel's spectrum multiplies
        # one contiguous block of kernel spectra (a broadcast, no gather copy).
        self._order = torch.from_numpy(np.argsort(c0, kind="stable"))
        self._blocks = [(c, int((c0 < c).sum()), int((c0 <= c).sum())) for c in range(3) if (c0 == c).any()]
        self.c1 = torch.tensor([kernels[i]["c1"] for i in self._order], dtype=torch.int32, device=self.device)
        self.channels = 3
        # genotype g0 = [m.., s.., h..] ‖ cells (y, x, c) zero-padded to cells × cells
        cells_cyx = np.asarray(pat["cells"], dtype=np.float64)
        ph, pw = cells_cyx.shape[1:]
        if ph > self.cells or pw > self.cells:
            raise ValueError(f"the pattern ({ph}×{pw}) does not fit in cells={self.cells}")
        padded = np.zeros((self.cells, self.cells, self.channels))
        oy, ox = (self.cells - ph) // 2, (self.cells - pw) // 2
        padded[oy:oy + ph, ox:ox + pw] = cells_cyx.transpose(1, 2, 0)
        dyn = np.array([k[key] for key in ("m", "s", "h") for k in kernels], dtype=np.float64)
        self.n_dyn = dyn.size
        self.base = _logit(np.concatenate([dyn, padded.ravel()]))
        self.n_params = self.base.size
        self.param_shapes = {"m": (self.n_kernels,), "s": (self.n_kernels,), "h": (self.n_kernels,),
                             "cells": (self.cells, self.cells, self.channels)}
        self.state_shapes = {"world": (self.grid, self.grid, self.channels), "shift": (2,), "total_shift": (2,)}
        self.state_dtypes = {"world": torch.float32, "shift": torch.int32, "total_shift": torch.int32}
        # FFT of the kernels moved to the origin, computed once in float64
        K = np.fft.ifftshift(kernel_fields(pat, self.grid), axes=(-2, -1))[self._order.numpy()]
        fK = np.fft.rfft2(K).astype(np.complex64)
        self._render_index: dict[int, torch.Tensor] = {}
        if self.engine == "triton":
            from workbench.kernels.triton_lenia import LeniaTriton

            c0_sorted = np.sort(c0, kind="stable")
            self._triton = LeniaTriton(torch.from_numpy(fK), c0_sorted, self.c1.cpu(), self.R, self.dt, self.device)
        else:
            # stored transposed (K, W/2 + 1, H): the products are formed in that layout (see _step_taichi)
            self.fK_t = torch.from_numpy(np.ascontiguousarray(fK.transpose(0, 2, 1))).to(self.device)

    def _decode(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        n, k = self.n_dyn, self.n_kernels
        dyn = _sigmoid(self.base[:n] + np.clip(theta[:, :n], -1.0, 1.0))
        cells = _sigmoid(self.base[n:] + theta[:, n:])
        return {"m": dyn[:, :k], "s": dyn[:, k:2 * k], "h": dyn[:, 2 * k:],
                "cells": cells.reshape(-1, self.cells, self.cells, self.channels)}

    def theta_with(self, theta: Any, name: str, value: Any) -> np.ndarray:
        """θ giving m, s, h or cells the numbers `value` (Substrate.theta_with). θ moves each of m, s, h within
        sigmoid(logit(the pattern's value) ± 1) (its clip to ±1): a number outside that reach is refused with it;
        cells take any number in (0, 1)."""
        theta, old, value = self._edit_checked(theta, name, value)
        k = self.n_kernels
        start = {"m": 0, "s": k, "h": 2 * k, "cells": self.n_dyn}[name]
        where = start + np.arange(value.size)
        base, new, changed = self.base[where], value.ravel(), (value != old).ravel()
        low, high = (_sigmoid(base - 1.0), _sigmoid(base + 1.0)) if name != "cells" else (0.0, 1.0)
        slack = 1e-6  # a bound as float32 (or 4 places) shows it is the bound: taken
        out = changed & ((new < low - slack) | (new > high + slack) if name != "cells" else
                         (new <= 0.0) | (new >= 1.0))
        if out.any():
            i = int(np.argmax(out))
            if name == "cells":
                raise ValueError(f"cells take numbers in (0, 1), got {new[i]:g}")
            inward = np.ceil(low[i] * 1e4) / 1e4, np.floor(high[i] * 1e4) / 1e4  # numbers that are taken
            raise ValueError(f"{name}[{i}] = {new[i]:g} is out of θ's reach: it moves {name}[{i}] from "
                             f"{inward[0]:g} to {inward[1]:g} (the pattern's {_sigmoid(base[i]):.4g}, θ clipped "
                             "to ±1)")
        if name != "cells":
            theta[where[changed]] = np.clip(_logit(np.clip(new, low, high)[changed]) - base[changed], -1.0, 1.0)
        else:
            theta[where[changed]] = _logit(new[changed]) - base[changed]
        return theta

    def world_from_cells(self, cells: torch.Tensor) -> torch.Tensor:
        """The (P, grid, grid, channels) float32 world on the substrate's device: the pattern's cells (P, cells, cells,
        channels) at its centre, zeros elsewhere."""
        P = cells.shape[0]
        world = torch.zeros(P, self.grid, self.grid, self.channels, device=self.device)
        o = (self.grid - self.cells) // 2
        world[:, o:o + self.cells, o:o + self.cells] = cells
        return world

    def _init(self, params, seeds):
        P = params["cells"].shape[0]
        arrays = {"world": self.world_from_cells(params["cells"]),
                  "shift": torch.zeros(P, 2, dtype=torch.int32, device=self.device),
                  "total_shift": torch.zeros(P, 2, dtype=torch.int32, device=self.device)}
        return self._step(arrays, params, 1)  # the reference's init performs one step

    def bytes_per_simulation(self) -> int:
        """Working memory one simulation of a step needs on the device: the Triton step's buffers, the inverse FFT's
        copy of the products and cuFFT's work area (workbench.kernels.triton_lenia.bytes_per_simulation)."""
        from workbench.kernels.triton_lenia import bytes_per_simulation

        return bytes_per_simulation(self.n_kernels, self.grid, self.grid)

    def _step(self, arrays, params, steps):
        if self.engine == "triton":
            m, s, h = (params[k][:, self._order] for k in ("m", "s", "h"))
            world, shift, total = self._triton.step(arrays["world"], arrays["shift"], arrays["total_shift"],
                                                    m, s, h, steps)
            return {"world": world, "shift": shift, "total_shift": total}
        return self._step_taichi(arrays, params, steps)

    def _step_taichi(self, arrays, params, steps):
        from workbench.kernels import lenia as kl

        ensure_taichi(self.device)
        world, shift, total = arrays["world"], arrays["shift"], arrays["total_shift"]
        P, H, W, C = world.shape
        K, Wr = self.n_kernels, W // 2 + 1
        m, s, h = (params[k][:, self._order] for k in ("m", "s", "h"))
        # U·c/s is linear in the spectrum: scale each kernel spectrum by c/s once per call (θ is fixed
        # during a call), then d = U·c/s − m·c/s. With c = √(log2(e)/2) the growth's Gaussian
        # exp(−(U − m)²/(2s²)) is 2^(−d²), and torch's exp2 is 3× faster than its exp. (Subtracting m at the
        # zero frequency instead would save a pass but costs accuracy: the error grew 3× over 30 steps.)
        scale = (math.sqrt(math.log2(math.e) / 2.0) / s.double()).float()
        spectra_t = self.fK_t[None] * scale[..., None, None]
        offset = (m * scale)[..., None, None]
        # Σ_k h_k·(2·g_k − 1) into channel c1_k as one small matrix product per simulation: weights 2·h_k
        # in row c1_k, and the constant −Σ h_k per channel.
        onehot = torch.nn.functional.one_hot(self.c1.long(), C).T.to(h)  # (C, K)
        weights = 2.0 * onehot[None] * h[:, None, :]
        bias = -(onehot[None] * h[:, None, :]).sum(-1)
        a = world.permute(0, 3, 1, 2).contiguous()  # channel-first for the FFT
        rolled = torch.empty_like(a)
        spec = torch.empty(P, C, H, Wr, dtype=torch.complex64, device=self.device)
        # The inverse 2-D FFT is done as two 1-D passes along contiguous rows: torch's irfft2 runs its
        # column pass with a stride and takes twice as long. So products live transposed (P, K, Wr, H).
        prod_t = torch.empty(P, K, Wr, H, dtype=torch.complex64, device=self.device)
        cols_t = torch.empty_like(prod_t)
        cols = torch.empty(P, K, H, Wr, dtype=torch.complex64, device=self.device)
        g = torch.empty(P, K, H, W, device=self.device)
        growth = torch.empty(P, C, H * W, device=self.device)
        rows = torch.empty(P, H, 3, device=self.device)
        for _ in range(steps):
            kl.roll(a, shift, rolled)
            torch.fft.rfft2(rolled, out=spec)
            for c, lo, hi in self._blocks:
                torch.mul(spec[:, c:c + 1].transpose(-1, -2), spectra_t[:, lo:hi], out=prod_t[:, lo:hi])
            torch.fft.ifft(prod_t, dim=-1, out=cols_t)
            cols.copy_(cols_t.transpose(-1, -2))
            torch.fft.irfft(cols, n=W, dim=-1, out=g)
            g.sub_(offset).square_().neg_().exp2_()
            torch.baddbmm(bias[..., None], weights, g.view(P, K, H * W), out=growth)
            kl.update(rolled, growth.view(P, C, H, W), a, rows, shift, total, self.R, self.dt)
        return {"world": a.permute(0, 2, 3, 1).contiguous(), "shift": shift, "total_shift": total}

    def _render(self, arrays, params, size):
        # nearest upscale of the centred phenotype crop with half-pixel centres: two index_selects on every
        # engine (on a CPU 10x faster than a Taichi kernel per pixel; the same float32 index arithmetic)
        if size not in self._render_index:
            from workbench.kernels.torch_ca import centre_index

            o = (self.grid - self.phenotype) // 2
            self._render_index[size] = o + centre_index(self.phenotype, size, self.device)
        index = self._render_index[size]
        return arrays["world"].index_select(1, index).index_select(2, index)

    def _validate_state(self, arrays):
        w = arrays["world"]
        if (w < 0).any() or (w > 1).any():
            raise ValueError("lenia: state array 'world' must lie in [0, 1]")
