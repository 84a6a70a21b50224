"""
Tests for the leases the resource takes on the storage: the writes of an
order keep the fence they were made under, an issued certificate is never
dropped as stale, the renewal state of a set is written only by the holder
of its lease, and leases are let go whatever befalls their release.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.logger import Logger
from zope.interface import implementer

from letsencrypt_resource.account import AccountBusy
from letsencrypt_resource.certificates import CertifiedKey
from letsencrypt_resource.keygen import generateKey
from letsencrypt_resource.keys import keyToPEM, loadAccountKey
from letsencrypt_resource.leasing import takeLease
from letsencrypt_resource.operations import Operations
from letsencrypt_resource.policy import FIRST_RETRY_DELAY
from letsencrypt_resource.renewer import orderLease
from letsencrypt_resource.storage.interface import ILease, IStorage, StorageError
from letsencrypt_resource.storage.memory import MemoryStorage
from letsencrypt_resource.storage.records import AccountRecord, Records, certificateKey
from letsencrypt_resource.testing import MemoryStore, advanceThrough, runUntilFired
from tests.helpers.resourcecase import (
    ACME_URL,
    DAY,
    REPORTS,
    FailingSaves,
    ResourceTestCase,
)


@implementer(ILease)
class FailingRelease:
    """
    An L{ILease} whose release fails, as when the database connection
    dropped.
    """

    def __init__(self, lease: ILease):
        self.name, self.token, self._lease = lease.name, lease.token, lease

    def renew(self) -> Deferred[None]:
        return self._lease.renew()

    def release(self) -> Deferred[None]:
        return fail(StorageError(self.name, "connection lost"))


@implementer(IStorage)
class ReleaseFails(MemoryStore):
    """
    A memory store whose order leases cannot be released.
    """

    def lease(self, name: str, seconds: float) -> Deferred[Any]:
        def wrap(lease: ILease | None) -> ILease | None:
            if lease is None or not name.startswith("orders/"):
                return lease
            return FailingRelease(lease)

        return super().lease(name, seconds).addCallback(wrap)


@implementer(ILease)
class SilentRelease:
    """
    An L{ILease} whose release never answers, as a database that does not
    reply; it is let go all the same.
    """

    def __init__(self, lease: ILease):
        self.name, self.token, self._lease = lease.name, lease.token, lease

    def renew(self) -> Deferred[None]:
        return self._lease.renew()

    def release(self) -> Deferred[None]:
        self._lease.release()
        return Deferred()


@implementer(IStorage)
class ReleaseHangs(MemoryStore):
    """
    A memory store whose order leases' releases never answer.
    """

    def lease(self, name: str, seconds: float) -> Deferred[Any]:
        def wrap(lease: ILease | None) -> ILease | None:
            if lease is None or not name.startswith("orders/"):
                return lease
            return SilentRelease(lease)

        return super().lease(name, seconds).addCallback(wrap)


@implementer(IStorage)
class AnsweredLater(MemoryStore):
    """
    A memory store that grants its leases at once but answers later, as a
    database whose answer is still on its way.

    @ivar answers: Each lease asked for, as granted, with the Deferred that
        answers it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.answers: list[tuple[ILease | None, Deferred[ILease | None]]] = []

    def lease(self, name: str, seconds: float) -> Deferred[Any]:
        granted: list[ILease | None] = []
        super().lease(name, seconds).addCallback(granted.append)
        answer: Deferred[ILease | None] = Deferred()
        self.answers.append((granted[0], answer))
        return answer


@implementer(IStorage)
class PublishLog(MemoryStore):
    """
    A memory store that remembers the lease each challenge token was
    published under.

    @ivar published: The name of that lease, by token.
    """

    def __init__(self) -> None:
        super().__init__()
        self.published: dict[str, str] = {}

    def store(self, key: str, value: bytes, fence: ILease | None = None) -> Deferred[None]:
        if key.startswith("challenges/") and fence is not None:
            self.published[key.removeprefix("challenges/")] = fence.name
        return super().store(key, value, fence)


@implementer(IStorage)
class HeldStateWrites(MemoryStore):
    """
    A memory store whose renewal state writes wait, while told to, until
    the test lets them through.

    @ivar held: Each write held: its key, value, fence and the Deferred it
        answers with.
    """

    def __init__(self) -> None:
        super().__init__()
        self.holding = False
        self.held: list[tuple[str, bytes, ILease | None, Deferred[None]]] = []

    def store(self, key: str, value: bytes, fence: ILease | None = None) -> Deferred[None]:
        if not (self.holding and key.startswith("renewal/")):
            return super().store(key, value, fence)
        self.held.append((key, value, fence, Deferred()))
        return self.held[-1][3]


class OrderFenceTests(ResourceTestCase):
    """
    An order's writes keep its lease's fence until they have ended, and an
    issued certificate is never dropped as stale.
    """

    def otherNode(self) -> MemoryStorage:
        """
        Another node on the test's storage.
        """
        return MemoryStorage(self.store.shared)

    def issue(self, domains: tuple[str, ...], validity: float) -> CertifiedKey:
        """
        A certificate of the fake CA for C{domains} and a new key.
        """
        key = generateKey("ecdsa-p256")
        chain = self.server.issue(key.public_key(), domains, validity)
        return CertifiedKey.fromParts(key, chain)

    def failedCertificateWrite(self) -> Any:
        """
        Start a resource whose first certificate writes fail: they wait for
        a retry.
        """
        self.store = FailingSaves()
        self.store.failing.add("saveCertificate")
        resource = self.start()
        self.assertIsNone(self.store.values.get(certificateKey(REPORTS)))
        self.assertTrue(resource._writes.hasRetries())
        return resource

    def test_leaseKeptForRetry(self) -> None:
        """
        When an issued certificate cannot be stored, its set's lease is
        kept while the write waits for its retry (another node cannot take
        it and order a duplicate); the retry, under the same fence, stores
        it, and the lease is then let go.
        """
        resource = self.failedCertificateWrite()
        other = self.otherNode()
        self.assertIsNone(self.successResultOf(other.lease(orderLease(REPORTS), 600)))
        self.reactor.advance(3 * 600)
        self.assertIsNone(self.successResultOf(other.lease(orderLease(REPORTS), 600)))
        self.store.failing.clear()
        advanceThrough(self.reactor, 3600)
        runUntilFired(self.reactor, resource.whenWritten())
        self.assertIsNotNone(self.store.values.get(certificateKey(REPORTS)))
        self.assertNotIn(20189, self.eventIDs())
        self.assertIsNone(resource.managed[frozenset(REPORTS)].lease)
        self.assertIsNotNone(self.successResultOf(other.lease(orderLease(REPORTS), 600)))

    def test_staleCertificateStoredAnew(self) -> None:
        """
        A certificate whose retried write is refused as stale (its lease
        passed to another node meanwhile) is not dropped (20201): it is
        stored under the set's lease taken anew, once the other node has
        let it go, since nothing newer is stored.
        """
        resource = self.failedCertificateWrite()
        managed = resource.managed[frozenset(REPORTS)]
        assert managed.lease is not None
        self.successResultOf(managed.lease.release())
        other = self.successResultOf(self.otherNode().lease(orderLease(REPORTS), 600))
        self.store.failing.clear()
        advanceThrough(self.reactor, FIRST_RETRY_DELAY)
        self.assertEqual(len(self.eventTexts(20201)), 1)
        self.assertIsNone(self.store.values.get(certificateKey(REPORTS)))
        self.successResultOf(other.release())
        advanceThrough(self.reactor, 3600)
        runUntilFired(self.reactor, resource.whenWritten())
        stored = self.store.loadCertificate(REPORTS)
        self.assertEqual(stored.certificate, managed.current.certificate)

    def test_staleCertificateSuperseded(self) -> None:
        """
        A certificate whose write is refused as stale is not stored over a
        newer one another node stored meanwhile (20201 says so).
        """
        resource = self.failedCertificateWrite()
        managed = resource.managed[frozenset(REPORTS)]
        assert managed.lease is not None
        self.successResultOf(managed.lease.release())
        other = self.otherNode()
        lease = self.successResultOf(other.lease(orderLease(REPORTS), 600))
        newer = self.issue(REPORTS, 120 * DAY)
        self.successResultOf(Records(other).saveCertificate(REPORTS, newer, lease))
        self.successResultOf(lease.release())
        self.store.failing.clear()
        advanceThrough(self.reactor, 3600)
        runUntilFired(self.reactor, resource.whenWritten())
        self.assertEqual(self.store.loadCertificate(REPORTS).certificate, newer.certificate)
        self.assertTrue(any("newer" in text for text in self.eventTexts(20201)))

    def test_failureStateFenced(self) -> None:
        """
        An attempt whose lease passed to another node while it validated
        does not write its failure over the new holder's renewal state.
        """
        self.store = store = PublishLog()
        other = self.otherNode()
        marker = {"written": "by the new holder"}

        def validate(token: str) -> str | None:
            managed = resource.managed[frozenset(REPORTS)]
            if store.published.get(token) == orderLease(REPORTS) and not taken:
                assert managed.lease is not None
                self.successResultOf(managed.lease.release())
                lease = self.successResultOf(other.lease(orderLease(REPORTS), 600))
                self.successResultOf(Records(other).saveRenewalState(REPORTS, marker, lease))
                taken.append(lease)
                return None
            return resource.responder.lookup(token)

        taken: list[ILease] = []
        resource = self.makeResource()
        self.server.validate = validate
        resource.startService()
        self.addCleanup(self.stop, resource)
        runUntilFired(self.reactor, resource.whenSettled())
        runUntilFired(self.reactor, resource.whenWritten())
        self.assertTrue(taken)
        self.assertEqual(self.store.loadRenewalState(REPORTS), marker)

    def test_stateWithoutLeaseYields(self) -> None:
        """
        A renewal state written outside an order (an ARI refresh, a failure
        before ordering) is not written while another node holds the set's
        lease (its state is the newer), and is written once it is free.
        """
        resource = self.start()
        managed = resource.managed[frozenset(REPORTS)]
        before = self.store.loadRenewalState(REPORTS)
        lease = self.successResultOf(self.otherNode().lease(orderLease(REPORTS), 600))
        managed.ariPick = 0.25
        self.successResultOf(resource.saveState(managed))
        self.assertEqual(self.store.loadRenewalState(REPORTS), before)
        self.successResultOf(lease.release())
        self.successResultOf(resource.saveState(managed))
        self.assertEqual(self.store.loadRenewalState(REPORTS)["ari_pick"], 0.25)

    def test_ownStateWriteDoesNotBlockOrder(self) -> None:
        """
        A renewal state written outside an order holds the set's lease
        while it runs; an order started meanwhile waits for it to end
        instead of finding the lease busy (no 20199).
        """
        self.store = store = HeldStateWrites()
        resource = self.start()
        managed = resource.managed[frozenset(REPORTS)]
        before = self.server.ordersCreated
        store.holding = True
        resource.saveState(managed)
        store.holding = False
        checking = resource.check(force=True, only=[managed])
        [(key, value, fence, done)] = store.held
        MemoryStore.store(store, key, value, fence).chainDeferred(done)
        runUntilFired(self.reactor, checking)
        self.assertNotIn(20199, self.eventIDs())
        self.assertEqual(self.server.ordersCreated, before + 1)


class LeaseReleaseTests(ResourceTestCase):
    """
    Leases are let go as best the storage allows, and never left held by
    a request cut short.
    """

    def test_releaseFailureIsNoFailedAttempt(self) -> None:
        """
        An order whose lease cannot be released at its end is no failed
        attempt: the certificate is stored and in service, the release's
        failure is event 20202, and no 20017 or retry follows.
        """
        self.store = ReleaseFails()
        resource = self.start()
        managed = resource.managed[frozenset(REPORTS)]
        self.assertFalse(managed.current.provisional)
        self.assertIsNotNone(self.store.values.get(certificateKey(REPORTS)))
        self.assertEqual(managed.failures, 0)
        self.assertNotIn(20017, self.eventIDs())
        self.assertTrue(any("connection lost" in t for t in self.eventTexts(20202)))

    def test_attemptEndsBeforeRelease(self) -> None:
        """
        An attempt ends once its certificate is in service, without waiting
        for its order's lease to be let go: a release that never answers
        leaves no attempt under way (the slow test C{test_goneMidOrder}
        found attempts still under way after the certificate was in
        service while the release ran in a thread).
        """
        self.store = ReleaseHangs()
        resource = self.start()
        managed = resource.managed[frozenset(REPORTS)]
        self.assertFalse(managed.current.provisional)
        self.assertIsNone(managed.attempt)
        self.assertEqual(managed.failures, 0)

    def test_cancelledRequestReleases(self) -> None:
        """
        A lease that arrives after its request was cancelled (the resource
        stopped meanwhile) is released at once: another node can take it.
        """
        store = AnsweredLater()
        taking = takeLease(store, "account", 300, Logger())
        taking.cancel()
        self.failureResultOf(taking)
        [(granted, answer)] = store.answers
        answer.callback(granted)
        other = MemoryStorage(store.shared)
        self.assertIsNotNone(self.successResultOf(other.lease("account", 10)))

    def test_leaseAtStopReleased(self) -> None:
        """
        Leases still being taken when the resource stops are released when
        they arrive: 60 s after the stop, another node gets the account's.
        """
        self.store = AnsweredLater()
        resource = self.makeResource()
        resource.startService()
        self.reactor.advance(1)
        self.assertTrue(self.store.answers)
        resource.stopService()
        for granted, answer in self.store.answers:
            if not answer.called:
                answer.callback(granted)
        self.reactor.advance(60)
        other = MemoryStorage(self.store.shared)
        self.assertIsNotNone(self.successResultOf(other.lease("account", 10)))


class AccountLeaseTests(ResourceTestCase):
    """
    The account's lease is taken only to create or change the account.
    """

    def test_currentAccountWithoutLease(self) -> None:
        """
        A stored, registered account with the configured contacts is used
        while another node holds the account's lease: connecting changes
        nothing, so it needs no lease and is no failed attempt.
        """
        self.start()
        lease = self.successResultOf(MemoryStorage(self.store.shared).lease("account", DAY))
        self.assertIsNotNone(lease)
        second = self.start()
        self.assertIsNotNone(self.successResultOf(second.acmeClient()).accountURL)
        self.assertEqual(self.server.accountsCreated, 1)

    def test_keyFileReadInThread(self) -> None:
        """
        The configured account key file is read by the resource's thread
        runner, not on the reactor thread.
        """
        keyFile = self.mktemp()
        with open(keyFile, "wb") as stream:
            stream.write(keyToPEM(generateKey("ecdsa-p256")))
        resource = self.makeResource(accountKeyFile=keyFile)
        ran: list[object] = []
        runInThread = resource.runInThread

        def recording(function: Any, *args: Any) -> Deferred[Any]:
            ran.append(function)
            return runInThread(function, *args)

        resource.runInThread = recording
        self.failureResultOf(resource.acmeClient())
        self.assertIn(loadAccountKey, ran)

    def test_rolloverAndDeactivateUnderLease(self) -> None:
        """
        A key rollover or a deactivation is refused while another node
        holds the account's lease (it may be changing the account): the
        CA's key and the stored account stay as they were.
        """
        resource = self.start()
        operations = Operations(resource, self.reactor)
        before = self.successResultOf(operations.accountShow())
        [acmeURL] = self.store.accountURLs(ACME_URL)
        stored = keyToPEM(self.store.loadAccount(acmeURL).key)
        lease = self.successResultOf(MemoryStorage(self.store.shared).lease("account", DAY))
        self.failureResultOf(operations.accountRollover(), AccountBusy)
        self.failureResultOf(operations.accountDeactivate(), AccountBusy)
        self.assertEqual(keyToPEM(self.store.loadAccount(acmeURL).key), stored)
        self.successResultOf(lease.release())
        self.assertEqual(self.successResultOf(operations.accountShow()), before)

    def test_lostKeepsNewerKey(self) -> None:
        """
        The CA forgot the account, but before its record is rewritten as
        unregistered another node rolled the key over: the newer key is
        kept.
        """
        resource = self.start()
        acmeURL = resource.options.acmeURL
        held: list[tuple[Any, tuple[Any, ...], Deferred[Any]]] = []

        def runWrite(function: Any, *args: Any) -> Deferred[Any]:
            held.append((function, args, Deferred()))
            return held[-1][2]

        resource.runWrite = runWrite
        self.successResultOf(resource._connection.lost())
        newer = AccountRecord(generateKey("ecdsa-p256"), "https://ca.test/acct/9", ())
        self.successResultOf(Records(self.store).saveAccount(acmeURL, newer))
        [(function, args, done)] = held
        maybeDeferred(function, *args).chainDeferred(done)
        self.successResultOf(done)
        stored = self.successResultOf(Records(self.store).loadAccount(acmeURL))
        self.assertEqual(stored.toJSON(), newer.toJSON())


class StopWritesTests(ResourceTestCase):
    """
    Stopping waits for every write, also those queued by writes ending.
    """

    def test_writesQueuedMeanwhileWaitedFor(self) -> None:
        """
        L{whenWritten} waits for a write queued by the end of a write it
        waits for (a stored certificate saves the renewal state).
        """
        resource = self.start()
        managed = resource.managed[frozenset(REPORTS)]
        held: list[tuple[Any, tuple[Any, ...], Deferred[Any]]] = []

        def runWrite(function: Any, *args: Any) -> Deferred[Any]:
            held.append((function, args, Deferred()))
            return held[-1][2]

        def runOne() -> None:
            function, args, done = held.pop(0)
            maybeDeferred(function, *args).chainDeferred(done)

        resource.runWrite = runWrite
        resource._writes.saveCertificate(
            managed, managed.current, lambda _: resource.saveState(managed)
        )
        waiting = resource.whenWritten()
        runOne()
        self.assertNoResult(waiting)
        self.assertEqual(len(held), 1)
        runOne()
        self.successResultOf(waiting)
