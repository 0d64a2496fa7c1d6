"""Full-covariance CMA-ES for thousands of dimensions: cmaes' CMA, the same numbers, a fraction of the work.

NAMM trains 4172 parameters with the reference's full covariance (spec §3). cmaes' CMA computes, per sample,
B·diag(D) as a dense n×n matrix product (2n³ flops, ~2.3 s at n = 4172 on two cores: 32 samples, 74 s a
generation), two more products for C^-1/2 in tell, two to rebuild C after each eigendecomposition, and holds the
rank-μ update as a (λ, n, n) array (4.5 GB at λ = 32, twice over while it is weighted). A product with a diagonal
matrix is a column scaling, and adding the λ weighted outer products one at a time is the sum numpy takes over
that array's first axis (for n ≥ 2: at n = 1 numpy sums pairwise, and FastCMA does as cmaes does), so FastCMA
does the same arithmetic in the same order without them: every draw, mean, σ and covariance is bit for bit
cmaes' (tests/test_fast_cma.py checks it against the installed cmaes each run, so a cmaes release that changes its
update fails there, not silently). What remains cubic is the one eigendecomposition per generation and one
product for C^-1/2.

Learning-rate adaptation (cmaes' lr_adapt) is not carried over: it is refused, not ignored.
"""

from __future__ import annotations

import math

import numpy as np
from cmaes import CMA
from cmaes._cma import _EPS, _MEAN_MAX, _SIGMA_MAX


class FastCMA(CMA):
    """cmaes.CMA with O(n²) sampling and an O(n²)-memory update (module doc); same constructor, ask and tell."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self._lr_adapt:  # however it was passed
            raise ValueError("FastCMA does not carry cmaes' lr_adapt; use cmaes.CMA for learning-rate adaptation")

    def _eigen_decomposition(self) -> tuple[np.ndarray, np.ndarray]:
        if self._B is not None and self._D is not None:
            return self._B, self._D
        self._C = (self._C + self._C.T) / 2
        d2, b = np.linalg.eigh(self._C)
        d = np.sqrt(np.where(d2 < 0, _EPS, d2))
        self._C = (b * d**2).dot(b.T)  # B diag(D²) Bᵀ: the scaling is exact, one product instead of two
        self._B, self._D = b, d
        return b, d

    def _sample_solution(self) -> np.ndarray:
        b, d = self._eigen_decomposition()
        z = self._rng.randn(self._n_dim)  # ~ N(0, I), the same draw as cmaes'
        return self._mean + self._sigma * (b * d).dot(z)  # ~ N(m, σ² C)

    def tell(self, solutions: list[tuple[np.ndarray, float]]) -> None:
        """Update from (x, value) pairs, lower values better (cmaes' tell; the equations of Hansen's tutorial)."""
        assert len(solutions) == self._popsize, "Must tell popsize-length solutions."
        for x, _ in solutions:
            assert np.all(np.abs(x) < _MEAN_MAX), f"Abs of all param values must be less than {_MEAN_MAX}"
        self._g += 1
        solutions.sort(key=lambda s: s[1])
        slot = 2 * (self.generation % self._funhist_term)  # best and worst of recent generations (should_stop)
        self._funhist_values[slot] = solutions[0][1]
        self._funhist_values[slot + 1] = solutions[-1][1]

        b, d = self._eigen_decomposition()
        self._B, self._D = None, None
        y = (np.array([x for x, _ in solutions]) - self._mean) / self._sigma  # (λ, n) ~ N(0, C)
        mu, w = self._mu, self._weights
        y_w = np.sum(y[:mu].T * w[:mu], axis=1)
        self._mean += self._cm * self._sigma * y_w

        inv_sqrt_c = (b * (1 / d)).dot(b.T)  # C^-1/2 = B diag(1/D) Bᵀ
        self._p_sigma = (1 - self._c_sigma) * self._p_sigma + math.sqrt(
            self._c_sigma * (2 - self._c_sigma) * self._mu_eff) * inv_sqrt_c.dot(y_w)
        norm_p_sigma = np.linalg.norm(self._p_sigma)
        self._sigma *= np.exp((self._c_sigma / self._d_sigma) * (norm_p_sigma / self._chi_n - 1))
        self._sigma = min(self._sigma, _SIGMA_MAX)

        stalled = norm_p_sigma / math.sqrt(1 - (1 - self._c_sigma) ** (2 * (self._g + 1)))
        h_sigma = 1.0 if stalled < (1.4 + 2 / (self._n_dim + 1)) * self._chi_n else 0.0
        self._pc = (1 - self._cc) * self._pc + h_sigma * math.sqrt(self._cc * (2 - self._cc) * self._mu_eff) * y_w

        # active CMA: negative weights rescaled by the Mahalanobis length of their step
        w_io = w * np.where(w >= 0, 1, self._n_dim / (np.linalg.norm(inv_sqrt_c.dot(y.T), axis=0) ** 2 + _EPS))
        delta_h_sigma = (1 - h_sigma) * self._cc * (2 - self._cc)
        assert delta_h_sigma <= 1
        rank_one = np.outer(self._pc, self._pc)
        if self._n_dim == 1:  # numpy sums a (λ, 1, 1) array pairwise, not in k's order: cmaes' own sum, tiny here
            rank_mu = np.sum(w_io.reshape(-1, 1, 1) * (y[:, :, None] * y[:, None, :]), axis=0)
        else:
            rank_mu = w_io[0] * np.outer(y[0], y[0])  # Σ_k w_k y_k y_kᵀ, summed in k's order
            for wk, yk in zip(w_io[1:], y[1:], strict=True):
                rank_mu += wk * np.outer(yk, yk)
        self._C = ((1 + self._c1 * delta_h_sigma - self._c1 - self._cmu * np.sum(w)) * self._C
                   + self._c1 * rank_one + self._cmu * rank_mu)


def as_fast_cma(opt: object) -> object:
    """A cmaes CMA restored from a checkpoint written before FastCMA (a `--cma full` run resumed), as a FastCMA:
    the same attributes and, from there, the same numbers, at FastCMA's speed. Anything else comes back as it is."""
    if type(opt) is CMA and not opt._lr_adapt:
        opt.__class__ = FastCMA
    return opt
