"""
What the start-up, the checks and the status need of a stored certificate,
recorded in the set's renewal state when it is saved, so that they are
known without parsing the certificate: its validity, its issuer's text and
the names of the set it was in service for.

The facts are bound to the certificate record by its L{bundleDigest
<letsencrypt_resource.certificates.bundleDigest>}, the one the renewal
state already vouches for (its C{certificate_digest}): they are used only
for the record with that digest, which is the one they were taken from,
and for the set of the names they record (see
L{letsencrypt_resource.storage.records.StoredSet.certifiedKey}); for any
other record (one replaced by hand, copied from another set, or written by
a version that records no facts) the certificate is parsed as before.  The
certificate itself is then parsed at its first use
(L{RecordedCertificate <letsencrypt_resource.certificates.RecordedCertificate>}),
such as a first handshake.
"""

from __future__ import annotations

import re
import sys
from typing import Any

import attrs

#: A SHA-256 digest, hex, as the renewal state saves them.
DIGEST = re.compile(r"[0-9a-f]{64}")
#: The longest issuer text taken back: longer than any CA's name.
MAX_ISSUER = 1024
#: The last second of the year 9999, the latest time a certificate can
#: tell (and C{datetime} hold), in seconds since the epoch.
LATEST = 253402300799.0
#: The most names taken back: more than any CA puts in one certificate.
MAX_NAMES = 1000


@attrs.frozen
class CertificateFacts:
    """
    The validity and issuer of the certificate of the record with the
    digest C{digest}, in service for the set of the names C{names}.

    @ivar digest: The L{bundleDigest
        <letsencrypt_resource.certificates.bundleDigest>} of the record.
    @ivar notBefore: The start of validity, seconds since the epoch.
    @ivar notAfter: The end of validity, the same.
    @ivar issuer: The RFC 4514 text of the issuer.
    @ivar names: The names of the set the certificate was in service for,
        which it was checked to carry.
    """

    digest: str
    notBefore: float
    notAfter: float
    issuer: str
    names: frozenset[str]

    def toJSON(self) -> dict[str, Any]:
        """
        The facts as the renewal state saves them.
        """
        return {
            "digest": self.digest,
            "not_before": self.notBefore,
            "not_after": self.notAfter,
            "issuer": self.issuer,
            "names": sorted(self.names),
        }

    @classmethod
    def fromJSON(cls, value: Any, digest: str | None = None) -> CertificateFacts | None:
        """
        The facts L{toJSON} saved as C{value}, or C{None} when it is not
        exactly such a document: a digest, two times in order between the
        epoch and L{LATEST}, an issuer text of at most L{MAX_ISSUER}
        printable characters (the longest and oddest issuers are parsed
        from the certificate instead) and a list of at most L{MAX_NAMES}
        names.  A state written by the previous version, whose facts have
        no names, gives C{None}: its certificate is parsed.

        @param digest: The only digest taken, if given: one already known
            to be a digest (see
            L{letsencrypt_resource.renewalstate.storedRecord}); facts of
            another give C{None}.
        """
        if not isinstance(value, dict) or value.keys() != _FIELDS:
            return None
        saved = value["digest"]
        if digest is None:
            if not (isinstance(saved, str) and DIGEST.fullmatch(saved)):
                return None
            digest = saved
        elif saved != digest:
            return None
        notBefore, notAfter, issuer, names = (
            value["not_before"],
            value["not_after"],
            value["issuer"],
            value["names"],
        )
        if not (
            type(notBefore) is float
            and type(notAfter) is float
            and 0.0 <= notBefore <= notAfter <= LATEST
            and isinstance(issuer, str)
            and len(issuer) <= MAX_ISSUER
            and issuer.isprintable()
            and type(names) is list
            and len(names) <= MAX_NAMES
            and all(type(name) is str for name in names)
        ):
            return None
        # The sets of one CA share one issuer text.
        return cls(digest, notBefore, notAfter, sys.intern(issuer), frozenset(names))


_FIELDS = CertificateFacts("0" * 64, 0.0, 0.0, "", frozenset()).toJSON().keys()
