"""NAMM replayed on a full-cache prefill ("one-shot" NAMM), the engine of the kvpress press (workbench.namm.press),
kept free of kvpress so that it runs and is tested in the workbench's own environment.

    policy = saved.build(model.config); policy.reset()
    kept = replay(policy, layer, attentions, n_up=64)   # attentions (B, query heads, L, L) -> (B, H, N) indices
    install_layer_masks(model)                          # layers of different cache lengths, one shared mask

replay: step k feeds the policy the rows of queries k·n_up … (k+1)·n_up − 1 restricted to the slots it still
holds and renormalised over them: in layer 0 exactly the rows the evicting cache (workbench.namm.cache) gives
the policy, so layer 0 keeps the same tokens; deeper layers differ because the evicting run's hidden states
already went through evictions. The last L mod n_up tokens are kept unevaluated, as in the evicting cache.

install_layer_masks: NAMM layers keep different numbers of tokens, while transformers builds one attention mask
for all layers from layer 0's cache length. A forward pre-hook on every attention module gives a layer whose
cache is shorter or longer than the shared mask a mask of its own: every cached token visible, the new ones
causal (batch rows without padding, as kvpress' pipeline runs them). When lengths agree it does nothing. It is
installed once per model and stays (kvpress decodes after the press context has closed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from workbench.namm.policy import EvictionPolicy


@torch.inference_mode()
def replay(policy: EvictionPolicy, layer: int, attentions: torch.Tensor, n_up: int) -> torch.Tensor:
    """NAMM's eviction schedule over one layer's full prefill attention (B, query heads, L, L) -> the kept token
    indices (B, H, N), ascending (module doc). The policy must have been reset for this sequence."""
    b, heads, length, _ = attentions.shape
    h = policy.n_kv_heads
    g = heads // h
    attn = attentions.float().reshape(b, h, g, length, length)      # query heads grouped by their KV head
    kept = torch.empty(b, h, 0, dtype=torch.long, device=attn.device)
    evaluated = length - length % n_up
    for start in range(0, evaluated, n_up):
        new = torch.arange(start, start + n_up, device=attn.device).expand(b, h, n_up)
        slots = torch.cat([kept, new], dim=-1)                                      # (B, H, T)
        rows = attn[..., start: start + n_up, :]                                    # (B, H, G, n_up, L)
        rows = rows.gather(-1, slots[:, :, None, None, :].expand(-1, -1, g, n_up, -1))
        # each query head's softmax over the held slots, THEN the group mean (as the evicting cache sees them)
        rows = rows / rows.sum(-1, keepdim=True).clamp_min(torch.finfo(rows.dtype).tiny)
        sel = policy.update_kv(layer, rows.mean(2))
        kept = slots.gather(-1, sel.retained)
    tail = torch.arange(evaluated, length, device=attn.device).expand(b, h, length - evaluated)
    return torch.cat([kept, tail], dim=-1)


def _layer_mask_hook(module, args, kwargs):
    mask = kwargs.get("attention_mask")
    cache = kwargs.get("past_key_values")
    states = kwargs.get("hidden_states", args[0] if args else None)
    if mask is None or cache is None or states is None or mask.ndim != 4:
        return None
    q = states.shape[1]
    keys = cache.layers[module.layer_idx].get_seq_length() + q if module.layer_idx < len(cache.layers) else q
    if mask.shape[-1] == keys:
        return None
    new = torch.ones(q, q, dtype=torch.bool, device=mask.device).tril()
    visible = torch.cat([torch.ones(q, keys - q, dtype=torch.bool, device=mask.device), new], dim=-1)
    if mask.dtype == torch.bool:
        own = visible
    else:
        own = torch.zeros(q, keys, dtype=mask.dtype, device=mask.device).masked_fill(~visible,
                                                                                     torch.finfo(mask.dtype).min)
    kwargs["attention_mask"] = own.expand(mask.shape[0], 1, q, keys)
    return args, kwargs


def install_layer_masks(model: torch.nn.Module) -> None:
    """Give every attention layer a mask of its own cache's length (module doc); installed once per model."""
    if getattr(model, "_namm_layer_masks", False):
        return
    for module in model.modules():
        if type(module).__name__.endswith("Attention") and hasattr(module, "layer_idx"):
            module.register_forward_pre_hook(_layer_mask_hook, with_kwargs=True)
    model._namm_layer_masks = True
