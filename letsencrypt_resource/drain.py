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

The listeners that begin to wait within L{JOIN} seconds of each other (all
those of a server that stops) share one timer, and those still open when
it fires are told in one event 20227, not one per listener.
"""

from __future__ import annotations

from typing import Any
from weakref import WeakKeyDictionary

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IProtocolFactory, IReactorTime
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

from . import events
from .handshakes import HandshakeForwarding

#: Seconds the connections open when a listener stops are waited for.
GRACE = 5.0
#: Seconds after the first listener of a stop began to wait within which
#: others share its timer (which then fires L{GRACE} seconds after the
#: last of them began).
JOIN = 1.0


class Draining(WrappingFactory[HandshakeForwarding]):
    """
    Wraps a listener's factory, counting the connections open through it.
    """

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
        Wait until no connection is open, for at most C{grace} seconds
        (on the timer of the listeners that began to wait with it, see
        L{JOIN}); event 20227 when some are still open then, and they are
        cut.

        @param label: What listens, for the event.
        @return: A Deferred that fires with C{None}: at once when nothing
            is open.
        """
        if not self.protocols:
            return succeed(None)
        current = _rounds.get(clock)
        if current is None or not current.joinable():
            current = _rounds[clock] = _Round(clock)
        waiter: Deferred[None] = Deferred()
        self._waiting.append(waiter)
        current.join(self, label, waiter, grace)
        return waiter

    def giveUp(self, waiter: Deferred[None]) -> int:
        """
        Stop waiting with C{waiter}, and cut the connections still open:
        after a reload nothing else would (a client that stops reading a
        download would go on receiving a removed service's files).

        @return: How many connections were still open.
        """
        if waiter in self._waiting:
            self._waiting.remove(waiter)
        left = list(self.protocols)
        for protocol in left:
            if protocol.transport is not None:
                protocol.transport.abortConnection()
        return len(left)


class _Round:
    """
    The listeners that began to wait within L{JOIN} seconds of the first:
    one timer, and one event for those still open when it fires.
    """

    _log = Logger()

    def __init__(self, clock: IReactorTime):
        self._clock = clock
        self._started = clock.seconds()
        self._call: IDelayedCall | None = None
        self._entries: list[tuple[Draining, str, Deferred[None]]] = []

    def joinable(self) -> bool:
        """
        Whether a listener that begins to wait now shares this timer.
        """
        return (
            self._call is not None
            and self._call.active()
            and self._clock.seconds() - self._started <= JOIN
        )

    def join(self, factory: Draining, label: str, waiter: Deferred[None], grace: float) -> None:
        """
        Wait for C{factory}'s connections with C{waiter}, and move the
        timer to C{grace} seconds from now.
        """
        self._entries.append((factory, label, waiter))
        if self._call is None:
            self._call = self._clock.callLater(grace, self._late, grace)
        else:
            self._call.reset(grace)
        waiter.addCallback(self._ended)

    def _ended(self, result: None) -> None:
        """
        A listener's connections all ended: with every one over, no timer.
        """
        if self._call is not None and self._call.active():
            if all(waiter.called for _, _, waiter in self._entries):
                self._call.cancel()
                self._close()
        return result

    def _late(self, grace: float) -> None:
        """
        The grace is over: tell what is still open, in one event, and end
        every wait.
        """
        self._close()
        late = [(f, label, w) for f, label, w in self._entries if not w.called]
        connections = sum(factory.giveUp(waiter) for factory, _, waiter in late)
        if late:
            events.CONNECTIONS_LEFT_OPEN.emit(
                self._log,
                listener=late[0][1],
                listeners=len(late),
                connections=connections,
                seconds=grace,
            )
        for _, _, waiter in late:
            waiter.callback(None)

    def _close(self) -> None:
        if _rounds.get(self._clock) is self:
            del _rounds[self._clock]


#: The round each clock (each reactor) is in, if any.
_rounds: WeakKeyDictionary[IReactorTime, _Round] = WeakKeyDictionary()
