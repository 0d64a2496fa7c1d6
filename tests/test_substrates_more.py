"""Particle Lenia, Particle Life+ and Flow-Lenia: golden steps and renders from the reference implementations,
ten steps against the NumPy versions, the quirks kept, the population axis, determinism and bad input."""

from importlib import resources

import numpy as np
import pytest
import torch

from workbench.simulations import make_substrate
from workbench.simulations import reference_flow as rf
from workbench.simulations import reference_particles as rp
from workbench.simulations.reference_ca import golden_step

NAMES = ("plenia", "plife_plus", "flow_lenia")


@pytest.fixture(scope="module")
def more():
    with resources.files("workbench.data").joinpath("asal_more_step1_reference.npz").open("rb") as f:
        return dict(np.load(f))


@pytest.fixture(scope="module")
def subs():
    return {name: make_substrate(name) for name in NAMES}


def test_api_shapes(subs):
    assert [subs[n].n_params for n in NAMES] == [6, 311, 3117]
    assert sorted(subs["plenia"].decode(np.zeros(6))) == sorted(["mu_k", "sigma_k", "w_k", "mu_g", "sigma_g",
                                                                 "c_rep"])
    assert sorted(subs["flow_lenia"].decode(np.zeros(3117))) == ["cells", "h", "m", "s"]
    shapes = {"plenia": {"x": (200, 2)}, "plife_plus": {"x": (1000, 2), "v": (1000, 2), "c": (1000, 6)},
              "flow_lenia": {"world": (128, 128, 3)}}
    for name in NAMES:
        sub = subs[name]
        params = sub.decode(sub.zero_theta())
        arrays = sub.state_to_arrays(sub.init(params, seed=0))
        assert {k: v.shape for k, v in arrays.items()} == shapes[name]
        assert sub.render(sub.init(params, seed=0), params, size=224).shape == (224, 224, 3)


@pytest.mark.parametrize("name", NAMES)
def test_decode_matches_reference(name, more, subs):
    sub = subs[name]
    params = sub.decode(more[f"{name}_theta"])
    if name == "plenia":
        for k, v in params.items():
            np.testing.assert_allclose(v, more[f"plenia_{k}"], rtol=1e-6)
    elif name == "plife_plus":
        for i in range(4):
            np.testing.assert_array_equal(params[f"W{i}"], more[f"plife_plus_Dense_{i}_kernel"])
            np.testing.assert_array_equal(params[f"b{i}"], more[f"plife_plus_Dense_{i}_bias"])
    else:
        for k in ("m", "s", "h", "cells"):
            np.testing.assert_allclose(params[k], more[f"flow_lenia_{k}"], atol=1e-6, rtol=0)
        # the world itself, no initial step
        world = sub.state_to_arrays(sub.init(params, seed=0))["world"]
        np.testing.assert_allclose(world, more["flow_lenia_world0"], atol=1e-6, rtol=0)
        np.testing.assert_allclose(world, rf.flow_world(params["cells"]), atol=1e-6, rtol=0)  # the spec's centring


@pytest.mark.parametrize("name", NAMES)
def test_one_step_and_render_match_reference(name, more, subs):
    sub = subs[name]
    params, state, _, after = golden_step(name, sub, more)
    out = sub.state_to_arrays(sub.step(state, params, 1))
    for key, want in after.items():
        np.testing.assert_allclose(out[key], want, atol=1e-5, rtol=0, err_msg=key)
    np.testing.assert_allclose(sub.render(state, params, size=224), more[f"{name}_render0"], atol=5e-5, rtol=0)


def test_ten_steps_match_numpy(more, subs):
    """Ten steps of each against the plain NumPy versions, from the golden states and θ."""
    p = rp.plenia_decode(more["plenia_theta"])
    x = more["plenia_x0"]
    for _ in range(10):
        x = rp.plenia_step(x, p)
    sub = subs["plenia"]
    got = sub.state_to_arrays(sub.step(golden_step("plenia", sub, more).state, sub.decode(more["plenia_theta"]), 10))
    np.testing.assert_allclose(got["x"], x, atol=3e-5, rtol=0)  # measured 3e-6

    q = rp.plife_plus_decode(more["plife_plus_theta"])
    x, v, c = (more[f"plife_plus_{k}0"] for k in "xvc")
    for _ in range(10):
        x, v, c = rp.plife_plus_step(x, v, c, q)
    sub = subs["plife_plus"]
    got = sub.state_to_arrays(sub.step(golden_step("plife_plus", sub, more).state, sub.decode(more["plife_plus_theta"]),
                                       10))
    dx = np.abs(got["x"] - x)
    assert np.minimum(dx, 1 - dx).max() < 1e-4  # positions on the torus
    np.testing.assert_allclose(got["v"], v, atol=1e-4, rtol=0)
    np.testing.assert_allclose(got["c"], c, atol=1e-4, rtol=0)

    fK, c0, c1, _ = rf.flow_constants()
    sub = subs["flow_lenia"]
    params = sub.decode(more["flow_lenia_theta"])
    w = more["flow_lenia_world0"]
    for _ in range(10):
        w = rf.flow_step(w, params["m"], params["s"], params["h"], fK, c0, c1)
    got = sub.state_to_arrays(sub.step(golden_step("flow_lenia", sub, more).state, params, 10))["world"]
    np.testing.assert_allclose(got, w, atol=1e-4, rtol=0)
    # mass is conserved (to float32 rounding), and no clipping: values above 1 survive
    assert abs(got.sum() - more["flow_lenia_world0"].sum()) < 1e-4 * more["flow_lenia_world0"].sum()
    assert got.max() > 1


@pytest.mark.parametrize("name", NAMES)
def test_renders_of_evolved_states_match_numpy(name, more, subs):
    """Renders after ten steps (the golden renders are of the first state): Flow-Lenia's clipping of mass above 1,
    the particles' discs and fields where they have moved; 50: a size the grid does not divide."""
    sub = subs[name]
    params = sub.decode(more[f"{name}_theta"])
    state = sub.step(golden_step(name, sub, more).state, params, 10)
    arrays = sub.state_to_arrays(state)
    for size in (64, 50):
        if name == "plenia":
            want = rp.plenia_render(arrays["x"], rp.plenia_decode(more["plenia_theta"]), size)
        elif name == "plife_plus":
            want = rp.plife_plus_render(arrays["x"], arrays["c"], size)
        else:
            assert arrays["world"].max() > 1  # the clipping is exercised
            want = rf.flow_render(arrays["world"], size)
        np.testing.assert_allclose(np.asarray(sub.render(state, params, size=size)), want, atol=5e-5, rtol=0)


def test_quirks_kept(subs):
    """Particle Lenia counts a particle's own kernel term in U; Particle Life+ adds the self pair's δ_ii."""
    # μ_K = 0.2: the self term K = exp(−(μ_K/σ_K)²) ≈ 0.96 weighs as much as a neighbour, and changes G′(U)
    theta = np.array([np.log(0.05), 0.0, np.log(10.0), 0.0, 0.0, 0.0])  # w_K = 0.22: U near μ_G
    x = np.array([[0.0, 0.0], [0.3, 0.0], [0.0, 0.5]], np.float32)
    three = make_substrate("plenia", N=3)
    got = three.state_to_arrays(three.step(three.state_from_arrays(x=x), three.decode(theta), 1))["x"]
    p = rp.plenia_decode(theta)
    np.testing.assert_allclose(got, rp.plenia_step(x, p), atol=1e-6)
    # without the self term in U the step differs: move by −dt·∇E with U − w·K_self
    k_self = p["w_k"] * np.exp(-(((1e-5 - p["mu_k"]) / p["sigma_k"]) ** 2))
    shifted = dict(p, mu_g=p["mu_g"] + k_self)  # G(U − k) = G with μ_G + k
    assert np.abs(rp.plenia_step(x, shifted) - got).max() > 1e-3

    # Particle Life+: a lone particle (no neighbour within r_max) still turns its colour by δ_ii
    lone = make_substrate("plife_plus", N=1)
    theta = np.zeros(311)
    theta[248:255] = [0.0, 1.0, -1.0, 0.5, 0.0, 0.0, 2.0]  # b3: δ = tanh(b3[1:])
    params = lone.decode(theta)
    c0 = np.eye(6, dtype=np.float32)[:1]
    state = lone.state_from_arrays(x=np.array([[0.5, 0.5]], np.float32), v=np.zeros((1, 2), np.float32), c=c0)
    out = lone.state_to_arrays(lone.step(state, params, 1))
    want = c0 + 0.02 * np.tanh(theta[249:255])
    np.testing.assert_allclose(out["c"], want / np.linalg.norm(want), atol=1e-6)
    np.testing.assert_array_equal(out["x"], [[0.5, 0.5]])


def test_particle_life_plus_all_pairs_fallback_when_r_max_is_large():
    """r_max > 1/3 leaves fewer than 3 cells a side: every pair is visited and wrapped to its minimum image. A
    user's r_max = 0.45 must step as the spec's all-pairs step (the defaults' 10 × 10 cell list never runs this
    path); pairs across the torus' edge at |d| just below 0.5 still pull."""
    sub = make_substrate("plife_plus", N=200, r_max=0.45)
    theta = sub.flax_init_theta(np.random.default_rng(3))
    params = sub.decode(theta)
    state = sub.init(params, seed=2)
    arr = sub.state_to_arrays(state)
    x, v, c = rp.plife_plus_step(arr["x"], arr["v"], arr["c"], rp.plife_plus_decode(theta), r_max=0.45)
    got = sub.state_to_arrays(sub.step(state, params, 1))
    np.testing.assert_allclose(got["v"], v, atol=1e-4, rtol=0)
    np.testing.assert_allclose(got["c"], c, atol=1e-5, rtol=0)
    dx = np.abs(got["x"] - x)
    assert np.minimum(dx, 1 - dx).max() < 1e-5


@pytest.mark.parametrize("name", NAMES)
def test_population_axis_and_determinism(name, subs):
    """A population of two runs each member as alone; the same seed gives the same run."""
    sub = subs[name]
    theta = 0.1 * np.random.default_rng(1).standard_normal((2, sub.n_params))
    params = sub.decode(theta)
    both = sub.state_to_arrays(sub.step(sub.init(params, seed=[3, 4]), params, 2))
    again = sub.state_to_arrays(sub.step(sub.init(params, seed=[3, 4]), params, 2))
    for k in both:
        np.testing.assert_array_equal(both[k], again[k])
    for i, seed in enumerate((3, 4)):
        one = {k: v[i] for k, v in params.items()}
        alone = sub.state_to_arrays(sub.step(sub.init(one, seed=seed), one, 2))
        for k in alone:
            np.testing.assert_allclose(alone[k], both[k][i], atol=1e-6, rtol=0)
    frames = sub.render(sub.init(params, seed=[3, 4]), params, size=32)
    assert frames.shape == (2, 32, 32, 3) and np.isfinite(frames).all()
    assert frames.min() >= 0 and frames.max() <= 1


@pytest.mark.parametrize("name", NAMES)
def test_bad_input(name, subs):
    sub = subs[name]
    theta = np.zeros(sub.n_params)
    theta[0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        sub.decode(theta)
    params = sub.decode(sub.zero_theta())
    state = sub.init(params, seed=0)
    with pytest.raises(ValueError, match="takes no noise"):
        sub.step(state, params, 1, noise=np.zeros(4))
    arrays = sub.state_to_arrays(state)
    key = next(iter(arrays))
    wrong = dict(arrays, **{key: arrays[key][..., :1]})
    with pytest.raises(ValueError, match=f"{key}.*must have shape"):
        sub.state_from_arrays(**wrong)
    with pytest.raises(ValueError, match="real numbers"):
        sub.state_from_arrays(**dict(arrays, **{key: arrays[key] > 0}))
    with pytest.raises(ValueError, match="exactly"):
        sub.state_from_arrays(**{k + "_": v for k, v in arrays.items()})
    if name == "flow_lenia":
        with pytest.raises(ValueError, match="non-negative"):
            sub.state_from_arrays(world=-arrays["world"] - 1)
    if name == "plife_plus":
        with pytest.raises(ValueError, match="unit vectors"):
            sub.state_from_arrays(**dict(arrays, c=2 * arrays["c"]))


@pytest.mark.parametrize("name", NAMES)
def test_tensor_engine_matches_reference(name, more):
    """The batched-tensor path (what runs on a CUDA GPU) gives the golden step on the CPU too."""
    sub = make_substrate(name, **({"N": 1000} if name == "plife_plus" else {}))
    golden = golden_step(name, sub, more)
    params, state = sub._params_batch(golden.params)[0], golden.state
    if name == "plenia":
        from workbench.simulations.plenia import _step_torch

        prm = sub._packed(params)
        got = {"x": _step_torch(state["x"], prm, sub.dt)[0]}
    elif name == "plife_plus":
        from workbench.simulations.plife_plus import _step_torch

        got = dict(zip("xvc", (t[0] for t in _step_torch(state["x"], state["v"], state["c"], params, sub)),
                       strict=True))
    else:
        a = state["world"].permute(0, 3, 1, 2).contiguous()
        got = {"world": sub._step_torch(a, params).permute(0, 2, 3, 1)[0]}
    for key, want in golden.after.items():
        np.testing.assert_allclose(torch.as_tensor(got[key]).numpy(), want, atol=1e-5, rtol=0, err_msg=key)


def test_convolutions_of_the_tensor_paths_run_in_full_float32(more, monkeypatch):
    """NCA's 3×3 layer and Flow-Lenia's Sobel run as cuDNN convolutions on a GPU, which torch lets round to TF32 by
    default (5e-4 off the golden Flow-Lenia step): each call runs with IEEE float32 set, and the user's setting
    comes back after the step. Checked here by the setting each call sees (the CPU itself ignores it)."""
    conv = torch.backends.cudnn.conv

    def precision():
        return conv.fp32_precision if hasattr(conv, "fp32_precision") else torch.backends.cudnn.allow_tf32

    seen, plain = [], torch.nn.functional.conv2d

    def spy(*args, **kwargs):
        seen.append(precision())
        return plain(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "conv2d", spy)
    before = precision()
    sub = make_substrate("flow_lenia")
    params, _ = sub._params_batch(sub.decode(more["flow_lenia_theta"]))
    a = golden_step("flow_lenia", sub, more).state["world"].permute(0, 3, 1, 2).contiguous()
    sub._step_torch(a, params)
    nca = make_substrate("nca_d3", engine="torch")
    params = nca.decode(more["nca_d3_theta"])
    nca.step(nca.state_from_arrays(state=more["nca_d3_state0"]), params, 1, noise=more["nca_d3_mask0"][None])
    assert len(seen) == 5 and set(seen) == {"ieee" if hasattr(conv, "fp32_precision") else False}, seen
    assert precision() == before


@pytest.mark.parametrize("engine", ["taichi", "torch"])
def test_flow_lenia_border_and_flow_clip_match_numpy(more, engine):
    """asal-more.md §6: the Sobel's zero padding at the grid border (mass next to it: a wrapped Sobel is 0.04 off)
    and the flow's clip to ±(dd − σ) (a 40-unit spike: without the clip the step is 20 off); the golden world
    reaches neither (no mass within 6 cells of the border, |dt·F| < 0.9)."""
    sub = make_substrate("flow_lenia")
    params = sub.decode(more["flow_lenia_theta"])
    fK, c0, c1, _ = rf.flow_constants()
    world = more["flow_lenia_world0"].copy()
    world[0:4, 60:64, 0] = 0.9
    world[60:63, 60:63, 2] = 40.0
    want = rf.flow_step(world, params["m"], params["s"], params["h"], fK, c0, c1)
    assert np.abs(rf.flow_step(world, params["m"], params["s"], params["h"], fK, c0, c1, dd=50) - want).max() > 1
    got = _flow_step(sub, world, params, engine)
    np.testing.assert_allclose(got, want, atol=2e-4, rtol=0)  # measured 6e-5 (float32 near 40)
    assert abs(got.sum() - world.sum()) < 1e-5 * world.sum()  # the mass still conserved


def _flow_step(sub, world: np.ndarray, params: dict, engine: str) -> np.ndarray:
    """One Flow-Lenia step of `world` (H, W, C) on the Taichi kernel or the batched torch path (GPUs')."""
    if engine == "taichi":
        return sub.state_to_arrays(sub.step(sub.state_from_arrays(world=world), params, 1))["world"]
    batch = sub._params_batch(params)[0]
    a = torch.as_tensor(world)[None].permute(0, 3, 1, 2).contiguous()
    return sub._step_torch(a, batch).permute(0, 2, 3, 1)[0].numpy()


@pytest.mark.parametrize("engine", ["taichi", "torch"])
def test_flow_lenia_settings_other_than_the_defaults_follow_the_spec(more, engine):
    """FlowLenia(T, theta_a, n, dd, sigma) steps as the spec's step with those settings: a user's θ_A = 0.5 or σ =
    0.4 must change the flow and the spread as §6 says. At the defaults (θ_A = 1, σ = 0.65) α = (A/θ_A)^n reads the
    same with A·θ_A, and the spread's cap min(1, 2σ) is 1, so the golden tests cannot see either."""
    sub = make_substrate("flow_lenia", T=5.0, theta_a=0.5, n=3.0, dd=4, sigma=0.4)
    params = sub.decode(more["flow_lenia_theta"])
    fK, c0, c1, _ = rf.flow_constants()
    world = more["flow_lenia_world0"]
    want = rf.flow_step(world, params["m"], params["s"], params["h"], fK, c0, c1, dt=0.2, theta_A=0.5, n=3.0, dd=4,
                        sigma=0.4)
    default = rf.flow_step(world, params["m"], params["s"], params["h"], fK, c0, c1)
    assert np.abs(want - default).max() > 1e-2  # the settings matter here
    got = _flow_step(sub, world, params, engine)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_particle_inits_and_drawn_theta_have_the_spec_distributions():
    """asal-more.md §4–5: Particle Lenia's x uniform in [−6, 6)², Particle Life+'s x in [0, 1)², v = 0, unit
    colours of N(0, I) directions; Particle Lenia's drawn θ ~ N(0, I)."""
    plenia = make_substrate("plenia")
    x = plenia.state_to_arrays(plenia.init(plenia.decode(np.zeros((8, 6))), seed=list(range(8))))["x"]
    assert x.shape == (8, 200, 2) and -6 <= x.min() and x.max() < 6
    assert np.abs(x.mean((0, 1))).max() < 0.3 and abs(x.std() - 12 / np.sqrt(12)) < 0.15  # U[−6, 6): std 3.46
    theta = plenia.random_theta(np.random.default_rng(0), population=4000)
    assert abs(theta.mean()) < 0.03 and abs(theta.std() - 1) < 0.03

    plife = make_substrate("plife_plus")
    arrays = plife.state_to_arrays(plife.init(plife.decode(np.zeros(311)), seed=3))
    assert 0 <= arrays["x"].min() and arrays["x"].max() < 1 and abs(arrays["x"].mean() - 0.5) < 0.03
    np.testing.assert_array_equal(arrays["v"], 0)
    np.testing.assert_allclose(np.linalg.norm(arrays["c"], axis=-1), 1, atol=1e-6)
    assert np.abs(arrays["c"].mean(0)).max() < 0.06  # directions of N(0, I): no preferred colour


def test_particle_lenia_particles_closer_than_the_clip_pull_nothing():
    """asal-more.md §4: r = √max(|p − x|², 1e-10), whose gradient is 0 below the clip: two particles 5e-6 apart
    (and two at one point) move as the reference moves them (1/r there was a pull of 0.5·K·z)."""
    sub = make_substrate("plenia", N=4)
    x = np.array([[0.0, 0.0], [5e-6, 0.0], [0.7, 0.2], [0.7, 0.2]], np.float32)
    theta = np.zeros(6)
    got = sub.state_to_arrays(sub.step(sub.state_from_arrays(x=x), sub.decode(theta), 1))["x"]
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, rp.plenia_step(x, rp.plenia_decode(theta)), atol=1e-6)
