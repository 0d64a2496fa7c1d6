"""A candidate whose simulation blows up (NaN or inf from an extreme θ) through decode, render, embedding, loss and
the searches' tell: it never fails a search nor moves its optimiser as if it were good, it ranks last, the same
seed gives the same run, the metrics count it, and its pixels are defined (black), not what a cast of NaN gave."""

import warnings

import numpy as np
import pytest

from workbench.asal.evaluate import EvalConfig, Objective, components, embed_rollouts, to_uint8_tensor
from workbench.asal.search import IlluminationGA, MapElitesSearch, SepCMAESSearch
from workbench.simulations import make_substrate

# Particle Lenia: c_rep = e^80 is a finite parameter whose state is NaN within 10 steps; at e^100 the parameter
# itself is past float32's range
DIVERGES = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 80.0])
OVERFLOWS = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 100.0])


def _eval() -> EvalConfig:
    return EvalConfig("plenia", "pixels", steps=20, size=32, chunk=4, device="cpu", overrides={"N": 50})


def test_a_diverged_rollout_has_nan_embeddings_and_a_black_thumbnail():
    """Before: the NaN frame went to the FM as a black frame (finite embedding) and the candidate was scored as a
    black picture: against a dark target it was the best of its generation."""
    ev = _eval()
    fine = np.zeros(6)
    z, thumbs = embed_rollouts(ev, np.stack([fine, DIVERGES, fine]), [0, 1])
    assert np.isfinite(z[[0, 2]]).all()
    assert np.isnan(z[1]).all()  # every seed diverges: all its embeddings, all K frames
    alone, alone_thumbs = embed_rollouts(ev, fine[None], [0, 1])
    np.testing.assert_array_equal(z[0], alone[0])  # its neighbours' numbers are untouched
    np.testing.assert_array_equal(thumbs[0], alone_thumbs[0])
    assert (thumbs[1] == 0).all()  # a NaN frame is black, by definition, not by the CPU's cast
    _, fm = components(ev)
    black = fm.embed_images(np.zeros((1, 32, 32, 3), np.float32))
    losses = Objective(black)(z)
    assert np.isnan(losses[1]) and np.isfinite(losses[[0, 2]]).all()


def test_a_theta_past_float32_decodes_to_finite_parameters_and_diverges():
    """Before: e^100 cast to float32 was inf, which the parameters' check refused: one such θ in a chunk failed
    the whole search (ValueError: parameter 'c_rep' contains NaN or inf)."""
    sub = make_substrate("plenia", device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        params = sub.decode(OVERFLOWS)
    assert all(np.isfinite(v).all() for v in params.values())
    assert params["c_rep"] == np.finfo(np.float32).max
    np.testing.assert_array_equal(sub.decode(DIVERGES)["c_rep"], np.float32(np.exp(80.0)))  # in range: as before
    z, _ = embed_rollouts(_eval(), np.stack([np.zeros(6), OVERFLOWS]), [0])
    assert np.isfinite(z[0]).all() and np.isnan(z[1]).all()


def test_to_uint8_makes_nan_black_without_a_cast_of_nan():
    from workbench.export import to_uint8

    torch = pytest.importorskip("torch")
    frame = np.array([np.nan, np.inf, -np.inf, 0.5, 1.0, 0.0], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NumPy: "invalid value encountered in cast" where NaN was cast
        out = to_uint8(frame)
    np.testing.assert_array_equal(out, [0, 255, 0, 128, 255, 0])
    np.testing.assert_array_equal(to_uint8_tensor(torch.as_tensor(frame)).numpy(), out)


def test_cma_ranks_a_failed_candidate_last_and_never_best():
    """cmaes' tell sorts by value: a NaN anywhere in the order moved its mean towards the NaN's θ. Told as failed,
    a candidate ranks below every other (as a loss worse than all would), its loss unread."""
    a, b = SepCMAESSearch(5, population=6, seed=3), SepCMAESSearch(5, population=6, seed=3)
    for _ in range(3):
        x = a.ask()
        np.testing.assert_array_equal(x, b.ask())
        losses = (x ** 2).sum(axis=1)
        failed = np.zeros(6, bool)
        failed[[1, 4]] = True
        worst = np.where(failed, 1e9 + np.arange(6), losses)  # below every loss, in the order asked
        info = a.tell(x, np.where(failed, np.nan, losses), failed=failed)
        b.tell(x, worst)
        assert info["loss_min"] == losses[~failed].min() and info["loss_mean"] == losses[~failed].mean()
        assert not any(np.array_equal(a.best_theta, t) for t in x[failed])
    np.testing.assert_array_equal(a.ask(), b.ask())
    x = a.ask()
    with pytest.raises(ValueError, match="NaN"):  # unmarked NaN is still refused
        a.tell(x, np.full(6, np.nan))
    info = a.tell(x, np.full(6, np.nan), failed=np.ones(6, bool))
    assert np.isnan(info["loss_min"]) and info["best_loss"] == b.best_loss


def test_illuminations_leave_failed_members_out():
    ga = IlluminationGA(6, population=8, children=4, seed=0)
    ga.tell(ga.ask(), None, _embed(np.zeros((1, 6))))
    x = ga.ask()
    z = _embed(x)
    z[2] = np.nan
    ga.tell(x, None, z, failed=np.array([False, False, True, False]))
    thetas, zs = ga.population()
    assert np.isfinite(zs).all() and not any(np.array_equal(t, x[2]) for t in thetas)
    with pytest.raises(ValueError, match="start θ failed"):
        IlluminationGA(6, population=8, seed=0).tell(np.zeros((1, 6)), None, np.full((1, 3), np.nan),
                                                     failed=np.ones(1, bool))

    me = MapElitesSearch(6, batch=4, seed_population=8, seed=0)
    x = me.ask()
    z = _embed(x)
    z[3] = np.nan
    me.tell(x, None, z, failed=np.arange(8) == 3)
    for _ in range(3):
        x = me.ask()
        z = _embed(x)
        z[0] = np.nan
        info = me.tell(x, None, z, failed=np.arange(4) == 0)
        assert np.isfinite(info["loss_min"])
    thetas, zs = me.population()
    assert np.isfinite(zs).all() and len(thetas) == len(me.archive)


def _embed(x):
    z = np.concatenate([np.sin(x[:, :3] * 3), np.cos(x[:, 3:6] * 3)], axis=1)
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def test_a_search_of_exploding_candidates_finishes_counts_them_and_repeats(tmp_path):
    """Before: --sigma 100 over Particle Lenia failed at its first generation (a θ past float32's range), and a
    diverged candidate scored as a black frame, the best match of a dark target."""
    from PIL import Image

    from workbench.asal.driver import SearchConfig, run_search
    from workbench.runs import RunStore

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "black.png")
    runs = []
    for i in range(2):
        cfg = SearchConfig("target", _eval(), target_image=str(tmp_path / "black.png"), iters=2, pop=4, sigma=100.0,
                           seed=0)
        runs.append(run_search(cfg, RunStore(tmp_path / f"runs{i}")))
    rows = [[{k: v for k, v in m.items() if k != "seconds"} for m in r.read_table("metrics").to_pylist()]
            for r in runs]
    assert all(r.info["status"] == "done" for r in runs)
    assert rows[0] == rows[1]  # the same seed, the same run, diverged members included
    assert sum(m["diverged"] for m in rows[0]) > 0
    best = np.load(runs[0].path / "best.npy")
    z, _ = embed_rollouts(_eval(), best[None], [runs[0].info.get("best_seed", 0)])
    assert np.isfinite(z).all()  # the best is a simulation that did not diverge

    cfg = SearchConfig("illuminate", _eval(), iters=3, pop=4, population=4, sigma=100.0, seed=0)
    run = run_search(cfg, RunStore(tmp_path / "ga"))
    metrics = run.read_table("metrics").to_pylist()
    assert run.info["status"] == "done" and sum(m["diverged"] for m in metrics) > 0


def test_a_resumed_run_of_a_version_before_diverged_counts_them_in_its_table(tmp_path, capsys):
    """A run checkpointed by a version that did not count diverged candidates (rows without `diverged`), resumed by
    this one: metrics.parquet took its columns from its first row, so the column of the resumed iterations' counts
    was dropped whole, and `workbench asal`'s warning, `runs show` and a reopened Search page said none diverged.
    The older rows are null there (not counted)."""
    import json

    from PIL import Image

    from workbench.asal.driver import SearchConfig, run_search
    from workbench.cli import main
    from workbench.runs import RunStore

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "black.png")
    store = RunStore(tmp_path / "runs")
    cfg = SearchConfig("target", _eval(), target_image=str(tmp_path / "black.png"), iters=1, pop=4, sigma=100.0,
                       seed=0)
    run = run_search(cfg, store)
    state = run.load_checkpoint()
    for row in state["metrics"]:  # as the version before wrote them
        del row["diverged"]
    run.save_checkpoint(state)
    run.write_rows("metrics", state["metrics"])
    run = run_search(None, store, resume=run.id, iters=3)
    counts = run.read_table("metrics").to_pydict().get("diverged")
    assert counts is not None and counts[0] is None and sum(counts[1:]) > 0, counts
    assert main(["runs", "show", run.id, "--runs", str(store.root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["diverged"] == sum(counts[1:])
