"""
Tests for the order lease seen from a node that finds it taken: the set is
looked at again once the lease has ended, and a certificate another node
stored under it meanwhile is put in service instead of ordering another.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from letsencrypt_resource.certificates import CertifiedKey
from letsencrypt_resource.keygen import generateKey
from letsencrypt_resource.renewer import ORDER_LEASE, orderLease
from letsencrypt_resource.resource import CHECK_INTERVAL
from letsencrypt_resource.storage.interface import IStorage
from letsencrypt_resource.storage.memory import MemoryStorage
from letsencrypt_resource.storage.records import Records, certificateKey
from letsencrypt_resource.testing import MemoryStore, advanceThrough
from tests.helpers.resourcecase import REPORTS, ResourceTestCase


@implementer(IStorage)
class UnwatchedStore(MemoryStore):
    """
    A memory store, its leases timed by the test's clock, whose watch is
    never set up: the change notices of other nodes arrive late.
    """

    def watch(self, prefix: str, callback: Any) -> Deferred[Any]:
        return Deferred()


class BusyLeaseTests(ResourceTestCase):
    """
    A due set whose order lease another node holds (event 20199).
    """

    def setUp(self) -> None:
        super().setUp()
        self.store = UnwatchedStore(self.reactor)
        self.other = MemoryStorage(self.store.shared)
        self.lease = self.successResultOf(self.other.lease(orderLease(REPORTS), ORDER_LEASE))

    def served(self) -> CertifiedKey:
        """
        What the consumer of L{REPORTS} was given last.
        """
        received = self.consumers["reports"].received[-1]
        assert isinstance(received, CertifiedKey)
        return received

    def test_retriedWhenLeaseEnds(self) -> None:
        """
        A holder that stops renewing its lease (it was killed) delays the
        set by the lease's time, not until the next regular check: the
        set is ordered once the lease has ended.
        """
        self.start()
        self.assertEqual(len(self.eventTexts(20199)), 1)
        self.assertTrue(self.served().provisional)
        orders = self.server.ordersCreated
        advanceThrough(self.reactor, ORDER_LEASE + 10)
        self.assertLess(ORDER_LEASE + 10, CHECK_INTERVAL)
        self.assertEqual(self.server.ordersCreated, orders + 1)
        self.assertFalse(self.served().provisional)

    def test_storedMeanwhileNotOrdered(self) -> None:
        """
        A certificate the holder stored under the lease, then released,
        whose change notice has not reached this node yet, is read again
        once this node has the lease: it is put in service (20226) and no
        order is placed.
        """
        self.start()
        key = generateKey("ecdsa-p256")
        stored = CertifiedKey.fromParts(key, self.server.issue(key.public_key(), REPORTS))
        self.successResultOf(Records(self.other).saveCertificate(REPORTS, stored, self.lease))
        self.successResultOf(self.lease.release())
        orders = self.server.ordersCreated
        advanceThrough(self.reactor, ORDER_LEASE + 10)
        self.assertEqual(self.server.ordersCreated, orders)
        self.assertEqual(self.served().certificate.serial_number, stored.certificate.serial_number)
        self.assertEqual(len(self.eventTexts(20226)), 1)
        self.assertIsNotNone(self.successResultOf(self.other.lease(orderLease(REPORTS), 60)))

    def test_forcedOrdersAnyway(self) -> None:
        """
        A forced renewal orders under the lease even when another node
        stored a newer certificate just before: it was asked for.
        """
        resource = self.start()
        self.successResultOf(self.lease.release())
        advanceThrough(self.reactor, ORDER_LEASE + 10)
        key = generateKey("ecdsa-p256")
        stored = CertifiedKey.fromParts(key, self.server.issue(key.public_key(), REPORTS))
        self.successResultOf(Records(self.other).saveCertificate(REPORTS, stored))
        orders = self.server.ordersCreated
        managed = resource.managed[frozenset(REPORTS)]
        resource.check(force=True, only=[managed])
        advanceThrough(self.reactor, 60)
        self.assertEqual(self.server.ordersCreated, orders + 1)
        self.assertNotIn(20226, self.eventIDs())


@implementer(IStorage)
class GatedLeaseStore(MemoryStore):
    """
    A memory store, its leases timed by the test's clock, whose order
    leases are given once L{open} is called (L{asked} counts the calls
    meanwhile), and whose change notices are delivered when the test says
    (L{notify}).
    """

    def __init__(self, reactor: Any) -> None:
        super().__init__(reactor)
        self.callbacks: list[Any] = []
        self.waiting: list[Deferred[None]] | None = []
        self.asked = 0

    def lease(self, name: str, seconds: float) -> Deferred[Any]:
        if self.waiting is None or not name.startswith("orders/"):
            return super().lease(name, seconds)
        self.asked += 1
        gate: Deferred[None] = Deferred()
        self.waiting.append(gate)
        return gate.addCallback(lambda _: MemoryStore.lease(self, name, seconds))

    def open(self) -> None:
        """
        Give the order leases asked for, and the next ones at once.
        """
        waiting, self.waiting = self.waiting or [], None
        for gate in waiting:
            gate.callback(None)

    def watch(self, prefix: str, callback: Any) -> Deferred[Any]:
        self.callbacks.append(callback)
        return succeed(lambda: None)

    def notify(self, key: str) -> None:
        """
        Tell every watch of a change of C{key}.
        """
        for callback in self.callbacks:
            callback(key)


class NoticeWhileWaitingTests(ResourceTestCase):
    """
    An attempt under way, waiting for its order lease, while the change
    notice of a certificate another node stored arrives.
    """

    def setUp(self) -> None:
        super().setUp()
        self.store = GatedLeaseStore(self.reactor)
        self.other = MemoryStorage(self.store.shared)

    def test_noticedMeanwhileNotOrdered(self) -> None:
        """
        The notice puts the certificate in service while the attempt waits
        for the lease; once it has the lease, the set is not due any more:
        the set is not ordered (20226; the other sets are), where the
        attempt used to order one more because what it read again was no
        newer than what it served.
        """
        resource = self.makeResource()
        resource.startService()
        self.addCleanup(self.stop, resource)
        advanceThrough(self.reactor, 1)
        self.assertGreater(self.store.asked, 0, "the attempt asks for its order lease")
        self.assertTrue(self.consumers["reports"].received[-1].provisional)
        key = generateKey("ecdsa-p256")
        stored = CertifiedKey.fromParts(key, self.server.issue(key.public_key(), REPORTS))
        self.successResultOf(Records(self.other).saveCertificate(REPORTS, stored))
        self.store.notify(certificateKey(REPORTS))
        advanceThrough(self.reactor, 1)
        received = self.consumers["reports"].received[-1]
        self.assertEqual(received.certificate.serial_number, stored.certificate.serial_number)
        self.store.open()
        advanceThrough(self.reactor, 60)
        self.assertEqual(len(self.eventTexts(20226)), 1)
        ordered = " ".join(self.eventTexts(20015))
        self.assertNotIn(REPORTS[0], ordered)
        self.assertEqual(
            self.consumers["reports"].received[-1].certificate.serial_number,
            stored.certificate.serial_number,
        )
