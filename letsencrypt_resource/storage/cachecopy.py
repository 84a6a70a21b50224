"""
The copies a cluster node keeps in its state directory of what it reads
from and writes to the database: never older than what the node last read
or wrote.

A write's copy is numbered when the database has taken the write, a
read's when the read is sent; a copy is made (one at a time) only while
no larger number has claimed its key, checked again right before each
write to the cache.  So neither a slow read, nor a read answered from
before a write's commit on another connection, nor a copy queued behind
a later one puts an older value back.
"""

from __future__ import annotations

import itertools

from twisted.internet.defer import DeferredLock
from twisted.logger import Logger

from .. import events
from .interface import IStorage, StorageError
from .records import SIGNER_KEY

#: What the state directory keeps a copy of: keys equal to, or starting
#: with, one of these.
CACHED = ("certificates/", "renewal/", SIGNER_KEY)


def cached(key: str) -> bool:
    """
    Whether the state directory keeps a copy of C{key} (or of the keys
    starting with the prefix C{key}).
    """
    return key == SIGNER_KEY or key.startswith(CACHED[:2])


class CacheCopies:
    """
    Brings one node's cache up to date with the values it reads and writes.
    """

    _log = Logger()

    def __init__(self, cache: IStorage, node: str):
        """
        @param cache: The state directory's storage.
        @param node: The node's name, for events.
        """
        self._cache = cache
        self._node = node
        self._tickets = itertools.count()
        self._copied: dict[str, int] = {}
        self._copying = DeferredLock()
        # Keys whose copy failed: event 20221 once each, until one works.
        self._uncopied: set[str] = set()

    def reading(self) -> int:
        """
        The number of a read about to be sent.
        """
        return next(self._tickets)

    async def read(self, ticket: int, values: dict[str, bytes | None]) -> None:
        """
        Copy C{values}, read by the read numbered C{ticket}.
        """
        await self._copy(ticket, values)

    async def written(self, key: str, value: bytes | None) -> None:
        """
        Copy C{value} (C{None}: deleted), which the database has just taken
        at C{key}.
        """
        await self._copy(next(self._tickets), {key: value})

    async def _copy(self, ticket: int, values: dict[str, bytes | None]) -> None:
        """
        Bring the cache's copies of C{values} up to date, except those that
        a call with a larger C{ticket} claimed; a failure is event 20221,
        never the caller's.
        """
        values = {
            key: value
            for key, value in values.items()
            if cached(key) and self._copied.get(key, -1) < ticket
        }
        if not values:
            return
        for key in values:
            self._copied[key] = ticket
        await self._copying.acquire()
        try:
            await self._copyClaimed(ticket, values)
        finally:
            self._copying.release()

    async def _copyClaimed(self, ticket: int, values: dict[str, bytes | None]) -> None:
        def claimed(key: str) -> bool:
            return self._copied.get(key) == ticket

        try:
            copies = await self._cache.loadMany([key for key in values if claimed(key)])
        except StorageError:
            copies = {}
        for key, value in values.items():
            if not claimed(key) or (key in copies and copies[key] == value):
                continue
            try:
                if value is None:
                    await self._cache.delete(key)
                else:
                    await self._cache.store(key, value)
            except StorageError as error:
                if key not in self._uncopied:
                    self._uncopied.add(key)
                    events.CLUSTER_CACHE_WRITE_FAILED.emit(
                        self._log, node_name=self._node, key=key, details=error.message
                    )
            else:
                self._uncopied.discard(key)
