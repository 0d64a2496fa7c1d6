"""Dask scale-out on a real LocalCluster of 2 workers: same results as local, survives a killed worker."""

import os
import signal
import threading
import time

import numpy as np
import pytest

from workbench.asal.driver import SearchConfig, run_search
from workbench.asal.evaluate import EvalConfig
from workbench.runs import RunStore
from workbench.scale import local_client


def _config():
    return SearchConfig(kind="openended", eval=EvalConfig("boids", "pixels", steps=30, frames=3, chunk=2),
                        iters=4, pop=6, seed=2)


def _losses(run):
    return [(m["loss_min"], m["loss_mean"]) for m in run.read_table("metrics").to_pylist()]


@pytest.fixture(scope="module")
def client():
    c = local_client(2)
    yield c
    c.close()
    c.cluster.close()


def test_cluster_results_equal_local_ones(tmp_path, client):
    local = run_search(_config(), RunStore(tmp_path / "local"))
    remote = run_search(_config(), RunStore(tmp_path / "dask"), client=client)
    assert len(client.scheduler_info()["workers"]) == 2
    assert _losses(local) == _losses(remote)
    np.testing.assert_array_equal(np.load(local.path / "best.npy"), np.load(remote.path / "best.npy"))
    # an illumination: each child's own initial-state seeds travel with its chunk
    atlas = lambda: SearchConfig(kind="illuminate", eval=EvalConfig("boids", "pixels", steps=20, chunk=2),  # noqa: E731
                                 iters=2, pop=5, population=6, seed=2)
    local, remote = (run_search(atlas(), RunStore(tmp_path / f"atlas-{where}"), client=c)
                     for where, c in (("local", None), ("dask", client)))
    assert _losses(local) == _losses(remote)
    np.testing.assert_array_equal(np.load(local.path / "thumbs.npy"), np.load(remote.path / "thumbs.npy"))


def test_a_worker_killed_mid_iteration_is_retried(tmp_path, client):
    cfg = lambda: SearchConfig(kind="openended", iters=4, pop=6, seed=3,  # noqa: E731
                               eval=EvalConfig("boids", "pixels", steps=300, frames=3, chunk=1))
    local = run_search(cfg(), RunStore(tmp_path / "local"))
    address, pid = next(iter(client.run(os.getpid).items()))
    killed = threading.Event()

    def kill_when_busy():
        # wait until the worker is running one of iteration 3's tasks, then kill its process
        deadline = time.time() + 60
        while time.time() < deadline and not client.processing().get(address):
            time.sleep(0.005)
        if client.processing().get(address):
            os.kill(pid, signal.SIGKILL)
            killed.set()

    def on_iteration(done, total, row):
        if done == 2:
            threading.Thread(target=kill_when_busy, daemon=True).start()

    remote = run_search(cfg(), RunStore(tmp_path / "dask"), client=client, on_iteration=on_iteration)
    assert killed.is_set(), "the worker was never seen busy: the test did not kill mid-iteration"
    assert remote.info["status"] == "done"
    assert _losses(local) == _losses(remote)


def test_dask_names_what_answers_at_its_address(capsys):
    """--dask at a port that accepts and never answers (a scheduler's dashboard port, an HTTP server) waited for
    ever, Dask's handshake having no timeout; an empty address ran serially without a word; a scheduler without
    workers waited in silence. Each is said now, naming --dask."""
    import argparse
    import socket

    from distributed import LocalCluster

    from workbench.cli.common import close_client, dask_client
    from workbench.scale import connect

    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (the backlog), answers nothing
        address = f"tcp://127.0.0.1:{silent.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(ValueError, match=f"--dask {address}: no Dask scheduler answers there"):
            connect(address, timeout=2.0)
        assert time.monotonic() - start < 30
    for bad, message in (("", "--dask needs a scheduler's address"), ("nonsense", "--dask nonsense: ")):
        with pytest.raises(ValueError, match=message):
            connect(bad, timeout=2.0)
    with LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster:
        client = dask_client(argparse.Namespace(workers=None, dask=cluster.scheduler_address))
        try:
            assert "has no workers yet: the run waits for one" in capsys.readouterr().err
        finally:
            close_client(client)


def test_a_lost_scheduler_is_one_error_and_the_run_resumable(tmp_path):
    """The --dask scheduler gone under a run: 76 lines of client logs and tracebacks. One error line now, and the
    note that the run is marked failed and how to resume it."""
    import subprocess
    import sys

    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=50)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "workbench", "asal", "openended", "--substrate", "boids",
                                 "--fm", "pixels", "--iters", "500", "--pop", "4", "--steps", "16", "--frames", "2",
                                 "--runs", "runs", "--quiet", "--dask", cluster.scheduler_address], cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and not list(tmp_path.glob("runs/*/metrics.parquet")):
            time.sleep(0.1)
    finally:
        cluster.close()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: Dask: the cluster was lost under the run"), err
    assert lines[1].startswith("note: run ") and "--resume" in lines[1], err


def test_made_once_per_process_and_config():
    """A worker's evaluation Context is made on its first task and reused by the next ones: once per equal config
    (compared by its to_dict, or the key given), the last two of each maker kept."""
    from dataclasses import asdict, dataclass

    from workbench.scale import KEPT_PER_MAKER, made_once

    @dataclass
    class Cfg:
        n: int
        tasks: list
        note: str = ""

        def to_dict(self) -> dict:
            return asdict(self)

    made: list[Cfg] = []

    def make(cfg: Cfg) -> object:
        made.append(cfg)
        return object()

    def other(cfg: Cfg) -> object:
        return object()

    a = made_once(make, Cfg(1, ["x"]))
    assert made_once(make, Cfg(1, ["x"])) is a and len(made) == 1  # an equal config: the same object
    assert made_once(other, Cfg(1, ["x"])) is not a                  # each maker its own
    b = made_once(make, Cfg(1, ["x", "y"]))
    assert b is not a and len(made) == 2
    assert made_once(make, Cfg(1, ["x"], note="a"), key={"n": 1, "tasks": ["x"]}) is not a  # another key
    # a third config made: the least recently used (a) was let go, and made again, b in its turn
    assert KEPT_PER_MAKER == 2 and made_once(make, Cfg(1, ["x"])) is not a and len(made) == 4
    assert made_once(make, Cfg(1, ["x", "y"])) is not b and len(made) == 5


def test_made_once_makes_one_for_threads_that_ask_at_once():
    """Threads of one worker asking for one config together wait for one make (each built a Context of its own,
    all but one thrown away: their models held N times over meanwhile); a failed make is made again next time."""
    import threading
    import time

    from workbench.scale import made_once

    class Cfg:
        def __init__(self, n: int, fail: bool = False):
            self.n, self.fail = n, fail

        def to_dict(self) -> dict:
            return {"n": self.n}

    made: list[int] = []

    def make(cfg: Cfg) -> object:
        made.append(cfg.n)
        time.sleep(0.2)
        if cfg.fail:
            raise RuntimeError("no model")
        return object()

    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(made_once(make, Cfg(1)))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert made == [1] and len(got) == 4 and len({id(g) for g in got}) == 1
    with pytest.raises(RuntimeError, match="no model"):
        made_once(make, Cfg(2, fail=True))
    assert made_once(make, Cfg(2)) is not None and made == [1, 2, 2]


def test_made_once_keeps_the_last_used_of_each_maker_by_its_sorted_key():
    """The configs kept are the maker's most recently USED (a hit counts), each maker's apart from the others', and
    keys are compared whatever their order; a local cluster of no workers is refused before anything starts."""
    from workbench.scale import made_once

    class Cfg:
        def __init__(self, n: int):
            self.n = n

        def to_dict(self) -> dict:
            return {"n": self.n, "of": "cfg"}

    made: list[int] = []

    def make(cfg: Cfg) -> object:
        made.append(cfg.n)
        return object()

    def other(cfg: Cfg) -> object:
        return object()

    kept = made_once(other, Cfg(0))
    a, _ = made_once(make, Cfg(1)), made_once(make, Cfg(2))
    assert made_once(make, Cfg(1)) is a  # used again: now the most recent
    made_once(make, Cfg(3))  # lets 2 go, not 1
    assert made_once(make, Cfg(1)) is a and made == [1, 2, 3]
    assert made_once(other, Cfg(0)) is kept  # another maker's, untouched by make's
    assert made_once(make, Cfg(9), key={"b": 2, "a": 1}) is made_once(make, Cfg(8), key={"a": 1, "b": 2})
    with pytest.raises(ValueError, match="--workers must be at least 1, got 0"):
        local_client(0)
