"""The run store: one folder per run, atomic writes, checkpoints for resume, a DuckDB catalog.

    RUNS/<run-id>/run.json          config, seed, package versions, status, iterations, best loss
                  metrics.parquet   one row per iteration
                  population.parquet θ, loss and embedding of the final population / archive
                  best.npy, best.png, best.mp4, atlas.png
                  checkpoint.pkl    the search object and everything the loop needs to go on

Every file is written through workbench.atomic (a temporary name in the same folder, then a rename), so
a crash leaves either the old or the new file, never half of one.
"""

from __future__ import annotations

import json
import pickle
import platform
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from workbench.atomic import atomic_write, write_png

FORMAT = 1
PACKAGES = ("workbench", "torch", "open-clip-torch", "taichi", "cmaes", "ribs", "duckdb", "numpy")


def write_json(path: Path, data: dict) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(data, indent=2, default=_jsonable)))


def _jsonable(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


class RunError(ValueError):
    """A run folder that is missing, corrupt or not ours."""


class Run:
    """One run folder."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.id = self.path.name

    @property
    def info(self) -> dict:
        try:
            info = json.loads((self.path / "run.json").read_text())
        except FileNotFoundError as exc:
            raise RunError(f"{self.path} is not a workbench run (no run.json)") from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RunError(f"{self.path}/run.json is corrupt ({exc}); the run cannot be read") from exc
        if not isinstance(info, dict) or info.get("format") != FORMAT or "config" not in info:
            raise RunError(f"{self.path}/run.json is not a workbench run record (format {FORMAT})")
        return info

    def update(self, **fields) -> dict:
        info = self.info
        info.update(fields, updated=time.strftime("%Y-%m-%dT%H:%M:%S"))
        write_json(self.path / "run.json", info)
        return info

    def save_checkpoint(self, state: dict) -> None:
        atomic_write(self.path / "checkpoint.pkl", lambda p: p.write_bytes(pickle.dumps(state, protocol=5)))

    def load_checkpoint(self) -> dict | None:
        path = self.path / "checkpoint.pkl"
        if not path.exists():
            return None
        try:
            state = pickle.loads(path.read_bytes())
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt checkpoint
            raise RunError(f"{path} is corrupt ({type(exc).__name__}); start a new run instead of --resume") from exc
        if not isinstance(state, dict) or "iteration" not in state:
            raise RunError(f"{path} is not a workbench checkpoint")
        return state

    def write_table(self, name: str, rows: list[dict] | dict[str, list]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(rows) if isinstance(rows, list) else pa.Table.from_pydict(rows)
        atomic_write(self.path / f"{name}.parquet", lambda p: pq.write_table(table, p))

    def read_table(self, name: str):
        import pyarrow.parquet as pq

        return pq.read_table(self.path / f"{name}.parquet")

    def write_array(self, name: str, array: np.ndarray) -> None:
        def write(p: Path) -> None:
            with open(p, "wb") as f:
                np.save(f, array)

        atomic_write(self.path / name, write)

    def write_png(self, name: str, image: np.ndarray) -> None:
        write_png(self.path / name, image)

    def __repr__(self) -> str:
        return f"Run({self.id!r})"


class RunStore:
    """A folder of runs and the DuckDB catalog over them."""

    def __init__(self, root: str | Path = "runs"):
        self.root = Path(root)

    def create(self, kind: str, substrate: str, fm: str, config: dict, seed: int) -> Run:
        self.root.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = f"{stamp}-{kind}-{substrate}-s{seed}"
        for n in range(1000):
            path = self.root / (base if n == 0 else f"{base}-{n}")
            try:
                path.mkdir()
                break
            except FileExistsError:
                continue
        run = Run(path)
        write_json(path / "run.json", {
            "format": FORMAT, "id": run.id, "kind": kind, "substrate": substrate, "fm": fm, "seed": seed,
            "status": "running", "iterations": 0, "best_loss": None, "config": config,
            "versions": package_versions(), "machine": platform.machine(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "updated": time.strftime("%Y-%m-%dT%H:%M:%S")})
        return run

    def open(self, run_id: str) -> Run:
        path = self.root / run_id
        if not path.is_dir():
            known = ", ".join(r["id"] for r in self.list()[:5]) or "none"
            raise RunError(f"no run {run_id!r} in {self.root} (some runs: {known})")
        run = Run(path)
        run.info  # noqa: B018 - validates run.json
        return run

    def reopen(self, run_id: str, read_config: Callable[[dict], Any],
               kinds: tuple[str, ...] | None = None) -> tuple[Run, Any, dict | None]:
        """A run to resume: its folder, its config read back by `read_config`, its last checkpoint (or None)."""
        run = self.open(run_id)
        info = run.info
        if kinds is not None and info.get("kind") not in kinds:
            raise RunError(f"run {run_id!r} is a {info.get('kind')} run; this command resumes {' / '.join(kinds)} runs")
        try:
            cfg = read_config(info["config"])
        except (TypeError, ValueError) as exc:
            raise RunError(f"run {run_id!r} has a config this version cannot read ({exc})") from exc
        return run, cfg, run.load_checkpoint()

    def _records(self) -> tuple[list[dict], list[str]]:
        records, broken = [], []
        if not self.root.is_dir():
            return records, broken
        for path in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            try:
                info = Run(path).info
            except RunError:
                broken.append(path.name)
                continue
            records.append({k: info.get(k) for k in ("id", "kind", "substrate", "fm", "status", "iterations",
                                                     "best_loss", "seed", "created", "updated")})
        return records, broken

    def catalog(self):
        """A DuckDB connection with the table `runs` (one row per readable run) and the view `metrics`."""
        import duckdb
        import pyarrow as pa

        records, _ = self._records()
        con = duckdb.connect()
        schema = pa.schema([("id", pa.string()), ("kind", pa.string()), ("substrate", pa.string()),
                            ("fm", pa.string()), ("status", pa.string()), ("iterations", pa.int64()),
                            ("best_loss", pa.float64()), ("seed", pa.int64()), ("created", pa.string()),
                            ("updated", pa.string())])
        con.register("runs_arrow", pa.Table.from_pylist(records, schema=schema))
        con.execute("CREATE TABLE runs AS SELECT * FROM runs_arrow")
        con.unregister("runs_arrow")
        files = [str(self.root / r["id"] / "metrics.parquet") for r in records
                 if (self.root / r["id"] / "metrics.parquet").exists()]
        if files:
            con.read_parquet(files, filename=True, union_by_name=True).create_view("metrics_files")
            con.execute(r"CREATE VIEW metrics AS SELECT regexp_extract(filename, '([^/\\]+)[/\\]metrics\.parquet$', 1) "
                        "AS run_id, * EXCLUDE (filename) FROM metrics_files")
        else:
            con.execute("CREATE VIEW metrics AS SELECT NULL::VARCHAR AS run_id, NULL::BIGINT AS iteration WHERE false")
        return con

    def list(self) -> list[dict]:
        con = self.catalog()
        cur = con.execute("SELECT * FROM runs ORDER BY created, id")
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    def broken(self) -> list[str]:
        return self._records()[1]

    def metrics(self, run_id: str) -> list[dict]:
        con = self.catalog()
        cur = con.execute("SELECT * FROM metrics WHERE run_id = ? ORDER BY iteration", [run_id])
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


def checkpointed_loop(run: Run, state: dict, iters: int, step: Callable[[int], dict], finish: Callable[[], None], *,
                      should_stop: Callable[[], bool] | None = None,
                      on_iteration: Callable[[int, int, dict], None] | None = None) -> Run:
    """The loop every stored search shares. For each remaining iteration, step(it) does the work and returns
    the metrics of the iteration (with best_loss), updating `state` in place; then the checkpoint (state),
    metrics.parquet and run.json are written atomically, so a killed process resumes from here. finish()
    runs after the last iteration. should_stop() leaves a resumable 'stopped' run; an error marks it failed."""
    run.update(status="running")
    try:
        for it in range(state["iteration"], iters):
            if should_stop is not None and should_stop():
                run.update(status="stopped")
                return run
            start = time.perf_counter()
            info = step(it)
            row = {"iteration": it, "seconds": time.perf_counter() - start, **info}
            state["metrics"].append(row)
            state["iteration"] = it + 1
            run.save_checkpoint(state)
            run.write_table("metrics", state["metrics"])
            run.update(iterations=it + 1, best_loss=row["best_loss"])
            if on_iteration is not None:
                on_iteration(it + 1, iters, row)
        finish()
    except BaseException:
        run.update(status="failed" if state["iteration"] < iters else "running")
        raise
    return run
