"""
What the resource's parts share to log: times as events write them, and
failures that no caller handles.
"""

from __future__ import annotations

import datetime

from twisted.internet.defer import CancelledError
from twisted.logger import Logger
from twisted.python.failure import Failure


def utc(seconds: float) -> datetime.datetime:
    """
    The time C{seconds} after the epoch, in UTC.
    """
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)


def when(seconds: float) -> str:
    """
    The time C{seconds} after the epoch, as events show it.
    """
    return utc(seconds).isoformat(timespec="seconds")


def unexpected(log: Logger, failure: Failure) -> None:
    """
    Log C{failure} on C{log} as a bug, unless it is a cancellation.
    """
    if not failure.check(CancelledError):
        log.failure("Unexpected error in the lets-encrypt resource", failure)
