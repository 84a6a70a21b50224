"""
The L{IStorage} of a cluster node: the cluster's database, sealed, with
the state directory as a cache.

Every value goes to the database sealed (L{SealedStorage}).  The
certificates, their renewal state and the provisional signer are also
copied to the state directory as they are stored or read, so that a node
that starts while the database cannot be reached reads them there and
serves (L{CACHED}).  While the database cannot be reached (see
L{Availability}), those are read from the cache; everything else,
leases included, fails at once: nobody orders on a node cut off from the
database.  When it is back, the watches that could not be set up are,
and every key they cover is reported as changed, so that what other nodes
stored meanwhile is taken.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Collection
from typing import Any, TypeVar

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from .. import events
from ..clusteroptions import parseNodeName
from ..coroutines import deferred
from .availability import Availability
from .interface import (
    ILease,
    IStorage,
    StorageError,
    StorageUnavailable,
    checkPrefix,
)
from .pgsql import holderNode
from .records import SIGNER_KEY
from .sealed import SealedStorage
from .sealing import Sealer

T = TypeVar("T")

#: What the state directory keeps a copy of: keys equal to, or starting
#: with, one of these.
CACHED = ("certificates/", "renewal/", SIGNER_KEY)
#: The keys whose change from another node is a certificate received.
_CERTIFICATES = "certificates/"


def cached(key: str) -> bool:
    """
    Whether the state directory keeps a copy of C{key} (or of the keys
    starting with the prefix C{key}).
    """
    return key == SIGNER_KEY or key.startswith(CACHED[:2])


@implementer(ILease)
@attrs.frozen
class ClusterLease:
    """
    A lease of the database, whose loss is reported (event 20218).

    @ivar inner: The database's lease.
    """

    inner: ILease
    _lost: Callable[[ILease, StorageError], None] = attrs.field(repr=False)

    @property
    def name(self) -> str:
        return str(self.inner.name)

    @property
    def token(self) -> int:
        return int(self.inner.token)

    def renew(self) -> Deferred[None]:
        def failed(error: Any) -> Any:
            if isinstance(error.value, StorageError):
                self._lost(self.inner, error.value)
            return error

        return self.inner.renew().addErrback(failed)

    def release(self) -> Deferred[None]:
        return self.inner.release()


@attrs.define(eq=False)
class _Watch:
    prefix: str
    callback: Callable[[str], object]
    stop: Callable[[], None] | None = None
    stopped: bool = False


@implementer(IStorage)
class ClusterStorage:
    """
    One node's storage in the cluster: see the module's docstring.
    """

    #: Every node uses the database.
    exclusive = False
    _log = Logger()

    def __init__(
        self,
        database: IStorage,
        cache: IStorage,
        sealer: Sealer,
        clock: IReactorTime,
        keyFile: str,
        onRefused: Callable[[], object] = lambda: None,
    ):
        """
        @param database: The database's storage, values in clear (a
            L{PostgresStorage <letsencrypt_resource.storage.postgres.PostgresStorage>}).
        @param cache: The state directory's.
        @param sealer: Seals the values for the database (its node names
            this node in events).
        @param keyFile: The key file's path, for errors and events.
        @param onRefused: Called when the database was first used with
            another key file (event 20220).
        """
        self.node = sealer.node
        self._database = database
        self._shared = SealedStorage(database, sealer, self._opened)
        self._cache = cache
        self._watches: list[_Watch] = []
        #: Called with the time the database was found lost, once it is
        #: back (after the watches are set up again).
        self.backListeners: list[Callable[[float], object]] = []
        self._incoming: set[str] = set()
        # Each call that reads or writes a cached key takes a ticket before
        # it reaches the database; the cache keeps the value of the
        # largest ticket copied, so that a slow read never puts back a
        # value older than one a later call copied.
        self._tickets = itertools.count()
        self._copied: dict[str, int] = {}
        self.availability = Availability(
            self._shared, clock, self.node, keyFile, self._back, onRefused
        )

    @deferred
    async def _call(self, key: str, start: Callable[[], Awaitable[T]]) -> T:
        """
        C{start()}, once the database may be used; a failure for want of
        it marks it lost.
        """
        await self.availability.ready()
        refusal = self.availability.refusal(key)
        if refusal is not None:
            raise refusal
        try:
            return await start()
        except StorageUnavailable as error:
            self.availability.lost(error)
            raise

    def _opened(self, key: str, node: str) -> None:
        """
        A value sealed by C{node} was read at C{key}: a certificate
        received, when another node's change of it was reported.
        """
        if key in self._incoming:
            self._incoming.discard(key)
            if node != self.node:
                events.CLUSTER_CERTIFICATE_RECEIVED.emit(
                    self._log, node_name=self.node, key=key, stored_by=node
                )

    async def _copy(self, ticket: int, values: dict[str, bytes | None]) -> None:
        """
        Bring the cache's copies of C{values} up to date, except those that
        a later call (whose database query started after this one's, with
        a larger C{ticket}) copied already; a failure is event 20221,
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
        try:
            copies = await self._cache.loadMany(list(values))
        except StorageError:
            copies = {}
        for key, value in values.items():
            if key in copies and copies[key] == value:
                continue
            try:
                if value is None:
                    await self._cache.delete(key)
                else:
                    await self._cache.store(key, value)
            except StorageError as error:
                events.CLUSTER_CACHE_WRITE_FAILED.emit(
                    self._log, node_name=self.node, key=key, details=error.message
                )

    @deferred
    async def load(self, key: str) -> bytes | None:
        found = await self.loadMany([key])
        return found[key]

    @deferred
    async def loadMany(self, keys: Collection[str]) -> dict[str, bytes | None]:
        keys = list(keys)
        ticket = next(self._tickets)
        try:
            found = await self._call(", ".join(keys[:1]), lambda: self._shared.loadMany(keys))
        except StorageUnavailable:
            if not keys or not all(cached(key) for key in keys):
                raise
            return await self._cache.loadMany(keys)
        await self._copy(ticket, found)
        return found

    @deferred
    async def store(self, key: str, value: bytes, fence: ILease | None = None) -> None:
        ticket = next(self._tickets)
        await self._call(key, lambda: self._shared.store(key, value, _inner(fence)))
        await self._copy(ticket, {key: bytes(value)})

    @deferred
    async def delete(self, key: str, fence: ILease | None = None) -> None:
        ticket = next(self._tickets)
        await self._call(key, lambda: self._shared.delete(key, _inner(fence)))
        await self._copy(ticket, {key: None})

    @deferred
    async def list(self, prefix: str) -> list[str]:
        try:
            return await self._call(prefix, lambda: self._shared.list(prefix))
        except StorageUnavailable:
            if not cached(prefix):
                raise
            return await self._cache.list(prefix)

    @deferred
    async def lease(self, name: str, seconds: float) -> ILease | None:
        lease = await self._call(name, lambda: self._shared.lease(name, seconds))
        if lease is None:
            return None
        events.CLUSTER_LEASE_TAKEN.emit(
            self._log, node_name=self.node, name=lease.name, token=lease.token
        )
        return ClusterLease(lease, self._leaseLost)

    @deferred
    async def leaseNodes(self, prefix: str) -> dict[str, tuple[str, float]]:
        """
        The database's leases held now whose names start with C{prefix}:
        for each, the node that holds it and when it expires, in seconds
        since the epoch by the database's clock (see
        C{PostgresStorage.leaseHolders}).
        """
        database: Any = self._database
        held = await self._call(prefix, lambda: database.leaseHolders(prefix))
        return {name: (_nodeOf(holder), until) for name, (holder, until) in held.items()}

    def _leaseLost(self, lease: ILease, error: StorageError) -> None:
        events.CLUSTER_LEASE_LOST.emit(
            self._log, node_name=self.node, name=lease.name, details=str(error)
        )
        if isinstance(error, StorageUnavailable):
            self.availability.lost(error)

    @deferred
    async def watch(self, prefix: str, callback: Callable[[str], object]) -> Callable[[], None]:
        checkPrefix(prefix)

        def changed(key: str) -> None:
            if key.startswith(_CERTIFICATES):
                self._incoming.add(key)
            callback(key)

        watch = _Watch(prefix, changed)
        self._watches.append(watch)
        try:
            await self._call(prefix, lambda: self._setUp(watch))
        except StorageUnavailable:
            pass  # set up when the database is back: see _back
        return lambda: self._stopWatch(watch)

    async def _setUp(self, watch: _Watch) -> None:
        stop = await self._shared.watch(watch.prefix, watch.callback)
        if watch.stopped:
            stop()
        else:
            watch.stop = stop

    def _stopWatch(self, watch: _Watch) -> None:
        watch.stopped = True
        if watch in self._watches:
            self._watches.remove(watch)
        if watch.stop is not None:
            watch.stop()

    def _back(self, lostSince: float) -> Deferred[None]:
        """
        The database is back: set up the watches that could not be, and
        report every key they cover as changed; then tell the
        L{backListeners}.
        """
        return Deferred.fromCoroutine(self._catchUp(lostSince)).addErrback(
            lambda failure: self._log.failure("Catching up with the cluster", failure)
        )

    async def _catchUp(self, lostSince: float) -> None:
        for watch in [w for w in self._watches if w.stop is None]:
            try:
                await self._call(watch.prefix, lambda: self._setUp(watch))  # noqa: B023
                keys = await self.list(watch.prefix)
            except StorageUnavailable:
                return  # lost again: the next return tries again
            for key in keys:
                if not watch.stopped:
                    watch.callback(key)
        for listener in list(self.backListeners):
            listener(lostSince)

    @deferred
    async def close(self) -> None:
        """
        Stop trying to reach the database, then close it and the cache.
        """
        self.availability.close()
        for watch in list(self._watches):
            self._stopWatch(watch)
        try:
            await self._shared.close()
        finally:
            await self._cache.close()


def _inner(fence: ILease | None) -> ILease | None:
    """
    The database's lease behind C{fence}.
    """
    return fence.inner if isinstance(fence, ClusterLease) else fence


def _nodeOf(holder: str) -> str:
    """
    The node that holds a lease as C{holder}, or C{unknown} when it names
    none: the holder is not sealed, and is shown to people.
    """
    try:
        return parseNodeName(holderNode(holder))
    except ValueError:
        return "unknown"
