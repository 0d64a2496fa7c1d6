"""workbench.merge.recipe: mergekit YAML round trips, validation errors, and applying models / slices recipes."""

import pytest
import torch
import yaml
from forked import run
from mergekit.config import MergeConfiguration

from workbench.merge.bench import synthetic_llama
from workbench.merge.recipe import Recipe, apply_recipe
from workbench.merge.state import merge_state_dicts

TIES = """
merge_method: ties
base_model: base
models:
  - model: a
    parameters:
      weight: [0.2, 1.0]
      density: [{filter: mlp, value: 0.3}, {value: 0.7}]
  - model: b
    parameters: {weight: 0.5, density: 0.5}
parameters: {normalize: true, lambda: 1.0}
dtype: float32
"""

FRANKEN = """
merge_method: passthrough
slices:
  - sources: [{model: a, layer_range: [0, 3]}]
  - sources: [{model: b, layer_range: [1, 4]}]
"""

SLICED_LINEAR = """
merge_method: linear
slices:
  - sources:
      - {model: a, layer_range: [0, 2], parameters: {weight: [1.0, 0.0]}}
      - {model: b, layer_range: [2, 4]}
    parameters: {weight: 0.25}
parameters: {weight: 9.0, normalize: false}
"""


@pytest.fixture(scope="module")
def models():
    return {name: synthetic_llama(4, 8, 16, 2, 1, 20, seed=i) for i, name in enumerate(["base", "a", "b"])}


@pytest.mark.parametrize("text", [TIES, FRANKEN, SLICED_LINEAR])
def test_round_trip_and_mergekit_parses(text, tmp_path):
    r = Recipe.from_yaml(text)
    out = r.to_yaml()
    assert Recipe.from_yaml(out) == r
    MergeConfiguration.model_validate(yaml.safe_load(out))
    path = r.save(tmp_path / "r.yaml")
    assert Recipe.from_yaml(path) == r
    assert Recipe.from_yaml(str(path)) == r
    assert r.validate(["base", "a", "b"]) is r


def test_apply_models_recipe_equals_merge_state_dicts(models):
    r = Recipe.from_yaml(TIES)
    out = apply_recipe(r, models.__getitem__)
    expect = merge_state_dicts(
        {"a": models["a"], "b": models["b"], "base": models["base"]},
        "ties",
        base="base",
        parameters=r.parameters,
        model_parameters={m["model"]: m["parameters"] for m in r.models},
    )
    assert list(out) == list(expect)
    assert all(torch.equal(out[k], expect[k]) for k in out)


def test_frankenmerge_passthrough(models):
    out = apply_recipe(Recipe.from_yaml(FRANKEN), models.__getitem__)
    layers = sorted({int(k.split(".")[2]) for k in out if ".layers." in k})
    assert layers == list(range(6))
    q = "self_attn.q_proj.weight"
    for i in range(3):
        assert torch.equal(out[f"model.layers.{i}.{q}"], models["a"][f"model.layers.{i}.{q}"])
        assert torch.equal(out[f"model.layers.{i + 3}.{q}"], models["b"][f"model.layers.{i + 1}.{q}"])
    assert torch.equal(out["model.embed_tokens.weight"], models["a"]["model.embed_tokens.weight"])  # first slice
    assert torch.equal(out["lm_head.weight"], models["b"]["lm_head.weight"])  # last slice


def test_slice_precedence_and_slice_gradient(models):
    out = apply_recipe(Recipe.from_yaml(SLICED_LINEAR), models.__getitem__)
    name = "model.layers.{}.mlp.up_proj.weight"
    # slice of 2 layers: t = 0, 1; a's weight comes from its source gradient, b's from the slice (0.25), not global 9
    for off, wa in [(0, 1.0), (1, 0.0)]:
        expect = wa * models["a"][name.format(off)] + 0.25 * models["b"][name.format(2 + off)]
        torch.testing.assert_close(out[name.format(off)], expect)
    # non-layer tensors use t = 0
    emb = "model.embed_tokens.weight"
    torch.testing.assert_close(out[emb], 1.0 * models["a"][emb] + 0.25 * models["b"][emb])


SLICE_SHARED = """
merge_method: linear
slices:
  - sources:
      - {model: a, layer_range: [0, 2], parameters: {weight: 1.0}}
      - {model: b, layer_range: [2, 4], parameters: {weight: 3.0}}
    parameters: {normalize: true}
parameters: {normalize: false}
"""


def test_a_shared_parameter_of_a_slice_overrides_the_global_one(models):
    """Shared keys (normalize, lambda, t, ...) follow slice > global too: a slice's normalize: true wins over the
    global false (a version that read the global level first passed every test above, none set a shared key on a
    slice). mergekit reads a shared key from the slice first as well."""
    from mergekit.config import ConfigReader

    config = MergeConfiguration.model_validate(yaml.safe_load(SLICE_SHARED))
    levels = ConfigReader(config=config, t=0, slice_out=config.slices[0]).parameter_sources(None)
    assert [level["normalize"] for level in levels] == [True, False]  # mergekit's order for a shared key
    out = apply_recipe(Recipe.from_yaml(SLICE_SHARED), models.__getitem__)
    name = "model.layers.{}.mlp.up_proj.weight"
    for off in range(2):
        expect = (1.0 * models["a"][name.format(off)] + 3.0 * models["b"][name.format(2 + off)]) / 4.0
        torch.testing.assert_close(out[name.format(off)], expect)


def test_dtype_cast(models):
    text = TIES.replace("dtype: float32", "dtype: bfloat16")
    out = apply_recipe(Recipe.from_yaml(text), models.__getitem__)
    assert out["lm_head.weight"].dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (TIES.replace("merge_method: ties", "merge_method: magic"), "unknown merge_method 'magic'; use one of linear"),
        (TIES.replace("base_model: base\n", ""), "needs base_model"),
        (TIES.replace("density: 0.5", "density: 1.5"), r"density must be in \(0, 1\]"),
        (TIES.replace("value: 0.3", "value: 0.0"), r"density must be in \(0, 1\]"),
        (TIES.replace("lambda: 1.0", "lambda: .nan"), "NaN"),
        (TIES + FRANKEN.replace("merge_method: passthrough\n", ""), "exactly one of 'models' or 'slices'"),
        ("merge_method: linear\n", "exactly one of 'models' or 'slices'"),
        (
            FRANKEN.replace("layer_range: [1, 4]", "layer_range: [1, 4]}, {model: base, layer_range: [0, 3]"),
            "exactly one source",
        ),
        (SLICED_LINEAR.replace("[2, 4]", "[1, 4]"), "same number of layers"),
        ("merge_method: slerp\nbase_model: base\nmodels: [{model: a}, {model: b}]\n", "exactly 2"),
        ("merge_method: slerp\nbase_model: base\nmodels: [{model: base}]\n", "exactly 2"),
        ("merge_method: ties\nbase_model: base\nslices:\n  - sources: [{model: a, layer_range: [0, 2]}, "
         "{model: b, layer_range: [0, 2]}]\n", "base_model 'base' must be one of its sources"),
        (TIES + "tokenizer_source: chat\n", "tokenizer_source must be base, union or one of the recipe's models"),
        # a key no method reads is a typo (it merged as if absent: unsparsified), in a models or a slices recipe
        (TIES.replace("density: 0.5", "densty: 0.5"), r"models\[1\] has unknown parameter\(s\) 'densty'"),
        (SLICED_LINEAR.replace("weight: 0.25", "wieght: 0.25"), r"slices\[0\] has unknown parameter\(s\) 'wieght'"),
    ],
)
def test_validate_errors(text, match):
    with pytest.raises(ValueError, match=match):
        Recipe.from_yaml(text).validate()


def test_parse_and_known_model_errors():
    with pytest.raises(ValueError, match="unknown model 'b'"):
        Recipe.from_yaml(TIES).validate(["base", "a"])
    with pytest.raises(ValueError, match="unsupported recipe key"):
        Recipe.from_yaml("merge_method: ties\nmodules: {}\n")
    with pytest.raises(ValueError, match="needs a merge_method"):
        Recipe.from_yaml("models: [{model: a}]\n")
    with pytest.raises(ValueError, match="layer_range"):
        Recipe.from_yaml("merge_method: passthrough\nslices: [{sources: [{model: a, layer_range: [3, 1]}]}]\n")
    with pytest.raises(ValueError, match="layer_range"):  # an empty range, [a, a)
        Recipe.from_yaml("merge_method: passthrough\nslices: [{sources: [{model: a, layer_range: [2, 2]}]}]\n")


@pytest.mark.parametrize("text, message", [
    ("merge_method: ties\nmodels:\n  - model: base\n   parameters: {weight: 1\n",
     "bad.yaml is not valid YAML at line 4, column 4"),
    ("- a\n- b\n", "bad.yaml is not a mergekit recipe"),
])
def test_merge_apply_with_a_broken_recipe_is_one_line_naming_file_and_place(tmp_path, text, message):
    (tmp_path / "bad.yaml").write_text(text)
    res = run("merge", "apply", "bad.yaml", "--out", "merged", "--device", "cpu", cwd=tmp_path, timeout=120)
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1 and message in res.stderr, res.stderr
    assert not (tmp_path / "merged").exists()


def test_tied_embeddings_merge_once_under_the_embeddings_parameters():
    """SmolLM2 ties lm_head to the embeddings: its state dict names one tensor twice. The embeddings are merged
    with the embed_tokens filter's value and lm_head is that same tensor (loading lm_head's own merge last made
    the embedding genes of an evolved recipe do nothing)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from workbench.merge.recipe import tied_aliases

    def tied(seed: int):
        torch.manual_seed(seed)
        return LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                            num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True))

    nets = {name: tied(i) for i, name in enumerate(["a", "b"])}
    sds = {n: m.state_dict() for n, m in nets.items()}
    assert tied_aliases(sds["a"]) == {"lm_head.weight": "model.embed_tokens.weight"}
    recipe = Recipe.from_yaml("""
merge_method: linear
models:
  - model: a
    parameters: {weight: [{filter: embed_tokens, value: 0.9}, {filter: lm_head, value: 0.1}, {value: 0.5}]}
  - model: b
    parameters: {weight: [{filter: embed_tokens, value: 0.1}, {filter: lm_head, value: 0.9}, {value: 0.5}]}
dtype: float32
""")
    out = apply_recipe(recipe, sds.__getitem__)
    expect = 0.9 * sds["a"]["model.embed_tokens.weight"] + 0.1 * sds["b"]["model.embed_tokens.weight"]
    torch.testing.assert_close(out["model.embed_tokens.weight"], expect)
    assert out["lm_head.weight"] is out["model.embed_tokens.weight"]
    merged = tied(5)
    merged.load_state_dict(out, strict=True)
    torch.testing.assert_close(merged.get_input_embeddings().weight, expect)
    assert merged.lm_head.weight.data_ptr() == merged.get_input_embeddings().weight.data_ptr()
    # the views see the tensors that merge: the alias is not a head of its own
    from workbench.merge.analysis import task_vector_norms

    assert "lm_head" not in task_vector_norms(sds["a"], {"b": sds["b"]})
    # a tied model with an untied one of the same shape: each keeps its lm_head (the tied one's is its embeddings)
    untied = LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                          num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False))
    mixed = apply_recipe(recipe, {"a": sds["a"], "b": untied.state_dict()}.__getitem__)
    torch.testing.assert_close(mixed["lm_head.weight"], 0.1 * sds["a"]["model.embed_tokens.weight"]
                               + 0.9 * untied.state_dict()["lm_head.weight"])
    meta = {"x": torch.empty(4, 4, device="meta"), "y": torch.empty(4, 4, device="meta")}
    assert tied_aliases(meta) == {}


def test_an_alias_only_some_models_tie_is_merged_as_a_tensor_of_its_own():
    """lm_head is merged once as the embeddings' alias only when EVERY model ties it: with a third, untied model
    its own lm_head takes part (the tied ones bring their embeddings)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    def net(seed: int, tie: bool):
        torch.manual_seed(seed)
        return LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                            num_attention_heads=2, num_key_value_heads=1,
                                            tie_word_embeddings=tie)).state_dict()

    sds = {"a": net(0, True), "b": net(1, True), "c": net(2, False)}
    recipe = Recipe.from_yaml("merge_method: linear\nmodels: [{model: a, parameters: {weight: 1}}, "
                              "{model: b, parameters: {weight: 1}}, {model: c, parameters: {weight: 2}}]\n")
    out = apply_recipe(recipe, sds.__getitem__)
    emb = "model.embed_tokens.weight"
    head = (sds["a"][emb] + sds["b"][emb] + 2 * sds["c"]["lm_head.weight"]) / 4
    torch.testing.assert_close(out["lm_head.weight"], head)
    torch.testing.assert_close(out[emb], (sds["a"][emb] + sds["b"][emb] + 2 * sds["c"][emb]) / 4)


def test_recipe_table_shows_mergekit_default_density():
    """A TIES recipe that leaves density out keeps everything (mergekit's default 1.0): the explorer's density
    heatmap says 1, not a blank; a method without density has none."""
    from workbench.merge.views import recipe_table

    ties = recipe_table(Recipe.from_yaml("merge_method: ties\nbase_model: base\nmodels:\n  - model: a\n"
                                         "    parameters: {weight: 0.5}\n"), 4)
    assert (ties["density"] == 1.0).all() and (ties["weight"] == 0.5).all()
    linear = recipe_table(Recipe.from_yaml("merge_method: linear\nmodels:\n  - model: a\n    parameters: {weight: 1}\n"
                                           "  - model: b\n    parameters: {weight: 1}\n"), 4)
    assert linear["density"].isna().all()
