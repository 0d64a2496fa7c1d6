"""`workbench runs list|show|compare|note|rm`: the run store's catalog."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console

from workbench.cli.common import POSITIVE, err, json_text, say

#: The families of runs `runs list` shows in tables of their own (other kinds: ASAL searches).
TITLES = {"asal": "ASAL searches", "merge": "merge evolutions", "qd": "CycleQD runs",
          "experts": "Transformer² expert trainings", "adapt": "Transformer² adaptations",
          "namm": "NAMM trainings"}
#: Header names where a family stores its describing values in the catalog's generic columns.
LABELS = {"experts": {"substrate": "task", "fm": "adapter"}, "adapt": {"substrate": "target", "fm": "experts"},
          "namm": {"substrate": "tasks", "fm": "model"}}


def _runs_tables(rows: list[dict]) -> None:
    """`workbench runs list`: one table per family of runs (ASAL searches, merge evolutions, CycleQD runs), each
    with the columns that describe its runs, and the best value in its metric's units and direction."""
    from rich.measure import Measurement
    from rich.table import Column, Table

    from workbench.runs import step_unit, steps_done

    tables = []
    families = {}
    for r in rows:
        families.setdefault(r["kind"] if r["kind"] in TITLES else "asal", []).append(r)
    for family, group in families.items():
        describe = list(dict.fromkeys(c for r in group for c in r["columns"]))
        best = _best_header(group)
        kind = ["kind"] if family == "asal" else []
        cells = [[", ".join(v) if isinstance(v := r.get(c), list) else "" if v is None else str(v) for c in describe]
                 for r in group]
        noted = any(r.get("note") for r in group)  # the researchers' notes: a column once one is written

        def folded(header: str, texts: list[str], least: int = 1) -> Column:
            # as wide as its longest text up to 40, longer ones folded there (a model's folder path): never cut
            return Column(header, overflow="fold", width=min(max(len(header), least, *map(len, texts)), 40))

        headers = [folded(LABELS.get(family, {}).get(c, c), [row[i] for row in cells]) for i, c in enumerate(describe)]
        # the others read whole (an id; "interrupted", not "interrupt…")
        whole = [Column(h, no_wrap=True) for h in (*kind, "status", step_unit(family), best, "id")]
        table = Table(*whole[:len(kind)], *headers, *whole[len(kind):],
                      *([folded("note", [r.get("note") or "" for r in group], 12)] if noted else []),
                      title=TITLES[family])
        for r, described in zip(group, cells, strict=True):
            value = "" if r["best"] is None else f"{r['best']:.4f}"
            done = str(steps_done(r["kind"], r["iterations"])[0])
            table.add_row(*([r["kind"]] if kind else []), *described, r["status"], done, value, r["id"],
                          *([r.get("note") or ""] if noted else []))
        tables.append(table)
    # as wide as the terminal, at least 140 columns, and wider where a table's whole cells and its note column (at
    # most 40 wide, folded) need it: a note's column cut the table's right border off and its fm, status and step
    # columns to "efficient…"
    probe = Console(width=10_000)
    widest = max((Measurement.get(probe, probe.options, t).maximum for t in tables), default=0)
    console = Console(width=max(Console().width, 140, widest), markup=False)
    for table in tables:
        console.print(table)
    for r in rows:
        if r["resume_command"] and r["status"] == "interrupted":
            err.print(f"{r['id']} was interrupted; resume it with: {r['resume_command']}", soft_wrap=True)


def _best_header(rows: list[dict]) -> str:
    """The best column's header for catalog rows: each metric with its direction ("best loss ↓ / best fitness ↑")."""
    metrics = sorted({(r["metric"], r["better"]) for r in rows})
    return " / ".join(f"best {m} {'↓' if b == 'lower' else '↑'}" for m, b in metrics)


def cmd_runs(args) -> int:
    from workbench.runs import RunError, RunStore, checked_catalog_row, whole_total

    store = RunStore(args.runs)
    if args.action in ("list", "rm") and not store.root.is_dir():
        # a mistyped --runs printed an empty list and exited 0: a script could not tell it from an empty store
        raise ValueError(f"--runs {args.runs}: no such folder, so no run store there; give --runs the folder the runs "
                         f"were written to (each command's --runs, default: runs in the folder it ran in)")
    if args.action == "list":
        rows = store.list()
        if args.json:
            print(json_text(rows))
        elif not rows:  # an empty table says nothing; say where we looked
            err.print(f"no runs in {store.root}")
        else:
            _runs_tables(rows)
        for name, why in store.unreadable_why.items():  # as broken(), from the list just read, each with its why
            say("warning", f"{name} is not readable as a run, left out: {why}")  # the Runs page's words
        for path in store.unreadable_metrics:
            say("warning", f"{path} is not readable Parquet; that run is listed without its metrics")
        for name in store.orphaned():
            say("warning", f"{name} holds a run's files but no run.json (deleted or lost?): it cannot be listed or "
                           f"resumed without it; restore run.json from a backup, or delete the folder")
        for name in store.unfinished():
            left = "holds only the inputs of" if (store.root / name / "inputs").is_dir() else "is the empty folder of"
            say("note", f"{name} {left} a run killed as it was created (no run.json): there is nothing to resume; "
                        f"delete the folder")
        return 0
    if args.action == "show":
        run = store.open(args.ids[0])
        info = run.info
        row = checked_catalog_row(info, store.root)  # a run the catalog cannot hold: why (a TypeError traceback)
        # the live status ("interrupted" when the process is gone) and how to go on; run.json's own as written
        info.update({k: row[k] for k in ("status", "metric", "better", "best", "resume_command", "note")},
                    recorded_status=info.get("status"))  # (a run.json without one: a KeyError traceback)
        try:
            metrics = store.metrics(run.id)
        except RunError as error:  # the record is still worth showing
            say("warning", str(error))
            metrics = None
        # a long run has a row an iteration (10 000 rows, 3 MB of JSON): --tail keeps its last few; metrics_rows
        # says how many there are in all
        info["metrics_rows"] = None if metrics is None else len(metrics)
        # an ASAL run's candidates whose simulation diverged (ranked last), over all its rows, as `workbench asal`
        # warns of them and the Search page says them: --tail's last rows do not; only where its metrics count
        # them (a run of an older version has no such column, and nulls in the rows it did before a resume)
        if metrics and "diverged" in metrics[0]:
            info["diverged"] = whole_total(metrics, "diverged")
        info["metrics"] = metrics[-args.tail:] if metrics and args.tail else metrics
        info["files"] = sorted(p.name for p in run.path.iterdir() if not p.name.startswith("."))
        # for reading, ids and notes as written (a run named "…ü…" printed \u00fc); --json as the other commands'
        # indented for reading, in its own letters where stdout shows them (a note in ü: its \u escape otherwise,
        # as --json writes; the escape a stdout of another encoding makes of ü is no JSON)
        utf8 = "utf" in (getattr(sys.stdout, "encoding", None) or "utf").lower()
        print(json_text(info, indent=None if args.json else 2, default=str, ensure_ascii=bool(args.json) or not utf8))
        return 0
    if args.action == "rm":
        return _remove(store, args)
    if args.action == "note":
        run = store.open(args.ids[0])
        print(run.set_note(args.text) if args.text is not None else run.note)
        return 0
    from workbench.compare import compare_runs

    comparison = compare_runs(store, args.ids)
    for run_id, why in comparison.unreadable.items():  # on stderr: the JSON on stdout stays one object
        say("warning", f"{run_id} left out of the curves: {why}")
    if args.json:
        print(json_text(comparison.to_dict(), default=str))
    else:
        _compare_tables(comparison)
    return 0


def _compare_tables(comparison) -> None:
    """`workbench runs compare`: the runs with the settings that differ between them, then, where some runs
    repeat one setting with other seeds, each setting's best over its seeds."""
    from rich.table import Column, Table

    from workbench.compare import value_text
    from workbench.runs import step_unit, steps_done

    console = Console(width=max(Console().width, 140), markup=False)
    # the settings that differ among the runs of each kind (those of one kind are absent from another's config:
    # across kinds every setting "differs"), less the seed and the kind, which have columns of their own
    kinds_shown = {kind: [k for k in comparison.differs_within(kind) if k not in ("config.seed", "config.kind")]
                   for kind in dict.fromkeys(str(r["kind"]) for r in comparison.rows)}
    shown = list(dict.fromkeys(k for keys in kinds_shown.values() for k in keys))
    best = _best_header(comparison.rows)
    whole = {"no_wrap": True, "overflow": "ignore"}  # ids and numbers are read whole or not at all
    # "same settings" only where it is so: runs of one kind, none of whose settings differ (across kinds the
    # settings are not compared at all)
    note = "" if shown else " (same settings)" if len(kinds_shown) == 1 else " (different kinds: settings not compared)"
    # one unit for the column: CycleQD's generations where every run is one (runs list counts them so too); of
    # mixed units each run's count says its own (a qd run's 3 iterations are its 2 generations)
    units = {step_unit(r["kind"]) for r in comparison.rows}
    unit = units.pop() if len(units) == 1 else "done"
    noted = any(r.get("note") for r in comparison.rows)  # the researchers' own words on the runs
    table = Table(Column("id", **whole), "kind", "seed", *[k.removeprefix("config.") for k in shown], "status",
                  Column(unit, **whole), Column(best, **whole),
                  *([Column("note", overflow="fold", min_width=12)] if noted else []), title="runs compared" + note)
    for r in comparison.rows:
        mine = kinds_shown.get(str(r["kind"]), [])
        cells = [value_text(comparison.differs[k][r["id"]]) if k in mine else "" for k in shown]
        value = "" if r["best"] is None else f"{r['best']:.4f}"
        done = steps_done(r["kind"], r["iterations"])
        done = f"{done[0]} {done[1]}" if unit == "done" else str(done[0])
        table.add_row(r["id"], str(r["kind"]), value_text(r["seed"]), *cells, r["status"], done, value,
                      *([r.get("note") or ""] if noted else []))
    console.print(table)
    if comparison.has_replicates:
        group_units = {step_unit(g.kind) for g in comparison.groups}
        after = f"after {group_units.pop()}" if len(group_units) == 1 else "after"
        groups = Table("setting", "runs", "seeds", Column(after, **whole),
                       Column(f"{best}: mean ± sd", **whole), Column("95% CI", **whole), Column("min", **whole),
                       Column("max", **whole),
                       title="over seeds (each run's best after the iterations all of them did)")
        for g in comparison.groups:
            s = g.stats()
            mean = "" if s["mean"] is None else f"{s['mean']:.4f}" + ("" if s["std"] is None else f" ± {s['std']:.4f}")
            done = None if g.at_iteration is None else steps_done(g.kind, g.at_iteration + 1)
            seeds = ", ".join(map(value_text, dict.fromkeys(g.seeds)))  # a seed repeated is one (counted once)
            groups.add_row(g.label, str(len(g.ids) - len(g.repeats)), seeds,
                           "" if done is None else str(done[0]) if after != "after" else f"{done[0]} {done[1]}", mean,
                           "" if s["ci95"] is None else f"{s['ci95'][0]:.4f} to {s['ci95'][1]:.4f}",
                           *("" if s[k] is None else f"{s[k]:.4f}" for k in ("min", "max")))
        console.print(groups)
        for g in comparison.groups:
            for run_id, first in g.repeats.items():
                say("note", f"{run_id} repeats the seed of {first} (the same computation): counted once")
        budgets = {}
        for g in comparison.groups:
            if g.at_iteration is not None:
                budgets.setdefault(g.kind, set()).add(steps_done(g.kind, g.at_iteration + 1)[0])
        for kind, done in budgets.items():
            if len(done) > 1:
                say("note", f"the {kind} settings are summarised after different numbers of {step_unit(kind)} "
                            f"({', '.join(map(str, sorted(done)))}): a setting whose run stopped early or is still "
                            "running is compared at that run's budget")


def _remove(store, args) -> int:
    """`workbench runs rm`: the runs named (ids, and every run of each --status) listed, every one checked
    (none running) before any is removed; removed with --yes, else only listed."""
    if not args.ids and not args.status:
        raise ValueError("name the runs to remove: run ids (or unique prefixes), or --status failed|interrupted|"
                         "stopped for every run of that status")
    ids = [store.resolve(i) for i in args.ids]
    rows = {r["id"]: r for r in store.list()}
    ids += [i for i, r in rows.items() if r["status"] in (args.status or ())]
    runs = store.removable(dict.fromkeys(ids))  # all of them, before any goes
    if not runs:
        err.print(f"no {' or '.join(args.status)} runs in {store.root}: nothing to remove")
        return 0
    for run in runs:
        r = rows.get(run.id)
        # one the catalog left out: why, as `runs list` says it
        why = store.unreadable_why.get(run.id, "run.json does not read")
        print(f"{run.id}  ({r['kind']}, {r['status']})" if r else f"{run.id}  (not readable as a run: {why})")
    if not args.yes:
        err.print(f"nothing removed: these {len(runs)} run(s) go, folders and all, with --yes")
        return 0
    store.remove_all(runs)
    err.print(f"removed {len(runs)} run(s) from {store.root}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    runs = sub.add_parser("runs", help="the run store: list, show, compare, note, rm")
    from workbench.cli import IntermixedParser  # (ids on either side of --runs, as scripts write them)

    runs_sub = runs.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=IntermixedParser)
    for name, n, text in (("list", 0, "all runs"), ("show", 1, "one run with its metrics"),
                          ("compare", "+", "two or more runs side by side: the settings that differ, and runs that "
                                           "differ only by seed summarised over their seeds")):
        r = runs_sub.add_parser(name, help=text)
        if n:
            r.add_argument("ids", nargs=n, metavar="ID", help="a run id or a unique prefix of one")
        r.add_argument("--runs", default="runs", help="run store folder (default: runs)")
        r.add_argument("--json", action="store_true", help="one JSON line (default: indented JSON)" if name == "show"
                       else "JSON instead of a table")
        if name == "show":
            r.add_argument("--tail", type=POSITIVE, metavar="N",
                           help="only the last N rows of its metrics (default: every row; metrics_rows counts them)")
        r.set_defaults(func=cmd_runs)
    r = runs_sub.add_parser("note", help="a run's note (what it is for): written with TEXT ('' removes it), else "
                                         "printed; runs list, the Runs page and its search show it")
    r.add_argument("ids", nargs=1, metavar="ID", help="a run id or a unique prefix of one")
    r.add_argument("text", nargs="?", metavar="TEXT", help="the note (at most 2000 characters; '' removes it)")
    r.add_argument("--runs", default="runs", help="run store folder (default: runs)")
    r.set_defaults(func=cmd_runs)
    r = runs_sub.add_parser("rm", help="remove runs for good, folders and all: by id, or every run of a status; "
                                       "lists them, and removes them with --yes",
                            description="Their folders go too: metrics, checkpoints, figures. A run that is running "
                                        "or being resumed is refused, and then none is removed.")
    r.add_argument("ids", nargs="*", metavar="ID", help="run ids or unique prefixes")
    r.add_argument("--status", action="append", choices=("failed", "interrupted", "stopped"),
                   help="every run of this status too (repeatable)")
    r.add_argument("--yes", action="store_true", help="remove them (without it: only list them)")
    r.add_argument("--runs", default="runs", help="run store folder (default: runs)")
    r.set_defaults(func=cmd_runs)
