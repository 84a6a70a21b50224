"""
Tests for L{letsencrypt_resource.coroutines}.
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource.coroutines import whenFired


class WhenFiredTests(SynchronousTestCase):
    """
    L{whenFired} waits for a Deferred without taking its result.
    """

    def test_success(self) -> None:
        """
        It fires with C{None} once the Deferred fired; the Deferred's next
        callbacks get its result.
        """
        pending: Deferred[str] = Deferred()
        fired = whenFired(pending)
        self.assertNoResult(fired)
        pending.callback("result")
        self.assertIsNone(self.successResultOf(fired))
        self.assertEqual(self.successResultOf(pending), "result")

    def test_failure(self) -> None:
        """
        It fires with C{None} when the Deferred failed; the failure is left
        to the Deferred's next callbacks.
        """
        pending: Deferred[None] = Deferred()
        fired = whenFired(pending)
        pending.errback(ValueError("no"))
        self.assertIsNone(self.successResultOf(fired))
        self.failureResultOf(pending, ValueError)

    def test_cancelLeavesPending(self) -> None:
        """
        Cancelling it leaves the Deferred alone, which fires later without
        an error.
        """
        cancelled: list[Deferred[None]] = []
        pending: Deferred[None] = Deferred(cancelled.append)
        fired = whenFired(pending)
        fired.cancel()
        self.failureResultOf(fired, CancelledError)
        self.assertEqual(cancelled, [])
        pending.callback(None)
        self.assertIsNone(self.successResultOf(pending))
