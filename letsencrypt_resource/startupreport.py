"""
Start-up told in one event instead of one per set and per service.

With thousands of services, the per-service events of a start (a stored
certificate loaded, a service on its certificate, a service listening)
were most of what twistd did to start: formatting and writing several
lines per service.  While a start-up is under way, these events are
counted instead, and logged (at debug level) only for a component with
C{debug = yes}; once it has ended, one event sums them up, and every
later one is logged as usual: a renewal still says which service uses
the new certificate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.logger import Logger, LogLevel

from . import events
from .events import EventType


def _debug(log: Logger, event: EventType, fields: dict[str, Any]) -> None:
    """
    Log C{event} with C{fields} at debug level.
    """
    log.emit(LogLevel.debug, event.logFormat, event_id=event.id, **fields)


class ResourceStartUp:
    """
    A resource's start-up, until every domain set it loaded at start is
    in service: events 20158, 20016 and 20153 counted, then event 20208.

    @ivar ended: Whether the start-up has ended: events are logged as
        usual.
    """

    def __init__(self, log: Logger, debug: bool, now: float):
        """
        @param debug: Whether the counted events are logged at debug level.
        @param now: When the start-up began, in seconds.
        """
        self._log = log
        self._debug = debug
        self._began = now
        self.ended = False
        #: Called once the start-up has ended, after event 20208.
        self.endListeners: list[Callable[[], object]] = []
        self._counts = {
            events.STORED_CERTIFICATE_LOADED.id: 0,
            events.CERTIFICATE_IN_USE.id: 0,
            events.PROVISIONAL_IN_USE.id: 0,
        }

    def tell(self, event: EventType, fields: Callable[[], dict[str, Any]]) -> None:
        """
        Log C{event}, one of the events the start-up counts, with the
        fields C{fields} makes: once the start-up has ended as usual;
        before, counted, and C{fields} called only to log it at debug
        level (made for every set of a start-up, they cost a tenth of
        its load).
        """
        if self.ended:
            event.emit(self._log, **fields())
            return
        self._counts[event.id] += 1
        if self._debug:
            _debug(self._log, event, fields())

    def end(self, now: float, waiting: int) -> None:
        """
        End the start-up at C{now}, with C{waiting} domain sets still
        without a certificate: event 20208, once; then its L{endListeners}
        are called.
        """
        if self.ended:
            return
        self.ended = True
        issued = self._counts[events.CERTIFICATE_IN_USE.id]
        provisional = self._counts[events.PROVISIONAL_IN_USE.id]
        events.STARTED_UP.emit(
            self._log,
            services=issued + provisional,
            seconds=round(now - self._began, 3),
            issued=issued,
            stored=self._counts[events.STORED_CERTIFICATE_LOADED.id],
            provisional=provisional,
            waiting=waiting,
        )
        for listener in list(self.endListeners):
            listener()


class ListeningStartUp:
    """
    A server's start-up, until each of the services it started with
    listens or cannot: their events 20156 counted, then event 20209; or
    until the resource's start-up ends (L{cut}), when some wait for a
    certificate still.  Events 20157 (a service cannot listen) are logged
    as usual.

    @ivar told: Whether event 20209 was logged: a service that listens
        later says so itself (event 20156).
    """

    def __init__(self, log: Logger, services: int, now: float):
        """
        @param services: How many services started.
        @param now: When they started, in seconds.
        """
        self._log = log
        self._began = now
        self._waiting = services
        self._listening = 0
        self._failed = 0
        self.told = False
        if not services:
            self._waiting = 1
            self._ended(now)

    def listened(self, debug: bool, now: float, **fields: Any) -> None:
        """
        A service listens, at C{now}: event 20156 with C{fields}, logged
        at debug level when C{debug}.
        """
        if debug:
            _debug(self._log, events.SERVICE_LISTENING, fields)
        self._listening += 1
        self._ended(now)

    def failed(self, now: float) -> None:
        """
        A service cannot listen, at C{now}.
        """
        self._failed += 1
        self._ended(now)

    def gone(self, now: float) -> None:
        """
        A service was removed, at C{now}, before it listened.
        """
        self._ended(now)

    def cut(self, now: float) -> None:
        """
        The resource's start-up ended at C{now} (event 20208): event 20209
        now, if it was not logged yet, with the services that wait for a
        certificate still; they say themselves when they listen.
        """
        if not self.told:
            self._tell(now)

    def _ended(self, now: float) -> None:
        self._waiting -= 1
        if self._waiting == 0 and not self.told:
            self._tell(now)

    def _tell(self, now: float) -> None:
        self.told = True
        events.SERVICES_LISTENING.emit(
            self._log,
            listening=self._listening,
            failed=self._failed,
            waiting=self._waiting,
            seconds=round(now - self._began, 3),
        )
