"""
Provisional certificates: what a service presents until the CA has issued
its real one.

Each installation makes its own signer (a self-signed CA key and
certificate, kept in the state directory) at first start, so that no two
installations share a provisional key.  The signer may sign only for the
names the installation serves: its critical name constraints permit those
names (and names under them) and no IP address, and it lives a year.  A
signer whose constraints miss a name, or that would die before a
provisional certificate made now, is replaced.

The provisional certificates themselves share one key, made at each start
of the resource (in a worker thread) and kept in memory only: never
written, never the key of a CA-issued certificate (orders make their own
keys), never used by another start.  Each is signed when first needed
(L{LazyProvisional}), so that a start with thousands of sets and nothing
stored does not sign thousands of certificates before it is in service.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .certificates import CA_KEY_USAGE, CertifiedKey
from .domains import isIPAddress
from .keys import PrivateKey, generateKey, withDomainNames

_SIGNER_LIFETIME = datetime.timedelta(days=365)
_PROVISIONAL_LIFETIME = datetime.timedelta(days=90)
_BACKDATE = datetime.timedelta(hours=1)

#: The most name subtrees a signer permits: beyond, names are grouped under
#: their parent domains, so that the signer, sent in every handshake of a
#: provisional certificate, stays small.
MAX_PERMITTED_SUBTREES = 100

#: No IP address may be signed.
_EVERY_IP_ADDRESS = (
    x509.IPAddress(ipaddress.ip_network("0.0.0.0/0")),
    x509.IPAddress(ipaddress.ip_network("::/0")),
)


def _builder(
    issuer: x509.Name,
    key: PrivateKey,
    now: datetime.datetime,
    lifetime: datetime.timedelta,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + lifetime)
    )


def _permits(subtrees: set[str], name: str) -> bool:
    """
    Whether one of the DNS C{subtrees} permits C{name}: it is C{name} or a
    parent domain of it (RFC 5280 4.2.1.10).
    """
    labels = name.split(".")
    return any(".".join(labels[i:]) in subtrees for i in range(len(labels)))


def permittedSubtrees(domains: Iterable[str]) -> tuple[str, ...]:
    """
    The fewest DNS subtrees that permit every one of C{domains} (IP
    addresses aside: the signer may sign for none), names under
    another listed name are dropped; when more than
    L{MAX_PERMITTED_SUBTREES} remain, names are replaced by their parent
    domains, one label at a time, down to single labels if need be.
    """
    names = {name for name in domains if not isIPAddress(name)}
    labels = max((name.count(".") + 1 for name in names), default=1)
    while True:
        # Fewest labels first, so that each name meets its parents before it.
        cover: set[str] = set()
        for name in sorted(names, key=lambda n: n.count(".")):
            if not _permits(cover, name):
                cover.add(name)
        if len(cover) <= MAX_PERMITTED_SUBTREES or labels == 1:
            return tuple(sorted(cover))
        labels -= 1
        names = {".".join(name.split(".")[-labels:]) for name in cover}


def signerProblem(
    signer: CertifiedKey, domains: Iterable[str], now: datetime.datetime
) -> str | None:
    """
    Why C{signer} may not sign provisional certificates for C{domains} made
    at C{now}, or C{None} when it may.
    """
    if signer.notAfter < now + _PROVISIONAL_LIFETIME:
        return (
            f"the stored one ends on {signer.notAfter.date().isoformat()}, before "
            "a provisional certificate made now"
        )
    try:
        constraints = signer.certificate.extensions.get_extension_for_class(
            x509.NameConstraints
        ).value
    except x509.ExtensionNotFound:
        return "the stored one has no name constraints"
    permitted = {
        subtree.value
        for subtree in constraints.permitted_subtrees or ()
        if isinstance(subtree, x509.DNSName)
    }
    missing = [name for name in domains if not isIPAddress(name) and not _permits(permitted, name)]
    if missing:
        return f"the stored one may not sign for {', '.join(missing[:3])}" + (
            f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        )
    return None


def makeSigner(label: str, domains: Iterable[str], now: datetime.datetime) -> CertifiedKey:
    """
    Make a new self-signed signer for provisional certificates, that may
    sign for C{domains} (and names under them) only, for a year.

    Generates a key: call it off the reactor thread.

    @param label: Names the installation in the signer's subject.
    """
    key = generateKey("ecdsa-p256")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Provisional CA for {label}"[:64])])
    certificate = (
        _builder(name, key, now, _SIGNER_LIFETIME)
        .subject_name(name)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            CA_KEY_USAGE,
            critical=True,
        )
        .add_extension(
            x509.NameConstraints(
                # With IP addresses only, the reserved "invalid" (RFC 6761),
                # as a constraint needs a subtree and none may permit more.
                permitted_subtrees=[
                    x509.DNSName(name) for name in permittedSubtrees(domains) or ("invalid",)
                ],
                excluded_subtrees=list(_EVERY_IP_ADDRESS),
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertifiedKey(key, certificate)


def signProvisional(
    signer: CertifiedKey, key: PrivateKey, domains: tuple[str, ...], now: datetime.datetime
) -> x509.Certificate:
    """
    Sign a provisional certificate of C{key} for C{domains} with C{signer}:
    signing only, no key is made (about 0.3 ms).
    """
    return (
        withDomainNames(
            _builder(signer.certificate.subject, key, now, _PROVISIONAL_LIFETIME),
            domains,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.key.public_key()),
            critical=False,
        )
        .sign(signer.key, hashes.SHA256())
    )


@attrs.define
class LazyProvisional:
    """
    The certificate of a provisional L{CertifiedKey}, signed when it is
    first asked for (L{CertifiedKey.certificate}): at the first handshake
    of one of the set's services, or when a consumer reads it.  Called on
    the reactor thread only, so it is signed once.  Its validity is known
    before (the metrics and the status read it for every set).
    """

    _signer: CertifiedKey
    _key: PrivateKey
    _domains: tuple[str, ...]
    _now: datetime.datetime
    _certificate: x509.Certificate | None = None

    @property
    def notBefore(self) -> datetime.datetime:
        """
        Start of validity of the certificate, known before it is signed
        (a certificate's times hold whole seconds).
        """
        return (self._now - _BACKDATE).replace(microsecond=0)

    @property
    def notAfter(self) -> datetime.datetime:
        """
        End of validity of the certificate, known before it is signed.
        """
        return (self._now + _PROVISIONAL_LIFETIME).replace(microsecond=0)

    def __call__(self) -> x509.Certificate:
        if self._certificate is None:
            self._certificate = signProvisional(self._signer, self._key, self._domains, self._now)
        return self._certificate


def makeProvisional(
    signer: CertifiedKey,
    domains: tuple[str, ...],
    now: datetime.datetime,
    key: PrivateKey | None = None,
) -> CertifiedKey:
    """
    A provisional certificate for C{domains}, from C{signer}, of C{key}:
    its certificate is signed at its first use (L{LazyProvisional}).  Its
    key was made for it: it is known to match the certificate
    (C{keyChecked}), and its names are C{domains} (C{vouchedNames}), so
    putting it in service signs nothing.

    @param key: The provisional key of this start of the resource, shared
        by its provisional certificates; without one, a key is made for
        this certificate alone (off the reactor thread, then).
    """
    if key is None:
        key = generateKey("ecdsa-p256")
    return CertifiedKey(
        key,
        LazyProvisional(signer, key, domains, now),
        (signer.certificate,),
        provisional=True,
        keyChecked=True,
        vouchedNames=frozenset(domains),
    )
