"""Plain NumPy versions of the grid substrates (Game of Life, NCA, discrete NCA), written from asal-more.md §1–3.

Slow and obvious on purpose: the tests compare the Taichi kernels against these, step by step, with the same
drop masks and Gumbel noise injected into both. `golden_more()` loads one step of each further substrate computed
by the reference implementations, `golden_step()` unpacks one for a substrate (the tests and `bench gpu`).
"""

from __future__ import annotations

from importlib import resources
from typing import Any, NamedTuple

import numpy as np

NCA_DT = 0.01  # the reference's constructor takes dt = 0.1 and ignores it (asal-more.md §2)
DNCA_TAU = 1e-3
DNCA_PALETTE = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 1, 1],
                         [143 / 255, 93 / 255, 0]], dtype=np.float32)


def golden_more() -> dict[str, np.ndarray]:
    """One step of each further substrate from the reference implementations (asal_more_step1_reference.npz)."""
    with resources.files("workbench.data").joinpath("asal_more_step1_reference.npz").open("rb") as f:
        return dict(np.load(f))


#: each further substrate's state arrays in golden_more(): NAME_KEY0 before the step, NAME_KEY1 after it
GOLDEN_STATES = {"gol": ("state",), "nca_d1": ("state",), "nca_d3": ("state",), "dnca": ("state",),
                 "plenia": ("x",), "plife_plus": ("x", "v", "c"), "flow_lenia": ("world",)}


class GoldenStep(NamedTuple):
    """One reference step of a further substrate, ready for `sub.step(state, params, 1, noise=noise)`."""

    params: dict
    state: Any                   # the substrate's state before the step (its state_from_arrays)
    noise: np.ndarray | None     # the step's injected noise: NCA's update mask, the discrete NCA's Gumbel noise
    after: dict[str, np.ndarray]  # the reference's arrays after the step, by state key


def golden_step(name: str, sub, more: dict[str, np.ndarray] | None = None) -> GoldenStep:
    """The golden step of further substrate `name` (GOLDEN_STATES) on substrate `sub` (any engine or device), from
    `more` (default: golden_more()): the tests and `workbench bench gpu` read it alike."""
    more = golden_more() if more is None else more
    keys = GOLDEN_STATES[name]
    params = sub.decode([more["gol_rule"]]) if name == "gol" else sub.decode(more[f"{name}_theta"])
    noise = more["dnca_gumbel0"][None] if name == "dnca" else more[f"{name}_mask0"][None] \
        if name.startswith("nca") else None
    state = sub.state_from_arrays(**{k: more[f"{name}_{k}0"] for k in keys})
    return GoldenStep(params, state, noise, {k: more[f"{name}_{k}1"] for k in keys})


def nearest_resize(img: np.ndarray, size: int) -> np.ndarray:
    """jax.image.resize(method="nearest") of a square (m, m, C) image: pixel i takes source ⌊(2i + 1)·m / (2n)⌋."""
    m = img.shape[0]
    src = (2 * np.arange(size) + 1) * m // (2 * size)
    return img[src][:, src]


# --- Game of Life -------------------------------------------------------------------------------

def gol_step(s: np.ndarray, rule: int) -> np.ndarray:
    """s' = bit (9·s + n) of the rule, n = live Moore neighbours on the torus."""
    n = sum(np.roll(s, (dy, dx), axis=(0, 1)) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0))
    return ((int(rule) >> (9 * s + n)) & 1).astype(s.dtype)


def gol_render(s: np.ndarray, size: int = 224) -> np.ndarray:
    return nearest_resize(np.repeat(s[..., None].astype(np.float32), 3, axis=-1), size)


# --- continuous NCA ------------------------------------------------------------------------------

def nca_params(theta: np.ndarray, d: int) -> dict[str, np.ndarray]:
    """θ = [b0 (4), K0 (3·3·(d+2)·4), b1 (16), K1 (4·16), b2 (d), K2 (16·d)] -> named pieces."""
    shapes = [("b0", (4,)), ("K0", (3, 3, d + 2, 4)), ("b1", (16,)), ("K1", (4, 16)), ("b2", (d,)), ("K2", (16, d))]
    out, at = {}, 0
    for name, shape in shapes:
        size = int(np.prod(shape))
        out[name] = np.asarray(theta[at:at + size]).reshape(shape)
        at += size
    assert at == len(theta)
    return out


def nca_delta(S: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    """The network output ΔS (H, W, d): wrap-pad every axis (the channel axis too), 3×3 conv, 1×1, ReLU, 1×1."""
    H, W, _ = S.shape
    P = np.pad(S.astype(np.float64), 1, mode="wrap")  # (H + 2, W + 2, d + 2)
    h1 = np.broadcast_to(p["b0"].astype(np.float64), (H, W, 4)).copy()
    for i in range(3):
        for j in range(3):
            h1 += P[i:i + H, j:j + W] @ p["K0"][i, j].astype(np.float64)
    h2 = np.maximum(h1 @ p["K1"] + p["b1"], 0.0)
    return h2 @ p["K2"] + p["b2"]


def nca_step(S: np.ndarray, p: dict[str, np.ndarray], mask: np.ndarray, dt: float = NCA_DT) -> np.ndarray:
    """S' = clip(S + dt·M·ΔS, 0, 1) with the drop mask M (H, W) broadcast over channels."""
    return np.clip(S + dt * mask[..., None] * nca_delta(S, p), 0.0, 1.0).astype(np.float32)


def nca_render(S: np.ndarray, size: int = 224) -> np.ndarray:
    rgb = S if S.shape[-1] == 3 else np.concatenate([S, np.zeros(S.shape[:2] + (2,), S.dtype)], axis=-1)
    return nearest_resize(rgb.astype(np.float32), size)


# --- discrete NCA -------------------------------------------------------------------------------

def dnca_params(theta: np.ndarray) -> dict[str, np.ndarray]:
    """θ = [init logits (8), the NCA network for d = 8 (580)]."""
    return {"init": np.asarray(theta[:8]), **nca_params(theta[8:], 8)}


def dnca_logits(k: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    """Logits L (H, W, 8): the NCA network on the one-hot state k (H, W, 1)."""
    onehot = (k[..., 0, None] == np.arange(8)).astype(np.float64)
    return nca_delta(onehot, p)


def dnca_step(k: np.ndarray, p: dict[str, np.ndarray], gumbel: np.ndarray, tau: float = DNCA_TAU,
              identity_bias: float = 0.0) -> np.ndarray:
    """s' = argmax_k ((L_k + b·1[k = s])/τ + g_k) (ties: lowest k), in float32 as the reference."""
    L = dnca_logits(k, p).astype(np.float32)
    L = L + np.float32(identity_bias) * (k[..., 0, None] == np.arange(8))
    score = L / np.float32(tau) + gumbel[:, :, 0].astype(np.float32)
    return np.argmax(score, axis=-1)[..., None].astype(k.dtype)


def dnca_render(k: np.ndarray, size: int = 224) -> np.ndarray:
    return nearest_resize(DNCA_PALETTE[k[..., 0]], size)
