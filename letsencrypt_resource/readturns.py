"""
A bound on the reads of one turn of the reactor, for the FTPS service.

One pass of the reactor's poll handles every connection found ready.  With
200 FTPS sessions, a pass found dozens at once: TLS handshakes (full ones
on control connections, resumptions on data connections), command lines,
session ends, each 0.2 to 2 ms of the reactor thread's CPU, and held the
reactor 50 to 130 ms.  L{ReadTurns}, shared by the FTPS connections on
one reactor (not the listening ports: they accept every turn), lets at
most L{PER_TURN} reads go in one turn; a reader beyond stops reading
(its bytes wait in the kernel, none is lost) and reads again in a later
turn, first come first served, before any reader that came after it.
"""

from __future__ import annotations

import weakref
from collections import deque
from typing import Any, Protocol

#: Reads in one turn of the reactor at most.  A read costs the reactor
#: about a millisecond of CPU on average under the FTPS bench's load
#: (bench/RESULTS.md, issue 15 (e)), a TLS handshake up to two.
PER_TURN = 8


class TurnReader(Protocol):
    """
    What L{ReadTurns} holds back: a descriptor that stopped reading when
    refused, and reads again when told.
    """

    def readAgain(self) -> None:
        """
        Read again: the descriptor's next read is counted already.
        """


class ReadTurns:
    """
    Counts the reads of the current turn of a reactor, and lets the readers
    refused read again, L{PER_TURN} a turn, in the turns after.
    """

    def __init__(self, reactor: Any, perTurn: int = PER_TURN):
        """
        @param reactor: Its C{callLater(0, ...)} marks the end of a turn.
        @param perTurn: How many reads one turn may take.
        """
        self._reactor = reactor
        self._perTurn = perTurn
        self._count = 0
        self._waiting: deque[TurnReader] = deque()
        # Readers told to read again in this turn: their read is counted.
        self._told: set[TurnReader] = set()
        self._turnEnds: Any = None

    def mayRead(self, reader: TurnReader) -> bool:
        """
        Whether C{reader} may read in this turn.  When it may not, it must
        stop reading: its C{readAgain} is called in a later turn.
        """
        if reader in self._told:
            self._told.discard(reader)
            return True
        self._nextTurn()
        if self._count >= self._perTurn or self._waiting:
            self._waiting.append(reader)
            return False
        self._count += 1
        return True

    def _nextTurn(self) -> None:
        # A call cancelled (as trial does to the calls left at the end of
        # a test) would end no turn, and no reader would read again.
        if self._turnEnds is None or not self._turnEnds.active():
            self._turnEnds = self._reactor.callLater(0, self._turnEnded)

    def _turnEnded(self) -> None:
        """
        A new turn: the count starts again, and the readers that waited
        longest read again, as many as the turn allows.
        """
        self._turnEnds = None
        self._told.clear()
        self._count = 0
        try:
            while self._waiting and self._count < self._perTurn:
                reader = self._waiting.popleft()
                self._count += 1
                self._told.add(reader)
                reader.readAgain()
        finally:
            # A reader that failed to read again (the reactor logs why)
            # leaves the ones after it their turns.
            if self._count:
                self._nextTurn()


_ofReactor: weakref.WeakKeyDictionary[Any, ReadTurns] = weakref.WeakKeyDictionary()


def readTurnsOf(reactor: Any) -> ReadTurns:
    """
    The L{ReadTurns} every FTPS connection on C{reactor} shares.
    """
    shared = _ofReactor.get(reactor)
    if shared is None:
        shared = _ofReactor[reactor] = ReadTurns(reactor)
    return shared
