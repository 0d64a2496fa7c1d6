"""Models from their lineage: a CycleQD run stores descriptions (`Child`), not weights.

    theta = build_child(child, theta0, [models[p] for p in child.parents], factors[child.task])
    theta = rebuild(model_id, qd.child, theta0, zoo.state_dict, factors)     # from the seed experts up

`build_child` is a pure function of its inputs (crossover with the recorded ω, then the recorded mutation
drawn from its recorded seed), so the same inputs give the same bits: a run keeps only the weights of live
elites (or none at all) and rebuilds any model it recorded. `rebuild` walks the lineage back to the seed
experts, building each ancestor once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping, Sequence

from workbench.qd.cycle import Child
from workbench.qd.operators import MUTATIONS, StateDict, SVDFactors, crossover


def build_child(child: Child, theta0: StateDict, parents: Sequence[StateDict],
                svd: SVDFactors | None = None) -> dict:
    """A child's state dict from its lineage.

    Args:
        child: the description `CycleQD.ask()` returned (or `CycleQD.child(id)`).
        theta0: the base model.
        parents: the parents' state dicts, in the order of child.parents.
        svd: `svd_factors(task_vector(seed expert of child.task, theta0))`; needed by the SVD mutation only.
    Returns:
        θ0 + Σ ω_i (θ_i − θ0) / Σ ω_i, then mutated as recorded (bit-identical for identical inputs).
    """
    if child.is_seed:
        raise ValueError(f"model {child.id} is the seed expert {child.seed_expert!r}: load it, it is not built")
    if len(parents) != len(child.parents):
        raise ValueError(f"child {child.id} has {len(child.parents)} parents {list(child.parents)}, "
                         f"got {len(parents)} state dicts")
    if child.mutation not in MUTATIONS:
        raise ValueError(f"child {child.id} was mutated by {child.mutation!r}, unknown here; known: "
                         f"{', '.join(MUTATIONS)}")
    theta = crossover(theta0, parents, child.omegas)
    return MUTATIONS[child.mutation](theta, child.mutation_seed, child.mutation_scale, svd)


def rebuild(model_id: int, lineage: Callable[[int], Child], theta0: StateDict,
            seed_state: Callable[[str], StateDict] | Mapping[str, StateDict],
            svd: Mapping[str, SVDFactors] | None = None,
            cache: MutableMapping[int, StateDict] | None = None) -> StateDict:
    """A recorded model's state dict, rebuilt from the seed experts through its ancestors.

    Args:
        model_id: the model to rebuild.
        lineage: id -> Child (e.g. `CycleQD.child`).
        theta0: the base model.
        seed_state: a seed expert's name -> its state dict (a function, e.g. `zoo.state_dict`, or a mapping).
        svd: task -> SVD factors of that task's seed expert (needed when children were SVD-mutated).
        cache: id -> state dict already at hand (e.g. the live elites); filled with every model built here.
    """
    load = seed_state.__getitem__ if isinstance(seed_state, Mapping) else seed_state
    cache = {} if cache is None else cache
    stack = [int(model_id)]
    while stack:
        mid = stack[-1]
        if mid in cache:
            stack.pop()
            continue
        child = lineage(mid)
        if child.is_seed:
            cache[mid] = load(child.seed_expert)
            stack.pop()
            continue
        if any(p >= mid for p in child.parents):
            raise ValueError(f"model {mid} lists parents {list(child.parents)}; parents must be older (smaller ids)")
        missing = [p for p in child.parents if p not in cache]
        if missing:
            stack.extend(missing)
            continue
        cache[mid] = build_child(child, theta0, [cache[p] for p in child.parents],
                                 None if svd is None else svd.get(child.task))
        stack.pop()
    return cache[int(model_id)]
