"""Atomic file writes: everything the workbench writes goes to a temporary file beside its target,
is flushed to disk and renamed over the target, so a crash leaves the old file or the new one."""

from __future__ import annotations

import os
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


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """A uint8 (H, W, 3) image as PNG, atomically."""
    from PIL import Image

    return atomic_write(path, lambda p: Image.fromarray(image).save(p, format="PNG"))
