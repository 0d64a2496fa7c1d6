"""Several steps of each substrate against the plain NumPy version of the spec (workbench.simulations.reference)."""

import json
from pathlib import Path

import numpy as np
import pytest

from workbench.simulations import make_substrate
from workbench.simulations import reference as ref


def test_lenia_theta_zero_reproduces_the_pattern(substrates):
    sub = substrates["lenia"]
    assert sub.n_params == 3117
    params = sub.decode(np.zeros(3117))
    pattern = json.loads((Path(__file__).resolve().parents[1] / "data" / "lenia_5N7KKM.json").read_text())
    np.testing.assert_allclose(params["m"], [k["m"] for k in pattern["kernels"]], rtol=1e-6)
    np.testing.assert_allclose(params["s"], [k["s"] for k in pattern["kernels"]], rtol=1e-6)
    np.testing.assert_allclose(params["h"], [k["h"] for k in pattern["kernels"]], rtol=1e-6)
    cells = np.asarray(pattern["cells"]).transpose(1, 2, 0)
    np.testing.assert_allclose(params["cells"][6:26, 6:26], cells, atol=2e-6)
    assert params["cells"].shape == (32, 32, 3)
    assert np.all(params["cells"][:6] < 2e-6)


def test_lenia_dynamic_part_is_clipped_to_one():
    sub = make_substrate("lenia")
    big = np.zeros(3117)
    big[:45] = 5.0
    np.testing.assert_allclose(sub.decode(big)["m"], sub.decode(np.r_[np.ones(45), np.zeros(3072)])["m"])


def test_lenia_decode_clips_only_the_dynamic_part_and_keeps_the_genotype_order(substrates):
    """Spec §1: (m, s, h) = σ(base_dyn + clip(θ_dyn, −1, 1)) in the order [m_1..m_15, s_1..s_15, h_1..h_15]; cells =
    σ(base_cells + θ_cells), NOT clipped (the reference's clip2 = ∞), in (y, x, c) order. θ within ±1 (all the
    other tests) cannot tell a clip of the cells, nor a genotype read with m, s and h interleaved."""
    sub = substrates["lenia"]
    pattern = json.loads((Path(__file__).resolve().parents[1] / "data" / "lenia_5N7KKM.json").read_text())
    g0 = np.r_[[k[key] for key in ("m", "s", "h") for k in pattern["kernels"]],
               np.pad(np.asarray(pattern["cells"]).transpose(1, 2, 0), ((6, 6), (6, 6), (0, 0))).ravel()]
    base = np.log(np.clip(g0, 1e-6, 1 - 1e-6)) - np.log1p(-np.clip(g0, 1e-6, 1 - 1e-6))
    theta = 3.0 * np.random.default_rng(5).standard_normal(3117)
    want = 1 / (1 + np.exp(-(base + np.r_[np.clip(theta[:45], -1, 1), theta[45:]])))
    got = sub.decode(theta)
    np.testing.assert_allclose(np.r_[got["m"], got["s"], got["h"]], want[:45], rtol=1e-6)
    np.testing.assert_allclose(got["cells"].ravel(), want[45:], rtol=1e-6, atol=1e-9)


def test_lenia_init_performs_one_step_and_steps_match_numpy(substrates):
    sub = substrates["lenia"]
    params = sub.decode(0.05 * np.random.default_rng(3).standard_normal(3117))
    state, moved = sub.init(params), False
    for step, (world, shift, total) in enumerate(ref.lenia_states(params, 30)):
        got = sub.state_to_arrays(state)
        np.testing.assert_allclose(got["world"], world, atol=1e-5 if step == 0 else 1e-4, err_msg=f"step {step}")
        np.testing.assert_array_equal(got["shift"], shift)
        np.testing.assert_array_equal(got["total_shift"], total)
        moved |= bool(np.any(total != 0))
        state = sub.step(state, params, 1)
    assert moved, "the recentring never moved the world: the test would not see a wrong roll"


def test_boids_steps_match_numpy(substrates):
    sub = substrates["boids"]
    params = sub.decode(0.5 * np.random.default_rng(1).standard_normal(193))
    state = sub.init(params, seed=4)
    x, v = (sub.state_to_arrays(state)[k] for k in ("x", "v"))
    for _ in range(25):
        x, v = ref.boids_step(x, v, params)
    got = sub.state_to_arrays(sub.step(state, params, 25))
    np.testing.assert_allclose(got["x"], x, atol=1e-4)
    np.testing.assert_allclose(got["v"], v, atol=1e-4)


@pytest.mark.parametrize("N", [300, 2000])
def test_plife_steps_match_numpy_all_pairs(N):
    sub = make_substrate("plife", N=N)
    params = sub.decode(np.random.default_rng(2).standard_normal(42))
    state = sub.init(params, seed=5)
    arr = sub.state_to_arrays(state)
    x, v, c = arr["x"], arr["v"], arr["c"]
    for _ in range(10):
        x, v = ref.plife_step(x, v, c, params["alpha"].astype(np.float64), params["beta"].astype(np.float64))
    got = sub.state_to_arrays(sub.step(state, params, 10))
    np.testing.assert_allclose(got["x"], x, atol=1e-5)
    np.testing.assert_allclose(got["v"], v, atol=1e-4)


def test_plife_all_pairs_fallback_when_r_max_is_large():
    """r_max > 1/3 leaves fewer than 3 cells per axis: the kernel must use all pairs with minimum image."""
    sub = make_substrate("plife", N=200, r_max=0.4)
    params = sub.decode(np.random.default_rng(7).standard_normal(42))
    state = sub.init(params, seed=1)
    arr = sub.state_to_arrays(state)
    x, v = ref.plife_step(arr["x"], arr["v"], arr["c"], params["alpha"].astype(np.float64),
                          params["beta"].astype(np.float64), r_max=0.4)
    got = sub.state_to_arrays(sub.step(state, params, 1))
    np.testing.assert_allclose(got["v"], v, atol=1e-4)
    np.testing.assert_allclose(got["x"], x, atol=1e-6)
