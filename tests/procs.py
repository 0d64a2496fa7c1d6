"""Real `workbench` processes for the tests: start one, and SIGKILL it once its run has some iterations."""

import signal
import subprocess
import sys
import time

from workbench.runs import RunStore


def cli(*args, cwd) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "workbench", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def kill_after(proc: subprocess.Popen, store: RunStore, iterations: int, timeout: float = 240) -> dict:
    """SIGKILL proc as soon as the (only) run in store has `iterations` done; its catalog row after the kill."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        runs = store.list() if store.root.exists() else []
        if runs and runs[0]["iterations"] >= iterations:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return store.list()[0]
