"""The `workbench` command (also `python -m workbench`)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from workbench.device_flag import add_device_argument, check_device

err = Console(stderr=True)


def _substrate(args):
    from workbench.simulations import make_substrate

    return make_substrate(args.substrate, device=getattr(args, "device", None))


def cmd_view(args) -> int:
    from workbench.export import load_theta
    from workbench.viewer import ViewerModel, run_viewer

    sub = _substrate(args)
    if args.window < 64:
        raise ValueError(f"--window must be at least 64 pixels, got {args.window}")
    model = ViewerModel(sub, load_theta(args.theta, sub), seed=args.seed, out_dir=Path(args.out_dir),
                        render_size=args.render_size or min(args.window, 512))
    run_viewer(model, window=args.window, max_frames=args.frames)
    for path in model.saved:
        print(path)
    return 0


def cmd_render(args) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from workbench.export import export, load_theta

    check_device(args.device)

    sub = _substrate(args)
    params = sub.decode(load_theta(args.theta, sub))
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeRemainingColumn(), console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task(f"{sub.name} → {Path(args.out).name}", total=args.steps)
        out = export(sub, params, args.steps, args.out, seed=args.seed, size=args.size, every=args.every,
                     fps=args.fps, progress=lambda n: bar.advance(task, n))
    print(out)
    return 0


def cmd_bench(args) -> int:
    from workbench import bench

    if args.target == "substrates":
        result = bench.bench_substrates(args.substrates or ("lenia", "boids", "plife"), min_time=args.min_time)
    elif args.target == "fm":
        result = bench.bench_fm(args.arch, batch=args.batch, precision=args.precision)
    elif args.target == "dashboards":
        result = bench.bench_dashboards(args.sessions, args.seconds, args.substrate)
    elif args.target == "merge":
        result = bench.bench_merge(args.zoo, layers=args.layers, repeats=args.repeats)
    elif args.target == "gpu":
        from workbench.bench_gpu import SECTIONS, bench_gpu

        result = bench_gpu(args.device, tuple(args.sections or SECTIONS), min_time=args.min_time, out_file=args.out,
                           log=lambda line: err.print(line))
    else:
        result = bench.bench_asal(args.substrates or ("lenia", "boids", "plife"), fms=tuple(args.fm), steps=args.steps,
                                  pop=args.pop, device=args.device)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


def _client(args):
    """A Dask client for --workers N (a LocalCluster) or --dask ADDRESS, else None."""
    if args.workers and args.dask:
        raise ValueError("give --workers N or --dask ADDRESS, not both")
    if args.workers:
        from workbench.scale import local_client

        return local_client(args.workers)
    if args.dask:
        from workbench.scale import connect

        return connect(args.dask)
    return None


@contextlib.contextmanager
def iteration_progress(description: str, total: int | None, label: str, value: Callable[[dict], str],
                       quiet: bool = False):
    """A rich progress bar (count, `label value`, elapsed, ETA) on stderr for a search loop; yields the
    on_iteration(done, total, metrics row) callback the drivers take."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TextColumn(f"{label} {{task.fields[value]}}"), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=err, disable=quiet) as bar:
        task = bar.add_task(description, total=total, value="–")

        def on_iteration(done: int, total: int, row: dict) -> None:
            bar.update(task, completed=done, total=total, value=value(row))

        yield on_iteration


#: `workbench asal` flags whose parser default is None, so that a --resume can tell the flags given from
#: defaults: their defaults, and the SearchConfig fields they set.
ASAL_DEFAULTS = {"fm": "efficientnet-lite0", "algorithm": "ga", "population": 256, "iters": 100, "frames": 1, "bs": 1,
                 "size": 224, "sigma": 0.1, "c_softmax": 0.0, "c_oe": 0.0, "chunk": 16, "seed": 0}
ASAL_FIELDS = {"substrate": "eval.substrate", "fm": "eval.fm", "weights": "eval.weights", "steps": "eval.steps",
               "frames": "eval.frames", "bs": "eval.bs", "size": "eval.size", "chunk": "eval.chunk",
               "prompt": "prompts", "target_image": "target_image", "algorithm": "algorithm",
               "population": "population", "iters": "iters", "pop": "pop", "sigma": "sigma", "seed": "seed",
               "c_softmax": "c_softmax", "c_oe": "c_oe"}


def cmd_asal(args) -> int:
    from workbench.asal.driver import FLAGS, SearchConfig, run_search
    from workbench.asal.evaluate import EvalConfig
    from workbench.runs import RunStore, check_resume, cli_command

    check_device(args.device)

    store = RunStore(args.runs)
    given = {field: getattr(args, dest) for dest, field in ASAL_FIELDS.items() if getattr(args, dest, None) is not None}
    cfg, resume, total = None, None, None
    if args.resume is not None:
        # everything that would refuse the resume, before a model loads or a progress bar starts
        run = store.open(args.resume)
        check_resume(run, args.search, given, names=FLAGS)
        run.check_resumable(trust_pickle=args.trust_pickle)
        resume, total = run.id, run.info["config"].get("iters")
    else:
        defaults = {**ASAL_DEFAULTS, "pop": 16 if args.search != "illuminate" else 32}

        def value(dest: str):
            v = getattr(args, dest, None)
            return v if v is not None else defaults[dest]

        if args.substrate is None:
            raise ValueError("--substrate is required (unless --resume RUN_ID)")
        ev = EvalConfig(args.substrate, value("fm"), weights=args.weights, steps=args.steps, frames=value("frames"),
                        bs=value("bs"), size=value("size"), chunk=value("chunk"), device=args.device)
        if args.search == "illuminate":
            extra = {"algorithm": value("algorithm"), "population": value("population")}
        else:
            extra = {"prompts": args.prompt or [], "target_image": args.target_image}
        cfg = SearchConfig(kind=args.search, eval=ev, iters=value("iters"), pop=value("pop"), sigma=value("sigma"),
                           seed=value("seed"), c_softmax=value("c_softmax"), c_oe=value("c_oe"), **extra)
        total = cfg.iters
        for note in cfg.notes:
            err.print(f"[yellow]note:[/] {note}")
    client = _client(args)
    try:
        with iteration_progress(f"asal {args.search}", total, "loss", lambda row: f"{row['best_loss']:.4f}",
                                quiet=args.quiet) as on_iteration:
            run = run_search(cfg, store, resume=resume, client=client, on_iteration=on_iteration,
                             device=args.device, kind=args.search, trust_pickle=args.trust_pickle,
                             command=cli_command())
    finally:
        if client is not None:
            client.close()
    info = run.info
    print(json.dumps({"id": run.id, "path": str(run.path), "status": info["status"],
                      "iterations": info["iterations"], "best_loss": info["best_loss"]}))
    return 0


def _runs_tables(rows: list[dict]) -> None:
    """`workbench runs list`: one table per family of runs (ASAL searches, merge evolutions), each with the
    columns that describe its runs, and the best value in its metric's units and direction."""
    from rich.table import Table

    console = Console(width=max(Console().width, 140))
    families = {}
    for r in rows:
        families.setdefault("merge" if r["kind"] == "merge" else "asal", []).append(r)
    for family, group in families.items():
        describe = list(dict.fromkeys(c for r in group for c in r["columns"]))
        metrics = sorted({(r["metric"], r["better"]) for r in group})
        best = " / ".join(f"best {m} {'↓' if b == 'lower' else '↑'}" for m, b in metrics)
        kind = ["kind"] if family == "asal" else []
        table = Table(*kind, *describe, "status", "iterations", best, "id",
                      title="ASAL searches" if family == "asal" else "merge evolutions")
        for r in group:
            cells = [", ".join(v) if isinstance(v := r.get(c), list) else "" if v is None else str(v)
                     for c in describe]
            value = "" if r["best"] is None else f"{r['best']:.4f}"
            table.add_row(*([r["kind"]] if kind else []), *cells, r["status"], str(r["iterations"]), value, r["id"])
        console.print(table)
    for r in rows:
        if r["resume_command"] and r["status"] == "interrupted":
            err.print(f"{r['id']} was interrupted; resume it with: {r['resume_command']}", soft_wrap=True)


def cmd_runs(args) -> int:
    from workbench.runs import RunStore, catalog_row

    store = RunStore(args.runs)
    if args.action == "list":
        rows = store.list()
        if args.json:
            print(json.dumps(rows))
        else:
            _runs_tables(rows)
        for name in store.broken():
            err.print(f"[yellow]warning:[/] {name} is not a readable run (corrupt or foreign run.json); skipped")
        return 0
    if args.action == "show":
        run = store.open(args.ids[0])
        info = run.info
        row = catalog_row(info, store.root)
        # the live status ("interrupted" when the process is gone) and how to go on; run.json's own as written
        info.update({k: row[k] for k in ("status", "metric", "better", "best", "resume_command")},
                    recorded_status=info["status"])
        info["metrics"] = store.metrics(run.id)
        info["files"] = sorted(p.name for p in run.path.iterdir() if not p.name.startswith("."))
        print(json.dumps(info, indent=None if args.json else 2, default=str))
        return 0
    a, b = (store.open(i) for i in args.ids)
    out = {}
    for run in (a, b):
        row, metrics = catalog_row(run.info, store.root), store.metrics(run.id)
        out[run.id] = {k: row[k] for k in ("kind", "substrate", "fm", "status", "iterations", "best_loss", "seed",
                                           "metric", "better", "best")}
        out[run.id]["best_loss_by_iteration"] = [m["best_loss"] for m in metrics]
    print(json.dumps(out, indent=None if args.json else 2))
    return 0


def cmd_figure(args) -> int:
    from workbench import figures
    from workbench.runs import RunStore

    store = RunStore(args.runs)
    if args.what == "curves":
        out = figures.save(figures.loss_curves(store, args.ids, args.metric), args.out, dpi=args.dpi)
    elif args.what == "atlas":
        out = figures.save(figures.atlas(store, args.ids[0]), args.out, dpi=args.dpi)
    else:
        out = figures.best_video(store, args.ids[0], args.out, steps=args.steps, size=args.size)
    print(out)
    return 0


def cmd_serve(args) -> int:
    from workbench.dashboards.app import PAGES, serve

    pages = ", ".join(f"/{p}" for p in PAGES)
    err.print(f"serving http://{args.address}:{args.port}/ (pages: {pages}; Ctrl-C stops)")
    serve(port=args.port, runs_dir=args.runs, address=args.address, show=args.show)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from workbench import __version__

    parser = argparse.ArgumentParser(prog="workbench", description="ASAL substrates, searches and explorers.")
    parser.add_argument("--version", action="version", version=f"workbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    choices = ["lenia", "boids", "plife"]

    view = sub.add_parser("view", help="real-time pygame window of a substrate",
                          description="Keys: space pause, n new θ (σ=0.1), r reset, s save PNG, +/- steps per "
                                      "frame, q quit.")
    view.add_argument("substrate", choices=choices)
    view.add_argument("--theta", help="θ as a .npy file (default: zeros, the reference defaults)")
    view.add_argument("--seed", type=int, default=0)
    view.add_argument("--window", type=int, default=768, help="window size in pixels")
    view.add_argument("--render-size", type=int, default=None, help="render resolution (default: min(window, 512))")
    view.add_argument("--out-dir", default=".", help="where s saves PNGs")
    view.add_argument("--frames", type=int, default=None, help="quit after this many frames")
    view.set_defaults(func=cmd_view)

    render = sub.add_parser("render", help="write a PNG (last frame), GIF or MP4 of a simulation")
    render.add_argument("substrate", choices=choices)
    render.add_argument("--steps", type=int, required=True, help="simulation steps after init")
    render.add_argument("--out", required=True, help="FILE.png, FILE.gif or FILE.mp4")
    render.add_argument("--theta", help="θ as a .npy file (default: zeros)")
    render.add_argument("--seed", type=int, default=0)
    render.add_argument("--size", type=int, default=224)
    render.add_argument("--every", type=int, default=1, help="video: one frame every N steps")
    render.add_argument("--fps", type=int, default=30)
    add_device_argument(render)
    render.set_defaults(func=cmd_render)

    bench = sub.add_parser("bench", help="benchmarks (JSON)")
    bench_sub = bench.add_subparsers(dest="target", required=True, metavar="TARGET")
    subs = bench_sub.add_parser("substrates", help="steps/s at P=1, sim-steps/s at P=16, render ms")
    subs.add_argument("--json", action="store_true", help="one JSON line")
    subs.add_argument("--substrates", nargs="*", choices=choices)
    subs.add_argument("--min-time", type=float, default=1.0, help="seconds per measurement")
    subs.set_defaults(func=cmd_bench)
    fm = bench_sub.add_parser("fm", help="img/s: plain open_clip fp32 vs workbench.fm, and their min cosine")
    fm.add_argument("--json", action="store_true", help="one JSON line")
    fm.add_argument("--arch", default="ViT-B-32")
    fm.add_argument("--batch", type=int, default=32)
    fm.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                    help="auto: bf16 where the CPU has bf16 instructions and the cosine check passes")
    fm.set_defaults(func=cmd_bench)
    asal_b = bench_sub.add_parser("asal", help="seconds per search iteration (K = 1 and 8; pixels and ViT-B-32)")
    asal_b.add_argument("--json", action="store_true", help="one JSON line")
    asal_b.add_argument("--substrates", nargs="*", choices=choices)
    asal_b.add_argument("--steps", type=int, default=None, help="simulation steps (default: the reference's)")
    asal_b.add_argument("--pop", type=int, default=16)
    add_device_argument(asal_b)
    asal_b.add_argument("--fm", nargs="+", default=["pixels", "openclip:ViT-B-32"],
                        help="foundation models to time (default: pixels and a random-initialised ViT-B-32)")
    asal_b.set_defaults(func=cmd_bench)
    dash = bench_sub.add_parser("dashboards", help="load test: N Chromium sessions play the Lab; fps each")
    dash.add_argument("--json", action="store_true", help="one JSON line")
    dash.add_argument("--sessions", type=int, default=8)
    dash.add_argument("--seconds", type=float, default=30.0)
    dash.add_argument("--substrate", choices=choices, default="lenia")
    dash.set_defaults(func=cmd_bench)
    mb = bench_sub.add_parser("merge", help="merge GB/s (ours vs mergekit, SmolLM2-sized) and s per recipe evaluation")
    mb.add_argument("--json", action="store_true", help="one JSON line")
    mb.add_argument("--zoo", default="data/zoo", help="zoo for the recipe evaluations (default: data/zoo)")
    mb.add_argument("--layers", type=int, default=30, help="layers of the synthetic state dict (SmolLM2: 30)")
    mb.add_argument("--repeats", type=int, default=2, help="best of N timings")
    mb.set_defaults(func=cmd_bench)

    gpu = bench_sub.add_parser("gpu", help="the GPU conformance check and benchmark in one run (needs CUDA)")
    gpu.add_argument("--json", action="store_true", help="one JSON line")
    gpu.add_argument("--device", default="cuda", help="CUDA device (default: cuda)")
    gpu.add_argument("--sections", nargs="*", choices=["conformance", "substrates", "fm", "asal", "lm"],
                     help="run only these (default: all)")
    gpu.add_argument("--min-time", type=float, default=1.0, help="seconds per measurement")
    gpu.add_argument("--out", help="also write the JSON here, section by section")
    gpu.set_defaults(func=cmd_bench)

    asal = sub.add_parser("asal", help="ASAL searches: target, openended, illuminate")
    asal_sub = asal.add_subparsers(dest="search", required=True, metavar="SEARCH")
    for name, text in (("target", "Sep-CMA-ES towards prompts or a target image"),
                       ("openended", "Sep-CMA-ES for open-endedness (optionally with prompts)"),
                       ("illuminate", "a diverse population: the reference GA or MAP-Elites")):
        a = asal_sub.add_parser(name, help=text, description=text)
        a.add_argument("--substrate", choices=choices)
        # settings default to None here (defaults: ASAL_DEFAULTS), so that --resume can tell given flags apart
        a.add_argument("--fm", help="clip | openclip:ARCH | efficientnet-lite0 | pixels (default: efficientnet-lite0, "
                                    "offline)")
        a.add_argument("--weights", help="local weights file (state dict) for clip / openclip:ARCH")
        if name != "illuminate":
            a.add_argument("--prompt", action="append", help="target text (repeat for a sequence)")
            a.add_argument("--target-image", help="target image file (for image-only FMs too); the run keeps a copy")
        else:
            a.add_argument("--algorithm", choices=["ga", "map-elites"], help="default: ga")
            a.add_argument("--population", type=int, help="GA population size (default: 256)")
        a.add_argument("--iters", type=int, help="default: 100")
        a.add_argument("--pop", type=int, help="CMA population / GA children / MAP-Elites batch (default: "
                                               f"{16 if name != 'illuminate' else 32})")
        a.add_argument("--steps", type=int, default=None, help="simulation steps (default: the reference's)")
        a.add_argument("--frames", type=int, help="K frames sampled at chunk ends (default: 1)")
        a.add_argument("--bs", type=int, help="initial-state seeds averaged per θ (default: 1)")
        a.add_argument("--size", type=int, help="render size fed to the FM and of best.png / best.mp4 (default: 224)")
        a.add_argument("--sigma", type=float, help="default: 0.1")
        a.add_argument("--c-softmax", type=float, help="weight of the softmax target loss (default: 0)")
        a.add_argument("--c-oe", type=float, help="weight of the open-endedness loss (default: 0)")
        a.add_argument("--chunk", type=int, help="simulations per batch / Dask task (default: 16)")
        add_device_argument(a, "; simulations and the FM (with --resume: default the run's own)")
        a.add_argument("--seed", type=int, help="default: 0")
        a.add_argument("--runs", default="runs", help="run store folder (default: runs)")
        a.add_argument("--resume", metavar="RUN_ID", help="continue a stopped or killed run (an id or a unique prefix; "
                                                         "settings flags must match the run's or be left out)")
        a.add_argument("--trust-pickle", action="store_true",
                       help="with --resume: also load an old-format checkpoint.pkl (a pickle can run code: only for "
                            "run folders you trust)")
        a.add_argument("--workers", type=int, default=0, help="start a Dask LocalCluster with N workers")
        a.add_argument("--dask", metavar="ADDRESS", help="use an existing Dask scheduler, e.g. tcp://host:8786")
        a.add_argument("--quiet", action="store_true", help="no progress bar")
        a.set_defaults(func=cmd_asal)

    figure = sub.add_parser("figure", help="paper figures of runs: curves, atlas, video")
    figure_sub = figure.add_subparsers(dest="what", required=True, metavar="WHAT")
    for name, n, text in (("curves", "+", "loss curves of runs (.png .svg .pdf .html)"),
                          ("atlas", 1, "an illumination run's atlas (.png .svg .pdf .html)"),
                          ("video", 1, "the best simulation of a run (.mp4 .gif .png)")):
        f = figure_sub.add_parser(name, help=text)
        f.add_argument("ids", nargs=n, metavar="ID")
        f.add_argument("--out", required=True)
        f.add_argument("--runs", default="runs", help="run store folder (default: runs)")
        f.add_argument("--dpi", type=int, default=None, help="raster resolution (default: 300)")
        f.add_argument("--metric", default="best_loss", help="curves: the metrics column to plot")
        f.add_argument("--steps", type=int, default=None, help="video: steps (default: the run's)")
        f.add_argument("--size", type=int, default=224, help="video: frame size")
        f.set_defaults(func=cmd_figure)

    serve = sub.add_parser("serve", help="the Panel dashboards (/lab /search /runs /atlas /merge) in one server")
    serve.add_argument("--port", type=int, default=5006)
    serve.add_argument("--address", default="127.0.0.1")
    serve.add_argument("--runs", default="runs", help="run store folder (default: runs)")
    serve.add_argument("--show", action="store_true", help="open a browser")
    serve.set_defaults(func=cmd_serve)

    runs = sub.add_parser("runs", help="the run store: list, show, compare")
    runs_sub = runs.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, n, text in (("list", 0, "all runs"), ("show", 1, "one run with its metrics"),
                          ("compare", 2, "two runs side by side")):
        r = runs_sub.add_parser(name, help=text)
        if n:
            r.add_argument("ids", nargs=n, metavar="ID", help="a run id or a unique prefix of one")
        r.add_argument("--runs", default="runs", help="run store folder (default: runs)")
        r.add_argument("--json", action="store_true")
        r.set_defaults(func=cmd_runs)

    from workbench.lm.cli import register as register_zoo
    from workbench.merge.cli import register as register_merge

    register_zoo(sub)
    register_merge(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as error:
        err.print(f"[bold red]error:[/] {error}", soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
