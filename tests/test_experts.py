"""workbench.experts (Transformer², spec §4): SVF decompose / compose, expert mixing, CEM, the REINFORCE loss,
SVFModel on tiny random Llamas and the quick zoo, the REINFORCE trainer and its bit-exact resume, bad input."""

import json
import math

import numpy as np
import pytest
import torch

from workbench.experts import CEM, mix_params, reinforce_loss, svf_compose, svf_decompose

# --- small models ------------------------------------------------------------------------------------------


def tiny_llama(seed: int = 0, intermediate: int = 24):
    """A random 2-layer Llama with non-square MLP matrices (16 <-> 24): r = min(out, in) matters."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=20, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=2, intermediate_size=intermediate, max_position_embeddings=32,
                      tie_word_embeddings=False, initializer_range=0.3)  # large weights: logits of order 1
    return LlamaForCausalLM(cfg).eval()


IDS = torch.tensor([[1, 5, 7, 3, 9, 2, 4], [1, 8, 8, 6, 0, 11, 12]])


@pytest.fixture
def svf(tmp_path):
    from workbench.experts import SVFModel

    return SVFModel(tiny_llama(0), cache_dir=tmp_path / "svf")


# --- SVF: decompose and compose ----------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(7, 5), (5, 7), (6, 6)])
def test_svf_decompose_reconstructs_w(shape):
    W = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    U, S, Vh = svf_decompose(W)
    r = min(shape)
    assert U.shape == (shape[0], r) and S.shape == (r,) and Vh.shape == (r, shape[1])
    assert U.dtype == S.dtype == Vh.dtype == torch.float32
    assert torch.all(S[:-1] >= S[1:]) and torch.all(S >= 0)
    torch.testing.assert_close(U @ torch.diag(S) @ Vh, W, atol=1e-5, rtol=1e-5)
    # bf16 weights are decomposed in float32 (the float32 upcast of the same values)
    Ub, Sb, Vhb = svf_decompose(W.to(torch.bfloat16))
    assert Sb.dtype == torch.float32
    torch.testing.assert_close(Ub @ torch.diag(Sb) @ Vhb, W.to(torch.bfloat16).float(), atol=1e-5, rtol=1e-5)


def test_z_is_sigmoid_of_p_times_max_mult():
    """model-evolution.md: z = sigmoid(p)·max_mult (1 in the reference, where the factor is invisible)."""
    from workbench.experts.svf import z_from_params

    p = torch.tensor([0.1, -0.2, 1.5])
    torch.testing.assert_close(z_from_params(p), torch.sigmoid(p))
    torch.testing.assert_close(z_from_params(p, 2.0), 2 * torch.sigmoid(p))


def test_init_params_are_0_1_plus_0_01_standard_normal():
    """model-evolution.md: p starts at 0.1 + 0.01·N(0, 1), one float32 vector of length r per matrix (the start
    tests above check z's mean and the logits, which a noise of 0.02 or none at all passes too)."""
    from workbench.experts.svf import init_params

    p = init_params({"a.mlp.w": 40_000, "b.mlp.w": 3}, seed=4)
    assert [tuple(v.shape) for v in p.values()] == [(40_000,), (3,)] and p["a.mlp.w"].dtype == torch.float32
    a = p["a.mlp.w"].double()
    assert float(a.mean()) == pytest.approx(0.1, abs=2e-4)  # 0.01/√40000 = 5e-5 standard error
    assert float(a.std()) == pytest.approx(0.01, rel=0.02)  # about 0.35 % standard error
    again = init_params({"a.mlp.w": 40_000, "b.mlp.w": 3}, seed=4)
    assert all(torch.equal(p[n], again[n]) for n in p)


def test_svf_compose_rescale_keeps_uniform_z_and_the_unscaled_variant_does_not():
    W = torch.randn(6, 4, generator=torch.Generator().manual_seed(2))
    U, S, Vh = svf_decompose(W)
    z = torch.full((4,), 0.525)
    torch.testing.assert_close(svf_compose(U, S, Vh, z), W, atol=1e-5, rtol=1e-5)  # rescale is the default
    torch.testing.assert_close(svf_compose(U, S, Vh, z, rescale=True), W, atol=1e-5, rtol=1e-5)
    unscaled = svf_compose(U, S, Vh, z, rescale=False)
    torch.testing.assert_close(unscaled, 0.525 * W, atol=1e-5, rtol=1e-5)
    assert (unscaled - W).abs().max() > 0.1
    # a non-uniform z: the formula by hand, U·diag(σ⊙z)·Vᵀ·Σσ/Σ(σ⊙z)
    z = torch.tensor([0.9, 0.1, 0.5, 0.3])
    by_hand = U @ torch.diag(S * z) @ Vh * (S.sum() / (S * z).sum())
    torch.testing.assert_close(svf_compose(U, S, Vh, z), by_hand, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(svf_compose(U, S, Vh, z), W, atol=1e-3)


def test_svf_compose_is_differentiable_in_z_through_the_rescale():
    W = torch.randn(5, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)  # float64 factors for a tight finite-difference check
    z = torch.tensor([0.7, 0.4, 0.55], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: svf_compose(U, S, Vh, z), (z,))
    assert torch.autograd.gradcheck(lambda z: svf_compose(U, S, Vh, z, rescale=False), (z,))
    # the rescale makes W′ invariant to z -> c·z: the gradient along z is zero
    g, = torch.autograd.grad((svf_compose(U, S, Vh, z) * torch.randn(5, 3, dtype=torch.float64)).sum(), z)
    assert abs(float(g @ z.detach())) < 1e-10 and float(g.norm()) > 1e-3


def test_svf_bad_input():
    W = torch.randn(4, 3)
    U, S, Vh = svf_decompose(W)
    with pytest.raises(ValueError, match="length 3"):
        svf_compose(U, S, Vh, torch.ones(4))
    with pytest.raises(ValueError, match="2-D"):
        svf_decompose(torch.ones(3))
    with pytest.raises(ValueError, match="NaN"):
        svf_decompose(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))


# --- mixing ------------------------------------------------------------------------------------------------

def _experts():
    g = torch.Generator().manual_seed(4)
    keys = ["a.mlp.w", "b.mlp.w"]
    return [{"a.mlp.w": torch.randn(3, generator=g), "b.mlp.w": torch.randn(2, generator=g)} for _ in range(3)], keys


def test_mix_params_mixes_raw_parameters_per_matrix_and_per_expert():
    params, keys = _experts()
    alpha = np.array([[0.2, 0.5], [0.3, 0.0], [0.6, 0.9]])
    mixed = mix_params(params, alpha, keys)
    for m, key in enumerate(keys):  # the reference rule: Σ α p over RAW p, no sigmoid anywhere
        by_hand = sum(float(alpha[k, m]) * params[k][key] for k in range(3))
        torch.testing.assert_close(mixed[key], by_hand)
        assert not torch.allclose(mixed[key], sum(float(alpha[k, m]) * torch.sigmoid(params[k][key])
                                                  for k in range(3)))
    # (K, 1): one coefficient per expert, shared by every matrix
    per_expert = mix_params(params, [[0.5], [0.25], [0.25]], keys)
    for key in keys:
        torch.testing.assert_close(per_expert[key], 0.5 * params[0][key] + 0.25 * params[1][key]
                                   + 0.25 * params[2][key])
    # normalize: each column divided by its sum over the experts
    normed = mix_params(params, alpha, keys, normalize=True)
    for m, key in enumerate(keys):
        w = alpha[:, m] / alpha[:, m].sum()
        torch.testing.assert_close(normed[key], sum(float(w[k]) * params[k][key] for k in range(3)))
    # under SVF's rescale, normalising changes no weight (a column's positive factor scales z′ of its matrix,
    # and the rescale takes it out again); without the rescale it does
    from workbench.experts.svf import svf_compose

    g = torch.Generator().manual_seed(5)
    U, S, Vh = torch.linalg.svd(torch.randn(4, 3, generator=g), full_matrices=False)
    for rescale, same in ((True, True), (False, False)):
        w, w_normed = (svf_compose(U, S, Vh, m[keys[0]], rescale=rescale) for m in (mixed, normed))
        assert torch.allclose(w, w_normed, atol=1e-6) == same, rescale
    # the named variant "mix sigmoid(p)"
    sig = mix_params(params, alpha, keys, variant="sigmoid")
    for m, key in enumerate(keys):
        torch.testing.assert_close(sig[key], sum(float(alpha[k, m]) * torch.sigmoid(params[k][key])
                                                 for k in range(3)))
    # differentiable in alpha (a torch alpha stays in the graph)
    a = torch.tensor(alpha, dtype=torch.float32, requires_grad=True)
    mix_params(params, a, keys)[keys[0]].sum().backward()
    torch.testing.assert_close(a.grad[:, 0], torch.stack([p[keys[0]].sum() for p in params]))


def test_few_shot_mixing_defaults_to_the_references_raw_mix():
    """A run's few-shot mixing, left to its defaults, mixes the RAW p (no sigmoid), α per expert, unnormalised, with
    CEM's population 32 (`experts adapt` passes no --variant of its own: the config's default is what runs)."""
    from workbench.experts.adapt import AdaptConfig
    from workbench.experts.mixing import RAW

    cfg = AdaptConfig(model="m", experts=["e"])
    assert (cfg.variant, cfg.alpha, cfg.normalize, cfg.pop) == (RAW, "expert", False, 32)


def test_mix_params_bad_input():
    from workbench.experts import DegenerateMixtureError

    params, keys = _experts()
    for bad in (np.ones((3, 3)), np.ones((2, 2)), np.ones(2), np.ones((3, 2, 1))):
        with pytest.raises(ValueError, match=r"alpha must have shape \(3, 2\)"):
            mix_params(params, bad, keys)
    # one per expert as a flat list, as ExpertsModel.alphas and `experts eval --alpha` take it (a probe: refused)
    flat, column = mix_params(params, [0.2, 0.3, 0.5], keys), mix_params(params, [[0.2], [0.3], [0.5]], keys)
    assert all(torch.equal(flat[k], column[k]) for k in keys)
    with pytest.raises(ValueError, match=r"alpha must have shape \(3, 1\) or \(3,\), got \(2,\)"):
        mix_params(params, [0.5, 0.5], keys[:1])  # one matrix: one shape said, not "(3, 1) ... or (3, 1)"
    with pytest.raises(ValueError, match="NaN"):
        mix_params(params, [[np.nan], [1], [1]], keys)
    with pytest.raises(DegenerateMixtureError, match="b.mlp.w"):
        mix_params(params, [[1, 0], [1, 0], [1, 0]], keys, normalize=True)
    with pytest.raises(ValueError, match="'b.mlp.w'"):
        mix_params([params[0], {"a.mlp.w": params[1]["a.mlp.w"]}], [[1], [1]], keys)
    with pytest.raises(ValueError, match="different models"):
        mix_params([params[0], {"a.mlp.w": torch.ones(4), "b.mlp.w": torch.ones(2)}], [[1], [1]], keys)
    with pytest.raises(ValueError, match="variant"):
        mix_params(params, np.ones((3, 1)), keys, variant="softmax")


# --- CEM ---------------------------------------------------------------------------------------------------

def test_cem_ask_member0_is_previous_best_bounds_and_seed():
    cem = CEM(np.full(4, 0.5), 10.0, pop=32, seed=0)  # a huge std: most draws hit the bounds
    xs = cem.ask()
    assert xs.shape == (32, 4)
    np.testing.assert_array_equal(xs[0], np.full(4, 0.5))  # first population: the starting point
    assert xs.min() == 0.0 and xs.max() == 1.0 and ((xs == 0) | (xs == 1)).mean() > 0.5
    np.testing.assert_array_equal(xs, CEM(np.full(4, 0.5), 10.0, pop=32, seed=0).ask())
    assert not np.array_equal(xs, CEM(np.full(4, 0.5), 10.0, pop=32, seed=1).ask())
    best = cem.tell(xs, -np.abs(xs - 0.3).sum(1))
    nxt = cem.ask()
    np.testing.assert_array_equal(nxt[0], best)
    np.testing.assert_array_equal(best, xs[np.argmax(-np.abs(xs - 0.3).sum(1))])


def test_cem_tell_elite_mean_sample_std_and_best_member():
    rng = np.random.default_rng(7)
    xs = rng.random((32, 3))
    perf = rng.permutation(32).astype(float)  # distinct: the elites are the 6 highest
    cem = CEM(np.full(3, 1 / 3), 0.5, pop=32, elite_ratio=0.2, seed=0)
    assert cem.n_elites == 6
    default = CEM(np.full(3, 1 / 3))  # the spec's: population 32, elites int(0.2·32) = 6
    assert (default.pop, default.elite_ratio, default.n_elites) == (32, 0.2, 6)
    best = cem.tell(xs, perf)
    elites = xs[np.argsort(-perf)[:6]]
    np.testing.assert_allclose(cem.mean, elites.mean(0), rtol=0, atol=1e-15)
    n = 6  # the SAMPLE std, by hand: sqrt(Σ(x − x̄)² / (n − 1)), not the population std
    np.testing.assert_allclose(cem.std, np.sqrt(((elites - elites.mean(0)) ** 2).sum(0) / (n - 1)), atol=1e-15)
    assert not np.allclose(cem.std, elites.std(0))
    np.testing.assert_array_equal(best, xs[np.argmax(perf)])  # the best member, not the mean, is applied
    assert cem.best_perf == perf.max() and cem.best_index == int(np.argmax(perf)) and cem.generation == 1


def test_cem_ties_broken_by_log_likelihood_then_index():
    xs = np.linspace(0, 1, 10)[:, None].repeat(2, 1)
    perf = np.array([0.5, 0.8, 0.2, 0.8, 0.8, 0.1, 0.0, 0.3, 0.4, 0.6])
    ll = np.array([-1.0, -0.9, -0.1, -0.3, -0.7, 0.0, 0.0, 0.0, 0.0, 0.0])
    best = CEM(np.full(2, 0.5), 0.5, pop=10, elite_ratio=0.3, seed=0).tell(xs, perf, tie_break=ll)
    np.testing.assert_array_equal(best, xs[3])  # accuracy 0.8 three times; -0.3 is the highest log-lik
    best = CEM(np.full(2, 0.5), 0.5, pop=10, elite_ratio=0.3, seed=0).tell(xs, perf)
    np.testing.assert_array_equal(best, xs[1])  # no tie-break given: the lowest index among the ties


def test_cem_finds_a_target_and_resumes_bit_for_bit():
    from workbench.checkpoint import pack, unpack

    def fitness(xs):
        return -((xs - np.array([0.2, 0.7, 0.4])) ** 2).sum(1)

    cem = CEM(np.full(3, 1 / 3), 0.5, pop=32, seed=3)
    for _ in range(3):
        xs = cem.ask()
        cem.tell(xs, fitness(xs))
    tree, arrays = pack({"cem": cem})
    resumed = unpack(json.loads(json.dumps(tree)), arrays)["cem"]
    for opt in (cem, resumed):
        for _ in range(5):
            xs = opt.ask()
            opt.tell(xs, fitness(xs))
    np.testing.assert_array_equal(cem.mean, resumed.mean)
    np.testing.assert_array_equal(cem.std, resumed.std)
    np.testing.assert_array_equal(cem.best, resumed.best)
    np.testing.assert_allclose(cem.best, [0.2, 0.7, 0.4], atol=0.05)


def test_cem_bad_input():
    cem = CEM(np.zeros(2), 0.5, pop=10, seed=0)
    xs = cem.ask()
    with pytest.raises(ValueError, match="perf must hold one finite value per sample; sample 3 has nan"):
        cem.tell(xs, np.r_[np.zeros(3), np.nan, np.zeros(6)])  # said "got shape (10,)", the right shape
    with pytest.raises(ValueError, match="tie_break must hold one finite value per sample; sample 0 has inf"):
        cem.tell(xs, np.zeros(10), tie_break=np.r_[np.inf, np.zeros(9)])
    with pytest.raises(ValueError, match="perf"):
        cem.tell(xs, np.zeros(9))
    with pytest.raises(ValueError, match="tie_break"):
        cem.tell(xs, np.zeros(10), tie_break=np.zeros(3))
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        cem.tell(np.zeros((10, 3)), np.zeros(10))
    with pytest.raises(ValueError, match="at least 2"):
        cem.tell(xs[:5], np.zeros(5))  # int(0.2·5) = 1 elite: no sample std
    with pytest.raises(ValueError, match="at least 2"):
        CEM(np.zeros(2), 0.5, pop=8)
    with pytest.raises(ValueError, match="init_std"):
        CEM(np.zeros(2), [0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="lo < hi"):
        CEM(np.zeros(2), 0.5, bounds=(1.0, 0.0))


def test_cem_takes_the_ends_of_its_ranges():
    """init_std ≥ 0 and elite_ratio in (0, 1] take their closed ends (a start at one point; every member an elite),
    bounds need lo < hi strictly (lo == hi leaves nothing to search)."""
    cem = CEM(np.full(2, 0.25), 0.0, pop=10, seed=0)
    assert (cem.std == 0).all() and (cem.ask() == 0.25).all()
    every = CEM(np.zeros(2), 0.5, pop=3, elite_ratio=1, seed=0)
    xs = every.ask()
    every.tell(xs, np.arange(3.0))
    assert np.allclose(every.mean, xs.mean(axis=0))
    with pytest.raises(ValueError, match="lo < hi"):
        CEM(np.zeros(2), 0.5, bounds=(0.5, 0.5))


# --- the REINFORCE loss ------------------------------------------------------------------------------------

def _loss_by_hand(logits, ids, rewards, ref_logits=None, lam=0.0):
    """Plain-Python float64 loops over the formula of spec §4."""
    B, T, V = logits.shape
    total = 0.0
    for b in range(B):
        logp_seq, kl = 0.0, 0.0
        for t in range(T):
            if ids[b][t] < 0:
                continue
            row = [float(v) for v in logits[b, t]]
            lse = math.log(sum(math.exp(v) for v in row))
            logp_seq += row[ids[b][t]] - lse
            if ref_logits is not None:
                ref = [float(v) for v in ref_logits[b, t]]
                rlse = math.log(sum(math.exp(v) for v in ref))
                kl += sum(math.exp(r - rlse) * ((r - rlse) - (q - lse)) for r, q in zip(ref, row, strict=True))
        total += -rewards[b] * logp_seq + lam * kl
    return total / B


def test_reinforce_loss_matches_a_hand_computation():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(3, 4, 6, generator=g)
    ref_logits = torch.randn(3, 4, 6, generator=g)
    ids = [[2, 5, -100, -100], [0, 1, 2, 3], [4, -100, -100, -100]]  # -100: padding, ignored
    rewards = [1.0, -1.0, -1.0]
    tids = torch.tensor(ids)
    loss = reinforce_loss(logits, tids, rewards)
    assert loss.ndim == 0
    assert float(loss) == pytest.approx(_loss_by_hand(logits, ids, rewards), rel=1e-6)
    # λ > 0: + λ·KL(π_ref‖π_θ), summed over the generated tokens and the vocabulary, mean over the batch
    loss_kl = reinforce_loss(logits, tids, rewards, ref_logits=ref_logits, kl_coeff=0.3)
    assert float(loss_kl) == pytest.approx(_loss_by_hand(logits, ids, rewards, ref_logits, 0.3), rel=1e-6)
    # λ = 0 (the default) ignores ref_logits
    assert float(reinforce_loss(logits, tids, rewards, ref_logits=ref_logits)) == pytest.approx(float(loss))
    # padding contents do not matter; a mask does the same as negative ids
    other = logits.clone()
    other[0, 2:] = 100.0
    assert float(reinforce_loss(other, tids, rewards)) == pytest.approx(float(loss), rel=1e-6)
    mask = tids >= 0
    assert float(reinforce_loss(logits, tids.clamp(min=0), rewards, mask=mask)) == pytest.approx(float(loss))
    # gradient: d loss / d logits[b, t] = −r_b/B·(onehot − softmax) at generated positions
    lg = logits.clone().requires_grad_(True)
    reinforce_loss(lg, tids, rewards).backward()
    expected = -(rewards[1] / 3) * (torch.nn.functional.one_hot(torch.tensor(1), 6) - torch.softmax(logits[1, 1], -1))
    torch.testing.assert_close(lg.grad[1, 1], expected.float())
    assert float(lg.grad[0, 3].abs().max()) == 0.0


def test_reinforce_loss_bad_input():
    logits, ids = torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="NaN"):
        reinforce_loss(logits, ids, [1.0, float("nan")])
    with pytest.raises(ValueError, match=r"rewards must have shape \(2,\)"):
        reinforce_loss(logits, ids, [1.0])
    with pytest.raises(ValueError, match="ref_logits"):
        reinforce_loss(logits, ids, [1.0, 1.0], kl_coeff=0.1)
    with pytest.raises(ValueError, match=r"\(B, T, V\)"):
        reinforce_loss(logits, ids[:, :2], [1.0, 1.0])
    with pytest.raises(ValueError, match="vocabulary"):
        reinforce_loss(logits, ids + 4, [1.0, 1.0])


# --- SVFModel ----------------------------------------------------------------------------------------------

def test_svf_model_start_is_the_base_and_experts_change_the_logits(svf):
    model = svf.model
    assert svf.names == [f"model.layers.{i}.mlp.{k}_proj.weight" for i in range(2) for k in ("gate", "up", "down")]
    assert set(svf.sizes.values()) == {16} and svf.n_params == 6 * 16
    base = model(input_ids=IDS).logits.clone()
    # p uniform: z uniform, and the rescale returns the base weights (up to float32)
    svf.apply({n: torch.full((r,), 0.1) for n, r in svf.sizes.items()})
    torch.testing.assert_close(model(input_ids=IDS).logits, base, atol=1e-5, rtol=1e-5)
    # the initial p = 0.1 + 0.01·N(0, 1): z ≈ 0.525, still (almost) the base thanks to the rescale
    p0 = svf.init_params(seed=0)
    z = torch.cat([torch.sigmoid(p) for p in p0.values()])
    assert abs(float(z.mean()) - 0.525) < 0.002
    svf.apply(p0)
    near = (model(input_ids=IDS).logits - base).abs().max()
    assert near < 0.02 * base.abs().max()  # z varies by ±0.5% around 0.525: logits move by about 1%
    # ... which the unscaled variant is not (its W′ ≈ 0.525·W)
    from workbench.experts import SVFModel

    unscaled = SVFModel(tiny_llama(0), cache_dir=svf.cache_path.parent, rescale=False)
    unscaled.apply(p0)
    assert (unscaled.model(input_ids=IDS).logits - base).abs().max() > 20 * near
    # a trained-looking expert changes the logits; reset brings back the base bit for bit
    g = torch.Generator().manual_seed(9)
    expert = {n: torch.randn(r, generator=g) * 3 for n, r in svf.sizes.items()}
    svf.apply(expert)
    assert (model(input_ids=IDS).logits - base).abs().max() > 0.3 * base.abs().max()
    svf.apply(None)
    assert torch.equal(model(input_ids=IDS).logits, base)


def test_svf_model_composes_once_and_matches_the_differentiable_path(svf):
    model = svf.model
    g = torch.Generator().manual_seed(10)
    expert = {n: torch.randn(r, generator=g) for n, r in svf.sizes.items()}
    params_before = [id(p) for p in model.parameters()]
    svf.apply(expert)
    # inference costs what the base costs: the same modules and parameters, no hooks, W′ stored in them
    assert [id(p) for p in model.parameters()] == params_before
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    composed = svf.compose(svf.z_of(expert))
    for name in svf.names:
        assert torch.equal(model.get_parameter(name), composed[name])
    logits = model(input_ids=IDS).logits
    # the differentiable forward gives the same logits, and gradients reach p (none reach the frozen base)
    p = {n: v.clone().requires_grad_(True) for n, v in expert.items()}
    out = svf.forward(p, input_ids=IDS).logits
    torch.testing.assert_close(out, logits, atol=1e-6, rtol=1e-6)
    loss = torch.log_softmax(out, -1)[..., 3].mean()
    loss.backward()
    assert all(float(v.grad.abs().max()) > 0 for v in p.values())
    assert all(q.grad is None for q in model.parameters())
    # a small step along the gradient raises the objective (the gradient is the right one)
    grad = torch.cat([v.grad for v in p.values()])
    step = {n: (v + 1e-2 * v.grad / grad.norm()).detach() for n, v in p.items()}
    with torch.no_grad():
        after = torch.log_softmax(svf.forward(step, input_ids=IDS).logits, -1)[..., 3].mean()
    assert float(after) > float(loss.detach())
    # the modules still hold the composed expert (forward never touched them)
    assert torch.equal(model(input_ids=IDS).logits, logits)


def test_svf_model_mixtures(svf):
    g = torch.Generator().manual_seed(11)
    e1 = {n: torch.randn(r, generator=g) for n, r in svf.sizes.items()}
    e2 = {n: torch.randn(r, generator=g) for n, r in svf.sizes.items()}
    # raw mixing (the default): z′ = Σ α p used as z with NO sigmoid
    svf.apply_mixture([e1, e2], [[0.25], [0.75]])
    mixed = svf.model(input_ids=IDS).logits
    svf.apply_z({n: 0.25 * e1[n] + 0.75 * e2[n] for n in svf.names})
    torch.testing.assert_close(svf.model(input_ids=IDS).logits, mixed)
    assert svf.applied == "z"
    # "mix sigmoid(p)" with one expert at α = 1 is that expert
    svf.apply_mixture([e1], [[1.0]], variant="sigmoid")
    assert svf.applied == "mixture"
    via_mix = svf.model(input_ids=IDS).logits
    svf.apply(e1)
    torch.testing.assert_close(svf.model(input_ids=IDS).logits, via_mix)
    # per-matrix α (K, M)
    alpha = np.tile([[1.0], [0.0]], (1, len(svf.names)))
    alpha[:, 0] = [0.0, 1.0]
    svf.apply_mixture([e1, e2], alpha)
    for m, name in enumerate(svf.names):
        expected = svf.compose({n: (e2 if i == 0 else e1)[n] for i, n in enumerate(svf.names)})[name]
        assert torch.equal(svf.model.get_parameter(name), expected), m


def test_svf_model_bad_input(svf):
    from workbench.experts import DegenerateMixtureError, SVFModel

    good = svf.init_params(0)
    name = svf.names[2]
    missing = {n: v for n, v in good.items() if n != name}
    with pytest.raises(ValueError, match=f"lacks matrix '{name}'.*another model"):
        svf.apply(missing)
    with pytest.raises(ValueError, match=f"matrix '{name}' has shape \\(15,\\).*needs \\(16,\\)"):
        svf.apply({**good, name: torch.zeros(15)})
    with pytest.raises(ValueError, match="'model.layers.9.mlp.up_proj.weight'.*does not have"):
        svf.apply({**good, "model.layers.9.mlp.up_proj.weight": torch.zeros(16)})
    with pytest.raises(ValueError, match="NaN"):
        svf.apply({**good, name: torch.full((16,), float("nan"))})
    with pytest.raises(ValueError, match=f"z's vector for matrix '{name}' has shape"):
        svf.apply_z({**good, name: torch.zeros(17)})
    with pytest.raises(ValueError, match=r"alpha must have shape \(2, 6\)"):
        svf.apply_mixture([good, good], np.ones((3, 1)))
    with pytest.raises(DegenerateMixtureError, match="Σ\\(σ⊙z\\) = 0"):
        svf.apply_z({n: torch.zeros(r) for n, r in svf.sizes.items()})
    base = svf.model(input_ids=IDS).logits
    with pytest.raises(ValueError):  # an error part-way leaves the model as it was
        svf.apply({**good, svf.names[-1]: torch.zeros(3)})
    assert torch.equal(svf.model(input_ids=IDS).logits, base)
    with pytest.raises(ValueError, match="no 2-D MLP weight matrices"):
        SVFModel(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2)), cache=False)


def test_svd_cache_is_reused_and_keyed_by_the_weights(tmp_path, monkeypatch):
    from workbench.experts import SVFModel, load_expert, save_expert

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    first = SVFModel(tiny_llama(0))
    assert first.svd_count == 6 and first.cache_path.parent == tmp_path / "cache" / "svf"
    assert first.cache_path.is_file()
    stamp = first.cache_path.stat().st_mtime_ns
    again = SVFModel(tiny_llama(0))  # another object with the same weights: no SVD, the file untouched
    assert again.svd_count == 0 and again.cache_path == first.cache_path
    assert first.cache_path.stat().st_mtime_ns == stamp
    for name in first.names:
        for a, b in zip(first.factors[name], again.factors[name], strict=True):
            assert torch.equal(a, b)
    other = SVFModel(tiny_llama(1))  # other weights: another entry
    assert other.svd_count == 6 and other.cache_path != first.cache_path
    assert len(list((tmp_path / "cache" / "svf").glob("*.safetensors"))) == 2
    # a damaged entry is rebuilt, not trusted
    first.cache_path.write_bytes(b"not a safetensors file")
    rebuilt = SVFModel(tiny_llama(0))
    assert rebuilt.svd_count == 6 and torch.equal(rebuilt.factors[first.names[0]][1], first.factors[first.names[0]][1])
    assert SVFModel(tiny_llama(0)).svd_count == 0
    # expert files: safetensors + JSON metadata, no pickle
    expert = first.init_params(3)
    path = save_expert(tmp_path / "e" / "sort.safetensors", expert, {"task": "sort", "model": first.key})
    loaded, meta = load_expert(path)
    assert meta == {"task": "sort", "model": first.key}
    assert all(torch.equal(loaded[n], expert[n]) for n in first.names)
    (tmp_path / "junk.safetensors").write_text("junk")
    with pytest.raises(ValueError, match="not an SVF expert file"):
        load_expert(tmp_path / "junk.safetensors")


# --- REINFORCE training on the quick zoo -------------------------------------------------------------------

@pytest.fixture
def zoo_svf(quick_zoo, tmp_path):
    from workbench.experts import SVFModel
    from workbench.lm.zoo import load_zoo

    zoo = load_zoo(quick_zoo)
    return SVFModel(zoo.model("base", device="cpu"), zoo.tokenizer(), cache_dir=tmp_path / "svf")


def _config(**kw):
    """Small settings; the eos counts in log π: the quick zoo's base answers every prompt with an eos at once, so
    its answers alone (the default "drop") are empty and would give these mechanics checks no gradient."""
    from workbench.experts import TrainConfig

    return TrainConfig(**{"batch_size": 6, "micro_batch": 4, "val_n": 8, "stop_token": "count", **kw})


def test_trainer_steps_are_deterministic_and_follow_the_reference_update(zoo_svf):
    from workbench.experts import ExpertTrainer

    a = ExpertTrainer(zoo_svf, "sort", seed=0, config=_config())
    b = ExpertTrainer(zoo_svf, "sort", seed=0, config=_config())
    start = a.expert()
    assert abs(float(torch.cat([torch.sigmoid(p) for p in start.values()]).mean()) - 0.525) < 0.002
    stats_a = [a.step() for _ in range(3)]
    stats_b = [b.step() for _ in range(3)]
    assert stats_a == stats_b
    assert all(torch.equal(a.params[n], b.params[n]) for n in a.params)
    assert stats_a[0]["grad_norm"] > 1e-3  # the clip at 1e-3 binds: Adam's first step is then ±lr per entry
    c = ExpertTrainer(zoo_svf, "sort", seed=1, config=_config())
    assert not torch.equal(c.expert()[zoo_svf.names[0]], start[zoo_svf.names[0]])
    # loss = (1/B)·Σ_j over the whole batch, however it is cut into micro-batches (6 = 4 + 2 above, 6 at once here)
    whole = ExpertTrainer(zoo_svf, "sort", seed=0, config=_config(micro_batch=6)).step()
    assert whole["loss"] == pytest.approx(stats_a[0]["loss"], rel=1e-5)
    assert whole["grad_norm"] == pytest.approx(stats_a[0]["grad_norm"], rel=1e-4)
    # one Adam step moves every entry with a gradient by about lr = 2e-3, never more
    d = ExpertTrainer(zoo_svf, "sort", seed=0, config=_config())
    d.step()
    delta = torch.cat([(d.expert()[n] - start[n]).abs() for n in start])
    assert float(delta.max()) <= 2e-3 * (1 + 1e-4) and float(delta.median()) > 1.5e-3
    # ... and the gradient Adam saw was clipped to norm 1e-3: its first moment is (1 − β1)·g = 0.1·g
    m1 = torch.cat([d.opt.state[p]["exp_avg"] for p in d.params.values()])
    assert float(m1.norm()) == pytest.approx(0.1 * 1e-3, rel=1e-4)
    # batches are seeded draws from the training half of the prompt space, never a validation prompt
    val = {p for p, _ in a.val_set}
    assert not val & {p for p, _ in ExpertTrainer(zoo_svf, "sort", seed=0, config=_config()).sample_batch(200)}
    from workbench.lm.tasks import is_eval_prompt

    assert not any(is_eval_prompt(p) for p, _ in a.val_set)


def test_trainer_rewards_push_the_log_probability_the_right_way(zoo_svf):
    """A batch whose answers are the model's own greedy outputs earns +1 everywhere (log π must rise after the
    step); the same prompts with wrong answers earn −1 (log π must fall)."""
    from workbench.experts import ExpertTrainer, rollout, sequence_logprobs, teacher_batch
    from workbench.lm.tasks import draw, stream

    examples = draw("sort", 6, stream(5, "sort", "train"), "train")
    tok = zoo_svf.tokenizer

    def logp(params, batch):
        zoo_svf.apply(params)
        roll = rollout(zoo_svf.model, tok, batch, 9, count_stop=True)  # as _config() trains
        ids, targets = teacher_batch(roll.prompts, roll.outputs, tok.pad_token_id)
        with torch.no_grad():
            return float(sequence_logprobs(zoo_svf.forward(params, input_ids=ids).logits[:, :-1], targets).sum())

    zoo_svf.reset()
    own = rollout(zoo_svf.model, tok, examples, 9)
    right = [(p, t) for (p, _), t in zip(examples, own.texts, strict=True)]
    wrong = [(p, t + "x") for p, t in right]
    for batch, sign in ((right, 1.0), (wrong, -1.0)):
        trainer = ExpertTrainer(zoo_svf, "sort", seed=0, config=_config())
        before = logp(trainer.expert(), batch)
        stats = trainer.step(batch)
        assert stats["reward_mean"] == sign and stats["accuracy"] == (1.0 if sign > 0 else 0.0)
        assert sign * (logp(trainer.expert(), batch) - before) > 0
    # the KL term: ≈ 0 at the start (z ≈ 0.525 with the rescale is the base), never negative
    kl = ExpertTrainer(zoo_svf, "sort", seed=0, config=_config(kl_coeff=0.5)).step(right)
    assert 0 <= kl["kl_mean"] < 1e-3


def test_log_pi_leaves_the_stop_token_out_as_the_reference(quick_zoo, tmp_path):
    """The reference scores log π on tokenizer(prompt + the answer's text), which holds no eos: the default
    "drop" gives that sum exactly; "count" (runs made before) adds the eos the model emitted."""
    from workbench.experts import ExpertTrainer, SVFModel, TrainConfig, rollout
    from workbench.lm.evaluation import _encode
    from workbench.lm.tasks import draw, stream
    from workbench.lm.zoo import load_zoo

    zoo = load_zoo(quick_zoo)
    tok = zoo.tokenizer()
    svf = SVFModel(zoo.model("sort", device="cpu"), tok, cache_dir=tmp_path / "svf")  # answers add with one digit
    batch = draw("add", 6, stream(7, "add", "train"), "train")
    a = ExpertTrainer(svf, "add", seed=0, config=_config(stop_token="drop"))
    assert TrainConfig().stop_token == "drop"
    start = a.expert()
    svf.apply(start)  # the rollouts a.step(batch) makes
    drop, count = rollout(svf.model, tok, batch, 4), rollout(svf.model, tok, batch, 4, count_stop=True)
    stopped = [len(o) < 4 for o in drop.outputs]
    assert all(drop.outputs) and any(stopped), "the quick zoo's sort expert answers add prompts with a digit"
    assert all(c == (d + [tok.eos_token_id] if s else d)
               for c, d, s in zip(count.outputs, drop.outputs, stopped, strict=True))
    assert drop.generated == count.generated == [len(d) + s for d, s in zip(drop.outputs, stopped, strict=True)]

    def reference_logp(params) -> float:  # the reference's loop: re-tokenise prompt + text, sum the answer's part
        total = 0.0
        for (prompt, _), text in zip(batch, drop.texts, strict=True):
            n = len(_encode(tok, prompt))
            ids = torch.tensor([_encode(tok, prompt + text)])
            with torch.no_grad():
                logp = torch.log_softmax(svf.forward(params, input_ids=ids).logits[0, n - 1: -1], -1)
            total += float(logp.gather(1, ids[0, n:, None]).sum())
        return total / len(batch)

    want = reference_logp(start)
    assert want < -1e-3
    assert a.step(batch)["logp_mean"] == pytest.approx(want, rel=1e-5)
    b = ExpertTrainer(svf, "add", seed=0, config=_config())
    assert b.step(batch)["logp_mean"] < want - 1e-4  # the eos terms are negative
    assert not torch.equal(a.params[svf.names[0]], b.params[svf.names[0]])
    with pytest.raises(ValueError, match="--stop-token must be one of drop, count"):
        _config(stop_token="keep")


def test_trainer_state_round_trip_continues_bit_identically(zoo_svf):
    from workbench.checkpoint import pack, unpack
    from workbench.experts import ExpertTrainer

    cfg = _config(val_n=6)
    a = ExpertTrainer(zoo_svf, "add", seed=2, config=cfg)
    a.step()
    a.validate()
    a.step()
    tree, arrays = pack({"trainer": a.state_dict()})  # the run store's format: JSON + arrays, no pickle
    state = unpack(json.loads(json.dumps(tree)), arrays)["trainer"]
    b = ExpertTrainer.from_state(state, zoo_svf)
    assert b.step_count == 2 and b.best_step == 1 and b.history == a.history
    for _ in range(2):
        sa, sb = a.step(), b.step()
        assert sa == sb
    assert a.validate() == b.validate()
    for n in a.params:
        assert torch.equal(a.params[n], b.params[n]) and torch.equal(a.best_params[n], b.best_params[n])
    for sa, sb in zip(a.opt.state.values(), b.opt.state.values(), strict=True):
        assert all(torch.equal(sa[k], sb[k]) for k in ("step", "exp_avg", "exp_avg_sq"))
    assert a.rng.bit_generator.state == b.rng.bit_generator.state
    # a state is refused on another model
    from workbench.experts import SVFModel

    with pytest.raises(ValueError, match="another model"):
        ExpertTrainer.from_state(state, SVFModel(tiny_llama(0), zoo_svf.tokenizer, cache=False))


def test_trainer_validation_keeps_the_best_checkpoint_and_score_shots(zoo_svf):
    from workbench.experts import ExpertTrainer, rollout, score_shots

    t = ExpertTrainer(zoo_svf, "sort", seed=0, config=_config(val_n=6))
    first = t.validate()
    assert first["improved"] and t.best_step == 0 and t.best_val == first["val_accuracy"]
    best = t.best_params
    t.step()
    second = t.validate()  # equal accuracy (the quick zoo scores 0): the earlier checkpoint is kept
    assert second["improved"] is (second["val_accuracy"] > first["val_accuracy"])
    if not second["improved"]:
        assert t.best_step == 0 and all(torch.equal(t.best_params[n], best[n]) for n in best)
    # score_shots: accuracy and the tie-break (mean token log-lik of the correct shots; 0 when none is)
    zoo_svf.reset()
    tok = zoo_svf.tokenizer
    shots = t.val_set[:4]
    own = rollout(zoo_svf.model, tok, shots, 9)
    right = [(p, text) for (p, _), text in zip(shots, own.texts, strict=True)]
    acc, tie = score_shots(zoo_svf, tok, right, 9, count_stop=True)
    assert acc == 1.0 and tie < 0
    # the quick zoo's answers are empty: without their eos (the default, the reference's) no token is left to score
    assert score_shots(zoo_svf, tok, right, 9) == (1.0, 0.0)
    acc, tie = score_shots(zoo_svf, tok, [(p, a + "?") for p, a in right], 9, count_stop=True)
    assert (acc, tie) == (0.0, 0.0)


def test_cem_tie_break_is_the_mean_log_likelihood_per_token_of_the_right_shots(tmp_path):
    """model-evolution.md: CEM breaks ties by the mean log-likelihood of the correctly answered shots, each the
    mean over its answer's tokens (the quick zoo answers one token, where a sum is the same): a random Llama's own
    answers of 5 tokens, each log-probability computed here by hand."""
    from workbench.experts import SVFModel, rollout, score_shots
    from workbench.namm.trace import tiny_llama as char_llama  # a tokenizer of its own: answers of several tokens

    model, tok = char_llama(seed=0)
    svf = SVFModel(model, tok, cache_dir=tmp_path / "svf")
    shots = [("sort: 3 1 2", "?"), ("sort: 9 8", "?"), ("sort: 5 5 1 0", "?")]
    own = rollout(model, tok, shots, 5)
    assert all(len(o) == 5 for o in own.outputs)
    per_shot = []
    with torch.no_grad():
        for prompt, out in zip(own.prompts, own.outputs, strict=True):
            ids = torch.tensor([prompt + out])
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), -1)
            per_shot.append(np.mean([float(logp[len(prompt) - 1 + i, t]) for i, t in enumerate(out)]))
    right = [(p, text) for (p, _), text in zip(shots, own.texts, strict=True)]
    acc, tie = score_shots(svf, tok, right, 5)
    assert acc == 1.0 and tie == pytest.approx(np.mean(per_shot), rel=1e-5)
    wrong_last = [*right[:2], (right[2][0], right[2][1] + "!")]  # a wrong shot counts for nothing
    assert score_shots(svf, tok, wrong_last, 5)[1] == pytest.approx(np.mean(per_shot[:2]), rel=1e-5)


def test_trainer_bad_input(zoo_svf):
    from workbench.experts import ExpertTrainer, SVFModel, TrainConfig

    with pytest.raises(ValueError, match="unknown task 'nope'"):
        ExpertTrainer(zoo_svf, "nope")
    with pytest.raises(ValueError, match="needs a tokenizer"):
        ExpertTrainer(SVFModel(tiny_llama(0), cache=False), "sort")
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="TrainConfig.micro_batch must be a whole number of at least 1, got 1.5"):
        TrainConfig(micro_batch=1.5)  # a check of int(value) let it through
    with pytest.raises(ValueError, match="TrainConfig.max_new_tokens"):
        TrainConfig(max_new_tokens=-2)
    assert TrainConfig(max_new_tokens=0).max_new_tokens == 0  # 0, as None: the task's own budget
    # numbers kept as the floats checked ("0.1" was a TypeError at `>` or stayed text; True passed as 1)
    cfg = TrainConfig(lr="0.1", max_grad_norm=np.float32(0.5), kl_coeff="0", init_value="0.2", init_noise=0)
    assert [(type(v), v) for v in (cfg.lr, cfg.max_grad_norm, cfg.kl_coeff, cfg.init_value, cfg.init_noise)] == [
        (float, 0.1), (float, 0.5), (float, 0.0), (float, 0.2), (float, 0.0)]
    for bad, message in (({"lr": True}, r"TrainConfig.lr \(--lr\) must be a finite number > 0, got True"),
                         ({"max_grad_norm": "x"}, "TrainConfig.max_grad_norm must be a finite number > 0"),
                         ({"kl_coeff": -1}, r"TrainConfig.kl_coeff \(--kl-coeff\) weighs a term of the loss"),
                         ({"init_noise": -1.0}, "init_noise a finite number ≥ 0"),
                         ({"init_value": math.nan}, "TrainConfig.init_value must be a finite number"),
                         ({"log_kl": "no"}, "TrainConfig.log_kl is True or False, got 'no'")):
        with pytest.raises(ValueError, match=message):
            TrainConfig(**bad)
    t = ExpertTrainer(zoo_svf, "sort", config=_config())
    with pytest.raises(ValueError, match="prompt, answer"):
        t.step([])
    with pytest.raises(ValueError, match="prompt, answer"):
        t.step(["s:abc="])


# --- LoRA experts (peft) -----------------------------------------------------------------------------------

def test_lora_model_starts_at_the_base_and_trains_through_explicit_weights():
    from workbench.experts import SVFModel
    from workbench.experts.lora import LoRAModel, lora_param_count, svf_param_count

    model = tiny_llama(0)
    base = model(input_ids=IDS).logits.clone()
    key = SVFModel(tiny_llama(0), cache=False).key
    lora = LoRAModel(model, rank=3)
    assert lora.key == key  # the SVF key of the same weights: SVF and LoRA experts name their model alike
    shapes = {f"{i}.{k}": (24, 16) if k != "down" else (16, 24) for i in range(2) for k in ("gate", "up", "down")}
    assert lora.n_params == lora_param_count(shapes, 3) == 6 * 3 * (16 + 24)
    assert svf_param_count(shapes) == 6 * 16
    assert len(lora.names) == 12 and all("mlp" in n for n in lora.names)
    p = lora.init_params(0)
    assert all(torch.equal(v, torch.zeros_like(v)) for n, v in p.items() if ".lora_B." in n)
    assert all(float(v.abs().max()) > 0 for n, v in p.items() if ".lora_A." in n)
    assert all(torch.equal(p[n], lora.init_params(0)[n]) for n in p)
    assert not torch.equal(p[lora.names[0]], lora.init_params(1)[lora.names[0]])
    lora.apply(p)
    assert torch.equal(model(input_ids=IDS).logits, base)  # B = 0: the base exactly
    # gradients reach B through the explicit weights (not the modules' own)
    q = {n: v.clone().requires_grad_(True) for n, v in p.items()}
    lora.forward(q, input_ids=IDS).logits.square().sum().backward()
    assert all(float(q[n].grad.abs().max()) > 0 for n in q if ".lora_B." in n)
    assert all(m.grad is None for m in model.parameters())
    g = torch.Generator().manual_seed(3)
    moved = {n: torch.randn(v.shape, generator=g) * 0.5 for n, v in p.items()}
    lora.apply(moved)
    live = model(input_ids=IDS).logits
    assert (live - base).abs().max() > 0.05
    torch.testing.assert_close(lora.forward(moved, input_ids=IDS).logits, live)
    lora.reset()
    assert torch.equal(model(input_ids=IDS).logits, base)
    with pytest.raises(ValueError, match="has shape"):
        lora.apply({**p, lora.names[0]: torch.zeros(2, 16)})
    with pytest.raises(ValueError, match="rank"):
        LoRAModel(tiny_llama(0), rank=0)
    with pytest.raises(ValueError, match="no 2-D MLP weight matrices"):
        LoRAModel(torch.nn.Sequential(torch.nn.Linear(4, 4)))


# --- the classification task -------------------------------------------------------------------------------

def test_a_model_folder_whose_mlp_tensors_are_vectors_or_biases_has_nothing_to_adapt(tmp_path):
    """check_model reads the safetensors headers: SVF adapts 2-D MLP weight matrices, so a folder whose "mlp" tensors
    are all vectors (norm scales, biases) is refused before it loads; one 2-D MLP weight is enough."""
    from safetensors.torch import save_file

    from workbench.experts.run import check_model

    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    tensors = {"model.layers.0.mlp.norm.weight": torch.ones(8), "model.layers.0.mlp.up_proj.bias": torch.ones(8),
               "model.embed_tokens.weight": torch.ones(4, 8)}
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(ValueError, match="has no 2-D MLP weight matrices"):
        check_model(str(folder))
    save_file({**tensors, "model.layers.0.mlp.up_proj.weight": torch.ones(8, 8)}, folder / "model.safetensors")
    check_model(str(folder))


def test_a_chat_template_in_a_file_of_its_own_counts_for_prompt_format_chat(quick_zoo, tmp_path):
    """--prompt-format chat takes a model folder whose tokenizer's chat template is in tokenizer_config.json or in a
    file of its own (chat_template.jinja, transformers' newer place; chat_template.json), checked before it loads."""
    import shutil

    from workbench.experts.run import check_model

    base = tmp_path / "base"
    shutil.copytree(quick_zoo / "base", base)
    with pytest.raises(ValueError, match="needs a tokenizer with a chat template"):
        check_model(str(base), "chat")
    template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    for name, text in (("chat_template.jinja", template),
                       ("chat_template.json", json.dumps({"chat_template": template}))):
        (base / name).write_text(text)
        check_model(str(base), "chat")
        (base / name).unlink()


def test_classify_task_names_the_task_of_training_prompts_and_leaves_the_zoo_data_alone():
    from workbench.lm import tasks

    examples = tasks.draw("classify", 200, tasks.stream(0, "classify", "train"), "train")
    assert {a for _, a in examples} == set(tasks.TASKS)
    tags = {"add": "0123456789", "reverse": "r", "sort": "s", "recall": "k", "brackets": "b"}
    for prompt, answer in examples:
        inner = prompt.removeprefix(tasks.CLASSIFY_PREFIX)
        assert prompt == tasks.classify_prompt(inner) and inner[0] in tags[answer]
        assert not tasks.is_eval_prompt(inner) and not tasks.is_eval_prompt(prompt)
        assert set(prompt + answer) <= set(tasks.CHARS)  # spelled in the zoo's fixed vocabulary
    assert tasks.get_task("classify").max_new_tokens == len("brackets") + 1
    # not a zoo task, and the zoo's tasks keep their stream ids (so their data)
    assert "classify" not in tasks.TASKS and "classify" not in tasks.PRETRAIN_TASKS
    ids = list(tasks._IDS.items())[:9]  # later tasks (e.g. larger) append
    assert [k for k, _ in ids] == [*tasks.PRETRAIN_TASKS, "classify"] and [v for _, v in ids] == list(range(9))
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        tasks.get_task("nope")
