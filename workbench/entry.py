"""The `workbench` executable and `python -m workbench`: the command line's imports (a second's worth of rich,
argparse and the command modules) within reach of a Ctrl-C, which otherwise printed a KeyboardInterrupt
traceback from the middle of an import."""

import sys


def run() -> None:
    """workbench.cli.run, imported here: a Ctrl-C while it imports ends the command as one during it does (130)."""
    try:
        from workbench.cli import run as command
    except KeyboardInterrupt:
        sys.exit(130)
    command()
