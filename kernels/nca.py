"""Continuous and discrete NCA steps in Taichi, one fused pass per step (asal-more.md §2–3).

Every cell runs the whole network (3×3 conv → 4, 1×1 → 16 with ReLU, 1×1 → d) in registers; nothing of the hidden
layers touches memory. Two rewrites of the reference's arithmetic that give the same function:
  - the wrap pad on the channel axis only repeats channels, so the first layer's kernel is folded onto the d real
    channels once per call (weights summed where padded channels are copies of one channel);
  - the discrete NCA's input is one-hot, so its first layer is a lookup of the folded kernel at each neighbour's
    state (9 lookups of 4 numbers instead of a 3×3×10×4 convolution).
The continuous NCA skips the network where the drop mask is 0 (half the cells). Parameters come packed per
simulation in one flat row (see `pack`), so each weight is one load at a constant offset.

Noise is either given (masks, Gumbel draws) or drawn in the kernel from a counter-based hash of (key, cell): the
same key gives the same draw on any number of threads, and a new key per step comes from the host.
"""

import taichi as ti

from workbench.kernels.runtime import ROW_STRIDE, kernel, row_bands

HIDDEN = 4   # first layer outputs
WIDE = 16    # second layer outputs


def row_stride() -> int:
    """Loop stride of the row loops: ROW_STRIDE on the CPU (rows spread over the cores' chunks), 1 on a GPU."""
    return ROW_STRIDE if row_bands(1)[1] > 1 else 1


def layout(d: int) -> dict[str, int]:
    """Offsets of the packed parameters: K0 folded (3·3·d·4), b0 (4), K1 (4·16), b1 (16), K2 (16·d), b2 (d)."""
    out, at = {}, 0
    for name, size in (("K0", 9 * d * HIDDEN), ("b0", HIDDEN), ("K1", HIDDEN * WIDE), ("b1", WIDE),
                       ("K2", WIDE * d), ("b2", d)):
        out[name] = at
        at += size
    out["size"] = at
    return out


@ti.func
def _mix(x):
    """lowbias32 (C. Wellons): a 32-bit integer hash with full avalanche."""
    x ^= x >> 16
    x *= ti.u32(0x7FEB352D)
    x ^= x >> 15
    x *= ti.u32(0x846CA68B)
    x ^= x >> 16
    return x


@ti.func
def _uniform_bits(keys: ti.template(), p, cell):
    """32 random bits for (simulation p's key of this step, cell)."""
    ka = ti.cast(keys[p, 0], ti.u32)
    kb = ti.cast(keys[p, 1], ti.u32)
    return _mix(_mix(ti.cast(cell, ti.u32) + ka) ^ kb)


@ti.func
def _uniform(keys: ti.template(), p, cell):
    """A uniform number in [0, 1) on a 2^-24 grid for (simulation p's key of this step, cell)."""
    return ti.cast(_uniform_bits(keys, p, cell) >> 8, ti.f32) * (1.0 / 16777216.0)


@ti.func
def _ring(i, n):
    """(i − 1, i, i + 1) on a ring of n cells: the wrap-padded 3×3 neighbourhood's rows or columns."""
    lo, hi = i - 1, i + 1
    if lo < 0:
        lo = n - 1
    if hi == n:
        hi = 0
    return ti.Vector([lo, i, hi])


@ti.func
def _hidden(w: ti.template(), p, h, d: ti.template()):
    """The 1×1 → 16 (ReLU) → 1×1 → d tail of the network on the first layer's output h (4)."""
    o1, o2 = ti.static(layout(d)["K1"], layout(d)["b1"])
    o3, o4 = ti.static(layout(d)["K2"], layout(d)["b2"])
    h2 = ti.Vector([0.0] * WIDE)
    for q in ti.static(range(WIDE)):
        acc = w[p, o2 + q]
        for a in ti.static(range(HIDDEN)):
            acc += h[a] * w[p, o1 + a * WIDE + q]
        h2[q] = ti.max(acc, 0.0)
    out = ti.Vector([0.0] * d)
    for c in ti.static(range(d)):
        acc = w[p, o4 + c]
        for q in ti.static(range(WIDE)):
            acc += h2[q] * w[p, o3 + q * d + c]
        out[c] = acc
    return out


@kernel
def nca_step(s: ti.types.ndarray(dtype=ti.f32, ndim=4), out: ti.types.ndarray(dtype=ti.f32, ndim=4),
             w: ti.types.ndarray(dtype=ti.f32, ndim=2), mask: ti.types.ndarray(dtype=ti.u8, ndim=3),
             keys: ti.types.ndarray(dtype=ti.i32, ndim=2), drawn: ti.i32, keep: ti.f32, dt: ti.f32,
             stride: ti.i32, d: ti.template()):
    """out = clip(s + dt·M·ΔS, 0, 1) for worlds s (P, H, W, d). M is mask (P, H, W) when drawn is 0, else
    M = 1 − ⌊u + p_drop⌋ for a uniform u per cell: the cell updates when u < keep = 1 − p_drop."""
    P, H, W = s.shape[0], s.shape[1], s.shape[2]
    o0, ob = ti.static(layout(d)["K0"], layout(d)["b0"])
    for r in range(P * H * stride):
        if r % stride != 0:
            continue
        p, y = r // stride // H, r // stride % H
        rows = _ring(y, H)
        for x in range(W):
            update = 0
            if drawn != 0:
                update = ti.cast(_uniform(keys, p, y * W + x) < keep, ti.i32)
            else:
                update = ti.cast(mask[p, y, x], ti.i32)
            if update == 0:
                for c in ti.static(range(d)):
                    out[p, y, x, c] = s[p, y, x, c]
            else:
                cols = _ring(x, W)
                h = ti.Vector([w[p, ob + a] for a in ti.static(range(HIDDEN))])
                for i in ti.static(range(3)):
                    for j in ti.static(range(3)):
                        for c in ti.static(range(d)):
                            v = s[p, rows[i], cols[j], c]
                            for a in ti.static(range(HIDDEN)):
                                h[a] += w[p, o0 + ((i * 3 + j) * d + c) * HIDDEN + a] * v
                delta = _hidden(w, p, h, d)
                for c in ti.static(range(d)):
                    out[p, y, x, c] = ti.min(ti.max(s[p, y, x, c] + dt * delta[c], 0.0), 1.0)


@kernel
def dnca_step(k: ti.types.ndarray(dtype=ti.i32, ndim=3), out: ti.types.ndarray(dtype=ti.i32, ndim=3),
              w: ti.types.ndarray(dtype=ti.f32, ndim=2), gumbel: ti.types.ndarray(dtype=ti.f32, ndim=4),
              keys: ti.types.ndarray(dtype=ti.i32, ndim=2), drawn: ti.i32, tau: ti.f32, identity: ti.f32,
              stride: ti.i32):
    """out = argmax_k ((L_k + b·1[k = s])/τ + g_k) (ties: the lowest k) for states s = k (P, H, W) in 0..7, L the
    network's logits and b the identity bias (0 in the reference).

    g is gumbel (P, H, W, 8) when drawn is 0. Otherwise the same distribution is drawn with one uniform u per cell
    (the Gumbel-max trick in reverse): the category whose cumulative softmax(L/τ) weight first exceeds u.
    """
    P, H, W = k.shape[0], k.shape[1], k.shape[2]
    d = ti.static(8)
    o0, ob = ti.static(layout(d)["K0"], layout(d)["b0"])
    for r in range(P * H * stride):
        if r % stride != 0:
            continue
        p, y = r // stride // H, r // stride % H
        rows = _ring(y, H)
        for x in range(W):
            cols = _ring(x, W)
            h = ti.Vector([w[p, ob + a] for a in ti.static(range(HIDDEN))])
            for i in ti.static(range(3)):
                for j in ti.static(range(3)):
                    base = o0 + ((i * 3 + j) * d + k[p, rows[i], cols[j]]) * HIDDEN
                    for a in ti.static(range(HIDDEN)):
                        h[a] += w[p, base + a]
            logits = _hidden(w, p, h, d)
            if identity != 0.0:
                own = k[p, y, x]
                for q in ti.static(range(d)):
                    if q == own:
                        logits[q] += identity
            best = 0
            if drawn == 0:
                top = logits[0] / tau + gumbel[p, y, x, 0]
                for q in ti.static(range(1, d)):
                    score = logits[q] / tau + gumbel[p, y, x, q]
                    if score > top:
                        top, best = score, q
            else:
                top = logits[0]
                for q in ti.static(range(1, d)):
                    top = ti.max(top, logits[q])
                weights = ti.Vector([0.0] * d)
                total = 0.0
                for q in ti.static(range(d)):
                    weights[q] = ti.exp((logits[q] - top) / tau)
                    total += weights[q]
                target = _uniform(keys, p, y * W + x) * total
                acc = 0.0
                best = -1
                for q in ti.static(range(d)):
                    acc += weights[q]
                    if best < 0 and target < acc:
                        best = q
                if best < 0:  # rounding left target at the very end: the last category with any weight
                    best = d - 1
                    for q in ti.static(range(d)):
                        if weights[q] > 0.0:
                            best = q
            out[p, y, x] = best
