"""Genetic algorithms over Game of Life rules, for the searches whose θ is one integer rule r ∈ [0, 2^18).

Sep-CMA-ES and σ-noise need a float vector; a rule is 18 bits (births for n = 0..8, survivals for n = 0..8), so
a child is its parent with bits flipped (each with probability `rate`, at least one). Two searches, both with the
ask/tell/state_dict interface of workbench.asal.search:

- `RuleGA` (target, open-endedness): a (μ + λ) GA. It starts from `population` uniformly drawn rules (the
  reference's default_params; θ = 0, the rule under which every cell dies, would be a dead start), keeps the best
  half of parents and children (the elite ratio 0.5 of the Sep-CMA-ES runs) and breeds `population` children
  from them. Losses come from fresh initial states every iteration, so an elite is compared by the loss it had.
- `RuleIlluminationGA` (illumination): the reference illumination GA (asal.md §4: a population from θ = 0, uniform
  parents, the most redundant removed) with bit flips for the σ-noise.
"""

from __future__ import annotations

import numpy as np

from workbench.asal.search import SEARCHES, IlluminationGA, _told
from workbench.checkpoint import checkpointable, rng_from_state, rng_state
from workbench.checks import check_seed
from workbench.simulations.gol import N_RULES

N_BITS = 18


def mutate_rules(rules: np.ndarray, rng: np.random.Generator, rate: float = 1 / N_BITS) -> np.ndarray:
    """Each rule with each of its 18 bits flipped with probability `rate`; a rule left unchanged gets one random
    bit flipped, so every child differs from its parent."""
    rules = np.asarray(rules, np.int64)
    flips = rng.random((len(rules), N_BITS)) < rate
    unchanged = np.flatnonzero(~flips.any(axis=1))
    flips[unchanged, rng.integers(0, N_BITS, len(unchanged))] = True
    return rules ^ (flips.astype(np.int64) << np.arange(N_BITS)).sum(axis=1)


def _rules(thetas: np.ndarray) -> np.ndarray:
    return np.asarray(thetas, np.float64).reshape(-1).astype(np.int64)


@checkpointable("asal.RuleGA")
class RuleGA:
    """(μ + λ) GA over rules for target / open-endedness searches (see the module docstring)."""

    kind = "rule-ga"

    def __init__(self, population: int = 16, rate: float = 1 / N_BITS, seed: int = 0):
        if population < 2:
            raise ValueError(f"population must be at least 2, got {population}")
        if not 0 < rate <= 1:
            raise ValueError(f"the bit-flip rate must be in (0, 1], got {rate}")
        check_seed(seed)
        self.size, self.rate = int(population), float(rate)
        self.rng = np.random.default_rng(seed)
        self.elites: np.ndarray | None = None        # rules (μ,)
        self.elite_losses: np.ndarray | None = None
        self.best_theta, self.best_loss = np.zeros(1), np.inf

    def ask(self) -> np.ndarray:
        if self.elites is None:
            rules = self.rng.integers(0, N_RULES, self.size)
        else:
            rules = mutate_rules(self.elites[self.rng.integers(0, len(self.elites), self.size)], self.rng, self.rate)
        return rules[:, None].astype(np.float64)

    def tell(self, thetas: np.ndarray, losses: np.ndarray, embeddings: np.ndarray | None = None) -> dict:
        """Keep the best distinct rules of the elites and the asked ones (μ + λ); the generation's metrics.
        ValueError: not the `population` rules of the last ask, or not one finite loss per rule."""
        if losses is None:
            raise ValueError("a GA over rules is told one loss per rule; got losses=None")
        thetas, losses, _ = _told(thetas, 1, losses, rows=self.size)
        rules, losses = _rules(thetas), np.asarray(losses, np.float64)
        if self.elites is not None:
            rules, losses = np.concatenate([self.elites, rules]), np.concatenate([self.elite_losses, losses])
        order = np.argsort(losses, kind="stable")
        _, first = np.unique(rules[order], return_index=True)  # each rule once, at its best loss
        keep = order[np.sort(first)][: max(1, self.size // 2)]
        self.elites, self.elite_losses = rules[keep], losses[keep]
        new = np.asarray(losses[-len(thetas):])
        if self.elite_losses[0] < self.best_loss:
            self.best_loss, self.best_theta = float(self.elite_losses[0]), np.array([float(self.elites[0])])
        return {"loss_min": float(new.min()), "loss_mean": float(new.mean()), "best_loss": self.best_loss,
                "sigma": self.rate}

    def population(self) -> tuple[np.ndarray, None]:
        return self.best_theta[None], None

    def state_dict(self) -> dict:
        return {"size": self.size, "rate": self.rate, "rng": rng_state(self.rng), "elites": self.elites,
                "elite_losses": self.elite_losses, "best_theta": self.best_theta, "best_loss": float(self.best_loss)}

    @classmethod
    def from_state(cls, state: dict) -> RuleGA:
        ga = cls.__new__(cls)
        ga.size, ga.rate, ga.rng = state["size"], state["rate"], rng_from_state(state["rng"])
        ga.elites, ga.elite_losses = state["elites"], state["elite_losses"]
        ga.best_theta, ga.best_loss = np.asarray(state["best_theta"]), float(state["best_loss"])
        return ga


@checkpointable("asal.RuleIlluminationGA")
class RuleIlluminationGA(IlluminationGA):
    """The reference illumination GA over rules: bit flips (probability `sigma` per bit) instead of σ-noise."""

    kind = "rule-ga"

    def __init__(self, population: int = 256, children: int = 32, rate: float = 1 / N_BITS, seed: int = 0):
        super().__init__(1, population=population, children=children, sigma=rate, seed=seed)

    def ask(self) -> np.ndarray:
        if self.z is None:
            return np.zeros((1, 1))  # θ = 0 (rule 0), as the reference GA
        parents = _rules(self.thetas[self.rng.integers(0, len(self.thetas), self.children)])
        return mutate_rules(parents, self.rng, self.sigma)[:, None].astype(np.float64)


def rule_search(kind: str, pop: int, population: int, seed: int):
    """The GA over rules for a search kind: RuleIlluminationGA for "illuminate", else RuleGA."""
    if kind == "illuminate":
        return RuleIlluminationGA(population=population, children=pop, seed=seed)
    return RuleGA(population=pop, seed=seed)


SEARCHES.update({"rule-ga": RuleGA, "rule-ga-illuminate": RuleIlluminationGA})
