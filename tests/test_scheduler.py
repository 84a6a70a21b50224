"""
Tests for L{letsencrypt_resource.scheduler}: a check of many domain sets
holds the reactor for one chunk at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource.ariissuers import IssuerConnections
from letsencrypt_resource.attempts import AttemptQueue
from letsencrypt_resource.managed import ManagedCertificate
from letsencrypt_resource.scheduler import CHECK_CHUNK, Scheduler


class TurnClock(Clock):
    """
    A L{Clock} that notes each call it runs as a new reactor turn.
    """

    def __init__(self) -> None:
        super().__init__()
        self.turns: list[list[tuple[ManagedCertificate, str | None]]] = [[]]

    def callLater(self, delay: float, f: Any, *args: Any, **kwargs: Any) -> Any:
        def turn() -> Any:
            self.turns.append([])
            return f(*args, **kwargs)

        return super().callLater(delay, turn)


class RecordingRenewer:
    """
    A renewer that records each attempt it is asked to start, per reactor
    turn, and each job it starts (at most C{limit} at once, as it comes),
    and leaves it running.
    """

    def __init__(self, clock: TurnClock, limit: int = 10**6):
        self.turns = clock.turns
        self.jobs: list[tuple[ManagedCertificate, str | None]] = []
        self.attempts = AttemptQueue(self._job, limit, Logger())

    def _job(self, certificate: ManagedCertificate, forced: str | None) -> Deferred[None]:
        self.jobs.append((certificate, forced))
        return Deferred()

    def startAttempt(self, certificate: ManagedCertificate, forced: str | None) -> None:
        self.attempts.add(certificate, forced)
        self.turns[-1].append((certificate, forced))

    def whenEnded(self) -> Deferred[None]:
        return self.attempts.whenEnded()

    def stop(self) -> None:
        self.attempts.cancelAll()

    def started(self) -> list[ManagedCertificate]:
        return [certificate for turn in self.turns for certificate, _ in turn]


class IdleWrites:
    """
    A write queue with nothing to write.
    """

    def retry(self, now: float) -> None:
        pass

    def hasRetries(self) -> bool:
        return False

    def whenWritten(self) -> Deferred[None]:
        return succeed(None)


class Connected:
    """
    An account connection already made, without renewal information.
    """

    checksARI = False
    connected = True


class CheckInTurnsTests(SynchronousTestCase):
    """
    L{Scheduler.check} starts the attempts of up to L{CHECK_CHUNK} sets at
    once, and those of more sets by chunks a reactor turn apart.
    """

    def scheduler(
        self, count: int, limit: int = 10**6
    ) -> tuple[Scheduler, RecordingRenewer, list[Any]]:
        """
        A scheduler over C{count} sets without a certificate (all due), on
        a L{Clock}, whose renewer runs C{limit} attempts at once.
        """
        self.clock = TurnClock()
        managed = {
            frozenset({f"s{i}.example.test"}): ManagedCertificate((f"s{i}.example.test",))
            for i in range(count)
        }
        renewer = RecordingRenewer(self.clock, limit)
        scheduler = Scheduler(
            managed,
            renewer,  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]
            Connected(),  # type: ignore[arg-type]
            IdleWrites(),  # type: ignore[arg-type]
            self.clock,
            86400.0,
            Logger(),
            automatic=False,
        )
        return scheduler, renewer, list(managed.values())

    def turn(self, renewer: RecordingRenewer) -> None:
        """
        Run the calls due.
        """
        self.clock.advance(0)

    def test_fewAtOnce(self) -> None:
        """
        A check of up to L{CHECK_CHUNK} sets starts every attempt before it
        returns.
        """
        scheduler, renewer, sets = self.scheduler(CHECK_CHUNK)
        scheduler.check(force=True, reason="forced")
        self.assertEqual(renewer.started(), sets)
        self.assertEqual({forced for _, forced in renewer.turns[0]}, {"forced"})

    def test_manyInTurns(self) -> None:
        """
        A forced check of more sets starts at most L{CHECK_CHUNK} attempts
        a reactor turn, and every one once, in order; its Deferred waits
        for them.
        """
        count = 2 * CHECK_CHUNK + 7
        scheduler, renewer, sets = self.scheduler(count)
        checking = scheduler.check(force=True)
        for _ in range(10):
            self.turn(renewer)
        self.assertEqual(renewer.started(), sets)
        self.assertLessEqual(max(len(turn) for turn in renewer.turns), CHECK_CHUNK)
        self.assertGreater(sum(1 for turn in renewer.turns if turn), 2)
        self.assertNoResult(checking)
        for certificate in sets:
            attempt = certificate.attempt
            assert attempt is not None and attempt.running is not None
            attempt.running.callback(None)
        self.successResultOf(checking)

    def test_onlyInTurns(self) -> None:
        """
        With C{only}, a check of many sets starts the attempts of those
        only, however many they are.
        """
        scheduler, renewer, sets = self.scheduler(3 * CHECK_CHUNK)
        chosen = sets[::2]
        scheduler.check(force=True, only=chosen)
        for _ in range(10):
            self.turn(renewer)
        self.assertEqual(renewer.started(), chosen)

    def test_startedMeanwhileNotTwice(self) -> None:
        """
        A set whose attempt another check started while this one waited
        for its turn is not started again.
        """
        scheduler, renewer, sets = self.scheduler(2 * CHECK_CHUNK)
        scheduler.check(force=True)
        last = sets[-1]
        renewer.startAttempt(last, "other check")
        for _ in range(10):
            self.turn(renewer)
        self.assertEqual(renewer.started().count(last), 1)
        self.assertEqual(len(renewer.started()), len(sets))

    def assertForcedWhileQueued(self, reason: str) -> None:
        """
        A forced check, for C{reason}, of a set whose attempt waits in the
        queue unforced forces that attempt: it renews whether due or not,
        once, and the check counts it among its sets and waits for it.
        """
        scheduler, renewer, (first, second) = self.scheduler(2, limit=1)
        scheduler.check()
        attempted: list[list[ManagedCertificate]] = []
        scheduler.afterCheck.append(attempted.append)
        checking = scheduler.check(force=True, only=[second], reason=reason)
        running = first.attempt
        assert running is not None and running.running is not None
        running.running.callback(None)
        self.assertEqual(renewer.jobs, [(first, None), (second, reason)])
        self.assertNoResult(checking)
        queued = second.attempt
        assert queued is not None and queued.running is not None
        queued.running.callback(None)
        self.successResultOf(checking)
        self.assertEqual(attempted, [[first, second], [second]])
        self.assertEqual(len(renewer.jobs), 2)

    def test_renewForceWhileQueued(self) -> None:
        """
        C{renew --force} (reason C{"forced"}) of a set whose attempt is
        queued unforced renews it.
        """
        self.assertForcedWhileQueued("forced")

    def test_revokeWhileQueued(self) -> None:
        """
        C{revoke} (a forced check for C{"revoked"}) of a set whose attempt
        is queued unforced replaces its certificate.
        """
        self.assertForcedWhileQueued("revoked")

    def test_forcedWhileRunningNotTwice(self) -> None:
        """
        A set whose unforced attempt already started is not forced (its
        job was told) nor started twice; a set forced while queued is
        started once, forced, in its turn.
        """
        scheduler, renewer, sets = self.scheduler(2 * CHECK_CHUNK, limit=1)
        scheduler.check()
        for _ in range(10):
            self.turn(renewer)
        scheduler.check(force=True, only=sets[:1] + sets[-1:])
        for _ in range(10):
            self.turn(renewer)
        queued = sets[-1].attempt
        assert queued is not None
        self.assertEqual(queued.forced, "forced")
        for certificate in sets:
            attempt = certificate.attempt
            assert attempt is not None and attempt.running is not None
            attempt.running.callback(None)
        for _ in range(10):
            self.turn(renewer)
        self.assertEqual(renewer.jobs, [(s, None) for s in sets[:-1]] + [(sets[-1], "forced")])

    def test_stopCancelsQuietly(self) -> None:
        """
        Stopping while a check waits for its next turn cancels it without
        an error, and starts no more attempts.
        """
        scheduler, renewer, sets = self.scheduler(3 * CHECK_CHUNK)
        scheduler.startService()
        checking = scheduler.check(force=True)
        scheduler.stopService()
        for _ in range(10):
            self.turn(renewer)
        self.assertEqual(renewer.started(), [])
        self.successResultOf(checking)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_stopCancelsEveryAttempt(self) -> None:
        """
        Stopping cancels the attempts of every check, not only those of
        the last one.
        """
        scheduler, renewer, sets = self.scheduler(4)
        scheduler.startService()
        scheduler.check(force=True, only=sets[:2])
        scheduler.check(force=True, only=sets[2:])
        self.assertEqual(len(renewer.started()), 4)
        scheduler.stopService()
        self.assertEqual([certificate.attempt for certificate in sets], [None] * 4)
        self.assertEqual(self.flushLoggedErrors(), [])


class TimedSet(ManagedCertificate):
    """
    A domain set whose next event is set by the test, and which notes the
    reactor turn of each look at it.
    """

    def __init__(self, name: str, at: float, clock: TurnClock):
        super().__init__((name,))
        self.at = at
        self.clock = clock
        self.looks: list[int] = []

    def nextEvent(self, checksARI: bool) -> float:
        self.looks.append(len(self.clock.turns))
        return self.at


class Provisioned:
    """
    Provisioning with nothing to do.
    """

    def provision(self, certificates: list[ManagedCertificate]) -> Deferred[None]:
        return succeed(None)


def startedOver(
    test: SynchronousTestCase,
    sets: Sequence[TimedSet],
    connection: object,
    clock: TurnClock,
    connectionOf: Callable[[ManagedCertificate], Any] | None = None,
) -> Scheduler:
    """
    A scheduler over C{sets}, connected by C{connection}, started (stopped
    at the end of C{test}) until its first check and its wake-up are found.

    @param connectionOf: The connection to the CA that issued each set's
        certificate, when not C{connection} for all.
    """
    scheduler = Scheduler(
        {frozenset(s.domains): s for s in sets},  # type: ignore[misc]
        RecordingRenewer(clock),  # type: ignore[arg-type]
        Provisioned(),  # type: ignore[arg-type]
        connection,  # type: ignore[arg-type]
        IdleWrites(),  # type: ignore[arg-type]
        clock,
        86400.0,
        Logger(),
    )
    if connectionOf is not None:
        scheduler.issuers = IssuerConnections(connectionOf)
    scheduler.startService()
    test.addCleanup(scheduler.stopService)
    for _ in range(10):
        clock.advance(0)
    return scheduler


class WakeUpTests(SynchronousTestCase):
    """
    L{Scheduler.scheduleWakeUp} looks at many sets by chunks a reactor turn
    apart, and wakes up for the earliest; a check that starts nothing wakes
    up for the earliest its own look found, without another pass.
    """

    def sets(self, clock: TurnClock) -> list[TimedSet]:
        """
        More than three chunks of sets, none due, the last one first.
        """
        count = 3 * CHECK_CHUNK + 1
        sets = [TimedSet(f"s{i}.example.test", 1000.0 + i, clock) for i in range(count)]
        sets[-1].at = 500.0
        return sets

    def wakeUp(self, clock: TurnClock) -> float:
        """
        The time of the only wake-up scheduled before the next regular check.
        """
        (wakeUp,) = [call for call in clock.getDelayedCalls() if call.getTime() < 86400.0]
        return wakeUp.getTime()

    def assertLookedOnceInChunks(self, sets: Sequence[Any]) -> None:
        """
        Each of C{sets} was looked at once, and no reactor turn looked at
        more than L{CHECK_CHUNK} of them.
        """
        looks = [turn for s in sets for turn in s.looks]
        perTurn = [looks.count(turn) for turn in set(looks)]
        self.assertEqual(sum(perTurn), len(sets))
        self.assertLessEqual(max(perTurn), CHECK_CHUNK)

    def test_inTurns(self) -> None:
        """
        A wake-up search of more than L{CHECK_CHUNK} sets looks at at most
        L{CHECK_CHUNK} sets a reactor turn, and schedules the wake-up for
        the earliest set.
        """
        clock = TurnClock()
        sets = self.sets(clock)
        scheduler = startedOver(self, sets, Connected(), clock)
        for certificate in sets:
            certificate.looks.clear()
        sets[0].at = 400.0
        scheduler.scheduleWakeUp()
        for _ in range(10):
            clock.advance(0)
        self.assertLookedOnceInChunks(sets)
        self.assertEqual(self.wakeUp(clock), 400.0)

    def test_checkStartingNothing(self) -> None:
        """
        After a check that starts no attempt, each set was looked at once
        (by the check, by chunks), and the wake-up is for the earliest.
        """
        clock = TurnClock()
        sets = self.sets(clock)
        startedOver(self, sets, Connected(), clock)
        for _ in range(10):
            clock.advance(0)
        self.assertLookedOnceInChunks(sets)
        self.assertEqual(self.wakeUp(clock), 500.0)

    def test_checkStartingAttempts(self) -> None:
        """
        After a check that started an attempt, once it ended, the wake-up
        is found by another look at every set: the attempt changed its
        set's next event.
        """
        clock = TurnClock()
        sets = self.sets(clock)
        sets[0].at = 0.0
        scheduler = startedOver(self, sets, Connected(), clock)
        renewer = scheduler._renewer
        ((started, _),) = renewer.jobs  # type: ignore[attr-defined]
        self.assertIs(started, sets[0])
        sets[0].at = 300.0
        renewer.attempts.cancelAll()  # type: ignore[attr-defined]
        for _ in range(10):
            clock.advance(0)
        self.assertEqual({len(s.looks) for s in sets[1:]}, {2})
        self.assertEqual(self.wakeUp(clock), 300.0)

    def test_attemptUnderWay(self) -> None:
        """
        A check that starts nothing while a set's attempt is under way (it
        is left out of the check's look) finds the wake-up by another look
        once that attempt ended.
        """
        clock = TurnClock()
        sets = self.sets(clock)
        sets[0].at = 0.0
        scheduler = startedOver(self, sets, Connected(), clock)
        renewer = scheduler._renewer
        sets[0].at = 300.0
        scheduler.check()
        for _ in range(10):
            clock.advance(0)
        self.assertEqual({len(s.looks) for s in sets[1:]}, {2})
        renewer.attempts.cancelAll()  # type: ignore[attr-defined]
        for _ in range(10):
            clock.advance(0)
        self.assertGreaterEqual(min(len(s.looks) for s in sets[1:]), 3)
        self.assertEqual(self.wakeUp(clock), 300.0)


class IssuedSet(TimedSet):
    """
    A L{TimedSet} with a CA-issued certificate in service, as far as the
    scheduler asks.
    """

    @property
    def issued(self) -> Any:
        return self


class Learning:
    """
    An account connection not made yet: each connection waits for the
    test, which says whether the CA offers renewal information.
    """

    connected = False

    def __init__(self) -> None:
        self.checksARI = False
        self.connecting: list[Deferred[None]] = []

    def acmeClient(self) -> Deferred[None]:
        connecting: Deferred[None] = Deferred()
        self.connecting.append(connecting)
        return connecting


class LearningTests(SynchronousTestCase):
    """
    After a check, the scheduler connects to the CA to learn whether it
    offers renewal information, and looks for the next wake-up again only
    when it does.
    """

    def started(self, connection: Learning) -> tuple[list[IssuedSet], TurnClock]:
        """
        A started scheduler over more than L{CHECK_CHUNK} sets with
        CA-issued certificates, none due, whose first check is over (its
        wake-up found) and whose connection to the CA is under way.
        """
        clock = TurnClock()
        sets = [IssuedSet(f"s{i}.example.test", 1000.0 + i, clock) for i in range(CHECK_CHUNK + 1)]
        startedOver(self, sets, connection, clock)
        self.assertEqual(len(connection.connecting), 1)
        self.assertEqual({len(s.looks) for s in sets}, {1})
        return sets, clock

    def test_noRenewalInformation(self) -> None:
        """
        When the CA cannot be reached, or offers no renewal information,
        the wake-up found after the check stands: no set is looked at
        again.
        """
        connection = Learning()
        sets, clock = self.started(connection)
        connection.connecting[0].errback(ConnectionRefusedError())
        for _ in range(10):
            clock.advance(0)
        self.assertEqual({len(s.looks) for s in sets}, {1})
        (wakeUp,) = [call for call in clock.getDelayedCalls() if call.getTime() < 86400.0]
        self.assertEqual(wakeUp.getTime(), 1000.0)

    def test_renewalInformation(self) -> None:
        """
        When the CA offers renewal information, the next wake-up is found
        again, with the sets' renewal information checks.
        """
        connection = Learning()
        sets, clock = self.started(connection)
        connection.checksARI = True
        connection.connecting[0].callback(None)
        for _ in range(10):
            clock.advance(0)
        self.assertEqual({len(s.looks) for s in sets}, {2})


class QuietTests(SynchronousTestCase):
    """
    L{Scheduler.whenQuiet} waits for what follows a check: the connection
    that learns whether the CA offers renewal information, and the search
    for the next wake-up that its answer starts.
    """

    def test_learningThenSearch(self) -> None:
        """
        It fires once the connection under way ended and the search it
        started (a CA that offers renewal information) is over, not before.
        """
        connection = Learning()
        clock = TurnClock()
        sets = [IssuedSet(f"s{i}.example.test", 1000.0 + i, clock) for i in range(CHECK_CHUNK + 1)]
        scheduler = startedOver(self, sets, connection, clock)
        quiet = scheduler.whenQuiet()
        self.assertNoResult(quiet)
        connection.checksARI = True
        connection.connecting[0].callback(None)
        self.assertNoResult(quiet)
        self.assertEqual({len(s.looks) for s in sets[:CHECK_CHUNK]}, {2})
        self.assertEqual(len(sets[-1].looks), 1)
        clock.advance(0)
        self.successResultOf(quiet)
        self.assertEqual({len(s.looks) for s in sets}, {2})

    def test_failedLearning(self) -> None:
        """
        It fires once the connection failed (no search follows), and at
        once when nothing is under way.
        """
        connection = Learning()
        clock = TurnClock()
        scheduler = startedOver(self, [IssuedSet("a.example.test", 10.0, clock)], connection, clock)
        quiet = scheduler.whenQuiet()
        self.assertNoResult(quiet)
        connection.connecting[0].errback(ConnectionRefusedError())
        self.successResultOf(quiet)
        self.successResultOf(scheduler.whenQuiet())


class NotDueLearningTests(SynchronousTestCase):
    """
    A check connects to the CA to learn whether it offers renewal
    information only when one of its sets is to ask for it now; else the
    learning waits for the first such set, unless the next regular check
    comes first.
    """

    def started(self, ariNextCheck: float) -> tuple[Learning, Scheduler, TurnClock]:
        """
        A started scheduler over sets with CA-issued certificates, none
        due, each to ask for renewal information at C{ariNextCheck}, whose
        first check and its wake-up are found.
        """
        clock = TurnClock()
        connection = Learning()
        sets = [IssuedSet(f"s{i}.example.test", 200_000.0, clock) for i in range(3)]
        for certificate in sets:
            certificate.ariNextCheck = ariNextCheck
        sets[1].ariNextCheck = ariNextCheck + 10
        scheduler = startedOver(self, sets, connection, clock)
        return connection, scheduler, clock

    def test_learntWhenDue(self) -> None:
        """
        No connection is made (nothing loaded) while no set is to ask for
        renewal information; one is, once the first of them is.
        """
        connection, scheduler, clock = self.started(5000.0)
        self.assertEqual(connection.connecting, [])
        clock.advance(4999)
        self.assertEqual(connection.connecting, [])
        clock.advance(1)
        self.assertEqual(len(connection.connecting), 1)

    def test_afterNextCheck(self) -> None:
        """
        When the first set is to ask for renewal information after the next
        regular check, nothing waits for it: that check looks again.
        """
        connection, scheduler, clock = self.started(90_000.0)
        self.assertEqual([c for c in clock.getDelayedCalls() if c.getTime() > 86_400], [])
        clock.advance(86_400)
        for _ in range(10):
            clock.advance(0)
        self.assertEqual(connection.connecting, [])
        clock.advance(90_000 - 86_400)
        self.assertEqual(len(connection.connecting), 1)

    def test_stopped(self) -> None:
        """
        Stopping the scheduler cancels the learning that waits.
        """
        connection, scheduler, clock = self.started(5000.0)
        scheduler.stopService()
        clock.advance(5000)
        self.assertEqual(connection.connecting, [])
        self.assertEqual(clock.getDelayedCalls(), [])


class TwoCALearningTests(SynchronousTestCase):
    """
    With two CAs (the fallback CA's case), one CA's connection under way
    holds back neither the learning planned for the other nor its result.
    """

    def started(self) -> tuple[Learning, Learning, TurnClock, IssuedSet]:
        """
        A started scheduler over a set issued by CA A, to ask for renewal
        information now, and one issued by CA B, to ask at 100: A's
        connection is under way.
        """
        clock = TurnClock()
        first, second = Learning(), Learning()
        sa = IssuedSet("a.example.test", 200_000.0, clock)
        sb = IssuedSet("b.example.test", 200_000.0, clock)
        sa.ariNextCheck, sb.ariNextCheck = 0.0, 100.0
        sa.orderedBy = ("a", "https://a.example.test/directory", "https://a.example.test/acct/1")
        sb.orderedBy = ("b", "https://b.example.test/directory", "https://b.example.test/acct/1")
        startedOver(self, [sa, sb], first, clock, lambda c: first if c is sa else second)
        self.assertEqual((len(first.connecting), second.connecting), (1, []))
        return first, second, clock, sa

    def test_otherPlannedWhilePending(self) -> None:
        """
        The learning planned for B connects to B at its time though A's
        connection is still under way, without connecting A again; B's
        answer makes the scheduler look for its wake-up again.
        """
        first, second, clock, sa = self.started()
        clock.advance(100)
        self.assertEqual((len(first.connecting), len(second.connecting)), (1, 1))
        looked = len(sa.looks)
        second.checksARI = True
        second.connecting[0].callback(None)
        for _ in range(10):
            clock.advance(0)
        self.assertGreater(len(sa.looks), looked)
        first.connecting[0].errback(ConnectionRefusedError())
        self.assertEqual((len(first.connecting), len(second.connecting)), (1, 1))

    def test_failedNotRetriedByPlan(self) -> None:
        """
        When A's connection failed, the learning planned for B connects to
        B only: A is tried again by the next check.
        """
        first, second, clock, _ = self.started()
        clock.advance(10)
        first.connecting[0].errback(ConnectionRefusedError())
        clock.advance(90)
        self.assertEqual((len(first.connecting), len(second.connecting)), (1, 1))
        clock.advance(86_400 - 100)
        for _ in range(10):
            clock.advance(0)
        self.assertEqual(len(first.connecting), 2)


def wakeUpAt(clock: TurnClock) -> float:
    """
    The time of the only wake-up scheduled later than now and before the
    next regular check (the calls now are the next chunks of a look).
    """
    later = clock.getDelayedCalls()
    (wakeUp,) = [call for call in later if clock.seconds() < call.getTime() < 86400.0]
    return wakeUp.getTime()


class StaleLookTests(SynchronousTestCase):
    """
    A check that starts nothing wakes up for the earliest its own look
    found only when nothing fresher can exist: no search nor other check
    started since the look began, and no attempt to wait for.  Otherwise
    it looks for the wake-up again, as a check that started attempts does.
    """

    def started(self, count: int) -> tuple[list[TimedSet], Scheduler, TurnClock]:
        """
        A started scheduler over C{count} sets, none due, the first one
        (looked at in the first chunk) at 50,000, whose first check and its
        wake-up are over.
        """
        clock = TurnClock()
        sets = [TimedSet(f"s{i}.example.test", 10**7 + i, clock) for i in range(count)]
        sets[0].at = 50_000.0
        scheduler = startedOver(self, sets, Connected(), clock)
        self.assertEqual(wakeUpAt(clock), 50_000.0)
        return sets, scheduler, clock

    def drop(self, scheduler: Scheduler, sets: Sequence[TimedSet]) -> None:
        """
        Drop C{sets} from C{scheduler}'s sets, as a reload does.
        """
        for certificate in sets:
            del scheduler._managed[frozenset(certificate.domains)]

    def assertFreshKept(self, during: Callable[[Scheduler], object]) -> None:
        """
        Start a check over five chunks of sets, drop all but the first
        chunk's, move the first set's next event to 100 and call C{during}:
        the wake-up it finds (at 100) stays once the first check's look
        ends.
        """
        sets, scheduler, clock = self.started(5 * CHECK_CHUNK)
        scheduler.check()
        self.drop(scheduler, sets[CHECK_CHUNK:])
        sets[0].at = 100.0
        during(scheduler)
        self.assertEqual(wakeUpAt(clock), 100.0)
        for _ in range(10):
            clock.advance(0)
        self.assertEqual(wakeUpAt(clock), 100.0)

    def test_setsDroppedDuringLook(self) -> None:
        """
        When a search is asked for during a check's look (the first set's
        next event moved earlier) and sets are dropped meanwhile, the
        search ends before the look does; the look's older earliest does
        not replace the search's wake-up.
        """
        self.assertFreshKept(lambda scheduler: scheduler.scheduleWakeUp())

    def test_otherCheckDuringLook(self) -> None:
        """
        When another check starts during a check's look and, with sets
        dropped meanwhile, ends first, the first check's older earliest
        does not replace the other check's wake-up.
        """
        self.assertFreshKept(lambda scheduler: scheduler.check())

    def test_waitOnDroppedSetsAttempt(self) -> None:
        """
        A check that starts nothing but waits for the attempt of a set
        dropped while it ran (it was not in the look) does not put its
        look's earliest after the fresher wake-up a search found during
        the wait.
        """
        sets, scheduler, clock = self.started(50)
        dropped = TimedSet("d.example.test", 10**7, clock)
        scheduler._managed[frozenset(dropped.domains)] = dropped
        scheduler.check(force=True, only=[dropped])
        self.drop(scheduler, [dropped])
        scheduler.check()
        sets[0].at = 100.0
        scheduler.scheduleWakeUp()
        self.assertEqual(wakeUpAt(clock), 100.0)
        scheduler._renewer.attempts.cancelAll()  # type: ignore[attr-defined]
        for _ in range(10):
            clock.advance(0)
        self.assertEqual(wakeUpAt(clock), 100.0)

    def test_waitedLooksAgain(self) -> None:
        """
        A check that starts nothing but waits for an attempt it did not see
        looks for the wake-up again once that attempt ended, whether or not
        anything else asked for a search.
        """
        sets, scheduler, clock = self.started(50)
        dropped = TimedSet("d.example.test", 10**7, clock)
        scheduler._renewer.startAttempt(dropped, "forced")
        scheduler.check()
        sets[0].at = 100.0
        scheduler._renewer.attempts.cancelAll()  # type: ignore[attr-defined]
        for _ in range(10):
            clock.advance(0)
        self.assertEqual(wakeUpAt(clock), 100.0)

    def test_commonCaseOneLook(self) -> None:
        """
        A routine check that starts nothing, with nothing else under way,
        looks at each set once and wakes up for the earliest it found.
        """
        sets, scheduler, clock = self.started(3 * CHECK_CHUNK)
        for certificate in sets:
            certificate.looks.clear()
        sets[0].at = 100.0
        scheduler.check()
        for _ in range(10):
            clock.advance(0)
        self.assertEqual({len(s.looks) for s in sets}, {1})
        self.assertEqual(wakeUpAt(clock), 100.0)


class ReplacedSearchTests(SynchronousTestCase):
    """
    A search asked for while another is under way replaces it; those
    waiting for the search to end wait for the new one.
    """

    def test_whenFound(self) -> None:
        """
        L{letsencrypt_resource.scheduler.WakeUps.whenFound} does not fire
        when its search is replaced, only once the new one ended.
        """
        clock = TurnClock()
        sets = [TimedSet(f"s{i}.example.test", 10**7 + i, clock) for i in range(3 * CHECK_CHUNK)]
        scheduler = startedOver(self, sets, Connected(), clock)
        scheduler.scheduleWakeUp()
        found = scheduler._wakeUps.whenFound()
        scheduler.scheduleWakeUp()
        self.assertNoResult(found)
        self.assertTrue(scheduler._wakeUps.searching)
        for _ in range(10):
            clock.advance(0)
        self.successResultOf(found)
        self.assertFalse(scheduler._wakeUps.searching)

    def test_whenQuiet(self) -> None:
        """
        L{Scheduler.whenQuiet} does not fire while the search that replaced
        another is under way.
        """
        clock = TurnClock()
        sets = [TimedSet(f"s{i}.example.test", 10**7 + i, clock) for i in range(3 * CHECK_CHUNK)]
        scheduler = startedOver(self, sets, Connected(), clock)
        scheduler.scheduleWakeUp()
        quiet = scheduler.whenQuiet()
        scheduler.scheduleWakeUp()
        self.assertNoResult(quiet)
        for _ in range(10):
            clock.advance(0)
        self.successResultOf(quiet)


class WakeUpCheckTests(SynchronousTestCase):
    """
    A wake-up runs the scheduler's C{check} as looked up when it runs.
    """

    def test_wrapperSeesWakeUp(self) -> None:
        """
        A wrapper put on the instance's C{check} after the scheduler was
        made (as a bench's timer does) runs the wake-up's check.
        """
        clock = TurnClock()
        sets = [TimedSet("a.example.test", 500.0, clock)]
        scheduler = startedOver(self, sets, Connected(), clock)
        checked: list[object] = []
        check = scheduler.check

        def timed(*args: Any, **kwargs: Any) -> Deferred[None]:
            checked.append(args)
            return check(*args, **kwargs)

        scheduler.check = timed  # type: ignore[method-assign]
        clock.advance(500)
        self.assertEqual(checked, [()])
