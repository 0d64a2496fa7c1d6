"""Real `workbench` processes for the tests: start one, and SIGKILL it once its run has some iterations."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time

from workbench.runs import RunStore


def _as_from_a_terminal() -> None:
    """In the child before exec: SIGINT at its default, as in a command typed at a terminal. A test suite started
    in the background (`make test &`) ignores SIGINT, children inherit that, and Python leaves an ignored SIGINT
    ignored: a Ctrl-C sent to the command would then be lost."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli(*args, cwd, env: dict | None = None) -> subprocess.Popen:
    """The command in a process group of its own, as a terminal starts one: `kill_after(..., group=True)` signals
    the command and every process it started (Dask's workers), as a Ctrl-C at the terminal does. Every iteration
    is saved (unless `env` says otherwise): a run of the tests' tiny budgets is faster than its saves, and went from
    its first saved iteration to its last with none between for kill_after to land on (workbench.runs.save_share)."""
    return subprocess.Popen([sys.executable, "-m", "workbench", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_as_from_a_terminal, process_group=0,
                            env={**os.environ, "WORKBENCH_SAVE_SHARE": "1", **(env or {})})


def run_command(command: str, cwd) -> subprocess.Popen:
    """Start a `workbench …` command line (as printed by the run store, e.g. a resume_command)."""
    argv = shlex.split(command)
    assert argv[0] == "workbench", command
    return cli(*argv[1:], cwd=cwd)


def _iterations(store: RunStore) -> int:
    """Iterations run.json reports for the (only) run in store; read directly, so that polling is cheap."""
    for path in store.root.glob("*/run.json") if store.root.exists() else ():
        try:
            return json.loads(path.read_text())["iterations"]
        except (OSError, ValueError, KeyError):
            return 0
    return 0


def kill_after(proc: subprocess.Popen, store: RunStore, iterations: int, timeout: float = 240,
               sig: int = signal.SIGKILL, group: bool = False) -> dict:
    """SIGKILL (or `sig`) proc (group: its process group, see `cli`) as soon as the (only) run in store has
    `iterations` done; its catalog row after."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and _iterations(store) < iterations:
        time.sleep(0.01)
    if group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    proc.wait(timeout=120)
    return store.list()[0]
