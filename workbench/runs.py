"""The run store: one folder per run, atomic writes, checkpoints for resume, a DuckDB catalog.

    RUNS/<run-id>/run.json          config, seed, command line, package versions, inputs, status, heartbeat
                  metrics.parquet   one row per iteration
                  population.parquet θ of the final population / archive (an illumination: embeddings, seeds)
                  best.npy, best.png, best.mp4, atlas.png
                  population.png    the latest evaluated population's final frames (an ASAL search)
                  inputs/<name>     copies of the input files (a target image), hashed in run.json
                  checkpoint.json   the search and everything the loop needs to go on, as plain JSON…
                  checkpoint-<sha256>.npz   …and its arrays (named by their hash in checkpoint.json)
                  checkpoint-<key>-<token>.jsonl   …and its append-only rows (metrics, evaluations), a JSON row a line

Every file is written through workbench.atomic (a temporary name in the same folder, then a rename), so
a crash leaves either the old or the new file, never half of one. A checkpoint is a pair: the arrays go
first, under a name made of their hash, then checkpoint.json names them; older array files are deleted
only after that, so a crash at any point leaves a checkpoint.json whose arrays exist and match. The rows that
only grow (APPEND_ONLY) are appended to their .jsonl file, not rewritten (rewritten, a recipe evolution of 1,000
iterations wrote 1.6 GB of checkpoints); checkpoint.json records how many of its bytes (rows, sha256) are the
checkpoint's, so the part of a row a kill left past them is ignored. A file is only ever appended to past the
bytes a checkpoint.json counts: where the rows must be written whole (a process's first save, a list cut short),
they go to a new file, and the old one is deleted once checkpoint.json names the new one, as the arrays are.

Nothing in a run folder is a pickle: a folder someone else wrote can be resumed without running their
code. Checkpoints of older versions (checkpoint.pkl) are refused unless the caller trusts the folder
(`--trust-pickle`, `trust_pickle=True`).

A running process writes a heartbeat into run.json (time, pid, host) every iteration; a run whose
run.json says "running" but whose process is gone (or, on another host, whose heartbeat is stale) is
reported as "interrupted", with the command that resumes it. A process resuming a run holds
.resume.lock (flock) from the moment it reopens the run to the end of its loop, and a run function's new run
from its creation to the end of its loop; another resume, and a removal, is refused.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import io
import itertools
import json
import math
import os
import pickle
import platform
import re
import shlex
import shutil
import socket
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

try:
    import fcntl
except ImportError:  # Windows: no flock; there run.json's status and heartbeat alone guard a resume
    fcntl = None

from workbench.atomic import atomic_write, sweep_partial_writes, write_png
from workbench.checkpoint import CheckpointError, pack, unpack
from workbench.checks import MemoryNeedError, count, file_above, is_whole, same_paths, shell_path, user_path

if TYPE_CHECKING:
    import duckdb
    import numpy as np
    import pandas as pd
    import pyarrow as pa

FORMAT = 1
CHECKPOINT_FORMAT = 2  # 2: the append-only rows in checkpoint-<key>-<token>.jsonl; 1 (still read): inline
#: the kinds of run that once wrote checkpoint.pkl, whose commands take --trust-pickle
PICKLED_KINDS = ("target", "openended", "illuminate", "merge")
PACKAGES = ("workbench", "torch", "open-clip-torch", "taichi", "cmaes", "ribs", "duckdb", "numpy")

#: What a run's best value measures, and which way is better.
METRICS = {"loss": "lower", "fitness": "higher", "qd_score": "higher", "val_accuracy": "higher", "accuracy": "higher"}
#: The command that continues a run of each kind.
RESUME_COMMANDS = {"target": "workbench asal target", "openended": "workbench asal openended",
                   "illuminate": "workbench asal illuminate", "merge": "workbench merge evolve",
                   "qd": "workbench qd cycle", "experts": "workbench experts train",
                   "adapt": "workbench experts adapt", "namm": "workbench namm train"}
RESUME_COMMANDS["sweep"] = "workbench asal sweep"
#: The run function that resumes a run of each kind from Python (cfg None, the store, resume=ID), for the note an
#: exception that ends a run carries (a notebook's traceback)
RESUME_FUNCTIONS = {"target": "workbench.asal.run_search", "openended": "workbench.asal.run_search",
                    "illuminate": "workbench.asal.run_search", "sweep": "workbench.asal.run_sweep",
                    "merge": "workbench.merge.evolve", "qd": "workbench.qd.run_cycleqd",
                    "experts": "workbench.experts.train_expert", "adapt": "workbench.experts.run_adapt",
                    "namm": "workbench.namm.train_namm"}
#: The catalog columns that describe a run of each kind (besides status, iterations, best, id).
KIND_COLUMNS = {"target": ("substrate", "fm", "algorithm"), "openended": ("substrate", "fm", "algorithm"),
                "illuminate": ("substrate", "fm", "algorithm"), "merge": ("method", "models"),
                "qd": ("tasks", "sampling", "mutation"),
                "experts": ("substrate", "fm"),  # substrate: the task; fm: the adapter (svf / lora)
                "adapt": ("substrate", "fm"),  # substrate: the target task ("mixed" without one); fm: experts' tasks
                "namm": ("substrate", "fm")}  # substrate: the curriculum's tasks (a+b); fm: the model
#: A run on another host whose heartbeat is older than this (seconds) is taken for interrupted.
STALE_AFTER = 600.0
RESUMABLE = ("interrupted", "stopped", "failed")
CLAIM_FILE = ".resume.lock"  # flock'ed by the process resuming the run, or running it from its creation (Run.claim)
#: a run's note, the researcher's own words on it (Run.set_note): a file of its own, which the run's process never
#: writes (run.json is rewritten by it at every heartbeat: a note written there could be lost)
NOTE_FILE = "note.txt"
MAX_NOTE = 2000  # characters: a note, not a lab book
#: the Run objects of this process that hold a claim, by resolved folder (weak: a Run that is gone let go)
_CLAIMED: weakref.WeakValueDictionary[str, Run] = weakref.WeakValueDictionary()
_CLAIM_LOCK = threading.Lock()
#: the claims made inside the releases_claims call under way (None outside one)
_CLAIMS: contextvars.ContextVar[list | None] = contextvars.ContextVar("workbench_run_claims", default=None)


def _HERE() -> str:  # noqa: N802 - reads as the holder's description
    return _pid_on(os.getpid(), socket.gethostname())


def _busy(run_id: str, running: bool, by: str) -> RunError:
    """The refusal to remove a run that runs (`running`) or that a resume holds, `by` whom: one wording whether
    check_removable saw it or remove's own claim met it after the check."""
    status = "running" if running else "held by another process (a resume)"
    return RunError(f"run {run_id} is {status} ({by}): stop it first (Ctrl-C where it runs, or stop on its page), "
                    "then remove it")


def _holder(record: tuple[str, float | None] | None) -> str:
    """Who holds a claim, as its record (Run._claim_record) names it; "another process" where it names none."""
    return record[0] if record is not None else "another process"


def _pid_on(pid: object, host: object) -> str:
    """A process as the claims and the refusals name it: "pid N on HOST"."""
    return f"pid {pid} on {host}"


def _holder_runs_it(info: dict, holder: str | None, started: float | None) -> bool:
    """Whether a run's claim is held by the process its run.json says runs it (a new run's loop, or a resume's once
    its loop began): "running", where its pid check is fooled (a container's own pid namespace, a recycled pid) or
    its heartbeat is late, rather than "resuming" (a resume setting up, which writes its pid when its loop starts).
    `started`: the holder's start time (its claim file's second line): a holder of the same pid and host that
    started later than run.json's process is another process (a restarted container's pid 1, resuming)."""
    if info.get("status") != "running" or holder != _pid_on(info.get("pid"), info.get("host")):
        return False
    recorded = info.get("pid_started")
    return not (recorded and started and abs(started - recorded) > 1.0)


def releases_claims(fn: Callable[..., Any]) -> Callable[..., Any]:
    """For the drivers that resume runs: the claims made during the call (RunStore.reopen) end with it, whether
    it returns or raises. Between reopen and the loop a resume loads models and checks its inputs; an error there
    would otherwise hold the run for as long as anything keeps the Run (a notebook keeps the traceback), and
    every later resume in this process would be refused."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        token = _CLAIMS.set([])
        try:
            return fn(*args, **kwargs)
        finally:
            claims = _CLAIMS.get() or []
            _CLAIMS.reset(token)  # first: a release that fails must not leave later runs of this thread claimed
            for run in claims:
                with contextlib.suppress(OSError):  # (a close that fails on NFS: the others are let go too)
                    run.release()
    return wrapper


def write_json(path: Path, data: dict) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(data, indent=2, default=_jsonable)))


def _jsonable(x):
    np = sys.modules.get("numpy")  # a NumPy value needs NumPy imported: not imported for it (`runs list`)
    if np is not None and isinstance(x, np.generic):
        return x.item()
    if np is not None and isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, os.PathLike):  # a config's Path (a notebook's zoo = Path(...)): stored as the text it is
        return os.fspath(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cli_command() -> str | None:
    """This process's command line as `workbench …` when it is the workbench command (console script or
    `python -m workbench`), else None (a library call, a notebook, a dashboard)."""
    argv = sys.argv
    if not argv:
        return None
    first = Path(argv[0])
    if first.name == "workbench" or (first.name == "__main__.py" and first.parent.name == "workbench"):
        # an argument that is no UTF-8 (a path's bytes from another locale) as its bytes escaped: run.json is
        # UTF-8, and such a command failed the run after its folder was made
        return shlex.join(["workbench", *(os.fsencode(a).decode("utf-8", "backslashreplace") for a in argv[1:])])
    return None


def _process_started(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch), or None if there is no such process."""
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except ImportError:  # without psutil only existence can be checked
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return 0.0
        return 0.0
    except Exception:  # noqa: BLE001 - psutil.NoSuchProcess, AccessDenied, ZombieProcess
        return None


def heartbeat() -> dict:
    """The fields a running process refreshes in run.json: time, pid, host and the pid's start time (so a
    recycled pid is not mistaken for the run's process)."""
    return {"heartbeat": round(time.time(), 3), "pid": os.getpid(), "host": socket.gethostname(),
            "pid_started": _process_started(os.getpid())}


def effective_status(info: dict) -> str:
    """run.json's status, with "running" turned into "interrupted" when the process is gone: on this host
    by its pid (and start time), elsewhere by a heartbeat older than STALE_AFTER."""
    status = info.get("status")
    if status != "running":
        return status
    pid, host = info.get("pid"), info.get("host")
    if pid is not None and host == socket.gethostname():
        started = _process_started(int(pid))
        if started is None:
            return "interrupted"
        recorded = info.get("pid_started")
        if recorded and started and abs(started - recorded) > 1.0:
            return "interrupted"  # the pid now belongs to another process
        return "running"
    beat = info.get("heartbeat")
    if beat is None:  # runs of older versions: their last update is the heartbeat
        try:
            beat = time.mktime(time.strptime(info.get("updated", ""), "%Y-%m-%dT%H:%M:%S"))
        except (TypeError, ValueError):
            return "interrupted"
    return "interrupted" if time.time() - float(beat) > STALE_AFTER else "running"


def resume_command(info: dict, root: str | Path) -> str | None:
    """The command that continues the run, e.g. `workbench asal target --resume ID --runs DIR` (None for
    a run that is done or still running)."""
    if effective_status(info) not in RESUMABLE:
        return None
    return _resume_cli(info, root)


def _resume_cli(info: dict, root: str | Path) -> str | None:
    if info.get("kind") not in RESUME_COMMANDS:
        return None
    return f"{RESUME_COMMANDS[info['kind']]} --resume {shlex.quote(info['id'])} --runs {shell_path(root)}"


def flat_config(config: dict) -> dict:
    """A run config with its nested configs spelled out one level deep: {"eval": {"fm": …}} → {"eval.fm": …}."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def as_run_did(config: dict, predates: dict[str, tuple[Any, Any]]) -> dict:
    """A stored config with the settings newer than its run (predates: name → (default, what runs made before
    did)) filled in as the run did them; settings the run has keep their values."""
    return {**{name: legacy for name, (_, legacy) in predates.items()}, **config}


def resume_conflicts(info: dict, given: dict[str, Any],
                     predates: dict[str, tuple[Any, Any]] | None = None, typed: bool = False,
                     extends: str | None = None) -> list[tuple[str, str]]:
    """The settings in `given` (config fields, dotted for nested configs: "eval.substrate") that contradict
    a run's stored config, as (name, "given ≠ stored"). An input file the run copied (run.json `inputs`, by
    config field) is compared by content (sha256), not by path.

    predates: settings newer than some runs, name → (default, legacy): the value a config takes when the setting is
    not given, and what runs made before the setting existed did (their kind's config reader restores it, e.g.
    workbench.asal.legacy). For a run whose stored config lacks such a setting, the default given is no conflict
    (a config built in Python spells out every setting, defaults included: no request to change an old run); any
    other value is compared with what the run did. typed: `given` holds only what a user typed (CLI flags), so
    the default typed is a request too, compared with what the run did. A key of a nested setting the run lacks (a
    task's range that is not the run's) is a conflict; any other name the stored config lacks and `predates` does
    not list is an error (a misspelt setting must not switch its check off). extends: the length setting ("iters",
    "gens") of a kind of run whose total a resume may change (new_total): a whole number for it is no conflict."""
    stored = flat_config(info["config"])
    predates = predates or {}
    out = []
    for name, value in given.items():
        plain = list(value) if isinstance(value, tuple) else value
        if name in predates and name not in stored:
            default, legacy = predates[name]
            if plain != legacy and (typed or plain != default):
                out.append((name, f"{value!r} ≠ what the run did, made before this setting existed ({legacy!r})"))
            continue
        if name not in stored:
            top = name.split(".", 1)[0]
            if top == name or top not in info["config"]:
                raise ValueError(f"unknown run setting {name!r}")
            has = info["config"][top]  # a key of a nested setting the run has not got: a task's range
            has = ", ".join(map(str, has)) if isinstance(has, dict) else repr(has)
            out.append((name, f"{value!r}: the run has no such setting (its {top}: {has})"))
            continue
        recorded = (info.get("inputs") or {}).get(name)
        if recorded is not None and value is not None:
            if not (Path(value).is_file() and sha256_file(value) == recorded["sha256"]):
                out.append((name, f"{value} is not the run's file ({recorded['source']}, kept as {recorded['path']})"))
        elif name == extends and is_whole(plain):
            continue  # another total: the run goes on to it, or ends there (new_total checks it, below 1 too)
        elif plain != stored[name] and not same_paths(plain, stored[name]):  # a folder however written
            out.append((name, f"{value!r} ≠ the run's {stored[name]!r}"))
    return out


def new_total(run: Run, extends: str, value: object, flag: str | None = None) -> int | None:
    """The total that a resume asks of `run` for its length setting `extends` ("iters", "gens"), where it is not
    the run's own (None: value None or the run's own). Any total down to what the run has done is taken: a run
    finished at 100 iterations and resumed with 200 goes on from its last checkpoint, and a run stopped at 40 of
    100 and resumed with 60 ends at 60, each the run that total would have made from the start, bit for bit, for
    the kinds of run whose steps do not depend on their total (ASAL searches, recipe evolutions, CycleQD). Less
    than the run has done is refused (flag: the setting's name in the error, e.g. "--iters")."""
    stored = run.info["config"].get(extends)
    if value is None or not is_whole(value) or not is_whole(stored) or value == stored:
        return None
    done, unit = steps_done(run.info.get("kind"), run.info.get("iterations"))
    if value < max(done, 1):
        flag = flag or extends
        if value < 1:
            raise RunError(f"{flag} must be a whole number of at least 1, got {value}")
        raise RunError(f"run {run.id} has done {done} {unit} of its {flag} {stored}: {flag} {value} would end it "
                       f"before that; give {flag} {done} or more (a resume goes on from where the run is)")
    return int(value)


def check_longer(resume: str | None, value: object, name: str) -> int | None:
    """A run function's request to change a resumed run's total (its `iters=` / `gens=` keyword), checked: a
    whole number ≥ 1, and only with resume= (a new run's length is its config's)."""
    if value is None:
        return None
    if resume is None:
        raise ValueError(f"{name}= sets the total of a resumed run (with resume=RUN_ID); a new run's length is its "
                         f"config's {name}")
    return count(value, name)


def check_memory_to_resume(run: Run, cfg: Any, check: Callable[[Any], None]) -> None:
    """`check(cfg)` (a kind's memory check, which names the flag to lower) for a resume, whose settings cannot
    change: on a machine with less memory than the run's, one error saying so before anything loads, not an
    out-of-memory kill mid-iteration."""
    try:
        check(cfg)
    except MemoryNeedError as exc:
        raise RunError(f"run {run.id} needs more memory than this machine has free ({exc}); a resume keeps the "
                       f"run's settings: resume it where more memory is free, or start a new run with the smaller "
                       f"value") from None


def record_resume(run: Run, command: str | None, state: dict | None, key: str = "from_iteration",
                  extends: str | None = None, total: int | None = None) -> None:
    """Record a resume of the (claimed) run in run.json: its `resumes` entry (command, time, where it went on
    from, under `key`), and where the resume sets another total (new_total), the config's `extends` setting, so
    that a later resume, a comparison and the runs list read the run as it now is. A finished run goes on: it is
    'stopped' until its loop starts (a failure before then leaves it resumable to the new total, not finished
    short of it), and what its end measured on test sets (test_scores) moves into the resume's entry, as
    previous_end: the run's files of that end stay until the new end rewrites them."""
    info = run.info
    if total is not None and state is not None and total < state["iteration"]:  # its checkpoint is a step on
        raise RunError(f"run {run.id} has done {state['iteration']} steps by its checkpoint: {extends} {total} would "
                       f"end it before that; give {extends} {state['iteration']} or more")
    entry = {"command": command, "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
             key: 0 if state is None else state["iteration"]}
    fields: dict[str, Any] = {}
    if total is not None:
        entry["total"] = total
        fields["config"] = {**info["config"], extends: total}
        if info.get("status") == "done":
            entry["previous_end"] = {"iterations": info.get("iterations"), "best_loss": info.get("best_loss"),
                                     "test_scores": info.get("test_scores")}
            fields.update(status="stopped", test_scores=None)
    run.update(resumes=[*info.get("resumes", []), entry], **fields)


def check_resume(run: Run, kind: str | None, given: dict[str, Any], names: dict[str, str] | None = None,
                 predates: dict[str, tuple[Any, Any]] | None = None, typed: bool = False,
                 extends: str | None = None, fixed: tuple[str, str] | None = None) -> None:
    """Refuse to resume `run` as a `kind` run, or with settings that contradict its config: one error
    naming each setting by `names` (e.g. CLI flags; default: the config's field names). predates, typed, extends:
    see resume_conflicts (a kind whose total a resume may change names its length setting; new_total checks the
    value). fixed: (length setting, why) of a kind whose total cannot change, the why said when it is asked."""
    info = run.info
    if kind is not None and info.get("kind") != kind:
        raise RunError(_wrong_kind(run, kind, resuming=True))
    conflicts = resume_conflicts(info, given, predates, typed, extends)
    if conflicts:
        listed = "; ".join(f"{(names or {}).get(name, name)} {text}" for name, text in conflicts)
        setting, why = fixed or (None, "")
        why = f" ({why})" if any(name == setting for name, _ in conflicts) else ""
        if extends is not None and info.get("status") == "done":
            flag = (names or {}).get(extends, extends)
            raise RunError(f"run {run.id} is finished and was started with other settings ({listed}): a resume "
                           f"goes on with the run's own settings, to another total where {flag} is given; start a "
                           f"new run to change them")
        if info.get("status") == "done":
            raise RunError(f"run {run.id} is finished and was started with other settings ({listed}): a resume "
                           f"completes an interrupted run, it does not extend or change a finished one{why}; start "
                           f"a new run")
        raise RunError(f"run {run.id} was started with other settings ({listed}){why}; resume it without them, "
                       f"or start a new run")
    if extends is not None:
        new_total(run, extends, given.get(extends), (names or {}).get(extends, extends))


def step_unit(kind: str | None) -> str:
    """What a kind of run counts its steps in: CycleQD in generations (as --gens does), the others iterations."""
    return "generations" if kind == "qd" else "iterations"


def steps_done(kind: str | None, iterations: int | None) -> tuple[int, str]:
    """A run's stored iterations as its users count them, with the unit: a CycleQD run's first iteration is its
    generation 0 (the seed experts scored), so --gens 6 ends after 7 iterations, which are its 6 generations."""
    n = iterations or 0
    return (max(n - 1, 0) if kind == "qd" else n), step_unit(kind)


def article(word: object) -> str:
    """"an" before a kind that starts with a vowel ("an illuminate run", "an adapt run"), else "a"."""
    return "an" if str(word)[:1] in "aeiou" else "a"


def a_kind_run(kind: object) -> str:
    """"an adapt run", "a merge run": a run of `kind` with its article, as messages name it; "an unknown run" where
    run.json names no kind (messages said "a None run")."""
    kind = kind or "unknown"
    return f"{article(kind)} {kind} run"


def _wrong_kind(run: Run, wanted: str, resuming: bool = False) -> str:
    """A run of another kind than `wanted`; a resume is told the command that resumes it, a reader only its kind."""
    info = run.info
    how = _resume_cli(info, run.path.parent) if resuming else None
    hint = f"; resume it with {how}" if how else ""
    return f"run {run.id} is {a_kind_run(info.get('kind'))}, not {wanted}{hint}"


class RunError(ValueError):
    """A run folder that is missing, corrupt or not ours."""


def config_of(info: dict, *keys: str) -> dict:
    """The config of run.json `info`, checked to hold `keys` (the fields every version of its kind wrote, which a
    page reads): RunError naming those it lacks (a run.json edited by hand made the Merge and Experts pages a
    KeyError traceback)."""
    cfg = info.get("config")
    missing = [k for k in keys if k not in cfg] if isinstance(cfg, dict) else list(keys)
    if missing:
        raise RunError(f"run {info.get('id')}'s run.json lacks its config's {', '.join(missing)}: it is damaged")
    return cfg


#: The catalog's columns (RunStore.catalog) and their types: a run whose row does not fit is an unreadable run.
CATALOG_COLUMNS = {"id": "text", "kind": "text", "substrate": "text", "fm": "text", "status": "text",
                   "iterations": "int", "best_loss": "real", "seed": "int", "created": "text", "created_at": "real",
                   "updated": "text",
                   "metric": "text", "better": "text", "best": "real", "algorithm": "text", "method": "text",
                   "models": "texts", "tasks": "texts", "sampling": "text", "mutation": "text", "columns": "texts",
                   "resume_command": "text", "command": "text", "note": "text"}
_FITS = {"text": lambda v: isinstance(v, str), "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
         "real": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
         "texts": lambda v: isinstance(v, list) and all(x is None or isinstance(x, str) for x in v),
         "dict": lambda v: isinstance(v, dict)}
_TYPE_NAMES = {"text": "str", "int": "int", "real": "int or float", "texts": "list of str", "dict": "dict"}


def _misfit_columns(row: dict) -> list[str]:
    """The catalog columns whose value in `row` is neither None nor of the column's type, or that the table cannot
    hold (an int beyond 64 bits, a str with a lone surrogate, as json reads "\\udc80"): one such run refused every
    run of the catalog."""
    return [name for name, kind in CATALOG_COLUMNS.items()
            if row.get(name) is not None and not (_FITS[kind](row[name]) and _storable(row[name]))]


def _storable(value) -> bool:
    """Whether DuckDB's BIGINT, DOUBLE or VARCHAR column takes `value` (of the column's type): ints in 64 bits,
    strings that encode as UTF-8."""
    if isinstance(value, list):
        return all(_storable(x) for x in value)
    if isinstance(value, int) and not isinstance(value, bool):
        return -2**63 <= value < 2**63
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return False
    return True


#: run.json's fields that the catalog, the pages and resumes read, and the types they must have when present
# (None allowed; those the catalog shows as columns, the column's type): a hand-edited or damaged record is
# refused as one unreadable run, not a traceback in every list
_FIELD_TYPES = {**{k: CATALOG_COLUMNS[k] for k in ("id", "kind", "substrate", "fm", "status", "iterations", "best_loss",
                                                   "seed", "created", "updated", "metric", "command")},
                "config": "dict", "pid": "int", "heartbeat": "real"}


#: the fix of a run.json whose fields the readers refuse
_CORRECT_IT = "correct it in run.json, or move the folder out of the run store"


def _recorded_kind(folder: Path) -> tuple[str | None, str | None]:
    """The kind a run folder's run.json records and its config's algorithm, read as plain JSON (a run.json the
    catalog refuses may still say them); None for one it does not say as text."""
    try:
        info = json.loads((folder / "run.json").read_text())
    except (OSError, ValueError, RecursionError):
        return None, None
    info = info if isinstance(info, dict) else {}
    config = info.get("config") if isinstance(info.get("config"), dict) else {}
    kind, algorithm = info.get("kind"), config.get("algorithm")
    return (kind if isinstance(kind, str) else None), (algorithm if isinstance(algorithm, str) else None)


def _mistyped_fields(info: dict) -> str:
    """'iterations is a str, not int' for each field of run.json whose type is not what readers expect; '' if none."""
    return "; ".join(f"{key} is {type(info[key]).__name__}, not {_TYPE_NAMES[kind]}"
                     for key, kind in _FIELD_TYPES.items() if info.get(key) is not None and not _FITS[kind](info[key]))


#: seconds after which files found out of their write order are taken as they are (copied over one by one, not being
#: written): a writer's next file lands within milliseconds
WRITE_ORDER_SETTLED = 10.0


def _between_writes(stats: list) -> bool:
    """Whether files (os.stat results, None: absent) that are written in this order were caught between two of
    their writes: one rewritten lately and newer than the one written after it, which is still the older write's."""
    now = time.time_ns()
    present = [s for s in stats if s is not None]
    return any(a.st_mtime_ns > b.st_mtime_ns and now - a.st_mtime_ns < WRITE_ORDER_SETTLED * 1e9
               for a, b in itertools.pairwise(present))


def is_run_name(run_id: str) -> bool:
    """Whether `run_id` can name a run folder of a store: not empty, no path (no / or \\ in it, ?run=../elsewhere
    read a folder outside the store), not hidden ("..", ".", a removal's .removing-…: ".." read the parent's
    run.json)."""
    return bool(run_id) and not run_id.startswith(".") and "/" not in run_id and "\\" not in run_id


class Run:
    """One run folder: what RunStore.create and RunStore.open return, and what the run functions (run_search,
    evolve, run_cycleqd, …) hand back.

        run = RunStore("runs").open("20261205-1148")  # an id or a unique prefix of one
        run.info["config"], run.status, run.note       # run.json's config, the live status, the researcher's note
        run.read_table("metrics").to_pandas()          # metrics.parquet, one row per iteration
        run.read_array("best.npy")                     # an output array; read_image("best.png") a picture

    `path` is the run's folder; `id` its name (DATE-TIME-KIND-NAME-sSEED where the store made it), the run's id wherever
    the folder lies (a copied folder is its own run). `info` reads run.json afresh at each access (a RunError where it
    is missing, corrupt or a newer workbench's); `status` is its status as it is now (a "running" run whose process is
    gone is "interrupted", one another process is setting up a resume of is "resuming"); `note` and set_note are the
    researcher's words on it (note.txt, beside run.json). Outputs are files in the folder, each written atomically:
    write_table / read_table (NAME.parquet, NAME without its suffix), write_array / read_array (.npy), write_png /
    read_image (.png) and read_json take the file's name with its suffix; a missing (read_json: None) or damaged file is
    one RunError naming it. A stopped, failed or interrupted run is resumed by its kind's run function with
    resume=run.id (which goes through RunStore.reopen: claim, config, checkpoint) or by the command in `resume_command`.

    Args:
        path: the run's folder (not checked: RunStore.open checks run.json; a plain Run reads it when asked).
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.id = self.path.name
        self._claim: io.BufferedRandom | None = None
        self._claim_key = ""
        self._rows_json = RowsJSON()  # the JSON of the checkpoint's append-only rows, kept between checkpoints
        self._rows_files: dict[str, RowsFile] = {}  # their .jsonl files, as this process last wrote them
        self._tables: dict[str, GrowingTable] = {}  # write_rows' tables, kept between writes

    @property
    def info(self) -> dict:
        """run.json as written (its status is what the process last wrote; see `status`)."""
        try:
            info = json.loads((self.path / "run.json").read_text())
        except FileNotFoundError as exc:
            raise RunError(f"{self.path} is not a workbench run (no run.json)") from exc
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise RunError(f"{self.path}/run.json is corrupt ({exc}); the run cannot be read: restore run.json from a "
                           "backup, or move the folder out of the run store") from exc
        except OSError as exc:  # a folder named run.json, no permission to read it
            raise RunError(f"{self.path}/run.json cannot be read ({exc.strerror or exc})") from exc
        if isinstance(info, dict) and isinstance(info.get("format"), int) and info["format"] > FORMAT:
            raise RunError(f"{self.path}/run.json was written by a newer workbench (run format {info['format']}, "
                           f"this version reads {FORMAT}): upgrade the workbench to read it")
        if isinstance(info, dict) and info.get("format") == FORMAT and "config" not in info:
            raise RunError(f"{self.path}/run.json has lost its config (edited by hand?): restore run.json from a "
                           "backup, or move the folder out of the run store")
        if not isinstance(info, dict) or info.get("format") != FORMAT:
            raise RunError(f"{self.path}/run.json is not a workbench run record (format {FORMAT}): another program's "
                           "folder? Keep it out of the run store")
        wrong = _mistyped_fields(info)
        if wrong:
            raise RunError(f"{self.path}/run.json is corrupt ({wrong}); {_CORRECT_IT}")
        # a run is its folder: a copied folder's run.json still names the original, and its readers (metrics,
        # thumbnail, show, resume commands) would have gone to the original's folder
        info["id"] = self.path.name
        return info

    @property
    def status(self) -> str:
        """running, done, stopped, failed, interrupted (run.json says running; its process is gone), or resuming
        (stopped, failed or interrupted, and another process or Run object holds its claim: a resume setting up)."""
        return self.live_status(self.info)

    def live_status(self, info: dict) -> str:
        """The status of this run given its run.json `info` (read once by the caller): effective_status, and
        "resuming" while someone else holds the run's claim. A resume writes "running" only when its loop starts,
        after its set-up (models loaded, inputs copied), so until then the catalog would say "stopped" and offer
        a resume that is then refused."""
        status = effective_status(info)
        if status in RESUMABLE and self._claim is None:
            record = self._claim_record()
            if record is not None:
                return "running" if _holder_runs_it(info, *record) else "resuming"
        return status

    @property
    def resume_command(self) -> str | None:
        """The command line that continues the run (`workbench KIND … --resume ID --runs DIR`), or None when it is
        running, resuming or done, or of a kind without one."""
        info = self.info
        return _resume_cli(info, self.path.parent) if self.live_status(info) in RESUMABLE else None

    @property
    def resume_cli(self) -> str | None:
        """`workbench KIND … --resume ID --runs DIR` whatever the run's state (resume_command's words, for a message
        that adds a flag to it), or None for a kind without one."""
        return _resume_cli(self.info, self.path.parent)

    @property
    def note(self) -> str:
        """The researcher's note on the run (set_note; `workbench runs note`), '' when it has none."""
        try:  # a damaged note costs its own characters, never the run's place in the catalog
            return (self.path / NOTE_FILE).read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            return ""

    def set_note(self, text: str) -> str:
        """Write the run's note (what it is for: "baseline of figure 3"; shown by `runs list`, the Runs page's
        cards and table, and found by its search); '' removes it. Written atomically, beside run.json, so a
        running run can be noted. The note as stored."""
        if not isinstance(text, str):
            raise ValueError(f"a note is text, got {type(text).__name__}")
        text = text.strip()
        if len(text) > MAX_NOTE:
            raise ValueError(f"the note has {len(text)} characters; a note holds at most {MAX_NOTE}")
        path = self.path / NOTE_FILE
        with _unless_removed_meanwhile(self, wait=0):  # a tab's note as another tab or `runs rm` removed the run
            self.info  # noqa: B018 - a run, not any folder
            if text:
                atomic_write(path, lambda p: p.write_text(text + "\n", encoding="utf-8"))
            else:
                path.unlink(missing_ok=True)
        return text

    def update(self, **fields: Any) -> dict:
        """Set `fields` in run.json (and its `updated` time), rewritten atomically; run.json as now written."""
        info = self.info
        info.update(fields, updated=time.strftime("%Y-%m-%dT%H:%M:%S"))
        write_json(self.path / "run.json", info)
        return info

    def check_copied(self, key: str, configured: str | None) -> None:
        """Refuse to resume a run whose config names its own copy of input `key` (inputs/<name>) while run.json
        records none: its set-up failed before the copy was made (setting_up), so nothing can restore the file."""
        if configured and str(configured).startswith("inputs/") and not self.info.get("inputs", {}).get(key):
            raise RunError(f"run {self.id!r} has no copy of its {key.replace('_', ' ')} ({configured}): its set-up "
                           f"did not finish ({self.info.get('error') or 'no error recorded'}); start a new run")

    def input_path(self, key: str) -> Path | None:
        """The run's copy of input `key` (checked against its recorded hash), or None if it has none."""
        entry = self.info.get("inputs", {}).get(key)
        if entry is None:
            return None
        path = self.path / entry["path"]
        if not path.is_file() or sha256_file(path) != entry["sha256"]:
            raise RunError(f"the run's copy of its input {entry['path']} is missing or changed (sha256 differs "
                           f"from run.json); the run cannot be resumed")
        return path

    def check_resumable(self, trust_pickle: bool = False) -> None:
        """Refuse, with one error, a run whose process is still running, a run another process is resuming
        (claim), and an untrusted pickle checkpoint (cheap: reads run.json and file names only, so callers can
        check before loading anything)."""
        info = self.info
        if effective_status(info) == "running":
            raise RunError(f"run {self.id!r} is still running ({_pid_on(info.get('pid'), info.get('host'))}); "
                           f"stop it before resuming it")
        if self._claim is None:
            record = self._claim_record()
            if record is not None:
                raise RunError(self._claimed_message(record))
        if not trust_pickle and not (self.path / "checkpoint.json").exists() \
                and (self.path / "checkpoint.pkl").exists():
            raise RunError(self._pickle_refusal())

    def claim(self) -> None:
        """Hold the run for this process: until release() (or until this Run object is gone, which closes the
        lock file) any other resume of it, from another process or from another Run object of this one, is
        refused. A resume checks run.json's status, but "running" is written only when its loop starts, after
        the set-up (models loaded, inputs checked): two processes that checked within that window, the CLI and a
        page, both resumed the run and wrote over each other's checkpoints. Idempotent for this object. Where
        the file system has no locks (some network file systems), the status check alone guards, as before."""
        if fcntl is None:
            return
        key = str(self.path.resolve())
        with _CLAIM_LOCK:  # two threads of one server claiming at once: the check and the entry are one step
            if self._claim is not None:
                return
            if self._held_here(key):
                # another Run of this process: no lock needed
                raise RunError(self._claimed_message(self._claim_record()))
            f = self._lock_file()
            if f is None:
                return
            self._claim, self._claim_key = f, key
            _CLAIMED[key] = self
        claims = _CLAIMS.get()
        if claims is not None:
            claims.append(self)

    def _lock_file(self) -> io.BufferedRandom | None:
        """The run's lock file, open and flock'ed with our pid in it; None where this file system has no locks."""
        try:
            f = open(self.path / CLAIM_FILE, "a+b")  # noqa: SIM115 - held open on purpose: the lock lives with it
        except OSError:  # a folder we cannot write to: the resume's own writes will say so
            return None
        try:
            for attempt in range(3):
                try:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if attempt == 2:  # not another process's brief look (_claim_record): a resume holds it
                        raise RunError(self._claimed_message(self._claim_record())) from None
                    time.sleep(0.05)
                except OSError:  # no locks on this file system (ENOLCK, EOPNOTSUPP)
                    f.close()
                    return None
            try:
                f.truncate(0)
                f.write(f"{_HERE()}\n{_process_started(os.getpid()) or ''}".encode())  # who, and since when
                f.flush()
            except OSError as error:  # a full disk: the file named, as every other write's error names its own
                error.filename = error.filename or str(self.path / CLAIM_FILE)
                raise
        except BaseException:
            f.close()
            raise
        return f

    def release(self) -> None:
        """Let go of claim() (no-op if this object holds none)."""
        with _CLAIM_LOCK:
            if self._claim is not None:
                held, self._claim = self._claim, None
                if _CLAIMED.get(self._claim_key) is self:
                    del _CLAIMED[self._claim_key]
                held.close()  # last: where closing fails (NFS), this process still takes the run as let go

    def _claim_record(self) -> tuple[str, float | None] | None:
        """Who holds the run's claim ("pid N on HOST") and since when (its process's start time, None where its
        claim file does not say), or None when nobody does."""
        if self._held_here(str(self.path.resolve())):
            # this process (looked up, not probed: on NFS closing a probe drops our own lock)
            return _HERE(), _process_started(os.getpid())
        path = self.path / CLAIM_FILE
        if fcntl is None or not path.exists():
            return None
        try:
            with open(path, "rb") as f:
                try:
                    fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    who, _, since = f.read().decode(errors="replace").strip().partition("\n")
                    try:
                        started = float(since)
                    except ValueError:  # an older workbench's claim: who alone
                        started = None
                    return who.strip() or "another process", started
        except OSError:  # unreadable, or no locks here: the status check alone guards
            return None
        return None

    def _held_here(self, key: str) -> bool:
        """Whether another Run object of this process holds the claim on the folder `key` (resolved)."""
        other = _CLAIMED.get(key)
        return other is not None and other is not self and other._claim is not None

    def _runs_it(self, record: tuple[str, float | None] | None) -> bool:
        """Whether the claim `record` (_claim_record) is held by the process run.json names (_holder_runs_it);
        False where nobody holds it or run.json does not read (a run being created has none)."""
        try:
            return record is not None and _holder_runs_it(self.info, *record)
        except RunError:
            return False

    def _claimed_message(self, record: tuple[str, float | None] | None) -> str:
        """Why a resume is refused while the claim `record` (_claim_record) is held by someone else."""
        holder = _holder(record)
        if self._runs_it(record):
            return f"run {self.id!r} is still running ({holder}); stop it before resuming it"
        return (f"run {self.id!r} is being resumed by {holder}; wait for that resume to end (or stop it) "
                f"before resuming it again")

    def _pickle_refusal(self) -> str:
        # --trust-pickle is a flag of the commands whose runs predate JSON checkpoints (ASAL searches, merges);
        # the later kinds never wrote a pickle, and their commands have not got it
        how = "--trust-pickle (Python: trust_pickle=True)" if self.info.get("kind") in PICKLED_KINDS else \
            "trust_pickle=True in Python (its command has no --trust-pickle: no run of its kind wrote a pickle)"
        return (f"run {self.id!r} has an old-format checkpoint (checkpoint.pkl), a pickle that can run any code its "
                f"writer put in it; resume it only if you trust whoever wrote {self.path}, with {how}")

    # --- checkpoints -------------------------------------------------------------------------------------------

    def save_checkpoint(self, state: dict) -> None:
        """Write `state` (plain values, arrays, checkpointable objects) as checkpoint.json + its arrays."""
        import numpy as np

        listed = self._rows_json.held(state)  # key -> the JSON texts of its rows, grown by the new rows only
        tree, arrays = pack({k: _placeholder(k) if k in listed else v for k, v in state.items()})
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        data = buffer.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        name = f"checkpoint-{digest[:24]}.npz"
        if not (self.path / name).exists():
            atomic_write(self.path / name, lambda p: p.write_bytes(data))
        meta = {"format": CHECKPOINT_FORMAT, "arrays": name, "sha256": digest,
                "written": time.strftime("%Y-%m-%dT%H:%M:%S"), "state": tree}
        text = json.dumps(meta, separators=(",", ":"), allow_nan=False)  # compact: it is rewritten every iteration
        if any(text.count(json.dumps(_placeholder(key))) != 1 for key in listed):
            # a value of the state spelling a placeholder: encode it all, inline, as format 1 did
            tree, _ = pack(state)
            text = json.dumps({**meta, "state": tree}, separators=(",", ":"), allow_nan=False)
        elif listed:  # the rows' files first (appended, fsynced), then the checkpoint.json that counts them
            files = {key: self._rows_files.setdefault(key, RowsFile()) for key in listed}
            meta["rows"] = {key: files[key].write(self.path, key, listed[key]) for key in listed}
            text = json.dumps(meta, separators=(",", ":"), allow_nan=False)
        atomic_write(self.path / "checkpoint.json", lambda p: p.write_text(text))
        for old in self.path.glob("checkpoint-*.npz"):  # only now: checkpoint.json no longer names them
            if old.name != name:
                old.unlink(missing_ok=True)
        named = {spec["file"] for spec in meta.get("rows", {}).values()}
        for key in meta.get("rows", {}):  # the rows' files it no longer names (a kill's, a rewrite's), likewise
            for old in self.path.glob(f"checkpoint-{key}*.jsonl"):
                if old.name not in named:
                    old.unlink(missing_ok=True)
        (self.path / "checkpoint.pkl").unlink(missing_ok=True)  # a converted pre-JSON checkpoint

    def load_checkpoint(self, trust_pickle: bool = False) -> dict | None:
        """The last checkpoint (None if the run has none). A pickle checkpoint of an older version is refused
        unless trust_pickle: unpickling runs whatever code its writer put in it."""
        path = self.path / "checkpoint.json"
        if path.exists():
            return self._load_json_checkpoint(path)
        legacy = self.path / "checkpoint.pkl"
        if not legacy.exists():
            return None
        if not trust_pickle:
            raise RunError(self._pickle_refusal())
        try:
            state = pickle.loads(legacy.read_bytes())
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt checkpoint
            raise RunError(f"{legacy} is corrupt ({type(exc).__name__}); start a new run instead of --resume") from exc
        if not isinstance(state, dict) or not {"iteration", "metrics"} <= set(state):
            raise RunError(f"{legacy} is not a workbench checkpoint")
        return state

    def _load_json_checkpoint(self, path: Path) -> dict:
        corrupt = f"the checkpoint of run {self.id!r} is corrupt"
        text = None
        for attempt in range(3):
            try:
                text = path.read_text()
                meta = json.loads(text)
                arrays_path = self.path / Path(meta["arrays"]).name
                data = arrays_path.read_bytes()
                rows = {key: _read_rows(self.path, spec) for key, spec in meta.get("rows", {}).items()}
                break
            except FileNotFoundError as exc:
                # a running run wrote its next checkpoint between our two reads and removed the arrays the one we
                # read names: read the new one (damage, if checkpoint.json stays the same)
                with contextlib.suppress(OSError):
                    if attempt < 2 and text is not None and path.read_text() != text:
                        continue
                raise RunError(f"{corrupt} (FileNotFoundError: {exc}); start a new run instead of --resume") from exc
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise RunError(f"{corrupt} ({type(exc).__name__}: {exc}); start a new run instead of "
                               "--resume") from exc
        if meta.get("format") not in (1, CHECKPOINT_FORMAT):
            raise RunError(f"the checkpoint of run {self.id!r} has format {meta.get('format')}, this version reads "
                           f"1 to {CHECKPOINT_FORMAT}: upgrade the workbench to resume it")
        if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
            raise RunError(f"{corrupt} ({arrays_path.name} does not match its sha256 in checkpoint.json)")
        import numpy as np

        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
            state = unpack(meta["state"], arrays)
            for key, text in rows.items():
                if not isinstance(state, dict) or state.get(key) != _placeholder(key):
                    raise CheckpointError(f"its state has no place for the rows of {meta['rows'][key]['file']}")
                state[key] = unpack(json.loads(text), {})
        except (CheckpointError, ValueError, KeyError, TypeError) as exc:
            raise RunError(f"{corrupt} ({exc})") from exc
        if not isinstance(state, dict) or not {"iteration", "metrics"} <= set(state):
            raise RunError(f"{path} is not a workbench checkpoint")
        return state

    # --- tables and pictures -----------------------------------------------------------------------------------

    def write_table(self, name: str, rows: list[dict] | dict[str, list]) -> None:
        """Write NAME.parquet (atomically) from rows (a list of dicts, one per row), columns (a dict of lists) or a
        pyarrow Table."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = rows if isinstance(rows, pa.Table) else \
            pa.Table.from_pylist(rows) if isinstance(rows, list) else pa.Table.from_pydict(rows)
        atomic_write(self.path / f"{name}.parquet", lambda p: pq.write_table(table, p))

    def write_rows(self, name: str, rows: list[dict] | dict[str, list]) -> None:
        """write_table for rows that only grow at their end (metrics, one row an iteration): the same file, the
        rows converted to Arrow by the new ones only (GrowingTable)."""
        self.write_table(name, self._tables.setdefault(name, GrowingTable())(rows))

    def read_table(self, name: str) -> pa.Table:
        """The run's table `name` (NAME.parquet) as a pyarrow Table; a missing or damaged file is one RunError
        naming it (pages and commands show it as their message)."""
        path = self.path / f"{name}.parquet"
        try:
            return read_parquet(path)
        except FileNotFoundError as exc:
            hint = f" (name the table without .parquet: read_table({name[:-8]!r}))" if name.endswith(".parquet") else ""
            raise RunError(f"run {self.id!r} has no {path.name}{hint}") from exc
        except Exception as exc:  # noqa: BLE001 - pyarrow's errors for a truncated or overwritten file vary
            raise RunError(f"{path} is unreadable ({type(exc).__name__}: {str(exc).splitlines()[0]})") from exc

    def metrics_table(self, *required: str) -> pa.Table:
        """metrics.parquet as read_table gives it, and one RunError naming the `required` columns it lacks (a table
        this workbench did not write: the pages and `runs show` / `runs compare` read its rows by these)."""
        table = self.read_table("metrics")
        missing = [c for c in required if c not in table.column_names]
        if missing:
            raise RunError(f"{self.path / 'metrics.parquet'} has no {' or '.join(missing)} column: not a metrics table "
                           "of this workbench")
        return table

    def table_frame(self, name: str) -> tuple[pd.DataFrame, str | None]:
        """The run's table `name` as a pandas DataFrame (empty where it has none yet), and None; a damaged file:
        an empty one and why, so that a page shows the run's other files and says what it could not read (it
        failed to build)."""
        import pandas as pd

        if not (self.path / f"{name}.parquet").exists():
            return pd.DataFrame(), None
        try:
            return self.read_table(name).to_pandas(), None
        except RunError as exc:
            return pd.DataFrame(), str(exc)

    def read_json(self, name: str) -> Any:
        """The run's JSON file NAME, or None where it has none yet; a damaged file is one RunError naming it."""
        # ValueError: JSON and UTF-8 decoding errors
        return self._read_file(name, lambda p: json.loads(p.read_text()), (OSError, ValueError, RecursionError),
                               missing_ok=True)

    def read_together(self, names: Iterable[str], read: Callable[[], Any], tries: int = 5) -> Any:
        """read(), of the run's files `names` that its process rewrites one after the other, in that order (an
        illumination's population.parquet, then thumbs.npy, as it ends, again when a resume extends it): read again
        while one of them was replaced meanwhile (an atomic write is a new file), or while one is newer than the one
        written after it (a reader between the two writes, which no replacement during its read shows), so that no
        reader pairs one write's members with another's thumbnails. A RunError after `tries` reads that each raced
        a write."""
        names = list(names)
        for attempt in range(tries):
            with contextlib.ExitStack() as held:
                # each file held open while read: a file replaced meanwhile is another inode (the held one cannot be
                # reused for it, as a closed one could, and mtimes tick coarsely)
                before = []
                for name in names:
                    try:
                        before.append(os.fstat(held.enter_context(open(self.path / name, "rb")).fileno()))
                    except FileNotFoundError:
                        before.append(None)
                result = read()
                after = []
                for name in names:
                    try:
                        after.append(os.stat(self.path / name).st_ino)
                    except FileNotFoundError:
                        after.append(None)
                if after == [None if s is None else s.st_ino for s in before] and not _between_writes(before):
                    return result
            if attempt < tries - 1:
                time.sleep(0.05 * 2 ** attempt)  # the writer's next file is on its way
        raise RunError(f"run {self.id!r}: {', '.join(names)} were rewritten while read, {tries} times; open it again "
                       "in a moment")

    def read_array(self, name: str) -> np.ndarray:
        """The run's NAME (.npy) array; a missing or damaged file is one RunError naming it."""
        import numpy as np

        # truncated, empty, not an .npy, an object array
        return self._read_file(name, lambda p: np.load(p, allow_pickle=False), (OSError, ValueError, EOFError))

    def read_image(self, name: str) -> np.ndarray:
        """The run's picture NAME (.png) as RGB uint8; a missing or damaged file is one RunError naming it."""
        import numpy as np
        from PIL import Image

        def load(path: Path) -> np.ndarray:
            with Image.open(path) as image:
                return np.asarray(image.convert("RGB"))

        return self._read_file(name, load, (OSError, ValueError))  # PIL's UnidentifiedImageError is an OSError

    def _read_file(self, name: str, load: Callable[[Path], Any], damaged: tuple[type[Exception], ...],
                   missing_ok: bool = False) -> Any:
        """load(path) of the run's file NAME; None where it is missing and `missing_ok`, else one RunError naming
        the file (missing, or raising one of `damaged`)."""
        path = self.path / name
        try:
            return load(path)
        except FileNotFoundError as exc:
            if missing_ok:
                return None
            raise RunError(f"run {self.id!r} has no {name}") from exc
        except damaged as exc:
            raise RunError(f"{path} is unreadable ({type(exc).__name__}); it is damaged") from exc

    def write_array(self, name: str, array: np.ndarray) -> None:
        """Write `array` as the run's file NAME (.npy, the suffix given in the name), atomically."""
        import numpy as np

        def write(p: Path) -> None:
            with open(p, "wb") as f:
                np.save(f, array)

        atomic_write(self.path / name, write)

    def write_png(self, name: str, image: np.ndarray) -> None:
        """Write a uint8 (H, W, 3) `image` as the run's picture NAME (.png, suffix included), atomically."""
        write_png(self.path / name, image)

    def __repr__(self) -> str:
        return f"Run({self.id!r})"


#: the lists of a checkpoint's state that only ever grow at their end, by rows that never change once there: the
#: metrics (checkpointed_loop), a recipe evolution's and a NAMM run's evaluations
APPEND_ONLY = ("metrics", "evaluations")


def _placeholder(key: str) -> str:
    return f"\x00workbench-rows:{key}\x00"


def _read_rows(folder: Path, spec: dict) -> str:
    """The JSON list of the rows checkpoint.json's `spec` counts in its .jsonl file: its first spec["bytes"] bytes
    (what a kill left past them is no row of the checkpoint's), checked by their sha256 and count."""
    path = folder / Path(spec["file"]).name
    with path.open("rb") as f:
        data = f.read(spec["bytes"])
    if len(data) != spec["bytes"] or hashlib.sha256(data).hexdigest() != spec["sha256"] or \
            data.count(b"\n") != spec["rows"]:
        raise ValueError(f"{path.name} does not hold the {spec['rows']} rows checkpoint.json counts")
    return "[" + data.decode().replace("\n", ",").rstrip(",") + "]"  # a row's JSON has no raw newline


class RowsFile:
    """A checkpoint's .jsonl file of one key's rows (one row's JSON a line), appended at each save: rewritten whole,
    the rows of a long run were most of every checkpoint's bytes (a recipe evolution at pop 8: 3.3 kB more each
    iteration, 1.6 GB written over 1,000). They are written whole, to a new file, at the first save of a process (a
    resumed run's: that leaves behind what a kill left past the last checkpoint's rows) and where the rows are others
    (RowsJSON began their texts again: another list, one cut short). Never in place of the file the checkpoint.json
    on disk names: a kill before the new checkpoint.json, or a page that read the old one, would find other bytes
    than it counts, and the run could not be resumed (save_checkpoint deletes the old file after checkpoint.json)."""

    def __init__(self) -> None:
        self.parts: list[str] | None = None  # RowsJSON's list of the rows' texts, as far as the file holds them
        self.name = ""  # the file this process writes (none before its first save)
        self.n, self.size, self.sha256 = 0, 0, hashlib.sha256()

    def write(self, folder: Path, key: str, parts: list[str]) -> dict:
        """Bring the file to `parts`, appending the new rows where it holds the first ones; its checkpoint.json spec."""
        if parts is not self.parts or len(parts) < self.n:
            data = "".join(p + "\n" for p in parts).encode()
            name = f"checkpoint-{key}-{os.urandom(6).hex()}.jsonl"  # not the old file's name (see the docstring)
            atomic_write(folder / name, lambda p: p.write_bytes(data))
            self.parts, self.name, self.n, self.size, self.sha256 = parts, name, len(parts), len(data), \
                hashlib.sha256(data)
        elif len(parts) > self.n:
            data = "".join(p + "\n" for p in parts[self.n:]).encode()
            with (folder / self.name).open("r+b") as f:
                f.truncate(self.size)  # what an append that failed in this process left
                f.seek(self.size)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            sha256 = self.sha256.copy()
            sha256.update(data)
            self.n, self.size, self.sha256 = len(parts), self.size + len(data), sha256
        return {"file": self.name, "rows": self.n, "bytes": self.size, "sha256": self.sha256.hexdigest()}


class RowsJSON:
    """The JSON text of a checkpoint's append-only lists of rows (APPEND_ONLY), each row encoded once: pack and
    json.dumps of the whole state encoded every row of the run at every checkpoint (a recipe evolution of 1,000
    iterations spent 0.13 s an iteration on its evaluations alone, growing with the run). The text is the one they
    give, byte for byte; a list holding a row with arrays or NumPy scalars (named by their place among the state's
    arrays) is left to pack."""

    def __init__(self) -> None:
        self.lists: dict[str, tuple[list, list[str], object]] = {}  # key -> (the state's list, its rows' JSON so
        # far, the last row encoded: a list trimmed and grown again holds another object there)
        self.refused: set[tuple[str, int]] = set()  # (key, id of its list): rows pack alone can write

    def held(self, state: dict) -> dict[str, list[str]]:
        out = {}
        for key in APPEND_ONLY:
            rows = state.get(key)
            if type(rows) is not list or (key, id(rows)) in self.refused:
                continue
            cached, parts, last = self.lists.get(key, (None, [], None))
            if not _only_grew(rows, cached, len(parts), last):  # another list (a resumed state's), or cut short
                parts = []
            for row in rows[len(parts):]:
                tree, arrays = pack(row)  # checks its keys as pack(state) does
                if arrays:
                    self.refused.add((key, id(rows)))
                    break
                parts.append(json.dumps(tree, separators=(",", ":"), allow_nan=False))
            else:
                self.lists[key] = (rows, parts, rows[-1] if rows else None)
                out[key] = parts
                continue
            self.lists.pop(key, None)
        return out


def _only_grew(rows: list, before: list | None, n: int, last: object) -> bool:
    """Whether `rows` is the list `before` that held n rows ending with the object `last`, grown at its end since
    (not another list, not cut short, not trimmed and grown again: its row n − 1 would be another object)."""
    return rows is before and len(rows) >= n and (n == 0 or rows[n - 1] is last)


class GrowingTable:
    """A pyarrow Table of rows that only grow at their end (a list of dicts, or a dict of columns), converted from
    Python values for the new rows only: converted whole at every write, metrics.parquet's rows cost 17 ms at
    10,000 iterations and CycleQD's archive rows 121 ms at generation 1,000, growing with the run. The kept table is
    joined to the new rows and made one chunk again (a copy of arrays, not a conversion): Parquet closes pages where
    chunks end, so a table of many chunks wrote other bytes than one made at once (the same rows; seen from 347,000
    rows), and a resumed run, which converts its rows at once, would have differed. Where the new rows' inferred
    types differ from the kept table's (a column of Nones so far), or the rows are others (another list, one cut
    short), the table is made at once. The same table, and file, as the whole conversion."""

    def __init__(self) -> None:
        self.of: list | dict | None = None  # the rows the table is of
        self.n = 0                           # rows in the table
        self.last: object = None             # the last row converted (a list trimmed and grown holds another);
        # for columns, the column lists themselves (a column swapped for another list is other rows)
        self.table = None

    def __call__(self, rows: list[dict] | dict[str, list]):
        import pyarrow as pa

        columns = isinstance(rows, dict)
        n = len(next(iter(rows.values()), [])) if columns else len(rows)
        last = list(rows.values()) if columns else rows[n - 1] if n else None
        if columns:  # another dict, one cut short, a column swapped for another list, or one column more or less
            grew = rows is self.of and n >= self.n and len(last) == len(self.last) and \
                all(a is b for a, b in zip(last, self.last, strict=True))
        else:
            grew = _only_grew(rows, self.of, self.n, self.last)
        if not grew:
            self.table = None
        if self.table is not None and n > self.n:
            try:
                new = (pa.Table.from_pydict({k: v[self.n:] for k, v in rows.items()}) if columns else
                       pa.Table.from_pylist(rows[self.n:]))
            except Exception:  # noqa: BLE001 - the new rows alone refused a conversion the whole may take
                new = None     # (a list column of [1, True] after [0.5]: double as a whole, no type of its own)
            self.table = pa.concat_tables([self.table, new]).combine_chunks() \
                if new is not None and new.schema == self.table.schema else None
        if self.table is None:
            self.table = pa.Table.from_pydict(rows) if columns else pa.Table.from_pylist(rows)
        self.of, self.n, self.last = rows, n, last
        return self.table


def catalog_row(info: dict, root: str | Path, path: str | Path | None = None) -> dict:
    """One catalog row: today's keys, the metric and its direction, kind-specific columns, live status (see
    Run.live_status; `path`: the run's folder, by default root/id)."""
    kind, config = info.get("kind"), info.get("config") or {}
    run = Run(Path(path) if path is not None else Path(root) / str(info.get("id")))
    status = run.live_status(info)
    metric = info.get("metric") or ("fitness" if kind == "merge" else "loss")
    better = METRICS.get(metric, "lower")
    best_loss = info.get("best_loss")
    merge, qd = kind == "merge", kind == "qd"
    return {**{k: info.get(k) for k in ("id", "kind", "substrate", "fm")}, "status": status,
            **{k: info.get(k) for k in ("iterations", "best_loss", "seed", "created")}, "created_at": created_at(info),
            "updated": info.get("updated"),
            "metric": metric, "better": better,
            "best": None if best_loss is None else (best_loss if better == "lower" else -best_loss),
            "algorithm": None if merge or qd else config.get("algorithm"),
            "method": config.get("method") if merge else None,
            "models": list(config.get("models") or []) if merge else None,
            "tasks": list(config.get("tasks") or []) if qd else None,
            "sampling": config.get("sampling") if qd else None, "mutation": config.get("mutation") if qd else None,
            "columns": list(KIND_COLUMNS.get(kind, ("substrate", "fm"))),
            "resume_command": _resume_cli(info, root) if status in RESUMABLE else None,
            "command": info.get("command"),
            "note": run.note or None}


def checked_catalog_row(info: dict, root: str | Path, path: str | Path | None = None) -> dict:
    """catalog_row, or RunError saying why the run cannot be catalogued and the fix: a config of the right type with
    the wrong insides (models a number), or a value a catalog column cannot hold (a config.algorithm of 5, an int
    beyond 64 bits), which refused every run of the catalog."""
    folder = Path(path) if path is not None else Path(root) / str(info.get("id"))
    try:
        row = catalog_row(info, root, folder)
    except (TypeError, ValueError, AttributeError) as exc:
        raise RunError(f"{folder}/run.json's config does not read as {a_kind_run(info.get('kind'))}'s ({exc}); "
                       f"{_CORRECT_IT}") from None
    misfit = _misfit_columns(row)
    if misfit:
        raise RunError(f"{folder}/run.json gives the catalog's {', '.join(misfit)} a value of another type, or one "
                       f"too large; {_CORRECT_IT}")
    return row


def _now() -> dict:
    """A new run's `created`, local time as ISO 8601 with milliseconds (2026-11-30T22:40:53.123: what pages show),
    and `created_at`, the same moment in seconds since the epoch (what the catalog sorts by)."""
    now = time.time()
    return {"created": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}",
            "created_at": now}


def created_at(info: dict) -> float | None:
    """When a run was made, in seconds since the epoch: run.json's created_at, or for a run from before it its
    local `created` read as this machine's local time (where such a store was made, in most cases); None for
    neither."""
    value = info.get("created_at")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    text = info.get("created")
    if not isinstance(text, str):
        return None
    try:
        whole, _, ms = text.partition(".")
        fraction = int(ms[:3]) / 1000 if ms[:3].isdigit() else 0.0
        return time.mktime(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + fraction
    except (ValueError, OverflowError):
        return None


def _copy_input(folder: Path, source: Path) -> dict:
    """Copy `source` to folder/inputs/<name> (atomically); its run.json record: path, source and sha256."""
    data = source.read_bytes()
    (folder / "inputs").mkdir(exist_ok=True)
    atomic_write(folder / "inputs" / source.name, lambda p: p.write_bytes(data))
    return {"path": f"inputs/{source.name}", "source": str(source), "sha256": hashlib.sha256(data).hexdigest()}


#: a run's id as RunStore.create makes it: its time, kind, substrate or name, seed and a count where taken
RUN_ID = re.compile(r"\d{8}-\d{6}-.+-s\d+(-\d+)?$")


class RunStore:
    """A folder of runs (one folder each: run.json, metrics.parquet, checkpoint, outputs) and the DuckDB catalog
    over them. `root` is made with the first run; "~" is the home folder.

        store = RunStore("runs")
        store.list()                                  # catalog rows, oldest first
        run = store.open("20261205-1148")             # an id or a unique prefix of one
        store.metrics(run.id)                         # its metrics rows by iteration
        store.catalog().sql("SELECT kind, count(*) FROM runs GROUP BY kind").fetchall()

    Raises:
        ValueError: `root` is a file, or lies under one.
    """

    def __init__(self, root: str | Path = "runs"):
        # as a shell reads it: "~/runs" is the home folder's (a notebook's too); "./~" a folder named "~" here, kept
        # absolute (`--runs ./~` wrote runs in the home folder, and a resume command's `--runs '~'` said so too)
        self.root = user_path(root)
        #: the metrics.parquet files the last catalog() left out of its metrics view (or list() found damaged)
        self.unreadable_metrics: list[str] = []
        #: the folders the last catalog() left out (their run.json does not read as a run's, as broken()), and why
        #: each was (folder -> the reason and its fix, "run.json is corrupt (…); correct it …")
        self.unreadable_why: dict[str, str] = {}
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"--runs {root} is a file, not a folder: give the run store's folder (made when missing)")
        # a folder to be made under a file ("afile/runs") cannot be: said now, not by the mkdir of the first run,
        # after its model had loaded
        blocking = file_above(self.root)
        if blocking is not None:
            raise ValueError(f"--runs {root}: {blocking} is a file, so no folder can be made under it; give the run "
                             "store's folder (made when missing)")

    @classmethod
    def of(cls, store: RunStore | str | Path) -> RunStore:
        """`store` itself, or the store of the folder it names: what the library's functions that take a store
        call first, so that `run_search(cfg, "runs")` works as `run_search(cfg, RunStore("runs"))`."""
        if isinstance(store, cls):
            return store
        if not isinstance(store, (str, Path)):
            raise ValueError(f"give a RunStore or the path of its folder, got {type(store).__name__}")
        return cls(store)

    def create(self, kind: str, substrate: str, fm: str, config: dict, seed: int, *, metric: str = "loss",
               command: str | None = None, name: str | None = None,
               inputs: dict[str, str | Path] | None = None, setup: Callable[[Path], dict] | None = None) -> Run:
        """A new run folder, its run.json saying "running" (with a heartbeat). kind: the kind of run ("target",
        "openended", "illuminate", "sweep", "merge", "qd", "experts", "adapt", "namm": it picks the resume command and
        the catalog's columns; not checked here). substrate / fm: the catalog's two describing columns (a merge run
        stores its method and models there too, for older readers). config: the run's settings as a JSON-able dict
        (Paths and NumPy values are written as their text and values), stored as run.json's config, which a resume reads
        back. seed: stored in run.json and ends the id (-sSEED). metric: what best_loss measures ("loss", lower is
        better, or "fitness", higher is better, stored negated as best_loss). command: the command line. name: the id's
        middle part (default: substrate), DATE-TIME-KIND-NAME-sSEED. inputs: files the run keeps its own copies of (key
        -> file: inputs/<name>, hashed in run.json under inputs[key], Run.input_path), copied before run.json is
        written: a run is never listed, resumable, without them (a kill between the run.json and a later copy left one
        whose resume was refused). setup(folder): more such files, made before run.json too; it returns the run.json
        fields that record them (an adapt run's copies of its experts). Inside a run function (releases_claims) the
        run comes back claimed (Run.claim), as a resume's does: its loop's end (or its set-up's failure) lets go.

        Raises:
            ValueError: a metric that is not one of METRICS; a store whose name is not UTF-8 text.
            TypeError: a config that JSON cannot hold (the folder is removed again, as on any error of the inputs'
                copies or of setup, which propagate).
        """
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
        try:  # Parquet (pyarrow) takes UTF-8 paths only: a store named in another locale's bytes failed at the run's
            str(self.root).encode("utf-8")  # first table, its folder made and left failed (reading it works)
        except UnicodeEncodeError:
            name = os.fsencode(self.root)
            try:  # UTF-8 on disk, read by a Python whose file names are ASCII (LC_ALL=C with PYTHONUTF8=0): not
                name.decode("utf-8")  # the name's fault, and "not UTF-8 text" sent the user renaming a good folder
            except UnicodeDecodeError:
                raise ValueError(f"--runs {name!r}: the folder's name is not UTF-8 text, and a run's tables cannot "
                                 "be written under it; give a run store folder whose name is") from None
            raise ValueError(f"--runs {name.decode('utf-8')}: Python reads file names as "
                             f"{sys.getfilesystemencoding()} in this locale, and a run's tables cannot be written "
                             "under a name it cannot read; set a UTF-8 locale (LC_ALL=C.UTF-8) or PYTHONUTF8=1"
                             ) from None
        self.root.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = f"{stamp}-{kind}-{name or substrate}-s{seed}"
        for n in itertools.count():  # bounded, the last id was reused when all were taken: its run overwritten
            path = self.root / (base if n == 0 else f"{base}-{n}")
            try:
                path.mkdir()
                break
            except FileExistsError:
                continue
        run = Run(path)
        try:
            if _CLAIMS.get() is not None:  # a run function's (releases_claims) new run: held from its creation to
                run.claim()  # the end of its loop, as a resume's is, so no resume or removal takes it meanwhile
            copies = {key: _copy_input(path, Path(source)) for key, source in (inputs or {}).items()}
            recorded = setup(path) if setup is not None else {}
            write_json(path / "run.json", {
                "format": FORMAT, "id": run.id, "kind": kind, "substrate": substrate, "fm": fm, "seed": seed,
                "status": "running", "iterations": 0, "best_loss": None, "metric": metric,
                "better": METRICS[metric], "config": config, "command": command, "versions": package_versions(),
                "machine": platform.machine(),
                # milliseconds: runs made within one second (a script, a test) must still come out in the order
                # they were made, not in their ids' alphabetical order. created_at (seconds since the epoch) is
                # what the catalog sorts by: `created` is local time, which put a run made in Tokyo after one made
                # later in New York, and one made in the hour a clock goes back before one made an hour earlier
                **_now(), "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
                **({"inputs": copies} if copies else {}), **recorded, **heartbeat()})
        except BaseException:  # a config that cannot be written: no folder without a run.json is left behind
            run.release()  # (a traceback that keeps the Run must not hold the id, which the next run may reuse)
            shutil.rmtree(path, ignore_errors=True)
            raise
        return run

    def resolve(self, run_id: str | Run | os.PathLike) -> str:
        """The full id of the run `run_id` names: itself, or the one run whose id starts with it. A Run (what
        run_search and the other run functions return) and a run's folder in this store name their run too."""
        if isinstance(run_id, Run):
            run_id = run_id.path
        if isinstance(run_id, os.PathLike):
            folder = user_path(run_id)
            if folder.parent.resolve() != self.root.resolve():
                raise RunError(f"{folder} is not a run folder of the run store {self.root}: give a run id, or open "
                               f"the store that holds it (RunStore({str(folder.parent)!r}))")
            if not (self.root / folder.name).is_dir():  # a folder names its run, never another by its prefix
                raise RunError(f"no run folder {folder} in {self.root}")
            return folder.name
        if not isinstance(run_id, str):
            raise RunError(f"give a run id (a str, or a Run), got {type(run_id).__name__}")
        if is_run_name(run_id) and (self.root / run_id).is_dir():
            return run_id
        if os.sep in run_id or "/" in run_id:  # a run's folder as a path (what tab completion gives), not its id
            return self._folder_id(user_path(run_id))
        # runs only: the Lab's snapshots or a page's figures folder is no run to match or to name
        ids = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
                     and (p / "run.json").exists()) if self.root.is_dir() else []
        matches = [i for i in ids if run_id and i.startswith(run_id)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            shown = ", ".join(matches[:8]) + (f" and {len(matches) - 8} more" if len(matches) > 8 else "")
            raise RunError(f"run id {run_id!r} is ambiguous in {self.root}: it starts {len(matches)} runs ({shown}); "
                           f"give more of the id")
        known = ", ".join(ids[-5:]) or "none"
        where = f"latest runs: {known}" if self.root.is_dir() else "no such folder: give --runs"
        raise RunError(f"no run {run_id!r} in {self.root} ({where})")

    def _folder_id(self, folder: Path) -> str:
        """The id of the run whose folder `folder` is, typed as a path (`runs show runs/ID`): a run folder of this
        store names its run; one of another store is refused naming its --runs, which a path did not say (it was
        taken for an id: "no run 'other/ID' in runs")."""
        if not (folder / "run.json").is_file():
            raise RunError(f"{folder} is not a run folder (no run.json there); give a run id, or a prefix of one, "
                           f"with --runs the folder that holds the runs")
        if folder.parent.resolve() != self.root.resolve():
            raise RunError(f"{folder} is a run of another run store: give its id {folder.name} with --runs "
                           f"{shell_path(folder.parent)}")
        return folder.name

    def open(self, run_id: str | Run | os.PathLike) -> Run:
        """The run with this id or unique id prefix (run.json checked); a Run or a run's folder in this store names
        its run too.

        Raises:
            RunError (a ValueError): no run of that id or prefix in the store (or no store folder), a prefix that
                starts several runs, a folder outside this store or none in it, a `run_id` of another type, a
                run.json that is missing, corrupt, of a newer workbench, not a run record or with fields of the
                wrong type.
        """
        run = Run(self.root / self.resolve(run_id))
        with _unless_removed_meanwhile(run, wait=0):  # between the two looks: not "no run.json"
            run.info  # noqa: B018 - validates run.json
        return run

    def remove(self, run_id: str | Run | os.PathLike) -> str:
        """Delete the run `run_id` names (an id or unique prefix, a Run, its folder) for good, with its folder;
        its id. Refused (RunError) while the run runs or is held by another process (a resume), here or on
        another host (stop it first), for a folder that is no run (no run.json) and for a link to a folder
        elsewhere. A run whose run.json no longer reads is removed too, unless it says it runs. The folder leaves
        the store in one rename (to a hidden .removing-ID-PID) before it is deleted: a removal cut short leaves no
        half run in the catalog, and a later removal deletes what it left."""
        with _unless_removed_meanwhile(run_id if isinstance(run_id, Run) else None):  # one removable() handed out
            run = Run(self.root / self.resolve(run_id))
        with _unless_removed_meanwhile(run):
            self._take_out(run)
        trash = self.root / f".removing-{run.id}-{os.getpid()}"
        shutil.rmtree(trash, ignore_errors=True)
        if trash.exists():
            raise RunError(f"run {run.id} left the store, but {trash} could not be deleted whole: delete it yourself")
        self._sweep_removals()
        return run.id

    def _take_out(self, run: Run) -> None:
        """remove's checks, claim and rename: the run's folder leaves the store as .removing-ID-PID."""
        self.check_removable(run)
        try:
            run.claim()  # from here no resume can start
        except RunError:
            record = run._claim_record()
            raise _busy(run.id, run._runs_it(record), _holder(record)) from None
        trash = self.root / f".removing-{run.id}-{os.getpid()}"
        try:
            os.replace(run.path, trash)
        finally:
            run.release()

    def removable(self, run_ids: Iterable[str | Run | os.PathLike]) -> list[Run]:
        """The runs `run_ids` name (ids, unique prefixes, Runs), each checked as remove checks it
        (check_removable): one refusal refuses them all, before any goes."""
        runs = [Run(self.root / self.resolve(i)) for i in run_ids]
        for run in runs:
            with _unless_removed_meanwhile(run):
                self.check_removable(run)
        return runs

    def remove_all(self, runs: list[Run]) -> list[str]:
        """remove() each of `runs` (what removable returned); their ids. One that changed since its check (a
        resume that started) stops the rest: RunError naming those already removed."""
        removed: list[str] = []
        try:
            for run in runs:
                removed.append(self.remove(run))
        except (RunError, OSError) as exc:
            if not removed:
                raise
            raise RunError(f"removed {', '.join(removed)}; {exc}") from exc
        return removed

    def _sweep_removals(self) -> None:
        """Delete what removals cut short left (.removing-ID-PID whose process is gone: a live one is still at
        it)."""
        for left in self.root.glob(".removing-*"):
            pid = left.name.rsplit("-", 1)[-1]
            if pid.isdigit() and _process_started(int(pid)) is not None and int(pid) != os.getpid():
                continue  # another process deleting it now
            shutil.rmtree(left, ignore_errors=True)

    def check_removable(self, run: Run) -> None:
        """RunError where `run` may not be removed (remove's refusals, for callers that check a list of runs
        before any goes): a folder that is no run (no run.json), a link to a folder elsewhere, a run that runs
        (its process alive here, or a fresh heartbeat elsewhere) or that another process holds (a resume setting
        up or going on). A run.json this version does not read (damaged, or a newer workbench's) is read as plain
        JSON for that."""
        if not (run.path / "run.json").exists():
            raise RunError(f"{run.path} is no run (it has no run.json); not removed")
        if run.path.is_symlink():  # its data is elsewhere: not ours to delete through a link
            raise RunError(f"{run.path} links to {run.path.resolve()}: remove the link yourself (the run's files "
                           "stay where they are)")
        try:
            info = run.info
        except RunError:
            try:
                info = json.loads((run.path / "run.json").read_text())
            except (OSError, ValueError, RecursionError):
                info = None
            info = info if isinstance(info, dict) else {}
        try:
            running = effective_status(info) == "running"
        except (TypeError, ValueError):  # a damaged pid or heartbeat: nothing runs it that we can tell
            running = False
        holder, started = (run._claim_record() if run._claim is None else None) or (None, None)
        if running or holder:
            by = holder or (_pid_on(info.get("pid"), info.get("host")) if info.get("pid") is not None
                            else "another process")
            raise _busy(run.id, running or _holder_runs_it(info, holder, started), by)

    def reopen(self, run_id: str, read_config: Callable[[dict], Any], kinds: tuple[str, ...] | None = None, *,
               trust_pickle: bool = False, going_on: bool = False) -> tuple[Run, Any, dict | None]:
        """A run to resume: its folder, its config read back by `read_config`, its last checkpoint (or None).
        Refused: a run of another kind than `kinds`, a run whose process is still running, a run another resume
        holds. The run comes back claimed (Run.claim) unless it is done and not `going_on` (a resume to another
        total, new_total): the caller's loop releases it."""
        run = self.open(run_id)
        info = run.info
        if kinds is not None and info.get("kind") not in kinds:
            raise RunError(_wrong_kind(run, " / ".join(kinds), resuming=True))
        run.check_resumable(trust_pickle)
        if info.get("status") != "done" or going_on:  # a done run is handed back as it is: nothing to hold
            run.claim()  # to the end of the resume's loop (checkpointed_loop and setting_up release it)
            info = run.info  # as it is now that no other resume can change it
        try:
            if run._claim is not None:  # only a held run: another process's note or resume may be writing a done one
                # and not what others write into a held one too: a note (the Runs page), a page's figures
                sweep_partial_writes(run.path, spared=(NOTE_FILE, "figures"))
            try:
                cfg = read_config(info["config"])
            except (TypeError, ValueError) as exc:
                raise RunError(f"run {run.id!r} has a config this version cannot read ({exc})") from exc
            state = run.load_checkpoint(trust_pickle=trust_pickle)
            if state is None and (info.get("status") != "done" or going_on) and (
                    info.get("iterations") or (run.path / "metrics.parquet").exists()):
                # the loop writes the checkpoint before the metrics and run.json: its absence is damage, and
                # starting over would overwrite the iterations the run did
                raise RunError(f"run {run.id!r} did {info.get('iterations') or 'some'} iterations but has no "
                               "checkpoint.json: --resume would start it over and overwrite its metrics; start a "
                               "new run instead")
            return run, cfg, state
        except BaseException:
            run.release()
            raise

    def reopen_to(self, run: Run, read_config: Callable[[dict], Any], kinds: tuple[str, ...], extends: str,
                  value: int | None, *, trust_pickle: bool = False) -> tuple[Run, Any, dict | None, int | None]:
        """reopen for a kind whose length setting `extends` a resume may change to `value` (check_resume checked
        it first): the run, its config, its checkpoint and the new total (new_total; None: the run's own). A
        finished run that goes on is held as an unfinished one is, and the total is worked out again once the
        run is held (another resume may have changed it meanwhile)."""
        going_on = new_total(run, extends, value) is not None
        run, cfg, state = self.reopen(run.id, read_config, kinds=kinds, trust_pickle=trust_pickle, going_on=going_on)
        return run, cfg, state, new_total(run, extends, value)

    def _records(self) -> tuple[list[dict], dict[str, str]]:
        """The catalog rows of the store's runs, and why each folder left out cannot be read (folder -> reason)."""
        records: list[dict] = []
        broken: dict[str, str] = {}
        if not self.root.is_dir():
            return records, broken
        for path in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if not (path / "run.json").exists():  # not a run (the Lab's snapshots, a page's figures): no warning
                continue
            try:
                records.append(checked_catalog_row(Run(path).info, self.root, path))
            except RunError as exc:  # its words name the folder: said of the folder named beside them
                if isinstance(exc.__cause__, FileNotFoundError) or not (path / "run.json").exists():
                    # moved since it was listed (another tab, `runs rm`), even if it is back by now: not unreadable
                    continue  # (the Runs page named it "not a workbench run (no run.json)")
                broken[path.name] = str(exc).replace(f"{path}/", "", 1)
        return records, broken

    @property
    def unreadable_runs(self) -> list[str]:
        """The folders the last catalog() left out: their run.json does not read as a run's (as broken())."""
        return list(self.unreadable_why)

    def passed_over(self, kinds: Iterable[str], algorithm: str | None = None) -> list[str]:
        """Why each run of `kinds` the last catalog() left out cannot be read ("run ID: reason"): for a page that
        picks those kinds' runs to say it passed them over (it dropped them without a word). algorithm: only runs
        whose config records it (the QD page opens MAP-Elites illuminations, not the GA's). A run.json whose kind
        cannot be read names no kind: the Runs page and `workbench runs list` name it."""
        kinds = set(kinds)
        recorded = {name: _recorded_kind(self.root / name) for name in self.unreadable_why}
        return [f"run {name}: {why}" for name, why in self.unreadable_why.items()
                if recorded[name][0] in kinds and algorithm in (None, recorded[name][1])]

    def catalog(self, metrics: bool = True) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection with the table `runs` (one row per readable run) and the view `metrics` (every
        run's metrics.parquet, with its run_id; `metrics=False`: no view, and unreadable_metrics lists the files
        whose ends are not Parquet's, without the view's read of every file's schema).

        runs: id, kind, substrate, fm, status (running / done / stopped / failed / interrupted / resuming), iterations,
        best_loss (minimised; −fitness for merge runs, −QD score for qd runs), seed, created, updated, metric ("loss" |
        "fitness" | "qd_score"), better ("lower" | "higher"), best (in the metric's own units), algorithm (ASAL runs),
        method and models (merge runs), tasks, sampling and mutation (qd runs), columns (the describing columns of the
        run's kind), note (the researcher's note, '' for none), resume_command (for interrupted, stopped and failed
        runs), command (the command line that started the run)."""
        import duckdb

        records, self.unreadable_why = self._records()
        self.unreadable_metrics = []
        con = duckdb.connect()
        types = {"text": "VARCHAR", "int": "BIGINT", "real": "DOUBLE", "texts": "VARCHAR[]"}
        con.execute("CREATE TABLE runs (" + ", ".join(f'"{name}" {types[kind]}' for name, kind in
                                                      CATALOG_COLUMNS.items()) + ")")
        if records:  # one statement: each column one list, unnested side by side (not a pyarrow table, whose
            # conversion of Python lists imports pandas: a third of `runs list`'s time; executemany took 2 s a 1,000)
            con.execute("INSERT INTO runs SELECT " + ", ".join(f"UNNEST(?::{types[kind]}[])"
                                                               for kind in CATALOG_COLUMNS.values()),
                        [[row.get(name) for row in records] for name in CATALOG_COLUMNS])
        files = [str(self.root / r["id"] / "metrics.parquet") for r in records
                 if (self.root / r["id"] / "metrics.parquet").exists()]
        if not metrics:  # a listing: three quarters of a catalog's time at 1,000 runs was the view's schema read
            self.unreadable_metrics = [f for f in files if _parquet_ends(f) is False]
            return con
        self._metrics_view(con, files)
        return con

    def _metrics_view(self, con: duckdb.DuckDBPyConnection, files: list[str]) -> None:
        """catalog's view `metrics` over the metrics `files` that read. A damaged file fails the whole read, so the
        first failure probes each file (unreadable_metrics); a run removed meanwhile (another tab, `runs rm`) fails
        it too, before or as the view is made (DuckDB binds each view to its files): its metrics are left out, not
        reported, and the views are made again (catalog() raised IOException: "No files found that match")."""
        import duckdb

        probed = False
        for _ in range(4):
            try:
                if files:
                    con.read_parquet(files, filename=True, union_by_name=True).create_view("metrics_files")
                    con.execute(r"CREATE OR REPLACE VIEW metrics AS SELECT regexp_extract(filename, "
                                r"'([^/\\]+)[/\\]metrics\.parquet$', 1) AS run_id, * EXCLUDE (filename) "
                                "FROM metrics_files")
                    return
                break
            except duckdb.Error:
                files = [f for f in files if os.path.exists(f)]
                if not probed:  # one damaged file fails the whole read: the view leaves those out
                    self.unreadable_metrics = [f for f in files if not _readable_parquet(con, f) and os.path.exists(f)]
                    files = [f for f in files if f not in self.unreadable_metrics]
                    probed = True
        # no file, or runs rewrote theirs between each probe and read: no metrics now
        con.execute("CREATE OR REPLACE VIEW metrics AS SELECT NULL::VARCHAR AS run_id, NULL::BIGINT AS iteration "
                    "WHERE false")

    def list(self) -> list[dict]:
        """The catalog's runs, oldest first (by created_at: made in any time zone; catalog's `runs` rows as dicts);
        unreadable_runs and unreadable_metrics name what it left out or could not read (metrics files cut or
        overwritten at their ends: damage inside a file that keeps them is found when the file is read, by metrics()
        or catalog()'s view)."""
        with self.catalog(metrics=False) as con:  # closed here, even where an error's traceback keeps this frame
            cur = con.execute("SELECT * FROM runs ORDER BY created_at NULLS FIRST, created, id")
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    def unfinished(self, older_than: float = 60.0) -> list[str]:
        """Folders a kill left as their run was created: its input copies (inputs/) or, killed before it made
        them, an empty folder named as a run's id; no run.json, untouched for `older_than` seconds (a run being
        created now is not one). Not runs: nothing to resume or list."""
        now = time.time()
        return [p.name for p in self._without_run_json()
                if ((p / "inputs").is_dir() or (RUN_ID.match(p.name) and _killed_empty(p)))
                and now - max(q.stat().st_mtime for q in (p, p / "inputs") if q.exists()) > older_than
                and not _holds_run_files(p)]  # a run's files besides: it lost its run.json (orphaned)

    def orphaned(self) -> list[str]:
        """Folders that hold a run's files (checkpoint.json or metrics.parquet) but no run.json, which says what the
        run is: lost or deleted by hand. Not listed or resumable, so said, not skipped without a word."""
        return [p.name for p in self._without_run_json() if _holds_run_files(p)]

    def _without_run_json(self) -> list[Path]:
        """The store's folders (not hidden ones) that hold no run.json, in name order."""
        if not self.root.is_dir():
            return []
        return [p for p in sorted(self.root.iterdir())
                if p.is_dir() and not p.name.startswith(".") and not (p / "run.json").exists()]

    def broken(self) -> list[str]:
        """The folders whose run.json cannot be read (corrupt, or another program's); folders without one are
        not runs and not listed."""
        return list(self._records()[1])

    def metrics(self, run_id: str) -> list[dict]:
        """A run's metrics rows by iteration (run_id and the columns its kind writes), [] before its first row.
        Read from its own metrics.parquet: the catalog's view would read every run's, and give each row the
        columns of every kind in the store, as nulls."""
        import duckdb

        run = self.open(run_id)
        path = run.path / "metrics.parquet"
        if not path.is_file():
            return []
        table = run.metrics_table("iteration")  # (without it DuckDB's binder error was a traceback of `runs show`)
        with duckdb.connect() as con:
            con.register("metrics_rows", table)
            cur = con.execute("SELECT ? AS run_id, * FROM metrics_rows ORDER BY iteration", [run.id])
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


@contextlib.contextmanager
def _unless_removed_meanwhile(run: Run | None, wait: float = 0.5) -> Iterator[None]:
    """A removal's refusal or a note's failure (RunError, FileNotFoundError) said as "removed meanwhile" where the
    run's folder is gone (or goes within `wait` s): two tabs (or a tab and `workbench runs rm`) removing it at once
    saw the other removal's brief claim as "held by another process (a resume)", its rename as "no run.json" or a
    bare FileNotFoundError naming a .removing- folder; a note written meanwhile, that FileNotFoundError (the Runs
    page said nothing: it shows ValueErrors)."""
    try:
        yield
    except (RunError, FileNotFoundError):
        # waited for only while someone holds the run's claim (another removal between its claim and its rename):
        # a refusal that no removal causes (no run, a link, a running run's) is said at once, not 0.5 s later
        if run is not None and _gone(run.path, wait if run._claim_record() is not None else 0):
            raise RunError(f"run {run.id} was removed meanwhile (by another page or `workbench runs rm`)") from None
        raise


def _gone(folder: Path, wait: float = 0.5) -> bool:
    """Whether `folder` is gone from the store, or goes within `wait` seconds: a removal holds the run's claim only
    from its check to its rename, so a claim that is still held after that is a resume's (or a running run's)."""
    deadline = time.monotonic() + wait
    while os.path.lexists(folder):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _killed_empty(folder: Path) -> bool:
    """Whether a run's folder holds nothing but, at most, the claim its creator took (a run function's new run
    is claimed before anything else is made in it) and nobody holds that claim now (its creator was killed)."""
    try:
        return all(q.name == CLAIM_FILE for q in folder.iterdir()) and Run(folder)._claim_record() is None
    except FileNotFoundError:  # gone since it was listed (a failed creation takes its folder away): no run's
        return False


def _holds_run_files(folder: Path) -> bool:
    """Whether a folder holds what only a run writes (checkpoint.json, metrics.parquet)."""
    return any((folder / name).is_file() for name in ("checkpoint.json", "metrics.parquet"))


def whole_total(rows: Iterable[dict], column: str) -> int:
    """The sum of a metrics `column`'s whole numbers over `rows` (an ASAL run's `diverged`): a row without it or
    with null there (a run of a version before the column, the rows it did before a resume by this one) counts 0,
    as does any other value (a foreign table's: the count, not the caller, pays for it)."""
    return sum(n for row in rows if isinstance(n := row.get(column), int))


def read_parquet(path: str | Path, columns: list[str] | None = None):
    """A Parquet file as a pyarrow Table, read in one open: a run rewrites its tables while pages and commands
    read them, by renaming a new file over the old, and a reader that opens the file twice (pyarrow, pandas and
    DuckDB read the footer, then the data) took the old footer with the new data in 1 read of 100 under a fast
    writer (TProtocolException, "Page was smaller than expected"). The bytes read at once are one file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pq.read_table(pa.BufferReader(Path(path).read_bytes()), columns=columns)


def _parquet_ends(path: str) -> bool | None:
    """Whether `path` begins and ends as a Parquet file does ("PAR1", then at the end a footer length that fits
    the file and "PAR1"): a truncated or overwritten file does not. None when the file is gone (a run removed
    meanwhile is no damaged file). Two small reads, where DuckDB's read of the footer parsed it."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
            size = f.seek(0, os.SEEK_END)
            if size < 12:
                return False
            f.seek(size - 8)
            tail = f.read(8)
    except FileNotFoundError:
        return None
    except OSError:  # a folder of that name, a file this user may not read
        return False
    footer = int.from_bytes(tail[:4], "little")
    return head == b"PAR1" and tail[4:] == b"PAR1" and 0 < footer <= size - 12


def _readable_parquet(con, path: str) -> bool:
    """Whether DuckDB (connection `con`) reads `path` as Parquet: a truncated or overwritten file it does not."""
    import duckdb

    try:
        con.read_parquet(path).limit(1).fetchall()
        return True
    except duckdb.Error:
        return False


@contextlib.contextmanager
def setting_up(run: Run, new: bool = True):
    """The set-up of a new run between its folder and its loop (copying inputs, building the search, on_start):
    an error there marks the run failed, with the error, and Ctrl-C stopped, as checkpointed_loop does, instead of
    leaving run.json saying "running" (in a long-lived process, a dashboard's server, every page would show that
    until the process ends). Either way it resumes from its start, unless the copies of its input files were not
    all made: its resume then says so (Run.check_copied). A resumed run (new=False) keeps the status it had: it is
    as resumable as before."""
    try:
        yield run
    except BaseException as exc:
        if new:
            _end(run, exc)
        elif isinstance(exc, KeyboardInterrupt):  # as resumable as before: the command line says how
            exc.stopped_run = run
            _note_resume(exc, run, "stopped")
        run.release()
        raise


def _ended_by(exc: BaseException, run: Run) -> dict:
    """What run.json says of a run that `exc` ended: Ctrl-C leaves it stopped, anything else failed, with the
    error (both resumable). A KeyboardInterrupt carries the run on (`stopped_run`), so that the command line can
    say how to resume it."""
    if isinstance(exc, KeyboardInterrupt):
        exc.stopped_run = run
        return {"status": "stopped"}
    with contextlib.suppress(AttributeError, TypeError):  # an exception type without a __dict__ carries nothing
        exc.failed_run = run
    return {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}


def _note_resume(exc: BaseException, run: Run, status: str) -> None:
    """A note on the exception (PEP 678: a traceback prints it, IPython's too) naming the run it ended and how to
    resume it. In a notebook an interrupted cell ended in a bare "KeyboardInterrupt:", and `run = run_search(…)`
    kept the run of the cell's last time, which the next cell plotted without a word."""
    if not hasattr(exc, "add_note"):  # Python 3.10
        return
    # a run.json unreadable by now: the error itself is what counts; a second Ctrl-C here costs the note alone
    with contextlib.suppress(Exception, KeyboardInterrupt):
        info = run.info  # (read once: each read is run.json's)
        command, function = _resume_cli(info, run.path.parent), RESUME_FUNCTIONS.get(info.get("kind"))
        if not (command and function):
            return
        module, name = function.rsplit(".", 1)
        exc.add_note(f"run {run.id} {status} (resumable{'' if status == 'stopped' else ' once that is fixed'}): "
                     f"{name}(None, {str(run.path.parent)!r}, resume={run.id!r}) (from {module}), or `{command}`")


class _Saves:
    """checkpointed_loop's saves of its `state` after iterations: each one's, or where iterations are faster than a
    save, only once SAVE_SHARE of the time since the last save would go to saving (done), and what is left unsaved
    when the loop stops (flush)."""

    def __init__(self, run: Run, state: dict, on_save: Callable[[], None] | None = None) -> None:
        self.run, self.state, self.on_save = run, state, on_save
        self.saved = state["iteration"]  # the iterations the checkpoint on disk holds
        self.cost, self.at = 0.0, time.perf_counter()  # no save yet: the first iteration is saved
        self.share = save_share()

    def done(self, last: bool) -> None:
        """An iteration is done (state holds it): save it where it is the last, or once it is time to."""
        if last or time.perf_counter() - self.at >= self.cost * (1 - self.share) / self.share:
            self.flush()

    def flush(self) -> None:
        """Save the iterations done since the last save, if any."""
        if self.state["iteration"] == self.saved:
            return
        start = time.perf_counter()
        self.run.save_checkpoint(self.state)
        self.run.write_rows("metrics", self.state["metrics"])
        self.run.update(iterations=self.state["iteration"], best_loss=self.state["metrics"][-1]["best_loss"],
                        **heartbeat())
        self.saved = self.state["iteration"]
        if self.on_save is not None:  # (timed with the save: its files are part of what a save costs)
            self.on_save()
        self.at = time.perf_counter()
        self.cost = self.at - start


def _end(run: Run, exc: BaseException) -> None:
    """Mark the run that `exc` ended (stopped or failed), then note on `exc` how to resume it: in this order, so that
    nothing between the exception and the marking can be interrupted (a note reads run.json)."""
    ended = _ended_by(exc, run)
    _record_end(run, ended)
    _note_resume(exc, run, ended["status"])


def _record_end(run: Run, ended: dict) -> None:
    """run.update(**ended) for a run an exception ends, its own errors dropped (the first error is the one to
    report). A Ctrl-C while it writes (a notebook's second "interrupt", pressed because the first seemed slow to
    land) stops nothing more: the write is tried again. Left out, run.json kept "running" with the pid of a process
    that lives on (a Jupyter kernel, a server), which reads as running for as long as it lives: every resume of
    the run, in that process or any other, was refused until the kernel restarted."""
    for _ in range(5):
        try:
            run.update(**ended)
            return
        except KeyboardInterrupt:
            continue
        except Exception:  # noqa: BLE001 - a full disk, a read-only folder: the error that ended the run is reported
            return


#: the largest share of a run's time its saves may take. A save (the checkpoint, metrics.parquet and run.json: four
#: fsynced writes, 18 ms on this project's test machine, and more as the run grows) took 20 % of a fast search's time
#: (Game of Life on pixels, 71 ms an iteration) and would take half of a GPU's (40 ms): where iterations are faster
#: than a save's cost over this share, an iteration is saved only once that much time has passed since the last save
SAVE_SHARE = 0.1


def save_share() -> float:
    """SAVE_SHARE, or the environment's WORKBENCH_SAVE_SHARE where it is set: 1 saves after every iteration (a test
    that kills a run between two saved iterations), a smaller share fewer saves of a very fast run."""
    text = os.environ.get("WORKBENCH_SAVE_SHARE")
    if text is None:
        return SAVE_SHARE
    try:
        share = float(text)
    except ValueError:
        share = math.nan
    if not 0 < share <= 1:
        raise ValueError(f"WORKBENCH_SAVE_SHARE={text}: give the share of a run's time its saves may take, above 0 "
                         f"and at most 1 (1: a save after every iteration), or unset it for {SAVE_SHARE}")
    return share


def checkpointed_loop(run: Run, state: dict, iters: int, step: Callable[[int], dict], finish: Callable[[], None], *,
                      should_stop: Callable[[], bool] | None = None,
                      on_iteration: Callable[[int, int, dict], None] | None = None,
                      on_save: Callable[[], None] | None = None) -> Run:
    """The loop every stored search shares. For each remaining iteration, step(it) does the work and returns
    the metrics of the iteration (with best_loss), updating `state` in place; then the checkpoint (state),
    metrics.parquet and run.json (with a fresh heartbeat) are written atomically, so a killed process resumes
    from here: after every iteration, or for iterations faster than a save, once the time since the last save is
    (1 − share) / share times the last save's cost (save_share(); a kill loses that fraction of a second of work,
    which the resumed run does again, to the same bits). The first and last iterations are always saved, and so
    is the last one done when should_stop() stops the run. finish() runs after the last iteration. should_stop() or
    Ctrl-C leaves a resumable 'stopped' run; an error marks it 'failed' (also resumable: a failed finish() is
    redone). A resumed run's metrics.parquet and run.json are written again from the checkpoint first, and an
    on_iteration with a `resumed(done, total, last row)` method (a progress bar's) is told the count it goes on
    from; on_iteration(done, total, row) follows every iteration, saved or not. on_save() follows each save, the
    state as saved: where a run writes files of its own for the iterations done (a page or a command reads them
    beside the checkpoint), there, not in step() or on_iteration, so that they never run ahead of the checkpoint
    (a model a page listed that the checkpoint lacked; after a kill, files of iterations its resume does again)."""
    caught_up = {}
    if state["metrics"]:
        # the checkpoint is written first: a kill after it left metrics.parquet or run.json an iteration behind,
        # which no later iteration rewrites where it was the last (the resumed run reported one row fewer)
        run.write_rows("metrics", state["metrics"])
        caught_up = {"iterations": state["iteration"], "best_loss": state["metrics"][-1]["best_loss"]}
    run.update(status="running", error=None, **caught_up, **heartbeat())
    resumed = getattr(on_iteration, "resumed", None)
    try:
        # the count a resumed run goes on from, drawn now (its bar read "setting up" or 0/N until the next iteration
        # ended); in the try: a Ctrl-C or an error as it draws leaves the run stopped or failed, not "running"
        if caught_up and resumed is not None:
            resumed(state["iteration"], iters, state["metrics"][-1])
        saves = _Saves(run, state, on_save)
        for it in range(state["iteration"], iters):
            if should_stop is not None and should_stop():
                saves.flush()
                run.update(status="stopped")
                return run
            start = time.perf_counter()
            info = step(it)
            row = {"iteration": it, "seconds": time.perf_counter() - start, **info}
            state["metrics"].append(row)
            state["iteration"] = it + 1
            saves.done(last=it + 1 == iters)
            if on_iteration is not None:
                on_iteration(it + 1, iters, row)
        finish()
    except BaseException as exc:
        # the first error is the one to report: on a disk that stays full this write failed too, and its error
        # (naming run.json) replaced the one that ended the run
        _end(run, exc)
        raise
    finally:
        run.release()
    return run
