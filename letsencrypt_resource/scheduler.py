"""
The scheduler: when to look at the domain sets -- at start, at the regular
checks, and at wake-ups before them when a renewal, a retry, an ARI check
or a failed write falls earlier -- and, at each look, the warnings of
certificates close to expiry and the attempts that are due.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection
from typing import Any, TypeVar

import attrs
from twisted.application.service import Service
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    FirstError,
    succeed,
)
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import events
from .ariissuers import IssuerConnections, RenewalInfoLearning
from .connection import AccountConnection
from .coroutines import deferred
from .managed import ManagedCertificate
from .provisioning import Provisioning
from .renewer import Renewer
from .reporting import unexpected, when
from .writequeue import WriteQueue

DAY = 86400.0
T = TypeVar("T")
#: The sets a check looks at in one reactor turn: a check of more goes on
#: in the next turns, so that the reactor is never held for long (the
#: first look at a set after the start reads its certificate's dates and
#: names: about 0.1 ms a set).
CHECK_CHUNK = 200


async def inTurns(reactor: Any, items: list[T]) -> AsyncIterator[list[T]]:
    """
    C{items} by chunks of L{CHECK_CHUNK}, each after the first a turn of
    C{reactor} later.
    """
    for start in range(0, len(items), CHECK_CHUNK):
        if start:
            await deferLater(reactor, 0, lambda: None)
        yield items[start : start + CHECK_CHUNK]


def checkEnded(failure: Failure, log: Logger) -> None:
    """
    A check cancelled (the resource stops) ends quietly, even while it
    waits for writes (which fail its wait with C{FirstError}); other
    failures are unexpected.
    """
    error = failure.value
    if isinstance(error, FirstError):
        error = error.subFailure.value
    if not isinstance(error, CancelledError):
        unexpected(log, failure)


def warnOfExpiry(log: Logger, now: float, certificate: ManagedCertificate, starting: bool) -> None:
    """
    Warn on C{log} about C{certificate} if its certificate in service is
    close to expiry, unless its first renewal attempt is starting now
    (C{starting}: a failure is warned about at the next check); at a
    bounded rate (see L{ManagedCertificate.warnNow}).
    """
    current = certificate.current
    if current is None or current.provisional:
        return
    if starting and certificate.failures == 0:
        return
    if not certificate.warnNow(now):
        return
    notAfter = current.validity[1]
    details = (
        f"renewal failed {certificate.failures} times, last: {certificate.lastError}"
        if certificate.lastError
        else f"renewal is due {when(certificate.plan().at)}"
    )
    events.EXPIRY_WARNING.emit(
        log,
        component=", ".join(c.name for c in certificate.consumers),
        domains=certificate.label,
        days=f"{max(notAfter - now, 0) / DAY:.1f}",
        details=details,
    )


@attrs.define
class Look:
    """
    What one check's look at the domain sets found.

    @ivar due: The sets due, whose attempts it starts.
    @ivar forced: The sets whose queued attempt it forced.
    @ivar earliest: When the first of the other sets next needs attention,
        when it looked at every set and none had an attempt under way (the
        next wake-up, if it starts nothing: see L{Scheduler.check});
        C{None} otherwise.
    """

    due: list[ManagedCertificate] = attrs.Factory(list)
    forced: list[ManagedCertificate] = attrs.Factory(list)
    earliest: float | None = None


async def lookAt(
    reactor: Any,
    sets: list[ManagedCertificate],
    issuers: IssuerConnections,
    chosen: set[ManagedCertificate] | None,
    force: str | None,
    log: Logger,
) -> Look:
    """
    One pass over C{sets}, by chunks a reactor turn apart: find the sets
    due (every one when C{force} gives a reason; of C{chosen}, if given),
    force the queued attempts of the others when forced, and warn about
    expiry (every set, chosen or not).
    """
    now = reactor.seconds()
    look = Look()
    earliest = float("inf") if chosen is None and force is None else None
    async for chunk in inTurns(reactor, sets):
        for certificate in chunk:
            starting = False
            attempt = certificate.attempt
            if chosen is not None and certificate not in chosen:
                pass
            elif attempt is None:
                if force is not None:
                    starting = True
                else:
                    at = issuers.nextEvent(certificate)
                    if at <= now:
                        starting = True
                    elif earliest is not None:
                        earliest = min(earliest, at)
                if starting:
                    look.due.append(certificate)
            elif force is not None and attempt.force(force):
                # Not started again, even if it ended by then.
                look.forced.append(certificate)
                starting = True
            else:
                # Looked at when its attempt ends.
                earliest = None
            warnOfExpiry(log, now, certificate, starting)
    if not look.due and not look.forced:
        look.earliest = earliest
    return look


async def _earliestEvent(
    reactor: Any, sets: list[ManagedCertificate], issuers: IssuerConnections
) -> float:
    """
    When the first of C{sets} next needs attention (see
    L{IssuerConnections.nextEvent}), looked at by chunks a reactor turn
    apart; infinity for none.  Sets whose attempt is under way are left
    out: they are looked at when it ends.
    """
    earliest = float("inf")
    async for chunk in inTurns(reactor, sets):
        for certificate in chunk:
            if certificate.attempt is None:
                earliest = min(earliest, issuers.nextEvent(certificate))
    return earliest


class WakeUps:
    """
    The early check of a L{Scheduler}: scheduled when the first domain set
    to need attention does so before the next regular check.

    @ivar generation: Counts the searches started and the cancellations
        (each check starts with one): a check's look, which found the
        earliest next event as a search would, may wake up for it only
        while this has not changed since it began (see L{Scheduler.check}).
    """

    def __init__(
        self,
        managed: dict[frozenset[str], ManagedCertificate],
        issuers: Callable[[], IssuerConnections],
        writes: WriteQueue,
        reactor: Any,
        checkInterval: float,
        check: Callable[[], object],
        log: Logger,
    ):
        """
        @param issuers: Returns the scheduler's L{IssuerConnections}.
        @param check: Starts the early check.
        """
        self._managed = managed
        self._issuers = issuers
        self._writes = writes
        self._reactor = reactor
        self._checkInterval = checkInterval
        self._check = check
        self._log = log
        self._wakeUp: IDelayedCall | None = None
        self._finding: Deferred[None] | None = None
        self._found: list[Deferred[None]] = []
        self.generation = 0

    def cancel(self) -> None:
        """
        Cancel the search under way and the wake-up scheduled.
        """
        self.generation += 1
        if self._finding is not None:
            self._finding.cancel()
        if self._wakeUp is not None and self._wakeUp.active():
            self._wakeUp.cancel()
        self._wakeUp = None

    def search(self) -> None:
        """
        Look for the earliest next event of the sets, by chunks of
        L{CHECK_CHUNK} a reactor turn apart, and wake up for it (L{at}); a
        call while an earlier search looks replaces it.
        """
        self.generation += 1
        # The new search is under way before the old one's cancellation
        # runs its waiters' check (see L{whenFound}).
        old, finding = self._finding, self._find()
        self._finding = finding
        if old is not None:
            old.cancel()
        finding.addErrback(checkEnded, self._log)

        def found(_: object) -> None:
            if self._finding is finding:
                self._finding = None
                waiting, self._found = self._found, []
                for each in waiting:
                    each.callback(None)

        finding.addBoth(found)

    @property
    def searching(self) -> bool:
        """
        Whether a search is under way.
        """
        return self._finding is not None

    def whenFound(self) -> Deferred[None]:
        """
        A Deferred that fires once no search is under way: at once when
        none is.
        """
        if self._finding is None:
            return succeed(None)
        waiting: Deferred[None] = Deferred()
        self._found.append(waiting)
        return waiting

    @deferred
    async def _find(self) -> None:
        """
        The work of L{search}.
        """
        sets = list(self._managed.values())
        self.at(await _earliestEvent(self._reactor, sets, self._issuers()))

    def at(self, earliest: float) -> None:
        """
        Wake up for C{earliest}, the first set's next event, or earlier for
        a failed write's retry, when that comes before the next regular
        check.
        """
        if self._writes.hasRetries():
            earliest = min(earliest, self._writes.retries.retryAt)
        delay = earliest - self._reactor.seconds()
        if delay < self._checkInterval:
            if self._wakeUp is not None and self._wakeUp.active():
                self._wakeUp.cancel()
            self._wakeUp = self._reactor.callLater(max(delay, 0), self._check)


class Scheduler(Service):
    """
    Runs the checks of the domain sets while the resource runs.

    @ivar loaded: Returns a Deferred that fires once the domain sets are
        loaded: the first check waits for it.
    @ivar issuers: The CAs whose renewal information the sets follow (by
        default, the resource's own for all).
    """

    def __init__(
        self,
        managed: dict[frozenset[str], ManagedCertificate],
        renewer: Renewer,
        provisioning: Provisioning,
        connection: AccountConnection,
        writes: WriteQueue,
        reactor: Any,
        checkInterval: float,
        log: Logger,
        automatic: bool = True,
    ):
        """
        @param managed: The domain sets to look at.
        @param checkInterval: Seconds between two regular checks.
        @param log: Where events go.
        @param automatic: Whether to provision and check at start and
            regularly; without, it only checks when asked to.
        """
        self._managed = managed
        self._renewer = renewer
        self._provisioning = provisioning
        self._connection = connection
        self._writes = writes
        self._reactor = reactor
        self._checkInterval = checkInterval
        self._log = log
        self._automatic = automatic
        self._checking: Deferred[None] | None = None
        self._learning = RenewalInfoLearning(
            lambda: self.issuers.unconnected(self._managed.values()),
            reactor,
            checkInterval,
            lambda: self.scheduleWakeUp(),
        )
        self._loop: LoopingCall | None = None
        # The check looked up at call time: a wrapper put on the instance
        # since (a bench's timer) sees the wake-up checks too.
        self._wakeUps = WakeUps(
            managed, lambda: self.issuers, writes, reactor, checkInterval, lambda: self.check(), log
        )
        self._started: Deferred[None] | None = None
        self._settled: list[Deferred[None]] | None = []
        self.loaded: Callable[[], Deferred[None]] = lambda: succeed(None)
        self.issuers = IssuerConnections(lambda certificate: connection)
        #: Called at the start of each check, to retry what failed before
        #: (the deploy commands).
        self.atCheck: list[Callable[[], object]] = []
        #: Called with the sets a check attempted, once their attempts ended.
        self.afterCheck: list[Callable[[list[ManagedCertificate]], object]] = []

    def startService(self) -> None:
        super().startService()
        if self._automatic:
            self._started = self._start()
            self._started.addErrback(self._unexpected)
        else:
            self._started = self.loaded().addCallback(lambda _: self._settle())
            self._started.addErrback(self._unexpected)

    def stopService(self) -> None:
        super().stopService()
        for pending in (self._started, self._checking):
            if pending is not None:
                pending.cancel()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._wakeUps.cancel()
        self._learning.stop()
        self._renewer.stop()

    def _unexpected(self, failure: Failure) -> None:
        unexpected(self._log, failure)

    @deferred
    async def _start(self) -> None:
        """
        Once the sets are loaded, put every consumer without a stored
        certificate on a provisional one, then start the regular checks,
        the first one at once.
        """
        await self.loaded()
        needProvisional = [c for c in self._managed.values() if c.current is None]
        if needProvisional:
            try:
                await self._provisioning.provision(needProvisional)
            except CancelledError:
                raise
            except Exception:
                # Renewals go on: each set gets its certificate from the CA.
                self._log.failure("Cannot make provisional certificates")
        self._loop = LoopingCall(self.check)
        self._loop.clock = self._reactor
        self._loop.start(self._checkInterval, now=True).addErrback(self._unexpected)
        if self._checking is not None:
            await self._checking
        self._settle()

    def _settle(self) -> None:
        settled, self._settled = self._settled, None
        for waiting in settled or ():
            waiting.callback(None)

    def whenSettled(self) -> Deferred[None]:
        """
        A Deferred that fires once every consumer has a certificate and the
        first attempt to get a CA-issued one for each domain set has ended,
        in success or failure.
        """
        if self._settled is None:
            return succeed(None)
        waiting: Deferred[None] = Deferred()
        self._settled.append(waiting)
        return waiting

    def check(
        self,
        force: bool = False,
        only: Collection[ManagedCertificate] | None = None,
        reason: str = "forced",
    ) -> Deferred[None]:
        """
        Warn about certificates close to expiry, then ask for renewal
        information and renew what is due, now.

        @param force: Renew every certificate, due or not.
        @param only: Look at these domain sets only.
        @param reason: Why C{force} renews, a key of
            L{letsencrypt_resource.outcomes.REASONS}.
        @return: A Deferred that fires when every attempt started has ended
            and what it wrote is on disk; it never fails.
        """
        self._wakeUps.cancel()
        generation = self._wakeUps.generation
        started = self._startDue(force, only, reason)
        attempted: list[ManagedCertificate] = []
        earliest: list[float | None] = [None]

        def looked(look: Look) -> Deferred[None]:
            attempted.extend(look.due + look.forced)
            earliest[0] = look.earliest
            ended = self._renewer.whenEnded()
            if not ended.called:
                # It waits for an attempt it did not see (a dropped set's):
                # what it found may be stale by then.
                earliest[0] = None
            return ended

        def wakeUp(_: object) -> None:
            # The look's earliest stands only if no search or other check
            # started since it began: one that did saw the sets later, and
            # may end before this (sets dropped meanwhile), so search again.
            if earliest[0] is None or self._wakeUps.generation != generation:
                self.scheduleWakeUp()
            elif self._loop is not None and self._loop.running:
                self._wakeUps.at(earliest[0])

        started.addCallback(looked)
        self._checking = started.addCallbacks(wakeUp, lambda failure: None)
        self._checking.addCallback(lambda _: self._writes.whenWritten())
        self._checking.addCallback(lambda _: [ended(attempted) for ended in self.afterCheck])
        self._checking.addCallback(lambda _: self._learning.learn())
        self._checking.addErrback(checkEnded, self._log)
        return self._checking

    @deferred
    async def _startDue(
        self, force: bool, only: Collection[ManagedCertificate] | None, reason: str
    ) -> Look:
        """
        Find the sets due (every one with C{force}; of C{only}, if given),
        warn about expiry, and start their attempts: synchronously for up
        to L{CHECK_CHUNK} sets, by chunks of that many a reactor turn apart
        for more, so that a check of thousands of sets never holds the
        reactor for long (L{lookAt}).  With C{force}, a set whose attempt
        waits queued unforced (a retry, a renewal information refresh: it
        would find the set not due) gets it forced
        (L{letsencrypt_resource.attempts.Attempt.force}).
        """
        now = self._reactor.seconds()
        chosen = None if only is None else set(only)
        sets = list(self._managed.values())
        look = await lookAt(
            self._reactor, sets, self.issuers, chosen, reason if force else None, self._log
        )
        self._writes.retry(now)
        for retry in self.atCheck:
            retry()
        async for chunk in inTurns(self._reactor, look.due):
            for certificate in chunk:
                if certificate.attempt is None:
                    self._renewer.startAttempt(certificate, reason if force else None)
        return look

    def scheduleWakeUp(self) -> None:
        """
        Schedule an early check when a renewal, a retry, an ARI check or a
        failed write's retry falls before the next regular one (see
        L{WakeUps.search}).
        """
        if self._loop is not None and self._loop.running:
            self._wakeUps.search()

    @deferred
    async def whenQuiet(self) -> None:
        """
        Wait until neither a search for the next wake-up nor a connection
        that learns whether a CA offers renewal information (which may
        start a search) is under way: what follows a check is over, when
        called once the check's Deferred fired (during its look, nothing
        follows yet: it fires at once).
        """
        while self._wakeUps.searching or self._learning.connecting:
            await self._wakeUps.whenFound()
            await self._learning.whenLearnt()
