"""A trained NAMM policy on disk: θ (4172 numbers) + the frozen normalisation statistics + what it was trained
for, in one safetensors file (no pickle).

    save_policy("policy.safetensors", theta, (mean, var), {"model": "smollm2", "n_up": 64, "variant": "equal-n"})
    saved = load_policy("policy.safetensors")        # also .npz files with arrays theta, mean, var
    policy = saved.build(model.config)                # a NAMMPolicy with frozen statistics, ready to evict
    saved.n_up, saved.variant, saved.meta             # the settings it must run with

A training run's policy (what the explorer and `namm eval --run` open):

    saved, run = load_run_policy("runs", "<run id or unique prefix>")   # a kind "namm" run, else ValueError
    run.info["config"], run.read_table("metrics")                       # its settings, per-generation metrics
    run_policy_file("runs", "<id>")                                      # the path alone

During training the file holds the CMA mean of the last finished generation (meta "generation"), at the end the
final policy; meta also names the model, n_up, variant, tasks, cma, pop, seed, length and the run id.

Tensors: `theta` float64 (4172,), `mean` and `var` float64 (17,); the metadata (JSON under the key "namm")
names the model, n_up, the variant ("equal-n": every head of a layer keeps the same N; "strict": fill tokens are
masked), the cache cap max_kept when the policy was trained with one, and the run that trained it.
Loading checks θ's length and the statistics before any model loads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from workbench.checks import shell_path
from workbench.namm.features import N_FREQ
from workbench.namm.scorer import N_PARAMS

if TYPE_CHECKING:
    from numpy.typing import ArrayLike
    from transformers import PretrainedConfig

    from workbench.namm.policy import NAMMPolicy
    from workbench.runs import Run

VARIANTS = ("equal-n", "strict")
POLICY_FILE = "policy.safetensors"


def check_variant(variant: str, where: str | None = None) -> str:
    """A known selection variant; `where`: the policy file that names it (not a flag the user gave)."""
    if variant not in VARIANTS:
        if where is not None:
            raise ValueError(f"{where} names an unknown NAMM variant {variant!r} (this version knows "
                             f"{' and '.join(VARIANTS)}): it is not a policy file this version wrote")
        raise ValueError(f"unknown NAMM variant {variant!r}: use --variant {' or '.join(VARIANTS)}")
    return variant


@dataclass
class SavedPolicy:
    """θ, the frozen statistics and the metadata of a trained policy."""

    theta: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def n_up(self) -> int | None:
        """The eviction interval the policy was trained with (meta's n_up), None where the file records none."""
        return self.meta.get("n_up")

    @property
    def variant(self) -> str:
        """The selection variant (meta's; "equal-n" for files written before variants)."""
        return self.meta.get("variant", "equal-n")

    @property
    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        """The frozen feature statistics, (mean, var)."""
        return self.mean, self.var

    def build(self, config: PretrainedConfig) -> NAMMPolicy:
        """A NAMMPolicy for a model of this config (frozen statistics; strict per the variant)."""
        from workbench.namm.cache import model_shape
        from workbench.namm.policy import NAMMPolicy

        return NAMMPolicy(self.theta, *model_shape(config), stats=self.stats, strict=self.variant == "strict",
                          max_kept=self.max_kept)

    @property
    def max_kept(self) -> float | None:
        """The capped variant's fraction (NAMMPolicy(max_kept=…)), None for the paper's uncapped NAMM."""
        return self.meta.get("max_kept")


def _check_cap(max_kept, source: str) -> None:
    """The cache cap a policy file records: None (the paper's uncapped NAMM) or a fraction in (0, 1] (a cap of 5
    was read, and refused only once the model had loaded, naming a flag `namm eval` has not got)."""
    from workbench.namm.policy import check_max_kept

    try:
        check_max_kept(max_kept)
    except (TypeError, ValueError):
        raise ValueError(f"{source} records a cache cap max_kept={max_kept!r}, not a fraction of the tokens in "
                         "(0, 1]: it is not a policy file this version wrote") from None


def _check(theta: np.ndarray, mean: np.ndarray, var: np.ndarray, source: str) -> None:
    if theta.ndim != 1 or theta.shape[0] != N_PARAMS:
        raise ValueError(f"{source}: θ has shape {theta.shape}, the BAM policy has {N_PARAMS} parameters: give a "
                         "policy file written by `workbench namm train` (policy.safetensors)")
    if mean.shape != (N_FREQ,) or var.shape != (N_FREQ,):
        raise ValueError(f"{source}: the statistics must be {N_FREQ} numbers each (mean, var), got {mean.shape} and "
                         f"{var.shape}")
    if not (np.isfinite(theta).all() and np.isfinite(mean).all() and np.isfinite(var).all()) or (var < 0).any():
        raise ValueError(f"{source}: θ or the statistics hold NaN / infinite values (or a negative variance)")


def save_policy(path: str | Path, theta: ArrayLike, stats: tuple[ArrayLike, ArrayLike], meta: dict) -> Path:
    """Write θ + (mean, var) + meta atomically (module doc), checked first as load_policy checks a file.

    Args:
        path: the file to write (policy.safetensors); an existing one is replaced atomically.
        theta: θ, the N_PARAMS = 4172 BAM parameters, 1-D (an array, a list or a CPU tensor); stored float64.
        stats: (mean, var), N_FREQ = 17 numbers each, var ≥ 0: the frozen feature statistics (NAMMPolicy.stats);
            stored float64.
        meta: JSON-able settings stored with it under the key "namm" (model, n_up, variant "equal-n" or
            "strict", max_kept None or in (0, 1], the run, …).
    Returns:
        The path written, as a Path.
    Raises:
        ValueError: θ or the statistics of another length, NaN or infinite values, a negative variance, an
            unknown variant or a max_kept outside (0, 1]; nothing is written then.
    """
    from safetensors.numpy import save

    from workbench.atomic import atomic_write

    theta = np.asarray(theta, np.float64)
    mean, var = (np.asarray(s, np.float64) for s in stats)
    _check(theta, mean, var, str(path))
    check_variant(meta.get("variant", "equal-n"))
    _check_cap(meta.get("max_kept"), str(path))
    data = save({"theta": theta, "mean": mean, "var": var}, metadata={"namm": json.dumps(meta, sort_keys=True)})
    path = Path(path)
    atomic_write(path, lambda p: p.write_bytes(data))
    return path


def load_policy(path: str | Path) -> SavedPolicy:
    """A policy file (.safetensors from save_policy, or .npz with theta, mean, var), checked."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no policy file {path}: give --policy runs/<id>/policy.safetensors or --run ID")
    meta: dict = {}
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        else:
            from safetensors import safe_open

            with safe_open(path, framework="numpy") as f:
                arrays = {k: f.get_tensor(k) for k in f.keys()}
                meta = json.loads((f.metadata() or {}).get("namm", "{}"))
    except Exception as error:  # noqa: BLE001 - a damaged or foreign file
        raise ValueError(f"cannot read the policy file {path} ({type(error).__name__}: {error})") from None
    missing = [k for k in ("theta", "mean", "var") if k not in arrays]
    if missing:
        raise ValueError(f"{path} holds no {', '.join(missing)}: a NAMM policy file has theta, mean and var")
    theta, mean, var = (np.asarray(arrays[k], np.float64) for k in ("theta", "mean", "var"))
    _check(theta, mean, var, str(path))
    check_variant(meta.get("variant", "equal-n"), str(path))
    _check_cap(meta.get("max_kept"), str(path))
    return SavedPolicy(theta, mean, var, meta)


def run_policy_file(runs: str | Path, run_id: str) -> Path:
    """policy.safetensors of the namm run `run_id` (an id or unique prefix) in the run store `runs`."""
    return load_run_policy(runs, run_id, load=False)[1].path / POLICY_FILE


def load_run_policy(runs: str | Path, run_id: str, *, load: bool = True) -> tuple[SavedPolicy | None, Run]:
    """(SavedPolicy, Run) of a NAMM training run (kind "namm") in the run store `runs`; one ValueError for a
    missing run, another kind of run, or a run that has not written its policy yet. load=False: (None, Run). The
    policy's model is the one run.json records (load_folder_policy)."""
    from workbench.runs import RunError, RunStore, a_kind_run

    try:
        run = RunStore(runs).open(run_id)
    except RunError as error:
        raise ValueError(str(error)) from None
    if run.info.get("kind") != "namm":
        raise ValueError(f"run {run.id} is {a_kind_run(run.info.get('kind'))}, not a NAMM training: give a namm run "
                         "(`workbench runs list` shows the kinds)")
    path = run.path / POLICY_FILE
    if not path.is_file():
        raise ValueError(f"run {run.id} has no policy yet (no generation finished): resume it with "
                         f"`workbench namm train --resume {run.id} --runs {shell_path(run.path.parent)}`")
    return (load_folder_policy(run.path) if load else None), run


def load_folder_policy(folder: str | Path) -> SavedPolicy:
    """A run folder's policy, its model the one the run's run.json records: where the model is now (a resume's
    --model records a moved one there; a finished run's policy file keeps the place it was trained at), which the
    page and `figure namm` load. A run.json that does not read leaves the policy's own."""
    folder = Path(folder)
    saved = load_policy(folder / POLICY_FILE)
    try:
        recorded = json.loads((folder / "run.json").read_text())["config"]["model"]
    except (OSError, ValueError, KeyError, TypeError):
        recorded = None
    if isinstance(recorded, str) and recorded and saved.meta.get("model") != recorded:
        saved.meta["model"] = recorded
    return saved
