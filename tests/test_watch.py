"""
Tests for the watch of the certificates other users of the storage store:
what it puts in service and what it refuses, and a watch that cannot be
set up.
"""

from __future__ import annotations

import datetime
import gc
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from twisted.internet.defer import Deferred, fail
from zope.interface import implementer

from letsencrypt_resource.certificates import CertifiedKey
from letsencrypt_resource.keygen import generateKey
from letsencrypt_resource.keys import PrivateKey
from letsencrypt_resource.provisional import makeProvisional
from letsencrypt_resource.renewer import orderLease
from letsencrypt_resource.resource import CHECK_INTERVAL
from letsencrypt_resource.storage.interface import IStorage, StorageError
from letsencrypt_resource.storage.memory import MemoryStorage
from letsencrypt_resource.storage.records import Records
from letsencrypt_resource.testing import MemoryStore, advanceThrough
from tests.helpers.resourcecase import DAY, REPORTS, ResourceTestCase


@implementer(IStorage)
class WatchFailsOnce(MemoryStore):
    """
    A memory store whose first watch cannot be set up.
    """

    def __init__(self) -> None:
        super().__init__()
        self.watches = 0

    def watch(self, prefix: str, callback: Any) -> Deferred[Any]:
        self.watches += 1
        if self.watches == 1:
            return fail(StorageError(prefix, "the database is down"))
        return super().watch(prefix, callback)


@implementer(IStorage)
class SlowWatch(MemoryStore):
    """
    A memory store whose watch is set up, or fails, when the test says.

    @ivar pending: The watch asked for.
    """

    def __init__(self) -> None:
        super().__init__()
        self.pending: Deferred[Any] = Deferred()

    def watch(self, prefix: str, callback: Any) -> Deferred[Any]:
        return self.pending


def serial(certified: CertifiedKey | None) -> int | None:
    """
    The serial number of C{certified}'s certificate, if any.
    """
    return None if certified is None else certified.certificate.serial_number


class WatchedCertificateTests(ResourceTestCase):
    """
    A certificate another node stores goes in service only when its chain
    and times are those of a CA's certificate (20203 otherwise).
    """

    def now(self) -> datetime.datetime:
        """
        The test clock's time.
        """
        return datetime.datetime.fromtimestamp(self.reactor.seconds(), datetime.timezone.utc)

    def signed(
        self, issuerName: x509.Name, signingKey: PrivateKey, lifetime: datetime.timedelta
    ) -> CertifiedKey:
        """
        A certificate for L{REPORTS} and a new key, issued under
        C{issuerName} and signed with C{signingKey}, without a chain.
        """
        key = generateKey("ecdsa-p256")
        now = self.now()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, REPORTS[0])]))
            .issuer_name(issuerName)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + lifetime)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in REPORTS]), False)
            .sign(signingKey, hashes.SHA256())
        )
        return CertifiedKey(key, certificate)

    def storedElsewhere(self, stored: CertifiedKey) -> None:
        """
        Store C{stored} for L{REPORTS} as another node would.
        """
        other = Records(MemoryStorage(self.store.shared))
        self.successResultOf(other.saveCertificate(REPORTS, stored))

    def assertRefused(self, stored: CertifiedKey, why: str) -> None:
        """
        Store C{stored} from another node, and check it is not put in
        service, with 20203 giving C{why}.
        """
        resource = self.start()
        managed = resource.managed[frozenset(REPORTS)]
        before = managed.current
        self.storedElsewhere(stored)
        self.assertIs(managed.current, before)
        [text] = self.eventTexts(20203)
        self.assertIn(why, text)

    def test_selfSignedRefused(self) -> None:
        """
        A self-signed certificate, valid ten years, is refused: it would
        be served to browsers that refuse it, and suppress renewals.
        """
        key = generateKey("ecdsa-p256")
        self.assertRefused(CertifiedKey(key, self._selfSigned(key)), "self-signed")

    def _selfSigned(self, key: PrivateKey) -> x509.Certificate:
        """
        A self-signed certificate of C{key} for L{REPORTS}, valid ten years.
        """
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, REPORTS[0])])
        now = self.now()
        return (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in REPORTS]), False)
            .sign(key, hashes.SHA256())
        )

    def test_forgedChainRefused(self) -> None:
        """
        A certificate that names the CA as its issuer, with the CA's
        certificate as its chain, but is not signed by it, is refused.
        """
        ca = self.server.caCertificate
        forged = self.signed(ca.subject, generateKey("ecdsa-p256"), datetime.timedelta(days=100))
        self.assertRefused(
            CertifiedKey(forged.key, forged.certificate, (ca,)), "not signed by the next"
        )

    def test_provisionalRefused(self) -> None:
        """
        A provisional certificate of the installation's signer is refused,
        for a set still on its own provisional one (another node holds its
        order's lease).
        """
        other = MemoryStorage(self.store.shared)
        self.successResultOf(other.lease(orderLease(REPORTS), 10 * DAY))
        resource = self.start()
        managed = resource.managed[frozenset(REPORTS)]
        before = managed.current
        pem = self.successResultOf(Records(self.store).loadProvisionalSigner())
        assert pem is not None
        signer = CertifiedKey.fromPEM(pem)
        provisional = makeProvisional(signer, REPORTS, self.now())
        stored = CertifiedKey(provisional.key, provisional.certificate, (signer.certificate,))
        self.storedElsewhere(stored)
        self.assertIs(managed.current, before)
        self.assertIn("provisional", self.eventTexts(20203)[0])

    def test_longAccepted(self) -> None:
        """
        A certificate of the CA that lasts ten years (pebble gives five by
        default) is put in service: the node that ordered it serves it, so
        every node does.
        """
        resource = self.start()
        managed = resource.managed[frozenset(REPORTS)]
        key = generateKey("ecdsa-p256")
        stored = CertifiedKey.fromParts(
            key, self.server.issue(key.public_key(), REPORTS, 3650 * DAY)
        )
        self.storedElsewhere(stored)
        self.assertEqual(serial(managed.current), serial(stored))
        self.assertEqual(self.eventTexts(20203), [])

    def sameSecond(self, resource: Any) -> tuple[Any, CertifiedKey]:
        """
        The set of L{REPORTS} in service, and another certificate of the CA
        for it that ends in the very second its certificate ends.
        """
        managed = resource.managed[frozenset(REPORTS)]
        issued = managed.issued
        assert issued is not None
        key = generateKey("ecdsa-p256")
        validity = issued.notAfter.timestamp() - self.reactor.seconds()
        stored = CertifiedKey.fromParts(key, self.server.issue(key.public_key(), REPORTS, validity))
        self.assertEqual(stored.notAfter, issued.notAfter)
        return managed, stored

    def test_sameSecondReplacementAccepted(self) -> None:
        """
        A certificate with another serial that ends in the same second as
        the one in service (a forced renewal, or a revoke's replacement,
        issued within the second) is put in service.
        """
        managed, stored = self.sameSecond(self.start())
        self.storedElsewhere(stored)
        self.assertEqual(serial(managed.current), serial(stored))

    def test_sameCertificateNotTakenAgain(self) -> None:
        """
        The certificate in service, stored again, is not put in service
        again (no event 20158, no deploy); nor is one that ends a second
        earlier.
        """
        resource = self.start()
        managed, stored = self.sameSecond(resource)
        issued = managed.issued
        assert issued is not None
        loaded = len(self.eventTexts(20158))
        self.storedElsewhere(issued)
        key = generateKey("ecdsa-p256")
        validity = issued.notAfter.timestamp() - self.reactor.seconds() - 1
        older = CertifiedKey.fromParts(key, self.server.issue(key.public_key(), REPORTS, validity))
        self.storedElsewhere(older)
        self.assertIs(managed.issued, issued)
        self.assertEqual(len(self.eventTexts(20158)), loaded)


class WatchFailureTests(ResourceTestCase):
    """
    A watch that cannot be set up is set up again later, and stopping is
    safe meanwhile.
    """

    def test_stopAfterWatchFailed(self) -> None:
        """
        Stopping after the watch failed to start logs no error.
        """
        self.store = WatchFailsOnce()
        resource = self.start()
        self.flushLoggedErrors(StorageError)
        resource.stopService()
        gc.collect()
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_watchFailsAfterStop(self) -> None:
        """
        A watch still being set up when the resource stops, which then
        fails as the storage closes (as the operations command stops at
        once), logs no error and is not set up again: no call is left.
        """
        self.store = SlowWatch()
        resource = self.start()
        self.successResultOf(resource.stopService())
        self.store.pending.errback(StorageError("certificates/", "the storage is closed"))
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_watchSetUpAgain(self) -> None:
        """
        A watch that failed at start is set up again at the next check,
        and catches up: a certificate another node stored meanwhile goes
        in service.
        """
        self.store = WatchFailsOnce()
        resource = self.start()
        self.flushLoggedErrors(StorageError)
        managed = resource.managed[frozenset(REPORTS)]
        key = generateKey("ecdsa-p256")
        chain = self.server.issue(key.public_key(), REPORTS, 100 * DAY)
        newer = CertifiedKey.fromParts(key, chain)
        self.reactor.advance(60)
        other = Records(MemoryStorage(self.store.shared))
        self.successResultOf(other.saveCertificate(REPORTS, newer))
        self.assertNotEqual(managed.current.certificate, newer.certificate)
        advanceThrough(self.reactor, CHECK_INTERVAL)
        self.assertEqual(self.store.watches, 2)
        self.assertEqual(managed.current.certificate, newer.certificate)
