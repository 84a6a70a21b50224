"""
Tests for orders cut short: the renewal state keeps the order under way,
saved as soon as the CA created it, and the next attempt resumes it instead
of placing another, against the in-memory fake CA.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail

from letsencrypt_resource.issuer import obtainCertificate
from letsencrypt_resource.keys import generateKey, publicKeyDigest
from letsencrypt_resource.pendingorder import PendingOrder
from letsencrypt_resource.policy import FIRST_RETRY_DELAY
from letsencrypt_resource.renewer import ORDER_LEASE
from letsencrypt_resource.resource import CHECK_INTERVAL, LetsEncryptResource
from letsencrypt_resource.storage.interface import StorageError
from letsencrypt_resource.testing import BASE, advanceThrough
from tests.helpers.resourcecase import FILES, REPORTS, FailingSaves, ResourceTestCase


class ResumeTests(ResourceTestCase):
    """
    A restart or a failure during an order does not abandon it.
    """

    def cutAfterOrders(self) -> LetsEncryptResource:
        """
        Start a resource and stop it once the CA created both orders, before
        they are validated.
        """
        self.server.validationDelay = 30
        resource = self.makeResource()
        resource.startService()
        self.reactor.advance(1)
        self.assertEqual(self.server.ordersCreated, 2)
        resource.stopService()
        return resource

    def pendingOrder(self, domains: tuple[str, ...]) -> PendingOrder:
        return PendingOrder.fromJSON(self.store.loadRenewalState(domains)["pending_order"])

    def setPendingOrder(self, url: str) -> None:
        """
        Save a state for L{REPORTS} whose order under way is at C{url}.
        """
        resource = self.makeResource()
        resource.load()
        self.store.saveRenewalState(
            REPORTS,
            {
                "settings": resource.managed[frozenset(REPORTS)].settings,
                "pending_order": PendingOrder(url, generateKey("ecdsa-p256")).toJSON(),
            },
        )

    def test_savedBeforeValidation(self) -> None:
        """
        The order's URL and key are in the renewal state once the CA
        created it, before any challenge is answered; a success forgets it.
        """
        self.server.fail("/chall/", 200, body=b"{}", times=None)
        resource = self.makeResource()
        resource.startService()
        self.addCleanup(self.stop, resource)
        self.reactor.advance(1)
        pending = self.pendingOrder(REPORTS)
        self.assertTrue(pending.url.startswith(f"{BASE}/order/"))
        self.server.faults.clear()
        resource.stopService()
        self.start()
        current = self.consumers["reports"].received[-1]
        self.assertEqual(publicKeyDigest(current.key), publicKeyDigest(pending.key))
        self.assertIsNone(self.store.loadRenewalState(REPORTS)["pending_order"])

    def test_cutStartsMakeOneOrder(self) -> None:
        """
        Five starts cut after the CA created the orders, then one that runs
        on: the CA saw one order per domain set, and each resumed one (20191)
        ends in a certificate for the key saved with it.
        """
        for _ in range(5):
            self.cutAfterOrders()
        pending = self.pendingOrder(FILES)
        self.start()
        self.assertEqual(self.server.ordersCreated, 2)
        current = self.consumers["files"].received[-1]
        self.assertFalse(current.provisional)
        self.assertEqual(publicKeyDigest(current.key), publicKeyDigest(pending.key))
        self.assertEqual(self.eventIDs().count(20191), 2 * 5)

    def test_invalidOrderReplaced(self) -> None:
        """
        An order that became invalid while the server was down is dropped
        (20192) and a new one placed at once.
        """
        self.cutAfterOrders()
        self.reactor.advance(60)
        self.start()
        self.assertEqual(self.server.ordersCreated, 4)
        self.assertFalse(self.consumers["reports"].received[-1].provisional)
        self.assertTrue(any("it is invalid" in t for t in self.eventTexts(20192)))

    def test_goneOrderReplaced(self) -> None:
        """
        An order the CA no longer knows is dropped and a new one placed.
        """
        self.setPendingOrder(f"{BASE}/order/999999")
        self.start()
        self.assertEqual(self.server.ordersCreated, 2)
        self.assertFalse(self.consumers["reports"].received[-1].provisional)
        [text] = self.eventTexts(20192)
        self.assertIn("the CA refused it", text)

    def test_foreignURLNotFetched(self) -> None:
        """
        An order URL that is not on the CA's server (a damaged or forged
        state) is never requested.
        """
        self.setPendingOrder("https://elsewhere.test/order/1")
        self.start()
        [text] = self.eventTexts(20192)
        self.assertIn("not on the CA's server", text)
        self.assertFalse(self.consumers["reports"].received[-1].provisional)

    def test_unreachableCAKeepsOrder(self) -> None:
        """
        When the CA fails during the order (here at finalization), the next
        attempt resumes it from where it is (ready).
        """
        self.server.fail("/finalize/", 503, body=b"down", times=1)
        self.start()
        self.assertEqual(self.eventIDs().count(20017), 1)
        advanceThrough(self.reactor, 2 * FIRST_RETRY_DELAY)
        self.assertEqual(self.server.ordersCreated, 2)
        self.assertFalse(self.consumers["files"].received[-1].provisional)
        self.assertFalse(self.consumers["reports"].received[-1].provisional)
        [text] = self.eventTexts(20191)
        self.assertIn("left ready", text)

    def test_wrongCertificateDropsOrder(self) -> None:
        """
        When the CA's certificate is refused, the order is dropped: the
        next attempt places a new one instead of downloading it again.
        """
        other = generateKey("ecdsa-p256")
        issue = self.server.issue
        self.server.issue = (  # type: ignore[method-assign]
            lambda publicKey, names, validity=None: issue(other.public_key(), names, validity)
        )
        self.start()
        self.assertIsNone(self.store.loadRenewalState(REPORTS)["pending_order"])
        self.server.issue = issue  # type: ignore[method-assign]
        advanceThrough(self.reactor, 2 * FIRST_RETRY_DELAY)
        self.assertEqual(self.server.ordersCreated, 4)
        self.assertFalse(self.consumers["reports"].received[-1].provisional)

    def test_unstoredCertificateDownloadedAgain(self) -> None:
        """
        While an issued certificate cannot be stored, the saved state keeps
        the order that got it: a restart before the write works downloads
        it from that order again (20191) instead of placing another, and
        forgets the order once it is stored.
        """
        self.store = FailingSaves()
        self.store.failing.add("saveCertificate")
        resource = self.start()
        issued = self.consumers["reports"].received[-1]
        self.assertFalse(issued.provisional)
        self.assertIsNone(self.store.loadCertificate(REPORTS))
        self.assertIsNotNone(self.store.loadRenewalState(REPORTS)["pending_order"])
        self.assertEqual(self.store.loadRenewalState(REPORTS)["failures"], 0)
        resource.stopService()
        self.store.failing.clear()
        self.start()
        self.assertEqual(self.server.ordersCreated, 2)
        self.assertEqual(self.eventIDs().count(20191), 2)
        stored = self.store.loadCertificate(REPORTS)
        self.assertEqual(stored.certificate, issued.certificate)
        self.assertIsNone(self.store.loadRenewalState(REPORTS)["pending_order"])

    def test_storedLaterForgetsOrder(self) -> None:
        """
        Without a restart, the certificate's write is tried again; once it
        works, the order is forgotten, and no renewal meanwhile resumes it.
        """
        self.store = FailingSaves()
        self.store.failing.add("saveCertificate")
        self.start()
        self.store.failing.clear()
        advanceThrough(self.reactor, 2 * FIRST_RETRY_DELAY)
        self.assertIsNotNone(self.store.loadCertificate(REPORTS))
        self.assertIsNone(self.store.loadRenewalState(REPORTS)["pending_order"])
        self.assertEqual(self.server.ordersCreated, 2)
        self.assertNotIn(20191, self.eventIDs())


class ValidationEndTests(ResourceTestCase):
    """
    Every challenge token an order publishes is withdrawn once its
    validations have ended, whichever way they end.
    """

    def test_lateTokenWithdrawn(self) -> None:
        """
        When one validation fails while another still waits for its
        authorization, the other is cancelled and waited for: no token is
        published after the order has ended, and none is left in memory or
        in the storage.
        """
        resource = self.start()
        client = self.successResultOf(resource.acmeClient())
        realFetch = client.fetch
        held: list[tuple[str, Any, Deferred[Any]]] = []
        published: list[str] = []

        def fetch(url: str, kind: Any) -> Any:
            if kind.__name__ == "Authorization" and not held:
                held.append((url, kind, Deferred()))
                return held[-1][2]
            return realFetch(url, kind)

        def publish(token: str, keyAuthorization: str) -> Deferred[None]:
            published.append(token)
            if len(published) == 1:
                return fail(StorageError("challenges/" + token, "down"))
            return resource.records.saveChallenge(token, keyAuthorization)

        client.fetch = fetch  # type: ignore[method-assign]
        ordering = obtainCertificate(
            client,
            resource.responder,
            self.reactor,
            FILES,
            generateKey("ecdsa-p256"),
            publish=publish,
            withdraw=resource.records.deleteChallenge,
        )
        self.failureResultOf(ordering, StorageError)
        [(url, kind, late)] = held
        if not late.called:
            realFetch(url, kind).chainDeferred(late)
        self.reactor.advance(1)
        self.assertEqual(len(published), 1)
        self.assertEqual(len(resource.responder), 0)
        self.assertEqual(self.store.keys("challenges/"), [])

    def test_leftTokensRemoved(self) -> None:
        """
        Tokens left in the storage by a process killed during a validation
        are removed (20204) at the first look at least an order's lease
        time after they were first seen; a token published since is kept.
        """
        self.store.saveChallenge("left_token", "left_token.thumb")
        resource = self.start()
        self.reactor.advance(ORDER_LEASE)
        self.store.saveChallenge("new_token", "new_token.thumb")
        advanceThrough(self.reactor, CHECK_INTERVAL)
        self.assertEqual(self.store.keys("challenges/"), ["challenges/new_token"])
        self.assertEqual(len(self.eventTexts(20204)), 1)
        self.assertTrue(resource.running)
