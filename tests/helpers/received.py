"""
A protocol for tests that reads a connection to its end.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol


class Received(Protocol):
    """
    Collects what it receives; C{ended} fires with it once the connection
    ends.
    """

    def __init__(self) -> None:
        self.received = b""
        self.ended: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any) -> None:
        self.ended.callback(self.received)
