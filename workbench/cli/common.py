"""What every command group shares: the error console, progress bars, the Dask client and the --device flag.

The command modules import the library only inside their handlers, so `workbench --help` and argument errors
stay fast; nothing in the library imports the command line.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable

from rich.console import Console

# No markup: messages carry users' values ("[add, sort]", "--range TASK LO HI]"), which rich would take for tags
err = Console(stderr=True, markup=False)
# the registry's names (workbench.simulations.SUBSTRATES; a test checks they agree), here so the CLI skips Taichi
SUBSTRATES = ["lenia", "boids", "plife", "gol", "nca_d1", "nca_d3", "dnca", "plenia", "plife_plus", "flow_lenia"]
DEVICE_HELP = "cpu, cuda or cuda:N (default: the GPU when torch sees one, else the CPU)"
#: Off a terminal (a batch job's log, a pipe) rich draws its bar once, at the end: a plain line says the set-up
#: once it has taken PLAIN_AFTER seconds, then where the run is at most every PLAIN_EVERY seconds
PLAIN_AFTER = 10.0
PLAIN_EVERY = 60.0


def json_text(value: object, **kwargs) -> str:
    """`value` as standard JSON, what `jq` and JSON.parse read: a non-finite float (a NAMM run's score of a task its
    curriculum has not reached, a QD archive still empty, NaN in metrics rows) as null, which json.dumps wrote as
    NaN or Infinity. Every command's JSON on stdout goes through here; kwargs: json.dumps's (indent, default …)."""
    import json
    import math

    def finite(v):
        if getattr(v, "ndim", None) == 0 and hasattr(v, "item"):  # a NumPy or torch scalar: its Python value
            v = v.item()
        if isinstance(v, float):
            return v if math.isfinite(v) else None
        if isinstance(v, dict):  # a non-finite key as the text json.dumps gave it ("NaN")
            return {json.dumps(k) if isinstance(k, float) and not math.isfinite(k) else k: finite(x)
                    for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [finite(x) for x in v]
        return v

    return json.dumps(finite(value), allow_nan=False, **kwargs)


def say(label: str, message: str, style: str = "yellow") -> None:
    """One labelled line on stderr ("note: …", "warning: …", "error: …"), the label styled, the message as is."""
    from rich.text import Text

    err.print(Text.assemble((f"{label}:", style), " ", message), soft_wrap=True)


def whole(at_least: int, at_most: int | None = None, why: str = "") -> Callable[[str], int]:
    """An argparse `type` for a whole-number flag within [at_least, at_most]: out of range, argparse answers
    "argument --flag: give a whole number of at least 1, got 0" (one line, exit 2) before anything loads."""

    def parse(text: str) -> int:
        span = f"from {at_least} to {at_most}" if at_most is not None else f"of at least {at_least}"
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"give a whole number {span}, got {text!r}") from None
        if value < at_least or (at_most is not None and value > at_most):
            raise argparse.ArgumentTypeError(f"give a whole number {span}{why}, got {value}")
        return value

    return parse


def finite(text: str) -> float:
    """An argparse `type` for a number flag that must be finite (no nan, no inf)."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"give a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"give a finite number, got {text}")
    return value


def positive(text: str) -> float:
    """An argparse `type` for a number flag that must be finite and greater than 0 (seconds, rates)."""
    value = finite(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"give a number greater than 0, got {text}")
    return value


#: the argparse types of the flags every command shares
POSITIVE = whole(1)
#: a rendered frame's side in pixels: 100 000 raised a 1.9 TB allocation traceback, 30 000 took the machine's memory
FRAME_SIZE = whole(2, 8192, " (pixels a side)")
SEED = whole(0, 2 ** 32 - 1, " (NumPy's seeds)")
WORKERS = whole(1, why=" (leave --workers out to evaluate in this process)")
PORT = whole(1, 65535)


def note_quick_zoo(path: str, model: str | None = None) -> None:
    """A smoke-test zoo (`zoo build --quick`) evolves and cycles, but what comes of it means nothing: say so before
    the run (a folder that is no zoo: the run's config checks say what is wrong). model: a --model folder whose
    zoo `path` is (ZOO/generalist, ZOO/base: the experts trained on it mean nothing either)."""
    from pathlib import Path

    if not (Path(path) / "zoo.json").is_file():
        return
    from workbench.lm.zoo import load_zoo

    zoo = load_zoo(path)
    name = None if model is None else Path(model).name
    # a real zoo's generalist is made by `experts generalist` after `zoo build`: the note names both
    then = " (after `workbench experts generalist --zoo data/zoo`)" if name == "generalist" else ""
    warning = zoo.quick_warning() if model is None else \
        zoo.quick_warning("experts of its models", f"--model data/zoo/{name}{then}")
    if warning:
        say("note", warning)


def check_out_file(path: str | None, flag: str = "--out") -> None:
    """One ValueError naming the flag for an output file that cannot be written: a folder, or a file in a folder
    that does not exist (checked before the work, not found after it)."""
    if path is not None:
        from workbench.checks import output_file

        output_file(path, flag)


def add_video_arguments(parser: argparse.ArgumentParser, every: str = "1") -> None:
    """--every N and --fps N of a command that writes a video (`render`, `figure video`; `every`: its default)."""
    parser.add_argument("--every", type=POSITIVE, default=None,
                        help=f"video: one frame every N steps, and the last step's (default: {every})")
    parser.add_argument("--fps", type=POSITIVE, default=None,
                        help="video: frames per second (default: 30; a GIF at most 50, its frames in whole "
                             "hundredths of a second: 30 plays at 33)")


def video_arguments(args: argparse.Namespace) -> dict[str, int]:
    """The --every and --fps given ({"every": 2}; export's defaults for the others), checked against --out before
    the simulation: a GIF's --fps it can play; neither for a .png, the last frame alone."""
    from workbench.export import check_out

    check_out(args.out, fps=args.fps)
    given = {name: getattr(args, name) for name in ("every", "fps") if getattr(args, name) is not None}
    flags = [f"--{name}" for name in given]
    if flags and str(args.out).lower().endswith(".png"):  # flags a picture would not read are refused
        raise ValueError(f"{' and '.join(flags)} set{'' if len(flags) > 1 else 's'} a video's frames; a .png is "
                         f"the last frame alone: leave {'them' if len(flags) > 1 else 'it'} out, or write a .gif or "
                         f".mp4")
    return given


def add_device_argument(parser: argparse.ArgumentParser, more: str = "") -> None:
    parser.add_argument("--device", metavar="DEVICE", help=DEVICE_HELP + more)


def add_dask_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """--workers N and --dask ADDRESS, said alike by every command that evaluates on Dask (`what`: what it
    evaluates there, e.g. "the population"); dask_client reads them, resumed_run refuses both at once."""
    parser.add_argument("--workers", type=WORKERS, metavar="N",
                        help=f"evaluate {what} on a local Dask cluster (LocalCluster) of N workers")
    parser.add_argument("--dask", metavar="ADDRESS",
                        help=f"evaluate {what} on an existing Dask scheduler, e.g. tcp://host:8786")


def check_device(value: str | None) -> str | None:
    """The checked value of --device (unchanged), or one ValueError naming the fix (kernels.device.check_device_flag,
    imported when called: torch stays out of the CLI's start)."""
    from workbench.kernels.device import check_device_flag

    return check_device_flag(value)


def check_resume_device(run, device: str | None) -> None:
    """--device given with --resume of a run that goes on on its own device (NAMM training, experts and their
    adaptation: their floats depend on it): one error where it names another device than the run's, which the
    resume left unused without a word."""
    if device is None:
        return
    from workbench.kernels.device import resolve_device

    # the device the run recorded it ran on, else the one its config named; neither (a NAMM run started without
    # --device): not known here, so nothing to refuse (this machine's default need not be the one it ran on)
    stored = run.info.get("device") or run.info["config"].get("device")
    if stored is None:
        return
    try:
        had = str(resolve_device(stored))
    except ValueError:  # a GPU run on a machine without that GPU: its resume says so as it loads
        had = str(stored)
    if str(resolve_device(device)) != had:
        raise ValueError(f"--device {device}: run {run.id} runs on {had} and goes on there (its floats depend on the "
                         f"device); resume it without --device, or start a new run on {device}")


def resumed_run(store, args: argparse.Namespace, kind: str, given: dict,
                names: dict[str, str] | Callable[[dict], dict[str, str]], predates: dict | None = None,
                extends: str | None = None, fixed: tuple[str, str] | None = None):
    """The run that --resume ID names (None without --resume), with everything that would refuse the resume
    checked before a model loads or a progress bar starts: its kind, given flags that contradict its config
    (named by `names`, or by `names(config)`; but for the length setting `extends`, whose new total may be
    anything down to what the run has done; `fixed`: why a kind's cannot change), its process still running, a
    pickle checkpoint without
    --trust-pickle. --trust-pickle without --resume is refused: a new run would ignore it silently. So are
    --workers with --dask, here rather than when the client starts, after the notes about the run."""
    if getattr(args, "workers", None) is not None and getattr(args, "dask", None):
        raise ValueError("give --workers N or --dask ADDRESS, not both")
    trust = getattr(args, "trust_pickle", False)
    if args.resume is None:
        if trust:
            raise ValueError("--trust-pickle only applies to --resume ID (it allows loading that run's pickled "
                             "search state); leave it out of a new run")
        return None
    from workbench.runs import check_resume

    run = store.open(args.resume)
    check_resume(run, kind, given, names=names(run.info["config"]) if callable(names) else names,
                 predates=predates, typed=True, extends=extends, fixed=fixed)  # given: the flags typed
    run.check_resumable(trust_pickle=trust)
    return run


def dask_client(args):
    """A Dask client for --workers N (a LocalCluster) or --dask ADDRESS, else None (resumed_run, called first,
    refused both at once)."""
    if args.workers is not None:
        from workbench.scale import local_client

        return local_client(args.workers)
    if args.dask is not None:
        from workbench.scale import connect

        client = connect(args.dask)
        if not client.scheduler_info().get("workers"):  # its tasks wait for one: said, not a silent wait
            say("note", f"the Dask scheduler at {args.dask} has no workers yet: the run waits for one (start one "
                        f"with `dask worker {args.dask}`)")
        return client
    return None


def close_client(client) -> None:
    """Close the client of --workers / --dask (None: nothing), and the LocalCluster of --workers
    (`workbench.scale.close`, which also keeps a Ctrl-C's cut-short gathers quiet)."""
    if client is None:
        return
    from workbench.scale import close

    close(client)


@contextlib.contextmanager
def _spinner_then_bar(bar, spinner):
    """A transient spinner (None: none) until start() is first called, then `bar` (a rich Progress) until the block
    ends; yields start. rich shows one live display at a time, so the spinner stops before the bar starts."""
    started = False

    def start(*_) -> None:
        nonlocal started
        if not started:
            started = True
            if spinner is not None:
                spinner.stop()
            bar.start()

    if spinner is not None:
        spinner.start()
    try:
        yield start
    finally:
        if started:
            bar.stop()
        elif spinner is not None:
            spinner.stop()


@contextlib.contextmanager
def work_progress(description: str, total: int, loading: str | None = None):
    """Progress of one-shot work (an evaluation) on a terminal: a transient "loading …" spinner while `loading`
    is given and advance() not yet called, then a bar of `total` items; yields advance(k). Where stderr is no
    terminal (scripts, pipes, tests) nothing is drawn: they read the command's one JSON line."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    shown = err.is_terminal
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TimeElapsedColumn(), TimeRemainingColumn(), console=err, disable=not shown)
    task = bar.add_task(description, total=total)
    spinner = err.status(f"{description}: loading {loading} …") if shown and loading else None
    with _spinner_then_bar(bar, spinner) as start:

        def advance(k: int) -> None:
            start()
            bar.advance(task, k)

        yield advance


@contextlib.contextmanager
def iteration_progress(description: str, total: int | None, label: str, value: Callable[[dict], str],
                       quiet: bool = False):
    """A rich progress bar (count, `label value`, elapsed, ETA) on stderr for a search loop; yields the
    on_iteration(done, total, metrics row) callback the drivers take, and as its `start` attribute the on_start(run)
    callback of the drivers that have one. Until one of them is called (the set-up: models load, inputs are
    checked against them) a transient "setting up" spinner stands in for the bar, so that an error found there is
    the only thing left on screen, and a run that is done already draws no bar at all. Off a terminal, where rich
    draws the bar only as it ends, plain lines say the set-up and the count now and then (PLAIN_AFTER,
    PLAIN_EVERY): a SLURM job's log said nothing for the whole of a run."""
    import threading
    import time

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TextColumn(f"{label} {{task.fields[value]}}"), TimeElapsedColumn(), TimeRemainingColumn(),
                   console=err, disable=quiet)
    task = bar.add_task(description, total=total, value="–")
    spinner = None if quiet else err.status(f"{description}: setting up …")
    last = {"value": "–"}
    plain = not quiet and not err.is_terminal
    began = time.monotonic()
    said = {"at": began}  # when the last plain line was written
    setting_up = threading.Timer(PLAIN_AFTER, lambda: err.print(f"{description}: setting up …", soft_wrap=True))
    setting_up.daemon = True
    if plain:
        setting_up.start()
    with contextlib.ExitStack() as stack:
        stack.callback(setting_up.cancel)  # an error in the set-up: its line, not a "setting up" after it
        begin = stack.enter_context(_spinner_then_bar(bar, spinner))

        def start(*args) -> None:
            setting_up.cancel()
            begin(*args)

        def show(done: int, total: int, row: dict) -> None:  # the count and the metric now (a resumed run's at
            start()  # once: rich's speed leaves its first sample out, so the ETA is not thrown)
            last["value"] = value(row)
            bar.update(task, completed=done, total=total, value=last["value"])

        def on_iteration(done: int, total: int, row: dict) -> None:
            show(done, total, row)
            now = time.monotonic()
            if plain and now - said["at"] >= PLAIN_EVERY and done != total:  # the last: rich's bar as it ends
                said["at"] = now
                minutes, seconds = divmod(int(now - began), 60)
                err.print(f"{description} {done}/{total} {label} {last['value']} {minutes // 60}:{minutes % 60:02d}:"
                          f"{seconds:02d}", soft_wrap=True)

        def phase(text: str) -> None:  # what a run's end does once the bar is full (its test scores, baselines)
            start()
            bar.update(task, value=text)

        on_iteration.start = start  # the drivers' on_start(run)
        on_iteration.phase = phase
        on_iteration.resumed = show  # a resumed run's count, at once (not at its next iteration's end)
        yield on_iteration
        # done: the bar left on screen ends on the run's metric, not on its last phase ("… test scores …" read as
        # still working); after an error the phase stays, saying where it failed
        bar.update(task, value=last["value"])
