"""
Private keys, certificate signing requests and JWS algorithms.

Key generation is CPU-bound: callers run L{generateKey} off the reactor
thread (see L{letsencrypt_resource.resource}).
"""

from __future__ import annotations

import josepy
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

_CURVES = {"ecdsa-p256": ec.SECP256R1, "ecdsa-p384": ec.SECP384R1}
_RSA_BITS = {"rsa-2048": 2048, "rsa-3072": 3072, "rsa-4096": 4096}


def generateKey(keyType: str) -> PrivateKey:
    """
    Generate a new private key of C{keyType}, one of
    L{letsencrypt_resource.config.KEY_TYPES}.
    """
    if keyType in _CURVES:
        return ec.generate_private_key(_CURVES[keyType]())
    return rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS[keyType])


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
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise ValueError(f"unsupported key type {type(key).__name__}")
    return key


def makeCSR(key: PrivateKey, domains: tuple[str, ...]) -> x509.CertificateSigningRequest:
    """
    Make a CSR for C{domains}: the first is the subject, all are in the SAN.
    """
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domains[0])]))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name) for name in domains]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )


def publicKeysMatch(one: PrivateKey, certificate: x509.Certificate) -> bool:
    """
    Whether C{certificate} certifies the public half of C{one}.
    """
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return one.public_key().public_bytes(
        serialization.Encoding.DER, spki
    ) == certificate.public_key().public_bytes(serialization.Encoding.DER, spki)


def jwkFor(key: PrivateKey) -> tuple[josepy.JWK, josepy.JWASignature]:
    """
    The JWK of an account key and the JWS algorithm it signs with.
    """
    if isinstance(key, rsa.RSAPrivateKey):
        return josepy.JWKRSA(key=key), josepy.RS256
    algorithm = {256: josepy.ES256, 384: josepy.ES384, 521: josepy.ES512}[
        key.curve.key_size
    ]
    return josepy.JWKEC(key=key), algorithm
