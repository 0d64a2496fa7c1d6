"""Atomic file writes: everything the workbench writes goes to a temporary file beside its target,
is flushed to disk and renamed over the target, so a crash leaves the old file or the new one."""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


def _umask() -> int:
    umask = os.umask(0)  # the only way to read it is to set it: put it straight back
    os.umask(umask)
    return umask


def _host_tag() -> str:
    """This machine as a folder name's part (a shared file system's other machines have their own pids): its name
    in letters, digits and dashes, and a hash of the name as it is, so that "node_1" and "node.1" stay apart."""
    import socket
    import zlib

    name = socket.gethostname()
    return f"{re.sub(r'[^A-Za-z0-9-]', '-', name) or 'host'}-{zlib.crc32(name.encode()):08x}"


def _owner_tag() -> str:
    """This process as a folder name's part: its host's tag, a dot (which the tag never holds: no other host's
    name reads as this one's followed by a pid) and its pid."""
    return f"{_host_tag()}.{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_orphans(target: str | Path) -> list[Path]:
    """Remove the staging folders beside `target` that a killed process of this host left (a zoo build killed with
    SIGKILL left its hidden staging folder, tens of MB, for good), and the old folder a replace_dir killed between
    its two renames set aside: put back where its replacement never arrived (it is the only copy), else removed.
    Those of a live process, of another host, or named otherwise are left alone. Returns what was removed."""
    target = Path(target)
    host = re.escape(_host_tag())
    name = re.escape(target.name)
    staging = re.compile(rf"\.{name}\.staging-{host}\.(\d+)-[a-z0-9_]{{8}}")
    aside = re.compile(rf"\.{name}\.replaced-{host}\.(\d+)")
    removed = []
    for path in sorted(target.parent.glob(f".{glob.escape(target.name)}.*")):
        found = staging.fullmatch(path.name) or aside.fullmatch(path.name)
        if not found or not path.is_dir() or path.is_symlink() or _alive(int(found.group(1))):
            continue
        if found.re is aside and not target.exists():
            with contextlib.suppress(OSError):  # put in place meanwhile after all: the old one stays aside
                os.replace(path, target)
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def staging_dir(target: str | Path) -> Path:
    """An empty temporary folder beside `target` (the same file system, so the rename is atomic) to build a folder
    in (a model, a zoo) before replace_dir moves it into place. Named after this host and process, so that the next
    build removes what a killed one left (remove_orphans)."""
    target = Path(target)
    remove_orphans(target)
    return Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.staging-{_owner_tag()}-"))


def replace_dir(tmp: str | Path, target: str | Path, *, overwrite: bool = True) -> Path:
    """Move the finished folder `tmp` to `target`: an old `target` moves aside first and is deleted after, so a
    crash leaves the old folder or the new one (overwrite=False: FileExistsError where `target` exists, say
    written by a concurrent process since the caller checked). Everything in it first gets the permissions a new
    file or folder gets under the umask: mkdtemp makes 0700 and safetensors 0600 files, which would leave a model
    folder unreadable to the other users of a shared machine."""
    tmp, target = Path(tmp), Path(target)
    umask = _umask()
    for path in [tmp, *tmp.rglob("*")]:
        if not path.is_symlink():
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)
    old = None
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; choose a new folder")
    if target.exists():
        old = target.with_name(f".{target.name}.replaced-{_owner_tag()}")
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:  # a symlink moved aside goes as a link (rmtree refused it, silently, and it stayed)
        if old.is_symlink():
            old.unlink()
        else:
            shutil.rmtree(old, ignore_errors=True)
    return target


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call write(tmp) on a temporary file next to path (same suffix, so writers that pick a format from
    the name still work), fsync it, give it the usual permissions and rename it over path."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix or ".tmp")
        os.close(fd)
        write(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the result should look like any written file
        os.replace(tmp, path)
    except OSError as error:
        # a full disk names no file, a read-only folder the temporary one (mkstemp's last try, when it could not
        # make one: `tmp` is still None), gone after this: name what was written
        # (mkstemp names its files by absolute paths: a relative target, as the default --runs
        # runs gives, is compared by its folder's absolute path, else the error named the temporary file)
        named = Path(str(error.filename)) if error.filename is not None else None
        if named is None or str(named) == tmp or (named.parent == Path(os.path.abspath(path.parent))
                                                 and named.name.startswith(f".{path.stem}.")):
            error.filename = str(path)
        raise
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return path


#: the name atomic_write's temporary file takes (mkstemp: ".<stem>.<8 random>.<suffix>"), for sweep_partial_writes
_PARTIAL = re.compile(r"^\.(?P<stem>.+)\.[a-z0-9_]{8}\.(?P<suffix>[A-Za-z0-9]+)$")  # stem.suffix: the file it would be
#: staging_dir's folders (mkdtemp: ".<name>.staging-<host tag>.<pid>-<8 random>"; before: no host and pid) and the
#: old folder replace_dir moves aside (".<name>.replaced-<host tag>.<pid>"; before: the pid alone): names a folder
#: of the user's does not take by chance
_STAGING = re.compile(r"^\..+\.staging-(?:[A-Za-z0-9-]+\.\d+-)?[a-z0-9_]{8}$")
_MOVED_ASIDE = re.compile(r"^\.(?P<name>.+)\.replaced-(?:[A-Za-z0-9-]+\.)?\d+$")


def sweep_partial_writes(folder: Path, spared: tuple[str, ...] = ()) -> list[Path]:
    """Remove what writes cut short by a kill left behind below `folder`: atomic_write's temporary files, never
    renamed (the files they would have replaced are intact), and staging_dir's folders, never moved into place (an
    adapter, a model). A folder replace_dir had moved aside goes back where its replacement never arrived, else it
    goes. Returns what went. Only where no process writes any more (a resume). spared: the files and folders of
    `folder` (names in it) that other processes may be writing meanwhile (a run's note, a page's export into its
    figures/): their temporaries may be live, and are left."""
    folder = Path(folder)
    gone = []
    for p in sorted(folder.rglob(".*"), key=lambda p: len(p.parts), reverse=True):  # the deepest first
        top = p.relative_to(folder).parts[0]
        if top in spared or (p.parent == folder and (m := _PARTIAL.match(p.name))
                             and f"{m['stem']}.{m['suffix']}" in spared):
            continue
        aside = _MOVED_ASIDE.match(p.name) if p.is_dir() else None
        if aside and not (p.parent / aside["name"]).exists():  # killed between replace_dir's two renames
            with contextlib.suppress(OSError):  # put in place meanwhile after all: the old one stays aside
                os.replace(p, p.parent / aside["name"])
        elif aside or (p.is_dir() and _STAGING.match(p.name)):
            shutil.rmtree(p, ignore_errors=True)
            gone.append(p)
        elif p.is_file() and _PARTIAL.match(p.name):
            p.unlink(missing_ok=True)
            gone.append(p)
    return gone


def fresh_paths(stem: str | Path, suffixes: tuple[str, ...]) -> list[Path]:
    """The files stem + suffix, one per suffix (a snapshot's PNG and θ), under `stem` or stem-2, stem-3, …: the
    first with none of them there yet, so that a second export of the same name keeps the first."""
    stem = Path(stem)
    candidate, n = stem, 1
    while any(candidate.with_name(candidate.name + s).exists() for s in suffixes):
        n += 1
        candidate = stem.with_name(f"{stem.name}-{n}")
    return [candidate.with_name(candidate.name + s) for s in suffixes]


def write_png(path: str | Path, image: np.ndarray, dpi: float | None = None) -> Path:
    """A uint8 (H, W, 3) image as PNG, atomically; `dpi` recorded in it (a picture for a paper: LaTeX places a PNG
    that says none at 72 dpi, an 896 px atlas 12.4 in wide)."""
    from PIL import Image

    options = {} if dpi is None else {"dpi": (dpi, dpi)}
    return atomic_write(path, lambda p: Image.fromarray(image).save(p, format="PNG", **options))


def save_safetensors(tensors: dict, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write torch tensors as safetensors, atomically, the same bytes for the same tensors and metadata: the
    safetensors library writes its header's keys in hash order, another in each process (a run's file hashes,
    which `experts adapt` records, changed from one identical run to the next), so the header is written again
    with its keys sorted (the same length: JSON of the same content)."""
    import json

    from safetensors.torch import save_file

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp), metadata=metadata)
        with open(tmp, "r+b") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n))
            text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
            if len(text) <= n:  # safetensors pads its header with spaces to its alignment
                f.seek(8)
                f.write(text + b" " * (n - len(text)))

    return atomic_write(path, write)
