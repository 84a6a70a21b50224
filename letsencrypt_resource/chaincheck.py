"""
The checks of a certificate's chain and times, for a certificate another
user of the storage stored: no trust anchor of the CA is known here, so
what is checked is that each certificate is signed by the next one, that
none is self-signed in the certificate's place or the provisional signer,
and that it has started.  Its lifetime is not limited: the node that
ordered it took it from the CA as it came, and every node serves what
that node serves.
"""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from .certificates import CertifiedKey

#: How far ahead of this clock a certificate may start (another node's
#: clock may run a little ahead).
CLOCK_SKEW = datetime.timedelta(minutes=5)


def chainProblem(
    stored: CertifiedKey, now: datetime.datetime, signer: x509.Certificate | None
) -> str | None:
    """
    What is wrong with C{stored}'s chain or times, or C{None}: it must have
    a chain; its certificate must not be self-issued, and must be signed
    by the first certificate of the chain, a CA, each of which is signed
    by the next; no certificate of the chain may be the provisional signer
    C{signer}; it must have started by C{now} (give or take
    L{CLOCK_SKEW}).
    """
    certificate = stored.certificate
    if certificate.issuer == certificate.subject:
        return "it is self-signed"
    if not stored.chain:
        return "it has no chain"
    if signer is not None and any(c.public_key() == signer.public_key() for c in stored.chain):
        return "it is a provisional certificate"
    for child, parent in zip((certificate, *stored.chain), stored.chain, strict=False):
        if not _isCA(parent):
            return f"its issuer {parent.subject.rfc4514_string()} is no CA"
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature):
            return f"{child.subject.rfc4514_string()} is not signed by the next in its chain"
    if stored.notBefore > now + CLOCK_SKEW:
        return f"it starts only at {stored.notBefore.isoformat()}"
    return None


def _isCA(certificate: x509.Certificate) -> bool:
    """
    Whether C{certificate} says it is a CA.
    """
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    return constraints.value.ca
