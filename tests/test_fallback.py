"""
Fallback CAs: their configuration, the rule choosing the CA of each
attempt, its events, and renewal information asked of the issuing CA only.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import Logger, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource.caoptions import CAOptions
from letsencrypt_resource.carotation import CARotation, chosenIndex, issuingCA, optionsFor
from letsencrypt_resource.config import ConfigurationError, parseConfiguration
from letsencrypt_resource.connection import AccountConnection
from letsencrypt_resource.host import checkCA
from letsencrypt_resource.issuer import PendingOrder
from letsencrypt_resource.keys import generateKey
from letsencrypt_resource.managed import ManagedCertificate
from letsencrypt_resource.operations import Operations
from letsencrypt_resource.testing import runUntilFired
from tests.helpers.configuration import BASE, resource, section, service
from tests.helpers.resourcecase import ResourceTestCase, resourceOptions

FIRST = "https://first.example/directory"
SECOND = "https://second.example/directory"
THIRD = "https://third.example/directory"


def parse(text: str) -> Any:
    return parseConfiguration(text, BASE)


def withFallbacks(names: str, *sections: str, **overrides: str) -> str:
    """
    A configuration whose resource names C{names} in C{fallback_cas},
    followed by C{sections}.
    """
    return resource(acme_url=FIRST, fallback_cas=names, **overrides) + service() + "".join(sections)


class ConfigurationTests(SynchronousTestCase):
    """
    The C{fallback_cas} and C{fallback_after} options and the C{[cas/<id>]}
    sections.
    """

    def assertConfigurationError(
        self, text: str, where: tuple[str | None, str | None], fragment: str
    ) -> None:
        """
        Parsing C{text} fails at the section and option C{where}, saying
        C{fragment}.
        """
        error = self.assertRaises(ConfigurationError, parse, text)
        self.assertEqual((error.section, error.option), where)
        self.assertIn(fragment, error.message)

    def test_noneByDefault(self) -> None:
        """
        A configuration without the options has no fallback CA, and would
        move on after 3 failed attempts if it had one.
        """
        options = parse(resource() + service()).resource
        self.assertEqual((options.fallbackCANames, options.fallbackCAs), ((), ()))
        self.assertEqual(options.fallbackAfter, 3)

    def test_inOrder(self) -> None:
        """
        The CAs are read from the sections named, in their order, with
        relative paths resolved against the configuration's folder.
        """
        options = parse(
            withFallbacks(
                "cas/second, cas/third",
                section("cas/third", {"acme_url": THIRD, "acme_ca_file": "third.pem"}),
                section(
                    "cas/second",
                    {
                        "acme_url": SECOND,
                        "eab_kid": "kid",
                        "eab_hmac_key": "c2VjcmV0",
                        "profile": "tlsserver",
                    },
                ),
                fallback_after="2",
            )
        ).resource
        self.assertEqual(options.fallbackAfter, 2)
        self.assertEqual(
            options.fallbackCAs,
            (
                CAOptions(
                    section="cas/second",
                    acmeURL=SECOND,
                    eabKid="kid",
                    eabHMACKey="c2VjcmV0",
                    profile="tlsserver",
                ),
                CAOptions(
                    section="cas/third",
                    acmeURL=THIRD,
                    acmeCAFile=os.path.join(BASE, "third.pem"),
                ),
            ),
        )

    def test_missingSection(self) -> None:
        """
        A name with no section is refused.
        """
        self.assertConfigurationError(
            withFallbacks("cas/gone"),
            ("resources/r1", "fallback_cas"),
            "there is no [cas/gone] section",
        )

    def test_notCASection(self) -> None:
        """
        A name that is not a C{cas/<id>} section is refused.
        """
        self.assertConfigurationError(
            withFallbacks("services/s1"),
            ("resources/r1", "fallback_cas"),
            "is not the name of a [cas/<id>] section",
        )

    def test_namedTwice(self) -> None:
        """
        A section named twice is refused.
        """
        self.assertConfigurationError(
            withFallbacks("cas/b cas/b", section("cas/b", {"acme_url": SECOND})),
            ("resources/r1", "fallback_cas"),
            "named twice",
        )

    def test_sameURL(self) -> None:
        """
        A fallback CA at the resource's own URL, or at another fallback's,
        is refused: each CA is listed once.
        """
        self.assertConfigurationError(
            withFallbacks("cas/b", section("cas/b", {"acme_url": FIRST + "/"})),
            ("cas/b", "acme_url"),
            "each CA is listed once",
        )
        self.assertConfigurationError(
            withFallbacks(
                "cas/b cas/c",
                section("cas/b", {"acme_url": SECOND}),
                section("cas/c", {"acme_url": SECOND}),
            ),
            ("cas/c", "acme_url"),
            "each CA is listed once",
        )

    def test_sectionChecked(self) -> None:
        """
        A C{[cas/<id>]} section needs C{acme_url}, takes no unknown option
        and needs both EAB options or neither, even when no resource names
        it.
        """
        self.assertConfigurationError(
            resource() + service() + section("cas/b", {"profile": "x"}),
            ("cas/b", "acme_url"),
            "is required",
        )
        self.assertConfigurationError(
            resource() + service() + section("cas/b", {"acme_url": SECOND, "key_type": "rsa"}),
            ("cas/b", "key_type"),
            "unknown option",
        )
        self.assertConfigurationError(
            resource() + service() + section("cas/b", {"acme_url": SECOND, "eab_kid": "k"}),
            ("cas/b", "eab_hmac_key"),
            "needs both",
        )

    def test_fallbackAfterRange(self) -> None:
        """
        C{fallback_after} is a whole number from 1 to 100.
        """
        for value in ("0", "101", "two"):
            self.assertRaises(ConfigurationError, parse, resource(fallback_after=value) + service())

    def test_unusableBundle(self) -> None:
        """
        A fallback CA's C{acme_ca_file} that holds no certificate is
        refused, at its section, by the checks before start.
        """
        path = self.mktemp()
        with open(path, "w") as stream:
            stream.write("not a certificate\n")
        configuration = parse(
            withFallbacks("cas/b", section("cas/b", {"acme_url": SECOND, "acme_ca_file": path}))
        )
        error = self.assertRaises(ConfigurationError, checkCA, configuration)
        self.assertEqual((error.section, error.option), ("cas/b", "acme_ca_file"))


def rotation(*urls: str, after: int = 3) -> tuple[CARotation, list[str | None]]:
    """
    A L{CARotation} over the resource's CA and fallbacks at C{urls}, and the
    list of the C{acme_ca_file} each fallback's HTTP client was asked for.
    """
    fallbacks = tuple(
        CAOptions(section=f"cas/{n}", acmeURL=url, acmeCAFile=f"/ca{n}.pem")
        for n, url in enumerate(urls)
    )
    options = resourceOptions(
        acmeURL=FIRST,
        accountKeyFile="/etc/account.pem",
        fallbackAfter=after,
        fallbackCAs=fallbacks,
    )
    connection = AccountConnection(options, None, None, None, None, None)  # type: ignore[arg-type]
    asked: list[str | None] = []

    def httpFor(caFile: str | None) -> object:
        asked.append(caFile)
        return object()

    return CARotation(options, connection, httpFor, Logger()), asked


class RotationTests(SynchronousTestCase):
    """
    L{CARotation}: which CA each attempt uses.
    """

    def test_chosenIndex(self) -> None:
        """
        Each CA has C{after} failed attempts in turn, then the first again.
        """
        self.assertEqual(
            [chosenIndex(failures, 2, 3) for failures in range(8)], [0, 0, 1, 1, 2, 2, 0, 0]
        )
        self.assertEqual([chosenIndex(failures, 3, 1) for failures in range(5)], [0] * 5)

    def test_optionsFor(self) -> None:
        """
        A fallback CA's options are the resource's with its URL, CA bundle,
        EAB and profile, and no C{account_key}: the key file names an
        account at the first CA.
        """
        base = resourceOptions(
            acmeURL=FIRST, accountKeyFile="/k.pem", profile="classic", eabKid="a", eabHMACKey="b"
        )
        options = optionsFor(base, CAOptions(section="cas/b", acmeURL=SECOND, profile="short"))
        self.assertEqual(
            (options.acmeURL, options.acmeCAFile, options.eabKid, options.eabHMACKey),
            (SECOND, None, None, None),
        )
        self.assertEqual((options.profile, options.accountKeyFile), ("short", None))
        self.assertEqual(options.keyType, base.keyType)

    def test_termsAgreedPerCA(self) -> None:
        """
        The resource's C{agree_tos} is an agreement to its own CA's terms
        only: a fallback CA's account agrees to its terms when its own
        section says so.
        """
        base = resourceOptions(acmeURL=FIRST, agreeTOS=True)
        self.assertFalse(optionsFor(base, CAOptions(section="cas/b", acmeURL=SECOND)).agreeTOS)
        agreed = CAOptions(section="cas/b", acmeURL=SECOND, agreeTOS=True)
        self.assertTrue(optionsFor(base, agreed).agreeTOS)

    def test_connections(self) -> None:
        """
        Each CA has a connection of its own, with its options and an HTTP
        client trusting its C{acme_ca_file}.
        """
        cas, asked = rotation(SECOND, THIRD)
        self.assertEqual([ca.options.acmeURL for ca in cas.all], [FIRST, SECOND, THIRD])
        self.assertEqual(asked, ["/ca0.pem", "/ca1.pem"])
        self.assertEqual(len({id(ca.connection) for ca in cas.all}), 3)
        self.assertEqual(cas.all[1].connection._options, cas.all[1].options)

    def test_switchAndBack(self) -> None:
        """
        After C{after} failures, the next CA is chosen, with event 20265
        once; after a success the first is chosen again, with event 20266
        once.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        cas, _ = rotation(SECOND, after=2)
        certificate = ManagedCertificate(("a.example",))
        chosen = []
        for failures in (0, 1, 2, 3, 0, 0):
            certificate.failures = failures
            chosen.append(cas.choose(certificate).options.acmeURL)
        self.assertEqual(chosen, [FIRST, FIRST, SECOND, SECOND, FIRST, FIRST])
        ids = [e.get("event_id") for e in events]
        self.assertEqual((ids.count(20265), ids.count(20266)), (1, 1))

    def test_backAfterRestart(self) -> None:
        """
        Before any attempt, the CA before is the one that issued the
        certificate in service: one issued by a fallback makes the first
        choice of the first CA event 20266.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        cas, _ = rotation(SECOND)
        certificate = ManagedCertificate(("a.example",))
        certificate.orderedBy = ("id", SECOND, "account")
        cas.choose(certificate)
        self.assertEqual([e.get("event_id") for e in events], [20266])

    def test_issuerOf(self) -> None:
        """
        The issuing CA is the one whose URL the state records; the first
        when none is recorded (older state); none for a URL no longer
        configured.
        """
        cas, _ = rotation(SECOND)
        certificate = ManagedCertificate(("a.example",))
        self.assertIs(cas.issuerOf(certificate), cas.primary)
        self.assertEqual(issuingCA(certificate, cas.primary.options), FIRST)
        certificate.orderedBy = ("id", SECOND, "account")
        self.assertIs(cas.issuerOf(certificate), cas.all[1])
        certificate.orderedBy = ("id", THIRD, "account")
        self.assertIsNone(cas.issuerOf(certificate))
        self.assertEqual(issuingCA(certificate, cas.primary.options), THIRD)


class RenewalInformationTests(ResourceTestCase):
    """
    Renewal information is asked of the CA that issued the certificate.
    """

    def renewalInfoRequests(self, issuedBy: str | None) -> int:
        """
        Start a resource with a fallback CA, record C{issuedBy} as the CA
        of every certificate (unless C{None}), make renewal information due
        and check: how many renewal information requests the first CA got;
        either way, the sets are not due again at once.
        """
        self.server.offerRenewalInfo = True
        resource = self.start(
            fallbackCAs=(CAOptions(section="cas/b", acmeURL=SECOND),),
        )
        for certificate in resource.managed.values():
            if issuedBy is not None:
                assert certificate.orderedBy is not None
                identifier, _, account = certificate.orderedBy
                certificate.orderedBy = (identifier, issuedBy, account)
            certificate.ariNextCheck = 0.0
        del self.server.requests[:]
        runUntilFired(self.reactor, resource.check())
        now = self.reactor.seconds()
        for certificate in resource.managed.values():
            # Asked or not, not due again at once: no busy loop of checks.
            self.assertGreater(certificate.nextEvent(True), now)
        return sum(path.startswith("/renewal-info/") for _, path in self.server.requests)

    def test_issuingCAAsked(self) -> None:
        """
        A certificate the first CA issued has its renewal information
        asked of it.
        """
        self.assertEqual(self.renewalInfoRequests(None), 2)

    def test_otherCANotAsked(self) -> None:
        """
        A certificate a fallback CA issued has no renewal information asked
        of the first CA, which would not know it.
        """
        self.assertEqual(self.renewalInfoRequests(SECOND), 0)


class ResumeTests(ResourceTestCase):
    """
    An order saved while one CA was used is resumed with that CA only.
    """

    def test_orderAtOtherCANotResumed(self) -> None:
        """
        An order a fallback CA created, still pending, is not resumed with
        the first CA (which would not know it): it is dropped as not on
        the CA's server (event 20192), never requested, and a new order is
        placed there.
        """
        fallback = CAOptions(section="cas/b", acmeURL=SECOND, agreeTOS=True)
        resource = self.start(fallbackCAs=(fallback,))
        [certificate, *_] = resource.managed.values()
        key = generateKey("ecdsa-p256")
        certificate.pendingOrder = PendingOrder("https://second.example/order/1", key)
        orders = len(self.server.orderTimes)
        del self.server.requests[:]
        runUntilFired(self.reactor, resource.check(force=True, only=[certificate]))
        self.assertEqual(certificate.failures, 0, certificate.lastError)
        self.assertEqual(len(self.server.orderTimes), orders + 1)
        self.assertNotIn("/order/1", [path for _, path in self.server.requests])
        self.assertNotIn(20191, self.eventIDs())
        [text] = self.eventTexts(20192)
        self.assertIn("not on the CA's server", text)


class RevokeTests(ResourceTestCase):
    """
    C{revoke} goes to the CA that issued the certificate.
    """

    def revokedWith(self, issuedBy: str | None) -> list[str]:
        """
        Start a resource with a fallback CA, record C{issuedBy} as the CA
        of the reports certificate (unless C{None}), revoke it: the
        directory URLs that then have an account stored.
        """
        fallback = CAOptions(section="cas/b", acmeURL=SECOND, agreeTOS=True)
        resource = self.start(fallbackCAs=(fallback,))
        operations = Operations(resource, self.reactor)
        [certificate] = operations.select(["reports.example.test"])
        if issuedBy is not None:
            assert certificate.orderedBy is not None
            identifier, _, account = certificate.orderedBy
            certificate.orderedBy = (identifier, issuedBy, account)
        runUntilFired(self.reactor, operations.revoke("reports.example.test", "superseded"))
        self.assertEqual(len(self.server.revoked), 1)
        return [
            url
            for url in (resource.options.acmeURL, SECOND)
            if runUntilFired(self.reactor, resource.records.loadAccount(url)) is not None
        ]

    def test_firstCA(self) -> None:
        """
        A certificate of the first CA is revoked with its account there.
        """
        self.assertEqual(self.revokedWith(None), [resourceOptions().acmeURL])

    def test_fallbackCA(self) -> None:
        """
        A certificate a fallback CA issued is revoked with the account at
        that CA, made for it.
        """
        self.assertEqual(self.revokedWith(SECOND), [resourceOptions().acmeURL, SECOND])
