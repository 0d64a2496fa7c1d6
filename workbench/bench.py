"""Benchmarks (never run by the tests): `workbench bench substrates --json`."""

from __future__ import annotations

import time

import numpy as np

from workbench.machine import machine
from workbench.simulations import make_substrate


def finite(value):
    """`value` with every non-finite float made None, for JSON, which has no Infinity or NaN (the PSNR of two
    bit-identical renders is infinite, and printed as `Infinity` made the bench's output no JSON)."""
    import math

    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def _rate(fn, min_time: float = 1.0, device=None) -> float:
    """Calls per second of fn (after one warm-up call), measured over at least min_time seconds, the device's
    queued work waited for before each clock read (a GPU's steps return before they run)."""
    from workbench.kernels.device import synchronize

    fn()
    synchronize(device)
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        synchronize(device)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return calls / elapsed


def _bench_theta(sub, rng, population=None):
    """θ to time a substrate with: 0.1·N(0, I), or what the substrate draws itself (GoL: integer rules)."""
    if hasattr(sub, "random_theta"):
        return sub.random_theta(rng, population)
    return 0.1 * rng.standard_normal(sub.n_params if population is None else (population, sub.n_params))


#: steps per timed call of each substrate in `bench_substrates` (a call takes milliseconds, not microseconds)
CHUNK = {"lenia": 16, "boids": 100, "plife": 4, "gol": 1024, "nca_d1": 10, "nca_d3": 10, "dnca": 5,
         "plenia": 100, "plife_plus": 4, "flow_lenia": 4}


def bench_substrates(names=("lenia", "boids", "plife"), min_time: float = 1.0, reference: str | None = None,
                     device: str = "cpu") -> dict:
    """Steps per second at P = 1, simulation steps per second at P = 16, and 224² render time on `device` (the
    CPU by default: the Taichi kernels; `bench gpu` times the GPU's engines); with `reference` (a checkout of the
    reference implementation, SakanaAI/asal), the reference's figures timed the same way beside them (JAX on its
    default device; workbench.bench_reference) and ours / theirs."""
    from workbench.kernels.device import describe, resolve_device

    dev = resolve_device(device)
    result: dict = {"machine": machine(), "device": describe(dev),
                    "date": time.strftime("%Y-%m-%d")}
    if dev.type == "cpu":  # the Taichi arch of the CPU engine (a GPU's substrates default to their own engines)
        from workbench.kernels.runtime import ensure_taichi

        result["backend"] = ensure_taichi()
    for name in names:
        sub = make_substrate(name, device=dev)
        rng = np.random.default_rng(0)
        n = CHUNK[name]
        row = {}
        for P in (1, 16):
            params = sub.decode(_bench_theta(sub, rng, P))
            state = sub.init(params, seed=0)
            rate = _rate(lambda sub=sub, state=state, params=params, n=n: sub.step(state, params, n), min_time,
                         dev) * n
            row["steps_per_s_p1" if P == 1 else "sim_steps_per_s_p16"] = round(rate * P, 1)
            if P == 16:
                row["batch_steps_per_s_p16"] = round(rate, 1)
        params = sub.decode(_bench_theta(sub, rng))
        state = sub.step(sub.init(params, seed=0), params, 10)
        frame = lambda sub=sub, state=state, params=params: sub.render(state, params, 224)  # noqa: E731
        row["render_ms"] = round(1000 / _rate(frame, min_time, dev), 2)
        result[name] = row
    if reference is not None:
        from workbench.bench_reference import ratios, reference_rates

        result["reference"] = reference_rates(reference, {name: (1, 16) for name in names}, CHUNK, min_time)
        result["ours_vs_reference"] = ratios(result, result["reference"], {
            "steps_per_s_p1": "P1", "sim_steps_per_s_p16": "P16", "render_ms": "render_ms_p1"})
    return result


VIT_B32_GFLOP = 8.8  # the ViT-B/32 image tower's work per image (224²), multiply-adds counted as two


def matmul_roof(dtype, tokens: int = 32 * 50, width: int = 768, hidden: int = 3072, repeats: int = 20) -> float:
    """GFLOP/s of one GEMM of the ViT-B MLP's shape (tokens × width · width × hidden) on the CPU, the best of
    `repeats`: the machine's practical ceiling for the image tower, which spends most of its time in such
    products. Best of many: on a shared machine a few timings can all land in a slow spell, and a roof measured
    low gave fractions above 1."""
    import torch

    a = torch.randn(tokens, width).to(dtype)
    w = torch.randn(width, hidden).to(dtype)
    a @ w
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ w
        best = min(best, time.perf_counter() - start)
    return 2 * tokens * width * hidden / best / 1e9


def bench_fm(arch: str = "ViT-B-32", batch: int = 32, repeats: int = 5, precision: str = "auto") -> dict:
    """Images/s of plain open_clip fp32 eager vs workbench.fm (bf16 where the CPU has it, unless `precision`
    says otherwise) on the same random-initialised weights, the lowest cosine between the two on rendered
    frames, and — for ViT-B-32 — the fraction of the machine's matmul roof that each reaches.

    The two are timed in turns (plain, ours, plain, …; the best of `repeats` each) and the roof before and after
    them (the best of both): timed one after the other, a slow spell of a shared machine fell on one of them
    alone, and the same code measured 0.96× to 1.09× plain open_clip, at 0.75 to 1.03 of the roof."""
    import tempfile

    import open_clip
    import torch

    from workbench.fm import bf16_supported, check_arch, load_fm, quiet_logs

    check_arch(arch, given=f"--arch {arch}")
    if batch < 1 or repeats < 1:
        raise ValueError(f"--batch and --repeats must be at least 1, got {batch} and {repeats}")
    check_fm_batch(batch)
    torch.manual_seed(0)

    with quiet_logs():
        model = open_clip.create_model(arch, pretrained=None).eval()
    sub = make_substrate("boids", device="cpu")
    params = sub.decode(0.3 * np.random.default_rng(0).standard_normal((batch, sub.n_params)))
    frames = sub.render(sub.step(sub.init(params, seed=0), params, 50), params, 224)
    pre = open_clip.image_transform(model.visual.image_size, is_train=False)
    from PIL import Image

    x = torch.stack([pre(Image.fromarray((f * 255).astype(np.uint8))) for f in frames])

    def seconds(fn) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/weights.pt"
        torch.save(model.state_dict(), path)
        fm = load_fm(f"openclip:{arch}", weights=path, precision=precision, device="cpu")
    # the roof of each dtype the model may run in: bf16 where the CPU has bf16 instructions, or where it was asked
    # for (--precision bf16: emulated bf16 then has a roof of its own, measured like the others)
    roof_dtypes = {"fp32": torch.float32,
                   **({"bf16": torch.bfloat16} if bf16_supported() or fm.precision == "bf16" else {})}
    roof = {k: matmul_roof(dtype) for k, dtype in roof_dtypes.items()} if arch == "ViT-B-32" else {}

    def run_plain():
        with torch.no_grad():
            return model.encode_image(x)

    def run_ours():
        return fm.embed_images(frames, use_cache=False)

    z_plain = torch.nn.functional.normalize(run_plain(), dim=-1).numpy()  # and the first runs, untimed
    z = run_ours()
    plain = ours = float("inf")
    for _ in range(repeats):
        plain = min(plain, seconds(run_plain))
        ours = min(ours, seconds(run_ours))
    out = {"arch": arch, "batch": batch, "repeats": repeats, "precision": fm.precision,
           "plain_fp32_img_per_s": round(batch / plain, 1), "ours_img_per_s": round(batch / ours, 1),
           "speedup": round(plain / ours, 2), "min_cosine_vs_plain": round(float(np.min(np.sum(z * z_plain, 1))), 5),
           "machine": machine(), "cpu_bf16": bf16_supported(),
           "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d")}
    if arch == "ViT-B-32":
        roof = {k: max(v, matmul_roof(roof_dtypes[k])) for k, v in roof.items()}
        out["roof_gflop_per_s"] = {k: round(v, 1) for k, v in roof.items()}
        out["plain_fraction_of_fp32_roof"] = round(batch / plain * VIT_B32_GFLOP / roof["fp32"], 3)
        out["ours_fraction_of_roof"] = round(batch / ours * VIT_B32_GFLOP / roof[fm.precision], 3)
    return out


#: bytes an image of `bench fm` holds at once, an estimate: its 224² float frame, the preprocessed copy each model
#: reads, and two frames' worth for the copies and activations on the way
FM_BYTES_PER_IMAGE = 4 * 224 * 224 * 3 * 4


def check_fm_batch(batch: int, free: int | None = None) -> None:
    """One error naming --batch where its frames and activations would not fit in the memory free now (200 000
    images asked for 120 GB: the bench allocated for minutes, swapping, deaf to SIGTERM)."""
    from workbench.checks import available_memory

    free = available_memory() if free is None else free
    need = batch * FM_BYTES_PER_IMAGE
    if free is not None and need > 0.8 * free:
        fit = max(1, int(0.8 * free) // FM_BYTES_PER_IMAGE)
        raise ValueError(f"--batch {batch}: its frames and activations need about {need / 2**30:.1f} GiB, "
                         f"{free / 2**30:.1f} GiB are free: give at most --batch {fit}")


def asal_iteration(ev, kind: str, pop: int, iters: int = 1, prompts: tuple[str, ...] = (), population: int = 256,
                   warmup: bool = False) -> dict:
    """Milliseconds per search iteration (the median of `iters`), split into ask, decode (θ to parameters on the
    device), simulate, render, embed, thumbnails and search (loss + tell); "other" is what falls between
    (Python, copies of embeddings to the host, stacking). With warmup, one iteration runs first untimed
    (kernels compile, on the CPU too, and CUDA graphs are captured on first use)."""
    import numpy as np

    from workbench.asal.driver import SearchConfig, make_search, search_seeds
    from workbench.asal.evaluate import Objective, PhaseTimer, components, embed_rollouts

    sub, model = components(ev)
    cfg = SearchConfig(kind=kind, eval=ev, pop=pop, population=population, prompts=list(prompts),
                       c_oe=1.0 if kind == "openended" else 0.0)
    search = make_search(cfg, sub.n_params)
    z_target = model.embed_texts(list(prompts)) if prompts else None
    objective = Objective(z_target, cfg.c_prompt, cfg.c_softmax, cfg.c_oe)
    rows = []
    for it in range(iters + int(warmup)):
        timer = PhaseTimer(sub.device)
        start = time.perf_counter()
        with timer("ask"):
            thetas = search.ask()
            asked = len(thetas)
            if kind == "illuminate" and asked < pop:  # the GA's first ask is θ = 0 alone: time a generation
                thetas = np.repeat(thetas, pop, axis=0)
        z, _ = embed_rollouts(cfg.eval, thetas, search_seeds(cfg, it, len(thetas)), timer=timer)
        with timer("search"):
            losses = objective(z) if kind != "illuminate" else None
            final = z[:, :, -1].mean(axis=1)
            # told what it asked for (the repeated θ = 0 once)
            search.tell(thetas[:asked], None if losses is None else losses[:asked],
                        (final / np.linalg.norm(final, axis=1, keepdims=True))[:asked])
        total = time.perf_counter() - start
        if it >= int(warmup):
            rows.append({"total": total, **timer.seconds, "other": total - sum(timer.seconds.values())})
    return {k: round(1000 * float(np.median([r.get(k, 0.0) for r in rows])), 2) for k in rows[0]}


def bench_asal(substrates=("lenia", "boids", "plife"), fms=("pixels", "openclip:ViT-B-32"), frames=(1, 8),
               pop: int = 16, steps: int | None = None, device: str | None = None, iters: int = 3) -> dict:
    """Milliseconds per open-endedness Sep-CMA-ES iteration at population `pop` (rollout + render + embed + tell),
    the median of `iters` after one untimed iteration, with the split per phase:
    {"substrate/fm/K": {"total": ms, "simulate": ms, …}}. (One timed iteration gave 7 to 280 ms for the same cell
    on a shared machine.)"""
    import tempfile

    # the flags first: importing open_clip and torch takes seconds
    if steps is not None and steps < max(frames):  # EvalConfig would name --frames, which this bench has not
        raise ValueError(f"--steps must be at least {max(frames)}: the bench samples "
                         f"{' and '.join(map(str, frames))} frames a rollout, got {steps}")
    if iters < 1:
        raise ValueError(f"--iters must be at least 1 (timed iterations, after an untimed one), got {iters}")
    if pop < 2:  # a search's population (SearchConfig's check, after the imports and a model built)
        raise ValueError(f"--pop must be at least 2 (the population of each generation), got {pop}")
    from workbench.fm import check_fm_name

    for fm in fms:  # before any model is built (an unknown one was refused after ViT-B-32 was made and saved)
        check_fm_name(fm)  # an openclip:ARCH's architecture too
        # the hub's weights: online, and not what is timed here
        if not fm.startswith("openclip:") and fm not in ("pixels", "efficientnet-lite0"):
            raise ValueError(f"--fm {fm}: the bench times pixels, efficientnet-lite0 and openclip:ARCH (random "
                             "weights of any open_clip architecture; CLIP's is openclip:ViT-B-32-quickgelu)")

    import open_clip
    import torch

    from workbench.asal.evaluate import EvalConfig
    from workbench.fm import quiet_logs
    from workbench.kernels.device import describe, resolve_device

    dev = resolve_device(device)
    out: dict = {"pop": pop, "device": describe(dev), "machine": machine(),
                 "date": time.strftime("%Y-%m-%d"), "unit": f"ms per iteration (median of {iters})"}
    with tempfile.TemporaryDirectory() as tmp:
        weights: dict[str, str] = {}  # random-initialised weights of each open_clip architecture timed
        for fm in fms:
            if fm.startswith("openclip:") and fm not in weights:
                weights[fm] = f"{tmp}/{len(weights)}.pt"
                torch.manual_seed(0)
                with quiet_logs():
                    model = open_clip.create_model(fm.split(":", 1)[1], pretrained=None)
                torch.save(model.state_dict(), weights[fm])
        for name in substrates:
            for fm in fms:
                for k in frames:
                    ev = EvalConfig(name, fm, weights=weights.get(fm), steps=steps, frames=k, chunk=pop,
                                    device=str(dev))
                    # one untimed iteration first on every device: Taichi compiles its CPU kernels on first
                    # use too (the first cell of a CPU run took 3.6 s against 0.6 s for the next)
                    out[f"{name}/{fm.split(':')[-1]}/K{k}"] = asal_iteration(ev, "openended", pop, iters=iters,
                                                                             warmup=True)
    return out


_COUNT_FRAMES = """() => { const fig = Bokeh.documents[0].get_model_by_name('lab-frame');
  const src = fig.renderers[0].data_source; window.__frames = 0;
  src.change.connect(() => { window.__frames += 1; }); return true; }"""


def bench_dashboards(sessions: int = 8, seconds: float = 30.0, substrate: str = "lenia", browser=None,
                     url: str | None = None) -> dict:
    """Load test: `sessions` Chromium pages play the Lab at once for `seconds`; frames per second that each
    page received, and any console / page errors. Starts its own `workbench serve` on a free port unless given
    the `url` of one that runs (--url), and its own Playwright Chromium unless given a launched `browser`."""
    import shutil
    import subprocess
    import sys
    import tempfile

    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # a dev extra: an installed wheel has no Playwright
        raise ValueError("the load test needs Playwright, which the workbench installs only with its dev extra: "
                         "pip install playwright (it drives Debian's chromium: no browser download)") from None

    from workbench.local_server import free_port, wait_live

    if sessions < 1 or seconds <= 0:
        raise ValueError(f"--sessions and --seconds must be greater than 0, got {sessions} and {seconds}")
    chromium = None if browser is not None else shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None and chromium is None:
        raise ValueError("the load test needs Debian's chromium (apt-get install chromium)")
    server = scratch = None
    if url is not None:
        url = url.rstrip("/") if "://" in url else f"http://{url.rstrip('/')}"
        if not wait_live(url, 3.0):
            raise ValueError(f"no workbench server answers at {url} (its /liveness): start one with "
                             "`workbench serve`, or leave out --url and the bench starts its own")
    else:
        port = free_port()
        # the bench's own server reads an empty run store, removed after it
        scratch = tempfile.TemporaryDirectory(prefix="bench-dashboards-")
        server = subprocess.Popen([sys.executable, "-m", "workbench", "serve", "--port", str(port), "--runs",
                                   scratch.name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
    try:
        if server is not None and not wait_live(url, 120.0, server):
            raise ValueError(f"the bench's own `workbench serve` did not answer at {url}: run `workbench serve` "
                             "to see why, then give its address with --url")
        errors: list[str] = []
        if browser is not None:
            frames, elapsed = _play_lab(browser, url, sessions, seconds, substrate, errors)
        else:
            with sync_playwright() as p:
                own = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
                frames, elapsed = _play_lab(own, url, sessions, seconds, substrate, errors)
                own.close()
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        if scratch is not None:
            scratch.cleanup()
    fps = [round(n / elapsed, 1) for n in frames]
    return {"sessions": sessions, "seconds": seconds, "substrate": substrate, "fps_per_session": fps,
            "fps_total": round(sum(fps), 1), "errors": errors,
            "machine": machine(), "date": time.strftime("%Y-%m-%d")}


def _play_lab(browser, url: str, sessions: int, seconds: float, substrate: str, errors: list) -> tuple[list, float]:
    context = browser.new_context()
    try:  # closed whatever happens: a server that is not ours must not go on playing these Labs
        pages = []
        for _ in range(sessions):
            page = context.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(f"{url}/lab", wait_until="networkidle")
            page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0 && "
                                   "Bokeh.documents[0].get_model_by_name('lab-frame') !== null", timeout=60000)
            if substrate != "lenia":
                page.get_by_label("Substrate").select_option(substrate)
            page.evaluate(_COUNT_FRAMES)
            pages.append(page)
        for page in pages:
            page.get_by_role("button", name="▶ play / pause").click()
        start = time.perf_counter()
        time.sleep(seconds)
        frames = [page.evaluate("() => window.__frames") for page in pages]
        elapsed = time.perf_counter() - start
    finally:
        context.close()
    return frames, elapsed


def bench_merge(zoo: str = "data/zoo", layers: int = 30, repeats: int = 2, methods=("ties", "dare_ties"),
                pop: int = 8, log=None) -> dict:
    """GB/s of merged weights, ours vs mergekit, on a SmolLM2-135M-sized state dict; seconds per recipe
    evaluation (merge + validation on every task of the zoo, n = 64 each) for each method and DFS. log(line), if
    given, is told each step as it starts (the bench takes a minute or more)."""
    say = log or (lambda line: None)
    from workbench.lm.zoo import load_zoo
    from workbench.merge.bench import bench_merge_tensors
    from workbench.merge.evolution import EvolveConfig, context, evaluate_genomes
    from workbench.merge.search import RecipeCMA

    z = load_zoo(zoo)  # a clear error naming `workbench zoo build` when missing, before a minute of timings
    if layers < 1 or repeats < 1:
        raise ValueError(f"--layers and --repeats must be at least 1, got {layers} and {repeats}")
    say(f"merging a {layers}-layer state dict: ours and mergekit, {', '.join(methods)}, best of {repeats}")
    out: dict = {"machine": machine(), "date": time.strftime("%Y-%m-%d"),
                 "tensors": bench_merge_tensors(layers, methods=tuple(methods), repeats=repeats)}
    experts = z.names[1:]
    per_eval = {}
    for method in (*methods, "dfs"):
        say(f"recipe evaluations: {method}, {pop} recipes on {len(z.tasks)} tasks, best of {max(1, repeats)}")
        cfg = EvolveConfig(zoo=str(zoo), models=experts if method != "dfs" else experts[:2], method=method,
                           tasks=z.tasks, pop=pop, n_eval=64)
        ctx = context(cfg)
        g = ctx.genome
        xs = RecipeCMA(g.initial(), g.bounds(), population=pop, seed=0,
                       steps=g.steps() if method == "dfs" else None).ask()
        evaluate_genomes(cfg, xs[:1])  # warm-up: tokenised sets, first merge
        best = float("inf")
        for _ in range(max(1, repeats)):
            start = time.perf_counter()
            evaluate_genomes(cfg, xs)
            best = min(best, time.perf_counter() - start)
        per_eval[method] = round(best / len(xs), 3)
    out["seconds_per_recipe_evaluation"] = per_eval
    out["zoo"] = {"models": z.names, "tasks": z.tasks}
    return out
