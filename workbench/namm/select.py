"""Which cached tokens survive an eviction step (spec §3, "Selection"), as dense (..., H, N) index tensors.

    retained, keep_above = select_tokens(scores, valid)   # NAMM: score ≥ 0 qualifies, the same N for every head
    retained, keep_above = select_tokens(scores, valid, max_n=k)   # capped NAMM: at most k of them
    retained, keep_above = select_top(scores, valid, k)   # baselines: a fixed budget of the k best per head

Padding tokens score −∞ and the newest token +∞ (it is always kept). A KV cache is one dense tensor per layer
(B, H, N, D), so every head of a layer (and every batch row) keeps the same number N of slots: NAMM takes
N = the largest qualifying count, and a head with fewer qualifying tokens keeps its top-N by score; keep_above
says which kept tokens qualified (False = kept only to fill N). The "strict per head" variant
(NAMMPolicy(strict=True)) keeps the same slots but masks the fill tokens out of attention, so each head
effectively keeps only its qualifying tokens. Kept indices come back in ascending (original) order.

Ties in score are broken towards the newer token (higher index), so equal scores evict the oldest first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from workbench.namm.features import as_tensor

if TYPE_CHECKING:
    from numpy.typing import ArrayLike


def masked_scores(scores: torch.Tensor | ArrayLike, valid: torch.Tensor | ArrayLike | None = None) -> torch.Tensor:
    """Scores with padding at −∞ and the newest token (last index) at +∞, float32 (..., H, T)."""
    s = as_tensor(scores).clone()
    if valid is not None:
        keep = torch.broadcast_to(as_tensor(valid, torch.bool, s.device), s.shape)
        s = s.masked_fill(~keep, float("-inf"))
    s[..., -1] = float("inf")
    return s


def _top_n(masked: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of the n highest scores per row, ties to the newer token, returned in ascending index order."""
    # sort the reversed rows stably: among equal scores the one nearest the end (newest) comes first
    order = torch.sort(masked.flip(-1), dim=-1, descending=True, stable=True).indices[..., :n]
    idx = masked.shape[-1] - 1 - order
    return idx.sort(dim=-1).values


def select_tokens(scores: torch.Tensor | ArrayLike, valid: torch.Tensor | ArrayLike | None = None,
                  max_n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """NAMM's selection: scores (..., H, T), valid (T,) or broadcastable (False = padding) ->
    retained (..., H, N) ascending indices and keep_above (..., H, N) bool (score ≥ 0).

    N = max over every head and leading (batch) row of the number of qualifying tokens (score ≥ 0, the newest
    always qualifies), so N ≥ 1 and all rows stay one dense tensor. max_n caps N (the capped variant,
    NAMMPolicy(max_kept=…)): a head with more qualifying tokens keeps its max_n best by score."""
    masked = masked_scores(scores, valid)
    qualifies = masked >= 0
    n = int(qualifies.sum(-1).max())
    if max_n is not None:
        n = max(1, min(n, int(max_n)))
    retained = _top_n(masked, n)
    return retained, qualifies.gather(-1, retained)


def select_top(scores: torch.Tensor | ArrayLike, valid: torch.Tensor | ArrayLike | None = None,
               k: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed budget (the baselines): the min(k, T) best tokens per head (newest +∞, padding −∞) ->
    retained (..., H, N) ascending and keep_above (..., H, N) = the retained token is not padding."""
    masked = masked_scores(scores, valid)
    n = max(1, min(int(k), masked.shape[-1]))
    retained = _top_n(masked, n)
    return retained, masked.gather(-1, retained) > float("-inf")
