"""
Tests for a stored key read at its first use (L{CertifiedKey.fromCheckedPEM})
that cannot be read: where the key is read, it is handled, not raised.
"""

from __future__ import annotations

import json

from OpenSSL import SSL
from twisted.internet.task import Clock
from twisted.logger import Logger, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource import tls as tlsModule
from letsencrypt_resource.certificatefacts import CertificateFacts
from letsencrypt_resource.certificates import (
    CertifiedKey,
    InvalidCertificate,
    RecordedCertificate,
    bundleDigest,
)
from letsencrypt_resource.interfaces import ICertificateConsumer
from letsencrypt_resource.keys import generateKey, publicKeyDigest
from letsencrypt_resource.managed import KEY_UNREADABLE, ManagedCertificate
from letsencrypt_resource.operations import Operations
from letsencrypt_resource.resource import LetsEncryptResource
from letsencrypt_resource.storage.records import certificateKey, renewalKey
from letsencrypt_resource.storedchanges import StoredChanges
from letsencrypt_resource.testing import runUntilFired
from letsencrypt_resource.tls import NoCertificateYet, ReloadableServerTLS, TLSCertificateConsumer
from tests.helpers import newSigner, provisionalFor
from tests.helpers.resourcecase import REPORTS, ResourceTestCase

DOMAINS = ("lazy.example.test",)


def unreadableKey() -> CertifiedKey:
    """
    A CA-issued bundle, as read by its digest, whose key is no key.
    """
    bundle = provisionalFor(newSigner(), DOMAINS).fullchainPEM
    return CertifiedKey.fromCheckedPEM(b"no key\n" + bundle, frozenset(DOMAINS))


def withCompromisedKeys() -> ManagedCertificate:
    """
    A set with some key recorded as compromised, so its checks read keys.
    """
    certificate = ManagedCertificate(DOMAINS)
    certificate.compromisedKeys.add(publicKeyDigest(generateKey("ecdsa-p256")))
    return certificate


class UnreadableKeyTests(SynchronousTestCase):
    """
    A key that cannot be read is a reason to renew, and a stored bundle
    with one is refused, where compromised keys are looked for.
    """

    def test_planRenewsAtOnce(self) -> None:
        """
        A set whose certificate in service has a key that cannot be read
        is due at once, for that reason, instead of raising at every check.
        """
        certificate = withCompromisedKeys()
        certificate.current = unreadableKey()
        plan = certificate.plan()
        self.assertEqual((plan.at, plan.reason), (0.0, KEY_UNREADABLE))

    def test_storedRefused(self) -> None:
        """
        A stored bundle whose key cannot be read is refused when it is
        taken back (event 20163), instead of raising.
        """
        certificate = withCompromisedKeys()
        clock = Clock()
        changes = StoredChanges(
            None,  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]
            {frozenset(DOMAINS): certificate},
            None,  # type: ignore[arg-type]
            clock,
            Logger(),
        )
        with capturedLogs() as events:
            self.assertFalse(changes.acceptable(certificate, unreadableKey()))
        self.assertEqual([e.get("event_id") for e in events], [20163])


class ReuseUnreadableKeyTests(ResourceTestCase):
    """
    With C{reuse_key}, a key that cannot be read is not reused.
    """

    def test_newKeyOrdered(self) -> None:
        """
        A forced renewal of a set whose certificate in service has a key
        that cannot be read orders for a new key, and succeeds.
        """
        resource = self.start(reuseKey=True)
        old = self.consumers["reports"].received[-1]
        damaged = CertifiedKey.fromCheckedPEM(b"no key\n" + old.fullchainPEM, frozenset(REPORTS))
        resource.managed[frozenset(REPORTS)].current = damaged
        runUntilFired(self.reactor, Operations(resource, self.reactor).renew([REPORTS[0]], True))
        new = self.consumers["reports"].received[-1]
        self.assertIsNot(new, old)
        self.assertFalse(new.provisional)
        self.assertNotEqual(publicKeyDigest(new.key), publicKeyDigest(old.key))

    def test_revokedAsCompromised(self) -> None:
        """
        C{revoke --reason keyCompromise} of a set whose key in service
        cannot be read records the certificate's key as compromised,
        revokes, and replaces it with a new key, instead of raising.
        """
        resource = self.start(reuseKey=True)
        old = self.consumers["reports"].received[-1]
        damaged = CertifiedKey.fromCheckedPEM(b"no key\n" + old.fullchainPEM, frozenset(REPORTS))
        resource.managed[frozenset(REPORTS)].current = damaged
        revoking = Operations(resource, self.reactor).revoke(REPORTS[0], "keyCompromise")
        runUntilFired(self.reactor, revoking)
        state = self.store.loadRenewalState(REPORTS)
        self.assertEqual(state["compromised_keys"], [publicKeyDigest(old.key)])
        self.assertEqual(list(self.server.revoked.values()), [1])
        new = self.consumers["reports"].received[-1]
        self.assertFalse(new.provisional)
        self.assertNotEqual(publicKeyDigest(new.key), publicKeyDigest(old.key))


class FirstHandshakeTests(SynchronousTestCase):
    """
    A certificate whose key turns out unusable at the first handshake is
    told to the C{unusable} callback when nothing else can be presented.
    """

    def test_toldOnceWithoutEarlierContext(self) -> None:
        """
        With no earlier context, the handshake is refused and the callback
        called with the certificate, once for all the handshakes refused.
        """
        told: list[CertifiedKey] = []
        tls = ReloadableServerTLS(told.append)
        damaged = unreadableKey()
        tls.setCertificate(damaged)
        with capturedLogs():
            self.assertRaises(NoCertificateYet, tls.serverConnectionForTLS, None)
            self.assertRaises(NoCertificateYet, tls.serverConnectionForTLS, None)
        self.assertEqual(told, [damaged])
        self.flushLoggedErrors(SSL.Error)

    def test_notToldWithEarlierContext(self) -> None:
        """
        With an earlier context, that one stays in service and the
        callback is not called.
        """
        told: list[CertifiedKey] = []
        tls = ReloadableServerTLS(told.append)
        tls.setCertificate(provisionalFor(newSigner(), DOMAINS))
        tls.serverConnectionForTLS(None)
        tls.setCertificate(unreadableKey())
        with capturedLogs():
            self.assertIsInstance(tls.serverConnectionForTLS(None), SSL.Connection)
        self.assertEqual(told, [])
        self.flushLoggedErrors(SSL.Error)


class UnusableAtFirstUseTests(ResourceTestCase):
    """
    A stored certificate, unchanged since it was written (its digest
    matches), whose key cannot be used at the first handshake: the set
    goes on a provisional certificate and is ordered again at once,
    instead of refusing handshakes until its renewal.
    """

    def afterFirstRun(self) -> TLSCertificateConsumer:
        """
        A TLS consumer of the reports set, registered once a first run of
        the resource has stored the set's certificate.
        """
        tls = TLSCertificateConsumer("reports-tls", REPORTS)
        self.registry.registerUtility(tls, ICertificateConsumer, name="reports-tls")
        self.stop(self.start())
        return tls

    def refusedAtRestart(
        self, tls: TLSCertificateConsumer
    ) -> tuple[LetsEncryptResource, CertifiedKey]:
        """
        Start the resource again, on what the first run stored, until it
        has settled; check that C{tls}'s first handshake finds no context
        to present (its errors flushed).

        @return: The resource, and the stored certificate C{tls} loaded.
        """
        resource = self.makeResource()
        resource.startService()
        self.addCleanup(self.stop, resource)
        runUntilFired(self.reactor, resource.whenSettled())
        loaded = tls.tls.certifiedKey
        assert loaded is not None
        self.assertRaises(NoCertificateYet, tls.tls.serverConnectionForTLS, None)
        self.flushLoggedErrors(SSL.Error)
        return resource, loaded

    def test_provisionalThenOrdered(self) -> None:
        """
        The handshake refused logs event 20260; the service then presents
        a provisional certificate, then a new CA-issued one, the order
        having started without waiting for the next check.
        """
        tls = self.afterFirstRun()
        damaged = (
            b"no key\n"
            + self.store.values[certificateKey(REPORTS)]
            .split(b"-----END", 1)[1]
            .partition(b"\n")[2]
        )
        self.store.values[certificateKey(REPORTS)] = damaged
        state = json.loads(self.store.values[renewalKey(REPORTS)])
        state["certificate_digest"] = bundleDigest(damaged)
        self.store.values[renewalKey(REPORTS)] = json.dumps(state).encode()
        resource, loaded = self.refusedAtRestart(tls)
        self.assertTrue(loaded.keyChecked)
        self.assertIsNot(self.assertReplacedAtOnce(resource, tls), loaded)

    def test_matchingKeyKept(self) -> None:
        """
        A context refused for a key that matches its certificate (a local
        OpenSSL policy, say, which would refuse every new certificate too)
        is not the key's fault: the set keeps its certificate, no event
        20260, no order, instead of ordering every set again and again.
        """
        tls = self.afterFirstRun()

        def refused(certifiedKey: CertifiedKey) -> SSL.Context:
            raise SSL.Error("ee key too small")

        self.patch(tlsModule, "serverContext", refused)
        resource, loaded = self.refusedAtRestart(tls)
        self.assertFalse(loaded.provisional)
        self.assertNotIn(20260, self.eventIDs())
        certificate = resource.managed[frozenset(REPORTS)]
        self.assertIs(certificate.current, loaded)
        self.assertIsNone(certificate.attempt)


class CheckedSplitTests(SynchronousTestCase):
    """
    L{CertifiedKey.fromCheckedPEM} splits a bundle into its key's PEM, its
    certificate and its chain, as L{CertifiedKey.toPEM} joined them.
    """

    def test_parts(self) -> None:
        """
        The key's PEM is the bundle up to the first certificate, the
        certificate is the first one (its PEM alone kept, unparsed, when
        its facts are given) and the chain the ones after it; a bundle
        without a certificate has none to read.
        """
        issued = provisionalFor(newSigner(), DOMAINS)
        keyPEM, certificatePEM = b"key part\n", issued.certificatePEM
        bundle = keyPEM + issued.fullchainPEM
        read = CertifiedKey.fromCheckedPEM(bundle, frozenset(DOMAINS))
        self.assertEqual(read.keyPEM, keyPEM)
        self.assertEqual(read.certificatePEM, certificatePEM)
        self.assertEqual(read.chain, issued.chain)
        self.assertEqual(len(read.chain), 1)
        facts = CertificateFacts(
            bundleDigest(bundle), *issued.validity, issued.issuerText, frozenset(DOMAINS)
        )
        recorded = CertifiedKey.fromCheckedPEM(bundle, frozenset(DOMAINS), facts)
        made = recorded._certificate
        assert isinstance(made, RecordedCertificate)
        self.assertEqual((recorded.keyPEM, made._pem), (keyPEM, certificatePEM))
        self.assertEqual(recorded.chain, issued.chain)
        self.assertEqual(recorded.certificate, issued.certificate)
        self.assertRaises(InvalidCertificate, CertifiedKey.fromCheckedPEM, keyPEM)
        alone = CertifiedKey.fromCheckedPEM(keyPEM + certificatePEM)
        self.assertEqual((alone.keyPEM, alone.chain), (keyPEM, ()))
