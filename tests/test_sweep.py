"""`workbench asal sweep --substrate gol`: the reference's rule sweep, ranked by open-endedness, resumable."""

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from procs import cli, kill_after, run_command

from workbench.asal import SweepConfig, run_sweep, scores
from workbench.asal.driver import SearchConfig, iteration_seeds, run_search
from workbench.asal.evaluate import EvalConfig, embed_rollouts
from workbench.asal.rules import RuleGA, RuleIlluminationGA, mutate_rules
from workbench.cli import main
from workbench.runs import RunStore
from workbench.simulations import make_substrate, rule_text
from workbench.simulations import reference_ca as ref_ca

ARGS = ("asal", "sweep", "--substrate", "gol", "--fm", "pixels", "--start", "6148", "--limit", "10", "--batch", "2",
        "--steps", "48", "--frames", "4", "--bs", "2", "--quiet")


def test_sweep_ranks_rules_and_resumes_bit_identical_after_a_kill(tmp_path):
    killed = cli(*ARGS, "--runs", "killed", cwd=tmp_path)
    store = RunStore(tmp_path / "killed")
    row = kill_after(killed, store, 2)
    assert 2 <= row["iterations"] < 5 and row["status"] == "interrupted", "the kill should land mid-run"
    # the same sweep uninterrupted, through the Python API
    cfg = SweepConfig(EvalConfig("gol", "pixels", steps=48, frames=4, bs=2), start=6148, limit=10, batch=2)
    whole = run_sweep(cfg, RunStore(tmp_path / "whole"))
    assert whole.info["status"] == "done" and whole.info["iterations"] == 5
    assert row["resume_command"].startswith("workbench asal sweep --resume")
    resumed = run_command(row["resume_command"] + " --quiet", cwd=tmp_path)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    printed = json.loads(out)

    a, b = whole.path, tmp_path / "killed" / row["id"]
    ranking = pq.read_table(a / "ranking.parquet").to_pydict()
    assert ranking == pq.read_table(b / "ranking.parquet").to_pydict()
    np.testing.assert_array_equal(np.load(a / "z_final.npy"), np.load(b / "z_final.npy"))
    assert sorted(ranking["rule"]) == list(range(6148, 6158))
    assert ranking["open_endedness"] == sorted(ranking["open_endedness"])
    assert printed["status"] == "done" and printed["best_rule"] == ranking["rule"][0]
    assert printed["best_rule_name"] == rule_text(ranking["rule"][0])
    assert {"best.png", "best.mp4", "best.npy", "metrics.parquet"} <= {p.name for p in b.iterdir()}
    assert not list(b.glob("z_final-*.npy"))
    # best.png / best.mp4 show the best rule from the first initial state it was scored from, run.json says which
    assert whole.info["best_seed"] == iteration_seeds(0, 0, 2)[0]
    from workbench.export import export

    gol_sub = make_substrate("gol")
    export(gol_sub, gol_sub.decode([ranking["rule"][0]]), 48, tmp_path / "again.mp4", seed=whole.info["best_seed"],
           size=cfg.eval.size, every=1, final_png=tmp_path / "again.png")
    assert (tmp_path / "again.png").read_bytes() == (a / "best.png").read_bytes()
    resumes = RunStore(tmp_path / "killed").open(row["id"]).info["resumes"]  # recorded as other kinds do
    assert len(resumes) == 1 and resumes[0]["command"].startswith("workbench asal sweep --resume")
    assert resumes[0]["from_iteration"] == row["iterations"]

    # killed in its last step, after the embeddings were merged: while deleting the batches (two left) or while
    # rendering the best rule. The resume finishes it (it had said "0 of 5 embedding batches on disk" for good).
    for left in (2, 0):
        c = tmp_path / f"finishing-{left}" / row["id"]
        shutil.copytree(b, c)
        for name in ("best.png", "best.mp4", "best.npy"):
            (c / name).unlink()
        for it in range(5 - left, 5):
            np.save(c / f"z_final-{it:05d}.npy", np.load(b / "z_final.npy")[2 * it:2 * it + 2])
        RunStore(c.parent).open(row["id"]).update(status="interrupted")
        again = run_sweep(None, RunStore(c.parent), resume=row["id"])
        assert again.info["status"] == "done" and not list(c.glob("z_final-*.npy"))
        np.testing.assert_array_equal(np.load(c / "z_final.npy"), np.load(a / "z_final.npy"))
        np.testing.assert_array_equal(np.load(c / "best.npy"), np.load(a / "best.npy"))
        assert (c / "best.png").read_bytes() == (a / "best.png").read_bytes()

    # Conway's score is L_OE of its own rollouts from the sweep's initial states, whatever batch it was in
    z, _ = embed_rollouts(cfg.eval, np.array([[6152.0]]), iteration_seeds(0, 0, 2))
    conway = ranking["open_endedness"][ranking["rule"].index(6152)]
    assert abs(scores.open_endedness(z).mean() - conway) < 1e-9
    assert rule_text(6152) == "B3/S23"
    # and its grid score is the reference's pixel metric on grids stepped by the NumPy Game of Life
    gol = make_substrate("gol")
    total = 0.0
    for seed in iteration_seeds(0, 0, 2):
        s, grids = gol.state_to_arrays(gol.init(gol.decode([6152]), seed=seed))["state"], []
        for t in range(1, 49):
            s = ref_ca.gol_step(s, 6152)
            if t % 12 == 11:
                grids.append(s.astype(float))
        sim = [[1 - np.abs(a - b).mean() for b in grids[:i]] for i, a in enumerate(grids)]
        total += np.mean([max([0.0, *row]) for row in sim])
    assert abs(total / 2 - ranking["open_endedness_grid"][ranking["rule"].index(6152)]) < 1e-6


def test_sweep_and_searches_refuse_what_does_not_fit(tmp_path, capsys):
    """One error line naming the flag, before a run or a progress bar starts (the CLI's error path, in-process)."""
    runs = str(tmp_path / "runs")
    for args, message in ((["asal", "sweep", "--substrate", "lenia"], "the rule sweep is for --substrate gol"),
                          (["asal", "sweep", "--end", str(2 ** 18 + 1)], "--start and --end"),
                          (["asal", "sweep", "--frames", "1"], "--frames must be at least 2"),
                          (["asal", "illuminate", "--substrate", "gol", "--algorithm", "map-elites", "--fm", "pixels"],
                           "a GA over rules")):
        assert main([*args, "--runs", runs, "--quiet"]) == 2
        err = capsys.readouterr().err
        assert "error:" in err and message in " ".join(err.split()), err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_rule_mutation_flips_bits_and_stays_a_rule():
    rng = np.random.default_rng(0)
    parents = np.array([0, 6152, 2 ** 18 - 1] * 200)
    children = mutate_rules(parents, rng)
    assert np.all(children != parents) and children.min() >= 0 and children.max() < 2 ** 18
    flipped = np.array([bin(int(c) ^ int(p)).count("1") for c, p in zip(children, parents, strict=True)])
    assert 1.2 < flipped.mean() < 1.8  # 18 bits at rate 1/18, at least one: about 1.4


def test_the_rule_ga_keeps_distinct_elites_each_at_its_best_loss():
    """(μ + λ) keeps the best *distinct* rules: copies of one rule told by several children count once (at their
    best loss), so the μ = population / 2 parents are not one rule over and over."""
    ga = RuleGA(population=4, seed=0)
    ga.ask()
    ga.tell(np.array([[6152.0], [6152.0], [6152.0], [6168.0]]), np.array([0.3, 0.1, 0.2, 0.5]))
    assert sorted(ga.elites.tolist()) == [6152, 6168]
    assert ga.elite_losses.tolist() == [0.1, 0.5] and ga.best_loss == 0.1 and ga.best_theta.tolist() == [6152.0]


def test_the_illumination_ga_over_rules_starts_from_rule_0_as_the_reference():
    """asal.md §4: the illumination GA's population starts as copies of θ = 0 (rule 0), and its children are
    bit flips of members: of rule 0 at first."""
    ga = RuleIlluminationGA(population=8, children=4, seed=0)
    first = ga.ask()
    assert first.tolist() == [[0.0]]
    ga.tell(first, None, np.eye(3)[:1])
    assert ga.population()[0].tolist() == [[0.0]] * 8
    children = ga.ask()
    assert children.shape == (4, 1) and (children > 0).all() and (children < 2 ** 18).all()
    assert all(bin(int(c)).count("1") >= 1 for c in children[:, 0])


def test_rule_searches_run_and_resume_exactly(tmp_path):
    ga = RuleGA(population=6, seed=3)
    thetas = ga.ask()
    ga.tell(thetas, np.arange(6.0))
    same = RuleGA.from_state(ga.state_dict())
    np.testing.assert_array_equal(same.ask(), ga.ask())
    assert ga.best_loss == 0.0 and ga.best_theta[0] == thetas[0, 0]
    assert set(ga.elites.tolist()) == set(thetas[:3, 0].astype(int).tolist())
    for kind in ("openended", "illuminate"):
        ev = EvalConfig("gol", "pixels", steps=16, frames=2 if kind != "illuminate" else 1, chunk=8)
        cfg = SearchConfig(kind=kind, eval=ev, iters=2, pop=4, population=6)
        assert cfg.algorithm == "rule-ga"
        run = run_search(cfg, RunStore(tmp_path / "runs"))
        assert run.info["status"] == "done"
        best = np.load(run.path / "best.npy")
        assert best.shape == (1,) and best[0] == int(best[0]) and 0 <= best[0] < 2 ** 18


def test_a_sweep_too_big_for_the_memory_is_refused_naming_the_flag():
    """--batch 10⁷ (every rule in one batch: 5.9 TiB of embeddings) made its run folder and sat for minutes
    before running out of memory: one error naming the flag and the largest value that fits."""
    from workbench.asal.sweep import check_sweep_memory

    free = 8 * 2**30
    big = SweepConfig(EvalConfig("gol", "pixels", steps=64, frames=32, bs=16), batch=10**7)
    with pytest.raises(ValueError, match=r"--batch 10000000: scoring 262144 rules .* give --batch (\d+)") as err:
        check_sweep_memory(big, free=free)
    batch = int(err.value.args[0].rsplit("--batch ", 1)[1].split()[0])
    assert batch >= 1
    check_sweep_memory(SweepConfig(EvalConfig("gol", "pixels", steps=64, frames=32, bs=16), batch=batch), free=free)
    with pytest.raises(ValueError, match=r"--bs 1000000: .* give --bs"):  # not even one rule's initial states
        check_sweep_memory(SweepConfig(EvalConfig("gol", "pixels", steps=64, frames=32, bs=10**6)), free=free)
    # a rollout's frames alone too many: --frames, 2 at least (open-endedness compares frames), else said so
    with pytest.raises(ValueError, match=r"--frames 100000: .* give --frames (\d+) or less") as err:
        check_sweep_memory(SweepConfig(EvalConfig("gol", "pixels", steps=10**5, frames=10**5, bs=1)), free=free)
    frames = int(err.value.args[0].rsplit("--frames ", 1)[1].split()[0])
    assert frames >= 2
    check_sweep_memory(SweepConfig(EvalConfig("gol", "pixels", steps=10**5, frames=frames, bs=1), batch=1), free=free)
    with pytest.raises(ValueError, match=r"MiB are available here, and even --batch 1 --bs 1 --frames 2 would not "
                                         r"fit"):
        check_sweep_memory(SweepConfig(EvalConfig("gol", "pixels", steps=64, frames=32, bs=1)), free=2**16)
    # the final embeddings of every rule, joined at the end: fewer rules
    with pytest.raises(ValueError, match=r"--limit 262144: the final embeddings of 262144 rules .* give --limit"):
        check_sweep_memory(SweepConfig(EvalConfig("gol", "pixels", steps=64, frames=32, bs=16), batch=16), free=2**32)
    check_sweep_memory(SweepConfig(EvalConfig("gol", "pixels", steps=64, frames=32, bs=16), limit=1000, batch=64),
                       free=2**32)


def test_a_sweep_too_big_for_this_machine_is_refused_on_resume(tmp_path):
    from workbench.asal.sweep import KIND
    from workbench.runs import RunError

    store = RunStore(tmp_path)
    cfg = SweepConfig(EvalConfig("gol", "pixels", steps=64, frames=32, bs=16), batch=10**7)
    made = store.create(KIND, "gol", "pixels", cfg.to_dict(), 0)
    made.update(status="stopped")
    with pytest.raises(RunError, match=rf"run {made.id} needs more memory than this machine has free \(--batch "):
        run_sweep(None, store, resume=made.id)


@pytest.mark.parametrize("setting, message", [
    ({"start": 1.5}, "--start and --end must be whole numbers"),  # swept rules 1, 2, … as if start were 1
    ({"start": "3"}, "--start and --end must be whole numbers"),  # a TypeError
    ({"end": True}, "--start and --end must be whole numbers"),
    # a failed run: "slice indices must be integers"
    ({"batch": 2.5}, "--batch must be a whole number of at least 1, got 2.5"),
    ({"limit": "3"}, "--limit must be a whole number of at least 1, got '3'"),  # a TypeError in rules()
])
def test_a_sweep_takes_whole_numbers_of_rules_named_by_their_flags(tmp_path, setting, message):
    ev = EvalConfig("gol", "pixels", steps=8, frames=2, size=32)
    with pytest.raises(ValueError, match=message):
        run_sweep(SweepConfig(ev, **{"end": 8, **setting}), RunStore(tmp_path / "runs"))
    assert not (tmp_path / "runs").exists()
    cfg = SweepConfig(ev, start=np.int64(2), end=np.int64(8), batch=np.int64(2), limit=np.int64(4))
    assert cfg.rules().tolist() == [2, 3, 4, 5] and cfg.iters == 2 and type(cfg.start) is int


def test_the_sweep_flags_given_and_the_defaults_documented_reach_the_run(tmp_path, capsys):
    """`asal sweep --seed 3 --limit 2`: the run sweeps 2 rules from initial states of seed 3, and the flags left
    out take the defaults --help gives (--frames: 32), as run.json records them (--limit ignored swept all of
    6148…6151)."""
    assert main(["asal", "sweep", "--fm", "pixels", "--start", "6148", "--end", "6152", "--limit", "2", "--batch", "2",
                 "--steps", "32", "--size", "32", "--bs", "1", "--seed", "3", "--quiet", "--runs", str(tmp_path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    run = RunStore(tmp_path).open(printed["id"])
    cfg = run.info["config"]
    assert (cfg["seed"], cfg["limit"], cfg["eval"]["frames"]) == (3, 2, 32)
    assert sorted(run.read_table("ranking").column("rule").to_pylist()) == [6148, 6149]
