"""Grid neighbour search and renderers against brute force / the straightforward renderers."""

import numpy as np
import pytest

from workbench.simulations import make_substrate
from workbench.simulations import reference as ref


@pytest.mark.parametrize("layout", ["uniform", "clustered", "sparse"])
def test_boids_grid_knn_equals_brute_force(substrates, layout):
    rng = np.random.default_rng(0)
    N = {"uniform": 128, "clustered": 300, "sparse": 20}[layout]
    x = rng.random((3, N, 2))
    if layout == "clustered":  # most boids in one cell: the ring search must still be exact
        x[:, : N // 2] = 0.42 + 0.03 * rng.random((3, N // 2, 2))
    x = x.astype(np.float32)
    idx, dist = substrates["boids"].knn(x, k=16)
    d = np.linalg.norm(x[:, :, None].astype(np.float64) - x[:, None], axis=-1)
    d[:, np.arange(N), np.arange(N)] = np.inf
    brute = np.argsort(d, axis=-1, kind="stable")[..., :16]
    np.testing.assert_array_equal(idx, brute)
    np.testing.assert_allclose(dist, np.take_along_axis(d, brute, -1), rtol=1e-5)


def test_boids_render_matches_straightforward_renderer(substrates):
    sub = substrates["boids"]
    params = sub.decode(0.3 * np.random.default_rng(0).standard_normal(193))
    state = sub.step(sub.init(params, seed=2), params, 20)
    arr = sub.state_to_arrays(state)
    ours = sub.render(state, params, 224)
    theirs = ref.render_boids(arr["x"].astype(np.float64), arr["v"].astype(np.float64))
    assert ours.shape == (224, 224, 3) and ours.dtype == np.float32
    # to float32's rounding (2e-5 here): a PSNR ≥ 30 let a triangle's edge at σ(25λ) for the spec's σ(40λ) pass
    np.testing.assert_allclose(ours, theirs, atol=1e-3, rtol=0)
    assert ours[..., 1].min() < 0.1 and ours.max() == pytest.approx(1.0)  # black boids on white
    assert (ours[..., 0] - ours[..., 1]).max() > 0.9  # boid 0 in red


def test_particles_render_matches_straightforward_renderer():
    sub = make_substrate("plife", N=1500)
    params = sub.decode(np.random.default_rng(1).standard_normal(42))
    state = sub.step(sub.init(params, seed=3), params, 5)
    arr = sub.state_to_arrays(state)
    ours = sub.render(state, params, 224)
    theirs = ref.render_particles(arr["x"].astype(np.float64), arr["c"])
    np.testing.assert_allclose(ours, theirs, atol=1e-3, rtol=0)
    assert ours.max() > 0.9


def test_particles_render_at_other_sizes(substrates):
    sub = substrates["plife"]
    params = sub.decode(np.zeros(42))
    state = sub.init(params, seed=0)
    arr = sub.state_to_arrays(state)
    x, c = arr["x"][:400].astype(np.float64), arr["c"][:400]
    small = make_substrate("plife", N=400)
    st = small.state_from_arrays(x=arr["x"][:400], v=arr["v"][:400], c=c)
    for size in (64, 300):
        np.testing.assert_allclose(small.render(st, params, size), ref.render_particles(x, c, size), atol=1e-3, rtol=0)


def test_lenia_render_is_nearest_upscale_of_the_phenotype(substrates):
    sub = substrates["lenia"]
    params = sub.decode(np.zeros(3117))
    state = sub.step(sub.init(params), params, 5)
    world = sub.state_to_arrays(state)["world"]
    img = sub.render(state, params, 224)
    src = ((np.arange(224) + 0.5) * 64 / 224).astype(int)
    np.testing.assert_array_equal(img, world[32:96, 32:96][src][:, src])
    np.testing.assert_array_equal(sub.render(state, params, 64), world[32:96, 32:96])


@pytest.mark.parametrize("size", [48, 512])
def test_boids_render_at_other_sizes(substrates, size):
    """Large windows (the viewer renders at up to 512) must not overflow the tile lists."""
    sub = substrates["boids"]
    params = sub.decode(np.zeros(193))
    state = sub.init(params, seed=1)
    arr = sub.state_to_arrays(state)
    ours = sub.render(state, params, size)
    theirs = ref.render_boids(arr["x"].astype(np.float64), arr["v"].astype(np.float64), size)
    np.testing.assert_allclose(ours, theirs, atol=1e-3, rtol=0)


def test_starting_taichi_leaves_the_threads_floating_point_as_it_was():
    """ti.init turned on flush-to-zero in the thread that started Taichi and left it on: that thread's NumPy and
    torch then read and wrote subnormal numbers as 0 (a notebook's own arithmetic after its first Lenia step; a
    figure's CSV wrote 5e-324 as 0.0). Starting Taichi leaves the thread as it was: subnormals kept, or flushed
    where the caller had asked for it. In fresh processes: Taichi starts once per process."""
    import subprocess
    import sys

    script = """
import sys, numpy as np, torch
from workbench.kernels.runtime import ensure_taichi
def flushes():  # the smallest normal double halved is subnormal, or 0 under flush-to-zero
    return float(np.float64(2.2250738585072014e-308) / np.float64(2.0)) == 0.0
if sys.argv[1] == "flush":
    torch.set_flush_denormal(True)
before = flushes()
ensure_taichi("cpu")
print(before, flushes(), float(np.float64(5e-324) * np.float64(1.0)))
"""
    for mode, expected in (("keep", "False False 5e-324"), ("flush", "True True 0.0")):
        res = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        assert res.stdout.split("\n")[-2] == expected, (mode, res.stdout)
