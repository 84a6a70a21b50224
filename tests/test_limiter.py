"""
Tests for L{letsencrypt_resource.limiter}.
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource.limiter import Limiter


class LimiterTests(SynchronousTestCase):
    """
    Tests for L{Limiter}.
    """

    def test_bounded(self) -> None:
        """
        At most C{limit} jobs run at once; the others start, in order, as
        places free up, and each result reaches its caller.
        """
        limiter = Limiter(2)
        jobs = [Deferred() for _ in range(4)]
        started = []

        def job(index: int) -> Deferred[int]:
            started.append(index)
            return jobs[index]

        results = [limiter.run(job, index) for index in range(4)]
        self.assertEqual(started, [0, 1])
        jobs[1].callback("one")
        self.assertEqual(started, [0, 1, 2])
        self.assertEqual(self.successResultOf(results[1]), "one")
        jobs[0].errback(ValueError("zero"))
        self.failureResultOf(results[0], ValueError)
        self.assertEqual(started, [0, 1, 2, 3])

    def test_noRecursion(self) -> None:
        """
        Many jobs that end at once do not exhaust the stack.
        """
        limiter = Limiter(4)
        results = [limiter.run(succeed, index) for index in range(20000)]
        self.assertEqual(self.successResultOf(results[-1]), 19999)

    def test_cancel(self) -> None:
        """
        Cancelling a running job's Deferred cancels the job; cancelling a
        waiting one removes it, and it never starts.
        """
        limiter = Limiter(1)
        cancelled = []
        running = limiter.run(lambda: Deferred(lambda d: cancelled.append(True)))
        started = []
        waiting = limiter.run(lambda: started.append(True))
        waiting.cancel()
        running.cancel()
        self.assertEqual(cancelled, [True])
        self.failureResultOf(running)
        self.failureResultOf(waiting)
        self.assertEqual(started, [])

    def test_cancelManyWaiting(self) -> None:
        """
        Cancelling thousands of waiting jobs does not look for each in the
        queue (that compared each with those before it: quadratic); the
        jobs not cancelled still run, in order.
        """
        compared = []

        class Job:
            """
            A job that counts how often it is compared.
            """

            def __eq__(self, other: object) -> bool:
                compared.append(True)
                return self is other

            __hash__ = object.__hash__

            def __call__(self, index: int) -> int:
                return index

        limiter = Limiter(1)
        blocker: Deferred[None] = Deferred()
        limiter.run(lambda: blocker)
        waiting = [limiter.run(Job(), index) for index in range(3000)]
        for each in reversed(waiting[:-1]):
            each.cancel()
        blocker.callback(None)
        self.assertEqual(compared, [])
        self.assertEqual(self.successResultOf(waiting[-1]), 2999)
        for each in waiting[:-1]:
            self.failureResultOf(each, CancelledError)

    def test_cancelledWhileItsJobEnds(self) -> None:
        """
        A running job whose cancellation takes time (its caller's Deferred
        fails at once, the job ends later) frees its place when it ends:
        the next job starts then.
        """
        limiter = Limiter(1)
        cleanup: Deferred[None] = Deferred()
        slow: Deferred[None] = Deferred()
        slow.addErrback(lambda failure: cleanup)
        first = limiter.run(lambda: slow)
        started = []
        limiter.run(lambda: started.append(True))
        first.cancel()
        self.failureResultOf(first, CancelledError)
        self.assertEqual(started, [])
        cleanup.callback(None)
        self.assertEqual(started, [True])
