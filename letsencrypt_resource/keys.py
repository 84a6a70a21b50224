"""
Private keys, certificate signing requests and JWS algorithms.

Key generation is CPU-bound: the service runs it off the reactor thread,
at a low priority (see L{letsencrypt_resource.keygen}).  This module imports
no thread or service code.
"""

from __future__ import annotations

import hashlib
import ipaddress
from typing import TYPE_CHECKING, TypeVar

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from .domains import isIPAddress

if TYPE_CHECKING:
    import josepy

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

_CURVES = {"ecdsa-p256": ec.SECP256R1, "ecdsa-p384": ec.SECP384R1}
_RSA_BITS = {"rsa-2048": 2048, "rsa-3072": 3072, "rsa-4096": 4096}

#: The longest common name a certificate may carry (RFC 5280 ub-common-name).
MAX_COMMON_NAME = 64

_Builder = TypeVar("_Builder", x509.CertificateBuilder, x509.CertificateSigningRequestBuilder)


def generateKey(keyType: str) -> PrivateKey:
    """
    Generate a new private key of C{keyType}, one of
    L{letsencrypt_resource.config.KEY_TYPES}.
    """
    if keyType in _CURVES:
        return ec.generate_private_key(_CURVES[keyType]())
    return rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS[keyType])


def keyType(key: PrivateKey) -> str:
    """
    The L{letsencrypt_resource.config.KEY_TYPES} name of C{key}'s type.
    """
    if isinstance(key, rsa.RSAPrivateKey):
        return f"rsa-{key.key_size}"
    return f"ecdsa-p{key.curve.key_size}"


def keyToPEM(key: PrivateKey) -> bytes:
    """
    Serialise C{key} as unencrypted PKCS#8 PEM.
    """
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def keyFromPEM(pem: bytes) -> PrivateKey:
    """
    Load an unencrypted RSA or EC private key from C{pem}.

    @raise ValueError: when C{pem} holds no such key.
    """
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        raise ValueError(f"no usable private key: {error}") from None
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise ValueError(f"unsupported key type {type(key).__name__}")
    return key


def withDomainNames(builder: _Builder, domains: tuple[str, ...]) -> _Builder:
    """
    Put C{domains} in the subject and SAN of a certificate or CSR builder.

    The first domain name is the subject's common name when it fits in one
    (L{MAX_COMMON_NAME} characters; a domain may have up to 253); IP
    addresses go in the SAN only.  Otherwise the subject is empty and the
    SAN, which carries every name, is critical (RFC 5280, 4.2.1.6).
    """
    names = [name for name in domains if not isIPAddress(name)]
    fits = bool(names) and len(names[0]) <= MAX_COMMON_NAME
    subject = [x509.NameAttribute(NameOID.COMMON_NAME, names[0])] if fits else []
    return builder.subject_name(x509.Name(subject)).add_extension(
        x509.SubjectAlternativeName([generalName(name) for name in domains]),
        critical=not fits,
    )


def generalName(name: str) -> x509.GeneralName:
    """
    The SAN entry of the normalised C{name}: an iPAddress for an IP
    address (RFC 8738), a dNSName otherwise.
    """
    if isIPAddress(name):
        return x509.IPAddress(ipaddress.ip_address(name))
    return x509.DNSName(name)


def readFile(path: str) -> bytes:
    """
    The content of the file at C{path}, which the configuration names.

    @raise ValueError: naming the file and why it cannot be read.
    """
    try:
        with open(path, "rb") as stream:
            return stream.read()
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror}") from None


def loadAccountKey(path: str) -> PrivateKey:
    """
    Read the unencrypted RSA or EC private key of an existing account from
    the PEM file at C{path}.

    @raise ValueError: when it cannot be read or holds no such key.
    """
    pem = readFile(path)
    try:
        return keyFromPEM(pem)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{path} holds no usable private key: {error}") from None


def makeCSR(key: PrivateKey, domains: tuple[str, ...]) -> x509.CertificateSigningRequest:
    """
    Make a CSR for C{domains}: the first is the subject, all are in the SAN.
    """
    return withDomainNames(x509.CertificateSigningRequestBuilder(), domains).sign(
        key, hashes.SHA256()
    )


def publicKeysMatch(one: PrivateKey, certificate: x509.Certificate) -> bool:
    """
    Whether C{certificate} certifies the public half of C{one}: the keys
    compared as cryptography compares them (type, curve and point, or
    modulus and exponent), without encoding either.
    """
    return bool(one.public_key() == certificate.public_key())


def publicKeyDigest(key: PrivateKey | PublicKey) -> str:
    """
    The hexadecimal SHA-256 of the DER SubjectPublicKeyInfo of C{key}'s
    public half (or of C{key}, a public key, as a certificate holds it):
    how the renewal state names a key without holding it.
    """
    public = (
        key if isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey) else key.public_key()
    )
    spki = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def jwkFor(key: PrivateKey) -> tuple[josepy.JWK, josepy.JWASignature]:
    """
    The JWK of an account key and the JWS algorithm it signs with.

    Only what speaks ACME asks (C{josepy} is loaded with it, see
    L{letsencrypt_resource.acmeloading}).
    """
    import josepy

    if isinstance(key, rsa.RSAPrivateKey):
        return josepy.JWKRSA(key=key), josepy.RS256
    algorithm = {256: josepy.ES256, 384: josepy.ES384, 521: josepy.ES512}[key.curve.key_size]
    return josepy.JWKEC(key=key), algorithm
