"""Task-vector diagnostics for the merge explorer: norms, cosine similarity, TIES sign conflicts, DARE kept fraction.

Tensors are grouped per layer: `layers.{i}` for layer tensors, the tensor name without `.weight` otherwise
(`model.embed_tokens`, `model.norm`, `lm_head`). Experts are {name: state dict} sharing the base's tensor names.
They compute where the state dicts are (CPU or GPU) and return plain floats or CPU tensors.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

import torch

from workbench.merge.methods import _magnitude_trim_, dare_keep_mask, thread_free_sum
from workbench.merge.state import layer_index, tensor_generator

StateDict = Mapping[str, torch.Tensor]
#: A merge parameter as the views take it: one value, one per expert, or per expert and tensor (an evolved
#: recipe's per-layer values: `recipe_setting`).
PerTensor = float | Mapping[str, float] | Callable[[str, str], float]


def _setting(value: PerTensor | None, default: float) -> Callable[[str, str], float]:
    """value as a function of (expert, tensor name)."""
    if value is None:
        return lambda expert, name: default
    if callable(value):
        return lambda expert, name: float(value(expert, name))
    if isinstance(value, Mapping):
        return lambda expert, name: float(value.get(expert, default))
    return lambda expert, name: float(value)


def _density(value: PerTensor) -> Callable[[str, str], float]:
    """A density setting as a function of (expert, tensor name), each value checked to lie in (0, 1]."""
    get = _setting(value, 1.0)

    def density(expert: str, name: str) -> float:
        d = get(expert, name)
        if not 0 < d <= 1:
            raise ValueError(f"density for {expert!r} at {name} must be in (0, 1], got {d}")
        return d

    return density


def recipe_setting(recipe, key: str, num_layers: int) -> Callable[[str, str], Any]:
    """A recipe's (models form) parameter `key` for (model, tensor name), resolved as the merge resolves it
    (filters, layer gradients, model over global precedence; None where nothing sets it): what the views must
    use to show the merge that ran."""
    from workbench.merge.state import gradient_t, resolve

    scopes = {m["model"]: [m.get("parameters") or {}, recipe.parameters or {}] for m in recipe.models or []}

    def value(model: str, name: str) -> Any:
        return resolve(key, scopes.get(model, [recipe.parameters or {}]), name, gradient_t(name, num_layers))

    return value


def layer_group(name: str) -> str:
    i = layer_index(name)
    return f"layers.{i}" if i is not None else name.removesuffix(".weight")


def _task_vectors(base_sd: StateDict, expert_sds: Mapping[str, StateDict], name: str) -> list[torch.Tensor]:
    b = base_sd[name].float()
    for expert, sd in expert_sds.items():  # models of another architecture than the base's
        if name not in sd or sd[name].shape != b.shape:
            got = "lacks it" if name not in sd else f"has shape {tuple(sd[name].shape)}"
            raise ValueError(f"{expert} does not fit the base: the base's {name} is {tuple(b.shape)}, {expert} {got}")
    return [sd[name].float() - b for sd in expert_sds.values()]


def _float_names(base_sd: StateDict) -> list[str]:
    """The merged float tensors: a tied alias (SmolLM2's lm_head) is its source's merge, not one of its own."""
    from workbench.merge.recipe import tied_aliases

    tied = tied_aliases(base_sd)
    return [n for n, t in base_sd.items() if t.is_floating_point() and n not in tied]


def task_vector_norms(base_sd: StateDict, expert_sds: Mapping[str, StateDict]) -> dict[str, dict[str, float]]:
    """{layer group: {expert: ‖τ‖₂ over the group's tensors}}."""
    sq: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(expert_sds, 0.0))
    for name in _float_names(base_sd):
        for expert, tau in zip(expert_sds, _task_vectors(base_sd, expert_sds, name), strict=True):
            sq[layer_group(name)][expert] += float(thread_free_sum(tau.double().square()))
    return {g: {e: v**0.5 for e, v in d.items()} for g, d in sq.items()}


def task_vector_cosine(base_sd: StateDict, expert_sds: Mapping[str, StateDict]) -> torch.Tensor:
    """(N, N) cosine similarity of the whole-model task vectors, experts in the mapping's order."""
    n = len(expert_sds)
    names = _float_names(base_sd)
    gram = torch.zeros(n, n, dtype=torch.float64, device=base_sd[names[0]].device if names else "cpu")
    for name in names:
        taus = torch.stack([t.reshape(-1) for t in _task_vectors(base_sd, expert_sds, name)]).double()
        gram += taus @ taus.T
    norms = gram.diagonal().sqrt().clamp_min(1e-30)
    return (gram / norms[:, None] / norms[None, :]).cpu()


def sign_conflict_rate(
    base_sd: StateDict,
    expert_sds: Mapping[str, StateDict],
    density: PerTensor,
    weights: PerTensor | None = None,
    *,
    drop_seed: int | None = None,
) -> dict[str, object]:
    """TIES sign conflicts: among entries where at least one trimmed τ̃n is nonzero, the fraction where some
    nonzero τ̃n has the sign opposite to the elected s = sign(Σ wn·τ̃n) (+ on ties). Returns
    {"total": fraction, "per_layer": {group: fraction}}; trimming keeps the top-`density` |τ| per tensor, or with
    drop_seed (DARE-TIES) the entries DARE's random drop keeps, the masks merge_state_dicts draws for that seed
    (as dare_kept_fraction): the election the merge ran. density and weights: one value, one per expert, or per
    (expert, tensor name) (default weight 1)."""
    dens, weight = _density(density), _setting(weights, 1.0)
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for name in _float_names(base_sd):
        taus = _task_vectors(base_sd, expert_sds, name)
        g = tensor_generator(drop_seed, name) if drop_seed is not None else None
        for expert, tau in zip(expert_sds, taus, strict=True):
            d = dens(expert, name)
            if g is None:
                _magnitude_trim_(tau, d, rescale=False)
            elif d < 1:  # the merge's own draw (skipped at density 1); rescaling keeps each entry's sign
                tau.mul_(dare_keep_mask(tau, d, g))
            tau.mul_(weight(expert, name))
        stack = torch.stack(taus)
        positive = stack.sum(0) >= 0
        active = (stack != 0).any(0)
        conflict = torch.where(positive, (stack < 0).any(0), (stack > 0).any(0))
        c = counts[layer_group(name)]
        c[0] += int(conflict.sum())
        c[1] += int(active.sum())
    total_c = sum(c[0] for c in counts.values())
    total_a = sum(c[1] for c in counts.values())
    return {
        "total": total_c / max(total_a, 1),
        "per_layer": {g: c[0] / max(c[1], 1) for g, c in counts.items()},
    }


def dare_kept_fraction(
    base_sd: StateDict,
    expert_sds: Mapping[str, StateDict],
    density: PerTensor,
    *,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """{layer group: {expert: fraction of nonzero τ entries DARE keeps}} with the masks merge_state_dicts
    draws for the same seed when the experts are its non-base models in this order. density: one value, one
    per expert, or per (expert, tensor name)."""
    dens = _density(density)
    counts: dict[str, dict[str, list[int]]] = defaultdict(lambda: {e: [0, 0] for e in expert_sds})
    for name in _float_names(base_sd):
        g = tensor_generator(seed, name)
        for expert, tau in zip(expert_sds, _task_vectors(base_sd, expert_sds, name), strict=True):
            d = dens(expert, name)
            nonzero = tau != 0
            if d < 1:  # the merge's own draw (skipped at density 1), on any device
                nonzero &= dare_keep_mask(tau, d, g)
            c = counts[layer_group(name)][expert]
            c[0] += int(nonzero.sum())
            c[1] += int((tau != 0).sum())
    return {grp: {e: k / max(n, 1) for e, (k, n) in d.items()} for grp, d in counts.items()}
