"""What ASAL runs made before a setting existed did, so that they resume (and compare) as they started.

A run stores its config in run.json. When a later version adds a setting, the stored config of an older run
lacks it, and the run must keep the behaviour it was started with, not the new default: resuming it bit-identically
depends on that, and so does telling it apart from a new run in `runs compare`. Each such setting is listed here
with the value that describes the old behaviour. Plain dict work, no torch: the CLI's run tables import it.
"""

from __future__ import annotations

from typing import Any

#: The kinds of run a SearchConfig describes (workbench.asal.driver.KINDS); the sweep's config is another.
SEARCH_KINDS = ("target", "openended", "illuminate")

#: eval.<setting> → what runs made before the setting existed did.
#: sampling (2026-12-01): K = 1 took the final state T (the reference's target search takes state T − 1).
#: pixels (2026-12-01): frames were rounded to 8 bits before the FM saw them (the reference embeds the floats).
LEGACY_EVAL: dict[str, Any] = {"sampling": "final", "pixels": "uint8"}

#: <setting> of a search's config → what runs made before the setting existed did.
#: child_seeds (2026-12-01): an illumination's children shared one initial-state seed an iteration.
#: init (2026-12-01): every search started at θ = 0.
#: descriptor_fit (2026-12-03): MAP-Elites fitted its descriptor and grid on the whole seed population.
LEGACY_SEARCH: dict[str, Any] = {"child_seeds": "shared", "init": "zero", "descriptor_fit": "all"}

#: Runs made before eval.sampling existed built --fm clip as a GELU ViT-B-32 (workbench.fm.LEGACY_CLIP).
_GELU_CLIP_BEFORE = "sampling"


def predated(eval_config: type, search_config: type | None = None) -> dict[str, tuple[Any, Any]]:
    """For resume checks (workbench.runs.resume_conflicts): each setting newer than some runs, flat ("eval.pixels"),
    → (its default in the config dataclasses given, what runs made before it did)."""
    from dataclasses import MISSING, fields

    def default(f):
        return f.default_factory() if f.default is MISSING and f.default_factory is not MISSING else f.default

    defaults = {f"eval.{f.name}": default(f) for f in fields(eval_config)}
    if search_config is not None:
        defaults.update({f.name: default(f) for f in fields(search_config)})
    legacy = {f"eval.{k}": v for k, v in LEGACY_EVAL.items()}
    if search_config is not None:
        legacy.update(LEGACY_SEARCH)
    return {name: (defaults[name], value) for name, value in legacy.items()}


def upgrade_eval(stored_eval: dict) -> dict:
    """A stored eval config with every setting newer than its run filled in as the run did it."""
    ev = dict(stored_eval)
    if _GELU_CLIP_BEFORE not in ev and ev.get("fm") == "clip":
        ev["fm"] = "clip-gelu"  # workbench.fm.LEGACY_CLIP (fm imports torch; this module must not)
    for name, value in LEGACY_EVAL.items():
        ev.setdefault(name, value)
    return ev


def upgrade_config(stored: dict) -> dict:
    """A stored search config (target, openended, illuminate) with every setting newer than its run filled in as
    the run did it."""
    return {**LEGACY_SEARCH, **stored, "eval": upgrade_eval(stored["eval"])}
