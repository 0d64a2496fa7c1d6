"""The public substrate API: population axis, rollout, determinism, state round trips, bad input."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.simulations import make_substrate, rollout, sample_indices

NAMES = ["lenia", "boids", "plife"]
STEPS = {"lenia": 3, "boids": 20, "plife": 2}


@pytest.mark.parametrize("name", NAMES)
def test_population_equals_individual_runs(substrates, name):
    sub = substrates[name]
    theta = 0.2 * np.random.default_rng(0).standard_normal((3, sub.n_params))
    params = sub.decode(theta)
    batch = sub.step(sub.init(params, seed=1), params, STEPS[name])
    assert batch.batched and batch.population == 3
    frames = sub.render(batch, params, 64)
    assert frames.shape == (3, 64, 64, 3)
    arrays = sub.state_to_arrays(batch)
    for i in range(3):
        p_i = sub.decode(theta[i])
        single = sub.step(sub.init(p_i, seed=1), p_i, STEPS[name])
        for key, value in sub.state_to_arrays(single).items():
            np.testing.assert_allclose(arrays[key][i], value, atol=1e-6, err_msg=key)
        np.testing.assert_allclose(frames[i], sub.render(single, p_i, 64), atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_run_bit_for_bit(substrates, name):
    sub = substrates[name]
    params = sub.decode(0.3 * np.random.default_rng(5).standard_normal(sub.n_params))
    a = sub.state_to_arrays(sub.step(sub.init(params, seed=9), params, STEPS[name] * 3))
    b = sub.state_to_arrays(sub.step(sub.init(params, seed=9), params, STEPS[name] * 3))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    if name != "lenia":  # Lenia's init is deterministic; the others draw positions from the seed
        c = sub.state_to_arrays(sub.init(params, seed=10))
        assert not np.array_equal(c["x"], sub.state_to_arrays(sub.init(params, seed=9))["x"])


@pytest.mark.parametrize("name", NAMES)
def test_state_round_trip_and_shapes(substrates, name):
    sub = substrates[name]
    params = sub.decode(np.zeros(sub.n_params))
    state = sub.init(params, seed=0)
    arrays = sub.state_to_arrays(state)
    assert {k: v.shape for k, v in arrays.items()} == sub.state_shapes
    again = sub.state_from_arrays(**arrays)
    for key, value in sub.state_to_arrays(sub.step(again, params, 2)).items():
        np.testing.assert_array_equal(value, sub.state_to_arrays(sub.step(state, params, 2))[key])
    # step is pure: the input state is unchanged
    for key, value in sub.state_to_arrays(state).items():
        np.testing.assert_array_equal(value, arrays[key])


def test_named_parameter_shapes(substrates):
    assert {k: v.shape for k, v in substrates["lenia"].decode(np.zeros(3117)).items()} == {
        "m": (15,), "s": (15,), "h": (15,), "cells": (32, 32, 3)}
    assert {k: v.shape for k, v in substrates["boids"].decode(np.zeros(193)).items()} == {
        "W1": (4, 8), "b1": (8,), "W2": (8, 8), "b2": (8,), "W3": (8, 8), "b3": (8,), "W4": (8, 1), "b4": (1,)}
    p = substrates["plife"].decode(np.zeros(42))
    assert p["alpha"].shape == (6, 6) and p["beta"].shape == (6,)
    np.testing.assert_allclose(p["beta"], 0.5)
    np.testing.assert_allclose(p["alpha"], 0.0)
    assert substrates["lenia"].state_shapes["world"] == (128, 128, 3)


def test_plife_theta_is_beta_then_alpha_squashed_as_the_spec_says(substrates):
    """Spec §1: θ ∈ ℝ^42 = β-part (6) ‖ α-part (6×6, row-major), β = σ(θ_β), α = 3·σ(θ_α) − 1.5. At θ = 0 every
    layout and any α = a·σ − a/2 agree (β ½, α 0), so random θ is what pins them."""
    theta = 2.0 * np.random.default_rng(4).standard_normal(42)
    p = substrates["plife"].decode(theta)
    sig = 1 / (1 + np.exp(-theta))
    np.testing.assert_allclose(p["beta"], sig[:6], rtol=1e-6)
    np.testing.assert_allclose(p["alpha"], 3 * sig[6:].reshape(6, 6) - 1.5, rtol=1e-6, atol=1e-7)


def test_sample_indices_follow_the_reference():
    assert sample_indices(256, "final") == [256]
    assert sample_indices(5, "video") == [0, 1, 2, 3, 4]
    assert sample_indices(256, (4, True)) == [63, 127, 191, 255]
    assert sample_indices(256, (4, False)) == [0, 64, 128, 192]
    assert sample_indices(10, (3, True)) == [2, 5, 8]


def test_rollout_frames_and_states_equal_manual_stepping(substrates):
    sub = substrates["boids"]
    params = sub.decode(0.3 * np.random.default_rng(0).standard_normal(193))
    frames, states = rollout(sub, params, 40, sampling=(4, True), size=64, seed=3, return_states=True)
    assert frames.shape == (4, 64, 64, 3) and states["x"].shape == (4, 128, 2)
    state = sub.init(params, seed=3)
    state = sub.step(state, params, 9)
    np.testing.assert_array_equal(states["x"][0], sub.state_to_arrays(state)["x"])
    np.testing.assert_array_equal(frames[0], sub.render(state, params, 64))
    final = rollout(sub, params, 40, sampling="final", size=64, seed=3)
    np.testing.assert_array_equal(final[0], sub.render(sub.step(sub.init(params, seed=3), params, 40), params, 64))
    video = rollout(sub, sub.decode(np.zeros((2, 193))), 6, sampling="video", size=32)
    assert video.shape == (2, 6, 32, 32, 3)


def test_lenia_clips_the_dynamics_part_of_theta_to_plus_minus_one(substrates):
    """Lenia's m, s, h are sigmoid(logit(the pattern's value) + clip(θ, −1, 1)) (the reference's): a θ beyond ±1
    (Sep-CMA-ES steps there) decodes as ±1; the cells' part of θ is not clipped."""
    sub = substrates["lenia"]
    n = sub.n_dyn  # m, s, h of every kernel
    rng = np.random.default_rng(0)
    theta = rng.standard_normal(sub.n_params)
    far = theta.copy()
    far[:n] = 4.0 * np.sign(theta[:n])
    edge = far.copy()
    edge[:n] = np.sign(theta[:n])
    a, b = sub.decode(far), sub.decode(edge)
    for name in ("m", "s", "h", "cells"):
        np.testing.assert_array_equal(a[name], b[name])
    cells = sub.decode(np.concatenate([theta[:n], theta[n:] + 2.0]))["cells"]
    assert not np.allclose(cells, sub.decode(theta)["cells"])


def test_overrides_change_the_defaults():
    sub = make_substrate("boids", N=64, dt=0.02)
    assert sub.state_shapes["x"] == (64, 2) and sub.dt == 0.02
    assert make_substrate("lenia", grid=96).state_shapes["world"] == (96, 96, 3)


# --- bad input: one ValueError naming what was expected --------------------------------------

def test_unknown_substrate_lists_the_choices():
    with pytest.raises(ValueError, match="lenia, boids, plife"):
        make_substrate("gameoflife")
    with pytest.raises(ValueError, match="settings are"):
        make_substrate("boids", n_boids=3)


@pytest.mark.parametrize("theta, message", [
    (np.zeros(192), r"shape \(193,\) or \(P, 193\)"),
    (np.zeros((2, 3, 193)), r"shape \(193,\)"),
    (np.r_[np.zeros(192), np.nan], "NaN or inf"),
    (np.r_[np.zeros(192), np.inf], "NaN or inf"),
])
def test_bad_theta(substrates, theta, message):
    with pytest.raises(ValueError, match=message):
        substrates["boids"].decode(theta)


def test_bad_state_arrays(substrates):
    sub = substrates["plife"]
    arr = sub.state_to_arrays(sub.init(sub.decode(np.zeros(42))))
    with pytest.raises(ValueError, match=r"'x' must have shape \(5000, 2\)"):
        sub.state_from_arrays(x=arr["x"][:10], v=arr["v"], c=arr["c"])
    with pytest.raises(ValueError, match="exactly"):
        sub.state_from_arrays(x=arr["x"], v=arr["v"])
    with pytest.raises(ValueError, match="colours"):
        sub.state_from_arrays(x=arr["x"], v=arr["v"], c=arr["c"] + 6)
    edge = arr["x"].copy()
    edge[0] = np.float32(-1e-9) % np.float32(1.0)  # 1.0: where float32's x mod 1 of a tiny negative lands
    sub.state_from_arrays(x=edge, v=arr["v"], c=arr["c"])
    edge[0] = 1.01
    with pytest.raises(ValueError, match=r"'x' must lie in \[0, 1\]"):
        sub.state_from_arrays(x=edge, v=arr["v"], c=arr["c"])
    bad = arr["v"].copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        sub.state_from_arrays(x=arr["x"], v=bad, c=arr["c"])
    with pytest.raises(ValueError, match=r"'world' must have shape \(128, 128, 3\)"):
        substrates["lenia"].state_from_arrays(world=np.zeros((64, 64, 3)), shift=np.zeros(2, int),
                                              total_shift=np.zeros(2, int))


def test_bad_sizes_and_steps(substrates):
    sub = substrates["boids"]
    params = sub.decode(np.zeros(193))
    state = sub.init(params)
    for steps in (0, -1, 1.5):
        with pytest.raises(ValueError, match="steps must be a positive integer"):
            sub.step(state, params, steps)
    with pytest.raises(ValueError, match="size must be a positive integer"):
        sub.render(state, params, 0)
    with pytest.raises(ValueError, match="at most steps"):
        rollout(sub, params, 4, sampling=(8, True))
    with pytest.raises(ValueError, match="sampling must be"):
        rollout(sub, params, 4, sampling="all")
    with pytest.raises(ValueError, match="N must be a positive integer"):
        make_substrate("boids", N=0)


def test_bad_params(substrates):
    sub = substrates["plife"]
    state = sub.init(sub.decode(np.zeros(42)))
    with pytest.raises(ValueError, match=r"'alpha' must have shape \(6, 6\)"):
        sub.step(state, {"alpha": np.zeros((5, 6)), "beta": np.ones(6) * 0.3})
    with pytest.raises(ValueError, match="missing"):
        sub.step(state, {"alpha": np.zeros((6, 6))})
    with pytest.raises(ValueError, match="NaN or inf"):
        sub.step(state, {"alpha": np.full((6, 6), np.nan), "beta": np.ones(6) * 0.3})
    with pytest.raises(ValueError, match="expected a plife State"):
        sub.step(substrates["boids"].init(substrates["boids"].decode(np.zeros(193))), sub.decode(np.zeros(42)))


def test_parameters_moved_to_the_device_once_give_the_same_run(substrates):
    from workbench.simulations import DeviceParams

    sub = substrates["boids"]
    params = sub.decode(0.3 * np.random.default_rng(0).standard_normal((3, sub.n_params)))
    ready = sub.to_device(params)
    assert isinstance(ready, DeviceParams) and sub.to_device(ready) is ready
    a = sub.state_to_arrays(sub.step(sub.init(params, seed=1), params, 5))
    b = sub.state_to_arrays(sub.step(sub.init(ready, seed=1), ready, 5))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    one = sub.to_device(sub.decode(np.zeros(sub.n_params)))  # one parameter set for a population of three
    state = sub.init(params, seed=1)
    assert sub.step(state, one, 2).population == 3
    other = type(sub)()  # another substrate's prepared parameters are checked like any others
    np.testing.assert_array_equal(other.render(other.init(ready, seed=1), ready, 32),
                                  sub.render(sub.init(params, seed=1), params, 32))
    # checked once, they keep what was checked: an array or tensor of the caller's edited later (a NaN put in) is
    # not theirs (a float32 array was shared on the CPU, unchecked from then on)
    for given in ({k: np.array(v, np.float32) for k, v in params.items()},
                  {k: torch.tensor(v, dtype=torch.float32) for k, v in params.items()}):
        kept = sub.to_device(given)
        for value in given.values():
            value[...] = np.nan
        assert all(bool(torch.isfinite(v).all()) for v in kept.values())


def test_cli_names_every_registered_substrate():
    from workbench.cli.common import SUBSTRATES as CLI_NAMES
    from workbench.simulations import SUBSTRATES

    assert CLI_NAMES == list(SUBSTRATES)



def test_every_export_is_what_the_package_says_not_a_submodule_of_the_same_name():
    """`from workbench.lm import evaluate` gave the module workbench.lm.evaluate, not the function: importing a
    submodule binds its name on the package over a lazy export of the same name (the modules are renamed)."""
    packages = ["workbench", "workbench.asal", "workbench.lm", "workbench.merge", "workbench.qd", "workbench.experts",
                "workbench.namm", "workbench.simulations", "workbench.kernels"]
    code = (f"import importlib, types\nfor package in {packages!r}:\n    pkg = importlib.import_module(package)\n"
            "    print(package, [n for n in pkg.__all__ if isinstance(getattr(pkg, n), types.ModuleType)])")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert [line for line in res.stdout.splitlines() if not line.endswith(" []")] == []


def test_the_library_never_imports_the_command_line():
    """Dependencies point one way (kernels ← simulations ← workbench ← dashboards; the CLI imports the library):
    workbench.namm.bench imported its prompt check from workbench.cli.namm."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    found = [f"{path.relative_to(root)}:{i}" for part in ("workbench", "kernels", "simulations", "dashboards")
             for path in sorted((root / part).rglob("*.py")) if "cli" not in path.relative_to(root).parts
             and path.name not in ("__main__.py", "entry.py")  # the executable's entry points
             for i, line in enumerate(path.read_text().splitlines(), 1)
             if line.lstrip().startswith(("from workbench.cli", "import workbench.cli"))]
    assert found == []


def _library_bad_input(tmp_path):
    """(call, message) pairs from a probe of the Python API as a notebook user calls it: each was a traceback from
    inside NumPy, torch, cmaes or pyribs, an error after a run folder was made, or silently accepted."""
    import io
    import math

    from workbench.asal.atlas import population_grid, project, snap_to_grid
    from workbench.asal.driver import SearchConfig, run_search
    from workbench.asal.evaluate import EvalConfig
    from workbench.asal.scores import supervised_target
    from workbench.asal.search import SepCMAESSearch
    from workbench.compare import compare_runs
    from workbench.experts.cem import CEM
    from workbench.export import export, read_theta
    from workbench.figures import best_video, save
    from workbench.fm import load_fm
    from workbench.lm.evaluation import HeldoutSets, StateDictEvaluator
    from workbench.lm.tasks import make_tokenizer
    from workbench.lm.zoo import ZooConfig
    from workbench.merge.analysis import task_vector_norms
    from workbench.merge.dfs import DFSRecipe
    from workbench.merge.evolution import EvolveConfig
    from workbench.merge.methods import merge_tensors
    from workbench.merge.recipe import Recipe, apply_recipe
    from workbench.merge.search import RecipeCMA
    from workbench.merge.state import merge_state_dicts
    from workbench.namm.trace import TraceConfig
    from workbench.qd.cycle import CycleQDConfig
    from workbench.runs import RunStore
    from workbench.simulations import make_substrate, rollout

    boids = make_substrate("boids", N=8, device="cpu")
    params = boids.decode(np.zeros(boids.n_params))
    ev = EvalConfig("boids", "pixels", steps=4)
    store = RunStore(tmp_path / "runs")
    return [
        (lambda: SearchConfig(kind="target", eval=ev, prompts=["a"], c_prompt=math.nan), "c_prompt weighs a term"),
        (lambda: SearchConfig(kind="target", eval=ev, prompts=["a"], iters=1.5),
         "--iters must be a whole number of at least 1"),
        (lambda: SearchConfig(kind="target", eval=ev, prompts=["a"], sigma="x"), "--sigma must be a finite number"),
        (lambda: SearchConfig(kind="target", eval=EvalConfig("boids", "pixels", steps=2), prompts=["a", "b", "c"]),
         "3 prompts need 3 frames (each prompt scores its share of the rollout's frames), more than --steps 2"),
        (lambda: EvolveConfig(zoo="z", models=["base", "add"]), "--base base is also one of --models"),
        (lambda: EvolveConfig(zoo="z", models=["add", "sort"], pop=2.5), "--pop must be a whole number of at least 1"),
        (lambda: ZooConfig(hidden=0), "hidden must be a whole number of at least 1"),
        (lambda: ZooConfig(hidden=30, heads=4), "hidden (30) must be a multiple of heads (4)"),
        (lambda: ZooConfig(tasks=("add", "add")), "give one or more distinct tasks"),
        (lambda: make_substrate("boids", dt="0.1"), "boids: dt must be a number, got '0.1'"),
        (lambda: boids.init(params, seed=-1), "seed must be a whole number from 0 to 4294967295"),
        (lambda: boids.init(params, seed="5"), "seed must be a whole number"),
        (lambda: boids.decode(np.zeros((0, boids.n_params))), "holds no simulation"),
        (lambda: rollout(boids, params, 4, sampling=(2, "no")), "chunk_ends must be True or False"),
        (lambda: SepCMAESSearch(3, sigma=0), "sigma must be a finite number > 0"),
        (lambda: SepCMAESSearch(3, population=4.5), "population must be a whole number of at least 2, got 4.5"),
        (lambda: RecipeCMA(np.zeros(2), np.array([[1.0, 0.0], [0.0, 1.0]])), "with low < high"),
        (lambda: load_fm("efficientnet-lite0", weights="mine.pt"), "--fm efficientnet-lite0 brings its weights"),
        (lambda: load_fm("pixels", cache_size="x"), "cache_size (embeddings kept; 0: none) must be a whole number"),
        (lambda: export(boids, params, 4, tmp_path / "v.gif", final_png=tmp_path / "nowhere" / "f.png"),
         "nowhere does not exist; create it first"),
        (lambda: compare_runs(store, "abc"), "give a list of two or more run ids to compare, got the one string"),
        (lambda: Recipe.from_yaml("nope.yaml"), "no such recipe file: nope.yaml"),
        (lambda: best_video(store, "any", tmp_path / "v.mp4", steps=0),
         "steps must be a whole number of at least 1, got 0"),
        (lambda: DFSRecipe(models="add", layers=2), "models is a list of model names"),
        (lambda: HeldoutSets(make_tokenizer(), ["add"], n=0),
         "n (held-out prompts per task) must be a whole number of at least 1, got 0"),
        (lambda: StateDictEvaluator(torch_nn().Linear(1, 1), make_tokenizer(), ["add"], method="greed"),
         "method must be one of greedy, forced"),
        (lambda: supervised_target(np.ones((2, 4)), np.ones((1, 3))), "prompt embeddings of size 3 against frame"),
        (lambda: project(np.array([[0.0, 1.0], [np.nan, 0.0]])), "the embeddings hold NaN or inf"),
        (lambda: read_theta(io.BytesIO(b"\x89PNG not a .npy"), "up.png"),  # the Lab's upload (NumPy: "pickle")
         "cannot read θ from up.png: not a NumPy .npy array (save one with numpy.save)"),
        (lambda: snap_to_grid(np.zeros((4, 3))), "snap_to_grid takes 2-D points of shape (N, 2)"),
        (lambda: population_grid(np.zeros((4, 8, 8))), "population_grid takes thumbnails of shape (N, H, W, 3)"),
        (lambda: merge_tensors([torch_zeros(2)] * 2, "task_arithmetic", base_index=1.0),
         "base_index must be a whole number"),
        (lambda: task_vector_norms({"w": torch_zeros(2)}, {"add": {"w": torch_zeros(3)}}),
         "add does not fit the base: the base's w is (2,), add has shape (3,)"),
        # from the second probe of the library (2026-12-03)
        (lambda: EvalConfig("lenai", "pixels"), "unknown substrate 'lenai'; choose one of lenia"),
        (lambda: EvalConfig("lenia", "clipp"), "unknown foundation model --fm clipp"),
        (lambda: EvalConfig("lenia", "pixels", overrides={"gird": 64}), "lenia has no setting gird"),
        (lambda: SearchConfig(kind="target", eval=None, prompts=["a"]), "eval must be an EvalConfig"),
        (lambda: CEM(np.full(2, 0.5), seed=None), "seed must be a whole number"),
        (lambda: CEM(np.full(2, 0.5), pop=32.9), "pop must be a whole number of at least 3, got 32.9"),
        (lambda: CEM(np.full(2, 0.5), bounds=(0, 1, 2)), "bounds must be a (lo, hi) pair"),
        (lambda: RecipeCMA(np.zeros(2), np.array([[0.0, 1.0]] * 2), seed=None), "seed must be a whole number"),
        (lambda: RecipeCMA(np.zeros(2), np.array([[0.0, 1.0]] * 2), population=4).tell(np.zeros((3, 2)), np.zeros(3)),
         "tell takes the 4 genomes of the last ask"),
        (lambda: merge_state_dicts({"a": {"w": torch_zeros(2)}, "b": {"w": torch_zeros(2)}}, "linear",
                                   parameters={"weight": 1.0, "densty": 0.5}), "unknown parameter(s) 'densty'"),
        (lambda: run_search(None, 5, resume="x"), "give a RunStore or the path of its folder, got int"),
        (lambda: TraceConfig(n_up=-1), "n_up (tokens between eviction steps) must be a positive multiple of 16"),
        (lambda: CycleQDConfig(omega_sigma="x"), "omega_sigma must be a finite number, got 'x'"),
        # from the third probe (2026-12-04): a config edited after it was built is checked again, before a folder
        (lambda: run_search(_edited(ev, iters=0), store), "--iters must be a whole number of at least 1, got 0"),
        (lambda: run_search(_edited(ev, pop=1), store), "--pop must be at least 2 (the population of each"),
        (lambda: run_search(_edited(EvalConfig("boids", "pixels", steps=4), eval_steps=0), store),
         "--steps must be a whole number of at least 1, got 0"),
        (lambda: run_search(_edited(ev), store, iters=3), "iters= sets the total of a resumed run"),
        (lambda: store.open(12), "give a run id (a str, or a Run), got int"),
        (lambda: store.open(tmp_path / "elsewhere" / "r1"), "is not a run folder of the run store"),
        (lambda: store.open(tmp_path / "runs" / "r"), "no run folder"),  # a folder is never a prefix of another
        (lambda: boids.init({**params, "W_1": params["W1"]}), "boids: no parameters ['W_1']; its parameters are"),
        (lambda: population_grid(np.full((4, 8, 8, 3), 200.0)), "float frames must be in [0, 1]"),
        (lambda: save(__import__("matplotlib.figure").figure.Figure(), tmp_path / "f.png"),
         "save writes HoloViews objects"),
        (lambda: boids.decode("abc"), "boids: θ must hold real numbers, got <U3 values"),
        (lambda: boids.decode([None] * boids.n_params), "boids: θ must hold real numbers, got object values"),
        (lambda: boids.decode(np.zeros(boids.n_params, complex)), "θ must hold real numbers, got complex128"),
        (lambda: merge_state_dicts([{"w": torch_zeros(2)}] * 2, "linear"), "models is a dict {model name: state"),
        (lambda: apply_recipe(Recipe.from_dict({"merge_method": "linear", "models": [
            {"model": "a", "parameters": {"weight": 1.0}}, {"model": "b", "parameters": {"weight": 1.0}}]}),
            {"a": {}, "b": {}}), "load is a function from a model name to its state dict, got a dict; for a dict"),
    ]


def _edited(ev, eval_steps=None, **changes):
    """A config changed after it was built, as a notebook does (cfg.iters = 0)."""
    from workbench.asal.driver import SearchConfig

    cfg = SearchConfig(kind="target", eval=ev, prompts=["a"], iters=2, pop=4)
    for name, value in changes.items():
        setattr(cfg, name, value)
    if eval_steps is not None:
        cfg.eval.steps = eval_steps
    return cfg


def torch_zeros(n):
    import torch

    return torch.zeros(n)


def torch_nn():
    import torch

    return torch.nn


def test_library_bad_input_is_one_clear_error_naming_the_setting(tmp_path):
    for call, message in _library_bad_input(tmp_path):
        with pytest.raises(ValueError) as caught:
            call()
        assert message in str(caught.value), message
    assert not (tmp_path / "v.gif").exists() and not (tmp_path / "runs").exists()


def test_library_takes_one_string_as_one_name_not_one_per_letter():
    from workbench.asal.driver import SearchConfig
    from workbench.asal.evaluate import EvalConfig
    from workbench.lm.tasks import check_tasks
    from workbench.lm.zoo import ZooConfig

    cfg = SearchConfig(kind="target", eval=EvalConfig("boids", "pixels", steps=4), prompts="a flock")
    assert cfg.prompts == ["a flock"] and cfg.eval.frames == 1
    assert ZooConfig(tasks="add").tasks == ("add",)
    assert check_tasks("sort") == ["sort"]
    assert check_tasks(t for t in ("add", "sort")) == ["add", "sort"]  # a generator, read once
    # and one number as one number of shots
    from workbench.experts.adapt import AdaptConfig
    from workbench.namm.bench import BenchConfig, check_config
    from workbench.namm.peer import check_presses

    assert AdaptConfig(model="smollm2", experts=["e.safetensors"], target="recall", shots=3).shots == [3]
    one = AdaptConfig(model="smollm2", experts="e.safetensors", tasks="recall", target="recall", strategies="few-shot",
                      shots=np.int64(4))
    assert (one.experts, one.tasks, one.strategies, one.shots) == (["e.safetensors"], ["recall"], ["few-shot"], [4])
    assert check_presses("snapkv") == check_presses(["snapkv"]) and len(check_presses("snapkv")) == 1
    bench = BenchConfig(tasks="passkey", sections="cma", presses="none")
    check_config(bench)
    assert (bench.tasks, bench.sections, bench.presses) == (["passkey"], ["cma"], [])


def test_rendered_frames_to_images_and_a_table_named_as_a_file(tmp_path):
    from workbench import RunError, RunStore, to_uint8

    assert to_uint8(np.array([-0.5, 0.0, 0.5, 0.999, 1.0, 2.0], np.float32)).tolist() == [0, 0, 128, 255, 255, 255]
    run = RunStore(tmp_path).create("target", "boids", "pixels", {}, seed=0)
    with pytest.raises(RunError, match=r"has no metrics\.parquet\.parquet \(name the table without \.parquet: "
                                       r"read_table\('metrics'\)\)"):
        run.read_table("metrics.parquet")


def test_library_leaves_what_it_is_given_as_it_was(tmp_path):
    """A config keeps its own copy of the EvalConfig it adjusts (an illumination embeds the final state only:
    the caller's frames were set to 1), and the model builders seed their own generators, not the caller's."""
    import torch

    from workbench.asal.driver import SearchConfig
    from workbench.asal.evaluate import EvalConfig
    from workbench.asal.sweep import SweepConfig
    from workbench.experts.cem import CEM
    from workbench.namm.models import tiny_llama

    ev = EvalConfig("boids", "pixels", steps=16, frames=8)
    cfg = SearchConfig(kind="illuminate", eval=ev)
    assert (ev.frames, ev.sampling) == (8, "chunk_ends") and (cfg.eval.frames, cfg.eval.sampling) == (1, "final")
    assert SearchConfig(kind="openended", eval=ev).eval.frames == 8
    gol = EvalConfig("gol", "pixels", steps=8, frames=2)
    assert SweepConfig(gol, limit=2, batch=2).eval is not gol
    CEM(np.full(2, 0.5), seed=4_294_968_000)  # adapt derives CEM seeds beyond 2³² from its own (seed·1000 + k)

    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    tiny_llama(tmp_path / "tiny", seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_search_config_asks_the_kinds_members_an_iteration_as_the_cli():
    """SearchConfig left at its pop asks what `workbench asal` asks: 16 a target or open-ended search (CMA-ES's
    population), 32 an illumination's children (asal.md §4; the library drew 16 and the CLI 32)."""
    from workbench.asal.driver import SearchConfig, read_config
    from workbench.asal.evaluate import EvalConfig

    ev = EvalConfig("boids", "pixels", steps=8, frames=2)
    pops = {kind: SearchConfig(kind=kind, eval=ev, prompts=["a flock"] if kind == "target" else []).pop
            for kind in ("target", "openended", "illuminate")}
    assert pops == {"target": 16, "openended": 16, "illuminate": 32}
    assert SearchConfig(kind="illuminate", eval=ev, pop=5).pop == 5
    assert read_config(SearchConfig(kind="illuminate", eval=ev).to_dict()).pop == 32


def test_seedless_substrates_say_that_more_seeds_repeat_one_rollout():
    from workbench.asal.driver import SearchConfig
    from workbench.asal.evaluate import EvalConfig
    from workbench.simulations import SUBSTRATES

    assert [name for name, cls in SUBSTRATES.items() if not cls.seeded_init] == ["lenia", "flow_lenia"]
    notes = SearchConfig(kind="illuminate", eval=EvalConfig("lenia", "pixels", steps=4, bs=2)).notes
    assert any("--bs 2: lenia's initial state does not depend on the seed" in n for n in notes)
    assert SearchConfig(kind="illuminate", eval=EvalConfig("boids", "pixels", steps=4, bs=2)).notes == []


def test_library_takes_what_older_runs_and_other_callers_pass():
    """What the new checks must not refuse: seeds as a torch tensor or NumPy integers, a linear merge whose models
    include the base (linear ignores it), an embedded FM with weights an older run recorded (they were ignored)."""
    import torch

    from workbench.asal.evaluate import EvalConfig, components
    from workbench.merge.evolution import EvolveConfig
    from workbench.simulations import make_substrate

    boids = make_substrate("boids", N=8, device="cpu")
    params = boids.decode(np.zeros((2, boids.n_params)))
    a = boids.state_to_arrays(boids.init(params, seed=torch.tensor([3, 4])))
    b = boids.state_to_arrays(boids.init(params, seed=np.array([3, 4], np.uint32)))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert EvolveConfig(zoo="z", models=["base", "add"], method="linear", iters=np.int64(2)).iters == 2
    assert type(components(EvalConfig("boids", "pixels", weights="old.pt", steps=4))[1]).__name__ == "PixelsFM"


def test_packages_reach_their_submodules_after_a_plain_import():
    """`import workbench.experts; workbench.experts.adapt.adapt(...)` (the package's docstring) and
    `import workbench; workbench.asal.scores` work in a fresh process, not only after another import loaded the
    module; a name that is neither an export nor a submodule stays an AttributeError."""
    code = ("import workbench, workbench.experts\n"
            "print(workbench.experts.adapt.adapt.__name__, workbench.asal.scores.__name__)\n"
            "try:\n    workbench.nothing\nexcept AttributeError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.splitlines() == ["adapt workbench.asal.scores", "module 'workbench' has no attribute 'nothing'"]


def test_library_takes_paths_and_runs_where_it_takes_texts_and_ids(tmp_path, monkeypatch):
    """What a notebook has at hand: a Path for a file or a store ("~/runs" too), the Run a run function returned
    for its id, and float frames as render returns them (a cast to uint8 drew them black)."""
    from PIL import Image

    from workbench.asal.atlas import population_grid
    from workbench.asal.driver import SearchConfig, run_search
    from workbench.asal.evaluate import EvalConfig
    from workbench.compare import compare_runs
    from workbench.runs import RunStore

    monkeypatch.setenv("HOME", str(tmp_path))
    store = RunStore("~/runs")
    assert store.root == tmp_path / "runs"
    image = tmp_path / "t.png"
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(image)
    runs = [run_search(SearchConfig(kind="target", eval=EvalConfig("boids", "pixels", steps=4, size=32),
                                    target_image=image, iters=1, pop=4, seed=seed), store) for seed in (0, 1)]
    assert runs[0].info["config"]["target_image"] == "inputs/t.png"
    assert store.open(runs[0]).id == store.open(runs[0].path).id == runs[0].id
    assert {r["id"] for r in compare_runs(store, runs).rows} == {r.id for r in runs}
    assert run_search(None, store, resume=runs[0], iters=2).info["iterations"] == 2
    assert EvalConfig("boids", "pixels", weights=image).weights == str(image)
    from workbench.merge.evolution import EvolveConfig

    assert EvolveConfig(zoo=tmp_path, models=[Path("add"), Path("sort")]).models == ["add", "sort"]
    assert store.open(Path("~/runs") / runs[0].id).id == runs[0].id
    frames = np.random.default_rng(0).random((4, 8, 8, 3))
    np.testing.assert_array_equal(population_grid(frames), population_grid((frames * 255 + 0.5).astype(np.uint8)))
    assert population_grid(frames).max() > 200
    from workbench.kernels.device import describe

    assert describe("cpu") == "cpu"  # a device's name as well as a torch.device


def test_namm_training_keeps_its_step_size_and_memory_weight_as_numbers():
    """The check read float(value) and kept what was given: sigma="0.5" and memory_weight="0.1" went into run.json
    as text, True as a boolean; "x" failed with Python's own float() message, naming no flag."""
    from workbench.namm.train import NAMMTrainConfig

    cfg = NAMMTrainConfig(tasks=["passkey"], sigma="0.5", memory_weight="0.1")
    assert (cfg.sigma, cfg.memory_weight) == (0.5, 0.1) and type(cfg.sigma) is type(cfg.memory_weight) is float
    assert type(NAMMTrainConfig(tasks=["passkey"], sigma=np.float32(0.25)).to_dict()["sigma"]) is float
    with pytest.raises(ValueError, match=r"--stage-gens takes whole numbers of generations, got \[1.5, 2.5\]"):
        NAMMTrainConfig(tasks=["passkey", "kv"], gens=4, stage_gens=[1.5, 2.5])  # stages of 1 and 2 before
    for name, flag in (("sigma", "--sigma"), ("memory_weight", "--memory-weight")):
        for bad in (True, "x", None):
            with pytest.raises(ValueError, match=f"^{flag} must be a finite number"):
                NAMMTrainConfig(tasks=["passkey"], **{name: bad})


def test_switches_of_configs_take_true_or_false_alone():
    """A switch given "no" (a notebook's text, a parsed file) was read as on: refused, naming it."""
    from workbench.experts.adapt import AdaptConfig
    from workbench.namm.trace import TraceConfig

    with pytest.raises(ValueError, match=r"normalize \(--normalize\) is True or False, got 'no'"):
        AdaptConfig(model="m", experts=["e.safetensors"], normalize="no")
    with pytest.raises(ValueError, match="chat is True or False, got 'yes'"):
        TraceConfig(chat="yes")
    assert TraceConfig(chat=False).chat is False


def test_the_rule_ga_takes_numpys_seeds_alone():
    """RuleGA took any seed to NumPy (-1: "expected non-negative integer"; 1.5: a TypeError): it says the range,
    naming --seed."""
    from workbench.asal.rules import RuleGA

    for bad in (-1, 1.5, 2 ** 32):
        with pytest.raises(ValueError, match="--seed must be a whole number from 0 to 4294967295"):
            RuleGA(seed=bad)


def test_counts_refuse_true_and_keep_numpys_integers_as_ints():
    """From mutation sampling: True is no count (it passed as 1: a bool is an int to Python), and a NumPy integer
    taken for one is stored as the int run.json holds."""
    from workbench.asal.driver import SearchConfig
    from workbench.asal.evaluate import EvalConfig

    ev = EvalConfig("boids", "pixels", steps=4)
    with pytest.raises(ValueError, match="--iters must be a whole number of at least 1, got True"):
        SearchConfig(kind="target", eval=ev, prompts=["a"], iters=True)
    cfg = SearchConfig(kind="target", eval=ev, prompts=["a"], iters=np.int64(3))
    assert type(cfg.iters) is int and cfg.iters == 3


def test_path_lists_of_other_lengths_are_not_the_same_paths(tmp_path):
    """From mutation sampling: lists of paths of other lengths are other inputs (False), not a zip's ValueError."""
    from workbench.checks import same_paths

    (tmp_path / "a").mkdir()
    a = str(tmp_path / "a")
    assert same_paths([a], [a + "/"]) and not same_paths([a], [a, a]) and not same_paths([a, a], [a])


def test_the_config_checks_keep_names_refuse_a_file_to_write_into_and_make_notes_once(tmp_path, monkeypatch):
    """From mutation sampling: a `keep` name stays as typed even where a folder of that name is at hand (a model
    called "smollm2"); check_writable(within=True) tries the path itself (a file is no folder to write into),
    without it the folder above; a config checked again makes its notes anew, not twice."""
    from types import SimpleNamespace

    from workbench.asal.driver import SearchConfig
    from workbench.asal.evaluate import EvalConfig
    from workbench.checks import absolute_paths, check_writable, checked_again

    monkeypatch.chdir(tmp_path)
    for name in ("smollm2", "tiny"):
        (tmp_path / name).mkdir()
    cfg = SimpleNamespace(model="smollm2", models=["smollm2", "tiny"])
    absolute_paths(cfg, "model", "models", keep=("smollm2",))
    assert cfg.model == "smollm2" and cfg.models == ["smollm2", str(tmp_path / "tiny")]
    (tmp_path / "afile").write_text("x")
    check_writable(tmp_path / "afile", "--out", "give a new file")
    with pytest.raises(ValueError, match=f"--zoo {tmp_path / 'afile'}: cannot write in {tmp_path / 'afile'} "):
        check_writable(tmp_path / "afile", "--zoo", "give a folder", within=True)
    cfg = SearchConfig(kind="illuminate", eval=EvalConfig("lenia", "pixels", steps=4, bs=2))
    assert len(cfg.notes) == 1 and checked_again(cfg).notes == cfg.notes
