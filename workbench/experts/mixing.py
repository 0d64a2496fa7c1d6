"""Few-shot expert mixing (Transformer² §4 (c)): a mixture of K experts is one z′ per matrix.

The reference (its WeightedCombination policy) mixes the RAW expert parameters and uses the mix as z′
directly, with NO sigmoid:

    z′_m = Σ_k α_{k,m} · p_{k,m}                      variant "raw" (the default, the reference's rule)

although a single expert's z is sigmoid(p)·max_mult. The consistent alternative is the named variant

    z′_m = Σ_k α_{k,m} · sigmoid(p_{k,m})·max_mult     variant "sigmoid" ("mix sigmoid(p)")

α has one coefficient per expert and matrix, shape (K, M), or one per expert, (K, 1), shared by every
matrix; it starts at 1/K. With `normalize` each column is divided by its sum over the experts first
(the reference's `norm_coeffs`: on in its policy config, off in its few-shot script, which also mixes per
matrix, `per_layer`). Either way the result is z′ itself: compose it with `svf_compose`
(SVFModel.apply_mixture does) without any further sigmoid. Under SVF's rescale (always on in the reference)
normalising changes nothing but α's scale: a column's positive factor scales z′ of a matrix, and the rescale
takes it out again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

RAW, SIGMOID = "raw", "sigmoid"
VARIANTS = (RAW, SIGMOID)


class DegenerateMixtureError(ValueError):
    """A mixture that defines no weights: an α column summing to 0 under normalize=True, or a z′ whose
    rescale divides by zero. A search over α (CEM with bounds [0, 1]) can sample such members; score them as
    failures (the reference's NaN weights amount to that) instead of stopping the search."""


def check_alpha(alpha, flag: str = "--alpha") -> np.ndarray:
    """α given by a user (a CLI flag, the page's sliders) as a float array, or one error naming the fix: finite,
    ≥ 0 (CEM searches [0, 1]; a negative coefficient turns its expert around and SVF's rescale Σσ/Σ(σ⊙z′) then
    blows the weights up) and not all 0 for a matrix (it mixes no expert: the rescale divides by 0). A search's
    own members go to mix_params unchecked (DegenerateMixtureError scores them as failures)."""
    a = np.asarray(alpha, np.float64)
    if not np.isfinite(a).all() or (a < 0).any():
        raise ValueError(f"{flag} takes mixing coefficients >= 0 (CEM searches [0, 1]), got "
                         f"{' '.join(f'{v:g}' for v in a.ravel())}: a negative one turns its expert around and "
                         "SVF's rescale Σσ/Σ(σ⊙z′) then blows the weights up")
    if a.size and (a.reshape(a.shape[0], -1).sum(0) == 0).any():
        raise ValueError(f"{flag}: the coefficients of a matrix are all 0, which mixes no expert (SVF's rescale "
                         "divides by 0); give one of them a positive value")
    return a


def mix_params(params: Sequence[Mapping[str, torch.Tensor]], alpha: torch.Tensor | ArrayLike, keys: Sequence[str],
               normalize: bool = False, *, variant: str = RAW, max_mult: float = 1.0) -> dict[str, torch.Tensor]:
    """z′ for every name in `keys`: Σ_k α_{k,m}·p_{k,m} (variant "raw", default) or Σ_k α_{k,m}·sigmoid(p_{k,m})·
    max_mult (variant "sigmoid").

    params: one dict per expert (matrix name -> raw parameter vector p), K = len(params).
    alpha:  (K, M) with column m for keys[m], or (K, 1) or (K,) (one coefficient per expert); a tensor, an
            array or (nested) lists. Torch tensors stay differentiable (the mix is built from torch operations).
    normalize: divide each column of α by its sum over the experts first.
    Returns float32 tensors on the device of the experts' parameters."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    params, keys = list(params), list(keys)
    if not params:
        raise ValueError("mix_params needs at least one expert")
    if not keys:
        raise ValueError("mix_params needs at least one matrix name in `keys`")
    K, M = len(params), len(keys)
    for k, expert in enumerate(params):
        missing = [name for name in keys if name not in expert]
        if missing:
            raise ValueError(f"expert {k} has no parameters for matrix {missing[0]!r}"
                             f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}: "
                             "every expert must come from the same model")
        for name in keys:
            if tuple(expert[name].shape) != tuple(params[0][name].shape):
                raise ValueError(f"expert {k}'s vector for matrix {name!r} has shape {tuple(expert[name].shape)}, "
                                 f"expert 0's has {tuple(params[0][name].shape)}: the experts come from different "
                                 "models")
    device = params[0][keys[0]].device
    a = alpha.to(device, torch.float32) if isinstance(alpha, torch.Tensor) else \
        torch.as_tensor(np.asarray(alpha, np.float32), device=device)
    if a.ndim == 1 and a.shape[0] == K:  # one per expert as a flat list, as ExpertsModel.alphas and --alpha take it
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] != K or a.shape[1] not in (1, M):
        shapes = f"({K}, 1) or ({K},)" if M == 1 else \
            f"({K}, {M}) (one coefficient per expert per matrix) or ({K}, 1) / ({K},) (one per expert)"
        raise ValueError(f"alpha must have shape {shapes}, got {tuple(a.shape)}")
    if not torch.isfinite(a).all():
        raise ValueError("alpha has NaN or inf entries")
    if normalize:
        total = a.sum(0, keepdim=True)
        zero = (total == 0).flatten().nonzero().flatten().tolist()
        if zero:
            col = keys[zero[0]] if a.shape[1] == M else "every matrix"
            raise DegenerateMixtureError(f"alpha's column for {col} sums to 0 over the experts, so normalize=True "
                                         "cannot scale it; give it a positive sum or use normalize=False")
        a = a / total
    a = a.expand(K, M)
    out = {}
    for m, name in enumerate(keys):
        stacked = torch.stack([expert[name].to(device, torch.float32) for expert in params])  # (K, r)
        if variant == SIGMOID:
            stacked = torch.sigmoid(stacked) * max_mult
        out[name] = (a[:, m: m + 1] * stacked).sum(0)
    return out


def uniform_alpha(n_experts: int, n_columns: int = 1) -> np.ndarray:
    """The reference's starting α: 1/K for every expert (and every matrix when n_columns = M)."""
    if n_experts < 1 or n_columns < 1:
        raise ValueError(f"need at least one expert and one column, got {n_experts} x {n_columns}")
    return np.full((n_experts, n_columns), 1.0 / n_experts)
