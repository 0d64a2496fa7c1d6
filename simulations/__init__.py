"""ASAL substrates: Lenia, Boids and Particle Life on Taichi kernels.

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
from typing import Any

from workbench.simulations.base import DeviceParams, State, Substrate
from workbench.simulations.boids import Boids
from workbench.simulations.lenia import Lenia
from workbench.simulations.plife import ParticleLife
from workbench.simulations.rollout import rollout, sample_indices

SUBSTRATES: dict[str, type[Substrate]] = {"lenia": Lenia, "boids": Boids, "plife": ParticleLife}


def make_substrate(name: str, **overrides: Any) -> Substrate:
    """A substrate with the reference defaults; keyword overrides change them (grid, N, dt, …).

    device= picks where it runs (default: the GPU when present, else the CPU); engine= "taichi" | "triton"
    picks the kernels (default: Triton on CUDA, Taichi on the CPU)."""
    if name not in SUBSTRATES:
        raise ValueError(f"unknown substrate {name!r}; choose one of {', '.join(SUBSTRATES)}")
    cls = SUBSTRATES[name]
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    settings = [p for p in allowed if p not in ("device", "engine")]
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise ValueError(f"{name} has no setting {', '.join(unknown)}; its settings are {', '.join(settings)} "
                         f"(and device=, engine=)")
    return cls(**overrides)


__all__ = ["SUBSTRATES", "DeviceParams", "State", "Substrate", "make_substrate", "rollout", "sample_indices",
           "Lenia", "Boids", "ParticleLife"]
