"""Running a causal LM with an evicting cache: chunked forward passes and greedy generation.

    cache = EvictionCache(model.config, NAMMPolicy(theta, *model_shape(model.config)), n_up=64)
    logits = forward(model, input_ids, cache)                 # (B, L, V); appends to the cache, evicting on the way
    logits = forward(model, input_ids, cache, first_chunks=memo)   # memo = FirstChunks(): a prompt's first n_up
                                                              # tokens run once for every policy scored on it
    out = generate(model, input_ids, policy, n_up=64, max_new_tokens=32)   # out.tokens, out.logits, out.cache

The policy must see exactly n_up new tokens per step, so `forward` splits its tokens at the multiples of n_up
(a prompt of 150 tokens with n_up = 64 runs as 64 + 64 + 22; the next 42 generated tokens complete the third
step). One transformers forward call per chunk; eager attention required (the hooks read its weights).
Input is left-padded like workbench.lm.evaluation: `attention_mask` (B, L) of 0 (padding) … 1; positions count
real tokens only, so a padded row gets the same positions, logits and evictions-by-position as alone.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from workbench.lm.models import cache_keyword
from workbench.namm.cache import EvictionCache, attached
from workbench.namm.policy import EvictionPolicy

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def _window(model) -> int | None:
    config = model.config.get_text_config(decoder=True)
    return getattr(config, "max_position_embeddings", None)


def _check_window(model, last_position: int) -> None:
    window = _window(model)
    if window is not None and last_position >= window:
        raise ValueError(f"the context needs positions up to {last_position}, longer than the model's window of "
                         f"{window} positions (max_position_embeddings): shorten the prompt or max_new_tokens")


class FirstChunks:
    """Prompts' first chunks, kept for the next policy scored on the same prompt.

    No policy is consulted before the cache first reaches n_up tokens (it runs at that chunk's end), so the
    forward of a prompt's first n_up tokens leaves the same keys, values and attention rows whatever the policy.
    NAMM training scores every candidate of a generation on the same prompts: with a memo each prompt's first
    chunk runs once per process instead of once per candidate, and what follows is bit-identical (the restored
    state is a copy of what that forward left). Keyed by the chunk's tokens, mask and positions, n_up, the
    model's dtype and device, torch's thread count and the logits asked for; one memo per model, whose weights
    must not change (a second model is refused). A chunk grows as n_up² (its attention rows): a SmolLM2-135M
    chunk is about 4.7 MB at n_up 64, 36 MB at 256 and 119 MB at 512. Past max_bytes a chunk is kept only in
    place of chunks idle for longer than its own last cycle (a key seen before): candidates score the same
    prompts in the same order, and the least recently used chunk of that cycle is always the next one asked
    for, so plain LRU would keep none once a generation's chunks pass max_bytes; chunks of earlier generations'
    prompts go as the new prompts come round a second time.
    """

    def __init__(self, max_bytes: int = 256 * 2**20):
        self.max_bytes = int(max_bytes)
        self.hits = self.misses = self.bytes = 0
        self._kept: OrderedDict[tuple, tuple[dict, torch.Tensor, int, int]] = OrderedDict()  # .., size, last use
        self._missed: OrderedDict[int, int] = OrderedDict()  # hash(key) -> the lookup it last missed at (4,096)
        self._ticks = 0  # lookups so far
        self._model: object | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._kept)

    def key(self, model: PreTrainedModel, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, n_up: int,
            keep: int) -> tuple:
        """The key of one chunk (refuses another model than the memo's first)."""
        if self._model is None:
            self._model = model
        elif self._model is not model:
            raise ValueError("a FirstChunks memo serves one model: make one per model")
        p = next(model.parameters())
        return (n_up, keep, str(p.dtype), str(p.device), torch.get_num_threads(), tuple(ids.shape),
                *(t.cpu().numpy().tobytes() for t in (ids, mask, positions)))

    def get(self, key: tuple) -> tuple[dict, torch.Tensor] | None:
        """(cache state, logits) of a kept chunk, or None (counted as a hit or a miss)."""
        with self._lock:
            self._ticks += 1
            found = self._kept.get(key)
            if found is None:
                self.misses += 1
                return None
            self.hits += 1
            self._kept[key] = (*found[:3], self._ticks)
            self._kept.move_to_end(key)
            return found[0], found[1]

    def put(self, key: tuple, state: dict, logits: torch.Tensor) -> None:
        """Keep a copy of a chunk's cache state (EvictionCache.snapshot) and logits (after its get missed): in room
        left under max_bytes, or in place of chunks unused for longer than this key's last cycle (class doc). Copied
        only when kept (a refused chunk is 119 MB at n_up 512)."""
        size = logits.nbytes + sum(t.nbytes for t in _tensors(state))
        with self._lock:
            if key in self._kept or size > self.max_bytes:
                return
            seen = self._missed.pop(hash(key), None)
            cycle = None if seen is None else self._ticks - seen
            stale = []
            room = self.max_bytes - self.bytes
            for k, (_, _, n, used) in self._kept.items():  # least recently used first
                if room >= size or cycle is None or self._ticks - used <= cycle:
                    break
                stale.append(k)
                room += n
            if room < size:  # keeping it would push out chunks of the cycle it belongs to: remember the miss
                self._missed[hash(key)] = self._ticks
                while len(self._missed) > 4096:
                    self._missed.popitem(last=False)
                return
            for k in stale:
                self.bytes -= self._kept.pop(k)[2]
            self._kept[key] = (copy.deepcopy(state), logits.clone(), size, self._ticks)
            self.bytes += size


def _tensors(value) -> list[torch.Tensor]:
    """Every tensor in a snapshot (nested lists, dicts and cache layers)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    if isinstance(value, list | tuple):
        return [t for v in value for t in _tensors(v)]
    if hasattr(value, "keys") and hasattr(value, "values"):  # a transformers cache layer
        return _tensors([value.keys, value.values])
    return []


@torch.inference_mode()
def forward(model: PreTrainedModel, input_ids: torch.Tensor, cache: EvictionCache,
            attention_mask: torch.Tensor | None = None, *, last_only: bool = False,
            first_chunks: FirstChunks | None = None) -> torch.Tensor:
    """Feed input_ids (B, L) after whatever the cache holds, evicting at every multiple of n_up; returns the
    logits (B, L, V) (or (B, 1, V) of the last token with last_only). attention_mask (B, L): 1 real, 0 padding.
    first_chunks: a memo of first chunks (FirstChunks) to take this prompt's from, or to keep it in."""
    ids = torch.as_tensor(input_ids)
    if ids.ndim != 2 or ids.shape[1] == 0:
        raise ValueError(f"input_ids must be (batch, tokens) with at least one token, got {tuple(ids.shape)}")
    dev = next(model.parameters()).device
    ids = ids.to(dev)
    b, n = ids.shape
    mask = torch.ones_like(ids) if attention_mask is None else torch.as_tensor(attention_mask).to(dev).long()
    if mask.shape != ids.shape:
        raise ValueError(f"attention_mask {tuple(mask.shape)} must match input_ids {tuple(ids.shape)}")
    if cache.next_position is None:
        cache.next_position = torch.zeros(b, dtype=torch.long, device=dev)
    elif cache.next_position.shape[0] != b:
        raise ValueError(f"the cache holds {cache.next_position.shape[0]} sequences, input_ids has {b} rows")
    # absolute positions: real tokens count on from the row's last one; padding borrows a neighbour's (unused)
    positions = (cache.next_position[:, None] + mask.cumsum(-1) - 1).clamp(min=0)
    _check_window(model, int(positions.max()))
    keyword = cache_keyword(type(model))
    dtype = next(model.parameters()).dtype
    out, start = [], 0
    with attached(model, cache):
        while start < n:
            size = min(n - start, cache.n_up - cache.total % cache.n_up)  # up to the next eviction boundary
            chunk = slice(start, start + size)
            keep = 1 if last_only else 0
            cache.begin(positions[:, chunk], mask[:, chunk])
            key = state = None
            if first_chunks is not None and cache.total == 0 and size == cache.n_up:
                key = first_chunks.key(model, ids[:, chunk], mask[:, chunk], positions[:, chunk], cache.n_up, keep)
                state = first_chunks.get(key)
            if state is not None:
                cache.restore(state[0])
                logits = state[1].clone()
            else:
                logits = model(input_ids=ids[:, chunk], position_ids=positions[:, chunk],
                               attention_mask=cache.layer_mask(0, dtype), use_cache=True,
                               logits_to_keep=keep, **{keyword: cache}).logits
                if key is not None:
                    first_chunks.put(key, cache.snapshot(), logits)
            cache.end()
            if not last_only or start + size == n:
                out.append(logits)
            start += size
    cache.next_position = cache.next_position + mask.sum(-1)
    return torch.cat(out, dim=1).float()


@dataclass
class Generation:
    """Greedy continuations: tokens (B, S) (rows that stopped are filled with eos), logits (B, S, V) of every
    generated token when asked for, and the cache (its log, sizes and the policy's state)."""

    tokens: torch.Tensor
    logits: torch.Tensor | None
    cache: EvictionCache


def generate(model: PreTrainedModel, input_ids: torch.Tensor, policy: EvictionPolicy, *, n_up: int, max_new_tokens: int,
             attention_mask: torch.Tensor | None = None, eos_id: int | None = None, record: str = "selection",
             return_logits: bool = False) -> Generation:
    """Greedy decoding of left-padded prompts with an evicting cache (a fresh EvictionCache around `policy`).
    Stops after max_new_tokens or when every row has produced eos_id."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    ids = torch.as_tensor(input_ids)
    if ids.ndim != 2 or ids.shape[1] == 0:  # one prompt is a batch of one: ids[None]
        raise ValueError(f"input_ids must be (batch, tokens) with at least one token, got {tuple(ids.shape)}; "
                         "for one prompt pass a batch of one, e.g. ids[None]")
    if attention_mask is not None:
        mask = torch.as_tensor(attention_mask)
        if mask.shape != ids.shape or bool((mask[:, 1:] < mask[:, :-1]).any()) or bool((mask[:, -1] == 0).any()):
            raise ValueError("attention_mask must be (B, L) and LEFT-padded (0 … 0 1 … 1, the last token real): "
                             "pad prompts on the left, as workbench.lm.evaluation.greedy does")
        lengths = mask.sum(-1)
    else:
        lengths = torch.full((ids.shape[0],), ids.shape[1])
    _check_window(model, int(lengths.max()) + max_new_tokens - 1)
    cache = EvictionCache(model.config, policy, n_up, record=record)
    tokens, kept_logits = [], []
    with attached(model, cache):  # once for the prompt and every token (forward's own is then a no-op)
        logits = forward(model, ids, cache, attention_mask, last_only=True)[:, -1]
        done = torch.zeros(ids.shape[0], dtype=torch.bool, device=logits.device)
        for step in range(max_new_tokens):
            nxt = logits.argmax(-1)
            if eos_id is not None:
                nxt = nxt.masked_fill(done, eos_id)
                done |= nxt == eos_id
            tokens.append(nxt)
            if return_logits:
                kept_logits.append(logits)
            if step == max_new_tokens - 1 or bool(done.all()):
                break
            logits = forward(model, nxt[:, None], cache, last_only=True)[:, -1]
    return Generation(torch.stack(tokens, 1), torch.stack(kept_logits, 1) if return_logits else None, cache)
