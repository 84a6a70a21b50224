"""
What the start-up, the checks and the status need of a stored certificate,
recorded in the set's renewal state when it is saved, so that they are
known without parsing the certificate: its validity and its issuer's text.

The facts are bound to the certificate record by its L{bundleDigest
<letsencrypt_resource.certificates.bundleDigest>}, the one the renewal
state already vouches for (its C{certificate_digest}): they are used only
for the record with that digest, which is the one they were taken from
(see L{letsencrypt_resource.storage.records.StoredSet.certifiedKey}); for
any other record (one replaced by hand, or written by a version that
records no facts) the certificate is parsed as before.  The certificate
itself is then parsed at its first use (L{RecordedCertificate}), such as a
first handshake.
"""

from __future__ import annotations

import datetime
import math
import re
import sys
from typing import Any

import attrs
from cryptography import x509

#: A SHA-256 digest, hex, as the renewal state saves them.
DIGEST = re.compile(r"[0-9a-f]{64}")
#: The longest issuer text taken back: longer than any CA's name.
MAX_ISSUER = 1024
_UTC = datetime.timezone.utc


@attrs.frozen
class CertificateFacts:
    """
    The validity and issuer of the certificate of the record with the
    digest C{digest}.

    @ivar digest: The L{bundleDigest
        <letsencrypt_resource.certificates.bundleDigest>} of the record.
    @ivar notBefore: The start of validity, seconds since the epoch.
    @ivar notAfter: The end of validity, the same.
    @ivar issuer: The RFC 4514 text of the issuer.
    """

    digest: str
    notBefore: float
    notAfter: float
    issuer: str

    def toJSON(self) -> dict[str, Any]:
        """
        The facts as the renewal state saves them.
        """
        return {
            "digest": self.digest,
            "not_before": self.notBefore,
            "not_after": self.notAfter,
            "issuer": self.issuer,
        }

    @classmethod
    def fromJSON(cls, value: Any) -> CertificateFacts | None:
        """
        The facts L{toJSON} saved as C{value}, or C{None} when it is not
        exactly such a document: a digest, two finite times in order and
        an issuer text of at most L{MAX_ISSUER} printable characters (the
        status shows it on a terminal; a certificate whose issuer is not
        so is parsed).
        """
        if not isinstance(value, dict) or value.keys() != _FIELDS:
            return None
        digest, notBefore, notAfter, issuer = (
            value["digest"],
            value["not_before"],
            value["not_after"],
            value["issuer"],
        )
        if not (
            isinstance(digest, str)
            and DIGEST.fullmatch(digest)
            and type(notBefore) is float
            and type(notAfter) is float
            and math.isfinite(notBefore)
            and math.isfinite(notAfter)
            and notBefore <= notAfter
            and isinstance(issuer, str)
            and len(issuer) <= MAX_ISSUER
            and issuer.isprintable()
        ):
            return None
        # The sets of one CA share one issuer text.
        return cls(digest, notBefore, notAfter, sys.intern(issuer))


_FIELDS = CertificateFacts("0" * 64, 0.0, 0.0, "").toJSON().keys()


class RecordedCertificate:
    """
    The certificate of a record whose L{CertificateFacts} are known: its
    validity is told from them, and the certificate is parsed from its PEM
    at its first use, once (a L{LazyCertificate
    <letsencrypt_resource.certificates.LazyCertificate>}).  Called on the
    reactor thread only, as the provisional certificates' makers are.
    """

    __slots__ = ("_made", "_pem", "facts")

    def __init__(self, pem: bytes, facts: CertificateFacts):
        """
        @param pem: The certificate's PEM, as the record holds it.
        @param facts: The facts recorded for the record.
        """
        self._pem: bytes | None = pem
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

        @raise ValueError: when the PEM cannot be parsed (it parsed when it
            was stored: the record has the digest it had then).
        """
        if self._made is None:
            assert self._pem is not None
            self._made = x509.load_pem_x509_certificate(self._pem)
            self._pem = None
        return self._made
