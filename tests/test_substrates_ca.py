"""Game of Life, NCA (d = 1, 3) and discrete NCA: golden steps from the reference, several steps against the
NumPy versions (same masks and Gumbel noise injected into both), drawn noise, population axis and bad input."""

import numpy as np
import pytest

from workbench.simulations import make_substrate
from workbench.simulations import reference_ca as ref


@pytest.fixture(scope="module")
def more():
    return ref.golden_more()


@pytest.fixture(scope="module")
def subs():
    return {name: make_substrate(name) for name in ("gol", "nca_d1", "nca_d3", "dnca")}


@pytest.mark.parametrize("engine", ["taichi", "torch"])
@pytest.mark.parametrize("name", ["gol", "nca_d1", "nca_d3", "dnca"])
def test_one_step_and_render_match_reference(name, engine, more, subs):
    sub = subs[name] if engine == "taichi" else make_substrate(name, engine="torch")
    params, state, noise, after = ref.golden_step(name, sub, more)
    want = after["state"]
    out = sub.state_to_arrays(sub.step(state, params, 1, noise=noise))["state"]
    assert out.dtype == want.dtype or name.startswith("nca")
    if name in ("gol", "dnca"):
        np.testing.assert_array_equal(out, want)
    else:
        np.testing.assert_allclose(out, want, atol=1e-5, rtol=0)
    np.testing.assert_allclose(sub.render(state, params, 224), more[f"{name}_render0"], atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["nca_d1", "nca_d3", "dnca"])
def test_theta_layout_matches_reference_tree(name, more, subs):
    """θ = [b0, K0, b1, K1, b2, K2] (DNCA: init first) decodes to the reference's Conv_i bias and kernel."""
    sub = subs[name]
    params = sub.decode(more[f"{name}_theta"])
    assert sub.n_params == {"nca_d1": 209, "nca_d3": 315, "dnca": 588}[name] == more[f"{name}_theta"].size
    for i, (b, k) in enumerate([("b0", "K0"), ("b1", "K1"), ("b2", "K2")]):
        np.testing.assert_array_equal(params[b], more[f"{name}_Conv_{i}_bias"])
        np.testing.assert_array_equal(params[k].ravel(), more[f"{name}_Conv_{i}_kernel"].ravel())
    if name == "dnca":
        np.testing.assert_array_equal(params["init"], more["dnca_init"][0])
    # the NumPy version reproduces the reference's intermediate outputs too
    pieces = (ref.dnca_params if name == "dnca" else lambda t: ref.nca_params(t, int(name[-1])))(more[f"{name}_theta"])
    if name == "dnca":
        got, want = ref.dnca_logits(more["dnca_state0"], pieces), more["dnca_logits0"]
    else:
        got, want = ref.nca_delta(more[f"{name}_state0"], pieces), more[f"{name}_dstate0"]
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("grid, engine", [(64, "taichi"), (128, "taichi"), (192, "taichi"), (40, "taichi"),
                                          (40, "torch")])
def test_gol_64_steps_match_numpy_for_several_rules(grid, engine):
    """64: the bit-parallel Taichi kernel, one 64-bit word a row; 128: two, so the carries between words count;
    192: three, the first with a left and a right neighbour word that differ (at two they are the same word, so
    swapped carries went unseen); 40: the cell-by-cell one; torch: the CUDA engine (here on the CPU)."""
    sub = make_substrate("gol", grid=grid, engine=engine)
    rules = np.array([6152, 0, 2 ** 18 - 1, int(sub.random_theta(np.random.default_rng(0))[0])])
    params = sub.decode(rules[:, None])
    state = sub.init(params, seed=[0, 1, 2, 3])
    start = sub.state_to_arrays(state)["state"]
    assert start.shape == (4, grid, grid) and set(np.unique(start)) <= {0, 1}
    stepped = sub.step(state, params, 64)
    out = sub.state_to_arrays(stepped)["state"]
    for i, rule in enumerate(rules):
        s = start[i]
        for _ in range(64):
            s = ref.gol_step(s, rule)
        np.testing.assert_array_equal(out[i], s)
    for size in (224, 50):  # renders of the evolved grids (the golden render is of the first)
        np.testing.assert_array_equal(sub.render(stepped, params, size),
                                      np.stack([ref.gol_render(o, size) for o in out]))
    assert out[1].sum() == 0 and out[2].min() == 1  # rule 0 kills everything, all bits set fills the grid


@pytest.mark.parametrize("engine", ["taichi", "torch"])
@pytest.mark.parametrize("name", ["nca_d1", "nca_d3"])
def test_nca_10_steps_match_numpy_with_the_same_masks(name, engine):
    d = int(name[-1])
    sub = make_substrate(name, grid=32, engine=engine)
    rng = np.random.default_rng(1)
    theta = 0.5 * rng.standard_normal((2, sub.n_params))
    params = sub.decode(theta)
    state = sub.init(params, seed=[3, 4])
    masks = rng.integers(0, 2, (2, 10, 32, 32))
    out = sub.state_to_arrays(sub.step(state, params, 10, noise=masks))["state"]
    for i in range(2):
        s = sub.state_to_arrays(state)["state"][i]
        pieces = ref.nca_params(theta[i].astype(np.float32), d)
        for t in range(10):
            s = ref.nca_step(s, pieces, masks[i, t])
        np.testing.assert_allclose(out[i], s, atol=2e-6, rtol=0)  # measured 2e-7: ten times that, and more
    np.testing.assert_allclose(sub.render(sub.state_from_arrays(state=out), params, 50), np.stack(
        [ref.nca_render(o, 50) for o in out]), atol=0)


@pytest.mark.parametrize("engine", ["taichi", "torch"])
def test_dnca_5_steps_match_numpy_with_the_same_gumbel_noise(more, engine):
    sub = make_substrate("dnca", grid=32, engine=engine)
    theta = more["dnca_theta"]
    params = sub.decode(theta)
    state = sub.init(params, seed=5)
    gumbel = np.random.default_rng(2).gumbel(size=(5, 32, 32, 1, 8)).astype(np.float32)
    out = sub.state_to_arrays(sub.step(state, params, 5, noise=gumbel))["state"]
    s = sub.state_to_arrays(state)["state"]
    for t in range(5):
        s = ref.dnca_step(s, ref.dnca_params(theta), gumbel[t])
    np.testing.assert_array_equal(out, s)
    np.testing.assert_array_equal(sub.render(sub.state_from_arrays(state=out), params, 70), ref.dnca_render(out, 70))


@pytest.mark.parametrize("name", ["nca_d1", "dnca"])
def test_drawn_noise_same_seed_same_run(name, subs):
    sub = subs[name]
    theta = 0.3 * np.random.default_rng(0).standard_normal(sub.n_params)
    params = sub.decode(theta)

    def run(seed, *splits):
        state = sub.init(params, seed=seed)
        for n in splits:
            state = sub.step(state, params, n)
        return sub.state_to_arrays(state)["state"]

    a = run(1, 6)
    np.testing.assert_array_equal(a, run(1, 2, 4))  # however the steps are split into calls
    assert not np.array_equal(a, run(2, 6))
    # in a population, each simulation runs as its seed alone
    pair = sub.decode(np.stack([theta, theta]))
    batched = sub.step(sub.init(pair, seed=[2, 1]), pair, 6)
    np.testing.assert_array_equal(sub.state_to_arrays(batched)["state"][1], a)


def test_drawn_noise_has_the_reference_distribution(subs, more):
    nca = subs["nca_d1"]
    params = nca.decode(more["nca_d1_theta"])
    s0 = nca.state_from_arrays(state=more["nca_d1_state0"])
    changed = (nca.state_to_arrays(nca.step(s0, params))["state"] != more["nca_d1_state0"]).mean()
    assert 0.48 < changed < 0.52  # p_drop = ½ (ΔS is nonzero everywhere here)
    dnca = subs["dnca"]
    zero = dnca.decode(dnca.zero_theta())
    counts = np.bincount(dnca.state_to_arrays(dnca.step(dnca.init(zero, 0), zero))["state"].ravel(), minlength=8)
    assert np.all(np.abs(counts / counts.sum() - 1 / 8) < 0.01)  # θ = 0: uniform noise
    params = dnca.decode(more["dnca_theta"])
    drawn = dnca.state_to_arrays(dnca.step(dnca.state_from_arrays(state=more["dnca_state0"]), params))["state"]
    argmax = np.argmax(more["dnca_logits0"], axis=-1)[..., None]
    assert (drawn == argmax).mean() > 0.999  # τ = 1e-3: the argmax except at near-ties
    warm = make_substrate("dnca", grid=64, tau=1.0)  # at τ = 1 the draw is a visible softmax
    theta = warm.zero_theta()
    b2 = np.log([1, 2, 3, 4, 1, 1, 2, 2])
    theta[-8 - 16 * 8:-16 * 8] = b2  # the last layer's bias: the same logits L = b2 in every cell
    params = warm.decode(theta)
    np.testing.assert_array_equal(params["b2"], b2.astype(np.float32))
    counts = np.bincount(warm.state_to_arrays(warm.step(warm.init(params, 0), params))["state"].ravel(), minlength=8)
    np.testing.assert_allclose(counts / counts.sum(), np.exp(b2) / np.exp(b2).sum(), atol=0.015)


def test_init_distributions(subs):
    gol = subs["gol"]
    density = gol.state_to_arrays(gol.init(gol.decode([[6152]] * 8), seed=list(range(8))))["state"].mean((1, 2))
    assert np.all((density > 0.03) & (density < 0.42)) and density.std() > 0.02  # sparsity ~ U[0.05, 0.4)
    dnca = subs["dnca"]
    theta = dnca.zero_theta()
    theta[:8] = np.log([1, 1, 1, 5, 1, 1, 1, 1])
    counts = np.bincount(dnca.state_to_arrays(dnca.init(dnca.decode(theta), 1))["state"].ravel(), minlength=8)
    assert abs(counts[3] / counts.sum() - 5 / 12) < 0.02
    nca = subs["nca_d3"]
    s = nca.state_to_arrays(nca.init(nca.decode(nca.zero_theta()), 0))["state"]
    assert s.shape == (128, 128, 3) and 0 <= s.min() and s.max() < 1 and abs(s.mean() - 0.5) < 0.01


@pytest.mark.parametrize("name", ["gol", "nca_d1", "nca_d3", "dnca"])
def test_population_axis_everywhere(name, subs):
    sub = subs[name]
    theta = np.zeros((3, sub.n_params)) if name != "gol" else np.array([[6152], [6152], [1]])
    params = sub.decode(theta)
    state = sub.step(sub.init(params, seed=[0, 1, 2]), params, 2)
    arrays = sub.state_to_arrays(state)
    assert list(arrays) == ["state"] and arrays["state"].shape == (3, *sub.state_shapes["state"])
    assert sub.render(state, params, 32).shape == (3, 32, 32, 3)
    one = sub.state_from_arrays(state=arrays["state"][1])
    assert sub.render(one, sub.decode(theta[1]), 32).shape == (32, 32, 3)
    assert sub.state_to_arrays(sub.step(one, sub.decode(theta[1]), 1))["state"].shape == sub.state_shapes["state"]


def test_bad_input_is_one_clear_error(subs):
    gol, nca, dnca = subs["gol"], subs["nca_d1"], subs["dnca"]
    for rule, match in ((2 ** 18, r"\[0, 2\^18\)"), (-1, r"\[0, 2\^18\)"), (3.5, "whole number"),
                        (np.nan, "whole numbers")):
        with pytest.raises(ValueError, match=match):
            gol.decode([rule])
    with pytest.raises(ValueError, match=r"\[rule\]"):
        gol.decode([1, 2])
    with pytest.raises(ValueError, match="rule"):
        gol.init({"rule": 2 ** 20})
    with pytest.raises(ValueError, match="must hold integers"):
        gol.state_from_arrays(state=np.zeros((64, 64)))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        gol.state_from_arrays(state=np.full((64, 64), 2))
    params = gol.decode([6152])
    state = gol.init(params)
    with pytest.raises(ValueError, match="takes no noise"):
        gol.step(state, params, 1, noise=np.zeros((1, 64, 64)))
    theta = nca.zero_theta()
    theta[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        nca.decode(theta)
    params = nca.decode(nca.zero_theta())
    state = nca.init(params)
    with pytest.raises(ValueError, match=r"drop masks .* shape \(2, 128, 128\)"):
        nca.step(state, params, 2, noise=np.ones((1, 128, 128)))
    with pytest.raises(ValueError, match="only 0 and 1"):
        nca.step(state, params, 1, noise=np.full((1, 128, 128), 0.5))
    params = dnca.decode(dnca.zero_theta())
    state = dnca.init(params)
    with pytest.raises(ValueError, match=r"Gumbel .* shape \(1, 128, 128, 1, 8\)"):
        dnca.step(state, params, 1, noise=np.zeros((1, 128, 128, 8)))
    with pytest.raises(ValueError, match=r"in \[0, 7\]"):
        dnca.state_from_arrays(state=np.full((128, 128, 1), 8))
    with pytest.raises(ValueError, match="engine='taichi'"):
        make_substrate("gol", engine="triton")


@pytest.mark.parametrize("engine", ["taichi", "torch"])
def test_identity_bias_matches_numpy(more, engine):
    sub = make_substrate("dnca", grid=24, identity_bias=0.5, engine=engine)
    theta = more["dnca_theta"]
    params = sub.decode(theta)
    state = sub.init(params, seed=7)
    gumbel = np.random.default_rng(3).gumbel(size=(3, 24, 24, 1, 8)).astype(np.float32)
    out = sub.state_to_arrays(sub.step(state, params, 3, noise=gumbel))["state"]
    s = plain = sub.state_to_arrays(state)["state"]
    for t in range(3):
        s = ref.dnca_step(s, ref.dnca_params(theta), gumbel[t], identity_bias=0.5)
        plain = ref.dnca_step(plain, ref.dnca_params(theta), gumbel[t])
    np.testing.assert_array_equal(out, s)
    assert not np.array_equal(s, plain)  # the bias changes the run


@pytest.mark.parametrize("name", ["nca_d3", "dnca"])
def test_flax_random_init(name, subs):
    sub = subs[name]
    theta = sub.flax_init_theta(np.random.default_rng(0), population=64)
    assert theta.shape == (64, sub.n_params)
    params = sub.decode(theta)
    fan_in = 9 * (sub.param_shapes["K0"][2])
    assert abs(params["K0"].std() - np.sqrt(1 / fan_in)) < 0.1 * np.sqrt(1 / fan_in)
    assert np.abs(params["K1"]).max() <= 2 * np.sqrt(1 / 4) / 0.8796 + 1e-6  # cut at ±2σ
    assert not params["b0"].any() and not params["b1"].any() and not params["b2"].any()
    if name == "dnca":
        assert abs(params["init"].std() - 1) < 0.1


def test_both_engines_draw_the_same_noise():
    """The torch engine hashes (seed, step, cell) as the Taichi kernels do: the same masks, the same categories."""
    for name, steps in (("nca_d3", 4), ("dnca", 1)):
        settings = {"grid": 48, "tau": 1.0} if name == "dnca" else {"grid": 48}  # τ = 1: no near-ties at 1/τ
        a, b = make_substrate(name, **settings), make_substrate(name, engine="torch", **settings)
        params = a.decode(0.3 * np.random.default_rng(4).standard_normal((2, a.n_params)))
        runs = [sub.state_to_arrays(sub.step(sub.init(params, seed=[5, 6]), params, steps))["state"] for sub in (a, b)]
        np.testing.assert_allclose(runs[0], runs[1], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="engine='torch'"):
        make_substrate("nca_d1", engine="triton")


@pytest.mark.parametrize("engine", ["taichi", "torch"])
def test_dnca_ties_go_to_the_lowest_state(engine):
    """asal-more.md §3: s′ = argmax_k (L_k/τ + g_k), ties to the lowest k (θ = 0: L ≡ 0, so the noise decides):
    Gumbel draws equal at states 2 and 5 give 2 everywhere, all-zero noise gives 0."""
    sub = make_substrate("dnca", grid=16, engine=engine)
    params = sub.decode(sub.zero_theta())
    state = sub.state_from_arrays(state=np.full((16, 16, 1), 7, np.int32))
    noise = np.zeros((1, 16, 16, 1, 8), np.float32)
    noise[..., 2] = noise[..., 5] = 1.0
    np.testing.assert_array_equal(sub.state_to_arrays(sub.step(state, params, 1, noise=noise))["state"], 2)
    zeros = np.zeros_like(noise)
    np.testing.assert_array_equal(sub.state_to_arrays(sub.step(state, params, 1, noise=zeros))["state"], 0)


def test_searches_default_to_the_specs_rollouts_and_drawn_rules():
    """asal-more.md §0–1: 1000 steps (Game of Life 1024, Flow-Lenia 256), frames of 224 pixels; Game of Life's
    drawn rules uniform in [0, 2^18)."""
    from workbench.asal.evaluate import DEFAULT_STEPS, EvalConfig

    assert {n: DEFAULT_STEPS[n] for n in ("gol", "nca_d1", "nca_d3", "dnca", "plenia", "plife_plus", "flow_lenia")} \
        == {"gol": 1024, "nca_d1": 1000, "nca_d3": 1000, "dnca": 1000, "plenia": 1000, "plife_plus": 1000,
            "flow_lenia": 256}
    assert EvalConfig("gol", "pixels").steps == 1024 and EvalConfig("dnca", "pixels").size == 224
    rules = make_substrate("gol").random_theta(np.random.default_rng(0), population=20000)
    assert 0 <= rules.min() and rules.max() < 2**18 and abs(rules.mean() / 2**17 - 1) < 0.02
    assert len(np.unique(rules)) > 19000  # not a handful of rules
