"""
The removal of challenge tokens left in the storage: an order withdraws
its tokens once their validations have ended, but a process killed in the
middle leaves them behind, answered by every node and never removed.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from . import events
from .acmeerrors import ORDER_TIMEOUT
from .coroutines import deferred
from .reporting import unexpected
from .storage.interface import StorageError
from .storage.records import Records

#: How long a token must have been seen in the storage to be removed: no
#: order runs that long (its lease is taken for twice the order's time-out),
#: so no validation can still need it.
STALE_AFTER = 2 * ORDER_TIMEOUT


class ChallengeSweeper(Service):
    """
    Looks at the challenge tokens in the storage at start and at every
    regular check, and removes those seen at an earlier look at least
    L{STALE_AFTER} before.  The storage keeps no time with a token: its
    age is the time since this process first saw it, which is never more
    than its real age, so no token of an order still running is removed.
    """

    def __init__(self, records: Records, reactor: Any, interval: float, log: Logger):
        """
        @param interval: Seconds between two looks.
        @param log: Where events go.
        """
        self._records = records
        self._reactor = reactor
        self._interval = interval
        self._log = log
        self._seen: dict[str, float] = {}
        self._loop: LoopingCall | None = None
        self._sweeping: Deferred[None] | None = None

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self._sweepOnce)
        self._loop.clock = self._reactor
        self._loop.start(self._interval, now=True)

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._sweeping is not None:
            self._sweeping.cancel()

    def _sweepOnce(self) -> None:
        """
        Start a look, unless one is under way; it never fails.
        """
        if self._sweeping is None:
            self._sweeping = self.sweep()
            self._sweeping.addErrback(self._failed).addBoth(self._ended)

    def _failed(self, failure: Any) -> None:
        if failure.check(CancelledError):
            return
        if failure.check(StorageError):
            error = failure.value
            events.STORE_FAILED.emit(
                self._log, domains="the challenges", path=error.key, details=error.message
            )
            return
        unexpected(self._log, failure)

    def _ended(self, result: object) -> None:
        self._sweeping = None

    @deferred
    async def sweep(self) -> None:
        """
        List the tokens in the storage, note when each was first seen, and
        remove those first seen at least L{STALE_AFTER} ago (event 20204).
        """
        tokens = await self._records.pendingChallenges()
        now = self._reactor.seconds()
        self._seen = {token: self._seen.get(token, now) for token in tokens}
        stale = [token for token, seen in self._seen.items() if now - seen >= STALE_AFTER]
        if not stale:
            return
        for token in stale:
            await self._records.deleteChallenge(token)
            del self._seen[token]
        events.STALE_CHALLENGES_REMOVED.emit(self._log, count=len(stale))
