"""`workbench serve`: the Panel dashboards in one server."""

from __future__ import annotations

import argparse

from workbench.cli.common import err


def cmd_serve(args) -> int:
    from workbench.dashboards.app import PAGES, serve

    pages = ", ".join(f"/{p}" for p in PAGES)
    err.print(f"serving http://{args.address}:{args.port}/ (pages: {pages}; Ctrl-C stops)")
    serve(port=args.port, runs_dir=args.runs, address=args.address, show=args.show)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser("serve", help="the Panel dashboards (/lab /search /runs /atlas /merge) in one server")
    serve.add_argument("--port", type=int, default=5006)
    serve.add_argument("--address", default="127.0.0.1")
    serve.add_argument("--runs", default="runs", help="run store folder (default: runs)")
    serve.add_argument("--show", action="store_true", help="open a browser")
    serve.set_defaults(func=cmd_serve)
