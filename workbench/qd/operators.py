"""CycleQD's variation operators on state dicts (name -> tensor), spec §2 steps 2-3.

    child = crossover(theta0, [theta_a, theta_b], omegas=[1.004, 0.991])   # model-wise task-vector merge
    factors = svd_factors(task_vector(seed_expert_q, theta0))              # once per run and task
    child = svd_mutate(child, factors, svd_draws(factors, seed=123, kappa=0.1))

Crossover (reference `crossover/model_linear.py`): θc = θ0 + Σ ω_i (θ_i − θ0) / Σ ω_i with ONE ω per parent for
the whole model (every tensor, embeddings and norms included).

SVD mutation (reference `mutation/svd_uniform_mutator.py`): for every 2-D tensor whose name lacks "norm"
(embeddings and the LM head included), θ += U·diag(r⊙S)·Vᵀ, where U·diag(S)·Vᵀ is the reduced SVD of the SEED
EXPERT's task vector for the quality task and r_j ~ U(0, κ), full rank. 1-D tensors (norms, biases) and
tensors of other ranks are left as they are. The ablation adds N(0, σ²) noise to every floating tensor.

Random draws are made per tensor from SeedSequence([seed, crc32(name)]): a child's mutation is fixed by one
integer seed, whatever order the state dict lists its tensors in, so it can be rebuilt from its lineage.
Operators return a new dict; tensors they leave unchanged are shared with the input, not copied.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

StateDict = Mapping[str, torch.Tensor]


def svd_eligible(name: str, tensor: torch.Tensor) -> bool:
    """True for the tensors the SVD mutation changes: 2-D, floating, and without "norm" in the name."""
    return tensor.ndim == 2 and tensor.is_floating_point() and "norm" not in name


def _check_same_names(reference: StateDict, other: StateDict, what: str) -> None:
    if set(reference) != set(other):
        extra, missing = sorted(set(other) - set(reference)), sorted(set(reference) - set(other))
        raise ValueError(f"{what} does not have the base model's tensors (missing {missing[:5]}, "
                         f"extra {extra[:5]}); all models must share one architecture")
    for name, t in reference.items():
        if other[name].shape != t.shape:
            raise ValueError(f"{what}: tensor {name!r} has shape {tuple(other[name].shape)}, the base model's "
                             f"has {tuple(t.shape)}")


def task_vector(theta: StateDict, theta0: StateDict) -> dict[str, torch.Tensor]:
    """τ = θ − θ0 for every floating tensor (other tensors are dropped)."""
    _check_same_names(theta0, theta, "the fine-tuned model")
    return {k: theta[k] - theta0[k] for k, t in theta0.items() if t.is_floating_point()}


def crossover(theta0: StateDict, parents: Sequence[StateDict], omegas: Sequence[float]) -> dict[str, torch.Tensor]:
    """Model-wise linear merge of the parents' task vectors: θ0 + Σ ω_i (θ_i − θ0) / Σ ω_i.

    Args:
        theta0: the base model's state dict.
        parents: the parents' state dicts (same names and shapes as theta0).
        omegas: one weight per parent, applied to every tensor (Σ ω must not be 0).
    Returns:
        the child's state dict (non-floating tensors are theta0's).
    """
    omegas = [float(w) for w in omegas]
    if len(parents) == 0 or len(parents) != len(omegas):
        raise ValueError(f"crossover needs one omega per parent, got {len(parents)} parents and {len(omegas)} omegas")
    total = sum(omegas)
    if total == 0 or not np.isfinite(total):
        raise ValueError(f"the omegas {omegas} must have a finite, non-zero sum")
    for i, parent in enumerate(parents):
        _check_same_names(theta0, parent, f"parent {i}")
    out = {}
    for name, base in theta0.items():
        if not base.is_floating_point():
            out[name] = base
            continue
        merged = omegas[0] * (parents[0][name] - base)
        for w, parent in zip(omegas[1:], parents[1:], strict=True):
            merged = merged + w * (parent[name] - base)
        out[name] = base + merged / total
    return out


class SVDFactors(Mapping):
    """Reduced SVDs of the SVD-eligible tensors of one task vector: name -> (U, S, Vh), U·diag(S)·Vh = τ.

    Build it once per run with `svd_factors(tau)` and pass it wherever a task vector is expected, so children
    do not decompose the seed expert again."""

    def __init__(self, factors: Mapping[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]):
        self._factors = dict(factors)

    def __getitem__(self, name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self._factors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._factors)

    def __len__(self) -> int:
        return len(self._factors)

    def rank(self, name: str) -> int:
        """min(rows, cols) of the tensor: the length of its singular-value vector and of its r."""
        return int(self._factors[name][1].shape[0])


def svd_factors(tau: StateDict) -> SVDFactors:
    """The reduced SVD U·diag(S)·Vh of every SVD-eligible tensor of a task vector (float32 at least)."""
    if isinstance(tau, SVDFactors):
        return tau
    out = {}
    for name, t in tau.items():
        if svd_eligible(name, t):
            work = t if t.dtype in (torch.float32, torch.float64) else t.float()
            u, s, vh = torch.linalg.svd(work, full_matrices=False)
            out[name] = (u, s, vh)
    return SVDFactors(out)


def _name_rng(seed: int, name: str) -> np.random.Generator:
    """A generator for one tensor of one mutation: independent of the state dict's order and of other tensors."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(name.encode())]))


def svd_draws(factors: SVDFactors, seed: int, kappa: float,
              names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """r ~ U(0, κ) for each tensor (length min(rows, cols)), drawn from (seed, tensor name); float tensors of the
    singular values' dtype. `names` limits the draws to some tensors (default: all of `factors`)."""
    if not (kappa >= 0 and np.isfinite(kappa)):
        raise ValueError(f"kappa must be a finite number >= 0, got {kappa}")
    names = list(factors) if names is None else list(names)
    out = {}
    for name in names:
        s = factors[name][1]
        out[name] = torch.from_numpy(_name_rng(seed, name).uniform(0.0, kappa, size=factors.rank(name))).to(s.dtype)
    return out


def svd_mutate(theta: StateDict, tau_q: StateDict | SVDFactors,
               r: Mapping[str, torch.Tensor | np.ndarray]) -> dict[str, torch.Tensor]:
    """θ + U·diag(r⊙S)·Vᵀ for every 2-D tensor of θ whose name lacks "norm"; other tensors unchanged.

    Args:
        theta: the state dict to mutate (not modified).
        tau_q: the seed expert's task vector (a state dict, decomposed here) or its precomputed `svd_factors`.
        r: tensor name -> scales of length min(rows, cols), for exactly the eligible tensors of theta.
    Returns:
        a new state dict.
    """
    names = [n for n, t in theta.items() if svd_eligible(n, t)]
    extra, missing = sorted(set(r) - set(names)), [n for n in names if n not in r]
    if extra or missing:
        raise ValueError(f"r must give scales for exactly the 2-D non-norm tensors of theta: missing {missing[:5]}, "
                         f"not eligible or unknown {extra[:5]}")
    factors = tau_q if isinstance(tau_q, SVDFactors) else svd_factors({n: tau_q[n] for n in names if n in tau_q})
    lacking = [n for n in names if n not in factors]
    if lacking:
        raise ValueError(f"the seed expert's task vector lacks tensors {lacking[:5]}; it must come from the same "
                         f"architecture as theta")
    out = dict(theta)
    for name in names:
        u, s, vh = factors[name]
        scale = torch.as_tensor(r[name]).to(dtype=s.dtype, device=s.device)
        if scale.shape != s.shape:
            raise ValueError(f"r[{name!r}] has shape {tuple(scale.shape)}, expected ({s.shape[0]},) = min(rows, cols)")
        if (u.shape[0], vh.shape[1]) != tuple(theta[name].shape):
            raise ValueError(f"the SVD of {name!r} is for shape {(u.shape[0], vh.shape[1])}, theta's tensor has "
                             f"{tuple(theta[name].shape)}")
        delta = (u * (scale * s)) @ vh          # U·diag(r⊙S)·Vᵀ without forming the diagonal
        out[name] = theta[name] + delta.to(dtype=theta[name].dtype, device=theta[name].device)
    return out


def gaussian_mutate(theta: StateDict, seed: int, std: float) -> dict[str, torch.Tensor]:
    """θ + N(0, std²) on every floating tensor (the reference's GaussianMutator; the ablation of SVD mutation),
    the noise drawn from (seed, tensor name)."""
    if not (std >= 0 and np.isfinite(std)):
        raise ValueError(f"std must be a finite number >= 0, got {std}")
    out = {}
    for name, t in theta.items():
        if not t.is_floating_point():
            out[name] = t
            continue
        noise = _name_rng(seed, name).standard_normal(tuple(t.shape), dtype=np.float32) * np.float32(std)
        out[name] = t + torch.from_numpy(noise).to(dtype=t.dtype, device=t.device)
    return out


# --- the mutations by name: (theta, seed, scale, svd factors of the seed expert or None) -> theta -------------------

Mutation = Callable[[StateDict, int, float, "SVDFactors | None"], dict]


def _svd(theta: StateDict, seed: int, scale: float, factors: SVDFactors | None) -> dict:
    if factors is None:
        raise ValueError("the SVD mutation needs the SVD factors of the quality task's seed expert: "
                         "svd_factors(task_vector(seed_expert, theta0))")
    names = [n for n, t in theta.items() if svd_eligible(n, t)]
    return svd_mutate(theta, factors, svd_draws(factors, seed, scale, names))


def _gaussian(theta: StateDict, seed: int, scale: float, factors: SVDFactors | None = None) -> dict:
    return gaussian_mutate(theta, seed, scale)


#: Mutations by the name CycleQDConfig(mutation=...) takes, and their default scale (κ, σ).
MUTATIONS: dict[str, Mutation] = {"svd": _svd, "gaussian": _gaussian}
MUTATION_SCALES: dict[str, float] = {"svd": 0.1, "gaussian": 3e-4}
