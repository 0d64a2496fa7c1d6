"""Flow-Lenia (CAX's FlowLenia, `flow_lenia`): Lenia whose growth moves mass instead of creating it
(asal-more.md §6).

Kernels, genotype (θ ∈ ℝ^3117, decode to m, s, h, cells) and the world built from the cells are ASAL Lenia's
(this class extends workbench.simulations.lenia.Lenia); the step replaces Lenia's clipped update with the flow
and reintegration tracking, so total mass is conserved and values may exceed 1. No recentring, no initial step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from workbench.kernels.device import ieee_convolutions
from workbench.kernels.runtime import ensure_taichi
from workbench.simulations.base import Deterministic, check_positive
from workbench.simulations.lenia import Lenia, kernel_fields, load_pattern


class FlowLenia(Deterministic, Lenia):
    """Flow-Lenia on the Lenia pattern's kernels; state "world" (grid, grid, 3), mass ≥ 0."""

    name = "flow_lenia"

    def __init__(self, grid: int = 128, cells: int = 32, pattern: str | Path | dict = "5N7KKM", T: float = 10.0,
                 theta_a: float = 1.0, n: float = 2.0, dd: int = 5, sigma: float = 0.65,
                 device: str | torch.device | None = None, engine: str | None = None):
        super().__init__(grid=grid, cells=cells, phenotype=grid, pattern=pattern, device=device, engine=engine)
        for key, val in (("T", T), ("theta_a", theta_a), ("n", n), ("sigma", sigma)):
            if not (math.isfinite(val) and val > 0):
                raise ValueError(f"{key} must be a positive number, got {val!r}")
        self.dd = check_positive("dd", dd)
        if sigma >= dd:
            raise ValueError(f"sigma ({sigma}) must be below dd ({dd})")
        if self.channels > 4:  # kernels/flow_lenia.py MAX_CHANNELS
            raise ValueError(f"flow_lenia runs patterns of at most 4 channels, this one has {self.channels}")
        if 2 * (2 * dd) + 1 > self.grid:
            raise ValueError(f"the reintegration window (dd = {dd}) does not fit in the grid ({self.grid})")
        self.T, self.dt = float(T), 1.0 / float(T)  # CAX's example: T = 10, not the pattern's T
        self.theta_a, self.n, self.sigma = float(theta_a), float(n), float(sigma)
        self.state_shapes = {"world": (self.grid, self.grid, self.channels)}
        self.state_dtypes = {"world": torch.float32}
        # Lenia's kernel spectra, transposed as Lenia's torch path keeps them (K, W/2 + 1, H), on any engine
        pat = load_pattern(pattern)
        K = np.fft.ifftshift(kernel_fields(pat, self.grid), axes=(-2, -1))[self._order.numpy()]
        fK = np.fft.rfft2(K).astype(np.complex64)
        self.fK_t = torch.from_numpy(np.ascontiguousarray(fK.transpose(0, 2, 1))).to(self.device)

    def _init(self, params, seeds: Sequence[int]):
        return {"world": self.world_from_cells(params["cells"])}  # frame 0 is the world itself

    def bytes_per_simulation(self) -> int:
        """Working memory one simulation of a step needs on the device: 4·(5·K + 6·C)·grid² bytes, five float32
        grids per kernel and six per channel (an estimate)."""
        H = W = self.grid
        return 4 * (self.n_kernels * H * W * 5 + self.channels * H * W * 6)

    def _growth_terms(self, params, C: int):
        """(scale, offset, weight): U_k·scale_k − offset_k = (U_k − m_k)·√(log2 e / 2)/s_k, so that the growth's
        Gaussian exp(−(U_k − m_k)²/(2s_k²)) is 2^(−d²) (as in Lenia's step); weight (P, C, K) = h_k in row c1_k."""
        m, s, h = (params[k][:, self._order] for k in ("m", "s", "h"))
        scale = (math.sqrt(math.log2(math.e) / 2.0) / s.double()).float()
        onehot = torch.nn.functional.one_hot(self.c1.long(), C).T.to(h)  # (C, K)
        return scale, (m * scale).contiguous(), (onehot[None] * h[:, None, :]).contiguous()

    def _potentials(self, a: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """U_k·scale_k (P, K, H, W) with U_k = K_k ⊛ A[c0_k], by FFT as Lenia's step (spectra stored transposed, the
        inverse as two 1-D passes along contiguous rows)."""
        P, C, H, W = a.shape
        K, Wr = self.n_kernels, W // 2 + 1
        spectra_t = self.fK_t[None] * scale[..., None, None]
        spec = torch.fft.rfft2(a)
        prod_t = torch.empty(P, K, Wr, H, dtype=torch.complex64, device=a.device)
        for c, lo, hi in self._blocks:
            torch.mul(spec[:, c:c + 1].transpose(-1, -2), spectra_t[:, lo:hi], out=prod_t[:, lo:hi])
        cols = torch.fft.ifft(prod_t, dim=-1).transpose(-1, -2)
        return torch.fft.irfft(cols, n=W, dim=-1)

    def _affinity(self, a: torch.Tensor, params) -> torch.Tensor:
        """Ū (P, C, H, W): Σ over kernels into channel c1_k of h_k·(2·exp(−(U_k − m_k)²/(2s_k²)) − 1), as tensor
        algebra (the Taichi path fuses this into kernels/flow_lenia.py `affinity`)."""
        P, C, H, W = a.shape
        scale, offset, weight = self._growth_terms(params, C)
        g = self._potentials(a, scale)
        g.sub_(offset[..., None, None]).square_().neg_().exp2_()
        bias = -weight.sum(-1)
        return torch.baddbmm(bias[..., None], 2.0 * weight, g.reshape(P, self.n_kernels, H * W)).view(P, C, H, W)

    def _step(self, arrays, params, steps):
        a = arrays["world"].permute(0, 3, 1, 2).contiguous()
        if self.engine == "triton" or self.device.type != "cpu":
            for _ in range(steps):
                a = self._step_torch(a, params)
            return {"world": a.permute(0, 2, 3, 1).contiguous()}
        from workbench.kernels import flow_lenia as kf

        ensure_taichi(self.device)
        C = a.shape[1]
        ty, tx, out = torch.empty_like(a), torch.empty_like(a), torch.empty_like(a)
        lim = self.dd - self.sigma
        reach = int(1 + 2 * self.sigma) + 1  # cells a side that a source's square can overlap
        scale, offset, weight = self._growth_terms(params, C)
        ubar, total = torch.empty_like(a), torch.empty_like(a[:, :1])
        for _ in range(steps):
            kf.affinity(self._potentials(a, scale).contiguous(), offset, weight, ubar, a, total)
            kf.targets(a, ubar, total, ty, tx, self.dt, self.theta_a, self.n, lim)
            kf.reintegrate(a, ty, tx, out, self.sigma, reach)
            a, out = out, a
        return {"world": a.permute(0, 2, 3, 1).contiguous()}

    def _step_torch(self, a: torch.Tensor, params) -> torch.Tensor:
        """The step as tensor algebra (GPUs): the same math as the Taichi kernels, one shifted copy per offset."""
        ubar = self._affinity(a, params)
        sobel = a.new_tensor([[1.0, 2.0, 1.0]])
        ky = torch.cat([-sobel, torch.zeros_like(sobel), sobel])[None, None]  # rows y−1, y, y+1
        kx = ky.transpose(-1, -2).contiguous()

        def grad(f):  # zero-padded cross-correlation per channel
            flat = f.reshape(-1, 1, *f.shape[-2:])
            with ieee_convolutions():  # TF32 (torch's default for cuDNN) moves a step by 5e-4
                return (torch.nn.functional.conv2d(flat, ky, padding=1).view_as(f),
                        torch.nn.functional.conv2d(flat, kx, padding=1).view_as(f))

        uy, ux = grad(ubar)
        sy, sx = grad(a.sum(1, keepdim=True))
        alpha = (a / self.theta_a).pow(self.n).clamp(0, 1)
        lim = self.dd - self.sigma
        ty = (self.dt * (uy * (1 - alpha) - sy * alpha)).clamp(-lim, lim)
        tx = (self.dt * (ux * (1 - alpha) - sx * alpha)).clamp(-lim, lim)
        out = torch.zeros_like(a)
        cap, dd = min(1.0, 2 * self.sigma), self.dd
        H, W = a.shape[-2:]
        # wrapped by dd on each side once; then f[p + (oy, ox)] is a view for each offset of the window
        pa, py, px = (torch.nn.functional.pad(f, (dd, dd, dd, dd), mode="circular") for f in (a, ty, tx))
        for oy in range(-dd, dd + 1):
            for ox in range(-dd, dd + 1):
                at = (..., slice(dd + oy, dd + oy + H), slice(dd + ox, dd + ox + W))
                wy = (0.5 + self.sigma - (oy + py[at]).abs()).clamp_(0, cap)
                wx = (0.5 + self.sigma - (ox + px[at]).abs()).clamp_(0, cap)
                out += pa[at] * wy * wx
        return out / (4 * self.sigma ** 2)

    def _render(self, arrays, params, size):
        """The whole torus, clipped to [0, 1], nearest-resized with half-pixel centres (two index_selects on every
        engine: on a CPU 3-6x faster than a Taichi kernel per pixel)."""
        from workbench.kernels.torch_ca import centre_index

        src = centre_index(self.grid, size, self.device)
        return arrays["world"].clamp(0, 1).index_select(1, src).index_select(2, src)

    def _validate_state(self, arrays):
        if (arrays["world"] < 0).any():
            raise ValueError("flow_lenia: state array 'world' must be non-negative (mass; values above 1 are fine)")
