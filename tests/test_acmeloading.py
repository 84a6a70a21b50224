"""
Tests for L{letsencrypt_resource.acmeloading}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource import acmeloading
from letsencrypt_resource.acmeloading import ACME_MODULES, loadACME
from letsencrypt_resource.connection import AccountConnection


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


class _Written:
    """
    A write queue with nothing left to write.
    """

    def whenWritten(self) -> Deferred[None]:
        return succeed(None)


class ConnectionLoadsTests(SynchronousTestCase):
    """
    L{AccountConnection} loads the modules that speak ACME off the reactor
    thread before its first connection.
    """

    def setUp(self) -> None:
        self.patch(acmeloading, "_loaded", [False])
        self.ran: list[Callable[..., Any]] = []
        self.loads: list[Deferred[None]] = []

    def runner(self, function: Callable[..., Any], *args: Any) -> Deferred[Any]:
        """
        A worker that has not run C{function} yet.
        """
        self.ran.append(function)
        self.loads.append(Deferred())
        return self.loads[-1]

    def connection(self) -> AccountConnection:
        """
        A connection whose load is run by L{runner}.
        """
        return AccountConnection(
            None,  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]
            _Written(),  # type: ignore[arg-type]
            None,
            None,
            self.runner,
        )

    def test_connectsOnlyOnceLoaded(self) -> None:
        """
        The first client asked for waits on the worker importing the
        modules; nothing connects meanwhile.
        """
        connection = self.connection()
        asked = connection.acmeClient()
        self.assertNoResult(asked)
        self.assertEqual(self.ran, [acmeloading._importAll])
        self.assertFalse(connection.connected)

    def test_failedLoadFailsTheConnection(self) -> None:
        """
        A load that failed fails the client asked for, and the next one
        asked for loads again.
        """
        connection = self.connection()
        asked = connection.acmeClient()
        self.loads[0].errback(ImportError("no acme"))
        self.failureResultOf(asked, ImportError)
        self.assertNoResult(connection.acmeClient())
        self.assertEqual(len(self.ran), 2)
