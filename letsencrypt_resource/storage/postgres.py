"""
The L{IStorage} of a cluster: a PostgreSQL database (13 or later) shared
by every node, through psycopg 3.

Every query runs in a thread of the storage's own (two at most), on a
connection of its own pool (C{psycopg_pool.ConnectionPool}): the reactor
thread never waits for the database.  psycopg's asynchronous API needs an
asyncio loop, which the product's reactors are not; threads also keep the
queries plain and their transactions short.  The schema is created and
migrated at the first query (L{pgschema}); the queries are in L{pgsql}.

Change notification: every write numbers its change and notifies it at
commit (see L{pgsql.write}).  The storage objects of one process on one
connection string share a place: they tell each other of their writes at
once, as the other stores do, and one L{ChangeListener} (a single LISTEN
connection, read by the reactor) tells their watches of the other
processes' writes, catching up on what it missed after a reconnection.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable, Collection
from typing import Any, TypeVar

import attrs
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool, PoolTimeout
from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure
from zope.interface import implementer

from ..coroutines import deferred
from ..workers import BackgroundWorkers
from . import pgsql
from .interface import (
    ILease,
    IStorage,
    LeaseLost,
    StorageError,
    StorageUnavailable,
    checkKey,
    checkPrefix,
    checkValue,
)
from .leases import Lease, reportStale
from .notify import ChangeFeed
from .pglisten import ChangeListener
from .pgschema import migrate
from .poollog import bridge

T = TypeVar("T")

#: Connections per storage object, and the threads that use them.
CONNECTIONS = 2
#: The C{application_name} of the listening connections.
LISTENER_NAME = "letsencrypt-listener"
#: Seconds a query waits for a connection before it fails.
CONNECT_TIMEOUT = 10.0
#: Seconds the pool tries to open a connection, backing off between
#: attempts, before it gives up and leaves the next query to try at once:
#: its default, 5 minutes, let the back-off grow to 32 s and more during a
#: database outage, so that a node found the database back up to that long
#: after it returned.
RECONNECT_TIMEOUT = 5.0


#: Seconds a statement may run, and may wait for a lock, before the server
#: cancels it (set on each connection of the pool): a query behind a lock
#: held by another session, or stuck, fails as L{StorageUnavailable}
#: instead of holding a worker thread.
STATEMENT_TIMEOUT = 15.0
LOCK_TIMEOUT = 5.0
#: Seconds a session may sit inside a transaction without sending the next
#: statement before the server ends it, its locks released: a node paused
#: in the middle of a transaction (C{SIGSTOP}, a frozen virtual machine)
#: would otherwise hold the rows it locked, a lease's included, and every
#: other node's writes to them would fail at L{LOCK_TIMEOUT}, for as long
#: as the pause lasts.  Shorter than L{LOCK_TIMEOUT}, so that those writes
#: wait and succeed; the product's transactions send their statements back
#: to back.
IDLE_IN_TRANSACTION_TIMEOUT = 3.0

#: What a connection string gets unless it says otherwise: a bounded wait
#: to connect, a bound on data sent and not acknowledged
#: (C{tcp_user_timeout}, in milliseconds: a peer cut off while a query is
#: under way), and TCP keepalives, without which a peer that vanished (a
#: partition, a dead host) is never noticed by an idle connection, such as
#: the listening one.
CONNECTION_DEFAULTS = {
    "connect_timeout": "10",
    "tcp_user_timeout": "30000",
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
}


def withDefaults(conninfo: str) -> str:
    """
    C{conninfo} with the L{CONNECTION_DEFAULTS} it does not set.

    @raise StorageError: when it is not a valid connection string.
    """
    try:
        given = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        # libpq's reason quotes the string, which may hold a password.
        raise StorageError("conninfo", "is not a valid connection string") from None
    missing = {k: v for k, v in CONNECTION_DEFAULTS.items() if k not in given}
    return make_conninfo(conninfo, **missing)


def limitTime(connection: psycopg.Connection[Any]) -> None:
    """
    Set the L{STATEMENT_TIMEOUT}, L{LOCK_TIMEOUT} and
    L{IDLE_IN_TRANSACTION_TIMEOUT} of a new pool connection, for its
    session.
    """
    connection.execute(
        "SELECT set_config('statement_timeout', %s, false), set_config('lock_timeout', %s, false),"
        " set_config('idle_in_transaction_session_timeout', %s, false)",
        (
            f"{STATEMENT_TIMEOUT * 1000:.0f}",
            f"{LOCK_TIMEOUT * 1000:.0f}",
            f"{IDLE_IN_TRANSACTION_TIMEOUT * 1000:.0f}",
        ),
    )
    connection.commit()


@attrs.define(eq=False)
class _Place:
    """
    What the storage objects of this process on one connection string
    share: their origin, their watches, the listener.
    """

    conninfo: str
    origin: str = attrs.field(factory=lambda: secrets.token_hex(8))
    feed: ChangeFeed = attrs.field(factory=ChangeFeed)
    users: int = 0
    waiters: list[Deferred[None]] | None = None
    listener: ChangeListener | None = None
    workers: BackgroundWorkers | None = None


_places: dict[str, _Place] = {}


def _listen(place: _Place, reactor: Any) -> Deferred[None]:
    """
    Start the place's listener, unless it is started: fires once it is.
    """
    if place.listener is not None and place.waiters is None:
        return succeed(None)
    waiter: Deferred[None] = Deferred()
    if place.waiters is not None:
        place.waiters.append(waiter)
        return waiter
    place.waiters = [waiter]
    place.workers = BackgroundWorkers(reactor, "letsencrypt-postgres-listen", maxThreads=1)
    place.listener = ChangeListener(
        reactor,
        lambda: psycopg.connect(place.conninfo, autocommit=True, application_name=LISTENER_NAME),
        place.workers.run,
        place.origin,
        lambda key: place.feed.changed(None, key),
    )
    place.listener.start().addBoth(_started, place)
    return waiter


def _started(result: None | Failure, place: _Place) -> None:
    """
    Tell those waiting for C{place}'s listener that it started, or failed
    to (it is then dropped, and the next watch tries again).
    """
    waiters, place.waiters = place.waiters or [], None
    if isinstance(result, Failure) and place.workers is not None:
        place.listener = None
        place.workers.stop()
        place.workers = None
    for waiter in waiters:
        if isinstance(result, Failure):
            waiter.errback(result)
        else:
            waiter.callback(None)


@deferred
async def _leave(place: _Place) -> None:
    """
    One storage object less on C{place}: the last one stops the listener.
    """
    place.users -= 1
    if place.users:
        return
    if _places.get(place.conninfo) is place:
        del _places[place.conninfo]
    if place.listener is not None:
        await place.listener.stop()
    if place.workers is not None:
        await place.workers.stop()


def _holderName(node: str | None) -> str:
    return f"{node or socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


@implementer(IStorage)
class PostgresStorage:
    """
    An L{IStorage} on a PostgreSQL database: one node of the cluster.

    @ivar holder: How this object appears as the holder of its leases:
        node name (by default the host name), process id and a random
        part, joined by C{:}.
    """

    #: Every node of the cluster uses the database.
    exclusive = False

    def __init__(
        self,
        conninfo: str,
        reactor: Any,
        *,
        skew: Callable[[], float] | None = None,
        node: str | None = None,
    ):
        """
        @param conninfo: A libpq connection string or URI (see
            L{withDefaults}).
        @raise StorageError: when it is not one.
        @param reactor: The reactor (threads, time and file descriptors).
        @param skew: Seconds added to the database's clock when leases are
            timed: for tests only, to follow a fake clock.
        @param node: The node's name, in L{holder}.
        """
        self._reactor = reactor
        self._skew = skew or (lambda: 0.0)
        conninfo = withDefaults(conninfo)
        bridge(reactor.callFromThread)
        place = _places.get(conninfo)
        if place is None:
            place = _places[conninfo] = _Place(conninfo)
        place.users += 1
        self._place = place
        self._pool = ConnectionPool(
            conninfo,
            min_size=0,
            max_size=CONNECTIONS,
            open=False,
            timeout=CONNECT_TIMEOUT,
            reconnect_timeout=RECONNECT_TIMEOUT,
            check=ConnectionPool.check_connection,
            configure=limitTime,
            name="letsencrypt-postgres",
        )
        self._workers = BackgroundWorkers(reactor, "letsencrypt-postgres", CONNECTIONS)
        self._ready = False
        self._leased = False
        # The leases given and not yet let go, by name: their tokens.
        self._inUse: dict[str, int] = {}
        self._closed = False
        self.holder = _holderName(node)

    def _prepare(self) -> None:
        # In a worker thread; the pool's open() is idempotent.
        self._pool.open()
        if not self._ready:
            with self._pool.connection() as connection:
                migrate(connection)
            self._ready = True

    def _run(self, key: str, f: Callable[[psycopg.Connection[Any]], T]) -> Deferred[T]:
        """
        Call C{f(connection)} in a worker thread inside a transaction;
        a database error is a L{StorageError} about C{key}.
        """
        if self._closed:
            return fail(StorageError(key, "the storage is closed"))

        def job() -> T:
            try:
                self._prepare()
                with self._pool.connection() as connection:
                    with connection.transaction():
                        return f(connection)
            except (psycopg.OperationalError, PoolTimeout) as error:
                raise StorageUnavailable(key, f"the database failed: {error}") from None
            except psycopg.Error as error:
                raise StorageError(key, f"the database failed: {error}") from None

        return self._workers.run(job)

    def load(self, key: str) -> Deferred[bytes | None]:
        try:
            checkKey(key)
        except StorageError:
            return fail()
        return self._run(key, lambda c: pgsql.load(c, key))

    def loadMany(self, keys: Collection[str]) -> Deferred[dict[str, bytes | StorageError | None]]:
        keys = list(keys)
        try:
            for key in keys:
                checkKey(key)
        except StorageError:
            return fail()
        return self._run(", ".join(keys[:1]), lambda c: pgsql.loadMany(c, keys))

    def _change(self, key: str, value: bytes | None, fence: ILease | None) -> Deferred[None]:
        origin = self._place.origin

        def changed(_: int) -> None:
            self._place.feed.changed(self, key)

        d = self._run(key, lambda c: pgsql.write(c, key, value, fence, origin))
        return d.addCallback(changed).addErrback(reportStale)

    def store(self, key: str, value: bytes, fence: ILease | None = None) -> Deferred[None]:
        try:
            data = checkValue(checkKey(key), value)
        except StorageError:
            return fail()
        return self._change(key, data, fence)

    def delete(self, key: str, fence: ILease | None = None) -> Deferred[None]:
        try:
            checkKey(key)
        except StorageError:
            return fail()
        return self._change(key, None, fence)

    def list(self, prefix: str) -> Deferred[list[str]]:
        try:
            checkPrefix(prefix)
        except StorageError:
            return fail()
        return self._run(prefix, lambda c: pgsql.listKeys(c, prefix))

    def lease(self, name: str, seconds: float) -> Deferred[ILease | None]:
        try:
            checkKey(name)
        except StorageError:
            return fail()
        skew = self._skew()
        self._leased = True
        # A lease of this holder that it let go, or tried to (the database
        # was down), is taken back at once rather than waited for.
        reclaim = name not in self._inUse

        def made(token: int | None) -> ILease | None:
            if token is None:
                return None
            self._inUse[name] = token
            return Lease(name, token, seconds, self._renew, self._release)

        d = self._run(name, lambda c: pgsql.takeLease(c, name, seconds, self.holder, skew, reclaim))
        return d.addCallback(made)

    def leaseHolders(self, prefix: str) -> Deferred[dict[str, tuple[str, float]]]:
        """
        The leases held now whose names start with C{prefix}: for each, its
        L{holder} and when it expires, in seconds since the epoch by the
        database's clock.
        """
        skew = self._skew()
        return self._run(prefix, lambda c: pgsql.liveLeases(c, prefix, skew))

    def _renew(self, lease: Lease) -> Deferred[None]:
        if self._closed:
            return fail(LeaseLost(lease.name, "the storage is closed"))
        skew = self._skew()

        def renewed(kept: bool) -> None:
            if not kept:
                raise LeaseLost(lease.name, "is no longer held by this storage")

        d = self._run(
            lease.name, lambda c: pgsql.renewLease(c, lease.name, lease.token, lease.seconds, skew)
        )
        return d.addCallback(renewed)

    def _release(self, lease: Lease) -> Deferred[None]:
        if self._inUse.get(lease.name) == lease.token:
            del self._inUse[lease.name]
        if self._closed:
            return succeed(None)
        return self._run(lease.name, lambda c: pgsql.releaseLease(c, lease.name, lease.token))

    @deferred
    async def watch(self, prefix: str, callback: Callable[[str], object]) -> Callable[[], None]:
        checkPrefix(prefix)
        if self._closed:
            raise StorageError(prefix, "the storage is closed")
        await self._run(prefix, lambda c: None)  # the schema, for the listener
        try:
            await _listen(self._place, self._reactor)
        except (psycopg.OperationalError, PoolTimeout) as error:
            raise StorageUnavailable(prefix, f"the database failed: {error}") from None
        except psycopg.Error as error:
            raise StorageError(prefix, f"the database failed: {error}") from None
        if self._closed:
            raise StorageError(prefix, "the storage is closed")
        return self._place.feed.watch(self, prefix, callback)

    @deferred
    async def close(self) -> None:
        """
        Give up the leases, stop the watches (and the listener, when the
        storage is the last of its process on the database), then the
        pool and the storage's own threads, even when letting go failed.
        """
        if self._closed:
            return
        d: Deferred[None] = succeed(None)
        if self._leased:
            d = self._run("leases", lambda c: pgsql.releaseAll(c, self.holder))
        self._closed = True
        self._place.feed.forget(self)
        try:
            await d
        finally:
            try:
                await _leave(self._place)
            finally:
                await self._workers.run(self._pool.close)
                await self._workers.stop()
