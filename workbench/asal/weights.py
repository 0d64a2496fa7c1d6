"""A search's foundation-model weights (--weights: a state dict file, or a model folder for dino) kept track of by
content, so that a run whose weights moved (its store taken to another machine, the file moved) resumes with
`--resume ID --weights PATH`: the path alone, recorded at the start, left such a resume with "weights file … does
not exist; pass --weights FILE", and --weights was then refused as a setting that contradicts the run.

New runs record `weights_sha256` (weights_fingerprint) in run.json; a resume checks the weights it is given against
it (runs from before it was recorded take them as given) and records their new place in the run's config, where
its later resumes and its pages read it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.fm import EMBEDDED_FMS
from workbench.runs import RunError, sha256_file

if TYPE_CHECKING:
    from workbench.runs import Run


def weights_fingerprint(path: str | Path) -> str:
    """SHA-256 of a weights file, or of a folder's files (their names relative to it and their own SHA-256s, in
    sorted order): the same weights however they are reached."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256(b"folder\n")
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path).as_posix()}\0{sha256_file(file)}\n".encode())
    return digest.hexdigest()


def uses_weights(eval_config: dict) -> bool:
    """Whether a run's FM reads the weights its config names (the embedded models bring their own)."""
    return bool(eval_config.get("weights")) and eval_config.get("fm") not in EMBEDDED_FMS


def record_weights(run: Run) -> None:
    """A new run: the fingerprint of the weights it was started with, which its resumes check moved weights by."""
    ev = run.info["config"]["eval"]
    if uses_weights(ev):
        run.update(weights_sha256=weights_fingerprint(ev["weights"]))


def resumed_weights(run: Run, weights: str | Path | None, command: str) -> str | None:
    """On a resume of `workbench COMMAND`, once the run is reopened (a finished run that goes no further has
    returned before): where its FM's weights are. `weights` (the resume's --weights): the run's weights at another
    place, checked by content (weights_sha256) and recorded in the run's config; returned as an absolute path.
    Without it, the path the run recorded must still be there: one RunError naming --weights where it is not.
    None: the recorded weights, where they were (or an FM that reads none)."""
    ev = run.info["config"]["eval"]
    recorded = ev.get("weights")
    if weights is None:
        if not uses_weights(ev) or Path(recorded).expanduser().exists():
            return None
        raise RunError(f"run {run.id}'s FM weights {recorded} are not there (moved or deleted?): give where they are "
                       f"now with `workbench {command} --resume {run.id} --weights PATH` (the same weights, checked "
                       "by their content), or put them back there")
    if not uses_weights(ev):
        raise RunError(f"run {run.id}'s FM ({ev.get('fm')}) reads no --weights file: leave --weights out")
    path = os.path.abspath(Path(weights).expanduser())
    if not Path(path).exists():
        raise RunError(f"--weights {weights}: no such file or folder; give where run {run.id}'s FM weights "
                       f"(recorded at {recorded}) are now, or leave --weights out")
    sha = run.info.get("weights_sha256")
    if sha is not None and weights_fingerprint(path) != sha:
        raise RunError(f"--weights {weights} are not run {run.id}'s FM weights (their content differs from the "
                       f"weights the run was started with, at {recorded}); give where those are now, or leave "
                       "--weights out")
    if path != recorded:
        run.update(config={**run.info["config"], "eval": {**ev, "weights": path}})
    return path
