"""CycleQD's archives: one MAP-Elites grid per task, indexed by the bins of the OTHER tasks' scores.

    archives = TaskArchives(tasks=["sort", "reverse", "brackets"], ranges={"sort": (0.0, 1.0), ...}, bins=15)
    archives.add(7, {"sort": 0.4, "reverse": 0.9, "brackets": 0.2})   # -> the archives model 7 entered
    ids, quality = archives.grid("reverse")      # (15, 15) arrays; axis 0 = sort's bin, axis 1 = brackets' bin

Archive k keeps, per cell, the model with the highest raw (unbinned) score on task k; the cell is the tuple
of the other tasks' bin indices in task order (spec §2 "Archives"). Binning is the reference's
(`tasks/base.py::_get_bin_id`): FIXED edges linspace(lo, hi, bins + 1) and right-closed bins (a, b], which is
`np.digitize(..., right=True) - 1` clamped to the grid. pyribs' GridArchive bins left-closed [a, b), so the
two disagree exactly on interior edges; we use neither pyribs nor its rule.

Insertion: a model enters archive k when its cell is empty or its task-k score is STRICTLY above the
incumbent's; a tie keeps the incumbent. Models are named by non-negative integer ids (-1 marks an empty cell);
what an id refers to (a seed expert, a child's lineage) is the caller's business (see workbench.qd.cycle).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from numbers import Integral, Real
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

#: The range every task gets when none is configured: the accuracies of workbench.lm are in [0, 1].
DEFAULT_RANGE = (0.0, 1.0)
DEFAULT_BINS = 15


# --- validation shared by the archives and the loop's configuration ------------------------------------------------

def check_task_list(tasks: Iterable[str]) -> list[str]:
    """The tasks as a list of distinct names, at least two (else one ValueError naming the fix)."""
    if isinstance(tasks, str):
        raise ValueError(f"tasks must be a list of task names, got the string {tasks!r}; write [{tasks!r}, ...]")
    tasks = list(tasks)
    bad = [t for t in tasks if not isinstance(t, str) or not t]
    if bad:
        raise ValueError(f"task names must be non-empty strings, got {bad!r}")
    seen: set[str] = set()
    for t in tasks:
        if t in seen:
            raise ValueError(f"task {t!r} is listed twice in tasks {tasks}; list each task once")
        seen.add(t)
    if len(tasks) < 2:
        raise ValueError(f"CycleQD needs at least 2 tasks (each task's archive is indexed by the OTHER tasks' "
                         f"bins), got {tasks}; add a task")
    return tasks


def check_range(value, task: str | None = None) -> tuple[float, float]:
    """A (lo, hi) as floats with lo < hi, both finite; `task` names it in errors."""
    what = "the range" if task is None else f"the range of task {task!r}"
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a pair (lo, hi) of numbers, got {value!r}; e.g. (0.0, 1.0)") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"{what} is ({lo}, {hi}): lo must be below hi and both finite; e.g. (0.0, 1.0)")
    return lo, hi


def check_ranges(tasks: list[str], ranges: Mapping[str, Iterable[float]] | None) -> dict[str, tuple[float, float]]:
    """A (lo, hi) per task, in task order. None gives every task DEFAULT_RANGE; a mapping must name each task."""
    if ranges is None:
        return {t: DEFAULT_RANGE for t in tasks}
    if not isinstance(ranges, Mapping):
        raise ValueError(f"ranges must map each task to (lo, hi), got {type(ranges).__name__}")
    unknown = [t for t in ranges if t not in tasks]
    if unknown:
        raise ValueError(f"ranges name {unknown}, which {'is' if len(unknown) == 1 else 'are'} not among the "
                         f"tasks {tasks}; fix the task name or add it to tasks")
    missing = [t for t in tasks if t not in ranges]
    if missing:
        raise ValueError(f"no range for task{'s' if len(missing) > 1 else ''} {missing}; give each task a fixed "
                         f"(lo, hi), e.g. {missing[0]!r}: (0.0, 1.0) (or pass ranges=None for {DEFAULT_RANGE} "
                         f"everywhere)")
    return {t: check_range(ranges[t], t) for t in tasks}


#: the most cells an archive may have (bins^(K-1)): every archive is a dense grid, and a typo in --bins took a
#: machine's memory (10^8 bins of two tasks: 20 GB) instead of an error
MAX_CELLS = 1_000_000


def check_bins(bins, n_tasks: int | None = None, flag: str = "bins") -> int:
    """bins as an int of at least 1; with n_tasks, archives of bins^(n_tasks - 1) cells at most MAX_CELLS."""
    if isinstance(bins, bool) or not isinstance(bins, Integral) or bins < 1:
        raise ValueError(f"{flag} must be a whole number of at least 1 (the reference uses 15), got {bins!r}")
    bins = int(bins)
    if n_tasks is not None and n_tasks >= 2 and bins ** (n_tasks - 1) > MAX_CELLS:
        most = int(math.floor(MAX_CELLS ** (1 / (n_tasks - 1)) + 1e-9))
        raise ValueError(f"{flag} {bins}: {n_tasks} tasks make archives of {bins}^{n_tasks - 1} cells, more than "
                         f"{MAX_CELLS:,} (each is a grid in memory); give {flag} {most} or fewer (the reference "
                         f"uses 15)")
    return bins


# --- binning -------------------------------------------------------------------------------------------------------

def bin_edges(lo: float, hi: float, bins: int = DEFAULT_BINS) -> np.ndarray:
    """The bins + 1 fixed edges e_0 = lo, ..., e_bins = hi (float64)."""
    lo, hi = check_range((lo, hi))
    return np.linspace(lo, hi, check_bins(bins) + 1, dtype=np.float64)


def bin_ids(scores: float | ArrayLike, lo: float, hi: float, bins: int = DEFAULT_BINS) -> np.ndarray:
    """Bin indices of scores on fixed edges linspace(lo, hi, bins + 1), the reference's right-closed rule.

    bin(s) = (index of the first edge >= s) - 1, clamped to [0, bins - 1]. So bin b is (e_b, e_{b+1}]; bin 0
    also takes every s <= lo (it is closed on both sides) and bin bins - 1 every s > hi; a score exactly on an
    interior edge e_b lands in bin b - 1 (pyribs' left-closed grid would put it in bin b).

    Args:
        scores: a score or an array of scores (finite).
        lo, hi: the task's fixed range, lo < hi (not the data's min and max).
        bins: number of bins, at least 1.
    Returns:
        int64 array of the shape of `scores` (0-d for a scalar).
    """
    edges = bin_edges(lo, hi, bins)
    s = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(s).all():
        raise ValueError(f"scores must be finite numbers to be binned, got {scores!r}")
    index = np.searchsorted(edges, s, side="left") - 1   # side="left": the first edge >= s
    return np.clip(index, 0, len(edges) - 2).astype(np.int64)


# --- the archives ----------------------------------------------------------------------------------------------------

class TaskArchives:
    """One elite grid per task, each indexed by the bins of the other tasks (spec §2 "Archives").

    Args:
        tasks: the K >= 2 task names, in the fixed order that defines every cell's axes.
        ranges: task -> (lo, hi), the fixed range its score is binned on (None: (0.0, 1.0) for every task).
        bins: bins per task (the reference's 15); archive k has shape (bins,) * (K - 1).

    Attributes:
        tasks, ranges, bins: as given (validated).
    """

    def __init__(self, tasks: Iterable[str], ranges: Mapping[str, Iterable[float]] | None = None,
                 bins: int = DEFAULT_BINS):
        self.tasks = check_task_list(tasks)
        self.ranges = check_ranges(self.tasks, ranges)
        self.bins = check_bins(bins, len(self.tasks))
        self._ids = {t: np.full(self.shape, -1, np.int64) for t in self.tasks}
        self._quality = {t: np.full(self.shape, np.nan, np.float64) for t in self.tasks}

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of every archive: (bins,) * (K - 1)."""
        return (self.bins,) * (len(self.tasks) - 1)

    def axes(self, task: str) -> list[str]:
        """The tasks whose bins index `task`'s archive, in axis order (the other tasks, in task order)."""
        self._check_task(task)
        return [t for t in self.tasks if t != task]

    # --- placing models ---

    def check_scores(self, scores: Mapping[str, float]) -> dict[str, float]:
        """The scores as {task: float} in task order; every task present and finite, no other names."""
        if not isinstance(scores, Mapping):
            raise ValueError(f"scores must map each task to a number, got {type(scores).__name__}")
        unknown = [t for t in scores if t not in self.tasks]
        missing = [t for t in self.tasks if t not in scores]
        if unknown or missing:
            raise ValueError(f"scores must give exactly the tasks {self.tasks}: "
                             + (f"missing {missing}" if missing else "")
                             + ("; " if missing and unknown else "") + (f"unknown {unknown}" if unknown else ""))
        out = {}
        for t in self.tasks:
            v = scores[t]
            if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(v):
                raise ValueError(f"the score of task {t!r} must be a finite number, got {v!r}")
            out[t] = float(v)
        return out

    def bins_of(self, scores: Mapping[str, float]) -> dict[str, int]:
        """Each task's bin index for these scores (on that task's own range)."""
        scores = self.check_scores(scores)
        return {t: int(bin_ids(scores[t], *self.ranges[t], self.bins)) for t in self.tasks}

    def cell(self, task: str, scores: Mapping[str, float]) -> tuple[int, ...]:
        """The cell of archive `task` that these scores fall in: the other tasks' bins, in task order."""
        b = self.bins_of(scores)
        return tuple(b[t] for t in self.axes(task))

    def entering(self, scores: Mapping[str, float]) -> list[str]:
        """The archives (task names, in task order) a model with these scores would enter; changes nothing."""
        scores, b = self.check_scores(scores), self.bins_of(scores)
        out = []
        for task in self.tasks:
            cell = tuple(b[t] for t in self.tasks if t != task)
            incumbent = self._quality[task][cell]
            if self._ids[task][cell] < 0 or scores[task] > incumbent:   # strictly better: a tie keeps the incumbent
                out.append(task)
        return out

    def add(self, model_id: int, scores: Mapping[str, float]) -> list[str]:
        """Insert a model into every archive it enters (empty cell, or a strictly higher score on that archive's
        task than the incumbent's; a tie keeps the incumbent).

        Args:
            model_id: a non-negative integer naming the model.
            scores: task -> raw score, for every task.
        Returns:
            the names of the archives entered, in task order ([] if none: the caller need not keep the model).
        """
        model_id = _check_id(model_id)
        scores = self.check_scores(scores)
        entered = self.entering(scores)
        b = self.bins_of(scores)
        for task in entered:
            cell = tuple(b[t] for t in self.tasks if t != task)
            self._ids[task][cell] = model_id
            self._quality[task][cell] = scores[task]
        return entered

    def place(self, task: str, cell: Iterable[int], model_id: int, quality: float) -> None:
        """Put a model in one cell unconditionally (for reading archives written elsewhere; use `add` to insert)."""
        self._check_task(task)
        cell = tuple(int(i) for i in cell)
        if len(cell) != len(self.shape) or not all(0 <= i < self.bins for i in cell):
            raise ValueError(f"cell {cell} does not fit archive {task!r} of shape {self.shape}")
        quality = float(quality)
        if not math.isfinite(quality):
            raise ValueError(f"the quality of an elite must be finite, got {quality}")
        self._ids[task][cell] = _check_id(model_id)
        self._quality[task][cell] = quality

    # --- reading ---

    def grid(self, task: str) -> tuple[np.ndarray, np.ndarray]:
        """Copies of archive `task`: (elite ids, int64, -1 where empty; qualities, float64, NaN where empty),
        both of shape (bins,) * (K - 1) with axes `self.axes(task)`."""
        self._check_task(task)
        return self._ids[task].copy(), self._quality[task].copy()

    def elites(self, task: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The occupied cells of archive `task` in row-major order: (ids (n,), cells (n, K - 1) int64 bin
        indices, qualities (n,))."""
        self._check_task(task)
        ids = self._ids[task]
        cells = np.argwhere(ids >= 0).astype(np.int64).reshape(-1, ids.ndim)   # argwhere is row-major
        where = tuple(cells.T)
        return ids[where].copy(), cells, self._quality[task][where].copy()

    def elite_ids(self) -> np.ndarray:
        """Sorted distinct ids of the models that are an elite of at least one archive."""
        return np.unique(np.concatenate([g[g >= 0] for g in self._ids.values()])).astype(np.int64)

    def stats(self, task: str) -> dict[str, float]:
        """Archive `task`'s coverage (fraction of cells filled), QD score (sum of elite qualities) and max
        quality (NaN when empty)."""
        ids, quality = self.grid(task)
        filled = ids >= 0
        return {"coverage": float(filled.mean()), "qd_score": float(quality[filled].sum()),
                "max_quality": float(quality[filled].max()) if filled.any() else math.nan}

    def __len__(self) -> int:
        """Number of filled cells over all archives."""
        return int(sum((g >= 0).sum() for g in self._ids.values()))

    # --- checkpoints ---

    def state_dict(self) -> dict:
        """Plain values and arrays: tasks, ranges, bins and every archive's ids and qualities."""
        return {"tasks": list(self.tasks), "ranges": {t: list(r) for t, r in self.ranges.items()}, "bins": self.bins,
                "ids": {t: g.copy() for t, g in self._ids.items()},
                "quality": {t: q.copy() for t, q in self._quality.items()}}

    @classmethod
    def from_state(cls, state: dict) -> TaskArchives:
        """The archives as state_dict() wrote them; ValueError for an archive of another shape."""
        archives = cls(state["tasks"], state["ranges"], state["bins"])
        for t in archives.tasks:
            ids, quality = np.asarray(state["ids"][t]), np.asarray(state["quality"][t])
            if ids.shape != archives.shape or quality.shape != archives.shape:
                raise ValueError(f"archive {t!r} in the state has shape {ids.shape}, expected {archives.shape}")
            archives._ids[t] = ids.astype(np.int64)
            archives._quality[t] = quality.astype(np.float64)
        return archives

    def _check_task(self, task: str) -> None:
        if task not in self.tasks:
            raise ValueError(f"unknown task {task!r}; the archives are {self.tasks}")


def _check_id(model_id) -> int:
    if isinstance(model_id, bool) or not isinstance(model_id, Integral) or model_id < 0:
        raise ValueError(f"model ids must be non-negative integers (-1 marks an empty cell), got {model_id!r}")
    return int(model_id)
