"""
Tests for L{letsencrypt_resource.resource.LetsEncryptResource}, driven by a
fake clock against the in-memory fake ACME server.
"""

from __future__ import annotations

import os
from typing import Any

from treq.testing import RequestTraversalAgent
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.registry import Components
from zope.interface.verify import verifyObject

from letsencrypt_resource.config import ResourceOptions
from letsencrypt_resource.interfaces import ICertificateConsumer, ICertificateStore
from letsencrypt_resource.policy import FIRST_RETRY_DELAY
from letsencrypt_resource.resource import CHECK_INTERVAL, LetsEncryptResource
from letsencrypt_resource.testing import (
    advanceThrough,
    FakeACMEServer,
    MemoryStore,
    RecordingConsumer,
    runUntilFired,
)

DAY = 86400.0
FILES = ("files.example.test", "www.example.test")
REPORTS = ("reports.example.test",)


def synchronously(function: Any, *args: Any) -> Any:
    """
    Run C{function} at once: the tests' stand-in for a thread pool.
    """
    return succeed(function(*args))


def resourceOptions(**overrides: Any) -> ResourceOptions:
    values: dict[str, Any] = dict(
        section="resources/le",
        name="le",
        description="",
        address="127.0.0.1",
        port=5002,
        acmeURL="https://acme.test/directory",
        stateDirectory="/nonexistent",
        storeDirectory=None,
        redirectURL=None,
        acmeCAFile=None,
        keyType="ecdsa-p256",
        debug=False,
        agreeTOS=True,
    )
    values.update(overrides)
    return ResourceOptions(**values)


class RefusingReactor(MemoryReactorClock):
    """
    A memory reactor on which every port is taken.
    """

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        raise CannotListenError(interface, port, OSError(98, "Address already in use"))


class ResourceTestCase(SynchronousTestCase):
    """
    A resource with consumers, a memory store and a fake CA, on a fake clock.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.reactor.advance(1_800_000_000)
        self.server = FakeACMEServer(self.reactor)
        self.store = MemoryStore()
        self.registry = Components()
        self.consumers = {
            "files": RecordingConsumer("files-https", FILES),
            "files-ftps": RecordingConsumer("files-ftps", tuple(reversed(FILES))),
            "reports": RecordingConsumer("reports-https", REPORTS),
        }
        for name, consumer in self.consumers.items():
            self.registry.registerUtility(consumer, ICertificateConsumer, name=name)
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def makeResource(self, reactor: Any = None, **options: Any) -> LetsEncryptResource:
        reactor = reactor or self.reactor
        resource = LetsEncryptResource(
            resourceOptions(**options),
            self.registry,
            self.store,
            reactor,
            RequestTraversalAgent(self.server),
            runInThread=synchronously,
            random=lambda: 0.5,
        )
        self.server.validate = resource.responder.lookup
        return resource

    def start(self, **options: Any) -> LetsEncryptResource:
        resource = self.makeResource(**options)
        resource.startService()
        self.addCleanup(self.stop, resource)
        runUntilFired(self.reactor, resource.whenSettled())
        return resource

    def stop(self, resource: LetsEncryptResource) -> None:
        if resource.running:
            resource.stopService()

    def assertNear(self, actual: float, expected: float) -> None:
        """
        C{actual} is C{expected} give or take a second of polling.
        """
        self.assertTrue(abs(actual - expected) < 1, f"{actual} is not near {expected}")

    def eventIDs(self) -> list[int]:
        return [e["event_id"] for e in self.events if "event_id" in e]

    def eventTexts(self, eventID: int) -> list[str]:
        return [formatEvent(e) for e in self.events if e.get("event_id") == eventID]


class StartTests(ResourceTestCase):
    """
    What the resource does when it starts.
    """

    def test_interfaces(self) -> None:
        """
        The fakes provide the interfaces the resource relies on.
        """
        verifyObject(ICertificateStore, self.store)
        for consumer in self.consumers.values():
            verifyObject(ICertificateConsumer, consumer)

    def test_provisionalThenIssued(self) -> None:
        """
        Each consumer first gets a provisional certificate for its names,
        then the CA-issued one.
        """
        self.start()
        for consumer in self.consumers.values():
            first, second = consumer.received
            self.assertTrue(first.provisional)
            self.assertEqual(set(first.domains), set(consumer.domains))
            self.assertFalse(second.provisional)
            self.assertEqual(set(second.domains), set(consumer.domains))
            self.assertEqual(second.chain, (self.server.caCertificate,))

    def test_sharedDomainsShareOneCertificate(self) -> None:
        """
        Consumers naming the same set of domains, in any order, share one
        certificate and one order.
        """
        self.start()
        self.assertEqual(self.server.ordersCreated, 2)
        self.assertIs(
            self.consumers["files"].received[-1],
            self.consumers["files-ftps"].received[-1],
        )

    def test_events(self) -> None:
        """
        Each new certificate is announced once as stored (20015) and once
        per consumer as in use (20016); texts begin with their IDs.
        """
        self.start()
        self.assertEqual(self.eventIDs().count(20015), 2)
        self.assertEqual(self.eventIDs().count(20016), 3)
        self.assertEqual(self.eventIDs().count(20153), 3)
        for text in self.eventTexts(20016):
            self.assertTrue(text.startswith("20016 "), text)
        self.assertIn(
            "20016 Service reports-https now uses the CA-issued certificate for "
            "reports.example.test.",
            self.eventTexts(20016),
        )

    def test_accountRegisteredOnce(self) -> None:
        """
        One account is registered and kept in the store with its URL, and a
        restart reuses it.
        """
        resource = self.start()
        self.assertEqual(self.server.accountsCreated, 1)
        [acmeURL] = self.store.accounts
        url = self.store.loadAccount(acmeURL).url
        self.assertTrue(url.startswith("https://acme.test/account/"))
        resource.stopService()
        self.store.certificates.clear()
        self.start()
        self.assertEqual(self.server.accountsCreated, 1)
        self.assertEqual(self.eventIDs().count(20154), 1)

    def test_storedCertificateReused(self) -> None:
        """
        A restart puts consumers straight on their stored certificates,
        with no provisional one and no new order.
        """
        resource = self.start()
        issued = self.consumers["reports"].received[-1]
        resource.stopService()
        self.consumers["reports"].received.clear()
        self.start()
        self.assertEqual(self.server.ordersCreated, 2)
        [again] = self.consumers["reports"].received
        self.assertEqual(again.certificate, issued.certificate)

    def test_dueCertificateRenewedAtStart(self) -> None:
        """
        A stored certificate past two thirds of its lifetime is renewed at
        start.
        """
        resource = self.start()
        resource.stopService()
        self.reactor.advance(61 * DAY)
        self.start()
        self.assertEqual(self.server.ordersCreated, 4)

    def test_challengePortTaken(self) -> None:
        """
        When the challenge port is taken, 20152 names the address and port,
        and consumers still get their provisional certificates.
        """
        resource = self.makeResource(reactor=RefusingReactor())
        resource.startService()
        self.addCleanup(self.stop, resource)
        [text] = self.eventTexts(20152)
        self.assertIn("127.0.0.1 port 5002", text)
        self.assertIn("Address already in use", text)
        self.assertTrue(self.consumers["files"].received[0].provisional)

    def test_acmeV1Upgraded(self) -> None:
        """
        An upgraded ACMEv1 URL is reported at start with both URLs.
        """
        self.start(upgradedFromURL="https://acme-v01.api.letsencrypt.org/directory")
        [text] = self.eventTexts(20150)
        self.assertIn("acme-v01", text)
        self.assertIn("https://acme.test/directory", text)

    def test_signerKeptPerInstallation(self) -> None:
        """
        The provisional signer is made once and kept in the store.
        """
        resource = self.start()
        signer = self.store.signer
        self.assertIsNotNone(signer)
        resource.stopService()
        self.store.certificates.clear()
        self.start()
        self.assertEqual(self.store.signer, signer)


class RenewalTests(ResourceTestCase):
    """
    Renewals and failures while running.
    """

    def test_dailyCheckRenews(self) -> None:
        """
        Over 200 days, each certificate is renewed before it expires, every
        consumer always holds a valid one, and no check storm happens.
        """
        self.start()
        for _ in range(200):
            advanceThrough(self.reactor, DAY)
            now = self.reactor.seconds()
            for consumer in self.consumers.values():
                self.assertGreater(consumer.received[-1].notAfter.timestamp(), now)
        self.assertEqual(self.server.ordersCreated, 2 * 4)
        self.assertLess(len(self.server.requests), 200)

    def test_failureDoesNotBlockOthers(self) -> None:
        """
        A domain set that cannot validate gets 20017 with the CA's problem
        and the name, while the other set is issued.
        """
        self.server.refuse.add("www.example.test")
        self.start()
        [text] = self.eventTexts(20017)
        self.assertIn("files.example.test, www.example.test", text)
        self.assertIn("unauthorized", text)
        self.assertIn("www.example.test", text)
        self.assertFalse(self.consumers["reports"].received[-1].provisional)
        self.assertTrue(self.consumers["files"].received[-1].provisional)

    def test_retryBacksOff(self) -> None:
        """
        Failed attempts are retried after a minute, then after waits that
        double, up to the check interval; success ends the retries.
        """
        self.server.refuse.add("www.example.test")
        self.start()
        advanceThrough(self.reactor, 4 * DAY)
        retries = self.server.orderTimes[2:]
        gaps = [b - a for a, b in zip(retries, retries[1:])]
        self.assertNear(retries[0] - self.server.orderTimes[0], FIRST_RETRY_DELAY)
        self.assertNear(gaps[0], 2 * FIRST_RETRY_DELAY)
        self.assertNear(gaps[1], 4 * FIRST_RETRY_DELAY)
        self.assertNear(max(gaps), CHECK_INTERVAL)
        self.assertEqual(self.eventIDs().count(20017), len(retries) + 1)
        self.server.refuse.clear()
        advanceThrough(self.reactor, CHECK_INTERVAL)
        self.assertFalse(self.consumers["files"].received[-1].provisional)

    def test_rateLimitedRetryAfter(self) -> None:
        """
        A C{rateLimited} problem's Retry-After delays the next attempt past
        the backoff.
        """
        from acme import messages

        problem = messages.Error.with_code("rateLimited", detail="slow down")
        self.server.fail(
            "/new-order", 429, problem=problem, headers={"Retry-After": "7200"}, times=1
        )
        self.start()
        self.assertEqual(self.eventIDs().count(20017), 1)
        orders = self.server.ordersCreated
        self.reactor.advance(7199)
        self.assertEqual(self.server.ordersCreated, orders)
        self.reactor.advance(1)
        self.assertEqual(self.server.ordersCreated, orders + 1)

    def test_storeFailureKeepsOldCertificate(self) -> None:
        """
        When the new certificate cannot be stored, 20009 is logged and the
        consumers keep the certificate they have.
        """
        self.start()
        before = self.consumers["reports"].received[-1]
        self.store.failWrites = True
        advanceThrough(self.reactor, 61 * DAY)
        self.assertIn(20009, self.eventIDs())
        self.assertIs(self.consumers["reports"].received[-1], before)

    def test_stopCancelsPendingWork(self) -> None:
        """
        Stopping the resource leaves no delayed call behind.
        """
        self.server.validationDelay = 30
        resource = self.makeResource()
        resource.startService()
        self.reactor.advance(1)
        resource.stopService()
        self.reactor.advance(60)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_exportRetried(self) -> None:
        """
        When the store directory cannot be written, 20009 names it, the
        services keep their new certificates, and the next check writes
        the files.
        """
        blocker = self.mktemp()
        with open(blocker, "w") as stream:
            stream.write("not a folder")
        self.start(storeDirectory=blocker)
        self.assertEqual(self.eventIDs().count(20009), 2)
        self.assertFalse(self.consumers["reports"].received[-1].provisional)
        os.remove(blocker)
        advanceThrough(self.reactor, DAY)
        self.assertTrue(
            os.path.exists(os.path.join(blocker, "reports.example.test", "privkey.pem"))
        )
        self.assertEqual(self.eventIDs().count(20009), 2)


class HeldRunner:
    """
    A stand-in for the worker threads that runs most jobs at once but holds
    store writes until told.
    """

    HELD = ("saveRenewalState", "exportCertificate")

    def __init__(self) -> None:
        self.held: list[tuple[Any, tuple[Any, ...], Deferred[Any]]] = []

    def __call__(self, function: Any, *args: Any) -> Deferred[Any]:
        if function.__name__ not in self.HELD:
            return synchronously(function, *args)
        done: Deferred[Any] = Deferred()
        self.held.append((function, args, done))
        return done

    def names(self) -> list[str]:
        return [function.__name__ for function, _, _ in self.held]

    def releaseOne(self) -> None:
        function, args, done = self.held.pop(0)
        done.callback(function(*args))


class BackgroundWriteTests(ResourceTestCase):
    """
    Renewal state and exports are written by the workers, one at a time,
    and what waits for the resource waits for them.
    """

    def startHeld(self, **options: Any) -> tuple[LetsEncryptResource, HeldRunner]:
        self.server.refuse.add("reports.example.test")
        runner = HeldRunner()
        resource = self.makeResource(**options)
        resource.runInThread = runner
        resource.startService()
        self.addCleanup(self.stop, resource)
        for _ in range(20):
            self.reactor.advance(0.5)
        return resource, runner

    def releaseAll(self, runner: HeldRunner) -> list[tuple[str, Any]]:
        """
        Release the held writes one by one, letting the orders that wait
        for them go on, until none is left; at most one is ever waiting.

        @return: Each write's function name and first argument, in order.
        """
        released = []
        for _ in range(20):
            while runner.held:
                self.assertEqual(len(runner.held), 1, runner.names())
                released.append((runner.names()[0], runner.held[0][1][0]))
                runner.releaseOne()
            self.reactor.advance(0.5)
        return released

    def test_stateWrittenByWorkers(self) -> None:
        """
        A failed attempt's renewal state is written by the workers: until
        then the store has none and the resource has not settled.
        """
        resource, runner = self.startHeld()
        settled = resource.whenSettled()
        self.assertEqual(runner.names(), ["saveRenewalState"])
        self.assertIsNone(self.store.loadRenewalState(REPORTS))
        self.assertNoResult(settled)
        self.releaseAll(runner)
        self.successResultOf(settled)
        self.assertEqual(self.store.loadRenewalState(REPORTS)["failures"], 1)

    def test_writesOneAtATime(self) -> None:
        """
        Writes reach the workers one at a time, in the order they were
        made: each set's order under way, then the issued set's state
        before its export.
        """
        storeDirectory = self.mktemp()
        resource, runner = self.startHeld(storeDirectory=storeDirectory)
        order = self.releaseAll(runner)
        self.assertEqual(len(order), 5, order)
        self.assertEqual(order.count(("saveRenewalState", REPORTS)), 2)
        files = [write for write in order if write[1] in (FILES, storeDirectory)]
        self.assertEqual(
            files,
            [
                ("saveRenewalState", FILES),
                ("saveRenewalState", FILES),
                ("exportCertificate", storeDirectory),
            ],
        )
        self.assertTrue(os.path.exists(os.path.join(storeDirectory, "_".join(FILES))))

    def test_stopWaitsForWrites(self) -> None:
        """
        Stopping ends once the writes under way have ended.
        """
        resource, runner = self.startHeld()
        stopped = resource.stopService()
        self.assertNoResult(stopped)
        self.releaseAll(runner)
        self.successResultOf(stopped)
