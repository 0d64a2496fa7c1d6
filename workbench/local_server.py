"""A web server on this machine (`workbench serve`, `panel serve`): a free port to start it on, and the wait until
it answers. Shared by the dashboards' load test, the screenshots and the tests, which each start one."""

from __future__ import annotations

import http.client
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
    return _first(f"{url}/liveness", timeout, proc, read=False, wait=2) is not None


def first_answer(url: str, timeout: float, proc: subprocess.Popen | None = None) -> str | None:
    """The body of the first successful GET of `url` within `timeout` seconds (a page of a server that is still
    starting: `panel serve` has no /liveness), or None. Gives up at once when `proc` (the server's process, if
    ours) has exited."""
    return _first(url, timeout, proc, read=True, wait=5)


def _first(url: str, timeout: float, proc: subprocess.Popen | None, read: bool, wait: float) -> str | None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=wait) as answer:
                if answer.status == 200:
                    return answer.read().decode("utf-8", "replace") if read else ""
        except (OSError, http.client.HTTPException):  # not up yet, or cut off mid-answer: ask again
            pass
        if time.monotonic() > deadline or (proc is not None and proc.poll() is not None):
            return None
        time.sleep(0.2)
