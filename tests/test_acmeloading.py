"""
Tests for L{letsencrypt_resource.acmeloading}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource import acmeloading
from letsencrypt_resource.acmeloading import ACME_MODULES, loadACME


class LoadACMETests(SynchronousTestCase):
    """
    L{loadACME} imports the modules that speak ACME through the runner it
    is given, once.
    """

    def setUp(self) -> None:
        self.patch(acmeloading, "_loaded", [False])
        self.ran: list[Callable[..., Any]] = []

    def runner(self, function: Callable[..., Any], *args: Any) -> Deferred[Any]:
        """
        Run C{function} at once, as a worker thread would, and record it.
        """
        self.ran.append(function)
        return maybeDeferred(function, *args)

    def test_importsThroughTheRunner(self) -> None:
        """
        The first call imports L{ACME_MODULES} by the runner (off the reactor
        thread), and its Deferred fires once they are.
        """
        self.assertIsNone(self.successResultOf(loadACME(self.runner)))
        self.assertEqual(len(self.ran), 1)
        self.assertTrue(acmeloading._loaded[0])

    def test_onceLoadedNoThread(self) -> None:
        """
        Once loaded, a call fires at once without asking the runner.
        """
        loadACME(self.runner)
        self.assertIsNone(self.successResultOf(loadACME(self.runner)))
        self.assertEqual(len(self.ran), 1)

    def test_notLoadedUntilTheThreadEnds(self) -> None:
        """
        While the worker imports, the modules do not count as loaded: a
        second caller waits for a thread too, not for a module half
        imported.
        """
        pending: Deferred[Any] = Deferred()
        loading = loadACME(lambda function: pending)
        self.assertNoResult(loading)
        self.assertFalse(acmeloading._loaded[0])
        self.assertIsNone(self.successResultOf(loadACME(self.runner)))
        self.assertEqual(len(self.ran), 1)

    def test_failureReported(self) -> None:
        """
        An import that fails fails the Deferred, and the next call tries
        again.
        """
        self.patch(acmeloading, "ACME_MODULES", ("letsencrypt_resource.nosuchmodule",))
        self.failureResultOf(loadACME(self.runner), ModuleNotFoundError)
        self.assertFalse(acmeloading._loaded[0])
        self.patch(acmeloading, "ACME_MODULES", ACME_MODULES)
        self.successResultOf(loadACME(self.runner))
        self.assertEqual(len(self.ran), 2)
