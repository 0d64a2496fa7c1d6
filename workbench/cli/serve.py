"""`workbench serve` (the Panel dashboards in one server) and `workbench screenshots` (one PNG per page)."""

from __future__ import annotations

import argparse

from workbench.cli.common import err
from workbench.dashboards.screenshots import PAGES as SCREENSHOT_PAGES  # standard library only: no Panel here


def cmd_serve(args) -> int:
    from workbench.dashboards.app import PAGES, serve

    pages = ", ".join(f"/{p}" for p in PAGES)
    err.print(f"serving http://{args.address}:{args.port}/ (pages: {pages}; Ctrl-C stops)")
    serve(port=args.port, runs_dir=args.runs, address=args.address, show=args.show)
    return 0


def cmd_screenshots(args) -> int:
    from workbench.dashboards.screenshots import PAGES, refresh

    with err.status("serving the dashboards and taking one screenshot per page …"):
        paths = refresh(out_dir=args.out, runs_dir=args.runs, pages=args.pages or PAGES)
    for path in paths:
        print(path)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser("serve", help="the Panel dashboards in one server (home at /; "
                                         + " ".join(f"/{p}" for p in SCREENSHOT_PAGES[1:]) + ")")
    serve.add_argument("--port", type=int, default=5006)
    serve.add_argument("--address", default="127.0.0.1")
    serve.add_argument("--runs", default="runs", help="run store folder (default: runs)")
    serve.add_argument("--show", action="store_true", help="open a browser")
    serve.set_defaults(func=cmd_serve)

    shots = sub.add_parser("screenshots", help="refresh one screenshot per dashboard page (Debian chromium)",
                           description="Serves the dashboards, makes a small run of each kind when the runs folder "
                                       "has none (about 1.5 min), and saves PAGE.png for every page.")
    shots.add_argument("--out", default="docs/screenshots", help="folder for the PNGs (default: docs/screenshots)")
    shots.add_argument("--runs", default=None, help="run store to show (default: sample runs in a temporary folder)")
    shots.add_argument("--pages", nargs="+", choices=SCREENSHOT_PAGES,
                       help="only these pages (default: all)")
    shots.set_defaults(func=cmd_screenshots)
