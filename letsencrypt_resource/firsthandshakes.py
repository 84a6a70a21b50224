"""
A bound on the TLS contexts built in one turn of the reactor.

A service's context is built at its first handshake after each new
certificate (L{letsencrypt_resource.tls.ReloadableServerTLS}): about 2 ms
of CPU, a provisional certificate's signature included (see
L{letsencrypt_resource.provisional.LazyProvisional}).  Right after a cold
start, a burst of first connections to thousands of services would build
thousands of contexts in one turn, and hold the reactor for seconds.
L{FirstHandshakes}, shared by every service on one reactor, lets at most
L{PER_TURN} be built in a turn; the connections beyond wait, unread,
until a later turn builds theirs.
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

#: Contexts built in one turn of the reactor at most: about 16 ms of CPU.
PER_TURN = 8


class FirstHandshakes:
    """
    Counts the contexts built in the current turn of a reactor, and runs
    the builds that had to wait, L{PER_TURN} a turn, in the turns after.
    """

    _log = Logger()

    def __init__(self, reactor: Any, perTurn: int = PER_TURN):
        """
        @param reactor: Its C{callLater(0, ...)} marks the end of a turn.
        @param perTurn: How many contexts one turn may build.
        """
        self._reactor = reactor
        self._perTurn = perTurn
        self._built = 0
        self._waiting: deque[Callable[[], object]] = deque()
        self._pauses: list[Callable[[], object]] = []
        self._turnEnds: Any = None

    def mayBuild(self) -> bool:
        """
        Whether one more context may be built in this turn: when it may,
        it counts.
        """
        if self._built >= self._perTurn or self._waiting:
            return False
        self._built += 1
        self._nextTurn()
        return True

    def later(self, build: Callable[[], object], pause: Callable[[], object] | None = None) -> None:
        """
        Call C{build} in a later turn, after the builds waiting before it;
        it must ask L{mayBuild} again (and call L{later} again when it may
        not).

        @param pause: Called at the start of the next turn, before any
            byte is read: a connection accepted in this turn is paused
            there, as its transport is not yet there to pause when its
            TLS connection is made.
        """
        self._waiting.append(build)
        if pause is not None:
            self._pauses.append(pause)
        self._nextTurn()

    def _guarded(self, call: Callable[[], object]) -> None:
        """
        Run a pause or a build that waited; one that fails is logged, and
        the others run: an error raised out of the turn would drop every
        connection still waiting, paused for good.
        """
        try:
            call()
        except Exception:
            self._log.failure("A TLS connection waiting for its context failed")

    def _nextTurn(self) -> None:
        if self._turnEnds is None:
            self._turnEnds = self._reactor.callLater(0, self._turnEnded)

    def _turnEnded(self) -> None:
        """
        A new turn: the connections that came in the last one are paused,
        the count starts again, and the builds that waited go first, as
        many as the turn allows (each counts itself).
        """
        self._turnEnds = None
        self._built = 0
        pauses, self._pauses = self._pauses, []
        for pause in pauses:
            self._guarded(pause)
        waiting, self._waiting = self._waiting, deque()
        while waiting and self._built < self._perTurn:
            self._guarded(waiting.popleft())
        # Those left wait ahead of any that came meanwhile.
        waiting.extend(self._waiting)
        self._waiting = waiting
        if waiting:
            self._nextTurn()


_ofReactor: weakref.WeakKeyDictionary[Any, FirstHandshakes] = weakref.WeakKeyDictionary()


def firstHandshakesOf(reactor: Any) -> FirstHandshakes:
    """
    The L{FirstHandshakes} every service on C{reactor} shares.
    """
    shared = _ofReactor.get(reactor)
    if shared is None:
        shared = _ofReactor[reactor] = FirstHandshakes(reactor)
    return shared
