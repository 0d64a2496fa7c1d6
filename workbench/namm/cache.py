"""An evicting KV cache for Hugging Face causal LMs with eager attention (Llama family, GQA included).

    cache = EvictionCache(model.config, policy, n_up=64)     # any EvictionPolicy: NAMM or a baseline
    logits = forward(model, input_ids, cache)                # workbench.namm.driver: chunked at n_up boundaries
    cache.log                                                # per eviction step and layer: what each head kept

How it plugs into transformers (5.x), without touching the model's code:
  * The cache is a `transformers.Cache` of plain DynamicLayers: keys are stored ALREADY ROTATED (RoPE applied at
    their true absolute position), so dropping slots never changes a surviving key. New tokens get their true
    absolute positions through `position_ids` (the cache counts them per batch row), never their slot index.
  * Two hooks per attention module (`attached(model, cache)`): a forward PRE-hook replaces the attention mask with
    this layer's own 4-D mask (layers keep different numbers of slots, heads may mask different slots), and a
    forward hook takes the post-softmax attention weights that eager attention returns, averages each KV head's
    query group and buffers the rows.
  * Every time the number of processed slots (padded prompt + generated tokens) reaches a multiple of n_up, the
    policy runs on the n_up buffered rows of every layer (layer after layer) and the cache keeps, per layer, the
    same number N of slots on every head: keys/values stay one dense (B, H, N, D) tensor. Rows buffered before
    the cache grew are zero-padded on the right: a query never attends to later tokens.

Batches are left-padded (positions count real tokens only, as workbench.lm.evaluation does); padding slots stay
masked, and so do the fill slots of the "strict per head" variant.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from workbench.lm.hf import transformers_imported
from workbench.namm.features import HOP
from workbench.namm.policy import EvictionPolicy, Selection

transformers_imported()  # the first import of transformers under one lock (pages import this module on threads)
from transformers.cache_utils import Cache, DynamicLayer  # noqa: E402

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel

RECORDS = ("none", "selection", "full")


def check_n_up(n_up: int, name: str = "n_up") -> int:
    """n_up as an int, or one clear error naming it `name` (e.g. the CLI's --n-up; the STFT hop is 16 tokens)."""
    if isinstance(n_up, bool) or not isinstance(n_up, int) or n_up < HOP or n_up % HOP:
        raise ValueError(f"{name} (tokens between eviction steps) must be a positive multiple of {HOP}, got {n_up!r}: "
                         "use e.g. 32, 64 or 128 (the reference uses 512)")
    return n_up


def model_shape(config: PretrainedConfig) -> tuple[int, int, int]:
    """(layers, KV heads, GQA group) of a decoder config."""
    config = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    if heads % kv:
        raise ValueError(f"{heads} attention heads do not split into {kv} KV heads")
    return config.num_hidden_layers, kv, heads // kv


def _check_full_attention(config) -> None:
    transformers_imported()  # the first import of transformers under one lock
    from transformers.cache_utils import get_layer_types_and_kwargs

    config = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    try:
        types, _ = get_layer_types_and_kwargs(config)
    except Exception:  # older configs without per-layer information: plain full attention
        return
    other = sorted({t for t in types if t != "full_attention"})
    if other:
        raise ValueError(f"this model has {other} layers; NAMM eviction needs full attention in every layer "
                         "(a Llama-family model such as SmolLM2 or the zoo's models)")


@dataclass
class EvictionStep:
    """What one layer kept at one eviction step (tensors (B, H, ·); see policy.Selection for the fields)."""

    step: int                 # slots processed when the policy ran (a multiple of n_up)
    selection: Selection

    @property
    def layer(self) -> int:
        """The layer this step is of (its selection's)."""
        return self.selection.layer

    @property
    def positions(self) -> torch.Tensor:
        """(B, H, N) original positions of the kept tokens."""
        return self.selection.positions

    @property
    def kept_to_fill(self) -> torch.Tensor:
        """(B, H, N) kept only because every head of the layer keeps the same N (score < 0)."""
        return self.selection.kept_to_fill

    @property
    def attended(self) -> torch.Tensor:
        """(B, H, N) the kept slot stays visible (False: padding, or a fill slot in the strict variant)."""
        return self.selection.attend


class EvictionCache(Cache):
    """A KV cache that lets an EvictionPolicy prune it every n_up tokens (module doc). One cache per batch of
    sequences: creating it resets the policy's sequence state (its statistics survive).

    record: "none" keeps no history, "selection" (default) one EvictionStep per step and layer, "full" also the
    NAMM feature vectors of every step (explorer views of spectrogram / EMA features)."""

    def __init__(self, config: PretrainedConfig, policy: EvictionPolicy, n_up: int, *, record: str = "selection"):
        if not isinstance(policy, EvictionPolicy):
            raise ValueError(f"policy must be an EvictionPolicy (NAMMPolicy, FullCache, RecentWindow, H2O), got "
                             f"{type(policy).__name__}")
        if record not in RECORDS:
            raise ValueError(f"record must be one of {RECORDS}, got {record!r}")
        _check_full_attention(config)
        self.n_layers, self.n_kv_heads, self.gqa_group = model_shape(config)
        super().__init__(layers=[DynamicLayer() for _ in range(self.n_layers)])
        policy.bind(self.n_layers, self.n_kv_heads, self.gqa_group)
        policy.reset()
        self.policy, self.n_up, self.record = policy, check_n_up(n_up), record
        self.total = 0                                      # slots processed: the eviction clock
        self.next_position: torch.Tensor | None = None      # (B,) next absolute position per row
        self.valid: list[torch.Tensor | None] = [None] * self.n_layers      # (B, H, T) bool: attended slots
        self.positions: list[torch.Tensor | None] = [None] * self.n_layers  # (B, H, T) long: original positions
        self._rows: list[list[torch.Tensor]] = [[] for _ in range(self.n_layers)]
        self._chunk: tuple[torch.Tensor, torch.Tensor] | None = None        # (positions, valid) (B, q) in flight
        # additive masks, kept so that a decoded token does not rebuild every layer's mask over all its slots:
        # per layer the cached slots' (B, query heads, 1, T) row, extended as slots come and rebuilt after an
        # eviction; per chunk the new tokens' own (B, query heads, q, q) block and their (…, 1, q) row
        self._bias: list[torch.Tensor | None] = [None] * self.n_layers
        self._chunk_masks: dict[torch.dtype, tuple[torch.Tensor, torch.Tensor]] = {}
        self._attached_to = None                                            # the model whose hooks feed it now
        self.log: list[EvictionStep] = []

    # ---- the forward pass of one chunk -------------------------------------------------------------------
    def begin(self, positions: torch.Tensor, valid: torch.Tensor) -> None:
        """Announce the q new tokens of the next forward: absolute positions and validity, both (B, q)."""
        q = positions.shape[-1]
        if (self.total % self.n_up) + q > self.n_up:
            raise ValueError(f"a chunk of {q} tokens after {self.total} crosses an eviction boundary (every "
                             f"{self.n_up}); feed tokens through workbench.namm.driver.forward, which splits them")
        self._chunk = (positions, valid.to(torch.bool))
        self._chunk_masks = {}

    def _additive(self, visible: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """(B, KV heads, …) bool -> (B, query heads, …) additive: 0 where visible, the dtype's minimum elsewhere."""
        visible = visible.repeat_interleave(self.gqa_group, dim=1)             # query head h·G + g -> KV head h
        return torch.zeros(visible.shape, dtype=dtype, device=visible.device).masked_fill(~visible,
                                                                                          torch.finfo(dtype).min)

    def _chunk_mask(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The chunk in flight's (block (B, Hq, q, q), row (B, Hq, 1, q)) in `dtype`, built once for all layers."""
        if dtype not in self._chunk_masks:
            _, valid_new = self._chunk
            b, q = valid_new.shape
            i = torch.arange(q, device=valid_new.device)
            new = (i[None, :] <= i[:, None])[None] & (valid_new[:, None, :] | (i[None, :] == i[:, None])[None])
            block = self._additive(new[:, None].expand(b, self.n_kv_heads, q, q), dtype)
            row = self._additive(valid_new[:, None, None, :].expand(b, self.n_kv_heads, 1, q), dtype)
            self._chunk_masks[dtype] = block, row
        return self._chunk_masks[dtype]

    def layer_mask(self, layer: int, dtype: torch.dtype) -> torch.Tensor:
        """Additive 4-D mask (B, query heads, q, T_cached + q) of `layer` for the chunk in flight: cached slots
        by their validity (per KV head), new tokens causally and only if real (a padding query sees itself, so no
        row is empty)."""
        block, _ = self._chunk_mask(dtype)
        if self.valid[layer] is None:
            return block
        bias = self._bias[layer]
        if bias is None or bias.dtype != dtype:  # after an eviction (or in another dtype): from the validity
            bias = self._bias[layer] = self._additive(self.valid[layer][:, :, None, :], dtype)
        return torch.cat([bias.expand(-1, -1, block.shape[2], -1), block], dim=-1)

    def record_attention(self, layer: int, weights: torch.Tensor) -> None:
        """Buffer a layer's post-softmax rows (B, query heads, q, T) as KV-head means; append the new slots."""
        positions, valid_new = self._chunk
        b, heads, q, t = weights.shape
        rows = weights.detach().float().reshape(b, self.n_kv_heads, self.gqa_group, q, t).mean(2)
        rows = rows * valid_new[:, None, :, None]                              # padding queries are not queries
        self._rows[layer].append(rows)
        new_pos = positions[:, None, :].expand(b, self.n_kv_heads, q)
        new_valid = valid_new[:, None, :].expand(b, self.n_kv_heads, q)
        if self.valid[layer] is None:
            self.valid[layer], self.positions[layer] = new_valid.clone(), new_pos.clone()
        else:
            self.valid[layer] = torch.cat([self.valid[layer], new_valid], dim=-1)
            self.positions[layer] = torch.cat([self.positions[layer], new_pos], dim=-1)
        bias = self._bias[layer]
        if bias is not None:  # the new slots join the layer's mask row (their block was this chunk's)
            self._bias[layer] = torch.cat([bias, self._chunk_mask(bias.dtype)[1]], dim=-1)

    def end(self) -> None:
        """The chunk's forward is done: advance the clock and run the policy on a multiple of n_up."""
        positions, _ = self._chunk
        self.total += positions.shape[-1]
        self._chunk, self._chunk_masks = None, {}
        if self.total % self.n_up == 0:
            self.evict()

    # ---- a prompt's first chunk, shared by policies (driver.FirstChunks) ---------------------------------------
    def snapshot(self) -> dict:
        """What the forward of the first chunk left (keys, values, validity, positions, attention rows), taken
        before end() first runs the policy: up to there no policy is consulted, so the state is the same whatever
        the policy. The cache's own objects, not a copy: whoever keeps it copies it (FirstChunks.put, only when it
        keeps it)."""
        if self._chunk is None or self.total != 0:
            raise ValueError("a snapshot is taken of the first chunk in flight (after its forward, before end())")
        return {"layers": self.layers, "valid": self.valid, "positions": self.positions, "rows": self._rows,
                "bias": self._bias}

    def restore(self, state: dict) -> None:
        """Take a snapshot's state (a copy of it) instead of running the first chunk's forward; begin() the same
        chunk first, end() it after."""
        if self._chunk is None or self.total != 0 or any(v is not None for v in self.valid):
            raise ValueError("a snapshot is restored into a fresh cache, between begin() and end() of its first chunk")
        state = copy.deepcopy(state)
        self.layers, self.valid, self.positions = state["layers"], state["valid"], state["positions"]
        self._rows, self._bias = state["rows"], state["bias"]

    # ---- eviction ------------------------------------------------------------------------------------------
    def evict(self) -> None:
        """Run the policy on every layer (in order) and keep the slots it retains."""
        for layer in range(self.n_layers):
            t = self.valid[layer].shape[-1]
            rows = torch.cat([torch.nn.functional.pad(r, (0, t - r.shape[-1])) for r in self._rows[layer]], dim=2)
            self._rows[layer] = []
            n_new = rows.shape[2]
            sel = self.policy.update_kv(layer, rows, positions=self.positions[layer][..., t - n_new:],
                                        valid=self.valid[layer])
            idx = sel.retained
            kv = self.layers[layer]
            gather = idx[..., None].expand(-1, -1, -1, kv.keys.shape[-1])
            kv.keys, kv.values = kv.keys.gather(2, gather), kv.values.gather(2, gather)
            self.valid[layer] = sel.attend
            self.positions[layer] = self.positions[layer].gather(-1, idx)
            self._bias[layer] = None  # rebuilt from the new validity by the next layer_mask
            if self.record != "none":
                self.log.append(EvictionStep(self.total, sel if self.record == "full" else sel.lean()))

    # ---- reports -------------------------------------------------------------------------------------------
    def kept(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(positions, attended) of the slots `layer` holds now, (B, H, T) each."""
        return self.positions[layer], self.valid[layer]

    def sizes(self) -> list[int]:
        """Slots per layer now (the same on every head)."""
        return [0 if p is None else int(p.shape[-1]) for p in self.positions]

    def steps(self, layer: int | None = None) -> list[EvictionStep]:
        """The recorded eviction steps, all layers or one."""
        return [s for s in self.log if layer is None or s.layer == layer]


def attention_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The self-attention module of every decoder layer, in layer order (modules named *Attention with a
    layer_idx, as in every Llama-family model of transformers)."""
    mods = [m for m in model.modules() if type(m).__name__.endswith("Attention") and hasattr(m, "layer_idx")]
    return sorted(mods, key=lambda m: m.layer_idx)


def check_model(model: PreTrainedModel) -> None:
    """One clear error for a model the eviction cache cannot drive.

    Args:
        model: a transformers causal LM (weights or a meta-device skeleton: only its config and modules are read).
    Raises:
        ValueError: its attention is not eager (NAMM reads the post-softmax weights, which only eager attention
            returns; the message says how to switch), or its attention modules with a layer_idx are not one per
            decoder layer, 0 … L − 1 (not a Llama-family decoder-only LM).
    """
    impl = getattr(model.config, "_attn_implementation", None)
    if impl != "eager":
        raise ValueError(f"NAMM reads the post-softmax attention weights, which only eager attention returns; this "
                         f"model runs {impl!r} attention: load it with attn_implementation='eager' "
                         "(from_pretrained(..., attn_implementation='eager')) or call "
                         "model.set_attn_implementation('eager')")
    n_layers, _, _ = model_shape(model.config)
    mods = attention_modules(model)
    if [m.layer_idx for m in mods] != list(range(n_layers)):
        raise ValueError(f"found {len(mods)} attention modules with a layer_idx for {n_layers} layers: NAMM needs "
                         "a decoder-only causal LM with one self-attention module per layer (Llama family)")


@contextmanager
def attached(model: PreTrainedModel, cache: EvictionCache) -> Iterator[EvictionCache]:
    """Install the mask pre-hook and the attention-recording hook on every attention module (removed after).
    Re-entrant: inside an outer `attached` of the same model and cache (generate holds one around all its tokens,
    so a decoded token does not search the model's modules and re-install 2 hooks per layer) it does nothing."""
    if cache._attached_to is model:
        yield cache
        return
    check_model(model)
    handles = []

    def pre_hook(module, args, kwargs):
        states = kwargs.get("hidden_states", args[0] if args else None)
        kwargs["attention_mask"] = cache.layer_mask(module.layer_idx, states.dtype)
        return args, kwargs

    def post_hook(module, args, kwargs, output):
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if not isinstance(weights, torch.Tensor):
            raise ValueError(f"{type(module).__name__} returned no attention weights: NAMM needs eager attention "
                             "(attn_implementation='eager')")
        cache.record_attention(module.layer_idx, weights)

    outer = cache._attached_to  # another model's hooks around this one: theirs again after
    try:
        for m in attention_modules(model):
            handles.append(m.register_forward_pre_hook(pre_hook, with_kwargs=True))
            handles.append(m.register_forward_hook(post_hook, with_kwargs=True))
        cache._attached_to = model
        yield cache
    finally:
        cache._attached_to = outer
        for h in handles:
            h.remove()
