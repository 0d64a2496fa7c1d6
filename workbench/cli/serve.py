"""`workbench serve` (the Panel dashboards in one server) and `workbench screenshots` (one PNG per page)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from workbench.cli.common import PORT, err, say
from workbench.dashboards.screenshots import PAGES as SCREENSHOT_PAGES  # standard library only: no Panel here


def check_serve(args) -> None:
    """One ValueError naming the flag for a run store that is a file, an address this machine does not have or a
    port that is taken, before Panel loads and the "serving" line promises a server."""
    import errno
    import socket

    from workbench.runs import RunStore

    # a --runs that is a file: the run store's own error; "~" as the run store reads it, for every page (the NAMM
    # page and the note below took --runs=~/runs, which bash leaves alone, for a folder named "~" here, where the
    # other pages read the home folder's)
    args.runs = os.fspath(RunStore(args.runs).root)
    if ":" in args.address:  # Bokeh's list of allowed websocket origins cannot hold an IPv6 address ("host:port")
        raise ValueError(f"--address {args.address}: the dashboards' server (Bokeh) takes IPv4 addresses and names, "
                         "not IPv6 ones; give --address 127.0.0.1 (this machine only) or --address "
                         "0.0.0.0 (every interface)")
    try:
        # every address the name resolves to, each in its family, as tornado's bind_sockets will bind them; the
        # server binds them again at once (SO_REUSEADDR: no wait for these sockets to time out)
        for family, kind, proto, _, where in socket.getaddrinfo(args.address or None, args.port,
                                                                type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE):
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # as tornado's bind_sockets
                probe.bind(where)
    except OSError as error:  # a name that does not resolve: a gaierror, with getaddrinfo's (negative) code
        if error.errno == errno.EADDRINUSE:
            raise ValueError(f"port {args.port} is in use (another server?); give another --port, e.g. "
                             f"--port {args.port + 1 if args.port < 65535 else 5006}") from None
        if error.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT) or (error.errno or 0) < 0:
            raise ValueError(f"--address {args.address}: not an address of this machine; e.g. --address "
                             "127.0.0.1 (this machine only) or --address 0.0.0.0 (every interface)") from None
        if error.errno == errno.EACCES:
            raise ValueError(f"--port {args.port}: this user may not serve on it (ports below 1024 need root); "
                             "give e.g. --port 5006") from None
        raise


def exposure(address: str, port: int) -> str | None:
    """What serving on `address` lets others do, said when it is not this machine only (None for a loopback
    address): the pages have no login, and anyone who reaches the port drives them as the user does."""
    import ipaddress
    import socket

    try:
        # AI_PASSIVE as check_serve and tornado's bind_sockets: --address '' binds every interface, not loopback
        loopback = all(ipaddress.ip_address(where[4][0]).is_loopback
                       for where in socket.getaddrinfo(address or None, port, type=socket.SOCK_STREAM,
                                                       flags=socket.AI_PASSIVE))
    except (OSError, ValueError):
        loopback = False
    if loopback:
        return None
    return (f"--address {address} serves the dashboards beyond this machine, with no login: whoever reaches port "
            f"{port} can start and remove runs, write notes and open the files and model folders the pages take "
            f"by path, as you. On a shared network serve on 127.0.0.1 and reach it through a tunnel "
            f"(ssh -L {port}:localhost:{port} HOST)")


def cmd_serve(args) -> int:
    check_serve(args)
    import logging

    # a request refused (4xx: no such page, …) is the browser's answer, not a line of the server's output; its
    # errors (5xx) still show
    logging.getLogger("tornado.access").setLevel(logging.ERROR)
    from workbench.dashboards import app
    from workbench.dashboards.app import PAGES, serve

    pages = ", ".join(f"/{p}" for p in PAGES)
    if not Path(args.runs).exists():  # a typo in --runs showed empty pages and said nothing
        say("note", f"--runs {args.runs} does not exist yet: the pages show no runs until a run is made there")
    if (exposed := exposure(args.address, args.port)) is not None:
        say("warning", exposed)
    err.print(f"serving http://{args.address}:{args.port}/ (pages: {pages}; Ctrl-C stops)", soft_wrap=True)
    serve(port=args.port, runs_dir=args.runs, address=args.address, show=args.show, on_stop=_stopping)
    return 128 + app.stopped_by  # a Ctrl-C's 130, SIGTERM's 143 (the server stops on a signal only)


def _stopping(searches: int) -> None:
    if searches:
        err.print(f"stopping {searches} search{'es' if searches > 1 else ''} after the current iteration; they stay "
                  "resumable (Ctrl-C again: stop at once)", soft_wrap=True)


def cmd_screenshots(args) -> int:
    from pathlib import Path

    from workbench.dashboards.screenshots import PAGES, refresh

    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} is a file; give a folder for the PNGs (default: docs/screenshots)")
    if args.runs is not None:
        from workbench.runs import RunStore

        # a --runs that is a file: the run store's own error; "~" as the run store reads it, for every page
        args.runs = os.fspath(RunStore(args.runs).root)
        if not Path(args.runs).is_dir():  # a mistyped --runs was made, and filled with sample runs
            raise ValueError(f"--runs {args.runs}: no such folder, so no run store there; give --runs the folder the "
                             "runs were written to, or leave --runs out for sample runs in a temporary folder")
    try:
        with err.status("serving the dashboards and taking one screenshot per page …"):
            paths = refresh(out_dir=args.out, runs_dir=args.runs, pages=args.pages or PAGES)
    except RuntimeError as error:  # the server did not come up, a page reached for the network: said, no traceback
        say("error", f"screenshots: {error}", style="bold red")
        return 1
    for path in paths:
        print(path)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser("serve", help="the Panel dashboards in one server (home at /; "
                                         + " ".join(f"/{p}" for p in SCREENSHOT_PAGES[1:]) + ")")
    serve.add_argument("--port", type=PORT, default=5006, help="port to serve on")
    serve.add_argument("--address", default="127.0.0.1",
                       help="address to serve on: 127.0.0.1 this machine only, 0.0.0.0 every interface")
    serve.add_argument("--runs", default="runs", help="run store folder (default: runs)")
    serve.add_argument("--show", action="store_true", help="open a browser")
    serve.set_defaults(func=cmd_serve)

    shots = sub.add_parser("screenshots", help="refresh one screenshot per dashboard page (Debian chromium)",
                           description="Serves the dashboards, makes a small run of each kind when the runs folder "
                                       "has none and a page shows runs (about 1.5 min; the Lab, Search and NAMM "
                                       "pages need none), and saves PAGE.png for every page. The Search page's "
                                       "shot starts a small search (8 iterations), which joins --runs.")
    shots.add_argument("--out", default="docs/screenshots", help="folder for the PNGs (default: docs/screenshots)")
    shots.add_argument("--runs", default=None, help="run store to show, an existing folder; the Search page's shot "
                                                    "adds a small run to it (default: sample runs in a temporary "
                                                    "folder)")
    shots.add_argument("--pages", nargs="+", choices=SCREENSHOT_PAGES,
                       help="only these pages (default: all)")
    shots.set_defaults(func=cmd_screenshots)
