"""Rollouts with the reference's time sampling, keeping only the sampled states in memory.

State index t means "t steps after init" (for Lenia, init already performed one step).
  "final":           index T
  "video":           indices 0, 1, …, T − 1
  (K, chunk_ends):   with c = T // K: c − 1, 2c − 1, …, T − 1 when chunk_ends, else 0, c, …, T − c
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from workbench.simulations.base import Params, Substrate, check_positive

Sampling = str | tuple[int, bool]


def sample_indices(steps: int, sampling: Sampling) -> list[int]:
    """The state indices that a rollout of `steps` steps renders."""
    steps = check_positive("steps", steps)
    if sampling == "final":
        return [steps]
    if sampling == "video":
        return list(range(steps))
    if isinstance(sampling, (tuple, list)) and len(sampling) == 2:
        K, chunk_ends = sampling
        if not isinstance(chunk_ends, (bool, np.bool_)):  # "no" would read as True
            raise ValueError(f"sampling=(K, chunk_ends): chunk_ends must be True or False, got {chunk_ends!r}")
        K = check_positive("K (frames)", K)
        if K > steps:
            raise ValueError(f"cannot sample K={K} frames from {steps} steps; K must be at most steps")
        c = steps // K
        first = c - 1 if chunk_ends else 0
        return [first + i * c for i in range(K)]
    raise ValueError(f"sampling must be 'final', 'video' or (K, chunk_ends), got {sampling!r}")


def rollout(sub: Substrate, params: Params, steps: int, sampling: Sampling = "final", size: int = 224,
            seed: int | Sequence[int] = 0, return_states: bool = False, as_tensor: bool = False,
            ) -> np.ndarray | torch.Tensor | tuple[np.ndarray | torch.Tensor, dict[str, np.ndarray]]:
    """Run a simulation (or a population) and render the sampled states.

        sub = make_substrate("lenia")
        frames = rollout(sub, sub.decode(theta), steps=256, sampling=(4, True))   # (4, 224, 224, 3) float32

    Args:
        sub: the substrate (make_substrate).
        params: its parameters, sub.decode(θ): one set, or a population (P, …) run as one batch.
        steps: T, the steps after init.
        sampling: which states are rendered: "final" (state T), "video" (0 … T − 1) or (K, chunk_ends) (the
            module doc).
        size: the frames' side in pixels.
        seed: the initial state's seed, or one per member of a population.
        return_states: also return the sampled states.
        as_tensor: the frames as one torch tensor on the substrate's device (GPU frames go on to a foundation
            model without a copy to the host).

    Returns:
        frames of shape (K, size, size, 3), or (P, K, size, size, 3) for a population; with return_states, a
        tuple (frames, states) where states maps each state array's name to the sampled arrays stacked on the
        same K axis.

    Raises:
        ValueError: a sampling, steps or size that cannot be (K frames from fewer steps, …).
    """
    indices = sample_indices(steps, sampling)
    size = check_positive("size", size)
    params = sub.to_device(params)
    state = sub.init(params, seed=seed)
    frames, states = [], []
    at = 0
    for index in indices:
        if index > at:
            state = sub.step(state, params, steps=index - at)
            at = index
        frames.append(sub.render(state, params, size=size, as_tensor=as_tensor))
        if return_states:
            states.append(sub.state_to_arrays(state))
    axis = 1 if state.batched else 0
    frames_arr = torch.stack(frames, dim=axis) if as_tensor else np.stack(frames, axis=axis)
    if not return_states:
        return frames_arr
    return frames_arr, {k: np.stack([s[k] for s in states], axis=axis) for k in states[0]}
