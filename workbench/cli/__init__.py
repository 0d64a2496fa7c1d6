"""The `workbench` command (also `python -m workbench`): one module per command group.

Each module's `register(sub)` adds its subcommands; handlers import the library when they run, so `--help`
and argument errors come back at once. Errors the library raises as ValueError print as one `error:` line
(exit 2).
"""

from __future__ import annotations

import argparse
import os
import sys

from workbench.cli import asal, bench, experts, figure, merge, namm, qd, runs, serve, sim, zoo
from workbench.cli.common import err

GROUPS = (sim, bench, asal, figure, serve, runs, zoo, merge, qd, experts, namm)


def build_parser() -> argparse.ArgumentParser:
    from workbench import __version__

    parser = argparse.ArgumentParser(prog="workbench", description="ASAL substrates, searches and explorers; "
                                                                   "model zoos and evolved merges.")
    parser.add_argument("--version", action="version", version=f"workbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as error:
        err.print(f"[bold red]error:[/] {error}", soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
