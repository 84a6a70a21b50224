"""
The C{testca} subcommand: a local test CA for any configuration.

A placeholder until the real module is merged.
"""

from __future__ import annotations

import argparse
from typing import Any, TextIO


def addArguments(parser: argparse.ArgumentParser) -> None:
    """
    The subcommand takes no arguments yet.
    """


async def serve(reactor: Any, arguments: argparse.Namespace, out: TextIO) -> int:
    """
    Say that the test CA is not available yet.
    """
    print("not available yet", file=out)
    return 1
