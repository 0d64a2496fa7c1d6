"""Data-flow-space (DFS) merging: a path through the layers of several models, with activation scales.

Spec §1: lay out the L layers of each of the N source models in order (M = N·L layers), repeat the
list r times (T = M·r slots). An indicator I ∈ ℝ^T keeps slot t when I_t > 0, in order: that is the
inference path. A scale matrix W ∈ ℝ^{M×M} multiplies the hidden state entering layer j when the
previous layer on the path was i. The first layer of the path gets the embedding output unscaled.

    recipe = DFSRecipe(models=["base", "add"], layers=L, r=2, indicator=I, scales=W)  # or DFSRecipe.load(path)
    model = build_dfs_model(recipe, {"base": m0, "add": m1})                # a LlamaForCausalLM

The result is an ordinary Hugging Face causal LM (generate, KV cache, our evaluation harness): its
decoder layers are the source layers, sharing their weights, each wrapped to scale its input. The
embeddings, the final norm and the LM head come from `embed_from` (default: the first model).
Scales act on activations, so mergekit's passthrough cannot express them; the recipe is JSON:
{models, r, indicator[T], scales[M][M], embed_from} or an explicit path [{model, layer, scale}].
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from workbench.atomic import atomic_write


@dataclass
class PathStep:
    model: str
    layer: int
    scale: float = 1.0


@dataclass
class DFSRecipe:
    """Indicator + scale form (the search space) or an explicit path (`path` set, indicator empty).

    models: the N source models' names. layers: L, decoder layers per source model (M = N·L layers in all,
    numbered model 0's first). r: how many times the M layers repeat in the slots (T = M·r slots). indicator: T
    numbers, slot t kept when > 0 (default: all kept). scales: the M×M matrix W, W[i][j] the scale of the hidden
    state passed from layer i to layer j (default: all 1). embed_from: the model whose embeddings, final norm and
    head the merged model uses (default: the first). path: explicit PathStep steps (model, layer, scale) instead
    of the indicator and scales. Checked on construction (ValueError naming the field).
    """

    models: list[str]
    layers: int                                   # L, layers per source model
    r: int = 1
    indicator: list[float] = field(default_factory=list)
    scales: list[list[float]] = field(default_factory=list)
    embed_from: str | None = None
    path: list[PathStep] | None = None

    def __post_init__(self):
        if isinstance(self.models, str) or not all(isinstance(m, str) for m in self.models):
            raise ValueError(f"models is a list of model names, got {self.models!r}")
        if not self.models:
            raise ValueError("a DFS recipe needs at least one source model")
        if self.layers < 1 or self.r < 1:
            raise ValueError(f"layers and r must be positive, got layers={self.layers}, r={self.r}")
        self.embed_from = self.embed_from or self.models[0]
        if self.embed_from not in self.models:
            raise ValueError(f"embed_from {self.embed_from!r} is not one of the recipe's models {self.models}")
        if self.path is not None:
            self.path = [s if isinstance(s, PathStep) else PathStep(**s) for s in self.path]
            for s in self.path:
                if s.model not in self.models or not 0 <= s.layer < self.layers:
                    raise ValueError(f"path step {s} names an unknown model or a layer outside 0..{self.layers - 1}")
                if not np.isfinite(s.scale):
                    raise ValueError(f"path step {s} has a non-finite scale")
            return
        m, t = self.n_layers_total, self.n_slots
        # ragged or non-numeric lists: said as the recipe's shape, not NumPy's "inhomogeneous shape"
        rows = self.scales if len(self.scales) else np.ones((m, m))
        if not all(isinstance(row, (list, tuple, np.ndarray)) and len(row) == m for row in rows) or len(rows) != m:
            raise ValueError(f"scales must be an M×M = {m}×{m} matrix (M = {len(self.models)} models × "
                             f"{self.layers} layers): {len(rows)} rows of lengths "
                             f"{sorted({len(r) if isinstance(r, (list, tuple, np.ndarray)) else 1 for r in rows})}")
        try:
            ind = np.asarray(self.indicator if len(self.indicator) else np.ones(t), np.float64)
            w = np.asarray(rows, np.float64)
        except (TypeError, ValueError):
            raise ValueError("indicator and scales must hold numbers") from None
        if ind.shape != (t,):
            raise ValueError(f"indicator must have T = M·r = {m}·{self.r} = {t} entries, got {ind.shape}")
        if w.shape != (m, m):
            raise ValueError(f"scales must be an M×M = {m}×{m} matrix, got {w.shape}")
        if not (np.isfinite(ind).all() and np.isfinite(w).all()):
            raise ValueError("indicator and scales must be finite (NaN or inf found)")
        self.indicator, self.scales = ind.tolist(), w.tolist()

    @property
    def n_layers_total(self) -> int:
        """M = N·L."""
        return len(self.models) * self.layers

    @property
    def n_slots(self) -> int:
        """T = M·r."""
        return self.n_layers_total * self.r

    def slot(self, t: int) -> tuple[int, int]:
        """(model index, layer) of slot t: slots run through model 0's layers, then model 1's, …, r times."""
        m = t % self.n_layers_total
        return m // self.layers, m % self.layers

    def steps(self) -> list[PathStep]:
        """The inference path: the kept slots in order, each with the scale of its incoming hidden state."""
        if self.path is not None:
            return list(self.path)
        out, prev = [], None
        for t, keep in enumerate(self.indicator):
            if keep <= 0:
                continue
            k, layer = self.slot(t)
            j = t % self.n_layers_total
            scale = 1.0 if prev is None else float(self.scales[prev][j])
            out.append(PathStep(self.models[k], layer, scale))
            prev = j
        return out

    def to_dict(self) -> dict:
        """The recipe as JSON data (what save writes and from_dict reads): models, layers, embed_from, then the
        path, or r, indicator and scales."""
        d = {"models": self.models, "layers": self.layers, "embed_from": self.embed_from}
        if self.path is not None:
            return {**d, "path": [vars(s) for s in self.path]}
        return {**d, "r": self.r, "indicator": self.indicator, "scales": self.scales}

    def save(self, path: str | Path) -> Path:
        """Write the recipe as JSON (to_dict) to `path`, atomically; the path."""
        path = Path(path)
        atomic_write(path, lambda p: p.write_text(json.dumps(self.to_dict(), indent=1)))
        return path

    @classmethod
    def load(cls, path: str | Path) -> DFSRecipe:
        """A recipe from a JSON file (from_dict); ValueError for a file that cannot be read or holds no recipe."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read the DFS recipe {path}: {exc}") from exc
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Mapping | list) -> DFSRecipe:
        """A recipe from JSON data: the spec's {models, r, indicator[T], scales[M][M]} (layers per model
        inferred as M / number of models when absent), the same with `layers` and `embed_from`, or an explicit
        path, bare ([{model, layer, scale}, …]) or as {models, layers, path}."""
        known = {"models", "layers", "r", "indicator", "scales", "embed_from", "path"}
        shape = ("a DFS recipe is JSON: {models, r, indicator[T], scales[M][M]} (optional: layers, embed_from) "
                 "or a path [{model, layer, scale}, …]")
        if isinstance(data, list):
            data = {"path": data}
        if not isinstance(data, Mapping) or set(data) - known:
            raise ValueError(f"{shape}; got {sorted(data) if isinstance(data, Mapping) else type(data).__name__}")
        data = dict(data)
        path = data.get("path")
        if path is not None:
            if not isinstance(path, list) or not path or not all(
                    isinstance(s, Mapping) and {"model", "layer"} <= set(s) <= {"model", "layer", "scale"}
                    for s in path):
                raise ValueError(f"{shape}; its path must be a non-empty list of {{model, layer, scale}} steps")
            data.setdefault("models", list(dict.fromkeys(str(s["model"]) for s in path)))
            data.setdefault("layers", max(int(s["layer"]) for s in path) + 1)
        elif "layers" not in data and "models" in data:
            m, n = len(data.get("scales") or []), len(data["models"] or [])
            if not m or not n or m % n:
                raise ValueError(f"{shape}; without `layers` the scales must be M×M with M a multiple of the "
                                 f"{n} models (M = models × layers per model), got M = {m}")
            data["layers"] = m // n
            if "r" not in data and data.get("indicator"):  # T = M·r
                data["r"] = max(1, len(data["indicator"]) // m)
        if "models" not in data:
            raise ValueError(f"{shape}; `models` is missing")
        return cls(**data)

    @classmethod
    def identity(cls, models: list[str], layers: int, r: int = 1, model: str | None = None) -> DFSRecipe:
        """The path that runs one source model's layers once, in order, unscaled (a sanity baseline)."""
        k = models.index(model or models[0])
        ind = np.zeros(len(models) * layers * r)
        ind[k * layers:(k + 1) * layers] = 1
        return cls(models, layers, r, ind.tolist(), embed_from=model or models[0])


class ScaledLayer(nn.Module):
    """A decoder layer whose incoming hidden state is multiplied by `scale` (the W entry of spec §1)."""

    def __init__(self, layer: nn.Module, scale: float):
        super().__init__()
        self.layer = layer
        self.scale = float(scale)

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        if self.scale != 1.0:
            hidden_states = hidden_states * self.scale
        return self.layer(hidden_states, *args, **kwargs)


def build_dfs_model(recipe: DFSRecipe, sources: Mapping[str, nn.Module]) -> nn.Module:
    """A causal LM that runs `recipe`'s path over the layers of `sources` (HF Llama-style models).

    Layers are fresh modules that share the source weights (no copy of the parameters), with their
    own attention layer index so the KV cache has one slot per path step even when a layer repeats.
    The model runs where the sources are (load them on one device: CPU or GPU).
    """
    missing = [m for m in recipe.models if m not in sources]
    if missing:
        raise ValueError(f"the DFS recipe names models {missing} that were not given (have {sorted(sources)})")
    configs = {name: sources[name].config for name in recipe.models}
    ref = configs[recipe.embed_from]
    for name, cfg in configs.items():
        # an explicit path needs the layers it names; the indicator's slots are laid out over exactly L layers
        if cfg.hidden_size != ref.hidden_size:
            raise ValueError(f"model {name!r} has hidden size {cfg.hidden_size}, {recipe.embed_from!r} (the "
                             f"embeddings') {ref.hidden_size}: a DFS path stacks layers of one width")
        if recipe.path is not None:
            beyond = [s for s in recipe.path if s.model == name and s.layer >= cfg.num_hidden_layers]
            if beyond:
                raise ValueError(f"path step {{model: {name}, layer: {beyond[0].layer}}} names a layer {name!r} has "
                                 f"not: it has layers 0 to {cfg.num_hidden_layers - 1}")
        elif cfg.num_hidden_layers != recipe.layers:
            raise ValueError(f"model {name!r} has {cfg.num_hidden_layers} layers; the recipe's indicator and scales "
                             f"are laid out over {recipe.layers} a model")
    steps = recipe.steps()
    if not steps:
        raise ValueError("the DFS path is empty (no indicator entry > 0)")
    head = sources[recipe.embed_from]
    cfg = copy.deepcopy(ref)
    cfg.num_hidden_layers = len(steps)
    if getattr(cfg, "layer_types", None) is not None:
        cfg.layer_types = [cfg.layer_types[0]] * len(steps)
    with torch.device("meta"):
        model = type(head)(cfg)
    # embeddings, final norm, LM head and rotary tables: shared with embed_from
    model.model.embed_tokens = head.model.embed_tokens
    model.model.norm = head.model.norm
    model.model.rotary_emb = head.model.rotary_emb
    model.lm_head = head.lm_head
    layers = []
    for i, step in enumerate(steps):
        src = sources[step.model].model.layers[step.layer]
        layer = copy.copy(src)                      # shallow: shares the parameter tensors
        layer._modules = dict(src._modules)
        attn = copy.copy(src.self_attn)
        attn.layer_idx = i
        layer._modules["self_attn"] = attn
        layers.append(ScaledLayer(layer, step.scale))
    model.model.layers = nn.ModuleList(layers)
    model.eval()
    return model
