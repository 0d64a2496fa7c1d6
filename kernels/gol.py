"""Game of Life (any life-like rule of 18 bits) in Taichi: many steps in one call.

A step of a 64×64 grid is a few microseconds of work, so the loop over steps runs inside the kernel: one thread per
simulation (each its own CPU chunk, so a population spreads over the cores), double-buffered in place. Neighbour
counts use running column sums: three loads per cell instead of eight.
"""

import taichi as ti

from workbench.kernels.runtime import CPU_CHUNK, kernel


@ti.func
def _generation(src: ti.template(), dst: ti.template(), p, rule):
    """dst[p] = one step of src[p]: bit (9·s + n) of the rule, n = live Moore neighbours on the torus."""
    H, W = src.shape[1], src.shape[2]
    for y in range(H):
        ym, yp = (y + H - 1) % H, (y + 1) % H
        # column sums of the three rows at x − 1 and x
        left = src[p, ym, W - 1] + src[p, y, W - 1] + src[p, yp, W - 1]
        mid = src[p, ym, 0] + src[p, y, 0] + src[p, yp, 0]
        for x in range(W):
            xr = x + 1
            if xr == W:
                xr = 0
            right = src[p, ym, xr] + src[p, y, xr] + src[p, yp, xr]
            s = src[p, y, x]
            n = left + mid + right - s
            dst[p, y, x] = (rule >> (9 * s + n)) & 1
            left, mid = mid, right


@kernel
def steps(a: ti.types.ndarray(dtype=ti.i32, ndim=3), b: ti.types.ndarray(dtype=ti.i32, ndim=3),
          rule: ti.types.ndarray(dtype=ti.i32, ndim=1), n: ti.i32):
    """n steps of every simulation p of a (P, H, W); b is scratch of the same shape. The result is in a when n is
    even, in b when n is odd."""
    P = a.shape[0]
    for chunk in range(P * CPU_CHUNK):
        if chunk % CPU_CHUNK == 0:
            p = chunk // CPU_CHUNK
            r = rule[p]
            for t in range(n):
                if t % 2 == 0:
                    _generation(a, b, p, r)
                else:
                    _generation(b, a, p, r)


# --- bit-parallel steps: 64 cells a word ---------------------------------------------------------

@ti.func
def _full_add(a, b, c):
    """Bitwise a + b + c -> (sum bit, carry bit)."""
    t = a ^ b
    return t ^ c, (a & b) | (c & t)


@ti.func
def _bits_generation(src: ti.template(), dst: ti.template(), p, born: ti.template(), keep: ti.template()):
    """dst[p] = one step of the packed grid src[p] (P, H, words): per word, the neighbour counts of its 64 cells
    as four bit planes (adders on whole words), then the rule as a sum of products over the count planes."""
    H, NW = src.shape[1], src.shape[2]
    for y in range(H):
        ym, yp = (y + H - 1) % H, (y + 1) % H
        for wi in range(NW):
            wl, wr = (wi + NW - 1) % NW, (wi + 1) % NW
            # per row: the cells at x − 1, x, x + 1 as words (column x is bit x mod 64 of word x // 64)
            t_l = (src[p, ym, wi] << 1) | (src[p, ym, wl] >> 63)
            t_r = (src[p, ym, wi] >> 1) | (src[p, ym, wr] << 63)
            m_l = (src[p, y, wi] << 1) | (src[p, y, wl] >> 63)
            m_r = (src[p, y, wi] >> 1) | (src[p, y, wr] << 63)
            b_l = (src[p, yp, wi] << 1) | (src[p, yp, wl] >> 63)
            b_r = (src[p, yp, wi] >> 1) | (src[p, yp, wr] << 63)
            t0, t1 = _full_add(t_l, src[p, ym, wi], t_r)
            b0, b1 = _full_add(b_l, src[p, yp, wi], b_r)
            m0, m1 = m_l ^ m_r, m_l & m_r
            # n = (t0 + b0 + m0) + 2·(t1 + b1 + m1) as planes n0..n3
            n0, c0 = _full_add(t0, b0, m0)
            s1, c1 = _full_add(t1, b1, m1)
            n1 = s1 ^ c0
            c1b = s1 & c0
            n2 = c1 ^ c1b
            n3 = c1 & c1b
            z0, z1, z2, z3 = ~n0, ~n1, ~n2, ~n3
            planes = ti.Vector([z0, n0, z1, n1, z2, n2, z3, n3], dt=ti.u64)
            births = ti.u64(0)
            survivals = ti.u64(0)
            for n in ti.static(range(9)):
                eq = planes[n & 1] & planes[2 + ((n >> 1) & 1)] & planes[4 + ((n >> 2) & 1)] & planes[6 + (n >> 3)]
                births |= eq & born[n]
                survivals |= eq & keep[n]
            s = src[p, y, wi]
            dst[p, y, wi] = (~s & births) | (s & survivals)


@kernel
def packed_steps(a: ti.types.ndarray(dtype=ti.i32, ndim=3), wa: ti.types.ndarray(dtype=ti.u64, ndim=3),
                 wb: ti.types.ndarray(dtype=ti.u64, ndim=3), rule: ti.types.ndarray(dtype=ti.i32, ndim=1),
                 n: ti.i32):
    """n steps of every simulation of a (P, H, W) in place, W a multiple of 64: packed into words wa (P, H, W/64),
    stepped with wb as the second buffer, unpacked into a."""
    P, H, NW = wa.shape[0], wa.shape[1], wa.shape[2]
    for chunk in range(P * CPU_CHUNK):
        if chunk % CPU_CHUNK == 0:
            p = chunk // CPU_CHUNK
            r = rule[p]
            # the rule's 18 bits as all-ones / all-zeros words
            born = ti.Vector([ti.u64(0)] * 9, dt=ti.u64)
            keep = ti.Vector([ti.u64(0)] * 9, dt=ti.u64)
            for k in ti.static(range(9)):
                if (r >> k) & 1:
                    born[k] = ~ti.u64(0)
                if (r >> (9 + k)) & 1:
                    keep[k] = ~ti.u64(0)
            for y in range(H):
                for wi in range(NW):
                    word = ti.u64(0)
                    for i in range(64):
                        word |= ti.cast(a[p, y, wi * 64 + i] & 1, ti.u64) << ti.cast(i, ti.u64)
                    wa[p, y, wi] = word
            for t in range(n):
                if t % 2 == 0:
                    _bits_generation(wa, wb, p, born, keep)
                else:
                    _bits_generation(wb, wa, p, born, keep)
            for y in range(H):
                for wi in range(NW):
                    word = wa[p, y, wi]
                    if n % 2 == 1:
                        word = wb[p, y, wi]
                    for i in range(64):
                        a[p, y, wi * 64 + i] = ti.cast((word >> ti.cast(i, ti.u64)) & ti.u64(1), ti.i32)
