"""NAMM token features (spec §3, "Features"): what the BAM scorer sees of one cached token of one (layer, KV head).

Per update of n_new = F·16 new tokens, every cached token has an attention series: the 16 attention values it
received from the queries of its previous update, then the n_new values it received from the new queries. A
short-time Fourier transform (32-sample periodic Hann window, hop 16, no centring) turns the series into F
frames of 17 magnitudes; an exponential moving average over frames and updates (γ = 0.99 per token) folds them
into 17 numbers per token; those are normalised per feature with running statistics pooled over everything the
policy saw; an 8-number sinusoidal embedding of the token's age is PREPENDED: 25 numbers per token.

    age_embedding(ages)                  # (...,) -> (..., 8)
    stft_magnitudes(series)              # (..., 16 + n_new) -> (..., F, 17)
    ema_update(mag, n_new, prev=None)    # (..., F, T, 17) [+ (..., T - n_new, 17)] -> (..., T, 17)
    RunningStats                         # the pooled mean / population variance and the normalisation

Every function takes any leading dimensions (batch, heads) and returns float32 torch tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

HOP = 16                 # STFT hop = tokens per frame; n_up must be a multiple of it
N_FFT = 32               # STFT window: two hops, so every frame overlaps the previous one by 16 values
N_FREQ = N_FFT // 2 + 1  # 17 one-sided rfft bins
GAMMA = 0.99             # EMA decay per token (a = γ^16 per frame)
AGE_DIM = 8              # [sin(age·ω_0..3), cos(age·ω_0..3)]
AGE_MAX_FREQ = 50000.0   # ω_k = 50000^(−k/4)
FEATURE_DIM = AGE_DIM + N_FREQ  # 25: [age embedding, normalised EMA]
STD_FLOOR = 1e-7         # x̂ = (x − μ) / max(√var, 1e-7)


def as_tensor(x, dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> torch.Tensor:
    """A torch tensor of `dtype` from a tensor, NumPy array or nested list (no copy when nothing changes)."""
    if isinstance(x, torch.Tensor):
        return x.to(dtype=dtype, device=device if device is not None else x.device)
    return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)


def age_embedding(ages: torch.Tensor | ArrayLike) -> torch.Tensor:
    """Sinusoidal embedding of token ages: (...,) -> (..., 8) = [sin(age·ω_0..3), cos(age·ω_0..3)],
    ω_k = 50000^(−k/4). Age = position of the newest cached token − position of the token (original absolute
    positions), so the newest token has age 0. Computed in float64 (ages reach the thousands), returned float32."""
    ages = as_tensor(ages, torch.float64)
    omega = AGE_MAX_FREQ ** (-torch.arange(AGE_DIM // 2, dtype=torch.float64, device=ages.device) / (AGE_DIM // 2))
    angle = ages[..., None] * omega
    return torch.cat([angle.sin(), angle.cos()], dim=-1).to(torch.float32)


def hann_periodic(n: int = N_FFT, device: torch.device | None = None) -> torch.Tensor:
    """The periodic Hann window w[k] = 0.5 − 0.5·cos(2πk/n) (torch.hann_window(n, periodic=True))."""
    return torch.hann_window(n, periodic=True, dtype=torch.float32, device=device)


def stft_magnitudes(series: torch.Tensor | ArrayLike) -> torch.Tensor:
    """|rfft(hann_periodic(32) ⊙ frame)| of every frame of attention series: (..., 16 + n_new) -> (..., F, 17).

    The series of a token is [16 values carried from its previous update, n_new new values]; frame f = 0 … F−1
    (F = n_new/16) covers positions 16f … 16f + 31, so the last frame ends at the newest query. Unnormalised
    magnitudes, one-sided (17 bins), no centring or padding."""
    series = as_tensor(series)
    n_new = series.shape[-1] - HOP
    if n_new <= 0 or n_new % HOP:
        raise ValueError(f"an attention series holds {HOP} carried values plus n_new new ones, n_new a positive "
                         f"multiple of {HOP}; got length {series.shape[-1]}: give 16 + 16·F values per token")
    frames = series.unfold(-1, N_FFT, HOP)  # (..., F, 32), frame f = series[16f : 16f + 32]
    return torch.fft.rfft(frames * hann_periodic(device=series.device), dim=-1).abs()


def frame_weights(n_frames: int, gamma: float = GAMMA, device: torch.device | None = None) -> torch.Tensor:
    """EMA weight of frame f of an update: a^(F−1−f)·(1 − a), a = γ^16 (the newest frame weighs 1 − a)."""
    a = gamma ** HOP
    exponents = torch.arange(n_frames - 1, -1, -1, dtype=torch.float64, device=device)
    return ((a ** exponents) * (1 - a)).to(torch.float32)


def new_token_mask(n_frames: int, n_tokens: int, n_new: int, device: torch.device | None = None) -> torch.Tensor:
    """m (F, T): 1 for the T − n_new old tokens; the new token of in-chunk index j counts in frame f iff
    ⌊j/16⌋ ≤ f (earlier frames only hold queries before it, whose attention to it is causally zero)."""
    mask = torch.ones(n_frames, n_tokens, dtype=torch.float32, device=device)
    j = torch.arange(n_new, device=device)
    f = torch.arange(n_frames, device=device)
    mask[:, n_tokens - n_new:] = ((j[None, :] // HOP) <= f[:, None]).float()
    return mask


def ema_update(mag: torch.Tensor | ArrayLike, n_new: int, prev: torch.Tensor | ArrayLike | None = None,
               gamma: float = GAMMA) -> torch.Tensor:
    """The EMA of the spectrogram after one update: (..., F, T, 17), the last n_new = 16F tokens new -> (..., T, 17).

        EMA_new[t] = Σ_f a^(F−1−f)·(1 − a)·m_f[t]·mag[f, t] + γ^n_new·EMA_old[t]   (a = γ^16)

    The old term only for the T − n_new tokens already cached (prev: (..., T − n_new, 17), gathered at the
    surviving tokens; None on a new sequence: no old term). No bias correction."""
    mag = as_tensor(mag)
    n_frames, n_tokens = mag.shape[-3], mag.shape[-2]
    if n_new != HOP * n_frames or n_new > n_tokens:
        raise ValueError(f"ema_update: {n_frames} frames come from n_new = {HOP * n_frames} new tokens "
                         f"(≤ T = {n_tokens}), got n_new = {n_new}: pass the number of new tokens of this update")
    w = frame_weights(n_frames, gamma, mag.device)[:, None] * new_token_mask(n_frames, n_tokens, n_new, mag.device)
    ema = (w[..., None] * mag).sum(dim=-3)  # (..., T, 17)
    if prev is not None:
        prev = as_tensor(prev, device=mag.device)
        n_old = n_tokens - n_new
        if prev.shape[-2] != n_old:
            raise ValueError(f"ema_update: prev holds {prev.shape[-2]} tokens but T − n_new = {n_old} are old: "
                             "gather the previous EMA at the tokens that survived the last eviction")
        ema = torch.cat([ema[..., :n_old, :] + (gamma ** n_new) * prev, ema[..., n_old:, :]], dim=-2)
    return ema


@dataclass
class RunningStats:
    """Per-feature mean and POPULATION variance pooled over every value merged so far (batch rows, KV heads,
    valid tokens and all layers: one shared buffer, merged update after update, layer after layer).

    `merge` folds in one update (Chan et al.'s pairwise formula, float64, so the result equals the statistics
    of all merged values at once); `normalise` gives x̂ = (x − μ)/max(√var, 1e-7). The policy merges an update
    BEFORE normalising it, so each update is normalised with statistics that already include itself."""

    mean: torch.Tensor | None = None   # (17,) float64
    var: torch.Tensor | None = None    # (17,) float64
    count: int = 0

    def merge(self, values: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        """Fold in values (..., 17), counting only the positions where `valid` (broadcast to values[..., 0]) holds."""
        x = values.detach().to(torch.float64).reshape(-1, values.shape[-1])
        if valid is not None:
            keep = torch.broadcast_to(valid.to(torch.bool), values.shape[:-1]).reshape(-1)
            x = x[keep]
        n = x.shape[0]
        if n == 0:
            return
        mean = x.mean(0)
        var = ((x - mean) ** 2).mean(0)
        if self.mean is None or self.count == 0:
            self.mean, self.var, self.count = mean, var, n
            return
        total = self.count + n
        wa, wb = self.count / total, n / total
        delta = mean - self.mean.to(mean.device)
        self.var = wa * self.var.to(mean.device) + wb * var + wa * wb * delta ** 2
        self.mean = wa * self.mean.to(mean.device) + wb * mean
        self.count = total

    def normalise(self, values: torch.Tensor) -> torch.Tensor:
        """(x − μ)/max(√var, 1e-7) per feature, float32."""
        if self.mean is None:
            raise ValueError("no statistics yet: merge at least one update, or give frozen stats=(mean, var)")
        mean = self.mean.to(device=values.device, dtype=torch.float32)
        std = self.var.to(device=values.device).sqrt().clamp_min(STD_FLOOR).to(torch.float32)
        return (values - mean) / std

    @classmethod
    def frozen(cls, mean: torch.Tensor | ArrayLike, var: torch.Tensor | ArrayLike, count: int = 0) -> RunningStats:
        """Fixed statistics (saved with a policy after its first evaluation; `count` is informative only)."""
        mean, var = as_tensor(mean, torch.float64).reshape(-1), as_tensor(var, torch.float64).reshape(-1)
        if mean.shape != (N_FREQ,) or var.shape != (N_FREQ,):
            raise ValueError(f"stats must be (mean, var) with {N_FREQ} numbers each (one per STFT bin), got "
                             f"{tuple(mean.shape)} and {tuple(var.shape)}: pass policy.stats of a policy that "
                             "collected them")
        if bool((var < 0).any()) or not bool(torch.isfinite(mean).all() and torch.isfinite(var).all()):
            raise ValueError("stats must be finite with var ≥ 0: pass policy.stats of a policy that collected them")
        return cls(mean=mean, var=var, count=int(count))
