"""The `workbench merge` commands (registered by workbench.cli)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add this package's subcommands to the `workbench` parser."""
