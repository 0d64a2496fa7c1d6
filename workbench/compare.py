"""Comparing runs: which settings differ, which runs are replicates of one setting (they differ only by seed),
and each setting's best-so-far curve summarised over its seeds (mean, and a band: the range of the runs, ± 1 sd or
a 95% CI of the mean).

    cmp = compare_runs(RunStore("runs"), ["20261130-1807", "20261130-1808", "20261201-0903"])
    cmp.differs          # {"config.sigma": {id: 0.1, id: 0.1, id: 0.2}, "config.seed": {...}}
    cmp.groups           # [RunGroup("sigma=0.1", ids=[…, …], seeds=[0, 1], …), RunGroup("sigma=0.2", …)]
    cmp.bands()          # long table: group, iteration, mean, lo, hi, n, metric — one band per setting
    cmp.bands("ci95")    # the band a 95% confidence interval of the mean (BANDS: range, sd, ci95)

`workbench runs compare ID ID [ID …]` prints it, the Runs page draws it. Settings are the run's config (nested
keys joined by dots) plus its kind; runs of different kinds are never replicates of each other.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np
import pandas as pd

from workbench.asal.legacy import SEARCH_KINDS, upgrade_config, upgrade_eval
from workbench.runs import Run, RunError, RunStore, as_run_did, catalog_row

#: What a band over a setting's seeds spans (Comparison.bands), in the words a figure's title gives it: the range
#: of the runs (the default: every run inside it), the mean ± one sample standard deviation, or Student's t 95%
#: confidence interval of the mean (mean ± t(0.975, n − 1) · sd / √n). A setting of one run has no spread: its band
#: is its curve.
BANDS = {"range": "lowest to highest run", "sd": "mean ± 1 sd", "ci95": "95% CI of the mean (Student's t)"}


def check_band(band: str) -> str:
    """`band` if it is one of BANDS, else one ValueError naming --band and the bands there are."""
    if band not in BANDS:
        raise ValueError(f"--band must be one of {', '.join(BANDS)}, got {band!r}")
    return band

#: The setting that makes runs replicates: runs that differ only there (and in CONTEXT_KEYS) repeat one setting.
REPLICATE_KEYS = ("config.seed",)
#: Settings that say where or how a run was computed, not what: the device, threads, the batching of simulations
#: or candidates into tasks, how QD children reach Dask workers. Shown when they differ, never split replicates
#: (each run kind documents the same results for any of them, up to floating-point order on another device).
CONTEXT_KEYS = ("config.device", "config.eval.device", "config.threads", "config.chunk", "config.eval.chunk",
                "config.transfer")
#: A run's length where a kind's run goes on to any total (a resume extends it) and its iteration i does not depend
#: on the total: runs that differ only there repeat one setting, compared at the iteration all of them have reached
#: (RunGroup.at_iteration). Shown when they differ, never split replicates (seeds run with --iters 5 and 3 made two
#: settings). NAMM's --gens (its curriculum's stages split them) and an expert's --iters are settings.
BUDGET_KEYS = {**{kind: "config.iters" for kind in SEARCH_KINDS}, "merge": "config.iters", "qd": "config.gens"}
#: what an illumination's curve is: its population's (the GA's) or archive's (MAP-Elites') loss at each iteration
POPULATION_METRIC = "population's illumination loss"
#: a search's "loss" by what it minimises: a target search's and an open-ended one's are other quantities, apart
# on a figure's axes (one axis labelled "best loss" held both)
LOSS_NAMES = {"target": "target loss", "openended": "open-endedness loss", "sweep": "open-endedness loss"}
LABEL_CHARS = 60  # a label past this long is not read: a group is named by its substrate and first run, a run by id


@dataclass
class RunGroup:
    """Runs of one kind whose settings are equal but for REPLICATE_KEYS, CONTEXT_KEYS and its BUDGET_KEYS.

    label: the settings that tell this group from the others of its kind ("sigma=0.2, pop=16"; with other
    kinds compared, the kind first), or the kind and substrate when nothing tells them apart. at_iteration: the
    last iteration every run of the group with metrics has reached (None: none has metrics yet). bests: each
    run's best so far at that iteration, in its own metric (None for a run without metrics), so that runs
    still going and runs that are done compare at one budget; higher: whether a higher best is better."""

    label: str
    kind: str
    metric: str
    higher: bool
    ids: list[str] = field(default_factory=list)
    seeds: list[Any] = field(default_factory=list)
    bests: list[float | None] = field(default_factory=list)
    at_iteration: int | None = None
    #: runs that repeat an earlier run's seed (id -> that run's id): the same computation again, counted once
    repeats: dict[str, str] = field(default_factory=dict)

    def stats(self) -> dict:
        """n runs with a finite best at `at_iteration` (a run repeating another's seed counted once), and their
        mean, sample standard deviation, Student's t 95% confidence interval of the mean as [lo, hi] (both None
        for one run), min and max."""
        values = [b for i, b in zip(self.ids, self.bests, strict=True)
                  if i not in self.repeats and b is not None and math.isfinite(b)]
        n = len(values)
        if not n:
            return {"n": 0, "mean": None, "std": None, "ci95": None, "min": None, "max": None}
        mean = sum(values) / n
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
        ci95 = None
        if std is not None:
            from scipy.stats import t

            half = float(t.ppf(0.975, n - 1)) * std / math.sqrt(n)
            ci95 = [mean - half, mean + half]
        return {"n": n, "mean": mean, "std": std, "ci95": ci95, "min": min(values), "max": max(values)}

    def to_dict(self) -> dict:
        return {"label": self.label, "kind": self.kind, "metric": self.metric,
                "better": "higher" if self.higher else "lower", "ids": self.ids, "seeds": self.seeds,
                "at_iteration": self.at_iteration, "bests": self.bests, "repeats": self.repeats,
                **{f"best_{k}" if k != "n" else k: v for k, v in self.stats().items()}}


@dataclass
class Comparison:
    """Runs side by side (see the module doc). rows: their catalog rows, in the order asked; curves: best so far
    by iteration in each run's own metric (run_id, iteration, best, metric); labels: each run's legend label
    (run_labels)."""

    rows: list[dict]
    differs: dict[str, dict[str, Any]]
    groups: list[RunGroup]
    curves: pd.DataFrame
    labels: dict[str, str] = field(default_factory=dict)
    #: runs left out of the curves: their metrics.parquet could not be read (damaged, or not a metrics table)
    unreadable: dict[str, str] = field(default_factory=dict)

    @property
    def has_replicates(self) -> bool:
        """Whether some setting was run with more than one seed (then curves are drawn per setting)."""
        return any(len(g.ids) > 1 for g in self.groups)

    def bands(self, band: str = "range") -> pd.DataFrame:
        """Per group and iteration up to the group's `at_iteration` (so that every run with metrics counts at
        every point: past it a mean of fewer runs would jump): the mean best so far over the group's runs, the
        band around it (lo, hi: see BANDS; "range", the lowest and highest run, by default) and how many runs (n).
        A group of one run is its curve with lo = hi."""
        check_band(band)
        columns = ["group", "iteration", "mean", "lo", "hi", "n", "metric"]
        if self.curves.empty:
            return pd.DataFrame(columns=columns)
        label = {run_id: g.label for g in self.groups for run_id in g.ids if run_id not in g.repeats}
        until = {run_id: g.at_iteration for g in self.groups for run_id in g.ids}
        df = self.curves.assign(group=self.curves["run_id"].map(label))
        # as the groups' stats: a repeated seed once, non-finite values not at all (a mean of inf is no curve)
        df = df[df["group"].notna() & (df["iteration"] <= df["run_id"].map(until))]
        df = df[df["best"].map(lambda v: v is not None and math.isfinite(v))]
        out = (df.groupby(["group", "iteration"], sort=False)
               .agg(mean=("best", "mean"), lo=("best", "min"), hi=("best", "max"), n=("best", "count"),
                    sd=("best", "std"), metric=("metric", "first"))
               .reset_index())
        # the groups as first met, each in iteration order: grouped unsorted, a group whose first run scored nothing
        # at iteration 0 (NaN, dropped above) had its iteration 0 last, and its mean line drew a stroke back across
        # the figure to it
        first = {g: i for i, g in enumerate(dict.fromkeys(out["group"]))}
        out = out.sort_values(["group", "iteration"], key=lambda c: c.map(first) if c.name == "group" else c,
                              kind="stable", ignore_index=True)
        if band != "range":
            n = out["n"].to_numpy()
            sd = np.nan_to_num(out["sd"].to_numpy(float))  # one run: no spread (pandas' sample sd is NaN)
            if band == "sd":
                half = sd
            else:
                from scipy.stats import t

                half = t.ppf(0.975, np.maximum(n - 1, 1)) * sd / np.sqrt(n)
            out["lo"], out["hi"] = out["mean"] - half, out["mean"] + half
        return out[columns]

    def differs_within(self, kind: str) -> list[str]:
        """The settings of `differs` whose values differ among the runs of `kind` (across kinds, every setting one
        kind has and another has not differs)."""
        ids = [r["id"] for r in self.rows if str(r["kind"]) == kind]
        return [k for k, values in self.differs.items()
                if len({repr(_canonical(_frozen(values[i]))) for i in ids}) > 1]

    def to_dict(self) -> dict:
        """JSON-able: runs (per id: catalog columns and best_loss per iteration), differs, groups, unreadable
        (run id -> why its metrics were left out)."""
        runs = {}
        for row in self.rows:
            runs[row["id"]] = {k: row.get(k) for k in ("kind", "substrate", "fm", "status", "iterations",
                                                         "best_loss", "seed", "metric", "better", "best")}
            mine = self.curves[self.curves["run_id"] == row["id"]]
            runs[row["id"]]["best_loss_by_iteration"] = [None if pd.isna(v) else float(v) for v in mine["best_loss"]]
        return {"runs": runs, "differs": self.differs, "groups": [g.to_dict() for g in self.groups],
                "unreadable": self.unreadable}


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

    config = dict(info.get("config") or {})
    config = as_run_did(config, kind_predates(info.get("kind")))
    asal = isinstance(config.get("eval"), dict) and "frames" in config["eval"]
    if asal:  # settings newer than the run, as the run did them
        config = upgrade_config(config) if info.get("kind") in SEARCH_KINDS else {
            **config, "eval": upgrade_eval(config["eval"])}
    walk("config", config)
    # what a run read, by content: a run keeps its own copy of an input under one name (inputs/target.png for any
    # target image) and a zoo by the path it was given, so runs toward other images, or from another zoo at the
    # same path, read as one setting. (A run made before zoos were fingerprinted: the zoo now at its path, where
    # there is one (_zoo_now), else its path, a setting.)
    for key, entry in sorted((info.get("inputs") or {}).items()):
        if isinstance(entry, dict) and entry.get("sha256"):
            out[f"inputs.{key}"] = f"sha256:{str(entry['sha256'])[:12]}"
    experts = [e.get("sha256") for e in info.get("expert_inputs") or [] if isinstance(e, dict)]
    if experts:  # then the experts are their contents: copies of them elsewhere are the same setting
        out["inputs.experts"] = tuple(f"sha256:{str(h)[:12]}" for h in experts)
        out.pop("config.experts", None)
    zoo_sha = info.get("zoo_sha256") or _zoo_now(config.get("zoo"))
    if zoo_sha:  # then the zoo is its content: where it lay (a path recorded as given, absolute in newer runs, moved
        out["inputs.zoo"] = f"sha256:{str(zoo_sha)[:12]}"  # by a resume) is no setting
        out.pop("config.zoo", None)
    if asal and out.get("config.eval.frames", 1) != 1:  # the sampling only tells K = 1 apart
        out.pop("config.eval.sampling", None)
    if asal and info.get("kind") != "illuminate":  # only illuminations seed their children apart
        out.pop("config.child_seeds", None)
    if asal and info.get("kind") == "illuminate":  # no loss reads the weights (runs made before they were refused
        for name in ("c_prompt", "c_softmax", "c_oe"):  # there may hold others): not a setting that tells runs apart
            out.pop(f"config.{name}", None)
    if asal and config.get("algorithm") != "map-elites":  # only MAP-Elites fits a descriptor
        out.pop("config.descriptor_fit", None)
    if info.get("kind") == "adapt" and not uses_cem(config):  # no CEM, no tie-break to score
        out.pop("config.stop_token", None)
    return out


def _zoo_now(zoo: object) -> str | None:
    """The fingerprint of the zoo at `zoo` as it is now (workbench.lm.zoo.zoo_fingerprint, read here without its
    torch import): a run from before runs recorded zoo_sha256 still groups with newer runs of the same zoo. None
    for no zoo, a relative path (read from where the run was started, not from here) or one not there."""
    if not isinstance(zoo, str) or not os.path.isabs(zoo):
        return None
    from workbench.runs import sha256_file

    try:
        return sha256_file(Path(zoo) / "zoo.json")  # (workbench.lm.zoo.ZOO_FILE)
    except OSError:
        return None


def uses_cem(adapt_config: dict) -> bool:
    """Whether an adapt run's settings run CEM (few-shot mixing: a target, and few-shot among its strategies, an
    empty list meaning all), the only place its stop-token rule acts."""
    strategies = adapt_config.get("strategies") or []
    return adapt_config.get("target") is not None and (not strategies or "few-shot" in strategies)


def kind_predates(kind: str | None) -> dict[str, tuple[Any, Any]]:
    """Settings newer than some runs of a Transformer² or NAMM kind, name → (default, what runs made before did).
    The ASAL kinds have workbench.asal.legacy."""
    if kind == "experts":
        from workbench.experts.run import PREDATES
    elif kind == "adapt":
        from workbench.experts.adapt import PREDATES
    elif kind == "namm":
        from workbench.namm.legacy import PREDATES  # torch-free: old runs compare without loading it
    else:
        return {}
    return PREDATES


def _frozen(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return value


def _thawed(value: Any) -> Any:
    return [_thawed(v) for v in value] if isinstance(value, tuple) else value


def _canonical(value: Any) -> Any:
    """A setting's value as a grouping key: 1 and 1.0 are one value (the Python API's int, the CLI's float),
    True stays apart from 1."""
    if isinstance(value, tuple):
        return tuple(_canonical(v) for v in value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return ("number", float(value))
    return (type(value).__name__, value)


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


def settings_key(info: dict, ignored: set[str] | frozenset[str] = frozenset()) -> tuple:
    """A run's settings (flat_settings) but the `ignored` keys, as a hashable key: runs with equal keys ran one
    setting. A setting a run has not got reads as None, as in differing_settings (NAMM's max_kept, absent from the
    runs made before it, was None there)."""
    return tuple(sorted((k, repr(_canonical(v))) for k, v in flat_settings(info).items()
                        if k not in ignored and v is not None))


def repeats_of(infos: list[dict]) -> dict[int, int]:
    """Which runs repeat an earlier one's settings and seed, where or how they ran aside (CONTEXT_KEYS): the same
    computation again, to be counted once in a spread. {index in `infos`: index of the first run it repeats}."""
    first: dict[tuple, int] = {}
    return {i: j for i, info in enumerate(infos)
            if (j := first.setdefault(settings_key(info, frozenset(CONTEXT_KEYS)), i)) != i}


def replicates_of(info: dict, candidates: Iterable[tuple[str, dict]],
                  varying: tuple[str, ...] = REPLICATE_KEYS) -> list[str]:
    """The ids of the `candidates` ((id, run.json), in order) that ran `info`'s settings but for `varying` (a seed,
    and what a seed brings: an adapt run's experts) and where or how they ran (CONTEXT_KEYS): the runs a page
    pools with `info` into a spread. One a value of `varying`, and none with `info`'s own: a run repeating another's
    is the same computation again, which counted twice and narrowed the spread (repeats_of, for a report)."""
    ignored = frozenset(varying) | frozenset(CONTEXT_KEYS)

    def seed_of(run: dict) -> tuple:
        flat = flat_settings(run)
        return tuple(repr(_canonical(flat.get(k))) for k in varying)

    mine, seen, out = settings_key(info, ignored), {seed_of(info)}, []
    for run_id, other in candidates:
        if settings_key(other, ignored) == mine and (seed := seed_of(other)) not in seen:
            seen.add(seed)
            out.append(run_id)
    return out


def group_replicates(infos: list[dict], root: str) -> list[RunGroup]:
    """Runs grouped by their settings without REPLICATE_KEYS, CONTEXT_KEYS and BUDGET_KEYS, groups in order of
    their first run. Each label names the settings that differ between the groups of its kind (not seeds, devices or
    thread counts), after the kind when runs of several kinds are compared. The groups' bests and
    at_iteration come from the runs' curves (compare_runs)."""
    ignored = set(REPLICATE_KEYS) | set(CONTEXT_KEYS)
    keyed: dict[tuple, list[dict]] = {}
    for info in infos:
        budget = BUDGET_KEYS.get(str(info.get("kind")))
        keyed.setdefault(settings_key(info, ignored | {budget}), []).append(info)
    kinds, telling = _telling_settings(infos, ignored, budgets=True)
    paths = _legend_paths(infos, telling)
    groups = []
    for members in keyed.values():
        first, row = flat_settings(members[0]), catalog_row(members[0], root)
        kind = str(row["kind"])
        # a setting the group's runs have not got is left out ("descriptor_fit=—" named a GA's); one set to None
        # (NAMM's max_kept: no cap) is said
        parts = [f"{_short(k)}={value_text(_thawed(first.get(k)), paths=paths)}" for k in telling[kind] if k in first]
        label = ", ".join(parts)
        if len(label) > LABEL_CHARS:  # too many differences to read: name the group by its first run
            label = f"{row['substrate']} · {row['id']}"
        if len(kinds) > 1 or not label:
            label = f"{kind} · {label or row['substrate']}"
        groups.append(RunGroup(label=label, kind=kind, metric=str(row["metric"]), higher=row["better"] == "higher",
                               ids=[m["id"] for m in members],
                               seeds=[(m.get("config") or {}).get("seed", m.get("seed")) for m in members]))
    _disambiguate(groups)
    return groups


def run_labels(infos: list[dict], root: str) -> dict[str, str]:
    """A legend label per run (id -> label) for curves of single runs: the settings that tell it from the other
    runs of its kind, its seed included ("sigma=0.3, seed=1"; not devices, threads or chunking), after its kind
    when several kinds are drawn. Where its label would be too long to read (LABEL_CHARS) it is the run's title
    (run_title: "illuminate · boids · pixels · map-elites · seed 0"; it was its id); a run keeps its id where
    nothing tells it apart or where another run reads the same."""
    kinds, telling = _telling_settings(infos, set(CONTEXT_KEYS))
    paths = _legend_paths(infos, telling)
    labels = {}
    for info in infos:
        kind, settings = str(info.get("kind")), flat_settings(info)
        label = ", ".join(f"{_short(k)}={value_text(_thawed(settings.get(k)), paths=paths)}" for k in telling[kind]
                          if k in settings)  # one the run has not got is left out (one set to None is said)
        if len(kinds) > 1:
            label = f"{kind} · {label or catalog_row(info, root)['substrate']}"
        labels[info["id"]] = (label if len(label) <= LABEL_CHARS else run_title(info, root)) if label else info["id"]
    times = Counter(labels.values())
    return {i: i if times[label] > 1 else label for i, label in labels.items()}


def what_text(row: dict) -> str:
    """What a catalog row's run is, in the values that describe its kind (its `columns`, runs.KIND_COLUMNS; the
    substrate and FM without them), joined by " · ": "boids · clip · cma", "ties · a+b", "add · svf"."""
    return " · ".join(value_text(row.get(c)) for c in row.get("columns") or ("substrate", "fm")
                      if row.get(c) not in (None, "", []))


def run_title(info: dict, root: str | Path) -> str:
    """A figure's title for one run, in words rather than its id: its kind and the columns the run list shows for
    that kind, then its seed ("openended · boids · clip · sep-cma-es · seed 0"; "merge · ties · a+b · seed 1")."""
    row = catalog_row(info, root)
    parts = [str(row["kind"]), *filter(None, [what_text(row)])]
    if row.get("seed") is not None:
        parts.append(f"seed {row['seed']}")
    return " · ".join(parts)


def _telling_settings(infos: list[dict], ignored: set[str], budgets: bool = False
                      ) -> tuple[list[str], dict[str, list[str]]]:
    """The kinds of the runs (in order) and, per kind, the settings that differ among its runs, less `ignored`
    (budgets: and less the kind's BUDGET_KEYS)."""
    kinds = list(dict.fromkeys(str(info.get("kind")) for info in infos))
    return kinds, {kind: [k for k in differing_settings([i for i in infos if str(i.get("kind")) == kind])
                          if k not in ignored and not (budgets and k == BUDGET_KEYS.get(kind))] for kind in kinds}


def _short(key: str) -> str:
    """A setting's name in a legend: `config.eval.fm` -> `fm` (an ASAL run's evaluation settings are its flags:
    --fm, --steps), `config.sigma` -> `sigma`, `kind` -> `kind`."""
    return key.removeprefix("config.").removeprefix("eval.")


def value_text(value: Any, missing: str = "—", paths: dict[str, str] | None = None) -> str:
    """A setting's value as tables and labels show it: floats short (0.1, 1e-05), models or tasks joined by +,
    numbers (a range) in brackets, `missing` for None (absent from the run's config: older runs lack newer
    settings; or set to None); a string in `paths` as it says (a legend's short paths, short_paths)."""
    if value is None:
        return missing
    if isinstance(value, (list, tuple)):
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        parts = [value_text(v, missing, paths) for v in value]
        return f"[{', '.join(parts)}]" if numbers else "+".join(parts)
    if isinstance(value, float):
        return f"{value:g}"
    if paths and isinstance(value, str) and value in paths:
        return paths[value]
    return str(value)


def short_paths(values: Iterable[Any]) -> dict[str, str]:
    """Each absolute path among `values` (lists and tuples searched too) by its fewest last parts that tell it from
    the others: a figure's legend says `model=base` and `model=base2` (or `a/base` and `b/base`), not where a
    researcher's disk keeps them (`model=/home/alice/thesis/zoo/base` went into the paper). Relative paths and
    other strings are left as they are, and no absolute path is shortened to one of them (`/x/base` beside `base` is
    `x/base`: both read `base`, and the legend fell back to run ids)."""
    found: set[str] = set()
    texts: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, (list, tuple)):
            for v in value:
                walk(v)
        elif isinstance(value, str):
            texts.add(value)
            if PurePosixPath(value).is_absolute() or PureWindowsPath(value).is_absolute():
                found.add(value)

    def parts_of(p: str) -> tuple[str, ...]:
        return (PureWindowsPath(p) if PureWindowsPath(p).drive else PurePosixPath(p)).parts

    for value in values:
        walk(value)
    parts = {p: parts_of(p) for p in found}
    shown = {parts_of(t) for t in texts - found}  # the other strings, as they are shown
    out = {}
    for p in found:
        mine = parts[p]
        for n in range(1, len(mine) + 1):  # the whole path at the end: one that ends another is told apart by it
            if all(other[-n:] != mine[-n:] for q, other in parts.items() if q != p) and mine[-n:] not in shown:
                break
        out[p] = p if n == len(mine) else "/".join(mine[-n:])
    return out


def _legend_paths(infos: list[dict], telling: dict[str, list[str]]) -> dict[str, str]:
    """short_paths of the values that a legend of `infos` names (each kind's `telling` settings)."""
    values = []
    for info in infos:
        settings = flat_settings(info)
        values += [_thawed(settings[k]) for k in telling.get(str(info.get("kind")), []) if k in settings]
    return short_paths(values)


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


def best_curves(store: RunStore | str | Path, infos: list[dict],
                unreadable: dict[str, str] | None = None) -> pd.DataFrame:
    """Best so far by iteration of each run, in its own metric: run_id, iteration, best_loss, best, metric. Read
    from each run's metrics.parquet (RunStore.metrics would rebuild the store's whole catalog once per run). A run
    whose metrics cannot be read is one RunError naming it, or, given a dict `unreadable`, left out and named there
    (run id -> why)."""
    store = RunStore.of(store)
    frames = []
    for info in infos:
        path = store.root / info["id"] / "metrics.parquet"
        if not path.is_file():
            continue
        try:
            table = Run(path.parent).metrics_table("iteration", "best_loss")  # one RunError naming a damaged file
        except RunError as exc:
            if unreadable is None:
                raise
            unreadable[info["id"]] = str(exc)
            continue
        df = table.select(["iteration", "best_loss"]).to_pandas().sort_values("iteration", kind="stable")
        if df.empty:
            continue
        df.insert(0, "run_id", info["id"])
        row = catalog_row(info, store.root)
        higher = row["better"] == "higher"
        # an illumination's loss is its population's (or archive's) at each iteration, not a best so far
        metric = POPULATION_METRIC if info.get("kind") == "illuminate" else row["metric"]
        if metric == "loss":
            metric = LOSS_NAMES.get(info.get("kind"), metric)
        if info.get("kind") != "illuminate":
            # a non-finite value (an inf while no member had scored: a first population all NaN; a NaN after a
            # score) takes the run's last finite one: it dropped the run from a band's mean at those iterations
            # (n=2 of 3, the mean jumping) or cut its line; before any score it stays NaN (no point drawn). Not a
            # running min: the stored value is each kind's own best so far (NAMM's restarts with each stage)
            finite = df["best_loss"].where(np.isfinite(df["best_loss"].astype(float)))
            df = df.assign(best_loss=finite.ffill())
        frames.append(df.assign(best=-df["best_loss"] if higher else df["best_loss"], metric=metric))
    if not frames:
        return pd.DataFrame(columns=["run_id", "iteration", "best_loss", "best", "metric"])
    return pd.concat(frames, ignore_index=True)


#: a metric's name in words, as axes and pages say it (a CycleQD run's "qd_score" read "best qd_score"; its page
#: says QD score; the Experts page says validation accuracy)
METRIC_WORDS = {"qd_score": "QD score", "val_accuracy": "validation accuracy"}


def curves_label(metrics) -> str:
    """The y axis of curves in these metrics: "best loss", "best fitness / loss", "best loss / illumination loss
    of the population" (an illumination's is not a best so far)."""
    names = sorted({METRIC_WORDS.get(m, m) for m in metrics})
    bests = [m for m in names if m != POPULATION_METRIC]
    parts = [f"best {' / '.join(bests)}"] if bests else []
    if POPULATION_METRIC in names:
        parts.append(POPULATION_METRIC)
    return " / ".join(parts) or "best"


def check_ids(ids: list[str]) -> None:
    """One error unless `ids` names two or more runs, none twice."""
    if isinstance(ids, str):  # its letters would be read as run ids
        raise ValueError(f"give a list of two or more run ids to compare, got the one string {ids!r}")
    if len(ids) < 2:
        raise ValueError(f"give two or more runs to compare, got {len(ids)}")
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise ValueError(f"give different runs to compare: {', '.join(twice)} is named more than once")


def compare_runs(store: RunStore | str | Path, ids: list[str]) -> Comparison:
    """Compare the runs `ids` names (ids or unique prefixes; at least two different runs)."""
    store = RunStore.of(store)
    check_ids(ids)
    runs = [store.open(i) for i in ids]
    check_ids([r.id for r in runs])  # a prefix and its full id name one run
    infos = [r.info for r in runs]
    unreadable: dict[str, str] = {}
    curves = best_curves(store, infos, unreadable)  # a run with damaged metrics: its settings still compared
    groups = group_replicates(infos, str(store.root))
    for group in groups:  # each run's best at the iteration all of the group's runs with metrics have reached
        mine = curves[curves["run_id"].isin(group.ids)]
        last = mine.groupby("run_id").tail(1).set_index("run_id")["best"]  # each run's latest best
        # a seed run twice is one computation: the run that counts is the first with a finite latest best (a
        # repeat that stopped early or failed neither lowers the group's budget nor stands in for the other)
        counting: dict[Any, str] = {}
        for run_id, seed in zip(group.ids, group.seeds, strict=True):
            if seed is None:
                continue
            finite = run_id in last.index and math.isfinite(last[run_id])
            held = counting.get(seed)
            if held is None or (finite and not (held in last.index and math.isfinite(last[held]))):
                counting[seed] = run_id
        group.repeats = {run_id: counting[seed] for run_id, seed in zip(group.ids, group.seeds, strict=True)
                         if seed is not None and counting[seed] != run_id}
        counted = mine[~mine["run_id"].isin(group.repeats)]
        if counted.empty:
            group.bests = [None] * len(group.ids)
            continue
        group.at_iteration = int(counted.groupby("run_id")["iteration"].max().min())
        # each run's row at that iteration (the last one up to it): a NaN there is the run's value, not skipped
        upto = mine[mine["iteration"] <= group.at_iteration].groupby("run_id").tail(1).set_index("run_id")["best"]
        group.bests = [None if i not in upto.index or pd.isna(upto[i]) else float(upto[i]) for i in group.ids]
    return Comparison(rows=[catalog_row(info, store.root) for info in infos], differs=differing_settings(infos),
                      groups=groups, curves=curves, labels=run_labels(infos, str(store.root)), unreadable=unreadable)
