"""
A store that can be cut off, as a database that goes down: while it is,
every call fails with L{StorageUnavailable}, as L{PostgresStorage} fails
for want of a connection.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from twisted.internet.defer import Deferred, fail
from zope.interface import implementer

from letsencrypt_resource.storage.interface import ILease, IStorage, StorageUnavailable
from letsencrypt_resource.storage.memory import MemoryStorage


@implementer(IStorage)
class SwitchedStorage:
    """
    A L{MemoryStorage} behind a switch.

    @ivar down: Whether calls fail now.
    @ivar calls: How many calls were made, failed ones included.
    @ivar slow: Whether the answers of the calls made now are held back
        (in L{held}, each a function that delivers one).
    @ivar gated: Whether the calls made now are held back before they
        reach the store (in L{waiting}, each a function that makes one):
        calls of several nodes then run in the order a test chooses.
    """

    exclusive = False

    def __init__(self, inner: MemoryStorage, down: bool = False):
        self.inner = inner
        self.down = down
        self.calls = 0
        self.slow = False
        self.held: list[Callable[[], None]] = []
        self.gated = False
        self.waiting: list[Callable[[], None]] = []

    def _through(self, key: str, call: Callable[[], Deferred[Any]]) -> Deferred[Any]:
        self.calls += 1
        if self.gated:
            gate: Deferred[Any] = Deferred()
            self.waiting.append(lambda: self._reach(key, call).chainDeferred(gate))
            return gate
        return self._reach(key, call)

    def _reach(self, key: str, call: Callable[[], Deferred[Any]]) -> Deferred[Any]:
        if self.down:
            return fail(StorageUnavailable(key, "the database failed: connection refused"))
        if self.slow:
            # Answered now, delivered when the test says: a slow reply.
            late: Deferred[Any] = Deferred()
            call().chainDeferred(late)
            return late.addBoth(lambda result: self._later(result))
        return call()

    def _later(self, result: Any) -> Deferred[Any]:
        waiting: Deferred[Any] = Deferred()
        self.held.append(lambda: waiting.callback(result))
        return waiting

    def load(self, key: str) -> Deferred[bytes | None]:
        return self._through(key, lambda: self.inner.load(key))

    def loadMany(self, keys: Collection[str]) -> Deferred[dict[str, bytes | None]]:
        return self._through("keys", lambda: self.inner.loadMany(keys))

    def store(self, key: str, value: bytes, fence: ILease | None = None) -> Deferred[None]:
        return self._through(key, lambda: self.inner.store(key, value, fence))

    def delete(self, key: str, fence: ILease | None = None) -> Deferred[None]:
        return self._through(key, lambda: self.inner.delete(key, fence))

    def list(self, prefix: str) -> Deferred[list[str]]:
        return self._through(prefix, lambda: self.inner.list(prefix))

    def lease(self, name: str, seconds: float) -> Deferred[ILease | None]:
        return self._through(name, lambda: self.inner.lease(name, seconds))

    def watch(self, prefix: str, callback: Callable[[str], object]) -> Deferred[Any]:
        return self._through(prefix, lambda: self.inner.watch(prefix, callback))

    def close(self) -> Deferred[None]:
        return self.inner.close()

    def release(self) -> None:
        """
        Make the first call held at the gate (failed if the store is down
        now), if there is one.
        """
        if self.waiting:
            self.waiting.pop(0)()

    def drain(self) -> None:
        """
        Make the calls held at the gate, and those they lead to, until none
        is left.
        """
        while self.waiting:
            self.release()
