"""
A certificate together with its private key and issuing chain.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import ipaddress
import threading
from collections.abc import Iterable
from functools import cached_property
from typing import Protocol

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtensionOID, NameOID

from .certificatefacts import CertificateFacts
from .keys import PrivateKey, keyFromPEM, keyToPEM, publicKeysMatch

#: The key usage of a certificate that issues certificates.
CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


#: Where the first certificate of a bundle L{CertifiedKey.toPEM} wrote starts.
_CERTIFICATE_START = b"-----BEGIN CERTIFICATE-----"


class LazyCertificate(Protocol):
    """
    Makes a certificate at its first use (see L{CertifiedKey.certificate}),
    and knows its validity before it is made.
    """

    @property
    def notBefore(self) -> datetime.datetime:
        """
        Start of validity of the certificate it makes, UTC.
        """

    @property
    def notAfter(self) -> datetime.datetime:
        """
        End of validity of the certificate it makes, UTC.
        """

    def __call__(self) -> x509.Certificate:
        """
        The certificate, made at the first call.
        """


class InvalidCertificate(ValueError):
    """
    A certificate bundle that cannot be used.
    """


#: Held while a L{RecordedCertificate} is parsed: the first use may be in
#: a worker thread (an export to the store directory) while a handshake
#: asks on the reactor thread.
_PARSING = threading.Lock()
_UTC = datetime.timezone.utc


class RecordedCertificate:
    """
    The certificate of a record whose L{CertificateFacts} are known: its
    validity is told from them, and the certificate is parsed from its PEM
    at its first use, once (a L{LazyCertificate}), from any thread.
    """

    __slots__ = ("_made", "_pem", "facts")

    def __init__(self, pem: bytes, facts: CertificateFacts):
        """
        @param pem: The certificate's PEM, as the record holds it.
        @param facts: The facts recorded for the record.
        """
        self._pem = pem
        self._made: x509.Certificate | None = None
        self.facts = facts

    @property
    def notBefore(self) -> datetime.datetime:
        """
        Start of validity, UTC, as recorded.
        """
        return datetime.datetime.fromtimestamp(self.facts.notBefore, _UTC)

    @property
    def notAfter(self) -> datetime.datetime:
        """
        End of validity, UTC, as recorded.
        """
        return datetime.datetime.fromtimestamp(self.facts.notAfter, _UTC)

    def __call__(self) -> x509.Certificate:
        """
        The certificate, parsed at the first call; its PEM is dropped then.

        @raise InvalidCertificate: when the PEM cannot be parsed (it parsed
            when it was stored: the record has the digest it had then), or
            the certificate's validity is not the one recorded: the
            certificate cannot be used (see
            L{letsencrypt_resource.tls.ReloadableServerTLS}).
        """
        made = self._made
        if made is not None:
            return made
        with _PARSING:
            if self._made is None:
                self._made = self._parsed()
                self._pem = b""
            return self._made

    def _parsed(self) -> x509.Certificate:
        """
        The certificate of the PEM, checked against the facts.
        """
        try:
            certificate = x509.load_pem_x509_certificate(self._pem)
        except ValueError as error:
            raise InvalidCertificate(f"no PEM certificate could be read: {error}") from None
        told = (
            certificate.not_valid_before_utc.timestamp(),
            certificate.not_valid_after_utc.timestamp(),
        )
        if told != (self.facts.notBefore, self.facts.notAfter):
            raise InvalidCertificate("the certificate's validity is not the one recorded")
        return certificate


def _splitCertificates(
    pem: bytes, start: int = 0
) -> tuple[x509.Certificate, tuple[x509.Certificate, ...]]:
    """
    The first certificate of the PEM C{pem} (from C{start}) and the ones
    after it: those (the intermediates, the same for every certificate of
    one CA) are parsed once for the same bytes (C{_chain}).

    @raise InvalidCertificate: when no certificate can be read.
    """
    head, chain = _splitChain(pem, start)
    try:
        return x509.load_pem_x509_certificate(head), chain
    except ValueError as error:
        raise InvalidCertificate(f"no PEM certificate could be read: {error}") from None


def _splitChain(pem: bytes, start: int = 0) -> tuple[bytes, tuple[x509.Certificate, ...]]:
    """
    The PEM of the first certificate of the PEM C{pem} from C{start} (up
    to the second certificate's start), unparsed, and the certificates
    after it, parsed (see L{_splitCertificates}): a bundle is not copied
    whole to be split (see L{CertifiedKey.fromCheckedPEM}).

    @raise InvalidCertificate: when one of those cannot be read.
    """
    second = pem.find(_CERTIFICATE_START, pem.find(_CERTIFICATE_START, start) + 1)
    if second < 0:
        return pem[start:], ()
    try:
        return pem[start:second], _chain(pem[second:])
    except ValueError as error:
        raise InvalidCertificate(f"no PEM certificate could be read: {error}") from None


@functools.lru_cache(maxsize=64)
def _chain(pem: bytes) -> tuple[x509.Certificate, ...]:
    """
    The certificates of the PEM C{pem}, parsed once for the same bytes.

    @raise ValueError: when one cannot be read.
    """
    return tuple(_shared(c) for c in x509.load_pem_x509_certificates(pem))


def bundleDigest(pem: bytes) -> str:
    """
    The SHA-256 digest, hex, of a bundle L{CertifiedKey.toPEM} wrote: a
    stored bundle with the digest recorded when it was written after its
    checks is known to be that one (see L{CertifiedKey.fromCheckedPEM}).
    """
    return hashlib.sha256(pem).hexdigest()


@functools.lru_cache(maxsize=64)
def _shared(intermediate: x509.Certificate) -> x509.Certificate:
    """
    The first of the certificates equal to C{intermediate} (the same DER)
    seen lately: the certificates of one CA share their intermediates'
    objects instead of each holding its own parsed copy (about 1 KB each).
    """
    return intermediate


def certificateNames(certificate: x509.Certificate) -> tuple[str, ...]:
    """
    The DNS names of C{certificate}: the subject's CN first, then the SAN's
    DNS names and IP addresses (in their normal form).
    """
    names = [
        str(attribute.value).lower()
        for attribute in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ]
    try:
        san = certificate.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    except x509.ExtensionNotFound:
        return tuple(names)
    assert isinstance(san.value, x509.SubjectAlternativeName)
    for name in san.value:
        if isinstance(name, x509.DNSName):
            value = name.value.lower()
        elif isinstance(name, x509.IPAddress) and isinstance(
            name.value, (ipaddress.IPv4Address, ipaddress.IPv6Address)
        ):
            value = str(name.value)
        else:
            continue
        if value not in names:
            names.append(value)
    return tuple(names)


#: The most issuers whose text L{rfc4514Issuer} keeps.
ISSUERS_KEPT = 64
_issuers: dict[bytes, str] = {}


def _element(der: bytes, at: int) -> tuple[int, int]:
    """
    Where the content of the DER element at C{at} of C{der} starts, and
    where the element ends.
    """
    length = der[at + 1]
    start = at + 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(der[start : start + count], "big")
        start += count
    return start, start + length


def issuerDER(tbs: bytes) -> bytes:
    """
    The issuer's C{Name}, DER, of the DER C{TBSCertificate} C{tbs}: after
    its optional version (C{[0]}), serial number and signature algorithm.
    """
    at, _ = _element(tbs, 0)
    if tbs[at] == 0xA0:
        at = _element(tbs, at)[1]
    at = _element(tbs, at)[1]  # serialNumber
    at = _element(tbs, at)[1]  # signature
    return tbs[at : _element(tbs, at)[1]]


def rfc4514Issuer(certificate: x509.Certificate) -> str:
    """
    The RFC 4514 text of C{certificate}'s issuer, made once for the many
    certificates of one issuer, found by the issuer's DER: making the
    issuer's C{Name} costs more than the status row of a set read from the
    storage once (see L{CertifiedKey.issuerText}).
    """
    key = issuerDER(certificate.tbs_certificate_bytes)
    text = _issuers.get(key)
    if text is None:
        if len(_issuers) >= ISSUERS_KEPT:
            _issuers.clear()
        text = _issuers[key] = certificate.issuer.rfc4514_string()
    return text


@attrs.frozen(eq=False)
class CertifiedKey:
    """
    A private key, the certificate for it and the certificates that issued it.

    The key may be given as its PKCS#8 PEM (L{fromCheckedPEM}): it is then
    parsed at its first use (L{key}), not when the bundle is read.  The
    certificate may be given as what makes it (L{LazyCertificate}), called
    at its first use (L{certificate}): a provisional certificate is signed
    when a handshake or a consumer first needs it, not when it is put in
    service, and its validity is known without it (see
    L{letsencrypt_resource.provisional.LazyProvisional}).

    @ivar chain: The intermediates, closest to the certificate first.
    @ivar provisional: Whether this is a provisional self-signed certificate.
    @ivar keyChecked: Whether the key was checked against the certificate
        before: when the bundle was stored (see L{fromCheckedPEM}), so it
        is not checked again when it is put in service; the TLS context
        built from it still is (L{keyMatches}).
    @ivar vouchedNames: The names the certificate was found to carry when
        it was stored (see L{fromCheckedPEM}), or C{None}: L{carries}
        then answers without parsing the certificate's names.
    @ivar recorded: The facts recorded for the stored record it was read
        from, which has their digest (see L{fromCheckedPEM}), or C{None}:
        L{validity} and L{issuerText} then come from them.
    """

    _key: PrivateKey | bytes = attrs.field(repr=False)
    _certificate: x509.Certificate | LazyCertificate = attrs.field(repr=False)
    chain: tuple[x509.Certificate, ...] = ()
    provisional: bool = False
    keyChecked: bool = False
    vouchedNames: frozenset[str] | None = attrs.field(default=None, repr=False)
    recorded: CertificateFacts | None = attrs.field(default=None, repr=False)

    @classmethod
    def fromParts(
        cls,
        key: PrivateKey,
        fullchainPEM: bytes,
        *,
        domains: tuple[str, ...] | None = None,
        provisional: bool = False,
    ) -> CertifiedKey:
        """
        Build from a key and a PEM full chain, checking they belong together.

        @param key: The private key.
        @param fullchainPEM: The certificate followed by its intermediates,
            PEM.
        @param domains: When given, the certificate must carry exactly
            these names.
        @param provisional: Whether this is a provisional self-signed
            certificate.

        @raise InvalidCertificate: when the chain is empty, the certificate
            is not for C{key} or does not carry C{domains}.
        """
        certificate, chain = _splitCertificates(fullchainPEM)
        certifiedKey = cls(key, certificate, chain, provisional)
        if not certifiedKey.keyMatches:
            raise InvalidCertificate("the certificate is not for our private key")
        if domains is not None and not certifiedKey.carries(domains):
            raise InvalidCertificate(
                f"the certificate is for {', '.join(certifiedKey.domains)}, "
                f"not {', '.join(domains)}"
            )
        return certifiedKey

    @classmethod
    def fromPEM(cls, pem: bytes) -> CertifiedKey:
        """
        Load the bundle L{toPEM} wrote.

        @raise InvalidCertificate: when it is damaged or the parts disagree.
        """
        try:
            key = keyFromPEM(pem)
        except (ValueError, TypeError) as error:
            raise InvalidCertificate(f"no private key could be read: {error}") from None
        return cls.fromParts(key, pem)

    @classmethod
    def fromCheckedPEM(
        cls,
        pem: bytes,
        names: frozenset[str] | None = None,
        facts: CertificateFacts | None = None,
    ) -> CertifiedKey:
        """
        Load the bundle L{toPEM} wrote, known to be unchanged since it was
        written after its checks (by a digest of it; see
        L{bundleDigest}): the
        certificates are read, the key is kept as its PEM, parsed and
        checked at its first use.

        @param names: The names the certificate was checked to carry when
            it was written, if known (L{vouchedNames}).
        @param facts: The facts recorded for this bundle (with its digest),
            if known: the certificate is then parsed at its first use, not
            now (L{RecordedCertificate}), and L{validity} and L{issuerText}
            are these.  The caller checks the digest: see
            L{letsencrypt_resource.storage.records.StoredSet.certifiedKey}.

        @raise InvalidCertificate: when the certificates cannot be read.
        """
        start = pem.find(_CERTIFICATE_START)
        if start < 0:
            # No certificate: none is read.
            keyPEM, pem, start = pem, b"", 0
        else:
            keyPEM = pem[:start]
        if facts is None:
            certificate, chain = _splitCertificates(pem, start)
            return cls(keyPEM, certificate, chain, keyChecked=True, vouchedNames=names)
        head, chain = _splitChain(pem, start)
        made = RecordedCertificate(head, facts)
        return cls(keyPEM, made, chain, keyChecked=True, vouchedNames=names, recorded=facts)

    @property
    def certificate(self) -> x509.Certificate:
        """
        The end-entity certificate, made at its first use when it was given
        as what makes it (which keeps it).
        """
        certificate = self._certificate
        return certificate if isinstance(certificate, x509.Certificate) else certificate()

    @cached_property
    def key(self) -> PrivateKey:
        """
        The private key, parsed at its first use when it was read as PEM.

        @raise InvalidCertificate: when that PEM holds no usable key.
        """
        if not isinstance(self._key, bytes):
            return self._key
        try:
            return keyFromPEM(self._key)
        except ValueError as error:
            raise InvalidCertificate(f"no private key could be read: {error}") from None

    def toPEM(self) -> bytes:
        """
        The key and the full chain in one PEM document, so that they are
        always written and read together.
        """
        return self.keyPEM + self.fullchainPEM

    @property
    def keyPEM(self) -> bytes:
        """
        The private key, PKCS#8 PEM.
        """
        if isinstance(self._key, bytes):
            return self._key
        return keyToPEM(self.key)

    @property
    def certificatePEM(self) -> bytes:
        """
        The end-entity certificate alone, PEM.
        """
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def chainPEM(self) -> bytes:
        """
        The intermediates, PEM.
        """
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.chain)

    @property
    def fullchainPEM(self) -> bytes:
        """
        The certificate followed by its intermediates, PEM.
        """
        return self.certificatePEM + self.chainPEM

    @cached_property
    def domains(self) -> tuple[str, ...]:
        """
        The names the certificate carries, subject first.
        """
        return certificateNames(self.certificate)

    def carries(self, domains: Iterable[str]) -> bool:
        """
        Whether the certificate carries exactly the names C{domains}, in
        any order: answered by L{vouchedNames} when they are these, by
        parsing the certificate's names (L{domains}) otherwise.
        """
        wanted = frozenset(domains)
        if self.vouchedNames is not None and self.vouchedNames == wanted:
            return True
        return frozenset(self.domains) == wanted

    @cached_property
    def keyMatches(self) -> bool:
        """
        Whether the certificate is for the private key, which parses:
        checked once, when L{fromParts} builds it or at the first question.
        """
        try:
            return publicKeysMatch(self.key, self.certificate)
        except InvalidCertificate:
            return False

    @cached_property
    def issuerText(self) -> str:
        """
        The RFC 4514 text of the certificate's issuer, made once (see
        L{rfc4514Issuer}), or as recorded (L{recorded}): the status of
        thousands of sets asks for it.
        """
        if self.recorded is not None:
            return self.recorded.issuer
        return rfc4514Issuer(self.certificate)

    @property
    def validity(self) -> tuple[float, float]:
        """
        The start and the end of validity, in seconds since the epoch, read
        once, or as recorded (L{recorded}: uncached, which is faster here).
        """
        recorded = self.recorded
        return self._readValidity if recorded is None else (recorded.notBefore, recorded.notAfter)

    @cached_property
    def _readValidity(self) -> tuple[float, float]:
        return (self.notBefore.timestamp(), self.notAfter.timestamp())

    @property
    def notBefore(self) -> datetime.datetime:
        """
        Start of validity, UTC.
        """
        certificate = self._certificate
        if isinstance(certificate, x509.Certificate):
            return certificate.not_valid_before_utc
        return certificate.notBefore

    @property
    def notAfter(self) -> datetime.datetime:
        """
        End of validity, UTC.
        """
        certificate = self._certificate
        if isinstance(certificate, x509.Certificate):
            return certificate.not_valid_after_utc
        return certificate.notAfter
