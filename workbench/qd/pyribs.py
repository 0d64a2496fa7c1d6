"""CycleQD archives as pyribs archives: `ArchiveDataFrame`s saved as parquet, and live `GridArchive`s.

    write_pyribs(run_dir / "pyribs", archives, scores)        # pyribs/<task>.parquet, one per archive
    archives = read_pyribs(run_dir / "pyribs")                # a TaskArchives, the same cells and elites
    grid = to_grid_archive(archives, "sort")                  # a ribs.archives.GridArchive for pyribs' tools

Archive k becomes a GridArchive with solution_dim 1 (the solution is the model id, int64), dims (bins,) * (K-1)
and ranges the other tasks' fixed ranges, in task order; objective = the elite's score on task k; extra field
`scores` = its raw scores on all K tasks (task order). Each parquet file's schema metadata `workbench.qd`
holds the task, the tasks, the ranges and the bins, so a file reads back without the run.

Bins: our cells are right-closed (a, b] (spec §2: a score on an interior edge e_b belongs to bin b − 1), pyribs'
GridArchive is left-closed [a, b) and adds an epsilon (1e-6) before flooring. So we convert explicitly: the
`index` column is pyribs' integer index of OUR cell (`grid_to_int_index`), and the measures are the other tasks'
raw scores where pyribs bins them into that cell, else (a score on or within pyribs' epsilon of an interior
edge, or outside the range) the middle of our cell; the raw scores stay in `scores_*`. Inserting the rows into
a fresh GridArchive through its own `add` (measures) lands every elite in our cell, and `read_pyribs` trusts
`index`, not the measures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from workbench.atomic import atomic_write
from workbench.qd.archives import TaskArchives, bin_edges

if TYPE_CHECKING:
    from ribs.archives import ArchiveDataFrame, GridArchive

META_KEY = b"workbench.qd"


def _grid(archives: TaskArchives, task: str, seed: int = 0):
    from ribs.archives import GridArchive

    axes = archives.axes(task)
    return GridArchive(solution_dim=1, dims=[archives.bins] * len(axes), ranges=[archives.ranges[t] for t in axes],
                       solution_dtype=np.int64, extra_fields={"scores": ((len(archives.tasks),), np.float64)},
                       seed=seed)


def _measures(grid, archives: TaskArchives, task: str, cells: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Measures that pyribs bins into our (right-closed) cells: the raw scores of the other tasks where it
    already does, the middle of our cell where it does not."""
    axes = archives.axes(task)
    raw = np.stack([scores[:, archives.tasks.index(t)] for t in axes], axis=1) if len(cells) else \
        np.zeros((0, len(axes)))
    out = raw.copy()
    if len(cells):
        wrong = grid.index_of(raw) != grid.grid_to_int_index(cells)
        for j, t in enumerate(axes):
            edges = bin_edges(*archives.ranges[t], archives.bins)
            middle = (edges[cells[:, j]] + edges[cells[:, j] + 1]) / 2
            out[wrong, j] = middle[wrong]
        assert (grid.index_of(out) == grid.grid_to_int_index(cells)).all()
    return out


def to_grid_archive(archives: TaskArchives, task: str,
                    scores: dict[int, dict[str, float]] | None = None) -> GridArchive:
    """Archive `task` as a pyribs GridArchive holding the same elites in the same cells (measures converted as
    the module docstring says). scores: model id -> its scores on all tasks (default: only the archive's own
    quality is known; the other tasks' scores are then the middles of the cells)."""
    grid = _grid(archives, task)
    ids, cells, quality = archives.elites(task)
    k = len(archives.tasks)
    table = np.full((len(ids), k), np.nan)
    for row, i in enumerate(ids):
        if scores is not None and int(i) in scores:
            table[row] = [scores[int(i)][t] for t in archives.tasks]
        else:   # unknown raw scores: the cell's middle stands in for them
            for j, t in enumerate(archives.axes(task)):
                edges = bin_edges(*archives.ranges[t], archives.bins)
                table[row, archives.tasks.index(t)] = (edges[cells[row, j]] + edges[cells[row, j] + 1]) / 2
            table[row, archives.tasks.index(task)] = quality[row]
    if len(ids):
        status = grid.add(ids[:, None], quality, _measures(grid, archives, task, cells, table), scores=table)["status"]
        assert (status > 0).all()
    return grid


def write_pyribs(directory: str | Path, archives: TaskArchives,
                 scores: dict[int, dict[str, float]] | None = None) -> list[Path]:
    """One `ArchiveDataFrame` parquet per archive, directory/<task>.parquet (atomically each; the directory is
    created). scores: model id -> its scores on all tasks, for the `scores_*` columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory = Path(directory)
    # a task's name is its file's: one that is no plain file name ("../x", "b/c", read from an archive map) wrote
    # outside the folder, or failed half-way
    bad = [t for t in archives.tasks if t in (".", "..") or t.startswith(".") or any(c in t for c in "/\\\0")]
    if bad:
        raise ValueError(f"cannot write the pyribs archives of tasks {bad}: a task's archive is written to "
                         f"<folder>/<task>.parquet, and these names are no plain file names")
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for task in archives.tasks:
        frame = to_grid_archive(archives, task, scores).data(return_type="pandas")
        table = pa.Table.from_pandas(frame, preserve_index=False)
        meta = {"task": task, "tasks": archives.tasks, "axes": archives.axes(task),
                "ranges": {t: list(r) for t, r in archives.ranges.items()}, "bins": archives.bins,
                "cells": "right-closed (a, b] per spec §2; `index` is the cell, measures are moved into it"}
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), META_KEY: json.dumps(meta).encode()})
        written.append(atomic_write(directory / f"{task}.parquet", lambda p, t=table: pq.write_table(t, p)))
    return written


def read_pyribs_frame(path: str | Path) -> tuple[ArchiveDataFrame, dict]:
    """(ArchiveDataFrame, metadata dict) of one file `write_pyribs` wrote."""
    import pyarrow.parquet as pq
    from ribs.archives import ArchiveDataFrame

    path = Path(path)
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read the pyribs archive {path}: {error}") from None
    raw = (table.schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise ValueError(f"{path} is not a CycleQD archive written by workbench (no {META_KEY.decode()} metadata: "
                         f"the tasks, ranges and bins are unknown)")
    return ArchiveDataFrame(table.to_pandas()), json.loads(raw)


def read_pyribs(directory: str | Path) -> TaskArchives:
    """The TaskArchives `write_pyribs` wrote to `directory` (elites by `index`, ids from `solution_0`)."""
    directory = Path(directory)
    files = sorted(directory.glob("*.parquet")) if directory.is_dir() else []
    if not files:
        raise ValueError(f"{directory} holds no pyribs archive (<task>.parquet files)")
    frames = {}
    for path in files:
        frame, meta = read_pyribs_frame(path)
        frames[meta["task"]] = (frame, meta)
    meta = next(iter(frames.values()))[1]
    archives = TaskArchives(meta["tasks"], {t: tuple(r) for t, r in meta["ranges"].items()}, meta["bins"])
    missing = [t for t in archives.tasks if t not in frames]
    if missing:
        raise ValueError(f"{directory} lacks the archive{'s' if len(missing) > 1 else ''} of {missing}")
    shape = archives.shape
    for task, (frame, _) in frames.items():
        index = frame.get_field("index")
        ids = frame.get_field("solution")[:, 0]
        quality = frame.get_field("objective")
        for i, model_id, q in zip(index, ids, quality, strict=True):
            archives.place(task, np.unravel_index(int(i), shape), int(model_id), float(q))
    return archives
