"""What every substrate shares: the State container, input checks and the public call shapes.

A substrate is state + params + a pure step (CAX style); rendering is separate. Every public call
takes either one simulation or a population with a leading axis P; internally everything is
batched, and results come back without the axis when none was given.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from workbench.kernels.device import resolve_device

ENGINES = ("taichi", "triton")


@dataclass(frozen=True)
class State:
    """A simulation state: named tensors with a leading population axis, on the compute device.

    ``batched`` records whether the caller works with a population axis; ``population`` is P.
    """

    substrate: str
    arrays: dict[str, torch.Tensor]
    batched: bool

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.arrays[name]

    @property
    def population(self) -> int:
        """P, the simulations the state holds (the length of its arrays' leading axis)."""
        return next(iter(self.arrays.values())).shape[0]


Params = Mapping[str, Any]


class DeviceParams(dict):
    """Parameters already checked and moved to one substrate's device (Substrate.to_device). Calls take them
    as they are: no checks, no copies — so a GPU rollout never waits on a host-to-device copy per call."""

    def __init__(self, owner: Substrate, arrays: dict[str, torch.Tensor], batched: bool):
        super().__init__(arrays)
        self.owner, self.batched = owner, batched


def check_positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class Deterministic:
    """Mixin (before Substrate in the bases) for the deterministic substrates with float states: Particle Lenia,
    Particle Life+ and Flow-Lenia. `step` takes the `noise` argument of the stochastic ones and refuses anything
    but None; a state given as arrays must hold real numbers (a bool, complex or text array is a mistake)."""

    name: str

    def step(self, state: State, params: Params, steps: int = 1, noise=None) -> State:
        """Advance by `steps` steps; deterministic, so `noise` must be None."""
        if noise is not None:
            raise ValueError(f"{self.name} is deterministic and takes no noise; call step(state, params, steps) "
                             f"with noise=None")
        return super().step(state, params, steps)

    def state_from_arrays(self, **arrays: Any) -> State:
        for key, arr in arrays.items():
            kind = np.asarray(arr).dtype.kind
            if kind not in "fiu":
                raise ValueError(f"{self.name}: state array {key!r} must hold real numbers (float32), got dtype "
                                 f"{np.asarray(arr).dtype}")
        return super().state_from_arrays(**arrays)


def seeds_for(seed: int | Sequence[int], population: int) -> list[int]:
    """One seed per simulation: an int is shared by the whole population (as in ASAL, where the
    population of one iteration starts from the same initial state), a sequence gives one each."""
    def whole(s) -> int:  # NumPy's seeds: 0 ≤ seed < 2³² (its own error never named the seed)
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= s < 2 ** 32:
            raise ValueError(f"seed must be a whole number from 0 to 4294967295 (NumPy's seeds), or one per "
                             f"simulation, got {s!r}")
        return int(s)

    if isinstance(seed, (str, bytes)) or not hasattr(seed, "__iter__") or getattr(seed, "ndim", 1) == 0:
        return [whole(seed)] * population
    seeds = [whole(s.item() if hasattr(s, "item") else s) for s in seed]  # a list, an array, a tensor
    if len(seeds) != population:
        raise ValueError(f"got {len(seeds)} seeds for a population of {population}; give one int or {population}")
    return seeds


def with_population_axis(arr, shape: tuple[int, ...], what: str, batched: bool | None):
    """arr with a leading population axis added when it has exactly `shape`, and whether it had one.

    `batched` is what earlier arrays of the same call said; a mix of the two is an error.
    """
    if tuple(arr.shape) == shape:
        is_batched, arr = False, arr[None]
    elif arr.ndim == len(shape) + 1 and tuple(arr.shape[1:]) == shape:
        is_batched = True
    else:
        raise ValueError(f"{what} must have shape {shape} or (P, *{shape}), got {tuple(arr.shape)}")
    if batched is not None and is_batched != batched:
        raise ValueError(f"{what}: mix of arrays with and without the population axis")
    return arr, is_batched


class Substrate(ABC):
    """Base class: subclasses give the shapes and the batched implementations (names with _)."""

    name: str
    n_params: int
    param_shapes: dict[str, tuple[int, ...]]
    state_shapes: dict[str, tuple[int, ...]]
    state_dtypes: dict[str, torch.dtype]
    #: whether the initial state depends on the seed (False: Lenia and Flow-Lenia start from the parameters' own
    #: pattern, as the reference's do, so every seed gives the same rollout)
    seeded_init: bool = True

    def __init__(self, device: str | torch.device | None = None, engine: str | None = None) -> None:
        """device: where the state lives (default: the GPU when present, else the CPU). engine: "taichi" (the
        CPU default) or "triton" (the CUDA default; on the CPU only under Triton's interpreter, for tests). The
        cellular automata (gol, the NCAs) take "taichi" or "torch" instead: their own __init__ says so."""
        self.device = resolve_device(device)
        if engine is None:
            engine = "triton" if self.device.type == "cuda" else "taichi"
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        if engine == "triton":
            from workbench.kernels.triton_support import check_engine

            check_engine(self.device)
        self.engine = engine

    # --- search vector -> parameters --------------------------------------------------------

    def decode(self, theta: Any) -> dict[str, np.ndarray]:
        """Flat search vector θ (n_params,) or (P, n_params) -> named physical parameters."""
        raw = np.asarray(theta)
        if raw.dtype.kind not in "biuf":  # text, objects (None), complex: numpy's own errors or a silent cut
            raise ValueError(f"{self.name}: θ must hold real numbers, got {raw.dtype} values (e.g. "
                             f"{raw.flat[0]!r})" if raw.size else f"{self.name}: θ must hold real numbers")
        theta = raw.astype(np.float64)
        batched = theta.ndim == 2
        if theta.ndim not in (1, 2) or theta.shape[-1] != self.n_params:
            raise ValueError(f"{self.name}: expected θ of shape ({self.n_params},) or (P, {self.n_params}), "
                             f"got shape {theta.shape}")
        if batched and theta.shape[0] == 0:
            raise ValueError(f"{self.name}: θ of shape {theta.shape} holds no simulation; give at least one row")
        if not np.all(np.isfinite(theta)):
            raise ValueError(f"{self.name}: θ contains NaN or inf; every entry must be finite")
        # a finite θ always decodes to finite parameters: one past float32's range (Particle Lenia's base·e^θ from
        # θ ≈ 89) is saturated to the largest float32, not cast to inf, which the parameters' check refused: one
        # extreme candidate failed a whole search. The simulation it gives diverges and is scored as diverged
        # (workbench.asal.evaluate). Numbers inside the range are cast as before, bit for bit.
        with np.errstate(over="ignore"):
            params = self._decode(theta.reshape(-1, self.n_params))
        top = float(np.finfo(np.float32).max)
        params = {k: np.clip(v, -top, top).astype(np.float32) for k, v in params.items()}
        return params if batched else {k: v[0] for k, v in params.items()}

    def theta_with(self, theta: Any, name: str, value: Any) -> np.ndarray:
        """θ changed so that decode gives parameter `name` the numbers `value` (its shape): only the entries of θ
        behind the numbers that differ from what θ decodes to now change, so a θ edited one number at a time (the
        Lab's tables) is the θ that plays and saves. ValueError for a value θ cannot reach (its range named), and
        for substrates whose parameters are not θ's one by one (networks: their weights are θ)."""
        raise ValueError(f"{self.name}: θ is not set parameter by parameter; edit θ itself")

    def _edit_checked(self, theta: Any, name: str, value: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For theta_with: θ as a float64 copy, the parameter's numbers it decodes to now, and `value`, checked
        (θ's size and numbers, the parameter's name, value's shape and finiteness)."""
        old = self.decode(theta)
        if name not in old:
            raise ValueError(f"{self.name} has no parameter {name!r}; it has {', '.join(old)}")
        value = np.asarray(value, np.float64)
        if value.shape != old[name].shape or not np.all(np.isfinite(value)):
            raise ValueError(f"{name} takes {old[name].shape} finite numbers, got {value.shape}")
        return np.array(theta, np.float64).reshape(self.n_params), np.asarray(old[name]), value

    def zero_theta(self) -> np.ndarray:
        """θ = 0: n_params zeros (float32)."""
        return np.zeros(self.n_params, dtype=np.float32)

    @abstractmethod
    def _decode(self, theta: np.ndarray) -> dict[str, np.ndarray]: ...

    # --- parameters as batched tensors ------------------------------------------------------

    def to_device(self, params: Params) -> DeviceParams:
        """The parameters checked once and moved to this substrate's device, for many calls in a row
        (init, step and render take them without checking or copying them again)."""
        if isinstance(params, DeviceParams) and params.owner is self:
            return params
        out, batched = self._params_batch(params)
        return DeviceParams(self, out, batched)

    def _params_batch(self, params: Params, population: int | None = None) -> tuple[dict[str, torch.Tensor], bool]:
        """Check a parameter dict and return it as float32 tensors with a population axis."""
        if isinstance(params, DeviceParams) and params.owner is self:
            p = next(iter(params.values())).shape[0]
            if population is None or p == population:
                return dict(params), params.batched
            if p != 1:
                raise ValueError(f"{self.name}: parameters for {p} simulations but the state holds {population}")
            return {k: v.expand(population, *v.shape[1:]).contiguous() for k, v in params.items()}, params.batched
        missing = set(self.param_shapes) - set(params)
        if missing:
            raise ValueError(f"{self.name}: parameters {sorted(missing)} missing; expected {sorted(self.param_shapes)} "
                             f"(sub.decode(theta) makes them)")
        unknown = set(params) - set(self.param_shapes)
        if unknown:  # a misspelt key edited in a notebook ({**p, "mu_K": 5}) would change nothing, silently
            raise ValueError(f"{self.name}: no parameters {sorted(unknown)}; its parameters are "
                             f"{sorted(self.param_shapes)}")
        out: dict[str, torch.Tensor] = {}
        batched = None
        for key, shape in self.param_shapes.items():
            # a copy: parameters checked once (to_device) must not follow later edits of the caller's array, and
            # torch warns of a read-only one (the Lab's) it would share
            arr = torch.as_tensor(np.array(params[key], dtype=np.float32) if not torch.is_tensor(params[key])
                                  else params[key].to(torch.float32, copy=True))
            arr, batched = with_population_axis(arr, shape, f"{self.name}: parameter {key!r}", batched)
            if not torch.isfinite(arr).all():
                raise ValueError(f"{self.name}: parameter {key!r} contains NaN or inf")
            out[key] = arr
        sizes = {v.shape[0] for v in out.values()}
        if len(sizes) != 1:
            raise ValueError(f"{self.name}: parameters disagree on the population size: {sorted(sizes)}")
        p = sizes.pop()
        if population is not None and p != population:
            if p != 1:
                raise ValueError(f"{self.name}: parameters for {p} simulations but the state holds {population}")
            out = {k: v.expand(population, *v.shape[1:]) for k, v in out.items()}
        out = {k: v.contiguous().to(self.device) for k, v in out.items()}
        return out, bool(batched)

    # --- state ------------------------------------------------------------------------------

    def init(self, params: Params, seed: int | Sequence[int] = 0) -> State:
        """The reference initial state for these parameters (one per simulation of a population): seed is one
        whole number for all, or one per simulation. A substrate whose `seeded_init` is False ignores it."""
        p, batched = self._params_batch(params)
        return State(self.name, self._init(p, seeds_for(seed, next(iter(p.values())).shape[0])), batched)

    def step(self, state: State, params: Params, steps: int = 1) -> State:
        """Advance by `steps` steps; the given state is left as it was."""
        steps = check_positive("steps", steps)
        self._check_state(state)
        p, _ = self._params_batch(params, state.population)
        arrays = {k: v.clone() for k, v in state.arrays.items()}
        with self._memory_errors(state.population):
            return State(self.name, self._step(arrays, p, steps), state.batched)

    def bytes_per_simulation(self) -> int:
        """Working memory one simulation of a step needs on the device (0: not estimated)."""
        return 0

    @contextlib.contextmanager
    def _memory_errors(self, population: int):
        """Out of GPU memory becomes one error that says how many simulations fit, not a crash. (The GPU engines
        check the estimate before they allocate a population's buffers: kernels.device.fits_in_memory.)"""
        try:
            yield
        except torch.cuda.OutOfMemoryError as exc:
            torch.cuda.empty_cache()
            per = max(1, self.bytes_per_simulation())
            free, _ = torch.cuda.mem_get_info(self.device)
            raise ValueError(f"{self.name}: out of GPU memory for a population of {population} on {self.device} "
                             f"({free / 2**30:.1f} GiB free now, about {per / 2**20:.1f} MiB a simulation: at most "
                             f"about {int(0.9 * free // per)} fit); evaluate fewer at a time (--chunk N, or a "
                             f"smaller --pop)") from exc

    def render(self, state: State, params: Params, size: int = 224,
               as_tensor: bool = False) -> np.ndarray | torch.Tensor:
        """float32 RGB frame(s) in [0, 1]: (size, size, 3), or (P, size, size, 3) for a population.

        NumPy arrays by default; as_tensor=True returns the torch tensor on the substrate's device (a GPU
        frame goes on to a foundation model without a copy to the host)."""
        size = check_positive("size", size)
        if size < 2:
            raise ValueError(f"size must be at least 2 pixels, got {size}")
        self._check_state(state)
        p, _ = self._params_batch(params, state.population)
        img = self._render(state.arrays, p, size)
        if not as_tensor:
            img = img.cpu().numpy()
        return img if state.batched else img[0]

    def state_to_arrays(self, state: State) -> dict[str, np.ndarray]:
        """The state's arrays by name as NumPy copies on the CPU (no population axis for an unbatched state);
        state_from_arrays reads them back."""
        self._check_state(state)
        arrays = {k: v.cpu().numpy().copy() for k, v in state.arrays.items()}
        return arrays if state.batched else {k: v[0] for k, v in arrays.items()}

    def state_from_arrays(self, **arrays: Any) -> State:
        """Inverse of state_to_arrays; checks names, shapes and values."""
        if set(arrays) != set(self.state_shapes):
            raise ValueError(f"{self.name}: state arrays must be exactly {sorted(self.state_shapes)}, "
                             f"got {sorted(arrays)}")
        out: dict[str, torch.Tensor] = {}
        batched = None
        for key, shape in self.state_shapes.items():
            arr, batched = with_population_axis(np.asarray(arrays[key]), shape,
                                                f"{self.name}: state array {key!r}", batched)
            dtype = self.state_dtypes[key]
            if dtype.is_floating_point and not np.all(np.isfinite(arr)):
                raise ValueError(f"{self.name}: state array {key!r} contains NaN or inf")
            if not dtype.is_floating_point and not np.issubdtype(arr.dtype, np.integer):
                raise ValueError(f"{self.name}: state array {key!r} must hold integers, got {arr.dtype}")
            out[key] = torch.as_tensor(np.ascontiguousarray(arr)).to(self.device, dtype)
        if len({v.shape[0] for v in out.values()}) != 1:
            raise ValueError(f"{self.name}: state arrays disagree on the population size")
        self._validate_state(out)
        return State(self.name, out, bool(batched))

    def _check_state(self, state: State) -> None:
        if not isinstance(state, State) or state.substrate != self.name:
            got = state.substrate if isinstance(state, State) else type(state).__name__
            raise ValueError(f"expected a {self.name} State (from init or state_from_arrays), got {got}")

    def _validate_state(self, arrays: dict[str, torch.Tensor]) -> None:  # noqa: B027 - optional hook
        """Substrate-specific value checks for state_from_arrays (ranges, categories); none by default."""

    @abstractmethod
    def _init(self, params: dict[str, torch.Tensor], seeds: list[int]) -> dict[str, torch.Tensor]: ...

    @abstractmethod
    def _step(self, arrays: dict[str, torch.Tensor], params: dict[str, torch.Tensor],
              steps: int) -> dict[str, torch.Tensor]: ...

    @abstractmethod
    def _render(self, arrays: dict[str, torch.Tensor], params: dict[str, torch.Tensor],
                size: int) -> torch.Tensor: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_params={self.n_params}, device={str(self.device)!r}, engine={self.engine!r})"
