"""
Provisional certificates: what a service presents until the CA has issued
its real one.

Each installation makes its own signer (a self-signed CA key and
certificate, kept in the state directory) at first start, so that no two
installations share a provisional key.
"""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from .certificates import CA_KEY_USAGE, CertifiedKey
from .keys import PrivateKey, generateKey, withDomainNames

_SIGNER_LIFETIME = datetime.timedelta(days=3650)
_PROVISIONAL_LIFETIME = datetime.timedelta(days=90)
_BACKDATE = datetime.timedelta(hours=1)


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


def makeSigner(label: str, now: datetime.datetime) -> CertifiedKey:
    """
    Make a new self-signed signer for provisional certificates.

    Generates a key: call it off the reactor thread.

    @param label: Names the installation in the signer's subject.
    """
    key = generateKey("ecdsa-p256")
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, f"Provisional CA for {label}"[:64])]
    )
    certificate = (
        _builder(name, key, now, _SIGNER_LIFETIME)
        .subject_name(name)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            CA_KEY_USAGE,
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return CertifiedKey(key, certificate)


def makeProvisional(
    signer: CertifiedKey, domains: tuple[str, ...], now: datetime.datetime
) -> CertifiedKey:
    """
    Make a provisional certificate for C{domains}, signed by C{signer}.

    Generates a key: call it off the reactor thread.
    """
    key = generateKey("ecdsa-p256")
    certificate = (
        withDomainNames(
            _builder(signer.certificate.subject, key, now, _PROVISIONAL_LIFETIME),
            domains,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(
                signer.key.public_key()
            ),
            critical=False,
        )
        .sign(signer.key, hashes.SHA256())
    )
    return CertifiedKey(key, certificate, (signer.certificate,), provisional=True)
