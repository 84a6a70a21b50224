"""
Tests for keys revoked as compromised: C{revoke --reason keyCompromise}
records the key in the renewal state, and the resource never uses it
again, whatever C{reuse_key} says and across restarts.
"""

from __future__ import annotations

from typing import Any

from letsencrypt_resource.keys import publicKeyDigest
from letsencrypt_resource.managed import ManagedCertificate
from letsencrypt_resource.operations import OperationError, Operations
from letsencrypt_resource.policy import FIRST_RETRY_DELAY
from letsencrypt_resource.resource import LetsEncryptResource
from letsencrypt_resource.storage.records import AccountRecord
from letsencrypt_resource.testing import advanceThrough, runUntilFired
from tests.helpers.resourcecase import ACME_URL, REPORTS, ResourceTestCase


class CompromisedKeyTests(ResourceTestCase):
    """
    A key revoked for compromise is never used again.
    """

    def revoke(self, resource: LetsEncryptResource, reason: str) -> Any:
        return runUntilFired(
            self.reactor, Operations(resource, self.reactor).revoke(REPORTS[0], reason)
        )

    def test_notReusedWithReuseKey(self) -> None:
        """
        With C{reuse_key = yes}, the replacement after a revocation for
        key compromise is for a new key, the key is recorded (20193) in the
        renewal state, and the CA revoked the certificate for reason 1.
        """
        resource = self.start(reuseKey=True)
        old = self.consumers["reports"].received[-1]
        self.revoke(resource, "keyCompromise")
        new = self.consumers["reports"].received[-1]
        self.assertFalse(new.provisional)
        self.assertIsNot(new, old)
        self.assertNotEqual(publicKeyDigest(new.key), publicKeyDigest(old.key))
        state = self.store.loadRenewalState(REPORTS)
        self.assertEqual(state["compromised_keys"], [publicKeyDigest(old.key)])
        self.assertEqual(list(self.server.revoked.values()), [1])
        self.assertEqual(self.eventIDs().count(20193), 1)

    def test_otherReasonsReuseKey(self) -> None:
        """
        Other revocation reasons keep C{reuse_key}: the replacement is for
        the same key, and no key is recorded.
        """
        resource = self.start(reuseKey=True)
        old = self.consumers["reports"].received[-1]
        self.revoke(resource, "superseded")
        new = self.consumers["reports"].received[-1]
        self.assertIsNot(new, old)
        self.assertEqual(publicKeyDigest(new.key), publicKeyDigest(old.key))
        self.assertEqual(self.store.loadRenewalState(REPORTS)["compromised_keys"], [])

    def revokeWithoutReplacement(self) -> tuple[LetsEncryptResource, Any]:
        """
        Revoke the reports certificate for key compromise, with
        C{reuse_key = yes}, while the CA refuses the replacement order once.

        @return: The resource and the revoked certificate, still in service.
        """
        resource = self.start(reuseKey=True)
        old = self.consumers["reports"].received[-1]
        self.server.fail("/new-order", 503, body=b"down", times=1)
        error = self.assertRaises(OperationError, self.revoke, resource, "keyCompromise")
        self.assertIn("replacement failed", str(error))
        self.assertIs(self.consumers["reports"].received[-1], old)
        return resource, old

    def test_storedCertificateNotRestored(self) -> None:
        """
        When the replacement fails, the revoked certificate stays stored,
        but a restart does not put it back in service (20190): the services
        get a provisional certificate, then, at the retry, one for a new
        key.
        """
        resource, old = self.revokeWithoutReplacement()
        resource.stopService()
        self.consumers["reports"].received.clear()
        self.start(reuseKey=True)
        advanceThrough(self.reactor, 2 * FIRST_RETRY_DELAY)
        first, second = self.consumers["reports"].received
        self.assertTrue(first.provisional)
        self.assertFalse(second.provisional)
        self.assertNotEqual(publicKeyDigest(second.key), publicKeyDigest(old.key))
        self.assertEqual(self.eventIDs().count(20190), 1)

    def test_retriedUntilReplaced(self) -> None:
        """
        When the replacement fails, the set stays due and is retried after
        the usual wait, not at the revoked certificate's renewal time.
        """
        resource, old = self.revokeWithoutReplacement()
        advanceThrough(self.reactor, 2 * FIRST_RETRY_DELAY)
        new = self.consumers["reports"].received[-1]
        self.assertFalse(new.provisional)
        self.assertNotEqual(publicKeyDigest(new.key), publicKeyDigest(old.key))

    def test_nothingRevokedWhenNotRecorded(self) -> None:
        """
        When the record cannot be written, the command fails and nothing is
        revoked.
        """
        resource = self.start()
        self.store.failWrites = True
        error = self.assertRaises(OperationError, self.revoke, resource, "keyCompromise")
        self.assertIn("nothing was revoked", str(error))
        self.assertEqual(self.server.revoked, {})

    def test_notMarkedWhenNotRecorded(self) -> None:
        """
        When the record cannot be written, the key is not left marked
        either: once writes work, the state saved has no compromised key,
        and the certificate is kept, not replaced.
        """
        resource = self.start()
        old = self.consumers["reports"].received[-1]
        orders = self.server.ordersCreated
        self.store.failWrites = True
        self.assertRaises(OperationError, self.revoke, resource, "keyCompromise")
        self.store.failWrites = False
        advanceThrough(self.reactor, 2 * FIRST_RETRY_DELAY)
        self.assertEqual(self.store.loadRenewalState(REPORTS)["compromised_keys"], [])
        self.assertIs(self.consumers["reports"].received[-1], old)
        self.assertEqual(self.server.ordersCreated, orders)

    def test_earlierMarkKept(self) -> None:
        """
        A key recorded as compromised by an earlier command stays recorded
        when a later one cannot write the state.
        """
        resource = self.start()
        key = self.consumers["reports"].received[-1].key
        certificate = resource.managed[frozenset(REPORTS)]
        certificate.markCompromised(key)
        self.store.failWrites = True
        self.assertRaises(OperationError, self.revoke, resource, "keyCompromise")
        self.assertTrue(certificate.isCompromised(key))

    def test_compromisedAccountKeyRefused(self) -> None:
        """
        When the revoked key is the account key, no order is placed with
        that account: the error says to roll the account key over.
        """
        resource = self.start()
        key = self.consumers["reports"].received[-1].key
        [acmeURL] = self.store.accountURLs(ACME_URL)
        self.store.saveAccount(acmeURL, AccountRecord(key))
        resource.forgetAccount()
        orders = self.server.ordersCreated
        self.assertRaises(OperationError, self.revoke, resource, "keyCompromise")
        self.assertEqual(self.server.ordersCreated, orders)
        [text] = self.eventTexts(20017)
        self.assertIn("revoked as compromised", text)
        self.assertIn("account rollover", text)


class RecordTests(ResourceTestCase):
    """
    How the renewal state keeps the compromised keys.
    """

    def test_keptWhateverElse(self) -> None:
        """
        The compromised keys are taken back from a state saved under other
        settings, or whose other fields are damaged; malformed entries are
        ignored.
        """
        digest = "ab" * 32
        for state in (
            {"settings": "other", "compromised_keys": [digest]},
            {"failures": "many", "compromised_keys": [digest, 3, "zz", None]},
        ):
            certificate = ManagedCertificate(REPORTS, "current")
            certificate.restore(state)
            self.assertEqual(certificate.compromisedKeys, {digest})
            self.assertEqual(certificate.state()["compromised_keys"], [digest])
