"""Checks of the settings the run configs share, each one ValueError naming the setting by its flag (a notebook's
config fields and the CLI's flags are the same settings), raised in the config's __post_init__: before a model
loads or a run folder is made, where a bad value would otherwise fail deep inside NumPy, torch or cmaes, or
leave a failed run behind."""

from __future__ import annotations

import math
import os
import shlex
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path


def is_whole(value: object) -> bool:
    """Whether `value` is a whole number: a Python or NumPy integer, not a bool."""
    if isinstance(value, int):
        return not isinstance(value, bool)
    np = sys.modules.get("numpy")  # a NumPy integer needs NumPy imported: not imported for it (`runs list`)
    return np is not None and isinstance(value, np.integer)


def is_count(value: object, at_least: int = 1) -> bool:
    """Whether `value` is a whole number (a Python or NumPy integer, not a bool) ≥ at_least."""
    return is_whole(value) and value >= at_least


def as_number(value: object) -> float:
    """`value` as a float; NaN for a bool or what is no number (the callers' range checks then refuse it)."""
    try:
        return math.nan if isinstance(value, bool) else float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def check_seed(seed: object, flag: str = "--seed") -> None:
    """A seed NumPy can take (0 ≤ seed < 2³²): NumPy's own error came from inside the run."""
    if not (is_count(seed, 0) and seed < 2 ** 32):
        raise ValueError(f"{flag} must be a whole number from 0 to 4294967295 (NumPy's seeds), got {seed!r}")


def check_counts(config: object, names: Iterable[str], flags: dict[str, str] | None = None, at_least: int = 1) -> None:
    """Each named field a whole number ≥ at_least: 1.5 or "2" passed a check of int(value) and failed later, in
    the loop, with "'float' object cannot be interpreted as an integer" (a NumPy integer is kept as an int).
    flags: the field → flag map of a config (a field without a flag is named as it is); None: each field's flag
    is its name in dashes."""
    for name in names:
        value = getattr(config, name)
        if not is_count(value, at_least):
            flag = flags.get(name, name) if flags is not None else f"--{name.replace('_', '-')}"
            # one wording for every count, as the command line's argparse types ("give a whole number of at least
            # 1"): it was said four ways ("a positive integer", "an integer of at least 1", "a whole number ≥ 1")
            raise ValueError(f"{flag} must be a whole number of at least {at_least}, got {value!r}")
        setattr(config, name, int(value))  # a NumPy integer becomes one run.json can hold


def count(value: object, name: str, at_least: int = 1) -> int:
    """One whole number ≥ at_least (a number of steps, a size, a dpi), as an int; 0 is not taken for a default."""
    if not is_count(value, at_least):
        raise ValueError(f"{name} must be a whole number of at least {at_least}, got {value!r}")
    return int(value)


def check_weight(value: object, flag: str) -> float:
    """A finite number ≥ 0 (a loss term's weight), as a float."""
    number = as_number(value)
    if not (math.isfinite(number) and number >= 0):
        raise ValueError(f"{flag} weighs a term of the loss: give a finite number ≥ 0 (0 leaves the term out), "
                         f"got {value!r}")
    return number


def check_positive(value: object, flag: str, why: str = "") -> float:
    """A finite number > 0 (a step size, a learning rate), as a float; `why` says what it is."""
    number = as_number(value)
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{flag} must be a finite number > 0{why}, got {value!r}")
    return number


def texts(value: object, flag: str) -> list[str]:
    """A list of names or prompts from a list or tuple of them, or from one string (one name: "add" is ["add"],
    not the letters a, d, d)."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{flag} takes a list of texts, got {value!r}")
    return list(value)


def available_memory(proc: Path = Path("/proc"), cgroups: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Bytes the OS can hand out without swapping (Linux's MemAvailable), less where the process' cgroup (a
    container, a batch job's slot) allows less; None where the OS does not say. Checks of sizes a run would
    allocate use it: with no swap, a run too big for the machine was killed (or segfaulted in BLAS) after its
    folder was made, taking memory from everything else on the way. proc, cgroups: where /proc and the cgroup
    file systems are mounted."""
    free = None
    try:
        with open(proc / "meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    try:
        own = (proc / "self" / "cgroup").read_text()
    except OSError:
        return free
    room = cgroup_headroom(own, cgroups)
    return room if free is None else free if room is None else min(free, room)


def cgroup_headroom(own: str, root: Path) -> int | None:
    """What the memory cgroup named in `own` (the text of /proc/self/cgroup) still allows under `root` (where the
    cgroup file systems are mounted): its limit less what it uses, the page cache it may drop counted as free.
    cgroup v2 (a "0::/path" line) or v1 (a "memory" controller line); the smallest room of the cgroup and those
    above it, the mount's root included (inside a container, the process' own cgroup is often that root). None
    where no limit is set or nothing says."""
    for line in own.splitlines():
        number, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if number == "0" and controllers == "":  # v2: memory.max / memory.current / memory.stat's inactive_file
            names, base = ("memory.max", "memory.current", "inactive_file"), root
        elif "memory" in controllers.split(","):  # v1: under the memory controller's own mount
            names, base = ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"), root / "memory"
        else:
            continue
        rooms = []
        # the cgroup and each one above it (a batch job's limit sits on its job, not on the step or task it runs
        # in), down to the mount's root (a container's own cgroup)
        parts = [p for p in path.split("/") if p]
        for folder in {base.joinpath(*parts[:i]) for i in range(len(parts) + 1)}:
            try:
                limit = (folder / names[0]).read_text().strip()
                used = int((folder / names[1]).read_text())
                stat = (folder / "memory.stat").read_text() if (folder / "memory.stat").is_file() else ""
            except (OSError, ValueError):
                continue
            if not limit.isdigit() or int(limit) >= 2**60:  # "max" (v2) or the huge number v1 writes: no limit
                continue
            cache = next((int(v) for k, v in (row.split() for row in stat.splitlines() if row.count(" ") == 1)
                          if k == names[2]), 0)
            rooms.append(max(0, int(limit) - used + cache))
        if rooms:
            return min(rooms)
    return None


class MemoryNeedError(ValueError):
    """Sizes whose arrays cannot fit in the memory available (check_fits and the kinds' memory checks)."""


def check_fits(need: float, flag: str, value: int, what: str, largest: int, free: int | None = None) -> None:
    """One error naming `flag` and the largest value that fits, where `need` bytes for `value` exceed 80 % of
    the memory available (free, default: measured now); nothing where the OS does not say."""
    free = available_memory() if free is None else free
    if free is None or need <= 0.8 * free:
        return
    raise too_big(need, free, flag, value, what, f"{flag} {max(largest, 1)}")


def too_big(need: float, free: float, flag: str, value: int, what: str, fix: str) -> MemoryNeedError:
    """check_fits' error, with its fix in words ("--bs 1 and --frames 11"), where a check names more than one
    flag."""
    return MemoryNeedError(f"{flag} {value}: {what} {needs_of(need, free)}: give {fix} or less")


def nothing_fits(need: float, free: float, what: str, smallest: str) -> MemoryNeedError:
    """The error where not even the `smallest` settings ("--pop 2 --bs 1 --frames 2") fit."""
    return MemoryNeedError(f"{what} {needs_of(need, free)}, and even {smallest} would not fit: free memory or use "
                           f"a machine with more")


def needs_of(need: float, free: float) -> str:
    """"needs about 3.2 GiB, 1.5 GiB are available here", in MiB where both are under a GiB (not "0.0 GiB")."""
    unit, scale = ("GiB", 2**30) if max(need, free) >= 2**30 else ("MiB", 2**20)
    return f"needs about {need / scale:.1f} {unit}, {free / scale:.1f} {unit} are available here"


def paths_as_text(config: object, *names: str) -> None:
    """Set each of `config`'s fields `names` that holds a path (pathlib.Path, or a list of them) to its text, as
    the CLI gives it: a notebook's zoo=Path(...) is stored in run.json and compared on resume as the text it is."""
    import os

    for name in names:
        value = getattr(config, name)
        if isinstance(value, os.PathLike):
            setattr(config, name, os.fspath(value))
        elif isinstance(value, (list, tuple)) and any(isinstance(v, os.PathLike) for v in value):
            setattr(config, name, [os.fspath(v) if isinstance(v, os.PathLike) else v for v in value])


def absolute_paths(config: object, *names: str, keep: tuple[str, ...] = ()) -> None:
    """Set each of `config`'s fields `names` whose text (or a list's item) names a file or folder that exists to
    its absolute path: a run records `--model tiny/` as the folder it is, so that its resume, `namm eval --run`,
    `figure namm` and the pages find it from any folder (stored as typed, they failed or silently took another
    model). keep: names that are no paths (a model called "smollm2"), kept as they are."""
    import os

    def absolute(value):
        if isinstance(value, str) and value not in keep and value.strip() and os.path.exists(os.path.expanduser(value)):
            return os.path.abspath(os.path.expanduser(value))
        return value

    for name in names:
        value = getattr(config, name)
        setattr(config, name, [absolute(v) for v in value] if isinstance(value, (list, tuple)) else absolute(value))


def user_path(path: str | os.PathLike) -> Path:
    """`path` as a shell reads it: "~/x" is in the home folder, "./~" is a folder named "~" here (kept absolute, as
    pathlib drops the "./" and Path("./~").expanduser() was the home folder itself)."""
    expanded = Path(os.path.expanduser(os.fspath(path)))
    return expanded.absolute() if expanded.parts[:1] and expanded.parts[0].startswith("~") else expanded


def same_paths(given: object, stored: object) -> bool:
    """True where `given` and `stored` (texts, or lists of them) name the same existing files or folders, however
    written: `--model tiny/` given to resume a run that recorded the folder's absolute path (absolute_paths)."""
    import os

    if isinstance(given, (list, tuple)) and isinstance(stored, (list, tuple)):
        return len(given) == len(stored) and all(same_paths(g, s) for g, s in zip(given, stored, strict=True))
    if not (isinstance(given, str) and isinstance(stored, str)):
        return False
    given, stored = os.path.expanduser(given), os.path.expanduser(stored)
    try:
        return os.path.exists(given) and os.path.exists(stored) and os.path.samefile(given, stored)
    except OSError:
        return False


def output_file(path: str | Path, flag: str = "--out", example: str = "result.json") -> Path:
    """`path` as a Path, or one error naming `flag` for an output file that cannot be written (found before the
    work, not after it as "Is a directory"): a folder (the fix names `example` in it), or a file in a folder that
    does not exist."""
    out = Path(path)
    if out.is_dir():
        raise ValueError(f"{flag} {path} is a folder; give a file name, e.g. {flag} {out / example}")
    if not out.parent.is_dir():
        refuse_file_above(path, flag)
        raise ValueError(f"{flag} {path}: the folder {out.parent} does not exist; create it first")
    return out


def shell_path(path: str | os.PathLike) -> str:
    """`path` as one word of a command line pasted into bash (a resume command, a fix an error names): quoted as the
    shell needs (spaces, quotes, $ and ;), with "./" before a relative path that starts with "-", which argparse
    took for a flag (`--runs -dash`: "expected one argument"). A leading "~" stays quoted: the workbench expands it
    itself, as the path was given."""
    text = os.fspath(path)
    return shlex.quote(f"./{text}" if text.startswith("-") else text)


def file_above(path: str | Path) -> Path | None:
    """The file among `path`'s parents, if one is: no folder can be made under it ("afile/runs"), which a caller
    says before the work, not at its first mkdir after it."""
    return next((p for p in Path(path).parents if p.exists() and not p.is_dir()), None)


def refuse_file_above(path: str | Path, flag: str = "--out") -> None:
    """One ValueError naming `flag` where a file lies among `path`'s parents (file_above): nothing can be written
    under it, found before the work."""
    above = file_above(path)
    if above is not None:
        raise ValueError(f"{flag} {path}: {above} is a file, not a folder")


def check_writable(path: str | Path, flag: str, fix: str, within: bool = False, given: str | None = None) -> None:
    """One ValueError naming `flag` where nothing can be written on the way to `path`: in the nearest folder that
    exists among its parents (a build staged beside it), or from `path` itself on (`within`: files written into
    it, made first). Found before the work, not at its first write after it; `fix` says what to give instead,
    `given` the path as the user gave it (default: `path`)."""
    path = Path(path)
    where = next(p for p in ((path,) if within else ()) + tuple(path.parents) if p.exists())
    try:
        tempfile.TemporaryDirectory(dir=where).cleanup()
    except OSError as error:
        raise ValueError(f"{flag} {given or path}: cannot write in {where} ({error.strerror}); {fix}") from None


def checked_again(config):
    """A copy of a dataclass config built anew from its fields, so that its checks (__post_init__) see what was
    set on it after it was built: in a notebook `cfg.iters = 0` ran a run of nothing and `cfg.eval.steps = 0` left
    a failed run folder. Its `notes` (what the checks adjusted, in words), where it has them, are made again.
    What the first build derived from other settings stays as derived (a search's algorithm and loss weights from
    its kind, the frames of an illumination, a substrate's default steps, a merge's tasks from its models, a
    mutation's scale): to change kind, substrate, models or mutation, build a new config."""
    import copy
    import dataclasses

    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.init}
    if "notes" in values:
        values["notes"] = []
    return type(config)(**copy.deepcopy(values))
