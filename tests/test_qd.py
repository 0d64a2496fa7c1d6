"""CycleQD (workbench.qd) against spec §2: binning, elite sampling, crossover, SVD mutation, insertion, the
ask/tell loop on real zoo models (determinism, resume, rebuild from lineage, ablations) and the reference's
archive-map files."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from workbench.checkpoint import pack, unpack
from workbench.qd import (
    ArchiveMapError,
    CycleQD,
    CycleQDConfig,
    TaskArchives,
    archives_from_map,
    bin_ids,
    build_child,
    crossover,
    elite_probs,
    gaussian_mutate,
    read_archive_map,
    rebuild,
    svd_draws,
    svd_factors,
    svd_mutate,
    task_vector,
    write_archive_map,
)
from workbench.qd.sampling import sample_elite

# --- binning -----------------------------------------------------------------------------------------------------


def spec_bin(s: float, lo: float, hi: float, bins: int = 15) -> int:
    """Spec §2 written out: (index of the first edge >= s) − 1, clamped to [0, bins − 1]."""
    edges = np.linspace(lo, hi, bins + 1)
    first = next((i for i, e in enumerate(edges) if e >= s), len(edges))
    return min(max(first - 1, 0), bins - 1)


def test_bin_ids_follows_the_spec_rule_on_edges_and_outside_the_range():
    lo, hi = 0.0, 0.45                                  # one of the reference's ranges
    e = np.linspace(lo, hi, 16)
    scores = np.array([-0.3, lo, e[1], np.nextafter(e[1], 1), e[7], np.nextafter(e[7], 0), 0.2, e[14], hi,
                       np.nextafter(hi, 1), 0.9])
    expected = [0, 0, 0, 1, 6, 6, 6, 13, 14, 14, 14]   # by hand: (a, b] bins, ≤ lo -> 0, > hi -> 14
    got = bin_ids(scores, lo, hi)
    assert got.dtype == np.int64 and got.tolist() == expected
    assert got.tolist() == [spec_bin(s, lo, hi) for s in scores]
    rng = np.random.default_rng(0)
    many = np.concatenate([rng.uniform(-0.2, 1.0, 500), e])
    assert bin_ids(many, lo, hi).tolist() == [spec_bin(s, lo, hi) for s in many]
    assert bin_ids(0.3, 0.0, 1.0, bins=3).shape == () and int(bin_ids(0.3, 0.0, 1.0, bins=3)) == 0
    assert int(bin_ids(0.34, 0.0, 1.0, bins=3)) == 1 and bin_ids([5.0], 0.0, 1.0, bins=1).tolist() == [0]


def test_bin_ids_differ_from_pyribs_left_closed_grid_exactly_on_interior_edges():
    from ribs.archives import GridArchive

    lo, hi = 0.0, 0.45
    edges = np.linspace(lo, hi, 16)
    ribs = GridArchive(solution_dim=1, dims=[15], ranges=[(lo, hi)])
    ours, theirs = bin_ids(edges, lo, hi), ribs.index_of(edges[:, None])
    assert (theirs[1:15] == np.arange(1, 15)).all()          # pyribs: [a, b), e_b starts bin b
    assert (ours[1:15] == np.arange(0, 14)).all()            # reference: (a, b], e_b ends bin b − 1
    mids = (edges[:-1] + edges[1:]) / 2
    assert (bin_ids(mids, lo, hi) == ribs.index_of(mids[:, None])).all()   # inside a bin they agree


@pytest.mark.parametrize("lo, hi, bins, match", [(1.0, 1.0, 15, "lo must be below hi"),
                                                 (1.0, 0.0, 15, "lo must be below hi"),
                                                 (0.0, np.nan, 15, "lo must be below hi"),
                                                 (0.0, 1.0, 0, "bins must be a whole number of at least 1")])
def test_bin_ids_rejects_bad_ranges(lo, hi, bins, match):
    with pytest.raises(ValueError, match=match):
        bin_ids([0.5], lo, hi, bins)
    with pytest.raises(ValueError, match="finite"):
        bin_ids([np.nan], 0.0, 1.0)


# --- elite sampling ------------------------------------------------------------------------------------------------


def test_elite_probs_by_hand():
    cells = np.array([[0, 2], [4, 2], [2, 2]])
    quality = np.array([0.2, 0.6, 0.4])
    # n(q) = 0.5 + 0.8·(q − 0.2)/0.4 = [0.5, 1.3, 0.9]; bin column 0 [0, 4, 2] -> [0.5, 1.3, 0.9];
    # column 1 is constant (min = max) -> 1
    w = np.array([0.5 * 0.5, 1.3 * 1.3, 0.9 * 0.9])
    p = elite_probs(cells, quality)
    assert p.dtype == np.float64 and p.shape == (3,)
    np.testing.assert_allclose(p, w / w.sum(), rtol=1e-12)
    assert p.sum() == pytest.approx(1.0, abs=1e-15)


def test_elite_probs_constant_columns_are_uniform_and_bins_not_scores():
    assert elite_probs(np.array([[3, 3]] * 4), np.full(4, 0.7)).tolist() == [0.25] * 4
    assert elite_probs(np.array([[1]]), np.array([0.1])).tolist() == [1.0]
    with pytest.raises(ValueError, match="integer bin indices"):
        elite_probs(np.array([[0.1], [0.2]]), np.array([0.1, 0.2]))       # scores, not bins
    assert elite_probs(np.array([[0.0], [4.0]]), [0.1, 0.1]).tolist() == elite_probs([[0], [4]], [0.1, 0.1]).tolist()
    with pytest.raises(ValueError, match="finite"):
        elite_probs(np.array([[0], [1]]), np.array([0.1, np.nan]))


def test_elite_sampling_draws_two_distinct_parents_in_proportion():
    cells, quality = np.array([[0], [7], [14]]), np.array([0.1, 0.5, 0.9])
    p = elite_probs(cells, quality)
    rng = np.random.default_rng(1)
    draws = np.array([sample_elite(rng, cells, quality) for _ in range(6000)])
    assert (draws[:, 0] != draws[:, 1]).all()
    first = np.bincount(draws[:, 0], minlength=3) / len(draws)   # the first draw follows p
    np.testing.assert_allclose(first, p, atol=0.02)


# --- operators -----------------------------------------------------------------------------------------------------


def toy_state(seed: int, scale: float = 1.0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = {"model.embed_tokens.weight": (7, 4), "model.layers.0.mlp.up_proj.weight": (6, 4),
              "model.layers.0.input_layernorm.weight": (4,), "model.layers.0.proj.bias": (6,),
              "model.layers.0.norm_2d.weight": (3, 3), "model.layers.0.conv.weight": (2, 3, 3),
              "lm_head.weight": (7, 4)}
    return {k: scale * torch.randn(s, generator=g) for k, s in shapes.items()}


def test_crossover_formula_and_model_wise_omega():
    theta0, a, b, c = toy_state(0), toy_state(1), toy_state(2), toy_state(3)
    omegas = [1.013, 0.987]
    child = crossover(theta0, [a, b], omegas)
    for k in theta0:   # every tensor, embeddings and norms included, with the same ω
        expected = theta0[k].double() + (omegas[0] * (a[k] - theta0[k]).double()
                                         + omegas[1] * (b[k] - theta0[k]).double()) / sum(omegas)
        torch.testing.assert_close(child[k].double(), expected, rtol=1e-6, atol=1e-6)
    three = crossover(theta0, [a, b, c], [1.0, 2.0, 3.0])
    k = "model.layers.0.input_layernorm.weight"
    torch.testing.assert_close(three[k], (a[k] + 2 * b[k] + 3 * c[k]) / 6, rtol=1e-5, atol=1e-6)
    assert crossover(theta0, [a], [0.5])[k].equal(theta0[k] + 0.5 * (a[k] - theta0[k]) / 0.5)
    with pytest.raises(ValueError, match="one omega per parent"):
        crossover(theta0, [a, b], [1.0])
    with pytest.raises(ValueError, match="non-zero sum"):
        crossover(theta0, [a, b], [1.0, -1.0])
    with pytest.raises(ValueError, match="shape"):
        crossover(theta0, [a, {**b, "lm_head.weight": torch.zeros(4, 7)}], omegas)


def test_svd_mutate_changes_only_2d_non_norm_weights_by_u_diag_rs_vt():
    theta, tau = toy_state(4), toy_state(5, scale=0.1)
    eligible = ["model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight", "lm_head.weight"]
    g = torch.Generator().manual_seed(9)
    r = {k: 0.1 * torch.rand(min(theta[k].shape), generator=g) for k in eligible}
    out = svd_mutate(theta, tau, r)
    assert set(out) == set(theta)
    for k in theta:
        if k not in eligible:   # 1-D norms and biases, a 2-D "norm" tensor, a 3-D tensor: untouched
            assert out[k].equal(theta[k]), k
            continue
        u, s, vh = torch.linalg.svd(tau[k].double(), full_matrices=False)
        expected = theta[k].double() + u @ torch.diag(r[k].double() * s) @ vh
        torch.testing.assert_close(out[k].double(), expected, rtol=1e-5, atol=1e-6)
        assert not out[k].equal(theta[k])
    # r = 1 everywhere adds the whole task vector (full rank)
    ones = svd_mutate(theta, tau, {k: torch.ones(min(theta[k].shape)) for k in eligible})
    torch.testing.assert_close(ones["lm_head.weight"], theta["lm_head.weight"] + tau["lm_head.weight"])
    # precomputed factors: the same bits as decomposing here
    factors = svd_factors(tau)
    assert sorted(factors) == sorted(eligible) and factors.rank("model.layers.0.mlp.up_proj.weight") == 4
    cached = svd_mutate(theta, factors, r)
    assert all(cached[k].equal(out[k]) for k in theta)
    with pytest.raises(ValueError, match="min\\(rows, cols\\)"):
        svd_mutate(theta, factors, {**r, "lm_head.weight": torch.zeros(7)})
    with pytest.raises(ValueError, match="missing"):
        svd_mutate(theta, factors, {k: r[k] for k in eligible[:2]})
    with pytest.raises(ValueError, match="not eligible"):
        svd_mutate(theta, factors, {**r, "model.layers.0.norm_2d.weight": torch.zeros(3)})


def test_mutation_draws_are_fixed_by_the_seed_whatever_the_tensor_order():
    factors = svd_factors(toy_state(5))
    r = svd_draws(factors, seed=11, kappa=0.1)
    again = svd_draws(svd_factors(dict(reversed(list(toy_state(5).items())))), seed=11, kappa=0.1)
    assert all(r[k].equal(again[k]) for k in r)
    assert all(r[k].shape == (factors.rank(k),) and 0 <= r[k].min() and r[k].max() < 0.1 for k in r)
    assert not r["lm_head.weight"].equal(svd_draws(factors, seed=12, kappa=0.1)["lm_head.weight"])
    theta = toy_state(6)
    noisy = gaussian_mutate(theta, seed=3, std=3e-4)
    for k in theta:   # the ablation touches every tensor, norms and 1-D ones included
        d = noisy[k] - theta[k]
        assert 0 < d.abs().max() < 3e-4 * 6
    assert all(noisy[k].equal(gaussian_mutate(theta, seed=3, std=3e-4)[k]) for k in theta)


# --- archives ------------------------------------------------------------------------------------------------------

TASKS3 = ["sort", "reverse", "brackets"]


def test_insertion_empty_cell_strictly_better_and_ties_keep_the_incumbent():
    archives = TaskArchives(TASKS3, {t: (0.0, 1.0) for t in TASKS3}, bins=15)
    first = {"sort": 0.42, "reverse": 0.90, "brackets": 0.20}        # bins 6, 13, 2 (0.2 is an edge: bin 2)
    assert archives.add(0, first) == TASKS3                          # every cell empty
    assert archives.add(1, first) == []                              # a tie everywhere: incumbent kept
    better_sort = {"sort": 0.45, "reverse": 0.90, "brackets": 0.20}  # same bins, higher on sort only
    assert archives.add(2, better_sort) == ["sort"]                  # the others tie: incumbent kept
    ids, quality = archives.grid("sort")                             # sort's cell: (bin reverse, bin brackets)
    assert ids[13, 2] == 2 and quality[13, 2] == 0.45 and (ids >= 0).sum() == 1
    assert archives.grid("reverse")[0][6, 2] == 0 and archives.grid("brackets")[0][6, 13] == 0
    worse = {"sort": 0.41, "reverse": 0.89, "brackets": 0.19}        # same cells as model 0, lower everywhere
    assert archives.add(3, worse) == []
    assert archives.entering(worse) == [] and len(archives) == 3
    assert archives.elite_ids().tolist() == [0, 2]
    stats = archives.stats("sort")
    assert stats["coverage"] == 1 / 225 and stats["qd_score"] == 0.45 and stats["max_quality"] == 0.45
    with pytest.raises(ValueError, match="missing \\['brackets'\\]"):
        archives.add(4, {"sort": 0.1, "reverse": 0.1})
    with pytest.raises(ValueError, match="finite"):
        archives.add(4, {"sort": np.nan, "reverse": 0.1, "brackets": 0.1})
    with pytest.raises(ValueError, match="non-negative integers"):
        archives.add(-1, first)


def test_grid_axes_are_the_other_tasks_in_task_order():
    ranges = {"sort": (0.0, 1.0), "reverse": (0.0, 0.5), "brackets": (0.0, 0.75)}
    archives = TaskArchives(TASKS3, ranges, bins=15)
    scores = {"sort": 0.5, "reverse": 0.05, "brackets": 0.6}
    b = {t: int(bin_ids(scores[t], *ranges[t])) for t in TASKS3}
    assert b == {"sort": 7, "reverse": 1, "brackets": 11}             # each on its own range
    archives.add(5, scores)
    assert archives.axes("reverse") == ["sort", "brackets"]
    for task, (i, j) in {"sort": ("reverse", "brackets"), "reverse": ("sort", "brackets"),
                         "brackets": ("sort", "reverse")}.items():
        ids, quality = archives.grid(task)
        assert ids.shape == (15, 15) and np.argwhere(ids >= 0).tolist() == [[b[i], b[j]]]
        assert quality[b[i], b[j]] == scores[task] and np.isnan(quality).sum() == 224
    two = TaskArchives(["add", "sort"], None, bins=4)
    two.add(0, {"add": 0.3, "sort": 0.9})
    assert two.grid("add")[0].tolist() == [-1, -1, -1, 0] and two.grid("sort")[0].tolist() == [-1, 0, -1, -1]


@pytest.mark.parametrize("tasks, ranges, bins, match", [
    (["sort"], None, 15, "at least 2 tasks"),
    (["sort", "sort"], None, 15, "listed twice"),
    (["sort", "reverse"], {"sort": (0, 1), "revrse": (0, 1)}, 15, "not among the tasks"),
    (["sort", "reverse"], {"sort": (0, 1)}, 15, "no range for task"),
    (["sort", "reverse"], {"sort": (0.5, 0.5), "reverse": (0, 1)}, 15, "lo must be below hi"),
    (["sort", "reverse"], None, 0, "bins must be"),
    (["sort", "reverse", "add", "brackets", "recall"], None, 32, "bins 32: 5 tasks make archives of 32\\^4 cells, "
                                                                  "more than 1,000,000.*give bins 31 or fewer"),
])
def test_bad_archive_settings_are_one_clear_error(tasks, ranges, bins, match):
    with pytest.raises(ValueError, match=match):
        TaskArchives(tasks, ranges, bins)


@pytest.mark.parametrize("kw, seeds, match", [
    (dict(tasks=("sort", "srot")), None, "unknown task 'srot'; choose from"),
    (dict(tasks=("sort",)), None, "at least 2 tasks"),
    (dict(tasks=("sort", "add", "sort")), None, "listed twice"),
    (dict(ranges={"sort": (1.0, 0.0), "reverse": (0, 1), "brackets": (0, 1)}), None, "lo must be below hi"),
    (dict(ranges={"sort": (0.0, 1.0)}), None, "no range for tasks \\['reverse', 'brackets'\\]"),
    (dict(bins=0), None, "bins must be"),
    (dict(sampling="tournament"), None, "unknown sampling"),
    (dict(mutation="dare"), None, "unknown mutation"),
    ({}, {"sort": "sort", "reverse": "reverse"}, "'brackets'\\] has no seed expert"),
    ({}, {"sort": "s", "reverse": "r", "brackets": "b", "add": "a"}, "not among the tasks"),
])
def test_bad_loop_settings_are_one_clear_error(kw, seeds, match):
    with pytest.raises(ValueError, match=match):
        CycleQD(CycleQDConfig(**kw), seeds or {t: t for t in CycleQDConfig().tasks})


def test_a_run_config_takes_a_mutation_scale_of_zero_and_refuses_a_negative_one():
    """--mutation-scale is κ (or σ) >= 0, as its error says: 0 (crossover alone) is a setting, not a refusal."""
    from workbench.qd.run import QDRunConfig

    for mutation in ("svd", "gaussian"):
        assert QDRunConfig(tasks=["sort", "reverse"], mutation=mutation, mutation_scale=0).mutation_scale == 0
    with pytest.raises(ValueError, match="--mutation-scale must be a finite number >= 0, got -0.1"):
        QDRunConfig(tasks=["sort", "reverse"], mutation_scale=-0.1)


# --- the loop ------------------------------------------------------------------------------------------------------


class Loop:
    """What a caller does: build each child from its lineage, evaluate it, keep the live elites only."""

    def __init__(self, qd: CycleQD, theta0, load_seed, score):
        self.qd, self.theta0, self.load_seed, self.score = qd, theta0, load_seed, score
        self.factors = {t: svd_factors(task_vector(load_seed(name), theta0)) for t, name in qd.seed_experts.items()}
        self.models: dict[int, dict] = {}

    def resume_models(self) -> None:
        """After a restart: the live elites rebuilt from lineage (nothing but the CycleQD state was kept)."""
        cache: dict[int, dict] = {}
        for i in self.qd.live_ids():
            self.models[i] = rebuild(i, self.qd.child, self.theta0, self.load_seed, self.factors, cache)

    def run(self, until: int) -> None:
        while self.qd.generation <= until:
            child = self.qd.ask()
            theta = (self.load_seed(child.seed_expert) if child.is_seed else
                     build_child(child, self.theta0, [self.models[p] for p in child.parents],
                                 self.factors[child.task]))
            if self.qd.tell(child, self.score(theta)):
                self.models[child.id] = theta
            live = set(self.qd.live_ids())
            self.models = {i: m for i, m in self.models.items() if i in live}


def canonical(qd: CycleQD) -> tuple[str, dict]:
    tree, arrays = pack({"qd": qd})
    return json.dumps(tree, sort_keys=True), {k: (v.dtype.str, v.shape, v.tobytes()) for k, v in arrays.items()}


def canonical_state(state: dict) -> tuple[str, dict]:
    tree, arrays = pack(state)
    return json.dumps(tree, sort_keys=True), {k: (v.dtype.str, v.shape, v.tobytes()) for k, v in arrays.items()}


def through_json(qd: CycleQD) -> CycleQD:
    tree, arrays = pack({"qd": qd})
    return unpack(json.loads(json.dumps(tree)), {k: np.array(v) for k, v in arrays.items()})["qd"]


# A toy problem for the default K = 3 (15 × 15 archives) that runs in milliseconds: "experts" are random
# directions from θ0, and a model's score on a task is how well its task vector points along that task's.
TOY = {t: toy_state(10 + i, scale=0.2) for i, t in enumerate(TASKS3)}
THETA0 = toy_state(0)
SEEDS = {t: {k: THETA0[k] + TOY[t][k] for k in THETA0} for t in TASKS3}


def toy_score(theta) -> dict[str, float]:
    tau = torch.cat([(theta[k] - THETA0[k]).flatten() for k in THETA0]).double()
    out = {}
    for t in TASKS3:
        d = torch.cat([v.flatten() for v in TOY[t].values()]).double()
        out[t] = float((1 + torch.dot(tau, d) / (tau.norm() * d.norm())) / 2)
    return out


def toy_loop(**kw) -> Loop:
    config = CycleQDConfig(tasks=tuple(TASKS3), **kw)
    return Loop(CycleQD(config, {t: t for t in TASKS3}), THETA0, SEEDS.__getitem__, toy_score)


def test_loop_k3_records_lineage_draws_and_metrics():
    loop = toy_loop(seed=3)
    loop.run(until=30)
    qd = loop.qd
    records = qd.records
    assert [r["id"] for r in records] == list(range(33)) and qd.generation == 31
    assert qd.scores(32) == records[32]["scores"]
    for wrong in (-1, 33):  # -1 read the last model's scores, 33 was an IndexError
        with pytest.raises(ValueError, match=f"no evaluated model {wrong}: ids run from 0 to 32"):
            qd.scores(wrong)
    assert [r["seed_expert"] for r in records[:3]] == TASKS3 and all(r["generation"] == 0 for r in records[:3])
    for r in records[3:]:
        assert r["task"] == TASKS3[r["generation"] % 3] and r["id"] == 2 + r["generation"]
        assert len(r["parents"]) == 2 and r["parents"][0] != r["parents"][1] and max(r["parents"]) < r["id"]
        assert len(r["omegas"]) == 2 and all(abs(w - 1) < 0.06 for w in r["omegas"])
        assert r["mutation"] == "svd" and r["mutation_scale"] == 0.1 and r["kept"] == bool(r["entered"])
        assert set(r["scores"]) == set(TASKS3)
    assert sum(r["kept"] for r in records[3:]) >= 5                  # children do enter archives
    assert any(r["kept"] for r in records if max(r["parents"] or [0]) >= 3)   # children of children too
    counts = qd.draw_counts()
    assert counts.shape == (33, 3) and counts.sum() == 2 * 30
    assert counts[:, 0].sum() == 2 * 10   # generations 3, 6, ..., 30 optimise sort
    m = qd.metrics()
    assert m["coverage"].shape == (31, 3) and m["task"][:4] == [None, "reverse", "brackets", "sort"]
    for k in ("coverage", "qd_score", "max_quality"):   # elites only ever improve
        assert (np.diff(m[k], axis=0) >= 0).all()
    last = qd.snapshot(30)
    for t in TASKS3:
        ids, quality = qd.archives.grid(t)
        assert (last[t][0] == ids).all() and np.array_equal(last[t][1], quality, equal_nan=True)
    assert (qd.snapshot(0)["sort"][0] >= 0).sum() <= 3
    # each generation keeps the cells it changed, not a dense copy of every archive (which grew as generations ×
    # K × bins^(K-1)); every snapshot is the archives as they stood then
    state = qd.state_dict()
    assert "snapshots" not in state and state["snapshot_changes"].shape[1] == 4
    assert len(state["snapshot_changes"]) <= 3 * len(records)  # a cell changes when a model enters it
    dense = np.stack([qd.snapshot_ids(g) for g in range(qd.finished)])
    for g in range(1, qd.finished):  # a generation's changes are the cells whose elite differs from the one before
        k, cell, elite = qd.changes(g).T
        assert (dense[g].reshape(3, -1)[k, cell] == elite).all()
        assert ((dense[g] != dense[g - 1]).sum()) == len(k)
    # a checkpoint of the dense format (/2) reads as the same state
    old = {**state, "format": "workbench.qd.CycleQD/2", "snapshots": dense}
    del old["snapshot_changes"]
    assert canonical(CycleQD.from_state(old)) == canonical(qd)
    # the children the loop kept are exactly the models a rebuild from lineage produces, bit for bit
    for i, theta in loop.models.items():
        again = rebuild(i, qd.child, THETA0, SEEDS, loop.factors)
        assert all(again[k].equal(theta[k]) for k in theta)


@pytest.mark.parametrize("batch", [1, 3])
def test_children_rows_kept_between_generations_equal_the_table_built_whole(batch):
    """children.parquet's columns are extended by the models told since the last write (a model's row changes
    only by its draw counts): after every generation they equal the records and CycleQD.draw_counts, and the
    columns built anew, byte for byte once written. So are the other things a generation adds to and does not
    rebuild: archives.parquet's table, the state's columns, the last statistics and the kept models' lineage."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from workbench.qd.run import (
        ArchiveRows,
        ChildrenRows,
        _kept_records,
        _lineage_record,
        archive_rows,
        children_rows,
        metrics_row,
    )

    def written(columns: dict | pa.Table) -> bytes:
        out = io.BytesIO()
        pq.write_table(columns if isinstance(columns, pa.Table) else pa.Table.from_pydict(columns), out)
        return out.getvalue()

    loop, kept, archived = (batch_loop(batch) if batch > 1 else toy_loop(seed=3)), ChildrenRows(), ArchiveRows()
    for g in (0, 1, 2, 7, 20):
        loop.run(g)
        qd, cols = loop.qd, kept.extend(loop.qd)
        table = archived.table(qd)
        assert table.column(0).num_chunks == 1 and written(table) == written(archive_rows(qd))
        twin = batch_loop(batch) if batch > 1 else toy_loop(seed=3)
        twin.run(g)  # the same run, its state's columns made at once
        assert canonical_state(qd.state_dict()) == canonical_state(twin.qd.state_dict())
        last = qd.last_statistics()
        m = qd.metrics()
        assert (last["generation"], last["task"]) == (m["generation"][-1], m["task"][-1])
        assert all(np.array_equal(last[k], m[k][-1], equal_nan=True) for k in ("coverage", "qd_score", "max_quality"))
        assert _kept_records(qd) == {r["id"]: _lineage_record(r) for r in qd.records if r["kept"]}
        records, counts = qd.records, qd.draw_counts()
        assert qd.evaluated == len(records) == len(cols["id"]) and cols["id"] == list(range(qd.evaluated))
        for key in ("generation", "task", "pool", "parents", "omegas", "entered", "kept", "mutation_seed"):
            assert cols[key] == [r[key] for r in records]
        for k, t in enumerate(TASKS3):
            assert cols[f"score_{t}"] == [r["scores"][t] for r in records]
            assert cols[f"draws_{t}"] == counts[:, k].tolist()
        assert written(cols) == written(children_rows(qd))
        # and the file the rows built whole wrote (one dict per record, pa.Table.from_pylist), byte for byte
        whole = []
        for r in records:
            row = {k: r[k] for k in ChildrenRows.FIXED}
            row["parents"], row["omegas"] = [int(p) for p in r["parents"]], [float(w) for w in r["omegas"]]
            row.update({f"score_{t}": r["scores"][t] for t in TASKS3})
            row["entered"], row["kept"] = list(r["entered"]), bool(r["kept"])
            row.update({f"draws_{t}": int(counts[r["id"], k]) for k, t in enumerate(TASKS3)})
            whole.append(row)
        out = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(whole), out)
        assert written(cols) == out.getvalue()
        # metrics.parquet's row of the generation just finished counts its own children (read from the last ones)
        told = [r for r in records if r["generation"] == g]
        row = metrics_row(qd)
        assert row["generation"] == g and (row["evaluated"], row["kept"]) == (len(told), sum(r["kept"] for r in told))
    assert counts.sum() > 0 and qd.records_since(qd.evaluated - 2) == records[-2:]


def test_loop_same_seed_same_run_other_seed_other_run():
    a, b, c = toy_loop(seed=5), toy_loop(seed=5), toy_loop(seed=6)
    for loop in (a, b, c):
        loop.run(until=12)
    assert canonical(a.qd) == canonical(b.qd)
    assert canonical(a.qd) != canonical(c.qd)


def test_loop_resumes_bit_for_bit_from_a_json_checkpoint():
    straight = toy_loop(seed=7)
    straight.run(until=20)
    first = toy_loop(seed=7)
    first.run(until=9)
    pending = first.qd.ask()                                    # a checkpoint between ask and tell
    resumed = Loop(through_json(first.qd), THETA0, SEEDS.__getitem__, toy_score)
    assert resumed.qd.ask() == pending and resumed.models == {}
    resumed.resume_models()                                     # weights come back from lineage alone
    assert set(resumed.models) == set(first.models)
    assert all(resumed.models[i][k].equal(first.models[i][k]) for i in first.models for k in THETA0)
    resumed.run(until=20)
    assert canonical(resumed.qd) == canonical(straight.qd)


class BatchLoop(Loop):
    """The batched caller: build a whole generation from the parents alive at its start, then tell in order."""

    def run(self, until: int) -> None:
        while self.qd.generation <= until:
            children = self.qd.ask_batch()
            thetas = [self.load_seed(c.seed_expert) if c.is_seed else
                      build_child(c, self.theta0, [self.models[p] for p in c.parents], self.factors[c.task])
                      for c in children]
            for child, theta in zip(children, thetas, strict=True):
                if self.qd.tell(child, self.score(theta)):
                    self.models[child.id] = theta
            live = set(self.qd.live_ids())
            self.models = {i: m for i, m in self.models.items() if i in live}


def batch_loop(batch: int, seed: int = 3) -> BatchLoop:
    config = CycleQDConfig(tasks=tuple(TASKS3), seed=seed, batch=batch)
    return BatchLoop(CycleQD(config, {t: t for t in TASKS3}), THETA0, SEEDS.__getitem__, toy_score)


def test_batches_draw_a_generation_from_the_archives_at_its_start():
    loop = batch_loop(batch=4)
    loop.run(until=10)
    qd = loop.qd
    records = qd.records
    assert len(records) == 3 + 10 * 4 and qd.generation == 11
    for r in records[3:]:
        g, i = r["generation"], r["index"]
        assert r["id"] == 3 + (g - 1) * 4 + i and 0 <= i < 4 and r["task"] == TASKS3[g % 3]
        first = 3 + (g - 1) * 4                     # no child has a sibling (or a later model) as a parent
        assert max(r["parents"]) < first
    assert len({(r["mutation_seed"]) for r in records[3:]}) == 40      # every child has draws of its own
    m = qd.metrics()
    assert m["coverage"].shape == (11, 3) and qd.draw_counts().sum() == 2 * 40
    assert qd.model_path(3) == "models/gen_1_0" and qd.model_path(6) == "models/gen_1_3"
    # child 0 of a generation is what a B = 1 run draws from the same archives (same seed, same state)
    one = batch_loop(batch=1)
    one.run(until=0)
    four = batch_loop(batch=4)
    four.run(until=0)
    assert four.qd.ask_batch()[0] == one.qd.ask() and len(four.qd.ask_batch()) == 4
    # told out of order: refused, nothing recorded
    children = four.qd.ask_batch()
    with pytest.raises(ValueError, match="last ask"):
        four.qd.tell(children[1], toy_score(SEEDS["sort"]))
    assert len(four.qd.records) == 3 and four.qd.ask_batch() == children


def test_batches_resume_mid_generation_bit_for_bit():
    straight = batch_loop(batch=3, seed=8)
    straight.run(until=9)
    half = batch_loop(batch=3, seed=8)
    half.run(until=4)
    children = half.qd.ask_batch()
    theta = build_child(children[0], THETA0, [half.models[p] for p in children[0].parents],
                        half.factors[children[0].task])
    half.qd.tell(children[0], toy_score(theta))                   # a checkpoint with two children pending
    resumed = BatchLoop(through_json(half.qd), THETA0, SEEDS.__getitem__, toy_score)
    assert resumed.qd.ask_batch() == children[1:]
    cache: dict[int, dict] = {}
    for c in children[1:]:                                         # their parents come back from lineage
        for p in c.parents:
            resumed.models[p] = rebuild(p, resumed.qd.child, THETA0, SEEDS, resumed.factors, cache)
    for c in children[1:]:
        t = build_child(c, THETA0, [resumed.models[p] for p in c.parents], resumed.factors[c.task])
        resumed.qd.tell(c, toy_score(t))
    resumed.resume_models()
    resumed.run(until=9)
    assert canonical(resumed.qd) == canonical(straight.qd)
    # a state of the first format (one pending child, no batch, no index; records and history as lists) still
    # reads, and is written again as the current format
    old = half.qd.state_dict()
    old["format"], old["pending"] = "workbench.qd.CycleQD/1", old["pending"][0]
    old["records"] = [{k: v for k, v in r.items() if k != "index"} for r in half.qd.records]
    old["history"] = [dict(h) for h in half.qd._history]
    del old["config"]["batch"]
    first = CycleQD.from_state(old)
    assert first.ask() == children[1] and {r["index"] for r in first.records} == {0}
    assert [list(r) for r in first.records] == [list(r) for r in half.qd.records]  # tell's keys, in its order
    assert through_json(first).records == first.records
    with pytest.raises(ValueError, match="batch must be a whole number of at least 1"):
        CycleQDConfig(batch=0)


def _typed(x):
    """x with every value's type beside it (floats by their bits), to compare states exactly."""
    if isinstance(x, dict):
        return ("dict", [(k, _typed(v)) for k, v in x.items()])
    if isinstance(x, list | tuple):
        return (type(x).__name__, [_typed(v) for v in x])
    return (type(x).__name__, x.hex() if isinstance(x, float) else x)


def test_the_state_holds_records_and_history_as_columns_and_reads_format_3s_lists():
    """A run writes its state every generation: records and statistics as columns keep the JSON tree the same
    size however long the run (lists of dicts grew it by ~50 values a model); they come back exactly, types and
    order included, and a /3 state (lists of dicts) reads as the same CycleQD."""
    fresh = CycleQD(CycleQDConfig(tasks=tuple(TASKS3), seed=4), {t: t for t in TASKS3})  # no record yet
    fresh.tell(fresh.ask(), toy_score(SEEDS[TASKS3[0]]))                                  # or one seed told
    assert through_json(fresh).records == fresh.records and through_json(through_json(fresh)).ask() == fresh.ask()
    new = CycleQD(CycleQDConfig(tasks=tuple(TASKS3), seed=4), {t: t for t in TASKS3})
    assert through_json(new).records == [] and through_json(new).ask() == new.ask()
    short, long = batch_loop(batch=2, seed=4), batch_loop(batch=2, seed=4)
    short.run(until=5)
    long.run(until=30)
    qd = long.qd
    # an empty archive's (set before the first state_dict: its columns are kept, and statistics never change once
    # added)
    qd._history[0]["max_quality"][1] = math.nan
    sizes = [len(json.dumps(pack({"qd": loop.qd})[0])) for loop in (short, long)]
    assert sizes[1] - sizes[0] < 20
    back = through_json(qd)
    assert _typed(back._records) == _typed(qd._records) and _typed(back._history) == _typed(qd._history)
    assert _typed(back.records) == _typed(qd.records) and canonical(back) == canonical(qd)
    old = {**qd.state_dict(), "format": "workbench.qd.CycleQD/3", "records": qd.records,
           "history": [dict(h) for h in qd._history]}
    again = unpack(json.loads(json.dumps(pack(old)[0])), pack(old)[1])
    assert _typed(CycleQD.from_state(again)._records) == _typed(qd._records)
    assert canonical(CycleQD.from_state(again)) == canonical(qd)


def test_ask_is_idempotent_and_tell_takes_only_the_pending_child():
    loop = toy_loop(seed=1)
    loop.run(until=2)
    child = loop.qd.ask()
    assert loop.qd.ask() == child and loop.qd.child(child.id) == child
    with pytest.raises(ValueError, match="last ask"):
        loop.qd.tell(loop.qd.child(0), toy_score(SEEDS["sort"]))
    with pytest.raises(ValueError, match="missing"):
        loop.qd.tell(child, {"sort": 0.5})


def test_scarce_archives_fall_back_to_all_elites_then_a_single_parent():
    # every model scores the same: the first seed takes every archive, the others tie and are not kept
    loop = Loop(CycleQD(CycleQDConfig(tasks=tuple(TASKS3), seed=0), {t: t for t in TASKS3}), THETA0,
                SEEDS.__getitem__, lambda theta: dict.fromkeys(TASKS3, 0.0))
    loop.run(until=2)
    records = loop.qd.records
    assert [r["kept"] for r in records] == [True, False, False, False, False]
    assert [r["pool"] for r in records[3:]] == ["single", "single"] and records[3]["parents"] == [0, 0]
    # archive "add" holds one elite, archive "sort" two: a child for "add" draws from the elites of all archives
    qd = CycleQD(CycleQDConfig(tasks=("add", "sort")), {"add": "add", "sort": "sort"})
    assert qd.tell(qd.ask(), {"add": 0.9, "sort": 0.1}) == ["add", "sort"]
    assert qd.tell(qd.ask(), {"add": 0.5, "sort": 0.1}) == ["sort"]    # sort's cell is add's bin: 7, not 13
    child = qd.ask()
    assert child.task == "sort" and child.pool == "archive" and sorted(child.parents) == [0, 1]
    assert qd.tell(child, {"add": 0.5, "sort": 0.1}) == []              # ties seed 1 in both cells
    child = qd.ask()
    assert child.task == "add" and child.pool == "all archives" and sorted(child.parents) == [0, 1]
    qd.tell(child, {"add": 0.0, "sort": 0.0})
    # the sampling frequency counts draws from archive k alone (as the reference's): not those from all archives
    assert qd.draw_counts().tolist() == [[0, 1], [0, 1], [0, 0], [0, 0]]
    assert loop.qd.draw_counts().sum() == 0


# --- the loop on real zoo models (K = 2: the quick zoo's add and sort experts) -----------------------------------


class AnswerLikelihood:
    """A model's score on a task: the geometric-mean probability it gives the answer tokens (and </s>) of the
    held-out prompts, teacher-forced. The quick zoo's experts score 0 on exact match; this separates them and
    their children, so archives fill."""

    def __init__(self, model, tok, tasks, n: int = 16):
        from workbench.lm.tasks import heldout

        self.model, self.sets = model.eval(), {}
        for task in tasks:
            rows, starts = [], []
            for prompt, answer in heldout(task, n):
                p = [tok.bos_token_id] + tok(prompt, add_special_tokens=False)["input_ids"]
                rows.append(p + tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
                starts.append(len(p))
            width = max(map(len, rows))
            ids = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows])
            check = torch.zeros(len(rows), width - 1, dtype=torch.bool)   # position t predicts token t + 1
            for i, (s, r) in enumerate(zip(starts, rows, strict=True)):
                check[i, s - 1: len(r) - 1] = True
            self.sets[task] = (ids, check)

    @torch.inference_mode()
    def __call__(self, state_dict) -> dict[str, float]:
        self.model.load_state_dict(state_dict, strict=True)
        out = {}
        for task, (ids, check) in self.sets.items():
            logp = self.model(input_ids=ids).logits[:, :-1].log_softmax(-1)
            out[task] = float(logp.gather(-1, ids[:, 1:, None])[..., 0][check].mean().exp())
        return out


@pytest.fixture(scope="module")
def zoo(quick_zoo):
    from workbench.lm.zoo import load_zoo

    torch.set_num_threads(1)
    return load_zoo(quick_zoo)


def zoo_loop(zoo, score, **kw) -> Loop:
    config = CycleQDConfig(tasks=("add", "sort"), **kw)
    return Loop(CycleQD(config, {"add": "add", "sort": "sort"}), zoo.state_dict("base"), zoo.state_dict, score)


def test_loop_on_the_quick_zoo_determinism_resume_and_rebuild(zoo):
    score = AnswerLikelihood(zoo.model("base", device="cpu"), zoo.tokenizer(), ["add", "sort"])
    seeds = [score(zoo.state_dict(name)) for name in ("add", "sort")]
    assert seeds[0] != seeds[1] and all(0 < v < 1 for s in seeds for v in s.values())
    # fixed ranges, chosen once for this problem (as the reference's per-task ranges): around the experts' scores
    ranges = {t: (0.8 * min(s[t] for s in seeds), 1.2 * max(s[t] for s in seeds)) for t in ("add", "sort")}
    straight = zoo_loop(zoo, score, seed=0, ranges=ranges)
    straight.run(until=8)
    qd = straight.qd
    assert qd.archives.grid("add")[0].shape == (15,) and qd.config.method.endswith("(the paper's method)")
    assert sum(r["kept"] for r in qd.records[2:]) >= 1
    again = zoo_loop(zoo, score, seed=0, ranges=ranges)
    again.run(until=8)
    assert canonical(again.qd) == canonical(qd)
    half = zoo_loop(zoo, score, seed=0, ranges=ranges)
    half.run(until=4)
    resumed = Loop(through_json(half.qd), zoo.state_dict("base"), zoo.state_dict, score)
    resumed.resume_models()
    resumed.run(until=8)
    assert canonical(resumed.qd) == canonical(qd)
    assert set(resumed.models) == set(straight.models)
    for i, theta in straight.models.items():
        assert all(resumed.models[i][k].equal(theta[k]) for k in theta)
    # a rebuilt child scores what it scored when it was told
    for i in straight.models:
        assert score(rebuild(i, qd.child, zoo.state_dict("base"), zoo.state_dict, straight.factors)) == qd.scores(i)


def test_ablations_run_on_the_quick_zoo_and_are_recorded(zoo):
    from workbench.lm.evaluation import StateDictEvaluator

    evaluate = StateDictEvaluator(zoo.model("base", device="cpu"), zoo.tokenizer(), ["add", "sort"], n=16,
                                  device="cpu")
    loop = zoo_loop(zoo, evaluate, seed=2, sampling="uniform", mutation="gaussian")
    loop.run(until=4)
    qd = loop.qd
    assert qd.config.to_dict()["sampling"] == "uniform" and qd.config.mutation_scale == 3e-4
    assert "ablation" in qd.config.method
    children = qd.records[2:]
    assert len(children) == 4 and all(r["mutation"] == "gaussian" for r in children)
    # Gaussian noise reaches the norm weights, which SVD mutation never changes
    child = qd.child(2)
    parents = [zoo.state_dict("add") if p == 0 else zoo.state_dict("sort") for p in child.parents]
    base = zoo.state_dict("base")
    built = build_child(child, base, parents)
    merged = crossover(base, parents, child.omegas)
    k = "model.norm.weight"
    assert 0 < (built[k] - merged[k]).abs().max() < 3e-3
    svd_child = dataclasses.replace(child, mutation="svd", mutation_scale=0.1)
    assert build_child(svd_child, base, parents, loop.factors[child.task])[k].equal(merged[k])


def test_a_run_mutates_each_child_by_the_seed_expert_of_its_quality_task(quick_zoo):
    """Spec §2 step 3 where a qd run builds its children (workbench.qd.run.Context, not the test loop above): the SVD
    mutation of a child of generation g uses the task vector of the seed expert of q = tasks[g mod K], whatever
    its parents; the expected weights are written out from the operators, independently of Context's factors."""
    from workbench.lm.zoo import load_zoo
    from workbench.qd.cycle import Child
    from workbench.qd.operators import svd_eligible
    from workbench.qd.run import Context, QDRunConfig
    from workbench.threads import torch_threads

    cfg = QDRunConfig(zoo=str(quick_zoo), tasks=["add", "sort"], n_eval=1, n_test=1, mutation_scale=0.5)
    ctx = Context(cfg)
    zoo = load_zoo(quick_zoo)
    base, seeds = zoo.state_dict("base"), {t: zoo.state_dict(t) for t in cfg.tasks}
    parents = [seeds["add"], seeds["sort"]]
    with torch_threads(cfg.threads):
        for g in (1, 2):   # q = tasks[g mod 2]: sort, then add; the same two parents each time
            q = cfg.tasks[g % 2]
            child = Child(id=1 + g, generation=g, task=q, parents=(0, 1), omegas=(1.01, 0.98), mutation="svd",
                          mutation_seed=7, mutation_scale=0.5)
            built = ctx.build(child, {0: parents[0], 1: parents[1]})
            merged = crossover(base, parents, child.omegas)
            names = [n for n, t in merged.items() if svd_eligible(n, t)]
            factors = {t: svd_factors(task_vector(seeds[t], base)) for t in cfg.tasks}
            want = {t: svd_mutate(merged, f, svd_draws(f, 7, 0.5, names)) for t, f in factors.items()}
            other = cfg.tasks[(g + 1) % 2]
            for name in names:
                assert torch.allclose(built[name], want[q][name], rtol=0, atol=1e-6), (g, name)
            assert max((want[q][n] - want[other][n]).abs().max() for n in names) > 1e-3  # the test tells them apart


# --- the reference's archive maps ----------------------------------------------------------------------------------


def test_archive_map_round_trip(tmp_path):
    loop = toy_loop(seed=4)
    loop.run(until=12)
    qd = loop.qd
    data = qd.archive_map()
    assert list(data) == TASKS3
    for task in TASKS3:
        for key, value in data[task].items():
            assert list(value) == ["quality", "model_path", "sampling_freq", "validation_quality"]
            i, j = (int(x) for x in key.split(","))
            assert key == f"{i},{j}" and value["validation_quality"] is None
    path = write_archive_map(tmp_path / "gen12_archive_map.json", data)
    assert json.loads(path.read_text()) == data
    entries = read_archive_map(path, tasks=TASKS3, bins=15)
    archives, paths = archives_from_map(entries, qd.config.ranges, 15)
    counts = qd.draw_counts()
    for task in TASKS3:
        ids, quality = qd.archives.grid(task)
        ids2, quality2 = archives.grid(task)
        assert np.array_equal(quality, quality2, equal_nan=True)
        filled = ids >= 0
        assert [paths[i] for i in ids2[filled]] == [qd.model_path(i) for i in ids[filled]]
        for cell in zip(*np.nonzero(filled), strict=True):
            entry = entries[task][tuple(int(c) for c in cell)]
            assert entry.sampling_freq == 1 + counts[ids[cell], TASKS3.index(task)]
    assert qd.model_path(0) == "sort" and qd.model_path(10) == "models/gen_8"
    assert qd.archive_map(generation=0) != data and len(qd.archive_map(generation=0)["sort"]) <= 3


def test_latest_archive_map_is_the_highest_generation_by_number(tmp_path):
    """The reference restarts from its highest generation's map: gen10 after gen9 (by number, not by name), other
    files ignored; a folder without one is one clear error."""
    from workbench.qd import latest_archive_map

    with pytest.raises(ArchiveMapError, match="holds no gen{N}_archive_map.json file"):
        latest_archive_map(tmp_path)
    for name in ("gen2_archive_map.json", "gen10_archive_map.json", "gen9_archive_map.json", "gen11_notes.json"):
        (tmp_path / name).write_text("{}")
    assert latest_archive_map(tmp_path) == (tmp_path / "gen10_archive_map.json", 10)


def test_archive_map_reads_a_file_as_the_reference_writes_it(tmp_path):
    # utils/helpers.py::save_archive_map after generation 0 with the reference's seeds (K = 3, json indent 4)
    seed = {"quality": 0.5, "model_path": "SakanaAI/Llama-3-8B-Instruct-OS-Expert", "sampling_freq": 1,
            "validation_quality": None}
    data = {"agentbench_os": {"0,3": seed}, "mbpp": {"11,0": {**seed, "quality": 0.1}},
            "agentbench_db": {"11,3": {**seed, "quality": 0.0, "sampling_freq": 4, "validation_quality": 0.25}}}
    (tmp_path / "gen0_archive_map.json").write_text(json.dumps(data, indent=4))
    entries = read_archive_map(tmp_path / "gen0_archive_map.json")
    assert entries["mbpp"][(11, 0)].quality == 0.1 and entries["agentbench_db"][(11, 3)].validation_quality == 0.25
    archives, paths = archives_from_map(entries)
    assert paths == [seed["model_path"]] and archives.grid("agentbench_os")[0][0, 3] == 0
    assert archives.axes("mbpp") == ["agentbench_os", "agentbench_db"]
    # sampling_freq is a count >= 0 (the error says non-negative): 0 reads as it is
    never = {"agentbench_os": {"0,3": {**seed, "sampling_freq": 0}}, "mbpp": {}, "agentbench_db": {}}
    (tmp_path / "gen1_archive_map.json").write_text(json.dumps(never))
    assert read_archive_map(tmp_path / "gen1_archive_map.json")["agentbench_os"][(0, 3)].sampling_freq == 0


@pytest.mark.parametrize("text, match", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "top level is a list"),
    ('{"sort": {}}', "holds 1 task"),
    ('{"sort": {"0": 1}, "add": {}}', "cell '0' is a int"),
    ('{"sort": {"0,1": {"quality": 1, "model_path": "m", "sampling_freq": 1, "validation_quality": null}},'
     ' "add": {}}', "2 indices"),
    ('{"sort": {"(0,)": {}}, "add": {}}', "cell key '\\(0,\\)'"),
    ('{"sort": {"0": {"quality": 1, "model_path": "m", "sampling_freq": 1}}, "add": {}}', "expected exactly"),
    ('{"sort": {"0": {"quality": "high", "model_path": "m", "sampling_freq": 1, "validation_quality": null}},'
     ' "add": {}}', "quality must be a finite number"),
    ('{"sort": {"0": {"quality": 1, "model_path": "m", "sampling_freq": -2, "validation_quality": null}},'
     ' "add": {}}', "sampling_freq must be"),
    ('{"sort": {"99": {"quality": 1, "model_path": "m", "sampling_freq": 1, "validation_quality": null}},'
     ' "add": {}}', "out of range for 15 bins"),
    # the last bin is 14: index 15 is one past it; a boolean is no validation score (JSON true is not 1)
    ('{"sort": {"15": {"quality": 1, "model_path": "m", "sampling_freq": 1, "validation_quality": null}},'
     ' "add": {}}', "bin index 15 is out of range for 15 bins"),
    ('{"sort": {"0": {"quality": 1, "model_path": "m", "sampling_freq": 1, "validation_quality": true}},'
     ' "add": {}}', "validation_quality must be a number or null, got True"),
])
def test_a_corrupt_or_foreign_archive_map_is_one_clear_error(tmp_path, text, match):
    path = tmp_path / "gen3_archive_map.json"
    path.write_text(text)
    with pytest.raises(ArchiveMapError, match=match) as error:
        read_archive_map(path, bins=15)
    assert str(path) in str(error.value) and isinstance(error.value, ValueError)
