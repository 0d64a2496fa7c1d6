"""Recipe searches as ask/tell objects (the loop belongs to the caller; see workbench.merge.evolution).

    search = RecipeCMA(genome.initial(), genome.bounds(), sigma=0.2, population=8, seed=0)
    xs = search.ask()                 # (P, n) genomes inside the bounds
    search.tell(xs, losses)           # losses (P,), minimised

`steps` switches to CMA-ES with margin (cmaes.CMAwM) for mixed binary / continuous genomes (DFS).
`state_dict()` / `RecipeCMA.from_state(state)` write out and restore everything (the optimiser's every
attribute, its random generator, the pending asks), so a checkpoint resumes bit for bit; run checkpoints
store it as JSON + npz (workbench.checkpoint). The object also pickles completely.
"""

from __future__ import annotations

import numpy as np

from workbench.checkpoint import checkpointable, cmaes_from_state, cmaes_state, fresh_cmaes


@checkpointable("merge.RecipeCMA")
class RecipeCMA:
    """CMA-ES over a merge recipe's genome inside its bounds, minimising a loss (`cmaes.CMA`; with `steps`,
    CMA-ES with margin, `cmaes.CMAwM`, for genomes with discrete entries).

    Args:
        mean: (n,) the start genome (moved just inside the bounds).
        bounds: (n, 2) low/high pairs, low < high.
        sigma: the initial step size (positive).
        population: genomes a generation, at least 2 (None: CMA-ES's default, 4 + ⌊3 ln n⌋).
        seed: the optimiser's generator (a whole number).
        steps: (n,) the discretisation step of each entry, 0 for a continuous one (CMA-ES with margin).

    Raises:
        ValueError: any of them out of range, named.
    """

    kind = "cma"

    def __init__(self, mean: np.ndarray, bounds: np.ndarray, *, sigma: float = 0.2, population: int | None = None,
                 seed: int = 0, steps: np.ndarray | None = None):
        """mean: (n,) the start genome (moved just inside the bounds); bounds: (n, 2) low/high pairs; sigma:
        the step size; population: genomes a generation (None: CMA-ES's default, 4 + ⌊3 ln n⌋); seed: the
        optimiser's generator (a whole number); steps: (n,) the discretisation step of each entry, 0 for a
        continuous one (CMA-ES with margin).

        Raises:
            ValueError: any of them out of range, named.
        """
        from cmaes import CMA, CMAwM

        from workbench.checks import check_positive, check_seed, count

        check_seed(seed, "seed")
        sigma = check_positive(sigma, "sigma", " (the search's step size)")
        if population is not None:
            population = count(population, "population", 2)
        mean, bounds = np.asarray(mean, np.float64), np.asarray(bounds, np.float64)
        if mean.ndim != 1 or not np.isfinite(mean).all():
            raise ValueError(f"the initial mean must be a vector of finite numbers, got shape {mean.shape}")
        if bounds.shape != (len(mean), 2) or not (np.isfinite(bounds).all() and (bounds[:, 0] < bounds[:, 1]).all()):
            raise ValueError(f"bounds must be one finite (low, high) pair with low < high for each of the mean's "
                             f"{len(mean)} numbers, got shape {bounds.shape}")
        # CMA-ES needs the mean strictly inside the box
        lo, hi = bounds[:, 0], bounds[:, 1]
        mean = np.clip(mean, lo + 1e-6 * (hi - lo), hi - 1e-6 * (hi - lo))
        # populations below 4: cmaes divides by a rank-μ rate of 0 (μ_eff = 1) inside a min() that its other
        # terms win, so the optimiser is sound and only the divide-by-zero warning is silenced
        with np.errstate(divide="ignore"):
            if steps is None:
                self.opt = fresh_cmaes(CMA(mean=mean, sigma=sigma, bounds=bounds, population_size=population,
                                           seed=seed))
                self.margin = False
            else:
                self.opt = fresh_cmaes(CMAwM(mean=mean, sigma=sigma, bounds=bounds,
                                             steps=np.asarray(steps, np.float64), population_size=population,
                                             seed=seed))
                self.margin = True
        self.population_size = self.opt.population_size
        self._pending: list[np.ndarray] = []   # CMAwM's continuous x of each asked genome, in order
        self.best_x = mean.copy()
        self.best_loss = np.inf

    @property
    def sigma(self) -> float:
        """The optimiser's current step size σ."""
        return float(self.opt._cma._sigma if self.margin else self.opt._sigma)

    @property
    def mean(self) -> np.ndarray:
        """The optimiser's current mean genome, shape (n,) (a copy)."""
        return np.array(self.opt._cma._mean if self.margin else self.opt._mean)

    def ask(self) -> np.ndarray:
        """P genomes to evaluate. With margin, the discrete entries come back rounded to their steps; the
        continuous value CMA needs for `tell` is remembered."""
        xs, self._pending = [], []
        for _ in range(self.population_size):
            if self.margin:
                x_eval, x_tell = self.opt.ask()
                self._pending.append(x_tell)
                xs.append(x_eval)
            else:
                xs.append(self.opt.ask())
        return np.stack(xs)

    def tell(self, xs: np.ndarray, losses: np.ndarray) -> dict:
        """Update the optimiser with the asked genomes (all `population_size` of them) and their losses (lower
        is better). Returns the generation's metrics: loss_min, loss_mean, best_loss (so far) and σ.

        Raises:
            ValueError: not the population's genomes of the mean's length, or not one finite loss per genome.
        """
        xs = np.asarray(xs, np.float64)
        if xs.ndim != 2 or xs.shape != (self.population_size, len(self.best_x)):
            raise ValueError(f"tell takes the {self.population_size} genomes of the last ask, shape "
                             f"({self.population_size}, {len(self.best_x)}); got shape {xs.shape}")
        losses = np.asarray(losses, np.float64)
        if losses.shape != (len(xs),) or not np.isfinite(losses).all():
            raise ValueError(f"tell needs one finite loss per genome ({len(xs)}), got {losses}")
        if self.margin:
            if len(self._pending) != len(xs):
                raise ValueError("with margin, tell the genomes of the last ask, all of them, in order")
            told = [(x_tell, float(v)) for x_tell, v in zip(self._pending, losses, strict=True)]
            self._pending = []
        else:
            told = [(np.asarray(x), float(v)) for x, v in zip(xs, losses, strict=True)]
        self.opt.tell(told)
        i = int(np.argmin(losses))
        if losses[i] < self.best_loss:
            self.best_loss, self.best_x = float(losses[i]), np.array(xs[i])
        return {"loss_min": float(losses.min()), "loss_mean": float(losses.mean()), "best_loss": self.best_loss,
                "sigma": self.sigma}

    def state_dict(self) -> dict:
        """The optimiser (CMA or CMAwM: every attribute and its RandomState), the continuous x of asked but
        not yet told genomes, and the best genome and loss."""
        return {"opt": cmaes_state(self.opt), "margin": self.margin, "population_size": self.population_size,
                "pending": list(self._pending), "best_x": self.best_x, "best_loss": float(self.best_loss)}

    @classmethod
    def from_state(cls, state: dict) -> RecipeCMA:
        """The search as state_dict() wrote it, to go on bit for bit."""
        search = cls.__new__(cls)
        search.opt, search.margin = cmaes_from_state(state["opt"]), bool(state["margin"])
        search.population_size, search._pending = int(state["population_size"]), list(state["pending"])
        search.best_x, search.best_loss = np.asarray(state["best_x"]), float(state["best_loss"])
        return search

    # cmaes drops its RandomState when pickled and stores the covariance as its upper triangle, which
    # is not bit-exact once updates leave C a hair asymmetric; carry both ourselves, so a resumed run
    # continues exactly as an uninterrupted one.
    def _cma(self):
        return self.opt._cma if self.margin else self.opt

    def __getstate__(self) -> dict:
        cma = self._cma()
        return {**self.__dict__, "_rng_state": cma._rng.get_state(), "_cov": cma._C.copy()}

    def __setstate__(self, state: dict) -> None:
        rng_state, cov = state.pop("_rng_state"), state.pop("_cov")
        self.__dict__.update(state)
        self._cma()._rng.set_state(rng_state)
        self._cma()._C = cov
