"""Genomes of the recipe searches: a vector in a box ↔ a merge recipe.

Parameter space (spec §1): one (weight, density) pair per source model per layer group, the groups being
the embeddings, each decoder layer, and the head (final norm + LM head): 2·N·(L+2) numbers, each in
[0, 1] (densities floored at DENSITY_MIN, since mergekit's density lives in (0, 1]; linear's weights at
LINEAR_WEIGHT_MIN, since it divides by their sum). The vector is laid
out as weights[N][G] then densities[N][G]. Methods without a density (linear, task_arithmetic) use the
weights only. A genome decodes to a mergekit YAML recipe whose per-model parameters are filter lists:

    weight: [{filter: embed_tokens, value: w_emb}, {filter: lm_head, value: w_head},
             {filter: model.norm, value: w_head}, {value: [w_layer0, …, w_layer(L-1)]}]

(a gradient list of L points puts one value exactly on each layer).

Data-flow space: the indicator I (T = M·r entries, kept when > 0.5 here, i.e. I − 0.5 > 0 of the spec)
and the M×M scales, searched with CMA-ES with margin (binary + continuous variables).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workbench.merge.dfs import DFSRecipe

DENSITY_MIN = 0.05
#: linear merging's weights are floored above 0: it divides by their sum, and CMA-ES clips samples below the
#: bound onto it, so every model of a group at 0 (likely at a large sigma) made a merge of nothing and the run failed
#: (its resume drew the same and failed again)
LINEAR_WEIGHT_MIN = 1e-3
WITH_DENSITY = ("ties", "dare_linear", "dare_ties")
EVOLVABLE = ("linear", "task_arithmetic", "ties", "dare_linear", "dare_ties")
NEEDS_BASE = ("task_arithmetic", "ties", "dare_linear", "dare_ties")
SCALE_BOUNDS = (0.0, 2.0)


@dataclass
class PSGenome:
    """Per-layer-group (weight, density) genome of a parameter-space merge."""

    models: list[str]          # the source models (experts), not the base
    layers: int                # L
    method: str = "ties"
    base: str | None = None

    def __post_init__(self):
        if self.method not in EVOLVABLE:
            raise ValueError(f"recipe evolution supports the methods {', '.join(EVOLVABLE)}, got {self.method!r}")
        if self.method in NEEDS_BASE and not self.base:
            raise ValueError(f"method {self.method!r} needs a base model")
        if not self.models:
            raise ValueError("give at least one source model to merge")

    @property
    def groups(self) -> list[str]:
        return ["embed", *(f"layer {i}" for i in range(self.layers)), "head"]

    @property
    def has_density(self) -> bool:
        return self.method in WITH_DENSITY

    @property
    def size(self) -> int:
        return len(self.models) * len(self.groups) * (2 if self.has_density else 1)

    @property
    def weight_min(self) -> float:
        """The weights' lower bound: LINEAR_WEIGHT_MIN for linear (it divides by their sum), else 0."""
        return LINEAR_WEIGHT_MIN if self.method == "linear" else 0.0

    def bounds(self) -> np.ndarray:
        lo = np.full(self.size, self.weight_min)
        if self.has_density:
            lo[self.size // 2:] = DENSITY_MIN
        return np.stack([lo, np.ones(self.size)], axis=1)

    def initial(self) -> np.ndarray:
        """Every model weighted equally (task arithmetic's 1/N would shrink each expert; 0.5 is mergekit's
        usual starting point), density 0.5."""
        return np.full(self.size, 0.5)

    def split(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(weights (N, G), densities (N, G) or None)."""
        x = np.asarray(x, np.float64)
        if x.shape != (self.size,):
            raise ValueError(f"a genome for {len(self.models)} models × {len(self.groups)} groups has "
                             f"{self.size} numbers, got shape {x.shape}")
        n, g = len(self.models), len(self.groups)
        w = np.clip(x[:n * g].reshape(n, g), self.weight_min, 1.0)
        d = np.clip(x[n * g:].reshape(n, g), DENSITY_MIN, 1.0) if self.has_density else None
        return w, d

    def recipe(self, x: np.ndarray):
        """The mergekit recipe (workbench.merge.recipe.Recipe) of genome x."""
        from workbench.merge.recipe import Recipe

        w, d = self.split(x)
        entries = [] if self.base is None or self.method not in NEEDS_BASE else [{"model": self.base}]
        for k, name in enumerate(self.models):
            params = {"weight": _per_group(w[k])}
            if d is not None:
                params["density"] = _per_group(d[k])
            entries.append({"model": name, "parameters": params})
        return Recipe(merge_method=self.method, base_model=self.base if self.method in NEEDS_BASE else None,
                      models=entries, parameters={}, dtype="float32")


def _per_group(values: np.ndarray) -> list[dict]:
    emb, layers, head = float(values[0]), [round(float(v), 6) for v in values[1:-1]], float(values[-1])
    return [{"filter": "embed_tokens", "value": round(emb, 6)}, {"filter": "lm_head", "value": round(head, 6)},
            {"filter": "model.norm", "value": round(head, 6)}, {"value": layers if len(layers) > 1 else layers[0]}]


@dataclass
class DFSGenome:
    """Indicator (T) + scales (M×M) genome of a data-flow-space merge."""

    models: list[str]
    layers: int
    r: int = 3                                    # repetitions of the layer list (the reference: r = 3)

    @property
    def m(self) -> int:
        return len(self.models) * self.layers

    @property
    def t(self) -> int:
        return self.m * self.r

    @property
    def size(self) -> int:
        return self.t + self.m * self.m

    def bounds(self) -> np.ndarray:
        b = np.zeros((self.size, 2))
        b[:self.t] = (0.0, 1.0)
        b[self.t:] = SCALE_BOUNDS
        return b

    def steps(self) -> np.ndarray:
        """CMA-ES with margin: step 1 marks the binary indicator entries, 0 the continuous scales."""
        s = np.zeros(self.size)
        s[:self.t] = 1.0
        return s

    def initial(self) -> np.ndarray:
        """Start from the first model's own path (its layers once, in order), all scales 1."""
        x = np.ones(self.size)
        x[:self.t] = 0.0
        x[:self.layers] = 1.0
        return x

    def recipe(self, x: np.ndarray) -> DFSRecipe:
        x = np.asarray(x, np.float64)
        if x.shape != (self.size,):
            raise ValueError(f"a DFS genome for M = {self.m}, r = {self.r} has {self.size} numbers, got {x.shape}")
        indicator = (x[:self.t] > 0.5).astype(np.float64)
        if not indicator.any():  # an empty path cannot run; keep the first model's first layer
            indicator[0] = 1.0
        scales = np.clip(x[self.t:], *SCALE_BOUNDS).reshape(self.m, self.m)
        return DFSRecipe(self.models, self.layers, self.r, indicator.tolist(), np.round(scales, 6).tolist())
