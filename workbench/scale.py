"""Dask scale-out: a LocalCluster on this machine or a client to an existing scheduler.

Populations are cut into fixed chunks (EvalConfig.chunk) that run as tasks; each worker builds the
substrate and foundation model once and keeps them. Dask re-runs the tasks of a worker that dies, and
since a chunk's result does not depend on where it runs, the run goes on unchanged.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def local_client(workers: int, threads_per_worker: int = 1):
    """A client of a new LocalCluster with `workers` single-threaded worker processes.

    The workers are ours alone, and what goes wrong on them reaches the client as an exception (a task's error,
    KilledWorker), so their logs stay quiet; each runs `dask_setup` (this module, as Dask's worker preload).

    A Ctrl-C at a terminal reaches every process of the command, the workers too, which would print
    KeyboardInterrupt tracebacks (and, while they start, leave the cluster half-made) while the command, which owns
    them, stops the run and closes the cluster. So the workers ignore SIGINT from their first instruction: Python
    keeps an ignored SIGINT ignored in a process it starts, and the worker processes are started while this one
    ignores it (a Ctrl-C in the second or two that the workers take to start is not seen). `dask_setup` does the
    same for a worker the nanny restarts later."""
    import signal
    import threading

    import dask
    from dask.distributed import Client, LocalCluster

    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    main = threading.current_thread() is threading.main_thread()  # only its handlers can be set
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        # no dashboard; the scheduler's HTTP routes (metrics, health) on a free port: Dask's default, 8787, said
        # "Port 8787 is already in use" on stderr whenever another cluster or program held it
        cluster = LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker, processes=True,
                               dashboard_address=None, scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                               silence_logs=logging.CRITICAL,
                               preload=[*dask.config.get("distributed.worker.preload", []), __name__])
    finally:
        if main and previous is not None:  # None: a handler not set from Python, which cannot be put back
            signal.signal(signal.SIGINT, previous)
    return Client(cluster)


def dask_setup(worker) -> None:
    """Run by Dask in each worker process of `local_client` as it starts (the preload hook): SIGINT is left to the
    command (see `local_client`), and the worker's logs go quiet: as the cluster closes, a worker may still send a
    heartbeat to the scheduler that just closed, and would log that as an ERROR with a traceback."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in ("distributed", "tornado", "asyncio"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def close(client) -> None:
    """Close `client` and, for one of `local_client`, its LocalCluster: workers first, then the scheduler. A
    `Client(cluster)` leaves its cluster to Dask's finalisers at exit, which could stop the scheduler while a worker
    still sent it heartbeats (an ERROR with a traceback on stderr).

    A Ctrl-C mid-gather leaves Dask's asyncio tasks with an AllExit that asyncio would log, tracebacks and all, as
    the client closes and they are collected: what was running is stopped already, so asyncio stays quiet from
    here on (in this process)."""
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    cluster = client.cluster  # None for a client of a scheduler reached by address
    client.close()
    if cluster is not None:
        cluster.close()


def _identity(address: str, timeout: float) -> dict:
    """What answers at `address` says it is (Dask's identity message), all of it within `timeout` seconds: Client's
    own timeout covers the connection alone, and the handshake after it waited for ever on a port that accepts and
    does not answer (a scheduler's dashboard port, an HTTP server); text that answers was read as a message's
    length (an allocation of 3 EiB)."""
    import asyncio

    from distributed.comm import connect as comm_connect

    async def ask() -> dict:
        comm = await comm_connect(address, timeout=timeout)
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    return asyncio.run(asyncio.wait_for(ask(), timeout))


def _loop_running() -> bool:
    """Whether an asyncio loop runs in this thread (asyncio.run cannot run there)."""
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def connect(address: str, timeout: float = 10.0):
    """A client of the scheduler at `address` (tcp://HOST:PORT), or one ValueError naming --dask within `timeout`
    seconds: no address, one Dask cannot parse, nothing there, or something there that is no Dask scheduler."""
    from dask.distributed import Client

    fix = "start one with `dask scheduler` (its address, port 8786 by default) or use --workers N for a local cluster"
    if not address or not address.strip():  # "$SCHED" unset: a serial run said nothing
        raise ValueError(f"--dask needs a scheduler's address, e.g. --dask tcp://127.0.0.1:8786; {fix}")
    if not _loop_running():  # a notebook's or a server's loop runs in this thread: no probe of our own there
        try:
            info = _identity(address, timeout)
        except (Exception, MemoryError) as exc:  # noqa: BLE001 - whatever answered (or did not), one error
            why = "no answer" if isinstance(exc, (TimeoutError, OSError)) else f"{type(exc).__name__}: {exc}"
            raise ValueError(f"--dask {address}: no Dask scheduler answers there ({str(why)[:160]}); {fix}") from None
        if not isinstance(info, dict) or info.get("type") != "Scheduler":
            kind = info.get("type") if isinstance(info, dict) else None
            raise ValueError(f"--dask {address}: {f'a Dask {kind}' if kind else 'what answers there'} is no Dask "
                             f"scheduler; {fix}")
    try:
        client = Client(address, timeout=timeout)
    except OSError as exc:
        raise ValueError(f"--dask {address}: cannot reach a Dask scheduler there ({exc}); {fix}") from None
    # a scheduler lost under a run reaches the command as an exception, said in one line: not also as the client's
    # ERROR log lines and tracebacks
    logging.getLogger("distributed.client").setLevel(logging.CRITICAL)
    return client


# --- what a process makes once per config ---------------------------------------------------------------------

#: configs whose made objects a process keeps (a Context holds its models: two per maker, as each kept before)
KEPT_PER_MAKER = 2
_made: OrderedDict[tuple[Callable, str], Any] = OrderedDict()
_made_lock = threading.Lock()
_making: dict[tuple[Callable, str], threading.Lock] = {}  # a lock per (maker, key) being made: made once


def made_once(make: Callable[[Any], T], cfg: Any, key: Mapping | None = None) -> T:
    """make(cfg), made once per process for configs that are equal (the last KEPT_PER_MAKER of each `make` kept):
    a Dask worker's evaluation Context (its models, tokenizer, evaluators) is built on its first task and reused
    by the next ones. Configs are equal when their `key` is (default cfg.to_dict(), compared as sorted JSON;
    leave out of it what does not change what `make` builds). Threads asking for one config at once wait for one
    make (a worker with several threads built a Context each); other configs and makers need not wait."""
    text = json.dumps(cfg.to_dict() if key is None else dict(key), sort_keys=True, default=str)
    k = (make, text)
    with _made_lock:
        if k in _made:
            _made.move_to_end(k)
            return _made[k]
        making = _making.setdefault(k, threading.Lock())
    with making:  # outside the global lock: a Context takes seconds
        with _made_lock:
            if k in _made:  # made by the thread this one waited for
                _made.move_to_end(k)
                return _made[k]
        try:
            made = make(cfg)
            with _made_lock:  # kept before it stops being made: a newcomer finds it either way
                _made[k] = made
                mine = [m for m in _made if m[0] is make]
                for old in mine[:-KEPT_PER_MAKER]:
                    del _made[old]
        finally:  # made or failed (then the next call makes it again)
            with _made_lock:
                if _making.get(k) is making:
                    del _making[k]
    return made
