"""
Tests for L{letsencrypt_resource.scheduler}: a check of many domain sets
holds the reactor for one chunk at a time.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

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
    turn, and leaves it running.
    """

    def __init__(self, clock: TurnClock):
        self.turns = clock.turns

    def startAttempt(self, certificate: ManagedCertificate, forced: str | None) -> None:
        certificate.attempt = Deferred()
        self.turns[-1].append((certificate, forced))

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

    def scheduler(self, count: int) -> tuple[Scheduler, RecordingRenewer, list[Any]]:
        """
        A scheduler over C{count} sets without a certificate (all due), on
        a L{Clock}.
        """
        self.clock = TurnClock()
        managed = {
            frozenset({f"s{i}.example.test"}): ManagedCertificate((f"s{i}.example.test",))
            for i in range(count)
        }
        renewer = RecordingRenewer(self.clock)
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
            attempt, certificate.attempt = certificate.attempt, None
            attempt.callback(None)
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
