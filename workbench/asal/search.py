"""ASAL searches as ask/tell objects; the caller owns the loop (see workbench.asal.driver).

    search = SepCMAESSearch(n_params, population=16, sigma=0.1, seed=0)
    while ...:
        thetas = search.ask()                        # (B, n_params)
        search.tell(thetas, losses, embeddings)      # losses (B,), final-frame embeddings (B, D)

Every object writes its complete state as plain values and arrays with `state_dict()` (random
generators and the optimiser's internals included) and comes back from it with `from_state(state)`:
a resumed search continues exactly as an uninterrupted one. workbench.checkpoint stores these states
as JSON + npz (no pickle); `pickle` still works on the objects too (checkpoints of older versions).

    state = search.state_dict()
    same = type(search).from_state(state)       # same.ask() == search.ask(), bit for bit
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from workbench.asal.scores import gram, illumination
from workbench.checkpoint import (
    checkpointable,
    cmaes_from_state,
    cmaes_state,
    dataclass_state,
    fresh_cmaes,
    rng_from_state,
    rng_state,
)

if TYPE_CHECKING:
    from ribs.archives import GridArchive


def _check(n_params: int, sigma: float, seed: int, **least: tuple[object, int]) -> None:
    """One ValueError naming the argument for settings that cmaes or pyribs would refuse with an AssertionError,
    or only at the first tell: least maps an argument's name to (its value, the least it may be)."""
    from workbench.checks import check_positive, check_seed, count

    for name, (value, at_least) in {"n_params": (n_params, 1), **least}.items():
        count(value, name, at_least)
    check_positive(sigma, "sigma", " (the search's step size)")
    check_seed(seed, "seed")


def _start(x0: np.ndarray | None, n_params: int) -> np.ndarray:
    """The θ a search starts from: θ = 0 (the reference's start), or a given x0 of n_params numbers."""
    if x0 is None:
        return np.zeros(n_params)
    x0 = np.asarray(x0, np.float64).reshape(-1)
    if x0.shape != (n_params,) or not np.isfinite(x0).all():
        raise ValueError(f"a search's start θ must be {n_params} finite numbers, got shape {x0.shape}")
    return x0


def _failed(failed, b: int) -> np.ndarray:
    """tell's `failed` as (B,) bool (None: no θ failed), or one ValueError."""
    if failed is None:
        return np.zeros(b, bool)
    failed = np.asarray(failed)
    if failed.shape != (b,) or failed.dtype != bool:
        raise ValueError(f"tell's failed marks each θ True or False: a bool array of shape ({b},), got "
                         f"{failed.dtype} of shape {failed.shape}")
    return failed


def _told(thetas, n_params: int, losses=None, embeddings=None, *, rows: int | None = None,
          width: int | None = None, need_embeddings: bool = False, failed=None,
          ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """What a search's tell was given, as arrays, once checked: θ as (B, n_params) (B = `rows` where the search
    needs as many as its ask gave), and where given B finite losses and B finite embeddings of `width` numbers
    (where a first tell fixed it). One ValueError naming what is wrong: left unchecked, a mismatch went on
    silently (θ and embeddings out of step) or failed deep inside cmaes or pyribs. Dtypes are kept.
    failed: (B,) bool, the θ whose evaluation failed (a diverged simulation): their losses and embeddings are not
    read (they may be NaN) and not checked; every other one must be finite."""
    thetas = np.asarray(thetas)
    if thetas.ndim != 2 or thetas.shape[1] != n_params:
        raise ValueError(f"tell takes θ as an array of shape (B, {n_params}), as ask gives it; got shape "
                         f"{thetas.shape}")
    b = len(thetas)
    if rows is not None and b != rows:
        raise ValueError(f"tell takes the {rows} θ the last ask gave, got {b}")
    ok = ~_failed(failed, b)
    if losses is not None:
        losses = np.asarray(losses)
        if losses.shape != (b,) or not np.isfinite(losses[ok]).all():
            raise ValueError(f"tell takes one finite loss per θ: shape ({b},), got shape {losses.shape}"
                             + ("" if losses.shape != (b,) else " with NaN or infinite values"))
    if embeddings is None and need_embeddings:
        raise ValueError("this search is told one embedding per θ (its objective is their diversity); got None")
    if embeddings is not None:
        embeddings = np.asarray(embeddings)
        d = embeddings.shape[1] if embeddings.ndim == 2 else None
        if embeddings.ndim != 2 or len(embeddings) != b or (width is not None and d != width):
            raise ValueError(f"tell takes one embedding per θ: shape ({b}, {width or 'D'}), got shape "
                             f"{embeddings.shape}")
        if not np.isfinite(embeddings[ok]).all():
            raise ValueError("tell's embeddings hold NaN or infinite values")
    return thetas, losses, embeddings


@checkpointable("asal.SepCMAESSearch")
class SepCMAESSearch:
    """Target / open-endedness search: Sep-CMA-ES (`cmaes`), mean 0, σ0 = 0.1, elite ratio 0.5 (spec §4).

        search = SepCMAESSearch(n_params=sub.n_params, population=16, seed=0)
        thetas = search.ask()                       # (16, n_params)
        metrics = search.tell(thetas, losses)       # losses (16,), lower is better; search.best_theta so far

    Args:
        n_params: the length of θ (the substrate's `n_params`).
        population: candidates per generation (λ; μ = λ/2 recombine). At least 2.
        sigma: σ0, the initial step size.
        seed: seeds cmaes' sampler: the same seed and losses give the same θ.
        x0: another start mean (e.g. a network's random initialisation, asal-more.md §0); default θ = 0.

    Raises:
        ValueError: a count below its minimum, a σ that is not positive and finite, x0 of another length.
    """

    kind = "cma"

    def __init__(self, n_params: int, population: int = 16, sigma: float = 0.1, seed: int = 0,
                 x0: np.ndarray | None = None):
        from cmaes import SepCMA

        _check(n_params, sigma, seed, population=(population, 2))
        mean = _start(x0, n_params)
        with np.errstate(divide="ignore"):  # populations below 4: see workbench.merge.search.RecipeCMA
            self.opt = fresh_cmaes(SepCMA(mean=mean, sigma=sigma, population_size=population, seed=seed))
        self.best_theta = mean.copy()
        self.best_loss = np.inf

    def ask(self) -> np.ndarray:
        """The next generation: `population` candidate θ, shape (population, n_params)."""
        return np.stack([self.opt.ask() for _ in range(self.opt.population_size)])

    def tell(self, thetas: np.ndarray, losses: np.ndarray, embeddings: np.ndarray | None = None,
             failed: np.ndarray | None = None) -> dict:
        """Update the optimiser with the asked θ and their losses (lower is better; `embeddings` are not used).
        failed: (population,) bool, the θ whose evaluation failed (a simulation that diverged): ranked below every
        other, in the order asked (told to cmaes as +inf: its tell sorts by value and took a NaN anywhere in the
        order, moving the mean towards it), never the best; their losses are not read.
        Returns the generation's metrics: loss_min, loss_mean (over the θ that did not fail; NaN if all did),
        best_loss (so far) and σ.

        Raises:
            ValueError: θ not (population, n_params), or not one finite loss per θ that did not fail.
        """
        if losses is None:
            raise ValueError("a Sep-CMA-ES search is told one loss per θ; got losses=None")
        thetas, losses, _ = _told(thetas, len(self.best_theta), losses, rows=self.opt.population_size,
                                  failed=failed)
        ok = ~_failed(failed, len(thetas))
        ranked = np.where(ok, losses, np.inf)  # Python's sort is stable: failed θ keep their order, last
        self.opt.tell([(t, float(v)) for t, v in zip(thetas, ranked, strict=True)])
        if not ok.any():
            return {"loss_min": float("nan"), "loss_mean": float("nan"), "best_loss": self.best_loss,
                    "sigma": float(self.opt._sigma)}
        i = int(np.argmin(ranked))
        if ranked[i] < self.best_loss:
            self.best_loss, self.best_theta = float(ranked[i]), np.array(thetas[i])
        return {"loss_min": float(np.min(losses[ok])), "loss_mean": float(np.mean(losses[ok])),
                "best_loss": self.best_loss, "sigma": float(self.opt._sigma)}

    def population(self) -> tuple[np.ndarray, None]:
        """The best θ so far as a population of one, shape (1, n_params), and no embeddings (None)."""
        return self.best_theta[None], None

    def state_dict(self) -> dict:
        """Everything the search needs to go on: the Sep-CMA-ES optimiser (every attribute and its
        RandomState), the best θ and its loss."""
        return {"opt": cmaes_state(self.opt), "best_theta": self.best_theta, "best_loss": float(self.best_loss)}

    @classmethod
    def from_state(cls, state: dict) -> SepCMAESSearch:
        """The search as state_dict() wrote it, to go on bit for bit."""
        search = cls.__new__(cls)
        search.opt = cmaes_from_state(state["opt"])
        search.best_theta, search.best_loss = np.asarray(state["best_theta"]), float(state["best_loss"])
        return search

    # cmaes drops its RandomState when pickled (a fresh, unseeded one comes back), which would make a
    # resumed run differ from an uninterrupted one; carry the generator's state across ourselves.
    def __getstate__(self) -> dict:
        return {**self.__dict__, "_rng_state": self.opt._rng.get_state()}

    def __setstate__(self, state: dict) -> None:
        rng_state = state.pop("_rng_state")
        self.__dict__.update(state)
        self.opt._rng.set_state(rng_state)


@checkpointable("asal.IlluminationGA")
class IlluminationGA:
    """The reference illumination GA (spec §4): population 256 from θ = 0, 32 children a generation
    (uniform parents + 0.1·N(0, I)), then the 32 most redundant of the 288 are removed one at a time —
    each time the one with the highest mean similarity to its 2 most similar survivors.

    Args:
        n_params: the length of θ.
        population: the population kept (the reference's 256). At least 3.
        children: children a generation (32).
        sigma: σ of the children's Gaussian noise.
        seed: seeds the parents drawn and the noise.
        x0: the start θ the population is made of (default θ = 0).
    """

    kind = "ga"

    def __init__(self, n_params: int, population: int = 256, children: int = 32, sigma: float = 0.1,
                 seed: int = 0, x0: np.ndarray | None = None):
        _check(n_params, sigma, seed, population=(population, 3), children=(children, 1))
        self.n_params, self.size, self.children, self.sigma = n_params, population, children, sigma
        self.x0 = _start(x0, n_params)
        self.rng = np.random.default_rng(seed)
        self.thetas: np.ndarray | None = None
        self.z: np.ndarray | None = None

    def ask(self) -> np.ndarray:
        """The start θ as one row (shape (1, n_params)) first, then `children` children of uniformly drawn
        parents, each θ + σ·N(0, I): shape (children, n_params)."""
        if self.z is None:
            return self.x0[None]  # the start population is `population` copies of θ = 0 (or of x0)
        parents = self.rng.integers(0, len(self.thetas), self.children)
        return self.thetas[parents] + self.sigma * self.rng.standard_normal((self.children, self.n_params))

    def tell(self, thetas: np.ndarray, losses: np.ndarray | None, embeddings: np.ndarray,
             failed: np.ndarray | None = None) -> dict:
        """Add the asked θ with their (unit) embeddings, then remove the most redundant members down to
        `population` (`losses` are not used: the population's diversity is the objective). The first tell
        takes the one start θ of the first ask. failed: (B,) bool, children whose evaluation failed (a diverged
        simulation): left out, never members (their embeddings are not read). Returns the metrics: the
        population's illumination loss (loss_min = loss_mean = best_loss) and σ.

        Raises:
            ValueError: θ not (B, n_params) (B = 1 at the first tell), not one finite embedding of the
                population's width per θ that did not fail, or a failed start θ (nothing to illuminate from).
        """
        thetas, _, embeddings = _told(thetas, self.n_params, embeddings=embeddings, need_embeddings=True,
                                      rows=1 if self.z is None else None,
                                      width=None if self.z is None else self.z.shape[1], failed=failed)
        ok = ~_failed(failed, len(thetas))
        if self.z is None and not ok.all():
            raise ValueError("the GA's start θ failed (its simulation diverged): start from another θ")
        thetas, embeddings = thetas[ok], embeddings[ok]
        if self.z is None:
            self.thetas = np.repeat(thetas[:1], self.size, axis=0)
            self.z = np.repeat(embeddings[:1], self.size, axis=0)
        else:
            thetas, z = np.concatenate([self.thetas, thetas]), np.concatenate([self.z, embeddings])
            keep = prune_redundant(z, len(z) - self.size)
            self.thetas, self.z = thetas[keep], z[keep]
        loss = float(illumination(self.z))
        return {"loss_min": loss, "loss_mean": loss, "best_loss": loss, "sigma": self.sigma}

    def population(self) -> tuple[np.ndarray, np.ndarray]:
        """The population's θ (population, n_params) and embeddings (population, D), after the first tell."""
        if self.z is None:
            raise ValueError("the GA has no population before its first tell")
        return self.thetas, self.z

    def state_dict(self) -> dict:
        """Settings, the generator's state, the population and its embeddings."""
        return {"n_params": self.n_params, "size": self.size, "children": self.children, "sigma": self.sigma,
                "rng": rng_state(self.rng), "thetas": self.thetas, "z": self.z, "x0": self.x0}

    @classmethod
    def from_state(cls, state: dict) -> IlluminationGA:
        """The GA as state_dict() wrote it, to go on bit for bit (a checkpoint made before x0 existed starts
        from θ = 0)."""
        ga = cls.__new__(cls)
        ga.n_params, ga.size, ga.children, ga.sigma = (state[k] for k in ("n_params", "size", "children", "sigma"))
        ga.rng, ga.thetas, ga.z = rng_from_state(state["rng"]), state["thetas"], state["z"]
        ga.x0 = _start(state.get("x0"), ga.n_params)  # checkpoints made before x0 existed started from 0
        return ga


def prune_redundant(z: np.ndarray, remove: int, neighbours: int = 2) -> np.ndarray:
    """Indices kept after removing `remove` rows one at a time, each time the row with the highest
    mean similarity to its `neighbours` most similar surviving rows (ties: the lowest index).

    Each row's score is kept between removals; a removal only changes the rows that counted the removed
    one among their most similar, so only those are recounted. A row's `neighbours` most similar survivors
    are always among its `neighbours + remove` most similar rows overall (at most `remove` of those die), so
    a recount looks at that many columns, not all of them: a removal costs O(affected rows · (k + remove)),
    which matters at the GA's start, where the population is hundreds of copies of one θ and every removal
    touches every row. The numbers are the ones a full recount gives, summed in the same order."""
    n = len(z)
    sim = gram(z)
    np.fill_diagonal(sim, -np.inf)
    width = min(n, neighbours + remove)
    cols = np.argpartition(-sim, width - 1, axis=1)[:, :width] if width < n else np.tile(np.arange(n), (n, 1))
    near = np.take_along_axis(sim, cols, axis=1)  # each row's `width` most similar rows (any order)
    alive = np.ones(n, bool)
    score, kth = np.empty(n), np.empty(n)

    def rescore(rows: np.ndarray) -> None:
        vals = np.where(alive[cols[rows]], near[rows], -np.inf)  # the dead count as -inf, as in a full recount
        best = -np.sort(np.partition(-vals, neighbours - 1, axis=1)[:, :neighbours], axis=1)  # descending
        score[rows], kth[rows] = best.mean(axis=1), best[:, -1]

    rescore(np.arange(n))
    for _ in range(remove):
        gone = int(np.argmax(np.where(alive, score, -np.inf)))
        alive[gone] = False
        affected = np.flatnonzero(alive & (sim[:, gone] >= kth))
        if len(affected):
            rescore(affected)
    return np.flatnonzero(alive)


#: how MapElitesSearch fits its descriptor and grid on the seed population (see the class)
DESCRIPTOR_FITS = ("held-out", "all")


@checkpointable("asal.MapElitesSearch")
class MapElitesSearch:
    """Our extension: MAP-Elites illumination (pyribs) on a 2-D descriptor of the embedding.

    The descriptor is a PCA of the embeddings of a seed population (θ = 0, or x0, plus σ-perturbations), fixed
    after the first tell. The PCA is fitted on every other member of the seed population and the grid spans the
    range of the others' projections, with a 50 % margin: with embeddings wider than the population (2352 pixels
    for 32 members) a PCA overfits the points it is fitted on, which spread several times wider along its
    components than any other draw, and a grid sized by them kept every child in the one or two central cells
    the seed population held (coverage never moved). Members outside the grid go to its edge cells.
    The objective is novelty: 1 − the highest cosine similarity to any elite already in the archive, and for
    the seed population to any other of its members (against an empty archive each would score 1, which no
    child could beat: the seed elites were never replaced).

    fit="all" is what runs made before 2026-12-03 did (workbench.asal.legacy): PCA and grid on the whole seed
    population, seed elites of novelty 1.

    Args:
        n_params: the length of θ.
        batch: children asked for each generation after the seed population.
        sigma: σ of the perturbations (of the seed population and of the elites the children come from).
        cells: the grid's side: cells × cells bins over the 2-D descriptor.
        seed_population: members of the seed population that fixes the descriptor (2 at least).
        seed: seeds the perturbations and pyribs' emitter.
        x0: the start θ (default θ = 0).
        fit: "held-out" (default) or "all" (the descriptor as runs made before 2026-12-03 fitted it).
    """

    kind = "map-elites"

    def __init__(self, n_params: int, batch: int = 16, sigma: float = 0.1, cells: int = 16,
                 seed_population: int = 32, seed: int = 0, x0: np.ndarray | None = None, fit: str = "held-out"):
        # the seed population's embeddings fix the archive's 2-D projection (PCA): two at least
        _check(n_params, sigma, seed, batch=(batch, 1), cells=(cells, 1), seed_population=(seed_population, 2))
        self.n_params, self.batch, self.sigma, self.cells, self.seed = n_params, batch, sigma, cells, seed
        self.x0 = _start(x0, n_params)
        self.rng = np.random.default_rng(seed)
        self.seed_population = seed_population
        if fit not in DESCRIPTOR_FITS:
            raise ValueError(f"fit must be one of {', '.join(DESCRIPTOR_FITS)}, got {fit!r}")
        self.fit = fit
        self.scheduler = None
        self.components: np.ndarray | None = None
        self.centre: np.ndarray | None = None

    @property
    def archive(self) -> GridArchive | None:
        """The pyribs GridArchive of elites, None until the first tell (its embeddings set the descriptor space)
        builds it."""
        return None if self.scheduler is None else self.scheduler.archive

    def ask(self) -> np.ndarray:
        """The seed population first (x0 and σ-perturbations of it: (seed_population, n_params)), then the
        emitter's batch of Gaussian mutations of archive elites, (batch, n_params)."""
        if self.scheduler is None:
            first = self.x0 + self.sigma * self.rng.standard_normal((self.seed_population, self.n_params))
            first[0] = self.x0
            return first
        return self.scheduler.ask()

    def measures(self, z: np.ndarray) -> np.ndarray:
        """The 2-D descriptors of embeddings z (B, D): their projection on the seed population's first two
        principal components, fixed at the first tell."""
        if self.components is None:
            raise ValueError("MAP-Elites has no descriptor before its first tell (it comes from those embeddings)")
        return (z - self.centre) @ self.components.T

    def _novelty(self, z: np.ndarray) -> np.ndarray:
        elites = self.archive.data("embedding") if len(self.archive) else np.zeros((0, z.shape[1]))
        if len(elites) == 0:
            return np.ones(len(z))
        return 1.0 - (z @ elites.T).max(axis=1)

    def _build(self, ranges: list[tuple[float, float]], dim: int) -> None:
        """The pyribs archive, emitter and scheduler (fresh: empty archive, seeded generators)."""
        from ribs.archives import GridArchive
        from ribs.emitters import GaussianEmitter
        from ribs.schedulers import Scheduler

        archive = GridArchive(solution_dim=self.n_params, dims=(self.cells, self.cells), ranges=ranges,
                              seed=self.seed, extra_fields={"embedding": ((dim,), np.float32)})
        emitter = GaussianEmitter(archive, sigma=self.sigma, x0=self.x0, batch_size=self.batch,
                                  seed=self.seed + 1)
        self.scheduler = Scheduler(archive, [emitter])

    def tell(self, thetas: np.ndarray, losses: np.ndarray | None, embeddings: np.ndarray,
             failed: np.ndarray | None = None) -> dict:
        """Add the asked θ to the archive by their embeddings' descriptors, with novelty as the objective
        (`losses` are not used). The first tell, of the seed population, fixes the descriptor and the grid (from
        the members that did not fail). failed: (B,) bool, θ whose evaluation failed (a diverged simulation):
        never added (pyribs refuses a non-finite descriptor; their embeddings are not read).
        Returns the metrics: the elites' illumination loss (loss_min = loss_mean = best_loss), σ, coverage.

        Raises:
            ValueError: θ not the ones the last ask gave, not one finite embedding of the archive's width per θ
                that did not fail, or fewer than two seed members that did not fail (no descriptor to fit).
        """
        first = self.scheduler is None
        thetas, _, embeddings = _told(thetas, self.n_params, embeddings=embeddings, need_embeddings=True,
                                      rows=self.seed_population if first else self.batch,
                                      width=None if first else self.centre.shape[0], failed=failed)
        if not first and not np.array_equal(thetas, self.scheduler._cur_solutions):
            raise ValueError("tell takes the θ the last ask gave, in its order (pyribs keeps them)")
        ok = ~_failed(failed, len(thetas))
        if first and ok.sum() < 2:
            raise ValueError("MAP-Elites' seed population needs two members that did not fail (diverge) to fit its "
                             f"descriptor; {int(ok.sum())} did: give a smaller --sigma")
        z = np.asarray(embeddings, np.float64)
        if first and not ok.all():
            thetas, z = thetas[ok], z[ok]
        if first:
            # fitted on one half, the grid sized by the other (see the class docstring); a seed population
            # too small to halve (under 8) does both on all of it
            fit, held = (z[0::2], z[1::2]) if len(z) >= 8 and self.fit == "held-out" else (z, z)
            self.centre = fit.mean(axis=0)
            _, _, vt = np.linalg.svd(fit - self.centre, full_matrices=False)
            self.components = vt[:2]
            m, calibration = self.measures(z), self.measures(held)
            lo, hi = calibration.min(axis=0), calibration.max(axis=0)
            span = np.maximum(hi - lo, 1e-6)
            ranges = [(a - 0.5 * s, b + 0.5 * s) for a, b, s in zip(lo, hi, span, strict=True)]
            self._build(ranges, z.shape[1])
            if self.fit == "held-out":  # each member's novelty among the others
                similar = gram(z)
                np.fill_diagonal(similar, -np.inf)
                novelty = 1.0 - similar.max(axis=1)
            else:
                novelty = self._novelty(z)  # against the empty archive: 1
            self.archive.add(thetas, novelty, m, embedding=z.astype(np.float32))
        elif ok.all():
            self.scheduler.tell(self._novelty(z), self.measures(z), embedding=z.astype(np.float32))
        else:  # the scheduler's tell takes the whole batch: what it does, for the members that did not fail (its
            # Gaussian emitter's tell does nothing)
            self.scheduler._last_called = "tell"
            z = z[ok]
            self.archive.add(thetas[ok], self._novelty(z), self.measures(z), embedding=z.astype(np.float32))
        elites = self.archive.data("embedding")
        score = float(illumination(elites)) if len(elites) > 1 else 1.0
        return {"loss_min": score, "loss_mean": score, "best_loss": score, "sigma": self.sigma,
                "coverage": float(self.archive.stats.coverage)}

    def population(self) -> tuple[np.ndarray, np.ndarray]:
        """The archive's elites: θ (E, n_params) and embeddings (E, D), after the first tell."""
        if self.archive is None:
            raise ValueError("MAP-Elites has no archive before its first tell")
        return self.archive.data("solution"), self.archive.data("embedding")

    # pyribs objects are rebuilt from their settings (the grid's ranges, the seeds), then their mutable
    # state is put back: the archive's store (occupancy, its order, every field's array), statistics and
    # best elite, and the generators of archive and emitter; the scheduler's bookkeeping of the last ask.
    def state_dict(self) -> dict:
        """Settings, the generator's state, the descriptor (PCA) and, after the first tell, the archive,
        emitter and scheduler state."""
        state = {"n_params": self.n_params, "batch": self.batch, "sigma": self.sigma, "cells": self.cells,
                 "seed": self.seed, "seed_population": self.seed_population, "rng": rng_state(self.rng), "x0": self.x0,
                 "fit": self.fit,
                 "components": self.components, "centre": self.centre, "ribs": None}
        if self.scheduler is not None:
            archive, (emitter,) = self.archive, self.scheduler.emitters
            store = archive._store
            # pyribs allocates its arrays with np.empty: the rows of empty cells (and the occupied list past its
            # length) hold whatever memory held before, which pyribs never reads. Saved as zeros, a checkpoint
            # holds no leftover process memory and is the same bytes for the same run.
            empty = ~np.asarray(store._props["occupied"])
            fields = {name: np.where(empty.reshape(-1, *[1] * (a.ndim - 1)), np.zeros((), a.dtype), a)
                      for name, a in store._fields.items()}
            props = dict(store._props)
            props["occupied_list"] = np.where(np.arange(len(props["occupied_list"])) < props["n_occupied"],
                                              props["occupied_list"], 0).astype(props["occupied_list"].dtype)
            state["ribs"] = {
                "lower_bounds": archive.lower_bounds, "upper_bounds": archive.upper_bounds,
                "embedding_dim": int(store._fields["embedding"].shape[1]),
                "props": props, "fields": fields,
                "archive_rng": rng_state(archive._rng), "objective_sum": archive._objective_sum,
                "best_elite": archive._best_elite, "stats": dataclass_state(archive._stats),
                "emitter_rng": rng_state(emitter._rng),
                "last_called": self.scheduler._last_called, "num_emitted": list(self.scheduler._num_emitted),
                "cur_solutions": self.scheduler._cur_solutions}
        return state

    @classmethod
    def from_state(cls, state: dict) -> MapElitesSearch:
        """The search as state_dict() wrote it, archive and generator included, to go on bit for bit."""
        from ribs.archives import ArchiveStats

        me = cls(state["n_params"], batch=state["batch"], sigma=state["sigma"], cells=state["cells"],
                 seed_population=state["seed_population"], seed=state["seed"], x0=state.get("x0"),
                 fit=state.get("fit", "all"))  # checkpoints made before fit existed did "all"
        me.rng, me.components, me.centre = rng_from_state(state["rng"]), state["components"], state["centre"]
        saved = state["ribs"]
        if saved is None:
            return me
        me._build([(float(a), float(b)) for a, b in zip(saved["lower_bounds"], saved["upper_bounds"], strict=True)],
                  saved["embedding_dim"])
        archive, (emitter,) = me.archive, me.scheduler.emitters
        store = archive._store
        if set(saved["props"]) != set(store._props) or set(saved["fields"]) != set(store._fields):
            raise ValueError("the MAP-Elites checkpoint was written by a pyribs whose archive stores other fields; "
                             "install the pyribs version of the run to resume it")
        store._props.update(saved["props"])
        store._props["updates"] = list(saved["props"]["updates"])
        store._fields.update(saved["fields"])
        archive._rng, emitter._rng = rng_from_state(saved["archive_rng"]), rng_from_state(saved["emitter_rng"])
        archive._objective_sum, archive._best_elite = saved["objective_sum"], saved["best_elite"]
        archive._stats = ArchiveStats(**saved["stats"])
        me.scheduler._last_called = saved["last_called"]
        me.scheduler._num_emitted = list(saved["num_emitted"])
        me.scheduler._cur_solutions = saved["cur_solutions"]
        return me


SEARCHES = {"cma": SepCMAESSearch, "ga": IlluminationGA, "map-elites": MapElitesSearch}
