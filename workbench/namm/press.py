"""A trained NAMM as a kvpress press, so kvpress users can drop it into their pipelines (kvpress has no NAMM).

    from kvpress import KVPressTextGenerationPipeline      # needs kvpress (its own virtualenv: `make kvpress-peer`)
    from workbench.namm.press import NAMMPress
    press = NAMMPress("runs/<id>/policy.safetensors")      # or NAMMPress(load_policy(...)), or a run folder
    pipe(context, question=question, press=press)          # a model loaded with attn_implementation="eager"
    press.kept_fraction                                    # of the last context: slots kept / context tokens

kvpress compresses the context once, after its prefill, from the attention weights that eager attention returns
(B, query heads, L, L). NAMM evicts every n_up tokens DURING the prefill, and what it evicted changes what later
tokens attend; the press replays NAMM's schedule on the full-cache attention (workbench.namm.oneshot.replay:
exact in layer 0, the "one-shot" NAMM deeper). Every KV head keeps the same N slots per layer (the equal-N
variant, which kvpress' dense caches need; with a "strict" policy the tokens kept only to fill N stay visible
here). Layers keep different numbers of tokens, so the press gives every layer a mask of its own length
(workbench.namm.oneshot.install_layer_masks, installed once per model).

This module imports kvpress; nothing else in workbench.namm does, so the package works without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kvpress import BasePress

from workbench.namm.features import HOP
from workbench.namm.oneshot import install_layer_masks, replay
from workbench.namm.saved import SavedPolicy, load_policy


def _saved(policy) -> SavedPolicy:
    if isinstance(policy, SavedPolicy):
        return policy
    path = Path(policy)
    return load_policy(path / "policy.safetensors" if path.is_dir() else path)


@dataclass
class NAMMPress(BasePress):
    """kvpress press running a trained NAMM policy (module doc).

    Args:
        policy: a SavedPolicy, a policy file (policy.safetensors / .npz) or a namm run folder.
        n_up: tokens between eviction steps (default: the policy's own, else 64); a multiple of 16.
    """

    policy: object = None
    n_up: int | None = None
    kept_fraction: float | None = field(default=None, init=False)

    def __post_init__(self):
        if self.policy is None:
            raise ValueError("NAMMPress needs a policy: NAMMPress('runs/<id>/policy.safetensors')")
        self.saved = _saved(self.policy)
        self.n_up = int(self.n_up or self.saved.n_up or 64)
        if self.n_up < HOP or self.n_up % HOP:
            raise ValueError(f"n_up must be a positive multiple of {HOP}, got {self.n_up}")
        self._policy = None
        self._kept: list[float] = []

    def post_init_from_model(self, model) -> None:
        impl = getattr(model.config, "_attn_implementation", None)
        if impl != "eager":
            raise ValueError(f"NAMMPress reads attention weights, which only eager attention returns; the model "
                             f"runs {impl!r}: load it with attn_implementation='eager'")
        self._policy = self.saved.build(model.config)
        install_layer_masks(model)

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        if attentions is None:
            raise ValueError("NAMMPress got no attention weights: load the model with attn_implementation='eager'")
        layer = int(module.layer_idx)
        policy = self._policy
        if layer == 0:
            policy.reset()
            self._kept = []
        retained = replay(policy, layer, attentions, self.n_up)           # (B, H, N) token indices
        gather = retained[..., None].expand(-1, -1, -1, keys.shape[-1])
        self._kept.append(retained.shape[-1] / keys.shape[2])
        self.kept_fraction = sum(self._kept) / len(self._kept)
        return keys.gather(2, gather).contiguous(), values.gather(2, gather).contiguous()
