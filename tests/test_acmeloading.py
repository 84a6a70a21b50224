"""
Tests for L{letsencrypt_resource.acmeloading}.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.registry import Components

from letsencrypt_resource import acmeerrors, acmeloading, issuer
from letsencrypt_resource.acmeerrors import ACMEUnavailable
from letsencrypt_resource.acmeloading import ACME_MODULES, FAILURE_PERIOD, LoadAtStart, loadACME
from letsencrypt_resource.cafaults import blamesCA
from letsencrypt_resource.config import ConfigurationError, parseConfiguration
from letsencrypt_resource.connection import AccountConnection
from letsencrypt_resource.host import checkCA
from letsencrypt_resource.operations import Operations
from tests.helpers.configuration import BASE, resource, service
from tests.helpers.resourcecase import ResourceTestCase


def fresh(case: SynchronousTestCase) -> None:
    """
    Give C{case} a process where the modules that speak ACME were never
    loaded.
    """
    case.patch(acmeloading, "_state", acmeloading._Loading())


def loaded() -> bool:
    """
    Whether the modules count as loaded.
    """
    return acmeloading._state.loaded


class LoadACMETests(SynchronousTestCase):
    """
    L{loadACME} imports the modules that speak ACME through the runner it
    is given, once.
    """

    def setUp(self) -> None:
        fresh(self)
        self.clock = Clock()
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
        self.assertIsNone(self.successResultOf(loadACME(self.runner, self.clock)))
        self.assertEqual(len(self.ran), 1)
        self.assertTrue(loaded())

    def test_onceLoadedNoThread(self) -> None:
        """
        Once loaded, a call fires at once without asking the runner.
        """
        loadACME(self.runner, self.clock)
        self.assertIsNone(self.successResultOf(loadACME(self.runner, self.clock)))
        self.assertEqual(len(self.ran), 1)

    def test_notLoadedUntilTheThreadEnds(self) -> None:
        """
        While the worker imports, the modules do not count as loaded: a
        second caller waits for that load, not for a module half imported,
        and starts no second one.
        """
        pending: Deferred[Any] = Deferred()
        first = loadACME(lambda function: pending, self.clock)
        second = loadACME(self.runner, self.clock)
        self.assertNoResult(first)
        self.assertNoResult(second)
        self.assertFalse(loaded())
        self.assertEqual(self.ran, [])
        pending.callback(None)
        self.assertIsNone(self.successResultOf(first))
        self.assertIsNone(self.successResultOf(second))
        self.assertTrue(loaded())

    def test_oneLoadForAllCallers(self) -> None:
        """
        Callers that come while a load runs all wait for it: one runner
        call; a caller that gives up (cancels) leaves the others waiting.
        """
        pending: list[Deferred[None]] = []

        def held(function: Callable[..., Any]) -> Deferred[None]:
            self.ran.append(function)
            pending.append(Deferred())
            return pending[-1]

        callers = [loadACME(held, self.clock) for _ in range(3)]
        callers[0].cancel()
        self.failureResultOf(callers[0])
        pending[0].callback(None)
        self.assertEqual(len(self.ran), 1)
        self.assertEqual([self.successResultOf(c) for c in callers[1:]], [None, None])

    def test_failureReported(self) -> None:
        """
        An import that fails fails every caller's Deferred with
        L{ACMEUnavailable}, naming the module and the error, and the next
        call tries again; event 20255 tells it with the import's own
        traceback.
        """
        self.patch(acmeloading, "ACME_MODULES", ("letsencrypt_resource.nosuchmodule",))
        held: list[Deferred[None]] = []

        def runLater(function: Callable[..., Any]) -> Deferred[None]:
            self.ran.append(function)
            held.append(Deferred())
            return held[-1]

        with capturedLogs() as logged:
            callers = [loadACME(runLater, self.clock) for _ in range(2)]
            maybeDeferred(self.ran[0]).chainDeferred(held[0])
        for caller in callers:
            error = self.failureResultOf(caller, ACMEUnavailable).value
            self.assertEqual(error.module, "letsencrypt_resource.nosuchmodule")
            self.assertIsInstance(error.error, ModuleNotFoundError)
        self.assertFalse(loaded())
        [event] = [e for e in logged if e.get("event_id") == 20255]
        self.assertEqual(event["module"], "letsencrypt_resource.nosuchmodule")
        self.assertIn("nosuchmodule", event["error"])
        self.assertEqual(event["failures"], 1)
        # The import's own traceback, down to the import that failed.
        self.assertIsInstance(event["log_failure"].value, ModuleNotFoundError)
        self.assertIn("_find_and_load", [frame[0] for frame in event["log_failure"].frames])
        self.assertEqual(len(self.flushLoggedErrors(ImportError)), 1)
        self.patch(acmeloading, "ACME_MODULES", ACME_MODULES)
        with capturedLogs() as logged:
            self.successResultOf(loadACME(self.runner, self.clock))
        self.assertEqual(len(self.ran), 2)
        self.assertEqual([(e["event_id"], e["failures"]) for e in logged], [(20256, 1)])

    def test_failuresLoggedOncePerPeriod(self) -> None:
        """
        While loads keep failing, event 20255 comes at most once in
        L{FAILURE_PERIOD}, with the count of failed loads so far.
        """
        self.patch(acmeloading, "ACME_MODULES", ("letsencrypt_resource.nosuchmodule",))
        with capturedLogs() as logged:
            for advance in (0, 1, FAILURE_PERIOD - 1):
                self.clock.advance(advance)
                self.failureResultOf(loadACME(self.runner, self.clock), ACMEUnavailable)
        self.assertEqual([e["failures"] for e in logged if e.get("event_id") == 20255], [1, 3])
        self.assertEqual(len(self.flushLoggedErrors(ImportError)), 2)

    def test_notTheCAsFault(self) -> None:
        """
        A failed load is this install's fault: never held against a CA,
        not even for an urgent set.
        """
        error = ACMEUnavailable("letsencrypt_resource.acmetransport", ImportError("josepy"))
        self.assertFalse(blamesCA(error, urgent=True))
        self.assertIn("josepy", str(error))


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
        fresh(self)
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
            Clock(),
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
        self.failureResultOf(asked, ACMEUnavailable)
        self.flushLoggedErrors(ImportError)
        self.assertNoResult(connection.acmeClient())
        self.assertEqual(len(self.ran), 2)


class LoadAtStartTests(SynchronousTestCase):
    """
    L{LoadAtStart} loads the modules once the domain sets are loaded, so
    that a broken install is told at start-up, not at the first order.
    """

    def test_failedLoadLoggedAtStart(self) -> None:
        """
        Once the sets are loaded, the load runs; one that fails logs event
        20255 at once, naming the module and the import error, and the
        service goes on.
        """
        fresh(self)
        self.patch(acmeloading, "ACME_MODULES", ("letsencrypt_resource.nosuchmodule",))
        ran: list[Callable[..., Any]] = []

        def inThread(function: Callable[..., Any]) -> Deferred[None]:
            ran.append(function)
            return maybeDeferred(function)

        setsLoaded: Deferred[None] = Deferred()
        service = LoadAtStart(lambda: setsLoaded, lambda: loadACME(inThread, Clock()))
        with capturedLogs() as logged:
            service.startService()
            self.assertEqual(ran, [])
            setsLoaded.callback(None)
        [event] = [e for e in logged if e.get("event_id") == 20255]
        self.assertEqual(event["module"], "letsencrypt_resource.nosuchmodule")
        self.assertIn("ModuleNotFoundError", event["error"])
        self.assertEqual(len(self.flushLoggedErrors(ImportError)), 1)
        self.assertTrue(service.running)
        service.stopService()

    def test_stopWhileLoadingSets(self) -> None:
        """
        A service stopped before the sets are loaded loads nothing.
        """
        ran: list[object] = []
        setsLoaded: Deferred[None] = Deferred()
        service = LoadAtStart(lambda: setsLoaded, lambda: succeed(ran.append(1)))
        service.startService()
        service.stopService()
        self.assertEqual(ran, [])


class MissingPackagesTests(SynchronousTestCase):
    """
    A server whose install lacks a package that ACME needs could not do its
    job: the checks before start refuse it (twistd stops with status 1,
    before it listens), without importing the packages.
    """

    def test_refusedBeforeStart(self) -> None:
        """
        A package not installed is named, at the resource's section.
        """
        self.patch(acmeloading, "ACME_PACKAGES", ("acme", "importfix_nosuchpackage"))
        configuration = parseConfiguration(resource() + service(), BASE)
        error = self.assertRaises(ConfigurationError, checkCA, configuration)
        self.assertEqual((error.section, error.option), ("resources/r1", None))
        self.assertIn("importfix_nosuchpackage", error.message)
        self.assertNotIn("acme,", error.message)

    def test_installed(self) -> None:
        """
        An install with every package passes.
        """
        self.assertEqual(acmeloading.missingPackages(), [])

    def test_emptyFolder(self) -> None:
        """
        A folder named after a package, on C{sys.path}, that holds no
        C{__init__.py} (an uninstall that left it behind) is not the
        package: it would import as an empty namespace package.  A real
        package and a module file are found; none is imported.
        """
        path = os.path.abspath(self.mktemp())
        for folder in ("lows17_empty", "lows17_package"):
            os.makedirs(os.path.join(path, folder))
        with open(os.path.join(path, "lows17_package", "__init__.py"), "w") as stream:
            stream.write("raise ImportError('imported')\n")
        with open(os.path.join(path, "lows17_module.py"), "w") as stream:
            stream.write("raise ImportError('imported')\n")
        names = ("lows17_empty", "lows17_package", "lows17_module", "lows17_absent")
        self.patch(acmeloading, "ACME_PACKAGES", names)
        self.patch(sys, "path", [path])
        self.assertEqual(acmeloading.missingPackages(), ["lows17_empty", "lows17_absent"])
        self.assertEqual([name for name in names if name in sys.modules], [])


class AccountCommandsLoadTests(SynchronousTestCase):
    """
    The account commands of a running server wait for the modules that
    speak ACME, loaded off the reactor thread.
    """

    def test_accountShowWaitsForTheLoad(self) -> None:
        """
        C{account show} makes no L{AccountCommands
        <letsencrypt_resource.accountcommands.AccountCommands>} (whose
        module imports C{acme}) before the load has ended.
        """
        from letsencrypt_resource import accountcommands

        fresh(self)
        made: list[object] = []

        class Commands:
            def __init__(self, cas: object, records: object, runInThread: object) -> None:
                made.append(cas)

            async def show(self, ca: str | None) -> dict[str, Any]:
                return {"ca": ca}

        self.patch(accountcommands, "AccountCommands", Commands)
        loads: list[Deferred[None]] = []

        def heldRunner(function: Callable[..., Any]) -> Deferred[None]:
            loads.append(Deferred())
            return loads[-1]

        resource = SimpleNamespace(cas="cas", records="records", runInThread=heldRunner)
        shown = Operations(resource, Clock()).accountShow("b")  # type: ignore[arg-type]
        self.assertNoResult(shown)
        self.assertEqual((made, len(loads)), ([], 1))
        loads[0].callback(None)
        self.assertEqual(self.successResultOf(shown), {"ca": "b"})
        self.assertEqual(made, ["cas"])


class MovedNamesTests(SynchronousTestCase):
    """
    The failures moved to L{letsencrypt_resource.acmeerrors} are still
    found where they were.
    """

    def test_issuer(self) -> None:
        """
        L{letsencrypt_resource.issuer} still gives the order's failures,
        its limit and C{orderSurvives}.
        """
        for name in (
            "ORDER_TIMEOUT",
            "OrderTimedOut",
            "ChallengeNotOffered",
            "CertificateMismatch",
            "orderSurvives",
        ):
            self.assertIs(getattr(issuer, name), getattr(acmeerrors, name))


class ResourceLoadsAtStartTests(ResourceTestCase):
    """
    A resource that starts loads the modules that speak ACME once its sets
    are loaded.
    """

    def test_brokenInstallLoggedAtStart(self) -> None:
        """
        With no set to order nor to ask a CA about, a broken install is
        still logged at start (event 20255), and the resource runs on.
        """
        fresh(self)
        self.patch(acmeloading, "ACME_MODULES", ("letsencrypt_resource.nosuchmodule",))
        self.registry = Components()
        started = self.start()
        self.assertEqual(self.eventIDs().count(20255), 1)
        self.assertEqual(len(self.flushLoggedErrors(ImportError)), 1)
        self.assertTrue(started.running)
