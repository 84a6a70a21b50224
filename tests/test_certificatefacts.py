"""
What the renewal state records of a stored certificate
(L{letsencrypt_resource.certificatefacts}): the start-up and the status
take its validity and issuer from there, bound to the record by its digest,
and parse the certificate at its first use; a record without them, or
other than the one they are of, is parsed as before.
"""

from __future__ import annotations

import datetime
import gc
import json
import math
import os
import threading
from typing import Any

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource import certificates, statusreader
from letsencrypt_resource.certificatefacts import (
    LATEST,
    MAX_ISSUER,
    MAX_NAMES,
    CertificateFacts,
)
from letsencrypt_resource.certificates import (
    CertifiedKey,
    InvalidCertificate,
    RecordedCertificate,
    bundleDigest,
)
from letsencrypt_resource.config import ServiceOptions
from letsencrypt_resource.display import formatStatus
from letsencrypt_resource.interfaces import ICertificateConsumer
from letsencrypt_resource.keygen import generateKey
from letsencrypt_resource.managed import ManagedCertificate
from letsencrypt_resource.renewalstate import storedDigest, storedRecord
from letsencrypt_resource.setloading import Refusal, settingsFingerprint, storedRefusal
from letsencrypt_resource.statusreader import offlineStatus
from letsencrypt_resource.statusrows import isoTime
from letsencrypt_resource.storage.records import Records, certificateKey, renewalKey
from letsencrypt_resource.testing import FakeACMEServer, MemoryStore, runUntilFired
from letsencrypt_resource.tls import NoCertificateYet, TLSCertificateConsumer
from tests.helpers.resourcecase import DAY, REPORTS, ResourceTestCase, resourceOptions

DOMAINS = ("facts.example.test", "www.facts.example.test")
NAMES = frozenset(DOMAINS)
OTHER = ("other.example.test",)


class Issuing:
    """
    A fake CA on a fake clock, and a memory store holding its certificates
    as the resource stores them.
    """

    def __init__(self) -> None:
        self.reactor = MemoryReactorClock()
        self.reactor.advance(1_800_000_000)
        self.server = FakeACMEServer(self.reactor)
        self.store = MemoryStore()
        self.records = Records(self.store)
        self.options = resourceOptions()
        self.settings = settingsFingerprint(self.options)

    def issue(self, domains: tuple[str, ...] = DOMAINS, validity: float = 90 * DAY) -> CertifiedKey:
        """
        A certificate of the fake CA for C{domains} and a new key.
        """
        key = generateKey("ecdsa-p256")
        return CertifiedKey.fromParts(key, self.server.issue(key.public_key(), domains, validity))

    def savedState(
        self, issued: CertifiedKey, domains: tuple[str, ...] = DOMAINS
    ) -> dict[str, Any]:
        """
        The renewal state a set of C{domains} in service on C{issued}
        saves, through JSON.
        """
        managed = ManagedCertificate(domains, self.settings)
        managed.current = issued
        return dict(json.loads(json.dumps(managed.state())))

    def keep(self, issued: CertifiedKey, state: dict[str, Any] | None) -> None:
        """
        Store C{issued} for L{DOMAINS}, and C{state} as its renewal state.
        """
        self.records.saveCertificate(DOMAINS, issued)
        if state is not None:
            self.records.saveRenewalState(DOMAINS, state)

    def status(self) -> dict[str, Any]:
        """
        The offline status row of L{DOMAINS}, a day after the issue.
        """
        self.reactor.advance(DAY)
        service = ServiceOptions(
            section="services/s",
            type="https",
            name="s",
            description="",
            address="127.0.0.1",
            port=8443,
            domains=DOMAINS,
            path="/nonexistent",
            debug=False,
        )
        done = offlineStatus(self.options, (service,), self.store, self.reactor)
        rows: list[dict[str, Any]] = []
        done.addCallback(rows.extend)
        [row] = rows
        return row


def facts(**changes: Any) -> dict[str, Any]:
    """
    A valid saved facts document, with C{changes}.
    """
    document = CertificateFacts("a" * 64, 10.0, 20.0, "CN=Test CA", NAMES).toJSON()
    document.update(changes)
    return document


class FactsJSONTests(SynchronousTestCase):
    """
    L{CertificateFacts.fromJSON} takes back what L{CertificateFacts.toJSON}
    saved, and nothing else.
    """

    def test_roundTrip(self) -> None:
        """
        Saved facts read back equal, their issuer text interned (the sets
        of one CA share it).
        """
        saved = CertificateFacts("b" * 64, 1.5, 2.5, "CN=Some CA,O=Some", NAMES)
        again = CertificateFacts.fromJSON(json.loads(json.dumps(saved.toJSON())))
        self.assertEqual(again, saved)
        other = CertificateFacts.fromJSON(json.loads(json.dumps(saved.toJSON())))
        assert again is not None and other is not None
        self.assertIs(again.issuer, other.issuer)

    def test_refused(self) -> None:
        """
        Anything but exactly such a document is no facts: another type, a
        missing or an extra field, a digest that is not one, times that are
        not floats, not finite, in the wrong order or out of the range of
        a certificate's times (before the epoch, after the year 9999), an
        issuer that is not a text, is too long or has characters a
        terminal would act on, names that are not a list of texts or too
        many (or none at all: the previous version's facts).
        """
        unnamed = facts()
        del unnamed["names"]
        missing = facts()
        del missing["issuer"]
        refused = [
            None,
            [],
            "facts",
            missing,
            facts(extra=1),
            facts(digest="A" * 64),
            facts(digest="a" * 63),
            facts(digest=None),
            facts(not_before=10),
            facts(not_after="20.0"),
            facts(not_after=math.inf),
            facts(not_before=math.nan),
            facts(not_before=30.0),
            facts(issuer=None),
            facts(issuer="x" * (MAX_ISSUER + 1)),
            facts(issuer="CN=\x1b[2JCA"),
            facts(issuer="CN=CA\nO=Other"),
            facts(not_before=-1.0),
            facts(not_after=LATEST + 1),
            facts(not_after=1e20),
            facts(not_after=1e300),
            unnamed,
            facts(names="facts.example.test"),
            facts(names=[1]),
            facts(names=["x"] * (MAX_NAMES + 1)),
        ]
        for value in refused:
            self.assertIsNone(CertificateFacts.fromJSON(value), value)
        for value in (facts(issuer="x" * MAX_ISSUER), facts(not_after=LATEST)):
            self.assertIsNotNone(CertificateFacts.fromJSON(value))

    def test_ofTheGivenDigest(self) -> None:
        """
        Given the digest a state vouches for, the facts are taken when they
        are of that digest, and are no facts when they are of another, or
        refused as without it.
        """
        digest = "a" * 64
        self.assertEqual(
            CertificateFacts.fromJSON(facts(), digest), CertificateFacts.fromJSON(facts())
        )
        self.assertIsNone(CertificateFacts.fromJSON(facts(), "b" * 64))
        self.assertIsNone(CertificateFacts.fromJSON(facts(digest=None), digest))
        self.assertIsNone(CertificateFacts.fromJSON(facts(not_before=30.0), digest))


class RecordedCertificateTests(SynchronousTestCase):
    """
    L{RecordedCertificate} tells the recorded validity and parses the
    certificate at its first use.
    """

    def test_parsedAtFirstUse(self) -> None:
        """
        The validity is the recorded one, the certificate not parsed; the
        first call parses it, once, and drops its PEM.
        """
        issued = Issuing().issue()
        recorded = CertificateFacts("c" * 64, *issued.validity, issued.issuerText, NAMES)
        parsed: list[bytes] = []
        load = certificates.x509.load_pem_x509_certificate

        def recording(pem: bytes) -> Any:
            parsed.append(pem)
            return load(pem)

        self.patch(certificates.x509, "load_pem_x509_certificate", recording)
        made = RecordedCertificate(issued.certificatePEM, recorded)
        self.assertEqual((made.notBefore, made.notAfter), (issued.notBefore, issued.notAfter))
        self.assertEqual(parsed, [])
        self.assertEqual(made(), issued.certificate)
        self.assertIs(made(), made())
        self.assertEqual((parsed, made._pem), ([issued.certificatePEM], b""))

    def test_parsedUnderLock(self) -> None:
        """
        The certificate is parsed holding the lock every recorded
        certificate's first parse takes (the first use may be an export in
        a worker thread while a handshake asks on the reactor thread), so
        both get the one certificate.
        """
        issued = Issuing().issue()
        recorded = CertificateFacts("c" * 64, *issued.validity, issued.issuerText, NAMES)
        held: list[bool] = []
        load = certificates.x509.load_pem_x509_certificate

        def recording(pem: bytes) -> Any:
            held.append(certificates._PARSING.locked())
            return load(pem)

        self.patch(certificates.x509, "load_pem_x509_certificate", recording)
        made = RecordedCertificate(issued.certificatePEM, recorded)
        self.assertIs(made(), made())
        self.assertEqual(held, [True])
        self.assertFalse(certificates._PARSING.locked())

    def test_racedFirstUse(self) -> None:
        """
        A thread that finds the certificate unparsed while another thread
        parses it waits for the lock, then takes the certificate the other
        made: the PEM is parsed once (parsing again would read the PEM the
        first parse dropped, and fail).  The threads are ordered by events:
        the second asks for the lock only once the first parses under it.
        """
        issued = Issuing().issue()
        recorded = CertificateFacts("c" * 64, *issued.validity, issued.issuerText, NAMES)
        made = RecordedCertificate(issued.certificatePEM, recorded)
        parsing = threading.Event()
        waiting = threading.Event()
        parsed: list[bytes] = []
        load = certificates.x509.load_pem_x509_certificate

        def recording(pem: bytes) -> Any:
            parsed.append(pem)
            if not parsing.is_set():
                parsing.set()
                # Bounded, for a broken run: the second thread sets it.
                waiting.wait(30)
            return load(pem)

        class Told:
            """
            The lock, which tells when a thread asks for it while the
            first thread parses.
            """

            lock = threading.Lock()

            def __enter__(self) -> None:
                if parsing.is_set():
                    waiting.set()
                self.lock.acquire()

            def __exit__(self, *exception: object) -> None:
                self.lock.release()

        self.patch(certificates, "_PARSING", Told())
        self.patch(certificates.x509, "load_pem_x509_certificate", recording)
        results: dict[str, object] = {}

        def use(name: str) -> None:
            try:
                results[name] = made()
            except Exception as error:
                results[name] = error

        first = threading.Thread(target=use, args=("first",))
        first.start()
        self.assertTrue(parsing.wait(30))
        second = threading.Thread(target=use, args=("second",))
        second.start()
        for thread in (first, second):
            thread.join(30)
        self.assertTrue(waiting.is_set())
        self.assertEqual(parsed, [issued.certificatePEM])
        self.assertEqual(results["first"], issued.certificate)
        self.assertIs(results["second"], results["first"])

    def test_unusable(self) -> None:
        """
        A PEM that no longer parses, or a certificate whose validity is not
        the recorded one, is an L{InvalidCertificate}: the certificate
        cannot be used (as a key that does not parse at its first use).
        """
        issued = Issuing().issue()
        recorded = CertificateFacts("c" * 64, *issued.validity, issued.issuerText, NAMES)
        pem = issued.certificatePEM
        damaged = pem.replace(b"MII", b"AAA", 1)
        self.assertRaises(InvalidCertificate, RecordedCertificate(damaged, recorded))
        self.assertRaises(InvalidCertificate, RecordedCertificate(b"", recorded))
        later = attrs.evolve(recorded, notAfter=recorded.notAfter + 1)
        self.assertRaises(InvalidCertificate, RecordedCertificate(pem, later))


class UnreadableInServiceTests(SynchronousTestCase):
    """
    A reload or a cluster change compares a stored certificate with the
    one in service, either of which may have been taken on its recorded
    facts and no longer parse (L{storedRefusal}).
    """

    def setUp(self) -> None:
        self.issuing = Issuing()
        self.issued = self.issuing.issue()
        self.now = self.issued.validity[0] + 10

    def recorded(self, issued: CertifiedKey, damaged: bool) -> CertifiedKey:
        """
        C{issued} as a record taken on its facts, its certificate's PEM
        damaged if C{damaged}.
        """
        pem = issued.toPEM()
        if damaged:
            pem = pem.replace(
                b"-----BEGIN CERTIFICATE-----\nMII", b"-----BEGIN CERTIFICATE-----\nAAA", 1
            )
        recorded = CertificateFacts("c" * 64, *issued.validity, issued.issuerText, NAMES)
        return CertifiedKey.fromCheckedPEM(pem, NAMES, recorded)

    def inService(self, current: CertifiedKey) -> ManagedCertificate:
        """
        A set of L{DOMAINS} in service on C{current}.
        """
        managed = ManagedCertificate(DOMAINS, self.issuing.settings)
        managed.current = current
        return managed

    def test_laterReplacesUnreadable(self) -> None:
        """
        A stored certificate that ends later replaces one in service that
        no longer parses (it raised, reading the serials first).
        """
        managed = self.inService(self.recorded(self.issued, damaged=True))
        renewed = self.issuing.issue(validity=91 * DAY)
        self.assertIsNone(storedRefusal(managed, renewed, self.now))

    def test_sameEndReplacesUnreadable(self) -> None:
        """
        A readable stored certificate ending in the same second replaces
        one in service that cannot be read; the same unreadable record
        replaces nothing.
        """
        managed = self.inService(self.recorded(self.issued, damaged=True))
        self.assertIsNone(storedRefusal(managed, self.recorded(self.issued, False), self.now))
        again = self.recorded(self.issued, damaged=True)
        self.assertEqual(storedRefusal(managed, again, self.now), Refusal.NOT_NEWER)


class CountedEnd:
    """
    A L{LazyCertificate <letsencrypt_resource.certificates.LazyCertificate>}
    of a made certificate that counts the questions about its end.
    """

    def __init__(self, made: x509.Certificate):
        self.made = made
        self.asked = 0

    @property
    def notBefore(self) -> datetime.datetime:
        """
        The made certificate's start.
        """
        return self.made.not_valid_before_utc

    @property
    def notAfter(self) -> datetime.datetime:
        """
        The made certificate's end, counted.
        """
        self.asked += 1
        return self.made.not_valid_after_utc

    def __call__(self) -> x509.Certificate:
        """
        The made certificate.
        """
        return self.made


class NewerByValidityTests(SynchronousTestCase):
    """
    L{storedRefusal} tells whether a stored certificate is newer from the
    validity its certificate keeps, read once.
    """

    def test_endReadOnce(self) -> None:
        """
        The stored certificate's end and that of the one in service are
        asked once each, however often the stored one is judged: no
        C{datetime} is made again for either at each question (10,000 at
        start-up).
        """
        issuing = Issuing()
        issued = issuing.issue()
        lazy = CountedEnd(issued.certificate)
        stored = CertifiedKey(issued.key, lazy, issued.chain, vouchedNames=NAMES)
        renewed = issuing.issue(validity=91 * DAY)
        inService = CountedEnd(renewed.certificate)
        managed = ManagedCertificate(DOMAINS, issuing.settings)
        managed.current = CertifiedKey(renewed.key, inService, renewed.chain)
        now = issued.validity[0] + 10
        for _ in range(3):
            self.assertEqual(storedRefusal(managed, stored, now), Refusal.NOT_NEWER)
        self.assertEqual((lazy.asked, inService.asked), (1, 1))
        managed.current = None
        self.assertIsNone(storedRefusal(managed, stored, now))
        self.assertEqual(lazy.asked, 1)

    def test_recordedValidityNoCachedProperty(self) -> None:
        """
        The validity of a certificate taken on its recorded facts is theirs,
        told without the class's C{__getattr__} (a cached property's first
        use on a class with slots, which took half as long as making the
        object, at every set of a start-up); one without facts is read
        from its certificate, once, as before.
        """
        issued = Issuing().issue()
        facts = CertificateFacts("c" * 64, 1.0, 2.0, issued.issuerText, NAMES)
        recorded = CertifiedKey.fromCheckedPEM(issued.toPEM(), NAMES, facts)
        asked: list[str] = []
        getattr_ = CertifiedKey.__getattr__  # type: ignore[attr-defined]

        def counted(self: CertifiedKey, name: str) -> Any:
            asked.append(name)
            return getattr_(self, name)

        self.patch(CertifiedKey, "__getattr__", counted)
        self.assertEqual((recorded.validity, recorded.validity), ((1.0, 2.0), (1.0, 2.0)))
        self.assertEqual(asked, [])
        lazy = CountedEnd(issued.certificate)
        unrecorded = CertifiedKey(issued.key, lazy, issued.chain)
        expected = (
            issued.certificate.not_valid_before_utc.timestamp(),
            issued.certificate.not_valid_after_utc.timestamp(),
        )
        self.assertEqual((unrecorded.validity, unrecorded.validity), (expected, expected))
        self.assertEqual(lazy.asked, 1)


class SavedFactsTests(SynchronousTestCase):
    """
    The renewal state a set in service saves records its certificate's
    facts, bound to the digest it vouches for (L{storedRecord}).
    """

    def test_recorded(self) -> None:
        """
        The facts are the certificate's validity and issuer, with the
        digest of its record and the set's names.
        """
        issuing = Issuing()
        issued = issuing.issue()
        state = issuing.savedState(issued)
        digest = bundleDigest(issued.toPEM())
        self.assertEqual(storedDigest(state), digest)
        self.assertEqual(
            storedRecord(state)[1],
            CertificateFacts(digest, *issued.validity, issued.issuerText, NAMES),
        )

    def test_notOfTheVouchedRecord(self) -> None:
        """
        No facts are taken from a state without them (an earlier
        version's), without a digest, or whose facts are of another record
        than the one it vouches for.
        """
        issuing = Issuing()
        state = issuing.savedState(issuing.issue())
        older = {k: v for k, v in state.items() if k != "certificate_facts"}
        undigested = {**state, "certificate_digest": None}
        other = {**state, "certificate_digest": "d" * 64}
        for saved in (older, undigested, other, None):
            self.assertIsNone(storedRecord(saved)[1])

    def test_storedRecord(self) -> None:
        """
        L{storedRecord} gives the digest of a state, as L{storedDigest}
        gives it, with its facts: the digest alone when the facts are of
        another record.
        """
        issuing = Issuing()
        state = issuing.savedState(issuing.issue())
        self.assertEqual(storedRecord(state)[0], storedDigest(state))
        self.assertIsNotNone(storedRecord(state)[1])
        other = {**state, "certificate_digest": "d" * 64}
        self.assertEqual(storedRecord(other), ("d" * 64, None))
        self.assertEqual(storedRecord({**state, "certificate_digest": None}), (None, None))
        self.assertEqual(storedRecord(None), (None, None))

    def test_recordedDigestKept(self) -> None:
        """
        The state of a set in service on a certificate read with its facts
        saves their digest and facts again without parsing the certificate.
        """
        issuing = Issuing()
        issued = issuing.issue()
        state = issuing.savedState(issued)
        recorded = storedRecord(state)[1]
        read = CertifiedKey.fromCheckedPEM(issued.toPEM(), frozenset(DOMAINS), recorded)
        again = issuing.savedState(read)
        self.assertEqual(again, state)
        made = read._certificate
        assert isinstance(made, RecordedCertificate)
        self.assertIsNone(made._made)


class StoredSetTests(SynchronousTestCase):
    """
    C{StoredSet.certifiedKey} uses recorded facts for the record they are
    of alone.
    """

    def stored(self, issuing: Issuing, state: dict[str, Any] | None) -> CertifiedKey:
        """
        The certificate of L{DOMAINS} as the start-up takes it back, with
        C{state} as its renewal state.
        """
        sets: list[Any] = []
        issuing.records.loadSets([DOMAINS]).addCallback(sets.extend)
        certifiedKey = sets[0].certifiedKey(*storedRecord(state))
        assert certifiedKey is not None
        return certifiedKey

    def test_recordedUnparsed(self) -> None:
        """
        The record the facts are of is read with them, its certificate not
        parsed until it is asked for; it is then the stored one.
        """
        issuing = Issuing()
        issued = issuing.issue()
        state = issuing.savedState(issued)
        issuing.keep(issued, state)
        read = self.stored(issuing, state)
        self.assertEqual(read.recorded, storedRecord(state)[1])
        self.assertEqual(
            (read.validity, read.issuerText, read.toPEM()),
            (issued.validity, issued.issuerText, issued.toPEM()),
        )
        self.assertEqual(read.certificate, issued.certificate)

    def test_otherRecordParsed(self) -> None:
        """
        A certificate replaced by hand after the state was saved is parsed
        whole: the recorded facts of the one before (a far expiry) are not
        its own.
        """
        issuing = Issuing()
        state = issuing.savedState(issuing.issue(validity=900 * DAY))
        stale = issuing.issue(validity=10 * DAY)
        issuing.keep(stale, state)
        read = self.stored(issuing, state)
        self.assertEqual((read.recorded, read.validity), (None, stale.validity))

    def test_factsOfAnotherDigest(self) -> None:
        """
        Facts given for another digest than the checked one are not used,
        even when the record has the checked digest.
        """
        issuing = Issuing()
        issued = issuing.issue(validity=10 * DAY)
        issuing.keep(issued, None)
        far = CertificateFacts("e" * 64, 0.0, 1e12, "CN=Far", NAMES)
        sets: list[Any] = []
        issuing.records.loadSets([DOMAINS]).addCallback(sets.extend)
        read = sets[0].certifiedKey(bundleDigest(issued.toPEM()), far)
        self.assertEqual((read.recorded, read.validity), (None, issued.validity))

    def test_copiedFromAnotherSet(self) -> None:
        """
        The record and state of another set, copied under this set's
        names, are parsed and their names checked: neither the facts nor
        the digest vouch for names other than the ones they were saved
        for; with a state of the previous version (a digest, no facts),
        the names are not vouched for either.
        """
        issuing = Issuing()
        issued = issuing.issue(OTHER)
        state = issuing.savedState(issued, OTHER)
        older = {k: v for k, v in state.items() if k != "certificate_facts"}
        issuing.keep(issued, state)
        for saved in (state, older):
            read = self.stored(issuing, saved)
            self.assertEqual((read.recorded, read.vouchedNames), (None, None))
            self.assertFalse(read.carries(DOMAINS))


class StatusTests(SynchronousTestCase):
    """
    The offline status shows the same row for a state with facts as for
    the same state without them (an earlier version's), and the real
    certificate's expiry when the facts are not of its record.
    """

    def test_sameRow(self) -> None:
        """
        The rows on a state with facts and on one without are equal.
        """
        rows = []
        for keep in (True, False):
            issuing = Issuing()
            issued = issuing.issue()
            state = issuing.savedState(issued)
            if not keep:
                del state["certificate_facts"]
            issuing.keep(issued, state)
            rows.append(issuing.status())
        self.assertEqual(rows[0], rows[1])
        self.assertFalse(rows[0]["provisional"])
        self.assertEqual(rows[0]["days_left"], 89.0)

    def test_rowsWithoutCollections(self) -> None:
        """
        The rows are made with the collector's automatic collections
        paused (none is garbage), which resume after.
        """
        self.addCleanup(gc.enable if gc.isenabled() else gc.disable)
        gc.enable()
        issuing = Issuing()
        issued = issuing.issue()
        issuing.keep(issued, issuing.savedState(issued))
        enabled: list[bool] = []
        statusRow = statusreader.statusRow

        def recording(*args: Any) -> dict[str, Any]:
            enabled.append(gc.isenabled())
            return statusRow(*args)

        self.patch(statusreader, "statusRow", recording)
        issuing.status()
        self.assertEqual((enabled, gc.isenabled()), ([False], True))

    def test_staleCertificateRenewed(self) -> None:
        """
        A state whose facts claim a far expiry, over a certificate replaced
        by hand with one that expires soon, shows the real expiry and the
        renewal due now.
        """
        issuing = Issuing()
        state = issuing.savedState(issuing.issue(validity=900 * DAY))
        issuing.keep(issuing.issue(validity=2 * DAY), state)
        row = issuing.status()
        now = isoTime(issuing.reactor.seconds())
        self.assertEqual((row["days_left"], row["next_check"]), (1.0, now))

    def test_farTimesParsed(self) -> None:
        """
        Facts whose end of validity is out of the range of a certificate's
        times are refused, with no error: the certificate is parsed and
        shown.
        """
        for far in (1e20, 1e300):
            issuing = Issuing()
            issued = issuing.issue()
            state = issuing.savedState(issued)
            state["certificate_facts"]["not_after"] = far
            issuing.keep(issued, state)
            row = issuing.status()
            self.assertEqual((row["provisional"], row["days_left"]), (False, 89.0))

    def test_issuerEscaped(self) -> None:
        """
        A certificate whose issuer holds characters a terminal acts on has
        no facts taken back (its issuer is parsed), and the status table
        shows that issuer with those characters escaped.
        """
        issuing = Issuing()
        evil = "Evil\x1b]0:pwned\x07CA"
        caKey = generateKey("ecdsa-p256")
        caName = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, evil)])
        key = generateKey("ecdsa-p256")
        now = datetime.datetime.fromtimestamp(issuing.reactor.seconds(), datetime.timezone.utc)
        builder = (
            x509.CertificateBuilder()
            .issuer_name(caName)
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DOMAINS[0])]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=90))
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName(name) for name in DOMAINS]),
                critical=False,
            )
        )
        issued = CertifiedKey(key, builder.sign(caKey, hashes.SHA256()))
        state = issuing.savedState(issued)
        self.assertIsNone(storedRecord(state)[1])
        issuing.keep(issued, state)
        row = issuing.status()
        self.assertIn(evil, row["issuer"])
        text = formatStatus([row], False, "/state")
        self.assertNotIn("\x1b", text)
        self.assertNotIn("\x07", text)
        self.assertIn("Evil\\x1b]0:pwned\\x07CA", text)

    def test_copiedFromAnotherSet(self) -> None:
        """
        Another set's record and state copied under this set's names are
        not taken as this set's certificate: it shows as provisional, as
        with no stored state.
        """
        issuing = Issuing()
        issued = issuing.issue(OTHER)
        issuing.keep(issued, issuing.savedState(issued, OTHER))
        self.assertTrue(issuing.status()["provisional"])


class StartTests(ResourceTestCase):
    """
    A resource loaded on a state saved with facts puts each stored
    certificate in service without parsing it.
    """

    def test_inServiceUnparsed(self) -> None:
        """
        The certificate a consumer takes is the stored one, read with its
        facts, and not yet parsed; the set's renewal is planned by them as
        by the certificate.
        """
        key = generateKey("ecdsa-p256")
        issued = CertifiedKey.fromParts(key, self.server.issue(key.public_key(), REPORTS))
        managed = ManagedCertificate(REPORTS, settingsFingerprint(resourceOptions()))
        managed.current = issued
        records = Records(self.store)
        self.successResultOf(records.saveCertificate(REPORTS, issued))
        self.successResultOf(records.saveRenewalState(REPORTS, managed.state()))
        resource = self.makeResource()
        self.successResultOf(resource.load())
        [taken] = self.consumers["reports"].received
        made = taken._certificate
        assert isinstance(made, RecordedCertificate)
        self.assertIsNone(made._made)
        self.assertEqual(
            (taken.recorded, resource.managed[frozenset(REPORTS)].plan()),
            (storedRecord(managed.state())[1], managed.plan()),
        )
        self.assertIsNone(made._made)
        self.assertEqual(taken.certificate, issued.certificate)


class UnreadableAtFirstUseTests(ResourceTestCase):
    """
    A stored certificate vouched for by its state, with facts, that no
    longer parses (a stricter parser, say): it is put in service unparsed,
    and its first handshake takes the path of a key unusable at its first
    use, instead of raising at every handshake until its renewal.
    """

    def restarted(self, **options: Any) -> TLSCertificateConsumer:
        """
        Start and stop a resource of C{options} with a TLS consumer of
        L{REPORTS}, damage its stored certificate (its state vouching for
        the damaged bytes), and start a resource of C{options} again, until
        settled: return the consumer.
        """
        tls = TLSCertificateConsumer("reports-tls", REPORTS)
        self.registry.registerUtility(tls, ICertificateConsumer, name="reports-tls")
        self.stop(self.start(**options))
        stored = self.store.values[certificateKey(REPORTS)]
        head, start, rest = stored.partition(b"-----BEGIN CERTIFICATE-----\n")
        damaged = head + start + b"AAAA" + rest[4:]
        state = json.loads(self.store.values[renewalKey(REPORTS)])
        original = CertifiedKey.fromPEM(stored)
        digest = state["certificate_digest"] = bundleDigest(damaged)
        state["certificate_facts"] = CertificateFacts(
            digest, *original.validity, original.issuerText, frozenset(REPORTS)
        ).toJSON()
        self.store.values[certificateKey(REPORTS)] = damaged
        self.store.values[renewalKey(REPORTS)] = json.dumps(state).encode()
        resource = self.resource = self.makeResource(**options)
        resource.startService()
        self.addCleanup(self.stop, resource)
        runUntilFired(self.reactor, resource.whenSettled())
        return tls

    def test_provisionalThenOrdered(self) -> None:
        """
        The refused handshake logs event 20260; the set goes on a
        provisional certificate and is ordered at once; the service then
        presents the new CA-issued certificate.
        """
        tls = self.restarted()
        resource = self.resource
        loaded = tls.tls.certifiedKey
        assert loaded is not None
        self.assertIsNotNone(loaded.recorded)
        self.assertRaises(NoCertificateYet, tls.tls.serverConnectionForTLS, None)
        self.assertEqual(len(self.flushLoggedErrors(SSL.Error)), 1)
        self.assertReplacedAtOnce(resource, tls)

    def test_notExported(self) -> None:
        """
        With a store directory, the export at start-up of the stored
        certificate that no longer parses logs event 20268, naming the set
        and its record (which may be a database row: no state directory
        is named), and what comes next (an order at the first handshake or
        at the next renewal), with no traceback, and is not tried again;
        the first handshake then orders a new certificate, which is
        exported.
        """
        store = os.path.abspath(self.mktemp())
        os.makedirs(store)
        tls = self.restarted(storeDirectory=store)
        [text] = self.eventTexts(20268)
        self.assertIn(REPORTS[0], text)
        self.assertIn(f"its record {certificateKey(REPORTS)} cannot be read", text)
        self.assertNotIn("state directory", text)
        self.assertIn("at the first handshake for it (event 20260) or at its next renewal", text)
        self.assertIn("no PEM certificate could be read", text)
        self.assertNotIn(20009, self.eventIDs())
        self.assertRaises(NoCertificateYet, tls.tls.serverConnectionForTLS, None)
        self.assertEqual(len(self.flushLoggedErrors(SSL.Error)), 1)
        attempt = self.resource.managed[frozenset(REPORTS)].attempt
        assert attempt is not None
        runUntilFired(self.reactor, attempt.whenEnded())
        issued = tls.tls.certifiedKey
        assert issued is not None and not issued.provisional
        with open(os.path.join(store, REPORTS[0], "fullchain.pem"), "rb") as stream:
            self.assertEqual(stream.read(), issued.fullchainPEM)
        self.assertEqual(len(self.eventTexts(20268)), 1)
