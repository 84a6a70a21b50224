"""
Fallback CAs: their configuration, the rule choosing the CA of each
attempt, its events, and renewal information asked of the issuing CA only.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from typing import Any

from acme import messages
from prometheus_client import generate_latest
from treq.testing import RequestTraversalAgent
from twisted.internet.defer import Deferred, succeed
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import Logger, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource import carotation, ordering, owned
from letsencrypt_resource.account import AccountError
from letsencrypt_resource.acmetransport import ACMEProblem, ACMEProtocolError
from letsencrypt_resource.caoptions import CAOptions
from letsencrypt_resource.carotation import (
    CARotation,
    issuingCA,
    movesOn,
    optionsFor,
    switchTime,
)
from letsencrypt_resource.castreak import MOST_FAILURES, CAStreak
from letsencrypt_resource.cli import parser, request
from letsencrypt_resource.composition import compose
from letsencrypt_resource.config import ConfigurationError, canonicalURL, parseConfiguration
from letsencrypt_resource.connection import AccountConnection
from letsencrypt_resource.control import dispatch
from letsencrypt_resource.host import checkCA
from letsencrypt_resource.issuer import (
    CertificateMismatch,
    ChallengeNotOffered,
    OrderTimedOut,
    PendingOrder,
)
from letsencrypt_resource.keys import generateKey, jwkFor
from letsencrypt_resource.managed import ManagedCertificate
from letsencrypt_resource.metrics import Metrics
from letsencrypt_resource.operations import OperationError, Operations
from letsencrypt_resource.ordering import CompromisedAccountKey, ProfileNotOffered
from letsencrypt_resource.renewalstate import restoreState
from letsencrypt_resource.resource import LetsEncryptResource
from letsencrypt_resource.retrywaits import capWaits, recordFailure
from letsencrypt_resource.storage.interface import StorageError
from letsencrypt_resource.storage.records import accountKey
from letsencrypt_resource.testing import FakeACMEServer, runUntilFired
from tests.helpers.configuration import BASE, resource, section, service
from tests.helpers.resourcecase import ACME_URL, DAY, ResourceTestCase, resourceOptions

FIRST = "https://first.example/directory"
SECOND = "https://second.example/directory"
THIRD = "https://third.example/directory"


def problem(
    code: str, status: int | None = None, *subproblems: str, detail: str = "detail"
) -> ACMEProblem:
    """
    An ACME problem C{code}, with the HTTP C{status}, C{subproblems} and
    C{detail} given.
    """
    prefix = messages.ERROR_PREFIX
    subs = tuple(messages.Error(typ=prefix + sub, detail="sub") for sub in subproblems)
    error = messages.Error(typ=prefix + code, detail=detail, subproblems=subs or None)
    return ACMEProblem(error, status)


#: Failures another CA would have had as well.
LOCAL_FAILURES = (
    StorageError("certificates/a.example.pem", "No space left on device"),
    problem("unauthorized", None),
    problem("connection", None),
    problem("compound", None, "dns", "tls", "incorrectResponse"),
    problem("malformed", 400),
    problem("badCSR", 400),
    problem("dns", 400, detail="DNS problem: NXDOMAIN looking up A for a.example"),
    CompromisedAccountKey("a.example", None),
    ValueError("anything else"),
)

#: Failures of the CA itself, or of what it offers.
CA_FAILURES = (
    ACMEProtocolError(FIRST, "cannot reach the ACME server: Connection refused"),
    ACMEProtocolError(FIRST, "the JSON body is not an object", 502),
    problem("serverInternal", 500),
    problem("malformed", 503),
    problem("rateLimited", 429),
    problem("badNonce", 400),
    problem("compound", None, "unauthorized", "caa"),
    problem("rejectedIdentifier", 400),
    problem("externalAccountRequired", 403),
    problem("invalidContact", 400),
    problem("unsupportedContact", 400),
    problem("invalidProfile", 400),
    problem("dns", 400, detail="DNS problem: SERVFAIL looking up CAA for a.example"),
    problem("compound", None, "unauthorized", "invalidContact"),
    OrderTimedOut("processing", 300.0),
    ChallengeNotOffered(FIRST, "no tls-alpn-01 challenge"),
    ProfileNotOffered("shortlived", ["classic"]),
    AccountError("agree_tos", "the CA asks new accounts to agree to its terms"),
    CertificateMismatch("the CA's certificate was refused"),
)


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

    def test_fallbackAfterTime(self) -> None:
        """
        C{fallback_after_time} is 6 hours by default, a duration from 1
        minute to 7 days, or 0 for no time limit.
        """
        self.assertEqual(parse(resource() + service()).resource.fallbackAfterTime, 6 * 3600.0)
        for value, seconds in (("30m", 1800.0), ("0", 0.0), ("2d", 172800.0), ("90", 90.0)):
            options = parse(resource(fallback_after_time=value) + service()).resource
            self.assertEqual(options.fallbackAfterTime, seconds)
        for value in ("30", "8d", "soon", "-1h"):
            self.assertRaises(
                ConfigurationError, parse, resource(fallback_after_time=value) + service()
            )

    def test_ipProfileOfEachCA(self) -> None:
        """
        A service with an IP address is refused when a fallback CA is Let's
        Encrypt without its C{shortlived} profile, even if the first CA
        issues IP address certificates; the message names that CA's
        section.  With C{shortlived} asked of it, it passes.
        """
        text = (
            resource(acme_url=FIRST, fallback_cas="cas/le")
            + service(ssl_domains="files.example.com, 192.0.2.7")
            + "{}"
        )
        leURL = "https://acme-v02.api.letsencrypt.org/directory/"
        error = self.assertRaises(
            ConfigurationError, parse, text.format(section("cas/le", {"acme_url": leURL}))
        )
        self.assertEqual((error.section, error.option), ("services/s1", "ssl_domains"))
        self.assertIn("profile = shortlived in cas/le", error.message)
        shortlived = section("cas/le", {"acme_url": leURL, "profile": "shortlived"})
        self.assertEqual(parse(text.format(shortlived)).resource.fallbackCAs[0].section, "cas/le")

    def test_acmeURLAlone(self) -> None:
        """
        An C{acme_url}, the resource's or a fallback CA's, with a user name,
        a query or a fragment (even empty) is refused, naming the option:
        no ACME client sends them, and a password would reach the metrics.
        """
        for url in (
            "https://user:secret@second.example/directory",
            "https://@second.example/directory",
            "https://second.example/directory?x=1",
            "https://second.example/directory?",
            "https://second.example/directory#top",
        ):
            error = self.assertRaises(ConfigurationError, parse, resource(acme_url=url) + service())
            self.assertEqual(error.option, "acme_url")
            self.assertIn("user name, a query or a fragment", error.message)
            self.assertConfigurationError(
                withFallbacks("cas/b", section("cas/b", {"acme_url": url})),
                ("cas/b", "acme_url"),
                "acme_url is the directory URL alone",
            )
        path = "https://second.example/a@b/directory"
        self.assertEqual(parse(resource(acme_url=path) + service()).resource.acmeURL, path)

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


def rotation(
    *urls: str, after: int = 3, afterTime: float = 0.0
) -> tuple[CARotation, list[str | None]]:
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
        fallbackAfterTime=afterTime,
        fallbackCAs=fallbacks,
    )
    connection = AccountConnection(options, None, None, None, None, None)  # type: ignore[arg-type]
    asked: list[str | None] = []

    def httpFor(caFile: str | None, acmeURL: str) -> object:
        asked.append(caFile)
        return object()

    return CARotation(options, connection, httpFor, Logger()), asked


class RotationTests(SynchronousTestCase):
    """
    L{CARotation}: which CA each attempt uses.
    """

    def test_movesOn(self) -> None:
        """
        The next CA is chosen once the failures held against the current
        one reach C{after}, or once C{afterTime} has passed since the first
        of them (never when it is 0); never without such a failure.
        """
        self.assertFalse(movesOn(CAStreak(), 1e9, 1, 60.0))
        self.assertFalse(movesOn(CAStreak(None, 2, 1000.0), 1059.0, 3, 60.0))
        self.assertTrue(movesOn(CAStreak(None, 3, 1000.0), 1000.0, 3, 60.0))
        self.assertTrue(movesOn(CAStreak(None, 1, 1000.0), 1060.0, 3, 60.0))
        self.assertFalse(movesOn(CAStreak(None, 1, 1000.0), 1e9, 3, 0.0))

    def test_switchTime(self) -> None:
        """
        The next CA takes over at the first failure's time once the count
        is reached, C{afterTime} after it otherwise; never without a
        failure held, nor by time when C{afterTime} is 0.
        """
        self.assertIsNone(switchTime(CAStreak(), 3, 60.0))
        self.assertEqual(switchTime(CAStreak(None, 3, 1000.0), 3, 60.0), 1000.0)
        self.assertEqual(switchTime(CAStreak(None, 1, 1000.0), 3, 60.0), 1060.0)
        self.assertIsNone(switchTime(CAStreak(None, 1, 1000.0), 3, 0.0))

    def test_switchTimeReturned(self) -> None:
        """
        L{CARotation.failed} gives the time the next CA takes over, also
        after a failure not held when one was held before; never without
        fallback CAs.
        """
        cas, _ = rotation(SECOND, after=5, afterTime=3600.0)
        certificate = ManagedCertificate(("a.example",))
        cas.choose(certificate, 100.0)
        self.assertEqual(cas.failed(certificate, problem("serverInternal", 500), 100.0), 3700.0)
        self.assertEqual(cas.failed(certificate, problem("unauthorized", 403), 200.0), 3700.0)
        alone, _ = rotation(afterTime=3600.0)
        certificate = ManagedCertificate(("a.example",))
        alone.choose(certificate, 100.0)
        self.assertIsNone(alone.failed(certificate, problem("serverInternal", 500), 100.0))

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
        cas, _ = rotation(SECOND, THIRD, after=2)
        certificate = ManagedCertificate(("a.example",))
        chosen = []
        for _ in range(7):
            chosen.append(cas.choose(certificate, 1000.0).options.acmeURL)
            cas.failed(certificate, ACMEProtocolError(FIRST, "no answer"), 1000.0)
        self.assertEqual(chosen, [FIRST, FIRST, SECOND, SECOND, THIRD, THIRD, FIRST])
        certificate.succeeded()
        self.assertEqual(cas.choose(certificate, 1000.0).options.acmeURL, FIRST)
        ids = [e.get("event_id") for e in events]
        self.assertEqual((ids.count(20265), ids.count(20266)), (2, 1))

    def test_switchAfterTime(self) -> None:
        """
        With C{fallback_after_time}, the first attempt once that time has
        passed since the first failure held against a CA orders from the
        next, whatever the count; the time starts again with that CA.
        """
        cas, _ = rotation(SECOND, THIRD, after=100, afterTime=3600.0)
        certificate = ManagedCertificate(("a.example",))
        chosen = []
        for now in (0.0, 60.0, 3599.0, 3600.0, 7199.0, 7200.0):
            chosen.append(cas.choose(certificate, now).options.acmeURL)
            cas.failed(certificate, ACMEProtocolError(FIRST, "no answer"), now)
        self.assertEqual(chosen, [FIRST, FIRST, FIRST, SECOND, SECOND, THIRD])
        self.assertEqual(certificate.caStreak, CAStreak(THIRD, 1, 7200.0))

    def test_localFailuresNotHeld(self) -> None:
        """
        Failures that another CA would have had as well (storage, failed
        validations, a key revoked as compromised, anything unknown) are
        not held against the CA: neither the count nor the time moves on.
        """
        cas, _ = rotation(SECOND, after=1, afterTime=60.0)
        certificate = ManagedCertificate(("a.example",))
        for error in LOCAL_FAILURES:
            self.assertIs(cas.choose(certificate, 1e6), cas.primary)
            cas.failed(certificate, error, 1000.0)
        self.assertEqual(certificate.caStreak, CAStreak())

    def test_caFailuresHeld(self) -> None:
        """
        Each failure of the CA itself is held against it: with
        C{fallback_after} 1, the next attempt orders from the other CA.
        """
        cas, _ = rotation(SECOND, after=1)
        for error in CA_FAILURES:
            certificate = ManagedCertificate(("a.example",))
            cas.choose(certificate, 0.0)
            cas.failed(certificate, error, 0.0)
            self.assertIs(cas.choose(certificate, 0.0), cas.all[1], error)

    def test_removedCA(self) -> None:
        """
        A saved streak at a CA no longer configured starts again from the
        first CA.
        """
        cas, _ = rotation(SECOND, after=1)
        certificate = ManagedCertificate(("a.example",))
        certificate.caStreak = CAStreak(THIRD, 5, 10.0)
        self.assertIs(cas.choose(certificate, 20.0), cas.primary)
        self.assertEqual(certificate.caStreak, CAStreak())

    def test_streakSaved(self) -> None:
        """
        The streak is saved with the renewal state and taken back at a
        restart, unless the settings changed; a damaged one reads as none.
        """
        certificate = ManagedCertificate(("a.example",), "s1")
        certificate.caStreak = CAStreak(SECOND, 2, 1234.5)
        state = json.loads(json.dumps(certificate.state()))
        again = ManagedCertificate(("a.example",), "s1")
        again.restore(state)
        self.assertEqual(again.caStreak, CAStreak(SECOND, 2, 1234.5))
        changed = ManagedCertificate(("a.example",), "s2")
        changed.restore(state)
        self.assertEqual(changed.caStreak, CAStreak())
        for damaged in (None, [], {"url": 3, "failures": 1, "since": 0}, {"url": None}):
            self.assertEqual(CAStreak.fromJSON(damaged), CAStreak())
        self.assertEqual(
            CAStreak.fromJSON({"url": None, "failures": -4, "since": "nan"}), CAStreak()
        )

    def test_damagedTextsDropped(self) -> None:
        """
        A saved URL with a lone surrogate (valid JSON, but no text that can
        be written) is dropped when the state is taken back: the streak
        starts again and no issuer is recorded; and L{canonicalURL} returns
        such a URL as it is rather than raise, so neither the choice of
        the CA nor a metrics scrape fails on one.
        """
        for url in ("\udc80", FIRST + "/\udc80", "https://\ud800.example/directory"):
            self.assertEqual(canonicalURL(url), url)
        state = json.loads(
            '{"settings": "s", "failures": 2, "ordered_by": ["id", "https://x/\\udc80", "a"],'
            ' "ca_streak": {"url": "\\udc80", "failures": 2, "since": 10}}'
        )
        certificate = ManagedCertificate(("a.example",), "s")
        certificate.restore(state)
        self.assertEqual((certificate.failures, certificate.caStreak), (2, CAStreak()))
        self.assertIsNone(certificate.orderedBy)
        cas, _ = rotation(SECOND)
        certificate.caStreak = CAStreak("\udc80", 5, 10.0)
        certificate.orderedBy = ("id", "\udc80", "a")
        self.assertIs(cas.choose(certificate, 20.0), cas.primary)
        metrics = Metrics(cas=(FIRST, SECOND), issuedBy=lambda: [("a.example", "\udc80")])
        self.assertIn(b'ca="other"', generate_latest(metrics.registry))

    def test_damagedCounts(self) -> None:
        """
        A saved count that is not finite does not stop the state from being
        taken back (the rest of it is ignored, as for any value that does
        not parse); a huge one is brought down to L{MOST_FAILURES}.
        """
        for text in ("Infinity", "-Infinity", "1e400", "NaN"):
            certificate = ManagedCertificate(("a.example",), "s")
            state = json.loads(
                f'{{"settings": "s", "failures": {text}, "deploy_pending": true,'
                f' "ca_streak": {{"url": null, "failures": {text}, "since": 1}}}}'
            )
            restoreState(certificate, state)
            self.assertEqual((certificate.failures, certificate.deployPending), (0, True))
            self.assertEqual(CAStreak.fromJSON(state["ca_streak"]), CAStreak())
        certificate = ManagedCertificate(("a.example",), "s")
        streak = {"url": None, "failures": 1e300, "since": 1}
        certificate.restore({"settings": "s", "failures": 1e300, "ca_streak": streak})
        self.assertEqual(certificate.failures, MOST_FAILURES)
        self.assertEqual(certificate.caStreak, CAStreak(None, MOST_FAILURES, 1.0))

    def test_futureFirstFailureCapped(self) -> None:
        """
        A saved time of the first failure in the future (a clock that ran
        ahead, a damaged file) is brought back to now, like the other
        saved times, so that the time rule runs from there.
        """
        certificate = ManagedCertificate(("a.example",))
        certificate.failures = 1
        certificate.caStreak = CAStreak(None, 1, 1e18)
        capWaits(certificate, 5000.0, 3600.0)
        self.assertEqual(certificate.caStreak, CAStreak(None, 1, 5000.0))
        self.assertTrue(movesOn(certificate.caStreak, 8600.0, 100, 3600.0))

    def test_cappedUnchanged(self) -> None:
        """
        A streak whose first failure is not after now is capped to itself,
        not to a copy: start-up caps every set's.
        """
        streak = CAStreak(SECOND, 2, 1234.5)
        self.assertIs(streak.capped(1234.5), streak)
        self.assertIs(streak.capped(5000.0), streak)
        self.assertEqual(streak.capped(1000.0), CAStreak(SECOND, 2, 1000.0))

    def test_noStreakShared(self) -> None:
        """
        The saved streak of no failures at the resource's own CA, every
        set's at start-up, is taken back as one object for all sets (it is
        frozen); any other is its own.
        """
        empty = CAStreak().toJSON()
        self.assertIs(CAStreak.fromJSON(dict(empty)), CAStreak.fromJSON(dict(empty)))
        self.assertEqual(CAStreak.fromJSON(empty), CAStreak())
        saved = CAStreak(SECOND, 2, 1234.5).toJSON()
        self.assertEqual(CAStreak.fromJSON(saved), CAStreak(SECOND, 2, 1234.5))
        self.assertIsNot(CAStreak.fromJSON(saved), CAStreak.fromJSON(saved))

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
        cas.choose(certificate, 0.0)
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

    def test_connectionOfAlone(self) -> None:
        """
        Without a fallback CA, every set follows the resource's own CA,
        whatever URL its state records, and the URL is not looked at.
        """
        cas, _ = rotation()
        self.patch(carotation, "issuingCA", lambda *args: self.fail("looked at"))
        certificate = ManagedCertificate(("a.example",))
        for orderedBy in (None, ("id", SECOND, "account"), ("id", FIRST, "account")):
            certificate.orderedBy = orderedBy
            self.assertIs(cas.connectionOf(certificate), cas.primary.connection)

    def test_connectionOfWithFallbacks(self) -> None:
        """
        With a fallback CA, each set follows the CA that issued its
        certificate, or the resource's own when that one is gone.
        """
        cas, _ = rotation(SECOND)
        certificate = ManagedCertificate(("a.example",))
        expected = [
            (None, cas.primary),
            (("id", SECOND, "account"), cas.all[1]),
            (("id", THIRD, "account"), cas.primary),
        ]
        for orderedBy, ca in expected:
            certificate.orderedBy = orderedBy
            self.assertIs(cas.connectionOf(certificate), ca.connection)

    def test_issuerOfOncePerURL(self) -> None:
        """
        The CA at a URL is found once: a check asks for every set, and the
        sets share a few URLs, each put in its canonical form once.
        """
        cas, _ = rotation(SECOND)
        canonical: list[str] = []

        def counted(url: str) -> str:
            canonical.append(url)
            return canonicalURL(url)

        self.patch(carotation, "canonicalURL", counted)
        certificates = [ManagedCertificate((f"s{i}.example",)) for i in range(100)]
        for certificate in certificates:
            certificate.orderedBy = ("id", SECOND.replace("second", "Second") + "/", "account")
        self.assertEqual({cas.issuerOf(c) for c in certificates * 2}, {cas.all[1]})
        self.assertLessEqual(len(canonical), 1 + len(cas.all))

    def test_urlsKeptBounded(self) -> None:
        """
        The CA of at most L{carotation.URLS_KEPT} directory URLs is kept:
        the URLs come from the stored state, which any node of a cluster
        writes, so sets recording ever new ones do not grow it; the CA
        found for a URL is the same once forgotten.
        """
        cas, _ = rotation(SECOND)
        certificate = ManagedCertificate(("a.example",))
        for index in range(carotation.URLS_KEPT + 50):
            certificate.orderedBy = ("id", f"https://ca{index}.example/directory", "account")
            self.assertIsNone(cas.issuerOf(certificate))
        self.assertEqual(cas._indexAt.cache_info().currsize, carotation.URLS_KEPT)
        certificate.orderedBy = ("id", SECOND, "account")
        self.assertIs(cas.issuerOf(certificate), cas.all[1])


class RetryWaitTests(SynchronousTestCase):
    """
    L{recordFailure}: the next attempt after a failure, no later than the
    time the next CA takes over.
    """

    def test_noSwitch(self) -> None:
        """
        Without a switch, the next attempt waits the back-off or the CA's
        Retry-After, whichever is longer.
        """
        certificate = ManagedCertificate(("a.example",))
        self.assertEqual(recordFailure(certificate, 1000.0, DAY, 7200.0, "busy", None), 7200.0)
        self.assertEqual((certificate.holdUntil, certificate.nextAttempt), (8200.0, 8200.0))

    def test_switchLater(self) -> None:
        """
        With the next CA taking over before the wait ends, the next attempt
        is at that time, and the wait the CA before asked for ends then.
        """
        certificate = ManagedCertificate(("a.example",))
        self.assertEqual(recordFailure(certificate, 1000.0, DAY, 7200.0, "busy", 3000.0), 2000.0)
        self.assertEqual((certificate.holdUntil, certificate.nextAttempt), (3000.0, 3000.0))
        self.assertEqual(certificate.retryAt(), 3000.0)

    def test_switchNow(self) -> None:
        """
        With the next CA taking over at once (the count was reached), the
        next attempt waits the back-off only.
        """
        certificate = ManagedCertificate(("a.example",))
        self.assertEqual(recordFailure(certificate, 1000.0, DAY, 7200.0, "busy", 500.0), 60.0)
        self.assertEqual(certificate.retryAt(), 1060.0)


class FakePool:
    """
    The connection pool of a L{fakeHTTPClient}: nothing to close.
    """

    def closeCachedConnections(self) -> Deferred[None]:
        return succeed(None)


class FallbackTestCase(ResourceTestCase):
    """
    A resource on the fake CA whose fallback CAs' HTTP clients, which the
    resource makes itself, reach L{fallbackServer}.

    @ivar trusted: The trusted roots each client made was asked for.
    @ivar fallbackServer: The fake CA those clients reach: by default, the
        first CA's, L{server}.
    """

    def setUp(self) -> None:
        super().setUp()
        self.trusted: list[object] = []
        self.fallbackServer = self.server

        def fakeHTTPClient(reactor: object, trusted: object) -> tuple[object, FakePool]:
            self.trusted.append(trusted)
            return RequestTraversalAgent(self.fallbackServer), FakePool()

        self.patch(owned, "makeHTTPClient", fakeHTTPClient)


class TrustTests(FallbackTestCase):
    """
    Each CA's server is reached with the trust configured for it.
    """

    def test_composeNeedsClientFor(self) -> None:
        """
        The parts of a resource are made only with a maker of the fallback
        CAs' HTTP clients: none defaults to the embedder's client, which
        was chosen for the resource's own CA.
        """
        clientFor = inspect.signature(compose).parameters["clientFor"]
        self.assertIs(clientFor.default, inspect.Parameter.empty)

    def test_embedderClientForFirstCAOnly(self) -> None:
        """
        The HTTP client an embedder gives is used for the resource's own CA
        only: a fallback CA without C{acme_ca_file} is reached with a
        client of the resource's making, trusting the system's roots.
        """
        self.fallbackServer = FakeACMEServer(self.reactor)
        fallback = CAOptions(section="cas/b", acmeURL=SECOND, agreeTOS=True)
        resource = self.start(fallbackCAs=(fallback,))
        self.fallbackServer.validate = resource.responder.lookup
        self.assertEqual(self.trusted, [None])
        [certificate] = Operations(resource, self.reactor).select(["reports.example.test"])
        certificate.caStreak = CAStreak(None, 3, self.reactor.seconds())
        orders = self.server.ordersCreated
        runUntilFired(self.reactor, resource.check(force=True, only=[certificate]))
        self.assertEqual(certificate.failures, 0, certificate.lastError)
        self.assertEqual(
            (self.server.ordersCreated, self.fallbackServer.ordersCreated), (orders, 1)
        )
        assert certificate.orderedBy is not None
        self.assertEqual(certificate.orderedBy[1], SECOND)


class RenewalInformationTests(FallbackTestCase):
    """
    Renewal information is asked of the CA that issued the certificate.
    """

    def renewalInfoRequests(self, issuedBy: str | None, offered: bool = True) -> tuple[int, int]:
        """
        Start a resource with a fallback CA (a fake CA of its own, offering
        renewal information when C{offered}), record C{issuedBy} as the CA
        of every certificate (unless C{None}), make renewal information
        due and check: how many renewal information requests the first
        and the fallback CA got, once the wake-up after the check (which
        connects to a CA no order reached yet) ran; either way, the sets
        are not due again at once.
        """
        self.server.offerRenewalInfo = True
        self.fallbackServer = FakeACMEServer(self.reactor)
        self.fallbackServer.offerRenewalInfo = offered
        resource = self.start(
            fallbackCAs=(CAOptions(section="cas/b", acmeURL=SECOND, agreeTOS=True),),
        )
        for certificate in resource.managed.values():
            if issuedBy is not None:
                assert certificate.orderedBy is not None
                identifier, _, account = certificate.orderedBy
                certificate.orderedBy = (identifier, issuedBy, account)
            certificate.ariNextCheck = 0.0
        del self.server.requests[:]
        runUntilFired(self.reactor, resource.check())
        self.reactor.advance(0)
        runUntilFired(self.reactor, resource.whenSettled())
        now = self.reactor.seconds()
        for certificate in resource.managed.values():
            # Asked or not, not due again at once: no busy loop of checks.
            self.assertGreater(resource._scheduler.issuers.nextEvent(certificate), now)
        return tuple(  # type: ignore[return-value]
            sum(path.startswith("/renewal-info/") for _, path in server.requests)
            for server in (self.server, self.fallbackServer)
        )

    def test_issuingCAAsked(self) -> None:
        """
        A certificate the first CA issued has its renewal information
        asked of it.
        """
        self.assertEqual(self.renewalInfoRequests(None), (2, 0))

    def test_fallbackCAAsked(self) -> None:
        """
        A certificate a fallback CA issued has its renewal information
        asked of that CA, through its own account, not of the first CA,
        which would not know it.
        """
        self.assertEqual(self.renewalInfoRequests(SECOND), (0, 2))
        self.assertEqual(self.fallbackServer.accountsCreated, 1)

    def issuedByFallback(self) -> tuple[LetsEncryptResource, ManagedCertificate, CAOptions]:
        """
        Start a resource with a fallback CA (a fake CA of its own offering
        renewal information) and have its set C{reports.example.test}
        renewed there.

        @return: The resource, the set, and the fallback CA's options.
        """
        self.fallbackServer = FakeACMEServer(self.reactor)
        self.fallbackServer.offerRenewalInfo = True
        fallback = CAOptions(section="cas/b", acmeURL=SECOND, agreeTOS=True)
        resource = self.start(fallbackCAs=(fallback,))
        self.fallbackServer.validate = resource.responder.lookup
        [certificate] = Operations(resource, self.reactor).select(["reports.example.test"])
        certificate.caStreak = CAStreak(None, 3, self.reactor.seconds())
        runUntilFired(self.reactor, resource.check(force=True, only=[certificate]))
        assert certificate.orderedBy is not None and certificate.issued is not None
        self.assertEqual(certificate.orderedBy[1], SECOND)
        return resource, certificate, fallback

    def test_windowFromFallbackCA(self) -> None:
        """
        A certificate a fallback CA issued renews in the window that CA
        suggests, not at two thirds of its lifetime.
        """
        self.server.offerRenewalInfo = True
        resource, certificate, _ = self.issuedByFallback()
        assert certificate.orderedBy is not None
        now = float(int(self.reactor.seconds()))
        window = (now + 3 * DAY, now + 4 * DAY)
        self.fallbackServer.renewalWindows[certificate.orderedBy[0]] = window
        certificate.ariNextCheck = 0.0
        runUntilFired(self.reactor, resource.check())
        self.assertEqual(certificate.ariWindow, window)
        self.assertEqual(certificate.plan().reason, "ari")

    def test_checksScheduledForFallbackCA(self) -> None:
        """
        When only a fallback CA offers renewal information, the
        certificates it issued still get their checks between renewals:
        a wake-up at their next check asks it, and so after a restart,
        before any order connected to it (the check plans to learn then
        whether that CA offers renewal information, not before: nothing is
        asked of it until a set has a question).
        """
        resource, certificate, fallback = self.issuedByFallback()

        def asked() -> int:
            requests = self.fallbackServer.requests
            return sum(path.startswith("/renewal-info/") for _, path in requests)

        for restart in (False, True):
            if restart:
                resource.stopService()
                resource = self.start(fallbackCAs=(fallback,))
                [certificate] = Operations(resource, self.reactor).select(["reports.example.test"])
            before = asked()
            certificate.ariNextCheck = self.reactor.seconds() + 3600
            runUntilFired(self.reactor, resource.check())
            self.reactor.advance(3601)
            self.assertEqual(asked(), before + 1, restart)

    def test_fallbackCAWithout(self) -> None:
        """
        A fallback CA that offers no renewal information is asked for none,
        nor is the first CA.
        """
        self.assertEqual(self.renewalInfoRequests(SECOND, offered=False), (0, 0))

    def test_unknownCA(self) -> None:
        """
        A certificate of a CA no longer configured has no renewal
        information asked of any CA.
        """
        self.assertEqual(self.renewalInfoRequests(THIRD), (0, 0))


class ResumeTests(FallbackTestCase):
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


class RevokeTests(FallbackTestCase):
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


class StreakTests(FallbackTestCase):
    """
    The renewer holds the failures of the CA against it, and moves on to
    the fallback CA by the count or the time.
    """

    def failFor(
        self, seconds: float, headers: dict[str, str] | None = None, **options: Any
    ) -> tuple[ManagedCertificate, list[float]]:
        """
        Make every new order fail with an HTTP 503 (with C{headers}), start
        a resource with a fallback CA and C{options}, and let C{seconds}
        pass: the reports set, and the times from the first failure at
        which event 20265 was logged.
        """
        self.server.fail("/new-order", 503, times=None, headers=headers or {})
        fallback = CAOptions(section="cas/b", acmeURL=SECOND, agreeTOS=True)
        start = self.reactor.seconds()
        resource = self.start(fallbackCAs=(fallback,), **options)
        [certificate] = Operations(resource, self.reactor).select(["reports.example.test"])
        self.assertEqual(certificate.caStreak.since, start)
        switched: list[float] = []
        while self.reactor.seconds() < start + seconds:
            before = self.eventIDs().count(20265)
            self.reactor.advance(30)
            if self.eventIDs().count(20265) > before:
                switched.append(self.reactor.seconds() - start)
        return certificate, switched

    def test_afterTime(self) -> None:
        """
        With C{fallback_after} out of reach, the first attempt once
        C{fallback_after_time} has passed since the first failure orders
        from the fallback CA (its account is made); not before.
        """
        certificate, switched = self.failFor(5400, fallbackAfter=100, fallbackAfterTime=3600.0)
        self.assertEqual(len(switched), 1)
        self.assertGreaterEqual(switched[0], 3600)
        self.assertEqual(certificate.caStreak.url, SECOND)
        self.assertEqual(self.store.accountURLs(ACME_URL, SECOND), [ACME_URL, SECOND])
        for text in self.eventTexts(20265):
            self.assertIn("(cas/b): fallback_after_time passed since the first of", text)

    def test_switchScheduled(self) -> None:
        """
        The attempt that moves on by C{fallback_after_time} is set for that
        time, not for the end of the retry wait after it (the waits double:
        the attempt after 1860 s would be at 3780 s).
        """
        _, switched = self.failFor(5400, fallbackAfter=100, fallbackAfterTime=3600.0)
        self.assertEqual(len(switched), 1)
        self.assertLessEqual(switched[0], 3600 + 30)

    def test_retryAfterNotKept(self) -> None:
        """
        A CA asking to wait (Retry-After) a day keeps the attempts with it
        waiting, not the first with the next CA: that one is at
        C{fallback_after_time}.
        """
        _, switched = self.failFor(
            5400,
            {"Retry-After": "86400"},
            fallbackAfter=100,
            fallbackAfterTime=3600.0,
            checkInterval=DAY,
        )
        self.assertEqual(len(switched), 1)
        self.assertLessEqual(switched[0], 3600 + 30)

    def test_countSwitchWithoutRetryAfter(self) -> None:
        """
        Once the count moves the set on, the next CA's first attempt waits
        the back-off only, not the Retry-After of the CA before.
        """
        _, switched = self.failFor(
            600, {"Retry-After": "86400"}, fallbackAfter=1, checkInterval=DAY
        )
        self.assertLessEqual(switched[0], 60 + 30)
        text = self.eventTexts(20265)[0]
        self.assertIn("after 1 failed attempts held against the CA before it", text)

    def test_chooseFailureRecorded(self) -> None:
        """
        Should choosing the CA fail, the attempt fails as any other: the
        failure and the retry wait are recorded, so the set is tried again.
        """
        resource = self.start(fallbackCAs=(CAOptions(section="cas/b", acmeURL=SECOND),))
        [certificate] = Operations(resource, self.reactor).select(["reports.example.test"])

        def choose(certificate: ManagedCertificate, now: float) -> None:
            raise UnicodeEncodeError("utf-8", "\udc80", 0, 1, "surrogates not allowed")

        self.patch(resource.cas, "choose", choose)
        runUntilFired(self.reactor, resource.check(force=True, only=[certificate]))
        self.assertEqual(certificate.failures, 1)
        self.assertIn("surrogates not allowed", certificate.lastError or "")
        self.assertGreater(certificate.nextAttempt, self.reactor.seconds())

    def test_urgentLastResort(self) -> None:
        """
        Once the certificate in service is past its emergency threshold,
        a failure not held against the CA before (C{malformed}, here) is
        held all the same: the set reaches the fallback CA, which issues.
        """
        self.fallbackServer = FakeACMEServer(self.reactor)
        fallback = CAOptions(section="cas/b", acmeURL=SECOND, agreeTOS=True)
        resource = self.start(fallbackCAs=(fallback,), fallbackAfter=2)
        self.fallbackServer.validate = resource.responder.lookup
        [certificate] = Operations(resource, self.reactor).select(["reports.example.test"])
        issuedBy = certificate.orderedBy
        assert issuedBy is not None
        self.assertEqual(issuedBy[1], ACME_URL)
        malformed = messages.Error.with_code("malformed", detail="no")
        self.server.fail("/new-order", 400, problem=malformed, times=None)
        urgent = certificate.urgentSince()
        while self.reactor.seconds() < urgent - 3600:
            self.reactor.advance(600)
        self.assertEqual(certificate.orderedBy, issuedBy)
        self.assertGreater(certificate.failures, 2)
        self.assertEqual(certificate.caStreak, CAStreak())
        for _ in range(200):
            self.reactor.advance(60)
        assert certificate.orderedBy is not None
        self.assertEqual(certificate.orderedBy[1], SECOND, certificate.lastError)

    def test_noTime(self) -> None:
        """
        With C{fallback_after_time} 0, only the count moves on.
        """
        certificate, switched = self.failFor(2 * 3600, fallbackAfter=100, fallbackAfterTime=0.0)
        self.assertEqual(switched, [])
        self.assertGreater(certificate.caStreak.failures, 5)

    def test_validationFailuresNotHeld(self) -> None:
        """
        Failed validations are not held against the CA: with
        C{fallback_after} 1, the attempts stay with the first CA.
        """
        self.server.refuse.add("reports.example.test")
        fallback = CAOptions(section="cas/b", acmeURL=SECOND, agreeTOS=True)
        resource = self.start(fallbackCAs=(fallback,), fallbackAfter=1, fallbackAfterTime=60.0)
        [certificate] = Operations(resource, self.reactor).select(["reports.example.test"])
        for _ in range(20):
            self.reactor.advance(60)
        self.assertGreater(certificate.failures, 3)
        self.assertEqual(certificate.caStreak, CAStreak())
        self.assertNotIn(20265, self.eventIDs())


def exactAccountKey(acmeURL: str) -> str:
    """
    The key under which versions before canonical URLs stored the account
    for C{acmeURL}, as written.
    """
    return f"accounts/{hashlib.sha256(acmeURL.encode('utf-8')).hexdigest()[:24]}.json"


#: The directory URL of L{resourceOptions} in another, equivalent form.
REWRITTEN = "https://ACME.test.:443/directory"


class EquivalentURLTests(ResourceTestCase):
    """
    A CA's directory URL rewritten in an equivalent form is the same CA:
    the same account, renewal information asked of it, and the
    certificate it issued named by the renewal that replaces it.
    """

    def restartWith(self, acmeURL: str) -> ManagedCertificate:
        """
        Start a resource on the fake CA, stop it, start it again with
        C{acmeURL}, renew its reports set with renewal information due,
        and return that set.
        """
        self.server.offerRenewalInfo = True
        self.start().stopService()
        resource = self.start(acmeURL=acmeURL)
        [certificate] = Operations(resource, self.reactor).select(["reports.example.test"])
        self.assertIs(resource.cas.issuerOf(certificate), resource.cas.primary)
        certificate.ariNextCheck = 0.0
        del self.server.requests[:]
        runUntilFired(self.reactor, resource.check(force=True, only=[certificate]))
        return certificate

    def test_sameCA(self) -> None:
        """
        Started again with the URL rewritten, the resource uses the account
        it had, asks the CA for renewal information, and names the
        certificate replaced.
        """
        certificate = self.restartWith(REWRITTEN)
        self.assertEqual(certificate.failures, 0, certificate.lastError)
        self.assertEqual(self.server.accountsCreated, 1)
        self.assertIn("/renewal-info/", [path[:14] for _, path in self.server.requests])
        self.assertIsNotNone(self.server.newOrders[-1].replaces)

    def test_accountUnderTheFormWritten(self) -> None:
        """
        An account an earlier version stored under the URL exactly as
        written then, not in its canonical form, is still found.
        """
        self.start().stopService()
        key = accountKey(ACME_URL)
        self.store.values[exactAccountKey(REWRITTEN)] = self.store.values.pop(key)
        resource = self.start(acmeURL=REWRITTEN)
        self.assertEqual(self.server.accountsCreated, 1)
        self.assertIsNotNone(runUntilFired(self.reactor, resource.records.loadAccount(REWRITTEN)))


class AccountCommandTests(FallbackTestCase):
    """
    The account commands act on the account at the CA chosen, the
    resource's own by default.
    """

    def setUp(self) -> None:
        super().setUp()
        self.fallbackServer = FakeACMEServer(self.reactor)
        fallback = CAOptions(section="cas/b", acmeURL=SECOND, agreeTOS=True)
        self.resource = self.start(fallbackCAs=(fallback,))
        self.operations = Operations(self.resource, self.reactor)

    def ask(self, name: str, arguments: dict[str, Any]) -> Any:
        """
        The result of the operation C{name} with C{arguments}, as the
        control socket and the command dispatch it.
        """
        return runUntilFired(self.reactor, dispatch(self.operations, name, arguments))

    def registerAtFallback(self) -> None:
        """
        Have the resource register its account at the fallback CA, as its
        first order from it would.
        """
        runUntilFired(self.reactor, self.resource.cas.all[1].connection.acmeClient())

    def test_showEach(self) -> None:
        """
        C{account show} shows the resource's own CA's account; with
        C{--ca cas/b}, that CA's, its own.
        """
        first = self.ask(*request(parser().parse_args(["account", "show"])))
        self.assertEqual((first["ca"], first["acme_url"]), ("resources/le", ACME_URL))
        self.assertEqual(self.fallbackServer.accountsCreated, 0)
        self.registerAtFallback()
        second = self.ask(*request(parser().parse_args(["account", "show", "--ca", "cas/b"])))
        self.assertEqual((second["ca"], second["acme_url"]), ("cas/b", SECOND))
        self.assertEqual(self.fallbackServer.accountsCreated, 1)
        self.assertNotEqual(first["key_thumbprint"], second["key_thumbprint"])
        again = self.ask("account-show-at", {"ca": "resources/le"})
        self.assertEqual(again["key_thumbprint"], first["key_thumbprint"])

    def test_rolloverAtFallback(self) -> None:
        """
        C{account rollover --ca cas/b} changes the key of that CA's account
        only, at the CA and in the state.
        """
        first = self.ask("account-show", {})
        self.registerAtFallback()
        before = self.ask("account-show-at", {"ca": "cas/b"})
        after = self.ask("account-rollover-at", {"ca": "cas/b"})
        self.assertEqual(after["url"], before["url"])
        self.assertNotEqual(after["key_thumbprint"], before["key_thumbprint"])
        self.assertEqual(self.ask("account-show", {})["key_thumbprint"], first["key_thumbprint"])
        stored = runUntilFired(self.reactor, self.resource.records.loadAccount(SECOND))
        self.assertEqual(jwkFor(stored.key)[0].thumbprint().hex(), after["key_thumbprint"])

    def test_deactivateAtFallback(self) -> None:
        """
        C{account deactivate --ca cas/b} ends that CA's account; the
        resource's own CA's account stays valid.  That CA then has no
        account until an order from it registers a new one.
        """
        self.registerAtFallback()
        gone = self.ask("account-deactivate-at", {"ca": "cas/b"})
        self.assertEqual((gone["status"], gone["acme_url"]), ("deactivated", SECOND))
        self.assertEqual(self.ask("account-show", {})["status"], "valid")
        self.failureResultOf(
            dispatch(self.operations, "account-show-at", {"ca": "cas/b"}), OperationError
        )
        self.registerAtFallback()
        renewed = self.ask("account-show-at", {"ca": "cas/b"})
        self.assertNotEqual(renewed["url"], gone["url"])

    def test_noAccountYet(self) -> None:
        """
        At a CA where the resource has no account yet, C{account show},
        C{rollover} and C{deactivate} say so and register none.
        """
        for action in ("show", "rollover", "deactivate"):
            failure = self.failureResultOf(
                dispatch(self.operations, f"account-{action}-at", {"ca": "cas/b"}),
                OperationError,
            )
            self.assertIn(f"there is no account at cas/b ({SECOND}) yet", str(failure.value))
        self.assertEqual(self.fallbackServer.accountsCreated, 0)

    def test_unknownCA(self) -> None:
        """
        A CA that is not the resource's is refused, naming those that are;
        so is a CA argument that is not text.
        """
        failure = self.failureResultOf(
            dispatch(self.operations, "account-deactivate-at", {"ca": "cas/x"}), OperationError
        )
        self.assertIn("resources/le, cas/b", str(failure.value))
        self.failureResultOf(
            dispatch(self.operations, "account-show-at", {"ca": ["cas/b"]}), OperationError
        )
        self.failureResultOf(dispatch(self.operations, "account-show-at", {}), OperationError)
        self.assertEqual(self.fallbackServer.accountsCreated, 0)


class MetricsTests(FallbackTestCase):
    """
    The renewal attempts are counted by CA, and each set's gauge names the
    CA that issued its certificate; the C{ca} label takes the configured
    directory URLs only.
    """

    def test_byCA(self) -> None:
        """
        With the first CA refusing orders, its failed attempt and the
        fallback CA's issued one are counted under each CA's URL, so are
        the ACME requests to each CA, timed, and the set's certificate is
        shown as the fallback CA's.
        """
        self.fallbackServer = FakeACMEServer(self.reactor)
        self.server.fail("/new-order", 503, times=None)
        fallback = CAOptions(section="cas/b", acmeURL=SECOND, agreeTOS=True)
        resource = self.start(fallbackCAs=(fallback,), fallbackAfter=1)
        self.fallbackServer.validate = resource.responder.lookup
        self.reactor.advance(60)
        for certificate in resource.managed.values():
            if certificate.attempt is not None:
                runUntilFired(self.reactor, certificate.attempt.whenEnded())
        sample = resource.metrics.registry.get_sample_value
        attempts = "letsencrypt_renewal_attempts_total"
        self.assertEqual(
            {
                (ca, result): sample(attempts, {"ca": ca, "result": result})
                for ca in (ACME_URL, SECOND)
                for result in ("issued", "failed")
            },
            {
                (ACME_URL, "issued"): 0.0,
                (ACME_URL, "failed"): 2.0,
                (SECOND, "issued"): 2.0,
                (SECOND, "failed"): 0.0,
            },
        )
        info = "letsencrypt_certificate_ca_info"
        self.assertEqual(sample(info, {"domains": "reports.example.test", "ca": SECOND}), 1.0)
        self.assertIsNone(sample(info, {"domains": "reports.example.test", "ca": ACME_URL}))
        latency = "letsencrypt_acme_request_duration_seconds_count"
        for ca in (ACME_URL, SECOND):
            self.assertGreater(sample(latency, {"method": "POST", "ca": ca}) or 0, 0, ca)
        self.assertIsNone(sample(latency, {"method": "POST", "ca": "other"}))

    def test_issuedWithoutRecordedOrder(self) -> None:
        """
        A certificate the fallback CA issued whose order is not recorded
        (it has no certificate ID) is counted under that CA, not the first.
        """
        self.fallbackServer = FakeACMEServer(self.reactor)
        self.patch(ordering, "_orderedBy", lambda issued, acmeURL, client: None)
        fallback = CAOptions(section="cas/b", acmeURL=SECOND, agreeTOS=True)
        resource = self.start(fallbackCAs=(fallback,))
        self.fallbackServer.validate = resource.responder.lookup
        [certificate] = Operations(resource, self.reactor).select(["reports.example.test"])
        certificate.caStreak = CAStreak(None, 3, self.reactor.seconds())
        sample = resource.metrics.registry.get_sample_value
        attempts = "letsencrypt_renewal_attempts_total"
        before = sample(attempts, {"ca": SECOND, "result": "issued"})
        runUntilFired(self.reactor, resource.check(force=True, only=[certificate]))
        self.assertEqual(certificate.failures, 0, certificate.lastError)
        self.assertEqual(sample(attempts, {"ca": SECOND, "result": "issued"}), before + 1)

    def test_bounded(self) -> None:
        """
        A CA's URL in another equivalent form is that CA's label; a CA not
        configured is C{other}.
        """
        fallback = CAOptions(section="cas/b", acmeURL=SECOND, agreeTOS=True)
        metrics = self.start(fallbackCAs=(fallback,)).metrics
        self.assertEqual(metrics.caLabel("https://SECOND.example:443/directory/"), SECOND)
        self.assertEqual(metrics.caLabel(None), ACME_URL)
        self.assertEqual(metrics.caLabel("https://elsewhere.example/directory"), "other")
