"""A search's foundation-model weights (--weights: a state dict file, or a model folder for dino) kept track of by
content, so that a run whose weights moved (its store taken to another machine, the file moved) resumes with
`--resume ID --weights PATH`: the path alone, recorded at the start, left such a resume with "weights file … does
not exist; pass --weights FILE", and --weights was then refused as a setting that contradicts the run.

Runs record `weights_sha256` (weights_fingerprint) in run.json; a resume checks the weights it is given against it
(a run from before it was recorded: against the weights still at its recorded path) and, once they have loaded,
records their new place in the run's config, where its later resumes and its pages read it. A finished run given
--weights checks and records them too (its pages and figures read them), and goes no further.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.checks import user_path
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


def resumed_weights(run: Run, weights: str | Path | None, going_on: bool = True) -> str | None:
    """On a resume, once the run is reopened: where its FM's weights are. `weights` (the resume's --weights): the
    run's weights at another place, returned as an absolute path once they are found to be the run's by content:
    their fingerprint against run.json's weights_sha256, or, for a run from before it was recorded, against the
    weights still at the recorded path (gone too: taken as given, nothing to check them by). Without it, the
    recorded path must still be there where the run goes on (`going_on`: a finished run not extended reads no
    weights): one RunError naming --weights where it is not. None: the recorded weights (or an FM that reads none).
    Nothing is recorded here: record_weights, once the FM has loaded."""
    ev = run.info["config"]["eval"]
    recorded = ev.get("weights")
    how = run.resume_cli or "the resume"
    if weights is None:
        if not (going_on and uses_weights(ev)) or user_path(recorded).exists():
            return None
        extended = " --iters N" if run.info.get("status") == "done" else ""  # (a finished run extended: its total)
        raise RunError(f"run {run.id}'s FM weights {recorded} are not there (moved or deleted?): give where they are "
                       f"now with `{how}{extended} --weights PATH` (the same weights, checked by their content), or "
                       "put them back there")
    if not uses_weights(ev):
        why = "reads no --weights file" if ev.get("fm") in EMBEDDED_FMS else "was started without --weights"
        raise RunError(f"run {run.id}'s FM ({ev.get('fm')}) {why}: leave --weights out")
    path = os.path.abspath(user_path(weights))
    if not Path(path).exists():
        raise RunError(f"--weights {weights}: no such file or folder; give where run {run.id}'s FM weights "
                       f"(recorded at {recorded}) are now, or leave --weights out")
    sha = run.info.get("weights_sha256")
    if sha is None and user_path(recorded).exists():
        sha = weights_fingerprint(recorded)
    if sha is not None and weights_fingerprint(path) != sha:
        raise RunError(f"--weights {weights} are not run {run.id}'s FM weights (their content differs from the "
                       f"weights the run was started with, at {recorded}); give where those are now, or leave "
                       "--weights out")
    return path


def record_weights(run: Run, moved: str | None = None) -> None:
    """Once a run's FM has loaded its weights (a new run, or a resume): their fingerprint where run.json has none
    yet (a run from before it was recorded gets it on its first resume), and `moved` (resumed_weights' path) as
    the run's weights in its config, where later resumes and its pages read them."""
    ev = run.info["config"]["eval"]
    if not uses_weights(ev):
        return
    fields = {}
    if moved is not None and moved != ev["weights"]:
        fields["config"] = {**run.info["config"], "eval": {**ev, "weights": moved}}
    # only weights checked to be the run's: its own, or ones told by the weights still at its path (resumed_weights);
    # ones given with nothing to check them by are recorded by path alone (a fingerprint would lock the run onto them)
    checked = moved is None or user_path(ev["weights"]).exists()
    if run.info.get("weights_sha256") is None and checked:
        fields["weights_sha256"] = weights_fingerprint(moved or ev["weights"])
    if fields:
        run.update(**fields)
