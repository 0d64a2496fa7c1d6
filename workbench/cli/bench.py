"""`workbench bench …`: benchmarks that print JSON (never tests)."""

from __future__ import annotations

import argparse
import json

from workbench.cli.common import SUBSTRATES, add_device_argument, err


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


def register(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="benchmarks (JSON)")
    bench_sub = bench.add_subparsers(dest="target", required=True, metavar="TARGET")
    subs = bench_sub.add_parser("substrates", help="steps/s at P=1, sim-steps/s at P=16, render ms")
    subs.add_argument("--json", action="store_true", help="one JSON line")
    subs.add_argument("--substrates", nargs="*", choices=SUBSTRATES)
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
    asal_b.add_argument("--substrates", nargs="*", choices=SUBSTRATES)
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
    dash.add_argument("--substrate", choices=SUBSTRATES, default="lenia")
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
