"""
The L{IStorage} of a cluster node: the cluster's database, sealed, with
the state directory as a cache.

Every value goes to the database sealed (L{SealedStorage}).  The
certificates, their renewal state and the provisional signer are also
copied to the state directory as they are stored or read, so that a node
that starts while the database cannot be reached reads them there and
serves (L{CACHED <letsencrypt_resource.storage.cachecopy.CACHED>}).
While the database cannot be reached (see
L{Availability}), those are read from the cache; everything else,
leases included, fails at once: nobody orders on a node cut off from the
database.  When it is back, the watches that could not be set up are,
and every key they cover is reported as changed, so that what other nodes
stored meanwhile is taken; so is every key reported but not read from
the database since.

The cache is never given a value older than one the node has seen (see
L{CacheCopies}).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Any, TypeVar

import attrs
from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from .. import events
from ..clusteroptions import parseNodeName
from ..coroutines import deferred
from .availability import Availability, deadline
from .cachecopy import CacheCopies, cached
from .interface import (
    ILease,
    IStorage,
    StorageError,
    StorageUnavailable,
    checkPrefix,
)
from .pgsql import holderNode
from .sealed import SealedStorage
from .sealing import Sealer

T = TypeVar("T")

#: The keys whose change from another node is a certificate received.
_CERTIFICATES = "certificates/"
#: The keys of the challenge tokens (see
#: L{records.challengeKey <letsencrypt_resource.storage.records.challengeKey>}):
#: a read of one is a CA's validation request, which cannot wait.
CHALLENGES = "challenges/"


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
    settingUp: bool = False


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
        # Keys reported to a watch and not read from the database since:
        # reported again when it is back after an outage, so that a change
        # reported while the node read from its cache is taken.
        self._unread: set[str] = set()
        self._copies = CacheCopies(cache, self.node)
        self._clock = clock
        # The earliest outage whose catch-up has not ended, and the
        # catch-ups, one at a time.
        self._lostSince: float | None = None
        self._catchingUp = DeferredLock()
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
        if refusal is not None and key.startswith(CHALLENGES):
            # A CA's validation request does not wait for the next probe.
            await self.availability.recheck()
            refusal = self.availability.refusal(key)
        if refusal is not None:
            raise refusal
        try:
            return await deadline(Deferred.fromCoroutine(_awaited(start)), self._clock, key)
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

    @deferred
    async def load(self, key: str) -> bytes | None:
        value = (await self.loadMany([key]))[key]
        if isinstance(value, StorageError):
            raise value
        return value

    @deferred
    async def loadMany(self, keys: Collection[str]) -> dict[str, bytes | StorageError | None]:
        keys = list(keys)
        ticket = self._copies.reading()
        try:
            found = await self._call(", ".join(keys[:1]), lambda: self._shared.loadMany(keys))
        except StorageUnavailable:
            if not keys or not all(cached(key) for key in keys):
                raise
            return await self._cache.loadMany(keys)
        self._unread.difference_update(found)
        # A value too large to read is not copied: the cache keeps its own.
        readable = {k: v for k, v in found.items() if not isinstance(v, StorageError)}
        await self._copies.read(ticket, readable)
        return found

    @deferred
    async def store(self, key: str, value: bytes, fence: ILease | None = None) -> None:
        await self._call(key, lambda: self._shared.store(key, value, _inner(fence)))
        await self._copies.written(key, bytes(value))

    @deferred
    async def delete(self, key: str, fence: ILease | None = None) -> None:
        await self._call(key, lambda: self._shared.delete(key, _inner(fence)))
        await self._copies.written(key, None)

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
            self._unread.add(key)
            callback(key)

        watch = _Watch(prefix, changed)
        self._watches.append(watch)
        try:
            await self._setUpOnce(watch)
        except StorageUnavailable:
            pass  # set up when the database is back: see _back
        return lambda: self._stopWatch(watch)

    async def _setUpOnce(self, watch: _Watch) -> None:
        """
        Set C{watch} up, unless it is, or being set up, or stopped.
        """
        if watch.stop is not None or watch.settingUp or watch.stopped:
            return
        watch.settingUp = True
        try:
            await self._call(watch.prefix, lambda: self._setUp(watch))
        finally:
            watch.settingUp = False

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
        report every key they cover as changed, and every key reported and
        not read from the database since; then tell the L{backListeners}
        when the earliest outage not caught up with began.  One catch-up
        runs at a time.
        """
        if self._lostSince is None or lostSince < self._lostSince:
            self._lostSince = lostSince

        d = self._catchingUp.run(lambda: Deferred.fromCoroutine(self._catchUp()))
        return d.addErrback(
            lambda failure: self._log.failure("Catching up with the cluster", failure)
        )

    async def _catchUp(self) -> None:
        fresh = [w for w in self._watches if w.stop is None and not w.settingUp]
        for watch in fresh:
            try:
                await self._setUpOnce(watch)
                keys = await self.list(watch.prefix)
            except StorageUnavailable:
                return  # lost again: the next return tries again
            for key in keys:
                if not watch.stopped:
                    watch.callback(key)
        for key in sorted(self._unread):
            for watch in [w for w in self._watches if w not in fresh]:
                if watch.stop is not None and key.startswith(watch.prefix):
                    watch.callback(key)
        if self._lostSince is None:
            return
        lostSince, self._lostSince = self._lostSince, None
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


async def _awaited(start: Callable[[], Awaitable[T]]) -> T:
    return await start()


def _nodeOf(holder: str) -> str:
    """
    The node that holds a lease as C{holder}, or C{unknown} when it names
    none: the holder is not sealed, and is shown to people.
    """
    try:
        return parseNodeName(holderNode(holder))
    except ValueError:
        return "unknown"
