"""Comparing runs: which settings differ, which runs are replicates of one setting (they differ only by seed),
and each setting's best-so-far curve summarised over its seeds (mean, and the range of the runs).

    cmp = compare_runs(RunStore("runs"), ["20261130-1807", "20261130-1808", "20261201-0903"])
    cmp.differs          # {"config.sigma": {id: 0.1, id: 0.1, id: 0.2}, "config.seed": {...}}
    cmp.groups           # [RunGroup("sigma=0.1", ids=[…, …], seeds=[0, 1], …), RunGroup("sigma=0.2", …)]
    cmp.bands()          # long table: group, iteration, mean, lo, hi, n — one band per setting

`workbench runs compare ID ID [ID …]` prints it, the Runs page draws it. Settings are the run's config (nested
keys joined by dots) plus its kind; runs of different kinds are never replicates of each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from workbench.runs import RunStore, catalog_row

#: Config keys (their last dotted part) that make runs replicates: runs that differ only there repeat one setting.
REPLICATE_KEYS = ("seed",)
LABEL_CHARS = 60  # a group's label past this long names its kind, substrate and first run instead
#: Config keys that say where or how fast a run ran, not what it computed: shown when they differ, never split
#: replicates (the same seed gives the same run on any device and thread count, up to floating-point order).
CONTEXT_KEYS = ("device", "threads", "workers")


@dataclass
class RunGroup:
    """Runs of one kind whose settings are equal but for REPLICATE_KEYS and CONTEXT_KEYS.

    label: the settings that tell this group from the others compared ("sigma=0.2, pop=16"), or the kind
    and substrate when nothing tells them apart. bests: each run's best value in its own metric (None while a
    run has none); higher: whether a higher best is better."""

    label: str
    kind: str
    metric: str
    higher: bool
    ids: list[str] = field(default_factory=list)
    seeds: list[Any] = field(default_factory=list)
    bests: list[float | None] = field(default_factory=list)

    def stats(self) -> dict:
        """n runs with a best, and their mean, sample standard deviation (None for one run), min and max."""
        values = [b for b in self.bests if b is not None and math.isfinite(b)]
        n = len(values)
        if not n:
            return {"n": 0, "mean": None, "std": None, "min": None, "max": None}
        mean = sum(values) / n
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
        return {"n": n, "mean": mean, "std": std, "min": min(values), "max": max(values)}

    def to_dict(self) -> dict:
        return {"label": self.label, "kind": self.kind, "metric": self.metric,
                "better": "higher" if self.higher else "lower", "ids": self.ids, "seeds": self.seeds,
                "bests": self.bests, **{f"best_{k}" if k != "n" else k: v for k, v in self.stats().items()}}


@dataclass
class Comparison:
    """Runs side by side (see the module doc). rows: their catalog rows, in the order asked; curves: best so far
    by iteration in each run's own metric (run_id, iteration, best, metric)."""

    rows: list[dict]
    differs: dict[str, dict[str, Any]]
    groups: list[RunGroup]
    curves: pd.DataFrame

    def group_of(self, run_id: str) -> RunGroup:
        return next(g for g in self.groups if run_id in g.ids)

    def bands(self) -> pd.DataFrame:
        """Per group and iteration: the mean best so far over the group's runs that reached that iteration, its
        range (lo, hi) and how many runs (n). A group of one run is its curve with lo = hi."""
        columns = ["group", "iteration", "mean", "lo", "hi", "n", "metric"]
        if self.curves.empty:
            return pd.DataFrame(columns=columns)
        label = {run_id: g.label for g in self.groups for run_id in g.ids}
        df = self.curves.assign(group=self.curves["run_id"].map(label))
        out = (df.groupby(["group", "iteration"], sort=False)
               .agg(mean=("best", "mean"), lo=("best", "min"), hi=("best", "max"), n=("best", "count"),
                    metric=("metric", "first"))
               .reset_index())
        return out[columns]

    def to_dict(self) -> dict:
        """JSON-able: runs (per id: catalog columns and best_loss per iteration), differs, groups."""
        runs = {}
        for row in self.rows:
            runs[row["id"]] = {k: row.get(k) for k in ("kind", "substrate", "fm", "status", "iterations",
                                                         "best_loss", "seed", "metric", "better", "best")}
            mine = self.curves[self.curves["run_id"] == row["id"]]
            runs[row["id"]]["best_loss_by_iteration"] = [float(v) for v in mine["best_loss"]]
        return {"runs": runs, "differs": self.differs, "groups": [g.to_dict() for g in self.groups]}


def flat_settings(info: dict) -> dict[str, Any]:
    """A run's settings as one flat dict: `kind`, then `config.<key>` with nested keys joined by dots (lists
    become tuples, so that settings compare and hash)."""
    out: dict[str, Any] = {"kind": info.get("kind")}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)
        else:
            out[prefix] = _frozen(value)

    walk("config", info.get("config") or {})
    return out


def _frozen(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return value


def _thawed(value: Any) -> Any:
    return [_thawed(v) for v in value] if isinstance(value, tuple) else value


def _last(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def differing_settings(infos: list[dict]) -> dict[str, dict[str, Any]]:
    """The settings whose values are not the same in every run: key -> {run id: value} (None where a run has
    no such setting), keys in the order the runs list them."""
    flats = [flat_settings(info) for info in infos]
    keys = list(dict.fromkeys(k for f in flats for k in f))
    out = {}
    for key in keys:
        values = [f.get(key) for f in flats]
        if any(v != values[0] for v in values[1:]):
            out[key] = {info["id"]: _thawed(v) for info, v in zip(infos, values, strict=True)}
    return out


def group_replicates(infos: list[dict], root: str) -> list[RunGroup]:
    """Runs grouped by their settings without REPLICATE_KEYS and CONTEXT_KEYS, groups in order of their first
    run. Labels name the settings that differ between groups (not seeds, devices or thread counts)."""
    ignored = set(REPLICATE_KEYS) | set(CONTEXT_KEYS)
    keyed: dict[tuple, list[dict]] = {}
    for info in infos:
        settings = flat_settings(info)
        key = tuple(sorted((k, repr(v)) for k, v in settings.items() if _last(k) not in ignored))
        keyed.setdefault(key, []).append(info)
    telling = [k for k in differing_settings(infos) if _last(k) not in ignored]
    groups = []
    for members in keyed.values():
        first = flat_settings(members[0])
        parts = [f"{_short(k)}={_text(_thawed(first.get(k)))}" for k in telling]
        row = catalog_row(members[0], root)
        label = ", ".join(parts)
        if not label or len(label) > LABEL_CHARS:  # runs of other kinds differ in everything: name the first run
            label = f"{row['kind']} · {row['substrate']}" + (f" · {row['id']}" if label else "")
        rows = [catalog_row(m, root) for m in members]
        groups.append(RunGroup(label=label, kind=str(row["kind"]), metric=str(row["metric"]),
                               higher=row["better"] == "higher", ids=[r["id"] for r in rows],
                               seeds=[(m.get("config") or {}).get("seed", m.get("seed")) for m in members],
                               bests=[r["best"] for r in rows]))
    _disambiguate(groups)
    return groups


def _short(key: str) -> str:
    """`config.eval.fm` -> `eval.fm`, `config.sigma` -> `sigma`, `kind` -> `kind`."""
    return key.split(".", 1)[1] if key.startswith("config.") else key


def _text(value: Any) -> str:
    if value is None:  # absent from the run's config (older runs lack newer settings) or set to None
        return "—"
    if isinstance(value, list):
        return "+".join(_text(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _disambiguate(groups: list[RunGroup]) -> None:
    """Two groups can only share a label when a setting is present in one kind's config and absent in
    another's (both shown as None): number them then, so that every label names one group."""
    seen: dict[str, int] = {}
    for g in groups:
        seen[g.label] = seen.get(g.label, 0) + 1
    if all(n == 1 for n in seen.values()):
        return
    count: dict[str, int] = {}
    for g in groups:
        if seen[g.label] > 1:
            count[g.label] = count.get(g.label, 0) + 1
            g.label = f"{g.label} ({g.kind} #{count[g.label]})"


def best_curves(store: RunStore, infos: list[dict]) -> pd.DataFrame:
    """Best so far by iteration of each run, in its own metric: run_id, iteration, best_loss, best, metric."""
    frames = []
    for info in infos:
        rows = store.metrics(info["id"])
        if not rows:
            continue
        row = catalog_row(info, store.root)
        df = pd.DataFrame(rows)[["run_id", "iteration", "best_loss"]]
        higher = row["better"] == "higher"
        frames.append(df.assign(best=-df["best_loss"] if higher else df["best_loss"], metric=row["metric"]))
    if not frames:
        return pd.DataFrame(columns=["run_id", "iteration", "best_loss", "best", "metric"])
    return pd.concat(frames, ignore_index=True)


def check_ids(ids: list[str]) -> None:
    """One error unless `ids` names two or more runs, none twice."""
    if len(ids) < 2:
        raise ValueError(f"give two or more runs to compare, got {len(ids)}")
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise ValueError(f"give different runs to compare: {', '.join(twice)} is named more than once")


def compare_runs(store: RunStore, ids: list[str]) -> Comparison:
    """Compare the runs `ids` names (ids or unique prefixes; at least two different runs)."""
    check_ids(ids)
    runs = [store.open(i) for i in ids]
    check_ids([r.id for r in runs])  # a prefix and its full id name one run
    infos = [r.info for r in runs]
    return Comparison(rows=[catalog_row(info, store.root) for info in infos], differs=differing_settings(infos),
                      groups=group_replicates(infos, str(store.root)), curves=best_curves(store, infos))
