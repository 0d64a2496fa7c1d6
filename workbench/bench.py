"""Benchmarks (never run by the tests): `workbench bench substrates --json`."""

from __future__ import annotations

import platform
import time

import numpy as np

from workbench.simulations import make_substrate


def _rate(fn, min_time: float = 1.0) -> float:
    """Calls per second of fn (after one warm-up call), measured over at least min_time seconds."""
    fn()
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return calls / elapsed


def bench_substrates(names=("lenia", "boids", "plife"), min_time: float = 1.0) -> dict:
    """Steps per second at P = 1, simulation steps per second at P = 16, and 224² render time."""
    chunk = {"lenia": 16, "boids": 100, "plife": 4}
    result: dict = {"machine": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d")}
    from workbench.kernels.runtime import ensure_taichi

    result["backend"] = ensure_taichi()
    for name in names:
        sub = make_substrate(name)
        rng = np.random.default_rng(0)
        n = chunk[name]
        row = {}
        for P in (1, 16):
            params = sub.decode(0.1 * rng.standard_normal((P, sub.n_params)))
            state = sub.init(params, seed=0)
            rate = _rate(lambda sub=sub, state=state, params=params, n=n: sub.step(state, params, n), min_time) * n
            row["steps_per_s_p1" if P == 1 else "sim_steps_per_s_p16"] = round(rate * P, 1)
            if P == 16:
                row["batch_steps_per_s_p16"] = round(rate, 1)
        params = sub.decode(0.1 * rng.standard_normal(sub.n_params))
        state = sub.step(sub.init(params, seed=0), params, 10)
        frame = lambda sub=sub, state=state, params=params: sub.render(state, params, 224)  # noqa: E731
        row["render_ms"] = round(1000 / _rate(frame, min_time), 2)
        result[name] = row
    return result
