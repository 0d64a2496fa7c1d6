"""The reference's exhaustive sweep over Game of Life rules, ranked by open-endedness (asal-more.md §1).

    cfg = SweepConfig(EvalConfig("gol", "pixels", steps=4096, frames=32, bs=16), limit=64)
    run = run_sweep(cfg, RunStore("runs"))          # or run_sweep(None, store, resume="<run-id>")

Every rule r in [start, end) (all 2^18 by default) runs from the same `bs` initial states (the reference splits
one key for all rules); K frames at chunk ends are embedded and scored with L_OE (asal.md §3), averaged over the
initial states. Lower is more open-ended. Like the reference, a second score needs no model: L_OE of the sampled
grids themselves, with 1 − mean |s_t − s_t′| as the similarity (the ranking's open_endedness_grid).

The run keeps, per rule, both scores and the final-frame embedding of the middle initial state (the reference's
z_final), in batches of `batch` rules: one batch an iteration, checkpointed, so a killed sweep resumes where it
stopped and ends as an uninterrupted one would. At the end: ranking.parquet (rules, most open-ended first),
z_final.npy (rule order), best.npy / best.png / best.mp4 of the top rule.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from workbench.asal import scores
from workbench.asal.driver import evaluate, iteration_seeds
from workbench.asal.evaluate import EvalConfig, check_chunk_memory, components, rollout_bytes
from workbench.asal.legacy import predated, upgrade_eval
from workbench.asal.weights import record_weights, resumed_weights
from workbench.checks import available_memory, check_counts, check_fits, check_seed, is_whole, nothing_fits
from workbench.runs import (
    Run,
    RunError,
    RunStore,
    check_memory_to_resume,
    check_resume,
    checkpointed_loop,
    flat_config,
    record_resume,
    releases_claims,
    setting_up,
)
from workbench.simulations.gol import N_RULES, rule_digits

if TYPE_CHECKING:
    import distributed

KIND = "sweep"
#: SweepConfig fields and the CLI flags that set them, for resume errors.
FLAGS = {"eval.substrate": "--substrate", "eval.fm": "--fm", "eval.weights": "--weights", "eval.steps": "--steps",
         "eval.frames": "--frames", "eval.bs": "--bs", "eval.size": "--size", "eval.chunk": "--chunk",
         "start": "--start", "end": "--end", "limit": "--limit", "batch": "--batch", "seed": "--seed"}


@dataclass
class SweepConfig:
    """One Game of Life rule sweep (`workbench asal sweep --substrate gol`): which rules, in batches of how many,
    scored how (`eval`, an EvalConfig or its dict, of substrate "gol" with frames ≥ 2; the config keeps its own
    copy). ValueError, naming the CLI flag, for settings that cannot run.

    Attributes:
        eval: how each rule is scored (EvalConfig; the flags --substrate, --fm, --weights, --steps, --frames, --bs,
            --size, --chunk, --device). The CLI's defaults: efficientnet-lite0, 4096 steps (the reference sweep's;
            EvalConfig's own for gol is 1024), 32 frames, 16 initial states.
        start, end: the rules [start, end), 0 ≤ start < end ≤ 2^18 (`--start`, `--end`; default: every rule).
        limit: only the first `limit` rules of [start, end) (`--limit`; small tests, partial sweeps); None: all.
        batch: rules per iteration and checkpoint (`--batch`, default 256).
        seed: the initial states' seeds, the same bs seeds for every rule (`--seed`, default 0).
    """

    eval: EvalConfig
    start: int = 0
    end: int = N_RULES
    limit: int | None = None   # only the first `limit` rules of [start, end) (small tests, partial sweeps)
    batch: int = 256           # rules per iteration (and checkpoint)
    seed: int = 0

    def __post_init__(self):
        check_seed(self.seed)
        self.eval = EvalConfig.own_copy(self.eval)  # run_sweep's device is not the caller's
        if self.eval.substrate != "gol":
            raise ValueError(f"the rule sweep is for --substrate gol (θ is one integer rule); for "
                             f"{self.eval.substrate} use workbench asal target / openended / illuminate")
        # whole numbers, not int(value) >= 1: start=1.5 swept rules 1, 2, …; batch=2.5 or limit="3" failed with a
        # TypeError once the run folder was made (a failed run left behind)
        if not (is_whole(self.start) and is_whole(self.end) and 0 <= self.start < self.end <= N_RULES):
            raise ValueError(f"--start and --end must be whole numbers with 0 <= start < end <= 2^18 = {N_RULES}, "
                             f"got {self.start!r} and {self.end!r}")
        self.start, self.end = int(self.start), int(self.end)
        check_counts(self, ("batch",) if self.limit is None else ("batch", "limit"))
        if self.eval.frames < 2:
            raise ValueError("--frames must be at least 2: open-endedness compares frames with earlier ones")
        if self.eval.frames > self.eval.steps:
            raise ValueError(f"--frames {self.eval.frames} is more than --steps {self.eval.steps}")

    def rules(self) -> np.ndarray:
        """The rule numbers the sweep scores, start … end − 1 (the first `limit` of them where set), int64."""
        end = self.end if self.limit is None else min(self.end, self.start + self.limit)
        return np.arange(self.start, end, dtype=np.int64)

    @property
    def iters(self) -> int:
        """The run's iterations: one a batch of `batch` rules."""
        return math.ceil(len(self.rules()) / self.batch)

    def to_dict(self) -> dict:
        """The config as a plain dict (asdict), as run.json stores it."""
        return asdict(self)


def check_sweep_memory(cfg: SweepConfig, free: int | None = None) -> None:
    """Refuse a sweep whose arrays cannot fit in the memory available (free, default: measured now), naming the
    flag and the largest value that fits: a batch's embeddings (rules × bs × K × D, float32, and the float64
    copies and K × K similarities of the open-endedness loss), a chunk's frames, and the final embeddings of
    every rule that the run joins at its end. Nothing is checked where the OS does not say."""
    from workbench.fm import embedding_dim
    from workbench.simulations import make_substrate

    free = available_memory() if free is None else free
    if free is None:
        return
    ev, n_rules = cfg.eval, len(cfg.rules())
    dim, k = embedding_dim(ev.fm), ev.frames
    cells = int(make_substrate("gol", **ev.overrides).grid) ** 2
    # an initial state of a rule: float32 embeddings, the loss' float64 copies, K × K similarities; a rule: its bs
    # of those, and the pixel score's K grids with one row of frame differences (grid_open_endedness, float32,
    # one initial state at a time)
    per_rollout = rollout_bytes(k, dim, 16.0)
    per_rule = ev.bs * per_rollout + 12.0 * k * cells
    batch = min(cfg.batch, n_rules)
    need, room = batch * per_rule, 0.8 * free
    what = f"scoring {batch} rules × {ev.bs} initial states × {k} frames (embeddings of {dim})"
    if room / per_rule >= 1:
        check_fits(need, "--batch", cfg.batch, what, int(room / per_rule), free)
    elif (room - 12.0 * k * cells) / per_rollout >= 1:  # not even one rule's initial states
        check_fits(need, "--bs", ev.bs, what, int((room - 12.0 * k * cells) / per_rollout), free)
    elif (frames := int(room / (20.0 * dim + 16.0 * k + 12.0 * cells))) >= 2:  # open-endedness compares frames
        check_fits(need, "--frames", k, what, frames, free)
    else:
        raise nothing_fits(need, free, what, "--batch 1 --bs 1 --frames 2")
    # at the end (the batches gone): z_final, the batches' files (float32) read in and joined into one
    check_fits(8.0 * n_rules * dim, "--limit", n_rules, f"the final embeddings of {n_rules} rules",
               int(room / (8.0 * dim)), free)
    check_chunk_memory(ev, batch, free)


def score_batch(cfg: SweepConfig, rules: np.ndarray, client=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per rule: L_OE (averaged over the initial states), the reference's pixel open-endedness of the grids, and
    the final-frame embedding of the middle initial state."""
    seeds = sweep_seeds(cfg)
    z, _ = evaluate(cfg.eval, rules[:, None].astype(np.float64), seeds, client)  # (B, bs, K, D)
    return (scores.open_endedness(z).mean(axis=1), grid_open_endedness(cfg, rules),
            z[:, cfg.eval.bs // 2, -1].astype(np.float32))


def sweep_seeds(cfg: SweepConfig) -> list[int]:
    """The initial states' seeds: the same for every rule (the reference splits one key for all)."""
    return iteration_seeds(cfg.seed, 0, cfg.eval.bs)


def grid_open_endedness(cfg: SweepConfig, rules: np.ndarray) -> np.ndarray:
    """The reference sweep's second, model-free score: L_OE with the similarity of two sampled grids taken as
    1 − mean |s_t − s_t′| (the fraction of cells that agree), averaged over the initial states. (The grids are
    simulated again here; a Game of Life step costs far less than rendering and embedding a frame.)"""
    from workbench.simulations.rollout import sample_indices

    sub, _ = components(cfg.eval)
    params = sub.to_device(sub.decode(rules[:, None]))
    indices = sample_indices(cfg.eval.steps, (cfg.eval.frames, True))
    out = np.zeros(len(rules))
    for seed in sweep_seeds(cfg):
        state, at, grids = sub.init(params, seed=seed), 0, []
        for index in indices:
            if index > at:
                state, at = sub.step(state, params, index - at), index
            grids.append(sub.state_to_arrays(state)["state"].reshape(len(rules), -1).astype(np.float32))
        g = np.stack(grids, axis=1)  # (B, K, cells)
        # the similarities below the diagonal, one row of frames at a time: the whole (B, K, K, cells) difference
        # was 32 MiB a rule at K = 32 on the 64² grid (8 GiB for a default batch); the same numbers, element by
        # element, and the zeros the reference's mask leaves elsewhere
        K = g.shape[1]
        sim = np.zeros((len(rules), K, K), np.float32)
        for t in range(1, K):
            sim[:, t, :t] = 1.0 - np.abs(g[:, t:t + 1] - g[:, :t]).mean(axis=-1)
        out += sim.max(axis=-1).mean(axis=-1)
    return out / len(sweep_seeds(cfg))


#: Settings newer than some sweeps: name → (default, what sweeps made before it did), for resume checks.
PREDATES = predated(EvalConfig)


def read_sweep_config(stored: dict) -> SweepConfig:
    """A sweep's config read back from run.json, settings newer than the run as it did them (asal.legacy)."""
    return SweepConfig(**{**stored, "eval": upgrade_eval(stored["eval"])})


@releases_claims
def run_sweep(cfg: SweepConfig | None, store: RunStore | str | Path, resume: str | None = None,
              client: distributed.Client | None = None,
              on_iteration: Callable[[int, int, dict], None] | None = None,
              should_stop: Callable[[], bool] | None = None, device: str | None = None,
              command: str | None = None, on_start: Callable[[Run], None] | None = None,
              weights: str | Path | None = None) -> Run:
    """Run (or resume) a rule sweep to the end; returns the finished run (see the module docstring).

    Args:
        cfg: the sweep (SweepConfig). None with `resume`; given with it, it must equal the run's config (its
            eval.device aside), else one error naming the differing flags.
        store: the RunStore, or its folder, the run is written to.
        resume: a sweep run's id (or a unique prefix of one) to continue from its last checkpoint (a finished
            run is returned as it is).
        client: a Dask client to roll out and embed each batch's rules on (the same results as without).
        on_iteration: on_iteration(done, total, row) after each batch's checkpoint; row: iteration, seconds,
            rules (in the batch), mean_loss (the batch's mean L_OE), best_loss and best_rule (the lowest L_OE so
            far and its rule).
        should_stop: asked before each batch; True leaves the run 'stopped', resumable.
        device: where simulations and the FM run (replaces cfg.eval.device, also on resume; None: as configured).
        command: the command line, recorded in run.json (the CLI passes its own).
        on_start: on_start(run) once the run is set up (new or resumed), before the first batch.
        weights: with resume, where the run's FM weights are now, if they moved (the CLI's --weights), checked by
            their content and recorded (workbench.asal.weights).
    Returns:
        The Run: 'done', with ranking.parquet, z_final.npy and best.npy / best.png / best.mp4, or 'stopped'
        where should_stop() ended it.
    """
    store = RunStore.of(store)
    moved = None
    if resume is not None:
        run = store.open(resume)
        given = {} if cfg is None else flat_config(cfg.to_dict())
        check_resume(run, KIND, {k: v for k, v in given.items() if k != "eval.device"}, names=FLAGS,
                     predates=PREDATES)
        run, cfg, state = store.reopen(run.id, read_sweep_config, kinds=(KIND,))
        # the FM's weights moved: where they are now (checked), or refused
        moved = resumed_weights(run, weights, going_on=run.info.get("status") != "done")
        if run.info.get("status") == "done":
            if moved is not None:  # where its pages and figures now find them
                record_weights(run, moved)
            return run
        check_memory_to_resume(run, cfg, check_sweep_memory)
        if moved is not None:
            cfg.eval.weights = moved
        record_resume(run, command, state)
    elif cfg is None:
        raise ValueError("give a SweepConfig or resume=RUN_ID")
    else:
        check_sweep_memory(cfg)
        cfg = dataclasses.replace(cfg)  # the run's own: the caller's config stays as given (its eval: above)
        state = None
    if device is not None:
        cfg.eval.device = device
    components(cfg.eval)  # fails fast on an unknown FM or missing weights
    if resume is None:
        run = store.create(KIND, "gol", cfg.eval.fm, cfg.to_dict(), cfg.seed, command=command)
    with setting_up(run, new=resume is None):
        record_weights(run, moved)  # by content, which a resume with the weights moved checks them by
        rules = cfg.rules()
        if state is None:
            state = {"iteration": 0, "metrics": [], "scores": np.full(len(rules), np.nan),
                     "grid_scores": np.full(len(rules), np.nan)}
        if on_start is not None:  # set up: the loop starts (a progress bar, a page showing the run)
            on_start(run)

    def step(it: int) -> dict:
        lo, hi = it * cfg.batch, min((it + 1) * cfg.batch, len(rules))
        oe, grid_oe, z_final = score_batch(cfg, rules[lo:hi], client)
        state["scores"][lo:hi], state["grid_scores"][lo:hi] = oe, grid_oe
        run.write_array(f"z_final-{it:05d}.npy", z_final)  # one file a batch: the checkpoint stays small
        done = state["scores"][:hi]
        best = int(np.argmin(done))
        return {"rules": hi - lo, "mean_loss": float(oe.mean()), "best_loss": float(done[best]),
                "best_rule": int(rules[best])}

    return checkpointed_loop(run, state, cfg.iters, step, lambda: finish(run, cfg, state),
                             should_stop=should_stop, on_iteration=on_iteration)


def finish(run: Run, cfg: SweepConfig, state: dict) -> None:
    from workbench.export import export

    rules, oe = cfg.rules(), state["scores"]
    order = np.argsort(oe, kind="stable")
    run.write_table("ranking", {"rule": rules[order].tolist(), "open_endedness": oe[order].tolist(),
                                "open_endedness_grid": state["grid_scores"][order].tolist(),
                                "birth": [rule_digits(r, 0) for r in rules[order]],
                                "survival": [rule_digits(r, 9) for r in rules[order]]})
    parts = sorted(run.path.glob("z_final-*.npy"))
    # z_final.npy is written whole (atomically) before any part goes: a finish killed after it (while deleting
    # the parts, or rendering the best rule) has it, and its resume does not need the parts again
    if not (run.path / "z_final.npy").is_file():
        if len(parts) != cfg.iters:
            raise RunError(f"run {run.id}: {len(parts)} of {cfg.iters} embedding batches on disk; the run folder "
                           f"is incomplete")
        run.write_array("z_final.npy", np.concatenate([np.load(p) for p in parts]))
    for p in parts:
        p.unlink()
    best = rules[order[0]]
    sub, _ = components(cfg.eval)
    # from the first of the initial states every rule was scored from, as searches render theirs (run.json's
    # best_seed, which figures and the Lab read)
    seed = sweep_seeds(cfg)[0]
    export(sub, sub.decode([best]), cfg.eval.steps, run.path / "best.mp4", seed=seed, size=cfg.eval.size,
           every=max(1, cfg.eval.steps // 120), final_png=run.path / "best.png")
    run.write_array("best.npy", np.asarray([best], np.float64))
    run.update(status="done", best_seed=int(seed))


