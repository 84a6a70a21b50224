"""
Tests for the limits of the provisional signer
(L{letsencrypt_resource.provisional}) and for the resource replacing a
signer that may not sign what it needs.
"""

from __future__ import annotations

import datetime
import gc
import ipaddress
from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from OpenSSL import crypto
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import Logger, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource import provisioning as provisioningModule
from letsencrypt_resource.certificates import CA_KEY_USAGE, CertifiedKey
from letsencrypt_resource.keys import generateKey
from letsencrypt_resource.managed import ManagedCertificate
from letsencrypt_resource.metrics import CertificatesCollector
from letsencrypt_resource.provisional import (
    MAX_PERMITTED_SUBTREES,
    makeProvisional,
    makeSigner,
    permittedSubtrees,
    signerProblem,
)
from letsencrypt_resource.provisioning import Provisioning
from tests.helpers import countSignatures
from tests.helpers.resourcecase import FILES, REPORTS, ResourceTestCase, resourceOptions

NOW = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
CONFIGURED = ("files.example.test", "www.example.test")
#: When the provisioning tests start, in seconds since the epoch.
STARTED = 1_900_000_000.25


def verifyWithCryptography(
    signer: CertifiedKey, leaf: CertifiedKey, name: x509.DNSName | x509.IPAddress
) -> None:
    """
    Verify C{leaf} for C{name} with C{cryptography}'s Web PKI verifier,
    trusting C{signer} alone, at L{NOW}.

    @raise VerificationError: when the chain is refused.
    """
    verifier = (
        PolicyBuilder().store(Store([signer.certificate])).time(NOW).build_server_verifier(name)
    )
    verifier.verify(leaf.certificate, [])


def verifyWithOpenSSL(signer: CertifiedKey, leaf: CertifiedKey) -> None:
    """
    Verify the chain of C{leaf} with OpenSSL, trusting C{signer} alone, at
    L{NOW}.

    @raise crypto.X509StoreContextError: when the chain is refused.
    """
    store = crypto.X509Store()
    store.add_cert(crypto.X509.from_cryptography(signer.certificate))
    store.set_time(NOW.replace(tzinfo=None))
    crypto.X509StoreContext(
        store, crypto.X509.from_cryptography(leaf.certificate)
    ).verify_certificate()


def leafWithIPAddress(signer: CertifiedKey) -> CertifiedKey:
    """
    A leaf C{signer} signs for a DNS name it may sign and an IP address.
    """
    key = generateKey("ecdsa-p256")
    certificate = (
        x509.CertificateBuilder()
        .issuer_name(signer.certificate.subject)
        .subject_name(x509.Name([]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(hours=1))
        .not_valid_after(NOW + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("files.example.test"),
                    x509.IPAddress(ipaddress.ip_address("192.0.2.1")),
                ]
            ),
            critical=True,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.key.public_key()),
            critical=False,
        )
        .sign(signer.key, hashes.SHA256())
    )
    return CertifiedKey(key, certificate, (signer.certificate,), provisional=True)


def unconstrainedSigner(now: datetime.datetime) -> CertifiedKey:
    """
    A signer as earlier versions made it: ten years, no name constraints.
    """
    key = generateKey("ecdsa-p256")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Provisional CA")])
    certificate = (
        x509.CertificateBuilder()
        .issuer_name(name)
        .subject_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(CA_KEY_USAGE, critical=True)
        .sign(key, hashes.SHA256())
    )
    return CertifiedKey(key, certificate)


class SignerLimitTests(SynchronousTestCase):
    """
    What a signer may sign, checked by real chain verification.
    """

    def setUp(self) -> None:
        self.signer = makeSigner("tests", CONFIGURED, NOW)

    def test_criticalNameConstraints(self) -> None:
        """
        The signer carries critical name constraints that permit the
        configured names and exclude every IP address, and may only sign
        server certificates.
        """
        extension = self.signer.certificate.extensions.get_extension_for_class(x509.NameConstraints)
        self.assertTrue(extension.critical)
        self.assertEqual(
            (extension.value.permitted_subtrees, extension.value.excluded_subtrees),
            (
                [x509.DNSName(name) for name in CONFIGURED],
                [
                    x509.IPAddress(ipaddress.ip_network("0.0.0.0/0")),
                    x509.IPAddress(ipaddress.ip_network("::/0")),
                ],
            ),
        )
        usage = self.signer.certificate.extensions.get_extension_for_class(
            x509.ExtendedKeyUsage
        ).value
        self.assertEqual(list(usage), [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH])

    def test_livesAYear(self) -> None:
        """
        The signer is valid for a year, not ten.
        """
        self.assertEqual(self.signer.notAfter - NOW, datetime.timedelta(days=365))

    def test_configuredNamesVerify(self) -> None:
        """
        A provisional certificate for the configured names, or names under
        them, verifies against the signer with C{cryptography} and OpenSSL.
        """
        for names in (CONFIGURED, ("a.files.example.test",)):
            leaf = makeProvisional(self.signer, names, NOW)
            verifyWithCryptography(self.signer, leaf, x509.DNSName(names[0]))
            verifyWithOpenSSL(self.signer, leaf)

    def test_otherNamesRefused(self) -> None:
        """
        A certificate the signer key signs for a name outside its
        constraints, alone or beside a permitted one, fails verification:
        a client that trusts the signer for tests trusts nothing else.
        """
        for names in (
            ("www.bank.example",),
            ("files.example.test", "www.bank.example"),
            ("example.test",),
            ("evilfiles.example.test",),
        ):
            leaf = makeProvisional(self.signer, names, NOW)
            self.assertRaises(
                VerificationError,
                verifyWithCryptography,
                self.signer,
                leaf,
                x509.DNSName(names[-1]),
            )
            self.assertRaises(crypto.X509StoreContextError, verifyWithOpenSSL, self.signer, leaf)

    def test_ipAddressRefused(self) -> None:
        """
        A certificate the signer key signs for an IP address fails
        verification, though its DNS name is permitted.
        """
        leaf = leafWithIPAddress(self.signer)
        self.assertRaises(
            VerificationError,
            verifyWithCryptography,
            self.signer,
            leaf,
            x509.IPAddress(ipaddress.ip_address("192.0.2.1")),
        )
        self.assertRaises(crypto.X509StoreContextError, verifyWithOpenSSL, self.signer, leaf)


class PermittedSubtreesTests(SynchronousTestCase):
    """
    Tests for L{permittedSubtrees}.
    """

    def test_namesUnderOthersDropped(self) -> None:
        """
        A name under another listed name adds nothing; the rest are sorted.
        """
        self.assertEqual(
            permittedSubtrees(["www.files.example.test", "files.example.test", "b.example.org"]),
            ("b.example.org", "files.example.test"),
        )

    def test_manyNamesGroupedUnderParents(self) -> None:
        """
        Beyond L{MAX_PERMITTED_SUBTREES}, names are replaced by their parent
        domains, so the signer stays small, and every name is still
        permitted.
        """
        names = [f"s{index}.d{index % 3}.example.test" for index in range(10000)]
        self.assertEqual(
            permittedSubtrees(names),
            ("d0.example.test", "d1.example.test", "d2.example.test"),
        )
        names = [f"s{index}.d{index}.test" for index in range(200)]
        self.assertEqual(permittedSubtrees(names + ["x.example.com"]), ("com", "test"))

    def test_exactlyTheMaximum(self) -> None:
        """
        L{MAX_PERMITTED_SUBTREES} names are kept as they are.
        """
        names = [f"s{index}.example.test" for index in range(MAX_PERMITTED_SUBTREES)]
        self.assertEqual(permittedSubtrees(names), tuple(sorted(names)))


class SignerProblemTests(SynchronousTestCase):
    """
    Tests for L{signerProblem}.
    """

    def test_coveringSigner(self) -> None:
        """
        A signer permitting every name, with more life left than a
        provisional certificate has, has no problem.
        """
        signer = makeSigner("tests", CONFIGURED, NOW)
        self.assertIsNone(signerProblem(signer, CONFIGURED + ("a.files.example.test",), NOW))

    def test_missingNames(self) -> None:
        """
        Names the signer may not sign are named, the first three of them.
        """
        signer = makeSigner("tests", CONFIGURED, NOW)
        self.assertEqual(
            signerProblem(
                signer, ("files.example.test", "a.test", "b.test", "c.test", "d.test"), NOW
            ),
            "the stored one may not sign for a.test, b.test, c.test and 1 more",
        )

    def test_closeToItsEnd(self) -> None:
        """
        A signer that would end before a provisional certificate made now is
        not used.
        """
        signer = makeSigner("tests", CONFIGURED, NOW)
        later = NOW + datetime.timedelta(days=300)
        self.assertEqual(
            signerProblem(signer, CONFIGURED, later),
            "the stored one ends on 2031-01-02, before a provisional certificate made now",
        )

    def test_unconstrained(self) -> None:
        """
        A signer without name constraints, as earlier versions made, is not
        used.
        """
        self.assertEqual(
            signerProblem(unconstrainedSigner(NOW), CONFIGURED, NOW),
            "the stored one has no name constraints",
        )


class ResourceSignerTests(ResourceTestCase):
    """
    The resource uses the stored signer only when it may sign every name in
    use, and otherwise makes and stores a new one, with event 20180.
    """

    def now(self) -> datetime.datetime:
        """
        The fake clock's time.
        """
        return datetime.datetime.fromtimestamp(self.reactor.seconds(), datetime.timezone.utc)

    def storedSigner(self) -> CertifiedKey:
        """
        The signer in the store.
        """
        assert self.store.signer is not None
        return CertifiedKey.fromPEM(self.store.signer)

    def assertSignerFor(self, names: tuple[str, ...], reason: str) -> None:
        """
        Assert that the stored signer may sign for C{names}, signed the
        provisional certificates the consumers got first, and was made with
        one event 20180 giving C{reason}.
        """
        signer = self.storedSigner()
        self.assertIsNone(signerProblem(signer, names, self.now()))
        for consumer in self.consumers.values():
            self.assertEqual(consumer.received[0].chain, (signer.certificate,))
        [text] = self.eventTexts(20180)
        self.assertIn(f"for the {len(names)} names in use", text)
        self.assertIn(reason, text)

    def test_firstStart(self) -> None:
        """
        At the first start, the new signer may sign exactly the names of the
        services.
        """
        self.start()
        self.assertSignerFor(FILES + REPORTS, "none was stored")
        permitted = (
            self.storedSigner()
            .certificate.extensions.get_extension_for_class(x509.NameConstraints)
            .value.permitted_subtrees
        )
        self.assertEqual(sorted(subtree.value for subtree in permitted), sorted(FILES + REPORTS))

    def test_unconstrainedSignerReplaced(self) -> None:
        """
        A stored signer without name constraints is replaced.
        """
        self.store.signer = unconstrainedSigner(self.now()).toPEM()
        self.start()
        self.assertSignerFor(FILES + REPORTS, "has no name constraints")

    def test_signerForOtherNamesReplaced(self) -> None:
        """
        A stored signer that may not sign a name now in use (a service was
        added) is replaced by one that may sign them all.
        """
        self.store.signer = makeSigner("le", FILES, self.now()).toPEM()
        self.start()
        self.assertSignerFor(FILES + REPORTS, "may not sign for reports.example.test")

    def test_signerNearItsEndReplaced(self) -> None:
        """
        A stored signer with less life left than a provisional certificate
        is replaced.
        """
        made = self.now() - datetime.timedelta(days=300)
        self.store.signer = makeSigner("le", FILES + REPORTS, made).toPEM()
        self.start()
        self.assertSignerFor(FILES + REPORTS, "before a provisional certificate")

    def test_coveringSignerKept(self) -> None:
        """
        A stored signer that may sign every name in use is kept, with no
        event 20180.
        """
        pem = makeSigner("le", ("example.test",), self.now()).toPEM()
        self.store.signer = pem
        self.start()
        self.assertEqual((self.store.signer, self.eventTexts(20180)), (pem, []))


class ResourceStopTests(ResourceTestCase):
    """
    A stop of the whole resource during its start-up's provision.
    """

    def test_stopDuringStartUpTellsNothing(self) -> None:
        """
        The resource's C{stopService} during the start-up's provision (its
        scheduler stops first and cancels the provision) logs no event
        20208 and calls no start-up listener: the services are stopping,
        not in service.
        """
        self.patch(provisioningModule, "PROVISION_BATCH", 1)
        resource = self.makeResource()
        ended: list[str] = []
        resource.startUpListeners.append(lambda: ended.append("ended"))
        resource.startService()
        waiting = [s for s in resource.managed.values() if s.current is None]
        self.successResultOf(resource.stopService())
        self.reactor.advance(0)
        self.assertEqual((bool(waiting), self.eventTexts(20208), ended), (True, [], []))


class LazyProvisioningTests(SynchronousTestCase):
    """
    L{Provisioning.provision} puts every set on a provisional certificate
    of one key made for this start, signed at its first use only.
    """

    def setUp(self) -> None:
        self.saved: list[CertifiedKey] = []
        self.jobs: list[str] = []
        self.signatures = countSignatures(self)

    async def loadProvisionalSigner(self) -> bytes | None:
        """
        The storage of the test holds the signer saved last, if any.
        """
        return self.saved[-1].toPEM() if self.saved else None

    def saveSigner(self, signer: CertifiedKey) -> None:
        """
        Keep the signer made, as the storage would.
        """
        self.saved.append(signer)

    def runInThread(self, function: Callable[..., Any], *args: Any) -> Deferred[Any]:
        """
        Run C{function} at once, noting its name.
        """
        self.jobs.append(function.__name__)
        return succeed(function(*args))

    def provisioning(self, sets: list[ManagedCertificate]) -> Provisioning:
        """
        A L{Provisioning} of C{sets}, on a fake clock, with this test as
        its storage, write queue and workers.
        """
        managed = {frozenset(c.domains): c for c in sets}
        clock = self.clock = Clock()
        # A time with a fraction of a second, which certificates drop.
        clock.advance(STARTED)
        return Provisioning(
            resourceOptions(), managed, self, self, self.runInThread, clock, Logger()
        )

    def test_nothingSignedAtStart(self) -> None:
        """
        Every set is in service at once, with one signer and one key made
        in the workers and nothing signed; the start-up ends with event
        20208 saying that no set waits.
        """
        sets = [ManagedCertificate((f"s{i}.example.test",)) for i in range(40)]
        provisioning = self.provisioning(sets)
        with capturedLogs() as logged:
            provisioning.loaded()
            self.successResultOf(provisioning.provision(sets))
        self.assertEqual(self.jobs, ["makeSigner", "generateKey"])
        self.assertEqual(self.signatures, [])
        for certificate in sets:
            assert certificate.current is not None
            self.assertTrue(certificate.current.provisional)
            self.assertTrue(certificate.current.carries(certificate.domains))
        self.assertEqual(self.signatures, [])
        self.assertEqual([e["event_id"] for e in logged if "event_id" in e], [20180, 20208])
        [started] = [e for e in logged if e.get("event_id") == 20208]
        self.assertEqual(started["waiting"], 0)

    def test_noExportNoLook(self) -> None:
        """
        Without a store directory, L{Provisioning.export} does not work
        out whether the certificate in service is CA-issued: start-up
        exports every set loaded.
        """

        class Unlooked(ManagedCertificate):
            @property
            def issued(self) -> CertifiedKey | None:
                raise AssertionError("the certificate in service was looked at")

        certificate = Unlooked(("a.example.test",))
        self.provisioning([certificate]).export(certificate, deploy=True)

    def test_otherProvisionsDoNotEndStartUp(self) -> None:
        """
        Only the provision that covers the sets loaded at start without a
        certificate ends the start-up, once they are loaded: not one made
        while they load (a set whose stored certificate turned out
        unusable at its first handshake), nor one of other sets (a
        reload's).  Event 20208 is logged once then, no set waiting.
        """
        sets = [ManagedCertificate((f"s{i}.example.test",)) for i in range(3)]
        provisioning = self.provisioning(sets)
        with capturedLogs() as logged:
            self.successResultOf(provisioning.provision(sets[:1]))
            provisioning.loaded()
            self.successResultOf(provisioning.provision([ManagedCertificate(("r.example",))]))
            ended = provisioning.startUp.ended
            self.successResultOf(provisioning.provision(sets[1:]))
        [started] = [e for e in logged if e.get("event_id") == 20208]
        self.assertEqual((ended, started["waiting"]), (False, 0))

    def test_aBatchATurn(self) -> None:
        """
        The sets are put on their provisional certificates
        L{letsencrypt_resource.provisioning.PROVISION_BATCH} in a turn of
        the reactor, the others in later turns, so that thousands do not
        hold it for seconds; the start-up ends with the last.  The garbage
        collector's automatic collections pause meanwhile.
        """
        self.addCleanup(gc.enable)
        self.patch(provisioningModule, "PROVISION_BATCH", 2)
        sets = [ManagedCertificate((f"s{i}.example.test",)) for i in range(5)]
        provisioning = self.provisioning(sets)
        provisioning.loaded()
        provisioned = provisioning.provision(sets)
        first = (
            sum(c.current is not None for c in sets),
            len(self.clock.getDelayedCalls()),
            provisioning.startUp.ended,
            gc.isenabled(),
        )
        self.clock.advance(0)
        self.successResultOf(provisioned)
        self.assertEqual(
            (
                first,
                all(c.current is not None for c in sets),
                provisioning.startUp.ended,
                gc.isenabled(),
            ),
            ((2, 1, False, False), True, True, True),
        )

    def test_stopStopsDelivering(self) -> None:
        """
        Once the resource has stopped, a provision under way delivers no
        further batch: its services are stopping.
        """
        self.patch(provisioningModule, "PROVISION_BATCH", 2)
        sets = [ManagedCertificate((f"s{i}.example.test",)) for i in range(5)]
        provisioning = self.provisioning(sets)
        provisioned = provisioning.provision(sets)
        provisioning.stopped = True
        self.clock.advance(0)
        self.successResultOf(provisioned)
        self.assertEqual(sum(c.current is not None for c in sets), 2)

    def test_stopDuringStartUpTellsNothing(self) -> None:
        """
        A stop during the start-up's provision ends it without event 20208:
        the resource's services are stopping, not in service.
        """
        self.patch(provisioningModule, "PROVISION_BATCH", 2)
        sets = [ManagedCertificate((f"s{i}.example.test",)) for i in range(5)]
        provisioning = self.provisioning(sets)
        with capturedLogs() as logged:
            provisioning.loaded()
            provisioned = provisioning.provision(sets)
            provisioning.stopped = True
            self.clock.advance(0)
            self.successResultOf(provisioned)
        self.assertEqual([e for e in logged if e.get("event_id") == 20208], [])

    def test_stopDuringLoadTellsNothing(self) -> None:
        """
        A load that ends after a stop, with no set to provision, does not
        end the start-up with event 20208 either.
        """
        provisioning = self.provisioning([])
        provisioning.stopped = True
        with capturedLogs() as logged:
            provisioning.loaded()
        self.assertEqual([e for e in logged if e.get("event_id") == 20208], [])

    def test_signedOnceAtFirstUse(self) -> None:
        """
        A set's provisional certificate is signed when it is first read,
        once: for the set's names, by the signer, of the start's key,
        verified by OpenSSL and C{cryptography} trusting the signer.
        """
        sets = [ManagedCertificate(("a.example.test",)), ManagedCertificate(("b.example.test",))]
        self.successResultOf(self.provisioning(sets).provision(sets))
        first = sets[0].current
        assert first is not None
        certificate = first.certificate
        self.assertIs(first.certificate, certificate)
        self.assertEqual(self.signatures, [("a.example.test",)])
        self.assertEqual(first.domains, ("a.example.test",))
        self.assertTrue(first.keyMatches)
        [signer] = self.saved
        self.assertEqual(first.chain, (signer.certificate,))
        now = datetime.datetime.fromtimestamp(STARTED, datetime.timezone.utc)
        verifier = (
            PolicyBuilder()
            .store(Store([signer.certificate]))
            .time(now)
            .build_server_verifier(x509.DNSName("a.example.test"))
        )
        verifier.verify(certificate, [])
        store = crypto.X509Store()
        store.add_cert(crypto.X509.from_cryptography(signer.certificate))
        store.set_time(now.replace(tzinfo=None))
        crypto.X509StoreContext(
            store, crypto.X509.from_cryptography(certificate)
        ).verify_certificate()

    def test_validityKnownUnsigned(self) -> None:
        """
        A provisional certificate's validity, and the metrics of its set
        (its expiry and serving state), are read without signing it, and
        are the signed certificate's.
        """
        sets = [ManagedCertificate(("a.example.test",))]
        self.successResultOf(self.provisioning(sets).provision(sets))
        current = sets[0].current
        assert current is not None
        metrics = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in CertificatesCollector(lambda: [("a.example.test", current, 0)]).collect()
            for sample in family.samples
        }
        validity = (current.notBefore, current.notAfter, current.validity)
        self.assertEqual(self.signatures, [])
        signed = current.certificate
        self.assertEqual(
            validity,
            (
                signed.not_valid_before_utc,
                signed.not_valid_after_utc,
                (signed.not_valid_before_utc.timestamp(), signed.not_valid_after_utc.timestamp()),
            ),
        )
        state = (("domains", "a.example.test"), ("state", "provisional"))
        self.assertEqual(metrics[("letsencrypt_certificate_state", state)], 1.0)
        expiry = metrics[
            (
                "letsencrypt_certificate_expiration_timestamp_seconds",
                (("domains", "a.example.test"),),
            )
        ]
        self.assertEqual(expiry, signed.not_valid_after_utc.timestamp())

    def test_oneKeyPerStart(self) -> None:
        """
        The provisional certificates of one start share one key, which is
        not the signer's; another start (another L{Provisioning}, on the
        same stored signer) has another key.
        """
        sets = [ManagedCertificate((f"s{i}.example.test",)) for i in range(3)]
        self.successResultOf(self.provisioning(sets).provision(sets))
        keys = {publicNumbers(c.current) for c in sets}
        again = [ManagedCertificate(c.domains) for c in sets]
        self.successResultOf(self.provisioning(again).provision(again))
        keysAgain = {publicNumbers(c.current) for c in again}
        [signer] = self.saved
        self.assertEqual((len(keys), len(keysAgain)), (1, 1))
        self.assertNotEqual(keys, keysAgain)
        self.assertNotIn(publicNumbers(signer), keys | keysAgain)
        self.assertEqual(self.jobs, ["makeSigner", "generateKey", "signerProblem", "generateKey"])

    def test_newKeyWithNewSigner(self) -> None:
        """
        When a new set's names need a new signer, a new provisional key is
        made with it; the sets already in service keep theirs.
        """
        first = ManagedCertificate(("a.example.test",))
        sets = [first]
        provisioning = self.provisioning(sets)
        self.successResultOf(provisioning.provision(sets))
        later = ManagedCertificate(("b.other.test",))
        provisioning._managed[frozenset(later.domains)] = later
        self.successResultOf(provisioning.provision([later]))
        self.assertEqual(len(self.saved), 2)
        self.assertNotEqual(publicNumbers(first.current), publicNumbers(later.current))
        assert later.current is not None
        self.assertEqual(later.current.chain, (self.saved[1].certificate,))

    def test_keyNeverWritten(self) -> None:
        """
        Nothing is written but the signer: the provisional key stays in
        memory.
        """
        sets = [ManagedCertificate(("a.example.test",))]
        self.successResultOf(self.provisioning(sets).provision(sets))
        assert sets[0].current is not None
        keyPEM = sets[0].current.keyPEM
        self.assertEqual(len(self.saved), 1)
        self.assertNotIn(keyPEM, self.saved[0].toPEM())


def publicNumbers(certifiedKey: CertifiedKey | None) -> Any:
    """
    The numbers of the public key of C{certifiedKey}.
    """
    assert certifiedKey is not None
    return certifiedKey.key.public_key().public_numbers()
