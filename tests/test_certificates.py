"""
Tests for L{letsencrypt_resource.certificates}, L{letsencrypt_resource.keys}
and L{letsencrypt_resource.provisional}.
"""

from __future__ import annotations

import datetime

import josepy
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource import certificates
from letsencrypt_resource.certificates import CertifiedKey, InvalidCertificate, bundleDigest
from letsencrypt_resource.keys import (
    MAX_COMMON_NAME,
    generateKey,
    jwkFor,
    keyFromPEM,
    keyToPEM,
    makeCSR,
    publicKeysMatch,
)
from letsencrypt_resource.provisional import makeProvisional, makeSigner
from tests.helpers import newSigner, provisionalFor, selfSigned, sharedKey, utcNow

DOMAINS = ("example.com", "www.example.com", "files.example.com")

#: A valid domain name too long to be a common name.
LONG_DOMAIN = "a" * 63 + "." + "b" * 20 + ".example.com"


def commonNames(name: x509.Name) -> list[str]:
    """
    The common names in C{name}.
    """
    return [str(a.value) for a in name.get_attributes_for_oid(NameOID.COMMON_NAME)]


def sanNames(
    holder: x509.Certificate | x509.CertificateSigningRequest,
) -> tuple[list[str], bool]:
    """
    The SAN's DNS names of C{holder} and whether the SAN is critical.
    """
    extension = holder.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return extension.value.get_values_for_type(x509.DNSName), extension.critical


class CertifiedKeyTests(SynchronousTestCase):
    """
    Tests for L{CertifiedKey}.
    """

    def test_validityReadOnce(self) -> None:
        """
        C{validity} is the start and end of validity in seconds, read from
        the certificate once.
        """
        certified = selfSigned()
        self.assertEqual(
            certified.validity,
            (certified.notBefore.timestamp(), certified.notAfter.timestamp()),
        )
        self.assertIs(certified.validity, certified.validity)

    def test_fromPartsChecksKey(self) -> None:
        """
        C{fromParts} refuses a certificate for another key.
        """
        certified = selfSigned()
        error = self.assertRaises(
            InvalidCertificate,
            CertifiedKey.fromParts,
            generateKey("ecdsa-p256"),
            certified.fullchainPEM,
        )
        self.assertIn("not for our private key", str(error))

    def test_fromPartsChecksNames(self) -> None:
        """
        C{fromParts} refuses a certificate whose names differ from
        C{domains}, by one name more or less.
        """
        certified = selfSigned(DOMAINS)
        for domains in [DOMAINS[:2], DOMAINS + ("other.example.com",)]:
            self.assertRaises(
                InvalidCertificate,
                CertifiedKey.fromParts,
                certified.key,
                certified.fullchainPEM,
                domains=domains,
            )

    def test_fromPartsAcceptsNamesInAnyOrder(self) -> None:
        """
        C{fromParts} accepts the certificate's names in another order and
        keeps the chain after the certificate.
        """
        signer = newSigner()
        provisional = provisionalFor(signer, DOMAINS)
        loaded = CertifiedKey.fromParts(
            provisional.key,
            provisional.fullchainPEM,
            domains=tuple(reversed(DOMAINS)),
            provisional=True,
        )
        self.assertEqual(
            (loaded.certificate, loaded.chain, loaded.provisional),
            (provisional.certificate, (signer.certificate,), True),
        )

    def test_fromPartsNoCertificate(self) -> None:
        """
        C{fromParts} refuses a chain holding no certificate.
        """
        for pem in [b"", b"garbage", keyToPEM(sharedKey("ecdsa-p256"))]:
            self.assertRaises(
                InvalidCertificate, CertifiedKey.fromParts, sharedKey("ecdsa-p256"), pem
            )

    def test_chainShared(self) -> None:
        """
        Certificates read with the same intermediate share its object,
        which equals the one they were written with.
        """
        signer = newSigner()
        first, second = (CertifiedKey.fromPEM(provisionalFor(signer).toPEM()) for _ in range(2))
        self.assertIs(first.chain[0], second.chain[0])
        self.assertEqual(first.chain, (signer.certificate,))

    def test_fromCheckedPEM(self) -> None:
        """
        C{fromCheckedPEM} reads a bundle C{toPEM} wrote without parsing its
        key: it writes back the same bytes, has the same digest, does not
        show the key's PEM in its C{repr}, and parses the key at its first
        use.
        """
        original = provisionalFor(newSigner(), DOMAINS)
        pem = original.toPEM()
        loaded = CertifiedKey.fromCheckedPEM(pem)
        self.assertNotIn(b"PRIVATE KEY", repr(loaded).encode())
        self.assertEqual(
            (loaded.toPEM(), loaded.keyChecked, loaded.domains, loaded.chain),
            (pem, True, DOMAINS, original.chain),
        )
        self.assertEqual((keyToPEM(loaded.key), loaded.keyMatches), (original.keyPEM, True))
        self.assertEqual(bundleDigest(loaded.toPEM()), bundleDigest(pem))

    def test_carriesVouchedNames(self) -> None:
        """
        C{carries} answers from the names a checked bundle was vouched for
        without parsing the certificate's names; asked for other names, it
        parses them and answers from what the certificate carries.
        """
        pem = provisionalFor(newSigner(), DOMAINS).toPEM()
        parsed: list[object] = []
        real = certificates.certificateNames
        self.patch(certificates, "certificateNames", lambda c: parsed.append(c) or real(c))
        loaded = CertifiedKey.fromCheckedPEM(pem, frozenset(DOMAINS))
        self.assertTrue(loaded.carries(reversed(DOMAINS)))
        self.assertEqual(parsed, [])
        self.assertFalse(loaded.carries(DOMAINS[:1]))
        self.assertEqual(parsed, [loaded.certificate])

    def test_carriesNotVouched(self) -> None:
        """
        Without vouched names, or with names the certificate does not
        carry (a bundle vouched for wrongly), C{carries} answers from the
        certificate's own names.
        """
        pem = provisionalFor(newSigner(), DOMAINS).toPEM()
        for loaded in (CertifiedKey.fromPEM(pem), CertifiedKey.fromCheckedPEM(pem)):
            self.assertEqual(
                (loaded.vouchedNames, loaded.carries(DOMAINS), loaded.carries(DOMAINS[1:])),
                (None, True, False),
            )
        wrong = CertifiedKey.fromCheckedPEM(pem, frozenset({"other.example"}))
        self.assertEqual((wrong.carries(["other.example"]), wrong.carries(DOMAINS)), (True, True))

    def test_chainParsedOnce(self) -> None:
        """
        The intermediates of bundles with the same chain bytes are parsed
        once: the second bundle parses its own certificate only.
        """
        signer = newSigner()
        first, second = (provisionalFor(signer).toPEM() for _ in range(2))
        CertifiedKey.fromCheckedPEM(first)
        parsed: list[bytes] = []
        real = x509.load_pem_x509_certificates
        self.patch(x509, "load_pem_x509_certificates", lambda p: parsed.append(p) or real(p))
        loaded = CertifiedKey.fromCheckedPEM(second)
        self.assertEqual((parsed, loaded.chain), ([], (signer.certificate,)))

    def test_fromCheckedPEMBadKey(self) -> None:
        """
        The key C{fromCheckedPEM} kept as PEM that is no key raises
        L{InvalidCertificate} at its first use, and does not match.
        """
        loaded = CertifiedKey.fromCheckedPEM(b"no key\n" + provisionalFor(newSigner()).fullchainPEM)
        self.assertRaises(InvalidCertificate, getattr, loaded, "key")
        self.assertFalse(loaded.keyMatches)

    def test_pemRoundTrip(self) -> None:
        """
        C{fromPEM(toPEM())} gives back the key, the certificate and the
        chain.
        """
        signer = newSigner()
        original = provisionalFor(signer, DOMAINS)
        loaded = CertifiedKey.fromPEM(original.toPEM())
        self.assertEqual(
            (loaded.keyPEM, loaded.certificate, loaded.chain, loaded.domains),
            (original.keyPEM, original.certificate, original.chain, DOMAINS),
        )

    def test_fromPEMDamaged(self) -> None:
        """
        C{fromPEM} refuses a bundle without a key, without a certificate,
        or whose key and certificate disagree.
        """
        certified = selfSigned()
        for pem in [
            certified.fullchainPEM,
            certified.keyPEM,
            certified.toPEM()[:-200],
            selfSigned().keyPEM + certified.fullchainPEM,
        ]:
            self.assertRaises(InvalidCertificate, CertifiedKey.fromPEM, pem)

    def test_pemParts(self) -> None:
        """
        The full chain is the certificate followed by the chain.
        """
        provisional = provisionalFor(newSigner())
        self.assertEqual(
            (provisional.fullchainPEM, provisional.toPEM()),
            (
                provisional.certificatePEM + provisional.chainPEM,
                provisional.keyPEM + provisional.fullchainPEM,
            ),
        )

    def test_domainsCommonNameFirst(self) -> None:
        """
        C{domains} lists the subject's CN first, then the SAN's other names
        in order, lower-cased, each once.
        """
        certified = selfSigned(
            ("a.example.com", "B.example.com", "c.example.com", "a.example.com"),
            commonName="b.example.com",
        )
        self.assertEqual(certified.domains, ("b.example.com", "a.example.com", "c.example.com"))

    def test_domainsWithoutSAN(self) -> None:
        """
        Without a SAN, C{domains} is the CN alone.
        """
        self.assertEqual(
            selfSigned((), commonName="only.example.com").domains, ("only.example.com",)
        )

    def test_validity(self) -> None:
        """
        C{notBefore} and C{notAfter} are the certificate's, in UTC.
        """
        certified = selfSigned()
        self.assertEqual(
            (certified.notBefore, certified.notAfter),
            (
                certified.certificate.not_valid_before_utc,
                certified.certificate.not_valid_after_utc,
            ),
        )
        self.assertEqual(certified.notAfter.utcoffset(), datetime.timedelta(0))


class KeyTests(SynchronousTestCase):
    """
    Tests for L{letsencrypt_resource.keys}.
    """

    def test_generateECDSA(self) -> None:
        """
        The ECDSA key types give keys on P-256 and P-384.
        """
        for keyType, curve in [
            ("ecdsa-p256", ec.SECP256R1),
            ("ecdsa-p384", ec.SECP384R1),
        ]:
            key = generateKey(keyType)
            self.assertIsInstance(key, ec.EllipticCurvePrivateKey)
            self.assertIsInstance(key.curve, curve)

    def test_generateRSA(self) -> None:
        """
        The RSA key types give RSA keys of their size.
        """
        for keyType, size in [
            ("rsa-2048", 2048),
            ("rsa-3072", 3072),
            ("rsa-4096", 4096),
        ]:
            key = sharedKey(keyType)
            self.assertIsInstance(key, rsa.RSAPrivateKey)
            self.assertEqual(key.key_size, size)

    def test_generateUnknown(self) -> None:
        """
        An unknown key type is refused.
        """
        self.assertRaises(KeyError, generateKey, "dsa-1024")

    def test_pemRoundTrip(self) -> None:
        """
        C{keyFromPEM(keyToPEM())} gives back an equal key, RSA or EC.
        """
        for keyType in ["rsa-2048", "ecdsa-p384"]:
            key = sharedKey(keyType)
            self.assertEqual(keyFromPEM(keyToPEM(key)).private_numbers(), key.private_numbers())

    def test_keyFromPEMRefuses(self) -> None:
        """
        C{keyFromPEM} raises L{ValueError} for other key types and for text
        that is no key.
        """
        for pem in [keyToPEM(ed25519.Ed25519PrivateKey.generate()), b"no key"]:
            self.assertRaises(ValueError, keyFromPEM, pem)

    def test_publicKeysMatch(self) -> None:
        """
        C{publicKeysMatch} tells whether a certificate is for a key.
        """
        certified = selfSigned()
        self.assertEqual(
            (
                publicKeysMatch(certified.key, certified.certificate),
                publicKeysMatch(sharedKey("ecdsa-p256"), certified.certificate),
            ),
            (True, False),
        )

    def test_publicKeysMatchAcrossTypes(self) -> None:
        """
        C{publicKeysMatch} is false for a key of another type or curve
        than the certificate's, and true for each type's own.
        """
        types = ("rsa-2048", "ecdsa-p256", "ecdsa-p384")
        certificates = {t: selfSigned(key=sharedKey(t)).certificate for t in types}
        self.assertEqual(
            {(k, c): publicKeysMatch(sharedKey(k), certificates[c]) for k in types for c in types},
            {(k, c): k == c for k in types for c in types},
        )

    def test_csrCarriesAllNames(self) -> None:
        """
        A CSR has the first name as its subject, every name in its SAN, and
        is signed by the key.
        """
        key = sharedKey("ecdsa-p256")
        csr = makeCSR(key, DOMAINS)
        self.assertEqual(
            (commonNames(csr.subject), sanNames(csr), csr.is_signature_valid),
            ([DOMAINS[0]], (list(DOMAINS), False), True),
        )
        self.assertEqual(csr.public_key().public_numbers(), key.public_key().public_numbers())

    def test_csrLongFirstName(self) -> None:
        """
        When the first name is too long to be a common name the CSR has an
        empty subject and a critical SAN with every name.
        """
        self.assertGreater(len(LONG_DOMAIN), MAX_COMMON_NAME)
        csr = makeCSR(sharedKey("ecdsa-p256"), (LONG_DOMAIN, "example.com"))
        self.assertEqual(
            (list(csr.subject), sanNames(csr)),
            ([], ([LONG_DOMAIN, "example.com"], True)),
        )

    def test_jwkRSA(self) -> None:
        """
        An RSA account key signs with RS256.
        """
        jwk, algorithm = jwkFor(sharedKey("rsa-2048"))
        self.assertIsInstance(jwk, josepy.JWKRSA)
        self.assertIs(algorithm, josepy.RS256)

    def test_jwkEC(self) -> None:
        """
        A P-256 account key signs with ES256 and a P-384 one with ES384.
        """
        for keyType, expected in [
            ("ecdsa-p256", josepy.ES256),
            ("ecdsa-p384", josepy.ES384),
        ]:
            jwk, algorithm = jwkFor(sharedKey(keyType))
            self.assertIsInstance(jwk, josepy.JWKEC)
            self.assertIs(algorithm, expected, keyType)


class ProvisionalTests(SynchronousTestCase):
    """
    Tests for L{letsencrypt_resource.provisional}.
    """

    def setUp(self) -> None:
        self.signer = newSigner()

    def test_signer(self) -> None:
        """
        A signer is a self-signed CA that may sign end entities only.
        """
        certificate = self.signer.certificate
        certificate.verify_directly_issued_by(certificate)
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
        self.assertEqual((constraints.ca, constraints.path_length), (True, 0))
        self.assertFalse(self.signer.provisional)

    def test_signerLongLabel(self) -> None:
        """
        A label too long for a common name is cut short.
        """
        signer = makeSigner("x" * 100, ("example.com",), utcNow())
        self.assertEqual(len(commonNames(signer.certificate.subject)[0]), 64)

    def test_signersDiffer(self) -> None:
        """
        Two signers made separately have different keys and serial numbers.
        """
        other = newSigner()
        self.assertFalse(publicKeysMatch(self.signer.key, other.certificate))
        self.assertNotEqual(self.signer.certificate.serial_number, other.certificate.serial_number)

    def test_provisional(self) -> None:
        """
        A provisional certificate is signed by the signer, carries the
        domains, is marked provisional and chains to the signer.
        """
        provisional = provisionalFor(self.signer, DOMAINS)
        provisional.certificate.verify_directly_issued_by(self.signer.certificate)
        self.assertEqual(
            (
                provisional.domains,
                provisional.provisional,
                provisional.chain,
                publicKeysMatch(provisional.key, provisional.certificate),
            ),
            (DOMAINS, True, (self.signer.certificate,), True),
        )

    def test_provisionalNotByOtherSigner(self) -> None:
        """
        A provisional certificate does not verify against another signer.
        """
        provisional = provisionalFor(self.signer)
        self.assertRaises(
            InvalidSignature,
            provisional.certificate.verify_directly_issued_by,
            newSigner().certificate,
        )

    def test_provisionalValidity(self) -> None:
        """
        A provisional certificate is valid from slightly before C{now}, for
        90 days.
        """
        now = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
        provisional = makeProvisional(self.signer, DOMAINS, now)
        self.assertEqual(
            (provisional.notBefore < now, provisional.notAfter - now),
            (True, datetime.timedelta(days=90)),
        )

    def test_provisionalLongFirstName(self) -> None:
        """
        A first name too long for a common name is carried in a critical
        SAN under an empty subject, and is still the first of C{domains}.
        """
        provisional = provisionalFor(self.signer, (LONG_DOMAIN, "example.com"))
        self.assertEqual(
            (
                list(provisional.certificate.subject),
                sanNames(provisional.certificate)[1],
                provisional.domains,
            ),
            ([], True, (LONG_DOMAIN, "example.com")),
        )
