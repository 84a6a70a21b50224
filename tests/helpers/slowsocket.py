"""
A connection whose socket takes a few bytes at each write.
"""

from __future__ import annotations

from twisted.internet.abstract import FileDescriptor
from twisted.internet.testing import MemoryReactor


class SlowSocket(FileDescriptor):
    """
    A connection whose socket takes C{taken} bytes at each write, as a
    UNIX socket takes what its buffer holds: what it was given is in
    C{written}.
    """

    def __init__(self, taken: int):
        super().__init__(MemoryReactor())
        self.connected = True
        self.taken = taken
        self.written = b""

    def writeSomeData(self, data: bytes) -> int:
        """
        Take C{taken} bytes of C{data} at most.
        """
        part = bytes(data[: self.taken])
        self.written += part
        return len(part)
