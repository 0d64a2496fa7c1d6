"""`workbench` commands in processes of their own, without paying torch's import in each.

A command started with `python -m workbench …` spends about 2.5 s importing torch before it can even reject a bad
flag; the suite runs dozens of such short commands. `ForkedCLI` starts one Python process that imports torch (and
nothing of ours), then forks a child per command: each command still runs in a fresh process of its own, with its
own working directory, environment, stdin (/dev/null), stdout, stderr and exit code, and imports the workbench
itself. Only torch's import is shared; the server checks that it printed nothing, so that noise a command makes at
import cannot hide there.

What a child shares with its siblings is what the server fixed at its start: what the interpreter reads at start
(PYTHONHASHSEED's hash seed, PYTHONWARNINGS, PYTHONIOENCODING, PYTHONPATH) and what torch's import read (OMP_* and
OPENBLAS_* thread settings, TQDM_*, TMPDIR), so the environment a command is given may change only what is read
later (WORKBENCH_*, HF_*, COLUMNS: what the tests set); and torch's default seed (fixed in every process anyway).
Python's and NumPy's global generators are reseeded from the OS in each child, as a fresh process seeds them.
So runs whose bits are compared with each other (resume after a kill, serial against Dask) keep fresh processes
(`procs.cli`), and so do tests about a process starting from nothing (import-time warnings, a fresh process's first
figure).

`preload` names more third-party modules for the server to import after torch (PAGES: transformers, Panel,
HoloViews, Bokeh, Matplotlib: 4-5 s of each `figure namm` child, 2-3 s of a `figure view` one). Their imports read
more of the environment (HF_*, MPL*, BOKEH_*), so a server with a preload runs only commands whose environment is
exactly the one it started with (`run` starts another for another environment), and it is refused if its imports
started a thread (fork() copies none of them). Still nothing of ours is imported before a command starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

#: what the pages' figure commands import besides torch (see `preload`)
PAGES = ("transformers", "transformers.models.llama.modeling_llama", "panel", "holoviews", "bokeh.models",
         "matplotlib.pyplot")

SERVER = r"""
import importlib, json, os, sys, threading, time
# torch's import, the point of the server, with what it prints on either stream kept apart (it should be nothing)
saved, noise = (os.dup(1), os.dup(2)), os.path.join(sys.argv[1], "import-noise")
for fd in (1, 2):
    os.dup2(os.open(noise, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644), fd)
import torch  # noqa: F401
for name in json.loads(sys.argv[2]):  # the preload: more third-party modules, none of ours
    importlib.import_module(name)
sys.stdout.flush(); sys.stderr.flush(); os.dup2(saved[0], 1); os.dup2(saved[1], 2)
# as Python's gc docs advise before fork(): the objects made so far leave the collector's generations, so that a
# child's collections (its last one at exit: 1 s with torch's objects) neither walk them nor copy their pages
import gc; gc.freeze()
sys.stdout.write(json.dumps({"noise": open(noise).read(), "threads": threading.active_count()}) + "\n")
sys.stdout.flush()
def child(job):
    # The forked child becomes the command: set up as `python -m workbench` would be, then run it and leave through
    # the interpreter's own exit (SystemExit, tracebacks, atexit, thread joins and flushes as with -m).
    try:
        for fd, path in ((1, job["stdout"]), (2, job["stderr"])):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.chdir(job["cwd"])
        os.environ.clear(); os.environ.update(job["env"])
        # a fresh process draws these from the OS: so does each child (not the server's state, shared by all)
        import random; random.seed()
        if "numpy" in sys.modules:
            sys.modules["numpy"].random.seed()
        sys.argv = ["workbench", *job["argv"]]
        sys.path[0] = job["cwd"]  # as `python -m` puts the working directory first
    except BaseException as exc:  # the set-up failed: say so and never fall back into the server's loop
        os.write(2, f"forked-CLI set-up failed: {exc!r}\n".encode()); os._exit(99)
    import runpy
    runpy.run_module("workbench", run_name="__main__", alter_sys=True)
    sys.exit(0)


for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        child(job)  # never returns: SystemExit (or an exception) ends this process as it would end `python -m`
    deadline = time.monotonic() + job["timeout"]
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9); os.waitpid(pid, 0); status = None
            break
        time.sleep(0.005)
    rc = None if status is None else os.waitstatus_to_exitcode(status)
    sys.stdout.write(json.dumps({"job": job["job"], "returncode": rc}) + "\n"); sys.stdout.flush()
"""


class ForkedCLI:
    """Run `workbench` commands as children forked from one process that has torch imported.

    >>> cli = ForkedCLI(); res = cli.run("render", "--help"); res.returncode
    0
    """

    def __init__(self, preload: tuple[str, ...] = (), environment: dict | None = None) -> None:
        self._files = tempfile.TemporaryDirectory(prefix="forked-cli-")
        # the environment the server starts (and imports) in: this process's unless given
        self.preload, self.environment = tuple(preload), dict(os.environ if environment is None else environment)
        self._proc = subprocess.Popen([sys.executable, "-c", SERVER, self._files.name, json.dumps(self.preload)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      env=self.environment)
        self._lock = threading.Lock()
        self._jobs, self.broken = 0, False
        ready = self._proc.stdout.readline()
        if not ready:
            raise RuntimeError(f"the forked-CLI server did not start: {self._proc.stderr.read()}")
        if json.loads(ready)["noise"]:  # a command's output could not be told from it: say so, loudly
            self._proc.kill()
            raise RuntimeError(f"importing torch (and {self.preload}) printed {json.loads(ready)['noise']!r}")
        if json.loads(ready)["threads"] != 1:  # a forked child would lack them (and could deadlock on their locks)
            self._proc.kill()
            raise RuntimeError(f"importing {self.preload} started threads: preload other modules")

    def run(self, *args: str, cwd=None, env: dict | None = None, unset: tuple[str, ...] = (),
            timeout: float = 300) -> subprocess.CompletedProcess:
        """As `subprocess.run([python, -m, workbench, *args], capture_output=True, text=True)` in `cwd`, with this
        process's environment plus `env`, less the variables named in `unset`."""
        where = Path(cwd or os.getcwd()).resolve()
        if not where.is_dir():  # as subprocess would refuse it, before anything starts
            raise FileNotFoundError(f"no such directory: {where}")
        with self._lock:
            if self.broken:
                raise RuntimeError("this forked-CLI server was cut off mid-command; start another")
            self._jobs += 1
            out, err = (Path(self._files.name) / f"{self._jobs}.{name}" for name in ("stdout", "stderr"))
            environment = _environment(env, unset)
            # a preload read the server's environment as it imported: a command's must import alike
            if self.preload and not _same_imports(environment, self.environment):
                raise RuntimeError("a forked-CLI server with a preload runs commands in its own environment only")
            job = {"job": self._jobs, "argv": [str(a) for a in args], "cwd": str(where), "env": environment,
                   "stdout": str(out), "stderr": str(err), "timeout": timeout}
            try:
                self._proc.stdin.write(json.dumps(job) + "\n")
                self._proc.stdin.flush()
                reply = self._proc.stdout.readline()
            except BaseException:  # a timeout or Ctrl-C mid-command: its reply would answer the next one
                self.broken = True
                self._proc.kill()
                raise
            if not reply:
                self.broken = True
                raise RuntimeError(f"the forked-CLI server died: {self._proc.stderr.read()}")
            reply = json.loads(reply)
            assert reply["job"] == self._jobs, (reply, self._jobs)
            if reply["returncode"] is None:
                raise subprocess.TimeoutExpired(["workbench", *job["argv"]], timeout)
            result = subprocess.CompletedProcess(["workbench", *job["argv"]], reply["returncode"], out.read_text(),
                                                 err.read_text())
            out.unlink(), err.unlink()
            return result

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.stdin.close()
            self._proc.wait(timeout=60)
        self._proc.stdout.close()
        self._proc.stderr.close()
        self._files.cleanup()


_shared: dict[tuple[str, ...], ForkedCLI] = {}


def _environment(env: dict | None, unset: tuple[str, ...]) -> dict:
    """A command's environment: this process's with `env` over it, less the names in `unset`."""
    return {k: v for k, v in {**os.environ, **(env or {})}.items() if k not in unset}


def _same_imports(one: dict, other: dict) -> bool:
    """Whether two environments import alike: the same but for pytest's name of the test under way (which no
    import reads), so that the tests of one worker share a preloaded server."""
    return {k: v for k, v in one.items() if k != "PYTEST_CURRENT_TEST"} == \
        {k: v for k, v in other.items() if k != "PYTEST_CURRENT_TEST"}


def run(*args: str, cwd=None, env: dict | None = None, unset: tuple[str, ...] = (), timeout: float = 300,
        preload: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """`ForkedCLI.run` on one server per test process and preload, started on first use (again after a server was
    cut off, and for a preload, when the command's environment is not the one it started in) and stopped at exit."""
    server = _shared.get(tuple(preload))
    environment = _environment(env, unset)
    if preload and server is not None and not server.broken and not _same_imports(environment, server.environment):
        server.close()
        server = None
    if server is None or server.broken:
        import atexit

        server = _shared[tuple(preload)] = ForkedCLI(preload, environment if preload else None)
        atexit.register(server.close)
    return server.run(*args, cwd=cwd, env=env, unset=unset, timeout=timeout)


def run_pages(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """`run` on a server with the pages' third-party modules imported (PAGES): the figure commands' tests."""
    return run(*args, preload=PAGES, **kwargs)


class Finished(subprocess.CompletedProcess):
    """A command that has run, with the part of `subprocess.Popen` that tests use once it has ended."""

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        return self.stdout, self.stderr


def cli(*args: str, cwd=None, env: dict | None = None, timeout: float = 300) -> Finished:
    """As `procs.cli` followed by `communicate()`: for short commands whose output is all a test reads."""
    res = run(*args, cwd=cwd, env=env, timeout=timeout)
    return Finished(res.args, res.returncode, res.stdout, res.stderr)
