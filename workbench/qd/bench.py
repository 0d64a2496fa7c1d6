"""`workbench bench qd`: seconds per CycleQD generation and disk bytes per generation (a benchmark, never a test).

Each configuration is a real stored run (`run_cycleqd` into a temporary run store, no multi-task baseline):

- serial, B = 1, `gens` generations: the reference's loop (one child per generation);
- serial, B = `batch`, `batch_gens` generations;
- Dask LocalCluster of `workers` workers, B = `batch`, once per transfer ("weights", "lineage").

Per run: `step_s` = median seconds of a generation's work (build the children from their parents, mutate,
score them on the K tasks; the metrics' `seconds`), `wall_s` = median seconds between two stored generations
(the work plus the checkpoint, tables and archive map written after it), per child, and the run folder's
bytes by file group, per generation. The serial B = 1 run gives the 200-generation estimate.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from workbench.machine import machine


def _bytes(path: Path) -> dict[str, int]:
    groups: dict[str, int] = {}
    for f in path.rglob("*"):
        if not f.is_file():
            continue
        rel = f.relative_to(path)
        name = rel.parts[0] if len(rel.parts) > 1 else ("checkpoint" if f.name.startswith("checkpoint") else f.name)
        groups[name] = groups.get(name, 0) + f.stat().st_size
    groups["total"] = sum(groups.values())
    return groups


def _one(cfg, store, client=None) -> dict:
    from workbench.qd.run import run_cycleqd

    stamps: list[float] = []
    start = time.perf_counter()
    run = run_cycleqd(cfg, store, client=client, on_iteration=lambda done, total, row: stamps.append(
        time.perf_counter()))
    total = time.perf_counter() - start
    metrics = run.read_table("metrics").to_pylist()
    step = np.array([m["seconds"] for m in metrics[1:]])
    wall = np.diff(np.array(stamps))
    sizes = _bytes(run.path)
    last = metrics[-1]
    return {"gens": cfg.gens, "batch": cfg.batch, "children": cfg.gens * cfg.batch,
            "step_s": float(np.median(step)), "step_s_per_child": float(np.median(step)) / cfg.batch,
            "wall_s": float(np.median(wall)), "wall_s_mean": float(wall.mean()),
            "wall_s_per_child": float(np.median(wall)) / cfg.batch, "run_s": round(total, 2),
            "bytes": sizes, "bytes_per_generation": sizes["total"] / (cfg.gens + 1),
            "coverage": last["coverage"], "qd_score": last["qd_score"]}


def _gens(gens: int, children: int) -> str:
    """"3 generations of 2 children", "1 generation of 1 child"."""
    return f"{gens} generation{'s' * (gens != 1)} of {children} child{'ren' * (children != 1)}"


def bench_qd(zoo: str = "data/zoo", tasks: tuple[str, ...] = ("sort", "reverse", "brackets"), gens: int = 200,
             batch: int = 4, batch_gens: int = 50, workers: int = 2, seed: int = 0,
             transfers: tuple[str, ...] = ("weights", "lineage"), n_eval: int | None = None,
             n_test: int | None = None, log=None) -> dict:
    """Time CycleQD runs on a zoo (see the module docstring); JSON-ready. n_eval, n_test: validation prompts per
    task per child and test prompts per task for each run's final report (None: `qd cycle`'s defaults, 64 and 128;
    the JSON records those used). log(line), if given, is told each run as it starts (the bench takes minutes)."""
    say = log or (lambda line: None)
    from workbench.qd.run import QDRunConfig, check_inputs
    from workbench.runs import RunStore
    from workbench.scale import close, local_client

    sizes = {k: v for k, v in (("n_eval", n_eval), ("n_test", n_test)) if v is not None}
    base = dict(zoo=str(zoo), tasks=list(tasks), seed=seed, multitask_steps=0, **sizes)
    cfg = QDRunConfig(**base, gens=gens)  # a bad size: one error naming its flag (--n-eval), before any model loads
    check_inputs(cfg)
    # the machine as every bench records it (CPU model and flags, cores, memory, versions: torch's among them)
    out: dict = {"zoo": str(zoo), "tasks": list(tasks), "n_eval": cfg.n_eval, "n_test": cfg.n_test,
                 "machine": machine(), "threads_per_process": 1, "runs": {}}
    # a stop mid-run names a run of this temporary store, gone by then: the command line says no resume for it
    with tempfile.TemporaryDirectory(prefix="bench-qd-") as tmp:
        store = RunStore(Path(tmp) / "runs")
        say(f"serial run: {_gens(gens, 1)}")
        out["runs"]["serial_b1"] = _one(QDRunConfig(**base, gens=gens, batch=1), store)
        say(f"serial run: {_gens(batch_gens, batch)}")
        # the batched serial run has a key of its own (--batch 1 overwrote the serial B = 1 run the estimate is from)
        out["runs"][f"serial_b{batch}_g{batch_gens}"] = _one(QDRunConfig(**base, gens=batch_gens, batch=batch), store)
        say(f"starting {workers} Dask worker{'s' if workers > 1 else ''}")
        client = local_client(workers)
        try:
            for transfer in transfers:
                say(f"Dask run ({transfer} to the workers): {_gens(batch_gens, batch)}")
                cfg = QDRunConfig(**base, gens=batch_gens, batch=batch, transfer=transfer)
                out["runs"][f"dask_b{batch}_w{workers}_{transfer}"] = _one(cfg, store, client)
        finally:
            close(client)
    serial = out["runs"]["serial_b1"]
    out["estimate_200_generations"] = {
        "wall_s": round(200 * serial["wall_s_mean"], 1),
        "bytes": int(serial["bytes"]["total"] * 201 / (serial["gens"] + 1)),
        "note": "serial B = 1 (generation 0 + 200), from the serial run's mean wall seconds and bytes per generation"}
    return out
