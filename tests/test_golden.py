"""One step of each substrate against the reference implementation's output (shared/data)."""

import numpy as np


def test_lenia_step_matches_reference(golden, substrates):
    sub = substrates["lenia"]
    params = {"m": golden["lenia_m"], "s": golden["lenia_s"], "h": golden["lenia_h"],
              "cells": np.zeros((32, 32, 3), np.float32)}
    state = sub.state_from_arrays(world=golden["lenia_A0"], shift=np.zeros(2, int), total_shift=np.zeros(2, int))
    out = sub.state_to_arrays(sub.step(state, params, 1))
    np.testing.assert_allclose(out["world"], golden["lenia_A1"], atol=1e-5, rtol=0)


def check_recentring_off_centre(sub, golden) -> None:
    """The golden step from its state rolled off the centre (reference.lenia_off_centre): the world is the golden
    one rolled alike and the shift the spec's, trunc(centre·R) with m00 the mass before the update. At the golden
    state the mass after the update gave the same shift, and no test read the shift there (floor went by too)."""
    from workbench.simulations import reference as ref

    params = {"m": golden["lenia_m"], "s": golden["lenia_s"], "h": golden["lenia_h"],
              "cells": np.zeros((32, 32, 3), np.float32)}
    before, after, shift = ref.lenia_off_centre(golden)
    assert tuple(shift) == (-38, 37)  # centre·R = (−38.35, 37.59): floor gives −39, the mass after (−39, 38)
    state = sub.state_from_arrays(world=before, shift=np.zeros(2, int), total_shift=np.zeros(2, int))
    out = sub.state_to_arrays(sub.step(state, params, 1))
    np.testing.assert_allclose(out["world"], after, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(out["shift"], shift)
    np.testing.assert_array_equal(out["total_shift"], shift)


def test_lenia_recentring_off_centre_follows_the_spec(golden, substrates):
    check_recentring_off_centre(substrates["lenia"], golden)


def test_boids_step_matches_reference(golden, substrates):
    sub = substrates["boids"]
    params = {}
    for i in range(4):
        params[f"W{i + 1}"] = golden[f"boids_Dense_{i}_kernel"]
        params[f"b{i + 1}"] = golden[f"boids_Dense_{i}_bias"]
    state = sub.state_from_arrays(x=golden["boids_x0"], v=golden["boids_v0"])
    out = sub.state_to_arrays(sub.step(state, params, 1))
    np.testing.assert_allclose(out["x"], golden["boids_x1"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(out["v"], golden["boids_v1"], atol=1e-5, rtol=0)


def test_plife_step_matches_reference(golden, substrates):
    sub = substrates["plife"]
    params = {"alpha": golden["plife_alpha"], "beta": golden["plife_beta"]}
    state = sub.state_from_arrays(x=golden["plife_x0"], v=golden["plife_v0"], c=golden["plife_c"])
    out = sub.state_to_arrays(sub.step(state, params, 1))
    np.testing.assert_allclose(out["x"], golden["plife_x1"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(out["v"], golden["plife_v1"], atol=1e-5, rtol=0)


def test_boids_flat_theta_layout_matches_reference_weights(golden, substrates):
    """θ = [b1, W1, b2, W2, …] (row-major) decodes to the reference's Dense_i weights."""
    sub = substrates["boids"]
    theta = np.concatenate([np.concatenate([golden[f"boids_Dense_{i}_bias"], golden[f"boids_Dense_{i}_kernel"].ravel()])
                            for i in range(4)])
    assert theta.size == sub.n_params == 193
    params = sub.decode(theta)
    for i in range(4):
        np.testing.assert_array_equal(params[f"W{i + 1}"], golden[f"boids_Dense_{i}_kernel"])
        np.testing.assert_array_equal(params[f"b{i + 1}"], golden[f"boids_Dense_{i}_bias"])
