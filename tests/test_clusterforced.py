"""
Tests for a forced renewal that a cluster node cannot start at once: the
order lease is held by another node (event 20199), or the cluster database
cannot be reached.  The node keeps it asked for and renews at its next
attempt, unless a new certificate is put in service first.
"""

from __future__ import annotations

from typing import Any

from acme import messages
from twisted.internet.defer import Deferred, fail
from zope.interface import implementer

from letsencrypt_resource.certificates import CertifiedKey
from letsencrypt_resource.clusterresume import resume
from letsencrypt_resource.display import formatStatus
from letsencrypt_resource.keygen import generateKey
from letsencrypt_resource.operations import Operations
from letsencrypt_resource.pendingorder import PendingOrder
from letsencrypt_resource.renewer import ORDER_LEASE, orderLease
from letsencrypt_resource.resource import LetsEncryptResource
from letsencrypt_resource.storage.interface import ILease, IStorage, StorageUnavailable
from letsencrypt_resource.storage.memory import MemoryStorage
from letsencrypt_resource.storage.records import Records
from letsencrypt_resource.testing import MemoryStore, advanceThrough
from tests.helpers.resourcecase import DAY, REPORTS, ResourceTestCase


@implementer(IStorage)
class LosableStore(MemoryStore):
    """
    A memory store, its leases timed by the test's clock, whose leases
    cannot be taken while C{lost} is true, as a cluster node's while its
    database cannot be reached.
    """

    lost = False

    def lease(self, name: str, seconds: float) -> Deferred[ILease | None]:
        if self.lost:
            return fail(StorageUnavailable(name, "the database failed: connection refused"))
        return super().lease(name, seconds)


class ForcedRenewalKeptTests(ResourceTestCase):
    """
    A forced renewal of a set that has its CA-issued certificate, refused
    for a passing cause.
    """

    def setUp(self) -> None:
        super().setUp()
        self.store = LosableStore(self.reactor)
        self.other = MemoryStorage(self.store.shared)

    def started(self) -> tuple[LetsEncryptResource, Any]:
        """
        Start the resource and let it order the first certificate.

        @return: The resource and its set L{REPORTS}.
        """
        resource = self.start()
        advanceThrough(self.reactor, 60)
        managed = resource.managed[frozenset(REPORTS)]
        self.assertIsNotNone(managed.issued)
        return resource, managed

    def test_leaseBusyRetried(self) -> None:
        """
        A forced renewal refused because another node holds the order
        lease (20199) is carried out once that lease has ended, although
        the set is not due.
        """
        resource, managed = self.started()
        lease = self.successResultOf(self.other.lease(orderLease(REPORTS), ORDER_LEASE))
        self.assertIsNotNone(lease)
        before = managed.issued.certificate.serial_number
        orders = self.server.ordersCreated
        resource.check(force=True, only=[managed])
        advanceThrough(self.reactor, 5)
        self.assertEqual(len(self.eventTexts(20199)), 1)
        self.assertEqual(self.server.ordersCreated, orders)
        advanceThrough(self.reactor, ORDER_LEASE + 10)
        self.assertEqual(self.server.ordersCreated, orders + 1)
        self.assertNotEqual(managed.issued.certificate.serial_number, before)
        self.assertIsNone(managed.forcedReason)

    def test_answeredByOtherNode(self) -> None:
        """
        When the lease holder stores a new certificate meanwhile, that one
        is put in service once the lease is free, and nothing more is
        ordered: the renewal asked for is done.
        """
        resource, managed = self.started()
        lease = self.successResultOf(self.other.lease(orderLease(REPORTS), ORDER_LEASE))
        resource.check(force=True, only=[managed])
        advanceThrough(self.reactor, 5)
        key = generateKey("ecdsa-p256")
        stored = CertifiedKey.fromParts(key, self.server.issue(key.public_key(), REPORTS))
        self.successResultOf(Records(self.other).saveCertificate(REPORTS, stored, lease))
        self.successResultOf(lease.release())
        orders = self.server.ordersCreated
        advanceThrough(self.reactor, ORDER_LEASE + 10)
        self.assertEqual(self.server.ordersCreated, orders)
        self.assertEqual(managed.issued.certificate.serial_number, stored.certificate.serial_number)
        self.assertIsNone(managed.forcedReason)

    def test_databaseLostRetried(self) -> None:
        """
        A forced renewal asked while the database cannot be reached fails;
        when the database is back (L{resume}), it is carried out, although
        the set is not due.
        """
        resource, managed = self.started()
        before = managed.issued.certificate.serial_number
        orders = self.server.ordersCreated
        lostSince = self.reactor.seconds()
        self.store.lost = True
        resource.check(force=True, only=[managed])
        advanceThrough(self.reactor, 5)
        self.assertEqual(managed.failures, 1)
        self.store.lost = False
        resume(resource, self.reactor, lostSince)
        advanceThrough(self.reactor, 60)
        self.assertEqual(self.server.ordersCreated, orders + 1)
        self.assertNotEqual(managed.issued.certificate.serial_number, before)

    def test_otherNodesOrderNotResumed(self) -> None:
        """
        An order read from the shared renewal state while another node ran
        it is dropped when that node's certificate arrives: a forced
        renewal then places a new order, instead of resuming that one and
        fetching the certificate in service again (seen after a database
        outage: the "renewed" certificate was the one in service).
        """
        resource, managed = self.started()
        managed.pendingOrder = PendingOrder("https://ca.example/order/1", generateKey("ecdsa-p256"))
        key = generateKey("ecdsa-p256")
        stored = CertifiedKey.fromParts(key, self.server.issue(key.public_key(), REPORTS))
        self.successResultOf(Records(self.other).saveCertificate(REPORTS, stored))
        advanceThrough(self.reactor, 5)
        self.assertEqual(managed.issued.certificate.serial_number, stored.certificate.serial_number)
        self.assertIsNone(managed.pendingOrder)

    def keptBehindLease(self) -> tuple[LetsEncryptResource, Any]:
        """
        Force a renewal while another node holds the set's lease.

        @return: The resource and its set, whose forced renewal is kept.
        """
        resource, managed = self.started()
        self.successResultOf(self.other.lease(orderLease(REPORTS), ORDER_LEASE))
        resource.check(force=True, only=[managed])
        advanceThrough(self.reactor, 5)
        self.assertIsNotNone(managed.forcedReason)
        return resource, managed

    def test_failedAtCADropped(self) -> None:
        """
        A kept forced renewal whose order then fails at the CA is dropped,
        as a forced renewal that fails on its first try is: the set, not
        due, is not ordered again.
        """
        resource, managed = self.keptBehindLease()
        problem = messages.Error.with_code("rejectedIdentifier", detail="no")
        self.server.fail("/new-order", 400, problem=problem, times=1)
        orders = self.server.ordersCreated
        advanceThrough(self.reactor, ORDER_LEASE + 10)
        self.assertEqual(managed.failures, 1)
        self.assertIsNone(managed.forcedReason)
        advanceThrough(self.reactor, 2 * DAY)
        self.assertEqual(self.server.ordersCreated, orders)

    def test_shownInStatus(self) -> None:
        """
        C{status} shows a kept forced renewal: its reason in the C{forced}
        field (C{None} when none is kept), and in the text of the next
        action.
        """
        resource, managed = self.keptBehindLease()
        [row] = [
            r for r in Operations(resource, self.reactor).status() if r["names"] == list(REPORTS)
        ]
        self.assertEqual(row["forced"], managed.forcedReason)
        text = formatStatus([row], True, "/state")
        self.assertIn("(a forced renewal kept until it can start)", text)
        others = [
            r for r in Operations(resource, self.reactor).status() if r["names"] != list(REPORTS)
        ]
        self.assertEqual({r["forced"] for r in others}, {None})
        self.assertNotIn("kept", formatStatus(others, True, "/state"))
