"""
The renewal attempts of the domain sets: each queued as one small object
until one of a few places is free, then run.

A check of every set queues thousands of attempts at once.  Each waiting
attempt is an L{Attempt} alone (no Deferred, no closure, no callback),
so that the garbage collector's full collections, which walk every object
alive, stay short while they wait; and a check waits for its attempts
with one L{AttemptQueue.whenEnded} rather than one Deferred per attempt.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import CancelledError, Deferred, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from .limiter import StartsInTurn

if TYPE_CHECKING:
    from .managed import ManagedCertificate


class Attempt:
    """
    One attempt of a domain set: queued, then running, then ended.

    @ivar certificate: The set.
    @ivar forced: Why it renews whether due or not, if it does.
    @ivar number: Its place among the attempts of its queue, from 0.
    @ivar started: Whether its job was started.
    @ivar running: The job's Deferred once it started, until it ended.
    @ivar ended: Whether it has ended (or was cancelled).
    """

    __slots__ = ("certificate", "forced", "number", "started", "running", "ended", "_waiting")

    def __init__(self, certificate: ManagedCertificate, forced: str | None, number: int):
        self.certificate = certificate
        self.forced = forced
        self.number = number
        self.started = False
        self.running: Deferred[None] | None = None
        self.ended = False
        self._waiting: list[Deferred[None]] | None = None

    def force(self, reason: str) -> bool:
        """
        Make this attempt, while it waits, renew whether due or not, for
        C{reason} (or the reason it was forced for already): a forced
        check of a set whose attempt is queued unforced is not lost.

        @return: Whether it will: not once its job started, which was told
            whether it is forced.
        """
        if self.started or self.ended:
            return False
        if self.forced is None:
            self.forced = reason
        return True

    def whenEnded(self) -> Deferred[None]:
        """
        A Deferred that fires with C{None} once this attempt has ended, in
        success, failure or cancellation; cancelling it leaves the attempt
        alone.
        """
        if self.ended:
            return succeed(None)
        waiting: Deferred[None] = Deferred()
        if self._waiting is None:
            self._waiting = []
        self._waiting.append(waiting)
        return waiting

    def end(self) -> None:
        """
        Note that this attempt has ended: its set has none under way, and
        whoever waits for it is told.
        """
        self.ended = True
        self.running = None
        if self.certificate.attempt is self:
            self.certificate.attempt = None
        waiting, self._waiting = self._waiting or [], None
        for each in waiting:
            if not each.called:
                each.callback(None)


class AttemptQueue(StartsInTurn):
    """
    Runs the attempts queued, at most C{limit} at once, in the order they
    came; jobs that end at once do not start the next ones recursively.
    """

    def __init__(
        self,
        job: Callable[[ManagedCertificate, str | None], Deferred[None]],
        limit: int,
        log: Logger,
    ):
        """
        @param job: Runs one attempt of a set; C{forced} is why it renews
            whether due or not, if it does.
        @param log: Where a job's unexpected failure goes.
        """
        self._job = job
        self._limit = limit
        self._log = log
        self._queued: deque[Attempt] = deque()
        self._running: list[Attempt] = []
        self._added = 0
        # Each: the number of attempts added when it was asked for, and
        # the Deferred that fires once all of those have ended.
        self._barriers: deque[tuple[int, Deferred[None]]] = deque()

    def add(self, certificate: ManagedCertificate, forced: str | None) -> Attempt:
        """
        Queue an attempt for C{certificate}, kept in its C{attempt} until it
        ends.
        """
        attempt = Attempt(certificate, forced, self._added)
        self._added += 1
        certificate.attempt = attempt
        self._queued.append(attempt)
        self._start()
        return attempt

    def whenEnded(self) -> Deferred[None]:
        """
        A Deferred that fires once every attempt queued so far has ended
        (not those queued later); it never fails.
        """
        barrier: Deferred[None] = Deferred()
        self._barriers.append((self._added, barrier))
        self._release()
        return barrier

    def cancelAll(self) -> None:
        """
        Cancel every attempt: those waiting never start, those running are
        cancelled.
        """
        queued, self._queued = self._queued, deque()
        for attempt in queued:
            attempt.end()
        for attempt in list(self._running):
            if attempt.running is not None:
                attempt.running.cancel()
        self._release()

    def _startNext(self) -> bool:
        if not self._queued or len(self._running) >= self._limit:
            return False
        attempt = self._queued.popleft()
        self._running.append(attempt)
        attempt.started = True
        running = maybeDeferred(self._job, attempt.certificate, attempt.forced)
        if not attempt.ended:
            attempt.running = running
        running.addBoth(self._ended, attempt)
        return True

    def _start(self) -> None:
        super()._start()
        self._release()

    def _ended(self, outcome: Any, attempt: Attempt) -> None:
        if isinstance(outcome, Failure) and not outcome.check(CancelledError):
            self._log.failure("Unexpected error in a renewal attempt", outcome)
        self._running.remove(attempt)
        attempt.end()
        self._start()

    def _release(self) -> None:
        """
        Fire the barriers whose attempts have all ended.
        """
        if self._starting:
            return
        lowest = min(
            [attempt.number for attempt in self._running]
            + [self._queued[0].number if self._queued else self._added]
        )
        while self._barriers and self._barriers[0][0] <= lowest:
            _, barrier = self._barriers.popleft()
            if not barrier.called:
                barrier.callback(None)
