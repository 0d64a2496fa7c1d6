"""The reference's archive files, read and written: `gen{N}_archive_map.json` (SakanaAI/CycleQD,
`utils/helpers.py::save_archive_map` / `load_archive_map`, `datatypes.py::ArchiveData`):

    {"<task>": {"<i>,<j>": {"quality": 0.61, "model_path": ".../models/gen_12", "sampling_freq": 3,
                            "validation_quality": null}, ...}, ...}

Tasks in their order; a cell key is the other tasks' bin indices joined by "," with no spaces (K = 2: one
index); the value has exactly the four ArchiveData fields (the reference builds ArchiveData(**value), so any other
field breaks it). sampling_freq starts at 1 when a model enters a cell and grows by one per parent draw;
validation_quality is null until a validation pass fills it.

    data = qd.archive_map(generation=12)                     # a CycleQD's archives in this format
    write_archive_map(archive_map_path(run_dir, 12), data)   # run_dir/gen12_archive_map.json, atomically
    entries = read_archive_map(path)                          # {task: {cell tuple: ArchiveEntry}}
    archives, paths = archives_from_map(entries, ranges)      # a TaskArchives; id i is paths[i]

A file that is not such a map is one ArchiveMapError (a ValueError) naming the file and what is wrong.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path
from typing import Any

from workbench.atomic import atomic_write
from workbench.qd.archives import DEFAULT_BINS, TaskArchives

FIELDS = ("quality", "model_path", "sampling_freq", "validation_quality")
_FILE = re.compile(r"gen(\d+)_archive_map\.json")
_KEY = re.compile(r"\d+(,\d+)*")


class ArchiveMapError(ValueError):
    """A file or dict that is not a reference archive map."""


def run_settings(path: str | Path) -> tuple[int, dict[str, tuple[float, float]]] | None:
    """(bins, {task: (lo, hi)}) of the qd run whose `archive_maps/` folder holds `path` (a map file or the folder),
    or None: the files hold no bins nor ranges, and a run's own maps read at the defaults (15 bins on [0, 1]) put
    a run of --bins 5 at a third of its coverage."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if folder.name != "archive_maps" or not (folder.parent / "run.json").is_file():
        return None
    try:
        info = json.loads((folder.parent / "run.json").read_text())
        cfg = info["config"]
        return int(cfg["bins"]), {t: (float(r[0]), float(r[1])) for t, r in cfg["ranges"].items()}
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


@dataclass(frozen=True)
class ArchiveEntry:
    """One elite of a reference archive map (the reference's ArchiveData)."""

    quality: float
    model_path: str
    sampling_freq: int
    validation_quality: float | None = None


def cell_key(cell) -> str:
    """(3, 7) -> "3,7", the reference's key."""
    return ",".join(str(int(i)) for i in cell)


def archive_map_path(directory: str | Path, generation: int) -> Path:
    """directory/gen{generation}_archive_map.json"""
    return Path(directory) / f"gen{int(generation)}_archive_map.json"


def latest_archive_map(directory: str | Path) -> tuple[Path, int]:
    """The archive map of the highest generation in a directory, and that generation (the reference's
    restart point)."""
    found = {int(m.group(1)): p for p in Path(directory).iterdir() if (m := _FILE.fullmatch(p.name))}
    if not found:
        raise ArchiveMapError(f"{directory} holds no gen{{N}}_archive_map.json file")
    g = max(found)
    return found[g], g


def to_archive_map(archives: TaskArchives, model_path: Callable[[int], str],
                   sampling_freq: Callable[[str, int], int] | None = None,
                   validation_quality: Callable[[str, int], float | None] | None = None) -> dict:
    """Archives in the reference format.

    Args:
        archives: the archives to write.
        model_path: model id -> the path the file names it by.
        sampling_freq: (task, id) -> the reference's sampling_freq (default 1: never drawn).
        validation_quality: (task, id) -> a validation score or None (default None).
    """
    out = {}
    for task in archives.tasks:
        ids, cells, quality = archives.elites(task)
        out[task] = {cell_key(c): {"quality": float(q), "model_path": str(model_path(int(i))),
                                   "sampling_freq": 1 if sampling_freq is None else int(sampling_freq(task, int(i))),
                                   "validation_quality": None if validation_quality is None
                                   else _optional_float(validation_quality(task, int(i)))}
                     for i, c, q in zip(ids, cells, quality, strict=True)}
    return out


def _optional_float(v) -> float | None:
    return None if v is None else float(v)


def check_archive_map(data: Any, source: str = "archive map", tasks: list[str] | None = None,
                      bins: int | None = None) -> dict[str, dict[tuple[int, ...], ArchiveEntry]]:
    """Validate a reference archive map (as parsed from JSON) and return {task: {cell: ArchiveEntry}}.

    Args:
        data: the parsed JSON.
        source: how errors name it (the file's path).
        tasks: the tasks it must hold, in order (default: whatever it holds, at least 2).
        bins: if given, every bin index must be below it.
    """
    def fail(what: str) -> ArchiveMapError:
        shape = '{task: {"i,j": {' + ", ".join(FIELDS) + "}}}"
        return ArchiveMapError(f"{source} is not a CycleQD archive map {shape}: {what}")

    if not isinstance(data, dict):
        raise fail(f"the top level is a {type(data).__name__}, not an object of tasks")
    names = list(data)
    if tasks is not None and names != list(tasks):
        raise fail(f"it holds the tasks {names}, expected {list(tasks)}")
    if len(names) < 2:
        raise fail(f"it holds {len(names)} task{'s' if len(names) != 1 else ''} {names}; CycleQD has at least 2")
    out: dict[str, dict[tuple[int, ...], ArchiveEntry]] = {}
    for task, cells in data.items():
        if not isinstance(cells, dict):
            raise fail(f"task {task!r} maps to a {type(cells).__name__}, not an object of cells")
        out[task] = {}
        for key, value in cells.items():
            if not _KEY.fullmatch(key):
                raise fail(f"task {task!r} has the cell key {key!r}; keys are bin indices joined by ',' (e.g. '3,7')")
            cell = tuple(int(i) for i in key.split(","))
            if len(cell) != len(names) - 1:
                raise fail(f"task {task!r} has the cell key {key!r} with {len(cell)} indices; with {len(names)} tasks "
                           f"a cell has {len(names) - 1} (the other tasks' bins)")
            if bins is not None and max(cell) >= bins:
                raise fail(f"task {task!r}, cell {key!r}: bin index {max(cell)} is out of range for {bins} bins")
            out[task][cell] = _entry(value, f"task {task!r}, cell {key!r}", fail)
    return out


def _entry(value, where: str, fail: Callable[[str], ArchiveMapError]) -> ArchiveEntry:
    if not isinstance(value, dict):
        raise fail(f"{where} is a {type(value).__name__}, not an object")
    if set(value) != set(FIELDS):
        raise fail(f"{where} has the fields {sorted(value)}; expected exactly {list(FIELDS)}")
    q, path, freq, val = (value[k] for k in FIELDS)
    if isinstance(q, bool) or not isinstance(q, Real) or not math.isfinite(q):
        raise fail(f"{where}: quality must be a finite number, got {q!r}")
    if not isinstance(path, str):
        raise fail(f"{where}: model_path must be a string, got {path!r}")
    if isinstance(freq, bool) or not isinstance(freq, Integral) or freq < 0:
        raise fail(f"{where}: sampling_freq must be a non-negative integer, got {freq!r}")
    if val is not None and (isinstance(val, bool) or not isinstance(val, Real)):
        raise fail(f"{where}: validation_quality must be a number or null, got {val!r}")
    return ArchiveEntry(float(q), path, int(freq), _optional_float(val))


def write_archive_map(path: str | Path, data: Mapping) -> Path:
    """Write a reference archive map (validated first) atomically, indented like the reference's."""
    check_archive_map(dict(data), str(path))
    text = json.dumps(data, indent=4, allow_nan=False)
    return atomic_write(path, lambda p: p.write_text(text))


def read_archive_map(path: str | Path, tasks: list[str] | None = None,
                     bins: int | None = None) -> dict[str, dict[tuple[int, ...], ArchiveEntry]]:
    """{task: {cell tuple: ArchiveEntry}} from a reference `gen{N}_archive_map.json` (see check_archive_map)."""
    hint = "a JSON archive map: SakanaAI/CycleQD's gen{N}_archive_map.json, as a qd run's archive_maps/ holds"
    if Path(path).is_dir():
        raise ArchiveMapError(f"{path} is a folder: give one of its gen{{N}}_archive_map.json files")
    try:
        text = Path(path).read_text()
    except UnicodeDecodeError:
        raise ArchiveMapError(f"{path} is not {hint}") from None
    except OSError as error:
        raise ArchiveMapError(f"cannot read the archive map {path}: {error.strerror or error}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ArchiveMapError(f"{path} is not a CycleQD archive map: not valid JSON ({error})") from None
    return check_archive_map(data, str(path), tasks, bins)


def archives_from_map(entries: Mapping[str, Mapping[tuple[int, ...], ArchiveEntry]],
                      ranges: Mapping[str, tuple[float, float]] | None = None,
                      bins: int = DEFAULT_BINS) -> tuple[TaskArchives, list[str]]:
    """A TaskArchives holding a read archive map's elites, and the model paths by id: model id i is the i-th
    distinct model_path (in task order, then cell order). The file holds no ranges: give the run's."""
    tasks = list(entries)
    archives = TaskArchives(tasks, ranges, bins)
    paths: list[str] = []
    index: dict[str, int] = {}
    for task in tasks:
        for cell in sorted(entries[task]):
            entry = entries[task][cell]
            if entry.model_path not in index:
                index[entry.model_path] = len(paths)
                paths.append(entry.model_path)
            archives.place(task, cell, index[entry.model_path], entry.quality)
    return archives, paths
