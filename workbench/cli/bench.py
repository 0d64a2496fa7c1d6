"""`workbench bench …`: benchmarks that print JSON (never tests)."""

from __future__ import annotations

import argparse
import json

from workbench.cli.common import (
    POSITIVE,
    SEED,
    SUBSTRATES,
    add_device_argument,
    check_device,
    check_out_file,
    err,
    positive,
)
from workbench.cli.namm import TASK_NAMES

#: --reference of `bench substrates` and `bench gpu`
REFERENCE_HELP = ("a checkout of the reference implementation (github.com/SakanaAI/asal): its substrates timed beside "
                  "ours, the same way (needs jax, flax, einops and matplotlib)")


def check_bench_args(args) -> None:
    """One ValueError naming the flag for files and zoos that are not there (numbers are checked by their
    argparse types: a zero or negative one would divide by zero, time nothing or make empty batches)."""
    check_out_file(getattr(args, "out", None))
    if getattr(args, "policy", None) and getattr(args, "run", None):
        raise ValueError("give --policy FILE or --run ID, not both")
    if args.target == "asal" or (args.target == "substrates" and args.device is not None):
        check_device(args.device)  # named as the flag, with the fallback (substrates' default is the CPU)
    if args.target == "gpu":  # --device as a flag: a raw torch error, or "needs a CUDA GPU" where one was there
        if not args.device.startswith("cuda"):
            raise ValueError(f"--device {args.device}: bench gpu times a CUDA GPU; give --device cuda or cuda:N (on "
                             "the CPU use `workbench bench substrates|fm|asal`)")
        from workbench.kernels.device import cuda_available

        if cuda_available():
            check_device(args.device)  # cuda:N of a GPU that is not there
    if getattr(args, "reference", None):
        from workbench.bench_reference import check_reference

        check_reference(args.reference)
    if args.target in ("merge", "qd", "experts") and not (args.target == "experts" and "zoo" not in args.models):
        from workbench.lm.zoo import load_zoo

        load_zoo(args.zoo)  # its own clear error (the build command) when there is no zoo there


def cmd_bench(args) -> int:
    from workbench import bench
    from workbench.machine import machine

    check_bench_args(args)
    if args.target == "substrates":
        result = bench.bench_substrates(args.substrates or tuple(SUBSTRATES), min_time=args.min_time,
                                        reference=args.reference, device=args.device or "cpu")
    elif args.target == "fm":
        result = bench.bench_fm(args.arch, batch=args.batch, repeats=args.repeats, precision=args.precision)
    elif args.target == "dashboards":
        result = bench.bench_dashboards(args.sessions, args.seconds, args.substrate, url=args.url)
    elif args.target == "merge":
        result = bench.bench_merge(args.zoo, layers=args.layers, repeats=args.repeats,
                                   log=None if args.quiet else err.print)  # a minute or more: each step said
    elif args.target == "qd":
        from workbench.qd.bench import bench_qd

        result = bench_qd(args.zoo, tuple(args.tasks), gens=args.gens, batch=args.batch, batch_gens=args.batch_gens,
                          workers=args.workers, n_eval=args.n_eval, n_test=args.n_test,
                          log=None if args.quiet else err.print)  # minutes: each run said
    elif args.target == "experts":
        from workbench.experts.bench import bench_experts

        result = bench_experts(args.zoo, tuple(args.models), steps=args.steps, repeats=args.repeats,
                               threads=args.threads)
    elif args.target == "namm":
        from workbench.namm.bench import BenchConfig, bench_namm

        policy = args.policy
        if args.run:
            from workbench.namm.saved import run_policy_file

            policy = str(run_policy_file(args.runs, args.run))
        result = bench_namm(BenchConfig(
            model=args.model, tasks=args.tasks, policy=policy, budgets=args.budgets, presses=args.presses, n=args.n,
            length=args.length, n_up=args.n_up, seed=args.seed, threads=args.threads, speed_length=args.speed_length,
            decode_tokens=args.decode_tokens, pop=args.pop, cma_prompts=args.cma_prompts,
            max_new_tokens=args.max_new_tokens,
            time_full_cma=args.time_full_cma, sections=args.sections), log=None if args.quiet else err.print)
        if args.out:
            from pathlib import Path

            from workbench.atomic import atomic_write

            atomic_write(Path(args.out), lambda p: p.write_text(json.dumps(result)))
    elif args.target == "gpu":
        from workbench.bench_gpu import SECTIONS, bench_gpu

        result = bench_gpu(args.device, tuple(args.sections or SECTIONS), min_time=args.min_time, out_file=args.out,
                           log=lambda line: err.print(line), reference=args.reference)
    else:
        result = bench.bench_asal(args.substrates or ("lenia", "boids", "plife"), fms=tuple(args.fm), steps=args.steps,
                                  pop=args.pop, device=args.device, iters=args.iters)
    # every figure with the machine it was timed on (CPU model and flags, cores, memory, GPU, versions)
    result.setdefault("machine", machine())  # (the bench functions record it; one that does not, here)
    result = bench.finite(result)  # JSON has no Infinity / NaN (a bit-exact render's PSNR is infinite): null
    print(json.dumps(result, allow_nan=False) if args.json else json.dumps(result, indent=2, allow_nan=False))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="benchmarks (JSON)")
    bench_sub = bench.add_subparsers(dest="target", required=True, metavar="TARGET")
    subs = bench_sub.add_parser("substrates", help="steps/s at P=1, sim-steps/s at P=16, render ms")
    subs.add_argument("--json", action="store_true", help="one JSON line")
    subs.add_argument("--substrates", nargs="+", choices=SUBSTRATES, help="substrates to time (default: all ten)")
    subs.add_argument("--min-time", type=positive, default=1.0, help="seconds per measurement")
    subs.add_argument("--reference", metavar="DIR", help=REFERENCE_HELP)
    subs.add_argument("--device", metavar="DEVICE", help="cpu, cuda or cuda:N (default: cpu, the Taichi kernels; "
                      "`bench gpu` times a GPU's engines and more)")
    subs.set_defaults(func=cmd_bench)
    fm = bench_sub.add_parser("fm", help="img/s: plain open_clip fp32 vs workbench.fm, and their min cosine")
    fm.add_argument("--json", action="store_true", help="one JSON line")
    fm.add_argument("--arch", default="ViT-B-32", help="open_clip architecture to time (random-initialised)")
    fm.add_argument("--batch", type=POSITIVE, default=32, help="images per embedding call")
    fm.add_argument("--repeats", type=POSITIVE, default=5, help="best of N timings of each tower (default: 5)")
    fm.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                    help="auto: bf16 where the CPU has bf16 instructions and the cosine check passes")
    fm.set_defaults(func=cmd_bench)
    asal_b = bench_sub.add_parser("asal", help="milliseconds per search iteration (K = 1 and 8; pixels and ViT-B-32), "
                                  "each after one untimed iteration")
    asal_b.add_argument("--json", action="store_true", help="one JSON line")
    asal_b.add_argument("--substrates", nargs="+", choices=SUBSTRATES,
                        help="substrates to time (default: lenia boids plife)")
    asal_b.add_argument("--steps", type=POSITIVE, default=None, help="simulation steps (default: the reference's)")
    asal_b.add_argument("--pop", type=POSITIVE, default=16, help="CMA population of the timed iterations")
    asal_b.add_argument("--iters", type=POSITIVE, default=3, help="timed iterations, after an untimed one; the "
                        "median is printed (default: 3)")
    add_device_argument(asal_b)
    asal_b.add_argument("--fm", nargs="+", default=["pixels", "openclip:ViT-B-32"],
                        help="foundation models to time (default: pixels and a random-initialised ViT-B-32)")
    asal_b.set_defaults(func=cmd_bench)
    dash = bench_sub.add_parser("dashboards", help="load test: N Chromium sessions play the Lab; fps each")
    dash.add_argument("--json", action="store_true", help="one JSON line")
    dash.add_argument("--sessions", type=POSITIVE, default=8, help="Chromium sessions playing the Lab at once")
    dash.add_argument("--seconds", type=positive, default=30.0, help="seconds each session plays")
    dash.add_argument("--substrate", choices=SUBSTRATES, default="lenia", help="the substrate the Lab plays")
    dash.add_argument("--url", help="a running `workbench serve` to load (default: the bench starts its own)")
    dash.set_defaults(func=cmd_bench)
    mb = bench_sub.add_parser("merge", help="merge GB/s (ours vs mergekit, SmolLM2-sized) and s per recipe evaluation")
    mb.add_argument("--json", action="store_true", help="one JSON line")
    mb.add_argument("--zoo", default="data/zoo", help="zoo for the recipe evaluations (default: data/zoo)")
    mb.add_argument("--layers", type=POSITIVE, default=30, help="layers of the synthetic state dict (30, as SmolLM2)")
    mb.add_argument("--repeats", type=POSITIVE, default=2, help="best of N timings")
    mb.add_argument("--quiet", action="store_true", help="no line per step on stderr")
    mb.set_defaults(func=cmd_bench)

    qb = bench_sub.add_parser("qd", help="CycleQD: s per generation serial and batched on Dask, bytes per generation")
    qb.add_argument("--json", action="store_true", help="one JSON line")
    qb.add_argument("--zoo", default="data/zoo", help="zoo (default: data/zoo)")
    qb.add_argument("--tasks", nargs="+", metavar="TASK", default=["sort", "reverse", "brackets"],
                    help="K >= 2 zoo tasks of the timed runs")
    qb.add_argument("--gens", type=POSITIVE, default=200, help="generations of the serial B = 1 run (default: 200)")
    qb.add_argument("--batch", type=POSITIVE, default=4,
                    help="children per generation of the batched runs (default: 4)")
    qb.add_argument("--batch-gens", type=POSITIVE, default=50, help="generations of the batched runs (default: 50)")
    qb.add_argument("--workers", type=POSITIVE, default=2, metavar="N",
                    help="Dask workers of the batched runs (default: 2)")
    # as `qd cycle`'s (checked by QDRunConfig, whose errors name them): each timed run's sizes
    qb.add_argument("--n-eval", type=int, help="validation prompts per task per child (default: 64)")
    qb.add_argument("--n-test", type=int, help="test prompts per task for the final report (default: 128)")
    qb.add_argument("--quiet", action="store_true", help="no line per run on stderr")
    qb.set_defaults(func=cmd_bench)

    xb = bench_sub.add_parser("experts", help="Transformer²: s per REINFORCE step (zoo, SmolLM2), s per CEM "
                                              "generation, tokens/s base vs SVF-composed")
    xb.add_argument("--json", action="store_true", help="one JSON line")
    xb.add_argument("--zoo", default="data/zoo", help="zoo whose base is timed (default: data/zoo)")
    xb.add_argument("--models", nargs="+", choices=["zoo", "smollm2"], default=["zoo", "smollm2"],
                    help="models to time (default: both; SmolLM2 adds about a minute)")
    xb.add_argument("--steps", type=POSITIVE, default=5, help="timed REINFORCE steps after a warm-up (default: 5)")
    xb.add_argument("--repeats", type=POSITIVE, default=3, help="best of N token-rate timings (default: 3)")
    xb.add_argument("--threads", type=POSITIVE, help="torch threads (default: torch's)")
    xb.set_defaults(func=cmd_bench)

    nb = bench_sub.add_parser("namm", help="NAMM: task score vs kept-cache fraction (NAMM, full, recent, H2O, kvpress "
                                           "presses), prefill/decode tokens/s, s per CMA-ES generation")
    nb.add_argument("--json", action="store_true", help="one JSON line")
    nb.add_argument("--model", default="smollm2", help="'smollm2' (default), a .gguf file or a model folder")
    nb.add_argument("--tasks", nargs="+", choices=TASK_NAMES, metavar="TASK", default=["passkey", "kv"],
                    help="NAMM tasks scored: " + ", ".join(TASK_NAMES))
    nb.add_argument("--policy", help="a trained policy file (policy.safetensors); without one: no NAMM rows")
    nb.add_argument("--run", metavar="ID", help="a namm run (its policy.safetensors)")
    nb.add_argument("--runs", default="runs", help="run store folder for --run (default: runs)")
    nb.add_argument("--budgets", nargs="+", type=float, default=[0.25, 0.5],
                    help="kept fractions for the baselines and presses (NAMM's own is added)")
    nb.add_argument("--presses", nargs="*", default=["streamingllm", "snapkv", "tova", "observed", "knorm"],
                    help="kvpress presses (default: streamingllm snapkv tova observed knorm; none, or the flag "
                         "alone: no kvpress)")
    nb.add_argument("--n", type=POSITIVE, default=8, help="test prompts per task (default: 8)")
    nb.add_argument("--length", type=POSITIVE, default=512, help="prompt tokens (default: 512)")
    nb.add_argument("--max-new-tokens", type=POSITIVE, default=8,
                    help="answer tokens at most of the scored prompts (default: 8)")
    nb.add_argument("--n-up", type=POSITIVE, help="tokens between eviction steps (default: the policy's, else 64)")
    nb.add_argument("--seed", type=SEED, default=0, help="prompt seed (test split)")
    nb.add_argument("--threads", type=POSITIVE, default=1,
                    help="torch threads (default: 1; 2 threads on a shared 2-core VM ran 5-10x slower)")
    nb.add_argument("--speed-length", type=POSITIVE, default=1024,
                    help="prompt tokens of the speed test (default: 1024)")
    nb.add_argument("--decode-tokens", type=POSITIVE, default=32, help="decoded tokens of the speed test (default: 32)")
    nb.add_argument("--pop", type=POSITIVE, default=8, help="population of the timed CMA-ES generation (default: 8)")
    nb.add_argument("--cma-prompts", type=POSITIVE, default=2,
                    help="prompts per candidate, timed generation (default: 2)")
    nb.add_argument("--time-full-cma", action="store_true", help="also time full-covariance CMA-ES (minutes)")
    nb.add_argument("--sections", nargs="+", choices=["scores", "speed", "cma"], default=["scores", "speed", "cma"],
                    help="run only these")
    nb.add_argument("--out", help="also write the JSON to this file (atomically)")
    nb.add_argument("--quiet", action="store_true", help="no per-method lines on stderr")
    nb.set_defaults(func=cmd_bench)

    gpu = bench_sub.add_parser("gpu", help="the GPU conformance check and benchmark in one run (needs CUDA)")
    gpu.add_argument("--json", action="store_true", help="one JSON line")
    gpu.add_argument("--device", default="cuda", help="CUDA device (default: cuda)")
    gpu.add_argument("--sections", nargs="+", choices=["conformance", "substrates", "fm", "asal", "lm"],
                     help="run only these (default: all)")
    gpu.add_argument("--min-time", type=positive, default=1.0, help="seconds per measurement (default: 1; the FM's "
                     "take twice it, and asal times 5 iterations a second of it, 3 to 10)")
    gpu.add_argument("--out", help="also write the JSON here, section by section")
    gpu.add_argument("--reference", metavar="DIR", help=REFERENCE_HELP)
    gpu.set_defaults(func=cmd_bench)
