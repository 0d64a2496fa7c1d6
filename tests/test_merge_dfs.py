"""DFS merging (layer path + activation scales), recipe genomes and the CMA-ES ask/tell object."""

import inspect
import json
import pickle

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.masking_utils import create_causal_mask

from workbench.merge.dfs import DFSRecipe, build_dfs_model
from workbench.merge.genome import DENSITY_MIN, LINEAR_WEIGHT_MIN, DFSGenome, PSGenome
from workbench.merge.search import RecipeCMA


@pytest.fixture(scope="module")
def pair():
    cfg = LlamaConfig(vocab_size=40, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                      num_key_value_heads=2, tie_word_embeddings=False)
    torch.manual_seed(0)
    return {"a": LlamaForCausalLM(cfg).eval(), "b": LlamaForCausalLM(cfg).eval()}


def reference_path(models, steps, ids, head="a"):
    """The spec's DFS forward pass written out: embed, each step's layer on scale·h, norm, head."""
    h = models[head].model.embed_tokens(ids)
    pos = torch.arange(ids.shape[1])[None]
    pe = models[head].model.rotary_emb(h, pos)
    cache_kw = "cache" if "cache" in inspect.signature(create_causal_mask).parameters else "past_key_values"
    mask = create_causal_mask(config=models[head].config, inputs_embeds=h, attention_mask=None, position_ids=pos,
                              **{cache_kw: None})  # transformers renamed past_key_values to cache
    for s in steps:
        h = models[s.model].model.layers[s.layer](h * s.scale, attention_mask=mask, position_embeddings=pe,
                                                  position_ids=pos)
    return models[head].lm_head(models[head].model.norm(h))


@torch.no_grad()
def test_identity_path_is_the_source_model(pair):
    ids = torch.randint(0, 40, (2, 7))
    model = build_dfs_model(DFSRecipe.identity(["a", "b"], 3, r=3, model="b"), pair)
    assert torch.equal(model(ids).logits, pair["b"](ids).logits)


@torch.no_grad()
def test_indicator_and_scales_follow_the_spec(pair):
    m, r = 6, 2
    ind = np.zeros(m * r)
    ind[[0, 4, 8, 11]] = 1      # a0, b1 | (second repetition) a2, b2
    w = np.arange(m * m, dtype=float).reshape(m, m) / 20 + 0.5
    recipe = DFSRecipe(["a", "b"], 3, r, ind.tolist(), w.tolist())
    steps = recipe.steps()
    assert [(s.model, s.layer) for s in steps] == [("a", 0), ("b", 1), ("a", 2), ("b", 2)]
    # W[i, j] scales the input of layer j when the previous layer was i (M-indices: a0=0 … b2=5)
    assert [s.scale for s in steps] == [1.0, w[0, 4], w[4, 2], w[2, 5]]
    ids = torch.randint(0, 40, (3, 8))
    out = build_dfs_model(recipe, pair)(ids).logits
    torch.testing.assert_close(out, reference_path(pair, steps, ids), rtol=0, atol=1e-5)
    # CMA-ES proposes real indicators: a slot is kept where I_t > 0, whatever its size (0 itself: dropped)
    real = [0.3, 0.9, -0.2, 0.0, 0.7, 0.45, 1e-4, -1.0, 0.0, 2.5, -1e-4, 0.5]
    kept = DFSRecipe(["a", "b"], 3, r, real, w.tolist()).steps()
    assert [(s.model, s.layer) for s in kept] == [("a", 0), ("a", 1), ("b", 1), ("b", 2), ("a", 0), ("b", 0),
                                                  ("b", 2)]


@torch.no_grad()
def test_dfs_model_generates_with_kv_cache_like_without(pair):
    recipe = DFSRecipe(["a", "b"], 3, path=[{"model": "a", "layer": 0}, {"model": "a", "layer": 0, "scale": 0.7},
                                            {"model": "b", "layer": 2, "scale": 1.3}])
    model = build_dfs_model(recipe, pair)
    ids = torch.randint(0, 40, (2, 5))
    cached = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False,
                            pad_token_id=0)
    x = ids
    for _ in range(4):
        x = torch.cat([x, model(x, use_cache=False).logits[:, -1:].argmax(-1)], dim=1)
    assert torch.equal(cached, x)
    # layers share the source weights: no copy
    assert model.model.layers[2].layer.mlp.up_proj.weight is pair["b"].model.layers[2].mlp.up_proj.weight


def test_dfs_recipe_json_round_trip_and_errors(tmp_path, pair):
    recipe = DFSGenome(["a", "b"], 3, r=2).recipe(np.linspace(0, 1.9, 12 + 36))
    path = recipe.save(tmp_path / "dfs.json")
    again = DFSRecipe.load(path)
    assert again.to_dict() == recipe.to_dict() and again.steps() == recipe.steps()
    with pytest.raises(ValueError, match="T = M·r"):
        DFSRecipe(["a", "b"], 3, 2, [1.0] * 5)
    with pytest.raises(ValueError, match="finite"):
        DFSRecipe(["a", "b"], 3, 1, [1.0] * 6, np.full((6, 6), np.nan).tolist())
    with pytest.raises(ValueError, match="outside 0..2"):  # layers 0 … L − 1
        DFSRecipe(["a", "b"], 3, path=[{"model": "b", "layer": 3}])
    with pytest.raises(ValueError, match="not given"):
        build_dfs_model(DFSRecipe.identity(["a", "c"], 3), pair)
    with pytest.raises(ValueError, match="empty"):
        build_dfs_model(DFSRecipe(["a", "b"], 3, 1, [0.0] * 6), pair)
    (tmp_path / "bad.json").write_text('{"models": ["a"], "layers": 3, "path": [], "colour": 1}')
    with pytest.raises(ValueError, match="a DFS recipe is JSON"):
        DFSRecipe.load(tmp_path / "bad.json")
    # the spec's own forms: {models, r, indicator[T], scales[M][M]} (L = M / N) and a bare path
    spec = {k: v for k, v in recipe.to_dict().items() if k in ("models", "r", "indicator", "scales")}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    assert DFSRecipe.load(tmp_path / "spec.json").to_dict() == recipe.to_dict()
    (tmp_path / "spec.json").write_text(json.dumps({k: v for k, v in spec.items() if k != "r"}))  # r = T / M
    assert DFSRecipe.load(tmp_path / "spec.json").r == recipe.r == 2
    bare = [{"model": "b", "layer": 1, "scale": 0.5}, {"model": "a", "layer": 0}]
    (tmp_path / "path.json").write_text(json.dumps(bare))
    walked = DFSRecipe.load(tmp_path / "path.json")
    assert walked.models == ["b", "a"] and [(s.model, s.layer, s.scale) for s in walked.steps()] == \
        [("b", 1, 0.5), ("a", 0, 1.0)]
    ids = torch.randint(0, 40, (2, 6))
    with torch.no_grad():  # a path over fewer layers than the models have: it runs, as the spec's pass does
        torch.testing.assert_close(build_dfs_model(walked, pair)(ids).logits,
                                   reference_path(pair, walked.steps(), ids, head="b"), rtol=0, atol=1e-5)
    # a path step beyond a model's layers: named (it said "the recipe expects 6" layers, which it never said)
    with pytest.raises(ValueError, match="path step {model: a, layer: 5} names a layer 'a' has not: it has layers 0"):
        build_dfs_model(DFSRecipe(["a"], 6, path=[{"model": "a", "layer": 5}]), pair)
    for text, message in (('{"models": ["a", "b"], "r": 1, "indicator": [1], "scales": [[1, 1, 1]]}', "multiple"),
                          ('[{"model": "a"}]', "path must be"), ('"a"', "a DFS recipe is JSON"),
                          # ragged scales: NumPy's "inhomogeneous shape" before
                          ('{"models": ["a"], "r": 1, "indicator": [1, 1], "scales": [[1, 1], [1]]}',
                           "scales must be an M×M = 2×2 matrix"),
                          ('{"models": ["a"], "r": 1, "indicator": [1, 1], "scales": [[1, "x"], [1, 1]]}',
                           "must hold numbers")):
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(ValueError, match=message):
            DFSRecipe.load(tmp_path / "bad.json")


def test_ps_genome_decodes_to_per_group_filters():
    g = PSGenome(["add", "sort"], layers=4, method="ties", base="base")
    assert g.size == 2 * 2 * (4 + 2) and g.groups[0] == "embed" and g.groups[-1] == "head"
    x = np.linspace(0, 1, g.size)
    w, d = g.split(x)
    recipe = g.recipe(x)
    sort = recipe.models[2]["parameters"]
    assert recipe.base_model == "base" and recipe.models[0] == {"model": "base"}
    assert sort["weight"][0] == {"filter": "embed_tokens", "value": pytest.approx(w[1, 0], abs=1e-6)}
    assert sort["weight"][-1]["value"] == pytest.approx(w[1, 1:5].tolist(), abs=1e-6)
    assert sort["density"][1]["value"] == pytest.approx(max(d[1, -1], 0.05), abs=1e-6)
    assert PSGenome(["a", "b"], 4, "linear").size == 2 * 6
    # linear divides by its weights' sum: every model of a group at 0 (CMA-ES clips onto the bound) failed the run
    linear = PSGenome(["a", "b"], 4, "linear")
    assert (linear.bounds()[:, 0] == LINEAR_WEIGHT_MIN).all() and (g.bounds()[: g.size // 2, 0] == 0).all()
    w, _ = linear.split(np.zeros(linear.size))
    assert (w == LINEAR_WEIGHT_MIN).all()
    # every density gene is floored at DENSITY_MIN (mergekit's density lives in (0, 1]), every weight at 0
    assert (g.bounds()[g.size // 2:, 0] == DENSITY_MIN).all() and (g.bounds()[:, 1] == 1).all()
    with pytest.raises(ValueError, match="methods"):
        PSGenome(["a"], 4, "slerp_ish")
    with pytest.raises(ValueError, match="base"):
        PSGenome(["a"], 4, "ties")


def test_ps_genome_genes_reach_every_tensor_of_their_layer_group():
    """Spec §1: one (weight, density) per model per layer group. Resolved as a merge resolves it (gradient position
    and filters), each tensor gets its own group's genes: the embeddings the first, layer i's tensors (norms
    included) group i + 1, the final norm and the LM head the last (a version that gave model.norm the embeddings'
    genes passed the test above, which reads the recipe's entries but not what they resolve to)."""
    from workbench.merge.state import gradient_t, resolve

    g = PSGenome(["add", "sort"], layers=4, method="ties", base="base")
    x = np.linspace(0.06, 0.99, g.size)  # every gene distinct, none clipped
    w, d = g.split(x)
    recipe = g.recipe(x)
    per_model = {m["model"]: m.get("parameters") for m in recipe.models}
    names = {"model.embed_tokens.weight": 0, "model.norm.weight": 5, "lm_head.weight": 5,
             **{f"model.layers.{i}.{k}.weight": i + 1 for i in range(4)
                for k in ("mlp.up_proj", "self_attn.q_proj", "input_layernorm")}}
    for k, model in enumerate(g.models):
        for name, group in names.items():
            t = gradient_t(name, 4)
            for key, genes in (("weight", w), ("density", d)):
                value = resolve(key, [per_model[model], recipe.parameters], name, t)
                assert value == pytest.approx(genes[k, group], abs=1e-6), (model, name, key)


def test_dfs_genome_starts_from_the_first_models_own_path():
    g = DFSGenome(["a", "b"], 3, r=2)
    assert g.recipe(g.initial()).steps() == DFSRecipe.identity(["a", "b"], 3, r=2).steps()
    assert [(s.model, s.layer, s.scale) for s in g.recipe(g.initial()).steps()] == [("a", i, 1.0) for i in range(3)]


def test_cma_search_minimises_and_resumes_bit_for_bit():
    g = DFSGenome(["a", "b"], 3, r=2)
    target = np.full(g.size - g.t, 1.3)

    def loss(x):
        return float(np.sum((x[g.t:] - target) ** 2) + x[:g.t].sum())

    for steps in (g.steps(), None):
        search = RecipeCMA(g.initial(), g.bounds(), sigma=0.3, population=8, seed=3, steps=steps)
        first = None
        for _ in range(4):
            xs = search.ask()
            assert xs.shape == (8, g.size) and (xs >= g.bounds()[:, 0]).all() and (xs <= g.bounds()[:, 1]).all()
            if steps is not None:
                assert set(np.unique(xs[:, :g.t])) <= {0.0, 1.0}
            info = search.tell(xs, [loss(x) for x in xs])
            first = first if first is not None else info["loss_mean"]
        assert info["best_loss"] < first
        clone = pickle.loads(pickle.dumps(search))
        a, b = search.ask(), clone.ask()
        assert np.array_equal(a, b)
        search.tell(a, [loss(x) for x in a])
        clone.tell(b, [loss(x) for x in b])
        assert np.array_equal(search.ask(), clone.ask())
    with pytest.raises(ValueError, match="finite"):
        search.tell(search.ask(), [np.nan] * 8)
