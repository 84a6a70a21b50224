"""
The writes that failed, kept to be tried again at the retry pace: the
latest one per key, due sooner after one failed round than after many.
"""

from __future__ import annotations

from collections.abc import Container, Hashable, Iterator
from typing import TYPE_CHECKING, Any

from .policy import retryDelay
from .storage.interface import ILease

if TYPE_CHECKING:
    from .writequeue import Write


class WriteRetries:
    """
    The failed writes, by key, and when they are due again.

    @ivar retryAt: When the failed writes are due to be tried again.
    """

    def __init__(self, reactor: Any, checkInterval: float):
        """
        @param checkInterval: The longest wait between two rounds of retries.
        """
        self._reactor = reactor
        self._checkInterval = checkInterval
        # The latest failed write per key; _rounds counts the rounds that
        # failed.
        self._unwritten: dict[Hashable, Write] = {}
        self._rounds = 0
        self.retryAt = 0.0

    def failed(self, key: Hashable, write: Write) -> None:
        """
        Keep C{write}, which failed, to be tried again, in place of any
        earlier failed write of C{key}.
        """
        self._unwritten[key] = write
        self.retryAt = self._reactor.seconds() + retryDelay(self._rounds + 1, self._checkInterval)

    def succeeded(self, key: Hashable) -> Write | None:
        """
        A write of C{key} worked: writes run in order, so that it makes
        any earlier failed write of the same thing moot.

        @return: That earlier failed write, dropped, if there was one.
        """
        earlier = self._unwritten.pop(key, None)
        if not self._unwritten:
            self._rounds = 0
        return earlier

    def due(self, now: float, underWay: Container[Hashable]) -> Iterator[tuple[Hashable, Write]]:
        """
        The failed writes to try again at C{now}, each taken out as it is
        handed over: none before L{retryAt}, and none whose key is in
        C{underWay} (see L{waiting}).
        """
        if now < self.retryAt:
            return
        retrying = self.waiting(underWay)
        if retrying:
            self._rounds += 1
        for key, write in retrying.items():
            del self._unwritten[key]
            yield key, write

    def waiting(self, underWay: Container[Hashable]) -> dict[Hashable, Write]:
        """
        The failed writes whose key has no newer write in C{underWay}: one
        that has waits for it instead, whose end replaces it or makes it
        moot.
        """
        return {k: w for k, w in self._unwritten.items() if k not in underWay}

    def under(self, lease: ILease) -> bool:
        """
        Whether a failed write made under C{lease} waits to be tried again.
        """
        return any(write.fence is lease for write in self._unwritten.values())
