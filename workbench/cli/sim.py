"""`workbench view` (a live pygame window) and `workbench render` (PNG / GIF / MP4 of a simulation)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.cli.common import (
    FRAME_SIZE,
    POSITIVE,
    SEED,
    SUBSTRATES,
    add_device_argument,
    add_video_arguments,
    check_device,
    err,
    video_arguments,
    whole,
)

if TYPE_CHECKING:
    from workbench.viewer import ViewerModel

MAX_WINDOW = 16384  # SDL's largest window ("Window is too large" above it, after the kernels were built)


def _substrate(args):
    from workbench.simulations import make_substrate

    return make_substrate(args.substrate, device=getattr(args, "device", None))


def _theta(args, sub):
    """θ from --theta, or the substrate's viewing default (zeros; Game of Life: Conway's B3/S23, not the dead
    rule 0)."""
    from workbench.export import load_theta
    from workbench.viewer import default_theta

    return default_theta(sub) if args.theta is None else load_theta(args.theta, sub)


def _note_seed(args, sub) -> None:
    """A --seed the substrate's initial state does not read (Lenia's and Flow-Lenia's are fixed patterns) is said:
    two seeds gave the same picture without a word."""
    from workbench.cli.common import say

    if args.seed != 0 and not sub.seeded_init:
        say("note", f"{sub.name} starts from one fixed initial state: --seed {args.seed} changes nothing")


def viewer_model(args) -> ViewerModel:
    """The viewer's model for `workbench view`'s arguments: frames rendered at --render-size, else at the
    window's size up to 512 (a larger render costs each frame and the window scales it up anyway)."""
    from workbench.viewer import ViewerModel

    sub = _substrate(args)
    _note_seed(args, sub)
    return ViewerModel(sub, _theta(args, sub), seed=args.seed, out_dir=Path(args.out_dir),
                       render_size=args.render_size or min(args.window, 512))


def cmd_view(args) -> int:
    from workbench.checks import check_writable, file_above
    from workbench.viewer import check_display, run_viewer

    # found now, not at the first `s` (the error ended the session)
    if Path(args.out_dir).is_file():
        raise ValueError(f"--out-dir {args.out_dir} is a file; give a folder for the saved PNGs")
    above = file_above(args.out_dir)
    if above is not None:
        raise ValueError(f"--out-dir {args.out_dir}: {above} is a file; give a folder for the saved PNGs")
    # the folder, or the nearest one on its way that `s` creates it in
    check_writable(args.out_dir, "--out-dir", "give a writable folder for the saved PNGs", within=True,
                   given=args.out_dir)
    check_display()  # before the substrate's kernels compile
    model = viewer_model(args)
    try:
        run_viewer(model, window=args.window, max_frames=args.frames)
    finally:  # Ctrl-C too: the snapshots taken are said
        for path in model.saved:
            print(path)
    return 0


def cmd_render(args) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from workbench.export import export

    check_device(args.device)
    video_args = video_arguments(args)  # before the substrate is built (seconds), not after

    sub = _substrate(args)
    _note_seed(args, sub)
    params = sub.decode(_theta(args, sub))
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeRemainingColumn(), console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task(f"{sub.name} → {Path(args.out).name}", total=args.steps)
        out = export(sub, params, args.steps, args.out, seed=args.seed, size=args.size,
                     progress=lambda n: bar.advance(task, n), strict=True, **video_args)  # else export's defaults
    print(out)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    view = sub.add_parser("view", help="real-time pygame window of a substrate",
                          description="Keys: space pause, n new θ (σ=0.1; gol: flips rule bits), r reset, s save "
                                      "PNG, +/- steps per frame, q quit.")
    view.add_argument("substrate", choices=SUBSTRATES, metavar="SUBSTRATE",
                      help="the substrate to show: " + ", ".join(SUBSTRATES))
    view.add_argument("--theta", help="θ as a .npy file (default: zeros, the reference defaults; gol: Conway's "
                                      "B3/S23, rule 6152)")
    view.add_argument("--seed", type=SEED, default=0, help="seed of the initial state; lenia and flow_lenia start "
                                                           "from one fixed state")
    view.add_argument("--window", type=whole(64, MAX_WINDOW, " pixels"), default=768,
                      help="window size in pixels, up to SDL's limit of 16384")
    view.add_argument("--render-size", type=FRAME_SIZE, default=None,
                      help="render resolution (default: min(window, 512))")
    view.add_argument("--out-dir", default=".", help="where s saves PNGs")
    view.add_argument("--frames", type=whole(1, why=" (or leave it out: run until q)"), default=None,
                      help="quit after this many frames")
    view.set_defaults(func=cmd_view)

    render = sub.add_parser("render", help="write a PNG (last frame), GIF or MP4 of a simulation")
    render.add_argument("substrate", choices=SUBSTRATES, metavar="SUBSTRATE",
                        help="the substrate to simulate: " + ", ".join(SUBSTRATES))
    render.add_argument("--steps", type=POSITIVE, required=True, help="simulation steps after init")
    render.add_argument("--out", required=True, help="FILE.png, FILE.gif or FILE.mp4")
    render.add_argument("--theta", help="θ as a .npy file (default: zeros; gol: Conway's B3/S23, rule 6152)")
    render.add_argument("--seed", type=SEED, default=0, help="seed of the initial state; lenia and flow_lenia start "
                                                             "from one fixed state")
    render.add_argument("--size", type=FRAME_SIZE, default=224, help="frame size in pixels")
    add_video_arguments(render)
    add_device_argument(render)
    render.set_defaults(func=cmd_render)
