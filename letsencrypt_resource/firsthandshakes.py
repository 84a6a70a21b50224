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

from collections.abc import Callable
from typing import Any

from .turnbudget import TurnBudget, sharedOf

#: Contexts built in one turn of the reactor at most: about 16 ms of CPU.
PER_TURN = 8


class FirstHandshakes(TurnBudget):
    """
    A L{TurnBudget} of the contexts built in a turn, that pauses the
    connections waiting for theirs as the next turn begins.
    """

    def __init__(self, reactor: Any, perTurn: int = PER_TURN):
        super().__init__(reactor, perTurn)
        self._pauses: list[Callable[[], object]] = []

    def later(self, go: Callable[[], object], pause: Callable[[], object] | None = None) -> None:
        """
        Build a context in a later turn (see L{TurnBudget.later}).

        @param pause: Called at the start of the next turn, before any
            byte is read: a connection accepted in this turn is paused
            there, as its transport is not yet there to pause when its
            TLS connection is made.
        """
        if pause is not None:
            self.pauseNextTurn(pause)
        super().later(go)

    def pauseNextTurn(self, pause: Callable[[], object]) -> None:
        """
        Call C{pause} at the start of the next turn, before any byte is
        read: a connection that joins a build already waiting.
        """
        self._pauses.append(pause)

    def turnBegins(self) -> None:
        """
        Pause the connections that came in the last turn.
        """
        pauses, self._pauses = self._pauses, []
        for pause in pauses:
            self._guarded(pause)


def firstHandshakesOf(reactor: Any) -> FirstHandshakes:
    """
    The L{FirstHandshakes} every service on C{reactor} shares.
    """
    return sharedOf(FirstHandshakes, reactor)
