"""Throughput of our tensor merges against mergekit's in-memory API on a SmolLM2-135M-shaped state dict.

GB/s counts the bytes of the merged fp32 output per second of wall time (inputs are 3× that). mergekit is
imported lazily; without it only our numbers are returned.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from workbench.merge.methods import merge_tensors
from workbench.merge.state import tensor_generator


def synthetic_llama(
    num_layers: int = 30,
    hidden: int = 576,
    intermediate: int = 1536,
    heads: int = 9,
    kv_heads: int = 3,
    vocab: int = 49152,
    *,
    seed: int = 0,
    scale: float = 0.02,
) -> dict[str, torch.Tensor]:
    """Random fp32 weights with Hugging Face Llama names and shapes (defaults: SmolLM2-135M)."""
    g = torch.Generator().manual_seed(seed)
    kv = hidden // heads * kv_heads
    shapes = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(num_layers):
        p = f"model.layers.{i}."
        shapes |= {
            p + "self_attn.q_proj.weight": (hidden, hidden),
            p + "self_attn.k_proj.weight": (kv, hidden),
            p + "self_attn.v_proj.weight": (kv, hidden),
            p + "self_attn.o_proj.weight": (hidden, hidden),
            p + "mlp.gate_proj.weight": (intermediate, hidden),
            p + "mlp.up_proj.weight": (intermediate, hidden),
            p + "mlp.down_proj.weight": (hidden, intermediate),
            p + "input_layernorm.weight": (hidden,),
            p + "post_attention_layernorm.weight": (hidden,),
        }
    shapes |= {"model.norm.weight": (hidden,), "lm_head.weight": (vocab, hidden)}
    return {k: torch.randn(s, generator=g) * scale for k, s in shapes.items()}


def _time(fn: Any, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_merge_tensors(
    num_layers: int = 30,
    *,
    methods: tuple[str, ...] = ("ties", "dare_ties"),
    density: float = 0.5,
    repeats: int = 1,
    device: str = "cpu",
    seed: int = 0,
    vocab: int = 49152,
) -> dict[str, Any]:
    """Merge base + 2 experts tensor by tensor with ours and mergekit; best-of-`repeats` GB/s per method
    (weights 0.6/0.4, the given density, mergekit's defaults otherwise)."""
    base = synthetic_llama(num_layers, vocab=vocab, seed=seed)
    experts = [{k: v + torch.randn_like(v) * 0.002 for k, v in base.items()} for _ in range(2)]
    groups = [[base[k].to(device), experts[0][k].to(device), experts[1][k].to(device)] for k in base]
    out_bytes = sum(v.numel() * 4 for v in base.values())
    params = {"weight": [0.6, 0.4], "density": density}
    try:
        from mergekit.merge_methods.api import merge_tensors as mk_merge
    except ImportError:
        mk_merge = None

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def ours(method: str) -> None:
        for i, ts in enumerate(groups):
            # DARE masks are drawn on the CPU on every device (device-independent masks): part of the cost
            g = tensor_generator(seed, str(i)) if method.startswith("dare") else None
            merge_tensors(ts, method, parameters=params, base_index=0, generator=g)
        sync()

    def theirs(method: str) -> None:
        for ts in groups:
            mk_merge(ts, method, parameters=params, base_index=0)
        sync()

    result: dict[str, Any] = {
        "num_layers": num_layers,
        "output_gb": out_bytes / 1e9,
        "device": device,
        "threads": torch.get_num_threads(),
    }
    for method in methods:
        entry = {"ours_gbps": out_bytes / 1e9 / _time(lambda m=method: ours(m), repeats)}
        if mk_merge is not None:
            entry["mergekit_gbps"] = out_bytes / 1e9 / _time(lambda m=method: theirs(m), repeats)
            entry["ratio"] = entry["ours_gbps"] / entry["mergekit_gbps"]
        result[method] = entry
    return result
