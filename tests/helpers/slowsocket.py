"""
A connection whose socket takes a few bytes at each write.
"""

from __future__ import annotations

from twisted.internet.abstract import FileDescriptor
from twisted.internet.error import ConnectionAborted
from twisted.internet.testing import MemoryReactor
from twisted.python.failure import Failure


class SlowSocket(FileDescriptor):
    """
    A connection whose socket takes C{taken} bytes at each write, as a
    UNIX socket takes what its buffer holds: what it was given is in
    C{written}; C{aborted} says whether it was aborted.
    """

    def __init__(self, taken: int):
        super().__init__(MemoryReactor())
        self.connected = True
        self.taken = taken
        self.written = b""
        self.aborted = False

    def writeSomeData(self, data: bytes) -> int:
        """
        Take C{taken} bytes of C{data} at most.
        """
        part = bytes(data[: self.taken])
        self.written += part
        return len(part)

    def abortConnection(self) -> None:
        """
        Lose the connection at once, as a socket's C{abortConnection} does
        (a turn later there).
        """
        self.aborted = True
        self.connectionLost(Failure(ConnectionAborted()))
