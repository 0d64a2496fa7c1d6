"""Eviction policies behind one hook, and NAMM's BAM policy (spec §3).

A policy sees, once per eviction step and per layer, the post-softmax attention rows of the queries that arrived
since its last step over ALL T tokens now cached, and answers which slots each KV head keeps:

    policy = NAMMPolicy(theta, n_layers, n_kv_heads, gqa_group, stats=None)   # stats=(mean, var): frozen
    retained = policy.update(layer, attn)   # attn (query heads, n_new, T) [or (B, query heads, n_new, T)]
                                            # -> (H, N) [or (B, H, N)] ascending indices into the T slots
    policy.last                             # the Selection of that step: keep_above, positions, scores, features
    policy.reset()                          # a new sequence (running statistics are kept)

The T slots are the N_prev tokens the layer kept at its previous step followed by the n_new new ones (the last
n_new slots). The policy carries per layer what it needs between steps, gathered at the surviving slots: the
original absolute positions, and for NAMM the last 16 attention values of every token and its EMA spectrogram.
With GQA (gqa_group G > 1) KV head h takes the mean of query heads h·G … h·G + G − 1.

Optional keywords: `positions` (the new tokens' absolute positions, broadcast to (B, H, n_new); default: the
next n_new integers after the tokens the layer has seen) and `valid` (False = padding, broadcast to (B, H, T);
default all True); the eviction cache passes both for left-padded batches.

Baselines (full cache, recent window + sinks, H2O) live in workbench.namm.baselines and share EvictionPolicy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from workbench.namm.features import (
    HOP,
    RunningStats,
    age_embedding,
    as_tensor,
    ema_update,
    stft_magnitudes,
)
from workbench.namm.scorer import bam_scores, check_theta, unpack_theta
from workbench.namm.select import select_tokens

if TYPE_CHECKING:
    from numpy.typing import ArrayLike


@dataclass
class Selection:
    """One eviction step of one layer; every tensor has the batch axis (B = 1 for unbatched calls)."""

    layer: int
    retained: torch.Tensor          # (B, H, N) long: kept slots, ascending indices into the T slots before the step
    keep_above: torch.Tensor        # (B, H, N) bool: qualified (NAMM: score ≥ 0); False = kept to fill N, or padding
    attend: torch.Tensor            # (B, H, N) bool: the slot stays visible to attention (False: padding, strict fill)
    positions: torch.Tensor         # (B, H, N) long: original absolute positions of the kept tokens
    positions_before: torch.Tensor  # (B, H, T) long: positions of all T slots before the step
    valid_before: torch.Tensor      # (B, H, T) bool: which of them were real (attended) tokens
    scores: torch.Tensor | None = None    # (B, H, T) raw scores (NAMM, H2O's accumulated attention)
    features: torch.Tensor | None = None  # (B, H, T, 25) NAMM's feature vectors

    @property
    def kept_to_fill(self) -> torch.Tensor:
        """(B, H, N) bool: real tokens that stayed only because their layer keeps the same N on every head."""
        return self.valid_before.gather(-1, self.retained) & ~self.keep_above

    def lean(self) -> Selection:
        """This selection without the (large) feature tensor."""
        return replace(self, features=None)


def _broadcast(x, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, what: str) -> torch.Tensor:
    t = as_tensor(x, dtype, device)
    try:
        return torch.broadcast_to(t, shape)
    except RuntimeError:
        raise ValueError(f"{what} of shape {tuple(t.shape)} does not broadcast to (B, H, ·) = {shape}; give "
                         f"(·,), (H, ·) or (B, 1, ·)") from None


class EvictionPolicy:
    """The one hook every eviction method implements (`_decide`); bookkeeping of positions is shared here.

    Subclasses set `name` and implement `_decide(layer, attn, positions, valid) -> (retained, keep_above, scores,
    features)` on KV-head rows attn (B, H, n_new, T), gathering their own per-layer state at `retained`."""

    name = "policy"
    strict = False  # True: slots kept only to fill N are masked out of attention

    def __init__(self, n_layers: int | None = None, n_kv_heads: int | None = None, gqa_group: int = 1):
        self.n_layers, self.n_kv_heads, self.gqa_group = None, None, 1
        if n_layers is not None or n_kv_heads is not None:
            self.bind(n_layers, n_kv_heads, gqa_group)
        self.reset()

    def bind(self, n_layers: int, n_kv_heads: int, gqa_group: int) -> None:
        """Fix the model's shape (the eviction cache calls this); a second, different shape is an error."""
        dims = (n_layers, n_kv_heads, gqa_group)
        if not all(isinstance(d, int) and d >= 1 for d in dims):
            raise ValueError(f"n_layers, n_kv_heads and gqa_group must be positive integers, got {dims}: read them "
                             "from the model config (num_hidden_layers, num_key_value_heads, "
                             "num_attention_heads // num_key_value_heads)")
        if self.n_layers is not None and (self.n_layers, self.n_kv_heads, self.gqa_group) != dims:
            raise ValueError(f"this policy was built for (layers, KV heads, group) = "
                             f"{(self.n_layers, self.n_kv_heads, self.gqa_group)}, the model has {dims}: "
                             "build one policy per model shape")
        self.n_layers, self.n_kv_heads, self.gqa_group = dims

    def reset(self) -> None:
        """Forget the sequence (a new prompt); learned or collected statistics survive."""
        self._positions: dict[int, torch.Tensor] = {}
        self._seen: dict[int, int] = {}
        self.last: Selection | None = None
        self._reset_state()

    def _reset_state(self) -> None:
        """Subclasses clear their per-sequence state here."""

    def config(self) -> dict:
        """A JSON-able description (for run stores and the explorer)."""
        return {"policy": self.name, "strict": self.strict}

    def update(self, layer: int, attn: torch.Tensor | ArrayLike, *, positions: torch.Tensor | ArrayLike | None = None,
               valid: torch.Tensor | ArrayLike | None = None) -> torch.Tensor:
        """Query-head attention rows (heads, n_new, T) or (B, heads, n_new, T) -> retained (H, N) or (B, H, N)."""
        attn = as_tensor(attn)
        unbatched = attn.ndim == 3
        if unbatched:
            attn = attn[None]
        if attn.ndim != 4:
            raise ValueError(f"attn must be (query heads, n_new, T) or (B, query heads, n_new, T), got "
                             f"{tuple(attn.shape)}")
        if self.n_kv_heads is None:
            raise ValueError("the policy does not know the model's heads yet: build it with n_layers, n_kv_heads "
                             "and gqa_group, or use it through EvictionCache")
        b, heads, n_new, t = attn.shape
        if heads != self.n_kv_heads * self.gqa_group:
            raise ValueError(f"attn has {heads} query heads, the policy expects n_kv_heads·gqa_group = "
                             f"{self.n_kv_heads}·{self.gqa_group}: pass every query head of the layer")
        # GQA: query heads h·G … h·G + G − 1 share KV head h (transformers' repeat_kv layout)
        attn_kv = attn.reshape(b, self.n_kv_heads, self.gqa_group, n_new, t).mean(2)
        retained = self.update_kv(layer, attn_kv, positions=positions, valid=valid).retained
        return retained[0] if unbatched else retained

    def update_kv(self, layer: int, attn: torch.Tensor, *, positions: torch.Tensor | ArrayLike | None = None,
                  valid: torch.Tensor | ArrayLike | None = None) -> Selection:
        """The hook on KV-head rows attn (B, H, n_new, T) (already averaged over each group) -> Selection."""
        if self.n_layers is not None and not 0 <= layer < self.n_layers:
            raise ValueError(f"layer {layer} is outside 0 … {self.n_layers - 1}")
        attn = as_tensor(attn)
        b, h, n_new, t = attn.shape
        if self.n_kv_heads is not None and h != self.n_kv_heads:
            raise ValueError(f"attn has {h} KV heads, the policy was built for {self.n_kv_heads}")
        prev = self._positions.get(layer)
        n_old = 0 if prev is None else prev.shape[-1]
        if n_old + n_new != t or (prev is not None and prev.shape[:2] != (b, h)):
            raise ValueError(f"layer {layer}: attn covers T = {t} tokens, but the policy kept {n_old} at its last "
                             f"step and {n_new} new queries arrived; the T slots must be the kept tokens followed "
                             "by the new ones (call policy.reset() before a new sequence)")
        dev = attn.device
        if positions is None:
            new_pos = self._seen.get(layer, 0) + torch.arange(n_new, device=dev)
        else:
            new_pos = positions
        new_pos = _broadcast(new_pos, (b, h, n_new), torch.long, dev, "positions")
        pos = new_pos if prev is None else torch.cat([prev.to(dev), new_pos], dim=-1)
        valid = (torch.ones(b, h, t, dtype=torch.bool, device=dev) if valid is None
                 else _broadcast(valid, (b, h, t), torch.bool, dev, "valid"))
        retained, keep_above, scores, features = self._decide(layer, attn.float(), pos, valid)
        attend = valid.gather(-1, retained)
        if self.strict:
            attend = attend & keep_above
        kept = pos.gather(-1, retained)
        self._positions[layer] = kept
        self._seen[layer] = self._seen.get(layer, 0) + n_new
        self.last = Selection(layer=layer, retained=retained, keep_above=keep_above, attend=attend,
                              positions=kept, positions_before=pos, valid_before=valid, scores=scores,
                              features=features)
        return self.last

    def _decide(self, layer: int, attn: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor):
        raise NotImplementedError


def _gather_tokens(x: torch.Tensor, retained: torch.Tensor) -> torch.Tensor:
    """x (B, H, T, C) at the retained slots (B, H, N) -> (B, H, N, C)."""
    return x.gather(2, retained[..., None].expand(-1, -1, -1, x.shape[-1]))


def check_max_kept(max_kept: float | None) -> float | None:
    """None (no cap) or a fraction in (0, 1], else one error naming --max-kept."""
    if max_kept is None:
        return None
    value = float(max_kept)
    if not (math.isfinite(value) and 0 < value <= 1):
        raise ValueError(f"--max-kept must be a fraction of the tokens seen in (0, 1], e.g. 0.5, got {max_kept!r}")
    return value


class NAMMPolicy(EvictionPolicy):
    """NAMM with the BAM scorer: features (spectrogram EMA + age) -> backward attention -> score ≥ 0 kept.

    theta: the 4172 BAM parameters (workbench.namm.scorer); stats: None collects the running normalisation
    statistics (merged at every update, pooled over all layers), (mean, var) freezes them (17 numbers each:
    `policy.stats` of the policy that collected them during the first evaluation). strict=True is the
    "strict per head" variant: tokens kept only to fill N are masked out of attention.

    max_kept (a fraction in (0, 1], None: no cap) is the capped variant, an extension beyond the paper: at each
    step a layer keeps at most ⌈max_kept · tokens it has seen⌉ slots, the best by score among those that
    qualify. It bounds the cache the way a press's compression ratio does (the paper's NAMM only pays for
    memory through training), so the learned scores can be compared with presses at one budget."""

    name = "namm"

    def __init__(self, theta: torch.Tensor | ArrayLike, n_layers: int, n_kv_heads: int, gqa_group: int,
                 stats: tuple[torch.Tensor | ArrayLike, torch.Tensor | ArrayLike] | None = None, *,
                 strict: bool = False, max_kept: float | None = None):
        self.theta = check_theta(theta).clone()
        self.params = unpack_theta(self.theta)
        self.collect = stats is None
        self.statistics = RunningStats() if stats is None else RunningStats.frozen(*stats)
        self.strict = bool(strict)
        self.max_kept = check_max_kept(max_kept)
        super().__init__(n_layers, n_kv_heads, gqa_group)

    @property
    def stats(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(mean, var) float32 (17,) each, to save with the policy; None before anything was collected."""
        s = self.statistics
        return None if s.mean is None else (s.mean.float().cpu(), s.var.float().cpu())

    def freeze(self) -> None:
        """Stop collecting: from now on every update is normalised with the statistics as they stand."""
        if self.statistics.mean is None:
            raise ValueError("nothing collected yet: run the policy over some prompts before freeze()")
        self.collect = False

    def config(self) -> dict:
        """A JSON-able description: EvictionPolicy.config's, with `collect_stats` and `max_kept`."""
        return {**super().config(), "collect_stats": self.collect, "max_kept": self.max_kept}

    def _reset_state(self) -> None:
        self._carry: dict[int, torch.Tensor] = {}  # (B, H, T, 16): last 16 attention values of every kept token
        self._ema: dict[int, torch.Tensor] = {}    # (B, H, T, 17): EMA spectrogram of every kept token

    def _decide(self, layer, attn, positions, valid):
        b, h, n_new, t = attn.shape
        if n_new % HOP:
            raise ValueError(f"NAMM updates take a multiple of {HOP} new tokens (n_up), got {n_new}")
        fresh = layer not in self._ema
        # 1. attention series per token: [16 carried values (zeros for new tokens), the n_new new values]
        carry = attn.new_zeros(b, h, t, HOP)
        if not fresh:
            carry[:, :, : t - n_new] = self._carry[layer]
        series = torch.cat([carry, attn.transpose(-1, -2)], dim=-1)            # (B, H, T, 16 + n_new)
        # 2.–3. STFT magnitudes per frame, folded into the EMA
        mag = stft_magnitudes(series).transpose(2, 3)                           # (B, H, F, T, 17)
        ema = ema_update(mag, n_new, prev=None if fresh else self._ema[layer])  # (B, H, T, 17)
        # 4. normalisation: this update is merged first, so it is normalised with statistics including itself
        if self.collect:
            self.statistics.merge(ema, valid)
        x_hat = self.statistics.normalise(ema)
        # 5. age embedding PREPENDED: [emb (8), x̂ (17)]
        age = positions[..., -1:] - positions
        features = torch.cat([age_embedding(age).to(attn.device), x_hat], dim=-1)
        scores = bam_scores(self.params, features, valid)
        cap = None if self.max_kept is None else math.ceil(self.max_kept * (self._seen.get(layer, 0) + n_new))
        retained, keep_above = select_tokens(scores, valid, max_n=cap)
        self._ema[layer] = _gather_tokens(ema, retained)
        self._carry[layer] = _gather_tokens(series[..., -HOP:], retained)
        return retained, keep_above, scores, features

