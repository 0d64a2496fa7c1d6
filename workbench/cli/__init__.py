"""The `workbench` command (also `python -m workbench`): one module per command group.

Each module's `register(sub)` adds its subcommands; handlers import the library when they run, so `--help`
and argument errors come back at once. Errors the library raises as ValueError print as one `error:` line
(exit 2).
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import signal
import sys
import threading
import time
from pathlib import Path

from workbench.cli import asal, bench, experts, figure, merge, namm, qd, runs, serve, sim, zoo
from workbench.cli.common import say
from workbench.runs import save_share

GROUPS = (sim, bench, asal, figure, serve, runs, zoo, merge, qd, experts, namm)


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, a cluster scheduler's stop, a container's shutdown) taken as a Ctrl-C is: the run stops
    where it can be resumed, marked stopped, and the command says how to resume it; exit 143 (128 + SIGTERM). By
    default the process died at once and left its run marked running."""


def _terminate(signum, frame) -> None:
    raise Terminated()


class DefaultsFormatter(argparse.HelpFormatter):
    """argparse's help, each option's default said where its help does not say it: defaults the README gave
    (serve --port 5006, zoo eval --n 128) were in no --help, so a reader could not check them."""

    @staticmethod
    def _default(action: argparse.Action) -> str | None:
        """The default to say, None where there is none worth saying (None, a switch's False) or help says it."""
        default = action.default
        if (action.help == argparse.SUPPRESS or "default" in (action.help or "").lower() or default is None
                or isinstance(default, bool) or default == argparse.SUPPRESS or not action.option_strings):
            return None
        return (" ".join(map(str, default)) if isinstance(default, list | tuple) else str(default)).replace("%", "%%")

    def _format_action(self, action: argparse.Action) -> str:
        shown = self._default(action)
        if action.help is None and shown is not None:  # argparse prints no help line for it at all
            action = copy.copy(action)
            action.help = f"default: {shown}"
        return super()._format_action(action)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        shown = self._default(action)
        if shown is None:
            return action.help
        # inside a closing parenthesis of the help's own: "(30, as SmolLM2; default: 30)", not "…) (default: 30)"
        return f"{action.help[:-1]}; default: {shown})" if action.help.endswith(")") else \
            f"{action.help} (default: {shown})"


class Parser(argparse.ArgumentParser):
    """argparse's parser, its errors one line like the library's ("error: argument --seed: …"), pointing at the
    command's --help instead of printing a usage block, and its help saying each option's default. Subcommands'
    parsers are of this class too."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        say("error", f"{self.prog}: {message} (see {self.prog} --help)", style="bold red")
        self.exit(2)

    def parse_args(self, args=None, namespace=None):
        tokens = list(sys.argv[1:] if args is None else args)
        flag = tokens[0].split("=")[0] if tokens and tokens[0].startswith("-") else None
        # `workbench --bogus`: named, not "the following arguments are required: COMMAND" (--vers is --version's)
        if flag and self._subparsers is not None and not any(o.startswith(flag) for o in self._option_string_actions):
            self.error(f"unrecognized arguments: {tokens[0]}")
        # unknown flags are the command's business: name it (`workbench asal target`), not the top parser
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            self._owner(getattr(parsed, "parser", self), list(sys.argv[1:] if args is None else args),
                        extra[0]).error(f"unrecognized arguments: {' '.join(extra)}")
        return parsed

    def _owner(self, deepest: argparse.ArgumentParser, tokens: list[str], flag: str) -> argparse.ArgumentParser:
        """The parser of the (sub)command an unknown flag was typed under: `workbench --bogus asal target` is the
        top parser's, `workbench asal --bogus target` the asal group's, `workbench asal target --bogus` target's."""
        chain, parser = [self], self
        for name in deepest.prog.split()[1:]:  # the command names, from the top: "asal", "target"
            action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
            parser = action.choices[name]
            chain.append(parser)
        at, level = tokens.index(flag) if flag in tokens else len(tokens), 0
        for name in deepest.prog.split()[1:]:  # how many command names come before the flag
            where = tokens.index(name) if name in tokens else len(tokens)
            if where > at:
                break
            level, tokens = level + 1, tokens[where + 1:]
            at -= where + 1
        return chain[level]


class IntermixedParser(Parser):
    """A command's parser whose positionals may come on either side of its options (argparse's intermixed
    parsing): `runs note ID --runs DIR TEXT` and `runs compare A --runs DIR B`, as scripts build them, were refused
    ("unrecognized arguments"), plain argparse reading only positionals that sit side by side. For commands
    without subcommands of their own (argparse's condition)."""

    _parsing = False

    def parse_known_args(self, args=None, namespace=None):
        if self._parsing:  # argparse's intermixed parsing calls this again: the plain parse, then
            return super().parse_known_args(args, namespace)
        self._parsing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._parsing = False


def build_parser() -> argparse.ArgumentParser:
    from workbench import __version__

    parser = Parser(prog="workbench", description="ASAL substrates, searches and explorers; "
                                     "model zoos, evolved merges, CycleQD, Transformer² experts and NAMM.")
    parser.add_argument("--version", action="version", version=f"workbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    _remember_parsers(parser)
    return parser


def _remember_parsers(parser: argparse.ArgumentParser) -> None:
    """Each (sub)command's parser as its own default `parser`, so an error found after parsing names the command;
    and its --help opens with what the command does: the line its parent's list gives it (38 of 54 showed only
    their usage and options), before its own notes where it has some."""
    parser.set_defaults(parser=parser)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            listed = {a.dest: a.help for a in action._choices_actions}
            for name, child in action.choices.items():
                line = listed.get(name)
                if line and not (child.description or "").startswith(line):
                    child.description = f"{line}. {child.description}" if child.description else line
            for child in set(action.choices.values()):
                _remember_parsers(child)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)  # in the try: a Ctrl-C while the parser is built is one too
        save_share()  # a bad WORKBENCH_SAVE_SHARE is said before any work, not after a model has loaded (and after
        # the parse: --help is still there to read)
        return args.func(args)
    except ValueError as error:
        say("error", str(error), style="bold red")
        return 2
    except BrokenPipeError:  # `workbench runs list | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's flush at exit fails quietly
        return 128 + signal.SIGPIPE  # as a process SIGPIPE ended (as Ctrl-C's 130, SIGTERM's 143): not an error's 1
    except Exception as error:
        # a full disk, a read-only folder: the system's words and the file; Dask's cluster failing under a run (a
        # worker killed again and again, the --dask scheduler gone): what happened. Not a traceback (76 lines).
        dask = type(error).__module__.split(".")[0] == "distributed"
        if not (dask or isinstance(error, OSError)):
            raise
        say("error", _dask_error_text(error) if dask else _os_error_text(error), style="bold red")
        run = getattr(error, "failed_run", None)
        try:  # (marked failed, or on a full disk not even that)
            command = run.resume_cli if run is not None else None
        except (ValueError, OSError):  # its run.json unreadable too (its folder gone): the error said is what counts
            command = None
        if command:
            say("note", f"run {run.id} is resumable once that is fixed: {command}")
        return 1
    except KeyboardInterrupt as stop:
        run = getattr(stop, "stopped_run", None)  # the run the Ctrl-C stopped (workbench.runs marks it)
        try:
            command = run.resume_command if run is not None else None
        except (ValueError, OSError):  # a run in a folder removed on the way out (a bench's temporary store)
            command = None
        if command:
            say("stopped", f"run {run.id} is resumable: {command}")
        return 128 + signal.SIGTERM if isinstance(stop, Terminated) else 130


def _dask_error_text(error: Exception) -> str:
    """One line for a Dask failure under a run: a task whose workers kept dying, or the cluster lost."""
    name, said = type(error).__name__, " ".join(str(error).split())[:200]  # one line
    if name == "KilledWorker":
        return f"Dask: the workers running one task died again and again (out of memory? a worker killed?); {said}"
    return f"Dask: the cluster was lost under the run (the --dask scheduler or its workers gone?): {name}: {said}"


def _os_error_text(error: OSError) -> str:
    """'runs/x/run.json: No space left on device (free some space)' from an OSError: the file, the system's words,
    and what to do where that is clear."""
    import errno

    what = error.strerror or str(error)
    hint = {errno.ENOSPC: "free some space", errno.EROFS: "make it writable, or give a writable folder (--runs, --out)",
            errno.EACCES: "check the folder's permissions", errno.EDQUOT: "free some space"}.get(error.errno)
    return (f"{error.filename}: " if error.filename else "") + what + (f" ({hint})" if hint else "")


def _could_write(folder: Path) -> bool:
    """Whether `folder` is, or could be made as, a folder this process writes in (not made here): it, or else the
    nearest of its parents that exists, is a folder it may write to."""
    for path in (folder, *folder.parents):
        if os.path.lexists(path):
            return path.is_dir() and os.access(path, os.W_OK | os.X_OK)
    return False


def _matplotlib_config_where_writable() -> None:
    """MPLCONFIGDIR set to a private folder of the temporary folder where Matplotlib's own (under $HOME, or
    $XDG_CONFIG_HOME and $XDG_CACHE_HOME) cannot be made or written: a read-only or missing home (a cluster job's,
    a container's HOME=/nonexistent) made every figure command and the server print Matplotlib's two-paragraph
    warning ("mkdir -p failed …", "Matplotlib created a temporary cache directory …"), and build its font cache
    again in a new folder each time. A MPLCONFIGDIR given is kept; a folder there that is not this user's own is
    not used (Matplotlib then falls back as before)."""
    if os.environ.get("MPLCONFIGDIR") or not sys.platform.startswith("linux"):
        return
    try:
        home = Path.home()
    except RuntimeError:  # no HOME and no entry in the password database
        home = None
    wanted = [os.environ.get(var) or (str(home / sub) if home is not None else None)
              for var, sub in (("XDG_CONFIG_HOME", ".config"), ("XDG_CACHE_HOME", ".cache"))]
    if all(folder is not None and _could_write(Path(folder) / "matplotlib") for folder in wanted):
        return
    import tempfile

    folder = Path(tempfile.gettempdir()) / f"workbench-matplotlib-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        made = os.lstat(folder)
    except OSError:
        return
    import stat

    if stat.S_ISDIR(made.st_mode) and made.st_uid == os.getuid() and not made.st_mode & 0o022:
        os.environ["MPLCONFIGDIR"] = str(folder)


def redeliver_interrupts(unraisable) -> None:
    """sys.unraisablehook for the command line: a Ctrl-C whose KeyboardInterrupt was raised inside an object's
    finaliser (`__del__`, e.g. a regex or a tokenizer collected while a model loads) is one Python reports as
    "Exception ignored in …" and drops, and the command ran on to its end. It is raised again in the main thread
    once the finaliser has returned; anything else goes to Python's own hook."""
    if not isinstance(unraisable.exc_value, KeyboardInterrupt):
        sys.__unraisablehook__(unraisable)
        return

    def later() -> None:  # from a thread of its own: interrupting now would interrupt this hook, not the command
        time.sleep(0.01)
        # a real signal to the main thread, as the terminal's: it also cuts short a sleep or a wait there (SIGTERM
        # for a Terminated, so that the command still exits 143)
        sig = signal.SIGTERM if isinstance(unraisable.exc_value, Terminated) else signal.SIGINT
        signal.pthread_kill(threading.main_thread().ident, sig)

    threading.Thread(target=later, daemon=True).start()


def run() -> None:
    """The `workbench` executable and `python -m workbench`: main(), then the process ends with its exit code."""
    # Fewer garbage collections: torch, transformers and the rest import hundreds of thousands of long-lived
    # objects, and at the default threshold (700 allocations) the collector walks them again and again: 15 % of a
    # CycleQD command's time, 2 s of its 13. Cyclic garbage waits for 10,000 allocations instead (a CycleQD
    # command's peak memory: the same, 1.04 GB).
    gc.set_threshold(10_000, 10, 10)
    sys.unraisablehook = redeliver_interrupts
    signal.signal(signal.SIGTERM, _terminate)
    _matplotlib_config_where_writable()
    for stream in (sys.stdout, sys.stderr):  # a terminal or pipe of another encoding (PYTHONIOENCODING, a Latin-1
        # locale): what it cannot show is escaped (runs list's "↓", a note in ü) rather than failing the command
        # with "error: 'latin-1' codec can't encode …" after its work was done and written
        if "utf" not in (getattr(stream, "encoding", None) or "utf").lower() and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    code = main()
    # The process ends here. Python's last garbage collections at exit would walk every object torch (and
    # transformers, the models, the runs) made, 0.5-1 s per command, only to free memory the OS takes back anyway.
    # So the young generations are collected (what the command left in reference cycles is finalised: 40 ms) and
    # everything else is frozen, skipped at exit. atexit handlers, flushes and the joins of threads still run, but
    # an old object in a cycle is not finalised: commands close what they open (files, clients, clusters) themselves.
    gc.collect(1)
    gc.freeze()
    sys.exit(code)
