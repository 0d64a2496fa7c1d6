"""The `workbench` command (also `python -m workbench`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from rich.console import Console

err = Console(stderr=True)


def _substrate(args):
    from workbench.simulations import make_substrate

    return make_substrate(args.substrate)


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
    from workbench.bench import bench_substrates

    result = bench_substrates(args.substrates or ("lenia", "boids", "plife"), min_time=args.min_time)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
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
    render.set_defaults(func=cmd_render)

    bench = sub.add_parser("bench", help="benchmarks (JSON)")
    bench_sub = bench.add_subparsers(dest="target", required=True, metavar="TARGET")
    subs = bench_sub.add_parser("substrates", help="steps/s at P=1, sim-steps/s at P=16, render ms")
    subs.add_argument("--json", action="store_true", help="one JSON line")
    subs.add_argument("--substrates", nargs="*", choices=choices)
    subs.add_argument("--min-time", type=float, default=1.0, help="seconds per measurement")
    subs.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as error:
        err.print(f"[bold red]error:[/] {error}")
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
