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

from functools import partial
from typing import Any, Protocol

from .turnbudget import TurnBudget, sharedOf

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


class ReadTurns(TurnBudget):
    """
    A L{TurnBudget} of the reads in a turn: a reader refused is told to
    read again in a later turn, its read counted there.
    """

    def __init__(self, reactor: Any, perTurn: int = PER_TURN):
        super().__init__(reactor, perTurn)
        # Readers told to read again in this turn: their read is counted.
        self._told: set[TurnReader] = set()

    def mayRead(self, reader: TurnReader) -> bool:
        """
        Whether C{reader} may read in this turn.  When it may not, it must
        stop reading: its C{readAgain} is called in a later turn.
        """
        if reader in self._told:
            self._told.discard(reader)
            return True
        if self.mayGo():
            return True
        self.later(partial(self._tell, reader))
        return False

    def _tell(self, reader: TurnReader) -> None:
        """
        Let C{reader}, counted in this turn, read again.
        """
        self._told.add(reader)
        reader.readAgain()

    def turnBegins(self) -> None:
        """
        A reader told in the last turn that did not read has no read left.
        """
        self._told.clear()


def readTurnsOf(reactor: Any) -> ReadTurns:
    """
    The L{ReadTurns} every FTPS connection on C{reactor} shares.
    """
    return sharedOf(ReadTurns, reactor)
