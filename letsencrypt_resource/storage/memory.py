"""
A complete L{IStorage} in memory, for tests and for embedders' tests.

Several L{MemoryStorage} objects on one L{SharedMemory} behave as nodes on
one database: they read each other's writes, contend for the same leases
(timed by the shared clock) and are told of each other's changes.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from .interface import (
    ILease,
    IStorage,
    LeaseLost,
    StorageError,
    checkKey,
    checkPrefix,
    checkValue,
)
from .leases import Lease, LeaseTable, checkFence, reportStale
from .notify import ChangeFeed


class SharedMemory:
    """
    The place that L{MemoryStorage} objects share: values, leases, watches.
    """

    def __init__(self, clock: IReactorTime):
        """
        @param clock: What times the leases.
        """
        self.values: dict[str, bytes] = {}
        self.leases = LeaseTable(clock)
        self.feed = ChangeFeed()


@implementer(IStorage)
class MemoryStorage:
    """
    An L{IStorage} in a L{SharedMemory}: one node of it.
    """

    #: Other nodes use the same memory.
    exclusive = False

    def __init__(self, shared: SharedMemory):
        self._shared = shared
        self._closed = False

    def _checkOpen(self, key: str) -> None:
        if self._closed:
            raise StorageError(key, "the storage is closed")

    def _checkPlace(self, key: str) -> None:
        """
        Check that C{key} is not below a value, nor a folder of other keys,
        as a file system would.

        @raise StorageError: when it is.
        """
        values = self._shared.values
        if key in values:
            return
        parts = key.split("/")
        for end in range(1, len(parts)):
            if "/".join(parts[:end]) in values:
                raise StorageError(key, f"{'/'.join(parts[:end])} is a value, not a folder")
        if any(k.startswith(key + "/") for k in values):
            raise StorageError(key, "is a folder of other keys")

    def load(self, key: str) -> Deferred[bytes | None]:
        try:
            self._checkOpen(checkKey(key))
            self._checkPlace(key)
        except StorageError:
            return fail()
        return succeed(self._shared.values.get(key))

    def loadMany(self, keys: Collection[str]) -> Deferred[dict[str, bytes | None]]:
        return Deferred.fromCoroutine(self._loadMany(list(keys)))

    async def _loadMany(self, keys: list[str]) -> dict[str, bytes | None]:
        """
        Each of C{keys} loaded by L{load} in turn, so that a test's store
        that overrides it changes both.
        """
        return {key: await self.load(key) for key in keys}

    def _change(self, key: str, fence: ILease | None, value: bytes | None) -> Deferred[None]:
        try:
            self._checkOpen(checkKey(key))
            self._checkPlace(key)
            if fence is not None:
                checkFence(key, fence, self._shared.leases.newest(fence.name))
        except StorageError:
            return fail().addErrback(reportStale)
        if value is None:
            self._shared.values.pop(key, None)
        else:
            self._shared.values[key] = value
        self._shared.feed.changed(self, key)
        return succeed(None)

    def store(self, key: str, value: bytes, fence: ILease | None = None) -> Deferred[None]:
        try:
            data = checkValue(key, value)
        except StorageError:
            return fail()
        return self._change(key, fence, data)

    def delete(self, key: str, fence: ILease | None = None) -> Deferred[None]:
        return self._change(key, fence, None)

    def list(self, prefix: str) -> Deferred[list[str]]:
        try:
            self._checkOpen(checkPrefix(prefix))
        except StorageError:
            return fail()
        return succeed(sorted(k for k in self._shared.values if k.startswith(prefix)))

    def lease(self, name: str, seconds: float) -> Deferred[ILease | None]:
        try:
            self._checkOpen(checkKey(name))
        except StorageError:
            return fail()
        token = self._shared.leases.take(name, seconds, self)
        if token is None:
            return succeed(None)
        return succeed(Lease(name, token, seconds, self._renew, self._release))

    def _renew(self, lease: Lease) -> Deferred[None]:
        if self._closed or not self._shared.leases.renew(lease):
            return fail(LeaseLost(lease.name, "is no longer held by this storage"))
        return succeed(None)

    def _release(self, lease: Lease) -> Deferred[None]:
        self._shared.leases.release(lease)
        return succeed(None)

    def watch(self, prefix: str, callback: Callable[[str], object]) -> Deferred[Callable[[], None]]:
        try:
            self._checkOpen(checkPrefix(prefix))
        except StorageError:
            return fail()
        return succeed(self._shared.feed.watch(self, prefix, callback))

    def close(self) -> Deferred[None]:
        self._closed = True
        self._shared.leases.releaseAll(self)
        self._shared.feed.forget(self)
        return succeed(None)
