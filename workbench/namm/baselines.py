"""Baseline eviction policies behind the same hook as NAMM (spec §3, "Baselines"), one small class each:

    FullCache()                        # keeps everything: the reference every score is normalised by
    RecentWindow(window, sinks=0)      # the `window` newest tokens plus the first `sinks` tokens of the sequence
    H2O(heavy, recent)                 # the `heavy` tokens with the most accumulated attention + the `recent` newest

They run on the same schedule as NAMM (every n_up tokens), so between two steps the cache grows by n_up: a
budget-K baseline holds between K and K + n_up tokens, like NAMM's cache after and before a step. Every head
keeps min(budget, T) slots (a dense cache); the newest token is always kept, padding never counts.
"""

from __future__ import annotations

import torch

from workbench.namm.policy import EvictionPolicy
from workbench.namm.select import select_top


def _budget(value: int, what: str, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{what} must be an integer ≥ {minimum}, got {value!r}")
    return value


class FullCache(EvictionPolicy):
    """Keep every token (no eviction); with it an EvictionCache behaves like transformers' DynamicCache."""

    name = "full"

    def _decide(self, layer, attn, positions, valid):
        b, h, _, t = attn.shape
        retained = torch.arange(t, device=attn.device).expand(b, h, t)
        return retained, valid.clone(), None, None


class RecentWindow(EvictionPolicy):
    """Keep the `window` most recent tokens (smallest age) and the `sinks` first tokens (positions 0 … sinks−1,
    "attention sinks"), i.e. at most window + sinks per head. window ≥ 1, sinks ≥ 0 (ValueError otherwise).
    **shape: EvictionPolicy's n_layers, n_kv_heads and gqa_group (the model's; left out, the EvictionCache
    it is given to binds them to its model's)."""

    name = "recent"

    def __init__(self, window: int, sinks: int = 0, **shape: int | None):
        self.window, self.sinks = _budget(window, "window"), _budget(sinks, "sinks", 0)
        super().__init__(**shape)

    def config(self) -> dict:
        """A JSON-able description: EvictionPolicy.config's, with `window` and `sinks`."""
        return {**super().config(), "window": self.window, "sinks": self.sinks}

    def _decide(self, layer, attn, positions, valid):
        age = (positions[..., -1:] - positions).float()
        score = (-age).masked_fill(positions < self.sinks, float("inf"))
        retained, keep = select_top(score, valid, self.window + self.sinks)
        return retained, keep, None, None


class H2O(EvictionPolicy):
    """Heavy-hitter oracle: every token accumulates the attention it receives (summed over queries, averaged
    over the query heads of its KV head, carried across steps); keep the `recent` newest tokens and, of the
    others, the `heavy` with the largest accumulated attention. heavy ≥ 0, recent ≥ 1 (ValueError otherwise).
    **shape: EvictionPolicy's n_layers, n_kv_heads and gqa_group, as RecentWindow takes them."""

    name = "h2o"

    def __init__(self, heavy: int, recent: int, **shape: int | None):
        self.heavy, self.recent = _budget(heavy, "heavy", 0), _budget(recent, "recent")
        super().__init__(**shape)

    def config(self) -> dict:
        """A JSON-able description: EvictionPolicy.config's, with `heavy` and `recent`."""
        return {**super().config(), "heavy": self.heavy, "recent": self.recent}

    def _reset_state(self) -> None:
        self._acc: dict[int, torch.Tensor] = {}  # (B, H, T) accumulated attention of the kept tokens

    def _decide(self, layer, attn, positions, valid):
        received = attn.sum(-2)                                    # (B, H, T) from this step's queries
        if layer in self._acc:
            old = self._acc[layer]
            received[..., : old.shape[-1]] += old
        age = positions[..., -1:] - positions
        score = received.masked_fill(age < self.recent, float("inf"))
        retained, keep = select_top(score, valid, self.heavy + self.recent)
        self._acc[layer] = received.gather(-1, retained)
        return retained, keep, received, None
