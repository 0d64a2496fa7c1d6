"""Atomic file writes: everything the workbench writes goes to a temporary file beside its target,
is flushed to disk and renamed over the target, so a crash leaves the old file or the new one."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call write(tmp) on a temporary file next to path (same suffix, so writers that pick a format from
    the name still work), fsync it, give it the usual permissions and rename it over path."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix or ".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the result should look like any written file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


#: the name atomic_write's temporary file takes (mkstemp: ".<stem>.<8 random>.<suffix>"), for sweep_partial_writes
_PARTIAL = re.compile(r"^\..+\.[a-z0-9_]{8}\.[A-Za-z0-9]+$")


def sweep_partial_writes(folder: Path) -> list[Path]:
    """Remove what writes cut short by a kill left behind below `folder`: atomic_write's temporary files, never
    renamed (the files they would have replaced are intact). Only where no process writes any more (a resume)."""
    gone = [p for p in Path(folder).rglob(".*") if p.is_file() and _PARTIAL.match(p.name)]
    for p in gone:
        p.unlink(missing_ok=True)
    return gone


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """A uint8 (H, W, 3) image as PNG, atomically."""
    from PIL import Image

    return atomic_write(path, lambda p: Image.fromarray(image).save(p, format="PNG"))
