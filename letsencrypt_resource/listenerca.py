"""
The HTTPS certificate of the test CA's listeners, and the CA that signs it,
kept in the test CA's folder across starts.

A configuration trusts the listener CA's file (its C{acme_ca_file}), so the
file keeps the same CA for as long as that CA is valid: a restarted test CA
is then still trusted, by a server that kept running as well as by a new
one.  The listener certificate is signed again by the same CA when it
nears its end.
"""

from __future__ import annotations

import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .certificates import CA_KEY_USAGE
from .safefs import openFolder, replaceInFolder

#: The files, in the test CA's folder: the CA certificate (what clients of
#: the ACME server trust), its key, the listener certificate and its key.
CA_FILE = "listener-ca.pem"
CA_KEY_FILE = "listener-ca-key.pem"
CERTIFICATE_FILE = "listener-cert.pem"
KEY_FILE = "listener-key.pem"

#: How long the listener CA and the listener certificate are valid.
CA_LIFETIME = datetime.timedelta(days=5 * 365)
CERTIFICATE_LIFETIME = datetime.timedelta(days=365)
#: A CA or certificate valid for less than this is made again.
MARGIN = datetime.timedelta(days=1)

_CA_NAME = "letsencrypt-resource test CA listener root"
#: Never through a link, and a pipe planted at the name does not block.
_NO_FOLLOW = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def listenerCertificate(directory: str, now: datetime.datetime) -> tuple[str, str, str]:
    """
    Make sure C{directory} holds a listener CA and, signed by it, a
    certificate for C{localhost} and 127.0.0.1, valid at C{now} for at
    least L{MARGIN}: those already there are kept, others made and written
    (the keys 0600) through L{letsencrypt_resource.safefs}.

    @param directory: the test CA's folder, private to this user; created
        if missing.
    @param now: the current time, timezone-aware.
    @return: the paths of the CA certificate, the listener certificate and
        its key, all PEM.
    @raise letsencrypt_resource.safefs.UnusablePath: when the folder is not
        private to this user.
    """
    with openFolder(directory) as folder:
        ca = _loadPair(folder, CA_FILE, CA_KEY_FILE)
        if ca is None or not _lasts(ca[0], now) or not _isCA(ca[0]):
            ca = _newCA(now)
        leaf = _loadPair(folder, CERTIFICATE_FILE, KEY_FILE)
        if leaf is None or not _lasts(leaf[0], now) or not _signedBy(leaf[0], ca[0]):
            leaf = _newListener(ca, now)
        files = [
            (CA_FILE, _pem(ca[0]), 0o644),
            (CA_KEY_FILE, _keyPEM(ca[1]), 0o600),
            (CERTIFICATE_FILE, _pem(leaf[0]), 0o644),
            (KEY_FILE, _keyPEM(leaf[1]), 0o600),
        ]
        # Written again even when kept, to the same content: a file left
        # with a looser mode gets its mode back.
        replaceInFolder(folder, files)
    return (
        os.path.join(directory, CA_FILE),
        os.path.join(directory, CERTIFICATE_FILE),
        os.path.join(directory, KEY_FILE),
    )


_Pair = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


def _read(folder: int, name: str) -> bytes | None:
    """
    The content of the file C{name} of C{folder}, never through a link;
    C{None} when it cannot be read.
    """
    try:
        fd = os.open(name, _NO_FOLLOW, dir_fd=folder)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as stream:
        return stream.read()


def _loadPair(folder: int, certificateName: str, keyName: str) -> _Pair | None:
    """
    The certificate and its key from C{folder}; C{None} when either is
    missing or unreadable, or they do not match.
    """
    certificatePEM, keyPEM = _read(folder, certificateName), _read(folder, keyName)
    if certificatePEM is None or keyPEM is None:
        return None
    try:
        certificate = x509.load_pem_x509_certificate(certificatePEM)
        key = serialization.load_pem_private_key(keyPEM, password=None)
    except ValueError:
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return None
    if certificate.public_key() != key.public_key():
        return None
    return certificate, key


def _lasts(certificate: x509.Certificate, now: datetime.datetime) -> bool:
    return (
        certificate.not_valid_before_utc <= now and now + MARGIN <= certificate.not_valid_after_utc
    )


def _isCA(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    return constraints.value.ca


def _signedBy(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _newCA(now: datetime.datetime) -> _Pair:
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = _certificate(
        _CA_NAME,
        key.public_key(),
        key,
        now,
        CA_LIFETIME,
        [
            x509.BasicConstraints(ca=True, path_length=0),
            CA_KEY_USAGE,
            # Kept for years: whoever took its key could still vouch for
            # the loopback listeners only.
            x509.NameConstraints(
                permitted_subtrees=[
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_network("127.0.0.1/32")),
                ],
                excluded_subtrees=None,
            ),
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
        ],
    )
    return certificate, key


def _newListener(ca: _Pair, now: datetime.datetime) -> _Pair:
    caCertificate, caKey = ca
    key = ec.generate_private_key(ec.SECP256R1())
    lifetime = min(CERTIFICATE_LIFETIME, caCertificate.not_valid_after_utc - now)
    certificate = _certificate(
        "localhost",
        key.public_key(),
        caKey,
        now,
        lifetime,
        [
            x509.BasicConstraints(ca=False, path_length=None),
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
            x509.AuthorityKeyIdentifier.from_issuer_public_key(caKey.public_key()),
        ],
    )
    return certificate, key


def _certificate(
    subject: str,
    publicKey: ec.EllipticCurvePublicKey,
    issuerKey: ec.EllipticCurvePrivateKey,
    now: datetime.datetime,
    lifetime: datetime.timedelta,
    extensions: list[x509.ExtensionType],
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, _CA_NAME)]))
        .public_key(publicKey)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + lifetime)
    )
    for extension in extensions:
        critical = isinstance(
            extension, (x509.BasicConstraints, x509.KeyUsage, x509.NameConstraints)
        )
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuerKey, hashes.SHA256())


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _keyPEM(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
