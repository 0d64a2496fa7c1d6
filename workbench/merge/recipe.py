"""mergekit YAML recipes: read, validate, write (mergekit parses what we write) and apply to in-memory models.

    merge_method: ties                      slices:                         # XOR models
    base_model: base                          - sources:
    models:                                       - {model: a, layer_range: [0, 16], parameters: {...}}
      - model: a                                  - {model: base, layer_range: [0, 16]}
        parameters: {weight: [0, 1], density: 0.5}  parameters: {...}
    parameters: {normalize: true}
    dtype: float32

Precedence per parameter and tensor: slice source > slice > model > global (see workbench.merge.state for the
value semantics). In `slices` recipes each output slice is merged from its sources' layer ranges, the gradient
position t runs over the slice (layer offset/(length−1), as mergekit), and output layers are numbered in order;
non-layer tensors follow mergekit: embeddings from the first slice's sources, final norm and lm_head from the
last slice's, both at t = 0. Filters are matched against the OUTPUT tensor name (mergekit matches per-input
parameters against each input's own name; they differ only for filters that name a layer index).
`apply_recipe(..., device=)` merges on that device (default: the GPU when torch sees one) and returns tensors
on the device the loaded state dicts are on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from workbench.atomic import atomic_write
from workbench.kernels.device import resolve_device
from workbench.merge.methods import METHODS, check_parameter_names
from workbench.merge.state import check_finite, layer_index, merge_one_on, merge_state_dicts

RECIPE_METHODS = (*METHODS, "passthrough")
_NEEDS_BASE = ("task_arithmetic", "ties", "dare_linear", "dare_ties", "slerp")
_TOP = ("merge_method", "base_model", "models", "slices", "parameters", "dtype", "tokenizer_source")
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


#: the comment line a saved recipe names its DARE seed in (Recipe.save, recipe_seed)
SEED_COMMENT = "# workbench: DARE seed"


def recipe_seed(path: str | Path) -> int | None:
    """The DARE seed a recipe file was saved with (Recipe.save(seed=)), or None."""
    import re

    try:
        head = Path(path).read_text().splitlines()[:5]
    except (OSError, UnicodeDecodeError):
        return None
    for line in head:
        found = re.fullmatch(re.escape(SEED_COMMENT) + r" (\d+)\s*", line)
        if found:
            return int(found.group(1))
    return None


@dataclass
class Recipe:
    """One mergekit configuration; `models` items are {model, parameters?}, `slices` items are
    {sources: [{model, layer_range: [a, b], parameters?}], parameters?}.

    merge_method: one of RECIPE_METHODS (METHODS and "passthrough"). base_model: the base model's name (needed by
    the task-vector methods and slerp). models / slices: the recipe's inputs, one of the two (validate checks).
    parameters: the global settings (mergekit's parameter semantics: workbench.merge.state). dtype: the dtype the
    merged weights are written in ("float32", "float16", "bfloat16", "float64"; None: as merged). tokenizer_source:
    whose tokenizer the merged model gets ("base" or unset: the base's, else the first model's; a model's name:
    that model's; "union": the shared vocabulary, as the models must share one: merge.apply.recipe_tokenizer).
    """

    merge_method: str
    base_model: str | None = None
    models: list[dict[str, Any]] | None = None
    slices: list[dict[str, Any]] | None = None
    parameters: dict[str, Any] | None = None
    dtype: str | None = None
    tokenizer_source: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipe:
        """A recipe from a parsed mergekit mapping (its YAML read); ValueError for unknown keys or a bad entry."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a recipe must be a YAML mapping, got {type(data).__name__}")
        unknown = set(data) - set(_TOP)
        if unknown:
            raise ValueError(f"unsupported recipe key(s) {sorted(unknown)}; supported: {', '.join(_TOP)}")
        if "merge_method" not in data:
            raise ValueError("recipe needs a merge_method, one of " + ", ".join(RECIPE_METHODS))
        models = slices = None
        if data.get("models") is not None:
            models = [_model_entry(m) for m in data["models"]]
        if data.get("slices") is not None:
            slices = [_slice_entry(s) for s in data["slices"]]
        return cls(
            merge_method=str(data["merge_method"]),
            base_model=_opt_str(data.get("base_model")),
            models=models,
            slices=slices,
            parameters=dict(data["parameters"]) if data.get("parameters") else None,
            dtype=_opt_str(data.get("dtype")),
            tokenizer_source=_opt_str(data.get("tokenizer_source")),
        )

    @classmethod
    def from_yaml(cls, text_or_path: str | Path) -> Recipe:
        """Parse YAML text, or read it from a path (a Path, or a one-line string naming an existing file)."""
        text, where = str(text_or_path), "the recipe"
        if "\n" not in text and text.strip().lower().endswith((".yaml", ".yml")) and not _is_file(text):
            raise ValueError(f"no such recipe file: {text}")  # a file name, not YAML text
        if isinstance(text_or_path, Path) or ("\n" not in text and _is_file(text)):
            where = str(text_or_path)
            try:
                text = Path(text_or_path).read_text()
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(f"cannot read the recipe {where}: {exc}") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:  # one line naming the file and the place, not the parser's trace
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ValueError(f"{where} is not valid YAML{at}: {what}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{where} is not a mergekit recipe (a YAML mapping with merge_method, models or slices)")
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """The recipe as a mergekit mapping, merge_method first, the fields that are set only."""
        out: dict[str, Any] = {"merge_method": self.merge_method}
        for key in _TOP[1:]:
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out

    def to_yaml(self) -> str:
        """The recipe as mergekit YAML text (to_dict's keys, in order)."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    def save(self, path: str | Path, seed: int | None = None) -> Path:
        """Write the recipe as mergekit YAML; seed: the seed its DARE drops were drawn with, in a comment line
        (mergekit's format has no field for it) that `recipe_seed` reads back: `merge apply` then rebuilds the
        model a run scored, not another draw."""
        text = (f"{SEED_COMMENT} {int(seed)}\n" if seed is not None else "") + self.to_yaml()
        return atomic_write(path, lambda p: p.write_text(text))

    def uses_drops(self) -> bool:
        """Whether merging by this recipe draws random DARE drops (its seed then matters)."""
        return self.merge_method.startswith("dare")

    def model_names(self) -> list[str]:
        """Every model the recipe references, in first-use order (base first)."""
        names = [self.base_model] if self.base_model else []
        for m in self.models or []:
            names.append(m["model"])
        for s in self.slices or []:
            names += [src["model"] for src in s["sources"]]
        return list(dict.fromkeys(names))

    def validate(self, known_models: Iterable[str] | None = None) -> Recipe:
        """Raise one clear ValueError for the first problem found; return self when the recipe is usable."""
        if self.merge_method not in RECIPE_METHODS:
            raise ValueError(f"unknown merge_method {self.merge_method!r}; use one of {', '.join(RECIPE_METHODS)}")
        if bool(self.models) == bool(self.slices):
            raise ValueError("a recipe needs exactly one of 'models' or 'slices' (non-empty); remove the other")
        if known_models is not None:
            known = set(known_models)
            for name in self.model_names():
                if name not in known:
                    raise ValueError(f"unknown model {name!r}; known models: {sorted(known)}")
        source = self.tokenizer_source
        if source is not None and source not in ("base", "union", *self.model_names()):
            raise ValueError(f"tokenizer_source must be base, union or one of the recipe's models "
                             f"({', '.join(self.model_names())}), got {source!r}")
        if self.dtype is not None and self.dtype not in _DTYPES:
            raise ValueError(f"unsupported dtype {self.dtype!r}; use one of {', '.join(_DTYPES)}")
        method = self.merge_method
        if method in _NEEDS_BASE and not self.base_model:
            raise ValueError(f"{method} needs base_model; add 'base_model: <model>'")
        for where, params in self._parameter_levels():
            _check_parameters(params, where)
        if self.models is not None:
            names = [m["model"] for m in self.models]
            if len(set(names)) != len(names):
                raise ValueError(f"a model is listed twice in models: {names}")
            inputs = set(names) | ({self.base_model} if self.base_model else set())
            if method == "slerp" and len(inputs) != 2:
                raise ValueError(f"slerp merges exactly 2 models (base + one), got {sorted(inputs)}")
            if method == "passthrough" and len(inputs) != 1:
                raise ValueError("passthrough takes one model; use slices to stack layers of several models")
        for i, s in enumerate(self.slices or []):
            names = [src["model"] for src in s["sources"]]
            if len(set(names)) != len(names):
                raise ValueError(f"slice {i}: a model appears twice among its sources {names}")
            lengths = {b - a for a, b in (src["layer_range"] for src in s["sources"])}
            if len(lengths) != 1:
                raise ValueError(f"slice {i}: all sources must span the same number of layers, got {sorted(lengths)}")
            if method == "passthrough" and len(names) != 1:
                raise ValueError(f"slice {i}: passthrough takes exactly one source per slice, got {names}")
            if method == "slerp" and len(names) != 2:
                raise ValueError(f"slice {i}: slerp needs exactly 2 sources (base + one), got {names}")
            if method in _NEEDS_BASE and self.base_model not in names:
                raise ValueError(f"slice {i}: base_model {self.base_model!r} must be one of its sources {names}")
        return self

    def _parameter_levels(self) -> list[tuple[str, Mapping[str, Any] | None]]:
        levels = [("parameters", self.parameters)]
        levels += [(f"models[{i}]", m.get("parameters")) for i, m in enumerate(self.models or [])]
        for i, s in enumerate(self.slices or []):
            levels.append((f"slices[{i}]", s.get("parameters")))
            levels += [(f"slices[{i}].sources[{j}]", src.get("parameters")) for j, src in enumerate(s["sources"])]
        return levels


def _is_file(text: str) -> bool:
    try:
        return Path(text).is_file()
    except OSError:  # e.g. a long one-line YAML string is not a valid file name
        return False


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _model_entry(m: Any) -> dict[str, Any]:
    if isinstance(m, str):
        return {"model": m}
    if not isinstance(m, Mapping) or "model" not in m or set(m) - {"model", "parameters"}:
        raise ValueError(f"a models entry is {{model, parameters}}, got {m!r}")
    out = {"model": str(m["model"])}
    if m.get("parameters"):
        out["parameters"] = dict(m["parameters"])
    return out


def _slice_entry(s: Any) -> dict[str, Any]:
    if not isinstance(s, Mapping) or not s.get("sources") or set(s) - {"sources", "parameters"}:
        raise ValueError(f"a slices entry is {{sources: [...], parameters}}, got {s!r}")
    sources = []
    for src in s["sources"]:
        if not isinstance(src, Mapping) or "model" not in src or "layer_range" not in src:
            raise ValueError(f"a slice source is {{model, layer_range: [a, b], parameters}}, got {src!r}")
        extra = set(src) - {"model", "layer_range", "parameters"}
        if extra:
            raise ValueError(f"unsupported slice source key(s) {sorted(extra)}; use model, layer_range, parameters")
        a, b = (int(x) for x in src["layer_range"])
        if not 0 <= a < b:
            raise ValueError(f"layer_range must be [a, b] with 0 <= a < b, got {list(src['layer_range'])}")
        entry: dict[str, Any] = {"model": str(src["model"]), "layer_range": [a, b]}
        if src.get("parameters"):
            entry["parameters"] = dict(src["parameters"])
        sources.append(entry)
    out: dict[str, Any] = {"sources": sources}
    if s.get("parameters"):
        out["parameters"] = dict(s["parameters"])
    return out


def _numbers(setting: Any) -> Iterable[Any]:
    """Every scalar inside a setting (scalars, gradients, filter entries)."""
    if isinstance(setting, Mapping):
        yield from _numbers(setting.get("value"))
    elif isinstance(setting, (list, tuple)):
        for s in setting:
            yield from _numbers(s)
    elif setting is not None:
        yield setting


def _check_parameters(params: Mapping[str, Any] | None, where: str) -> None:
    check_parameter_names(params, where)
    for key, setting in (params or {}).items():
        for v in _numbers(setting):
            if isinstance(v, float) and math.isnan(v):
                raise ValueError(f"{where}: parameter {key!r} is NaN")
            if key == "density" and not (isinstance(v, (int, float)) and 0 < v <= 1):
                raise ValueError(f"{where}: density must be in (0, 1], got {v!r}")


def apply_recipe(
    recipe: Recipe,
    load: Callable[[str], Mapping[str, torch.Tensor]],
    *,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> dict[str, torch.Tensor]:
    """Run a recipe on state dicts from `load(model name)` (each loaded once); floats are cast to `recipe.dtype`.
    Tensors are merged on `device` (default: resolve_device(None)) and come back where `load` put them."""
    if not callable(load):  # a dict of state dicts: models.get is such a function
        raise ValueError(f"load is a function from a model name to its state dict, got a {type(load).__name__}"
                         + ("; for a dict of state dicts give its .get" if isinstance(load, Mapping) else ""))
    dev = resolve_device(device)
    recipe.validate()
    cache: dict[str, Mapping[str, torch.Tensor]] = {}
    tied: dict[str, str] = {}

    def get(name: str) -> Mapping[str, torch.Tensor]:
        if name not in cache:
            cache[name] = check_finite(name, load(name))  # a damaged checkpoint: said, not merged
        return cache[name]

    if recipe.models is not None:
        names = [m["model"] for m in recipe.models]
        if recipe.base_model and recipe.base_model not in names:
            names.append(recipe.base_model)  # mergekit adds the base as an input without parameters
        sds = {n: get(n) for n in names}
        # names every model ties (SmolLM2's lm_head) are merged once, as their source; a tied model merged with
        # an untied one keeps its alias as a tensor of its own (it holds the embeddings' values)
        shared = [tied_aliases(sd) for sd in sds.values()]
        tied = {a: s for a, s in shared[0].items() if all(other.get(a) == s for other in shared[1:])}
        out = merge_state_dicts(
            {n: {k: v for k, v in sd.items() if k not in tied} for n, sd in sds.items()},
            recipe.merge_method,
            base=recipe.base_model,
            parameters=recipe.parameters,
            model_parameters={m["model"]: m.get("parameters") or {} for m in recipe.models},
            seed=seed,
            device=dev,
        )
    else:
        out = _apply_slices(recipe, get, seed, dev)
    if recipe.dtype:
        dtype = _DTYPES[recipe.dtype]
        out = {k: v.to(dtype) if v.is_floating_point() else v for k, v in out.items()}
    for alias, source in tied.items():  # tied weights: the alias is the merged source, as it is in the model
        if alias not in out and source in out:
            out[alias] = out[source]
    return out


def tied_aliases(state_dict: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """Names whose tensor is an earlier name's (same storage, offset, shape and strides): alias -> source. Tied
    embeddings (SmolLM2: lm_head.weight is model.embed_tokens.weight) are merged once, under the embeddings'
    parameters, as mergekit does; merging both let lm_head's result overwrite the embeddings' on loading, so
    the embedding genes of an evolved recipe did nothing."""
    seen: dict[tuple, str] = {}
    out = {}
    for name, t in state_dict.items():
        if t.device.type == "meta" or not t.numel():  # no storage to share (every meta tensor's address is 0)
            continue
        key = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()))
        if key in seen:
            out[name] = seen[key]
        else:
            seen[key] = name
    return out


def _apply_slices(recipe: Recipe, get: Callable[[str], Mapping[str, torch.Tensor]], seed: int,
                  device: torch.device) -> dict:
    slices = recipe.slices or []
    method, base, glob = recipe.merge_method, recipe.base_model, recipe.parameters

    def merge(sl: dict, tensors: dict, name: str, t: float) -> torch.Tensor:
        scopes = {src["model"]: [src.get("parameters"), sl.get("parameters"), glob] for src in sl["sources"]}
        return merge_one_on(
            device,
            tensors,
            method,
            base=base if base in tensors else None,
            name=name,
            t=t,
            shared_scopes=[sl.get("parameters"), glob],
            model_scopes=scopes,
            seed=seed,
        )

    first = get(slices[0]["sources"][0]["model"])
    others = [n for n in first if layer_index(n) is None]
    pre = [n for n in others if "embed" in n]
    post = [n for n in others if "embed" not in n]
    out: dict[str, torch.Tensor] = {}
    for n in pre:
        out[n] = merge(slices[0], {s["model"]: _tensor(get, s["model"], n) for s in slices[0]["sources"]}, n, 0.0)
    layer = 0
    for sl in slices:
        a0, b0 = sl["sources"][0]["layer_range"]
        length = b0 - a0
        for off in range(length):
            t = off / (length - 1) if length > 1 else 1.0  # mergekit's per-slice gradient position
            per_source = {
                src["model"]: _layer_tensors(get(src["model"]), src["layer_range"][0] + off, src["model"])
                for src in sl["sources"]
            }
            suffixes = next(iter(per_source.values()))
            for suffix, (prefix, _) in suffixes.items():
                tensors = {}
                for m, found in per_source.items():
                    if suffix not in found:
                        raise ValueError(f"model {m!r} lacks layer tensor {suffix!r} (slice layer offset {off})")
                    tensors[m] = found[suffix][1]
                name = f"{prefix}layers.{layer}.{suffix}"
                out[name] = merge(sl, tensors, name, t)
            layer += 1
    for n in post:
        out[n] = merge(slices[-1], {s["model"]: _tensor(get, s["model"], n) for s in slices[-1]["sources"]}, n, 0.0)
    return out


def _tensor(get: Callable[[str], Mapping[str, torch.Tensor]], model: str, name: str) -> torch.Tensor:
    sd = get(model)
    if name not in sd:
        raise ValueError(f"model {model!r} has no tensor {name!r}")
    return sd[name]


def _layer_tensors(sd: Mapping[str, torch.Tensor], i: int, model: str) -> dict[str, tuple[str, torch.Tensor]]:
    """{suffix after `layers.{i}.`: (prefix before it, tensor)} for one layer of one model."""
    found = {}
    marker = f"layers.{i}."
    for name, tensor in sd.items():
        if layer_index(name) == i:
            k = name.index(marker)
            found[name[k + len(marker) :]] = (name[:k], tensor)
    if not found:
        raise ValueError(f"model {model!r} has no layer {i} (layer_range beyond its depth?)")
    return found
