"""The cross-entropy method (CEM) that Transformer² uses to adapt mixing coefficients α from a few shots.

    cem = CEM(init_mean=np.full(K, 1 / K), init_std=0.5, pop=32, seed=0)
    for it in range(iters):
        samples = cem.ask()                                   # (32, D); row 0 = the previous best
        perf, ll = evaluate_each(samples)                     # few-shot accuracy; mean log-lik of correct shots
        best = cem.tell(samples, perf, tie_break=ll)          # apply `best` (not cem.mean) to the model

The rules are the reference's (its optim_modules.CEM with re_eval_best, optim_ema = 0):
- ask: member 0 is the previous best (at first: the initial mean), the others ~ N(mean, std), clamped to
  the bounds [0, 1];
- tell: elites = the int(elite_ratio·n) best members by performance; mean ← elite mean, std ← elite SAMPLE
  std (n − 1), no smoothing; the best member is the one with the highest performance, ties broken by the
  highest `tie_break` (the reference: mean log-likelihood of the correctly answered shots, 0 when none is);
  it is returned and is what the caller applies, not the mean.
Where the reference leaves ties unordered (its elite argpartition) this ranking is deterministic: by
performance, then tie_break, then the lower index (so the re-evaluated previous best wins an exact tie).
The random draws come from one seeded NumPy generator, written out by state_dict() for bit-exact resumes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from workbench.checkpoint import checkpointable, rng_from_state, rng_state

if TYPE_CHECKING:
    from numpy.typing import ArrayLike


@checkpointable("experts.CEM")
class CEM:
    """The cross-entropy method as an ask/tell object, maximising performance (see the module's docstring for
    the reference's rules it follows). The caller owns the loop and applies what `tell` returns."""

    def __init__(self, init_mean: np.ndarray, init_std: float | np.ndarray = 0.5, pop: int = 32,
                 elite_ratio: float = 0.2, bounds: tuple | None = (0.0, 1.0), seed: int = 0):
        """init_mean: (D,) the starting mean (the reference: α = 1/K); init_std: a scalar or (D,) (0.5 = half the [0, 1]
        range, the reference's); pop: members a generation (≥ 3, and ⌊elite_ratio·pop⌋ ≥ 2: pop ≥ 10 at the default
        0.2); elite_ratio: the share of them whose mean and sample std become the next; bounds: (lo, hi), scalars or
        (D,) arrays (None for none); seed: the generator of the draws (a whole number: the same seed, the same search).

        Raises:
            ValueError: any of them out of range, named.
        """
        from workbench.checks import count, is_count

        if not is_count(seed, 0):  # any whole number: NumPy's Generator takes them all (adapt derives them)
            raise ValueError(f"seed must be a whole number ≥ 0, got {seed!r}")
        count(pop, "pop", 3)
        if isinstance(elite_ratio, bool) or not isinstance(elite_ratio, (int, float)) or not 0 < elite_ratio <= 1:
            raise ValueError(f"elite_ratio must be a number in (0, 1], got {elite_ratio!r}")
        mean = np.atleast_1d(np.asarray(init_mean, np.float64)).copy()
        if mean.ndim != 1 or not np.isfinite(mean).all():
            raise ValueError(f"init_mean must be a finite vector, got shape {mean.shape}")
        std = np.broadcast_to(np.asarray(init_std, np.float64), mean.shape).copy() if np.ndim(init_std) == 0 \
            else np.asarray(init_std, np.float64).copy()
        if std.shape != mean.shape or not (np.isfinite(std).all() and (std >= 0).all()):
            raise ValueError(f"init_std must be a non-negative scalar or a vector of length {mean.size}, "
                             f"got {init_std!r}")
        if int(elite_ratio * pop) < 2:
            raise ValueError(f"elite_ratio·pop = {elite_ratio}·{pop} leaves {int(elite_ratio * pop)} elite(s); "
                             "the sample std needs at least 2: raise elite_ratio or pop")
        if bounds is not None and len(bounds) != 2:
            raise ValueError(f"bounds must be a (lo, hi) pair (None for none), got {bounds!r}")
        lo, hi = (-np.inf, np.inf) if bounds is None else bounds
        lo = np.broadcast_to(np.asarray(-np.inf if lo is None else lo, np.float64), mean.shape).copy()
        hi = np.broadcast_to(np.asarray(np.inf if hi is None else hi, np.float64), mean.shape).copy()
        if not (lo < hi).all():
            raise ValueError(f"bounds must have lo < hi, got {bounds!r}")
        self.pop, self.elite_ratio, self.lo, self.hi = int(pop), float(elite_ratio), lo, hi
        self.mean, self.std = mean, std
        self.best = np.clip(mean, lo, hi)  # the first population re-evaluates the starting point
        self.best_perf: float | None = None
        self.best_tie: float | None = None
        self.best_index: int | None = None  # the best member's row in the last told population
        self.generation = 0
        self.rng = np.random.default_rng(seed)

    @property
    def dim(self) -> int:
        """The length of the searched vector (the mean's)."""
        return self.mean.size

    @property
    def n_elites(self) -> int:
        """Candidates kept each generation: ⌊elite_ratio · pop⌋."""
        return int(self.elite_ratio * self.pop)

    def ask(self) -> np.ndarray:
        """(pop, D): row 0 the previous best, rows 1… drawn from N(mean, std) and clamped to the bounds."""
        draws = self.rng.standard_normal((self.pop - 1, self.dim)) * self.std + self.mean
        return np.concatenate([self.best[None], np.clip(draws, self.lo, self.hi)])

    def tell(self, samples: ArrayLike, perf: ArrayLike, tie_break: ArrayLike | None = None) -> np.ndarray:
        """Update from an evaluated population (any (n, D) samples, n·elite_ratio ≥ 2; ask is optional) and
        return its best member (a copy), which the caller should apply. perf: (n,) higher is better (few-shot
        accuracy); tie_break: (n,) breaks ties in perf, higher wins (mean log-likelihood of the correct shots)."""
        samples = np.asarray(samples, np.float64)
        perf = np.asarray(perf, np.float64)
        if samples.ndim != 2 or samples.shape[1] != self.dim:
            raise ValueError(f"samples must have shape (n, {self.dim}), got {samples.shape}")
        n = len(samples)
        tie = np.zeros(n) if tie_break is None else np.asarray(tie_break, np.float64)
        for name, values in (("perf", perf), ("tie_break", tie)):
            if values.shape != (n,):
                raise ValueError(f"{name} must hold one finite value per sample ({n}), got shape {values.shape}")
            if not np.isfinite(values).all():  # the shape is right: said so ("got shape (10,)" misled)
                first = int(np.flatnonzero(~np.isfinite(values))[0])
                raise ValueError(f"{name} must hold one finite value per sample; sample {first} has {values[first]}")
        n_elites = int(self.elite_ratio * n)
        if n_elites < 2:
            raise ValueError(f"{n} samples give int({self.elite_ratio}·{n}) = {n_elites} elite(s); the sample std "
                             "needs at least 2: tell a larger population")
        order = np.lexsort((np.arange(n), -tie, -perf))  # by perf, then tie_break (both descending), then index
        elites = samples[order[:n_elites]]
        self.mean = elites.mean(0)
        self.std = elites.std(0, ddof=1)  # the sample std, as torch.std in the reference
        i = int(order[0])
        self.best, self.best_perf, self.best_tie = samples[i].copy(), float(perf[i]), float(tie[i])
        self.best_index = i
        self.generation += 1
        return self.best.copy()

    def state_dict(self) -> dict:
        """Plain values and arrays (workbench.checkpoint.pack writes them): the distribution, the best member,
        the generator."""
        return {"pop": self.pop, "elite_ratio": self.elite_ratio, "lo": self.lo, "hi": self.hi, "mean": self.mean,
                "std": self.std, "best": self.best, "best_perf": self.best_perf, "best_tie": self.best_tie,
                "best_index": self.best_index, "generation": self.generation, "rng": rng_state(self.rng)}

    @classmethod
    def from_state(cls, state: dict) -> CEM:
        """The search as state_dict() wrote it, generator included, to go on bit for bit."""
        cem = cls.__new__(cls)
        cem.pop, cem.elite_ratio = int(state["pop"]), float(state["elite_ratio"])
        for key in ("lo", "hi", "mean", "std", "best"):
            setattr(cem, key, np.array(state[key], np.float64))
        cem.best_perf, cem.best_tie, cem.best_index = state["best_perf"], state["best_tie"], state["best_index"]
        cem.generation, cem.rng = int(state["generation"]), rng_from_state(state["rng"])
        return cem
