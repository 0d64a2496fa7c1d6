"""A web server on this machine (`workbench serve`, `panel serve`): a free port to start it on, and the wait until
it answers. Shared by the dashboards' load test, the screenshots and the tests, which each start one."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_live(url: str, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    """Whether the server at `url` answers its /liveness (Panel's `liveness=True`) within `timeout` seconds.
    Gives up at once, False, when `proc` (the server's process, if ours) has exited."""
    return first_answer(f"{url}/liveness", timeout, proc) is not None


def first_answer(url: str, timeout: float, proc: subprocess.Popen | None = None) -> str | None:
    """The body of the first successful GET of `url` within `timeout` seconds (a page of a server that is still
    starting: `panel serve` has no /liveness), or None. Gives up at once when `proc` (the server's process, if
    ours) has exited."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                if answer.status == 200:
                    return answer.read().decode()
        except OSError:
            pass
        if time.monotonic() > deadline or (proc is not None and proc.poll() is not None):
            return None
        time.sleep(0.2)
