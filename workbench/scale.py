"""Dask scale-out: a LocalCluster on this machine or a client to an existing scheduler.

Populations are cut into fixed chunks (EvalConfig.chunk) that run as tasks; each worker builds the
substrate and foundation model once and keeps them. Dask re-runs the tasks of a worker that dies, and
since a chunk's result does not depend on where it runs, the run goes on unchanged.
"""

from __future__ import annotations


def local_client(workers: int, threads_per_worker: int = 1):
    """A client of a new LocalCluster with `workers` single-threaded worker processes."""
    from dask.distributed import Client, LocalCluster

    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    cluster = LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker, processes=True,
                           dashboard_address=None, silence_logs=40)
    return Client(cluster)


def close(client) -> None:
    """Close `client` and, for one of `local_client`, its LocalCluster: workers first, then the scheduler. A
    `Client(cluster)` leaves its cluster to Dask's finalisers at exit, which could stop the scheduler while a worker
    still sent it heartbeats (an ERROR with a traceback on stderr)."""
    cluster = client.cluster  # None for a client of a scheduler reached by address
    client.close()
    if cluster is not None:
        cluster.close()


def connect(address: str, timeout: float = 10.0):
    """A client of the scheduler at `address` (tcp://HOST:PORT)."""
    from dask.distributed import Client

    try:
        return Client(address, timeout=timeout)
    except OSError as exc:
        raise ValueError(f"cannot reach a Dask scheduler at {address!r} ({exc}); start one with "
                         f"`dask scheduler` or use --workers N for a local cluster") from exc
