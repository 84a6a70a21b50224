"""
Hold the reactor's shutdown until a command has cleaned up after itself.

A signal (C{SIGINT}, C{SIGTERM}) makes the reactor stop: it runs its
C{"before", "shutdown"} triggers, waits for the Deferreds they return, then
exits.  Work left to run after that point is never run, and child
processes (the test CA) are left behind.  L{holdingShutdown} makes the
shutdown wait for the end of a block instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorCore


@asynccontextmanager
async def holdingShutdown(reactor: IReactorCore) -> AsyncIterator[Deferred[None]]:
    """
    Hold the reactor's shutdown, from whatever cause, until the block ends.

    The block gets a Deferred that fires when the shutdown begins; it
    awaits it when it has nothing else to do, cleans up and ends, and only
    then does the shutdown go on.  A shutdown that begins while the block
    is still starting waits just the same.

    @return: an async context manager giving the Deferred.
    """
    begun: Deferred[None] = Deferred()
    released: Deferred[None] = Deferred()

    def hold() -> Deferred[None]:
        begun.callback(None)
        return released

    trigger = reactor.addSystemEventTrigger("before", "shutdown", hold)
    try:
        yield begun
    finally:
        if begun.called:
            released.callback(None)
        else:
            reactor.removeSystemEventTrigger(trigger)
