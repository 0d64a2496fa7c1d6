"""Singular Value Fine-tuning (SVF), the weight parameterisation of Transformer² (spec §4).

A weight matrix is decomposed once, W = U·diag(σ)·Vᵀ (reduced SVD, float32). An expert is one vector z per
matrix, of length r = min(out, in), that rescales the singular values:

    W′ = U·diag(σ ⊙ z)·Vᵀ · (Σσ / Σ(σ ⊙ z))

The trailing factor (the "rescale") is ALWAYS applied by the reference, so any uniform z (z = c·1) gives back
W exactly; the unscaled form is offered only as the named variant `rescale=False`.

Single experts are trained as raw parameters p with z = sigmoid(p)·max_mult (max_mult = 1), p starting at
0.1 + 0.01·N(0, 1): z ≈ 0.525 everywhere, which the rescale turns back into (almost exactly) the base weights.
"""

from __future__ import annotations

import numpy as np
import torch

INIT_VALUE = 0.1  # p at the start of training (the reference's init_val)
INIT_NOISE = 0.01  # std of the Gaussian noise added to it


def svf_decompose(W: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The reduced SVD of a 2-D matrix in float32: (U (out, r), S (r,), Vh (r, in)) with W = U·diag(S)·Vh,
    r = min(out, in), S descending. Runs where W lives; any input dtype (bf16 included) is upcast first,
    since a bf16 SVD would lose the small singular values SVF rescales."""
    W = torch.as_tensor(W)
    if W.ndim != 2:
        raise ValueError(f"svf_decompose needs a 2-D weight matrix, got shape {tuple(W.shape)}")
    if not torch.isfinite(W).all():
        raise ValueError("svf_decompose got a matrix with NaN or inf entries; check the model's weights")
    U, S, Vh = torch.linalg.svd(W.detach().to(torch.float32), full_matrices=False)
    # row-major like the factors read back from the SVD cache: the same layout gives the same float sums, so a run
    # that decomposed and one that read the cache compute bit for bit alike (LAPACK returns U column-major)
    return U.contiguous(), S.contiguous(), Vh.contiguous()


def svf_compose(U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor, z: torch.Tensor, rescale: bool = True
                ) -> torch.Tensor:
    """W′ = U·diag(S⊙z)·Vh, times Σs/Σ(S⊙z) when `rescale` (the reference's rule, the default).

    Differentiable in z (and in S, U, Vh): gradients flow through the rescale too. The result is float32 on
    the factors' device. z must have one entry per singular value; the rescale is undefined when Σ(S⊙z) = 0
    (callers that apply experts to a model check that, see SVFModel)."""
    z = torch.as_tensor(z, device=S.device)
    if z.ndim != 1 or z.shape[0] != S.shape[0]:
        raise ValueError(f"z must be a vector of length {S.shape[0]} (one entry per singular value), "
                         f"got shape {tuple(z.shape)}")
    scaled = S * z.to(S.dtype)
    W = (U * scaled) @ Vh  # U·diag(s) without materialising diag(s)
    if rescale:
        W = W * (S.sum() / scaled.sum())
    return W


def z_from_params(p: torch.Tensor, max_mult: float = 1.0) -> torch.Tensor:
    """A single expert's z: sigmoid(p)·max_mult (max_mult = 1 in the reference)."""
    return torch.sigmoid(p) * max_mult


def init_params(sizes: dict[str, int], seed: int, value: float = INIT_VALUE, noise: float = INIT_NOISE
                ) -> dict[str, torch.Tensor]:
    """Fresh expert parameters p = value + noise·N(0, 1), one float32 vector per matrix, from a CPU torch
    generator seeded with `seed` (the same p whatever the device; the draws follow the order of `sizes`)."""
    gen = torch.Generator().manual_seed(int(seed))
    return {name: torch.randn(r, generator=gen, dtype=torch.float32) * noise + value for name, r in sizes.items()}
