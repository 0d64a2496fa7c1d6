"""The CUDA engine (Triton kernels, CUDA graphs) against the reference data, the NumPy spec and the Taichi engine.

Without a GPU these run the very same kernels under Triton's interpreter on the CPU (conftest sets
TRITON_INTERPRET=1); with one they run on it. Sizes are small: the interpreter runs each program as NumPy calls,
so its cost grows with programs × steps (× objects drawn, for renders), hardly with array sizes. Each case is the
smallest that still selects its kernel path: plife r_max 0.25 gives the smallest cell list whose neighbourhoods
leave cells out (4 × 4 cells, reach 1, edges wrapped on both sides; 3 × 3 would visit every cell), r_max 0.4 the
all-pairs path (one cell); boids N ≤ 128 the Triton kernel, N > 128
the torch step; renders over 256 pixels several tiles per frame.
"""

import numpy as np
import pytest
import torch

from workbench.kernels.graphs import GraphedSteps
from workbench.simulations import make_substrate, rollout
from workbench.simulations import reference as ref

GPU = torch.cuda.is_available()
DEVICE = "cuda" if GPU else "cpu"
gpu_only = pytest.mark.skipif(not GPU, reason="needs a CUDA GPU (the CPU runs these kernels under Triton's "
                                              "interpreter in the other tests)")


def triton(name, **kw):
    return make_substrate(name, device=DEVICE, engine="triton", **kw)


def test_golden_step_of_every_substrate(golden):
    sub = triton("lenia")
    params = {"m": golden["lenia_m"], "s": golden["lenia_s"], "h": golden["lenia_h"], "cells": np.zeros((32, 32, 3))}
    st = sub.state_from_arrays(world=golden["lenia_A0"], shift=np.zeros(2, int), total_shift=np.zeros(2, int))
    np.testing.assert_allclose(sub.state_to_arrays(sub.step(st, params, 1))["world"], golden["lenia_A1"], atol=1e-5)
    sub = triton("boids")
    params = {}
    for i in range(4):
        params[f"W{i + 1}"], params[f"b{i + 1}"] = golden[f"boids_Dense_{i}_kernel"], golden[f"boids_Dense_{i}_bias"]
    out = sub.state_to_arrays(sub.step(sub.state_from_arrays(x=golden["boids_x0"], v=golden["boids_v0"]), params, 1))
    np.testing.assert_allclose(out["x"], golden["boids_x1"], atol=1e-5)
    np.testing.assert_allclose(out["v"], golden["boids_v1"], atol=1e-5)
    sub = triton("plife")
    params = {"alpha": golden["plife_alpha"], "beta": golden["plife_beta"]}
    st = sub.state_from_arrays(x=golden["plife_x0"], v=golden["plife_v0"], c=golden["plife_c"])
    out = sub.state_to_arrays(sub.step(st, params, 1))
    np.testing.assert_allclose(out["x"], golden["plife_x1"], atol=1e-5)
    np.testing.assert_allclose(out["v"], golden["plife_v1"], atol=1e-5)


def test_lenia_recentring_off_centre_follows_the_spec(golden):
    from test_golden import check_recentring_off_centre

    check_recentring_off_centre(triton("lenia"), golden)


def test_lenia_matches_numpy_with_recentring():
    sub = triton("lenia")
    params = sub.decode(0.05 * np.random.default_rng(3).standard_normal(sub.n_params))
    state = sub.init(params)
    for step, (world, shift, total) in enumerate(ref.lenia_states(params, 11)):
        got = sub.state_to_arrays(state)
        np.testing.assert_allclose(got["world"], world, atol=1e-4, err_msg=f"step {step}")
        np.testing.assert_array_equal(got["shift"], shift)
        np.testing.assert_array_equal(got["total_shift"], total)
        state = sub.step(state, params, 1)
    assert np.any(total != 0), "the recentring never moved the world: the test would not see a wrong roll"


def test_lenia_population_matches_the_taichi_engine():
    ours, theirs = triton("lenia"), make_substrate("lenia", device="cpu", engine="taichi")
    params = ours.decode(0.05 * np.random.default_rng(0).standard_normal((3, ours.n_params)))
    a = ours.state_to_arrays(ours.step(ours.init(params), params, 7))
    b = theirs.state_to_arrays(theirs.step(theirs.init(params), params, 7))
    np.testing.assert_allclose(a["world"], b["world"], atol=1e-4)
    np.testing.assert_array_equal(a["total_shift"], b["total_shift"])
    # the members have moved apart by then: a shift read from (or written to) the wrong member would show
    assert len({tuple(t) for t in b["total_shift"]}) > 1, b["total_shift"]


@pytest.mark.parametrize("N,steps", [(128, 8), (40, 5), (200, 5)])  # 200 > BLOCK_MAX: the torch path
def test_boids_match_numpy(N, steps):
    sub = triton("boids", N=N)
    params = sub.decode(0.5 * np.random.default_rng(1).standard_normal(sub.n_params))
    state = sub.init(params, seed=4)
    x, v = (sub.state_to_arrays(state)[k] for k in ("x", "v"))
    for _ in range(steps):
        x, v = ref.boids_step(x, v, params)
    got = sub.state_to_arrays(sub.step(state, params, steps))
    np.testing.assert_allclose(got["x"], x, atol=1e-4)
    np.testing.assert_allclose(got["v"], v, atol=1e-4)


@pytest.mark.parametrize("N,r_max,steps", [(150, 0.25, 3), (200, 0.4, 2)])  # cell list (4 × 4); all pairs
def test_plife_matches_numpy(N, r_max, steps):
    sub = triton("plife", N=N, r_max=r_max)
    assert (sub.grid, sub.reach) == ((4, 1) if r_max <= 0.25 else (1, 0))  # the path named above
    params = sub.decode(np.random.default_rng(2).standard_normal(42))
    state = sub.init(params, seed=5)
    arr = sub.state_to_arrays(state)
    x, v = arr["x"], arr["v"]
    for _ in range(steps):
        x, v = ref.plife_step(x, v, arr["c"], params["alpha"].astype(np.float64), params["beta"].astype(np.float64),
                              r_max=r_max)
    got = sub.state_to_arrays(sub.step(state, params, steps))
    np.testing.assert_allclose(got["x"], x, atol=1e-5)
    np.testing.assert_allclose(got["v"], v, atol=1e-4)


def test_renders_match_the_numpy_renderers():
    sub = triton("boids", N=32)  # the kernel's cost grows with the boids drawn
    params = sub.decode(0.3 * np.random.default_rng(0).standard_normal(sub.n_params))
    state = sub.step(sub.init(params, seed=2), params, 2)
    arr = sub.state_to_arrays(state)
    frame = sub.render(state, params, 224)
    assert frame.shape == (224, 224, 3) and frame.dtype == np.float32
    # to float32's rounding: a PSNR ≥ 30 let a triangle's edge at σ(25λ) for the spec's σ(40λ) pass
    np.testing.assert_allclose(frame, ref.render_boids(arr["x"].astype(np.float64), arr["v"].astype(np.float64)),
                               atol=1e-3, rtol=0)
    assert (frame[..., 0] - frame[..., 1]).max() > 0.9  # boid 0 in red
    sub = triton("plife", N=150)  # few discs: the interpreter's cost grows with the discs drawn
    params = sub.decode(np.random.default_rng(1).standard_normal(42))
    state = sub.step(sub.init(params, seed=3), params, 1)
    arr = sub.state_to_arrays(state)
    for size in (64, 300):  # one tile; 2 × 2 tiles of 256, the outer ones cut by the mask
        ours = sub.render(state, params, size)
        np.testing.assert_allclose(ours, ref.render_particles(arr["x"].astype(np.float64), arr["c"], size), atol=1e-3,
                                   rtol=0)
        assert ours.max() > 0.9
    ours, theirs = triton("lenia"), make_substrate("lenia", device="cpu", engine="taichi")
    params = ours.decode(np.zeros(ours.n_params))
    world = theirs.state_to_arrays(theirs.init(params))
    for size in (224, 50):
        np.testing.assert_array_equal(ours.render(ours.state_from_arrays(**world), params, size),
                                      theirs.render(theirs.state_from_arrays(**world), params, size))


@pytest.mark.parametrize("name,steps", [("lenia", 3), ("boids", 3), ("plife", 2)])
def test_same_seed_same_bits_and_steps_split_anywhere(name, steps):
    sub = triton(name, **({"N": 64, "r_max": 0.25} if name == "plife" else {}))  # plife: the cell list, 4 × 4
    thetas = 0.1 * np.random.default_rng(0).standard_normal((2, sub.n_params))
    params = sub.decode(thetas)
    whole = sub.state_to_arrays(sub.step(sub.init(params, seed=1), params, steps))
    split = sub.step(sub.step(sub.init(params, seed=1), params, steps // 2), params, steps - steps // 2)
    for key in whole:
        np.testing.assert_array_equal(sub.state_to_arrays(split)[key], whole[key])
    if GPU:  # the interpreter runs the kernels as NumPy calls, the same bits every time; a GPU's scheduling may not
        again = sub.state_to_arrays(sub.step(sub.init(params, seed=1), params, steps))
        for key in whole:
            np.testing.assert_array_equal(whole[key], again[key])
    one = sub.decode(thetas[1])
    member = sub.state_to_arrays(sub.step(sub.init(one, seed=1), one, steps))
    for key in whole:  # a population member evolves as it would alone
        np.testing.assert_allclose(member[key], whole[key][1], atol=1e-6 if GPU else 0)


def test_rollout_hands_over_tensors_on_the_device():
    sub = triton("boids", N=32)
    params = sub.decode(0.2 * np.random.default_rng(0).standard_normal((2, sub.n_params)))
    frames = rollout(sub, params, 4, sampling=(2, True), size=48, as_tensor=True)  # states 1 and 3
    assert torch.is_tensor(frames) and frames.device.type == DEVICE and tuple(frames.shape) == (2, 2, 48, 48, 3)
    np.testing.assert_array_equal(frames.cpu().numpy(), rollout(sub, params, 4, sampling=(2, True), size=48))


def test_graphed_steps_run_every_step_once():
    calls = []
    loop = GraphedSteps(lambda: calls.append(1), torch.device("cpu"))
    for n in (1, 37, 64, 5):
        calls.clear()
        loop.run(n)
        assert len(calls) == n


@gpu_only
def test_cuda_graphs_replay_the_same_steps_as_plain_launches(monkeypatch):
    for name in ("lenia", "plife"):
        sub = make_substrate(name, device="cuda")
        params = sub.decode(0.1 * np.random.default_rng(0).standard_normal((4, sub.n_params)))
        graphed = sub.state_to_arrays(sub.step(sub.init(params, seed=1), params, 45))
        monkeypatch.setenv("WORKBENCH_CUDA_GRAPHS", "0")
        plain = make_substrate(name, device="cuda")
        eager = plain.state_to_arrays(plain.step(plain.init(params, seed=1), params, 45))
        monkeypatch.delenv("WORKBENCH_CUDA_GRAPHS")
        for key in graphed:
            np.testing.assert_array_equal(graphed[key], eager[key])


def test_engine_and_device_errors(monkeypatch):
    with pytest.raises(ValueError, match="engine must be one of taichi, triton"):
        make_substrate("lenia", engine="jax")
    with pytest.raises(ValueError, match="no setting grdi.*device=, engine="):
        make_substrate("lenia", grdi=64)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="engine='triton' runs on CUDA GPUs.*engine='taichi'"):
        make_substrate("boids", device="cpu", engine="triton")
    if not GPU:
        with pytest.raises(ValueError, match="torch sees no CUDA GPU.*the CPU is the fallback"):
            make_substrate("boids", device="cuda")
    with pytest.raises(ValueError, match="only 'cpu' and CUDA GPUs"):
        make_substrate("boids", device="mps")


def test_a_population_too_big_for_the_gpu_is_refused_with_the_size_that_fits():
    from workbench.kernels.device import fits_in_memory

    fits_in_memory(torch.device("cuda"), 100, 2**20, "lenia", free_bytes=2**30)  # 100 MiB of 1 GiB: fine
    with pytest.raises(ValueError, match=r"population of 5000 needs about 4.9 GiB.*at most 921 fit.*--chunk"):
        fits_in_memory(torch.device("cuda"), 5000, 2**20, "lenia", free_bytes=2**30)


def test_gpu_benchmark_sections_dry_run_on_the_cpu(monkeypatch):
    """`workbench bench gpu` only runs on CUDA (GPU time is scarce: one prepared run), so its sections are run
    here on the CPU with small sizes: a section that broke would record an error instead of figures. Its
    conformance check puts the user's WORKBENCH_CUDA_GRAPHS back (it deleted it, for every later section), and
    says the graphs-vs-plain comparison is skipped where the user turned graphs off (it compared plain with plain
    and reported 0)."""
    import os

    from workbench import bench_gpu

    for setting in ("1", "0"):
        monkeypatch.setenv("WORKBENCH_CUDA_GRAPHS", setting)
        checked = bench_gpu._self_consistency(torch.device("cpu"), None)
        assert os.environ.get("WORKBENCH_CUDA_GRAPHS") == setting
        diff = checked["boids"]["graphs_vs_plain_max_diff"]
        assert diff == "skipped (WORKBENCH_CUDA_GRAPHS=0)" if setting == "0" else diff == 0, diff

    golden = bench_gpu._golden(torch.device("cpu"), ref.golden())  # the off-centre recentring among them
    assert golden["pass"] and golden["lenia_off_centre_shift_error"] == 0, golden
    assert bench_gpu._renders(torch.device("cpu"), None)["pass"]
    more = bench_gpu._golden_more(torch.device("cpu"), None)  # every further substrate's golden step and render
    assert more["pass"] and len(more) == 16 and more["gol"] == more["dnca"] == 0, more
    # two searches at once, each as alone: one CMA-ES iteration each (ask, simulate, score, tell and write) is
    # the whole of what the threads share; a second added ~10 s on this CPU and no other code path
    twins = bench_gpu._two_searches(torch.device("cpu"), None, iters=1)
    assert twins["pass"] and twins["together_bit_identical_to_alone"] and not twins["errors"], twins
    monkeypatch.setattr(bench_gpu, "_ENGINE", "triton")  # the engines a GPU runs them with: torch's and Triton's
    assert bench_gpu._golden_more(torch.device("cpu"), None)["pass"]
    subs = bench_gpu.substrates(torch.device("cpu"), min_time=0.01, sizes={"boids": [1], "plife": [2]})
    for name in ("boids", "plife"):
        assert "error" not in subs[name], subs[name]
        assert subs[name][next(k for k in subs[name] if k.startswith("P"))] > 0 and subs[name]["render_ms_p1"] > 0
    fm = bench_gpu.fm(torch.device("cpu"), batch=2, min_time=0.01, arch="ViT-S-32")  # a small ViT: the same code
    assert fm["ours_img_per_s"] > 0 and fm["plain_fp32_eager_img_per_s"] > 0 and fm["min_cosine_vs_plain"] > 0.99
    assert fm["ours_float_frames_img_per_s"] > 0
