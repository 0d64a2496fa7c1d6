"""`workbench bench gpu`: the whole GPU conformance check and benchmark in one run, printed as JSON.

    conformance   every substrate on CUDA against the reference implementation's golden step (the further
                  substrates' too, from asal_more_step1_reference.npz), the NumPy
                  version of the spec over many steps, the NumPy renderers, itself (same seed, same bits;
                  CUDA graphs vs plain launches; a population vs its members one by one)
    substrates    simulation steps per second at P = 1, 16, 256, 1024 (Particle Life 1, 16, 64, 256), and
                  render times, each timed as sub.step(state, params, n) with the device synchronised
    fm            CLIP ViT-B-32 image tower: plain open_clip fp32 eager against workbench.fm, images/s
    asal          one Sep-CMA-ES target-search iteration (Lenia, population 16, 256 steps, 8 frames, ViT-B-32)
                  and one illumination-GA iteration (32 children), split into simulate / render / embed / search
    lm            the language-model side on the device (workbench.lm.bench), when present

Sections fail on their own: an error is recorded under the section and the next one runs. Benchmarks are
never tests; the tests check the same code paths on the CPU under Triton's interpreter.
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from workbench.kernels.device import cuda_available, describe, resolve_device, synchronize
from workbench.machine import machine
from workbench.simulations import make_substrate
from workbench.simulations import reference as ref

SIZES = {"lenia": (1, 16, 256, 1024), "boids": (1, 16, 256, 1024), "plife": (1, 16, 64, 256)}
CHUNK = {"lenia": 64, "boids": 200, "plife": 16}
_ENGINE: str | None = None  # conformance(engine=...) for a dry run of the GPU kernels under Triton's interpreter


def _make(name: str, device, **overrides):
    return make_substrate(name, device=device, engine=_ENGINE, **overrides)


def _timed(fn: Callable[[], object], device, min_time: float, min_calls: int = 3) -> float:
    """Seconds per call of fn after one warm-up call, device-synchronised, over ≥ min_time and ≥ min_calls."""
    fn()
    synchronize(device)
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        synchronize(device)
        elapsed = time.perf_counter() - start
        if elapsed >= min_time and calls >= min_calls:
            return elapsed / calls


def _max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


# --- conformance -------------------------------------------------------------------------------------------

def conformance(device: torch.device, engine: str | None = None) -> dict:
    """Conformance of the substrates on `device` (with `engine`: the device's default when None)."""
    global _ENGINE
    _ENGINE = engine
    out: dict = {}
    gold = ref.golden()
    checks = {"golden": _golden, "golden_more": _golden_more, "numpy_multistep": _numpy_multistep, "renders": _renders,
              "self_consistency": _self_consistency, "two_searches": _two_searches}
    for name, check in checks.items():
        try:
            out[name] = check(device, gold)
        except Exception as exc:  # noqa: BLE001 - recorded, the next check runs
            out[name] = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc(limit=4)}
    return out


def _golden(device, gold) -> dict:
    res = {}
    sub = _make("lenia", device=device)
    params = {"m": gold["lenia_m"], "s": gold["lenia_s"], "h": gold["lenia_h"], "cells": np.zeros((32, 32, 3))}
    st = sub.state_from_arrays(world=gold["lenia_A0"], shift=np.zeros(2, int), total_shift=np.zeros(2, int))
    res["lenia_world"] = _max_diff(sub.state_to_arrays(sub.step(st, params, 1))["world"], gold["lenia_A1"])
    before, after, shift = ref.lenia_off_centre(gold)  # the recentring where its variants differ
    st = sub.state_from_arrays(world=before, shift=np.zeros(2, int), total_shift=np.zeros(2, int))
    got = sub.state_to_arrays(sub.step(st, params, 1))
    res["lenia_off_centre_world"] = _max_diff(got["world"], after)
    res["lenia_off_centre_shift_error"] = float(np.abs(got["shift"] - shift).max())
    sub = _make("boids", device=device)
    params = {}
    for i in range(4):
        params[f"W{i + 1}"], params[f"b{i + 1}"] = gold[f"boids_Dense_{i}_kernel"], gold[f"boids_Dense_{i}_bias"]
    got = sub.state_to_arrays(sub.step(sub.state_from_arrays(x=gold["boids_x0"], v=gold["boids_v0"]), params, 1))
    res["boids_x"], res["boids_v"] = _max_diff(got["x"], gold["boids_x1"]), _max_diff(got["v"], gold["boids_v1"])
    sub = _make("plife", device=device)
    params = {"alpha": gold["plife_alpha"], "beta": gold["plife_beta"]}
    st = sub.state_from_arrays(x=gold["plife_x0"], v=gold["plife_v0"], c=gold["plife_c"])
    got = sub.state_to_arrays(sub.step(st, params, 1))
    res["plife_x"], res["plife_v"] = _max_diff(got["x"], gold["plife_x1"]), _max_diff(got["v"], gold["plife_v1"])
    res["tolerance"] = 1e-5
    res["pass"] = all(v <= 1e-5 for k, v in res.items() if k != "tolerance")
    return res


def _golden_more(device, gold) -> dict:
    """The further substrates' golden step (asal_more_step1_reference.npz) with their default engine on `device`
    (on CUDA: the torch paths, none of which the CPU runs by default): max |difference| per state, cells that
    differ for the discrete ones (Game of Life, discrete NCA: 0 passes), and the renders of the initial states."""
    from workbench.simulations.reference_ca import GOLDEN_STATES, golden_more, golden_step

    more = golden_more()
    res: dict = {}
    for name in GOLDEN_STATES:
        if name in ("gol", "nca_d1", "nca_d3", "dnca"):  # the CAs' CUDA engine is torch's, Triton's the particles'
            sub = make_substrate(name, device=device, engine="torch" if _ENGINE == "triton" else _ENGINE)
        else:
            sub = _make(name, device=device)
        params, state, noise, after = golden_step(name, sub, more)
        got = sub.state_to_arrays(sub.step(state, params, 1, noise=noise))
        if name in ("gol", "dnca"):
            res[name] = int(np.sum(got["state"] != after["state"]))
        else:
            res[name] = max(_max_diff(got[k], after[k]) for k in after)
        res[f"{name}_render"] = _max_diff(sub.render(state, params, 224), more[f"{name}_render0"])
    res["tolerance"] = {"state": 1e-5, "render": 5e-5, "gol_dnca_cells": 0}
    res["pass"] = all(v <= (5e-5 if k.endswith("_render") else 1e-5) for k, v in res.items() if k != "tolerance")
    return res


def _numpy_multistep(device, gold) -> dict:
    res = {}
    sub = _make("lenia", device=device)
    params = sub.decode(0.05 * np.random.default_rng(3).standard_normal(sub.n_params))
    state = sub.init(params)
    worst, shifts_equal = 0.0, True
    for world, _, total in ref.lenia_states(params, 30):
        got = sub.state_to_arrays(state)
        worst = max(worst, _max_diff(got["world"], world))
        shifts_equal &= bool(np.array_equal(got["total_shift"], total))
        state = sub.step(state, params, 1)
    res["lenia_31_steps"] = {"max_err": worst, "total_shift_equal": shifts_equal, "moved": bool(np.any(total != 0))}
    sub = _make("boids", device=device)
    params = sub.decode(0.5 * np.random.default_rng(1).standard_normal(sub.n_params))
    state = sub.init(params, seed=4)
    x, v = (sub.state_to_arrays(state)[k] for k in ("x", "v"))
    for _ in range(25):
        x, v = ref.boids_step(x, v, params)
    got = sub.state_to_arrays(sub.step(state, params, 25))
    res["boids_25_steps"] = {"x": _max_diff(got["x"], x), "v": _max_diff(got["v"], v)}
    for N, r_max, steps in ((300, 0.1, 10), (2000, 0.1, 10), (200, 0.4, 1)):
        sub = _make("plife", N=N, r_max=r_max, device=device)
        params = sub.decode(np.random.default_rng(2).standard_normal(42))
        state = sub.init(params, seed=5)
        arr = sub.state_to_arrays(state)
        x, v = arr["x"], arr["v"]
        for _ in range(steps):
            x, v = ref.plife_step(x, v, arr["c"], params["alpha"].astype(np.float64),
                                  params["beta"].astype(np.float64), r_max=r_max)
        got = sub.state_to_arrays(sub.step(state, params, steps))
        res[f"plife_N{N}_rmax{r_max}_{steps}_steps"] = {"x": _max_diff(got["x"], x), "v": _max_diff(got["v"], v)}
    res["tolerance"] = {"lenia": 1e-4, "boids": 1e-4, "plife_x": 1e-5, "plife_v": 1e-4}
    return res


def _renders(device, gold) -> dict:
    res = {}
    sub = _make("boids", device=device)
    params = sub.decode(0.3 * np.random.default_rng(0).standard_normal(sub.n_params))
    state = sub.step(sub.init(params, seed=2), params, 20)
    arr = sub.state_to_arrays(state)
    frame, theirs = sub.render(state, params, 224), ref.render_boids(arr["x"].astype(np.float64),
                                                                     arr["v"].astype(np.float64))
    res["boids_psnr_db"], res["boids_max_diff"] = ref.psnr(frame, theirs), _max_diff(frame, theirs)
    sub = _make("plife", N=1500, device=device)
    params = sub.decode(np.random.default_rng(1).standard_normal(42))
    state = sub.step(sub.init(params, seed=3), params, 5)
    arr = sub.state_to_arrays(state)
    frame, theirs = sub.render(state, params, 224), ref.render_particles(arr["x"].astype(np.float64), arr["c"])
    res["particles_psnr_db"], res["particles_max_diff"] = ref.psnr(frame, theirs), _max_diff(frame, theirs)
    sub = _make("lenia", device=device)
    params = sub.decode(np.zeros(sub.n_params))
    state = sub.init(params)
    world = sub.state_to_arrays(state)["world"]
    idx = 32 + np.minimum(((np.arange(224) + 0.5) * 64 / 224).astype(int), 63)
    res["lenia_equal_to_numpy_upscale"] = bool(np.array_equal(sub.render(state, params, 224),
                                                              world[idx[:, None], idx[None, :]]))
    # to float32's rounding (≈ 2e-5 on a CPU): a PSNR ≥ 30, the bar once, let a boid's edge at σ(25λ) for σ(40λ) pass
    res["tolerance"] = 1e-3
    res["pass"] = res["boids_max_diff"] <= 1e-3 and res["particles_max_diff"] <= 1e-3 and \
        res["lenia_equal_to_numpy_upscale"]
    return res


def _self_consistency(device, gold) -> dict:
    import os

    res = {}
    for name in ("lenia", "boids", "plife"):
        sub = _make(name, device=device)
        thetas = 0.1 * np.random.default_rng(0).standard_normal((4, sub.n_params))
        params = sub.decode(thetas)
        steps = {"lenia": 40, "boids": 50, "plife": 8}[name]
        a = sub.state_to_arrays(sub.step(sub.init(params, seed=1), params, steps))
        b = sub.state_to_arrays(sub.step(sub.init(params, seed=1), params, steps))
        row = {"same_seed_bit_identical": all(np.array_equal(a[k], b[k]) for k in a)}
        half = sub.step(sub.step(sub.init(params, seed=1), params, steps // 2), params, steps - steps // 2)
        row["split_steps_max_diff"] = max(_max_diff(sub.state_to_arrays(half)[k], a[k]) for k in a)
        one = sub.decode(thetas[2])
        single = sub.state_to_arrays(sub.step(sub.init(one, seed=1), one, steps))
        row["member_vs_population_max_diff"] = max(_max_diff(single[k], a[k][2]) for k in a)
        if os.environ.get("WORKBENCH_CUDA_GRAPHS") == "0":  # off for the whole run: a comparison of plain with plain
            row["graphs_vs_plain_max_diff"] = "skipped (WORKBENCH_CUDA_GRAPHS=0)"
            res[name] = row
            continue
        before = os.environ.get("WORKBENCH_CUDA_GRAPHS")
        os.environ["WORKBENCH_CUDA_GRAPHS"] = "0"
        try:
            plain = _make(name, device=device)
            c = plain.state_to_arrays(plain.step(plain.init(params, seed=1), params, steps))
        finally:  # the user's setting back for the sections after this one
            if before is None:
                os.environ.pop("WORKBENCH_CUDA_GRAPHS")
            else:
                os.environ["WORKBENCH_CUDA_GRAPHS"] = before
        row["graphs_vs_plain_max_diff"] = max(_max_diff(c[k], a[k]) for k in a)
        res[name] = row
    return res


def search_outcome(run) -> tuple:
    """What a finished search wrote that a repeat of it must write again: best loss, metrics (without the seconds
    they took) and best θ, as bytes."""
    import pandas as pd

    metrics = pd.read_parquet(run.path / "metrics.parquet").drop(columns="seconds")
    return run.info["best_loss"], metrics.to_numpy().tobytes(), np.load(run.path / "best.npy").tobytes()


def searches_at_once(configs: list, root: str | Path) -> list:
    """Run the searches `configs` at once, each on its own thread of this process (as tabs of one `workbench serve`
    do), released together, into stores root/together{i}; each one's search_outcome, or the exception it raised."""
    import threading

    from workbench.asal.driver import run_search
    from workbench.runs import RunStore

    together: dict[int, object] = {}
    start = threading.Barrier(len(configs))

    def search(i: int) -> None:
        try:
            start.wait(timeout=600)
            together[i] = search_outcome(run_search(configs[i], RunStore(Path(root) / f"together{i}")))
        except Exception as exc:  # noqa: BLE001 - returned, not lost in a thread
            together[i] = exc

    threads = [threading.Thread(target=search, args=(i,)) for i in range(len(configs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [together.get(i) for i in range(len(configs))]


def _two_searches(device, gold, iters: int = 3) -> dict:
    """Two searches at once on threads of one process (two tabs of one `workbench serve`), each against the same
    search alone: they share the substrate (one per process and settings) and its buffers, and one captures its CUDA
    graphs while the other renders and embeds on the GPU (in CUDA's default "global" capture mode, another
    thread's work during a capture is an error). Alone twice first: a GPU's own run-to-run spread, if it has one,
    is told apart."""
    import warnings

    from workbench.asal.driver import SearchConfig, run_search
    from workbench.asal.evaluate import EvalConfig
    from workbench.runs import RunStore

    engine = {"engine": _ENGINE} if _ENGINE else {}  # the engine the other checks run (conformance's)
    lenia = EvalConfig("lenia", "pixels", steps=64, frames=2, size=64, chunk=4, device=str(device),
                       overrides={"grid": 64, "cells": 32, "phenotype": 32, **engine})
    configs = [SearchConfig(kind="openended", eval=lenia, iters=iters, pop=8, seed=seed) for seed in (0, 1)]
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        alone = [[search_outcome(run_search(cfg, RunStore(f"{tmp}/alone{k}-{i}"))) for i, cfg in enumerate(configs)]
                 for k in range(2)]
        ran = searches_at_once(configs, tmp)
    errors = [f"{type(v).__name__}: {v}" for v in ran if isinstance(v, Exception)]
    repeatable = alone[0] == alone[1]
    spread = None if errors else max(abs(float(t[0]) - float(a[0])) for t, a in zip(ran, alone[0], strict=True))
    same = not errors and ran == alone[0]
    said_graphs = sorted({str(w.message).splitlines()[0] for w in said if "CUDA graph" in str(w.message)})
    return {"alone_bit_identical_twice": repeatable, "together_bit_identical_to_alone": same,
            "best_loss_max_diff": spread, "errors": errors, "warnings": said_graphs,
            # a capture that failed runs its steps eagerly, the same bits: the warning is the failure
            "pass": not said_graphs and (same if repeatable else bool(not errors and spread is not None
                                                                       and spread <= 1e-4))}


# --- throughput --------------------------------------------------------------------------------------------

def substrates(device: torch.device, min_time: float = 1.0, sizes: dict | None = None) -> dict:
    out: dict = {}
    for name, populations in (sizes or SIZES).items():
        row: dict = {}
        try:
            sub = make_substrate(name, device=device)
            n = CHUNK[name]
            for P in populations:
                params = sub.decode(0.1 * np.random.default_rng(0).standard_normal((P, sub.n_params)))
                state = sub.init(params, seed=0)
                seconds = _timed(lambda sub=sub, state=state, params=params, n=n: sub.step(state, params, n),
                                 device, min_time)
                row[f"P{P}"] = round(P * n / seconds, 1)
                del state
                torch.cuda.empty_cache() if device.type == "cuda" else None
            for P in (1, 16):
                row[f"render_ms_p{P}"] = _render_ms(sub, P, device, min_time / 2)
        except Exception as exc:  # noqa: BLE001
            row["error"] = f"{type(exc).__name__}: {exc}"
            row["trace"] = traceback.format_exc(limit=4)
        out[name] = row
    out["unit"] = "simulation steps per second (P simulations × steps / s); renders in ms at 224²"
    return out


def _render_ms(sub, P: int, device, min_time: float) -> float:
    """Milliseconds to render P frames at 224² (on the device, no copy to the host)."""
    params = sub.decode(0.1 * np.random.default_rng(1).standard_normal((P, sub.n_params)))
    state = sub.step(sub.init(params, seed=0), params, 10)
    return round(1000 * _timed(lambda: sub.render(state, params, 224, as_tensor=True), device, min_time), 3)


def fm(device: torch.device, batch: int = 256, arch: str = "ViT-B-32", min_time: float = 2.0) -> dict:
    """Images/s of plain open_clip (fp32, eager, on the same GPU, inputs already normalised there) against
    workbench.fm (bf16 where the load-time check passes) fed uint8 frames and float32 frames in [0, 1] (what a
    search hands it: rendered frames, unrounded, 4× the bytes), and their lowest cosine; each timed for at
    least `min_time` seconds."""
    import open_clip
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    from workbench.fm import load_fm

    torch.manual_seed(0)
    from workbench.fm import quiet_logs

    with quiet_logs():
        model = open_clip.create_model(arch, pretrained=None).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/weights.pt"
        torch.save(model.state_dict(), path)
        ours_fm = load_fm(f"openclip:{arch}", weights=path, device=device)
    rng = np.random.default_rng(0)
    frames = torch.from_numpy(rng.integers(0, 256, (batch, 224, 224, 3), dtype=np.uint8)).to(device)
    mean = torch.tensor(OPENAI_DATASET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD, device=device).view(1, 3, 1, 1)
    x = (frames.permute(0, 3, 1, 2).float() / 255.0 - mean) / std
    model = model.to(device)
    with torch.no_grad():
        plain = _timed(lambda: model.encode_image(x), device, min_time)
        z_plain = torch.nn.functional.normalize(model.encode_image(x).float(), dim=-1).cpu().numpy()
    ours = _timed(lambda: ours_fm.embed_images(frames, use_cache=False), device, min_time)
    floats = frames.float() / 255.0
    ours_float = _timed(lambda: ours_fm.embed_images(floats, use_cache=False), device, min_time)
    z = ours_fm.embed_images(frames, use_cache=False)
    return {"arch": arch, "batch": batch, "precision": ours_fm.precision,
            "plain_fp32_eager_img_per_s": round(batch / plain, 1), "ours_img_per_s": round(batch / ours, 1),
            "speedup": round(plain / ours, 2), "ours_float_frames_img_per_s": round(batch / ours_float, 1),
            "min_cosine_vs_plain": round(float(np.min(np.sum(z * z_plain, 1))), 5),
            "bf16_min_cosine_at_load": getattr(ours_fm, "bf16_min_cosine", None)}


def asal(device: torch.device, iters: int = 5, weights: str | None = None) -> dict:
    """Milliseconds per search iteration with the split ask / simulate / render / embed / search (median of
    `iters` after a warm-up): a Sep-CMA-ES target search (Lenia, population 16, 256 steps, 8 frames, ViT-B-32)
    and an illumination-GA generation (32 children)."""
    import open_clip

    from workbench.asal.evaluate import EvalConfig
    from workbench.bench import asal_iteration
    from workbench.fm import quiet_logs

    out: dict = {"unit": "ms per iteration (median)"}
    with tempfile.TemporaryDirectory() as tmp:
        if weights is None:
            weights = f"{tmp}/vitb32.pt"
            torch.manual_seed(0)
            with quiet_logs():
                torch.save(open_clip.create_model("ViT-B-32", pretrained=None).state_dict(), weights)
        for label, kind, pop, frames, prompts in (("target_lenia_pop16_K8", "target", 16, 8, ("a caterpillar",)),
                                                  ("illuminate_lenia_ga32", "illuminate", 32, 1, ())):
            ev = EvalConfig("lenia", "openclip:ViT-B-32", weights=weights, steps=256, frames=frames, chunk=pop,
                            device=str(device))
            out[label] = asal_iteration(ev, kind, pop, iters=iters, prompts=prompts, warmup=True)
    return out


SECTIONS = ("conformance", "substrates", "fm", "asal", "lm")


def bench_gpu(device: str | None = None, sections: tuple[str, ...] = SECTIONS,
              min_time: float = 1.0, out_file: str | None = None, log: Callable[[str], None] | None = None,
              reference: str | None = None) -> dict:
    """Run the sections on a CUDA device and return one JSON-able dict (also written to out_file as it grows).

    reference: a checkout of the reference implementation (SakanaAI/asal); its substrates are then timed last,
    the same way on the same GPU (JAX; workbench.bench_reference), with ours / theirs beside them."""
    if not cuda_available() or torch.device(device or "cuda").type != "cuda":
        raise ValueError("workbench bench gpu needs a CUDA GPU (torch sees none here); on the CPU use "
                         "`workbench bench substrates|fm|asal`")
    dev = resolve_device(device or "cuda")
    import triton

    result: dict = {"gpu": describe(dev), "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
                    "triton": triton.__version__, "cuda": torch.version.cuda, "host": platform.node(),
                    "machine": machine()}
    runners: dict[str, Callable[[], dict]] = {
        "conformance": lambda: conformance(dev),
        "substrates": lambda: substrates(dev, min_time),
        "fm": lambda: fm(dev, min_time=2 * min_time),  # its two timings a model, as long as a substrate's
        "asal": lambda: asal(dev, iters=max(3, min(10, round(5 * min_time)))),
        "lm": lambda: _lm(dev),
        "reference": lambda: _reference(reference, min_time, result.get("substrates", {})),
    }
    for name in (*sections, "reference") if reference else sections:
        start = time.perf_counter()
        try:
            result[name] = runners[name]()
        except Exception as exc:  # noqa: BLE001 - recorded, the next section runs
            result[name] = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc(limit=6)}
        result.setdefault("seconds", {})[name] = round(time.perf_counter() - start, 1)
        if log is not None:
            log(f"{name}: {result['seconds'][name]} s")
        if out_file:
            from workbench.bench import finite

            Path(out_file).write_text(json.dumps(finite(result), indent=1, default=str, allow_nan=False))
    return result


def _reference(path: str, min_time: float, ours: dict) -> dict:
    """The reference's substrates at our sizes and chunks (after ours: torch's cached memory is handed back first,
    JAX allocates as it goes), and ours / theirs where this run timed ours."""
    from workbench.bench_reference import ratios, reference_rates

    torch.cuda.empty_cache()
    rates = reference_rates(path, {name: SIZES[name] for name in SIZES}, CHUNK, min_time, render_sizes=(1, 16))
    return {**rates, "ours_vs_reference": ratios(ours, rates)}


def _lm(dev: torch.device) -> dict:
    try:
        from workbench.lm.bench import bench_lm_device
    except ImportError:
        return {"skipped": "workbench.lm.bench is not there"}
    return bench_lm_device(str(dev))
