"""
Tests for the option C{challenge_types}: the type each order answers, and
the fall back to the next type when a validation fails.
"""

from __future__ import annotations

from acme import messages
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource.config import ConfigurationError, parseConfiguration
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
