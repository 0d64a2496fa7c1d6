"""The REINFORCE objective that trains SVF experts (Transformer² §4, the reference's Reinforce module).

For a batch of B greedy rollouts y_j of prompts x_j with rewards r_j (+1 correct, −1 wrong):

    log π(y_j|x_j) = Σ_t log π_θ(y_{j,t} | x_j, y_{j,<t})                      (SUM over generated tokens)
    KL_j           = Σ_t Σ_v π_ref(v|·)·(log π_ref(v|·) − log π_θ(v|·))          (KL(π_ref‖π_θ), per token, summed)
    loss           = (1/B)·Σ_j [ −r_j·log π(y_j|x_j) + λ·KL_j ]                    (λ = kl_coeff, 0 by default)

Alignment: logits[b, t] is the distribution the model gave for token_ids[b, t] (the caller has already
shifted by one: for a sequence prompt+output, logits[:, len(prompt)−1 : −1] go with the output tokens).
Which positions count: every position whose token id is ≥ 0; a negative id (e.g. −100, Hugging Face's
ignored-label value) marks padding or prompt tokens. The optional `mask` (B, T), True = generated token,
does the same for callers that keep real ids everywhere; the two combine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from numpy.typing import ArrayLike


def _valid(token_ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    valid = token_ids >= 0
    if mask is not None:
        if tuple(mask.shape) != tuple(token_ids.shape):
            raise ValueError(f"mask must have the shape of token_ids {tuple(token_ids.shape)}, "
                             f"got {tuple(mask.shape)}")
        valid = valid & mask.to(device=token_ids.device, dtype=torch.bool)
    return valid


def token_logprobs(logits: torch.Tensor, token_ids: torch.Tensor, mask: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(log π of each token (B, T), 0 at ignored positions; the valid-position mask (B, T)). Log-softmax in
    float32 whatever the logits' dtype."""
    if logits.ndim != 3 or token_ids.ndim != 2 or tuple(logits.shape[:2]) != tuple(token_ids.shape):
        raise ValueError(f"logits must be (B, T, V) and token_ids (B, T) with the same B and T, got "
                         f"{tuple(logits.shape)} and {tuple(token_ids.shape)}")
    token_ids = token_ids.to(logits.device)
    valid = _valid(token_ids, mask)
    if bool((token_ids[valid] >= logits.shape[-1]).any()):
        raise ValueError(f"token ids must be below the vocabulary size {logits.shape[-1]}")
    logp = torch.log_softmax(logits.float(), dim=-1)
    picked = logp.gather(-1, token_ids.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return picked * valid, valid


def sequence_logprobs(logits: torch.Tensor, token_ids: torch.Tensor, mask: torch.Tensor | None = None
                      ) -> torch.Tensor:
    """log π(y|x) per row: the SUM of the valid tokens' log-probabilities, shape (B,)."""
    picked, _ = token_logprobs(logits, token_ids, mask)
    return picked.sum(-1)


def mean_token_logprobs(logits: torch.Tensor, token_ids: torch.Tensor, mask: torch.Tensor | None = None
                        ) -> torch.Tensor:
    """The MEAN log-probability per valid token of each row, shape (B,) (0 for a row without tokens): the
    per-shot log-likelihood that CEM's tie-break averages over the correctly answered shots."""
    picked, valid = token_logprobs(logits, token_ids, mask)
    return picked.sum(-1) / valid.sum(-1).clamp(min=1)


def kl_ref(logits: torch.Tensor, ref_logits: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """KL(π_ref‖π_θ) per row, summed over the valid positions and the vocabulary, shape (B,)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    ref = torch.log_softmax(ref_logits.detach().to(logp.device, torch.float32), dim=-1)
    per_token = (ref.exp() * (ref - logp)).sum(-1)
    return (per_token * valid).sum(-1)


def reinforce_loss(logits: torch.Tensor, token_ids: torch.Tensor, rewards: torch.Tensor | ArrayLike,
                   ref_logits: torch.Tensor | None = None, kl_coeff: float = 0.0,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """The scalar REINFORCE loss (1/B)·Σ_j[−r_j·log π(y_j|x_j) + kl_coeff·KL_j] (see the module docstring).

    logits (B, T, V) of the policy, differentiable; token_ids (B, T), negative = ignored; rewards (B,) finite
    (a tensor, an array or a list); ref_logits (B, T, V) of the reference (base) model, needed only when
    kl_coeff > 0 (no gradient flows into them); mask (B, T) optional, True = generated token."""
    picked, valid = token_logprobs(logits, token_ids, mask)
    r = torch.as_tensor(rewards, dtype=torch.float32).to(picked.device)
    B = logits.shape[0]
    if r.shape != (B,):
        raise ValueError(f"rewards must have shape ({B},) (one per sequence), got {tuple(r.shape)}")
    if not torch.isfinite(r).all():
        raise ValueError("rewards contain NaN or inf; check the reward function (exact match gives +1 / -1)")
    kl_coeff = float(kl_coeff)
    if kl_coeff < 0 or kl_coeff != kl_coeff:
        raise ValueError(f"kl_coeff must be >= 0, got {kl_coeff}")
    loss = -r * picked.sum(-1)
    if kl_coeff > 0:
        if ref_logits is None:
            raise ValueError("kl_coeff > 0 needs ref_logits (the base model's logits on the same tokens)")
        if tuple(ref_logits.shape) != tuple(logits.shape):
            raise ValueError(f"ref_logits must have the shape of logits {tuple(logits.shape)}, "
                             f"got {tuple(ref_logits.shape)}")
        loss = loss + kl_coeff * kl_ref(logits, ref_logits, valid)
    return loss.mean()
