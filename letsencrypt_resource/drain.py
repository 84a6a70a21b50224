"""
A graceful stop for listeners: the connections open when a listener stops
accepting are given a bounded grace to finish before the stop goes on.

Behind a load balancer, a node stopped for a rolling restart closes its
listening sockets first: the balancer's next connection attempts are
refused, and it tries another node.  The connections already accepted
(a TLS handshake under way, a download) would be cut when the reactor
stops; L{Draining} counts them, and L{Draining.drained} lets the stop wait
until they end, for at most L{GRACE} seconds.  With nothing open, the stop
does not wait at all.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IProtocolFactory, IReactorTime
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

from . import events
from .handshakes import HandshakeForwarding

#: Seconds the connections open when a listener stops are waited for.
GRACE = 5.0


class Draining(WrappingFactory[HandshakeForwarding]):
    """
    Wraps a listener's factory, counting the connections open through it.
    """

    _log = Logger()
    #: Its wrapper tells the protocol of a TLS handshake started later on
    #: the connection (explicit FTPS's AUTH TLS).
    protocol = HandshakeForwarding
    #: No "Starting factory" and "Stopping factory" lines: with thousands
    #: of services they were a large part of the log.
    noisy = False

    def __init__(self, wrappedFactory: IProtocolFactory):
        super().__init__(wrappedFactory)
        self._waiting: list[Deferred[None]] = []

    # IProtocolFactory lets a factory refuse a connection with None, which
    # WrappingFactory's annotation leaves out.
    def buildProtocol(self, addr: Any) -> ProtocolWrapper | None:  # type: ignore[override]
        """
        Wrap the protocol of the wrapped factory; none when it refuses the
        connection.
        """
        wrapped = self.wrappedFactory.buildProtocol(addr)
        return None if wrapped is None else self.protocol(self, wrapped)

    def unregisterProtocol(self, p: ProtocolWrapper) -> None:
        """
        A connection ended: when it was the last one, wake the waiters.
        """
        super().unregisterProtocol(p)
        if not self.protocols:
            waiting, self._waiting = self._waiting, []
            for waiter in waiting:
                if not waiter.called:
                    waiter.callback(None)

    def drained(self, clock: IReactorTime, label: str, grace: float = GRACE) -> Deferred[None]:
        """
        Wait until no connection is open, for at most C{grace} seconds;
        event 20227 when some are still open then (they are left to the
        reactor's shutdown, which closes them).

        @param label: What listens, for the event.
        @return: A Deferred that fires with C{None}: at once when nothing
            is open.
        """
        if not self.protocols:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._waiting.append(waiter)

        def late(result: object, timeout: float) -> None:
            if waiter in self._waiting:
                self._waiting.remove(waiter)
            events.CONNECTIONS_LEFT_OPEN.emit(
                self._log, listener=label, count=len(self.protocols), seconds=timeout
            )

        waiter.addTimeout(grace, clock, onTimeoutCancel=late)
        return waiter
