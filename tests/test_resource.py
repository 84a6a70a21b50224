"""
Tests for L{letsencrypt_resource.resource.LetsEncryptResource}, driven by a
fake clock against the in-memory fake ACME server.
"""

from __future__ import annotations

import gc
import os
from typing import Any

from treq.testing import RequestTraversalAgent
from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.registry import Components
from zope.interface.verify import verifyObject

from letsencrypt_resource import owned as ownedModule
from letsencrypt_resource import provisioning as provisioningModule
from letsencrypt_resource import setloading
from letsencrypt_resource.acmeclient import certificateID
from letsencrypt_resource.certificates import CertifiedKey, bundleDigest
from letsencrypt_resource.interfaces import ICertificateConsumer
from letsencrypt_resource.keygen import generateKey
from letsencrypt_resource.keys import keyToPEM
from letsencrypt_resource.managed import ManagedCertificate
from letsencrypt_resource.policy import (
    EMERGENCY_RETRY_DELAY,
    FIRST_RETRY_DELAY,
    WARNING_REPEAT,
    emergencyTime,
)
from letsencrypt_resource.renewer import ACCOUNT_BUSY_WAIT, ORDER_LEASE, orderLease
from letsencrypt_resource.resource import (
    CHECK_INTERVAL,
    LetsEncryptResource,
)
from letsencrypt_resource.setloading import settingsFingerprint
from letsencrypt_resource.storage.directory import DirectoryStorage, InThisThread
from letsencrypt_resource.storage.interface import IStorage
from letsencrypt_resource.storage.memory import MemoryStorage
from letsencrypt_resource.storage.records import Records, certificateKey, renewalKey
from letsencrypt_resource.testing import (
    FakeACMEServer,
    MemoryStore,
    RecordingConsumer,
    advanceThrough,
    runUntilFired,
)
from tests.helpers import keyParsed, selfSigned
from tests.helpers.resourcecase import (
    ACME_URL,
    DAY,
    FILES,
    REPORTS,
    FailingSaves,
    HeldRunner,
    RefusingReactor,
    ResourceTestCase,
    resourceOptions,
    synchronously,
)
from tests.helpers.statedir import StateDirectory


class StartTests(ResourceTestCase):
    """
    What the resource does when it starts.
    """

    def test_interfaces(self) -> None:
        """
        The fakes provide the interfaces the resource relies on.
        """
        verifyObject(IStorage, self.store)
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
        per consumer as in use (20016); texts begin with their IDs.  The
        provisional certificates of the start-up are counted in its event
        (20208), not announced one by one.
        """
        self.start()
        self.assertEqual(self.eventIDs().count(20015), 2)
        self.assertEqual(self.eventIDs().count(20016), 3)
        self.assertEqual(self.eventIDs().count(20153), 0)
        self.assertEqual(
            self.eventTexts(20208),
            [
                "20208 Start-up put 3 services in service in 0.0 seconds: 0 on CA-issued "
                "certificates (0 stored certificates loaded), 3 on provisional ones; "
                "0 domain sets wait for a certificate."
            ],
        )
        for text in self.eventTexts(20016):
            self.assertTrue(text.startswith("20016 "), text)
        self.assertIn(
            "20016 Service reports-https now uses the CA-issued certificate for "
            "reports.example.test.",
            self.eventTexts(20016),
        )

    def test_failedLoadEndsStartUp(self) -> None:
        """
        A load that fails with an unexpected error still ends the start-up:
        event 20208 is logged once the sets are provisioned, and later
        events are logged, not counted for ever.
        """

        async def failing(loader: object, certificates: object) -> None:
            raise RuntimeError("the load failed")

        self.patch(setloading.SetLoader, "loadAll", failing)
        self.start()
        self.assertEqual(len(self.eventTexts(20208)), 1)
        self.assertEqual(self.eventIDs().count(20016), 3)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_stopEndsProvision(self) -> None:
        """
        A resource stopped while a reload's provision is under way puts no
        further set on a provisional certificate: its services are
        stopping.
        """
        resource = self.start()
        self.patch(provisioningModule, "PROVISION_BATCH", 1)
        added = [RecordingConsumer(f"{n}-https", (f"{n}.example.test",)) for n in "ab"]
        for consumer in added:
            self.registry.registerUtility(consumer, ICertificateConsumer, name=consumer.name)
        resource.reloadConsumers()
        before = [len(c.received) for c in added]
        resource.stopService()
        self.reactor.advance(0)
        self.assertEqual((before, [len(c.received) for c in added]), ([1, 0], [1, 0]))

    def test_accountRegisteredOnce(self) -> None:
        """
        One account is registered and kept in the store with its URL, and a
        restart reuses it.
        """
        resource = self.start()
        self.assertEqual(self.server.accountsCreated, 1)
        [acmeURL] = self.store.accountURLs(ACME_URL)
        url = self.store.loadAccount(acmeURL).url
        self.assertTrue(url.startswith("https://acme.test/account/"))
        resource.stopService()
        self.store.clear("certificates/")
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
        self.store.clear("certificates/")
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
        double, up to the emergency pace for a set still on its provisional
        certificate; success ends the retries.
        """
        self.server.refuse.add("www.example.test")
        self.start()
        advanceThrough(self.reactor, 4 * DAY)
        retries = self.server.orderTimes[2:]
        gaps = [b - a for a, b in zip(retries, retries[1:], strict=False)]
        self.assertNear(retries[0] - self.server.orderTimes[0], FIRST_RETRY_DELAY)
        self.assertNear(gaps[0], 2 * FIRST_RETRY_DELAY)
        self.assertNear(gaps[1], 4 * FIRST_RETRY_DELAY)
        self.assertNear(max(gaps), EMERGENCY_RETRY_DELAY)
        self.assertEqual(self.eventIDs().count(20017), len(retries) + 1)
        self.server.refuse.clear()
        advanceThrough(self.reactor, EMERGENCY_RETRY_DELAY)
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
        When nothing can be written, 20009 is logged, no order is placed,
        and the consumers keep the certificate they have.
        """
        self.start()
        before = self.consumers["reports"].received[-1]
        self.store.failWrites = True
        advanceThrough(self.reactor, 61 * DAY)
        self.assertIn(20009, self.eventIDs())
        self.assertIs(self.consumers["reports"].received[-1], before)
        self.assertEqual(self.server.ordersCreated, 2)

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


class BackgroundWriteTests(ResourceTestCase):
    """
    Renewal state and exports are written by the workers, one at a time,
    and what waits for the resource waits for them.
    """

    def startHeld(self, **options: Any) -> tuple[LetsEncryptResource, HeldRunner]:
        self.server.refuse.add("reports.example.test")
        runner = HeldRunner()
        resource = self.makeResource(**options)
        resource.runWrite = runner
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


class StoreFailureTests(ResourceTestCase):
    """
    Every write failure is event 20009 and is tried again; no order is
    placed whose result cannot be stored; services start regardless.
    """

    def ordersFor(self, domains: tuple[str, ...]) -> int:
        return sum(
            1
            for order in self.server.newOrders
            if {i.value for i in order.identifiers} == set(domains)
        )

    def unexpected(self) -> list[str]:
        return [formatEvent(e) for e in self.events if "log_failure" in e]

    def test_unstorableSetNeverOrdered(self) -> None:
        """
        A set whose certificate cannot be stored is never ordered: each
        attempt is 20009 and a failed attempt retried later, until it can
        be stored; other sets are issued meanwhile.
        """
        self.store.unwritable.add(frozenset(REPORTS))
        self.start()
        advanceThrough(self.reactor, 2 * 3600)
        self.assertEqual(self.ordersFor(REPORTS), 0)
        self.assertGreater(len(self.eventTexts(20009)), 1)
        self.assertIn("reports.example.test", self.eventTexts(20009)[0])
        self.assertIn(20160, self.eventIDs())
        self.assertTrue(self.consumers["reports"].received[-1].provisional)
        self.assertFalse(self.consumers["files"].received[-1].provisional)
        self.store.unwritable.clear()
        advanceThrough(self.reactor, EMERGENCY_RETRY_DELAY)
        self.assertEqual(self.ordersFor(REPORTS), 1)
        self.assertFalse(self.consumers["reports"].received[-1].provisional)

    def test_signerNotSavedServicesStart(self) -> None:
        """
        When nothing can be written at the first start, every service
        still gets its provisional certificate, the signer's write is
        20009 with no traceback, and it is saved once writes work (20185).
        """
        self.store.failWrites = True
        resource = self.makeResource()
        resource.startService()
        self.addCleanup(self.stop, resource)
        self.reactor.advance(0)
        for consumer in self.consumers.values():
            self.assertTrue(consumer.received[-1].provisional)
        self.assertTrue(any("the provisional signer" in text for text in self.eventTexts(20009)))
        self.assertEqual(self.unexpected(), [])
        self.assertIsNone(self.store.signer)
        self.store.failWrites = False
        advanceThrough(self.reactor, EMERGENCY_RETRY_DELAY)
        self.assertIsNotNone(self.store.signer)
        self.assertIn(20185, self.eventIDs())
        for consumer in self.consumers.values():
            self.assertFalse(consumer.received[-1].provisional)

    def test_signerNotSavedInStateDirectory(self) -> None:
        """
        The same with a real state directory where the signer's file
        cannot be written: 20009 names it, services start, certificates
        are issued and stored, and the signer is saved once it can be.
        """
        state = os.path.abspath(self.mktemp())
        obstacle = os.path.join(state, "provisional-signer.pem")
        os.makedirs(obstacle)
        self.store = DirectoryStorage(state, self.reactor, workers=InThisThread())
        self.start()
        [text] = self.eventTexts(20009)
        self.assertIn(obstacle, text)
        for consumer in self.consumers.values():
            self.assertFalse(consumer.received[-1].provisional)
        os.rmdir(obstacle)
        advanceThrough(self.reactor, FIRST_RETRY_DELAY)
        self.assertTrue(os.path.isfile(obstacle))
        self.assertEqual(self.unexpected(), [])

    def test_certificateNotSavedServedAndRetried(self) -> None:
        """
        A certificate issued but not saved is put in service all the same,
        and its write is tried again instead of a new order; 20015 follows
        once it is stored.
        """
        self.store = FailingSaves()
        self.store.failing.add("saveCertificate")
        self.start()
        self.assertFalse(self.consumers["reports"].received[-1].provisional)
        self.assertIn(20009, self.eventIDs())
        self.assertNotIn(20017, self.eventIDs())
        self.assertNotIn(20015, self.eventIDs())
        advanceThrough(self.reactor, 3 * 3600)
        self.assertEqual(self.server.ordersCreated, 2)
        self.store.failing.clear()
        advanceThrough(self.reactor, CHECK_INTERVAL)
        self.assertEqual(self.eventIDs().count(20015), 2)
        self.assertEqual(
            self.store.loadCertificate(REPORTS).certificate,
            self.consumers["reports"].received[-1].certificate,
        )
        self.assertEqual(self.server.ordersCreated, 2)

    def test_stateWriteRetried(self) -> None:
        """
        A renewal state that cannot be saved is saved once it can be,
        though nothing else changes that would write it again.
        """
        self.store = FailingSaves()
        self.store.failing.add("saveRenewalState")
        self.start()
        self.assertIn(20009, self.eventIDs())
        self.assertIsNone(self.store.loadRenewalState(REPORTS))
        self.store.failing.clear()
        advanceThrough(self.reactor, EMERGENCY_RETRY_DELAY)
        self.assertIsNotNone(self.store.loadRenewalState(REPORTS))
        self.assertIsNotNone(self.store.loadRenewalState(FILES))

    def test_lateFailureWakesUp(self) -> None:
        """
        A write that fails after its attempt has ended, as an export in a
        worker thread does, is tried again after the first retry delay
        (20185), not only at the next regular check, even when it is the
        only failed write.
        """
        for name in ("files", "files-ftps"):
            consumer = self.consumers.pop(name)
            self.registry.unregisterUtility(consumer, ICertificateConsumer, name)
        blocker = self.mktemp()
        with open(blocker, "w") as stream:
            stream.write("not a folder")
        runner = HeldRunner()
        runner.HELD = ("exportCertificate",)
        resource = self.makeResource(storeDirectory=blocker)
        resource.runInThread = runner
        resource.startService()
        self.addCleanup(self.stop, resource)
        for _ in range(20):
            self.reactor.advance(0.5)
        self.assertFalse(self.consumers["reports"].received[-1].provisional)
        self.assertEqual(runner.names(), ["exportCertificate"])
        runner.releaseOne()
        self.assertEqual(self.eventIDs().count(20009), 1)
        os.remove(blocker)
        runner.HELD = ()
        advanceThrough(self.reactor, 2 * FIRST_RETRY_DELAY)
        self.assertEqual(self.eventIDs().count(20185), 1)
        with open(os.path.join(blocker, "reports.example.test", "cert.pem"), "rb") as stream:
            self.assertEqual(stream.read(), self.consumers["reports"].received[-1].certificatePEM)
        self.assertEqual(self.server.ordersCreated, 1)

    def test_retryDoesNotOverwriteNewer(self) -> None:
        """
        A failed write is not tried again behind a newer write of the same
        thing still under way (it would put the older data back): the
        newer one is kept, and its success ends the failure (20185);
        other failed writes are tried again as usual.
        """
        self.store = FailingSaves()
        self.store.failing.add("saveRenewalState")
        resource = self.start()
        self.assertIsNone(self.store.loadRenewalState(REPORTS))
        self.store.failing.clear()
        runner = HeldRunner()
        resource.runWrite = runner
        managed = resource.managed[frozenset(REPORTS)]
        managed.ariPick = 0.25
        resource.saveState(managed)
        self.reactor.advance(FIRST_RETRY_DELAY)
        while runner.held:
            runner.releaseOne()
            self.reactor.advance(0)
        self.assertEqual(self.store.loadRenewalState(REPORTS)["ari_pick"], 0.25)
        self.assertIsNotNone(self.store.loadRenewalState(FILES))
        self.assertEqual(len(self.eventTexts(20185)), 2)
        self.assertFalse(resource._writes.retries._unwritten)

    def test_accountLostAndUnwritable(self) -> None:
        """
        When the CA forgot the account and the store cannot take the
        change, the attempt is a failed one, retried (20160), with 20009
        and no traceback; once writes work, a new account is registered.
        """
        self.store = FailingSaves()
        self.start()
        old = self.consumers["reports"].received[-1]
        self.server.forgetAccounts()
        self.store.failing.add("saveAccount")
        advanceThrough(self.reactor, 61 * DAY)
        self.assertIs(self.consumers["reports"].received[-1], old)
        self.assertTrue(any("the ACME account" in t for t in self.eventTexts(20009)))
        self.assertIn(20160, self.eventIDs())
        self.assertEqual(self.unexpected(), [])
        self.store.failing.clear()
        advanceThrough(self.reactor, CHECK_INTERVAL)
        self.assertEqual(self.server.accountsCreated, 2)
        self.assertIsNot(self.consumers["reports"].received[-1], old)


class SavedWaitTests(ResourceTestCase):
    """
    Saved waits are capped at start, and the emergency threshold wins over
    a back-off.
    """

    def saveState(self, domains: tuple[str, ...], **fields: Any) -> None:
        state = {"settings": settingsFingerprint(resourceOptions())}
        state.update(fields)
        self.store.saveRenewalState(domains, state)

    def reportsOrders(self) -> list[float]:
        return [
            when
            for when, order in zip(self.server.orderTimes, self.server.newOrders, strict=False)
            if {i.value for i in order.identifiers} == set(REPORTS)
        ]

    def test_futureNextAttemptCapped(self) -> None:
        """
        A saved next attempt three years ahead does not hold a provisional
        set back: it is capped at the retry wait for the saved failures,
        with 20187, and so is the next renewal-information check.
        """
        now = self.reactor.seconds()
        far = now + 3 * 365 * DAY
        self.saveState(REPORTS, failures=3, next_attempt=far, ari_next_check=far)
        resource = self.start()
        self.assertEqual(self.reportsOrders(), [])
        [text] = self.eventTexts(20187)
        self.assertIn("reports.example.test", text)
        managed = resource.managed[frozenset(REPORTS)]
        self.assertLessEqual(managed.ariNextCheck, now + CHECK_INTERVAL)
        advanceThrough(self.reactor, 4 * FIRST_RETRY_DELAY)
        self.assertEqual(len(self.reportsOrders()), 1)
        self.assertFalse(self.consumers["reports"].received[-1].provisional)

    def test_futureNextAttemptCappedForIssued(self) -> None:
        """
        With a stored certificate that is due, a saved next attempt three
        years ahead is capped at the back-off for the saved failures.
        """
        resource = self.start()
        resource.stopService()
        self.reactor.advance(61 * DAY)
        now = self.reactor.seconds()
        self.saveState(REPORTS, failures=5, next_attempt=now + 3 * 365 * DAY)
        self.start()
        self.assertEqual(len(self.reportsOrders()), 1)
        advanceThrough(self.reactor, 16 * FIRST_RETRY_DELAY)
        self.assertEqual(len(self.reportsOrders()), 2)
        self.assertIn(20187, self.eventIDs())

    def test_nonFiniteWindowIgnored(self) -> None:
        """
        A saved ARI window that is not finite (JSON takes NaN) is dropped:
        the set is renewed at two thirds of its lifetime, and nothing
        fails.
        """
        self.start().stopService()
        state = self.store.loadRenewalState(REPORTS)
        state["ari_window"] = [float("nan"), float("nan")]
        self.store.saveRenewalState(REPORTS, state)
        resource = self.start()
        self.assertIsNone(resource.managed[frozenset(REPORTS)].ariWindow)
        advanceThrough(self.reactor, 61 * DAY)
        self.assertEqual(len(self.reportsOrders()), 2)
        self.assertEqual([e for e in self.events if "log_failure" in e], [])

    def test_unusableWindowDropped(self) -> None:
        """
        A saved ARI window that is not finite, or ends before it starts,
        is dropped; the rest of the state is kept.
        """
        nan, inf = float("nan"), float("inf")
        for window in ([nan, nan], [0.0, inf], [-inf, 0.0], [2e9, 1.9e9]):
            certificate = ManagedCertificate(REPORTS, "current")
            certificate.restore({"settings": "current", "failures": 2, "ari_window": window})
            self.assertIsNone(certificate.ariWindow, window)
            self.assertEqual(certificate.failures, 2)
        certificate.restore({"ari_window": [1.9e9, 2e9]})
        self.assertEqual(certificate.ariWindow, (1.9e9, 2e9))

    def test_restartOnProvisionalAtEmergencyPace(self) -> None:
        """
        A restart with a long saved back-off (many failures) does not
        leave a provisional set waiting past the emergency pace.
        """
        now = self.reactor.seconds()
        self.saveState(REPORTS, failures=20, next_attempt=now + CHECK_INTERVAL, last_failure=now)
        self.start()
        self.assertEqual(self.reportsOrders(), [])
        advanceThrough(self.reactor, EMERGENCY_RETRY_DELAY)
        self.assertEqual(len(self.reportsOrders()), 1)

    def test_caRetryAfterKeptAcrossRestart(self) -> None:
        """
        The CA's Retry-After still holds after a restart, up to the check
        interval.
        """
        now = self.reactor.seconds()
        self.saveState(
            REPORTS,
            failures=1,
            next_attempt=now + 7200,
            last_failure=now,
            hold_until=now + 7200,
        )
        self.start()
        advanceThrough(self.reactor, 7199)
        self.assertEqual(self.reportsOrders(), [])
        advanceThrough(self.reactor, 2)
        self.assertEqual(len(self.reportsOrders()), 1)

    def test_emergencyWinsOverBackOff(self) -> None:
        """
        Renewals failing since their due time back off to a day; once the
        certificate is inside its emergency window, an attempt comes at
        once, then at least every hour.
        """
        self.start()
        issued = self.consumers["reports"].received[-1]
        self.server.refuse.add("reports.example.test")
        emergency = emergencyTime(issued.notBefore.timestamp(), issued.notAfter.timestamp())
        advanceThrough(self.reactor, emergency + 2 * DAY - self.reactor.seconds())
        before = [t for t in self.reportsOrders() if t < emergency]
        after = [t for t in self.reportsOrders() if t >= emergency]
        self.assertNear(before[-1] - before[-2], CHECK_INTERVAL)
        self.assertNear(after[0], emergency)
        gaps = [b - a for a, b in zip(after, after[1:], strict=False)]
        self.assertLessEqual(max(gaps), EMERGENCY_RETRY_DELAY + 1)


class ReplacesTests(ResourceTestCase):
    """
    Renewals that name the certificate they replace (RFC 9773).
    """

    def setUp(self) -> None:
        super().setUp()
        self.server.offerRenewalInfo = True

    def renewReports(self, resource: LetsEncryptResource) -> None:
        only = [resource.managed[frozenset(REPORTS)]]
        runUntilFired(self.reactor, resource.check(force=True, only=only))

    def test_anyRefusalRetriedWithout(self) -> None:
        """
        When the CA refuses an order naming the replaced certificate, with
        any problem (here pebble's serverInternal, then another account's
        unauthorized), the order is sent again at once without it (20186),
        and the renewal succeeds.
        """
        resource = self.start()
        for status, code in ((500, "serverInternal"), (403, "unauthorized")):
            old = self.consumers["reports"].received[-1]
            self.server.replacesRefusals.append((status, code))
            self.renewReports(resource)
            first, second = self.server.newOrders[-2:]
            self.assertEqual(first.replaces, certificateID(old.certificate))
            self.assertIsNone(second.replaces)
            self.assertIsNot(self.consumers["reports"].received[-1], old)
        self.assertEqual(self.eventIDs().count(20186), 2)
        self.assertNotIn(20017, self.eventIDs())

    def test_replacesAfterRestart(self) -> None:
        """
        Who ordered the certificate is kept in the renewal state: after a
        restart, a renewal by the same account still names it.
        """
        resource = self.start()
        old = self.consumers["reports"].received[-1]
        resource.stopService()
        resource = self.start()
        self.renewReports(resource)
        self.assertEqual(self.server.newOrders[-1].replaces, certificateID(old.certificate))

    def test_noReplacesForAnotherAccount(self) -> None:
        """
        A certificate ordered by another account (here the account file
        was lost, so a new account is registered) is not named.
        """
        resource = self.start()
        resource.stopService()
        self.store.clear("accounts/")
        resource = self.start()
        self.renewReports(resource)
        self.assertEqual(self.server.accountsCreated, 2)
        self.assertIsNone(self.server.newOrders[-1].replaces)

    def test_noReplacesWhenUnknown(self) -> None:
        """
        When the renewal state does not say who ordered the certificate
        (saved by an earlier version), it is not named.
        """
        resource = self.start()
        resource.stopService()
        state = self.store.loadRenewalState(REPORTS)
        del state["ordered_by"]
        self.store.saveRenewalState(REPORTS, state)
        resource = self.start()
        self.renewReports(resource)
        self.assertIsNone(self.server.newOrders[-1].replaces)

    def test_noReplacesForExpired(self) -> None:
        """
        Once the certificate in service has expired, renewals no longer
        name it.
        """
        self.start()
        old = self.consumers["reports"].received[-1]
        self.server.refuse.add("reports.example.test")
        advanceThrough(self.reactor, old.notAfter.timestamp() - self.reactor.seconds() + 1)
        expiredAt = len(self.server.newOrders)
        self.server.refuse.clear()
        advanceThrough(self.reactor, EMERGENCY_RETRY_DELAY)
        self.assertIsNot(self.consumers["reports"].received[-1], old)
        later = self.server.newOrders[expiredAt:]
        self.assertTrue(later)
        self.assertEqual([o.replaces for o in later], [None] * len(later))


class ExpiryWarningTests(ResourceTestCase):
    """
    Expiry warnings (20114) at a bounded rate.
    """

    def test_boundedRate(self) -> None:
        """
        A certificate whose renewals keep failing is warned about when it
        crosses the warning threshold and each later one (7.5, 7, 3.75, 3
        and 1 days left, expiry), and otherwise at most every 6 hours,
        though checks come every hour.
        """
        times: list[float] = []

        def record(event: dict[str, Any]) -> None:
            if event.get("event_id") == 20114:
                times.append(self.reactor.seconds())

        globalLogPublisher.addObserver(record)
        self.addCleanup(globalLogPublisher.removeObserver, record)
        self.start()
        issued = self.consumers["reports"].received[-1]
        self.server.refuse.add("reports.example.test")
        notAfter = issued.notAfter.timestamp()
        advanceThrough(self.reactor, notAfter + DAY - self.reactor.seconds())
        marks = [notAfter - days * DAY for days in (15, 7.5, 7, 3.75, 3, 1, 0)]
        for mark in marks:
            self.assertTrue(any(mark <= t <= mark + EMERGENCY_RETRY_DELAY + 1 for t in times), mark)
        gaps = [
            (a, b) for a, b in zip(times, times[1:], strict=False) if b - a < WARNING_REPEAT - 1
        ]
        for a, b in gaps:
            self.assertTrue(any(a < mark <= b for mark in marks), (a, b))
        self.assertLessEqual(len(times), 16 * 4 + len(marks))


class RecordingPool:
    """
    A connection pool that counts its closings, each ending when C{closing}
    fires.
    """

    def __init__(self) -> None:
        self.closed = 0
        self.closing: Deferred[None] = Deferred()

    def closeCachedConnections(self) -> Deferred[None]:
        self.closed += 1
        return self.closing


class HTTPPoolTests(SynchronousTestCase):
    """
    The resource owns the HTTP client it makes, as it owns its threads: made
    from the options, its connections closed as the service stops.
    """

    def setUp(self) -> None:
        self.made: list[tuple[Any, Any]] = []
        self.pool = RecordingPool()
        self.patch(ownedModule, "makeHTTPClient", self.makeHTTPClient)
        self.reactor = MemoryReactorClock()

    def makeHTTPClient(self, reactor: Any, trusted: Any) -> tuple[Any, Any]:
        self.made.append((reactor, trusted))
        return object(), self.pool

    def makeResource(self, httpClient: Any = None, **options: Any) -> LetsEncryptResource:
        return LetsEncryptResource(
            resourceOptions(challengeSite=False, **options),
            Components(),
            MemoryStore(),
            self.reactor,
            httpClient,
            runInThread=synchronously,
            automatic=False,
        )

    def test_ownPoolClosedAtStop(self) -> None:
        """
        Without an HTTP client given, the resource makes one trusting the
        system's store, and stopping ends once its pool's connections are
        closed.
        """
        resource = self.makeResource()
        self.assertEqual(self.made, [(self.reactor, None)])
        resource.startService()
        self.assertEqual(self.pool.closed, 0)
        stopped = resource.stopService()
        self.assertEqual(self.pool.closed, 1)
        self.assertNoResult(stopped)
        self.pool.closing.callback(None)
        self.successResultOf(stopped)

    def test_trustsTheCAFile(self) -> None:
        """
        The client the resource makes trusts the certificates of
        C{acmeCAFile}, and a file that holds none is refused.
        """
        path = self.mktemp()
        with open(path, "wb") as stream:
            stream.write(selfSigned(("ca.example.test",)).certificatePEM)
        self.makeResource(acmeCAFile=path)
        [(_, trusted)] = self.made
        self.assertEqual([c.getSubject().commonName for c in trusted], [b"ca.example.test"])
        with open(path, "wb") as stream:
            stream.write(b"no certificate")
        self.assertRaises(ValueError, self.makeResource, acmeCAFile=path)

    def test_givenClientLeftOpen(self) -> None:
        """
        An HTTP client given to the resource is its caller's: the resource
        makes none and closes nothing.
        """
        agent = RequestTraversalAgent(FakeACMEServer(self.reactor))
        resource = self.makeResource(httpClient=agent)
        resource.startService()
        self.successResultOf(resource.stopService())
        self.assertEqual((self.made, self.pool.closed), ([], 0))


class QueuedWorkers:
    """
    Workers for a L{DirectoryStorage} that hold every job until told, to
    show what waits for them.
    """

    def __init__(self) -> None:
        self.jobs: list[tuple[Any, tuple[Any, ...], Deferred[Any]]] = []

    def run(self, function: Any, *args: Any) -> Deferred[Any]:
        done: Deferred[Any] = Deferred()
        self.jobs.append((function, args, done))
        return done

    def runAll(self) -> int:
        """
        Run the jobs held, and those they start, until none is left.

        @return: How many ran.
        """
        count = 0
        while self.jobs:
            function, args, done = self.jobs.pop(0)
            maybeDeferred(function, *args).chainDeferred(done)
            count += 1
        return count


class SkewedClock:
    """
    A clock that reads C{skew} seconds ahead of C{reactor}: what a store's
    leases are timed by, to look at them ahead of time.
    """

    def __init__(self, reactor: MemoryReactorClock):
        self.reactor = reactor
        self.skew = 0.0

    def seconds(self) -> float:
        return self.reactor.seconds() + self.skew


FILES_SET = frozenset(FILES)
REPORTS_SET = frozenset(REPORTS)


class HeldLoads(MemoryStorage):
    """
    A L{MemoryStorage} whose loads wait until the test lets them go.

    @ivar held: The loads waiting, oldest first: their keys and Deferreds.
    """

    def __init__(self, shared: Any) -> None:
        super().__init__(shared)
        self.held: list[tuple[str, Deferred[bytes | None]]] = []

    def load(self, key: str) -> Deferred[bytes | None]:
        waiting: Deferred[bytes | None] = Deferred()
        self.held.append((key, waiting))
        return waiting

    def release(self) -> None:
        """
        Let the oldest load waiting read its value.
        """
        key, waiting = self.held.pop(0)
        super().load(key).chainDeferred(waiting)


class FailingLoads(MemoryStorage):
    """
    A L{MemoryStorage} whose loads of one key fail with an unexpected error.
    """

    def __init__(self, shared: Any, key: str) -> None:
        super().__init__(shared)
        self._failing = key

    def load(self, key: str) -> Deferred[bytes | None]:
        if key == self._failing:
            return fail(RuntimeError("unexpected"))
        return super().load(key)


class BatchedLoads(MemoryStorage):
    """
    A L{MemoryStorage} that records the keys of each C{loadMany}, and fails
    a C{load}.

    @ivar batches: The keys of each C{loadMany}, in turn.
    """

    def __init__(self, shared: Any) -> None:
        super().__init__(shared)
        self.batches: list[list[str]] = []

    def loadMany(self, keys: Any) -> Deferred[dict[str, bytes | None]]:
        self.batches.append(list(keys))
        return MemoryStorage(self._shared).loadMany(keys)

    def load(self, key: str) -> Deferred[bytes | None]:
        return fail(RuntimeError(f"{key} was loaded alone"))


class StorageWiringTests(ResourceTestCase):
    """
    The resource keeps its state through L{Records} over an L{IStorage}:
    reads and writes are awaited, orders run under leases, challenges are
    published, and certificates other nodes store are taken.
    """

    def resourceOn(self, storage: IStorage) -> LetsEncryptResource:
        """
        A resource on C{storage} instead of L{store}.
        """
        return LetsEncryptResource(
            resourceOptions(),
            self.registry,
            storage,
            self.reactor,
            RequestTraversalAgent(self.server),
            runInThread=synchronously,
        )

    def issue(self, domains: tuple[str, ...], validity: float = 90 * DAY) -> CertifiedKey:
        """
        A certificate of the fake CA for C{domains} and a new key.
        """
        key = generateKey("ecdsa-p256")
        chain = self.server.issue(key.public_key(), domains, validity)
        return CertifiedKey.fromParts(key, chain)

    def otherNode(self) -> MemoryStorage:
        """
        Another node on the test's storage.
        """
        return MemoryStorage(self.store.shared)

    def test_oldStoreRefused(self) -> None:
        """
        A store of the old synchronous kind is refused with a C{TypeError}
        that names L{IStorage}.
        """
        error = self.assertRaises(
            TypeError,
            LetsEncryptResource,
            resourceOptions(),
            self.registry,
            StateDirectory(self.mktemp()),
            self.reactor,
            RequestTraversalAgent(self.server),
        )
        self.assertIn("IStorage", str(error))

    def test_boundedLoads(self) -> None:
        """
        Loading reads the records of one batch of domain sets at a time
        (L{setloading.LOAD_JOBS}), the others waiting their turn, and loads
        them all: a batch is not read while another is taken back, so the
        storage's reader thread and the reactor's do not take turns with
        the interpreter at every system call of the reader.
        """
        self.patch(setloading, "LOAD_BATCH", 1)
        storage = HeldLoads(self.store.shared)
        resource = self.resourceOn(storage)
        loading = resource.load()
        waiting = []
        while storage.held:
            waiting.append(len(storage.held))
            storage.release()
        self.successResultOf(loading)
        self.assertEqual((waiting, set(resource.managed)), ([1] * 4, {FILES_SET, REPORTS_SET}))

    def test_collectionPausedWhileLoading(self) -> None:
        """
        The garbage collector's automatic collections pause while the
        domain sets load, and resume once they have loaded: they went over
        the whole growing heap again and again.
        """
        self.addCleanup(gc.enable)
        storage = HeldLoads(self.store.shared)
        resource = self.resourceOn(storage)
        loading = resource.load()
        paused = gc.isenabled()
        while storage.held:
            storage.release()
        self.successResultOf(loading)
        self.assertEqual((paused, gc.isenabled()), (False, True))

    def test_batchedLoads(self) -> None:
        """
        Loading reads the records of L{setloading.LOAD_BATCH} domain sets
        together, by one C{loadMany}, and puts their certificates in
        service.
        """
        self.patch(setloading, "LOAD_BATCH", 2)
        storage = BatchedLoads(self.store.shared)
        stored = self.issue(REPORTS)
        self.successResultOf(Records(storage).saveCertificate(REPORTS, stored))
        resource = self.resourceOn(storage)
        self.successResultOf(resource.load())
        keys = [f(domains) for domains in (FILES, REPORTS) for f in (renewalKey, certificateKey)]
        self.assertEqual(
            (storage.batches, [c.certificate for c in self.consumers["reports"].received]),
            ([keys], [stored.certificate]),
        )

    def test_checkedCertificateKeyNotParsed(self) -> None:
        """
        A stored certificate whose renewal state records its digest, as the
        state saved while it is in service does, is put in service without
        its key being parsed or checked (L{CertifiedKey.keyChecked}); one
        changed since (here a key that does not match) is parsed and checked
        whole, and refused.
        """
        stored, other = self.issue(REPORTS), self.issue(FILES)
        records = Records(self.store)
        for domains, issued in ((REPORTS, stored), (FILES, other)):
            state = {"certificate_digest": bundleDigest(issued.toPEM())}
            self.successResultOf(records.saveRenewalState(domains, state))
        mismatched = CertifiedKey(stored.key, other.certificate, other.chain)
        self.successResultOf(records.saveCertificate(REPORTS, stored))
        self.successResultOf(records.saveCertificate(FILES, mismatched))
        resource = self.makeResource()
        self.successResultOf(resource.load())
        [taken] = self.consumers["reports"].received
        saved = resource.managed[frozenset(REPORTS)].state()["certificate_digest"]
        self.assertEqual(
            (
                taken.keyChecked,
                keyParsed(taken),
                taken.certificate,
                saved,
                self.consumers["files"].received,
            ),
            (True, False, stored.certificate, bundleDigest(stored.toPEM()), []),
        )

    def test_loadErrorLoadsTheRest(self) -> None:
        """
        An unexpected error while loading one domain set is logged, and the
        sets after it are loaded.
        """
        self.patch(setloading, "LOAD_JOBS", 1)
        storage = FailingLoads(self.store.shared, renewalKey(FILES))
        stored = self.issue(REPORTS)
        self.successResultOf(Records(storage).saveCertificate(REPORTS, stored))
        resource = self.resourceOn(storage)
        self.successResultOf(resource.load())
        self.assertEqual(
            (
                [c.certificate for c in self.consumers["reports"].received],
                len(self.flushLoggedErrors(RuntimeError)),
            ),
            ([stored.certificate], 1),
        )

    def test_readsInWorkers(self) -> None:
        """
        With the state directory, the stored state is read by the storage's
        workers only: until they run, nothing is loaded, no provisional
        certificate is made and nothing is ordered; then the stored
        certificate is put in service.
        """
        state = os.path.abspath(self.mktemp())
        stored = self.issue(REPORTS)
        StateDirectory(state).saveCertificate(REPORTS, stored)
        workers = QueuedWorkers()
        self.store = DirectoryStorage(state, self.reactor, workers=workers)
        resource = self.makeResource()
        resource.startService()
        self.addCleanup(self.stop, resource)
        self.reactor.advance(1)
        self.assertTrue(workers.jobs)
        self.assertEqual([c.received for c in self.consumers.values()], [[], [], []])
        self.assertEqual(self.server.ordersCreated, 0)
        for _ in range(50):
            workers.runAll()
            self.reactor.advance(1)
        self.assertEqual(self.consumers["reports"].received[0].certificate, stored.certificate)

    def test_orderUnderLease(self) -> None:
        """
        An order runs under its set's lease: while it validates, another
        node cannot take it, and the order's writes are fenced by it; once
        the order has ended, it is free.
        """
        other = self.otherNode()
        seen: list[object] = []

        def validate(token: str) -> str | None:
            if resource.managed[frozenset(REPORTS)].lease is not None:
                seen.append(self.successResultOf(other.lease(orderLease(REPORTS), 60)))
            return resource.responder.lookup(token)

        resource = self.makeResource()
        self.server.validate = validate
        resource.startService()
        self.addCleanup(self.stop, resource)
        runUntilFired(self.reactor, resource.whenSettled())
        self.assertTrue(seen)
        self.assertEqual(set(seen), {None})
        self.assertFalse(self.consumers["reports"].received[-1].provisional)
        self.assertIsNotNone(self.successResultOf(other.lease(orderLease(REPORTS), 60)))

    def test_leaseHeldElsewhere(self) -> None:
        """
        A set whose lease another node holds is not ordered (20199) and
        waits for that lease's time (see tests.test_orderlease); the other
        sets are ordered.
        """
        lease = self.successResultOf(self.otherNode().lease(orderLease(REPORTS), 10 * DAY))
        self.start()
        self.assertEqual(len(self.eventTexts(20199)), 1)
        self.assertIn("reports.example.test", self.eventTexts(20199)[0])
        self.assertTrue(self.consumers["reports"].received[-1].provisional)
        self.assertFalse(self.consumers["files"].received[-1].provisional)
        self.assertNotIn(20017, self.eventIDs())
        self.reactor.advance(ORDER_LEASE - 1)
        self.assertEqual(len(self.eventTexts(20199)), 1)
        self.successResultOf(lease.release())
        advanceThrough(self.reactor, DAY)
        self.assertFalse(self.consumers["reports"].received[-1].provisional)

    def test_leaseRenewedWhileOrdering(self) -> None:
        """
        An order kept pending past a third of L{ORDER_LEASE} has its lease
        renewed while it runs: once the lease's first term has passed,
        another node still cannot take it.  The renewal keeps the token, so
        that the order's fenced writes are taken and its certificate
        issued.
        """
        clock = SkewedClock(self.reactor)
        self.store = MemoryStore(clock)
        other = self.otherNode()
        self.server.validationDelay = ORDER_LEASE / 3 + 50
        seen: list[tuple[float, int, object]] = []

        def validate(token: str) -> str | None:
            lease = resource.managed[frozenset(REPORTS)].lease
            if lease is not None and not seen:
                # Validated ORDER_LEASE / 3 + 50 after the lease was taken:
                # look at the lease 50 seconds after its first term ended.
                clock.skew = 2 * ORDER_LEASE / 3
                taken = self.successResultOf(other.lease(orderLease(REPORTS), 60))
                clock.skew = 0.0
                seen.append((self.reactor.seconds() - started, lease.token, taken))
            return resource.responder.lookup(token)

        resource = self.makeResource()
        self.server.validate = validate
        started = self.reactor.seconds()
        resource.startService()
        self.addCleanup(self.stop, resource)
        runUntilFired(self.reactor, resource.whenSettled())
        [(after, token, taken)] = seen
        self.assertEqual((after, taken), (ORDER_LEASE / 3 + 50, None))
        self.assertFalse(self.consumers["reports"].received[-1].provisional)
        self.assertEqual([i for i in self.eventIDs() if i in (20189, 20200)], [])
        newer = self.successResultOf(other.lease(orderLease(REPORTS), 60))
        self.assertEqual(newer.token, token + 1)

    def test_leaseLostBeforeFinalizing(self) -> None:
        """
        An order whose lease passed to another node while it validated is
        abandoned before finalizing (20200): no certificate is issued for
        it, and it is no failed attempt.
        """
        other = self.otherNode()

        def validate(token: str) -> str | None:
            managed = resource.managed[frozenset(REPORTS)]
            if managed.lease is not None:
                self.successResultOf(managed.lease.release())
                self.successResultOf(other.lease(orderLease(REPORTS), 60))
            return resource.responder.lookup(token)

        resource = self.makeResource()
        self.server.validate = validate
        resource.startService()
        self.addCleanup(self.stop, resource)
        runUntilFired(self.reactor, resource.whenSettled())
        [text] = self.eventTexts(20200)
        self.assertIn("reports.example.test", text)
        self.assertTrue(self.consumers["reports"].received[-1].provisional)
        self.assertNotIn(20017, self.eventIDs())

    def publishedWhileValidating(self) -> tuple[LetsEncryptResource, list[str | None]]:
        """
        Start a resource and let it settle, noting what the storage holds
        for each challenge at the moment the CA validates it.
        """
        published: list[str | None] = []
        resource = self.makeResource()

        def validate(token: str) -> str | None:
            published.append(self.store.loadChallenge(token))
            return resource.responder.lookup(token)

        self.server.validate = validate
        resource.startService()
        self.addCleanup(self.stop, resource)
        runUntilFired(self.reactor, resource.whenSettled())
        return resource, published

    def test_challengesPublished(self) -> None:
        """
        Each challenge is in the storage when the CA validates it, with its
        key authorization, and removed once validated.
        """
        resource, published = self.publishedWhileValidating()
        self.assertEqual(len(published), 3)
        self.assertNotIn(None, published)
        self.assertEqual(self.store.keys("challenges/"), [])

    def test_exclusiveStorageNoChallengesPublished(self) -> None:
        """
        A storage that only this process uses (the state directory, under
        its lock) gets no challenge token, and the challenge site looks
        nothing up in it: nobody else could answer or read them.
        """
        self.patch(self.store, "exclusive", True)
        resource, published = self.publishedWhileValidating()
        self.assertEqual(published, [None, None, None])
        self.assertEqual(self.store.keys("challenges/"), [])
        self.assertIsNone(resource.responder._shared)
        self.assertNotIn(20017, self.eventIDs())

    def test_storageWithoutExclusive(self) -> None:
        """
        An embedder's storage written before L{IStorage.exclusive}, without
        that attribute, is taken as shared: the resource is built, and its
        challenges are published and looked up there.
        """
        exclusive = MemoryStorage.exclusive
        del MemoryStorage.exclusive  # type: ignore[misc]
        self.addCleanup(setattr, MemoryStorage, "exclusive", exclusive)
        resource = self.makeResource()
        self.assertIsNotNone(resource.responder._shared)
        self.assertTrue(resource.records.sharesChallenges)

    def test_certificateFromAnotherNode(self) -> None:
        """
        A certificate another node stores for a set is put in service when
        it passes the checks of a stored certificate and ends later than
        the one in service; one for other names, one with another key's
        certificate, or an older one is not.
        """
        resource = self.start()
        other = Records(self.otherNode())
        before = self.consumers["reports"].received[-1]
        self.reactor.advance(60)
        wrongNames = self.issue(("other.example.test",))
        self.successResultOf(other.saveCertificate(REPORTS, wrongNames))
        older = self.issue(REPORTS, 30 * DAY)
        self.successResultOf(other.saveCertificate(REPORTS, older))
        mismatched = self.issue(REPORTS)
        pem = keyToPEM(generateKey("ecdsa-p256")) + mismatched.fullchainPEM
        self.successResultOf(other.storage.store(certificateKey(REPORTS), pem))
        self.assertIs(self.consumers["reports"].received[-1], before)
        newer = self.issue(REPORTS)
        self.successResultOf(other.saveCertificate(REPORTS, newer))
        received = self.consumers["reports"].received[-1]
        self.assertEqual(received.certificate, newer.certificate)
        self.assertIs(resource.managed[frozenset(REPORTS)].current, received)

    def test_accountLeaseHeldElsewhere(self) -> None:
        """
        While another node holds the account's lease, no account is created
        here: the sets wait a minute, no failed attempt, and try again.
        """
        lease = self.successResultOf(self.otherNode().lease("account", 10 * DAY))
        self.start()
        self.assertEqual(self.server.accountsCreated, 0)
        self.assertNotIn(20017, self.eventIDs())
        self.successResultOf(lease.release())
        advanceThrough(self.reactor, ACCOUNT_BUSY_WAIT)
        self.assertEqual(self.server.accountsCreated, 1)

    def test_staleWriteDropped(self) -> None:
        """
        A write made under a lease that another node has taken since is
        refused (20189) and dropped, not reported as a failed write nor
        tried again: the newer holder's data stays.
        """
        resource = self.start()
        managed = resource.managed[frozenset(REPORTS)]
        before = self.store.loadRenewalState(REPORTS)
        stale = self.successResultOf(self.store.lease(orderLease(REPORTS), 60))
        self.successResultOf(stale.release())
        self.successResultOf(self.otherNode().lease(orderLease(REPORTS), 60))
        managed.lease = stale
        managed.ariPick = 0.25
        self.assertFalse(self.successResultOf(resource.saveState(managed)))
        self.assertEqual(len(self.eventTexts(20189)), 1)
        self.assertNotIn(20009, self.eventIDs())
        self.assertFalse(resource._writes.hasRetries())
        self.assertEqual(self.store.loadRenewalState(REPORTS), before)
