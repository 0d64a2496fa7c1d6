"""`workbench serve`: one Panel server, every page in one app shell (dashboards/shell.py), an index page,
liveness, inline resources (works offline)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import panel as pn

from workbench.dashboards.shell import PAGES as PAGE_INFO
from workbench.dashboards.shell import local_stylesheets, ordered_patches, quiet_closed_sessions, serial_blas

if TYPE_CHECKING:
    from bokeh.server.server import Server
    from panel.io.threads import StoppableThread

PAGES = tuple(PAGE_INFO)
#: who may show the pages inside a frame: they themselves and pages of this machine (a notebook's IFrame, a local
#: dashboard), not another site, which could frame the Runs page and trick a click on "remove" (clickjacking)
FRAME_ANCESTORS = "frame-ancestors 'self' http://localhost:* http://127.0.0.1:*"


def _frame_policy():
    """A tornado output transform that sends FRAME_ANCESTORS with every HTTP answer (Bokeh's server sets no
    headers of its own; its tornado Application takes no other transform, so none is lost)."""
    import tornado.web

    class FramePolicy(tornado.web.OutputTransform):
        def transform_first_chunk(self, status_code, headers, chunk, finishing):
            headers.setdefault("Content-Security-Policy", FRAME_ANCESTORS)
            return status_code, headers, chunk

    return FramePolicy


def pages(runs_dir: str = "runs") -> dict[str, Callable[[], pn.viewable.Viewable]]:
    """Route -> page factory; "/" is the index. Each browser session calls the factory for a fresh model."""
    from workbench.dashboards.atlas import atlas_page
    from workbench.dashboards.experts import experts_page
    from workbench.dashboards.home import home_page
    from workbench.dashboards.lab import lab_page
    from workbench.dashboards.merge import merge_page
    from workbench.dashboards.namm import namm_page
    from workbench.dashboards.qd import qd_page
    from workbench.dashboards.runs import runs_page
    from workbench.dashboards.search import search_page

    # functions, not functools.partial: Panel would display a partial object as text
    def home():
        return home_page(runs_dir)

    def lab():
        return lab_page(runs_dir=runs_dir)

    def search():
        return search_page(runs_dir)

    def runs():
        return runs_page(runs_dir)

    def atlas():
        return atlas_page(runs_dir)

    def merge():
        return merge_page(runs_dir)

    def qd():
        return qd_page(runs_dir)

    def namm():
        return namm_page(runs_dir)

    def experts():
        return experts_page(runs_dir)

    return {"/": home, "lab": lab, "search": search, "runs": runs, "atlas": atlas, "merge": merge, "qd": qd,
            "namm": namm, "experts": experts}


#: the signal that stopped the last blocking `serve` (SIGINT, or SIGTERM handled as one): `workbench serve` exits
#: 128 + it, as every other command stopped by a signal does
stopped_by = signal.SIGINT


def _stop_as_ctrl_c(signum, frame) -> None:
    """SIGTERM (`kill`, a service manager's stop) stops the server as a Ctrl-C does: the SIGINT handler of the
    moment (Panel's stops the loop; then the searches the pages started stop after their iteration, resumable).
    It killed the process, and them with it, mid-iteration and left their runs marked running."""
    global stopped_by
    stopped_by = signal.SIGTERM
    handler = signal.getsignal(signal.SIGINT)
    if not callable(handler):
        raise KeyboardInterrupt
    handler(signal.SIGINT, frame)


def serve(port: int = 5006, runs_dir: str = "runs", address: str = "127.0.0.1", show: bool = False,
          threaded: bool = False, on_stop: Callable[[int], None] | None = None) -> Server | StoppableThread:
    """Start the server (blocking unless threaded); each page gets a fresh model per browser session. OpenBLAS
    runs serially in this process from here on (serial_blas says why).

    Blocking, it returns once a Ctrl-C has stopped the server (Panel's SIGINT handler stops the loop) and the
    searches the pages started have stopped after their current iteration, marked stopped and resumable;
    on_stop(n) is told first how many there are to wait for. A second Ctrl-C ends the wait (and the process)."""
    pn.extension("tabulator", inline=True)
    quiet_closed_sessions()
    ordered_patches()  # see its docstring (a page's updates sent out of order broke the browser's copy)
    local_stylesheets()  # see its docstring (a hidden tab's pane that changed sent the browser to the CDN)
    serial_blas()  # before any page runs: see its docstring (a fork in one thread froze BLAS in another)
    global stopped_by
    stopped_by = signal.SIGINT
    # the main thread's only (signal.signal refuses elsewhere, as Panel's own SIGINT handler is)
    previous = signal.signal(signal.SIGTERM, _stop_as_ctrl_c) \
        if not threaded and threading.current_thread() is threading.main_thread() else None
    server = pn.serve(pages(runs_dir), port=port, address=address, show=show, liveness=True,
                      threaded=threaded, websocket_origin=[f"{address}:{port}", f"localhost:{port}"], verbose=False,
                      transforms=[_frame_policy()])
    if not threaded:
        from workbench.dashboards.search import SearchJob

        signal.signal(signal.SIGINT, signal.default_int_handler)  # Panel's stops a loop that has stopped
        jobs = SearchJob.running_jobs()
        if on_stop is not None:
            on_stop(len(jobs))
        SearchJob.stop_all(jobs)
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)  # a notebook's own handling back
    return server
