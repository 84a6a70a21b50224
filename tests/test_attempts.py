"""
Tests for L{letsencrypt_resource.attempts}: the renewal attempts queued,
each as one small object until its turn.
"""

from __future__ import annotations

import gc

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource.attempts import AttemptQueue
from letsencrypt_resource.managed import ManagedCertificate


def sets(count: int) -> list[ManagedCertificate]:
    """
    C{count} domain sets of one name each.
    """
    return [ManagedCertificate((f"s{index}.example.test",)) for index in range(count)]


class Jobs:
    """
    Attempt jobs that wait until told to end, recorded in the order they
    started.
    """

    def __init__(self) -> None:
        self.started: list[tuple[ManagedCertificate, str | None]] = []
        self.running: dict[ManagedCertificate, Deferred[None]] = {}
        self.cancelled: list[ManagedCertificate] = []

    def __call__(self, certificate: ManagedCertificate, forced: str | None) -> Deferred[None]:
        self.started.append((certificate, forced))
        running: Deferred[None] = Deferred(lambda _: self.cancelled.append(certificate))
        self.running[certificate] = running
        return running


class AttemptQueueTests(SynchronousTestCase):
    """
    Tests for L{AttemptQueue}.
    """

    def test_bounded(self) -> None:
        """
        At most C{limit} attempts run at once; the others start in the
        order they came as places free up, each set's C{attempt} is kept
        until its attempt ends.
        """
        jobs = Jobs()
        queue = AttemptQueue(jobs, 2, Logger())
        certificates = sets(4)
        for certificate in certificates:
            queue.add(certificate, "forced")
        self.assertEqual([c for c, _ in jobs.started], certificates[:2])
        self.assertEqual({forced for _, forced in jobs.started}, {"forced"})
        jobs.running[certificates[1]].callback(None)
        self.assertIsNone(certificates[1].attempt)
        self.assertEqual([c for c, _ in jobs.started], certificates[:3])
        self.assertIsNotNone(certificates[3].attempt)

    def test_queuedIsOneObject(self) -> None:
        """
        A queued attempt is one object the garbage collector tracks (no
        Deferred, closure or callback list until it starts), so that
        thousands queued at once keep full collections short.
        """
        jobs = Jobs()
        queue = AttemptQueue(jobs, 1, Logger())
        certificates = sets(2001)
        queue.add(certificates[0], None)
        gc.collect()
        before = len(gc.get_objects())
        for certificate in certificates[1:]:
            queue.add(certificate, "forced")
        added = len(gc.get_objects()) - before
        self.assertLess(added, 2000 * 1.1)

    def test_noRecursion(self) -> None:
        """
        Thousands of attempts that end at once do not exhaust the stack.
        """
        ended = []
        queue = AttemptQueue(lambda c, forced: succeed(ended.append(c)), 2, Logger())
        certificates = sets(20000)
        for certificate in certificates:
            queue.add(certificate, None)
        self.assertEqual(ended, certificates)
        self.assertIsNone(certificates[-1].attempt)

    def test_whenEnded(self) -> None:
        """
        L{AttemptQueue.whenEnded} fires once every attempt queued before
        it was asked for has ended, whatever order they end in, and does
        not wait for those queued later.
        """
        jobs = Jobs()
        queue = AttemptQueue(jobs, 2, Logger())
        first, second, third, later = sets(4)
        for certificate in (first, second, third):
            queue.add(certificate, None)
        ended = queue.whenEnded()
        queue.add(later, None)
        jobs.running[second].callback(None)
        jobs.running[third].callback(None)
        self.assertNoResult(ended)
        jobs.running[first].callback(None)
        self.assertIsNone(self.successResultOf(ended))
        self.assertIsNotNone(later.attempt)
        self.assertIsNone(self.successResultOf(AttemptQueue(jobs, 1, Logger()).whenEnded()))

    def test_attemptWhenEnded(self) -> None:
        """
        L{Attempt.whenEnded} fires once that attempt has ended, at once
        when it has; a failure of the job is logged as unexpected.
        """
        jobs = Jobs()
        queue = AttemptQueue(jobs, 1, Logger())
        first, second = sets(2)
        queue.add(first, None)
        attempt = queue.add(second, None)
        ending = attempt.whenEnded()
        jobs.running[first].callback(None)
        self.assertNoResult(ending)
        jobs.running[second].errback(ValueError("a bug"))
        self.assertIsNone(self.successResultOf(ending))
        self.assertIsNone(self.successResultOf(attempt.whenEnded()))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_cancelAll(self) -> None:
        """
        L{AttemptQueue.cancelAll} cancels the attempts running and drops
        those queued, which never start; no set keeps an attempt, the
        waits end, and nothing is logged.
        """
        jobs = Jobs()
        queue = AttemptQueue(jobs, 2, Logger())
        certificates = sets(5)
        attempts = [queue.add(certificate, None) for certificate in certificates]
        ended = queue.whenEnded()
        queued = attempts[-1].whenEnded()
        queue.cancelAll()
        self.assertEqual(jobs.cancelled, certificates[:2])
        self.assertEqual([c for c, _ in jobs.started], certificates[:2])
        self.assertEqual([c.attempt for c in certificates], [None] * 5)
        self.successResultOf(ended)
        self.successResultOf(queued)
        self.assertEqual(self.flushLoggedErrors(CancelledError), [])

    def test_forceWhileQueued(self) -> None:
        """
        L{Attempt.force} makes a queued attempt start forced, keeping the
        reason it was forced for already; once its job started, or it
        ended, it is too late and says so.
        """
        jobs = Jobs()
        queue = AttemptQueue(jobs, 1, Logger())
        running, waiting, forcedAlready = sets(3)
        started = queue.add(running, None)
        queued = queue.add(waiting, None)
        earlier = queue.add(forcedAlready, "revoked")
        self.assertFalse(started.force("forced"))
        self.assertTrue(queued.force("forced"))
        self.assertTrue(earlier.force("forced"))
        for certificate in (running, waiting, forcedAlready):
            jobs.running[certificate].callback(None)
        self.assertEqual(
            jobs.started, [(running, None), (waiting, "forced"), (forcedAlready, "revoked")]
        )
        self.assertFalse(queued.force("forced"))
