"""
A node's one LISTEN connection to PostgreSQL, read by the reactor.

Once connected (in a worker thread), the connection's socket is given to
the reactor with C{addReader}: when it is readable, the reactor thread
reads the notifications with C{consume_input}, which never blocks.  Each
change is numbered (see L{pgsql.write}) and its number notified at commit.
A notification is only a hint, since any role that can connect may notify:
a number after the last read, and every reconnection, make the listener
read the changes after the last from C{letsencrypt_changes} (in a worker
thread, the reactor no longer reading the connection meanwhile; the
notifications that arrive during the query are coalesced into it).
A lost connection is opened again after L{RETRY} seconds, doubling up to
L{MAX_RETRY}, until the listener is stopped.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import (
    IDelayedCall,
    IReactorFDSet,
    IReactorTime,
    IReadDescriptor,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from ..coroutines import deferred
from . import pgsql

T = TypeVar("T")

#: Seconds before the first attempt to reconnect; doubled each failure.
RETRY = 0.1
#: The longest wait between two attempts.
MAX_RETRY = 30.0


@implementer(IReadDescriptor)
class ChangeListener:
    """
    Hears the changes that every node makes, and tells C{deliver} of those
    from another origin.

    @ivar last: The number of the last change heard (C{None} before the
        first connection).
    """

    def __init__(
        self,
        reactor: Any,
        connect: Callable[[], psycopg.Connection[Any]],
        run: Callable[..., Deferred[Any]],
        origin: str,
        deliver: Callable[[str], None],
    ):
        """
        @param reactor: An C{IReactorFDSet} and C{IReactorTime}.
        @param connect: Opens a connection (blocking: called in a thread).
        @param run: Calls a function in a worker thread, giving a Deferred.
        @param origin: This node's origin: its own changes are not
            delivered (its process tells its watches itself).
        @param deliver: Called in the reactor thread with each changed key.
        """
        self._reactor: IReactorFDSet = reactor
        self._time: IReactorTime = reactor
        self._connect = connect
        self._run = run
        self._origin = origin
        self._deliver = deliver
        self._connection: psycopg.Connection[Any] | None = None
        self._fd = -1
        self._reading = False
        self._stopped = False
        self._retry = RETRY
        self._retryCall: IDelayedCall | None = None
        self._busy: Deferred[None] | None = None
        self._inSession = False
        self._wanted = 0
        self.last: int | None = None

    # IReadDescriptor
    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return "postgres-listener"

    def doRead(self) -> Failure | None:
        assert self._connection is not None
        pgconn = self._connection.pgconn
        try:
            pgconn.consume_input()
        except psycopg.Error as error:
            return Failure(ConnectionLost(str(error)))
        if pgconn.status != psycopg.pq.ConnStatus.OK:
            return Failure(ConnectionLost("the connection is broken"))
        heard = []
        while (notify := pgconn.notifies()) is not None:
            heard.append(notify.extra.decode("utf-8", "replace"))
        # Read them all first: the first may start a session that uses the
        # connection in a thread.
        for text in heard:
            self._heard(text)
        return None

    def connectionLost(self, reason: Failure) -> None:
        # The reactor has removed the listener already.
        self._reading = False
        os.close(self._fd)
        self._fd = -1
        self._lost()

    # The rest
    def start(self) -> Deferred[None]:
        """
        Connect and listen; fires once notifications are heard, failing
        (the listener then stopped) when the first connection cannot be
        made.
        """
        return self._begin(connect=True)

    def _begin(self, connect: bool) -> Deferred[None]:
        self._busy = Deferred.fromCoroutine(self._session(connect))
        return self._busy

    def _read(self) -> None:
        # The reactor watches a duplicate of the socket: libpq closes its
        # own when the connection breaks, before the reactor lets go.
        if not self._reading and not self._stopped and self._connection is not None:
            self._fd = os.dup(self._connection.pgconn.socket)
            self._reading = True
            self._reactor.addReader(self)
            if self.doRead() is not None:
                self._lost()

    def _unread(self) -> None:
        if self._reading:
            self._reading = False
            self._reactor.removeReader(self)
            os.close(self._fd)
            self._fd = -1

    def _heard(self, text: str) -> None:
        """
        A notification: the number of a change, a hint only (any role that
        can connect can notify), that makes the listener read the changes
        after the last it read.
        """
        try:
            number = int(text)
        except ValueError:
            return
        assert self.last is not None
        if number <= self.last:
            return
        self._wanted = max(self._wanted, number)
        if not self._inSession:
            self._begin(connect=False)

    def _listen(self) -> psycopg.Connection[Any]:
        connection = self._connect()
        try:
            connection.execute(f"LISTEN {pgsql.CHANNEL}")
        except BaseException:
            connection.close()
            raise
        return connection

    def _catchUp(
        self, connection: psycopg.Connection[Any], last: int | None
    ) -> tuple[list[tuple[int, str, str]], int | None, list[str]]:
        heard: list[str] = []

        def handler(notify: psycopg.Notify) -> None:
            heard.append(notify.payload)

        connection.add_notify_handler(handler)
        try:
            if last is None:
                return [], pgsql.newestChange(connection), heard
            return pgsql.changesSince(connection, last), None, heard
        finally:
            connection.remove_notify_handler(handler)

    async def _session(self, connect: bool) -> None:
        """
        (Re)connect when C{connect}, then read the changes missed, while
        the reactor does not read the connection; then give it back to the
        reactor.  A failure drops the connection and tries again later,
        except for the first connection's, which is raised.
        """
        first = self.last is None
        self._inSession = True
        self._unread()
        try:
            while not self._stopped:
                if connect:
                    self._connection = await self._run(self._listen)
                    connect = False
                self._wanted = 0
                rows, newest, heard = await self._run(self._catchUp, self._connection, self.last)
                for number, origin, key in rows:
                    self.last = number
                    if origin != self._origin:
                        self._deliver(key)
                if newest is not None:
                    self.last = newest
                assert self.last is not None
                for text in heard:
                    self._heard(text)
                if self._wanted <= self.last:
                    break
        except Exception:
            self._inSession = False
            if first:
                self._stopped = True
                await self._close()
                raise
            self._lost()
            return
        self._inSession = False
        self._retry = RETRY
        self._read()

    def _lost(self) -> None:
        """
        Drop the connection and try again later.
        """
        self._unread()
        if self._stopped or self._retryCall is not None:
            return
        delay, self._retry = self._retry, min(self._retry * 2, MAX_RETRY)

        def again() -> None:
            self._retryCall = None
            if not self._stopped and not self._inSession:
                self._begin(connect=True)

        def later(_: object) -> None:
            if not self._stopped:
                self._retryCall = self._time.callLater(delay, again)

        self._close().addBoth(later)

    def _close(self) -> Deferred[None]:
        connection, self._connection = self._connection, None
        if connection is None:
            return succeed(None)
        return self._run(connection.close)

    @deferred
    async def stop(self) -> None:
        """
        Stop listening and close the connection, once the work under way
        is over.
        """
        self._stopped = True
        self._unread()
        if self._retryCall is not None:
            self._retryCall.cancel()
            self._retryCall = None
        if self._inSession and self._busy is not None:
            try:
                await self._busy
            except Exception:
                pass
        await self._close()
