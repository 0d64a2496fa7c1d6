"""Search objects: ask/tell behaviour, the GA's pruning rule, MAP-Elites, and continuation from a state
written as JSON + npz (and, for checkpoints of older versions, from a pickle)."""

import io
import json
import os
import pickle

import numpy as np
import pytest

from workbench.asal.search import IlluminationGA, MapElitesSearch, SepCMAESSearch, prune_redundant
from workbench.checkpoint import pack, unpack


def through_a_checkpoint(search):
    """The search written as a run checkpoint is (JSON text + npz bytes) and read back."""
    tree, arrays = pack({"search": search})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with np.load(io.BytesIO(buffer.getvalue()), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    clone = unpack(json.loads(json.dumps(tree)), arrays)["search"]
    assert type(clone) is type(search) and clone is not search
    return clone


def test_sep_cma_es_minimises_a_quadratic():
    search = SepCMAESSearch(10, population=16, sigma=0.3, seed=0)
    target = np.linspace(-1, 1, 10)
    first = None
    for _ in range(60):
        x = search.ask()
        assert x.shape == (16, 10)
        info = search.tell(x, ((x - target) ** 2).sum(axis=1))
        first = info["loss_mean"] if first is None else first
    assert search.best_loss < 0.05 * first


@pytest.mark.filterwarnings("error")
def test_cma_searches_of_two_and_three_take_no_warning():
    """cmaes warned "divide by zero" for populations below 4 (a rank-μ rate of 0 in a min() its other terms win):
    noise on stderr of `merge evolve --pop 2`; the optimisers themselves are sound and still converge."""
    from workbench.merge.search import RecipeCMA
    from workbench.namm.train import NAMMTrainConfig, new_search

    target = np.linspace(0.2, 0.8, 4)
    for population in (2, 3):
        sep = SepCMAESSearch(4, population=population, sigma=0.3, seed=0)
        recipe = RecipeCMA(np.full(4, 0.5), np.array([[0.0, 1.0]] * 4), sigma=0.2, population=population, seed=0)
        for _ in range(40):
            x = sep.ask()
            sep.tell(x, ((x - target) ** 2).sum(axis=1))
            xs = recipe.ask()
            recipe.tell(xs, ((xs - target) ** 2).sum(axis=1))
        assert sep.best_loss < 0.5 * (target ** 2).sum() and np.isfinite(sep.best_theta).all()  # from θ = 0
        assert np.isfinite(recipe.best_x).all()
        assert new_search(NAMMTrainConfig(pop=population)).population_size == population


def test_prune_redundant_follows_the_reference_rule():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((12, 5))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    z[11] = z[3]  # an exact duplicate must go first
    keep = prune_redundant(z, 4)
    # brute force: one removal at a time, highest mean similarity to the 2 nearest survivors
    alive = list(range(12))
    for _ in range(4):
        def redundancy(i):
            sims = sorted((z[i] @ z[j] for j in alive if j != i), reverse=True)
            return np.mean(sims[:2])
        worst = max(alive, key=lambda i: (redundancy(i), -i))
        alive.remove(worst)
    assert list(keep) == alive
    assert 3 not in alive or 11 not in alive


def _full_recount(z: np.ndarray, remove: int, neighbours: int) -> np.ndarray:
    """The rule, every row recounted every round."""
    sim = z @ z.T
    np.fill_diagonal(sim, -np.inf)
    alive = np.ones(len(z), bool)
    for _ in range(remove):
        s = np.where(alive[None, :], sim, -np.inf)[alive]
        top = -np.sort(-s, axis=1)[:, :neighbours].mean(axis=1)
        alive[np.flatnonzero(alive)[int(np.argmax(top))]] = False
    return np.flatnonzero(alive)


@pytest.mark.parametrize("start, neighbours", [("random", 2), ("rounded", 2), ("copies", 2), ("copies", 3)])
def test_prune_redundant_equals_a_full_recount_each_round(start, neighbours):
    """rounded: one decimal, many exact ties; copies: the GA's start, most rows one embedding (every removal
    touches every row, and the survivors' nearest lie beyond the first few columns once copies die)."""
    z = np.random.default_rng(1).standard_normal((200, 8))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    if start == "rounded":
        z = np.round(z, 1)
    if start == "copies":
        z[:160] = z[0]
    np.testing.assert_array_equal(prune_redundant(z, 40, neighbours), _full_recount(z, 40, neighbours))


def test_prune_redundant_down_to_a_few_rows():
    """remove close to the whole population: every column is looked at."""
    z = np.random.default_rng(2).standard_normal((10, 4))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    np.testing.assert_array_equal(prune_redundant(z, 7), _full_recount(z, 7, 2))


def test_ga_starts_from_zero_and_keeps_its_size():
    ga = IlluminationGA(6, population=20, children=4, seed=0)
    first = ga.ask()
    assert first.shape == (1, 6) and not first.any()
    ga.tell(first, None, np.eye(6)[:1])
    for _ in range(5):
        kids = ga.ask()
        assert kids.shape == (4, 6)
        z = np.random.default_rng(0).standard_normal((4, 6))
        ga.tell(kids, None, z / np.linalg.norm(z, axis=1, keepdims=True))
    thetas, z = ga.population()
    assert thetas.shape == (20, 6) and z.shape == (20, 6)


def test_ga_children_are_parents_plus_the_specs_noise_by_default():
    """Children = parent + 0.1·N(0, I) (the spec's σ, the class's default: the app passes its own σ, so only a
    direct use of the library would see another default); from the start population (θ = 0) they are the noise."""
    ga = IlluminationGA(2000, seed=0)
    ga.tell(ga.ask(), None, np.eye(4)[:1])
    kids = ga.ask()
    assert kids.shape == (32, 2000) and ga.size == 256
    assert abs(kids.std() - 0.1) < 0.003 and abs(kids.mean()) < 0.003  # standard error ≈ 4e-4


def test_the_ga_removes_the_most_redundant_by_their_two_nearest_survivors():
    """Spec §4: the pool of population + children loses `children` members, each time the one with the highest mean
    similarity to its 2 most similar survivors; the survivors keep their pool order (population first). The
    embeddings are picked so that 1 or 3 neighbours would remove others."""
    first = IlluminationGA(3, population=12, children=4, seed=0)
    first.tell(first.ask(), None, np.eye(5)[:1])
    rng = np.random.default_rng(6)
    state = first.state_dict()  # a varied population in place of the start's 12 copies of θ = 0
    state["thetas"], state["z"] = rng.standard_normal((12, 3)), _unit_rows(rng.standard_normal((12, 5)))
    ga = IlluminationGA.from_state(state)
    kids = ga.ask()
    z_kids = _unit_rows(rng.standard_normal((4, 5)))
    pool_t, pool_z = np.concatenate([ga.thetas, kids]), np.concatenate([ga.z, z_kids])
    keep = _full_recount(pool_z, 4, 2)
    assert not np.array_equal(keep, _full_recount(pool_z, 4, 1))
    assert not np.array_equal(keep, _full_recount(pool_z, 4, 3))
    info = ga.tell(kids, None, z_kids)
    thetas, z = ga.population()
    np.testing.assert_array_equal(thetas, pool_t[keep])
    np.testing.assert_array_equal(z, pool_z[keep])
    sim = pool_z[keep] @ pool_z[keep].T
    np.fill_diagonal(sim, -np.inf)
    assert info["loss_mean"] == pytest.approx(sim.max(axis=1).mean())  # L_IL of the survivors


def _unit_rows(z: np.ndarray) -> np.ndarray:
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def _embed(x):
    z = np.concatenate([np.sin(x[:, :3] * 3), np.cos(x[:, 3:6] * 3)], axis=1)
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def _continue_both(a, b, steps: int, tell) -> None:
    """Drive two searches side by side: every ask and every tell result must be identical."""
    for _ in range(steps):
        xa, xb = a.ask(), b.ask()
        np.testing.assert_array_equal(xa, xb)
        assert tell(a, xa) == tell(b, xb)


def test_map_elites_fills_cells_and_resumes_exactly():
    me = MapElitesSearch(8, batch=8, sigma=0.3, cells=8, seed=0)
    _continue_both(me, through_a_checkpoint(me), 1, lambda s, x: s.tell(x, None, _embed(x)))  # before the archive
    covered = me.archive.stats.coverage
    for _ in range(5):
        x = me.ask()
        me.tell(x, None, _embed(x))
    assert me.archive.stats.coverage > covered
    saved = me.state_dict()["ribs"]  # empty cells' rows saved as zeros, not pyribs' uninitialised memory
    empty, n = ~saved["props"]["occupied"], saved["props"]["n_occupied"]
    assert empty.any() and all(not a[empty].any() for a in saved["fields"].values())
    assert not saved["props"]["occupied_list"][n:].any()
    clone = through_a_checkpoint(me)
    assert clone.archive.stats == me.archive.stats and len(clone.archive) == len(me.archive)
    _continue_both(me, clone, 4, lambda s, x: s.tell(x, None, _embed(x)))
    for a, b in zip(me.population(), clone.population(), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(me.archive.sample_elites(5)["solution"], clone.archive.sample_elites(5)["solution"])


def test_map_elites_keeps_illuminating_with_embeddings_wider_than_its_seed_population():
    """Bug (a reviewer's tiny runs: coverage 0.375 for every iteration, at any --sigma): with embeddings much wider
    than the seed population, as pixels' 2352 for 32 members, the PCA fitted on the seed population spread it
    4-5× wider than any other draw, the grid sized by it kept every child in the central cells the seed held; and
    the seed elites scored novelty 1 (against an empty archive), which no child could beat. The grid is now sized
    by members the PCA was not fitted on and the seed scored among itself: children land in new cells and
    replace seed elites."""
    rng = np.random.default_rng(0)
    mix = rng.standard_normal((6, 512))

    def embed(x):  # a smooth image of θ in 512 dimensions, plus per-rollout noise: unit rows
        z = np.tanh(x @ mix) + 2.0 * rng.standard_normal((len(x), 512))
        return z / np.linalg.norm(z, axis=1, keepdims=True)

    me = MapElitesSearch(6, batch=8, sigma=0.3, cells=8, seed_population=32, seed=0)
    x = me.ask()
    first = me.tell(x, None, embed(x))["coverage"]
    seed_elites = {tuple(t) for t in me.population()[0]}
    for _ in range(30):
        x = me.ask()
        last = me.tell(x, None, embed(x))["coverage"]
    assert last > first + 0.15, (first, last)  # 0.375 -> 0.64 (0.25 throughout before)
    assert seed_elites - {tuple(t) for t in me.population()[0]}  # some seed elite was replaced by a child


def test_cma_and_ga_resume_exactly():
    a = SepCMAESSearch(5, population=8, seed=3)
    for _ in range(3):
        x = a.ask()
        a.tell(x, (x ** 2).sum(axis=1))
    _continue_both(a, through_a_checkpoint(a), 3, lambda s, x: s.tell(x, (x ** 2).sum(axis=1)))
    b = pickle.loads(pickle.dumps(a))  # checkpoints of older versions were pickles (--trust-pickle)
    np.testing.assert_array_equal(a.ask(), b.ask())

    ga = IlluminationGA(6, population=10, children=4, sigma=0.2, seed=1)
    _continue_both(ga, through_a_checkpoint(ga), 1, lambda s, x: s.tell(x, None, _embed(np.tile(x, (1, 1)) + 0.1)))
    for _ in range(3):
        x = ga.ask()
        ga.tell(x, None, _embed(x))
    _continue_both(ga, through_a_checkpoint(ga), 3, lambda s, x: s.tell(x, None, _embed(x)))


def test_searches_start_from_a_random_init_when_asked(tmp_path):
    """asal-more.md §0: θ = 0 is where searches start; --init random starts them at the substrate's random
    initialisation (the networks' flax init; Particle Lenia's θ ~ N(0, I)), drawn from --seed."""
    from workbench.asal.driver import SearchConfig, make_search, run_search, start_theta
    from workbench.asal.evaluate import EvalConfig
    from workbench.runs import RunStore
    from workbench.simulations import make_substrate

    plus = make_substrate("plife_plus", N=8)
    theta = plus.flax_init_theta(np.random.default_rng(0), population=256)
    params = plus.decode(theta)
    for k, (n_in, _) in enumerate(((12, 8), (8, 8), (8, 8), (8, 7))):  # lecun-normal kernels, zero biases
        assert abs(params[f"W{k}"].std() - np.sqrt(1 / n_in)) < 0.05 * np.sqrt(1 / n_in)
        assert not params[f"b{k}"].any()
    cfg = SearchConfig(kind="openended", eval=EvalConfig("plife_plus", "pixels", steps=4, frames=2), init="random",
                       seed=5)
    x0 = start_theta(cfg, plus)
    np.testing.assert_array_equal(x0, plus.flax_init_theta(np.random.default_rng([5, 0x1A17])))
    cma = make_search(cfg, plus.n_params, x0)
    np.testing.assert_array_equal(cma.opt._mean, x0)
    assert abs(cma.ask().mean(axis=0) - x0).max() < 0.2
    me = make_search(SearchConfig(kind="illuminate", eval=cfg.eval, algorithm="map-elites", init="random"),
                     plus.n_params, x0)
    np.testing.assert_array_equal(through_a_checkpoint(me).ask()[0], x0)
    with pytest.raises(ValueError, match="311 finite numbers"):
        make_search(cfg, plus.n_params, x0[:5])
    assert start_theta(SearchConfig(kind="openended", eval=cfg.eval), plus) is None  # θ = 0, the reference's

    # a whole illumination of Particle Lenia: its start population is copies of the N(0, I) draw
    lenia = SearchConfig(kind="illuminate", eval=EvalConfig("plenia", "pixels", steps=3, size=32, overrides={"N": 12}),
                         iters=1, pop=3, population=4, init="random", seed=2)
    run = run_search(lenia, RunStore(tmp_path))
    import pandas as pd

    thetas = np.stack(pd.read_parquet(run.path / "population.parquet")["theta"])
    start = np.random.default_rng([2, 0x1A17]).standard_normal(6)
    np.testing.assert_allclose(thetas, np.repeat(start[None], 4, axis=0).astype(np.float32))
    with pytest.raises(ValueError, match="lenia has no random initialisation .* plenia"):
        SearchConfig(kind="openended", eval=EvalConfig("lenia", "pixels"), init="random")


def test_the_open_endedness_weight_defaults_by_kind_and_an_open_ended_search_refuses_none():
    """Left unset, c_oe is 1 for an open-ended search (novelty is its objective) and 0 for the others; an open-ended
    search given 0 explicitly is refused (it was read as the default 1), naming the flag."""
    from workbench.asal.driver import SearchConfig
    from workbench.asal.evaluate import EvalConfig

    ev = EvalConfig("boids", "pixels", steps=8, frames=2)
    assert SearchConfig(kind="openended", eval=ev).c_oe == 1.0
    assert SearchConfig(kind="openended", eval=ev, c_oe=0.5).c_oe == 0.5
    assert SearchConfig(kind="target", eval=ev, prompts=["a cell"]).c_oe == 0.0
    assert SearchConfig(kind="target", eval=ev, prompts=["a cell"], c_oe=2).c_oe == 2.0
    assert SearchConfig(kind="illuminate", eval=ev).c_oe == 0.0
    with pytest.raises(ValueError, match="--c-oe 0 would leave an open-ended search without its objective"):
        SearchConfig(kind="openended", eval=ev, c_oe=0)


def test_each_iteration_draws_fresh_initial_states_fixed_by_the_seed():
    """A target or open-endedness search scores every generation from new initial states (a θ tuned to one
    initial state is not what it asks for), the same ones for the same --seed; an illumination's children, each
    its own, fresh every iteration too."""
    from workbench.asal.driver import iteration_seeds, member_seeds

    first, second = iteration_seeds(0, 0, 3), iteration_seeds(0, 1, 3)
    assert first == iteration_seeds(0, 0, 3) and len(set(first)) == 3
    assert not set(first) & set(second)
    assert not set(first) & set(iteration_seeds(1, 0, 3))
    assert not set(member_seeds(0, 0, 2, 4).ravel()) & set(member_seeds(0, 1, 2, 4).ravel())


def test_illumination_children_start_from_their_own_initial_states():
    """The reference's illumination splits one key per child (its own initial state); target and open-endedness
    searches share an iteration's seeds. Own seeds give each θ what it gets alone with them, in any chunking."""
    from workbench.asal.driver import SearchConfig, evaluate, member_seeds, search_seeds
    from workbench.asal.evaluate import EvalConfig, embed_rollouts

    ev = EvalConfig("boids", "pixels", steps=6, size=32, bs=2, chunk=2)
    thetas = np.repeat(0.1 * np.random.default_rng(0).standard_normal((1, 193)), 5, axis=0)  # one θ, five times
    atlas = SearchConfig(kind="illuminate", eval=ev, seed=4)
    seeds = search_seeds(atlas, 3, 5)
    np.testing.assert_array_equal(seeds, member_seeds(4, 3, 2, 5))
    assert seeds.shape == (5, 2) and len(np.unique(seeds)) == 10
    z, thumbs = evaluate(ev, thetas, seeds)
    assert not np.allclose(z[0], z[1])  # the same θ from other initial states
    for i in (0, 3, 4):
        alone, thumb = embed_rollouts(ev, thetas[i:i + 1], [int(s) for s in seeds[i]])
        np.testing.assert_allclose(z[i], alone[0], rtol=0, atol=1e-6)
        np.testing.assert_array_equal(thumbs[i], thumb[0])
    shared = search_seeds(SearchConfig(kind="openended", eval=EvalConfig("boids", "pixels", frames=2, bs=2)), 3, 5)
    assert shared == search_seeds(SearchConfig(kind="illuminate", eval=ev, child_seeds="shared"), 3, 5)
    z, _ = evaluate(ev, thetas, shared)
    np.testing.assert_allclose(z[0], z[4], rtol=0, atol=1e-6)


def test_one_rule_from_two_initial_states_keeps_two_thumbnails(tmp_path):
    """Game of Life's GA over rules breeds the same rule twice in one generation; with children's own seeds the
    two are two members (two embeddings), and the atlas shows each one's own final frame."""
    from workbench.asal.driver import SearchConfig, run_search
    from workbench.asal.evaluate import EvalConfig
    from workbench.runs import RunStore

    cfg = SearchConfig(kind="illuminate", eval=EvalConfig("gol", "pixels", steps=12, size=32), iters=6, pop=32,
                       population=48, seed=0)
    run = run_search(cfg, RunStore(tmp_path))
    import pandas as pd

    table = pd.read_parquet(run.path / "population.parquet")
    thetas, z = np.stack(table["theta"]), np.stack(table["embedding"])
    thumbs = np.load(run.path / "thumbs.npy")
    assert thumbs.any(axis=(1, 2, 3)).all()  # every member has its thumbnail
    pairs = [(i, j) for i in range(len(thetas)) for j in range(i) if (thetas[i] == thetas[j]).all()
             and not np.array_equal(z[i], z[j])]
    assert pairs, "no rule with two initial states survived: make the run longer"
    assert any(not np.array_equal(thumbs[i], thumbs[j]) for i, j in pairs)
    # each member's initial-state seed is kept: it plays again as its thumbnail and embedding show it
    from workbench.asal.evaluate import embed_rollouts

    seeds = table["seed"].to_numpy()
    assert (seeds >= 0).all()
    for k in (0, *pairs[0]):
        zk, thumb = embed_rollouts(cfg.eval, thetas[k:k + 1].astype(np.float64), [int(seeds[k])])
        np.testing.assert_array_equal(thumb[0], thumbs[k])
        np.testing.assert_allclose(zk[0, 0, -1], z[k], atol=1e-6)


def test_tell_refuses_what_does_not_match_the_ask():
    """One ValueError naming the mismatch, before any state changes: unchecked, the GA went on with θ and
    embeddings out of step, NaN losses became the CMA's best, and the rest failed inside cmaes or pyribs."""
    cma = SepCMAESSearch(4, population=4, seed=0)
    x = cma.ask()
    for losses, message in ((np.zeros(3), r"shape \(4,\), got shape \(3,\)"), (np.full(4, np.nan), "NaN"),
                            (np.zeros((4, 1)), r"got shape \(4, 1\)"), (None, "one loss per θ")):
        with pytest.raises(ValueError, match=message):
            cma.tell(x, losses)
    with pytest.raises(ValueError, match="the 4 θ the last ask gave, got 3"):
        cma.tell(x[:3], np.zeros(3))
    with pytest.raises(ValueError, match=r"shape \(B, 4\)"):
        cma.tell(np.zeros((4, 5)), np.zeros(4))
    assert cma.tell(x, (x ** 2).sum(axis=1))["best_loss"] < np.inf

    ga = IlluminationGA(4, population=8, children=4, seed=0)
    with pytest.raises(ValueError, match="no population before its first tell"):
        ga.population()
    with pytest.raises(ValueError, match="the 1 θ the last ask gave, got 3"):
        ga.tell(np.zeros((3, 4)), None, _embed(np.zeros((3, 4))))
    with pytest.raises(ValueError, match="one embedding per θ"):
        ga.tell(ga.ask(), None, None)
    ga.tell(ga.ask(), None, _embed(np.zeros((1, 4))))
    x = ga.ask()
    width = ga.population()[1].shape[1]
    for z, message in ((np.ones((2, width)), rf"shape \(4, {width}\), got shape \(2, {width}\)"),
                       (np.ones((4, width + 1)), rf"got shape \(4, {width + 1}\)"),
                       (np.full((4, width), np.nan), "NaN")):
        with pytest.raises(ValueError, match=message):
            ga.tell(x, None, z)
    assert len(ga.population()[0]) == 8  # untouched by the refused tells

    me = MapElitesSearch(4, batch=4, seed_population=4, seed=0)
    with pytest.raises(ValueError, match="no archive before its first tell"):
        me.population()
    with pytest.raises(ValueError, match="no descriptor before its first tell"):
        me.measures(np.ones((2, 5)))
    x = me.ask()
    with pytest.raises(ValueError, match="one embedding per θ"):
        me.tell(x, None, _embed(x)[:3])
    me.tell(x, None, _embed(x))
    x = me.ask()
    with pytest.raises(ValueError, match="the θ the last ask gave"):
        me.tell(x[::-1], None, _embed(x[::-1]))
    me.tell(x, None, _embed(x))


def test_the_ga_over_rules_refuses_what_does_not_match_its_ask():
    from workbench.asal.rules import RuleGA

    ga = RuleGA(4, seed=0)
    x = ga.ask()
    for losses, message in ((np.array([np.nan, 1.0, 2.0, 3.0]), "NaN"),
                            (np.zeros(2), r"shape \(4,\), got shape \(2,\)"), (None, "one loss per rule")):
        with pytest.raises(ValueError, match=message):
            ga.tell(x, losses)
    assert ga.tell(x, np.arange(4.0))["best_loss"] == 0.0


def test_the_iteration_bench_times_each_search_kind():
    """`bench asal` / `bench gpu` time one iteration of each search kind: the illumination GA's first ask (θ = 0
    alone) is evaluated as a whole generation, and the GA is told only what it asked for."""
    from workbench.asal.evaluate import EvalConfig
    from workbench.bench import asal_iteration

    ev = EvalConfig("boids", "pixels", steps=4, size=32, chunk=4, device="cpu", overrides={"N": 8})
    for kind in ("illuminate", "openended"):
        row = asal_iteration(ev, kind, 4, iters=1, population=8, warmup=True)
        assert row["total"] > 0 and row["search"] >= 0, kind
    assert (ev.frames, ev.sampling) == (1, "chunk_ends")  # the caller's config as it was


def test_map_elites_novelty_is_to_the_nearest_elite_on_a_grid_with_half_a_span_of_margin():
    """The numbers the class docstring gives: the grid spans the held-out half's descriptors with a 50 % margin
    each side; a seed member's novelty is 1 − its highest similarity to another seed member, a child's
    1 − its highest similarity to an elite already in the archive (the nearest, not the farthest)."""
    rng = np.random.default_rng(0)

    def unit(n):
        z = rng.standard_normal((n, 16))
        return z / np.linalg.norm(z, axis=1, keepdims=True)

    me = MapElitesSearch(4, batch=6, sigma=0.1, cells=4, seed_population=8, seed=0)
    x, z = me.ask(), unit(8)
    me.tell(x, None, z)
    held = me.measures(z[1::2])
    lo, hi = held.min(axis=0), held.max(axis=0)
    np.testing.assert_allclose(me.archive.lower_bounds, lo - 0.5 * (hi - lo))
    np.testing.assert_allclose(me.archive.upper_bounds, hi + 0.5 * (hi - lo))
    sim = z @ z.T
    np.fill_diagonal(sim, -np.inf)
    novelty = 1.0 - sim.max(axis=1)
    seed_elites = me.archive.data(["solution", "objective", "embedding"])
    for theta, objective in zip(seed_elites["solution"], seed_elites["objective"], strict=True):
        i = int(np.flatnonzero((x == theta).all(axis=1))[0])
        assert objective == pytest.approx(novelty[i], abs=1e-6)
    children, zc = me.ask(), unit(6)
    want = 1.0 - (zc @ seed_elites["embedding"].astype(np.float64).T).max(axis=1)
    me.tell(children, None, zc)
    after = me.archive.data(["solution", "objective"])
    kept = 0
    for theta, objective in zip(after["solution"], after["objective"], strict=True):
        hit = np.flatnonzero((children == theta).all(axis=1))
        if len(hit):
            kept += 1
            assert objective == pytest.approx(want[hit[0]], abs=1e-5)
    assert kept, "some child should enter the archive"


def test_map_elites_runs_made_before_the_held_out_fit_resume_and_compare_as_they_started():
    """Runs made before 2026-12-03 fitted the descriptor on the whole seed population: their stored configs lack
    descriptor_fit, read as "all" (workbench.asal.legacy), so a resume keeps what they did and a comparison does
    not take an old and a new run of one seed for one computation; their checkpoints without it too."""
    from workbench.asal.legacy import upgrade_config
    from workbench.compare import flat_settings

    old = {"kind": "illuminate", "algorithm": "map-elites", "eval": {"frames": 1, "substrate": "boids"}, "seed": 0}
    assert upgrade_config(old)["descriptor_fit"] == "all"
    new = {**old, "descriptor_fit": "held-out"}
    flat = [flat_settings({"kind": "illuminate", "config": c}) for c in (old, new)]
    assert flat[0]["config.descriptor_fit"] == "all" and flat[1]["config.descriptor_fit"] == "held-out"
    ga = {**old, "algorithm": "ga"}  # the setting means nothing to the GA: no difference there
    assert "config.descriptor_fit" not in flat_settings({"kind": "illuminate", "config": ga})
    me = MapElitesSearch(6, seed_population=8, fit="all")
    state = me.state_dict()
    del state["fit"]
    assert MapElitesSearch.from_state(state).fit == "all"
    with pytest.raises(ValueError, match="fit must be one of held-out, all"):
        MapElitesSearch(6, fit="some")


def test_sizes_that_cannot_fit_in_memory_are_refused_naming_the_largest_that_fits():
    """A probe's --population 20000 segfaulted in BLAS (the GA's similarities), 10⁸ raised a 144 GiB
    MemoryError after the progress bar, and --frames 8000 would have allocated 16 GB of K × K similarities:
    each is one error naming the flag and the largest value that fits the memory available."""
    from workbench.asal.driver import SearchConfig, check_memory
    from workbench.asal.evaluate import EvalConfig

    free = 8 * 2**30
    ga = SearchConfig(kind="illuminate", eval=EvalConfig("boids", "pixels", steps=10), population=20000)
    with pytest.raises(ValueError, match=r"--population 20000: .* give --population (\d+) or less") as err:
        check_memory(ga, free=free)
    largest = int(err.value.args[0].rsplit("--population ", 1)[1].split()[0])
    check_memory(SearchConfig(kind="illuminate", eval=EvalConfig("boids", "pixels", steps=10), population=largest),
                 free=free)  # the value named fits
    with pytest.raises(ValueError, match="--population"):
        check_memory(SearchConfig(kind="illuminate", eval=EvalConfig("boids", "pixels", steps=10),
                                  population=largest + 100), free=free)
    oe = SearchConfig(kind="openended", eval=EvalConfig("boids", "pixels", steps=8000, frames=8000))
    with pytest.raises(ValueError, match=r"--frames 8000: the open-endedness loss over 16 × 1 rollouts .* give "
                                         r"--frames (\d+) or less") as err:
        check_memory(oe, free=free)
    frames = int(err.value.args[0].rsplit("--frames ", 1)[1].split()[0])  # the value named fits every check
    check_memory(SearchConfig(kind="openended", eval=EvalConfig("boids", "pixels", steps=8000, frames=frames)),
                 free=free)
    check_memory(SearchConfig(kind="openended", eval=EvalConfig("boids", "pixels", steps=256, frames=32)), free=free)
    rules = SearchConfig(kind="illuminate", eval=EvalConfig("gol", "pixels", steps=10), population=20000)
    with pytest.raises(ValueError, match="give --population"):  # GoL's GA over rules prunes the same way
        check_memory(rules, free=free)
    # where even the smallest population does not fit beside the children, the fix is fewer children
    many = SearchConfig(kind="illuminate", eval=EvalConfig("boids", "pixels", steps=10), population=3, pop=30000)
    with pytest.raises(ValueError, match=r"--pop 30000: .* give --pop (\d+) or less") as err:
        check_memory(many, free=free)
    fewer = int(err.value.args[0].rsplit("--pop ", 1)[1].split()[0])
    check_memory(SearchConfig(kind="illuminate", eval=EvalConfig("boids", "pixels", steps=10), population=3,
                              pop=fewer), free=free)
    # and where two frames a rollout do not fit, fewer seeds per candidate (or fewer candidates)
    wide = SearchConfig(kind="openended", eval=EvalConfig("boids", "pixels", steps=64, frames=4, bs=10**7))
    with pytest.raises(ValueError, match=r"--bs 10000000: .* give --bs (\d+) or less") as err:
        check_memory(wide, free=free)
    bs = int(err.value.args[0].rsplit("--bs ", 1)[1].split()[0])
    check_memory(SearchConfig(kind="openended", eval=EvalConfig("boids", "pixels", steps=64, frames=4, bs=bs)),
                 free=free)
    # what an iteration holds: --pop 10⁸ ran out of memory inside cmaes' sampling, its run folder made
    huge = SearchConfig(kind="target", target_image="t.png", eval=EvalConfig("lenia", "pixels", steps=4), pop=10**8)
    with pytest.raises(ValueError, match=r"--pop 100000000: evaluating 100000000 θ of 3117 numbers .* give --pop "
                                         r"(\d+) or less") as err:
        check_memory(huge, free=free)
    pop = int(err.value.args[0].rsplit("--pop ", 1)[1].split()[0])
    assert pop > 1000
    check_memory(SearchConfig(kind="target", target_image="t.png", eval=EvalConfig("lenia", "pixels", steps=4),
                              pop=pop), free=free)
    # a θ's frames alone too many for even two θ: --frames
    long = SearchConfig(kind="target", target_image="t.png", eval=EvalConfig("lenia", "pixels", steps=10**6,
                                                                              frames=10**6))
    with pytest.raises(ValueError, match=r"--frames 1000000: .* give --frames (\d+) or less") as err:
        check_memory(long, free=free)
    frames = int(err.value.args[0].rsplit("--frames ", 1)[1].split()[0])
    check_memory(SearchConfig(kind="target", target_image="t.png", eval=EvalConfig("lenia", "pixels",
                                                                                   steps=10**6, frames=frames)),
                 free=free)
    # a value the search takes: a multiple of its prompts (it would round another up again, past what fits)
    seven = dict(kind="target", prompts=list("abcdefg"), pop=10**4)
    with pytest.raises(ValueError, match=r"--frames 700000: .* give --frames (\d+) or less") as err:
        check_memory(SearchConfig(**seven, eval=EvalConfig("lenia", "pixels", steps=10**6, frames=7 * 10**5)),
                     free=free)
    frames = int(err.value.args[0].rsplit("--frames ", 1)[1].split()[0])
    assert frames % 7 == 0 and frames >= 7
    check_memory(SearchConfig(**seven, eval=EvalConfig("lenia", "pixels", steps=10**6, frames=frames)), free=free)
    # where no --frames fits at --pop as given, both flags that fix it
    many_long = dict(kind="target", target_image="t.png", eval=EvalConfig("lenia", "pixels", steps=10**6,
                                                                          frames=10**6))
    with pytest.raises(ValueError, match=r"--frames 1000000: .* give --pop 2 and --frames (\d+) or less") as err:
        check_memory(SearchConfig(**many_long, pop=10**6), free=free)
    many_long["eval"].frames = int(err.value.args[0].rsplit("--frames ", 1)[1].split()[0])
    check_memory(SearchConfig(**many_long, pop=2), free=free)
    # where fewer frames fit only with one rollout a θ, both flags (the message claimed nothing fits)
    from workbench.asal.driver import check_batch_memory

    bs8 = SearchConfig(kind="openended", eval=EvalConfig("boids", "pixels", steps=64, frames=64, bs=8, size=8),
                       pop=2)
    with pytest.raises(ValueError, match=r"--frames 64: .* give --bs 1 and --frames (\d+) or less") as err:
        check_batch_memory(bs8, 375_000, 1000, 512)
    bs8.eval.bs, bs8.eval.frames = 1, int(err.value.args[0].rsplit("--frames ", 1)[1].split()[0])
    check_batch_memory(bs8, 375_000, 1000, 512)  # what it named fits
    # and where nothing fits, said so (in MiB: not "0.0 GiB")
    with pytest.raises(ValueError, match=r"needs about 2\.2 MiB, 0\.2 MiB are available here, and even --pop 2 --bs 1 "
                                         r"--frames 1 would not fit: free memory or use a machine with more"):
        check_memory(SearchConfig(kind="target", target_image="t.png",
                                  eval=EvalConfig("lenia", "pixels", steps=4, frames=1)), free=2**18)
    # MAP-Elites' archive of a million cells (no similarities to hold): --population
    cells = SearchConfig(kind="illuminate", algorithm="map-elites", population=10**6,
                         eval=EvalConfig("lenia", "pixels", steps=4))
    with pytest.raises(ValueError, match=r"--population 1000000: .* give --population (\d+) or less") as err:
        check_memory(cells, free=free)
    fits = int(err.value.args[0].rsplit("--population ", 1)[1].split()[0])
    check_memory(SearchConfig(kind="illuminate", algorithm="map-elites", population=fits,
                              eval=EvalConfig("lenia", "pixels", steps=4)), free=free)
    # and what a chunk of simulations renders at once: --chunk, or where one frame is too big, --size
    with pytest.raises(ValueError, match=r"--chunk 10000: rendering 10000 simulations at 224² .* give --chunk"):
        check_memory(SearchConfig(kind="target", target_image="t.png", pop=10**4,
                                  eval=EvalConfig("lenia", "pixels", steps=4, chunk=10**4)), free=free)
    with pytest.raises(ValueError, match=r"--size 4096: one 4096² frame .* give --size"):
        check_memory(SearchConfig(kind="target", target_image="t.png",
                                  eval=EvalConfig("lenia", "pixels", steps=4, size=4096)), free=2**28)


def test_a_memory_need_is_said_in_gib_from_one_gib_up_and_in_mib_below():
    """From mutation sampling: the refusal says "needs about 1.5 GiB, 1.0 GiB are available here", not
    "1536.0 MiB"; sizes under a GiB in MiB (not "0.0 GiB")."""
    from workbench.checks import needs_of

    assert needs_of(1.5 * 2**30, 2**30) == "needs about 1.5 GiB, 1.0 GiB are available here"
    assert needs_of(2**30, 2**29) == "needs about 1.0 GiB, 0.5 GiB are available here"
    assert needs_of(300 * 2**20, 200 * 2**20) == "needs about 300.0 MiB, 200.0 MiB are available here"


def test_the_memory_available_is_what_the_cgroup_still_allows(tmp_path):
    """In a container or a batch job's slot the machine's MemAvailable overstates what the process may take:
    the cgroup's limit less its use (page cache it may drop counted free), v2 or v1, the smaller of the two."""
    from workbench.checks import available_memory, cgroup_headroom

    v2 = tmp_path / "v2" / "job"
    v2.mkdir(parents=True)
    (v2 / "memory.max").write_text(f"{8 * 2**30}\n")
    (v2 / "memory.current").write_text(f"{3 * 2**30}\n")
    (v2 / "memory.stat").write_text(f"anon 100\ninactive_file {2**30}\nactive_file 5\n")
    assert cgroup_headroom("0::/job\n", tmp_path / "v2") == 6 * 2**30
    (v2 / "memory.max").write_text("max\n")
    assert cgroup_headroom("0::/job\n", tmp_path / "v2") is None  # no limit: the machine's figure stands
    # v1, the process' cgroup seen as the mount's root (inside a container), the limit on the root alone
    v1 = tmp_path / "v1" / "memory"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text(f"{4 * 2**30}\n")
    (v1 / "memory.usage_in_bytes").write_text(f"{2**30}\n")
    (v1 / "memory.stat").write_text(f"cache 7\ntotal_inactive_file {2**29}\n")
    own = "4:memory:/outer/abc\n0::/\n"
    assert cgroup_headroom(own, tmp_path / "v1") == 3 * 2**30 + 2**29
    (v1 / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # what v1 writes for no limit
    assert cgroup_headroom(own, tmp_path / "v1") is None
    assert cgroup_headroom("", tmp_path) is None
    # a batch job's limit on its job, the step and task below it unlimited (Slurm, systemd slices)
    job = tmp_path / "v2b" / "job_1"
    (job / "step_0" / "task_0").mkdir(parents=True)
    for folder, limit in ((job, str(2 * 2**30)), (job / "step_0", "max"), (job / "step_0" / "task_0", "max")):
        (folder / "memory.max").write_text(limit + "\n")
        (folder / "memory.current").write_text(f"{2**30}\n")
    assert cgroup_headroom("0::/job_1/step_0/task_0\n", tmp_path / "v2b") == 2**30
    free = available_memory()  # here: a number (Linux), never more than the machine's
    assert free is None or 0 <= free <= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def test_similarities_go_through_gemm_and_equal_the_plain_product():
    """gram(z) = z @ zᵀ (a copied transpose: OpenBLAS' syrk, which NumPy takes for z @ z.T, segfaulted on large
    populations); the same numbers, on the batched shapes open-endedness uses too."""
    from workbench.asal.scores import gram

    z = np.random.default_rng(0).standard_normal((3, 5, 7, 4))
    np.testing.assert_allclose(gram(z), np.einsum("...kd,...jd->...kj", z, z), rtol=1e-12, atol=1e-12)


def test_the_memory_checks_count_what_the_losses_really_allocate():
    """The checks' bytes per rollout (20 K D for the embeddings and the losses' float64 copies, 16 K² for
    open-endedness' similarities, 32 K² for the softmax loss') against the peak the losses allocate, so that a
    loss that starts holding more cannot leave the checks behind (a reviewer found a sweep's pixel score at
    32 MiB a rule, uncounted)."""
    import tracemalloc

    from workbench.asal import scores

    rollouts, k, d = 8, 256, 64
    rng = np.random.default_rng(0)
    z = rng.standard_normal((rollouts, 1, k, d)).astype(np.float32)
    target = rng.standard_normal((k, d)).astype(np.float32)  # one prompt a frame
    for loss, counted in ((scores.open_endedness, 20.0 * k * d + 16.0 * k * k),
                          (lambda x: scores.softmax_target(x, target), 20.0 * k * d + 32.0 * k * k)):
        tracemalloc.start()
        loss(z)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak + z.nbytes <= 1.05 * rollouts * counted, (loss, peak + z.nbytes, rollouts * counted)


@pytest.mark.parametrize("make", [
    lambda: SepCMAESSearch(5, population=6, seed=0),
    lambda: __import__("workbench.merge.search", fromlist=["RecipeCMA"]).RecipeCMA(
        np.full(5, 0.5), np.tile([0.0, 1.0], (5, 1)), population=6, seed=0),
    lambda: __import__("workbench.merge.search", fromlist=["RecipeCMA"]).RecipeCMA(
        np.full(5, 0.5), np.tile([0.0, 1.0], (5, 1)), population=6, seed=0, steps=np.array([0, 0, 0, 0.5, 0.5])),
], ids=["SepCMAESSearch", "RecipeCMA", "RecipeCMA-margin"])
def test_a_state_dict_is_a_snapshot_and_searches_made_from_one_go_on_independently(make):
    """A notebook keeps `state = search.state_dict()` and goes on: from_state(state) later goes on from the moment
    the state was taken, and two searches made from one state are two. The state held cmaes' own arrays (its mean,
    updated in place by every tell), so the snapshot moved with the search and the copies moved each other."""
    def generations(search, n):
        for _ in range(n):
            xs = search.ask()
            search.tell(xs, ((xs - 0.3) ** 2).sum(axis=1))

    search = make()
    generations(search, 2)
    state = search.state_dict()
    expected = through_a_checkpoint(search)  # the same moment, through JSON + npz: arrays of its own
    generations(search, 3)
    assert np.array_equal(type(search).from_state(state).ask(), expected.ask())

    one, two = type(search).from_state(state), type(search).from_state(state)
    generations(one, 2)
    generations(two, 2)
    assert np.array_equal(one.ask(), two.ask())


def test_the_memory_available_is_the_smaller_of_the_machines_and_the_cgroups(tmp_path):
    """From mutation sampling: a 4 GiB container on a machine with 64 GiB free may take 3 GiB more, not 64 (sizes
    the checks let through were then killed by the OOM killer); a cgroup limit above what the machine has left
    does not raise it either. The machine's /proc and cgroup files are written in folders of their own."""
    from workbench.checks import available_memory

    proc, cgroups = tmp_path / "proc", tmp_path / "sys"
    (proc / "self").mkdir(parents=True)
    cgroups.mkdir()
    (proc / "self" / "cgroup").write_text("0::/\n")
    (cgroups / "memory.current").write_text(f"{2**30}\n")
    (cgroups / "memory.stat").write_text("inactive_file 0\n")
    for machine_free, limit, want in ((64 * 2**30, 4 * 2**30, 3 * 2**30), (2 * 2**30, 16 * 2**30, 2 * 2**30)):
        (proc / "meminfo").write_text(f"MemTotal: 1 kB\nMemAvailable: {machine_free // 1024} kB\n")
        (cgroups / "memory.max").write_text(f"{limit}\n")
        assert available_memory(proc, cgroups) == want


def test_the_cgroup_room_is_the_smallest_of_the_limits_on_the_way_up(tmp_path):
    """From mutation sampling: with limits on both a job and the task inside it, the room is the tighter of the
    two (the task's 1 GiB here, not the job's 3 GiB), whichever level holds it."""
    from workbench.checks import cgroup_headroom

    job = tmp_path / "job"
    (job / "task").mkdir(parents=True)
    for folder, limit in ((job, 4 * 2**30), (job / "task", 2 * 2**30)):
        (folder / "memory.max").write_text(f"{limit}\n")
        (folder / "memory.current").write_text(f"{2**30}\n")
    assert cgroup_headroom("0::/job/task\n", tmp_path) == 2**30
    (job / "memory.max").write_text(f"{int(1.5 * 2**30)}\n")
    assert cgroup_headroom("0::/job/task\n", tmp_path) == 2**29


def test_searches_starting_together_build_their_substrate_once():
    """Searches started together (tabs of one server) share one substrate of their settings: each built its own
    when they asked for it at once (work only, a substrate keeps no state between calls; the cache kept one)."""
    import threading

    from workbench.asal.evaluate import EvalConfig, components

    # settings no other test builds: the cache has no substrate of them yet
    cfg = EvalConfig("lenia", "pixels", steps=4, frames=2, overrides={"grid": 72, "phenotype": 32})
    start, got = threading.Barrier(6), {}

    def build(i: int) -> None:
        start.wait()
        try:
            got[i] = components(cfg)[0]
        except Exception as exc:  # noqa: BLE001 - said by the assertion below, not lost in a thread
            got[i] = exc

    threads = [threading.Thread(target=build, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 6 and len({id(sub) for sub in got.values()}) == 1, got


def test_two_searches_at_once_in_one_process_each_end_as_they_do_alone(tmp_path):
    """Two tabs of one `workbench serve` pressing Start run two searches on threads of one process: they share the
    substrate (evaluate.components keeps one per process and settings) and the FM (shared_fm). A Lenia step on the
    CPU is several Taichi kernel calls (each under the process's Taichi lock) with torch's FFTs between them, on
    buffers the step holds; buffers kept on the shared substrate instead were overwritten by the other search's
    step between two of those calls, and both runs' losses changed. Each run must end bit for bit as it does alone,
    whatever the interleaving: a target search and an open-ended one of other seeds, on the same Lenia."""
    from PIL import Image

    from workbench.asal.driver import SearchConfig, run_search
    from workbench.asal.evaluate import EvalConfig
    from workbench.bench_gpu import search_outcome, searches_at_once
    from workbench.runs import RunStore

    target = tmp_path / "target.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(target)
    # chunk=2: each iteration is two chunks of rollouts, so the two searches' steps alternate many times
    lenia = EvalConfig("lenia", "pixels", steps=20, frames=2, size=48, chunk=2,
                       overrides={"grid": 64, "cells": 32, "phenotype": 32})
    configs = [SearchConfig(kind="target", eval=lenia, target_image=str(target), iters=3, pop=4, seed=0),
               SearchConfig(kind="openended", eval=lenia, iters=3, pop=4, seed=1)]

    alone = [search_outcome(run_search(cfg, RunStore(tmp_path / f"alone{i}"))) for i, cfg in enumerate(configs)]
    together = searches_at_once(configs, tmp_path)
    for i, cfg in enumerate(configs):
        got = together[i]
        assert got == alone[i], (cfg.kind, got if isinstance(got, Exception) else f"best loss {got[0]}",
                                 f"alone {alone[i][0]}")
