"""Apply a recipe to models on disk and write the merged model as a Hugging Face folder.

    apply_recipe_file("recipe.yaml", models_dir="data/zoo", out="merged/")   # mergekit YAML
    apply_recipe_file("dfs.json", models_dir="data/zoo", out="merged/")      # DFS path

Model names in a recipe are folders inside `models_dir` (a zoo) or paths of their own. A DFS merge is
written as the path's layers (one decoder layer per step, weights copied, a standard Llama folder) with
the activation scales in config.json under `dfs_scales`; `load_merged` puts the scales back. Plain
transformers loads the folder too, as the unscaled layer stack (mergekit's passthrough equivalent).
The folder is written under a temporary name and renamed, so a crash never leaves half a model.
The sources load and merge on `device` (default: the GPU when torch sees one); the written weights are the same
files either way (CPU tensors in safetensors), and DARE keeps the same elements on every device.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from workbench.atomic import replace_dir, staging_dir

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def _load(name: str, models_dir, cache: dict, device: torch.device):
    from workbench.lm.models import load_model, resolve_model

    if name not in cache:
        cache[name] = load_model(str(resolve_model(name, models_dir)), device=device)
    return cache[name]


def apply_recipe_file(recipe: str | Path, *, models_dir: str | Path | None = None, out: str | Path,
                      seed: int | None = None, device: str | torch.device | None = None) -> Path:
    """Merge per `recipe` (a mergekit .yaml or a DFS .json) on `device` (default: resolve_device(None), checked
    first) and save to `out` (must not exist). seed: DARE's drops (default: the seed the recipe was saved with,
    a run's recipe.yaml: the merge it scored; else 0). models_dir: where the recipe's model names are looked up
    (a zoo): a name is the folder models_dir/NAME when that is one, else a path of its own (None: every name is
    a path; workbench.lm.models.resolve_model)."""
    from workbench.kernels.device import resolve_device
    from workbench.lm.models import quiet_progress

    dev = resolve_device(device)
    recipe, out = Path(recipe), Path(out)
    if out.exists():
        raise ValueError(f"{out} exists; choose a new --out folder")
    from workbench.checks import refuse_file_above

    refuse_file_above(out)  # found before the models load and merge, not at the mkdir after
    if not recipe.is_file():
        raise ValueError(f"no recipe file {recipe}")
    cache: dict = {}
    if recipe.suffix == ".json":
        from workbench.merge.dfs import DFSRecipe

        dfs = DFSRecipe.load(recipe)
        sources = {m: _load(m, models_dir, cache, dev)[0] for m in dfs.models}
        model, scales = materialise_dfs(dfs, sources), [s.scale for s in dfs.steps()]
        tokenizer = _load(dfs.embed_from, models_dir, cache, dev)[1]
    else:
        from workbench.merge.recipe import Recipe, apply_recipe, recipe_seed

        rec = Recipe.from_yaml(recipe)
        rec.validate()
        if seed is None:
            seed = recipe_seed(recipe) or 0
        sds = {}

        def load(name: str):
            if name not in sds:
                sds[name] = _load(name, models_dir, cache, dev)[0].state_dict()
            return sds[name]

        # the vocabularies are checked before the merge: the loads are cached for it
        tokenizer = recipe_tokenizer(rec, {name: _load(name, models_dir, cache, dev)[1] for name in rec.model_names()})
        merged = apply_recipe(rec, load, seed=seed, device=dev)
        ref = _load(rec.model_names()[0], models_dir, cache, dev)[0]  # the base when there is one
        model, scales = _with_layers(ref, merged), None  # a CPU model: load_state_dict copies the merge to it
        if rec.dtype:  # written in the recipe's dtype, as mergekit writes it (float32 tensors held bf16 values)
            from workbench.merge.recipe import _DTYPES

            model = model.to(_DTYPES[rec.dtype])
        model.load_state_dict(merged, strict=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = staging_dir(out)  # its own name: two merges into one folder do not write into each other's files
    try:
        if scales is not None:
            model.config.dfs_scales = scales
        with quiet_progress():
            model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        # the recipe travels with the model, under the name mergekit gives it
        shutil.copy(recipe, tmp / ("dfs.json" if scales is not None else "mergekit_config.yml"))
        replace_dir(tmp, out, overwrite=False)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def recipe_tokenizer(rec, tokenizers: dict):
    """The merged model's tokenizer by the recipe's tokenizer_source, of `tokenizers` (model name → tokenizer): as
    mergekit, unset or "base" is the base model's (without one, the first model's) and a model's name is that
    model's. Embedding and output rows are merged row by row, by token id, so the models must share one
    vocabulary, and then "union" is that vocabulary too. mergekit's re-mapping of the rows of different
    vocabularies onto their union is not done here: models whose vocabularies differ are refused, naming two."""
    names = list(tokenizers)
    vocab = tokenizers[names[0]].get_vocab()
    for name in names[1:]:
        if tokenizers[name].get_vocab() != vocab:
            raise ValueError(f"the tokenizers of {names[0]!r} and {name!r} differ: merge apply merges embedding rows "
                             f"by token id, so its models must share one vocabulary (re-mapping rows onto a union of "
                             f"vocabularies, mergekit's tokenizer_source: union, is not supported here)")
    source = rec.tokenizer_source
    return tokenizers[names[0] if source in (None, "base", "union") else source]


def _with_layers(ref, state_dict: dict):
    """A model of ref's architecture with as many layers as state_dict has (slices may change it)."""
    import copy

    layers = {int(k.split(".")[2]) for k in state_dict if k.startswith("model.layers.")}
    cfg = copy.deepcopy(ref.config)
    cfg.num_hidden_layers = len(layers)
    if getattr(cfg, "layer_types", None) is not None:
        cfg.layer_types = [cfg.layer_types[0]] * len(layers)
    return type(ref)(cfg)


def materialise_dfs(recipe, sources: dict):
    """A plain causal LM on the CPU whose layer i is a copy of path step i's layer (scales NOT applied: see
    load_merged); the sources may be on any device."""
    import copy

    from workbench.merge.dfs import build_dfs_model

    wrapped = build_dfs_model(recipe, sources)
    head = sources[recipe.embed_from]
    cfg = copy.deepcopy(wrapped.config)
    model = type(head)(cfg)
    sd = {}
    for k, v in wrapped.state_dict().items():
        sd[k.replace(".layer.", ".", 1) if k.startswith("model.layers.") else k] = v.detach().clone()
    model.load_state_dict(sd, strict=True)
    return model.eval()


def load_merged(path: str | Path,
                device: str | torch.device | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model on `device`, tokenizer) of a folder written by apply_recipe_file, with DFS scales applied."""
    from workbench.lm.models import load_model
    from workbench.merge.dfs import ScaledLayer

    model, tokenizer = load_model(str(path), device=device)
    scales = json.loads((Path(path) / "config.json").read_text()).get("dfs_scales")
    if scales:
        if len(scales) != len(model.model.layers):
            raise ValueError(f"{path}/config.json has {len(scales)} dfs_scales for {len(model.model.layers)} layers")
        model.model.layers = torch.nn.ModuleList(ScaledLayer(layer, s) for layer, s in zip(model.model.layers, scales,
                                                                                            strict=True))
    return model, tokenizer
