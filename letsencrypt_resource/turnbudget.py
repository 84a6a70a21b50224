"""
A bound on what is done in one turn of the reactor.

One turn of the reactor runs whatever is ready; when a burst of work comes
at once, the turn holds the reactor until all of it is done.  A
L{TurnBudget} lets at most C{perTurn} pieces of work go in one turn: the
ones beyond wait, first come first served, and go in the turns after, as
many a turn as the budget allows, before any that came after them.  Two
budgets use it: L{FirstHandshakes
<letsencrypt_resource.firsthandshakes.FirstHandshakes>} (the TLS contexts
built in a turn) and L{ReadTurns
<letsencrypt_resource.readturns.ReadTurns>} (the reads of the FTPS
connections in a turn), each shared by everything on one reactor
(L{sharedOf}).
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.logger import Logger


class TurnBudget:
    """
    Counts the pieces of work of the current turn of a reactor, and runs
    those that had to wait, C{perTurn} a turn, in the turns after.
    """

    _log = Logger()

    def __init__(self, reactor: Any, perTurn: int):
        """
        @param reactor: Its C{callLater(0, ...)} marks the end of a turn.
        @param perTurn: How many pieces of work one turn may take.
        """
        self._reactor = reactor
        self._perTurn = perTurn
        self._count = 0
        self._waiting: deque[Callable[[], object]] = deque()
        self._turnEnds: Any = None

    def mayGo(self) -> bool:
        """
        Whether one more piece of work may go in this turn: none waits,
        and the turn has room.  When it may, it counts.
        """
        if self._count >= self._perTurn or self._waiting:
            return False
        self._count += 1
        self._nextTurn()
        return True

    def later(self, go: Callable[[], object]) -> None:
        """
        Call C{go} in a later turn, after the work waiting before it: it is
        counted in that turn before it is called, and need not ask
        L{mayGo}.
        """
        self._waiting.append(go)
        self._nextTurn()

    def turnBegins(self) -> None:
        """
        Called as a turn begins, before the work that waited goes: nothing
        here.
        """

    def _guarded(self, call: Callable[[], object]) -> None:
        """
        Run a call that waited; one that fails is logged, and the others
        run: an error raised out of the turn would leave the work still
        waiting for good.
        """
        try:
            call()
        except Exception:
            self._log.failure("Work waiting for its turn of the reactor failed")

    def _nextTurn(self) -> None:
        # A call cancelled (as trial does to the calls left at the end of
        # a test) would end no turn, and nothing waiting would go.
        if self._turnEnds is None or not self._turnEnds.active():
            self._turnEnds = self._reactor.callLater(0, self._turnEnded)

    def _turnEnded(self) -> None:
        """
        A new turn: the count starts again, and the work that waited goes
        first, as much as the turn allows.
        """
        self._turnEnds = None
        self._count = 0
        self.turnBegins()
        waiting, self._waiting = self._waiting, deque()
        while waiting and self._count < self._perTurn:
            self._count += 1
            self._guarded(waiting.popleft())
        # Those left wait ahead of any that came meanwhile.
        waiting.extend(self._waiting)
        self._waiting = waiting
        if self._count or waiting:
            self._nextTurn()


Budget = TypeVar("Budget", bound=TurnBudget)

_shared: dict[Callable[[Any], TurnBudget], weakref.WeakKeyDictionary[Any, TurnBudget]] = {}


def sharedOf(kind: Callable[[Any], Budget], reactor: Any) -> Budget:
    """
    The budget of C{kind} that everything on C{reactor} shares, made at
    the first call.
    """
    ofReactor = _shared.get(kind)
    if ofReactor is None:
        # Not setdefault: it would make a dictionary at every call, 10,000
        # at a start of as many services.
        ofReactor = _shared[kind] = weakref.WeakKeyDictionary()
    shared = ofReactor.get(reactor)
    if shared is None:
        shared = ofReactor[reactor] = kind(reactor)
    return shared  # type: ignore[return-value]
