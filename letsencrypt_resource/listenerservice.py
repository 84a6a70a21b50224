"""
A service that listens where its options say while it runs, and tells in
events that it listens or why it cannot: what the challenge site and the
metrics site share.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import listening
from .events import EventType
from .httplimits import LimitedSite
from .listening import Listener, ListenerOptions


class ListenerService(Service):
    """
    Listens on C{place} with the factory of L{factory}, from start to
    stop; nowhere when C{place} is C{None}.
    """

    def __init__(
        self,
        place: ListenerOptions | None,
        reactor: Any,
        log: Logger,
        listened: EventType,
        failed: EventType,
    ):
        """
        @param log: Where events go.
        @param listened: The event that it listens, with C{address} and
            C{port}.
        @param failed: The event that it cannot, with C{address}, C{port}
            and C{details}.
        """
        self._place = place
        self._reactor = reactor
        self._log = log
        self._listenedEvent = listened
        self._failedEvent = failed
        self._port: Listener | None = None
        self._site: LimitedSite | None = None

    def factory(self) -> LimitedSite:
        """
        The factory to listen with, made as the service starts.
        """
        raise NotImplementedError()

    def startService(self) -> None:
        super().startService()
        if self._place is None:
            return
        site = self._site = self.factory()
        self._port = Listener.on(self._reactor, self._place, site)
        self._port.start().addCallbacks(self._listened, self._failed)

    def _listened(self, port: IListeningPort) -> None:
        assert self._place is not None
        address, number = listening.listeningPlace(self._place, port)
        self._listenedEvent.emit(self._log, address=address, port=number)

    def _failed(self, failure: Failure) -> None:
        if failure.check(CancelledError) or self._place is None:
            return
        address, number = listening.place(self._place)
        self._failedEvent.emit(
            self._log, address=address, port=number, details=listening.failureDetails(failure)
        )

    def stopService(self) -> Deferred[None]:
        """
        Stop accepting at once, close the idle connections, and those with
        a request under way once it is answered; fire once they have ended
        (for at most the drain's grace).
        """
        super().stopService()
        port, self._port = self._port, None
        site, self._site = self._site, None
        if port is None:
            return succeed(None)
        drained = port.stopListening()
        if site is not None:
            site.closeIdle()
        return drained
