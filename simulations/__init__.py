"""ASAL substrates on Taichi kernels: Lenia, Boids, Particle Life, Game of Life, NCA (d = 1, 3), discrete NCA,
Particle Lenia, Particle Life+ and Flow-Lenia.

    from workbench.simulations import make_substrate, rollout
    sub = make_substrate("lenia")
    params = sub.decode(theta)
    state = sub.init(params, seed=0)
    state = sub.step(state, params, steps=n)
    frame = sub.render(state, params, size=224)

Installed as ``workbench.simulations``.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from workbench.simulations.base import DeviceParams, State, Substrate
from workbench.simulations.boids import Boids
from workbench.simulations.dnca import DiscreteNCA
from workbench.simulations.flow_lenia import FlowLenia
from workbench.simulations.gol import GameOfLife, rule_text
from workbench.simulations.lenia import Lenia
from workbench.simulations.nca import NCA1, NCA3
from workbench.simulations.plenia import ParticleLenia
from workbench.simulations.plife import ParticleLife
from workbench.simulations.plife_plus import ParticleLifePlus
from workbench.simulations.rollout import rollout, sample_indices

if TYPE_CHECKING:
    import numpy as np

SUBSTRATES: dict[str, type[Substrate]] = {
    "lenia": Lenia, "boids": Boids, "plife": ParticleLife,  # the first three (asal.md)
    "gol": GameOfLife, "nca_d1": NCA1, "nca_d3": NCA3, "dnca": DiscreteNCA,  # asal-more.md §1-3
    "plenia": ParticleLenia, "plife_plus": ParticleLifePlus, "flow_lenia": FlowLenia,  # §4-6
}


def make_substrate(name: str, **overrides: Any) -> Substrate:
    """A substrate with the reference defaults; keyword overrides change them (grid, N, dt, …).

    name is one of SUBSTRATES: lenia, boids, plife, gol, nca_d1, nca_d3, dnca, plenia, plife_plus, flow_lenia.

    device= picks where it runs (default: the GPU when present, else the CPU); engine= picks the kernels:
    "taichi" (the CPU default), "triton" (the CUDA default of lenia, boids, plife, plenia, plife_plus and
    flow_lenia) or "torch" (the CUDA default of gol, nca_d1, nca_d3 and dnca); each substrate refuses the third.
    Each substrate's settings and their defaults: help(SUBSTRATES[name]) (e.g. Boids: N, visual_range, speed, dt).

    Raises:
        ValueError: an unknown substrate or setting, or a setting of the wrong type (see `check_substrate`).
    """
    check_substrate(name, **overrides)
    return SUBSTRATES[name](**overrides)


def check_substrate(name: str, **overrides: Any) -> None:
    """One ValueError naming the fix for an unknown substrate name, a setting it does not have, or a number
    given as something else, without building anything (make_substrate checks the same)."""
    if not isinstance(name, str) or name not in SUBSTRATES:
        raise ValueError(f"unknown substrate {name!r}; choose one of {', '.join(SUBSTRATES)}")
    cls = SUBSTRATES[name]
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    settings = [p for p in allowed if p not in ("device", "engine")]
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise ValueError(f"{name} has no setting {', '.join(unknown)}; its settings are {', '.join(settings)} "
                         f"(and device=, engine=)")
    defaults = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()}
    for key, value in overrides.items():  # "0.1" for a number failed inside the substrate, naming nothing
        numeric = isinstance(defaults[key], (int, float)) and not isinstance(defaults[key], bool)
        if numeric and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
            raise ValueError(f"{name}: {key} must be a number, got {value!r}")


def random_init_of(substrate: Substrate | str) -> Callable[..., np.ndarray] | None:
    """What draws a substrate's random initialisation θ, called (rng, population=None) -> θ: the networks' flax
    initialisation (NCA, discrete NCA, Particle Life+), else its random_theta (Particle Lenia: N(0, I); Game of Life:
    a uniform rule); None when it has neither. A substrate (bound) or a name (unbound: for whether it has one)."""
    owner = SUBSTRATES.get(substrate) if isinstance(substrate, str) else substrate
    return getattr(owner, "flax_init_theta", None) or getattr(owner, "random_theta", None)


__all__ = ["SUBSTRATES", "DeviceParams", "State", "Substrate", "check_substrate", "make_substrate", "random_init_of",
           "rollout", "rule_text", "sample_indices",
           "Lenia", "Boids", "ParticleLife", "GameOfLife", "NCA1", "NCA3", "DiscreteNCA", "ParticleLenia",
           "ParticleLifePlus", "FlowLenia"]
