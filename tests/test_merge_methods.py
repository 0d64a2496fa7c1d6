"""workbench.merge.methods / state / analysis: conformance with mergekit's in-memory API, DARE statistics,
parameter resolution (gradients, filters, precedence) and every bad-input error."""

import math

import pytest
import torch
from mergekit.config import evaluate_setting as mk_evaluate_setting
from mergekit.merge_methods.api import merge_state_dicts as mk_merge_state_dicts
from mergekit.merge_methods.api import merge_tensors as mk_merge_tensors

from workbench.merge.analysis import dare_kept_fraction, sign_conflict_rate, task_vector_cosine, task_vector_norms
from workbench.merge.bench import bench_merge_tensors, synthetic_llama
from workbench.merge.methods import METHODS, merge_tensors
from workbench.merge.state import evaluate_setting, gradient_t, merge_state_dicts

SHAPES = [(13,), (31, 17), (3, 8, 5)]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def inputs(shape, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=g)
    return [base] + [base + 0.3 * torch.randn(shape, generator=g) for _ in range(n - 1)]


CASES = [
    ("linear", {"weight": [0.3, 0.5, 0.9]}, None),
    ("linear", {"weight": [0.3, -0.5, 0.9], "normalize": False}, 1),
    ("linear", {"weight": 0.7}, None),
    ("task_arithmetic", {"weight": [0.3, -0.5]}, 0),
    ("task_arithmetic", {"weight": [0.3, 0.5], "normalize": True, "lambda": 0.7}, 2),
    ("ties", {"weight": [0.3, 0.5], "density": [0.4, 0.7]}, 0),
    ("ties", {"weight": [0.3, -0.5], "density": 0.5, "normalize": False, "lambda": 1.3}, 1),
    ("ties", {"weight": [0.3, -0.5], "density": 0.5}, 0),  # normalised by the signed weights, as mergekit
    ("ties", {"weight": [1.0, 0.5], "density": 0.2, "rescale": True}, 2),
    ("ties", {"weight": 1.0, "density": 1.0}, 1),
    ("dare_ties", {"weight": [0.3, 0.5], "density": 1.0}, 1),
    ("dare_ties", {"weight": [0.3, 0.5], "density": 1.0, "normalize": True, "lambda": 0.5}, 0),
    ("dare_linear", {"weight": [0.3, 0.5], "density": 1.0, "normalize": True}, 2),
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("method", "params", "base_index"), CASES)
def test_matches_mergekit(shape, method, params, base_index):
    ts = inputs(shape, seed=len(shape))
    ours = merge_tensors(ts, method, parameters=params, base_index=base_index)
    theirs = mk_merge_tensors(ts, method, parameters=params, base_index=base_index)
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    assert rel_err(ours, theirs) <= 1e-5


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("t", [0.0, 0.25, 0.5, 1.0])
@pytest.mark.parametrize("base_index", [0, 1])
def test_slerp_matches_mergekit(shape, t, base_index):
    ts = inputs(shape, n=2)
    ours = merge_tensors(ts, "slerp", parameters={"t": t}, base_index=base_index)
    theirs = mk_merge_tensors(ts, "slerp", parameters={"t": t}, base_index=base_index)
    assert rel_err(ours, theirs) <= 1e-5
    if t == 0:  # base_index picks the t = 0 end
        torch.testing.assert_close(ours, ts[base_index])


def test_slerp_colinear_falls_back_to_lerp():
    a = torch.randn(50)
    out = merge_tensors([a, 2 * a], "slerp", parameters={"t": 0.25}, base_index=0)
    torch.testing.assert_close(out, 1.25 * a)
    theirs = mk_merge_tensors([a, 2 * a], "slerp", parameters={"t": 0.25}, base_index=0)
    assert rel_err(out, theirs) <= 1e-5


def test_ties_hand_computed():
    base = torch.zeros(4)
    a = torch.tensor([1.0, -2.0, 3.0, 0.1])
    b = torch.tensor([-3.0, 1.0, 1.0, 0.2])
    out = merge_tensors([base, a, b], "ties", parameters={"weight": 1.0, "density": 0.75}, base_index=0)
    # trim keeps |.| top 3 of 4: a → [1, -2, 3, 0], b → [-3, 1, 1, 0]; sums [-2, -1, 4, 0] → signs [-, -, +, +]
    # agreeing entries: [-3], [-2], [3, 1], none → mean [-3, -2, 2, 0]
    torch.testing.assert_close(out, torch.tensor([-3.0, -2.0, 2.0, 0.0]))


def test_ties_trim_keeps_exactly_k_of_tied_magnitudes():
    """Task vectors of bf16 checkpoints are quantised, so many magnitudes tie at the top-k threshold: the trim
    keeps exactly k = ⌊d·n⌋ entries, as mergekit does (its argsort picks some k of the ties)."""
    from workbench.merge.methods import _magnitude_trim_

    g = torch.Generator().manual_seed(3)
    base = torch.randn(512, 512, generator=g).bfloat16()
    tuned = (base.float() + 5e-4 * torch.randn(512, 512, generator=g)).bfloat16()
    for density in (0.3, 0.5, 0.05):
        tau = tuned.float() - base.float()
        mag = tau.abs().reshape(-1)
        k = int(density * tau.numel())
        assert int((mag >= mag.kthvalue(mag.numel() - k + 1).values).sum()) > k  # the threshold is tied
        nonzero_before = int((tau != 0).sum())
        _magnitude_trim_(tau, density, rescale=False)
        kept = tau.reshape(-1) != 0
        assert int(kept.sum()) == min(k, nonzero_before)
        assert float(tau.abs().reshape(-1)[kept].min()) >= float(mag.kthvalue(mag.numel() - k + 1).values)
        ours = merge_tensors([base.float(), tuned.float()], "ties", parameters={"weight": 1.0, "density": density},
                             base_index=0)
        theirs = mk_merge_tensors([base.float(), tuned.float()], "ties", parameters={"weight": 1.0,
                                                                                     "density": density}, base_index=0)
        assert int(((ours - base.float()) != 0).sum()) == int(((theirs - base.float()) != 0).sum())


def test_bf16_inputs_keep_dtype():
    ts = [t.bfloat16() for t in inputs((8, 8))]
    out = merge_tensors(ts, "ties", parameters={"weight": 0.5, "density": 0.5}, base_index=0)
    assert out.dtype == torch.bfloat16


def test_slerp_anti_colinear_falls_back_to_lerp():
    """|dot| > 0.9995 on either side: opposite vectors (θ = π, sin θ ≈ 0) lerp too, as mergekit does."""
    a = torch.randn(50, generator=torch.Generator().manual_seed(2))
    out = merge_tensors([a, -2 * a], "slerp", parameters={"t": 0.25}, base_index=0)
    torch.testing.assert_close(out, 0.25 * a)
    theirs = mk_merge_tensors([a, -2 * a], "slerp", parameters={"t": 0.25}, base_index=0)
    assert rel_err(out, theirs) <= 1e-5


def test_ties_trim_keeps_tied_magnitudes_in_index_order():
    """Among magnitudes tied at the threshold the trim keeps the first ones (module doc: ties in index order)."""
    base = torch.zeros(8)
    tau = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, 3.0])
    out = merge_tensors([base, tau], "ties", parameters={"weight": 1.0, "density": 0.5}, base_index=0)
    torch.testing.assert_close(out, torch.tensor([1.0, -1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 3.0]))


def test_task_arithmetic_normalizes_by_a_negative_weight_sum_as_mergekit():
    """normalize divides by Σw whatever its sign; only |Σw| < 1e-8 is left undivided."""
    ts = inputs((5, 4))
    params = {"weight": [-0.3, -0.5], "normalize": True}
    ours = merge_tensors(ts, "task_arithmetic", parameters=params, base_index=0)
    theirs = mk_merge_tensors(ts, "task_arithmetic", parameters=params, base_index=0)
    assert rel_err(ours, theirs) <= 1e-5
    torch.testing.assert_close(ours - ts[0], ((ts[1] - ts[0]) * 0.3 + (ts[2] - ts[0]) * 0.5) / 0.8)


@pytest.mark.parametrize("method", ["ties", "dare_ties"])
def test_sign_election_ties_go_to_plus(method):
    """s = sign(Σ wn·τ̃n) with + where the sum is exactly 0 (mergekit: majority sign = sum >= 0)."""
    base = torch.zeros(3)
    a = torch.tensor([1.0, 2.0, -0.5])
    ts = [base, a, -a]
    params = {"weight": 1.0, "density": 1.0}
    out = merge_tensors(ts, method, parameters=params, base_index=0)
    torch.testing.assert_close(out, torch.tensor([1.0, 2.0, 0.5]))
    torch.testing.assert_close(out, mk_merge_tensors(ts, method, parameters=params, base_index=0))


# ----------------------------------------------------------------------------------------------------- DARE


def dare_setup(n=200_000):
    g = torch.Generator().manual_seed(1)
    base = torch.randn(n, generator=g)
    return base, base + torch.randn(n, generator=g)


@pytest.mark.parametrize("density", [0.1, 0.5, 0.9])
def test_dare_kept_fraction_and_l1_rescale(density):
    base, x = dare_setup()
    tau = x - base
    gen = torch.Generator().manual_seed(3)
    out = merge_tensors(
        [base, x], "dare_linear", parameters={"weight": 1.0, "density": density}, base_index=0, generator=gen
    )
    kept = out - base
    frac = float((kept != 0).float().mean())
    sd = math.sqrt(density * (1 - density) / tau.numel())
    assert abs(frac - density) < 5 * sd
    # default rescale_norm="l1": the kept task vector has the L1 norm of the full one (mergekit convention)
    assert float(kept.abs().sum()) == pytest.approx(float(tau.abs().sum()), rel=1e-4)
    # survivors are τ times one common factor
    mask = kept != 0
    ratio = kept[mask] / tau[mask]
    assert float(ratio.std()) < 1e-3 * float(ratio.mean())


def test_ties_rescale_takes_its_rescale_norm():
    """ties with rescale: "inverse" is 1/density on the kept magnitudes (it was accepted and L1 ran)."""
    base, x = dare_setup(10_000)
    tau = x - base
    params = {"weight": 1.0, "density": 0.3, "rescale": True, "normalize": False}
    inverse = merge_tensors([base, x], "ties", parameters={**params, "rescale_norm": "inverse"}, base_index=0) - base
    l1 = merge_tensors([base, x], "ties", parameters=params, base_index=0) - base
    mask = inverse != 0
    assert int(mask.sum()) == int(0.3 * tau.numel())
    torch.testing.assert_close(inverse[mask], tau[mask] / 0.3, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(inverse, l1)


def test_dare_inverse_rescale_and_no_rescale():
    base, x = dare_setup(10_000)
    tau = x - base
    params = {"weight": 1.0, "density": 0.3, "rescale_norm": "inverse"}
    out = merge_tensors(
        [base, x], "dare_linear", parameters=params, base_index=0, generator=torch.Generator().manual_seed(0)
    )
    kept = out - base
    mask = kept != 0
    torch.testing.assert_close(kept[mask], tau[mask] / 0.3, rtol=1e-4, atol=1e-5)
    out = merge_tensors(
        [base, x],
        "dare_linear",
        parameters={**params, "rescale": False},
        base_index=0,
        generator=torch.Generator().manual_seed(0),
    )
    torch.testing.assert_close((out - base)[mask], tau[mask], rtol=1e-4, atol=1e-5)


def test_dare_deterministic_per_seed():
    ts = inputs((64, 64))
    params = {"weight": [0.5, 0.5], "density": 0.4}

    def run(seed):
        return merge_tensors(
            ts, "dare_ties", parameters=params, base_index=0, generator=torch.Generator().manual_seed(seed)
        )

    assert torch.equal(run(7), run(7))
    assert not torch.equal(run(7), run(8))


def test_dare_ties_sign_election():
    # with density 1 nothing is dropped: DARE-TIES must equal TIES-style sign election without trimming
    base = torch.zeros(3)
    a = torch.tensor([1.0, -1.0, 2.0])
    b = torch.tensor([-3.0, 2.0, 1.0])
    out = merge_tensors([base, a, b], "dare_ties", parameters={"weight": 1.0, "density": 1.0}, base_index=0)
    torch.testing.assert_close(out, torch.tensor([-3.0, 2.0, 3.0]))  # sums [-2, 1, 3]; normalize off
    # with drops: DARE-TIES = the DARE-dropped task vectors (same generator draws) merged by sign election
    ts = inputs((40, 30))
    p = {"density": 0.5, "weight": [0.7, 0.4]}

    def dropped(weights):
        g = torch.Generator().manual_seed(11)
        return merge_tensors(ts, "dare_linear", parameters={**p, "weight": weights}, base_index=0, generator=g)

    drop_a, drop_b = dropped([1.0, 0.0]), dropped([0.0, 1.0])
    out = merge_tensors(ts, "dare_ties", parameters=p, base_index=0, generator=torch.Generator().manual_seed(11))
    expect = mk_merge_tensors(
        [ts[0], drop_a, drop_b], "ties", parameters={**p, "density": 1.0, "normalize": False}, base_index=0
    )
    assert rel_err(out, expect) <= 1e-5
    assert (
        rel_err(out, merge_tensors(ts, "ties", parameters={**p, "density": 1.0, "normalize": False}, base_index=0))
        > 1e-2
    )


# ----------------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(method="nope", parameters={"weight": 1}), "unknown merge method 'nope'.*linear, task_arithmetic, ties"),
        (dict(method="ties", parameters={"weight": 1}), "needs a base"),
        (dict(method="ties", parameters={"weight": 1, "density": 0.0}, base_index=0), r"density must be in \(0, 1\]"),
        (dict(method="ties", parameters={"weight": 1, "density": 1.5}, base_index=0), r"density must be in \(0, 1\]"),
        (dict(method="ties", parameters={"weight": [1, 2, 3]}, base_index=0), "needs 2 values"),
        (dict(method="linear", parameters={"weight": [1, 2]}), "needs 3 values"),
        (dict(method="task_arithmetic", parameters={"weight": float("nan")}, base_index=0), "finite"),
        (dict(method="task_arithmetic", parameters={"weight": 1, "lambda": float("nan")}, base_index=0), "finite"),
        (dict(method="task_arithmetic", parameters={}, base_index=0), "missing parameter 'weight'"),
        (dict(method="ties", parameters={"weight": 1, "bogus": 1}, base_index=0), "unknown parameter"),
        (dict(method="slerp", parameters={"t": 0.5}, base_index=0), "exactly 2"),
        (dict(method="ties", parameters={"weight": 1, "rescale_norm": "l2"}, base_index=0), "rescale_norm"),
        (dict(method="linear", parameters={"weight": [1, -1, 0]}), "sum to 0"),
        (dict(method="ties", parameters={"weight": 1, "normalize": "maybe"}, base_index=0), "true or false"),
        (dict(method="ties", parameters={"weight": 1}, base_index=3), "base_index 3 out of range for 3 inputs"),
    ],
)
def test_bad_input_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        merge_tensors(inputs((4, 4)), **kwargs)


def test_shape_and_slerp_base_errors():
    with pytest.raises(ValueError, match=r"'w'.*\(4, 4\), \(4, 5\)"):
        merge_tensors([torch.zeros(4, 4), torch.zeros(4, 5)], "linear", parameters={"weight": 1}, name="w")
    with pytest.raises(ValueError, match="slerp needs a base"):
        merge_tensors(inputs((4,), n=2), "slerp", parameters={"t": 0.5})
    with pytest.raises(ValueError, match="'t'"):
        merge_tensors(inputs((4,), n=2), "slerp", base_index=0)
    with pytest.raises(ValueError, match="floating-point"):
        merge_tensors([torch.zeros(3, dtype=torch.long)] * 2, "linear", parameters={"weight": 1})


def test_methods_tuple():
    assert METHODS == ("linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "slerp")


# ----------------------------------------------------------------------------------------------------- state dicts


def tiny(seed, layers=4):
    return synthetic_llama(layers, 8, 16, 2, 1, 20, seed=seed)


def test_evaluate_setting_matches_mergekit():
    from pydantic import TypeAdapter

    fl = TypeAdapter(float).validate_python
    settings = [
        0.4,
        [0.0, 1.0],
        [0.1, 0.9, 0.3],
        [0.2, 0.5, 0.7, 1.0, 0.0],
        [{"filter": "mlp", "value": [0.0, 1.0]}, {"value": 0.25}],
        [{"filter": "self_attn", "value": 0.8}],
        {"filter": "*", "value": [1.0, 2.0]},
    ]
    for setting in settings:
        for name in ["model.layers.3.mlp.up_proj.weight", "model.layers.3.self_attn.q_proj.weight", "lm_head.weight"]:
            for t in [0.0, 0.2, 1 / 3, 0.5, 0.77, 1.0]:
                ours = evaluate_setting("weight", setting, name, t)
                mk_setting = setting
                if isinstance(setting, dict) or (isinstance(setting, list) and isinstance(setting[0], dict)):
                    from mergekit.config import ConditionalParameter

                    items = setting if isinstance(setting, list) else [setting]
                    mk_setting = [ConditionalParameter(**c) for c in items]
                theirs = mk_evaluate_setting(name, mk_setting, t, validate=fl)
                assert (ours is None and theirs is None) or ours == pytest.approx(theirs, abs=1e-12)


def test_gradient_t_convention():
    assert gradient_t("model.layers.0.mlp.up_proj.weight", 5) == 0
    assert gradient_t("model.layers.4.mlp.up_proj.weight", 5) == 1
    assert gradient_t("model.layers.1.mlp.up_proj.weight", 5) == 0.25
    assert gradient_t("model.layers.0.mlp.up_proj.weight", 1) == 1  # mergekit: single layer → t = 1
    for name in ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"]:
        assert gradient_t(name, 5) == 0  # mergekit plans non-layer weights with t = 0


@pytest.mark.parametrize("method", ["linear", "task_arithmetic", "ties", "dare_ties"])
def test_state_dicts_match_mergekit_scalar_params(method):
    models = {"base": tiny(0), "a": tiny(1), "b": tiny(2)}
    params = {"weight": 0.6, "density": 0.5 if method == "ties" else 1.0}
    if method == "linear":
        params = {"weight": 0.6}
    ours = merge_state_dicts(models, method, base="base", parameters=params)
    theirs = mk_merge_state_dicts(models, method, base="base", parameters=params)
    assert list(ours) == list(theirs)
    for k in ours:
        assert rel_err(ours[k], theirs[k]) <= 1e-5, k


def test_state_dicts_default_density_is_one_as_mergekit():
    """A TIES merge whose recipe sets no density keeps every entry (mergekit's default density 1.0)."""
    models = {"base": tiny(0), "a": tiny(1), "b": tiny(2)}
    ours = merge_state_dicts(models, "ties", base="base", parameters={"weight": 0.6})
    dense = merge_state_dicts(models, "ties", base="base", parameters={"weight": 0.6, "density": 1.0})
    theirs = mk_merge_state_dicts(models, "ties", base="base", parameters={"weight": 0.6})
    for k in ours:
        assert torch.equal(ours[k], dense[k]) and rel_err(ours[k], theirs[k]) <= 1e-5, k


def test_state_dict_gradient_filter_precedence_by_hand():
    models = {"base": tiny(0, 5), "a": tiny(1, 5), "b": tiny(2, 5)}
    params = {"weight": [0.0, 1.0], "normalize": False}
    model_params = {"a": {"weight": [{"filter": "mlp", "value": [1.0, 0.0]}]}}  # no match outside mlp → global
    out = merge_state_dicts(models, "task_arithmetic", base="base", parameters=params, model_parameters=model_params)
    for name, _t, wa, wb in [
        ("model.layers.1.mlp.up_proj.weight", 0.25, 0.75, 0.25),
        ("model.layers.1.self_attn.q_proj.weight", 0.25, 0.25, 0.25),
        ("model.layers.4.mlp.down_proj.weight", 1.0, 0.0, 1.0),
        ("model.embed_tokens.weight", 0.0, 0.0, 0.0),
        ("lm_head.weight", 0.0, 0.0, 0.0),
    ]:
        b = models["base"][name]
        expect = b + wa * (models["a"][name] - b) + wb * (models["b"][name] - b)
        torch.testing.assert_close(out[name], expect, msg=name)


def test_state_dict_dare_deterministic_and_order_free():
    models = {"base": tiny(0), "a": tiny(1), "b": tiny(2)}
    p = {"weight": 0.5, "density": 0.5}
    one = merge_state_dicts(models, "dare_ties", base="base", parameters=p, seed=3)
    reordered = {"base": models["base"], "a": dict(reversed(list(models["a"].items()))), "b": models["b"]}
    two = merge_state_dicts(reordered, "dare_ties", base="base", parameters=p, seed=3)
    assert all(torch.equal(one[k], two[k]) for k in one)
    three = merge_state_dicts(models, "dare_ties", base="base", parameters=p, seed=4)
    assert not all(torch.equal(one[k], three[k]) for k in one)


def test_state_dict_non_float_and_errors():
    models = {"base": tiny(0), "a": tiny(1)}
    for sd in models.values():
        sd["buf"] = torch.arange(3)
    out = merge_state_dicts(models, "linear", parameters={"weight": 1})
    assert torch.equal(out["buf"], torch.arange(3))
    models["a"]["buf"] = torch.arange(1, 4)
    with pytest.raises(ValueError, match="non-float tensor 'buf' differs"):
        merge_state_dicts(models, "linear", parameters={"weight": 1})
    del models["a"]["buf"]
    with pytest.raises(ValueError, match="a lacks buf"):
        merge_state_dicts(models, "linear", parameters={"weight": 1})
    models["a"]["buf"] = torch.arange(4)
    with pytest.raises(ValueError, match=r"shape mismatch for tensor 'buf'.*'base': \(3,\), 'a': \(4,\)"):
        merge_state_dicts(models, "linear", parameters={"weight": 1})
    models["a"]["buf"] = torch.arange(3)
    with pytest.raises(ValueError, match="unknown model"):
        merge_state_dicts(models, "linear", parameters={"weight": 1}, model_parameters={"zz": {"weight": 1}})
    with pytest.raises(ValueError, match="base model 'zz'"):
        merge_state_dicts(models, "ties", base="zz", parameters={"weight": 1})
    with pytest.raises(ValueError, match="unknown merge method"):
        merge_state_dicts(models, "nope")
    with pytest.raises(ValueError, match="missing parameter 'weight' for model"):
        merge_state_dicts(models, "ties", base="base", parameters={"weight": [{"filter": "mlp", "value": 1}]})


# ----------------------------------------------------------------------------------------------------- analysis


def test_analysis_helpers():
    base = tiny(0, 3)
    experts = {"a": {k: v + 0.01 * torch.randn_like(v) for k, v in base.items()}}
    experts["b"] = {k: 2 * v - base[k] for k, v in experts["a"].items()}  # τ_b = 2 τ_a
    experts["c"] = {k: 2 * base[k] - v for k, v in experts["a"].items()}  # τ_c = −τ_a
    norms = task_vector_norms(base, experts)
    assert set(norms) == {"model.embed_tokens", "layers.0", "layers.1", "layers.2", "model.norm", "lm_head"}
    assert norms["layers.1"]["b"] == pytest.approx(2 * norms["layers.1"]["a"], rel=1e-5)
    cos = task_vector_cosine(base, experts)
    torch.testing.assert_close(cos, torch.tensor([[1, 1, -1], [1, 1, -1], [-1, -1, 1]], dtype=torch.float64))
    assert sign_conflict_rate(base, {"a": experts["a"], "b": experts["b"]}, 0.5)["total"] == 0
    rate = sign_conflict_rate(base, {"a": experts["a"], "c": experts["c"]}, 1.0)
    assert rate["total"] == 1 and rate["per_layer"]["layers.0"] == 1
    # the election is over wn·τ̃n: a weight of −1 turns τ_c into τ_a (no conflict), a weight of 0 leaves c out
    opposite = {"a": experts["a"], "c": experts["c"]}
    assert sign_conflict_rate(base, opposite, 1.0, weights={"a": 1.0, "c": -1.0})["total"] == 0
    assert sign_conflict_rate(base, opposite, 1.0, weights={"a": 1.0, "c": 0.0})["total"] == 0
    # DARE-TIES elects signs over the entries DARE's random drop keeps, not the top-|τ| ones: with τ_c = −τ_a
    # the trim keeps the same entries of both (every one conflicts); independent drops at density d keep both
    # in d² of the d(2 − d) entries either keeps
    dropped = sign_conflict_rate(base, {"a": experts["a"], "c": experts["c"]}, 0.4, drop_seed=5)
    assert sign_conflict_rate(base, {"a": experts["a"], "c": experts["c"]}, 0.4)["total"] == 1
    assert dropped["total"] == pytest.approx(0.4 / 1.6, abs=0.03)
    kept = dare_kept_fraction(base, experts, 0.3, seed=1)
    assert abs(kept["model.embed_tokens"]["a"] - 0.3) < 0.05
    assert dare_kept_fraction(base, experts, 1.0)["layers.0"]["b"] == 1


def test_dare_kept_fraction_counts_only_nonzero_task_vector_entries():
    """The kept fraction is over the entries τ changed (an untouched weight is not 'dropped')."""
    base = {"w": torch.zeros(4000)}
    tau = torch.zeros(4000)
    tau[2000:] = 1.0
    expert = {"a": {"w": tau}}
    assert dare_kept_fraction(base, expert, 1.0)["w"]["a"] == 1.0
    assert dare_kept_fraction(base, expert, 0.5, seed=2)["w"]["a"] == pytest.approx(0.5, abs=0.05)


def test_dare_kept_fraction_matches_merge():
    models = {"base": tiny(0), "a": tiny(1)}
    out = merge_state_dicts(models, "dare_linear", base="base", parameters={"weight": 1, "density": 0.4}, seed=5)
    kept = dare_kept_fraction(models["base"], {"a": models["a"]}, 0.4, seed=5)
    name = "model.layers.2.mlp.up_proj.weight"
    frac = float(((out[name] - models["base"][name]) != 0).float().mean())
    assert frac == pytest.approx(kept["layers.2"]["a"], abs=0.02)


def test_views_resolve_the_evolved_per_layer_parameters_as_the_merge_does():
    """An evolved recipe's density differs per layer: the DARE kept fraction of each layer is the merge's own
    (same masks), and TIES sign conflicts follow the per-layer densities and weights, not one mean density."""
    from workbench.merge.analysis import recipe_setting
    from workbench.merge.recipe import Recipe, apply_recipe

    models = {"base": tiny(0), "a": tiny(1), "b": tiny(2)}
    recipe = Recipe.from_yaml("""
merge_method: dare_linear
base_model: base
models:
  - model: a
    parameters: {weight: 1.0, density: [{filter: embed_tokens, value: 0.9}, {value: [0.1, 0.9]}]}
dtype: float32
""")
    out = apply_recipe(recipe, models.__getitem__, seed=4)
    density = recipe_setting(recipe, "density", 4)
    kept = dare_kept_fraction(models["base"], {"a": models["a"]}, density, seed=4)
    from workbench.merge.analysis import layer_group

    changed, total = {}, {}
    for name, t in models["base"].items():
        g = layer_group(name)
        changed[g] = changed.get(g, 0) + int(((out[name] - t) != 0).sum())
        total[g] = total.get(g, 0) + int(((models["a"][name] - t) != 0).sum())
    assert {g: kept[g]["a"] for g in kept} == pytest.approx({g: changed[g] / total[g] for g in kept}, abs=1e-12)
    assert kept["layers.0"]["a"] < 0.2 < 0.8 < kept["layers.3"]["a"]  # the gradient 0.1 → 0.9 over the layers
    # TIES: per (expert, tensor) values give what one scalar per expert gives where they agree
    experts = {"a": models["a"], "b": models["b"]}
    assert sign_conflict_rate(models["base"], experts, lambda e, n: 0.4, lambda e, n: {"a": 1.0, "b": 0.3}[e]) \
        == sign_conflict_rate(models["base"], experts, 0.4, {"a": 1.0, "b": 0.3})
    graded = sign_conflict_rate(models["base"], experts, lambda e, n: 0.9 if "layers.3" in n else 0.1)
    assert graded["per_layer"]["layers.3"] > graded["per_layer"]["layers.0"]  # denser trims conflict more


def test_bench_smoke():
    res = bench_merge_tensors(1, methods=("ties",), vocab=256)
    assert res["ties"]["ours_gbps"] > 0 and res["ties"]["ratio"] > 0


def test_large_tensors_take_the_radix_threshold_and_still_match_mergekit():
    """Tensors of ≥ 2^20 entries find the top-k threshold through a histogram of float bits; the result must
    equal a plain kthvalue (also with tied magnitudes and zeros) and mergekit's TIES."""
    from workbench.merge.methods import _kth_largest

    g = torch.Generator().manual_seed(7)
    for density in (0.01, 0.5, 0.97):
        mag = torch.randn(1 << 21, generator=g).abs()
        mag[: 1 << 18] = torch.round(mag[: 1 << 18] * 50) / 50     # ties
        mag[-1000:] = 0.0
        k = max(1, int(density * mag.numel()))
        assert _kth_largest(mag, k) == torch.kthvalue(mag, mag.numel() - k + 1).values
    base = torch.randn(1024, 1100, generator=g)
    ts = [base, base + 0.01 * torch.randn(1024, 1100, generator=g), base + 0.01 * torch.randn(1024, 1100, generator=g)]
    params = {"weight": [0.7, 0.4], "density": 0.3}
    ours = merge_tensors(ts, "ties", parameters=params, base_index=0)
    theirs = mk_merge_tensors(ts, "ties", parameters=params, base_index=0)
    assert torch.linalg.vector_norm(ours - theirs) <= 1e-5 * torch.linalg.vector_norm(theirs)


def test_a_magnitude_cache_gives_the_same_merges_and_is_found_again():
    """Merges inside `magnitude_cache` read TIES thresholds from sorted |τ| kept between calls (an evolution
    merges the same sources once per candidate): every result equal, bit for bit, to one without a cache, at
    other densities, with tied (bf16) magnitudes, rescaled; a source changed in place is not read from the old
    entry; a budget too small caches nothing."""
    from workbench.merge.methods import MagnitudeCache, magnitude_cache

    g = torch.Generator().manual_seed(11)
    base = torch.randn(96, 80, generator=g).bfloat16()
    sources = [(base.float() + 3e-3 * torch.randn(96, 80, generator=g)).bfloat16() for _ in range(2)]
    cases = [{"weight": [0.6, 0.9], "density": [d, 1.3 * d]} for d in (0.1, 0.35, 0.7)]
    cases.append({"weight": 1.0, "density": 0.25, "rescale": True})
    cache = MagnitudeCache(1 << 20)
    untied = [torch.randn(50, 30, generator=g) for _ in range(3)]  # float32: no tied magnitudes
    for params in cases * 2:
        for inputs in ([base, *sources], untied):
            plain = merge_tensors(inputs, "ties", parameters=params, base_index=0)
            with magnitude_cache(cache):
                cached = merge_tensors(inputs, "ties", parameters=params, base_index=0)
            assert torch.equal(plain, cached)
        assert cache.used_bytes == 2 * (96 * 80 + 50 * 30) * 4  # one float32 |τ| per source, sorted once
    sources[0].mul_(-1.5)  # changed in place: its version moves on, the old entry is not read
    params = {"weight": [0.6, 0.9], "density": 0.3}
    with magnitude_cache(cache):
        cached = merge_tensors([base, *sources], "ties", parameters=params, base_index=0)
    assert torch.equal(cached, merge_tensors([base, *sources], "ties", parameters=params, base_index=0))
    assert cache.used_bytes == (3 * 96 * 80 + 2 * 50 * 30) * 4
    with torch.inference_mode():  # tensors without a version: merged as without a cache
        frozen = [t.clone() for t in (base, *sources)]
    with magnitude_cache(cache):
        assert torch.equal(merge_tensors(frozen, "ties", parameters=params, base_index=0), cached)
    assert cache.used_bytes == (3 * 96 * 80 + 2 * 50 * 30) * 4
    small = MagnitudeCache(96 * 80 * 4 - 1)
    with magnitude_cache(small):
        merge_tensors([base, *sources], "ties", parameters=params, base_index=0)
    assert small.used_bytes == 0


def test_merges_and_norms_do_not_depend_on_torch_threads(monkeypatch):
    """DARE's and TIES' L1 rescale and the task-vector norms add up whole tensors: a CPU sum of more than 32768
    entries is cut into torch's threads' parts, so the merge followed the thread count (1 thread vs 2: 1e-4 apart on
    a 512 × 256 tensor). Shorter sums keep torch's own bits."""
    from workbench.merge.methods import slerp, thread_free_sum
    from workbench.threads import torch_threads

    big = inputs((512, 256))
    wide = inputs((256, 1024), n=2)  # SLERP's dot (torch.dot, MKL's threads) followed them from 8192 entries
    params = {"weight": 0.5, "density": 0.3}
    runs = []
    for n in (1, 2):
        with torch_threads(n):
            runs.append([merge_tensors(big, m, parameters={**params, **({"rescale": True} if m == "ties" else {})},
                                       base_index=0, generator=torch.Generator().manual_seed(1))
                         for m in ("dare_linear", "dare_ties", "ties")]
                        + [slerp(0.3, *wide)]
                        + [task_vector_norms({"w": big[0]}, {"a": {"w": big[1]}, "b": {"w": big[2]}})])
    for a, b in zip(*runs, strict=True):
        assert a == b if isinstance(a, dict) else torch.equal(a, b)
    small = big[1][:64]
    assert torch.equal(thread_free_sum(small, l1=True), torch.linalg.vector_norm(small, 1))
    assert torch.equal(thread_free_sum(small), small.sum())
    assert math.isclose(float(thread_free_sum(big[1], l1=True)), float(big[1].double().abs().sum()), rel_tol=1e-6)
    # a long tensor in pieces (a 7B model's embedding copied whole), the same on any threads; half tensors too
    import workbench.merge.methods as methods

    monkeypatch.setattr(methods, "_SUM_PIECE", 40000)
    half = big[1].to(torch.bfloat16)
    sums = []
    for n in (1, 2):
        with torch_threads(n):
            sums.append([thread_free_sum(big[1]), thread_free_sum(half, l1=True)])
    assert all(torch.equal(a, b) for a, b in zip(*sums, strict=True)) and sums[0][1].dtype == torch.bfloat16
    assert math.isclose(float(sums[0][0]), float(big[1].double().sum()), rel_tol=1e-5, abs_tol=1e-3)


def test_torch_threads_sets_the_count_inside_and_gives_the_process_its_own_back():
    """From mutation sampling: the pinned count holds inside the block, and the count before comes back after it,
    also when the block raised."""
    from workbench.threads import torch_threads

    before = torch.get_num_threads()
    pinned = 2 if before == 1 else 1
    with torch_threads(pinned):
        assert torch.get_num_threads() == pinned
    assert torch.get_num_threads() == before
    with pytest.raises(KeyError), torch_threads(pinned):
        raise KeyError("stopped")
    assert torch.get_num_threads() == before


def test_two_threads_pinning_torch_threads_at_once_give_the_process_its_count_back():
    """From a probe of concurrent use: two pages of one server pinning torch's threads at once (two CycleQD elites
    rebuilt, each at its run's count) each gave back the count it saw as it began, the later one's being the
    earlier one's pin: the process (every later page thread) was left on 1 thread for good. In a fresh process whose
    count is 3: blocks of 1 and 2 threads, each open while the other begins and the first to begin ending first."""
    import subprocess
    import sys

    code = """if True:
        import threading, torch
        from workbench.threads import torch_threads
        torch.set_num_threads(3)
        a_in, b_in, a_out, seen = threading.Event(), threading.Event(), threading.Event(), {}

        def a():
            with torch_threads(1):
                a_in.set()
                b_in.wait()
                seen["a"] = torch.get_num_threads()
            a_out.set()

        def b():
            a_in.wait()
            with torch_threads(2):
                b_in.set()
                a_out.wait()
                seen["b"] = torch.get_num_threads()  # this thread's first read: after a gave the process 3
                with torch_threads(1):
                    pass
                seen["b nested"] = torch.get_num_threads()

        def fresh():
            seen["after"] = torch.get_num_threads()

        for group in ([a, b], [fresh]):
            threads = [threading.Thread(target=f) for f in group]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        print(seen["a"], seen["b"], seen["b nested"], seen["after"], torch.get_num_threads())
    """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    # each block its own count inside (b's after its nested block ended), and 3 again after both
    assert out.stdout.split() == ["1", "2", "2", "3", "3"], out.stdout
