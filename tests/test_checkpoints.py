"""Checkpoints without pickle: the JSON + npz codec, corrupt and foreign checkpoints, and old pickle
checkpoints, which are refused (a planted malicious one must not run) unless the user trusts the folder."""

import json
import pickle

import numpy as np
import pytest
from forked import cli as _short

from workbench.asal.driver import SearchConfig, run_search
from workbench.asal.evaluate import EvalConfig
from workbench.checkpoint import CheckpointError, cmaes_from_state, cmaes_state, pack, unpack
from workbench.runs import RunError, RunStore


def _roundtrip(tree):
    packed, arrays = pack(tree)
    return unpack(json.loads(json.dumps(packed, allow_nan=False)), arrays)  # strict JSON: no NaN / Infinity


def test_pack_and_unpack_keep_every_value_and_type():
    state = np.random.RandomState(3).get_state(legacy=False)
    tree = {"i": 7, "big": 2 ** 127 + 1, "f": 0.1 + 0.2, "inf": float("inf"), "ninf": -float("inf"),
            "t": True, "none": None, "s": "θ", "list": [1, [2.5, "x"]], "tuple": (1, (2, 3)),
            "f64": np.float64(1 / 3), "i32": np.int32(-5), "b": np.bool_(True), "zero_d": np.asarray(2.0),
            "arrays": [np.arange(6, dtype=np.uint8).reshape(2, 3), np.empty((0, 4)), np.array([np.nan, -0.0])],
            "nested": {"rng": state}}
    back = _roundtrip(tree)
    assert back["big"] == tree["big"] and back["f"] == tree["f"] and back["inf"] == float("inf")
    assert back["tuple"] == (1, (2, 3)) and back["list"] == [1, [2.5, "x"]] and back["s"] == "θ"
    for key in ("f64", "i32", "b"):
        assert type(back[key]) is type(tree[key]) and back[key] == tree[key]
    assert isinstance(back["zero_d"], np.ndarray) and back["zero_d"].shape == ()
    for a, b in zip(tree["arrays"], back["arrays"], strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()  # -0.0 and nan bits too
    assert np.isnan(_roundtrip(float("nan")))
    rng = np.random.RandomState()
    rng.set_state(back["nested"]["rng"])
    np.testing.assert_array_equal(rng.standard_normal(5), np.random.RandomState(3).standard_normal(5))


def test_rows_of_plain_values_keep_each_value_and_type():
    """Lists and dicts of plain values are written on a fast path (a run's per-iteration rows): a NumPy scalar,
    a non-finite float, a bool, an int subclass or a tuple among them still comes back as itself."""
    import enum

    class Colour(enum.IntEnum):
        RED = 3

    rows = [{"it": 0, "loss": 0.5, "name": "a", "ok": True, "none": None},
            {"it": 1, "loss": np.float64(0.25), "name": "b", "ok": np.bool_(False), "none": (1, 2)},
            {"it": Colour.RED, "loss": float("nan"), "name": "c", "ok": False, "none": [float("-inf"), np.int8(4)]}]
    back = _roundtrip(rows)
    assert [list(r) for r in back] == [list(r) for r in rows]
    for got, want in zip(back, rows, strict=True):
        for key in want:
            a, b = got[key], want[key]
            assert type(a) is (int if type(b) is Colour else type(b))
            assert repr(a) == repr(b) or (a == b if type(b) is not float else np.isnan(a))
    assert back[2]["none"][0] == float("-inf") and type(back[2]["none"][1]) is np.int8
    assert back[1]["none"] == (1, 2)
    for bad in ([{"a": 1}, {"$a": 1}], [{"a": 1}, {"a": 1, 2: 3}], [{"a": {"b": 1}}, {"a": {"$b": 1}}]):
        with pytest.raises(CheckpointError, match="keys must be strings"):
            pack(bad)


def test_only_plain_values_and_registered_types_go_in_or_come_out():
    with pytest.raises(CheckpointError, match="register it"):
        pack({"x": object()})
    with pytest.raises(CheckpointError, match="keys must be strings"):
        pack({"x": {1: 2}})
    with pytest.raises(CheckpointError, match="keys must be strings"):
        pack({"$array": "a0"})
    with pytest.raises(CheckpointError, match="object arrays"):
        pack(np.array([object()]))
    # a checkpoint cannot name an arbitrary type: unpacking looks names up in the registry, never imports
    with pytest.raises(CheckpointError, match="unknown type 'os.system'"):
        unpack({"$object": "os.system", "state": "touch marker"}, {})
    with pytest.raises(CheckpointError, match="does not hold"):
        unpack({"$array": "a9"}, {})


def test_cmaes_state_is_exact_and_checks_the_version():
    from cmaes import CMA

    opt = CMA(mean=np.full(4, 0.5), sigma=0.2, bounds=np.array([[0.0, 1.0]] * 4), seed=1)
    for _ in range(3):
        xs = [opt.ask() for _ in range(opt.population_size)]
        opt.tell([(x, float(np.sum((x - 0.3) ** 2))) for x in xs])
    state = cmaes_state(opt)
    clone = cmaes_from_state(_roundtrip(state))
    np.testing.assert_array_equal(np.stack([opt.ask() for _ in range(8)]), np.stack([clone.ask() for _ in range(8)]))
    older = {**state, "cmaes": "0.0.1"}  # another version with the same attributes: fine
    cmaes_from_state(older)
    older["attrs"] = {k: v for k, v in state["attrs"].items() if k != "_funhist_values"}
    with pytest.raises(CheckpointError, match=r"install cmaes==0\.0\.1"):
        cmaes_from_state(older)


def _illumination(iters: int) -> SearchConfig:
    return SearchConfig(kind="illuminate", eval=EvalConfig("boids", "pixels", steps=10, size=32), iters=iters, pop=4,
                        population=8, seed=2)


def _stopped_after(store: RunStore, cfg: SearchConfig, n: int):
    calls = iter([False] * n + [True])
    run = run_search(cfg, store, should_stop=lambda: next(calls))
    assert run.status == "stopped" and run.info["iterations"] == n
    return run


def test_a_corrupt_checkpoint_is_one_clear_error(tmp_path):
    store = RunStore(tmp_path)
    run = _stopped_after(store, _illumination(3), 1)
    (npz,) = run.path.glob("checkpoint-*.npz")
    data = bytearray(npz.read_bytes())
    data[-1] ^= 1
    npz.write_bytes(bytes(data))
    with pytest.raises(RunError, match="checkpoint of run .* is corrupt .*sha256"):
        run_search(None, store, resume=run.id)
    npz.unlink()
    with pytest.raises(RunError, match="is corrupt .*FileNotFoundError"):
        run_search(None, store, resume=run.id)


class Payload:
    """What an attacker plants: unpickling calls open(marker, "w"), which creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_a_planted_pickle_is_refused_and_never_runs(tmp_path):
    store = RunStore(tmp_path / "runs")
    run = _stopped_after(store, _illumination(3), 1)
    for path in run.path.glob("checkpoint*"):
        path.unlink()
    marker = tmp_path / "pwned"
    (run.path / "checkpoint.pkl").write_bytes(pickle.dumps({"iteration": 1, "x": Payload(marker)}))

    # the CLI, in its own process: one line naming the flag, nothing printed on stdout, nothing run
    proc = _short("asal", "illuminate", "--resume", run.id, "--runs", "runs", "--quiet", cwd=tmp_path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "--trust-pickle" in err and "checkpoint.pkl" in err, err
    # the library
    with pytest.raises(RunError, match=r"--trust-pickle \(Python: trust_pickle=True\)"):
        run_search(None, store, resume=run.id)
    # the Search page's resume (it resumes through run_search, which reads the checkpoint)
    from workbench.dashboards.search import SearchModel

    page = SearchModel(runs_dir=str(store.root))
    page.choose(run.id)  # opening it reads run.json, metrics and best frame: nothing of the checkpoint
    assert page.resumable and not marker.exists()
    page.resume()
    # refused before it began: the run is as it was (stopped), shown with why; resume still on offer
    assert page.wait(timeout=120) == "stopped" and "--trust-pickle" in page.error
    assert page.run_id == run.id and page.resumable
    assert not marker.exists()
    assert store.open(run.id).info["iterations"] == 1 and (run.path / "checkpoint.pkl").exists()
    # a kind whose command has no --trust-pickle (its runs never wrote a pickle) is not told to give it
    import json
    import shutil

    shutil.copytree(run.path, store.root / "as-qd")
    info = json.loads((store.root / "as-qd" / "run.json").read_text())
    (store.root / "as-qd" / "run.json").write_text(json.dumps({**info, "kind": "qd"}))
    with pytest.raises(RunError, match=r"with trust_pickle=True in Python \(its command has no --trust-pickle"):
        store.open("as-qd").load_checkpoint()
    shutil.rmtree(store.root / "as-qd")

    # trusted: unpickled as before (here the payload runs, and is then rejected as no checkpoint)
    with pytest.raises(RunError, match="not a workbench checkpoint"):
        run_search(None, store, resume=run.id, trust_pickle=True)
    assert marker.exists()


def test_a_trusted_old_pickle_checkpoint_resumes_exactly_and_is_converted(tmp_path):
    """A run of an older version (checkpoint.pkl with the search object and the thumbnails keyed by θ bytes)
    resumes with trust_pickle=True exactly as an uninterrupted run, and is then stored as JSON + npz."""
    store = RunStore(tmp_path)
    whole = run_search(_illumination(3), store)
    old = _stopped_after(store, _illumination(3), 2)
    state = old.load_checkpoint()
    thumbs = state.pop("thumbs")
    state["thumbs"] = {t.tobytes(): image for t, image in zip(thumbs["thetas"], thumbs["images"], strict=True)}
    state["best_thumb"] = None
    for path in old.path.glob("checkpoint*"):
        path.unlink()
    (old.path / "checkpoint.pkl").write_bytes(pickle.dumps(state, protocol=5))

    with pytest.raises(RunError, match="trust_pickle=True"):
        run_search(None, store, resume=old.id)
    done = run_search(None, store, resume=old.id, trust_pickle=True)
    assert done.status == "done"
    names = {p.name for p in done.path.iterdir()}
    assert "checkpoint.pkl" not in names and "checkpoint.json" in names
    metrics = lambda r: [(m["loss_min"], m["loss_mean"]) for m in r.read_table("metrics").to_pylist()]  # noqa: E731
    assert metrics(done) == metrics(whole)
    table = lambda r: r.read_table("population").to_pydict()  # noqa: E731
    a, b = table(whole), table(done)
    assert (a["theta"], a["embedding"]) == (b["theta"], b["embedding"])
    # the old checkpoint kept no seeds: its members say −1 (unknown), the later ones theirs
    assert all(s == t or t == -1 for s, t in zip(a["seed"], b["seed"], strict=True)) and min(a["seed"]) >= 0
    np.testing.assert_array_equal(np.load(whole.path / "thumbs.npy"), np.load(done.path / "thumbs.npy"))


def test_what_runs_write_is_the_same_bytes_in_every_process(tmp_path):
    """Byte-identical files for identical runs: cmaes' function history was np.empty (a checkpoint held leftover
    heap memory, other bytes in each process), and safetensors writes its header's keys in hash order (an expert's
    file hash, which experts adapt records, changed from run to run)."""
    import hashlib
    import subprocess
    import sys

    code = ("import sys, numpy as np, torch\n"
            "from workbench.asal.search import SepCMAESSearch\n"
            "from workbench.atomic import save_safetensors\n"
            "from workbench.merge.search import RecipeCMA\n"
            "from workbench.namm.train import NAMMTrainConfig, new_search\n"
            "from workbench.checkpoint import pack\n"
            "search = SepCMAESSearch(193, population=6, seed=5)\n"
            "recipe = RecipeCMA(np.zeros(3), np.array([[-1.0, 1.0]] * 3), population=4, steps=np.array([0, 0, 1.0]))\n"
            "namm = new_search(NAMMTrainConfig(pop=4))\n"
            "tree, arrays = pack({'a': search, 'b': recipe, 'c': namm.__dict__['_funhist_values']})\n"
            "np.savez(sys.argv[1] + '.npz', **arrays)\n"
            "save_safetensors({'p': torch.ones(3)}, sys.argv[1] + '.safetensors', "
            "{k: str(i) for i, k in enumerate('abcdefgh')})\n")
    digests = []
    for i in range(3):
        out = tmp_path / str(i)
        res = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        digests.append({suffix: hashlib.sha256(out.with_suffix(suffix).read_bytes()).hexdigest()
                        for suffix in (".npz", ".safetensors")})
    assert digests[0] == digests[1] == digests[2]


def test_a_fresh_process_reads_a_checkpoint_of_any_registered_type(tmp_path):
    """Bug: in a fresh process (a notebook reading a Game of Life run) a RuleGA checkpoint was "corrupt (unknown
    type 'asal.RuleGA')" even after importing workbench.asal.search: only the module defining a type registers
    it. The family's modules are imported when a checkpoint names one of its types."""
    import pickle
    import subprocess
    import sys

    from workbench.asal.rules import RuleGA
    from workbench.checkpoint import pack

    tree, arrays = pack({"search": RuleGA(population=4, seed=3)})
    (tmp_path / "tree.pkl").write_bytes(pickle.dumps((tree, arrays)))
    code = ("import pickle, sys; from workbench.checkpoint import unpack; "
            "tree, arrays = pickle.loads(open(sys.argv[1], 'rb').read()); "
            "print(type(unpack(tree, arrays)['search']).__name__)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "tree.pkl")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "RuleGA", out.stderr


def test_a_checkpoint_reads_back_only_the_tags_pack_writes():
    """A planted or damaged tree: a "$float" other than inf / -inf / nan, or one that is no number, is one
    CheckpointError; a dict with "$object" and more keys than "state" is a plain dict, no object built from it; a
    generator of a kind NumPy lacks is one CheckpointError."""
    from workbench.checkpoint import rng_from_state

    for bad in ("1.5", "1e400", "x"):
        with pytest.raises(CheckpointError, match="bad float"):
            unpack({"$float": bad}, {})
    assert unpack({"$float": "-inf"}, {}) == float("-inf")
    tree = {"$object": "experts.CEM", "state": {}, "note": 1}
    assert unpack(tree, {}) == tree
    with pytest.raises(CheckpointError, match="unknown bit generator 'Evil'"):
        rng_from_state({"type": "Generator", "state": {"bit_generator": "Evil"}})


def _generation(opt):
    xs = [opt.ask() for _ in range(opt.population_size)]
    opt.tell([(x, float(np.sum((x - 0.3) ** 2))) for x in xs])


def test_a_cmaes_state_is_a_snapshot_and_optimisers_made_from_it_go_on_apart():
    """cmaes_state copies the optimiser's arrays (its tells update the mean and the function history in place);
    cmaes_from_state gives each optimiser copies of the state's: two made from one state go on alike, and the state
    stays as it was taken."""
    from cmaes import CMA

    from workbench.fast_cma import FastCMA

    for cls in (CMA, FastCMA):
        opt = cls(mean=np.full(3, 0.5), sigma=0.2, seed=3)
        _generation(opt)
        state = cmaes_state(opt)
        taken = {k: v.copy() for k, v in state["attrs"].items() if isinstance(v, np.ndarray)}
        _generation(opt)
        a = cmaes_from_state(state)
        _generation(a)
        b = cmaes_from_state(state)
        _generation(b)
        # bit for bit: cmaes' function history starts as np.empty, whose unwritten slots may hold NaN
        assert all(state["attrs"][k].tobytes() == v.tobytes() for k, v in taken.items()), cls
        np.testing.assert_array_equal(a._mean, b._mean)
        np.testing.assert_array_equal(a._C, b._C)


def test_a_cmaes_with_margin_checkpoint_of_another_version_is_compared_with_its_own_structure():
    """A CMAwM state written by another cmaes version is checked against a probe of the same structure: with no
    discrete dimension CMAwM holds no margin attributes, and such a state with exactly its attributes is accepted."""
    from cmaes import CMAwM

    for steps in ([0.0, 0.0, 0.0], [0.0, 1.0, 0.0]):
        opt = CMAwM(mean=np.full(3, 0.5), sigma=0.2, bounds=np.array([[0.0, 2.0]] * 3), steps=np.array(steps), seed=1)
        asked = [opt.ask() for _ in range(opt.population_size)]  # (x to evaluate, x to tell)
        opt.tell([(told, float(np.sum((x - 0.3) ** 2))) for x, told in asked])
        older = {**cmaes_state(opt), "cmaes": "0.0.1"}  # another version, the same attributes: fine
        clone = cmaes_from_state(older)
        np.testing.assert_array_equal(opt.ask()[0], clone.ask()[0])
