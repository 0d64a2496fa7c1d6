"""Game of Life and every life-like rule (asal-more.md §1), plus what the grid substrates share.

θ is one integer rule r ∈ [0, 2^18): bit 9·s + n of r is the next state of a cell in state s with n live
neighbours (bits 0–8 births, 9–17 survivals; Conway B3/S23 = 6152).

`GridSubstrate` is the common part of the grid cellular automata (Game of Life, NCA, discrete NCA): one state
array "state", a `noise=` argument on `step` (drop masks, Gumbel draws) and a nearest-neighbour render. Without
noise a substrate draws its own: each simulation keeps a hidden key (seed, steps taken) next to its state, and
step t of a simulation uses a draw keyed by (seed, t) — the same seed gives the same run however the steps are
split into calls. The key is not part of `state_to_arrays`; a state made by `state_from_arrays` takes its seed
from a checksum of its contents.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from workbench.kernels.runtime import ensure_taichi
from workbench.simulations.base import Params, State, Substrate, check_positive

N_RULES = 2 ** 18
CONWAY = 6152  # B3/S23


def rule_text(rule: int) -> str:
    """A life-like rule in B/S notation: 6152 -> 'B3/S23' (bit n: a birth at n live neighbours, bit 9 + n: a
    survival at n)."""
    return f"B{rule_digits(rule, 0)}/S{rule_digits(rule, 9)}"


def rule_digits(rule: int, offset: int) -> str:
    """The neighbour counts n whose bit offset + n is set in `rule`: '3' of B3 (offset 0), '23' of S23 (offset 9)."""
    return "".join(str(n) for n in range(9) if (int(rule) >> (offset + n)) & 1)


def _splitmix64(z: np.ndarray) -> np.ndarray:
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def step_keys(rng: torch.Tensor, t: int) -> torch.Tensor:
    """Two 32-bit keys per simulation for its step number (steps taken + t), from its seed: (P, 2) int32."""
    seed_t = rng.cpu().numpy().astype(np.uint64)
    z = _splitmix64(_splitmix64(seed_t[:, 0]) ^ (seed_t[:, 1] + np.uint64(t)))
    keys = np.stack([z & np.uint64(0xFFFFFFFF), z >> np.uint64(32)], axis=1).astype(np.uint32)
    return torch.from_numpy(keys.view(np.int32))


class GridSubstrate(Substrate):
    """A cellular automaton on a square torus with one state array "state" (see the module docstring)."""

    grid: int
    noise_what = ""  # what `noise=` holds, for messages; "" when the substrate takes none

    def __init__(self, device: str | torch.device | None = None, engine: str | None = None) -> None:
        """engine: "taichi" (the CPU default) or "torch" (the CUDA default: whole-grid tensor operations, and no
        second Taichi arch in a process that runs Taichi on the CPU)."""
        if engine not in (None, "taichi", "torch"):
            raise ValueError(f"{self.name} runs on engine='taichi' (the CPU default) or engine='torch' (the CUDA "
                             f"default), got {engine!r}")
        super().__init__(device, "taichi")
        self.engine = engine or ("torch" if self.device.type == "cuda" else "taichi")

    def noise_shape(self) -> tuple[int, ...] | None:
        """The shape of one step's noise for one simulation, or None when the substrate takes none."""
        return None

    # --- state: one public array plus the hidden key ---------------------------------------------

    def _with_key(self, arrays: dict[str, torch.Tensor], seeds: Sequence[int]) -> dict[str, torch.Tensor]:
        rng = torch.tensor([[int(s) % 2 ** 63, 0] for s in seeds], dtype=torch.int64)
        return {**arrays, "rng": rng}

    def state_to_arrays(self, state: State) -> dict[str, np.ndarray]:
        self._check_state(state)
        arr = state.arrays["state"].cpu().numpy().copy()
        return {"state": arr if state.batched else arr[0]}

    def state_from_arrays(self, **arrays) -> State:
        """The state the arrays hold, its noise key (module doc) seeded by a checksum of the grids: a stochastic
        substrate (NCA's drop masks, DNCA's draws) steps a restored state on with other draws than the state it
        was saved from did; give `noise=` to step for the same draws. Deterministic ones (Game of Life) step on
        exactly."""
        state = super().state_from_arrays(**arrays)
        grids = state.arrays["state"].cpu().numpy()
        seeds = [zlib.crc32(np.ascontiguousarray(g).tobytes()) for g in grids]
        return State(self.name, self._with_key(state.arrays, seeds), state.batched)

    def _validate_state(self, arrays: dict[str, torch.Tensor]) -> None:
        s = arrays["state"]
        lo, hi = self.state_range()
        if (s < lo).any() or (s > hi).any():
            kind = "integers" if not s.dtype.is_floating_point else "numbers"
            raise ValueError(f"{self.name}: state array 'state' must hold {kind} in [{lo}, {hi}]")

    def state_range(self) -> tuple[float, float]:
        return 0, 1

    # --- step with optional noise ------------------------------------------------------------

    def step(self, state: State, params: Params, steps: int = 1, noise=None) -> State:
        """Advance by `steps` steps; the given state is left as it was. noise: this substrate's draws for those
        steps (see noise_shape), with a leading population axis when the state has one; None draws them."""
        steps = check_positive("steps", steps)
        self._check_state(state)
        p, _ = self._params_batch(params, state.population)
        draws = self._check_noise(noise, steps, state)
        arrays = {k: v.clone() for k, v in state.arrays.items()}
        with self._memory_errors(state.population):
            arrays = self._step(arrays, p, steps, draws)
        arrays["rng"][:, 1] += steps
        return State(self.name, arrays, state.batched)

    def _check_noise(self, noise, steps: int, state: State) -> torch.Tensor | None:
        """noise as a contiguous tensor (steps, P, *noise_shape), checked; None stays None."""
        if noise is None:
            return None
        shape = self.noise_shape()
        if shape is None:
            raise ValueError(f"{self.name} is deterministic and takes no noise; call step without noise=")
        arr = noise.detach().cpu().numpy() if torch.is_tensor(noise) else np.asarray(noise)
        want = (steps, *shape)
        P = state.population
        if state.batched:
            if arr.shape != (P, *want):
                raise ValueError(f"{self.name}: noise must be {self.noise_what} of shape {(P, *want)} "
                                 f"(population, steps, …), got {arr.shape}")
            arr = np.swapaxes(arr, 0, 1)
        else:
            if arr.shape != want:
                raise ValueError(f"{self.name}: noise must be {self.noise_what} of shape {want} (steps, …), "
                                 f"got {arr.shape}")
            arr = arr[:, None]
        return self._convert_noise(arr)

    def _convert_noise(self, arr: np.ndarray) -> torch.Tensor:
        raise NotImplementedError

    # --- render ------------------------------------------------------------------------------

    def _render_states(self, states: torch.Tensor, palette: torch.Tensor, size: int) -> torch.Tensor:
        """Integer states (P, H, W) coloured by palette (n, 3), nearest-resized to (P, size, size, 3) (torch on
        every engine: two index_selects beat a Taichi kernel per pixel 10-20x on a CPU)."""
        from workbench.kernels import torch_ca

        return torch_ca.render_states(states, palette, size)

    def _render_channels(self, world: torch.Tensor, size: int) -> torch.Tensor:
        """(P, H, W, C ≤ 3) as RGB (missing channels 0), nearest-resized to (P, size, size, 3)."""
        from workbench.kernels import torch_ca

        return torch_ca.render_channels(world, size)


class GameOfLife(GridSubstrate):
    """Life-like cellular automata on a torus (64×64 by default: `grid`); θ = [rule]."""

    name = "gol"
    n_params = 1

    def __init__(self, grid: int = 64, device: str | torch.device | None = None, engine: str | None = None):
        super().__init__(device, engine)
        self.grid = check_positive("grid", grid)
        if self.grid < 3:
            raise ValueError(f"grid must be at least 3 cells, got {grid}")
        self.param_shapes = {"rule": ()}
        self.state_shapes = {"state": (self.grid, self.grid)}
        self.state_dtypes = {"state": torch.int32}
        self._grey = torch.tensor([[0.0] * 3, [1.0] * 3], device=self.device)

    @staticmethod
    def check_rules(rules: np.ndarray, what: str = "θ") -> np.ndarray:
        """Rules as int64, or one ValueError: each must be a whole number in [0, 2^18)."""
        rules = np.asarray(rules)
        if rules.dtype.kind not in "iuf" or (rules.dtype.kind == "f" and not np.all(np.isfinite(rules))):
            raise ValueError(f"gol: {what} must be whole numbers in [0, 2^18) (an 18-bit life-like rule), "
                             f"got {rules.dtype} values {rules.ravel()[:4].tolist()}")
        if np.any(rules != np.round(rules)) or np.any(rules < 0) or np.any(rules >= N_RULES):
            bad = rules[(rules != np.round(rules)) | (rules < 0) | (rules >= N_RULES)].ravel()[0].item()
            raise ValueError(f"gol: a rule must be a whole number in [0, 2^18) = [0, {N_RULES}), got {bad!r} "
                             f"(Conway's B3/S23 is {CONWAY})")
        return rules.astype(np.int64)

    def decode(self, theta: Any) -> dict[str, np.ndarray]:
        """θ = [rule] (1,) or (P, 1) -> {"rule": int64 () or (P,)}."""
        theta = np.asarray(theta)
        if theta.ndim not in (1, 2) or theta.shape[-1] != 1:
            raise ValueError(f"gol: expected θ = [rule] of shape (1,) or (P, 1), got shape {theta.shape}")
        if theta.ndim == 2 and theta.shape[0] == 0:
            raise ValueError(f"gol: θ of shape {theta.shape} holds no simulation; give at least one row")
        return {"rule": self.check_rules(theta[..., 0])}

    def _decode(self, theta):  # decode is overridden: θ is an integer rule, not a float vector
        raise NotImplementedError

    def random_theta(self, rng: np.random.Generator, population: int | None = None) -> np.ndarray:
        """Rules drawn uniformly from [0, 2^18) (the reference's default_params)."""
        shape = (1,) if population is None else (population, 1)
        return rng.integers(0, N_RULES, shape)

    def _params_batch(self, params, population=None):
        out, batched = super()._params_batch(params, population)
        self.check_rules(out["rule"].cpu().numpy(), "parameter 'rule'")
        return out, batched

    def _init(self, params, seeds):
        grids = []
        for seed in seeds:
            rng = np.random.default_rng(seed)
            sparsity = rng.uniform(0.05, 0.4)  # once per state
            grids.append(np.floor(rng.random((self.grid, self.grid)) + sparsity))
        state = torch.as_tensor(np.stack(grids), dtype=torch.int32, device=self.device)
        return self._with_key({"state": state}, seeds)

    def _step(self, arrays, params, steps, noise=None):
        rule = params["rule"].to(torch.int32).contiguous()
        if self.engine == "torch":
            from workbench.kernels import torch_ca

            return {**arrays, "state": torch_ca.gol_steps(arrays["state"], rule, steps)}
        from workbench.kernels import gol as kg

        ensure_taichi(self.device)
        a = arrays["state"].contiguous()
        P = a.shape[0]
        if self.grid % 64 == 0:  # 64 cells a machine word: the bit-parallel kernel
            words = [torch.empty(P, self.grid, self.grid // 64, dtype=torch.uint64, device=a.device)
                     for _ in range(2)]
            kg.packed_steps(a, *words, rule, steps)
            return {**arrays, "state": a}
        b = torch.empty_like(a)
        kg.steps(a, b, rule, steps)
        return {**arrays, "state": b if steps % 2 else a}

    def _render(self, arrays, params, size):
        return self._render_states(arrays["state"], self._grey, size)
