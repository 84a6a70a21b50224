"""
Tests for a stored key read at its first use (L{CertifiedKey.fromCheckedPEM})
that cannot be read: where the key is read, it is handled, not raised.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import Logger, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource.certificates import CertifiedKey
from letsencrypt_resource.keys import generateKey, publicKeyDigest
from letsencrypt_resource.managed import KEY_UNREADABLE, ManagedCertificate
from letsencrypt_resource.operations import Operations
from letsencrypt_resource.storedchanges import StoredChanges
from letsencrypt_resource.testing import runUntilFired
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
