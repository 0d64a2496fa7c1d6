"""The reference implementation (SakanaAI/asal, JAX) timed beside ours, the same way, in the same process.

`workbench bench substrates --reference DIR` (the CPU) and `workbench bench gpu --reference DIR` (CUDA) time the
reference's substrates from a checkout of https://github.com/SakanaAI/asal at DIR: its own `create_substrate`
settings (ours are the same defaults), P simulations stepped as one compiled program — `jax.jit` of a
`lax.scan` over n steps of `jax.vmap(step_state)`, what the reference's rollouts compile to — and each call
synchronised (`block_until_ready`). Renders: `jax.vmap(render_state)` at 224², as ours are timed.

JAX, flax, einops and matplotlib are the reference's, not ours: they are imported only here, and only when asked. The
reference's `substrates/__init__` imports evosax for a flattening wrapper these timings do not use; where evosax
is missing an empty module stands in for it. On a GPU JAX is told not to preallocate most of the memory (its
default), which would leave none to the torch side of the same run.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import time
import traceback
import types
from collections.abc import Callable
from pathlib import Path

from workbench.checks import user_path

#: the reference's names of the substrates both sides have (Flow-Lenia is not in the ASAL repository)
REFERENCE_SUBSTRATES = ("lenia", "boids", "plife", "plife_plus", "plenia", "dnca", "nca_d1", "nca_d3", "gol")


def check_reference(path: str | Path) -> Path:
    """The checkout folder, or one ValueError naming --reference and the fix (before anything is timed)."""
    root = user_path(path)
    if not (root / "substrates" / "lenia_impl.py").is_file():
        raise ValueError(f"--reference {path}: not a checkout of the reference implementation (no "
                         "substrates/lenia_impl.py there); give the folder of a clone of "
                         "https://github.com/SakanaAI/asal")
    missing = [name for name in ("jax", "flax", "einops", "matplotlib") if importlib.util.find_spec(name) is None]
    if missing:
        raise ValueError(f"--reference needs the reference's own packages, missing here: {', '.join(missing)} "
                         f"(pip install {' '.join(missing)}; they are not workbench dependencies)")
    return root


def _reference_package(root: Path):
    """The reference's `substrates` package, imported from `root` (evosax stood in for where missing)."""
    if importlib.util.find_spec("evosax") is None and "evosax" not in sys.modules:
        sys.modules["evosax"] = types.ModuleType("evosax")  # only its unused flattening wrapper needs it
    loaded = sys.modules.get("substrates")
    if loaded is not None and Path(getattr(loaded, "__file__", "") or "").parent.parent != root.resolve():
        raise ValueError(f"--reference {root}: another package named 'substrates' is already imported "
                         f"({loaded.__file__})")
    sys.path.insert(0, str(root.resolve()))
    try:
        return importlib.import_module("substrates")
    finally:
        sys.path.remove(str(root.resolve()))


def _timed(fn: Callable[[], object], min_time: float, min_calls: int = 3) -> float:
    """Seconds per call after one warm-up call (which compiles), each call waited for."""
    import jax

    jax.block_until_ready(fn())
    calls, start = 0, time.perf_counter()
    while True:
        jax.block_until_ready(fn())
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time and calls >= min_calls:
            return elapsed / calls


def reference_rates(path: str | Path, sizes: dict[str, tuple[int, ...]], chunk: dict[str, int],
                    min_time: float = 1.0, render_sizes: tuple[int, ...] = (1,)) -> dict:
    """Simulation steps per second of the reference at each population size (P × n / s for calls of n =
    chunk[name] steps), and milliseconds to render P frames at 224² for P in `render_sizes`.

    Returns {"jax": version, "backend": "cpu" | "gpu", "device": …, name: {"P1": …, "P16": …, "render_ms_p1": …}};
    a size that fails (out of memory, say) records its error and the next one runs."""
    root = check_reference(path)
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # before JAX starts: share the GPU with torch
    import jax

    package = _reference_package(root)
    out: dict = {"jax": jax.__version__, "backend": jax.default_backend(), "device": str(jax.devices()[0]),
                 "source": "SakanaAI/asal (substrates.create_substrate; jit + vmap + lax.scan)"}
    for name, populations in sizes.items():
        if name not in REFERENCE_SUBSTRATES:
            out[name] = {"skipped": "not in the reference implementation"}
            continue
        out[name] = _rates(package.create_substrate(name), chunk[name], populations, render_sizes, min_time)
    return out


def _rates(sub, n: int, populations: tuple[int, ...], render_sizes: tuple[int, ...], min_time: float) -> dict:
    """One reference substrate's row of `reference_rates`."""
    import jax

    def run(rng, state, params):
        def body(state, key):
            keys = jax.random.split(key, jax.tree_util.tree_leaves(state)[0].shape[0])  # one key per simulation
            return jax.vmap(sub.step_state)(keys, state, params), None

        return jax.lax.scan(body, state, jax.random.split(rng, n))[0]

    steps = jax.jit(run)
    render = jax.jit(jax.vmap(lambda state, params: sub.render_state(state, params, img_size=224)))
    rng = jax.random.PRNGKey(1)
    row: dict = {}
    for P in sorted(set(populations) | set(render_sizes)):
        try:
            keys = jax.random.split(jax.random.PRNGKey(0), P)
            params = jax.vmap(sub.default_params)(keys)
            state = jax.vmap(sub.init_state)(keys, params)
            if P in populations:
                seconds = _timed(lambda state=state, params=params: steps(rng, state, params), min_time)
                row[f"P{P}"] = round(P * n / seconds, 1)
            if P in render_sizes:
                ms = 1000 * _timed(lambda state=state, params=params: render(state, params), min_time / 2)
                row[f"render_ms_p{P}"] = round(ms, 3)
            del state, params
        except Exception as exc:  # noqa: BLE001 - recorded, the next size runs
            row[f"P{P}_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
            row.setdefault("trace", traceback.format_exc(limit=3))
    return row


def ratios(ours: dict, reference: dict, keys: dict[str, str] | None = None) -> dict:
    """ours / reference for each substrate and key both have (sim-steps/s: higher is better for ours; render
    ms: reference / ours, so above 1 is ours faster there too). `keys` maps our key to the reference's."""
    out: dict = {}
    for name, row in reference.items():
        if not isinstance(row, dict) or not isinstance(ours.get(name), dict):
            continue
        pairs = keys or {k: k for k in row}
        ratio = {}
        for our_key, ref_key in pairs.items():
            a, b = ours[name].get(our_key), row.get(ref_key)
            if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a > 0 and b > 0:
                ratio[our_key] = round(b / a if "ms" in our_key else a / b, 2)
        if ratio:
            out[name] = ratio
    return out
