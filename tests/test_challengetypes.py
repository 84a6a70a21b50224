"""
Tests for the option C{challenge_types}: the type each order answers, and
the fall back to the next type when a validation fails.
"""

from __future__ import annotations

from acme import messages
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource.alpn import serverName, sharedKey
from letsencrypt_resource.config import ConfigurationError, parseConfiguration
from letsencrypt_resource.issuer import obtainCertificate
from letsencrypt_resource.keys import generateKey
from letsencrypt_resource.policy import FIRST_RETRY_DELAY
from letsencrypt_resource.testing import advanceThrough
from letsencrypt_resource.testing.clock import runUntilFired
from tests.helpers.configuration import BASE, resource, service
from tests.helpers.resourcecase import FILES, ResourceTestCase


class ChallengeTypesOrderTests(ResourceTestCase):
    """
    Orders follow C{challenge_types}.  The fake CA offers only C{http-01}
    challenges.
    """

    def test_fallBackWhenNotOffered(self) -> None:
        """
        When the CA offers no challenge of the first type, the order is
        placed again with the next (20254) and ends in a certificate.
        """
        self.start(challengeTypes=("tls-alpn-01", "http-01"))
        self.assertFalse(self.consumers["files"].received[-1].provisional)
        texts = self.eventTexts(20254)
        self.assertEqual(len(texts), 2)
        self.assertTrue(all("tls-alpn-01 validation" in text for text in texts))
        self.assertTrue(all("ordering again with http-01" in text for text in texts))
        self.assertEqual(self.server.ordersCreated, 4)

    def test_onlyType(self) -> None:
        """
        With a single type the CA does not offer, the attempt fails naming
        it, and no other type is tried.
        """
        self.start(challengeTypes=("tls-alpn-01",))
        self.assertTrue(self.consumers["files"].received[-1].provisional)
        self.assertEqual(self.eventTexts(20254), [])
        self.assertTrue(
            any("offers no tls-alpn-01 challenge" in text for text in self.eventTexts(20017))
        )

    def test_orderNotOfferedEnds(self) -> None:
        """
        An order whose authorization offers no challenge of the only type
        asked is not kept: the next attempt places a new order rather than
        resume (20191) the one that cannot succeed.
        """
        self.start(challengeTypes=("tls-alpn-01",))
        self.assertIsNone(self.store.loadRenewalState(FILES)["pending_order"])
        created = self.server.ordersCreated
        advanceThrough(self.reactor, 2 * FIRST_RETRY_DELAY)
        self.assertGreater(self.server.ordersCreated, created)
        self.assertNotIn(20191, self.eventIDs())

    def test_fallBackAfterFailedValidation(self) -> None:
        """
        A failed validation with the first type falls back to the next one,
        naming the CA's problem.
        """
        self.server.refuse.update(FILES)
        self.start(challengeTypes=("http-01", "tls-alpn-01"))
        [text] = [t for t in self.eventTexts(20254) if FILES[0] in t]
        self.assertIn("The http-01 validation", text)
        self.assertIn("no key authorization served", text)
        self.assertIn("ordering again with tls-alpn-01", text)

    def test_refusedOrderNotRetried(self) -> None:
        """
        A refusal of the order itself (the CA answered with an HTTP error)
        is not retried with another type.
        """
        problem = messages.Error.with_code("rejectedIdentifier", detail="not here")
        self.server.fail("/new-order", 400, problem=problem, times=None)
        self.start(challengeTypes=("http-01", "tls-alpn-01"))
        self.assertEqual(self.eventTexts(20254), [])
        self.assertTrue(any("not here" in text for text in self.eventTexts(20017)))


class TLSALPNOrderTests(ResourceTestCase):
    """
    Orders that answer C{tls-alpn-01}, with a fake CA that offers it.
    """

    def setUp(self) -> None:
        super().setUp()
        self.server.offerALPN = True

    def test_issued(self) -> None:
        """
        The order answers the tls-alpn-01 challenge, not the http-01 one,
        and the certificate is issued; nothing is left pending.
        """
        resource = self.start(challengeTypes=("tls-alpn-01",))
        self.assertFalse(self.consumers["files"].received[-1].provisional)
        answered = [path for method, path in self.server.requests if "/chall" in path]
        self.assertTrue(answered)
        self.assertTrue(all(path.startswith("/chall-alpn/") for path in answered))
        self.assertEqual(len(resource.responder), 0)

    def test_published(self) -> None:
        """
        Each tls-alpn-01 challenge is published, before it is answered,
        under the key derived from its SNI name, as its identifier and key
        authorization; and withdrawn once validated.
        """
        resource = self.makeResource(challengeTypes=("tls-alpn-01",))
        client = self.successResultOf(resource.acmeClient())
        published: dict[str, str] = {}

        def publish(token: str, record: str) -> None:
            published[token] = record
            self.assertIsNotNone(resource.responder.lookupALPN(serverName(record.split()[0])))

        withdrawn: list[str] = []
        runUntilFired(
            self.reactor,
            obtainCertificate(
                client,
                resource.responder,
                self.reactor,
                FILES,
                generateKey("ecdsa-p256"),
                challengeType="tls-alpn-01",
                publish=publish,
                withdraw=withdrawn.append,
            ),
        )
        self.assertEqual(sorted(published), sorted(sharedKey(name) for name in FILES))
        for name in FILES:
            identifier, keyAuthorization = published[sharedKey(name)].split(" ")
            self.assertEqual(identifier, name)
            self.assertIn(".", keyAuthorization)
        self.assertEqual(sorted(withdrawn), sorted(published))

    def test_fallBackToTLSALPN(self) -> None:
        """
        When the http-01 validation fails (nothing answers it), the order
        is placed again answering tls-alpn-01, and issued.
        """
        resource = self.makeResource(challengeTypes=("http-01", "tls-alpn-01"))
        self.server.validate = lambda token: None
        resource.startService()
        self.addCleanup(self.stop, resource)
        runUntilFired(self.reactor, resource.whenSettled())
        self.assertFalse(self.consumers["files"].received[-1].provisional)
        self.assertEqual(len(self.eventTexts(20254)), 2)
        self.assertNotIn(20017, self.eventIDs())


class ChallengeTypesOptionTests(SynchronousTestCase):
    """
    Tests for reading C{challenge_types}.
    """

    def read(self, value: str | None) -> tuple[str, ...]:
        configuration = parseConfiguration(resource(challenge_types=value) + service(), BASE)
        assert configuration.resource is not None
        return configuration.resource.challengeTypes

    def test_default(self) -> None:
        """
        By default, orders answer http-01 only.
        """
        self.assertEqual(self.read(None), ("http-01",))

    def test_order(self) -> None:
        """
        The types are kept in the order given, in lower case.
        """
        self.assertEqual(self.read(" TLS-ALPN-01 , http-01"), ("tls-alpn-01", "http-01"))

    def test_refused(self) -> None:
        """
        An unknown type, a repeat, or an empty entry is refused, naming the
        option.
        """
        for value, expected in [
            ("dns-01", "'dns-01' is not one of: http-01, tls-alpn-01"),
            ("http-01, http-01", "twice"),
            ("http-01,", "'' is not one of"),
        ]:
            error = self.assertRaises(
                ConfigurationError,
                parseConfiguration,
                resource(challenge_types=value) + service(),
                BASE,
            )
            self.assertEqual(error.option, "challenge_types")
            self.assertIn(expected, error.message)
