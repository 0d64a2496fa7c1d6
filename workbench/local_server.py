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
    deadline = time.monotonic() + timeout
    while True:
        try:
            if urllib.request.urlopen(f"{url}/liveness", timeout=2).status == 200:
                return True
        except OSError:
            pass
        if time.monotonic() > deadline or (proc is not None and proc.poll() is not None):
            return False
        time.sleep(0.2)
