"""
Which CA the renewal information checks of each domain set follow: the one
that issued its certificate in service, a fallback CA included, so that a
set gets its checks between renewals whenever that CA offers renewal
information, whether or not the resource's own CA does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .connection import AccountConnection
from .managed import ManagedCertificate


class IssuerConnections:
    """
    The connection to the CA that issued each set's certificate.
    """

    def __init__(self, connectionOf: Callable[[ManagedCertificate], AccountConnection]):
        """
        @param connectionOf: The connection to the CA that issued a set's
            certificate (see
            L{letsencrypt_resource.carotation.CARotation.connectionOf}); it
            follows from the directory URL the set's order records.
        """
        self._connectionOf = connectionOf

    def nextEvent(self, certificate: ManagedCertificate) -> float:
        """
        When C{certificate} next needs attention, its ARI checks included
        when the CA that issued it is known to offer renewal information.
        """
        return certificate.nextEvent(self._connectionOf(certificate).checksARI)

    def unconnected(self, certificates: Iterable[ManagedCertificate]) -> list[AccountConnection]:
        """
        The connections, not connected yet, to the CAs that issued the
        CA-issued certificates of C{certificates}, each once: one look-up
        per directory URL recorded, not per set.
        """
        byURL: dict[str | None, AccountConnection] = {}
        for certificate in certificates:
            url = certificate.orderedBy[1] if certificate.orderedBy else None
            if url not in byURL and certificate.issued is not None:
                byURL[url] = self._connectionOf(certificate)
        return [c for c in dict.fromkeys(byURL.values()) if not c.connected]
