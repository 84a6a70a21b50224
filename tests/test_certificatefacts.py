"""
What the renewal state records of a stored certificate
(L{letsencrypt_resource.certificatefacts}): the start-up and the status
take its validity and issuer from there, bound to the record by its digest,
and parse the certificate at its first use; a record without them, or
other than the one they are of, is parsed as before.
"""

from __future__ import annotations

import gc
import json
import math
from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource import certificatefacts, statusreader
from letsencrypt_resource.certificatefacts import (
    MAX_ISSUER,
    CertificateFacts,
    RecordedCertificate,
)
from letsencrypt_resource.certificates import CertifiedKey, bundleDigest
from letsencrypt_resource.config import ServiceOptions
from letsencrypt_resource.keygen import generateKey
from letsencrypt_resource.managed import ManagedCertificate
from letsencrypt_resource.renewalstate import storedDigest, storedFacts
from letsencrypt_resource.setloading import settingsFingerprint
from letsencrypt_resource.statusreader import offlineStatus
from letsencrypt_resource.statusrows import isoTime
from letsencrypt_resource.storage.records import Records
from letsencrypt_resource.testing import FakeACMEServer, MemoryStore
from tests.helpers.resourcecase import DAY, REPORTS, ResourceTestCase, resourceOptions

DOMAINS = ("facts.example.test", "www.facts.example.test")


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

    def savedState(self, issued: CertifiedKey) -> dict[str, Any]:
        """
        The renewal state a set in service on C{issued} saves, through JSON.
        """
        managed = ManagedCertificate(DOMAINS, self.settings)
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
    document = CertificateFacts("a" * 64, 10.0, 20.0, "CN=Test CA").toJSON()
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
        saved = CertificateFacts("b" * 64, 1.5, 2.5, "CN=Some CA,O=Some")
        again = CertificateFacts.fromJSON(json.loads(json.dumps(saved.toJSON())))
        self.assertEqual(again, saved)
        other = CertificateFacts.fromJSON(json.loads(json.dumps(saved.toJSON())))
        assert again is not None and other is not None
        self.assertIs(again.issuer, other.issuer)

    def test_refused(self) -> None:
        """
        Anything but exactly such a document is no facts: another type, a
        missing or an extra field, a digest that is not one, times that are
        not floats, not finite or in the wrong order, an issuer that is not
        a text, is too long or has characters a terminal would act on.
        """
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
        ]
        for value in refused:
            self.assertIsNone(CertificateFacts.fromJSON(value), value)
        self.assertIsNotNone(CertificateFacts.fromJSON(facts(issuer="x" * MAX_ISSUER)))


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
        recorded = CertificateFacts("c" * 64, *issued.validity, issued.issuerText)
        parsed: list[bytes] = []
        load = certificatefacts.x509.load_pem_x509_certificate

        def recording(pem: bytes) -> Any:
            parsed.append(pem)
            return load(pem)

        self.patch(certificatefacts.x509, "load_pem_x509_certificate", recording)
        made = RecordedCertificate(issued.certificatePEM, recorded)
        self.assertEqual((made.notBefore, made.notAfter), (issued.notBefore, issued.notAfter))
        self.assertEqual(parsed, [])
        self.assertEqual(made(), issued.certificate)
        self.assertIs(made(), made())
        self.assertEqual((parsed, made._pem), ([issued.certificatePEM], None))


class SavedFactsTests(SynchronousTestCase):
    """
    The renewal state a set in service saves records its certificate's
    facts, bound to the digest it vouches for (L{storedFacts}).
    """

    def test_recorded(self) -> None:
        """
        The facts are the certificate's validity and issuer, with the
        digest of its record.
        """
        issuing = Issuing()
        issued = issuing.issue()
        state = issuing.savedState(issued)
        digest = bundleDigest(issued.toPEM())
        self.assertEqual(storedDigest(state), digest)
        self.assertEqual(
            storedFacts(state), CertificateFacts(digest, *issued.validity, issued.issuerText)
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
            self.assertIsNone(storedFacts(saved))

    def test_recordedDigestKept(self) -> None:
        """
        The state of a set in service on a certificate read with its facts
        saves their digest and facts again without parsing the certificate.
        """
        issuing = Issuing()
        issued = issuing.issue()
        state = issuing.savedState(issued)
        recorded = storedFacts(state)
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
        certifiedKey = sets[0].certifiedKey(storedDigest(state), storedFacts(state))
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
        self.assertEqual(read.recorded, storedFacts(state))
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
        far = CertificateFacts("e" * 64, 0.0, 1e12, "CN=Far")
        sets: list[Any] = []
        issuing.records.loadSets([DOMAINS]).addCallback(sets.extend)
        read = sets[0].certifiedKey(bundleDigest(issued.toPEM()), far)
        self.assertEqual((read.recorded, read.validity), (None, issued.validity))


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
            (storedFacts(managed.state()), managed.plan()),
        )
        self.assertIsNone(made._made)
        self.assertEqual(taken.certificate, issued.certificate)
